/* frontend/builtins.c — the language's built-in functions: tensor primitives that map onto IR
 * ops (docs/language.md lists them), their compile-time versions on numbers, parameter
 * initialisers, and a few helpers (len, int, float, min, max). Arguments are bound by one
 * binder from each entry's parameter list, so every built-in takes keywords the same way. */
#include <math.h>
#include <string.h>

#include "elab.h"

#define MAX_ARGS 6

typedef value builtin_fn(elab *e, int self, const value *a, em3_loc loc);

typedef struct {
    const char *name;
    const char *params; /* space-separated names; the first `required` must be given */
    int required;
    builtin_fn *fn;
    em3_op op; /* for handlers shared by several ops */
} builtin;

static bool given(const value *v) { return v->kind != V_NONE; }
static bool is_tensor(const value *v) { return v->kind == V_TENSOR || v->kind == V_GLOBAL; }

static const em3_type *type_of(elab *e, int id) { return &em3_func_node(e->fn, id)->type; }

static const builtin table[];

/* ---- elementwise ---------------------------------------------------------------------------- */

static double eval_scalar(em3_op op, double x) {
    switch (op) {
    case EM3_OP_EXP: return exp(x);
    case EM3_OP_LOG: return log(x);
    case EM3_OP_SQRT: return sqrt(x);
    case EM3_OP_RSQRT: return 1.0 / sqrt(x);
    case EM3_OP_ABS: return fabs(x);
    case EM3_OP_TANH: return tanh(x);
    case EM3_OP_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case EM3_OP_RELU: return x > 0 ? x : 0;
    case EM3_OP_SOFTPLUS: return fmax(x, 0) + log1p(exp(-fabs(x)));
    case EM3_OP_GELU: return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    case EM3_OP_STOP_GRADIENT: return x;
    default: EM3_UNREACHABLE("no compile-time form for %s", em3_op_name(op));
    }
}

static value b_unary(elab *e, int self, const value *a, em3_loc loc) {
    em3_op op = table[self].op;
    if (a[0].kind == V_INT || a[0].kind == V_FLOAT) {
        double x = a[0].kind == V_INT ? (double)a[0].i : a[0].f;
        double r = eval_scalar(op, x);
        if (!isfinite(r)) {
            elab_error(e, loc, "%s(%g) is not a finite number", table[self].name, x);
            return v_error();
        }
        if (a[0].kind == V_INT && (op == EM3_OP_ABS || op == EM3_OP_RELU) && r < 9e18)
            return v_int((int64_t)r);
        return v_float(r);
    }
    return v_tensor(emit_unary(e, op, as_tensor(e, &a[0], -1, loc), loc));
}

/* Two operands where a number takes the other's element type. */
static bool two_tensors(elab *e, const value *a, const value *b, em3_loc loc, int *ta, int *tb) {
    *ta = is_tensor(a) ? as_tensor(e, a, -1, loc) : -1;
    *tb = is_tensor(b) ? as_tensor(e, b, -1, loc) : -1;
    if ((is_tensor(a) && *ta < 0) || (is_tensor(b) && *tb < 0)) return false;
    if (*ta < 0) *ta = as_tensor(e, a, *tb, loc);
    if (*tb < 0) *tb = as_tensor(e, b, *ta, loc);
    return *ta >= 0 && *tb >= 0;
}

static value b_binary(elab *e, int self, const value *a, em3_loc loc) {
    em3_op op = table[self].op;
    if (!is_tensor(&a[0]) && !is_tensor(&a[1])) {
        double x, y;
        if (!as_number(e, &a[0], loc, "an operand", &x) || !as_number(e, &a[1], loc, "an operand", &y))
            return v_error();
        if (a[0].kind != V_FLOAT && a[1].kind != V_FLOAT) /* exactly, beyond 2^53 too */
            return (a[0].i > a[1].i) == (op == EM3_OP_MAXIMUM) ? v_int(a[0].i) : v_int(a[1].i);
        return v_float(op == EM3_OP_MAXIMUM ? fmax(x, y) : fmin(x, y));
    }
    int ta, tb;
    if (!two_tensors(e, &a[0], &a[1], loc, &ta, &tb)) return v_error();
    return v_tensor(emit_binary(e, op, ta, tb, loc));
}

