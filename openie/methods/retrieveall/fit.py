"""The RetrieveAll experiment: per-language LoRA adapters with routing vs one shared adapter.

One YAML config (``experiments/configs/retrieveall.yaml``), one output folder, resumable stage by
stage; ``results.json`` (the config embedded) and ``report.md`` are rewritten after every stage,
so a crash loses at most the stage that was running:

1. **data**: each language's training pool and dev sample (:func:`~openie.methods.retrieveall.language_data`).
2. **augmentation**: training prompts with their similar examples, per language
   (``work/pairs/<lang>-<key>.jsonl``); the pool's vectors are kept in ``work/vectors/``.
3. **training**: one LoRA per language and the shared one (``work/adapters/<key>/<lang|shared>``,
   registered in ``work/registry``); ``train_lora`` resumes a half-trained adapter from its checkpoint.
4. **evaluation**, per mode (``shared``, ``routed``, ``oracle``): every language's dev sample,
   shuffled together so each batch mixes languages, one adapter per request, predictions appended
   to ``work/predictions/<mode>-<key>.jsonl`` batch by batch (a restart skips what is there).

Each stage is keyed by a hash of the settings it depends on: a finished stage with the same key is
skipped, a changed setting redoes that stage and the ones after it.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from openie.engines.hardware import DTYPES, resolve_dtype
from openie.methods.retrieveall.pipeline import (
    CANONICAL_LABELS,
    LANGUAGE_CORPORA,
    MODES,
    REPRESENTATIONS,
    SHARED,
    AdapterTrainingConfig,
    AugmentationConfig,
    LanguageData,
    RetrieveAllError,
    RetrieveAllExtractor,
    SimilarExamples,
    adapter_name,
    augmented_training_pairs,
    build_router,
    language_data,
    make_representation,
    pairs_sha256,
    prompt_schema,
)
from openie.predictions import read_predictions
from openie.records import Record
from openie.typed_config import ConfigContext, ConfigError, absolute_path, build, yaml_key_lines

RESULTS_FILE, REPORT_FILE = "results.json", "report.md"


# ---------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------


@dataclass
class DataSection:
    """Languages and sample sizes; ``corpora`` adds or replaces entries of ``LANGUAGE_CORPORA``."""

    languages: list[str] = field(default_factory=lambda: list(LANGUAGE_CORPORA))
    corpora: dict[str, str] = field(default_factory=dict)
    n_train: int | None = 400
    n_dev: int | None = 100
    heldout_fraction: float = 0.5
    seed: int = 0
    data_root: str | None = None


@dataclass
class RepresentationSection:
    """``llm`` (``model`` default: the base model), ``sentence`` (default: minilm) or ``ngram``."""

    kind: str = "llm"
    model: str | None = None
    layer: int | None = None
    module: str = "self_attn.v_proj"
    dtype: str = "float32"
    batch_size: int = 16
    max_length: int = 256


@dataclass
class RoutingSection:
    """``fallback``: ``shared`` (the shared adapter), a language code, or null (the bare base model)."""

    k: int = 8
    min_confidence: float = 0.5
    fallback: str | None = SHARED
    weighted: bool = False


@dataclass
class InferenceSection:
    template: str = "ner.json.v1"
    max_tokens: int = 96
    batch_size: int = 32
    constrained: bool = True
    shuffle_seed: int = 0  # order of the mixed-language evaluation stream
    descriptions: bool = True  # the prompts' type list with CoNLL's descriptions (False: names only)


@dataclass
class EngineSection:
    """What :func:`openie.engines.create_engine` gets besides the base model and the adapters."""

    backend: str = "vllm"
    dtype: str = "auto"  # bfloat16 only where the hardware has it natively (openie.engines.hardware)
    cache: str | None = None  # a SQLite cache path (relative to the config file)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RetrieveAllConfig:
    name: str = "retrieveall"
    description: str = ""
    base_model: str = "gemma-3-270m"
    output: str = "../results/retrieveall"
    adapter_prefix: str = "retrieveall"
    modes: list[str] = field(default_factory=lambda: ["shared", "routed", "oracle"])
    data: DataSection = field(default_factory=DataSection)
    representation: RepresentationSection = field(default_factory=RepresentationSection)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    training: AdapterTrainingConfig = field(default_factory=AdapterTrainingConfig)
    routing: RoutingSection = field(default_factory=RoutingSection)
    inference: InferenceSection = field(default_factory=InferenceSection)
    engine: EngineSection = field(default_factory=EngineSection)
    config_file: str | None = field(default=None, metadata={"runtime": True})

    @property
    def corpora(self) -> dict[str, str]:
        return {**LANGUAGE_CORPORA, **self.data.corpora}

    def adapter_keys(self, modes: Sequence[str] | None = None) -> list[str]:
        """The adapters (languages, ``shared``) that ``modes`` (default: the config's) send requests to:
        what a run trains and what a finished run must hold."""
        langs = list(self.data.languages)
        keys: list[str] = []
        for mode in modes if modes is not None else self.modes:
            keys += [SHARED] if mode == "shared" else \
                [*langs, *([SHARED] if mode == "routed" and self.routing.fallback == SHARED else [])]
        return [k for k in [*langs, SHARED] if k in keys]

    @property
    def needs_shared(self) -> bool:
        return SHARED in self.adapter_keys()

    @property
    def representation_model(self) -> str:
        r = self.representation
        return r.model or (self.base_model if r.kind == "llm" else "minilm")

    @classmethod
    def load(cls, path: str | Path) -> RetrieveAllConfig:
        """Read and check a config; every error names the file, the line and the key."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        try:
            node = yaml.compose(text)
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"not valid YAML: {err}", file=path) from None
        ctx = ConfigContext(path, yaml_key_lines(node) if node is not None else {})
        if not isinstance(data, dict):
            raise ctx.error((), f"expected a mapping at the top level, got {type(data).__name__}")
        data = dict(data)
        checked: dict[str, Any] = {}
        for key, section in (("augmentation", AugmentationConfig), ("training", AdapterTrainingConfig)):
            if key in data:
                try:
                    checked[key] = build(section, data.pop(key), (key,), ctx)
                except RetrieveAllError as err:
                    raise ctx.error((key,), str(err)) from None
        cfg = build(cls, data, (), ctx)
        for key, value in checked.items():
            setattr(cfg, key, value)
        cfg.config_file = str(path.resolve())
        check_config(cfg, ctx)
        base = path.resolve().parent
        cfg.output = absolute_path(cfg.output, base)
        if cfg.engine.cache:
            cfg.engine.cache = absolute_path(cfg.engine.cache, base)
        if cfg.data.data_root:
            cfg.data.data_root = absolute_path(cfg.data.data_root, base)
        for section, key in ((cfg, "base_model"), (cfg.representation, "model")):
            value = getattr(section, key)
            if value and not Path(value).is_absolute() and (base / value).exists():
                setattr(section, key, str((base / value).resolve()))
        return cfg


