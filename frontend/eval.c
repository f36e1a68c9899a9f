/* frontend/eval.c — evaluation of expressions at compile time. Numbers, lists and modules are
 * computed here; anything involving a tensor becomes IR nodes of @forward through emit(),
 * whose shape rules (ir/shape.c) are the single source of shape errors, reported at the
 * expression that caused them. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "elab.h"

/* ---- emitting IR -------------------------------------------------------------------------- */

int emit(elab *e, em3_node *proto, const int *in, int n_in, em3_loc loc) {
    for (int i = 0; i < n_in; i++)
        if (in[i] < 0) return -1; /* an operand already failed: its error was reported */
    char err[512];
    if (!e->fn) {
        elab_error(e, loc, "tensor operations belong in a function, not in a constant");
        return -1;
    }
    proto->loc = loc;
    int id = em3_func_add(e->fn, proto, in, n_in, err, sizeof err);
    if (id < 0) elab_error(e, loc, "%s", err);
    return id;
}

int emit_const(elab *e, double v, em3_dtype dt, const int64_t *dims, int rank, em3_loc loc) {
    if (dt == EM3_DTYPE_I32 && v != floor(v)) {
        elab_error(e, loc, "the number %g cannot be combined with an i32 tensor (use cast)", v);
        return -1;
    }
    if (dt == EM3_DTYPE_I32 ? fabs(v) > INT32_MAX : fabs(v) > FLT_MAX) {
        elab_error(e, loc, "the number %g does not fit in %s", v, em3_dtype_name(dt));
        return -1;
    }
    em3_node p = em3_node_proto(EM3_OP_CONST, loc);
    em3_node_set_f(&p, "value", v);
    p.type = em3_type_make(dt, rank, dims);
    return emit(e, &p, NULL, 0, loc);
}

int emit_unary(elab *e, em3_op op, int x, em3_loc loc) {
    em3_node p = em3_node_proto(op, loc);
    return emit(e, &p, &x, 1, loc);
}

int emit_binary(elab *e, em3_op op, int a, int b, em3_loc loc) {
    em3_node p = em3_node_proto(op, loc);
    int in[2] = {a, b};
    return emit(e, &p, in, 2, loc);
}

int emit_reduce(elab *e, em3_op op, int x, const int64_t *axes, int n_axes, bool keep,
                em3_loc loc) {
    em3_node p = em3_node_proto(op, loc);
    em3_node_set_list(&p, "axes", axes, n_axes);
    em3_node_set_i(&p, "keepdims", keep);
    return emit(e, &p, &x, 1, loc);
}

int emit_reshape(elab *e, int x, const int64_t *dims, int rank, em3_loc loc) {
    if (x < 0) return -1;
    const em3_type *t = &em3_func_node(e->fn, x)->type;
    em3_type want = em3_type_make(t->dtype, rank, dims);
    if (em3_type_eq(t, &want)) return x;
    em3_node p = em3_node_proto(EM3_OP_RESHAPE, loc);
    em3_node_set_list(&p, "shape", dims, rank);
    return emit(e, &p, &x, 1, loc);
}

int norm_axis(elab *e, int64_t axis, int rank, em3_loc loc) {
    int64_t a = axis < 0 ? axis + rank : axis;
    if (a < 0 || a >= rank) {
        elab_error(e, loc, "axis %lld is out of range for a tensor of rank %d", (long long)axis,
                   rank);
        return -1;
    }
    return (int)a;
}

/* ---- conversions -------------------------------------------------------------------------- */

static int param_node(elab *e, const value *v, em3_loc loc) {
    int g = (int)v->i;
    if (e->cap_nodes < e->mod->n_global) {
        int old = e->cap_nodes, cap = e->mod->n_global * 2;
        e->param_node = em3_xrealloc(e->param_node, sizeof(int) * (size_t)cap);
        e->frozen_node = em3_xrealloc(e->frozen_node, sizeof(int) * (size_t)cap);
        for (int i = old; i < cap; i++) e->param_node[i] = e->frozen_node[i] = -1;
        e->cap_nodes = cap;
    }
    if (e->param_node[g] < 0) {
        em3_node p = em3_node_proto(EM3_OP_PARAM, loc);
        em3_node_set_s(&p, "name", e->mod->global[g].name);
        e->param_node[g] = emit(e, &p, NULL, 0, loc);
    }
    if (!v->frozen) return e->param_node[g];
    if (e->frozen_node[g] < 0) e->frozen_node[g] = emit_unary(e, EM3_OP_STOP_GRADIENT, e->param_node[g], loc);
    return e->frozen_node[g];
}

