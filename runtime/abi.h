/* runtime/abi.h — the contract between compiled model code (JIT or AOT) and whatever runs it.
 * Compiled functions take one frame: pointers to the inputs, the globals, an arena planned at
 * compile time for a maximum batch size, and places for the outputs; they return 0, or 1
 * after recording a data error (an id outside its table) in the frame. Runtime helpers that
 * compiled code calls are listed once, in em3_rt_symbols, so the JIT binds exactly those. */
#ifndef EM3_ABI_H
#define EM3_ABI_H

#include <stdint.h>

#include "ir/ir.h"

#define EM3_ABI_VERSION 1

typedef struct {
    int64_t batch;              /* rows in this call, 1 .. the compiled max_batch */
    void *arena;                /* planned workspace (em3_abi_func.arena_bytes, 64-byte aligned) */
    void *const *global;        /* per module global, in module order: its storage */
    const void *const *input;   /* per function input, in the function's input order */
    const void **output;        /* per function output: set to where the value is */
    int32_t err_node;           /* on error: the IR value that failed */
    int64_t err_index;          /* ... the position within its operand */
    int64_t err_value;          /* ... and the offending id */
} em3_frame;

typedef int em3_abi_fn(em3_frame *fr);

/* What the runtime needs to call one compiled function. */
typedef struct {
    const char *name;
    em3_abi_fn *fn;
    int64_t arena_bytes;
    int64_t max_batch; /* rows per call the arena was planned for */
    int n_inputs, n_outputs;
    const em3_node *const *inputs; /* the IR's INPUT nodes, in frame order */
    const char *const *outputs;    /* output names, in frame order */
    const em3_type *output_types;
} em3_compiled_func;


/* Sparse (lazy) optimizer updates and sparse gradient norms, called from compiled code. `kind`
 * is the op's (EM3_OP_SPARSE_*_UPDATE numbering is internal: these take an em3_rt_opt). */
typedef enum { EM3_RT_SGD, EM3_RT_ADAM, EM3_RT_ADAGRAD } em3_rt_opt;

typedef struct {
    float lr, step, beta1, beta2, eps, wd;
    int32_t decoupled;
} em3_rt_hyper;

/* Updates rows ids[0..n) (repeats merged) of a table [rows, width] and its state rows. Returns
 * 0, or 1 with *bad set to the first id outside the table. */
int em3_rt_sparse_update(em3_rt_opt kind, const em3_rt_hyper *h, float *param, float *s0,
                         float *s1, const int32_t *ids, const float *grad_rows, int64_t n,
                         int64_t width, int64_t rows, int64_t *bad);
/* Squared norm of the dense gradient that (ids, rows) stand for, repeats merged. */
float em3_rt_sparse_sqnorm(const int32_t *ids, const float *grad_rows, int64_t n, int64_t width);

/* Fused attention over one (batch, head) slice: q [tq, dh], k [tk, dh], v [tk, dv], mask
 * (NULL, or rows of tk values, `mask_row_stride` apart: 0 when one row serves every query)
 * → o [tq, dv]; the backward fills dq, and accumulates into dk and dv (zeroed by the caller). */
void em3_rt_attention_fwd(const float *q, const float *k, const float *v, const float *mask,
                          int64_t mask_row_stride, int64_t tq, int64_t tk, int64_t dh, int64_t dv,
                          float scale, float *o);
void em3_rt_attention_bwd(const float *q, const float *k, const float *v, const float *mask,
                          int64_t mask_row_stride, const float *o, const float *dout, int64_t tq,
                          int64_t tk, int64_t dh, int64_t dv, float scale, float *dq, float *dk,
                          float *dvv);

/* A sparse matrix in compressed rows: row r holds col[ptr[r] .. ptr[r+1]) (ascending) with
 * values val[...]. */
typedef struct {
    int64_t rows, cols, nnz;
    const int64_t *ptr;
    const int32_t *col;
    const float *val;
} em3_csr;

/* What a graph global's storage is to compiled code: the matrix in use (the runtime switches
 * it, e.g. to a drop-edge sample while training) and its transpose, both in compressed rows
 * so that either product is a loop over output rows. */
typedef struct {
    em3_csr m, mt;
} em3_rt_graph;

/* y = G x (transpose: Gᵀ x) for x with `width` floats per row; y is overwritten. */
void em3_rt_spmm(const em3_rt_graph *g, int32_t transpose, const float *x, int64_t width, float *y);

/* unique: the distinct values of ids[0..n), ascending, into out (room for n); returns their
 * count. index_of: out[i] = the position of ids[i] in the ascending u[0..nu); returns -1, or
 * the first i whose id u lacks. */
int64_t em3_rt_unique(const int32_t *ids, int64_t n, int32_t *out);
int64_t em3_rt_index_of(const int32_t *ids, int64_t n, const int32_t *u, int64_t nu, int32_t *out);

typedef struct {
    const char *name;
    void *addr;
} em3_rt_symbol;

/* Every external symbol compiled code may call (OpenBLAS, libm, runtime helpers), ending with
 * a NULL name. The JIT defines exactly these; AOT links the same libraries. */
extern const em3_rt_symbol em3_rt_symbols[];

#endif
