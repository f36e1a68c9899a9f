/* ir/shape.c — the shape rules named in ops.def. Each computes a node's result type from its
 * operand types and attributes, or explains in `err` why the operands do not fit; the frontend
 * reports that message at the DSL expression, the IR parser at the IR line. */
#include <stdarg.h>
#include <string.h>

#include "ir.h"
#include "program.h"

static bool fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return false;
}

#define TS(t, buf) em3_type_str((t), (buf), sizeof(buf))

static bool dims_ok(const em3_type *t, char *err, size_t n) {
    for (int i = 0; i < t->rank; i++)
        if (t->dim[i] == 0)
            return fail(err, n, "dimension %d of a tensor must be positive, not 0", i);
    return true;
}

bool shape_leaf(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out, char *err,
                size_t el) {
    (void)f, (void)in;
    *out = n->type;
    return dims_ok(out, err, el);
}

bool shape_const(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                 char *err, size_t el) {
    return shape_leaf(f, n, in, out, err, el);
}

bool shape_global(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                  char *err, size_t el) {
    (void)in;
    const char *name = n->attr[0].s;
    int g = name ? em3_module_find_global(f->mod, name) : -1;
    if (g < 0) return fail(err, el, "no global named @%s", name ? name : "");
    if (f->mod->global[g].kind == EM3_GLOBAL_GRAPH)
        return fail(err, el, "@%s is a graph: it is never read densely, only multiplied (spmm)", name);
    *out = f->mod->global[g].type;
    return true;
}

static bool is_float(const em3_type *t) { return t->dtype == EM3_DTYPE_F32; }

bool shape_unary_num(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                     char *err, size_t el) {
    (void)f, (void)n, (void)err, (void)el;
    *out = in[0];
    return true;
}

bool shape_unary_float(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                       char *err, size_t el) {
    char b[EM3_TYPE_STR_MAX];
    if (!is_float(&in[0]))
        return fail(err, el, "%s needs a float tensor, got %s (use cast)", em3_op_name(n->op),
                    TS(&in[0], b));
    return shape_unary_num(f, n, in, out, err, el);
}

/* dropout(x) and dropout_train(x, step, row0): x's type; step and row0 f32 scalars; 0 <= p < 1 */
bool shape_dropout(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                   char *err, size_t el) {
    char b[EM3_TYPE_STR_MAX];
    double p = n->attr[0].f;
    if (!(p >= 0 && p < 1)) return fail(err, el, "%s needs 0 <= p < 1, got p = %g", em3_op_name(n->op), p);
    for (int i = 1; i < n->n_in; i++)
        if (in[i].rank != 0 || !is_float(&in[i]))
            return fail(err, el, "dropout_train's %s must be an f32 scalar, got %s", i == 1 ? "step" : "row0",
                        TS(&in[i], b));
    return shape_unary_float(f, n, in, out, err, el);
}

bool shape_cast(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out, char *err,
                size_t el) {
    (void)f;
    if (n->attr[0].i < 0 || n->attr[0].i >= EM3_DTYPE_COUNT)
        return fail(err, el, "cast to an unknown dtype");
    *out = in[0];
    out->dtype = (em3_dtype)n->attr[0].i;
    return true;
}

bool em3_broadcast_shapes(const em3_type *a, const em3_type *b, em3_type *out) {
    int r = a->rank > b->rank ? a->rank : b->rank;
    em3_type t = {.dtype = a->dtype, .rank = r};
    for (int i = 0; i < r; i++) {
        int ia = a->rank - r + i, ib = b->rank - r + i;
        int64_t da = ia >= 0 ? a->dim[ia] : 1, db = ib >= 0 ? b->dim[ib] : 1;
        if (da == db || db == 1)
            t.dim[i] = da;
        else if (da == 1)
            t.dim[i] = db;
        else
            return false;
    }
    *out = t;
    return true;
}

