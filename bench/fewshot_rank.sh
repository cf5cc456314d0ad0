#!/usr/bin/env bash
# Runs that rank few-shot methods — BDA, RHG and T-RHG with the head as the lower level, or
# the whole-network methods (maml, fomaml, metasgd, reptile, imaml, bda-net) — on an
# Omniglot-layout set (the kanji stand-in here), with every setting chosen on the
# validation split, never on test:
#
#   for each number of ways, in turn:
#   1. selection: for each method, short runs over the lower-level step size (--ll-lr,
#      the head's or the whole network's), for T-RHG T, for BDA and bda-net the
#      aggregation weight μ (--mu), for iMAML the proximal weight λ (--lambda); each
#      scored by its best
#      validation accuracy on the held-out background characters (--val-classes). The
#      best setting per method is kept.
#   2. ranking: with the chosen settings, meta-train until the validation accuracy stops
#      improving (--patience, the best validated backbone is tested), 600 test episodes;
#      every seed of SEEDS for 5-way, the first for 20-, 30- and 40-way.
#
# Usage: bench/fewshot_rank.sh DATA_DIR OUT_DIR [THREADS]
# Environment (defaults in brackets): SEEDS ["0 1 2"], WAYS ["5 20 30 40"], VAL_CLASSES
# [100], SELECT_STEPS [300], MAX_STEPS [5000], VAL_EVERY [100], PATIENCE [5], VAL_EPISODES
# [200], EPISODES [600], META_BATCH [4], QUERIES [15], CHANNELS [64], LRS ["0.05 0.1 0.2"],
# TS ["1 2 3 4"], MUS ["0.5"], LAMBDAS ["2"], METHODS ["bda rhg trhg"], SHOTS [1] (runs other than
# 1-shot are named N-way-S-shot), SELECT_WAYS (empty: every setting selects its own;
# a number N: reuse the settings chosen at N-way 1-shot, read from OUT_DIR/chosen-N-way.txt,
# for every other number of ways or shots), BDA (a built binary). Resumable: a run whose JSON exists is
# kept (selection runs are named by method, step size and knob: -T for T-RHG, -mu for BDA,
# -lam for iMAML).
# OUT_DIR/summary.txt is the table.
set -euo pipefail
DATA=${1:?data dir (bda data kanji --out DIR --limit 1623)}
OUT=${2:?output folder}
THREADS=${3:-2}
SEEDS=${SEEDS:-"0 1 2"}
WAYS=${WAYS:-"5 20 30 40"}
VAL_CLASSES=${VAL_CLASSES:-100}
SELECT_STEPS=${SELECT_STEPS:-300}
MAX_STEPS=${MAX_STEPS:-5000}
VAL_EVERY=${VAL_EVERY:-100}
PATIENCE=${PATIENCE:-5}
VAL_EPISODES=${VAL_EPISODES:-200}
EPISODES=${EPISODES:-600}
META_BATCH=${META_BATCH:-4}
QUERIES=${QUERIES:-15}
CHANNELS=${CHANNELS:-64}
LRS=${LRS:-"0.05 0.1 0.2"}
TS=${TS:-"1 2 3 4"}
MUS=${MUS:-"0.5"}
LAMBDAS=${LAMBDAS:-"2"}
METHODS=${METHODS:-"bda rhg trhg"}
SHOTS=${SHOTS:-1}
SELECT_WAYS=${SELECT_WAYS:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${BDA:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p bda-host)
  BDA="${CARGO_TARGET_DIR:-$ROOT/target}/release/bda"
fi
mkdir -p "$OUT/select" "$OUT/rank"
common=(--data-dir "$DATA" --shots "$SHOTS" --queries "$QUERIES" --meta-batch "$META_BATCH" --channels "$CHANNELS"
        --val-classes "$VAL_CLASSES" --val-every "$VAL_EVERY" --val-episodes "$VAL_EPISODES"
        --threads "$THREADS" --quiet --json)

# run NAME ARGS...: one training run, its report kept as NAME.json (skipped if present).
run() {
  local name=$1; shift
  [ -s "$name.json" ] && return 0
  "$BDA" fewshot "${common[@]}" "$@" > "$name.json.tmp"
  mv "$name.json.tmp" "$name.json"
}

# best_val FILE: the best validation accuracy of a report.
best_val() {
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(max(h["val_acc"] for h in r["history"] if "val_acc" in h))' "$1"
}

# Per ways: 1. selection (the step size that suits 5-way need not suit 40-way), then
# 2. the ranking runs with the chosen settings; so a stopped script has finished settings.
for ways in $WAYS; do
  declare -A CHOSEN=()
  tag=$ways-way; [ "$SHOTS" != 1 ] && tag=$ways-way-$SHOTS-shot
  chosen_file="$OUT/chosen-$tag.txt"
  reused=""
  if [ -n "$SELECT_WAYS" ] && [ "$OUT/chosen-$SELECT_WAYS-way.txt" != "$chosen_file" ]; then
    from="$OUT/chosen-$SELECT_WAYS-way.txt"; reused=1
    [ -s "$from" ] || { echo "fewshot_rank.sh: SELECT_WAYS=$SELECT_WAYS: no $from (run that selection first)" >&2; exit 2; }
    while IFS=: read -r method flags; do CHOSEN["$method"]=$flags; done < "$from"
    echo "settings for $tag reused from the ${SELECT_WAYS}-way 1-shot selection ($from)"
  fi
  for method in $METHODS; do
    [ -n "${CHOSEN[$method]+set}" ] && continue
    best=""; best_acc=-1
    # The method's own knob: T for T-RHG, μ for BDA and bda-net, none for the others.
    knobs="-"; [ "$method" = trhg ] && knobs=$TS
    case $method in bda | bda-net) knobs=$MUS ;; imaml) knobs=$LAMBDAS ;; esac
    for lr in $LRS; do
      for knob in $knobs; do
        extra=(); suffix=""
        case $method in
          trhg) extra=(--truncate "$knob"); suffix="-T$knob" ;;
          bda | bda-net) extra=(--mu "$knob"); suffix="-mu$knob" ;;
          imaml) extra=(--lambda "$knob"); suffix="-lam$knob" ;;
        esac
        name="$OUT/select/$tag-$method-lr$lr$suffix"
        run "$name" --ways "$ways" --method "$method" --ll-lr "$lr" "${extra[@]}" \
          --ul-iters "$SELECT_STEPS" --episodes 0 --seed 0
        acc=$(best_val "$name.json")
        echo "select ${ways}-way $method ll-lr $lr ${extra[*]}: best validation $acc %"
        if python3 -c "import sys; sys.exit(0 if float('$acc') > float('$best_acc') else 1)"; then
          best_acc=$acc; best="--ll-lr $lr${extra[*]:+ ${extra[*]}}"
        fi
      done
    done
    CHOSEN["$method"]=$best
    echo "chosen for ${ways}-way $method: $best (validation $best_acc %)"
  done
  if [ -z "$reused" ]; then
    for method in $METHODS; do echo "$method:${CHOSEN[$method]}"; done > "$chosen_file.tmp"
    mv "$chosen_file.tmp" "$chosen_file"
  fi
  seeds=$SEEDS; [ "$ways" != 5 ] && seeds=${SEEDS%% *}
  for seed in $seeds; do
    for method in $METHODS; do
      name="$OUT/rank/$tag-$method-seed$seed"
      # shellcheck disable=SC2086 # the chosen flags are a list
      run "$name" --ways "$ways" --method "$method" ${CHOSEN["$method"]} \
        --ul-iters "$MAX_STEPS" --patience "$PATIENCE" --episodes "$EPISODES" --seed "$seed" \
        --plot "$name.svg"
      echo "ranked ${ways}-way $method seed $seed"
    done
  done
  # The methods' curves (first seed) on one chart.
  s0=${seeds%% *}
  curves=()
  for method in $METHODS; do curves+=("$OUT/rank/$tag-$method-seed$s0.json"); done
  "$BDA" plot --metrics val_acc,ul_loss --out "$OUT/rank/$tag-seed$s0.svg" \
    --title "$ways-way $SHOTS-shot, seed $s0: validation accuracy (%) and meta-training loss" \
    "${curves[@]}"
