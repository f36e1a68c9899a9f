/* tests/unit/test_metrics.c — the metrics of runtime/metrics.h against the worked vectors of
 * docs/metrics.md, and, on seeded random inputs heavy in ties, AUC against a count over all
 * pairs, gAUC against per-group AUC, and Top-K selection against a full sort. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "runtime/init.h"
#include "runtime/metrics.h"

#define LEN(a) ((int64_t)(sizeof(a) / sizeof((a)[0])))

static void assert_near(double got, double want, double tol) {
    if (!(fabs(got - want) <= tol)) fail_msg("got %.17g, want %.17g (± %g)", got, want, tol);
}

/* ---- AUC ----------------------------------------------------------------------------- */

static void test_auc_vector(void **state) {
    (void)state;
    /* Pairs (.5,.5) tie ½, (.5,.2) 1, (.7,.5) 1, (.7,.2) 1: 3.5 / 4. */
    const float y[] = {1, 0, 1, 0}, p[] = {.5f, .5f, .7f, .2f};
    assert_true(em3_auc(y, p, NULL, LEN(y)) == 0.875);
}

static void test_auc_undefined(void **state) {
    (void)state;
    const float y[] = {1, 1, 0, 1}, p[] = {.1f, .9f, .4f, .3f};
    const bool positives_only[] = {true, true, false, true}, none[] = {false, false, false, false};
    assert_true(isnan(em3_auc(y, p, positives_only, LEN(y))));
    assert_true(isnan(em3_auc(y, p, none, LEN(y))));
    assert_true(isnan(em3_auc(y, p, NULL, 0)));
    const float all_negative[] = {0, 0, 0, 0};
    assert_true(isnan(em3_auc(all_negative, p, NULL, LEN(p))));
    const float with_nan[] = {.1f, NAN, .4f, .3f};
    assert_true(isnan(em3_auc(y, with_nan, NULL, LEN(y))));
    /* A NaN in a dropped row does not count. */
    const bool drop_nan[] = {true, false, true, true};
    assert_true(em3_auc(y, with_nan, drop_nan, LEN(y)) == 0.0);
}

static void test_auc_keep_is_a_subset(void **state) {
    (void)state;
    const float y[] = {1, 0, 1, 0, 1, 0, 0}, p[] = {.9f, .8f, .1f, .5f, .5f, .95f, .3f};
    const bool keep[] = {true, true, false, true, true, false, true};
    const float ys[] = {1, 0, 0, 1, 0}, ps[] = {.9f, .8f, .5f, .5f, .3f};
    /* Kept positives .9 and .5 over negatives .8 .5 .3: 3 + 1.5 of 6. */
    assert_true(em3_auc(y, p, keep, LEN(y)) == 0.75);
    assert_true(em3_auc(ys, ps, NULL, LEN(ys)) == 0.75);
}

/* Twice the number of (positive, negative) pairs ordered right, ties counting 1, over twice
 * the number of pairs: the definition, in O(n²). */
static double auc_by_pairs(const float *y, const float *p, const bool *keep, int64_t n) {
    int64_t twice_wins = 0, pairs = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            if ((keep && (!keep[i] || !keep[j])) || !(y[i] > 0.5f) || y[j] > 0.5f) continue;
            twice_wins += p[i] > p[j] ? 2 : p[i] == p[j] ? 1 : 0;
            pairs++;
        }
    return pairs ? (double)twice_wins / (2.0 * (double)pairs) : NAN;
}

/* Scores from one of four regimes, three of them tie-heavy down to a single value. */
static void random_rows(em3_rng *r, int64_t n, float *y, float *p, bool *keep) {
    int regime = (int)em3_rng_below(r, 4);
    double positive_rate = em3_rng_uniform(r);
    for (int64_t i = 0; i < n; i++) {
        y[i] = em3_rng_uniform(r) < positive_rate ? 1.0f : 0.0f;
        switch (regime) {
        case 0: p[i] = (float)em3_rng_uniform(r); break;
        case 1: p[i] = (float)em3_rng_below(r, 5) / 4; break;
        case 2: p[i] = em3_rng_below(r, 2) ? 0.25f : -0.0f; break;
        default: p[i] = 0.5f; break;
        }
        keep[i] = em3_rng_below(r, 3) != 0;
    }
}