static bool binary(const em3_node *n, const em3_type *in, em3_type *out, char *err, size_t el) {
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    if (in[0].dtype != in[1].dtype)
        return fail(err, el, "%s of %s and %s: element types differ (use cast)",
                    em3_op_name(n->op), TS(&in[0], b0), TS(&in[1], b1));
    if (!em3_broadcast_shapes(&in[0], &in[1], out))
        return fail(err, el, "cannot %s %s and %s: shapes do not broadcast", em3_op_name(n->op),
                    TS(&in[0], b0), TS(&in[1], b1));
    return true;
}

bool shape_binary_num(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                      char *err, size_t el) {
    (void)f;
    return binary(n, in, out, err, el);
}

bool shape_binary_float(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                        char *err, size_t el) {
    char b[EM3_TYPE_STR_MAX];
    (void)f;
    for (int i = 0; i < 2; i++)
        if (!is_float(&in[i]))
            return fail(err, el, "%s needs float operands, got %s (use cast)",
                        em3_op_name(n->op), TS(&in[i], b));
    return binary(n, in, out, err, el);
}

bool shape_compare(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                   char *err, size_t el) {
    (void)f;
    if (!binary(n, in, out, err, el)) return false;
    out->dtype = EM3_DTYPE_F32;
    return true;
}

bool shape_where(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                 char *err, size_t el) {
    (void)f, (void)n;
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX], b2[EM3_TYPE_STR_MAX];
    if (in[1].dtype != in[2].dtype)
        return fail(err, el, "where: the two branches have different element types (%s, %s)",
                    TS(&in[1], b1), TS(&in[2], b2));
    em3_type ab;
    if (!em3_broadcast_shapes(&in[1], &in[2], &ab) || !em3_broadcast_shapes(&in[0], &ab, out))
        return fail(err, el, "where: shapes %s, %s and %s do not broadcast", TS(&in[0], b0),
                    TS(&in[1], b1), TS(&in[2], b2));
    out->dtype = in[1].dtype;
    return true;
}

static bool axis_ok(const em3_type *t, int64_t axis, const char *what, char *err, size_t el) {
    char b[EM3_TYPE_STR_MAX];
    if (axis < 0 || axis >= t->rank)
        return fail(err, el, "%s axis %lld is out of range for %s", what, (long long)axis,
                    TS(t, b));
    return true;
}

static bool reduce_to(const em3_type *in, const bool *drop, bool keep, em3_type *out) {
    em3_type t = {.dtype = in->dtype};
    for (int i = 0; i < in->rank; i++) {
        if (!drop[i])
            t.dim[t.rank++] = in->dim[i];
        else if (keep)
            t.dim[t.rank++] = 1;
    }
    *out = t;
    return true;
}

bool shape_reduce(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                  char *err, size_t el) {
    (void)f;
    bool drop[EM3_MAX_RANK] = {0};
    const em3_attrval *axes = &n->attr[0];
    if (axes->n < 1) return fail(err, el, "%s needs at least one axis", em3_op_name(n->op));
    for (int i = 0; i < axes->n; i++) {
        if (!axis_ok(&in[0], axes->list[i], em3_op_name(n->op), err, el)) return false;
        if (drop[axes->list[i]])
            return fail(err, el, "%s: axis %lld given twice", em3_op_name(n->op),
                        (long long)axes->list[i]);
        drop[axes->list[i]] = true;
    }
    if (n->op == EM3_OP_MEAN && !is_float(&in[0]))
        return fail(err, el, "mean needs a float tensor (use cast)");
    return reduce_to(&in[0], drop, n->attr[1].i != 0, out);
}

bool shape_reduce_axis(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                       char *err, size_t el) {
    (void)f;
    bool drop[EM3_MAX_RANK] = {0};
    if (!axis_ok(&in[0], n->attr[0].i, em3_op_name(n->op), err, el)) return false;
    if (!is_float(&in[0])) return fail(err, el, "%s needs a float tensor", em3_op_name(n->op));
    drop[n->attr[0].i] = true;
    return reduce_to(&in[0], drop, n->attr[1].i != 0, out);
}

