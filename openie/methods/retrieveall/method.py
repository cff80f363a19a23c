"""Method ``retrieveall``: a finished RetrieveAll run (``openie retrieveall experiment``) as an extractor.

The run's config names the trained per-language adapters (the run's engine loads them), the
inference template and the routing; ``mode`` is ``routed`` (input-aware routing), ``oracle``
(the record's own language) or ``shared`` (one adapter for all).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openie.methods.registry import MethodContext, MethodRegistration, register_method
from openie.methods.retrieveall.pipeline import MODES, RetrieveAllExtractor


@dataclass(frozen=True)
class RetrieveAllOptions:
    config: str = ""  # the finished run's config file (YAML)
    mode: str = "routed"

    def __post_init__(self) -> None:
        if not self.config:
            raise ValueError("config: the config file of a finished openie retrieveall experiment is required")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        _config(self.config)  # a missing file, a bad config or an unfinished run fails here, before any work
        _adapters(self.config, self.mode)


@functools.lru_cache(maxsize=8)
def _config(path: str) -> Any:
    from openie.methods.retrieveall.fit import RetrieveAllConfig

    return RetrieveAllConfig.load(path)


@functools.lru_cache(maxsize=8)
def _adapters(path: str, mode: str) -> dict[str, str]:
    from openie.methods.retrieveall.fit import trained_adapters

    return trained_adapters(_config(path), mode)[0]


def _build(context: MethodContext, options: RetrieveAllOptions) -> RetrieveAllExtractor:
    from openie.methods.retrieveall.fit import build_extractor

    return build_extractor(_config(options.config), context.engine, options.mode)


def _record(options: RetrieveAllOptions) -> dict[str, Any]:
    cfg = _config(options.config)
    return {"config": cfg.config_file, "mode": options.mode, "run": cfg.output}


def _fit(config: Path, log) -> Path:
    """Language data, augmented prompts, per-language and shared adapters, evaluation (:mod:`.fit`)."""
    from openie.methods.retrieveall.fit import RetrieveAllConfig, run_retrieveall_experiment

    run_retrieveall_experiment(config, log=log)
    return Path(RetrieveAllConfig.load(config).output) / "report.md"


REGISTRATION = register_method(MethodRegistration(
    "retrieveall", _build, fit=_fit, options=RetrieveAllOptions, takes_demonstrations=False, tasks=("ner",), ray=False,
    template=lambda options: _config(options.config).inference.template, picks_adapter=True,
    engine_adapters=lambda options: _adapters(options.config, options.mode), record=_record,
    paths=lambda options, fn: {**options, **({"config": fn(options["config"])} if options.get("config") else {})},
    description="RetrieveAll: per-language LoRA adapters with input-aware routing (a finished run's config)"),
    builtin=True)

__all__ = ["REGISTRATION", "RetrieveAllOptions"]
