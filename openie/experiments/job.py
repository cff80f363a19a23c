"""The parts of an extraction job that every process shares: the input, the extractor spec, one batch.

``openie extract`` (:mod:`openie.experiments.extract`), its Ray workers
(:mod:`openie.experiments.ray_extract`) and grid cells (:mod:`openie.experiments.run`) import
them from here, so none of them imports another to reach them (the import graph stays acyclic).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from openie.engines.base import Engine
from openie.errors import OpenIEError
from openie.methods.demonstrations import DemonstrationSpec, demonstration_selector
from openie.methods.icl import Demonstrations
from openie.methods.registry import EngineRequest, Extractor, MethodContext, MethodSetup, get_method
from openie.records import Event, Record
from openie.schema import Schema

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonlines")
INDEX_EVERY = 1024  # a byte offset is kept every this many valid records (Ray workers seek to them)


class ExtractError(OpenIEError, ValueError):
    """An extraction run that cannot start or continue as asked (the message says what to change)."""


# =============================================================================================
# input
# =============================================================================================

def _parse_line(raw: bytes) -> Record | str | None:
    """A record, or the reason the line is not one (``None`` for a blank line)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"not UTF-8 ({err.reason} at byte {err.start})"
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        return f"invalid JSON: {err.msg} (column {err.colno})"
    try:
        record = Record.from_dict(obj)
    except (KeyError, TypeError, ValueError) as err:
        return f"not a record: {err}"
    problems = record.check_offsets()
    if problems:
        return f"record {record.id!r}: {problems[0]}"
    return record


@dataclass(frozen=True)
class InputScan:
    """What the first pass over the input found; small (no records), so it travels to Ray workers."""

    total: int  # valid records
    bad_lines: frozenset[int]  # line numbers (1-based) to skip: malformed or duplicate ids
    index: tuple[tuple[int, int, int], ...] = ()  # (valid record index, byte offset, line number)
    entity_labels: Mapping[str, int] = field(default_factory=dict)  # gold entity label -> count
    relations: int = 0  # gold relations

    @property
    def malformed(self) -> int:
        return len(self.bad_lines)

    @property
    def has_gold(self) -> bool:
        return bool(self.entity_labels) or self.relations > 0


