/* codegen/emit_update.c — the optimizer step: dense updates as one vectorised loop over a
 * parameter and its state (the formulas of PyTorch's SGD, momentum, Adam/AdamW and
 * Adagrad, as in the interpreter), sparse (lazy) updates and sparse gradient norms as calls
 * to the runtime, which merges repeated ids. */
#include "cg.h"

#define K(v) cg_f32(cg, (v))
#define ADD(x, y) LLVMBuildFAdd(cg->b, (x), (y), "")
#define SUB(x, y) LLVMBuildFSub(cg->b, (x), (y), "")
#define MUL(x, y) LLVMBuildFMul(cg->b, (x), (y), "")
#define DIV(x, y) LLVMBuildFDiv(cg->b, (x), (y), "")

static LLVMValueRef scalar(em3_cg *cg, int param) {
    return cg_load(cg, EM3_DTYPE_F32, cg_kparam(cg, param), cg_i64(cg, 0));
}

static LLVMValueRef powf_call(em3_cg *cg, LLVMValueRef x, LLVMValueRef y) {
    LLVMTypeRef p[2] = {cg->f32, cg->f32};
    LLVMValueRef a[2] = {x, y};
    return cg_call(cg, "powf", cg->f32, p, 2, a);
}

/* Kernel buffers: p, g, lr, then (adam) step, m, v / (momentum) buf / (adagrad) acc. */
void cg_emit_update(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    double wd = em3_node_f(n, "wd");
    int vals[6];
    for (int k = 0; k < n->n_in; k++) vals[k] = n->in[k];
    cg_kernel_begin(cg, id, em3_op_name(n->op), n->n_in);
    LLVMValueRef p = cg_kparam(cg, 0), g = cg_kparam(cg, 1), lr = scalar(cg, 2);
    LLVMValueRef bc1 = NULL, bc2 = NULL;
    bool adam = n->op == EM3_OP_ADAM_UPDATE;
    double b1 = adam ? em3_node_f(n, "beta1") : 0, b2 = adam ? em3_node_f(n, "beta2") : 0;
    if (adam) {
        LLVMValueRef t = scalar(cg, 3);
        bc1 = SUB(K(1), powf_call(cg, K(b1), t));
        bc2 = SUB(K(1), powf_call(cg, K(b2), t));
    }
    cg_loop l = cg_loop_begin(cg, cg_numel(cg, &n->type), "update");
    LLVMValueRef pi = cg_load(cg, EM3_DTYPE_F32, p, l.i), gi = cg_load(cg, EM3_DTYPE_F32, g, l.i), np;
    switch (n->op) {
    case EM3_OP_SGD_UPDATE: np = SUB(pi, MUL(lr, ADD(gi, MUL(K(wd), pi)))); break;
    case EM3_OP_MOMENTUM_UPDATE: {
        LLVMValueRef buf = cg_kparam(cg, 3);
        LLVMValueRef b = ADD(MUL(K(em3_node_f(n, "momentum")), cg_load(cg, EM3_DTYPE_F32, buf, l.i)),
                             ADD(gi, MUL(K(wd), pi)));
        cg_store(cg, EM3_DTYPE_F32, buf, l.i, b);
        np = SUB(pi, MUL(lr, b));
        break;
    }
    case EM3_OP_ADAGRAD_UPDATE: {
        LLVMValueRef acc = cg_kparam(cg, 3), gw = ADD(gi, MUL(K(wd), pi));
        LLVMValueRef s = ADD(cg_load(cg, EM3_DTYPE_F32, acc, l.i), MUL(gw, gw));
        cg_store(cg, EM3_DTYPE_F32, acc, l.i, s);
        np = SUB(pi, DIV(MUL(lr, gw), ADD(cg_intrinsic1(cg, "llvm.sqrt", s), K(em3_node_f(n, "eps")))));
        break;
    }
    case EM3_OP_ADAM_UPDATE: {
        LLVMValueRef mb = cg_kparam(cg, 4), vb = cg_kparam(cg, 5);
        bool decoupled = em3_node_i(n, "decoupled");
        LLVMValueRef base = decoupled ? MUL(pi, SUB(K(1), MUL(lr, K(wd)))) : pi;
        LLVMValueRef gw = decoupled ? gi : ADD(gi, MUL(K(wd), pi));
        LLVMValueRef m = ADD(MUL(K(b1), cg_load(cg, EM3_DTYPE_F32, mb, l.i)), MUL(K(1 - b1), gw));
        LLVMValueRef v = ADD(MUL(K(b2), cg_load(cg, EM3_DTYPE_F32, vb, l.i)), MUL(K(1 - b2), MUL(gw, gw)));
        cg_store(cg, EM3_DTYPE_F32, mb, l.i, m);
        cg_store(cg, EM3_DTYPE_F32, vb, l.i, v);
        LLVMValueRef denom = ADD(cg_intrinsic1(cg, "llvm.sqrt", DIV(v, bc2)), K(em3_node_f(n, "eps")));
        np = SUB(base, DIV(MUL(lr, DIV(m, bc1)), denom));
        break;
    }
    default: EM3_UNREACHABLE("emit_update of %s", em3_op_name(n->op));
    }
    cg_store(cg, EM3_DTYPE_F32, p, l.i, np);
    cg_loop_end(cg, &l);
    cg_kernel_end(cg, vals, n->n_in);
}