bool shape_softmax(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                   char *err, size_t el) {
    (void)f;
    if (!axis_ok(&in[0], n->attr[0].i, em3_op_name(n->op), err, el)) return false;
    if (!is_float(&in[0])) return fail(err, el, "%s needs a float tensor", em3_op_name(n->op));
    *out = in[0];
    return true;
}

bool shape_layer_norm(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                      char *err, size_t el) {
    (void)f, (void)n;
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    if (in[0].rank < 1 || !is_float(&in[0]))
        return fail(err, el, "layer_norm needs a float tensor of rank >= 1, got %s",
                    TS(&in[0], b0));
    int64_t d = in[0].dim[in[0].rank - 1];
    if (em3_dim_has_batch(d)) return fail(err, el, "layer_norm cannot normalise over the batch");
    for (int i = 1; i < 3; i++)
        if (in[i].rank != 1 || in[i].dim[0] != d || !is_float(&in[i]))
            return fail(err, el, "layer_norm of %s needs %s of f32[%lld], got %s",
                        TS(&in[0], b0), i == 1 ? "gamma" : "beta", (long long)d,
                        TS(&in[i], b1));
    *out = in[0];
    return true;
}

/* The element count of a shape is static_numel · B^pow[0] · U1^pow[1] ⋯, where a dimension
 * k·S adds k to the static part and one to S's power. Returns false when the static count
 * overflows int64 (a shape written in hostile IR text can ask for that). */
static bool count_symbols(const int64_t *d, int r, int64_t *static_numel, int pow[EM3_MAX_SYMBOLS]) {
    memset(pow, 0, sizeof(int) * EM3_MAX_SYMBOLS);
    *static_numel = 1;
    for (int i = 0; i < r; i++) {
        if (d[i] < 0) pow[em3_dim_sym(d[i])]++;
        if (__builtin_mul_overflow(*static_numel, em3_dim_coef(d[i]), static_numel)) return false;
    }
    return true;
}

bool shape_reshape(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                   char *err, size_t el) {
    (void)f;
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    const em3_attrval *s = &n->attr[0];
    if (s->n > EM3_MAX_RANK) return fail(err, el, "reshape to more than %d dims", EM3_MAX_RANK);
    em3_type t = em3_type_make(in[0].dtype, s->n, s->list);
    if (!dims_ok(&t, err, el)) return false;
    int64_t na, nb;
    int pa[EM3_MAX_SYMBOLS], pb[EM3_MAX_SYMBOLS];
    if (!count_symbols(in[0].dim, in[0].rank, &na, pa) || !count_symbols(t.dim, t.rank, &nb, pb))
        return fail(err, el, "cannot reshape %s to %s: too many elements", TS(&in[0], b0),
                    TS(&t, b1));
    bool same = !memcmp(pa, pb, sizeof pa);
    if (!same || na != nb)
        return fail(err, el, "cannot reshape %s to %s: element counts differ%s", TS(&in[0], b0),
                    TS(&t, b1), same ? "" : " (each of B, U1, … must stay a dimension)");
    *out = t;
    return true;
}

bool shape_transpose(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                     char *err, size_t el) {
    (void)f;
    char b[EM3_TYPE_STR_MAX];
    const em3_attrval *p = &n->attr[0];
    if (p->n != in[0].rank)
        return fail(err, el, "transpose of %s needs a permutation of %d axes, got %d",
                    TS(&in[0], b), in[0].rank, p->n);
    bool seen[EM3_MAX_RANK] = {0};
    em3_type t = in[0];
    for (int i = 0; i < p->n; i++) {
        if (p->list[i] < 0 || p->list[i] >= in[0].rank || seen[p->list[i]])
            return fail(err, el, "transpose: perm is not a permutation of the axes of %s",
                        TS(&in[0], b));
        seen[p->list[i]] = true;
        t.dim[i] = in[0].dim[p->list[i]];
    }
    *out = t;
    return true;
}

