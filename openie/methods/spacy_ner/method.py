"""Method ``spacy``: its options (``--method-option`` / ``method.options``), fingerprint and registration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openie.methods.registry import MethodContext, MethodRegistration, is_local_path, path_options, register_method
from openie.methods.spacy_ner.pipeline import (
    DEFAULT_PIPELINE,
    LABEL_MAPS,
    SpacyExtractor,
    SpacyMethodError,
    load_pipeline,
    pipeline_fingerprint,
    pipeline_source,
    resolve_label_map,
)


@dataclass
class SpacyOptions:
    """``method.options`` of method spacy (``model`` is also ``--model``)."""

    model: str = DEFAULT_PIPELINE  # an installed spaCy pipeline package or a saved pipeline folder
    label_map: str | dict = "ontonotes"  # a named map or {spaCy type: corpus type | [candidates] | null}
    batch_size: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.label_map, str) and self.label_map not in LABEL_MAPS:
            raise ValueError(f"label_map: unknown label map {self.label_map!r}; known: {sorted(LABEL_MAPS)} or a mapping")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if is_local_path(self.model) and not Path(self.model).expanduser().exists():
            raise ValueError(f"spaCy pipeline folder {self.model} does not exist")


def _build(context: MethodContext, options: SpacyOptions) -> SpacyExtractor:
    try:
        label_map = resolve_label_map(options.label_map)
    except SpacyMethodError as err:
        raise ValueError(str(err)) from None
    return SpacyExtractor(load_pipeline(options.model), context.schema, label_map, source=pipeline_source(options.model),
                          batch_size=options.batch_size)


def _fingerprint(options: SpacyOptions) -> dict[str, Any]:
    """The pipeline's identity (name, version, components, labels), so a new model version re-runs."""
    return {"spacy_pipeline": pipeline_fingerprint(load_pipeline(options.model))}


REGISTRATION = register_method(MethodRegistration(
    "spacy", _build, options=SpacyOptions, needs_engine=False, takes_demonstrations=False, tasks=("ner",),
    uses_template=False, ray=False, model_option="model", fingerprint=_fingerprint, paths=path_options("model"),
    description="an installed spaCy pipeline's entities, its types mapped onto the schema (off-the-shelf baseline)"),
    builtin=True)

__all__ = ["REGISTRATION", "SpacyOptions"]
