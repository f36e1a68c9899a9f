/* passes/vjp.c — the vector-Jacobian product of every differentiable op, each emitted as IR
 * nodes from the op's result gradient. Broadcast operands get their gradient summed back to
 * their shape (em3_b_unbroadcast); matmul against a 2-D weight contracts over all leading
 * dimensions with one GEMM; gather's gradient is a scatter_add that autodiff chains and the
 * optimizer pass turns into a sparse row update. */
#include <math.h>
#include <string.h>

#include "autodiff.h"

static em3_vjp_fn *const vjp_table[EM3_OP_COUNT] = {
#define OP(E, NAME, ARITY, KIND, ATTRS, FLAGS, SHAPE, REF, VJP, ...) [EM3_OP_##E] = VJP,
#include "ir/ops.def"
#undef OP
};

em3_vjp_fn *em3_op_vjp(em3_op op) { return vjp_table[op]; }

#define B (&v->b)
#define X(i) (v->n->in[i])
#define T(val) em3_b_type(B, (val))
#define BIN(op, a, c) em3_b_binary(B, (op), (a), (c))
#define K(x) em3_b_const(B, (x), EM3_DTYPE_F32)

void no_vjp(em3_vjp *v) {
    EM3_UNREACHABLE("%s has no differentiable operand, yet autodiff asked for its VJP",
               em3_op_name(v->n->op));
}

/* d/dx f(x) = dy * f'(x), f' given as a value */
static void chain(em3_vjp *v, int deriv) { v->dx[0] = BIN(EM3_OP_MUL, v->dy, deriv); }

void vjp_neg(em3_vjp *v) { v->dx[0] = em3_b_unary(B, EM3_OP_NEG, v->dy); }
void vjp_exp(em3_vjp *v) { chain(v, v->y); }
void vjp_log(em3_vjp *v) { v->dx[0] = BIN(EM3_OP_DIV, v->dy, X(0)); }
void vjp_sqrt(em3_vjp *v) { v->dx[0] = BIN(EM3_OP_DIV, v->dy, em3_b_scale(B, v->y, 2.0)); }
void vjp_rsqrt(em3_vjp *v) {
    int y3 = BIN(EM3_OP_MUL, v->y, BIN(EM3_OP_MUL, v->y, v->y));
    chain(v, em3_b_scale(B, y3, -0.5));
}
void vjp_abs(em3_vjp *v) {
    int zero = K(0);
    chain(v, BIN(EM3_OP_SUB, BIN(EM3_OP_GT, X(0), zero), BIN(EM3_OP_LT, X(0), zero)));
}
void vjp_tanh(em3_vjp *v) { chain(v, BIN(EM3_OP_SUB, K(1), BIN(EM3_OP_MUL, v->y, v->y))); }
void vjp_sigmoid(em3_vjp *v) {
    chain(v, BIN(EM3_OP_MUL, v->y, BIN(EM3_OP_SUB, K(1), v->y)));
}
void vjp_relu(em3_vjp *v) { chain(v, BIN(EM3_OP_GT, X(0), K(0))); }
void vjp_gelu(em3_vjp *v) { v->dx[0] = BIN(EM3_OP_GELU_GRAD, X(0), v->dy); }
void vjp_dropout(em3_vjp *v) { v->dx[0] = v->dy; }
/* the same mask (same salt, step and row0) applied to dy: nothing of the forward is kept */
void vjp_dropout_train(em3_vjp *v) {
    em3_node p = em3_node_proto(EM3_OP_DROPOUT_TRAIN, B->loc);
    em3_node_set_f(&p, "p", em3_node_f(v->n, "p"));
    em3_node_set_i(&p, "salt", em3_node_i(v->n, "salt"));
    int in[3] = {v->dy, X(1), X(2)};
    v->dx[0] = em3_b_node(B, &p, in, 3);
}
void vjp_softplus(em3_vjp *v) { chain(v, em3_b_unary(B, EM3_OP_SIGMOID, X(0))); }

