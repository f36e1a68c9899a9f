/* tests/unit/test_codegen_ops.c — compiled code equals the reference interpreter, op by op: one
 * table row per shape an op is run on (the test walks ops.def and fails for an op with an
 * emitter but no row), each row a function of one node over inputs and globals, run at batch 1,
 * 3 and 64 by the JIT and the F32 interpreter. Also: data errors reported through the frame,
 * vectorised LLVM IR, and how a JIT compilation fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ir/builder.h"
#include "graph_fixture.h"
#include "jit_harness.h"
#include "op_text.h"
#include "runtime/init.h"

/* Tolerances, as the largest jh_diff = |jit − ref| / (1 + |ref|), i.e. relative above 1 and
 * absolute below. A wrong formula, index or stride shows at 1e-2 and beyond.
 * EXACT  IEEE +, −, ×, ÷ and sqrt of floats give the same float whether computed in float (the
 *        JIT) or in double and then rounded (the interpreter): double has more than 2·24 + 2
 *        bits, so the second rounding cannot change the result. Copies, selects, comparisons
 *        and integer arithmetic are exact too.
 * ULP    1e-6, about 8 ulp at 1: one or two transcendental functions (at most 4 ulp each,
 *        test_codegen_math.c) and a few roundings without cancellation: rsqrt = 1/sqrt, the
 *        softmax family.
 * CLOSE  1e-5: sums reassociated for vectorising (up to 64·35 terms of |x| < 3: √n·ε·|partial
 *        sum| ≈ 3e-6 of the result on average), OpenBLAS's sgemm against dgemm, scatter-adds
 *        of repeated ids, layer norm (the float mean's rounding, divided by the row's σ), the
 *        optimizer steps in float (Adam divides by √v, which amplifies), gelu_grad (its
 *        1 + tanh cancels for negative x).
 * LOOSE  1e-4: layer_norm_grad over rows of three values, which in [-3, 3) are often within
 *        0.05 of each other: the mean's rounding ε·|x| divided by σ is ~100× larger than in
 *        longer rows (measured 8e-6 against 1e-6 for rows of 7); attention_grad, whose
 *        ds = p·(do·v − do·o) cancels two dot products of size up to dh·9 = 72 in float
 *        (ε·72 ≈ 4e-6 before the sums over keys; measured 7e-6). */
#define EXACT 0.0
#define ULP 1e-6
#define CLOSE 1e-5
#define LOOSE 1e-4

/* ---- the rows -------------------------------------------------------------------------------- */

/* An operand spec: "K:TYPE" or "K:TYPE>SHAPE" (reshaped to SHAPE before use, for B·k dims).
 * K is the value kind, optionally followed by G (held by a PARAM global) or S (a STATE global);
 * without G or S the operand is an input of the function:
 *   x  signed, f32 in [-3, 3), i32 in [-9, 9]     q  small integers in [-2, 2]: ties
 *   p  positive, [0.05, 4) (i32: [1, 9])          n  nonzero, ±[0.25, 3)
 *   u  [0, 1)                                     m  0 or 1
 *   b  large, [-80, 80)                           e  specials: ±0, ±inf, NaN, subnormals, huge
 *   l  the learning rate 0.05                     t  the step 3
 *   iN ids in [0, N)
 * For const (no operands) the single spec is the result type. */
typedef struct {
    em3_op op;
    const char *args[7];
    const char *attrs;
    double tol;
} op_row;

