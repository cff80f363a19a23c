"""TransformersEngine on a tiny random Qwen2 with two random LoRA adapters (real peft, real xgrammar)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from openie.engines.base import (  # noqa: E402
    Engine,
    EngineError,
    GenerationRequest,
    ScoreRequest,
    UnsupportedRequestError,
    adapter_content_hash,  # noqa: E402
    request_key,
)
from openie.engines.hf import TransformersEngine  # noqa: E402
from openie.engines.tokenization import prompt_ids, split_pair_ids  # noqa: E402
from openie.testing import build_random_lora  # noqa: E402

PROMPTS = ["Marie Curie was born in", "The river Thames flows through", "Apple Inc. is a technology company",
           "Berlin is the capital of"]

# Finite on a random model (enums, bounded integers, maxItems). No free or length-bounded strings:
# a random model never closes a free string, and xgrammar 0.2.8 lets raw control characters into
# strings with minLength/maxLength (invalid JSON; vLLM compiles the same grammar).
ENTITY_SCHEMA = {
    "type": "object",
    "properties": {
        "entities": {
            "type": "array", "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"text": {"enum": ["Marie Curie", "Warsaw", "Paris"]},
                               "type": {"enum": ["person", "location"]},
                               "start": {"type": "integer", "minimum": 0, "maximum": 999},
                               "certain": {"type": "boolean"}},
                "required": ["text", "type", "start", "certain"], "additionalProperties": False,
            },
        },
    },
    "required": ["entities"], "additionalProperties": False,
}


def make_random_adapter(base: Path, out: Path, seed: int, rank: int = 4) -> Path:
    return build_random_lora(base, out, seed, rank=rank, target_modules=("q_proj", "v_proj", "o_proj", "down_proj"))


@pytest.fixture(scope="module")
def adapters(tiny_decoder_path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-adapters")
    return {"a": make_random_adapter(tiny_decoder_path, root / "a", 1),
            "b": make_random_adapter(tiny_decoder_path, root / "b", 2)}


@pytest.fixture(scope="module")
def engine(tiny_decoder_path, adapters) -> TransformersEngine:
    return TransformersEngine(tiny_decoder_path, adapters, device="cpu", dtype="float32", batch_size=4)


def test_engine_protocol_and_fingerprints(engine, adapters):
    assert isinstance(engine, Engine)
    caps = engine.capabilities
    assert caps.context_length == engine.max_model_len and caps.tokenizer is engine.tokenizer
    assert caps.structured_outputs and caps.allowed_texts and caps.loglikelihood and caps.lora
    assert engine.model_id and engine.adapters == ["a", "b"]
    assert engine.adapter_fingerprint(None) == ""
    fa, fb = engine.adapter_fingerprint("a"), engine.adapter_fingerprint("b")
    assert len(fa) == 64 and fa != fb and fa == adapter_content_hash(adapters["a"])
    request = GenerationRequest(prompt="x", adapter="a")
    assert request_key(engine, "generate", request) != request_key(engine, "generate",
                                                                   GenerationRequest(prompt="x", adapter="b"))
    assert engine.tokenizer is not None and engine.model is not None


def test_greedy_generation_is_deterministic(engine):
    request = GenerationRequest(prompt=PROMPTS[0], max_tokens=6)
    first, second = engine.generate([request]), engine.generate([request])
    assert first == second
    out = first[0]
    assert out.prompt_tokens == len(prompt_ids(engine.tokenizer, PROMPTS[0]))
    assert out.finish_reason == "length" and out.completion_tokens == 6 and out.text


def test_adapters_change_outputs(engine):
    outs = [engine.generate([GenerationRequest(prompt=PROMPTS[0], max_tokens=10, adapter=a)])[0].text
            for a in (None, "a", "b")]
    assert len(set(outs)) == 3, outs
    scores = engine.loglikelihood([ScoreRequest(PROMPTS[1], " London", adapter=a) for a in (None, "a", "b")])
    assert len({round(s.logprob, 3) for s in scores}) == 3


def test_mixed_batch_equals_each_request_alone(engine):
    requests = [
        GenerationRequest(prompt=PROMPTS[i % 4], adapter=adapter, max_tokens=3 + i % 5,
                          temperature=0.9 if i % 3 == 0 else 0.0, top_p=0.8 if i % 2 else 1.0, seed=i)
        for i, adapter in enumerate([None, "a", "b", "a", None, "b", "b", None, "a"])
    ]
    together = engine.generate(requests)
    alone = [engine.generate([r])[0] for r in requests]
    assert together == alone
    assert [g.completion_tokens for g in together] == [r.max_tokens for r in requests]


def test_seed_fixes_a_sampled_request_whatever_its_batch(engine):
    sampled = GenerationRequest(prompt=PROMPTS[2], max_tokens=8, temperature=1.0, seed=7)
    other = GenerationRequest(prompt=PROMPTS[3], max_tokens=8, temperature=1.0, seed=8)
    alone = engine.generate([sampled])[0]
    assert engine.generate([other, sampled, other])[1] == alone
    reseeded = [engine.generate([GenerationRequest(prompt=PROMPTS[2], max_tokens=8, temperature=1.0, seed=s)])[0].text
                for s in range(4)]
    assert len(set(reseeded)) > 1


def manual_loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    ctx, cont = split_pair_ids(tokenizer, context, continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(float(logprobs[len(ctx) - 1 + k, tok]) for k, tok in enumerate(cont))


def test_loglikelihood_matches_a_manual_forward_and_ignores_batching(engine):
    pairs = [(PROMPTS[0], " Warsaw in 1867"), (PROMPTS[1], " London"), (PROMPTS[2], " based in Cupertino."),
             ("Paris", " is the capital of France")]
    requests = [ScoreRequest(c, x, adapter=a) for a in (None, "a", "b") for c, x in pairs]
    batched = engine.loglikelihood(requests)
    alone = [engine.loglikelihood([r])[0] for r in requests]
    for b, s in zip(batched, alone, strict=True):
        assert b.n_tokens == s.n_tokens
        assert b.logprob == pytest.approx(s.logprob, abs=1e-4)
    for request, score in zip(requests, batched, strict=True):
        if request.adapter is None:
            with engine.model.disable_adapter():
                expected = manual_loglikelihood(engine.model, engine.tokenizer, request.context, request.continuation)
        else:
            engine.model.set_adapter(request.adapter)
            expected = manual_loglikelihood(engine.model, engine.tokenizer, request.context, request.continuation)
        assert score.logprob == pytest.approx(expected, abs=1e-4)
        assert score.mean_logprob == pytest.approx(score.logprob / score.n_tokens)
        assert score.logprob < 0


def test_json_schema_constrained_generation_is_valid(engine):
    prompt = "Marie Curie was born in Warsaw. Entities as JSON:"
    requests = [GenerationRequest(prompt=prompt, json_schema=ENTITY_SCHEMA, max_tokens=200, adapter=a,
                                  temperature=t, seed=3)
                for a in (None, "a", "b") for t in (0.0, 1.0)]
    requests.append(GenerationRequest(prompt=prompt, max_tokens=5))  # unconstrained in the same batch
    outs = engine.generate(requests)
    for out in outs[:-1]:
        assert out.finish_reason == "stop", out
        jsonschema.validate(json.loads(out.text), ENTITY_SCHEMA)
    assert outs[-1] == engine.generate([requests[-1]])[0]


def test_stop_strings_truncate_the_text(engine):
    full = engine.generate([GenerationRequest(prompt=PROMPTS[1], max_tokens=12)])[0].text
    stop = full[4:6]
    cut = engine.generate([GenerationRequest(prompt=PROMPTS[1], max_tokens=12, stop=("never-there", stop))])[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full[: full.index(stop)]
    assert cut.completion_tokens <= 12


def test_chat_messages_render_through_the_chat_template(engine):
    messages = ({"role": "user", "content": "Where was Marie Curie born?"},)
    chat = engine.generate([GenerationRequest(messages=messages, max_tokens=5)])[0]
    rendered = engine.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    assert rendered.startswith("<|im_start|>user\n") and rendered.endswith("<|im_start|>assistant\n")
    assert chat.prompt_tokens == len(prompt_ids(engine.tokenizer, rendered))
    assert chat == engine.generate([GenerationRequest(prompt=rendered, max_tokens=5)])[0]


def test_unknown_adapter_is_refused_naming_the_known_ones(engine):
    with pytest.raises(EngineError, match=r"request 1: unknown adapter 'c'.*a, b"):
        engine.generate([GenerationRequest(prompt="x"), GenerationRequest(prompt="x", adapter="c")])
    with pytest.raises(EngineError, match="unknown adapter 'c'"):
        engine.loglikelihood([ScoreRequest("x", "y", adapter="c")])
    with pytest.raises(EngineError, match="unknown adapter"):
        engine.adapter_fingerprint("c")


def test_invalid_schema_is_refused(engine):
    with pytest.raises(UnsupportedRequestError, match=r"request 0: invalid JSON schema.*"):
        engine.generate([GenerationRequest(prompt="x", json_schema={"type": "nonsense"})])


def test_too_long_prompts_are_refused_with_lengths(engine):
    long_text = "Paris is the capital of France. " * 200
    n = len(prompt_ids(engine.tokenizer, long_text))
    assert n > engine.max_model_len
    with pytest.raises(EngineError, match=rf"request 1: prompt has {n} tokens.*context window is 512"):
        engine.generate([GenerationRequest(prompt="x"), GenerationRequest(prompt=long_text)])
    with pytest.raises(EngineError, match=r"request 0: context \(\d+ tokens\).*exceed the context window of 512"):
        engine.loglikelihood([ScoreRequest(long_text, " yes")])


def test_generation_stops_at_the_context_window(tiny_decoder_path):
    small = TransformersEngine(tiny_decoder_path, device="cpu", dtype="float32", max_model_len=12)
    n = len(prompt_ids(small.tokenizer, PROMPTS[0]))
    out = small.generate([GenerationRequest(prompt=PROMPTS[0], max_tokens=50)])[0]
    assert out.finish_reason == "length" and out.completion_tokens == 12 - n


def test_add_adapter_refuses_a_duplicate_name_and_can_replace(tiny_decoder_path, adapters):
    eng = TransformersEngine(tiny_decoder_path, device="cpu", dtype="float32")
    request = GenerationRequest(prompt=PROMPTS[0], max_tokens=6)
    base = eng.generate([request])[0]
    eng.add_adapter("x", adapters["a"])
    with pytest.raises(EngineError, match="already loaded"):
        eng.add_adapter("x", adapters["b"])
    eng.add_adapter("x", adapters["b"], replace=True)
    assert eng.adapter_fingerprint("x") == adapter_content_hash(adapters["b"])
    assert eng.generate([request])[0] == base  # the base stays the base
    with pytest.raises(EngineError, match="not a peft adapter folder"):
        eng.add_adapter("y", tiny_decoder_path)


def test_checkpoint_sampling_defaults_are_not_applied(tiny_decoder_path, tmp_path, engine):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_decoder_path, copy)
    (copy / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "top_k": 1, "repetition_penalty": 5.0, "no_repeat_ngram_size": 1, "eos_token_id": 0}))
    other = TransformersEngine(copy, device="cpu", dtype="float32")
    request = GenerationRequest(prompt=PROMPTS[1], max_tokens=20)
    expected = engine.generate([request])[0]
    assert len(set(engine.tokenizer(expected.text)["input_ids"])) < 20  # it repeats: a penalty would show
    assert other.generate([request])[0] == expected


def test_requests_that_cannot_be_prompted_are_refused_with_their_index(engine, tiny_decoder_path):
    with pytest.raises(EngineError, match="request 1: the prompt encodes to no tokens"):
        engine.generate([GenerationRequest(prompt="x"), GenerationRequest(prompt="")])
    engine.tokenizer.chat_template, template = None, engine.tokenizer.chat_template
    try:
        with pytest.raises(UnsupportedRequestError, match="request 0: .*no chat template"):
            engine.generate([GenerationRequest(messages=({"role": "user", "content": "hi"},))])
    finally:
        engine.tokenizer.chat_template = template


def test_an_empty_context_reads_as_the_start_token(engine):
    start = engine.tokenizer.bos_token_id
    cont = engine.tokenizer("Paris is", add_special_tokens=False)["input_ids"]
    score = engine.loglikelihood([ScoreRequest("", "Paris is")])[0]
    with engine.model.disable_adapter(), torch.no_grad():
        logits = engine.model(input_ids=torch.tensor([[start, *cont]])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    expected = sum(float(logprobs[k, tok]) for k, tok in enumerate(cont))
    assert score.n_tokens == len(cont) and score.logprob == pytest.approx(expected, abs=1e-4)


def test_agrees_with_the_vllm_engine(engine, tiny_decoder_path, adapters):
    """The reference backend and vLLM give the same texts, counts and (to 1e-4) scores."""
    pytest.importorskip("vllm")
    from openie.engines.vllm_offline import VLLMEngine

    requests = [GenerationRequest(prompt=p, adapter=a, max_tokens=10) for p in PROMPTS[:2] for a in (None, "a", "b")]
    requests += [GenerationRequest(prompt=PROMPTS[0], adapter=a, max_tokens=120, json_schema=ENTITY_SCHEMA)
                 for a in (None, "a", "b")]
    requests.append(GenerationRequest(prompt=PROMPTS[1], max_tokens=12, stop=("e",)))
    scores = [ScoreRequest(p, " the capital of France", adapter=a) for p in PROMPTS[:2] for a in (None, "a", "b")]
    vllm_engine = VLLMEngine(tiny_decoder_path, adapters, max_loras=2, dtype="float32", max_model_len=256,
                             kv_cache_memory_bytes=64 * 2**20, seed=0)
    try:
        theirs, their_scores = vllm_engine.generate(requests), vllm_engine.loglikelihood(scores)
    finally:
        vllm_engine.close()
    assert engine.generate(requests) == theirs
    for mine, other in zip(engine.loglikelihood(scores), their_scores, strict=True):
        assert mine.n_tokens == other.n_tokens and mine.logprob == pytest.approx(other.logprob, abs=1e-4)
