"""GLiNER as an openie tool: the maintained ``gliner`` library, wrapped for long texts, spans and training.

GLiNER (Zaratiana et al., 2023) scores every span of up to ``max_width`` words against label
prompts with a bidirectional encoder. openie does not re-implement it; it adds what a researcher
otherwise glues by hand:

- **Offline construction** from a local encoder (the packaged all-MiniLM-L6-v2 by default) or
  loading of any saved GLiNER checkpoint (or hub id, where the hub is reachable).
- **Any text length.** gliner silently truncates past ``max_len`` words. :meth:`GLiNERTool.predict`
  cuts texts into overlapping windows (measured in gliner's own words), predicts them in batches
  and returns entities at *global* character offsets, each from the window that owns its start.
- **Three uses.** Typed NER given labels (plain names or ``{label: description}``),
  type-agnostic span proposals for other methods (:meth:`propose_spans`), and span vectors for
  prototypes or retrieval (:meth:`encode_spans`).
- **Training** on registered corpora (:func:`train_gliner`): records converted to gliner's word
  format, the library's trainer with checkpoints, resume and a wall-clock budget, a dev evaluation
  with openie's metrics at the end, and the recipe with its figures saved beside the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from openie.chunking import Chunk, chunk_text
from openie.errors import OpenIEError
from openie.records import Entity, Record

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "minilm"
GLINER_CONFIG_FILE = "gliner_config.json"
RECIPE_FILE = "openie_recipe.json"
PROPOSAL_LABEL = "entity"

Labels = Sequence[str] | Mapping[str, str]


class GLiNERToolError(OpenIEError, ValueError):
    """A GLiNER model, label set or training set-up that cannot be used as given."""


# ---------------------------------------------------------------------------------------------
# words: gliner works on words, openie on characters
# ---------------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+(?:[-_]\w+)*|\S")  # the splitter gliner uses by default ("whitespace" mode)


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of gliner's default words (runs of word characters, or one other symbol)."""
    return [m.span() for m in _WORD.finditer(text)]


def record_words(record: Record) -> list[tuple[int, int]]:
    """The record's own tokens where it has them (CoNLL corpora), else gliner's words."""
    if record.tokens:
        return record.token_offsets()
    return word_spans(record.text)


@dataclass
class ConversionStats:
    """What :func:`to_gliner_examples` could not express in words (entities inside a word)."""

    records: int = 0
    entities: int = 0
    skipped_entities: int = 0


def to_gliner_examples(records: Sequence[Record], *, negatives: Sequence[str] = (),
                       stats: ConversionStats | None = None) -> list[dict[str, Any]]:
    """gliner's training format: ``{"tokenized_text": words, "ner": [[first, last, label]], "ner_negatives"}``.

    ``negatives`` are the labels the corpus annotates exhaustively: the ones a record does not
    contain are given to gliner as known-absent types (better than negatives drawn at random).
    An entity whose edges fall inside a word cannot be expressed and is skipped (counted in ``stats``).
    """
    out = []
    stats = stats if stats is not None else ConversionStats()
    for r in records:
        offsets = record_words(r)
        starts = {s: i for i, (s, _) in enumerate(offsets)}
        ends = {e: i for i, (_, e) in enumerate(offsets)}
        ner = []
        for e in r.entities:
            stats.entities += 1
            if e.start in starts and e.end in ends:
                ner.append([starts[e.start], ends[e.end], e.label])
            else:
                stats.skipped_entities += 1
        present = {x[2] for x in ner}
        out.append({"tokenized_text": [r.text[s:e] for s, e in offsets], "ner": ner,
                    "ner_negatives": [lab for lab in negatives if lab not in present]})
        stats.records += 1
    return out


# ---------------------------------------------------------------------------------------------
# the tool
# ---------------------------------------------------------------------------------------------


def is_gliner_checkpoint(path: str | Path) -> bool:
    return (Path(path) / GLINER_CONFIG_FILE).is_file()


