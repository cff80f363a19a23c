"""RUIE end to end on a toy NER+RE pool: scripted LLM preferences, real tiny reward model and retriever."""

from __future__ import annotations

import json

import pytest

from openie.engines.scripted import ScriptedEngine
from openie.methods.ruie import RUIE, STAGES, RUIEConfig, load_fit_plan, ranking_metrics
from openie.schema import Schema
from openie.testing import TOY_SCHEMA, toy_pool, toy_preference


class CountingEngine(ScriptedEngine):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.scored = 0

    def loglikelihood(self, requests):
        self.scored += len(requests)
        return super().loglikelihood(requests)


@pytest.fixture(scope="module")
def fitted(tiny_bert_path, tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    pool = toy_pool(90, relations=True)
    config = RUIEConfig(pool=["toy:train"], tasks=["ner", "re"], train_queries=48, heldout_queries=18,
                        bm25_candidates=200, scored_candidates=16, reward_model=str(tiny_bert_path),
                        reward_max_length=64, query_answer_dropout=0.0,
                        reward_training={"epochs": 20, "lr": 5e-3}, teacher_candidates=16,
                        retriever_model=str(tiny_bert_path), distillation={"epochs": 15, "lr": 5e-3})
    engine = CountingEngine(lambda r: "person: Anna", scores=toy_preference)
    workdir = tmp_path_factory.mktemp("ruie")
    ruie = RUIE(workdir, config, pool=pool, show_progress=False)
    report = ruie.fit(engine)
    return ruie, engine, report, pool, config


def test_every_stage_ran_and_is_recorded(fitted):
    ruie, engine, report, pool, _ = fitted
    assert ruie.status(engine.model_id) == {s: "done" for s in STAGES}
    prefs = ruie.preferences()
    assert len(prefs) == 66 and engine.scored == 66 * 16
    tasks = {ex.query.meta["task"] for ex in prefs}
    assert tasks == {"ner", "re"}
    for ex in prefs:  # BM25 candidates are of the query's task and never the query itself
        assert all(c.meta["task"] == ex.query.meta["task"] for c in ex.candidates)
        assert all(c.text != ex.query.text for c in ex.candidates)
    assert set(json.loads((ruie.workdir / "timings.json").read_text())) == set(STAGES)
    report = (ruie.workdir / "evaluation.md").read_text()
    assert "| distilled retriever |" in report and "held-apart" in report.lower()


def test_trained_components_beat_their_starting_points_on_held_apart_queries(fitted):
    components = fitted[2]["components"]
    assert fitted[2]["held_apart_queries"] == 18
    reward, start = components["reward model (query with answer)"], components["untrained reward model (start point)"]
    assert reward["gain@1"] > start["gain@1"] + 0.1 and reward["gain@3"] > start["gain@3"] + 0.05, (reward, start)
    student, base = components["distilled retriever"], components["untrained bi-encoder (start point)"]
    # the untrained tiny bi-encoder already tells the toy kinds apart by wording (gain@1 0.44 of at
    # most ~0.55), so the margin is small here; tests/test_rewards_distill.py shows the rise clearly
    assert student["gain@1"] > base["gain@1"] + 0.03, (student, base)


def test_a_second_fit_skips_finished_stages_and_a_changed_stage_redoes_only_what_follows(fitted, tiny_bert_path):
    ruie, engine, _, pool, config = fitted
    scored = engine.scored
    reward_mtime = (ruie.workdir / "reward" / "reward_model.json").stat().st_mtime_ns
    RUIE(ruie.workdir, config, pool=pool, show_progress=False).fit(engine, until="reward")
    assert engine.scored == scored
    changed = RUIEConfig(**{**config.__dict__, "distillation": {"epochs": 1, "lr": 5e-3}})
    again = RUIE(ruie.workdir, changed, pool=pool, show_progress=False)
    assert again.status(engine.model_id)["retriever"] == "stale"
    assert again.status(engine.model_id)["reward"] == "done"
    again.fit(engine)
    assert engine.scored == scored  # preferences were reused
    assert (ruie.workdir / "reward" / "reward_model.json").stat().st_mtime_ns == reward_mtime

    import shutil

    shutil.rmtree(ruie.workdir / "reward")  # model folders are not committed: a fresh clone rebuilds them
    assert again.status(engine.model_id)["reward"] == "todo"
    again.fit(engine)
    assert (ruie.workdir / "reward" / "reward_model.json").is_file() and engine.scored == scored


def test_predict_retrieves_same_task_demonstrations_from_the_distilled_retriever(fitted):
    ruie, _, _, pool, _ = fitted
    query = toy_pool(3, seed=5)[0].without_annotations()
    engine = ScriptedEngine(lambda r: "person: " + query.text.split()[0])
    extractor = ruie.extractor(engine, Schema.from_dict({"entities": TOY_SCHEMA["ner"]}), k=4)
    demos = extractor.demonstrations(query)
    assert len(demos) == 4 and all(d.meta["task"] == "ner" for d in demos)
    [pred] = list(ruie.predict([query], engine, Schema.from_dict({"entities": TOY_SCHEMA["ner"]}), k=4))
    assert [e.text for e in pred.entities] == [query.text.split()[0]]
    assert any(p.exists() for p in ruie.workdir.glob("index-*"))  # the pool index is saved for the next run


def test_ranking_metrics_on_a_hand_made_case():
    m = ranking_metrics([3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1, 3])
    assert m["recall@1"] == 0.0 and m["recall@3"] == pytest.approx(2 / 3)
    assert m["mrr"] == 0.25 and m["spearman"] == pytest.approx(-1.0)
    assert m["gain@1"] == pytest.approx(0.0 - 1.5) and m["gain@3"] == pytest.approx(1.0 - 1.5)
    assert ranking_metrics([1.0, 0.0], [5.0, 1.0], [1])["mrr"] == 1.0


def test_configs_are_checked(tmp_path):
    with pytest.raises(ValueError, match="cannot fill a group"):
        RUIEConfig(scored_candidates=8)
    with pytest.raises(ValueError, match="unknown task"):
        RUIEConfig(tasks=["pos"])
    bad = tmp_path / "fit.yaml"
    bad.write_text("ruie: {train_querys: 3}\n")
    with pytest.raises(ValueError, match=r"fit.yaml: ruie: unknown RUIE config key\(s\) \['train_querys'\]"):
        load_fit_plan(bad)
    good = tmp_path / "good.yaml"
    good.write_text("workdir: out\ncache: true\nengine: {backend: hf, model: x}\nruie: {train_queries: 3}\n")
    plan = load_fit_plan(good)
    assert plan.workdir == tmp_path / "out" and plan.cache == str(tmp_path / "out" / "llm_cache.sqlite")
    assert plan.config.train_queries == 3
