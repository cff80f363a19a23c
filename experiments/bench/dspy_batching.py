"""DSPy programs over records: one record at a time against a batch of records at once.

    python experiments/bench/dspy_batching.py                           # here: vLLM, Gemma-3-270M, CrossNER dev
    python experiments/bench/dspy_batching.py --model smollm2-135m-instruct
    PYTHONPATH=. python experiments/bench/dspy_batching.py --backend hf --device cuda \\
        --random-arch .bench_arch/gemma-3-270m --data toy                # GPU machine (carry .bench_arch)

DSPy sends one LM request per call. ``DSPyExtractor(concurrent=False)`` runs records one after
another, so the engine sees batches of one; with ``concurrent=True`` (the default) the records
of a batch run at once, one thread each, and ``MicroBatchEngine`` hands the engine the calls
that arrive together. Both runs use the same loaded engine, the same records and program, no
cache, and run interleaved (``--repeats`` rounds, the best of each counts). Printed: records/s and
LM calls/s of each, the ratio (concurrent over sequential, in the same run), the engine's batch
sizes, and whether the two runs' predictions are identical (greedy; vLLM is not bitwise
batch-invariant, so a few may differ).

``--random-arch DIR`` builds a random-weight checkpoint of a real architecture from a config +
tokenizer folder (``experiments/bench/gpu_transformers.py --prepare`` writes ``.bench_arch``):
speed does not depend on the weights' values. ``--data toy`` uses openie's synthetic sentences
where the corpora are not available. Results with their configuration go to
``$OUT/dspy_batching.json`` when ``OUT`` is set, else ``experiments/bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[2]


def load_records(data: str, n: int):
    from openie.schema import Schema
    from openie.testing import TOY_SCHEMA, toy_pool

    if data == "toy":
        return [r.without_annotations() for r in toy_pool(n, seed=1)], Schema.from_labels(TOY_SCHEMA["ner"])
    from openie.datasets import dataset_schema, load_dataset

    name, _, split = data.partition(":")
    return [r.without_annotations() for r in load_dataset(name, split or "dev")[:n]], dataset_schema(name)


def build_engine(args: argparse.Namespace, work: Path):
    from openie.engines import create_engine

    model = args.model
    if args.random_arch:
        sys.path.insert(0, str(REPO / "experiments" / "bench"))
        from gpu_transformers import build_random_checkpoint

        arch = Path(args.random_arch)
        config = json.loads((arch / "config.json").read_text())
        model = str(build_random_checkpoint(config, arch, work / "model"))
    if args.backend == "vllm":
        return create_engine("vllm", model, dtype=args.dtype, max_model_len=4096, cpu_threads=args.cpu_threads), model
    return create_engine("hf", model, dtype=args.dtype, device=args.device, batch_size=args.batch_size), model


def run_once(engine, schema, records, args, concurrent: bool):
    from openie.agent.modules import DSPyExtractor, ProgramSpec

    extractor = DSPyExtractor(ProgramSpec(args.program).build(schema), engine, schema, dspy_adapter="json",
                              max_tokens=args.max_tokens, batch_size=args.batch_size, concurrent=concurrent,
                              show_progress=False)
    start = time.perf_counter()
    preds = list(extractor.extract(records))
    seconds = time.perf_counter() - start
    return seconds, preds, extractor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="vllm", choices=["vllm", "hf"])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--random-arch", default=None, help="config + tokenizer folder: random weights of that architecture")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto", help="auto: bfloat16 only where native, else float32")
    ap.add_argument("--cpu-threads", type=int, default=2)
    ap.add_argument("--data", default="crossner_ai:dev", help="NAME:SPLIT, or toy")
    ap.add_argument("--records", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--program", default="predict", choices=["predict", "chain_of_thought"])
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    from openie.engines.hardware import hardware_summary

    print(f"hardware: {hardware_summary()}", flush=True)

    records, schema = load_records(args.data, args.records)
    with tempfile.TemporaryDirectory() as tmp:
        engine, model = build_engine(args, Path(tmp))
        run_once(engine, schema, records[:2], args, concurrent=True)  # warm-up: grammar compile, kernels
        best: dict[bool, tuple[float, list, object]] = {}
        for _ in range(args.repeats):
            for concurrent in (False, True):
                seconds, preds, extractor = run_once(engine, schema, records, args, concurrent)
                if concurrent not in best or seconds < best[concurrent][0]:
                    best[concurrent] = (seconds, preds, extractor)

    rows = {}
    for concurrent, (seconds, _preds, extractor) in best.items():
        name = "concurrent" if concurrent else "sequential"
        rows[name] = {"seconds": round(seconds, 2), "records_per_s": round(len(records) / seconds, 3),
                      "lm_calls": extractor.lm_calls, "lm_calls_per_s": round(extractor.lm_calls / seconds, 3),
                      "completion_tokens": extractor.stats.completion_tokens,
                      "engine_batch_sizes": extractor.batcher.batch_sizes}
    same = sum(a.to_dict() == b.to_dict() for a, b in zip(best[False][1], best[True][1], strict=True))
    ratio = rows["sequential"]["seconds"] / rows["concurrent"]["seconds"]
    result = {"config": {**vars(args), "model_path": model}, "records": len(records),
              "environment": {"python": platform.python_version(), "machine": platform.machine(),
                              "processor": platform.processor(), "cpus": os.cpu_count()},
              "rows": rows, "speedup_concurrent_over_sequential": round(ratio, 2), "identical_predictions": same}
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "experiments" / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{args.backend}-{Path(args.random_arch or args.model).name}-{args.program}"
    (out_dir / f"dspy_batching.{tag}.json").write_text(json.dumps(result, indent=2))
    print(f"{'run':<11} {'s':>8} {'rec/s':>8} {'LM calls':>9} {'calls/s':>8} {'gen tokens':>10}")
    for name, r in rows.items():
        print(f"{name:<11} {r['seconds']:>8.2f} {r['records_per_s']:>8.3f} {r['lm_calls']:>9} "
              f"{r['lm_calls_per_s']:>8.3f} {r['completion_tokens']:>10}")
    print(f"concurrent / sequential throughput: {ratio:.2f}x; identical predictions {same}/{len(records)}; "
          f"engine batches (concurrent): {rows['concurrent']['engine_batch_sizes']}")


if __name__ == "__main__":
    main()
