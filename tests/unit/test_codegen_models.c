/* tests/unit/test_codegen_models.c — compiled training equals the reference interpreter on
 * whole models written in the DSL: an MLP with BCE, the ranking models and their EM3 versions,
 * the top-K graph models (random graphs bound), shrunk with constant overrides. Gradients after autodiff, then one and three optimizer steps (SGD with lazy
 * tables, Adam): loss, outputs and every global of the JIT against the F32 interpreter. */
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
#include "graph_fixture.h"
#include "jit_harness.h"
#include "passes/passes.h"
#include "runtime/init.h"

static const char mlp_source[] = "import \"lib/nn.em3\"\n"
                                 "model clf {\n"
                                 "    input x : f32[B, 6]\n"
                                 "    label y : f32[B]\n"
                                 "    net = MLP([6, 16, 8, 1], \"tanh\")\n"
                                 "    fn forward() {\n"
                                 "        logit = squeeze(net(x), -1)\n"
                                 "        output p = sigmoid(logit)\n"
                                 "        loss = bce_with_logits(logit, y)\n"
                                 "    }\n"
                                 "}\n";

/* The ranking models and their EM3 versions at test size: every dimension small, every
 * structure kept. */
static const em3_const_override din_sizes[] = {
    {"d", "8"}, {"seq", "5"}, {"items", "50"}, {"users", "20"},
};
/* with dropout in the MLP: @train's masks (a hash of the step) drawn alike by both */
static const em3_const_override din_dropout_sizes[] = {
    {"d", "8"}, {"seq", "5"}, {"items", "50"}, {"users", "20"}, {"mlp_dropout", "0.3"},
};
static const em3_const_override em3_din_sizes[] = {
    {"d", "8"},        {"seq", "5"},       {"items", "50"},   {"users", "20"},
    {"patches", "3"},  {"patch_dim", "6"}, {"text_len", "4"}, {"words", "30"},
    {"heads", "2"},    {"lora", "2"},
};
/* CIC over 2 sampled negatives per row instead of in-batch ones */
static const em3_const_override em3_din_sampled_sizes[] = {
    {"d", "8"},        {"seq", "5"},       {"items", "50"},   {"users", "20"},
    {"patches", "3"},  {"patch_dim", "6"}, {"text_len", "4"}, {"words", "30"},
    {"heads", "2"},    {"lora", "2"},      {"cic_negatives", "2"},
};
static const em3_const_override lightgcn_sizes[] = {{"d", "8"}, {"vocab_user", "12"}, {"vocab_item", "20"}};
static const em3_const_override vbpr_sizes[] = {
    {"d", "8"}, {"vocab_user", "12"}, {"vocab_item", "20"}, {"dim_image", "6"}, {"dim_audio", "5"},
};
static const em3_const_override freedom_sizes[] = {
    {"d", "8"},         {"vocab_user", "12"}, {"vocab_item", "20"}, {"dim_image", "6"},
    {"dim_audio", "5"}, {"knn_k", "3"},
};
static const em3_const_override em3_freedom_sizes[] = {
    {"d", "8"},         {"vocab_user", "12"}, {"vocab_item", "20"}, {"dim_image", "6"},
    {"dim_audio", "5"}, {"knn_k", "3"},       {"heads", "2"},       {"cic_negatives", "3"},
};

typedef struct {
    const char *name;
    const char *file;   /* under models/, or NULL for `source` */
    const char *source;
    const em3_const_override *sizes;
    int n_sizes;
    int64_t words; /* the vocabulary of i32 data tables (text token ids) */
    bool tables;   /* has embedding tables: lazy optimizers update them sparsely */
} model_case;

#define SIZES(s) s, sizeof s / sizeof *s
static const model_case models[] = {
    {"mlp", NULL, mlp_source, NULL, 0, 0, false},
    {"din", "din.em3", NULL, SIZES(din_sizes), 0, true},
    {"din_dropout", "din.em3", NULL, SIZES(din_dropout_sizes), 0, true},
    {"dcnv2", "dcnv2.em3", NULL, SIZES(din_sizes), 0, true},
    {"deepfm", "deepfm.em3", NULL, SIZES(din_sizes), 0, true},
    {"em3_din", "em3_din.em3", NULL, SIZES(em3_din_sizes), 30, true},
    {"em3_din_sampled", "em3_din.em3", NULL, SIZES(em3_din_sampled_sizes), 30, true},
    {"em3_dcnv2", "em3_dcnv2.em3", NULL, SIZES(em3_din_sizes), 30, true},
    {"em3_deepfm", "em3_deepfm.em3", NULL, SIZES(em3_din_sizes), 30, true},
    /* graph models: the tables' gradients come through spmm (dense), except VBPR's users */
    {"lightgcn", "lightgcn.em3", NULL, SIZES(lightgcn_sizes), 0, false},
    {"vbpr", "vbpr.em3", NULL, SIZES(vbpr_sizes), 0, true},
    {"freedom", "freedom.em3", NULL, SIZES(freedom_sizes), 0, false},
    {"em3_freedom", "em3_freedom.em3", NULL, SIZES(em3_freedom_sizes), 0, false},
};

