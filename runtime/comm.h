/* runtime/comm.h — the communicator: the ranks of a data-parallel job and the few collectives
 * training needs (sum, sum in a fixed order, broadcast from rank 0, gather in rank order,
 * agreement). It is the only
 * place that calls MPI: started by mpirun (and built with MPI), it joins the job; otherwise it
 * is a communicator of one rank whose collectives cost nothing, so one code path serves both.
 * Every collective must be called by every rank, in the same order. */
#ifndef EM3_COMM_H
#define EM3_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct em3_comm em3_comm;

/* Joins the MPI job when the process was started by mpirun and EM3 was built with MPI (once per
 * process: MPI cannot be started twice); otherwise one rank. NULL with a message when MPI
 * fails to start, or when mpirun started several ranks of an EM3 built without MPI. */
em3_comm *em3_comm_create(char *err, size_t errlen);
/* Leaves the job (MPI_Finalize). */
void em3_comm_free(em3_comm *c);

int em3_comm_rank(const em3_comm *c);
int em3_comm_size(const em3_comm *c);
/* Ranks of the job on this machine, sharing its cores. */
int em3_comm_local_size(const em3_comm *c);

/* True on every rank when every rank passed true: how ranks stop together after an error
 * that only some of them saw (a bad row in one rank's shard, a failed checkpoint write). With
 * `first_failed` (optional): the lowest rank that passed false, or -1. */
bool em3_comm_agree(em3_comm *c, bool ok, int *first_failed);

/* Elementwise sum over the ranks, in place; every rank receives the same bits. The buffer goes
 * in 4 MB buckets, all in flight at once (MPI_Iallreduce), so the later buckets travel while
 * the earlier ones are added. The order of the additions is MPI's. */
void em3_comm_sum_f32(em3_comm *c, float *buf, int64_t n);

/* The sum in a fixed order, for deterministic runs: out = 0, then every rank's parts added one
 * at a time, rank 0's first (each rank's in the given order). Any split of the same sequence of
 * parts over ranks gives the same bits — one process holding all the parts included. The
 * running sum travels from rank to rank (bucket by bucket, so the ranks work in a pipeline),
 * then the last rank broadcasts it. */
void em3_comm_sum_ordered_f32(em3_comm *c, float *out, const float *const *parts, int nparts, int64_t n);

/* Rank 0's `bytes` bytes of buf to every rank. */
void em3_comm_broadcast(em3_comm *c, void *buf, int64_t bytes);

/* Every rank's `bytes` bytes of `send`, concatenated in rank order into *recv (grown with
 * realloc as needed; *cap its capacity in bytes); counts[r] (size entries) receives rank r's
 * byte count. Returns the total. */
int64_t em3_comm_allgather(em3_comm *c, const void *send, int64_t bytes, void **recv, int64_t *cap,
                           int64_t *counts);

/* What this rank's collectives cost since creation. `bytes` counts what a bandwidth-optimal
 * algorithm must deliver to this rank: a sum of n bytes 2(P−1)/P·n (reduce-scatter, then
 * all-gather: the ring and Rabenseifner algorithms Open MPI uses for large messages), a gather
 * what the other ranks sent, a broadcast its size on ranks other than 0, a sum in a fixed
 * order what it received. */
typedef struct {
    int64_t bytes, calls;
    double seconds; /* wall time inside collectives, waiting for other ranks included */
} em3_comm_stats;

em3_comm_stats em3_comm_stats_get(const em3_comm *c);

#endif
