"""Method ``baner``: its options, registration and the template it renders (a markers one)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from openie.methods.baner.pipeline import TEMPLATE, BANERExtractor, BoundaryError
from openie.methods.registry import MethodContext, MethodRegistration, register_method

SUPPORT_FROM_POOL = "pool"  # the support set comes from the run's pool: each dataset's own train split in a grid


@dataclass
class BANEROptions:
    """``method.options`` / ``--method-option`` of method baner (defaults as :data:`OPTIONS`)."""

    descriptions: bool = False
    constrained: bool = True
    support: str | None = None  # records file, NAME:SPLIT or "pool" (the run's pool): a K-shot support set for prototypes
    k: int = 5
    seed: int = 0
    typing_encoder: str = "llm"  # llm (the run's model at typing_layer) or a GLiNER checkpoint
    typing_layer: int | None = None
    max_tokens: int = 48


def _build(context: MethodContext, options: BANEROptions) -> BANERExtractor:
    chosen = asdict(options)
    if options.support == SUPPORT_FROM_POOL:
        if not context.default_pool:
            raise BoundaryError("method option support: 'pool' samples the support set from the run's "
                                "demonstration pool (the dataset's train split), and this run has none: "
                                "name a records file or NAME:SPLIT")
        chosen["support"] = context.default_pool
    return BANERExtractor.from_options(context.engine, context.schema, chosen, adapter=context.adapter,
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
