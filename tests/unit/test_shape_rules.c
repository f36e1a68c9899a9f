/* tests/unit/test_shape_rules.c — every shape rule of ops.def through em3_func_add, from a
 * table of operand types and attributes written as text: a valid row checks the result type,
 * an invalid row the error. A test walks ops.def and fails for any op without both kinds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "op_text.h"

/* One row: operand types separated by spaces (for INPUT and CONST: the declared type; "@g" for
 * a read of test_module's global g, as update ops need), the attributes as name=value (lists
 * as [1,B], symbols as @name), and the expected result type, or ERR(text) for a rejection whose
 * message contains text. */
typedef struct {
    em3_op op;
    const char *operands, *attrs, *expect;
} shape_case;

#define ERR(text) "!" text

static const shape_case cases[] = {
    /* leaves */
    {EM3_OP_INPUT, "i32[B,50]", "name=@hist vocab=20000 pad=0", "i32[B,50]"},
    {EM3_OP_INPUT, "f32[B,0]", "name=@x", ERR("must be positive")},
    {EM3_OP_PARAM, "", "name=@w", "f32[4,8]"},
    {EM3_OP_PARAM, "", "name=@nope", ERR("no global named @nope")},
    {EM3_OP_CONST, "f32[]", "value=1.5", "f32[]"},
    {EM3_OP_CONST, "i32[3,0]", "value=1", ERR("must be positive")},

    /* unary */
    {EM3_OP_NEG, "i32[B,3]", "", "i32[B,3]"},
    {EM3_OP_NEG, "f32[3] f32[3]", "", ERR("neg takes 1 operand, got 2")},
    {EM3_OP_ABS, "f32[B]", "", "f32[B]"},
    {EM3_OP_ABS, "", "", ERR("takes 1 operand, got 0")},
    {EM3_OP_STOP_GRADIENT, "f32[B,2]", "", "f32[B,2]"},
    {EM3_OP_STOP_GRADIENT, "f32[2] f32[2]", "", ERR("takes 1 operand")},
    {EM3_OP_DROPOUT, "f32[B,8]", "p=0.25", "f32[B,8]"},
    {EM3_OP_DROPOUT, "f32[B,8]", "p=1", ERR("needs 0 <= p < 1, got p = 1")},
    {EM3_OP_DROPOUT, "i32[B]", "p=0.5", ERR("needs a float tensor")},
    {EM3_OP_DROPOUT_TRAIN, "f32[B,8] f32[] f32[]", "p=0.5 salt=3", "f32[B,8]"},
    {EM3_OP_DROPOUT_TRAIN, "f32[B,8] f32[1] f32[]", "p=0.5 salt=3", ERR("step must be an f32 scalar, got f32[1]")},
    {EM3_OP_DROPOUT_TRAIN, "f32[B,8] f32[] i32[]", "p=0.5 salt=3", ERR("row0 must be an f32 scalar, got i32[]")},
    {EM3_OP_DROPOUT_TRAIN, "f32[B,8] f32[] f32[]", "p=-0.1 salt=3", ERR("needs 0 <= p < 1")},
    {EM3_OP_EXP, "f32[B,3]", "", "f32[B,3]"},
    {EM3_OP_EXP, "i32[B,3]", "", ERR("exp needs a float tensor")},
    {EM3_OP_LOG, "f32[2]", "", "f32[2]"},
    {EM3_OP_LOG, "i32[2]", "", ERR("needs a float tensor")},
    {EM3_OP_SQRT, "f32[]", "", "f32[]"},
    {EM3_OP_SQRT, "i32[]", "", ERR("needs a float tensor")},
    {EM3_OP_RSQRT, "f32[B]", "", "f32[B]"},
    {EM3_OP_RSQRT, "i32[B]", "", ERR("needs a float tensor")},
    {EM3_OP_TANH, "f32[B]", "", "f32[B]"},
    {EM3_OP_TANH, "i32[B]", "", ERR("needs a float tensor")},
    {EM3_OP_SIGMOID, "f32[B,1]", "", "f32[B,1]"},
    {EM3_OP_SIGMOID, "i32[B,1]", "", ERR("needs a float tensor")},
    {EM3_OP_RELU, "f32[B,200]", "", "f32[B,200]"},
    {EM3_OP_RELU, "i32[B]", "", ERR("needs a float tensor")},
    {EM3_OP_GELU, "f32[B,64]", "", "f32[B,64]"},
    {EM3_OP_GELU, "i32[B]", "", ERR("needs a float tensor")},
    {EM3_OP_SOFTPLUS, "f32[4]", "", "f32[4]"},
    {EM3_OP_SOFTPLUS, "i32[4]", "", ERR("needs a float tensor")},
    {EM3_OP_CAST, "f32[B]", "to=i32", "i32[B]"},
    {EM3_OP_CAST, "i32[2,3]", "to=f32", "f32[2,3]"},
    {EM3_OP_CAST, "f32[B]", "to=7", ERR("unknown dtype")},

    /* binary, with numpy broadcasting where B meets only B or 1 */
    {EM3_OP_ADD, "f32[B,3] f32[3]", "", "f32[B,3]"},
    {EM3_OP_ADD, "f32[B,1] f32[1,3]", "", "f32[B,3]"},
    {EM3_OP_ADD, "f32[1] f32[B]", "", "f32[B]"},
    {EM3_OP_ADD, "f32[2,1,4] f32[B,1]", "", "f32[2,B,4]"},
    {EM3_OP_ADD, "f32[B,3] f32[5,3]", "", ERR("shapes do not broadcast")},
    {EM3_OP_ADD, "f32[3] i32[3]", "", ERR("element types differ")},
    {EM3_OP_SUB, "i32[B] i32[B]", "", "i32[B]"},
    {EM3_OP_SUB, "f32[B] f32[5]", "", ERR("do not broadcast")},
    {EM3_OP_MUL, "f32[B,4] f32[]", "", "f32[B,4]"},
    {EM3_OP_MUL, "f32[2,3] f32[3,2]", "", ERR("do not broadcast")},
    {EM3_OP_DIV, "f32[B] f32[1]", "", "f32[B]"},
    {EM3_OP_DIV, "i32[B] i32[B]", "", ERR("div needs float operands")},
    {EM3_OP_MAXIMUM, "f32[B,2] f32[2]", "", "f32[B,2]"},
    {EM3_OP_MAXIMUM, "f32[B] i32[B]", "", ERR("element types differ")},
    {EM3_OP_MINIMUM, "i32[3] i32[1]", "", "i32[3]"},
    {EM3_OP_MINIMUM, "i32[3] i32[4]", "", ERR("do not broadcast")},
    {EM3_OP_EQ, "i32[B,50] i32[]", "", "f32[B,50]"}, /* comparisons give f32 masks */
    {EM3_OP_EQ, "i32[B] f32[B]", "", ERR("element types differ")},
    {EM3_OP_NE, "i32[B,50] i32[1]", "", "f32[B,50]"},
    {EM3_OP_NE, "i32[B,50] i32[B]", "", ERR("do not broadcast")},
    {EM3_OP_LT, "f32[B] f32[B]", "", "f32[B]"},
    {EM3_OP_LT, "f32[B] f32[2]", "", ERR("do not broadcast")},
    {EM3_OP_LE, "f32[B,1] f32[3]", "", "f32[B,3]"},
    {EM3_OP_LE, "f32[2] f32[3]", "", ERR("do not broadcast")},
    {EM3_OP_GT, "i32[2] i32[2]", "", "f32[2]"},
    {EM3_OP_GT, "f32[B] i32[B]", "", ERR("element types differ")},
    {EM3_OP_GE, "f32[B] f32[]", "", "f32[B]"},
    {EM3_OP_GE, "f32[B] f32[3]", "", ERR("do not broadcast")},
    {EM3_OP_BCE_LOGITS, "f32[B,1] f32[B,1]", "", "f32[B,1]"},
    {EM3_OP_BCE_LOGITS, "f32[B] i32[B]", "", ERR("needs float operands")},
    {EM3_OP_WHERE, "f32[B,1] f32[3] f32[]", "", "f32[B,3]"},
    {EM3_OP_WHERE, "f32[B,50] i32[B,50] i32[1]", "", "i32[B,50]"},
    {EM3_OP_WHERE, "f32[B] f32[3] i32[3]", "", ERR("different element types")},
    {EM3_OP_WHERE, "f32[B] f32[4] f32[4]", "", ERR("do not broadcast")},

    /* reductions */
    {EM3_OP_SUM, "f32[B,3,4]", "axes=[0,2]", "f32[3]"},
    {EM3_OP_SUM, "f32[B,3]", "axes=[1] keepdims=1", "f32[B,1]"},
    {EM3_OP_SUM, "f32[2,3]", "axes=[2]", ERR("axis 2 is out of range")},
    {EM3_OP_SUM, "f32[2,3]", "axes=[]", ERR("at least one axis")},
    {EM3_OP_SUM, "f32[2,3]", "axes=[1,1]", ERR("given twice")},
    {EM3_OP_MEAN, "f32[B,3]", "axes=[0]", "f32[3]"},
    {EM3_OP_MEAN, "i32[B,3]", "axes=[0]", ERR("mean needs a float tensor")},
    {EM3_OP_MAX, "i32[B,3]", "axes=[1]", "i32[B]"},
    {EM3_OP_MAX, "f32[B]", "axes=[1]", ERR("out of range")},
    {EM3_OP_LOGSUMEXP, "f32[B,5]", "axis=1", "f32[B]"},
    {EM3_OP_LOGSUMEXP, "f32[B,5]", "axis=0 keepdims=1", "f32[1,5]"},
    {EM3_OP_LOGSUMEXP, "i32[B,5]", "axis=1", ERR("needs a float tensor")},
    {EM3_OP_LOGSUMEXP, "f32[B,5]", "axis=2", ERR("out of range")},
    {EM3_OP_SOFTMAX, "f32[B,4,9]", "axis=2", "f32[B,4,9]"},
    {EM3_OP_SOFTMAX, "f32[B,4]", "axis=2", ERR("out of range")},
    {EM3_OP_LOG_SOFTMAX, "f32[B,4]", "axis=1", "f32[B,4]"},
    {EM3_OP_LOG_SOFTMAX, "i32[B,4]", "axis=1", ERR("needs a float tensor")},
    {EM3_OP_LAYER_NORM, "f32[B,8,4] f32[4] f32[4]", "eps=1e-6", "f32[B,8,4]"},
    {EM3_OP_LAYER_NORM, "f32[B,4] f32[5] f32[4]", "", ERR("needs gamma of f32[4]")},
    {EM3_OP_LAYER_NORM, "f32[B,4] f32[4] f32[1,4]", "", ERR("needs beta of f32[4]")},
    {EM3_OP_LAYER_NORM, "f32[4,B] f32[4] f32[4]", "", ERR("cannot normalise over the batch")},

    /* data movement */
    {EM3_OP_RESHAPE, "f32[B,2,3]", "shape=[B,6]", "f32[B,6]"},
    {EM3_OP_RESHAPE, "f32[B,6]", "shape=[3,B,2]", "f32[3,B,2]"},
    {EM3_OP_RESHAPE, "f32[B,2,3]", "shape=[B,5]", ERR("element counts differ")},
    {EM3_OP_RESHAPE, "f32[B,2]", "shape=[4]", ERR("each of B, U1, … must stay a dimension")},
    {EM3_OP_TRANSPOSE, "f32[B,2,3]", "perm=[2,0,1]", "f32[3,B,2]"},
    {EM3_OP_TRANSPOSE, "f32[2,3]", "perm=[0,0]", ERR("not a permutation")},
    {EM3_OP_TRANSPOSE, "f32[2,3]", "perm=[1]", ERR("permutation of 2 axes")},
    {EM3_OP_CONCAT, "f32[B,2] f32[B,3] f32[B,1]", "axis=1", "f32[B,6]"},
    {EM3_OP_CONCAT, "i32[2] i32[5]", "axis=0", "i32[7]"},
    {EM3_OP_CONCAT, "f32[B,2] f32[B,3]", "axis=0", ERR("does not fit")},
    {EM3_OP_CONCAT, "f32[B,2] f32[B*3,2]", "axis=0", "f32[B*4,2]"}, /* k·B joins m·B */
    {EM3_OP_CONCAT, "f32[B,2] f32[3,2]", "axis=0", ERR("batch dimension with a fixed one")},
    {EM3_OP_CONCAT, "f32[2] i32[2]", "axis=0", ERR("does not fit")},
    {EM3_OP_CONCAT, "f32[2] f32[2]", "axis=1", ERR("out of range")},
    {EM3_OP_CONCAT, "", "axis=0", ERR("at least 1 operand")},
    {EM3_OP_SLICE, "f32[B,5]", "axis=1 start=1 end=4", "f32[B,3]"},
    {EM3_OP_SLICE, "f32[B,5]", "axis=1 start=3 end=6", ERR("out of range")},
    {EM3_OP_SLICE, "f32[B,5]", "axis=1 start=2 end=2", ERR("out of range")},
    {EM3_OP_SLICE, "f32[B,5]", "axis=0 start=0 end=1", ERR("along the batch dimension")},
    {EM3_OP_BROADCAST, "f32[3]", "shape=[B,2,3]", "f32[B,2,3]"},
    {EM3_OP_BROADCAST, "f32[B,1]", "shape=[B,4]", "f32[B,4]"},
    {EM3_OP_BROADCAST, "f32[B,3]", "shape=[B,4]", ERR("cannot broadcast")},
    {EM3_OP_BROADCAST, "f32[2,3]", "shape=[3]", ERR("cannot broadcast")},
    {EM3_OP_BROADCAST, "f32[5]", "shape=[B]", ERR("cannot broadcast")},

    /* GEMM: ta/tb transpose the last two dims; leading dims broadcast */
    {EM3_OP_MATMUL, "f32[B,3] f32[3,4]", "", "f32[B,4]"},
    {EM3_OP_MATMUL, "f32[3,B] f32[3,4]", "ta=1", "f32[B,4]"},
    {EM3_OP_MATMUL, "f32[2,3] f32[4,3]", "tb=1", "f32[2,4]"},
    {EM3_OP_MATMUL, "f32[B,4,3] f32[B,5,4]", "ta=1 tb=1", "f32[B,3,5]"},
    {EM3_OP_MATMUL, "f32[2,1,3,4] f32[5,4,6]", "", "f32[2,5,3,6]"},
    {EM3_OP_MATMUL, "f32[B,8,16] f32[1,16,16]", "", "f32[B,8,16]"},
    {EM3_OP_MATMUL, "f32[B,3] f32[4,4]", "", ERR("inner dimensions differ")},
    {EM3_OP_MATMUL, "f32[3,4] f32[3,4]", "ta=0 tb=0", ERR("inner dimensions differ")},
    {EM3_OP_MATMUL, "f32[3] f32[3,4]", "", ERR("rank >= 2")},
    {EM3_OP_MATMUL, "f32[2,3,4] f32[5,4,6]", "", ERR("batch dimensions do not broadcast")},
    {EM3_OP_MATMUL, "f32[B,3,4] f32[5,4,6]", "", ERR("batch dimensions do not broadcast")},
    {EM3_OP_MATMUL, "i32[2,2] f32[2,2]", "", ERR("float operands")},

    /* gather */
    {EM3_OP_GATHER, "f32[10,4] i32[B,3]", "", "f32[B,3,4]"},
    {EM3_OP_GATHER, "i32[10,16] i32[B]", "", "i32[B,16]"},
    {EM3_OP_GATHER, "f32[10] i32[B]", "", "f32[B]"},
    {EM3_OP_GATHER, "f32[10,4] f32[B]", "", ERR("gather needs i32 ids")},
    {EM3_OP_GATHER, "f32[B,4] i32[3]", "", ERR("fixed number of rows")},
    {EM3_OP_GATHER, "f32[U1,4] i32[B,3]", "", "f32[B,3,4]"}, /* back from a batch's distinct items */
    {EM3_OP_GATHER, "f32[U1*2,4] i32[B]", "", ERR("fixed number of rows")},
    /* unique and index_of: the distinct ids of a batch as a dimension of their own */
    {EM3_OP_UNIQUE, "i32[B*50]", "sym=1", "i32[U1]"},
    {EM3_OP_UNIQUE, "i32[B]", "sym=7", "i32[U7]"},
    {EM3_OP_UNIQUE, "i32[B,50]", "sym=1", ERR("unique needs ids i32[B*k]")},
    {EM3_OP_UNIQUE, "i32[50]", "sym=1", ERR("unique needs ids i32[B*k]")},
    {EM3_OP_UNIQUE, "f32[B]", "sym=1", ERR("unique needs ids i32[B*k]")},
    {EM3_OP_UNIQUE, "i32[B]", "sym=0", ERR("symbol must be in 1..7")},
    {EM3_OP_UNIQUE, "i32[B]", "sym=8", ERR("symbol must be in 1..7")},
    {EM3_OP_INDEX_OF, "i32[B,50] i32[U2]", "", "i32[B,50]"},
    {EM3_OP_INDEX_OF, "i32[B] i32[B]", "", ERR("the i32[U] result of unique")},
    {EM3_OP_INDEX_OF, "i32[B] i32[U1*2]", "", ERR("the i32[U] result of unique")},
    {EM3_OP_INDEX_OF, "f32[B] i32[U1]", "", ERR("the i32[U] result of unique")},
    /* symbols never mix */
    {EM3_OP_RESHAPE, "f32[U1,8,4]", "shape=[U1*8,4]", "f32[U1*8,4]"},
    {EM3_OP_RESHAPE, "f32[U1,8]", "shape=[B*8]", ERR("each of B, U1, … must stay a dimension")},
    {EM3_OP_CONCAT, "f32[U1,4] f32[U1*2,4]", "axis=0", "f32[U1*3,4]"},
    {EM3_OP_CONCAT, "f32[U1,4] f32[B,4]", "axis=0", ERR("dimensions of different symbols")},
    {EM3_OP_MATMUL, "f32[U1,8] f32[8,4]", "", "f32[U1,4]"},

    /* spmm by the graph global g, f32[6, 10]: rows of x are its columns (its rows, transposed) */
    {EM3_OP_SPMM, "f32[10,4]", "graph=@g", "f32[6,4]"},
    {EM3_OP_SPMM, "f32[6,2,B]", "graph=@g transpose=1", "f32[10,2,B]"},
    {EM3_OP_SPMM, "f32[6,4]", "graph=@g", ERR("g is f32[6, 10]: spmm by it takes f32 matrices of 10 rows, not f32[6, 4]")},
    {EM3_OP_SPMM, "i32[10]", "graph=@g", ERR("f32 matrices")},
    {EM3_OP_SPMM, "f32[B,4]", "graph=@g", ERR("of 10 rows")},
    {EM3_OP_SPMM, "f32[4,8]", "graph=@w", ERR("@w is not a graph")},
    {EM3_OP_SPMM, "f32[4,8]", "graph=@nope", ERR("@nope is not declared")},
    {EM3_OP_PARAM, "", "name=@g", ERR("@g is a graph: it is never read densely")},

    /* fused attention: q [..., tq, dh], k [..., tk, dh], v [..., tk, dv], mask [..., 1|tq, tk];
     * leading dims broadcast (k, v shared by the heads), the mask's only into q, k, v's */
    {EM3_OP_ATTENTION, "f32[B,4,10,16] f32[B,4,12,16] f32[B,4,12,16]", "scale=0.25", "f32[B,4,10,16]"},
    {EM3_OP_ATTENTION, "f32[B,4,10,16] f32[B,4,12,16] f32[B,4,12,8] f32[B,1,1,12]", "",
     "f32[B,4,10,8]"},
    {EM3_OP_ATTENTION, "f32[B,4,10,16] f32[B,4,12,16] f32[B,4,12,16] f32[B,4,10,12]", "",
     "f32[B,4,10,16]"},
    {EM3_OP_ATTENTION, "f32[B,4,10,16] f32[B,1,12,16] f32[B,1,12,16] f32[B,1,1,12]", "",
     "f32[B,4,10,16]"},
    {EM3_OP_ATTENTION, "f32[B,50,4,26,16] f32[B,50,4,26,16] f32[B,50,4,26,16] f32[B,50,1,1,26]", "",
     "f32[B,50,4,26,16]"},
    {EM3_OP_ATTENTION, "f32[B,1,8] f32[12,8] f32[12,8] f32[B,1,12]", "", "f32[B,1,8]"},
    {EM3_OP_ATTENTION, "f32[10,16] f32[12,16] f32[12,16]", "", "f32[10,16]"},
    {EM3_OP_ATTENTION, "f32[B,4,10,16] f32[B,4,12,8] f32[B,4,12,16]", "", ERR("attention needs q [")},
    {EM3_OP_ATTENTION, "f32[B,4,10,16] f32[B,4,12,16] f32[B,4,11,16]", "", ERR("attention needs q [")},
    {EM3_OP_ATTENTION, "f32[B,4,10,16] f32[B,3,12,16] f32[B,3,12,16]", "", ERR("leading dimensions")},
    {EM3_OP_ATTENTION, "f32[B,16] f32[12,16] f32[12,16]", "", ERR("attention needs q [")},
    {EM3_OP_ATTENTION, "f32[10,16] i32[12,16] f32[12,16]", "", ERR("attention needs q [")},
    {EM3_OP_ATTENTION, "f32[B,4,10,16] f32[B,4,12,16] f32[B,4,12,16] f32[B,1,1,11]", "",
     ERR("mask must be f32[..., 1 or 10, 12]")},
    {EM3_OP_ATTENTION, "f32[B,4,10,16] f32[B,4,12,16] f32[B,4,12,16] f32[B,1,3,12]", "",
     ERR("mask must be")},
    {EM3_OP_ATTENTION, "f32[B,10,16] f32[B,12,16] f32[B,12,16] f32[B,4,10,12]", "",
     ERR("within the batch of q, k, v")},
    {EM3_OP_ATTENTION, "f32[B,10,16] f32[B,12,16] f32[B,12,16] i32[B,1,12]", "", ERR("mask must be")},
    {EM3_OP_ATTENTION, "f32[B,10,16] f32[B,12,16]", "", ERR("attention takes q, k, v")},
    {EM3_OP_ATTENTION, "f32[2,2] f32[2,2] f32[2,2] f32[1,2] f32[2,2]", "", ERR("attention takes q, k, v")},
    /* its gradient: [dq; dk; dv] packed as [..., tq + 2 tk, dh] over the broadcast leading dims */
    {EM3_OP_ATTENTION_GRAD,
     "f32[B,4,10,16] f32[B,4,12,16] f32[B,4,12,16] f32[B,4,10,16] f32[B,4,10,16]", "scale=0.25",
     "f32[B,4,34,16]"},
    {EM3_OP_ATTENTION_GRAD,
     "f32[B,4,10,16] f32[B,1,12,16] f32[B,1,12,16] f32[B,4,10,16] f32[B,4,10,16] f32[B,1,1,12]", "",
     "f32[B,4,34,16]"},
    {EM3_OP_ATTENTION_GRAD, "f32[3,8] f32[5,8] f32[5,8] f32[3,8] f32[3,8] f32[3,5]", "", "f32[13,8]"},
    {EM3_OP_ATTENTION_GRAD,
     "f32[B,4,10,16] f32[B,4,12,16] f32[B,4,12,8] f32[B,4,10,8] f32[B,4,10,8]", "", ERR("dh == dv")},
    {EM3_OP_ATTENTION_GRAD,
     "f32[B,4,10,16] f32[B,4,12,16] f32[B,4,12,16] f32[B,1,10,16] f32[B,4,10,16]", "",
     ERR("operand 3 is f32[B, 1, 10, 16], the attention output f32[B, 4, 10, 16]")},
    {EM3_OP_ATTENTION_GRAD,
     "f32[B,4,10,16] f32[B,4,12,16] f32[B,4,12,16] f32[B,4,10,16] f32[B,4,10,8]", "", ERR("operand 4 is")},
    {EM3_OP_ATTENTION_GRAD,
     "f32[B,4,10,16] f32[B,4,12,16] f32[B,4,12,16] f32[B,4,10,16] f32[B,4,10,16] f32[B,4,1,10]", "",
     ERR("mask must be")},
    {EM3_OP_ATTENTION_GRAD, "f32[3,8] f32[5,8] f32[5,8] f32[3,8]", "", ERR("attention_grad takes")},
    /* lora_matmul: x [..., din], w [din, dout], a [din, r], b [r, dout] */
    {EM3_OP_FUSED, "f32[B,4] f32[4]", "program=mul(%0,%1);relu(#0)", "f32[B,4]"},
    {EM3_OP_FUSED, "i32[B,3]", "program=ne(%0,0);mul(#0,2.5)", "f32[B,3]"},
    {EM3_OP_FUSED, "f32[B,1] f32[5] f32[B,5]", "program=where(%0,%1,%2);cast.i32(#0)", "i32[B,5]"},
    {EM3_OP_FUSED, "f32[B,4]", "program=matmul(%0,%0)", ERR("not an elementwise op")},
    {EM3_OP_FUSED, "f32[B,4]", "program=relu(%1)", ERR("operand %1")},
    {EM3_OP_FUSED, "f32[B,4]", "program=add(#0,%0)", ERR("not computed yet")},
    {EM3_OP_FUSED, "f32[B,4] f32[3]", "program=add(%0,%1)", ERR("do not broadcast")},
    {EM3_OP_FUSED, "i32[B,4]", "program=exp(%0)", ERR("needs a float tensor")},
    {EM3_OP_LORA_MATMUL, "f32[B,4] @fz f32[4,2] f32[2,8]", "scale=0.5", "f32[B,8]"},
    {EM3_OP_LORA_MATMUL, "f32[B,50,26,4] f32[4,8] f32[4,1] f32[1,8]", "", "f32[B,50,26,8]"},
    {EM3_OP_LORA_MATMUL, "f32[1,4] f32[4,8] f32[4,16] f32[16,8]", "", "f32[1,8]"},
    {EM3_OP_LORA_MATMUL, "f32[B,5] @fz f32[4,2] f32[2,8]", "", ERR("lora_matmul needs x [..., m, din]")},
    {EM3_OP_LORA_MATMUL, "f32[4] f32[4,8] f32[4,2] f32[2,8]", "", ERR("lora_matmul needs")}, /* as matmul */
    {EM3_OP_LORA_MATMUL, "f32[B,4] @fz f32[5,2] f32[2,8]", "", ERR("lora_matmul needs")},
    {EM3_OP_LORA_MATMUL, "f32[B,4] @fz f32[4,2] f32[3,8]", "", ERR("lora_matmul needs")},
    {EM3_OP_LORA_MATMUL, "f32[B,4] @fz f32[4,2] f32[2,7]", "", ERR("lora_matmul needs")},
    {EM3_OP_LORA_MATMUL, "f32[B,4] f32[2,4,8] f32[4,2] f32[2,8]", "", ERR("lora_matmul needs")},
    {EM3_OP_LORA_MATMUL, "i32[B,4] @fz f32[4,2] f32[2,8]", "", ERR("lora_matmul needs")},
    {EM3_OP_LORA_MATMUL, "f32[B,4] @fz f32[4,2]", "", ERR("takes 4 operands, got 3")},

    /* backward helpers */
    {EM3_OP_SCATTER_ADD, "f32[10,4] i32[B,3] f32[B,3,4]", "", "f32[10,4]"},
    {EM3_OP_SCATTER_ADD, "f32[10] i32[B*5] f32[B*5]", "", "f32[10]"},
    {EM3_OP_SCATTER_ADD, "f32[10,4] i32[B] f32[B,5]", "",
     ERR("scatter_add into f32[10, 4] by ids i32[B] needs rows f32[B, 4], got f32[B, 5]")},
    {EM3_OP_SCATTER_ADD, "f32[10,4] f32[B] f32[B,4]", "", ERR("gather needs i32 ids")},
    {EM3_OP_NUMEL, "f32[B,3,5]", "axes=[0,2]", "f32[]"},
    {EM3_OP_NUMEL, "i32[B,3]", "axes=[1]", "f32[]"}, /* counts any element type */
    {EM3_OP_NUMEL, "f32[B,3]", "axes=[2]", ERR("axis 2 is out of range")},
    {EM3_OP_GELU_GRAD, "f32[B,4] f32[B,4]", "", "f32[B,4]"},
    {EM3_OP_GELU_GRAD, "f32[B,4] i32[B,4]", "", ERR("needs float operands")},
    {EM3_OP_LAYER_NORM_GRAD, "f32[B,3,4] f32[4] f32[B,3,4]", "eps=1e-6", "f32[B,3,4]"},
    {EM3_OP_LAYER_NORM_GRAD, "f32[B,4] f32[4] f32[4]", "", ERR("needs dy of the same type")},
    {EM3_OP_LAYER_NORM_GRAD, "f32[B,4] f32[5] f32[B,4]", "", ERR("needs gamma of f32[4]")},
    {EM3_OP_SPARSE_SQNORM, "i32[B,3] f32[B,3,4]", "", "f32[]"},
    {EM3_OP_SPARSE_SQNORM, "i32[B] f32[3,4]", "", ERR("sparse_sqnorm needs i32 ids")},
    {EM3_OP_SPARSE_SQNORM, "f32[B] f32[B,4]", "", ERR("sparse_sqnorm needs i32 ids")},

    /* optimizer updates: @g reads global g (p, table: param; *.m, *.v, s5: state; fz: frozen) */
    {EM3_OP_SGD_UPDATE, "@p f32[4,8] f32[]", "wd=0.01", "f32[4,8]"},
    {EM3_OP_SGD_UPDATE, "f32[4,8] f32[4,8] f32[]", "", ERR("operand 0 must be a param global")},
    {EM3_OP_SGD_UPDATE, "@fz f32[4,8] f32[]", "", ERR("operand 0 must be a param global")},
    {EM3_OP_SGD_UPDATE, "@p.m f32[4,8] f32[]", "", ERR("operand 0 must be a param global")},
    {EM3_OP_SGD_UPDATE, "@p f32[8,4] f32[]", "", ERR("gradient f32[8, 4] does not match")},
    {EM3_OP_SGD_UPDATE, "@p f32[4,8] f32[1]", "", ERR("lr must be f32[]")},
    {EM3_OP_SGD_UPDATE, "@p f32[4,8] i32[]", "", ERR("lr must be f32[]")},
    {EM3_OP_MOMENTUM_UPDATE, "@p f32[4,8] f32[] @p.m", "momentum=0.5", "f32[4,8]"},
    {EM3_OP_MOMENTUM_UPDATE, "@p f32[4,8] f32[] f32[4,8]", "",
     ERR("operand 3 must be a state global")},
    {EM3_OP_MOMENTUM_UPDATE, "@p f32[4,8] f32[] @p", "", ERR("operand 3 must be a state global")},
    {EM3_OP_MOMENTUM_UPDATE, "@p f32[4,8] f32[]", "", ERR("takes 4 operands, got 3")},
    {EM3_OP_ADAM_UPDATE, "@p f32[4,8] f32[] f32[] @p.m @p.v", "decoupled=1 wd=0.1", "f32[4,8]"},
    {EM3_OP_ADAM_UPDATE, "@p f32[4,8] f32[] f32[2] @p.m @p.v", "", ERR("step must be f32[]")},
    {EM3_OP_ADAM_UPDATE, "@p f32[4,8] i32[] f32[] @p.m @p.v", "", ERR("lr must be f32[]")},
    {EM3_OP_ADAM_UPDATE, "@p f32[4,8] f32[] f32[] @p.m @s5", "",
     ERR("state operand 5 is f32[5], the parameter f32[4, 8]")},
    {EM3_OP_ADAM_UPDATE, "@p f32[4,8] f32[] f32[] @p.m @fz", "",
     ERR("operand 5 must be a state global")},
    {EM3_OP_ADAGRAD_UPDATE, "@p f32[4,8] f32[] @p.v", "eps=1e-8", "f32[4,8]"},
    {EM3_OP_ADAGRAD_UPDATE, "@p f32[4,8] f32[] @fz", "", ERR("operand 3 must be a state global")},
    {EM3_OP_ADAGRAD_UPDATE, "@table f32[4,8] f32[] @p.v", "", ERR("does not match parameter")},
    {EM3_OP_SPARSE_SGD_UPDATE, "@table i32[B,3] f32[B,3,4] f32[]", "", "f32[10,4]"},
    {EM3_OP_SPARSE_SGD_UPDATE, "@table i32[B] f32[B,5] f32[]", "",
     ERR("rows f32[B, 5] do not fit ids i32[B]")},
    {EM3_OP_SPARSE_SGD_UPDATE, "@table f32[B] f32[B,4] f32[]", "", ERR("gather needs i32 ids")},
    {EM3_OP_SPARSE_SGD_UPDATE, "f32[10,4] i32[B] f32[B,4] f32[]", "",
     ERR("operand 0 must be a param global")},
    {EM3_OP_SPARSE_SGD_UPDATE, "@table i32[B] f32[B,4] f32[B]", "", ERR("lr must be f32[]")},
    {EM3_OP_SPARSE_ADAM_UPDATE, "@table i32[B*4] f32[B*4,4] f32[] f32[] @table.m @table.v", "",
     "f32[10,4]"},
    {EM3_OP_SPARSE_ADAM_UPDATE, "@table i32[B] f32[B,4] i32[] f32[] @table.m @table.v", "",
     ERR("lr must be f32[]")},
    {EM3_OP_SPARSE_ADAM_UPDATE, "@table i32[B] f32[B,4] f32[] f32[] @p.m @table.v", "",
     ERR("state operand 5 is f32[4, 8], the parameter f32[10, 4]")},
    {EM3_OP_SPARSE_ADAM_UPDATE, "@table i32[B] f32[B,4] f32[] f32[] @table.m f32[10,4]", "",
     ERR("operand 6 must be a state global")},
    {EM3_OP_SPARSE_ADAGRAD_UPDATE, "@table i32[B] f32[B,4] f32[] @table.v", "", "f32[10,4]"},
    {EM3_OP_SPARSE_ADAGRAD_UPDATE, "@table i32[B] f32[B,4] f32[] @table", "",
     ERR("operand 4 must be a state global")},
    {EM3_OP_SPARSE_ADAGRAD_UPDATE, "@table i32[B] f32[B,4] f32[] @s5", "",
     ERR("state operand 4 is f32[5]")},
};