def _label_prompts(labels: Labels) -> tuple[list[str] | dict[str, str], list[str]]:
    if isinstance(labels, str):
        labels = [labels]
    names = list(labels.keys()) if isinstance(labels, Mapping) else list(dict.fromkeys(labels))
    if not names:
        raise GLiNERToolError("no labels given: GLiNER needs at least one entity type to look for")
    if isinstance(labels, Mapping):
        prompts = {name: (desc or name) for name, desc in labels.items()}
        if len(set(prompts.values())) != len(prompts):
            raise GLiNERToolError(f"two labels share one description: {prompts}")
        return prompts, names
    return names, names


class GLiNERTool:
    """A GLiNER model with openie's long-text, span-proposal and span-encoding entry points."""

    def __init__(self, model: Any, source: str, *, max_words: int | None = None, overlap_words: int | None = None,
                 batch_size: int = 8, show_progress: bool = True):
        self.model = model
        self.source = source
        cfg = model.config
        # the encoder's subword limit bites before gliner's word limit on long words: stay well under both
        self.max_words = max_words or min(int(getattr(cfg, "max_len", 384)), 256)
        overlap_words = min(32, self.max_words // 4) if overlap_words is None else overlap_words
        if not 0 <= overlap_words < self.max_words:
            raise GLiNERToolError(f"overlap_words must be in [0, {self.max_words}), got {overlap_words}")
        self.overlap_words = overlap_words
        self.batch_size = batch_size
        self.show_progress = show_progress

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str] = DEFAULT_ENCODER, *, max_width: int = 12, max_len: int = 384,
             device: str | None = None, seed: int = 0, **options: Any) -> GLiNERTool:
        """A saved GLiNER checkpoint (folder with ``gliner_config.json`` or hub id) or a fresh model on an encoder.

        A short name of openie's models (``minilm``) or a folder holding a plain transformers
        encoder gives a new GLiNER whose span and label heads are untrained (``seed`` fixes them):
        the start of :func:`train_gliner`.
        """
        import torch
        from gliner import GLiNER, GLiNERConfig

        from openie.models import resolve_model

        name = os.fspath(name_or_path)
        local = Path(name).expanduser()
        if local.is_dir() and is_gliner_checkpoint(local):
            model = GLiNER.from_pretrained(str(local), local_files_only=True, map_location=device or "cpu")
            source = str(local.resolve())
        else:
            resolved = resolve_model(name)
            path = Path(resolved)
            if path.is_dir() and (path / "config.json").is_file():
                torch.manual_seed(seed)
                config = GLiNERConfig(model_name=str(path), max_width=max_width, max_len=max_len)
                model = GLiNER.from_config(config, backbone_from_pretrained=True, map_location=device or "cpu")
                source = f"new:{path.resolve()}"
            elif path.exists():
                raise GLiNERToolError(f"{path} holds neither a GLiNER checkpoint ({GLINER_CONFIG_FILE}) nor a "
                                      "transformers encoder (config.json)")
            else:  # a hub id
                model = GLiNER.from_pretrained(resolved, map_location=device or "cpu")
                source = resolved
        model.eval()
        return cls(model, source, **options)

    # -- identity -----------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """A hash of the weights: a cache key part and a config record for anything this model predicts."""
        import torch

        h = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().to(torch.float32).cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        self.model.save_pretrained(str(path))
        return path

    # -- windows ------------------------------------------------------------------------------

    def _tokenizer(self) -> Any:
        return getattr(getattr(self.model, "data_processor", None), "transformer_tokenizer", None)

    def subword_limit(self) -> int | None:
        """Subword tokens the encoder reads per window (label prompt included); None: unknown."""
        tok = self._tokenizer()
        if tok is None:
            return None
        limit = int(getattr(tok, "model_max_length", 512) or 512)
        return limit if limit < 100_000 else 512  # tokenizers without a limit report a huge sentinel

    def subwords(self, text: str) -> int:
        """The encoder's subword tokens for ``text`` split into gliner words (what the model reads)."""
        words = [text[s:e] for s, e in word_spans(text)]
        tok = self._tokenizer()
        if not words or tok is None:
            return len(words)
        return len(tok(words, is_split_into_words=True, add_special_tokens=False)["input_ids"])

    def prompt_subwords(self, prompts: Sequence[str]) -> int:
        """What the label prompt (one marker and the prompt per type, a separator) takes of the window."""
        return self.subwords(" ".join(prompts)) + 2 * len(prompts) + 4

    def chunks(self, text: str, prompt_subwords: int = 0) -> list[Chunk]:
        """Overlapping windows the encoder reads whole: at most ``max_words`` gliner words and at most
        its subword limit less the label prompt (scripts without spaces make long words), owning
        disjoint regions."""
        limit = self.subword_limit()
        if limit is None:
            return chunk_text(text, self.max_words, self.overlap_words, count=lambda s: len(word_spans(s)))
        budget = max(16, limit - prompt_subwords - 8)

        def count(window: str) -> int:  # <= max_words exactly when both limits hold
            return max(len(word_spans(window)), -(-self.subwords(window) * self.max_words // budget))

        return chunk_text(text, self.max_words, self.overlap_words, count=count)

    def _windows(self, texts: Sequence[str], prompts: Sequence[str] = ()) -> list[tuple[int, Chunk]]:
        extra = self.prompt_subwords(prompts) if prompts else 0
        windows = [(i, c) for i, t in enumerate(texts) for c in self.chunks(t, extra)]
        limit = self.subword_limit()
        max_len = int(getattr(self.model.config, "max_len", 384))
        self.last_coverage = [{"chars": len(t), "chars_not_seen": 0, "chunks": 0, "prompts": 0} for t in texts]
        for i, c in windows:
            cov = self.last_coverage[i]
            cov["chunks"] += 1
            cov["prompts"] += 1
            words = len(word_spans(c.text))
            # the windows fit both limits by construction, except one character alone beyond the budget
            too_long = words > max_len or (words <= 1 and limit is not None and self.subwords(c.text) + extra > limit)
            if too_long:  # the encoder truncates this window: counted as unseen
                cov["chars_not_seen"] += sum(not ch.isspace() for ch in c.text)
        return windows

    def _run(self, windows: list[tuple[int, Chunk]], labels: Any, desc: str, **kwargs: Any) -> list[list[dict]]:
        """gliner's ``inference`` over window texts in batches, with one progress bar."""
        import torch

        out: list[list[dict]] = []
        step = max(1, self.batch_size) * 8
        bar = tqdm(total=len(windows), desc=desc, unit="win", disable=not self.show_progress or len(windows) <= step,
                   leave=False)
        with torch.inference_mode():
            for b in range(0, len(windows), step):
                part = windows[b:b + step]
                texts = [c.text for _, c in part]
                extra = {}
                if "input_spans" in kwargs:
                    extra["input_spans"] = kwargs["input_spans"][b:b + step]
                rest = {k: v for k, v in kwargs.items() if k != "input_spans"}
                out.extend(self.model.inference(texts, labels, batch_size=self.batch_size, **rest, **extra))
                bar.update(len(part))
        bar.close()
        return out

    # -- typed NER ----------------------------------------------------------------------------

    def predict(self, texts: Sequence[str], labels: Labels, *, threshold: float = 0.5, flat_ner: bool = True,
                multi_label: bool = False) -> list[list[Entity]]:
        """Entities of ``labels`` in each text, at global character offsets, whatever the text's length.

        ``labels`` is a list of type names or ``{name: description}`` (the description is what
        the model reads; the name is what the entity is labelled). ``flat_ner`` forbids any overlap;
        ``flat_ner=False`` allows nesting (never partial overlap). ``multi_label`` lets one span
        carry several types.
        """
        prompts, _ = _label_prompts(labels)
        windows = self._windows(texts, prompts)
        raw = self._run(windows, prompts, "gliner", threshold=threshold, flat_ner=flat_ner, multi_label=multi_label)
        found: list[dict[tuple[int, int, str], Entity]] = [{} for _ in texts]
        for (i, c), ents in zip(windows, raw, strict=True):
            for e in ents:
                start, end = c.start + e["start"], c.start + e["end"]
                owns = c.own_start <= start < c.own_end or start == c.own_end == len(texts[i])
                if owns:
                    key = (start, end, e["label"])
                    if key not in found[i] or (found[i][key].score or 0) < e["score"]:
                        found[i][key] = Entity(start, end, e["label"], texts[i][start:end], float(e["score"]))
        return [_resolve_overlaps(list(f.values()), nested=not flat_ner, multi_label=multi_label) for f in found]

    def extract(self, records: Sequence[Record], labels: Labels, **kwargs: Any) -> list[Record]:
        """Predicted records (input text and id, entities from :meth:`predict`)."""
        preds = self.predict([r.text for r in records], labels, **kwargs)
        return [Record(id=r.id, text=r.text, lang=r.lang, entities=p, meta=dict(r.meta)) for r, p in zip(records, preds, strict=True)]

    # -- type-agnostic spans ------------------------------------------------------------------

    def propose_spans(self, texts: Sequence[str], labels: Labels = (PROPOSAL_LABEL,), *,
                      threshold: float = 0.3) -> list[list[Entity]]:
        """Candidate mention spans, whatever their type: the spans any of ``labels`` finds, labelled ``entity``.

        A generic prompt (``entity``) or a union of coarse types (``person``, ``organization``,
        ``thing``...) both work with a trained GLiNER; overlapping candidates are resolved flat,
        keeping the higher score.
        """
        found = self.predict(texts, labels, threshold=threshold, flat_ner=True, multi_label=False)
        out = []
        for ents in found:
            best: dict[tuple[int, int], Entity] = {}
            for e in ents:
                if e.span not in best or (best[e.span].score or 0) < (e.score or 0):
                    best[e.span] = Entity(e.start, e.end, PROPOSAL_LABEL, e.text, e.score)
            out.append(sorted(best.values()))
        return out

    # -- span vectors -------------------------------------------------------------------------

    def encode_spans(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                     prompt: str = PROPOSAL_LABEL) -> list[np.ndarray]:
        """GLiNER's span representation of each ``(start, end)`` character span: one ``(n_i, d)`` array per text.

        Each span is read from the window that owns its start (and contains it whole); spans must
        cover whole gliner words. The label prompt is fixed (``prompt``) so that vectors are
        comparable across calls.
        """
        if len(spans) != len(texts):
            raise GLiNERToolError(f"{len(texts)} texts but {len(spans)} span lists")
        # route every span to a window, then ask gliner to classify exactly those spans
        requests: list[tuple[int, Chunk, list[tuple[int, int]]]] = []
        for i, (text, wanted) in enumerate(zip(texts, spans, strict=True)):
            chunks = self.chunks(text)
            per_chunk: dict[int, list[tuple[int, int]]] = {}
            for s, e in wanted:
                if not 0 <= s < e <= len(text):
                    raise GLiNERToolError(f"text {i}: span ({s}, {e}) is outside the text (length {len(text)})")
                c = next((c for c in chunks if c.start <= s and e <= c.end and c.own_start <= s < c.own_end), None)
                c = c or next((c for c in chunks if c.start <= s and e <= c.end), None)
                if c is None:
                    raise GLiNERToolError(f"text {i}: span ({s}, {e}) is longer than one window "
                                          f"({self.max_words} words)")
                per_chunk.setdefault(c.index, []).append((s, e))
            for k, group in per_chunk.items():
                requests.append((i, chunks[k], group))
        vectors: dict[tuple[int, int, int], np.ndarray] = {}
        pending = [(i, c, sorted(set(g))) for i, c, g in requests]
        while pending:  # nested decoding drops partial overlaps: the dropped spans go again
            windows = [(i, c) for i, c, _ in pending]
            input_spans = [[{"start": s - c.start, "end": e - c.start} for s, e in g] for _, c, g in pending]
            raw = self._run(windows, [prompt], "gliner spans", threshold=0.0, flat_ner=False, multi_label=False,
                            input_spans=input_spans, return_vectors=True)
            retry = []
            for (i, c, group), ents in zip(pending, raw, strict=True):
                got = {(c.start + e["start"], c.start + e["end"]): e["vector"] for e in ents}
                missing = []
                for s, e in group:
                    if (s, e) in got:
                        vectors[(i, s, e)] = np.asarray(got[(s, e)], dtype=np.float32)
                    else:
                        missing.append((s, e))
                if missing and len(missing) == len(group):
                    raise GLiNERToolError(f"text {i}: gliner returned no vector for spans {missing}: "
                                          "spans must start and end on word boundaries")
                retry += [(i, c, [m]) for m in missing]
            pending = retry
        dim = int(next(iter(vectors.values())).shape[0]) if vectors else int(self.model.config.hidden_size)
        return [np.stack([vectors[(i, s, e)] for s, e in wanted]) if wanted else np.zeros((0, dim), np.float32)
                for i, wanted in enumerate(spans)]


    # -- prototypes ---------------------------------------------------------------------------

    def prototypes(self, support: Sequence[Record]) -> dict[str, np.ndarray]:
        """One L2-normalised mean span vector per entity type of an annotated support set."""
        vectors = self.encode_spans([r.text for r in support], [[e.span for e in r.entities] for r in support])
        by_type: dict[str, list[np.ndarray]] = {}
        for r, vecs in zip(support, vectors, strict=True):
            for e, v in zip(r.entities, vecs, strict=True):
                by_type.setdefault(e.label, []).append(v / max(float(np.linalg.norm(v)), 1e-12))
        if not by_type:
            raise GLiNERToolError("the support set has no entities to build prototypes from")
        return {t: _unit(np.mean(vs, axis=0)) for t, vs in sorted(by_type.items())}

    def nearest_prototype(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                          prototypes: Mapping[str, np.ndarray]) -> list[list[tuple[str, float]]]:
        """The closest prototype (cosine) and its similarity for every span: typing by nearest prototype."""
        names = list(prototypes)
        matrix = np.stack([prototypes[n] for n in names])
        out = []
        for vecs in self.encode_spans(texts, spans):
            sims = (vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)) @ matrix.T if len(vecs) else []
            out.append([(names[int(np.argmax(row))], float(np.max(row))) for row in sims])
        return out


def _resolve_overlaps(entities: list[Entity], *, nested: bool, multi_label: bool) -> list[Entity]:
    """gliner's greedy decoding, applied again across windows: best score first, no (partial) overlap.

    Each window is decoded by gliner already; only an entity near an ownership border can clash
    with one from the neighbouring window.
    """
    kept: list[Entity] = []
    for e in sorted(entities, key=lambda x: (-(x.score or 0.0), x.start, x.end, x.label)):
        def clashes(k: Entity, e: Entity = e) -> bool:
            if k.span == e.span:
                return not multi_label or k.label == e.label
            if k.end <= e.start or e.end <= k.start:
                return False
            inside = (k.start <= e.start and e.end <= k.end) or (e.start <= k.start and k.end <= e.end)
            return not (nested and inside)

        if not any(clashes(k) for k in kept):
            kept.append(e)
    return sorted(kept)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


@dataclass
class GLiNERTrainConfig:
    """Everything that changes a trained GLiNER; saved as the recipe beside it.

    ``train`` / ``dev``: registered corpora as ``NAME:SPLIT``. ``init``: an encoder (new heads)
    or a GLiNER checkpoint to continue from. ``max_minutes`` bounds the wall-clock time of the
    training loop over all resumed sessions (training stops at the first step past it, and saves).
    """

    train: list[str]
    dev: list[str] = field(default_factory=list)
    init: str = DEFAULT_ENCODER
    max_steps: int = 2000
    max_minutes: float | None = None
    batch_size: int = 8
    learning_rate: float = 5e-5  # the encoder's
    others_lr: float = 5e-4  # the new span / label heads learn from scratch
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    max_width: int = 12
    max_len: int = 384
    save_steps: int = 200
    seed: int = 0
    dev_limit: int | None = None  # records per dev corpus evaluated at the end
    threshold: float = 0.5
    label_prompts: str = "name"  # or "description": what the model reads for each type at evaluation

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "config") -> GLiNERTrainConfig:
        known = {f.name for f in cls.__dataclass_fields__.values()}  # type: ignore[attr-defined]
        unknown = sorted(set(d) - known)
        if unknown:
            raise GLiNERToolError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
        if "train" not in d:
            raise GLiNERToolError(f"{where}: 'train' (a list of NAME:SPLIT corpora) is required")
        values = dict(d)
        for key in ("train", "dev"):
            if isinstance(values.get(key), str):
                values[key] = [values[key]]
        cfg = cls(**values)
        if cfg.label_prompts not in ("name", "description"):
            raise GLiNERToolError(f"{where}: label_prompts must be 'name' or 'description', got {cfg.label_prompts!r}")
        return cfg


