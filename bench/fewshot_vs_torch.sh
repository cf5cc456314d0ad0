#!/usr/bin/env bash
# Seconds per few-shot meta-step: bda (this repository) against the PyTorch peer, same
# shapes (5-way 1-shot, 15 queries, meta-batch 16, K = 5, random inputs), same threads.
# Usage: bench/fewshot_vs_torch.sh [THREADS] [METHOD] [STEPS]
# Env: PYTHON (default /work/torchenv/bin/python), PEER (default /work/shared/peers/fewshot_torch.py),
#      DEVICE (cpu or cuda, default cpu: both sides on that device; on a GPU machine
#      `DEVICE=cuda bench/fewshot_vs_torch.sh 2 bda 20` gives the ratio of the ≥ 5× floor),
#      BDA (a prebuilt bda binary: skips the cargo build, e.g. on a machine without Rust).
set -euo pipefail
THREADS=${1:-2}
METHOD=${2:-bda}
STEPS=${3:-5}
PYTHON=${PYTHON:-/work/torchenv/bin/python}
PEER=${PEER:-/work/shared/peers/fewshot_torch.py}
DEVICE=${DEVICE:-cpu}
cd "$(dirname "$0")/.."
if [ -z "${BDA:-}" ]; then
  cargo build --release -q -p bda-host
  BDA=target/release/bda
fi
ours=$("$BDA" fewshot bench --threads "$THREADS" --method "$METHOD" --steps "$STEPS" --device "$DEVICE" --json)
peer=$("$PYTHON" "$PEER" --threads "$THREADS" --method "$METHOD" --steps "$STEPS" --device "$DEVICE")
echo "bda:     $ours"
echo "pytorch: $peer"
python3 - "$ours" "$peer" <<'PY'
import json, sys
o, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
a, b = o["s_per_meta_step"], p["s_per_meta_step"]
print(f"s/meta-step: bda {a:.3f}, pytorch {b:.3f}; pytorch/bda = {b / a:.2f}x "
      f"(bda conv {o['gflops_meta_step']:.1f} GFLOP/s over the meta-step, "
      f"{o['gflops_backbone']:.1f} GFLOP/s backbone alone)")
PY
