#!/usr/bin/env bash
# The GPU measurements, run on a GPU machine from the repository root with the kit of
# scripts/gpu-kit.sh (this file is copied there as gpu-kit/run.sh). Two commands,
# correctness first:
#
#   bash gpu-kit/run.sh check     # the GPU tests on the real device, then step_timing
#   bash gpu-kit/run.sh compare   # hyper-cleaning and few-shot against the PyTorch peers on
#                                 # the same GPU, accuracy runs, GPU memory at K = 800
#
# The kit is built first on a machine with Rust (`bash scripts/gpu-kit.sh`) and copied with
# the checkout; `check` takes about 7 minutes, `compare` about 9. With less time than that,
# give KIT_BUDGET_S=<seconds> (e.g. "KIT_BUDGET_S=300 bash gpu-kit/run.sh compare"): the
# steps that matter most run first.
#
# Each command writes exactly two files to $OUT: MODE-summary.txt (one line per step: PASS or
# FAIL, exit status, seconds, and the one line that matters — the test result, the median
# ratio, the accuracy, or the reason of a failure) and MODE-logs.tar.gz (every step's full
# log, the environment). Both are rewritten after every step, so a command stopped from
# outside still leaves the steps done so far. Each step runs under `timeout` with its own
# limit, and no step starts past the command's budget (KIT_BUDGET_S: 390 s for check, 420 s
# for compare; lower it when less device time is left). The exit status is 0 only when every
# step passed.
#
# BDA_REQUIRE_CUDA=1 is set for every step: a GPU test or step_timing that finds no usable
# CUDA device fails (with the reason) instead of printing `skipped:` and passing.
# The CUDA 13 libraries of the toolkit (/usr/local/cuda/lib64, then /usr/local/cuda-*/lib64)
# and then of PyTorch's wheels (site-packages/nvidia/**/lib, in the order found) are put on
# LD_LIBRARY_PATH for the bda binaries only; the PyTorch peers keep the environment's path.
# PYTHON: the PyTorch interpreter, a name or a path (default python3 on PATH).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2 # the repository root: bench/ is used from there
MODE=${1:-}
case "$MODE" in
  check) BUDGET=${KIT_BUDGET_S:-390} ;;
  compare) BUDGET=${KIT_BUDGET_S:-420} ;;
  *) echo "usage: bash gpu-kit/run.sh check|compare" >&2; exit 2 ;;
esac
KIT=${KIT:-gpu-kit}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
SUMMARY=$OUT/$MODE-summary.txt
ARCHIVE=$OUT/$MODE-logs.tar.gz
WORK=$(mktemp -d)
LOGS=$WORK/$MODE-logs
mkdir -p "$LOGS"
trap 'rm -rf "$WORK"' EXIT
export BDA_REQUIRE_CUDA=1
: >"$SUMMARY"

say() { echo "$*" | cut -c1-400 | tee -a "$SUMMARY"; }
pack() {
  tar -czf "$WORK/logs.tar.gz" -C "$WORK" "$MODE-logs" && mv -f "$WORK/logs.tar.gz" "$ARCHIVE"
}

PYTHON=$(command -v "${PYTHON:-python3}" || true)

# The folders holding CUDA libraries, toolkit first, then the wheels in the order Python's
# site folders list them; a folder reached twice (a symbolic link such as /usr/local/cuda)
# counts once, at its first place. Never sorted: the order is the priority.
cuda_libs() {
  {
    for d in /usr/local/cuda/lib64 /usr/local/cuda-*/lib64; do
      [ -d "$d" ] && echo "$d"
    done
    [ -n "$PYTHON" ] && "$PYTHON" - <<'PY' 2>/dev/null
import glob, os, site
folders = site.getsitepackages() + [site.getusersitepackages()]
for s in folders:
    for d in glob.glob(os.path.join(s, "nvidia", "**", "lib"), recursive=True):
        print(d)
PY
  } | while read -r d; do
    compgen -G "$d/libnvrtc.so*" >/dev/null || compgen -G "$d/libcublas.so*" >/dev/null ||
      compgen -G "$d/libnvJitLink.so*" >/dev/null || continue
    printf '%s\t%s\n' "$(readlink -f "$d")" "$d"
  done | awk -F'\t' '!seen[$1]++ { print $2 }' | paste -sd: -
}
LIBS=$(cuda_libs)
# What the bda binaries get (and bench/peer.sh through BDA_LD_LIBRARY_PATH).
BDA_LIB_PATH="$LIBS${LD_LIBRARY_PATH:+${LIBS:+:}$LD_LIBRARY_PATH}"
BDA_ENV=(env "LD_LIBRARY_PATH=$BDA_LIB_PATH")

