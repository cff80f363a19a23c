"""RetrieveAll (arXiv 2505.19128): multilingual NER with one LoRA adapter per language and input-aware routing.

The pipeline, one section per step of the paper's figure:

1. **Data.** One corpus per language (:data:`LANGUAGE_CORPORA`), labels mapped to the shared
   ``person`` / ``location`` / ``organization`` / ``misc`` (:func:`language_data`).
2. **Training prompts.** Each training sentence is shown with the most similar *context-level*
   example (cosine of sentence representations) and the most similar *entity-level* example
   (cosine of mention representations, best pair) among the other training sentences of its
   language, each kept only above a dynamic threshold (:class:`SimilarExamples`,
   :func:`augmented_training_pairs`).
3. **Adapters.** One LoRA per language on one frozen base model, plus a shared LoRA on the union
   of the languages, the baseline (:func:`train_language_adapters`).
4. **Inference.** Each input is embedded, its ``k`` nearest labelled pool examples vote on its
   language (:class:`~openie.methods.routing.AdapterRouter`), that language's adapter is attached
   and its demonstrations are chosen by the training rule from that language's pool, so test
   prompts look like training prompts. A batch mixes languages: one adapter per request, one
   engine call (:class:`RetrieveAllExtractor`).

What the paper leaves open and openie fixes (documented defaults, all configurable):

* **Threshold rule.** An example is kept when its similarity is strictly above
  ``mean + n_std * std`` (population std, ``n_std = 1``) of *that query's* candidate similarities
  at the same level. Over many candidates the best one nearly always clears it; the rule bites
  when the candidates are all alike (a flat distribution means no example stands out).
* **Two distinct examples.** When the best entity-level example is the context-level pick, the
  next best entity-level example above the threshold is used instead.
* **Entity level at inference.** A test input has no gold mentions; its words stand in for them
  (``query_mentions="words"``: best pair between the input's words and the candidate's mentions),
  or the entity level is skipped (``"none"``).
* **Representation.** ``llm`` (default): the frozen base model read at a middle layer (the NER
  Retriever's hook point, ``self_attn.v_proj``); a mention is the vector at its last token, in
  context; a sentence is the mean of its words' last-token vectors. ``sentence``: a
  sentence-transformers encoder (MiniLM; mentions embedded on their own, without context).
  ``ngram``: hashed character n-grams, no model: cheap and a classic language identifier.
* **Routing pool.** The training sentences of every language; ``k = 8``; below
  ``min_confidence = 0.5`` the input falls back to a configurable adapter (the shared one).
* **Shared baseline's demonstrations.** The shared adapter has no notion of language: its
  demonstrations come from the union pool by the same rule.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import zlib
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from openie.errors import OpenIEError
from openie.methods.icl import InContextExtractor, extract_in_batches
from openie.methods.routing import AdapterRouter, RouteDecision
from openie.records import Record
from openie.schema import Schema

LANGUAGE_CORPORA: dict[str, str] = {"en": "conll2003", "de": "multiner_de", "ru": "multiner_ru", "tr": "multiner_tr"}
CANONICAL_LABELS: tuple[str, ...] = ("person", "location", "organization", "misc")
SHARED = "shared"  # the key of the shared adapter beside the language codes
MODES = ("routed", "oracle", "shared")
REPRESENTATIONS = ("llm", "sentence", "ngram")
QUERY_MENTIONS = ("words", "none")
_WORD = re.compile(r"\S+")


class RetrieveAllError(OpenIEError, ValueError):
    """RetrieveAll cannot run as asked (names the language, adapter or setting)."""


# =============================================================================================
# 1. data: one corpus per language, canonical labels, a held-out half where there is no train split
# =============================================================================================


@dataclass
class LanguageData:
    """One language's training pool and development sample, and where each came from."""

    lang: str
    corpus: str
    train: list[Record]
    dev: list[Record]
    train_source: str  # e.g. "conll2003:train" or "multiner_de:dev (seeded 50% split, first part)"
    dev_source: str
    dropped_labels: dict[str, int] = field(default_factory=dict)  # non-canonical labels removed, by label

    def summary(self) -> dict[str, Any]:
        return {"corpus": self.corpus, "train": len(self.train), "dev": len(self.dev),
                "train_source": self.train_source, "dev_source": self.dev_source,
                "train_entities": sum(len(r.entities) for r in self.train),
                "dev_entities": sum(len(r.entities) for r in self.dev), "dropped_labels": dict(self.dropped_labels)}


def canonical_records(records: Iterable[Record], lang: str, corpus: str,
                      labels: Sequence[str] = CANONICAL_LABELS) -> tuple[list[Record], Counter[str]]:
    """Copies with ``lang`` set and only entities of ``labels`` (the registry's label map already ran).

    The registry maps every raw tag of the four corpora to a canonical label, so nothing is
    dropped today; a corpus added later with extra types (dates, products) loses them here
    rather than teaching one language's adapter types the others never see.
    """
    keep = set(labels)
    dropped: Counter[str] = Counter()
    out = []
    for r in records:
        dropped.update(e.label for e in r.entities if e.label not in keep)
        out.append(Record(r.id, r.text, lang=lang, entities=[e for e in r.entities if e.label in keep],
                          tokens=r.tokens, meta={**r.meta, "corpus": corpus}))
    return out, dropped