int as_tensor(elab *e, const value *v, int like, em3_loc loc) {
    switch (v->kind) {
    case V_ERROR: return -1;
    case V_TENSOR: return (int)v->i;
    case V_GLOBAL: return param_node(e, v, loc);
    case V_BOOL:
    case V_INT:
    case V_FLOAT: {
        em3_dtype dt = like >= 0 ? em3_func_node(e->fn, like)->type.dtype
                                 : v->kind == V_FLOAT ? EM3_DTYPE_F32 : EM3_DTYPE_I32;
        return emit_const(e, v->kind == V_FLOAT ? v->f : (double)v->i, dt, NULL, 0, loc);
    }
    default:
        elab_error(e, loc, "expected a tensor, got %s", v_describe(e, v));
        return -1;
    }
}

bool as_int(elab *e, const value *v, em3_loc loc, const char *what, int64_t *out) {
    *out = 0; /* defined on failure too: GCC -O3 cannot see that elab_error() is false */
    if (v->kind == V_ERROR) return false;
    if (v->kind == V_INT || v->kind == V_BOOL) {
        *out = v->i;
        return true;
    }
    if (v->kind == V_FLOAT && v->f == floor(v->f) && fabs(v->f) < 9e15) {
        *out = (int64_t)v->f;
        return true;
    }
    return elab_error(e, loc, "%s must be an integer known at compile time, got %s", what,
                      v_describe(e, v));
}

bool as_number(elab *e, const value *v, em3_loc loc, const char *what, double *out) {
    if (v->kind == V_ERROR) return false;
    if (v->kind == V_INT || v->kind == V_BOOL) {
        *out = (double)v->i;
        return true;
    }
    if (v->kind == V_FLOAT) {
        *out = v->f;
        return true;
    }
    return elab_error(e, loc, "%s must be a number known at compile time, got %s", what,
                      v_describe(e, v));
}

bool as_bool(elab *e, const value *v, em3_loc loc, const char *what, bool *out) {
    if (v->kind == V_ERROR) return false;
    if (v->kind == V_BOOL || v->kind == V_INT) {
        *out = v->i != 0;
        return true;
    }
    if (v->kind == V_NONE) {
        *out = false;
        return true;
    }
    return elab_error(e, loc, "%s must be a bool known at compile time, got %s", what,
                      v_describe(e, v));
}

/* ---- types -------------------------------------------------------------------------------- */

static bool type_dtype(elab *e, const ast *t, em3_dtype *dt) {
    if (em3_dtype_parse(t->str, dt)) return true;
    return elab_error(e, t->loc, "unknown element type '%s' (f32 or i32)", t->str);
}

static bool eval_dim(elab *e, scope *s, const ast *d, int64_t *out) {
    value v = eval(e, s, d);
    if (v.kind == V_BATCH) {
        *out = -v.i;
        return true;
    }
    if (!as_int(e, &v, d->loc, "a dimension", out)) return false;
    if (*out <= 0 || *out > ((int64_t)1 << 40))
        return elab_error(e, d->loc, "a dimension must be positive, not %lld", (long long)*out);
    return true;
}

bool eval_type(elab *e, scope *s, const ast *t, em3_type *out) {
    em3_dtype dt;
    if (!type_dtype(e, t, &dt)) return false;
    int rank = ast_list_length(t->list);
    if (rank > EM3_MAX_RANK)
        return elab_error(e, t->loc, "tensors have at most %d dimensions", EM3_MAX_RANK);
    int64_t dims[EM3_MAX_RANK];
    int i = 0;
    for (const ast *d = t->list; d; d = d->next, i++)
        if (!eval_dim(e, s, d, &dims[i])) return false;
    if (!check_numel(e, dims, rank, t->loc)) return false;
    *out = em3_type_make(dt, rank, dims);
    return true;
}

