/* tests/unit/test_fusion.c — fused against unfused, forward and backward. Small DSL models built
 * from models/lib/attention.em3 and nn.em3's LoRALinear are compiled twice, with fuse-attention
 * and fuse-lora before autodiff and without them; the loss and every gradient of @train must
 * agree, in the F64 interpreter and through the JIT in F32. Each model holds many cases (heads,
 * lengths, masks, ranks), so that each variant is compiled once. Also dedup-rows against no
 * dedup: the same comparison, with EM3's content encoder run once per distinct item. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/frontend.h"
#include "jit_harness.h"
#include "passes/passes.h"
#include "runtime/init.h"

/* Tolerances, as max_i |fused_i − unfused_i| / max_i |unfused_i| over one output tensor (see
 * compare_outputs for tensors that are zero in exact arithmetic).
 * F64  1e-9: the two graphs compute the same sums in other orders (the fused kernel folds the
 *      scale into q·kᵀ, recomputes x·a, drops the (m − 1)·1e9 bias whose exp is exactly 0), so
 *      they differ by rounding only, ~1e-15 of the largest element (measured ≤ 2e-14).
 * F32  1e-4: float rounding, ε = 6e-8, over sums of up to tk·dh = 8192 terms (the scores and
 *      the probability-weighted sums at 512 keys) and the weight gradients' sums over B·t rows,
 *      through a projection, a softmax and a mean; the fused kernels also use a polynomial
 *      exp (a few ulp). √n·ε amplified by the softmax's conditioning stays near 1e-5 (see the
 *      printed figures); 1e-4 leaves a margin, while a wrong mask, scale or index shows at 1e-2
 *      and beyond. */
#define TOL_F64 1e-9
#define TOL_F32 1e-4

/* ---- compiling a model both ways ---------------------------------------------------------- */

static em3_module *compile_with(const char *name, const char *src, const char *passes, const em3_optim_config *oc) {
    char *log = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&log, &len);
    em3_diag *d = em3_diag_create(out); /* warnings (unused base weights) would only clutter */
    em3_module *m = em3_frontend_compile_source(name, src, strlen(src), NULL, d);
    em3_pipeline *pl = em3_pipeline_create();
    em3_pass_options opt = {.verify_each = true, .quiet = true, .optim = oc};
    bool ok = m && em3_pipeline_parse(pl, passes, d) && em3_pipeline_run(pl, m, &opt, d);
    em3_pipeline_free(pl);
    em3_diag_free(d);
    fclose(out);
    if (!ok) fail_msg("%s with %s:\n%s", name, passes, log);
    free(log);
    return m;
}

static em3_module *compile(const char *name, const char *src, const char *passes) {
    return compile_with(name, src, passes, NULL);
}

#define FUSED "fuse-attention,fuse-lora,autodiff,dce"
#define UNFUSED "autodiff,dce"

static int count_op(const em3_func *f, em3_op op) {
    int n = 0;
    for (int i = 0; i < f->n_node; i++) n += f->node[i].op == op;
    return n;
}

/* ---- the values both variants run on -------------------------------------------------------- */

#define MAX_ARRAYS 96

typedef struct {
    const char *name;
    double *v;
    int64_t n;
} array;

typedef struct {
    int64_t batch;
    array in[MAX_ARRAYS], glob[MAX_ARRAYS];
    int n_in, n_glob;
} values;

static double *values_add(array *list, int *count, const char *name, int64_t n) {
    assert_true(*count < MAX_ARRAYS);
    list[*count] = (array){name, calloc((size_t)(n ? n : 1), sizeof(double)), n};
    return list[(*count)++].v;
}

static void values_free(values *v) {
    for (int i = 0; i < v->n_in; i++) free(v->in[i].v);
    for (int i = 0; i < v->n_glob; i++) free(v->glob[i].v);
}

static const double *values_find(const array *list, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(list[i].name, name)) return list[i].v;
    fail_msg("no values for %s", name);
    return NULL;
}

/* Ids of [B, t] whose zeros are padding: batch row 3k keeps every key, 3k+1 about a third of
 * them (always the first), 3k+2 none — every query of that row has no valid key. At batch 1
 * the last third of the keys is padding. */
