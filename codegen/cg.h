/* codegen/cg.h — internal to codegen: the state of lowering one IR function into LLVM IR, and
 * the emitter interface named in ir/ops.def's emit column. Each node becomes a kernel: an
 * internal LLVM function whose buffers are `noalias` pointers and whose trip counts are
 * static except for the symbolic sizes (the batch B and a batch's distinct-id counts Us), called
 * from the function's body in schedule order. The body keeps the symbols' values in a stack
 * array, the env (B, U1, …), whose pointer every kernel takes: `unique` writes its count there. */
#ifndef EM3_CG_H
#define EM3_CG_H

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "codegen.h"
#include "passes/memory_plan.h"

typedef struct em3_cg {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    const em3_codegen_options *opt;
    const em3_func *f;
    const em3_mem_plan *plan;
    /* the function being built */
    LLVMValueRef fn, frame, env;
    LLVMValueRef *ptr; /* per value: its buffer in `fn` (NULL until materialised) */
    LLVMBasicBlockRef fail; /* returns 1: a kernel reported a data error */
    /* common types */
    LLVMTypeRef i1, i32, i64, f32, ptr_t, void_t;
    /* the kernel being built, and where the function body resumes after it */
    LLVMValueRef kfn, kenv;
    LLVMValueRef ksym[EM3_MAX_SYMBOLS]; /* the symbols' values loaded in the kernel, on first use */
    int knode;
    LLVMBasicBlockRef body_block;
    /* kernels built so far, by signature (shared between nodes and functions) */
    char **kernel_sig;
    LLVMValueRef *kernel_fn;
    int n_kernels, cap_kernels;
} em3_cg;

typedef void em3_emit_fn(em3_cg *cg, int id);

#define OP(E, NAME, ARITY, KIND, ATTRS, FLAGS, SHAPE, REF, VJP, EMIT, ...) em3_emit_fn EMIT;
#include "ir/ops.def"
#undef OP

/* ---- building kernels (lower.c) ---- */

/* Begins kernel `name` for node `id` taking n buffers as noalias pointers; inside,
 * cg_kparam(cg, i) is buffer i and cg_sym(cg, s) the value of symbol s (0: B). cg_kernel_end(vals) emits the
 * call from the function body with the buffers of values vals[0..n) (by convention the
 * node's own result first). */
void cg_kernel_begin(em3_cg *cg, int id, const char *name, int n);
LLVMValueRef cg_kparam(em3_cg *cg, int i);
/* The storage of module global `name` (frame->global[index]) inside the kernel: for ops that
 * name a global by attribute rather than reading it as an operand (spmm's graph). */
LLVMValueRef cg_kglobal(em3_cg *cg, const char *name);
/* The node's workspace (memory plan) inside its kernel, after its n buffers. */
LLVMValueRef cg_kscratch(em3_cg *cg, int n);
/* C = alpha op(A) op(B) + beta C through cblas_sgemm (row-major), sizes as i64 values. */
void cg_sgemm(em3_cg *cg, bool ta, bool tb, LLVMValueRef m, LLVMValueRef n, LLVMValueRef k, double alpha,
              LLVMValueRef a, LLVMValueRef lda, LLVMValueRef b, LLVMValueRef ldb, double beta,
              LLVMValueRef c, LLVMValueRef ldc);
void cg_kernel_end(em3_cg *cg, const int *vals, int n);
/* A kernel reporting a data error: call with the failing index and id (i64) inside the
 * kernel; the kernel records them in the frame and returns 1, and its call site records
 * which node failed (a kernel may serve several). */
void cg_kernel_fail(em3_cg *cg, LLVMValueRef index, LLVMValueRef value);

/* Counted loops: `for (i = 0; i < n; i++)`; returns i. `hint`, set before the end, is
 * passed to LLVM as the loop's metadata. */
typedef enum {
    CG_LOOP_ANY,       /* LLVM decides */
    CG_LOOP_SCALAR,    /* not vectorised (its inner loops still are) */
    CG_LOOP_NO_UNROLL, /* not unrolled before the loop vectoriser sees it */
} cg_loop_hint;
typedef struct {
    LLVMBasicBlockRef head, body, exit;
    LLVMValueRef i, next;
    cg_loop_hint hint;
} cg_loop;
cg_loop cg_loop_begin(em3_cg *cg, LLVMValueRef n, const char *name);
void cg_loop_end(em3_cg *cg, cg_loop *l);

