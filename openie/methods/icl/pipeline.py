"""In-context extraction: prompt a (LoRA-adapted) LLM zero- or few-shot and read grounded annotations.

The simplest method and the building block of the others: records -> prompts (with
demonstrations) -> batched engine calls -> parsed, grounded predictions. Long texts are cut into
overlapping chunks of at most ``chunk_tokens`` model tokens (any script: characters where a
script has no spaces) and merged back with global offsets. Nothing is lost silently: every
prediction carries ``meta["coverage"]`` (what the model saw, what came back cut or ungrounded).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from openie.chunking import Chunk, chunk_record, merge_chunks, text_units
from openie.engines.base import Engine, GenerationRequest, capabilities
from openie.records import Record
from prompts.builder import Prompt, PromptBuilder
from prompts.formats import complete_prefix
from retrievers.base import Retriever, as_demonstrations

Demonstrations = Callable[[Record], Sequence[Record]]
# Chunk budget in model tokens, for extraction quality rather than the context window. Measured
# (experiments/results/chunk_size/analysis.md): F1 falls as chunks grow; 128 is the smallest size
# that keeps every sentence of the CrossNER and WNUT dev sets whole (a document is cut, a sentence not).
DEFAULT_CHUNK_TOKENS = 128
COVERAGE_LOSSES = ("chars_not_seen", "cut_at_max_tokens", "not_grounded")


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
    retried: int = 0

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
    chunk_tokens: int | None = None  # None: DEFAULT_CHUNK_TOKENS (less where the context window is smaller)
    chunk_overlap_tokens: int = 32
    retry_cut: bool = False  # an answer cut at max_tokens is asked again once with twice the budget
    sentence_chunks: bool = True  # a record longer than a chunk: one sentence per prompt (else whole sentences packed)
    show_progress: bool = True
    stats: ExtractionStats = field(default_factory=ExtractionStats)
    router: Callable[[Record], str | None] | None = None  # per-record adapter (e.g. an AdapterRouter); wins over adapter
    save_io: bool = False  # keep each prompt, raw answer and finish reason in meta["io"] (openie extract --save-io)

    @property
    def task(self) -> str:
        return self.builder.task

    def _token_count(self) -> Callable[[str], int] | None:
        return token_counter(self.engine)  # None: words, or characters of scripts written without spaces

    def chunk_budget(self) -> int:
        """Tokens of input per prompt: ``chunk_tokens``, or less when the context window cannot hold
        that next to the prompt's own text and the answer."""
        budget = self.chunk_tokens or DEFAULT_CHUNK_TOKENS
        context = capabilities(self.engine).context_length
        if context:
            count = self._token_count()
            per_unit = 1 if count is not None else 2  # without a tokenizer the budget is in words: ~2 tokens each
            measure = count or (lambda text: 2 * len(text.split()))
            overhead = max(measure(p.text) for p in self.builder.build(Record("budget", "")))
            budget = min(budget, (context - self.max_tokens - overhead - 8) // per_unit)
        if budget < 16:
            raise ValueError(f"the context window ({context} tokens) leaves {budget} tokens of input per prompt "
                             f"next to the template and max_tokens={self.max_tokens}: raise max_model_len or "
                             "lower max_tokens")
        return budget

    def _units(self, record: Record) -> list[tuple[Record, Chunk | None]]:
        """(record to prompt, chunk or None): long records become several chunk records."""
        if not hasattr(self, "_budget"):
            self._budget, self._count = self.chunk_budget(), self._token_count()
        budget = self._budget
        cost = self._count or (lambda text: len(text_units(text)))
        if cost(record.text) <= budget:
            return [(record, None)]  # it fits: one prompt, whatever its sentences
        parts = chunk_record(record, budget, min(self.chunk_overlap_tokens, budget // 4), self._count,
                             align_sentences=True, one_sentence=self.sentence_chunks)
        self.stats.chunked_records += 1
        return [(sub, chunk) for chunk, sub in parts]

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
            for unit, chunk in self._units(record):  # a chunk gets demonstrations of its own text
                demos = self.demonstrations(unit) if self.demonstrations else ()
                work.append((i, unit, chunk, self.builder.build(unit, demos)))
        prompts = [p for *_, ps in work for p in ps]
        work_of: dict[int, list[tuple[int, Record, Any, list[Prompt]]]] = {}
        for w in work:
            work_of.setdefault(w[0], []).append(w)
        adapters = None
        if self.router is not None:  # one adapter per record, all in one engine call (a mixed batch)
            route_many = getattr(self.router, "route", None)
            chosen = ([d.adapter for d in route_many(list(batch))] if route_many is not None
                      else [self.router(record) for record in batch])
            adapters = [chosen[i] for i, *_, ps in work for _ in ps]
        requests = self._requests(prompts, adapters)
        generations = list(self.engine.generate(requests)) if prompts else []
        self.stats.prompts += len(prompts)
        retried = [i for i, g in enumerate(generations) if g.finish_reason == "length"] if self.retry_cut else []
        if retried:  # once, with twice the budget; what is still cut is salvaged below
            from dataclasses import replace

            again = self.engine.generate([replace(requests[i], max_tokens=2 * requests[i].max_tokens) for i in retried])
            for i, g in zip(retried, again, strict=True):
                self.stats.prompt_tokens += generations[i].prompt_tokens
                self.stats.completion_tokens += generations[i].completion_tokens
                generations[i] = g
            self.stats.prompts += len(retried)
            self.stats.retried += len(retried)
        retried_set = set(retried)
        self.stats.prompt_tokens += sum(g.prompt_tokens for g in generations)
        self.stats.completion_tokens += sum(g.completion_tokens for g in generations)
        answers = iter(enumerate(generations))
        per_record: dict[int, list[tuple[Any, Record]]] = {}
        io: dict[int, list[dict[str, Any]]] = {}
        coverage: dict[int, dict[str, int]] = {}
        for i, unit, chunk, ps in work:
            numbered = [next(answers) for _ in ps]
            gens = [g for _, g in numbered]
            texts = [complete_prefix(g.text, self.builder.format.name) if g.finish_reason == "length" else g.text
                     for g in gens]
            pred = self.builder.parse_record(unit, ps, texts)
            per_record.setdefault(i, []).append((chunk, pred))
            c = coverage.setdefault(i, {"prompts": 0, "cut_at_max_tokens": 0, "salvaged": 0, "retried": 0,
                                        "labels_per_prompt": 0, "prompt_tokens": 0})
            c["prompts"] += len(ps)
            c["cut_at_max_tokens"] += sum(g.finish_reason == "length" for g in gens)
            c["salvaged"] += sum(g.finish_reason == "length" and t != g.text for g, t in zip(gens, texts, strict=True))
            c["retried"] += sum(n in retried_set for n, _ in numbered)
            c["labels_per_prompt"] = max(c["labels_per_prompt"], *(len(p.labels) if p.labels is not None else
                                                                   len(self.builder.schema.entity_labels) for p in ps))
            c["prompt_tokens"] += sum(g.prompt_tokens for g in gens)
            if self.save_io:
                io.setdefault(i, []).extend(
                    {"prompt": [dict(m) for m in p.messages] if p.messages is not None else p.text,
                     "answer": g.text, "finish_reason": g.finish_reason, "prompt_tokens": g.prompt_tokens,
                     "completion_tokens": g.completion_tokens, **({"label": p.label} if p.label else {}),
                     **({"labels": list(p.labels)} if p.labels is not None else {}),
                     **({"retried": True} if n in retried_set else {}),
                     **({"salvaged": t} if t != g.text else {})}
                    for (n, g), p, t in zip(numbered, ps, texts, strict=True))
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
            if parts[0][0] is not None and self.demonstrations is not None:  # what each chunk was shown
                pred.meta["demo_ids"] = list(dict.fromkeys(d for _, _, _, ps in work_of[i] for p in ps for d in p.demo_ids))
            c = coverage[i]
            pred.meta["cut_at_max_tokens"] = c["cut_at_max_tokens"]  # answers that hit max_tokens (salvaged)
            pred.meta["coverage"] = record_coverage(record, [ch for ch, _ in parts], c,
                                                    pred.meta.get("alignment", {}).get("not_found", 0),
                                                    self._count)
            if self.save_io:
                pred.meta["io"] = io.get(i, [])
            if adapters is not None:
                pred.meta["adapter"] = chosen[i]
            self.stats.add(pred)
            out.append(pred)
        return out


def token_counter(engine: Engine | None) -> Callable[[str], int] | None:
    """Exact lengths from the engine's tokenizer (special tokens left out), where it has one."""
    tokenizer = capabilities(engine).tokenizer if engine is not None else None
    if tokenizer is None or not hasattr(tokenizer, "encode"):
        return None
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def record_coverage(record: Record, chunks: Sequence[Chunk | None], counts: Mapping[str, int], not_grounded: int,
                    count: Callable[[str], int] | None = None) -> dict[str, Any]:
    """What of ``record`` the model saw and what came back: ``meta["coverage"]`` of a prediction.

    ``chars_not_seen`` counts non-space characters in no chunk that was sent; with ``count`` (the
    model's tokenizer) ``tokens`` is the input's length in model tokens.
    """
    text = record.text
    seen = [False] * len(text)
    for c in chunks:
        start, end = (0, len(text)) if c is None else (c.start, c.end)
        seen[start:end] = [True] * (end - start)
    not_seen = sum(1 for ch, s in zip(text, seen, strict=True) if not s and not ch.isspace())
    out: dict[str, Any] = {"chars": len(text), "chars_seen": len(text) - not_seen, "chars_not_seen": not_seen,
                           "chunks": len(chunks), **counts, "not_grounded": not_grounded}
    if count is not None:
        out["tokens"] = count(text) if text else 0
    out["complete"] = all(not out[k] for k in COVERAGE_LOSSES)
    return out
