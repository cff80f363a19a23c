"""Share of each cell's demonstrations that come from the query's own corpus (same label set), per setting.

    python experiments/scripts/demo_domain_share.py experiments/results/ruie_crossner

In a unified pool a demonstration from another corpus shows other labels; this explains much of
the F1 differences between demonstration selectors. Reads each cell's predictions (``demo_ids``).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from openie.records import read_jsonl


def main(root: str) -> None:
    shares: dict[tuple[str, int], list[float]] = defaultdict(list)
    for cell in sorted(Path(root).glob("*/metrics.json")):
        values = json.loads(cell.read_text())["values"]
        demos, k = values["demonstrations"], values["demonstrations.k"]
        if not k:
            continue
        label = demos["label"] if isinstance(demos, dict) else str(demos)
        for pred in read_jsonl(cell.parent / "predictions.jsonl"):
            ids = pred.meta.get("demo_ids", [])
            shares[(label, k)].append(sum(i.startswith(f"{values['dataset']}-") for i in ids) / max(1, len(ids)))
    print("| demonstrations | k | same-corpus share |\n|---|---:|---:|")
    for (label, k), xs in sorted(shares.items()):
        print(f"| {label} | {k} | {sum(xs) / len(xs):.3f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "experiments/results/ruie_crossner")
