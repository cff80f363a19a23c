"""Demonstration retrieval for in-context information extraction.

Every retriever indexes a pool of ``Record``s and returns ``(record, score)`` pairs, best first,
never the query itself and only records of the query's task (see ``retrievers.base``):

* ``BM25Retriever`` — Okapi BM25 on lowercase word tokens; ``rank-bm25`` (reference) or ``bm25s`` (fast).
* ``DenseRetriever`` — sentence-transformers bi-encoder + faiss (flat / HNSW / IVF).
* ``RandomRetriever`` — the seeded random control.
* ``EntityKNNRetriever`` — entity-level kNN (GPT-NER, EL4NER's span similarity).
* ``RetrievalPipeline`` + ``CrossEncoderReranker`` — first stage top-N, reranked (RUIE).

``create_retriever(name, **kw)`` builds one by name (experiment configs), ``load_retriever(path)``
restores any saved one. Importing this package loads no model library; models load on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openie.errors import UnknownNameError
from retrievers.base import RecordPool, Reranker, Result, Retriever, as_demonstrations, read_config
from retrievers.baselines import EntityKNNRetriever, RandomRetriever, capitalised_ngrams
from retrievers.bm25 import BM25Retriever, word_tokenize
from retrievers.dense import DenseRetriever, SentenceEncoder
from retrievers.rerank import CrossEncoderReranker, RetrievalPipeline


def _bm25(**kw: Any) -> BM25Retriever:
    return BM25Retriever(**{"backend": "rank_bm25", **kw})


def _bm25s(**kw: Any) -> BM25Retriever:
    return BM25Retriever(**{**kw, "backend": "bm25s"})


def _pipeline(first_stage: Retriever | str = "bm25s", reranker: Reranker | str | None = None, candidates: int = 100,
              first_stage_kw: dict[str, Any] | None = None, reranker_kw: dict[str, Any] | None = None) -> RetrievalPipeline:
    """``first_stage`` is a retriever or a name of this factory; ``reranker`` a Reranker or a cross-encoder path."""
    if isinstance(first_stage, str):
        first_stage = create_retriever(first_stage, **(first_stage_kw or {}))
    if isinstance(reranker, str | Path):
        reranker = CrossEncoderReranker(reranker, **(reranker_kw or {}))
    return RetrievalPipeline(first_stage, reranker, candidates=candidates)


RETRIEVERS = {
    "bm25": _bm25,
    "bm25s": _bm25s,
    "dense": DenseRetriever,
    "random": RandomRetriever,
    "entity_knn": EntityKNNRetriever,
    "pipeline": _pipeline,
}

_LOADERS = {
    BM25Retriever.kind: BM25Retriever,
    DenseRetriever.kind: DenseRetriever,
    RandomRetriever.kind: RandomRetriever,
    EntityKNNRetriever.kind: EntityKNNRetriever,
    RetrievalPipeline.kind: RetrievalPipeline,
}


def list_retrievers() -> list[str]:
    return list(RETRIEVERS)


def create_retriever(name: str, **kw: Any) -> Retriever:
    """A retriever by name: ``bm25``, ``bm25s``, ``dense``, ``random``, ``entity_knn`` or ``pipeline``.

    Keyword arguments go to the class (``pipeline``: ``first_stage``, ``reranker``, ``candidates``,
    ``first_stage_kw``, ``reranker_kw``).
    """
    try:
        factory = RETRIEVERS[name]
    except KeyError:
        raise UnknownNameError("retriever", name, list(RETRIEVERS)) from None
    return factory(**kw)


def load_retriever(path: str | Path, **kw: Any) -> Retriever:
    """Restore a retriever saved by any class here (its ``config.json`` names the kind); ``kw`` go to ``load``."""
    kind = read_config(path).get("retriever")
    if kind not in _LOADERS:
        raise UnknownNameError("saved retriever kind", str(kind), list(_LOADERS))
    return _LOADERS[kind].load(path, **kw)


__all__ = [
    "BM25Retriever", "CrossEncoderReranker", "DenseRetriever", "EntityKNNRetriever", "RETRIEVERS", "RandomRetriever",
    "RecordPool", "Reranker", "Result", "RetrievalPipeline", "Retriever", "SentenceEncoder", "as_demonstrations",
    "capitalised_ngrams", "create_retriever", "list_retrievers", "load_retriever", "word_tokenize",
]
