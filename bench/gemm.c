/* bench/gemm.c — how fast em3's training step runs its GEMMs, against OpenBLAS's sgemm on the
 * same shapes. This program defines cblas_sgemm itself: the runtime's symbol table, the JIT's
 * code and the runtime's kernels (attention, lora_matmul) then call this definition, which
 * times each call, records its shape and passes it on to OpenBLAS's (dlsym RTLD_NEXT). After
 * the measured training steps, every recorded call is replayed on buffers of its own, in the
 * step's order and number, straight into OpenBLAS: the rate the same shapes reach alone. The
 * ratio is what the step's surroundings cost the GEMMs (cold operands, layout, threads).
 *
 *   bench_gemm MODEL.em3 [--set NAME=VALUE]... [--batch N] [--threads T] [--steps N] [--warmup N]
 *              [--table]
 *
 * Prints one JSON line, and with --table the shapes that take the most time. Not a test. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "bench_util.h"

enum { MAX_SHAPES = 512 };

typedef void sgemm_fn(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE, const enum CBLAS_TRANSPOSE, const blasint,
                      const blasint, const blasint, const float, const float *, const blasint, const float *,
                      const blasint, const float, float *, const blasint);

/* One distinct call: its arguments but the pointers and alpha, how often and how long. */
typedef struct {
    int order, ta, tb;
    blasint m, n, k, lda, ldb, ldc;
    float beta;
    long calls;
    double seconds;
    int id; /* its place in the record, which the replay's times follow */
} shape;

static struct {
    sgemm_fn *real;
    bool recording;
    shape s[MAX_SHAPES];
    int n;
    long dropped; /* calls of shapes beyond MAX_SHAPES: timed, not replayed */
    double seconds, flops;
} G;

static sgemm_fn *real_sgemm(void) {
    if (!G.real) G.real = (sgemm_fn *)dlsym(RTLD_NEXT, "cblas_sgemm");
    if (!G.real) {
        fprintf(stderr, "bench_gemm: OpenBLAS's cblas_sgemm not found: %s\n", dlerror());
        exit(1);
    }
    return G.real;
}

