"""The ``openie_cpu_lora_fix`` vLLM plugin: CPU LoRA ops skip tokens without an adapter (index -1)."""

from __future__ import annotations

import os
from importlib.metadata import entry_points

import pytest

pytest.importorskip("vllm")
torch = pytest.importorskip("torch")

from openie.engines import vllm_plugin  # noqa: E402
from openie.testing import build_random_lora  # noqa: E402

ADAPTERS = ("A", "B", "C")
PROMPT = "Marie Curie was born in"


@pytest.fixture
def restore_patch():
    """Leave the process patched as it was, whatever the test did."""
    was = vllm_plugin.is_patched()
    yield
    (vllm_plugin.patch_cpu_lora_ops if was else vllm_plugin.unpatch_cpu_lora_ops)()


def test_entry_point_is_registered():
    eps = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert eps.get(vllm_plugin.PLUGIN_NAME) == "openie.engines.vllm_plugin:register"


def test_vllm_loads_the_plugin(restore_patch, monkeypatch):
    import vllm.plugins

    monkeypatch.delenv("VLLM_PLUGINS", raising=False)
    vllm_plugin.unpatch_cpu_lora_ops()
    assert not vllm_plugin.is_patched()
    monkeypatch.setattr(vllm.plugins, "plugins_loaded", False)
    vllm.plugins.load_general_plugins()
    assert vllm_plugin.is_patched()


def test_register_is_idempotent(restore_patch):
    vllm_plugin.register()
    from vllm.lora.ops import torch_ops
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    assert vllm_plugin.patch_cpu_lora_ops() == []
    vllm_plugin.register()
    for mod in (lora_ops, torch_ops, punica_cpu):
        assert mod.bgmv_shrink is vllm_plugin.bgmv_shrink
        assert mod.bgmv_expand is vllm_plugin.bgmv_expand
        assert mod.bgmv_expand_slice is vllm_plugin.bgmv_expand_slice
    restored = vllm_plugin.unpatch_cpu_lora_ops()
    assert "vllm.lora.punica_wrapper.punica_cpu.bgmv_shrink" in restored
    assert not vllm_plugin.is_patched() and lora_ops.bgmv_shrink is not vllm_plugin.bgmv_shrink
    assert vllm_plugin.unpatch_cpu_lora_ops() == []


def test_register_does_nothing_off_cpu(restore_patch, monkeypatch):
    from vllm.platforms import current_platform

    vllm_plugin.unpatch_cpu_lora_ops()
    monkeypatch.setattr(type(current_platform), "is_cpu", lambda self: False)
    vllm_plugin.register()
    assert not vllm_plugin.is_patched()


# --------------------------------------------------------------------- the ops on plain tensors

def _lora_weights(n_slots: int, out_dim: int, in_dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_slots, 1, out_dim, in_dim, generator=g)  # vLLM's stacked layout


@pytest.mark.parametrize("add_inputs", [True, False])
def test_ops_skip_rows_without_adapter_and_match_vllm_elsewhere(restore_patch, add_inputs):
    from vllm.lora.ops.torch_ops import lora_ops

    vllm_plugin.patch_cpu_lora_ops()
    orig = vllm_plugin._originals()
    g = torch.Generator().manual_seed(0)
    n, hidden, rank, slots = 7, 16, 4, 3
    indices = torch.tensor([-1, 0, 2, -1, 1, 2, -1])
    valid = indices >= 0
    x = torch.randn(n, hidden, generator=g)
    a = _lora_weights(slots, rank, hidden, 1)
    b = _lora_weights(slots, hidden, rank, 2)
    start = torch.randn(n, rank, generator=g)

    # shrink: rows with an adapter as vLLM computes them, the others untouched
    got = start.clone()
    vllm_plugin.bgmv_shrink(x, a, got, indices, 0.5)
    ref = start.clone()
    tmp = start[valid].clone()
    orig["bgmv_shrink"](x[valid], a, tmp, indices[valid], 0.5)
    ref[valid] = tmp
    assert torch.equal(got, ref)

    # expand and expand_slice, adding or overwriting
    h = torch.randn(n, rank, generator=g)
    y0 = torch.randn(n, hidden, generator=g)
    for name, extra in (("bgmv_expand", ()), ("bgmv_expand_slice", (0, hidden))):
        got = y0.clone()
        getattr(vllm_plugin, name)(h, b, got, indices, *extra, add_inputs)
        tmp = y0[valid].clone()
        orig[name](h[valid], b, tmp, indices[valid], *extra, add_inputs)
        ref = y0.clone()
        ref[valid] = tmp
        assert torch.allclose(got, ref, atol=1e-6), name
        assert torch.equal(got[~valid], y0[~valid]), name

    # all rows with an adapter: exactly vLLM's op; no row with one: nothing changes
    all_idx = indices.clamp(min=0)
    got, ref = y0.clone(), y0.clone()
    vllm_plugin.bgmv_expand(h, b, got, all_idx, add_inputs)
    orig["bgmv_expand"](h, b, ref, all_idx, add_inputs)
    assert torch.equal(got, ref)
    got = y0.clone()
    vllm_plugin.bgmv_expand(h, b, got, torch.full((n,), -1), add_inputs)
    assert torch.equal(got, y0)

    # the prefill (sgmv) ops reach the fixed bgmv ops through the module's globals
    seq_lens = torch.tensor([1, 2, 1, 3])
    seq_idx = torch.tensor([-1, 1, -1, 2])
    tokens = int(seq_lens.sum())
    out = torch.zeros(tokens, rank)
    lora_ops.sgmv_shrink(x[:tokens], a, out, torch.tensor([0, 1, 3, 4]), seq_lens, seq_idx, 4, 3, tokens, 1.0)
    token_idx = torch.repeat_interleave(seq_idx, seq_lens)
    assert torch.equal(out[token_idx < 0], torch.zeros_like(out[token_idx < 0]))
    assert out[token_idx >= 0].abs().sum() > 0


