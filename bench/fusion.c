/* bench/fusion.c — what fuse-attention and fuse-lora buy in a training step (forward and
 * backward, JIT-compiled): attention at 20 to 512 keys fused against the primitives the DSL
 * writes, and lora_matmul against its unfused graph and against full fine-tuning of W.
 * Prints a Markdown table of median times over alternating repetitions (wall clock, and the
 * process's CPU time, which a shared machine's other load disturbs less), the arena each
 * variant's memory plan needs and the peak RSS of a process that runs it once. An argument
 * keeps only the cases whose label starts with it ("attention", "LoRA"). Not a test. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "codegen/codegen.h"
#include "passes/passes.h"
#include "runtime/init.h"

#include "bench_util.h"

#define REPS 7

/* ---- the cases ----------------------------------------------------------------------------- */

/* Attention over bh (batch × heads) slices of L queries and keys, dh = 16 (EM3's d = 64 over
 * 4 heads), a padding mask that hides the last eighth of the keys, and loss = Σ o·w; q, k and v
 * are trainable so that the step computes dq, dk and dv. bh shrinks as L² grows (8192·32²/L²),
 * so that each run does about the same work. */
enum { DH = 16 };

static char *attention_ir(int L, int bh) {
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    fprintf(f, "module @attention\n\n");
    for (const char *g = "qkv"; *g; g++) fprintf(f, "global @%c : f32[%d, %d, %d] param\n", *g, bh, L, DH);
    fprintf(f, "global @mask : f32[%d, 1, %d] frozen\nglobal @w : f32[%d, %d, %d] frozen\n\n", bh, L, bh, L, DH);
    fprintf(f,
            "func @forward {\n"
            "  %%0 = param @q : f32[%1$d, %2$d, %3$d]\n"
            "  %%1 = param @k : f32[%1$d, %2$d, %3$d]\n"
            "  %%2 = param @v : f32[%1$d, %2$d, %3$d]\n"
            "  %%3 = param @mask : f32[%1$d, 1, %2$d]\n"
            "  %%4 = param @w : f32[%1$d, %2$d, %3$d]\n"
            "  %%5 = matmul(%%0, %%1) {tb = true} : f32[%1$d, %2$d, %2$d]\n"
            "  %%6 = const {value = 0.25} : f32[]\n"
            "  %%7 = mul(%%5, %%6) : f32[%1$d, %2$d, %2$d]\n"
            "  %%8 = const {value = 1.0} : f32[]\n"
            "  %%9 = sub(%%3, %%8) : f32[%1$d, 1, %2$d]\n"
            "  %%10 = const {value = 1e+09} : f32[]\n"
            "  %%11 = mul(%%9, %%10) : f32[%1$d, 1, %2$d]\n"
            "  %%12 = add(%%7, %%11) : f32[%1$d, %2$d, %2$d]\n"
            "  %%13 = softmax(%%12) {axis = 2} : f32[%1$d, %2$d, %2$d]\n"
            "  %%14 = mul(%%13, %%3) : f32[%1$d, %2$d, %2$d]\n"
            "  %%15 = matmul(%%14, %%2) : f32[%1$d, %2$d, %3$d]\n"
            "  %%16 = mul(%%15, %%4) : f32[%1$d, %2$d, %3$d]\n"
            "  %%17 = sum(%%16) {axes = [0, 1, 2]} : f32[]\n"
            "  return loss = %%17\n"
            "}\n",
            bh, L, DH);
    fclose(f);
    return s;
}

/* y = x w + 2 (x a) b over R rows (64 impressions × 512 history tokens), 256 → 256, rank 8,
 * loss = Σ y·g. x trainable: dx is computed, as for an adapter inside an encoder; x frozen: it
 * is not, as for adapters on top of a frozen (cached) encoder. `full`: no adapters, y = x w
 * with w trainable (full fine-tuning). */
enum { R = 32768, DIN = 256, DOUT = 256, RANK = 8 };

