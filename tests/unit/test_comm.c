/* tests/unit/test_comm.c — the communicator (runtime/comm.h), on however many ranks it is run:
 * alone (ctest's unit/test_comm) or under mpirun (unit/test_comm_mpi, 3 ranks). The ordered
 * sum must give the bits of one process adding every rank's parts in order; the plain sum the
 * same bits on every rank; the gather every rank's bytes in rank order; agreement the lowest
 * failing rank. Every rank can compute every rank's data, so each checks the whole. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/comm.h"

static em3_comm *comm;

enum { N = (3 << 20) + 5 }; /* floats: more than one 4 MB bucket, and a ragged end */

/* Part j of rank r: values whose sums depend on the order of the additions. */
static float part_value(int r, int j, int64_t i) {
    return (float)((i % 7 + 1) * 0.1 + r * 1e-3 + j * 1e7) * ((i + r + j) % 2 ? 1.0f : -1.0f);
}

static float *make_part(int r, int j) {
    float *p = malloc(sizeof(float) * N);
    for (int64_t i = 0; i < N; i++) p[i] = part_value(r, j, i);
    return p;
}

/* Rank r holds r + 1 parts (rank 0 one, rank 1 two, ...). */
static void test_ordered_sum(void **state) {
    (void)state;
    int rank = em3_comm_rank(comm), size = em3_comm_size(comm);
    float *parts[8], *out = malloc(sizeof(float) * N), *want = calloc(N, sizeof(float));
    for (int j = 0; j <= rank; j++) parts[j] = make_part(rank, j);
    em3_comm_sum_ordered_f32(comm, out, (const float *const *)parts, rank + 1, N);
    for (int r = 0; r < size; r++)
        for (int j = 0; j <= r; j++)
            for (int64_t i = 0; i < N; i++) want[i] += part_value(r, j, i);
    assert_memory_equal(out, want, sizeof(float) * N);
    for (int j = 0; j <= rank; j++) free(parts[j]);
    free(out);
    free(want);
}

/* The plain sum: close to the exact one, and the same bits on every rank. */
static void test_sum(void **state) {
    (void)state;
    int rank = em3_comm_rank(comm), size = em3_comm_size(comm);
    float *buf = make_part(rank, 0);
    em3_comm_sum_f32(comm, buf, N);
    for (int64_t i = 0; i < N; i += 4099) {
        double want = 0;
        for (int r = 0; r < size; r++) want += part_value(r, 0, i);
        assert_true(fabs(buf[i] - want) < 1e-5);
    }
    float *copy = malloc(sizeof(float) * N);
    memcpy(copy, buf, sizeof(float) * N);
    em3_comm_broadcast(comm, copy, sizeof(float) * N); /* rank 0's result */
    assert_memory_equal(copy, buf, sizeof(float) * N);
    free(buf);
    free(copy);
}

/* Rank r sends r bytes of value r (rank 0 nothing). */
static void test_allgather(void **state) {
    (void)state;
    int rank = em3_comm_rank(comm), size = em3_comm_size(comm);
    unsigned char mine[64];
    memset(mine, rank, sizeof mine);
    void *recv = NULL;
    int64_t cap = 0, counts[64];
    int64_t total = em3_comm_allgather(comm, mine, rank, &recv, &cap, counts);
    assert_int_equal(total, (int64_t)size * (size - 1) / 2);
    const unsigned char *p = recv;
    for (int r = 0; r < size; r++) {
        assert_int_equal(counts[r], r);
        for (int k = 0; k < r; k++) assert_int_equal(*p++, r);
    }
    free(recv);
}

static void test_agree(void **state) {
    (void)state;
    int rank = em3_comm_rank(comm), size = em3_comm_size(comm), first = 0;
    assert_true(em3_comm_agree(comm, true, &first));
    assert_int_equal(first, -1);
    bool all = em3_comm_agree(comm, rank != size - 1, &first); /* the last rank fails */
    assert_false(all);
    assert_int_equal(first, size - 1);
}

static int setup(void **state) {
    (void)state;
    char err[256];
    comm = em3_comm_create(err, sizeof err);
    return comm && em3_comm_size(comm) <= 8 ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    em3_comm_free(comm);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ordered_sum),
        cmocka_unit_test(test_sum),
        cmocka_unit_test(test_allgather),
        cmocka_unit_test(test_agree),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
