"""Per-stage figures of the EL4NER ablation, read from its committed predictions (no model calls).

    python experiments/analysis/el4ner_stages.py [experiments/results/el4ner]

For every cell: strict / boundary F1 of the typed spans *before* verification (stage 3, from
``meta["el4ner"]["typing"]``), how many spans verification dropped and how many of those were
correct, tie votes, and queries whose zero-shot spans were non-empty (SpanSim needs them). For the
ensemble rows: each member's stage-2 candidates and how many match a gold span.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from openie.experiments.grid import load_config
from openie.experiments.run import evaluation_records
from openie.metrics import evaluate
from openie.records import Entity, Record


def main(root: Path) -> None:
    cells = {c.name: c for c in load_config(root / "experiment.yaml")}
    before: dict[str, dict[str, float]] = defaultdict(dict)
    print(f"{'dataset':<20} {'method':<24} {'F1 pre-verify':>13} {'bF1 pre':>8} {'dropped':>8} {'dropped gold':>12} "
          f"{'ties':>6} {'queries w/ spans':>16}")
    contributions: Counter = Counter()
    verdicts: dict[str, Counter] = defaultdict(Counter)  # per row: spans judged / dropped, and how many were gold
    for name, cell in sorted(cells.items()):
        folder = root / name
        if not (folder / "predictions.jsonl").exists():
            continue
        gold = {r.id: r for r in evaluation_records(cell.config)}
        preds = [json.loads(line) for line in open(folder / "predictions.jsonl", encoding="utf-8")]
        typed, dropped, dropped_gold, ties, with_spans = [], 0, 0, 0, 0
        for p in preds:
            m = p["meta"]["el4ner"]
            g = {(e.start, e.end, e.label) for e in gold[p["id"]].entities}
            ents = [Entity(t["span"][0], t["span"][1], t["label"], t["span"][2]) for t in m["typing"]]
            typed.append(Record(p["id"], p["text"], entities=sorted(ents)))
            ties += sum(t["tie"] for t in m["typing"])
            with_spans += bool(m["demonstrations"]["query_spans"])
            label = cell.values.get("method", {}).get("label")
            for j in (m["verification"] or {}).get("judgements", []):
                is_gold = (j["span"][0], j["span"][1], j["label"]) in g
                verdicts[label]["judged"] += 1
                verdicts[label]["judged gold"] += is_gold
                verdicts[label]["dropped"] += not j["kept"]
                verdicts[label]["dropped gold"] += is_gold and not j["kept"]
                if not j["kept"]:
                    dropped += 1
                    dropped_gold += is_gold
            if len(m["candidates"]) > 1 and cell.values.get("method", {}).get("label") == "ensemble-no-verify":
                spans = {k: {(s[0], s[1]) for s in v} for k, v in m["candidates"].items()}
                bounds = {(s, e) for s, e, _ in g}
                for member, found in spans.items():
                    others = set().union(*(v for k, v in spans.items() if k != member))
                    contributions[(member, "candidates")] += len(found)
                    contributions[(member, "gold")] += len(found & bounds)
                    contributions[(member, "only")] += len(found - others)
                    contributions[(member, "only gold")] += len((found - others) & bounds)
        scores = evaluate([gold[r.id] for r in typed], typed, tasks=["ner"]).scores
        f1, bf1 = scores["ner.strict"].f1, scores["ner.boundary"].f1
        ds, label = cell.config.dataset, cell.values["method"]["label"]
        before[label][ds] = f1
        print(f"{ds:<20} {label:<24} {f1:13.3f} {bf1:8.3f} {dropped:8d} {dropped_gold:12d} {ties:6d} "
              f"{with_spans:>10d}/{len(preds)}")
    print("\nmean strict F1 before verification:")
    for label, by in before.items():
        print(f"  {label:<24} {sum(by.values()) / len(by):.3f}")
    print("\nverification (all datasets): a verifier better than chance drops gold spans less often than they occur")
    for label, v in sorted(verdicts.items()):
        if v["judged"]:
            print(f"  {label:<24} judged {v['judged']:4d} ({v['judged gold'] / v['judged']:.0%} gold)  dropped "
                  f"{v['dropped']:4d} ({v['dropped gold'] / max(v['dropped'], 1):.0%} gold)")
    print("\nensemble stage-2 candidates (all datasets):")
    for member in sorted({k for k, _ in contributions}):
        c = {kind: contributions[(member, kind)] for kind in ("candidates", "gold", "only", "only gold")}
        print(f"  {member}: {c}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "experiments/results/el4ner"))