static void padding_ids(em3_rng *r, double *v, int64_t batch, int64_t t) {
    for (int64_t b = 0; b < batch; b++)
        for (int64_t j = 0; j < t; j++) {
            bool keep = batch == 1   ? j < t - t / 3
                        : b % 3 == 0 ? true
                        : b % 3 == 1 ? j == 0 || em3_rng_uniform(r) < 0.35
                                     : false;
            v[b * t + j] = keep ? (double)(1 + em3_rng_below(r, 6)) : 0;
        }
}

/* Inputs of @forward (N(0, 1) features, 0/1 labels, padding ids) and every weight from its
 * initialiser plus N(0, 0.3²) noise (so that LoRA's zero-initialised B is not special), all
 * exactly representable in float so that the JIT sees the same numbers. */
static values make_values(const em3_module *m, int64_t batch, uint64_t seed) {
    values v = {.batch = batch};
    em3_rng r;
    em3_rng_seed(&r, seed);
    const em3_func *f = em3_module_find_func(m, "forward");
    for (int i = 0; i < f->n_node; i++) {
        const em3_node *n = &f->node[i];
        if (n->op != EM3_OP_INPUT) continue;
        int64_t count = em3_type_numel(&n->type, batch);
        double *x = values_add(v.in, &v.n_in, em3_node_s(n, "name"), count);
        if (n->type.dtype == EM3_DTYPE_I32)
            padding_ids(&r, x, batch, count / batch);
        else
            for (int64_t k = 0; k < count; k++)
                x[k] = em3_node_i(n, "label") ? (double)(em3_rng_uniform(&r) < 0.5)
                                              : (double)(float)em3_rng_normal(&r);
    }
    em3_interp *it = em3_interp_create(m, EM3_PREC_F64);
    em3_interp_init_globals(it, seed);
    for (int g = 0; g < m->n_global; g++) {
        const em3_global *gl = &m->global[g];
        int64_t n = em3_type_numel(&gl->type, 1);
        double *x = values_add(v.glob, &v.n_glob, gl->name, n);
        memcpy(x, em3_interp_global(it, gl->name), sizeof(double) * (size_t)n);
        for (int64_t k = 0; k < n; k++) /* an i32 table holds ids (word ids below 4) */
            x[k] = gl->type.dtype == EM3_DTYPE_I32 ? (double)em3_rng_below(&r, 4)
                                                   : (double)(float)(x[k] + 0.3 * em3_rng_normal(&r));
    }
    em3_interp_free(it);
    return v;
}

static int interp_inputs(const values *v, em3_interp_input *in) {
    for (int i = 0; i < v->n_in; i++) in[i] = (em3_interp_input){v->in[i].name, v->in[i].v};
    return v->n_in;
}

/* ---- comparing ----------------------------------------------------------------------------- */

typedef double getter(const void *buf, int64_t i);
static double get_f64(const void *buf, int64_t i) { return ((const double *)buf)[i]; }
static double get_f32(const void *buf, int64_t i) { return ((const float *)buf)[i]; }

static double max_abs(const void *b, getter *get, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(get(b, i)));
    return m;
}

/* max |a − b| / max(max |b|, floor); NaN anywhere is infinitely far. */
static double rel_diff(const void *a, const void *b, getter *get, int64_t n, double floor) {
    double diff = 0;
    for (int64_t i = 0; i < n; i++) {
        double x = get(a, i), y = get(b, i);
        if (isnan(x) || isnan(y)) return INFINITY;
        diff = fmax(diff, fabs(x - y));
    }
    return diff == 0 ? 0 : diff / fmax(max_abs(b, get, n), floor);
}

/* Every output of @train in both, named alike; returns the largest difference. A gradient that
 * is zero in exact arithmetic (a key projection's bias: softmax ignores a shift of a row's
 * scores) is rounding noise on both sides, so each tensor is measured against at least 1e-2 of
 * the largest gradient element of the model (in float that noise reaches 1.4e-7 of it at
 * d = 64 and t = 130, with the kernel of main and with this one alike). */
typedef struct {
    const void *data;
    int64_t n;
} view;
typedef view output_fn(void *ctx, const char *name);