static const op_row structural_rows[] = {
    /* const */
    {EM3_OP_CONST, {"x:f32[]"}, "value=2.5", EXACT},
    {EM3_OP_CONST, {"x:f32[B,5,7]"}, "value=-0.125", EXACT},
    {EM3_OP_CONST, {"x:i32[3,B]"}, "value=-3", EXACT},
    /* broadcast */
    {EM3_OP_BROADCAST, {"x:f32[7]"}, "shape=[B,5,7]", EXACT},
    {EM3_OP_BROADCAST, {"x:f32[B,1,7]"}, "shape=[B,5,7]", EXACT},
    {EM3_OP_BROADCAST, {"x:f32[]"}, "shape=[B]", EXACT},
    {EM3_OP_BROADCAST, {"x:i32[5,1]"}, "shape=[B,5,7]", EXACT},
    {EM3_OP_BROADCAST, {"xG:f32[2,1,3]"}, "shape=[B,2,4,3]", EXACT},
    {EM3_OP_BROADCAST, {"x:f32[1,B,1]"}, "shape=[3,B,4]", EXACT},
    /* where with an f32 condition over i32 branches, and with an i32 condition over f32 ones */
    {EM3_OP_WHERE, {"e:f32[B,5,7]", "x:i32[B,5,7]", "x:i32[7]"}, "", EXACT},
    {EM3_OP_WHERE, {"m:i32[B,1,7]", "x:f32[B,5,7]", "x:f32[5,1]"}, "", EXACT},
    /* reductions over every kind of axis, including the batch axis and all axes */
    {EM3_OP_SUM, {"x:f32[B,5,7]"}, "axes=[2]", CLOSE},
    {EM3_OP_SUM, {"x:f32[B,5,7]"}, "axes=[1]", CLOSE},
    {EM3_OP_SUM, {"x:f32[B,5,7]"}, "axes=[0]", CLOSE},
    {EM3_OP_SUM, {"x:f32[B,5,7]"}, "axes=[0,2] keepdims=1", CLOSE},
    {EM3_OP_SUM, {"x:f32[B,5,7]"}, "axes=[0,1,2]", CLOSE},
    {EM3_OP_SUM, {"x:f32[B]"}, "axes=[0]", CLOSE},
    {EM3_OP_SUM, {"x:f32[B,2,3,2,3]"}, "axes=[1,3]", CLOSE},
    {EM3_OP_SUM, {"x:f32[B,5,7]>[B*5,7]"}, "axes=[0]", CLOSE},
    {EM3_OP_SUM, {"x:f32[3,B,4]"}, "axes=[1] keepdims=1", CLOSE},
    {EM3_OP_SUM, {"x:i32[B,5,7]"}, "axes=[1]", EXACT},
    {EM3_OP_SUM, {"x:i32[B,5,7]"}, "axes=[0,2]", EXACT},
    {EM3_OP_MEAN, {"x:f32[B,5,7]"}, "axes=[2]", CLOSE},
    {EM3_OP_MEAN, {"x:f32[B,5,7]"}, "axes=[0]", CLOSE},
    {EM3_OP_MEAN, {"x:f32[B,5,7]"}, "axes=[0,1,2] keepdims=1", CLOSE},
    {EM3_OP_MEAN, {"x:f32[B,2,3,2,3]"}, "axes=[4,2]", CLOSE},
    {EM3_OP_MEAN, {"x:f32[B,5,7]>[B*5,7]"}, "axes=[1]", CLOSE},
    {EM3_OP_MAX, {"x:f32[B,5,7]"}, "axes=[2]", EXACT},
    {EM3_OP_MAX, {"x:f32[B,5,7]"}, "axes=[0,1] keepdims=1", EXACT},
    {EM3_OP_MAX, {"e:f32[B,5,7]"}, "axes=[1]", EXACT},
    {EM3_OP_MAX, {"b:f32[B,2,3,2,3]"}, "axes=[0,3]", EXACT},
    {EM3_OP_MAX, {"x:i32[B,5,7]"}, "axes=[2]", EXACT},
    {EM3_OP_NUMEL, {"x:f32[B,5,7]"}, "axes=[0,1]", EXACT},
    {EM3_OP_NUMEL, {"x:f32[B,5,7]"}, "axes=[2]", EXACT},
    {EM3_OP_NUMEL, {"x:f32[B,5,7]>[B*5,7]"}, "axes=[0]", EXACT},
    /* the softmax family along the last, a middle and the batch axis */
    {EM3_OP_LOGSUMEXP, {"x:f32[B,5,7]"}, "axis=2", ULP},
    {EM3_OP_LOGSUMEXP, {"b:f32[B,5,7]"}, "axis=1 keepdims=1", ULP},
    {EM3_OP_LOGSUMEXP, {"x:f32[B,5,7]"}, "axis=0", ULP},
    {EM3_OP_LOGSUMEXP, {"x:f32[B]"}, "axis=0", ULP},
    {EM3_OP_LOGSUMEXP, {"x:f32[B,2,3,2,3]"}, "axis=3", ULP},
    {EM3_OP_SOFTMAX, {"x:f32[B,5,7]"}, "axis=2", ULP},
    {EM3_OP_SOFTMAX, {"b:f32[B,5,7]"}, "axis=1", ULP},
    {EM3_OP_SOFTMAX, {"x:f32[B,5,7]"}, "axis=0", ULP},
    {EM3_OP_SOFTMAX, {"x:f32[B,5,7]>[B*5,7]"}, "axis=1", ULP},
    {EM3_OP_SOFTMAX, {"x:f32[B,2,3,2,3]"}, "axis=2", ULP},
    {EM3_OP_LOG_SOFTMAX, {"x:f32[B,5,7]"}, "axis=2", ULP},
    {EM3_OP_LOG_SOFTMAX, {"b:f32[B,5,7]"}, "axis=1", ULP},
    {EM3_OP_LOG_SOFTMAX, {"x:f32[B,5,7]"}, "axis=0", ULP},
    {EM3_OP_LOG_SOFTMAX, {"x:f32[3,B,4]"}, "axis=1", ULP},
    /* layer norm and its gradient */
    {EM3_OP_LAYER_NORM, {"x:f32[B,5,7]", "xG:f32[7]", "xG:f32[7]"}, "", CLOSE},
    {EM3_OP_LAYER_NORM, {"b:f32[B,16]", "xG:f32[16]", "x:f32[16]"}, "eps=0.001", CLOSE},
    {EM3_OP_LAYER_NORM, {"x:f32[B,2,3,2,3]", "x:f32[3]", "x:f32[3]"}, "", CLOSE},
    {EM3_OP_LAYER_NORM, {"x:f32[B,5,7]>[B*5,7]", "xG:f32[7]", "xG:f32[7]"}, "", CLOSE},
    {EM3_OP_LAYER_NORM_GRAD, {"x:f32[B,5,7]", "xG:f32[7]", "x:f32[B,5,7]"}, "", CLOSE},
    {EM3_OP_LAYER_NORM_GRAD, {"b:f32[B,16]", "xG:f32[16]", "x:f32[B,16]"}, "eps=0.001", CLOSE},
    {EM3_OP_LAYER_NORM_GRAD, {"x:f32[B,2,3,2,3]", "x:f32[3]", "x:f32[B,2,3,2,3]"}, "", LOOSE},
    /* transpose */
    {EM3_OP_TRANSPOSE, {"x:f32[B,5,7]"}, "perm=[0,2,1]", EXACT},
    {EM3_OP_TRANSPOSE, {"x:f32[B,5,7]"}, "perm=[2,0,1]", EXACT},
    {EM3_OP_TRANSPOSE, {"x:f32[B,5,7]"}, "perm=[1,0,2]", EXACT},
    {EM3_OP_TRANSPOSE, {"x:i32[B,5,7]"}, "perm=[2,1,0]", EXACT},
    {EM3_OP_TRANSPOSE, {"x:f32[B,2,3,4,5]"}, "perm=[4,2,0,3,1]", EXACT},
    {EM3_OP_TRANSPOSE, {"x:f32[B,1,7]"}, "perm=[2,1,0]", EXACT},
    {EM3_OP_TRANSPOSE, {"xG:f32[5,7]"}, "perm=[1,0]", EXACT},
    {EM3_OP_TRANSPOSE, {"x:f32[B,5,7]>[B*5,7]"}, "perm=[1,0]", EXACT},
    /* concat along the last, a middle, the batch and a static leading axis */
    {EM3_OP_CONCAT, {"x:f32[B,5,7]", "x:f32[B,5,3]"}, "axis=2", EXACT},
    {EM3_OP_CONCAT, {"x:f32[B,5,7]", "x:f32[B,2,7]", "x:f32[B,1,7]"}, "axis=1", EXACT},
    {EM3_OP_CONCAT, {"x:f32[B,5,7]", "x:f32[B,5,7]"}, "axis=0", EXACT},
    {EM3_OP_CONCAT, {"x:f32[B,5,7]>[B*5,7]", "x:f32[B,7]"}, "axis=0", EXACT},
    {EM3_OP_CONCAT, {"xG:f32[3,7]", "x:f32[5,7]"}, "axis=0", EXACT},
    {EM3_OP_CONCAT, {"x:i32[B,3]", "x:i32[B,1]", "x:i32[B,4]"}, "axis=1", EXACT},
    {EM3_OP_CONCAT, {"x:f32[B,2,3,1,3]", "x:f32[B,2,3,4,3]"}, "axis=3", EXACT},
    {EM3_OP_CONCAT, {"x:f32[3,B,4]", "x:f32[2,B,4]"}, "axis=0", EXACT},
    {EM3_OP_CONCAT, {"x:f32[B]", "x:f32[B]", "x:f32[B]"}, "axis=0", EXACT},
    {EM3_OP_CONCAT, {"x:f32[B,5,7]"}, "axis=1", EXACT},
    /* slice */
    {EM3_OP_SLICE, {"x:f32[B,5,7]"}, "axis=1 start=1 end=4", EXACT},
    {EM3_OP_SLICE, {"x:f32[B,5,7]"}, "axis=2 start=0 end=3", EXACT},
    {EM3_OP_SLICE, {"x:f32[B,5,7]"}, "axis=2 start=6 end=7", EXACT},
    {EM3_OP_SLICE, {"x:i32[B,5,7]"}, "axis=1 start=4 end=5", EXACT},
    {EM3_OP_SLICE, {"x:f32[B,2,3,4,5]"}, "axis=4 start=1 end=4", EXACT},
    {EM3_OP_SLICE, {"xG:f32[6,7]"}, "axis=0 start=2 end=5", EXACT},
    {EM3_OP_SLICE, {"x:f32[3,B,4]"}, "axis=0 start=1 end=3", EXACT},
    /* matmul: the 2-D weight fast path, transposes, batched with broadcast leading dims, and
     * the weight-gradient form x^T·dy that contracts over the batch */
    {EM3_OP_MATMUL, {"x:f32[B,5,7]", "xG:f32[7,3]"}, "", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,5,7]", "xG:f32[3,7]"}, "tb=1", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,7]", "xG:f32[7,3]"}, "", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,5,7]>[B*5,7]", "xG:f32[7,3]"}, "", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,2,3,4,5]", "xG:f32[5,2]"}, "", CLOSE},
    {EM3_OP_MATMUL, {"xG:f32[5,7]", "x:f32[7,3]"}, "", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,5,7]", "x:f32[B,7,3]"}, "", CLOSE},
    {EM3_OP_MATMUL, {"xG:f32[5,7]", "x:f32[B,7,3]"}, "", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,7,5]", "x:f32[B,7,3]"}, "ta=1", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,7,5]", "x:f32[B,3,7]"}, "ta=1 tb=1", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,5,7]", "x:f32[B,3,7]"}, "tb=1", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,7,5]", "xG:f32[7,3]"}, "ta=1", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,1,5,7]", "xG:f32[4,7,3]"}, "", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[1,2,5,7]", "x:f32[B,1,7,3]"}, "", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,2,1,4,5]", "x:f32[1,3,5,2]"}, "", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,7]", "x:f32[B,3]"}, "ta=1", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,5,7]>[B*5,7]", "x:f32[B*5,3]"}, "ta=1", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,3]", "xG:f32[7,3]"}, "tb=1", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,1,7]", "x:f32[B,7,1]"}, "", CLOSE},
    {EM3_OP_MATMUL, {"x:f32[B,7,1]", "x:f32[B,1,7]"}, "ta=1 tb=1", CLOSE},
    /* lora_matmul: rows folded from any leading dims, ranks 1 to 8, x a in the node's scratch */
    /* fused programs: broadcast operands, intermediates in registers, mixed element types */
    {EM3_OP_FUSED, {"x:f32[B,5,7]", "x:f32[7]", "x:f32[B,5,1]"}, "program=mul(%0,%1);add(#0,%2);sigmoid(#1)", ULP},
    {EM3_OP_FUSED, {"x:i32[B,7]", "x:f32[B,7]"}, "program=ne(%0,0);mul(#0,%1);sub(1.5,#1);relu(#2)", EXACT},
    {EM3_OP_FUSED, {"x:f32[B,3]", "x:f32[B,3]", "x:f32[B,3]"}, "program=gt(%0,%1);where(#0,%1,%2);tanh(#1);mul(#2,%0)", ULP},
    {EM3_OP_LORA_MATMUL, {"x:f32[B,7]", "xG:f32[7,5]", "xG:f32[7,2]", "xG:f32[2,5]"}, "scale=0.5", CLOSE},
    {EM3_OP_LORA_MATMUL, {"x:f32[B,5,7]", "x:f32[7,3]", "xG:f32[7,1]", "xG:f32[1,3]"}, "scale=4", CLOSE},
    {EM3_OP_LORA_MATMUL, {"x:f32[B,5,7]>[B*5,7]", "xG:f32[7,9]", "xG:f32[7,8]", "xG:f32[8,9]"}, "", CLOSE},
    {EM3_OP_LORA_MATMUL, {"xG:f32[3,7]", "xG:f32[7,9]", "xG:f32[7,8]", "xG:f32[8,9]"}, "scale=0.25", CLOSE},
    /* attention (FlashAttention-style tiles of 32 queries × 64 keys): heads, k and v shared by
     * the heads, masks per batch row and per query row (0/1 at random: some rows have no key),
     * several tiles each way, a single query and a single key, dv != dh, scores far apart */
    {EM3_OP_ATTENTION, {"x:f32[B,2,5,8]", "x:f32[B,2,7,8]", "x:f32[B,2,7,8]"}, "scale=0.35", CLOSE},
    {EM3_OP_ATTENTION, {"x:f32[B,2,5,8]", "x:f32[B,2,7,8]", "x:f32[B,2,7,4]", "m:f32[B,1,1,7]"}, "", CLOSE},
    {EM3_OP_ATTENTION, {"x:f32[B,4,3,8]", "x:f32[B,1,7,8]", "x:f32[B,1,7,8]", "m:f32[B,4,3,7]"}, "scale=0.5", CLOSE},
    {EM3_OP_ATTENTION, {"x:f32[B,33,4]", "x:f32[B,70,4]", "x:f32[B,70,4]", "m:f32[B,1,70]"}, "scale=0.5", CLOSE},
    {EM3_OP_ATTENTION, {"x:f32[B,1,8]", "x:f32[B,50,8]", "x:f32[B,50,8]", "m:f32[B,1,50]"}, "scale=0.35", CLOSE},
    {EM3_OP_ATTENTION, {"x:f32[B,3,4]", "xG:f32[1,4]", "xG:f32[1,4]"}, "", CLOSE},
    {EM3_OP_ATTENTION, {"b:f32[B,3,4]", "x:f32[B,6,4]", "x:f32[B,6,4]"}, "", CLOSE},
    {EM3_OP_ATTENTION, {"xG:f32[5,8]", "xG:f32[7,8]", "xG:f32[7,8]", "m:f32[5,7]"}, "scale=0.35", CLOSE},
    /* head widths 16, 32, 64 across query blocks (32) and key blocks (64), a mask row per query */
    {EM3_OP_ATTENTION, {"x:f32[B,2,33,16]", "x:f32[B,2,70,16]", "x:f32[B,2,70,16]", "m:f32[B,2,33,70]"}, "scale=0.25", CLOSE},
    {EM3_OP_ATTENTION, {"x:f32[B,9,32]", "x:f32[B,130,32]", "x:f32[B,130,32]", "m:f32[B,1,130]"}, "scale=0.18", CLOSE},
    {EM3_OP_ATTENTION, {"x:f32[B,40,64]", "x:f32[B,65,64]", "x:f32[B,65,64]"}, "scale=0.125", CLOSE},
    /* its gradient on the same shapes (dh == dv), with any o and do: the kernel only reads them */
    {EM3_OP_ATTENTION_GRAD, {"x:f32[B,2,5,8]", "x:f32[B,2,7,8]", "x:f32[B,2,7,8]", "x:f32[B,2,5,8]", "x:f32[B,2,5,8]"},
     "scale=0.35", LOOSE},
    {EM3_OP_ATTENTION_GRAD,
     {"x:f32[B,4,3,8]", "x:f32[B,1,7,8]", "x:f32[B,1,7,8]", "x:f32[B,4,3,8]", "x:f32[B,4,3,8]", "m:f32[B,4,3,7]"},
     "scale=0.5", LOOSE},
    {EM3_OP_ATTENTION_GRAD,
     {"x:f32[B,33,4]", "x:f32[B,70,4]", "x:f32[B,70,4]", "x:f32[B,33,4]", "x:f32[B,33,4]", "m:f32[B,1,70]"},
     "scale=0.5", LOOSE},
    {EM3_OP_ATTENTION_GRAD,
     {"x:f32[B,1,8]", "x:f32[B,50,8]", "x:f32[B,50,8]", "x:f32[B,1,8]", "x:f32[B,1,8]", "m:f32[B,1,1,50]>[B,1,50]"},
     "", LOOSE},
    {EM3_OP_ATTENTION_GRAD, {"x:f32[B,3,4]", "xG:f32[1,4]", "xG:f32[1,4]", "x:f32[B,3,4]", "x:f32[B,3,4]"}, "", LOOSE},
    {EM3_OP_ATTENTION_GRAD,
     {"x:f32[B,2,33,16]", "x:f32[B,2,70,16]", "x:f32[B,2,70,16]", "x:f32[B,2,33,16]", "x:f32[B,2,33,16]",
      "m:f32[B,2,33,70]"},
     "scale=0.25", LOOSE},
    {EM3_OP_ATTENTION_GRAD,
     {"x:f32[B,9,32]", "x:f32[B,130,32]", "x:f32[B,130,32]", "x:f32[B,9,32]", "x:f32[B,9,32]", "m:f32[B,1,130]"},
     "scale=0.18", LOOSE},
    {EM3_OP_ATTENTION_GRAD, {"x:f32[B,40,64]", "x:f32[B,65,64]", "x:f32[B,65,64]", "x:f32[B,40,64]", "x:f32[B,40,64]"},
     "scale=0.125", LOOSE},
    /* gather: embedding rows, rank-1 and rank-3 tables, an i32 side table, repeated ids */
    {EM3_OP_GATHER, {"xG:f32[10,4]", "i10:i32[B]"}, "", EXACT},
    {EM3_OP_GATHER, {"xG:f32[10,4]", "i10:i32[B,3]"}, "", EXACT},
    {EM3_OP_GATHER, {"x:f32[10]", "i10:i32[B,5]"}, "", EXACT},
    {EM3_OP_GATHER, {"xG:f32[10,2,3]", "i3:i32[B,5]"}, "", EXACT},
    {EM3_OP_GATHER, {"xG:i32[10,3]", "i10:i32[B]"}, "", EXACT},
    {EM3_OP_GATHER, {"x:f32[10,4]", "i10:i32[B,5,7]>[B*5,7]"}, "", EXACT},
    /* scatter_add: repeated ids accumulate */
    {EM3_OP_SCATTER_ADD, {"x:f32[10,4]", "i10:i32[B,3]", "x:f32[B,3,4]"}, "", CLOSE},
    {EM3_OP_SCATTER_ADD, {"x:f32[10]", "i10:i32[B]", "x:f32[B]"}, "", CLOSE},
    {EM3_OP_SCATTER_ADD, {"x:f32[4,2,3]", "i2:i32[B,5]", "x:f32[B,5,2,3]"}, "", CLOSE},
    {EM3_OP_SPARSE_SQNORM, {"i10:i32[B,3]", "x:f32[B,3,4]"}, "", CLOSE},
    {EM3_OP_SPARSE_SQNORM, {"i3:i32[B]", "x:f32[B,2,3]"}, "", CLOSE},
    /* spmm by graph global g, f32[40, 30] (every group's module has it): either way round, B
     * among the carried dimensions, a static operand */
    {EM3_OP_SPMM, {"x:f32[30,B,3]"}, "graph=@g", CLOSE},
    {EM3_OP_SPMM, {"x:f32[40,B]"}, "graph=@g transpose=1", CLOSE},
    {EM3_OP_SPMM, {"xG:f32[30,64]"}, "graph=@g", CLOSE},
    {EM3_OP_SPMM, {"x:f32[40,7]"}, "graph=@g transpose=1", CLOSE},
    /* dropout_train: the mask is integer hashing (exactly the interpreter's: a wrong element is
     * off by |x|), then x·2 (exact) or x·(1/0.7) rounded once more than the interpreter's x/0.7 */
    {EM3_OP_DROPOUT_TRAIN, {"x:f32[B,5,7]", "t:f32[]", "t:f32[]"}, "p=0.5 salt=3", EXACT},
    {EM3_OP_DROPOUT_TRAIN, {"xG:f32[40,3]", "t:f32[]", "t:f32[]"}, "p=0.3 salt=12", ULP},
    /* gelu_grad on the shapes of its forward */
    {EM3_OP_GELU_GRAD, {"b:f32[B,5,7]", "x:f32[B,5,7]"}, "", CLOSE},
    /* optimizer updates, dense and sparse, with and without weight decay */
    {EM3_OP_SGD_UPDATE, {"xG:f32[5,7]", "x:f32[5,7]", "l:f32[]"}, "", CLOSE},
    {EM3_OP_SGD_UPDATE, {"xG:f32[16]", "x:f32[16]", "l:f32[]"}, "wd=0.01", CLOSE},
    {EM3_OP_MOMENTUM_UPDATE, {"xG:f32[5,7]", "x:f32[5,7]", "l:f32[]", "xS:f32[5,7]"}, "", CLOSE},
    {EM3_OP_MOMENTUM_UPDATE, {"xG:f32[37]", "x:f32[37]", "l:f32[]", "xS:f32[37]"},
     "momentum=0.5 wd=0.01", CLOSE},
    {EM3_OP_ADAM_UPDATE,
     {"xG:f32[5,7]", "x:f32[5,7]", "l:f32[]", "t:f32[]", "xS:f32[5,7]", "uS:f32[5,7]"}, "", CLOSE},
    {EM3_OP_ADAM_UPDATE, {"xG:f32[37]", "x:f32[37]", "l:f32[]", "t:f32[]", "xS:f32[37]", "uS:f32[37]"},
     "wd=0.01", CLOSE},
    {EM3_OP_ADAM_UPDATE, {"xG:f32[37]", "x:f32[37]", "l:f32[]", "t:f32[]", "xS:f32[37]", "uS:f32[37]"},
     "beta1=0.8 beta2=0.99 eps=0.001 wd=0.1 decoupled=1", CLOSE},
    /* betas that are powers of two: LLVM may rewrite powf(2^k, t) into a libm call (exp2f)
     * that the JIT must be able to bind */
    {EM3_OP_ADAM_UPDATE, {"xG:f32[37]", "x:f32[37]", "l:f32[]", "t:f32[]", "xS:f32[37]", "uS:f32[37]"},
     "beta1=0.5 beta2=0.25", CLOSE},
    {EM3_OP_ADAGRAD_UPDATE, {"xG:f32[5,7]", "x:f32[5,7]", "l:f32[]", "uS:f32[5,7]"}, "", CLOSE},
    {EM3_OP_ADAGRAD_UPDATE, {"xG:f32[37]", "x:f32[37]", "l:f32[]", "uS:f32[37]"}, "eps=0.01 wd=0.01",
     CLOSE},
    {EM3_OP_SPARSE_SGD_UPDATE, {"xG:f32[10,4]", "i10:i32[B,3]", "x:f32[B,3,4]", "l:f32[]"}, "", CLOSE},
    {EM3_OP_SPARSE_SGD_UPDATE, {"xG:f32[10]", "i4:i32[B]", "x:f32[B]", "l:f32[]"}, "wd=0.01", CLOSE},
    {EM3_OP_SPARSE_ADAM_UPDATE,
     {"xG:f32[10,4]", "i10:i32[B,3]", "x:f32[B,3,4]", "l:f32[]", "t:f32[]", "xS:f32[10,4]",
      "uS:f32[10,4]"},
     "", CLOSE},
    {EM3_OP_SPARSE_ADAM_UPDATE,
     {"xG:f32[6,2,3]", "i6:i32[B,2]", "x:f32[B,2,2,3]", "l:f32[]", "t:f32[]", "xS:f32[6,2,3]",
      "uS:f32[6,2,3]"},
     "wd=0.1 decoupled=1", CLOSE},
    {EM3_OP_SPARSE_ADAGRAD_UPDATE,
     {"xG:f32[10,4]", "i10:i32[B,3]", "x:f32[B,3,4]", "l:f32[]", "uS:f32[10,4]"}, "", CLOSE},
    {EM3_OP_SPARSE_ADAGRAD_UPDATE, {"xG:f32[10]", "i3:i32[B]", "x:f32[B]", "l:f32[]", "uS:f32[10]"},
     "wd=0.01", CLOSE},
};

