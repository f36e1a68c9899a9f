/* passes/dedup_rows.c — what is a function of an item is computed once per distinct item of
 * the batch.
 *
 * In @forward, a value row-wise in an id input X (passes/rowwise.h, trainable weights counting
 * as constant within a step) is the same for every occurrence of an id: the content encoding
 * of a target item that several rows of the batch share, of an item that a history holds
 * twice or that many users' histories hold. For each such X with a row-wise value worth it
 * (a GEMM, attention or layer norm in its computation) leaving the region, the pass writes
 *     ids = reshape(X, [B*k]);  u = unique(ids) : i32[Us];  pos = index_of(ids, u)
 * computes the region again with X's rows replaced by u ([B, 50, ...] becomes [Us, ...]), and
 * gives every occurrence its row: gather(value', pos), reshaped to the value's type. Autodiff
 * then differentiates through that gather (a scatter-add of the occurrences' gradients into
 * the distinct rows), so the backward pass too runs once per distinct item. The old region is
 * left to dce. Runs after cache-frozen (a cached table is one more constant here) and before
 * autodiff; @predict is re-derived from the new @forward. */
#include <stdlib.h>
#include <string.h>

#include "ir/builder.h"
#include "passes.h"
#include "rowwise.h"

typedef struct {
    em3_builder b;
    const em3_rowwise *a;
    int r, sym; /* the id input's rank, the symbol of its distinct ids */
    int *map;   /* per original value: its computation over the distinct ids, or -1 */
} dedup;

/* Whether the region of id input x gathers from a trainable table: its gradient is then a
 * sparse (ids, rows) pair over the distinct ids. */
static bool gathers_trainable(const em3_rowwise *a, int x) {
    const em3_func *f = a->f;
    for (int v = x + 1; v < a->n; v++) {
        const em3_node *n = &f->node[v];
        if (n->op != EM3_OP_GATHER || a->src[v] != x || f->node[n->in[0]].op != EM3_OP_PARAM) continue;
        int g = em3_module_find_global(f->mod, f->node[n->in[0]].attr[0].s);
        if (f->mod->global[g].kind == EM3_GLOBAL_PARAM) return true;
    }
    return false;
}

/* dims [d0 .. d(r-1), rest...] → [Us, rest...] */
static int retype_dims(const dedup *d, const int64_t *dims, int n, int64_t *out) {
    out[0] = em3_dim_make(d->sym, 1);
    for (int i = d->r; i < n; i++) out[i - d->r + 1] = dims[i];
    return n - d->r + 1;
}

/* A constant operand of a row-wise node, lined up with the node's new result: its leading
 * part (the dims facing X's rows, where em3_rowwise_const_ok found it the same for every
 * row) becomes one dimension, 1 or Us. */
static int adapt_const(dedup *d, int o, int lead) {
    const em3_node *n = &d->b.f->node[o];
    if (lead == 0) return o;
    int64_t dims[EM3_MAX_RANK];
    em3_type t = n->type;
    bool ones = true;
    for (int i = 0; i < lead; i++) ones &= t.dim[i] == 1;
    dims[0] = ones ? 1 : em3_dim_make(d->sym, 1);
    for (int i = lead; i < t.rank; i++) dims[i - lead + 1] = t.dim[i];
    int rank = t.rank - lead + 1;
    if (ones) return em3_b_reshape(&d->b, o, dims, rank);
    em3_type to = em3_type_make(t.dtype, rank, dims);
    if (n->op == EM3_OP_CONST) return em3_b_fill(&d->b, em3_node_f(n, "value"), &to);
    EM3_ASSERT(n->op == EM3_OP_BROADCAST, "constant operand %%%d is %s", o, em3_op_name(n->op));
    int x = n->in[0];
    const em3_type *xt = &d->b.f->node[x].type;
    int drop = lead - (t.rank - xt->rank); /* the source's own dims facing the rows: all 1 */
    if (drop > 0) {
        int64_t xd[EM3_MAX_RANK];
        for (int i = drop; i < xt->rank; i++) xd[i - drop] = xt->dim[i];
        x = em3_b_reshape(&d->b, x, xd, xt->rank - drop);
    }
    return em3_b_broadcast(&d->b, x, &to);
}

