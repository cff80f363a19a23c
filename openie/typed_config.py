"""Typed configuration from YAML: dataclasses as the schema, errors that name file, line and key.

Every config the house reads (experiment grids, fit configs of trainable methods, method options)
goes through here, so a typo anywhere is reported the same way: the file, the line (from the YAML
node marks), the dotted key path and, for an unknown key, the closest known one.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import yaml

from openie.errors import OpenIEError


class ConfigError(OpenIEError, ValueError):
    """An invalid experiment config; names the file, line and dotted key path of the problem."""

    def __init__(self, message: str, path: str = "", file: str | Path | None = None, line: int | None = None,
                 cell: str = ""):
        self.reason, self.key, self.file, self.line, self.cell = message, path, file, line, cell
        where = ", ".join(x for x in (str(file) if file else "", f"line {line}" if line else "") if x)
        parts = [where, f"in grid cell {cell}" if cell else "", path]
        super().__init__(": ".join([p for p in parts if p] + [message]))


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
    if isinstance(data, str) and hasattr(cls, "from_scalar"):  # a section written as one word (``none``)
        try:
            data = cls.from_scalar(data)
        except ValueError as err:
            raise ctx.error(path, str(err)) from None
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


def _choice(value: Any, choices: tuple[str, ...] | list[str], path: tuple[str, ...], ctx: ConfigContext, what: str) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ctx.error(path, f"unknown {what} {value!r}{hint}; choose one of {', '.join(choices)}")


def absolute_path(p: str, base: Path) -> str:
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else (base / q).resolve())
