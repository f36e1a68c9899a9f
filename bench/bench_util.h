/* bench/bench_util.h — what the benchmarks share: sorting repetitions for medians, peak
 * resident memory (of this process or of a fresh run of it), and a training-step runner that
 * compiles a model of models/ as `em3 train` does and runs @train on random batches. */
#ifndef EM3_BENCH_UTIL_H
#define EM3_BENCH_UTIL_H

#include <time.h>

#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "runtime/exec.h"

/* Sorts n doubles ascending (medians and ranges of repetitions). */
void em3_bench_sort(double *x, int n);
/* This process's peak resident set (VmHWM), in MiB; NaN when /proc cannot tell. */
double em3_bench_own_peak_rss(void);
/* The number a fresh run of this program prints when given `flag args` (args already quoted
 * for the shell): its own peak RSS in MiB. A fresh process, because a spawned child's
 * rusage would carry the parent's high-water mark across exec. NaN on failure. */
double em3_bench_peak_rss_of(const char *flag, const char *args);
/* Wall-clock seconds since *t0 (CLOCK_MONOTONIC). */
double em3_bench_seconds_since(const struct timespec *t0);

enum { EM3_BENCH_MAX_TABLES = 8, EM3_BENCH_MAX_INPUTS = 16 };

/* A compiled model with random data tables and one random batch bound to @train. */
typedef struct {
    em3_module *m;
    em3_jit *j;
    em3_exec *x;
    int64_t batch;
    void *table_data[EM3_BENCH_MAX_TABLES];
    int n_table;
    em3_exec_input in[EM3_BENCH_MAX_INPUTS];
    void *in_data[EM3_BENCH_MAX_INPUTS];
    int n_in;
    double compile_s;     /* frontend, -O2 passes (autodiff, Adam) and LLVM JIT, wall time */
    double precompute_s;  /* filling the cache tables of cache-frozen once */
    double compiled_hwm_mib, precomputed_hwm_mib; /* VmHWM after compiling, after precompute */
    int64_t planned_bytes; /* @train's arena plus every parameter, state and cache table */
} em3_bench_step;

/* Compiles `model` with the constant overrides (--set NAME=VALUE) exactly as `em3 train`
 * does — frontend, the default -O2 pipeline with Adam, the JIT for at most `batch` rows —,
 * binds random data tables (image floats, text ids below 1000), makes one random batch
 * (ids ≥ 1, so no padding; 20% positive labels; lr 1e-3, step 1; all from `seed`) and fills
 * the cache tables. Exits with a message on any error: a benchmark has no one to recover. */
em3_bench_step *em3_bench_step_prepare(const char *model, const em3_const_override *ov, int n_ov,
                                       const char *disable_passes, int64_t batch, uint64_t seed);
/* The command line of a training-step benchmark: MODEL.em3 [--set NAME=VALUE]... [--batch N]
 * [--threads T] [--steps N] [--warmup N] [--disable-passes LIST] [FLAG], FLAG a program's own
 * switch (or NULL). */
enum { EM3_BENCH_MAX_SETS = 16 };
typedef struct {
    const char *model;
    int64_t batch;
    int threads, steps, warmup;
    bool flag;
    const char *disable_passes; /* -O2 passes left out, or NULL */
    em3_const_override ov[EM3_BENCH_MAX_SETS];
    int n_ov;
} em3_bench_args;
/* Fills `a` from argv over the defaults already in it; false on a malformed command line.
 * --set's NAME=VALUE is split in place (argv outlives the run). */
bool em3_bench_parse_args(int argc, char **argv, const char *flag, em3_bench_args *a);

/* One full training step (forward, backward, Adam update) on the bound batch; its seconds. */
double em3_bench_step_run(em3_bench_step *r);
void em3_bench_step_free(em3_bench_step *r);

#endif