static value b_where(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    int c = as_tensor(e, &a[0], -1, loc), x, y;
    if (c < 0 || !two_tensors(e, &a[1], &a[2], loc, &x, &y)) return v_error();
    em3_node p = em3_node_proto(EM3_OP_WHERE, loc);
    int in[3] = {c, x, y};
    return v_tensor(emit(e, &p, in, 3, loc));
}

static value b_cast(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    if (a[1].kind != V_DTYPE) {
        elab_error(e, loc, "cast needs an element type (f32 or i32), got %s", v_describe(e, &a[1]));
        return v_error();
    }
    int x = as_tensor(e, &a[0], -1, loc);
    if (x < 0) return v_error();
    if (type_of(e, x)->dtype == (em3_dtype)a[1].i) return v_tensor(x);
    em3_node p = em3_node_proto(EM3_OP_CAST, loc);
    em3_node_set_i(&p, "to", a[1].i);
    return v_tensor(emit(e, &p, &x, 1, loc));
}

/* ---- reductions ----------------------------------------------------------------------------- */

/* `axis`: none (all axes), an int, or a list of ints; negative axes count from the end. */
static int axes_of(elab *e, const value *axis, int rank, em3_loc loc, int64_t *out) {
    if (!given(axis)) {
        for (int i = 0; i < rank; i++) out[i] = i;
        return rank;
    }
    int n = axis->kind == V_LIST ? axis->list.n : 1;
    if (n > rank) {
        elab_error(e, loc, "%d axes for a tensor of rank %d", n, rank);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const value *v = axis->kind == V_LIST ? &axis->list.items[i] : axis;
        int64_t a;
        if (!as_int(e, v, loc, "an axis", &a)) return -1;
        if ((out[i] = norm_axis(e, a, rank, loc)) < 0) return -1;
    }
    return n;
}

static value minmax_numbers(elab *e, bool is_max, const value *a, int n, em3_loc loc) {
    const value *items = a;
    if (n == 1 && a[0].kind == V_LIST) {
        items = a[0].list.items;
        n = a[0].list.n;
    }
    if (n == 0) {
        elab_error(e, loc, "%s of nothing", is_max ? "max" : "min");
        return v_error();
    }
    value best = items[0];
    double bx;
    if (!as_number(e, &best, loc, "an operand", &bx)) return v_error();
    for (int i = 1; i < n; i++) {
        double x;
        if (!as_number(e, &items[i], loc, "an operand", &x)) return v_error();
        if (is_max ? x > bx : x < bx) {
            best = items[i];
            bx = x;
        }
    }
    return best;
}

static value b_reduce(elab *e, int self, const value *a, em3_loc loc) {
    em3_op op = table[self].op;
    if (op == EM3_OP_MAX && !is_tensor(&a[0])) {
        value nums[2] = {a[0], a[1]};
        return minmax_numbers(e, true, nums, given(&a[1]) ? 2 : 1, loc);
    }
    int x = as_tensor(e, &a[0], -1, loc);
    if (x < 0) return v_error();
    int64_t axes[EM3_MAX_RANK];
    int n = axes_of(e, &a[1], type_of(e, x)->rank, loc, axes);
    bool keep = false;
    if (n < 0 || (given(&a[2]) && !as_bool(e, &a[2], loc, "keepdims", &keep))) return v_error();
    if (n == 0) return v_tensor(x); /* a scalar reduced over no axes is itself */
    return v_tensor(emit_reduce(e, op, x, axes, n, keep, loc));
}

static value b_min(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    return minmax_numbers(e, false, a, given(&a[1]) ? 2 : 1, loc);
}

