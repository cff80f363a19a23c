from __future__ import annotations

import pytest

from openie.errors import DataFormatError
from openie.records import Entity, Event, EventArgument, Record, Relation, iter_jsonl, read_jsonl, write_jsonl


def _record() -> Record:
    text = "Marie Curie worked in Paris ."
    marie, paris = Entity(0, 11, "person", "Marie Curie"), Entity(22, 27, "location", "Paris")
    trig = Entity(12, 18, "work", "worked")
    return Record(
        id="r1", text=text, lang="en", entities=[marie, paris],
        relations=[Relation(marie, paris, "live_in")],
        events=[Event(trig, (EventArgument(0, 11, "agent", "Marie Curie"), EventArgument(22, 27, "place", "Paris")))],
        tokens=text.split(" "), meta={"source": "test"},
    )


def test_jsonl_round_trip_is_identical(tmp_path):
    rec = _record()
    assert write_jsonl([rec, Record("r2", "Nothing here .")], tmp_path / "x.jsonl") == 2
    back = read_jsonl(tmp_path / "x.jsonl")
    assert back[0] == rec
    assert back[1] == Record("r2", "Nothing here .")


def test_token_offsets_and_offset_check():
    rec = _record()
    offs = rec.token_offsets()
    assert [rec.text[s:e] for s, e in offs] == rec.tokens
    assert rec.check_offsets() == []
    rec.entities.append(Entity(0, 5, "person", "Curie"))
    assert "Marie" in rec.check_offsets()[0]


def test_without_annotations_keeps_input_only():
    bare = _record().without_annotations()
    assert bare.text == _record().text and not bare.entities and not bare.relations and not bare.events


def test_event_type_is_trigger_label():
    assert _record().events[0].type == "work"


def test_bad_offsets_rejected():
    with pytest.raises(ValueError):
        Entity(5, 2, "x", "")


@pytest.mark.parametrize(
    "content, needle",
    [
        (b'{"id": "a", "text": "x"}\n{"id": "b", "text": \n', "line 2"),
        (b'{"id": "a"}\n', "missing field"),
        (b'{"id": "a", "text": "abc", "entities": [{"start": 0, "end": 2, "label": "x", "text": "bc"}]}\n', "line 1"),
        (b'{"id": "a", "text": "\xff"}\n', "not UTF-8"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, needle):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataFormatError) as err:
        list(iter_jsonl(path))
    assert "bad.jsonl" in str(err.value) and needle in str(err.value)
