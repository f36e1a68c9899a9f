/* codegen/lower.c — lowering an IR function to one LLVM function `int NAME(em3_frame *)`:
 * buffers resolved from the memory plan (inputs and globals from the frame, the rest at
 * constant arena offsets), one kernel per node from the emitter named in ops.def, called in
 * order, outputs published through the frame. Also the small helpers every emitter uses. */
#include <stdlib.h>
#include <string.h>

#include <llvm-c/DebugInfo.h>

#include "cg.h"

static em3_emit_fn *const emitters[EM3_OP_COUNT] = {
#define OP(E, NAME, ARITY, KIND, ATTRS, FLAGS, SHAPE, REF, VJP, EMIT, ...) [EM3_OP_##E] = EMIT,
#include "ir/ops.def"
#undef OP
};

/* ---- small helpers ---------------------------------------------------------------------- */

LLVMValueRef cg_i64(em3_cg *cg, int64_t v) { return LLVMConstInt(cg->i64, (unsigned long long)v, 1); }
LLVMValueRef cg_f32(em3_cg *cg, double v) { return LLVMConstReal(cg->f32, v); }
LLVMTypeRef cg_elem(em3_cg *cg, em3_dtype dt) { return dt == EM3_DTYPE_I32 ? cg->i32 : cg->f32; }

/* Puts the builder at the top of fn's entry block; returns the block to come back to. */
static LLVMBasicBlockRef enter_entry(em3_cg *cg, LLVMValueRef fn) {
    LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b);
    LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(fn);
    LLVMValueRef first = LLVMGetFirstInstruction(entry);
    if (first)
        LLVMPositionBuilderBefore(cg->b, first);
    else
        LLVMPositionBuilderAtEnd(cg->b, entry);
    return here;
}

LLVMValueRef cg_sym_slot(em3_cg *cg, int s) {
    EM3_ASSERT(cg->kfn, "symbols are read inside kernels");
    LLVMValueRef idx = cg_i64(cg, s);
    return LLVMBuildInBoundsGEP2(cg->b, cg->i64, cg->kenv, &idx, 1, "");
}

/* Loaded once per kernel, in its entry block: every later use is dominated, and a kernel
 * that calls `unique` reads no symbol after setting it. */
LLVMValueRef cg_sym(em3_cg *cg, int s) {
    if (cg->ksym[s]) return cg->ksym[s];
    LLVMBasicBlockRef here = enter_entry(cg, cg->kfn);
    char name[4];
    cg->ksym[s] = LLVMBuildLoad2(cg->b, cg->i64, cg_sym_slot(cg, s), em3_sym_name(s, name));
    LLVMPositionBuilderAtEnd(cg->b, here);
    return cg->ksym[s];
}

LLVMValueRef cg_dim(em3_cg *cg, const em3_type *t, int d) {
    int64_t v = t->dim[d];
    if (!em3_dim_has_batch(v)) return cg_i64(cg, v);
    LLVMValueRef s = cg_sym(cg, em3_dim_sym(v));
    return em3_dim_coef(v) == 1 ? s : LLVMBuildNSWMul(cg->b, s, cg_i64(cg, em3_dim_coef(v)), "");
}

LLVMValueRef cg_numel(em3_cg *cg, const em3_type *t) {
    LLVMValueRef n = cg_i64(cg, 1);
    for (int d = 0; d < t->rank; d++) n = LLVMBuildNSWMul(cg->b, n, cg_dim(cg, t, d), "");
    return n;
}

LLVMValueRef cg_gep(em3_cg *cg, em3_dtype dt, LLVMValueRef base, LLVMValueRef index) {
    return LLVMBuildInBoundsGEP2(cg->b, cg_elem(cg, dt), base, &index, 1, "");
}

LLVMValueRef cg_load(em3_cg *cg, em3_dtype dt, LLVMValueRef base, LLVMValueRef index) {
    return LLVMBuildLoad2(cg->b, cg_elem(cg, dt), cg_gep(cg, dt, base, index), "");
}

void cg_store(em3_cg *cg, em3_dtype dt, LLVMValueRef base, LLVMValueRef index, LLVMValueRef v) {
    LLVMBuildStore(cg->b, v, cg_gep(cg, dt, base, index));
}

LLVMValueRef cg_extern(em3_cg *cg, const char *name, LLVMTypeRef fn_type) {
    LLVMValueRef f = LLVMGetNamedFunction(cg->mod, name);
    if (!f) f = LLVMAddFunction(cg->mod, name, fn_type);
    return f;
}

