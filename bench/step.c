/* bench/step.c — one measurement of em3's training step for bench/run: compiles a model of
 * models/ with --set constant overrides as `em3 train` does (bench_util.h), runs full training
 * steps (forward, backward, Adam) on one random batch with a given number of OpenBLAS threads,
 * and prints one JSON line: compile and precompute seconds, the median step time after a
 * warm-up and its samples/s, and this process's peak RSS. bench/torch/step.py is its PyTorch
 * twin; run each in a fresh process so that the peak RSS is the configuration's own.
 *
 *   bench_step MODEL.em3 [--set NAME=VALUE]... [--batch N] [--threads T] [--steps N] [--warmup N]
 *              [--disable-passes LIST] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "bench_util.h"

static _Noreturn void usage(void) {
    fprintf(stderr, "usage: bench_step MODEL.em3 [--set NAME=VALUE]... [--batch N] [--threads T] "
                    "[--steps N] [--warmup N] [--disable-passes LIST]  (run from the source folder)\n");
    exit(2);
}

int main(int argc, char **argv) {
    em3_bench_args a = {.batch = 256, .threads = 1, .steps = 10, .warmup = 2};
    if (!em3_bench_parse_args(argc, argv, NULL, &a)) usage();
    int64_t batch = a.batch;
    int steps = a.steps, threads = a.threads;
    openblas_set_num_threads(threads);
    em3_bench_step *r = em3_bench_step_prepare(a.model, a.ov, a.n_ov, a.disable_passes, batch, 1);
    for (int k = 0; k < a.warmup; k++) em3_bench_step_run(r);
    double *t = malloc(sizeof *t * (size_t)steps);
    for (int k = 0; k < steps; k++) t[k] = em3_bench_step_run(r);
    em3_bench_sort(t, steps);
    double median = steps % 2 ? t[steps / 2] : 0.5 * (t[steps / 2 - 1] + t[steps / 2]);
    printf("{\"impl\": \"em3\", \"batch\": %lld, \"threads\": %d, \"compile_s\": %.3f, \"precompute_s\": %.3f, "
           "\"step_ms\": %.3f, \"min_ms\": %.3f, \"max_ms\": %.3f, \"samples_per_s\": %.1f, "
           "\"planned_mib\": %.1f, \"hwm_compiled_mib\": %.1f, \"hwm_precomputed_mib\": %.1f, \"peak_rss_mib\": %.1f}\n",
           (long long)batch, threads, r->compile_s, r->precompute_s, 1e3 * median, 1e3 * t[0], 1e3 * t[steps - 1],
           (double)batch / median, (double)r->planned_bytes / (1 << 20), r->compiled_hwm_mib, r->precomputed_hwm_mib,
           em3_bench_own_peak_rss());
    free(t);
    em3_bench_step_free(r);
    return 0;
}