def load_source(source: str, default_split: str = "dev", data_root: str | None = None) -> tuple[list[Record], list[str]]:
    """Records of ``NAME:SPLIT`` (a registered corpus) or a records file, and the entity types it annotates."""
    from openie.datasets import dataset_schema, list_datasets, load_dataset
    from openie.readers import read_records

    name, _, split = source.partition(":")
    if name in list_datasets() and not Path(source).exists():
        return load_dataset(name, split or default_split, data_root=data_root), list(dataset_schema(name).entity_labels)
    if not Path(source).is_file():
        raise GLiNERToolError(f"{source!r} is neither a registered corpus (NAME:SPLIT; openie data list) nor a file")
    records = read_records(source)
    return records, sorted({e.label for r in records for e in r.entities})


def schema_labels(source: str, prompts: str = "name", records: Sequence[Record] = ()) -> Labels:
    """A corpus's entity types as gliner labels: names, or ``{name: description}`` (registered corpora)."""
    from openie.datasets import dataset_schema, list_datasets

    name = source.partition(":")[0]
    if name not in list_datasets() or Path(source).exists():
        return sorted({e.label for r in records for e in r.entities})
    schema = dataset_schema(name)
    if prompts == "description":
        return {lab: schema.description(lab) or lab for lab in schema.entity_labels}
    return list(schema.entity_labels)


