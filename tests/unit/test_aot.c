/* tests/unit/test_aot.c — `em3 build` end to end: DIN and EM3-DIN (--train) libraries loaded
 * together with dlopen and compared with the JIT (predict, train steps, every weight); weights
 * round trips and malformed files; data errors naming the input; failed builds leaving nothing;
 * exported symbols; the generated headers; and docs/examples/serve.c on a CSV file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "passes/passes.h"
#include "runtime/init.h"
#include "runtime/safetensors.h"

/* ---- the ABI of a loaded library -------------------------------------------------------------- */

typedef struct {
    void *lib;
    const em3_model_info *(*info)(void);
    void *(*create)(uint64_t seed);
    void (*destroy)(void *m);
    int (*inputs)(const char *fn, const em3_tensor_info **info);
    int (*outputs)(const char *fn, const em3_tensor_info **info);
    int (*tables)(const em3_tensor_info **info);
    int (*load)(void *m, const char *path, char *err, size_t errlen);
    int (*save)(const void *m, const char *path, char *err, size_t errlen);
    int (*set_table)(void *m, const char *name, const void *data, int64_t numel, char *err, size_t errlen);
    int (*predict)(void *m, int64_t batch, const void *const *in, void *const *out, char *err, size_t errlen);
    int (*train_step)(void *m, int64_t batch, const void *const *in, float lr, void *const *out, char *err,
                      size_t errlen);
} model_lib;

static const char *const abi_functions[] = {"create", "destroy", "info", "inputs", "outputs", "tables",
                                            "load_weights", "save_weights", "set_table", "predict",
                                            "train_step", NULL};

static struct {
    char dir[64];
    const char *em3_bin_dir, *src;
    model_lib din, em3_din, din_train;
} T;

static const char *path_in(const char *name) {
    static char p[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", T.dir, name);
    return p[k];
}

/* Runs a shell command; its exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = calloc(1, (size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (len) *len = got;
    return buf;
}

static void spit(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static bool file_contains(const char *path, const char *needle) {
    char *s = slurp(path, NULL);
    bool found = s && strstr(s, needle);
    if (!found) print_message("%s does not contain '%s':\n%s\n", path, needle, s ? s : "(missing)");
    free(s);
    return found;
}

static void open_lib(model_lib *l, const char *so, const char *name) {
    l->lib = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!l->lib) fail_msg("dlopen: %s", dlerror());
    void **slots[] = {(void **)&l->create, (void **)&l->destroy, (void **)&l->info, (void **)&l->inputs,
                      (void **)&l->outputs, (void **)&l->tables, (void **)&l->load, (void **)&l->save,
                      (void **)&l->set_table, (void **)&l->predict, (void **)&l->train_step};
    for (int i = 0; abi_functions[i]; i++) {
        char sym[128];
        snprintf(sym, sizeof sym, "%s_%s", name, abi_functions[i]);
        *slots[i] = dlsym(l->lib, sym);
        if (!*slots[i] && strcmp(abi_functions[i], "train_step")) fail_msg("%s has no %s", so, sym);
    }
}

static int teardown(void **state) {
    (void)state;
    if (T.din.lib) dlclose(T.din.lib);
    if (T.em3_din.lib) dlclose(T.em3_din.lib);
    if (T.din_train.lib) dlclose(T.din_train.lib);
    if (T.dir[0]) sh("rm -rf %s", T.dir);
    return 0;
}

/* The training library of EM3-DIN has dropout in its MLP, so that the library's dropout masks
 * (opt.step and opt.row0 supplied by the wrapper) are compared with the JIT's. */
#define EM3_DIN_DROPOUT "0.2"

static int setup(void **state) {
    (void)state;
    T.em3_bin_dir = getenv("EM3_BINARY_DIR");
    T.src = getenv("EM3_SOURCE_DIR");
    if (!T.em3_bin_dir || !T.src) {
        fprintf(stderr, "test_aot: run through ctest (EM3_BINARY_DIR, EM3_SOURCE_DIR)\n");
        return -1;
    }
    strcpy(T.dir, "/tmp/em3_aot_XXXXXX");
    if (!mkdtemp(T.dir)) return -1;
    static const struct {
        const char *model, *flags;
        model_lib *lib;
        const char *name;
    } libs[] = {{"din", "", &T.din, "din"},
                {"em3_din", "--train --max-batch=16 --set mlp_dropout=" EM3_DIN_DROPOUT, &T.em3_din, "em3_din"},
                {"din", "--train", &T.din_train, "din_train"}};
    for (int i = 0; i < 3; i++) {
        char so[128], err[128];
        snprintf(so, sizeof so, "lib%s.so", libs[i].name);
        snprintf(err, sizeof err, "%s.err", libs[i].name);
        int st = sh("%s/tools/em3 build %s %s/models/%s.em3 -o %s >/dev/null 2>%s", T.em3_bin_dir, libs[i].flags,
                    T.src, libs[i].model, path_in(so), path_in(err));
        size_t n = 0;
        char *msg = slurp(path_in(err), &n);
        if (st != 0 || n != 0) {
            fprintf(stderr, "test_aot: building %s: status %d, said:\n%s\n", libs[i].model, st, msg ? msg : "");
            free(msg);
            teardown(state); /* cmocka skips the group teardown when its setup fails */
            return -1;
        }
        free(msg);
        open_lib(libs[i].lib, path_in(so), libs[i].name);
    }
    return 0;
}


/* ---- deterministic inputs ---------------------------------------------------------------------- */

static int64_t numel_b(const em3_tensor_info *t, int64_t batch) {
    int64_t n = 1;
    for (int d = 0; d < t->rank; d++) n *= t->shape[d] < 0 ? -t->shape[d] * batch : t->shape[d];
    return n;
}

/* Input k of a batch: ids spread over the vocabulary with the tail of each sequence padded,
 * labels alternating. */
static void *make_input(const em3_tensor_info *t, int k, int64_t batch, uint64_t salt) {
    int64_t n = numel_b(t, batch), row = numel_b(t, 1);
    void *p = calloc((size_t)n + 1, 4);
    for (int64_t i = 0; i < n; i++) {
        uint64_t h = (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(k + 1) * 0xbf58476d1ce4e5b9ULL ^ salt;
        h ^= h >> 29;
        if (t->dtype == EM3_MODEL_I32) {
            bool padded = row > 1 && t->pad >= 0 && i % row >= row / 2 + (i / row) % (row / 2);
            ((int32_t *)p)[i] = padded ? (int32_t)t->pad : (int32_t)(h % (uint64_t)(t->vocab > 0 ? t->vocab : 2));
        } else {
            ((float *)p)[i] = (float)((i / row) % 2);
        }
    }
    return p;
}

static void **make_inputs(const em3_tensor_info *in, int n, int64_t batch, uint64_t salt) {
    void **v = calloc((size_t)n + 1, sizeof(void *));
    for (int k = 0; k < n; k++) v[k] = make_input(&in[k], k, batch, salt);
    return v;
}

static void free_all(void **v, int n) {
    for (int k = 0; v && k < n; k++) free(v[k]);
    free(v);
}

/* EM3-DIN's item side tables: image features in [-1, 1), text tokens below 5000. */
static void *table_data(const em3_tensor_info *t) {
    int64_t n = numel_b(t, 1);
    void *p = malloc((size_t)n * 4);
    em3_rng r;
    em3_rng_seed(&r, 99);
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == EM3_MODEL_I32)
            ((int32_t *)p)[i] = (int32_t)em3_rng_below(&r, 5000);
        else
            ((float *)p)[i] = (float)(2 * em3_rng_uniform(&r) - 1);
    }
    return p;
}