/* softmax, log_softmax (x, axis) and logsumexp (x, axis, keepdims) */
static value b_axis_op(elab *e, int self, const value *a, em3_loc loc) {
    em3_op op = table[self].op;
    int x = as_tensor(e, &a[0], -1, loc);
    if (x < 0) return v_error();
    int64_t axis = -1;
    if (given(&a[1]) && !as_int(e, &a[1], loc, "axis", &axis)) return v_error();
    int ax = norm_axis(e, axis, type_of(e, x)->rank, loc);
    if (ax < 0) return v_error();
    em3_node p = em3_node_proto(op, loc);
    em3_node_set_i(&p, "axis", ax);
    if (op == EM3_OP_LOGSUMEXP) {
        bool keep = false;
        if (given(&a[2]) && !as_bool(e, &a[2], loc, "keepdims", &keep)) return v_error();
        em3_node_set_i(&p, "keepdims", keep);
    }
    return v_tensor(emit(e, &p, &x, 1, loc));
}

/* dropout(x, p): zeroes each element with probability p and scales the rest by 1/(1 − p) in
 * training; elsewhere (validation, @predict, a built library) it is x */
static value b_dropout(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    int x = as_tensor(e, &a[0], -1, loc);
    double p;
    if (x < 0 || !as_number(e, &a[1], loc, "p", &p)) return v_error();
    if (!(p >= 0 && p < 1)) {
        elab_error(e, loc, "dropout needs a probability 0 <= p < 1, got %g", p);
        return v_error();
    }
    if (p == 0) return v_tensor(x);
    em3_node n = em3_node_proto(EM3_OP_DROPOUT, loc);
    em3_node_set_f(&n, "p", p);
    return v_tensor(emit(e, &n, &x, 1, loc));
}

static value b_layer_norm(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    int in[3];
    for (int i = 0; i < 3; i++)
        if ((in[i] = as_tensor(e, &a[i], -1, loc)) < 0) return v_error();
    double eps = 1e-5;
    if (given(&a[3]) && !as_number(e, &a[3], loc, "eps", &eps)) return v_error();
    em3_node p = em3_node_proto(EM3_OP_LAYER_NORM, loc);
    em3_node_set_f(&p, "eps", eps);
    return v_tensor(emit(e, &p, in, 3, loc));
}

/* ---- data movement -------------------------------------------------------------------------- */

static int shape_of(elab *e, const value *v, em3_loc loc, int64_t *dims) {
    if (v->kind != V_LIST) {
        elab_error(e, loc, "a shape is a list of dimensions like [B, 4, 16], got %s",
                   v_describe(e, v));
        return -1;
    }
    if (v->list.n > EM3_MAX_RANK) {
        elab_error(e, loc, "tensors have at most %d dimensions", EM3_MAX_RANK);
        return -1;
    }
    for (int i = 0; i < v->list.n; i++) {
        if (v->list.items[i].kind == V_BATCH) {
            dims[i] = -v->list.items[i].i;
            continue;
        }
        if (!as_int(e, &v->list.items[i], loc, "a dimension", &dims[i])) return -1;
        if (dims[i] <= 0) {
            elab_error(e, loc, "a dimension must be positive, not %lld", (long long)dims[i]);
            return -1;
        }
    }
    return check_numel(e, dims, v->list.n, loc) ? v->list.n : -1;
}

static value b_reshape(elab *e, int self, const value *a, em3_loc loc) {
    em3_op op = table[self].op;
    int x = as_tensor(e, &a[0], -1, loc);
    int64_t dims[EM3_MAX_RANK];
    int r = shape_of(e, &a[1], loc, dims);
    if (x < 0 || r < 0) return v_error();
    if (op == EM3_OP_RESHAPE) return v_tensor(emit_reshape(e, x, dims, r, loc));
    em3_node p = em3_node_proto(op, loc);
    em3_node_set_list(&p, "shape", dims, r);
    return v_tensor(emit(e, &p, &x, 1, loc));
}

