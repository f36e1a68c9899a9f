/* tests/unit/test_topk.c — the top-K setting's runtime on a hand-worked case: full-ranking
 * evaluation (runtime/topk.c) of a compiled model whose scores are a table we fill, with
 * training items and the padding id masked, a user without training interactions left out,
 * and Recall, NDCG and Precision at 10, 20, 50 worked out below; the monitor names; and the
 * BPR negative sampler (runtime/interactions.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "runtime/interactions.h"
#include "runtime/topk.h"

static char dir[64];

static int setup(void **state) {
    (void)state;
    strcpy(dir, "/tmp/em3_topk_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    /* MMRec ids (the dataset adds 1). Train: user 0 has items 0, 1; user 1 item 2; user 2 item 3.
     * Valid: user 0 item 12; user 1 items 3 and 24; user 3, who has no training interaction,
     * item 24. Test: user 2 item 5. */
    char path[128];
    snprintf(path, sizeof path, "%s/toy.inter", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs("userID\titemID\tx_label\n0\t0\t0\n0\t1\t0\n1\t2\t0\n2\t3\t0\n0\t12\t1\n1\t3\t1\n1\t24\t1\n3\t24\t1\n"
          "2\t5\t2\n",
          f);
    fclose(f);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static em3_dataset *open_toy(void) {
    char err[1024], cache[128];
    snprintf(cache, sizeof cache, "%s/cache", dir);
    em3_data_options o = {.cache_dir = cache, .quiet = true};
    em3_dataset *ds = em3_dataset_open(dir, &o, err, sizeof err);
    if (!ds) fail_msg("%s", err);
    return ds;
}

/* A model whose scores for user u are row u of a table the test fills. */
static const char scorer_source[] = "model scorer {\n"
                                    "    input user : i32[B] vocab 5\n"
                                    "    param s : f32[5, 26] = zeros\n"
                                    "    fn forward() { output score = s[user] }\n"
                                    "}\n";

typedef struct {
    em3_module *m;
    em3_jit *jit;
    em3_exec *x;
} compiled;

static compiled compile_scorer(void) {
    compiled c;
    em3_diag *d = em3_diag_create(stderr);
    c.m = em3_frontend_compile_source("scorer.em3", scorer_source, strlen(scorer_source), NULL, d);
    assert_non_null(c.m);
    em3_codegen_options o = em3_codegen_defaults();
    o.max_batch = 4;
    c.jit = em3_jit_compile(c.m, &o, d);
    assert_non_null(c.jit);
    em3_diag_free(d);
    em3_compiled_func fs[2] = {*em3_jit_func(c.jit, "forward"), *em3_jit_func(c.jit, "predict")};
    c.x = em3_exec_create(c.m, fs, 2, 1);
    return c;
}

static void free_compiled(compiled *c) {
    em3_exec_free(c->x);
    em3_jit_free(c->jit);
    em3_module_free(c->m);
}

/* Encoded ids: users 1..4, items 1..25, 0 the padding. User 1 (A) ranks items by -id, except
 * that the padding id and its training item 1 score highest (both masked): unmasked, items
 * 3, 4, ... come first, so its valid item 13 is 11th. User 2 (B) ranks by +id with its training
 * item 3 on top (masked): its valid items are 25 (1st) and 4 (22nd). User 4 (C) has no training
 * interactions and is left out.
 *   A: Recall@10,20,50 = 0, 1, 1   NDCG@K = 0, 1/log2(12), 1/log2(12)   Precision = 0, 1/20, 1/50
 *   B: Recall = ½, ½, 1   NDCG@10 = NDCG@20 = 1/(1 + 1/log2 3), NDCG@50 = (1 + 1/log2 23)/(1 + 1/log2 3)
 *      Precision = 1/10, 1/20, 2/50 */
static void test_full_ranking(void **state) {
    (void)state;
    em3_dataset *ds = open_toy();
    compiled c = compile_scorer();
    float *s = em3_exec_global(c.x, "s");
    for (int i = 0; i < 26; i++) {
        s[1 * 26 + i] = (float)-i;
        s[2 * 26 + i] = (float)i;
    }
    s[1 * 26 + 0] = 100;
    s[1 * 26 + 1] = 50;
    s[2 * 26 + 3] = 1000;
    assert_true(em3_topk_model(c.x, ds, "score"));
    assert_false(em3_topk_model(c.x, ds, "nope"));
    double idcg2 = 1 + 1 / log2(3);
    double recall[3] = {0.25, 0.75, 1}, precision[3] = {0.05, 0.05, 0.03};
    double ndcg[3] = {(0 + 1 / idcg2) / 2, (1 / log2(12) + 1 / idcg2) / 2,
                      (1 / log2(12) + (1 + 1 / log2(23)) / idcg2) / 2};
    for (int64_t batch = 1; batch <= 4; batch += 3) { /* one user per call, then all at once */
        em3_topk_metrics m;
        char err[512];
        if (!em3_topk_evaluate(c.x, ds, EM3_SPLIT_VALID, "score", batch, &m, err, sizeof err)) fail_msg("%s", err);
        assert_int_equal(m.users, 2);
        assert_int_equal(m.skipped, 1);
        for (int k = 0; k < EM3_TOPK_NK; k++) {
            assert_float_equal(m.recall[k], recall[k], 1e-12);
            assert_float_equal(m.ndcg[k], ndcg[k], 1e-12);
            assert_float_equal(m.precision[k], precision[k], 1e-12);
        }
        double v;
        assert_true(em3_topk_metric(&m, "ndcg@20", 7, &v) && v == m.ndcg[1]);
        assert_true(em3_topk_metric(&m, "recall@50+x", 9, &v) && v == m.recall[2]);
        assert_false(em3_topk_metric(&m, "recall@5", 8, &v));
        assert_false(em3_topk_metric(&m, "auc", 3, &v));
    }
    free_compiled(&c);
    em3_dataset_free(ds);
}

/* Negatives are training items (1 .. 4) the row's user has not seen in training, and a
 * function of (seed, step, row): a batch split in two (shards, ranks) draws what it draws whole,
 * and the two halves do not repeat each other's draws (as they did when each shard restarted
 * the step's stream). */
static void test_negative_sampler(void **state) {
    (void)state;
    em3_dataset *ds = open_toy();
    char err[256];
    em3_negative_sampler *s = em3_negative_sampler_create(ds, err, sizeof err);
    if (!s) fail_msg("%s", err);
    em3_interactions train;
    assert_true(em3_interactions_build(ds, EM3_SPLIT_TRAIN, &train, err, sizeof err));
    const int32_t *user = em3_dataset_find(ds, EM3_SPLIT_TRAIN, "user")->data;
    int64_t rows[4] = {0, 1, 2, 3};
    int32_t a[4], b[4];
    int counts[5] = {0}, differ = 0, same_as_first_half = 0;
    for (int64_t step = 1; step <= 200; step++) {
        em3_negative_sample(s, rows, 4, 1, 9, step, a);
        em3_negative_sample(s, rows, 4, 1, 9, step, b);
        assert_memory_equal(a, b, sizeof a);
        for (int i = 0; i < 4; i++) {
            assert_true(a[i] >= 1 && a[i] <= 4);
            assert_false(em3_interactions_has(&train, user[rows[i]], a[i]));
            counts[a[i]]++;
        }
        em3_negative_sample(s, rows, 4, 1, 9, step + 1000, b);
        differ += memcmp(a, b, sizeof a) != 0;
        int32_t many[4 * 3]; /* three per row, each valid for its row's user */
        em3_negative_sample(s, rows, 4, 3, 9, step, many);
        for (int i = 0; i < 12; i++) assert_false(em3_interactions_has(&train, user[rows[i / 3]], many[i]));
        int32_t halves[4 * 3];
        em3_negative_sample(s, rows, 2, 3, 9, step, halves);
        em3_negative_sample(s, rows + 2, 2, 3, 9, step, halves + 6);
        assert_memory_equal(many, halves, sizeof many);
        same_as_first_half += !memcmp(many, many + 6, sizeof(int32_t) * 6);
    }
    assert_true(differ > 100);
    assert_true(same_as_first_half < 20);
    for (int i = 1; i <= 4; i++) assert_true(counts[i] > 0); /* every item is drawn for someone */
    em3_interactions_free(&train);
    em3_negative_sampler_free(s);
    em3_dataset_free(ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_ranking),
        cmocka_unit_test(test_negative_sampler),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