/* ---- the tests ---------------------------------------------------------------------------- */

static bool is_leaf(em3_op op) { return em3_op_kind_of(op) == EM3_KIND_LEAF; }

/* Builds row `c` in a fresh function of `m`: operands become inputs of the given types, or
 * reads of a global for "@name". Returns the value id or -1 with the message in err. */
static int build(em3_module *m, int row, const shape_case *c, char *err, size_t errlen) {
    char fname[32];
    snprintf(fname, sizeof fname, "case%d", row);
    em3_func *f = em3_module_add_func(m, fname);
    em3_node n = em3_node_proto(c->op, (em3_loc){0});
    op_text_store st;
    op_text_attrs(&n, c->attrs, &st);
    int in[8], n_in = 0;
    const char *p = c->operands;
    while (*p == ' ') p++;
    if (is_leaf(c->op)) {
        if (*p) n.type = op_text_type(&p);
    } else {
        for (; *p; n_in++) {
            assert_true(n_in < 8);
            bool global = *p == '@';
            em3_node o = em3_node_proto(global ? EM3_OP_PARAM : EM3_OP_INPUT, (em3_loc){0});
            char name[32] = {0};
            if (global) {
                size_t len = strcspn(++p, " ");
                assert_true(len < sizeof name);
                memcpy(name, p, len);
                p += len;
            } else {
                snprintf(name, sizeof name, "o%d", n_in);
                o.type = op_text_type(&p);
            }
            em3_node_set_s(&o, "name", name);
            in[n_in] = em3_func_add_checked(f, &o, NULL, 0);
            while (*p == ' ') p++;
        }
    }
    err[0] = 0;
    return em3_func_add(f, &n, in, n_in, err, errlen);
}