/* Elementwise ops run over the shapes of their arity below, in f32 and (where the op takes it)
 * in i32. kinds: the value kind of each operand; NULL: no rows of that element type. The walk
 * over a shape with broadcast operands is one piece of code for every op (cg_walk) while the
 * formula is the op's own, so each op runs on the first SHORT_SHAPES shapes and a few (`all`)
 * on every shape: compile time, since each row is a kernel of its own. */
typedef struct {
    em3_op op;
    const char *f32_kinds, *i32_kinds;
    const char *attrs;
    double tol;
    bool all;
} ew_row;

static const ew_row elementwise_rows[] = {
    {EM3_OP_NEG, "x", "x", "", EXACT, true},
    {EM3_OP_NEG, "e", NULL, "", EXACT, false},
    {EM3_OP_EXP, "x", NULL, "", ULP, true},
    {EM3_OP_EXP, "b", NULL, "", ULP, false},
    {EM3_OP_EXP, "e", NULL, "", ULP, false},
    {EM3_OP_LOG, "p", NULL, "", ULP, false},
    {EM3_OP_LOG, "e", NULL, "", ULP, false},
    {EM3_OP_SQRT, "p", NULL, "", EXACT, false},
    {EM3_OP_SQRT, "e", NULL, "", EXACT, false},
    {EM3_OP_RSQRT, "p", NULL, "", ULP, false},
    {EM3_OP_RSQRT, "e", NULL, "", ULP, false},
    {EM3_OP_ABS, "x", "x", "", EXACT, false},
    {EM3_OP_ABS, "e", NULL, "", EXACT, false},
    {EM3_OP_TANH, "x", NULL, "", ULP, false},
    {EM3_OP_TANH, "e", NULL, "", ULP, false},
    {EM3_OP_SIGMOID, "b", NULL, "", ULP, false},
    {EM3_OP_SIGMOID, "e", NULL, "", ULP, false},
    {EM3_OP_RELU, "x", NULL, "", EXACT, false},
    {EM3_OP_RELU, "e", NULL, "", EXACT, false},
    {EM3_OP_GELU, "x", NULL, "", ULP, false},
    {EM3_OP_GELU, "e", NULL, "", ULP, false},
    {EM3_OP_SOFTPLUS, "b", NULL, "", ULP, false},
    {EM3_OP_SOFTPLUS, "e", NULL, "", ULP, false},
    {EM3_OP_CAST, "x", "x", "to=i32", EXACT, true},
    {EM3_OP_CAST, "x", "x", "to=f32", EXACT, false},
    {EM3_OP_STOP_GRADIENT, "x", "x", "", EXACT, false},
    {EM3_OP_DROPOUT, "x", NULL, "p=0.5", EXACT, false},
    {EM3_OP_ADD, "xx", "xx", "", EXACT, true},
    {EM3_OP_ADD, "ee", NULL, "", EXACT, false},
    {EM3_OP_SUB, "xx", "xx", "", EXACT, false},
    {EM3_OP_SUB, "ee", NULL, "", EXACT, false},
    {EM3_OP_MUL, "xx", "xx", "", EXACT, false},
    {EM3_OP_MUL, "ee", NULL, "", EXACT, false},
    {EM3_OP_DIV, "xn", NULL, "", EXACT, false},
    {EM3_OP_DIV, "ee", NULL, "", EXACT, false},
    {EM3_OP_MAXIMUM, "qq", "qq", "", EXACT, false},
    {EM3_OP_MAXIMUM, "ee", NULL, "", EXACT, false},
    {EM3_OP_MINIMUM, "qq", "qq", "", EXACT, false},
    {EM3_OP_MINIMUM, "ee", NULL, "", EXACT, false},
    {EM3_OP_EQ, "qq", "qq", "", EXACT, false},
    {EM3_OP_EQ, "ee", NULL, "", EXACT, false},
    {EM3_OP_NE, "qq", "qq", "", EXACT, false},
    {EM3_OP_NE, "ee", NULL, "", EXACT, false},
    {EM3_OP_LT, "qq", "qq", "", EXACT, false},
    {EM3_OP_LT, "ee", NULL, "", EXACT, false},
    {EM3_OP_LE, "qq", "qq", "", EXACT, false},
    {EM3_OP_LE, "ee", NULL, "", EXACT, false},
    {EM3_OP_GT, "qq", "qq", "", EXACT, false},
    {EM3_OP_GT, "ee", NULL, "", EXACT, false},
    {EM3_OP_GE, "qq", "qq", "", EXACT, false},
    {EM3_OP_GE, "ee", NULL, "", EXACT, false},
    {EM3_OP_BCE_LOGITS, "bm", NULL, "", ULP, true},
    {EM3_OP_BCE_LOGITS, "xu", NULL, "", ULP, false},
    {EM3_OP_BCE_LOGITS, "em", NULL, "", ULP, false},
    {EM3_OP_WHERE, "mxx", "mxx", "", EXACT, true},
    {EM3_OP_WHERE, "eee", NULL, "", EXACT, false},
    {EM3_OP_GELU_GRAD, "xx", NULL, "", CLOSE, false},
};

