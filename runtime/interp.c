/* runtime/interp.c — the reference interpreter: one plain, obviously correct kernel per entry of
 * ops.def's reference-kernel column, all in double, so that every compiled backend has an
 * oracle. Speed is not a goal beyond using OpenBLAS for GEMMs; clarity and exactness are. */
#include "interp.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "init.h"
#include "ir/program.h"

struct em3_interp {
    const em3_module *mod;
    em3_precision prec;
    double **global; /* per module global: numel doubles, row-major (graphs: none) */
    const em3_graph **graph; /* per module global: the bound graph of a graph global */
    /* the last successful run; func is NULL when there is none */
    const em3_func *func;
    int64_t sym[EM3_MAX_SYMBOLS]; /* B, then each Us: its bound until its unique has run */
    double **val; /* per node of func */
};

/* What a kernel sees of the run in progress. */
typedef struct {
    em3_interp *it;
    const em3_func *f;
    const em3_interp_input *in;
    int n_in;
    char *err;
    size_t errlen;
} em3_run;

/* ---- shapes with B resolved ------------------------------------------------------------- */

typedef struct {
    int rank;
    int64_t dim[EM3_MAX_RANK];
} dims;

static dims resolve(const em3_type *t, const int64_t *sym) {
    dims d = {.rank = t->rank};
    for (int i = 0; i < t->rank; i++) d.dim[i] = em3_dim_eval(t->dim[i], sym);
    return d;
}

static int64_t numel(const dims *d) {
    int64_t n = 1;
    for (int i = 0; i < d->rank; i++) n *= d->dim[i];
    return n;
}

/* The product of the dims before and after `axis`: a tensor is then [outer, dim[axis], inner]. */
static void split_at(const dims *d, int axis, int64_t *outer, int64_t *inner) {
    *outer = *inner = 1;
    for (int i = 0; i < axis; i++) *outer *= d->dim[i];
    for (int i = axis + 1; i < d->rank; i++) *inner *= d->dim[i];
}

/* Strides (in units of `unit` elements) for reading operand `x` while walking `out`, with numpy
 * broadcasting: dims are right-aligned and a dim of 1 is read with stride 0. */
static void bcast_strides(const dims *x, const dims *out, int64_t unit, int64_t *stride) {
    int64_t s = unit;
    for (int i = out->rank - 1; i >= 0; i--) {
        int j = x->rank - out->rank + i;
        stride[i] = j >= 0 && x->dim[j] != 1 ? s : 0;
        if (j >= 0) s *= x->dim[j];
    }
}

/* A row-major walk over a shape that keeps the offsets of up to WALK_MAX strided operands. */
#define WALK_MAX 6
typedef struct {
    int rank, n;
    int64_t dim[EM3_MAX_RANK], idx[EM3_MAX_RANK];
    int64_t stride[WALK_MAX][EM3_MAX_RANK];
    int64_t off[WALK_MAX];
} walk;

static walk walk_over(const dims *shape) {
    walk w = {.rank = shape->rank};
    memcpy(w.dim, shape->dim, sizeof w.dim);
    return w;
}

static void walk_add(walk *w, const int64_t *stride) {
    EM3_ASSERT(w->n < WALK_MAX, "walk over too many operands");
    memcpy(w->stride[w->n++], stride, sizeof(int64_t) * (size_t)w->rank);
}

static void walk_next(walk *w) {
    for (int d = w->rank - 1; d >= 0; d--) {
        for (int k = 0; k < w->n; k++) w->off[k] += w->stride[k][d];
        if (++w->idx[d] < w->dim[d]) return;
        for (int k = 0; k < w->n; k++) w->off[k] -= w->stride[k][d] * w->dim[d];
        w->idx[d] = 0;
    }
}

/* ---- kernel helpers ---------------------------------------------------------------------- */

static const em3_node *node_of(const em3_run *r, int id) { return &r->f->node[id]; }
static double *out_of(const em3_run *r, int id) { return r->it->val[id]; }
static dims dims_of(const em3_run *r, int id) {
    return resolve(&r->f->node[id].type, r->it->sym);
}
/* Operand k of node `id`: its values and its resolved shape. */
static const double *arg(const em3_run *r, int id, int k) {
    return r->it->val[r->f->node[id].in[k]];
}
static dims arg_dims(const em3_run *r, int id, int k) {
    return dims_of(r, r->f->node[id].in[k]);
}

static bool user_error(const em3_run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static bool user_error(const em3_run *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, r->errlen, fmt, ap);
    va_end(ap);
    return false;
}

static bool is_whole(double v) { return isfinite(v) && v == trunc(v); }

/* ---- the dispatch table, built from ops.def only ----------------------------------------- */

typedef bool ref_kernel(em3_run *r, int id);
#define OP(E, NAME, ARITY, KIND, ATTRS, FLAGS, SHAPE, REF, ...) static ref_kernel REF;
#include "ir/ops.def"
#undef OP

static ref_kernel *const kernels[EM3_OP_COUNT] = {
#define OP(E, NAME, ARITY, KIND, ATTRS, FLAGS, SHAPE, REF, ...) [EM3_OP_##E] = REF,
#include "ir/ops.def"
#undef OP
};

/* ---- leaves ------------------------------------------------------------------------------ */

static bool ref_input(em3_run *r, int id) {
    const em3_node *n = node_of(r, id);
    const char *name = n->attr[0].s;
    int64_t vocab = n->attr[1].i, count = em3_type_numel(&n->type, r->it->sym[0]);
    const em3_interp_input *given = NULL;
    for (int i = 0; i < r->n_in && !given; i++)
        if (!strcmp(r->in[i].name, name)) given = &r->in[i];
    if (!given) return user_error(r, "input @%s was not given", name);
    EM3_ASSERT(given->data, "input @%s has no data", name);
    double *out = out_of(r, id);
    memcpy(out, given->data, sizeof(double) * (size_t)count);
    if (n->type.dtype != EM3_DTYPE_I32) return true;
    for (int64_t i = 0; i < count; i++) {
        double v = out[i];
        if (!is_whole(v) || v < INT32_MIN || v > INT32_MAX)
            return user_error(r, "input @%s: value %.15g at position %lld is not an i32", name, v,
                              (long long)i);
        if (vocab > 0 && (v < 0 || v >= (double)vocab))
            return user_error(r,
                              "input @%s: id %.15g at position %lld is outside its vocabulary "
                              "of %lld",
                              name, v, (long long)i, (long long)vocab);
    }
    return true;
}

