#!/usr/bin/python3
"""bench/torch/topk.py — the PyTorch peers of models/freedom.em3 and models/em3_freedom.em3 (the
MMRec top-K setting, docs/topk.md) for bench/run, written as MMRec's freedom.py is: one
(users + items)² normalised adjacency in torch.sparse, propagated by torch.sparse.mm; the drop-edge
sample drawn by torch.multinomial before each epoch; dense Adam on every parameter.

Same algorithm as em3 train (the graphs, negatives, losses, FQF and sampled CIC of the model
files with their defaults), so that a ratio measures the compiler and runtime; not draw for draw
(PyTorch's random streams, not em3's). Trains EPOCHS epochs on an MMRec folder (batch 2048,
Adam 1e-3, one sampled negative per row as em3's negative inputs: uniform over the training
items, redrawn while the user has the item in training), evaluates validation Recall@20 after
each (full ranking, training items masked), and prints one JSON line: the seconds of each epoch's
training (drop-edge sample, batches, forward, backward, Adam; evaluation excluded), their median
over the epochs after the first, the last validation Recall@20 and this process's peak RSS.

  /usr/bin/python3 bench/torch/topk.py MODEL DATA [--epochs N] [--threads T] [--seed S]

bench/torch/parity.py checks these peers against em3 on one batch (loss and every gradient).
"""
import argparse
import glob
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# first: step.py sets OpenBLAS's thread count from --threads (and OpenMP's wait policy) before
# it imports torch
from step import peak_rss_mib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from models import Peer  # noqa: E402

MODALITIES = ("image", "text", "audio")  # the model files' order


def knn_weights(names, image_weight=0.1):
    """models/lib/graph.em3 knn_weights: the image weighs image_weight, the others share the rest."""
    if len(names) == 1:
        return [1.0]
    if "image" in names:
        return [image_weight if n == "image" else (1 - image_weight) / (len(names) - 1) for n in names]
    return [1.0 / len(names)] * len(names)


def knn_graph(feats, weights, k=10, chunk=1024):
    """em3's item_knn (runtime/graph.c) as FREEDOM's get_knn_adj_mat: per table, cosine
    similarity, each item's k nearest (itself included), values 1/√(k·k); zero rows have no
    edges. The weighted sum of the tables' graphs, [items, items] sparse COO."""
    n = feats[0].shape[0]
    rows, cols, vals = [], [], []
    for f, w in zip(feats, weights):
        norm = f.norm(dim=1, keepdim=True)
        isolated = norm.squeeze(1) == 0
        unit = torch.where(isolated.unsqueeze(1), torch.zeros_like(f), f / norm.clamp_min(1e-30))
        r_all, c_all = [], []
        for i0 in range(0, n, chunk):
            sim = unit[i0:i0 + chunk] @ unit.T
            sim[:, isolated] = -float("inf")
            top = torch.topk(sim, k, dim=1).indices
            r = torch.arange(i0, i0 + sim.shape[0]).unsqueeze(1).expand_as(top)
            keep = ~isolated[i0:i0 + chunk]
            r_all.append(r[keep].reshape(-1))
            c_all.append(top[keep].reshape(-1))
        r, c = torch.cat(r_all), torch.cat(c_all)
        deg = torch.bincount(r, minlength=n).to(f.dtype)
        rows.append(r)
        cols.append(c)
        vals.append(w / torch.sqrt(deg[r] * deg[c]))
    return torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(vals),
                                   (n, n)).coalesce()


def bipartite_values(u, i, users, items, dtype, eps=0.0):
    """1/√(d_u d_i) over the edges (u, i), degrees counted over them (MMRec adds 1e-7)."""
    du = torch.bincount(u, minlength=users).to(dtype) + eps
    di = torch.bincount(i, minlength=items).to(dtype) + eps
    return 1 / torch.sqrt(du[u] * di[i])


def symmetric(u, i, v, users, items):
    """[[0, G], [Gᵀ, 0]] of the user–item graph G, (users + items)² sparse COO."""
    idx = torch.stack([torch.cat([u, i + users]), torch.cat([i + users, u])])
    return torch.sparse_coo_tensor(idx, torch.cat([v, v]), (users + items, users + items)).coalesce()


