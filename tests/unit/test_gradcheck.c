/* tests/unit/test_gradcheck.c — finite-difference gradient checks of autodiff. One table row per
 * differentiable op of ops.def (the test walks the table and fails for an op without a row or
 * without a VJP rule), then whole models compiled from the DSL. Everything runs in the F64
 * interpreter: the grad.NAME outputs of @train against central differences of @forward's loss. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/frontend.h"
#include "op_text.h"
#include "passes/autodiff.h"
#include "passes/passes.h"
#include "graph_fixture.h"
#include "runtime/init.h"
#include "runtime/interp.h"

/* Central differences with h = 1e-6 in double are good to ~1e-10 absolute on the losses here
 * (|L| ≲ 10: rounding ε·|L|/h, truncation h²·f'''/6), far inside the tolerance. */
#define FD_H 1e-6
#define RTOL 1e-6
#define ATOL 1e-8
#define BATCH 3

/* ---- a module under test, with the values of its inputs and globals -------------------------- */

typedef struct {
    const char *name;
    double *v;
    int64_t n;
} named_data;

#define MAX_DATA 24

typedef struct {
    em3_module *m;
    em3_func *f; /* @forward */
    em3_rng rng;
    int64_t batch;
    named_data in[MAX_DATA], glob[MAX_DATA];
    int n_in, n_glob;
    em3_graph *graph[4]; /* the matrices bound to the module's graph globals, in order */
    int n_graph;
} gc_case;

static gc_case case_new(em3_module *m, int64_t batch, uint64_t seed) {
    gc_case c = {.m = m, .batch = batch};
    c.f = em3_module_find_func(m, "forward");
    if (!c.f) c.f = em3_module_add_func(m, "forward");
    em3_rng_seed(&c.rng, seed);
    return c;
}

/* Frees the values; the module stays the caller's. */
static void case_free_data(gc_case *c) {
    for (int i = 0; i < c->n_in; i++) free(c->in[i].v);
    for (int i = 0; i < c->n_glob; i++) free(c->glob[i].v);
    for (int i = 0; i < c->n_graph; i++) em3_graph_free(c->graph[i]);
}

/* Binds a random matrix to every graph global of c's module (random_graph, values in
 * [-0.5, 0.5)), made on first use and kept in c. */
static void bind_graphs(gc_case *c, em3_interp *it) {
    for (int g = 0, k = 0; g < c->m->n_global; g++) {
        const em3_global *gl = &c->m->global[g];
        if (gl->kind != EM3_GLOBAL_GRAPH) continue;
        if (k == c->n_graph) {
            assert_true(c->n_graph < 4);
            c->graph[c->n_graph++] = random_graph(em3_rng_next(&c->rng), gl->type.dim[0], gl->type.dim[1], 3, -0.5);
        }
        em3_interp_bind_graph(it, gl->name, c->graph[k++]);
    }
}

/* A new named array of n values (names are copied into the module's arena). */
static double *data_new(gc_case *c, bool input, const char *name, int64_t n) {
    named_data *list = input ? c->in : c->glob;
    int *count = input ? &c->n_in : &c->n_glob;
    assert_true(*count < MAX_DATA);
    list[*count] = (named_data){em3_arena_printf(c->m->arena, "%s", name),
                                calloc((size_t)(n ? n : 1), sizeof(double)), n};
    return list[(*count)++].v;
}

static const named_data *data_find(const gc_case *c, const char *name) {
    for (int i = 0; i < c->n_glob; i++)
        if (!strcmp(c->glob[i].name, name)) return &c->glob[i];
    return NULL;
}

typedef enum {
    VAL_SIGNED,   /* ±[0.2, 1.2): away from the kinks of abs, relu, maximum, and from 0 for div */
    VAL_POSITIVE, /* [0.5, 2): for log, sqrt, rsqrt */
    VAL_TIES,     /* signed, and operand 1 equals operand 0 at every other element */
    VAL_WEIGHT,   /* [-1, 1): the loss weights */
    VAL_MASK,     /* 0/1, with the first element of every last-axis row 1 (never all masked) */
} value_kind;

static void fill(gc_case *c, double *v, int64_t n, int64_t row, value_kind k) {
    for (int64_t i = 0; i < n; i++) {
        double u = em3_rng_uniform(&c->rng);
        switch (k) {
        case VAL_POSITIVE: v[i] = 0.5 + 1.5 * u; break;
        case VAL_WEIGHT: v[i] = 2 * u - 1; break;
        case VAL_MASK: v[i] = i % row == 0 || u < 0.6; break;
        default: v[i] = (em3_rng_uniform(&c->rng) < 0.5 ? -1 : 1) * (0.2 + u); break;
        }
    }
}

static int add_node(gc_case *c, em3_node p, const int *in, int n) {
    return em3_func_add_checked(c->f, &p, in, n);
}

static int constant(gc_case *c, double v) {
    em3_node p = em3_node_proto(EM3_OP_CONST, (em3_loc){0});
    em3_node_set_f(&p, "value", v);
    p.type = em3_type_make(EM3_DTYPE_F32, 0, NULL);
    return add_node(c, p, NULL, 0);
}

static int binary(gc_case *c, em3_op op, int a, int b) {
    return add_node(c, em3_node_proto(op, (em3_loc){0}), (int[]){a, b}, 2);
}

static int input(gc_case *c, const char *name, em3_type t) {
    em3_node p = em3_node_proto(EM3_OP_INPUT, (em3_loc){0});
    em3_node_set_s(&p, "name", name);
    p.type = t;
    return add_node(c, p, NULL, 0);
}

/* An input of ids in [0, rows). */
static int ids_input(gc_case *c, const char *name, em3_type t, int64_t rows) {
    int64_t n = em3_type_numel(&t, c->batch);
    double *v = data_new(c, true, name, n);
    for (int64_t i = 0; i < n; i++) v[i] = (double)em3_rng_below(&c->rng, (uint64_t)rows);
    return input(c, name, t);
}

