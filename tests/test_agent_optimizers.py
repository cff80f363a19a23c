"""DSPy's optimisers with openie's strict F1: the metric, BootstrapFewShot, MIPROv2 offline, save and load."""

from __future__ import annotations

import itertools
import json

import dspy
import pytest

from openie.agent.modules import DSPyExtractor, ProgramSpec, load_program, save_program
from openie.agent.optimizers import StrictF1, examples_from_records, optimize_program, record_f1
from openie.engines.dspy_lm import openie_lm
from openie.engines.scripted import ScriptedEngine
from openie.errors import UnknownNameError
from openie.records import Entity, Event, EventArgument, Record, Relation
from openie.schema import Schema
from openie.testing import toy_pool

SCHEMA = Schema.from_labels(["person", "location", "organization", "product"])
POOL = toy_pool(12)
TEST = [Record("t1", "Hiro visited Quito last year ."), Record("t2", "The Walkman was sold by Nokia .")]
GOLD_TEST = {"Hiro visited Quito last year .": [("Hiro", "person"), ("Quito", "location")],
             "The Walkman was sold by Nokia .": [("Walkman", "product"), ("Nokia", "organization")]}


def answer(**fields: object) -> str:
    return "\n\n".join(f"[[ ## {k} ## ]]\n{v if isinstance(v, str) else json.dumps(v)}" for k, v in fields.items()) + \
        "\n\n[[ ## completed ## ]]"


def query_text(prompt: str) -> str:
    return prompt.rsplit("[[ ## text ## ]]\n", 1)[1].split("\n\n", 1)[0]


def gold_pairs(text: str) -> list[tuple[str, str]]:
    if text in GOLD_TEST:
        return GOLD_TEST[text]
    record = next(r for r in POOL if r.text == text)
    return [(e.text, e.label) for e in record.entities]


def oracle(wrong: set[str] = frozenset(), needs: str | None = None):
    """A scripted LM that extracts toy-pool texts correctly, except texts in ``wrong`` (every type swapped)
    and, with ``needs``, prompts whose instructions lack that word (it then finds nothing)."""

    def reply(request) -> str:
        text = query_text(request.prompt)
        pairs = gold_pairs(text)
        if text in wrong:
            pairs = [(t, "product" if y != "product" else "person") for t, y in pairs]
        if needs is not None and needs not in request.prompt.split("User:")[0]:
            pairs = []
        return answer(entities=[{"text": t, "type": y} for t, y in pairs])

    return reply


def test_record_f1_is_openies_strict_f1_per_record():
    gold = Record("g", "Anna visited Paris .", entities=[Entity(0, 4, "person", "Anna"), Entity(13, 18, "location", "Paris")])
    assert record_f1(gold, gold) == 1.0
    half = Record("g", gold.text, entities=[Entity(0, 4, "person", "Anna"), Entity(13, 18, "person", "Paris")])
    assert record_f1(gold, half) == pytest.approx(0.5)
    assert record_f1(Record("e", "x"), Record("e", "x")) == 1.0  # nothing to find, nothing found
    assert record_f1(Record("e", gold.text), half) == 0.0
    rel = Relation(gold.entities[0], gold.entities[1], "lives_in")
    assert record_f1(Record("g", gold.text, relations=[rel]), Record("g", gold.text, relations=[rel]), "re") == 1.0
    trig = Entity(5, 12, "travel", "visited")
    ev_gold = Record("g", gold.text, events=[Event(trig, (EventArgument(0, 4, "who", "Anna"),))])
    ev_pred = Record("g", gold.text, events=[Event(trig, (EventArgument(13, 18, "who", "Paris"),))])
    assert record_f1(ev_gold, ev_pred, "ee") == pytest.approx(0.5)  # trigger right, argument wrong


def test_strict_f1_metric_reads_the_gold_by_record_id_or_grounds_the_example():
    record = Record("r", "Anna met Anna .", entities=[Entity(9, 13, "person", "Anna")])
    [example] = examples_from_records([record])
    metric = StrictF1(SCHEMA, gold={"r": record})
    right = dspy.Prediction(entities=[{"text": "Anna", "type": "person"}])
    # grounded to the first "Anna" (0, 4): strict F1 sees the wrong offsets, as the reports would
    assert metric(example, right) == 0.0
    assert StrictF1(SCHEMA)(example, right) == 1.0  # no gold record: the example's own output, grounded alike
    assert metric(example, dspy.Prediction(entities="garbage")) == 0.0


