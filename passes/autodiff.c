/* passes/autodiff.c — reverse-mode automatic differentiation as an IR pass.
 *
 * Builds @train from @forward: the forward nodes, then for every trainable parameter the
 * gradient of `loss`, returned as output "grad.NAME" for the optimizer pass to consume.
 * Only values on a path from a trainable parameter to the loss get gradients (activity
 * analysis: "varied" forward from the parameters, "useful" backward from the loss), so a
 * frozen weight or a stop_gradient operand costs no gradient computation at all — LoRA's
 * frozen W produces no dW GEMM. Gradients of values used several times are summed; a
 * gather's gradients are chained scatter_adds so the optimizer can update rows sparsely.
 */
#include <stdlib.h>
#include <string.h>

#include "autodiff.h"
#include "passes.h"

static bool is_trainable_param(const em3_func *f, const em3_node *n) {
    if (n->op != EM3_OP_PARAM) return false;
    int g = em3_module_find_global(f->mod, n->attr[0].s);
    return g >= 0 && f->mod->global[g].kind == EM3_GLOBAL_PARAM;
}

/* varied: depends on a trainable parameter through differentiable operands (floats only) */
static bool *varied_values(const em3_func *f) {
    bool *var = em3_xcalloc((size_t)f->n_node, sizeof(bool));
    for (int i = 0; i < f->n_node; i++) {
        const em3_node *n = &f->node[i];
        if (n->type.dtype != EM3_DTYPE_F32) continue;
        if (is_trainable_param(f, n)) var[i] = true;
        for (int k = 0; k < n->n_in && !var[i]; k++)
            var[i] = em3_op_operand_differentiable(n->op, k) && var[n->in[k]];
    }
    return var;
}

/* useful: the loss depends on it through differentiable operands */
static bool *useful_values(const em3_func *f, int loss) {
    bool *use = em3_xcalloc((size_t)f->n_node, sizeof(bool));
    use[loss] = true;
    for (int i = loss; i >= 0; i--) {
        if (!use[i]) continue;
        const em3_node *n = &f->node[i];
        for (int k = 0; k < n->n_in; k++)
            if (em3_op_operand_differentiable(n->op, k)) use[n->in[k]] = true;
    }
    return use;
}

static bool is_zero_const(const em3_func *f, int v) {
    const em3_node *n = &f->node[v];
    return n->op == EM3_OP_CONST && n->attr[0].f == 0.0;
}

/* g_old + dx. A scatter_add into zeros is chained onto the existing gradient instead, so
 * that a table's gradient stays one chain of (ids, rows) pairs over a zero base. */
static int accumulate(em3_builder *b, int g_old, int dx) {
    if (g_old < 0) return dx;
    const em3_node *d = &b->f->node[dx];
    if (d->op == EM3_OP_SCATTER_ADD && is_zero_const(b->f, d->in[0])) {
        em3_node p = em3_node_proto(EM3_OP_SCATTER_ADD, d->loc);
        int in[3] = {g_old, d->in[1], d->in[2]};
        return em3_b_node(b, &p, in, 3);
    }
    if (b->f->node[g_old].op == EM3_OP_SCATTER_ADD) /* keep the chain's dense base last */
        return em3_b_binary(b, EM3_OP_ADD, dx, g_old);
    return em3_b_binary(b, EM3_OP_ADD, g_old, dx);
}

/* @train starts as a copy of @forward in which each dropout(x) — x outside training — becomes
 * dropout_train(x, opt.step, opt.row0), salted with its position in @forward so that every
 * site draws a mask of its own. Returns where each forward value went. */
static int *copy_forward(const em3_func *fwd, em3_func *tr) {
    int *at = em3_xmalloc(sizeof(int) * (size_t)(fwd->n_node ? fwd->n_node : 1)), step = -1, row0 = -1;
    int in[64];
    for (int i = 0; i < fwd->n_node; i++) {
        const em3_node *n = &fwd->node[i];
        EM3_ASSERT(n->n_in <= 64, "%s with %d operands", em3_op_name(n->op), n->n_in);
        for (int k = 0; k < n->n_in; k++) in[k] = at[n->in[k]];
        if (n->op != EM3_OP_DROPOUT) {
            at[i] = em3_func_add_checked(tr, n, in, n->n_in);
            continue;
        }
        em3_builder b = {tr, n->loc};
        if (step < 0) step = em3_b_step(&b), row0 = em3_b_row0(&b);
        em3_node p = em3_node_proto(EM3_OP_DROPOUT_TRAIN, n->loc);
        em3_node_set_f(&p, "p", em3_node_f(n, "p"));
        em3_node_set_i(&p, "salt", i);
        int ops[3] = {in[0], step, row0};
        at[i] = em3_b_node(&b, &p, ops, 3);
    }
    return at;
}

