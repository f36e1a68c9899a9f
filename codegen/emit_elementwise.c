/* codegen/emit_elementwise.c — elementwise ops, constants, broadcast and transpose: all are
 * one walk over the result's shape reading each operand with its own strides (0 along a
 * broadcast dimension). Dimensions are merged wherever every operand is contiguous across
 * them, so a [B, 50, 64] + [64] add becomes a loop over B*50 rows of a 64-wide static loop
 * that LLVM vectorises. The scalar formula of every elementwise op lives in cg_scalar. */
#include <string.h>

#include "cg.h"
#include "ir/program.h"

/* c · B^p[0] · U1^p[1] ⋯: a dimension or stride that may depend on the symbolic sizes; c == 0
 * is zero. */
typedef struct {
    int64_t c;
    int p[EM3_MAX_SYMBOLS];
} mono;

static mono dim_mono(int64_t d) {
    mono m = {em3_dim_coef(d), {0}};
    if (d < 0) m.p[em3_dim_sym(d)] = 1;
    return m;
}
static mono mono_mul(mono a, mono b) {
    a.c *= b.c;
    for (int s = 0; s < EM3_MAX_SYMBOLS; s++) a.p[s] += b.p[s];
    return a;
}
static bool mono_eq(mono a, mono b) { return a.c == b.c && (a.c == 0 || !memcmp(a.p, b.p, sizeof a.p)); }
static bool mono_is_one(mono a) { return mono_eq(a, (mono){1, {0}}); }

static LLVMValueRef mono_value(em3_cg *cg, mono m) {
    LLVMValueRef v = cg_i64(cg, m.c);
    for (int s = 0; s < EM3_MAX_SYMBOLS && m.c; s++)
        for (int i = 0; i < m.p[s]; i++) v = LLVMBuildNSWMul(cg->b, v, cg_sym(cg, s), "");
    return v;
}

#define WALK_MAX_OPS 8

typedef struct {
    int rank, n;
    mono dim[EM3_MAX_RANK];
    mono stride[WALK_MAX_OPS][EM3_MAX_RANK];
    LLVMValueRef sv[WALK_MAX_OPS][EM3_MAX_RANK]; /* strides as values */
    cg_walk_body *body;
    void *ctx;
} walk_plan;

static void walk_level(em3_cg *cg, walk_plan *w, int level, LLVMValueRef *off) {
    if (level == w->rank) {
        w->body(cg, w->ctx, off);
        return;
    }
    cg_loop l = cg_loop_begin(cg, mono_value(cg, w->dim[level]), "walk");
    LLVMValueRef inner[WALK_MAX_OPS];
    for (int k = 0; k < w->n; k++)
        inner[k] = w->stride[k][level].c == 0
                       ? off[k]
                       : LLVMBuildNSWAdd(cg->b, off[k], LLVMBuildNSWMul(cg->b, l.i, w->sv[k][level], ""), "");
    walk_level(cg, w, level + 1, inner);
    /* A loop along which an operand stays put (a reduction's accumulator, a broadcast value)
       gets a hint. Left alone, LLVM fully unrolls a short contiguous inner loop and then
       vectorises the loop around it across strided rows, one lane per unrolled element:
       code ten times larger, slower to compile, and gathers where plain vector loads do.
       The innermost such loop is kept for the loop vectoriser (a row sum becomes a vector
       reduction); an outer one is kept scalar (a column sum keeps one vector accumulator
       per slice of the row). */
    bool stays = false;
    for (int k = 0; k < w->n; k++) stays |= w->stride[k][level].c == 0;
    if (stays) l.hint = level == w->rank - 1 ? CG_LOOP_NO_UNROLL : CG_LOOP_SCALAR;
    cg_loop_end(cg, &l);
}

