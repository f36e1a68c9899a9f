"""bench/torch/models.py — the PyTorch peers of models/din.em3, models/dcnv2.em3 and
models/em3_din.em3 for bench/run: the same layers and sizes as the DSL's defaults and the
standard library (models/lib/*.em3), written as an expert PyTorch user would for CPU training.

Same algorithms as em3, so that a ratio measures the compiler and runtime:
- parameters keep em3's names and layout (x @ w with w [din, dout]; GEMMs through addmm), so
  em3's initial weights load by name (bench/torch/parity.py);
- embedding tables get sparse gradients and a lazy Adam (SparseAdam), as em3's optimizer pass
  updates only the rows a batch touched; every other parameter plain Adam (lr 1e-3);
- the content encoding is computed per occurrence, as em3 does (docs/em3.md: no batch dedup);
- EM3-DIN's history modes are em3's (models/lib/em3.em3, module EM3): "top" precomputes the
  frozen encoder below the LoRA adapter once per item under no_grad, as the cache-frozen pass
  does, and runs only the adapted projection per step; "frozen" caches the whole frozen
  encoder; "all" runs the content encoder's weights detached with LoRA on every linear; "full"
  runs the trainable content encoder over the history too.
Attention masks add -1e9 at padded keys before the softmax (em3 also multiplies by the mask
afterwards, which changes nothing when a row has a real key, as every FQF row has: its queries).
"""
import math

import torch
import torch.nn.functional as F


def dense(x, w, b):
    """x @ w + b over the last axis of x, one GEMM with the bias as its epilogue."""
    if x.dim() == 2:
        return torch.addmm(b, x, w)
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), w).view(*x.shape[:-1], w.shape[1])


