/* runtime/pool.c — the persistent worker pool of pool.h: one mutex and two conditions; a run
 * is a generation number the workers wait for, its tasks are claimed one index at a time. */
#include "pool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "ir/support.h"

struct em3_pool {
    pthread_t *tid;
    int threads;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    em3_pool_task *fn;
    void *ctx;
    int n, next, finished;
    unsigned gen;
    bool stop;
};

/* Runs tasks until none is left unclaimed; called, and returns, with the mutex held. */
static void drain(em3_pool *p) {
    while (p->next < p->n) {
        int i = p->next++;
        pthread_mutex_unlock(&p->mu);
        p->fn(p->ctx, i);
        pthread_mutex_lock(&p->mu);
        if (++p->finished == p->n) pthread_cond_broadcast(&p->done);
    }
}

static void *worker(void *arg) {
    em3_pool *p = arg;
    unsigned seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->gen == seen) pthread_cond_wait(&p->work, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        drain(p);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

em3_pool *em3_pool_create(int threads) {
    EM3_ASSERT(threads >= 1, "%d threads", threads);
    em3_pool *p = em3_xcalloc(1, sizeof *p);
    p->threads = threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    p->tid = em3_xcalloc((size_t)threads, sizeof *p->tid);
    for (int t = 1; t < threads; t++)
        EM3_ASSERT(pthread_create(&p->tid[t], NULL, worker, p) == 0, "cannot start worker thread %d", t);
    return p;
}

void em3_pool_free(em3_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int t = 1; t < p->threads; t++) pthread_join(p->tid[t], NULL);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p->tid);
    free(p);
}

int em3_pool_threads(const em3_pool *p) { return p->threads; }

void em3_pool_run(em3_pool *p, em3_pool_task *fn, void *ctx, int n) {
    if (p->threads == 1 || n <= 1) {
        for (int i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->next = p->finished = 0;
    p->gen++;
    pthread_cond_broadcast(&p->work);
    drain(p);
    while (p->finished < p->n) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
