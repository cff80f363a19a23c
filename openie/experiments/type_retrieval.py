"""The NER Retriever experiment: zero-shot type retrieval, R-precision per type, against sentence baselines.

One YAML config, one work folder, resumable: mention vectors are cached per corpus (keyed by the
encoder's weights, hook points, texts and spans) and the projectors checkpoint, so a re-run only
recomputes what is missing; ``results.json`` and ``report.md`` are written at the end.

1. **Layer sweep** (one forward pass reads every candidate layer): for each layer, a projector
   trained briefly on a sample of the training mentions, scored on ``sweep_dev`` (a corpus kept
   out of the report); the best layer is used unless ``layer`` is fixed.
2. **Projector** at the chosen layer, trained on the training mentions (triplets: anchor = the
   type's description).
3. **Rows**, each indexing every ``index`` corpus and querying it with its own type descriptions:
   NER Retriever on gold mentions, on GLiNER mentions, the raw layer vector without the MLP
   (gold mentions), BM25 over sentences, dense MiniLM sentence retrieval.

Shared type names across training corpora (``person`` in conll2003 and wnut17) are one type,
anchored by the first corpus's description.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from openie.datasets import dataset_schema, load_dataset
from openie.errors import OpenIEError
from openie.records import Record
from openie.tools.ner_retriever import (
    DEFAULT_MODEL,
    DEFAULT_MODULE,
    GoldMentions,
    MentionEncoder,
    MentionIndex,
    MentionProjector,
    NERRetriever,
    ProjectorConfig,
    collect_triplet_data,
    evaluate_type_retrieval,
    train_projector,
    type_relevance,
)

ROWS = ("ner_retriever_gold", "ner_retriever_gliner", "raw_layer_gold", "bm25", "dense")
ROW_TITLES = {
    "ner_retriever_gold": "NER Retriever (gold mentions)",
    "ner_retriever_gliner": "NER Retriever (GLiNER mentions)",
    "raw_layer_gold": "raw layer vector, no MLP (gold mentions)",
    "bm25": "BM25 over sentences (description as query)",
    "dense": "dense sentence retrieval (MiniLM)",
}


class TypeRetrievalConfigError(OpenIEError, ValueError):
    """An invalid type-retrieval config (names the file and key)."""


@dataclass
class TypeRetrievalConfig:
    train: list[str]
    index: list[str]
    name: str = "ner_retriever"
    model: str = DEFAULT_MODEL
    module: str = DEFAULT_MODULE
    layer: int | None = None  # None: the sweep picks it
    sweep_layers: list[int] = field(default_factory=lambda: [3, 6, 9, 12, 15])
    sweep_dev: str = "wnut17:dev"
    sweep_steps: int = 600
    train_sample: int = 4000  # training sentences with at least one entity (seeded)
    projector: dict[str, Any] = field(default_factory=dict)
    rows: list[str] = field(default_factory=lambda: list(ROWS))
    gliner: dict[str, Any] = field(default_factory=dict)  # model, labels, threshold
    dense_model: str = "minilm"
    descriptions: str = "description"  # or "name": what a query says about a type
    index_limit: int | None = None  # first N records per index corpus
    dtype: str = "float32"
    batch_size: int = 16
    max_length: int = 512
    seed: int = 0
    workdir: str = "work"

    @classmethod
    def load(cls, path: str | Path) -> TypeRetrievalConfig:
        import yaml

        path = Path(path)
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        known = {f for f in cls.__dataclass_fields__}  # type: ignore[attr-defined]
        unknown = sorted(set(data) - known)
        if unknown:
            raise TypeRetrievalConfigError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
        for key in ("train", "index"):
            if not data.get(key):
                raise TypeRetrievalConfigError(f"{path}: {key!r} (a list of NAME:SPLIT corpora) is required")
        bad = sorted(set(data.get("rows", ROWS)) - set(ROWS))
        if bad:
            raise TypeRetrievalConfigError(f"{path}: rows: unknown {bad}; known: {list(ROWS)}")
        try:
            ProjectorConfig(**data.get("projector", {}))
        except TypeError as err:
            raise TypeRetrievalConfigError(f"{path}: projector: {err}") from None
        if "ner_retriever_gliner" in data.get("rows", ROWS) and not (data.get("gliner") or {}).get("model"):
            raise TypeRetrievalConfigError(f"{path}: gliner.model (a GLiNER checkpoint) is needed by the "
                                           "ner_retriever_gliner row")
        cfg = cls(**data)
        base = path.resolve().parent
        cfg.workdir = str((base / cfg.workdir).resolve())
        if cfg.gliner.get("model") and not Path(cfg.gliner["model"]).is_absolute():
            candidate = base / cfg.gliner["model"]
            if candidate.exists():
                cfg.gliner = {**cfg.gliner, "model": str(candidate.resolve())}
        return cfg


def corpus_descriptions(source: str, mode: str = "description") -> dict[str, str]:
    schema = dataset_schema(source.partition(":")[0])
    return {lab: (schema.description(lab) or lab) if mode == "description" else lab for lab in schema.entity_labels}


def _load(source: str, limit: int | None = None) -> list[Record]:
    name, _, split = source.partition(":")
    return load_dataset(name, split or "dev")[:limit]


def _spans_key(records: Sequence[Record], spans: Sequence[Sequence[tuple[int, int]]]) -> str:
    h = hashlib.sha256()
    for r, sp in zip(records, spans, strict=True):
        h.update(r.id.encode() + b"\0" + r.text.encode() + json.dumps(sp).encode())
    return h.hexdigest()[:16]


class VectorCache:
    """Mention vectors on disk, one ``.npz`` per (encoder, hook points, texts + spans)."""

    def __init__(self, folder: Path, encoder: MentionEncoder):
        self.folder, self.encoder = folder, encoder
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, tag: str, records: Sequence[Record], spans: Sequence[Sequence[tuple[int, int]]]) -> list[list[np.ndarray]]:
        key = f"{tag.replace(':', '_').replace('/', '_')}-{self.encoder.fingerprint()}-{_spans_key(records, spans)}"
        path = self.folder / f"{key}.npz"
        counts = [len(s) for s in spans]
        if path.is_file():
            data = np.load(path)
            return [np.split(data[f"h{h}"], np.cumsum(counts)[:-1]) for h in range(len(self.encoder.hooks))]
        out = self.encoder.encode([r.text for r in records], spans)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{f"h{h}": (np.concatenate(per) if per else np.zeros((0, 0))) for h, per in enumerate(out)})
        tmp.replace(path)
        return out


def _train_mentions(cfg: TypeRetrievalConfig) -> tuple[list[Record], dict[str, str]]:
    """A seeded sample of training sentences with entities, and one description per type name."""
    records: list[Record] = []
    descriptions: dict[str, str] = {}
    for src in cfg.train:
        recs = [r for r in _load(src) if r.entities]
        records += recs
        for lab, desc in corpus_descriptions(src, cfg.descriptions).items():
            descriptions.setdefault(lab, desc)
    rng = random.Random(cfg.seed)
    if len(records) > cfg.train_sample:
        records = rng.sample(records, cfg.train_sample)
    return records, descriptions


def _index_and_score(vectors: Sequence[np.ndarray], records: Sequence[Record], spans: Sequence[Sequence[tuple[int, int]]],
                     project: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, labels: Sequence[str],
                     descriptions: Mapping[str, str], candidates_factor: int = 4) -> tuple[dict[str, Any], MentionIndex]:
    parts = [(r.id, sp, project(v)) for r, sp, v in zip(records, spans, vectors, strict=True) if len(sp)]
    dim = int(project(queries[:1]).shape[1])
    index = MentionIndex.build(dim=dim)
    for doc, sp, v in parts:
        index.add([doc] * len(sp), sp, v)
    qv = dict(zip(labels, project(queries), strict=True))
    by_desc = {descriptions[lab]: lab for lab in labels}
    res = evaluate_type_retrieval(lambda d, k: [h.doc_id for h in index.search_vector(qv[by_desc[d]], k, candidates_factor)],
                                  {lab: descriptions[lab] for lab in labels}, type_relevance(records))
    return res, index


def run_type_retrieval(config: str | Path | TypeRetrievalConfig, *, show_progress: bool = True,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the experiment; writes ``results.json`` and ``report.md`` beside the work folder."""
    cfg = config if isinstance(config, TypeRetrievalConfig) else TypeRetrievalConfig.load(config)
    work = Path(cfg.workdir)
    work.mkdir(parents=True, exist_ok=True)
    out_dir = work.parent
    timings: dict[str, float] = {}
    t = time.perf_counter()
    layers = [cfg.layer] if cfg.layer is not None else list(cfg.sweep_layers)
    encoder = MentionEncoder.load(cfg.model, layer=layers, module=cfg.module, dtype=cfg.dtype,
                                  batch_size=cfg.batch_size, max_length=cfg.max_length, show_progress=show_progress)
    cache = VectorCache(work / "vectors", encoder)
    timings["load_encoder"] = time.perf_counter() - t
    pcfg = ProjectorConfig(**{"seed": cfg.seed, **cfg.projector})

    # 1. training mentions at every candidate layer, anchors = type descriptions
    t = time.perf_counter()
    train_records, train_desc = _train_mentions(cfg)
    train_spans = GoldMentions().detect(train_records)
    train_vecs = cache.get("train", train_records, train_spans)
    type_names = sorted(train_desc)
    anchor_vecs = encoder.encode_texts([train_desc[t_] for t_ in type_names])
    timings["encode_train"] = time.perf_counter() - t
    log(f"{sum(map(len, train_spans))} training mentions of {len(type_names)} types from {len(train_records)} sentences")

    # 2. layer sweep on sweep_dev
    sweep: dict[str, Any] = {}
    chosen = cfg.layer
    if cfg.layer is None:
        t = time.perf_counter()
        dev = [r for r in _load(cfg.sweep_dev) if r.entities] if cfg.sweep_dev else []
        dev_spans = GoldMentions().detect(dev)
        dev_vecs = cache.get("sweep", dev, dev_spans)
        dev_desc = corpus_descriptions(cfg.sweep_dev, cfg.descriptions)
        dev_labels = sorted(dev_desc)
        dev_queries = encoder.encode_texts([dev_desc[lab] for lab in dev_labels])
        for h, hook in enumerate(encoder.hooks):
            data = collect_triplet_data(train_records, train_vecs[h], dict(zip(type_names, anchor_vecs[h], strict=True)))
            mlp, losses = train_projector(data, ProjectorConfig(**{**asdict(pcfg), "steps": cfg.sweep_steps}),
                                          work / "sweep" / f"layer{hook.layer}", show_progress=False)
            proj = MentionProjector(mlp)
            trained, _ = _index_and_score(dev_vecs[h], dev, dev_spans, proj, dev_queries[h], dev_labels, dev_desc)
            raw, _ = _index_and_score(dev_vecs[h], dev, dev_spans, MentionProjector(), dev_queries[h], dev_labels,
                                      dev_desc)
            sweep[str(hook.layer)] = {"mlp": trained["macro_r_precision"], "raw": raw["macro_r_precision"],
                                      "final_loss": round(float(np.mean(losses[-50:])), 4)}
            log(f"layer {hook.layer}: R-precision on {cfg.sweep_dev} {trained['macro_r_precision']:.4f} "
                f"(raw {raw['macro_r_precision']:.4f})")
        chosen = int(max(sweep, key=lambda k: sweep[k]["mlp"]))
        timings["sweep"] = time.perf_counter() - t
    h_idx = layers.index(chosen)
    hook = encoder.hooks[h_idx]

    # 3. the projector at the chosen layer
    t = time.perf_counter()
    data = collect_triplet_data(train_records, train_vecs[h_idx], dict(zip(type_names, anchor_vecs[h_idx], strict=True)))
    mlp, losses = train_projector(data, pcfg, work / f"projector-layer{chosen}", show_progress=show_progress)
    projector = MentionProjector(mlp, {"config": asdict(pcfg), "input_dim": int(data.mentions.shape[1]),
                                       "layer": chosen, "module": cfg.module, "train": cfg.train,
                                       "mentions": len(data.types)})
    timings["projector"] = time.perf_counter() - t
    single = MentionEncoder(encoder.model, encoder.tokenizer, hook, model_id=encoder.model_id,
                            batch_size=cfg.batch_size, max_length=cfg.max_length, show_progress=show_progress)

    # 4. rows
    single_cache = VectorCache(work / "vectors", single)
    detector = None
    if "ner_retriever_gliner" in cfg.rows:
        from openie.tools.gliner import GLiNERTool
        from openie.tools.ner_retriever import GLiNERMentions

        g = cfg.gliner
        detector = GLiNERMentions(GLiNERTool.load(g["model"], show_progress=show_progress),
                                  g.get("labels", ["entity"]), g.get("threshold", 0.3))
    results: dict[str, dict[str, Any]] = {row: {} for row in cfg.rows}
    detection: dict[str, Any] = {}
    for src in tqdm(cfg.index, desc="index corpora", unit="corpus", disable=not show_progress):
        t = time.perf_counter()
        records = _load(src, cfg.index_limit)
        desc = corpus_descriptions(src, cfg.descriptions)
        labels = [lab for lab in sorted(desc) if lab in type_relevance(records)]
        queries = single.encode_texts([desc[lab] for lab in labels])[0]
        gold_spans = GoldMentions().detect(records)
        gold_vecs = single_cache.get(f"index-{src}", records, gold_spans)[0]
        if "ner_retriever_gold" in cfg.rows:
            res, index = _index_and_score(gold_vecs, records, gold_spans, projector, queries, labels, desc)
            results["ner_retriever_gold"][src] = res
            NERRetriever(single, projector, index).save(work / "retrievers" / f"{src.replace(':', '_')}-gold")
        if "raw_layer_gold" in cfg.rows:
            results["raw_layer_gold"][src] = _index_and_score(gold_vecs, records, gold_spans, MentionProjector(),
                                                              queries, labels, desc)[0]
        if detector is not None:
            found = detector.detect(records)
            gold_set = {(r.id, sp) for r, sps in zip(records, gold_spans, strict=True) for sp in sps}
            found_set = {(r.id, sp) for r, sps in zip(records, found, strict=True) for sp in sps}
            hit = len(gold_set & found_set)
            detection[src] = {"gold_mentions": len(gold_set), "detected": len(found_set),
                              "precision": round(hit / max(1, len(found_set)), 4),
                              "recall": round(hit / max(1, len(gold_set)), 4)}
            vecs = single_cache.get(f"gliner-{src}", records, found)[0]
            res, index = _index_and_score(vecs, records, found, projector, queries, labels, desc)
            results["ner_retriever_gliner"][src] = res
            NERRetriever(single, projector, index).save(work / "retrievers" / f"{src.replace(':', '_')}-gliner")
        if "bm25" in cfg.rows or "dense" in cfg.rows:
            results_bm25, results_dense = _sentence_baselines(cfg, records, labels, desc)
            if "bm25" in cfg.rows:
                results["bm25"][src] = results_bm25
            if "dense" in cfg.rows:
                results["dense"][src] = results_dense
        timings[f"index:{src}"] = time.perf_counter() - t
        log(f"{src}: " + ", ".join(f"{row} {results[row][src]['macro_r_precision']:.4f}" for row in cfg.rows
                                   if src in results[row]))

    summary = {
        "config": asdict(cfg), "chosen_layer": chosen, "hook": hook.describe(), "sweep": sweep,
        "projector": {"steps": pcfg.steps, "final_loss": round(float(np.mean(losses[-50:])), 4),
                      "train_mentions": len(data.types), "train_sentences": len(train_records),
                      "types": type_names},
        "detection": detection, "results": results,
        "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "report.md").write_text(type_retrieval_markdown(summary))
    return summary


def _sentence_baselines(cfg: TypeRetrievalConfig, records: Sequence[Record], labels: Sequence[str],
                        desc: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """BM25 and dense sentence retrieval with the type description as the query."""
    from retrievers.bm25 import BM25Retriever
    from retrievers.dense import DenseRetriever

    relevant = type_relevance(records)
    queries = {lab: desc[lab] for lab in labels}
    plain = [Record(r.id, r.text) for r in records]
    out = []
    for retriever in (BM25Retriever(backend="bm25s", show_progress=False),
                      DenseRetriever(cfg.dense_model, show_progress=False)):
        retriever.index(plain)
        out.append(evaluate_type_retrieval(lambda d, k, ret=retriever: [rec.id for rec, _ in ret.retrieve(d, k)],
                                           queries, relevant))
    return out[0], out[1]


def type_retrieval_markdown(summary: Mapping[str, Any]) -> str:
    """The committed report: macro R-precision per index corpus for every row, the sweep and the set-up."""
    cfg = summary["config"]
    corpora = cfg["index"]
    lines = [f"# {cfg['name']}: zero-shot entity-type retrieval (macro R-precision)", "",
             f"Encoder `{cfg['model']}`, hook `{summary['hook']}` (layer chosen by the sweep below), "
             f"projector trained on {summary['projector']['train_mentions']} gold mentions of "
             f"{len(summary['projector']['types'])} types ({', '.join(summary['projector']['types'])}) from "
             f"{', '.join(cfg['train'])}. Queries are the index corpus's type {cfg['descriptions']}s; a type's "
             "relevant documents are the sentences with at least one gold mention of it.", "",
             "| row | " + " | ".join(c.replace(":dev", "") for c in corpora) + " | mean |",
             "|---|" + "---:|" * (len(corpora) + 1)]
    for row, per in summary["results"].items():
        vals = [per.get(c, {}).get("macro_r_precision") for c in corpora]
        got = [v for v in vals if v is not None]
        mean = f"{np.mean(got):.3f}" if got else ""
        lines.append(f"| {ROW_TITLES.get(row, row)} | " + " | ".join(f"{v:.3f}" if v is not None else "" for v in vals)
                     + f" | {mean} |")
    if summary.get("sweep"):
        lines += ["", f"## Layer sweep (`{cfg['module']}`, R-precision on {cfg['sweep_dev']}, not a reported corpus)", "",
                  "| layer | with MLP | raw vector |", "|---:|---:|---:|"]
        for layer, s in summary["sweep"].items():
            lines.append(f"| {layer} | {s['mlp']:.3f} | {s['raw']:.3f} |")
    if summary.get("detection"):
        lines += ["", "## GLiNER mention detection (type-agnostic spans vs gold spans)", "",
                  "| corpus | gold | detected | precision | recall |", "|---|---:|---:|---:|---:|"]
        for c, d in summary["detection"].items():
            lines.append(f"| {c} | {d['gold_mentions']} | {d['detected']} | {d['precision']:.3f} | {d['recall']:.3f} |")
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in summary["timings_seconds"].items()), ""]
    return "\n".join(lines)


__all__ = ["ROWS", "TypeRetrievalConfig", "TypeRetrievalConfigError", "VectorCache", "corpus_descriptions",
           "run_type_retrieval", "type_retrieval_markdown"]