{
  date -u
  echo "LD_LIBRARY_PATH of the environment (the peers): ${LD_LIBRARY_PATH:-}"
  echo "LD_LIBRARY_PATH of the bda binaries: $BDA_LIB_PATH"
  echo "PYTHON: ${PYTHON:-none}"
  nvidia-smi 2>&1
} >"$LOGS/env.txt"
say "gpu-kit $MODE, $(date -u '+%F %T') UTC, budget ${BUDGET} s"
if command -v nvidia-smi >/dev/null; then
  say "gpu: $(nvidia-smi -L 2>&1 | head -1)"
else
  say "gpu: nvidia-smi not found"
fi
say "bda library path: ${LIBS:-(none found: the default search path)}"
if [ "$MODE" = compare ]; then
  if [ -n "$PYTHON" ]; then
    torch=$(timeout 60 "$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")' 2>&1 | tail -1)
  else
    torch="no python interpreter found (set PYTHON)"
  fi
  say "peer: $torch"
fi
pack

# The headline numbers of a bda JSON report (standard input), not its whole history.
headline() {
  "${PYTHON:-python3}" -c '
import json, sys
r = json.loads(sys.stdin.read())
keys = ("method", "device", "K", "ul_iters", "val_acc", "test_acc", "clean_f1", "s_per_ul_iter")
print("  ".join(f"{k} {r[k]}" for k in keys if k in r))' 2>/dev/null || echo "(a JSON report)"
}

PASSED=0
FAILED=0
# step NAME LIMIT_S PATTERN COMMAND...: runs COMMAND under `timeout` (LIMIT_S, less when the
# command's budget has less left) with its output in NAME.txt, and writes one summary line:
# on success the last output line matching PATTERN, on failure the first panic message (and
# a test binary's counts), else the first line about CUDA, else the last line of output.
step() {
  local name=$1 limit=$2 pat=$3
  shift 3
  local log=$LOGS/$name.txt left=$((BUDGET - SECONDS))
  if ((left < 15)); then
    FAILED=$((FAILED + 1))
    say "$(printf '%-18s FAIL  not run: %d s of the %d s budget left' "$name" "$left" "$BUDGET")"
    return
  fi
  ((limit > left)) && limit=$left
  echo "\$ $* (limit ${limit} s)" >"$log"
  local t0=$SECONDS rc line counts
  timeout -k 5 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local dt=$((SECONDS - t0))
  if ((rc == 0)); then
    PASSED=$((PASSED + 1))
    line=$(tail -n +2 "$log" | grep -E -- "$pat" | tail -1)
    [[ $line == "{"* ]] && line=$(headline <<<"$line")
    say "$(printf '%-18s PASS  exit 0    %4d s  %s' "$name" "$dt" "${line:-(no line matching $pat)}")"
  else
    FAILED=$((FAILED + 1))
    # The first panic's message (a test), else a line about CUDA (bda, a peer), else the last.
    line=$(grep -m1 -A1 'panicked at' "$log" | sed -n 2p)
    [ -n "$line" ] || line=$(tail -n +2 "$log" | grep -E 'CUDA required|no CUDA|CUDA driver|not compiled with CUDA' | head -1)
    [ -n "$line" ] || line=$(tail -n +2 "$log" | grep -v -E '^\s*$|^note: ' | tail -1)
    counts=$(grep -E '^test result:' "$log" | tail -1 | grep -oE '[0-9]+ passed; [0-9]+ failed')
    [ -n "$counts" ] && line="$counts; first failure: $line"
    ((rc == 124 || rc == 137)) && line="timed out after ${limit} s; last: $line"
    say "$(printf '%-18s FAIL  exit %-4d %4d s  %s' "$name" "$rc" "$dt" "$line")"
  fi
  pack
}