static em3_module *compile_model(const model_case *mc, const char *passes, const em3_optim_config *cfg) {
    em3_diag *d = em3_diag_create(stderr);
    em3_frontend_options fo = {.overrides = mc->sizes, .n_overrides = mc->n_sizes};
    em3_module *m;
    if (mc->file) {
        char path[4096]; /* the standard library's folder is models/, which imports lib/... */
        snprintf(path, sizeof path, "%s/%s", em3_frontend_stdlib_dir(), mc->file);
        m = em3_frontend_compile(path, &fo, d);
    } else {
        m = em3_frontend_compile_source("mlp.em3", mc->source, strlen(mc->source), &fo, d);
    }
    if (!m) fail_msg("%s does not compile", mc->name);
    em3_pipeline *pl = em3_pipeline_create();
    assert_true(em3_pipeline_parse(pl, passes, d));
    em3_pass_options opt = {.verify_each = true, .quiet = true, .optim = cfg};
    assert_true(em3_pipeline_run(pl, m, &opt, d));
    em3_pipeline_free(pl);
    em3_diag_free(d);
    return m;
}

/* Initial weights from the seed (rounded to float by the F32 interpreter), data tables with
 * deterministic contents (i32 tables: ids below the vocabulary their column declares, the
 * text model's `words`, with some 0 pads), random graphs, then the same in the JIT's globals. */
static void init_globals(jh_pair *p, const model_case *mc) {
    em3_interp_init_globals(p->it, 7);
    em3_rng r;
    em3_rng_seed(&r, 8);
    for (int g = 0; g < p->m->n_global; g++) {
        const em3_global *gl = &p->m->global[g];
        if (gl->kind == EM3_GLOBAL_GRAPH)
            jh_bind_graph(p, gl->name, random_graph(em3_rng_next(&r), gl->type.dim[0], gl->type.dim[1], 3, 0));
        if (gl->kind != EM3_GLOBAL_DATA) continue;
        double *v = em3_interp_global(p->it, gl->name);
        for (int64_t i = 0, n = em3_type_numel(&gl->type, 1); i < n; i++)
            v[i] = gl->type.dtype == EM3_DTYPE_I32 ? (double)em3_rng_below(&r, (uint64_t)mc->words)
                                                   : (double)(float)(2 * em3_rng_uniform(&r) - 1);
    }
    jh_globals_from_interp(p);
}

/* The inputs of `func` for step `step` at `batch`: ids within their vocabulary (a quarter of them
 * the pad id where the input has one, and the whole first row: a user without history), 0/1
 * labels, the learning rate and the step number. Values live in `store` (freed by the caller);
 * returns the count. */
static int make_inputs(const em3_module *m, const char *func, int64_t batch, int step, double lr,
                       em3_interp_input *in, double **store) {
    const em3_func *f = em3_module_find_func(m, func);
    em3_rng r;
    em3_rng_seed(&r, 100 + (uint64_t)step);
    int n = 0;
    for (int i = 0; i < f->n_node; i++) {
        const em3_node *nd = &f->node[i];
        if (nd->op != EM3_OP_INPUT) continue;
        const char *name = em3_node_s(nd, "name");
        int64_t count = em3_type_numel(&nd->type, batch), vocab = em3_node_i(nd, "vocab");
        int64_t pad = em3_node_i(nd, "pad"), row = count / batch;
        double *v = store[n] = malloc(sizeof(double) * (size_t)(count ? count : 1));
        for (int64_t k = 0; k < count; k++) {
            double u = em3_rng_uniform(&r);
            if (pad >= 0 && (k < row || u < 0.25))
                v[k] = (double)pad;
            else if (!strncmp(name, "opt.lr", 6))
                v[k] = (double)(float)lr;
            else if (!strcmp(name, "opt.step"))
                v[k] = step;
            else if (!strcmp(name, "opt.row0"))
                v[k] = 0;
            else if (nd->type.dtype == EM3_DTYPE_I32)
                v[k] = vocab ? floor(u * (double)vocab) : 0;
            else if (em3_node_i(nd, "label"))
                v[k] = u < 0.5;
            else
                v[k] = (double)(float)(2 * u - 1);
        }
        in[n++] = (em3_interp_input){name, v};
    }
    return n;
}

