/* tests/unit/jit_harness.h — one IR module run through the JIT and through the F32 reference
 * interpreter side by side, with the same inputs and the same globals, and what the two produce
 * compared: outputs, and the globals an optimizer step writes. Shared by the codegen tests
 * (test_codegen_ops.c, test_codegen_models.c); include after cmocka.h. */
#ifndef EM3_TEST_JIT_HARNESS_H
#define EM3_TEST_JIT_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/codegen.h"
#include "runtime/graph.h"
#include "runtime/interp.h"

/* Every test compiles for this batch and runs at 1, 3 and this. */
#define JH_MAX_BATCH 64
/* Inputs and outputs of one function at most (a model's @train returns every gradient). */
#define JH_MAX_IO 128

typedef struct {
    em3_module *m;
    em3_jit *jit;
    em3_interp *it;            /* F32: every float result rounded to float, as the JIT stores it */
    void **glob;               /* the JIT's storage of each global (f32 or i32: 4 bytes each; a
                                  graph's: its view, once bound with jh_bind_graph) */
    void *in[JH_MAX_IO];       /* the JIT's copies of the last run's inputs */
    int n_in;
    void *arena;
    int64_t arena_bytes;
    const void *out[JH_MAX_IO]; /* where the last JIT run left its outputs */
    em3_frame frame;           /* of the last JIT run: err_node, err_index, err_value */
    const em3_compiled_func *cf;
    em3_graph **graph;         /* per global: the bound graph of a graph global (owned) */
    int64_t batch;
    double worst;              /* the largest difference compared so far, and where */
    char worst_at[160];
} jh_pair;

/* Compiles `m` (which the pair then owns) for batches up to max_batch; every global starts at
 * zero. */
static inline jh_pair *jh_create_for(em3_module *m, int64_t max_batch) {
    jh_pair *p = calloc(1, sizeof *p);
    p->m = m;
    em3_diag *d = em3_diag_create(stderr);
    em3_codegen_options o = em3_codegen_defaults();
    o.max_batch = max_batch;
    p->jit = em3_jit_compile(m, &o, d);
    em3_diag_free(d);
    if (!p->jit) fail_msg("JIT compilation of @%s failed", m->name);
    p->it = em3_interp_create(m, EM3_PREC_F32);
    p->glob = calloc((size_t)m->n_global + 1, sizeof(void *));
    p->graph = calloc((size_t)m->n_global + 1, sizeof(em3_graph *));
    for (int g = 0; g < m->n_global; g++)
        if (m->global[g].kind != EM3_GLOBAL_GRAPH)
            p->glob[g] = calloc((size_t)em3_type_numel(&m->global[g].type, 1) + 1, 4);
    return p;
}

static inline jh_pair *jh_create(em3_module *m) { return jh_create_for(m, JH_MAX_BATCH); }

static inline void jh_free_inputs(jh_pair *p) {
    for (int k = 0; k < p->n_in; k++) free(p->in[k]);
    p->n_in = 0;
}

static inline void jh_free(jh_pair *p) {
    jh_free_inputs(p);
    for (int g = 0; g < p->m->n_global; g++) {
        if (p->m->global[g].kind != EM3_GLOBAL_GRAPH) free(p->glob[g]);
        em3_graph_free(p->graph[g]);
    }
    free(p->glob);
    free(p->graph);
    free(p->arena);
    em3_interp_free(p->it);
    em3_jit_free(p->jit);
    em3_module_free(p->m);
    free(p);
}

/* Element i of a 4-byte buffer of dtype dt, as a double. */
static inline double jh_get(const void *buf, em3_dtype dt, int64_t i) {
    return dt == EM3_DTYPE_I32 ? (double)((const int32_t *)buf)[i] : (double)((const float *)buf)[i];
}

/* Stores v, which must be exactly representable: both sides must see the same number. */
static inline void jh_put(void *buf, em3_dtype dt, int64_t i, double v) {
    if (dt == EM3_DTYPE_I32) {
        if (!(v >= INT32_MIN && v <= INT32_MAX) || v != trunc(v)) fail_msg("%g is not an i32", v);
        ((int32_t *)buf)[i] = (int32_t)v;
    } else {
        if (v != (double)(float)v && !isnan(v)) fail_msg("%.17g is not an f32", v);
        ((float *)buf)[i] = (float)v;
    }
}

/* Global g gets values v on both sides. */
static inline void jh_set_global(jh_pair *p, int g, const double *v) {
    const em3_global *gl = &p->m->global[g];
    double *ref = em3_interp_global(p->it, gl->name);
    for (int64_t i = 0, n = em3_type_numel(&gl->type, 1); i < n; i++) {
        jh_put(p->glob[g], gl->type.dtype, i, v[i]);
        ref[i] = v[i];
    }
}

/* The JIT's globals become the interpreter's (after em3_interp_init_globals, which rounds to
 * float in F32 mode, and after the caller filled data tables there). Graphs are bound apart. */
static inline void jh_globals_from_interp(jh_pair *p) {
    for (int g = 0; g < p->m->n_global; g++) {
        if (p->m->global[g].kind == EM3_GLOBAL_GRAPH) continue;
        double *v = em3_interp_global(p->it, p->m->global[g].name);
        jh_set_global(p, g, v);
    }
}

/* Graph global `name` is `graph` on both sides (the pair takes it). */
static inline void jh_bind_graph(jh_pair *p, const char *name, em3_graph *graph) {
    int g = em3_module_find_global(p->m, name);
    assert_true(g >= 0 && p->m->global[g].kind == EM3_GLOBAL_GRAPH && !p->graph[g]);
    p->graph[g] = graph;
    p->glob[g] = (void *)em3_graph_view(graph);
    em3_interp_bind_graph(p->it, name, graph);
}