def heldout_split(records: Sequence[Record], fraction: float, seed: int | str) -> tuple[list[Record], list[Record]]:
    """(train, held-out) by a seeded shuffle: the last ``fraction`` of the shuffle is held out.

    Used where a corpus ships only a dev file; the held-out part is what RetrieveAll calls dev.
    Both parts keep corpus order. Sentence-level: the corpora's sentences are independent.
    """
    if not 0.0 < fraction < 1.0:
        raise RetrieveAllError(f"heldout_fraction must be between 0 and 1 (exclusive), got {fraction}")
    order = list(range(len(records)))
    random.Random(str(seed)).shuffle(order)
    cut = len(order) - round(len(order) * fraction)
    train, held = sorted(order[:cut]), sorted(order[cut:])
    return [records[i] for i in train], [records[i] for i in held]


def seeded_sample(records: Sequence[Record], n: int | None, seed: int | str) -> list[Record]:
    """``n`` records drawn without replacement (all when ``n`` is None or larger), kept in corpus order."""
    if n is None or n >= len(records):
        return list(records)
    if n < 0:
        raise RetrieveAllError(f"sample sizes must be >= 0, got {n}")
    keep = sorted(random.Random(str(seed)).sample(range(len(records)), n))
    return [records[i] for i in keep]


def language_data(languages: Sequence[str] | None = None, *, corpora: Mapping[str, str] | None = None,
                  n_train: int | None = None, n_dev: int | None = None, heldout_fraction: float = 0.5,
                  seed: int = 0, data_root: str | Path | None = None,
                  labels: Sequence[str] = CANONICAL_LABELS) -> dict[str, LanguageData]:
    """Each language's (train, dev) records with canonical labels, capped by seeded samples.

    A corpus with a ``train`` split uses it and its ``dev`` split. A corpus with only ``dev``
    (German, Turkish) is split by :func:`heldout_split` (``heldout_fraction`` held out, default
    50/50, seeded by ``seed`` and the language); the held-out part is the dev set. The split never
    depends on the caps, so a larger ``n_train`` adds training sentences without moving any into dev.
    """
    from openie.datasets import get_dataset, load_dataset

    corpora = dict(corpora or LANGUAGE_CORPORA)
    languages = list(languages or corpora)
    out: dict[str, LanguageData] = {}
    for lang in languages:
        if lang not in corpora:
            raise RetrieveAllError(f"no corpus for language {lang!r}; known: {', '.join(sorted(corpora))}")
        name = corpora[lang]
        splits = get_dataset(name).splits
        if "dev" not in splits:
            raise RetrieveAllError(f"corpus {name!r} (language {lang!r}) has no dev split")
        dev_all, dropped = canonical_records(load_dataset(name, "dev", data_root=data_root), lang, name, labels)
        if "train" in splits:
            train_all, more = canonical_records(load_dataset(name, "train", data_root=data_root), lang, name, labels)
            dropped += more
            train_src, dev_src = f"{name}:train", f"{name}:dev"
        else:
            train_all, dev_all = heldout_split(dev_all, heldout_fraction, f"{seed}:split:{lang}")
            pct = round(100 * heldout_fraction)
            train_src = f"{name}:dev, seeded split, the {100 - pct}% not held out"
            dev_src = f"{name}:dev, seeded split, the {pct}% held out"
        out[lang] = LanguageData(lang, name, seeded_sample(train_all, n_train, f"{seed}:train:{lang}"),
                                 seeded_sample(dev_all, n_dev, f"{seed}:dev:{lang}"), train_src, dev_src,
                                 dict(dropped))
    return out


def prompt_schema(labels: Sequence[str] = CANONICAL_LABELS, descriptions: bool = True) -> Schema:
    """One schema for every language (CoNLL's descriptions, or names only: shorter prompts train
    faster on a CPU), so every adapter learns the same label set."""
    from openie.datasets import dataset_schema

    if not descriptions:
        return Schema.from_labels(list(labels))
    described = {t.name: t.description for t in dataset_schema("conll2003").entity_types}
    return Schema.from_labels({label: described.get(label) for label in labels})


# =============================================================================================
# 2a. representations: sentence and mention vectors, L2-normalised, memoised
# =============================================================================================

Spans = Sequence[tuple[int, int]]


def word_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _WORD.finditer(text)]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class Representation(Protocol):
    """Unit-length vectors of sentences and of character spans inside them (cosine = dot product)."""

    def fingerprint(self) -> str: ...

    def encode(self, texts: Sequence[str], spans: Sequence[Spans]) -> tuple[np.ndarray, list[np.ndarray]]: ...


