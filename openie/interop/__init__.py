"""Data interop: openie records in and out of the formats researchers already hold.

Hugging Face ``datasets`` (:mod:`openie.interop.hf`), spaCy ``DocBin`` (:mod:`openie.interop.docbin`)
and BRAT standoff (:mod:`openie.interop.brat`). Each round trip is lossless or refuses the record
with an error naming it and the field it cannot hold. ``datasets`` and ``spacy`` are imported
only when a function needs them, so importing this package costs nothing; it imports only the
core floor (records, tagging, errors), and the command line imports it.
"""

from openie.interop.brat import read_brat, write_brat
from openie.interop.convert import INTEROP_FORMATS, InteropDependencyError, detect_format, read_format, write_format
from openie.interop.docbin import read_docbin, records_from_docs, records_to_docs, write_docbin
from openie.interop.hf import load_hf, records_from_hf, records_to_hf, save_hf, tag_names

__all__ = [
    "INTEROP_FORMATS", "InteropDependencyError", "detect_format", "load_hf", "read_brat", "read_docbin", "read_format", "records_from_docs",
    "records_from_hf", "records_to_docs", "records_to_hf", "save_hf", "tag_names", "write_brat", "write_docbin",
    "write_format",
]