/* The value of a parameter is a copy of the global at the time of the read (value semantics:
 * a later write to the global cannot change it). */
static bool ref_param(em3_run *r, int id) {
    const em3_node *n = node_of(r, id);
    int g = em3_module_find_global(r->it->mod, n->attr[0].s);
    EM3_ASSERT(g >= 0, "param @%s has no global", n->attr[0].s);
    memcpy(out_of(r, id), r->it->global[g],
           sizeof(double) * (size_t)em3_type_numel(&n->type, r->it->sym[0]));
    return true;
}

static bool ref_const(em3_run *r, int id) {
    double v = node_of(r, id)->attr[0].f, *out = out_of(r, id);
    dims d = dims_of(r, id);
    for (int64_t i = 0, e = numel(&d); i < e; i++) out[i] = v;
    return true;
}

/* ---- elementwise ------------------------------------------------------------------------- */

/* The scalar formula of every op whose kernel is ref_unary. */
static double unary(const em3_node *n, double x) {
    switch (n->op) {
    case EM3_OP_NEG: return -x;
    case EM3_OP_EXP: return exp(x);
    case EM3_OP_LOG: return log(x);
    case EM3_OP_SQRT: return sqrt(x);
    case EM3_OP_RSQRT: return 1.0 / sqrt(x);
    case EM3_OP_ABS: return fabs(x);
    case EM3_OP_TANH: return tanh(x);
    case EM3_OP_SIGMOID: /* never exp of a large positive number */
        return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
    case EM3_OP_RELU: return x < 0 ? 0.0 : x; /* NaN stays NaN */
    case EM3_OP_GELU: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case EM3_OP_SOFTPLUS: return fmax(x, 0.0) + log1p(exp(-fabs(x)));
    case EM3_OP_CAST: return n->attr[0].i == EM3_DTYPE_I32 ? trunc(x) : x;
    case EM3_OP_STOP_GRADIENT: return x;
    case EM3_OP_DROPOUT: return x; /* only dropout_train drops */
    default: EM3_UNREACHABLE("ref_unary has no formula for %s", em3_op_name(n->op));
    }
}

/* The scalar formula of every op whose kernel is ref_binary. maximum/minimum propagate NaN. */
static double binary(em3_op op, double a, double b) {
    switch (op) {
    case EM3_OP_ADD: return a + b;
    case EM3_OP_SUB: return a - b;
    case EM3_OP_MUL: return a * b;
    case EM3_OP_DIV: return a / b;
    case EM3_OP_MAXIMUM: return isnan(a) || a > b ? a : b;
    case EM3_OP_MINIMUM: return isnan(a) || a < b ? a : b;
    case EM3_OP_EQ: return a == b;
    case EM3_OP_NE: return a != b;
    case EM3_OP_LT: return a < b;
    case EM3_OP_LE: return a <= b;
    case EM3_OP_GT: return a > b;
    case EM3_OP_GE: return a >= b;
    case EM3_OP_BCE_LOGITS: return fmax(a, 0.0) - a * b + log1p(exp(-fabs(a)));
    case EM3_OP_GELU_GRAD: { /* b · d/da of 0.5a(1 + tanh(c(a + 0.044715a³))) */
        const double c = 0.7978845608028654; /* sqrt(2/pi) */
        double t = tanh(c * (a + 0.044715 * a * a * a));
        return b * (0.5 * (1 + t) + 0.5 * a * (1 - t * t) * c * (1 + 3 * 0.044715 * a * a));
    }
    default: EM3_UNREACHABLE("ref_binary has no formula for %s", em3_op_name(op));
    }
}

static bool ref_unary(em3_run *r, int id) {
    const em3_node *n = node_of(r, id);
    const double *x = arg(r, id, 0);
    double *out = out_of(r, id);
    dims d = dims_of(r, id);
    for (int64_t i = 0, e = numel(&d); i < e; i++) out[i] = unary(n, x[i]);
    return true;
}

static bool ref_dropout_train(em3_run *r, int id) {
    const em3_node *n = node_of(r, id);
    const double *x = arg(r, id, 0);
    double *out = out_of(r, id), p = em3_node_f(n, "p");
    uint32_t key = em3_dropout_key((uint32_t)em3_node_i(n, "salt"), (uint32_t)arg(r, id, 1)[0]);
    uint32_t threshold = em3_dropout_threshold(p);
    int64_t first = em3_dropout_first(&n->type, (int64_t)arg(r, id, 2)[0]);
    dims d = dims_of(r, id);
    for (int64_t i = 0, e = numel(&d); i < e; i++)
        out[i] = em3_dropout_keep(key, (uint32_t)(first + i), threshold) ? x[i] / (1 - p) : 0.0;
    return true;
}

/* A walk over node `id`'s result that reads its first `k` operands with broadcasting; the
 * result itself is written in order, so its offset is the step count. */
static walk bcast_walk(const em3_run *r, int id, int k) {
    dims o = dims_of(r, id);
    walk w = walk_over(&o);
    for (int i = 0; i < k; i++) {
        int64_t s[EM3_MAX_RANK];
        dims a = arg_dims(r, id, i);
        bcast_strides(&a, &o, 1, s);
        walk_add(&w, s);
    }
    return w;
}

static bool ref_binary(em3_run *r, int id) {
    em3_op op = node_of(r, id)->op;
    const double *a = arg(r, id, 0), *b = arg(r, id, 1);
    double *out = out_of(r, id);
    dims o = dims_of(r, id);
    walk w = bcast_walk(r, id, 2);
    for (int64_t i = 0, e = numel(&o); i < e; i++, walk_next(&w))
        out[i] = binary(op, a[w.off[0]], b[w.off[1]]);
    return true;
}