/* Runs `func` compiled; returns its status (0, or 1 after a data error recorded in p->frame).
 * The arena is filled with NaN bits first, so that a kernel reading what nobody wrote shows. */
static inline int jh_run_jit(jh_pair *p, const char *func, int64_t batch, const em3_interp_input *in,
                             int n_in) {
    p->cf = em3_jit_func(p->jit, func);
    if (!p->cf) fail_msg("no compiled @%s", func);
    assert_true(p->cf->n_inputs <= JH_MAX_IO && p->cf->n_outputs <= JH_MAX_IO);
    jh_free_inputs(p);
    for (int k = 0; k < p->cf->n_inputs; k++) {
        const em3_node *nd = p->cf->inputs[k];
        const char *name = em3_node_s(nd, "name");
        const em3_interp_input *given = NULL;
        for (int i = 0; i < n_in && !given; i++)
            if (!strcmp(in[i].name, name)) given = &in[i];
        if (!given) fail_msg("@%s: input %s not given", func, name);
        int64_t n = em3_type_numel(&nd->type, batch);
        p->in[p->n_in] = malloc((size_t)(n ? n : 1) * 4);
        for (int64_t i = 0; i < n; i++) jh_put(p->in[p->n_in], nd->type.dtype, i, given->data[i]);
        p->n_in++;
    }
    if (p->cf->arena_bytes > p->arena_bytes || !p->arena) {
        free(p->arena);
        p->arena_bytes = p->cf->arena_bytes;
        p->arena = aligned_alloc(64, (size_t)(p->arena_bytes + 64));
    }
    memset(p->arena, 0xff, (size_t)p->cf->arena_bytes);
    memset(p->out, 0, sizeof p->out);
    p->frame = (em3_frame){.batch = batch, .arena = p->arena, .global = p->glob,
                           .input = (const void *const *)p->in, .output = p->out,
                           .err_node = -1, .err_index = -1, .err_value = -1};
    p->batch = batch;
    return p->cf->fn(&p->frame);
}

/* Runs `func` in both; both must succeed. */
static inline void jh_run(jh_pair *p, const char *func, int64_t batch, const em3_interp_input *in,
                          int n_in) {
    char err[512] = "";
    if (!em3_interp_run(p->it, func, batch, in, n_in, err, sizeof err))
        fail_msg("interpreter, @%s at batch %lld: %s", func, (long long)batch, err);
    int rc = jh_run_jit(p, func, batch, in, n_in);
    if (rc) fail_msg("JIT, @%s at batch %lld: status %d (value %%%d, index %lld, id %lld)", func,
                     (long long)batch, rc, p->frame.err_node, (long long)p->frame.err_index,
                     (long long)p->frame.err_value);
}

/* How far the JIT's a is from the reference b: |a − b| / (1 + |b|), i.e. absolute error near
 * zero and relative error for large values. NaN matches NaN only; an infinity only itself. */
static inline double jh_diff(double a, double b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b) ? 0 : INFINITY;
    if (isinf(a) || isinf(b)) return a == b ? 0 : INFINITY;
    return fabs(a - b) / (1 + fabs(b));
}

/* n values of dtype dt, JIT (jit) against reference (ref): fails naming `what` and the first
 * element beyond `tol`; returns the largest difference (and keeps the pair's largest). */
static inline double jh_compare(jh_pair *p, const char *what, const void *jit, const double *ref,
                                em3_dtype dt, int64_t n, double tol) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = jh_get(jit, dt, i), e = jh_diff(a, ref[i]);
        if (e > tol) fail_msg("%s[%lld]: JIT %.9g, interpreter %.9g (difference %.3g > %.3g)", what,
                              (long long)i, a, ref[i], e, tol);
        if (e > worst) worst = e;
        if (e > p->worst) {
            p->worst = e;
            snprintf(p->worst_at, sizeof p->worst_at, "%.120s[%lld]", what, (long long)i);
        }
    }
    return worst;
}

/* Every output of the last run of both. */
static inline double jh_compare_outputs(jh_pair *p, double tol) {
    double worst = 0;
    for (int k = 0; k < p->cf->n_outputs; k++) {
        em3_type t;
        const double *ref = em3_interp_output(p->it, p->cf->outputs[k], &t);
        assert_non_null(ref);
        assert_non_null(p->out[k]);
        char what[160];
        snprintf(what, sizeof what, "@%s at batch %lld: output %s", p->cf->name, (long long)p->batch,
                 p->cf->outputs[k]);
        double e = jh_compare(p, what, p->out[k], ref, t.dtype, em3_type_numel(&t, p->batch), tol);
        if (e > worst) worst = e;
    }
    return worst;
}

/* Every global whose name starts with `prefix` (all with ""). */
static inline double jh_compare_globals(jh_pair *p, const char *prefix, double tol) {
    double worst = 0;
    for (int g = 0; g < p->m->n_global; g++) {
        const em3_global *gl = &p->m->global[g];
        if (gl->kind == EM3_GLOBAL_GRAPH || strncmp(gl->name, prefix, strlen(prefix))) continue;
        char what[160];
        snprintf(what, sizeof what, "@%s at batch %lld: global %s", p->cf->name, (long long)p->batch,
                 gl->name);
        double e = jh_compare(p, what, p->glob[g], em3_interp_global(p->it, gl->name), gl->type.dtype,
                              em3_type_numel(&gl->type, 1), tol);
        if (e > worst) worst = e;
    }
    return worst;
}

#endif
