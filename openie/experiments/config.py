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
import difflib
import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from openie.engines.hardware import DTYPES
from openie.errors import OpenIEError

TASKS = ("ner", "re", "ee")  # ee: method dspy only (no template extracts whole events)
METHODS = ("icl", "el4ner", "dspy")  # wired here; registered methods (gliner, plugins) come from the registry
STRATEGIES = ("none", "random", "bm25", "bm25s", "dense", "entity_knn", "ruie", "saved")
DEFAULT_SEEDS = (0,)
# Keys that describe a run but do not change its outputs: left out of the config hash.
_NOT_HASHED = ("name", "description", "cache", "data_root", "grid", "cell")


class ConfigError(OpenIEError, ValueError):
    """An invalid experiment config; names the file, line and dotted key path of the problem."""

    def __init__(self, message: str, path: str = "", file: str | Path | None = None, line: int | None = None,
                 cell: str = ""):
        self.reason, self.key, self.file, self.line, self.cell = message, path, file, line, cell
        where = ", ".join(x for x in (str(file) if file else "", f"line {line}" if line else "") if x)
        parts = [where, f"in grid cell {cell}" if cell else "", path]
        super().__init__(": ".join([p for p in parts if p] + [message]))


# ---------------------------------------------------------------------------------------------
# the dataclasses
# ---------------------------------------------------------------------------------------------


@dataclass
class MethodConfig:
    """``icl``: in-context extraction parameters for :class:`openie.methods.icl.InContextExtractor`.
    ``gliner``: ``options`` for :class:`openie.methods.gliner.GLiNERExtractor` (``model`` a GLiNER
    checkpoint, ``threshold``, ``labels`` name|description, ``nested``); no engine is started.
    ``baner``: ``options`` for :class:`openie.methods.baner.BANERExtractor` (``support`` NAME:SPLIT
    for prototype typing, ``k``, ``seed``, ``descriptions``, ``constrained``); the engine's
    ``adapter`` is the span detector, the template a markers one (``ner.baner.v1``).
    ``el4ner``: ``options`` for :class:`openie.methods.el4ner.EL4NERExtractor` (the stage switches of
    :class:`~openie.methods.el4ner.EL4NERConfig`, ``members``, ``pool``, ``pool_size``); members on
    other models get engines of their own, built with this config's engine settings.
    ``dspy``: ``options`` for :func:`openie.agent.options.from_options` (``program`` predict |
    chain_of_thought | agent, ``tools``, ``gliner``, ``ner_retriever``, ``retriever``, ``pool``,
    ``knn_k``, ``max_iters``, ``dspy_adapter``, ``compiled``, ``max_tokens``): a DSPy program on
    the cell's engine and adapter (cached like any engine call); ``template`` is not used, it
    picks its own demonstrations (``knn_k``), the pool defaults to the dataset's train split."""

    name: str = "icl"
    template: str = "ner.ruie.v1"
    max_tokens: int = 128
    batch_size: int = 32
    constrained: bool = True
    max_prompt_tokens: int | None = None  # drop the least relevant demonstrations until a prompt fits
    options: dict[str, Any] = field(default_factory=dict)  # gliner: model, threshold, labels, nested, ...
    label: str | None = None  # a name for reports and cell folders (a grid row of methods); changes no output


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
        if self.method.name in METHODS or _registered(self.method.name).needs_engine:  # else: no engine, no dtype
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
        from prompts.registry import default_registry

        payload = {"config": self.config_hash(),
                   "template": None if self.method.name == "dspy" else default_registry().get(self.method.template).version,
                   "schema": self.load_schema().to_dict(),
                   "adapters": {n: _adapter_hash(p) for n, p in sorted(self.engine.adapters.items())}}
        if self.method.name not in METHODS:  # a registered method: which version ran, and what its options name
            reg = _registered(self.method.name)
            payload["method_version"] = reg.key
            if reg.fingerprint is not None:
                payload.update(reg.fingerprint(reg.parse_options(self.method.options)))
        if self.method.name == "el4ner":  # its stage templates and its members' adapter files
            from openie.methods.el4ner import member_specs, split_options

            stages, _ = split_options(self.method.options)
            payload["el4ner_templates"] = [default_registry().get(t).version for t in
                                           (stages.spans_template, stages.type_template, stages.verify_template)]
            payload["member_adapters"] = {s.name: _adapter_hash(s.adapter_path) for s in member_specs(
                self.method.options.get("members"), model=self.engine.model) if s.adapter_path}
        if self.method.name == "dspy":  # DSPy's version, compiled program, GLiNER, NER Retriever, saved retriever
            from openie.agent.options import check_options, option_fingerprints

            payload["dspy"] = option_fingerprints(check_options(self.method.options, task=self.task,
                                                                default_pool=method_default_pool(self)))
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
    from openie.datasets import get_dataset

    return f"{cfg.dataset}:train" if "train" in get_dataset(cfg.dataset).splits else None


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None and v != {}}
    return value