static void set_tables(const model_lib *l, void *m) {
    const em3_tensor_info *t;
    int n = l->tables(&t);
    for (int i = 0; i < n; i++) {
        void *data = table_data(&t[i]);
        char err[256];
        if (l->set_table(m, t[i].name, data, numel_b(&t[i], 1), err, sizeof err)) fail_msg("%s", err);
        free(data);
    }
}

/* |a - b| <= rel · (max(|a|, |b|) + the tensor's largest magnitude) elementwise: an element
 * that an update brought near zero (w - lr·m/√v cancelling) carries the absolute error of the
 * tensor's scale, not of its own. Returns the largest relative difference. */
static double assert_close(const float *a, const float *b, int64_t n, double rel, const char *what) {
    double worst = 0, top = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) top = fmax(top, fmax(fabs(a[i]), fabs(b[i])));
    for (int64_t i = 0; i < n; i++) {
        double scale = fmax(fabs(a[i]), fabs(b[i])) + top, diff = fabs((double)a[i] - b[i]);
        if (scale > 0 && diff / scale > worst) worst = diff / scale, at = i;
    }
    if (worst > rel) fail_msg("%s: element %lld: %.9g vs %.9g (relative %.3g > %.1g)", what, (long long)at, a[at], b[at], worst, rel);
    return worst;
}

/* ---- the same model in the JIT ------------------------------------------------------------------ */

typedef struct {
    em3_module *m;
    em3_jit *j;
    void **global;
    int64_t max_batch;
} jit_model;

/* The model compiled by the JIT for the library's CPU and maximum batch. */
static void jit_open(jit_model *jm, const model_lib *l, const char *model, bool train, uint64_t seed) {
    char path[512];
    snprintf(path, sizeof path, "%s/models/%s.em3", T.src, model);
    em3_diag *d = em3_diag_create(stderr);
    em3_const_override dropout = {"mlp_dropout", EM3_DIN_DROPOUT, false};
    em3_frontend_options fo = {.overrides = &dropout, .n_overrides = !strcmp(model, "em3_din")};
    jm->m = em3_frontend_compile(path, &fo, d);
    assert_non_null(jm->m);
    if (train) {
        em3_pipeline *pl = em3_pipeline_create();
        em3_pass_options po = {.verify_each = true, .quiet = true};
        assert_true(em3_pipeline_parse(pl, EM3_BUILD_TRAIN_PASSES, d) && em3_pipeline_run(pl, jm->m, &po, d));
        em3_pipeline_free(pl);
    }
    /* the library's CPU, so that both run the same vector code and may be compared closely */
    em3_codegen_options o = em3_codegen_defaults();
    o.cpu = "x86-64-v3";
    o.max_batch = jm->max_batch = l->info()->max_batch;
    jm->j = em3_jit_compile(jm->m, &o, d);
    assert_non_null(jm->j);
    em3_diag_free(d);
    jm->global = calloc((size_t)jm->m->n_global, sizeof(void *));
    for (int g = 0; g < jm->m->n_global; g++) {
        const em3_global *gl = &jm->m->global[g];
        jm->global[g] = calloc((size_t)em3_type_numel(&gl->type, 1) + 16, 4);
        if (gl->type.dtype == EM3_DTYPE_F32 && gl->kind != EM3_GLOBAL_DATA) em3_init_global(gl, seed, jm->global[g], 4);
    }
}

static void jit_close(jit_model *jm) {
    for (int g = 0; g < jm->m->n_global; g++) free(jm->global[g]);
    free(jm->global);
    em3_jit_free(jm->j);
    em3_module_free(jm->m);
}

static void *jit_global(jit_model *jm, const char *name) {
    int g = em3_module_find_global(jm->m, name);
    assert_true(g >= 0);
    return jm->global[g];
}

static int64_t row_bytes(const em3_type *t) { return em3_type_has_batch(t) ? 4 * em3_type_numel(t, 1) : 0; }

/* Runs `fn` with the caller's inputs in the library's order (the INPUT nodes without opt.*),
 * opt.step = step, every opt.lr.* = lr and opt.row0 the chunk's first row, in chunks of the
 * maximum batch; copies the outputs into out[k]. */
