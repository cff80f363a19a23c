"""Tests of openie.metrics: hand-counted cases for every mode, and agreement with seqeval on CoNLL-2003 dev."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from openie.errors import UnknownNameError
from openie.metrics import (
    PRF,
    EvaluationReport,
    RecordMismatchError,
    SpanScores,
    entity_scores,
    evaluate,
    event_scores,
    macro_r_precision,
    partial_matches,
    r_precision,
    relation_scores,
)
from openie.readers import read_conll
from openie.records import Entity, Event, EventArgument, Record, Relation
from openie.tagging import spans_to_tags

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

TEXT = "Barack Obama met Angela Merkel in Berlin on Monday ."


def ent(text: str, surface: str, label: str, nth: int = 0) -> Entity:
    """Entity for the nth occurrence of ``surface`` in ``text``."""
    start = -1
    for _ in range(nth + 1):
        start = text.index(surface, start + 1)
    return Entity(start, start + len(surface), label, surface)


def rec(entities=(), relations=(), events=(), rid: str = "r1", text: str = TEXT) -> Record:
    return Record(rid, text, entities=list(entities), relations=list(relations), events=list(events))


def approx(x: float) -> object:
    return pytest.approx(x, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# PRF
# ---------------------------------------------------------------------------------------------


def test_prf_from_counts():
    p = PRF.from_counts(3, 1, 2)
    assert (p.precision, p.recall) == (0.75, 0.6)
    assert p.f1 == approx(2 * 0.75 * 0.6 / 1.35)
    assert p.support == 5 and p.predicted == 4


@pytest.mark.parametrize("tp,fp,fn", [(0, 0, 0), (0, 3, 0), (0, 0, 3), (0, 2, 2)])
def test_prf_zero_division_gives_zero(tp, fp, fn):
    p = PRF.from_counts(tp, fp, fn)
    assert (p.precision, p.recall, p.f1) == (0.0, 0.0, 0.0)


# ---------------------------------------------------------------------------------------------
# entities
# ---------------------------------------------------------------------------------------------

GOLD_ENTS = [ent(TEXT, "Barack Obama", "PER"), ent(TEXT, "Angela Merkel", "PER"),
             ent(TEXT, "Berlin", "LOC"), ent(TEXT, "Monday", "DATE")]


def test_entity_strict_hand_counted():
    pred = [ent(TEXT, "Barack Obama", "PER"),      # tp
            ent(TEXT, "Merkel", "PER"),            # fp (boundary), Angela Merkel fn
            ent(TEXT, "Berlin", "ORG"),            # fp (label), Berlin/LOC fn
            ent(TEXT, "Monday", "DATE"),           # tp
            ent(TEXT, "Monday", "DATE")]           # duplicate: counted once
    s = entity_scores([rec(GOLD_ENTS)], [rec(pred)], "strict")
    assert (s.micro.tp, s.micro.fp, s.micro.fn) == (2, 2, 2)
    assert (s.precision, s.recall, s.f1) == (0.5, 0.5, 0.5)
    assert list(s.per_type) == ["DATE", "LOC", "ORG", "PER"]  # gold ∪ pred, sorted
    assert s.per_type["PER"] == PRF.from_counts(1, 1, 1)
    assert s.per_type["DATE"] == PRF.from_counts(1, 0, 0)
    assert s.per_type["LOC"] == PRF.from_counts(0, 0, 1)
    assert s.per_type["ORG"] == PRF.from_counts(0, 1, 0)
    # macro over the four types of gold ∪ pred: (0.5 + 1 + 0 + 0) / 4
    assert s.macro_f1 == approx(0.375)
    assert s.per_type["LOC"].support == 1 and s.per_type["ORG"].support == 0


def test_entity_boundary_ignores_type_and_has_no_per_type_table():
    pred = [ent(TEXT, "Barack Obama", "ORG"), ent(TEXT, "Berlin", "LOC"), ent(TEXT, "Merkel", "PER")]
    s = entity_scores([rec(GOLD_ENTS)], [rec(pred)], "boundary")
    assert (s.micro.tp, s.micro.fp, s.micro.fn) == (2, 1, 2)
    assert s.precision == approx(2 / 3) and s.recall == approx(0.5)
    assert s.f1 == approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert s.per_type == {} and s.macro_f1 is None
    assert "macro" not in s.to_dict()


def test_entity_partial_overlap_same_type_one_to_one():
    pred = [ent(TEXT, "Obama", "PER"),             # overlaps Barack Obama: tp
            ent(TEXT, "Barack", "PER"),            # overlaps the same gold, which is taken: fp
            ent(TEXT, "Merkel in Berlin", "LOC"),  # overlaps Berlin/LOC (and Merkel, other type): tp
            ent(TEXT, "on Monday", "PER")]         # overlaps Monday but wrong type: fp
    s = entity_scores([rec(GOLD_ENTS)], [rec(pred)], "partial")
    assert (s.micro.tp, s.micro.fp, s.micro.fn) == (2, 2, 2)
    assert s.per_type["PER"] == PRF.from_counts(1, 2, 1)
    assert s.per_type["LOC"] == PRF.from_counts(1, 0, 0)
    assert s.per_type["DATE"] == PRF.from_counts(0, 0, 1)


def test_partial_matching_is_greedy_by_overlap_length():
    # gold A = [0, 10), gold B = [12, 20); prediction P = [5, 18) overlaps A by 5 and B by 6.
    gold = {(0, 10, "X"), (12, 20, "X")}
    assert partial_matches(gold, {(5, 18, "X")}) == {(5, 18, "X"): (12, 20, "X")}
    # a second prediction inside A then takes A; the larger overlap is served first either way
    preds = {(5, 18, "X"), (0, 3, "X")}
    assert partial_matches(gold, preds) == {(5, 18, "X"): (12, 20, "X"), (0, 3, "X"): (0, 10, "X")}
    # no overlap across types, and touching spans do not overlap
    assert partial_matches(gold, {(0, 10, "Y"), (10, 12, "X")}) == {}


def test_entity_partial_is_at_least_strict():
    pred = [ent(TEXT, "Barack Obama", "PER"), ent(TEXT, "Berlin", "LOC")]
    strict = entity_scores([rec(GOLD_ENTS)], [rec(pred)], "strict")
    partial = entity_scores([rec(GOLD_ENTS)], [rec(pred)], "partial")
    assert strict.to_dict()["micro"] == partial.to_dict()["micro"]


def test_scores_sum_over_records():
    r2_text = "Paris is nice ."
    gold = [rec(GOLD_ENTS), rec([ent(r2_text, "Paris", "LOC")], rid="r2", text=r2_text)]
    pred = [rec([ent(r2_text, "Paris", "LOC")], rid="r2", text=r2_text), rec(GOLD_ENTS[:1])]  # any order
    s = entity_scores(gold, pred)
    assert (s.micro.tp, s.micro.fp, s.micro.fn) == (2, 0, 3)
    assert s.recall == approx(0.4) and s.precision == 1.0


def test_empty_gold_and_pred():
    s = entity_scores([rec()], [rec()])
    assert (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)
    assert s.per_type == {} and s.macro_f1 is None


def test_pairing_errors_name_the_ids():
    gold = [rec(rid="a"), rec(rid="b"), rec(rid="c")]
    with pytest.raises(RecordMismatchError, match=r"no prediction for gold id\(s\) 'b', 'c'"):
        entity_scores(gold, [rec(rid="a")])
    with pytest.raises(RecordMismatchError, match=r"not in the gold 'z'"):
        entity_scores(gold, [*gold, rec(rid="z")])
    with pytest.raises(RecordMismatchError, match=r"duplicate predicted record id\(s\): 'a'"):
        entity_scores(gold, [*gold, rec(rid="a")])
    with pytest.raises(RecordMismatchError, match=r"text differ for id\(s\) 'b'"):
        entity_scores(gold, [gold[0], rec(rid="b", text="other"), gold[2]])
    with pytest.raises(ValueError):  # RecordMismatchError is a ValueError too
        relation_scores(gold, [])


def test_unknown_modes():
    with pytest.raises(UnknownNameError, match="known: boundary, partial, strict"):
        entity_scores([rec()], [rec()], "loose")
    with pytest.raises(UnknownNameError):
        relation_scores([rec()], [rec()], "partial")
    with pytest.raises(UnknownNameError):
        evaluate([rec()], [rec()], tasks=("ner", "coref"))


def test_str_is_an_aligned_table():
    pred = [ent(TEXT, "Barack Obama", "PER"), ent(TEXT, "Berlin", "ORGANISATION")]
    s = entity_scores([rec(GOLD_ENTS)], [rec(pred)])
    lines = str(s).splitlines()
    assert lines[0] == "ner (strict)"
    assert lines[1].split() == ["type", "precision", "recall", "f1", "support"]
    assert len({len(line) for line in lines[1:]}) == 1  # every row as wide as the header
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if not line.startswith("-")}
    assert rows["PER"] == ["1.0000", "0.5000", "0.6667", "2"]
    assert rows["ORGANISATION"] == ["0.0000", "0.0000", "0.0000", "0"]
    assert lines[-2].startswith("micro avg") and lines[-1].startswith("macro avg")


def test_to_dict_and_dataframe():
    pred = [ent(TEXT, "Barack Obama", "PER"), ent(TEXT, "Berlin", "ORG")]
    s = entity_scores([rec(GOLD_ENTS)], [rec(pred)])
    d = json.loads(json.dumps(s.to_dict()))
    assert d["micro"] == {"tp": 1, "fp": 1, "fn": 3, "precision": 0.5, "recall": 0.25,
                          "f1": pytest.approx(1 / 3), "support": 4}
    assert d["macro"]["f1"] == pytest.approx(s.macro_f1)
    assert set(d["per_type"]) == {"DATE", "LOC", "ORG", "PER"}
    df = s.to_dataframe()
    assert list(df.index) == ["DATE", "LOC", "ORG", "PER", "micro avg", "macro avg"]
    assert df.loc["PER", "f1"] == pytest.approx(s.per_type["PER"].f1)
    assert df.loc["micro avg", "tp"] == 1 and df.loc["LOC", "support"] == 1


def test_metrics_stays_on_the_core_floor():
    """Importing openie.metrics pulls in no model library and no pandas."""
    code = (
        "import sys, openie; before = set(sys.modules); import openie.metrics; "
        "new = set(sys.modules) - before; "
        "bad = sorted(m for m in new if m.split('.')[0] in {'torch', 'transformers', 'vllm', 'peft', 'pandas'}); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# ---------------------------------------------------------------------------------------------
# relations
# ---------------------------------------------------------------------------------------------

OBAMA, MERKEL, BERLIN = GOLD_ENTS[0], GOLD_ENTS[1], GOLD_ENTS[2]


def test_relation_strict_and_boundary():
    gold = [Relation(OBAMA, MERKEL, "meets"), Relation(MERKEL, BERLIN, "located_in")]
    merkel_org = Entity(MERKEL.start, MERKEL.end, "ORG", MERKEL.text)
    pred = [Relation(OBAMA, MERKEL, "meets"),              # tp in both modes
            Relation(merkel_org, BERLIN, "located_in"),    # head type wrong: boundary tp, strict fp
            Relation(BERLIN, MERKEL, "located_in"),        # reversed direction: fp in both
            Relation(OBAMA, MERKEL, "meets")]              # duplicate
    strict = relation_scores([rec(relations=gold)], [rec(relations=pred)], "strict")
    assert (strict.micro.tp, strict.micro.fp, strict.micro.fn) == (1, 2, 1)
    assert strict.precision == approx(1 / 3) and strict.recall == approx(0.5)
    assert strict.per_type["meets"] == PRF.from_counts(1, 0, 0)
    assert strict.per_type["located_in"] == PRF.from_counts(0, 2, 1)
    assert strict.macro_f1 == approx(0.5)
    boundary = relation_scores([rec(relations=gold)], [rec(relations=pred)], "boundary")
    assert (boundary.micro.tp, boundary.micro.fp, boundary.micro.fn) == (2, 1, 0)
    assert boundary.per_type["located_in"] == PRF.from_counts(1, 1, 0)
    assert str(boundary).splitlines()[0] == "re (boundary)"


def test_relation_label_must_match():
    gold = [Relation(OBAMA, MERKEL, "meets")]
    pred = [Relation(OBAMA, MERKEL, "located_in")]
    for mode in ("strict", "boundary"):
        s = relation_scores([rec(relations=gold)], [rec(relations=pred)], mode)
        assert (s.micro.tp, s.micro.fp, s.micro.fn) == (0, 1, 1)


# ---------------------------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------------------------

EV_TEXT = "Rebels attacked the town and killed two soldiers ."


def arg(surface: str, role: str) -> EventArgument:
    start = EV_TEXT.index(surface)
    return EventArgument(start, start + len(surface), role, surface)


def trig(surface: str, etype: str) -> Entity:
    return ent(EV_TEXT, surface, etype)


def test_event_scores_hand_counted():
    gold = [Event(trig("attacked", "Attack"), (arg("Rebels", "Attacker"), arg("the town", "Target"))),
            Event(trig("killed", "Die"), (arg("Rebels", "Agent"), arg("two soldiers", "Victim")))]
    pred = [
        # right trigger, right type; Rebels right; town with the wrong role
        Event(trig("attacked", "Attack"), (arg("Rebels", "Attacker"), arg("the town", "Place"))),
        # right trigger span, wrong type: its arguments carry the wrong event type too
        Event(trig("killed", "Injure"), (arg("two soldiers", "Victim"),)),
    ]
    s = event_scores([rec(events=gold, text=EV_TEXT)], [rec(events=pred, text=EV_TEXT)])
    ti, tc, ai, ac = (s.trigger_identification, s.trigger_classification,
                      s.argument_identification, s.argument_classification)
    assert (ti.micro.tp, ti.micro.fp, ti.micro.fn) == (2, 0, 0) and ti.per_type == {}
    assert (tc.micro.tp, tc.micro.fp, tc.micro.fn) == (1, 1, 1)
    assert set(tc.per_type) == {"Attack", "Die", "Injure"}
    # arguments: gold keys (Rebels, Attack), (town, Attack), (Rebels, Die), (soldiers, Die)
    assert (ai.micro.tp, ai.micro.fp, ai.micro.fn) == (2, 1, 2)
    assert ai.precision == approx(2 / 3) and ai.recall == approx(0.5)
    assert ai.per_type["Attack"] == PRF.from_counts(2, 0, 0)
    assert (ac.micro.tp, ac.micro.fp, ac.micro.fn) == (1, 2, 3)
    assert set(ac.per_type) == {"Agent", "Attacker", "Place", "Target", "Victim"}
    assert ac.per_type["Attacker"] == PRF.from_counts(1, 0, 0)
    assert ac.per_type["Victim"] == PRF.from_counts(0, 1, 1)
    text = str(s)
    assert "ee (trigger_identification)" in text and "ee (argument_classification)" in text
    assert set(json.loads(json.dumps(s.to_dict()))) == {
        "trigger_identification", "trigger_classification", "argument_identification", "argument_classification"}


def test_argument_matches_without_matching_trigger_span():
    """ACE argument scoring asks for span + event type (+ role), not for the trigger's offsets."""
    gold = [Event(trig("attacked", "Attack"), (arg("Rebels", "Attacker"),))]
    pred = [Event(trig("attacked the town", "Attack"), (arg("Rebels", "Attacker"),))]
    s = event_scores([rec(events=gold, text=EV_TEXT)], [rec(events=pred, text=EV_TEXT)])
    assert s.trigger_identification.f1 == 0.0
    assert s.argument_identification.f1 == 1.0 and s.argument_classification.f1 == 1.0


