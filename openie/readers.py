"""Readers and writers that turn token-level corpora into ``Record``s with character offsets.

Every error names the file and the 1-based line (or the JSON field) where the input is wrong,
so a researcher can fix the file and rerun. Nothing is dropped silently: every sentence of a file
becomes a record, and a file with no sentence at all is an error rather than an empty dataset.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openie.errors import DataFormatError
from openie.records import Entity, Record, Relation, read_jsonl
from openie.tagging import (
    Span,
    TagSequenceError,
    detect_scheme,
    normalize_scheme,
    spans_to_tags,
    tags_to_spans,
)

DOCSTART = "-DOCSTART-"
_SPACE_RUN = re.compile(r"[ \f\v]+")
_BLANK = " \t\r\f\v"

READ_FORMATS: tuple[str, ...] = ("conll", "conll04", "jsonl")
_FORMAT_BY_SUFFIX = {
    ".jsonl": "jsonl", ".json": "conll04",
    ".conll": "conll", ".txt": "conll", ".tsv": "conll", ".bio": "conll", ".iob": "conll", ".iob2": "conll",
    ".bilou": "conll", ".bioes": "conll",
}


@dataclass
class ReadReport:
    """What a CoNLL read saw, so a run can report corpus sizes next to its scores."""

    path: str
    sentences: int = 0
    tokens: int = 0
    documents: int = 0  # -DOCSTART- markers; 0 when the file does not mark documents
    lines: int = 0
    scheme: str | None = None  # the scheme used, after "auto" detection

    def __str__(self) -> str:
        docs = f", {self.documents} documents" if self.documents else ""
        return f"{self.path}: {self.sentences} sentences, {self.tokens} tokens{docs} ({self.scheme})"


@dataclass
class _Block:
    tokens: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    doc: int | None = None


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Lines split on ``\\n`` only (a corpus token may hold other Unicode line separators)."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFormatError(f"not UTF-8 ({err.reason} at byte {err.start} of the line)",
                                      str(path), lineno) from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            yield lineno, line.rstrip("\r\n")


def _split_columns(line: str, separator: str | None) -> list[str]:
    if separator is not None:
        return line.split(separator)
    if "\t" in line:
        return line.split("\t")
    columns = line.split(" ")
    return columns if "" not in columns else _SPACE_RUN.split(line.strip(" \f\v"))


def _iter_blocks(path: Path, token_column: int, tag_column: int, separator: str | None,
                 report: ReadReport) -> Iterator[_Block]:
    """Sentences as raw token/tag/line-number blocks; validates the columns of every line."""
    needed = max(token_column if token_column >= 0 else -token_column - 1,
                 tag_column if tag_column >= 0 else -tag_column - 1) + 1
    needed = max(needed, 2)
    expected_columns: tuple[int, int] | None = None  # (count, line that set it)
    block = _Block()
    doc: int | None = None
    lineno = 0
    for lineno, line in _decoded_lines(path):
        if not line.strip(_BLANK):
            if block.tokens:
                yield block
            block = _Block(doc=doc)
            continue
        columns = _split_columns(line, separator)
        if columns[0].strip() == DOCSTART:
            if block.tokens:
                yield block
            doc = 0 if doc is None else doc + 1
            report.documents += 1
            block = _Block(doc=doc)
            continue
        if len(columns) < needed:
            raise DataFormatError(
                f"{len(columns)} column(s) but token column {token_column} and tag column {tag_column} "
                f"need at least {needed}: {line!r}", str(path), lineno)
        if expected_columns is None:
            expected_columns = (len(columns), lineno)
        elif len(columns) != expected_columns[0]:
            raise DataFormatError(
                f"{len(columns)} columns where line {expected_columns[1]} has {expected_columns[0]}: {line!r}",
                str(path), lineno)
        token, tag = columns[token_column].strip(" "), columns[tag_column].strip(_BLANK)
        if not token or not tag:
            raise DataFormatError(f"empty {'token' if not token else 'tag'} in {line!r}", str(path), lineno)
        block.tokens.append(token)
        block.tags.append(tag)
        block.lines.append(lineno)
    report.lines = lineno
    if block.tokens:
        yield block


def _detect_file_scheme(path: Path, token_column: int, tag_column: int, separator: str | None) -> str:
    """One scheme for the whole file: sentences that only use B-/I- are valid in several schemes."""
    found: set[str] = set()
    for block in _iter_blocks(path, token_column, tag_column, separator, ReadReport(str(path))):
        try:
            found.add(detect_scheme(block.tags))
        except TagSequenceError as err:
            raise DataFormatError(err.reason, str(path), block.lines[err.token_index]) from None
    for scheme in ("bilou", "bioes", "iob1"):
        if scheme in found:
            return scheme
    return "bio"


def _record_from_tokens(record_id: str, tokens: Sequence[str], spans: Sequence[Span], lang: str,
                        label_map: Mapping[str, str] | None, meta: dict[str, Any]) -> tuple[Record, list[Entity]]:
    text = " ".join(tokens)
    offsets, pos = [], 0
    for tok in tokens:
        offsets.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    entities = []
    for start, end, label in spans:
        s, e = offsets[start][0], offsets[end - 1][1]
        entities.append(Entity(s, e, label_map.get(label, label) if label_map else label, text[s:e]))
    return Record(id=record_id, text=text, lang=lang, entities=list(entities), tokens=list(tokens), meta=meta), entities


def iter_conll(path: str | Path, *, token_column: int = 0, tag_column: int = -1, scheme: str = "bio",
               strict: bool = False, lang: str = "en", id_prefix: str | None = None,
               label_map: Mapping[str, str] | None = None, separator: str | None = None,
               report: ReadReport | None = None) -> Iterator[Record]:
    """Stream one ``Record`` per sentence of a CoNLL-style file (one token per line).

    Sentences end at a blank or whitespace-only line (runs of them are fine); ``-DOCSTART-`` lines
    separate documents and add ``meta["doc"]``. Columns split on tabs when the line has one, else
    on spaces, unless ``separator`` is given. ``label_map`` renames labels (raw labels it does not
    mention pass through). ``meta["line"]`` is the line of the sentence's first token. Pass a
    ``ReadReport`` to have it filled with counts as the file is read. ``scheme="auto"`` reads the
    file once more first, to pick one scheme for all its sentences.
    """
    path = Path(path)
    scheme = normalize_scheme(scheme, allow_auto=True)
    if scheme == "auto":
        scheme = _detect_file_scheme(path, token_column, tag_column, separator)
    report = report if report is not None else ReadReport(str(path))
    report.scheme = scheme
    prefix = id_prefix or path.stem
    for block in _iter_blocks(path, token_column, tag_column, separator, report):
        try:
            spans = tags_to_spans(block.tags, scheme, strict=strict)
        except TagSequenceError as err:
            raise DataFormatError(err.reason, str(path), block.lines[err.token_index]) from None
        meta: dict[str, Any] = {"line": block.lines[0]}
        if block.doc is not None:
            meta["doc"] = block.doc
        record, _ = _record_from_tokens(f"{prefix}-{report.sentences}", block.tokens, spans, lang, label_map, meta)
        report.sentences += 1
        report.tokens += len(block.tokens)
        yield record
    if report.sentences == 0:
        raise DataFormatError("no sentences (the file is empty or holds only blank and -DOCSTART- lines)",
                              str(path), max(report.lines, 1))


def read_conll(path: str | Path, **kwargs: Any) -> list[Record]:
    """All sentences of a CoNLL-style file; same arguments as ``iter_conll``."""
    return list(iter_conll(path, **kwargs))


def conll_counts(path: str | Path, **kwargs: Any) -> ReadReport:
    """Sentence, token and document counts of a CoNLL-style file (reads and validates it all)."""
    report = ReadReport(str(path))
    for _ in iter_conll(path, report=report, **kwargs):
        pass
    return report


def write_conll(records: Iterable[Record], path: str | Path, scheme: str = "bio") -> int:
    """Write ``token<TAB>tag`` lines, a blank line after each sentence; returns the sentence count.

    Needs ``record.tokens``; every entity must start and end on token boundaries (entities from a
    token-level reader always do). Nested or overlapping entities cannot be written as tags.
    """
    scheme = normalize_scheme(scheme)
    n = 0
    with Path(path).open("w", encoding="utf-8") as fh:
        for record in records:
            if record.tokens is None:
                raise ValueError(f"record {record.id!r} has no tokens; CoNLL output needs a tokenized record")
            offsets = record.token_offsets()
            by_start = {s: i for i, (s, _) in enumerate(offsets)}
            by_end = {e: i for i, (_, e) in enumerate(offsets)}
            spans = []
            for ent in record.entities:
                if ent.start not in by_start or ent.end not in by_end:
                    raise ValueError(f"record {record.id!r}: entity {ent.text!r} [{ent.start}:{ent.end}] "
                                     f"does not start and end on token boundaries")
                spans.append((by_start[ent.start], by_end[ent.end] + 1, ent.label))
            try:
                tags = spans_to_tags(spans, len(record.tokens), scheme)
            except ValueError as err:
                raise ValueError(f"record {record.id!r}: {err}") from None
            for token, tag in zip(record.tokens, tags, strict=True):
                if any(c in token for c in "\t\n\r") or not token:
                    raise ValueError(f"record {record.id!r}: token {token!r} cannot be written as a CoNLL column")
                fh.write(f"{token}\t{tag}\n")
            fh.write("\n")
            n += 1
    return n


def _json_at(path: Path) -> Any:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(f"not UTF-8 ({err.reason})", str(path), raw[:err.start].count(b"\n") + 1) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"invalid JSON: {err.msg} (column {err.colno})", str(path), err.lineno) from None


def read_conll04(path: str | Path, *, lang: str = "en", id_prefix: str | None = None,
                 label_map: Mapping[str, str] | None = None, relation_label_map: Mapping[str, str] | None = None,
                 strict: bool = False) -> list[Record]:
    """Read the SpERT JSON format (CoNLL04 and others): tokens, entities, relations by entity index.

    Entities come from ``tags`` (BILOU; BIOES letters accepted) in order of appearance, or from a
    SpERT ``entities`` list ``[{type, start, end}]`` in its given order; ``relations[j].head`` /
    ``.tail`` index that entity list. ``meta["orig_id"]`` keeps the corpus's own sentence id.
    """
    path = Path(path)
    data = _json_at(path)
    if not isinstance(data, list):
        raise DataFormatError(f"expected a JSON list of sentences, got {type(data).__name__}", str(path))
    prefix = id_prefix or path.stem
    records = []
    for i, item in enumerate(data):
        where = f"sentence {i}" + (f" (orig_id {item['orig_id']})" if isinstance(item, dict) and "orig_id" in item
                                   else "")
        if not isinstance(item, dict) or not isinstance(item.get("tokens"), list):
            raise DataFormatError(f"{where}: expected an object with a 'tokens' list", str(path), field=f"[{i}]")
        tokens = [str(t) for t in item["tokens"]]
        if not tokens or any(not t or t != t.strip(" ") for t in tokens):
            raise DataFormatError(f"{where}: empty sentence, or a token that is empty or space-padded",
                                  str(path), field=f"[{i}].tokens")
        if "entities" in item:
            try:
                spans = [(int(e["start"]), int(e["end"]), str(e["type"])) for e in item["entities"]]
            except (KeyError, TypeError, ValueError) as err:
                raise DataFormatError(f"{where}: bad entity ({err})", str(path), field=f"[{i}].entities") from None
            bad = [s for s in spans if not 0 <= s[0] < s[1] <= len(tokens)]
            if bad:
                raise DataFormatError(f"{where}: entity {bad[0]} outside its {len(tokens)} tokens",
                                      str(path), field=f"[{i}].entities")
        else:
            tags = item.get("tags")
            if not isinstance(tags, list) or len(tags) != len(tokens):
                raise DataFormatError(f"{where}: 'tags' must be a list as long as 'tokens' ({len(tokens)})",
                                      str(path), field=f"[{i}].tags")
            try:
                spans = tags_to_spans([str(t) for t in tags], "bilou", strict=strict)
            except TagSequenceError as err:
                raise DataFormatError(f"{where}: {err.reason}", str(path), field=f"[{i}].tags") from None
        meta = {"orig_id": item["orig_id"]} if "orig_id" in item else {}
        record, entities = _record_from_tokens(f"{prefix}-{i}", tokens, spans, lang, label_map, meta)
        for j, rel in enumerate(item.get("relations", [])):
            for key in ("head", "tail"):
                index = rel.get(key) if isinstance(rel, dict) else None
                if not isinstance(index, int) or not 0 <= index < len(entities):
                    raise DataFormatError(f"{where}: relation {j} {key} index {index!r} is out of range "
                                          f"(the sentence has {len(entities)} entities)",
                                          str(path), field=f"[{i}].relations[{j}].{key}")
            if not isinstance(rel.get("type"), str):
                raise DataFormatError(f"{where}: relation {j} has no 'type'", str(path),
                                      field=f"[{i}].relations[{j}].type")
            label = relation_label_map.get(rel["type"], rel["type"]) if relation_label_map else rel["type"]
            record.relations.append(Relation(entities[rel["head"]], entities[rel["tail"]], label))
        records.append(record)
    if not records:
        raise DataFormatError("no sentences (an empty JSON list)", str(path), 1)
    return records


def read_records(path: str | Path, format: str = "auto", **kwargs: Any) -> list[Record]:
    """Read a user's annotated file: ``conll`` (scheme detected unless given), ``conll04`` or ``jsonl``.

    ``auto`` picks the format from the extension: ``.jsonl`` JSONL records, ``.json`` SpERT JSON,
    ``.conll``/``.txt``/``.tsv``/``.bio``/``.iob``… CoNLL columns.
    """
    path = Path(path)
    if format == "auto":
        format = _FORMAT_BY_SUFFIX.get(path.suffix.lower(), "")
        if not format:
            raise ValueError(f"cannot tell the format of {path} from its extension {path.suffix!r}; "
                             f"pass format= one of {', '.join(READ_FORMATS)}")
    if format == "conll":
        kwargs.setdefault("scheme", "auto")
        return read_conll(path, **kwargs)
    if format == "conll04":
        return read_conll04(path, **kwargs)
    if format == "jsonl":
        if kwargs:
            raise TypeError(f"JSONL records take no reading options, got {', '.join(kwargs)}")
        return read_jsonl(path)
    raise ValueError(f"unknown format {format!r}; known formats: auto, {', '.join(READ_FORMATS)}")