static bool ref_where(em3_run *r, int id) {
    const double *c = arg(r, id, 0), *a = arg(r, id, 1), *b = arg(r, id, 2);
    double *out = out_of(r, id);
    dims o = dims_of(r, id);
    walk w = bcast_walk(r, id, 3);
    for (int64_t i = 0, e = numel(&o); i < e; i++, walk_next(&w))
        out[i] = c[w.off[0]] != 0 ? a[w.off[1]] : b[w.off[2]];
    return true;
}

static bool ref_broadcast(em3_run *r, int id) {
    const double *x = arg(r, id, 0);
    double *out = out_of(r, id);
    dims o = dims_of(r, id);
    walk w = bcast_walk(r, id, 1);
    for (int64_t i = 0, e = numel(&o); i < e; i++, walk_next(&w)) out[i] = x[w.off[0]];
    return true;
}

/* ---- reductions ---------------------------------------------------------------------------- */

static bool ref_reduce(em3_run *r, int id) {
    const em3_node *n = node_of(r, id);
    const double *x = arg(r, id, 0);
    double *out = out_of(r, id);
    dims in = arg_dims(r, id, 0), kept = in;
    for (int i = 0; i < n->attr[0].n; i++) kept.dim[n->attr[0].list[i]] = 1;
    int64_t count = numel(&in) / numel(&kept), s[EM3_MAX_RANK];
    bcast_strides(&kept, &in, 1, s);
    walk w = walk_over(&in);
    walk_add(&w, s);

    for (int64_t j = 0, e = numel(&kept); j < e; j++) out[j] = n->op == EM3_OP_MAX ? -INFINITY : 0;
    for (int64_t i = 0, e = numel(&in); i < e; i++, walk_next(&w)) {
        double *acc = &out[w.off[0]];
        switch (n->op) {
        case EM3_OP_SUM:
        case EM3_OP_MEAN: *acc += x[i]; break;
        case EM3_OP_MAX: *acc = isnan(x[i]) || x[i] > *acc ? x[i] : *acc; break;
        default: EM3_UNREACHABLE("ref_reduce has no formula for %s", em3_op_name(n->op));
        }
    }
    if (n->op == EM3_OP_MEAN)
        for (int64_t j = 0, e = numel(&kept); j < e; j++) out[j] /= (double)count;
    return true;
}

/* Max and Σ exp(x - max) of n values `stride` apart: subtracting the max first keeps exp from
 * overflowing. A row of all -inf gives NaN (-inf - -inf), as IEEE arithmetic says; so does a
 * row holding +inf. */
static void max_sumexp(const double *x, int64_t n, int64_t stride, double *max, double *sum) {
    double m = -INFINITY, s = 0;
    for (int64_t k = 0; k < n; k++)
        if (isnan(x[k * stride]) || x[k * stride] > m) m = x[k * stride];
    for (int64_t k = 0; k < n; k++) s += exp(x[k * stride] - m);
    *max = m;
    *sum = s;
}

/* logsumexp, softmax and log_softmax along one axis: the tensor is [outer, n, inner]. */
static bool ref_logsumexp(em3_run *r, int id) {
    const double *x = arg(r, id, 0);
    double *out = out_of(r, id);
    dims d = arg_dims(r, id, 0);
    int axis = (int)node_of(r, id)->attr[0].i;
    int64_t outer, inner, n = d.dim[axis];
    split_at(&d, axis, &outer, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double m, s;
            max_sumexp(x + o * n * inner + i, n, inner, &m, &s);
            out[o * inner + i] = m + log(s);
        }
    return true;
}

static bool ref_softmax(em3_run *r, int id) {
    const double *x = arg(r, id, 0);
    double *out = out_of(r, id);
    dims d = arg_dims(r, id, 0);
    bool log_form = node_of(r, id)->op == EM3_OP_LOG_SOFTMAX;
    int axis = (int)node_of(r, id)->attr[0].i;
    int64_t outer, inner, n = d.dim[axis];
    split_at(&d, axis, &outer, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const double *row = x + o * n * inner + i;
            double *dst = out + o * n * inner + i, m, s;
            max_sumexp(row, n, inner, &m, &s);
            for (int64_t k = 0; k < n; k++)
                dst[k * inner] = log_form ? row[k * inner] - m - log(s)
                                          : exp(row[k * inner] - m) / s;
        }
    return true;
}

/* (x - mean) / sqrt(var + eps) * gamma + beta over the last axis, with the biased variance
 * (divided by the count, as PyTorch's LayerNorm). */
static bool ref_layer_norm(em3_run *r, int id) {
    const double *x = arg(r, id, 0), *gamma = arg(r, id, 1), *beta = arg(r, id, 2);
    double *out = out_of(r, id), eps = node_of(r, id)->attr[0].f;
    dims xd = arg_dims(r, id, 0);
    int64_t d = xd.dim[xd.rank - 1], rows = numel(&xd) / d;
    for (int64_t i = 0; i < rows; i++) {
        const double *row = x + i * d;
        double mean = 0, var = 0;
        for (int64_t k = 0; k < d; k++) mean += row[k];
        mean /= (double)d;
        for (int64_t k = 0; k < d; k++) var += (row[k] - mean) * (row[k] - mean);
        var /= (double)d;
        double inv = 1.0 / sqrt(var + eps);
        for (int64_t k = 0; k < d; k++) out[i * d + k] = (row[k] - mean) * inv * gamma[k] + beta[k];
    }
    return true;
}

/* ---- data movement ------------------------------------------------------------------------- */

static bool ref_reshape(em3_run *r, int id) {
    dims d = dims_of(r, id);
    memcpy(out_of(r, id), arg(r, id, 0), sizeof(double) * (size_t)numel(&d));
    return true;
}

static bool ref_transpose(em3_run *r, int id) {
    const em3_node *n = node_of(r, id);
    const double *x = arg(r, id, 0);
    double *out = out_of(r, id);
    dims in = arg_dims(r, id, 0), o = dims_of(r, id);
    int64_t in_stride[EM3_MAX_RANK], s[EM3_MAX_RANK];
    bcast_strides(&in, &in, 1, in_stride); /* row-major strides (0 for dims of 1: index 0 only) */
    for (int i = 0; i < o.rank; i++) s[i] = in_stride[n->attr[0].list[i]];
    walk w = walk_over(&o);
    walk_add(&w, s);
    for (int64_t i = 0, e = numel(&o); i < e; i++, walk_next(&w)) out[i] = x[w.off[0]];
    return true;
}