def _adapter_hash(path: str) -> str:
    from openie.engines.base import adapter_content_hash

    try:
        return adapter_content_hash(path)
    except Exception:  # noqa: BLE001 - a missing adapter fails when the engine starts, with its own message
        return str(path)


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
        model = method["options"].get("model")
        if isinstance(model, str) and _is_local_model(model):
            method["options"] = {**method["options"], "model": fn(model)}
        members = method["options"].get("members")
        if isinstance(members, list):  # el4ner: members' local models and adapter folders
            method["options"] = {**method["options"], "members": [
                {**m, **{k: fn(m[k]) for k in ("model", "adapter_path")
                         if isinstance(m.get(k), str) and (k == "adapter_path" or _is_local_model(m[k]))}}
                if isinstance(m, dict) else m for m in members]}
        pool = method["options"].get("pool")
        if isinstance(pool, str) and _is_file_pool(pool):
            method["options"] = {**method["options"], "pool": fn(pool)}
        elif isinstance(pool, list):
            method["options"] = {**method["options"], "pool": [fn(p) if isinstance(p, str) and _is_file_pool(p) else p
                                                               for p in pool]}
        method["options"] = map_dspy_paths(method["options"], fn)
    demos = d.get("demonstrations")
    if isinstance(demos, dict):
        if isinstance(demos.get("pool"), str) and _is_file_pool(demos["pool"]):
            demos["pool"] = fn(demos["pool"])
        elif isinstance(demos.get("pool"), list):
            demos["pool"] = [fn(p) if isinstance(p, str) and _is_file_pool(p) else p for p in demos["pool"]]
        for key in ("path", "rerank"):
            if isinstance(demos.get(key), str):
                demos[key] = fn(demos[key])


def map_dspy_paths(options: Mapping[str, Any], fn, *, local=_is_local_model, pools: bool = False) -> dict[str, Any]:
    """Method dspy's folders: a ``local`` GLiNER checkpoint, the NER Retriever, a compiled program,
    ``saved:PATH``, and with ``pools`` its records-file pools (``map_paths`` maps those for every method)."""
    out = dict(options)
    if pools and isinstance(out.get("pool"), str | list):
        out["pool"] = [fn(p) if isinstance(p, str) and _is_file_pool(p) else p for p in
                       ([out["pool"]] if isinstance(out["pool"], str) else out["pool"])]
    if isinstance(out.get("gliner"), str) and local(out["gliner"]):
        mapped = fn(out["gliner"])
        out["gliner"] = mapped if _is_local_model(mapped) else f"./{mapped}"  # a bare relative path reads as a hub id
    for key in ("ner_retriever", "compiled"):
        if isinstance(out.get(key), str):
            out[key] = fn(out[key])
    optimize = out.get("optimize")
    if isinstance(optimize, Mapping) and isinstance(optimize.get("train"), str | list):  # records files, as pools
        train = [optimize["train"]] if isinstance(optimize["train"], str) else optimize["train"]
        out["optimize"] = {**optimize, "train": [fn(p) if isinstance(p, str) and _is_file_pool(p) else p
                                                 for p in train]}
    if isinstance(out.get("retriever"), str) and out["retriever"].startswith("saved:"):
        out["retriever"] = "saved:" + fn(out["retriever"][len("saved:"):])
    return out


def _is_file_pool(pool: str) -> bool:
    """``NAME:SPLIT`` of a registered dataset, or else a records file path."""
    from openie.datasets import list_datasets

    name, sep, _ = pool.partition(":")
    return not (sep and name in list_datasets())


def absolute_path(p: str, base: Path) -> str:
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else (base / q).resolve())


def _relpath(p: str, base: Path) -> str:
    """Relative when both lie inside the working tree (a results folder moves with the repository);
    absolute otherwise (a relative path into /tmp from a committed file would point nowhere)."""
    cwd = Path.cwd().resolve()
    target, base = Path(p).resolve(), base.resolve()
    if not (target.is_relative_to(cwd) and base.is_relative_to(cwd)):
        return p
    return os.path.relpath(target, base)


