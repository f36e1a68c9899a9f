/* tests/unit/test_codegen_math.c — accuracy of the vectorised math of compiled code
 * (codegen/mathfn.c) through the ops that use it: exp, log, tanh, sigmoid, softplus, gelu and
 * bce_logits, JIT-compiled over two million floats spanning the whole float range, against
 * libm in double. Asserts the largest error in ulp and the exact C99 special values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/builder.h"
#include "jit_harness.h"
#include "runtime/init.h"

enum { N_SWEEP = 1 << 20, N_WIDE = 1 << 19, N = 1 << 21 };

/* Values no sweep is sure to hit, at the end of the input. */
static const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1.0f, -1.0f,
                                 FLT_MIN, -FLT_MIN, FLT_TRUE_MIN, -FLT_TRUE_MIN, FLT_MAX, -FLT_MAX,
                                 88.72283f, 88.72284f, 88.7f, -87.33655f, -87.3f, -103.27893f,
                                 -103.97208f, -104.0f, 0.625f, -0.625f, 0.70710677f, 1.4142135f};
#define N_SPECIALS (int)(sizeof specials / sizeof *specials)

/* Half of the inputs sweep every bit pattern (all binades, both signs, subnormals, NaNs) at a
 * stride of 4096 with a scrambled low part; a quarter is uniform on [-120, 120] (where exp,
 * sigmoid and softplus reach overflow, underflow and subnormal results); the rest is uniform on
 * [-10, 10] (the working range of tanh and gelu), then the specials. */
static void make_inputs(double *x) {
    em3_rng r;
    em3_rng_seed(&r, 11);
    for (int64_t i = 0; i < N_SWEEP; i++) {
        uint32_t bits = (uint32_t)i * 4096u + (uint32_t)(em3_rng_next(&r) & 4095u);
        float f;
        memcpy(&f, &bits, 4);
        x[i] = f;
    }
    for (int64_t i = N_SWEEP; i < N_SWEEP + N_WIDE; i++) x[i] = (float)(240 * em3_rng_uniform(&r) - 120);
    for (int64_t i = N_SWEEP + N_WIDE; i < N - N_SPECIALS; i++) x[i] = (float)(20 * em3_rng_uniform(&r) - 10);
    for (int i = 0; i < N_SPECIALS; i++) x[N - N_SPECIALS + i] = specials[i];
}

/* ---- references in double ---------------------------------------------------------------------- */

static double ref_sigmoid(double x) { return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)); }
static double ref_softplus(double x) { return fmax(x, 0) + log1p(exp(-fabs(x))); }
static double gelu_2u(double x) { return 2 * 0.7978845608028654 * (x + 0.044715 * x * x * x); }
/* gelu's tanh form 0.5x(1 + tanh u) equals x·σ(2u); the latter keeps its accuracy where
 * 1 + tanh u cancels (x below about −6, where even double loses every digit). */
static double ref_gelu(double x) { return isinf(x) && x < 0 ? NAN : x * ref_sigmoid(gelu_2u(x)); }
/* For x < 0, gelu(x) ≈ x·e^{2u} and the relative error of e^{2u} is the absolute error of 2u:
 * any float evaluation of u (a few roundings of a number of size |2u|) leaves |2u|·ε or so,
 * |2u| times the ulp error of the last step. The bound scales with it. */
static double gelu_condition(double x) { return x < 0 ? fabs(gelu_2u(x)) : 1; }
static double ref_bce(double x, double y) { return fmax(x, 0) - x * y + log1p(exp(-fabs(x))); }

typedef struct {
    em3_op op;
    double (*ref1)(double);
    double (*ref2)(double, double);
    double max_ulp;           /* the bound asserted over all inputs ... */
    double (*cond)(double x); /* ... times max(1, cond(x)) when given */
} math_fn;

/* The test prints the measured worst cases; measured on Zen 5 (AVX-512): exp 1.15 ulp, log
 * 0.77, tanh 1.25, sigmoid 2.63, softplus 2.93, bce_logits 2.93, gelu 188 at x = −9.1 where
 * |2u| = 68 (0.69 of its scaled bound). The bounds leave about an ulp of room. */