BIN=$KIT/bin
if [ "$MODE" = check ]; then
  # 1. The unit tests (NVRTC compiles every kernel, the probe describes the device), then
  # agreement with the f64 reference on the real device (the fake-device runs need g++).
  step tests-unit 20 '^test result' "${BDA_ENV[@]}" "$BIN/test-unit" --test-threads 1
  step tests-gpu 120 '^test result' \
    "${BDA_ENV[@]}" "$BIN/test-gpu" --nocapture --test-threads 1 --skip all_tests_on_a_fake_device
  step tests-fewshot 150 '^test result' \
    "${BDA_ENV[@]}" "$BIN/test-fewshot_gpu" --nocapture --test-threads 1 --skip all_fewshot_tests_on_a_fake_device
  step tests-mlp 40 '^test result' \
    "${BDA_ENV[@]}" "$BIN/test-mlp_gpu" --nocapture --test-threads 1 --skip all_mlp_tests_on_a_fake_device
  # 2. Primitive timings at MNIST scale.
  step step-timing 60 'BDA lower step' "${BDA_ENV[@]}" "$BIN/step_timing"
else
  [ -n "$PYTHON" ] || say "no python interpreter found (set PYTHON): the peer steps fail"
  PY=${PYTHON:-python3}
  # Hyper-cleaning against the peer on the same GPU (K 50, peer settings); few-shot likewise
  # (5-way 1-shot, 15 queries, meta-batch 16, K 5). The ratios with floors first.
  hc=(env BDA="$BIN/bda" BDA_LD_LIBRARY_PATH="$LIBS" PYTHON="$PY" PEERS="$KIT/peers"
    DATA_DIR="$KIT/data" DEVICE=cuda bash bench/hyperclean_vs_torch.sh)
  fs=(env BDA="$BIN/bda" BDA_LD_LIBRARY_PATH="$LIBS" PYTHON="$PY" PEERS="$KIT/peers"
    DEVICE=cuda bash bench/fewshot_vs_torch.sh)
  step hyperclean-bda 100 'median ratio' "${hc[@]}" bda 10 3
  step fewshot-bda 100 'median ratio' "${fs[@]}" 2 bda 20 2
  # GPU memory at K = 800 (peak of nvidia-smi samples every 100 ms).
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 \
    >"$LOGS/k800-memory-samples.txt" 2>&1 &
  smi=$!
  step k800 45 's_per_ul_iter' "${BDA_ENV[@]}" "$BIN/bda" hyperclean --device cuda --data-dir "$KIT/data" \
    --method bda --K 800 --ul-iters 2 --json --quiet
  kill "$smi" 2>/dev/null
  wait "$smi" 2>/dev/null
  peak=$(grep -E '^ *[0-9]+ *$' "$LOGS/k800-memory-samples.txt" | sort -n | tail -1)
  say "k800 peak GPU memory used: ${peak:+$peak MiB}${peak:-no nvidia-smi samples}"
  # Accuracy on the GPU with the defaults (compare with the CPU table in README.md).
  for m in bda rhg; do
    step "accuracy-$m" 40 'test_acc' "${BDA_ENV[@]}" "$BIN/bda" hyperclean --device cuda --data-dir "$KIT/data" \
      --method "$m" --json --quiet
  done
  # The other methods' ratios.
  step hyperclean-rhg 40 'median ratio' "${hc[@]}" rhg 10
  step hyperclean-trhg 40 'median ratio' "${hc[@]}" trhg 10
  step fewshot-rhg 60 'median ratio' "${fs[@]}" 2 rhg 20
fi
say "$MODE: $PASSED passed, $FAILED failed ($SECONDS s)"
pack
[ "$FAILED" -eq 0 ]