/* The shapes of one, two and three operands ("G" before a shape: held by a global). They cover
 * scalars, [B], [B, 5, 7], numpy broadcasting both ways, B·k dims made by reshape, rank 5 and
 * the batch dimension in the middle. */
#define SHORT_SHAPES 2
static const char *const unary_shapes[][1] = {
    {"[B,5,7]"}, {"[B,5,7]>[B*5,7]"}, {"[]"}, {"[B]"}, {"[B,2,3,2,3]"}, {"[3,B,4]"}, {"G[5,7]"},
};
static const char *const binary_shapes[][2] = {
    {"[B,5,7]", "[B,5,7]"},
    {"[B,1,7]", "[7]"},
    {"[]", "[]"},
    {"[B]", "[B]"},
    {"[5,1]", "[B,1,7]"},
    {"[]", "[B,5,7]"},
    {"[B,5,7]>[B*5,7]", "[B*5,1]"},
    {"[B,2,3,1,3]", "[2,1,2,3]"},
    {"[1,B,1]", "[B,7]"},
    {"[B,5,7]", "G[7]"},
};
static const char *const ternary_shapes[][3] = {
    {"[B,5,7]", "[B,5,7]", "[B,5,7]"},
    {"[B,1,7]", "[7]", "[B,5,1]"},
    {"[]", "[B]", "[]"},
    {"[B*5,1]", "[B,5,7]>[B*5,7]", "[7]"},
    {"[B,2,1,2,3]", "G[3,1,3]", "[B,1,1,1,1]"},
};