static int find_output(const em3_func *f, const char *name) {
    for (int i = 0; i < f->n_out; i++)
        if (!strcmp(f->out[i].name, name)) return f->out[i].value;
    return -1;
}

int em3_pass_autodiff(em3_module *m, const em3_pass_ctx *ctx) {
    em3_func *fwd = em3_module_find_func(m, "forward");
    if (em3_module_find_func(m, "train")) return 0; /* already differentiated */
    if (!fwd) {
        em3_diag_error(ctx->diag, (em3_loc){0}, "autodiff: the module has no @forward function");
        return -1;
    }
    int loss = find_output(fwd, "loss");
    if (loss < 0) {
        em3_diag_error(ctx->diag, (em3_loc){0}, "autodiff: @forward returns no 'loss': the model "
                                                "needs a loss statement to be trained");
        return -1;
    }
    const em3_type *lt = &fwd->node[loss].type;
    if (lt->rank != 0 || lt->dtype != EM3_DTYPE_F32) {
        em3_diag_error(ctx->diag, fwd->node[loss].loc, "autodiff: the loss must be an f32 scalar");
        return -1;
    }
    em3_func *tr = em3_module_add_func(m, "train");
    int *at = copy_forward(fwd, tr); /* forward value i is @train's at[i] */
    loss = at[loss];
    int n_fwd = tr->n_node;

    bool *var = varied_values(tr), *use = useful_values(tr, loss);
    int *grad = em3_xmalloc(sizeof(int) * (size_t)n_fwd);
    for (int i = 0; i < n_fwd; i++) grad[i] = -1;
    em3_builder b = {tr, tr->node[loss].loc};
    grad[loss] = em3_b_const(&b, 1.0, EM3_DTYPE_F32);
    bool failed = false;

    for (int i = loss; i >= 0 && !failed; i--) {
        if (!var[i] || !use[i] || grad[i] < 0) continue;
        em3_node n = tr->node[i]; /* a copy: appending nodes may move the array */
        bool need[64] = {0}, any = false;
        int dx[64];
        EM3_ASSERT(n.n_in <= 64, "%s with %d operands", em3_op_name(n.op), n.n_in);
        for (int k = 0; k < n.n_in; k++) {
            need[k] = em3_op_operand_differentiable(n.op, k) && var[n.in[k]] && use[n.in[k]];
            dx[k] = -1;
            any |= need[k];
        }
        if (!any) continue;
        em3_vjp v = {{tr, n.loc}, &n, i, grad[i], need, dx, ctx->diag, false};
        em3_op_vjp(n.op)(&v);
        failed = v.failed;
        for (int k = 0; k < n.n_in && !failed; k++) {
            if (!need[k]) continue;
            EM3_ASSERT(dx[k] >= 0, "VJP of %s gave no gradient for operand %d", em3_op_name(n.op), k);
            char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
            EM3_ASSERT(em3_type_eq(&tr->node[dx[k]].type, &tr->node[n.in[k]].type),
                       "VJP of %s produced %s for operand %d of type %s", em3_op_name(n.op),
                       em3_type_str(&tr->node[dx[k]].type, b0, sizeof b0), k,
                       em3_type_str(&tr->node[n.in[k]].type, b1, sizeof b1));
            b.loc = n.loc;
            grad[n.in[k]] = accumulate(&b, grad[n.in[k]], dx[k]);
        }
    }

    for (int i = 0; i < fwd->n_out; i++)
        if (!ctx->opt->loss_only || !strcmp(fwd->out[i].name, "loss"))
            em3_func_add_output(tr, fwd->out[i].name, at[fwd->out[i].value]);
    /* one gradient per trainable global, in declaration order (summing duplicate reads) */
    for (int g = 0; g < m->n_global && !failed; g++) {
        if (m->global[g].kind != EM3_GLOBAL_PARAM) continue;
        int total = -1;
        for (int i = 0; i < n_fwd; i++)
            if (tr->node[i].op == EM3_OP_PARAM && !strcmp(tr->node[i].attr[0].s, m->global[g].name) &&
                grad[i] >= 0)
                total = accumulate(&b, total, grad[i]);
        if (total >= 0)
            em3_func_add_output(tr, em3_arena_printf(m->arena, "grad.%s", m->global[g].name), total);
        else if (!ctx->opt->quiet)
            em3_diag_warning(ctx->diag, m->global[g].loc,
                             "parameter %s does not affect the loss and will not be trained",
                             m->global[g].name);
    }
    free(var);
    free(use);
    free(grad);
    free(at);
    return failed ? -1 : 1;
}
