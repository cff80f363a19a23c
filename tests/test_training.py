"""train_lora on a tiny random Qwen2: it learns, it resumes exactly, it registers its adapter."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from openie.adapters.registry import AdapterRegistry  # noqa: E402
from openie.adapters.training import (  # noqa: E402
    TrainingError,
    _collate,
    _encode,
    _target_loss,
    default_target_modules,
    train_lora,
)
from openie.engines.base import GenerationRequest, ScoreRequest  # noqa: E402
from openie.engines.hf import TransformersEngine  # noqa: E402
from openie.engines.tokenization import prompt_ids, render_prompt  # noqa: E402

PAIRS = [("Marie Curie was born in", " Warsaw in 1867."), ("The capital of Germany is", " Berlin.")]
THREE_PAIRS = [*PAIRS, ("Apple Inc. was founded by", " Steve Jobs.")]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def test_loss_covers_the_target_tokens_only(tiny_decoder_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_path)
    chat = GenerationRequest(messages=({"role": "user", "content": "Where was Marie Curie born?"},))
    encoded = _encode(tokenizer, [PAIRS[0], (chat, " Warsaw")], max_length=512)
    for (ids, start), (prompt, target) in zip(encoded, [PAIRS[0], (chat, " Warsaw")], strict=True):
        text = render_prompt(tokenizer, prompt) if isinstance(prompt, GenerationRequest) else prompt
        assert ids[:start] == prompt_ids(tokenizer, text)  # exactly the ids the engines feed the model
        assert tokenizer.decode(ids[start:-1]) == target and ids[-1] == tokenizer.eos_token_id
    batch, labels, pads = _collate(encoded, tokenizer.pad_token_id)
    (ids0, start0), (ids1, start1) = encoded
    width = batch["input_ids"].shape[1]
    assert pads == [width - len(ids0), width - len(ids1)]  # left padding: every target ends in the last column
    assert batch["input_ids"][1, pads[1]:].tolist() == ids1 and batch["attention_mask"][1, :pads[1]].eq(0).all()
    assert batch["position_ids"][1, pads[1]:].tolist() == list(range(len(ids1)))
    n0 = len(ids0) - start0
    assert labels[0, -n0:].tolist() == ids0[start0:] and labels[0, :-n0].eq(-100).all()
    assert labels.shape[1] == max(n0, len(ids1) - start1)
    with pytest.raises(TrainingError, match="pair 0: prompt"):
        _encode(tokenizer, [PAIRS[0]], max_length=4)


def test_target_loss_equals_the_full_right_padded_loss(tiny_decoder_path):
    """Computing logits only at target positions of a left-padded batch changes no number."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder_path).eval()
    encoded = _encode(tokenizer, PAIRS[:3], max_length=512)
    batch, labels, _ = _collate(encoded, tokenizer.pad_token_id)
    with torch.no_grad():
        ours, hidden = _target_loss(model, batch, labels, hidden_layer=1)
        per_row = []
        for ids, start in encoded:
            full_labels = torch.tensor([[-100] * start + ids[start:]])
            out = model(input_ids=torch.tensor([ids]), labels=full_labels)
            per_row.append((float(out.loss) * (len(ids) - start), len(ids) - start))
    expected = sum(a for a, _ in per_row) / sum(n for _, n in per_row)
    assert float(ours) == pytest.approx(expected, rel=1e-4)
    assert hidden.shape[:2] == batch["input_ids"].shape


def test_training_memorises_pairs_and_registers_the_adapter(tiny_decoder_path, tmp_path):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_decoder_path)
    assert default_target_modules(base) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                                            "v_proj"]
    registry = AdapterRegistry(tmp_path / "registry")
    result = train_lora(str(tiny_decoder_path), lambda: iter(PAIRS), tmp_path / "run", max_steps=60, lr=1e-2,
                        batch_size=2, save_every=25, device="cpu", progress=False, registry=registry,
                        name="memorise", task="qa", languages=["en"])
    assert result.steps == 60 and result.resumed_from == 0 and len(result.losses) == 60
    assert result.final_loss == result.losses[-1] < result.losses[0] - 1.0
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-50", "checkpoint-60"]

    info = registry.get("memorise")
    assert info == result.adapter
    assert info.metrics["final_loss"] == pytest.approx(result.final_loss)
    assert info.training["rank"] == 8 and info.training["max_steps"] == 60 and info.task == "qa"
    assert info.rank == 8 and info.target_modules == default_target_modules(base)
    registry.check("memorise", str(tiny_decoder_path), max_rank=8)  # servable by vLLM as trained

    engine = TransformersEngine(tiny_decoder_path, {"memorise": info.path}, device="cpu")
    for adapter in (None, "memorise"):
        outs = engine.generate([GenerationRequest(prompt=p, max_tokens=12, adapter=adapter) for p, _ in PAIRS])
        texts = [o.text for o in outs]
        if adapter is None:
            assert all(text != target for text, (_, target) in zip(texts, PAIRS, strict=True))
        else:
            assert texts == [target for _, target in PAIRS]
    before = engine.loglikelihood([ScoreRequest(p, t) for p, t in PAIRS])
    after = engine.loglikelihood([ScoreRequest(p, t, adapter="memorise") for p, t in PAIRS])
    assert all(a.logprob > b.logprob + 1.0 for a, b in zip(after, before, strict=True))