class MemoRepresentation:
    """Shared plumbing: each (text, spans) is encoded once per process, and the memo can go to disk.

    A subclass implements ``_encode`` (sentences ``(n, d)``, span vectors per text ``(m_i, d)``)
    and ``config`` (what ``fingerprint`` hashes: anything that changes a vector).
    """

    def __init__(self) -> None:
        self._memo: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()[:16]

    def _encode(self, texts: Sequence[str], spans: Sequence[Spans]) -> tuple[np.ndarray, list[np.ndarray]]:
        raise NotImplementedError

    @staticmethod
    def _key(text: str, spans: Spans) -> str:
        return hashlib.sha1(json.dumps([text, [list(s) for s in spans]]).encode()).hexdigest()

    def encode(self, texts: Sequence[str], spans: Sequence[Spans]) -> tuple[np.ndarray, list[np.ndarray]]:
        if len(texts) != len(spans):
            raise RetrieveAllError(f"{len(texts)} texts but {len(spans)} span lists")
        keys = [self._key(t, s) for t, s in zip(texts, spans, strict=True)]
        todo = sorted({k: i for i, k in enumerate(keys) if k not in self._memo}.values())
        if todo:
            sent, per = self._encode([texts[i] for i in todo], [list(spans[i]) for i in todo])
            for j, i in enumerate(todo):
                self._memo[keys[i]] = (_unit(sent[j]), _unit(per[j]) if len(per[j]) else
                                       np.zeros((0, sent.shape[1]), np.float32))
        if not keys:
            return np.zeros((0, 0), np.float32), []
        got = [self._memo[k] for k in keys]
        return np.stack([g[0] for g in got]), [g[1] for g in got]

    def save(self, path: str | Path) -> Path:
        """The memo as one ``.npz`` (written atomically), to skip the encoder on a resumed run."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self._memo)
        if not keys:
            return path
        sent = np.stack([self._memo[k][0] for k in keys])
        spans = [self._memo[k][1] for k in keys]
        counts = np.array([len(s) for s in spans], dtype=np.int64)
        flat = np.concatenate(spans) if counts.sum() else np.zeros((0, sent.shape[1]), np.float32)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, keys=np.array(keys), sentences=sent, spans=flat, counts=counts)
        tmp.replace(path)
        return path

    def load(self, path: str | Path) -> int:
        """Fill the memo from :meth:`save`'s file; returns how many entries were read (0: no file)."""
        path = Path(path)
        if not path.is_file():
            return 0
        data = np.load(path)
        parts = np.split(data["spans"], np.cumsum(data["counts"])[:-1]) if len(data["counts"]) else []
        for key, sent, span in zip(data["keys"].tolist(), data["sentences"], parts, strict=True):
            self._memo[str(key)] = (sent, span)
        return len(data["keys"])


class NgramRepresentation(MemoRepresentation):
    """Hashed character n-grams (lower-cased, padded with spaces), no model.

    Character n-gram profiles are the classic language identifier, so this routes languages
    well at no cost; it knows nothing of meaning (an entity is only its spelling).
    """

    def __init__(self, n: int = 3, dim: int = 4096):
        super().__init__()
        self.n, self.dim = n, dim

    def config(self) -> dict[str, Any]:
        return {"kind": "ngram", "n": self.n, "dim": self.dim}

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        padded = f" {' '.join(text.lower().split())} "
        for i in range(max(1, len(padded) - self.n + 1)):
            v[zlib.crc32(padded[i:i + self.n].encode("utf-8")) % self.dim] += 1.0
        return v

    def _encode(self, texts: Sequence[str], spans: Sequence[Spans]) -> tuple[np.ndarray, list[np.ndarray]]:
        sent = np.stack([self._vector(t) for t in texts])
        per = [np.stack([self._vector(t[s:e]) for s, e in sp]) if len(sp) else np.zeros((0, self.dim), np.float32)
               for t, sp in zip(texts, spans, strict=True)]
        return sent, per


class SentenceRepresentation(MemoRepresentation):
    """A sentence-transformers encoder (default: the packaged MiniLM); a span is embedded on its own text."""

    def __init__(self, model: str = "minilm", batch_size: int = 64, show_progress: bool = False):
        super().__init__()
        from retrievers.dense import SentenceEncoder

        self.model = model
        self.encoder = SentenceEncoder(model, batch_size=batch_size, show_progress=show_progress)

    def config(self) -> dict[str, Any]:
        from openie.models import resolve_model

        return {"kind": "sentence", "model": str(resolve_model(self.model))}

    def _encode(self, texts: Sequence[str], spans: Sequence[Spans]) -> tuple[np.ndarray, list[np.ndarray]]:
        sent = self.encoder.encode(list(texts))
        pieces = [t[s:e] for t, sp in zip(texts, spans, strict=True) for s, e in sp]
        flat = self.encoder.encode(pieces) if pieces else np.zeros((0, sent.shape[1]), np.float32)
        counts = [len(sp) for sp in spans]
        return sent, np.split(flat, np.cumsum(counts)[:-1]) if counts else []


