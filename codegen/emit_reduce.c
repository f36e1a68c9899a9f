/* codegen/emit_reduce.c — reductions (sum, mean, max), numel, the softmax family and layer
 * norm with its gradient. Sums are accumulated into the result with `reassoc` so that LLVM
 * may vectorise them (the --strict-fp switch turns that off); maxima use llvm.maximum, which
 * propagates NaN as the interpreter does. */
#include <math.h>

#include "cg.h"

typedef struct {
    em3_op op;
} red_ctx;

static void red_body(em3_cg *cg, void *vctx, LLVMValueRef *off) {
    red_ctx *c = vctx;
    LLVMValueRef x = cg_load(cg, EM3_DTYPE_F32, cg_kparam(cg, 1), off[0]);
    LLVMValueRef acc = cg_load(cg, EM3_DTYPE_F32, cg_kparam(cg, 0), off[1]);
    LLVMValueRef v;
    if (c->op == EM3_OP_MAX) {
        v = cg_intrinsic2(cg, "llvm.maximum", acc, x);
    } else {
        v = LLVMBuildFAdd(cg->b, acc, x, "");
        cg_reassoc(cg, v);
    }
    cg_store(cg, EM3_DTYPE_F32, cg_kparam(cg, 0), off[1], v);
}

static void i32_body(em3_cg *cg, void *vctx, LLVMValueRef *off) {
    red_ctx *c = vctx;
    LLVMValueRef x = cg_load(cg, EM3_DTYPE_I32, cg_kparam(cg, 1), off[0]);
    LLVMValueRef acc = cg_load(cg, EM3_DTYPE_I32, cg_kparam(cg, 0), off[1]);
    LLVMValueRef v = c->op == EM3_OP_MAX
                         ? LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSGT, x, acc, ""), x, acc, "")
                         : LLVMBuildAdd(cg->b, acc, x, "");
    cg_store(cg, EM3_DTYPE_I32, cg_kparam(cg, 0), off[1], v);
}

/* x reduced over `axes` into out: out starts at the identity, then every element of x is
 * folded into out at its position with the reduced axes set to 0 (stride 0). */
void cg_emit_reduce(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    const em3_type *xt = &cg->f->node[n->in[0]].type;
    em3_type kept = *xt;
    int na;
    const int64_t *axes = em3_node_list(n, "axes", &na);
    for (int i = 0; i < na; i++) kept.dim[axes[i]] = 1;
    bool is_int = xt->dtype == EM3_DTYPE_I32;
    cg_kernel_begin(cg, id, em3_op_name(n->op), 2);
    LLVMValueRef count = cg_numel(cg, &kept);
    cg_loop init = cg_loop_begin(cg, count, "init");
    LLVMValueRef start = is_int ? (n->op == EM3_OP_MAX ? LLVMConstInt(cg->i32, (unsigned long long)INT32_MIN, 1)
                                                       : LLVMConstInt(cg->i32, 0, 0))
                                : cg_f32(cg, n->op == EM3_OP_MAX ? -INFINITY : 0.0);
    cg_store(cg, xt->dtype, cg_kparam(cg, 0), init.i, start);
    cg_loop_end(cg, &init);
    const em3_type *types[2] = {xt, &kept};
    red_ctx c = {n->op};
    cg_walk(cg, xt, types, NULL, 2, is_int ? i32_body : red_body, &c);
    if (n->op == EM3_OP_MEAN) {
        LLVMValueRef total = cg_numel(cg, xt);
        LLVMValueRef inv = LLVMBuildFDiv(cg->b, cg_f32(cg, 1.0),
                                         LLVMBuildFDiv(cg->b, LLVMBuildSIToFP(cg->b, total, cg->f32, ""),
                                                       LLVMBuildSIToFP(cg->b, count, cg->f32, ""), ""), "");
        cg_loop l = cg_loop_begin(cg, count, "mean");
        LLVMValueRef v = cg_load(cg, EM3_DTYPE_F32, cg_kparam(cg, 0), l.i);
        cg_store(cg, EM3_DTYPE_F32, cg_kparam(cg, 0), l.i, LLVMBuildFMul(cg->b, v, inv, ""));
        cg_loop_end(cg, &l);
    }
    int vals[2] = {id, n->in[0]};
    cg_kernel_end(cg, vals, 2);
}

