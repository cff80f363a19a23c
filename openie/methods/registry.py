"""Methods by versioned name: what a run needs to know about a method, in one registration.

A method is one unit: a package that builds an :class:`Extractor` from a :class:`MethodContext`
(the run's engine, schema, template, demonstrations, budgets) and its own typed options (a
dataclass whose fields are the config schema). It is registered once, under a name and a
version (``name.vN``; ``name`` alone means the newest), the way templates are versioned, so an
old config keeps its meaning after a method changes. Third-party methods register through the
``openie.methods`` entry-point group (``myname = my_package.my_module:REGISTRATION``), loaded
lazily on the first lookup, so ``openie extract --method myname``, a grid cell with
``method: {name: myname}`` and Ray workers find them with no edit to openie.

Built-in methods move behind the same registration one by one: those in ``BUILTIN_MODULES``
register from their own module (imported on first lookup); those still in ``BUILTIN_METHODS`` are
wired by the run layers themselves. Both kinds of name are reserved.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from openie.engines.base import Engine
from openie.errors import OpenIEError
from openie.records import Record
from openie.schema import Schema

ENTRY_POINT_GROUP = "openie.methods"
# Methods the run layers build themselves (openie.experiments); a registration cannot take these names.
BUILTIN_METHODS = ("icl", "ruie", "retrieveall", "el4ner", "dspy")
# Built-in methods that register themselves, by the module that does it (imported on first lookup).
BUILTIN_MODULES = {"gliner": "openie.methods.gliner", "baner": "openie.methods.baner"}
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class MethodError(OpenIEError, ValueError):
    """An unknown method, a bad registration or bad method options (the message names the key)."""

    def __init__(self, message: str, key: str = ""):
        self.key, self.reason = key, message
        super().__init__(f"{key}: {message}" if key else message)


@runtime_checkable
class Extractor(Protocol):
    """What every method builds: records in (gold hidden), one prediction per record out, in order."""

    stats: Any

    @property
    def task(self) -> str: ...

    def extract_batch(self, records: Sequence[Record]) -> list[Record]: ...


@dataclass(frozen=True)
class MethodContext:
    """What a run hands a method: the same for ``openie extract``, a grid cell and a Ray worker."""

    schema: Schema
    engine: Engine | None
    template: str
    demonstrations: Callable[[Record], Sequence[Record]] | None = None
    adapter: str | None = None
    max_tokens: int = 128
    batch_size: int = 32
    constrained: bool = True
    data_root: str | None = None
    workdir: Path | None = None  # where the method may keep files of this run (next to the predictions)
    model: str | None = None  # the engine's model as the run names it (a method may load it again, e.g. its layers)


@dataclass(frozen=True)
class MethodRegistration:
    """One method at one version.

    ``build(context, options)`` returns its :class:`Extractor`; ``options`` is a dataclass whose
    fields (with defaults) are the method's options, checked by name and type before any work;
    ``needs_engine`` says whether the run starts an LLM engine for it; ``takes_demonstrations``
    whether the run's demonstration selector means anything to it; ``tasks`` what it extracts
    (``None``: whatever the template says); ``uses_template`` whether prompts come from the run's
    template; ``ray`` whether Ray workers may run it; ``model_option`` the option that the command
    line's ``--model`` fills for a method without an engine (its own checkpoint);
    ``fingerprint(options)`` the content hashes of what its options only name (checkpoint weights),
    so a finished run is redone when they change; ``template_format`` the prompt format it needs,
    with ``template`` the one it uses when a run's template has another format.
    """

    name: str
    build: Callable[[MethodContext, Any], Extractor]
    version: int = 1
    options: type | None = None
    needs_engine: bool = True
    takes_demonstrations: bool = True
    description: str = ""
    tasks: tuple[str, ...] | None = None
    uses_template: bool = True
    ray: bool = True
    model_option: str | None = None
    fingerprint: Callable[[Any], dict[str, Any]] | None = None
    template: str | None = None
    template_format: str | None = None

    @property
    def key(self) -> str:
        return f"{self.name}.v{self.version}"

    def parse_options(self, raw: Mapping[str, Any] | None, where: str = "method.options") -> Any:
        """The options dataclass from plain data; an unknown key or a wrong type names the key."""
        raw = dict(raw or {})
        if self.options is None:
            if raw:
                raise MethodError(f"method {self.name!r} takes no options (got {sorted(raw)})", where)
            return None
        fields = {f.name: f for f in dataclasses.fields(self.options)}
        for key in raw:
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise MethodError(f"unknown option of method {self.name!r}{hint}; known: {', '.join(fields)}",
                                  f"{where}.{key}")
        hints = typing.get_type_hints(self.options)
        for key, value in raw.items():
            if not _matches(value, hints[key]):
                raise MethodError(f"expected {_type_name(hints[key])}, got {value!r}", f"{where}.{key}")
        try:
            return self.options(**raw)
        except (TypeError, ValueError) as err:
            raise MethodError(str(err), where) from None

    def describe(self, options: Any) -> dict[str, Any]:
        """What a run records of the method: its versioned name and every option, defaults included."""
        return {"method": self.key, "options": dataclasses.asdict(options) if options is not None else {}}


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple, Sequence):
        return isinstance(value, list | tuple)
    if origin in (dict, Mapping):
        return isinstance(value, dict)
    return isinstance(value, origin or tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_REGISTRY: dict[str, dict[int, MethodRegistration]] = {}
_ENTRY_POINTS_LOADED = False


def register_method(registration: MethodRegistration, *, builtin: bool = False) -> MethodRegistration:
    """Register (or re-register) one method version; returns it, so a module can keep it as a constant.

    ``builtin`` is for openie's own methods (``BUILTIN_MODULES``), whose names nothing else may take."""
    if not _NAME.match(registration.name):
        raise MethodError(f"method names are lowercase words (a-z, 0-9, _ and -), got {registration.name!r}")
    if registration.name in BUILTIN_METHODS or (registration.name in BUILTIN_MODULES and not builtin):
        raise MethodError(f"{registration.name!r} is a built-in method's name")
    if registration.version < 1:
        raise MethodError(f"method versions start at 1, got {registration.version}")
    if registration.options is not None and not dataclasses.is_dataclass(registration.options):
        raise MethodError(f"method {registration.name!r}: options must be a dataclass, got {registration.options!r}")
    _REGISTRY.setdefault(registration.name, {})[registration.version] = registration
    return registration


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except Exception as err:  # a broken plugin names itself, it does not break the others
            raise MethodError(f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}) failed to load: "
                              f"{type(err).__name__}: {err}") from err
        registration = loaded() if callable(loaded) and not isinstance(loaded, MethodRegistration) else loaded
        if not isinstance(registration, MethodRegistration):
            raise MethodError(f"entry point {ep.name} = {ep.value} gives {type(registration).__name__}, "
                              "not a MethodRegistration")
        register_method(registration)


