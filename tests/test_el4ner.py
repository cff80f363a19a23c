"""EL4NER: union of members' spans, majority vote and its log-likelihood tie-break, SpanSim with
part-of-speech weights, verification by log-likelihood, stage switches, the pool-span cache."""

from __future__ import annotations

import hashlib
import json
import math
import re

import numpy as np
import pytest

from openie.engines.base import GenerationRequest, ScoreRequest
from openie.engines.scripted import ScriptedEngine
from openie.methods.el4ner import (
    DEFAULT_POS_WEIGHTS,
    EL4NERConfig,
    EL4NERError,
    EL4NERExtractor,
    Member,
    MemberSpec,
    PoolSpanCache,
    ShapePosTagger,
    build_members,
    load_pos_tagger,
    majority,
    member_specs,
    parse_span_list,
    read_type,
    span_sim,
    span_weights,
    split_options,
)
from openie.records import Entity, Record
from openie.schema import Schema

SCHEMA = Schema.from_labels(["PER", "LOC"])


# --------------------------------------------------------------------------- scripted members


def last(prompt: str, prefix: str) -> str | None:
    lines = [line for line in prompt.splitlines() if line.startswith(prefix)]
    return lines[-1][len(prefix):] if lines else None


def asked(request: ScoreRequest) -> tuple[str, str]:
    m = re.search(r'Question: Is "(.*)" an entity of type (\S+)\?', request.context.rsplit("Text: ", 1)[-1])
    assert m, request.context
    return m.group(1), m.group(2)