class Freedom(Peer):
    """models/freedom.em3 with models/lib/graph.em3's Freedom module; parameter names are em3's."""

    def __init__(self, users, items, feats, train_u, train_i, d=64, layers=2, knn_k=10, image_weight=0.1,
                 dropout=0.8, reg=1e-4, dtype=torch.float32):
        super().__init__(dtype)
        self.users, self.items, self.d, self.layers, self.dropout, self.reg = users, items, d, layers, dropout, reg
        self.feats = [f.to(dtype) for f in feats.values()]
        self.param("freedom.user_emb", (users, d), "xavier")
        self.param("freedom.item_emb", (items, d), "xavier")
        for j, f in enumerate(self.feats):
            self.param(f"freedom.tuned.{j}.offset", tuple(f.shape), "zeros")
            self.linear(f"freedom.trs.{j}", f.shape[1], d)
        self.mm = knn_graph(self.feats, knn_weights(list(feats), image_weight), knn_k)
        self.edge_u, self.edge_i = train_u, train_i
        self.edge_v = bipartite_values(train_u, train_i, users, items, dtype)
        self.full_adj = symmetric(train_u, train_i, self.edge_v, users, items)
        self.adj = self.full_adj

    def drop_edges(self):
        """FREEDOM's pre_epoch_processing: ⌊(1 − p)·E⌋ edges drawn ∝ 1/√(d_u d_i) without
        replacement, renormalised by their own degrees."""
        keep = torch.multinomial(self.edge_v, int(len(self.edge_v) * (1 - self.dropout)))
        u, i = self.edge_u[keep], self.edge_i[keep]
        self.adj = symmetric(u, i, bipartite_values(u, i, self.users, self.items, self.dtype, 1e-7),
                             self.users, self.items)

    def propagate(self, u0, i0):
        """LightGCN over self.adj: the mean of the layers' outputs, layer 0 included."""
        ego = torch.cat([u0, i0])
        acc = ego
        for _ in range(self.layers):
            ego = torch.sparse.mm(self.adj, ego)
            acc = acc + ego
        acc = acc / (self.layers + 1)
        return acc[:self.users], acc[self.users:]

    def id_branch(self):
        u, i = self.propagate(self.p["freedom.user_emb"], self.p["freedom.item_emb"])
        return u, i + torch.sparse.mm(self.mm, self.p["freedom.item_emb"])

    def feature_loss(self, u, item, neg):
        total = 0.0
        for j, f in enumerate(self.feats):
            t = self.lin(f"freedom.trs.{j}", f + self.p[f"freedom.tuned.{j}.offset"])
            total = total + bpr((u * t[item]).sum(-1), (u * t[neg]).sum(-1))
        return total

    def user_item(self):
        """[users, d'] and [items, d'] whose inner products are the scores."""
        return self.id_branch()

    def loss(self, b):
        u_all, i_all = self.id_branch()
        u = u_all[b["user"]]
        return (bpr((u * i_all[b["item"]]).sum(-1), (u * i_all[b["neg"]]).sum(-1))
                + self.reg * self.feature_loss(u, b["item"], b["neg"]))


