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
#include "rowwise.h"

/* A row-wise value worth caching whose table fits in 1 GiB. */
static bool cacheable(const em3_rowwise *a, int v) {
    if (!em3_rowwise_frontier(a, v)) return false;
    const em3_type *t = &a->f->node[v].type;
    int64_t vocab = em3_node_i(&a->f->node[a->src[v]], "vocab"), row = 1;
    for (int i = em3_rowwise_lead(a, v); i < t->rank; i++) row *= t->dim[i];
    return vocab * row * 4 <= ((int64_t)1 << 30);
}

int em3_pass_cache_frozen(em3_module *m, const em3_pass_ctx *ctx) {
    (void)ctx;
    em3_func *f = em3_module_find_func(m, "forward");
    if (!f || em3_module_find_func(m, "train")) return 0; /* before autodiff only */
    int n = f->n_node ? f->n_node : 1;
    em3_rowwise a;
    em3_rowwise_analyse(&a, f, false);
    int n_orig = f->n_node, cached = 0;
    int *redirect = em3_xmalloc(sizeof(int) * (size_t)n);
    for (int v = 0; v < n_orig; v++) redirect[v] = v;
    for (int v = 0; v < n_orig; v++) {
        if (!cacheable(&a, v)) continue;
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
    if (cached) em3_rowwise_redirect(m, f, redirect, n_orig);
    free(redirect);
    em3_rowwise_free(&a);
    return cached > 0;
}