static value emit_permute(elab *e, int x, const int64_t *perm, int n, em3_loc loc) {
    bool identity = true;
    for (int i = 0; i < n; i++) identity &= perm[i] == i;
    if (identity) return v_tensor(x);
    em3_node p = em3_node_proto(EM3_OP_TRANSPOSE, loc);
    em3_node_set_list(&p, "perm", perm, n);
    return v_tensor(emit(e, &p, &x, 1, loc));
}

static value b_transpose(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    int x = as_tensor(e, &a[0], -1, loc);
    if (x < 0) return v_error();
    int rank = type_of(e, x)->rank;
    int64_t i = -2, j = -1, perm[EM3_MAX_RANK];
    if ((given(&a[1]) && !as_int(e, &a[1], loc, "an axis", &i)) ||
        (given(&a[2]) && !as_int(e, &a[2], loc, "an axis", &j)))
        return v_error();
    int ai = norm_axis(e, i, rank, loc), aj = ai < 0 ? -1 : norm_axis(e, j, rank, loc);
    if (aj < 0) return v_error();
    for (int k = 0; k < rank; k++) perm[k] = k;
    perm[ai] = aj;
    perm[aj] = ai;
    return emit_permute(e, x, perm, rank, loc);
}

static value b_permute(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    int x = as_tensor(e, &a[0], -1, loc);
    if (x < 0) return v_error();
    int rank = type_of(e, x)->rank;
    if (a[1].kind != V_LIST || a[1].list.n != rank) {
        elab_error(e, loc, "permute needs a list of %d axes", rank);
        return v_error();
    }
    int64_t perm[EM3_MAX_RANK];
    for (int i = 0; i < rank; i++) {
        int64_t v;
        if (!as_int(e, &a[1].list.items[i], loc, "an axis", &v)) return v_error();
        if ((perm[i] = norm_axis(e, v, rank, loc)) < 0) return v_error();
    }
    return emit_permute(e, x, perm, rank, loc);
}

/* concat(xs, axis = -1) joins along an existing axis; stack(xs, axis = 0) along a new one. */
static value b_concat(elab *e, int self, const value *a, em3_loc loc) {
    const char *name = table[self].name;
    bool stack = !strcmp(name, "stack");
    if (a[0].kind != V_LIST || a[0].list.n == 0) {
        elab_error(e, loc, "%s needs a non-empty list of tensors", name);
        return v_error();
    }
    int n = a[0].list.n;
    if (n > 64) { /* the IR's operand limit */
        elab_error(e, loc, "%s of %d tensors: at most 64 can be joined at once (%s groups of them)", name, n,
                   name);
        return v_error();
    }
    int *in = em3_arena_alloc(e->arena, sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++)
        if ((in[i] = as_tensor(e, &a[0].list.items[i], -1, loc)) < 0) return v_error();
    int64_t axis = stack ? 0 : -1;
    if (given(&a[1]) && !as_int(e, &a[1], loc, "axis", &axis)) return v_error();
    const em3_type *t0 = type_of(e, in[0]);
    int ax = norm_axis(e, axis, t0->rank + stack, loc);
    if (ax < 0) return v_error();
    if (stack) {
        if (t0->rank + 1 > EM3_MAX_RANK) {
            elab_error(e, loc, "tensors have at most %d dimensions", EM3_MAX_RANK);
            return v_error();
        }
        for (int i = 0; i < n; i++) {
            const em3_type *t = type_of(e, in[i]);
            if (!em3_type_eq(t, t0)) {
                char s0[EM3_TYPE_STR_MAX], si[EM3_TYPE_STR_MAX];
                elab_error(e, loc, "stack needs tensors of one type: element 0 is %s, element %d is %s",
                           em3_type_str(t0, s0, sizeof s0), i, em3_type_str(t, si, sizeof si));
                return v_error();
            }
            int64_t dims[EM3_MAX_RANK + 1];
            for (int k = 0, j = 0; k <= t->rank; k++) dims[k] = k == ax ? 1 : t->dim[j++];
            in[i] = emit_reshape(e, in[i], dims, t->rank + 1, loc);
        }
    }
    if (n == 1) return v_tensor(in[0]);
    em3_node p = em3_node_proto(EM3_OP_CONCAT, loc);
    em3_node_set_i(&p, "axis", ax);
    return v_tensor(emit(e, &p, in, n, loc));
}