static double compare_outputs(const char *label, const em3_func *train, output_fn *fused, void *fctx,
                              output_fn *plain, void *pctx, getter *get, double tol) {
    double worst = 0, largest = 0;
    const char *worst_at = "";
    for (int k = 0; k < train->n_out; k++) {
        view b = plain(pctx, train->out[k].name);
        largest = fmax(largest, max_abs(b.data, get, b.n));
    }
    for (int k = 0; k < train->n_out; k++) {
        const char *name = train->out[k].name;
        view a = fused(fctx, name), b = plain(pctx, name);
        if (!a.data) fail_msg("%s: the fused @train has no output %s", label, name);
        assert_int_equal(a.n, b.n);
        double e = rel_diff(a.data, b.data, get, a.n, 1e-2 * largest);
        if (e > tol) fail_msg("%s: %s differs by %.3g (> %.3g)", label, name, e, tol);
        if (e >= worst) worst = e, worst_at = name;
    }
    print_message("  %-44s %d outputs, largest difference %.1e (%s)\n", label, train->n_out, worst,
                  worst_at);
    return worst;
}

typedef struct {
    em3_interp *it;
    int64_t batch;
} interp_ctx;

static view interp_output(void *ctx, const char *name) {
    interp_ctx *c = ctx;
    em3_type t;
    const double *v = em3_interp_output(c->it, name, &t);
    return (view){v, v ? em3_type_numel(&t, c->batch) : 0};
}

static em3_interp *run_interp(const em3_module *m, const values *v) {
    em3_interp *it = em3_interp_create(m, EM3_PREC_F64);
    for (int i = 0; i < v->n_glob; i++)
        memcpy(em3_interp_global(it, v->glob[i].name), v->glob[i].v, sizeof(double) * (size_t)v->glob[i].n);
    em3_interp_input in[MAX_ARRAYS];
    char err[512] = "";
    if (!em3_interp_run(it, "train", v->batch, in, interp_inputs(v, in), err, sizeof err))
        fail_msg("@train: %s", err);
    return it;
}

static void compare_interp(const char *label, const em3_module *fused, const em3_module *plain, const values *v) {
    interp_ctx f = {run_interp(fused, v), v->batch}, p = {run_interp(plain, v), v->batch};
    char what[96];
    snprintf(what, sizeof what, "%s, F64 interpreter", label);
    compare_outputs(what, em3_module_find_func(plain, "train"), interp_output, &f, interp_output, &p, get_f64,
                    TOL_F64);
    em3_interp_free(f.it);
    em3_interp_free(p.it);
}

static view jit_output(void *ctx, const char *name) {
    const jh_pair *p = ctx;
    for (int k = 0; k < p->cf->n_outputs; k++)
        if (!strcmp(p->cf->outputs[k], name)) {
            const em3_func *f = em3_module_find_func(p->m, "train");
            return (view){p->out[k], em3_type_numel(&f->node[f->out[k].value].type, p->batch)};
        }
    return (view){NULL, 0};
}

/* The modules' @train compiled (the other functions dropped: compile time) and run on the same
 * values. Takes the modules. */
static void compare_jit(const char *label, em3_module *fused, em3_module *plain, const values *v) {
    jh_pair *p[2];
    em3_module *mods[2] = {fused, plain};
    em3_interp_input in[MAX_ARRAYS];
    int n_in = interp_inputs(v, in);
    for (int k = 0; k < 2; k++) {
        em3_func *keep = em3_module_find_func(mods[k], "train");
        while (mods[k]->n_func > 1)
            em3_module_remove_func(mods[k], mods[k]->func[mods[k]->func[0] == keep ? 1 : 0]);
        p[k] = jh_create_for(mods[k], v->batch);
        for (int g = 0; g < mods[k]->n_global; g++)
            jh_set_global(p[k], g, values_find(v->glob, v->n_glob, mods[k]->global[g].name));
        if (jh_run_jit(p[k], "train", v->batch, in, n_in)) fail_msg("%s: the JIT's @train failed", label);
    }
    char what[96];
    snprintf(what, sizeof what, "%s, JIT (F32; compiled in %.1f + %.1f s)", label,
             em3_jit_compile_seconds(p[0]->jit), em3_jit_compile_seconds(p[1]->jit));
    compare_outputs(what, em3_module_find_func(plain, "train"), jit_output, p[0], jit_output, p[1], get_f32,
                    TOL_F32);
    jh_free(p[0]);
    jh_free(p[1]);
}

