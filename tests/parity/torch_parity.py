#!/usr/bin/python3
"""tests/parity/torch_parity.py — numeric parity of EM3 with an independent PyTorch implementation.

For each model of tests/parity/models/, a batch is generated here and written as .npy; em3_parity
(the C side) compiles the model, initialises it from a seed and writes its initial weights, loss,
gradients and the weights after one Adam step. The same model is written below in PyTorch from
its DSL source and the standard library (models/lib/*.em3), with explicit parameters named as
EM3's (x @ w with w [din, dout]; gelu's tanh approximation; LayerNorm with the biased variance and
eps 1e-5; attention masks as models/lib/attention.em3: scores + (mask - 1)·1e9, softmax, times
mask), loaded with EM3's initial weights; loss, every gradient and the Adam step are compared in
float64 (rtol 1e-4; the interpreter's F64 mode) and float32 (rtol 1e-3; F32 mode, which rounds
to float after every op).

A tensor's error is max |em3 - torch| / max(max |torch|, noise·G), G the largest gradient element
of the model and noise the precision's rounding level (1e-10, 1e-4): a gradient that is zero in
exact arithmetic (a key bias's: softmax ignores a shift shared by all keys) is rounding noise on
both sides. The Adam step is compared on the update w1 - w0; its first step, -lr·g/(|g| + 1e-8),
turns the noise of a gradient element near zero (below 1e-12·G, 1e-6·G) into an arbitrary step
of up to lr, so such elements are left out of the comparison (counted in the table; most are
exactly zero on both sides) and only checked to move by at most lr.

Run by ctest as parity/torch; python3-torch missing is a failure, not a skip.
"""
import argparse
import math
import os
import shutil
import subprocess
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # a failure, not a skip: CI must run this
    print(f"parity/torch: cannot import {e.name}: install Debian's python3-torch and python3-numpy "
          "(tools/deps.sh installs them)", file=sys.stderr)
    sys.exit(1)

SEED, LR = 7, 1e-2
RTOL = {"float64": 1e-4, "float32": 1e-3}
NOISE = {"float64": 1e-10, "float32": 1e-4}
STEP_NOISE = {"float64": 1e-12, "float32": 1e-6}


class Params:
    """EM3's initial weights as PyTorch leaves. A use with frozen=True reads a weight through
    detach(), as the DSL's `shares ... frozen` reads it through stop_gradient."""

    def __init__(self, folder, dtype):
        self.t = {}
        for f in sorted(os.listdir(folder)):
            if f.startswith("init.") and f.endswith(".npy"):
                a = np.load(os.path.join(folder, f))
                self.t[f[5:-4]] = torch.tensor(a, dtype=dtype, requires_grad=True)

    def __call__(self, name, frozen=False):
        return self.t[name].detach() if frozen else self.t[name]


# ---- the standard library, from models/lib/*.em3 ---------------------------------------------

def linear(P, name, x, lora=None):
    """Linear(name), or with lora = (adapters' prefix, rank) a LoRALinear whose w and b are
    name's, shared frozen: x @ w + (alpha / rank)((x @ A) @ B) + b with alpha = rank."""
    if lora is None:
        return x @ P(name + ".w") + P(name + ".b")
    ad, rank = lora
    y = x @ P(name + ".w", True) + (rank / rank) * ((x @ P(ad + ".lora_a")) @ P(ad + ".lora_b"))
    return y + P(name + ".b", True)


def sub(lora, part):
    return None if lora is None else (f"{lora[0]}.{part}", lora[1])


def mlp(P, name, x, n_layers, act):
    for i in range(n_layers):
        x = linear(P, f"{name}.layers.{i}", x)
        if i < n_layers - 1:
            x = act(x)
    return x


def gelu(x):
    return F.gelu(x, approximate="tanh")


def layer_norm(P, name, x, frozen=False):
    return F.layer_norm(x, x.shape[-1:], P(name + ".gamma", frozen), P(name + ".beta", frozen), 1e-5)


