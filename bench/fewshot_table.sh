#!/usr/bin/env bash
# The accuracy table of docs/fewshot.md: meta-train conv4 on the kanji stand-in for each
# (ways, shots, method), test on the evaluation split, plus a random backbone for 20-way
# 1-shot. Budgeted for 2 shared cores: meta-batch 4, 100 (5-way) / 60 (20-way) meta-steps
# (--ul-iters), 600 (5-way) / 200 (20-way) test episodes of 15 queries per class.
# Usage: bench/fewshot_table.sh DATA_DIR OUT.jsonl [THREADS]
set -euo pipefail
DATA=${1:?data dir (bda data kanji --out DIR --limit 1623)}
OUT=${2:?output .jsonl}
THREADS=${3:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
(cd "$ROOT" && cargo build --release -q -p bda-host)
BDA="${CARGO_TARGET_DIR:-$ROOT/target}/release/bda"
: > "$OUT"
common=(--data-dir "$DATA" --queries 15 --meta-batch 4 --threads "$THREADS" --seed 0 --quiet --json
        --val-every 20 --val-episodes 16)
for setting in "5 1 100 600" "20 1 60 200" "5 5 100 600" "20 5 60 200"; do
  read -r ways shots steps episodes <<<"$setting"
  for method in bda rhg trhg; do
    "$BDA" fewshot "${common[@]}" --ways "$ways" --shots "$shots" --method "$method" --truncate 1 \
      --ul-iters "$steps" --episodes "$episodes" \
      --save "/tmp/fs_${ways}w${shots}s_${method}.ckpt" \
      --plot "/tmp/fs_${ways}w${shots}s_${method}.svg" | tee -a "$OUT"
  done
  if [ "$ways" = 20 ] && [ "$shots" = 1 ]; then
    "$BDA" fewshot eval --random-backbone --data-dir "$DATA" --ways 20 --shots 1 --queries 15 \
      --meta-batch 4 --episodes "$episodes" --threads "$THREADS" --quiet --json | tee -a "$OUT"
  fi
done
