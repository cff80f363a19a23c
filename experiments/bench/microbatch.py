"""One-request callers through ``MicroBatchEngine`` against the same calls made one by one.

    PYTHONPATH=. python experiments/bench/microbatch.py --random-arch .bench_arch/gemma-3-270m --device cuda
    OMP_NUM_THREADS=2 python experiments/bench/microbatch.py --backend vllm --model gemma-3-270m --callers 8

The workload is what a DSPy program sends: ``--callers`` records in flight, each making
``--steps`` single-request ``generate`` calls one after another (an agent's steps), each
prompt a few hundred tokens. Baseline, in the same run on the same loaded engine: the same
requests sent one at a time, in order. Printed: seconds, requests/s and generated tokens/s of
each, the ratio, the batch sizes the engine saw, and how many outputs are identical (greedy).
No DSPy is needed, so this runs on the GPU machine (transformers, random weights of a real
architecture; ``experiments/bench/gpu_transformers.py --prepare`` writes ``.bench_arch``).
Results with their configuration go to ``$OUT/`` when ``OUT`` is set, else ``experiments/bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[2]


def prompts(callers: int, steps: int) -> list[list[str]]:
    """Per caller, its step prompts: a toy-corpus record with a growing trajectory, as a ReAct agent's."""
    from openie.testing import toy_pool

    pool = toy_pool(callers + 8, seed=3)
    out = []
    for c in range(callers):
        head = ("Extract the named entities (person, location, organization, product) from the text. "
                "Examples:\n" + "\n".join(f"Text: {r.text}\nEntities: {[e.text for e in r.entities]}"
                                          for r in pool[callers:callers + 6]))
        out.append([f"{head}\nText: {pool[c].text}\nStep {s + 1}; observations so far: {'ok ' * (8 * s)}\nAnswer:"
                    for s in range(steps)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--random-arch", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="auto", help="auto: bfloat16 only where native, else float32")
    ap.add_argument("--callers", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    from openie.engines.hardware import hardware_summary

    print(f"hardware: {hardware_summary()}", flush=True)

    from openie.engines import create_engine
    from openie.engines.base import GenerationRequest
    from openie.engines.microbatch import MicroBatchEngine

    work = tempfile.TemporaryDirectory()
    model = args.model
    if args.random_arch:
        sys.path.insert(0, str(REPO / "experiments" / "bench"))
        from gpu_transformers import build_random_checkpoint

        arch = Path(args.random_arch)
        model = str(build_random_checkpoint(json.loads((arch / "config.json").read_text()), arch,
                                            Path(work.name) / "model"))
    if args.backend == "vllm":
        engine = create_engine("vllm", model, dtype=args.dtype, max_model_len=4096, cpu_threads=2)
    else:
        engine = create_engine("hf", model, dtype=args.dtype, device=args.device, batch_size=args.callers)
    plan = prompts(args.callers, args.steps)

    def request(p: str) -> GenerationRequest:
        return GenerationRequest(prompt=p, max_tokens=args.max_tokens)

    def sequential() -> tuple[float, dict, list[int]]:
        start, out = time.perf_counter(), {}
        for c, steps in enumerate(plan):
            for s, p in enumerate(steps):
                out[(c, s)] = engine.generate([request(p)])[0]
        return time.perf_counter() - start, out, [1] * sum(len(s) for s in plan)

    def gathered() -> tuple[float, dict, list[int]]:
        batcher, out = MicroBatchEngine(engine), {}
        batcher.join(len(plan))

        def run(c: int) -> None:
            try:
                for s, p in enumerate(plan[c]):
                    out[(c, s)] = batcher.generate([request(p)])[0]
            finally:
                batcher.leave()

        start = time.perf_counter()
        threads = [threading.Thread(target=run, args=(c,)) for c in range(len(plan))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start, out, batcher.batch_sizes

    engine.generate([request(plan[0][0])])  # warm-up
    best: dict[str, tuple[float, dict, list[int]]] = {}
    for _ in range(args.repeats):
        for name, fn in (("sequential", sequential), ("gathered", gathered)):
            result = fn()
            if name not in best or result[0] < best[name][0]:
                best[name] = result
    rows = {}
    for name, (seconds, out, sizes) in best.items():
        tokens = sum(g.completion_tokens for g in out.values())
        rows[name] = {"seconds": round(seconds, 3), "requests_per_s": round(len(out) / seconds, 2),
                      "generated_tokens_per_s": round(tokens / seconds, 1), "batch_sizes": sizes[:40]}
    same = sum(best["sequential"][1][k].text == best["gathered"][1][k].text for k in best["sequential"][1])
    ratio = best["sequential"][0] / best["gathered"][0]
    device = args.device
    if args.backend == "hf" and args.device.startswith("cuda"):
        import torch

        device = torch.cuda.get_device_name(0)
    result = {"config": {**vars(args), "model_path": model}, "device": device,
              "environment": {"python": platform.python_version(), "cpus": os.cpu_count()},
              "requests": sum(len(s) for s in plan), "rows": rows,
              "speedup_gathered_over_sequential": round(ratio, 2), "identical_outputs": same}
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "experiments" / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{args.backend}-{Path(args.random_arch or args.model).name}-{args.callers}x{args.steps}"
    (out_dir / f"microbatch.{tag}.json").write_text(json.dumps(result, indent=2))
    for name, r in rows.items():
        print(f"{name:<11} {r['seconds']:>8.2f} s {r['requests_per_s']:>8.2f} req/s {r['generated_tokens_per_s']:>9.1f} tok/s")
    print(f"{tag} on {device}: gathered / sequential {ratio:.2f}x; identical outputs {same}/{result['requests']}; "
          f"batches {rows['gathered']['batch_sizes'][:12]}")
    work.cleanup()


if __name__ == "__main__":
    main()
