#!/usr/bin/python3
"""bench/torch/parity.py — the benchmark's peers compute what em3 computes: for each model, a
batch (with padded history positions and padded words) is written as .npy, tests/parity's
em3_parity (tests/parity/README.md) compiles models/MODEL.em3, initialises it and writes its
initial weights, loss and gradients in float64 (the reference interpreter, without
cache-frozen: the history encoder runs in full); the peer of bench/torch/models.py is built in
float64 from those weights — with its own per-item cache for EM3-DIN — and its loss and
gradients must match within rtol (1e-4, relative to the largest element of the tensor).
The top-K peers (bench/torch/topk.py: FREEDOM, EM3-FREEDOM) are checked on a small world whose
graphs the peer builds and em3 is given (graph.NAME.npy); em3 keeps a graph's values in float32,
hence errors near 1e-8 there rather than 1e-16. ctest runs this check (parity/bench_peers).

  /usr/bin/python3 bench/torch/parity.py --em3-parity BUILD/tests/parity/em3_parity [--work DIR]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import MODELS, Em3Din  # noqa: E402
from topk import TOPK_MODELS, Em3Freedom  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RTOL, SEED, BATCH = 1e-4, 7, 16
# A gradient that is zero in exact arithmetic (an attention key bias's: softmax ignores a shift
# shared by all keys) is float64 rounding noise on both sides: errors are relative to at least
# NOISE times the model's largest gradient element, as in tests/parity/torch_parity.py.
NOISE = 1e-10


def write_batch(model, folder, rng):
    hist = rng.integers(1, model.items, (BATCH, model.seq)).astype(np.int32)
    hist[0, 10:] = 0  # padded behaviours
    hist[3, 1:] = 0
    arrays = {"input.user": rng.integers(0, model.users, BATCH).astype(np.int32),
              "input.item": rng.integers(0, model.items, BATCH).astype(np.int32),
              "input.hist": hist, "input.click": rng.integers(0, 2, BATCH).astype(np.float32)}
    if isinstance(model, Em3Din):
        text = rng.integers(1, 1000, (model.items, model.text_len)).astype(np.int32)
        text[rng.random(text.shape) < 0.3] = 0  # padded words
        arrays["data.text"] = text
        arrays["data.image"] = rng.standard_normal((model.items, model.patches, model.patch_dim)).astype(np.float32)
    for k, v in arrays.items():
        np.save(os.path.join(folder, k + ".npy"), v)
    return arrays


def rel_err(ours, theirs, floor=1e-30):
    return float(np.max(np.abs(ours - theirs))) / max(float(np.max(np.abs(theirs))), floor)


def topk_model(name, folder, rng):
    """A small top-K world: 12 users, 24 items, image and audio tables, 60 training edges. The
    peer builds its graphs (the user–item graph whole, as evaluation and dropout = 0 see it) and
    em3 is given the same ones; the batch holds positives, negatives and CIC negatives."""
    users, items, n_edges = 12, 24, 60
    feats = {"image": rng.standard_normal((items, 8)), "audio": rng.standard_normal((items, 6))}
    for f in feats.values():
        f[0] = 0  # the padding item: no features, no kNN edges
    pairs = np.unique(np.stack([rng.integers(1, users, 4 * n_edges), rng.integers(1, items, 4 * n_edges)], 1),
                      axis=0)[:n_edges]
    pairs = pairs[rng.permutation(len(pairs))]
    model = TOPK_MODELS[name](users, items, {k: torch.from_numpy(v) for k, v in feats.items()},
                              torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1]), dtype=torch.float64)
    arrays = {}
    if hasattr(model, "mm"):
        g = np.zeros((users, items))
        g[pairs[:, 0], pairs[:, 1]] = model.edge_v.numpy()
        arrays = {"graph.ui": g, "graph.mm": model.mm.to_dense().numpy()}
    arrays |= {"input.user": pairs[:BATCH, 0].astype(np.int32), "input.item": pairs[:BATCH, 1].astype(np.int32),
              "input.neg": rng.integers(1, items, BATCH).astype(np.int32)}
    arrays.update({"data." + k: v for k, v in feats.items()})
    sets = [f"vocab_user={users}", f"vocab_item={items}", "dim_image=8", "dim_audio=6"]
    if isinstance(model, Em3Freedom):
        arrays["input.cic_neg"] = rng.integers(1, items, (BATCH, model.cic_negatives)).astype(np.int32)
    for k, v in arrays.items():
        np.save(os.path.join(folder, k + ".npy"), v)
    return model, arrays, sets


def check(spec, em3_parity, work):
    """Rows (tensor, error) for one model, loss first. `spec` is a model's name, optionally with
    constants for both sides: em3_din:history=all."""
    name, _, consts = spec.partition(":")
    folder = os.path.join(work, spec.replace(":", "-"))
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    rng = np.random.default_rng(SEED)
    if name in TOPK_MODELS:
        model, arrays, sets = topk_model(name, folder, rng)
    else:
        sets = consts.split("/") if consts else []
        model = MODELS[name](dtype=torch.float64, **dict(s.split("=", 1) for s in sets))
        arrays = write_batch(model, folder, rng)
    cmd = [em3_parity, os.path.join(ROOT, "models", name + ".em3"), folder, "--prec", "f64", "--seed", str(SEED)]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"em3_parity failed ({' '.join(cmd)}):\n{r.stderr}")
    load = lambda f: np.load(os.path.join(folder, f + ".npy"))
    model.load({n: load("init." + n) for n in model.p})
    if isinstance(model, Em3Din):
        model.bind(torch.from_numpy(arrays["data.image"]), torch.from_numpy(arrays["data.text"]))
        model.precompute()
    batch = {k[6:]: torch.from_numpy(v).long() if v.dtype == np.int32 else torch.from_numpy(v).double()
             for k, v in arrays.items() if k.startswith("input.")}
    loss = model.loss(batch)
    loss.backward()
    rows = [("loss", rel_err(load("loss"), loss.detach().numpy()))]
    grads = {n: (t.grad.to_dense() if t.grad.is_sparse else t.grad).numpy()
             for n, t in model.p.items() if t.grad is not None}
    floor = NOISE * max(float(np.max(np.abs(g))) for g in grads.values())
    rows += [(n, rel_err(load("grad." + n), g, floor)) for n, g in sorted(grads.items())]
    ours = {f[5:-4] for f in os.listdir(folder) if f.startswith("grad.")}
    missing = ours ^ {n for n, t in model.p.items() if t.grad is not None}
    return rows, sorted(missing)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--em3-parity", required=True, help="tests/parity's em3_parity executable")
    ap.add_argument("--work", help="a scratch folder (default: a temporary one)")
    ap.add_argument("--models", default="din,dcnv2,em3_din,em3_din:history=frozen,em3_din:history=all,"
                    "em3_din:history=full,vbpr,freedom,em3_freedom",
                    help="models, each optionally with constants for both sides: em3_din:history=all")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = args.work or tempfile.mkdtemp(prefix="em3_bench_parity_")
    failed = []
    for name in args.models.split(","):
        rows, missing = check(name, args.em3_parity, work)
        worst = max(rows[1:], key=lambda r: r[1]) if len(rows) > 1 else ("—", 0.0)
        ok = all(e <= RTOL for _, e in rows) and not missing
        print(f"{name}: loss rel. error {rows[0][1]:.1e}; {len(rows) - 1} gradients, worst {worst[1]:.1e} "
              f"({worst[0]}){'; gradients in one side only: ' + ', '.join(missing) if missing else ''} "
              f"— {'ok' if ok else 'FAILED'}")
        if not ok:
            failed.append(name)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    if failed:
        print(f"parity FAILED (rtol {RTOL:.0e}): {', '.join(failed)}")
        return 1
    print(f"parity: loss and gradients within {RTOL:.0e} for {args.models}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
