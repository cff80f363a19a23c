"""Method ``dspy``: a DSPy program (predict, chain of thought, the tool-using agent) on the run's engine.

Its options are :data:`openie.agent.options.OPTIONS`, checked by
:func:`~openie.agent.options.check_options`; it writes its own prompts (no template) and picks its
own demonstrations: a run's pool and ``k`` fill the options ``pool`` and ``knn_k``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openie.agent.options import OPTIONS, DSPyOptionsError, check_options, from_options, map_paths, option_fingerprints
from openie.methods.registry import MethodContext, MethodError, MethodRegistration, MethodSetup, register_method


def _parse(raw: Mapping[str, Any], setup: MethodSetup) -> dict[str, Any]:
    try:
        return check_options(raw, task=setup.task, default_pool=setup.default_pool)
    except DSPyOptionsError as err:
        raise MethodError(err.reason, err.key or "") from None


def _build(context: MethodContext, options: dict[str, Any]) -> Any:
    try:
        return from_options(context.engine, context.schema, options, task=context.task,  # type: ignore[arg-type]
                            default_pool=context.default_pool, data_root=context.data_root, adapter=context.adapter,
                            max_tokens=context.max_tokens, batch_size=context.batch_size, workdir=context.workdir)
    except DSPyOptionsError as err:
        raise MethodError(err.reason, f"method options.{err.key}" if err.key else "method options") from None


REGISTRATION = register_method(MethodRegistration(
    "dspy", _build, parse=_parse, takes_demonstrations=False, demonstration_options=("pool", "knn_k"),
    tasks=("ner", "re", "ee"), uses_template=False, ray=False,
    fingerprint=lambda options: {"dspy": option_fingerprints(options)},
    record=lambda options: {**options, "fingerprints": option_fingerprints(options)}, paths=map_paths,
    option_defaults=OPTIONS, description="a DSPy program on the engine: predict, chain of thought or a tool-using ReAct agent"),
    builtin=True)

__all__ = ["REGISTRATION"]
