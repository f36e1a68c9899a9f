/* tests/unit/graph_fixture.h — random sparse matrices for the tests that run graph models (a
 * graph global is built from a dataset at run time; a test binds one of these instead).
 * Include after cmocka.h. */
#ifndef EM3_TEST_GRAPH_FIXTURE_H
#define EM3_TEST_GRAPH_FIXTURE_H

#include "runtime/graph.h"
#include "runtime/init.h"

/* rows × cols with about `per_row` entries per row at random columns (repeats sum, some rows
 * stay empty), values in [lo, lo + 1). */
static inline em3_graph *random_graph(uint64_t seed, int64_t rows, int64_t cols, int per_row, double lo) {
    em3_rng r;
    em3_rng_seed(&r, seed);
    int64_t n = rows * per_row;
    int32_t *row = malloc(sizeof *row * (size_t)n), *col = malloc(sizeof *col * (size_t)n);
    float *val = malloc(sizeof *val * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        row[i] = (int32_t)em3_rng_below(&r, (uint64_t)rows);
        col[i] = (int32_t)em3_rng_below(&r, (uint64_t)cols);
        val[i] = (float)(lo + em3_rng_uniform(&r));
    }
    em3_graph *g = em3_graph_from_coo(rows, cols, n, row, col, val);
    free(row);
    free(col);
    free(val);
    return g;
}

#endif
