"""BRAT standoff: a folder of ``NAME.txt`` / ``NAME.ann`` pairs, one pair per record, and back.

Annotators edit in brat; this lets their folders in and openie's records out to them. Entities
are ``T`` lines, relations ``R`` lines (first argument the head, second the tail), events ``E``
lines (``Type:T3 Role:T1 ...``; roles are kept as written, so brat's ``Theme2`` stays ``Theme2``).
An entity that crosses a line break is written as brat writes it, one fragment per line, and read
back as one span; other discontinuous spans have no ``Record`` form and are refused.

What brat cannot hold goes to the side file ``openie.jsonl`` (one line per record, in record
order): ``id``, ``lang``, ``tokens``, ``meta``, the scores of predictions (keyed by annotation
id), and which ``T`` lines are not entities of the record (a relation end, trigger or event
argument that is not one of its entities). Without the side file (a folder from elsewhere), the
records are the ``.ann`` files in sorted order, ids are their paths without the suffix, every
``T`` except event triggers is an entity, and lines of other kinds (attributes, notes,
normalizations) are kept as text in ``meta["brat_lines"]``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openie.errors import DataFormatError
from openie.records import Entity, Event, EventArgument, Record, Relation

SIDE_FILE = "openie.jsonl"
_LINE_BREAKS = re.compile(r"[^\r\n]+")


# --- writing ------------------------------------------------------------------------------------

def _file_stem(record_id: str, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", record_id).strip(".") or "record"
    candidate, n = stem, 1
    while candidate.lower() in taken:  # case-insensitive file systems
        n += 1
        candidate = f"{stem}-{n}"
    taken.add(candidate.lower())
    return candidate


def _check_name(record: Record, kind: str, name: str, extra: str = "") -> None:
    if not name or any(c.isspace() or c in extra for c in name):
        raise DataFormatError(f"record {record.id!r}: {kind} {name!r} is empty or holds whitespace"
                              f"{' or ' + repr(extra) if extra else ''}, which brat cannot write", field=kind)


@dataclass
class _AnnWriter:
    """The ``.ann`` lines of one record, numbering ``T`` lines and reusing them for equal spans."""

    record: Record
    lines: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    not_entities: list[str] = field(default_factory=list)
    by_key: dict[tuple, str] = field(default_factory=dict)
    by_span: dict[tuple[int, int], str] = field(default_factory=dict)
    count: int = 0

    def text_bound(self, start: int, end: int, label: str, text: str, score: float | None, entity: bool) -> str:
        _check_name(self.record, "label", label)
        fragments = [(start + m.start(), start + m.end()) for m in _LINE_BREAKS.finditer(text)]
        if start == end or not fragments:
            raise DataFormatError(f"record {self.record.id!r}: span {text!r} [{start}:{end}] is empty or only line "
                                  f"breaks, which brat cannot write", field="entities")
        self.count += 1
        tid = f"T{self.count}"
        offsets = ";".join(f"{s} {e}" for s, e in fragments)
        shown = " ".join(self.record.text[s:e] for s, e in fragments)
        self.lines.append(f"{tid}\t{label} {offsets}\t{shown}")
        if score is not None:
            self.scores[tid] = score
        if not entity:
            self.not_entities.append(tid)
        self.by_key.setdefault((start, end, label, text, score), tid)
        self.by_span.setdefault((start, end), tid)
        return tid

    def reference(self, e: Entity) -> str:
        """The ``T`` of an equal entity (score included), else a new one that is not a record entity."""
        key = (e.start, e.end, e.label, e.text, e.score)
        return self.by_key.get(key) or self.text_bound(e.start, e.end, e.label, e.text, e.score, entity=False)


def _ann(record: Record) -> _AnnWriter:
    w = _AnnWriter(record)
    for e in record.entities:
        w.text_bound(e.start, e.end, e.label, e.text, e.score, entity=True)
    relation_lines = []
    for i, r in enumerate(record.relations, 1):
        _check_name(record, "relation label", r.label)
        head, tail = w.reference(r.head), w.reference(r.tail)
        relation_lines.append(f"R{i}\t{r.label} Arg1:{head} Arg2:{tail}")
        if r.score is not None:
            w.scores[f"R{i}"] = r.score
    event_lines = []
    for i, ev in enumerate(record.events, 1):
        _check_name(record, "event type", ev.type, ":")
        parts = [f"{ev.type}:{w.reference(ev.trigger)}"]
        for j, a in enumerate(ev.arguments):
            _check_name(record, "event role", a.role, ":")
            tid = w.by_span.get((a.start, a.end)) or w.text_bound(a.start, a.end, a.role, a.text, None, entity=False)
            parts.append(f"{a.role}:{tid}")
            if a.score is not None:
                w.scores[f"E{i}:{j}"] = a.score
        event_lines.append(f"E{i}\t{' '.join(parts)}")
        if ev.score is not None:
            w.scores[f"E{i}"] = ev.score
    w.lines += relation_lines + event_lines
    return w


def write_brat(records: Iterable[Record], folder: str | os.PathLike) -> int:
    """Write one ``.txt`` / ``.ann`` pair per record and the side file; returns the record count.

    The folder must not already hold brat files: a stale pair would read back as a record.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file; brat output is a folder")
    if folder.is_dir() and any(p.suffix in (".txt", ".ann") or p.name == SIDE_FILE for p in folder.iterdir()):
        raise FileExistsError(f"{folder} already holds brat files; write into an empty or new folder")
    folder.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    n = 0
    with (folder / SIDE_FILE).open("w", encoding="utf-8") as side:
        for record in records:
            problems = record.check_offsets()
            if problems:
                raise DataFormatError(f"record {record.id!r}: {problems[0]}", field="entities")
            ann = _ann(record)
            stem = _file_stem(record.id, taken)
            with (folder / f"{stem}.txt").open("w", encoding="utf-8", newline="") as fh:
                fh.write(record.text)
            with (folder / f"{stem}.ann").open("w", encoding="utf-8", newline="\n") as fh:
                fh.write("".join(line + "\n" for line in ann.lines))
            extra: dict[str, Any] = {"file": stem, "id": record.id, "lang": record.lang}
            if record.tokens is not None:
                extra["tokens"] = record.tokens
            if record.meta:
                extra["meta"] = record.meta
            if ann.scores:
                extra["scores"] = ann.scores
            if ann.not_entities:
                extra["not_entities"] = ann.not_entities
            side.write(json.dumps(extra, ensure_ascii=False) + "\n")
            n += 1
    return n


