"""Methods by versioned name: what a run needs to know about a method, in one registration.

A method is one unit: a package that builds an :class:`Extractor` from a :class:`MethodContext`
(the run's engine, schema, template, demonstrations, budgets) and its own typed options (a
dataclass whose fields are the config schema). It is registered once, under a name and a
version (``name.vN``; ``name`` alone means the newest), the way templates are versioned, so an
old config keeps its meaning after a method changes. Third-party methods register through the
``openie.methods`` entry-point group (``myname = my_package.my_module:REGISTRATION``), loaded
lazily on the first lookup, so ``openie extract --method myname``, a grid cell with
``method: {name: myname}`` and Ray workers find them with no edit to openie.

Built-in methods register from their own module, named in ``BUILTIN_MODULES`` and imported on the
first lookup; their names are reserved. The run layers (``openie extract``, grid cells, Ray
workers, config checks, the CLI) know methods only through their registrations.
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
# Built-in methods, by the module that registers each (imported on first lookup); their names are reserved.
BUILTIN_MODULES = {"icl": "openie.methods.icl.method", "el4ner": "openie.methods.el4ner.method",
                   "dspy": "openie.agent.method", "retrieveall": "openie.methods.retrieveall.method",
                   "gliner": "openie.methods.gliner.method", "baner": "openie.methods.baner.method",
                   "spacy": "openie.methods.spacy_ner.method"}
BUILTIN_METHODS = tuple(BUILTIN_MODULES)
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
class EngineRequest:
    """An engine a method needs besides the run's own (EL4NER's members on other models)."""

    backend: str
    model: str
    adapters: Mapping[str, str] = dataclasses.field(default_factory=dict)  # name -> adapter folder


@dataclass(frozen=True)
class MethodSetup:
    """What a method's options may depend on, known before any work starts (for ``parse``)."""

    task: str
    model: str
    backend: str = "auto"
    adapter: str | None = None
    adapters: Mapping[str, str] | None = None  # the run engine's adapters (None: unknown, an engine given as is)
    default_pool: str | None = None  # the corpus's train split, for methods that pick their own demonstrations
    data_root: str | None = None


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
    task: str = "ner"
    backend: str = "auto"
    max_prompt_tokens: int | None = None  # drop the least relevant demonstrations until a prompt fits
    save_io: bool = False  # keep each record's prompts and raw answers in ``meta["io"]``
    shared_dir: Path | None = None  # where runs of one experiment may share caches (default: ``workdir``)
    engine_for: Callable[[EngineRequest], Engine] | None = None  # the run starts (and closes) the engines a method requests
    default_pool: str | None = None

    def other_engine(self, request: EngineRequest) -> Engine:
        if self.engine_for is None:
            raise MethodError(f"this run starts no engine for {request.model} ({request.backend})")
        return self.engine_for(request)


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
    with ``template`` the one it uses when a run's template has another format (with no
    ``template_format``, ``template(options)`` is the template it always uses).

    Methods whose options are not a flat dataclass give ``parse(raw, setup)`` instead (it raises
    :class:`MethodError` naming the key); ``demonstration_options`` names the options that a run's
    demonstration pool and ``k`` fill for a method that picks its own demonstrations;
    ``engines(options)`` lists the engines it needs besides the run's; ``engine_adapters(options)``
    the adapters the run's engine must load for it (``picks_adapter``: the run may not choose one);
    ``paths(options, fn)`` maps its path-valued options (config files move, relative paths are
    relative to them); ``record(options)`` is what a run records of them (default: every field);
    ``fit(config, log)`` trains the method from a fit config, resumably, and returns its report
    (``openie method fit NAME CONFIG``).
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
    template: str | Callable[[Any], str] | None = None
    template_format: str | None = None
    parse: Callable[[Mapping[str, Any], MethodSetup], Any] | None = None
    demonstration_options: tuple[str, str] | None = None
    engines: Callable[[Any], Sequence[EngineRequest]] | None = None
    engine_adapters: Callable[[Any], Mapping[str, str]] | None = None
    picks_adapter: bool = False
    paths: Callable[[Mapping[str, Any], Callable[[str], str]], dict[str, Any]] | None = None
    record: Callable[[Any], dict[str, Any]] | None = None
    option_defaults: Mapping[str, Any] | None = None  # with ``parse``: the option names and defaults (help)
    fit: Callable[[Path, Callable[[str], None]], Path] | None = None  # train from a config (resumable); its report

    @property
    def key(self) -> str:
        return f"{self.name}.v{self.version}"

    def parse_options(self, raw: Mapping[str, Any] | None, where: str = "method.options",
                      setup: MethodSetup | None = None) -> Any:
        """The options from plain data; an unknown key or a wrong type names the key.

        ``setup`` (the run's task, model, default pool) reaches a ``parse`` that needs it."""
        raw = dict(raw or {})
        if self.parse is not None:
            try:
                return self.parse(raw, setup or MethodSetup(task=(self.tasks or ("ner",))[0], model=""))
            except MethodError as err:
                raise MethodError(err.reason, f"{where}.{err.key}" if err.key else where) from None
            except ValueError as err:
                raise MethodError(str(err), where) from None
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
        if self.record is not None:
            recorded = self.record(options)
        elif dataclasses.is_dataclass(options):
            recorded = dataclasses.asdict(options)
        else:
            recorded = dict(options or {})
        return {"method": self.key, "options": recorded}

    def defaults(self) -> dict[str, Any]:
        """Every option with its default (for help and ``openie method list``)."""
        if self.options is not None:
            return {f.name: (f.default if f.default is not dataclasses.MISSING else None)
                    for f in dataclasses.fields(self.options)}
        return dict(self.option_defaults or {})

    def run_template(self, template: str, template_format: str, options: Any) -> str:
        """The template a run with ``template`` (of ``template_format``) renders for this method."""
        if self.template_format is not None:
            return str(self.template) if template_format != self.template_format else template
        if callable(self.template):
            return self.template(options)
        return self.template or template

    def fingerprint_payload(self, options: Any) -> dict[str, Any]:
        """What a finished run's fingerprint adds for this method: its version (after the first:
        ``name`` alone, in the config hash, is v1) and the content of what its options name."""
        payload: dict[str, Any] = {"method_version": self.key} if self.version > 1 else {}
        if self.fingerprint is not None:
            payload.update(self.fingerprint(options))
        return payload

    def requested_engines(self, options: Any) -> list[EngineRequest]:
        return list(self.engines(options)) if self.engines is not None else []

    def map_paths(self, options: Mapping[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
        return self.paths(options, fn) if self.paths is not None else dict(options)


LOCAL_PATH_PREFIXES = ("./", "../", "/", "~")


def is_local_path(value: Any) -> bool:
    """A string written as a local path (``./x``, ``../x``, ``/x``, ``~/x``), not a package or hub name."""
    return isinstance(value, str) and value.startswith(LOCAL_PATH_PREFIXES)


def path_options(*names: str) -> Callable[[Mapping[str, Any], Callable[[str], str]], dict[str, Any]]:
    """A registration's ``paths``: the options ``names`` are mapped where they are written as local paths."""

    def paths(options: Mapping[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
        return {k: fn(v) if k in names and is_local_path(v) else v for k, v in options.items()}

    return paths


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
    if registration.name in BUILTIN_MODULES and not builtin:
        raise MethodError(f"{registration.name!r} is a built-in method's name")
    if registration.version < 1:
        raise MethodError(f"method versions start at 1, got {registration.version}")
    if registration.options is not None and registration.parse is not None:
        raise MethodError(f"method {registration.name!r}: give an options dataclass or a parse function, not both")
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
        known = sorted(set(_REGISTRY) | set(BUILTIN_MODULES))
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
    """Every method name a run accepts: the built-ins, then the others (entry points loaded)."""
    _load_entry_points()
    return [*BUILTIN_METHODS, *sorted(set(_REGISTRY) - set(BUILTIN_MODULES))]


__all__ = ["BUILTIN_METHODS", "BUILTIN_MODULES", "ENTRY_POINT_GROUP", "EngineRequest", "Extractor", "MethodContext",
           "MethodError", "MethodRegistration", "MethodSetup", "get_method", "register_method", "registered_methods"]
