"""Method ``baner``: its options, registration and the template it renders (a markers one)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from openie.methods.baner.pipeline import TEMPLATE, BANERExtractor
from openie.methods.registry import MethodContext, MethodRegistration, register_method


@dataclass
class BANEROptions:
    """``method.options`` / ``--method-option`` of method baner (defaults as :data:`OPTIONS`)."""

    descriptions: bool = False
    constrained: bool = True
    support: str | None = None  # records file or NAME:SPLIT: a K-shot support set for prototype typing
    k: int = 5
    seed: int = 0
    typing_encoder: str = "llm"  # llm (the run's model at typing_layer) or a GLiNER checkpoint
    typing_layer: int | None = None
    max_tokens: int = 48


def _build(context: MethodContext, options: BANEROptions) -> BANERExtractor:
    return BANERExtractor.from_options(context.engine, context.schema, asdict(options), adapter=context.adapter,
                                       model=context.model or "gemma-3-270m", data_root=context.data_root,
                                       template=context.template)


def _fit(config: Path, log) -> Path:
    """Source adapters, K-shot episodes, LoRAHub and the ablation table (:mod:`openie.methods.baner.fit`)."""
    from openie.methods.baner.fit import run_baner_experiment

    results = run_baner_experiment(config)
    return Path(results["config"]["workdir"]).parent / "report.md"


REGISTRATION = register_method(MethodRegistration(
    "baner", _build, fit=_fit, options=BANEROptions, takes_demonstrations=False, tasks=("ner",), ray=False,
    template=TEMPLATE, template_format="markers",
    description="boundary-aware span detection, one constrained prompt per type (+ prototype typing)"), builtin=True)

__all__ = ["REGISTRATION", "BANEROptions"]