class Peer:
    """Named parameters with em3's initialisers, and the optimizers of a training step."""

    def __init__(self, dtype=torch.float32):
        self.dtype = dtype
        self.p = {}
        self.tables = set()  # sparse gradients, lazy Adam
        self.frozen = set()

    def param(self, name, shape, init, frozen=False, table=False):
        t = torch.empty(shape, dtype=self.dtype)
        with torch.no_grad():
            if init == "zeros":
                t.zero_()
            elif init == "ones":
                t.fill_(1.0)
            elif init == "xavier":  # em3's: fan_in, fan_out of a [din, dout] weight
                fan_in, fan_out = (shape[0], shape[0]) if len(shape) == 1 else (shape[-2], shape[-1])
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                t.uniform_(-bound, bound)
            else:
                t.normal_(0.0, init)
        t.requires_grad_(not frozen)
        self.p[name] = t
        if frozen:
            self.frozen.add(name)
        elif table:
            self.tables.add(name)
        return t

    def linear(self, name, din, dout, frozen=False):
        self.param(name + ".w", (din, dout), "xavier", frozen)
        self.param(name + ".b", (dout,), "zeros", frozen)

    def embedding(self, name, vocab, d, std=0.0001, frozen=False):
        self.param(name + ".table", (vocab, d), std, frozen, table=True)

    def mlp(self, name, dims):
        for i in range(len(dims) - 1):
            self.linear(f"{name}.layers.{i}", dims[i], dims[i + 1])

    def load(self, arrays):
        """Overwrites parameters from {name: numpy array} (em3's init.NAME.npy)."""
        with torch.no_grad():
            for name, t in self.p.items():
                t.copy_(torch.from_numpy(arrays[name]).to(self.dtype))

    def optimizers(self, lr=1e-3):
        dense_p = [t for n, t in self.p.items() if n not in self.frozen and n not in self.tables]
        sparse_p = [self.p[n] for n in sorted(self.tables)]
        opts = [torch.optim.Adam(dense_p, lr=lr, betas=(0.9, 0.999), eps=1e-8)]
        if sparse_p:
            opts.append(torch.optim.SparseAdam(sparse_p, lr=lr, betas=(0.9, 0.999), eps=1e-8))
        return opts

    # ---- the forward pieces, from models/lib/*.em3 ----

    def lin(self, name, x):
        return dense(x, self.p[name + ".w"], self.p[name + ".b"])

    def lookup(self, name, ids):
        t = self.p[name + ".table"]
        return F.embedding(ids, t, sparse=t.requires_grad)

    def run_mlp(self, name, x, n_layers, act):
        for i in range(n_layers):
            x = self.lin(f"{name}.layers.{i}", x)
            if i < n_layers - 1:
                x = act(x)
        return x

    def joint_block(self, blk, x, heads, bias=None, linear=None, fz=lambda t: t):
        """The FQF's joint layer (em3.em3 SelfAttentionBlock, no feed-forward): x [n, t, d] →
        LayerNorm(x + MHA(x)); `bias` [n, 1, 1, t] is added to the scores at the keys;
        `linear(name, v)` runs the block's linear `name` (default: plain), `fz` reads a weight."""
        linear = linear or (lambda name, v: self.lin(f"{blk}.{name}", v))
        n, t, d = x.shape
        qkv = [linear(f"attn.{p}", x).view(n, t, heads, d // heads).transpose(1, 2) for p in "qkv"]
        s = torch.matmul(qkv[0], qkv[1].transpose(-1, -2)) * (1.0 / math.sqrt(d // heads))
        if bias is not None:
            s = s + bias
        att = torch.matmul(torch.softmax(s, -1), qkv[2]).transpose(1, 2).reshape(n, t, d)
        return F.layer_norm(x + linear("attn.o", att), (d,), fz(self.p[f"{blk}.norm1.gamma"]),
                            fz(self.p[f"{blk}.norm1.beta"]), 1e-5)

    def target_attention(self, name, query, keys, mask):
        """DIN's activation unit (ranking.em3 TargetAttention): unnormalised weights."""
        qk = query.unsqueeze(-2).expand_as(keys)
        w = self.run_mlp(f"{name}.unit", torch.cat([qk, keys, qk - keys, qk * keys], -1), 3, torch.sigmoid)
        return (keys * (w * mask.unsqueeze(-1))).sum(-2)  # 1.5x faster than bmm's B tiny GEMMs


def bce(logit, label):
    return F.binary_cross_entropy_with_logits(logit, label)


class Din(Peer):
    def __init__(self, d=64, seq=50, items=10000, users=10000, dtype=torch.float32):
        super().__init__(dtype)
        self.seq, self.items, self.users = seq, items, users
        self.embedding("user_id", users, d)
        self.embedding("item_id", items, d)
        self.mlp("interest.unit", [4 * d, 80, 40, 1])
        self.mlp("head", [3 * d, 200, 80, 1])

    def loss(self, b):
        e = self.lookup("item_id", b["item"])
        mask = (b["hist"] != 0).to(self.dtype)
        u = self.target_attention("interest", e, self.lookup("item_id", b["hist"]), mask)
        logit = self.run_mlp("head", torch.cat([self.lookup("user_id", b["user"]), e, u], -1), 3, F.relu)
        return bce(logit.squeeze(-1), b["click"])


class DcnV2(Peer):
    def __init__(self, d=64, seq=50, items=10000, users=10000, cross_layers=3, dtype=torch.float32):
        super().__init__(dtype)
        self.seq, self.items, self.users, self.cross_layers = seq, items, users, cross_layers
        self.embedding("user_id", users, d)
        self.embedding("item_id", items, d)
        for i in range(cross_layers):
            self.linear(f"cross.cross.{i}", 3 * d, 3 * d)
        self.mlp("deep", [3 * d, 200, 80])
        self.linear("head", 3 * d + 80, 1)

    def loss(self, b):
        mask = (b["hist"] != 0).to(self.dtype)
        h = self.lookup("item_id", b["hist"])
        mean = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)
        x0 = torch.cat([self.lookup("user_id", b["user"]), self.lookup("item_id", b["item"]), mean], -1)
        x = x0
        for i in range(self.cross_layers):
            x = torch.addcmul(x, x0, self.lin(f"cross.cross.{i}", x))
        logit = self.lin("head", torch.cat([x, F.relu(self.run_mlp("deep", x0, 2, F.relu))], -1))
        return bce(logit.squeeze(-1), b["click"])


HISTORY_MODES = ("top", "frozen", "all", "full")


class Em3Din(Peer):
    """models/em3_din.em3 with the joint FQF of one layer (the defaults)."""

    def __init__(self, d=64, seq=50, items=10000, users=10000, patches=8, patch_dim=48, text_len=16,
                 words=5000, queries=2, heads=4, history="top", lora=8, cic_weight=0.1, tau=0.1,
                 dtype=torch.float32):
        super().__init__(dtype)
        assert history in HISTORY_MODES, history
        self.d, self.seq, self.items, self.users = d, seq, items, users
        self.patches, self.patch_dim, self.text_len, self.words = patches, patch_dim, text_len, words
        self.queries, self.heads, self.history, self.lora = queries, heads, history, lora
        self.cic_weight, self.tau = cic_weight, tau
        self.embedding("user_id", users, d)
        self.embedding("item_id", items, d)
        self.encoder("em3.content", frozen=False)
        if history in ("top", "frozen"):
            self.encoder("em3.behaviour", frozen=True)
        if history == "top":
            self.adapter("em3.behaviour.fuse.proj", queries * d, d)
        if history == "all":
            for name, din, dout in self.encoder_linears("em3.behaviour"):
                self.adapter(name, din, dout)
        self.mlp("em3.interest.unit", [4 * d, 80, 40, 1])
        self.linear("em3.cic.content_head", d, d)
        self.linear("em3.cic.id_head", d, d)
        self.mlp("interest_id.unit", [4 * d, 80, 40, 1])
        self.mlp("head", [5 * d, 200, 80, 1])
        self.cache = None

    def encoder_linears(self, name):
        d, blk = self.d, f"{name}.fuse.blocks.0"
        return ([(f"{name}.image_proj", self.patch_dim, d)] + [(f"{blk}.attn.{p}", d, d) for p in "qkvo"]
                + [(f"{name}.fuse.proj", self.queries * d, d)])

    def encoder(self, name, frozen):
        for lname, din, dout in self.encoder_linears(name):
            self.linear(lname, din, dout, frozen)
        self.param(f"{name}.word_emb.table", (self.words, self.d), 0.02, frozen, table=True)
        self.param(f"{name}.fuse.q", (self.queries, self.d), 0.02, frozen)
        self.param(f"{name}.fuse.blocks.0.norm1.gamma", (self.d,), "ones", frozen)
        self.param(f"{name}.fuse.blocks.0.norm1.beta", (self.d,), "zeros", frozen)

    def adapter(self, name, din, dout):
        self.param(name + ".lora_a", (din, self.lora), 0.01)
        self.param(name + ".lora_b", (self.lora, dout), "zeros")

    def bind(self, image, text):
        """The item side tables (data globals image [items, P, F], text [items, T])."""
        self.image, self.text = image.to(self.dtype), text.long()

    # ---- the content encoder (em3.em3 ContentEncoder + FusionQFormer, joint style) ----

    def enc_linear(self, base, name, x, lora):
        """Linear `base + name`; with lora = adapter prefix, the base read frozen plus (x A) B
        (alpha = rank: scale 1), as LoRALinear."""
        w, b = self.p[f"{base}.{name}.w"], self.p[f"{base}.{name}.b"]
        if lora is None:
            return dense(x, w, b)
        a, bb = self.p[f"{lora}.{name}.lora_a"], self.p[f"{lora}.{name}.lora_b"]
        y = dense(x, w.detach(), b.detach())
        return y + ((x.reshape(-1, x.shape[-1]) @ a) @ bb).view_as(y)

    def fqf_queries(self, base, ids, lora=None):
        """The content encoder up to the FQF's query outputs: [..., queries, d]. `base` names the
        weights, `lora` the adapters (then every base weight is read frozen)."""
        fz = (lambda t: t.detach()) if lora else (lambda t: t)
        lead, d, h, nq = list(ids.shape), self.d, self.heads, self.queries
        img = self.enc_linear(base, "image_proj", self.image[ids], lora)           # [..., P, d]
        words = self.text[ids]
        table = self.p[f"{base}.word_emb.table"]
        txt = F.embedding(words, fz(table), sparse=table.requires_grad and not lora)
        x = torch.cat([fz(self.p[f"{base}.fuse.q"]).expand(lead + [nq, d]), img, txt], -2)
        n, t = x.shape[:-2].numel(), x.shape[-2]
        bias = torch.zeros(n, 1, 1, t, dtype=self.dtype)  # -1e9 at padded words
        bias[:, 0, 0, nq + self.patches:].masked_fill_(words.reshape(n, -1) == 0, -1e9)
        blk = f"{base}.fuse.blocks.0"
        y = self.joint_block(blk, x.reshape(n, t, d), h, bias,
                             lambda name, v: self.enc_linear(blk, name, v, lora and f"{lora}.fuse.blocks.0"), fz)
        return y[:, :nq].reshape(lead + [nq, d])

    def encode(self, base, ids, lora=None):
        """The content embedding [..., d]: the query outputs, flattened, through fuse.proj."""
        x = self.fqf_queries(base, ids, lora)
        flat = x.reshape(list(ids.shape) + [self.queries * self.d])
        return self.enc_linear(f"{base}.fuse", "proj", flat, lora and f"{lora}.fuse")

    def precompute(self, chunk=1000):
        """What em3's cache-frozen pass precomputes per item before training: under "top" the
        frozen encoder's query outputs (below the adapter), under "frozen" its embedding."""
        if self.history not in ("top", "frozen"):
            return
        f = self.fqf_queries if self.history == "top" else self.encode
        with torch.no_grad():
            ids = torch.arange(self.items)
            self.cache = torch.cat([f("em3.behaviour", ids[i:i + chunk]) for i in range(0, self.items, chunk)])

    def history_content(self, hist):
        if self.history == "top":
            x = self.cache[hist].reshape(list(hist.shape) + [self.queries * self.d])
            return self.enc_linear("em3.behaviour.fuse", "proj", x, "em3.behaviour.fuse")
        if self.history == "frozen":
            return self.cache[hist]
        if self.history == "all":
            return self.encode("em3.content", hist, lora="em3.behaviour")
        return self.encode("em3.content", hist)

    def contrastive(self, c, e):
        def l2n(x):
            return x * torch.rsqrt(torch.clamp_min((x * x).sum(-1, keepdim=True), 1e-24))
        zc, ze = l2n(self.lin("em3.cic.content_head", c)), l2n(self.lin("em3.cic.id_head", e))
        logits = (zc @ ze.T) / self.tau
        pos = (zc * ze).sum(-1) / self.tau
        return 0.5 * ((torch.logsumexp(logits, 1) - pos).mean() + (torch.logsumexp(logits, 0) - pos).mean())

    def loss(self, b):
        e = self.lookup("item_id", b["item"])
        mask = (b["hist"] != 0).to(self.dtype)
        c = self.encode("em3.content", b["item"])
        u_content = self.target_attention("em3.interest", c, self.history_content(b["hist"]), mask)
        u_id = self.target_attention("interest_id", e, self.lookup("item_id", b["hist"]), mask)
        logit = self.run_mlp("head", torch.cat([self.lookup("user_id", b["user"]), e, u_id, c, u_content], -1),
                             3, F.relu)
        return bce(logit.squeeze(-1), b["click"]) + self.cic_weight * self.contrastive(c, e)


MODELS = {"din": Din, "dcnv2": DcnV2, "em3_din": Em3Din}


def random_tables(model, gen):
    """em3's bench tables (bench/bench_util.c): image floats N(0, 1), text ids below 1000."""
    if isinstance(model, Em3Din):
        model.bind(torch.randn(model.items, model.patches, model.patch_dim, generator=gen),
                   torch.randint(0, 1000, (model.items, model.text_len), generator=gen))


def random_batch(model, batch, gen):
    """em3's bench batch: ids >= 1 (no padding), 20% positive labels."""
    return {"user": torch.randint(1, model.users, (batch,), generator=gen),
            "item": torch.randint(1, model.items, (batch,), generator=gen),
            "hist": torch.randint(1, model.items, (batch, model.seq), generator=gen),
            "click": (torch.rand(batch, generator=gen) < 0.2).to(model.dtype)}