/* A float input of 0/1 values (masks, labels, conditions). */
static int mask_input(gc_case *c, const char *name, em3_type t) {
    int64_t n = em3_type_numel(&t, c->batch);
    fill(c, data_new(c, true, name, n), n, t.rank ? em3_dim_size(t.dim[t.rank - 1], c->batch) : 1,
         VAL_MASK);
    return input(c, name, t);
}

/* A tensor of type t held by a global of kind `kind` with values of kind k. Globals have no
 * batch dimension, so a type with B is gathered from a table of its rows, [N, rest...], by the
 * ids 0..N-1 of shape t.dim[..last B] — each element is still one element of the global. */
static int leaf(gc_case *c, const char *name, em3_type t, em3_global_kind kind, value_kind k) {
    int last_b = -1;
    for (int i = 0; i < t.rank; i++)
        if (em3_dim_has_batch(t.dim[i])) last_b = i;
    em3_type ids = em3_type_make(EM3_DTYPE_I32, last_b + 1, t.dim);
    int64_t rows = em3_type_numel(&ids, c->batch), dims[EM3_MAX_RANK] = {rows};
    for (int i = last_b + 1; i < t.rank; i++) dims[i - last_b] = t.dim[i];
    em3_type gt = last_b < 0 ? t : em3_type_make(EM3_DTYPE_F32, t.rank - last_b, dims);
    int64_t n = em3_type_numel(&gt, 1);
    fill(c, data_new(c, false, name, n), n, 1, k);
    assert_true(em3_module_add_global(c->m, name, gt, kind, (em3_init){EM3_INIT_NONE, 0},
                                      (em3_loc){0}) >= 0);
    em3_node p = em3_node_proto(EM3_OP_PARAM, (em3_loc){0});
    em3_node_set_s(&p, "name", name);
    int g = add_node(c, p, NULL, 0);
    if (last_b < 0) return g;
    const char *ids_name = em3_arena_printf(c->m->arena, "%s.ids", name);
    double *v = data_new(c, true, ids_name, rows);
    for (int64_t i = 0; i < rows; i++) v[i] = (double)i;
    return binary(c, EM3_OP_GATHER, g, input(c, ids_name, ids));
}

/* loss = Σ node · w with w fixed random weights (a frozen global: a const holds one value). */
static void add_loss(gc_case *c, int node) {
    em3_type t = c->f->node[node].type;
    int y = binary(c, EM3_OP_MUL, node, leaf(c, "loss_weights", t, EM3_GLOBAL_FROZEN, VAL_WEIGHT));
    if (t.rank > 0) {
        int64_t axes[EM3_MAX_RANK];
        for (int i = 0; i < t.rank; i++) axes[i] = i;
        em3_node p = em3_node_proto(EM3_OP_SUM, (em3_loc){0});
        em3_node_set_list(&p, "axes", axes, t.rank);
        y = add_node(c, p, &y, 1);
    }
    em3_func_add_output(c->f, "loss", y);
}

/* ---- the check ------------------------------------------------------------------------------- */

/* Runs `func` with c's inputs, opt.step = 1 and opt.row0 = 0 (dropout's masks read them in
 * @train). */
static void run(em3_interp *it, const gc_case *c, const char *func) {
    em3_interp_input in[MAX_DATA + 2];
    for (int i = 0; i < c->n_in; i++) in[i] = (em3_interp_input){c->in[i].name, c->in[i].v};
    static const double step = 1, row0 = 0;
    in[c->n_in] = (em3_interp_input){"opt.step", &step};
    in[c->n_in + 1] = (em3_interp_input){"opt.row0", &row0};
    char err[512] = "";
    if (!em3_interp_run(it, func, c->batch, in, c->n_in + 2, err, sizeof err))
        fail_msg("@%s: %s", func, err);
}

static void autodiff(em3_module *m) {
    em3_diag *d = em3_diag_create(stderr);
    em3_pipeline *pl = em3_pipeline_create();
    assert_true(em3_pipeline_parse(pl, "autodiff", d));
    em3_pass_options opt = {.verify_each = true, .quiet = true};
    assert_true(em3_pipeline_run(pl, m, &opt, d));
    em3_pipeline_free(pl);
    em3_diag_free(d);
}

/* Whether @forward reads global `name` through a stop_gradient somewhere (a weight shared
 * frozen): its training gradient then leaves that use out on purpose, and differences of the
 * loss cannot. */
static bool read_frozen(const em3_func *f, const char *name) {
    for (int i = 0; i < f->n_node; i++) {
        const em3_node *n = &f->node[i];
        if (n->op != EM3_OP_STOP_GRADIENT) continue;
        const em3_node *x = &f->node[n->in[0]];
        if (x->op == EM3_OP_PARAM && !strcmp(em3_node_s(x, "name"), name)) return true;
    }
    return false;
}

/* Compares every trainable global's grad.NAME from @train with central differences of @forward's
 * loss, at up to `max_elems` elements per global spread over it (0: all). Globals also read
 * frozen are left out. Prints the worst relative error; returns the number of mismatching
 * elements. */
