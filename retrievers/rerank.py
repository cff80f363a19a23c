"""Second-stage reranking and the two-stage pipeline RUIE uses (BM25 top-100 -> cross-encoder -> top-k).

There is deliberately no default reranking model: the only packaged encoder, all-MiniLM-L6-v2, is a
bi-encoder, and a cross-encoder initialised from it has a randomly initialised scoring head, whose
order would be noise. Pass the folder of a trained cross-encoder (e.g. RUIE's keyword-enhanced
reward model, trained in ``rewards/``), a hub id, or a loaded ``CrossEncoder``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from openie.records import Record
from retrievers.base import Reranker, Result, Retriever, progress_enabled, query_text, read_config, write_config

UNTRAINED_DEFAULTS = frozenset({"minilm"})


class CrossEncoderReranker:
    """Scores (query, candidate) text pairs with a sentence-transformers ``CrossEncoder``; best ``k`` first.

    ``format_query`` / ``format_candidate`` turn the query and a candidate record into the texts the
    model was trained on (RUIE's reward model reads the query with its gold answer and keyword
    markup); both default to the plain text. Scores are the model's outputs (sigmoid for one label).
    """

    def __init__(self, model: Any, *, batch_size: int = 32, max_length: int | None = None, device: str | None = None,
                 format_query: Callable[[Record | str], str] | None = None,
                 format_candidate: Callable[[Record], str] | None = None,
                 show_progress: bool | None = None) -> None:
        if model is None:
            raise ValueError("CrossEncoderReranker needs a trained cross-encoder (a path, hub id or CrossEncoder); "
                             "there is no packaged default")
        if isinstance(model, str | Path) and str(model) in UNTRAINED_DEFAULTS:
            raise ValueError(f"{model!r} is a bi-encoder: a cross-encoder initialised from it has an untrained "
                             "scoring head. Train one (see rewards/) and pass its folder")
        self.model_name: str | None = str(model) if isinstance(model, str | Path) else None
        self._model: Any = None if self.model_name is not None else model
        self.batch_size, self.max_length, self.device = int(batch_size), max_length, device
        self.format_query = format_query or query_text
        self.format_candidate = format_candidate or (lambda record: record.text)
        self.show_progress = show_progress

    @property
    def model(self) -> Any:
        if self._model is None:
            from sentence_transformers import CrossEncoder

            self._model = CrossEncoder(self.model_name, device=self.device, max_length=self.max_length)
        return self._model

    def score(self, query: Record | str, candidates: Sequence[Record]) -> list[float]:
        if not candidates:
            return []
        q = self.format_query(query)
        pairs = [(q, self.format_candidate(c)) for c in candidates]
        scores = self.model.predict(pairs, batch_size=self.batch_size, convert_to_numpy=True,
                                    show_progress_bar=progress_enabled(self.show_progress))
        return [float(s) for s in scores.reshape(len(pairs), -1)[:, -1]]

    def rerank(self, query: Record | str, candidates: Sequence[Result], k: int) -> list[Result]:
        records = [record for record, _ in candidates]
        scores = self.score(query, records)
        order = sorted(range(len(records)), key=lambda i: (-round(scores[i], 9), i))  # ties keep first-stage order
        return [(records[i], scores[i]) for i in order[:max(k, 0)]]

    def __repr__(self) -> str:
        return f"CrossEncoderReranker(model={self.model_name or type(self._model).__name__!r})"


class RetrievalPipeline:
    """A retriever made of a first stage and an optional reranker: first stage top-``candidates`` -> rerank -> top-``k``.

    The task filter and duplicate exclusion happen in the first stage, so the reranker only sees
    eligible candidates. Without a reranker the pipeline is the first stage truncated to ``k``.
    """

    kind = "pipeline"

    def __init__(self, first_stage: Retriever, reranker: Reranker | None = None, candidates: int = 100) -> None:
        if candidates <= 0:
            raise ValueError("candidates must be positive")
        self.first_stage, self.reranker, self.candidates = first_stage, reranker, int(candidates)

    def index(self, examples: Sequence[Record]) -> None:
        self.first_stage.index(examples)

    def retrieve(self, query: Record | str, k: int, *, task: str | None = None,
                 exclude_text: str | None = None) -> list[Result]:
        if k <= 0:
            return []
        candidates = self.first_stage.retrieve(query, max(self.candidates, k), task=task, exclude_text=exclude_text)
        if self.reranker is None:
            return candidates[:k]
        return self.reranker.rerank(query, candidates, k)

    def save(self, path: str | Path) -> None:
        """The first stage in ``first_stage/``; the reranker by its model path (an in-memory one is passed to ``load``)."""
        reranker = None
        if isinstance(self.reranker, CrossEncoderReranker) and self.reranker.model_name is not None:
            reranker = {"model": self.reranker.model_name, "batch_size": self.reranker.batch_size,
                        "max_length": self.reranker.max_length}
        folder = write_config(path, self.kind, {"candidates": self.candidates, "reranker": reranker,
                                                "has_reranker": self.reranker is not None})
        self.first_stage.save(folder / "first_stage")

    @classmethod
    def load(cls, path: str | Path, *, reranker: Reranker | None = None,
             first_stage: Retriever | None = None) -> RetrievalPipeline:
        """Restore a saved pipeline; the first stage is loaded by the kind its own config names
        (``first_stage=`` supplies a retriever of a kind ``load_retriever`` does not know)."""
        from retrievers import load_retriever  # the registry lives in the package, above this module

        folder = Path(path)
        config = read_config(folder, cls.kind)
        if first_stage is None:
            first_stage = load_retriever(folder / "first_stage")
        if reranker is None and config.get("reranker"):
            reranker = CrossEncoderReranker(**config["reranker"])
        if reranker is None and config.get("has_reranker"):
            raise ValueError(f"{folder} was saved with an in-memory reranker: pass reranker= to load it")
        return cls(first_stage, reranker, candidates=config["candidates"])

    def __repr__(self) -> str:
        return f"RetrievalPipeline({self.first_stage!r} -> {self.reranker!r}, candidates={self.candidates})"


__all__ = ["CrossEncoderReranker", "RetrievalPipeline"]
