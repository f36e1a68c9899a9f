/* codegen/emit_data.c — data movement: concat and slice as row copies, gather and
 * scatter_add by ids. Ids are checked against the table: an id outside it is a data error
 * the kernel reports through the frame (the runtime names the input and row), never an
 * out-of-bounds access. Also dropout_train, whose mask is integer hashing of indices. */
#include "cg.h"

/* dst[d0 + k] = src[s0 + k] for k < n (LLVM turns the loop into memcpy or vector moves) */
static void copy_run(em3_cg *cg, em3_dtype dt, LLVMValueRef dst, LLVMValueRef d0, LLVMValueRef src,
                     LLVMValueRef s0, LLVMValueRef n) {
    cg_loop l = cg_loop_begin(cg, n, "copy");
    cg_store(cg, dt, dst, LLVMBuildNSWAdd(cg->b, d0, l.i, ""),
             cg_load(cg, dt, src, LLVMBuildNSWAdd(cg->b, s0, l.i, "")));
    cg_loop_end(cg, &l);
}

/* outer = product of the dimensions before `axis`, inner = product after it */
static void around(em3_cg *cg, const em3_type *t, int axis, LLVMValueRef *outer, LLVMValueRef *inner) {
    *outer = *inner = cg_i64(cg, 1);
    for (int d = 0; d < axis; d++) *outer = LLVMBuildNSWMul(cg->b, *outer, cg_dim(cg, t, d), "");
    for (int d = axis + 1; d < t->rank; d++) *inner = LLVMBuildNSWMul(cg->b, *inner, cg_dim(cg, t, d), "");
}

void cg_emit_concat(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    int axis = (int)em3_node_i(n, "axis"), vals[40] = {id};
    EM3_ASSERT(n->n_in < 39, "concat of %d operands", n->n_in);
    for (int k = 0; k < n->n_in; k++) vals[k + 1] = n->in[k];
    cg_kernel_begin(cg, id, "concat", n->n_in + 1);
    LLVMValueRef outer, inner;
    around(cg, &n->type, axis, &outer, &inner);
    LLVMValueRef total = LLVMBuildNSWMul(cg->b, cg_dim(cg, &n->type, axis), inner, "");
    LLVMValueRef off = cg_i64(cg, 0);
    for (int k = 0; k < n->n_in; k++) {
        const em3_type *t = &cg->f->node[n->in[k]].type;
        LLVMValueRef chunk = LLVMBuildNSWMul(cg->b, cg_dim(cg, t, axis), inner, "");
        cg_loop o = cg_loop_begin(cg, outer, "outer");
        copy_run(cg, n->type.dtype, cg_kparam(cg, 0), LLVMBuildNSWAdd(cg->b, LLVMBuildNSWMul(cg->b, o.i, total, ""), off, ""),
                 cg_kparam(cg, k + 1), LLVMBuildNSWMul(cg->b, o.i, chunk, ""), chunk);
        cg_loop_end(cg, &o);
        off = LLVMBuildNSWAdd(cg->b, off, chunk, "");
    }
    cg_kernel_end(cg, vals, n->n_in + 1);
}

void cg_emit_slice(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    const em3_type *xt = &cg->f->node[n->in[0]].type;
    int axis = (int)em3_node_i(n, "axis");
    int64_t start = em3_node_i(n, "start");
    cg_kernel_begin(cg, id, "slice", 2);
    LLVMValueRef outer, inner;
    around(cg, xt, axis, &outer, &inner);
    LLVMValueRef src_row = LLVMBuildNSWMul(cg->b, cg_dim(cg, xt, axis), inner, "");
    LLVMValueRef dst_row = LLVMBuildNSWMul(cg->b, cg_dim(cg, &n->type, axis), inner, "");
    LLVMValueRef skip = LLVMBuildNSWMul(cg->b, cg_i64(cg, start), inner, "");
    cg_loop o = cg_loop_begin(cg, outer, "outer");
    copy_run(cg, n->type.dtype, cg_kparam(cg, 0), LLVMBuildNSWMul(cg->b, o.i, dst_row, ""), cg_kparam(cg, 1),
             LLVMBuildNSWAdd(cg->b, LLVMBuildNSWMul(cg->b, o.i, src_row, ""), skip, ""), dst_row);
    cg_loop_end(cg, &o);
    int vals[2] = {id, n->in[0]};
    cg_kernel_end(cg, vals, 2);
}

