/* tests/unit/test_pool.c — the worker pool (runtime/pool.c): every task index runs exactly
 * once per run, over many runs and task counts below, at and above the thread count; the
 * pool's threads really run tasks side by side (two tasks that each wait for the other to
 * start finish only then); one thread runs everything in the caller. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "runtime/pool.h"

typedef struct {
    atomic_int hits[64];
} counts;

static void count_task(void *ctx, int i) { atomic_fetch_add(&((counts *)ctx)->hits[i], 1); }

static void test_each_index_once(void **state) {
    (void)state;
    for (int threads = 1; threads <= 3; threads++) {
        em3_pool *p = em3_pool_create(threads);
        assert_int_equal(em3_pool_threads(p), threads);
        for (int run = 0; run < 200; run++) {
            int n = run % 9; /* 0 .. 8 tasks */
            counts c;
            memset(&c, 0, sizeof c);
            em3_pool_run(p, count_task, &c, n);
            for (int i = 0; i < 64; i++) assert_int_equal(atomic_load(&c.hits[i]), i < n ? 1 : 0);
        }
        em3_pool_free(p);
    }
}

typedef struct {
    atomic_int started;
    pthread_t who[2];
    bool met[2];
} rendezvous;

/* Waits (up to 10 s) until both tasks have started: run one after the other, neither would. */
static void meet_task(void *ctx, int i) {
    rendezvous *r = ctx;
    r->who[i] = pthread_self();
    atomic_fetch_add(&r->started, 1);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do clock_gettime(CLOCK_MONOTONIC, &t);
    while (atomic_load(&r->started) < 2 && t.tv_sec - t0.tv_sec < 10);
    r->met[i] = atomic_load(&r->started) == 2;
}

static void test_side_by_side(void **state) {
    (void)state;
    em3_pool *p = em3_pool_create(2);
    for (int run = 0; run < 20; run++) {
        rendezvous r = {0};
        em3_pool_run(p, meet_task, &r, 2);
        assert_true(r.met[0] && r.met[1]);
        assert_false(pthread_equal(r.who[0], r.who[1]));
    }
    em3_pool_free(p);
}

static void who_task(void *ctx, int i) { ((pthread_t *)ctx)[i] = pthread_self(); }

static void test_one_thread_is_the_caller(void **state) {
    (void)state;
    em3_pool *p = em3_pool_create(1);
    pthread_t who[3];
    em3_pool_run(p, who_task, who, 3);
    for (int i = 0; i < 3; i++) assert_true(pthread_equal(who[i], pthread_self()));
    em3_pool_free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_index_once),
        cmocka_unit_test(test_side_by_side),
        cmocka_unit_test(test_one_thread_is_the_caller),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