class Em3Freedom(Freedom):
    """models/em3_freedom.em3: FREEDOM plus the FQF content branch and the sampled CIC."""

    def __init__(self, users, items, feats, train_u, train_i, queries=2, heads=4, tau=0.1, cic_weight=1e-3,
                 cic_negatives=16, **kw):
        super().__init__(users, items, feats, train_u, train_i, **kw)
        d = self.d
        self.queries, self.heads, self.tau, self.cic_weight, self.cic_negatives = (queries, heads, tau, cic_weight,
                                                                                   cic_negatives)
        for j, f in enumerate(self.feats):
            self.linear(f"token_proj.{j}", f.shape[1], d)
        self.param("fuse.q", (queries, d), 0.02)
        for p in "qkvo":
            self.linear(f"fuse.blocks.0.attn.{p}", d, d)
        self.param("fuse.blocks.0.norm1.gamma", (d,), "ones")
        self.param("fuse.blocks.0.norm1.beta", (d,), "zeros")
        self.linear("fuse.proj", queries * d, d)
        self.linear("cic.content_head", d, d)
        self.linear("cic.id_head", d, d)

    def content(self):
        """Every item's content embedding [items, d]: one token per modality, fused by the FQF."""
        tokens = torch.stack([self.lin(f"token_proj.{j}", f) for j, f in enumerate(self.feats)], 1)
        n, nq, d = tokens.shape[0], self.queries, self.d
        x = torch.cat([self.p["fuse.q"].expand(n, nq, d), tokens], 1)
        y = self.joint_block("fuse.blocks.0", x, self.heads)
        return self.lin("fuse.proj", y[:, :nq].reshape(n, nq * d))

    def cic(self, c, e, item, negs):
        """models/lib/em3.em3 SampledCIC."""
        def l2n(x):
            return x * torch.rsqrt(torch.clamp_min((x * x).sum(-1, keepdim=True), 1e-24))
        zc, ze = l2n(self.lin("cic.content_head", c)), l2n(self.lin("cic.id_head", e))
        zci, zei = zc[item], ze[item]
        pos = (zci * zei).sum(-1) / self.tau
        c2id = torch.cat([pos.unsqueeze(-1), (zci.unsqueeze(1) * ze[negs]).sum(-1) / self.tau], -1)
        id2c = torch.cat([pos.unsqueeze(-1), (zei.unsqueeze(1) * zc[negs]).sum(-1) / self.tau], -1)
        return 0.5 * ((torch.logsumexp(c2id, -1) - pos).mean() + (torch.logsumexp(id2c, -1) - pos).mean())

    def both(self):
        z_u, z_i = self.id_branch()
        c = self.content()
        m_u, m_i = self.propagate(torch.zeros(self.users, self.d, dtype=self.dtype), c)
        return z_u, torch.cat([z_u, m_u], -1), torch.cat([z_i, m_i + torch.sparse.mm(self.mm, c)], -1), c

    def user_item(self):
        _, u, i, _ = self.both()
        return u, i

    def loss(self, b):
        z_u, u_all, i_all, c = self.both()
        zu, u = z_u[b["user"]], u_all[b["user"]]
        return (bpr((u * i_all[b["item"]]).sum(-1), (u * i_all[b["neg"]]).sum(-1))
                + self.reg * self.feature_loss(zu, b["item"], b["neg"])
                + self.cic_weight * self.cic(c, self.p["freedom.item_emb"], b["item"], b["cic_neg"]))


class Vbpr(Peer):
    """models/vbpr.em3 (MMRec's vbpr.py): an item is [ID embedding; Linear(its features)], a user
    one embedding twice as wide; BPR + reg · EmbLoss on the batch's embeddings. No graph."""

    def __init__(self, users, items, feats, train_u, train_i, d=64, reg=3.0, dtype=torch.float32):
        super().__init__(dtype)
        self.reg = reg
        self.feats = torch.cat([f.to(dtype) for f in feats.values()], -1)
        self.param("user_emb", (users, 2 * d), "xavier")
        self.param("item_emb", (items, d), "xavier")
        self.linear("item_linear", self.feats.shape[1], d)

    def drop_edges(self):
        pass

    def user_item(self):
        return self.p["user_emb"], torch.cat([self.p["item_emb"], self.lin("item_linear", self.feats)], -1)

    def loss(self, b):
        users, items = self.user_item()
        u, p, n = users[b["user"]], items[b["item"]], items[b["neg"]]
        emb = (u.norm() + p.norm() + n.norm()) / len(u)  # MMRec's EmbLoss: Frobenius norms, not squared
        return bpr((u * p).sum(-1), (u * n).sum(-1)) + self.reg * emb


def bpr(pos, neg):
    return F.softplus(neg - pos).mean()


TOPK_MODELS = {"vbpr": Vbpr, "freedom": Freedom, "em3_freedom": Em3Freedom}