LLVMValueRef cg_call(em3_cg *cg, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, int n,
                     LLVMValueRef *args) {
    LLVMTypeRef ft = LLVMFunctionType(ret, params, (unsigned)n, 0);
    return LLVMBuildCall2(cg->b, ft, cg_extern(cg, name, ft), args, (unsigned)n, "");
}

LLVMValueRef cg_alloca(em3_cg *cg, LLVMTypeRef t) {
    LLVMBasicBlockRef here = enter_entry(cg, cg->kfn ? cg->kfn : cg->fn);
    LLVMValueRef a = LLVMBuildAlloca(cg->b, t, "");
    LLVMPositionBuilderAtEnd(cg->b, here);
    return a;
}

void cg_reassoc(em3_cg *cg, LLVMValueRef instr) {
    if (!cg->opt->strict_fp) LLVMSetFastMathFlags(instr, LLVMFastMathAllowReassoc);
}

cg_loop cg_loop_begin(em3_cg *cg, LLVMValueRef n, const char *name) {
    cg_loop l = {.hint = CG_LOOP_ANY};
    LLVMValueRef fn = cg->kfn ? cg->kfn : cg->fn;
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(cg->b);
    l.head = LLVMAppendBasicBlockInContext(cg->ctx, fn, name);
    l.body = LLVMAppendBasicBlockInContext(cg->ctx, fn, "body");
    l.exit = LLVMAppendBasicBlockInContext(cg->ctx, fn, "exit");
    LLVMBuildBr(cg->b, l.head);
    LLVMPositionBuilderAtEnd(cg->b, l.head);
    l.i = LLVMBuildPhi(cg->b, cg->i64, "i");
    LLVMValueRef zero = cg_i64(cg, 0);
    LLVMAddIncoming(l.i, &zero, &pre, 1);
    LLVMBuildCondBr(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, l.i, n, ""), l.body, l.exit);
    LLVMPositionBuilderAtEnd(cg->b, l.body);
    return l;
}

void cg_loop_end(em3_cg *cg, cg_loop *l) {
    LLVMValueRef next = LLVMBuildNSWAdd(cg->b, l->i, cg_i64(cg, 1), "");
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(cg->b);
    LLVMAddIncoming(l->i, &next, &latch, 1);
    LLVMValueRef back = LLVMBuildBr(cg->b, l->head);
    if (l->hint != CG_LOOP_ANY) { /* a distinct node whose first operand is itself */
        const char *what = l->hint == CG_LOOP_SCALAR ? "llvm.loop.vectorize.width" : "llvm.loop.unroll.disable";
        LLVMMetadataRef self = LLVMTemporaryMDNode(cg->ctx, NULL, 0);
        LLVMMetadataRef prop[2] = {LLVMMDStringInContext2(cg->ctx, what, strlen(what)),
                                   LLVMValueAsMetadata(LLVMConstInt(cg->i32, 1, 0))};
        LLVMMetadataRef ops[2] = {self, LLVMMDNodeInContext2(cg->ctx, prop, l->hint == CG_LOOP_SCALAR ? 2 : 1)};
        LLVMMetadataRef id = LLVMMDNodeInContext2(cg->ctx, ops, 2);
        LLVMMetadataReplaceAllUsesWith(self, id);
        LLVMSetMetadata(back, LLVMGetMDKindIDInContext(cg->ctx, "llvm.loop", 9), LLVMMetadataAsValue(cg->ctx, id));
    }
    LLVMPositionBuilderAtEnd(cg->b, l->exit);
}

/* ---- kernels ---------------------------------------------------------------------------- */

static LLVMTypeRef frame_type(em3_cg *cg) {
    /* em3_frame: batch, arena, global, input, output, err_node, err_index, err_value */
    LLVMTypeRef f[8] = {cg->i64, cg->ptr_t, cg->ptr_t, cg->ptr_t, cg->ptr_t, cg->i32, cg->i64, cg->i64};
    return LLVMStructTypeInContext(cg->ctx, f, 8, 0);
}

static LLVMValueRef frame_field(em3_cg *cg, LLVMValueRef frame, unsigned k) {
    return LLVMBuildStructGEP2(cg->b, frame_type(cg), frame, k, "");
}

static void add_attr(em3_cg *cg, LLVMValueRef fn, unsigned idx, const char *name) {
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(fn, idx, LLVMCreateEnumAttribute(cg->ctx, kind, 0));
}