@dataclass
class RecordSource:
    """The input: a JSONL file of records (streamed), another records file (CoNLL, CoNLL04 JSON;
    read whole), or a registered corpus ``NAME:SPLIT``."""

    spec: str
    data_root: str | None = None

    def __post_init__(self) -> None:
        from openie.datasets import list_datasets

        self.spec = str(self.spec)
        path = Path(self.spec).expanduser()
        name, _, split = self.spec.partition(":")
        self._records: list[Record] | None = None
        if path.is_file():
            self.path: Path | None = path.resolve()
            self.kind = "jsonl" if path.suffix.lower() in JSONL_SUFFIXES else "file"
        elif split and name in list_datasets():
            self.path, self.kind = None, "dataset"
        elif path.exists():
            raise ExtractError(f"input {self.spec} is not a file")
        else:
            raise ExtractError(f"input {self.spec!r} is neither an existing file nor a registered corpus NAME:SPLIT "
                               f"(corpora: {', '.join(list_datasets())})")

    @classmethod
    def of(cls, records: Sequence[Record], name: str) -> RecordSource:
        """Records already in memory (a grid cell's seeded sample), recorded as ``name``."""
        source = cls.__new__(cls)
        source.spec, source.data_root, source.path, source.kind = name, None, None, "memory"
        source._records = list(records)
        return source

    def __getstate__(self) -> dict[str, Any]:  # Ray ships the source, not records loaded by the driver
        if self.kind == "memory":
            raise ExtractError(f"records in memory ({self.spec}) do not travel to Ray workers: write them to a file")
        return {**self.__dict__, "_records": None}

    @property
    def id(self) -> str:
        """What the configuration records as the input."""
        return str(self.path) if self.path is not None else self.spec

    @property
    def dataset(self) -> str | None:
        if self.kind in ("dataset", "memory") and ":" in self.spec:
            from openie.datasets import list_datasets

            name = self.spec.partition(":")[0]
            return name if name in list_datasets() else None
        return None

    def _loaded(self) -> list[Record]:
        if self._records is None:
            from openie.datasets import load_records

            self._records = load_records(self.spec if self.kind == "dataset" else self.path,  # type: ignore[arg-type]
                                         data_root=self.data_root)
        return self._records

    def _items(self, offset: int = 0, lineno: int = 0) -> Iterator[tuple[int, int, Record | str | None, bytes]]:
        """(line number, byte offset, record | reason | None, raw line) from ``offset`` on."""
        if self.kind != "jsonl":
            for i, r in enumerate(self._loaded()):
                yield i + 1, 0, r, b""
            return
        with open(self.path, "rb") as fh:  # type: ignore[arg-type]
            fh.seek(offset)
            for raw in fh:
                lineno += 1
                yield lineno, offset, _parse_line(raw), raw
                offset += len(raw)

    def scan(self, errors_path: Path | None = None) -> InputScan:
        """First pass: validate every line, report bad ones to ``errors_path`` (rewritten each run)."""
        if errors_path is not None:
            errors_path.unlink(missing_ok=True)
        errors: IO[str] | None = None
        seen: dict[str, int] = {}
        bad: set[int] = set()
        index: list[tuple[int, int, int]] = []
        labels: Counter[str] = Counter()
        relations = total = 0
        try:
            for lineno, offset, item, raw in self._items():
                if item is None:
                    continue
                if isinstance(item, Record) and item.id in seen:
                    item = f"duplicate record id {item.id!r} (first on line {seen[item.id]})"
                if isinstance(item, str):
                    bad.add(lineno)
                    if errors_path is not None:
                        if errors is None:
                            errors_path.parent.mkdir(parents=True, exist_ok=True)
                            errors = open(errors_path, "w", encoding="utf-8")
                        errors.write(json.dumps({"line": lineno, "reason": item,
                                                 "raw": raw.decode("utf-8", "replace").rstrip("\r\n")},
                                                ensure_ascii=False) + "\n")
                    continue
                seen[item.id] = lineno
                if self.kind == "jsonl" and total % INDEX_EVERY == 0:
                    index.append((total, offset, lineno - 1))
                total += 1
                labels.update(e.label for e in item.entities)
                relations += len(item.relations)
        finally:
            if errors is not None:
                errors.close()
        return InputScan(total, frozenset(bad), tuple(index), dict(labels), relations)

    def records(self, scan: InputScan, start: int = 0, stop: int | None = None) -> Iterator[Record]:
        """Valid records ``start`` (inclusive) to ``stop`` (exclusive), in input order."""
        stop = scan.total if stop is None else min(stop, scan.total)
        if start >= stop:
            return
        entry = max((e for e in scan.index if e[0] <= start), default=(0, 0, 0))
        n = entry[0]
        for lineno, _, item, _ in self._items(entry[1], entry[2]):
            if not isinstance(item, Record) or lineno in scan.bad_lines:
                continue
            if n >= start:
                yield item
            n += 1
            if n >= stop:
                return


