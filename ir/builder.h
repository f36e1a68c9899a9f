/* ir/builder.h — terse, typed construction of IR for passes (autodiff, optimizer, fusion):
 * each call appends one node through em3_func_add with the builder's location. Passes make
 * IR that must be valid, so a shape-rule failure here is an internal assertion. */
#ifndef EM3_BUILDER_H
#define EM3_BUILDER_H

#include "ir.h"

typedef struct {
    em3_func *f;
    em3_loc loc; /* stamped on every node: the DSL position a backward node stems from */
} em3_builder;

const em3_type *em3_b_type(const em3_builder *b, int v);
int em3_b_node(em3_builder *b, em3_node *proto, const int *in, int n_in);
int em3_b_const(em3_builder *b, double v, em3_dtype dt);            /* scalar */
int em3_b_fill(em3_builder *b, double v, const em3_type *t);       /* a tensor of one value */
int em3_b_param(em3_builder *b, const char *global);
int em3_b_input(em3_builder *b, const char *name, const em3_type *t);
/* The training step, input "opt.step" (f32[], 1 at the first step; the runtime feeds it),
 * made once per function: Adam's bias correction and dropout's masks share it. */
int em3_b_step(em3_builder *b);
/* The call's first row within the step's batch, input "opt.row0" (f32[]; 0 unless the runtime
 * runs the batch in parts — shards, ranks, a library's chunks), made once per function:
 * dropout's masks are drawn over the whole batch, however it is split. */
int em3_b_row0(em3_builder *b);
int em3_b_unary(em3_builder *b, em3_op op, int x);
int em3_b_binary(em3_builder *b, em3_op op, int x, int y);
int em3_b_scale(em3_builder *b, int x, double s);                  /* x * s */
int em3_b_reduce(em3_builder *b, em3_op op, int x, const int64_t *axes, int n, bool keep);
int em3_b_reduce_axis(em3_builder *b, em3_op op, int x, int axis, bool keep); /* logsumexp etc */
int em3_b_softmax(em3_builder *b, em3_op op, int x, int axis);
int em3_b_reshape(em3_builder *b, int x, const int64_t *dims, int rank); /* no-op if same */
int em3_b_broadcast(em3_builder *b, int x, const em3_type *to);    /* no-op if same shape */
int em3_b_transpose(em3_builder *b, int x, const int64_t *perm);
int em3_b_slice(em3_builder *b, int x, int axis, int64_t start, int64_t end);
int em3_b_concat(em3_builder *b, const int *xs, int n, int axis);
int em3_b_matmul(em3_builder *b, int x, int y, bool ta, bool tb);
int em3_b_gather(em3_builder *b, int table, int ids);
int em3_b_numel(em3_builder *b, int x, const int64_t *axes, int n);

/* Sums `g` (a gradient of a broadcast result) down to `to`'s shape: over the leading axes `to`
 * lacks and over the axes where `to` has 1. */
int em3_b_unbroadcast(em3_builder *b, int g, const em3_type *to);

#endif