bool check_numel(elab *e, const int64_t *dims, int rank, em3_loc loc) {
    int64_t n = 1;
    for (int i = 0; i < rank; i++) {
        int64_t d = dims[i] < 0 ? 1 : dims[i]; /* k·B: the batch is not known here */
        if (d > EM3_ELAB_MAX_NUMEL / n)
            return elab_error(e, loc, "a tensor of more than 2^40 elements is too large");
        n *= d;
    }
    return true;
}

bool match_type(elab *e, scope *s, const ast *t, const em3_type *actual, em3_loc loc,
                const char *what) {
    char b[EM3_TYPE_STR_MAX];
    em3_dtype dt;
    if (!type_dtype(e, t, &dt)) return false;
    int rank = ast_list_length(t->list);
    if (dt != actual->dtype || rank != actual->rank)
        return elab_error(e, loc, "%s must be %s[%d dims], got %s", what, em3_dtype_name(dt), rank,
                          em3_type_str(actual, b, sizeof b));
    int i = 0;
    for (const ast *d = t->list; d; d = d->next, i++) {
        int64_t a = actual->dim[i];
        /* B stays the batch dimension: a pattern f32[B, d] asks for it, it binds nothing */
        if (d->kind == AST_NAME && !scope_lookup(s, d->str) && builtin_find(d->str) < 0 &&
            strcmp(d->str, "B")) {
            scope_bind(e, s, d->str, a < 0 ? (value){.kind = V_BATCH, .i = -a} : v_int(a), d->loc);
            continue;
        }
        int64_t want;
        if (!eval_dim(e, s, d, &want)) return false;
        char wd[32];
        if (want != a)
            return elab_error(e, loc, "%s: dimension %d must be %s, got %s", what, i,
                              em3_dim_str(want, wd, sizeof wd), em3_type_str(actual, b, sizeof b));
    }
    return true;
}

/* ---- operators ---------------------------------------------------------------------------- */

static bool is_number(const value *v) {
    return v->kind == V_INT || v->kind == V_FLOAT || v->kind == V_BOOL;
}

static bool is_tensor(const value *v) { return v->kind == V_TENSOR || v->kind == V_GLOBAL; }

/* Compile-time arithmetic reports what a C compiler would not: 64-bit overflow and results
 * that are not finite numbers. */
static value fold_float(elab *e, ast_op op, double r, em3_loc loc) {
    if (isfinite(r)) return v_float(r);
    elab_error(e, loc, "the result of '%s' is not a finite number", ast_op_text(op));
    return v_error();
}

/* `r` is read after `overflow` was computed into it (hence a pointer, not a value). */
static value fold_int(elab *e, ast_op op, bool overflow, const int64_t *r, em3_loc loc) {
    if (!overflow) return v_int(*r);
    elab_error(e, loc, "the result of '%s' does not fit in a 64-bit integer", ast_op_text(op));
    return v_error();
}