static int gradcheck(const gc_case *c, em3_interp *it, int max_elems, const char *label) {
    run(it, c, "train");
    const em3_module *m = c->m;
    double **grads = calloc((size_t)m->n_global + 1, sizeof(double *));
    for (int g = 0; g < m->n_global; g++) {
        if (m->global[g].kind != EM3_GLOBAL_PARAM || read_frozen(c->f, m->global[g].name)) continue;
        char name[256];
        snprintf(name, sizeof name, "grad.%s", m->global[g].name);
        const double *v = em3_interp_output(it, name, NULL);
        if (!v) fail_msg("%s: @train has no %s", label, name);
        int64_t n = em3_type_numel(&m->global[g].type, 1);
        grads[g] = malloc(sizeof(double) * (size_t)n);
        memcpy(grads[g], v, sizeof(double) * (size_t)n);
    }
    int bad = 0;
    double worst = 0;
    for (int g = 0; g < m->n_global; g++) {
        if (!grads[g]) continue;
        double *w = em3_interp_global(it, m->global[g].name);
        int64_t n = em3_type_numel(&m->global[g].type, 1);
        int64_t step = max_elems > 0 && n > max_elems ? (n + max_elems - 1) / max_elems : 1;
        for (int64_t k = 0; k < n; k += step) {
            double x0 = w[k], side[2];
            for (int s = 0; s < 2; s++) {
                w[k] = x0 + (s ? -FD_H : FD_H);
                run(it, c, "forward");
                side[s] = em3_interp_output(it, "loss", NULL)[0];
            }
            w[k] = x0;
            double fd = (side[0] - side[1]) / (2 * FD_H), got = grads[g][k];
            double err = fabs(got - fd), scale = fmax(fabs(got), fabs(fd));
            if (scale > 0) worst = fmax(worst, err / fmax(scale, ATOL / RTOL));
            if (err > RTOL * scale + ATOL) {
                if (bad++ < 10)
                    print_error("%s: d loss / d %s[%lld]: autodiff %.12g, differences %.12g\n",
                                label, m->global[g].name, (long long)k, got, fd);
            }
        }
        free(grads[g]);
    }
    free(grads);
    print_message("  %-58s max rel err %.1e\n", label, worst);
    return bad;
}

/* ---- one row per differentiable op ----------------------------------------------------------- */

typedef enum {
    PRE_NONE,
    PRE_MASK_ADD,      /* operand 0 becomes x + (mask − 1)·1e9, as models/lib/attention.em3 does */
    PRE_MASK_WHERE,    /* operand 0 becomes where(mask, x, −1e9) */
    PRE_FROZEN_WEIGHT, /* operand 1 is a frozen global of signed values (lora_matmul's w), not 0/1 */
    PRE_EMPTY_ROW,     /* the mask, the last operand, has a last row of zeros: a query without keys */
    PRE_GRAPH,         /* a graph global g, f32[4, 6], of 12 random entries (some repeated) */
} pre_kind;

/* Operand types and attributes in the notation of op_text.h. Float operands that can carry a
 * gradient become trainable globals; i32 operands ids into operand 0's rows (more ids than rows,
 * so they repeat); other float operands (labels, conditions) 0/1 inputs. */
typedef struct {
    em3_op op;
    const char *operands, *attrs;
    value_kind values;
    pre_kind pre;
} op_case;