static bool ref_concat(em3_run *r, int id) {
    const em3_node *n = node_of(r, id);
    double *out = out_of(r, id);
    dims o = dims_of(r, id);
    int axis = (int)n->attr[0].i;
    int64_t outer, inner;
    split_at(&o, axis, &outer, &inner);
    for (int64_t i = 0, pos = 0; i < outer; i++)
        for (int k = 0; k < n->n_in; k++) {
            int64_t chunk = arg_dims(r, id, k).dim[axis] * inner;
            memcpy(out + pos, arg(r, id, k) + i * chunk, sizeof(double) * (size_t)chunk);
            pos += chunk;
        }
    return true;
}

static bool ref_slice(em3_run *r, int id) {
    const em3_node *n = node_of(r, id);
    const double *x = arg(r, id, 0);
    double *out = out_of(r, id);
    dims in = arg_dims(r, id, 0);
    int axis = (int)n->attr[0].i;
    int64_t start = n->attr[1].i, len = n->attr[2].i - start, outer, inner;
    split_at(&in, axis, &outer, &inner);
    for (int64_t i = 0; i < outer; i++)
        memcpy(out + i * len * inner, x + (i * in.dim[axis] + start) * inner,
               sizeof(double) * (size_t)(len * inner));
    return true;
}

/* ---- GEMM ------------------------------------------------------------------------------------ */

static int blas_int(int64_t v) {
    EM3_ASSERT(v > 0 && v <= INT_MAX, "GEMM dimension %lld does not fit BLAS", (long long)v);
    return (int)v;
}

/* C[m, n] = op(A) op(B), row-major, op = transpose when the flag is set. */
static void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double *a,
                 int64_t lda, const double *b, int64_t ldb, double *c) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                blas_int(m), blas_int(n), blas_int(k), 1.0, a, blas_int(lda), b, blas_int(ldb),
                0.0, c, blas_int(n));
}

static bool ref_matmul(em3_run *r, int id) {
    const em3_node *n = node_of(r, id);
    const double *a = arg(r, id, 0), *b = arg(r, id, 1);
    double *c = out_of(r, id);
    dims ad = arg_dims(r, id, 0), bd = arg_dims(r, id, 1), cd = dims_of(r, id);
    bool ta = n->attr[0].i, tb = n->attr[1].i;
    int64_t m = cd.dim[cd.rank - 2], nn = cd.dim[cd.rank - 1];
    int64_t k = ad.dim[ad.rank - (ta ? 2 : 1)];
    int64_t lda = ad.dim[ad.rank - 1], ldb = bd.dim[bd.rank - 1];
    if (bd.rank == 2 && !ta) { /* one GEMM: A's leading dims fold into its rows */
        gemm(false, tb, numel(&cd) / nn, nn, k, a, lda, b, ldb, c);
        return true;
    }
    /* one GEMM per matrix of the result, reading A and B with broadcast strides */
    dims lead = cd, la = ad, lb = bd;
    lead.rank -= 2, la.rank -= 2, lb.rank -= 2;
    int64_t sa[EM3_MAX_RANK], sb[EM3_MAX_RANK];
    bcast_strides(&la, &lead, ad.dim[ad.rank - 2] * lda, sa);
    bcast_strides(&lb, &lead, bd.dim[bd.rank - 2] * ldb, sb);
    walk w = walk_over(&lead);
    walk_add(&w, sa);
    walk_add(&w, sb);
    for (int64_t i = 0, e = numel(&lead); i < e; i++, walk_next(&w))
        gemm(ta, tb, m, nn, k, a + w.off[0], lda, b + w.off[1], ldb, c + i * m * nn);
    return true;
}

/* A fused elementwise program, element by element, with the same scalar formulas as the
 * ops it replaced. */
static bool ref_fused(em3_run *r, int id) {
    const em3_node *n = node_of(r, id);
    em3_program p;
    em3_dtype dt[EM3_PROGRAM_OPERANDS];
    char why[256];
    bool parsed = em3_program_parse(n->attr[0].s, &p, why, sizeof why);
    for (int k = 0; k < n->n_in; k++) dt[k] = node_of(r, n->in[k])->type.dtype;
    EM3_ASSERT(parsed && em3_program_check(&p, dt, n->n_in, why, sizeof why), "fused %%%d: %s", id, why);
    em3_node ins[EM3_PROGRAM_MAX];
    for (int i = 0; i < p.n; i++) ins[i] = em3_program_node(&p.ins[i]);
    dims o = dims_of(r, id);
    walk w = bcast_walk(r, id, n->n_in);
    double *out = out_of(r, id), v[EM3_PROGRAM_MAX];
    for (int64_t e = 0, end = numel(&o); e < end; e++, walk_next(&w)) {
        for (int i = 0; i < p.n; i++) {
            double a[3];
            for (int k = 0; k < p.ins[i].n_args; k++) {
                const em3_parg *g = &p.ins[i].arg[k];
                a[k] = g->kind == EM3_ARG_CONST ? g->value
                       : g->kind == EM3_ARG_RESULT ? v[g->index] : arg(r, id, g->index)[w.off[g->index]];
            }
            em3_op op = p.ins[i].op;
            v[i] = op == EM3_OP_WHERE ? (a[0] != 0 ? a[1] : a[2])
                   : p.ins[i].n_args == 1 ? unary(&ins[i], a[0]) : binary(op, a[0], a[1]);
            if (r->it->prec == EM3_PREC_F32 && p.ins[i].dtype == EM3_DTYPE_F32) v[i] = (double)(float)v[i];
        }
        out[e] = v[p.n - 1];
    }
    return true;
}

/* ---- fused ops ------------------------------------------------------------------------------- */

/* One (batch, head) slice of attention: scores, the masked softmax (rows without a valid key
 * are zero), and what a caller needs from it. p is [tq, tk]. */
