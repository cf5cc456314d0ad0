#!/usr/bin/env bash
# Every figure of the two papers (ICML 2020 Figs. 1–4, journal Figs. 1–8), redrawn by bda
# into OUT_DIR as SVG, each beside the JSON reports it was drawn from (`bda plot` redraws
# any of them), then the numbers that decide each paper's claim (bench/figures_check.py,
# also written to OUT_DIR/summary.txt). docs/figures.md shows the figures and the verdicts.
#
# Usage: bash bench/figures.sh [--quick] [--out DIR] [--kanji DIR] [--miniimagenet DIR]
#                              [--threads N]
#   --quick            the few-shot figures at reduced length (the toy figures always run
#                      in full): under 5 minutes on two cores
#   --out DIR          where the figures go [docs/figures]
#   --kanji DIR        Omniglot-layout data for the few-shot figures [generated once into
#                      target/figures-data/kanji with `bda data kanji`, which needs
#                      Debian's python3-kanjidraw]
#   --miniimagenet DIR MiniImageNet (either layout): adds the right panel of ICML Fig. 4 /
#                      journal Fig. 7
#   --threads N        threads of the few-shot runs [2]
#   --fig8-steps N     meta-steps of each of journal Fig. 8's eight runs [1500, as in
#                      docs/fewshot.md; --quick: 40]
# Environment: BDA (a built binary; default: cargo build --release).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0 OUT="$ROOT/docs/figures" KANJI="" MINI="" THREADS=2 FIG8=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT=${2:?--out needs a folder}; shift ;;
    --kanji) KANJI=${2:?--kanji needs a folder}; shift ;;
    --miniimagenet) MINI=${2:?--miniimagenet needs a folder}; shift ;;
    --threads) THREADS=${2:?--threads needs a number}; shift ;;
    --fig8-steps) FIG8=${2:?--fig8-steps needs a number}; shift ;;
    *) echo "figures.sh: unknown option $1 (see the usage at the top of the script)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "${BDA:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p bda-host)
  BDA="${CARGO_TARGET_DIR:-$ROOT/target}/release/bda"
fi
export BDA
mkdir -p "$OUT"
start=$(date +%s)
say() { printf '%s\n' "$*" >&2; }

# A toy run: NAME then the flags; the report goes to OUT/NAME.json.
toy() { local name=$1; shift; "$BDA" toy --json "$@" > "$OUT/$name.json.tmp" && mv "$OUT/$name.json.tmp" "$OUT/$name.json"; }
# A run the paper's settings make diverge: its one-line error is kept as OUT/NAME.txt.
toy_fails() {
  local name=$1; shift
  if "$BDA" toy "$@" > /dev/null 2> "$OUT/$name.txt.tmp" || ! grep -q non-finite "$OUT/$name.txt.tmp"; then
    echo "figures.sh: expected a divergence from bda toy $*, got: $(cat "$OUT/$name.txt.tmp")" >&2; exit 1
  fi
  { echo "bda toy $*"; cat "$OUT/$name.txt.tmp"; } > "$OUT/$name.txt" && rm "$OUT/$name.txt.tmp"
}
plot() { "$BDA" plot "$@" > /dev/null; }
M4=upper_gap,lower_gap,x_err_sq_rel,y_err_sq_rel

# ---------------------------------------------------------------- ICML 2020, Example 1
# The toy's icml defaults: μα_k = 0.5/k with the ICML β (Eq. 10 with α_k = 0.5/k),
# s_u = 0.7, s_l = 0.2, λ = 0.5, 300 upper iterations.
say "ICML Figs. 1-3 (Example 1)"
for x0 in 0 2; do for y0 in 0 2; do
  toy icml-fig1-x$x0-y$y0 --example icml --method both --K 16 --x0 $x0 --y0 $y0 --ul-iters 60
done; done
plot "$OUT"/icml-fig1-x*.json --metrics $M4 --dashed rhg --out "$OUT/icml-fig1.svg" \
  --title "ICML Fig. 1: Example 1, K = 16, four starts; BDA solid, RHG dashed"
for k in 8 16 64; do toy icml-fig2-K$k --example icml --method both --K $k --x0 0 --y0 2 --ul-iters 60; done
plot "$OUT"/icml-fig2-K{8,16,64}.json --metrics $M4 --dashed rhg --out "$OUT/icml-fig2.svg" \
  --title "ICML Fig. 2: K = 8, 16, 64 from x0 = 0, y0 = (2, 2); BDA solid, RHG dashed"
