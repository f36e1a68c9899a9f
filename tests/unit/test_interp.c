/* tests/unit/test_interp.c — the reference interpreter against values worked out by hand (or in
 * float64 by PyTorch and pasted in as literals), in both precisions; its data errors; and the
 * deterministic initialisers. The last test walks ops.def and fails for any op no test here ran. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/graph.h"
#include "runtime/init.h"
#include "runtime/interp.h"

#define B EM3_DIM_BATCH
#define F32 EM3_DTYPE_F32
#define I32 EM3_DTYPE_I32
#define LEN(a) ((int64_t)(sizeof(a) / sizeof((a)[0])))

/* Ops that some test has run successfully and checked; test_every_op_is_covered reads it. */
static bool covered[EM3_OP_COUNT];

/* ---- building and running small functions ------------------------------------------------- */

static em3_type ty(em3_dtype dt, int rank, ...) {
    int64_t d[EM3_MAX_RANK];
    va_list ap;
    va_start(ap, rank);
    for (int i = 0; i < rank; i++) d[i] = va_arg(ap, int);
    va_end(ap);
    return em3_type_make(dt, rank, d);
}

typedef struct {
    em3_module *m;
    em3_func *f;
} bld;

static bld bld_new(void) {
    bld b = {em3_module_create("t"), NULL};
    b.f = em3_module_add_func(b.m, "main");
    return b;
}

static em3_node proto(em3_op op) { return em3_node_proto(op, (em3_loc){0}); }

static int add(bld *b, em3_node p, const int *in, int n) {
    return em3_func_add_checked(b->f, &p, in, n);
}

static int input(bld *b, const char *name, em3_type t, int64_t vocab) {
    em3_node p = proto(EM3_OP_INPUT);
    em3_node_set_s(&p, "name", name);
    em3_node_set_i(&p, "vocab", vocab);
    p.type = t;
    return add(b, p, NULL, 0);
}

static int constant(bld *b, double v, em3_type t) {
    em3_node p = proto(EM3_OP_CONST);
    em3_node_set_f(&p, "value", v);
    p.type = t;
    return add(b, p, NULL, 0);
}

static int op1(bld *b, em3_op op, int x) { return add(b, proto(op), (int[]){x}, 1); }
static int op2(bld *b, em3_op op, int x, int y) { return add(b, proto(op), (int[]){x, y}, 2); }

/* A node with one list attribute (axes, perm, shape). */
static int op_list(bld *b, em3_op op, const char *attr, const int64_t *v, int n, int x) {
    em3_node p = proto(op);
    em3_node_set_list(&p, attr, v, n);
    return add(b, p, (int[]){x}, 1);
}

static em3_interp *interp_new(const bld *b, em3_precision p) {
    em3_interp *it = em3_interp_create(b->m, p);
    em3_interp_init_globals(it, 7);
    return it;
}

static void run_ok(const bld *b, em3_interp *it, int64_t batch, const em3_interp_input *in,
                   int n_in) {
    char err[256] = "";
    if (!em3_interp_run(it, "main", batch, in, n_in, err, sizeof err))
        fail_msg("run failed: %s", err);
    for (int i = 0; i < b->f->n_node; i++) covered[b->f->node[i].op] = true;
}

static void expect_close(const double *got, const double *want, int64_t n, double rtol,
                         double atol) {
    for (int64_t i = 0; i < n; i++) {
        bool ok = isnan(want[i]) ? isnan(got[i])
                  : isinf(want[i]) ? got[i] == want[i]
                                   : fabs(got[i] - want[i]) <= rtol * fabs(want[i]) + atol;
        if (!ok) fail_msg("element %lld: got %.17g, want %.17g", (long long)i, got[i], want[i]);
    }
}

/* Runs b's function in both precisions and compares value `y` with `want`: within rtol (and
 * atol) in F64, and in F32 also within the float rounding the interpreter applies after every
 * op (1e-6 relative). */
static void check_within(bld *b, int y, int64_t batch, const em3_interp_input *in, int n_in,
                         const double *want, int64_t n_want, double rtol, double atol) {
    em3_func_add_output(b->f, "y", y);
    for (int p = EM3_PREC_F32; p <= EM3_PREC_F64; p++) {
        em3_interp *it = interp_new(b, (em3_precision)p);
        run_ok(b, it, batch, in, n_in);
        em3_type t;
        const double *got = em3_interp_output(it, "y", &t);
        assert_non_null(got);
        assert_int_equal(em3_type_numel(&t, batch), n_want);
        expect_close(got, want, n_want, p == EM3_PREC_F32 ? fmax(rtol, 1e-6) : rtol, atol);
        em3_interp_free(it);
    }
    em3_module_free(b->m);
}

/* Values worked out exactly: 1e-12 in F64. */
static void check(bld *b, int y, int64_t batch, const em3_interp_input *in, int n_in,
                  const double *want, int64_t n_want) {
    check_within(b, y, batch, in, n_in, want, n_want, 1e-12, 0);
}

/* ---- leaves -------------------------------------------------------------------------------- */

static void test_leaves(void **state) {
    (void)state;
    /* input passes through; const fills its type; B takes the run's batch size */
    bld b = bld_new();
    int x = input(&b, "x", ty(F32, 2, B, 2), 0);
    int c = constant(&b, 0.25, ty(F32, 2, B, 2));
    double xs[] = {1, 2, 3, 4, 5, 6}, want[] = {1.25, 2.25, 3.25, 4.25, 5.25, 6.25};
    check(&b, op2(&b, EM3_OP_ADD, x, c), 3, &(em3_interp_input){"x", xs}, 1, want, 6);

    /* a param reads its global: DATA as the caller filled it, a CONST-initialised one */
    b = bld_new();
    em3_module_add_global(b.m, "table", ty(F32, 2, 2, 2), EM3_GLOBAL_DATA,
                          (em3_init){EM3_INIT_NONE, 0}, (em3_loc){0});
    em3_module_add_global(b.m, "half", ty(F32, 1, 2), EM3_GLOBAL_PARAM,
                          (em3_init){EM3_INIT_CONST, 0.5}, (em3_loc){0});
    em3_node p = proto(EM3_OP_PARAM);
    em3_node_set_s(&p, "name", "table");
    int t = add(&b, p, NULL, 0);
    em3_node_set_s(&p, "name", "half");
    int h = add(&b, p, NULL, 0);
    em3_func_add_output(b.f, "y", op2(&b, EM3_OP_MUL, t, h));
    for (int prec = EM3_PREC_F32; prec <= EM3_PREC_F64; prec++) {
        em3_interp *it = interp_new(&b, (em3_precision)prec);
        double *data = em3_interp_global(it, "table");
        assert_non_null(data);
        assert_null(em3_interp_global(it, "nope"));
        for (int i = 0; i < 4; i++) data[i] = i + 1;
        run_ok(&b, it, 1, NULL, 0);
        expect_close(em3_interp_output(it, "y", NULL), (double[]){0.5, 1, 1.5, 2}, 4, 0, 0);
        em3_interp_free(it);
    }
    em3_module_free(b.m);
}

/* ---- elementwise ----------------------------------------------------------------------------- */

static void test_unary(void **state) {
    (void)state;
    static const struct {
        em3_op op;
        double x[5], want[5];
    } rows[] = {
#define X5 {-2, -0.5, 0, 0.5, 3}
#define P5 {0.25, 0.5, 1, 2, 4}
#define BIG5 {-800, -30, 0, 30, 800}
        {EM3_OP_NEG, X5, {2, 0.5, 0, -0.5, -3}},
        {EM3_OP_EXP, X5, {0.1353352832366127, 0.6065306597126334, 1, 1.6487212707001282,
                          20.085536923187668}},
        {EM3_OP_LOG, P5, {-1.3862943611198906, -0.6931471805599453, 0, 0.6931471805599453,
                          1.3862943611198906}},
        {EM3_OP_SQRT, P5, {0.5, 0.7071067811865476, 1, 1.4142135623730951, 2}},
        {EM3_OP_RSQRT, P5, {2, 1.414213562373095, 1, 0.7071067811865475, 0.5}},
        {EM3_OP_ABS, X5, {2, 0.5, 0, 0.5, 3}},
        {EM3_OP_TANH, X5, {-0.9640275800758169, -0.46211715726000974, 0, 0.46211715726000974,
                           0.9950547536867305}},
        /* stable at both ends: no exp overflow, no 1 - 1 */
        {EM3_OP_SIGMOID, BIG5, {0, 9.357622968839299e-14, 0.5, 0.9999999999999065, 1}},
        {EM3_OP_RELU, X5, {0, 0, 0, 0.5, 3}},
        {EM3_OP_GELU, X5, {-0.04540230591222494, -0.15428599017485606, 0, 0.34571400982514394,
                           2.996362607918227}},
        {EM3_OP_SOFTPLUS, X5, {0.1269280110429725, 0.4740769841801067, 0.6931471805599453,
                               0.9740769841801067, 3.048587351573742}},
        {EM3_OP_SOFTPLUS, BIG5, {0, 9.357622968839737e-14, 0.6931471805599453,
                                 30.000000000000092, 800}},
        {EM3_OP_STOP_GRADIENT, X5, X5},
        {EM3_OP_CAST, {-2.7, -0.5, 0.5, 2.7, 3}, {-2, 0, 0, 2, 3}}, /* to i32: toward zero */
#undef X5
#undef P5
#undef BIG5
    };
    for (int i = 0; i < LEN(rows); i++) {
        bld b = bld_new();
        int x = input(&b, "x", ty(F32, 1, 5), 0);
        em3_node p = proto(rows[i].op);
        if (rows[i].op == EM3_OP_CAST) em3_node_set_i(&p, "to", I32);
        print_message("  %s\n", em3_op_name(rows[i].op));
        check(&b, add(&b, p, &x, 1), 1, &(em3_interp_input){"x", rows[i].x}, 1, rows[i].want, 5);
    }
}