static value fold(elab *e, ast_op op, const value *a, const value *b, em3_loc loc) {
    bool ints = a->kind != V_FLOAT && b->kind != V_FLOAT;
    double x = a->kind == V_FLOAT ? a->f : (double)a->i, y = b->kind == V_FLOAT ? b->f : (double)b->i;
    int64_t i = a->i, j = b->i, r;
    switch (op) {
    case AST_OP_ADD:
        return ints ? fold_int(e, op, __builtin_add_overflow(i, j, &r), &r, loc)
                    : fold_float(e, op, x + y, loc);
    case AST_OP_SUB:
        return ints ? fold_int(e, op, __builtin_sub_overflow(i, j, &r), &r, loc)
                    : fold_float(e, op, x - y, loc);
    case AST_OP_MUL:
        return ints ? fold_int(e, op, __builtin_mul_overflow(i, j, &r), &r, loc)
                    : fold_float(e, op, x * y, loc);
    case AST_OP_DIV:
        if (y == 0) break;
        if (ints && j == -1) return fold_int(e, op, __builtin_sub_overflow(0, i, &r), &r, loc);
        /* an exact division of integers stays an integer, so d / heads can be a dimension */
        return ints && i % j == 0 ? v_int(i / j) : fold_float(e, op, x / y, loc);
    case AST_OP_FLOORDIV:
        if (y == 0) break;
        if (ints && j == -1) return fold_int(e, op, __builtin_sub_overflow(0, i, &r), &r, loc);
        if (ints) return v_int(i / j - ((i % j != 0) && ((i < 0) != (j < 0))));
        return fold_float(e, op, floor(x / y), loc);
    case AST_OP_MOD:
        if (y == 0) break;
        if (ints && j == -1) return v_int(0); /* INT64_MIN % -1 traps in C */
        if (ints) return v_int(i % j != 0 && (i % j < 0) != (j < 0) ? i % j + j : i % j);
        return fold_float(e, op, x - y * floor(x / y), loc);
    case AST_OP_EQ: return v_bool(x == y);
    case AST_OP_NE: return v_bool(x != y);
    case AST_OP_LT: return v_bool(x < y);
    case AST_OP_LE: return v_bool(x <= y);
    case AST_OP_GT: return v_bool(x > y);
    case AST_OP_GE: return v_bool(x >= y);
    case AST_OP_MATMUL:
        elab_error(e, loc, "'@' multiplies tensors, not numbers");
        return v_error();
    default: EM3_UNREACHABLE("operator %d folded", (int)op);
    }
    elab_error(e, loc, "division by zero");
    return v_error();
}

static value binop(elab *e, ast_op op, const value *a, const value *b, em3_loc loc) {
    if (a->kind == V_ERROR || b->kind == V_ERROR) return v_error();
    if (is_number(a) && is_number(b)) return fold(e, op, a, b, loc);
    /* B * k: a static multiple of the batch, e.g. to view [B, 50, d] as [B*50, d] */
    if (op == AST_OP_MUL && ((a->kind == V_BATCH && b->kind == V_INT) ||
                             (a->kind == V_INT && b->kind == V_BATCH))) {
        const value *bv = a->kind == V_BATCH ? a : b, *k = a->kind == V_BATCH ? b : a;
        if (k->i <= 0 || k->i > ((int64_t)1 << 30) / bv->i) { /* the product too: B*k*k... */
            elab_error(e, loc, "B can only be multiplied by a positive integer, and by at most "
                               "2^30 in all");
            return v_error();
        }
        return (value){.kind = V_BATCH, .i = bv->i * k->i};
    }
    if (op == AST_OP_ADD && a->kind == V_LIST && b->kind == V_LIST) {
        value l = {.kind = V_LIST};
        l.list.n = a->list.n + b->list.n;
        /* copying is work: doubling a list in a loop must not outrun the step budget */
        if (l.list.n > EM3_ELAB_MAX_LIST) {
            elab_error(e, loc, "a list of %d elements is too long (at most %d)", l.list.n,
                       EM3_ELAB_MAX_LIST);
            return v_error();
        }
        if (!elab_charge(e, l.list.n, loc)) return v_error();
        l.list.items = em3_arena_alloc(e->arena, sizeof(value) * (size_t)(l.list.n + 1));
        if (a->list.n) memcpy(l.list.items, a->list.items, sizeof(value) * (size_t)a->list.n);
        if (b->list.n) memcpy(l.list.items + a->list.n, b->list.items, sizeof(value) * (size_t)b->list.n);
        return l;
    }
    if (op == AST_OP_EQ || op == AST_OP_NE) {
        bool same = false, known = true;
        if (a->kind == V_NONE || b->kind == V_NONE)
            same = a->kind == b->kind;
        else if (a->kind == V_STRING && b->kind == V_STRING)
            same = !strcmp(a->s, b->s);
        else if (a->kind == V_BATCH || b->kind == V_BATCH)
            same = a->kind == b->kind && a->i == b->i;
        else if (a->kind == V_DTYPE && b->kind == V_DTYPE)
            same = a->i == b->i;
        else
            known = false;
        if (known) return v_bool(op == AST_OP_EQ ? same : !same);
    }
    if (!is_tensor(a) && !is_tensor(b)) {
        elab_error(e, loc, "'%s' is not defined for %s and %s", ast_op_text(op), v_describe(e, a),
                   v_describe(e, b));
        return v_error();
    }
    static const em3_op ops[] = {
        [AST_OP_ADD] = EM3_OP_ADD, [AST_OP_SUB] = EM3_OP_SUB, [AST_OP_MUL] = EM3_OP_MUL,
        [AST_OP_DIV] = EM3_OP_DIV, [AST_OP_MATMUL] = EM3_OP_MATMUL, [AST_OP_EQ] = EM3_OP_EQ,
        [AST_OP_NE] = EM3_OP_NE,   [AST_OP_LT] = EM3_OP_LT,         [AST_OP_LE] = EM3_OP_LE,
        [AST_OP_GT] = EM3_OP_GT,   [AST_OP_GE] = EM3_OP_GE,
    };
    if (op == AST_OP_FLOORDIV || op == AST_OP_MOD || op == AST_OP_AND || op == AST_OP_OR) {
        elab_error(e, loc, "'%s' is not defined for tensors%s", ast_op_text(op),
                   op == AST_OP_AND ? " (multiply masks instead)"
                   : op == AST_OP_OR ? " (use maximum of masks instead)" : "");
        return v_error();
    }
    if (op == AST_OP_MATMUL && (!is_tensor(a) || !is_tensor(b))) {
        elab_error(e, loc, "'@' multiplies two tensors, got %s and %s", v_describe(e, a),
                   v_describe(e, b));
        return v_error();
    }
    /* a number takes the element type of the tensor it meets */
    int ta = is_tensor(a) ? as_tensor(e, a, -1, loc) : -1;
    int tb = is_tensor(b) ? as_tensor(e, b, -1, loc) : -1;
    if (ta < 0 && is_tensor(a)) return v_error();
    if (tb < 0 && is_tensor(b)) return v_error();
    if (ta < 0) ta = as_tensor(e, a, tb, loc);
    if (tb < 0) tb = as_tensor(e, b, ta, loc);
    return v_tensor(emit_binary(e, ops[op], ta, tb, loc));
}