# --- reading ------------------------------------------------------------------------------------

def _read_text(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", newline="") as fh:  # newline="": brat offsets count \r\n as two
            return fh.read()
    except UnicodeDecodeError as err:
        raise DataFormatError(f"not UTF-8 ({err.reason} at byte {err.start})", str(path)) from None


def _lines(path: Path) -> list[str]:
    """Lines split at ``\n`` only (``str.splitlines`` also splits at U+2028 and others a span may hold)."""
    return [line.removesuffix("\r") for line in _read_text(path).split("\n")]


def _text_bound(rest: str, text: str, path: Path, lineno: int) -> tuple[str, int, int]:
    head, _, shown = rest.partition("\t")
    label, _, offsets = head.partition(" ")
    try:
        fragments = [tuple(int(x) for x in part.split()) for part in offsets.split(";")]
        if any(len(f) != 2 or not 0 <= f[0] <= f[1] <= len(text) for f in fragments):
            raise ValueError
    except ValueError:
        raise DataFormatError(f"bad text-bound offsets {offsets!r} (expected 'START END[;START END]' inside the "
                              f"{len(text)} characters of the text)", str(path), lineno) from None
    for (_, end), (start, _) in zip(fragments, fragments[1:], strict=False):
        if start < end or text[end:start].strip("\r\n"):
            raise DataFormatError(f"discontinuous span {offsets!r}: a record entity is one span", str(path), lineno)
    start, end = fragments[0][0], fragments[-1][1]
    if shown != " ".join(text[s:e] for s, e in fragments):
        raise DataFormatError(f"span text {shown!r} differs from the text at {offsets!r}: "
                              f"{text[start:end]!r}", str(path), lineno)
    return label, start, end


def _parse_ann(path: Path, text: str, record: Record, extra: dict[str, Any]) -> None:
    scores: dict[str, Any] = extra.get("scores", {})
    bounds: dict[str, tuple[str, int, int]] = {}
    relations: list[tuple[str, str, str, str, int]] = []
    events: list[tuple[str, str, list[tuple[str, str]], int]] = []
    other: list[str] = []
    for lineno, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        aid, tab, rest = line.partition("\t")
        if not tab:
            raise DataFormatError("expected 'ID<TAB>...'", str(path), lineno)
        if aid in bounds or any(aid == r[0] for r in relations) or any(aid == e[0] for e in events):
            raise DataFormatError(f"annotation id {aid!r} is used twice", str(path), lineno)
        if aid.startswith("T"):
            bounds[aid] = _text_bound(rest, text, path, lineno)
        elif aid.startswith("R"):
            parts = rest.split()
            if len(parts) != 3 or any(":" not in p for p in parts[1:]):
                raise DataFormatError(f"expected 'LABEL Arg1:T1 Arg2:T2', got {rest!r}", str(path), lineno)
            relations.append((aid, parts[0], parts[1].partition(":")[2], parts[2].partition(":")[2], lineno))
        elif aid.startswith("E"):
            parts = rest.split()
            pairs = [tuple(p.rsplit(":", 1)) for p in parts]
            if not pairs or any(len(p) != 2 for p in pairs):
                raise DataFormatError(f"expected 'TYPE:T1 ROLE:T2 ...', got {rest!r}", str(path), lineno)
            events.append((aid, pairs[0][0], pairs, lineno))
        else:
            other.append(line)  # attributes, notes, normalizations, equivalences: no Record field
    triggers = {pairs[0][1] for _, _, pairs, _ in events}

    def entity(tid: str, lineno: int) -> Entity:
        if tid not in bounds:
            raise DataFormatError(f"{tid!r} is not a text-bound (T) annotation of this file", str(path), lineno)
        label, start, end = bounds[tid]
        return Entity(start, end, label, text[start:end], scores.get(tid))

    not_entities = set(extra["not_entities"]) if "not_entities" in extra else triggers
    record.entities = [entity(tid, 0) for tid in bounds if tid not in not_entities]
    record.relations = [Relation(entity(h, n), entity(t, n), label, scores.get(rid))
                        for rid, label, h, t, n in relations]
    for eid, etype, pairs, n in events:
        trigger = entity(pairs[0][1], n)
        if trigger.label != etype:
            raise DataFormatError(f"event type {etype!r} differs from its trigger's type {trigger.label!r}",
                                  str(path), n)
        arguments = []
        for j, (role, tid) in enumerate(pairs[1:]):
            e = entity(tid, n)
            arguments.append(EventArgument(e.start, e.end, role, e.text, scores.get(f"{eid}:{j}")))
        record.events.append(Event(trigger, tuple(arguments), scores.get(eid)))
    if other:
        record.meta["brat_lines"] = record.meta.get("brat_lines", []) + other


def _read_pair(folder: Path, stem: str, extra: dict[str, Any], lang: str) -> Record:
    txt, ann = folder / f"{stem}.txt", folder / f"{stem}.ann"
    for path in (txt, ann):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (brat keeps a .txt and an .ann per document)")
    text = _read_text(txt)
    record = Record(id=str(extra.get("id", stem)), text=text, lang=str(extra.get("lang", lang)),
                    tokens=list(extra["tokens"]) if extra.get("tokens") is not None else None,
                    meta=dict(extra.get("meta", {})))
    _parse_ann(ann, text, record, extra)
    return record


def read_brat(folder: str | os.PathLike, *, lang: str = "en") -> list[Record]:
    """Records of a brat folder: in side-file order when ``openie.jsonl`` is there, else sorted ``.ann`` files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of brat .txt/.ann files")
    side = folder / SIDE_FILE
    if side.is_file():
        records = []
        for lineno, line in enumerate(_lines(side), 1):
            if not line.strip():
                continue
            try:
                extra = json.loads(line)
                stem = str(extra["file"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise DataFormatError(f"not a side-file entry with a 'file' ({err})", str(side), lineno) from None
            records.append(_read_pair(folder, stem, extra, lang))
        return records
    stems = sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.ann"))
    if not stems:
        raise DataFormatError("no .ann files (not a brat folder)", str(folder))
    return [_read_pair(folder, stem, {}, lang) for stem in stems]