void cg_walk(em3_cg *cg, const em3_type *shape, const em3_type *const *operands,
             const int64_t *const *perms, int n, cg_walk_body *body, void *ctx) {
    EM3_ASSERT(n <= WALK_MAX_OPS, "walk over %d operands", n);
    walk_plan w = {.n = n, .body = body, .ctx = ctx};
    int r = shape->rank;
    mono dims[EM3_MAX_RANK], strides[WALK_MAX_OPS][EM3_MAX_RANK];
    for (int i = 0; i < r; i++) dims[i] = dim_mono(shape->dim[i]);
    for (int k = 0; k < n; k++) {
        const em3_type *t = operands[k];
        mono rs[EM3_MAX_RANK], acc = {1, {0}};
        for (int j = t->rank - 1; j >= 0; j--) {
            rs[j] = acc;
            acc = mono_mul(acc, dim_mono(t->dim[j]));
        }
        for (int i = 0; i < r; i++) {
            int j = perms && perms[k] ? (int)perms[k][i] : i - (r - t->rank);
            bool bcast = j < 0 || (!(perms && perms[k]) && t->dim[j] == 1 && shape->dim[i] != 1);
            strides[k][i] = bcast ? (mono){0, {0}} : rs[j];
        }
    }
    /* merge from the inside out; static dimensions of 1 vanish */
    for (int i = r - 1; i >= 0; i--) {
        if (mono_is_one(dims[i])) continue;
        if (w.rank > 0) {
            int in = w.rank - 1; /* the dimension just inside, stored innermost-first */
            bool merge = true;
            for (int k = 0; k < n && merge; k++)
                merge = mono_eq(strides[k][i], mono_mul(w.stride[k][in], w.dim[in]));
            if (merge) {
                w.dim[in] = mono_mul(w.dim[in], dims[i]);
                continue;
            }
        }
        w.dim[w.rank] = dims[i];
        for (int k = 0; k < n; k++) w.stride[k][w.rank] = strides[k][i];
        w.rank++;
    }
    /* reverse to outermost-first and make the strides values */
    for (int a = 0, b = w.rank - 1; a < b; a++, b--) {
        mono t = w.dim[a];
        w.dim[a] = w.dim[b];
        w.dim[b] = t;
        for (int k = 0; k < n; k++) {
            t = w.stride[k][a];
            w.stride[k][a] = w.stride[k][b];
            w.stride[k][b] = t;
        }
    }
    for (int k = 0; k < n; k++)
        for (int i = 0; i < w.rank; i++) w.sv[k][i] = mono_value(cg, w.stride[k][i]);
    LLVMValueRef off[WALK_MAX_OPS];
    for (int k = 0; k < n; k++) off[k] = cg_i64(cg, 0);
    walk_level(cg, &w, 0, off);
}

/* ---- scalar formulas ---------------------------------------------------------------------- */

static LLVMValueRef fcmp(em3_cg *cg, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) {
    return LLVMBuildFCmp(cg->b, p, a, b, "");
}

static LLVMValueRef fsel(em3_cg *cg, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) {
    return LLVMBuildSelect(cg->b, c, a, b, "");
}

/* max(x, 0) keeping NaN, as the interpreter's relu */
static LLVMValueRef fmax0(em3_cg *cg, LLVMValueRef x) {
    return fsel(cg, fcmp(cg, LLVMRealOLT, x, cg_f32(cg, 0)), cg_f32(cg, 0), x);
}

/* lin + log1p(exp(-|x|)): softplus with lin = max(x, 0), BCE with logits with
 * lin = max(x, 0) − x·y. The log term is added last: for a label of 1 and a large logit lin is
 * exactly 0 and the loss is that small term, which (max(x, 0) + term) − x would lose. */
static LLVMValueRef plus_log1p_exp(em3_cg *cg, LLVMValueRef lin, LLVMValueRef x) {
    LLVMValueRef e = cg_exp(cg, LLVMBuildFNeg(cg->b, cg_intrinsic1(cg, "llvm.fabs", x), ""));
    return LLVMBuildFAdd(cg->b, lin, cg_log1p(cg, e), "");
}

/* u = √(2/π)(x + 0.044715x³), the argument of gelu's tanh */
static LLVMValueRef gelu_arg(em3_cg *cg, LLVMValueRef x) {
    LLVMValueRef x3 = LLVMBuildFMul(cg->b, x, LLVMBuildFMul(cg->b, x, x, ""), "");
    LLVMValueRef in = LLVMBuildFAdd(cg->b, x, LLVMBuildFMul(cg->b, cg_f32(cg, 0.044715), x3, ""), "");
    return LLVMBuildFMul(cg->b, cg_f32(cg, 0.7978845608028654), in, "");
}