void cg_kernel_begin(em3_cg *cg, int id, const char *name, int n) {
    EM3_ASSERT(!cg->kfn, "nested kernels");
    n += cg->plan->scratch_bytes[id] > 0; /* the workspace is one more noalias buffer */
    LLVMTypeRef params[40];
    EM3_ASSERT(n + 2 <= 40, "kernel with %d buffers", n);
    for (int i = 0; i < n; i++) params[i] = cg->ptr_t;
    params[n] = cg->ptr_t;
    params[n + 1] = cg->ptr_t;
    char fname[128];
    snprintf(fname, sizeof fname, "%s.k%d.%s", cg->f->name, id, name);
    cg->kfn = LLVMAddFunction(cg->mod, fname, LLVMFunctionType(cg->i32, params, (unsigned)n + 2, 0));
    LLVMSetLinkage(cg->kfn, LLVMInternalLinkage);
    for (int i = 0; i < n; i++) add_attr(cg, cg->kfn, (unsigned)i + 1, "nocapture");
    add_attr(cg, cg->kfn, LLVMAttributeFunctionIndex, "nounwind");
    add_attr(cg, cg->kfn, LLVMAttributeFunctionIndex, "noinline");
    cg->kenv = LLVMGetParam(cg->kfn, (unsigned)n);
    memset(cg->ksym, 0, sizeof cg->ksym);
    cg->body_block = LLVMGetInsertBlock(cg->b);
    cg->knode = id;
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, cg->kfn, "entry"));
}

LLVMValueRef cg_kparam(em3_cg *cg, int i) { return LLVMGetParam(cg->kfn, (unsigned)i); }
LLVMValueRef cg_kscratch(em3_cg *cg, int n) { return LLVMGetParam(cg->kfn, (unsigned)n); }

LLVMValueRef cg_kglobal(em3_cg *cg, const char *name) {
    int g = em3_module_find_global(cg->f->mod, name);
    EM3_ASSERT(g >= 0, "no global %s", name);
    LLVMValueRef frame = LLVMGetParam(cg->kfn, LLVMCountParams(cg->kfn) - 1);
    LLVMValueRef table = LLVMBuildLoad2(cg->b, cg->ptr_t, frame_field(cg, frame, 2), "globals");
    LLVMValueRef idx = cg_i64(cg, g);
    return LLVMBuildLoad2(cg->b, cg->ptr_t, LLVMBuildInBoundsGEP2(cg->b, cg->ptr_t, table, &idx, 1, ""), name);
}

void cg_kernel_fail(em3_cg *cg, LLVMValueRef index, LLVMValueRef value) {
    unsigned n = LLVMCountParams(cg->kfn);
    LLVMValueRef frame = LLVMGetParam(cg->kfn, n - 1);
    LLVMBuildStore(cg->b, index, frame_field(cg, frame, 6));
    LLVMBuildStore(cg->b, value, frame_field(cg, frame, 7));
    LLVMBuildRet(cg->b, LLVMConstInt(cg->i32, 1, 0));
}

static LLVMValueRef value_ptr(em3_cg *cg, int v);

/* The first other buffer of a kernel that shares buffer i's storage (an in-place result), or -1. */
static int shared_with(const em3_cg *cg, const int *vals, int n, int i) {
    for (int j = 0; j < n; j++)
        if (j != i && cg->plan->storage[vals[j]] == cg->plan->storage[vals[i]] &&
            vals[j] != vals[i]) /* the same value twice is only ever read */
            return j;
    return -1;
}

/* What a kernel's code depends on: its op, attributes and the types of its buffers. Nodes
 * with the same signature share one kernel, which keeps the LLVM module (and compile time)
 * proportional to the distinct shapes of a model rather than to its size. */
static char *kernel_signature(em3_cg *cg, const int *vals, int n) {
    const em3_node *nd = &cg->f->node[cg->knode];
    em3_strbuf sb = {0};
    em3_sb_printf(&sb, "%s", em3_op_name(nd->op));
    int na = em3_op_attr_count(nd->op);
    for (int i = 0; i < na; i++) {
        const em3_attrval *a = &nd->attr[i];
        em3_sb_printf(&sb, "|%lld,%.17g,%s", (long long)a->i, a->f, a->s ? a->s : "");
        for (int k = 0; k < a->n; k++) em3_sb_printf(&sb, ",%lld", (long long)a->list[k]);
    }
    char t[EM3_TYPE_STR_MAX];
    for (int i = 0; i < n; i++) {
        em3_sb_printf(&sb, "|%s", em3_type_str(&cg->f->node[vals[i]].type, t, sizeof t));
        int s = shared_with(cg, vals, n, i);
        if (s >= 0) em3_sb_printf(&sb, "=%d", s); /* in place: compiled without noalias */
    }
    em3_sb_printf(&sb, "|%s", em3_type_str(&nd->type, t, sizeof t));
    return sb.data;
}