static void test_binary(void **state) {
    (void)state;
    static const double a[5] = {-2, -0.5, 0, 0.5, 3};
    static const struct {
        em3_op op;
        double b[5], want[5];
    } rows[] = {
#define B5 {1, 0.5, 2, 0.5, -4}
        {EM3_OP_ADD, B5, {-1, 0, 2, 1, -1}},
        {EM3_OP_SUB, B5, {-3, -1, -2, 0, 7}},
        {EM3_OP_MUL, B5, {-2, -0.25, 0, 0.25, -12}},
        {EM3_OP_DIV, B5, {-2, -1, 0, 1, -0.75}},
        {EM3_OP_MAXIMUM, B5, {1, 0.5, 2, 0.5, 3}},
        {EM3_OP_MINIMUM, B5, {-2, -0.5, 0, 0.5, -4}},
        {EM3_OP_EQ, B5, {0, 0, 0, 1, 0}},
        {EM3_OP_NE, B5, {1, 1, 1, 0, 1}},
        {EM3_OP_LT, B5, {1, 1, 1, 0, 0}},
        {EM3_OP_LE, B5, {1, 1, 1, 1, 0}},
        {EM3_OP_GT, B5, {0, 0, 0, 0, 1}},
        {EM3_OP_GE, B5, {0, 0, 0, 1, 1}},
        {EM3_OP_BCE_LOGITS, {1, 0, 1, 0, 1}, {2.1269280110429727, 0.4740769841801067,
                                              0.6931471805599453, 0.9740769841801067,
                                              0.048587351573741965}},
#undef B5
    };
    for (int i = 0; i < LEN(rows); i++) {
        bld b = bld_new();
        int x = input(&b, "a", ty(F32, 1, 5), 0), y = input(&b, "b", ty(F32, 1, 5), 0);
        em3_interp_input in[] = {{"a", a}, {"b", rows[i].b}};
        print_message("  %s\n", em3_op_name(rows[i].op));
        check(&b, op2(&b, rows[i].op, x, y), 1, in, 2, rows[i].want, 5);
    }
}

static void test_integer_ops(void **state) {
    (void)state;
    static const double a[] = {3, -4, 7}, c[] = {2, 2, -1};
    em3_interp_input in[] = {{"a", a}, {"c", c}};
    static const struct {
        em3_op op;
        double want[3];
    } rows[] = {
        {EM3_OP_ADD, {5, -2, 6}},     {EM3_OP_MUL, {6, -8, -7}},
        {EM3_OP_MAXIMUM, {3, 2, 7}},  {EM3_OP_LT, {0, 1, 0}}, /* a comparison gives f32 */
    };
    for (int i = 0; i < LEN(rows); i++) {
        bld b = bld_new();
        int x = input(&b, "a", ty(I32, 1, 3), 0), y = input(&b, "c", ty(I32, 1, 3), 0);
        check(&b, op2(&b, rows[i].op, x, y), 1, in, 2, rows[i].want, 3);
    }
    bld b = bld_new();
    int x = input(&b, "a", ty(I32, 1, 3), 0);
    check(&b, op1(&b, EM3_OP_NEG, x), 1, in, 1, (double[]){-3, 4, -7}, 3);
    b = bld_new();
    x = input(&b, "a", ty(I32, 1, 3), 0);
    check(&b, op_list(&b, EM3_OP_SUM, "axes", (int64_t[]){0}, 1, x), 1, in, 1, (double[]){6}, 1);
}

static void test_broadcasting(void **state) {
    (void)state;
    static const double col[] = {1, 2}, row[] = {10, 20, 30}, cube[] = {1, 2, 3, 4, 5, 6};
    em3_interp_input in[] = {{"col", col}, {"row", row}, {"cube", cube}};

    /* [B,1] + [3] -> [B,3] */
    bld b = bld_new();
    int c = input(&b, "col", ty(F32, 2, B, 1), 0), r = input(&b, "row", ty(F32, 1, 3), 0);
    check(&b, op2(&b, EM3_OP_ADD, c, r), 2, in, 2, (double[]){11, 21, 31, 12, 22, 32}, 6);

    /* [2,1,3] * [B,1] -> [2,B,3]: both operands broadcast, ranks differ */
    b = bld_new();
    c = input(&b, "col", ty(F32, 2, B, 1), 0);
    int k = input(&b, "cube", ty(F32, 3, 2, 1, 3), 0);
    check(&b, op2(&b, EM3_OP_MUL, k, c), 2, in, 3,
          (double[]){1, 2, 3, 2, 4, 6, 4, 5, 6, 8, 10, 12}, 12);

    /* where(c, a, b): condition [B,1], branches [3] and a rank-0 const */
    b = bld_new();
    static const double cond[] = {1, 0};
    em3_interp_input win[] = {{"cond", cond}, {"row", row}};
    c = input(&b, "cond", ty(F32, 2, B, 1), 0);
    r = input(&b, "row", ty(F32, 1, 3), 0);
    int minus = constant(&b, -1, ty(F32, 0));
    int w = add(&b, proto(EM3_OP_WHERE), (int[]){c, r, minus}, 3);
    check(&b, w, 2, win, 2, (double[]){10, 20, 30, -1, -1, -1}, 6);

    /* broadcast [3] to [B,2,3], and [B,1] to [B,3] */
    b = bld_new();
    r = input(&b, "row", ty(F32, 1, 3), 0);
    check(&b, op_list(&b, EM3_OP_BROADCAST, "shape", (int64_t[]){B, 2, 3}, 3, r), 2, in, 3,
          (double[]){10, 20, 30, 10, 20, 30, 10, 20, 30, 10, 20, 30}, 12);
    b = bld_new();
    c = input(&b, "col", ty(F32, 2, B, 1), 0);
    check(&b, op_list(&b, EM3_OP_BROADCAST, "shape", (int64_t[]){B, 3}, 2, c), 2, in, 3,
          (double[]){1, 1, 1, 2, 2, 2}, 6);
}

/* ---- reductions ------------------------------------------------------------------------------ */

static void test_reduce(void **state) {
    (void)state;
    static const double x[] = {1, -2, 3, 4, 5, -6, -7, 8, 9, 10, -11, 12}; /* [2,2,3] */
    static const struct {
        em3_op op;
        int64_t axes[3];
        int n_axes;
        bool keepdims;
        double want[6];
        int n_want;
    } rows[] = {
        {EM3_OP_SUM, {0}, 1, false, {-6, 6, 12, 14, -6, 6}, 6},
        {EM3_OP_SUM, {0, 2}, 2, true, {12, 14}, 2},
        {EM3_OP_SUM, {2, 0, 1}, 3, false, {26}, 1},
        {EM3_OP_MAX, {1}, 1, false, {4, 5, 3, 10, 8, 12}, 6},
        {EM3_OP_MAX, {0, 2}, 2, false, {9, 12}, 2},
        {EM3_OP_MEAN, {2}, 1, true, {2.0 / 3, 1, 10.0 / 3, 11.0 / 3}, 4},
    };
    for (int i = 0; i < LEN(rows); i++) {
        bld b = bld_new();
        int in = input(&b, "x", ty(F32, 3, 2, 2, 3), 0);
        em3_node p = proto(rows[i].op);
        em3_node_set_list(&p, "axes", rows[i].axes, rows[i].n_axes);
        em3_node_set_i(&p, "keepdims", rows[i].keepdims);
        int y = add(&b, p, &in, 1);
        assert_int_equal(b.f->node[y].type.rank, rows[i].keepdims ? 3 : 3 - rows[i].n_axes);
        check(&b, y, 1, &(em3_interp_input){"x", x}, 1, rows[i].want, rows[i].n_want);
    }
}

static void test_softmax_family(void **state) {
    (void)state;
    /* the second row would overflow exp without subtracting the max */
    static const double m[] = {1, 2, 3, 1000, 1001, 1002};
    em3_interp_input in = {"m", m};
    static const struct {
        em3_op op;
        int64_t axis;
        double want[6];
        int n_want;
    } rows[] = {
        {EM3_OP_LOGSUMEXP, 1, {3.4076059644443806, 1002.4076059644444}, 2},
        {EM3_OP_LOGSUMEXP, 0, {1000, 1001, 1002}, 3},
        {EM3_OP_SOFTMAX, 1, {0.09003057317038045, 0.2447284710547976, 0.6652409557748218,
                             0.09003057317038045, 0.2447284710547976, 0.6652409557748218}, 6},
        {EM3_OP_SOFTMAX, 0, {0, 0, 0, 1, 1, 1}, 6},
        {EM3_OP_LOG_SOFTMAX, 1, {-2.4076059644443806, -1.4076059644443804, -0.4076059644443804,
                                 -2.4076059644443806, -1.4076059644443804,
                                 -0.4076059644443804}, 6},
    };
    for (int i = 0; i < LEN(rows); i++) {
        bld b = bld_new();
        int x = input(&b, "m", ty(F32, 2, 2, 3), 0);
        em3_node p = proto(rows[i].op);
        em3_node_set_i(&p, "axis", rows[i].axis);
        check(&b, add(&b, p, &x, 1), 1, &in, 1, rows[i].want, rows[i].n_want);
    }

    /* keepdims keeps the axis as 1 */
    bld b = bld_new();
    int x = input(&b, "m", ty(F32, 2, 2, 3), 0);
    em3_node p = proto(EM3_OP_LOGSUMEXP);
    em3_node_set_i(&p, "axis", 1);
    em3_node_set_i(&p, "keepdims", 1);
    int y = add(&b, p, &x, 1);
    assert_int_equal(b.f->node[y].type.rank, 2);
    assert_int_equal(b.f->node[y].type.dim[1], 1);
    check(&b, y, 1, &in, 1, (double[]){3.4076059644443806, 1002.4076059644444}, 2);

    /* softmax along the middle axis of [B,5,3] sums to 1 over that axis */
    double v[2 * 5 * 3];
    em3_rng rng;
    em3_rng_seed(&rng, 3);
    for (int i = 0; i < LEN(v); i++) v[i] = 20 * em3_rng_uniform(&rng) - 10;
    for (int prec = EM3_PREC_F32; prec <= EM3_PREC_F64; prec++) {
        b = bld_new();
        x = input(&b, "v", ty(F32, 3, B, 5, 3), 0);
        p = proto(EM3_OP_SOFTMAX);
        em3_node_set_i(&p, "axis", 1);
        em3_func_add_output(b.f, "y", add(&b, p, &x, 1));
        em3_interp *it = interp_new(&b, (em3_precision)prec);
        run_ok(&b, it, 2, &(em3_interp_input){"v", v}, 1);
        const double *s = em3_interp_output(it, "y", NULL);
        for (int n = 0; n < 2; n++)
            for (int j = 0; j < 3; j++) {
                double sum = 0;
                for (int k = 0; k < 5; k++) sum += s[n * 15 + k * 3 + j];
                assert_true(fabs(sum - 1) < (prec == EM3_PREC_F32 ? 1e-6 : 1e-14));
            }
        em3_interp_free(it);
        em3_module_free(b.m);
    }
}