/* Kernel buffers: p, ids, rows, lr, then (adam) step, m, v / (adagrad) acc. The runtime's
 * em3_rt_sparse_update gets the hyper-parameters in an em3_rt_hyper on the stack. */
void cg_emit_sparse_update(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    const em3_type *pt = &n->type, *it = &cg->f->node[n->in[1]].type;
    int vals[7];
    for (int k = 0; k < n->n_in; k++) vals[k] = n->in[k];
    cg_kernel_begin(cg, id, em3_op_name(n->op), n->n_in);
    bool adam = n->op == EM3_OP_SPARSE_ADAM_UPDATE, ada = n->op == EM3_OP_SPARSE_ADAGRAD_UPDATE;
    em3_rt_opt kind = adam ? EM3_RT_ADAM : ada ? EM3_RT_ADAGRAD : EM3_RT_SGD;
    /* em3_rt_hyper: lr, step, beta1, beta2, eps, wd (f32), decoupled (i32) */
    LLVMTypeRef hf[7] = {cg->f32, cg->f32, cg->f32, cg->f32, cg->f32, cg->f32, cg->i32};
    LLVMTypeRef ht = LLVMStructTypeInContext(cg->ctx, hf, 7, 0);
    LLVMValueRef h = cg_alloca(cg, ht);
    LLVMValueRef fields[7] = {scalar(cg, 3), adam ? scalar(cg, 4) : K(0), K(adam ? em3_node_f(n, "beta1") : 0),
                              K(adam ? em3_node_f(n, "beta2") : 0), K(adam || ada ? em3_node_f(n, "eps") : 0),
                              K(em3_node_f(n, "wd")),
                              LLVMConstInt(cg->i32, adam && em3_node_i(n, "decoupled"), 0)};
    for (unsigned i = 0; i < 7; i++) LLVMBuildStore(cg->b, fields[i], LLVMBuildStructGEP2(cg->b, ht, h, i, ""));
    int64_t width = 1;
    for (int d = 1; d < pt->rank; d++) width *= pt->dim[d];
    LLVMValueRef null = LLVMConstPointerNull(cg->ptr_t), bad = cg_alloca(cg, cg->i64);
    LLVMTypeRef p[11] = {cg->i32, cg->ptr_t, cg->ptr_t, cg->ptr_t, cg->ptr_t, cg->ptr_t,
                         cg->ptr_t, cg->i64, cg->i64, cg->i64, cg->ptr_t};
    LLVMValueRef a[11] = {LLVMConstInt(cg->i32, kind, 0), h, cg_kparam(cg, 0),
                          adam ? cg_kparam(cg, 5) : ada ? cg_kparam(cg, 4) : null,
                          adam ? cg_kparam(cg, 6) : null, cg_kparam(cg, 1), cg_kparam(cg, 2),
                          cg_numel(cg, it), cg_i64(cg, width), cg_i64(cg, pt->dim[0]), bad};
    LLVMValueRef st = cg_call(cg, "em3_rt_sparse_update", cg->i32, p, 11, a);
    LLVMBasicBlockRef fail = LLVMAppendBasicBlockInContext(cg->ctx, cg->kfn, "bad_id");
    LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(cg->ctx, cg->kfn, "done");
    LLVMBuildCondBr(cg->b, LLVMBuildICmp(cg->b, LLVMIntNE, st, LLVMConstInt(cg->i32, 0, 0), ""), fail, ok);
    LLVMPositionBuilderAtEnd(cg->b, fail);
    cg_kernel_fail(cg, cg_i64(cg, -1), LLVMBuildLoad2(cg->b, cg->i64, bad, ""));
    LLVMPositionBuilderAtEnd(cg->b, ok);
    cg_kernel_end(cg, vals, n->n_in);
}

void cg_emit_sparse_sqnorm(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    const em3_type *it = &cg->f->node[n->in[0]].type, *rt = &cg->f->node[n->in[1]].type;
    int64_t width = 1;
    for (int d = it->rank; d < rt->rank; d++) width *= rt->dim[d];
    cg_kernel_begin(cg, id, "sparse_sqnorm", 3);
    LLVMTypeRef p[4] = {cg->ptr_t, cg->ptr_t, cg->i64, cg->i64};
    LLVMValueRef a[4] = {cg_kparam(cg, 1), cg_kparam(cg, 2), cg_numel(cg, it), cg_i64(cg, width)};
    cg_store(cg, EM3_DTYPE_F32, cg_kparam(cg, 0), cg_i64(cg, 0), cg_call(cg, "em3_rt_sparse_sqnorm", cg->f32, p, 4, a));
    int vals[3] = {id, n->in[0], n->in[1]};
    cg_kernel_end(cg, vals, 3);
}
