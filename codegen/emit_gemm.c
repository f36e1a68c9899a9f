/* codegen/emit_gemm.c — matmul as calls to OpenBLAS's cblas_sgemm. A batched matmul loops
 * over the result's leading dimensions with each operand's own (broadcast) matrix stride;
 * a 2-D right operand against a batched untransposed left one is a single GEMM over all rows
 * ([B, 50, k] @ [k, n] is one [B*50, k] @ [k, n]). The sparse product spmm is a call to the
 * runtime's em3_rt_spmm with the graph the frame holds. */
#include "cg.h"

enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };

typedef struct {
    bool ta, tb;
    LLVMValueRef m, n, k;
    LLVMValueRef sa, sb, sc; /* elements per matrix of A, B, C */
} gemm_ctx;

void cg_sgemm(em3_cg *cg, bool ta, bool tb, LLVMValueRef m, LLVMValueRef n, LLVMValueRef k, double alpha,
              LLVMValueRef a, LLVMValueRef lda, LLVMValueRef b, LLVMValueRef ldb, double beta,
              LLVMValueRef c, LLVMValueRef ldc) {
    LLVMTypeRef p[14] = {cg->i32, cg->i32, cg->i32, cg->i32, cg->i32, cg->i32, cg->f32,
                         cg->ptr_t, cg->i32, cg->ptr_t, cg->i32, cg->f32, cg->ptr_t, cg->i32};
#define T32(v) LLVMBuildTrunc(cg->b, (v), cg->i32, "")
    LLVMValueRef args[14] = {LLVMConstInt(cg->i32, CBLAS_ROW_MAJOR, 0),
                             LLVMConstInt(cg->i32, ta ? CBLAS_TRANS : CBLAS_NO_TRANS, 0),
                             LLVMConstInt(cg->i32, tb ? CBLAS_TRANS : CBLAS_NO_TRANS, 0),
                             T32(m), T32(n), T32(k), cg_f32(cg, alpha), a, T32(lda), b, T32(ldb),
                             cg_f32(cg, beta), c, T32(ldc)};
#undef T32
    cg_call(cg, "cblas_sgemm", cg->void_t, p, 14, args);
}

static void sgemm(em3_cg *cg, const gemm_ctx *g, LLVMValueRef m, LLVMValueRef a, LLVMValueRef b,
                  LLVMValueRef c) {
    cg_sgemm(cg, g->ta, g->tb, m, g->n, g->k, 1.0, a, g->ta ? m : g->k, b, g->tb ? g->k : g->n, 0.0, c, g->n);
}

static void batch_body(em3_cg *cg, void *vctx, LLVMValueRef *off) {
    gemm_ctx *g = vctx;
    LLVMValueRef a = cg_gep(cg, EM3_DTYPE_F32, cg_kparam(cg, 1), LLVMBuildNSWMul(cg->b, off[1], g->sa, ""));
    LLVMValueRef b = cg_gep(cg, EM3_DTYPE_F32, cg_kparam(cg, 2), LLVMBuildNSWMul(cg->b, off[2], g->sb, ""));
    LLVMValueRef c = cg_gep(cg, EM3_DTYPE_F32, cg_kparam(cg, 0), LLVMBuildNSWMul(cg->b, off[0], g->sc, ""));
    sgemm(cg, g, g->m, a, b, c);
}

/* The leading (batch) part of a matrix operand's type. */
static em3_type lead_of(const em3_type *t) {
    em3_type l = *t;
    l.rank -= 2;
    return l;
}

void cg_emit_matmul(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    const em3_type *at = &cg->f->node[n->in[0]].type, *bt = &cg->f->node[n->in[1]].type, *ct = &n->type;
    gemm_ctx g = {.ta = em3_node_i(n, "ta"), .tb = em3_node_i(n, "tb")};
    cg_kernel_begin(cg, id, "matmul", 3);
    g.m = cg_dim(cg, ct, ct->rank - 2);
    g.n = cg_dim(cg, ct, ct->rank - 1);
    g.k = cg_dim(cg, at, at->rank - (g.ta ? 2 : 1));
    g.sa = LLVMBuildNSWMul(cg->b, g.m, g.k, "");
    g.sb = LLVMBuildNSWMul(cg->b, g.k, g.n, "");
    g.sc = LLVMBuildNSWMul(cg->b, g.m, g.n, "");
    if (bt->rank == 2 && !g.ta) {
        /* every row of every batch of A against one B: a single GEMM */
        LLVMValueRef rows = g.m;
        for (int d = 0; d < at->rank - 2; d++) rows = LLVMBuildNSWMul(cg->b, rows, cg_dim(cg, at, d), "");
        sgemm(cg, &g, rows, cg_kparam(cg, 1), cg_kparam(cg, 2), cg_kparam(cg, 0));
    } else {
        em3_type lc = lead_of(ct), la = lead_of(at), lb = lead_of(bt);
        const em3_type *types[3] = {&lc, &la, &lb};
        cg_walk(cg, &lc, types, NULL, 3, batch_body, &g);
    }
    int vals[3] = {id, n->in[0], n->in[1]};
    cg_kernel_end(cg, vals, 3);
}

/* Kernel buffers: y, x. The graph comes from the frame's globals: the runtime may switch the
 * matrix behind it (edge dropout) between calls, never during one. */
void cg_emit_spmm(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    cg_kernel_begin(cg, id, "spmm", 2);
    LLVMValueRef width = LLVMBuildSDiv(cg->b, cg_numel(cg, &n->type), cg_i64(cg, n->type.dim[0]), "");
    LLVMTypeRef p[5] = {cg->ptr_t, cg->i32, cg->ptr_t, cg->i64, cg->ptr_t};
    LLVMValueRef a[5] = {cg_kglobal(cg, em3_node_s(n, "graph")),
                         LLVMConstInt(cg->i32, (unsigned long long)em3_node_i(n, "transpose"), 0), cg_kparam(cg, 1),
                         width, cg_kparam(cg, 0)};
    cg_call(cg, "em3_rt_spmm", cg->void_t, p, 5, a);
    int vals[2] = {id, n->in[0]};
    cg_kernel_end(cg, vals, 2);
}
