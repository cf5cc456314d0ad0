#!/usr/bin/env python3
"""The numbers that decide each figure's claim, read from the reports bench/figures.sh wrote.

Usage: python3 bench/figures_check.py DIR   (DIR: the figures folder, docs/figures by default)
Only reads JSON reports: every number here can be traced to a file beside its figure.
"""
import glob
import json
import os
import sys

D = sys.argv[1] if len(sys.argv) > 1 else "docs/figures"


def load(name):
    with open(os.path.join(D, name + ".json")) as f:
        return json.load(f)


def runs(name):
    return {r["method"]: r for r in load(name)["runs"]}


def last(run, key):
    return run["history"][-1][key]


def first_below(run, key, tol):
    return next((h["ul_iter"] for h in run["history"] if h[key] < tol), None)


def at_k(run, t, key):
    """The value of `key` after the K lower-level steps at upper iteration t."""
    trace = next(e for e in run["ll_history"] if e["ul_iter"] == t)
    return trace["steps"][-1][key]


def g(v):
    return "—" if v is None else f"{v:.3g}"


print("ICML Fig. 1 (K = 16): final ‖x − x*‖²/‖x*‖², ‖y − y*‖²/‖y*‖², (x, y₂) (BDA | RHG)")
for x0 in (0, 2):
    for y0 in (0, 2):
        r = runs(f"icml-fig1-x{x0}-y{y0}")
        b, h = r["bda"]["history"][-1], r["rhg"]["history"][-1]
        print(f"  x0 = {x0}, y0 = ({y0}, {y0}): BDA {g(b['x_err_sq_rel'])}, {g(b['y_err_sq_rel'])}, "
              f"({b['x_mean']:.4f}, {b['free_mean']:.4f}) | RHG {g(h['x_err_sq_rel'])}, "
              f"{g(h['y_err_sq_rel'])}, ({h['x_mean']:.4f}, {h['free_mean']:.4f})")
print("ICML Fig. 2 (x0 = 0, y0 = (2, 2)): final ‖x − x*‖ (BDA | RHG)")
for k in (8, 16, 64):
    r = runs(f"icml-fig2-K{k}")
    print(f"  K = {k}: BDA {g(last(r['bda'], 'x_err'))} | RHG {g(last(r['rhg'], 'x_err'))}")
print("ICML Fig. 3 (BDA, K = 16): final ‖x − x*‖, ‖y − y*‖; first upper iteration with ‖x − x*‖ < 0.01")
for a in ("0", "0.5", "0.9-over-k"):
    r = runs(f"icml-fig3-alpha-{a}")["bda"]
    print(f"  α_k = {a.replace('-over-', '/')}: {g(last(r, 'x_err'))}, {g(last(r, 'y_err'))}; "
          f"{first_below(r, 'x_err', 0.01)}")

print("journal Fig. 1: after K steps at x_t, f − f* and ‖y_K − y*‖ (BDA | RHG)")
r = runs("journal-fig1")
for t in (0, 10, 100, 1000):
    print(f"  t = {t}: BDA {g(at_k(r['bda'], t, 'lower_gap'))}, {g(at_k(r['bda'], t, 'y_err'))} | "
          f"RHG {g(at_k(r['rhg'], t, 'lower_gap'))}, {g(at_k(r['rhg'], t, 'y_err'))}")
print("journal Fig. 2: final |φ_K − φ*|, ‖x − x*‖, (mean x, mean z) (BDA | RHG)")
for m in ("bda", "rhg"):
    h = r[m]["history"][-1]
    print(f"  {m}: {g(h['phi_gap'])}, {g(h['x_err'])}, ({h['x_mean']:.4f}, {h['free_mean']:.4f})")
print("journal Fig. 3: ‖y_K − y*(x_t)‖ and ‖y_K − y*‖ at x_0, x_5, x_20")
r = runs("journal-fig3")
for m in ("trhg", "rhg", "bda"):
    cells = [f"t = {t}: {g(at_k(r[m], t, 'y_best_err'))}, {g(at_k(r[m], t, 'y_err'))}" for t in (0, 5, 20)]
    print(f"  {m}: " + "; ".join(cells))
