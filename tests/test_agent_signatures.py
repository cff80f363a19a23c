"""Schema signatures and the way back: predictions become grounded records, and bad outputs become problems."""

from __future__ import annotations

import dspy
import pytest

from openie.agent.signatures import (
    EntityItem,
    EventItem,
    RelationItem,
    example_from_record,
    gold_output,
    openie_signature,
    prediction_to_record,
    schema_instructions,
    type_descriptions,
)
from openie.engines.dspy_lm import openie_lm
from openie.engines.scripted import ScriptedEngine
from openie.errors import SchemaError, UnknownNameError
from openie.records import Entity, Event, EventArgument, Record, Relation
from openie.schema import Schema

SCHEMA = Schema.from_dict({
    "entities": [{"name": "person", "description": "a human being"}, {"name": "location", "description": "a place"},
                 "organization"],
    "relations": [{"name": "lives_in", "description": "where someone lives", "head_types": ["person"],
                   "tail_types": ["location"]}, "works_for"],
    "events": [{"name": "travel", "description": "someone goes somewhere",
                "roles": [{"name": "traveller", "description": "who travels"}, {"name": "destination"}]}],
})
TEXT = "Anna visited Paris and Anna left Oslo ."


def answer(**fields: str) -> str:
    """A ChatAdapter answer with these output fields."""
    return "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in fields.items()) + "\n\n[[ ## completed ## ]]"


def predict(signature, text: str, reply: str) -> tuple[dspy.Prediction, ScriptedEngine]:
    engine = ScriptedEngine(lambda r: reply)
    with dspy.context(lm=openie_lm(engine)):
        return dspy.Predict(signature)(text=text), engine


def test_signature_instructions_describe_every_type_and_the_output_is_typed():
    sig = openie_signature(SCHEMA, "ner")
    assert list(sig.input_fields) == ["text"] and list(sig.output_fields) == ["entities"]
    (item,) = sig.output_fields["entities"].annotation.__args__
    assert issubclass(item, EntityItem)
    assert item.model_json_schema()["properties"]["type"]["enum"] == ["person", "location", "organization"]
    assert item(text="Ada", type="planet").type == "planet"  # the enum guides the model; validation stays per item
    assert sig.instructions.splitlines()[-4:] == ["Entity types:", "- person: a human being", "- location: a place",
                                                  "- organization"]
    re_sig = openie_signature(SCHEMA, "re")
    (rel,) = re_sig.output_fields["relations"].annotation.__args__
    assert issubclass(rel, RelationItem)
    props = rel.model_json_schema()["properties"]
    assert props["type"]["enum"] == ["lives_in", "works_for"] and props["head_type"]["enum"] == SCHEMA.entity_labels
    assert "- lives_in (head: person; tail: location): where someone lives" in re_sig.instructions
    ee_sig = openie_signature(SCHEMA, "ee")
    (event,) = ee_sig.output_fields["events"].annotation.__args__
    assert issubclass(event, EventItem)
    defs = event.model_json_schema()["$defs"]
    assert defs["ArgumentItem"]["properties"]["role"]["enum"] == ["destination", "traveller"]
    assert "- travel (roles: traveller, destination): someone goes somewhere" in ee_sig.instructions
    assert "  - traveller: who travels" in ee_sig.instructions
    assert openie_signature(SCHEMA, "ner", instructions="Find names.").instructions == "Find names."


def test_bad_tasks_and_schemas_are_named():
    with pytest.raises(UnknownNameError, match="event"):
        openie_signature(SCHEMA, "event")
    with pytest.raises(SchemaError, match="no relation types"):
        schema_instructions(Schema.from_labels(["person"]), "re")


def test_ner_prediction_is_grounded_to_exact_offsets_and_repeated_mentions_are_distinct():
    reply = answer(entities='[{"text": "Anna", "type": "person"}, {"text": "Paris", "type": "location"}, '
                            '{"text": "Anna", "type": "person"}, {"text": "oslo", "type": "location"}]')
    pred, engine = predict(openie_signature(SCHEMA), TEXT, reply)
    assert "Anna visited Paris" in engine.calls[0].prompt
    record = prediction_to_record(pred, Record("r1", TEXT), SCHEMA)
    assert record.entities == [Entity(0, 4, "person", "Anna"), Entity(13, 18, "location", "Paris"),
                               Entity(23, 27, "person", "Anna"), Entity(33, 37, "location", "Oslo")]
    assert record.meta["parse_problems"] == []
    assert record.meta["alignment"] == {"exact": 3, "fuzzy": 1, "not_found": 0}
    assert record.check_offsets() == []


def test_labels_outside_the_schema_and_spans_outside_the_text_are_dropped_and_recorded():
    reply = answer(entities='[{"text": "Anna", "type": "person"}, {"text": "Paris", "type": "city"}, '
                            '{"text": "Berlin", "type": "location"}, {"text": "", "type": "person"}, {"type": "person"}]')
    pred, _ = predict(openie_signature(SCHEMA), TEXT, reply)
    record = prediction_to_record(pred, Record("r1", TEXT), SCHEMA)
    assert record.entities == [Entity(0, 4, "person", "Anna")]
    kinds = [(p["kind"], p["fragment"]) for p in record.meta["parse_problems"]]
    assert kinds == [("unknown_type", "Paris"), ("invalid", '{"text": "", "type": "person"}'),
                     ("invalid", '{"text": "", "type": "person"}'), ("not_found", "Berlin")]
    assert record.meta["alignment"]["not_found"] == 1


def test_unusable_output_fields_never_raise():
    record = Record("r1", TEXT)
    for value, kind in [(None, "empty"), ("no json here", "syntax"), (42, "invalid"), (["Anna"], "invalid")]:
        pred = prediction_to_record({"entities": value}, record, SCHEMA)
        assert pred.entities == [] and [p["kind"] for p in pred.meta["parse_problems"]] == [kind], value
    # a JSON string (a loaded demonstration, a lenient caller) is read like the parsed list
    pred = prediction_to_record({"entities": '[{"text": "Oslo", "type": "location"}]'}, record, SCHEMA)
    assert pred.entities == [Entity(33, 37, "location", "Oslo")]
    assert prediction_to_record({}, record, SCHEMA, "nope").meta["parse_problems"][0]["kind"] == "invalid"


def test_relations_are_grounded_with_typed_arguments_and_validated_against_the_schema():
    reply = answer(relations=(
        '[{"head": "Anna", "head_type": "person", "type": "lives_in", "tail": "Oslo", "tail_type": "location"}, '
        '{"head": "Anna", "head_type": "person", "type": "works_for", "tail": "Paris", "tail_type": "organization"}, '
        '{"head": "Anna", "head_type": "person", "type": "born_in", "tail": "Paris", "tail_type": "location"}, '
        '{"head": "Paris", "head_type": "location", "type": "lives_in", "tail": "Oslo", "tail_type": "location"}, '
        '{"head": "Anna", "head_type": "human", "type": "works_for", "tail": "Oslo", "tail_type": "organization"}, '
        '{"head": "Anna", "head_type": "person", "type": "works_for", "tail": "Rome", "tail_type": "organization"}]'))
    pred, _ = predict(openie_signature(SCHEMA, "re"), TEXT, reply)
    record = prediction_to_record(pred, Record("r1", TEXT), SCHEMA, "re")
    anna = Entity(0, 4, "person", "Anna")
    assert record.relations == [Relation(anna, Entity(33, 37, "location", "Oslo"), "lives_in"),
                                Relation(anna, Entity(13, 18, "organization", "Paris"), "works_for")]
    kinds = [p["kind"] for p in record.meta["parse_problems"]]
    assert kinds == ["unknown_type", "invalid", "unknown_type", "not_found"]
    assert "does not link a 'location'" in record.meta["parse_problems"][1]["detail"]


def test_events_are_grounded_with_their_arguments_and_roles_checked():
    reply = answer(events=(
        '[{"trigger": "visited", "type": "travel", "arguments": [{"role": "traveller", "text": "Anna"}, '
        '{"role": "destination", "text": "Paris"}, {"role": "vehicle", "text": "Oslo"}]}, '
        '{"trigger": "left", "type": "departure", "arguments": []}, '
        '{"trigger": "flew", "type": "travel"}]'))
    pred, _ = predict(openie_signature(SCHEMA, "ee"), TEXT, reply)
    record = prediction_to_record(pred, Record("r1", TEXT), SCHEMA, "ee")
    assert record.events == [Event(Entity(5, 12, "travel", "visited"),
                                   (EventArgument(0, 4, "traveller", "Anna"), EventArgument(13, 18, "destination", "Paris")))]
    assert [p["kind"] for p in record.meta["parse_problems"]] == ["unknown_type", "unknown_type", "not_found"]


def test_gold_records_become_examples_whose_outputs_ground_back_to_the_gold():
    gold = Record("g1", TEXT, entities=[Entity(23, 27, "person", "Anna"), Entity(0, 4, "person", "Anna"),
                                        Entity(13, 18, "location", "Paris")])
    example = example_from_record(gold)
    assert example.inputs().toDict() == {"text": TEXT} and example.record_id == "g1"
    assert example.entities == [{"text": "Anna", "type": "person"}, {"text": "Paris", "type": "location"},
                                {"text": "Anna", "type": "person"}]
    assert prediction_to_record(example, gold.without_annotations(), SCHEMA).entities == sorted(gold.entities)
    rel = Relation(Entity(0, 4, "person", "Anna"), Entity(33, 37, "location", "Oslo"), "lives_in")
    assert gold_output(Record("g2", TEXT, relations=[rel]), "re") == [
        {"head": "Anna", "head_type": "person", "type": "lives_in", "tail": "Oslo", "tail_type": "location"}]


def test_type_descriptions_per_task():
    assert type_descriptions(SCHEMA, "ner") == {"person": "a human being", "location": "a place", "organization": ""}
    assert type_descriptions(SCHEMA, "re")["works_for"] == {
        "description": "", "head_types": ["person", "location", "organization"],
        "tail_types": ["person", "location", "organization"]}
    assert type_descriptions(SCHEMA, "ee") == {"travel": {"description": "someone goes somewhere",
                                                          "roles": {"traveller": "who travels", "destination": ""}}}