# ---------------------------------------------------------------------------------------------
# R-precision
# ---------------------------------------------------------------------------------------------


def test_r_precision():
    assert r_precision(["a", "b", "c", "d"], {"a", "c"}) == 0.5          # top 2: a, b
    assert r_precision(["c", "a", "b"], {"a", "c"}) == 1.0
    assert r_precision(["x", "a", "b", "c"], {"a", "b", "c"}) == approx(2 / 3)
    assert r_precision(["a"], {"a", "b", "c", "d"}) == 0.25               # short ranking: misses
    assert r_precision(["a", "a", "b"], {"a", "b"}) == 1.0                # a repeat counts once
    assert r_precision([], {"a"}) == 0.0
    with pytest.raises(ValueError, match="empty"):
        r_precision(["a"], set())


def test_macro_r_precision():
    by_type = {"person": (["a", "b", "c"], {"a", "c"}), "city": (["x", "y"], {"y"})}
    assert macro_r_precision(by_type) == approx((0.5 + 0.0) / 2)
    with pytest.raises(ValueError, match="'city'"):
        macro_r_precision({"person": (["a"], {"a"}), "city": (["x"], set())})
    with pytest.raises(ValueError):
        macro_r_precision({})


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def test_evaluate_scores_what_is_annotated():
    gold = [rec(GOLD_ENTS, relations=[Relation(OBAMA, MERKEL, "meets")])]
    pred = [rec(GOLD_ENTS[:2], relations=[Relation(OBAMA, MERKEL, "meets")])]
    report = evaluate(gold, pred)
    assert isinstance(report, EvaluationReport)
    assert list(report.scores) == ["ner.strict", "ner.boundary", "ner.partial", "re.strict", "re.boundary"]
    assert report.skipped == ("ee",) and report.n_records == 1
    assert report["ner.strict"].recall == 0.5 and report["re.strict"].f1 == 1.0
    assert "ner.strict" in report and "ee.trigger_identification" not in report
    assert report.summary()["ner.strict"] == report["ner.strict"].f1
    with pytest.raises(UnknownNameError, match="ner.strict"):
        report["ner.loose"]
    text = str(report)
    assert text.startswith("evaluation of 1 records")
    assert "skipped (no gold annotation): ee" in text and "ner (strict)" in text
    d = json.loads(json.dumps(report.to_dict()))
    assert d["scores"]["re.boundary"]["micro"]["tp"] == 1
    df = report.to_dataframe()
    assert df.loc[("ner.strict", "micro avg"), "f1"] == pytest.approx(report["ner.strict"].f1)
    assert ("ner.boundary", "micro avg") in df.index


