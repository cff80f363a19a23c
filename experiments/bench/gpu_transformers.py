"""GPU benchmark of the transformers + peft engine and of ``train_lora``, on real architectures with random weights.

    python experiments/bench/gpu_transformers.py --prepare           # here, once: configs + tokenizers -> .bench_arch/
    PYTHONPATH=. python experiments/bench/gpu_transformers.py        # on the GPU machine (carry .bench_arch)
    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/bench/gpu_transformers.py --quick --device cpu  # smoke test

The GPU machine cannot fetch weights and takes only the working tree (<= 64 MiB), and speed does
not depend on the weights' values: each architecture (Gemma-3-270M and SmolLM2-135M from their
real ``config.json``, plus a Llama-3.2-1B-like config for scale, on SmolLM2's tokenizer) is built
with ``from_config`` and random weights and saved, so the engine and ``train_lora`` load it by
path exactly as they load a real checkpoint. ``--prepare`` copies the two configs and tokenizers
(no weights, ~37 MB) from the converted defaults into the git-ignored ``.bench_arch/``.

Every ratio is against a baseline measured in the same run:
  1. ``TransformersEngine.generate`` tokens/s (greedy, no stop strings) at several batch sizes;
     one batch spread over 4 random LoRA adapters vs the same batch on the base model and on one
     adapter; the GPU vs the same engine on the CPU (Gemma only, a few prompts).
  2. ``loglikelihood`` continuations/s, base vs 4 adapters.
  3. ``train_lora`` seconds per step (median after the first step), tokens/s and peak memory;
     CPU step time for Gemma only.
  4. Correctness of the device path: a float32 engine's greedy texts and log-likelihoods, for
     a mixed batch of adapter and base requests, equal plain peft ``generate`` / forward run one
     prompt at a time without padding; the bf16 engine's scores are within a loose tolerance.
Results (config + environment) go to ``$OUT/gpu_transformers.json`` when ``OUT`` is set, else to
``experiments/bench/results/gpu_transformers.json``; the tables are printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # an accidental hub lookup fails at once instead of hanging
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
ARCH_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
#: folder under .bench_arch -> the converted default model it is copied from
PREPARED = {"gemma-3-270m": "gemma-3-270m", "smollm2-135m": "smollm2-135m-instruct"}
#: Llama-3.2-1B's shape (16 layers, hidden 2048, GQA 32/8 heads) on SmolLM2's 49k vocabulary: ~1.07B parameters.
LLAMA_1B_LIKE = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "intermediate_size": 8192,
    "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "hidden_act": "silu", "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "attention_bias": False,
    "mlp_bias": False, "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
    "tie_word_embeddings": True,
}
ARCHS = ("gemma-3-270m", "smollm2-135m", "llama-1b-like")
CHECK_ARCHS = ("gemma-3-270m", "smollm2-135m")  # the float32 reference comparison (section 4)
CPU_ARCH = "gemma-3-270m"


def log(msg: str, started: float = time.perf_counter()) -> None:
    print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------- architectures

def prepare_arch_dir(source: Path, arch_dir: Path) -> None:
    """Copy config + tokenizer files (no weights) of the converted defaults, and keep them out of git."""
    for name, model in PREPARED.items():
        (arch_dir / name).mkdir(parents=True, exist_ok=True)
        for file in ARCH_FILES:
            if (source / model / file).is_file():
                shutil.copy2(source / model / file, arch_dir / name / file)
        print(f"{arch_dir / name}: {sorted(p.name for p in (arch_dir / name).iterdir())}")
    exclude = REPO / ".git" / "info" / "exclude"
    pattern = f"/{arch_dir.resolve().relative_to(REPO)}/" if arch_dir.resolve().is_relative_to(REPO) else None
    if pattern and exclude.parent.is_dir():
        lines = exclude.read_text().splitlines() if exclude.is_file() else []
        if pattern not in lines:
            exclude.write_text("\n".join([*lines, pattern]) + "\n")
            print(f"added {pattern} to {exclude}")


def arch_specs(arch_dir: Path) -> dict[str, tuple[dict[str, Any], Path]]:
    """name -> (config dict, folder with its tokenizer files)."""
    missing = [n for n in PREPARED if not (arch_dir / n / "config.json").is_file()]
    if missing:
        sys.exit(f"{arch_dir} lacks {missing}: run with --prepare where the default models are converted, "
                 f"and carry {arch_dir.name}")
    gemma = json.loads((arch_dir / "gemma-3-270m" / "config.json").read_text())
    smol = json.loads((arch_dir / "smollm2-135m" / "config.json").read_text())
    llama = dict(LLAMA_1B_LIKE, **{k: smol[k] for k in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")})
    return {"gemma-3-270m": (gemma, arch_dir / "gemma-3-270m"), "smollm2-135m": (smol, arch_dir / "smollm2-135m"),
            "llama-1b-like": (llama, arch_dir / "smollm2-135m")}


def shrink_for_smoke_test(config: dict[str, Any]) -> dict[str, Any]:
    """Same architecture and vocabulary, 2 layers of width 64: a CPU smoke test in seconds."""
    small = dict(config, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=32)
    if "layer_types" in config:
        small["layer_types"] = ["sliding_attention", "full_attention"]
    if "query_pre_attn_scalar" in config:
        small["query_pre_attn_scalar"] = 32
    return small


def build_random_checkpoint(config: dict[str, Any], tokenizer_dir: Path, folder: Path, seed: int = 0) -> Path:
    """A checkpoint folder (bf16 safetensors + tokenizer) of ``config`` with random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.bfloat16)
    model.save_pretrained(folder)
    for file in ARCH_FILES[1:]:  # the real generation config (end-of-turn ids) and tokenizer
        if (tokenizer_dir / file).is_file():
            shutil.copy2(tokenizer_dir / file, folder / file)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    (folder / "n_params.txt").write_text(str(n_params))
    return folder