/* One function of the module under test: op applied to operands from specs. */
typedef struct {
    em3_op op;
    int n_args;
    char args[7][48];
    const char *attrs;
    double tol;
} row;

static int count_args(const char *const *args) {
    int n = 0;
    while (n < 7 && args[n]) n++;
    return n;
}

/* The rows of ops of kind `kind` (of every op when `all`), expanded into `out`; returns the
 * count. */
static int expand_rows(row *out, int cap, bool all, em3_op_kind kind) {
    int n = 0;
    for (size_t i = 0; i < sizeof structural_rows / sizeof *structural_rows; i++) {
        const op_row *r = &structural_rows[i];
        if (!all && em3_op_kind_of(r->op) != kind) continue;
        assert_true(n < cap);
        row *o = &out[n++];
        *o = (row){r->op, count_args(r->args), {{0}}, r->attrs, r->tol};
        for (int k = 0; k < o->n_args; k++) snprintf(o->args[k], sizeof o->args[k], "%s", r->args[k]);
    }
    for (size_t i = 0; i < sizeof elementwise_rows / sizeof *elementwise_rows; i++) {
        const ew_row *r = &elementwise_rows[i];
        if (!all && em3_op_kind_of(r->op) != kind) continue;
        int arity = em3_op_arity(r->op);
        int n_shapes = arity == 1   ? (int)(sizeof unary_shapes / sizeof *unary_shapes)
                       : arity == 2 ? (int)(sizeof binary_shapes / sizeof *binary_shapes)
                                    : (int)(sizeof ternary_shapes / sizeof *ternary_shapes);
        for (int dt = 0; dt < 2; dt++) {
            const char *kinds = dt ? r->i32_kinds : r->f32_kinds;
            if (!kinds) continue;
            for (int s = 0; s < (r->all ? n_shapes : SHORT_SHAPES); s++) {
                assert_true(n < cap);
                row *o = &out[n++];
                *o = (row){r->op, arity, {{0}}, r->attrs, r->tol};
                for (int k = 0; k < arity; k++) {
                    const char *shape = arity == 1   ? unary_shapes[s][k]
                                        : arity == 2 ? binary_shapes[s][k]
                                                     : ternary_shapes[s][k];
                    bool global = shape[0] == 'G';
                    /* a where condition keeps f32 in the i32 rows half the time */
                    const char *dtype = dt && !(r->op == EM3_OP_WHERE && k == 0 && s % 2) ? "i32" : "f32";
                    snprintf(o->args[k], sizeof o->args[k], "%c%s:%s%s", kinds[k], global ? "G" : "",
                             dtype, shape + global);
                }
            }
        }
    }
    return n;
}

/* ---- operands -------------------------------------------------------------------------------- */

typedef struct {
    char kind;
    int64_t ids;   /* for kind i: the id range */
    char storage;  /* 0: an input, 'G': a PARAM global, 'S': a STATE global */
    em3_type type; /* as given */
    bool reshape;
    em3_type as;   /* after the reshape */
} spec;

static spec parse_spec(const char *s) {
    spec sp = {.kind = s[0]};
    const char *p = s + 1;
    if (sp.kind == 'i') sp.ids = strtoll(p, (char **)&p, 10);
    if (*p == 'G' || *p == 'S') sp.storage = *p++;
    assert_true(*p == ':');
    p++;
    sp.type = sp.as = op_text_type(&p);
    if (*p == '>') {
        p++;
        sp.reshape = true;
        sp.as.rank = op_text_list(&p, sp.as.dim, EM3_MAX_RANK);
    }
    assert_true(*p == 0);
    return sp;
}

static const double specials[] = {0.0, -0.0, 1.0, -1.0, INFINITY, -INFINITY, NAN, 1e30, -1e30,
                                  1e-40, -1e-40, 3.4e38, -3.4e38, 1.17549435e-38, 88.72, -88.72,
                                  100.0, -100.0, 0.5, -0.5};

/* n values of a spec's kind, exactly representable in its element type. */
static void fill_values(em3_rng *r, const spec *sp, double *v, int64_t n) {
    bool i32 = sp->type.dtype == EM3_DTYPE_I32;
    for (int64_t i = 0; i < n; i++) {
        double u = em3_rng_uniform(r), x;
        switch (sp->kind) {
        case 'p': x = i32 ? 1 + floor(9 * u) : 0.05 + 3.95 * u; break;
        case 'n': x = (i32 ? 1 + floor(9 * u) : 0.25 + 2.75 * u) * (em3_rng_uniform(r) < 0.5 ? -1 : 1); break;
        case 'q': x = floor(5 * u) - 2; break;
        case 'u': x = u; break;
        case 'm': x = u < 0.5; break;
        case 'b': x = 160 * u - 80; break;
        case 'e': x = specials[em3_rng_below(r, sizeof specials / sizeof *specials)]; break;
        case 'l': x = 0.05; break;
        case 't': x = 3; break;
        case 'i': x = (double)em3_rng_below(r, (uint64_t)sp->ids); break;
        default: x = i32 ? floor(19 * u) - 9 : 6 * u - 3; break;
        }
        v[i] = i32 ? x : (double)(float)x;
    }
}