static LLVMValueRef shared_kernel(em3_cg *cg, LLVMValueRef kfn, const int *vals, int n) {
    char *sig = kernel_signature(cg, vals, n);
    for (int i = 0; i < cg->n_kernels; i++)
        if (!strcmp(cg->kernel_sig[i], sig)) {
            free(sig);
            LLVMDeleteFunction(kfn);
            return cg->kernel_fn[i];
        }
    EM3_GROW(cg->kernel_sig, cg->cap_kernels, cg->n_kernels + 1);
    cg->kernel_fn = em3_xrealloc(cg->kernel_fn, sizeof(LLVMValueRef) * (size_t)cg->cap_kernels);
    cg->kernel_sig[cg->n_kernels] = sig;
    cg->kernel_fn[cg->n_kernels++] = kfn;
    return kfn;
}

void cg_kernel_end(em3_cg *cg, const int *vals, int n) {
    LLVMBuildRet(cg->b, LLVMConstInt(cg->i32, 0, 0));
    /* noalias lets LLVM vectorise; it would be a lie for buffers that share storage */
    for (int i = 0; i < n; i++)
        if (shared_with(cg, vals, n, i) < 0) add_attr(cg, cg->kfn, (unsigned)i + 1, "noalias");
    if (cg->plan->scratch_bytes[cg->knode] > 0) add_attr(cg, cg->kfn, (unsigned)n + 1, "noalias");
    LLVMValueRef kfn = shared_kernel(cg, cg->kfn, vals, n);
    cg->kfn = NULL;
    LLVMPositionBuilderAtEnd(cg->b, cg->body_block);
    LLVMValueRef args[40];
    for (int i = 0; i < n; i++) args[i] = value_ptr(cg, vals[i]);
    int k = n;
    if (cg->plan->scratch_bytes[cg->knode] > 0) { /* the node's workspace, after its buffers */
        LLVMValueRef arena = LLVMBuildLoad2(cg->b, cg->ptr_t, frame_field(cg, cg->frame, 1), "");
        LLVMValueRef off = cg_i64(cg, cg->plan->scratch_offset[cg->knode]);
        args[k++] = LLVMBuildInBoundsGEP2(cg->b, LLVMInt8TypeInContext(cg->ctx), arena, &off, 1, "scratch");
    }
    args[k] = cg->env;
    args[k + 1] = cg->frame;
    LLVMValueRef st = LLVMBuildCall2(cg->b, LLVMGlobalGetValueType(kfn), kfn, args, (unsigned)k + 2, "");
    /* kernels are shared between nodes: the call site names the node that failed */
    LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "ok");
    LLVMBasicBlockRef bad = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "failed");
    LLVMBuildCondBr(cg->b, LLVMBuildICmp(cg->b, LLVMIntNE, st, LLVMConstInt(cg->i32, 0, 0), ""), bad, ok);
    LLVMPositionBuilderAtEnd(cg->b, bad);
    LLVMBuildStore(cg->b, LLVMConstInt(cg->i32, (unsigned long long)cg->knode, 0), frame_field(cg, cg->frame, 5));
    LLVMBuildBr(cg->b, cg->fail);
    LLVMPositionBuilderAtEnd(cg->b, ok);
}

/* ---- the function body ------------------------------------------------------------------ */

static int input_index(const em3_func *f, int v) {
    int k = 0;
    for (int i = 0; i < v; i++) k += f->node[i].op == EM3_OP_INPUT;
    return k;
}

/* The buffer of value v in the function body: an input, a global, or an arena region. */
static LLVMValueRef value_ptr(em3_cg *cg, int v) {
    int s = cg->plan->storage[v];
    if (cg->ptr[s]) return cg->ptr[s];
    const em3_node *n = &cg->f->node[s];
    /* materialise at the top of the body so that every later use is dominated (it reads the
       frame alone) */
    LLVMBasicBlockRef here = enter_entry(cg, cg->fn);
    LLVMValueRef p;
    if (n->op == EM3_OP_INPUT || n->op == EM3_OP_PARAM) {
        bool in = n->op == EM3_OP_INPUT;
        int k = in ? input_index(cg->f, s) : em3_module_find_global(cg->f->mod, n->attr[0].s);
        EM3_ASSERT(k >= 0, "no storage for %%%d", s);
        LLVMValueRef table = LLVMBuildLoad2(cg->b, cg->ptr_t, frame_field(cg, cg->frame, in ? 3 : 2), "");
        LLVMValueRef idx = cg_i64(cg, k);
        p = LLVMBuildLoad2(cg->b, cg->ptr_t, LLVMBuildInBoundsGEP2(cg->b, cg->ptr_t, table, &idx, 1, ""),
                           em3_node_s(n, "name"));
    } else {
        EM3_ASSERT(cg->plan->offset[s] >= 0, "%%%d has no arena offset", s);
        LLVMValueRef arena = LLVMBuildLoad2(cg->b, cg->ptr_t, frame_field(cg, cg->frame, 1), "arena");
        LLVMValueRef off = cg_i64(cg, cg->plan->offset[s]);
        p = LLVMBuildInBoundsGEP2(cg->b, LLVMInt8TypeInContext(cg->ctx), arena, &off, 1, "");
    }
    LLVMPositionBuilderAtEnd(cg->b, here);
    return cg->ptr[s] = p;
}