/* Gradient g of a broadcast result, summed back to operand i's shape. The type is copied: a
 * pointer into the node array dies when the next node is appended. */
static void to_operand(em3_vjp *v, int i, int g) {
    em3_type to = *T(X(i));
    if (v->need[i]) v->dx[i] = em3_b_unbroadcast(B, g, &to);
}

void vjp_add(em3_vjp *v) {
    to_operand(v, 0, v->dy);
    to_operand(v, 1, v->dy);
}
void vjp_sub(em3_vjp *v) {
    to_operand(v, 0, v->dy);
    if (v->need[1]) to_operand(v, 1, em3_b_unary(B, EM3_OP_NEG, v->dy));
}
void vjp_mul(em3_vjp *v) {
    if (v->need[0]) to_operand(v, 0, BIN(EM3_OP_MUL, v->dy, X(1)));
    if (v->need[1]) to_operand(v, 1, BIN(EM3_OP_MUL, v->dy, X(0)));
}
void vjp_div(em3_vjp *v) {
    if (v->need[0]) to_operand(v, 0, BIN(EM3_OP_DIV, v->dy, X(1)));
    if (v->need[1]) /* d(a/b)/db = -(a/b)/b */
        to_operand(v, 1, em3_b_unary(B, EM3_OP_NEG,
                                     BIN(EM3_OP_DIV, BIN(EM3_OP_MUL, v->dy, v->y), X(1))));
}
/* maximum / minimum: the gradient goes to the winner; a tie splits it in halves (PyTorch) */
void vjp_minmax(em3_vjp *v) {
    em3_op win = v->n->op == EM3_OP_MAXIMUM ? EM3_OP_GT : EM3_OP_LT;
    int wa = BIN(EM3_OP_ADD, BIN(win, X(0), X(1)), em3_b_scale(B, BIN(EM3_OP_EQ, X(0), X(1)), 0.5));
    if (v->need[0]) to_operand(v, 0, BIN(EM3_OP_MUL, v->dy, wa));
    if (v->need[1]) to_operand(v, 1, BIN(EM3_OP_MUL, v->dy, BIN(EM3_OP_SUB, K(1), wa)));
}
void vjp_bce_logits(em3_vjp *v) {
    to_operand(v, 0, BIN(EM3_OP_MUL, v->dy,
                         BIN(EM3_OP_SUB, em3_b_unary(B, EM3_OP_SIGMOID, X(0)), X(1))));
}
void vjp_where(em3_vjp *v) {
    int zero = em3_b_const(B, 0, T(v->dy)->dtype);
    for (int i = 1; i <= 2; i++) {
        if (!v->need[i]) continue;
        em3_node p = em3_node_proto(EM3_OP_WHERE, B->loc);
        int in[3] = {X(0), i == 1 ? v->dy : zero, i == 1 ? zero : v->dy};
        to_operand(v, i, em3_b_node(B, &p, in, 3));
    }
}

/* A reduction's result gradient with the reduced axes kept as size 1, for broadcasting. */
static int keep_dims(em3_vjp *v, int g, const bool *reduced) {
    const em3_type *x = T(X(0));
    int64_t dims[EM3_MAX_RANK];
    for (int i = 0; i < x->rank; i++) dims[i] = reduced[i] ? 1 : x->dim[i];
    return em3_b_reshape(B, g, dims, x->rank);
}

static void reduced_axes(const em3_vjp *v, bool *reduced, const int64_t **axes, int *n) {
    memset(reduced, 0, sizeof(bool) * EM3_MAX_RANK);
    *axes = em3_node_list(v->n, "axes", n);
    for (int i = 0; i < *n; i++) reduced[(*axes)[i]] = true;
}

