"""Engines: one protocol over vLLM offline, a vLLM server, transformers + peft and any OpenAI-compatible endpoint."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from openie.engines.base import (
    Engine,
    EngineError,
    Generation,
    GenerationRequest,
    Score,
    ScoreRequest,
    UnsupportedRequestError,
)
from openie.engines.cache import CachedEngine, CacheStats
from openie.engines.scripted import ScriptedEngine

BACKENDS = ("auto", "vllm", "vllm-server", "hf", "openai")
DEFAULT_MODEL = "gemma-3-270m"


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


# Constructor arguments that the command line sets itself (never through --engine-option).
_NOT_OPTIONS = {"self", "model", "adapters", "dtype", "cache"}


def _backend_class(backend: str) -> Any:
    if backend == "vllm":
        from openie.engines.vllm_offline import VLLMEngine

        return VLLMEngine
    if backend == "vllm-server":
        from openie.engines.vllm_server import VLLMServerEngine

        return VLLMServerEngine
    if backend == "openai":
        from openie.engines.openai_endpoint import OpenAIEndpointEngine

        return OpenAIEndpointEngine
    from openie.engines.hf import TransformersEngine

    return TransformersEngine


def engine_option_names(backend: str) -> tuple[frozenset[str], bool]:
    """(keyword options a backend takes, whether it passes unknown ones on to ``vllm.LLM``)."""
    import inspect

    if backend == "auto":
        backend = "vllm" if vllm_available() else "hf"
    params = inspect.signature(_backend_class(backend).__init__).parameters
    names = frozenset(n for n, p in params.items()
                      if n not in _NOT_OPTIONS and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    return names, any(p.kind == p.VAR_KEYWORD for p in params.values())


def check_engine_options(backend: str, options: Mapping[str, Any], flag: str = "--engine-option") -> None:
    """Refuse an option the backend would not take, naming it (and the closest known name).

    The vLLM backend passes options it does not know itself on to ``vllm.LLM``: those are checked
    against vLLM's ``EngineArgs`` fields.
    """
    import difflib

    if backend not in BACKENDS:
        raise EngineError(f"unknown engine backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if "dtype" in options:
        raise EngineError(f"{flag} dtype=...: set the dtype with --dtype (engine.dtype in a config)")
    if backend == "openai" and "api_key" in options:
        raise EngineError(f"{flag} api_key=...: never pass the key itself (run records would hold it); put it in an "
                          "environment variable and pass api_key_env=NAME")
    if backend == "openai" and "api_key_env" in options:
        from openie.engines.openai_endpoint import check_api_key_env

        check_api_key_env(options["api_key_env"])
    names, passes_on = engine_option_names(backend)
    unknown = [k for k in options if k not in names]
    if unknown and passes_on:
        from vllm.engine.arg_utils import EngineArgs

        names = names | {f.name for f in dataclasses.fields(EngineArgs)} - {"model", "dtype"}
        unknown = [k for k in options if k not in names]
    if unknown:
        hints = [f"{k!r}" + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, names, 1))
                              else "") for k in unknown]
        shown = ", ".join(sorted(names)) if len(names) <= 40 else ", ".join(sorted(names)[:40]) + ", ..."
        raise EngineError(f"{flag}: unknown option(s) for backend {backend!r}: {', '.join(hints)}; known: {shown}")


def close_engine(engine: Any) -> None:
    """Close an engine and, for a cache or other wrapper, the engine inside it."""
    inner = getattr(engine, "__dict__", {}).get("engine")
    for e in (engine, inner):
        close = getattr(e, "close", None) if e is not None else None
        if callable(close):
            close()


def create_engine(backend: str = "auto", model: str = DEFAULT_MODEL, adapters: dict[str, str] | None = None,
                  cache: str | Path | None = None, **kwargs: Any) -> Engine:
    """Build an engine by name: ``auto`` picks vLLM when importable, else transformers.

    ``model`` is an embedded default name (``gemma-3-270m``), an HF id or a local path; for
    ``openai`` it is the endpoint's served model name (``base_url=`` and the other options of
    :class:`~openie.engines.openai_endpoint.OpenAIEndpointEngine` in ``kwargs``, ``adapters``
    mapping adapter names to served model names). ``cache`` wraps the engine in a persistent
    ``CachedEngine`` at that path.
    """
    from openie.models import resolve_model

    if backend not in BACKENDS:
        raise ValueError(f"unknown engine backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "vllm" if vllm_available() else "hf"
    engine: Engine
    if backend == "openai":  # a served model name: nothing to resolve or convert here
        from openie.engines.openai_endpoint import OpenAIEndpointEngine

        engine = OpenAIEndpointEngine(model, adapters=adapters, **kwargs)
        return CachedEngine(engine, cache) if cache is not None else engine
    path = resolve_model(model)
    if backend == "vllm":
        from openie.engines.vllm_offline import VLLMEngine

        engine = VLLMEngine(path, adapters=adapters, **kwargs)
    elif backend == "vllm-server":
        from openie.engines.vllm_server import VLLMServerEngine

        engine = VLLMServerEngine(path, adapters=adapters, **kwargs)
    else:
        from openie.engines.hf import TransformersEngine

        engine = TransformersEngine(path, adapters=adapters, **kwargs)
    return CachedEngine(engine, cache) if cache is not None else engine


__all__ = [
    "close_engine",
    "BACKENDS", "CacheStats", "CachedEngine", "Engine", "EngineError", "Generation", "GenerationRequest",
    "Score", "ScoreRequest", "ScriptedEngine", "UnsupportedRequestError", "check_engine_options", "create_engine",
    "engine_option_names", "vllm_available",
]