void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta, const enum CBLAS_TRANSPOSE tb,
                 const blasint m, const blasint n, const blasint k, const float alpha, const float *a,
                 const blasint lda, const float *b, const blasint ldb, const float beta, float *c, const blasint ldc) {
    sgemm_fn *f = real_sgemm();
    if (!G.recording) {
        f(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    f(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    double dt = em3_bench_seconds_since(&t0);
    G.seconds += dt;
    G.flops += 2.0 * (double)m * (double)n * (double)k;
    shape key = {order, ta, tb, m, n, k, lda, ldb, ldc, beta, 0, 0, 0};
    int i = 0;
    while (i < G.n && memcmp(&G.s[i], &key, offsetof(shape, calls))) i++;
    if (i == G.n) {
        if (G.n == MAX_SHAPES) {
            G.dropped++;
            return;
        }
        key.id = G.n;
        G.s[G.n++] = key;
    }
    G.s[i].calls++;
    G.s[i].seconds += dt;
}

/* Elements a row-major (or column-major) operand of `rows` × `cols` with leading dimension ld
 * spans. */
static size_t span(int order, bool trans, blasint rows, blasint cols, blasint ld) {
    bool row_major = (order == CblasRowMajor) != trans;
    return (size_t)ld * (size_t)(row_major ? rows : cols);
}

/* Replays the recorded calls `steps` times over; seconds per step, and per shape in `per`. */
static double replay(int steps, double *per) {
    float **buf = calloc((size_t)G.n * 3, sizeof *buf);
    for (int i = 0; i < G.n; i++) {
        const shape *s = &G.s[i];
        bool ta = s->ta == CblasTrans, tb = s->tb == CblasTrans;
        size_t sz[3] = {span(s->order, ta, s->m, s->k, s->lda), span(s->order, tb, s->k, s->n, s->ldb),
                        span(s->order, false, s->m, s->n, s->ldc)};
        for (int j = 0; j < 3; j++) {
            buf[3 * i + j] = malloc(sizeof(float) * (sz[j] ? sz[j] : 1));
            for (size_t e = 0; e < sz[j]; e++) buf[3 * i + j][e] = (float)((e * 7 + (size_t)j) % 13) * 0.01f;
        }
    }
    sgemm_fn *f = real_sgemm();
    double total = 0;
    for (int i = 0; i < G.n; i++) per[i] = 0;
    for (int r = 0; r < steps; r++)
        for (int i = 0; i < G.n; i++) {
            const shape *s = &G.s[i];
            struct timespec t0;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            for (long c = 0; c < s->calls / steps; c++)
                f(s->order, s->ta, s->tb, s->m, s->n, s->k, 1.0f, buf[3 * i], s->lda, buf[3 * i + 1], s->ldb, s->beta,
                  buf[3 * i + 2], s->ldc);
            double dt = em3_bench_seconds_since(&t0);
            per[i] += dt / steps;
            total += dt;
        }
    for (int i = 0; i < 3 * G.n; i++) free(buf[i]);
    free(buf);
    return total / steps;
}

static _Noreturn void usage(void) {
    fprintf(stderr, "usage: bench_gemm MODEL.em3 [--set NAME=VALUE]... [--batch N] [--threads T] [--steps N] "
                    "[--warmup N] [--table]  (run from the source folder)\n");
    exit(2);
}

static int by_time(const void *a, const void *b) {
    double x = ((const shape *)a)->seconds, y = ((const shape *)b)->seconds;
    return (x < y) - (x > y);
}

int main(int argc, char **argv) {
    em3_bench_args a = {.batch = 256, .threads = 1, .steps = 5, .warmup = 1};
    if (!em3_bench_parse_args(argc, argv, "--table", &a)) usage();
    int64_t batch = a.batch;
    int threads = a.threads, steps = a.steps;
    openblas_set_num_threads(threads);
    em3_bench_step *r = em3_bench_step_prepare(a.model, a.ov, a.n_ov, a.disable_passes, batch, 1);
    for (int k = 0; k < a.warmup; k++) em3_bench_step_run(r);
    double step = 0;
    G.recording = true;
    for (int k = 0; k < steps; k++) step += em3_bench_step_run(r);
    G.recording = false;
    step /= steps;
    double *per = calloc((size_t)G.n + 1, sizeof *per);
    double alone = replay(steps, per), in_step = G.seconds / steps, gflop = G.flops / steps / 1e9;
    printf("{\"impl\": \"em3\", \"batch\": %lld, \"threads\": %d, \"step_ms\": %.3f, \"gemm_ms\": %.3f, "
           "\"gemm_share\": %.3f, \"gemm_gflop\": %.4f, \"gemm_gflops\": %.2f, \"sgemm_alone_ms\": %.3f, "
           "\"sgemm_alone_gflops\": %.2f, \"rate_vs_sgemm\": %.3f, \"shapes\": %d, \"unrecorded_calls\": %ld}\n",
           (long long)batch, threads, 1e3 * step, 1e3 * in_step, in_step / step, gflop, gflop / in_step,
           1e3 * alone, gflop / alone, alone / in_step, G.n, G.dropped);
    if (a.flag) {
        qsort(G.s, (size_t)G.n, sizeof *G.s, by_time);
        printf("\n| calls/step | M | N | K | transposes | beta | in the step ms | alone ms | in-step GFLOP/s |\n"
               "|---:|---:|---:|---:|---|---:|---:|---:|---:|\n");
        for (int i = 0; i < G.n && i < 12; i++) {
            const shape *s = &G.s[i];
            long calls = s->calls / steps;
            double ms = 1e3 * s->seconds / steps;
            printf("| %ld | %d | %d | %d | %s%s | %g | %.3f | %.3f | %.1f |\n", calls, (int)s->m, (int)s->n, (int)s->k,
                   s->ta == CblasTrans ? "Aᵀ" : "A", s->tb == CblasTrans ? "Bᵀ" : "B", s->beta, ms,
                   1e3 * per[s->id], 2.0 * s->m * s->n * s->k * calls / (ms * 1e6));
        }
    }
    free(per);
    em3_bench_step_free(r);
    return 0;
}