static void attention_probs(const double *q, const double *k, const double *mask, int64_t mrow,
                            int64_t tq, int64_t tk, int64_t dh, double scale, double *p) {
    for (int64_t i = 0; i < tq; i++) {
        double m = -INFINITY, sum = 0;
        for (int64_t j = 0; j < tk; j++) {
            bool valid = !mask || mask[i * mrow + j] != 0;
            double s = 0;
            for (int64_t c = 0; c < dh; c++) s += q[i * dh + c] * k[j * dh + c];
            p[i * tk + j] = valid ? scale * s : -INFINITY;
            if (valid && p[i * tk + j] > m) m = p[i * tk + j];
        }
        for (int64_t j = 0; j < tk; j++) {
            p[i * tk + j] = m == -INFINITY || p[i * tk + j] == -INFINITY ? 0 : exp(p[i * tk + j] - m);
            sum += p[i * tk + j];
        }
        for (int64_t j = 0; j < tk; j++) p[i * tk + j] = sum > 0 ? p[i * tk + j] / sum : 0;
    }
}

/* The walk over attention's leading dimensions: operands q, k, v (matrices), and the mask. */
typedef struct {
    dims lead;
    int64_t tq, tk, dh, dv, mrow;
    walk w;
} att_walk;

static att_walk attention_walk(const em3_run *r, int id, int mask_k, const dims *out_lead) {
    att_walk a = {.lead = *out_lead};
    dims q = arg_dims(r, id, 0), k = arg_dims(r, id, 1), v = arg_dims(r, id, 2);
    a.tq = q.dim[q.rank - 2], a.dh = q.dim[q.rank - 1], a.tk = k.dim[k.rank - 2], a.dv = v.dim[v.rank - 1];
    a.w = walk_over(&a.lead);
    const dims *ops[3] = {&q, &k, &v};
    for (int i = 0; i < 3 + (mask_k >= 0); i++) {
        dims d = i < 3 ? *ops[i] : arg_dims(r, id, mask_k);
        int64_t mat = d.dim[d.rank - 2] * d.dim[d.rank - 1], s[EM3_MAX_RANK];
        if (i == 3) a.mrow = d.dim[d.rank - 2] == 1 ? 0 : a.tk;
        d.rank -= 2;
        bcast_strides(&d, &a.lead, mat, s);
        walk_add(&a.w, s);
    }
    return a;
}

static bool ref_attention(em3_run *r, int id) {
    const em3_node *n = node_of(r, id);
    dims od = dims_of(r, id);
    od.rank -= 2;
    att_walk a = attention_walk(r, id, n->n_in == 4 ? 3 : -1, &od);
    const double *mask = n->n_in == 4 ? arg(r, id, 3) : NULL;
    double *out = out_of(r, id), scale = n->attr[0].f;
    double *p = em3_xmalloc(sizeof(double) * (size_t)(a.tq * a.tk));
    for (int64_t s = 0, e = numel(&a.lead); s < e; s++, walk_next(&a.w)) {
        attention_probs(arg(r, id, 0) + a.w.off[0], arg(r, id, 1) + a.w.off[1], mask ? mask + a.w.off[3] : NULL,
                        a.mrow, a.tq, a.tk, a.dh, scale, p);
        gemm(false, false, a.tq, a.dv, a.tk, p, a.tk, arg(r, id, 2) + a.w.off[2], a.dv, out + s * a.tq * a.dv);
    }
    free(p);
    return true;
}

/* [dq; dk; dv] per slice: dv = pᵀ do, ds = p ∘ (do vᵀ − rowsum(do ∘ o)), dq = scale ds k,
 * dk = scale dsᵀ q. */
static bool ref_attention_grad(em3_run *r, int id) {
    const em3_node *n = node_of(r, id);
    dims od = dims_of(r, id);
    od.rank -= 2;
    att_walk a = attention_walk(r, id, n->n_in == 6 ? 5 : -1, &od);
    const double *mask = n->n_in == 6 ? arg(r, id, 5) : NULL, *o = arg(r, id, 3), *dout = arg(r, id, 4);
    double *out = out_of(r, id), scale = n->attr[0].f;
    int64_t tq = a.tq, tk = a.tk, dh = a.dh, block = (tq + 2 * tk) * dh;
    double *p = em3_xmalloc(sizeof(double) * (size_t)(tq * tk)), *ds = em3_xmalloc(sizeof(double) * (size_t)(tq * tk));
    for (int64_t s = 0, e = numel(&a.lead); s < e; s++, walk_next(&a.w)) {
        const double *q = arg(r, id, 0) + a.w.off[0], *k = arg(r, id, 1) + a.w.off[1], *v = arg(r, id, 2) + a.w.off[2];
        const double *os = o + s * tq * dh, *dos = dout + s * tq * dh;
        double *dq = out + s * block, *dk = dq + tq * dh, *dv = dk + tk * dh;
        attention_probs(q, k, mask ? mask + a.w.off[3] : NULL, a.mrow, tq, tk, dh, scale, p);
        for (int64_t i = 0; i < tq; i++) {
            double D = 0;
            for (int64_t c = 0; c < dh; c++) D += dos[i * dh + c] * os[i * dh + c];
            for (int64_t j = 0; j < tk; j++) {
                double dp = 0;
                for (int64_t c = 0; c < dh; c++) dp += dos[i * dh + c] * v[j * dh + c];
                ds[i * tk + j] = p[i * tk + j] * (dp - D) * scale;
            }
        }
        gemm(false, false, tq, dh, tk, ds, tk, k, dh, dq);
        gemm(true, false, tk, dh, tq, ds, tk, q, dh, dk);
        gemm(true, false, tk, dh, tq, p, tk, dos, dh, dv);
    }
    free(p);
    free(ds);
    return true;
}

static bool ref_lora_matmul(em3_run *r, int id) {
    const em3_node *n = node_of(r, id);
    dims xd = arg_dims(r, id, 0), ad = arg_dims(r, id, 2), od = dims_of(r, id);
    int64_t din = xd.dim[xd.rank - 1], rank = ad.dim[1], dout = od.dim[od.rank - 1], rows = numel(&xd) / din;
    double *t = em3_xmalloc(sizeof(double) * (size_t)(rows * rank)), *u = em3_xmalloc(sizeof(double) * (size_t)(rows * dout));
    double *out = out_of(r, id), scale = n->attr[0].f;
    gemm(false, false, rows, dout, din, arg(r, id, 0), din, arg(r, id, 1), dout, out);
    gemm(false, false, rows, rank, din, arg(r, id, 0), din, arg(r, id, 2), rank, t);
    gemm(false, false, rows, dout, rank, t, rank, arg(r, id, 3), dout, u);
    for (int64_t i = 0; i < rows * dout; i++) out[i] += scale * u[i];
    free(t);
    free(u);
    return true;
}

