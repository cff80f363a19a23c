"""Engines: one protocol over vLLM offline, a vLLM server and transformers + peft."""

from __future__ import annotations

import importlib.util
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

BACKENDS = ("auto", "vllm", "vllm-server", "hf")
DEFAULT_MODEL = "gemma-3-270m"


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def create_engine(backend: str = "auto", model: str = DEFAULT_MODEL, adapters: dict[str, str] | None = None,
                  cache: str | Path | None = None, **kwargs: Any) -> Engine:
    """Build an engine by name: ``auto`` picks vLLM when importable, else transformers.

    ``model`` is an embedded default name (``gemma-3-270m``), an HF id or a local path;
    ``cache`` wraps the engine in a persistent ``CachedEngine`` at that path.
    """
    from openie.models import resolve_model

    if backend not in BACKENDS:
        raise ValueError(f"unknown engine backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "vllm" if vllm_available() else "hf"
    path = resolve_model(model)
    engine: Engine
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
    "BACKENDS", "CacheStats", "CachedEngine", "Engine", "EngineError", "Generation", "GenerationRequest",
    "Score", "ScoreRequest", "ScriptedEngine", "UnsupportedRequestError", "create_engine", "vllm_available",
]