void cg_emit_numel(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    const em3_type *xt = &cg->f->node[n->in[0]].type;
    int na;
    const int64_t *axes = em3_node_list(n, "axes", &na);
    cg_kernel_begin(cg, id, "numel", 1);
    LLVMValueRef c = cg_i64(cg, 1);
    for (int i = 0; i < na; i++) c = LLVMBuildNSWMul(cg->b, c, cg_dim(cg, xt, (int)axes[i]), "");
    cg_store(cg, EM3_DTYPE_F32, cg_kparam(cg, 0), cg_i64(cg, 0), LLVMBuildSIToFP(cg->b, c, cg->f32, ""));
    cg_kernel_end(cg, &id, 1);
}

/* A tensor seen as [outer, n, inner] around `axis`; the kernel loops over outer and inner and
 * hands each row (n elements `inner` apart) to a row function. */
typedef struct {
    LLVMValueRef outer, inner, n;
} rows3;

static rows3 split_rows(em3_cg *cg, const em3_type *t, int axis) {
    rows3 r = {cg_i64(cg, 1), cg_i64(cg, 1), cg_dim(cg, t, axis)};
    for (int d = 0; d < axis; d++) r.outer = LLVMBuildNSWMul(cg->b, r.outer, cg_dim(cg, t, d), "");
    for (int d = axis + 1; d < t->rank; d++) r.inner = LLVMBuildNSWMul(cg->b, r.inner, cg_dim(cg, t, d), "");
    return r;
}

/* max and Σ exp(x − max) over a row */
static void row_max_sumexp(em3_cg *cg, LLVMValueRef x, LLVMValueRef base, LLVMValueRef step,
                           LLVMValueRef n, LLVMValueRef *max, LLVMValueRef *sum) {
    LLVMValueRef slot_m = cg_alloca(cg, cg->f32), slot_s = cg_alloca(cg, cg->f32);
    LLVMBuildStore(cg->b, cg_f32(cg, -INFINITY), slot_m);
    LLVMBuildStore(cg->b, cg_f32(cg, 0), slot_s);
    cg_loop l = cg_loop_begin(cg, n, "max");
    LLVMValueRef at = LLVMBuildNSWAdd(cg->b, base, LLVMBuildNSWMul(cg->b, l.i, step, ""), "");
    LLVMValueRef m = LLVMBuildLoad2(cg->b, cg->f32, slot_m, "");
    LLVMBuildStore(cg->b, cg_intrinsic2(cg, "llvm.maximum", m, cg_load(cg, EM3_DTYPE_F32, x, at)), slot_m);
    cg_loop_end(cg, &l);
    *max = LLVMBuildLoad2(cg->b, cg->f32, slot_m, "");
    cg_loop s = cg_loop_begin(cg, n, "sumexp");
    at = LLVMBuildNSWAdd(cg->b, base, LLVMBuildNSWMul(cg->b, s.i, step, ""), "");
    LLVMValueRef e = cg_exp(cg, LLVMBuildFSub(cg->b, cg_load(cg, EM3_DTYPE_F32, x, at), *max, ""));
    LLVMValueRef acc = LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, cg->f32, slot_s, ""), e, "");
    cg_reassoc(cg, acc);
    LLVMBuildStore(cg->b, acc, slot_s);
    cg_loop_end(cg, &s);
    *sum = LLVMBuildLoad2(cg->b, cg->f32, slot_s, "");
}