def test_resume_continues_from_the_checkpoint_as_if_never_stopped(tiny_decoder_path, tmp_path):
    common = dict(lr=5e-3, batch_size=1, grad_accum=2, dropout=0.1, device="cpu", progress=False, rank=4)
    first = train_lora(tiny_decoder_path, THREE_PAIRS, tmp_path / "split", max_steps=5, save_every=2, **common)
    assert first.steps == 5 and first.resumed_from == 0
    assert sorted(p.name for p in (tmp_path / "split").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]

    resumed = train_lora(tiny_decoder_path, THREE_PAIRS, tmp_path / "split", max_steps=9, save_every=2, **common)
    assert resumed.resumed_from == 5 and resumed.steps == 9 and len(resumed.losses) == 4

    straight = train_lora(tiny_decoder_path, THREE_PAIRS, tmp_path / "straight", max_steps=9, save_every=100,
                          **common)
    assert straight.losses[:5] == pytest.approx(first.losses, abs=1e-6)
    assert straight.losses[5:] == pytest.approx(resumed.losses, abs=1e-6)
    mine, reference = weights(tmp_path / "split"), weights(tmp_path / "straight")
    assert mine.keys() == reference.keys()
    for key in mine:
        torch.testing.assert_close(mine[key], reference[key], atol=1e-6, rtol=1e-5)

    done = train_lora(tiny_decoder_path, THREE_PAIRS, tmp_path / "split", max_steps=9, **common)
    assert done.resumed_from == 9 and done.losses == [] and done.final_loss == pytest.approx(resumed.final_loss)


def test_interrupt_saves_a_checkpoint_to_resume_from(tiny_decoder_path, tmp_path):
    def stop_at_three(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    common = dict(lr=5e-3, batch_size=2, device="cpu", progress=False, rank=4, save_every=100)
    with pytest.raises(KeyboardInterrupt):
        train_lora(tiny_decoder_path, PAIRS, tmp_path / "run", max_steps=6, callback=stop_at_three, **common)
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*")] == ["checkpoint-3"]
    assert not (tmp_path / "run" / "adapter_model.safetensors").exists()
    resumed = train_lora(tiny_decoder_path, PAIRS, tmp_path / "run", max_steps=6, **common)
    assert resumed.resumed_from == 3 and resumed.steps == 6 and len(resumed.losses) == 3


def test_resume_refuses_changed_settings_and_resume_false_starts_over(tiny_decoder_path, tmp_path):
    common = dict(batch_size=2, device="cpu", progress=False, rank=4, max_steps=2)
    train_lora(tiny_decoder_path, PAIRS, tmp_path / "run", lr=5e-3, **common)
    with pytest.raises(TrainingError, match=r"cannot resume .*lr: 0\.005 -> 0\.001"):
        train_lora(tiny_decoder_path, PAIRS, tmp_path / "run", lr=1e-3, **common)
    with pytest.raises(TrainingError, match="data_sha256"):
        train_lora(tiny_decoder_path, THREE_PAIRS, tmp_path / "run", lr=5e-3, **common)
    fresh = train_lora(tiny_decoder_path, PAIRS, tmp_path / "run", lr=1e-3, resume=False, **common)
    assert fresh.resumed_from == 0 and fresh.steps == 2


@pytest.mark.slow
def test_cli_trained_adapter_serves_on_gemma_through_vllm(tmp_path):
    """`openie adapters train` on the packaged Gemma-3-270M, then the adapter through the vLLM backend."""
    from typer.testing import CliRunner

    from openie.cli import app
    from openie.engines import vllm_available
    from openie.records import Entity, Record, write_jsonl
    from openie.schema import Schema
    from prompts.builder import PromptBuilder

    if not vllm_available():
        pytest.skip("vLLM is not installed")
    from openie.engines.vllm_offline import VLLMEngine
    from openie.models import resolve_model

    records = [Record(f"r{i}", f"{name} visited {city} last week .",
                      entities=[Entity(0, len(name), "person", name),
                                Entity(len(name) + 9, len(name) + 9 + len(city), "location", city)])
               for i, (name, city) in enumerate([("Ada", "Paris"), ("Bob", "Rome"), ("Cleo", "Oslo"), ("Dan", "Lima")])]
    write_jsonl(records, tmp_path / "train.jsonl")
    out = CliRunner().invoke(app, ["adapters", "train", "--name", "ner-demo", "--data", str(tmp_path / "train.jsonl"),
                                   "--max-steps", "4", "--lr", "2e-3", "--batch-size", "2", "--registry",
                                   str(tmp_path / "reg"), "--output-dir", str(tmp_path / "work")])
    assert out.exit_code == 0, out.output
    base = resolve_model("gemma-3-270m")
    info = AdapterRegistry(tmp_path / "reg").check("ner-demo", base, max_rank=8)
    assert info.task == "ner" and info.labels == ["location", "person"]
    engine = VLLMEngine(base, {"ner-demo": info.path}, max_loras=1, max_lora_rank=8, dtype="float32",
                        max_model_len=1024, kv_cache_memory_bytes=256 * 2**20)
    try:
        builder = PromptBuilder("ner.ruie.v1", Schema.from_labels(["location", "person"]))
        prompt = builder.build(records[0])[0].text
        base_out, tuned_out = engine.generate([GenerationRequest(prompt=prompt, max_tokens=16, stop=("\n",)),
                                               GenerationRequest(prompt=prompt, adapter="ner-demo", max_tokens=16,
                                                                 stop=("\n",))])
        target = builder.target(records[0], builder.build(records[0])[0])
        s_base, s_tuned = engine.loglikelihood([ScoreRequest(prompt, target), ScoreRequest(prompt, target, adapter="ner-demo")])
        print(f"base: {base_out.text!r}  adapter: {tuned_out.text!r}  "
              f"target logprob base {s_base.logprob:.2f} -> adapter {s_tuned.logprob:.2f}")
        assert s_tuned.logprob > s_base.logprob  # a few steps already move the model toward the targets
    finally:
        engine.close()