/* Row i is function r<i>_<op>; its operand k is input a<k> or global r<i>.a<k>. */
typedef char name_buf[48];

static const char *func_name(name_buf buf, int i, em3_op op) {
    snprintf(buf, sizeof(name_buf), "r%d_%s", i, em3_op_name(op));
    return buf;
}

static const char *operand_name(name_buf buf, int i, int k, const spec *sp) {
    if (sp->storage)
        snprintf(buf, sizeof(name_buf), "r%d.a%d", i, k);
    else
        snprintf(buf, sizeof(name_buf), "a%d", k);
    return buf;
}

/* Adds row i with output y. */
static void build_row(em3_module *m, const row *r, int i) {
    name_buf fname, name;
    em3_func *f = em3_module_add_func(m, func_name(fname, i, r->op));
    em3_builder b = {f, {0}};
    int in[7];
    em3_node proto = em3_node_proto(r->op, (em3_loc){0});
    op_text_store st;
    op_text_attrs(&proto, r->attrs, &st);
    int n_in = r->op == EM3_OP_CONST ? 0 : r->n_args;
    for (int k = 0; k < n_in; k++) {
        spec sp = parse_spec(r->args[k]);
        operand_name(name, i, k, &sp);
        if (sp.storage) {
            em3_global_kind gk = sp.storage == 'G' ? EM3_GLOBAL_PARAM : EM3_GLOBAL_STATE;
            assert_true(em3_module_add_global(m, name, sp.type, gk, (em3_init){EM3_INIT_NONE, 0},
                                              (em3_loc){0}) >= 0);
            in[k] = em3_b_param(&b, name);
        } else {
            in[k] = em3_b_input(&b, name, &sp.type);
        }
        if (sp.reshape) in[k] = em3_b_reshape(&b, in[k], sp.as.dim, sp.as.rank);
    }
    if (r->op == EM3_OP_CONST) proto.type = parse_spec(r->args[0]).type;
    char err[256] = "";
    int y = em3_func_add(f, &proto, in, n_in, err, sizeof err);
    if (y < 0) fail_msg("row %d (%s): %s", i, em3_op_name(r->op), err);
    em3_func_add_output(f, "y", y);
}

/* ---- running a group of rows ------------------------------------------------------------------ */

static const int64_t batches[] = {1, 3, JH_MAX_BATCH};

/* Runs row i of the module at `batch` in both and compares; returns the largest difference. */
static double run_row(jh_pair *p, const row *r, int i, int64_t batch) {
    em3_rng rng;
    em3_rng_seed(&rng, (uint64_t)(i * 1000 + batch));
    em3_interp_input in[7];
    double *vals[7] = {0};
    name_buf names[7], fname;
    int n_in = 0, n_ops = r->op == EM3_OP_CONST ? 0 : r->n_args;
    for (int k = 0; k < n_ops; k++) {
        spec sp = parse_spec(r->args[k]);
        int64_t n = em3_type_numel(&sp.type, batch);
        vals[k] = malloc(sizeof(double) * (size_t)(n ? n : 1));
        fill_values(&rng, &sp, vals[k], n);
        const char *name = operand_name(names[k], i, k, &sp);
        if (sp.storage)
            jh_set_global(p, em3_module_find_global(p->m, name), vals[k]);
        else
            in[n_in++] = (em3_interp_input){name, vals[k]};
    }
    jh_run(p, func_name(fname, i, r->op), batch, in, n_in);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "r%d.", i);
    double e = fmax(jh_compare_outputs(p, r->tol), jh_compare_globals(p, prefix, r->tol));
    for (int k = 0; k < n_ops; k++) free(vals[k]);
    return e;
}

/* Graph global g of the spmm rows: f32[40, 30], bound to a random graph. */
static void add_graph_global(em3_module *m) {
    assert_true(em3_module_add_graph(m, "g", em3_type_make(EM3_DTYPE_F32, 2, (int64_t[]){40, 30}), "user_item",
                                     (em3_loc){0}) >= 0);
}

/* Builds one module of every row of op kind `kind`, compiles it once, runs each row at every
 * batch size and prints the largest difference per op. */
static void run_group(em3_op_kind kind) {
    static row rows[1024];
    int n = expand_rows(rows, 1024, false, kind);
    em3_module *m = em3_module_create(em3_op_kind_name(kind));
    add_graph_global(m);
    for (int i = 0; i < n; i++) build_row(m, &rows[i], i);
    jh_pair *p = jh_create(m);
    jh_bind_graph(p, "g", random_graph(77, 40, 30, 5, -0.5));
    double worst[EM3_OP_COUNT];
    for (int o = 0; o < EM3_OP_COUNT; o++) worst[o] = -1;
    for (size_t b = 0; b < sizeof batches / sizeof *batches; b++)
        for (int i = 0; i < n; i++) worst[rows[i].op] = fmax(worst[rows[i].op], run_row(p, &rows[i], i, batches[b]));
    print_message("  %d rows, %d functions compiled in %.2f s; largest |jit - ref| / (1 + |ref|):\n", n,
                  m->n_func, em3_jit_compile_seconds(p->jit));
    for (int o = 0; o < EM3_OP_COUNT; o++)
        if (worst[o] >= 0) print_message("    %-22s %.2e\n", em3_op_name((em3_op)o), worst[o]);
    jh_free(p);
}

static void test_elementwise(void **state) {
    (void)state;
    run_group(EM3_KIND_ELEMWISE);
}

static void test_reductions(void **state) {
    (void)state;
    run_group(EM3_KIND_REDUCE);
}

static void test_data_movement(void **state) {
    (void)state;
    run_group(EM3_KIND_SHAPE);
    run_group(EM3_KIND_LEAF);
}

static void test_matmul(void **state) {
    (void)state;
    run_group(EM3_KIND_GEMM);
}

static void test_gather(void **state) {
    (void)state;
    run_group(EM3_KIND_GATHER);
}

/* optimizer updates, attention and its gradient */
static void test_opaque_ops(void **state) {
    (void)state;
    run_group(EM3_KIND_OPAQUE);
}

/* Every op that code generation emits has at least one row. */
static void test_every_op_has_a_row(void **state) {
    (void)state;
    static const char *const emitter[EM3_OP_COUNT] = {
#define OP(E, NAME, ARITY, KIND, ATTRS, FLAGS, SHAPE, REF, VJP, EMIT, ...) [EM3_OP_##E] = #EMIT,
#include "ir/ops.def"
#undef OP
    };
    static row rows[1024];
    int n = expand_rows(rows, 1024, true, EM3_KIND_LEAF), missing = 0;
    for (int o = 0; o < EM3_OP_COUNT; o++) {
        if (!strcmp(emitter[o], "cg_emit_none") || o == EM3_OP_UNIQUE || o == EM3_OP_INDEX_OF)
            continue; /* test_distinct_ids */
        bool found = false;
        for (int i = 0; i < n && !found; i++) found = rows[i].op == (em3_op)o;
        if (!found) {
            print_error("op %s (emitter %s) has no row in test_codegen_ops.c\n", em3_op_name((em3_op)o),
                        emitter[o]);
            missing++;
        }
    }
    assert_int_equal(missing, 0);
}

/* ---- data errors ------------------------------------------------------------------------------ */

/* unique and index_of have results in U1, which no function returns, so they have no row:
 * here a [B, 3] batch of repeated ids is made distinct, each distinct row goes through a GEMM,
 * tanh and a sum over the distinct rows, and is gathered back to every occurrence — the JIT
 * against the interpreter at batches 1, 3 and 64; then an id that the distinct ids lack, and
 * ids too far apart for the runtime's table over their range. */