/* NaN-propagating max/min exactly as the interpreter: a if a is NaN or a wins, else b. */
static LLVMValueRef pick(em3_cg *cg, bool max, LLVMValueRef a, LLVMValueRef b, bool is_float) {
    if (!is_float)
        return LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, max ? LLVMIntSGT : LLVMIntSLT, a, b, ""), a, b, "");
    LLVMValueRef wins = LLVMBuildOr(cg->b, fcmp(cg, LLVMRealUNO, a, a),
                                    fcmp(cg, max ? LLVMRealOGT : LLVMRealOLT, a, b), "");
    return fsel(cg, wins, a, b);
}

static LLVMValueRef compare(em3_cg *cg, em3_op op, LLVMValueRef a, LLVMValueRef b, bool is_float) {
    static const LLVMRealPredicate fp[] = {LLVMRealOEQ, LLVMRealUNE, LLVMRealOLT, LLVMRealOLE,
                                           LLVMRealOGT, LLVMRealOGE};
    static const LLVMIntPredicate ip[] = {LLVMIntEQ, LLVMIntNE, LLVMIntSLT, LLVMIntSLE, LLVMIntSGT, LLVMIntSGE};
    int k = op - EM3_OP_EQ;
    LLVMValueRef c = is_float ? fcmp(cg, fp[k], a, b) : LLVMBuildICmp(cg->b, ip[k], a, b, "");
    return LLVMBuildUIToFP(cg->b, c, cg->f32, "");
}

LLVMValueRef cg_scalar(em3_cg *cg, const em3_node *n, const em3_dtype *in_dt, const LLVMValueRef *a) {
    LLVMBuilderRef b = cg->b;
    bool fl = in_dt[0] == EM3_DTYPE_F32;
    switch (n->op) {
    case EM3_OP_NEG: return fl ? LLVMBuildFNeg(b, a[0], "") : LLVMBuildNeg(b, a[0], "");
    case EM3_OP_EXP: return cg_exp(cg, a[0]);
    case EM3_OP_LOG: return cg_log(cg, a[0]);
    case EM3_OP_SQRT: return cg_intrinsic1(cg, "llvm.sqrt", a[0]);
    case EM3_OP_RSQRT: return LLVMBuildFDiv(b, cg_f32(cg, 1), cg_intrinsic1(cg, "llvm.sqrt", a[0]), "");
    case EM3_OP_ABS:
        return fl ? cg_intrinsic1(cg, "llvm.fabs", a[0])
                  : LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, a[0], LLVMConstInt(cg->i32, 0, 0), ""),
                                    LLVMBuildNeg(b, a[0], ""), a[0], "");
    case EM3_OP_TANH: return cg_tanh(cg, a[0]);
    case EM3_OP_SIGMOID: return cg_sigmoid(cg, a[0]);
    case EM3_OP_RELU: return fmax0(cg, a[0]);
    case EM3_OP_GELU: /* 0.5x(1 + tanh u) as x·σ(2u): 1 + tanh u cancels for x below about −3 */
        return LLVMBuildFMul(b, a[0], cg_sigmoid(cg, LLVMBuildFMul(b, cg_f32(cg, 2), gelu_arg(cg, a[0]), "")), "");
    case EM3_OP_SOFTPLUS: return plus_log1p_exp(cg, fmax0(cg, a[0]), a[0]);
    case EM3_OP_CAST: {
        em3_dtype to = (em3_dtype)em3_node_i(n, "to");
        if (to == in_dt[0]) return a[0];
        if (to == EM3_DTYPE_F32) return LLVMBuildSIToFP(b, a[0], cg->f32, "");
        LLVMTypeRef ft = LLVMFunctionType(cg->i32, &cg->f32, 1, 0);
        return LLVMBuildCall2(b, ft, cg_extern(cg, "llvm.fptosi.sat.i32.f32", ft), (LLVMValueRef *)a, 1, "");
    }
    case EM3_OP_STOP_GRADIENT:
    case EM3_OP_DROPOUT: /* only dropout_train drops */
    case EM3_OP_BROADCAST: return a[0];
    case EM3_OP_ADD: return fl ? LLVMBuildFAdd(b, a[0], a[1], "") : LLVMBuildAdd(b, a[0], a[1], "");
    case EM3_OP_SUB: return fl ? LLVMBuildFSub(b, a[0], a[1], "") : LLVMBuildSub(b, a[0], a[1], "");
    case EM3_OP_MUL: return fl ? LLVMBuildFMul(b, a[0], a[1], "") : LLVMBuildMul(b, a[0], a[1], "");
    case EM3_OP_DIV: return LLVMBuildFDiv(b, a[0], a[1], "");
    case EM3_OP_MAXIMUM: return pick(cg, true, a[0], a[1], fl);
    case EM3_OP_MINIMUM: return pick(cg, false, a[0], a[1], fl);
    case EM3_OP_EQ:
    case EM3_OP_NE:
    case EM3_OP_LT:
    case EM3_OP_LE:
    case EM3_OP_GT:
    case EM3_OP_GE: return compare(cg, n->op, a[0], a[1], fl);
    case EM3_OP_BCE_LOGITS: /* max(x,0) - x*y + log1p(exp(-|x|)) */
        return plus_log1p_exp(cg, LLVMBuildFSub(b, fmax0(cg, a[0]), LLVMBuildFMul(b, a[0], a[1], ""), ""), a[0]);
    case EM3_OP_WHERE: /* the condition may be f32 or i32 */
        return LLVMBuildSelect(b, fl ? fcmp(cg, LLVMRealUNE, a[0], cg_f32(cg, 0))
                                     : LLVMBuildICmp(b, LLVMIntNE, a[0], LLVMConstInt(cg->i32, 0, 0), ""),
                               a[1], a[2], "");
    case EM3_OP_GELU_GRAD: { /* dy · (0.5(1+t) + 0.5x(1−t²)c(1+3·0.044715x²)) */
        LLVMValueRef x = a[0], t = cg_tanh(cg, gelu_arg(cg, x));
        LLVMValueRef x2 = LLVMBuildFMul(b, x, x, "");
        LLVMValueRef inner = LLVMBuildFMul(b, cg_f32(cg, 0.7978845608028654),
                                           LLVMBuildFAdd(b, cg_f32(cg, 1), LLVMBuildFMul(b, cg_f32(cg, 3 * 0.044715), x2, ""), ""), "");
        LLVMValueRef sech2 = LLVMBuildFSub(b, cg_f32(cg, 1), LLVMBuildFMul(b, t, t, ""), "");
        LLVMValueRef d = LLVMBuildFAdd(b, LLVMBuildFMul(b, cg_f32(cg, 0.5), LLVMBuildFAdd(b, cg_f32(cg, 1), t, ""), ""),
                                       LLVMBuildFMul(b, LLVMBuildFMul(b, cg_f32(cg, 0.5), x, ""),
                                                     LLVMBuildFMul(b, sech2, inner, ""), ""), "");
        return LLVMBuildFMul(b, a[1], d, "");
    }
    default: EM3_UNREACHABLE("cg_scalar has no formula for %s", em3_op_name(n->op));
    }
}

