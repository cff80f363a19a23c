from __future__ import annotations

import multiprocessing as mp

from openie.engines.base import GenerationRequest, ScoreRequest
from openie.engines.cache import CachedEngine
from openie.engines.scripted import ScriptedEngine


def _engine() -> ScriptedEngine:
    return ScriptedEngine(lambda r: f"out:{r.prompt}:{r.adapter}")


def test_hits_after_first_run_and_results_identical(tmp_path):
    inner = _engine()
    cached = CachedEngine(inner, tmp_path / "c.sqlite")
    reqs = [GenerationRequest(prompt=p) for p in ("a", "b", "c")]
    first = cached.generate(reqs)
    assert cached.stats.misses == 3 and cached.stats.hits == 0 and len(inner.calls) == 3
    again = CachedEngine(inner, tmp_path / "c.sqlite")  # a new process would see the same file
    second = again.generate(reqs + [GenerationRequest(prompt="d")])
    assert second[:3] == first and all(g.cached for g in second[:3]) and not second[3].cached
    assert again.stats.hits == 3 and again.stats.misses == 1 and len(inner.calls) == 4
    assert "75% hit rate" in str(again.stats)


def test_key_covers_adapter_params_template_and_schema(tmp_path):
    inner = _engine()
    cached = CachedEngine(inner, tmp_path / "c.sqlite")
    base = GenerationRequest(prompt="x")
    variants = [base, GenerationRequest(prompt="x", adapter="A"), GenerationRequest(prompt="x", max_tokens=7),
                GenerationRequest(prompt="x", template="ner.ruie.v1@abc"), GenerationRequest(prompt="x", stop=("\n",)),
                GenerationRequest(prompt="x", json_schema={"type": "object"})]
    cached.generate(variants)
    cached.generate(variants)
    assert cached.stats.misses == len(variants) and cached.stats.hits == len(variants)


def test_adapter_content_change_invalidates(tmp_path):
    class Retrained(ScriptedEngine):
        version = "v1"

        def adapter_fingerprint(self, name):
            return f"{name}-{self.version}" if name else ""

    inner = Retrained(lambda r: "t")
    cached = CachedEngine(inner, tmp_path / "c.sqlite")
    req = [GenerationRequest(prompt="x", adapter="A")]
    cached.generate(req)
    inner.version = "v2"
    cached.generate(req)
    assert cached.stats.misses == 2


def test_unseeded_sampling_is_not_cached_and_bypass_flag(tmp_path):
    inner = _engine()
    cached = CachedEngine(inner, tmp_path / "c.sqlite")
    sampled = [GenerationRequest(prompt="x", temperature=0.7)]
    cached.generate(sampled)
    cached.generate(sampled)
    assert cached.stats.hits == 0 and cached.stats.uncacheable == 2
    seeded = [GenerationRequest(prompt="x", temperature=0.7, seed=3)]
    cached.generate(seeded)
    cached.generate(seeded)
    assert cached.stats.hits == 1
    off = CachedEngine(inner, tmp_path / "c.sqlite", enabled=False)
    n = len(inner.calls)
    off.generate(seeded)
    assert len(inner.calls) == n + 1 and off.stats.hits == 0


def test_loglikelihood_cached(tmp_path):
    inner = ScriptedEngine([], scores=lambda r: -2.0 * len(r.continuation.split()))
    cached = CachedEngine(inner, tmp_path / "c.sqlite")
    reqs = [ScoreRequest("ctx", " a b"), ScoreRequest("ctx", " c", adapter="A")]
    first = cached.loglikelihood(reqs)
    second = cached.loglikelihood(reqs)
    assert first == second and all(s.cached for s in second) and first[0].logprob == -4.0


def _writer(path: str, offset: int) -> None:
    cached = CachedEngine(ScriptedEngine(lambda r: r.prompt), path)
    for i in range(20):
        cached.generate([GenerationRequest(prompt=f"{offset}-{i}-{j}") for j in range(5)])


def test_concurrent_writers_share_one_file(tmp_path):
    path = str(tmp_path / "c.sqlite")
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    reader = CachedEngine(ScriptedEngine([]), path)
    out = reader.generate([GenerationRequest(prompt=f"{k}-{i}-{j}") for k in range(3) for i in range(20) for j in range(5)])
    assert reader.stats.hits == 300 and out[0].text == "0-0-0"


def test_backend_extras_pass_through_and_copy_does_not_recurse(tmp_path):
    import copy

    inner = _engine()
    inner.max_model_len = 77
    cached = CachedEngine(inner, tmp_path / "c.sqlite")
    assert cached.max_model_len == 77
    shallow = copy.copy(cached)
    assert shallow.engine is inner