static char *lora_ir(bool full, bool x_frozen) {
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    fprintf(f, "module @lora\n\nglobal @x : f32[%d, %d] %s\nglobal @w : f32[%d, %d] %s\n", R, DIN,
            x_frozen ? "frozen" : "param", DIN, DOUT, full ? "param" : "frozen");
    if (!full) fprintf(f, "global @a : f32[%d, %d] param\nglobal @b : f32[%d, %d] param\n", DIN, RANK, RANK, DOUT);
    fprintf(f, "global @g : f32[%d, %d] frozen\n\nfunc @forward {\n", R, DOUT);
    fprintf(f, "  %%0 = param @x : f32[%d, %d]\n  %%1 = param @w : f32[%d, %d]\n  %%2 = param @g : f32[%d, %d]\n"
               "  %%3 = matmul(%%0, %%1) : f32[%d, %d]\n",
            R, DIN, DIN, DOUT, R, DOUT, R, DOUT);
    int y = 3;
    if (!full) {
        fprintf(f,
                "  %%4 = param @a : f32[%1$d, %2$d]\n  %%5 = param @b : f32[%2$d, %3$d]\n"
                "  %%6 = matmul(%%0, %%4) : f32[%4$d, %2$d]\n  %%7 = matmul(%%6, %%5) : f32[%4$d, %3$d]\n"
                "  %%8 = const {value = 2.0} : f32[]\n  %%9 = mul(%%8, %%7) : f32[%4$d, %3$d]\n"
                "  %%10 = add(%%3, %%9) : f32[%4$d, %3$d]\n",
                DIN, RANK, DOUT, R);
        y = 10;
    }
    fprintf(f, "  %%%d = mul(%%%d, %%2) : f32[%d, %d]\n  %%%d = sum(%%%d) {axes = [0, 1]} : f32[]\n  return loss = %%%d\n}\n",
            y + 1, y, R, DOUT, y + 2, y + 1, y + 2);
    fclose(f);
    return s;
}

typedef struct {
    const char *name;
    bool fuse; /* run fuse-attention and fuse-lora */
    bool full; /* LoRA: full fine-tuning of w instead of adapters */
} variant;

typedef struct {
    const char *label;
    int L, bh;     /* attention; L = 0: a LoRA case */
    bool x_frozen; /* LoRA: no dx */
} bench_case;

static const bench_case cases[] = {
    {"attention, L = 20", 20, 20971, false},
    {"attention, L = 32", 32, 8192, false},
    {"attention, L = 50", 50, 3355, false},
    {"attention, L = 128", 128, 512, false},
    {"attention, L = 256", 256, 128, false},
    {"attention, L = 400", 400, 52, false},
    {"attention, L = 512", 512, 32, false},
    {"LoRA, 32768 × 256 → 256, r = 8, dx needed", 0, 0, false},
    {"LoRA, as above, x frozen (no dx)", 0, 0, true},
};
#define N_CASES ((int)(sizeof cases / sizeof *cases))

static const variant att_variants[] = {{"fused", true, false}, {"unfused", false, false}};
static const variant lora_variants[] = {
    {"lora_matmul", true, false}, {"unfused", false, false}, {"full fine-tuning of W", false, true}};

static const variant *variants_of(const bench_case *c, int *n) {
    *n = c->L ? 2 : 3;
    return c->L ? att_variants : lora_variants;
}

/* ---- compiling and running one variant ----------------------------------------------------- */

/* The -O2 pipeline up to autodiff's gradients (no optimizer step), with or without the fusion
 * passes. */
#define PIPE_TAIL "autodiff,simplify,cse,fuse-elementwise,dce"

typedef struct {
    em3_module *m;
    em3_jit *jit;
    const em3_compiled_func *cf;
    void **glob;
    void *arena;
    const void *out[64];
    int kernels;
} runner;

static runner prepare(const bench_case *c, const variant *v) {
    runner r = {0};
    em3_diag *d = em3_diag_create(stderr);
    char *text = c->L ? attention_ir(c->L, c->bh) : lora_ir(v->full, c->x_frozen);
    r.m = em3_module_parse(text, strlen(text), c->label, d);
    free(text);
    em3_pipeline *pl = em3_pipeline_create();
    em3_pass_options po = {.quiet = true};
    if (!r.m || !em3_pipeline_parse(pl, v->fuse ? "fuse-attention,fuse-lora," PIPE_TAIL : PIPE_TAIL, d) ||
        !em3_pipeline_run(pl, r.m, &po, d)) {
        fprintf(stderr, "bench_fusion: %s (%s) does not compile\n", c->label, v->name);
        exit(1);
    }
    em3_pipeline_free(pl);
    em3_module_remove_func(r.m, em3_module_find_func(r.m, "forward"));
    r.kernels = em3_codegen_kernel_count(em3_module_find_func(r.m, "train"));
    em3_codegen_options o = em3_codegen_defaults();
    o.max_batch = 1;
    r.jit = em3_jit_compile(r.m, &o, d);
    em3_diag_free(d);
    if (!r.jit || !(r.cf = em3_jit_func(r.jit, "train"))) exit(1);
    em3_rng rng;
    em3_rng_seed(&rng, 7);
    r.glob = calloc((size_t)r.m->n_global, sizeof(void *));
    for (int g = 0; g < r.m->n_global; g++) {
        const em3_global *gl = &r.m->global[g];
        int64_t n = em3_type_numel(&gl->type, 1);
        float *x = malloc(sizeof(float) * (size_t)n);
        bool mask = !strcmp(gl->name, "mask");
        for (int64_t i = 0; i < n; i++) /* the mask hides the last eighth of the keys */
            x[i] = mask ? (float)(i % c->L < c->L - c->L / 8) : (float)(0.5 * em3_rng_normal(&rng));
        r.glob[g] = x;
    }
    r.arena = aligned_alloc(64, (size_t)r.cf->arena_bytes + 64);
    memset(r.arena, 0, (size_t)r.cf->arena_bytes); /* touched: RSS counts the whole arena */
    return r;
}

