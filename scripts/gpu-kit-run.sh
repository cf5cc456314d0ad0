#!/usr/bin/env bash
# Every GPU measurement of issues 4 and 5, run from the repository root on the device
# machine with the kit of scripts/gpu-kit.sh (copied there as gpu-kit/run.sh). One text file
# per step under $OUT; a failing step is recorded and the next one still runs. Estimated
# budget (not yet timed on a device): about 5 minutes on an H100.
set -uo pipefail
KIT=gpu-kit
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
# The PyTorch interpreter (a name or a path; python3 on PATH by default), as in bench/*.sh.
PYTHON=$(command -v "${PYTHON:-python3}" || true)
[ -n "$PYTHON" ] || { echo "gpu-kit: no python interpreter found (set PYTHON)" >&2; exit 2; }

# CUDA 13 user-space libraries: the toolkit if present, else the wheels PyTorch brings.
libs=$(
  { ls -d /usr/local/cuda/lib64 /usr/local/cuda-*/lib64 2>/dev/null
    "$PYTHON" - <<'PY' 2>/dev/null
import glob, os, site
for s in site.getsitepackages():
    for d in glob.glob(os.path.join(s, "nvidia", "**", "lib"), recursive=True):
        print(d)
PY
  } | while read -r d; do
    if compgen -G "$d/libnvrtc.so*" >/dev/null || compgen -G "$d/libcublas.so*" >/dev/null; then
      echo "$d"
    fi
  done | sort -u | paste -sd: -
)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >"$OUT/env.txt"
nvidia-smi >>"$OUT/env.txt" 2>&1
"$PYTHON" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))' >>"$OUT/env.txt" 2>&1

step() { # name, command...
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT/summary.txt"
  local t0=$SECONDS
  "$@" >"$OUT/$name.txt" 2>&1
  echo "   exit $? after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

# 1. Agreement with the f64 reference on the real device (the fake-device runs need g++).
step tests-gpu "$KIT/bin/test-gpu" --nocapture --test-threads 1 --skip all_tests_on_a_fake_device
step tests-fewshot "$KIT/bin/test-fewshot_gpu" --nocapture --test-threads 1 --skip all_fewshot_tests_on_a_fake_device
# 2. Primitive timings at MNIST scale.
step step-timing "$KIT/bin/step_timing"
# 3. Hyper-cleaning against the peer on the same GPU (K 50, peer settings), 3 pairs for BDA.
hc() { BDA=$KIT/bin/bda PYTHON=$PYTHON PEERS=$KIT/peers DATA_DIR=$KIT/data \
  DEVICE=cuda bash bench/hyperclean_vs_torch.sh "$@"; }
step hyperclean-bda hc bda 10 3
step hyperclean-rhg hc rhg 10
step hyperclean-trhg hc trhg 10
# 4. Accuracy on the GPU with the defaults (compare with the CPU table in README.md).
for m in bda rhg; do
  step "accuracy-$m" "$KIT/bin/bda" hyperclean --device cuda --data-dir "$KIT/data" --method "$m" --json --quiet
done
# 5. GPU memory at K = 800 (peak of nvidia-smi samples every 100 ms).
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$OUT/k800-memory-samples.txt" 2>&1 &
smi=$!
step k800 "$KIT/bin/bda" hyperclean --device cuda --data-dir "$KIT/data" --method bda --K 800 --ul-iters 2 --json --quiet
kill "$smi" 2>/dev/null
sort -n "$OUT/k800-memory-samples.txt" | tail -1 | sed 's/^/peak MiB used on the GPU during K = 800: /' >>"$OUT/summary.txt"
# 6. Few-shot against the peer on the same GPU (5-way 1-shot, 15 queries, meta-batch 16, K 5),
#    2 pairs for BDA.
fs() { BDA=$KIT/bin/bda PYTHON=$PYTHON PEERS=$KIT/peers DEVICE=cuda bash bench/fewshot_vs_torch.sh "$@"; }
step fewshot-bda fs 2 bda 20 2
step fewshot-rhg fs 2 rhg 20
for f in "$OUT"/hyperclean-*.txt "$OUT"/fewshot-*.txt; do
  grep -h "median ratio" "$f" 2>/dev/null | sed "s|^|$(basename "$f" .txt): |"
done >>"$OUT/summary.txt"
cat "$OUT/summary.txt"
