"""In-context extraction: prompt a (LoRA-adapted) LLM zero- or few-shot and read grounded annotations.

The simplest method and the building block of the others: records -> prompts (with
demonstrations) -> batched engine calls -> parsed, grounded predictions. Texts longer than the
engine's context allows are cut into overlapping chunks and merged back with global offsets.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from openie.chunking import chunk_record, merge_chunks
from openie.engines.base import Engine, GenerationRequest, capabilities
from openie.records import Record
from prompts.builder import Prompt, PromptBuilder
from retrievers.base import Retriever, as_demonstrations

Demonstrations = Callable[[Record], Sequence[Record]]


def extract_in_batches(extractor: Any, records: Iterable[Record], *, total: int | None = None,
                       desc: str = "extract") -> Iterator[Record]:
    """Stream ``extractor.extract_batch`` over ``records`` in ``extractor.batch_size`` chunks, in input
    order, with a progress bar (``extractor.show_progress``) showing prompts and parse problems."""
    records = iter(records)
    bar = tqdm(total=total, desc=desc, unit="rec", disable=not extractor.show_progress)
    while True:
        batch = [r for _, r in zip(range(extractor.batch_size), records, strict=False)]
        if not batch:
            break
        yield from extractor.extract_batch(batch)
        bar.update(len(batch))
        bar.set_postfix(prompts=extractor.stats.prompts, problems=extractor.stats.parse_problems)
    bar.close()


@dataclass
class RandomDemonstrations:
    """``k`` random pool records per query, never the query itself nor a record with the same text.

    The draw is seeded by (seed, query id), not by position: it does not depend on the order,
    batching or resumption of a run, so an interrupted cell continues with the same prompts.
    Used by ``openie extract`` and ``openie experiment run`` alike; similarity-based selectors
    come from ``retrievers`` behind the same call.
    """

    pool: Sequence[Record]
    k: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1 for few-shot extraction, got {self.k}")
        if not self.pool:
            raise ValueError("the demonstration pool is empty")

    def __call__(self, record: Record) -> list[Record]:
        rng = random.Random(f"{self.seed}:{record.id}")
        chosen: list[Record] = []
        seen: set[int] = set()
        n = len(self.pool)
        while len(chosen) < self.k and len(seen) < n:
            i = rng.randrange(n)
            if i in seen:
                continue
            seen.add(i)
            demo = self.pool[i]
            if demo.id != record.id and demo.text != record.text:
                chosen.append(demo)
        return chosen


@dataclass
class RetrieverDemonstrations:
    """The ``k`` best demonstrations of any ``retrievers.Retriever`` for each query, most relevant first.

    The runner asks twice per record (to build the prompt, then to log the demonstrations used):
    wrap an expensive retriever in ``openie.methods.demonstrations.MemoizedRetriever``.
    """

    retriever: Retriever
    k: int
    task: str | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1 for few-shot extraction, got {self.k}")

    def __call__(self, record: Record) -> list[Record]:
        return as_demonstrations(self.retriever.retrieve(record, self.k, task=self.task))


@dataclass
class ExtractionStats:
    records: int = 0
    prompts: int = 0
    chunked_records: int = 0
    entities: int = 0
    relations: int = 0
    parse_problems: int = 0
    not_found: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cut_at_max_tokens: int = 0

    def add(self, pred: Record) -> None:
        self.records += 1
        self.cut_at_max_tokens += pred.meta.get("cut_at_max_tokens", 0)
        self.entities += len(pred.entities)
        self.relations += len(pred.relations)
        self.parse_problems += len(pred.meta.get("parse_problems", []))
        self.not_found += pred.meta.get("alignment", {}).get("not_found", 0)


@dataclass
class InContextExtractor:
    """Zero-shot (no ``demonstrations``) or few-shot extraction with any engine, adapter and template.

    ``constrained`` sends the format's JSON Schema for constrained decoding (JSON and question
    formats). ``max_words_per_chunk`` defaults to what fits the engine's context window next to
    the prompt's own text and the answer.
    """

    engine: Engine
    builder: PromptBuilder
    demonstrations: Demonstrations | None = None
    adapter: str | None = None
    max_tokens: int = 128
    batch_size: int = 32
    constrained: bool = True
    max_words_per_chunk: int | None = None
    chunk_overlap_words: int = 32
    show_progress: bool = True
    stats: ExtractionStats = field(default_factory=ExtractionStats)
    router: Callable[[Record], str | None] | None = None  # per-record adapter (e.g. an AdapterRouter); wins over adapter
    save_io: bool = False  # keep each prompt, raw answer and finish reason in meta["io"] (openie extract --save-io)

    @property
    def task(self) -> str:
        return self.builder.task

    def _chunk_words(self) -> int:
        if self.max_words_per_chunk is not None:
            return self.max_words_per_chunk
        context = capabilities(self.engine).context_length or 2048
        overhead = len(self.builder.render(Record("budget", "")).split()) * 2  # tokens per word ~ 1.3-2
        return max(32, int((context - self.max_tokens - overhead) / 2))

    def _units(self, record: Record) -> list[tuple[Record, Any]]:
        """(record to prompt, chunk or None): long records become several chunk records."""
        limit = self._chunk_words()
        if len(record.text.split()) <= limit:
            return [(record, None)]
        self.stats.chunked_records += 1
        return [(sub, chunk) for chunk, sub in chunk_record(record, limit, min(self.chunk_overlap_words, limit // 4))]

    def _requests(self, prompts: Sequence[Prompt], adapters: Sequence[str | None] | None = None) -> list[GenerationRequest]:
        adapters = adapters if adapters is not None else [self.adapter] * len(prompts)
        return [GenerationRequest(adapter=a, max_tokens=self.max_tokens,
                                  **p.request_fields(constrained=self.constrained)) for p, a in zip(prompts, adapters, strict=True)]

    def extract(self, records: Iterable[Record], total: int | None = None) -> Iterator[Record]:
        """Predictions in input order, produced batch by batch (stream them to disk as they come)."""
        return extract_in_batches(self, records, total=total, desc="extract")

    def extract_batch(self, batch: Sequence[Record]) -> list[Record]:
        work: list[tuple[int, Record, Any, list[Prompt]]] = []
        for i, record in enumerate(batch):
            for unit, chunk in self._units(record):
                demos = self.demonstrations(record) if self.demonstrations else ()
                work.append((i, unit, chunk, self.builder.build(unit, demos)))
        prompts = [p for *_, ps in work for p in ps]
        adapters = None
        if self.router is not None:  # one adapter per record, all in one engine call (a mixed batch)
            route_many = getattr(self.router, "route", None)
            chosen = ([d.adapter for d in route_many(list(batch))] if route_many is not None
                      else [self.router(record) for record in batch])
            adapters = [chosen[i] for i, *_, ps in work for _ in ps]
        generations = self.engine.generate(self._requests(prompts, adapters)) if prompts else []
        self.stats.prompts += len(prompts)
        self.stats.prompt_tokens += sum(g.prompt_tokens for g in generations)
        self.stats.completion_tokens += sum(g.completion_tokens for g in generations)
        answers = iter(generations)
        per_record: dict[int, list[tuple[Any, Record]]] = {}
        io: dict[int, list[dict[str, Any]]] = {}
        cut: dict[int, int] = {}
        for i, unit, chunk, ps in work:
            gens = [next(answers) for _ in ps]
            pred = self.builder.parse_record(unit, ps, [g.text for g in gens])
            per_record.setdefault(i, []).append((chunk, pred))
            cut[i] = cut.get(i, 0) + sum(g.finish_reason == "length" for g in gens)
            if self.save_io:
                io.setdefault(i, []).extend(
                    {"prompt": [dict(m) for m in p.messages] if p.messages is not None else p.text,
                     "answer": g.text, "finish_reason": g.finish_reason, "prompt_tokens": g.prompt_tokens,
                     "completion_tokens": g.completion_tokens, **({"label": p.label} if p.label else {})}
                    for p, g in zip(ps, gens, strict=True))
        out = []
        for i, record in enumerate(batch):
            parts = per_record[i]
            if parts[0][0] is None:
                pred = parts[0][1]
            else:
                pred = merge_chunks(record.without_annotations(), [c for c, _ in parts], [p for _, p in parts])
                pred.meta["parse_problems"] = [q for _, p in parts for q in p.meta["parse_problems"]]
                pred.meta["alignment"] = {k: sum(p.meta["alignment"][k] for _, p in parts)
                                          for k in ("exact", "fuzzy", "not_found")}
                pred.meta["chunks"] = len(parts)
            pred.meta["template"] = self.builder.version
            pred.meta["cut_at_max_tokens"] = cut.get(i, 0)  # answers that hit max_tokens: maybe incomplete
            if self.save_io:
                pred.meta["io"] = io.get(i, [])
            if adapters is not None:
                pred.meta["adapter"] = chosen[i]
            self.stats.add(pred)
            out.append(pred)
        return out