# --------------------------------------------------------------------- a raw vllm.LLM



@pytest.fixture(scope="module")
def raw_llm(tiny_decoder_path, tmp_path_factory):
    """A plain ``vllm.LLM`` (no openie engine around it) and a LoRARequest per adapter."""
    pytest.importorskip("peft")
    from vllm import LLM
    from vllm.lora.request import LoRARequest

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    root = tmp_path_factory.mktemp("vllm-plugin-loras")
    loras = {name: LoRARequest(name, i + 1, str(build_random_lora(tiny_decoder_path, root / name, 200 + i)))
             for i, name in enumerate(ADAPTERS)}
    # max_loras == 3 adapters, so a batch using all of them fills the last slot, the one
    # vLLM's unpatched ops pick for index -1.
    llm = LLM(str(tiny_decoder_path), enable_lora=True, max_loras=3, max_lora_rank=8, dtype="float32",
              max_model_len=128, enforce_eager=True, kv_cache_memory_bytes=32 * 2**20, seed=0)
    yield llm, loras
    del llm
    import gc

    gc.collect()


def _generate(llm, loras, adapters):
    from vllm import SamplingParams

    outs = llm.generate([PROMPT] * len(adapters), SamplingParams(max_tokens=10, temperature=0.0), use_tqdm=False,
                        lora_request=[loras[a] if a else None for a in adapters])
    return [o.outputs[0].text for o in outs]


def test_raw_vllm_mixed_batch_keeps_base_requests_base(raw_llm, restore_patch):
    """With the plugin, base requests in a batch with adapter requests are untouched by adapters."""
    llm, loras = raw_llm
    assert vllm_plugin.is_patched(), "vLLM did not load the openie_cpu_lora_fix plugin"
    alone = {a: _generate(llm, loras, [a])[0] for a in (None, *ADAPTERS)}
    assert len(set(alone.values())) == 4
    order = [None, "A", None, "B", "C", "A", None]
    assert _generate(llm, loras, order) == [alone[a] for a in order]


def test_raw_vllm_without_the_plugin_shows_the_bug(raw_llm, restore_patch):
    """Documents why the plugin exists: the same batch on vLLM's own CPU ops changes base outputs.

    Skips (rather than fails) once vLLM itself is fixed: then the plugin may be dropped.
    """
    llm, loras = raw_llm
    base = _generate(llm, loras, [None])[0]
    vllm_plugin.unpatch_cpu_lora_ops()
    mixed = _generate(llm, loras, [None, "A", None, "B", "C", "A", None])
    if mixed[0] == mixed[2] == mixed[6] == base:
        pytest.skip("vLLM's own CPU LoRA ops no longer apply an adapter to base requests")
    assert mixed[0] != base


def test_engine_starts_after_numba_is_loaded(tiny_decoder_path):
    """llvmlite (numba, loaded by e.g. bm25s) once broke vLLM's kernel rebinding scan at start-up."""
    pytest.importorskip("numba")
    import llvmlite.binding  # noqa: F401

    from openie.engines.base import GenerationRequest
    from openie.engines.vllm_offline import VLLMEngine

    engine = VLLMEngine(tiny_decoder_path, dtype="float32", max_model_len=128, kv_cache_memory_bytes=32 * 2**20)
    try:
        assert engine.generate([GenerationRequest(prompt="Hello", max_tokens=3)])[0].completion_tokens > 0
    finally:
        engine.close()
    assert vllm_plugin.patch_kernel_rebinding() is False  # already patched: idempotent