def pool_fingerprint(pool: Sequence[Record]) -> str:
    digest = hashlib.sha256()
    for r in pool:
        digest.update(json.dumps(r.to_dict(), sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


# =============================================================================================
# configuration: what builds the extractor, here and in every Ray worker
# =============================================================================================

@dataclass(frozen=True)
class ExtractorSpec:
    """Everything a process needs to build the same extractor (picklable: Ray workers get a copy)."""

    template: str
    schema: dict[str, Any]
    backend: str = "auto"
    model: str = "gemma-3-270m"
    adapters: dict[str, str] = field(default_factory=dict)
    adapter: str | None = None
    engine_options: dict[str, Any] = field(default_factory=dict)
    max_tokens: int = 128
    batch_size: int = 32
    constrained: bool = True
    data_root: str | None = None
    cache: str | None = None
    engine_factory: Callable[[], Engine] | None = None  # instead of create_engine (tests, custom engines)
    selection: DemonstrationSpec | None = None  # how demonstrations are chosen (random draws or a retriever)
    save_io: bool = False  # keep prompts and raw answers (written to <output>.io.jsonl)
    method: str = "icl"  # a registered method (openie.methods.registry), built through its registration
    method_options: dict[str, Any] = field(default_factory=dict)
    workdir: str | None = None
    max_prompt_tokens: int | None = None
    shared_dir: str | None = None
    setup: MethodSetup | None = None  # what the method's options were checked against (task, model, default pool)

    def build_engine(self) -> Engine:
        if self.engine_factory is not None:
            return self.engine_factory()
        from openie.engines import create_engine

        return create_engine(self.backend, self.model, self.adapters or None, cache=self.cache, **self.engine_options)

    def build_demonstrations(self) -> Demonstrations | None:
        return demonstration_selector(self.selection) if self.selection is not None else None

    def method_setup(self) -> MethodSetup:
        return self.setup or MethodSetup("ner", self.model, self.backend, self.adapter, self.adapters, None,
                                         self.data_root)

    def build(self, engine: Engine | None = None, demonstrations: Demonstrations | None = None,
              engine_for: Callable[[EngineRequest], Engine] | None = None) -> Extractor:
        """The method's extractor through its registration (the one way every process builds it)."""
        reg = get_method(self.method)
        setup = self.method_setup()
        options = reg.parse_options(self.method_options, "method options", setup)
        context = MethodContext(
            Schema.from_dict(self.schema), (engine or self.build_engine()) if reg.needs_engine else None,
            self.template, (demonstrations or self.build_demonstrations()) if reg.takes_demonstrations else None,
            self.adapter, self.max_tokens, self.batch_size, self.constrained, self.data_root,
            Path(self.workdir) if self.workdir else None, self.model, setup.task, self.backend, self.max_prompt_tokens,
            self.save_io, Path(self.shared_dir) if self.shared_dir else None, engine_for, setup.default_pool)
        return reg.build(context, options)


def model_input(record: Record, task: str) -> Record:
    """What the model may see: no gold, except event triggers for argument extraction (its input)."""
    shown = record.without_annotations()
    if task == "eae":
        shown.events = [Event(ev.trigger) for ev in record.events]
    return shown


@dataclass
class BatchCounts:
    prompts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    cache_misses: int = 0

    def __iadd__(self, other: BatchCounts) -> BatchCounts:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)
        return self


def _cache_counts(engine: Any) -> tuple[int, int]:
    stats = getattr(engine, "stats", None)
    return (stats.hits, stats.misses) if stats is not None and hasattr(stats, "hits") else (0, 0)


def _counts(extractor: Any) -> tuple[int, ...]:
    """(prompts, prompt tokens, generated tokens, cache hits, misses) so far; a method without some of them counts 0."""
    s = getattr(extractor, "stats", None)
    return (*(int(getattr(s, k, 0) or 0) for k in ("prompts", "prompt_tokens", "completion_tokens")),
            *_cache_counts(getattr(extractor, "engine", None)))


def predict_batch(extractor: Extractor, records: Sequence[Record]) -> tuple[list[Record], BatchCounts]:
    """One batch through the extractor (gold hidden); demonstration ids land in each prediction's meta."""
    before = _counts(extractor)
    preds = extractor.extract_batch([model_input(r, extractor.task) for r in records])
    if len(preds) != len(records):
        raise ExtractError(f"the method returned {len(preds)} predictions for a batch of {len(records)} records")
    demonstrations = getattr(extractor, "demonstrations", None)
    if demonstrations is not None:
        for r, p in zip(records, preds, strict=True):
            if "demo_ids" not in p.meta:  # a chunked record lists its chunks' demonstrations itself
                p.meta["demo_ids"] = [d.id for d in demonstrations(r) if d.text != r.text]
    after = _counts(extractor)
    return preds, BatchCounts(*(a - b for a, b in zip(after, before, strict=True)))


