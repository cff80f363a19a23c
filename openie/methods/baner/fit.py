"""The BANER few-shot experiment: source-domain span detectors, K-shot target episodes, an ablation table.

One YAML config, one work folder, resumable at every stage (a finished stage is read back, not redone):

1. **Source adapters** (``train_lora``, checkpointed): plain LoRA SFT on the main source corpus,
   and LoRA + the boundary contrastive loss on every source corpus (the LoRAHub sources).
2. **Episodes**: per target domain, K and seed, a greedy K-shot support set from the domain's
   train split and a seeded sample of its dev split.
3. **LoRAHub** per episode: the contrastive source adapters merged with weights searched on the
   support set's loss, saved and registered; the ``lora_contrastive_uniform`` row merges them once
   with fixed equal weights (LoRAHub's starting point), which separates the merge from the search.
4. **Cells**: each row detects spans on the episode's dev sample (one constrained prompt per
   type, one engine call) and types them by the nearest support prototype. Boundary F1 (spans
   only) and typed F1 per cell, written to ``cells/`` as it finishes; ``results.json`` (config
   included) and ``report.md`` at the end.

Rows: ``lora`` (plain SFT), ``lora_contrastive`` (+ boundary contrastive loss),
``lora_contrastive_uniform`` (+ the sources merged with equal weights, no search),
``lora_contrastive_lorahub`` (+ LoRAHub weights searched on the support set).
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from openie.adapters.registry import AdapterRegistry
from openie.adapters.training import train_lora
from openie.datasets import dataset_schema, load_dataset
from openie.errors import OpenIEError
from openie.methods.baner.pipeline import (
    BANERExtractor,
    BoundaryContrastiveLoss,
    PrototypeTyper,
    default_contrastive_layer,
    load_span_encoder,
    lorahub_pairs,
    lorahub_search,
    sample_support,
    save_merged_adapter,
    span_detection_pairs,
)
from openie.metrics import entity_scores
from openie.records import Record

ROWS = ("lora", "lora_contrastive", "lora_contrastive_uniform", "lora_contrastive_lorahub")
ROW_TITLES = {"lora": "LoRA SFT", "lora_contrastive": "+ boundary contrastive loss",
              "lora_contrastive_uniform": "+ contrastive + uniform merge",
              "lora_contrastive_lorahub": "+ contrastive + LoRAHub"}
MERGE_ROWS = ("lora_contrastive_uniform", "lora_contrastive_lorahub")  # rows that merge every source
UNIFORM_ADAPTER = "uniform-merge"


class BANERConfigError(OpenIEError, ValueError):
    """An invalid BANER experiment config (names the file and key)."""


@dataclass
class BANERConfig:
    name: str = "baner"
    base_model: str = "gemma-3-270m"
    main_source: str = "conll2003"
    sources: dict[str, int] = field(default_factory=lambda: {"conll2003": 400})  # corpus -> train sentences
    steps: int = 100
    batch_size: int = 8
    lr: float = 3e-4
    rank: int = 8
    alpha: float = 16
    contrastive_weight: float = 0.001  # lambda (authors: 0.001)
    layer: int | None = None           # contrastive layer (None: 3/4 of the depth, as the authors' 24 of 32)
    descriptions: bool = False         # add the type's definition to the prompt
    negative_ratio: float | None = 1.0  # empty-answer training pairs kept per pair with entities (None: all)
    seed: int = 0
    domains: list[str] = field(default_factory=lambda: ["ai", "literature", "music", "politics", "science"])
    k: list[int] = field(default_factory=lambda: [1, 5])
    episode_seeds: list[int] = field(default_factory=lambda: [0])
    dev_sentences: int = 40
    lorahub: dict[str, Any] = field(default_factory=lambda: {"budget": 15, "l1": 0.05, "max_pairs": 48})
    rows: list[str] = field(default_factory=lambda: list(ROWS))
    typing_encoder: str = "llm"        # prototype span vectors: "llm" (base model) or a GLiNER checkpoint
    typing_layer: int | None = None    # layer of the LLM span vectors (None: the middle block)
    negative_offsets: list[int] = field(default_factory=lambda: [-2, -1, 1, 2])
    engine: dict[str, Any] = field(default_factory=lambda: {"backend": "vllm"})
    workdir: str = "work"

    @classmethod
    def load(cls, path: str | Path) -> BANERConfig:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise BANERConfigError(f"{path}: no such config file")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        known = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        unknown = sorted(set(data) - known)
        if unknown:
            raise BANERConfigError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
        cfg = cls(**data)
        bad = sorted(set(cfg.rows) - set(ROWS))
        if bad:
            raise BANERConfigError(f"{path}: rows: unknown {bad}; known: {list(ROWS)}")
        if cfg.main_source not in cfg.sources:
            raise BANERConfigError(f"{path}: main_source {cfg.main_source!r} must be one of sources {list(cfg.sources)}")
        for key in ("steps", "batch_size", "dev_sentences"):
            if int(getattr(cfg, key)) < 1:
                raise BANERConfigError(f"{path}: {key} must be >= 1")
        if not cfg.k or min(cfg.k) < 1:
            raise BANERConfigError(f"{path}: k must list shot counts >= 1")
        unknown_hub = sorted(set(cfg.lorahub) - {"budget", "l1", "bounds", "max_pairs"})
        if unknown_hub:
            raise BANERConfigError(f"{path}: lorahub: unknown keys {unknown_hub}; known: budget, l1, bounds, max_pairs")
        cfg.workdir = str((path.resolve().parent / cfg.workdir).resolve())
        return cfg


def _sample(records: list[Record], n: int, seed: int) -> list[Record]:
    if n >= len(records):
        return list(records)
    return random.Random(seed).sample(records, n)


def _n_layers(model: str) -> int:
    import json as _json

    from openie.models import resolve_model

    config = _json.loads((Path(resolve_model(model)) / "config.json").read_text())
    return int(config.get("text_config", config)["num_hidden_layers"])


def source_adapters(cfg: BANERConfig) -> dict[str, tuple[str, bool]]:
    """Adapter name -> (source corpus, contrastive) that the rows need."""
    wanted: dict[str, tuple[str, bool]] = {}
    if "lora" in cfg.rows:
        wanted[f"plain-{cfg.main_source}"] = (cfg.main_source, False)
    if "lora_contrastive" in cfg.rows or set(MERGE_ROWS) & set(cfg.rows):
        wanted[f"contrastive-{cfg.main_source}"] = (cfg.main_source, True)
    if set(MERGE_ROWS) & set(cfg.rows):
        for source in cfg.sources:
            wanted[f"contrastive-{source}"] = (source, True)
    return wanted


def train_sources(cfg: BANERConfig, *, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Train (or resume, or read back) every source adapter; returns their training summaries."""
    work = Path(cfg.workdir)
    registry = AdapterRegistry(work / "registry")
    layer = cfg.layer if cfg.layer is not None else default_contrastive_layer(_n_layers(cfg.base_model))
    summaries = {}
    for name, (source, contrastive) in source_adapters(cfg).items():
        out = work / "adapters" / name
        done = out / "openie_training.json"
        records = _sample(load_dataset(source, "train"), cfg.sources[source], cfg.seed)
        pairs, spans = span_detection_pairs(records, dataset_schema(source), descriptions=cfg.descriptions,
                                            negative_ratio=cfg.negative_ratio, seed=cfg.seed)
        aux = BoundaryContrastiveLoss(spans, layer=layer, weight=cfg.contrastive_weight,
                                      negative_offsets=cfg.negative_offsets) if contrastive else None
        # a finished adapter is only re-saved; changed data or settings refuse to resume (TrainingError names them)
        train_lora(cfg.base_model, pairs, out, rank=cfg.rank, alpha=cfg.alpha, lr=cfg.lr, max_steps=cfg.steps,
                   batch_size=cfg.batch_size, seed=cfg.seed, save_every=25, registry=registry, name=name,
                   task="ner", labels=dataset_schema(source).entity_labels, auxiliary_loss=aux, progress=progress)
        log = json.loads(done.read_text())
        summaries[name] = {"source": source, "contrastive": contrastive, "layer": layer if contrastive else None,
                           "pairs": len(pairs), "sentences": len(records), "steps": log["config"]["steps_done"],
                           "final_loss": log["final_loss"], "seconds": round(log.get("seconds", 0.0), 1),
                           "path": str(out)}
    (work / "training.json").write_text(json.dumps(summaries, indent=2) + "\n")
    return summaries


