/* passes/cache_frozen.c — computations that are a pure function of an item id become a lookup.
 *
 * In @forward, a value is *row-wise* in an id input X (i32 with a vocabulary) when every
 * element at leading index (b, l) depends only on X[b, l], through frozen parameters, data
 * tables and constants: gathers by X, per-row arithmetic, GEMMs against frozen weights,
 * attention within a row, reshapes and reductions over the trailing (feature) axes. Such a
 * value never changes while training (its weights never do), so it is computed once per item
 * by a new function @precompute.cache.X.N over all ids (the runtime runs it before training
 * and after loading weights) into a state table cache.X.N [vocab, features...], and @forward
 * reads it by gather instead. This is what makes LoRA on top of a frozen history encoder
 * cheap: the frozen part below the adapters is neither recomputed nor kept for the backward.
 *
 * Only values whose computation includes a GEMM, attention or layer norm are cached (a plain
 * embedding lookup is already a lookup), only float values, and only when the table fits in
 * 1 GiB; a reshape or broadcast at the edge of the region is redone from the table rather
 * than cached. Runs before autodiff; @predict is re-derived from the new @forward. */
#include <stdlib.h>
#include <string.h>

#include "ir/builder.h"
#include "passes.h"

typedef enum { K_CONST, K_ROW, K_OTHER } klass;

typedef struct {
    const em3_func *f;
    klass *k;
    int *src;        /* K_ROW: the id input */
    bool *expensive; /* the computation includes a GEMM, attention or layer norm */
} analysis;

static const em3_node *N(const analysis *a, int v) { return &a->f->node[v]; }
static int lead(const analysis *a, int v) { return N(a, a->src[v])->type.rank; }

/* The first r dimensions of value v are those of the id input src. */
static bool leads_with(const analysis *a, const em3_type *t, int src) {
    const em3_type *x = &N(a, src)->type;
    if (t->rank < x->rank) return false;
    for (int i = 0; i < x->rank; i++)
        if (t->dim[i] != x->dim[i]) return false;
    return true;
}

/* Whether op n, with its operands row-wise in `src` (r leading dims) or constant, acts on each
 * leading index on its own. */
static bool per_row(const analysis *a, const em3_node *n, int src) {
    int r = N(a, src)->type.rank;
    const em3_type *t = &n->type;
    switch (em3_op_kind_of(n->op)) {
    case EM3_KIND_ELEMWISE: return leads_with(a, t, src);
    case EM3_KIND_GATHER: /* rows of a constant table by row-wise ids */
        return n->op == EM3_OP_GATHER && a->k[n->in[0]] == K_CONST && a->k[n->in[1]] == K_ROW;
    default: break;
    }
    switch (n->op) {
    case EM3_OP_RESHAPE:
    case EM3_OP_BROADCAST:
        return leads_with(a, t, src) && (a->k[n->in[0]] == K_CONST || leads_with(a, &N(a, n->in[0])->type, src));
    case EM3_OP_TRANSPOSE: {
        const int64_t *p = em3_node_list(n, "perm", NULL);
        for (int i = 0; i < r; i++)
            if (p[i] != i) return false;
        return true;
    }
    case EM3_OP_CONCAT:
    case EM3_OP_SLICE:
    case EM3_OP_SOFTMAX:
    case EM3_OP_LOG_SOFTMAX:
    case EM3_OP_LOGSUMEXP: return em3_node_i(n, "axis") >= r && leads_with(a, t, src);
    case EM3_OP_SUM:
    case EM3_OP_MEAN:
    case EM3_OP_MAX: {
        int na;
        const int64_t *axes = em3_node_list(n, "axes", &na);
        for (int i = 0; i < na; i++)
            if (axes[i] < r) return false;
        return leads_with(a, t, src);
    }
    case EM3_OP_LAYER_NORM: return t->rank - 1 >= r;
    case EM3_OP_MATMUL: { /* the contracted and row/column dims must all be trailing */
        for (int i = 0; i < 2; i++) {
            const em3_type *o = &N(a, n->in[i])->type;
            if (a->k[n->in[i]] == K_ROW && o->rank - 2 < r && !(i == 0 && o->rank - 1 >= r && !em3_node_i(n, "ta") &&
                                                                a->k[n->in[1]] == K_CONST && N(a, n->in[1])->type.rank == 2))
                return false;
        }
        return leads_with(a, t, src);
    }
    case EM3_OP_ATTENTION:
        for (int i = 0; i < n->n_in; i++)
            if (a->k[n->in[i]] == K_ROW && N(a, n->in[i])->type.rank - 2 < r) return false;
        return leads_with(a, t, src);
    default: return false;
    }
}