static value unop(elab *e, ast_op op, const value *a, em3_loc loc) {
    if (a->kind == V_ERROR) return v_error();
    if (op == AST_OP_NOT) {
        bool b = false;
        if (is_tensor(a)) {
            elab_error(e, loc, "'not' is not defined for tensors (use 1 - mask)");
            return v_error();
        }
        return as_bool(e, a, loc, "the operand of 'not'", &b) ? v_bool(!b) : v_error();
    }
    int64_t r;
    if (a->kind == V_INT || a->kind == V_BOOL)
        return fold_int(e, AST_OP_NEG, __builtin_sub_overflow(0, a->i, &r), &r, loc);
    if (a->kind == V_FLOAT) return v_float(-a->f);
    if (is_tensor(a)) return v_tensor(emit_unary(e, EM3_OP_NEG, as_tensor(e, a, -1, loc), loc));
    elab_error(e, loc, "'-' is not defined for %s", v_describe(e, a));
    return v_error();
}

/* ---- indexing ----------------------------------------------------------------------------- */

static bool slice_bound(elab *e, scope *s, const ast *x, int64_t dflt, int64_t dim, int64_t *out) {
    if (!x) {
        *out = dflt;
        return true;
    }
    value v = eval(e, s, x);
    if (!as_int(e, &v, x->loc, "a slice bound", out)) return false;
    if (*out < 0) *out += dim;
    if (*out < 0) *out = 0;
    if (*out > dim) *out = dim;
    return true;
}

static value index_list(elab *e, scope *s, const value *l, const ast *x) {
    const ast *it = x->list;
    if (it->next) {
        elab_error(e, x->loc, "a list takes one index");
        return v_error();
    }
    if (it->kind == AST_SLICE) {
        int64_t lo, hi;
        if (!slice_bound(e, s, it->a, 0, l->list.n, &lo) ||
            !slice_bound(e, s, it->b, l->list.n, l->list.n, &hi))
            return v_error();
        value r = {.kind = V_LIST};
        r.list.n = hi > lo ? (int)(hi - lo) : 0;
        r.list.items = l->list.items + lo;
        return r;
    }
    value iv = eval(e, s, it);
    int64_t i;
    if (!as_int(e, &iv, it->loc, "a list index", &i)) return v_error();
    if (i < 0) i += l->list.n;
    if (i < 0 || i >= l->list.n) {
        elab_error(e, it->loc, "index %lld is out of range for a list of %d", (long long)i,
                   l->list.n);
        return v_error();
    }
    return l->list.items[i];
}

