/* passes/rowwise.h — which values of @forward are a function of one id input's rows: the
 * analysis behind cache-frozen (such a value through frozen weights is the same every step:
 * cache it per item) and dedup-rows (such a value is the same for every occurrence of an item
 * in a batch: compute it once per distinct item). */
#ifndef EM3_ROWWISE_H
#define EM3_ROWWISE_H

#include "ir/ir.h"

typedef enum {
    EM3_ROW_CONST, /* the same for every row: built from constants and parameters only */
    EM3_ROW_OF,    /* row-wise in an id input X: element (b, l, ...) depends on X[b, l] alone */
    EM3_ROW_OTHER,
} em3_row_class;

typedef struct {
    const em3_func *f;
    int n;           /* the values analysed: f's nodes at the time (a rewrite appends more) */
    em3_row_class *k;
    int *src;        /* EM3_ROW_OF: the id input */
    bool *expensive; /* the computation includes a GEMM, attention or layer norm */
    bool *leaves;    /* an EM3_ROW_OF value some other value or an output needs */
} em3_rowwise;

/* Classifies every value of f. A parameter counts as constant when it is frozen or a data
 * table, and with `every_param` also when it is trainable or state (constant within a step).
 * A reshape or broadcast at the region's edge is not a leaf: its operand is (the same rows,
 * without the copies). */
void em3_rowwise_analyse(em3_rowwise *a, const em3_func *f, bool every_param);
void em3_rowwise_free(em3_rowwise *a);
/* The number of leading dimensions that are the rows of v's id input. */
int em3_rowwise_lead(const em3_rowwise *a, int v);
/* Whether type t begins with the dimensions of id input src. */
bool em3_rowwise_leads_with(const em3_rowwise *a, const em3_type *t, int src);
/* How many leading dimensions of operand k of n line up with the first r dimensions of n's
 * result (GEMMs and attention line up their batch dimensions, a gather's table and a LoRA
 * GEMM's weights none). */
int em3_rowwise_facing(const em3_func *f, const em3_node *n, int k, int r);
/* Whether constant operand k of n (whose result is row-wise with r leading row dimensions) is
 * the same for every row: it does not reach the row dimensions, or is 1 there, or is a
 * constant fill, or a broadcast whose source does not reach them (the FQF's queries). */
bool em3_rowwise_const_ok(const em3_rowwise *a, const em3_node *n, int k, int r);
/* A row-wise f32 value worth keeping per item (its computation includes a GEMM, attention or
 * layer norm) whose result leaves the row-wise region. */
bool em3_rowwise_frontier(const em3_rowwise *a, int v);
/* After a rewrite of @forward f that appended nodes: every reader of an original value v
 * (nodes before n_orig, and outputs) reads redirect[v] instead; the nodes are re-sorted and
 * @predict is made anew from f. */
void em3_rowwise_redirect(em3_module *m, em3_func *f, const int *redirect, int n_orig);

#endif