bool shape_concat(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                  char *err, size_t el) {
    (void)f;
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    int64_t axis = n->attr[0].i;
    if (!axis_ok(&in[0], axis, "concat", err, el)) return false;
    em3_type t = in[0];
    for (int k = 1; k < n->n_in; k++) {
        const em3_type *u = &in[k];
        bool ok = u->dtype == t.dtype && u->rank == t.rank;
        for (int i = 0; ok && i < t.rank; i++)
            if (i != axis && u->dim[i] != t.dim[i]) ok = false;
        if (!ok)
            return fail(err, el,
                        "concat along axis %lld: operand %d is %s, which does not fit %s",
                        (long long)axis, k, TS(u, b1), TS(&in[0], b0));
        /* k·B joined with m·B is (k+m)·B; a batch dimension never joins a static one, nor
           multiples of B those of some Us */
        if (em3_dim_sym(u->dim[axis]) != em3_dim_sym(t.dim[axis]))
            return fail(err, el, "concat cannot join %s", em3_dim_has_batch(t.dim[axis]) && em3_dim_has_batch(u->dim[axis])
                                                               ? "dimensions of different symbols"
                                                               : "a batch dimension with a fixed one");
        int64_t d = t.dim[axis];
        t.dim[axis] = d < 0 ? em3_dim_make(em3_dim_sym(d), em3_dim_coef(d) + em3_dim_coef(u->dim[axis]))
                            : d + u->dim[axis];
    }
    *out = t;
    return true;
}

bool shape_slice(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                 char *err, size_t el) {
    (void)f;
    char b[EM3_TYPE_STR_MAX];
    int64_t axis = n->attr[0].i, s = n->attr[1].i, e = n->attr[2].i;
    if (!axis_ok(&in[0], axis, "slice", err, el)) return false;
    int64_t d = in[0].dim[axis];
    if (em3_dim_has_batch(d)) return fail(err, el, "cannot slice along the batch dimension");
    if (s < 0 || e > d || s >= e)
        return fail(err, el, "slice [%lld:%lld] of axis %lld is out of range for %s",
                    (long long)s, (long long)e, (long long)axis, TS(&in[0], b));
    *out = in[0];
    out->dim[axis] = e - s;
    return true;
}

bool shape_broadcast_to(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                        char *err, size_t el) {
    (void)f;
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    const em3_attrval *s = &n->attr[0];
    if (s->n > EM3_MAX_RANK) return fail(err, el, "broadcast to more than %d dims", EM3_MAX_RANK);
    em3_type t = em3_type_make(in[0].dtype, s->n, s->list), chk;
    if (!dims_ok(&t, err, el)) return false;
    if (in[0].rank > t.rank || !em3_broadcast_shapes(&t, &in[0], &chk) || !em3_type_eq(&chk, &t))
        return fail(err, el, "cannot broadcast %s to %s", TS(&in[0], b0), TS(&t, b1));
    *out = t;
    return true;
}

bool shape_matmul(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                  char *err, size_t el) {
    (void)f;
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    const em3_type *a = &in[0], *b = &in[1];
    if (a->rank < 2 || b->rank < 2)
        return fail(err, el, "matmul needs operands of rank >= 2, got %s and %s", TS(a, b0),
                    TS(b, b1));
    if (!is_float(a) || !is_float(b)) return fail(err, el, "matmul needs float operands");
    bool ta = n->attr[0].i, tb = n->attr[1].i;
    int64_t m = a->dim[a->rank - (ta ? 1 : 2)], ka = a->dim[a->rank - (ta ? 2 : 1)];
    int64_t kb = b->dim[b->rank - (tb ? 1 : 2)], nn = b->dim[b->rank - (tb ? 2 : 1)];
    if (ka != kb)
        return fail(err, el, "matmul of %s%s and %s%s: inner dimensions differ", TS(a, b0),
                    ta ? " (transposed)" : "", TS(b, b1), tb ? " (transposed)" : "");
    em3_type la = *a, lb = *b, lead;
    la.rank -= 2;
    lb.rank -= 2;
    if (!em3_broadcast_shapes(&la, &lb, &lead))
        return fail(err, el, "matmul of %s and %s: batch dimensions do not broadcast",
                    TS(a, b0), TS(b, b1));
    if (lead.rank + 2 > EM3_MAX_RANK) return fail(err, el, "matmul result rank too large");
    lead.dim[lead.rank++] = m;
    lead.dim[lead.rank++] = nn;
    lead.dtype = EM3_DTYPE_F32;
    *out = lead;
    return true;
}

