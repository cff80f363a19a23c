"""Which interop format a path holds, and reading / writing records in it by name (``openie data convert``)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from openie.errors import OpenIEError
from openie.records import Record

INTEROP_FORMATS = ("hf", "docbin", "brat")
"""Formats this package adds beside the core readers' ``jsonl``, ``conll`` and ``conll04``."""

_PACKAGES = {"hf": "datasets", "docbin": "spacy", "brat": None}


class InteropDependencyError(OpenIEError, ImportError):
    """A format whose library is not installed (``datasets`` and ``spacy`` are optional for openie's core)."""


@contextmanager
def _needs(format: str) -> Iterator[None]:
    package = _PACKAGES.get(format)
    try:
        yield
    except ModuleNotFoundError as err:
        if package is None or (err.name or "").split(".")[0] != package:
            raise
        raise InteropDependencyError(f"the {format} format needs the {package!r} package "
                                     f"(pip install {package})") from err


def detect_format(path: str | os.PathLike) -> str | None:
    """``hf`` for a ``save_to_disk`` folder, ``brat`` for a folder of ``.ann`` files, ``docbin`` for ``.spacy``."""
    path = Path(path)
    if path.is_dir():
        if any((path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return "hf"
        if any(path.rglob("*.ann")):
            return "brat"
        return None
    return "docbin" if path.suffix == ".spacy" else None


def read_format(path: str | os.PathLike, format: str, *, split: str | None = None, scheme: str = "auto",
                lang: str = "en") -> list[Record]:
    """Records of ``path`` in one of :data:`INTEROP_FORMATS`."""
    with _needs(format):
        return _read(path, format, split=split, scheme=scheme, lang=lang)


def _read(path: str | os.PathLike, format: str, *, split: str | None, scheme: str, lang: str) -> list[Record]:
    if format == "hf":
        from openie.interop.hf import load_hf

        return load_hf(path, split=split, scheme=scheme, lang=lang, id_prefix=Path(path).name)
    if split is not None:
        raise ValueError(f"a split is chosen only when reading HF datasets, not {format}")
    if format == "docbin":
        from openie.interop.docbin import read_docbin

        return read_docbin(path, lang=lang)
    if format == "brat":
        from openie.interop.brat import read_brat

        return read_brat(path, lang=lang)
    raise ValueError(f"unknown interop format {format!r}; known: {', '.join(INTEROP_FORMATS)}")


def write_format(records: Sequence[Record], path: str | os.PathLike, format: str, *, layout: str = "tokens",
                 labels: Sequence[str] | None = None, scheme: str = "bio") -> int:
    """Write ``records`` to ``path`` in one of :data:`INTEROP_FORMATS`; returns how many were written."""
    with _needs(format):
        return _write(records, path, format, layout=layout, labels=labels, scheme=scheme)


def _write(records: Sequence[Record], path: str | os.PathLike, format: str, *, layout: str,
           labels: Sequence[str] | None, scheme: str) -> int:
    if format == "hf":
        from openie.interop.hf import save_hf

        return save_hf(records, path, layout=layout, labels=labels, scheme=scheme)
    if format == "docbin":
        from openie.interop.docbin import write_docbin

        return write_docbin(records, path)
    if format == "brat":
        from openie.interop.brat import write_brat

        return write_brat(records, path)
    raise ValueError(f"unknown interop format {format!r}; known: {', '.join(INTEROP_FORMATS)}")