def evaluate_gliner(tool: GLiNERTool, sources: Sequence[str], *, threshold: float = 0.5, label_prompts: str = "name",
                    limit: int | None = None, data_root: str | None = None,
                    flat_ner: bool = True) -> dict[str, dict[str, Any]]:
    """Strict micro P/R/F1 (openie's metrics) per ``NAME:SPLIT`` corpus, predicting its own label set."""
    from openie.metrics import entity_scores

    results = {}
    for src in sources:
        gold = load_source(src, "dev", data_root)[0][:limit]
        start = time.perf_counter()
        preds = tool.extract([r.without_annotations() for r in gold], schema_labels(src, label_prompts, gold),
                             threshold=threshold, flat_ner=flat_ner)
        seconds = time.perf_counter() - start
        scores = entity_scores(gold, preds, "strict")
        results[src] = {"precision": round(scores.micro.precision, 4), "recall": round(scores.micro.recall, 4),
                        "f1": round(scores.micro.f1, 4), "records": len(gold), "seconds": round(seconds, 2),
                        "per_type_f1": {t: round(p.f1, 4) for t, p in sorted(scores.per_type.items())}}
    return results


def _last_checkpoint(folder: Path) -> Path | None:
    points = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(points, key=lambda p: int(p.name.split("-")[-1]), default=None)


