/* runtime/grad_sync.h — the gradients of a data-parallel step, combined. The global batch is cut
 * into shards (one per rank, or several per rank); @train runs on each shard and returns its
 * gradients; they are combined, weighted by the shard's share of the rows, and feed @update
 * (passes/optimizer.c, separate_update). Dense gradients are summed over the ranks; the
 * (ids, rows) pairs of embedding tables are merged by id within each shard, exchanged, and
 * merged again across shards, so a step moves only the rows the batch touched. The only
 * collectives are the communicator's (comm.h). */
#ifndef EM3_GRAD_SYNC_H
#define EM3_GRAD_SYNC_H

#include "comm.h"
#include "exec.h"

typedef struct em3_grad_sync em3_grad_sync;

/* For x's @train / @update pair. `ordered`: combine in the fixed order of the shards
 * (em3_comm_sum_ordered_f32), so that any number of ranks holding the same shards gives the
 * same bits; otherwise dense sums use MPI's allreduce. */
em3_grad_sync *em3_grad_sync_create(em3_exec *x, em3_comm *c, bool ordered);
void em3_grad_sync_free(em3_grad_sync *g);

/* Starts a step. */
void em3_grad_sync_begin(em3_grad_sync *g);
/* Takes the gradients and loss of @train's last run in `from` (the executor, or a worker of
 * it, that ran the shard: on `rows` rows), weighted by `weight` (the shard's rows over the
 * global batch's). Shards are added in their global order. */
void em3_grad_sync_add(em3_grad_sync *g, const em3_exec *from, int64_t rows, float weight);
/* Combines the shards of every rank (a collective). Returns the loss of the global batch; sets
 * *update_batch to the batch @update must be called with. */
float em3_grad_sync_combine(em3_grad_sync *g, int64_t *update_batch);
/* What this rank's combines cost so far, dense sums and sparse exchanges apart, and in how
 * many steps. */
void em3_grad_sync_stats(const em3_grad_sync *g, em3_comm_stats *dense, em3_comm_stats *sparse, int64_t *steps);
/* The combined gradient for @update's input `name` ("grad.P", "grad_ids.P", "grad_rows.P"),
 * valid until the next begin; NULL for another name. */
const void *em3_grad_sync_input(const em3_grad_sync *g, const char *name);

#endif