void vjp_sum(em3_vjp *v) {
    bool red[EM3_MAX_RANK];
    const int64_t *axes;
    int n;
    reduced_axes(v, red, &axes, &n);
    int g = keep_dims(v, v->dy, red);
    v->dx[0] = em3_b_broadcast(B, g, T(X(0)));
}
void vjp_mean(em3_vjp *v) {
    bool red[EM3_MAX_RANK];
    const int64_t *axes;
    int n;
    reduced_axes(v, red, &axes, &n);
    int g = BIN(EM3_OP_DIV, keep_dims(v, v->dy, red), em3_b_numel(B, X(0), axes, n));
    v->dx[0] = em3_b_broadcast(B, g, T(X(0)));
}
/* max: the gradient is shared evenly by the elements equal to the maximum */
void vjp_max(em3_vjp *v) {
    bool red[EM3_MAX_RANK];
    const int64_t *axes;
    int n;
    reduced_axes(v, red, &axes, &n);
    int mask = BIN(EM3_OP_EQ, X(0), keep_dims(v, v->y, red));
    int cnt = em3_b_reduce(B, EM3_OP_SUM, mask, axes, n, true);
    v->dx[0] = BIN(EM3_OP_MUL, keep_dims(v, v->dy, red), BIN(EM3_OP_DIV, mask, cnt));
}
void vjp_logsumexp(em3_vjp *v) {
    bool red[EM3_MAX_RANK] = {0};
    red[em3_node_i(v->n, "axis")] = true;
    int p = em3_b_unary(B, EM3_OP_EXP, BIN(EM3_OP_SUB, X(0), keep_dims(v, v->y, red)));
    v->dx[0] = BIN(EM3_OP_MUL, keep_dims(v, v->dy, red), p);
}
void vjp_softmax(em3_vjp *v) {
    int axis = (int)em3_node_i(v->n, "axis");
    int s = em3_b_reduce(B, EM3_OP_SUM, BIN(EM3_OP_MUL, v->dy, v->y), (int64_t[]){axis}, 1, true);
    v->dx[0] = BIN(EM3_OP_MUL, v->y, BIN(EM3_OP_SUB, v->dy, s));
}
void vjp_log_softmax(em3_vjp *v) {
    int axis = (int)em3_node_i(v->n, "axis");
    int s = em3_b_reduce(B, EM3_OP_SUM, v->dy, (int64_t[]){axis}, 1, true);
    v->dx[0] = BIN(EM3_OP_SUB, v->dy, BIN(EM3_OP_MUL, em3_b_unary(B, EM3_OP_EXP, v->y), s));
}
void vjp_layer_norm(em3_vjp *v) {
    double eps = em3_node_f(v->n, "eps");
    if (v->need[0]) {
        em3_node p = em3_node_proto(EM3_OP_LAYER_NORM_GRAD, B->loc);
        em3_node_set_f(&p, "eps", eps);
        v->dx[0] = em3_b_node(B, &p, (int[]){X(0), X(1), v->dy}, 3);
    }
    if (v->need[1]) { /* d gamma = sum of dy * x_hat, x_hat recomputed rather than stored */
        em3_type g = *T(X(1));
        em3_node p = em3_node_proto(EM3_OP_LAYER_NORM, B->loc);
        em3_node_set_f(&p, "eps", eps);
        int xhat = em3_b_node(B, &p, (int[]){X(0), em3_b_fill(B, 1, &g), em3_b_fill(B, 0, &g)}, 3);
        to_operand(v, 1, BIN(EM3_OP_MUL, v->dy, xhat));
    }
    to_operand(v, 2, v->dy);
}

