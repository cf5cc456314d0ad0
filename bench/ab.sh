#!/usr/bin/env bash
# Speed of two `bda` binaries run back to back on the same command: before/after a change.
#
#   bench/ab.sh OLD_BDA NEW_BDA PAIRS KEY -- ARGS...
#
# Runs `NEW ARGS --json --quiet` then `OLD ARGS --json --quiet`, PAIRS times, and prints
# bench/pairs.py's statistics of the timing KEY (e.g. s_per_ul_iter): every pair's ratio
# old/new, the median (above 1: the new binary is faster), min/max and the ratio of total
# times. This machine's speed drifts between runs: read the median of several pairs.
set -euo pipefail
OLD=${1:?old bda binary}
NEW=${2:?new bda binary}
PAIRS=${3:?pairs}
KEY=${4:?timing key}
shift 4
[ "${1:-}" = "--" ] && shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
for _ in $(seq "$PAIRS"); do
  "$NEW" "$@" --json --quiet | tail -n 1 >>"$runs"
  "$OLD" "$@" --json --quiet | tail -n 1 >>"$runs"
done
python3 "$ROOT/bench/pairs.py" --key "$KEY" "$runs"
