/* tests/unit/test_rt_attention.c — the fused attention kernels (runtime/rt_attention.c) called
 * directly on one slice, against a double-precision reference of the same formulas: the block
 * edges of the streaming kernel (query blocks of 32, key blocks of 64, rows padded to 8 keys),
 * head widths 16, 32, 64 and widths that are not a multiple of 8, every kind of mask (none,
 * one row for all queries, a row per query) including key blocks and whole rows without a
 * valid key, and scores far apart, so that the online softmax rescales and exponentials
 * underflow. The JIT and fused-vs-unfused tests reach the kernels through compiled models;
 * this one reaches the corners those models cannot aim at. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/abi.h"
#include "runtime/init.h"

/* Tolerances, as max |kernel − reference| / (1 + |reference|) over one output. The kernel
 * sums in float in its own order (ε = 6e-8 over up to tk·dh = 12800 products) and uses a
 * polynomial exponential (a few ulp): measured up to 1.7e-6 over o and the gradients,
 * whose ds = p·(do·v − do·o) cancels. Scores scaled to ±30 (SPREAD) magnify the rounding of
 * each score by its size in the exponential: measured up to 2.1e-5. A wrong index, block edge
 * or mask shows at 1e-2 and beyond. */
#define TOL 1e-5
#define TOL_SPREAD 1e-4

typedef enum {
    MASK_NONE,   /* no mask */
    MASK_SHARED, /* one row for every query: the first block of 64 keys masked, then random */
    MASK_ROWS,   /* a row per query: random, with rows that keep nothing, only the first or
                    only the last key */
} mask_kind;

typedef struct {
    int64_t tq, tk, dh, dv;
    mask_kind mask;
    bool spread; /* q scaled so that the scores' standard deviation is 10 */
} att_case;

/* The masked softmax of one slice's scores, in double: rows without a valid key are zero. */
static void ref_probs(const float *q, const float *k, const float *mask, int64_t mrow, const att_case *c,
                      double scale, double *p) {
    for (int64_t i = 0; i < c->tq; i++) {
        double m = -INFINITY, sum = 0;
        double *pi = p + i * c->tk;
        for (int64_t j = 0; j < c->tk; j++) {
            double s = 0;
            for (int64_t x = 0; x < c->dh; x++) s += (double)q[i * c->dh + x] * k[j * c->dh + x];
            pi[j] = mask && mask[i * mrow + j] == 0 ? -INFINITY : scale * s;
            m = pi[j] > m ? pi[j] : m;
        }
        for (int64_t j = 0; j < c->tk; j++) {
            pi[j] = m == -INFINITY ? 0 : exp(pi[j] - m);
            sum += pi[j];
        }
        for (int64_t j = 0; j < c->tk; j++) pi[j] = sum > 0 ? pi[j] / sum : 0;
    }
}

static double worst(const float *got, const double *want, int64_t n) {
    double w = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) return INFINITY;
        double d = fabs(got[i] - want[i]) / (1 + fabs(want[i]));
        w = d > w ? d : w;
    }
    return w;
}

static float *randoms(em3_rng *r, int64_t n, double sd) {
    float *x = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) x[i] = (float)(sd * em3_rng_normal(r));
    return x;
}

/* The mask of a case, or NULL; *mrow is its row stride. */
static float *make_mask(em3_rng *r, const att_case *c, int64_t *mrow) {
    if (c->mask == MASK_NONE) return NULL;
    int64_t rows = c->mask == MASK_ROWS ? c->tq : 1;
    *mrow = c->mask == MASK_ROWS ? c->tk : 0;
    float *m = malloc(sizeof(float) * (size_t)(rows * c->tk));
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < c->tk; j++) {
            bool keep = em3_rng_uniform(r) < 0.7;
            if (c->mask == MASK_SHARED) keep = keep && (c->tk <= 64 || j >= 64);
            if (c->mask == MASK_ROWS && i % 7 == 1) keep = false;
            if (c->mask == MASK_ROWS && i % 7 == 3) keep = j == 0;
            if (c->mask == MASK_ROWS && i % 7 == 5) keep = j == c->tk - 1;
            m[i * c->tk + j] = keep ? (em3_rng_uniform(r) < 0.5 ? 1.0f : 0.5f) : 0.0f; /* non-zero keeps */
        }
    return m;
}