LLVMValueRef cg_i64(em3_cg *cg, int64_t v);
LLVMValueRef cg_f32(em3_cg *cg, double v);
/* The value of symbol s (0: the batch B, s: Us) inside the current kernel, as an i64. */
LLVMValueRef cg_sym(em3_cg *cg, int s);
/* The env slot of symbol s inside the current kernel (for `unique`, which sets it). */
LLVMValueRef cg_sym_slot(em3_cg *cg, int s);
/* The size of dimension d of a type (k·B → k·batch, k·Us → k·Us) inside the current kernel. */
LLVMValueRef cg_dim(em3_cg *cg, const em3_type *t, int d);
LLVMValueRef cg_numel(em3_cg *cg, const em3_type *t);
LLVMTypeRef cg_elem(em3_cg *cg, em3_dtype dt);
/* &base[index] for an element type. */
LLVMValueRef cg_gep(em3_cg *cg, em3_dtype dt, LLVMValueRef base, LLVMValueRef index);
LLVMValueRef cg_load(em3_cg *cg, em3_dtype dt, LLVMValueRef base, LLVMValueRef index);
void cg_store(em3_cg *cg, em3_dtype dt, LLVMValueRef base, LLVMValueRef index, LLVMValueRef v);
/* A stack slot in the entry block of the kernel (or function) being built, where mem2reg
 * turns it into a register; an alloca inside a loop would grow the stack every iteration. */
LLVMValueRef cg_alloca(em3_cg *cg, LLVMTypeRef t);
/* Declares (once) an external function. */
LLVMValueRef cg_extern(em3_cg *cg, const char *name, LLVMTypeRef fn_type);
LLVMValueRef cg_call(em3_cg *cg, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, int n,
                     LLVMValueRef *args);

/* ---- the walk over a shape with broadcast operands (emit_elementwise.c) ---- */

/* Loops over `shape`; each of `n` operands is read with strides from its own type
 * (numpy broadcasting: a dimension of 1 is read with stride 0), `perm` optionally mapping
 * output dimensions to operand dimensions (transpose). body() is called in the innermost
 * loop with each operand's element offset. Adjacent dimensions are merged where every
 * operand is contiguous across them, so the innermost loop is as long as possible. */
typedef void cg_walk_body(em3_cg *cg, void *ctx, LLVMValueRef *offsets);
void cg_walk(em3_cg *cg, const em3_type *shape, const em3_type *const *operands,
             const int64_t *const *perms, int n, cg_walk_body *body, void *ctx);

/* The value of elementwise node n from its operands' values (of element types in_dt). */
LLVMValueRef cg_scalar(em3_cg *cg, const em3_node *n, const em3_dtype *in_dt, const LLVMValueRef *a);

/* ---- math (mathfn.c): vectorisable approximations, correct to a few ulp ---- */
LLVMValueRef cg_exp(em3_cg *cg, LLVMValueRef x);
LLVMValueRef cg_log(em3_cg *cg, LLVMValueRef x);
LLVMValueRef cg_log1p(em3_cg *cg, LLVMValueRef x);
LLVMValueRef cg_tanh(em3_cg *cg, LLVMValueRef x);
LLVMValueRef cg_sigmoid(em3_cg *cg, LLVMValueRef x);
LLVMValueRef cg_intrinsic1(em3_cg *cg, const char *name, LLVMValueRef x); /* llvm.fabs.f32 ... */
LLVMValueRef cg_intrinsic2(em3_cg *cg, const char *name, LLVMValueRef x, LLVMValueRef y);

/* Fast-math flags for reductions: reassociation only, never nnan/ninf (training sees NaNs). */
void cg_reassoc(em3_cg *cg, LLVMValueRef instr);

/* ---- target machines and the LLVM pipeline (target.c) ---- */
bool cg_llvm_init(em3_diag *d);
LLVMTargetMachineRef cg_target_machine(const em3_codegen_options *o, em3_diag *d);
void cg_optimize(LLVMModuleRef m, LLVMTargetMachineRef tm, const em3_codegen_options *o);
/* A lowered module with the target's triple and layout, optimised unless `raw`. */
LLVMModuleRef cg_build_module(const em3_module *m, LLVMContextRef ctx, const em3_codegen_options *o,
                              LLVMTargetMachineRef tm, bool raw, em3_mem_plan **plans);
/* Lowers every function of `m` into a new LLVM module in `ctx`. */
LLVMModuleRef cg_lower_module(const em3_module *m, LLVMContextRef ctx, const em3_codegen_options *o,
                              em3_mem_plan **plans);

#endif
