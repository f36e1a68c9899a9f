/* codegen/emit_fused.c — the fused ops the fusion passes create: attention and its gradient
 * as calls to the runtime's streaming kernels (runtime/rt_attention.c), one per (batch, head)
 * slice of the leading dimensions, and lora_matmul as three GEMMs where the last accumulates
 * into the result (beta = 1), with x·a in the node's small workspace. */
#include "cg.h"

typedef struct {
    const em3_type *q, *k, *v, *mask;
    int64_t tq, tk, dh, dv, mrow;
    double scale;
    bool grad;
    int mask_param;
} att_ctx;

static LLVMValueRef at(em3_cg *cg, LLVMValueRef base, LLVMValueRef off, int64_t per) {
    return cg_gep(cg, EM3_DTYPE_F32, base, LLVMBuildNSWMul(cg->b, off, cg_i64(cg, per), ""));
}

/* Offsets (in matrices) per operand: [result, q, k, v, mask]. */
static void att_body(em3_cg *cg, void *vctx, LLVMValueRef *off) {
    const att_ctx *c = vctx;
    LLVMValueRef q = at(cg, cg_kparam(cg, 1), off[1], c->tq * c->dh);
    LLVMValueRef k = at(cg, cg_kparam(cg, 2), off[2], c->tk * c->dh);
    LLVMValueRef v = at(cg, cg_kparam(cg, 3), off[3], c->tk * c->dv);
    LLVMValueRef m = c->mask ? at(cg, cg_kparam(cg, c->mask_param), off[4], (c->mrow ? c->tq : 1) * c->tk)
                             : LLVMConstPointerNull(cg->ptr_t);
    LLVMValueRef sizes[5] = {cg_i64(cg, c->mrow), cg_i64(cg, c->tq), cg_i64(cg, c->tk), cg_i64(cg, c->dh),
                             cg_i64(cg, c->dv)};
    if (!c->grad) {
        LLVMTypeRef p[11] = {cg->ptr_t, cg->ptr_t, cg->ptr_t, cg->ptr_t, cg->i64, cg->i64, cg->i64,
                             cg->i64, cg->i64, cg->f32, cg->ptr_t};
        LLVMValueRef a[11] = {q, k, v, m, sizes[0], sizes[1], sizes[2], sizes[3], sizes[4],
                              cg_f32(cg, c->scale), at(cg, cg_kparam(cg, 0), off[0], c->tq * c->dv)};
        cg_call(cg, "em3_rt_attention_fwd", cg->void_t, p, 11, a);
        return;
    }
    LLVMValueRef o = at(cg, cg_kparam(cg, 4), off[0], c->tq * c->dv);
    LLVMValueRef dout = at(cg, cg_kparam(cg, 5), off[0], c->tq * c->dv);
    LLVMValueRef dq = at(cg, cg_kparam(cg, 0), off[0], (c->tq + 2 * c->tk) * c->dh);
    LLVMValueRef dk = cg_gep(cg, EM3_DTYPE_F32, dq, cg_i64(cg, c->tq * c->dh));
    LLVMValueRef dv = cg_gep(cg, EM3_DTYPE_F32, dk, cg_i64(cg, c->tk * c->dh));
    LLVMTypeRef p[15] = {cg->ptr_t, cg->ptr_t, cg->ptr_t, cg->ptr_t, cg->i64, cg->ptr_t, cg->ptr_t, cg->i64,
                         cg->i64, cg->i64, cg->i64, cg->f32, cg->ptr_t, cg->ptr_t, cg->ptr_t};
    LLVMValueRef a[15] = {q, k, v, m, sizes[0], o, dout, sizes[1], sizes[2], sizes[3], sizes[4],
                          cg_f32(cg, c->scale), dq, dk, dv};
    cg_call(cg, "em3_rt_attention_bwd", cg->void_t, p, 15, a);
}

static em3_type lead_of(const em3_type *t) {
    em3_type l = *t;
    l.rank = l.rank >= 2 ? l.rank - 2 : 0;
    return l;
}

