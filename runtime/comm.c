/* runtime/comm.c — the communicator (see comm.h): Open MPI when the process was started by
 * mpirun, one rank otherwise. Every function begins with the one-rank case, which needs no
 * MPI; the MPI calls follow, compiled only when CMake found MPI (EM3_HAVE_MPI). Large buffers
 * go in pieces of at most 1 GiB, since MPI counts are ints. */
#include "comm.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ir/support.h"

#ifdef EM3_HAVE_MPI
#include <limits.h>
#include <mpi.h>
#endif

struct em3_comm {
    int rank, size, local_size;
    bool mpi; /* joined an MPI job (then MPI_Finalize when freed) */
    em3_comm_stats stats;
};

#ifdef EM3_HAVE_MPI
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Accounts one collective that started at t0 and delivered `bytes` to this rank. */
static void account(em3_comm *c, double t0, double bytes) {
    c->stats.calls++;
    c->stats.bytes += (int64_t)bytes;
    c->stats.seconds += now() - t0;
}

/* What a sum of n bytes must deliver to each rank (comm.h). */
static double sum_bytes(const em3_comm *c, int64_t n) {
    return 2.0 * (double)(c->size - 1) / (double)c->size * (double)n;
}

enum {
    CHUNK = 1 << 30, /* bytes per MPI call at most: MPI counts are ints */
    BUCKET = 4 << 20 /* bytes per piece of a sum */
};

/* When a rank dies, mpirun stops the others with SIGTERM, possibly inside a collective that
 * would never return. Say what happened before going: the message is written at creation
 * into static storage, the only memory a signal handler may use. */
static char term_message[256];

static void on_term(int sig) {
    ssize_t w = write(STDERR_FILENO, term_message, strlen(term_message));
    (void)w;
    signal(sig, SIG_DFL);
    raise(sig);
}

static bool mpi_start(em3_comm *c, char *err, size_t errlen) {
    /* A rank waiting in a collective yields its core instead of spinning: ranks share cores with
     * OpenBLAS threads and other work, and a spinning waiter starves the rank it waits for (DIN
     * steps ran 2-3x slower on a loaded 2-core machine). Steps take milliseconds; a yield's
     * latency does not show. The user's own setting wins. */
    setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
    if (MPI_Init(NULL, NULL) != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI failed to start (MPI_Init)");
        return false;
    }
    c->mpi = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local);
    MPI_Comm_size(local, &c->local_size);
    MPI_Comm_free(&local);
    snprintf(term_message, sizeof term_message,
             "em3: rank %d: stopped: the MPI job is being terminated (another rank failed or was "
             "killed, or the job was interrupted); the last checkpoint written is intact\n", c->rank);
    signal(SIGTERM, on_term);
    return true;
}
#endif

/* The number of ranks mpirun (or srun, through PMI) started this process among; 0 when it was
 * started as a plain process. */
static int launched_ranks(void) {
    const char *v = getenv("OMPI_COMM_WORLD_SIZE");
    if (!v) v = getenv("PMI_SIZE");
    return v ? atoi(v) : 0;
}

em3_comm *em3_comm_create(char *err, size_t errlen) {
    em3_comm *c = em3_xcalloc(1, sizeof *c);
    c->size = c->local_size = 1;
    int ranks = launched_ranks();
#ifdef EM3_HAVE_MPI
    if (ranks > 0 && !mpi_start(c, err, errlen)) {
        free(c);
        return NULL;
    }
#else
    if (ranks > 1) { /* each rank would train alone, all into the same run folder */
        snprintf(err, errlen, "started by mpirun with %d ranks, but this em3 was built without MPI: install "
                              "libopenmpi-dev and rebuild (tools/deps.sh), or run one process", ranks);
        free(c);
        return NULL;
    }
#endif
    return c;
}

void em3_comm_free(em3_comm *c) {
    if (!c) return;
#ifdef EM3_HAVE_MPI
    if (c->mpi) MPI_Finalize();
#endif
    free(c);
}

int em3_comm_rank(const em3_comm *c) { return c->rank; }
int em3_comm_size(const em3_comm *c) { return c->size; }
int em3_comm_local_size(const em3_comm *c) { return c->local_size; }

em3_comm_stats em3_comm_stats_get(const em3_comm *c) { return c->stats; }

bool em3_comm_agree(em3_comm *c, bool ok, int *first_failed) {
    int mine = ok ? c->size : c->rank, first = mine;
#ifdef EM3_HAVE_MPI
    if (c->size > 1) {
        double t0 = now();
        MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        account(c, t0, sum_bytes(c, sizeof(int)));
    }
#endif
    if (first_failed) *first_failed = first < c->size ? first : -1;
    return first == c->size;
}