static void classify(analysis *a) {
    const em3_func *f = a->f;
    for (int v = 0; v < f->n_node; v++) {
        const em3_node *n = &f->node[v];
        a->src[v] = -1;
        a->expensive[v] = false;
        if (n->op == EM3_OP_INPUT) {
            bool ids = n->type.dtype == EM3_DTYPE_I32 && em3_node_i(n, "vocab") > 0 && !em3_node_i(n, "label");
            a->k[v] = ids ? K_ROW : K_OTHER;
            a->src[v] = ids ? v : -1;
            continue;
        }
        if (n->op == EM3_OP_PARAM) {
            int g = em3_module_find_global(f->mod, n->attr[0].s);
            em3_global_kind gk = f->mod->global[g].kind;
            a->k[v] = gk == EM3_GLOBAL_FROZEN || gk == EM3_GLOBAL_DATA ? K_CONST : K_OTHER;
            continue;
        }
        if (n->op == EM3_OP_CONST) {
            a->k[v] = K_CONST;
            continue;
        }
        if (n->op == EM3_OP_SPMM) { /* a graph may change between epochs (edge dropout) */
            a->k[v] = K_OTHER;
            continue;
        }
        klass k = K_CONST;
        int src = -1;
        for (int i = 0; i < n->n_in && k != K_OTHER; i++) {
            int x = n->in[i];
            a->expensive[v] |= a->expensive[x];
            if (a->k[x] == K_OTHER || (a->k[x] == K_ROW && src >= 0 && a->src[x] != src)) k = K_OTHER;
            else if (a->k[x] == K_ROW) k = K_ROW, src = a->src[x];
        }
        if (k == K_ROW && !per_row(a, n, src)) k = K_OTHER;
        a->k[v] = k;
        a->src[v] = k == K_ROW ? src : -1;
        a->expensive[v] |= n->op == EM3_OP_MATMUL || n->op == EM3_OP_ATTENTION || n->op == EM3_OP_LAYER_NORM;
    }
}

/* A row-wise value worth caching whose result leaves the row-wise region. */
static bool frontier(const analysis *a, int v, const bool *leaves) {
    const em3_node *n = N(a, v);
    if (a->k[v] != K_ROW || !a->expensive[v] || !leaves[v] || n->type.dtype != EM3_DTYPE_F32) return false;
    int64_t vocab = em3_node_i(N(a, a->src[v]), "vocab"), row = 1;
    for (int i = lead(a, v); i < n->type.rank; i++) row *= n->type.dim[i];
    return vocab * row * 4 <= ((int64_t)1 << 30);
}

