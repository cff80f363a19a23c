"""F1 against chunk size on long documents: the measurement behind icl's default ``chunk_tokens``.

Long documents are built from consecutive CoNLL-2003 dev sentences (the corpus keeps document
order): ``--sentences`` per document, joined by newlines, gold offsets shifted. Each chunk size is
one ``openie extract`` run (Gemma-3-270M, vLLM, 4 random CoNLL-2003 train demonstrations, RUIE
prompt, greedy) over the same documents; ``max_tokens`` grows with the chunk so that answers are not
cut (cut answers are counted anyway). Writes ``results.json``, ``report.md`` and ``f1.png`` under
``--out``; every figure there is reproduced by the command the report prints.

    python experiments/scripts/chunk_size_curve.py --out experiments/results/chunk_size
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from openie.datasets import dataset_schema, load_records
from openie.engines.hardware import hardware_summary
from openie.experiments.extract import extract_file
from openie.records import Record, write_jsonl


def long_documents(n_docs: int, sentences: int, start: int = 0) -> list[Record]:
    dev = load_records("conll2003:dev")
    docs = []
    for d in range(n_docs):
        part = dev[start + d * sentences: start + (d + 1) * sentences]
        text, entities, offset = "", [], 0
        for r in part:
            if text:
                text += "\n"
            offset = len(text)
            text += r.text
            entities += [replace(e, start=e.start + offset, end=e.end + offset) for e in r.entities]
        doc = Record(f"conll2003-dev-doc{d}", text, "en")
        doc.entities = entities
        docs.append(doc)
    return docs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="experiments/results/chunk_size")
    ap.add_argument("--docs", type=int, default=6)
    ap.add_argument("--sentences", type=int, default=30)
    ap.add_argument("--sizes", default="64,128,256,512,1024")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--backend", default="vllm")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--sentence-chunks", action="store_true", help="icl option sentence_chunks: one sentence per prompt")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    docs = long_documents(args.docs, args.sentences)
    inputs = out / "long_docs.jsonl"
    write_jsonl(docs, inputs)
    rows = []
    from openie.engines import create_engine
    from openie.engines.hardware import resolve_dtype

    dtype = resolve_dtype(args.dtype, "auto").dtype
    engine = create_engine(args.backend, args.model, dtype=dtype, max_model_len=4096)
    try:
        for size in (int(x) for x in args.sizes.split(",")):
            t0 = time.perf_counter()
            summary = extract_file(inputs, out / f"chunk{size}.jsonl", engine=engine, schema=dataset_schema("conll2003"),
                                   demonstrations="conll2003:train",
                                   k=args.k, seed=0, max_tokens=max(64, size),
                                   method_options={"chunk_tokens": size, "sentence_chunks": args.sentence_chunks},
                                   batch_size=8, show_progress=True, overwrite=True)
            rows.append({"chunk_tokens": size, "f1": summary.f1, "precision": summary.precision,
                         "recall": summary.recall, "prompts": summary.prompts,
                         "chunks": summary.coverage.get("chunks"), "cut_at_max_tokens": summary.cut_at_max_tokens,
                         "salvaged": summary.coverage.get("salvaged"), "not_grounded": summary.coverage.get("not_grounded"),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        engine.close()
    command = "python experiments/scripts/chunk_size_curve.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    result = {"command": command, "hardware": hardware_summary(), "dtype": dtype, "config": vars(args),
              "documents": len(docs), "characters": sum(len(d.text) for d in docs),
              "gold_entities": sum(len(d.entities) for d in docs), "rows": rows}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = ["# F1 against chunk size (long CoNLL-2003 dev documents)", "",
             f"{len(docs)} documents of {args.sentences} consecutive dev sentences ({result['characters']} characters, "
             f"{result['gold_entities']} gold entities); {args.model} ({args.backend}, {dtype}), {args.k} random "
             "CoNLL-2003 train demonstrations per chunk, ner.ruie.v1, greedy, max_tokens = max(64, chunk); chunks end at "
             + ("the first sentence end (one sentence per prompt)." if args.sentence_chunks else
                "the last sentence end that fits (whole sentences, packed)."), "",
             f"Hardware: {result['hardware']}", "", f"Re-run: `{command}`", "",
             "| chunk tokens | P | R | F1 | prompts | answers cut | salvaged | spans not grounded | seconds |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['chunk_tokens']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['prompts']} | "
                     f"{r['cut_at_max_tokens']} | {r['salvaged']} | {r['not_grounded']} | {r['seconds']} |")
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["chunk_tokens"] for r in rows], [r["f1"] for r in rows], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("chunk size (model tokens)")
    ax.set_ylabel("strict micro F1")
    ax.set_title("F1 against chunk size")
    fig.tight_layout()
    fig.savefig(out / "f1.png", dpi=120)
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