def test_evaluate_restricts_tasks_and_modes():
    gold = [rec(events=[Event(trig("attacked", "Attack"))], text=EV_TEXT)]
    report = evaluate(gold, gold, tasks=("ee", "ner"), entity_modes=("strict",))
    assert list(report.scores) == ["ee.trigger_identification", "ee.trigger_classification",
                                   "ee.argument_identification", "ee.argument_classification"]
    assert report.skipped == ("ner",)
    assert report["ee.trigger_classification"].f1 == 1.0
    assert report["ee.argument_identification"].f1 == 0.0  # nothing to find, nothing found
    with pytest.raises(RecordMismatchError):
        evaluate(gold, [])


# ---------------------------------------------------------------------------------------------
# agreement with seqeval on CoNLL-2003 dev
# ---------------------------------------------------------------------------------------------

TokenSpan = tuple[int, int, str]  # (start token, end token exclusive, label)
LABELS = ("location", "misc", "organisation", "person")


def _raw_tags(path: Path) -> list[list[str]]:
    """The file's own tag column, sentence by sentence: seqeval's gold, independent of openie's reader."""
    sentences: list[list[str]] = [[]]
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            sentences[-1].append(line.split("\t")[1])
        elif sentences[-1]:
            sentences.append([])
    return [tags for tags in sentences if tags]


