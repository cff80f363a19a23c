"""Figures of the headline comparison, read from its finished cells (no model calls).

    python experiments/analysis/headline.py [RESULTS_DIR ...]
        # default: experiments/results/headline and experiments/results/headline_trained (rows that
        # need trained adapters, run by headline_trained.yaml on the same sample)

Per row (the grid's ``row`` label): strict P / R / F1 micro-averaged over every sampled sentence of
the seven datasets, the mean of the per-dataset F1, a 95% bootstrap interval over sentences
(1,000 resamples, seed 0), parse problems and coverage losses, and the cost: extraction wall
minutes on the 2-core CPU (both cores busy; engine start-up listed apart). Paired bootstrap
comparisons (the sentences both rows ran) give P(row A > row B). Writes ``figures.json``
and ``headline_f1.png`` beside the report and prints the markdown tables.
"""

from __future__ import annotations

import json
import random
import sys
from collections import defaultdict
from pathlib import Path

from openie.experiments.grid import load_config
from openie.experiments.run import evaluation_records
from openie.records import Record

PAIRS = [("qwen-random", "gemma-random"), ("qwen-dense", "gemma-dense"), ("qwen-zero", "gemma-zero"),
         ("gemma-dense", "gemma-random"), ("qwen-dense", "qwen-random"), ("qwen-random", "qwen-zero"),
         ("gemma-random", "gemma-zero"), ("dspy-knn", "dspy-predict"), ("dspy-predict", "qwen-zero"),
         ("el4ner-3", "qwen-random"), ("el4ner-3", "qwen-dense"), ("el4ner-3", "gemma-dense"), ("qwen-dense", "spacy"),
         ("dspy-agent", "dspy-predict"), ("dspy-knn", "qwen-random"), ("baner", "gemma-dense"),
         ("baner", "gemma-random"), ("baner", "spacy"), ("gemma-ruie", "gemma-dense"), ("gemma-ruie", "gemma-random"),
         ("qwen-ruie", "qwen-dense"), ("qwen-ruie", "qwen-random")]
RESAMPLES = 1000


def _counts(gold: Record, pred: Record) -> tuple[int, int, int]:
    g = {(e.start, e.end, e.label) for e in gold.entities}
    p = {(e.start, e.end, e.label) for e in pred.entities}
    return len(g & p), len(p), len(g)


def _f1(tp: int, npred: int, ngold: int) -> float:
    return 2 * tp / (npred + ngold) if npred + ngold else 0.0


def collect(roots: list[Path]) -> tuple[dict[str, dict], list[str]]:
    rows: dict[str, dict] = defaultdict(lambda: {"per_sentence": {}, "datasets": {}, "seconds": 0.0, "start": 0.0,
                                                 "problems": 0, "incomplete": 0, "records": 0})
    order: list[str] = []
    for folder in sorted(f for root in roots if root.is_dir() for f in root.iterdir()):
        metrics_path = folder / "metrics.json"
        if not metrics_path.exists():
            continue
        metrics = json.loads(metrics_path.read_text())
        label = metrics["values"]["row"]["label"]
        if label not in order:
            order.append(label)
        cfg = load_config(folder / "config.yaml")[0].config
        row = rows[label]
        summary = metrics["summary"]
        row["datasets"][cfg.dataset] = summary["f1"]
        row["problems"] += summary.get("parse_problems", 0)
        row["incomplete"] += summary.get("incomplete_records", 0)
        row["records"] += summary["records"]
        timing = json.loads((folder / "timing.json").read_text())
        row["seconds"] += timing["extract_seconds"]
        row["start"] += sum(s.get("engine_start_seconds", 0.0) for s in timing.get("sessions", []))
        preds_path = folder / "predictions.jsonl"
        if preds_path.exists():
            gold = {r.id: r for r in evaluation_records(cfg)}
            for line in preds_path.open(encoding="utf-8"):
                p = Record.from_dict(json.loads(line))
                row["per_sentence"][f"{cfg.dataset}/{p.id}"] = _counts(gold[p.id], p)
        else:  # committed cells keep metrics only: micro counts from P and R
            tp = round(summary["precision"] * summary["predicted"])
            row["per_sentence"][f"{cfg.dataset}/*"] = (tp, summary["predicted"], summary["gold"])
    config_order = [r["label"] for root in roots for r in _grid_rows(root)]
    order.sort(key=lambda lab: config_order.index(lab) if lab in config_order else len(config_order))
    return rows, order


def _grid_rows(root: Path) -> list[dict]:
    import yaml

    exp = root / "experiment.yaml"
    data = yaml.safe_load(exp.read_text()) if exp.exists() else {}
    return (data.get("grid") or {}).get("row") or []


def _resampled_f1(per: list[tuple[int, int, int]], draws: list[list[int]]) -> list[float]:
    return [_f1(sum(per[i][0] for i in idx), sum(per[i][1] for i in idx), sum(per[i][2] for i in idx))
            for idx in draws]


def _draws(n: int, seed: str) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(n) for _ in range(n)] for _ in range(RESAMPLES)]