static int layer_norm(bld *b, int x, int g, int be, double eps) {
    em3_node p = proto(EM3_OP_LAYER_NORM);
    em3_node_set_f(&p, "eps", eps);
    return add(b, p, (int[]){x, g, be}, 3);
}

static void test_layer_norm(void **state) {
    (void)state;
    static const double x[] = {1, 2, 3, 4, -1, 0.5, 0.25, 2}, g[] = {1, 0.5, 2, -1},
                        be[] = {0, 0.25, -1, 0.5};
    em3_interp_input in[] = {{"x", x}, {"g", g}, {"be", be}};
    bld b = bld_new();
    int xi = input(&b, "x", ty(F32, 2, B, 4), 0), gi = input(&b, "g", ty(F32, 1, 4), 0),
        bi = input(&b, "be", ty(F32, 1, 4), 0);
    check(&b, layer_norm(&b, xi, gi, bi, 1e-5), 2, in, 3,
          (double[]){-1.341635419968927, 0.026394096671845446, -0.10557638668738223,
                     -0.8416354199689269, -1.3482779474926398, 0.2793103901628835,
                     -1.3517246819546016, -0.9655195081441739},
          8);

    /* [B,2,5] with a large eps against the formula computed here */
    double v[3 * 2 * 5], gam[5], bet[5], want[3 * 2 * 5];
    for (int i = 0; i < 30; i++) v[i] = (double)((i * 7) % 11) - 4.5;
    for (int k = 0; k < 5; k++) gam[k] = 0.5 + k, bet[k] = 0.25 * k;
    for (int r = 0; r < 6; r++) {
        double mu = 0, var = 0;
        for (int k = 0; k < 5; k++) mu += v[r * 5 + k] / 5;
        for (int k = 0; k < 5; k++) var += (v[r * 5 + k] - mu) * (v[r * 5 + k] - mu) / 5;
        for (int k = 0; k < 5; k++)
            want[r * 5 + k] = (v[r * 5 + k] - mu) / sqrt(var + 0.1) * gam[k] + bet[k];
    }
    em3_interp_input in2[] = {{"x", v}, {"g", gam}, {"be", bet}};
    b = bld_new();
    xi = input(&b, "x", ty(F32, 3, B, 2, 5), 0);
    gi = input(&b, "g", ty(F32, 1, 5), 0);
    bi = input(&b, "be", ty(F32, 1, 5), 0);
    check(&b, layer_norm(&b, xi, gi, bi, 0.1), 3, in2, 3, want, 30);
}

/* ---- data movement --------------------------------------------------------------------------- */

static void test_data_movement(void **state) {
    (void)state;
    double seq[24];
    for (int i = 0; i < 24; i++) seq[i] = i;
    em3_interp_input in = {"x", seq};

    bld b = bld_new(); /* reshape keeps row-major order */
    int x = input(&b, "x", ty(F32, 3, B, 2, 3), 0);
    check(&b, op_list(&b, EM3_OP_RESHAPE, "shape", (int64_t[]){3, B, 2}, 3, x), 2, &in, 1, seq,
          12);

    /* transpose [2,3,4] by perm [2,0,1]: out[k,i,j] = x[i,j,k] */
    double want[24];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++) want[k * 6 + i * 3 + j] = seq[i * 12 + j * 4 + k];
    b = bld_new();
    x = input(&b, "x", ty(F32, 3, 2, 3, 4), 0);
    check(&b, op_list(&b, EM3_OP_TRANSPOSE, "perm", (int64_t[]){2, 0, 1}, 3, x), 1, &in, 1, want,
          24);
    b = bld_new();
    x = input(&b, "x", ty(F32, 2, B, 3), 0);
    check(&b, op_list(&b, EM3_OP_TRANSPOSE, "perm", (int64_t[]){1, 0}, 2, x), 2, &in, 1,
          (double[]){0, 3, 1, 4, 2, 5}, 6);

    /* concat [B,2] and [B,1] along axis 1; three operands along axis 0 */
    static const double one[] = {100, 200};
    em3_interp_input cin[] = {{"x", seq}, {"y", one}};
    b = bld_new();
    x = input(&b, "x", ty(F32, 2, B, 2), 0);
    int y = input(&b, "y", ty(F32, 2, B, 1), 0);
    em3_node p = proto(EM3_OP_CONCAT);
    em3_node_set_i(&p, "axis", 1);
    check(&b, add(&b, p, (int[]){x, y}, 2), 2, cin, 2, (double[]){0, 1, 100, 2, 3, 200}, 6);
    b = bld_new();
    x = input(&b, "x", ty(F32, 2, 2, 2), 0);
    y = input(&b, "y", ty(F32, 2, 1, 2), 0);
    em3_node_set_i(&p, "axis", 0);
    check(&b, add(&b, p, (int[]){y, x, y}, 3), 1, cin, 2,
          (double[]){100, 200, 0, 1, 2, 3, 100, 200}, 8);

    /* slice [1,3) of axis 1 of [B,4], and [1,2) of axis 0 of [3,2,2] */
    b = bld_new();
    x = input(&b, "x", ty(F32, 2, B, 4), 0);
    p = proto(EM3_OP_SLICE);
    em3_node_set_i(&p, "axis", 1);
    em3_node_set_i(&p, "start", 1);
    em3_node_set_i(&p, "end", 3);
    check(&b, add(&b, p, &x, 1), 3, &in, 1, (double[]){1, 2, 5, 6, 9, 10}, 6);
    b = bld_new();
    x = input(&b, "x", ty(F32, 3, 3, 2, 2), 0);
    em3_node_set_i(&p, "axis", 0);
    em3_node_set_i(&p, "end", 2);
    check(&b, add(&b, p, &x, 1), 1, &in, 1, (double[]){4, 5, 6, 7}, 4);
}

/* ---- matmul ---------------------------------------------------------------------------------- */

/* Reference: out[lead, i, j] = Σ_k A[lead_a, i, k] B[lead_b, k, j] with numpy broadcasting of the
 * leading dims, by plain index arithmetic. Dims are given with B already resolved. */
static void naive_matmul(const double *a, const int64_t *ad, int ar, bool ta, const double *b,
                         const int64_t *bd, int br, bool tb, double *c, const int64_t *cd,
                         int cr) {
    int64_t m = cd[cr - 2], n = cd[cr - 1], k = ta ? ad[ar - 2] : ad[ar - 1], nlead = 1;
    for (int i = 0; i < cr - 2; i++) nlead *= cd[i];
    for (int64_t l = 0; l < nlead; l++) {
        int64_t idx[EM3_MAX_RANK], rest = l, oa = 0, ob = 0;
        for (int i = cr - 3; i >= 0; i--) idx[i] = rest % cd[i], rest /= cd[i];
        for (int i = 0; i < ar - 2; i++) /* a's lead dim i is c's dim i + (cr - ar) */
            oa = oa * ad[i] + (ad[i] == 1 ? 0 : idx[i + cr - ar]);
        for (int i = 0; i < br - 2; i++) ob = ob * bd[i] + (bd[i] == 1 ? 0 : idx[i + cr - br]);
        const double *am = a + oa * ad[ar - 2] * ad[ar - 1], *bm = b + ob * bd[br - 2] * bd[br - 1];
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t q = 0; q < k; q++)
                    s += (ta ? am[q * m + i] : am[i * k + q]) *
                         (tb ? bm[j * k + q] : bm[q * n + j]);
                c[(l * m + i) * n + j] = s;
            }
    }
}

static void test_matmul(void **state) {
    (void)state;
    bld b = bld_new(); /* by hand */
    int x = input(&b, "a", ty(F32, 2, 2, 3), 0), y = input(&b, "b", ty(F32, 2, 3, 2), 0);
    em3_interp_input in[] = {{"a", (double[]){1, 2, 3, 4, 5, 6}},
                             {"b", (double[]){7, 8, 9, 10, 11, 12}}};
    check(&b, op2(&b, EM3_OP_MATMUL, x, y), 1, in, 2, (double[]){58, 64, 139, 154}, 4);

    static const struct {
        int ar, br;
        int64_t ad[4], bd[4]; /* B marks the batch dim */
        bool ta, tb;
    } rows[] = {
        {3, 2, {B, 3, 4}, {4, 5}, false, false},       /* one folded GEMM */
        {3, 2, {B, 3, 4}, {5, 4}, false, true},        /* folded, B transposed */
        {3, 2, {B, 4, 3}, {4, 5}, true, false},        /* A transposed: one GEMM per matrix */
        {4, 3, {2, 1, 4, 3}, {3, 5, 4}, true, true},   /* both broadcast and transposed */
        {3, 3, {B, 3, 4}, {1, 4, 2}, false, false},    /* B's batch dim of 1 broadcasts */
        {2, 4, {3, 4}, {2, B, 4, 2}, false, false},    /* A is 2-D, B is batched */
    };
    const int64_t batch = 3;
    for (int i = 0; i < LEN(rows); i++) {
        b = bld_new();
        em3_type at = em3_type_make(F32, rows[i].ar, rows[i].ad),
                 bt = em3_type_make(F32, rows[i].br, rows[i].bd);
        x = input(&b, "a", at, 0);
        y = input(&b, "b", bt, 0);
        em3_node p = proto(EM3_OP_MATMUL);
        em3_node_set_i(&p, "ta", rows[i].ta);
        em3_node_set_i(&p, "tb", rows[i].tb);
        int z = add(&b, p, (int[]){x, y}, 2);
        em3_type ct = b.f->node[z].type;
        int64_t na = em3_type_numel(&at, batch), nb = em3_type_numel(&bt, batch),
                nc = em3_type_numel(&ct, batch), adr[4], bdr[4], cdr[EM3_MAX_RANK];
        for (int d = 0; d < at.rank; d++) adr[d] = at.dim[d] == B ? batch : at.dim[d];
        for (int d = 0; d < bt.rank; d++) bdr[d] = bt.dim[d] == B ? batch : bt.dim[d];
        for (int d = 0; d < ct.rank; d++) cdr[d] = ct.dim[d] == B ? batch : ct.dim[d];
        /* multiples of 1/4: every product and sum is exact, in float as in double */
        double av[256], bv[256], want[256];
        assert_true(na <= 256 && nb <= 256 && nc <= 256);
        for (int64_t j = 0; j < na; j++) av[j] = (double)((j * 7) % 11 - 5) / 4;
        for (int64_t j = 0; j < nb; j++) bv[j] = (double)((j * 5) % 13 - 6) / 4;
        naive_matmul(av, adr, at.rank, rows[i].ta, bv, bdr, bt.rank, rows[i].tb, want, cdr,
                     ct.rank);
        em3_interp_input io[] = {{"a", av}, {"b", bv}};
        print_message("  case %d\n", i);
        check(&b, z, batch, io, 2, want, nc);
    }
}