bool shape_gather(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                  char *err, size_t el) {
    (void)f, (void)n;
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    const em3_type *t = &in[0], *ids = &in[1];
    /* rows of B would differ from call to call; rows of Us are a batch's distinct items */
    bool rows_ok = t->rank >= 1 && (t->dim[0] > 0 || (em3_dim_sym(t->dim[0]) > 0 && em3_dim_coef(t->dim[0]) == 1));
    if (!rows_ok)
        return fail(err, el, "gather needs a table with a fixed number of rows (or U rows), got %s",
                    TS(t, b0));
    if (ids->dtype != EM3_DTYPE_I32)
        return fail(err, el, "gather needs i32 ids, got %s", TS(ids, b1));
    if (ids->rank + t->rank - 1 > EM3_MAX_RANK) return fail(err, el, "gather result rank too large");
    em3_type o = *ids;
    o.dtype = t->dtype;
    for (int i = 1; i < t->rank; i++) o.dim[o.rank++] = t->dim[i];
    *out = o;
    return true;
}

/* unique(ids [k·B]) → i32[Us], s the attribute sym */
bool shape_unique(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                  char *err, size_t el) {
    (void)f;
    char b[EM3_TYPE_STR_MAX];
    int64_t s = n->attr[0].i;
    if (s < 1 || s >= EM3_MAX_SYMBOLS)
        return fail(err, el, "unique's symbol must be in 1..%d, not %lld", EM3_MAX_SYMBOLS - 1, (long long)s);
    if (in[0].dtype != EM3_DTYPE_I32 || in[0].rank != 1 || em3_dim_sym(in[0].dim[0]) != 0)
        return fail(err, el, "unique needs ids i32[B*k], got %s", TS(&in[0], b));
    *out = em3_type_make(EM3_DTYPE_I32, 1, (int64_t[]){em3_dim_make((int)s, 1)});
    return true;
}

/* index_of(ids, u [Us]) → i32 of the ids' shape */
bool shape_index_of(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                    char *err, size_t el) {
    (void)f, (void)n;
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    if (in[0].dtype != EM3_DTYPE_I32 || in[1].dtype != EM3_DTYPE_I32 || in[1].rank != 1 ||
        em3_dim_sym(in[1].dim[0]) < 1 || em3_dim_coef(in[1].dim[0]) != 1)
        return fail(err, el, "index_of needs i32 ids and the i32[U] result of unique, got %s and %s",
                    TS(&in[0], b0), TS(&in[1], b1));
    *out = in[0];
    return true;
}

/* spmm @g(x): g an f32[r, c] graph global; x [c, ...] ([r, ...] with transpose) → [r, ...] */
bool shape_spmm(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                char *err, size_t el) {
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    const char *name = n->attr[0].s;
    int g = name ? em3_module_find_global(f->mod, name) : -1;
    if (g < 0 || f->mod->global[g].kind != EM3_GLOBAL_GRAPH)
        return fail(err, el, "spmm needs a graph global, and @%s is %s", name ? name : "",
                    g < 0 ? "not declared" : "not a graph");
    const em3_type *gt = &f->mod->global[g].type;
    bool tr = n->attr[1].i;
    int64_t need = gt->dim[tr ? 0 : 1], rows = gt->dim[tr ? 1 : 0];
    if (!is_float(&in[0]) || in[0].rank < 1 || in[0].dim[0] != need)
        return fail(err, el, "%s is %s: spmm by it%s takes f32 matrices of %lld rows, not %s", name, TS(gt, b0),
                    tr ? ", transposed," : "", (long long)need, TS(&in[0], b1));
    *out = in[0];
    out->dim[0] = rows;
    return true;
}

