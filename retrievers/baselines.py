"""Baseline retrievers: seeded random demonstrations, and entity-level kNN (GPT-NER's stronger variant).

``RandomRetriever`` is the "any retrieval beats random demonstrations" control of RUIE. Its draw
is seeded by (seed, query text), not by call order: a resumed or re-batched run sees the same
demonstrations for the same query.

``EntityKNNRetriever`` ranks pool sentences by how similar their entity mentions are to the
query's, instead of whole-sentence similarity. GPT-NER found entity-level kNN the stronger
demonstration selector; EL4NER's SpanSim is the same idea. Pool sentences contribute their gold
mentions; the query (unlabelled) contributes candidate mentions from a span proposer, by default
the capitalised word n-grams of its text (a cheap, model-free proxy for named-entity spans; pass
a callable backed by an NER model for better candidates). For each query mention, take its best
cosine similarity among a pool sentence's mentions; a sentence's score is the mean (or sum) of
those maxima. A pool sentence without mentions scores -1 per query mention (the cosine floor).
A query without candidate mentions falls back to sentence-level similarity (``fallback="sentence"``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from openie.records import Record
from retrievers.base import (
    RecordPool,
    Result,
    duplicate_key,
    query_text,
    read_config,
    write_config,
)
from retrievers.dense import SentenceEncoder

SpanProposer = Callable[[str], Sequence[str]]
EMBEDDINGS_FILE = "embeddings.npz"


# --------------------------------------------------------------------------- random


class RandomRetriever:
    """``k`` eligible pool records drawn uniformly without replacement, seeded by (seed, query text)."""

    kind = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.pool = RecordPool()

    def index(self, examples: Sequence[Record]) -> None:
        self.pool = RecordPool(examples)

    def _rng(self, text: str) -> np.random.Generator:
        digest = hashlib.sha256(f"{self.seed}\x00{duplicate_key(text)}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def retrieve(self, query: Record | str, k: int, *, task: str | None = None,
                 exclude_text: str | None = None) -> list[Result]:
        if k <= 0:
            return []
        positions = self.pool.eligible_positions(query, task, exclude_text)
        if positions.size == 0:
            return []
        chosen = self._rng(query_text(query)).choice(positions.size, size=min(k, positions.size), replace=False)
        return [(self.pool.records[int(positions[j])], 0.0) for j in chosen]

    def save(self, path: str | Path) -> None:
        self.pool.save(write_config(path, self.kind, {"seed": self.seed}))

    @classmethod
    def load(cls, path: str | Path) -> RandomRetriever:
        config = read_config(path, cls.kind)
        retriever = cls(seed=config["seed"])
        retriever.pool = RecordPool.load(Path(path))
        return retriever

    def __repr__(self) -> str:
        return f"RandomRetriever(seed={self.seed}, records={len(self.pool)})"


# --------------------------------------------------------------------------- span proposer

_WORD = re.compile(r"\w(?:[\w'’.&-]*\w)?")
_LEADING_STOPWORDS = frozenset("""
a an the in on at of for to and but or if as by with from after before when while during since until
it its he she we they i you his her their our my your this that these those there here what who which
""".split())


def capitalised_ngrams(text: str, max_words: int = 5) -> list[str]:
    """Candidate entity mentions: maximal runs of capitalised words (at most ``max_words`` each).

    Words join a run when only whitespace separates them; leading function words are dropped
    (sentence-initial "The" in "The European Commission"). Unique, in order of appearance.
    """
    runs: list[list[re.Match[str]]] = []
    previous: re.Match[str] | None = None
    for match in _WORD.finditer(text):
        word = match.group()
        if not word[0].isupper():
            previous = None
            continue
        if previous is not None and text[previous.end():match.start()].isspace() and len(runs[-1]) < max_words:
            runs[-1].append(match)
        else:
            runs.append([match])
        previous = match
    out: list[str] = []
    for run in runs:
        while run and run[0].group().lower() in _LEADING_STOPWORDS:
            run = run[1:]
        if run:
            mention = text[run[0].start():run[-1].end()]
            if mention not in out:
                out.append(mention)
    return out


SPAN_PROPOSERS: dict[str, SpanProposer] = {"capitalised_ngrams": capitalised_ngrams}


# --------------------------------------------------------------------------- entity kNN


class EntityKNNRetriever:
    """Entity-level kNN: pool sentences scored by the similarity of their gold mentions to the query's candidates.

    ``aggregate`` is ``"mean"`` (default) or ``"sum"`` over query mentions; the encoder options are
    those of ``DenseRetriever``. Mentions are embedded on their own (without sentence context),
    each distinct string once.
    """

    kind = "entity_knn"

    def __init__(self, model: Any = "minilm", *, span_proposer: SpanProposer | str = "capitalised_ngrams",
                 aggregate: str = "mean", fallback: str = "sentence", query_prefix: str = "",
                 passage_prefix: str = "", batch_size: int = 64, device: str | None = None,
                 max_seq_length: int | None = None, show_progress: bool | None = None) -> None:
        if aggregate not in ("mean", "sum"):
            raise ValueError(f"aggregate must be 'mean' or 'sum', not {aggregate!r}")
        if fallback not in ("sentence", "none"):
            raise ValueError(f"fallback must be 'sentence' or 'none', not {fallback!r}")
        if isinstance(span_proposer, str):
            if span_proposer not in SPAN_PROPOSERS:
                raise ValueError(f"unknown span proposer {span_proposer!r}; known: {', '.join(SPAN_PROPOSERS)}")
            self.proposer_name: str | None = span_proposer
            self.span_proposer = SPAN_PROPOSERS[span_proposer]
        else:
            self.proposer_name, self.span_proposer = None, span_proposer
        self.aggregate, self.fallback = aggregate, fallback
        self.encoder = SentenceEncoder(model, query_prefix=query_prefix, passage_prefix=passage_prefix,
                                       batch_size=batch_size, device=device, max_seq_length=max_seq_length,
                                       show_progress=show_progress)
        self.pool = RecordPool()
        self._mention_vectors = np.zeros((0, 0), np.float32)  # one row per distinct mention string
        self._mention_of = np.zeros(0, np.int64)  # per (sentence, mention) pair: its row in _mention_vectors
        self._segment_starts = np.zeros(0, np.int64)  # where each sentence-with-mentions starts in _mention_of
        self._segment_owner = np.zeros(0, np.int64)  # the pool position of that sentence
        self._sentence_vectors: np.ndarray | None = None

    def config(self) -> dict[str, Any]:
        return {**self.encoder.config(), "span_proposer": self.proposer_name, "aggregate": self.aggregate,
                "fallback": self.fallback}

    # -- indexing -----------------------------------------------------------------------------

    def index(self, examples: Sequence[Record]) -> None:
        self.pool = RecordPool(examples)
        strings: dict[str, int] = {}
        mention_of: list[int] = []
        starts: list[int] = []
        owners: list[int] = []
        for i, record in enumerate(self.pool.records):
            mentions = list(dict.fromkeys(e.text for e in record.entities if e.text.strip()))
            if not mentions:
                continue
            starts.append(len(mention_of))
            owners.append(i)
            mention_of.extend(strings.setdefault(m, len(strings)) for m in mentions)
        self._mention_of = np.asarray(mention_of, dtype=np.int64)
        self._segment_starts = np.asarray(starts, dtype=np.int64)
        self._segment_owner = np.asarray(owners, dtype=np.int64)
        self._mention_vectors = self.encoder.encode(list(strings), kind="passage") if strings else \
            np.zeros((0, 0), np.float32)
        self._sentence_vectors = (self.encoder.encode(self.pool.texts, kind="passage")
                                  if self.fallback == "sentence" and len(self.pool) else None)

    # -- scoring ------------------------------------------------------------------------------

    def query_mentions(self, query: Record | str) -> list[str]:
        return list(dict.fromkeys(m for m in self.span_proposer(query_text(query)) if m.strip()))

    def scores(self, query: Record | str) -> np.ndarray:
        """Entity-level similarity of every pool record to ``query`` (pool order)."""
        n = len(self.pool)
        mentions = self.query_mentions(query)
        if not mentions:
            if self._sentence_vectors is None:
                return np.zeros(n)
            return self._sentence_vectors @ self.encoder.encode([query_text(query)], kind="query")[0]
        per_mention = np.full((len(mentions), n), -1.0, dtype=np.float32)
        if self._mention_of.size:
            q = self.encoder.encode(mentions, kind="query")
            sims = (q @ self._mention_vectors.T)[:, self._mention_of]  # query mention x (sentence, mention)
            per_mention[:, self._segment_owner] = np.maximum.reduceat(sims, self._segment_starts, axis=1)
        per_mention = per_mention.astype(np.float64)
        return per_mention.mean(axis=0) if self.aggregate == "mean" else per_mention.sum(axis=0)

    def retrieve(self, query: Record | str, k: int, *, task: str | None = None,
                 exclude_text: str | None = None) -> list[Result]:
        if k <= 0 or not len(self.pool):
            return []
        return self.pool.top_k_from_scores(self.scores(query), k, query, task=task, exclude_text=exclude_text)

    # -- persistence --------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Config, records and the mention / sentence embeddings (``embeddings.npz``)."""
        folder = write_config(path, self.kind, self.config())
        self.pool.save(folder)
        arrays = {"mention_vectors": self._mention_vectors, "mention_of": self._mention_of,
                  "segment_starts": self._segment_starts, "segment_owner": self._segment_owner}
        if self._sentence_vectors is not None:
            arrays["sentence_vectors"] = self._sentence_vectors
        np.savez(folder / EMBEDDINGS_FILE, **arrays)

    @classmethod
    def load(cls, path: str | Path, *, model: Any = None, span_proposer: SpanProposer | None = None,
             device: str | None = None, show_progress: bool | None = None) -> EntityKNNRetriever:
        """Restore a saved retriever; pass ``model`` / ``span_proposer`` when they were in-memory objects."""
        folder = Path(path)
        config = read_config(folder, cls.kind)
        config.pop("retriever")
        if model is not None:
            config["model"] = model
        elif config.get("model") is None:
            raise ValueError(f"{folder} was saved with an in-memory encoder: pass model= to load it")
        if span_proposer is not None:
            config["span_proposer"] = span_proposer
        elif config.get("span_proposer") is None:
            raise ValueError(f"{folder} was saved with a custom span proposer: pass span_proposer= to load it")
        retriever = cls(**config, device=device, show_progress=show_progress)
        retriever.pool = RecordPool.load(folder)
        with np.load(folder / EMBEDDINGS_FILE) as arrays:
            retriever._mention_vectors = arrays["mention_vectors"]
            retriever._mention_of = arrays["mention_of"]
            retriever._segment_starts = arrays["segment_starts"]
            retriever._segment_owner = arrays["segment_owner"]
            retriever._sentence_vectors = arrays["sentence_vectors"] if "sentence_vectors" in arrays else None
        return retriever

    def __repr__(self) -> str:
        return (f"EntityKNNRetriever(model={self.encoder.model_name!r}, aggregate={self.aggregate!r}, "
                f"records={len(self.pool)})")


__all__ = ["EntityKNNRetriever", "RandomRetriever", "SPAN_PROPOSERS", "SpanProposer", "capitalised_ngrams"]
