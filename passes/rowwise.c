/* passes/rowwise.c — the row-wise analysis (see rowwise.h). A value is row-wise in an id input
 * X of rank r when it begins with X's r dimensions and its element at leading index (b, l)
 * depends on X[b, l] alone: gathers by X, per-row arithmetic, GEMMs against constant weights,
 * attention within a row, reshapes and reductions over the trailing (feature) axes. A constant
 * operand may take part only where it is the same for every row (see const_ok). */
#include <stdlib.h>
#include <string.h>

#include "rowwise.h"

static const em3_node *N(const em3_rowwise *a, int v) { return &a->f->node[v]; }
int em3_rowwise_lead(const em3_rowwise *a, int v) { return N(a, a->src[v])->type.rank; }

bool em3_rowwise_leads_with(const em3_rowwise *a, const em3_type *t, int src) {
    const em3_type *x = &N(a, src)->type;
    if (t->rank < x->rank) return false;
    for (int i = 0; i < x->rank; i++)
        if (t->dim[i] != x->dim[i]) return false;
    return true;
}

int em3_rowwise_facing(const em3_func *f, const em3_node *n, int k, int r) {
    const em3_type *o = &f->node[n->in[k]].type, *t = &n->type;
    int oa = o->rank, ta = t->rank;
    if (n->op == EM3_OP_MATMUL || n->op == EM3_OP_ATTENTION) oa -= 2, ta -= 2;
    if ((n->op == EM3_OP_LORA_MATMUL && k > 0) || (n->op == EM3_OP_GATHER && k == 0)) return 0;
    int c = oa - (ta - r); /* operand dim j faces result dim j + ta - oa */
    return c < 0 ? 0 : c > oa ? oa : c;
}

static bool all_one(const int64_t *d, int n) {
    for (int i = 0; i < n; i++)
        if (d[i] != 1) return false;
    return true;
}

bool em3_rowwise_const_ok(const em3_rowwise *a, const em3_node *n, int k, int r) {
    int c = em3_rowwise_facing(a->f, n, k, r);
    const em3_node *o = N(a, n->in[k]);
    if (c == 0 || all_one(o->type.dim, c) || o->op == EM3_OP_CONST) return true;
    if (o->op != EM3_OP_BROADCAST) return false;
    /* a broadcast is the same along the dimensions its source lacks or has as 1 */
    const em3_type *x = &N(a, o->in[0])->type;
    int c_src = c - (o->type.rank - x->rank);
    return c_src <= 0 || all_one(x->dim, c_src);
}


/* Whether op n, with its operands row-wise in `src` (r leading dims) or constant, acts on each
 * leading index on its own. */
static bool per_row(const em3_rowwise *a, const em3_node *n, int src) {
    int r = N(a, src)->type.rank;
    const em3_type *t = &n->type;
    for (int k = 0; k < n->n_in; k++)
        if (a->k[n->in[k]] == EM3_ROW_CONST && !em3_rowwise_const_ok(a, n, k, r)) return false;
    switch (em3_op_kind_of(n->op)) {
    case EM3_KIND_ELEMWISE: return em3_rowwise_leads_with(a, t, src);
    case EM3_KIND_GATHER: /* rows of a constant table by row-wise ids */
        return n->op == EM3_OP_GATHER && a->k[n->in[0]] == EM3_ROW_CONST && a->k[n->in[1]] == EM3_ROW_OF;
    default: break;
    }
    switch (n->op) {
    case EM3_OP_RESHAPE:
    case EM3_OP_BROADCAST:
        return em3_rowwise_leads_with(a, t, src) && (a->k[n->in[0]] == EM3_ROW_CONST || em3_rowwise_leads_with(a, &N(a, n->in[0])->type, src));
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
    case EM3_OP_LOGSUMEXP: return em3_node_i(n, "axis") >= r && em3_rowwise_leads_with(a, t, src);
    case EM3_OP_SUM:
    case EM3_OP_MEAN:
    case EM3_OP_MAX: {
        int na;
        const int64_t *axes = em3_node_list(n, "axes", &na);
        for (int i = 0; i < na; i++)
            if (axes[i] < r) return false;
        return em3_rowwise_leads_with(a, t, src);
    }
    case EM3_OP_LAYER_NORM: return t->rank - 1 >= r;
    case EM3_OP_MATMUL: { /* the contracted and row/column dims must all be trailing */
        for (int i = 0; i < 2; i++) {
            const em3_type *o = &N(a, n->in[i])->type;
            if (a->k[n->in[i]] == EM3_ROW_OF && o->rank - 2 < r && !(i == 0 && o->rank - 1 >= r && !em3_node_i(n, "ta") &&
                                                                a->k[n->in[1]] == EM3_ROW_CONST && N(a, n->in[1])->type.rank == 2))
                return false;
        }
        return em3_rowwise_leads_with(a, t, src);
    }
    case EM3_OP_LORA_MATMUL: /* x [..., k] against weights: the contracted dim is trailing */
        return a->k[n->in[0]] == EM3_ROW_OF && t->rank - 1 >= r && em3_rowwise_leads_with(a, t, src);
    case EM3_OP_ATTENTION:
        for (int i = 0; i < n->n_in; i++)
            if (a->k[n->in[i]] == EM3_ROW_OF && N(a, n->in[i])->type.rank - 2 < r) return false;
        return em3_rowwise_leads_with(a, t, src);
    default: return false;
    }
}

