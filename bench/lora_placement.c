/* bench/lora_placement.c — what each way of encoding EM3-DIN's behaviour sequence costs per
 * training step as the sequence grows: history = "full" (fine-tune the encoder through the
 * history), "all" (LoRA on every linear), "top" (LoRA on the output projection, the frozen
 * rest cached per item by cache-frozen) and "frozen" (no adapters, fully cached), for
 * L = 20 .. 400. Each configuration compiles models/em3_din.em3 with --set seq=L history=MODE
 * exactly as em3 train does (-O2, Adam), runs full training steps (forward, backward, update)
 * on random ids through the JIT, and reports the median step time, the memory the compiled
 * step plans (arena + globals, cache tables included) and the peak RSS of a process that runs
 * it. Prints a Markdown table. Not a test; docs/performance.md records its output. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "passes/passes.h"
#include "runtime/exec.h"
#include "runtime/init.h"

#include "bench_util.h"

#define REPS 5

static const char *const modes[] = {"full", "all", "top", "frozen"};
static const int lengths[] = {20, 50, 100, 200, 400};
enum { N_MODES = 4, N_LENGTHS = 5 };

typedef struct {
    em3_module *m;
    em3_jit *j;
    em3_exec *x;
    em3_column table[8];
    void *table_data[8];
    int n_table;
    em3_exec_input in[16];
    void *in_data[16];
    int n_in;
    double precompute_s;
    int64_t planned_bytes;
} step_runner;

static double seconds_since(const struct timespec *t0) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

static void die(const char *what, const char *err) {
    fprintf(stderr, "bench_lora_placement: %s: %s\n", what, err);
    exit(1);
}

/* Random content tables for the model's data globals: image floats, text ids with a few pads. */
static void bind_tables(step_runner *r, em3_rng *rng) {
    for (int g = 0; g < r->m->n_global; g++) {
        const em3_global *gl = &r->m->global[g];
        if (gl->kind != EM3_GLOBAL_DATA) continue;
        int64_t n = em3_type_numel(&gl->type, 1);
        void *data = malloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) {
            if (gl->type.dtype == EM3_DTYPE_I32) ((int32_t *)data)[i] = (int32_t)em3_rng_below(rng, 1000);
            else ((float *)data)[i] = (float)em3_rng_normal(rng);
        }
        em3_column *c = &r->table[r->n_table];
        *c = (em3_column){.name = gl->name, .kind = EM3_COL_EMBEDDING, .dtype = gl->type.dtype,
                          .rank = gl->type.rank - 1, .rows = gl->type.dim[0], .data = data};
        for (int d = 1; d < gl->type.rank; d++) c->dim[d - 1] = gl->type.dim[d];
        r->table_data[r->n_table++] = data;
        char err[512];
        if (!em3_exec_bind_table(r->x, gl->name, c, err, sizeof err)) die(gl->name, err);
    }
}

/* Random inputs of @train for a batch: ids below each input's vocabulary (ids ≥ 1: no padding,
 * every history position is real), 0/1 labels, the learning rate and step scalars. */
static void make_inputs(step_runner *r, int64_t batch, em3_rng *rng) {
    const em3_compiled_func *cf = em3_exec_func(r->x, "train");
    r->n_in = cf->n_inputs;
    for (int k = 0; k < cf->n_inputs; k++) {
        const em3_node *in = cf->inputs[k];
        const char *name = em3_node_s(in, "name");
        int64_t n = em3_type_numel(&in->type, batch), vocab = em3_node_i(in, "vocab");
        void *data = malloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) {
            if (!strncmp(name, "opt.", 4)) ((float *)data)[i] = !strcmp(name, "opt.step") ? 1.0f : 1e-3f;
            else if (in->type.dtype == EM3_DTYPE_I32) ((int32_t *)data)[i] = (int32_t)(1 + em3_rng_below(rng, (uint64_t)vocab - 1));
            else ((float *)data)[i] = (float)(em3_rng_uniform(rng) < 0.2);
        }
        r->in[k] = (em3_exec_input){name, data};
        r->in_data[k] = data;
    }
}