/* ---- gather and data errors ------------------------------------------------------------------ */

static void test_gather(void **state) {
    (void)state;
    static const double table[] = {0, 1, 10, 11, 20, 21, 30, 31, 40, 41},
                        ids[] = {4, 0, 4, 2, 2, 1};
    em3_interp_input in[] = {{"t", table}, {"ids", ids}};
    bld b = bld_new(); /* repeated ids, 2-D ids: [B,3] of rows of [5,2] -> [B,3,2] */
    int t = input(&b, "t", ty(F32, 2, 5, 2), 0), i = input(&b, "ids", ty(I32, 2, B, 3), 5);
    check(&b, op2(&b, EM3_OP_GATHER, t, i), 2, in, 2,
          (double[]){40, 41, 0, 1, 40, 41, 20, 21, 20, 21, 10, 11}, 12);
    b = bld_new(); /* a 1-D table gives one value per id */
    t = input(&b, "t", ty(F32, 1, 10), 0);
    i = input(&b, "ids", ty(I32, 1, B), 0);
    check(&b, op2(&b, EM3_OP_GATHER, t, i), 6, in, 2, (double[]){20, 0, 20, 10, 10, 1}, 6);
}

/* Runs b's function expecting a data error whose message contains `want`. */
static void expect_error(const bld *b, int64_t batch, const em3_interp_input *in, int n_in,
                         const char *want) {
    em3_interp *it = interp_new(b, EM3_PREC_F64);
    char err[256] = "";
    assert_false(em3_interp_run(it, "main", batch, in, n_in, err, sizeof err));
    if (!strstr(err, want)) fail_msg("error \"%s\" does not contain \"%s\"", err, want);
    assert_null(em3_interp_output(it, "y", NULL)); /* a failed run leaves no results */
    em3_interp_free(it);
}

/* unique, index_of and a gather back: rows computed once per distinct id (a [U1, 2] table,
 * scaled, with U1 = 3 of the 6 ids) and given to every occurrence. */
static void test_distinct_ids(void **state) {
    (void)state;
    static const double table[] = {0, 1, 10, 11, 20, 21, 30, 31, 40, 41}, ids[] = {4, 0, 4, 2, 2, 4};
    em3_interp_input in[] = {{"t", table}, {"ids", ids}};
    bld b = bld_new();
    int t = input(&b, "t", ty(F32, 2, 5, 2), 0), i = input(&b, "ids", ty(I32, 2, B, 3), 5);
    int flat = op_list(&b, EM3_OP_RESHAPE, "shape", (int64_t[]){-3}, 1, i);
    em3_node un = proto(EM3_OP_UNIQUE);
    em3_node_set_i(&un, "sym", 1);
    int u = add(&b, un, (int[]){flat}, 1);
    int pos = op2(&b, EM3_OP_INDEX_OF, flat, u);
    int rows = op2(&b, EM3_OP_GATHER, t, u);
    int two = constant(&b, 2, ty(F32, 0));
    int y = op2(&b, EM3_OP_GATHER, op2(&b, EM3_OP_MUL, rows, two), pos);
    em3_func_add_output(b.f, "y", y);
    em3_interp *it = interp_new(&b, EM3_PREC_F64);
    run_ok(&b, it, 2, in, 2);
    const double *uv = em3_interp_value(it, u), *pv = em3_interp_value(it, pos);
    expect_close(uv, (double[]){0, 2, 4}, 3, 0, 0);
    expect_close(pv, (double[]){2, 0, 2, 1, 1, 2}, 6, 0, 0);
    expect_close(em3_interp_output(it, "y", NULL), (double[]){80, 82, 0, 2, 80, 82, 40, 42, 40, 42, 80, 82}, 12, 0, 0);
    em3_interp_free(it);
    em3_module_free(b.m);

    /* index_of of an id unique did not see */
    b = bld_new();
    i = input(&b, "ids", ty(I32, 1, B), 5);
    int j = input(&b, "other", ty(I32, 1, B), 5);
    u = add(&b, un, (int[]){i}, 1);
    em3_func_add_output(b.f, "y", op2(&b, EM3_OP_INDEX_OF, j, u));
    expect_error(&b, 2, (em3_interp_input[]){{"ids", ids}, {"other", (double[]){4, 3}}}, 2,
                 "index_of %3: id 3 is not among the 2 distinct ids");
    em3_module_free(b.m);
}

static void test_data_errors(void **state) {
    (void)state;
    bld b = bld_new();
    int t = input(&b, "t", ty(F32, 2, 3, 2), 0), ids = input(&b, "ids", ty(I32, 1, B), 0);
    int g = op2(&b, EM3_OP_GATHER, t, ids);
    em3_func_add_output(b.f, "y", g);
    static const double table[6] = {0}, bad_hi[] = {0, 3}, bad_lo[] = {-1, 0}, frac[] = {1.5, 0},
                        good[] = {2, 0};
    expect_error(&b, 2, (em3_interp_input[]){{"t", table}, {"ids", bad_hi}}, 2,
                 "gather %2: id 3 is outside the table's 3 rows");
    expect_error(&b, 2, (em3_interp_input[]){{"t", table}, {"ids", bad_lo}}, 2,
                 "gather %2: id -1 is outside");
    expect_error(&b, 2, (em3_interp_input[]){{"t", table}, {"ids", frac}}, 2,
                 "input @ids: value 1.5 at position 0 is not an i32");
    expect_error(&b, 2, (em3_interp_input[]){{"t", table}}, 1, "input @ids was not given");

    /* the same interpreter runs again after an error */
    em3_interp *it = interp_new(&b, EM3_PREC_F64);
    char err[256];
    assert_false(em3_interp_run(it, "main", 2, (em3_interp_input[]){{"t", table}, {"ids", bad_hi}},
                                2, err, sizeof err));
    assert_true(em3_interp_run(it, "main", 2, (em3_interp_input[]){{"t", table}, {"ids", good}},
                               2, err, sizeof err));
    assert_non_null(em3_interp_output(it, "y", NULL));
    assert_false(em3_interp_run(it, "nope", 2, NULL, 0, err, sizeof err));
    assert_non_null(strstr(err, "no function @nope"));
    em3_interp_free(it);
    em3_module_free(b.m);

    /* an id outside the input's vocabulary, before any op uses it */
    b = bld_new();
    em3_func_add_output(b.f, "y", input(&b, "item", ty(I32, 1, B), 20000));
    static const double items[] = {0, 19999, 7, 20001};
    expect_error(&b, 4, &(em3_interp_input){"item", items}, 1,
                 "input @item: id 20001 at position 3 is outside its vocabulary of 20000");
    em3_module_free(b.m);

    /* a non-integer id that no input check saw (an i32 const) is caught by gather */
    b = bld_new();
    t = input(&b, "t", ty(F32, 2, 3, 2), 0);
    em3_func_add_output(b.f, "y", op2(&b, EM3_OP_GATHER, t, constant(&b, 2.5, ty(I32, 1, 1))));
    expect_error(&b, 1, &(em3_interp_input){"t", table}, 1, "gather %2: id 2.5 is not an integer");
    em3_module_free(b.m);
}

/* spmm: G = [[1, 0, 2], [0, 0.5, 0]] (the (0, 0) entry given twice, as 0.5 + 0.5: repeats sum),
 * times x [3, B] and, transposed, times y [2, B]; then the same function with no graph bound. */
static void test_spmm(void **state) {
    (void)state;
    em3_graph *gr = em3_graph_from_coo(2, 3, 4, (int32_t[]){0, 0, 0, 1}, (int32_t[]){0, 2, 0, 1},
                                       (float[]){0.5f, 2, 0.5f, 0.5f});
    static const double x[] = {1, 2, 3, 4, 5, 6}, y[] = {1, 2, 3, 4};
    static const double gx[] = {11, 14, 1.5, 2}, gty[] = {1, 2, 1.5, 2, 2, 4};
    for (int tr = 0; tr < 2; tr++) {
        bld b = bld_new();
        em3_module_add_graph(b.m, "g", ty(F32, 2, 2, 3), "user_item", (em3_loc){0});
        int in = input(&b, "x", ty(F32, 2, tr ? 2 : 3, B), 0);
        em3_node p = proto(EM3_OP_SPMM);
        em3_node_set_s(&p, "graph", "g");
        em3_node_set_i(&p, "transpose", tr);
        em3_func_add_output(b.f, "y", add(&b, p, &in, 1));
        for (int prec = EM3_PREC_F32; prec <= EM3_PREC_F64; prec++) {
            em3_interp *it = interp_new(&b, (em3_precision)prec);
            em3_interp_bind_graph(it, "g", gr);
            run_ok(&b, it, 2, &(em3_interp_input){"x", tr ? y : x}, 1);
            expect_close(em3_interp_output(it, "y", NULL), tr ? gty : gx, tr ? 6 : 4, 1e-12, 0);
            em3_interp_free(it);
        }
        if (tr) expect_error(&b, 2, &(em3_interp_input){"x", y}, 1, "graph @g is not bound");
        em3_module_free(b.m);
    }
    em3_graph_free(gr);
}

/* ---- backward helpers ------------------------------------------------------------------------ */

