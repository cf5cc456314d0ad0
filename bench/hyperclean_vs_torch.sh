#!/usr/bin/env bash
# Seconds per upper-level iteration of `bda hyperclean` against the PyTorch peer
# (/work/shared/peers/hyperclean_torch.py), same method, K, sizes and step sizes, both
# with 2 threads, run back to back on this machine. Prints both JSON lines and the ratio.
#
#   bench/hyperclean_vs_torch.sh [METHOD] [UL_ITERS] [PAIRS]   (defaults: bda 5 1)
#
# With PAIRS > 1 the two programs alternate PAIRS times and the last lines give every
# pair's ratio, the median ratio and the ratio of total times (this VM's speed drifts by
# ±20 % between runs, so one pair is not a measurement; README's figures use 18–21 pairs).
#
# Environment: TORCH_PYTHON (default /work/torchenv/bin/python), PEER (the peer script),
# DATA_DIR (default /usr/share/datasets/fashion-mnist), K (default 50), THREADS (2),
# UL_LR (0.01), LL_LR (1.0), DEVICE (cpu, or cuda for both programs), BDA (a prebuilt bda
# binary: skips the cargo build, e.g. on a machine without Rust).
set -euo pipefail
METHOD=${1:-bda}
ITERS=${2:-5}
PAIRS=${3:-1}
PY=${TORCH_PYTHON:-/work/torchenv/bin/python}
PEER=${PEER:-/work/shared/peers/hyperclean_torch.py}
DATA=${DATA_DIR:-/usr/share/datasets/fashion-mnist}
K=${K:-50}
THREADS=${THREADS:-2}
UL_LR=${UL_LR:-0.01}
LL_LR=${LL_LR:-1.0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

case "$METHOD" in rhg | trhg | bda) ;; *) echo "the peer implements rhg, trhg, bda only" >&2; exit 2 ;; esac
[ -x "$PY" ] || { echo "no python at $PY (set TORCH_PYTHON)" >&2; exit 2; }

DEVICE=${DEVICE:-cpu}
if [ -z "${BDA:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p bda-host)
  BDA="$ROOT/target/release/bda"
fi

common=(--method "$METHOD" --K "$K" --truncate 25 --ul-iters "$ITERS" --ul-lr "$UL_LR"
        --ll-lr "$LL_LR" --mu 0.5 --alpha 0.5 --n-train 5000 --n-val 5000 --seed 0 --data-dir "$DATA")

# The peer's β is 1 (ours defaults to 2 for the accuracy table): pass it explicitly.
pairs=()
for _ in $(seq "$PAIRS"); do
  ours=$("$BDA" hyperclean "${common[@]}" --beta 1 --lambda 1e-4 --threads "$THREADS" --device "$DEVICE" --json --quiet)
  peer=$("$PY" "$PEER" "${common[@]}" --lam 1e-4 --threads "$THREADS" --device "$DEVICE")
  echo "ours: $ours" | cut -c1-400
  echo "peer: $peer"
  pairs+=("$ours" "$peer")
done
python3 - "${pairs[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(a) for a in sys.argv[1:]]
ours, peer = runs[0::2], runs[1::2]
o = ours[0]
print(f"method {o['method']}  K {o['K']}  ul_iters {o['ul_iters']}  threads {o['threads']}  device {o['device']}")
ratios = []
for a, b in zip(ours, peer):
    r = b["s_per_ul_iter"] / a["s_per_ul_iter"]
    ratios.append(r)
    print(f"s/UL-iter: ours {a['s_per_ul_iter']:.4f}  pytorch {b['s_per_ul_iter']:.4f}  ratio {r:.1f}x")
if len(ratios) > 1:
    total = sum(b["s_per_ul_iter"] for b in peer) / sum(a["s_per_ul_iter"] for a in ours)
    print(f"{len(ratios)} pairs: median ratio {statistics.median(ratios):.1f}x "
          f"(min {min(ratios):.1f}x, max {max(ratios):.1f}x), total-time ratio {total:.1f}x")
PY
