/* passes/optimizer.c — the optimizer step as IR ops. Consumes @train's "grad.NAME" outputs
 * (from autodiff) and appends one update op per parameter: SGD, momentum, Adam, AdamW or
 * Adagrad, with per-group learning rates (runtime inputs "opt.lr.GROUP") and weight decay,
 * optional global gradient-norm clipping, and optimizer state as new STATE globals. A table
 * whose gradient is a chain of scatter_adds over zeros (it was only gathered from) is updated
 * sparsely from the (ids, rows) pairs — the dense [rows, d] gradient is never built.
 *
 * With `separate_update` the updates go to a function of their own, @update, whose inputs are
 * the gradients @train returns: data-parallel training combines every rank's gradients in
 * between (runtime/grad_sync.c, docs/training.md). Clipping is then computed in @update,
 * over the combined gradients, as one process would. */
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "ir/builder.h"
#include "passes.h"

em3_optim_config em3_optim_defaults(void) {
    return (em3_optim_config){.kind = EM3_OPTIM_ADAM, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999,
                              .eps = 1e-8, .momentum = 0.9, .lazy = true};
}

static const char *const optim_names[] = {"sgd", "momentum", "adam", "adamw", "adagrad"};

const char *em3_optim_kind_name(em3_optim_kind k) { return optim_names[k]; }

bool em3_optim_kind_parse(const char *s, em3_optim_kind *out) {
    for (int i = 0; i <= EM3_OPTIM_ADAGRAD; i++)
        if (!strcmp(s, optim_names[i])) {
            *out = (em3_optim_kind)i;
            return true;
        }
    return false;
}

typedef struct {
    em3_builder b;
    const em3_optim_config *cfg;
    int step;
    const char *lr_name[64];
    int lr_value[64], n_lr;
} opt_state;

static const em3_param_group *group_of(const em3_optim_config *c, const char *param) {
    for (int i = 0; i < c->n_groups; i++)
        if (!fnmatch(c->groups[i].pattern, param, 0)) return &c->groups[i];
    return NULL;
}

static int lr_input(opt_state *s, const char *group) {
    for (int i = 0; i < s->n_lr; i++)
        if (!strcmp(s->lr_name[i], group)) return s->lr_value[i];
    EM3_ASSERT(s->n_lr < 64, "more than 64 parameter groups");
    em3_type t = em3_type_make(EM3_DTYPE_F32, 0, NULL);
    s->lr_name[s->n_lr] = group;
    return s->lr_value[s->n_lr++] = em3_b_input(&s->b, em3_arena_printf(s->b.f->mod->arena, "opt.lr.%s", group), &t);
}

/* A state global next to parameter `p` (a copy: adding globals moves the module's array),
 * read once. */
static int state_of(opt_state *s, const em3_global *p, const char *suffix, double init) {
    em3_module *m = s->b.f->mod;
    const char *name = em3_arena_printf(m->arena, "%s.%s", p->name, suffix);
    em3_init ini = {init == 0 ? EM3_INIT_ZEROS : EM3_INIT_CONST, init};
    EM3_ASSERT(em3_module_add_global(m, name, p->type, EM3_GLOBAL_STATE, ini, p->loc) >= 0,
               "state %s exists", name);
    return em3_b_param(&s->b, name);
}

static bool is_zero_const(const em3_func *f, int v) {
    return f->node[v].op == EM3_OP_CONST && f->node[v].attr[0].f == 0.0;
}

/* ids [...] -> [N], rows [..., row] -> [N, row], when N is expressible (at most one batch
 * dimension among the ids' dimensions). */
static bool flatten_pair(opt_state *s, int *ids, int *rows) {
    const em3_type *it = em3_b_type(&s->b, *ids), *rt = em3_b_type(&s->b, *rows);
    int64_t d1[1], dr[EM3_MAX_RANK];
    if (!em3_dims_product(it->dim, it->rank, &d1[0])) return false;
    dr[0] = d1[0];
    int r = 1;
    for (int i = it->rank; i < rt->rank; i++) dr[r++] = rt->dim[i];
    *ids = em3_b_reshape(&s->b, *ids, d1, 1);
    *rows = em3_b_reshape(&s->b, *rows, dr, r);
    return true;
}

/* The (ids, rows) of a sparse gradient, joined into one pair; false when it is dense. */
static bool sparse_pair(opt_state *s, int g, int *ids, int *rows) {
    const em3_func *f = s->b.f;
    int pid[256], prow[256], n = 0;
    while (f->node[g].op == EM3_OP_SCATTER_ADD && n < 256) {
        pid[n] = f->node[g].in[1];
        prow[n++] = f->node[g].in[2];
        g = f->node[g].in[0];
    }
    if (n == 0 || !is_zero_const(f, g)) return false;
    for (int i = 0; i < n / 2; i++) { /* innermost first: the order the dense chain adds rows */
        int t = pid[i];
        pid[i] = pid[n - 1 - i], pid[n - 1 - i] = t;
        t = prow[i];
        prow[i] = prow[n - 1 - i], prow[n - 1 - i] = t;
    }
    int sym = -1;
    for (int i = 0; i < n; i++) {
        if (!flatten_pair(s, &pid[i], &prow[i])) return false;
        int si = em3_dim_sym(em3_b_type(&s->b, pid[i])->dim[0]);
        if (i && si != sym) return false; /* [B*k], [U1*k] and [n] cannot be joined */
        sym = si;
    }
    if (sym > 0 && s->cfg->separate_update) return false; /* @train's outputs are sized by B */
    *ids = em3_b_concat(&s->b, pid, n, 0);
    *rows = em3_b_concat(&s->b, prow, n, 0);
    return true;
}