# The paper's α_k is the toy's μα_k (the ICML β makes (1 − μ)β_k = 1 − μα_k):
# α_k = 0: --alpha 0; α_k = 0.5: --schedule constant --alpha 1; α_k = 0.9/k: --mu 0.9.
toy icml-fig3-alpha-0 --example icml --method bda --K 16 --x0 0 --y0 2 --schedule constant --alpha 0
toy icml-fig3-alpha-0.5 --example icml --method bda --K 16 --x0 0 --y0 2 --schedule constant --alpha 1
toy icml-fig3-alpha-0.9-over-k --example icml --method bda --K 16 --x0 0 --y0 2 --mu 0.9
plot "$OUT"/icml-fig3-alpha-{0,0.5,0.9-over-k}.json --metrics $M4 --out "$OUT/icml-fig3.svg" \
  --title "ICML Fig. 3: BDA with α_k = 0, 0.5, 0.9/k (K = 16)"

# ---------------------------------------------------------------- journal, Eq. (40), n = 50
say "journal Figs. 1-6 (Eq. 40, n = 50)"
# The settings printed with Fig. 3: α_k = 0.5/k, s_u = s_l = 0.1, β_k = 1, μ = 0.1; the lower
# level restarts from y0 every upper iteration, as in the papers; λ = 0.005 (not printed).
EQ40=(--example tpami --n 50 --K 20 --su 0.1 --sl 0.1 --beta 1 --no-warm-start)  # α_k = 0.5/k: the default
PAPER=("${EQ40[@]}" --mu 0.1)
toy journal-fig1 "${PAPER[@]}" --method both --ll-trace 0,10,100,1000 --x0 0 --y0 0
plot "$OUT/journal-fig1.json" --ll-at 0,10,100,1000 --metrics lower_gap,y_err --dashed rhg \
  --out "$OUT/journal-fig1.svg" \
  --title "journal Fig. 1: the K = 20 lower-level steps at x_t (Eq. 40, n = 50); BDA solid, RHG dashed"
plot "$OUT/journal-fig1.json" --metrics upper,phi_star,phi_gap,x_err --plane x_mean,free_mean \
  --mark 1,1 --dashed rhg --out "$OUT/journal-fig2.svg" \
  --title "journal Fig. 2: the upper level (Eq. 40, n = 50, K = 20); BDA solid, RHG dashed"
toy journal-fig3 "${PAPER[@]}" --method all --ll-trace 0,5,20 --x0 0 --y0 0
plot "$OUT/journal-fig3.json" --ll-at 0,5,20 --metrics lower_gap,y_best_err,y_err --out "$OUT/journal-fig3.svg" \
  --title "journal Fig. 3: the lower-level steps at x_0, x_5, x_20"
# Ten starts: the toy's tpami defaults (s_u = 0.01, s_l = 0.5, μ = 0.5, warm starts), with
# which every start below converges for BDA; constant vectors, so that the path in the
# plane (mean x, mean z) is the path of every coordinate.
STARTS="0,0 0.5,0.5 1,0 2,2 2,1.5 1.5,2 0.5,1.5 1.5,0.5 1,2 0.5,0"
for p in $STARTS; do toy "journal-fig4-x${p%,*}-y${p#*,}" --example tpami --method both --x0 "${p%,*}" --y0 "${p#*,}"; done
fig4=(); for p in $STARTS; do fig4+=("$OUT/journal-fig4-x${p%,*}-y${p#*,}.json"); done
plot "${fig4[@]}" --plane x_mean,free_mean --mark 1,1 --dashed rhg --out "$OUT/journal-fig4-paths.svg" \
  --title "journal Fig. 4 (left): ten starts; BDA solid, RHG dashed"
plot "${fig4[@]:0:5}" --metrics upper_gap --dashed rhg --out "$OUT/journal-fig4-upper.svg" \
  --title "journal Fig. 4 (right): five of the starts"
# With and without Proj_Y (a box around the optimum), from starts far from y* = e.
toy journal-fig5-y2.05-none --example tpami --method bda --x0 0 --y0 2.05
toy journal-fig5-y2.05-box --example tpami --method bda --x0 0 --y0 2.05 --proj-y box:-2,2
toy journal-fig5-y3-box --example tpami --method bda --x0 0 --y0 3 --proj-y box:-2,2
toy_fails journal-fig5-y3-none --example tpami --method bda --x0 0 --y0 3
plot "$OUT"/journal-fig5-y{2.05-none,2.05-box,3-box}.json --metrics x_err,y_err --out "$OUT/journal-fig5.svg" \
  --title "journal Fig. 5: BDA with and without Proj_Y = [−2, 2]¹⁰⁰"
