/* ir/program.h — the body of a `fused` node: a straight-line program of elementwise ops over
 * the node's operands, as the text of its `program` attribute, e.g.
 *     mul(%0, %1); add(#0, 1.5); relu(#1)
 * (%k: operand k, #j: the result of instruction j, or a number; `cast.i32(...)` for casts).
 * The last instruction is the result. Parsed and type-checked here, once, for the shape
 * rule, the interpreter, code generation and the fusion pass that writes it. */
#ifndef EM3_PROGRAM_H
#define EM3_PROGRAM_H

#include "ir.h"

#define EM3_PROGRAM_MAX 48   /* instructions */
#define EM3_PROGRAM_OPERANDS 6

typedef enum { EM3_ARG_OPERAND, EM3_ARG_RESULT, EM3_ARG_CONST } em3_arg_kind;

typedef struct {
    em3_arg_kind kind;
    int index;    /* operand or instruction */
    double value; /* constant */
} em3_parg;

typedef struct {
    em3_op op;
    em3_dtype to; /* cast's target */
    int n_args;
    em3_parg arg[3];
    em3_dtype dtype; /* of the result, from em3_program_check */
} em3_pinstr;

typedef struct {
    int n;
    em3_pinstr ins[EM3_PROGRAM_MAX];
} em3_program;

bool em3_program_parse(const char *text, em3_program *p, char *err, size_t errlen);
void em3_program_print(const em3_program *p, em3_strbuf *sb);
/* Checks every instruction against its op's shape rule with the operands' element types and
 * records result types; the program's type is its last instruction's. */
bool em3_program_check(em3_program *p, const em3_dtype *operands, int n_operands, char *err,
                       size_t errlen);
/* The dtype an argument has (constants take their sibling's). */
em3_dtype em3_program_arg_dtype(const em3_program *p, const em3_pinstr *ins, int a,
                                const em3_dtype *operands);
/* A node of the instruction's op (attributes filled) to hand to per-op formulas. */
em3_node em3_program_node(const em3_pinstr *ins);

#endif
