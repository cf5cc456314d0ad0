#!/usr/bin/env bash
# The ICML paper's K sweep (its Table 2: K = 50, 100, 200, 400, 800 for RHG, T-RHG and BDA)
# with `bda hyperclean`, on the ICML split (7000 / 7000 / rest) unless flags say otherwise:
#
#   bench/hyperclean_sweep.sh OUT.jsonl [extra flags for every run...]
#
# Appends one JSON line per run (history stripped) to OUT.jsonl and skips the (method, K)
# pairs already there, so an interrupted sweep resumes; prints a Markdown table at the end.
set -euo pipefail
OUT=${1:?output file (JSON lines)}
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
(cd "$ROOT" && cargo build --release -q -p bda-host)
BDA=${BDA:-${CARGO_TARGET_DIR:-$ROOT/target}/release/bda}
touch "$OUT"
for K in 50 100 200 400 800; do
  for m in rhg trhg bda; do
    if python3 - "$OUT" "$m" "$K" <<'PY'
import json, sys
done = any(json.loads(l)["method"] == sys.argv[2] and json.loads(l)["K"] == int(sys.argv[3])
           for l in open(sys.argv[1]) if l.strip())
sys.exit(0 if done else 1)
PY
    then continue; fi
    "$BDA" hyperclean --split icml --method "$m" --K "$K" --json --quiet "$@" |
      python3 -c 'import json,sys; d=json.load(sys.stdin); d.pop("history"); print(json.dumps(d))' >>"$OUT"
  done
done
python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ks = sorted({r["K"] for r in rows})
print("| method | " + " | ".join(f"K = {k}" for k in ks) + " |")
print("|---|" + "---:|" * len(ks))
for m in ["rhg", "trhg", "bda"]:
    cell = {r["K"]: r for r in rows if r["method"] == m}
    print(f"| {m} | " + " | ".join(
        f"{cell[k]['test_acc']:.2f} ({cell[k]['s_per_ul_iter']:.2f} s)" if k in cell else "–" for k in ks) + " |")
PY