def _token_spans(record: Record) -> list[TokenSpan]:
    """Entities of a tokenized record as token spans; duplicates collapse (tags are a set of spans)."""
    offsets = record.token_offsets()
    first = {s: i for i, (s, _) in enumerate(offsets)}
    last = {e: i for i, (_, e) in enumerate(offsets)}
    return sorted({(first[e.start], last[e.end] + 1, e.label) for e in record.entities})


def _with_spans(record: Record, spans: list[TokenSpan]) -> Record:
    """A prediction on ``record``'s text holding the given token spans."""
    offsets = record.token_offsets()
    ents = [Entity(offsets[s][0], offsets[e - 1][1], label, record.text[offsets[s][0]:offsets[e - 1][1]])
            for s, e, label in spans]
    return replace(record.without_annotations(), entities=ents)


@pytest.fixture(scope="module")
def conll_dev(shared_data) -> tuple[list[Record], list[list[str]]]:
    path = shared_data / "conll2003" / "dev.txt"
    gold, raw = read_conll(path, scheme="bio"), _raw_tags(path)
    assert len(gold) == len(raw) == 3250
    assert [len(r.tokens) for r in gold] == [len(t) for t in raw]
    return gold, raw


Perturb = Callable[[random.Random, int, list[TokenSpan]], list[TokenSpan]]


