"""DSPy signatures generated from an openie ``Schema``, and the way back from a prediction to a ``Record``.

``dspy.Predict(openie_signature(schema))`` is all a researcher writes to prompt any DSPy module
for NER, RE or events: the instructions describe the schema's types (names and descriptions),
and the output fields are lists of small pydantic items that DSPy's adapters show the model as
a JSON schema and parse back.

The items' fields are plain strings with defaults, on purpose: a ``Literal`` of the schema's
labels would make DSPy reject the *whole* output for one stray label, and a required field the
whole list for one incomplete item. The labels reach the model as a JSON-schema ``enum`` instead
(:func:`item_type`), which constrained decoding enforces. Validation happens here instead, item by item, like every
openie parser: :func:`prediction_to_record` grounds each span to character offsets
(``openie.grounding``), keeps what is valid and records the rest (unknown labels, spans not in
the input, broken items) as ``parse_problems`` in the record's meta. It never raises.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import dspy
from pydantic import BaseModel, ConfigDict, Field, create_model

from openie.errors import SchemaError, UnknownNameError
from openie.grounding import ground_all
from openie.records import Entity, Event, EventArgument, Record, Relation
from openie.schema import Schema
from prompts.formats import ParseProblem, ParseResult, load_json_leniently

#: ``ner`` entities, ``re`` relations, ``ee`` events (the task names of ``openie.metrics``)
TASKS = ("ner", "re", "ee")
INPUT_FIELD = "text"
OUTPUT_FIELDS = {"ner": "entities", "re": "relations", "ee": "events"}


class EntityItem(BaseModel):
    """An entity mention as the model writes it: the words of the text and a type."""

    model_config = ConfigDict(extra="ignore")
    text: str = ""
    type: str = ""


class RelationItem(BaseModel):
    """A relation as the model writes it: head and tail mentions with their entity types."""

    model_config = ConfigDict(extra="ignore")
    head: str = ""
    head_type: str = ""
    type: str = ""
    tail: str = ""
    tail_type: str = ""


class ArgumentItem(BaseModel):
    """An event argument: the role it fills and its words in the text."""

    model_config = ConfigDict(extra="ignore")
    role: str = ""
    text: str = ""


class EventItem(BaseModel):
    """An event: trigger words, event type and role-labelled arguments."""

    model_config = ConfigDict(extra="ignore")
    trigger: str = ""
    type: str = ""
    arguments: list[ArgumentItem] = []


ITEM_TYPES: dict[str, type[BaseModel]] = {"ner": EntityItem, "re": RelationItem, "ee": EventItem}


#: the characters a mention (entity, head, tail, trigger, argument) may take in the output schema
MAX_MENTION_CHARS = 120


def _enum(labels: list[str]) -> Any:
    return Field("", json_schema_extra={"enum": list(labels)}) if labels else ""


def _mention() -> Any:
    return Field("", json_schema_extra={"minLength": 1, "maxLength": MAX_MENTION_CHARS})


def item_type(schema: Schema, task: str) -> type[BaseModel]:
    """The output item of ``task`` for ``schema``: label fields list the schema's labels as a JSON-schema enum.

    Mention fields are 1 to :data:`MAX_MENTION_CHARS` characters in the schema.
    The enum is in the schema the model is shown (and decoded under, with
    :class:`~openie.agent.structured.ConstrainedJSONAdapter`); validation still takes any string,
    so a stray label costs that item only (:func:`prediction_to_record` reports it).
    """
    check_task(task)
    base = ITEM_TYPES[task]
    if task == "ner":
        fields = {"text": (str, _mention()), "type": (str, _enum(schema.entity_labels))}
    elif task == "re":
        fields = {"head": (str, _mention()), "head_type": (str, _enum(schema.entity_labels)),
                  "type": (str, _enum(schema.relation_labels)), "tail": (str, _mention()),
                  "tail_type": (str, _enum(schema.entity_labels))}
    else:
        roles = sorted({r.name for e in schema.event_types for r in e.roles})
        argument = create_model("ArgumentItem", __base__=ArgumentItem, __doc__=ArgumentItem.__doc__,
                                role=(str, _enum(roles)), text=(str, _mention()))
        fields = {"trigger": (str, _mention()), "type": (str, _enum(schema.event_labels)),
                  "arguments": (list[argument], [])}  # type: ignore[valid-type]
    return create_model(base.__name__, __base__=base, __doc__=base.__doc__, **fields)  # type: ignore[call-overload]


def check_task(task: str) -> str:
    if task not in TASKS:
        raise UnknownNameError("DSPy extraction task", task, list(TASKS))
    return task


def _described(name: str, description: str | None, extra: str = "") -> str:
    return f"- {name}{extra}" + (f": {description}" if description else "")


def type_descriptions(schema: Schema, task: str) -> dict[str, Any]:
    """The schema's types for ``task`` as plain data: what the instructions and the agent's tool show."""
    check_task(task)
    if task == "ner":
        return {t.name: t.description or "" for t in schema.entity_types}
    if task == "re":
        return {r.name: {"description": r.description or "", "head_types": list(r.head_types) or schema.entity_labels,
                         "tail_types": list(r.tail_types) or schema.entity_labels}
                for r in schema.relation_types}
    return {e.name: {"description": e.description or "",
                     "roles": {ro.name: ro.description or "" for ro in e.roles}} for e in schema.event_types}


def schema_instructions(schema: Schema, task: str) -> str:
    """The task instructions for ``schema``: every type with its description, the copy-the-words rule."""
    check_task(task)
    if task == "ner":
        if not schema.entity_types:
            raise SchemaError("the schema has no entity types: nothing to extract for task 'ner'")
        lines = ["Extract every mention of a named entity of the types below from `text`.",
                 "Copy each mention exactly as it is written in the text and give its type.",
                 "Entity types:"]
        lines += [_described(t.name, t.description) for t in schema.entity_types]
    elif task == "re":
        if not schema.relation_types:
            raise SchemaError("the schema has no relation types: nothing to extract for task 're'")
        lines = ["Extract every relation of the types below between two entity mentions in `text`.",
                 "Copy the head and tail mentions exactly as they are written in the text; give the relation "
                 "type and the entity type of head and tail.",
                 "Relation types:"]
        for r in schema.relation_types:
            ends = ""
            if r.head_types or r.tail_types:
                ends = (f" (head: {', '.join(r.head_types) or 'any'}; "
                        f"tail: {', '.join(r.tail_types) or 'any'})")
            lines.append(_described(r.name, r.description, ends))
        if schema.entity_types:
            lines.append("Entity types:")
            lines += [_described(t.name, t.description) for t in schema.entity_types]
    else:
        if not schema.event_types:
            raise SchemaError("the schema has no event types: nothing to extract for task 'ee'")
        lines = ["Extract every event of the types below from `text`: the trigger words exactly as written, "
                 "the event type, and the arguments that fill the event type's roles (each argument copied "
                 "exactly from the text).",
                 "Event types:"]
        for e in schema.event_types:
            roles = f" (roles: {', '.join(r.name for r in e.roles)})" if e.roles else ""
            lines.append(_described(e.name, e.description, roles))
            lines += ["  " + _described(r.name, r.description) for r in e.roles if r.description]
    return "\n".join(lines)


def _output_desc(schema: Schema, task: str) -> str:
    if task == "ner":
        return f"the entity mentions in order of appearance; type is one of {schema.entity_labels}"
    if task == "re":
        return f"the relations; type is one of {schema.relation_labels}" + (
            f", head_type and tail_type one of {schema.entity_labels}" if schema.entity_labels else "")
    return f"the events; type is one of {schema.event_labels}"


def openie_signature(schema: Schema, task: str = "ner", *, instructions: str | None = None) -> type[dspy.Signature]:
    """A ``dspy.Signature`` class: ``text -> entities | relations | events`` for ``schema``.

    ``instructions`` replaces the generated ones (the output field still names the allowed types).
    """
    check_task(task)
    fields = {
        INPUT_FIELD: (str, dspy.InputField(desc="the input text")),
        OUTPUT_FIELDS[task]: (list[item_type(schema, task)],  # type: ignore[misc]
                              dspy.OutputField(desc=_output_desc(schema, task))),
    }
    name = {"ner": "EntityExtraction", "re": "RelationExtraction", "ee": "EventExtraction"}[task]
    return dspy.make_signature(fields, instructions or schema_instructions(schema, task), signature_name=name)


# ---------------------------------------------------------------------------------------------
# gold records -> DSPy examples (demonstrations, training sets)
# ---------------------------------------------------------------------------------------------


def gold_output(record: Record, task: str) -> list[dict[str, Any]]:
    """The record's annotations for ``task`` as the output items a model should write, in text order."""
    check_task(task)
    if task == "ner":
        return [{"text": e.text, "type": e.label} for e in sorted(record.entities, key=lambda e: (e.start, e.end, e.label))]
    if task == "re":
        rels = sorted(record.relations, key=lambda r: (r.head.start, r.tail.start, r.label))
        return [{"head": r.head.text, "head_type": r.head.label, "type": r.label, "tail": r.tail.text,
                 "tail_type": r.tail.label} for r in rels]
    return [{"trigger": ev.trigger.text, "type": ev.type,
             "arguments": [{"role": a.role, "text": a.text} for a in sorted(ev.arguments, key=lambda a: (a.start, a.role))]}
            for ev in sorted(record.events, key=lambda ev: (ev.trigger.start, ev.type))]