/* unsqueeze / squeeze / flatten are reshapes with a friendlier name */
static value b_unsqueeze(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    int x = as_tensor(e, &a[0], -1, loc);
    int64_t axis;
    if (x < 0 || !as_int(e, &a[1], loc, "axis", &axis)) return v_error();
    const em3_type *t = type_of(e, x);
    int ax = norm_axis(e, axis, t->rank + 1, loc);
    if (ax < 0) return v_error();
    int64_t dims[EM3_MAX_RANK + 1];
    for (int i = 0, k = 0; i <= t->rank; i++) dims[i] = i == ax ? 1 : t->dim[k++];
    if (t->rank + 1 > EM3_MAX_RANK) {
        elab_error(e, loc, "tensors have at most %d dimensions", EM3_MAX_RANK);
        return v_error();
    }
    return v_tensor(emit_reshape(e, x, dims, t->rank + 1, loc));
}

static value b_squeeze(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    int x = as_tensor(e, &a[0], -1, loc);
    int64_t axis;
    if (x < 0 || !as_int(e, &a[1], loc, "axis", &axis)) return v_error();
    const em3_type *t = type_of(e, x);
    int ax = norm_axis(e, axis, t->rank, loc);
    if (ax < 0) return v_error();
    if (t->dim[ax] != 1) {
        elab_error(e, loc, "squeeze: dimension %d has size %lld, not 1", ax, (long long)t->dim[ax]);
        return v_error();
    }
    int64_t dims[EM3_MAX_RANK];
    for (int i = 0, k = 0; i < t->rank; i++)
        if (i != ax) dims[k++] = t->dim[i];
    return v_tensor(emit_reshape(e, x, dims, t->rank - 1, loc));
}

static value b_flatten(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    int x = as_tensor(e, &a[0], -1, loc);
    if (x < 0) return v_error();
    const em3_type *t = type_of(e, x);
    if (t->rank < 2) return v_tensor(x);
    int64_t rest = 1;
    for (int i = 1; i < t->rank; i++) {
        if (em3_dim_has_batch(t->dim[i])) {
            elab_error(e, loc, "flatten keeps the first dimension and merges the others, which "
                               "must not hold B");
            return v_error();
        }
        rest *= t->dim[i];
    }
    int64_t dims[2] = {t->dim[0], rest};
    return v_tensor(emit_reshape(e, x, dims, 2, loc));
}

static value b_slice(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    int x = as_tensor(e, &a[0], -1, loc);
    int64_t axis, lo, hi;
    if (x < 0 || !as_int(e, &a[1], loc, "axis", &axis) || !as_int(e, &a[2], loc, "start", &lo) ||
        !as_int(e, &a[3], loc, "end", &hi))
        return v_error();
    const em3_type *t = type_of(e, x);
    int ax = norm_axis(e, axis, t->rank, loc);
    if (ax < 0) return v_error();
    if (!em3_dim_has_batch(t->dim[ax])) {
        if (lo < 0) lo += t->dim[ax];
        if (hi < 0) hi += t->dim[ax];
        if (lo == 0 && hi == t->dim[ax]) return v_tensor(x);
    }
    em3_node p = em3_node_proto(EM3_OP_SLICE, loc);
    em3_node_set_i(&p, "axis", ax);
    em3_node_set_i(&p, "start", lo);
    em3_node_set_i(&p, "end", hi);
    return v_tensor(emit(e, &p, &x, 1, loc));
}

static value b_matmul(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    int in[2] = {as_tensor(e, &a[0], -1, loc), as_tensor(e, &a[1], -1, loc)};
    bool ta = false, tb = false;
    if ((given(&a[2]) && !as_bool(e, &a[2], loc, "ta", &ta)) ||
        (given(&a[3]) && !as_bool(e, &a[3], loc, "tb", &tb)))
        return v_error();
    em3_node p = em3_node_proto(EM3_OP_MATMUL, loc);
    em3_node_set_i(&p, "ta", ta);
    em3_node_set_i(&p, "tb", tb);
    return v_tensor(emit(e, &p, in, 2, loc));
}