class LLMRepresentation(MemoRepresentation):
    """A frozen decoder read at one hook point (a layer's sub-module) through the NER Retriever's encoder.

    A span is the vector at its last token, so it carries the span's left context; a sentence is
    the mean of its words' last-token vectors (a causal model's last token alone over-weights the
    sentence end). Words and spans come from one forward pass. The model loads on first use.
    """

    def __init__(self, model: str = "gemma-3-270m", *, layer: int | None = None, module: str = "self_attn.v_proj",
                 dtype: str = "float32", batch_size: int = 16, max_length: int = 256, show_progress: bool = False):
        super().__init__()
        self.model, self.layer, self.module, self.dtype = model, layer, module, dtype
        self.batch_size, self.max_length, self.show_progress = batch_size, max_length, show_progress
        self._encoder: Any = None

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from openie.tools.ner_retriever import MentionEncoder

            self._encoder = MentionEncoder.load(self.model, layer=self.layer, module=self.module, dtype=self.dtype,
                                                batch_size=self.batch_size, max_length=self.max_length,
                                                show_progress=self.show_progress)
        return self._encoder

    def config(self) -> dict[str, Any]:
        from openie.models import resolve_model

        return {"kind": "llm", "model": str(resolve_model(self.model)), "layer": self.layer, "module": self.module,
                "dtype": self.dtype, "max_length": self.max_length, "sentence": "mean of word vectors"}

    def _encode(self, texts: Sequence[str], spans: Sequence[Spans]) -> tuple[np.ndarray, list[np.ndarray]]:
        words = [word_spans(t) for t in texts]
        [vectors] = self.encoder.encode(list(texts), [w + list(s) for w, s in zip(words, spans, strict=True)])
        width = next((v.shape[1] for v in vectors if v.size), 0)
        sent = np.stack([_unit(v[:len(w)]).mean(axis=0) if len(w) else np.zeros(width, np.float32)
                         for v, w in zip(vectors, words, strict=True)])
        return sent, [v[len(w):] for v, w in zip(vectors, words, strict=True)]


def make_representation(kind: str = "llm", **options: Any) -> MemoRepresentation:
    """``llm`` (options: model, layer, module, dtype, batch_size, max_length), ``sentence`` (model,
    batch_size) or ``ngram`` (n, dim)."""
    options = {k: v for k, v in options.items() if v is not None}
    if kind == "llm":
        return LLMRepresentation(**options)
    if kind == "sentence":
        return SentenceRepresentation(**options)
    if kind == "ngram":
        return NgramRepresentation(**options)
    raise RetrieveAllError(f"unknown representation {kind!r}; choose one of {', '.join(REPRESENTATIONS)}")


# =============================================================================================
# 2b. similar examples: context level + entity level, dynamic threshold
# =============================================================================================


@dataclass
class AugmentationConfig:
    """How many similar examples a prompt shows and when one is good enough.

    ``n_std``: keep an example whose similarity is above mean + ``n_std`` std of the query's
    candidates at that level. ``per_level``: best examples taken per level; ``max_demonstrations``
    caps the total (prompts cost CPU training time in proportion to their length).
    """

    n_std: float = 1.0
    per_level: int = 1
    max_demonstrations: int = 2
    context: bool = True
    entity: bool = True
    query_mentions: str = "words"  # inference, where gold mentions are unknown: "words" or "none"

    def __post_init__(self) -> None:
        if self.per_level < 1 or self.max_demonstrations < 0:
            raise RetrieveAllError("per_level must be >= 1 and max_demonstrations >= 0")
        if self.query_mentions not in QUERY_MENTIONS:
            raise RetrieveAllError(f"query_mentions must be one of {', '.join(QUERY_MENTIONS)}, "
                                   f"got {self.query_mentions!r}")


def dynamic_threshold(scores: Sequence[float] | np.ndarray, n_std: float = 1.0) -> float:
    """mean + ``n_std`` population standard deviations of one query's candidate similarities."""
    s = np.asarray(scores, dtype=np.float64)
    return float(s.mean() + n_std * s.std()) if s.size else float("inf")


def above_threshold(scores: Sequence[float] | np.ndarray, n_std: float = 1.0, top: int = 1,
                    exclude: Container[int] = ()) -> tuple[list[int], float]:
    """(positions of the best ``top`` scores strictly above the dynamic threshold, the threshold).

    The threshold is computed over every score; ``exclude``d positions count there but are never
    picked. Ties keep the earlier position. "Strictly above" has a 1e-9 margin, so float rounding
    never decides: with two candidates the better one sits exactly at mean + 1 std and is dropped.
    """
    s = np.asarray(scores, dtype=np.float64)
    threshold = dynamic_threshold(s, n_std)
    kept: list[int] = []
    for i in np.argsort(-s, kind="stable").tolist():
        if s[i] <= threshold + 1e-9 or len(kept) == top:
            break
        if i not in exclude:
            kept.append(i)
    return kept, threshold


@dataclass
class Pick:
    record_id: str
    level: str  # "context" or "entity"
    score: float
    threshold: float


@dataclass
class Selection:
    """The demonstrations chosen for one query, with the scores and thresholds that chose them."""

    query_id: str
    pool: str  # the language whose pool was searched, or "all"
    picks: list[Pick] = field(default_factory=list)
    context_threshold: float | None = None
    entity_threshold: float | None = None
    entity_candidates: int = 0  # candidates with at least one mention (the entity level's population)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("context_threshold", "entity_threshold"):
            if d[key] is not None:
                d[key] = round(d[key], 6) if np.isfinite(d[key]) else None
        for p in d["picks"]:
            p["score"], p["threshold"] = round(p["score"], 6), round(p["threshold"], 6)
        return d