/* Loads ids[i] as i64, failing the kernel unless 0 <= id < rows. */
static LLVMValueRef checked_id(em3_cg *cg, LLVMValueRef ids, LLVMValueRef i, LLVMValueRef rows) {
    LLVMValueRef id = LLVMBuildSExt(cg->b, cg_load(cg, EM3_DTYPE_I32, ids, i), cg->i64, "id");
    LLVMValueRef bad = LLVMBuildICmp(cg->b, LLVMIntUGE, id, rows, "");
    LLVMValueRef fn = cg->kfn;
    LLVMBasicBlockRef fail = LLVMAppendBasicBlockInContext(cg->ctx, fn, "bad_id");
    LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(cg->ctx, fn, "id_ok");
    LLVMBuildCondBr(cg->b, bad, fail, ok);
    LLVMPositionBuilderAtEnd(cg->b, fail);
    cg_kernel_fail(cg, i, id);
    LLVMPositionBuilderAtEnd(cg->b, ok);
    return id;
}

static int64_t row_width(const em3_type *table) {
    int64_t w = 1;
    for (int d = 1; d < table->rank; d++) w *= table->dim[d];
    return w;
}

void cg_emit_gather(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    const em3_type *tt = &cg->f->node[n->in[0]].type, *it = &cg->f->node[n->in[1]].type;
    int64_t width = row_width(tt);
    cg_kernel_begin(cg, id, "gather", 3);
    cg_loop l = cg_loop_begin(cg, cg_numel(cg, it), "ids");
    LLVMValueRef row = checked_id(cg, cg_kparam(cg, 2), l.i, cg_dim(cg, tt, 0));
    copy_run(cg, n->type.dtype, cg_kparam(cg, 0), LLVMBuildNSWMul(cg->b, l.i, cg_i64(cg, width), ""), cg_kparam(cg, 1),
             LLVMBuildNSWMul(cg->b, row, cg_i64(cg, width), ""), cg_i64(cg, width));
    cg_loop_end(cg, &l);
    int vals[3] = {id, n->in[0], n->in[1]};
    cg_kernel_end(cg, vals, 3);
}

void cg_emit_scatter_add(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    const em3_type *tt = &n->type, *it = &cg->f->node[n->in[1]].type;
    int64_t width = row_width(tt);
    cg_kernel_begin(cg, id, "scatter_add", 4);
    LLVMValueRef out = cg_kparam(cg, 0), src = cg_kparam(cg, 3);
    copy_run(cg, n->type.dtype, out, cg_i64(cg, 0), cg_kparam(cg, 1), cg_i64(cg, 0), cg_numel(cg, tt));
    cg_loop l = cg_loop_begin(cg, cg_numel(cg, it), "ids");
    LLVMValueRef row = LLVMBuildNSWMul(cg->b, checked_id(cg, cg_kparam(cg, 2), l.i, cg_dim(cg, tt, 0)), cg_i64(cg, width), "");
    LLVMValueRef from = LLVMBuildNSWMul(cg->b, l.i, cg_i64(cg, width), "");
    cg_loop k = cg_loop_begin(cg, cg_i64(cg, width), "row");
    LLVMValueRef at = LLVMBuildNSWAdd(cg->b, row, k.i, "");
    LLVMValueRef v = LLVMBuildFAdd(cg->b, cg_load(cg, EM3_DTYPE_F32, out, at),
                                   cg_load(cg, EM3_DTYPE_F32, src, LLVMBuildNSWAdd(cg->b, from, k.i, "")), "");
    cg_store(cg, EM3_DTYPE_F32, out, at, v);
    cg_loop_end(cg, &k);
    cg_loop_end(cg, &l);
    int vals[4] = {id, n->in[0], n->in[1], n->in[2]};
    cg_kernel_end(cg, vals, 4);
}

/* unique: the runtime sorts; its count becomes the symbol's value for the kernels after it
 * (this kernel reads only the ids' size, never the symbol it sets) */
void cg_emit_unique(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    cg_kernel_begin(cg, id, "unique", 2);
    LLVMTypeRef p[3] = {cg->ptr_t, cg->i64, cg->ptr_t};
    LLVMValueRef a[3] = {cg_kparam(cg, 1), cg_numel(cg, &cg->f->node[n->in[0]].type), cg_kparam(cg, 0)};
    LLVMBuildStore(cg->b, cg_call(cg, "em3_rt_unique", cg->i64, p, 3, a), cg_sym_slot(cg, (int)em3_node_i(n, "sym")));
    int vals[2] = {id, n->in[0]};
    cg_kernel_end(cg, vals, 2);
}