static em3_module *test_module(void) {
    static const struct {
        const char *name;
        em3_global_kind kind;
        int rank;
        int64_t dim[2];
    } globals[] = {
        {"w", EM3_GLOBAL_PARAM, 2, {4, 8}},      {"p", EM3_GLOBAL_PARAM, 2, {4, 8}},
        {"p.m", EM3_GLOBAL_STATE, 2, {4, 8}},    {"p.v", EM3_GLOBAL_STATE, 2, {4, 8}},
        {"fz", EM3_GLOBAL_FROZEN, 2, {4, 8}},    {"s5", EM3_GLOBAL_STATE, 1, {5}},
        {"table", EM3_GLOBAL_PARAM, 2, {10, 4}}, {"table.m", EM3_GLOBAL_STATE, 2, {10, 4}},
        {"table.v", EM3_GLOBAL_STATE, 2, {10, 4}},
    };
    em3_module *m = em3_module_create("shapes");
    for (size_t i = 0; i < sizeof globals / sizeof globals[0]; i++)
        em3_module_add_global(m, globals[i].name,
                              em3_type_make(EM3_DTYPE_F32, globals[i].rank, globals[i].dim),
                              globals[i].kind, (em3_init){EM3_INIT_NONE, 0}, (em3_loc){0});
    em3_module_add_graph(m, "g", em3_type_make(EM3_DTYPE_F32, 2, (int64_t[]){6, 10}), "user_item",
                         (em3_loc){0});
    return m;
}

