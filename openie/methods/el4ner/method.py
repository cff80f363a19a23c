"""Method ``el4ner``: its options (stage switches, members, pool), the engines its members need, registration.

Members on the run's model share the run's engine; each other (backend, model) is an
:class:`~openie.methods.registry.EngineRequest` the run starts once (with the run's dtype and
engine options) and closes. The method picks its own demonstrations: a run's pool and ``k`` fill
the options ``pool`` and ``k``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openie.engines.base import Engine, adapter_hash_or_path
from openie.methods.el4ner.pipeline import (
    OPTIONS,
    EL4NERConfig,
    EL4NERError,
    EL4NERExtractor,
    MemberSpec,
    build_members,
    member_specs,
    split_options,
)
from openie.methods.registry import (
    EngineRequest,
    MethodContext,
    MethodError,
    MethodRegistration,
    MethodSetup,
    register_method,
)

SPAN_CACHE = "el4ner-pool-spans.jsonl"  # pool spans, keyed by member, template and text: shared by an experiment's runs


@dataclass(frozen=True)
class EL4NEROptions:
    """The checked options: as given (``raw``), split into the stages' config and the run options,
    with the members resolved against the run's model, backend and adapter."""

    raw: dict[str, Any]
    stages: EL4NERConfig
    run: dict[str, Any]
    members: tuple[MemberSpec, ...]
    model: str  # the run's model and backend: members on them share the run's engine
    backend: str = "auto"
    adapters: dict[str, str] = field(default_factory=dict)

    def on_run_engine(self, backend: str, model: str) -> bool:
        return model == self.model and backend in ("auto", self.backend)


def _parse(raw: Mapping[str, Any], setup: MethodSetup) -> EL4NEROptions:
    try:
        stages, run = split_options(raw)
        specs = member_specs(raw.get("members"), model=setup.model, adapter=setup.adapter)
    except EL4NERError as err:
        raise MethodError(str(err).removeprefix("method options: ")) from None
    for i, spec in enumerate(specs):
        where = f"members.[{i}].adapter_path" if spec.adapter_path else f"members.[{i}].adapter"
        on_run = spec.model == setup.model and spec.backend in ("auto", setup.backend)
        if (on_run and spec.adapter and not spec.adapter_path and setup.adapters is not None
                and spec.adapter not in setup.adapters):
            raise MethodError(f"adapter {spec.adapter!r} is not one of engine.adapters (the run's --adapter NAME=PATH); "
                              "name it there or give the member an adapter_path", where)
        if spec.adapter_path and not Path(spec.adapter_path).is_dir():
            raise MethodError(f"adapter folder {spec.adapter_path} does not exist", where)
    return EL4NEROptions(dict(raw), stages, run, tuple(specs), setup.model, setup.backend, dict(setup.adapters or {}))


def _engines(options: EL4NEROptions) -> list[EngineRequest]:
    """One engine per (backend, model) off the run's engine, loaded with the adapters its members name."""
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for spec in options.members:
        if options.on_run_engine(spec.backend, spec.model):
            continue
        adapters = groups.setdefault((options.backend if spec.backend == "auto" else spec.backend, spec.model), {})
        if spec.adapter_path:
            adapters[str(spec.adapter)] = spec.adapter_path
    return [EngineRequest(backend, model, adapters) for (backend, model), adapters in groups.items()]


def _build(context: MethodContext, options: EL4NEROptions) -> EL4NERExtractor:
    def make_engine(backend: str, model: str, adapters: dict[str, str] | None) -> Engine:
        if options.on_run_engine(backend, model):
            return context.engine  # type: ignore[return-value]  # its adapters: the run's
        return context.other_engine(EngineRequest(options.backend if backend == "auto" else backend, model,
                                                  dict(adapters or {})))

    folder = context.shared_dir or context.workdir
    try:
        return EL4NERExtractor.from_options(build_members(options.members, make_engine), context.schema, options.raw,
                                            default_pool=context.default_pool, data_root=context.data_root,
                                            span_cache=folder / SPAN_CACHE if folder is not None else None,
                                            batch_size=context.batch_size)
    except EL4NERError as err:
        raise MethodError(str(err)) from None


def _fingerprint(options: EL4NEROptions) -> dict[str, Any]:
    """Its stage templates and its members' adapter files."""
    from prompts.registry import default_registry

    s = options.stages
    return {"el4ner_templates": [default_registry().get(t).version
                                 for t in (s.spans_template, s.type_template, s.verify_template)],
            "member_adapters": {m.name: adapter_hash_or_path(m.adapter_path) for m in options.members if m.adapter_path}}


def _record(options: EL4NEROptions) -> dict[str, Any]:
    return {**OPTIONS, **options.raw, "templates": _fingerprint(options)["el4ner_templates"], "members": [
        {"name": m.name, "backend": m.backend, "model": m.model, "adapter": m.adapter,
         "adapter_sha256": adapter_hash_or_path(m.adapter_path) if m.adapter_path else None} for m in options.members]}


def _paths(options: Mapping[str, Any], fn) -> dict[str, Any]:
    """Members' local models and adapter folders, and records-file pools."""
    from openie.datasets import is_corpus_split

    out = dict(options)
    if isinstance(out.get("members"), list):
        out["members"] = [{**m, **{k: fn(m[k]) for k in ("model", "adapter_path") if isinstance(m.get(k), str)
                                   and (k == "adapter_path" or m[k].startswith(("./", "../", "/", "~")))}}
                          if isinstance(m, dict) else m for m in out["members"]]
    pool = out.get("pool")
    if isinstance(pool, str) and not is_corpus_split(pool):
        out["pool"] = fn(pool)
    elif isinstance(pool, list):
        out["pool"] = [fn(p) if isinstance(p, str) and not is_corpus_split(p) else p for p in pool]
    return out


REGISTRATION = register_method(MethodRegistration(
    "el4ner", _build, parse=_parse, takes_demonstrations=False, demonstration_options=("pool", "k"), tasks=("ner",),
    ray=False, engines=_engines, fingerprint=_fingerprint, record=_record, paths=_paths,
    option_defaults=OPTIONS, description="EL4NER: an ensemble of small LLMs (span union, majority typing, log-likelihood verification)"),
    builtin=True)

__all__ = ["REGISTRATION", "SPAN_CACHE", "EL4NEROptions"]