@dataclass
class _Encoded:
    """One pool's vectors: sentences ``(n, d)``, mentions ``(T, d)`` with their owners ``(T,)``."""

    records: list[Record]
    sentences: np.ndarray
    mentions: np.ndarray
    owners: np.ndarray
    texts: list[str]

    @classmethod
    def of(cls, records: list[Record], sentences: np.ndarray, mentions: list[np.ndarray]) -> _Encoded:
        dim = sentences.shape[1] if sentences.ndim == 2 else 0
        flat = np.concatenate(mentions) if any(len(m) for m in mentions) else np.zeros((0, dim), np.float32)
        owners = np.concatenate([np.full(len(m), i, np.int64) for i, m in enumerate(mentions)]) if mentions else \
            np.zeros(0, np.int64)
        return cls(records, sentences, flat, owners, [" ".join(r.text.split()) for r in records])


def _gold_spans(record: Record) -> list[tuple[int, int]]:
    return sorted({(e.start, e.end) for e in record.entities if e.end > e.start})


class SimilarExamples:
    """RetrieveAll's demonstration rule over a labelled pool, one sub-pool per language.

    For a query: the context level scores every candidate by sentence cosine, the entity level by
    the best cosine between a query mention and a candidate mention (candidates without mentions
    sit that level out); each level keeps its best ``per_level`` examples above the level's
    dynamic threshold. A candidate with the query's id or text (whitespace-normalised) is never
    a candidate, so no prompt shows its own answer.
    """

    def __init__(self, pool: Sequence[Record], representation: MemoRepresentation,
                 config: AugmentationConfig | None = None, *, show_progress: bool = False, batch_size: int = 256):
        self.config = config or AugmentationConfig()
        self.representation = representation
        self.records = list(pool)
        if not self.records:
            raise RetrieveAllError("the example pool is empty")
        sents, mentions = [], []
        bar = tqdm(total=len(self.records), desc="pool vectors", unit="rec", disable=not show_progress)
        for i in range(0, len(self.records), batch_size):
            chunk = self.records[i:i + batch_size]
            s, m = representation.encode([r.text for r in chunk], [_gold_spans(r) for r in chunk])
            sents.append(s)
            mentions += m
            bar.update(len(chunk))
        bar.close()
        sentences = np.concatenate(sents)
        self._by_id = {r.id: r for r in self.records}
        if len(self._by_id) != len(self.records):
            raise RetrieveAllError("pool record ids must be unique")
        self.all = _Encoded.of(self.records, sentences, mentions)
        self.by_lang: dict[str, _Encoded] = {}
        for lang in dict.fromkeys(r.lang for r in self.records):
            idx = [i for i, r in enumerate(self.records) if r.lang == lang]
            self.by_lang[lang] = _Encoded.of([self.records[i] for i in idx], sentences[idx], [mentions[i] for i in idx])

    @property
    def languages(self) -> list[str]:
        return list(self.by_lang)

    def pool(self, lang: str | None) -> _Encoded:
        if lang is None:
            return self.all
        if lang not in self.by_lang:
            raise RetrieveAllError(f"no pool examples of language {lang!r}; the pool has {', '.join(self.by_lang)}")
        return self.by_lang[lang]

    def select(self, query_id: str, query_text: str, sentence: np.ndarray, mentions: np.ndarray,
               lang: str | None) -> Selection:
        """The rule on precomputed query vectors (``mentions``: ``(m, d)``, possibly empty)."""
        cfg, enc = self.config, self.pool(lang)
        normal = " ".join(query_text.split())
        allowed = np.array([r.id != query_id and t != normal for r, t in zip(enc.records, enc.texts, strict=True)])
        sel = Selection(query_id, lang or "all")
        context: list[int] = []
        entity: list[int] = []
        cand = np.flatnonzero(allowed)
        if cfg.context and cand.size:
            scores = enc.sentences[cand] @ sentence
            picked, sel.context_threshold = above_threshold(scores, cfg.n_std, cfg.per_level)
            context = [int(cand[i]) for i in picked]
            sel.picks += [Pick(enc.records[cand[i]].id, "context", float(scores[i]), sel.context_threshold)
                          for i in picked]
        if cfg.entity and len(mentions) and len(enc.mentions):
            best = np.full(len(enc.records), -np.inf)
            np.maximum.at(best, enc.owners, (mentions @ enc.mentions.T).max(axis=0))
            ecand = np.flatnonzero(allowed & np.isfinite(best))
            sel.entity_candidates = int(ecand.size)
            if ecand.size:
                taken = {j for j, c in enumerate(ecand) if int(c) in context}
                picked, sel.entity_threshold = above_threshold(best[ecand], cfg.n_std, cfg.per_level, taken)
                entity = [int(ecand[i]) for i in picked]
                sel.picks += [Pick(enc.records[ecand[i]].id, "entity", float(best[ecand[i]]), sel.entity_threshold)
                              for i in picked]
        # most relevant first (the prompt shows it last, next to the query): levels interleaved, context first
        by_id = {p.record_id: p for p in sel.picks}
        order = [x for pair in zip(context, entity, strict=False) for x in pair]
        order += context[len(entity):] + entity[len(context):]
        kept = [enc.records[i].id for i in order][:cfg.max_demonstrations]
        sel.picks = [by_id[i] for i in kept]
        return sel

    def demonstrations_of(self, selection: Selection) -> list[Record]:
        """The pool records a selection names, in its order."""
        return [self._by_id[p.record_id] for p in selection.picks]

    def training_selections(self, lang: str, show_progress: bool = False) -> list[Selection]:
        """Every training sentence of ``lang`` against the others of ``lang``, with its gold mentions."""
        enc = self.pool(lang)
        out = []
        for i, r in enumerate(tqdm(enc.records, desc=f"augment {lang}", unit="rec", disable=not show_progress)):
            out.append(self.select(r.id, r.text, enc.sentences[i], enc.mentions[enc.owners == i], lang))
        return out

    def query_selections(self, records: Sequence[Record], langs: Sequence[str | None]) -> list[Selection]:
        """Inference: inputs without gold mentions; their words stand in (``query_mentions="words"``)."""
        words = self.config.query_mentions == "words" and self.config.entity
        sent, spans = self.representation.encode([r.text for r in records],
                                                 [word_spans(r.text) if words else [] for r in records])
        return [self.select(r.id, r.text, s, m, lang) for r, s, m, lang in zip(records, sent, spans, langs, strict=True)]

    def retriever(self) -> RepresentationRetriever:
        return RepresentationRetriever(self.representation, self.all)