# ---------------------------------------------------------------------------------------------
# YAML with line numbers
# ---------------------------------------------------------------------------------------------


Lines = dict[tuple[str, ...], int]


def yaml_key_lines(node: yaml.Node, prefix: tuple[str, ...] = (), out: Lines | None = None) -> Lines:
    """1-based line of every key path (and sequence item ``[i]``) in a composed YAML document."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            out[path] = key_node.start_mark.line + 1
            yaml_key_lines(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = (*prefix, f"[{i}]")
            out[path] = item.start_mark.line + 1
            yaml_key_lines(item, path, out)
    return out


class ConfigContext:
    """Where errors point: the file, the line of each key path, and the grid cell being checked.

    ``overrides`` send every path under a grid key to the line of the grid value that set it.
    """

    def __init__(self, file: Path | None, lines: Lines | None = None, cell: str = "",
                 overrides: Lines | None = None):
        self.file, self.lines, self.cell, self.overrides = file, lines or {}, cell, overrides or {}

    def line(self, path: tuple[str, ...]) -> int | None:
        for prefix, line in self.overrides.items():
            if path[:len(prefix)] == prefix:
                return line
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def error(self, path: tuple[str, ...], message: str, line_path: tuple[str, ...] | None = None) -> ConfigError:
        return ConfigError(message, dotted(path), self.file, self.line(line_path or path), self.cell)


def dotted(path: tuple[str, ...]) -> str:
    out = ""
    for p in path:
        out += p if p.startswith("[") or not out else f".{p}"
    return out


# ---------------------------------------------------------------------------------------------
# typed construction
# ---------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, path: tuple[str, ...], ctx: ConfigContext) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, path, ctx)
            except ConfigError as err:
                errors.append(err)
        # a value of the right shape but wrong contents: report that error, not "expected X or Y"
        deep = [e for e in errors if e.key != dotted(path)]
        if deep:
            raise deep[0]
        raise ctx.error(path, f"expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path, ctx)
    if origin is list:
        if not isinstance(value, list):
            raise ctx.error(path, f"expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, (*path, f"[{i}]"), ctx) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ctx.error(path, f"expected a mapping, got {value!r}")
        _, item = typing.get_args(tp)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ctx.error((*path, str(k)), f"keys must be strings, got {k!r}")
            out[k] = _convert(item, v, (*path, k), ctx)
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise ctx.error(path, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.error(path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ctx.error(path, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ctx.error(path, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"config field type {tp!r} is not supported")  # a bug in this module


def known_keys(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if not f.metadata.get("runtime")]


def unknown_key_error(cls: type, key: str, path: tuple[str, ...], ctx: ConfigContext) -> ConfigError:
    known = known_keys(cls)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ctx.error((*path, key), f"unknown key {key!r}{hint}; known keys here: {', '.join(known)}")


def build(cls: type, data: Any, path: tuple[str, ...], ctx: ConfigContext) -> Any:
    if cls is DemonstrationsConfig and isinstance(data, str):
        if data != "none":
            raise ctx.error(path, f"expected 'none' or a mapping, got {data!r}")
        data = {"strategy": "none"}
    if not isinstance(data, Mapping):
        raise ctx.error(path, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in known_keys(cls):
            raise unknown_key_error(cls, str(key), path, ctx)
        kwargs[key] = _convert(hints[key], value, (*path, key), ctx)
    missing = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               and f.name not in kwargs]
    if missing:
        raise ctx.error(path, f"missing required key(s): {', '.join(missing)}")
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# semantic checks
# ---------------------------------------------------------------------------------------------


def _choice(value: Any, choices: tuple[str, ...] | list[str], path: tuple[str, ...], ctx: ConfigContext, what: str) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ctx.error(path, f"unknown {what} {value!r}{hint}; choose one of {', '.join(choices)}")


def check_config(cfg: ExperimentConfig, ctx: ConfigContext) -> None:
    """Everything that can be known wrong without loading a model or reading the corpus."""
    from openie.datasets import get_dataset, list_datasets
    from openie.engines import BACKENDS
    from openie.errors import SchemaError
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
    if m.name not in METHODS:  # a registered method (openie.methods.registry): its options are its dataclass
        from openie.methods.registry import BUILTIN_METHODS, MethodError, get_method, registered_methods

        try:
            reg = get_method(m.name)
        except MethodError:
            _choice(m.name, [n for n in registered_methods() if n in METHODS or n not in BUILTIN_METHODS],
                    ("method", "name"), ctx, "method")
            raise
        try:
            reg.parse_options(m.options, "method.options")
        except MethodError as err:
            raise ctx.error(tuple(err.key.split(".")) if err.key else ("method", "options"), err.reason) from None
        if not reg.takes_demonstrations and cfg.demonstrations.k:
            raise ctx.error(("demonstrations", "k"), f"method {m.name} takes no demonstrations: use k: 0 (or none)")
        if reg.tasks is not None and cfg.task not in reg.tasks:
            raise ctx.error(("task",), f"method {m.name} extracts {', '.join(reg.tasks)} only, got {cfg.task!r}")
        if (reg.template_format and m.template in default_registry().names()
                and default_registry().get(m.template).format != reg.template_format):
            raise ctx.error(("method", "template"), f"method {m.name} needs a {reg.template_format} template "
                                                    f"({reg.template}), got {m.template!r}")
    else:
        _choice(m.name, METHODS, ("method", "name"), ctx, "method")
    registry = default_registry()
    _choice(m.template, registry.names(), ("method", "template"), ctx, "template")
    template_task = registry.get(m.template).task
    writes_own_prompts = m.name == "dspy" or (m.name not in METHODS and not _registered(m.name).uses_template)
    if template_task != cfg.task and not writes_own_prompts:
        raise ctx.error(("method", "template"), f"template {m.template!r} is for task {template_task!r}, "
                                                f"but task is {cfg.task!r}")
    for key in ("max_tokens", "batch_size", "max_prompt_tokens"):
        if getattr(m, key) is not None and getattr(m, key) < 1:
            raise ctx.error(("method", key), f"must be at least 1, got {getattr(m, key)}")
    if m.name == "el4ner":
        from openie.methods.el4ner import EL4NERError, member_specs, split_options

        try:
            split_options(m.options)
            specs = member_specs(m.options.get("members"), model=cfg.engine.model, adapter=cfg.engine.adapter)
        except EL4NERError as err:
            raise ctx.error(("method", "options"), str(err).removeprefix("method options: ")) from None
        if cfg.task != "ner":
            raise ctx.error(("task",), f"method el4ner extracts entities only (task ner), got {cfg.task!r}")
        if cfg.demonstrations.k:
            raise ctx.error(("demonstrations", "k"), "method el4ner picks its own demonstrations (method options "
                                                     "demonstrations, k, pool): use k: 0 (or none)")
        for i, spec in enumerate(specs):
            on_run_model = spec.model == cfg.engine.model and spec.backend in ("auto", cfg.engine.backend)
            if on_run_model and spec.adapter and not spec.adapter_path and spec.adapter not in cfg.engine.adapters:
                raise ctx.error(("method", "options", "members", f"[{i}]", "adapter"),
                                f"adapter {spec.adapter!r} is not one of engine.adapters; name it there or give "
                                "the member an adapter_path")
            if spec.adapter_path and not Path(spec.adapter_path).is_dir():
                raise ctx.error(("method", "options", "members", f"[{i}]", "adapter_path"),
                                f"adapter folder {spec.adapter_path} does not exist")
    elif m.name == "dspy":
        from openie.agent.options import DSPyOptionsError, check_options

        if cfg.demonstrations.k:
            raise ctx.error(("demonstrations", "k"), "method dspy picks its own demonstrations (method options "
                                                     "knn_k, retriever, pool): use k: 0 (or none)")
        try:
            check_options(m.options, task=cfg.task, default_pool=method_default_pool(cfg))
        except DSPyOptionsError as err:
            raise ctx.error(("method", "options", *(err.key.split(".") if err.key else ())), err.reason) from None
    elif m.options and m.name in METHODS:  # a registered method's options were checked above
        raise ctx.error(("method", "options"), f"method {m.name!r} takes no options")
    if m.name != "el4ner" and registry.get(m.template).format.startswith("el4ner"):
        raise ctx.error(("method", "template"), f"template {m.template!r} is a stage of method el4ner, which renders "
                                                "it itself (method options spans_template / type_template / "
                                                "verify_template); pick an extraction template")

    e = cfg.engine
    _choice(e.backend, BACKENDS, ("engine", "backend"), ctx, "engine backend")
    _choice(e.dtype, DTYPES, ("engine", "dtype"), ctx, "dtype")
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