def _free(n: int, spans: list[TokenSpan], skip: TokenSpan | None = None) -> list[bool]:
    free = [True] * n
    for sp in spans:
        if sp != skip:
            free[sp[0]:sp[1]] = [False] * (sp[1] - sp[0])
    return free


def identity(rng, n, spans):
    return list(spans)


def nothing(rng, n, spans):
    return []


def drop20(rng, n, spans):
    return [sp for sp in spans if rng.random() >= 0.2]


def relabel(rng, n, spans):
    return [(s, e, rng.choice([x for x in LABELS if x != lab])) if rng.random() < 0.3 else (s, e, lab)
            for s, e, lab in spans]


def shift(rng, n, spans):
    """Move one boundary of ~30% of spans by a token where that keeps spans disjoint and non-empty."""
    out = list(spans)
    for k, (s, e, lab) in enumerate(out):
        if rng.random() >= 0.3:
            continue
        free = _free(n, out, skip=(s, e, lab))
        moved = rng.choice([(s - 1, e), (s + 1, e), (s, e - 1), (s, e + 1), (s + 1, e + 1), (s - 1, e - 1)])
        ns, ne = moved
        if 0 <= ns < ne <= n and all(free[ns:ne]):
            out[k] = (ns, ne, lab)
    return out


def spurious(rng, n, spans):
    out = list(spans)
    for _ in range(2):
        if rng.random() < 0.3:
            free = _free(n, out)
            starts = [i for i in range(n) if free[i]]
            if starts:
                s = rng.choice(starts)
                e = s + 1
                while e < n and free[e] and e - s < 3 and rng.random() < 0.5:
                    e += 1
                out.append((s, e, rng.choice(LABELS)))
    return out


