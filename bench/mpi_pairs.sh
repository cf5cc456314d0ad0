#!/usr/bin/env bash
# Two ranks of one thread against one process of two threads, back to back, on this
# machine's cores (a `bda` built with `--features mpi`):
#
#   bench/mpi_pairs.sh BDA PAIRS [RANKS] -- ARGS...
#
# Runs `mpirun -np RANKS BDA ARGS --threads 1` (RANKS default 2), then
# `BDA ARGS --threads RANKS`, PAIRS times, and prints bench/pairs.py's statistics of
# s_per_ul_iter: every pair's ratio (one process's time / the ranks' time: above 1, the
# ranks are faster), the median, min and max. The machine drifts: read the median.
set -euo pipefail
BDA=${1:?bda binary built with --features mpi}
PAIRS=${2:?pairs}
shift 2
RANKS=2
if [ "${1:-}" != "--" ] && [ -n "${1:-}" ]; then RANKS=$1; shift; fi
[ "${1:-}" = "--" ] && shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MPIRUN=(mpirun --oversubscribe -np "$RANKS")
[ "$(id -u)" -eq 0 ] && MPIRUN=(mpirun --allow-run-as-root --oversubscribe -np "$RANKS")
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
for _ in $(seq "$PAIRS"); do
  "${MPIRUN[@]}" "$BDA" "$@" --threads 1 --json --quiet | tail -n 1 >>"$runs"
  "$BDA" "$@" --threads "$RANKS" --json --quiet | tail -n 1 >>"$runs"
done
python3 "$ROOT/bench/pairs.py" --key s_per_ul_iter "$runs"
