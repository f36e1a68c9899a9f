/* bench/bench_util.c — see bench_util.h. */
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "passes/passes.h"
#include "runtime/init.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void em3_bench_sort(double *x, int n) { qsort(x, (size_t)n, sizeof *x, cmp_double); }

double em3_bench_own_peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kib = NAN;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kib = atof(line + 6);
    if (f) fclose(f);
    return kib / 1024;
}

double em3_bench_peak_rss_of(const char *flag, const char *args) {
    char exe[4096], cmd[8192];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return NAN;
    exe[n] = 0;
    snprintf(cmd, sizeof cmd, "'%s' %s %s", exe, flag, args);
    FILE *p = popen(cmd, "r");
    double mib = NAN;
    if (p && fscanf(p, "%lf", &mib) != 1) mib = NAN;
    if (p && pclose(p)) mib = NAN;
    return mib;
}

double em3_bench_seconds_since(const struct timespec *t0) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

static _Noreturn void die(const char *what, const char *err) {
    fprintf(stderr, "bench: %s: %s\n", what, err);
    exit(1);
}

/* Random content tables for the model's data globals: image floats, text ids with a few pads. */
static void bind_tables(em3_bench_step *r, em3_rng *rng) {
    for (int g = 0; g < r->m->n_global; g++) {
        const em3_global *gl = &r->m->global[g];
        if (gl->kind != EM3_GLOBAL_DATA) continue;
        EM3_ASSERT(r->n_table < EM3_BENCH_MAX_TABLES, "more data tables than the runner holds");
        int64_t n = em3_type_numel(&gl->type, 1);
        void *data = malloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) {
            if (gl->type.dtype == EM3_DTYPE_I32) ((int32_t *)data)[i] = (int32_t)em3_rng_below(rng, 1000);
            else ((float *)data)[i] = (float)em3_rng_normal(rng);
        }
        em3_column c = {.name = gl->name, .kind = EM3_COL_EMBEDDING, .dtype = gl->type.dtype,
                        .rank = gl->type.rank - 1, .rows = gl->type.dim[0], .data = data};
        for (int d = 1; d < gl->type.rank; d++) c.dim[d - 1] = gl->type.dim[d];
        r->table_data[r->n_table++] = data;
        char err[512];
        if (!em3_exec_bind_table(r->x, gl->name, &c, err, sizeof err)) die(gl->name, err);
    }
}

/* Random inputs of @train for a batch: ids below each input's vocabulary (ids ≥ 1: no padding,
 * every history position is real), 0/1 labels, the learning rate and step scalars. */
static void make_inputs(em3_bench_step *r, em3_rng *rng) {
    const em3_compiled_func *cf = em3_exec_func(r->x, "train");
    EM3_ASSERT(cf->n_inputs <= EM3_BENCH_MAX_INPUTS, "more @train inputs than the runner holds");
    r->n_in = cf->n_inputs;
    for (int k = 0; k < cf->n_inputs; k++) {
        const em3_node *in = cf->inputs[k];
        const char *name = em3_node_s(in, "name");
        int64_t n = em3_type_numel(&in->type, r->batch), vocab = em3_node_i(in, "vocab");
        void *data = malloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) {
            if (!strncmp(name, "opt.", 4))
                ((float *)data)[i] = !strcmp(name, "opt.step") ? 1.0f : !strcmp(name, "opt.row0") ? 0.0f : 1e-3f;
            else if (in->type.dtype == EM3_DTYPE_I32) ((int32_t *)data)[i] = (int32_t)(1 + em3_rng_below(rng, (uint64_t)vocab - 1));
            else ((float *)data)[i] = (float)(em3_rng_uniform(rng) < 0.2);
        }
        r->in[k] = (em3_exec_input){name, data};
        r->in_data[k] = data;
    }
}