/* ---- kernels ------------------------------------------------------------------------------- */

typedef struct {
    const em3_node *n;
    int n_in;
    em3_dtype out_dt, in_dt[4];
} ew_ctx;

static void ew_body(em3_cg *cg, void *vctx, LLVMValueRef *off) {
    ew_ctx *c = vctx;
    LLVMValueRef a[4];
    for (int k = 0; k < c->n_in; k++) a[k] = cg_load(cg, c->in_dt[k], cg_kparam(cg, k + 1), off[k + 1]);
    LLVMValueRef v = cg_scalar(cg, c->n, c->in_dt, a);
    cg_store(cg, c->out_dt, cg_kparam(cg, 0), off[0], v);
}

void cg_emit_elementwise(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    ew_ctx c = {n, n->n_in, n->type.dtype, {0}};
    int vals[5] = {id};
    const em3_type *types[5] = {&n->type};
    EM3_ASSERT(n->n_in <= 3, "elementwise %s with %d operands", em3_op_name(n->op), n->n_in);
    for (int k = 0; k < n->n_in; k++) {
        vals[k + 1] = n->in[k];
        types[k + 1] = &cg->f->node[n->in[k]].type;
        c.in_dt[k] = types[k + 1]->dtype;
    }
    cg_kernel_begin(cg, id, em3_op_name(n->op), n->n_in + 1);
    cg_walk(cg, &n->type, types, NULL, n->n_in + 1, ew_body, &c);
    cg_kernel_end(cg, vals, n->n_in + 1);
}

typedef struct {
    em3_dtype dt;
    LLVMValueRef v;
} fill_ctx;

