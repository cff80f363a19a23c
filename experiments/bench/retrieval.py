"""Retrieval benchmark: BM25 (bm25s vs rank_bm25) and dense faiss search over a pool of a million examples.

    python experiments/bench/retrieval.py [--size 1000000] [--queries 200] [--reference-queries 20]

Demonstration retrieval runs once per query against the whole training pool, so its latency at
pool sizes of ~1M decides whether RUIE-style retrieval is usable at all. Everything is measured
in one run, on one machine, against a baseline from the same run:

  1. BM25: index build and per-query latency (scores of every record + top-k selection) of the
     fast backend (``BM25Retriever(backend="bm25s")``) on ``--queries`` queries and of the
     reference (``backend="rank_bm25"``, a Python loop over every document: seconds per query
     at 1M) on the first ``--reference-queries`` of them, interleaved query by query; speed-up p50(rank_bm25) / p50(bm25s)
     (goal >= 50x, bm25s p50 < 5 ms); top-k agreement of the two on the reference queries; and
     bm25s' full ``retrieve()`` (duplicate exclusion, with and without a task filter).
  2. Dense: faiss flat inner product and HNSW (``retrievers.dense``): build time, search p50/p95
     (goal p50 < 20 ms), recall@k of HNSW against flat, and ``DenseRetriever``'s pool path
     (``top_k_from_search``) on the same index. Encoding 1M sentences with MiniLM on 2 CPUs takes
     hours, so the index holds synthetic unit 384-d vectors, clustered (cluster centre + equal
     noise, cosine ~0.5 within a cluster) as real embeddings are rather than uniform on the
     sphere; queries are noisy copies of pool vectors (cosine ~0.9). The real MiniLM query encode
     latency (``SentenceEncoder("minilm")``) is measured on English sentences (wnut16; pseudo-words
     would split into many more word pieces), and end-to-end p50 = encode p50 + search p50.
     Single-query search and encode are timed at the default thread count and at one thread,
     interleaved: on a shared CPU, OpenMP threads waiting for a busy core can make a 2-thread
     query many times slower than a 1-thread one.

Synthetic pool (seeded numpy): ``--size`` sentences of 8-30 words drawn from a Zipf(1) vocabulary
of 50k pseudo-words (short frequent words, long rare ones), so document frequencies and lengths
look like real text; records alternate two task tags. Queries are pool sentences at seeded
positions, 1 in 4 verbatim (the duplicate exclusion then removes the pool copy), the others with
a quarter of their words resampled. Results, with the configuration, machine and load average
(the CPU is shared), go to ``experiments/bench/results/retrieval.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 2))

import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

TASKS = ("ner", "re")


def _timed(fn, *args, **kw) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t, out


def _latency(secs: list[float]) -> dict[str, float]:
    ms = np.asarray(secs) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean()), "queries": len(ms)}


def _each(fn, items, desc: str) -> tuple[list[float], list]:
    """Per-item wall clock of ``fn`` after one untimed warm-up call, and its results."""
    fn(items[0])
    secs, outs = [], []
    for x in tqdm(items, desc=desc):
        t = time.perf_counter()
        outs.append(fn(x))
        secs.append(time.perf_counter() - t)
    return secs, outs


def _machine() -> dict[str, object]:
    return {"python": sys.version.split()[0], "machine": platform.machine(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "omp_num_threads": os.environ["OMP_NUM_THREADS"],
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def _peak_rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


# --------------------------------------------------------------------------- synthetic data


def _vocabulary(rng: np.random.Generator, n: int) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words: dict[str, None] = {}
    while len(words) < n:
        length = 2 + int(np.log2(len(words) + 2) / 2) + int(rng.integers(0, 3))
        words.setdefault("".join(rng.choice(letters, length)))
    return np.array(list(words), dtype=object)


def _corpus(args) -> tuple[list, list]:
    """Pool records and query records (see the module docstring)."""
    from openie.records import Record

    rng = np.random.default_rng(args.seed)
    vocab = _vocabulary(rng, args.vocab)
    zipf = 1.0 / np.arange(1, args.vocab + 1)
    zipf /= zipf.sum()
    lengths = rng.integers(8, 31, args.size)
    ends = np.cumsum(lengths)
    tokens = rng.choice(args.vocab, int(ends[-1]), p=zipf)
    records = [Record(f"pool{i}", " ".join(vocab[tokens[e - n:e]]), meta={"task": TASKS[i % 2]})
               for i, (n, e) in enumerate(tqdm(zip(lengths, ends, strict=True), total=args.size, desc="pool"))]
    queries = []
    for i, p in enumerate(rng.choice(args.size, args.queries, replace=False)):
        words = tokens[ends[p] - lengths[p]:ends[p]].copy()
        if i % 4:
            swap = rng.random(len(words)) < 0.25
            words[swap] = rng.choice(args.vocab, int(swap.sum()), p=zipf)
        queries.append(Record(f"query{i}", " ".join(vocab[words]), meta={"pool_position": int(p)}))
    return records, queries


def _vectors(rng: np.random.Generator, n: int, dim: int, clusters: int, chunk: int = 100_000) -> np.ndarray:
    from retrievers.dense import normalise

    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for a in tqdm(range(0, n, chunk), desc="vectors"):
        b = min(n, a + chunk)
        out[a:b] = normalise(centres[rng.integers(0, clusters, b - a)] + rng.standard_normal((b - a, dim), np.float32))
    return out


# --------------------------------------------------------------------------- sections


def _bm25(args, records: list, queries: list) -> dict:
    from retrievers import BM25Retriever

    out: dict = {}
    built = {}
    for backend in ("bm25s", "rank_bm25"):
        load = os.getloadavg()
        built[backend] = BM25Retriever(backend=backend, show_progress=True)
        out[backend] = {"build_seconds": _timed(built[backend].index, records)[0], "loadavg_before": load}
    fast, ref = built["bm25s"], built["rank_bm25"]
    df = np.diff(np.asarray(fast._model.scores["indptr"]))

    def query(retriever, text: str) -> np.ndarray:
        scores = retriever.scores(text)
        np.argpartition(-scores, args.k)[: args.k]
        return scores

    for retriever in (fast, ref):
        query(retriever, queries[0].text)
    secs: dict[str, list[float]] = {"bm25s": [], "retrieve": [], "retrieve_task_filter": [], "rank_bm25": []}
    tops: dict[str, list] = {"bm25s": [], "rank_bm25": []}
    postings = []
    for i, q in enumerate(tqdm(queries, desc="BM25 queries")):  # interleaved: load drift hits every side alike
        t, scores = _timed(query, fast, q.text)
        secs["bm25s"].append(t)
        secs["retrieve"].append(_timed(fast.retrieve, q, args.k)[0])
        secs["retrieve_task_filter"].append(_timed(fast.retrieve, q, args.k, task=TASKS[0])[0])
        postings.append(int(df[fast._model.get_tokens_ids(fast.tokenize(q.text))].sum()))
        if i < args.reference_queries:
            t, ref_scores = _timed(query, ref, q.text)
            secs["rank_bm25"].append(t)
            for name, sc in (("bm25s", scores), ("rank_bm25", ref_scores)):  # the pool's tie-breaking, as retrieve()
                tops[name].append([(r.id, s) for r, s in fast.pool.top_k_from_scores(sc, args.k, q.text)])
    out["bm25s"] |= {"query": _latency(secs["bm25s"]), "retrieve": _latency(secs["retrieve"]),
                     "retrieve_task_filter": _latency(secs["retrieve_task_filter"]),
                     "postings_per_query_mean": float(np.mean(postings))}
    out["rank_bm25"]["query"] = _latency(secs["rank_bm25"])
    out["paired_speedup_median"] = float(np.median(np.divide(secs["rank_bm25"], secs["bm25s"][: len(secs["rank_bm25"])])))
    out["agreement_top_k"] = _agreement(tops["bm25s"], tops["rank_bm25"])
    out["peak_rss_gib"] = _peak_rss_gib()
    return out


def _agreement(fast: list, ref: list) -> dict[str, float]:
    same = [[i for i, _ in a] == [i for i, _ in b] for a, b in zip(fast, ref, strict=True)]
    overlap = [len({i for i, _ in a} & {i for i, _ in b}) / max(1, len(b)) for a, b in zip(fast, ref, strict=True)]
    diffs = [abs(dict(a)[i] - s) for a, b in zip(fast, ref, strict=True) for i, s in b if i in dict(a)]
    return {"queries": len(same), "identical_top_k": sum(same), "identical_share": sum(same) / len(same),
            "mean_overlap": float(np.mean(overlap)), "max_abs_score_diff": max(diffs, default=0.0)}


def _dense(args, records: list, queries: list) -> dict:
    import faiss

    from retrievers import DenseRetriever, SentenceEncoder
    from retrievers.base import RecordPool
    from retrievers.dense import build_faiss_index, normalise, search_faiss

    rng = np.random.default_rng(args.seed + 1)
    vectors = _vectors(rng, args.size, args.dim, args.clusters)
    positions = [q.meta["pool_position"] for q in queries]
    noisy = [i % 4 != 0 for i in range(len(queries))]
    qvecs = normalise(vectors[positions] + np.asarray(noisy, np.float32)[:, None] * args.query_noise
                      * rng.standard_normal((len(queries), args.dim), np.float32) / np.sqrt(args.dim))
    pool_seconds, pool = _timed(RecordPool, records)
    out: dict = {"pool_bookkeeping_build_seconds": pool_seconds}
    threads = sorted({faiss.omp_get_max_threads(), 1}, reverse=True)
    truth = None
    for index_type in ("flat", "hnsw"):
        load = os.getloadavg()
        print(f"building faiss {index_type} over {args.size} vectors ...", file=sys.stderr, flush=True)
        build, index = _timed(build_faiss_index, vectors, index_type, hnsw_m=args.hnsw_m,
                              ef_construction=args.ef_construction)
        if index_type == "hnsw":
            del vectors
            gc.collect()
        search_faiss(index, qvecs[0], args.k, ef_search=args.ef_search)
        secs: dict[int, list[float]] = {n: [] for n in threads}
        hits = []
        for v in tqdm(qvecs, desc=f"{index_type} search"):
            for n in threads:  # interleaved
                faiss.omp_set_num_threads(n)
                t, (ids, _) = _timed(search_faiss, index, v, args.k, ef_search=args.ef_search)
                secs[n].append(t)
            hits.append(ids)
        faiss.omp_set_num_threads(threads[0])
        row = {"build_seconds": build, "loadavg_before": load} | {f"search_threads_{n}": _latency(secs[n])
                                                                   for n in threads}
        if truth is None:
            truth = np.stack(hits)
        else:
            row["recall_at_k_vs_flat"] = float(np.mean([len(set(a) & set(b)) / args.k
                                                        for a, b in zip(hits, truth, strict=True)]))
        retriever = DenseRetriever(index_type=index_type, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
                                   ef_search=args.ef_search)
        retriever.pool, retriever._index = pool, index
        for name, task in (("retrieve_precomputed_vector", None), ("retrieve_precomputed_vector_task_filter", TASKS[0])):
            s, _ = _each(lambda i, task=task, r=retriever: r.pool.top_k_from_search(r._search(qvecs[i]), args.k,
                                                                                    queries[i], task=task),
                         range(len(queries)), f"{index_type} {name}")
            row[name] = _latency(s)
        out[index_type] = row
        del retriever, index
        gc.collect()
    out["peak_rss_gib"] = _peak_rss_gib()
    del pool
    gc.collect()

    import torch

    from openie.datasets import load_dataset

    texts = [r.text for r in load_dataset("wnut16", "train")[: args.encode_queries]]
    encoder = SentenceEncoder("minilm")
    encoder.encode(texts[:1], kind="query")
    secs = {n: [] for n in threads}
    for text in tqdm(texts, desc="minilm encode"):
        for n in threads:
            torch.set_num_threads(n)
            secs[n].append(_timed(encoder.encode, [text], kind="query")[0])
    torch.set_num_threads(threads[0])
    out["minilm_query_encode"] = {f"threads_{n}": _latency(secs[n]) for n in threads} | {
        "texts": "wnut16:train", "mean_words": float(np.mean([len(t.split()) for t in texts]))}
    for index_type in ("flat", "hnsw"):
        out[index_type]["end_to_end_p50_ms"] = {
            f"threads_{n}": out["minilm_query_encode"][f"threads_{n}"]["p50_ms"]
            + out[index_type][f"search_threads_{n}"]["p50_ms"] for n in threads}
    out["threads"] = threads
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--reference-queries", type=int, default=20)
    ap.add_argument("--encode-queries", type=int, default=50)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--vocab", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--query-noise", type=float, default=0.5)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef-search", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bm25-only", action="store_true",
                    help="BM25 section only (minutes instead of half an hour at 1M); default --out retrieval_bm25.json")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from openie.engines.hardware import hardware_summary

    print(f"hardware: {hardware_summary()}", flush=True)
    args.reference_queries = min(args.reference_queries, args.queries)
    if args.out is None:
        args.out = str(Path(__file__).parent / "results" / ("retrieval_bm25.json" if args.bm25_only else "retrieval.json"))

    load_start, t_start = os.getloadavg(), time.perf_counter()
    gen_seconds, (records, queries) = _timed(_corpus, args)
    words = np.array([len(r.text.split()) for r in records])

    bm25 = _bm25(args, records, queries)
    gc.collect()
    fast, ref, agreement = bm25["bm25s"], bm25["rank_bm25"], bm25["agreement_top_k"]
    if args.bm25_only:
        _report_bm25_only(args, bm25, words, load_start, t_start, gen_seconds)
        return
    dense = _dense(args, records, queries)
    del records
    gc.collect()

    speedup = ref["query"]["p50_ms"] / fast["query"]["p50_ms"]
    search = f"search_threads_{dense['threads'][0]}"
    result = {
        "config": vars(args) | _machine() | {
            "pool": "synthetic: Zipf(1) over pseudo-words, 8-30 words per sentence, two task tags alternating",
            "queries_kind": "pool sentences at seeded positions; 1 in 4 verbatim, others 25% of words resampled",
            "bm25_query_timing": "retriever.scores(text) + argpartition top-k (no pool bookkeeping)",
            "dense_vectors": f"synthetic, not MiniLM: {args.clusters} Gaussian cluster centres + equal isotropic "
                             f"noise, L2-normalised, {args.dim}-d; queries = pool vectors + noise "
                             f"{args.query_noise} (1 in 4 verbatim)",
            "pool_words_mean": float(words.mean()), "corpus_generation_seconds": gen_seconds},
        "loadavg": {"start": load_start, "end": os.getloadavg()},
        "total_seconds": time.perf_counter() - t_start,
        "bm25": bm25,
        "dense": dense,
        "ratios": {"bm25_query_p50_rank_bm25_over_bm25s": speedup,
                   "bm25_query_rank_bm25_over_bm25s_paired_median": bm25["paired_speedup_median"],
                   "bm25_build_rank_bm25_over_bm25s": ref["build_seconds"] / fast["build_seconds"],
                   "dense_search_p50_flat_over_hnsw": dense["flat"][search]["p50_ms"] / dense["hnsw"][search]["p50_ms"]},
        "goals": {"bm25s_query_p50_under_5ms": fast["query"]["p50_ms"] < 5, "bm25_speedup_at_least_50x": speedup >= 50,
                  **{f"{t}_search_p50_under_20ms_threads_{n}": dense[t][f"search_threads_{n}"]["p50_ms"] < 20
                     for t in ("flat", "hnsw") for n in dense["threads"]}},
    }

    print(f"\n{args.size:,} synthetic records ({words.mean():.1f} words mean), top-{args.k}, "
          f"load average {load_start[0]:.2f} -> {result['loadavg']['end'][0]:.2f} on {os.cpu_count()} CPUs")
    print(f"  {'':<34} {'build s':>9} {'p50 ms':>9} {'p95 ms':>9} {'queries':>8}")
    rows = [("bm25s query", fast["build_seconds"], fast["query"]),
            ("rank_bm25 query", ref["build_seconds"], ref["query"]),
            ("bm25s retrieve()", None, fast["retrieve"]),
            ("bm25s retrieve(task=)", None, fast["retrieve_task_filter"])]
    for t in ("flat", "hnsw"):
        rows += [(f"faiss {t} search, {n} thread(s)", dense[t]["build_seconds"] if n == dense["threads"][0] else None,
                  dense[t][f"search_threads_{n}"]) for n in dense["threads"]]
        rows += [(f"faiss {t} pool path", None, dense[t]["retrieve_precomputed_vector"]),
                 (f"faiss {t} pool path (task=)", None, dense[t]["retrieve_precomputed_vector_task_filter"])]
    rows += [(f"minilm query encode, {n} thread(s)", None, dense["minilm_query_encode"][f"threads_{n}"])
             for n in dense["threads"]]
    for name, build, lat in rows:
        b = f"{build:9.1f}" if build is not None else f"{'':>9}"
        print(f"  {name:<34} {b} {lat['p50_ms']:9.2f} {lat['p95_ms']:9.2f} {lat['queries']:8d}")
    print(f"{'BM25 speed-up, p50 rank_bm25 / bm25s':<38}: {speedup:.0f}x, paired median "
          f"{bm25['paired_speedup_median']:.0f}x  (goal >= 50x; bm25s p50 {fast['query']['p50_ms']:.2f} ms, goal < 5 ms; "
          f"{fast['postings_per_query_mean'] / 1e3:.0f}k postings summed per query)")
    print(f"{f'BM25 top-{args.k} agreement':<38}: {agreement['identical_top_k']}/{agreement['queries']} identical, "
          f"mean overlap {agreement['mean_overlap']:.3f}, max |score diff| {agreement['max_abs_score_diff']:.2e}")
    print(f"{f'HNSW recall@{args.k} vs flat':<38}: {dense['hnsw']['recall_at_k_vs_flat']:.4f}  "
          f"(search p50 flat / hnsw {result['ratios']['dense_search_p50_flat_over_hnsw']:.0f}x; goal p50 < 20 ms)")
    print(f"{'dense end-to-end p50 (encode + search)':<38}: " + ", ".join(
        f"{t} {v:.1f} ms ({k.split('_')[1]} thr)" for t in ("flat", "hnsw") for k, v in dense[t]["end_to_end_p50_ms"].items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")


def _report_bm25_only(args, bm25, words, load_start, t_start, gen_seconds) -> None:
    fast, ref, agreement = bm25["bm25s"], bm25["rank_bm25"], bm25["agreement_top_k"]
    speedup = ref["query"]["p50_ms"] / fast["query"]["p50_ms"]
    result = {"config": vars(args) | _machine() | {"pool_words_mean": float(words.mean()),
                                                   "corpus_generation_seconds": gen_seconds},
              "loadavg": {"start": load_start, "end": os.getloadavg()},
              "total_seconds": time.perf_counter() - t_start, "bm25": bm25,
              "ratios": {"bm25_query_p50_rank_bm25_over_bm25s": speedup,
                         "bm25_query_rank_bm25_over_bm25s_paired_median": bm25["paired_speedup_median"]},
              "goals": {"bm25s_query_p50_under_5ms": fast["query"]["p50_ms"] < 5,
                        "bm25_speedup_at_least_50x": speedup >= 50}}
    for name, lat in (("bm25s query", fast["query"]), ("rank_bm25 query", ref["query"]),
                      ("bm25s retrieve()", fast["retrieve"]), ("bm25s retrieve(task=)", fast["retrieve_task_filter"])):
        print(f"  {name:<24} p50 {lat['p50_ms']:9.2f} ms  p95 {lat['p95_ms']:9.2f} ms  ({lat['queries']} queries)")
    print(f"build: bm25s {fast['build_seconds']:.1f} s, rank_bm25 {ref['build_seconds']:.1f} s; speed-up p50 {speedup:.0f}x; "
          f"top-{args.k} identical on {agreement['identical_top_k']}/{agreement['queries']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