static void test_distinct_ids(void **state) {
    (void)state;
    em3_module *m = em3_module_create("distinct");
    em3_type table = em3_type_make(EM3_DTYPE_F32, 2, (int64_t[]){50, 8}), w = em3_type_make(EM3_DTYPE_F32, 2, (int64_t[]){8, 4});
    em3_module_add_global(m, "t", table, EM3_GLOBAL_PARAM, (em3_init){EM3_INIT_NONE, 0}, (em3_loc){0});
    em3_module_add_global(m, "w", w, EM3_GLOBAL_PARAM, (em3_init){EM3_INIT_NONE, 0}, (em3_loc){0});
    em3_builder b = {em3_module_add_func(m, "f"), {0}};
    em3_type ids_t = em3_type_make(EM3_DTYPE_I32, 2, (int64_t[]){EM3_DIM_BATCH, 3});
    int ids = em3_b_input(&b, "ids", &ids_t), other = em3_b_input(&b, "other", &ids_t);
    int flat = em3_b_reshape(&b, ids, (int64_t[]){-3}, 1);
    em3_node un = em3_node_proto(EM3_OP_UNIQUE, (em3_loc){0});
    em3_node_set_i(&un, "sym", 1);
    int u = em3_b_node(&b, &un, &flat, 1);
    em3_node io = em3_node_proto(EM3_OP_INDEX_OF, (em3_loc){0});
    int pos = em3_b_node(&b, &io, (int[]){flat, u}, 2);
    int rows = em3_b_unary(&b, EM3_OP_TANH, em3_b_matmul(&b, em3_b_gather(&b, em3_b_param(&b, "t"), u), em3_b_param(&b, "w"), false, false));
    int total = em3_b_reduce(&b, EM3_OP_SUM, rows, (int64_t[]){0}, 1, false);
    em3_func_add_output(b.f, "y", em3_b_binary(&b, EM3_OP_ADD, em3_b_gather(&b, rows, pos), total));
    em3_func_add_output(b.f, "pos", pos);
    b.f = em3_module_add_func(m, "missing"); /* index_of(other, unique(ids)) */
    ids = em3_b_input(&b, "ids", &ids_t), other = em3_b_input(&b, "other", &ids_t);
    u = em3_b_node(&b, &un, (int[]){em3_b_reshape(&b, ids, (int64_t[]){-3}, 1)}, 1);
    em3_func_add_output(b.f, "pos", em3_b_node(&b, &io, (int[]){em3_b_reshape(&b, other, (int64_t[]){-3}, 1), u}, 2));
    char err[256];
    if (!em3_module_verify(m, err, sizeof err)) fail_msg("%s", err);
    jh_pair *p = jh_create(m);
    double tv[400], wv[32], idv[192], ov[192];
    for (int i = 0; i < 400; i++) tv[i] = (float)sin(i * 0.37);
    for (int i = 0; i < 32; i++) wv[i] = (float)cos(i * 0.91);
    jh_set_global(p, 0, tv);
    jh_set_global(p, 1, wv);
    for (int k = 0; k < 3; k++) {
        int64_t n = batches[k] * 3;
        for (int64_t i = 0; i < n; i++) idv[i] = ov[i] = (double)((i * 7 + k) % (k == 2 ? 41 : 2)) * 1.0;
        em3_interp_input in[2] = {{"ids", idv}, {"other", ov}};
        jh_run(p, "f", batches[k], in, 2);
        jh_compare_outputs(p, CLOSE);
    }
    /* 2 rows of 3 ids 0..5; `other` asks for id 9 at position 4 */
    for (int i = 0; i < 6; i++) idv[i] = ov[i] = i;
    ov[4] = 9;
    em3_interp_input in[2] = {{"ids", idv}, {"other", ov}};
    assert_false(em3_interp_run(p->it, "missing", 2, in, 2, err, sizeof err));
    assert_non_null(strstr(err, "id 9 is not among the 6 distinct ids"));
    assert_int_equal(jh_run_jit(p, "missing", 2, in, 2), 1);
    assert_int_equal(p->frame.err_index, 4);
    assert_int_equal(p->frame.err_value, 9);
    /* ids spread over the whole i32 range (the runtime sorts instead of marking a table) */
    static const double wide[6] = {2000000000, -7, 2000000000, 3, -2000000000, 3};
    em3_interp_input win[2] = {{"ids", wide}, {"other", wide}};
    jh_run(p, "missing", 2, win, 2);
    jh_compare_outputs(p, EXACT);
    const int32_t *got = p->out[0];
    static const int32_t want[6] = {3, 1, 3, 2, 0, 2};
    for (int i = 0; i < 6; i++) assert_int_equal(got[i], want[i]);
    jh_free(p);
}

/* An id outside its table: the interpreter reports a user error, the compiled function returns
 * 1 with the failing value, the position and the id in the frame, and no global is written. */
static void test_out_of_range_ids(void **state) {
    (void)state;
    em3_module *m = em3_module_create("errors");
    int64_t table_dims[2] = {10, 4}, ids_dims[2] = {EM3_DIM_BATCH, 3}, rows_dims[3] = {EM3_DIM_BATCH, 3, 4};
    em3_type table = em3_type_make(EM3_DTYPE_F32, 2, table_dims), ids_t = em3_type_make(EM3_DTYPE_I32, 2, ids_dims),
             rows_t = em3_type_make(EM3_DTYPE_F32, 3, rows_dims), scalar = em3_type_make(EM3_DTYPE_F32, 0, NULL);
    assert_true(em3_module_add_global(m, "w", table, EM3_GLOBAL_PARAM, (em3_init){EM3_INIT_NONE, 0}, (em3_loc){0}) >= 0);
    int failing[3]; /* the value that fails in each function */
    static const char *const funcs[3] = {"gather", "scatter", "update"};
    for (int k = 0; k < 3; k++) {
        em3_builder b = {em3_module_add_func(m, funcs[k]), {0}};
        int w = em3_b_param(&b, "w"), ids = em3_b_input(&b, "ids", &ids_t);
        if (k == 0) {
            failing[k] = em3_b_gather(&b, w, ids);
        } else {
            em3_node p = em3_node_proto(k == 1 ? EM3_OP_SCATTER_ADD : EM3_OP_SPARSE_SGD_UPDATE, (em3_loc){0});
            int in[4] = {k == 1 ? em3_b_input(&b, "base", &table) : w, ids, em3_b_input(&b, "rows", &rows_t),
                         k == 2 ? em3_b_input(&b, "lr", &scalar) : 0};
            failing[k] = em3_b_node(&b, &p, in, k == 1 ? 3 : 4);
        }
        em3_func_add_output(b.f, "y", failing[k]);
    }
    jh_pair *p = jh_create(m);
    double w0[40], base[40], ids[9], rows[36], lr = 0.5;
    for (int i = 0; i < 40; i++) w0[i] = base[i] = i;
    for (int i = 0; i < 36; i++) rows[i] = 1;
    static const double bad_ids[] = {10, -1, 2147483647};
    for (size_t t = 0; t < sizeof bad_ids / sizeof *bad_ids; t++) {
        for (int i = 0; i < 9; i++) ids[i] = i % 3; /* repeated ids, all valid ... */
        ids[4 + t] = bad_ids[t];                    /* ... but one */
        em3_interp_input in[4] = {{"ids", ids}, {"base", base}, {"rows", rows}, {"lr", &lr}};
        for (int k = 0; k < 3; k++) {
            jh_set_global(p, 0, w0);
            char err[256] = "";
            assert_false(em3_interp_run(p->it, funcs[k], 3, in, 4, err, sizeof err));
            assert_non_null(strstr(err, "outside the table's 10 rows"));
            assert_int_equal(jh_run_jit(p, funcs[k], 3, in, 4), 1);
            print_message("  @%s, id %.0f at position %zu: interpreter \"%s\"; JIT value %%%d, index %lld, id %lld\n",
                          funcs[k], bad_ids[t], 4 + t, err, p->frame.err_node, (long long)p->frame.err_index,
                          (long long)p->frame.err_value);
            assert_int_equal(p->frame.err_node, failing[k]);
            /* the runtime's sparse update checks every id before it writes, and reports the id
             * but not its position */
            assert_int_equal(p->frame.err_index, k == 2 ? -1 : (int64_t)(4 + t));
            assert_int_equal(p->frame.err_value, (int64_t)bad_ids[t]);
            for (int i = 0; i < 40; i++) assert_true(((const float *)p->glob[0])[i] == (float)w0[i]);
        }
    }
    jh_free(p);
}

