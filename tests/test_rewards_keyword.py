"""The keyword-enhanced reward model: markup, RUIE's training groups, and real (tiny) cross-encoder training."""

from __future__ import annotations

import random

import numpy as np
import pytest

from openie.records import Entity, Record, Relation
from openie.testing import toy_pool
from rewards.keyword import (
    KeywordRewardModel,
    RewardTrainingConfig,
    default_answer,
    keyword_spans,
    mark_keywords,
    reward_groups,
)
from rewards.preference import PreferenceExample


def test_overlapping_spans_merge_into_one_keyword():
    text = "New York City Marathon winner Anna Berg"
    r = Record("r", text, entities=[Entity(0, 8, "location", "New York"), Entity(4, 13, "location", "York City"),
                                    Entity(0, 22, "misc", "New York City Marathon"), Entity(30, 39, "person", "Anna Berg")])
    assert keyword_spans(r) == [(0, 22), (30, 39)]
    assert mark_keywords(r) == "<Keyword> New York City Marathon </Keyword> winner <Keyword> Anna Berg </Keyword>"


def test_relation_arguments_are_keywords_and_answers_follow_the_task():
    text = "Anna works for Oxfam"
    head, tail = Entity(0, 4, "person", "Anna"), Entity(15, 20, "organization", "Oxfam")
    r = Record("r", text, relations=[Relation(head, tail, "works_for")], meta={"task": "re"})
    assert mark_keywords(r) == "<Keyword> Anna </Keyword> works for <Keyword> Oxfam </Keyword>"
    assert default_answer(r) == "works_for: Anna, Oxfam"
    assert default_answer(Record("e", "nothing here")) == "None"


def _examples(queries, pool, seed):
    from openie.engines.base import ScoreRequest
    from openie.testing import toy_preference

    rng = random.Random(seed)
    out = []
    for q in queries:
        cands = rng.sample(pool, 16)
        gold = " " + default_answer(q)
        scores = [toy_preference(ScoreRequest(f"Output: {default_answer(c)}", gold)) / len(gold.split())
                  + 1e-3 * rng.random() for c in cands]
        out.append(PreferenceExample(q, cands, scores))
    return out


def test_groups_take_the_positive_from_the_top_and_negatives_from_the_bottom():
    pool = toy_pool(30)
    ex = PreferenceExample(pool[0], pool[1:21], [float(-i) for i in range(20)])
    groups = reward_groups([ex] * 20, group_size=8, top=3, bottom=16, seed=1)
    positives = {g.candidates[0].id for g in groups}
    assert positives <= {c.id for c in pool[1:4]} and len(positives) > 1
    for g in groups:
        assert len(g.candidates) == 8 and len({c.id for c in g.candidates[1:]}) == 7
        assert all(c.id in {x.id for x in pool[5:21]} for c in g.candidates[1:])  # the bottom 16 of 20
    assert reward_groups([PreferenceExample(pool[0], pool[1:9], [0.0] * 8)]) == []  # too few candidates


def _mean_metric(model, examples, metric):
    from openie.methods.ruie import ranking_metrics

    return float(np.mean([ranking_metrics(ex.scores, model.score(ex.query, ex.candidates), [3])[metric]
                          for ex in examples]))


def test_training_ranks_the_llms_preferred_candidates_higher_on_held_apart_queries(tiny_bert_path, tmp_path):
    torch = pytest.importorskip("torch")
    pool, held = toy_pool(60, seed=0), toy_pool(18, seed=1)
    train, test = _examples(pool[:45], pool, 0), _examples(held, pool, 1)
    groups = reward_groups(train, group_size=8, top=3, bottom=16)
    torch.manual_seed(0)
    untrained = KeywordRewardModel(str(tiny_bert_path), max_length=64, show_progress=False)
    before = {m: _mean_metric(untrained, test, m) for m in ("recall@3", "gain@3")}
    torch.manual_seed(0)
    model = KeywordRewardModel(str(tiny_bert_path), max_length=64, show_progress=False)
    history = model.fit(groups, RewardTrainingConfig(epochs=40, lr=3e-3, groups_per_step=4))
    assert np.mean([h["loss"] for h in history[-10:]]) < np.mean([h["loss"] for h in history[:10]]) - 0.2
    after = {m: _mean_metric(model, test, m) for m in ("recall@3", "gain@3")}
    assert after["recall@3"] > before["recall@3"] + 0.1 and after["gain@3"] > before["gain@3"] + 0.1, (before, after)

    saved = model.save(tmp_path / "reward")
    again = KeywordRewardModel.load(saved)
    q, cands = test[0].query, test[0].candidates
    assert np.allclose(again.score(q, cands), model.score(q, cands), atol=1e-5)
    reranked = again.rerank(q, [(c, 0.0) for c in cands], 4)
    assert len(reranked) == 4 and reranked[0][1] >= reranked[-1][1]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="query_answer_dropout"):
        KeywordRewardModel("minilm", query_answer_dropout=1.5)
    with pytest.raises(ValueError, match="no reward training groups"):
        KeywordRewardModel("minilm").fit([])
