/* ir/builder.c — see builder.h. */
#include "builder.h"

#include <string.h>

const em3_type *em3_b_type(const em3_builder *b, int v) { return &em3_func_node(b->f, v)->type; }

int em3_b_node(em3_builder *b, em3_node *proto, const int *in, int n_in) {
    proto->loc = b->loc;
    return em3_func_add_checked(b->f, proto, in, n_in);
}

int em3_b_fill(em3_builder *b, double v, const em3_type *t) {
    em3_node p = em3_node_proto(EM3_OP_CONST, b->loc);
    em3_node_set_f(&p, "value", v);
    p.type = *t;
    return em3_b_node(b, &p, NULL, 0);
}

int em3_b_const(em3_builder *b, double v, em3_dtype dt) {
    em3_type t = em3_type_make(dt, 0, NULL);
    return em3_b_fill(b, v, &t);
}

int em3_b_param(em3_builder *b, const char *global) {
    em3_node p = em3_node_proto(EM3_OP_PARAM, b->loc);
    em3_node_set_s(&p, "name", global);
    return em3_b_node(b, &p, NULL, 0);
}

int em3_b_input(em3_builder *b, const char *name, const em3_type *t) {
    em3_node p = em3_node_proto(EM3_OP_INPUT, b->loc);
    em3_node_set_s(&p, "name", name);
    p.type = *t;
    return em3_b_node(b, &p, NULL, 0);
}

/* The f32 scalar input `name`, made once per function. */
static int scalar_input(em3_builder *b, const char *name) {
    for (int i = 0; i < b->f->n_node; i++)
        if (b->f->node[i].op == EM3_OP_INPUT && !strcmp(b->f->node[i].attr[0].s, name)) return i;
    em3_type t = em3_type_make(EM3_DTYPE_F32, 0, NULL);
    return em3_b_input(b, name, &t);
}

int em3_b_step(em3_builder *b) { return scalar_input(b, "opt.step"); }
int em3_b_row0(em3_builder *b) { return scalar_input(b, "opt.row0"); }

int em3_b_unary(em3_builder *b, em3_op op, int x) {
    em3_node p = em3_node_proto(op, b->loc);
    return em3_b_node(b, &p, &x, 1);
}

int em3_b_binary(em3_builder *b, em3_op op, int x, int y) {
    em3_node p = em3_node_proto(op, b->loc);
    int in[2] = {x, y};
    return em3_b_node(b, &p, in, 2);
}

int em3_b_scale(em3_builder *b, int x, double s) {
    return em3_b_binary(b, EM3_OP_MUL, x, em3_b_const(b, s, em3_b_type(b, x)->dtype));
}

int em3_b_reduce(em3_builder *b, em3_op op, int x, const int64_t *axes, int n, bool keep) {
    if (n == 0) return x;
    em3_node p = em3_node_proto(op, b->loc);
    em3_node_set_list(&p, "axes", axes, n);
    em3_node_set_i(&p, "keepdims", keep);
    return em3_b_node(b, &p, &x, 1);
}

int em3_b_reduce_axis(em3_builder *b, em3_op op, int x, int axis, bool keep) {
    em3_node p = em3_node_proto(op, b->loc);
    em3_node_set_i(&p, "axis", axis);
    em3_node_set_i(&p, "keepdims", keep);
    return em3_b_node(b, &p, &x, 1);
}

int em3_b_softmax(em3_builder *b, em3_op op, int x, int axis) {
    em3_node p = em3_node_proto(op, b->loc);
    em3_node_set_i(&p, "axis", axis);
    return em3_b_node(b, &p, &x, 1);
}

int em3_b_reshape(em3_builder *b, int x, const int64_t *dims, int rank) {
    em3_type want = em3_type_make(em3_b_type(b, x)->dtype, rank, dims);
    if (em3_type_eq(em3_b_type(b, x), &want)) return x;
    em3_node p = em3_node_proto(EM3_OP_RESHAPE, b->loc);
    em3_node_set_list(&p, "shape", dims, rank);
    return em3_b_node(b, &p, &x, 1);
}

/* Types passed in may live in the node array, which adding a node can move: copy them first. */
int em3_b_broadcast(em3_builder *b, int x, const em3_type *to_) {
    const em3_type to_copy = *to_, *to = &to_copy;
    em3_type want = *to;
    want.dtype = em3_b_type(b, x)->dtype;
    if (em3_type_eq(em3_b_type(b, x), &want)) return x;
    em3_node p = em3_node_proto(EM3_OP_BROADCAST, b->loc);
    em3_node_set_list(&p, "shape", to->dim, to->rank);
    return em3_b_node(b, &p, &x, 1);
}

int em3_b_transpose(em3_builder *b, int x, const int64_t *perm) {
    int r = em3_b_type(b, x)->rank;
    bool identity = true;
    for (int i = 0; i < r; i++) identity &= perm[i] == i;
    if (identity) return x;
    em3_node p = em3_node_proto(EM3_OP_TRANSPOSE, b->loc);
    em3_node_set_list(&p, "perm", perm, r);
    return em3_b_node(b, &p, &x, 1);
}

int em3_b_slice(em3_builder *b, int x, int axis, int64_t start, int64_t end) {
    if (start == 0 && end == em3_b_type(b, x)->dim[axis]) return x;
    em3_node p = em3_node_proto(EM3_OP_SLICE, b->loc);
    em3_node_set_i(&p, "axis", axis);
    em3_node_set_i(&p, "start", start);
    em3_node_set_i(&p, "end", end);
    return em3_b_node(b, &p, &x, 1);
}

int em3_b_concat(em3_builder *b, const int *xs, int n, int axis) {
    if (n == 1) return xs[0];
    em3_node p = em3_node_proto(EM3_OP_CONCAT, b->loc);
    em3_node_set_i(&p, "axis", axis);
    return em3_b_node(b, &p, xs, n);
}

int em3_b_matmul(em3_builder *b, int x, int y, bool ta, bool tb) {
    em3_node p = em3_node_proto(EM3_OP_MATMUL, b->loc);
    em3_node_set_i(&p, "ta", ta);
    em3_node_set_i(&p, "tb", tb);
    int in[2] = {x, y};
    return em3_b_node(b, &p, in, 2);
}

int em3_b_gather(em3_builder *b, int table, int ids) {
    em3_node p = em3_node_proto(EM3_OP_GATHER, b->loc);
    int in[2] = {table, ids};
    return em3_b_node(b, &p, in, 2);
}

int em3_b_numel(em3_builder *b, int x, const int64_t *axes, int n) {
    em3_node p = em3_node_proto(EM3_OP_NUMEL, b->loc);
    em3_node_set_list(&p, "axes", axes, n);
    return em3_b_node(b, &p, &x, 1);
}

int em3_b_unbroadcast(em3_builder *b, int g, const em3_type *to_) {
    const em3_type to_copy = *to_, *to = &to_copy, gt_copy = *em3_b_type(b, g), *gt = &gt_copy;
    EM3_ASSERT(gt->rank >= to->rank, "unbroadcast of rank %d to rank %d", gt->rank, to->rank);
    int64_t axes[EM3_MAX_RANK];
    int n = 0, lead = gt->rank - to->rank;
    for (int i = 0; i < gt->rank; i++)
        if (i < lead || (to->dim[i - lead] == 1 && gt->dim[i] != 1)) axes[n++] = i;
    int s = em3_b_reduce(b, EM3_OP_SUM, g, axes, n, false);
    return em3_b_reshape(b, s, to->dim, to->rank);
}