void cg_emit_softmax(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    const em3_type *xt = &cg->f->node[n->in[0]].type;
    int axis = (int)em3_node_i(n, "axis");
    cg_kernel_begin(cg, id, em3_op_name(n->op), 2);
    LLVMValueRef x = cg_kparam(cg, 1), out = cg_kparam(cg, 0);
    rows3 r = split_rows(cg, xt, axis);
    cg_loop lo = cg_loop_begin(cg, r.outer, "outer");
    cg_loop li = cg_loop_begin(cg, r.inner, "inner");
    LLVMValueRef base = LLVMBuildNSWAdd(cg->b, LLVMBuildNSWMul(cg->b, LLVMBuildNSWMul(cg->b, lo.i, r.n, ""), r.inner, ""), li.i, "");
    LLVMValueRef m, s;
    row_max_sumexp(cg, x, base, r.inner, r.n, &m, &s);
    if (n->op == EM3_OP_LOGSUMEXP) {
        LLVMValueRef at = LLVMBuildNSWAdd(cg->b, LLVMBuildNSWMul(cg->b, lo.i, r.inner, ""), li.i, "");
        cg_store(cg, EM3_DTYPE_F32, out, at, LLVMBuildFAdd(cg->b, m, cg_log(cg, s), ""));
    } else {
        /* softmax: e^(x−m)·(1/s); log_softmax: (x − m) − log s, whose first difference is
         * exact near the maximum, where m + log s rounded first would lose the result */
        LLVMValueRef shift = n->op == EM3_OP_SOFTMAX ? LLVMBuildFDiv(cg->b, cg_f32(cg, 1), s, "") : cg_log(cg, s);
        cg_loop l = cg_loop_begin(cg, r.n, "row");
        LLVMValueRef at = LLVMBuildNSWAdd(cg->b, base, LLVMBuildNSWMul(cg->b, l.i, r.inner, ""), "");
        LLVMValueRef v = LLVMBuildFSub(cg->b, cg_load(cg, EM3_DTYPE_F32, x, at), m, "");
        v = n->op == EM3_OP_SOFTMAX ? LLVMBuildFMul(cg->b, cg_exp(cg, v), shift, "") : LLVMBuildFSub(cg->b, v, shift, "");
        cg_store(cg, EM3_DTYPE_F32, out, at, v);
        cg_loop_end(cg, &l);
    }
    cg_loop_end(cg, &li);
    cg_loop_end(cg, &lo);
    int vals[2] = {id, n->in[0]};
    cg_kernel_end(cg, vals, 2);
}

/* Σ f(k) over a row of n, with reassociation; f builds the term for index k. */
typedef LLVMValueRef row_term(em3_cg *cg, void *ctx, LLVMValueRef k);

static LLVMValueRef row_sum(em3_cg *cg, LLVMValueRef n, row_term *term, void *ctx) {
    LLVMValueRef slot = cg_alloca(cg, cg->f32);
    LLVMBuildStore(cg->b, cg_f32(cg, 0), slot);
    cg_loop l = cg_loop_begin(cg, n, "sum");
    LLVMValueRef acc = LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, cg->f32, slot, ""), term(cg, ctx, l.i), "");
    cg_reassoc(cg, acc);
    LLVMBuildStore(cg->b, acc, slot);
    cg_loop_end(cg, &l);
    return LLVMBuildLoad2(cg->b, cg->f32, slot, "");
}

typedef struct {
    LLVMValueRef x, dy, gamma, row, mu, rstd;
    int what; /* 0: x, 1: (x-mu)^2, 2: dy*gamma, 3: dy*gamma*xhat */
} ln_ctx;

static LLVMValueRef ln_term(em3_cg *cg, void *vctx, LLVMValueRef k) {
    ln_ctx *c = vctx;
    LLVMValueRef at = LLVMBuildNSWAdd(cg->b, c->row, k, "");
    LLVMValueRef x = cg_load(cg, EM3_DTYPE_F32, c->x, at);
    if (c->what == 0) return x;
    LLVMValueRef d = LLVMBuildFSub(cg->b, x, c->mu, "");
    if (c->what == 1) return LLVMBuildFMul(cg->b, d, d, "");
    LLVMValueRef g = LLVMBuildFMul(cg->b, cg_load(cg, EM3_DTYPE_F32, c->dy, at), cg_load(cg, EM3_DTYPE_F32, c->gamma, k), "");
    if (c->what == 2) return g;
    return LLVMBuildFMul(cg->b, g, LLVMBuildFMul(cg->b, d, c->rstd, ""), "");
}