def get_method(name: str) -> MethodRegistration:
    """``name`` (newest version) or ``name.vN``; entry points are read on the first lookup that misses."""
    base, _, version = name.partition(".v")
    if base not in _REGISTRY and base in BUILTIN_MODULES:
        importlib.import_module(BUILTIN_MODULES[base])  # registers itself
    if base not in _REGISTRY:
        _load_entry_points()
    versions = _REGISTRY.get(base)
    if not versions:
        known = [*BUILTIN_METHODS, *sorted(set(_REGISTRY) | set(BUILTIN_MODULES))]
        close = difflib.get_close_matches(base, known, n=1)
        raise MethodError(f"unknown method {name!r}{f' (did you mean {close[0]!r}?)' if close else ''}; "
                          f"known: {', '.join(known)}")
    if not version:
        return versions[max(versions)]
    if not version.isdigit() or int(version) not in versions:
        raise MethodError(f"method {base!r} has no version {version!r}; registered: "
                          + ", ".join(f"{base}.v{v}" for v in sorted(versions)))
    return versions[int(version)]


def registered_methods() -> list[str]:
    """Every method name a run accepts: the built-ins, then the registered ones (entry points loaded)."""
    _load_entry_points()
    return [*BUILTIN_METHODS, *sorted(set(_REGISTRY) | set(BUILTIN_MODULES))]


def is_registered(name: str) -> bool:
    """A method built through its registration (not one of the built-ins)."""
    return name.partition(".v")[0] not in BUILTIN_METHODS


__all__ = ["BUILTIN_METHODS", "BUILTIN_MODULES", "ENTRY_POINT_GROUP", "Extractor", "MethodContext", "MethodError", "MethodRegistration",
           "get_method", "is_registered", "register_method", "registered_methods"]