def example_from_record(record: Record, task: str = "ner") -> dspy.Example:
    """A labelled ``dspy.Example`` (input ``text``, the gold output, and ``record_id`` to find the gold again)."""
    return dspy.Example(record_id=record.id, text=record.text,
                        **{OUTPUT_FIELDS[task]: gold_output(record, task)}).with_inputs(INPUT_FIELD)


# ---------------------------------------------------------------------------------------------
# predictions -> grounded records
# ---------------------------------------------------------------------------------------------


def _field(prediction: Any, name: str) -> Any:
    if isinstance(prediction, Mapping):
        return prediction.get(name)
    try:
        return prediction[name]
    except (KeyError, TypeError, IndexError):
        return getattr(prediction, name, None)


def _items(value: Any, name: str, result: ParseResult) -> list[dict[str, Any]]:
    """The output field as a list of dicts (pydantic items, dicts or a JSON string); problems recorded."""
    if value is None:
        result.problems.append(ParseProblem("empty", f"the prediction has no {name!r} field"))
        return []
    if isinstance(value, str):
        raw = value
        value, note = load_json_leniently(raw)
        if note:
            result.problems.append(ParseProblem("syntax", note, raw[:200]))
        if value is None:
            return []
    if isinstance(value, (BaseModel, Mapping)):
        value = [value]
    if not isinstance(value, list):
        result.problems.append(ParseProblem("invalid", f"{name!r} should be a list, got {type(value).__name__}"))
        return []
    out = []
    for item in value:
        if isinstance(item, BaseModel):
            item = item.model_dump()
        if isinstance(item, Mapping):
            out.append({k: v for k, v in item.items()})
        else:
            result.problems.append(ParseProblem("invalid", f"a {name} item should be an object", str(item)[:200]))
    return out