/* The loss and every gradient of @train from two compilations of a model, on the same values. */
static void compare_compilations(const char *label, em3_module *a, em3_module *b, int64_t batch) {
    values v = make_values(b, batch, 2024);
    compare_interp(label, a, b, &v);
    compare_jit(label, a, b, &v);
    values_free(&v);
}

/* Compiles `src` both ways, checks that the fused @forward has `attention` attention and `lora`
 * lora_matmul nodes (the unfused none), and compares the two at `batch`; `check` (optional)
 * looks at both modules first. */
typedef void module_check(const em3_module *fused, const em3_module *plain);

static void fused_vs_unfused(const char *label, const char *src, int64_t batch, int attention, int lora,
                             module_check *check) {
    em3_module *fused = compile(label, src, FUSED), *plain = compile(label, src, UNFUSED);
    const em3_func *ff = em3_module_find_func(fused, "forward"), *pf = em3_module_find_func(plain, "forward");
    assert_int_equal(count_op(ff, EM3_OP_ATTENTION), attention);
    assert_int_equal(count_op(ff, EM3_OP_LORA_MATMUL), lora);
    assert_int_equal(count_op(pf, EM3_OP_ATTENTION) + count_op(pf, EM3_OP_LORA_MATMUL), 0);
    assert_int_equal(count_op(em3_module_find_func(fused, "train"), EM3_OP_ATTENTION_GRAD), attention);
    if (check) check(fused, plain);
    compare_compilations(label, fused, plain, batch);
}

/* ---- attention ------------------------------------------------------------------------------- */

typedef struct {
    int t, heads;
    bool masked;
} att_case;

/* One model of width d holding a MultiHeadAttention per case, each over its own tokens
 * [B, t, d] and, when masked, the padding mask of its own ids; the token-mean of every output
 * feeds one logit. Rows without keys still reach the loss (their zeros go through the output
 * projection), so their gradients are compared too. */
static char *attention_model(const att_case *cases, int n, int d) {
    em3_strbuf sb = {0};
    em3_sb_printf(&sb, "import \"lib/attention.em3\"\nmodel zoo {\n    const d = %d\n    label y : f32[B]\n", d);
    for (int i = 0; i < n; i++) {
        em3_sb_printf(&sb, "    input x%d : f32[B, %d, d]\n", i, cases[i].t);
        if (cases[i].masked) em3_sb_printf(&sb, "    input ids%d : i32[B, %d] vocab 7\n", i, cases[i].t);
        em3_sb_printf(&sb, "    a%d = MultiHeadAttention(d, %d)\n", i, cases[i].heads);
    }
    em3_sb_printf(&sb, "    head = Linear(d, 1)\n    fn forward() {\n        h = ");
    for (int i = 0; i < n; i++) {
        if (cases[i].masked)
            em3_sb_printf(&sb, "%smean(a%d(x%d, cast(ids%d != 0, f32)), axis = 1)", i ? " + " : "", i, i, i);
        else
            em3_sb_printf(&sb, "%smean(a%d(x%d), axis = 1)", i ? " + " : "", i, i);
    }
    em3_sb_printf(&sb, "\n        logit = squeeze(head(h), -1)\n        output p = sigmoid(logit)\n"
                       "        loss = bce_with_logits(logit, y)\n    }\n}\n");
    return sb.data;
}

static void run_attention_cases(const char *label, const att_case *cases, int n, int d, int64_t batch) {
    char *src = attention_model(cases, n, d);
    fused_vs_unfused(label, src, batch, n, 0, NULL);
    free(src);
}

/* Sequence lengths 1, 2, 26, 128 with 1, 2, 4 and 8 heads, masked and not, at batch 3 (one
 * batch row keeps all keys, one some, one none). */
static void test_attention(void **state) {
    (void)state;
    static const att_case cases[] = {{1, 1, true},   {1, 8, false},  {2, 2, true},
                                     {2, 4, false},  {26, 4, true},  {26, 1, false},
                                     {26, 8, true},  {128, 8, true}, {128, 2, false}};
    run_attention_cases("attention, t = 1 .. 128", cases, sizeof cases / sizeof *cases, 16, 3);
}

/* 512 keys (several tiles of the streaming kernel each way), at batch 1 to stay cheap: the
 * unfused graph keeps [heads, 512, 512] scores for its backward. */