em3_bench_step *em3_bench_step_prepare(const char *model, const em3_const_override *ov, int n_ov,
                                       const char *disable_passes, int64_t batch, uint64_t seed) {
    em3_bench_step *r = calloc(1, sizeof *r);
    r->batch = batch;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    em3_frontend_options fe = {.overrides = ov, .n_overrides = n_ov};
    em3_diag *d = em3_diag_create(stderr);
    if (!(r->m = em3_frontend_compile(model, &fe, d))) exit(1);
    em3_pipeline *pl = em3_pipeline_create();
    em3_pipeline_add_default(pl, 2);
    if (disable_passes && !em3_pipeline_disable(pl, disable_passes, d)) exit(2);
    em3_pass_options po = {.quiet = true}; /* optim NULL: em3 train's default, Adam */
    if (!em3_pipeline_run(pl, r->m, &po, d)) exit(1);
    em3_pipeline_free(pl);
    em3_codegen_options o = em3_codegen_defaults();
    o.max_batch = batch;
    if (!(r->j = em3_jit_compile(r->m, &o, d))) exit(1);
    em3_diag_free(d);
    r->compile_s = em3_bench_seconds_since(&t0);
    r->compiled_hwm_mib = em3_bench_own_peak_rss();
    em3_compiled_func *fs = calloc((size_t)r->m->n_func, sizeof *fs);
    for (int i = 0; i < r->m->n_func; i++) fs[i] = *em3_jit_func(r->j, r->m->func[i]->name);
    r->x = em3_exec_create(r->m, fs, r->m->n_func, seed);
    free(fs); /* copied by the executor */
    em3_rng rng;
    em3_rng_seed(&rng, seed);
    bind_tables(r, &rng);
    make_inputs(r, &rng);
    char err[512];
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!em3_exec_precompute(r->x, err, sizeof err)) die("precompute", err);
    r->precompute_s = em3_bench_seconds_since(&t0);
    r->precomputed_hwm_mib = em3_bench_own_peak_rss();
    r->planned_bytes = em3_exec_func(r->x, "train")->arena_bytes;
    for (int g = 0; g < r->m->n_global; g++)
        if (r->m->global[g].kind != EM3_GLOBAL_DATA) r->planned_bytes += 4 * em3_type_numel(&r->m->global[g].type, 1);
    return r;
}

bool em3_bench_parse_args(int argc, char **argv, const char *flag, em3_bench_args *a) {
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (o[0] != '-' && !a->model) a->model = o;
        else if (flag && !strcmp(o, flag)) a->flag = true;
        else if (!v) return false;
        else if (!strcmp(o, "--batch")) a->batch = atoll(argv[++i]);
        else if (!strcmp(o, "--threads")) a->threads = atoi(argv[++i]);
        else if (!strcmp(o, "--steps")) a->steps = atoi(argv[++i]);
        else if (!strcmp(o, "--warmup")) a->warmup = atoi(argv[++i]);
        else if (!strcmp(o, "--disable-passes")) a->disable_passes = argv[++i];
        else if (!strcmp(o, "--set") && strchr(v, '=') && a->n_ov < EM3_BENCH_MAX_SETS) {
            char *eq = strchr(argv[++i], '=');
            *eq = 0;
            a->ov[a->n_ov++] = (em3_const_override){argv[i], eq + 1, false};
        } else return false;
    }
    return a->model && a->batch >= 1 && a->threads >= 1 && a->steps >= 1 && a->warmup >= 0;
}

double em3_bench_step_run(em3_bench_step *r) {
    char err[512];
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!em3_exec_run(r->x, "train", r->batch, r->in, r->n_in, err, sizeof err)) die("train step", err);
    return em3_bench_seconds_since(&t0);
}

void em3_bench_step_free(em3_bench_step *r) {
    for (int k = 0; k < r->n_in; k++) free(r->in_data[k]);
    for (int t = 0; t < r->n_table; t++) free(r->table_data[t]);
    em3_exec_free(r->x);
    em3_jit_free(r->j);
    em3_module_free(r->m);
    free(r);
}