def _text(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    return value.strip() if isinstance(value, str) else ("" if value is None else str(value).strip())


def _entities(record: Record, schema: Schema, items: list[dict[str, Any]], result: ParseResult,
              fuzzy_threshold: float) -> None:
    kept: list[tuple[str, str]] = []
    for item in items:
        span, label = _text(item, "text"), _text(item, "type")
        if not span:
            result.problems.append(ParseProblem("invalid", "empty entity text", json.dumps(item, default=str)[:200]))
        elif label not in schema.entity_labels:
            result.problems.append(ParseProblem("unknown_type", f"{label!r} is not an entity type of the schema", span))
        else:
            kept.append((label, span))
    for (label, span), a in zip(kept, ground_all(record.text, [s for _, s in kept], fuzzy_threshold=fuzzy_threshold),
                                strict=True):
        result.alignments.append(a)
        if a.found:
            result.entities.append(Entity(a.start, a.end, label, record.text[a.start:a.end]))  # type: ignore[arg-type]
        else:
            result.problems.append(ParseProblem("not_found", f"{span!r} does not occur in the input", span))


def _relations(record: Record, schema: Schema, items: list[dict[str, Any]], result: ParseResult,
               fuzzy_threshold: float) -> None:
    types = {r.name: r for r in schema.relation_types}
    entity_labels = set(schema.entity_labels)
    kept: list[tuple[str, str, str, str, str]] = []
    for item in items:
        head, tail, label = _text(item, "head"), _text(item, "tail"), _text(item, "type")
        head_type, tail_type = _text(item, "head_type"), _text(item, "tail_type")
        fragment = json.dumps(item, ensure_ascii=False, default=str)[:200]
        if not head or not tail:
            result.problems.append(ParseProblem("invalid", "empty head or tail", fragment))
            continue
        if label not in types:
            result.problems.append(ParseProblem("unknown_type", f"{label!r} is not a relation type of the schema", fragment))
            continue
        bad = [t for t in (head_type, tail_type) if entity_labels and t not in entity_labels]
        if bad:
            result.problems.append(ParseProblem("unknown_type", f"{bad[0]!r} is not an entity type of the schema", fragment))
            continue
        rel = types[label]
        if (rel.head_types and head_type not in rel.head_types) or (rel.tail_types and tail_type not in rel.tail_types):
            result.problems.append(ParseProblem("invalid", f"{label!r} does not link a {head_type!r} to a {tail_type!r}",
                                                fragment))
            continue
        kept.append((label, head, head_type, tail, tail_type))
    # the same words name the same mention: ground each distinct text once, in order of appearance
    texts = list(dict.fromkeys(t for _, h, _, tl, _ in kept for t in (h, tl)))
    where = dict(zip(texts, ground_all(record.text, texts, fuzzy_threshold=fuzzy_threshold), strict=True))
    result.alignments += where.values()
    for t, a in where.items():
        if not a.found:
            result.problems.append(ParseProblem("not_found", f"{t!r} does not occur in the input", t))
    for label, head, head_type, tail, tail_type in kept:
        h, tl = where[head], where[tail]
        if h.found and tl.found:
            result.relations.append(Relation(Entity(h.start, h.end, head_type, record.text[h.start:h.end]),  # type: ignore[arg-type]
                                             Entity(tl.start, tl.end, tail_type, record.text[tl.start:tl.end]),  # type: ignore[arg-type]
                                             label))


def _events(record: Record, schema: Schema, items: list[dict[str, Any]], result: ParseResult,
            fuzzy_threshold: float) -> None:
    types = {e.name: e for e in schema.event_types}
    kept: list[tuple[str, str, list[tuple[str, str]]]] = []
    for item in items:
        trigger, label = _text(item, "trigger"), _text(item, "type")
        fragment = json.dumps(item, ensure_ascii=False, default=str)[:200]
        if not trigger:
            result.problems.append(ParseProblem("invalid", "empty event trigger", fragment))
            continue
        if label not in types:
            result.problems.append(ParseProblem("unknown_type", f"{label!r} is not an event type of the schema", fragment))
            continue
        roles = {r.name for r in types[label].roles}
        args = []
        raw_args = item.get("arguments") or []
        for arg in raw_args if isinstance(raw_args, list) else []:
            arg = arg.model_dump() if isinstance(arg, BaseModel) else arg
            if not isinstance(arg, Mapping):
                result.problems.append(ParseProblem("invalid", "an argument should be an object", str(arg)[:200]))
                continue
            role, span = _text(arg, "role"), _text(arg, "text")
            if not role or not span:
                result.problems.append(ParseProblem("invalid", "argument without role or text", str(dict(arg))[:200]))
            elif roles and role not in roles:
                result.problems.append(ParseProblem("unknown_type", f"{role!r} is not a role of event type {label!r}",
                                                    span))
            else:
                args.append((role, span))
        kept.append((label, trigger, args))
    triggers = ground_all(record.text, [t for _, t, _ in kept], fuzzy_threshold=fuzzy_threshold)
    for (label, trigger, args), a in zip(kept, triggers, strict=True):
        result.alignments.append(a)
        if not a.found:
            result.problems.append(ParseProblem("not_found", f"trigger {trigger!r} does not occur in the input", trigger))
            continue
        found_args = []
        for (role, span), b in zip(args, ground_all(record.text, [s for _, s in args], fuzzy_threshold=fuzzy_threshold),
                                   strict=True):
            result.alignments.append(b)
            if b.found:
                found_args.append(EventArgument(b.start, b.end, role, record.text[b.start:b.end]))  # type: ignore[arg-type]
            else:
                result.problems.append(ParseProblem("not_found", f"argument {span!r} does not occur in the input", span))
        result.events.append(Event(Entity(a.start, a.end, label, record.text[a.start:a.end]),  # type: ignore[arg-type]
                                   tuple(found_args)))


def parse_prediction(prediction: Any, record: Record, schema: Schema, task: str = "ner", *,
                     fuzzy_threshold: float = 0.8) -> ParseResult:
    """The grounded annotations of a prediction's output field, with every problem recorded; never raises."""
    result = ParseResult()
    if task not in TASKS:
        result.problems.append(ParseProblem("invalid", f"unknown task {task!r}; tasks are {', '.join(TASKS)}"))
        return result
    name = OUTPUT_FIELDS[task]
    items = _items(_field(prediction, name), name, result)
    reader = {"ner": _entities, "re": _relations, "ee": _events}[task]
    reader(record, schema, items, result, fuzzy_threshold)
    return result


def prediction_to_record(prediction: Any, record: Record, schema: Schema, task: str = "ner", *,
                         fuzzy_threshold: float = 0.8) -> Record:
    """A prediction record for ``record``'s input: grounded annotations, ``parse_problems`` and
    ``alignment`` counts in meta (as every openie parser leaves them); never raises."""
    return parse_prediction(prediction, record, schema, task, fuzzy_threshold=fuzzy_threshold).to_record(record)


__all__ = [
    "INPUT_FIELD", "ITEM_TYPES", "MAX_MENTION_CHARS", "OUTPUT_FIELDS", "TASKS", "ArgumentItem", "EntityItem", "EventItem", "RelationItem",
    "check_task", "example_from_record", "gold_output", "item_type", "openie_signature", "parse_prediction", "prediction_to_record",
    "schema_instructions", "type_descriptions",
]
