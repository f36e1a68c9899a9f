/* codegen/mathfn.c — exp, log, log1p, tanh and sigmoid for f32 as straight-line LLVM IR
 * (Cephes' minimax polynomials with range reduction), so that loops calling them vectorise:
 * libm calls would stay scalar. Accurate to a few ulp over the whole range; NaN propagates,
 * infinities and zero behave as in C99. tests/unit/test_codegen_math.c checks them against
 * libm over millions of values. */
#include <math.h>
#include <stdio.h>

#include "cg.h"

LLVMValueRef cg_intrinsic1(em3_cg *cg, const char *name, LLVMValueRef x) {
    char full[64];
    snprintf(full, sizeof full, "%s.f32", name);
    LLVMTypeRef ft = LLVMFunctionType(cg->f32, &cg->f32, 1, 0);
    return LLVMBuildCall2(cg->b, ft, cg_extern(cg, full, ft), &x, 1, "");
}

LLVMValueRef cg_intrinsic2(em3_cg *cg, const char *name, LLVMValueRef x, LLVMValueRef y) {
    char full[64];
    snprintf(full, sizeof full, "%s.f32", name);
    LLVMTypeRef p[2] = {cg->f32, cg->f32};
    LLVMTypeRef ft = LLVMFunctionType(cg->f32, p, 2, 0);
    LLVMValueRef a[2] = {x, y};
    return LLVMBuildCall2(cg->b, ft, cg_extern(cg, full, ft), a, 2, "");
}

#define K(v) cg_f32(cg, (v))
#define ADD(x, y) LLVMBuildFAdd(cg->b, (x), (y), "")
#define SUB(x, y) LLVMBuildFSub(cg->b, (x), (y), "")
#define MUL(x, y) LLVMBuildFMul(cg->b, (x), (y), "")
#define DIV(x, y) LLVMBuildFDiv(cg->b, (x), (y), "")
#define SEL(c, x, y) LLVMBuildSelect(cg->b, (c), (x), (y), "")
#define CMP(p, x, y) LLVMBuildFCmp(cg->b, (p), (x), (y), "")

/* c[0] + x(c[1] + x(c[2] + ...)) */
static LLVMValueRef horner(em3_cg *cg, LLVMValueRef x, const double *c, int n) {
    LLVMValueRef y = K(c[n - 1]);
    for (int i = n - 2; i >= 0; i--) y = ADD(MUL(y, x), K(c[i]));
    return y;
}

static LLVMValueRef bits(em3_cg *cg, LLVMValueRef f) { return LLVMBuildBitCast(cg->b, f, cg->i32, ""); }
static LLVMValueRef from_bits(em3_cg *cg, LLVMValueRef i) { return LLVMBuildBitCast(cg->b, i, cg->f32, ""); }
static LLVMValueRef I(em3_cg *cg, int32_t v) { return LLVMConstInt(cg->i32, (unsigned long long)(int64_t)v, 1); }

/* exp(x) = 2^n · e^r with n = round(x / ln 2), r = x − n ln 2 in two parts for accuracy. 2^n
 * is applied as two factors 2^(n/2)·2^(n − n/2), each a normal float, so that results near
 * the overflow threshold (ln FLT_MAX ≈ 88.72) stay finite and tiny ones round once to a
 * subnormal instead of flushing to 0. Beyond the clamp the result is inf or 0 anyway. */
LLVMValueRef cg_exp(em3_cg *cg, LLVMValueRef x) {
    static const double p[] = {1.0, 1.0, 5.0000001201E-1, 1.6666665459E-1, 4.1665795894E-2,
                               8.3334519073E-3, 1.3981999507E-3, 1.9875691500E-4};
    LLVMValueRef xc = SEL(CMP(LLVMRealOGT, x, K(89)), K(89), x);
    xc = SEL(CMP(LLVMRealOLT, xc, K(-104)), K(-104), xc);
    LLVMValueRef n = cg_intrinsic1(cg, "llvm.floor", ADD(MUL(xc, K(1.44269504088896341)), K(0.5)));
    LLVMValueRef r = SUB(SUB(xc, MUL(n, K(0.693359375))), MUL(n, K(-2.12194440e-4)));
    LLVMValueRef y = horner(cg, r, p, 8);
    LLVMValueRef ni = LLVMBuildFPToSI(cg->b, n, cg->i32, "");
    LLVMValueRef n1 = LLVMBuildAShr(cg->b, ni, I(cg, 1), ""), n2 = LLVMBuildSub(cg->b, ni, n1, "");
    LLVMValueRef s1 = from_bits(cg, LLVMBuildShl(cg->b, LLVMBuildAdd(cg->b, n1, I(cg, 127), ""), I(cg, 23), ""));
    LLVMValueRef s2 = from_bits(cg, LLVMBuildShl(cg->b, LLVMBuildAdd(cg->b, n2, I(cg, 127), ""), I(cg, 23), ""));
    return SEL(CMP(LLVMRealUNO, x, x), x, MUL(MUL(y, s1), s2));
}

