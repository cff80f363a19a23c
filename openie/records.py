"""The vocabulary every floor speaks: records with entity, relation and event annotations.

Character offsets into ``Record.text`` are canonical; token-level corpora are converted on read
and keep their tokens so the conversion is lossless. Gold and predicted annotations share types.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from openie.errors import DataFormatError


@dataclass(frozen=True, order=True)
class Entity:
    """A typed mention: ``text == record.text[start:end]``."""

    start: int
    end: int
    label: str
    text: str
    score: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not (0 <= self.start <= self.end):
            raise ValueError(f"bad entity offsets [{self.start}, {self.end}) for {self.text!r}")

    @property
    def span(self) -> tuple[int, int]:
        return (self.start, self.end)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"start": self.start, "end": self.end, "label": self.label, "text": self.text}
        if self.score is not None:
            d["score"] = self.score
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entity:
        return cls(int(d["start"]), int(d["end"]), str(d["label"]), str(d["text"]), d.get("score"))


@dataclass(frozen=True, order=True)
class Relation:
    """A typed, directed link between two entity mentions of the same record."""

    head: Entity
    tail: Entity
    label: str
    score: float | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"head": self.head.to_dict(), "tail": self.tail.to_dict(), "label": self.label}
        if self.score is not None:
            d["score"] = self.score
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Relation:
        return cls(Entity.from_dict(d["head"]), Entity.from_dict(d["tail"]), str(d["label"]), d.get("score"))


@dataclass(frozen=True, order=True)
class EventArgument:
    """A span filling a role of an event."""

    start: int
    end: int
    role: str
    text: str
    score: float | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"start": self.start, "end": self.end, "role": self.role, "text": self.text}
        if self.score is not None:
            d["score"] = self.score
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EventArgument:
        return cls(int(d["start"]), int(d["end"]), str(d["role"]), str(d["text"]), d.get("score"))


@dataclass(frozen=True, order=True)
class Event:
    """An event: a typed trigger span and its role-labelled arguments."""

    trigger: Entity  # label == event type
    arguments: tuple[EventArgument, ...] = ()
    score: float | None = field(default=None, compare=False)

    @property
    def type(self) -> str:
        return self.trigger.label

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"trigger": self.trigger.to_dict(), "arguments": [a.to_dict() for a in self.arguments]}
        if self.score is not None:
            d["score"] = self.score
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        args = tuple(EventArgument.from_dict(a) for a in d.get("arguments", []))
        return cls(Entity.from_dict(d["trigger"]), args, d.get("score"))


@dataclass
class Record:
    """One input unit (sentence, paragraph or document) with its annotations.

    ``tokens`` is kept for token-level corpora: ``text`` is then the tokens joined by single
    spaces, and writing the record back to CoNLL reproduces the file.
    """

    id: str
    text: str
    lang: str = "en"
    entities: list[Entity] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    tokens: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def token_offsets(self) -> list[tuple[int, int]]:
        """Character span of each token in ``text`` (tokens are located left to right)."""
        if self.tokens is None:
            raise ValueError(f"record {self.id!r} has no tokens")
        offsets, pos = [], 0
        for tok in self.tokens:
            start = self.text.index(tok, pos)
            offsets.append((start, start + len(tok)))
            pos = start + len(tok)
        return offsets

    def check_offsets(self) -> list[str]:
        """Problems where an annotation's offsets do not reproduce its text (empty when consistent)."""
        problems = []
        spans: list[tuple[str, int, int, str]] = [("entity", e.start, e.end, e.text) for e in self.entities]
        for r in self.relations:
            spans += [("relation head", r.head.start, r.head.end, r.head.text),
                      ("relation tail", r.tail.start, r.tail.end, r.tail.text)]
        for ev in self.events:
            spans.append(("trigger", ev.trigger.start, ev.trigger.end, ev.trigger.text))
            spans += [("argument", a.start, a.end, a.text) for a in ev.arguments]
        for kind, s, e, t in spans:
            if self.text[s:e] != t:
                problems.append(f"{kind} [{s}:{e}] is {self.text[s:e]!r} in the text but {t!r} in the annotation")
        return problems

    def _repr_html_(self) -> str:  # Jupyter
        from openie.display import record_html

        return record_html(self)

    def without_annotations(self) -> Record:
        """The same input with no gold annotations: what a model may see."""
        return replace(self, entities=[], relations=[], events=[], meta=dict(self.meta))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "text": self.text, "lang": self.lang,
                             "entities": [e.to_dict() for e in self.entities]}
        if self.relations:
            d["relations"] = [r.to_dict() for r in self.relations]
        if self.events:
            d["events"] = [e.to_dict() for e in self.events]
        if self.tokens is not None:
            d["tokens"] = list(self.tokens)
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        if not isinstance(d, dict):
            raise ValueError(f"a record must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("id", "text") if k not in d]
        if missing:
            raise ValueError(f"record is missing field(s) {', '.join(missing)}")
        return cls(
            id=str(d["id"]),
            text=str(d["text"]),
            lang=str(d.get("lang", "en")),
            entities=[Entity.from_dict(e) for e in d.get("entities", [])],
            relations=[Relation.from_dict(r) for r in d.get("relations", [])],
            events=[Event.from_dict(e) for e in d.get("events", [])],
            tokens=list(d["tokens"]) if d.get("tokens") is not None else None,
            meta=dict(d.get("meta", {})),
        )


def iter_jsonl(path: str | Path) -> Iterator[Record]:
    """Stream records from a JSONL file; a bad line raises an error naming file and line."""
    path = Path(path)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFormatError(f"not UTF-8 ({err.reason} at byte {err.start})", str(path), lineno) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"invalid JSON: {err.msg} (column {err.colno})", str(path), lineno) from None
            try:
                record = Record.from_dict(obj)
            except (KeyError, TypeError, ValueError) as err:
                raise DataFormatError(f"not a record: {err}", str(path), lineno) from None
            problems = record.check_offsets()
            if problems:
                raise DataFormatError(f"record {record.id!r}: {problems[0]}", str(path), lineno)
            yield record


def read_jsonl(path: str | Path) -> list[Record]:
    return list(iter_jsonl(path))


def write_jsonl(records: Iterable[Record], path: str | Path) -> int:
    """Write records one JSON object per line; returns how many were written."""
    n = 0
    with Path(path).open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n
