"""Input-aware adapter routing (RetrieveAll): the adapter of the majority attribute among similar examples.

RetrieveAll attaches a language's LoRA adapter to each input by retrieving the most similar
labelled examples and taking their majority language. Nothing in that rule is specific to
language: :class:`AdapterRouter` routes on any attribute of the pool records (``lang``, or a
``meta`` key such as ``domain`` or ``task``), with a confidence floor below which a default
adapter (or the base model) is used.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openie.errors import OpenIEError
from openie.records import Record


class RoutingError(OpenIEError, ValueError):
    """A router that cannot be built as asked (empty pool, unknown attribute values)."""


def record_attribute(attribute: str) -> Callable[[Record], str | None]:
    """``lang`` reads ``record.lang``; any other name reads ``record.meta[name]``."""
    if attribute == "lang":
        return lambda r: r.lang
    return lambda r: (None if r.meta.get(attribute) is None else str(r.meta.get(attribute)))


@dataclass
class RouteDecision:
    """Where one input goes, and why: the votes of its neighbours."""

    adapter: str | None
    value: str | None  # the winning attribute value (None when the router fell back)
    confidence: float  # the winning value's share of the (similarity-weighted) votes
    votes: dict[str, float] = field(default_factory=dict)
    fallback: bool = False


class AdapterRouter:
    """Route inputs to adapters by the majority ``attribute`` of their ``k`` nearest pool examples.

    ``adapters`` maps attribute values to adapter names. A value without an adapter, or a winning
    share below ``min_confidence``, routes to ``fallback`` (an adapter name, or None for the base
    model). ``weighted`` counts each neighbour by its similarity instead of one vote each.
    """

    def __init__(self, retriever: Any, adapters: Mapping[str, str | None], *, attribute: str = "lang", k: int = 8,
                 min_confidence: float = 0.5, fallback: str | None = None, weighted: bool = False):
        if k < 1:
            raise RoutingError(f"k must be at least 1, got {k}")
        if not 0.0 <= min_confidence <= 1.0:
            raise RoutingError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.retriever, self.adapters = retriever, dict(adapters)
        self.attribute, self.k, self.min_confidence = attribute, k, min_confidence
        self.fallback, self.weighted = fallback, weighted
        self._value = record_attribute(attribute)

    @classmethod
    def build(cls, pool: Sequence[Record], adapters: Mapping[str, str | None], *, encoder: Any = "minilm",
              retriever: Any = None, attribute: str = "lang", show_progress: bool = False,
              **options: Any) -> AdapterRouter:
        """Index a labelled pool with ``retriever`` (default: a dense sentence retriever on ``encoder``;
        a multilingual encoder routes languages best)."""

        value = record_attribute(attribute)
        labelled = [r for r in pool if value(r) is not None]
        if not labelled:
            raise RoutingError(f"no pool record carries the attribute {attribute!r}")
        unknown = sorted({value(r) for r in labelled} - set(adapters))
        if unknown and options.get("fallback") is None:
            raise RoutingError(f"pool values {unknown} have no adapter and there is no fallback")
        if retriever is None:
            from retrievers.dense import DenseRetriever

            retriever = DenseRetriever(encoder, show_progress=show_progress)
        retriever.index(labelled)
        return cls(retriever, adapters, attribute=attribute, **options)

    def _decide(self, neighbours: Sequence[tuple[Record, float]]) -> RouteDecision:
        votes: Counter[str] = Counter()
        for record, score in neighbours:
            value = self._value(record)
            if value is not None:
                votes[value] += max(float(score), 0.0) if self.weighted else 1.0
        total = sum(votes.values())
        if not total:
            return RouteDecision(self.fallback, None, 0.0, {}, True)
        value, count = max(votes.items(), key=lambda kv: (kv[1], kv[0] in self.adapters))
        confidence = count / total
        shares = {v: round(c / total, 4) for v, c in votes.most_common()}
        if confidence < self.min_confidence or value not in self.adapters:
            return RouteDecision(self.fallback, None, confidence, shares, True)
        return RouteDecision(self.adapters[value], value, confidence, shares)

    def route(self, records: Sequence[Record | str]) -> list[RouteDecision]:
        many = getattr(self.retriever, "retrieve_many", None)
        neighbours = many(list(records), self.k) if many is not None else [self.retriever.retrieve(r, self.k)
                                                                         for r in records]
        return [self._decide(n) for n in neighbours]

    def __call__(self, record: Record) -> str | None:
        """The adapter for one record (the per-request adapter hook of :class:`InContextExtractor`)."""
        return self.route([record])[0].adapter


def routing_accuracy(decisions: Sequence[RouteDecision], truth: Sequence[str | None]) -> float:
    """Share of inputs routed to their true attribute value (fallbacks count as wrong)."""
    if len(decisions) != len(truth):
        raise RoutingError(f"{len(decisions)} decisions but {len(truth)} true values")
    return sum(d.value == t for d, t in zip(decisions, truth, strict=True)) / max(1, len(truth))


__all__ = ["AdapterRouter", "RouteDecision", "RoutingError", "record_attribute", "routing_accuracy"]