void vjp_reshape(em3_vjp *v) {
    v->dx[0] = em3_b_reshape(B, v->dy, T(X(0))->dim, T(X(0))->rank);
}
void vjp_transpose(em3_vjp *v) {
    int n;
    const int64_t *perm = em3_node_list(v->n, "perm", &n);
    int64_t inv[EM3_MAX_RANK];
    for (int i = 0; i < n; i++) inv[perm[i]] = i;
    v->dx[0] = em3_b_transpose(B, v->dy, inv);
}
void vjp_concat(em3_vjp *v) {
    int axis = (int)em3_node_i(v->n, "axis");
    if (em3_dim_has_batch(T(v->y)->dim[axis])) {
        v->failed = true;
        em3_diag_error(v->diag, v->n->loc, "cannot differentiate concat along a batch dimension");
        return;
    }
    int64_t off = 0;
    for (int i = 0; i < v->n->n_in; i++) {
        int64_t len = T(X(i))->dim[axis];
        if (v->need[i]) v->dx[i] = em3_b_slice(B, v->dy, axis, off, off + len);
        off += len;
    }
}
/* the gradient of a slice: dy placed back between zeros */
void vjp_slice(em3_vjp *v) {
    int axis = (int)em3_node_i(v->n, "axis");
    int64_t s = em3_node_i(v->n, "start"), e = em3_node_i(v->n, "end");
    int64_t len = T(X(0))->dim[axis];
    int parts[3], n = 0;
    em3_type z = *T(v->dy);
    if (s > 0) {
        z.dim[axis] = s;
        parts[n++] = em3_b_fill(B, 0, &z);
    }
    parts[n++] = v->dy;
    if (e < len) {
        z.dim[axis] = len - e;
        parts[n++] = em3_b_fill(B, 0, &z);
    }
    v->dx[0] = em3_b_concat(B, parts, n, axis);
}
void vjp_broadcast(em3_vjp *v) { to_operand(v, 0, v->dy); }

/* [..., m, k] viewed as [M, k] with M the product of the leading dimensions, when that is
 * expressible (at most one of them symbolic); -1 otherwise. */
static int flatten_rows(em3_vjp *v, int x) {
    const em3_type *t = T(x);
    int64_t dims[2] = {0, t->dim[t->rank - 1]};
    if (!em3_dims_product(t->dim, t->rank - 1, &dims[0])) return -1;
    return em3_b_reshape(B, x, dims, 2);
}

/* C = op(A) op(B). With C's gradient G:
 *   dA = G op(B)^T   (or op(B) G^T when A is transposed)
 *   dB = op(A)^T G   (or G^T op(A) when B is transposed)
 * computed batched over C's leading dimensions and summed to the operand's shape; a 2-D
 * operand facing a batched one gets one GEMM over the flattened leading dimensions instead,
 * so no per-row partial gradients are ever stored. */
void vjp_matmul(em3_vjp *v) {
    bool ta = em3_node_i(v->n, "ta"), tb = em3_node_i(v->n, "tb");
    int a = X(0), b = X(1), g = v->dy;
    em3_type at = *T(a), bt = *T(b);
    if (v->need[0]) {
        int d = ta ? em3_b_matmul(B, b, g, tb, true) : em3_b_matmul(B, g, b, false, !tb);
        v->dx[0] = em3_b_unbroadcast(B, d, &at);
    }
    if (v->need[1]) {
        int af, gf;
        if (bt.rank == 2 && at.rank > 2 && !ta && (af = flatten_rows(v, a)) >= 0 &&
            (gf = flatten_rows(v, g)) >= 0) {
            v->dx[1] = tb ? em3_b_matmul(B, gf, af, true, false) : em3_b_matmul(B, af, gf, true, false);
        } else {
            int d = tb ? em3_b_matmul(B, g, a, true, ta) : em3_b_matmul(B, a, g, !ta, false);
            v->dx[1] = em3_b_unbroadcast(B, d, &bt);
        }
    }
}

void vjp_gather(em3_vjp *v) {
    int zero = em3_b_fill(B, 0, T(X(0)));
    em3_node p = em3_node_proto(EM3_OP_SCATTER_ADD, B->loc);
    v->dx[0] = em3_b_node(B, &p, (int[]){zero, X(1), v->dy}, 3);
}

