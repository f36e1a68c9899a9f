/* passes/autodiff.h — internal to the autodiff pass: the interface of the VJP rules named in
 * ir/ops.def's vjp column (implemented in passes/vjp.c). */
#ifndef EM3_AUTODIFF_H
#define EM3_AUTODIFF_H

#include "ir/builder.h"

/* One node's VJP: given the gradient `dy` of its result `y`, emit the gradient of each operand
 * `i` with need[i] into dx[i] (a value of exactly that operand's type). Operand values are
 * n->in[i]; the training function numbers values as @forward does. */
typedef struct {
    em3_builder b;
    const em3_node *n;
    int y, dy;
    const bool *need;
    int *dx;
    em3_diag *diag; /* for what cannot be differentiated (IR read from text can ask) */
    bool failed;
} em3_vjp;

typedef void em3_vjp_fn(em3_vjp *v);

#define OP(E, NAME, ARITY, KIND, ATTRS, FLAGS, SHAPE, REF, VJP, ...) em3_vjp_fn VJP;
#include "ir/ops.def"
#undef OP

em3_vjp_fn *em3_op_vjp(em3_op op);

#endif
