"""Dense demonstration retrieval: a sentence-transformers bi-encoder over a faiss inner-product index.

Embeddings are L2-normalised, so inner product is cosine similarity and scores are comparable
across index types. ``index_type="flat"`` (exact, the default) suits pools up to a few hundred
thousand sentences; ``"hnsw"`` (graph, no training) and ``"ivf"`` (inverted lists, k-means trained
on the pool) trade a little recall for speed on large pools.

The encoder is the packaged all-MiniLM-L6-v2 by default (``resolve_model("minilm")``, offline);
any sentence-transformers folder or hub id works. Query and passage prefixes are configurable
because E5-style encoders (RUIE's distilled retriever) expect ``"query: "`` / ``"passage: "``;
MiniLM was trained without them, hence empty defaults. The model loads on first use, so building,
saving and loading a retriever configuration is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from openie.records import Record
from retrievers.base import RecordPool, Result, progress_enabled, query_text, read_config, write_config

INDEX_TYPES = ("flat", "hnsw", "ivf")
INDEX_FILE = "index.faiss"


class SentenceEncoder:
    """A lazily loaded sentence-transformers model with query / passage prefixes; L2-normalised float32 output.

    ``model`` is a short name (``"minilm"``), a folder, a hub id, or a loaded ``SentenceTransformer``
    (which cannot be written to a config: pass it again to ``load``).
    """

    def __init__(self, model: Any = "minilm", *, query_prefix: str = "", passage_prefix: str = "",
                 batch_size: int = 64, device: str | None = None, max_seq_length: int | None = None,
                 show_progress: bool | None = None) -> None:
        self.model_name: str | None = None if _is_model_object(model) else str(model)
        self._model: Any = model if _is_model_object(model) else None
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        self.batch_size, self.device, self.max_seq_length = int(batch_size), device, max_seq_length
        self.show_progress = show_progress

    @property
    def model(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from openie.models import resolve_model

            assert self.model_name is not None
            self._model = SentenceTransformer(resolve_model(self.model_name), device=self.device)
            if self.max_seq_length is not None:
                self._model.max_seq_length = self.max_seq_length
        return self._model

    def encode(self, texts: Sequence[str], *, kind: str = "passage") -> np.ndarray:
        """Embeddings of ``texts`` (``kind`` "query" or "passage" picks the prefix), shape (n, dim)."""
        if kind not in ("query", "passage"):
            raise ValueError(f"kind must be 'query' or 'passage', not {kind!r}")
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode([prefix + t for t in texts], batch_size=self.batch_size,
                                    show_progress_bar=progress_enabled(self.show_progress) and len(texts) > 1,
                                    convert_to_numpy=True, normalize_embeddings=True)
        return normalise(vectors)

    @property
    def dimension(self) -> int:
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    def config(self) -> dict[str, Any]:
        return {"model": self.model_name, "query_prefix": self.query_prefix, "passage_prefix": self.passage_prefix,
                "batch_size": self.batch_size, "max_seq_length": self.max_seq_length}


def _is_model_object(model: Any) -> bool:
    return not isinstance(model, str | Path)


def normalise(vectors: Any) -> np.ndarray:
    """Contiguous float32 rows of unit length (zero rows stay zero)."""
    out = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if out.ndim != 2:
        raise ValueError(f"expected a 2-d array of embeddings, got shape {out.shape}")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.ascontiguousarray(out / np.where(norms > 0, norms, 1.0), dtype=np.float32)


# --------------------------------------------------------------------------- faiss


def build_faiss_index(vectors: np.ndarray, index_type: str = "flat", *, nlist: int = 100, hnsw_m: int = 32,
                      ef_construction: int = 200) -> Any:
    """An inner-product faiss index holding ``vectors`` (already normalised).

    IVF: ``nlist`` is clamped to the pool size and the coarse quantiser is trained on the pool
    itself (faiss warns below 39 points per list; recall stays exact at ``nprobe == nlist``).
    """
    import faiss

    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index_type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
    n, dim = vectors.shape
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
    else:
        lists = max(1, min(nlist, n))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
    if n:
        index.add(vectors)
    return index


def search_faiss(index: Any, vector: np.ndarray, n: int, *, nprobe: int = 8, ef_search: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Top ``n`` (positions, scores) for one query vector; IVF widens ``nprobe`` until ``n`` hits are found."""
    import faiss

    n = min(n, index.ntotal)
    if n <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    query = vector.reshape(1, -1)
    if isinstance(index, faiss.IndexHNSWFlat):
        scores, ids = index.search(query, n, params=faiss.SearchParametersHNSW(efSearch=max(ef_search, n)))
    elif isinstance(index, faiss.IndexIVF):
        probe = min(nprobe, index.nlist)
        while True:
            scores, ids = index.search(query, n, params=faiss.SearchParametersIVF(nprobe=probe))
            if (ids[0] >= 0).sum() >= n or probe >= index.nlist:
                break
            probe = min(index.nlist, 2 * probe)
    else:
        scores, ids = index.search(query, n)
    return ids[0], scores[0]


