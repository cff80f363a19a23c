"""Grid expansion: dotted keys with lists of values -> the cartesian product of single-run configs.

``grid: {dataset: [crossner_ai, crossner_music], demonstrations.k: [0, 4]}`` makes four cells,
times the ``seeds``. The axis ``row`` sets several keys together, one labelled mapping of dotted
keys per row (``row: [{label: qwen-zero, engine.model: qwen..., demonstrations.k: 0}, ...]``): a
comparison of systems whose settings differ in more than one key, crossed with the other axes. Every cell is built and validated before anything runs; an error in a cell
points at the line of the grid value that made it. A cell is named after its grid values plus a
short hash of its resolved config (``dataset-crossner_ai__k-4__1a2b3c4d``), so changing anything
that changes outputs gives a new folder, and the same config always finds its old one.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import itertools
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import yaml

from openie.experiments.config import (
    CellInfo,
    ConfigContext,
    ConfigError,
    ExperimentConfig,
    Lines,
    absolute_path,
    build,
    check_config,
    known_keys,
    map_paths,
    resolve_defaults,
    unknown_key_error,
    yaml_key_lines,
)


def _absolutise(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths (also in grid values) become absolute against the config file's folder."""
    data = copy.deepcopy(data)
    map_paths(data, lambda p: absolute_path(p, base))
    grid = data.get("grid")
    if isinstance(grid, dict):
        for key, values in grid.items():
            if not isinstance(key, str) or not isinstance(values, list):
                continue
            for i, v in enumerate(values):
                if key == ROW_KEY and isinstance(v, dict):
                    values[i] = {sub: val if sub == "label" else _absolute_value(sub, val, base) for sub, val in v.items()}
                else:
                    values[i] = _absolute_value(key, v, base)
    return data


def _absolute_value(key: str, value: Any, base: Path) -> Any:
    probe: dict[str, Any] = {}
    _set_dotted(probe, key.split("."), value)
    map_paths(probe, lambda p: absolute_path(p, base))
    return _get_dotted(probe, key.split("."))


def _merged(base: Any, value: Any) -> Any:
    """``value`` laid over ``base``: mappings merge key by key (recursively), anything else replaces."""
    if isinstance(base, dict) and isinstance(value, dict):
        out = dict(base)
        for k, v in value.items():
            out[k] = _merged(base.get(k), v)
        return out
    return copy.deepcopy(value)


