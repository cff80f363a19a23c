#!/bin/bash
# Re-run one committed cell from a copy of its config.yaml (fresh folder, fresh engine cache) and compare
# its figures with the committed metrics.json.
#   bash experiments/scripts/spot_check.sh EXPERIMENT CELL [FILE ...]   (FILEs: shared caches to copy along,
#   e.g. el4ner-pool-spans.jsonl)
set -u
exp=$1; cell=$2; shift 2
out=${SPOT_DIR:-/tmp/openie-spot}
rm -rf "$out/$exp/$cell"; mkdir -p "$out/$exp/$cell"
cp "experiments/results/$exp/$cell/config.yaml" "$out/$exp/$cell/"
for f in "$@"; do cp "experiments/results/$exp/$f" "$out/$exp/"; done
start=$(date +%s)
openie experiment run "$out/$exp/$cell/config.yaml" --force > "$out/$exp/$cell.log" 2>&1
python - "$exp" "$cell" "$out" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
exp, cell, out, secs = sys.argv[1:]
old = json.load(open(f"experiments/results/{exp}/{cell}/metrics.json"))
try:
    new = json.load(open(f"{out}/{exp}/{cell}/metrics.json"))
except FileNotFoundError:
    sys.exit(f"{exp}/{cell}: the re-run failed (see {out}/{exp}/{cell}.log)")
o, n = old["summary"], new["summary"]
same = all(o[k] == n[k] for k in ("f1", "precision", "recall", "predicted", "gold"))
print(f"{exp}/{cell}: committed F1 {o['f1']:.4f} (P {o['precision']:.4f} R {o['recall']:.4f}, {o['predicted']} predicted)"
      f" | re-run F1 {n['f1']:.4f} (P {n['precision']:.4f} R {n['recall']:.4f}, {n['predicted']} predicted)"
      f" | {'IDENTICAL' if same else 'DIFFERENT'} | fingerprint {'same' if old['fingerprint'] == new['fingerprint'] else 'differs'}"
      f" | {secs} s")
PY
