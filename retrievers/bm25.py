"""BM25 demonstration retrieval: ``rank-bm25`` (the reference) or ``bm25s`` (fast sparse), one ranking.

RUIE draws its candidate demonstrations from the BM25 top-100, so the ranking must not depend on
the backend. Both backends score with Okapi BM25 exactly as ``rank_bm25.BM25Okapi`` does:

    score(q, d) = sum over query tokens t (repeats counted) of
                  idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t) = ln((N - df + 0.5) / (df + 0.5)), and for terms in more than half of the documents
             (negative idf) epsilon * mean idf over the vocabulary.

``bm25s``' default variant differs (Lucene's idf ``ln(1 + (N - df + 0.5)/(df + 0.5))``, and its
"robertson" variant clamps negative idfs to 0 and drops the ``k1 + 1`` factor). So the ``bm25s``
backend builds its sparse matrix with the ATIRE term-frequency component (Okapi's, with ``k1 + 1``)
and the Lucene idf, which is positive for every term, then rescales each term's column by
``okapi_idf / lucene_idf``: the matrix then holds Okapi's per-term scores exactly (float64), and a
query is a sparse column sum. ``k1``, ``b`` and ``epsilon`` are shared by both backends.

Tokenizer (documented, configurable, saved with the index): lowercase the text, then take the
matches of ``token_pattern`` (default ``\\w+``: Unicode word characters, so punctuation is dropped
and accented / Cyrillic words stay whole). No stemming, no stop words: a few hundred thousand
sentences index in seconds and RUIE's BM25 stage is lexical on purpose.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from openie.records import Record
from retrievers.base import RecordPool, Result, progress_enabled, query_text, read_config, write_config

BACKENDS = ("rank_bm25", "bm25s")
DEFAULT_TOKEN_PATTERN = r"\w+"


def word_tokenize(text: str, token_pattern: str = DEFAULT_TOKEN_PATTERN, lowercase: bool = True) -> list[str]:
    """The BM25 tokenizer: lowercased ``\\w+`` word tokens, e.g. ``"U.S. Open-2024"`` -> ``["u", "s", "open", "2024"]``."""
    return re.findall(token_pattern, text.lower() if lowercase else text)


def okapi_idf(df: np.ndarray, n_docs: int, epsilon: float) -> np.ndarray:
    """``rank_bm25.BM25Okapi``'s idf for document frequencies ``df`` (every vocabulary term once)."""
    df = np.asarray(df, dtype=np.float64)
    idf = np.array([math.log(n_docs - f + 0.5) - math.log(f + 0.5) for f in df], dtype=np.float64)
    if idf.size:
        idf[idf < 0] = epsilon * (idf.sum() / idf.size)
    return idf


class BM25Retriever:
    """Okapi BM25 over record texts; ``backend="rank_bm25"`` (reference) or ``"bm25s"`` (fast, same ranking).

    ``rank_bm25`` scores a query with a Python loop over every document (tens of ms per query on
    10k sentences); ``bm25s`` precomputes a sparse term x document score matrix (sub-millisecond).
    """

    kind = "bm25"

    def __init__(self, backend: str = "rank_bm25", *, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25,
                 token_pattern: str = DEFAULT_TOKEN_PATTERN, lowercase: bool = True,
                 show_progress: bool | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown BM25 backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        re.compile(token_pattern)
        self.backend, self.k1, self.b, self.epsilon = backend, float(k1), float(b), float(epsilon)
        self.token_pattern, self.lowercase, self.show_progress = token_pattern, lowercase, show_progress
        self.pool = RecordPool()
        self._model: Any = None

    def config(self) -> dict[str, Any]:
        return {"backend": self.backend, "k1": self.k1, "b": self.b, "epsilon": self.epsilon,
                "token_pattern": self.token_pattern, "lowercase": self.lowercase}

    def tokenize(self, text: str) -> list[str]:
        return word_tokenize(text, self.token_pattern, self.lowercase)

    # -- indexing -----------------------------------------------------------------------------

    def index(self, examples: Sequence[Record]) -> None:
        self.pool = RecordPool(examples)
        show = progress_enabled(self.show_progress)
        corpus = [self.tokenize(r.text) for r in tqdm(self.pool.records, desc="BM25 tokenize", disable=not show)]
        if not corpus:
            self._model = None
        elif self.backend == "rank_bm25":
            from rank_bm25 import BM25Okapi

            self._model = BM25Okapi(corpus, k1=self.k1, b=self.b, epsilon=self.epsilon)
        else:
            self._model = self._build_bm25s(corpus, show)

    def _build_bm25s(self, corpus: list[list[str]], show: bool) -> Any:
        import bm25s

        model = bm25s.BM25(k1=self.k1, b=self.b, method="atire", idf_method="lucene", dtype="float64",
                           backend="numpy")
        model.index(corpus, create_empty_token=False, show_progress=show)
        scores = model.scores
        indptr = np.asarray(scores["indptr"])
        df = np.diff(indptr)  # one stored entry per (term, document containing it)
        n_docs = int(scores["num_docs"])
        lucene = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        ratio = okapi_idf(df, n_docs, self.epsilon) / lucene
        data = np.asarray(scores["data"], dtype=np.float64)
        scores["data"] = data * np.repeat(ratio, df)
        return model

    # -- scoring ------------------------------------------------------------------------------

    def scores(self, query: Record | str) -> np.ndarray:
        """Okapi BM25 score of every pool record for ``query`` (pool order)."""
        if self._model is None:
            return np.zeros(len(self.pool))
        tokens = self.tokenize(query_text(query))
        if self.backend == "rank_bm25":
            return np.asarray(self._model.get_scores(tokens), dtype=np.float64)
        ids = self._model.get_tokens_ids(tokens)
        if not ids:
            return np.zeros(len(self.pool))
        return np.asarray(self._model.get_scores_from_ids(ids), dtype=np.float64)

    def retrieve(self, query: Record | str, k: int, *, task: str | None = None,
                 exclude_text: str | None = None) -> list[Result]:
        return self.pool.top_k_from_scores(self.scores(query), k, query, task=task, exclude_text=exclude_text)

    # -- persistence --------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Records + config; the ``bm25s`` backend also saves its sparse matrix (the Okapi-rescaled one)."""
        folder = write_config(path, self.kind, self.config())
        self.pool.save(folder)
        if self.backend == "bm25s" and self._model is not None:
            self._model.save(str(folder / "bm25s"))

    @classmethod
    def load(cls, path: str | Path, *, show_progress: bool | None = None) -> BM25Retriever:
        folder = Path(path)
        config = read_config(folder, cls.kind)
        config.pop("retriever")
        retriever = cls(**config, show_progress=show_progress)
        pool = RecordPool.load(folder)
        if retriever.backend == "bm25s" and (folder / "bm25s").is_dir() and len(pool):
            import bm25s

            retriever.pool = pool
            retriever._model = bm25s.BM25.load(str(folder / "bm25s"))
        else:  # rank_bm25 has no file format: re-indexing takes seconds
            retriever.index(pool.records)
        return retriever

    def __repr__(self) -> str:
        return f"BM25Retriever(backend={self.backend!r}, k1={self.k1}, b={self.b}, records={len(self.pool)})"


__all__ = ["BACKENDS", "BM25Retriever", "okapi_idf", "word_tokenize"]