static void jit_run(jit_model *jm, const char *fn, int64_t batch, void *const *inputs, float lr, float step, void **out) {
    const em3_compiled_func *cf = em3_jit_func(jm->j, fn);
    assert_non_null(cf);
    void *arena = aligned_alloc(64, (size_t)(cf->arena_bytes + 64) / 64 * 64);
    for (int64_t first = 0; first < batch; first += jm->max_batch) {
        int64_t rows = batch - first < jm->max_batch ? batch - first : jm->max_batch;
        const void *in[64];
        float row0 = (float)first;
        for (int k = 0, c = 0; k < cf->n_inputs; k++) {
            const char *name = em3_node_s(cf->inputs[k], "name");
            if (!strcmp(name, "opt.step"))
                in[k] = &step;
            else if (!strcmp(name, "opt.row0"))
                in[k] = &row0;
            else if (!strncmp(name, "opt.lr.", 7))
                in[k] = &lr;
            else
                in[k] = (const char *)inputs[c++] + first * row_bytes(&cf->inputs[k]->type);
        }
        const void *outs[16];
        em3_frame fr = {.batch = rows, .arena = arena, .global = jm->global, .input = in, .output = outs};
        assert_int_equal(cf->fn(&fr), 0);
        for (int k = 0; k < cf->n_outputs; k++)
            memcpy((char *)out[k] + first * row_bytes(&cf->output_types[k]), outs[k],
                   (size_t)em3_type_numel(&cf->output_types[k], rows) * 4);
    }
    free(arena);
}

static void **alloc_outputs(const em3_tensor_info *t, int n, int64_t batch) {
    void **v = calloc((size_t)n + 1, sizeof(void *));
    for (int k = 0; k < n; k++) v[k] = calloc((size_t)numel_b(&t[k], batch) + 1, 4);
    return v;
}

/* ---- tests -------------------------------------------------------------------------------------- */

/* Only the ABI leaves the library: kernels and runtime helpers stay local, so models don't clash. */
static void test_exports_only_the_abi(void **state) {
    (void)state;
    static const char *const models[] = {"din", "em3_din"};
    for (int i = 0; i < 2; i++) {
        char so[64];
        snprintf(so, sizeof so, "lib%s.so", models[i]);
        assert_int_equal(sh("nm -D --defined-only %s > %s", path_in(so), path_in("nm.txt")), 0);
        char *text = slurp(path_in("nm.txt"), NULL);
        int n = 0;
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            const char *sym = strrchr(line, ' ') + 1;
            bool ok = false;
            for (int k = 0; abi_functions[k]; k++) {
                char want[128];
                snprintf(want, sizeof want, "%s_%s", models[i], abi_functions[k]);
                ok |= !strcmp(sym, want);
            }
            if (!ok) fail_msg("%s exports %s", so, sym);
            n++;
        }
        assert_int_equal(n, i == 0 ? 10 : 11); /* train_step only in the --train build */
        free(text);
    }
    assert_null(T.din.train_step);
    const em3_model_info *info = T.em3_din.info();
    assert_int_equal(info->abi_version, EM3_ABI_VERSION);
    assert_string_equal(info->model, "em3_din");
    assert_string_equal(info->cpu, "x86-64-v3");
    assert_int_equal(info->max_batch, 16);
    assert_int_equal(info->has_train, 1);
}

/* The same seed gives the library the weights em3_init_global gives the JIT, bit for bit. */
static void test_seeded_weights_match_runtime_init(void **state) {
    (void)state;
    void *m = T.din.create(42);
    char err[512];
    if (T.din.save(m, path_in("seed.safetensors"), err, sizeof err)) fail_msg("%s", err);
    em3_st_file *f = em3_st_read(path_in("seed.safetensors"), err, sizeof err);
    if (!f) fail_msg("%s", err);
    em3_diag *d = em3_diag_create(stderr);
    char path[512];
    snprintf(path, sizeof path, "%s/models/din.em3", T.src);
    em3_module *mod = em3_frontend_compile(path, NULL, d);
    assert_int_equal(em3_st_count(f), mod->n_global);
    for (int g = 0; g < mod->n_global; g++) {
        const em3_st_tensor *t = em3_st_find(f, mod->global[g].name);
        assert_non_null(t);
        int64_t n = em3_type_numel(&mod->global[g].type, 1);
        float *want = malloc((size_t)n * 4);
        em3_init_global(&mod->global[g], 42, want, 4);
        assert_memory_equal(t->data, want, (size_t)n * 4);
        free(want);
    }
    em3_module_free(mod);
    em3_diag_free(d);
    em3_st_free(f);
    T.din.destroy(m);
}

/* Predict through each library equals the JIT on the same weights and batch (for EM3-DIN,
 * built for 16 rows, the 37 are split into chunks); both libraries are loaded at once. */
static void check_predict(const model_lib *l, const char *model) {
    const int64_t B = 37;
    void *m = l->create(7);
    assert_non_null(m);
    set_tables(l, m);
    const em3_tensor_info *in, *out;
    int n_in = l->inputs("predict", &in), n_out = l->outputs("predict", &out);
    assert_true(n_in > 0 && n_out > 0);
    void **x = make_inputs(in, n_in, B, 1), **y = alloc_outputs(out, n_out, B), **z = alloc_outputs(out, n_out, B);
    char err[512];
    if (l->predict(m, B, (const void *const *)x, y, err, sizeof err)) fail_msg("%s: %s", model, err);
    jit_model jm;
    jit_open(&jm, l, model, false, 7);
    const em3_tensor_info *t;
    for (int i = 0, n = l->tables(&t); i < n; i++) {
        void *data = table_data(&t[i]);
        memcpy(jit_global(&jm, t[i].name), data, (size_t)numel_b(&t[i], 1) * 4);
        free(data);
    }
    jit_run(&jm, "predict", B, x, 0, 0, z);
    double worst = 0;
    for (int k = 0; k < n_out; k++) worst = fmax(worst, assert_close(y[k], z[k], numel_b(&out[k], B), 1e-5, out[k].name));
    print_message("  %s: predict of %lld rows equals the JIT's (largest relative difference %.3g)\n", model,
                  (long long)B, worst);
    jit_close(&jm);
    free_all(x, n_in);
    free_all(y, n_out);
    free_all(z, n_out);
    l->destroy(m);
}

