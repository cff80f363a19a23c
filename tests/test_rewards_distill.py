"""Distilling reward scores into a bi-encoder: groups, the loss, and real (tiny) training that improves recall."""

from __future__ import annotations

import random

import numpy as np
import pytest

from openie.testing import toy_pool
from rewards.distill import (
    BiEncoderDistiller,
    DistillationConfig,
    DistillationGroup,
    distillation_group,
    read_distillation_info,
)


def _teacher(query, candidate) -> float:
    return 5.0 if query.meta["kind"] == candidate.meta["kind"] else -5.0


def _groups(queries, pool, seed):
    rng = random.Random(seed)
    out = []
    for q in queries:
        cands = rng.sample([c for c in pool if c.id != q.id], 16)
        g = distillation_group(q, cands, [_teacher(q, c) + rng.random() for c in cands], rng=rng)
        out.append(g)
    return out


def test_group_is_the_teachers_best_then_hard_negatives_outside_its_top_3():
    pool = toy_pool(12)
    scores = [float(-i) for i in range(10)]
    g = distillation_group(pool[0], pool[1:11], scores, hard_negatives=3, rng=random.Random(0))
    assert g.passages[0].id == pool[1].id and g.teacher_scores[0] == 0.0
    assert {p.id for p in g.passages[1:]} <= {c.id for c in pool[4:11]}
    assert distillation_group(pool[0], pool[1:5], [0.0] * 4, hard_negatives=3) is None


def _recall(distiller, groups, k=1):
    hits = []
    for g in groups:
        q = distiller.embed([distiller.query_prefix + g.query.text]).detach().numpy()[0]
        p = distiller.embed([distiller.passage_prefix + x.text for x in g.passages]).detach().numpy()
        hits.append(0 in np.argsort(-(p @ q))[:k])
    return float(np.mean(hits))


def test_loss_parts_and_training_raise_held_apart_recall(tiny_bert_path, tmp_path):
    torch = pytest.importorskip("torch")
    pool = toy_pool(60, seed=0)
    train, test = _groups(pool[:48], pool, 0), _groups(toy_pool(18, seed=1), pool, 1)
    torch.manual_seed(0)
    distiller = BiEncoderDistiller(str(tiny_bert_path), show_progress=False)
    config = DistillationConfig(epochs=15, lr=5e-3, queries_per_step=8)
    _, parts = distiller.loss(train[:4], config)
    assert parts["loss"] == pytest.approx(config.infonce_weight * parts["infonce"] + parts["kl"], rel=1e-5)
    before = _recall(distiller, test)
    history = distiller.fit(train, config)
    assert np.mean([h["loss"] for h in history[-6:]]) < np.mean([h["loss"] for h in history[:6]])
    after = _recall(distiller, test)
    assert after > before + 0.15, (before, after)

    folder = distiller.save(tmp_path / "student")
    info = read_distillation_info(folder)
    assert info["query_prefix"] == "query: " and info["config"]["temperature"] == 0.01
    from retrievers import DenseRetriever

    retriever = DenseRetriever(str(folder), query_prefix=info["query_prefix"], passage_prefix=info["passage_prefix"],
                               show_progress=False)
    retriever.index(pool)
    query = toy_pool(3, seed=7)[0]  # a person-visited-city sentence
    kinds = [r.meta["kind"] for r, _ in retriever.retrieve(query, 5)]
    assert kinds.count(0) >= 3, kinds


def test_groups_in_a_batch_must_be_the_same_size(tiny_bert_path):
    pytest.importorskip("torch")
    pool = toy_pool(10)
    a = DistillationGroup(pool[0], pool[1:5], [1.0, 0.0, 0.0, 0.0])
    b = DistillationGroup(pool[5], pool[6:9], [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="same number of passages"):
        BiEncoderDistiller(str(tiny_bert_path), show_progress=False).loss([a, b], DistillationConfig())