/* layer_norm(x, γ, β) and its x-gradient share the per-row statistics. */
static void layer_norm_kernel(em3_cg *cg, int id, bool grad) {
    const em3_node *n = &cg->f->node[id];
    const em3_type *xt = &cg->f->node[n->in[0]].type;
    double eps = em3_node_f(n, "eps");
    cg_kernel_begin(cg, id, em3_op_name(n->op), 4);
    LLVMValueRef out = cg_kparam(cg, 0);
    ln_ctx c = {.x = cg_kparam(cg, 1), .gamma = cg_kparam(cg, 2), .dy = cg_kparam(cg, 3)};
    LLVMValueRef width = cg_dim(cg, xt, xt->rank - 1);
    LLVMValueRef rows = LLVMBuildSDiv(cg->b, cg_numel(cg, xt), width, "");
    LLVMValueRef fw = LLVMBuildSIToFP(cg->b, width, cg->f32, "");
    cg_loop r = cg_loop_begin(cg, rows, "rows");
    c.row = LLVMBuildNSWMul(cg->b, r.i, width, "");
    c.what = 0;
    c.mu = LLVMBuildFDiv(cg->b, row_sum(cg, width, ln_term, &c), fw, "");
    c.what = 1;
    LLVMValueRef var = LLVMBuildFDiv(cg->b, row_sum(cg, width, ln_term, &c), fw, "");
    c.rstd = LLVMBuildFDiv(cg->b, cg_f32(cg, 1),
                           cg_intrinsic1(cg, "llvm.sqrt", LLVMBuildFAdd(cg->b, var, cg_f32(cg, eps), "")), "");
    LLVMValueRef mg = NULL, mgx = NULL;
    if (grad) {
        c.what = 2;
        mg = LLVMBuildFDiv(cg->b, row_sum(cg, width, ln_term, &c), fw, "");
        c.what = 3;
        mgx = LLVMBuildFDiv(cg->b, row_sum(cg, width, ln_term, &c), fw, "");
    }
    cg_loop k = cg_loop_begin(cg, width, "cols");
    LLVMValueRef at = LLVMBuildNSWAdd(cg->b, c.row, k.i, "");
    LLVMValueRef xhat = LLVMBuildFMul(cg->b, LLVMBuildFSub(cg->b, cg_load(cg, EM3_DTYPE_F32, c.x, at), c.mu, ""), c.rstd, "");
    LLVMValueRef gk = cg_load(cg, EM3_DTYPE_F32, c.gamma, k.i), v;
    if (grad) { /* rstd·(dy·γ − mean(dy·γ) − x̂·mean(dy·γ·x̂)) */
        LLVMValueRef g = LLVMBuildFMul(cg->b, cg_load(cg, EM3_DTYPE_F32, c.dy, at), gk, "");
        v = LLVMBuildFMul(cg->b, c.rstd,
                          LLVMBuildFSub(cg->b, LLVMBuildFSub(cg->b, g, mg, ""), LLVMBuildFMul(cg->b, xhat, mgx, ""), ""), "");
    } else {
        v = LLVMBuildFAdd(cg->b, LLVMBuildFMul(cg->b, xhat, gk, ""), cg_load(cg, EM3_DTYPE_F32, c.dy, k.i), "");
    }
    cg_store(cg, EM3_DTYPE_F32, out, at, v);
    cg_loop_end(cg, &k);
    cg_loop_end(cg, &r);
    /* layer_norm(x, γ, β): β takes the third slot; layer_norm_grad(x, γ, dy): dy does */
    int vals[4] = {id, n->in[0], n->in[1], n->in[2]};
    cg_kernel_end(cg, vals, 4);
}

void cg_emit_layer_norm(em3_cg *cg, int id) { layer_norm_kernel(cg, id, false); }
void cg_emit_layer_norm_grad(em3_cg *cg, int id) { layer_norm_kernel(cg, id, true); }