static step_runner prepare(const char *model, const char *mode, int L, int64_t batch) {
    step_runner r = {0};
    char seq[16];
    snprintf(seq, sizeof seq, "%d", L);
    const em3_const_override ov[] = {{"seq", seq, false}, {"history", mode, false}};
    em3_frontend_options fe = {.overrides = ov, .n_overrides = 2};
    em3_diag *d = em3_diag_create(stderr);
    if (!(r.m = em3_frontend_compile(model, &fe, d))) exit(1);
    em3_pipeline *pl = em3_pipeline_create();
    em3_pipeline_add_default(pl, 2);
    em3_pass_options po = {.quiet = true};
    if (!em3_pipeline_run(pl, r.m, &po, d)) exit(1);
    em3_pipeline_free(pl);
    em3_codegen_options o = em3_codegen_defaults();
    o.max_batch = batch;
    if (!(r.j = em3_jit_compile(r.m, &o, d))) exit(1);
    em3_diag_free(d);
    em3_compiled_func *fs = calloc((size_t)r.m->n_func, sizeof *fs);
    for (int i = 0; i < r.m->n_func; i++) fs[i] = *em3_jit_func(r.j, r.m->func[i]->name);
    r.x = em3_exec_create(r.m, fs, r.m->n_func, 1);
    free(fs);
    em3_rng rng;
    em3_rng_seed(&rng, 5);
    bind_tables(&r, &rng);
    make_inputs(&r, batch, &rng);
    char err[512];
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!em3_exec_precompute(r.x, err, sizeof err)) die("precompute", err);
    r.precompute_s = seconds_since(&t0);
    r.planned_bytes = em3_exec_func(r.x, "train")->arena_bytes;
    for (int g = 0; g < r.m->n_global; g++)
        if (r.m->global[g].kind != EM3_GLOBAL_DATA) r.planned_bytes += 4 * em3_type_numel(&r.m->global[g].type, 1);
    return r;
}

static double run_step(step_runner *r, int64_t batch) {
    char err[512];
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!em3_exec_run(r->x, "train", batch, r->in, r->n_in, err, sizeof err)) die("train step", err);
    return seconds_since(&t0);
}

static void finish(step_runner *r) {
    for (int k = 0; k < r->n_in; k++) free(r->in_data[k]);
    for (int t = 0; t < r->n_table; t++) free(r->table_data[t]);
    em3_exec_free(r->x);
    em3_jit_free(r->j);
    em3_module_free(r->m);
}

int main(int argc, char **argv) {
    const char *model = "models/em3_din.em3";
    int64_t batch = 64;
    if (argc == 6 && !strcmp(argv[1], "--once")) { /* a fresh process: compile, one step, VmHWM */
        step_runner r = prepare(argv[2], argv[3], atoi(argv[4]), atoll(argv[5]));
        run_step(&r, atoll(argv[5]));
        finish(&r);
        printf("%.1f\n", em3_bench_own_peak_rss());
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else {
            fprintf(stderr, "usage: bench_lora_placement [--batch N] [--model FILE.em3]  (run from the source folder)\n");
            return 2;
        }
    }
    printf("EM3-DIN (%s, d = 64, 10,000 items) training step — forward, backward, Adam — at batch %lld, "
           "through the JIT; median of %d steps after one warm-up. Planned memory: the step's arena plus "
           "every parameter, optimizer state and cache table. Peak RSS: a process that compiles the "
           "configuration and runs one step. Precompute: filling the cache tables once.\n\n",
           model, (long long)batch, REPS);
    printf("| L | history | median ms/step (min – max) | vs full at L = 50 | planned MiB | peak RSS MiB | precompute s |\n"
           "|---:|---|---:|---:|---:|---:|---:|\n");
    typedef struct {
        double t[REPS], planned, peak, precompute;
    } row;
    row rows[N_LENGTHS][N_MODES];
    for (int li = 0; li < N_LENGTHS; li++)
        for (int mi = 0; mi < N_MODES; mi++) {
            fprintf(stderr, "  L = %d, history = %s\n", lengths[li], modes[mi]);
            row *w = &rows[li][mi];
            step_runner r = prepare(model, modes[mi], lengths[li], batch);
            run_step(&r, batch);
            for (int k = 0; k < REPS; k++) w->t[k] = 1e3 * run_step(&r, batch);
            em3_bench_sort(w->t, REPS);
            w->planned = (double)r.planned_bytes / (1 << 20);
            w->precompute = r.precompute_s;
            finish(&r);
            char args[512];
            snprintf(args, sizeof args, "'%s' %s %d %lld", model, modes[mi], lengths[li], (long long)batch);
            w->peak = em3_bench_peak_rss_of("--once", args);
        }
    const row *base = &rows[1][0]; /* full fine-tuning at L = 50 */
    for (int li = 0; li < N_LENGTHS; li++)
        for (int mi = 0; mi < N_MODES; mi++) {
            const row *w = &rows[li][mi];
            printf("| %d | %s | %.0f (%.0f – %.0f) | %.2f× time, %.2f× RSS | %.0f | %.0f | %.2f |\n", lengths[li],
                   modes[mi], w->t[REPS / 2], w->t[0], w->t[REPS - 1], w->t[REPS / 2] / base->t[REPS / 2],
                   w->peak / base->peak, w->planned, w->peak, w->precompute);
        }
    return 0;
}