static const math_fn fns[] = {
    {EM3_OP_EXP, exp, NULL, 2, NULL},
    {EM3_OP_LOG, log, NULL, 1.5, NULL},
    {EM3_OP_TANH, tanh, NULL, 2.5, NULL},
    {EM3_OP_SIGMOID, ref_sigmoid, NULL, 3.5, NULL},
    {EM3_OP_SOFTPLUS, ref_softplus, NULL, 4, NULL},
    {EM3_OP_GELU, ref_gelu, NULL, 4, gelu_condition},
    {EM3_OP_BCE_LOGITS, NULL, ref_bce, 4, NULL},
};
#define N_FNS (int)(sizeof fns / sizeof *fns)

/* The spacing of floats at |v| (subnormal spacing below FLT_MIN). */
static double ulp_of(double v) {
    int e;
    frexp(fabs(v), &e); /* |v| = m·2^e, m in [0.5, 1) */
    return ldexp(1.0, (e - 1 < -126 ? -126 : e - 1) - 23);
}

/* The error of a in ulp of the correctly rounded reference r: 0 when both are the same NaN or
 * infinity, inf when only one is. */
static double ulp_error(float a, double r) {
    float rf = (float)r;
    if (isnan(r) || isnan(a)) return isnan(r) && isnan(a) ? 0 : INFINITY;
    if (isinf(rf) || isinf(a)) return a == rf ? 0 : INFINITY;
    return fabs((double)a - r) / ulp_of(r);
}

/* ---- the test ---------------------------------------------------------------------------------- */

static em3_module *math_module(void) {
    em3_module *m = em3_module_create("math");
    int64_t n = N;
    em3_type t = em3_type_make(EM3_DTYPE_F32, 1, &n);
    for (int i = 0; i < N_FNS; i++) {
        em3_builder b = {em3_module_add_func(m, em3_arena_printf(m->arena, "f_%s", em3_op_name(fns[i].op))), {0}};
        int x = em3_b_input(&b, "x", &t);
        int y = fns[i].ref2 ? em3_b_binary(&b, fns[i].op, x, em3_b_input(&b, "y", &t)) : em3_b_unary(&b, fns[i].op, x);
        em3_func_add_output(b.f, "y", y);
    }
    return m;
}

static void test_accuracy(void **state) {
    (void)state;
    double *x = malloc(sizeof(double) * N), *labels = malloc(sizeof(double) * N);
    make_inputs(x);
    for (int64_t i = 0; i < N; i++) labels[i] = (double)(i & 1);
    jh_pair *p = jh_create(math_module());
    bool ok = true;
    for (int f = 0; f < N_FNS; f++) {
        em3_interp_input in[2] = {{"x", x}, {"y", labels}};
        char name[64];
        snprintf(name, sizeof name, "f_%s", em3_op_name(fns[f].op));
        assert_int_equal(jh_run_jit(p, name, 1, in, 2), 0);
        const float *y = p->out[0];
        /* normal results, subnormal or zero ones, and the error over the allowed one */
        double worst[2] = {0, 0}, at[2] = {0, 0}, ratio = 0;
        for (int64_t i = 0; i < N; i++) {
            double r = fns[f].ref1 ? fns[f].ref1(x[i]) : fns[f].ref2(x[i], labels[i]);
            double e = ulp_error(y[i], r);
            int k = fabs(r) < FLT_MIN;
            if (e > worst[k]) worst[k] = e, at[k] = x[i];
            ratio = fmax(ratio, e / (fns[f].max_ulp * (fns[f].cond ? fmax(1, fns[f].cond(x[i])) : 1)));
        }
        print_message("  %-11s max error %6.3g ulp (at x = %.9g), %6.3g ulp on subnormal results (at %.9g)%s\n",
                      em3_op_name(fns[f].op), worst[0], at[0], worst[1], at[1],
                      fns[f].cond ? "; scaled by the condition" : "");
        if (ratio > 1) {
            print_error("  %s: beyond its bound of %g ulp (by a factor of %.3g)\n", em3_op_name(fns[f].op),
                        fns[f].max_ulp, ratio);
            ok = false;
        }
    }
    jh_free(p);
    free(x);
    free(labels);
    assert_true(ok);
}