def bootstrap(rows: dict[str, dict], order: list[str]) -> tuple[dict[str, tuple[float, float]], dict[str, dict]]:
    """A 95% interval per row over its own sentences; for each pair, P(first > second) over the
    sentences both rows ran (the same resamples for both)."""
    if any(k.endswith("/*") for r in order for k in rows[r]["per_sentence"]):
        return {}, {}  # predictions not here: no per-sentence counts
    intervals = {}
    for label in order:
        keys = sorted(rows[label]["per_sentence"])
        values = sorted(_resampled_f1([rows[label]["per_sentence"][k] for k in keys], _draws(len(keys), label)))
        intervals[label] = (values[int(0.025 * RESAMPLES)], values[int(0.975 * RESAMPLES) - 1])
    paired = {}
    for a, b in PAIRS:
        if a not in rows or b not in rows:
            continue
        keys = sorted(set(rows[a]["per_sentence"]) & set(rows[b]["per_sentence"]))
        draws = _draws(len(keys), f"{a}|{b}")
        fa = _resampled_f1([rows[a]["per_sentence"][k] for k in keys], draws)
        fb = _resampled_f1([rows[b]["per_sentence"][k] for k in keys], draws)
        paired[f"{a} > {b}"] = {"p": sum(x > y for x, y in zip(fa, fb, strict=True)) / RESAMPLES,
                                "sentences": len(keys),
                                "f1": [_f1(*map(sum, zip(*[rows[r]["per_sentence"][k] for k in keys], strict=True)))
                                       for r in (a, b)]}
    return intervals, paired


def main(roots: list[Path]) -> None:
    root = roots[0]
    rows, order = collect(roots)
    intervals, paired = bootstrap(rows, order)
    datasets = sorted({d for r in rows.values() for d in r["datasets"]})
    figures = {}
    print("| row | P | R | F1 (micro, all sentences) | 95% CI | mean of dataset F1 | parse problems | coverage losses "
          "| records | extraction min | engine start s |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for label in order:
        r = rows[label]
        tp = sum(c[0] for c in r["per_sentence"].values())
        npred = sum(c[1] for c in r["per_sentence"].values())
        ngold = sum(c[2] for c in r["per_sentence"].values())
        p, rec, f1 = (tp / npred if npred else 0.0), (tp / ngold if ngold else 0.0), _f1(tp, npred, ngold)
        mean = sum(r["datasets"].values()) / len(r["datasets"])
        ci = intervals.get(label)
        figures[label] = {"precision": p, "recall": rec, "f1": f1, "ci95": ci, "mean_dataset_f1": mean,
                          "datasets": r["datasets"], "parse_problems": r["problems"],
                          "incomplete_records": r["incomplete"], "records": r["records"],
                          "extract_minutes": r["seconds"] / 60, "engine_start_seconds": r["start"],
                          "complete": len(r["datasets"]) == 7}
        shown_ci = f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "n/a"
        print(f"| {label} | {p:.3f} | {rec:.3f} | **{f1:.3f}** | {shown_ci} | {mean:.3f} | {r['problems']} | "
              f"{r['incomplete']} | {r['records']} | {r['seconds'] / 60:.1f} | {r['start']:.0f} |")
    print()
    print("| row | " + " | ".join(datasets) + " |")
    print("|---|" + "---:|" * len(datasets))
    for label in order:
        print(f"| {label} | " + " | ".join(f"{rows[label]['datasets'].get(d, float('nan')):.3f}" for d in datasets)
              + " |")
    if paired:
        print()
        print("| comparison (paired bootstrap over the sentences both rows ran) | sentences | F1 first | F1 second "
              "| P(first > second) |")
        print("|---|---:|---:|---:|---:|")
        for name, c in paired.items():
            print(f"| {name} | {c['sentences']} | {c['f1'][0]:.3f} | {c['f1'][1]:.3f} | {c['p']:.3f} |")
    (root / "figures.json").write_text(json.dumps({"rows": figures, "paired": paired, "resamples": RESAMPLES},
                                                  indent=1) + "\n")
    _plot(figures, order, root / "headline_f1.png")


def _plot(figures: dict[str, dict], order: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    f1 = [figures[r]["f1"] for r in order]
    err = [[f - (figures[r]["ci95"] or (f, f))[0] for f, r in zip(f1, order, strict=True)],
           [(figures[r]["ci95"] or (f, f))[1] - f for f, r in zip(f1, order, strict=True)]]
    ax.bar(range(len(order)), f1, yerr=err, capsize=3, color="#4c72b0")
    names = [r if figures[r]["complete"] else f"{r}*" for r in order]
    ax.set_xticks(range(len(order)), names, rotation=35, ha="right")
    ax.set_ylabel("strict micro F1 (95% bootstrap CI)")
    ax.set_title("headline: 8 seeded dev sentences per dataset (rows marked * ran fewer than 7 datasets)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]] or [Path("experiments/results/headline"),
                                            Path("experiments/results/headline_trained")])