static value b_gather(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    int in[2] = {as_tensor(e, &a[0], -1, loc), as_tensor(e, &a[1], -1, loc)};
    em3_node p = em3_node_proto(EM3_OP_GATHER, loc);
    return v_tensor(emit(e, &p, in, 2, loc));
}

/* bce_with_logits(logit, label, reduction = "mean"), as PyTorch's BCEWithLogitsLoss */
static value b_bce(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    int ta, tb;
    if (!two_tensors(e, &a[0], &a[1], loc, &ta, &tb)) return v_error();
    int l = emit_binary(e, EM3_OP_BCE_LOGITS, ta, tb, loc);
    const char *red = a[2].kind == V_STRING ? a[2].s : given(&a[2]) ? "" : "mean";
    if (l < 0) return v_error();
    if (!strcmp(red, "none")) return v_tensor(l);
    if (strcmp(red, "mean") && strcmp(red, "sum")) {
        elab_error(e, loc, "reduction must be \"mean\", \"sum\" or \"none\"");
        return v_error();
    }
    int64_t axes[EM3_MAX_RANK];
    int r = type_of(e, l)->rank;
    for (int i = 0; i < r; i++) axes[i] = i;
    if (r == 0) return v_tensor(l);
    return v_tensor(emit_reduce(e, !strcmp(red, "mean") ? EM3_OP_MEAN : EM3_OP_SUM, l, axes, r,
                                false, loc));
}

/* spmm(g, x, transpose = false): g x (gᵀ x) for a graph g, as torch.sparse.mm */
static value b_spmm(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    if (a[0].kind != V_GRAPH) {
        if (a[0].kind != V_ERROR) elab_error(e, loc, "spmm multiplies by a graph, not %s", v_describe(e, &a[0]));
        return v_error();
    }
    int x = as_tensor(e, &a[1], -1, loc);
    bool tr = false;
    if (x < 0 || (given(&a[2]) && !as_bool(e, &a[2], loc, "transpose", &tr))) return v_error();
    em3_node p = em3_node_proto(EM3_OP_SPMM, loc);
    em3_node_set_s(&p, "graph", e->mod->global[a[0].i].name);
    em3_node_set_i(&p, "transpose", tr);
    return v_tensor(emit(e, &p, &x, 1, loc));
}

/* zeros(shape) / ones(shape) / full(shape, value): constants; bare zeros / ones / xavier are
 * also parameter initialisers (see declare_param). */
static value b_fill(elab *e, int self, const value *a, em3_loc loc) {
    int64_t dims[EM3_MAX_RANK];
    int r = shape_of(e, &a[0], loc, dims);
    double v = !strcmp(table[self].name, "ones") ? 1.0 : 0.0;
    if (r < 0) return v_error();
    if (!strcmp(table[self].name, "full") && !as_number(e, &a[1], loc, "the fill value", &v))
        return v_error();
    return v_tensor(emit_const(e, v, EM3_DTYPE_F32, dims, r, loc));
}

static value b_init(elab *e, int self, const value *a, em3_loc loc) {
    em3_init ini = {EM3_INIT_NONE, 0};
    EM3_ASSERT(em3_init_kind_parse(!strcmp(table[self].name, "constant") ? "const" : table[self].name,
                                   &ini.kind),
               "initialiser %s", table[self].name);
    if (ini.kind != EM3_INIT_XAVIER && !as_number(e, &a[0], loc, "the initialiser's scale", &ini.a))
        return v_error();
    if ((ini.kind == EM3_INIT_NORMAL || ini.kind == EM3_INIT_UNIFORM) && !(ini.a >= 0)) {
        elab_error(e, loc, "%s needs a non-negative scale", table[self].name);
        return v_error();
    }
    return (value){.kind = V_INIT, .init = ini};
}