static void attention_kernel(em3_cg *cg, int id, bool grad) {
    const em3_node *n = &cg->f->node[id];
    int mask_in = grad ? 5 : 3;
    att_ctx c = {.grad = grad, .scale = em3_node_f(n, "scale")};
    c.q = &cg->f->node[n->in[0]].type;
    c.k = &cg->f->node[n->in[1]].type;
    c.v = &cg->f->node[n->in[2]].type;
    c.mask = n->n_in > mask_in ? &cg->f->node[n->in[mask_in]].type : NULL;
    c.tq = c.q->dim[c.q->rank - 2], c.dh = c.q->dim[c.q->rank - 1];
    c.tk = c.k->dim[c.k->rank - 2], c.dv = c.v->dim[c.v->rank - 1];
    c.mrow = c.mask && c.mask->dim[c.mask->rank - 2] != 1 ? c.tk : 0;
    int vals[7] = {id}, nv = 1;
    for (int k = 0; k < n->n_in; k++) vals[nv++] = n->in[k];
    c.mask_param = c.mask ? nv - 1 : -1;
    cg_kernel_begin(cg, id, em3_op_name(n->op), nv);
    if (grad) { /* dk and dv accumulate: start from zeros */
        LLVMTypeRef p[4] = {cg->ptr_t, LLVMInt8TypeInContext(cg->ctx), cg->i64, cg->i1};
        LLVMValueRef a[4] = {cg_kparam(cg, 0), LLVMConstInt(LLVMInt8TypeInContext(cg->ctx), 0, 0),
                             LLVMBuildNSWMul(cg->b, cg_numel(cg, &n->type), cg_i64(cg, 4), ""),
                             LLVMConstInt(cg->i1, 0, 0)};
        cg_call(cg, "llvm.memset.p0.i64", cg->void_t, p, 4, a);
    }
    em3_type lead = lead_of(&n->type), lq = lead_of(c.q), lk = lead_of(c.k), lv = lead_of(c.v);
    em3_type lm = c.mask ? lead_of(c.mask) : lead;
    const em3_type *types[5] = {&lead, &lq, &lk, &lv, &lm};
    cg_walk(cg, &lead, types, NULL, c.mask ? 5 : 4, att_body, &c);
    cg_kernel_end(cg, vals, nv);
}

void cg_emit_attention(em3_cg *cg, int id) { attention_kernel(cg, id, false); }
void cg_emit_attention_grad(em3_cg *cg, int id) { attention_kernel(cg, id, true); }

void cg_emit_lora_matmul(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    const em3_type *xt = &cg->f->node[n->in[0]].type, *at_ = &cg->f->node[n->in[2]].type, *ot = &n->type;
    int64_t din = xt->dim[xt->rank - 1], dout = ot->dim[ot->rank - 1], r = at_->dim[1];
    int vals[5] = {id, n->in[0], n->in[1], n->in[2], n->in[3]};
    cg_kernel_begin(cg, id, "lora_matmul", 5);
    LLVMValueRef rows = LLVMBuildSDiv(cg->b, cg_numel(cg, xt), cg_i64(cg, din), "");
    LLVMValueRef out = cg_kparam(cg, 0), x = cg_kparam(cg, 1), t = cg_kscratch(cg, 5);
    LLVMValueRef Din = cg_i64(cg, din), Dout = cg_i64(cg, dout), R = cg_i64(cg, r);
    cg_sgemm(cg, false, false, rows, Dout, Din, 1.0, x, Din, cg_kparam(cg, 2), Dout, 0.0, out, Dout);
    cg_sgemm(cg, false, false, rows, R, Din, 1.0, x, Din, cg_kparam(cg, 3), R, 0.0, t, R);
    cg_sgemm(cg, false, false, rows, Dout, R, em3_node_f(n, "scale"), t, R, cg_kparam(cg, 4), Dout, 1.0, out, Dout);
    cg_kernel_end(cg, vals, 5);
}
