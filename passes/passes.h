/* passes/passes.h — the pass manager: passes listed in passes.def run in order over a module,
 * with the dump options every stage of the compiler shares (--print-after-all,
 * --print-after=PASS, --print-changed, --dump-dir). */
#ifndef EM3_PASSES_H
#define EM3_PASSES_H

#include "ir/ir.h"

typedef enum {
#define PASS(E, ...) EM3_PASS_##E,
#include "passes.def"
#undef PASS
    EM3_PASS_COUNT
} em3_pass_id;

typedef enum {
    EM3_OPTIM_SGD,
    EM3_OPTIM_MOMENTUM,
    EM3_OPTIM_ADAM,
    EM3_OPTIM_ADAMW,
    EM3_OPTIM_ADAGRAD,
} em3_optim_kind;

/* Parameters whose name matches `pattern` (fnmatch, e.g. "content.*") form a group with its
 * own learning rate (an input of @train, "opt.lr.NAME", so the runtime can schedule it) and
 * weight decay (< 0: the optimizer's). The first matching group wins; the rest form
 * "default". */
typedef struct {
    const char *name;
    const char *pattern;
    double lr; /* read by the runtime, not by the pass */
    double weight_decay;
} em3_param_group;

typedef struct {
    em3_optim_kind kind;
    double lr; /* the default group's; read by the runtime */
    double beta1, beta2, eps, momentum, weight_decay;
    double clip_norm;    /* > 0: clip the global gradient norm to this */
    bool lazy;           /* tables with sparse gradients update only their touched rows */
    double adagrad_init; /* initial accumulator value */
    const em3_param_group *groups;
    int n_groups;
    bool separate_update; /* updates in their own function @update, fed @train's gradients
                             (data-parallel training combines them in between) */
} em3_optim_config;

/* Adam, lr 1e-3, β = (0.9, 0.999), ε = 1e-8, no weight decay, no clipping, lazy tables. */
em3_optim_config em3_optim_defaults(void);
const char *em3_optim_kind_name(em3_optim_kind k);
bool em3_optim_kind_parse(const char *s, em3_optim_kind *out);

typedef struct {
    bool print_after_all;
    const char *print_after; /* comma-separated pass names, or NULL */
    bool print_changed;      /* print only after passes that changed the module */
    const char *dump_dir;    /* one numbered file per pass, or NULL */
    bool verify_each;        /* verify after each pass (an internal error if it fails) */
    unsigned print_flags;    /* EM3_PRINT_* */
    FILE *out;               /* where printing goes (stdout when NULL) */
    bool quiet;              /* no warnings */
    const em3_optim_config *optim; /* for the optimizer pass; NULL: em3_optim_defaults() */
    bool loss_only;          /* autodiff: @train returns the loss and the gradients, not the
                                model's outputs (a training loop reads nothing else, and a
                                top-K model's scores over all items cost more than its step) */
} em3_pass_options;

typedef struct {
    const em3_pass_options *opt;
    em3_diag *diag;
} em3_pass_ctx;

/* A pass returns 1 when it changed the module, 0 when not, -1 on a user error (reported to
 * ctx->diag). Internal errors are assertions. */
typedef int em3_pass_fn(em3_module *m, const em3_pass_ctx *ctx);

const char *em3_pass_name(em3_pass_id p);
const char *em3_pass_description(em3_pass_id p);
bool em3_pass_parse(const char *name, em3_pass_id *out);

typedef struct em3_pipeline em3_pipeline;
em3_pipeline *em3_pipeline_create(void);
void em3_pipeline_free(em3_pipeline *pl);
void em3_pipeline_add(em3_pipeline *pl, em3_pass_id p);
/* "p1,p2,..." → appended passes; false (with a message on `d`) on an unknown name. */
bool em3_pipeline_parse(em3_pipeline *pl, const char *list, em3_diag *d);
/* What `em3 build` runs: -O2 without cache-frozen (a shared object has no step that fills
 * caches), and without autodiff when only @predict is built. */
#define EM3_BUILD_TRAIN_PASSES \
    "fuse-attention,fuse-lora,autodiff,optimizer,simplify,cse,fuse-elementwise,dce"
#define EM3_BUILD_PREDICT_PASSES "fuse-attention,fuse-lora,simplify,cse,fuse-elementwise,dce"

/* The default pipeline for -O0 (what training needs) or -O2 (also every optimisation). */
void em3_pipeline_add_default(em3_pipeline *pl, int opt_level);
/* Runs the passes; false when one reported a user error. */
/* Removes the -O2 passes named in the comma-separated list (e.g. "dedup-rows"); an unknown
 * name or a pass training needs is an error. */
bool em3_pipeline_disable(em3_pipeline *pl, const char *list, em3_diag *d);
bool em3_pipeline_run(em3_pipeline *pl, em3_module *m, const em3_pass_options *opt, em3_diag *d);

/* The passes themselves (declared from passes.def). */
#define PASS(E, NAME, FN, LEVEL, DESC) em3_pass_fn FN;
#include "passes.def"
#undef PASS

#endif