/* index_of: fails with the position and the id that the distinct ids lack */
void cg_emit_index_of(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    cg_kernel_begin(cg, id, "index_of", 3);
    LLVMTypeRef p[5] = {cg->ptr_t, cg->i64, cg->ptr_t, cg->i64, cg->ptr_t};
    LLVMValueRef a[5] = {cg_kparam(cg, 1), cg_numel(cg, &n->type), cg_kparam(cg, 2),
                         cg_dim(cg, &cg->f->node[n->in[1]].type, 0), cg_kparam(cg, 0)};
    LLVMValueRef bad = cg_call(cg, "em3_rt_index_of", cg->i64, p, 5, a);
    LLVMBasicBlockRef fail = LLVMAppendBasicBlockInContext(cg->ctx, cg->kfn, "missing");
    LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(cg->ctx, cg->kfn, "found");
    LLVMBuildCondBr(cg->b, LLVMBuildICmp(cg->b, LLVMIntSGE, bad, cg_i64(cg, 0), ""), fail, ok);
    LLVMPositionBuilderAtEnd(cg->b, fail);
    cg_kernel_fail(cg, bad, LLVMBuildSExt(cg->b, cg_load(cg, EM3_DTYPE_I32, cg_kparam(cg, 1), bad), cg->i64, ""));
    LLVMPositionBuilderAtEnd(cg->b, ok);
    int vals[3] = {id, n->in[0], n->in[1]};
    cg_kernel_end(cg, vals, 3);
}

/* em3_dropout_mix (ir/ir.h), the same operations on i32 */
static LLVMValueRef mix32(em3_cg *cg, LLVMValueRef h) {
    LLVMValueRef c16 = LLVMConstInt(cg->i32, 16, 0), c13 = LLVMConstInt(cg->i32, 13, 0);
    h = LLVMBuildXor(cg->b, h, LLVMBuildLShr(cg->b, h, c16, ""), "");
    h = LLVMBuildMul(cg->b, h, LLVMConstInt(cg->i32, 0x85ebca6bu, 0), "");
    h = LLVMBuildXor(cg->b, h, LLVMBuildLShr(cg->b, h, c13, ""), "");
    h = LLVMBuildMul(cg->b, h, LLVMConstInt(cg->i32, 0xc2b2ae35u, 0), "");
    return LLVMBuildXor(cg->b, h, LLVMBuildLShr(cg->b, h, c16, ""), "");
}

/* out[i] = em3_dropout_keep(key, first + i, threshold) ? x[i] / (1 − p) : 0, key from the salt
 * and the step operand, first = row0 · elements per row (both operands f32 scalars holding
 * integers) */
void cg_emit_dropout_train(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    double p = em3_node_f(n, "p");
    uint32_t salt = (uint32_t)em3_node_i(n, "salt");
    cg_kernel_begin(cg, id, "dropout_train", 4);
    LLVMValueRef step = LLVMBuildFPToUI(cg->b, cg_load(cg, EM3_DTYPE_F32, cg_kparam(cg, 2), cg_i64(cg, 0)), cg->i32, "");
    LLVMValueRef row0 = LLVMBuildFPToUI(cg->b, cg_load(cg, EM3_DTYPE_F32, cg_kparam(cg, 3), cg_i64(cg, 0)), cg->i32, "");
    LLVMValueRef first =
        LLVMBuildMul(cg->b, row0, LLVMConstInt(cg->i32, (unsigned long long)em3_dropout_first(&n->type, 1), 0), "");
    LLVMValueRef key = mix32(cg, LLVMBuildAdd(cg->b, step, LLVMConstInt(cg->i32, 0x632be5abu, 0), ""));
    key = mix32(cg, LLVMBuildXor(cg->b, LLVMConstInt(cg->i32, salt * 0x9e3779b1u, 0), key, ""));
    LLVMValueRef threshold = LLVMConstInt(cg->i32, em3_dropout_threshold(p), 0), scale = cg_f32(cg, 1 / (1 - p));
    cg_loop l = cg_loop_begin(cg, cg_numel(cg, &n->type), "elems");
    LLVMValueRef index = LLVMBuildAdd(cg->b, first, LLVMBuildTrunc(cg->b, l.i, cg->i32, ""), "");
    LLVMValueRef h = mix32(cg, LLVMBuildXor(cg->b, LLVMBuildMul(cg->b, index, LLVMConstInt(cg->i32, 0xcc9e2d51u, 0), ""), key, ""));
    LLVMValueRef x = LLVMBuildFMul(cg->b, cg_load(cg, EM3_DTYPE_F32, cg_kparam(cg, 1), l.i), scale, "");
    cg_store(cg, EM3_DTYPE_F32, cg_kparam(cg, 0), l.i,
             LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntUGE, h, threshold, ""), x, cg_f32(cg, 0), ""));
    cg_loop_end(cg, &l);
    int vals[4] = {id, n->in[0], n->in[1], n->in[2]};
    cg_kernel_end(cg, vals, 4);
}