static void lower_func(em3_cg *cg, const em3_func *f, const em3_mem_plan *plan) {
    cg->f = f;
    cg->plan = plan;
    cg->ptr = em3_xcalloc((size_t)(f->n_node ? f->n_node : 1), sizeof(LLVMValueRef));
    char name[256];
    snprintf(name, sizeof name, "%s%s", cg->opt->symbol_prefix ? cg->opt->symbol_prefix : "", f->name);
    LLVMTypeRef pt = cg->ptr_t;
    cg->fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(cg->i32, &pt, 1, 0));
    cg->frame = LLVMGetParam(cg->fn, 0);
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "entry");
    LLVMBasicBlockRef start = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "start");
    cg->fail = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "fail");
    LLVMPositionBuilderAtEnd(cg->b, cg->fail);
    LLVMBuildRet(cg->b, LLVMConstInt(cg->i32, 1, 0));
    LLVMPositionBuilderAtEnd(cg->b, entry);
    LLVMTypeRef env_t = LLVMArrayType2(cg->i64, EM3_MAX_SYMBOLS);
    cg->env = LLVMBuildAlloca(cg->b, env_t, "env");
    LLVMBuildStore(cg->b, LLVMBuildLoad2(cg->b, cg->i64, frame_field(cg, cg->frame, 0), "batch"), cg->env);
    LLVMBuildBr(cg->b, start);
    LLVMPositionBuilderAtEnd(cg->b, start);
    for (int i = 0; i < f->n_node; i++) emitters[f->node[i].op](cg, i);
    LLVMValueRef outs = LLVMBuildLoad2(cg->b, cg->ptr_t, frame_field(cg, cg->frame, 4), "outputs");
    for (int i = 0; i < f->n_out; i++) {
        LLVMValueRef idx = cg_i64(cg, i);
        LLVMBuildStore(cg->b, value_ptr(cg, f->out[i].value),
                       LLVMBuildInBoundsGEP2(cg->b, cg->ptr_t, outs, &idx, 1, ""));
    }
    LLVMBuildRet(cg->b, LLVMConstInt(cg->i32, 0, 0));
    free(cg->ptr);
    cg->ptr = NULL;
}

LLVMModuleRef cg_lower_module(const em3_module *m, LLVMContextRef ctx, const em3_codegen_options *o,
                              em3_mem_plan **plans) {
    em3_cg cg = {.ctx = ctx, .opt = o};
    cg.mod = LLVMModuleCreateWithNameInContext(m->name, ctx);
    cg.b = LLVMCreateBuilderInContext(ctx);
    cg.i1 = LLVMInt1TypeInContext(ctx);
    cg.i32 = LLVMInt32TypeInContext(ctx);
    cg.i64 = LLVMInt64TypeInContext(ctx);
    cg.f32 = LLVMFloatTypeInContext(ctx);
    cg.ptr_t = LLVMPointerTypeInContext(ctx, 0);
    cg.void_t = LLVMVoidTypeInContext(ctx);
    for (int i = 0; i < m->n_func; i++) lower_func(&cg, m->func[i], plans[i]);
    LLVMDisposeBuilder(cg.b);
    for (int i = 0; i < cg.n_kernels; i++) free(cg.kernel_sig[i]);
    free(cg.kernel_sig);
    free(cg.kernel_fn);
    return cg.mod;
}

int em3_codegen_kernel_count(const em3_func *f) {
    int n = 0;
    for (int i = 0; i < f->n_node; i++) n += emitters[f->node[i].op] != cg_emit_none;
    return n;
}

/* Leaves and reshapes: the value is an input, a global, or another value's storage. */
void cg_emit_none(em3_cg *cg, int id) {
    (void)cg, (void)id;
}