print("journal Fig. 4 (ten starts): final ‖x − x*‖ and (mean x, mean z) (BDA | RHG)")
for f in sorted(glob.glob(os.path.join(D, "journal-fig4-x*.json"))):
    name = os.path.basename(f)[:-5]
    r = runs(name)
    b, h = r["bda"]["history"][-1], r["rhg"]["history"][-1]
    print(f"  {name[13:]}: BDA {g(b['x_err'])} ({b['x_mean']:.3f}, {b['free_mean']:.3f}) | "
          f"RHG {g(h['x_err'])} ({h['x_mean']:.3f}, {h['free_mean']:.3f})")
print("journal Fig. 5: first upper iteration with ‖x − x*‖ < 1, < 0.5, < 0.3; final ‖x − x*‖")
for name in ("y2.05-none", "y2.05-box", "y3-box"):
    b = runs(f"journal-fig5-{name}")["bda"]
    print(f"  {name}: {first_below(b, 'x_err', 1)}, {first_below(b, 'x_err', 0.5)}, "
          f"{first_below(b, 'x_err', 0.3)}; {g(last(b, 'x_err'))}")
with open(os.path.join(D, "journal-fig5-y3-none.txt")) as f:
    print("  y3-none: " + " / ".join(line.strip() for line in f))
print("journal Fig. 6 (BDA): final |F − F*|, ‖x − x*‖, ‖y − y*‖; first upper iteration with "
      "‖x − x*‖ < 1, < 0.1")
for a in ("0", "0.5", "0.5-over-k"):
    b = runs(f"journal-fig6-alpha-{a}")["bda"]
    print(f"  α = {a.replace('-over-', '/')}: {g(last(b, 'upper_gap'))}, {g(last(b, 'x_err'))}, "
          f"{g(last(b, 'y_err'))}; {first_below(b, 'x_err', 1)}, {first_below(b, 'x_err', 0.1)}")
with open(os.path.join(D, "journal-fig6-printed.txt")) as f:
    print("  printed settings: " + " / ".join(line.strip() for line in f))


def fewshot(prefix):
    print(f"few-shot ({prefix}): upper-level loss F, mean over meta-steps [a, b) (± its standard "
          "error in the last span); first meta-step whose 20-step mean is below 0.5, 0.3, 0.2; "
          "test accuracy")
    for m in ("bda", "rhg", "trhg"):
        path = os.path.join(D, f"{prefix}-{m}.json")
        if not os.path.exists(path):
            return
        r = json.load(open(path))
        loss = [h["ul_loss"] for h in r["history"] if "ul_loss" in h]
        n = len(loss)
        cuts = [0, n // 10, n // 2, n - n // 10, n]
        means = [sum(loss[a:b]) / max(1, b - a) for a, b in zip(cuts, cuts[1:])]
        tail = loss[cuts[3]:]
        sd = (sum((v - means[-1]) ** 2 for v in tail) / max(1, len(tail) - 1)) ** 0.5
        spans = ", ".join(f"[{a}, {b}) {v:.3f}" for a, b, v in zip(cuts, cuts[1:], means))
        w = 20
        firsts = [next((i for i in range(w, n + 1) if sum(loss[i - w:i]) / w < th), None)
                  for th in (0.5, 0.3, 0.2)]
        print(f"  {m}: {spans} ± {sd / max(1, len(tail)) ** 0.5:.3f}; "
              f"{', '.join(map(str, firsts))}; test {r['test_acc']:.2f} ± {r['ci95']:.2f} %")


fewshot("fewshot-omniglot-layout")
fewshot("fewshot-miniimagenet")
print("journal Fig. 8: orthogonality sum first → last; test accuracy")
for m in ("bda", "rhg"):
    for p in ("none", "max-norm", "spectral", "sn"):
        path = os.path.join(D, f"journal-fig8-{m}-{p}.json")
        r = json.load(open(path))
        o = [h["orthogonality"] for h in r["history"] if "orthogonality" in h]
        print(f"  {m} {p}: {o[0]:.2f} → {o[-1]:.2f}; test {r['test_acc']:.2f} ± {r['ci95']:.2f} %")
