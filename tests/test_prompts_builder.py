from __future__ import annotations

from pathlib import Path

import pytest

from openie.datasets import dataset_schema, load_dataset
from openie.records import Entity, Event, EventArgument, Record
from openie.schema import Schema
from prompts import PromptBuilder, render

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def ai(shared_data):
    return load_dataset("crossner_ai", "dev"), dataset_schema("crossner_ai")


def test_ruie_prompt_matches_the_golden_layout(ai):
    records, schema = ai
    prompt = PromptBuilder("ner.ruie.v1", schema).build(records[0], records[1:9])[0]
    assert prompt.text + "\n" == (GOLDEN / "ner.ruie.v1.crossner_ai.txt").read_text()
    assert prompt.demo_ids == tuple(r.id for r in records[1:9])
    # SEEDS.md layout: instruction, examples block, then the query; most relevant demonstration last
    text = prompt.text
    assert "\n\nHere are some examples (For Analysis Only, Not for Extraction):\n---\nTask: NER\n" in text
    assert "\n---\n\nNow strictly following my instruction to handle this input:\n\nTask: NER\n" in text
    last_demo = text.split("\n---\n\nNow strictly")[0].rsplit("Task: NER", 1)[1]
    assert records[1].text in last_demo
    assert text.endswith(f'Input: "{records[0].text}"\nOutput:')
    assert text.count("Task: NER") == 9


def _schema() -> Schema:
    return Schema.from_labels({"person": "a human", "location": None})


def _rec(i: int, text: str = "Ada Lovelace was born in London .") -> Record:
    return Record(f"r{i}", text, entities=[Entity(0, 12, "person", "Ada Lovelace"), Entity(25, 31, "location", "London")])


def test_budget_drops_least_relevant_first_and_never_the_query():
    demos = [_rec(i, f"Demo number {i} about Ada Lovelace in London with several extra words to count .") for i in range(5)]
    for d in demos:
        d.entities = []
    b = PromptBuilder("ner.ruie.v1", _schema(), max_prompt_tokens=120)
    p = b.build(_rec(99), demos)[0]
    assert 0 < len(p.demo_ids) < 5 and p.demo_ids == tuple(d.id for d in demos[: len(p.demo_ids)])
    assert len(p.text.split()) <= 120
    tiny = PromptBuilder("ner.ruie.v1", _schema(), max_prompt_tokens=5).build(_rec(99), demos)[0]
    assert tiny.demo_ids == () and _rec(99).text in tiny.text


def test_query_duplicates_are_not_demonstrations():
    p = PromptBuilder("ner.ruie.v1", _schema()).build(_rec(1), [_rec(2), _rec(3, "Other text .")])[0]
    assert p.demo_ids == ("r3",)


def test_schema_shuffle_is_seeded_per_record():
    schema = Schema.from_labels([f"t{i}" for i in range(8)])
    a = PromptBuilder("ner.ruie.v1", schema, schema_seed=1).build(_rec(1))[0].text
    b = PromptBuilder("ner.ruie.v1", schema, schema_seed=1).build(_rec(1))[0].text
    c = PromptBuilder("ner.ruie.v1", schema, schema_seed=2).build(_rec(1))[0].text
    plain = PromptBuilder("ner.ruie.v1", schema).build(_rec(1))[0].text
    assert a == b and a != c and "['t0', 't1', 't2', 't3', 't4', 't5', 't6', 't7']" in plain


def test_question_format_asks_once_per_type_and_parses_jointly():
    b = PromptBuilder("ner.question.v1", _schema())
    prompts = b.build(_rec(1))
    assert [p.label for p in prompts] == ["person", "location"] and "(a human)" in prompts[0].text
    pred = b.parse_record(_rec(1), prompts, ['["Ada Lovelace"]', '```json\n["London", "Paris"]\n```'])
    assert pred.entities == _rec(1).entities
    assert [p["kind"] for p in pred.meta["parse_problems"]] == ["not_found"]


def test_training_pairs_target_follows_prompt():
    pairs = PromptBuilder("ner.ruie.v1", _schema()).training_pairs([_rec(1)])
    assert len(pairs) == 1 and pairs[0][0].endswith("Output:")
    assert pairs[0][1] == " person: Ada Lovelace; location: London"


def test_eae_prompt_per_event_with_trigger_and_candidate_roles():
    from openie.schema import EventType, RoleType

    schema = Schema(event_types=(EventType("attack", roles=(RoleType("attacker"), RoleType("target"))),))
    text = "Rebels attacked the town ."
    ev = Event(Entity(7, 15, "attack", "attacked"), (EventArgument(0, 6, "attacker", "Rebels"),
                                                     EventArgument(16, 24, "target", "the town")))
    rec = Record("e1", text, events=[ev])
    b = PromptBuilder("eae.ruie.v1", schema)
    [p] = b.build(rec)
    assert "Schema: Given event trigger: \"attack: attacked\"; Candidate arguments: ['attacker', 'target']" in p.text
    assert b.target(rec, p) == " attacker: Rebels; target: the town"
    assert b.parse_record(rec, [p], [b.target(rec, p)]).events == [ev]


def test_chat_prompts_and_request_fields():
    p = PromptBuilder("ner.json.v1", _schema(), chat=True).build(_rec(1))[0]
    fields = p.request_fields()
    assert fields["messages"][0]["role"] == "user" and fields["template"].startswith("ner.json.v1@")
    assert "prompt" not in fields
    ruie = PromptBuilder("ner.ruie.v1", _schema()).build(_rec(1))[0].request_fields()
    assert ruie["stop"] == ("\n",) and ruie["prompt"].endswith("Output:")


def test_render_one_liner():
    assert render("ner.json.v1", _rec(1), _schema()).endswith("Text: Ada Lovelace was born in London .\nJSON:")


def test_a_demonstration_from_another_corpus_shows_its_own_label_set():
    from openie.records import Entity, Record
    from openie.schema import Schema
    from prompts.builder import PromptBuilder

    demo = Record("d", "Anna lives in Oslo", entities=[Entity(0, 4, "person", "Anna")],
                  meta={"schema": {"ner": ["person", "location"]}})
    builder = PromptBuilder("ner.ruie.v1", Schema.from_dict({"entities": ["algorithm", "researcher"]}))
    text = builder.render(Record("q", "Hinton studied backpropagation"), [demo])
    assert "Schema: ['person', 'location']\nInput: \"Anna lives in Oslo\"" in text
    assert text.rstrip().endswith("Schema: ['algorithm', 'researcher']\nInput: \"Hinton studied backpropagation\"\nOutput:")
