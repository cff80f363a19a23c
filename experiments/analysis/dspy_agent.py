"""Figures of the DSPy agent ablation, read from its committed cells (no model calls).

    python experiments/analysis/dspy_agent.py [experiments/results/dspy_agent]

Per model and row (the method ``label``): strict and boundary F1 micro-averaged over all sampled
dev sentences of the five domains, the mean of the per-domain strict F1, LM calls and tool calls
per record (and per tool), agent runs that reached ``finish``, program failures (an answer DSPy
could not parse), parse problems per record (items dropped while grounding), and for the
optimised row what compiling cost (``compiled_program/openie_compile.json``). Prints markdown.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from openie.experiments.grid import load_config
from openie.experiments.run import evaluation_records
from openie.metrics import entity_scores
from openie.records import Record

ROWS = ("predict", "chain_of_thought", "agent", "knn_predict", "optimised")  # the config's order


def main(root: Path) -> None:
    cells = [load_config(folder / "config.yaml")[0] for folder in sorted(root.iterdir())
             if (folder / "config.yaml").exists()]  # each cell's resolved config (absolute paths)
    rows: dict[tuple[str, str], dict] = defaultdict(lambda: {"gold": [], "pred": [], "domain_f1": {}, "lm": 0,
                                                             "tools": Counter(), "finished": 0, "failures": 0,
                                                             "problems": 0, "compile": [], "seconds": 0.0})
    for cell in cells:
        folder = root / cell.config.source.parent.name if cell.config.source else root / cell.name
        if not (folder / "metrics.json").exists():
            continue
        cfg = cell.config
        key = (cfg.engine.model, cfg.method.label or cfg.method.name)
        row = rows[key]
        gold = {r.id: r for r in evaluation_records(cfg)}
        preds = [Record.from_dict(json.loads(line)) for line in open(folder / "predictions.jsonl", encoding="utf-8")]
        row["gold"] += [gold[p.id] for p in preds]
        row["pred"] += preds
        row["domain_f1"][cfg.dataset] = json.loads((folder / "metrics.json").read_text())["summary"]["f1"]
        row["seconds"] += json.loads((folder / "timing.json").read_text())["extract_seconds"]
        for p in preds:
            row["lm"] += p.meta.get("lm_calls", 0)
            row["tools"].update(c["name"] for c in p.meta.get("tool_calls", []))
            row["finished"] += bool(p.meta.get("finished"))
            row["problems"] += len(p.meta.get("parse_problems", []))
            row["failures"] += any(q["detail"].startswith("the program failed") for q in p.meta.get("parse_problems", []))
        compiled = folder / "compiled_program" / "openie_compile.json"
        if compiled.exists():
            report = json.loads(compiled.read_text())
            demos = json.loads((compiled.parent / "program.json").read_text())["demos"]
            report["bootstrapped"] = sum(bool(d.get("augmented")) for d in demos)
            row["compile"].append(report)

    rows = dict(sorted(rows.items(), key=lambda kv: (kv[0][0], ROWS.index(kv[0][1]) if kv[0][1] in ROWS else 99)))
    print("| model | row | records | strict F1 (micro) | boundary F1 | mean domain F1 | LM calls / rec | "
          "tool calls / rec | finished | failed | parse problems / rec | s / rec |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (model, label), row in rows.items():
        n = len(row["pred"])
        strict = entity_scores(row["gold"], row["pred"], "strict").f1
        boundary = entity_scores(row["gold"], row["pred"], "boundary").f1
        mean_domain = sum(row["domain_f1"].values()) / len(row["domain_f1"])
        tools = sum(row["tools"].values())
        finished = f"{row['finished']}/{n}" if label == "agent" else "–"
        print(f"| {model} | {label} | {n} | {strict:.3f} | {boundary:.3f} | {mean_domain:.3f} | {row['lm'] / n:.2f} | "
              f"{tools / n:.2f} | {finished} | {row['failures']} | {row['problems'] / n:.2f} | {row['seconds'] / n:.1f} |")
    print()
    print("Per-domain strict F1:")
    print()
    domains = sorted({d for row in rows.values() for d in row["domain_f1"]})
    print("| model | row | " + " | ".join(d.replace("crossner_", "") for d in domains) + " |")
    print("|---|---|" + "---:|" * len(domains))
    for (model, label), row in rows.items():
        print(f"| {model} | {label} | " + " | ".join(f"{row['domain_f1'].get(d, float('nan')):.3f}" for d in domains)
              + " |")
    print()
    for (model, label), row in rows.items():
        if row["tools"]:
            print(f"- {model} {label}: tool calls by tool {dict(row['tools'].most_common())}")
        if row["compile"]:
            calls = sum(c["lm_calls"] for c in row["compile"])
            secs = sum(c["seconds"] for c in row["compile"])
            demos = [c["demos"].get("self", 0) for c in row["compile"]]
            boot = [c["bootstrapped"] for c in row["compile"]]
            print(f"- {model} {label}: compiling took {calls} LM calls and {secs:.0f} s over {len(row['compile'])} "
                  f"domains; demonstrations per program {demos}, of them bootstrapped (the model's own passing "
                  f"traces) {boot}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "experiments/results/dspy_agent"))
