#!/usr/bin/env bash
# Build what a run on a GPU machine needs into gpu-kit/ (ignored by git through the
# gpu-kit/.gitignore it writes), for a device machine that has CUDA and PyTorch but no Rust and no network:
#
#   bash scripts/gpu-kit.sh            # here: builds, strips, copies (≈ 45 MB)
#
# then, with the checkout and gpu-kit/ copied to the GPU machine, two commands from its root,
# correctness first (see scripts/gpu-kit-run.sh):
#
#   bash gpu-kit/run.sh check      # about 7 minutes
#   bash gpu-kit/run.sh compare    # about 9 minutes
#
# `check` runs the bda-gpu test binaries (unit tests with the real NVRTC compile, tests/gpu.rs,
# tests/fewshot_gpu.rs, tests/mlp_gpu.rs) on the real
# device and the `step_timing` example; `compare` runs hyper-cleaning and few-shot against
# the PyTorch peers on the same GPU, the accuracy runs and K = 800. Each
# writes two files to $OUT: MODE-summary.txt and MODE-logs.tar.gz. The kit holds the release
# `bda`, those test binaries, `step_timing`, both PyTorch peers and Fashion-MNIST. Build it in
# the checkout that goes to the GPU machine. Peers come from ../shared/peers
# next to the repository (PEERS to override); on the device, run.sh uses PYTHON (default
# python3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
KIT=gpu-kit
PEERS=${PEERS:-$ROOT/../shared/peers}
DATA=${DATA_DIR:-/usr/share/datasets/fashion-mnist}
for f in "$PEERS/hyperclean_torch.py" "$PEERS/fewshot_torch.py"; do
  [ -f "$f" ] || { echo "gpu-kit: missing peer $f (set PEERS)" >&2; exit 2; }
done
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -f "$DATA/$f" ] || { echo "gpu-kit: missing $DATA/$f (apt install dataset-fashion-mnist, or set DATA_DIR)" >&2; exit 2; }
done
cargo build --release -q -p bda-host
cargo build --release -q -p bda-gpu --example step_timing
tests=$(cargo test --release -q -p bda-gpu --no-run --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("bda_gpu", "gpu", "fewshot_gpu", "mlp_gpu"):
        print("unit" if m["target"]["name"] == "bda_gpu" else m["target"]["name"], m["executable"])')
rm -rf "$KIT"
mkdir -p "$KIT/bin" "$KIT/peers" "$KIT/data"
# Ignored by git without touching .git/info/exclude (shared by every worktree of the repository).
echo '*' >"$KIT/.gitignore"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
strip -o "$KIT/bin/bda" "$TARGET/release/bda"
strip -o "$KIT/bin/step_timing" "$TARGET/release/examples/step_timing"
while read -r name exe; do
  strip -o "$KIT/bin/test-$name" "$exe"
done <<<"$tests"
[ -x "$KIT/bin/test-unit" ] && [ -x "$KIT/bin/test-gpu" ] && [ -x "$KIT/bin/test-fewshot_gpu" ] &&
  [ -x "$KIT/bin/test-mlp_gpu" ] || { echo "gpu-kit: test binaries not found" >&2; exit 1; }
cp "$PEERS/hyperclean_torch.py" "$PEERS/fewshot_torch.py" "$KIT/peers/"
cp "$DATA"/*-ubyte.gz "$KIT/data/"
cp "$ROOT/scripts/gpu-kit-run.sh" "$KIT/run.sh"
du -sh "$KIT"