done

python3 - "$OUT/rank" <<'PY' | tee "$OUT/summary.txt"
import glob, json, os, statistics, sys
rows = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    r = json.load(open(f))
    rows.setdefault((r["ways"], r["shots"], r["method"]), []).append(r)
print("| setting | method | test acc % per seed (± 95 % CI) | mean ± std over seeds | best val % @ meta-step | settings |")
print("|---|---|---|---|---|---|")
for (ways, shots, method), rs in sorted(rows.items()):
    accs = [r["test_acc"] for r in rs]
    per = ", ".join("%.2f ± %.2f" % (r["test_acc"], r["ci95"]) for r in rs)
    spread = "%.2f ± %.2f" % (statistics.mean(accs), statistics.stdev(accs)) if len(accs) > 1 else "%.2f" % accs[0]
    # "(cap)": the best validation came at the last one, so the run was still improving.
    best = ", ".join("%.1f @ %d%s" % (r.get("best_val_acc", float("nan")), r.get("best_ul_iter", 0),
                                      " (cap)" if r.get("best_ul_iter", 0) + r["config"]["val_every"] > r["config"]["ul_iters"] else "")
                     for r in rs)
    c = rs[0]["config"]
    knob = {"trhg": ", T %s" % c["truncate"], "bda": ", mu %s" % c["mu"], "bda-net": ", mu %s" % c["mu"],
            "imaml": ", lambda %s, %s CG" % (c["lambda"], c["cg_iters"])}.get(method, "")
    setting = "ll_lr %s%s, %d queries, %d channels" % (c["ll_lr"], knob, c["queries"], c["channels"])
    print("| %d-way %d-shot | %s | %s | %s | %s | %s |" % (ways, shots, method, per, spread, best, setting))
PY