static void classify(em3_rowwise *a, bool every_param) {
    const em3_func *f = a->f;
    for (int v = 0; v < f->n_node; v++) {
        const em3_node *n = &f->node[v];
        a->src[v] = -1;
        a->expensive[v] = false;
        if (n->op == EM3_OP_INPUT) {
            bool ids = n->type.dtype == EM3_DTYPE_I32 && em3_node_i(n, "vocab") > 0 && !em3_node_i(n, "label");
            a->k[v] = ids ? EM3_ROW_OF : EM3_ROW_OTHER;
            a->src[v] = ids ? v : -1;
            continue;
        }
        if (n->op == EM3_OP_PARAM) {
            int g = em3_module_find_global(f->mod, n->attr[0].s);
            em3_global_kind gk = f->mod->global[g].kind;
            bool fixed = every_param ? gk != EM3_GLOBAL_GRAPH : gk == EM3_GLOBAL_FROZEN || gk == EM3_GLOBAL_DATA;
            a->k[v] = fixed ? EM3_ROW_CONST : EM3_ROW_OTHER;
            continue;
        }
        if (n->op == EM3_OP_CONST) {
            a->k[v] = EM3_ROW_CONST;
            continue;
        }
        if (n->op == EM3_OP_SPMM) { /* a graph may change between epochs (edge dropout) */
            a->k[v] = EM3_ROW_OTHER;
            continue;
        }
        em3_row_class k = EM3_ROW_CONST;
        int src = -1;
        for (int i = 0; i < n->n_in && k != EM3_ROW_OTHER; i++) {
            int x = n->in[i];
            a->expensive[v] |= a->expensive[x];
            if (a->k[x] == EM3_ROW_OTHER || (a->k[x] == EM3_ROW_OF && src >= 0 && a->src[x] != src)) k = EM3_ROW_OTHER;
            else if (a->k[x] == EM3_ROW_OF) k = EM3_ROW_OF, src = a->src[x];
        }
        if (k == EM3_ROW_OF && !per_row(a, n, src)) k = EM3_ROW_OTHER;
        a->k[v] = k;
        a->src[v] = k == EM3_ROW_OF ? src : -1;
        a->expensive[v] |= n->op == EM3_OP_MATMUL || n->op == EM3_OP_LORA_MATMUL || n->op == EM3_OP_ATTENTION ||
                           n->op == EM3_OP_LAYER_NORM;
    }
}


void em3_rowwise_analyse(em3_rowwise *a, const em3_func *f, bool every_param) {
    int n = f->n_node ? f->n_node : 1;
    a->f = f;
    a->n = f->n_node;
    a->k = em3_xmalloc(sizeof(em3_row_class) * (size_t)n);
    a->src = em3_xmalloc(sizeof(int) * (size_t)n);
    a->expensive = em3_xmalloc(sizeof(bool) * (size_t)n);
    a->leaves = em3_xcalloc((size_t)n, sizeof(bool));
    classify(a, every_param);
    for (int i = 0; i < f->n_node; i++)
        for (int k = 0; k < f->node[i].n_in; k++)
            if (a->k[i] != EM3_ROW_OF) a->leaves[f->node[i].in[k]] = true;
    for (int i = 0; i < f->n_out; i++) a->leaves[f->out[i].value] = true;
    /* a reshape or broadcast of a row-wise value costs nothing to redo: keep its operand (a
       [vocab, d] table, not [vocab, L, d] of L copies) */
    for (int v = f->n_node - 1; v >= 0; v--) {
        const em3_node *nd = &f->node[v];
        if (a->leaves[v] && a->k[v] == EM3_ROW_OF && (nd->op == EM3_OP_BROADCAST || nd->op == EM3_OP_RESHAPE) &&
            a->k[nd->in[0]] == EM3_ROW_OF && a->src[nd->in[0]] == a->src[v]) {
            a->leaves[v] = false;
            a->leaves[nd->in[0]] = true;
        }
    }
}

void em3_rowwise_free(em3_rowwise *a) {
    free(a->k);
    free(a->src);
    free(a->expensive);
    free(a->leaves);
}

bool em3_rowwise_frontier(const em3_rowwise *a, int v) {
    return a->k[v] == EM3_ROW_OF && a->expensive[v] && a->leaves[v] && N(a, v)->type.dtype == EM3_DTYPE_F32;
}

/* @predict made anew from the rewritten @forward: the same outputs (all but the loss). */
static void rederive_predict(em3_module *m, em3_func *forward) {
    em3_func *old = em3_module_find_func(m, "predict");
    if (!old) return;
    const char **names = em3_xmalloc(sizeof(char *) * (size_t)(old->n_out ? old->n_out : 1));
    int k = 0;
    for (int i = 0; i < old->n_out; i++) names[k++] = old->out[i].name;
    em3_module_remove_func(m, old);
    em3_func_slice(forward, "predict", names, k);
    free(names);
}

void em3_rowwise_redirect(em3_module *m, em3_func *f, const int *redirect, int n_orig) {
    for (int i = 0; i < n_orig; i++) {
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
    rederive_predict(m, f);
}
