"""Experiment configs: one YAML file describes a grid of extraction runs, checked before any work starts.

A grid of a dozen cells can run for an hour; a typo found in the tenth cell wastes the first
nine. So the whole file is read into dataclasses, every grid cell is expanded and validated
(unknown keys at any depth, wrong types, unknown datasets, splits, templates, backends), and an
error names the file, the line (from the YAML node marks) and the dotted key path.

Example::

    name: crossner_zero_vs_4shot
    dataset: crossner_ai            # a registered corpus (openie data list)
    split: dev
    sample: 100                     # seeded sample of N records (sample_seed, default 0); or limit: N
    task: ner
    schema: dataset                 # default; or a schema file, or inline {entities: {label: description}}
    method: {name: icl, template: ner.ruie.v1, max_tokens: 64, batch_size: 16, constrained: true}
    engine: {backend: vllm, model: gemma-3-270m, dtype: bfloat16, options: {max_model_len: 2048}}
    demonstrations: {strategy: random, pool: crossner_ai:train, k: 4}   # or: none
    seeds: [0]                      # one run per seed; the seed draws the demonstrations
    cache: false                    # or a SQLite path (relative to this file), or true (default place)
    grid:                           # dotted keys -> values; the cartesian product is the set of runs
      dataset: [crossner_ai, crossner_music]
      demonstrations.k: [0, 4]

A grid value that names a whole section (``demonstrations: [none, {k: 4}]``) replaces that
section. Relative paths are relative to the config file. The runner writes each cell's fully
resolved config (grid applied, defaults filled, ``cell`` metadata added) into the cell folder, and
that file runs again as it is.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from openie.engines.hardware import DTYPES
from openie.methods.demonstrations import STRATEGIES
from openie.typed_config import (  # noqa: F401  (re-exported: the config layer's error and YAML reading)
    ConfigContext,
    ConfigError,
    Lines,
    _choice,
    absolute_path,
    build,
    dotted,
    known_keys,
    unknown_key_error,
    yaml_key_lines,
)

TASKS = ("ner", "re", "ee")  # ee: only methods that write their own prompts (no template extracts whole events)
DEFAULT_SEEDS = (0,)
# Keys that describe a run but do not change its outputs: left out of the config hash.
_NOT_HASHED = ("name", "description", "cache", "data_root", "grid", "cell")


# ---------------------------------------------------------------------------------------------
# the dataclasses
# ---------------------------------------------------------------------------------------------


@dataclass
class MethodConfig:
    """The method (a registered name, ``openie method list``), its template and budgets, and
    ``options``: the method's own, checked by its registration (:mod:`openie.methods.registry`)
    with errors naming ``method.options.KEY``. A method without an LLM engine (GLiNER) starts none."""

    name: str = "icl"
    template: str = "ner.ruie.v1"
    max_tokens: int = 128
    batch_size: int = 32
    constrained: bool = True
    max_prompt_tokens: int | None = None  # drop the least relevant demonstrations until a prompt fits
    options: dict[str, Any] = field(default_factory=dict)  # the method's options (its registration's schema)
    label: str | None = None  # a name for reports and cell folders (a grid row of methods); changes no output
    save_io: bool = False  # keep prompts, raw answers and finish reasons (predictions.jsonl.io.jsonl); changes no output


@dataclass
class EngineConfig:
    """What :func:`openie.engines.create_engine` gets; ``options`` are backend keyword arguments
    (``max_model_len``, ``cpu_threads``, ``batch_size`` ...). ``adapter`` picks one of ``adapters``
    per request; it is not part of the engine, so cells differing only in it share one engine."""

    backend: str = "auto"
    model: str = "gemma-3-270m"
    dtype: str = "auto"
    adapters: dict[str, str] = field(default_factory=dict)
    adapter: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def resolved_dtype(self) -> str:
        """``dtype`` with ``auto`` resolved for this machine (bfloat16 only where it is native).

        Hashes and engine keys use it, so a cell finished in bfloat16 on one machine is run again
        in float32 on a machine without native bfloat16, and an explicit ``bfloat16`` and an
        ``auto`` that resolves to it are the same run."""
        from openie.engines.hardware import resolve_dtype

        device = str(self.options.get("device", "auto")) if self.backend == "hf" else "auto"
        return resolve_dtype(self.dtype, device).dtype

    def engine_key(self, cache: str | None) -> str:
        """Cells with equal keys share one started engine."""
        d = dataclasses.asdict(self)
        d.pop("adapter")
        d["dtype"] = self.resolved_dtype()
        return json.dumps({**d, "cache": cache}, sort_keys=True, default=str)


@dataclass
class DemonstrationsConfig:
    """``k`` demonstrations per record from ``pool`` (``NAME:SPLIT``, a records file, or a list of
    them as one unified pool; default: the dataset's ``train`` split). ``k: 0`` is zero-shot.

    ``strategy``: ``random`` (seeded by ``seed``, default the run seed), a retriever (``bm25``,
    ``bm25s``, ``dense``, ``entity_knn``; keyword ``options`` go to it), ``ruie`` (``path``: a
    fitted RUIE work folder) or ``saved`` (``path``: a saved retriever). ``rerank``: a trained
    reward-model / cross-encoder folder reranking the first stage's top ``candidates`` (100).
    """

    strategy: str = "random"
    pool: str | list[str] | None = None
    k: int = 0
    seed: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    rerank: str | None = None
    candidates: int | None = None
    label: str | None = None  # a name for reports and cell folders; changes no output

    @staticmethod
    def from_scalar(value: str) -> dict[str, Any]:
        """``demonstrations: none`` is zero-shot."""
        if value != "none":
            raise ValueError(f"expected 'none' or a mapping, got {value!r}")
        return {"strategy": "none"}

    @property
    def pool_sources(self) -> list[str]:
        return [] if self.pool is None else [self.pool] if isinstance(self.pool, str) else list(self.pool)

    def spec(self, task: str, data_root: str | None = None):
        """The :class:`~openie.methods.demonstrations.DemonstrationSpec` the runner builds a selector from."""
        from openie.methods.demonstrations import DemonstrationSpec

        return DemonstrationSpec(self.strategy, tuple(self.pool_sources), self.k, self.seed or 0, dict(self.options),
                                 self.path, self.rerank, self.candidates, task, data_root)


@dataclass
class CellInfo:
    """Written by the runner into a cell's resolved config: where it came from and its grid values."""

    name: str = ""
    experiment: str = ""
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    dataset: str
    split: str = "dev"
    limit: int | None = None
    sample: int | None = None
    sample_seed: int = 0
    task: str = "ner"
    schema: str | dict[str, Any] = "dataset"
    method: MethodConfig = field(default_factory=MethodConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    demonstrations: DemonstrationsConfig = field(default_factory=DemonstrationsConfig)
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    cache: str | bool = False
    grid: dict[str, list[Any]] = field(default_factory=dict)
    name: str | None = None
    description: str = ""
    data_root: str | None = None
    cell: CellInfo | None = None
    # where it was read from (not a config key)
    source: Path | None = field(default=None, repr=False, compare=False, metadata={"runtime": True})

    # -- derived -----------------------------------------------------------------------------
    @property
    def seed(self) -> int:
        """The run seed of a single cell."""
        return self.seeds[0]

    @property
    def experiment_name(self) -> str:
        if self.cell is not None and self.cell.experiment:
            return self.cell.experiment
        if self.name:
            return self.name
        return self.source.stem if self.source is not None else "experiment"

    @property
    def cache_path(self) -> str | None:
        if self.cache is False:
            return None
        if self.cache is True:
            from openie.models import openie_home

            return str(openie_home() / "cache" / "experiments.sqlite")
        return str(self.cache)

    def load_schema(self):
        """The :class:`~openie.schema.Schema` the prompts use."""
        from openie.datasets import dataset_schema
        from openie.schema import Schema

        if isinstance(self.schema, dict):
            return Schema.from_dict(_inline_schema(self.schema))
        if self.schema == "dataset":
            return dataset_schema(self.dataset)
        return Schema.load(self.schema)

    def to_dict(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """Plain data (YAML-ready). Paths are written relative to ``relative_to`` when given."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("runtime"):
                continue
            v = getattr(self, f.name)
            d[f.name] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else copy.deepcopy(v)
        if d["cell"] is None:
            del d["cell"]
        if not d["grid"]:
            del d["grid"]
        if relative_to is not None:
            map_paths(d, lambda p: _relpath(p, Path(relative_to)))
        return d

    def hash_payload(self) -> dict[str, Any]:
        """What the hash covers; unset keys (null, empty mapping) are left out, so a new optional
        key added to the config schema later does not change the hash of every finished cell."""
        d = self.to_dict()
        for k in _NOT_HASHED:
            d.pop(k, None)
        d["demonstrations"].pop("label", None)
        d["method"].pop("label", None)
        d["method"].pop("save_io", None)
        if _registered(self.method.name).needs_engine:  # else: no engine, no dtype
            d["engine"]["dtype"] = self.engine.resolved_dtype()
        return _without_nulls(d)

    def config_hash(self) -> str:
        """sha256 of what changes this run's outputs (name, cache, grid and paths to data left out)."""
        blob = json.dumps(self.hash_payload(), sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def fingerprint(self) -> str:
        """The config hash plus the content of what it only names: template file, schema, adapters.

        Editing a template or a dataset's label descriptions makes finished cells stale, so they
        run again, in the same folder.
        """
        from openie.engines.base import adapter_hash_or_path
        from prompts.registry import default_registry

        reg = _registered(self.method.name)
        payload = {"config": self.config_hash(),
                   "template": default_registry().get(self.method.template).version if reg.uses_template else None,
                   "schema": self.load_schema().to_dict(),
                   "adapters": {n: adapter_hash_or_path(p) for n, p in sorted(self.engine.adapters.items())}}
        payload.update(reg.fingerprint_payload(cell_options(self)))  # its version after v1, what its options name
        if self.demonstrations.k and (self.demonstrations.path or self.demonstrations.rerank):
            from openie.methods.demonstrations import spec_fingerprints

            payload["demonstration_models"] = spec_fingerprints(self.demonstrations.spec(self.task, self.data_root))
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def dump(self, path: str | Path) -> None:
        """Write the config as YAML, paths relative to the file's folder (the folder can move)."""
        path = Path(path)
        text = yaml.safe_dump(self.to_dict(relative_to=path.parent), sort_keys=False, allow_unicode=True,
                              default_flow_style=None, width=110)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)


def _registered(name: str):
    from openie.methods.registry import get_method

    return get_method(name)


def method_default_pool(cfg: ExperimentConfig) -> str | None:
    """The pool a method that picks its own demonstrations uses when none is given: the train split."""
    from openie.datasets import default_pool

    return default_pool(cfg.dataset)


def cell_setup(cfg: ExperimentConfig):
    """What the cell's method options may depend on (:class:`~openie.methods.registry.MethodSetup`)."""
    from openie.methods.registry import MethodSetup

    e = cfg.engine
    return MethodSetup(cfg.task, e.model, e.backend, e.adapter, dict(e.adapters), method_default_pool(cfg), cfg.data_root)


def cell_options(cfg: ExperimentConfig) -> Any:
    """The cell's method options, parsed by its registration."""
    return _registered(cfg.method.name).parse_options(cfg.method.options, "method.options", cell_setup(cfg))


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None and v != {}}
    return value


def _inline_schema(d: Mapping[str, Any]) -> dict[str, Any]:
    """Inline schemas may map labels to descriptions: ``{entities: {person: "a named person"}}``."""
    out = dict(d)
    for key in ("entities", "relations"):
        if isinstance(out.get(key), Mapping):
            out[key] = [{"name": n, **({"description": desc} if desc else {})} for n, desc in out[key].items()]
    return out


# ---------------------------------------------------------------------------------------------
# paths
# ---------------------------------------------------------------------------------------------


def _is_local_model(model: str) -> bool:
    return model.startswith(("./", "../", "/", "~"))


def map_paths(d: dict[str, Any], fn) -> None:
    """Apply ``fn`` to every path-valued field of a config dict (in place)."""
    if isinstance(d.get("schema"), str) and d["schema"] != "dataset":
        d["schema"] = fn(d["schema"])
    if isinstance(d.get("cache"), str):
        d["cache"] = fn(d["cache"])
    if d.get("data_root"):
        d["data_root"] = fn(d["data_root"])
    eng = d.get("engine")
    if isinstance(eng, dict):
        if isinstance(eng.get("adapters"), dict):
            eng["adapters"] = {n: fn(p) if isinstance(p, str) else p for n, p in eng["adapters"].items()}
        if isinstance(eng.get("model"), str) and _is_local_model(eng["model"]):
            eng["model"] = fn(eng["model"])
    method = d.get("method")
    if isinstance(method, dict) and isinstance(method.get("options"), dict):
        from openie.methods.registry import MethodError, get_method

        try:
            reg = get_method(str(method.get("name", "icl")))
        except MethodError:  # an unknown method is reported by the checks, with its line
            reg = None
        if reg is not None:
            method["options"] = reg.map_paths(method["options"], fn)
    demos = d.get("demonstrations")
    if isinstance(demos, dict):
        if isinstance(demos.get("pool"), str) and _is_file_pool(demos["pool"]):
            demos["pool"] = fn(demos["pool"])
        elif isinstance(demos.get("pool"), list):
            demos["pool"] = [fn(p) if isinstance(p, str) and _is_file_pool(p) else p for p in demos["pool"]]
        for key in ("path", "rerank"):
            if isinstance(demos.get(key), str):
                demos[key] = fn(demos[key])


def _is_file_pool(pool: str) -> bool:
    """``NAME:SPLIT`` of a registered dataset, or else a records file path."""
    from openie.datasets import list_datasets

    name, sep, _ = pool.partition(":")
    return not (sep and name in list_datasets())


def _relpath(p: str, base: Path) -> str:
    """Relative when both lie inside the working tree (a results folder moves with the repository);
    absolute otherwise (a relative path into /tmp from a committed file would point nowhere)."""
    cwd = Path.cwd().resolve()
    target, base = Path(p).resolve(), base.resolve()
    if not (target.is_relative_to(cwd) and base.is_relative_to(cwd)):
        return p
    return os.path.relpath(target, base)


# ---------------------------------------------------------------------------------------------
# semantic checks
# ---------------------------------------------------------------------------------------------


def check_config(cfg: ExperimentConfig, ctx: ConfigContext) -> None:
    """Everything that can be known wrong without loading a model or reading the corpus."""
    from openie.datasets import get_dataset, list_datasets
    from openie.engines import BACKENDS
    from openie.errors import SchemaError
    from prompts.formats import FORMATS
    from prompts.registry import default_registry

    _choice(cfg.dataset, list_datasets(), ("dataset",), ctx, "dataset")
    spec = get_dataset(cfg.dataset)
    _choice(cfg.split, list(spec.splits), ("split",), ctx, f"split of {cfg.dataset}")
    for key in ("limit", "sample"):
        v = getattr(cfg, key)
        if v is not None and v < 1:
            raise ctx.error((key,), f"must be at least 1, got {v}")
    _choice(cfg.task, TASKS, ("task",), ctx, "task")
    if cfg.task != "ner" and cfg.task not in spec.task.split("+"):
        kind = {"re": "relation", "ee": "event"}[cfg.task]
        raise ctx.error(("task",), f"dataset {cfg.dataset!r} has no {kind} annotations (its task is {spec.task})")

    m = cfg.method
    from openie.methods.registry import MethodError, get_method, registered_methods

    try:
        reg = get_method(m.name)
    except MethodError:
        _choice(m.name, registered_methods(), ("method", "name"), ctx, "method")
        raise
    try:
        reg.parse_options(m.options, "method.options", cell_setup(cfg))
    except MethodError as err:
        raise ctx.error(tuple(err.key.split(".")) if err.key else ("method", "options"), err.reason) from None
    if reg.demonstration_options is not None and cfg.demonstrations.k:
        pool, k = reg.demonstration_options
        raise ctx.error(("demonstrations", "k"), f"method {m.name} picks its own demonstrations (method options "
                                                 f"{pool}, {k}): use k: 0 (or none)")
    if not reg.takes_demonstrations and cfg.demonstrations.k:
        raise ctx.error(("demonstrations", "k"), f"method {m.name} takes no demonstrations: use k: 0 (or none)")
    if reg.tasks is not None and cfg.task not in reg.tasks:
        raise ctx.error(("task",), f"method {m.name} extracts {', '.join(reg.tasks)} only, got {cfg.task!r}")
    registry = default_registry()
    _choice(m.template, registry.names(), ("method", "template"), ctx, "template")
    template = registry.get(m.template)
    if reg.template_format and template.format != reg.template_format:
        raise ctx.error(("method", "template"), f"method {m.name} needs a {reg.template_format} template "
                                                f"({reg.template}), got {m.template!r}")
    if reg.uses_template and template.task != cfg.task:
        raise ctx.error(("method", "template"), f"template {m.template!r} is for task {template.task!r}, "
                                                f"but task is {cfg.task!r}")
    if reg.uses_template and template.format not in FORMATS:
        raise ctx.error(("method", "template"), f"template {m.template!r} is a stage of a method that renders it "
                                                f"itself (format {template.format}); pick an extraction template")
    for key in ("max_tokens", "batch_size", "max_prompt_tokens"):
        if getattr(m, key) is not None and getattr(m, key) < 1:
            raise ctx.error(("method", key), f"must be at least 1, got {getattr(m, key)}")

    e = cfg.engine
    _choice(e.backend, BACKENDS, ("engine", "backend"), ctx, "engine backend")
    _choice(e.dtype, DTYPES, ("engine", "dtype"), ctx, "dtype")
    if e.backend == "openai":  # an OpenAI-compatible endpoint: engine.model is its served model name
        if "api_key" in e.options:
            raise ctx.error(("engine", "options", "api_key"), "never put the key in a config (run records would hold "
                                                              "it): set api_key_env to the NAME of an environment "
                                                              "variable holding it")
        if "api_key_env" in e.options:
            from openie.engines.base import EngineError
            from openie.engines.openai_endpoint import check_api_key_env

            try:
                check_api_key_env(e.options["api_key_env"])
            except EngineError as err:
                raise ctx.error(("engine", "options", "api_key_env"), str(err)) from None
        if not isinstance(e.options.get("base_url"), str) or not e.options["base_url"]:
            raise ctx.error(("engine", "options", "base_url"), "backend openai needs the endpoint's API root, e.g. "
                                                               "base_url: http://127.0.0.1:8000/v1",
                            ("engine", "options"))
        if e.adapters or e.adapter is not None:
            raise ctx.error(("engine", "adapters" if e.adapters else "adapter"),
                            "an endpoint serves its adapters as model names: set engine.model to the adapter's "
                            "served name")
    if e.adapter is not None and e.adapter not in e.adapters:
        raise ctx.error(("engine", "adapter"), f"adapter {e.adapter!r} is not one of engine.adapters "
                                               f"({', '.join(e.adapters) or 'none given'})")
    for name, p in e.adapters.items():
        if not Path(p).is_dir():
            raise ctx.error(("engine", "adapters", name), f"adapter folder {p} does not exist")
    if "dtype" in e.options:
        raise ctx.error(("engine", "options", "dtype"), "set engine.dtype, not engine.options.dtype")

    d = cfg.demonstrations
    _choice(d.strategy, STRATEGIES, ("demonstrations", "strategy"), ctx, "demonstration strategy")
    if d.k < 0:
        raise ctx.error(("demonstrations", "k"), f"must be at least 0, got {d.k}")
    if d.strategy == "none" and d.k > 0:
        raise ctx.error(("demonstrations", "k"), f"k={d.k} needs a strategy other than 'none'")
    if d.k > 0:
        if d.strategy in ("ruie", "saved") and not d.path:
            raise ctx.error(("demonstrations", "path"), f"strategy {d.strategy!r} needs path: "
                                                        "a RUIE work folder (openie ruie fit) or a saved retriever")
        if d.path is not None and not Path(d.path).is_dir():
            hint = " (run openie ruie fit first)" if d.strategy == "ruie" else ""
            raise ctx.error(("demonstrations", "path"), f"folder {d.path} does not exist{hint}")
        if d.rerank is not None:
            if d.strategy in ("none", "random"):
                raise ctx.error(("demonstrations", "rerank"), f"rerank needs a retrieval strategy, not {d.strategy!r}")
            if not Path(d.rerank).is_dir():
                raise ctx.error(("demonstrations", "rerank"), f"reranker folder {d.rerank} does not exist")
        if d.candidates is not None and d.candidates < d.k:
            raise ctx.error(("demonstrations", "candidates"), f"must be at least k={d.k}, got {d.candidates}")
        if d.options and d.strategy not in ("bm25", "bm25s", "dense", "entity_knn", "saved"):
            raise ctx.error(("demonstrations", "options"), f"strategy {d.strategy!r} takes no options")
    for i, source in enumerate(d.pool_sources):
        where = ("demonstrations", "pool") if isinstance(d.pool, str) else ("demonstrations", "pool", f"[{i}]")
        name, sep, split = source.partition(":")
        if not _is_file_pool(source):
            _choice(split, list(get_dataset(name).splits), where, ctx, f"split of {name}")
        elif not Path(source).is_file():
            raise ctx.error(where, f"{source!r} is neither NAME:SPLIT of a registered dataset nor an existing "
                                   "records file")
    if d.pool is None and d.k > 0 and d.strategy != "saved" and "train" not in spec.splits:
        raise ctx.error(("demonstrations", "pool"), f"no pool given and dataset {cfg.dataset!r} has no train "
                                                    f"split; set demonstrations.pool to NAME:SPLIT")

    if not cfg.seeds:
        raise ctx.error(("seeds",), "needs at least one seed")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ctx.error(("seeds",), f"seeds repeat: {cfg.seeds}")

    if isinstance(cfg.schema, str) and cfg.schema != "dataset" and not Path(cfg.schema).is_file():
        raise ctx.error(("schema",), f"expected 'dataset', a schema file or an inline schema; "
                                     f"file {cfg.schema} does not exist")
    try:
        schema = cfg.load_schema()
    except SchemaError as err:
        raise ctx.error(("schema",), str(err)) from None
    if cfg.task == "ner" and not schema.entity_labels:
        raise ctx.error(("schema",), "the schema has no entity types")
    if cfg.task == "re" and not schema.relation_labels:
        raise ctx.error(("schema",), "the schema has no relation types")
    if cfg.task == "ee" and not schema.event_labels:
        raise ctx.error(("schema",), "the schema has no event types")
    if cfg.data_root is not None and not Path(cfg.data_root).is_dir():
        raise ctx.error(("data_root",), f"{cfg.data_root} is not a directory")
    if cfg.name is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", cfg.name):
        raise ctx.error(("name",), f"use letters, digits, '.', '_' and '-' only (a folder is named after it), got {cfg.name!r}")


def resolve_defaults(cfg: ExperimentConfig) -> ExperimentConfig:
    """Fill what defaults depend on: the demonstration pool and seed; zero-shot forgets its pool."""
    d = cfg.demonstrations
    if d.k == 0:
        cfg.demonstrations = DemonstrationsConfig(strategy="none", pool=None, k=0, seed=None, label="none")
    else:
        if d.pool is None and d.strategy != "saved":
            d.pool = f"{cfg.dataset}:train"
        if d.seed is None:
            d.seed = cfg.seed
    return cfg