static void test_scatter_add(void **state) {
    (void)state;
    /* ids [B,2] = {3,1 | 3,3}: row 3 collects three rows, row 1 one, rows 0 and 2 none */
    static const double base[] = {0, 1, 2, 3, 4, 5, 6, 7}, ids[] = {3, 1, 3, 3},
                        src[] = {1, 2, 10, 20, 100, 200, 1000, 2000};
    em3_interp_input in[] = {{"base", base}, {"ids", ids}, {"src", src}};
    bld b = bld_new();
    int t = input(&b, "base", ty(F32, 2, 4, 2), 0), i = input(&b, "ids", ty(I32, 2, B, 2), 0),
        r = input(&b, "src", ty(F32, 3, B, 2, 2), 0);
    int y = add(&b, proto(EM3_OP_SCATTER_ADD), (int[]){t, i, r}, 3);
    check(&b, y, 2, in, 3, (double[]){0, 1, 12, 23, 4, 5, 1107, 2209}, 8);

    /* an id outside the table is a data error, as for gather */
    b = bld_new();
    t = input(&b, "base", ty(F32, 2, 4, 2), 0);
    i = input(&b, "ids", ty(I32, 1, B), 0);
    r = input(&b, "src", ty(F32, 2, B, 2), 0);
    em3_func_add_output(b.f, "y", add(&b, proto(EM3_OP_SCATTER_ADD), (int[]){t, i, r}, 3));
    expect_error(&b, 2,
                 (em3_interp_input[]){{"base", base}, {"ids", (double[]){0, 4}}, {"src", src}}, 3,
                 "scatter_add %3: id 4 is outside the table's 4 rows");
    em3_module_free(b.m);
}

static void test_numel(void **state) {
    (void)state;
    static const double zeros[4 * 3 * 5] = {0};
    em3_interp_input in = {"x", zeros};
    static const struct {
        int64_t axes[3];
        int n;
        double want;
    } rows[] = {{{0, 2}, 2, 20}, {{1}, 1, 3}, {{0}, 1, 4}, {{2, 1, 0}, 3, 60}};
    for (int k = 0; k < LEN(rows); k++) { /* B = 4 is known only at run time */
        bld b = bld_new();
        int x = input(&b, "x", ty(F32, 3, B, 3, 5), 0);
        check(&b, op_list(&b, EM3_OP_NUMEL, "axes", rows[k].axes, rows[k].n, x), 4, &in, 1,
              &rows[k].want, 1);
    }
}

/* Central differences (step h, F64) of L = Σ w·y, y the value `y` of b's function, with respect
 * to each of the n elements of input `k`, into g. */
static void fd_gradient(const bld *b, int y, int64_t batch, em3_interp_input *in, int n_in, int k,
                        int64_t n, const double *w, double *g) {
    const double h = 1e-5;
    double *x = malloc(sizeof(double) * (size_t)n);
    memcpy(x, in[k].data, sizeof(double) * (size_t)n);
    const double *saved = in[k].data;
    in[k].data = x;
    em3_interp *it = interp_new(b, EM3_PREC_F64);
    int64_t ny = em3_type_numel(&b->f->node[y].type, batch);
    for (int64_t j = 0; j < n; j++) {
        double side[2], x0 = x[j];
        for (int s = 0; s < 2; s++) {
            x[j] = x0 + (s ? -h : h);
            char err[256];
            if (!em3_interp_run(it, "main", batch, in, n_in, err, sizeof err)) fail_msg("%s", err);
            const double *v = em3_interp_value(it, y);
            side[s] = 0;
            for (int64_t i = 0; i < ny; i++) side[s] += w[i] * v[i];
        }
        x[j] = x0;
        g[j] = (side[0] - side[1]) / (2 * h);
    }
    em3_interp_free(it);
    in[k].data = saved;
    free(x);
}

/* gelu_grad and layer_norm_grad against central differences of gelu and layer_norm. With
 * h = 1e-5 the difference quotient is good to ~1e-10 here, hence rtol 1e-7 and atol 1e-9;
 * inputs are multiples of 1/8 so that F32 mode stores them exactly. */
static void test_grad_kernels(void **state) {
    (void)state;
    static const double x[] = {-3, -1.5, -0.5, -0.125, 0, 0.25, 1, 2.5},
                        dy[] = {0.5, -1, 2, 0.25, -0.75, 1.5, -2, 1},
                        gamma[] = {1.5, -0.5, 2, 0.75}, beta[] = {0, 0, 0, 0};
    double want[8];

    em3_interp_input gin[] = {{"x", x}, {"dy", dy}};
    bld f = bld_new();
    int y = op1(&f, EM3_OP_GELU, input(&f, "x", ty(F32, 1, 8), 0));
    fd_gradient(&f, y, 1, gin, 1, 0, 8, dy, want);
    em3_module_free(f.m);
    bld b = bld_new();
    int xi = input(&b, "x", ty(F32, 1, 8), 0), di = input(&b, "dy", ty(F32, 1, 8), 0);
    check_within(&b, op2(&b, EM3_OP_GELU_GRAD, xi, di), 1, gin, 2, want, 8, 1e-7, 1e-9);

    /* x as [B,4] with B = 2, eps large enough to matter */
    em3_interp_input lin[] = {{"x", x}, {"g", gamma}, {"be", beta}, {"dy", dy}};
    f = bld_new();
    y = layer_norm(&f, input(&f, "x", ty(F32, 2, B, 4), 0), input(&f, "g", ty(F32, 1, 4), 0),
                   input(&f, "be", ty(F32, 1, 4), 0), 0.25);
    fd_gradient(&f, y, 2, lin, 3, 0, 8, dy, want);
    em3_module_free(f.m);
    b = bld_new();
    xi = input(&b, "x", ty(F32, 2, B, 4), 0);
    int gi = input(&b, "g", ty(F32, 1, 4), 0);
    di = input(&b, "dy", ty(F32, 2, B, 4), 0);
    em3_node p = proto(EM3_OP_LAYER_NORM_GRAD);
    em3_node_set_f(&p, "eps", 0.25);
    check_within(&b, add(&b, p, (int[]){xi, gi, di}, 3), 2, lin, 4, want, 8, 1e-7, 1e-9);
}

/* dropout is x; dropout_train keeps each element with probability 1 − p, scaled by 1/(1 − p),
 * by a hash of (salt, step, index in the whole batch): the same mask for the same three,
 * another for another salt or step, independent of the values, and rows run apart (from row
 * row0 on, as a shard runs them) get the whole batch's mask. The hash itself is pinned:
 * changing it changes every trained model. */
static double dropout_rows(double p, int64_t salt, double step, double row0, int64_t batch, int64_t width,
                           const double *x, double *out) {
    bld b = bld_new();
    int xi = input(&b, "x", ty(F32, 2, B, width), 0), si = input(&b, "step", ty(F32, 0), 0);
    int ri = input(&b, "row0", ty(F32, 0), 0);
    em3_node d = proto(EM3_OP_DROPOUT_TRAIN);
    em3_node_set_f(&d, "p", p);
    em3_node_set_i(&d, "salt", salt);
    em3_func_add_output(b.f, "y", add(&b, d, (int[]){xi, si, ri}, 3));
    em3_interp *it = interp_new(&b, EM3_PREC_F64);
    em3_interp_input in[] = {{"x", x}, {"step", &step}, {"row0", &row0}};
    run_ok(&b, it, batch, in, 3);
    const double *y = em3_interp_output(it, "y", NULL);
    double kept = 0;
    for (int64_t i = 0; i < batch * width; i++) kept += (out[i] = y[i]) != 0;
    em3_interp_free(it);
    em3_module_free(b.m);
    return kept / (double)(batch * width);
}

static double dropout_run(double p, int64_t salt, double step, const double *x, int64_t n, double *out) {
    return dropout_rows(p, salt, step, 0, 1, n, x, out);
}

static void test_dropout(void **state) {
    (void)state;
    static const double x5[] = {-2, -0.5, 0, 0.5, 3};
    bld b = bld_new();
    em3_node d = proto(EM3_OP_DROPOUT);
    em3_node_set_f(&d, "p", 0.5);
    check(&b, add(&b, d, (int[]){input(&b, "x", ty(F32, 1, 5), 0)}, 1), 1, &(em3_interp_input){"x", x5}, 1,
          x5, 5);

    enum { N = 8192 };
    double *x = malloc(sizeof(double) * N), *a = malloc(sizeof(double) * N), *c = malloc(sizeof(double) * N);
    for (int i = 0; i < N; i++) x[i] = 1 + i % 7;
    for (int k = 0; k < 3; k++) { /* kept fraction within 4 σ of 1 − p, kept values x/(1 − p) */
        double p = (double[]){0.1, 0.5, 0.9}[k], kept = dropout_run(p, 3, 1, x, N, a);
        assert_true(fabs(kept - (1 - p)) < 4 * sqrt(p * (1 - p) / N));
        for (int i = 0; i < N; i++) assert_true(a[i] == 0 || fabs(a[i] - x[i] / (1 - p)) < 1e-12);
    }
    dropout_run(0.5, 3, 1, x, N, a);
    dropout_run(0.5, 3, 1, x, N, c);
    assert_memory_equal(a, c, sizeof(double) * N);
    for (int k = 0; k < 2; k++) { /* another salt or step: agreement about ½ (independent masks) */
        dropout_run(0.5, k ? 4 : 3, k ? 1 : 2, x, N, c);
        int same = 0;
        for (int i = 0; i < N; i++) same += (a[i] != 0) == (c[i] != 0);
        assert_true(fabs(same / (double)N - 0.5) < 4 * sqrt(0.25 / N));
    }
    dropout_run(0, 3, 1, x, N, a);
    assert_memory_equal(a, x, sizeof(double) * N);
    dropout_rows(0.5, 3, 2, 0, 8, N / 8, x, a); /* rows 5..7 apart, as the last shard of three */
    dropout_rows(0.5, 3, 2, 5, 3, N / 8, x + 5 * (N / 8), c);
    assert_memory_equal(a + 5 * (N / 8), c, sizeof(double) * 3 * (N / 8));
    free(x);
    free(a);
    free(c);

    assert_int_equal(em3_dropout_mix(0), 0);
    assert_int_equal(em3_dropout_mix(1), 0x514e28b7u); /* murmur3's fmix32(1) */
    assert_int_equal(em3_dropout_key(3, 1), 0x6af260c0u);
    assert_int_equal(em3_dropout_threshold(0.5), 0x80000000u);
}

/* ---- fused ops --------------------------------------------------------------------------------- */

static int attention_node(bld *b, em3_op op, double scale, const int *in, int n) {
    em3_node p = proto(op);
    em3_node_set_f(&p, "scale", scale);
    return add(b, p, in, n);
}

/* By hand, with scores that are logarithms: q = (2, 0) against keys (0, ln 3) at scale 0.5
 * scores (0, ln 3) for the first query, so p = (1/4, 3/4), and (0, 0) for the second, p = (1/2,
 * 1/2); with v = ((4, 0), (8, 4)) the rows are (7, 3) and (6, 2). A mask that keeps only key 0
 * gives v's first row, one that keeps nothing gives zeros (not NaN). */