class RepresentationRetriever:
    """Nearest pool sentences by cosine of the same representation (the routing retriever).

    Meets what :class:`~openie.methods.routing.AdapterRouter` asks of a retriever; the pool's
    vectors are the ones the demonstrations use, so routing costs no second encoder.
    """

    def __init__(self, representation: MemoRepresentation, encoded: _Encoded | None = None):
        self.representation, self.encoded = representation, encoded

    def index(self, examples: Sequence[Record]) -> None:
        if self.encoded is not None and [r.id for r in examples] == [r.id for r in self.encoded.records]:
            return  # already encoded (the SimilarExamples pool)
        records = list(examples)
        sent, _ = self.representation.encode([r.text for r in records], [[] for _ in records])
        self.encoded = _Encoded.of(records, sent, [np.zeros((0, sent.shape[1]), np.float32)] * len(records))

    def retrieve_many(self, queries: Sequence[Record | str], k: int, **_: Any) -> list[list[tuple[Record, float]]]:
        if self.encoded is None:
            raise RetrieveAllError("index a pool before retrieving")
        texts = [q.text if isinstance(q, Record) else str(q) for q in queries]
        sent, _ = self.representation.encode(texts, [[] for _ in texts])
        out = []
        for q, text, v in zip(queries, texts, sent, strict=True):
            scores = self.encoded.sentences @ v
            normal, qid = " ".join(text.split()), q.id if isinstance(q, Record) else None
            hits = []
            for i in np.argsort(-scores, kind="stable").tolist():
                r = self.encoded.records[i]
                if r.id != qid and self.encoded.texts[i] != normal:
                    hits.append((r, float(scores[i])))
                    if len(hits) == k:
                        break
            out.append(hits)
        return out

    def retrieve(self, query: Record | str, k: int, **options: Any) -> list[tuple[Record, float]]:
        return self.retrieve_many([query], k, **options)[0]


# =============================================================================================
# 2c. augmented training prompts
# =============================================================================================

Pair = tuple[str, str]


@dataclass
class AugmentationStats:
    """How often the threshold let examples through: prompts by number of demonstrations, thresholds."""

    prompts: int = 0
    by_demonstrations: dict[int, int] = field(default_factory=dict)
    context_kept: int = 0
    entity_kept: int = 0
    without_mentions: int = 0  # training sentences without gold entities: no entity level
    context_thresholds: list[float] = field(default_factory=list)
    entity_thresholds: list[float] = field(default_factory=list)
    kept_scores: dict[str, list[float]] = field(default_factory=lambda: {"context": [], "entity": []})

    def add(self, sel: Selection, has_mentions: bool) -> None:
        self.prompts += 1
        n = len(sel.picks)
        self.by_demonstrations[n] = self.by_demonstrations.get(n, 0) + 1
        self.context_kept += sum(p.level == "context" for p in sel.picks)
        self.entity_kept += sum(p.level == "entity" for p in sel.picks)
        self.without_mentions += not has_mentions
        for value, bucket in ((sel.context_threshold, self.context_thresholds),
                              (sel.entity_threshold, self.entity_thresholds)):
            if value is not None and np.isfinite(value):
                bucket.append(value)
        for p in sel.picks:
            self.kept_scores[p.level].append(p.score)

    def to_dict(self) -> dict[str, Any]:
        def summary(xs: list[float]) -> dict[str, float] | None:
            return {"mean": round(float(np.mean(xs)), 4), "min": round(float(np.min(xs)), 4),
                    "max": round(float(np.max(xs)), 4)} if xs else None

        return {"prompts": self.prompts,
                "by_demonstrations": {str(k): v for k, v in sorted(self.by_demonstrations.items())},
                "context_kept": self.context_kept, "entity_kept": self.entity_kept,
                "without_mentions": self.without_mentions,
                "context_threshold": summary(self.context_thresholds),
                "entity_threshold": summary(self.entity_thresholds),
                "kept_context_score": summary(self.kept_scores["context"]),
                "kept_entity_score": summary(self.kept_scores["entity"])}