class CountingEngine(ScriptedEngine):
    """A scripted engine that also counts its generate / loglikelihood calls (one per batch)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generate_calls = self.score_calls = 0

    def generate(self, requests):
        self.generate_calls += 1
        return super().generate(requests)

    def loglikelihood(self, requests):
        self.score_calls += 1
        return super().loglikelihood(requests)

    def span_requests(self) -> list[GenerationRequest]:
        return [r for r in self.calls if isinstance(r, GenerationRequest) and r.template.startswith("ner.el4ner-spans")]

    def type_requests(self) -> list:
        return [r for r in self.calls if (r.template or "").startswith("ner.el4ner-type")]

    def verify_requests(self) -> list[ScoreRequest]:
        return [r for r in self.calls if (r.template or "").startswith("ner.el4ner-verify")]


class Script:
    """What one member answers: spans per sentence, type log-likelihoods per span, verdicts per (span, type)."""

    def __init__(self, spans=None, types=None, verdicts=None):
        self.spans = spans or {}
        self.types = types or {}
        self.verdicts = verdicts or {}

    def output(self, request: GenerationRequest) -> str:
        if request.template.startswith("ner.el4ner-spans"):
            return json.dumps(self.spans.get(last(request.prompt, "Text: "), []))
        prefs = self.types.get(last(request.prompt, "Mention: "), {})
        return max(prefs, key=prefs.get) if prefs else "no idea"

    def score(self, request: ScoreRequest) -> float:
        if request.continuation in (" true", " false"):
            ok = self.verdicts.get(asked(request), True)
            return -0.1 if (request.continuation == " true") == ok else -2.0
        return self.types.get(last(request.context, "Mention: "), {}).get(request.continuation.strip(), -5.0)


def member(name: str, script: Script, adapter: str | None = None) -> Member:
    return Member(name, CountingEngine(script.output, scores=script.score, model_id=f"model-{name}"), adapter)


def extractor(members, **config) -> EL4NERExtractor:
    pool = config.pop("pool", ())
    kwargs = {k: config.pop(k) for k in ("encoder", "pos_tagger", "span_cache") if k in config}
    return EL4NERExtractor(members, SCHEMA, pool, EL4NERConfig(**config), **kwargs)


def ents(record: Record) -> list[tuple[str, str]]:
    return [(e.text, e.label) for e in record.entities]


TEXT = "Alice met Bob in Paris ."
TYPES = {"Alice": {"PER": -0.2, "LOC": -3.0}, "Bob": {"PER": -0.3, "LOC": -2.0}, "Paris": {"PER": -4.0, "LOC": -0.1}}


# --------------------------------------------------------------------------- stage 2: union


def test_the_union_of_the_members_spans_is_typed_and_each_members_candidates_are_kept():
    a = member("a", Script({TEXT: ["Alice", "Paris"]}, TYPES))
    b = member("b", Script({TEXT: ["Bob", "Paris", "Rome"]}, TYPES))
    pred = extractor([a, b], demonstrations="none", verify=False).extract_batch([Record("r1", TEXT)])[0]
    assert ents(pred) == [("Alice", "PER"), ("Bob", "PER"), ("Paris", "LOC")]
    meta = pred.meta["el4ner"]
    assert meta["candidates"] == {"a": [[0, 5, "Alice"], [17, 22, "Paris"]], "b": [[10, 13, "Bob"], [17, 22, "Paris"]]}
    assert meta["union"] == [[0, 5, "Alice"], [10, 13, "Bob"], [17, 22, "Paris"]]
    assert pred.meta["alignment"]["not_found"] == 1  # "Rome" is not in the text
    assert any(p["kind"] == "not_found" and p["fragment"] == "Rome" for p in pred.meta["parse_problems"])
    assert all(pred.text[e.start:e.end] == e.text for e in pred.entities)


def test_without_union_only_the_single_member_proposes_spans():
    a = member("a", Script({TEXT: ["Alice", "Paris"]}, TYPES))
    b = member("b", Script({TEXT: ["Bob"]}, TYPES))
    pred = extractor([a, b], demonstrations="none", verify=False, union=False, single_member=1).extract_batch(
        [Record("r1", TEXT)])[0]
    assert ents(pred) == [("Bob", "PER")]
    assert a.engine.span_requests() == [] and len(b.engine.span_requests()) == 1
    assert len(a.engine.type_requests()) == 2  # the vote still asks every member


# --------------------------------------------------------------------------- stage 3: vote


def test_the_majority_type_wins_and_the_ballots_are_recorded():
    spans = {TEXT: ["Paris"]}
    voters = [member("a", Script(spans, {"Paris": {"LOC": -0.1, "PER": -1.0}})),
              member("b", Script(spans, {"Paris": {"LOC": -0.5, "PER": -0.9}})),
              member("c", Script(spans, {"Paris": {"LOC": -3.0, "PER": -0.1}}))]  # the most confident, outvoted
    pred = extractor(voters, demonstrations="none", verify=False).extract_batch([Record("r1", TEXT)])[0]
    assert ents(pred) == [("Paris", "LOC")]
    assert pred.entities[0].score == pytest.approx(2 / 3, abs=1e-4)
    typing = pred.meta["el4ner"]["typing"][0]
    assert typing["votes"] == {"a": "LOC", "b": "LOC", "c": "PER"} and typing["tie"] is False


@pytest.mark.parametrize(("b_loc", "winner"), [(-0.2, "LOC"), (-0.9, "PER")])
@pytest.mark.parametrize("typing", ["score", "generate"])
def test_a_tie_goes_to_the_label_with_the_highest_summed_loglikelihood(b_loc, winner, typing):
    """a votes PER, b votes LOC: sums PER -1.0-2.5 = -3.5 against LOC -3.0+b_loc."""
    spans = {TEXT: ["Paris"]}
    a = member("a", Script(spans, {"Paris": {"PER": -1.0, "LOC": -3.0}}))
    b = member("b", Script(spans, {"Paris": {"PER": -2.5, "LOC": b_loc}}))
    ex = extractor([a, b], demonstrations="none", verify=False, typing=typing, typing_score="sum")
    pred = ex.extract_batch([Record("r1", TEXT)])[0]
    assert ents(pred) == [("Paris", winner)]
    typing_meta = pred.meta["el4ner"]["typing"][0]
    assert typing_meta["votes"] == {"a": "PER", "b": "LOC"} and typing_meta["tie"] is True
    assert typing_meta["loglik"] == pytest.approx({"PER": -3.5, "LOC": -3.0 + b_loc})
    assert pred.entities[0].score == 0.5


def test_generated_types_are_scored_only_on_a_tie():
    spans = {TEXT: ["Alice", "Paris"]}
    a = member("a", Script(spans, {"Alice": {"PER": -0.1}, "Paris": {"PER": -1.0, "LOC": -3.0}}))
    b = member("b", Script(spans, {"Alice": {"PER": -0.1}, "Paris": {"PER": -2.5, "LOC": -0.2}}))
    pred = extractor([a, b], demonstrations="none", verify=False, typing="generate").extract_batch(
        [Record("r1", TEXT)])[0]
    assert ents(pred) == [("Alice", "PER"), ("Paris", "LOC")]
    scored = [r for r in a.engine.type_requests() if isinstance(r, ScoreRequest)]
    assert sorted(r.continuation for r in scored) == [" LOC", " PER"]  # Paris's tied labels only, not Alice
    assert all(last(r.context, "Mention: ") == "Paris" for r in scored)
    generated = [r for r in a.engine.type_requests() if isinstance(r, GenerationRequest)]
    assert len(generated) == 2 and generated[0].allowed_texts == ("PER", "LOC")


def test_vote_helpers():
    assert majority(["LOC", "PER", "LOC"], ["PER", "LOC"]) == ["LOC"]
    assert majority(["LOC", "PER"], ["PER", "LOC"]) == ["PER", "LOC"]
    assert majority([None, None], ["PER", "LOC"]) == ["PER", "LOC"]  # nobody named a type: all tie
    assert read_type(" LOC\nmore", ["PER", "LOC"]) == "LOC"
    assert read_type("loc.", ["PER", "LOC"]) == "LOC"
    assert read_type("PER, probably", ["PER", "LOC"]) == "PER"
    assert read_type("a city", ["PER", "LOC"]) is None


def test_without_vote_only_the_single_member_types():
    spans = {TEXT: ["Paris"]}
    a = member("a", Script(spans, {"Paris": {"LOC": -0.1, "PER": -1.0}}))
    b = member("b", Script(spans, {"Paris": {"LOC": -3.0, "PER": -0.1}}))
    c = member("c", Script(spans, {"Paris": {"LOC": -3.0, "PER": -0.1}}))
    pred = extractor([a, b, c], demonstrations="none", verify=False, vote=False).extract_batch([Record("r", TEXT)])[0]
    assert ents(pred) == [("Paris", "LOC")]  # a alone, though b and c would outvote it
    assert b.engine.type_requests() == [] == c.engine.type_requests()
    assert len(b.engine.span_requests()) == 1  # the union still asks every member


# --------------------------------------------------------------------------- stage 4: verification


@pytest.mark.parametrize("verifier", [0, 1])
def test_verification_drops_exactly_the_pairs_the_verifier_scores_false(verifier):
    spans = {TEXT: ["Alice", "Bob", "Paris"]}
    judge = Script(spans, TYPES, verdicts={("Paris", "LOC"): False, ("Alice", "PER"): False})
    lenient = Script(spans, TYPES)  # would keep everything
    members = [member("a", judge if verifier == 0 else lenient), member("b", lenient if verifier == 0 else judge)]
    pred = extractor(members, demonstrations="none", verifier=verifier).extract_batch([Record("r1", TEXT)])[0]
    assert ents(pred) == [("Bob", "PER")]
    meta = pred.meta["el4ner"]["verification"]
    assert meta["member"] == members[verifier].name
    kept = {tuple(j["span"][2:]) + (j["label"],): j["kept"] for j in meta["judgements"]}
    assert kept == {("Alice", "PER"): False, ("Bob", "PER"): True, ("Paris", "LOC"): False}
    assert {j["span"][2]: (j["true"], j["false"]) for j in meta["judgements"]}["Bob"] == (-0.1, -2.0)
    assert len(members[verifier].engine.verify_requests()) == 6  # " true" and " false" per pair
    assert members[1 - verifier].engine.verify_requests() == []
    assert sorted({r.continuation for r in members[verifier].engine.verify_requests()}) == [" false", " true"]


def test_the_verification_margin_and_switching_verification_off():
    spans = {TEXT: ["Bob"]}
    a = member("a", Script(spans, TYPES))  # logp(true) - logp(false) = 1.9
    assert ents(extractor([a], demonstrations="none", verify_margin=1.8).extract_batch([Record("r", TEXT)])[0])
    assert not ents(extractor([a], demonstrations="none", verify_margin=2.0).extract_batch([Record("r", TEXT)])[0])
    b = member("b", Script(spans, TYPES, verdicts={("Bob", "PER"): False}))
    pred = extractor([b], demonstrations="none", verify=False).extract_batch([Record("r", TEXT)])[0]
    assert ents(pred) == [("Bob", "PER")] and pred.meta["el4ner"]["verification"] is None
    assert b.engine.verify_requests() == []


def test_content_free_calibration_subtracts_the_verifiers_prior_per_query_and_type():
    spans = {TEXT: ["Alice", "Bob", "Paris"]}
    # a verifier that says " false" to everything, the content-free "N/A" included: a prior, not a judgement
    biased = Script(spans, TYPES, verdicts={("Alice", "PER"): False, ("Bob", "PER"): False, ("Paris", "LOC"): False,
                                            ("N/A", "PER"): False, ("N/A", "LOC"): False})
    a = member("a", biased)
    plain = extractor([a], demonstrations="none").extract_batch([Record("r", TEXT)])[0]
    assert ents(plain) == []
    b = member("b", biased)
    calibrated = extractor([b], demonstrations="none", verify_calibration="content_free").extract_batch(
        [Record("r", TEXT)])[0]
    assert ents(calibrated) == [("Alice", "PER"), ("Bob", "PER"), ("Paris", "LOC")]
    meta = calibrated.meta["el4ner"]["verification"]
    assert meta["calibration"] == "content_free" and {j["prior"] for j in meta["judgements"]} == {-1.9}
    assert len(b.engine.verify_requests()) == 3 * 2 + 2 * 2  # each pair, and one prior per type in this query
    # a verifier that judges spans against its prior: Bob below it is dropped, the others at it are kept
    c = member("c", Script(spans, TYPES, verdicts={("Bob", "PER"): False}))
    pred = extractor([c], demonstrations="none", verify_calibration="content_free").extract_batch([Record("r", TEXT)])[0]
    assert ents(pred) == [("Alice", "PER"), ("Paris", "LOC")]
    with pytest.raises(EL4NERError, match="verify_calibration must be one of none, content_free"):
        EL4NERConfig(verify_calibration="zero")


# --------------------------------------------------------------------------- stage 1: SpanSim


def test_span_sim_is_the_weighted_mean_of_best_matches():
    e = np.eye(3)
    query = np.stack([e[0], e[1]])
    pool = np.stack([0.6 * e[0] + 0.8 * e[2], e[1]])
    assert span_sim(query, [1.0, 1.0], pool) == pytest.approx((0.6 + 1.0) / 2)
    assert span_sim(query, [3.0, 1.0], pool) == pytest.approx((3 * 0.6 + 1.0) / 4)
    assert span_sim(query, [1.0, 1.0], np.zeros((0, 3))) == 0.0
    assert span_sim(np.zeros((0, 3)), [], pool) == 0.0


def test_span_weights_take_the_max_or_mean_of_the_words_tags():
    tags = [(0, 3, "DET"), (4, 11, "NOUN"), (12, 17, "PROPN")]
    w = {"PROPN": 1.0, "NOUN": 0.4}
    assert span_weights([(0, 11), (12, 17), (4, 17), (20, 25)], tags, w, default=0.1) == [0.4, 1.0, 1.0, 0.1]
    assert span_weights([(0, 11)], tags, w, default=0.1, how="mean") == [pytest.approx(0.25)]


class TableEncoder:
    """Fixed unit vectors for named texts, a seeded random one for any other text."""

    def __init__(self, table: dict[str, np.ndarray], dim: int = 8):
        self.table, self.dim = table, dim
        self.encoded: list[str] = []

    def encode(self, texts):
        self.encoded += list(texts)
        out = []
        for t in texts:
            if t in self.table:
                v = np.zeros(self.dim)
                v[: len(self.table[t])] = self.table[t]
            else:
                v = np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=self.dim)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, dtype=np.float32)


class WordTagger:
    """A tagger from a word list (what a real tagger would say of these words)."""

    name = "word-list"

    def __init__(self, tags: dict[str, str]):
        self.tags = tags

    def tag(self, text):
        return [(m.start(), m.end(), self.tags.get(m.group(), "X")) for m in re.finditer(r"\S+", text)]


E = np.eye(8)
QUERY = "Paris hosted the meeting"
POOL_A, POOL_B = "Lyon hosted the meeting too", "Paris is big"
SPANSIM_ENCODER = {"Paris": E[0], "Lyon": 0.6 * E[0] + 0.8 * E[1], "the meeting": E[2],
                   QUERY: E[3], POOL_A: E[3], POOL_B: E[4]}  # by sentence similarity, A is the nearest
SPANSIM_SPANS = {QUERY: ["Paris", "the meeting"], POOL_A: ["Lyon", "the meeting"], POOL_B: ["Paris"]}
SPANSIM_TAGS = WordTagger({"Paris": "PROPN", "Lyon": "PROPN", "the": "DET", "meeting": "NOUN", "hosted": "VERB"})


def spansim_extractor(**config):
    pool = [Record("A", POOL_A, entities=[Entity(0, 4, "LOC", "Lyon")]),
            Record("B", POOL_B, entities=[Entity(0, 5, "LOC", "Paris")])]
    m = member("a", Script(SPANSIM_SPANS, TYPES))
    ex = extractor([m], pool=pool, k=1, verify=False, encoder=TableEncoder(SPANSIM_ENCODER), **config)
    return ex, m


def test_proper_noun_weighting_changes_the_spansim_ranking():
    """Query spans Paris (PROPN) and "the meeting" (DET NOUN); A has Lyon (cos 0.6 to Paris) and the
    meeting (cos 1), B has Paris. Uniform weights: A = (0.6+1)/2 = 0.8 > B = (1+0)/2 = 0.5. With
    PROPN 1.0 and NOUN 0.2 (span weight = its heaviest word): A = (0.6+0.2)/1.2 = 0.667 < B = 1/1.2 = 0.833."""
    weights = {"PROPN": 1.0, "NOUN": 0.2}
    ex, _ = spansim_extractor(pos_tagger=SPANSIM_TAGS, pos_weights=weights, default_pos_weight=0.1)
    pred = ex.extract_batch([Record("q", QUERY)])[0]
    demo = pred.meta["el4ner"]["demonstrations"]
    assert pred.meta["demo_ids"] == demo["ids"] == ["B"]
    assert demo["scores"] == [pytest.approx(1 / 1.2, abs=1e-5)]
    assert demo["query_spans"] == [[0, 5, "Paris", 1.0], [13, 24, "the meeting", 0.2]]

    uniform, _ = spansim_extractor(pos_tagger=SPANSIM_TAGS, pos_weights=dict.fromkeys(weights, 1.0),
                                   default_pos_weight=1.0)
    demo = uniform.extract_batch([Record("q", QUERY)])[0].meta["el4ner"]["demonstrations"]
    assert demo["ids"] == ["A"] and demo["scores"] == [pytest.approx(0.8, abs=1e-5)]

    sentence, m = spansim_extractor(demonstrations="sentence")
    assert sentence.extract_batch([Record("q", QUERY)])[0].meta["demo_ids"] == ["A"]
    assert len(m.engine.span_requests()) == 1  # stage 2 only: sentence demonstrations need no spans


def test_demonstrations_reach_every_stage_prompt_and_never_the_query_itself():
    pool = [Record("A", POOL_A, entities=[Entity(0, 4, "LOC", "Lyon")]),
            Record("B", POOL_B, entities=[Entity(0, 5, "LOC", "Paris")]),
            Record("self", QUERY, entities=[Entity(0, 5, "LOC", "Paris")])]
    m = member("a", Script(SPANSIM_SPANS, TYPES))
    ex = extractor([m], pool=pool, k=2, encoder=TableEncoder(SPANSIM_ENCODER), pos_tagger=SPANSIM_TAGS)
    pred = ex.extract_batch([Record("q", QUERY)])[0]
    assert sorted(pred.meta["demo_ids"]) == ["A", "B"]
    few_shot = [r for r in m.engine.span_requests() if r.prompt.count("Text: ") > 1]
    assert len(few_shot) == 1 and 'Entities: ["Lyon"]' in few_shot[0].prompt
    assert all("Mention: Lyon\nType: LOC" in r.context for r in m.engine.type_requests())
    verify = m.engine.verify_requests()[0].context
    assert 'Is "Lyon" an entity of type LOC?\nAnswer: true' in verify
    assert 'Is "Lyon" an entity of type PER?\nAnswer: false' in verify


def test_typing_examples_are_capped_keeping_the_most_relevant_demonstrations():
    best = Record("best", "Ada and Bob met Cy .", entities=[Entity(0, 3, "PER", "Ada"), Entity(8, 11, "PER", "Bob"),
                                                         Entity(16, 18, "PER", "Cy")])
    other = Record("other", "Oslo is cold .", entities=[Entity(0, 4, "LOC", "Oslo")])
    m = member("a", Script())
    query, span = Record("q", TEXT), Entity(0, 5, "", "Alice")
    capped = extractor([m], demonstrations="none", type_demos=2).typer.prompt(query, span, [best, other])
    assert capped.count("Mention: ") == 3 and "Mention: Bob" in capped and "Mention: Cy" in capped
    assert "Oslo" not in capped  # the less relevant demonstration's examples go first
    full = extractor([m], demonstrations="none", type_demos=None).typer.prompt(query, span, [best, other])
    assert full.count("Mention: ") == 5
    assert extractor([m], demonstrations="none", type_demos=0).typer.prompt(query, span, [best]).count("Mention: ") == 1
    with pytest.raises(EL4NERError, match="type_demos"):
        EL4NERConfig(type_demos=-1)


def test_gold_pool_spans_need_no_pool_prompts():
    ex, m = spansim_extractor(pos_tagger=SPANSIM_TAGS, pos_weights={"PROPN": 1.0, "NOUN": 0.2}, pool_spans="gold")
    pred = ex.extract_batch([Record("q", QUERY)])[0]
    assert pred.meta["demo_ids"] == ["B"]  # gold: A has Lyon only = 0.6/1.2, B has Paris = 1/1.2
    assert [last(r.prompt, "Text: ") for r in m.engine.span_requests()] == [QUERY, QUERY]  # zero-shot + few-shot


# --------------------------------------------------------------------------- switches and calls


@pytest.mark.parametrize(("mode", "span_requests"), [("none", 2), ("sentence", 2), ("span", 2 * (1 + 2) + 2)])
def test_the_demonstration_switch_changes_the_calls(mode, span_requests):
    a, b = member("a", Script(SPANSIM_SPANS, TYPES)), member("b", Script(SPANSIM_SPANS, TYPES))
    pool = [Record("A", POOL_A, entities=[Entity(0, 4, "LOC", "Lyon")]), Record("B", POOL_B)]
    ex = extractor([a, b], pool=pool, demonstrations=mode, k=1, verify=False, encoder=TableEncoder(SPANSIM_ENCODER),
                   pos_tagger=SPANSIM_TAGS)
    ex.extract_batch([Record("q", QUERY)])
    assert len(a.engine.span_requests()) + len(b.engine.span_requests()) == span_requests
    assert ex.stats.prompts == span_requests
    zero_shot_texts = sorted(last(r.prompt, "Text: ") for r in a.engine.span_requests() if r.prompt.count("Text: ") == 1)
    if mode == "span":
        assert zero_shot_texts == sorted([QUERY, POOL_A, POOL_B])
    assert (ex.encoder.encoded != []) == (mode != "none")


def test_members_on_one_multi_lora_engine_share_one_call_per_stage():
    spans = {TEXT: ["Alice", "Paris"]}
    engine = CountingEngine(Script(spans, TYPES).output, scores=Script(spans, TYPES).score, model_id="base")
    members = [Member("lora-a", engine, "a"), Member("lora-b", engine, "b"), Member("base", engine, None)]
    ex = extractor(members, demonstrations="none")
    ex.extract_batch([Record("r1", TEXT), Record("r2", TEXT)])
    assert engine.generate_calls == 1  # stage 2: 3 members x 2 records
    assert engine.score_calls == 2     # stage 3 (typing) and stage 4 (verification)
    assert {r.adapter for r in engine.span_requests()} == {"a", "b", None}
    assert len(engine.span_requests()) == 6
    assert ex.stats.score_requests == 3 * 2 * 2 * 2 + 2 * 2 * 2  # typing: voters x spans x labels; verify: 2 per span


# --------------------------------------------------------------------------- the pool-span cache


def test_pool_spans_are_cached_per_member_identity_across_calls_and_runs(tmp_path):
    pool = [Record("A", POOL_A, entities=[Entity(0, 4, "LOC", "Lyon")]), Record("B", POOL_B)]

    def run(model_id="model-a", cache=None):
        m = Member("a", CountingEngine(Script(SPANSIM_SPANS, TYPES).output, scores=Script(SPANSIM_SPANS, TYPES).score,
                                       model_id=model_id))
        ex = extractor([m], pool=pool, k=1, verify=False, encoder=TableEncoder(SPANSIM_ENCODER),
                       pos_tagger=SPANSIM_TAGS, span_cache=cache or PoolSpanCache(tmp_path / "spans.jsonl"))
        return ex, m

    def pool_prompts(m):
        return [r for r in m.engine.span_requests() if last(r.prompt, "Text: ") in (POOL_A, POOL_B)]

    ex, m = run()
    ex.extract_batch([Record("q1", QUERY)])
    assert len(pool_prompts(m)) == 2 and (ex.stats.pool_span_misses, ex.stats.pool_span_hits) == (2, 0)
    ex.extract_batch([Record("q2", "Paris hosted Bob")])
    assert len(pool_prompts(m)) == 2 and ex.stats.pool_span_hits == 2  # the same extractor: no new pool prompt
    assert len((tmp_path / "spans.jsonl").read_text().splitlines()) == 2

    again, m2 = run()  # a new run reads the file
    again.extract_batch([Record("q3", QUERY)])
    assert pool_prompts(m2) == [] and again.stats.pool_span_hits == 2

    other, m3 = run(model_id="another-base")  # another member identity misses
    other.extract_batch([Record("q4", QUERY)])
    assert len(pool_prompts(m3)) == 2


def test_cache_keys_follow_member_identity_and_proposer():
    eng = ScriptedEngine([], model_id="m")
    ident = {"template": "t@1", "max_tokens": 96, "constrained": True, "types": ["PER"]}
    key = PoolSpanCache.key(Member("x", eng, "lora"), ident, "text")
    assert key == PoolSpanCache.key(Member("renamed", eng, "lora"), ident, "text")  # the name is not identity
    assert key != PoolSpanCache.key(Member("x", eng, "other"), ident, "text")
    assert key != PoolSpanCache.key(Member("x", eng, "lora"), {**ident, "template": "t@2"}, "text")
    assert key != PoolSpanCache.key(Member("x", eng, "lora"), ident, "text 2")


# --------------------------------------------------------------------------- parsing, taggers, config


def test_span_answers_are_read_leniently_and_problems_recorded():
    r = Record("r", TEXT)
    got = parse_span_list('["Alice", "alice", "Nowhere", 3]', r)
    assert [e.text for e in got.entities] == ["Alice"]
    assert sorted(p.kind for p in got.problems) == ["invalid", "not_found"]
    assert [e.text for e in parse_span_list('{"entities": [{"text": "Bob"}]}', r).entities] == ["Bob"]
    garbage = parse_span_list("I think there are none", r)
    assert garbage.entities == [] and garbage.problems[0].kind == "syntax"
    assert parse_span_list("[]", r).problems == []


def test_the_shape_tagger_is_a_labelled_heuristic():
    tagger = ShapePosTagger()
    assert tagger.name == "shape-heuristic"
    text = "The U.N. met Obama in 2024 and they talked ."
    tags = {text[s:e]: t for s, e, t in tagger.tag(text)}
    assert tags["The"] == "DET" and tags["Obama"] == "PROPN" and tags["U.N"] == "PROPN"
    assert tags["2024"] == "NUM" and tags["they"] == "PRON" and tags["talked"] == "X" and tags["."] == "PUNCT"
    assert load_pos_tagger("shape").name == "shape-heuristic"
    assert DEFAULT_POS_WEIGHTS["PROPN"] == max(DEFAULT_POS_WEIGHTS.values())


def test_the_textblob_tagger_runs_offline_with_universal_tags():
    pytest.importorskip("textblob")
    tagger = load_pos_tagger("textblob")
    text = "Barack Obama visited Paris on Monday."
    tags = {text[s:e]: t for s, e, t in tagger.tag(text)}
    assert tagger.name.startswith("textblob-")
    assert tags["Obama"] == tags["Paris"] == "PROPN" and tags["visited"] == "VERB" and tags["on"] == "ADP"


def test_config_options_are_checked():
    c = EL4NERConfig.from_options({"vote": "false", "k": "2", "pool_prefilter": "none", "verify_margin": "0.5",
                                   "pos_weights": {"PROPN": 2}})
    assert (c.vote, c.k, c.pool_prefilter, c.verify_margin, c.pos_weights) == (False, 2, None, 0.5, {"PROPN": 2.0})
    with pytest.raises(EL4NERError, match="unknown EL4NER options"):
        EL4NERConfig.from_options({"voting": True})
    with pytest.raises(EL4NERError, match="demonstrations"):
        EL4NERConfig(demonstrations="random")
    with pytest.raises(EL4NERError, match="pool_prefilter"):
        EL4NERConfig(k=4, pool_prefilter=2)
    a = member("a", Script())
    with pytest.raises(EL4NERError, match="verifier"):
        extractor([a], demonstrations="none", verifier=1)
    with pytest.raises(EL4NERError, match="unique"):
        extractor([a, member("a", Script())], demonstrations="none")
    with pytest.raises(EL4NERError, match="pool"):
        extractor([a], demonstrations="sentence", encoder=TableEncoder({}))


def test_build_members_shares_one_engine_per_base_model():
    built = []

    def make_engine(backend, model, adapters, **options):
        built.append((backend, model, adapters, options))
        return ScriptedEngine([], model_id=model)

    members = build_members([MemberSpec("a", "gemma", "ner-a", "/ad/a"), MemberSpec("b", "gemma", "ner-b", "/ad/b"),
                             MemberSpec("c", "smollm")], make_engine, cache=None)
    assert members[0].engine is members[1].engine and members[2].engine is not members[0].engine
    assert built == [("auto", "gemma", {"ner-a": "/ad/a", "ner-b": "/ad/b"}, {"cache": None}),
                     ("auto", "smollm", None, {"cache": None})]
    assert [m.adapter for m in members] == ["ner-a", "ner-b", None]


def test_member_specs_default_to_the_runs_model_and_name_the_bad_item():
    [only] = member_specs(None, model="gemma-3-270m", adapter="ner")
    assert (only.name, only.model, only.adapter, only.backend) == ("gemma-3-270m+ner", "gemma-3-270m", "ner", "auto")
    specs = member_specs('[{"name": "g"}, "smollm2-135m-instruct", {"adapter": "b", "adapter_path": "/a/b"}]',
                         model="gemma-3-270m", backend="vllm")
    assert [(s.name, s.model, s.adapter, s.adapter_path, s.backend) for s in specs] == [
        ("g", "gemma-3-270m", None, None, "vllm"), ("smollm2-135m-instruct", "smollm2-135m-instruct", None, None, "vllm"),
        ("gemma-3-270m+b", "gemma-3-270m", "b", "/a/b", "vllm")]
    with pytest.raises(EL4NERError, match=r"members\[1\]: unknown keys \['adaptor'\]"):
        member_specs([{"name": "a"}, {"adaptor": "x"}], model="m")
    with pytest.raises(EL4NERError, match=r"members\[0\]: an adapter_path needs an adapter name"):
        member_specs([{"adapter_path": "/x"}], model="m")
    with pytest.raises(EL4NERError, match="unique"):
        member_specs(["m", "m"], model="m")


def test_options_split_into_stage_config_and_run_wiring():
    config, run = split_options({"verify": "false", "k": "2", "members": ["a"], "pool": "x:train", "pool_size": "5"})
    assert (config.verify, config.k) == (False, 2) and run == {"members": ["a"], "pool": "x:train", "pool_size": 5}
    with pytest.raises(EL4NERError, match="unknown EL4NER options \\['verfy'\\]"):
        split_options({"verfy": False})
    with pytest.raises(EL4NERError, match="pool_size must be >= 1"):
        split_options({"pool_size": 0})


def test_from_options_loads_a_seeded_pool_sample_and_needs_a_pool(tmp_path):
    from openie.records import write_jsonl

    pool_file = tmp_path / "pool.jsonl"
    write_jsonl([Record(f"p{i}", f"Alice {i} .", entities=[Entity(0, 5, "PER", "Alice")]) for i in range(10)], pool_file)
    a = member("a", Script({TEXT: ["Alice"]}, TYPES))
    options = {"demonstrations": "sentence", "k": 2, "pool": str(pool_file), "pool_size": 4, "seed": 3}
    ex = EL4NERExtractor.from_options([a], SCHEMA, {**options, "demonstrations": "none"})
    assert ex.pool == []  # zero-shot: no pool is read
    again = [EL4NERExtractor.from_options([a], SCHEMA, options, span_cache=tmp_path / "c.jsonl",
                                          encoder=TableEncoder({})) for _ in range(2)]
    assert [r.id for r in again[0].pool] == [r.id for r in again[1].pool] and len(again[0].pool) == 4
    assert again[0].describe()["pool_size"] == 4 and again[0].span_cache.path == tmp_path / "c.jsonl"
    with pytest.raises(EL4NERError, match="needs a pool"):
        EL4NERExtractor.from_options([a], SCHEMA, {"demonstrations": "span"})


def test_stats_and_meta_are_complete_for_the_runner():
    a = member("a", Script({TEXT: ["Alice"]}, TYPES))
    ex = extractor([a], demonstrations="none")
    pred = ex.extract_batch([Record("r1", TEXT, entities=[Entity(0, 5, "PER", "Alice")])])[0]
    assert ex.engine is a.engine and ex.task == "ner" and ex.demonstrations is None
    assert (ex.stats.records, ex.stats.entities, ex.stats.prompts) == (1, 1, 1)
    assert set(pred.meta["el4ner"]) == {"demonstrations", "candidates", "union", "typing", "verification"}
    json.dumps(pred.to_dict())  # everything in meta is JSON
    json.dumps(ex.describe())
    assert not math.isnan(pred.meta["el4ner"]["verification"]["judgements"][0]["true"])


# --------------------------------------------------------------------------- real tiny models


def test_end_to_end_on_a_tiny_decoder_and_a_tiny_encoder(tiny_decoder_path, tiny_bert_path):
    """Real engine and encoder: every stage's requests are served, outputs stay grounded, and the
    verifier's decision is the comparison of the engine's own log-likelihoods."""
    from openie.engines.hf import TransformersEngine
    from openie.methods.el4ner import LoglikelihoodVerifier, MajorityVoteTyper, TypedSpan
    from retrievers.dense import SentenceEncoder

    engine = TransformersEngine(str(tiny_decoder_path), device="cpu")
    members = [Member("x", engine), Member("y", engine)]
    pool = [Record("A", "Lyon is in France .", entities=[Entity(0, 4, "LOC", "Lyon"), Entity(11, 17, "LOC", "France")]),
            Record("B", "Bob likes tea .", entities=[Entity(0, 3, "PER", "Bob")])]
    config = EL4NERConfig(k=1, max_tokens=12, pos_tagger="shape")
    ex = EL4NERExtractor(members, SCHEMA, pool, config, encoder=SentenceEncoder(str(tiny_bert_path)))
    query = Record("q", "Alice flew to Paris .")
    pred = ex.extract_batch([query])[0]
    assert pred.meta["demo_ids"] in (["A"], ["B"])
    assert ex.stats.pool_span_misses == 2  # x and y are one identity (same base, no adapter): one prompt each
    assert all(pred.text[e.start:e.end] == e.text and e.label in SCHEMA.entity_labels for e in pred.entities)
    json.dumps(pred.to_dict())

    demos = [[pool[0]]]
    typed = ex.typer.run([query], demos, [[Entity(14, 19, "", "Paris")]], members)[0]
    assert isinstance(ex.typer, MajorityVoteTyper) and typed[0].entity.label in ("PER", "LOC")
    assert set(typed[0].loglik) == {"PER", "LOC"} and all(math.isfinite(v) and v < 0 for v in typed[0].loglik.values())
    verifier = ex.verifier
    assert isinstance(verifier, LoglikelihoodVerifier)
    span = TypedSpan(Entity(14, 19, "LOC", "Paris"), {})
    verdict = verifier.run([query], demos, [[span]], members[0])[0][0]
    prompt = verifier.prompt(query, span.entity, verifier.demo_blocks(query, demos[0]))
    t, f = engine.loglikelihood([ScoreRequest(prompt, " true"), ScoreRequest(prompt, " false")])
    assert (verdict.true, verdict.false) == pytest.approx((t.logprob, f.logprob), abs=1e-4)
    assert verdict.kept == (t.logprob - f.logprob >= 0)