/* Runs `func` in both at `batch` (inputs for `step`) and compares its outputs. */
static double run_step(jh_pair *p, const char *func, int64_t batch, int step, double lr, double tol) {
    em3_interp_input in[64];
    double *store[64];
    int n = make_inputs(p->m, func, batch, step, lr, in, store);
    jh_run(p, func, batch, in, n);
    double e = jh_compare_outputs(p, tol);
    for (int i = 0; i < n; i++) free(store[i]);
    return e;
}

/* ---- gradients ----------------------------------------------------------------------------- */

/* Tolerance of gradients and of the training step's results, as jh_diff (|a−b|/(1+|b|)): each
 * value is the end of a chain of dozens of ops (GEMMs, reductions, transcendental functions),
 * forward and back, in float on one side and rounded after every op on the other. Measured:
 * below 5e-7 everywhere but EM3-DIN's item table gradient (1.0e-5; CIC's 64×64 InfoNCE at
 * τ = 0.1 cancels there — the F32 interpreter itself is 0.9e-5 from the F64 one) and the Adam
 * state that squares it (1.4e-5). */
#define MODEL_TOL 1e-4

static void check_gradients(const model_case *mc) {
    jh_pair *p = jh_create(compile_model(mc, "autodiff", NULL));
    init_globals(p, mc);
    double worst = 0;
    static const int64_t batches[] = {3, JH_MAX_BATCH, 1};
    for (int s = 0; s < 3; s++) worst = fmax(worst, run_step(p, "train", batches[s], s + 1, 0, MODEL_TOL));
    print_message("  %-8s gradients: %d outputs of @train, compiled in %.2f s, largest difference %.2e (%s)\n",
                  mc->name, p->cf->n_outputs, em3_jit_compile_seconds(p->jit), worst, p->worst_at);
    jh_free(p);
}

static void test_gradients(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) check_gradients(&models[i]);
}

/* ---- training steps ------------------------------------------------------------------------ */

/* Three steps at batch 3, 64 and 1; every output and global compared after each, then the
 * trained model's @forward. Adam runs with ε = 1e-3 instead of 1e-8: its step lr·m/(√v + ε)
 * is ±lr for any gradient well above ε, so a gradient that is 0 in exact arithmetic and float
 * noise (~1e-9) on either side would step by up to ±lr in the JIT and the interpreter alike,
 * in different directions. With ε = 1e-3 the step's sensitivity to its gradient is at most
 * lr/ε, and the comparison tests the code rather than the noise. */
static void check_training(const model_case *mc, em3_optim_kind kind, double lr) {
    em3_optim_config cfg = em3_optim_defaults();
    cfg.kind = kind;
    cfg.lazy = true;
    cfg.eps = 1e-3;
    jh_pair *p = jh_create(compile_model(mc, "autodiff,optimizer,dce", &cfg));
    const em3_func *train = em3_module_find_func(p->m, "train");
    int sparse = 0;
    for (int i = 0; i < train->n_node; i++)
        sparse += train->node[i].op == EM3_OP_SPARSE_SGD_UPDATE || train->node[i].op == EM3_OP_SPARSE_ADAM_UPDATE;
    assert_true(sparse > 0 || !mc->tables);
    init_globals(p, mc);
    static const int64_t batches[] = {3, JH_MAX_BATCH, 1};
    double out[3], glob[3];
    for (int s = 0; s < 3; s++) {
        out[s] = run_step(p, "train", batches[s], s + 1, lr, MODEL_TOL);
        glob[s] = jh_compare_globals(p, "", MODEL_TOL);
    }
    double fwd = run_step(p, "forward", 5, 9, lr, MODEL_TOL);
    print_message("  %-8s %-5s: outputs after steps 1-3 %.1e %.1e %.1e, globals %.1e %.1e %.1e, "
                  "@forward %.1e; compiled in %.2f s; largest at %s\n",
                  mc->name, em3_optim_kind_name(kind), out[0], out[1], out[2], glob[0], glob[1], glob[2], fwd,
                  em3_jit_compile_seconds(p->jit), p->worst_at);
    jh_free(p);
}

static void test_train_sgd(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) check_training(&models[i], EM3_OPTIM_SGD, 0.1);
}

static void test_train_adam(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) check_training(&models[i], EM3_OPTIM_ADAM, 0.01);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_train_sgd),
        cmocka_unit_test(test_train_adam),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