typedef struct {
    int param, grad, ids, rows; /* grad: dense value, or -1 with ids/rows */
    em3_global g; /* a copy: adding state globals moves the module's array */
} update;

static void emit_update(opt_state *s, const update *u, double wd, int lr) {
    const em3_optim_config *c = s->cfg;
    bool sparse = u->grad < 0;
    em3_op op;
    int in[8], n = 0;
    in[n++] = u->param;
    if (sparse) {
        in[n++] = u->ids;
        in[n++] = u->rows;
    } else {
        in[n++] = u->grad;
    }
    in[n++] = lr;
    switch (c->kind) {
    case EM3_OPTIM_SGD: op = sparse ? EM3_OP_SPARSE_SGD_UPDATE : EM3_OP_SGD_UPDATE; break;
    case EM3_OPTIM_MOMENTUM:
        EM3_ASSERT(!sparse, "momentum updates are dense");
        op = EM3_OP_MOMENTUM_UPDATE;
        in[n++] = state_of(s, &u->g, "momentum", 0);
        break;
    case EM3_OPTIM_ADAM:
    case EM3_OPTIM_ADAMW:
        op = sparse ? EM3_OP_SPARSE_ADAM_UPDATE : EM3_OP_ADAM_UPDATE;
        in[n++] = s->step;
        in[n++] = state_of(s, &u->g, "adam_m", 0);
        in[n++] = state_of(s, &u->g, "adam_v", 0);
        break;
    case EM3_OPTIM_ADAGRAD:
        op = sparse ? EM3_OP_SPARSE_ADAGRAD_UPDATE : EM3_OP_ADAGRAD_UPDATE;
        in[n++] = state_of(s, &u->g, "adagrad_acc", c->adagrad_init);
        break;
    default: EM3_UNREACHABLE("optimizer kind %d", (int)c->kind);
    }
    em3_node p = em3_node_proto(op, u->g.loc);
    em3_node_set_f(&p, "wd", wd);
    if (op == EM3_OP_MOMENTUM_UPDATE) em3_node_set_f(&p, "momentum", c->momentum);
    if (op == EM3_OP_ADAM_UPDATE || op == EM3_OP_SPARSE_ADAM_UPDATE) {
        em3_node_set_f(&p, "beta1", c->beta1);
        em3_node_set_f(&p, "beta2", c->beta2);
        em3_node_set_f(&p, "eps", c->eps);
        em3_node_set_i(&p, "decoupled", c->kind == EM3_OPTIM_ADAMW);
    }
    if (op == EM3_OP_ADAGRAD_UPDATE || op == EM3_OP_SPARSE_ADAGRAD_UPDATE) em3_node_set_f(&p, "eps", c->eps);
    em3_b_node(&s->b, &p, in, n);
}

/* The gradients leave @train as outputs and enter a new @update as inputs of the same names:
 * "grad.NAME" for a dense gradient, "grad_ids.NAME" and "grad_rows.NAME" for a sparse one
 * (prefixes, since parameter names hold dots). @update's sparse inputs are sized by its batch:
 * a [k·B] pair keeps its type, a static [n] one becomes [n·B] — the runtime calls @update with
 * the smallest batch all ranks' merged pairs fit in. u[] is rewritten to @update's values. */
static em3_func *separate_update(opt_state *s, em3_func *tr, update *u, int nu) {
    em3_module *m = tr->mod;
    EM3_ASSERT(!em3_module_find_func(m, "update"), "@update exists");
    em3_func *up = em3_module_add_func(m, "update");
    em3_builder b = {up, {0}};
    for (int i = 0; i < nu; i++) {
        const char *name = u[i].g.name;
        b.loc = u[i].g.loc;
        if (u[i].grad >= 0) {
            u[i].grad = em3_b_input(&b, em3_arena_printf(m->arena, "grad.%s", name), em3_b_type(&s->b, u[i].grad));
        } else {
            const char *ids = em3_arena_printf(m->arena, "grad_ids.%s", name);
            const char *rows = em3_arena_printf(m->arena, "grad_rows.%s", name);
            em3_func_remove_output(tr, em3_arena_printf(m->arena, "grad.%s", name));
            em3_func_add_output(tr, ids, u[i].ids);
            em3_func_add_output(tr, rows, u[i].rows);
            em3_type ti = *em3_b_type(&s->b, u[i].ids), tw = *em3_b_type(&s->b, u[i].rows);
            if (!em3_dim_has_batch(ti.dim[0])) {
                ti.dim[0] = -ti.dim[0];
                tw.dim[0] = ti.dim[0];
            }
            u[i].ids = em3_b_input(&b, ids, &ti);
            u[i].rows = em3_b_input(&b, rows, &tw);
        }
        u[i].param = em3_b_param(&b, name);
    }
    return up;
}