def _set_dotted(d: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set a grid value. A mapping merges into the block it overrides, so ``grid: {demonstrations:
    [{strategy: bm25s}]}`` keeps the top-level ``demonstrations.k`` instead of silently dropping it."""
    for p in parts[:-1]:
        nxt = d.get(p)
        if nxt == "none" and p == "demonstrations":
            nxt = {"strategy": "none"}
        if not isinstance(nxt, dict):
            nxt = {}
        d[p] = nxt = dict(nxt)
        d = nxt
    d[parts[-1]] = _merged(d.get(parts[-1]), value)


def _get_dotted(d: dict[str, Any], parts: list[str]) -> Any:
    for p in parts:
        d = d[p]
    return d


def _check_grid_key(key: str, ctx: ConfigContext) -> list[str]:
    """A dotted key must name a config field (or a key inside ``engine.adapters`` / ``engine.options``)."""
    line_path = ("grid", key)
    if not isinstance(key, str) or not key:
        raise ctx.error(line_path, f"grid keys must be non-empty strings, got {key!r}")
    parts = key.split(".")
    if parts[0] in ("grid", "cell", "name", "seeds"):
        hint = " (list several seeds under seeds:)" if parts[0] == "seeds" else ""
        raise ctx.error(line_path, f"{parts[0]!r} cannot be a grid key{hint}", line_path)
    cls: Any = ExperimentConfig
    for i, part in enumerate(parts):
        if cls is None:
            return parts
        if dataclasses.is_dataclass(cls):
            if part not in known_keys(cls):
                known = known_keys(cls)
                close = difflib.get_close_matches(part, known, n=1)
                hint = f" (did you mean {'.'.join([*parts[:i], close[0]])!r}?)" if close else ""
                where = f"in {'.'.join(parts[:i])!r}" if i else "at the top level"
                raise ctx.error(line_path, f"grid key {key!r}: unknown key {part!r} {where}{hint}; "
                                           f"known: {', '.join(known)}", line_path)
            tp = typing.get_type_hints(cls)[part]
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if typing.get_origin(tp) in (Union, types.UnionType) and len(args) == 1:
                tp = args[0]
            if dataclasses.is_dataclass(tp):
                cls = tp
            elif typing.get_origin(tp) is dict:
                cls = None  # free keys below (adapters, options)
            else:
                if i != len(parts) - 1:
                    raise ctx.error(line_path, f"grid key {key!r}: {'.'.join(parts[:i + 1])!r} is a value, "
                                               "it has no keys below it", line_path)
                cls = "leaf"
        else:
            raise ctx.error(line_path, f"grid key {key!r}: {'.'.join(parts[:i])!r} is a value, "
                                       "it has no keys below it", line_path)
    return parts


ROW_KEY = "row"


def _check_rows(rows: list[Any], ctx: ConfigContext) -> None:
    """Each row: a mapping with a unique ``label`` and at least one dotted config key."""
    seen: set[str] = set()
    for i, row in enumerate(rows):
        path = ("grid", ROW_KEY, f"[{i}]")
        if not isinstance(row, Mapping) or not isinstance(row.get("label"), str) or len(row) < 2:
            raise ctx.error(("grid", ROW_KEY), f"row {i}: expected a mapping with a 'label' and dotted config keys, "
                                               f"got {row!r}", path)
        if row["label"] in seen:
            raise ctx.error(("grid", ROW_KEY), f"row {i}: label {row['label']!r} is used twice", path)
        seen.add(row["label"])
        for key in row:
            if key != "label":
                if key == ROW_KEY:
                    raise ctx.error(("grid", ROW_KEY), f"row {row['label']!r}: a row cannot set 'row'", path)
                _check_grid_key(key, ctx)


def _set_grid_value(d: dict[str, Any], key: str, value: Any) -> None:
    if key == ROW_KEY:
        for sub, v in value.items():
            if sub != "label":
                _set_dotted(d, sub.split("."), v)
    else:
        _set_dotted(d, key.split("."), value)


@dataclass(frozen=True)
class Cell:
    """One run of a grid: its resolved config, its grid values and its folder name."""

    config: ExperimentConfig
    values: dict[str, Any]
    name: str


def _slug(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("label"), str):
        value = value["label"]
    if isinstance(value, str) and ("/" in value or os.sep in value):
        value = Path(value).name or value
    if not isinstance(value, str | int | float | bool) or value is None:
        text = json.dumps(value, sort_keys=True, default=str)
        value = hashlib.sha1(text.encode()).hexdigest()[:6] if len(text) > 24 else text
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(value)).strip("_")
    return s[:40] or "_"


def cell_name(values: Mapping[str, Any], config_hash: str) -> str:
    """``dataset-crossner_ai__k-4__1a2b3c4d``: grid values by their last key part, then a short hash."""
    leaves = [k.split(".")[-1] for k in values]
    pieces = []
    for key, leaf in zip(values, leaves, strict=True):
        label = leaf if leaves.count(leaf) == 1 else key
        pieces.append(f"{_slug(label)}-{_slug(values[key])}")
    return "__".join([*pieces, config_hash[:8]])


def expand(data: Mapping[str, Any], file: Path | None = None, lines: Lines | None = None,
           base: Path | None = None) -> list[Cell]:
    """Every cell of the grid (x seeds), each validated; raises :class:`ConfigError` on the first problem."""
    base = base or (file.parent if file is not None else Path.cwd())
    ctx = ConfigContext(file, lines)
    if not isinstance(data, Mapping):
        raise ConfigError(f"an experiment config must be a mapping, got {type(data).__name__}", "", file, 1)
    for key in data:
        if key not in known_keys(ExperimentConfig):
            raise unknown_key_error(ExperimentConfig, str(key), (), ctx)
    raw = _absolutise(dict(data), base)
    grid = raw.pop("grid", None) or {}
    if not isinstance(grid, Mapping):
        raise ctx.error(("grid",), f"expected a mapping of dotted keys to lists of values, got {grid!r}")
    keys = list(grid)
    for key in keys:
        if not isinstance(grid[key], list) or not grid[key]:
            raise ctx.error(("grid", key), f"grid values must be a non-empty list, got {grid[key]!r}")
        if key == ROW_KEY:
            _check_rows(grid[key], ctx)
        else:
            _check_grid_key(key, ctx)

    # the form of the keys outside the grid, checked once (the first cell's values fill the grid keys)
    first = copy.deepcopy(raw)
    for key in keys:
        _set_grid_value(first, key, grid[key][0])
    base_cfg = build(ExperimentConfig, first, (), ctx)
    base_cfg.source = file
    experiment = base_cfg.experiment_name
    inherited = dict(base_cfg.cell.values) if base_cfg.cell is not None else {}

    cells: list[Cell] = []
    hashes: dict[str, dict[str, Any]] = {}  # config hash -> grid values of the cell that runs it
    for combo in itertools.product(*(list(enumerate(grid[k])) for k in keys)):
        for seed in base_cfg.seeds or [None]:
            cell_data = copy.deepcopy(raw)
            values: dict[str, Any] = {}
            overrides: Lines = {}
            for key, (i, value) in zip(keys, combo, strict=True):
                _set_grid_value(cell_data, key, value)
                values[key] = value
                line = (lines or {}).get(("grid", key, f"[{i}]"))
                if line:
                    for set_key in (value if key == ROW_KEY else {key: value}):
                        if set_key != "label":
                            overrides[tuple(set_key.split("."))] = line
            if seed is not None:
                cell_data["seeds"] = [seed]
                if len(base_cfg.seeds) > 1:
                    values["seed"] = seed
            if not keys and inherited:  # a cell's own config keeps its grid values (the report's columns)
                values = inherited
            cell_ctx = ConfigContext(file, lines, ", ".join(f"{k}={v}" for k, v in values.items()) if keys else "",
                                overrides)
            cfg = build(ExperimentConfig, cell_data, (), cell_ctx)
            cfg.source = file
            check_config(cfg, cell_ctx)
            cfg = resolve_defaults(cfg)
            if cfg.demonstrations.strategy == "none" and isinstance(values.get("demonstrations"), dict):
                values["demonstrations"] = "none"  # zero-shot: whichever selector the grid named, none is used
            cfg.grid = {}
            cfg.cell = None
            digest = cfg.config_hash()
            if digest in hashes:
                if cfg.demonstrations.strategy == "none" or cfg.demonstrations.k == 0:
                    continue  # zero-shot under several selectors or seeds: one run serves them all
                raise _collapse_error(hashes[digest], values, ctx,
                                      {k: i for k, (i, _) in zip(keys, combo, strict=True)})
            hashes[digest] = values
            name = cell_name(values, digest)
            cfg.cell = CellInfo(name=name, experiment=experiment, values=values)
            cells.append(Cell(cfg, values, name))
    return cells


def _collapse_error(first: Mapping[str, Any], second: Mapping[str, Any], ctx: ConfigContext,
                    indices: Mapping[str, int]) -> ConfigError:
    """Two grid cells that resolve to one run: a grid value that cannot mean what it says (the error
    points at the line of the second cell's value)."""
    differing = [k for k in second if first.get(k) != second.get(k)] or list(second)
    line_path = ("grid", differing[0], f"[{indices.get(differing[0], 0)}]")
    shown = "; ".join(f"{k}: {json.dumps(first.get(k), default=str)} vs {json.dumps(second.get(k), default=str)}"
                      for k in differing)
    return ctx.error(("grid", differing[0]), line_path=line_path, message=f"grid cells collapse into the same run ({shown}): these values change "
                                             "nothing once the cell is resolved; remove the duplicate values or make "
                                             "them differ in a setting the run uses")


def load_config(path: str | Path) -> list[Cell]:
    """Read, validate and expand an experiment config file into its cells."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config: {err.strerror or err}", "", path) from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {getattr(err, 'problem', None) or err}", "", path,
                          mark.line + 1 if mark else None) from None
    lines = yaml_key_lines(node) if node is not None else {}
    return expand(data if data is not None else {}, path, lines, path.parent.resolve())


def load_cell(path: str | Path) -> ExperimentConfig:
    """A config that must describe exactly one run (a cell's ``config.yaml``)."""
    cells = load_config(path)
    if len(cells) != 1:
        raise ConfigError(f"describes {len(cells)} runs, expected one", "grid", path)
    return cells[0].config
