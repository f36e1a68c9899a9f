#!/usr/bin/python3
"""bench/batch_unique.py — how many distinct items a training batch holds, targets and behaviour
sequences together, against how many occurrences it encodes: the saving that encoding each item
once per batch (not once per occurrence; pass dedup-rows) brings. Reads a dataset folder in the layout
`em3 data gen` writes (train/item.npy, train/hist.npy; id 0 pads).

usage: bench/batch_unique.py DATA_DIR [--batches N] [--seed S]"""
import argparse

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    item = np.load(f"{a.data}/train/item.npy")
    hist = np.load(f"{a.data}/train/hist.npy")
    rng = np.random.default_rng(a.seed)
    print(f"{a.data}: {len(item)} training rows, {int(item.max()) + 1} item ids, "
          f"{a.batches} random batches per size (seed {a.seed})\n")
    print("| batch | target occurrences | history occurrences | distinct items | occurrences / distinct | distinct targets / batch |")
    print("|---:|---:|---:|---:|---:|---:|")
    for b in (256, 1024):
        occ, uniq, utarget = [], [], []
        for _ in range(a.batches):
            rows = rng.choice(len(item), b, replace=False)
            h = hist[rows]
            h = h[h != 0]
            occ.append(b + len(h))
            uniq.append(len(np.unique(np.concatenate([item[rows], h]))))
            utarget.append(len(np.unique(item[rows])) / b)
        print(f"| {b} | {b} | {np.mean(occ) - b:.0f} | {np.mean(uniq):.0f} | "
              f"{np.mean(np.array(occ) / np.array(uniq)):.2f} | {np.mean(utarget):.3f} |")


if __name__ == "__main__":
    main()
