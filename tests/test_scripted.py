from __future__ import annotations

import pytest

from openie.engines.base import Engine, EngineError, GenerationRequest, ScoreRequest
from openie.engines.scripted import ScriptedEngine


def test_is_an_engine_and_replays_in_order():
    eng = ScriptedEngine(["one", "two three four"])
    assert isinstance(eng, Engine)
    out = eng.generate([GenerationRequest(prompt="a"), GenerationRequest(prompt="b", max_tokens=2)])
    assert out[0].text == "one" and out[0].finish_reason == "stop"
    assert out[1].text == "two three" and out[1].finish_reason == "length"
    with pytest.raises(EngineError, match="ran out"):
        eng.generate([GenerationRequest(prompt="c")])


def test_mapping_stop_strings_and_scores():
    eng = ScriptedEngine({"q": "person: Ada\nrest"}, scores=lambda r: -3.0)
    assert eng.generate([GenerationRequest(prompt="q", stop=("\n",))])[0].text == "person: Ada"
    with pytest.raises(EngineError, match="no output"):
        eng.generate([GenerationRequest(prompt="unknown")])
    s = eng.loglikelihood([ScoreRequest("c", "x y")])[0]
    assert s.logprob == -3.0 and s.n_tokens == 2 and s.mean_logprob == -1.5
    assert len(eng.calls) == 3


def test_request_validation():
    with pytest.raises(ValueError, match="exactly one"):
        GenerationRequest()
    with pytest.raises(ValueError, match="role"):
        GenerationRequest(messages=({"content": "x"},))
    with pytest.raises(ValueError):
        GenerationRequest(prompt="x", max_tokens=0)
    with pytest.raises(ValueError):
        ScoreRequest("c", "")


def test_capabilities_are_declared_and_pass_through_wrappers(tmp_path):
    from openie.engines.base import EngineCapabilities, capabilities
    from openie.engines.cache import CachedEngine
    from openie.engines.microbatch import MicroBatchEngine

    eng = ScriptedEngine(["x"])
    declared = capabilities(eng)
    assert declared.structured_outputs and declared.loglikelihood and declared.context_length is None
    cached = CachedEngine(eng, tmp_path / "c.sqlite")
    assert capabilities(cached) == declared and capabilities(MicroBatchEngine(cached)) == declared

    class Bare:  # a user's own engine that declares nothing: nothing is assumed
        model_id = "bare"

    assert capabilities(Bare()) == EngineCapabilities()
    eng.close()