/* ---- the LLVM IR: vectorised kernels, strict floating point --------------------------------------- */

/* The definition of the kernel of function `fn` for an op `op` (named FN.kID.OP) in LLVM IR
 * text (malloc'ed). */
static char *kernel_body(const char *ir, const char *fn, const char *op) {
    size_t fl = strlen(fn), ol = strlen(op);
    for (const char *at = ir; (at = strstr(at, "\ndefine ")); at++) {
        const char *name = strchr(at, '@') + 1, *end = strstr(at, "\n}\n");
        size_t nl = strcspn(name, "(");
        if (end && !strncmp(name, fn, fl) && name[fl] == '.' && nl > ol + 1 && name[nl - ol - 1] == '.' &&
            !strncmp(name + nl - ol, op, ol))
            return strndup(at, (size_t)(end - at));
    }
    fail_msg("no kernel %s.*.%s in the LLVM IR", fn, op);
    return NULL;
}

static char *emit_llvm(em3_module *m, bool strict_fp) {
    char dir[] = "/tmp/em3_cg_XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/opt.ll", dir);
    em3_codegen_options o = em3_codegen_defaults();
    o.strict_fp = strict_fp;
    em3_diag *d = em3_diag_create(stderr);
    assert_true(em3_codegen_emit(m, &o, EM3_EMIT_LLVM_OPT, path, d));
    em3_diag_free(d);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *text = calloc((size_t)n + 1, 1);
    assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    remove(path);
    rmdir(dir);
    return text;
}

static bool has_vector(const char *body) {
    return strstr(body, "<8 x float>") || strstr(body, "<16 x float>") || strstr(body, "<32 x float>");
}

/* A [B, 64] elementwise op and a row sum: both loops are vectorised at -O3 (the sum because it
 * may reassociate); with strict_fp the sum keeps its order: no `reassoc` in its kernel. */
static void test_vectorised_ir(void **state) {
    (void)state;
    em3_module *m = em3_module_create("vec");
    int64_t dims[2] = {EM3_DIM_BATCH, 64}, axis = 1;
    em3_type t = em3_type_make(EM3_DTYPE_F32, 2, dims);
    em3_builder b = {em3_module_add_func(m, "f"), {0}};
    int x = em3_b_input(&b, "x", &t), y = em3_b_input(&b, "y", &t);
    int z = em3_b_binary(&b, EM3_OP_MUL, x, y);
    em3_func_add_output(b.f, "z", z);
    em3_func_add_output(b.f, "s", em3_b_reduce(&b, EM3_OP_SUM, z, &axis, 1, false));
    em3_func_add_output(b.f, "e", em3_b_unary(&b, EM3_OP_EXP, x));
    for (int strict = 0; strict < 2; strict++) {
        char *ir = emit_llvm(m, strict);
        char *mul = kernel_body(ir, "f", "mul"), *sum = kernel_body(ir, "f", "sum"), *ex = kernel_body(ir, "f", "exp");
        if (!has_vector(mul)) fail_msg("the elementwise kernel is not vectorised:\n%s", mul);
        if (!has_vector(ex)) fail_msg("exp is not vectorised:\n%s", ex);
        if (strict) {
            if (strstr(sum, "reassoc")) fail_msg("strict_fp, yet the sum reassociates:\n%s", sum);
        } else {
            if (!strstr(sum, "reassoc") || !has_vector(sum)) fail_msg("the row sum is not vectorised:\n%s", sum);
        }
        free(mul);
        free(sum);
        free(ex);
        free(ir);
    }
    em3_module_free(m);
}

/* ---- how compilation fails -------------------------------------------------------------------- */

/* Errors that reach the diagnostics: a CPU LLVM does not know (LLVM itself would silently
 * ignore it), and an unwritable output. A missing external symbol ("Symbols not found") cannot
 * be provoked from valid IR: no emitter calls anything outside em3_rt_symbols, and LLVM's
 * lowering of floor, maximum, fptosi.sat and powf at every CPU level tried (x86-64 to znver5,
 * -O0 and -O3) calls nothing either; em3_jit_compile's lookup error path stays untested. */
static void test_compile_errors(void **state) {
    (void)state;
    em3_module *m = em3_module_create("errs");
    int64_t dims[1] = {EM3_DIM_BATCH};
    em3_type t = em3_type_make(EM3_DTYPE_F32, 1, dims);
    em3_builder b = {em3_module_add_func(m, "f"), {0}};
    em3_func_add_output(b.f, "y", em3_b_unary(&b, EM3_OP_EXP, em3_b_input(&b, "x", &t)));
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    em3_diag *d = em3_diag_create(out);
    em3_codegen_options o = em3_codegen_defaults();
    o.cpu = "nonsense";
    assert_null(em3_jit_compile(m, &o, d));
    assert_false(em3_codegen_emit(m, &o, EM3_EMIT_OBJ, "/tmp/never.o", d));
    o.cpu = NULL;
    assert_false(em3_codegen_emit(m, &o, EM3_EMIT_LLVM, "/nonexistent/dir/f.ll", d));
    em3_jit *j = em3_jit_compile(m, &o, d);
    assert_non_null(j);
    assert_non_null(em3_jit_func(j, "f"));
    assert_null(em3_jit_func(j, "no_such")); /* what a failed symbol lookup leaves: no function */
    em3_jit_free(j);
    assert_int_equal(em3_diag_error_count(d), 3);
    em3_diag_free(d);
    fclose(out);
    print_message("  diagnostics:\n%s", text);
    assert_non_null(strstr(text, "unknown CPU 'nonsense'"));
    assert_non_null(strstr(text, "cannot write /nonexistent/dir/f.ll"));
    free(text);
    em3_module_free(m);
}

/* With perf_map, the JIT lists every compiled function in /tmp/perf-PID.map at the address
 * it runs from: the function itself and its kernels, each with a size. */
static void test_perf_map(void **state) {
    (void)state;
    em3_module *m = em3_module_create("pm");
    int64_t dims[2] = {EM3_DIM_BATCH, 8};
    em3_type t = em3_type_make(EM3_DTYPE_F32, 2, dims);
    em3_builder b = {em3_module_add_func(m, "mapped"), {0}};
    int x = em3_b_input(&b, "x", &t);
    em3_func_add_output(b.f, "y", em3_b_unary(&b, EM3_OP_TANH, em3_b_unary(&b, EM3_OP_EXP, x)));
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%ld.map", (long)getpid());
    remove(path);
    em3_diag *d = em3_diag_create(stderr);
    em3_codegen_options o = em3_codegen_defaults();
    o.perf_map = true;
    em3_jit *j = em3_jit_compile(m, &o, d);
    assert_non_null(j);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    unsigned long long start, size;
    char name[256];
    int kernels = 0;
    bool entry = false;
    while (fscanf(f, "%llx %llx %255s", &start, &size, name) == 3) {
        assert_true(size > 0);
        if (!strcmp(name, "mapped")) entry = start == (unsigned long long)(uintptr_t)em3_jit_func(j, "mapped")->fn;
        kernels += !strncmp(name, "mapped.k", 8);
    }
    fclose(f);
    remove(path);
    assert_true(entry);
    assert_int_equal(kernels, em3_codegen_kernel_count(b.f)); /* exp and tanh, not fused here */
    em3_jit_free(j);
    em3_diag_free(d);
    em3_module_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_perf_map),
        cmocka_unit_test(test_every_op_has_a_row),
        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_reductions),
        cmocka_unit_test(test_data_movement),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_gather),
        cmocka_unit_test(test_opaque_ops),
        cmocka_unit_test(test_out_of_range_ids),
        cmocka_unit_test(test_distinct_ids),
        cmocka_unit_test(test_vectorised_ir),
        cmocka_unit_test(test_compile_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