/* x[i, a:b, ...]: slices narrow axes, integers select (and drop) them; one tensor index
 * gathers rows (table[ids]). */
static value index_tensor(elab *e, scope *s, const value *obj, const ast *x) {
    int t = as_tensor(e, obj, -1, x->loc);
    if (t < 0) return v_error();
    const ast *first = x->list;
    if (first->kind != AST_SLICE && !first->next) {
        value iv = eval(e, s, first);
        if (iv.kind == V_ERROR) return iv;
        if (is_tensor(&iv)) {
            em3_node p = em3_node_proto(EM3_OP_GATHER, x->loc);
            int in[2] = {t, as_tensor(e, &iv, -1, first->loc)};
            return v_tensor(emit(e, &p, in, 2, x->loc));
        }
    }
    em3_type ty = em3_func_node(e->fn, t)->type;
    int n = ast_list_length(x->list);
    if (n > ty.rank) {
        elab_error(e, x->loc, "%d %s for a tensor of rank %d", n, n == 1 ? "index" : "indices",
                   ty.rank);
        return v_error();
    }
    bool drop[EM3_MAX_RANK] = {0};
    int axis = 0;
    for (const ast *it = x->list; it; it = it->next, axis++) {
        int64_t dim = ty.dim[axis], lo, hi;
        if (it->kind == AST_SLICE) {
            if (!it->a && !it->b) continue;
            if (em3_dim_has_batch(dim)) {
                elab_error(e, it->loc, "the batch dimension cannot be sliced");
                return v_error();
            }
            if (!slice_bound(e, s, it->a, 0, dim, &lo) || !slice_bound(e, s, it->b, dim, dim, &hi))
                return v_error();
        } else {
            value iv = eval(e, s, it);
            if (!as_int(e, &iv, it->loc, "a tensor index", &lo)) return v_error();
            if (em3_dim_has_batch(dim)) {
                elab_error(e, it->loc, "the batch dimension cannot be indexed");
                return v_error();
            }
            if (lo < -dim || lo >= dim) {
                elab_error(e, it->loc, "index %lld is out of range for dimension %d of size %lld",
                           (long long)lo, axis, (long long)dim);
                return v_error();
            }
            if (lo < 0) lo += dim;
            hi = lo + 1;
            drop[axis] = true;
        }
        if (lo == 0 && hi == dim) continue;
        em3_node p = em3_node_proto(EM3_OP_SLICE, x->loc);
        em3_node_set_i(&p, "axis", axis);
        em3_node_set_i(&p, "start", lo);
        em3_node_set_i(&p, "end", hi);
        t = emit(e, &p, &t, 1, x->loc);
        if (t < 0) return v_error();
    }
    int64_t dims[EM3_MAX_RANK];
    int r = 0;
    for (int i = 0; i < ty.rank; i++)
        if (!drop[i]) dims[r++] = em3_func_node(e->fn, t)->type.dim[i];
    return v_tensor(emit_reshape(e, t, dims, r, x->loc));
}

/* ---- attributes, calls, lists ------------------------------------------------------------- */

static value attr_value(elab *e, const value *obj, const ast *x) {
    if (obj->kind == V_ERROR) return *obj;
    if (obj->kind == V_INSTANCE) {
        for (binding *b = obj->inst->env.head; b; b = b->next)
            if (!strcmp(b->name, x->str)) return b->v;
        elab_error(e, x->loc, "%s has nothing named '%s'", v_describe(e, obj), x->str);
        return v_error();
    }
    if (is_tensor(obj) && (!strcmp(x->str, "shape") || !strcmp(x->str, "rank"))) {
        int t = as_tensor(e, obj, -1, x->loc);
        if (t < 0) return v_error();
        em3_type ty = em3_func_node(e->fn, t)->type;
        if (!strcmp(x->str, "rank")) return v_int(ty.rank);
        value l = {.kind = V_LIST};
        l.list.n = ty.rank;
        l.list.items = em3_arena_alloc(e->arena, sizeof(value) * (size_t)(ty.rank + 1));
        for (int i = 0; i < ty.rank; i++)
            l.list.items[i] = ty.dim[i] < 0 ? (value){.kind = V_BATCH, .i = -ty.dim[i]} : v_int(ty.dim[i]);
        return l;
    }
    elab_error(e, x->loc, "%s has no attribute '%s'%s", v_describe(e, obj), x->str,
               is_tensor(obj) ? " (tensors have .shape and .rank)" : "");
    return v_error();
}