/* ---- backward helpers and optimizer updates ------------------------------------------------ */

bool shape_scatter_add(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                       char *err, size_t el) {
    em3_type rows;
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX], b2[EM3_TYPE_STR_MAX], b3[EM3_TYPE_STR_MAX];
    if (!shape_gather(f, n, in, &rows, err, el)) return false;
    if (!em3_type_eq(&rows, &in[2]))
        return fail(err, el, "scatter_add into %s by ids %s needs rows %s, got %s",
                    TS(&in[0], b0), TS(&in[1], b1), TS(&rows, b2), TS(&in[2], b3));
    *out = in[0];
    return true;
}

bool shape_numel(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                 char *err, size_t el) {
    em3_type r;
    if (!shape_reduce(f, n, in, &r, err, el)) return false;
    *out = em3_type_make(EM3_DTYPE_F32, 0, NULL);
    return true;
}

bool shape_layer_norm_grad(const em3_func *f, const em3_node *n, const em3_type *in,
                           em3_type *out, char *err, size_t el) {
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    em3_type ln[3] = {in[0], in[1], in[1]};
    if (!shape_layer_norm(f, n, ln, out, err, el)) return false;
    if (!em3_type_eq(&in[2], &in[0]))
        return fail(err, el, "layer_norm_grad of %s needs dy of the same type, got %s",
                    TS(&in[0], b0), TS(&in[2], b1));
    return true;
}

bool shape_sparse_sqnorm(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                         char *err, size_t el) {
    (void)f, (void)n;
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    bool ok = in[0].dtype == EM3_DTYPE_I32 && in[1].dtype == EM3_DTYPE_F32 &&
              in[1].rank >= in[0].rank;
    for (int i = 0; ok && i < in[0].rank; i++) ok = in[1].dim[i] == in[0].dim[i];
    if (!ok)
        return fail(err, el, "sparse_sqnorm needs i32 ids and f32 rows of shape ids + row, got %s "
                             "and %s", TS(&in[0], b0), TS(&in[1], b1));
    *out = em3_type_make(EM3_DTYPE_F32, 0, NULL);
    return true;
}

/* Operand `i` must be a read of a global of kind `kind` (updates write globals in place). */
static bool global_operand(const em3_func *f, const em3_node *n, int i, em3_global_kind kind,
                           char *err, size_t el) {
    const em3_node *x = &f->node[n->in[i]];
    int g = x->op == EM3_OP_PARAM ? em3_module_find_global(f->mod, x->attr[0].s) : -1;
    if (g < 0 || f->mod->global[g].kind != kind)
        return fail(err, el, "%s: operand %d must be a %s global", em3_op_name(n->op), i,
                    em3_global_kind_name(kind));
    return true;
}

static bool scalar_f32(const em3_type *t) { return t->dtype == EM3_DTYPE_F32 && t->rank == 0; }

/* p, then the gradient (dense: g; sparse: ids, rows), lr, [step], then state like p. */
static bool update_rule(const em3_func *f, const em3_node *n, const em3_type *in, int n_grad,
                        char *err, size_t el) {
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    if (!global_operand(f, n, 0, EM3_GLOBAL_PARAM, err, el)) return false;
    int k = 1 + n_grad;
    if (!scalar_f32(&in[k])) return fail(err, el, "%s: lr must be f32[]", em3_op_name(n->op));
    k++;
    bool adam = n->op == EM3_OP_ADAM_UPDATE || n->op == EM3_OP_SPARSE_ADAM_UPDATE;
    if (adam && !scalar_f32(&in[k++]))
        return fail(err, el, "%s: step must be f32[]", em3_op_name(n->op));
    for (; k < n->n_in; k++) {
        if (!em3_type_eq(&in[k], &in[0]))
            return fail(err, el, "%s: state operand %d is %s, the parameter %s",
                        em3_op_name(n->op), k, TS(&in[k], b0), TS(&in[0], b1));
        if (!global_operand(f, n, k, EM3_GLOBAL_STATE, err, el)) return false;
    }
    return true;
}

