"""LLM preference scores: how much a candidate demonstration helps a frozen LLM produce a query's gold answer.

RUIE's supervision signal (arXiv 2409.11673): for a training query with gold output ``y`` and a
candidate demonstration ``c``, the score is the mean per-token log-likelihood of ``y`` given
``instruction + c + query``. Better demonstrations make the gold answer more likely. Candidates
of another task than the query get ``OTHER_TASK_SCORE`` (-100) without a model call.

The prompt text is not built here (rewards sit beside the prompt layer, not above it): the caller
passes ``render(query, candidate) -> (context, continuation)``, e.g. the ``*.ruie-preference.v1``
templates through ``prompts.PromptBuilder``. Scoring goes through ``Engine.loglikelihood``, so any
backend works; wrap the engine in ``CachedEngine`` to make re-runs free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from openie.engines.base import Engine, ScoreRequest
from openie.records import Record

OTHER_TASK_SCORE = -100.0
Render = Callable[[Record, Record], tuple[str, str]]


@dataclass
class PreferenceExample:
    """A query, its candidate demonstrations and the LLM's score of each (higher: more helpful)."""

    query: Record
    candidates: list[Record]
    scores: list[float]

    def __post_init__(self) -> None:
        if len(self.candidates) != len(self.scores):
            raise ValueError(f"{len(self.candidates)} candidates but {len(self.scores)} scores")

    def ranking(self) -> list[int]:
        """Candidate positions, best first (ties keep candidate order)."""
        return sorted(range(len(self.scores)), key=lambda i: (-self.scores[i], i))

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query.to_dict(), "candidates": [c.to_dict() for c in self.candidates],
                "scores": list(self.scores)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreferenceExample:
        return cls(Record.from_dict(d["query"]), [Record.from_dict(c) for c in d["candidates"]],
                   [float(s) for s in d["scores"]])


def same_task(query: Record, candidate: Record) -> bool:
    """Untagged records belong to every task (single-task pools need no tags)."""
    q, c = query.meta.get("task"), candidate.meta.get("task")
    return q is None or c is None or q == c


class LLMPreferenceScorer:
    """Scores candidate demonstrations for queries with ``Engine.loglikelihood``, batched across queries."""

    def __init__(self, engine: Engine, render: Render, *, adapter: str | None = None, batch_size: int = 64,
                 other_task_score: float = OTHER_TASK_SCORE, show_progress: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.engine, self.render, self.adapter = engine, render, adapter
        self.batch_size, self.other_task_score, self.show_progress = int(batch_size), float(other_task_score), show_progress

    def score(self, query: Record, candidates: Sequence[Record]) -> list[float]:
        return next(iter(self.score_many([(query, candidates)]))).scores

    def score_many(self, items: Iterable[tuple[Record, Sequence[Record]]], total: int | None = None
                   ) -> Iterator[PreferenceExample]:
        """One ``PreferenceExample`` per (query, candidates), in order, as soon as its scores are in.

        Requests of consecutive queries share engine batches of about ``batch_size``.
        """
        bar = tqdm(total=total, desc="LLM preference", unit="query", disable=not self.show_progress)
        pending: list[tuple[Record, list[Record], list[float | None]]] = []
        requests: list[tuple[int, int, ScoreRequest]] = []
        for query, candidates in items:
            candidates = list(candidates)
            scores: list[float | None] = [None] * len(candidates)
            for j, cand in enumerate(candidates):
                if not same_task(query, cand):
                    scores[j] = self.other_task_score
                    continue
                context, continuation = self.render(query, cand)
                requests.append((len(pending), j, ScoreRequest(context, continuation, adapter=self.adapter)))
            pending.append((query, candidates, scores))
            if len(requests) >= self.batch_size:
                yield from self._flush(pending, requests, bar)
                pending, requests = [], []
        yield from self._flush(pending, requests, bar)
        bar.close()

    def _flush(self, pending, requests, bar) -> Iterator[PreferenceExample]:
        results = self.engine.loglikelihood([r for _, _, r in requests]) if requests else []
        for (i, j, _), result in zip(requests, results, strict=True):
            pending[i][2][j] = result.mean_logprob
        for query, candidates, scores in pending:
            bar.update(1)
            yield PreferenceExample(query, candidates, [float(s) for s in scores])  # type: ignore[arg-type]


__all__ = ["OTHER_TASK_SCORE", "LLMPreferenceScorer", "PreferenceExample", "same_task"]