static void test_predict_matches_jit(void **state) {
    (void)state;
    check_predict(&T.din, "din");
    check_predict(&T.em3_din, "em3_din");
}

/* How closely the library's train steps match the JIT's. The same code on both sides gives the
 * same bits. Under the sanitizers the process's runtime helpers (attention) are instrumented
 * builds and the library's are not, and they round differently; Adam's normalised update then
 * turns a gradient that is zero up to rounding (a key bias: softmax ignores it) into a step of
 * ±lr either way. There the outputs are compared closely and each weight only to within the
 * 2·lr per step that Adam's update can differ by. */
#ifdef EM3_SANITIZED_BUILD
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

/* max |a - b| ≤ bound; returns it. */
static double assert_within(const float *a, const float *b, int64_t n, double bound, const char *what) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
    if (worst > bound) fail_msg("%s: weights differ by %.3g > %.3g", what, worst, bound);
    return worst;
}

/* Two train steps through the library equal the JIT's @train with opt.step 1 and 2: outputs
 * and every global afterwards (read back from the library's saved weights). */
static void test_train_step_matches_jit(void **state) {
    (void)state;
    const model_lib *l = &T.em3_din;
    const int64_t B = 16;
    const float lr = 0.01f;
    void *m = l->create(11);
    set_tables(l, m);
    jit_model jm;
    jit_open(&jm, l, "em3_din", true, 11);
    const em3_tensor_info *t;
    for (int i = 0, n = l->tables(&t); i < n; i++) {
        void *data = table_data(&t[i]);
        memcpy(jit_global(&jm, t[i].name), data, (size_t)numel_b(&t[i], 1) * 4);
        free(data);
    }
    const em3_tensor_info *in, *out;
    int n_in = l->inputs("train", &in), n_out = l->outputs("train", &out);
    for (int k = 0; k < n_in; k++) assert_true(strncmp(in[k].name, "opt.", 4)); /* the wrapper's */
    char err[512];
    for (int step = 1; step <= 2; step++) {
        void **x = make_inputs(in, n_in, B, (uint64_t)step), **y = alloc_outputs(out, n_out, B),
             **z = alloc_outputs(out, n_out, B);
        if (l->train_step(m, B, (const void *const *)x, lr, y, err, sizeof err)) fail_msg("%s", err);
        jit_run(&jm, "train", B, x, lr, (float)step, z);
        double worst = 0;
        for (int k = 0; k < n_out; k++) worst = fmax(worst, assert_close(y[k], z[k], numel_b(&out[k], B), SANITIZED ? 1e-3 : 1e-5, out[k].name));
        if (l->save(m, path_in("trained.safetensors"), err, sizeof err)) fail_msg("%s", err);
        em3_st_file *f = em3_st_read(path_in("trained.safetensors"), err, sizeof err);
        if (!f) fail_msg("%s", err);
        for (int g = 0; g < jm.m->n_global; g++) {
            const em3_global *gl = &jm.m->global[g];
            const em3_st_tensor *st = em3_st_find(f, gl->name);
            assert_non_null(st);
            int64_t n = em3_type_numel(&gl->type, 1);
            float *got = malloc((size_t)n * 4);
            memcpy(got, st->data, (size_t)n * 4);
            if (SANITIZED) assert_within(got, jm.global[g], n, 2.0 * lr * step, gl->name);
            else worst = fmax(worst, assert_close(got, jm.global[g], n, 1e-5, gl->name));
            free(got);
        }
        assert_string_equal(em3_st_meta_find(f, "em3.step"), step == 1 ? "1" : "2");
        print_message("  step %d: loss %.6f; outputs and every global equal to the JIT's (largest relative "
                      "difference %.3g%s)\n", step, *(float *)y[0], worst,
                      SANITIZED ? " in the outputs; weights within 2·lr per step, sanitized build" : "");
        em3_st_free(f);
        free_all(x, n_in);
        free_all(y, n_out);
        free_all(z, n_out);
    }
    /* one train step is one batch: no splitting */
    void **x = make_inputs(in, n_in, 17, 5);
    assert_int_equal(l->train_step(m, 17, (const void *const *)x, lr, NULL, err, sizeof err), 1);
    assert_non_null(strstr(err, "maximum batch 16"));
    free_all(x, n_in);
    jit_close(&jm);
    l->destroy(m);
}

/* Saved weights, loaded into an instance from another seed, give the same scores; a training
 * build's file (with optimizer state and step) loads into the training build and continues
 * identically. */
