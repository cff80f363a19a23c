"""Demonstration selectors from a declarative spec: the one place ``openie extract`` and experiment grids build them.

Strategies: ``none``; ``random`` (seeded by (seed, record id), see ``RandomDemonstrations``); any
retriever of ``retrievers.create_retriever`` (``bm25``, ``bm25s``, ``dense``, ``entity_knn``) with
``options``; ``ruie`` (the distilled retriever of a fitted RUIE work folder, ``path``); ``saved``
(any retriever saved with ``save``, ``path``). ``rerank`` (a trained reward-model or cross-encoder
folder) reranks the first stage's top ``candidates``.

Pools are ``NAME:SPLIT`` of registered corpora (several make one unified pool, each record shown
with its own label set) or a records file. Indexed retrievers are kept for the process, keyed by
everything that changes their results, so the cells of a grid that share a pool index it once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from openie.methods.icl import RandomDemonstrations, RetrieverDemonstrations
from openie.records import Record
from retrievers.base import MemoizedRetriever

STRATEGIES = ("none", "random", "bm25", "bm25s", "dense", "entity_knn", "ruie", "saved")
RETRIEVER_STRATEGIES = ("bm25", "bm25s", "dense", "entity_knn")
DEFAULT_RERANK_CANDIDATES = 100


@dataclass(frozen=True)
class DemonstrationSpec:
    strategy: str = "none"
    pool: tuple[str, ...] = ()
    k: int = 0
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    rerank: str | None = None
    candidates: int | None = None
    task: str = "ner"
    data_root: str | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown demonstration strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.strategy != "none" and self.k < 1:
            raise ValueError(f"strategy {self.strategy!r} needs k >= 1, got {self.k}")
        if self.strategy in ("ruie", "saved") and not self.path:
            raise ValueError(f"strategy {self.strategy!r} needs path= (a RUIE work folder or a saved retriever)")
        if self.strategy not in ("none", "saved") and not self.pool:
            raise ValueError(f"strategy {self.strategy!r} needs a pool (NAME:SPLIT or a records file)")
        if self.rerank and self.strategy in ("none", "random"):
            raise ValueError("rerank needs a retrieval strategy as its first stage, not "
                             f"{self.strategy!r}")

    def retriever_key(self) -> str:
        d = asdict(self)
        for key in ("k", "seed"):
            d.pop(key)
        return json.dumps(d, sort_keys=True, default=str)

    def describe(self) -> dict[str, Any]:
        """What goes into a run's config record (output-changing fields only)."""
        d = {k: v for k, v in asdict(self).items() if v not in (None, {}, ()) and k != "data_root"}
        d["pool"] = list(self.pool)
        return d


def default_pool_sources(strategy: str, path: str | None) -> tuple[str, ...]:
    """The pool a strategy uses when none is given: a fitted RUIE folder's own (the one it was trained
    on); the others have none (``saved`` keeps its index, the rest need one)."""
    if strategy == "ruie" and path and Path(path).is_dir():
        from openie.methods.ruie import RUIE

        return tuple(RUIE(path).config.pool)
    return ()


def load_pool_sources(sources: Sequence[str], task: str | None = None, data_root: str | None = None) -> list[Record]:
    """Records of every source (registered ``NAME:SPLIT`` or a records file), tagged by ``openie.datasets.load_pool``."""
    from openie.datasets import list_datasets, load_pool
    from openie.readers import read_records

    pool: list[Record] = []
    for source in sources:
        name, sep, _ = source.partition(":")
        if sep and name in list_datasets() and not Path(source).exists():
            pool += load_pool(source, tasks=[task] if task else None, data_root=data_root)
        elif Path(source).is_file():
            pool += read_records(source)
        else:
            raise ValueError(f"demonstration pool {source!r} is neither a registered corpus NAME:SPLIT "
                             "nor a records file")
    return pool


_RETRIEVERS: dict[str, MemoizedRetriever] = {}


def build_retriever(spec: DemonstrationSpec, pool: Sequence[Record] | None = None) -> MemoizedRetriever:
    """The indexed (and possibly reranked) retriever of ``spec``, built once per process."""
    key = spec.retriever_key()
    if key in _RETRIEVERS:
        return _RETRIEVERS[key]
    from retrievers import RetrievalPipeline, create_retriever, load_retriever

    retriever: Any
    if spec.strategy == "saved":
        retriever = load_retriever(spec.path, **spec.options)  # type: ignore[arg-type]
    else:
        records = list(pool) if pool is not None else load_pool_sources(spec.pool, spec.task, spec.data_root)
        if spec.strategy == "ruie":
            from openie.methods.ruie import RUIE

            retriever = RUIE(spec.path, pool=records).retriever()  # type: ignore[arg-type]
        else:
            retriever = create_retriever(spec.strategy, **spec.options)
            retriever.index(records)
    if spec.rerank:
        retriever = RetrievalPipeline(retriever, load_reranker(spec.rerank),
                                      candidates=spec.candidates or DEFAULT_RERANK_CANDIDATES)
    _RETRIEVERS[key] = MemoizedRetriever(retriever)
    return _RETRIEVERS[key]


def load_reranker(path: str) -> Any:
    """A RUIE reward model folder (``KeywordRewardModel``) or any sentence-transformers cross-encoder."""
    from rewards.keyword import CONFIG_FILE, KeywordRewardModel

    if (Path(path) / CONFIG_FILE).is_file():
        return KeywordRewardModel.load(path)
    from retrievers import CrossEncoderReranker

    return CrossEncoderReranker(path)


def weights_fingerprint(folder: str | Path) -> str:
    """sha256 over a model folder's weight and config files: keys outputs to the trained model, not its path."""
    import hashlib

    folder = Path(folder)
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".json", ".faiss")
                   and not any(part.startswith("index-") for part in p.relative_to(folder).parts))
    for path in files:
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def spec_fingerprints(spec: DemonstrationSpec) -> dict[str, str]:
    """Content hashes of the trained models a spec names (RUIE retriever, saved retriever, reranker)."""
    out = {}
    if spec.strategy == "ruie" and spec.path:
        out["retriever"] = weights_fingerprint(Path(spec.path) / "retriever")
    elif spec.strategy == "saved" and spec.path:
        out["retriever"] = weights_fingerprint(spec.path)
    if spec.rerank:
        out["rerank"] = weights_fingerprint(spec.rerank)
    return out


def demonstration_selector(spec: DemonstrationSpec,
                           pool: Sequence[Record] | None = None) -> Callable[[Record], Sequence[Record]] | None:
    """The selector of ``spec``; ``pool``: the spec's pool when the caller has read it already."""
    if spec.strategy == "none" or spec.k == 0:
        return None
    if spec.strategy == "random":
        records = list(pool) if pool is not None else load_pool_sources(spec.pool, spec.task, spec.data_root)
        return RandomDemonstrations(records, spec.k, spec.seed)
    return RetrieverDemonstrations(build_retriever(spec, pool), spec.k, task=spec.task)


__all__ = ["RETRIEVER_STRATEGIES", "STRATEGIES", "DemonstrationSpec", "MemoizedRetriever", "build_retriever",
           "default_pool_sources", "demonstration_selector", "load_pool_sources", "load_reranker", "spec_fingerprints", "weights_fingerprint"]