/* Value v computed over the distinct ids. */
static int over_distinct(dedup *d, int v) {
    if (d->map[v] >= 0) return d->map[v];
    em3_node p = d->b.f->node[v]; /* a copy: the function grows below */
    int in[64];
    EM3_ASSERT(p.n_in <= 64, "%%%d has %d operands", v, p.n_in);
    for (int k = 0; k < p.n_in; k++) {
        int o = p.in[k];
        in[k] = d->a->k[o] == EM3_ROW_OF ? over_distinct(d, o) : adapt_const(d, o, em3_rowwise_facing(d->b.f, &p, k, d->r));
    }
    int64_t list[EM3_MAX_RANK];
    int nl, shift = d->r - 1;
    const int64_t *l;
    if (em3_op_attr_slot(p.op, "shape") >= 0) {
        l = em3_node_list(&p, "shape", &nl);
        em3_node_set_list(&p, "shape", list, retype_dims(d, l, nl, list));
    }
    if (em3_op_attr_slot(p.op, "perm") >= 0) {
        l = em3_node_list(&p, "perm", &nl);
        list[0] = 0;
        for (int i = d->r; i < nl; i++) list[i - d->r + 1] = l[i] - shift;
        em3_node_set_list(&p, "perm", list, nl - shift);
    }
    if (em3_op_attr_slot(p.op, "axes") >= 0) {
        l = em3_node_list(&p, "axes", &nl);
        for (int i = 0; i < nl; i++) list[i] = l[i] - shift;
        em3_node_set_list(&p, "axes", list, nl);
    }
    if (em3_op_attr_slot(p.op, "axis") >= 0) em3_node_set_i(&p, "axis", em3_node_i(&p, "axis") - shift);
    return d->map[v] = em3_b_node(&d->b, &p, in, p.n_in);
}

int em3_pass_dedup_rows(em3_module *m, const em3_pass_ctx *ctx) {
    /* Data-parallel training returns sparse gradients from @train, sized by B: a pair over
       distinct ids (Us rows) could only leave it as a dense gradient, which would make a lazy
       optimizer's table update dense. Such regions stay per occurrence there. */
    const em3_optim_config *oc = ctx && ctx->opt ? ctx->opt->optim : NULL;
    bool keep_sparse = oc && oc->separate_update && oc->lazy;
    em3_func *f = em3_module_find_func(m, "forward");
    if (!f || em3_module_find_func(m, "train")) return 0; /* before autodiff only */
    em3_rowwise a;
    em3_rowwise_analyse(&a, f, true);
    int n_orig = f->n_node, n = n_orig ? n_orig : 1, sym = 0;
    int *redirect = em3_xmalloc(sizeof(int) * (size_t)n), *map = em3_xmalloc(sizeof(int) * (size_t)n);
    for (int v = 0; v < n_orig; v++) redirect[v] = v;
    for (int x = 0; x < n_orig && sym + 1 < EM3_MAX_SYMBOLS; x++) {
        if (f->node[x].op != EM3_OP_INPUT || a.k[x] != EM3_ROW_OF) continue;
        bool any = false;
        for (int v = x + 1; v < n_orig && !any; v++) any = a.src[v] == x && em3_rowwise_frontier(&a, v);
        int64_t flat_dim;
        const em3_type xt = f->node[x].type;
        if (!any || !em3_dims_product(xt.dim, xt.rank, &flat_dim) || em3_dim_sym(flat_dim) != 0) continue;
        if (keep_sparse && gathers_trainable(&a, x)) continue;
        dedup d = {{f, f->node[x].loc}, &a, xt.rank, ++sym, map};
        for (int v = 0; v < n_orig; v++) map[v] = -1;
        int ids = em3_b_reshape(&d.b, x, &flat_dim, 1);
        em3_node un = em3_node_proto(EM3_OP_UNIQUE, d.b.loc);
        em3_node_set_i(&un, "sym", sym);
        map[x] = em3_b_node(&d.b, &un, &ids, 1);
        em3_node io = em3_node_proto(EM3_OP_INDEX_OF, d.b.loc);
        int pos = em3_b_node(&d.b, &io, (int[]){ids, map[x]}, 2);
        for (int v = x + 1; v < n_orig; v++) {
            if (a.src[v] != x || !em3_rowwise_frontier(&a, v)) continue;
            d.b.loc = f->node[v].loc;
            const em3_type vt = f->node[v].type;
            int rows = em3_b_gather(&d.b, over_distinct(&d, v), pos);
            redirect[v] = em3_b_reshape(&d.b, rows, vt.dim, vt.rank);
        }
    }
    if (sym) em3_rowwise_redirect(m, f, redirect, n_orig);
    free(redirect);
    free(map);
    em3_rowwise_free(&a);
    return sym > 0;
}