void em3_comm_sum_f32(em3_comm *c, float *buf, int64_t n) {
    if (c->size == 1) return;
#ifdef EM3_HAVE_MPI
    double t0 = now();
    int64_t per = BUCKET / sizeof(float), nb = (n + per - 1) / per;
    MPI_Request *rq = em3_xmalloc(sizeof(MPI_Request) * (size_t)(nb ? nb : 1));
    for (int64_t b = 0; b < nb; b++)
        MPI_Iallreduce(MPI_IN_PLACE, buf + b * per, (int)(n - b * per < per ? n - b * per : per), MPI_FLOAT,
                       MPI_SUM, MPI_COMM_WORLD, &rq[b]);
    MPI_Waitall((int)nb, rq, MPI_STATUSES_IGNORE);
    free(rq);
    account(c, t0, sum_bytes(c, n * (int64_t)sizeof(float)));
#endif
}

/* Adds this rank's parts into out[0, len) in order. */
static void add_parts(float *out, const float *const *parts, int nparts, int64_t at, int64_t len) {
    for (int p = 0; p < nparts; p++)
        for (int64_t i = 0; i < len; i++) out[i] += parts[p][at + i];
}

void em3_comm_sum_ordered_f32(em3_comm *c, float *out, const float *const *parts, int nparts, int64_t n) {
    if (c->size == 1) {
        memset(out, 0, sizeof(float) * (size_t)n);
        add_parts(out, parts, nparts, 0, n);
        return;
    }
#ifdef EM3_HAVE_MPI
    double t0 = now();
    int64_t per = BUCKET / sizeof(float);
    for (int64_t at = 0; at < n; at += per) {
        int len = (int)(n - at < per ? n - at : per);
        if (c->rank == 0) memset(out + at, 0, sizeof(float) * (size_t)len);
        else MPI_Recv(out + at, len, MPI_FLOAT, c->rank - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        add_parts(out + at, parts, nparts, at, len);
        if (c->rank < c->size - 1) MPI_Send(out + at, len, MPI_FLOAT, c->rank + 1, 0, MPI_COMM_WORLD);
    }
    for (int64_t at = 0; at < n; at += per)
        MPI_Bcast(out + at, (int)(n - at < per ? n - at : per), MPI_FLOAT, c->size - 1, MPI_COMM_WORLD);
    /* received: the running sum from the previous rank (none on rank 0), then the total (none
     * on the last rank) */
    double bytes = (double)((c->rank > 0) + (c->rank < c->size - 1)) * (double)n * sizeof(float);
    account(c, t0, bytes);
#else
    EM3_UNREACHABLE("%d ranks without MPI", c->size);
#endif
}

void em3_comm_broadcast(em3_comm *c, void *buf, int64_t bytes) {
    if (c->size == 1) return;
#ifdef EM3_HAVE_MPI
    double t0 = now();
    for (int64_t at = 0; at < bytes; at += CHUNK)
        MPI_Bcast((char *)buf + at, (int)(bytes - at < CHUNK ? bytes - at : CHUNK), MPI_BYTE, 0, MPI_COMM_WORLD);
    account(c, t0, c->rank ? (double)bytes : 0);
#endif
}

/* Grows a gather's receive buffer to hold `bytes`. */
static void reserve(void **buf, int64_t *cap, int64_t bytes) {
    if (*cap < bytes) *buf = em3_xrealloc(*buf, (size_t)(*cap = bytes));
}

int64_t em3_comm_allgather(em3_comm *c, const void *send, int64_t bytes, void **recv, int64_t *cap,
                           int64_t *counts) {
    if (c->size == 1) {
        counts[0] = bytes;
        reserve(recv, cap, bytes ? bytes : 1);
        if (bytes) memcpy(*recv, send, (size_t)bytes);
        return bytes;
    }
    int64_t total = 0;
#ifdef EM3_HAVE_MPI
    double t0 = now();
    MPI_Allgather(&bytes, 1, MPI_INT64_T, counts, 1, MPI_INT64_T, MPI_COMM_WORLD);
    for (int r = 0; r < c->size; r++) total += counts[r];
    EM3_ASSERT(total <= INT_MAX, "a gather of %lld bytes: more than one MPI call carries", (long long)total);
    int *cn = em3_xmalloc(sizeof(int) * (size_t)c->size), *at = em3_xmalloc(sizeof(int) * (size_t)c->size);
    for (int r = 0, off = 0; r < c->size; r++) {
        cn[r] = (int)counts[r];
        at[r] = off;
        off += cn[r];
    }
    reserve(recv, cap, total ? total : 1);
    MPI_Allgatherv(send, (int)bytes, MPI_BYTE, *recv, cn, at, MPI_BYTE, MPI_COMM_WORLD);
    free(cn);
    free(at);
    account(c, t0, (double)(total - bytes) + (double)(c->size - 1) * sizeof(int64_t));
#else
    EM3_UNREACHABLE("%d ranks without MPI", c->size);
#endif
    return total;
}