int em3_pass_cache_frozen(em3_module *m, const em3_pass_ctx *ctx) {
    (void)ctx;
    em3_func *f = em3_module_find_func(m, "forward");
    if (!f || em3_module_find_func(m, "train")) return 0; /* before autodiff only */
    int n = f->n_node ? f->n_node : 1;
    analysis a = {f, em3_xmalloc(sizeof(klass) * (size_t)n), em3_xmalloc(sizeof(int) * (size_t)n),
                  em3_xmalloc(sizeof(bool) * (size_t)n)};
    classify(&a);
    bool *leaves = em3_xcalloc((size_t)n, sizeof(bool)); /* used by something not row-wise */
    for (int i = 0; i < f->n_node; i++)
        for (int k = 0; k < f->node[i].n_in; k++)
            if (a.k[i] != K_ROW) leaves[f->node[i].in[k]] = true;
    for (int i = 0; i < f->n_out; i++) leaves[f->out[i].value] = true;
    /* a reshape or broadcast of a row-wise value costs nothing to redo from the table: cache
       its operand (a [vocab, d] table, not [vocab, L, d] of L copies) */
    for (int v = f->n_node - 1; v >= 0; v--) {
        const em3_node *nd = &f->node[v];
        if (leaves[v] && a.k[v] == K_ROW && (nd->op == EM3_OP_BROADCAST || nd->op == EM3_OP_RESHAPE) &&
            a.k[nd->in[0]] == K_ROW && a.src[nd->in[0]] == a.src[v]) {
            leaves[v] = false;
            leaves[nd->in[0]] = true;
        }
    }
    int n_orig = f->n_node, cached = 0;
    int *redirect = em3_xmalloc(sizeof(int) * (size_t)n);
    for (int v = 0; v < n_orig; v++) redirect[v] = v;
    for (int v = 0; v < n_orig; v++) {
        if (!frontier(&a, v, leaves)) continue;
        const em3_node x = f->node[a.src[v]];
        const em3_type t = f->node[v].type;
        int64_t dims[EM3_MAX_RANK];
        dims[0] = em3_node_i(&x, "vocab");
        int rank = 1;
        for (int i = x.type.rank; i < t.rank; i++) dims[rank++] = t.dim[i];
        const char *gname = em3_arena_printf(m->arena, "cache.%s.%d", em3_node_s(&x, "name"), cached);
        EM3_ASSERT(em3_module_add_global(m, gname, em3_type_make(EM3_DTYPE_F32, rank, dims), EM3_GLOBAL_STATE,
                                         (em3_init){EM3_INIT_ZEROS, 0}, f->node[v].loc) >= 0,
                   "global %s exists", gname);
        /* @precompute.cache.X.N: the value's own computation, as a function of X */
        const char *out = "value";
        em3_func_add_output(f, out, v);
        em3_func *pre = em3_func_slice(f, em3_arena_printf(m->arena, "precompute.%s", gname), &out, 1);
        em3_func_remove_output(f, out);
        (void)pre;
        em3_builder b = {f, f->node[v].loc};
        redirect[v] = em3_b_gather(&b, em3_b_param(&b, gname), a.src[v]);
        cached++;
    }
    if (cached) {
        for (int i = 0; i < n_orig; i++) { /* readers of a cached value read the table instead */
            em3_node *nd = &f->node[i];
            bool change = false;
            for (int k = 0; k < nd->n_in; k++) change |= redirect[nd->in[k]] != nd->in[k];
            if (!change) continue;
            int *in = em3_arena_alloc(m->arena, sizeof(int) * (size_t)nd->n_in);
            for (int k = 0; k < nd->n_in; k++) in[k] = redirect[nd->in[k]];
            nd->in = in;
        }
        for (int i = 0; i < f->n_out; i++)
            if (f->out[i].value < n_orig) f->out[i].value = redirect[f->out[i].value];
        em3_func_toposort(f);
        /* @predict: the outputs of the new @forward, except the loss */
        em3_func *old = em3_module_find_func(m, "predict");
        if (old) {
            const char **names = em3_xmalloc(sizeof(char *) * (size_t)(old->n_out ? old->n_out : 1));
            int k = 0;
            for (int i = 0; i < old->n_out; i++) names[k++] = old->out[i].name;
            em3_module_remove_func(m, old);
            em3_func_slice(f, "predict", names, k);
            free(names);
        }
    }
    free(redirect);
    free(leaves);
    free(a.k);
    free(a.src);
    free(a.expensive);
    return cached > 0;
}