# ---------------------------------------------------------------------------------------------- workload

def ner_examples(n: int, demos: int = 3) -> list[tuple[str, str]]:
    """(prompt, gold answer) pairs: RUIE NER prompts with ``demos`` demonstrations (3: ~240 Gemma tokens)."""
    from openie.schema import Schema
    from openie.testing import TOY_SCHEMA, toy_pool
    from prompts.builder import PromptBuilder

    builder = PromptBuilder("ner.ruie.v1", Schema.from_labels(entities=TOY_SCHEMA["ner"]))
    pool = toy_pool(n + demos, seed=0)
    out = []
    for i, record in enumerate(pool[:n]):
        prompt = builder.build(record, [pool[i + k] for k in range(1, demos + 1)])[0]
        out.append((prompt.text, builder.target(record, prompt)))
    return out


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def free_memory(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def measure_generation(engine: Any, prompts: list[str], adapters: list[str | None], batch: int,
                       max_tokens: int) -> dict[str, Any]:
    """One timed ``generate`` over all prompts (request i on ``adapters[i % len(adapters)]``)."""
    from openie.engines.base import GenerationRequest

    engine.batch_size = batch
    requests = [GenerationRequest(prompt=p, adapter=adapters[i % len(adapters)], max_tokens=max_tokens)
                for i, p in enumerate(prompts)]
    sync(str(engine.device))
    start = time.perf_counter()
    out = engine.generate(requests)
    sync(str(engine.device))
    seconds = time.perf_counter() - start
    tokens = sum(g.completion_tokens for g in out)
    return {"batch": batch, "requests": len(requests), "seconds": seconds, "completion_tokens": tokens,
            "tokens_per_s": tokens / seconds, "requests_per_s": len(requests) / seconds,
            "mean_prompt_tokens": statistics.mean(g.prompt_tokens for g in out),
            "finished_early": sum(g.completion_tokens < max_tokens for g in out)}


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run with the median ``key`` (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r[key])[(len(runs) - 1) // 2]


def measure_scoring(engine: Any, pairs: list[tuple[str, str]], adapters: list[str | None],
                    batch: int) -> dict[str, Any]:
    from openie.engines.base import ScoreRequest

    engine.batch_size = batch
    requests = [ScoreRequest(context=c, continuation=t, adapter=adapters[i % len(adapters)])
                for i, (c, t) in enumerate(pairs)]
    sync(str(engine.device))
    start = time.perf_counter()
    scores = engine.loglikelihood(requests)
    sync(str(engine.device))
    seconds = time.perf_counter() - start
    return {"batch": batch, "requests": len(requests), "seconds": seconds,
            "continuations_per_s": len(requests) / seconds,
            "mean_continuation_tokens": statistics.mean(s.n_tokens for s in scores)}


def measure_training(folder: Path, pairs: list[tuple[str, str]], out_dir: Path, *, device: str, dtype: str,
                     steps: int, batch: int) -> dict[str, Any]:
    """``train_lora`` for ``steps`` steps; step time = median gap between consecutive step callbacks."""
    from transformers import AutoTokenizer

    from openie.adapters.training import train_lora
    from openie.engines.tokenization import prompt_ids

    tokenizer = AutoTokenizer.from_pretrained(folder)
    seq_tokens = statistics.mean(len(prompt_ids(tokenizer, p)) + len(tokenizer(t)["input_ids"]) + 1 for p, t in pairs)
    stamps: list[float] = []

    def stamp(step: int, loss: float) -> None:
        stamps.append(time.perf_counter())

    reset_peak(device)
    result = train_lora(folder, pairs, out_dir, max_steps=steps, batch_size=batch, device=device, dtype=dtype,
                        save_every=10**6, keep_checkpoints=1, resume=False, progress=False, tokenizer=tokenizer,
                        callback=stamp)
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    step_s = statistics.median(gaps)
    return {"device": device, "dtype": dtype, "steps": steps, "batch": batch, "mean_sequence_tokens": seq_tokens,
            "seconds_per_step": step_s, "tokens_per_s": batch * seq_tokens / step_s, "step_gaps_s": gaps,
            "wall_s": result.seconds, "final_loss": result.final_loss, "peak_gib": peak_gib(device)}


# ---------------------------------------------------------------------------------------------- correctness

def reference_texts(model: Any, tokenizer: Any, prompts: list[str], adapters: list[str | None], eos_ids: set[int],
                    pad_id: int, max_tokens: int) -> list[str]:
    """Plain peft greedy ``generate``, one prompt at a time (no padding), decoded as the engine decodes."""
    import torch
    from transformers import GenerationConfig

    from openie.engines.tokenization import prompt_ids

    config = GenerationConfig(max_new_tokens=max_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id,
                              eos_token_id=sorted(eos_ids))
    texts = []
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([prompt_ids(tokenizer, prompt)], device=model.device)
        adapter = adapters[i % len(adapters)]
        if adapter is not None:
            model.set_adapter(adapter)
        with model.disable_adapter() if adapter is None else nullcontext(), torch.inference_mode():
            new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)[0]
        new = new[ids.shape[1]:].tolist()
        end = next((k for k, t in enumerate(new) if t in eos_ids), None)
        text = tokenizer.decode(new[:end], skip_special_tokens=True)
        texts.append(text if end is not None else text.rstrip("\ufffd"))
    return texts


def reference_logprobs(model: Any, tokenizer: Any, pairs: list[tuple[str, str]],
                       adapters: list[str | None]) -> list[float]:
    """Summed float32 log-probability of each continuation, one unpadded forward pass per pair."""
    import torch

    from openie.engines.tokenization import split_pair_ids

    out = []
    for i, (context_text, continuation) in enumerate(pairs):
        ctx, cont = split_pair_ids(tokenizer, context_text, continuation)
        ids = torch.tensor([ctx + cont], device=model.device)
        adapter = adapters[i % len(adapters)]
        if adapter is not None:
            model.set_adapter(adapter)
        with model.disable_adapter() if adapter is None else nullcontext(), torch.inference_mode():
            logits = model(input_ids=ids).logits[0, len(ctx) - 1:-1].float()
        lp = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(cont, device=logits.device)[:, None])
        out.append(float(lp.sum()))
    return out