static void test_attention_long(void **state) {
    (void)state;
    static const att_case cases[] = {{512, 2, true}, {512, 1, false}};
    run_attention_cases("attention, t = 512", cases, sizeof cases / sizeof *cases, 16, 1);
}

/* Width 64 over 1, 2 and 4 heads (head widths 64, 32, 16: EM3's d = 64 over 4 heads), at
 * lengths on both sides of the kernel's blocks (32 queries, 64 keys, rows padded to 8). */
static void test_attention_widths(void **state) {
    (void)state;
    static const att_case cases[] = {{65, 1, true}, {33, 1, false}, {130, 2, true},
                                     {63, 2, false}, {129, 4, true}, {9, 4, false}};
    run_attention_cases("attention, d = 64", cases, sizeof cases / sizeof *cases, 64, 3);
}

/* ---- LoRA ------------------------------------------------------------------------------------ */

/* LoRALinear of ranks 1, 4, 8 and 16 over one Linear's weights shared frozen (alpha ≠ rank for
 * some: scales 1.5 and 0.3125), and one over its own frozen weights; x is [B, 5, din]. */
static const char lora_src[] = "import \"lib/nn.em3\"\n"
                               "model lora {\n"
                               "    const din = 24, dout = 20\n"
                               "    input x : f32[B, 5, din]\n"
                               "    label y : f32[B]\n"
                               "    base = Linear(din, dout)\n"
                               "    r1 = LoRALinear(din, dout, 1) shares base frozen\n"
                               "    r4 = LoRALinear(din, dout, 4, 6) shares base frozen\n"
                               "    r8 = LoRALinear(din, dout, 8) shares base frozen\n"
                               "    r16 = LoRALinear(din, dout, 16, 5) shares base frozen\n"
                               "    solo = LoRALinear(din, dout, 4, bias = false)\n"
                               "    head = Linear(dout, 1)\n"
                               "    fn forward() {\n"
                               "        h = gelu(r1(x)) + r4(x) * r8(x) + tanh(r16(x)) + solo(x)\n"
                               "        logit = squeeze(head(mean(h, axis = 1)), -1)\n"
                               "        output p = sigmoid(logit)\n"
                               "        loss = bce_with_logits(logit, y)\n"
                               "    }\n"
                               "}\n";

/* Frozen weights cost nothing in the backward: no gradient output for base.w, base.b or solo.w,
 * and no GEMM with a [din, dout] result (a weight gradient's shape) in @train. */
static void frozen_costs_nothing(const em3_module *fused, const em3_module *plain) {
    const em3_module *mods[2] = {fused, plain};
    static const char *const frozen[] = {"grad.base.w", "grad.base.b", "grad.solo.w"};
    const em3_type wt = em3_type_make(EM3_DTYPE_F32, 2, (int64_t[]){24, 20});
    for (int k = 0; k < 2; k++) {
        const em3_func *tr = em3_module_find_func(mods[k], "train");
        for (int o = 0; o < tr->n_out; o++)
            for (size_t i = 0; i < sizeof frozen / sizeof *frozen; i++)
                if (!strcmp(tr->out[o].name, frozen[i])) fail_msg("@train returns %s", frozen[i]);
        for (int i = 0; i < tr->n_node; i++)
            if (tr->node[i].op == EM3_OP_MATMUL && em3_type_eq(&tr->node[i].type, &wt))
                fail_msg("@train (%s) has a [din, dout] GEMM, %%%d", k ? "unfused" : "fused", i);
    }
    /* the adapters are trained in both */
    const em3_func *tr = em3_module_find_func(fused, "train");
    int adapters = 0;
    for (int o = 0; o < tr->n_out; o++) adapters += strstr(tr->out[o].name, ".lora_") != NULL;
    assert_int_equal(adapters, 10);
}

static void test_lora(void **state) {
    (void)state;
    fused_vs_unfused("LoRA, ranks 1, 4, 8, 16", lora_src, 3, 0, 5, frozen_costs_nothing);
}

/* ---- distinct ids ------------------------------------------------------------------------------ */

