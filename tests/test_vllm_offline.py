"""The vLLM offline engine on a tiny random Qwen2 with three random LoRA adapters (one engine per module)."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("vllm")
torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from openie.engines import vllm_plugin  # noqa: E402
from openie.engines.base import (  # noqa: E402
    Engine,
    EngineError,
    GenerationRequest,
    ScoreRequest,
    UnsupportedRequestError,
)
from openie.engines.tokenization import prompt_ids, split_pair_ids  # noqa: E402
from openie.engines.vllm_offline import VLLMEngine  # noqa: E402
from openie.testing import build_random_lora  # noqa: E402

ADAPTERS = ("A", "B", "C")
PROMPT = "Marie Curie was born in"
SCORE_PAIRS = [("Paris is the capital of", " France."), ("Bob Smith works for", " Siemens in Berlin.")]




@pytest.fixture(scope="module")
def adapter_dirs(tiny_decoder_path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vllm-offline-loras")
    return {name: build_random_lora(tiny_decoder_path, root / name, seed=100 + i) for i, name in enumerate(ADAPTERS)}


@pytest.fixture(scope="module")
def engine(tiny_decoder_path, adapter_dirs):
    # max_loras == number of adapters: a batch using all three fills every slot, including the
    # last one, which is the slot vLLM's CPU ops wrongly pick for index -1 ("no adapter").
    eng = VLLMEngine(tiny_decoder_path, adapter_dirs, max_loras=3, dtype="float32", max_model_len=256,
                     kv_cache_memory_bytes=64 * 2**20, seed=0)
    yield eng
    eng.close()


@contextlib.contextmanager
def guards(engine: VLLMEngine, *, grouping: bool, plugin: bool):
    """Run with the engine's adapter grouping and/or the CPU LoRA op patch switched on or off."""
    was_grouping, was_patched = engine.group_by_adapter, vllm_plugin.is_patched()
    engine.group_by_adapter = grouping
    (vllm_plugin.patch_cpu_lora_ops if plugin else vllm_plugin.unpatch_cpu_lora_ops)()
    try:
        yield
    finally:
        engine.group_by_adapter = was_grouping
        (vllm_plugin.patch_cpu_lora_ops if was_patched else vllm_plugin.unpatch_cpu_lora_ops)()


def greedy(adapter: str | None, max_tokens: int = 12) -> GenerationRequest:
    return GenerationRequest(prompt=PROMPT, adapter=adapter, max_tokens=max_tokens)


def test_engine_meets_the_protocol(engine, tiny_decoder_path):
    assert isinstance(engine, Engine)
    assert engine.model_id == str(Path(tiny_decoder_path).resolve())
    assert engine.on_cpu and engine.group_by_adapter and vllm_plugin.is_patched()
    caps = engine.capabilities  # declared, so a method can refuse up front
    assert caps.context_length == engine.max_model_len == 256 and caps.tokenizer is engine.tokenizer
    assert caps.structured_outputs and caps.loglikelihood and caps.lora and engine.dtype == "float32"


def test_adapters_change_greedy_output_and_runs_repeat(engine):
    first = {a: engine.generate([greedy(a)])[0] for a in (None, "A", "B")}
    again = {a: engine.generate([greedy(a)])[0] for a in (None, "A", "B")}
    assert first == again
    texts = [g.text for g in first.values()]
    assert len(set(texts)) == 3, texts
    g = first[None]
    assert g.finish_reason == "length" and g.completion_tokens == 12
    assert g.prompt_tokens == len(prompt_ids(engine.tokenizer, PROMPT))


@pytest.mark.parametrize("grouping,plugin", [(True, True), (True, False), (False, True)],
                         ids=["grouping+plugin", "grouping-only", "plugin-only"])
def test_mixed_batch_equals_each_request_alone(engine, grouping, plugin):
    """The CPU mixed-batch bug: base requests batched with adapter requests got an adapter applied.

    Each guard alone must be enough; with neither, see the next test.
    """
    order = [None, "A", "B", "C", None, "A"]
    with guards(engine, grouping=grouping, plugin=plugin):
        alone = {a: engine.generate([greedy(a)])[0].text for a in (None, "A", "B", "C")}
        mixed = [g.text for g in engine.generate([greedy(a) for a in order])]
    assert mixed == [alone[a] for a in order]


def test_without_both_guards_vllm_shows_the_bug(engine):
    """Proves the test above can fail: vLLM's own CPU ops, one mixed batch, base output changes.

    Skips (rather than fails) once vLLM itself is fixed: then the plugin may be dropped.
    """
    order = [None, "A", "B", "C", None]
    with guards(engine, grouping=False, plugin=True):
        base = engine.generate([greedy(None)])[0].text
    with guards(engine, grouping=False, plugin=False):
        mixed = [g.text for g in engine.generate([greedy(a) for a in order])]
    if mixed[0] == base and mixed[4] == base:
        pytest.skip("vLLM's own CPU LoRA ops no longer apply an adapter to base requests")
    assert mixed[0] != base