/* ---- compile-time helpers ------------------------------------------------------------------- */

static value b_len(elab *e, int self, const value *a, em3_loc loc) {
    (void)self;
    if (a[0].kind == V_LIST) return v_int(a[0].list.n);
    if (a[0].kind == V_STRING) return v_int((int64_t)strlen(a[0].s));
    elab_error(e, loc, "len needs a list, got %s", v_describe(e, &a[0]));
    return v_error();
}

static value b_number(elab *e, int self, const value *a, em3_loc loc) {
    double x;
    if (!as_number(e, &a[0], loc, table[self].name, &x)) return v_error();
    if (!strcmp(table[self].name, "float")) return v_float(x);
    if (!isfinite(x) || fabs(x) > 9e18) {
        elab_error(e, loc, "int(%g) is out of range", x);
        return v_error();
    }
    return v_int((int64_t)x);
}

static const builtin table[] = {
    {"exp", "x", 1, b_unary, EM3_OP_EXP},
    {"log", "x", 1, b_unary, EM3_OP_LOG},
    {"sqrt", "x", 1, b_unary, EM3_OP_SQRT},
    {"rsqrt", "x", 1, b_unary, EM3_OP_RSQRT},
    {"abs", "x", 1, b_unary, EM3_OP_ABS},
    {"tanh", "x", 1, b_unary, EM3_OP_TANH},
    {"sigmoid", "x", 1, b_unary, EM3_OP_SIGMOID},
    {"relu", "x", 1, b_unary, EM3_OP_RELU},
    {"gelu", "x", 1, b_unary, EM3_OP_GELU},
    {"softplus", "x", 1, b_unary, EM3_OP_SOFTPLUS},
    {"stop_gradient", "x", 1, b_unary, EM3_OP_STOP_GRADIENT},
    {"cast", "x dtype", 2, b_cast, EM3_OP_CAST},
    {"maximum", "a b", 2, b_binary, EM3_OP_MAXIMUM},
    {"minimum", "a b", 2, b_binary, EM3_OP_MINIMUM},
    {"where", "cond a b", 3, b_where, EM3_OP_WHERE},
    {"sum", "x axis keepdims", 1, b_reduce, EM3_OP_SUM},
    {"mean", "x axis keepdims", 1, b_reduce, EM3_OP_MEAN},
    {"max", "x axis keepdims", 1, b_reduce, EM3_OP_MAX},
    {"min", "a b", 1, b_min, EM3_OP_COUNT},
    {"logsumexp", "x axis keepdims", 1, b_axis_op, EM3_OP_LOGSUMEXP},
    {"softmax", "x axis", 1, b_axis_op, EM3_OP_SOFTMAX},
    {"log_softmax", "x axis", 1, b_axis_op, EM3_OP_LOG_SOFTMAX},
    {"layer_norm", "x gamma beta eps", 3, b_layer_norm, EM3_OP_LAYER_NORM},
    {"dropout", "x p", 2, b_dropout, EM3_OP_DROPOUT},
    {"reshape", "x shape", 2, b_reshape, EM3_OP_RESHAPE},
    {"broadcast", "x shape", 2, b_reshape, EM3_OP_BROADCAST},
    {"transpose", "x a b", 1, b_transpose, EM3_OP_TRANSPOSE},
    {"permute", "x perm", 2, b_permute, EM3_OP_TRANSPOSE},
    {"concat", "xs axis", 1, b_concat, EM3_OP_CONCAT},
    {"stack", "xs axis", 1, b_concat, EM3_OP_CONCAT},
    {"unsqueeze", "x axis", 2, b_unsqueeze, EM3_OP_RESHAPE},
    {"squeeze", "x axis", 2, b_squeeze, EM3_OP_RESHAPE},
    {"flatten", "x", 1, b_flatten, EM3_OP_RESHAPE},
    {"slice", "x axis start end", 4, b_slice, EM3_OP_SLICE},
    {"matmul", "a b ta tb", 2, b_matmul, EM3_OP_MATMUL},
    {"gather", "table ids", 2, b_gather, EM3_OP_GATHER},
    {"spmm", "graph x transpose", 2, b_spmm, EM3_OP_SPMM},
    {"bce_with_logits", "logit label reduction", 2, b_bce, EM3_OP_BCE_LOGITS},
    {"zeros", "shape", 1, b_fill, EM3_OP_CONST},
    {"ones", "shape", 1, b_fill, EM3_OP_CONST},
    {"full", "shape value", 2, b_fill, EM3_OP_CONST},
    {"normal", "std", 1, b_init, EM3_OP_COUNT},
    {"uniform", "a", 1, b_init, EM3_OP_COUNT},
    {"constant", "value", 1, b_init, EM3_OP_COUNT},
    {"xavier", "", 0, b_init, EM3_OP_COUNT},
    {"len", "x", 1, b_len, EM3_OP_COUNT},
    {"int", "x", 1, b_number, EM3_OP_COUNT},
    {"float", "x", 1, b_number, EM3_OP_COUNT},
};