def split_heads(x, heads):
    s = list(x.shape)
    return x.reshape(s[:-1] + [heads, s[-1] // heads]).transpose(-3, -2)


def merge_heads(x):
    y = x.transpose(-3, -2)
    s = list(y.shape)
    return y.reshape(s[:-2] + [s[-2] * s[-1]])


def attention(q, k, v, mask):
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    m = mask.unsqueeze(-2).unsqueeze(-2)
    return (torch.softmax(s + (m - 1.0) * 1e9, dim=-1) * m) @ v


def mha(P, name, x, mask, heads, lora=None):
    q, k, v = (split_heads(linear(P, f"{name}.{p}", x, sub(lora, p)), heads) for p in "qkv")
    return linear(P, f"{name}.o", merge_heads(attention(q, k, v, mask)), sub(lora, "o"))


def self_attention_block(P, name, x, mask, heads, ffn=False, lora=None):
    frozen = lora is not None
    x = layer_norm(P, f"{name}.norm1", x + mha(P, f"{name}.attn", x, mask, heads, sub(lora, "attn")), frozen)
    if ffn:
        x = layer_norm(P, f"{name}.norm2", x + mlp(P, f"{name}.ff", x, 2, gelu), frozen)
    return x


def masked_mean(x, mask):
    m = mask.unsqueeze(-1)
    return (x * m).sum(1) / torch.clamp_min(m.sum(1), 1.0)


def fusion_qformer(P, name, tokens, mask, queries, heads, lora=None):
    """The joint style with one layer: [queries; tokens] through a self-attention block."""
    lead, d = list(tokens.shape[:-2]), tokens.shape[-1]
    qs = P(name + ".q", lora is not None).expand(lead + [queries, d])
    x = torch.cat([qs, tokens], dim=-2)
    m = torch.cat([torch.ones(lead + [queries], dtype=mask.dtype), mask], dim=-1)
    x = self_attention_block(P, f"{name}.blocks.0", x, m, heads, lora=sub(lora, "blocks.0"))
    x = x[..., :queries, :]
    return linear(P, f"{name}.proj", x.reshape(lead + [queries * d]), sub(lora, "proj"))


def content_encoder(P, name, ids, image, text, queries, heads, lora=None):
    """ContentEncoder: image patches and text tokens of the items, fused by the FQF."""
    img = linear(P, f"{name}.image_proj", image[ids], sub(lora, "image_proj"))
    words = text[ids]
    txt = P(f"{name}.word_emb.table", lora is not None)[words]
    lead = list(ids.shape)
    tokens = torch.cat([img, txt], dim=-2)
    mask = torch.cat([torch.ones(lead + [image.shape[-2]], dtype=img.dtype),
                      (words != 0).to(img.dtype)], dim=-1)
    return fusion_qformer(P, f"{name}.fuse", tokens, mask, queries, heads, sub(lora, "fuse"))


def target_attention(P, name, query, keys, mask):
    qk = query.unsqueeze(-2).expand(keys.shape)
    w = mlp(P, f"{name}.unit", torch.cat([qk, keys, qk - keys, qk * keys], dim=-1), 2, torch.sigmoid)
    return (keys * (w.squeeze(-1) * mask).unsqueeze(-1)).sum(-2)


def l2_normalize(x):
    return x * torch.rsqrt(torch.clamp_min((x * x).sum(-1, keepdim=True), 1e-24))


def content_id_contrastive(P, name, c, e, tau):
    zc = l2_normalize(linear(P, f"{name}.content_head", c))
    ze = l2_normalize(linear(P, f"{name}.id_head", e))
    logits = (zc @ ze.T) / tau
    pos = (zc * ze).sum(-1) / tau
    return 0.5 * ((torch.logsumexp(logits, 1) - pos).mean() + (torch.logsumexp(logits, 0) - pos).mean())


# ---- the four models (tests/parity/models/*.em3) ---------------------------------------------

def features(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def labels(rng, n):
    return rng.integers(0, 2, n).astype(np.float32)


class Mlp:
    file = "mlp.em3"

    def batch(self, rng):
        return {"x": features(rng, 8, 6), "y": labels(rng, 8)}, {}

    def loss(self, P, b, data):
        return F.binary_cross_entropy_with_logits(mlp(P, "net", b["x"], 3, gelu).squeeze(-1), b["y"])


class Mha:
    file = "mha.em3"

    def batch(self, rng):
        mask = (rng.random((4, 5)) < 0.7).astype(np.float32)
        mask[:, 0] = 1  # every row has a real position
        mask[1, 3:] = 0  # and one is padded at the end
        return {"x": features(rng, 4, 5, 16), "mask": mask, "y": labels(rng, 4)}, {}

    def loss(self, P, b, data):
        h = masked_mean(self_attention_block(P, "block", b["x"], b["mask"], 4, ffn=True), b["mask"])
        return F.binary_cross_entropy_with_logits(linear(P, "head", h).squeeze(-1), b["y"])


class FqfLora:
    file = "fqf_lora.em3"

    def batch(self, rng):
        text = rng.integers(1, 20, (12, 4)).astype(np.int32)
        text[rng.random((12, 4)) < 0.3] = 0  # padded words
        hist = rng.integers(1, 12, (4, 4)).astype(np.int32)
        hist[0, 2:] = 0  # padded behaviours
        hist[2, 3] = 0
        return ({"item": rng.integers(0, 12, 4).astype(np.int32), "hist": hist, "click": labels(rng, 4)},
                {"image": features(rng, 12, 3, 6), "text": text})

    def loss(self, P, b, data):
        enc = dict(image=data["image"], text=data["text"], queries=2, heads=2)
        c = content_encoder(P, "content", b["item"], **enc)
        h = content_encoder(P, "content", b["hist"], **enc, lora=("history", 2))
        u = target_attention(P, "interest", c, h, (b["hist"] != 0).to(c.dtype))
        logit = linear(P, "head", torch.cat([c, u], -1)).squeeze(-1)
        return F.binary_cross_entropy_with_logits(logit, b["click"])


class Cic:
    file = "cic.em3"

    def batch(self, rng):
        return {"item": rng.integers(0, 10, 6).astype(np.int32), "feat": features(rng, 6, 8)}, {}

    def loss(self, P, b, data):
        c = linear(P, "content", b["feat"])
        e = P("ids.table")[b["item"]]
        return content_id_contrastive(P, "contrast", c, e, 0.2)


# ---- running both sides and comparing ----------------------------------------------------------

def as_torch(arrays, dtype):
    return {k: torch.tensor(v, dtype=torch.long if v.dtype == np.int32 else dtype) for k, v in arrays.items()}


def rel_err(a, b, floor):
    if b.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), floor)


def check(model, em3_parity, models_dir, work, prec):
    """One model at one precision: returns (rows of (tensor, shape, grad err, step err, elements
    left out of the step), problems)."""
    folder = os.path.join(work, f"{model.file[:-4]}_{prec}")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    rng = np.random.default_rng(SEED)
    inputs, data = model.batch(rng)
    for k, v in inputs.items():
        np.save(os.path.join(folder, f"input.{k}.npy"), v)
    for k, v in data.items():
        np.save(os.path.join(folder, f"data.{k}.npy"), v)
    cmd = [em3_parity, os.path.join(models_dir, model.file), folder,
           "--prec", "f64" if prec == "float64" else "f32", "--seed", str(SEED), "--lr", str(LR)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return [], [f"em3_parity failed ({' '.join(cmd)}):\n{r.stderr}"]

    dtype = getattr(torch, prec)
    P = Params(folder, dtype)
    loss = model.loss(P, as_torch(inputs, dtype), as_torch(data, dtype))
    loss.backward()
    load = lambda name: np.load(os.path.join(folder, name + ".npy"))
    rows, problems = [("loss", "()", rel_err(load("loss"), loss.detach().numpy(), 0.0), None, 0)], []
    ours = {f[5:-4] for f in os.listdir(folder) if f.startswith("grad.")}
    grads = {n: t.grad.numpy().copy() for n, t in P.t.items() if t.grad is not None}
    for n in sorted(ours ^ grads.keys()):
        problems.append(f"{n}: a gradient only in {'EM3' if n in ours else 'PyTorch'}")
    big = max(float(np.max(np.abs(g))) for g in grads.values())
    floor = NOISE[prec] * big

    before = {n: t.detach().clone() for n, t in P.t.items()}
    opt = torch.optim.Adam([P.t[n] for n in grads], lr=LR, betas=(0.9, 0.999), eps=1e-8)
    opt.step()
    for n in sorted(P.t):
        if not os.path.exists(os.path.join(folder, f"step.{n}.npy")):
            continue  # frozen: never stepped
        g = rel_err(load("grad." + n), grads[n], floor) if n in ours & grads.keys() else None
        d_ours, d_torch = load("step." + n) - load("init." + n), (P.t[n].detach() - before[n]).numpy()
        noisy = np.abs(grads[n]) < STEP_NOISE[prec] * big if n in grads else np.zeros(d_torch.shape, bool)
        s = rel_err(d_ours[~noisy], d_torch[~noisy], 0.0)
        if np.any(np.abs(d_ours[noisy]) > LR * (1 + 1e-6)):
            problems.append(f"{n}: a step larger than lr where the gradient is noise")
        rows.append((n, str(tuple(P.t[n].shape)), g, s, int(noisy.sum())))
    for name, _, g, s, _ in rows:
        for what, e in (("gradient", g), ("Adam step", s)):
            if e is not None and not e <= RTOL[prec]:
                problems.append(f"{name}: {what} differs by {e:.2e} (rtol {RTOL[prec]:.0e})")
    return rows, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--em3-parity", required=True, help="the em3_parity executable")
    ap.add_argument("--models", required=True, help="tests/parity/models")
    ap.add_argument("--work", required=True, help="a scratch folder for the .npy files")
    args = ap.parse_args()
    torch.set_num_threads(1)
    problems, worst = [], {}
    for model in (Mlp(), Mha(), FqfLora(), Cic()):
        for prec in ("float64", "float32"):
            rows, probs = check(model, args.em3_parity, args.models, args.work, prec)
            print(f"\n{model.file}, {prec} (rtol {RTOL[prec]:.0e}): max |em3 - torch| / max |torch|")
            print(f"  {'tensor':<44} {'shape':<12} {'gradient':>10} {'Adam step':>10} {'left out':>9}")
            for name, shape, g, s, noisy in rows:
                fmt = lambda e: "—" if e is None else f"{e:.2e}"
                print(f"  {name:<44} {shape:<12} {fmt(g):>10} {fmt(s):>10} {noisy or '':>9}")
                for e in (g, s):
                    if e is not None and e >= worst.get(prec, (0.0, ""))[0]:
                        worst[prec] = (e, f"{model.file}: {name}")
            problems += [f"{model.file} {prec}: {p}" for p in probs]
    print("\nworst: " + "; ".join(f"{p} {e:.2e} ({where})" for p, (e, where) in worst.items()))
    if problems:
        print("\nPARITY FAILED:\n  " + "\n  ".join(problems))
        return 1
    print("parity: all tensors within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