static void test_weights_round_trip(void **state) {
    (void)state;
    const model_lib *l = &T.din;
    void *a = l->create(1), *b = l->create(2);
    const em3_tensor_info *in, *out;
    int n_in = l->inputs("predict", &in), n_out = l->outputs("predict", &out);
    void **x = make_inputs(in, n_in, 50, 3), **ya = alloc_outputs(out, n_out, 50), **yb = alloc_outputs(out, n_out, 50);
    char err[512];
    assert_int_equal(l->save(a, path_in("a.safetensors"), err, sizeof err), 0);
    assert_int_equal(l->load(b, path_in("a.safetensors"), err, sizeof err), 0);
    assert_int_equal(l->predict(a, 50, (const void *const *)x, ya, err, sizeof err), 0);
    assert_int_equal(l->predict(b, 50, (const void *const *)x, yb, err, sizeof err), 0);
    assert_memory_equal(ya[0], yb[0], 50 * 4);
    assert_int_equal(l->save(b, path_in("b.safetensors"), err, sizeof err), 0);
    size_t na, nb;
    char *fa = slurp(path_in("a.safetensors"), &na), *fb = slurp(path_in("b.safetensors"), &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(fa, fb, na);
    assert_int_equal(sh("ls %s | grep -q '[.]tmp[.]'", T.dir), 1); /* no temporary left */
    free(fa);
    free(fb);
    free_all(x, n_in);
    free_all(ya, n_out);
    free_all(yb, n_out);
    l->destroy(a);
    l->destroy(b);

    const model_lib *t = &T.em3_din;
    void *p = t->create(5), *q = t->create(6);
    set_tables(t, p);
    int tn_in = t->inputs("train", &in), tn_out = t->outputs("train", &out);
    void **tx = make_inputs(in, tn_in, 8, 9), **ty = alloc_outputs(out, tn_out, 8), **tz = alloc_outputs(out, tn_out, 8);
    assert_int_equal(t->train_step(p, 8, (const void *const *)tx, 0.01f, NULL, err, sizeof err), 0);
    assert_int_equal(t->save(p, path_in("p.safetensors"), err, sizeof err), 0);
    assert_int_equal(t->load(q, path_in("p.safetensors"), err, sizeof err), 0);
    assert_int_equal(t->train_step(p, 8, (const void *const *)tx, 0.01f, ty, err, sizeof err), 0);
    assert_int_equal(t->train_step(q, 8, (const void *const *)tx, 0.01f, tz, err, sizeof err), 0);
    for (int k = 0; k < tn_out; k++) assert_memory_equal(ty[k], tz[k], (size_t)numel_b(&out[k], 8) * 4);
    free_all(tx, tn_in);
    free_all(ty, tn_out);
    free_all(tz, tn_out);
    t->destroy(p);
    t->destroy(q);

    /* a training build's file serves the predict-only build of the same model, whose load skips
     * the optimizer state the file lists */
    void *tr = T.din_train.create(8), *sv = T.din.create(9);
    tn_in = T.din_train.inputs("train", &in);
    tx = make_inputs(in, tn_in, 8, 10);
    assert_int_equal(T.din_train.train_step(tr, 8, (const void *const *)tx, 0.01f, NULL, err, sizeof err), 0);
    assert_int_equal(T.din_train.save(tr, path_in("tr.safetensors"), err, sizeof err), 0);
    if (T.din.load(sv, path_in("tr.safetensors"), err, sizeof err)) fail_msg("%s", err);
    n_in = T.din.inputs("predict", &in);
    T.din.outputs("predict", &out);
    x = make_inputs(in, n_in, 8, 11), ya = alloc_outputs(out, 1, 8), yb = alloc_outputs(out, 1, 8);
    assert_int_equal(T.din_train.predict(tr, 8, (const void *const *)x, ya, err, sizeof err), 0);
    assert_int_equal(T.din.predict(sv, 8, (const void *const *)x, yb, err, sizeof err), 0);
    assert_memory_equal(ya[0], yb[0], 8 * 4);
    free_all(tx, tn_in);
    free_all(x, n_in);
    free_all(ya, 1);
    free_all(yb, 1);
    T.din_train.destroy(tr);
    T.din.destroy(sv);
}

/* Tensors of a model's file, for writing variants of it. */
typedef struct {
    em3_st_file *f;
    em3_st_tensor t[64];
    int n;
} tensor_set;

static void read_set(tensor_set *s, const char *path) {
    char err[512];
    s->f = em3_st_read(path, err, sizeof err);
    if (!s->f) fail_msg("%s", err);
    s->n = em3_st_count(s->f);
    assert_true(s->n <= 64);
    for (int i = 0; i < s->n; i++) s->t[i] = *em3_st_at(s->f, i);
}

static int find_in_set(const tensor_set *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) return i;
    fail_msg("no tensor %s", name);
    return -1;
}

/* Loads `path` into `m`, expecting failure with every needle in the message, and the model
 * unchanged (its scores as before). */
static void expect_load_error(void *m, const char *path, const char *needle1, const char *needle2) {
    const model_lib *l = &T.din;
    const em3_tensor_info *in, *out;
    int n_in = l->inputs("predict", &in), n_out = l->outputs("predict", &out);
    void **x = make_inputs(in, n_in, 20, 4), **y0 = alloc_outputs(out, n_out, 20), **y1 = alloc_outputs(out, n_out, 20);
    char err[512] = "";
    assert_int_equal(l->predict(m, 20, (const void *const *)x, y0, err, sizeof err), 0);
    assert_int_equal(l->load(m, path, err, sizeof err), 1);
    if (!strstr(err, needle1) || (needle2 && !strstr(err, needle2)))
        fail_msg("loading %s: message '%s' lacks '%s' / '%s'", path, err, needle1, needle2 ? needle2 : "");
    print_message("  %s\n", err);
    assert_int_equal(l->predict(m, 20, (const void *const *)x, y1, err, sizeof err), 0);
    assert_memory_equal(y0[0], y1[0], 20 * 4);
    free_all(x, n_in);
    free_all(y0, n_out);
    free_all(y1, n_out);
}

