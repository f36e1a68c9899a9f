#!/usr/bin/python3
"""bench/plot_embeddings.py — 2-D PCA of item embeddings exported by `em3 export-embeddings`,
coloured by a label per item — the generator's latent topic (items/topic.npy of `em3 data
gen`), or a MovieLens movie's first genre (--label-name genre) — one panel per (run,
embedding), as in the paper's visualisation; also prints each embedding's purity: the share
of an item's 10 nearest neighbours (cosine) that have its label (chance: the share of item
pairs with the same label). Needs Debian's python3-numpy and gnuplot.

usage: bench/plot_embeddings.py --topics LABELS.npy [--label-name NAME] --out PNG
                                LABEL=RUN_DIR[:EMBEDDING,...] ...
EMBEDDING defaults to item_content,item_id (files RUN_DIR/embeddings/NAME.npy)."""
import argparse, os, subprocess, sys, tempfile

import numpy as np


def purity(x, topic, k=10):
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    nn = np.argpartition(-sim, k, axis=1)[:, :k]
    return float((topic[nn] == topic[:, None]).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--topics", required=True)
    ap.add_argument("--label-name", default="topic")
    ap.add_argument("--out", required=True)
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    topic_all = np.load(a.topics)
    panels = []
    for spec in a.runs:
        label, _, rest = spec.partition("=")
        run, _, names = rest.partition(":")
        for name in (names or "item_content,item_id").split(","):
            x = np.load(os.path.join(run, "embeddings", name + ".npy"))
            if x.shape[0] != topic_all.shape[0]:
                sys.exit(f"{name}: {x.shape[0]} rows but {topic_all.shape[0]} topics: not the same data")
            x, topic = x[1:], topic_all[1:]          # row 0 is the padding id
            p = purity(x, topic)
            c = x - x.mean(axis=0)
            _, _, vt = np.linalg.svd(c, full_matrices=False)
            xy = c @ vt[:2].T
            share = np.bincount(topic.astype(np.int64)) / len(topic)
            panels.append((f"{label}: {name} (10-NN {a.label_name} purity {p:.2f})", xy, topic))
            print(f"{label:24s} {name:14s} {a.label_name} purity {p:.3f} (chance {float((share ** 2).sum()):.3f})")
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    with tempfile.TemporaryDirectory() as tmp:
        script = [f'set terminal png noenhanced size {560 * cols},{460 * rows}', f'set output "{a.out}"',
                  f"set multiplot layout {rows},{cols}", "unset key", "unset colorbox",
                  "set palette model HSV defined (0 0 1 0.9, 1 1 1 0.9)", "set tics font ',8'"]
        for i, (title, xy, topic) in enumerate(panels):
            dat = os.path.join(tmp, f"{i}.dat")
            np.savetxt(dat, np.column_stack([xy, topic]), fmt="%.5g")
            script += [f'set title "{title}" font ",10"',
                       f'plot "{dat}" using 1:2:3 with points pt 7 ps 0.4 palette']
        script.append("unset multiplot")
        subprocess.run(["gnuplot"], input="\n".join(script) + "\n", text=True, check=True)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