def test_bootstrap_few_shot_keeps_traces_with_perfect_strict_f1_and_round_trips_save_and_load(tmp_path):
    engine = ScriptedEngine(oracle(wrong={POOL[0].text}))
    lm = openie_lm(engine)
    spec = ProgramSpec("predict")
    compiled = optimize_program(spec.build(SCHEMA), POOL[:6], schema=SCHEMA, lm=lm, optimizer="bootstrap",
                                max_bootstrapped_demos=2, max_labeled_demos=3, metric_threshold=1.0)
    demos = compiled.demos
    # POOL[0] is answered wrongly (F1 0): the traces kept are those of POOL[1] and POOL[2], then one labelled example
    assert [d.text for d in demos[:2]] == [POOL[1].text, POOL[2].text]
    assert all(d.get("augmented") for d in demos[:2]) and len(demos) == 3 and not demos[2].get("augmented")
    assert demos[2].text in {r.text for r in POOL[3:6]} | {POOL[0].text}
    save_program(compiled, spec, SCHEMA, tmp_path / "boot")
    loaded, _, _ = load_program(tmp_path / "boot")
    assert [d["text"] for d in loaded.demos] == [d.text for d in demos]
    engines = [ScriptedEngine(oracle()), ScriptedEngine(oracle())]
    preds = [DSPyExtractor(p, e, SCHEMA, show_progress=False).extract_batch(TEST)
             for p, e in zip((compiled, loaded), engines, strict=True)]
    assert [c.prompt for c in engines[0].calls] == [c.prompt for c in engines[1].calls]
    assert POOL[1].text in engines[1].calls[0].prompt
    assert [p.entities for p in preds[0]] == [p.entities for p in preds[1]]
    assert preds[1][0].entities == [Entity(0, 4, "person", "Hiro"), Entity(13, 18, "location", "Quito")]


def test_mipro_v2_runs_offline_and_picks_the_instruction_that_scores(tmp_path):
    counter = itertools.count(1)
    prompt_engine = ScriptedEngine(lambda r: answer(proposed_instruction=f"Copy each name; proposal {next(counter)}."))
    task_engine = ScriptedEngine(oracle(needs="proposal"))
    spec = ProgramSpec("predict")
    compiled = optimize_program(spec.build(SCHEMA), POOL[:4], valset=POOL[4:8], schema=SCHEMA,
                                lm=openie_lm(task_engine), prompt_lm=openie_lm(prompt_engine), optimizer="mipro",
                                num_candidates=2, num_trials=3, seed=0)
    assert "proposal" in compiled.signature.instructions  # the original instruction scores 0 on the valset
    assert any("proposed_instruction" in c.prompt for c in prompt_engine.calls)
    save_program(compiled, spec, SCHEMA, tmp_path / "mipro")
    loaded, _, _ = load_program(tmp_path / "mipro")
    assert loaded.signature.instructions == compiled.signature.instructions
    [pred] = DSPyExtractor(loaded, ScriptedEngine(oracle(needs="proposal")), SCHEMA,
                           show_progress=False).extract_batch(TEST[:1])
    assert [e.text for e in pred.entities] == ["Hiro", "Quito"]


def test_optimizer_names_and_options_are_checked():
    lm = openie_lm(ScriptedEngine(oracle()))
    with pytest.raises(UnknownNameError, match="copro"):
        optimize_program(ProgramSpec().build(SCHEMA), POOL[:2], schema=SCHEMA, lm=lm, optimizer="copro")
    with pytest.raises(UnknownNameError, match="max_demos"):
        optimize_program(ProgramSpec().build(SCHEMA), POOL[:2], schema=SCHEMA, lm=lm, max_demos=2)
    with pytest.raises(ValueError, match="training set is empty"):
        optimize_program(ProgramSpec().build(SCHEMA), [], schema=SCHEMA, lm=lm)
