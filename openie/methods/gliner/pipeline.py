"""GLiNER as a method: zero-shot NER given a schema's entity types, no LLM and no prompt.

The same seat as :class:`~openie.methods.icl.InContextExtractor` (``extract_batch``, ``stats``,
``task``), so ``openie extract --method gliner`` and experiment configs (``method: {name:
gliner}``) run it through the same resumable writers and reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openie.methods.icl.pipeline import ExtractionStats
from openie.records import Record
from openie.schema import Schema
from openie.tools.gliner import GLiNERTool, GLiNERToolError

#: what ``method.options`` / ``--method-option`` may set, with defaults
OPTIONS: dict[str, Any] = {"model": None, "threshold": 0.5, "labels": "name", "nested": False, "batch_size": 8,
                           "max_words": None}


def check_options(options: Mapping[str, Any], where: str = "options") -> dict[str, Any]:
    """Known keys, a model given, label prompts ``name`` or ``description``; defaults filled in."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise GLiNERToolError(f"{where}: unknown GLiNER options {unknown}; known: {sorted(OPTIONS)}")
    merged = {**OPTIONS, **options}
    if not merged["model"]:
        raise GLiNERToolError(f"{where}: 'model' (a GLiNER checkpoint folder or hub id) is required")
    if merged["labels"] not in ("name", "description"):
        raise GLiNERToolError(f"{where}: labels must be 'name' or 'description', got {merged['labels']!r}")
    if not 0.0 <= float(merged["threshold"]) <= 1.0:
        raise GLiNERToolError(f"{where}: threshold must be in [0, 1], got {merged['threshold']}")
    return merged


@dataclass
class GLiNERExtractor:
    """Typed spans of the schema's entity types from a GLiNER model, one batch at a time."""

    tool: GLiNERTool
    schema: Schema
    threshold: float = 0.5
    labels: str = "name"  # what the model reads per type: its name or its description
    nested: bool = False
    stats: ExtractionStats = field(default_factory=ExtractionStats)
    task: str = "ner"
    engine: Any = None
    demonstrations: Any = None

    @classmethod
    def from_options(cls, schema: Schema, options: Mapping[str, Any], *, show_progress: bool = False) -> GLiNERExtractor:
        o = check_options(options)
        tool = GLiNERTool.load(o["model"], batch_size=int(o["batch_size"]), max_words=o["max_words"],
                               show_progress=show_progress)
        return cls(tool, schema, float(o["threshold"]), o["labels"], bool(o["nested"]))

    def __post_init__(self) -> None:
        if not self.schema.entity_labels:
            raise GLiNERToolError("the schema has no entity types: GLiNER extracts entities only")

    @property
    def label_prompts(self) -> Sequence[str] | dict[str, str]:
        names = self.schema.entity_labels
        if self.labels == "description":
            return {n: self.schema.description(n) or n for n in names}
        return list(names)

    def describe(self) -> dict[str, Any]:
        """What changes this extractor's outputs (recorded with every run)."""
        return {"model": self.tool.source, "weights": self.tool.fingerprint(), "threshold": self.threshold,
                "labels": self.labels, "nested": self.nested, "max_words": self.tool.max_words}

    def extract_batch(self, batch: Sequence[Record]) -> list[Record]:
        preds = self.tool.extract([r.without_annotations() for r in batch], self.label_prompts,
                                  threshold=self.threshold, flat_ner=not self.nested)
        for p, cov in zip(preds, self.tool.last_coverage, strict=True):
            p.meta["method"] = "gliner"
            p.meta["coverage"] = {**cov, "chars_seen": cov["chars"] - cov["chars_not_seen"],
                                  "labels_per_prompt": len(self.schema.entity_labels), "cut_at_max_tokens": 0,
                                  "not_grounded": 0, "complete": cov["chars_not_seen"] == 0}
            self.stats.add(p)
        self.stats.prompts += len(batch)
        return preds


__all__ = ["OPTIONS", "GLiNERExtractor", "check_options"]