@dataclass
class AugmentedPrompts:
    lang: str
    pairs: list[Pair]
    selections: list[Selection]
    stats: AugmentationStats


def augmented_training_pairs(examples: SimilarExamples, builder: Any, lang: str,
                             show_progress: bool = False) -> AugmentedPrompts:
    """(prompt, target) pairs of one language's training sentences, each with its kept examples.

    ``builder`` is a :class:`prompts.builder.PromptBuilder`; its prompts at inference are built the
    same way (:class:`RetrieveAllExtractor`), so the adapter is served the prompts it learned.
    """
    selections = examples.training_selections(lang, show_progress=show_progress)
    stats = AugmentationStats()
    pairs: list[Pair] = []
    for record, sel in zip(examples.pool(lang).records, selections, strict=True):
        stats.add(sel, bool(_gold_spans(record)))
        for prompt in builder.build(record, examples.demonstrations_of(sel)):
            pairs.append((prompt.text, builder.target(record, prompt)))
    return AugmentedPrompts(lang, pairs, selections, stats)


# =============================================================================================
# 3. one adapter per language, and the shared baseline
# =============================================================================================


@dataclass
class AdapterTrainingConfig:
    """LoRA settings shared by every adapter; ``shared_max_steps`` None gives the shared adapter the
    sum of the language adapters' steps, so it sees each language's data as often as they do."""

    rank: int = 8
    alpha: float = 16.0
    lr: float = 2e-4
    max_steps: int = 100
    shared_max_steps: int | None = None
    batch_size: int = 4
    grad_accum: int = 1
    schedule: str = "constant"
    warmup_steps: int = 0
    save_every: int = 25
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.rank < 1 or self.batch_size < 1:
            raise RetrieveAllError("max_steps, rank and batch_size must be >= 1")

    def steps_for(self, key: str, n_languages: int) -> int:
        if key != SHARED:
            return self.max_steps
        return self.shared_max_steps if self.shared_max_steps is not None else self.max_steps * n_languages


def adapter_name(prefix: str, key: str) -> str:
    """Registry / engine name of a language's (or the shared) adapter, e.g. ``retrieveall-de``."""
    return f"{prefix}-{key}"


def pairs_sha256(pairs: Sequence[Pair]) -> str:
    digest = hashlib.sha256()
    for prompt, target in pairs:
        digest.update(json.dumps([prompt, target]).encode("utf-8"))
    return digest.hexdigest()


