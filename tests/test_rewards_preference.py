"""LLM preference scoring: mean log-likelihood of the gold answer given each candidate, batched, task-aware."""

from __future__ import annotations

import pytest

from openie.engines.scripted import ScriptedEngine
from openie.records import Entity, Record
from rewards.preference import OTHER_TASK_SCORE, LLMPreferenceScorer, PreferenceExample, same_task


def _rec(rid: str, text: str, task: str | None = "ner") -> Record:
    return Record(rid, text, entities=[Entity(0, 4, "person", text[:4])], meta={} if task is None else {"task": task})


def _render(query: Record, candidate: Record) -> tuple[str, str]:
    return f"instruction\n\n{candidate.text}\n\n{query.text}", " person: " + query.text[:4]


def test_scores_are_the_engines_mean_logprob_and_other_tasks_get_minus_100():
    seen = []

    def score(request):
        seen.append(request)
        return -float(len(request.context))  # longer candidate -> lower score

    engine = ScriptedEngine([], scores=score)
    scorer = LLMPreferenceScorer(engine, _render, show_progress=False)
    query = _rec("q", "Anna visited Paris")
    cands = [_rec("a", "short"), _rec("b", "a much longer candidate"), _rec("c", "relation one", task="re")]
    scores = scorer.score(query, cands)
    n_tokens = engine.loglikelihood([seen[0]])[0].n_tokens
    assert scores[2] == OTHER_TASK_SCORE
    assert scores[0] > scores[1]
    assert scores[0] == pytest.approx(-len(_render(query, cands[0])[0]) / n_tokens)
    assert len(seen) == 3  # two scored, plus the probe above; the RE candidate never reached the engine
    assert all(r.continuation == " person: Anna" for r in seen)


def test_batches_span_queries_and_keep_order():
    calls = []

    class Counting(ScriptedEngine):
        def loglikelihood(self, requests):
            calls.append(len(requests))
            return super().loglikelihood(requests)

    engine = Counting([], scores=lambda r: -float(len(r.context)))
    scorer = LLMPreferenceScorer(engine, _render, batch_size=5, show_progress=False)
    queries = [_rec(f"q{i}", f"Query number {i}") for i in range(4)]
    pool = [_rec(f"c{j}", "x" * (j + 1)) for j in range(3)]
    examples = list(scorer.score_many((q, pool) for q in queries))
    assert [ex.query.id for ex in examples] == ["q0", "q1", "q2", "q3"]
    assert sum(calls) == 12 and max(calls) <= 6 and len(calls) < 4  # fewer engine calls than queries
    for ex in examples:
        assert ex.ranking() == [0, 1, 2]  # shortest candidate best


def test_untagged_records_belong_to_every_task():
    assert same_task(_rec("a", "x", None), _rec("b", "y", "re"))
    assert not same_task(_rec("a", "x", "ner"), _rec("b", "y", "re"))


def test_preference_example_round_trips_and_checks_lengths():
    ex = PreferenceExample(_rec("q", "Anna"), [_rec("a", "Boris")], [-1.5])
    assert PreferenceExample.from_dict(ex.to_dict()) == ex
    with pytest.raises(ValueError, match="1 candidates but 2 scores"):
        PreferenceExample(_rec("q", "Anna"), [_rec("a", "Boris")], [-1.0, -2.0])
