#!/usr/bin/env bash
# The journal's Fig. 8 on the kanji stand-in: conv4 meta-trained with BDA and RHG, 5-way
# 1-shot, under no constraint, max-norm, the spectral projection and spectral normalisation,
# with the orthogonality sum recorded at every validation. Writes one JSON report per run
# (OUT_DIR/METHOD-PROJ.json), the per-run charts, and the overlays of docs/fewshot.md.
# Usage: bench/fewshot_projection.sh DATA_DIR OUT_DIR [UL_ITERS] [THREADS]
#   DATA_DIR: bda data kanji --out DIR --limit 1623
# Environment: VAL_EVERY [50], EPISODES [600] (test episodes), BDA (a built binary).
set -euo pipefail
DATA=${1:?data dir (bda data kanji --out DIR --limit 1623)}
OUT=${2:?output folder}
STEPS=${3:-1500}
THREADS=${4:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${BDA:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p bda-host)
  BDA="${CARGO_TARGET_DIR:-$ROOT/target}/release/bda"
fi
mkdir -p "$OUT"
common=(--data-dir "$DATA" --ways 5 --shots 1 --queries 15 --meta-batch 4 --ul-iters "$STEPS"
        --val-every "${VAL_EVERY:-50}" --val-episodes 64 --episodes "${EPISODES:-600}"
        --threads "$THREADS" --seed 0 --quiet --json)
for method in bda rhg; do
  for proj in none max-norm:0.5 spectral:1 sn:1; do
    name="$method-${proj%%:*}"
    [ -s "$OUT/$name.json" ] && continue   # finished earlier: keep it
    "$BDA" fewshot "${common[@]}" --method "$method" --ul-projection "$proj" \
      --plot "$OUT/$name.svg" > "$OUT/$name.json.tmp"
    mv "$OUT/$name.json.tmp" "$OUT/$name.json"
    python3 - "$OUT/$name.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
o = [x["orthogonality"] for x in r["history"] if "orthogonality" in x]
print("%-14s test %.2f ± %.2f  orthogonality %.2f -> %.2f  %.0f s"
      % (sys.argv[2], r["test_acc"], r["ci95"], o[0], o[-1], r["seconds"]))
PY
  done
done
for method in bda rhg; do
  "$BDA" plot "$OUT/$method"-*.json --metrics orthogonality,val_acc --out "$OUT/$method-orthogonality.svg" \
    --title "$method, 5-way 1-shot, kanji stand-in: orthogonality sum and validation accuracy"
done