/* C99's special values, exactly (signed zeros included). */
static void test_special_values(void **state) {
    (void)state;
    static const struct {
        em3_op op;
        float x, want;
    } cases[] = {
        {EM3_OP_EXP, -INFINITY, 0.0f},    {EM3_OP_EXP, INFINITY, INFINITY}, {EM3_OP_EXP, NAN, NAN},
        {EM3_OP_EXP, 0.0f, 1.0f},         {EM3_OP_EXP, -0.0f, 1.0f},        {EM3_OP_EXP, 89.0f, INFINITY},
        {EM3_OP_EXP, -104.0f, 0.0f},      {EM3_OP_LOG, 0.0f, -INFINITY},    {EM3_OP_LOG, -0.0f, -INFINITY},
        {EM3_OP_LOG, -1.0f, NAN},         {EM3_OP_LOG, -INFINITY, NAN},     {EM3_OP_LOG, INFINITY, INFINITY},
        {EM3_OP_LOG, 1.0f, 0.0f},         {EM3_OP_LOG, NAN, NAN},           {EM3_OP_TANH, INFINITY, 1.0f},
        {EM3_OP_TANH, -INFINITY, -1.0f},  {EM3_OP_TANH, 0.0f, 0.0f},        {EM3_OP_TANH, -0.0f, -0.0f},
        {EM3_OP_TANH, NAN, NAN},          {EM3_OP_SIGMOID, -INFINITY, 0.0f}, {EM3_OP_SIGMOID, INFINITY, 1.0f},
        {EM3_OP_SIGMOID, 0.0f, 0.5f},     {EM3_OP_SIGMOID, NAN, NAN},       {EM3_OP_SOFTPLUS, -INFINITY, 0.0f},
        {EM3_OP_SOFTPLUS, INFINITY, INFINITY}, {EM3_OP_SOFTPLUS, NAN, NAN}, {EM3_OP_GELU, INFINITY, INFINITY},
        {EM3_OP_GELU, 0.0f, 0.0f},        {EM3_OP_GELU, NAN, NAN},          {EM3_OP_BCE_LOGITS, NAN, NAN},
    };
    /* one small module: a function per case would cost a compile each, so every case of an op
     * runs through that op's function over a vector of all its inputs */
    em3_module *m = em3_module_create("specials");
    int64_t n = sizeof cases / sizeof *cases;
    em3_type t = em3_type_make(EM3_DTYPE_F32, 1, &n);
    for (int i = 0; i < N_FNS; i++) {
        em3_builder b = {em3_module_add_func(m, em3_arena_printf(m->arena, "f_%s", em3_op_name(fns[i].op))), {0}};
        int x = em3_b_input(&b, "x", &t);
        int y = fns[i].ref2 ? em3_b_binary(&b, fns[i].op, x, em3_b_fill(&b, 0, &t)) : em3_b_unary(&b, fns[i].op, x);
        em3_func_add_output(b.f, "y", y);
    }
    jh_pair *p = jh_create(m);
    double xs[64];
    for (int64_t i = 0; i < n; i++) xs[i] = cases[i].x;
    int bad = 0;
    for (int f = 0; f < N_FNS; f++) {
        em3_interp_input in = {"x", xs};
        char name[64];
        snprintf(name, sizeof name, "f_%s", em3_op_name(fns[f].op));
        assert_int_equal(jh_run_jit(p, name, 1, &in, 1), 0);
        const float *y = p->out[0];
        for (int64_t i = 0; i < n; i++) {
            if (cases[i].op != fns[f].op) continue;
            float want = cases[i].want;
            bool same = isnan(want) ? isnan(y[i]) : y[i] == want && signbit(y[i]) == signbit(want);
            if (!same) {
                print_error("  %s(%g) = %g, want %g\n", em3_op_name(cases[i].op), (double)cases[i].x,
                            (double)y[i], (double)want);
                bad++;
            }
        }
    }
    jh_free(p);
    assert_int_equal(bad, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accuracy),
        cmocka_unit_test(test_special_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