/* y = G x  →  dx = Gᵀ dy: the same graph, the other orientation */
void vjp_spmm(em3_vjp *v) {
    em3_node p = em3_node_proto(EM3_OP_SPMM, B->loc);
    em3_node_set_s(&p, "graph", em3_node_s(v->n, "graph"));
    em3_node_set_i(&p, "transpose", !em3_node_i(v->n, "transpose"));
    v->dx[0] = em3_b_node(B, &p, (int[]){v->dy}, 1);
}

void vjp_scatter_add(em3_vjp *v) {
    if (v->need[0]) v->dx[0] = v->dy;
    if (v->need[2]) v->dx[2] = em3_b_gather(B, v->dy, X(1));
}

/* Fused attention: one attention_grad recomputes the probabilities and packs [dq; dk; dv]
 * along axis -2; each part is sliced out and summed to its operand's (broadcast) shape. */
void vjp_attention(em3_vjp *v) {
    const em3_type qt = *T(X(0)), kt = *T(X(1)), vt = *T(X(2));
    int64_t tq = qt.dim[qt.rank - 2], tk = kt.dim[kt.rank - 2];
    if (qt.dim[qt.rank - 1] != vt.dim[vt.rank - 1]) { /* fuse-attention never makes one */
        v->failed = true;
        em3_diag_error(v->diag, v->n->loc, "cannot differentiate attention whose values are not as "
                                           "wide as its queries (dh != dv)");
        return;
    }
    em3_node p = em3_node_proto(EM3_OP_ATTENTION_GRAD, B->loc);
    em3_node_set_f(&p, "scale", em3_node_f(v->n, "scale"));
    int in[6] = {X(0), X(1), X(2), v->y, v->dy}, n = 5;
    if (v->n->n_in == 4) in[n++] = X(3);
    int g = em3_b_node(B, &p, in, n);
    int axis = em3_b_type(B, g)->rank - 2;
    int64_t start[3] = {0, tq, tq + tk}, len[3] = {tq, tk, tk};
    for (int i = 0; i < 3; i++)
        if (v->need[i]) to_operand(v, i, em3_b_slice(B, g, axis, start[i], start[i] + len[i]));
}

/* y = x w + s (x a) b with w frozen:
 *   u = dy bᵀ,  dx = dy wᵀ + s u aᵀ,  da = s xᵀ u,  db = s (x a)ᵀ dy
 * with the weight gradients as one GEMM over all rows, and x a recomputed. */
static int rows_grad(em3_vjp *v, int lhs, int rhs) { /* lhsᵀ rhs over all leading rows */
    int lf = flatten_rows(v, lhs), rf = flatten_rows(v, rhs);
    if (lf >= 0 && rf >= 0) return em3_b_matmul(B, lf, rf, true, false);
    const em3_type *lt = T(lhs);
    em3_type two = em3_type_make(EM3_DTYPE_F32, 2, (int64_t[]){lt->dim[lt->rank - 1], T(rhs)->dim[T(rhs)->rank - 1]});
    return em3_b_unbroadcast(B, em3_b_matmul(B, lhs, rhs, true, false), &two);
}

void vjp_lora_matmul(em3_vjp *v) {
    double s = em3_node_f(v->n, "scale");
    int x = X(0), w = X(1), a = X(2), b = X(3);
    int u = em3_b_matmul(B, v->dy, b, false, true);
    if (v->need[0])
        v->dx[0] = BIN(EM3_OP_ADD, em3_b_matmul(B, v->dy, w, false, true),
                       em3_b_scale(B, em3_b_matmul(B, u, a, false, true), s));
    if (v->need[2]) v->dx[2] = rows_grad(v, x, em3_b_scale(B, u, s));
    if (v->need[3]) v->dx[3] = rows_grad(v, em3_b_scale(B, em3_b_matmul(B, x, a, false, false), s), v->dy);
}
