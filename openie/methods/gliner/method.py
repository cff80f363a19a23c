"""Method ``gliner``: its options (``--method-option`` / ``method.options``), fingerprint and registration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openie.methods.gliner.pipeline import GLiNERExtractor, check_options
from openie.methods.registry import MethodRegistration, is_local_path, path_options, register_method
from openie.tools.gliner import GLiNERToolError


@dataclass
class GLiNEROptions:
    """``method.options`` / ``--method-option`` of method gliner (``model`` is also ``--model``)."""

    model: str | None = None  # a GLiNER checkpoint folder or hub id
    threshold: float = 0.5
    labels: str = "name"  # what the model reads per type: its name or its description
    nested: bool = False
    batch_size: int = 8
    max_words: int | None = None  # window length in words (default: the encoder's)

    def __post_init__(self) -> None:
        try:
            check_options(dataclasses.asdict(self))
        except GLiNERToolError as err:
            raise ValueError(str(err).partition(": ")[2]) from None
        if is_local_path(self.model) and not Path(self.model).expanduser().exists():
            raise ValueError(f"GLiNER checkpoint {self.model} does not exist")


def _weights(options: GLiNEROptions) -> dict[str, Any]:
    from openie.methods.demonstrations import weights_fingerprint

    return {"gliner_weights": weights_fingerprint(options.model)}


REGISTRATION = register_method(MethodRegistration(
    "gliner", lambda context, options: GLiNERExtractor.from_options(context.schema, dataclasses.asdict(options)),
    options=GLiNEROptions, needs_engine=False, takes_demonstrations=False, tasks=("ner",), uses_template=False,
    ray=False, model_option="model", fingerprint=_weights, paths=path_options("model"),
    description="GLiNER span-type matching over the schema's entity types (no LLM, no prompt)"), builtin=True)

__all__ = ["REGISTRATION", "GLiNEROptions"]