def check_config(cfg: RetrieveAllConfig, ctx: ConfigContext) -> None:
    """What can be known wrong before any corpus is read or model loaded."""
    from openie.datasets import get_dataset
    from openie.engines import BACKENDS
    from openie.errors import UnknownNameError
    from prompts.registry import default_registry

    def choice(path: tuple[str, ...], value: Any, choices: Sequence[Any], what: str) -> None:
        if value not in choices:
            raise ctx.error(path, f"unknown {what} {value!r}; choose one of {', '.join(map(str, choices))}")

    d = cfg.data
    if not d.languages:
        raise ctx.error(("data", "languages"), "name at least one language")
    if len(set(d.languages)) != len(d.languages):
        raise ctx.error(("data", "languages"), f"languages repeat: {d.languages}")
    for i, lang in enumerate(d.languages):
        if lang == SHARED:
            raise ctx.error(("data", "languages", f"[{i}]"), f"{SHARED!r} names the shared adapter, not a language")
        if lang not in cfg.corpora:
            raise ctx.error(("data", "languages", f"[{i}]"), f"no corpus for language {lang!r}; known: "
                            f"{', '.join(sorted(cfg.corpora))} (add one under data.corpora)")
        try:
            spec = get_dataset(cfg.corpora[lang])
        except UnknownNameError as err:
            raise ctx.error(("data", "corpora", lang) if lang in d.corpora else ("data", "languages", f"[{i}]"),
                            str(err)) from None
        if "dev" not in spec.splits:
            raise ctx.error(("data", "languages", f"[{i}]"), f"corpus {spec.name!r} has no dev split")
    if d.n_train is not None and d.n_train < 3:
        raise ctx.error(("data", "n_train"), f"need at least 3 training sentences per language (the dynamic "
                        f"threshold needs 3 candidates), got {d.n_train}")
    if d.n_dev is not None and d.n_dev < 1:
        raise ctx.error(("data", "n_dev"), f"must be >= 1, got {d.n_dev}")
    if not 0.0 < d.heldout_fraction < 1.0:
        raise ctx.error(("data", "heldout_fraction"), f"must be between 0 and 1 (exclusive), got {d.heldout_fraction}")
    choice(("representation", "kind"), cfg.representation.kind, REPRESENTATIONS, "representation")
    choice(("representation", "dtype"), cfg.representation.dtype, DTYPES, "dtype")
    if not cfg.modes:
        raise ctx.error(("modes",), f"name at least one of {', '.join(MODES)}")
    for i, mode in enumerate(cfg.modes):
        choice(("modes", f"[{i}]"), mode, MODES, "mode")
    if len(set(cfg.modes)) != len(cfg.modes):
        raise ctx.error(("modes",), f"modes repeat: {cfg.modes}")
    r = cfg.routing
    if r.k < 1:
        raise ctx.error(("routing", "k"), f"must be >= 1, got {r.k}")
    if not 0.0 <= r.min_confidence <= 1.0:
        raise ctx.error(("routing", "min_confidence"), f"must be in [0, 1], got {r.min_confidence}")
    if r.fallback is not None:
        choice(("routing", "fallback"), r.fallback, [SHARED, *d.languages], "fallback adapter")
    inf = cfg.inference
    try:
        template = default_registry().get(inf.template)
    except UnknownNameError as err:
        raise ctx.error(("inference", "template"), str(err)) from None
    if template.task != "ner":
        raise ctx.error(("inference", "template"), f"template {inf.template!r} is for task {template.task!r}, not ner")
    for key in ("max_tokens", "batch_size"):
        if getattr(inf, key) < 1:
            raise ctx.error(("inference", key), f"must be >= 1, got {getattr(inf, key)}")
    choice(("engine", "backend"), cfg.engine.backend, BACKENDS, "engine backend")
    choice(("engine", "dtype"), cfg.engine.dtype, DTYPES, "dtype")
    choice(("training", "schedule"), cfg.training.schedule, ("constant", "linear"), "schedule")
    choice(("training", "dtype"), cfg.training.dtype, DTYPES, "dtype")
    if cfg.training.shared_max_steps is not None and cfg.training.shared_max_steps < 1:
        raise ctx.error(("training", "shared_max_steps"), f"must be >= 1 or null, got {cfg.training.shared_max_steps}")
    if not cfg.adapter_prefix or not cfg.adapter_prefix.replace("-", "").replace("_", "").isalnum():
        raise ctx.error(("adapter_prefix",), f"use letters, digits, '-' and '_' only, got {cfg.adapter_prefix!r}")