enum { N_BUILTINS = sizeof table / sizeof *table };

/* Every name that is not a local one is looked up here, so the first character is compared
 * before the whole name (a strcmp per entry made a fuzzing build 3x slower). */
int builtin_find(const char *name) {
    for (int i = 0; i < N_BUILTINS; i++)
        if (table[i].name[0] == name[0] && !strcmp(table[i].name, name)) return i;
    return -1;
}

const char *builtin_name(int b) {
    EM3_ASSERT(b >= 0 && b < N_BUILTINS, "builtin %d", b);
    return table[b].name;
}

/* Parameter `k` of an entry, as a NUL-terminated copy in `buf`; false past the last. */
static bool param_name(const builtin *b, int k, char *buf, size_t n) {
    const char *p = b->params;
    for (int i = 0;; i++) {
        while (*p == ' ') p++;
        if (!*p) return false;
        const char *end = p;
        while (*end && *end != ' ') end++;
        if (i == k) {
            size_t l = (size_t)(end - p) < n - 1 ? (size_t)(end - p) : n - 1;
            memcpy(buf, p, l);
            buf[l] = 0;
            return true;
        }
        p = end;
    }
}

value builtin_call(elab *e, int bi, const value *pos, int npos, const ast *const *kw_names,
                   const value *kw, int nkw, em3_loc loc) {
    const builtin *b = &table[bi];
    value args[MAX_ARGS];
    int nparams = 0;
    char name[32];
    while (param_name(b, nparams, name, sizeof name)) nparams++;
    for (int i = 0; i < MAX_ARGS; i++) args[i] = (value){.kind = V_NONE};
    if (npos > nparams) {
        elab_error(e, loc, "%s takes at most %d argument%s, got %d", b->name, nparams,
                   nparams == 1 ? "" : "s", npos);
        return v_error();
    }
    for (int i = 0; i < npos; i++) args[i] = pos[i];
    for (int k = 0; k < nkw; k++) {
        int slot = -1;
        for (int i = 0; i < nparams && slot < 0; i++)
            if (param_name(b, i, name, sizeof name) && !strcmp(name, kw_names[k]->str)) slot = i;
        if (slot < 0) {
            elab_error(e, kw_names[k]->loc, "%s has no parameter named '%s' (it takes: %s)",
                       b->name, kw_names[k]->str, *b->params ? b->params : "nothing");
            return v_error();
        }
        if (slot < npos || given(&args[slot])) {
            elab_error(e, kw_names[k]->loc, "%s: '%s' is given twice", b->name, kw_names[k]->str);
            return v_error();
        }
        args[slot] = kw[k];
    }
    for (int i = 0; i < b->required; i++)
        if (!given(&args[i])) {
            param_name(b, i, name, sizeof name);
            elab_error(e, loc, "%s: missing argument '%s'", b->name, name);
            return v_error();
        }
    return b->fn(e, bi, args, loc);
}