def peft_loglikelihood(base_path: Path, adapter: Path | None, pairs) -> list[float]:
    """Reference scores straight from transformers (+ peft), on the same token ids."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    if adapter is not None:
        model = peft.PeftModel.from_pretrained(model, adapter)
    model.eval()
    out = []
    for context, continuation in pairs:
        ctx, cont = split_pair_ids(tokenizer, context, continuation)
        ids = ctx + cont
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        out.append(sum(float(logprobs[p - 1, ids[p]]) for p in range(len(ctx), len(ids))))
    return out


def test_loglikelihood_matches_transformers_and_peft(engine, tiny_decoder_path, adapter_dirs):
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_path)
    for context, continuation in SCORE_PAIRS:  # both backends read the same ids
        assert split_pair_ids(engine.tokenizer, context, continuation) == split_pair_ids(hf_tokenizer, context,
                                                                                         continuation)
    adapters = [None, "A", "B"]
    requests = [ScoreRequest(c, x, adapter=a) for a in adapters for c, x in SCORE_PAIRS]
    scores = engine.loglikelihood(requests)  # one call mixing base and adapters
    expected = [v for a in adapters
                for v in peft_loglikelihood(tiny_decoder_path, adapter_dirs[a] if a else None, SCORE_PAIRS)]
    for request, score, ref in zip(requests, scores, expected, strict=True):
        assert score.logprob == pytest.approx(ref, abs=1e-3), request
        assert score.n_tokens == len(split_pair_ids(hf_tokenizer, request.context, request.continuation)[1])
        assert score.mean_logprob == pytest.approx(score.logprob / score.n_tokens)
    assert len({round(s.logprob, 4) for s in scores[::2]}) == 3  # the adapters do change scores


def test_sampling_seed_and_stop_strings(engine):
    sampled = GenerationRequest(prompt=PROMPT, temperature=1.0, top_p=0.9, seed=7, max_tokens=12)
    assert engine.generate([sampled]) == engine.generate([sampled])
    full = engine.generate([greedy(None, max_tokens=16)])[0].text
    stop = full[4:6]
    g = engine.generate([GenerationRequest(prompt=PROMPT, max_tokens=16, stop=(stop,))])[0]
    assert g.finish_reason == "stop" and stop not in g.text and full.startswith(g.text)


def test_json_schema_constrains_output(engine):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {
        "type": "object",
        "properties": {"type": {"enum": ["person", "location", "organization"]}, "negated": {"type": "boolean"}},
        "required": ["type", "negated"],
        "additionalProperties": False,
    }
    requests = [GenerationRequest(prompt="Marie Curie is a", json_schema=schema, max_tokens=40, adapter=a)
                for a in (None, "A")]
    for g in engine.generate(requests):
        assert g.finish_reason == "stop", g
        jsonschema.validate(json.loads(g.text), schema)


def test_allowed_texts_restrict_every_generated_token(engine, monkeypatch):
    from openie.engines.tokenization import allowed_token_ids

    produced = []  # a spy on the real vLLM outputs: the token ids of every completion
    real = engine._run

    def spy(prompts, params, adapters):
        outs = real(prompts, params, adapters)
        produced.extend(list(o.outputs[0].token_ids) for o in outs)
        return outs

    monkeypatch.setattr(engine, "_run", spy)
    text = "Grace Hopper met Bob in Paris ."
    requests = [GenerationRequest(prompt=f"Sentence: {text}\nEntities:", max_tokens=16, adapter=a,
                                  allowed_texts=(text, "<<< >>>")) for a in (None, "A", "B")]
    engine.generate(requests)
    allowed = set(allowed_token_ids(engine.tokenizer, (text, "<<< >>>"), engine._end_ids()))
    assert len(produced) == 3 and all(row and set(row) <= allowed for row in produced)
    produced.clear()
    engine.generate([GenerationRequest(prompt=r.prompt, max_tokens=16, adapter=r.adapter) for r in requests])
    assert any(not set(row) <= allowed for row in produced)  # unconstrained, the random model leaves the input


def test_chat_messages_use_the_chat_template(engine):
    messages = ({"role": "user", "content": "Who was Marie Curie?"},)
    g = engine.generate([GenerationRequest(messages=messages, max_tokens=4)])[0]
    rendered = engine.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    assert g.prompt_tokens == len(prompt_ids(engine.tokenizer, rendered))
    assert g == engine.generate([GenerationRequest(prompt=rendered, max_tokens=4)])[0]


def test_unknown_adapter_names_it_and_the_known_ones(engine):
    with pytest.raises(EngineError, match=r"unknown adapter 'Z'.*'A', 'B', 'C'"):
        engine.generate([greedy(None), greedy("Z")])
    with pytest.raises(EngineError, match="unknown adapter 'Z'"):
        engine.loglikelihood([ScoreRequest("a", "b", adapter="Z")])


def test_invalid_json_schema_is_rejected_before_vllm(engine):
    bad = {"type": "object", "properties": {"age": {"type": "integr"}}}
    with pytest.raises(UnsupportedRequestError, match=r"request 1: invalid JSON schema at properties/age/type"):
        engine.generate([greedy(None), GenerationRequest(prompt="x", json_schema=bad)])
    # Valid JSON Schema that xgrammar cannot compile (a lookbehind): still a request error, and
    # the engine keeps serving.
    lookbehind = {"type": "string", "pattern": "(?<=a)b"}
    with pytest.raises(UnsupportedRequestError, match="vLLM rejected a request"):
        engine.generate([GenerationRequest(prompt="x", json_schema=lookbehind, max_tokens=4)])
    assert engine.generate([greedy(None, max_tokens=2)])[0].completion_tokens == 2


def test_too_long_prompt_names_request_and_lengths(engine):
    long_prompt = "Paris is the capital of France. " * 200
    n = len(prompt_ids(engine.tokenizer, long_prompt))
    with pytest.raises(EngineError, match=rf"request 1: prompt has {n} tokens .* max_model_len is 256"):
        engine.generate([greedy(None), GenerationRequest(prompt=long_prompt)])
    with pytest.raises(EngineError, match=r"score request 0: prompt has \d+ tokens"):
        engine.loglikelihood([ScoreRequest(long_prompt, " end")])


def test_empty_context_reads_as_the_start_token(engine):
    assert prompt_ids(engine.tokenizer, "") == []  # the tiny tokenizer adds no BOS, like Qwen2
    [score] = engine.loglikelihood([ScoreRequest("", "Paris")])
    assert score.n_tokens == len(engine.tokenizer("Paris", add_special_tokens=False)["input_ids"])
    assert score.logprob < 0


def test_adapter_fingerprints_and_retrained_adapters(engine, adapter_dirs, tmp_path):
    assert engine.adapter_fingerprint(None) == ""
    fp = {a: engine.adapter_fingerprint(a) for a in ADAPTERS}
    assert len(set(fp.values())) == 3 and all(len(v) == 64 for v in fp.values())
    assert engine.adapter_fingerprint("A") == fp["A"]
    with pytest.raises(EngineError, match="unknown adapter"):
        engine.adapter_fingerprint("nope")

    # Same files under another name: same fingerprint, same outputs.
    engine.add_adapter("A_copy", adapter_dirs["A"])
    assert engine.adapter_fingerprint("A_copy") == fp["A"]
    assert engine.generate([greedy("A_copy")]) == engine.generate([greedy("A")])

    # "Retraining" D in place (B's weights, then C's): new fingerprint, new vLLM adapter, new outputs.
    d = tmp_path / "D"
    shutil.copytree(adapter_dirs["B"], d)
    engine.add_adapter("D", d)
    as_b = engine.generate([greedy("D")])[0]
    assert engine.adapter_fingerprint("D") == fp["B"]
    shutil.copy(adapter_dirs["C"] / "adapter_model.safetensors", d / "adapter_model.safetensors")
    assert engine.adapter_fingerprint("D") == fp["C"]
    as_c = engine.generate([greedy("D")])[0]
    assert as_b == engine.generate([greedy("B")])[0]
    assert as_c == engine.generate([greedy("C")])[0] != as_b

    with pytest.raises(EngineError, match="not a peft adapter folder"):
        engine.add_adapter("E", tmp_path / "missing")


def test_empty_request_lists(engine):
    assert engine.generate([]) == [] and engine.loglikelihood([]) == []


def test_close_frees_the_engine(tiny_decoder_path):
    eng = VLLMEngine(tiny_decoder_path, max_model_len=128, dtype="float32", kv_cache_memory_bytes=16 * 2**20)
    assert not eng.enable_lora
    assert eng.generate([GenerationRequest(prompt="Paris", max_tokens=2)])[0].completion_tokens == 2
    with pytest.raises(EngineError, match="started without LoRA"):
        eng.add_adapter("A", Path("/nonexistent"))
    eng.close()
    eng.close()
    with pytest.raises(EngineError, match="closed"):
        eng.generate([GenerationRequest(prompt="Paris", max_tokens=2)])