static double seconds(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One step; its wall-clock and CPU seconds. */
static void run_once(runner *r, double *wall, double *cpu) {
    em3_frame fr = {.batch = 1, .arena = r->arena, .global = r->glob, .output = r->out, .err_node = -1};
    double w0 = seconds(CLOCK_MONOTONIC), c0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
    if (r->cf->fn(&fr)) exit(1);
    *cpu = seconds(CLOCK_PROCESS_CPUTIME_ID) - c0;
    *wall = seconds(CLOCK_MONOTONIC) - w0;
}

static void finish(runner *r) {
    for (int g = 0; g < r->m->n_global; g++) free(r->glob[g]);
    free(r->glob);
    free(r->arena);
    em3_jit_free(r->jit);
    em3_module_free(r->m);
}

/* ---- peak memory: a fresh process per variant ------------------------------------------------ */

/* The peak RSS (MiB) of this program re-run as `--once CASE VARIANT` (CASE −1: start up only),
 * which compiles the variant, runs its step once and prints its VmHWM. */
static double peak_rss(int ci, int vi) {
    char args[64];
    snprintf(args, sizeof args, "%d %d", ci, vi);
    return em3_bench_peak_rss_of("--once", args);
}

/* The median of n times, sorted in place, in ms. */
static double median_ms(double *t, int n) {
    em3_bench_sort(t, n);
    return 1e3 * t[n / 2];
}

int main(int argc, char **argv) {
    openblas_set_num_threads(1); /* the fused kernels run on one thread: so does every GEMM */
    double wall, cpu;
    if (argc == 4 && !strcmp(argv[1], "--once")) {
        int ci = atoi(argv[2]), vi = atoi(argv[3]), n;
        if (ci >= 0) {
            runner r = prepare(&cases[ci], &variants_of(&cases[ci], &n)[vi]);
            run_once(&r, &wall, &cpu);
            finish(&r);
        }
        printf("%.1f\n", em3_bench_own_peak_rss());
        return 0;
    }
    const char *only = argc > 1 ? argv[1] : "";
    printf("Training step (forward + backward, gradients only) through the JIT, one thread; median of "
           "%d alternating runs after one warm-up (wall: min – max); OPENBLAS_CORETYPE=%s.\n"
           "Peak RSS is that of a process that compiles the variant and runs it once; one that only "
           "starts up peaks at %.0f MiB.\n\n",
           REPS, getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)", peak_rss(-1, 0));
    printf("| case | variant | kernels | wall ms (min – max) | wall vs first | CPU ms | CPU vs first | arena MiB | "
           "peak RSS MiB |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int ci = 0; ci < N_CASES; ci++) {
        if (strncmp(cases[ci].label, only, strlen(only))) continue;
        int nv;
        const variant *vs = variants_of(&cases[ci], &nv);
        runner r[3];
        double tw[3][REPS], tc[3][REPS];
        for (int k = 0; k < nv; k++) {
            r[k] = prepare(&cases[ci], &vs[k]);
            run_once(&r[k], &wall, &cpu); /* warm-up: page faults, OpenBLAS buffers */
        }
        for (int rep = 0; rep < REPS; rep++) /* interleaved, the order rotating, so drift hits all */
            for (int j = 0; j < nv; j++) {
                int k = (j + rep) % nv;
                run_once(&r[k], &tw[k][rep], &tc[k][rep]);
            }
        double first_wall = 0, first_cpu = 0;
        for (int k = 0; k < nv; k++) {
            double mw = median_ms(tw[k], REPS), mc = median_ms(tc[k], REPS);
            if (k == 0) first_wall = mw, first_cpu = mc;
            printf("| %s | %s | %d | %.1f (%.1f – %.1f) | %.2f× | %.1f | %.2f× | %.1f | %.0f |\n",
                   k ? "" : cases[ci].label, vs[k].name, r[k].kernels, mw, 1e3 * tw[k][0], 1e3 * tw[k][REPS - 1],
                   mw / first_wall, mc, mc / first_cpu, (double)r[k].cf->arena_bytes / (1 << 20), peak_rss(ci, k));
            fflush(stdout);
        }
        for (int k = 0; k < nv; k++) finish(&r[k]);
    }
    return 0;
}
