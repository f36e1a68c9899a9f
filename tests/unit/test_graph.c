/* tests/unit/test_graph.c — the graph globals' builders (runtime/graph.c) on small MMRec folders
 * whose matrices are worked out by hand: the user–item matrix and its normalisation, FREEDOM's
 * degree-sensitive edge dropout, the item–item kNN graph mixed over two tables, the spec errors;
 * and the interaction index (runtime/interactions.c) they are built from. */
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
#include <sys/stat.h>
#include <unistd.h>

#include "scratch_dir.h"
#include "runtime/graph.h"
#include "runtime/interactions.h"
#include "runtime/npy.h"

static char dir[64];

static const char *in_dir(const char *name) {
    static char bufs[4][512];
    static int next;
    char *p = bufs[next++ % 4];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static void put(const char *name, const char *text) {
    FILE *fp = fopen(in_dir(name), "wb");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void put_f32(const char *name, int64_t rows, int64_t cols, const float *v) {
    char err[256];
    if (!em3_npy_write_f32(in_dir(name), 2, (int64_t[]){rows, cols}, v, err, sizeof err)) fail_msg("%s", err);
}

/* The toy data: MMRec ids (0-based; the dataset adds 1, 0 pads). Train: user 0 saw items 0, 1
 * (item 1 twice), user 1 items 1, 2, user 2 item 3; user 3 appears only in test. Features put
 * items 0 and 1 together and 2 and 3 together in `image`, 0 with 2 and 1 with 3 in `audio`. */
static int setup(void **state) {
    (void)state;
    strcpy(dir, "/tmp/em3_graph_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    put("toy.inter", "userID\titemID\tx_label\n0\t0\t0\n0\t1\t0\n0\t1\t0\n1\t1\t0\n1\t2\t0\n2\t3\t0\n"
                     "1\t3\t1\n3\t0\t2\n");
    static const float image[] = {1, 0, 0.9f, 0.1f, 0, 1, 0.1f, 0.9f};
    static const float audio[] = {1, 0, 0, 1, 0.9f, 0.1f, 0.1f, 0.9f};
    put_f32("image_feat.npy", 4, 2, image);
    put_f32("audio_feat.npy", 4, 2, audio);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    rm_tree(dir);
    return 0;
}

static em3_dataset *open_toy(void) {
    char err[1024];
    em3_data_options o = {.cache_dir = in_dir("cache"), .quiet = true};
    em3_dataset *ds = em3_dataset_open(dir, &o, err, sizeof err);
    if (!ds) fail_msg("%s", err);
    return ds;
}

/* A module holding one graph global `g` of the given shape and spec, declared at toy.em3:3:5. */
static em3_module *graph_module(int64_t rows, int64_t cols, const char *spec) {
    em3_module *m = em3_module_create("t");
    assert_true(em3_module_add_graph(m, "g", em3_type_make(EM3_DTYPE_F32, 2, (int64_t[]){rows, cols}), spec,
                                     (em3_loc){"toy.em3", 3, 5}) >= 0);
    return m;
}

static em3_graph *build(const em3_dataset *ds, int64_t rows, int64_t cols, const char *spec) {
    em3_module *m = graph_module(rows, cols, spec);
    char err[1024];
    em3_graph *g = em3_graph_build(&m->global[0], ds, err, sizeof err);
    if (!g) fail_msg("%s: %s", spec, err);
    em3_module_free(m);
    return g;
}

/* Entry (r, c) of a compressed-row matrix (0 when absent). */
static double at(const em3_csr *a, int64_t r, int64_t c) {
    for (int64_t e = a->ptr[r]; e < a->ptr[r + 1]; e++)
        if (a->col[e] == c) return a->val[e];
    return 0;
}

/* m and mt hold the same matrix, transposed, with ascending columns in every row. */
static void check_transpose(const em3_rt_graph *v) {
    assert_int_equal(v->m.nnz, v->mt.nnz);
    assert_int_equal(v->m.rows, v->mt.cols);
    for (int64_t r = 0; r < v->m.rows; r++)
        for (int64_t e = v->m.ptr[r]; e < v->m.ptr[r + 1]; e++) {
            if (e > v->m.ptr[r]) assert_true(v->m.col[e] > v->m.col[e - 1]);
            assert_true(at(&v->mt, v->m.col[e], r) == v->m.val[e]);
        }
}

static void test_interactions(void **state) {
    (void)state;
    em3_dataset *ds = open_toy();
    char err[256];
    em3_interactions x;
    assert_true(em3_interactions_build(ds, EM3_SPLIT_TRAIN, &x, err, sizeof err));
    assert_int_equal(x.users, 5);
    assert_int_equal(x.items, 5);
    assert_int_equal(x.rows, 6);
    int64_t want_start[] = {0, 0, 2, 4, 5, 5};
    int32_t want_item[] = {1, 2, 2, 3, 4}; /* the repeated (user 1, item 2) counts once */
    assert_memory_equal(x.start, want_start, sizeof want_start);
    assert_memory_equal(x.item, want_item, sizeof want_item);
    assert_true(em3_interactions_has(&x, 2, 3));
    assert_false(em3_interactions_has(&x, 2, 1));
    assert_false(em3_interactions_has(&x, 9, 1));
    assert_int_equal(em3_interactions_count(&x, 4), 0);
    em3_interactions_free(&x);
    em3_dataset_free(ds);
}

/* Degrees: users 1, 2 have 2 items, user 3 one; items 1, 3, 4 one user, item 2 two. */
static void test_user_item(void **state) {
    (void)state;
    em3_dataset *ds = open_toy();
    em3_graph *g = build(ds, 5, 5, "user_item");
    const em3_rt_graph *v = em3_graph_view(g);
    assert_int_equal(v->m.nnz, 5);
    assert_int_equal(em3_graph_nnz(g), 5);
    assert_float_equal(at(&v->m, 1, 1), 1 / sqrt(2.0), 1e-7);
    assert_float_equal(at(&v->m, 1, 2), 1 / sqrt(4.0), 1e-7);
    assert_float_equal(at(&v->m, 2, 2), 1 / sqrt(4.0), 1e-7);
    assert_float_equal(at(&v->m, 2, 3), 1 / sqrt(2.0), 1e-7);
    assert_float_equal(at(&v->m, 3, 4), 1, 1e-7);
    assert_int_equal(v->m.ptr[1], 0); /* the padding user 0 has no edges, nor does test-only user 4 */
    assert_int_equal(v->m.ptr[5] - v->m.ptr[4], 0);
    check_transpose(v);
    em3_graph_train(g, 1, 0); /* without dropout, training sees the same matrix */
    assert_ptr_equal(em3_graph_view(g)->m.val, v->m.val);
    em3_graph_free(g);
    /* a graph larger than the ids is fine (rows without edges); a smaller one is not */
    em3_graph_free(build(ds, 7, 6, "user_item"));
    em3_module *m = graph_module(4, 5, "user_item");
    char err[1024];
    assert_null(em3_graph_build(&m->global[0], ds, err, sizeof err));
    assert_non_null(strstr(err, "toy.em3:3:5: graph g (\"user_item\"): it is [4, 5], but dataset toy has 5 user"));
    em3_module_free(m);
    em3_dataset_free(ds);
}

/* Dropout 0.5 keeps int(5 · 0.5) = 2 edges per epoch, normalised by their own degrees; the
 * sample is a function of (seed, epoch); evaluation sees every edge. */
static void test_dropout(void **state) {
    (void)state;
    em3_dataset *ds = open_toy();
    em3_graph *g = build(ds, 5, 5, "user_item dropout=0.5");
    int64_t full = em3_graph_view(g)->m.nnz;
    int32_t first[2][2];
    int distinct = 0;
    for (int64_t epoch = 0; epoch < 20; epoch++) {
        em3_graph_train(g, 7, epoch);
        const em3_rt_graph *v = em3_graph_view(g);
        assert_int_equal(v->m.nnz, 2);
        check_transpose(v);
        int64_t du[5] = {0}, di[5] = {0};
        for (int64_t r = 0; r < 5; r++)
            for (int64_t e = v->m.ptr[r]; e < v->m.ptr[r + 1]; e++) du[r]++, di[v->m.col[e]]++;
        int32_t edges[2][2];
        int k = 0;
        for (int64_t r = 0; r < 5; r++)
            for (int64_t e = v->m.ptr[r]; e < v->m.ptr[r + 1]; e++, k++) {
                assert_float_equal(v->m.val[e], 1 / sqrt((double)du[r] * (double)di[v->m.col[e]]), 1e-7);
                edges[k][0] = (int32_t)r;
                edges[k][1] = v->m.col[e];
            }
        if (epoch == 0) memcpy(first, edges, sizeof edges);
        else distinct += memcmp(first, edges, sizeof edges) != 0;
        em3_graph_eval(g);
        assert_int_equal(em3_graph_view(g)->m.nnz, full);
        em3_graph_train(g, 7, epoch); /* again: the same sample */
        assert_memory_equal(em3_graph_view(g)->m.col, edges[0] + 1, sizeof(int32_t));
    }
    assert_true(distinct > 0);
    em3_graph_free(g);
    em3_dataset_free(ds);
}

/* k = 2 over `image`: each item's neighbours are itself and its partner, so every row has two
 * entries of 1/√(2·2); `audio` pairs the items the other way; weights 0.25 / 0.75 mix them. */
static void test_item_knn(void **state) {
    (void)state;
    em3_dataset *ds = open_toy();
    em3_graph *g = build(ds, 5, 5, "item_knn k=2 tables=image");
    const em3_rt_graph *v = em3_graph_view(g);
    assert_int_equal(v->m.nnz, 8);
    assert_int_equal(v->m.ptr[1], 0); /* the padding item has no features, hence no edges */
    assert_float_equal(at(&v->m, 1, 1), 0.5, 1e-7);
    assert_float_equal(at(&v->m, 1, 2), 0.5, 1e-7);
    assert_float_equal(at(&v->m, 2, 1), 0.5, 1e-7);
    assert_float_equal(at(&v->m, 3, 4), 0.5, 1e-7);
    assert_float_equal(at(&v->m, 4, 3), 0.5, 1e-7);
    assert_float_equal(at(&v->m, 1, 3), 0, 0);
    check_transpose(v);
    em3_graph_train(g, 3, 5); /* a frozen graph never changes */
    assert_int_equal(em3_graph_view(g)->m.nnz, 8);
    em3_graph_free(g);

    g = build(ds, 5, 5, "item_knn k=2 tables=image,audio weights=0.25,0.75");
    v = em3_graph_view(g);
    assert_int_equal(v->m.nnz, 12); /* self loops shared: 4 + 4 + 4 */
    assert_float_equal(at(&v->m, 1, 1), 0.5, 1e-7);
    assert_float_equal(at(&v->m, 1, 2), 0.125, 1e-7);
    assert_float_equal(at(&v->m, 1, 3), 0.375, 1e-7);
    assert_float_equal(at(&v->m, 4, 2), 0.375, 1e-7);
    check_transpose(v);
    em3_graph_free(g);

    g = build(ds, 5, 5, "item_knn k=1 tables=image,audio"); /* equal weights: ½ self + ½ self */
    assert_int_equal(em3_graph_view(g)->m.nnz, 4);
    assert_float_equal(at(&em3_graph_view(g)->m, 3, 3), 1, 1e-7);
    em3_graph_free(g);
    em3_dataset_free(ds);
}

static void expect_spec_error(const em3_dataset *ds, int64_t rows, const char *spec, const char *want) {
    em3_module *m = graph_module(rows, 5, spec);
    char err[1024] = "";
    em3_graph *g = em3_graph_build(&m->global[0], ds, err, sizeof err);
    if (g) fail_msg("'%s' should fail", spec);
    if (!strstr(err, want)) fail_msg("'%s': message '%s' lacks '%s'", spec, err, want);
    assert_non_null(strstr(err, "toy.em3:3:5: graph g"));
    em3_module_free(m);
}

static void test_spec_errors(void **state) {
    (void)state;
    em3_dataset *ds = open_toy();
    expect_spec_error(ds, 5, "user_items", "unknown graph builder 'user_items' (user_item, item_knn)");
    expect_spec_error(ds, 5, "user_item drop=0.5", "unknown option 'drop=0.5' (dropout)");
    expect_spec_error(ds, 5, "user_item dropout=1", "dropout must be in [0, 1), not '1'");
    expect_spec_error(ds, 5, "user_item dropout=x", "dropout must be in [0, 1), not 'x'");
    expect_spec_error(ds, 5, "item_knn k=0 tables=image", "k must be a positive integer, not '0'");
    expect_spec_error(ds, 5, "item_knn k=2", "tables names no item table");
    expect_spec_error(ds, 5, "item_knn tables=text", "table text: the dataset has no such item table");
    expect_spec_error(ds, 5, "item_knn tables=image,audio weights=1", "1 weights for 2 tables");
    expect_spec_error(ds, 5, "item_knn tables=image weights=-1", "weight '-1' is not a number >= 0");
    expect_spec_error(ds, 4, "item_knn tables=image", "an item-item graph is square");
    em3_dataset_free(ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interactions), cmocka_unit_test(test_user_item), cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_item_knn),     cmocka_unit_test(test_spec_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