/* Runs both kernels on one case and compares o, dq, dk and dv with the reference; dk and dv
 * start at 1 to check that they are accumulated into. */
static void check_case(const att_case *c, uint64_t seed) {
    em3_rng r;
    em3_rng_seed(&r, seed);
    int64_t tq = c->tq, tk = c->tk, dh = c->dh, dv = c->dv, mrow = 0;
    float scale = 1.0f / sqrtf((float)dh);
    float *q = randoms(&r, tq * dh, c->spread ? 10.0 : 1.0), *k = randoms(&r, tk * dh, 1.0);
    float *v = randoms(&r, tk * dv, 1.0), *dout = randoms(&r, tq * dv, 1.0), *mask = make_mask(&r, c, &mrow);
    float *o = malloc(sizeof(float) * (size_t)(tq * dv));
    double *p = calloc((size_t)(tq * tk), sizeof(double)), *ro = calloc((size_t)(tq * dv), sizeof(double));
    ref_probs(q, k, mask, mrow, c, scale, p);
    for (int64_t i = 0; i < tq; i++)
        for (int64_t j = 0; j < tk; j++)
            for (int64_t x = 0; x < dv; x++) ro[i * dv + x] += p[i * tk + j] * v[j * dv + x];
    em3_rt_attention_fwd(q, k, v, mask, mrow, tq, tk, dh, dv, scale, o);
    double tol = c->spread ? TOL_SPREAD : TOL, wf = worst(o, ro, tq * dv);
    char what[160];
    snprintf(what, sizeof what, "tq %lld, tk %lld, dh %lld, dv %lld, mask %d%s", (long long)tq, (long long)tk,
             (long long)dh, (long long)dv, (int)c->mask, c->spread ? ", spread" : "");
    if (!(wf <= tol)) fail_msg("forward, %s: difference %.3g > %.3g", what, wf, tol);
    if (dh != dv) goto done; /* attention_grad packs dq, dk, dv: one width */

    /* the reference gradients: D_i = do_i·o_i, ds = p (do vᵀ − D) scale */
    double *rq = calloc((size_t)(tq * dh), sizeof(double)), *rk = calloc((size_t)(tk * dh), sizeof(double));
    double *rv = calloc((size_t)(tk * dh), sizeof(double));
    for (int64_t i = 0; i < tq; i++) {
        double D = 0;
        for (int64_t x = 0; x < dh; x++) D += (double)dout[i * dh + x] * ro[i * dh + x];
        for (int64_t j = 0; j < tk; j++) {
            double dp = 0, pij = p[i * tk + j];
            for (int64_t x = 0; x < dh; x++) dp += (double)dout[i * dh + x] * v[j * dh + x];
            double ds = pij * (dp - D) * scale;
            for (int64_t x = 0; x < dh; x++) {
                rq[i * dh + x] += ds * k[j * dh + x];
                rk[j * dh + x] += ds * q[i * dh + x];
                rv[j * dh + x] += pij * dout[i * dh + x];
            }
        }
    }
    for (int64_t i = 0; i < tk * dh; i++) rk[i] += 1, rv[i] += 1;
    float *dq = malloc(sizeof(float) * (size_t)(tq * dh)), *dk = malloc(sizeof(float) * (size_t)(tk * dh));
    float *dvv = malloc(sizeof(float) * (size_t)(tk * dh));
    for (int64_t i = 0; i < tk * dh; i++) dk[i] = dvv[i] = 1;
    em3_rt_attention_bwd(q, k, v, mask, mrow, o, dout, tq, tk, dh, dv, scale, dq, dk, dvv);
    double wq = worst(dq, rq, tq * dh), wk = worst(dk, rk, tk * dh), wv = worst(dvv, rv, tk * dh);
    if (!(wq <= tol && wk <= tol && wv <= tol))
        fail_msg("backward, %s: differences dq %.3g, dk %.3g, dv %.3g > %.3g", what, wq, wk, wv, tol);
    free(rq);
    free(rk);
    free(rv);
    free(dq);
    free(dk);
    free(dvv);
done:
    free(q);
    free(k);
    free(v);
    free(dout);
    free(mask);
    free(o);
    free(p);
    free(ro);
}

