#!/usr/bin/env bash
# Seconds per few-shot upper-level iteration (meta-step): bda (this repository) against
# the PyTorch peers, same shapes (5-way 1-shot, 15 queries, meta-batch 16, K = 5, random
# inputs), same threads, run back to back. METHOD rhg or bda (the head as the lower level)
# runs fewshot_torch.py; maml, fomaml, imaml or reptile (the whole network) runs
# maml_torch.py (inner step 0.4, iMAML's λ = 2 and 5 CG steps on both sides).
#
#   bench/fewshot_vs_torch.sh [THREADS] [METHOD] [STEPS] [PAIRS]   (defaults: 2 bda 5 1)
#
# The two programs alternate PAIRS times; bench/pairs.py prints every pair's ratio (with
# our conv GFLOP/s over the iteration and for the backbone alone), the median ratio,
# min/max and the ratio of total times. On a GPU machine `DEVICE=cuda
# bench/fewshot_vs_torch.sh 2 bda 20 3` gives the ratio of the ≥ 5× floor.
#
# Environment: PYTHON (the PyTorch interpreter, a name or a path; default python3 on
# PATH), PEERS (the folder of the PyTorch peers, default ../shared/peers next to the
# repository), PEER (the peer script, default $PEERS/fewshot_torch.py), DEVICE (cpu or
# cuda, default cpu: both sides on that device), BDA (a prebuilt bda binary: skips the
# cargo build, e.g. on a machine without Rust), BDA_LD_LIBRARY_PATH (library folders put in
# front of LD_LIBRARY_PATH for `bda` only, never for the peer), SHAPE (shape flags given to
# both programs, spelled the same by both; the MiniImageNet shapes are
# SHAPE="--image-size 84 --in-channels 3 --channels 32 --meta-batch 4").
set -euo pipefail
THREADS=${1:-2}
METHOD=${2:-bda}
STEPS=${3:-5}
PAIRS=${4:-1}
DEVICE=${DEVICE:-cpu}

case "$METHOD" in
  rhg | bda) PEER_NAME=fewshot_torch.py ;;
  maml | fomaml | imaml | reptile) PEER_NAME=maml_torch.py ;;
  *) echo "the peers implement rhg, bda (fewshot_torch.py), maml, fomaml, imaml, reptile (maml_torch.py)" >&2; exit 2 ;;
esac
. "$(dirname "$0")/peer.sh"

runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
for _ in $(seq "$PAIRS"); do
  # shellcheck disable=SC2086 # SHAPE is a list of flags
  ours=$("${BDA_RUN[@]}" fewshot bench --threads "$THREADS" --method "$METHOD" --steps "$STEPS" --device "$DEVICE" ${SHAPE:-} --json)
  # shellcheck disable=SC2086
  peer=$("$PYTHON" "$PEER" --threads "$THREADS" --method "$METHOD" --steps "$STEPS" --device "$DEVICE" ${SHAPE:-})
  echo "bda:     $ours"
  echo "pytorch: $peer"
  printf '%s\n%s\n' "$ours" "$peer" >>"$runs"
done
echo "method $METHOD  steps $STEPS  threads $THREADS  device $DEVICE  shape ${SHAPE:-default}"
# The peer still calls the iteration a meta-step.
"$PYTHON" "$ROOT/bench/pairs.py" --key s_per_ul_iter --peer-key s_per_meta_step \
  --show gflops_ul_iter,gflops_backbone "$runs"