int em3_pass_optimizer(em3_module *m, const em3_pass_ctx *ctx) {
    em3_optim_config defaults = em3_optim_defaults();
    const em3_optim_config *c = ctx->opt->optim ? ctx->opt->optim : &defaults;
    em3_func *tr = em3_module_find_func(m, "train");
    if (!tr) {
        em3_diag_error(ctx->diag, (em3_loc){0}, "optimizer: no @train function (run autodiff first)");
        return -1;
    }
    if (em3_module_find_func(m, "update")) return 0; /* already done, separately */
    for (int i = 0; i < tr->n_node; i++)
        if (em3_op_flags(tr->node[i].op) & EM3_OPF_SIDE_EFFECT) return 0; /* already done */

    opt_state s = {.b = {tr, {0}}, .cfg = c, .step = -1};
    update *u = em3_xcalloc((size_t)(tr->n_out ? tr->n_out : 1), sizeof(update));
    int nu = 0;
    for (int i = 0; i < tr->n_out; i++) {
        if (strncmp(tr->out[i].name, "grad.", 5)) continue;
        const char *pname = tr->out[i].name + 5;
        int g = em3_module_find_global(m, pname), p = -1;
        EM3_ASSERT(g >= 0, "gradient of unknown global %s", pname);
        for (int k = 0; k < tr->n_node && p < 0; k++)
            if (tr->node[k].op == EM3_OP_PARAM && !strcmp(tr->node[k].attr[0].s, pname)) p = k;
        EM3_ASSERT(p >= 0, "no read of %s in @train", pname);
        s.b.loc = m->global[g].loc;
        u[nu] = (update){p, tr->out[i].value, -1, -1, m->global[g]};
        bool lazy_ok = c->lazy && c->kind != EM3_OPTIM_MOMENTUM;
        if (lazy_ok && sparse_pair(&s, u[nu].grad, &u[nu].ids, &u[nu].rows)) u[nu].grad = -1;
        nu++;
    }
    /* from here on the builder works in the function that updates: @train, or @update */
    if (c->separate_update) s.b.f = separate_update(&s, tr, u, nu);
    em3_func *up = s.b.f;
    if (c->kind == EM3_OPTIM_ADAM || c->kind == EM3_OPTIM_ADAMW) s.step = em3_b_step(&s.b);
    if (c->clip_norm > 0 && nu) { /* global norm over every gradient, sparse ones merged */
        int total = -1;
        for (int i = 0; i < nu; i++) {
            int sq;
            if (u[i].grad < 0) {
                sq = em3_b_binary(&s.b, EM3_OP_SPARSE_SQNORM, u[i].ids, u[i].rows);
            } else {
                int64_t axes[EM3_MAX_RANK];
                int r = em3_b_type(&s.b, u[i].grad)->rank;
                for (int a = 0; a < r; a++) axes[a] = a;
                sq = em3_b_reduce(&s.b, EM3_OP_SUM, em3_b_binary(&s.b, EM3_OP_MUL, u[i].grad, u[i].grad),
                                  axes, r, false);
            }
            total = total < 0 ? sq : em3_b_binary(&s.b, EM3_OP_ADD, total, sq);
        }
        int norm = em3_b_unary(&s.b, EM3_OP_SQRT, total);
        int denom = em3_b_binary(&s.b, EM3_OP_ADD, norm, em3_b_const(&s.b, 1e-6, EM3_DTYPE_F32));
        int scale = em3_b_binary(&s.b, EM3_OP_MINIMUM, em3_b_const(&s.b, 1.0, EM3_DTYPE_F32),
                                 em3_b_binary(&s.b, EM3_OP_DIV, em3_b_const(&s.b, c->clip_norm, EM3_DTYPE_F32), denom));
        for (int i = 0; i < nu; i++) {
            int *v = u[i].grad < 0 ? &u[i].rows : &u[i].grad;
            *v = em3_b_binary(&s.b, EM3_OP_MUL, *v, scale);
        }
        em3_func_add_output(up, "grad_norm", norm);
    }
    for (int i = 0; i < nu; i++) {
        const em3_param_group *grp = group_of(c, u[i].g.name);
        double wd = grp && grp->weight_decay >= 0 ? grp->weight_decay : c->weight_decay;
        s.b.loc = u[i].g.loc;
        emit_update(&s, &u[i], wd, lr_input(&s, grp ? grp->name : "default"));
        if (!c->separate_update) em3_func_remove_output(tr, em3_arena_printf(m->arena, "grad.%s", u[i].g.name));
    }
    free(u);
    return 1;
}
