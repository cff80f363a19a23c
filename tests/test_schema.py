from __future__ import annotations

import json

import pytest

from openie.errors import SchemaError
from openie.schema import EntityType, EventType, RoleType, Schema


def _schema() -> Schema:
    return Schema.from_dict({
        "entities": [{"name": "person", "description": "a human"}, "location"],
        "relations": [{"name": "live_in", "head_types": ["person"], "tail_types": ["location"]}],
        "events": [{"name": "attack", "roles": ["attacker", {"name": "target", "description": "who is hit"}]}],
        "label_map": {"PER": "person", "LOC": "location"},
    })


def test_round_trip_dict_and_file(tmp_path):
    s = _schema()
    assert Schema.from_dict(s.to_dict()) == s
    (tmp_path / "s.json").write_text(json.dumps(s.to_dict()))
    assert Schema.load(tmp_path / "s.json") == s
    (tmp_path / "s.yaml").write_text("entities:\n  - person\n  - {name: location, description: a place}\n")
    assert Schema.load(tmp_path / "s.yaml").description("location") == "a place"


def test_lookups_and_label_map():
    s = _schema()
    assert s.entity_labels == ["person", "location"]
    assert s.description("person") == "a human" and s.description("location") is None
    assert s.map_label("PER") == "person" and s.map_label("person") == "person"


@pytest.mark.parametrize("bad, msg", [
    ({"entities": ["a", "a"]}, "duplicate entity label 'a'"),
    ({"entities": ["", "b"]}, "non-empty"),
    ({"entities": ["a"], "relations": [{"name": "r", "head_types": ["zzz"]}]}, "unknown entity type 'zzz'"),
    ({"entities": ["a"], "label_map": {"X": "nope"}}, "not a label"),
    ({"entities": ["a"], "colour": 1}, "unknown schema field"),
])
def test_bad_schemas_are_rejected_clearly(bad, msg):
    with pytest.raises(SchemaError, match=msg):
        Schema.from_dict(bad)


def test_bad_schema_file_names_the_file(tmp_path):
    (tmp_path / "bad.json").write_text('{"entities": ["a", "a"]}')
    with pytest.raises(SchemaError, match="bad.json"):
        Schema.load(tmp_path / "bad.json")


def test_json_schema_validates_outputs():
    s = _schema()
    good = {"entities": [{"text": "Ada", "type": "person"}],
            "relations": [{"head": "Ada", "type": "live_in", "tail": "London"}],
            "events": [{"trigger": "shot", "type": "attack", "arguments": [{"role": "target", "text": "him"}]}]}
    s.validate(good)
    assert s.validation_errors(good) == []
    bad = {"entities": [{"text": "Ada", "type": "animal"}], "relations": [], "events": [], "extra": 1}
    errors = s.validation_errors(bad)
    assert any("entities/0/type" in e for e in errors) and any("extra" in e for e in errors)
    with pytest.raises(SchemaError):
        s.validate({"entities": [{"text": "x"}], "relations": [], "events": []})


def test_entity_only_schema_has_only_entities_key():
    s = Schema((EntityType("a"), EntityType("b")))
    js = s.json_schema()
    assert list(js["properties"]) == ["entities"] and js["required"] == ["entities"]
    ev = Schema(event_types=(EventType("e", roles=(RoleType("r"),)),))
    assert ev.json_schema()["properties"]["events"]["items"]["properties"]["arguments"]["items"]["properties"]["role"] == {"enum": ["r"]}