value call_value(elab *e, scope *s, const value *callee, const ast *call) {
    int n = ast_list_length(call->list), npos = 0, nkw = 0;
    value *pos = em3_arena_alloc(e->arena, sizeof(value) * (size_t)(n + 1));
    value *kw = em3_arena_alloc(e->arena, sizeof(value) * (size_t)(n + 1));
    const ast **kwn = em3_arena_alloc(e->arena, sizeof(ast *) * (size_t)(n + 1));
    bool bad = callee->kind == V_ERROR;
    for (const ast *a = call->list; a; a = a->next) {
        if (a->kind == AST_KWARG) {
            kwn[nkw] = a;
            kw[nkw] = eval(e, s, a->a);
            bad |= kw[nkw++].kind == V_ERROR;
        } else {
            if (nkw) {
                elab_error(e, a->loc, "a positional argument cannot follow a named one");
                return v_error();
            }
            pos[npos] = eval(e, s, a);
            bad |= pos[npos++].kind == V_ERROR;
        }
    }
    if (bad || e->abort) return v_error();
    switch (callee->kind) {
    case V_BUILTIN: return builtin_call(e, (int)callee->i, pos, npos, kwn, kw, nkw, call->loc);
    case V_MODULE: return instantiate(e, callee->decl, pos, npos, kwn, kw, nkw, call->loc);
    case V_FN: return call_fn(e, callee->decl, callee->env, pos, npos, kwn, kw, nkw, call->loc);
    case V_INSTANCE: {
        for (binding *b = callee->inst->env.head; b; b = b->next)
            if (!strcmp(b->name, "forward") && b->v.kind == V_FN)
                return call_fn(e, b->v.decl, b->v.env, pos, npos, kwn, kw, nkw, call->loc);
        elab_error(e, call->loc, "%s has no 'fn forward' to call", v_describe(e, callee));
        return v_error();
    }
    default:
        elab_error(e, call->loc, "%s cannot be called", v_describe(e, callee));
        return v_error();
    }
}

/* Module-level lists and repeats name their instances name.0, name.1, ... and share
 * element-wise with a shared list. */
static void element_hint(elab *e, const char *hint, value share, int i) {
    if (!hint) return;
    e->name_hint = em3_arena_printf(e->arena, "%s.%d", hint, i);
    e->name_count = 0;
    e->share_src = share.kind == V_LIST && i < share.list.n ? share.list.items[i]
                                                             : (value){.kind = V_NONE};
}

static value eval_list(elab *e, scope *s, const ast *x) {
    int n = ast_list_length(x->list);
    value l = {.kind = V_LIST};
    l.list.items = em3_arena_alloc(e->arena, sizeof(value) * (size_t)(n + 1));
    const char *hint = e->name_hint;
    int count = e->name_count;
    value share = e->share_src;
    for (const ast *it = x->list; it; it = it->next) {
        element_hint(e, hint, share, l.list.n);
        l.list.items[l.list.n++] = eval(e, s, it);
    }
    e->name_hint = hint;
    e->name_count = count;
    e->share_src = share;
    return l;
}