static void test_every_row(void **state) {
    (void)state;
    em3_module *m = test_module();
    int failures = 0;
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        const shape_case *c = &cases[i];
        char err[256], got[EM3_TYPE_STR_MAX];
        int id = build(m, i, c, err, sizeof err);
        const char *what = NULL;
        if (c->expect[0] == '!') {
            if (id >= 0)
                what = "accepted";
            else if (!err[0] || !strstr(err, c->expect + 1))
                what = "rejected with another message";
        } else if (id < 0) {
            what = "rejected";
        } else {
            const char *p = c->expect;
            em3_type want = op_text_type(&p);
            const em3_node *nd = em3_func_node(m->func[m->n_func - 1], id);
            if (!em3_type_eq(&nd->type, &want)) what = "typed differently";
        }
        if (what) {
            const em3_func *f = m->func[m->n_func - 1];
            print_error("row %d: %s(%s) {%s}: want %s, %s: %s\n", i, em3_op_name(c->op),
                        c->operands, c->attrs, c->expect, what,
                        id >= 0 ? em3_type_str(&f->node[id].type, got, sizeof got) : err);
            failures++;
        }
    }
    em3_module_free(m);
    assert_int_equal(failures, 0);
}

/* A new op in ops.def must get a valid and an invalid row here. */
static void test_every_op_has_rows(void **state) {
    (void)state;
    bool valid[EM3_OP_COUNT] = {0}, invalid[EM3_OP_COUNT] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        (cases[i].expect[0] == '!' ? invalid : valid)[cases[i].op] = true;
    int missing = 0;
    for (int op = 0; op < EM3_OP_COUNT; op++)
        if (!valid[op] || !invalid[op]) {
            print_error("op %s has no %s row\n", em3_op_name((em3_op)op),
                        valid[op] ? "invalid" : "valid");
            missing++;
        }
    assert_int_equal(missing, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_row),
        cmocka_unit_test(test_every_op_has_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
