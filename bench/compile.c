/* bench/compile.c — how long compiling a model takes, by phase, and how large its shared
 * object is: for each model of models/, the frontend (parse, check, lower), the -O2 pass
 * pipeline with autodiff and Adam, and LLVM (IR emission, -O3, machine code, JIT linking) as
 * `em3 train` does it (@train, @predict and the cache functions); then `em3 build --train`'s
 * .so size. Median of 3 compilations each. Prints a Markdown table. Not a test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "passes/passes.h"

#define REPS 3

static double clock_s(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }

/* One compilation as em3 train does it; the phase times go to t[0..2], the CPU time of the
 * LLVM phase (less sensitive than wall time to other jobs on a shared machine) to t[3]. */
static void compile_once(const char *path, double t[4], int *kernels) {
    em3_diag *d = em3_diag_create(stderr);
    em3_frontend_options fe = {0};
    double t0 = now();
    em3_module *m = em3_frontend_compile(path, &fe, d);
    if (!m) exit(1);
    double t1 = now();
    em3_pipeline *pl = em3_pipeline_create();
    em3_pipeline_add_default(pl, 2);
    em3_pass_options po = {.quiet = true};
    if (!em3_pipeline_run(pl, m, &po, d)) exit(1);
    em3_pipeline_free(pl);
    em3_module_remove_func(m, em3_module_find_func(m, "forward"));
    double t2 = now(), c2 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    em3_codegen_options o = em3_codegen_defaults();
    em3_jit *j = em3_jit_compile(m, &o, d);
    if (!j) exit(1);
    double t3 = now();
    t[3] = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c2;
    *kernels = 0;
    for (int i = 0; i < m->n_func; i++) *kernels += em3_codegen_kernel_count(m->func[i]);
    t[0] = t1 - t0;
    t[1] = t2 - t1;
    t[2] = t3 - t2;
    em3_jit_free(j);
    em3_module_free(m);
    em3_diag_free(d);
}

/* The size of `em3 build --train`'s library, by the em3 next to this program. */
static long so_kib(const char *em3, const char *path) {
    char dir[] = "/tmp/em3_bench_compile_XXXXXX", cmd[8192], so[4200];
    if (!mkdtemp(dir)) return -1;
    snprintf(so, sizeof so, "%s/libm.so", dir);
    snprintf(cmd, sizeof cmd, "'%s' build --train '%s' -o '%s' >/dev/null 2>&1", em3, path, so);
    struct stat st;
    long kib = system(cmd) == 0 && stat(so, &st) == 0 ? (long)(st.st_size / 1024) : -1;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) kib = -1;
    return kib;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_compile EM3_BINARY MODEL.em3...  (run from the source folder)\n");
        return 2;
    }
    printf("Compile time as `em3 train` compiles (frontend; -O2 passes with autodiff and Adam; LLVM -O3 "
           "and JIT of @train, @predict and the cache functions), median of %d, seconds; the .so is "
           "`em3 build --train` for x86-64-v3.\n\n", REPS);
    printf("| model | kernels | frontend s | passes s | LLVM s | LLVM CPU s | total s | .so KiB |\n"
           "|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int a = 2; a < argc; a++) {
        double ph[4][REPS], total[REPS];
        int kernels = 0;
        for (int r = 0; r < REPS; r++) {
            double t[4];
            compile_once(argv[a], t, &kernels);
            for (int k = 0; k < 4; k++) ph[k][r] = t[k];
            total[r] = t[0] + t[1] + t[2];
        }
        for (int k = 0; k < 4; k++) em3_bench_sort(ph[k], REPS);
        em3_bench_sort(total, REPS);
        printf("| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %ld |\n", argv[a], kernels, ph[0][REPS / 2],
               ph[1][REPS / 2], ph[2][REPS / 2], ph[3][REPS / 2], total[REPS / 2], so_kib(argv[1], argv[a]));
        fflush(stdout);
    }
    return 0;
}