static value eval_repeat(elab *e, scope *s, const ast *x) {
    value c = eval(e, s, x->a);
    int64_t n;
    if (!as_int(e, &c, x->a->loc, "the count of repeat", &n)) return v_error();
    if (n < 0 || n > EM3_ELAB_MAX_LIST) {
        elab_error(e, x->a->loc, "repeat count %lld is outside 0 .. %d", (long long)n,
                   EM3_ELAB_MAX_LIST);
        return v_error();
    }
    value l = {.kind = V_LIST};
    l.list.items = em3_arena_alloc(e->arena, sizeof(value) * (size_t)(n + 1));
    scope *inner = em3_arena_alloc(e->arena, sizeof *inner);
    inner->parent = s;
    const char *hint = e->name_hint;
    int count = e->name_count;
    value share = e->share_src;
    for (int i = 0; i < n && !e->abort; i++) {
        if (x->str) scope_bind(e, inner, x->str, v_int(i), x->loc);
        element_hint(e, hint, share, i);
        l.list.items[l.list.n++] = eval(e, inner, x->b);
    }
    e->name_hint = hint;
    e->name_count = count;
    e->share_src = share;
    return l;
}

static value eval_node(elab *e, scope *s, const ast *x);

/* Expressions nest without a bound in the tree (1 + 1 + ... is a left-leaning chain as deep
 * as it is long), so the recursion is bounded here rather than by the C stack. */
value eval(elab *e, scope *s, const ast *x) {
    if (!elab_tick(e, x->loc)) return v_error();
    if (e->eval_depth >= EM3_ELAB_MAX_EXPR_DEPTH) {
        e->abort = true;
        elab_error(e, x->loc, "the expression is nested more than %d deep",
                   EM3_ELAB_MAX_EXPR_DEPTH);
        return v_error();
    }
    e->eval_depth++;
    value v = eval_node(e, s, x);
    e->eval_depth--;
    return v;
}

static value eval_node(elab *e, scope *s, const ast *x) {
    switch (x->kind) {
    case AST_INT: return v_int(x->ival);
    case AST_FLOAT: return v_float(x->fval);
    case AST_BOOL: return v_bool(x->ival != 0);
    case AST_STRING: return (value){.kind = V_STRING, .s = x->str};
    case AST_NONE: return (value){.kind = V_NONE};
    case AST_NAME: {
        binding *b = scope_lookup(s, x->str);
        if (b) return b->v;
        int bi = builtin_find(x->str);
        if (bi >= 0) return (value){.kind = V_BUILTIN, .i = bi};
        if (!strcmp(x->str, "B")) return (value){.kind = V_BATCH, .i = 1};
        em3_dtype dt;
        if (em3_dtype_parse(x->str, &dt)) return (value){.kind = V_DTYPE, .i = dt};
        elab_error(e, x->loc, "unknown name '%s'", x->str);
        return v_error();
    }
    case AST_LIST: return eval_list(e, s, x);
    case AST_BINARY: {
        value a = eval(e, s, x->a);
        if ((x->op == AST_OP_AND || x->op == AST_OP_OR) && !is_tensor(&a)) {
            bool ab = false;
            if (!as_bool(e, &a, x->a->loc, "an operand of 'and'/'or'", &ab)) return v_error();
            if (ab == (x->op == AST_OP_OR)) return v_bool(ab); /* short circuit */
            value b = eval(e, s, x->b);
            bool bb = false;
            return as_bool(e, &b, x->b->loc, "an operand of 'and'/'or'", &bb) ? v_bool(bb) : v_error();
        }
        value b = eval(e, s, x->b);
        return binop(e, (ast_op)x->op, &a, &b, x->loc);
    }
    case AST_UNARY: {
        value a = eval(e, s, x->a);
        return unop(e, (ast_op)x->op, &a, x->loc);
    }
    case AST_CALL: {
        value callee = eval(e, s, x->a);
        return call_value(e, s, &callee, x);
    }
    case AST_INDEX: {
        value obj = eval(e, s, x->a);
        if (obj.kind == V_ERROR) return obj;
        if (obj.kind == V_LIST) return index_list(e, s, &obj, x);
        if (is_tensor(&obj)) return index_tensor(e, s, &obj, x);
        elab_error(e, x->loc, "%s cannot be indexed", v_describe(e, &obj));
        return v_error();
    }
    case AST_ATTR: {
        value obj = eval(e, s, x->a);
        return attr_value(e, &obj, x);
    }
    case AST_REPEAT: return eval_repeat(e, s, x);
    case AST_SLICE:
        elab_error(e, x->loc, "a slice a:b is only valid inside [ ]");
        return v_error();
    default: EM3_UNREACHABLE("expression kind %d", (int)x->kind);
    }
}