/* log(x) = e ln 2 + log(m), m in [√½, √2) from the exponent bits; subnormals scaled first. */
LLVMValueRef cg_log(em3_cg *cg, LLVMValueRef x) {
    static const double p[] = {3.3333331174E-1, -2.4999993993E-1, 2.0000714765E-1, -1.6668057665E-1,
                               1.4249322787E-1, -1.2420140846E-1, 1.1676998740E-1, -1.1514610310E-1,
                               7.0376836292E-2};
    LLVMValueRef sub = CMP(LLVMRealOLT, x, K(1.17549435e-38));
    LLVMValueRef xs = SEL(sub, MUL(x, K(8388608.0)), x);
    LLVMValueRef xb = bits(cg, xs);
    LLVMValueRef e = LLVMBuildSub(cg->b, LLVMBuildLShr(cg->b, xb, I(cg, 23), ""), I(cg, 126), "");
    e = SEL(sub, LLVMBuildSub(cg->b, e, I(cg, 23), ""), e);
    LLVMValueRef m = from_bits(cg, LLVMBuildOr(cg->b, LLVMBuildAnd(cg->b, xb, I(cg, 0x007fffff), ""),
                                               I(cg, 0x3f000000), ""));
    LLVMValueRef low = CMP(LLVMRealOLT, m, K(0.707106781186547524));
    e = SEL(low, LLVMBuildSub(cg->b, e, I(cg, 1), ""), e);
    m = SUB(SEL(low, ADD(m, m), m), K(1));
    LLVMValueRef ef = LLVMBuildSIToFP(cg->b, e, cg->f32, "");
    LLVMValueRef z = MUL(m, m);
    LLVMValueRef y = MUL(MUL(horner(cg, m, p, 9), m), z);
    y = ADD(y, MUL(ef, K(-2.12194440e-4)));
    y = SUB(y, MUL(z, K(0.5)));
    LLVMValueRef r = ADD(ADD(m, y), MUL(ef, K(0.693359375)));
    r = SEL(CMP(LLVMRealOEQ, x, K(INFINITY)), K(INFINITY), r);
    r = SEL(CMP(LLVMRealOEQ, x, K(0)), K(-INFINITY), r);
    r = SEL(CMP(LLVMRealOLT, x, K(0)), K(NAN), r);
    return SEL(CMP(LLVMRealUNO, x, x), x, r);
}

/* log1p(u) = log(w)·u/(w − 1) with w = 1 + u: exact cancellation of w's rounding error. */
LLVMValueRef cg_log1p(em3_cg *cg, LLVMValueRef u) {
    LLVMValueRef w = ADD(K(1), u);
    LLVMValueRef d = SUB(w, K(1));
    LLVMValueRef r = DIV(MUL(cg_log(cg, w), u), d);
    r = SEL(CMP(LLVMRealOEQ, d, K(0)), u, r);
    return SEL(CMP(LLVMRealOEQ, w, K(INFINITY)), w, r);
}

/* tanh, odd: a polynomial in |x| below 0.625, 1 − 2/(e^{2|x|} + 1) above, with the sign of x
 * put back last (so that tanh(−0) = −0). */
LLVMValueRef cg_tanh(em3_cg *cg, LLVMValueRef x) {
    static const double p[] = {-3.33332819422E-1, 1.33314422036E-1, -5.37397155531E-2,
                               2.06390887954E-2, -5.70498872745E-3};
    LLVMValueRef ax = cg_intrinsic1(cg, "llvm.fabs", x);
    LLVMValueRef z = MUL(ax, ax);
    LLVMValueRef small = ADD(ax, MUL(MUL(horner(cg, z, p, 5), z), ax));
    LLVMValueRef big = SUB(K(1), DIV(K(2), ADD(cg_exp(cg, ADD(ax, ax)), K(1))));
    return cg_intrinsic2(cg, "llvm.copysign", SEL(CMP(LLVMRealOLT, ax, K(0.625)), small, big), x);
}

/* 1/(1 + e^−x) for x ≥ 0 and e^x/(1 + e^x) below: e^−|x| never overflows, and a large
 * negative x keeps its tiny (subnormal) result instead of 1/inf = 0. */
LLVMValueRef cg_sigmoid(em3_cg *cg, LLVMValueRef x) {
    LLVMValueRef e = cg_exp(cg, LLVMBuildFNeg(cg->b, cg_intrinsic1(cg, "llvm.fabs", x), ""));
    LLVMValueRef r = DIV(K(1), ADD(K(1), e));
    return SEL(CMP(LLVMRealOGE, x, K(0)), r, MUL(e, r));
}