/* EM3 on a small DIN-like head: target items and histories through the content encoder, with
 * and without dedup-rows. The ids (1..6 and padding 0, see padding_ids) repeat within a batch
 * and within a history, so the distinct rows are far fewer than the occurrences; the loss and
 * every gradient must not notice. Each history mode puts a different region on the distinct
 * rows: "top" the LoRA'd projection over the cached encoder, "all" the whole LoRA'd encoder,
 * "full" the trainable encoder itself, whose weights get gradients through both regions. */
static void test_dedup_rows(void **state) {
    (void)state;
    static const char *const modes[] = {"top", "all", "full"};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        char *src = NULL, label[64];
        size_t len = 0;
        FILE *f = open_memstream(&src, &len);
        fprintf(f,
                "import \"lib/em3.em3\"\nimport \"lib/ranking.em3\"\n"
                "model dedup {\n"
                "    const d = 16, items = 8\n"
                "    input item : i32[B] vocab items\n"
                "    input hist : i32[B, 5] vocab items pad 0\n"
                "    label y : f32[B]\n"
                "    data image : f32[items, 3, 8]\n"
                "    data text : i32[items, 4]\n"
                "    item_id = Embedding(items, d)\n"
                "    em3 = EM3(d, image, text, 6, 2, 2, 1, history = \"%s\", lora = 4)\n"
                "    head = Linear(3 * d, 1)\n"
                "    fn forward() {\n"
                "        e = item_id(item)\n"
                "        content = em3(item, hist, cast(hist != 0, f32))\n"
                "        logit = squeeze(head(concat([e] + content)), -1)\n"
                "        output p = sigmoid(logit)\n"
                "        loss = bce_with_logits(logit, y) + 0.1 * em3.contrastive(content[0], e)\n"
                "    }\n"
                "}\n",
                modes[i]);
        fclose(f);
        snprintf(label, sizeof label, "dedup-rows, history = %s", modes[i]);
        em3_module *a = compile(label, src, "fuse-attention,fuse-lora,cache-frozen,dedup-rows,autodiff,dce");
        em3_module *b = compile(label, src, "fuse-attention,fuse-lora,cache-frozen,autodiff,dce");
        int uniques = count_op(em3_module_find_func(a, "train"), EM3_OP_UNIQUE);
        assert_int_equal(uniques, 2); /* the target items and the histories */
        compare_compilations(label, a, b, 7);
        /* data-parallel training keeps a trainable table's gradient sparse: the target items'
           region gathers trainable word embeddings, so it stays per occurrence there; the
           history's region reads the cache ("top") or frozen embeddings ("all"), but the
           trainable ones in "full" */
        em3_optim_config oc = em3_optim_defaults();
        oc.separate_update = true;
        em3_module *dp = compile_with(label, src, "fuse-attention,fuse-lora,cache-frozen,dedup-rows,autodiff,optimizer,dce", &oc);
        assert_int_equal(count_op(em3_module_find_func(dp, "train"), EM3_OP_UNIQUE), i < 2 ? 1 : 0);
        em3_module_free(dp);
        free(src);
    }
    /* two id inputs whose regions gather no trainable table, in data-parallel training: both
       are deduplicated, the second after the first's rewrite has grown the function (the
       pass once read past its analysis there: ASan) */
    static const char two[] = "import \"lib/nn.em3\"\n"
                               "model two {\n"
                               "    input a : i32[B] vocab 8\n"
                               "    input b : i32[B, 2] vocab 8\n"
                               "    label y : f32[B]\n"
                               "    data feat : f32[8, 4]\n"
                               "    lin = Linear(4, 4)\n"
                               "    head = Linear(4, 1)\n"
                               "    fn forward() {\n"
                               "        h = lin(feat[a]) + sum(lin(feat[b]), axis = 1)\n"
                               "        logit = squeeze(head(h), -1)\n"
                               "        output p = sigmoid(logit)\n"
                               "        loss = bce_with_logits(logit, y)\n"
                               "    }\n"
                               "}\n";
    em3_optim_config oc = em3_optim_defaults();
    oc.separate_update = true;
    em3_module *m = compile_with("two id inputs", two, "dedup-rows,autodiff,optimizer,dce", &oc);
    assert_int_equal(count_op(em3_module_find_func(m, "train"), EM3_OP_UNIQUE), 2);
    em3_module_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_long),
        cmocka_unit_test(test_attention_widths),
        cmocka_unit_test(test_lora),
        cmocka_unit_test(test_dedup_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