static void run_cases(const att_case *cases, int n) {
    for (int i = 0; i < n; i++) check_case(&cases[i], 100 + (uint64_t)i);
}

/* Query and key counts on both sides of every block edge (1, 7 | 8 | 9, 31 | 32 | 33, 63 |
 * 64 | 65, 129, 200), at the head width EM3 uses (d = 64 over 4 heads). */
static void test_block_edges(void **state) {
    (void)state;
    static const int64_t sizes[] = {1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 129, 200};
    enum { N = sizeof sizes / sizeof *sizes };
    att_case cases[N * 3];
    int n = 0;
    for (int a = 0; a < N; a++) { /* tq and tk each through every size, the other one varied too */
        cases[n++] = (att_case){sizes[a], sizes[(a + 5) % N], 16, 16, MASK_NONE, false};
        cases[n++] = (att_case){sizes[(a + 3) % N], sizes[a], 16, 16, MASK_SHARED, false};
        cases[n++] = (att_case){sizes[a], sizes[(a + 7) % N], 16, 16, MASK_ROWS, false};
    }
    run_cases(cases, n);
}

/* Head widths: 16, 32, 64 (models' heads), 8, and widths the vector tiles only partly cover
 * (4, 12, 20, and dv != dh in the forward pass). */
static void test_head_widths(void **state) {
    (void)state;
    static const att_case cases[] = {
        {40, 100, 32, 32, MASK_ROWS, false}, {70, 130, 32, 32, MASK_SHARED, false},
        {40, 100, 64, 64, MASK_ROWS, false}, {33, 65, 64, 64, MASK_NONE, false},
        {50, 70, 8, 8, MASK_SHARED, false},  {37, 90, 4, 4, MASK_ROWS, false},
        {33, 70, 12, 12, MASK_ROWS, false},  {20, 129, 20, 20, MASK_SHARED, false},
        {33, 70, 16, 8, MASK_ROWS, false},   {9, 20, 12, 20, MASK_NONE, false},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

/* Scores spread over ±30: the running maximum grows from key block to key block (the
 * forward pass rescales what it accumulated) and most exponentials underflow. */
static void test_spread_scores(void **state) {
    (void)state;
    static const att_case cases[] = {
        {33, 200, 16, 16, MASK_NONE, true},
        {40, 129, 16, 16, MASK_ROWS, true},
        {65, 130, 64, 64, MASK_SHARED, true},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

/* Every key masked: zeros, not NaN, forward and backward (o = 0, so dq = 0; dk, dv unchanged). */
static void test_all_masked(void **state) {
    (void)state;
    enum { TQ = 35, TK = 70, DH = 16 };
    float q[TQ * DH], k[TK * DH], v[TK * DH], mask[TK] = {0}, o[TQ * DH], dout[TQ * DH], dq[TQ * DH];
    float dk[TK * DH], dvv[TK * DH];
    for (int i = 0; i < TQ * DH; i++) q[i] = dout[i] = (float)(i % 5) - 2, o[i] = 7;
    for (int i = 0; i < TK * DH; i++) k[i] = v[i] = (float)(i % 3) - 1, dk[i] = dvv[i] = 0;
    em3_rt_attention_fwd(q, k, v, mask, 0, TQ, TK, DH, DH, 0.25f, o);
    for (int i = 0; i < TQ * DH; i++) assert_true(o[i] == 0.0f);
    em3_rt_attention_bwd(q, k, v, mask, 0, o, dout, TQ, TK, DH, DH, 0.25f, dq, dk, dvv);
    for (int i = 0; i < TQ * DH; i++) assert_true(dq[i] == 0.0f);
    for (int i = 0; i < TK * DH; i++) assert_true(dk[i] == 0.0f && dvv[i] == 0.0f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_edges),
        cmocka_unit_test(test_head_widths),
        cmocka_unit_test(test_spread_scores),
        cmocka_unit_test(test_all_masked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