static void test_bad_weight_files(void **state) {
    (void)state;
    const model_lib *l = &T.din;
    void *m = l->create(1);
    char err[512];
    assert_int_equal(l->save(m, path_in("good.safetensors"), err, sizeof err), 0);
    size_t len;
    char *good = slurp(path_in("good.safetensors"), &len);

    spit(path_in("trunc.safetensors"), good, len - 100);
    expect_load_error(m, path_in("trunc.safetensors"), "tensor '", "past the data");
    char *bad = malloc(len);
    memcpy(bad, good, len);
    memset(bad, 0xff, 8);
    spit(path_in("len.safetensors"), bad, len);
    expect_load_error(m, path_in("len.safetensors"), "header length", NULL);
    memcpy(bad, good, len);
    *strstr(bad + 8, "\"dtype\"") = '\'';
    spit(path_in("json.safetensors"), bad, len);
    expect_load_error(m, path_in("json.safetensors"), "bad header at byte", NULL);
    free(bad);
    spit(path_in("empty.safetensors"), good, 0);
    expect_load_error(m, path_in("empty.safetensors"), "too short", NULL);
    expect_load_error(m, path_in("missing.safetensors"), "cannot open", NULL);

    tensor_set s;
    read_set(&s, path_in("good.safetensors"));
    int w = find_in_set(&s, "head.layers.0.w"), b = find_in_set(&s, "head.layers.0.b");
    s.t[w].shape[0] = 200, s.t[w].shape[1] = 192; /* same size, transposed */
    assert_true(em3_st_write(path_in("shape.safetensors"), s.t, s.n, NULL, 0, err, sizeof err));
    expect_load_error(m, path_in("shape.safetensors"), "'head.layers.0.w'", "expects F32[192, 200]");
    s.t[w].shape[0] = 192, s.t[w].shape[1] = 200;
    s.t[b].dtype = EM3_MODEL_I32;
    assert_true(em3_st_write(path_in("dtype.safetensors"), s.t, s.n, NULL, 0, err, sizeof err));
    expect_load_error(m, path_in("dtype.safetensors"), "'head.layers.0.b' is I32[200]", NULL);
    s.t[b].dtype = EM3_MODEL_F32;
    int item = find_in_set(&s, "item_id.table");
    em3_st_tensor kept = s.t[item];
    s.t[item] = s.t[--s.n];
    assert_true(em3_st_write(path_in("few.safetensors"), s.t, s.n, NULL, 0, err, sizeof err));
    expect_load_error(m, path_in("few.safetensors"), "'item_id.table' is missing", NULL);
    s.t[s.n++] = kept;
    s.t[s.n++] = (em3_st_tensor){.name = "bogus", .dtype = EM3_MODEL_F32, .rank = 1, .shape = {1}, .data = good};
    assert_true(em3_st_write(path_in("extra.safetensors"), s.t, s.n, NULL, 0, err, sizeof err));
    expect_load_error(m, path_in("extra.safetensors"), "'bogus' is not a parameter", NULL);
    em3_st_free(s.f);

    /* EM3-DIN's weights are not DIN's */
    void *other = T.em3_din.create(1);
    assert_int_equal(T.em3_din.save(other, path_in("other.safetensors"), err, sizeof err), 0);
    T.em3_din.destroy(other);
    expect_load_error(m, path_in("other.safetensors"), "tensor '", NULL);
    free(good);
    l->destroy(m);
}

/* The reader on hand-written headers: every malformation an error with its reason. */
static em3_st_file *parse_header(const char *json, size_t data_len, char *err, size_t errlen) {
    size_t n = strlen(json), len = 8 + n + data_len;
    unsigned char *buf = calloc(1, len);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, json, n);
    em3_st_file *f = em3_st_parse(buf, len, "t.safetensors", err, errlen);
    free(buf);
    return f;
}