static void test_attention(void **state) {
    (void)state;
    static const double q[] = {2, 0}, k[] = {0, 1.0986122886681098}, v[] = {4, 0, 8, 4};
    /* unmasked, 2-D */
    bld b = bld_new();
    int in[4] = {input(&b, "q", ty(F32, 2, 2, 1), 0), input(&b, "k", ty(F32, 2, 2, 1), 0),
                 input(&b, "v", ty(F32, 2, 2, 2), 0)};
    em3_interp_input io[4] = {{"q", q}, {"k", k}, {"v", v}};
    check(&b, attention_node(&b, EM3_OP_ATTENTION, 0.5, in, 3), 1, io, 3, (double[]){7, 3, 6, 2}, 4);

    /* a padding mask [B, 1, 1, tk] per batch row (all keys, key 0 only, none) over one head;
     * k and v are 2-D and broadcast over the batch */
    static const double q3[] = {2, 0, 2, 0, 2, 0}, pad[] = {1, 1, 1, 0, 0, 0};
    b = bld_new();
    in[0] = input(&b, "q", ty(F32, 4, B, 1, 2, 1), 0);
    in[1] = input(&b, "k", ty(F32, 2, 2, 1), 0);
    in[2] = input(&b, "v", ty(F32, 2, 2, 2), 0);
    in[3] = input(&b, "mask", ty(F32, 4, B, 1, 1, 2), 0);
    em3_interp_input io3[] = {{"q", q3}, {"k", k}, {"v", v}, {"mask", pad}};
    check(&b, attention_node(&b, EM3_OP_ATTENTION, 0.5, in, 4), 3, io3, 4,
          (double[]){7, 3, 6, 2, 4, 0, 4, 0, 0, 0, 0, 0}, 12);

    /* a mask per query row [tq, tk]: the second query sees key 1 only */
    b = bld_new();
    for (int i = 0; i < 3; i++) in[i] = input(&b, io[i].name, ty(F32, 2, 2, i == 2 ? 2 : 1), 0);
    in[3] = input(&b, "mask", ty(F32, 2, 2, 2), 0);
    io[3] = (em3_interp_input){"mask", (double[]){1, 1, 0, 1}};
    check(&b, attention_node(&b, EM3_OP_ATTENTION, 0.5, in, 4), 1, io, 4, (double[]){7, 3, 8, 4}, 4);
}

/* attention_grad against central differences of attention: [dq; dk; dv] for a loss Σ do·o,
 * over 2 heads whose k and v are shared ([1, tk, d]), with a per-row mask that leaves the last
 * query of the second head no key (its gradients are zero, and it adds nothing to dk and dv).
 * Inputs are multiples of 1/8 (exact in F32 mode); o comes from the F64 forward. */
static void test_attention_grad(void **state) {
    (void)state;
    enum { H = 2, TQ = 3, TK = 4, D = 2 };
    double q[H * TQ * D], k[TK * D], v[TK * D], dout[H * TQ * D], mask[H * TQ * TK];
    for (int i = 0; i < H * TQ * D; i++) q[i] = (double)((i * 5) % 11 - 5) / 8;
    for (int i = 0; i < TK * D; i++) k[i] = (double)((i * 7) % 9 - 4) / 8, v[i] = (double)((i * 3) % 7 - 3) / 4;
    for (int i = 0; i < H * TQ * D; i++) dout[i] = (double)((i * 3) % 5 - 2) / 2;
    for (int i = 0; i < H * TQ * TK; i++) mask[i] = i >= (H * TQ - 1) * TK ? 0 : (i % 3 != 1);
    em3_type qt = ty(F32, 3, H, TQ, D), kt = ty(F32, 3, 1, TK, D), mt = ty(F32, 3, H, TQ, TK);
    em3_interp_input in[] = {{"q", q}, {"k", k}, {"v", v}, {"mask", mask}, {"o", NULL}, {"do", dout}};

    bld f = bld_new();
    int fin[4] = {input(&f, "q", qt, 0), input(&f, "k", kt, 0), input(&f, "v", kt, 0), input(&f, "mask", mt, 0)};
    int y = attention_node(&f, EM3_OP_ATTENTION, 0.7, fin, 4);
    double want[(TQ + 2 * TK) * D * H] = {0}, g[H * TQ * D], o[H * TQ * D];
    em3_interp *it = interp_new(&f, EM3_PREC_F64);
    run_ok(&f, it, 1, in, 4);
    memcpy(o, em3_interp_value(it, y), sizeof o);
    em3_interp_free(it);
    /* head by head (the loss restricted to one head's do): k and v are shared, and their
     * gradient in the packed result is each head's part, summed only by the VJP */
    for (int op = 0; op < 3; op++)
        for (int h = 0; h < H; h++) {
            double wh[H * TQ * D] = {0};
            memcpy(wh + h * TQ * D, dout + h * TQ * D, sizeof(double) * TQ * D);
            fd_gradient(&f, y, 1, in, 4, op, op ? TK * D : H * TQ * D, wh, g);
            memcpy(&want[h * (TQ + 2 * TK) * D + (op ? (TQ + (op - 1) * TK) * D : 0)], op ? g : g + h * TQ * D,
                   sizeof(double) * (size_t)(op ? TK : TQ) * D);
        }
    for (int i = 0; i < D; i++) /* the query without a key: no gradient */
        assert_true(fabs(want[(TQ + 2 * TK) * D + (TQ - 1) * D + i]) < 1e-9);
    em3_module_free(f.m);

    in[4].data = o;
    bld b = bld_new();
    int bin[6] = {input(&b, "q", qt, 0), input(&b, "k", kt, 0), input(&b, "v", kt, 0), input(&b, "o", qt, 0),
                  input(&b, "do", qt, 0), input(&b, "mask", mt, 0)};
    check_within(&b, attention_node(&b, EM3_OP_ATTENTION_GRAD, 0.7, bin, 6), 1, in, 6, want,
                 LEN(want), 1e-7, 1e-8);
}

/* x w + 0.5 (x a) b by hand, over a rank-3 x whose rows fold into one GEMM: w = I, a = (1, 1)ᵀ,
 * b = (1, −1); x = (1, 2) gives (1, 2) + 0.5·3·(1, −1) = (2.5, 0.5), x = (3, −1) gives (4, −2). */
/* A fused program gives exactly what its ops give one by one, broadcasting included. */
static void test_fused(void **state) {
    (void)state;
    bld b = bld_new();
    int x = input(&b, "x", ty(F32, 2, B, 3), 0), w = input(&b, "w", ty(F32, 1, 3), 0);
    int ref = op1(&b, EM3_OP_RELU, op2(&b, EM3_OP_ADD, op2(&b, EM3_OP_MUL, x, w), constant(&b, 1.5, ty(F32, 0))));
    em3_node p = proto(EM3_OP_FUSED);
    em3_node_set_s(&p, "program", "mul(%0, %1); add(#0, 1.5); relu(#1)");
    int fz = add(&b, p, (int[]){x, w}, 2);
    em3_func_add_output(b.f, "ref", ref);
    em3_func_add_output(b.f, "fused", fz);
    double xv[6] = {-3, -1, 0.25, 2, -0.5, 1e8}, wv[3] = {0.5, 2, -1};
    for (int prec = EM3_PREC_F32; prec <= EM3_PREC_F64; prec++) {
        em3_interp *it = interp_new(&b, (em3_precision)prec);
        run_ok(&b, it, 2, (em3_interp_input[]){{"x", xv}, {"w", wv}}, 2);
        expect_close(em3_interp_output(it, "fused", NULL), em3_interp_output(it, "ref", NULL), 6, 0, 0);
        expect_close(em3_interp_output(it, "fused", NULL), (double[]){0, 0, 1.25, 2.5, 0.5, 0}, 6, 0, 0);
        em3_interp_free(it);
    }
    em3_module_free(b.m);
}

static void test_lora_matmul(void **state) {
    (void)state;
    bld b = bld_new();
    int in[4] = {input(&b, "x", ty(F32, 3, B, 2, 2), 0), input(&b, "w", ty(F32, 2, 2, 2), 0),
                 input(&b, "a", ty(F32, 2, 2, 1), 0), input(&b, "b", ty(F32, 2, 1, 2), 0)};
    em3_node p = proto(EM3_OP_LORA_MATMUL);
    em3_node_set_f(&p, "scale", 0.5);
    em3_interp_input io[] = {{"x", (double[]){1, 2, 3, -1, 0, 0, 1, 0}},
                             {"w", (double[]){1, 0, 0, 1}},
                             {"a", (double[]){1, 1}},
                             {"b", (double[]){1, -1}}};
    check(&b, add(&b, p, in, 4), 2, io, 4, (double[]){2.5, 0.5, 4, -2, 0, 0, 1.5, -0.5}, 8);
}

static void test_sparse_sqnorm(void **state) {
    (void)state;
    /* ids {1, 3, 1}: row 1 is [1,2] + [5,6] = [6,8] before squaring, so 36 + 64 + 9 + 16 = 125
     * (squaring each row first would give 91) */
    static const double ids[] = {1, 3, 1}, rows[] = {1, 2, 3, 4, 5, 6};
    em3_interp_input in[] = {{"ids", ids}, {"rows", rows}};
    bld b = bld_new();
    int i = input(&b, "ids", ty(I32, 1, B), 0), r = input(&b, "rows", ty(F32, 2, B, 2), 0);
    check(&b, op2(&b, EM3_OP_SPARSE_SQNORM, i, r), 3, in, 2, (double[]){125}, 1);
}

/* ---- optimizer updates ----------------------------------------------------------------------- */

/* A read of a new global. */
static int global_read(bld *b, const char *name, em3_type t, em3_global_kind kind) {
    em3_module_add_global(b->m, name, t, kind, (em3_init){EM3_INIT_NONE, 0}, (em3_loc){0});
    em3_node p = proto(EM3_OP_PARAM);
    em3_node_set_s(&p, "name", name);
    return add(b, p, NULL, 0);
}

typedef struct {
    const char *name;
    double v;
} attr_value;

