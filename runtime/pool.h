/* runtime/pool.h — the one persistent pool of worker threads (docs/training.md, "threads"):
 * em3_pool_run hands out task indices 0 … n-1 to the pool's threads, the calling thread taking
 * its share, and returns when every task has finished. Threads are started once and sleep
 * between runs, so a run costs a wake-up, not a thread creation. */
#ifndef EM3_POOL_H
#define EM3_POOL_H

typedef struct em3_pool em3_pool;
typedef void em3_pool_task(void *ctx, int index);

/* `threads` in all, the caller included (1: no thread is started, tasks run in the caller). */
em3_pool *em3_pool_create(int threads);
void em3_pool_free(em3_pool *p);
int em3_pool_threads(const em3_pool *p);
void em3_pool_run(em3_pool *p, em3_pool_task *fn, void *ctx, int n);

#endif
