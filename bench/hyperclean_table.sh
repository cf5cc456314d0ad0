#!/usr/bin/env bash
# All rows of the data hyper-cleaning table with the defaults of `bda hyperclean`
# (Fashion-MNIST, 5000/5000/60000, noise 0.5, K 50, seed 0 unless given):
#
#   bench/hyperclean_table.sh [extra flags for every row...]
#
# Prints one JSON line per row (history stripped), then a Markdown table.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
(cd "$ROOT" && cargo build --release -q -p bda-host)
BDA="${CARGO_TARGET_DIR:-$ROOT/target}/release/bda"
out=$(mktemp)
for m in noclean oracle ihg rhg trhg obda bda; do
  "$BDA" hyperclean --method "$m" --json --quiet "$@" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); d.pop("history"); print(json.dumps(d))' | tee -a "$out"
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print()
print("| method | val acc | test acc | test F1 | clean F1 | time (s) | s/UL iter |")
print("|---|---:|---:|---:|---:|---:|---:|")
for d in rows:
    print(f"| {d['method']} | {d['val_acc']:.2f} | {d['test_acc']:.2f} | {d['test_f1']:.2f} | "
          f"{d['clean_f1']:.2f} | {d['seconds']:.1f} | {d['s_per_ul_iter']:.3f} |")
PY
rm -f "$out"