/* ---- gather ---------------------------------------------------------------------------------- */

static bool ref_gather(em3_run *r, int id) {
    const double *table = arg(r, id, 0), *ids = arg(r, id, 1);
    double *out = out_of(r, id);
    dims td = arg_dims(r, id, 0), idd = arg_dims(r, id, 1);
    int64_t rows = td.dim[0], row = numel(&td) / rows;
    for (int64_t i = 0, e = numel(&idd); i < e; i++) {
        double v = ids[i];
        if (!is_whole(v)) return user_error(r, "gather %%%d: id %.15g is not an integer", id, v);
        if (v < 0 || v >= (double)rows)
            return user_error(r, "gather %%%d: id %.15g is outside the table's %lld rows", id, v,
                              (long long)rows);
        memcpy(out + i * row, table + (int64_t)v * row, sizeof(double) * (size_t)row);
    }
    return true;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* the distinct ids, ascending; from here on the node's symbol has their count */
static bool ref_unique(em3_run *r, int id) {
    const double *ids = arg(r, id, 0);
    double *out = out_of(r, id);
    dims d = arg_dims(r, id, 0);
    int64_t n = numel(&d), u = 0;
    memcpy(out, ids, sizeof(double) * (size_t)n);
    qsort(out, (size_t)n, sizeof(double), cmp_double);
    for (int64_t i = 0; i < n; i++)
        if (u == 0 || out[i] != out[u - 1]) out[u++] = out[i];
    r->it->sym[node_of(r, id)->attr[0].i] = u;
    return true;
}

static bool ref_index_of(em3_run *r, int id) {
    const double *ids = arg(r, id, 0), *u = arg(r, id, 1);
    double *out = out_of(r, id);
    dims d = arg_dims(r, id, 0), du = arg_dims(r, id, 1);
    for (int64_t i = 0, n = numel(&d); i < n; i++) {
        int64_t lo = 0, hi = du.dim[0];
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (u[mid] < ids[i]) lo = mid + 1;
            else hi = mid;
        }
        if (lo == du.dim[0] || u[lo] != ids[i])
            return user_error(r, "index_of %%%d: id %.15g is not among the %lld distinct ids", id, ids[i],
                              (long long)du.dim[0]);
        out[i] = (double)lo;
    }
    return true;
}

/* y = G x (or Gᵀ x) with the graph's current matrix, rows of x of any width */
static bool ref_spmm(em3_run *r, int id) {
    const em3_node *n = node_of(r, id);
    int g = em3_module_find_global(r->it->mod, n->attr[0].s);
    EM3_ASSERT(g >= 0, "spmm of an unknown graph @%s", n->attr[0].s);
    if (!r->it->graph[g]) return user_error(r, "graph @%s is not bound (it is built from a dataset)", n->attr[0].s);
    const em3_rt_graph *v = em3_graph_view(r->it->graph[g]);
    const em3_csr *a = n->attr[1].i ? &v->mt : &v->m;
    const double *x = arg(r, id, 0);
    double *y = out_of(r, id);
    dims d = dims_of(r, id);
    int64_t width = numel(&d) / d.dim[0];
    for (int64_t i = 0; i < a->rows; i++)
        for (int64_t k = 0; k < width; k++) {
            double s = 0;
            for (int64_t e = a->ptr[i]; e < a->ptr[i + 1]; e++) s += a->val[e] * x[a->col[e] * width + k];
            y[i * width + k] = s;
        }
    return true;
}

static void round_to_float(double *v, int64_t n) {
    for (int64_t i = 0; i < n; i++) v[i] = (double)(float)v[i];
}

/* ---- backward helpers ------------------------------------------------------------------------ */

/* Checks the ids of operand `k` against a table of `rows` rows (a data error otherwise). */
static bool check_ids(const em3_run *r, int id, const double *ids, int64_t n, int64_t rows) {
    for (int64_t i = 0; i < n; i++) {
        if (!is_whole(ids[i]))
            return user_error(r, "%s %%%d: id %.15g is not an integer", em3_op_name(node_of(r, id)->op),
                              id, ids[i]);
        if (ids[i] < 0 || ids[i] >= (double)rows)
            return user_error(r, "%s %%%d: id %.15g is outside the table's %lld rows",
                              em3_op_name(node_of(r, id)->op), id, ids[i], (long long)rows);
    }
    return true;
}

static bool ref_scatter_add(em3_run *r, int id) {
    const double *base = arg(r, id, 0), *ids = arg(r, id, 1), *src = arg(r, id, 2);
    double *out = out_of(r, id);
    dims td = arg_dims(r, id, 0), idd = arg_dims(r, id, 1);
    int64_t rows = td.dim[0], row = numel(&td) / rows, n = numel(&idd);
    if (!check_ids(r, id, ids, n, rows)) return false;
    memcpy(out, base, sizeof(double) * (size_t)numel(&td));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < row; j++) out[(int64_t)ids[i] * row + j] += src[i * row + j];
    return true;
}

static bool ref_numel(em3_run *r, int id) {
    const em3_node *n = node_of(r, id);
    dims d = arg_dims(r, id, 0);
    double c = 1;
    for (int i = 0; i < n->attr[0].n; i++) c *= (double)d.dim[n->attr[0].list[i]];
    out_of(r, id)[0] = c;
    return true;
}

/* dx of layer_norm over the last axis: with x̂ = (x − μ)·rstd and g = dy·γ,
 * dx = rstd·(g − mean(g) − x̂·mean(g·x̂)). */