/* An update node of `op` with the given attributes (bools set as ints). */
static int update_node(bld *b, em3_op op, const attr_value *attrs, int n_attr, const int *in,
                       int n_in) {
    em3_node p = proto(op);
    for (int i = 0; i < n_attr && attrs[i].name; i++) {
        if (em3_op_attr(op, em3_op_attr_slot(op, attrs[i].name)).kind == EM3_ATTR_BOOL)
            em3_node_set_i(&p, attrs[i].name, (int64_t)attrs[i].v);
        else
            em3_node_set_f(&p, attrs[i].name, attrs[i].v);
    }
    return add(b, p, in, n_in);
}

static const char *const state_names[2] = {"s0", "s1"};

/* Reads the updated parameter both as the op's result and as the global it wrote. */
static void expect_global(em3_interp *it, const char *name, const double *want, int64_t n) {
    expect_close(em3_interp_global(it, name), want, n, 1e-6, 0);
}

/* Two steps of each dense update on p = [1, -2] with g1 = [0.5, 0.25], g2 = [-0.25, 1] and
 * lr = 0.125, against the closed forms (PyTorch's formulas) evaluated by hand in float64:
 *   sgd       p ← p − lr(g + wd·p)
 *   momentum  b ← μb + g + wd·p, p ← p − lr·b
 *   adam      g ← g + wd·p (L2) or p ← p(1 − lr·wd) (decoupled, AdamW); m ← β₁m + (1−β₁)g,
 *             v ← β₂v + (1−β₂)g², p ← p − lr·m̂/(√v̂ + ε), m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ)
 *             (t = 1: p − lr·g/(|g| + ε); t = 2: m̂ = (β₁g1 + g2)/(1+β₁),
 *             v̂ = (β₂g1² + g2²)/(1+β₂))
 *   adagrad   s ← s + g², p ← p − lr·g/(√s + ε), s starting at 0.1
 * Relative tolerance 1e-6: F32 mode rounds the parameter and the state after every step. */
static void test_dense_updates(void **state) {
    (void)state;
    static const struct {
        em3_op op;
        attr_value attr[2];
        int n_state;
        double state0;
        double p[2][2]; /* after step 1, after step 2 */
        double s[2][2]; /* the states after step 2 */
    } rows[] = {
        {EM3_OP_SGD_UPDATE,
         {{"wd", 0.01}},
         0,
         0,
         {{0.93625, -2.02875}, {0.9663296875, -2.1512140625}},
         {{0}}},
        {EM3_OP_MOMENTUM_UPDATE,
         {{"momentum", 0.9}},
         1,
         0,
         {{0.9375, -2.03125}, {0.9125, -2.184375}},
         {{0.2, 1.225}}},
        {EM3_OP_ADAM_UPDATE,
         {{"wd", 0}},
         2,
         0,
         {{0.8750000025, -2.124999995}, {0.841707873384808, -2.23554705480564}},
         {{0.02, 0.1225}, {0.00031225, 0.0010624375}}},
        {EM3_OP_ADAM_UPDATE,
         {{"wd", 0.1}},
         2,
         0, /* L2: the decay enters the moments */
         {{0.8750000020833333, -2.124999975000005}, {0.8184854764762547, -2.223134932658769}},
         {{0.03775000002083332, 0.08325000024999994},
          {0.000386046249932292, 0.0006226537539374998}}},
        {EM3_OP_ADAM_UPDATE,
         {{"wd", 0.1}, {"decoupled", 1}},
         2,
         0, /* AdamW: moments as wd = 0 */
         {{0.8625000025, -2.099999995}, {0.8184266233535581, -2.18429705486814}},
         {{0.02, 0.1225}, {0.00031225, 0.0010624375}}},
        {EM3_OP_ADAGRAD_UPDATE,
         {{"eps", 1e-10}},
         1,
         0.1,
         {{0.8943557181767926, -2.0775217090990243}, {0.9430119021793121, -2.1934564330283135}},
         {{0.4125, 1.1625}}},
    };
    static const double p0[] = {1, -2}, g[2][2] = {{0.5, 0.25}, {-0.25, 1}}, lr[] = {0.125};
    for (int r = 0; r < LEN(rows); r++) {
        print_message("  %s (row %d)\n", em3_op_name(rows[r].op), r);
        bld b = bld_new();
        em3_type t = ty(F32, 1, 2), scalar = ty(F32, 0);
        bool adam = rows[r].op == EM3_OP_ADAM_UPDATE;
        int in[6], n = 0;
        in[n++] = global_read(&b, "p", t, EM3_GLOBAL_PARAM);
        in[n++] = input(&b, "g", t, 0);
        in[n++] = input(&b, "lr", scalar, 0);
        if (adam) in[n++] = input(&b, "step", scalar, 0);
        for (int s = 0; s < rows[r].n_state; s++)
            in[n++] = global_read(&b, state_names[s], t, EM3_GLOBAL_STATE);
        em3_func_add_output(b.f, "y", update_node(&b, rows[r].op, rows[r].attr, 2, in, n));
        for (int prec = EM3_PREC_F32; prec <= EM3_PREC_F64; prec++) {
            em3_interp *it = interp_new(&b, (em3_precision)prec);
            memcpy(em3_interp_global(it, "p"), p0, sizeof p0);
            for (int s = 0; s < rows[r].n_state; s++)
                for (int i = 0; i < 2; i++)
                    em3_interp_global(it, state_names[s])[i] = rows[r].state0;
            for (int step = 0; step < 2; step++) {
                em3_interp_input io[] = {
                    {"g", g[step]}, {"lr", lr}, {"step", (double[]){step + 1}}};
                run_ok(&b, it, 1, io, 3);
                expect_close(em3_interp_output(it, "y", NULL), rows[r].p[step], 2, 1e-6, 0);
                expect_global(it, "p", rows[r].p[step], 2);
            }
            for (int s = 0; s < rows[r].n_state; s++)
                expect_global(it, state_names[s], rows[r].s[s], 2);
            em3_interp_free(it);
        }
        em3_module_free(b.m);
    }
}

/* The sparse forms on a [4,2] table t = [[1,2],[3,4],[5,6],[7,8]] with ids {2, 0, 2} and rows
 * {[1,1], [2,2], [3,3]}: the repeats merge first (row 0 gets [2,2], row 2 gets [4,4]), then the
 * dense formulas above apply to the touched rows only; rows 1 and 3 and their state keep their
 * values (lazy). lr = 0.125; Adam at t = 3 from m = 0.5, v = 0.25 (so that an untouched moment
 * would visibly decay); Adagrad from s = 1. Applying the repeats one by one would give other
 * values for Adam and Adagrad (and for SGD with wd). */
static void test_sparse_updates(void **state) {
    (void)state;
    static const struct {
        em3_op op;
        attr_value attr[1];
        int n_state;
        double state0[2];
        double table[8];
        double s[2][8];
    } rows[] = {
        {EM3_OP_SPARSE_SGD_UPDATE,
         {{"wd", 0.01}},
         0,
         {0},
         {0.74875, 1.7475, 3, 4, 4.49375, 5.4925, 7, 8},
         {{0}}},
        {EM3_OP_SPARSE_ADAM_UPDATE,
         {{"wd", 0}},
         2,
         {0.5, 0.25},
         {0.9674167427861033, 1.9674167427861033, 3, 4, 4.95836424400367, 5.95836424400367, 7, 8},
         {{0.65, 0.65, 0.5, 0.5, 0.85, 0.85, 0.5, 0.5},
          {0.25375, 0.25375, 0.25, 0.25, 0.26575, 0.26575, 0.25, 0.25}}},
        {EM3_OP_SPARSE_ADAGRAD_UPDATE,
         {{"eps", 1e-10}},
         1,
         {1},
         {0.8881966011300105, 1.8881966011300104, 3, 4, 4.878732187484775, 5.878732187484775, 7, 8},
         {{5, 5, 1, 1, 17, 17, 1, 1}}},
    };
    static const double t0[] = {1, 2, 3, 4, 5, 6, 7, 8}, ids[] = {2, 0, 2},
                        grows[] = {1, 1, 2, 2, 3, 3}, lr[] = {0.125}, step[] = {3};
    for (int r = 0; r < LEN(rows); r++) {
        print_message("  %s\n", em3_op_name(rows[r].op));
        bld b = bld_new();
        em3_type t = ty(F32, 2, 4, 2), scalar = ty(F32, 0);
        int in[7], n = 0;
        in[n++] = global_read(&b, "t", t, EM3_GLOBAL_PARAM);
        in[n++] = input(&b, "ids", ty(I32, 1, B), 4);
        in[n++] = input(&b, "rows", ty(F32, 2, B, 2), 0);
        in[n++] = input(&b, "lr", scalar, 0);
        if (rows[r].op == EM3_OP_SPARSE_ADAM_UPDATE) in[n++] = input(&b, "step", scalar, 0);
        for (int s = 0; s < rows[r].n_state; s++)
            in[n++] = global_read(&b, state_names[s], t, EM3_GLOBAL_STATE);
        em3_func_add_output(b.f, "y", update_node(&b, rows[r].op, rows[r].attr, 1, in, n));
        em3_interp_input io[] = {{"ids", ids}, {"rows", grows}, {"lr", lr}, {"step", step}};
        for (int prec = EM3_PREC_F32; prec <= EM3_PREC_F64; prec++) {
            em3_interp *it = interp_new(&b, (em3_precision)prec);
            memcpy(em3_interp_global(it, "t"), t0, sizeof t0);
            for (int s = 0; s < rows[r].n_state; s++)
                for (int i = 0; i < 8; i++)
                    em3_interp_global(it, state_names[s])[i] = rows[r].state0[s];
            run_ok(&b, it, 3, io, 4);
            expect_close(em3_interp_output(it, "y", NULL), rows[r].table, 8, 1e-6, 0);
            expect_global(it, "t", rows[r].table, 8);
            for (int s = 0; s < rows[r].n_state; s++)
                expect_global(it, state_names[s], rows[r].s[s], 8);
            em3_interp_free(it);
        }
        em3_module_free(b.m);
    }
}

/* ---- precision ------------------------------------------------------------------------------- */