# --------------------------------------------------------------------------- the retriever


class DenseRetriever:
    """Bi-encoder retrieval: cosine similarity of query and record-text embeddings, searched with faiss."""

    kind = "dense"

    def __init__(self, model: Any = "minilm", *, query_prefix: str = "", passage_prefix: str = "",
                 index_type: str = "flat", nlist: int = 100, nprobe: int = 8, hnsw_m: int = 32,
                 ef_construction: int = 200, ef_search: int = 128, batch_size: int = 64, device: str | None = None,
                 max_seq_length: int | None = None, show_progress: bool | None = None) -> None:
        if index_type not in INDEX_TYPES:
            raise ValueError(f"unknown index_type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
        self.encoder = SentenceEncoder(model, query_prefix=query_prefix, passage_prefix=passage_prefix,
                                       batch_size=batch_size, device=device, max_seq_length=max_seq_length,
                                       show_progress=show_progress)
        self.index_type, self.nlist, self.nprobe = index_type, int(nlist), int(nprobe)
        self.hnsw_m, self.ef_construction, self.ef_search = int(hnsw_m), int(ef_construction), int(ef_search)
        self.pool = RecordPool()
        self._index: Any = None

    def config(self) -> dict[str, Any]:
        return {**self.encoder.config(), "index_type": self.index_type, "nlist": self.nlist, "nprobe": self.nprobe,
                "hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction, "ef_search": self.ef_search}

    def index(self, examples: Sequence[Record]) -> None:
        self.pool = RecordPool(examples)
        vectors = self.encoder.encode(self.pool.texts, kind="passage")
        self._index = build_faiss_index(vectors, self.index_type, nlist=self.nlist, hnsw_m=self.hnsw_m,
                                        ef_construction=self.ef_construction) if len(self.pool) else None

    def _search(self, vector: np.ndarray):
        def search(n: int) -> tuple[np.ndarray, np.ndarray]:
            return search_faiss(self._index, vector, n, nprobe=self.nprobe, ef_search=self.ef_search)
        return search

    def retrieve(self, query: Record | str, k: int, *, task: str | None = None,
                 exclude_text: str | None = None) -> list[Result]:
        if self._index is None or k <= 0:
            return []
        vector = self.encoder.encode([query_text(query)], kind="query")[0]
        return self.pool.top_k_from_search(self._search(vector), k, query, task=task, exclude_text=exclude_text)

    def retrieve_many(self, queries: Sequence[Record | str], k: int, *, task: str | None = None) -> list[list[Result]]:
        """``retrieve`` for many queries, encoding them in batches (the bulk of the time on CPU).

        Each query excludes its own text and id; batch padding moves scores in the last float digits only.
        """
        if self._index is None or k <= 0:
            return [[] for _ in queries]
        vectors = self.encoder.encode([query_text(q) for q in queries], kind="query")
        return [self.pool.top_k_from_search(self._search(v), k, q, task=task) for q, v in zip(queries, vectors, strict=True)]

    def save(self, path: str | Path) -> None:
        """``config.json`` (encoder and index settings), ``records.jsonl`` and ``index.faiss``."""
        import faiss

        folder = write_config(path, self.kind, {**self.config(), "size": len(self.pool)})
        self.pool.save(folder)
        if self._index is not None:
            faiss.write_index(self._index, str(folder / INDEX_FILE))

    @classmethod
    def load(cls, path: str | Path, *, model: Any = None, device: str | None = None,
             show_progress: bool | None = None) -> DenseRetriever:
        """Restore a saved retriever; ``model`` overrides the saved encoder (required if it was an object)."""
        import faiss

        folder = Path(path)
        config = read_config(folder, cls.kind)
        for key in ("retriever", "size"):
            config.pop(key, None)
        if model is not None:
            config["model"] = model
        elif config.get("model") is None:
            raise ValueError(f"{folder} was saved with an in-memory encoder: pass model= to load it")
        retriever = cls(**config, device=device, show_progress=show_progress)
        retriever.pool = RecordPool.load(folder)
        if (folder / INDEX_FILE).is_file():
            retriever._index = faiss.read_index(str(folder / INDEX_FILE))
        if retriever._index is not None and retriever._index.ntotal != len(retriever.pool):
            raise ValueError(f"{folder}: the index holds {retriever._index.ntotal} vectors for "
                             f"{len(retriever.pool)} records")
        return retriever

    def __repr__(self) -> str:
        return (f"DenseRetriever(model={self.encoder.model_name!r}, index_type={self.index_type!r}, "
                f"records={len(self.pool)})")


__all__ = ["INDEX_TYPES", "DenseRetriever", "SentenceEncoder", "build_faiss_index", "normalise", "search_faiss"]