def train_language_adapters(base_model: str, pairs: Mapping[str, Sequence[Pair]], output_dir: str | Path,
                            registry: Any, *, config: AdapterTrainingConfig | None = None, shared: bool = True,
                            prefix: str = "retrieveall", labels: Sequence[str] = CANONICAL_LABELS,
                            skip: Container[str] = (), progress: bool = True,
                            on_trained: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    """Train one LoRA per language of ``pairs`` (and, with ``shared``, one on their union).

    Each lands in ``output_dir/<key>`` and is registered in ``registry`` (an
    :class:`~openie.adapters.registry.AdapterRegistry` or its folder) as ``<prefix>-<key>`` with
    ``languages=[key]`` (the shared one: every language). ``train_lora`` resumes an interrupted
    adapter from its last checkpoint; keys in ``skip`` are not touched. ``on_trained(key, result)``
    runs after each adapter (write progress there). Returns :class:`TrainingResult` by key.
    """
    from openie.adapters.training import train_lora

    cfg = config or AdapterTrainingConfig()
    langs = list(pairs)
    jobs: list[tuple[str, list[Pair], list[str]]] = [(lang, list(pairs[lang]), [lang]) for lang in langs]
    if shared:
        jobs.append((SHARED, [p for lang in langs for p in pairs[lang]], langs))
    results: dict[str, Any] = {}
    for key, data, languages in jobs:
        if key in skip:
            continue
        if not data:
            raise RetrieveAllError(f"no training pairs for adapter {key!r}")
        results[key] = train_lora(
            base_model, data, Path(output_dir) / key, rank=cfg.rank, alpha=cfg.alpha, lr=cfg.lr,
            max_steps=cfg.steps_for(key, len(langs)), batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
            schedule=cfg.schedule, warmup_steps=cfg.warmup_steps, save_every=cfg.save_every, seed=cfg.seed,
            dtype=cfg.dtype, device=cfg.device, registry=registry, name=adapter_name(prefix, key), task="ner",
            languages=languages, labels=labels, progress=progress)
        if on_trained is not None:
            on_trained(key, results[key])
    return results


# =============================================================================================
# 4. inference: route, attach the language's adapter, demonstrations by the training rule
# =============================================================================================


def build_router(examples: SimilarExamples, adapters: Mapping[str, str], *, k: int = 8, min_confidence: float = 0.5,
                 fallback: str | None = None, weighted: bool = False) -> AdapterRouter:
    """An :class:`AdapterRouter` on the language of the pool (every language's training sentences),
    searching with the examples' own representation."""
    return AdapterRouter.build(examples.records, adapters, retriever=examples.retriever(), attribute="lang", k=k,
                               min_confidence=min_confidence, fallback=fallback, weighted=weighted)


class _DecidedRoutes:
    """The per-request adapter hook of :class:`InContextExtractor`, answering from decisions made per batch."""

    def __init__(self) -> None:
        self.decisions: dict[str, RouteDecision] = {}

    def route(self, records: Sequence[Record]) -> list[RouteDecision]:
        return [self.decisions[r.id] for r in records]

    def __call__(self, record: Record) -> str | None:
        return self.decisions[record.id].adapter


@dataclass
class RetrieveAllExtractor:
    """NER with per-language adapters: ``routed`` (the method), ``oracle`` (the true language's
    adapter: routing's upper bound) or ``shared`` (one adapter for all: the baseline).

    Per batch: decide each record's adapter (one batched routing pass), pick its demonstrations
    from the decided language's pool (the union pool for ``shared`` and for fallbacks), then one
    engine call with one adapter per request. ``pred.meta`` keeps ``mode``, ``route`` (adapter,
    language, confidence, votes, fallback), ``demonstrations`` (the selection) and ``adapter``.
    """

    engine: Any
    builder: Any
    examples: SimilarExamples
    adapters: Mapping[str, str]  # language -> adapter name
    mode: str = "routed"
    shared_adapter: str | None = None
    router: AdapterRouter | None = None
    max_tokens: int = 128
    batch_size: int = 32
    constrained: bool = True
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise RetrieveAllError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.mode == "shared" and self.shared_adapter is None:
            raise RetrieveAllError("mode 'shared' needs shared_adapter")
        if self.mode == "routed" and self.router is None:
            raise RetrieveAllError("mode 'routed' needs a router (build_router)")
        self._routes = _DecidedRoutes()
        self._selections: dict[str, Selection] = {}
        self.icl = InContextExtractor(self.engine, self.builder, demonstrations=self._demonstrations,
                                      max_tokens=self.max_tokens, batch_size=self.batch_size,
                                      constrained=self.constrained, show_progress=False, router=self._routes)

    def _demonstrations(self, record: Record) -> list[Record]:
        """The record's selection (a chunk of a long record: its parent's)."""
        return self.examples.demonstrations_of(self._selections[record.meta.get("parent_id", record.id)])

    def decide(self, batch: Sequence[Record]) -> list[RouteDecision]:
        """Each record's adapter and the language whose pool gives its demonstrations."""
        if self.mode == "routed":
            assert self.router is not None
            return self.router.route(list(batch))
        if self.mode == "shared":
            return [RouteDecision(self.shared_adapter, None, 1.0, {}, False) for _ in batch]
        missing = sorted({r.lang for r in batch} - set(self.adapters))
        if missing:
            raise RetrieveAllError(f"oracle mode: no adapter for language(s) {missing}; "
                                   f"adapters exist for {', '.join(sorted(self.adapters))}")
        return [RouteDecision(self.adapters[r.lang], r.lang, 1.0, {r.lang: 1.0}, False) for r in batch]

    def extract_batch(self, batch: Sequence[Record]) -> list[Record]:
        ids = [r.id for r in batch]
        if len(set(ids)) != len(ids):
            raise RetrieveAllError("record ids must be unique within a batch")
        decisions = self.decide(batch)
        pools = [d.value if d.value in self.examples.by_lang else None for d in decisions]
        selections = self.examples.query_selections(batch, pools)
        self._routes.decisions = {r.id: d for r, d in zip(batch, decisions, strict=True)}
        self._selections = {r.id: s for r, s in zip(batch, selections, strict=True)}
        preds = self.icl.extract_batch(batch)
        for pred, d, s in zip(preds, decisions, selections, strict=True):
            pred.meta.update(mode=self.mode, route=asdict(d), demonstrations=s.to_dict())
        return preds

    def extract(self, records: Iterable[Record], total: int | None = None) -> Iterator[Record]:
        """Predictions in input order, batch by batch (stream them to disk as they come)."""
        return extract_in_batches(self, records, total=total, desc=f"retrieveall {self.mode}")

    @property
    def stats(self) -> Any:
        return self.icl.stats

    @property
    def task(self) -> str:
        return self.builder.task

    # demonstrations are chosen per batch after routing (pred.meta["demonstrations"]), not by a selector
    demonstrations = None


__all__ = [
    "CANONICAL_LABELS", "LANGUAGE_CORPORA", "MODES", "REPRESENTATIONS", "SHARED", "AdapterTrainingConfig",
    "AugmentationConfig", "AugmentationStats", "AugmentedPrompts", "LLMRepresentation", "LanguageData",
    "MemoRepresentation", "NgramRepresentation", "Pick", "Representation", "RepresentationRetriever",
    "RetrieveAllError", "RetrieveAllExtractor", "Selection", "SentenceRepresentation", "SimilarExamples",
    "above_threshold", "adapter_name", "augmented_training_pairs", "build_router", "canonical_records",
    "dynamic_threshold", "heldout_split", "language_data", "make_representation", "pairs_sha256",
    "prompt_schema", "seeded_sample", "train_language_adapters", "word_spans",
]