def train_gliner(config: GLiNERTrainConfig, output_dir: str | Path, *, resume: bool = True, data_root: str | None = None,
                 show_progress: bool = True, log: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """Fine-tune GLiNER on registered corpora; checkpoints and the final model under ``output_dir``.

    Resumes from the last ``checkpoint-N`` when ``resume`` (the recipe must match). Writes
    ``output_dir/model`` (a GLiNER checkpoint) with ``openie_recipe.json`` beside its weights:
    the config, library versions, steps, training seconds, loss history and the dev figures.
    """
    import gliner
    import torch
    import transformers
    from gliner.training import Trainer, TrainingArguments
    from transformers import TrainerCallback

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "openie_train_state.json"
    recipe = asdict(config)
    state = json.loads(state_path.read_text()) if state_path.is_file() else None
    checkpoint = _last_checkpoint(out) if resume else None
    if checkpoint is not None and state is not None and state.get("config") != recipe:
        raise GLiNERToolError(f"{out} holds checkpoints of another training config; pass another output folder "
                              "or --no-resume to start afresh")
    if checkpoint is None or state is None:
        state = {"config": recipe, "train_seconds": 0.0, "sessions": 0}

    stats = ConversionStats()
    examples: list[dict[str, Any]] = []
    for src in config.train:
        recs, labels = load_source(src, "train", data_root)
        examples += to_gliner_examples(recs, negatives=labels, stats=stats)
    random.Random(config.seed).shuffle(examples)
    log(f"{len(examples)} training sentences from {', '.join(config.train)}; "
        f"{stats.skipped_entities} of {stats.entities} entities not on word boundaries, skipped")

    tool = GLiNERTool.load(config.init, max_width=config.max_width, max_len=config.max_len, seed=config.seed,
                           show_progress=show_progress)
    model = tool.model
    model.train()
    args = TrainingArguments(
        output_dir=str(out), learning_rate=config.learning_rate, others_lr=config.others_lr,
        weight_decay=config.weight_decay, others_weight_decay=config.weight_decay,
        lr_scheduler_type="linear", warmup_ratio=config.warmup_ratio,
        per_device_train_batch_size=config.batch_size, max_steps=config.max_steps, save_steps=config.save_steps,
        save_total_limit=2, logging_steps=25, use_cpu=not torch.cuda.is_available(), report_to="none",
        dataloader_num_workers=0, seed=config.seed, disable_tqdm=not show_progress, save_strategy="steps",
        focal_loss_alpha=-1, loss_reduction="sum", negatives=1.0, masking="none",
    )
    budget = config.max_minutes * 60 if config.max_minutes else None
    history: list[dict[str, float]] = []

    class _Budget(TrainerCallback):
        """Stops (and saves) once the training time of all sessions passes ``max_minutes``."""

        def on_train_begin(self, args, st, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, st, control, **kw):
            spent = state["train_seconds"] + time.perf_counter() - self.t0
            if budget is not None and spent >= budget:
                control.should_training_stop = True
                control.should_save = True
            return control

        def on_log(self, args, st, control, logs=None, **kw):
            if logs and "loss" in logs:
                history.append({"step": st.global_step, "loss": float(logs["loss"])})

    trainer = Trainer(model=model, args=args, train_dataset=examples, eval_dataset=None,
                      data_collator=model._create_data_collator(),
                      processing_class=model.data_processor.transformer_tokenizer, callbacks=[_Budget()])
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    state["train_seconds"] = round(state["train_seconds"] + time.perf_counter() - t0, 1)
    state["sessions"] += 1
    state_path.write_text(json.dumps(state, indent=2))
    model.eval()

    final = out / "model"
    model.save_pretrained(str(final))
    log(f"trained {trainer.state.global_step} steps in {state['train_seconds']:.0f} s; evaluating on "
        f"{', '.join(config.dev) or 'nothing'}")
    tool = GLiNERTool(model, str(final.resolve()), show_progress=show_progress)
    dev = evaluate_gliner(tool, config.dev, threshold=config.threshold, label_prompts=config.label_prompts,
                          limit=config.dev_limit, data_root=data_root) if config.dev else {}
    summary = {
        "config": recipe, "steps": int(trainer.state.global_step), "train_seconds": state["train_seconds"],
        "sessions": state["sessions"], "train_sentences": len(examples), "conversion": asdict(stats),
        "final_loss": round(float(result.training_loss), 4) if result.training_loss is not None else None,
        "loss_history": [h for h in trainer.state.log_history if "loss" in h] or history,
        "dev": dev, "weights": tool.fingerprint(),
        "versions": {"gliner": getattr(gliner, "__version__", "?"), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
    }
    (final / RECIPE_FILE).write_text(json.dumps(summary, indent=2))
    return summary


__all__ = [
    "DEFAULT_ENCODER", "GLiNERTool", "GLiNERToolError", "GLiNERTrainConfig", "PROPOSAL_LABEL", "evaluate_gliner",
    "is_gliner_checkpoint", "load_source", "record_words", "schema_labels", "to_gliner_examples", "train_gliner", "word_spans",
]