# α fixed 0, fixed 0.5, adaptive 0.5/k. Printed: β_k = 1, μ = 0.5, s_u = s_l = 0.1 — which
# diverges (kept in journal-fig6-printed.txt); run with Fig. 3's μ = 0.1.
toy_fails journal-fig6-printed "${EQ40[@]}" --mu 0.5 --method bda
toy journal-fig6-alpha-0 "${PAPER[@]}" --method bda --schedule constant --alpha 0
toy journal-fig6-alpha-0.5 "${PAPER[@]}" --method bda --schedule constant --alpha 0.5
toy journal-fig6-alpha-0.5-over-k "${PAPER[@]}" --method bda
plot "$OUT"/journal-fig6-alpha-{0,0.5,0.5-over-k}.json --metrics upper_gap,x_err,y_err --out "$OUT/journal-fig6.svg" \
  --title "journal Fig. 6: BDA with α = 0, 0.5, 0.5/k"
say "toy figures: $(( $(date +%s) - start )) s"

# ---------------------------------------------------------------- few-shot (ICML Fig. 4, journal Figs. 7, 8)
if [ -z "$KANJI" ]; then
  KANJI="${CARGO_TARGET_DIR:-$ROOT/target}/figures-data/kanji"
  if [ ! -d "$KANJI/images_background" ]; then
    [ -f /usr/lib/python3/dist-packages/kanjidraw/data.json ] || {
      echo "figures.sh: the few-shot figures need the kanji stand-in: apt-get install python3-kanjidraw, or give --kanji DIR" >&2; exit 2; }
    rm -rf "$KANJI" && mkdir -p "$(dirname "$KANJI")" && "$BDA" data kanji --out "$KANJI" --limit 1623 --seed 0 > /dev/null
  fi
fi
if [ "$QUICK" = 1 ]; then STEPS=100 VAL_EVERY=20 EPISODES=100 FIG8_STEPS=40; else STEPS=1500 VAL_EVERY=100 EPISODES=600 FIG8_STEPS=1500; fi
FIG8_STEPS=${FIG8:-$FIG8_STEPS}
# The 5-way 1-shot settings of docs/fewshot.md's ranking (chosen there on validation).
FEW=(--ways 5 --shots 1 --queries 15 --meta-batch 4 --channels 32 --ll-lr 0.02 --mu 0.1 --truncate 4
     --ul-iters "$STEPS" --val-every "$VAL_EVERY" --val-episodes 100 --episodes "$EPISODES"
     --threads "$THREADS" --seed 0 --quiet --json)
fewshot_panel() {  # NAME DATA_DIR [flags]: the three methods, then their loss curves
  local name=$1 data=$2; shift 2
  for m in bda rhg trhg; do
    # A run of this length done earlier is kept (a full run is resumable).
    if [ -s "$OUT/$name-$m.json" ] && python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["ul_iters"] != int(sys.argv[2]))' "$OUT/$name-$m.json" "$STEPS"; then
      continue
    fi
    "$BDA" fewshot --data-dir "$data" "${FEW[@]}" "$@" --method $m > "$OUT/$name-$m.json.tmp"
    mv "$OUT/$name-$m.json.tmp" "$OUT/$name-$m.json"
  done
  plot "$OUT/$name"-{bda,rhg,trhg}.json --metrics ul_loss --smooth 25 --out "$OUT/$name.svg" \
    --title "ICML Fig. 4, journal Fig. 7: 5-way 1-shot, $(basename "$data")"
}
say "ICML Fig. 4 / journal Fig. 7 (few-shot, $STEPS meta-steps)"
fewshot_panel fewshot-omniglot-layout "$KANJI"
[ -z "$MINI" ] || fewshot_panel fewshot-miniimagenet "$MINI" --format miniimagenet
say "journal Fig. 8 (orthogonality, $FIG8_STEPS meta-steps)"
RUNS="$OUT/fig8-runs-$FIG8_STEPS"  # resumable: finished runs are kept until all are done
VAL_EVERY=$(( FIG8_STEPS < 500 ? 10 : 50 )) EPISODES=$EPISODES \
  bash "$ROOT/bench/fewshot_projection.sh" "$KANJI" "$RUNS" "$FIG8_STEPS" "$THREADS" > /dev/null
for m in bda rhg; do
  cp "$RUNS/$m-orthogonality.svg" "$OUT/journal-fig8-$m.svg"
  for p in none max-norm spectral sn; do cp "$RUNS/$m-$p.json" "$OUT/journal-fig8-$m-$p.json"; done
done
rm -rf "$RUNS"
python3 "$ROOT/bench/figures_check.py" "$OUT" | tee "$OUT/summary.txt"
say "all figures: $(( $(date +%s) - start )) s (quick: $QUICK)"