static void test_f32_rounds_every_op(void **state) {
    (void)state;
    bld b = bld_new();
    int one = input(&b, "one", ty(F32, 1, 1), 0), big = input(&b, "big", ty(I32, 1, 1), 0);
    int third = op2(&b, EM3_OP_DIV, one, constant(&b, 3, ty(F32, 1, 1)));
    em3_node p = proto(EM3_OP_CAST);
    em3_node_set_i(&p, "to", F32);
    em3_func_add_output(b.f, "third", third);
    em3_func_add_output(b.f, "big", add(&b, p, &big, 1));
    em3_func_add_output(b.f, "tenth", input(&b, "tenth", ty(F32, 1, 1), 0));
    em3_interp_input in[] = {{"one", (double[]){1}}, {"big", (double[]){16777217}},
                             {"tenth", (double[]){0.1}}};
    double got[2][3];
    for (int prec = EM3_PREC_F32; prec <= EM3_PREC_F64; prec++) {
        em3_interp *it = interp_new(&b, (em3_precision)prec);
        run_ok(&b, it, 1, in, 3);
        got[prec][0] = em3_interp_output(it, "third", NULL)[0];
        got[prec][1] = em3_interp_output(it, "big", NULL)[0];
        got[prec][2] = em3_interp_output(it, "tenth", NULL)[0];
        em3_interp_free(it);
    }
    assert_true(got[EM3_PREC_F64][0] == 1.0 / 3);
    assert_true(got[EM3_PREC_F32][0] == (double)(float)(1.0 / 3));
    assert_true(got[EM3_PREC_F32][0] != got[EM3_PREC_F64][0]);
    assert_true(got[EM3_PREC_F64][1] == 16777217); /* 2^24 + 1 has no float */
    assert_true(got[EM3_PREC_F32][1] == 16777216);
    assert_true(got[EM3_PREC_F32][2] == (double)0.1f); /* inputs are stored as float too */
    assert_true(got[EM3_PREC_F64][2] == 0.1);
    em3_module_free(b.m);
}

/* ---- initialisation -------------------------------------------------------------------------- */

static void test_rng_reference_vectors(void **state) {
    (void)state;
    /* splitmix64 from seed 1234567 and xoshiro256** from state {1,2,3,4}: the outputs of the
     * authors' reference C code */
    em3_rng r;
    em3_rng_seed(&r, 1234567);
    static const uint64_t sm[4] = {6457827717110365317ULL, 3203168211198807973ULL,
                                   9817491932198370423ULL, 4593380528125082431ULL};
    for (int i = 0; i < 4; i++) assert_true(r.s[i] == sm[i]);
    r = (em3_rng){{1, 2, 3, 4}};
    static const uint64_t xo[6] = {11520, 0, 1509978240, 1215971899390074240ULL,
                                   1216172134540287360ULL, 607988272756665600ULL};
    for (int i = 0; i < 6; i++) assert_true(em3_rng_next(&r) == xo[i]);
}

static void test_rng_distributions(void **state) {
    (void)state;
    em3_rng r;
    em3_rng_seed(&r, 42);
    for (int i = 0; i < 10000; i++) {
        double u = em3_rng_uniform(&r);
        assert_true(u >= 0 && u < 1);
        assert_true(u * 0x1.0p53 == floor(u * 0x1.0p53)); /* 53 bits, no more */
    }
    int count[3] = {0};
    for (int i = 0; i < 30000; i++) {
        uint64_t v = em3_rng_below(&r, 3);
        assert_true(v < 3);
        count[v]++;
    }
    for (int i = 0; i < 3; i++) assert_true(abs(count[i] - 10000) < 500);
    assert_true(em3_rng_below(&r, 1) == 0);
    uint64_t big = (1ULL << 63) + 1; /* rejection matters most here: half the outputs retry */
    for (int i = 0; i < 100; i++) assert_true(em3_rng_below(&r, big) < big);
}

static em3_global global(const char *name, em3_type t, em3_init_kind k, double a) {
    return (em3_global){name, t, EM3_GLOBAL_PARAM, {k, a}, {0}};
}

static void test_init_streams(void **state) {
    (void)state;
    enum { N = 1000 };
    double a[N], b2[N], c[N], d[N];
    float f[N];
    em3_global g = global("w", ty(F32, 1, N), EM3_INIT_NORMAL, 1);
    em3_init_global(&g, 5, a, sizeof(double));
    em3_init_global(&g, 5, b2, sizeof(double));
    em3_init_global(&g, 5, f, sizeof(float));
    em3_init_global(&g, 6, d, sizeof(double));
    g.name = "w2";
    em3_init_global(&g, 5, c, sizeof(double));
    int same_name = 0, other_name = 0, other_seed = 0;
    for (int i = 0; i < N; i++) {
        same_name += a[i] == b2[i];
        other_name += a[i] == c[i];
        other_seed += a[i] == d[i];
        assert_true(f[i] == (float)a[i]); /* one stream, stored as either type */
    }
    assert_int_equal(same_name, N);
    assert_int_equal(other_name, 0);
    assert_int_equal(other_seed, 0);
}

static void test_init_kinds(void **state) {
    (void)state;
    enum { N = 100000 };
    static double v[N];
    em3_global g = global("w", ty(F32, 1, N), EM3_INIT_NORMAL, 0.5);
    em3_init_global(&g, 1, v, sizeof(double));
    double mean = 0, sq = 0;
    for (int i = 0; i < N; i++) mean += v[i] / N;
    for (int i = 0; i < N; i++) sq += (v[i] - mean) * (v[i] - mean) / N;
    assert_true(fabs(mean) < 0.01);             /* 5 standard errors of 0.5 / sqrt(N) */
    assert_true(fabs(sqrt(sq) - 0.5) < 0.005);  /* the std's standard error is ~0.0011 */

    g = global("u", ty(F32, 1, N), EM3_INIT_UNIFORM, 0.3);
    em3_init_global(&g, 1, v, sizeof(double));
    double lo = 1, hi = -1;
    for (int i = 0; i < N; i++) lo = fmin(lo, v[i]), hi = fmax(hi, v[i]);
    assert_true(lo >= -0.3 && hi < 0.3 && lo < -0.299 && hi > 0.299);

    /* xavier: U(-sqrt(6 / (fan_in + fan_out)), +) over the last two dims */
    static const struct {
        int rank;
        int64_t dim[3];
        double bound;
    } xs[] = {{2, {64, 32}, 0.25}, {3, {4, 64, 32}, 0.25}, {1, {48}, 0.25}, /* rank 1: 48 + 48 */
              {0, {0}, 1.7320508075688772}};                                /* rank 0: 1 + 1 */
    for (int i = 0; i < LEN(xs); i++) {
        em3_type t = em3_type_make(F32, xs[i].rank, xs[i].dim);
        double bound = xs[i].bound;
        g = global("x", t, EM3_INIT_XAVIER, 0);
        int64_t n = em3_type_numel(&t, 1);
        em3_init_global(&g, 9, v, sizeof(double));
        double m = 0;
        for (int64_t j = 0; j < n; j++) m = fmax(m, fabs(v[j]));
        assert_true(m <= bound);
        if (n > 1000) assert_true(m > 0.99 * bound);
    }

    static const struct {
        em3_init_kind k;
        double a, want;
    } fixed[] = {{EM3_INIT_NONE, 3, 0}, {EM3_INIT_ZEROS, 3, 0}, {EM3_INIT_ONES, 3, 1},
                 {EM3_INIT_CONST, -2.5, -2.5}};
    for (int i = 0; i < LEN(fixed); i++) {
        g = global("c", ty(F32, 2, 3, 4), fixed[i].k, fixed[i].a);
        em3_init_global(&g, 1, v, sizeof(double));
        for (int j = 0; j < 12; j++) assert_true(v[j] == fixed[i].want);
    }
}

static void test_interp_init_globals(void **state) {
    (void)state;
    em3_module *m = em3_module_create("t");
    em3_type t = ty(F32, 2, 8, 4);
    em3_global_kind kinds[] = {EM3_GLOBAL_PARAM, EM3_GLOBAL_FROZEN, EM3_GLOBAL_STATE,
                               EM3_GLOBAL_DATA};
    const char *names[] = {"p", "f", "s", "d"};
    for (int i = 0; i < 4; i++)
        em3_module_add_global(m, names[i], t, kinds[i], (em3_init){EM3_INIT_NORMAL, 1},
                              (em3_loc){0});
    double want[32];
    for (int prec = EM3_PREC_F32; prec <= EM3_PREC_F64; prec++) {
        em3_interp *it = em3_interp_create(m, (em3_precision)prec);
        em3_interp_init_globals(it, 11);
        for (int i = 0; i < 4; i++) {
            const double *v = em3_interp_global(it, names[i]);
            em3_init_global(&m->global[i], 11, want, sizeof(double));
            for (int j = 0; j < 32; j++) {
                double w = kinds[i] == EM3_GLOBAL_DATA  ? 0 /* the caller's to fill */
                           : prec == EM3_PREC_F32 ? (double)(float)want[j]
                                                  : want[j];
                assert_true(v[j] == w);
            }
        }
        em3_interp_free(it);
    }
    em3_module_free(m);
}

/* ---- coverage -------------------------------------------------------------------------------- */

static void test_every_op_is_covered(void **state) {
    (void)state;
    int missing = 0;
    for (int op = 0; op < EM3_OP_COUNT; op++)
        if (!covered[op]) {
            print_error("op %s is run by no interpreter test\n", em3_op_name((em3_op)op));
            missing++;
        }
    assert_int_equal(missing, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_leaves),
        cmocka_unit_test(test_unary),
        cmocka_unit_test(test_binary),
        cmocka_unit_test(test_integer_ops),
        cmocka_unit_test(test_broadcasting),
        cmocka_unit_test(test_reduce),
        cmocka_unit_test(test_softmax_family),
        cmocka_unit_test(test_layer_norm),
        cmocka_unit_test(test_data_movement),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_gather),
        cmocka_unit_test(test_distinct_ids),
        cmocka_unit_test(test_spmm),
        cmocka_unit_test(test_data_errors),
        cmocka_unit_test(test_scatter_add),
        cmocka_unit_test(test_numel),
        cmocka_unit_test(test_grad_kernels),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_grad),
        cmocka_unit_test(test_fused),
        cmocka_unit_test(test_lora_matmul),
        cmocka_unit_test(test_sparse_sqnorm),
        cmocka_unit_test(test_dense_updates),
        cmocka_unit_test(test_sparse_updates),
        cmocka_unit_test(test_f32_rounds_every_op),
        cmocka_unit_test(test_rng_reference_vectors),
        cmocka_unit_test(test_rng_distributions),
        cmocka_unit_test(test_init_streams),
        cmocka_unit_test(test_init_kinds),
        cmocka_unit_test(test_interp_init_globals),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_every_op_is_covered), /* last: reads what the others ran */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
