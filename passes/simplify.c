/* passes/simplify.c — algebraic simplification and constant folding: identities that the DSL
 * and autodiff produce in numbers (x·1 from a LoRA scale α/r = 1, reshapes of reshapes,
 * transposes that cancel, casts to the same type, stop_gradient once gradients exist) and
 * arithmetic on scalar constants. Uses of a simplified node are redirected; DCE then removes
 * what is left unused. Nothing that changes a value's bits is applied: x·0 is not folded
 * (NaN·0 is NaN), and folded constants are rounded to f32 as the op would be. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"

static bool is_const(const em3_func *f, int v, double *value) {
    const em3_node *n = &f->node[v];
    if (n->op != EM3_OP_CONST) return false;
    if (value) *value = n->attr[0].f;
    return true;
}

static bool same_type(const em3_func *f, int a, int b) {
    return em3_type_eq(&f->node[a].type, &f->node[b].type);
}

/* The value node i can be replaced by (itself when none). */
static int identity_of(em3_func *f, int i, bool after_autodiff) {
    em3_node *n = &f->node[i];
    double c;
    int a = n->n_in > 0 ? n->in[0] : -1, b = n->n_in > 1 ? n->in[1] : -1;
    switch (n->op) {
    case EM3_OP_MUL:
        if (is_const(f, b, &c) && c == 1.0 && same_type(f, a, i)) return a;
        if (is_const(f, a, &c) && c == 1.0 && same_type(f, b, i)) return b;
        break;
    case EM3_OP_ADD:
        if (is_const(f, b, &c) && c == 0.0 && same_type(f, a, i)) return a;
        if (is_const(f, a, &c) && c == 0.0 && same_type(f, b, i)) return b;
        break;
    case EM3_OP_SUB:
        if (is_const(f, b, &c) && c == 0.0 && same_type(f, a, i)) return a;
        break;
    case EM3_OP_DIV:
        if (is_const(f, b, &c) && c == 1.0 && same_type(f, a, i)) return a;
        break;
    case EM3_OP_NEG:
        if (f->node[a].op == EM3_OP_NEG) return f->node[a].in[0];
        break;
    case EM3_OP_RESHAPE:
    case EM3_OP_BROADCAST:
    case EM3_OP_CAST:
        if (same_type(f, a, i)) return a;
        break;
    case EM3_OP_TRANSPOSE: {
        int r;
        const int64_t *p = em3_node_list(n, "perm", &r);
        bool id = true;
        for (int k = 0; k < r; k++) id &= p[k] == k;
        if (id) return a;
        break;
    }
    case EM3_OP_STOP_GRADIENT:
    case EM3_OP_DROPOUT: /* autodiff has made @train's dropout_train: elsewhere it is x */
        if (after_autodiff) return a;
        break;
    default: break;
    }
    return i;
}

/* Rewrites node i in place into a cheaper equivalent; true when it changed. */
static bool rewrite(em3_func *f, int i) {
    em3_node *n = &f->node[i];
    if (n->n_in == 0) return false;
    const em3_node *in0 = &f->node[n->in[0]];
    if (n->op == EM3_OP_RESHAPE && in0->op == EM3_OP_RESHAPE) { /* only the element count matters */
        int *ins = em3_arena_alloc(f->mod->arena, sizeof(int));
        ins[0] = in0->in[0];
        n->in = ins;
        return true;
    }
    if (n->op == EM3_OP_TRANSPOSE && in0->op == EM3_OP_TRANSPOSE) {
        int r;
        const int64_t *outer = em3_node_list(n, "perm", &r), *inner = em3_node_list(in0, "perm", NULL);
        int64_t *p = em3_arena_alloc(f->mod->arena, sizeof(int64_t) * (size_t)r);
        for (int k = 0; k < r; k++) p[k] = inner[outer[k]];
        int *ins = em3_arena_alloc(f->mod->arena, sizeof(int));
        ins[0] = in0->in[0];
        n->in = ins;
        em3_node_set_list(n, "perm", p, r);
        return true;
    }
    /* scalar arithmetic on constants */
    double x, y = 0, v;
    if (n->type.rank != 0 || n->type.dtype != EM3_DTYPE_F32 || !is_const(f, n->in[0], &x)) return false;
    if (n->n_in == 2 && !is_const(f, n->in[1], &y)) return false;
    switch (n->op) {
    case EM3_OP_ADD: v = x + y; break;
    case EM3_OP_SUB: v = x - y; break;
    case EM3_OP_MUL: v = x * y; break;
    case EM3_OP_DIV: v = x / y; break;
    case EM3_OP_NEG: v = -x; break;
    case EM3_OP_SQRT: v = sqrt(x); break;
    case EM3_OP_RSQRT: v = 1 / sqrt(x); break;
    default: return false;
    }
    em3_node c = em3_node_proto(EM3_OP_CONST, n->loc);
    em3_node_set_f(&c, "value", (double)(float)v);
    c.type = n->type;
    *n = c;
    return true;
}

static int simplify_func(em3_func *f, bool after_autodiff) {
    int *map = em3_xmalloc(sizeof(int) * (size_t)(f->n_node ? f->n_node : 1));
    int changed = 0;
    for (int i = 0; i < f->n_node; i++) {
        em3_node *n = &f->node[i];
        bool remap = false;
        for (int k = 0; k < n->n_in; k++) remap |= map[n->in[k]] != n->in[k];
        if (remap) {
            int *in = em3_arena_alloc(f->mod->arena, sizeof(int) * (size_t)n->n_in);
            for (int k = 0; k < n->n_in; k++) in[k] = map[n->in[k]];
            n->in = in;
        }
        changed += rewrite(f, i);
        map[i] = identity_of(f, i, after_autodiff);
        changed += map[i] != i;
    }
    for (int i = 0; i < f->n_out; i++) f->out[i].value = map[f->out[i].value];
    free(map);
    return changed;
}

int em3_pass_simplify(em3_module *m, const em3_pass_ctx *ctx) {
    (void)ctx;
    bool after = em3_module_find_func(m, "train") != NULL;
    int changed = 0;
    for (int i = 0; i < m->n_func; i++) changed += simplify_func(m->func[i], after);
    return changed > 0;
}
