#!/usr/bin/env python3
"""Scaling model of a split `bda` run over P ranks: time per upper iteration (meta-step)
from the measured compute and the collectives each step makes, on 10 GbE and InfiniBand.

    python3 bench/mpi_model.py [--markdown]

    T(P) = T_rep + (T_1 - T_rep) / P + C(P)

T_1 is one rank's time (one thread), T_rep what every rank repeats (estimated from the
two-rank run: 2*T_2 - T_1, floored at 0), and C(P) the communication:

    chain of m bytes in S segments of 256 KB (running sum rank to rank, pipelined, then a
    broadcast as scatter + all-gather):
        (P + S - 2) * (alpha + m / (S * beta)) + ceil(log2 P) * alpha + 2 * m / beta
    all-gather of M bytes in all (ring):
        (P - 1) * alpha + (P - 1) / P * M / beta

The inputs are this machine's measurements (docs/distributed.md gives the commands) and
published network figures (alpha: one-way latency, beta: bandwidth); nothing here is
measured on a cluster. Standard library only.
"""
import argparse
import math

# Per workload: T_1, T_2 (seconds per step, one thread per rank, measured 2026-12-05 on the
# 2-core VM: `bda ARGS --threads 1` and `mpirun -np 2 bda ARGS --threads 1`), the chains per step (count, floats each) and the gathers (count, floats in
# all each).
WORKLOADS = {
    # bda hyperclean --model mlp --K 20 (5000 + 5000 rows, 784-300-10): per lower step one
    # chain of both sets' products (2 x 241,690), the upper gradient one of 241,690; the
    # per-sample terms (5,000) and the validation classes (5,000) gathered.
    "hyper-cleaning, network (K = 20)": dict(
        t1=2.757, t2=1.491, chains=[(40, 483_380), (1, 241_690)], gathers=[(22, 5_000)]
    ),
    # Softmax regression: the same with 7,850-float products.
    "hyper-cleaning, softmax regression (K = 20)": dict(
        t1=0.0974, t2=0.0600, chains=[(40, 15_700), (1, 7_850)], gathers=[(22, 5_000)]
    ),
    # bda fewshot bench (5-way 1-shot, 15 queries, meta-batch 16, 64 channels, 28x28):
    # 1,280 images; per block a gather of the chunks' moments and one of their backward
    # sums (160 chunks x 128), the weight gradients chained (576 + 3 x 36,864), the
    # features gathered (1,280 x 256) and the heads' feature gradients (as many).
    "few-shot, Omniglot shapes": dict(
        t1=0.974,
        t2=0.503,
        chains=[(1, 576), (3, 36_864)],
        gathers=[(8, 20_480), (2, 327_680)],
    ),
    # --image-size 84 --in-channels 3 --channels 32 --meta-batch 4: 320 images (40 chunks
    # x 64), weights 864 + 3 x 9,216, features and their gradients 320 x 1,152 each.
    "few-shot, MiniImageNet shapes": dict(
        t1=0.859,
        t2=0.448,
        chains=[(1, 864), (3, 9_216)],
        gathers=[(8, 2_560), (2, 368_640)],
    ),
}

# Published point-to-point figures (osu_latency / osu_bw class numbers): 10 GbE over TCP,
# and InfiniBand EDR (100 Gb/s).
NETWORKS = {
    "10 GbE": dict(alpha=30e-6, beta=1.15e9),
    "InfiniBand EDR": dict(alpha=1.5e-6, beta=11e9),
}

RANKS = [1, 2, 4, 8, 16, 32, 64]

# Floats per segment of a chain (bda_kernel::collective::SEGMENT).
SEGMENT = 1 << 16


def comm(w, net, p):
    if p == 1:
        return 0.0
    a, b = net["alpha"], net["beta"]
    c = 0.0
    for n, floats in w["chains"]:
        m = 4 * floats
        segs = math.ceil(floats / SEGMENT)
        chain = (p + segs - 2) * (a + m / (segs * b))
        bcast = math.ceil(math.log2(p)) * a + 2 * m / b
        c += n * (chain + bcast)
    c += sum(n * ((p - 1) * a + (p - 1) / p * 4 * m / b) for n, m in w["gathers"])
    return c


def step_time(w, net, p):
    rep = max(0.0, 2 * w["t2"] - w["t1"])
    return rep + (w["t1"] - rep) / p + comm(w, net, p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    a = ap.parse_args()
    for name, w in WORKLOADS.items():
        rep = max(0.0, 2 * w["t2"] - w["t1"])
        if a.markdown:
            print(f"\n**{name}**: T_1 = {w['t1']:.3f} s, T_2 = {w['t2']:.3f} s, T_rep = {rep:.3f} s\n")
            print("| network | " + " | ".join(f"P = {p}" for p in RANKS) + " |")
            print("|---|" + "---|" * len(RANKS))
        else:
            print(f"{name}: T_1 {w['t1']:.3f} s, T_2 {w['t2']:.3f} s, T_rep {rep:.3f} s")
        for net_name, net in NETWORKS.items():
            cells = []
            for p in RANKS:
                t = step_time(w, net, p)
                cells.append(f"{t:.3f} s ({w['t1'] / t:.1f}×)")
            if a.markdown:
                print(f"| {net_name} | " + " | ".join(cells) + " |")
            else:
                print(f"  {net_name:15s} " + "  ".join(cells))


if __name__ == "__main__":
    main()
