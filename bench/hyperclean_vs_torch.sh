#!/usr/bin/env bash
# Seconds per upper-level iteration of `bda hyperclean` against the PyTorch peer
# (hyperclean_torch.py), same method, K, sizes and step sizes, both with 2 threads, run
# back to back on this machine. Prints both JSON lines of every pair and the ratios.
#
#   bench/hyperclean_vs_torch.sh [METHOD] [UL_ITERS] [PAIRS]   (defaults: bda 5 1)
#
# The two programs alternate PAIRS times; bench/pairs.py prints every pair's ratio, the
# median ratio, min/max and the ratio of total times (this VM's speed drifts by ±20 %
# between runs, so one pair is not a measurement; README's figures use 18–21 pairs).
#
# Environment: PYTHON (the PyTorch interpreter, a name or a path; default python3 on
# PATH), PEERS (the folder of the PyTorch peers, default ../shared/peers next to the
# repository), PEER (the peer script, default $PEERS/hyperclean_torch.py), DATA_DIR
# (default /usr/share/datasets/fashion-mnist), K (default 50), THREADS (2), UL_LR (0.01),
# HIDDEN (0: softmax regression; 300: the authors' 784-300-10 network, Xavier-initialised),
# LL_LR (1.0), DEVICE (cpu, or cuda for both programs), BDA (a prebuilt bda binary: skips
# the cargo build, e.g. on a machine without Rust).
set -euo pipefail
METHOD=${1:-bda}
ITERS=${2:-5}
PAIRS=${3:-1}
DATA=${DATA_DIR:-/usr/share/datasets/fashion-mnist}
K=${K:-50}
THREADS=${THREADS:-2}
UL_LR=${UL_LR:-0.01}
LL_LR=${LL_LR:-1.0}
DEVICE=${DEVICE:-cpu}
HIDDEN=${HIDDEN:-0}

case "$METHOD" in rhg | trhg | bda) ;; *) echo "the peer implements rhg, trhg, bda only" >&2; exit 2 ;; esac
PEER_NAME=hyperclean_torch.py
. "$(dirname "$0")/peer.sh"

common=(--method "$METHOD" --K "$K" --truncate 25 --ul-iters "$ITERS" --ul-lr "$UL_LR"
        --ll-lr "$LL_LR" --mu 0.5 --alpha 0.5 --n-train 5000 --n-val 5000 --seed 0 --data-dir "$DATA")

model=()
[ "$HIDDEN" -gt 0 ] && model=(--model mlp --hidden "$HIDDEN")

# The peer's β is 1 (ours defaults to 2 for the accuracy table): pass it explicitly.
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
for _ in $(seq "$PAIRS"); do
  ours=$("${BDA_RUN[@]}" hyperclean "${common[@]}" --beta 1 --lambda 1e-4 "${model[@]}" --threads "$THREADS" --device "$DEVICE" --json --quiet)
  peer=$("$PYTHON" "$PEER" "${common[@]}" --lam 1e-4 --hidden "$HIDDEN" --threads "$THREADS" --device "$DEVICE")
  echo "ours: $ours" | cut -c1-400
  echo "peer: $peer"
  printf '%s\n%s\n' "$ours" "$peer" >>"$runs"
done
echo "method $METHOD  K $K  hidden $HIDDEN  ul_iters $ITERS  threads $THREADS  device $DEVICE"
"$PYTHON" "$ROOT/bench/pairs.py" --key s_per_ul_iter "$runs"