static bool ref_layer_norm_grad(em3_run *r, int id) {
    const double *x = arg(r, id, 0), *gamma = arg(r, id, 1), *dy = arg(r, id, 2);
    double *out = out_of(r, id), eps = node_of(r, id)->attr[0].f;
    dims d = arg_dims(r, id, 0);
    int64_t n = d.dim[d.rank - 1], rows = numel(&d) / n;
    for (int64_t i = 0; i < rows; i++) {
        const double *xr = x + i * n, *dr = dy + i * n;
        double mu = 0, var = 0, mg = 0, mgx = 0;
        for (int64_t k = 0; k < n; k++) mu += xr[k];
        mu /= (double)n;
        for (int64_t k = 0; k < n; k++) var += (xr[k] - mu) * (xr[k] - mu);
        double rstd = 1.0 / sqrt(var / (double)n + eps);
        for (int64_t k = 0; k < n; k++) {
            double g = dr[k] * gamma[k];
            mg += g;
            mgx += g * (xr[k] - mu) * rstd;
        }
        mg /= (double)n;
        mgx /= (double)n;
        for (int64_t k = 0; k < n; k++)
            out[i * n + k] = rstd * (dr[k] * gamma[k] - mg - (xr[k] - mu) * rstd * mgx);
    }
    return true;
}

/* Sparse gradients: n (id, row) pairs with repeats, merged into unique ids with summed rows. */
typedef struct {
    int64_t n;
    int64_t *id;
    double *row;
} merged_rows;

static int cmp_pair(const void *a, const void *b) {
    const double *x = a, *y = b;
    return (x[0] > y[0]) - (x[0] < y[0]) ? (x[0] > y[0]) - (x[0] < y[0]) : (x[1] > y[1]) - (x[1] < y[1]);
}

static merged_rows merge_rows(const double *ids, const double *rows, int64_t n, int64_t width) {
    double *order = em3_xmalloc(sizeof(double) * 2 * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        order[2 * i] = ids[i];
        order[2 * i + 1] = (double)i; /* stable: repeats are summed in input order */
    }
    qsort(order, (size_t)n, 2 * sizeof(double), cmp_pair);
    merged_rows m = {0, em3_xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1)),
                     em3_xcalloc((size_t)(n ? n : 1) * (size_t)(width ? width : 1), sizeof(double))};
    for (int64_t i = 0; i < n; i++) {
        if (i == 0 || order[2 * i] != order[2 * i - 2]) m.id[m.n++] = (int64_t)order[2 * i];
        const double *src = rows + (int64_t)order[2 * i + 1] * width;
        for (int64_t j = 0; j < width; j++) m.row[(m.n - 1) * width + j] += src[j];
    }
    free(order);
    return m;
}

static void merged_free(merged_rows *m) {
    free(m->id);
    free(m->row);
}

static bool ref_sparse_sqnorm(em3_run *r, int id) {
    dims idd = arg_dims(r, id, 0), rd = arg_dims(r, id, 1);
    int64_t n = numel(&idd), width = n ? numel(&rd) / n : 0;
    merged_rows m = merge_rows(arg(r, id, 0), arg(r, id, 1), n, width);
    double s = 0;
    for (int64_t i = 0; i < m.n * width; i++) s += m.row[i] * m.row[i];
    merged_free(&m);
    out_of(r, id)[0] = s;
    return true;
}

/* ---- optimizer updates: write the globals of operand 0 and the state operands ------------------ */

static double *global_of(const em3_run *r, int id, int k) {
    const em3_node *p = node_of(r, node_of(r, id)->in[k]);
    int g = em3_module_find_global(r->it->mod, p->attr[0].s);
    EM3_ASSERT(g >= 0, "update operand @%s has no global", p->attr[0].s);
    return r->it->global[g];
}

/* One optimizer step on `n` elements of a parameter (p) with gradient g and the state arrays
 * s0, s1 (as the op needs them): the formulas of PyTorch's SGD, Adagrad, Adam and AdamW. */
static void step_rows(const em3_node *nd, double *p, const double *g, double *s0, double *s1,
                      int64_t n, double lr, double t) {
    double wd = em3_node_f(nd, "wd");
    for (int64_t i = 0; i < n; i++) {
        double gi = g[i];
        switch (nd->op) {
        case EM3_OP_SGD_UPDATE:
        case EM3_OP_SPARSE_SGD_UPDATE: p[i] -= lr * (gi + wd * p[i]); break;
        case EM3_OP_MOMENTUM_UPDATE:
            s0[i] = em3_node_f(nd, "momentum") * s0[i] + gi + wd * p[i];
            p[i] -= lr * s0[i];
            break;
        case EM3_OP_ADAGRAD_UPDATE:
        case EM3_OP_SPARSE_ADAGRAD_UPDATE:
            gi += wd * p[i];
            s0[i] += gi * gi;
            p[i] -= lr * gi / (sqrt(s0[i]) + em3_node_f(nd, "eps"));
            break;
        case EM3_OP_ADAM_UPDATE:
        case EM3_OP_SPARSE_ADAM_UPDATE: {
            double b1 = em3_node_f(nd, "beta1"), b2 = em3_node_f(nd, "beta2");
            if (em3_node_i(nd, "decoupled"))
                p[i] *= 1 - lr * wd;
            else
                gi += wd * p[i];
            s0[i] = b1 * s0[i] + (1 - b1) * gi;
            s1[i] = b2 * s1[i] + (1 - b2) * gi * gi;
            double mhat = s0[i] / (1 - pow(b1, t)), vhat = s1[i] / (1 - pow(b2, t));
            p[i] -= lr * mhat / (sqrt(vhat) + em3_node_f(nd, "eps"));
            break;
        }
        default: EM3_UNREACHABLE("step_rows has no formula for %s", em3_op_name(nd->op));
        }
    }
}

/* The result of an update is the updated parameter (also written to its global). */
static void finish_update(em3_run *r, int id, double **written, int nw) {
    dims d = dims_of(r, id);
    int64_t n = numel(&d);
    for (int k = 0; k < nw && r->it->prec == EM3_PREC_F32; k++) round_to_float(written[k], n);
    memcpy(out_of(r, id), written[0], sizeof(double) * (size_t)n);
}

static bool ref_dense_update(em3_run *r, int id) {
    const em3_node *nd = node_of(r, id);
    dims d = dims_of(r, id);
    bool adam = nd->op == EM3_OP_ADAM_UPDATE;
    double *w[3] = {global_of(r, id, 0), nd->n_in > 3 ? global_of(r, id, adam ? 4 : 3) : NULL,
                    adam ? global_of(r, id, 5) : NULL};
    double t = adam ? arg(r, id, 3)[0] : 0;
    step_rows(nd, w[0], arg(r, id, 1), w[1], w[2], numel(&d), arg(r, id, 2)[0], t);
    finish_update(r, id, w, 1 + (w[1] != NULL) + (w[2] != NULL));
    return true;
}