class Folder:
    """An MMRec folder as em3 reads it (docs/data.md): ids shifted by one (0 is padding), the
    feature tables as f32 with a zero row 0."""

    def __init__(self, path):
        inter = glob.glob(os.path.join(path, "*.inter"))
        if len(inter) != 1:
            sys.exit(f"topk.py: {path} has {len(inter)} .inter files, not one")
        a = np.loadtxt(inter[0], dtype=np.int64, skiprows=1, usecols=(0, 1, 2))
        self.feats = {}
        for name in MODALITIES:
            f = os.path.join(path, f"{name}_feat.npy")
            if os.path.exists(f):
                x = np.load(f).astype(np.float32)
                self.feats[name] = torch.from_numpy(np.concatenate([np.zeros((1, x.shape[1]), np.float32), x]))
        self.users = int(a[:, 0].max()) + 2
        self.items = max([int(a[:, 1].max()) + 2] + [f.shape[0] for f in self.feats.values()])
        split = {s: torch.from_numpy(a[a[:, 2] == s, :2] + 1) for s in (0, 1)}
        self.train_u, self.train_i = split[0][:, 0].contiguous(), split[0][:, 1].contiguous()
        self.valid = split[1]
        self.train_items = torch.unique(self.train_i)
        self.seen = torch.unique(self.train_u * self.items + self.train_i)  # sorted keys of training pairs

    def negatives(self, users, k, gen):
        """k items per user drawn uniformly from the training items, redrawn while the user has
        the item in training (MMRec's _sample_neg_ids; em3's negative inputs)."""
        users = users.unsqueeze(1).expand(-1, k).reshape(-1)
        out = self.train_items[torch.randint(len(self.train_items), (len(users),), generator=gen)]
        bad = torch.isin(users * self.items + out, self.seen)
        while bad.any():
            out[bad] = self.train_items[torch.randint(len(self.train_items), (int(bad.sum()),), generator=gen)]
            bad = torch.isin(users * self.items + out, self.seen)
        return out.view(-1, k).squeeze(1) if k == 1 else out.view(-1, k)


def recall_at(model, data, k=20, chunk=2048):
    """Validation Recall@k by full ranking (docs/topk.md): users with a training interaction, their
    training items and the padding id masked."""
    with torch.no_grad():
        u_all, i_all = model.user_item()
        has_train = torch.zeros(data.users, dtype=torch.bool)
        has_train[data.train_u] = True
        valid = data.valid[has_train[data.valid[:, 0]]]
        users = torch.unique(valid[:, 0])
        truth = {}
        for u, i in valid.tolist():
            truth.setdefault(u, set()).add(i)
        total = 0.0
        for c0 in range(0, len(users), chunk):
            us = users[c0:c0 + chunk]
            s = u_all[us] @ i_all.T
            s[:, 0] = -float("inf")
            row = torch.searchsorted(us, data.train_u)
            mine = (row < len(us)) & (us[row.clamp_max(len(us) - 1)] == data.train_u)
            s[row[mine], data.train_i[mine]] = -float("inf")
            for u, top in zip(us.tolist(), torch.topk(s, k, dim=1).indices.tolist()):
                total += len(truth[u].intersection(top)) / len(truth[u])
        return total / len(users)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=sorted(TOPK_MODELS))
    ap.add_argument("data", help="an MMRec folder (../shared/data/tiktok)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2048)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    data = Folder(args.data)
    model = TOPK_MODELS[args.model](data.users, data.items, data.feats, data.train_u, data.train_i)
    opts = model.optimizers()
    setup_s = time.perf_counter() - t0
    epoch_s, recalls = [], []
    rows = len(data.train_u)
    for _ in range(args.epochs):
        t = time.perf_counter()
        model.drop_edges()
        perm = torch.randperm(rows, generator=gen)
        for b0 in range(0, rows, args.batch):
            idx = perm[b0:b0 + args.batch]
            b = {"user": data.train_u[idx], "item": data.train_i[idx]}
            b["neg"] = data.negatives(b["user"], 1, gen)
            if isinstance(model, Em3Freedom):
                b["cic_neg"] = data.negatives(b["user"], model.cic_negatives, gen)
            for o in opts:
                o.zero_grad(set_to_none=True)
            model.loss(b).backward()
            for o in opts:
                o.step()
        epoch_s.append(time.perf_counter() - t)
        if hasattr(model, "full_adj"):
            model.adj = model.full_adj  # evaluation uses every edge
        recalls.append(recall_at(model, data))
    print(json.dumps({"impl": "torch", "model": args.model, "threads": args.threads, "setup_s": round(setup_s, 3),
                      "epoch_s": [round(s, 3) for s in epoch_s],
                      "s_per_epoch": round(statistics.median(epoch_s[1:] or epoch_s), 3),
                      "valid_recall@20": [round(r, 4) for r in recalls], "peak_rss_mib": round(peak_rss_mib(), 1)}))


if __name__ == "__main__":
    main()