# ---------------------------------------------------------------------------------------------
# bookkeeping
# ---------------------------------------------------------------------------------------------


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


class _Results:
    """``results.json`` held in memory and rewritten (with ``report.md``) after every change."""

    def __init__(self, out: Path, cfg: RetrieveAllConfig):
        self.out = out
        self.path = out / RESULTS_FILE
        old = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        self.data: dict[str, Any] = {
            "name": cfg.name, "description": cfg.description, "config_file": cfg.config_file,
            "config": _config_dict(cfg), "stages": old.get("stages", {}), "scores": old.get("scores", {}),
            "routing": old.get("routing", {}), "timings_seconds": old.get("timings_seconds", {}),
        }

    @property
    def stages(self) -> dict[str, Any]:
        return self.data["stages"]

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        _write_json(self.path, self.data)
        (self.out / REPORT_FILE).write_text(retrieveall_markdown(self.data), encoding="utf-8")


def _config_dict(cfg: RetrieveAllConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d.pop("config_file", None)
    return d


# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------


def _representation(cfg: RetrieveAllConfig, show_progress: bool) -> Any:
    r = cfg.representation
    if r.kind == "llm":
        return make_representation("llm", model=cfg.representation_model, layer=r.layer, module=r.module,
                                   dtype=r.dtype, batch_size=r.batch_size, max_length=r.max_length,
                                   show_progress=show_progress)
    if r.kind == "sentence":
        return make_representation("sentence", model=cfg.representation_model, batch_size=r.batch_size)
    return make_representation("ngram")


def _scores(gold: Sequence[Record], preds: Sequence[Record]) -> dict[str, Any]:
    from openie.metrics import entity_scores

    s = entity_scores(gold, preds, "strict")
    return {"f1": round(s.micro.f1, 4), "precision": round(s.micro.precision, 4), "recall": round(s.micro.recall, 4),
            "gold": s.micro.support, "predicted": s.micro.predicted, "records": len(gold),
            "parse_problems": sum(len(p.meta.get("parse_problems", [])) for p in preds)}


def _routing_summary(langs: Sequence[str], gold: Sequence[Record], preds: dict[str, Record]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    right = total = 0
    for lang in langs:
        routes = [preds[r.id].meta.get("route", {}) for r in gold if r.lang == lang]
        hits = sum(rt.get("value") == lang for rt in routes)
        right, total = right + hits, total + len(routes)
        out[lang] = {"accuracy": round(hits / max(1, len(routes)), 4), "records": len(routes),
                     "routed_to": dict(Counter(str(rt.get("value")) if not rt.get("fallback") else "fallback"
                                               for rt in routes)),
                     "fallbacks": sum(bool(rt.get("fallback")) for rt in routes)}
    out["overall"] = {"accuracy": round(right / max(1, total), 4), "records": total}
    return out




def run_retrieveall_experiment(config: str | Path | RetrieveAllConfig, *, modes: Sequence[str] | None = None,
                               engine_factory: Callable[[RetrieveAllConfig, dict[str, str]], Any] | None = None,
                               show_progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the experiment of ``config``; returns what ``results.json`` holds.

    ``modes`` runs a subset of the config's modes. ``engine_factory(cfg, {adapter name: folder})``
    replaces the default engine (``create_engine`` with the config's ``engine`` section).
    """
    cfg = config if isinstance(config, RetrieveAllConfig) else RetrieveAllConfig.load(config)
    run_modes = list(modes) if modes else list(cfg.modes)
    unknown = sorted(set(run_modes) - set(MODES))
    if unknown:
        raise RetrieveAllError(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    out = Path(cfg.output)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    res = _Results(out, cfg)
    timings = res.data["timings_seconds"]
    langs = list(cfg.data.languages)

    # 1. data ----------------------------------------------------------------------------------
    t = time.perf_counter()
    data_key = _key(asdict(cfg.data), cfg.corpora, CANONICAL_LABELS)
    data: dict[str, LanguageData] = language_data(
        langs, corpora=cfg.corpora, n_train=cfg.data.n_train, n_dev=cfg.data.n_dev,
        heldout_fraction=cfg.data.heldout_fraction, seed=cfg.data.seed, data_root=cfg.data.data_root)
    res.stages["data"] = {"key": data_key, "languages": {lang: d.summary() for lang, d in data.items()}}
    timings["data"] = round(time.perf_counter() - t, 1)
    res.save()
    log("data: " + ", ".join(f"{lang} {len(d.train)} train / {len(d.dev)} dev" for lang, d in data.items()))

    from prompts.builder import PromptBuilder

    builder = PromptBuilder(cfg.inference.template, prompt_schema(descriptions=cfg.inference.descriptions))
    representation = _representation(cfg, show_progress)
    rep_key = representation.fingerprint()
    vectors = work / "vectors" / f"{cfg.representation.kind}-{rep_key}.npz"
    aug_key = _key(data_key, rep_key, asdict(cfg.augmentation), builder.version, builder.schema.to_dict())
    examples: SimilarExamples | None = None

    def get_examples() -> SimilarExamples:
        nonlocal examples
        if examples is None:
            t0 = time.perf_counter()
            loaded = representation.load(vectors)
            pool = [r for lang in langs for r in data[lang].train]
            examples = SimilarExamples(pool, representation, cfg.augmentation, show_progress=show_progress)
            representation.save(vectors)
            timings["pool_vectors"] = round(time.perf_counter() - t0, 1)
            log(f"pool vectors: {len(pool)} sentences ({loaded} cached)")
        return examples

    # 2. augmentation ----------------------------------------------------------------------------
    pair_files = {lang: work / "pairs" / f"{lang}-{aug_key}.jsonl" for lang in langs}
    aug = res.stages.get("augmentation", {})
    if aug.get("key") == aug_key and all(p.is_file() for p in pair_files.values()):
        log("augmentation: done earlier, skipped")
    else:
        t = time.perf_counter()
        ex = get_examples()
        per_lang = {}
        for lang in langs:
            got = augmented_training_pairs(ex, builder, lang, show_progress=show_progress)
            pair_files[lang].parent.mkdir(parents=True, exist_ok=True)
            _write_jsonl(pair_files[lang], [{"prompt": p, "target": tg, "selection": s.to_dict()}
                                            for (p, tg), s in zip(got.pairs, got.selections, strict=True)])
            per_lang[lang] = got.stats.to_dict()
            log(f"augmentation {lang}: {per_lang[lang]['by_demonstrations']} prompts by number of examples")
        res.stages["augmentation"] = {"key": aug_key, "representation": representation.config(),
                                      "per_language": per_lang}
        timings["augmentation"] = round(time.perf_counter() - t, 1)
        res.save()
    pairs: dict[str, list[tuple[str, str]]] = {}
    for lang in langs:
        with pair_files[lang].open(encoding="utf-8") as fh:
            pairs[lang] = [(row["prompt"], row["target"]) for row in map(json.loads, fh)]

    # 3. training --------------------------------------------------------------------------------
    from openie.adapters.registry import AdapterRegistry

    train_key = _key(aug_key, cfg.base_model, asdict(cfg.training), langs)
    adapters_dir = work / "adapters" / train_key
    registry = AdapterRegistry(work / "registry")
    wanted = cfg.adapter_keys()
    trained = res.stages.setdefault("training", {})
    union = [p for lang in langs for p in pairs[lang]]

    def finished(key: str) -> bool:
        entry = trained.get(key, {})
        return entry.get("key") == train_key and (Path(entry.get("path", "")) / "adapter_config.json").is_file()

    def record_training(key: str, result: Any) -> None:
        data_pairs = union if key == SHARED else pairs[key]
        trained[key] = {"key": train_key, "name": adapter_name(cfg.adapter_prefix, key), "path": str(result.path),
                        "languages": langs if key == SHARED else [key], "pairs": len(data_pairs),
                        "pairs_sha256": pairs_sha256(data_pairs), "steps": result.steps,
                        "final_loss": round(float(result.final_loss), 4), "seconds": round(result.seconds, 1),
                        "resumed_from": result.resumed_from,
                        "first_losses": [round(x, 4) for x in result.losses[:5]],
                        "last_losses": [round(x, 4) for x in result.losses[-5:]]}
        timings[f"train:{key}"] = round(result.seconds, 1)
        res.save()
        log(f"adapter {trained[key]['name']}: {result.steps} steps, final loss {result.final_loss:.4f}")

    done = {k for k in wanted if finished(k)}
    if done:
        log(f"training: {', '.join(sorted(done))} done earlier, skipped")
    if set(wanted) - done:
        train_language_pairs = {lang: pairs[lang] for lang in langs}
        from openie.methods.retrieveall.pipeline import train_language_adapters

        train_language_adapters(cfg.base_model, train_language_pairs, adapters_dir, registry, config=cfg.training,
                                shared=cfg.needs_shared, prefix=cfg.adapter_prefix,
                                skip=done | ({*langs} - set(wanted)),
                                progress=show_progress, on_trained=record_training)
    adapter_paths = {trained[k]["name"]: trained[k]["path"] for k in wanted}
    lang_adapters = {lang: adapter_name(cfg.adapter_prefix, lang) for lang in langs}
    shared_name = adapter_name(cfg.adapter_prefix, SHARED) if cfg.needs_shared else None

    # 4. evaluation ------------------------------------------------------------------------------
    gold = [r for lang in langs for r in data[lang].dev]
    stream = list(gold)
    random.Random(cfg.inference.shuffle_seed).shuffle(stream)
    stream = [r.without_annotations() for r in stream]
    adapters_key = {k: trained[k]["pairs_sha256"] + str(trained[k]["steps"]) for k in wanted}
    evals = res.stages.setdefault("evaluation", {})
    engine = None
    engine_dtype = resolve_dtype(cfg.engine.dtype, str(cfg.engine.options.get("device", "auto"))).dtype
    try:
        for mode in run_modes:
            eval_key = _key(train_key, adapters_key, asdict(cfg.inference), cfg.engine.backend, engine_dtype,
                            asdict(cfg.routing) if mode == "routed" else None, mode)
            if evals.get(mode, {}).get("key") == eval_key and mode in res.data["scores"]:
                log(f"evaluation {mode}: done earlier, skipped")
                continue
            t = time.perf_counter()
            res.data["scores"].pop(mode, None)  # a stale figure must not outlive a changed setting
            if mode == "routed":
                res.data["routing"] = {}
            path = work / "predictions" / f"{mode}-{eval_key}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            preds = read_predictions(path)
            todo = [r for r in stream if r.id not in preds]
            run_stats: dict[str, Any] = {}
            if todo:
                if engine is None:
                    engine = (engine_factory or _default_engine)(cfg, adapter_paths)
                ex = get_examples()
                router = None
                if mode == "routed":
                    fallback = shared_name if cfg.routing.fallback == SHARED else \
                        lang_adapters.get(cfg.routing.fallback) if cfg.routing.fallback else None
                    router = build_router(ex, lang_adapters, k=cfg.routing.k, min_confidence=cfg.routing.min_confidence,
                                          fallback=fallback, weighted=cfg.routing.weighted)
                extractor = RetrieveAllExtractor(engine, builder, ex, lang_adapters, mode=mode,
                                                 shared_adapter=shared_name, router=router,
                                                 max_tokens=cfg.inference.max_tokens,
                                                 batch_size=cfg.inference.batch_size,
                                                 constrained=cfg.inference.constrained, show_progress=show_progress)
                with path.open("a", encoding="utf-8") as fh:
                    batch: list[Record] = []
                    for pred in extractor.extract(todo, total=len(todo)):
                        batch.append(pred)
                        if len(batch) == cfg.inference.batch_size:
                            fh.writelines(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in batch)
                            fh.flush()
                            batch = []
                    fh.writelines(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in batch)
                representation.save(vectors)
                preds = read_predictions(path)
                st = extractor.stats
                run_stats = {"records": st.records, "prompt_tokens": st.prompt_tokens,
                             "completion_tokens": st.completion_tokens, "parse_problems": st.parse_problems}
            scores = {lang: _scores([r for r in gold if r.lang == lang],
                                    [preds[r.id] for r in gold if r.lang == lang]) for lang in langs}
            scores["mean_f1"] = round(sum(scores[lang]["f1"] for lang in langs) / len(langs), 4)
            res.data["scores"][mode] = scores
            if mode == "routed":
                res.data["routing"] = _routing_summary(langs, gold, preds)
            evals[mode] = {"key": eval_key, "predictions": str(path), "records": len(preds),
                           "demonstrations": dict(Counter(str(len(p.meta.get("demonstrations", {}).get("picks", [])))
                                                          for p in preds.values())),
                           "adapters": dict(Counter(str(p.meta.get("adapter")) for p in preds.values())),
                           "this_run": run_stats}
            timings[f"evaluate:{mode}"] = round(time.perf_counter() - t, 1)
            res.save()
            log(f"evaluation {mode}: mean strict F1 {scores['mean_f1']:.4f} ("
                + ", ".join(f"{lang} {scores[lang]['f1']:.4f}" for lang in langs) + ")")
    finally:
        if engine is not None:
            from openie.engines import close_engine

            close_engine(engine)
    return res.data


def trained_adapters(cfg: RetrieveAllConfig, mode: str = "routed"
                     ) -> tuple[dict[str, str], dict[str, str], str | None]:
    """(adapter name -> folder, language -> adapter name, shared adapter name) of a finished run;
    refuses when an adapter that ``mode`` sends requests to was not trained."""
    results = Path(cfg.output) / "results.json"
    trained = json.loads(results.read_text(encoding="utf-8")).get("stages", {}).get("training", {}) \
        if results.is_file() else {}
    langs = list(cfg.data.languages)
    missing = [k for k in cfg.adapter_keys([mode]) if k not in trained]
    if missing:
        raise RetrieveAllError(f"{cfg.config_file}: mode {mode!r} needs the adapter(s) {missing}, not trained under "
                               f"{cfg.output}; run openie retrieveall experiment first (with that mode in modes)")
    paths = {trained[k]["name"]: trained[k]["path"] for k in [*langs, SHARED] if k in trained}
    shared = trained[SHARED]["name"] if SHARED in trained else None
    return paths, {lang: adapter_name(cfg.adapter_prefix, lang) for lang in langs}, shared


def build_extractor(config: str | Path | RetrieveAllConfig, engine: Any, mode: str = "routed", *,
                    show_progress: bool = False) -> RetrieveAllExtractor:
    """The extractor of a finished run (its pools, representation, adapters and routing) on ``engine``,
    which must hold :func:`trained_adapters`; what ``openie extract --method retrieveall`` runs."""
    from prompts.builder import PromptBuilder

    cfg = config if isinstance(config, RetrieveAllConfig) else RetrieveAllConfig.load(config)
    _, lang_adapters, shared = trained_adapters(cfg, mode)
    langs = list(cfg.data.languages)
    data = language_data(langs, corpora=cfg.corpora, n_train=cfg.data.n_train, n_dev=cfg.data.n_dev,
                         heldout_fraction=cfg.data.heldout_fraction, seed=cfg.data.seed, data_root=cfg.data.data_root)
    builder = PromptBuilder(cfg.inference.template, prompt_schema(descriptions=cfg.inference.descriptions))
    representation = _representation(cfg, show_progress)
    representation.load(Path(cfg.output) / "work" / "vectors" / f"{cfg.representation.kind}-{representation.fingerprint()}.npz")
    examples = SimilarExamples([r for lang in langs for r in data[lang].train], representation, cfg.augmentation,
                               show_progress=show_progress)
    router = None
    if mode == "routed":
        fallback = shared if cfg.routing.fallback == SHARED else \
            lang_adapters.get(cfg.routing.fallback) if cfg.routing.fallback else None
        router = build_router(examples, lang_adapters, k=cfg.routing.k, min_confidence=cfg.routing.min_confidence,
                              fallback=fallback, weighted=cfg.routing.weighted)
    return RetrieveAllExtractor(engine, builder, examples, lang_adapters, mode=mode, shared_adapter=shared,
                                router=router, max_tokens=cfg.inference.max_tokens, batch_size=cfg.inference.batch_size,
                                constrained=cfg.inference.constrained, show_progress=show_progress)


def _default_engine(cfg: RetrieveAllConfig, adapters: dict[str, str]) -> Any:
    """``create_engine`` with the config's backend, dtype and options; vLLM gets a LoRA slot per adapter
    (a mixed batch can hold every language's adapter and the fallback at once)."""
    from openie.engines import create_engine, vllm_available

    options = dict(cfg.engine.options)
    backend = cfg.engine.backend
    if backend == "vllm" or (backend == "auto" and vllm_available()):
        options.setdefault("max_loras", len(adapters))
    dtype = resolve_dtype(cfg.engine.dtype, str(options.get("device", "auto"))).dtype
    return create_engine(backend, cfg.base_model, adapters=adapters, cache=cfg.engine.cache, dtype=dtype, **options)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

_MODE_TITLES = {"shared": "shared adapter (all languages)", "routed": "routed per-language adapters",
                "oracle": "oracle (true language's adapter)"}


def retrieveall_markdown(results: dict[str, Any]) -> str:
    """The report: strict F1 per language and mode, routing accuracy, the augmentation and training that led there."""
    cfg = results["config"]
    langs = cfg["data"]["languages"]
    stages = results.get("stages", {})
    lines = [f"# {results['name']}: per-language LoRA adapters with routing vs one shared adapter", ""]
    if results.get("description"):
        lines += [results["description"].strip(), ""]
    rep = cfg["representation"]
    rep_text = f"`{rep['kind']}`" + (f" (layer {rep['layer']}, `{rep['module']}`)" if rep["kind"] == "llm" else "")
    lines += [f"Base model `{cfg['base_model']}`; template `{cfg['inference']['template']}`; representation "
              f"{rep_text}. Strict entity F1, micro within a language; `mean` is the unweighted mean over "
              "languages. Each mode sees the same dev sentences, all languages mixed in every batch.", "",
              "| mode | " + " | ".join(langs) + " | mean |", "|---|" + "---:|" * (len(langs) + 1)]
    for mode in cfg["modes"]:
        s = results.get("scores", {}).get(mode)
        if s is None:
            lines.append(f"| {_MODE_TITLES.get(mode, mode)} | " + " | ".join("…" for _ in langs) + " | … |")
        else:
            lines.append(f"| {_MODE_TITLES.get(mode, mode)} | " + " | ".join(f"{s[lang]['f1']:.3f}" for lang in langs)
                         + f" | {s['mean_f1']:.3f} |")
    routing = results.get("routing") or {}
    if routing:
        lines += ["", f"## Routing (k = {cfg['routing']['k']}, min confidence {cfg['routing']['min_confidence']}, "
                      f"fallback `{cfg['routing']['fallback']}`)", "",
                  "| language | accuracy | routed to | fallbacks |", "|---|---:|---|---:|"]
        for lang in langs:
            r = routing.get(lang, {})
            to = ", ".join(f"{k} {v}" for k, v in sorted(r.get("routed_to", {}).items()))
            lines.append(f"| {lang} | {r.get('accuracy', 0):.3f} | {to} | {r.get('fallbacks', 0)} |")
        lines.append(f"| all | {routing.get('overall', {}).get('accuracy', 0):.3f} | | |")
    aug = stages.get("augmentation", {}).get("per_language", {})
    if aug:
        lines += ["", f"## Training prompts (threshold: mean + {cfg['augmentation']['n_std']} std of each prompt's "
                      "candidate similarities)", "",
                  "| language | prompts | 0 / 1 / 2 examples | context kept | entity kept | mean context threshold "
                  "| mean entity threshold |", "|---|---:|---|---:|---:|---:|---:|"]
        for lang in langs:
            a = aug.get(lang)
            if a is None:
                continue
            by = a["by_demonstrations"]
            ct, et = a.get("context_threshold") or {}, a.get("entity_threshold") or {}
            lines.append(f"| {lang} | {a['prompts']} | {by.get('0', 0)} / {by.get('1', 0)} / {by.get('2', 0)} | "
                         f"{a['context_kept']} | {a['entity_kept']} | {ct.get('mean', '')} | {et.get('mean', '')} |")
    train = stages.get("training", {})
    if train:
        lines += ["", f"## Adapters (LoRA rank {cfg['training']['rank']}, lr {cfg['training']['lr']}, "
                      f"batch {cfg['training']['batch_size']})", "",
                  "| adapter | pairs | steps | final loss | seconds |", "|---|---:|---:|---:|---:|"]
        for t in train.values():
            lines.append(f"| {t['name']} | {t['pairs']} | {t['steps']} | {t['final_loss']} | {t['seconds']} |")
    data = stages.get("data", {}).get("languages", {})
    if data:
        lines += ["", "## Data", "", "| language | train | dev | train from | dev from |", "|---|---:|---:|---|---|"]
        for lang in langs:
            d = data.get(lang)
            if d:
                lines.append(f"| {lang} | {d['train']} | {d['dev']} | {d['train_source']} | {d['dev_source']} |")
    if results.get("timings_seconds"):
        lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in results["timings_seconds"].items())]
    lines.append("")
    return "\n".join(lines)


__all__ = ["RetrieveAllConfig", "check_config", "retrieveall_markdown", "run_retrieveall_experiment"]
