from __future__ import annotations

from openie.display import compare_html, entities_html, label_colour
from openie.records import Entity, Record, Relation

TEXT = "Ada <Lovelace> met Babbage in London ."


def _rec(entities) -> Record:
    return Record("r", TEXT, entities=entities)


def test_entities_are_marked_and_text_is_escaped():
    ada = Entity(0, 14, "person", "Ada <Lovelace>")
    out = entities_html(TEXT, [ada, Entity(4, 14, "person", "<Lovelace>")])  # the nested one is not doubled
    assert out.count("<mark") == 1 and "&lt;Lovelace&gt;" in out and label_colour("person") in out
    html = _rec([ada]).__class__._repr_html_(Record("r", TEXT, entities=[ada], relations=[Relation(ada, ada, "self")]))
    assert "self" in html and "<mark" in html


def test_compare_outlines_what_the_other_side_lacks():
    gold = _rec([Entity(19, 26, "person", "Babbage"), Entity(30, 36, "location", "London")])
    pred = _rec([Entity(19, 26, "person", "Babbage"), Entity(30, 36, "person", "London")])
    out = compare_html(gold, pred)
    assert out.count("outline:2px solid #d33") == 2  # gold London/location missed, predicted London/person spurious
    assert label_colour("person") == label_colour("person") != label_colour("location")