static void fill_body(em3_cg *cg, void *vctx, LLVMValueRef *off) {
    fill_ctx *c = vctx;
    cg_store(cg, c->dt, cg_kparam(cg, 0), off[0], c->v);
}

void cg_emit_const(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    double v = em3_node_f(n, "value");
    cg_kernel_begin(cg, id, "const", 1);
    fill_ctx c = {n->type.dtype, n->type.dtype == EM3_DTYPE_F32 ? cg_f32(cg, v)
                                                               : LLVMConstInt(cg->i32, (unsigned long long)(int64_t)v, 1)};
    const em3_type *t = &n->type;
    cg_walk(cg, t, &t, NULL, 1, fill_body, &c);
    cg_kernel_end(cg, &id, 1);
}

static void copy_body(em3_cg *cg, void *vctx, LLVMValueRef *off) {
    em3_dtype dt = *(em3_dtype *)vctx;
    cg_store(cg, dt, cg_kparam(cg, 0), off[0], cg_load(cg, dt, cg_kparam(cg, 1), off[1]));
}

void cg_emit_transpose(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    em3_dtype dt = n->type.dtype;
    const em3_type *types[2] = {&n->type, &cg->f->node[n->in[0]].type};
    const int64_t *perms[2] = {NULL, em3_node_list(n, "perm", NULL)};
    int vals[2] = {id, n->in[0]};
    cg_kernel_begin(cg, id, "transpose", 2);
    cg_walk(cg, &n->type, types, perms, 2, copy_body, &dt);
    cg_kernel_end(cg, vals, 2);
}

/* ---- fused elementwise programs -------------------------------------------------------------- */

typedef struct {
    em3_program p;
    em3_node ins[EM3_PROGRAM_MAX];
    em3_dtype dt[EM3_PROGRAM_OPERANDS];
    int n_in;
} fused_ctx;

static void fused_body(em3_cg *cg, void *vctx, LLVMValueRef *off) {
    fused_ctx *c = vctx;
    LLVMValueRef operand[EM3_PROGRAM_OPERANDS], v[EM3_PROGRAM_MAX];
    for (int k = 0; k < c->n_in; k++) operand[k] = cg_load(cg, c->dt[k], cg_kparam(cg, k + 1), off[k + 1]);
    for (int i = 0; i < c->p.n; i++) {
        const em3_pinstr *in = &c->p.ins[i];
        LLVMValueRef a[3];
        em3_dtype adt[3];
        for (int k = 0; k < in->n_args; k++) {
            const em3_parg *g = &in->arg[k];
            adt[k] = em3_program_arg_dtype(&c->p, in, k, c->dt);
            a[k] = g->kind == EM3_ARG_OPERAND ? operand[g->index]
                   : g->kind == EM3_ARG_RESULT ? v[g->index]
                   : adt[k] == EM3_DTYPE_F32 ? cg_f32(cg, g->value)
                                             : LLVMConstInt(cg->i32, (unsigned long long)(int64_t)g->value, 1);
        }
        v[i] = cg_scalar(cg, &c->ins[i], adt, a);
    }
    cg_store(cg, c->p.ins[c->p.n - 1].dtype, cg_kparam(cg, 0), off[0], v[c->p.n - 1]);
}

void cg_emit_fused(em3_cg *cg, int id) {
    const em3_node *n = &cg->f->node[id];
    fused_ctx c = {.n_in = n->n_in};
    char why[256];
    bool ok = em3_program_parse(em3_node_s(n, "program"), &c.p, why, sizeof why);
    int vals[EM3_PROGRAM_OPERANDS + 1] = {id};
    const em3_type *types[EM3_PROGRAM_OPERANDS + 1] = {&n->type};
    for (int k = 0; k < n->n_in; k++) {
        vals[k + 1] = n->in[k];
        types[k + 1] = &cg->f->node[n->in[k]].type;
        c.dt[k] = types[k + 1]->dtype;
    }
    EM3_ASSERT(ok && em3_program_check(&c.p, c.dt, n->n_in, why, sizeof why), "fused %%%d: %s", id, why);
    for (int i = 0; i < c.p.n; i++) c.ins[i] = em3_program_node(&c.p.ins[i]);
    cg_kernel_begin(cg, id, "fused", n->n_in + 1);
    cg_walk(cg, &n->type, types, NULL, n->n_in + 1, fused_body, &c);
    cg_kernel_end(cg, vals, n->n_in + 1);
}
