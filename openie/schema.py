"""What may be extracted: entity, relation and event types with optional descriptions.

A ``Schema`` is the single source for prompts (type lists, descriptions), for constrained
decoding (its JSON Schema) and for validating a model's structured output.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openie.errors import SchemaError


@dataclass(frozen=True)
class EntityType:
    name: str
    description: str | None = None


@dataclass(frozen=True)
class RelationType:
    name: str
    description: str | None = None
    head_types: tuple[str, ...] = ()  # empty: any entity type
    tail_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoleType:
    name: str
    description: str | None = None


@dataclass(frozen=True)
class EventType:
    name: str
    description: str | None = None
    roles: tuple[RoleType, ...] = ()


def _check_names(kind: str, names: Iterable[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise SchemaError(f"{kind} label must be a non-empty string, got {name!r}")
        if name in seen:
            raise SchemaError(f"duplicate {kind} label {name!r}")
        seen.add(name)


@dataclass(frozen=True)
class Schema:
    """Entity / relation / event types plus a map from raw corpus labels to schema labels."""

    entity_types: tuple[EntityType, ...] = ()
    relation_types: tuple[RelationType, ...] = ()
    event_types: tuple[EventType, ...] = ()
    label_map: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_names("entity", [t.name for t in self.entity_types])
        _check_names("relation", [t.name for t in self.relation_types])
        _check_names("event", [t.name for t in self.event_types])
        for ev in self.event_types:
            _check_names(f"role of event {ev.name!r}", [r.name for r in ev.roles])
        known = set(self.entity_labels)
        for rel in self.relation_types:
            for t in (*rel.head_types, *rel.tail_types):
                if t not in known:
                    raise SchemaError(f"relation {rel.name!r} refers to unknown entity type {t!r}")
        targets = known | set(self.relation_labels) | set(self.event_labels)
        for raw, mapped in self.label_map.items():
            if mapped not in targets:
                raise SchemaError(f"label map sends {raw!r} to {mapped!r}, which is not a label of the schema")

    # construction -------------------------------------------------------------------------
    @classmethod
    def from_labels(cls, entities: Iterable[str] | Mapping[str, str | None] = (),
                    relations: Iterable[str] | Mapping[str, str | None] = (),
                    label_map: Mapping[str, str] | None = None) -> Schema:
        """Quick construction from label lists, or dicts of label -> description."""

        def items(x: Iterable[str] | Mapping[str, str | None]) -> list[tuple[str, str | None]]:
            return list(x.items()) if isinstance(x, Mapping) else [(n, None) for n in x]

        return cls(tuple(EntityType(n, d) for n, d in items(entities)),
                   tuple(RelationType(n, d) for n, d in items(relations)),
                   label_map=dict(label_map or {}))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Schema:
        """Inverse of ``to_dict``; entries may be bare names or ``{name, description, ...}``."""

        def as_obj(x: Any, kind: str) -> dict[str, Any]:
            if isinstance(x, str):
                return {"name": x}
            if isinstance(x, Mapping) and "name" in x:
                return dict(x)
            raise SchemaError(f"{kind} type must be a name or an object with 'name', got {x!r}")

        unknown = set(d) - {"entities", "relations", "events", "label_map"}
        if unknown:
            raise SchemaError(f"unknown schema field(s): {', '.join(sorted(unknown))}")
        ents = [as_obj(x, "entity") for x in d.get("entities", [])]
        rels = [as_obj(x, "relation") for x in d.get("relations", [])]
        evs = [as_obj(x, "event") for x in d.get("events", [])]
        return cls(
            tuple(EntityType(e["name"], e.get("description")) for e in ents),
            tuple(RelationType(r["name"], r.get("description"), tuple(r.get("head_types", ())),
                               tuple(r.get("tail_types", ()))) for r in rels),
            tuple(EventType(e["name"], e.get("description"),
                            tuple(RoleType(**as_obj(ro, "role")) for ro in e.get("roles", []))) for e in evs),
            label_map=dict(d.get("label_map", {})),
        )

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        """Read a schema from a JSON or YAML file."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as err:
            raise SchemaError(f"{path}: cannot parse schema: {err}") from None
        try:
            return cls.from_dict(data or {})
        except SchemaError as err:
            raise SchemaError(f"{path}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        def ent(t: EntityType) -> dict[str, Any]:
            return {"name": t.name, **({"description": t.description} if t.description else {})}

        d: dict[str, Any] = {"entities": [ent(t) for t in self.entity_types]}
        if self.relation_types:
            d["relations"] = [{**ent(EntityType(r.name, r.description)),
                               **({"head_types": list(r.head_types)} if r.head_types else {}),
                               **({"tail_types": list(r.tail_types)} if r.tail_types else {})}
                              for r in self.relation_types]
        if self.event_types:
            d["events"] = [{**ent(EntityType(e.name, e.description)),
                            "roles": [ent(EntityType(r.name, r.description)) for r in e.roles]}
                           for e in self.event_types]
        if self.label_map:
            d["label_map"] = dict(self.label_map)
        return d

    # lookups --------------------------------------------------------------------------------
    @property
    def entity_labels(self) -> list[str]:
        return [t.name for t in self.entity_types]

    @property
    def relation_labels(self) -> list[str]:
        return [t.name for t in self.relation_types]

    @property
    def event_labels(self) -> list[str]:
        return [t.name for t in self.event_types]

    def description(self, label: str) -> str | None:
        for t in (*self.entity_types, *self.relation_types, *self.event_types):
            if t.name == label:
                return t.description
        raise KeyError(label)

    def map_label(self, raw: str) -> str:
        """Schema label for a raw corpus label (identity when the map does not mention it)."""
        return self.label_map.get(raw, raw)

    # structured output ----------------------------------------------------------------------
    def json_schema(self, parts: Iterable[str] | None = None) -> dict[str, Any]:
        """JSON Schema of a valid extraction output, for constrained decoding and validation.

        Output shape: ``{"entities": [{"text", "type"}], "relations": [{"head", "head_type",
        "type", "tail", "tail_type"}], "events": [{"trigger", "type", "arguments": [{"role",
        "text"}]}]}``, with the keys the schema has types for, or only ``parts`` of them
        (an NER prompt over a schema that also has relations asks for ``["entities"]``).
        """
        # no minLength: xgrammar 0.2.8 then admits raw control characters (invalid JSON); parsers
        # report empty spans instead
        span_text = {"type": "string"}
        props: dict[str, Any] = {}
        if self.entity_types:
            props["entities"] = {"type": "array", "items": {
                "type": "object",
                "properties": {"text": span_text, "type": {"enum": self.entity_labels}},
                "required": ["text", "type"], "additionalProperties": False}}
        if self.relation_types:
            ent_enum = {"enum": self.entity_labels} if self.entity_types else {"type": "string"}
            props["relations"] = {"type": "array", "items": {
                "type": "object",
                "properties": {"head": span_text, "head_type": ent_enum, "type": {"enum": self.relation_labels},
                               "tail": span_text, "tail_type": ent_enum},
                "required": ["head", "type", "tail"], "additionalProperties": False}}
        if self.event_types:
            roles = sorted({r.name for e in self.event_types for r in e.roles})
            props["events"] = {"type": "array", "items": {
                "type": "object",
                "properties": {"trigger": span_text, "type": {"enum": self.event_labels},
                               "arguments": {"type": "array", "items": {
                                   "type": "object",
                                   "properties": {"role": {"enum": roles} if roles else {"type": "string"},
                                                  "text": span_text},
                                   "required": ["role", "text"], "additionalProperties": False}}},
                "required": ["trigger", "type"], "additionalProperties": False}}
        if parts is not None:
            wanted = list(parts)
            unknown = [p for p in wanted if p not in ("entities", "relations", "events")]
            if unknown:
                raise SchemaError(f"unknown output part(s) {unknown}; parts are entities, relations, events")
            props = {k: v for k, v in props.items() if k in wanted}
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

    def validation_errors(self, output: Any, parts: Iterable[str] | None = None) -> list[str]:
        """Every way ``output`` violates the JSON Schema, as readable ``path: message`` lines."""
        import jsonschema  # on first use: engines import this module on machines without jsonschema

        validator = jsonschema.Draft202012Validator(self.json_schema(parts))
        errors = sorted(validator.iter_errors(output), key=lambda e: list(e.absolute_path))
        return [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]

    def validate(self, output: Any, parts: Iterable[str] | None = None) -> None:
        """Raise ``SchemaError`` listing the problems when ``output`` is not a valid extraction."""
        errors = self.validation_errors(output, parts)
        if errors:
            raise SchemaError("output does not match the schema: " + "; ".join(errors))
