#!/usr/bin/env python3
"""Pair statistics of alternating timing runs: ours, peer, ours, peer, ...

    pairs.py --key s_per_ul_iter [--peer-key s_per_meta_step] [--show K1,K2] [FILE]

Reads JSON lines (FILE, or standard input; lines that do not start with '{' are skipped),
the odd ones from this repository's `bda`, the even ones from the PyTorch peer, and prints
every pair's ratio peer/ours of the timing KEY (PEER_KEY on the peer's side, default KEY),
then the median ratio, its min and max, and the ratio of the total times. A ratio above 1
means ours is faster. --show prints our run's values of other keys on each pair's line
(e.g. GFLOP/s). This machine's speed drifts between runs, so one pair is not a measurement:
alternate several and read the median.

Standard library only: runs with any Python 3.
"""
import argparse
import json
import statistics
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--key", required=True, help="timing key in our runs (seconds, lower is faster)")
    ap.add_argument("--peer-key", help="timing key in the peer's runs (default: --key)")
    ap.add_argument("--show", default="", help="comma-separated keys of our runs to print per pair")
    ap.add_argument("file", nargs="?", help="JSON lines (default: standard input)")
    a = ap.parse_args()
    peer_key = a.peer_key or a.key
    show = [k for k in a.show.split(",") if k]

    src = open(a.file) if a.file else sys.stdin
    runs = []
    for n, line in enumerate(src, 1):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError as e:
            sys.exit(f"pairs.py: line {n}: not JSON: {e}")
    if not runs or len(runs) % 2:
        sys.exit(f"pairs.py: {len(runs)} runs: expected ours, peer, ours, peer, ... (an even number, at least 2)")

    def get(run, key, i, who):
        v = run.get(key)
        if not isinstance(v, (int, float)) or v <= 0:
            sys.exit(f"pairs.py: {who} run {i}: no positive number under \"{key}\" (keys: {', '.join(run)})")
        return float(v)

    ours, peer = runs[0::2], runs[1::2]
    ratios = []
    for i, (o, p) in enumerate(zip(ours, peer), 1):
        a_s, b_s = get(o, a.key, i, "our"), get(p, peer_key, i, "peer")
        r = b_s / a_s
        ratios.append(r)
        extra = "".join(f"  {k} {o[k]:.1f}" if isinstance(o.get(k), float) else f"  {k} {o.get(k)}" for k in show)
        print(f"pair {i}: {a.key} ours {a_s:.4f}  peer {b_s:.4f}  ratio {r:.2f}x{extra}")
    total = sum(get(p, peer_key, i, "peer") for i, p in enumerate(peer, 1)) / sum(
        get(o, a.key, i, "our") for i, o in enumerate(ours, 1)
    )
    print(
        f"{len(ratios)} pair{'s' if len(ratios) > 1 else ''}: median ratio {statistics.median(ratios):.2f}x "
        f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x), total-time ratio {total:.2f}x"
    )


if __name__ == "__main__":
    main()