def episode_key(domain: str, k: int, seed: int) -> str:
    return f"{domain}-k{k}-s{seed}"


def settings_hash(cfg: BANERConfig, *keys: str) -> str:
    """A short hash of the settings a stored stage depends on: a changed setting misses the old files."""
    import hashlib

    blob = json.dumps({k: getattr(cfg, k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


_ADAPTER_KEYS = ("base_model", "main_source", "sources", "steps", "batch_size", "lr", "rank", "alpha",
                 "contrastive_weight", "layer", "descriptions", "seed", "negative_offsets", "negative_ratio")


def _f1(scores: Any) -> dict[str, float]:
    m = scores.micro
    return {"precision": round(m.precision, 4), "recall": round(m.recall, 4), "f1": round(m.f1, 4)}


def run_baner_experiment(config_path: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Every stage of the experiment (resumable); writes ``results.json`` and ``report.md`` beside the work folder."""
    from openie.engines import create_engine

    cfg = BANERConfig.load(config_path)
    work = Path(cfg.workdir)
    (work / "cells").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    training = train_sources(cfg, progress=progress)
    registry = AdapterRegistry(work / "registry")
    hub_sources = [training[f"contrastive-{s}"]["path"] for s in cfg.sources] \
        if set(MERGE_ROWS) & set(cfg.rows) else []

    episodes = {}
    for domain in cfg.domains:
        corpus = f"crossner_{domain}"
        schema = dataset_schema(corpus)
        dev = _sample(load_dataset(corpus, "dev"), cfg.dev_sentences, cfg.seed)
        train = load_dataset(corpus, "train")
        for k in cfg.k:
            for seed in cfg.episode_seeds:
                support = sample_support(train, schema.entity_labels, k, seed)
                episodes[episode_key(domain, k, seed)] = (domain, k, seed, schema, support, dev)

    hubs: dict[str, dict[str, Any]] = {}
    uniform: dict[str, Any] = {}
    if "lora_contrastive_uniform" in cfg.rows:
        out = work / "uniform" / settings_hash(cfg, *_ADAPTER_KEYS)
        weights = [1.0 / len(hub_sources)] * len(hub_sources)
        if not (out / "adapter_model.safetensors").is_file():
            save_merged_adapter(hub_sources, weights, out)
            registry.register(out, UNIFORM_ADAPTER, base_model=str(cfg.base_model), task="ner",
                              training={"uniform_merge": {"sources": hub_sources, "weights": weights}}, overwrite=True)
        uniform = {"path": str(out), "sources": list(cfg.sources), "weights": weights}
    if hub_sources and "lora_contrastive_lorahub" in cfg.rows:
        for key, (_domain, _k, seed, schema, support, _) in episodes.items():
            out = work / "lorahub" / f"{key}-{settings_hash(cfg, *_ADAPTER_KEYS, 'lorahub')}"
            meta = out / "openie_lorahub.json"
            if not meta.is_file():
                pairs, _ = span_detection_pairs(support, schema, descriptions=cfg.descriptions)
                search = {k: v for k, v in cfg.lorahub.items() if k != "max_pairs"}
                lorahub_search(cfg.base_model, hub_sources, lorahub_pairs(pairs, cfg.lorahub.get("max_pairs"), seed),
                               out, seed=seed, registry=registry, name=f"lorahub-{key}", progress=progress, **search)
            saved = json.loads(meta.read_text())
            hubs[key] = {"path": str(out), "weights": saved["weights"], "loss": saved["loss"],
                         "uniform_loss": saved["uniform_loss"], "evaluations": saved["evaluations"]}

    adapters = {name: info["path"] for name, info in training.items()}
    adapters.update({f"lorahub-{key}": hub["path"] for key, hub in hubs.items()})
    if uniform:
        adapters[UNIFORM_ADAPTER] = uniform["path"]
    engine_options = dict(cfg.engine)
    backend = engine_options.pop("backend", "vllm")
    engine = None
    encoder = None
    bar = tqdm(total=len(cfg.rows) * len(episodes), desc="BANER cells", unit="cell", disable=not progress)
    detections: dict[tuple[str, str], list[Record]] = {}
    cell_hash = settings_hash(cfg, *_ADAPTER_KEYS, "lorahub", "dev_sentences", "typing_encoder", "typing_layer",
                              "engine")
    for row in cfg.rows:
        for key, (domain, k, seed, schema, support, dev) in episodes.items():
            cell = work / "cells" / f"{row}-{key}-{cell_hash}.json"
            if cell.is_file():
                bar.update(1)
                continue
            if engine is None:
                engine = create_engine(backend, cfg.base_model, adapters=adapters, **engine_options)
                encoder = load_span_encoder(cfg.typing_encoder, model=cfg.base_model, layer=cfg.typing_layer)
            adapter = {"lora": f"plain-{cfg.main_source}", "lora_contrastive": f"contrastive-{cfg.main_source}",
                       "lora_contrastive_uniform": UNIFORM_ADAPTER, "lora_contrastive_lorahub": f"lorahub-{key}"}[row]
            t0 = time.perf_counter()
            extractor = BANERExtractor(engine, schema, adapter=adapter, descriptions=cfg.descriptions)
            reuse = (row, domain) if row != "lora_contrastive_lorahub" else None  # detection ignores K there
            if reuse is not None and reuse in detections:
                detected = copy.deepcopy(detections[reuse])
            else:
                detected = extractor.extract(dev, progress=False)
                if reuse is not None:
                    detections[reuse] = copy.deepcopy(detected)
            prompt_typed = entity_scores(dev, detected, mode="strict")
            boundary = entity_scores(dev, detected, mode="boundary")
            extractor.typer = PrototypeTyper.fit(encoder, [r for r in support if r.entities])
            extractor.retype(detected)
            typed = entity_scores(dev, detected, mode="strict")
            result = {"row": row, "domain": domain, "k": k, "seed": seed, "adapter": adapter,
                      "support_sentences": len(support), "dev_sentences": len(dev),
                      "boundary": _f1(boundary), "typed_prototype": _f1(typed), "typed_prompt": _f1(prompt_typed),
                      "seconds": round(time.perf_counter() - t0, 1)}
            cell.write_text(json.dumps(result, indent=2) + "\n")
            bar.update(1)
    bar.close()
    cells = [json.loads(p.read_text()) for p in sorted((work / "cells").glob(f"*-{cell_hash}.json"))]
    cells = [c for c in cells if c["row"] in cfg.rows and episode_key(c["domain"], c["k"], c["seed"]) in episodes]
    results = {"config": asdict(cfg), "training": training, "uniform_merge": uniform, "lorahub": hubs, "cells": cells,
               "seconds": round(time.perf_counter() - started, 1)}
    out_dir = work.parent
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "report.md").write_text(render_report(results, config_path))
    return results


def render_report(results: dict[str, Any], config_path: str | Path) -> str:
    cfg = results["config"]
    cells = results["cells"]
    domains = cfg["domains"]
    lines = [f"# BANER few-shot ablation ({cfg['base_model']})", "",
             f"Reproduce: `openie baner experiment {config_path}`. Target: CrossNER dev, "
             f"{cfg['dev_sentences']} sentences per domain (seeded sample); support: greedy K-shot from the "
             f"domain's train split, seeds {cfg['episode_seeds']}. Source adapters: {cfg['steps']} steps of batch "
             f"{cfg['batch_size']} on {', '.join(f'{n} {s} sentences' for s, n in cfg['sources'].items())}; "
             f"contrastive weight {cfg['contrastive_weight']}.", ""]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    for metric, title in (("boundary", "Boundary F1 (spans only)"), ("typed_prototype", "Typed F1, prototype typing"),
                          ("typed_prompt", "Typed F1, the type of the prompt that found the span")):
        lines += [f"## {title}", "", "| row | K | " + " | ".join(domains) + " | mean |",
                  "|---|---:|" + "---:|" * (len(domains) + 1)]
        for row in cfg["rows"]:
            for k in cfg["k"]:
                vals = []
                for d in domains:
                    got = [c[metric]["f1"] for c in cells if c["row"] == row and c["k"] == k and c["domain"] == d]
                    vals.append(mean(got) if got else float("nan"))
                lines.append(f"| {ROW_TITLES[row]} | {k} | " + " | ".join(f"{v:.3f}" for v in vals)
                             + f" | {mean([v for v in vals if v == v]):.3f} |")
        lines.append("")
    lines += ["## Source adapters", "", "| adapter | source | contrastive | pairs | steps | final LM loss | seconds |",
              "|---|---|---|---:|---:|---:|---:|"]
    for name, t in results["training"].items():
        lines.append(f"| {name} | {t['source']} | {t['contrastive']} | {t['pairs']} | {t['steps']} | "
                     f"{t['final_loss']:.4f} | {t['seconds']} |")
    if results.get("uniform_merge"):
        u = results["uniform_merge"]
        lines += ["", f"Uniform merge (row {ROW_TITLES['lora_contrastive_uniform']!r}): "
                  + ", ".join(f"{s} {w:.4f}" for s, w in zip(u["sources"], u["weights"], strict=True))
                  + "; the same adapter in every episode."]
    if results["lorahub"]:
        lines += ["", "## LoRAHub weights (sources: " + ", ".join(cfg["sources"]) + ")", "",
                  "| episode | weights | support loss | uniform-weights loss | evaluations |", "|---|---|---:|---:|---:|"]
        for key, h in results["lorahub"].items():
            lines.append(f"| {key} | {h['weights']} | {h['loss']:.4f} | {h['uniform_loss']:.4f} | {h['evaluations']} |")
    return "\n".join(lines) + "\n"


__all__ = ["MERGE_ROWS", "ROWS", "UNIFORM_ADAPTER", "BANERConfig", "BANERConfigError", "render_report", "run_baner_experiment", "source_adapters",
           "train_sources"]