def check_against_peft(folder: Path, adapter_dir: Path, prompts: list[str], pairs: list[tuple[str, str]],
                       bf16_scores: list[float] | None, *, device: str, max_tokens: int) -> dict[str, Any]:
    """Float32 engine (padded, mixed adapter/base batch) vs plain peft (unpadded, one at a time) on ``device``.

    Every prompt and every (context, continuation) pair is asked with and without the adapter in
    one call; ``bf16_scores`` are the throughput engine's log-likelihoods of those same requests.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from openie.engines.base import GenerationRequest, ScoreRequest
    from openie.engines.hf import TransformersEngine

    adapters: list[str | None] = ["check", None]
    engine = TransformersEngine(folder, {"check": adapter_dir}, device=device, dtype="float32", batch_size=8)
    # every prompt with and without the adapter, in one call: the engine splits it per adapter
    gen_prompts = [p for p in prompts for _ in adapters]
    gens = engine.generate([GenerationRequest(prompt=p, adapter=adapters[i % 2], max_tokens=max_tokens)
                            for i, p in enumerate(gen_prompts)])
    pairs = [pair for pair in pairs for _ in adapters]
    scores = engine.loglikelihood([ScoreRequest(context=c, continuation=t, adapter=adapters[i % 2])
                                   for i, (c, t) in enumerate(pairs)])
    eos_ids, pad_id, tokenizer = engine.eos_ids, engine.pad_id, engine.tokenizer
    del engine
    free_memory(device)

    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    model = PeftModel.from_pretrained(base, str(adapter_dir), adapter_name="check").to(device).eval()
    ref_texts = reference_texts(model, tokenizer, gen_prompts, adapters, eos_ids, pad_id, max_tokens)
    ref_scores = reference_logprobs(model, tokenizer, pairs, adapters)
    del model, base
    free_memory(device)

    same = [g.text == r for g, r in zip(gens, ref_texts, strict=True)]
    lp_diff = max(abs(s.logprob - r) for s, r in zip(scores, ref_scores, strict=True))
    adapter_changes = sum(gens[2 * k].text != gens[2 * k + 1].text for k in range(len(prompts)))
    result = {
        "greedy_texts_equal": f"{sum(same)}/{len(same)}", "greedy_pass": all(same),
        "mismatches": [{"engine": g.text, "peft": r} for g, r, ok in zip(gens, ref_texts, same, strict=True) if not ok][:3],
        "adapter_changes_text": f"{adapter_changes}/{len(prompts)}",
        "fp32_logprob_max_abs_diff": lp_diff, "fp32_logprob_tolerance": 2e-3, "fp32_logprob_pass": lp_diff <= 2e-3,
        "adapter_changes_logprob": max(abs(scores[2 * k].logprob - scores[2 * k + 1].logprob)
                                       for k in range(len(pairs) // 2)) > 1e-2,
    }
    if bf16_scores is not None:
        n_tokens = [s.n_tokens for s in scores]
        diff = max(abs(b - r) / n for b, r, n in zip(bf16_scores, ref_scores, n_tokens, strict=True))
        result.update(bf16_mean_logprob_max_abs_diff=diff, bf16_tolerance_per_token=0.25, bf16_pass=diff <= 0.25)
    result["pass"] = bool(result["greedy_pass"] and result["fp32_logprob_pass"] and result.get("bf16_pass", True)
                          and result["adapter_changes_logprob"])
    return result


# ---------------------------------------------------------------------------------------------- one architecture

def bench_arch(name: str, folder: Path, work: Path, examples: list[tuple[str, str]], args: argparse.Namespace,
               arch: dict[str, Any], save: Any) -> None:
    """Sections 1-4 on ``args.device`` for one architecture; results land in ``arch`` as they come."""
    from openie.engines.hf import TransformersEngine
    from openie.testing import build_random_lora

    t = time.perf_counter()
    adapters = {f"bench{i}": str(build_random_lora(folder, work / f"{name}-bench{i}", seed=i, scale=0.5))
                for i in range(args.adapters)}
    arch["adapter_build_s"] = time.perf_counter() - t
    names: list[str | None] = list(adapters)
    prompts = [p for p, _ in examples[:args.prompts]]
    check_adapter = None
    if name in CHECK_ARCHS:  # full-scale random update: it must visibly change scores for the check to mean anything
        check_adapter = build_random_lora(folder, work / f"{name}-check", seed=100)

    t = time.perf_counter()
    engine = TransformersEngine(folder, {**adapters, **({"check": check_adapter} if check_adapter else {})},
                                device=args.device, dtype=args.dtype, batch_size=8)
    arch["engine_load_s"] = time.perf_counter() - t
    for adapter in (None, *names):  # warm-up: kernels, cuBLAS handles, peft adapter switches
        measure_generation(engine, prompts[:2], [adapter], 2, 2)
    measure_generation(engine, prompts, [None], max(args.batch_sizes), 2)
    log(f"{name}: engine ready, generation sweep")

    for batch in args.batch_sizes:  # untimed pass: on the H200 the first run of each batch shape was ~3x slower
        measure_generation(engine, prompts, [None], batch, args.max_tokens)
    arch["generation"] = []
    for batch in args.batch_sizes:
        if batch == max(args.batch_sizes):
            reset_peak(args.device)
        arch["generation"].append(measure_generation(engine, prompts, [None], batch, args.max_tokens))
    arch["generation_peak_gib"] = peak_gib(args.device)
    big = max(args.batch_sizes)
    # interleaved rounds, median per setting: the first timings on a fresh GPU ran slow (clocks, allocator)
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "one_adapter": [], "four_adapters": []}
    for _ in range(args.repeats):
        for key, mix in (("base", [None]), ("one_adapter", names[:1]), ("four_adapters", names)):
            runs[key].append(measure_generation(engine, prompts, mix, big, args.max_tokens))
    arch["lora_mix"] = {key: median_run(r, "tokens_per_s") for key, r in runs.items()}
    arch["lora_mix_runs"] = runs
    if name == CPU_ARCH and not args.skip_cpu:
        arch["generation_cpu_workload_on_device"] = measure_generation(
            engine, prompts[:args.cpu_prompts], [None], args.cpu_prompts, args.max_tokens)
    save()

    log(f"{name}: scoring")
    score_pairs = examples[:args.score_requests]
    measure_scoring(engine, score_pairs, [None, *names], args.score_batch)  # warm-up at the timed shapes
    score_runs: dict[str, list[dict[str, Any]]] = {"base": [], "four_adapters": []}
    for _ in range(args.repeats):
        for key, mix in (("base", [None]), ("four_adapters", names)):
            score_runs[key].append(measure_scoring(engine, score_pairs, mix, args.score_batch))
    arch["scoring"] = {key: median_run(r, "continuations_per_s") for key, r in score_runs.items()}
    arch["scoring_runs"] = score_runs
    check_pairs = examples[:args.check_prompts]
    bf16_scores = None
    if name in CHECK_ARCHS:  # the requests check_against_peft scores: each pair with, then without the adapter
        from openie.engines.base import ScoreRequest

        engine.batch_size = 8
        bf16_scores = [s.logprob for s in engine.loglikelihood(
            [ScoreRequest(context=c, continuation=t, adapter=adapter)
             for c, t in check_pairs for adapter in ("check", None)])]
    del engine
    free_memory(args.device)
    save()

    if check_adapter is not None:
        log(f"{name}: correctness against plain peft (float32)")
        arch["check"] = check_against_peft(folder, check_adapter, prompts[:args.check_prompts],
                                           check_pairs, bf16_scores, device=args.device,
                                           max_tokens=args.max_tokens)
        save()

    log(f"{name}: train_lora")
    arch["training"] = measure_training(folder, examples[:args.train_pairs], work / f"{name}-train",
                                        device=args.device, dtype=args.dtype, steps=args.train_steps,
                                        batch=args.train_batch)
    free_memory(args.device)
    save()


def bench_cpu(folder: Path, work: Path, examples: list[tuple[str, str]], args: argparse.Namespace,
              arch: dict[str, Any], save: Any) -> None:
    """The CPU baselines of the same engine and trainer (threads: ``--cpu-threads``)."""
    import torch

    from openie.engines.hf import TransformersEngine

    torch.set_num_threads(args.cpu_threads)
    prompts = [p for p, _ in examples[:args.cpu_prompts]]
    engine = TransformersEngine(folder, device="cpu", dtype=args.cpu_dtype, batch_size=args.cpu_prompts)
    measure_generation(engine, prompts[:1], [None], 1, 1)  # warm-up
    arch["generation_cpu"] = measure_generation(engine, prompts, [None], args.cpu_prompts, args.max_tokens)
    del engine
    save()
    log("cpu: train_lora")
    arch["training_cpu"] = measure_training(folder, examples[:args.train_pairs], work / "cpu-train", device="cpu",
                                            dtype=args.cpu_dtype, steps=args.cpu_train_steps, batch=args.train_batch)
    save()


# ---------------------------------------------------------------------------------------------- report

def ratios(archs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, a in archs.items():
        r: dict[str, Any] = {}
        mix = a.get("lora_mix")
        if mix:
            base, one, four = (mix[k]["tokens_per_s"] for k in ("base", "one_adapter", "four_adapters"))
            r.update(four_adapters_vs_base=four / base, one_adapter_vs_base=one / base,
                     four_adapters_vs_one_adapter=four / one)
        if "scoring" in a:
            s = a["scoring"]
            r["scoring_four_adapters_vs_base"] = s["four_adapters"]["continuations_per_s"] / s["base"]["continuations_per_s"]
        if "generation_cpu" in a and "generation_cpu_workload_on_device" in a:
            r["generation_device_vs_cpu"] = (a["generation_cpu_workload_on_device"]["tokens_per_s"]
                                             / a["generation_cpu"]["tokens_per_s"])
        if "training_cpu" in a and "training" in a:
            r["training_step_cpu_over_device"] = (a["training_cpu"]["seconds_per_step"]
                                                  / a["training"]["seconds_per_step"])
        out[name] = r
    return out


def gib(value: float | None) -> str:
    return f"{value:6.2f}" if value is not None else "     -"


def print_tables(result: dict[str, Any]) -> None:
    cfg, archs, rat = result["config"], result["archs"], result["ratios"]
    env = result["environment"]
    print(f"\n=== {env['device_name']} | torch {env['torch']} | transformers {env['transformers']} | "
          f"peft {env['peft']} | {cfg['dtype']} ===")
    print(f"\n1. generate: {cfg['prompts']} RUIE NER prompts, greedy, {cfg['max_tokens']} new tokens (tokens/s)")
    print(f"{'arch':<15} {'params':>7} {'prompt tok':>10} " + " ".join(f"{'b=' + str(b):>8}" for b in cfg["batch_sizes"])
          + f" {'peak GiB':>8}")
    for name, a in archs.items():
        if "generation" not in a:
            continue
        row = " ".join(f"{g['tokens_per_s']:8.0f}" for g in a["generation"])
        print(f"{name:<15} {a['n_params'] / 1e6:6.0f}M {a['generation'][0]['mean_prompt_tokens']:10.0f} {row} "
              f"{gib(a['generation_peak_gib']):>8}")
    print(f"\n1a. LoRA: batch {max(cfg['batch_sizes'])}, requests round-robin over {cfg['adapters']} random adapters (tokens/s)")
    print(f"{'arch':<15} {'base':>8} {'1 adapter':>9} {'4 adapters':>10} {'4ad/base':>8} {'1ad/base':>8} {'4ad/1ad':>8}")
    for name, a in archs.items():
        if "lora_mix" in a:
            m, r = a["lora_mix"], rat[name]
            print(f"{name:<15} {m['base']['tokens_per_s']:8.0f} {m['one_adapter']['tokens_per_s']:9.0f} "
                  f"{m['four_adapters']['tokens_per_s']:10.0f} {r['four_adapters_vs_base']:8.2f} "
                  f"{r['one_adapter_vs_base']:8.2f} {r['four_adapters_vs_one_adapter']:8.2f}")
            spread = "; ".join(f"{k} " + "/".join(f"{x['tokens_per_s']:.0f}" for x in runs)
                               for k, runs in a.get("lora_mix_runs", {}).items())
            print(f"{'':<15} every round (median shown): {spread}")
    cpu = archs.get(CPU_ARCH, {})
    if "generation_cpu" in cpu and "generation_cpu_workload_on_device" in cpu:
        dev, host = cpu["generation_cpu_workload_on_device"], cpu["generation_cpu"]
        print(f"\n1b. {CPU_ARCH}, {cfg['cpu_prompts']} prompts in one batch: {cfg['device']} {cfg['dtype']} "
              f"{dev['tokens_per_s']:.0f} tokens/s vs cpu {cfg['cpu_dtype']} ({cfg['cpu_threads']} threads) "
              f"{host['tokens_per_s']:.1f} tokens/s = {rat[CPU_ARCH]['generation_device_vs_cpu']:.1f}x")
    print(f"\n2. loglikelihood: {cfg['score_requests']} continuations, batch {cfg['score_batch']} (continuations/s)")
    print(f"{'arch':<15} {'base':>8} {'4 adapters':>10} {'ratio':>6} {'cont tok':>8}")
    for name, a in archs.items():
        if "scoring" in a:
            s = a["scoring"]
            print(f"{name:<15} {s['base']['continuations_per_s']:8.0f} {s['four_adapters']['continuations_per_s']:10.0f} "
                  f"{rat[name]['scoring_four_adapters_vs_base']:6.2f} {s['base']['mean_continuation_tokens']:8.1f}")
            spread = "; ".join(f"{k} " + "/".join(f"{x['continuations_per_s']:.0f}" for x in runs)
                               for k, runs in a.get("scoring_runs", {}).items())
            print(f"{'':<15} every round (median shown): {spread}")
    print(f"\n3. train_lora: batch {cfg['train_batch']}, rank 8 on all block linears, median of steps 2..{cfg['train_steps']}")
    print(f"{'arch':<15} {'seq tok':>7} {'s/step':>8} {'tokens/s':>9} {'peak GiB':>8} {'cpu s/step':>10} {'cpu/dev':>7}")
    for name, a in archs.items():
        if "training" in a:
            tr = a["training"]
            host = a.get("training_cpu")
            print(f"{name:<15} {tr['mean_sequence_tokens']:7.0f} {tr['seconds_per_step']:8.3f} {tr['tokens_per_s']:9.0f} "
                  f"{gib(tr['peak_gib']):>8} {host['seconds_per_step'] if host else float('nan'):10.2f} "
                  f"{rat[name].get('training_step_cpu_over_device', float('nan')):7.1f}")
    print(f"\n4. correctness on {cfg['device']}: float32 engine (padded, mixed adapter/base batch) vs plain peft "
          "(one prompt, unpadded)")
    for name, a in archs.items():
        if "check" in a:
            c = a["check"]
            bf16 = (f"bf16 max |d mean| {c['bf16_mean_logprob_max_abs_diff']:.3f} nats, " if "bf16_pass" in c else "")
            print(f"{name:<15} {'PASS' if c['pass'] else 'FAIL'}: greedy texts equal {c['greedy_texts_equal']}, "
                  f"fp32 logprob max |d| {c['fp32_logprob_max_abs_diff']:.2e}, {bf16}adapter changes "
                  f"logprob {'yes' if c['adapter_changes_logprob'] else 'NO'} / text {c['adapter_changes_text']}")
            for m in c["mismatches"]:
                print(f"    engine {m['engine']!r}\n    peft   {m['peft']!r}")
    print(f"\ntotal {result['total_s']:.0f} s; sections: "
          + ", ".join(f"{k} {v:.0f}s" for k, v in result["section_s"].items()))


def environment(device: str) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    cuda = device.startswith("cuda")
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda, "transformers": transformers.__version__,
            "peft": peft.__version__, "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
            "device_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
            "git_commit": commit}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", action="store_true", help="copy configs + tokenizers into --arch-dir and exit")
    ap.add_argument("--source", type=Path, default=None, help="converted default models (default: $OPENIE_HOME/models)")
    ap.add_argument("--arch-dir", type=Path, default=REPO / ".bench_arch")
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch-sizes", default="8,32,64")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--adapters", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the LoRA-mix and scoring timings")
    ap.add_argument("--score-requests", type=int, default=256)
    ap.add_argument("--score-batch", type=int, default=32)
    ap.add_argument("--train-steps", type=int, default=6)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-pairs", type=int, default=64)
    ap.add_argument("--check-prompts", type=int, default=4)
    ap.add_argument("--cpu-prompts", type=int, default=8)
    ap.add_argument("--cpu-threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    ap.add_argument("--cpu-dtype", default="float32")
    ap.add_argument("--cpu-train-steps", type=int, default=2)
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--quick", action="store_true", help="2-layer width-64 versions and tiny counts: a smoke test")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    if args.prepare:
        from openie.models import openie_home

        prepare_arch_dir(args.source or openie_home() / "models", args.arch_dir)
        return
    if args.quick:
        args.prompts, args.batch_sizes, args.max_tokens, args.score_requests, args.score_batch = 4, "2,4", 4, 8, 4
        args.train_steps, args.train_batch, args.train_pairs, args.check_prompts, args.cpu_prompts = 3, 2, 8, 2, 2
        args.repeats = 2
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.archs = [a for a in args.archs.split(",") if a]
    unknown = sorted(set(args.archs) - set(ARCHS))
    if unknown:
        sys.exit(f"unknown --archs {unknown}; known: {', '.join(ARCHS)}")
    out = args.out or (Path(os.environ["OUT"]) / "gpu_transformers.json" if os.environ.get("OUT")
                       else REPO / "experiments" / "bench" / "results" / "gpu_transformers.json")

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # weight loading / shard writing bars would bury the tables
    torch.set_num_threads(args.cpu_threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda but torch sees no CUDA device (use --device cpu for a smoke test)")
    specs = arch_specs(args.arch_dir)
    started = time.perf_counter()
    archs: dict[str, Any] = {}
    result: dict[str, Any] = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                              "environment": environment(args.device), "archs": archs, "ratios": {},
                              "section_s": {}, "total_s": 0.0}

    def save() -> None:
        result["ratios"] = ratios(archs)
        result["total_s"] = time.perf_counter() - started
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")

    examples = ner_examples(max(args.prompts, args.score_requests, args.train_pairs, args.check_prompts * 2))
    with tempfile.TemporaryDirectory(prefix="openie-gpu-bench-") as tmp:
        work = Path(tmp)
        folders = {}
        for name in args.archs:
            t = time.perf_counter()
            config, tokenizer_dir = specs[name]
            if args.quick:
                config = shrink_for_smoke_test(config)
            folders[name] = build_random_checkpoint(config, tokenizer_dir, work / name)
            archs[name] = {"n_params": int((folders[name] / "n_params.txt").read_text()), "config": config}
            log(f"{name}: random checkpoint, {archs[name]['n_params'] / 1e6:.0f}M parameters")
            bench_arch(name, folders[name], work, examples, args, archs[name], save)
            result["section_s"][name] = time.perf_counter() - t
        if CPU_ARCH in folders and not args.skip_cpu:
            t = time.perf_counter()
            log(f"cpu baseline ({CPU_ARCH}, {args.cpu_threads} threads, {args.cpu_dtype})")
            bench_cpu(folders[CPU_ARCH], work, examples, args, archs[CPU_ARCH], save)
            result["section_s"]["cpu"] = time.perf_counter() - t
    save()
    print_tables(result)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