static void test_safetensors_reader(void **state) {
    (void)state;
    static const struct {
        const char *json;
        size_t data;
        const char *error; /* NULL: valid */
    } cases[] = {
        {"{}", 0, NULL},
        {"  {\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}   ", 4, NULL},
        {"{\"__metadata__\":{\"k\":\"v\\u00e9\\n\"},\"a\\\"b\":{\"shape\":[2],\"data_offsets\":[0,8],\"dtype\":\"I32\"}}",
         8, NULL},
        {"{\"\\ud83d\\ude00\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NULL},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]}}", 2, "unsupported dtype 'F16'"},
        {"{\"a\":{\"dtype\":\"Q8\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype 'Q8'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, "unknown field 'x'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'a' has no data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\"}}", 4, "field 'dtype' given twice"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", 4, "leading zero"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 4, "too large"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "more than 8"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "4 data bytes for a F32 tensor of 2"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "run backwards"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "tensor 'a': data_offsets end 8 is past"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "needs [begin, end]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, "tensor 'b' overlaps tensor 'a'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, "tensor 'a' appears twice"},
        {"{\"__metadata__\":{\"k\":1}}", 0, "values must be strings"},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ given twice"},
        {"{\"__metadata__\":{\"k\":\"1\",\"j\":\"2\",\"k\":\"3\"}}", 0, "metadata key 'k' given twice"},
        {"{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "empty name"},
        {"{\"a\\u0000\":{}}", 0, "\\u0000"},
        {"{\"a\\x\":{}}", 0, "unknown escape"},
        {"{\"a\\ud800\":{}}", 0, "unpaired surrogate"},
        {"{\"a\nb\":{}}", 0, "control character"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "expected ',' or '}'"},
        {"{} x", 0, "text after"},
        {"[]", 0, "expected '{'"},
        {"{\"a\" {}}", 0, "expected ':'"},
        {"{\"a", 0, "unterminated string"},
        {"", 0, "expected '{'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[512] = "";
        em3_st_file *f = parse_header(cases[i].json, cases[i].data, err, sizeof err);
        if (!cases[i].error && !f) fail_msg("case %zu: %s", i, err);
        if (cases[i].error && (f || !strstr(err, cases[i].error) || strncmp(err, "t.safetensors: ", 15)))
            fail_msg("case %zu (%s): expected '%s', got '%s'", i, cases[i].json, cases[i].error, f ? "success" : err);
        em3_st_free(f);
    }
    char err[512];
    em3_st_file *f = parse_header(cases[2].json, 8, err, sizeof err);
    assert_string_equal(em3_st_meta_find(f, "k"), "v\xc3\xa9\n");
    assert_non_null(em3_st_find(f, "a\"b"));
    em3_st_free(f);
    assert_null(em3_st_parse("1234567", 7, "short", err, sizeof err));
    assert_non_null(strstr(err, "too short"));

    /* the writer's output is what the reader reads, names escaped, data 8-byte aligned */
    int32_t v[3] = {1, -2, 3};
    em3_st_tensor t = {.name = "we\"ird\\name\t", .dtype = EM3_MODEL_I32, .rank = 1, .shape = {3}, .data = v};
    em3_st_meta meta = {"key", "va\"lue"};
    assert_true(em3_st_write(path_in("w.safetensors"), &t, 1, &meta, 1, err, sizeof err));
    f = em3_st_read(path_in("w.safetensors"), err, sizeof err);
    assert_non_null(f);
    const em3_st_tensor *r = em3_st_find(f, "we\"ird\\name\t");
    assert_non_null(r);
    assert_int_equal((uintptr_t)r->data % 8, 0);
    assert_memory_equal(r->data, v, sizeof v);
    assert_string_equal(em3_st_meta_find(f, "key"), "va\"lue");
    em3_st_free(f);
    assert_false(em3_st_write("/nonexistent-dir/x.safetensors", &t, 1, NULL, 0, err, sizeof err));
    assert_non_null(strstr(err, "cannot write"));
}

/* Ids outside a vocabulary or table are errors naming the input, the row and the position. */
static void test_data_errors_name_the_input(void **state) {
    (void)state;
    const model_lib *l = &T.din;
    void *m = l->create(1);
    const em3_tensor_info *in, *out;
    int n_in = l->inputs("predict", &in), n_out = l->outputs("predict", &out);
    void **x = make_inputs(in, n_in, 10, 2), **y = alloc_outputs(out, n_out, 10);
    ((int32_t *)x[2])[3 * 50 + 7] = 25000;
    char err[512];
    assert_int_equal(l->predict(m, 10, (const void *const *)x, y, err, sizeof err), 1);
    assert_string_equal(err, "predict: input 'hist': id 25000 at row 3, position 7 is outside its vocabulary (0 .. 9999)");
    ((int32_t *)x[2])[3 * 50 + 7] = 0;
    ((int32_t *)x[0])[9] = -1;
    assert_int_equal(l->predict(m, 10, (const void *const *)x, y, err, sizeof err), 1);
    assert_string_equal(err, "predict: input 'user': id -1 at row 9 is outside its vocabulary (0 .. 9999)");
    assert_int_equal(l->predict(m, -1, (const void *const *)x, y, err, sizeof err), 1);
    assert_int_equal(l->predict(m, 0, (const void *const *)x, y, err, sizeof err), 0);
    assert_int_equal(l->predict(NULL, 10, (const void *const *)x, y, err, sizeof err), 1);
    void *none[3] = {x[0], NULL, x[2]};
    assert_int_equal(l->predict(m, 10, (const void *const *)none, y, err, sizeof err), 1);
    assert_string_equal(err, "predict: input 'item' is NULL");
    assert_int_equal(l->set_table(m, "head.layers.0.w", y[0], 1, err, sizeof err), 1);
    assert_non_null(strstr(err, "it is a parameter"));
    free_all(x, n_in);
    free_all(y, n_out);
    l->destroy(m);

    /* Without a declared vocabulary the gather's own check reports it, through the frame; two
     * inputs gather from one table (sharing one kernel) and the message names the right one. */
    static const char tiny[] = "import \"lib/nn.em3\"\n"
                               "model tiny {\n"
                               "    input a : i32[B]\n"
                               "    input b : i32[B]\n"
                               "    label y : f32[B]\n"
                               "    table = Embedding(10, 4)\n"
                               "    head = Linear(4, 1)\n"
                               "    fn forward() {\n"
                               "        logit = squeeze(head(table(a) * table(b)), -1)\n"
                               "        output p = sigmoid(logit)\n"
                               "        loss = bce_with_logits(logit, y)\n"
                               "    }\n"
                               "}\n";
    spit(path_in("tiny.em3"), tiny, strlen(tiny));
    assert_int_equal(sh("%s/tools/em3 build -I %s/models --max-batch=4 %s -o %s >/dev/null", T.em3_bin_dir, T.src,
                        path_in("tiny.em3"), path_in("libtiny.so")),
                     0);
    model_lib tl = {0};
    open_lib(&tl, path_in("libtiny.so"), "tiny");
    void *tm = tl.create(3);
    int32_t a[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, b[10] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0};
    float p10[10], p4[10];
    const void *tin[2] = {a, b};
    void *tout[1] = {p10};
    /* 10 rows at max batch 4: chunks of 4, 4 and 2, as three calls would do */
    assert_int_equal(tl.predict(tm, 10, tin, tout, err, sizeof err), 0);
    for (int c = 0; c < 10; c += 4) {
        const void *cin[2] = {a + c, b + c};
        void *cout[1] = {p4 + c};
        assert_int_equal(tl.predict(tm, c + 4 <= 10 ? 4 : 10 - c, cin, cout, err, sizeof err), 0);
    }
    assert_memory_equal(p10, p4, sizeof p10);
    b[6] = 12;
    assert_int_equal(tl.predict(tm, 10, tin, tout, err, sizeof err), 1);
    assert_string_equal(err, "predict: input 'b': id 12 at row 6 is outside table 'table.table' (10 rows)");
    a[9] = -3;
    assert_int_equal(tl.predict(tm, 10, tin, tout, err, sizeof err), 1);
    assert_string_equal(err, "predict: input 'b': id 12 at row 6 is outside table 'table.table' (10 rows)");
    b[6] = 0;
    assert_int_equal(tl.predict(tm, 10, tin, tout, err, sizeof err), 1);
    assert_string_equal(err, "predict: input 'a': id -3 at row 9 is outside table 'table.table' (10 rows)");
    tl.destroy(tm);
    dlclose(tl.lib);
}

static bool dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    bool empty = true;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            print_message("left behind: %s/%s\n", path, e->d_name);
            empty = false;
        }
    if (d) closedir(d);
    return empty;
}

/* Failed builds: exit status 1, a message saying why, nothing left behind. */
static void test_failed_builds_leave_nothing(void **state) {
    (void)state;
    const char *out = path_in("out"), *tmp = path_in("tmp"), *log = path_in("fail.log");
    mkdir(out, 0777);
    mkdir(tmp, 0777);
    spit(path_in("blocker"), "x", 1);
    static const struct {
        const char *env, *model, *lib, *message;
        int status;
    } cases[] = {
        {"", "%s/models/nonexistent.em3", "%s/libx.so", "nonexistent.em3", 1},
        {"", "%s/models/din.em3", "%s/../blocker/libdin.so", "cannot write", 1},
        {"", "%s/models/din.em3", "%s/no-such-dir/libdin.so", "cannot write", 1},
        {"CC=false", "%s/models/din.em3", "%s/libdin.so", "the C compiler 'false' exited with status 1", 1},
        {"CC=/nonexistent/cc", "%s/models/din.em3", "%s/libdin.so", "cannot run '/nonexistent/cc'", 1},
        {"EM3_RUNTIME_LIB=/nonexistent.a", "%s/models/din.em3", "%s/libdin.so", "AOT runtime library", 1},
        {"", "%s/models/din.em3", "%s/lib-din.so", "C identifier", 1},
        {"", "%s/models/din.em3", "", "no output", 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char model[512], lib[512], args[1200];
        snprintf(model, sizeof model, cases[i].model, T.src);
        snprintf(lib, sizeof lib, cases[i].lib, out);
        snprintf(args, sizeof args, "%s%s", *lib ? "-o " : "", lib);
        int st = sh("env TMPDIR=%s %s %s/tools/em3 build %s %s >%s 2>&1", tmp, cases[i].env, T.em3_bin_dir, model,
                    args, log);
        if (st != cases[i].status) fail_msg("case %zu: exit status %d, expected %d", i, st, cases[i].status);
        assert_true(file_contains(log, cases[i].message));
        assert_true(dir_is_empty(out));
        assert_true(dir_is_empty(tmp));
    }
    assert_true(file_contains(log, "em3 help build"));
}

/* The headers compile cleanly, both in one translation unit, as C11 and C++. */
static void test_headers_compile(void **state) {
    (void)state;
    static const char src[] = "#include \"din.h\"\n#include \"em3_din.h\"\n"
                              "int main(void) {\n"
                              "    din_model *a = din_create(1);\n"
                              "    em3_din_model *b = em3_din_create(1);\n"
                              "    int n = DIN_PREDICT_N_INPUTS + EM3_DIN_TRAIN_N_INPUTS + DIN_PREDICT_IN_HIST;\n"
                              "    din_destroy(a);\n    em3_din_destroy(b);\n"
                              "    return n == 9 && DIN_ABI_VERSION == 1 && EM3_DIN_HAS_TRAIN ? 0 : 1;\n}\n";
    spit(path_in("both.c"), src, strlen(src));
    assert_int_equal(sh("cd %s && cc -std=c11 -Wall -Wextra -Wpedantic -Werror both.c -o both -L. -ldin -lem3_din "
                        "-Wl,-rpath,%s && ./both",
                        T.dir, T.dir),
                     0);
    if (sh("command -v c++ >/dev/null") == 0)
        assert_int_equal(sh("cd %s && c++ -x c++ -Wall -Wextra -Wpedantic -Werror -fsyntax-only both.c", T.dir), 0);
}

/* docs/examples/serve.c reads a CSV batch and prints the library's scores. */
static void test_serve_example(void **state) {
    (void)state;
    assert_int_equal(sh("cc -std=gnu11 -Wall -Wextra -Wshadow -Werror -I %s/runtime -o %s %s/docs/examples/serve.c",
                        T.src, path_in("serve"), T.src),
                     0);
    static const char csv[] = "user,item,hist,click\n"
                              "1,2,3^4^5,0\n"
                              "7,8,,1\n"
                              "9999,9999,9999^0^1^2^3^4^5^6^7^8^9^10^11^12^13^14^15^16^17^18^19^20^21^22^23^"
                              "24^25^26^27^28^29^30^31^32^33^34^35^36^37^38^39^40^41^42^43^44^45^46^47^48,0\n"
                              "42,4242,17,1\n";
    spit(path_in("batch.csv"), csv, strlen(csv));
    const model_lib *l = &T.din;
    void *m = l->create(3);
    char err[512];
    assert_int_equal(l->save(m, path_in("serve.safetensors"), err, sizeof err), 0);
    assert_int_equal(sh("%s %s din %s %s > %s", path_in("serve"), path_in("libdin.so"), path_in("batch.csv"),
                        path_in("serve.safetensors"), path_in("scores.txt")),
                     0);
    int32_t user[4] = {1, 7, 9999, 42}, item[4] = {2, 8, 9999, 4242}, hist[4 * 50] = {0};
    hist[0] = 3, hist[1] = 4, hist[2] = 5, hist[150] = 17;
    hist[100] = 9999;
    for (int k = 1; k < 50; k++) hist[100 + k] = k - 1;
    float want[4];
    const void *in[3] = {user, item, hist};
    void *out[1] = {want};
    assert_int_equal(l->predict(m, 4, in, out, err, sizeof err), 0);
    char *text = slurp(path_in("scores.txt"), NULL), *line = strtok(text, "\n");
    assert_string_equal(line, "score");
    for (int r = 0; r < 4; r++) {
        line = strtok(NULL, "\n");
        assert_non_null(line);
        assert_true(strtof(line, NULL) == want[r]);
    }
    free(text);
    /* a bad cell is an error naming the line and column */
    spit(path_in("bad.csv"), "user,item,hist\n1,x,2\n", 21);
    assert_int_equal(sh("%s %s din %s 2> %s", path_in("serve"), path_in("libdin.so"), path_in("bad.csv"),
                        path_in("serve.err")),
                     1);
    assert_true(file_contains(path_in("serve.err"), "line 2, column item: 'x' is not a number"));
    l->destroy(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exports_only_the_abi),
        cmocka_unit_test(test_seeded_weights_match_runtime_init),
        cmocka_unit_test(test_predict_matches_jit),
        cmocka_unit_test(test_train_step_matches_jit),
        cmocka_unit_test(test_weights_round_trip),
        cmocka_unit_test(test_bad_weight_files),
        cmocka_unit_test(test_safetensors_reader),
        cmocka_unit_test(test_data_errors_name_the_input),
        cmocka_unit_test(test_failed_builds_leave_nothing),
        cmocka_unit_test(test_headers_compile),
        cmocka_unit_test(test_serve_example),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