bool shape_update(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                  char *err, size_t el) {
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    if (!em3_type_eq(&in[0], &in[1]) || in[0].dtype != EM3_DTYPE_F32)
        return fail(err, el, "%s: gradient %s does not match parameter %s", em3_op_name(n->op),
                    TS(&in[1], b0), TS(&in[0], b1));
    if (!update_rule(f, n, in, 1, err, el)) return false;
    *out = in[0];
    return true;
}

bool shape_sparse_update(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                         char *err, size_t el) {
    em3_type rows;
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    if (!shape_gather(f, n, in, &rows, err, el)) return false;
    if (!em3_type_eq(&rows, &in[2]))
        return fail(err, el, "%s: rows %s do not fit ids %s", em3_op_name(n->op), TS(&in[2], b0),
                    TS(&in[1], b1));
    if (!update_rule(f, n, in, 2, err, el)) return false;
    *out = in[0];
    return true;
}

/* ---- fused ops ---------------------------------------------------------------------------- */

/* q, k, v of attention: their leading dimensions broadcast to `lead`; sizes out. */
static bool attention_operands(const em3_type *in, em3_type *lead, int64_t *tq, int64_t *tk,
                               int64_t *dh, int64_t *dv, char *err, size_t el) {
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX], b2[EM3_TYPE_STR_MAX];
    const em3_type *q = &in[0], *k = &in[1], *v = &in[2];
    bool ok = q->rank >= 2 && k->rank >= 2 && v->rank >= 2 && is_float(q) && is_float(k) && is_float(v);
    if (ok) {
        *tq = q->dim[q->rank - 2], *dh = q->dim[q->rank - 1];
        *tk = k->dim[k->rank - 2], *dv = v->dim[v->rank - 1];
        ok = k->dim[k->rank - 1] == *dh && v->dim[v->rank - 2] == *tk && !em3_dim_has_batch(*tk) &&
             !em3_dim_has_batch(*tq) && !em3_dim_has_batch(*dh) && !em3_dim_has_batch(*dv);
    }
    em3_type lq = *q, lk = *k, lv = *v, t;
    lq.rank -= 2, lk.rank -= 2, lv.rank -= 2;
    if (!ok || !em3_broadcast_shapes(&lq, &lk, &t) || !em3_broadcast_shapes(&t, &lv, lead))
        return fail(err, el, "attention needs q [..., tq, dh], k [..., tk, dh], v [..., tk, dv] with "
                             "broadcasting leading dimensions; got %s, %s, %s",
                    TS(q, b0), TS(k, b1), TS(v, b2));
    return true;
}

/* mask [..., 1 or tq, tk] whose leading dimensions broadcast into `lead` */
static bool attention_mask(const em3_type *m, const em3_type *lead, int64_t tq, int64_t tk,
                           char *err, size_t el) {
    char b[EM3_TYPE_STR_MAX];
    em3_type lm = *m, t;
    bool ok = is_float(m) && m->rank >= 2 && m->dim[m->rank - 1] == tk &&
              (m->dim[m->rank - 2] == 1 || m->dim[m->rank - 2] == tq);
    lm.rank -= 2;
    if (!ok || !em3_broadcast_shapes(lead, &lm, &t) || !em3_type_eq(&t, lead))
        return fail(err, el, "attention's mask must be f32[..., 1 or %lld, %lld] within the batch of "
                             "q, k, v; got %s", (long long)tq, (long long)tk, TS(m, b));
    return true;
}