static void test_auc_random_against_pairs(void **state) {
    (void)state;
    enum { MAX_N = 1500 };
    static float y[MAX_N], p[MAX_N];
    static bool keep[MAX_N];
    em3_rng r;
    em3_rng_seed(&r, 20240611);
    int undefined = 0, trials = 0;
    for (int64_t n = 0; n <= MAX_N; n += n < 64 ? 1 : n < 300 ? 17 : 397) {
        for (int rep = 0; rep < 4; rep++, trials++) {
            random_rows(&r, n, y, p, keep);
            const bool *k = rep % 2 ? keep : NULL;
            double want = auc_by_pairs(y, p, k, n), got = em3_auc(y, p, k, n);
            if (isnan(want)) {
                undefined++;
                if (!isnan(got)) fail_msg("n = %lld: got %g, want NaN", (long long)n, got);
            } else {
                assert_near(got, want, 1e-12);
            }
        }
    }
    /* Both outcomes must have been exercised, or the test proves less than it claims. */
    assert_true(undefined > 0 && undefined < trials / 2);
}

/* ---- gAUC ---------------------------------------------------------------------------- */

static void test_gauc_vector(void **state) {
    (void)state;
    /* User A (id 7): 6 impressions, the click at .6 above 4 of 5 negatives: AUC 0.8.
     * User B (id -3): 2 impressions, the click below the negative: AUC 0.
     * User C (id 40): 3 impressions, no click: excluded. Rows interleaved on purpose. */
    const int32_t g[] = {7, -3, 40, 7, 7, 40, -3, 7, 7, 40, 7};
    const float y[] = {0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    const float p[] = {.1f, .2f, .5f, .6f, .2f, .5f, .7f, .3f, .4f, .9f, .9f};
    em3_gauc_result r = em3_gauc(y, p, g, NULL, LEN(y));
    assert_near(r.gauc, 0.6, 1e-15);    /* (6 · 0.8 + 2 · 0) / 8 */
    assert_near(r.avg_auc, 0.4, 1e-15); /* (0.8 + 0) / 2 */
    assert_true(r.excluded_fraction == 3.0 / 11.0);
    assert_int_equal(r.groups, 3);
    assert_int_equal(r.groups_used, 2);

    /* Dropping B's negative leaves B single-class: A alone remains. */
    const bool keep[] = {true, true, true, true, true, true, false, true, true, true, true};
    r = em3_gauc(y, p, g, keep, LEN(y));
    assert_near(r.gauc, 0.8, 1e-15);
    assert_near(r.avg_auc, 0.8, 1e-15);
    assert_true(r.excluded_fraction == 4.0 / 10.0);
    assert_int_equal(r.groups, 3);
    assert_int_equal(r.groups_used, 1);
}

static void test_gauc_no_group_used(void **state) {
    (void)state;
    const int32_t g[] = {1, 1, 2, 2};
    const float y[] = {1, 1, 0, 0}, p[] = {.1f, .2f, .3f, .4f};
    em3_gauc_result r = em3_gauc(y, p, g, NULL, LEN(y));
    assert_true(isnan(r.gauc) && isnan(r.avg_auc));
    assert_true(r.excluded_fraction == 1.0);
    assert_int_equal(r.groups, 2);
    assert_int_equal(r.groups_used, 0);
    r = em3_gauc(y, p, g, NULL, 0);
    assert_true(isnan(r.gauc) && isnan(r.avg_auc) && isnan(r.excluded_fraction));
    assert_int_equal(r.groups, 0);
}

static void test_gauc_random_against_per_group_auc(void **state) {
    (void)state;
    enum { N = 2000, GROUPS = 60 };
    static float y[N], p[N], group_y[N], group_p[N];
    static bool keep[N];
    static int32_t g[N];
    em3_rng r;
    em3_rng_seed(&r, 7);
    for (int trial = 0; trial < 12; trial++) {
        random_rows(&r, N, y, p, keep);
        /* Group ids are sparse and signed; group sizes are skewed so some groups are tiny. */
        for (int i = 0; i < N; i++) {
            uint64_t u = em3_rng_below(&r, GROUPS);
            g[i] = (int32_t)((u * u) % GROUPS) * 1000 - 20000;
        }
        const bool *k = trial % 2 ? keep : NULL;
        double weighted = 0, sum = 0;
        int64_t used = 0, excluded = 0, kept = 0, groups = 0, groups_used = 0;
        for (int32_t id = -20000; id < GROUPS * 1000 - 20000; id += 1000) {
            int64_t size = 0;
            for (int i = 0; i < N; i++)
                if (g[i] == id && (!k || k[i])) {
                    group_y[size] = y[i];
                    group_p[size++] = p[i];
                }
            if (!size) continue;
            groups++;
            kept += size;
            double auc = auc_by_pairs(group_y, group_p, NULL, size);
            if (isnan(auc)) {
                excluded += size;
                continue;
            }
            groups_used++;
            used += size;
            weighted += (double)size * auc;
            sum += auc;
        }
        em3_gauc_result got = em3_gauc(y, p, g, k, N);
        assert_int_equal(got.groups, groups);
        assert_int_equal(got.groups_used, groups_used);
        assert_true(got.excluded_fraction == (double)excluded / (double)kept);
        if (!groups_used) {
            assert_true(isnan(got.gauc) && isnan(got.avg_auc));
            continue;
        }
        assert_near(got.gauc, weighted / (double)used, 1e-12);
        assert_near(got.avg_auc, sum / (double)groups_used, 1e-12);
    }
}

/* ---- logloss ------------------------------------------------------------------------- */

static void test_logloss(void **state) {
    (void)state;
    /* −(log 1e-15 + log(1 − 1e-15) + log 0.9) / 3 = (34.538776 + 0 + 0.105361) / 3: the 0
     * predicted for a click is clipped to ε. (.9f is not 0.9; the difference is 3e-9.) */
    const float y[] = {1, 0, 1}, p[] = {0, 0, .9f};
    assert_near(em3_logloss(y, p, NULL, LEN(y)), 11.548046, 1e-6);
    assert_near(em3_logloss(y, p, NULL, LEN(y)),
                -(log(1e-15) + log(1 - 1e-15) + log((double).9f)) / 3, 1e-14);

    const bool keep[] = {false, true, true};
    assert_near(em3_logloss(y, p, keep, LEN(y)), -log((double).9f) / 2, 1e-15);

    /* A confident wrong 1 costs exactly what a confident wrong 0 does. */
    const float y0[] = {0}, y1[] = {1}, p0[] = {0}, p1[] = {1};
    assert_true(em3_logloss(y0, p1, NULL, 1) == -log(1e-15));
    assert_true(em3_logloss(y1, p0, NULL, 1) == -log(1e-15));
    assert_near(em3_logloss(y0, p0, NULL, 1), 1e-15, 1e-17); /* −log of the double 1 − ε */

    const float with_nan[] = {NAN, 0, .9f};
    assert_true(isnan(em3_logloss(y, with_nan, NULL, LEN(y))));
    assert_true(isnan(em3_logloss(y, p, NULL, 0)));
    const bool none[] = {false, false, false};
    assert_true(isnan(em3_logloss(y, p, none, LEN(y))));
}

/* ---- Top-K --------------------------------------------------------------------------- */

static void expect_topk(const int32_t *ranked, int64_t n_ranked, const int32_t *truth,
                        int64_t n_truth, int k, double recall, double ndcg, double precision) {
    em3_topk_result r = em3_topk(ranked, n_ranked, truth, n_truth, k);
    assert_near(r.recall, recall, 1e-15);
    assert_near(r.ndcg, ndcg, 1e-15);
    assert_near(r.precision, precision, 1e-15);
}

static void test_topk_hand_computed(void **state) {
    (void)state;
    const int32_t ranked[] = {5, 3, 9, 1, 7}, truth[] = {7, 3};
    /* |truth| < K: hits at ranks 2 and 5, DCG = 1/log2 3 + 1/log2 6, IDCG = 1 + 1/log2 3. */
    expect_topk(ranked, 5, truth, 2, 5, 1.0, 0.6240505200038379, 0.4);
    /* K cuts the list: one hit at rank 2 of K = 2. */
    expect_topk(ranked, 5, truth, 2, 2, 0.5, 0.38685280723454163, 0.5);
    /* A perfect list. */
    const int32_t best[] = {3, 7, 5};
    expect_topk(best, 3, truth, 2, 3, 1.0, 1.0, 2.0 / 3);

    /* |truth| > K: hits at ranks 2 and 3; the ideal list fills all K = 3 positions. */
    const int32_t ranked3[] = {2, 4, 6}, truth5[] = {12, 10, 8, 6, 4};
    expect_topk(ranked3, 3, truth5, 5, 3, 0.4, 0.5307212739772434, 2.0 / 3);

    /* Fewer candidates than K: precision still divides by K. */
    const int32_t two[] = {1, 2}, one[] = {2};
    expect_topk(two, 2, one, 1, 5, 1.0, 0.6309297535714575, 0.2);

    const int32_t miss[] = {99};
    expect_topk(ranked, 5, miss, 1, 5, 0.0, 0.0, 0.0);

    em3_topk_result r = em3_topk(ranked, 5, NULL, 0, 5);
    assert_true(isnan(r.recall) && isnan(r.ndcg) && isnan(r.precision));
}

typedef struct {
    float score;
    int32_t index;
} scored_item;

/* The order topk_select promises, written out: higher score, NaN last, then lower index. */
static int compare_items(const void *pa, const void *pb) {
    const scored_item *a = pa, *b = pb;
    bool a_nan = isnan(a->score), b_nan = isnan(b->score);
    if (a_nan != b_nan) return a_nan ? 1 : -1;
    if (!a_nan && a->score != b->score) return a->score > b->score ? -1 : 1;
    return (a->index > b->index) - (a->index < b->index);
}

static void test_topk_select_against_sort(void **state) {
    (void)state;
    enum { MAX_N = 600 };
    static float scores[MAX_N];
    static bool mask[MAX_N];
    static scored_item items[MAX_N];
    static int32_t out[MAX_N + 3];
    em3_rng r;
    em3_rng_seed(&r, 99);
    for (int64_t n = 0; n <= MAX_N; n += n < 40 ? 1 : 53) {
        for (int rep = 0; rep < 6; rep++) {
            for (int64_t i = 0; i < n; i++) {
                uint64_t u = em3_rng_below(&r, 100);
                scores[i] = rep % 3 == 0 ? (float)em3_rng_normal(&r)
                            : rep % 3 == 1 ? (float)(u % 4)
                                           : u < 5 ? NAN : u < 10 ? -INFINITY : (float)(u % 3);
                mask[i] = em3_rng_below(&r, 4) == 0;
            }
            const bool *m = rep % 2 ? mask : NULL;
            int64_t unmasked = 0;
            for (int64_t i = 0; i < n; i++)
                if (!m || !m[i]) items[unmasked++] = (scored_item){scores[i], (int32_t)i};
            qsort(items, (size_t)unmasked, sizeof *items, compare_items);
            for (int k = 0; k <= n + 2; k += k < 12 ? 1 : 1 + (int)n / 5) {
                int got = em3_topk_select(scores, m, n, k, out);
                assert_int_equal(got, k < unmasked ? k : unmasked);
                for (int i = 0; i < got; i++) assert_int_equal(out[i], items[i].index);
            }
        }
    }
}

static void test_topk_select_then_metrics(void **state) {
    (void)state;
    /* Item 2 scores best but was trained on, so it is masked, not a hit or a slot. */
    const float scores[] = {.1f, .8f, .95f, .8f, .3f, .7f};
    const bool trained[] = {false, false, true, false, false, false};
    const int32_t truth[] = {3, 4};
    int32_t top[3];
    assert_int_equal(em3_topk_select(scores, trained, LEN(scores), 3, top), 3);
    assert_int_equal(top[0], 1);
    assert_int_equal(top[1], 3);
    assert_int_equal(top[2], 5);
    /* One hit at rank 2: DCG = 1/log2 3, IDCG = 1 + 1/log2 3. */
    expect_topk(top, 3, truth, 2, 3, 0.5, 0.38685280723454163, 1.0 / 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auc_vector),
        cmocka_unit_test(test_auc_undefined),
        cmocka_unit_test(test_auc_keep_is_a_subset),
        cmocka_unit_test(test_auc_random_against_pairs),
        cmocka_unit_test(test_gauc_vector),
        cmocka_unit_test(test_gauc_no_group_used),
        cmocka_unit_test(test_gauc_random_against_per_group_auc),
        cmocka_unit_test(test_logloss),
        cmocka_unit_test(test_topk_hand_computed),
        cmocka_unit_test(test_topk_select_against_sort),
        cmocka_unit_test(test_topk_select_then_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