static const op_case cases[] = {
    /* unary */
    {EM3_OP_NEG, "f32[B,3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_NEG, "f32[2,3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_EXP, "f32[B,3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_EXP, "f32[4]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_LOG, "f32[B,3]", "", VAL_POSITIVE, PRE_NONE},
    {EM3_OP_LOG, "f32[2,2]", "", VAL_POSITIVE, PRE_NONE},
    {EM3_OP_SQRT, "f32[B,3]", "", VAL_POSITIVE, PRE_NONE},
    {EM3_OP_SQRT, "f32[]", "", VAL_POSITIVE, PRE_NONE},
    {EM3_OP_RSQRT, "f32[B,3]", "", VAL_POSITIVE, PRE_NONE},
    {EM3_OP_RSQRT, "f32[3,1]", "", VAL_POSITIVE, PRE_NONE},
    {EM3_OP_ABS, "f32[B,4]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_ABS, "f32[5]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_TANH, "f32[B,3]", "", VAL_SIGNED, PRE_NONE},
    /* dropout: @forward's dropout is x, @train's is dropout_train, so only p = 0 (which keeps
       everything) has the same loss in both; dropout_train written into @forward, with its
       step an input, is checked at drop rates where it zeroes about half or a quarter */
    {EM3_OP_DROPOUT, "f32[B,4]", "p=0", VAL_SIGNED, PRE_NONE},
    {EM3_OP_DROPOUT_TRAIN, "f32[B,4] f32[] f32[]", "p=0.5 salt=7", VAL_SIGNED, PRE_NONE},
    {EM3_OP_DROPOUT_TRAIN, "f32[3,5] f32[] f32[]", "p=0.25 salt=1", VAL_SIGNED, PRE_NONE},
    {EM3_OP_TANH, "f32[2,3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_SIGMOID, "f32[B,3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_SIGMOID, "f32[4]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_RELU, "f32[B,4]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_RELU, "f32[2,3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_GELU, "f32[B,4]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_GELU, "f32[3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_SOFTPLUS, "f32[B,3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_SOFTPLUS, "f32[2,2]", "", VAL_SIGNED, PRE_NONE},

    /* binary, with broadcasting on either side */
    {EM3_OP_ADD, "f32[B,3] f32[3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_ADD, "f32[B,1] f32[1,3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_ADD, "f32[2,1,4] f32[B,1]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_ADD, "f32[] f32[2,3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_SUB, "f32[B,3] f32[B,3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_SUB, "f32[3,1] f32[4]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MUL, "f32[B,3] f32[]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MUL, "f32[2,3] f32[2,1]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MUL, "f32[B,2,3] f32[B,1,3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_DIV, "f32[B,3] f32[3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_DIV, "f32[2] f32[3,2]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MAXIMUM, "f32[B,3] f32[3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MAXIMUM, "f32[2,3] f32[2,3]", "", VAL_TIES, PRE_NONE}, /* a tie splits in halves */
    {EM3_OP_MAXIMUM, "f32[B,4] f32[B,4]", "", VAL_TIES, PRE_NONE},
    {EM3_OP_MINIMUM, "f32[B,3] f32[B,3]", "", VAL_TIES, PRE_NONE},
    {EM3_OP_MINIMUM, "f32[3] f32[2,1]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_BCE_LOGITS, "f32[B,4] f32[B,4]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_BCE_LOGITS, "f32[3] f32[3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_WHERE, "f32[B,3] f32[B,3] f32[3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_WHERE, "f32[B,1] f32[3] f32[B,3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_WHERE, "f32[2,3] f32[] f32[2,3]", "", VAL_SIGNED, PRE_NONE},

    /* reductions */
    {EM3_OP_SUM, "f32[B,3,4]", "axes=[0,2]", VAL_SIGNED, PRE_NONE},
    {EM3_OP_SUM, "f32[B,3]", "axes=[1] keepdims=1", VAL_SIGNED, PRE_NONE},
    {EM3_OP_SUM, "f32[2,3]", "axes=[0,1]", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MEAN, "f32[B,3]", "axes=[0]", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MEAN, "f32[B,2,3]", "axes=[1,2] keepdims=1", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MEAN, "f32[4,2]", "axes=[1]", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MAX, "f32[B,4]", "axes=[1]", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MAX, "f32[2,3,4]", "axes=[0,2] keepdims=1", VAL_SIGNED, PRE_NONE},
    {EM3_OP_LOGSUMEXP, "f32[B,5]", "axis=1", VAL_SIGNED, PRE_NONE},
    {EM3_OP_LOGSUMEXP, "f32[3,B]", "axis=0 keepdims=1", VAL_SIGNED, PRE_NONE},
    {EM3_OP_LOGSUMEXP, "f32[B,4]", "axis=1", VAL_SIGNED, PRE_MASK_ADD},
    {EM3_OP_SOFTMAX, "f32[B,5]", "axis=1", VAL_SIGNED, PRE_NONE},
    {EM3_OP_SOFTMAX, "f32[2,B,3]", "axis=0", VAL_SIGNED, PRE_NONE},
    {EM3_OP_SOFTMAX, "f32[B,2,4]", "axis=2", VAL_SIGNED, PRE_MASK_ADD},
    {EM3_OP_SOFTMAX, "f32[B,4]", "axis=1", VAL_SIGNED, PRE_MASK_WHERE},
    {EM3_OP_LOG_SOFTMAX, "f32[B,5]", "axis=1", VAL_SIGNED, PRE_NONE},
    {EM3_OP_LOG_SOFTMAX, "f32[4,3]", "axis=0", VAL_SIGNED, PRE_NONE},
    {EM3_OP_LAYER_NORM, "f32[B,4] f32[4] f32[4]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_LAYER_NORM, "f32[2,B,5] f32[5] f32[5]", "eps=0.01", VAL_SIGNED, PRE_NONE},
    {EM3_OP_LAYER_NORM, "f32[3] f32[3] f32[3]", "", VAL_SIGNED, PRE_NONE},

    /* data movement */
    {EM3_OP_RESHAPE, "f32[B,3,4]", "shape=[B*3,4]", VAL_SIGNED, PRE_NONE},
    {EM3_OP_RESHAPE, "f32[B*2,3]", "shape=[B,6]", VAL_SIGNED, PRE_NONE},
    {EM3_OP_RESHAPE, "f32[2,6]", "shape=[3,4]", VAL_SIGNED, PRE_NONE},
    {EM3_OP_TRANSPOSE, "f32[B,3,4]", "perm=[2,0,1]", VAL_SIGNED, PRE_NONE},
    {EM3_OP_TRANSPOSE, "f32[2,3]", "perm=[1,0]", VAL_SIGNED, PRE_NONE},
    {EM3_OP_CONCAT, "f32[B,2] f32[B,3] f32[B,1]", "axis=1", VAL_SIGNED, PRE_NONE},
    {EM3_OP_CONCAT, "f32[2,3] f32[1,3]", "axis=0", VAL_SIGNED, PRE_NONE},
    {EM3_OP_CONCAT, "f32[B,2,2] f32[B,1,2]", "axis=1", VAL_SIGNED, PRE_NONE},
    {EM3_OP_SLICE, "f32[B,5]", "axis=1 start=1 end=4", VAL_SIGNED, PRE_NONE},
    {EM3_OP_SLICE, "f32[4,3]", "axis=0 start=0 end=2", VAL_SIGNED, PRE_NONE},
    {EM3_OP_SLICE, "f32[2,B,4]", "axis=2 start=2 end=4", VAL_SIGNED, PRE_NONE},
    {EM3_OP_BROADCAST, "f32[3]", "shape=[B,2,3]", VAL_SIGNED, PRE_NONE},
    {EM3_OP_BROADCAST, "f32[B,1]", "shape=[B,4]", VAL_SIGNED, PRE_NONE},
    {EM3_OP_BROADCAST, "f32[2,1]", "shape=[2,3]", VAL_SIGNED, PRE_NONE},

    /* GEMM: transposes, broadcasting of the leading dims, a 2-D weight against rank 3 */
    {EM3_OP_MATMUL, "f32[B,3] f32[3,4]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MATMUL, "f32[B,2,3] f32[3,4]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MATMUL, "f32[B,2,3] f32[4,3]", "tb=1", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MATMUL, "f32[B,3,2] f32[3,4]", "ta=1", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MATMUL, "f32[B,2,3] f32[B,3,4]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MATMUL, "f32[B,4,3] f32[B,2,4]", "ta=1 tb=1", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MATMUL, "f32[2,1,3,4] f32[5,4,2]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MATMUL, "f32[3,4] f32[B,4,2]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MATMUL, "f32[B,2,3] f32[1,3,2]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_MATMUL, "f32[2,3] f32[2,4]", "ta=1", VAL_SIGNED, PRE_NONE},

    /* gather and its VJP: more ids than rows, so ids repeat */
    {EM3_OP_GATHER, "f32[4,3] i32[B,3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_GATHER, "f32[3] i32[B*2]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_GATHER, "f32[5,2,2] i32[7]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_SCATTER_ADD, "f32[4,3] i32[B,2] f32[B,2,3]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_SCATTER_ADD, "f32[3] i32[5] f32[5]", "", VAL_SIGNED, PRE_NONE},

    /* fused attention: heads, masks per batch row and per query row, k and v shared by the
     * heads, a query (or a whole batch row) without a valid key, one key, 2-D */
    {EM3_OP_ATTENTION, "f32[B,2,3,4] f32[B,2,5,4] f32[B,2,5,4]", "scale=0.5", VAL_SIGNED, PRE_NONE},
    {EM3_OP_ATTENTION, "f32[B,2,3,4] f32[B,2,5,4] f32[B,2,5,4] f32[B,1,1,5]", "scale=0.5", VAL_SIGNED,
     PRE_NONE},
    {EM3_OP_ATTENTION, "f32[B,2,3,4] f32[B,1,5,4] f32[B,1,5,4] f32[B,2,3,5]", "scale=0.35", VAL_SIGNED,
     PRE_EMPTY_ROW},
    {EM3_OP_ATTENTION, "f32[B,1,4] f32[B,6,4] f32[B,6,4] f32[B,1,6]", "", VAL_SIGNED, PRE_EMPTY_ROW},
    {EM3_OP_ATTENTION, "f32[B,4,2] f32[1,2] f32[1,2]", "", VAL_SIGNED, PRE_NONE},
    {EM3_OP_ATTENTION, "f32[3,2] f32[7,2] f32[7,2]", "scale=2", VAL_SIGNED, PRE_NONE},
    /* lora_matmul: w is frozen by design and gets no gradient; x, a and b are checked */
    {EM3_OP_LORA_MATMUL, "f32[B,5] f32[5,3] f32[5,2] f32[2,3]", "scale=0.5", VAL_SIGNED, PRE_FROZEN_WEIGHT},
    {EM3_OP_LORA_MATMUL, "f32[B,4,5] f32[5,3] f32[5,1] f32[1,3]", "scale=4", VAL_SIGNED, PRE_FROZEN_WEIGHT},
    {EM3_OP_LORA_MATMUL, "f32[2,5] f32[5,3] f32[5,2] f32[2,3]", "", VAL_SIGNED, PRE_FROZEN_WEIGHT},
    /* spmm by a fixed sparse matrix, either way round, with B among the carried dimensions */
    {EM3_OP_SPMM, "f32[6,3]", "graph=@g", VAL_SIGNED, PRE_GRAPH},
    {EM3_OP_SPMM, "f32[4,B,2]", "graph=@g transpose=1", VAL_SIGNED, PRE_GRAPH},
};

/* Graph global g of PRE_GRAPH rows (bound to a random matrix by interp_for). */
static void add_graph(gc_case *c) {
    assert_true(em3_module_add_graph(c->m, "g", em3_type_make(EM3_DTYPE_F32, 2, (int64_t[]){4, 6}), "user_item",
                                     (em3_loc){0}) >= 0);
}

/* Builds row `c`'s module: @forward computes loss = Σ op(operands) · w. */
static gc_case build_op_case(const op_case *oc, uint64_t seed) {
    gc_case c = case_new(em3_module_create("gradcheck"), BATCH, seed);
    if (oc->pre == PRE_GRAPH) add_graph(&c);
    em3_node n = em3_node_proto(oc->op, (em3_loc){0});
    op_text_store st;
    op_text_attrs(&n, oc->attrs, &st);
    int in[8], n_in = 0;
    int64_t rows0 = 1;
    for (const char *p = oc->operands; *p; n_in++) {
        assert_true(n_in < 8);
        em3_type t = op_text_type(&p);
        while (*p == ' ') p++;
        char name[16];
        snprintf(name, sizeof name, "x%d", n_in);
        if (n_in == 0 && t.rank) rows0 = t.dim[0];
        if (t.dtype == EM3_DTYPE_I32)
            in[n_in] = ids_input(&c, name, t, rows0);
        else if (em3_op_operand_differentiable(oc->op, n_in))
            in[n_in] = leaf(&c, name, t, EM3_GLOBAL_PARAM, oc->values);
        else if (oc->pre == PRE_FROZEN_WEIGHT && n_in == 1)
            in[n_in] = leaf(&c, name, t, EM3_GLOBAL_FROZEN, oc->values);
        else
            in[n_in] = mask_input(&c, name, t);
    }
    if (oc->pre == PRE_EMPTY_ROW) {
        const named_data *mask = &c.in[c.n_in - 1];
        const em3_type *mt = &c.f->node[in[n_in - 1]].type;
        assert_true(mt->dim[mt->rank - 1] <= mask->n);
        for (int64_t i = mask->n - mt->dim[mt->rank - 1]; i < mask->n; i++) mask->v[i] = 0;
    }
    if (oc->values == VAL_TIES) {
        const named_data *a = data_find(&c, "x0"), *b = data_find(&c, "x1");
        assert_true(a && b && a->n == b->n);
        for (int64_t i = 0; i < a->n; i += 2) b->v[i] = a->v[i];
    }
    if (oc->pre == PRE_MASK_ADD || oc->pre == PRE_MASK_WHERE) {
        int m = mask_input(&c, "mask", c.f->node[in[0]].type);
        if (oc->pre == PRE_MASK_ADD)
            in[0] = binary(&c, EM3_OP_ADD, in[0],
                           binary(&c, EM3_OP_MUL, binary(&c, EM3_OP_SUB, m, constant(&c, 1)),
                                  constant(&c, 1e9)));
        else
            in[0] = add_node(&c, em3_node_proto(EM3_OP_WHERE, (em3_loc){0}),
                             (int[]){m, in[0], constant(&c, -1e9)}, 3);
    }
    char err[256];
    int y = em3_func_add(c.f, &n, in, n_in, err, sizeof err);
    if (y < 0) fail_msg("%s(%s): %s", em3_op_name(oc->op), oc->operands, err);
    add_loss(&c, y);
    return c;
}

/* An interpreter (F64) for c's module with the values of c's globals and graphs. */
static em3_interp *interp_for(gc_case *c) {
    em3_interp *it = em3_interp_create(c->m, EM3_PREC_F64);
    for (int i = 0; i < c->n_glob; i++)
        memcpy(em3_interp_global(it, c->glob[i].name), c->glob[i].v,
               sizeof(double) * (size_t)c->glob[i].n);
    bind_graphs(c, it);
    return it;
}

static void test_every_op_row(void **state) {
    (void)state;
    int bad = 0;
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        gc_case c = build_op_case(&cases[i], 1000 + (uint64_t)i);
        autodiff(c.m);
        em3_interp *it = interp_for(&c);
        char label[128];
        snprintf(label, sizeof label, "%s(%s) {%s}%s", em3_op_name(cases[i].op), cases[i].operands,
                 cases[i].attrs,
                 cases[i].pre == PRE_MASK_ADD     ? " masked (add)"
                 : cases[i].pre == PRE_MASK_WHERE ? " masked (where)"
                 : cases[i].pre == PRE_EMPTY_ROW  ? " with a query without keys"
                 : cases[i].pre == PRE_GRAPH      ? " by a 4x6 graph"
                                                  : "");
        bad += gradcheck(&c, it, 0, label);
        em3_interp_free(it);
        case_free_data(&c);
        em3_module_free(c.m);
    }
    assert_int_equal(bad, 0);
}

/* An op is differentiable when some operand can carry a gradient; each needs a VJP rule and
 * rows here. */
static void test_every_differentiable_op_has_rows(void **state) {
    (void)state;
    int rows[EM3_OP_COUNT] = {0}, missing = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) rows[cases[i].op]++;
    for (int op = 0; op < EM3_OP_COUNT; op++) {
        if (em3_op_kind_of((em3_op)op) == EM3_KIND_LEAF) continue;
        int arity = em3_op_arity((em3_op)op);
        bool diff = false;
        for (int k = 0; k < (arity < 0 ? 1 : arity); k++)
            diff |= em3_op_operand_differentiable((em3_op)op, k);
        if (!diff) continue;
        if (em3_op_vjp((em3_op)op) == no_vjp) {
            print_error("op %s is differentiable but its VJP rule is no_vjp\n",
                        em3_op_name((em3_op)op));
            missing++;
        }
        if (rows[op] == 0) {
            print_error("op %s has no gradient-check row\n", em3_op_name((em3_op)op));
            missing++;
        }
    }
    assert_int_equal(missing, 0);
}

/* ---- whole models from the DSL --------------------------------------------------------------- */

typedef struct {
    const char *name, *source;
    const char *mask; /* an f32 input filled as a mask (0/1, first key always 1), or NULL */
    int64_t batch;
} model_case;

static em3_module *compile_model(const model_case *mc) {
    em3_diag *d = em3_diag_create(stderr);
    em3_module *m = em3_frontend_compile_source(mc->name, mc->source, strlen(mc->source), NULL, d);
    em3_diag_free(d);
    if (!m) fail_msg("%s does not compile", mc->name);
    return m;
}

/* The inputs of @forward: ids in [0, vocab), 0/1 labels and masks, N(0, 1) features. */
static void model_inputs(gc_case *c, const char *mask) {
    for (int i = 0; i < c->f->n_node; i++) {
        const em3_node *n = &c->f->node[i];
        if (n->op != EM3_OP_INPUT) continue;
        const char *name = em3_node_s(n, "name");
        int64_t count = em3_type_numel(&n->type, c->batch);
        if (n->type.dtype == EM3_DTYPE_I32) {
            int64_t vocab = em3_node_i(n, "vocab");
            assert_true(vocab > 0);
            double *v = data_new(c, true, name, count);
            for (int64_t k = 0; k < count; k++)
                v[k] = (double)em3_rng_below(&c->rng, (uint64_t)vocab);
        } else if (em3_node_i(n, "label") || (mask && !strcmp(name, mask))) {
            fill(c, data_new(c, true, name, count), count,
                 em3_dim_size(n->type.dim[n->type.rank - 1], c->batch), VAL_MASK);
        } else {
            double *v = data_new(c, true, name, count);
            for (int64_t k = 0; k < count; k++) v[k] = em3_rng_normal(&c->rng);
        }
    }
}

/* Compiles, differentiates and checks a model: weights from their initialisers (seed 5) plus
 * N(0, 0.3²) noise, so that zero-initialised ones (LoRA's B, biases) are not at a special
 * point, data tables N(0, 1), graphs random; up to 12 elements of each parameter. Returns the module (with @train) for more
 * checks; the caller frees it. */
static em3_module *check_model(const model_case *mc) {
    gc_case c = case_new(compile_model(mc), mc->batch, 77);
    model_inputs(&c, mc->mask);
    autodiff(c.m);
    em3_interp *it = em3_interp_create(c.m, EM3_PREC_F64);
    em3_interp_init_globals(it, 5);
    for (int g = 0; g < c.m->n_global; g++) {
        const em3_global *gl = &c.m->global[g];
        if (gl->kind != EM3_GLOBAL_PARAM && gl->kind != EM3_GLOBAL_FROZEN && gl->kind != EM3_GLOBAL_DATA) continue;
        double *v = em3_interp_global(it, gl->name);
        for (int64_t k = 0, n = em3_type_numel(&gl->type, 1); k < n; k++)
            v[k] += (gl->kind == EM3_GLOBAL_DATA ? 1 : 0.3) * em3_rng_normal(&c.rng);
    }
    bind_graphs(&c, it);
    int bad = gradcheck(&c, it, 12, mc->name);
    em3_interp_free(it);
    case_free_data(&c);
    assert_int_equal(bad, 0);
    return c.m;
}

static void test_mlp_bce(void **state) {
    (void)state;
    static const model_case mc = {"mlp_bce.em3",
                                  "import \"lib/nn.em3\"\n"
                                  "model mlp_bce {\n"
                                  "    input x : f32[B, 5]\n"
                                  "    label y : f32[B]\n"
                                  "    net = MLP([5, 7, 4, 1], \"tanh\")\n"
                                  "    fn forward() {\n"
                                  "        logit = squeeze(net(x), -1)\n"
                                  "        output p = sigmoid(logit)\n"
                                  "        loss = bce_with_logits(logit, y)\n"
                                  "    }\n"
                                  "}\n",
                                  NULL, BATCH};
    em3_module_free(check_model(&mc));
}

static void test_attention_with_padding_mask(void **state) {
    (void)state;
    static const model_case mc = {"mha.em3",
                                  "import \"lib/attention.em3\"\n"
                                  "model mha {\n"
                                  "    const d = 8, t = 4, heads = 2\n"
                                  "    input x : f32[B, t, d]\n"
                                  "    input mask : f32[B, t]\n"
                                  "    label y : f32[B]\n"
                                  "    attn = MultiHeadAttention(d, heads)\n"
                                  "    head = Linear(d, 1)\n"
                                  "    fn forward() {\n"
                                  "        h = masked_mean(attn(x, mask), mask)\n"
                                  "        logit = squeeze(head(h), -1)\n"
                                  "        output p = sigmoid(logit)\n"
                                  "        loss = bce_with_logits(logit, y)\n"
                                  "    }\n"
                                  "}\n",
                                  "mask", BATCH};
    em3_module_free(check_model(&mc));
}

/* The Fusion-Q-Former of models/lib/em3.em3 in both styles (joint: the authors' form; cross:
 * BLIP-2's, with a gelu feed-forward), with a token mask. */
static void test_fusion_qformer(void **state) {
    (void)state;
    static const char *const styles[] = {"joint", "cross"};
    for (int i = 0; i < 2; i++) {
        char src[1024], name[32];
        snprintf(name, sizeof name, "fqf_%s.em3", styles[i]);
        snprintf(src, sizeof src,
                 "import \"lib/em3.em3\"\n"
                 "model fqf {\n"
                 "    const d = 8, t = 3, queries = 2, heads = 2\n"
                 "    input tokens : f32[B, t, d]\n"
                 "    input mask : f32[B, t]\n"
                 "    label y : f32[B]\n"
                 "    fuse = FusionQFormer(d, queries, heads, 1, \"%s\")\n"
                 "    head = Linear(d, 1)\n"
                 "    fn forward() {\n"
                 "        logit = squeeze(head(fuse(tokens, mask)), -1)\n"
                 "        output p = sigmoid(logit)\n"
                 "        loss = bce_with_logits(logit, y)\n"
                 "    }\n"
                 "}\n",
                 styles[i]);
        model_case mc = {name, src, "mask", BATCH};
        em3_module_free(check_model(&mc));
    }
}

/* LoRA over a Linear's weights shared frozen: `base` is used only through `hist`, so its weights
 * get no gradient at all; `own` is also trained on its own path (its gradient comes from that
 * path alone); `solo` is a LoRALinear whose base weights are frozen globals. No frozen use may
 * cost a weight-gradient GEMM: the only matmul of @train with a [din, dout] result is the dW of
 * own's trainable path. The adapters' gradients are checked against differences. */
static void test_lora_shares_frozen(void **state) {
    (void)state;
    static const model_case mc = {"lora.em3",
                                  "import \"lib/nn.em3\"\n"
                                  "model lora {\n"
                                  "    const din = 6, dout = 5, r = 2\n"
                                  "    input x : f32[B, din]\n"
                                  "    input h : f32[B, 4, din]\n"
                                  "    label y : f32[B]\n"
                                  "    base = Linear(din, dout)\n"
                                  "    hist = LoRALinear(din, dout, r) shares base frozen\n"
                                  "    own = Linear(din, dout)\n"
                                  "    own_hist = LoRALinear(din, dout, r) shares own frozen\n"
                                  "    solo = LoRALinear(din, dout, r)\n"
                                  "    fn forward() {\n"
                                  "        z = sum(own(x) + solo(x), axis = -1) +\n"
                                  "            sum(gelu(hist(h)) + own_hist(h), axis = [1, 2])\n"
                                  "        output p = sigmoid(z)\n"
                                  "        loss = bce_with_logits(z, y)\n"
                                  "    }\n"
                                  "}\n",
                                  NULL, BATCH};
    em3_module *m = check_model(&mc);
    const em3_func *tr = em3_module_find_func(m, "train");
    static const struct {
        const char *global;
        bool grad;
    } want[] = {{"base.w", false},        {"base.b", false},     {"solo.w", false},
                {"solo.b", false},        {"own.w", true},       {"own.b", true},
                {"hist.lora_a", true},    {"hist.lora_b", true}, {"solo.lora_a", true},
                {"own_hist.lora_b", true}};
    for (int i = 0; i < (int)(sizeof want / sizeof want[0]); i++) {
        bool has = false;
        for (int o = 0; o < tr->n_out; o++)
            has |= !strncmp(tr->out[o].name, "grad.", 5) &&
                   !strcmp(tr->out[o].name + 5, want[i].global);
        if (has != want[i].grad)
            fail_msg("@train %s a gradient for %s", has ? "returns" : "lacks", want[i].global);
    }
    assert_true(em3_module_find_global(m, "hist.w") < 0); /* bound to base.w */
    assert_int_equal(m->global[em3_module_find_global(m, "solo.w")].kind, EM3_GLOBAL_FROZEN);
    int g = em3_module_find_global(m, "base.w"), weight_gemms = 0;
    for (int i = 0; i < tr->n_node; i++)
        weight_gemms +=
            tr->node[i].op == EM3_OP_MATMUL && em3_type_eq(&tr->node[i].type, &m->global[g].type);
    assert_int_equal(weight_gemms, 1);
    em3_module_free(m);
}

/* The Content-ID-Contrastive loss over in-batch negatives ([B, B] logits). */
static void test_cic_loss(void **state) {
    (void)state;
    static const model_case mc = {"cic.em3",
                                  "import \"lib/em3.em3\"\n"
                                  "model cic {\n"
                                  "    const d = 6, items = 10\n"
                                  "    input item : i32[B] vocab items\n"
                                  "    input feat : f32[B, d]\n"
                                  "    ids = Embedding(items, d, 0.5)\n"
                                  "    content = Linear(d, d)\n"
                                  "    contrast = ContentIdContrastive(d, 4, 0.5)\n"
                                  "    fn forward() {\n"
                                  "        c = content(feat)\n"
                                  "        e = ids(item)\n"
                                  "        output s = sum(c * e, axis = -1)\n"
                                  "        loss = contrast(c, e)\n"
                                  "    }\n"
                                  "}\n",
                                  NULL, 4};
    em3_module_free(check_model(&mc));
}

/* The same loss over 3 sampled negatives per row ([B, 1 + 3] logits each way), the negatives'
 * content and ID embeddings gathered from the tables the batch's come from. */
static void test_cic_sampled_loss(void **state) {
    (void)state;
    static const model_case mc = {"cic_sampled.em3",
                                  "import \"lib/em3.em3\"\n"
                                  "model cic_sampled {\n"
                                  "    const d = 6, items = 10, k = 3\n"
                                  "    input item : i32[B] vocab items\n"
                                  "    input neg : i32[B, k] vocab items\n"
                                  "    ids = Embedding(items, d, 0.5)\n"
                                  "    feats = Embedding(items, d, 0.5)\n"
                                  "    content = Linear(d, d)\n"
                                  "    contrast = ContentIdContrastive(d, 4, 0.5)\n"
                                  "    fn forward() {\n"
                                  "        c = content(feats(item))\n"
                                  "        e = ids(item)\n"
                                  "        output s = sum(c * e, axis = -1)\n"
                                  "        loss = contrast.sampled(c, e, content(feats(neg)), ids(neg))\n"
                                  "    }\n"
                                  "}\n",
                                  NULL, 4};
    em3_module_free(check_model(&mc));
}

/* BPR over gathered embeddings: a batch of 8 over 5 users and 6 items repeats ids, and the
 * user table is gathered once, the item table twice (a chain of scatter_adds). */
static void test_bpr_loss(void **state) {
    (void)state;
    static const model_case mc = {"bpr.em3",
                                  "import \"lib/nn.em3\"\n"
                                  "model bpr {\n"
                                  "    const users = 5, items = 6, d = 4\n"
                                  "    input user : i32[B] vocab users\n"
                                  "    input pos : i32[B] vocab items\n"
                                  "    input neg : i32[B] vocab items\n"
                                  "    user_emb = Embedding(users, d, 0.5)\n"
                                  "    item_emb = Embedding(items, d, 0.5)\n"
                                  "    fn forward() {\n"
                                  "        u = user_emb(user)\n"
                                  "        sp = sum(u * item_emb(pos), axis = -1)\n"
                                  "        sn = sum(u * item_emb(neg), axis = -1)\n"
                                  "        output score = sp\n"
                                  "        loss = mean(softplus(sn - sp))\n"
                                  "    }\n"
                                  "}\n",
                                  NULL, 8};
    em3_module_free(check_model(&mc));
}

/* The top-K models' pieces together (models/lib/graph.em3): FREEDOM's propagation over a
 * user-item and an item-item graph with trainable feature copies, a content branch fused by the
 * FQF and propagated from zero users, BPR, EmbLoss, and the CIC with sampled negatives. */
static void test_graph_model(void **state) {
    (void)state;
    static const model_case mc = {"graph.em3",
                                  "import \"lib/graph.em3\"\n"
                                  "import \"lib/em3.em3\"\n"
                                  "model g {\n"
                                  "    const users = 4, items = 6, d = 4, f = 3\n"
                                  "    input user : i32[B] vocab users\n"
                                  "    input item : i32[B] vocab items\n"
                                  "    input neg : i32[B] vocab items negative item\n"
                                  "    input cneg : i32[B, 2] vocab items negative item\n"
                                  "    data image : f32[items, f]\n"
                                  "    graph ui : f32[users, items] = user_item(dropout = 0.5)\n"
                                  "    graph mm : f32[items, items] = item_knn(k = 2, tables = [\"image\"])\n"
                                  "    freedom = Freedom(users, items, d, [image], ui, mm, 2)\n"
                                  "    proj = Linear(f, d)\n"
                                  "    fuse = FusionQFormer(d, 1, 2)\n"
                                  "    cic = SampledCIC(d, 0.5)\n"
                                  "    fn forward() {\n"
                                  "        z = freedom()\n"
                                  "        c = fuse(unsqueeze(proj(image), 1))\n"
                                  "        m = propagate(ui, zeros([users, d]), c, 2)\n"
                                  "        zu = z[0][user]\n"
                                  "        u = concat([zu, m[0][user]], -1)\n"
                                  "        its = concat([z[1], m[1] + spmm(mm, c)], -1)\n"
                                  "        output score = all_item_scores(u, its)\n"
                                  "        loss = bpr_loss(dot(u, its[item]), dot(u, its[neg])) +\n"
                                  "               0.5 * freedom.feature_loss(zu, item, neg) +\n"
                                  "               0.3 * cic(c, freedom.item_emb, item, cneg) +\n"
                                  "               0.1 * emb_loss([zu, freedom.item_emb[item]])\n"
                                  "    }\n"
                                  "}\n",
                                  NULL, 5};
    em3_module_free(check_model(&mc));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_differentiable_op_has_rows),
        cmocka_unit_test(test_every_op_row),
        cmocka_unit_test(test_mlp_bce),
        cmocka_unit_test(test_attention_with_padding_mask),
        cmocka_unit_test(test_fusion_qformer),
        cmocka_unit_test(test_lora_shares_frozen),
        cmocka_unit_test(test_cic_loss),
        cmocka_unit_test(test_cic_sampled_loss),
        cmocka_unit_test(test_bpr_loss),
        cmocka_unit_test(test_graph_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