def mixed(rng, n, spans):
    out = spurious(rng, n, shift(rng, n, relabel(rng, n, drop20(rng, n, spans))))
    if out and rng.random() < 0.2:
        out.append(rng.choice(out))  # a repeated prediction: counted once, like in a tag sequence
    return out


def random_spans(rng, n, spans):
    """Predictions that ignore the gold: random disjoint spans."""
    out: list[TokenSpan] = []
    i = 0
    while i < n:
        if rng.random() < 0.15:
            e = min(n, i + rng.randint(1, 3))
            out.append((i, e, rng.choice(LABELS)))
            i = e
        else:
            i += 1
    return out


PERTURBATIONS = [identity, nothing, drop20, relabel, shift, spurious, mixed, random_spans]


CASES = [(identity, 0), (nothing, 0), *((f, seed) for f in PERTURBATIONS[2:] for seed in (0, 1))]


@pytest.mark.parametrize("perturb,seed", CASES, ids=[f"{f.__name__}-{seed}" for f, seed in CASES])
def test_strict_agrees_with_seqeval_on_conll2003_dev(conll_dev, perturb: Perturb, seed: int):
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    gold, y_true = conll_dev
    rng = random.Random(seed)
    pred, y_pred = [], []
    for g in gold:
        p = _with_spans(g, perturb(rng, len(g.tokens), _token_spans(g)))
        pred.append(p)
        y_pred.append(spans_to_tags(_token_spans(p), len(p.tokens), "bio"))
    pred.reverse()  # pairing is by id, not by position

    ours = entity_scores(gold, pred, "strict")
    theirs = classification_report(y_true, y_pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)

    micro = theirs["micro avg"]
    assert ours.precision == approx(micro["precision"])
    assert ours.recall == approx(micro["recall"])
    assert ours.f1 == approx(micro["f1-score"])
    assert ours.micro.support == micro["support"]
    macro = theirs["macro avg"]
    assert ours.macro_precision == approx(macro["precision"])
    assert ours.macro_recall == approx(macro["recall"])
    assert ours.macro_f1 == approx(macro["f1-score"])
    their_types = sorted(k for k in theirs if not k.endswith(" avg"))
    assert list(ours.per_type) == their_types
    for t in their_types:
        assert ours.per_type[t].precision == approx(theirs[t]["precision"]), t
        assert ours.per_type[t].recall == approx(theirs[t]["recall"]), t
        assert ours.per_type[t].f1 == approx(theirs[t]["f1-score"]), t
        assert ours.per_type[t].support == theirs[t]["support"], t
    if perturb is identity:
        assert ours.f1 == 1.0 and ours.micro.support == 5938  # B- tags in this dev file
    # the looser modes never score below strict
    assert entity_scores(gold, pred, "partial").micro.tp >= ours.micro.tp
    assert entity_scores(gold, pred, "boundary").micro.tp >= ours.micro.tp


def test_scores_are_spanscores():
    assert isinstance(entity_scores([rec()], [rec()]), SpanScores)
