/* bench/attention_kernel.c — the fused attention kernels alone (runtime/rt_attention.c), the
 * forward and the backward pass timed apart: bench_fusion times whole training steps, this
 * shows where a step's attention time goes and how the kernels fare at each head width.
 * bh = 8192·32²/L² · 16/dh slices of L queries and keys per run (the same work at every L and
 * dh; at dh = 16 the slices of bench_fusion), inputs N(0, 0.5²) from seed 7 and a padding mask
 * hiding the last eighth of the keys, as there. Prints a Markdown table of the median CPU time
 * of 9 runs after a warm-up, and the rate of the products (one L × L × dh product is 2·L²·dh
 * flops; the forward pass has 2, the backward 5, exponentials and the rest not counted).
 * Not a test. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/abi.h"
#include "runtime/init.h"

#include "bench_util.h"

#define REPS 9

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *normal(em3_rng *r, int64_t n) {
    float *x = malloc(sizeof(float) * (size_t)n);
    if (!x) exit(1);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(0.5 * em3_rng_normal(r));
    return x;
}

/* Median CPU ms of the forward and the backward pass over bh slices of L × dh. */
static void time_case(int64_t L, int64_t dh, double *fwd_ms, double *bwd_ms, int64_t *bh_out) {
    int64_t bh = 8192 * 32 * 32 / (L * L) * 16 / dh, n = bh * L * dh;
    em3_rng r;
    em3_rng_seed(&r, 7);
    float *q = normal(&r, n), *k = normal(&r, n), *v = normal(&r, n), *dout = normal(&r, n);
    float *o = malloc(sizeof(float) * (size_t)n), *g = malloc(sizeof(float) * (size_t)(3 * n));
    float *mask = malloc(sizeof(float) * (size_t)(bh * L));
    if (!o || !g || !mask) exit(1);
    for (int64_t i = 0; i < bh * L; i++) mask[i] = (float)(i % L < L - L / 8);
    float scale = 1.0f / sqrtf((float)dh);
    double tf[REPS], tb[REPS];
    for (int rep = -1; rep < REPS; rep++) { /* rep −1: warm-up */
        double t0 = cpu_seconds();
        for (int64_t s = 0; s < bh; s++)
            em3_rt_attention_fwd(q + s * L * dh, k + s * L * dh, v + s * L * dh, mask + s * L, 0, L, L, dh, dh,
                                 scale, o + s * L * dh);
        double t1 = cpu_seconds();
        memset(g, 0, sizeof(float) * (size_t)(3 * n)); /* dk and dv accumulate */
        double t2 = cpu_seconds();
        for (int64_t s = 0; s < bh; s++) {
            float *dq = g + s * 3 * L * dh;
            em3_rt_attention_bwd(q + s * L * dh, k + s * L * dh, v + s * L * dh, mask + s * L, 0, o + s * L * dh,
                                 dout + s * L * dh, L, L, dh, dh, scale, dq, dq + L * dh, dq + 2 * L * dh);
        }
        double t3 = cpu_seconds();
        if (rep >= 0) tf[rep] = t1 - t0, tb[rep] = t3 - t2;
    }
    em3_bench_sort(tf, REPS);
    em3_bench_sort(tb, REPS);
    *fwd_ms = 1e3 * tf[REPS / 2];
    *bwd_ms = 1e3 * tb[REPS / 2];
    *bh_out = bh;
    free(q), free(k), free(v), free(dout), free(o), free(g), free(mask);
}

int main(void) {
    static const int64_t lengths[] = {20, 32, 50, 128, 256, 400, 512}, widths[] = {16, 32, 64};
    printf("Fused attention kernels alone, one thread: median CPU time of %d runs after a warm-up.\n\n"
           "| L | dh | slices | forward ms | backward ms | backward / forward | forward GFLOP/s | "
           "backward GFLOP/s |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
           REPS);
    for (size_t w = 0; w < sizeof widths / sizeof *widths; w++)
        for (size_t i = 0; i < sizeof lengths / sizeof *lengths; i++) {
            int64_t L = lengths[i], dh = widths[w], bh;
            double f, b;
            time_case(L, dh, &f, &b, &bh);
            double flop = 2.0 * (double)(bh * L * L * dh); /* one L × L × dh product */
            printf("| %lld | %lld | %lld | %.1f | %.1f | %.2f | %.1f | %.1f |\n", (long long)L, (long long)dh,
                   (long long)bh, f, b, b / f, 2 * flop / f / 1e6, 5 * flop / b / 1e6);
            fflush(stdout);
        }
    return 0;
}