bool shape_attention(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                     char *err, size_t el) {
    (void)f;
    em3_type lead;
    int64_t tq, tk, dh, dv;
    if (n->n_in != 3 && n->n_in != 4) return fail(err, el, "attention takes q, k, v and an optional mask");
    if (!attention_operands(in, &lead, &tq, &tk, &dh, &dv, err, el)) return false;
    if (n->n_in == 4 && !attention_mask(&in[3], &lead, tq, tk, err, el)) return false;
    if (lead.rank + 2 > EM3_MAX_RANK) return fail(err, el, "attention result rank too large");
    lead.dtype = EM3_DTYPE_F32;
    lead.dim[lead.rank++] = tq;
    lead.dim[lead.rank++] = dv;
    *out = lead;
    return true;
}

bool shape_attention_grad(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                          char *err, size_t el) {
    (void)f;
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    em3_type lead, o;
    int64_t tq, tk, dh, dv;
    if (n->n_in != 5 && n->n_in != 6) return fail(err, el, "attention_grad takes q, k, v, o, do and an optional mask");
    if (!attention_operands(in, &lead, &tq, &tk, &dh, &dv, err, el)) return false;
    if (dh != dv) return fail(err, el, "attention_grad packs dq, dk, dv: they need one width (dh == dv)");
    if (n->n_in == 6 && !attention_mask(&in[5], &lead, tq, tk, err, el)) return false;
    o = lead;
    o.dtype = EM3_DTYPE_F32;
    o.dim[o.rank++] = tq;
    o.dim[o.rank++] = dv;
    for (int i = 3; i < 5; i++)
        if (!em3_type_eq(&in[i], &o))
            return fail(err, el, "attention_grad: operand %d is %s, the attention output %s", i,
                        TS(&in[i], b0), TS(&o, b1));
    o.dim[o.rank - 2] = tq + 2 * tk;
    *out = o;
    return true;
}

bool shape_lora_matmul(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                       char *err, size_t el) {
    (void)f, (void)n;
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX], b2[EM3_TYPE_STR_MAX], b3[EM3_TYPE_STR_MAX];
    const em3_type *x = &in[0], *w = &in[1], *a = &in[2], *b = &in[3];
    bool ok = x->rank >= 2 && w->rank == 2 && a->rank == 2 && b->rank == 2 && is_float(x) &&
              is_float(w) && is_float(a) && is_float(b) && x->dim[x->rank - 1] == w->dim[0] &&
              a->dim[0] == w->dim[0] && b->dim[0] == a->dim[1] && b->dim[1] == w->dim[1];
    if (!ok)
        return fail(err, el, "lora_matmul needs x [..., m, din], w [din, dout], a [din, r], b [r, dout]; "
                             "got %s, %s, %s, %s", TS(x, b0), TS(w, b1), TS(a, b2), TS(b, b3));
    *out = *x;
    out->dim[out->rank - 1] = w->dim[1];
    return true;
}

bool shape_fused(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                 char *err, size_t el) {
    (void)f;
    char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX], why[256];
    em3_program p;
    em3_dtype dt[EM3_PROGRAM_OPERANDS];
    if (n->n_in > EM3_PROGRAM_OPERANDS) return fail(err, el, "fused takes at most %d operands", EM3_PROGRAM_OPERANDS);
    if (!n->attr[0].s || !em3_program_parse(n->attr[0].s, &p, why, sizeof why))
        return fail(err, el, "fused: bad program: %s", n->attr[0].s ? why : "none");
    em3_type t = in[0];
    for (int k = 0; k < n->n_in; k++) {
        dt[k] = in[k].dtype;
        if (k && !em3_broadcast_shapes(&t, &in[k], &t))
            return fail(err, el, "fused: operands %s and %s do not broadcast", TS(&in[0], b0), TS(&in[k], b1));
    }
    if (!em3_program_check(&p, dt, n->n_in, why, sizeof why)) return fail(err, el, "fused: %s", why);
    t.dtype = p.ins[p.n - 1].dtype;
    *out = t;
    return true;
}