static bool ref_sparse_update(em3_run *r, int id) {
    const em3_node *nd = node_of(r, id);
    dims td = dims_of(r, id), idd = arg_dims(r, id, 1);
    int64_t rows = td.dim[0], width = numel(&td) / rows, n = numel(&idd);
    if (!check_ids(r, id, arg(r, id, 1), n, rows)) return false;
    bool adam = nd->op == EM3_OP_SPARSE_ADAM_UPDATE;
    double *w[3] = {global_of(r, id, 0), nd->n_in > 4 ? global_of(r, id, adam ? 5 : 4) : NULL,
                    adam ? global_of(r, id, 6) : NULL};
    double lr = arg(r, id, 3)[0], t = adam ? arg(r, id, 4)[0] : 0;
    merged_rows m = merge_rows(arg(r, id, 1), arg(r, id, 2), n, width);
    for (int64_t i = 0; i < m.n; i++) {
        int64_t o = m.id[i] * width;
        step_rows(nd, w[0] + o, m.row + i * width, w[1] ? w[1] + o : NULL, w[2] ? w[2] + o : NULL,
                  width, lr, t);
    }
    merged_free(&m);
    finish_update(r, id, w, 1 + (w[1] != NULL) + (w[2] != NULL));
    return true;
}

/* ---- the interpreter ------------------------------------------------------------------------- */

em3_interp *em3_interp_create(const em3_module *m, em3_precision p) {
    em3_interp *it = em3_xcalloc(1, sizeof(*it));
    it->mod = m;
    it->prec = p;
    it->global = em3_xcalloc((size_t)(m->n_global ? m->n_global : 1), sizeof(double *));
    it->graph = em3_xcalloc((size_t)(m->n_global ? m->n_global : 1), sizeof(em3_graph *));
    for (int i = 0; i < m->n_global; i++) {
        const em3_global *g = &m->global[i];
        EM3_ASSERT(!em3_type_has_batch(&g->type), "global @%s has the batch dimension", g->name);
        if (g->kind != EM3_GLOBAL_GRAPH)
            it->global[i] = em3_xcalloc((size_t)em3_type_numel(&g->type, 1), sizeof(double));
    }
    return it;
}

static void release_run(em3_interp *it) {
    if (it->val)
        for (int i = 0; i < it->func->n_node; i++) free(it->val[i]);
    free(it->val);
    it->val = NULL;
    it->func = NULL;
}

void em3_interp_free(em3_interp *it) {
    if (!it) return;
    release_run(it);
    for (int i = 0; i < it->mod->n_global; i++) free(it->global[i]);
    free(it->global);
    free(it->graph);
    free(it);
}

void em3_interp_init_globals(em3_interp *it, uint64_t seed) {
    for (int i = 0; i < it->mod->n_global; i++) {
        const em3_global *g = &it->mod->global[i];
        if (g->kind == EM3_GLOBAL_DATA || g->kind == EM3_GLOBAL_GRAPH) continue;
        em3_init_global(g, seed, it->global[i], sizeof(double));
        if (it->prec == EM3_PREC_F32) round_to_float(it->global[i], em3_type_numel(&g->type, 1));
    }
}

double *em3_interp_global(em3_interp *it, const char *name) {
    int g = em3_module_find_global(it->mod, name);
    return g < 0 ? NULL : it->global[g];
}

void em3_interp_bind_graph(em3_interp *it, const char *name, const em3_graph *g) {
    int i = em3_module_find_global(it->mod, name);
    EM3_ASSERT(i >= 0 && it->mod->global[i].kind == EM3_GLOBAL_GRAPH, "@%s is not a graph global", name);
    const em3_rt_graph *v = em3_graph_view(g);
    EM3_ASSERT(v->m.rows == it->mod->global[i].type.dim[0] && v->m.cols == it->mod->global[i].type.dim[1],
               "graph @%s bound to a matrix of another shape", name);
    it->graph[i] = g;
}

/* Inputs that the function does not declare are ignored, so that one batch can feed both the
 * training and the evaluation function. */
bool em3_interp_run(em3_interp *it, const char *func, int64_t batch, const em3_interp_input *in,
                    int n_in, char *err, size_t errlen) {
    EM3_ASSERT(batch > 0, "batch size %lld", (long long)batch);
    release_run(it);
    const em3_func *f = em3_module_find_func(it->mod, func);
    if (!f) {
        snprintf(err, errlen, "module @%s has no function @%s", it->mod->name, func);
        return false;
    }
    it->func = f;
    em3_func_symbols(f, batch, it->sym);
    it->val = em3_xcalloc((size_t)(f->n_node ? f->n_node : 1), sizeof(double *));
    em3_run r = {it, f, in, n_in, err, errlen};
    for (int id = 0; id < f->n_node; id++) {
        const em3_node *n = &f->node[id];
        int64_t count = em3_type_numel_at(&n->type, it->sym);
        it->val[id] = em3_xmalloc(sizeof(double) * (size_t)(count ? count : 1));
        if (!kernels[n->op](&r, id)) {
            release_run(it);
            return false;
        }
        if (it->prec == EM3_PREC_F32 && n->type.dtype == EM3_DTYPE_F32)
            round_to_float(it->val[id], em3_type_numel_at(&n->type, it->sym));
    }
    return true;
}

const double *em3_interp_output(const em3_interp *it, const char *name, em3_type *type) {
    if (!it->func) return NULL;
    for (int i = 0; i < it->func->n_out; i++)
        if (!strcmp(it->func->out[i].name, name)) {
            int v = it->func->out[i].value;
            if (type) *type = it->func->node[v].type;
            return it->val[v];
        }
    return NULL;
}

const double *em3_interp_value(const em3_interp *it, int id) {
    EM3_ASSERT(it->func, "no run to read value %%%d from", id);
    EM3_ASSERT(id >= 0 && id < it->func->n_node, "value %%%d out of range", id);
    return it->val[id];
}
