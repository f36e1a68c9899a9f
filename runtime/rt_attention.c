/* runtime/rt_attention.c — the fused attention kernels compiled code calls, one (batch, head)
 * slice at a time, streaming FlashAttention-style so that memory grows linearly with the
 * sequence: the [tq, tk] scores never exist whole.
 *
 * Forward: queries in blocks of BQ rows against keys in blocks of BK, an online softmax
 * (running max m and sum l per row, the output rescaled when m grows). Backward: per block of
 * BQ query rows, the strip of their scores against all keys (BQ × tk floats) is recomputed
 * once, its exact softmax taken in place, and dq, dk, dv accumulated from it — one q·kᵀ and one
 * exponential per score, where a sweep for the row statistics and a second for the gradients
 * would need two of each. Keys whose mask is 0 are left out; a query row with no valid key
 * gets zeros (and zero gradients), not NaN.
 *
 * Every product is one register-tiled micro-kernel (4 rows × 16 columns of accumulators in
 * GCC vector registers): scores against keys transposed once per slice, probabilities times
 * values, and their transposes for dk and dv. Rows of scores are padded to a multiple of 8
 * keys and the mask becomes a bias row (0 or −inf, padding −inf), so that the softmax's loops
 * run over whole vectors. Feature widths that are not a multiple of 8 work, through slower
 * partial loads. AVX2/FMA clones sit next to the baseline (target_clones), keeping the object
 * portable; bench/fusion.c and docs/performance.md measure it against the unfused graph. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "abi.h"

#define BQ 32
#define BK 64

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EM3_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define EM3_CLONES
#endif
#define INLINE static inline __attribute__((always_inline))

/* Eight floats (or int32 lane masks, or their bits); the baseline clone splits each operation
 * into two SSE ones. No function takes or returns one by value: that ABI would depend on AVX. */
typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));

/* v ← the first n ≤ 8 floats at p, the rest zero. A whole vector is one load; a part goes
 * through memory, which stalls the load after it: only row and column tails take it. */
INLINE void load8(v8 *v, const float *p, int64_t n) {
    if (n == 8) {
        memcpy(v, p, sizeof *v);
        return;
    }
    *v = (v8){0};
    memcpy(v, p, sizeof(float) * (size_t)n);
}

/* x ← where mask, a, else b; m ← the lanewise maximum of m and x. */
INLINE void select8(v8 *x, const v8i *mask, const v8 *a, const v8 *b) {
    *x = (v8)(((v8i)*a & *mask) | ((v8i)*b & ~*mask));
}

INLINE void max8(v8 *m, const v8 *x) {
    v8i gt = *x > *m;
    select8(m, &gt, x, m);
}

/* x ← 2^x lanewise for x ≤ 0 (arguments here are scores in base 2 minus their maximum), 0 at
 * or below −126 (so for −inf too): Cephes' exp2f polynomial for 2^f, f = x − n ∈ [−½, ½].
 * t = x + 1.5·2²³ rounds n = round(x) into t's low mantissa bits, so t's bits shifted by 23
 * are n already in the exponent field; lanes at or below −126 may compute garbage (NaN for
 * −inf), which the final mask clears. */
INLINE void exp2_8(v8 *x) {
    v8 t = *x + 12582912.0f, f = *x - (t - 12582912.0f);
    v8 p = f * 1.535336188319500e-4f + 1.339887440266574e-3f;
    p = p * f + 9.618437357674640e-3f;
    p = p * f + 5.550332471162809e-2f;
    p = p * f + 2.402264791363012e-1f;
    p = p * f + 6.931472028550421e-1f;
    p = p * f + 1.0f;
    *x = (v8)(((v8u)p + ((v8u)t << 23)) & (v8u)(*x > -126.0f));
}

/* The sum and the maximum of v's lanes, halving the vector three times. */
INLINE float hsum8(const v8 *v) {
    v8 x = *v + __builtin_shufflevector(*v, *v, 4, 5, 6, 7, 0, 1, 2, 3);
    x += __builtin_shufflevector(x, x, 2, 3, 0, 1, 6, 7, 4, 5);
    x += __builtin_shufflevector(x, x, 1, 0, 3, 2, 5, 4, 7, 6);
    return x[0];
}

INLINE float hmax8(const v8 *v) {
    v8 x = *v, y = __builtin_shufflevector(x, x, 4, 5, 6, 7, 0, 1, 2, 3);
    max8(&x, &y);
    y = __builtin_shufflevector(x, x, 2, 3, 0, 1, 6, 7, 4, 5);
    max8(&x, &y);
    y = __builtin_shufflevector(x, x, 1, 0, 3, 2, 5, 4, 7, 6);
    max8(&x, &y);
    return x[0];
}

/* ---- the micro-kernel --------------------------------------------------------------------- */

/* C[r][c] (+)= Σ_t A[r·ar + t·at] · B[t·ldb + c] for R rows and NV·8 columns, the last vector
 * holding `last` ≤ 8 of them; the accumulators stay in registers across t. */
INLINE void mm_tile(int R, int NV, int64_t last, int64_t nt, const float *a, int64_t ar, int64_t at,
                    const float *b, int64_t ldb, float *c, int64_t ldc, bool add) {
    v8 acc[4][2] = {{{0}}};
#pragma GCC unroll 2 /* more, for short constant trip counts, only crowds the µop cache (measured) */
    for (int64_t t = 0; t < nt; t++) {
        v8 bv[2];
        for (int u = 0; u < NV; u++) load8(&bv[u], b + t * ldb + 8 * u, u == NV - 1 ? last : 8);
        for (int r = 0; r < R; r++) {
            float x = a[r * ar + t * at];
            for (int u = 0; u < NV; u++) acc[r][u] += x * bv[u];
        }
    }
    for (int r = 0; r < R; r++)
        for (int u = 0; u < NV; u++) {
            int64_t n = u == NV - 1 ? last : 8;
            float *p = c + r * ldc + 8 * u;
            v8 x = acc[r][u], y;
            if (add) {
                load8(&y, p, n);
                x += y;
            }
            memcpy(p, &x, sizeof(float) * (size_t)n);
        }
}

/* The R rows' columns 0 .. nc in tiles of 16, then 8, then the rest. */
INLINE void mm_rows(int R, int64_t nc, int64_t nt, const float *a, int64_t ar, int64_t at, const float *b,
                    int64_t ldb, float *c, int64_t ldc, bool add) {
    int64_t c0 = 0;
    for (; c0 + 16 <= nc; c0 += 16) mm_tile(R, 2, 8, nt, a, ar, at, b + c0, ldb, c + c0, ldc, add);
    if (c0 + 8 <= nc) {
        mm_tile(R, 1, 8, nt, a, ar, at, b + c0, ldb, c + c0, ldc, add);
        c0 += 8;
    }
    if (c0 < nc) mm_tile(R, 1, nc - c0, nt, a, ar, at, b + c0, ldb, c + c0, ldc, add);
}

/* C (+)= A·B for nr rows and nc columns over nt terms, A read through strides (ar, at) so that
 * one kernel serves both A and Aᵀ. */
INLINE void mm(int64_t nr, int64_t nc, int64_t nt, const float *a, int64_t ar, int64_t at, const float *b,
               int64_t ldb, float *c, int64_t ldc, bool add) {
    int64_t r0 = 0;
    for (; r0 + 4 <= nr; r0 += 4) mm_rows(4, nc, nt, a + r0 * ar, ar, at, b, ldb, c + r0 * ldc, ldc, add);
    for (; r0 < nr; r0++) mm_rows(1, nc, nt, a + r0 * ar, ar, at, b, ldb, c + r0 * ldc, ldc, add);
}

/* ---- operands and rows of scores ---------------------------------------------------------- */

/* r ← its transpose, for 8 rows of 8 floats: pairs interleaved, then pairs of pairs, then
 * halves swapped (the unpck/shufps/vperm2f128 sequence). */
INLINE void transpose8(v8 r[8]) {
    v8 t[8], s[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = __builtin_shufflevector(r[2 * i], r[2 * i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[2 * i + 1] = __builtin_shufflevector(r[2 * i], r[2 * i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 2; i++)
        for (int h = 0; h < 2; h++) {
            v8 a = t[4 * i + h], b = t[4 * i + h + 2];
            s[4 * i + 2 * h] = __builtin_shufflevector(a, b, 0, 1, 8, 9, 4, 5, 12, 13);
            s[4 * i + 2 * h + 1] = __builtin_shufflevector(a, b, 2, 3, 10, 11, 6, 7, 14, 15);
        }
    for (int i = 0; i < 4; i++) {
        r[i] = __builtin_shufflevector(s[i], s[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        r[i + 4] = __builtin_shufflevector(s[i], s[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

/* The block of x [.., w] at rows j0 .. j0 + nr and columns c0 .. c0 + nc (each ≤ 8; rows
 * beyond nr read as zeros) transposed into t[c·ld + j]. Whole blocks (nr = nc = 8, constant)
 * stay in registers; edge blocks go through memory. */
INLINE void transpose_block(const float *x, int64_t w, int64_t j0, int64_t nr, int64_t c0, int64_t nc,
                            int64_t ld, float *t) {
    v8 r[8];
    for (int64_t j = 0; j < 8; j++) {
        if (j < nr)
            load8(&r[j], x + (j0 + j) * w + c0, nc);
        else
            r[j] = (v8){0};
    }
    transpose8(r);
    for (int64_t c = 0; c < nc; c++) memcpy(t + (c0 + c) * ld + j0, &r[c], sizeof r[c]);
}

/* x [n, w] transposed into t[c·ld + j] in blocks of 8 × 8, zero in columns n .. ld (ld a
 * multiple of 8). */
INLINE void transpose(const float *x, int64_t n, int64_t w, int64_t ld, float *t) {
    for (int64_t j0 = 0; j0 < ld; j0 += 8)
        for (int64_t c0 = 0; c0 < w; c0 += 8) {
            int64_t nr = n - j0 < 8 ? n - j0 : 8, nc = w - c0 < 8 ? w - c0 : 8;
            if (nr == 8 && nc == 8)
                transpose_block(x, w, j0, 8, c0, 8, ld, t);
            else
                transpose_block(x, w, j0, nr, c0, nc, ld, t);
        }
}

/* a·b over n floats. */
INLINE float dot(const float *a, const float *b, int64_t n) {
    v8 acc = {0}, x, y;
    for (int64_t c = 0; c < n; c += 8) {
        load8(&x, a + c, n - c < 8 ? n - c : 8);
        load8(&y, b + c, n - c < 8 ? n - c : 8);
        acc += x * y;
    }
    return hsum8(&acc);
}

/* bias[j] ← 0 for the keys j < n whose mask (mr, or none) is non-zero, −inf for the others and
 * for the padding up to n8, a multiple of 8. */
INLINE void key_bias(const float *mr, int64_t n, int64_t n8, float *bias) {
    for (int64_t j = 0; j < n; j++) bias[j] = mr && mr[j] == 0.0f ? -INFINITY : 0.0f;
    for (int64_t j = n; j < n8; j++) bias[j] = -INFINITY;
}

/* s ← scale·s + bias over n8 columns (a multiple of 8); returns the row's maximum. */
INLINE float scale_bias_max(float *s, const float *bias, int64_t n8, float scale) {
    v8 m = {0}, x, b;
    m -= INFINITY;
    for (int64_t j = 0; j < n8; j += 8) {
        load8(&x, s + j, 8);
        load8(&b, bias + j, 8);
        x = x * scale + b;
        memcpy(s + j, &x, sizeof x);
        max8(&m, &x);
    }
    return hmax8(&m);
}

/* s ← 2^(s − m) over n8 columns (a multiple of 8); returns their sum. */
INLINE float exp_sum(float *s, int64_t n8, float m) {
    v8 sum = {0}, x;
    for (int64_t j = 0; j < n8; j += 8) {
        load8(&x, s + j, 8);
        x -= m;
        exp2_8(&x);
        memcpy(s + j, &x, sizeof x);
        sum += x;
    }
    return hsum8(&sum);
}

static int64_t round8(int64_t n) { return (n + 7) & ~(int64_t)7; }

/* Room for n floats: `stack` (STACK_FLOATS) when they fit — short sequences, whose slices take
 * about a microsecond, of which malloc and free were 3-9% (L = 20 to 50) — else the heap. */
#define STACK_FLOATS 4096

static float *scratch(int64_t n, float *stack) {
    if (n <= STACK_FLOATS) return stack;
    float *p = malloc(sizeof(float) * (size_t)n);
    if (!p) abort();
    return p;
}

/* ---- forward ------------------------------------------------------------------------------ */

/* o = softmax(scale·q kᵀ over the valid keys) v, with mask rows mrow apart (0: one row for every
 * query); see abi.h. */
EM3_CLONES
void em3_rt_attention_fwd(const float *q, const float *k, const float *v, const float *mask, int64_t mrow,
                          int64_t tq, int64_t tk, int64_t dh, int64_t dv, float scale, float *o) {
    int64_t ld = round8(tk);
    float stack[STACK_FLOATS], *kt = scratch(dh * ld + BQ * BK + ld, stack), *s = kt + dh * ld;
    float *bias = s + BQ * BK, m[BQ], l[BQ], scale2 = scale * (float)M_LOG2E; /* base 2: e^s = 2^(s·log₂e) */
    transpose(k, tk, dh, ld, kt);
    if (!mrow) key_bias(mask, tk, ld, bias); /* one mask row (or none) for every query */
    for (int64_t i0 = 0; i0 < tq; i0 += BQ) {
        int64_t nq = tq - i0 < BQ ? tq - i0 : BQ;
        float *ob = o + i0 * dv;
        memset(ob, 0, sizeof(float) * (size_t)(nq * dv));
        for (int64_t i = 0; i < nq; i++) m[i] = -INFINITY, l[i] = 0;
        for (int64_t j0 = 0; j0 < tk; j0 += BK) {
            int64_t nk = tk - j0 < BK ? tk - j0 : BK, nk8 = round8(nk);
            mm(nq, nk8, dh, q + i0 * dh, dh, 1, kt + j0, ld, s, BK, false);
            for (int64_t i = 0; i < nq; i++) {
                float *si = s + i * BK;
                if (mrow) key_bias(mask + (i0 + i) * mrow + j0, nk, nk8, bias + j0);
                float bm = scale_bias_max(si, bias + j0, nk8, scale2);
                if (bm == -INFINITY) { /* no valid key of this row in the block */
                    memset(si, 0, sizeof(float) * (size_t)nk8);
                    continue;
                }
                if (bm > m[i]) { /* rescale what was accumulated under the old maximum */
                    v8 e = {0};
                    e += m[i] - bm;
                    exp2_8(&e);
                    float r = e[0];
                    l[i] *= r;
                    for (int64_t c = 0; c < dv; c++) ob[i * dv + c] *= r;
                    m[i] = bm;
                }
                l[i] += exp_sum(si, nk8, m[i]);
            }
            mm(nq, dv, nk, s, BK, 1, v + j0 * dv, dv, ob, dv, true);
        }
        for (int64_t i = 0; i < nq; i++) {
            float inv = l[i] > 0 ? 1.0f / l[i] : 0.0f;
            for (int64_t c = 0; c < dv; c++) ob[i * dv + c] *= inv;
        }
    }
    if (kt != stack) free(kt);
}

/* ---- backward ----------------------------------------------------------------------------- */

/* Gradients of o with respect to q, k, v given do (FlashAttention-2's formulas): per block of
 * query rows, p_ij = e^(s_ij − m_i)/l_i from the strip, D_i = do_i·o_i,
 * ds_ij = scale·p_ij (do_i·v_j − D_i), dq_i = Σ_j ds_ij k_j, dk_j += Σ_i ds_ij q_i,
 * dv_j += Σ_i p_ij do_i. dq is filled; dk and dv are accumulated, so the caller zeroes them. */
EM3_CLONES
void em3_rt_attention_bwd(const float *q, const float *k, const float *v, const float *mask, int64_t mrow,
                          const float *o, const float *dout, int64_t tq, int64_t tk, int64_t dh, int64_t dv,
                          float scale, float *dq, float *dk, float *dvv) {
    (void)dv; /* attention_grad's shape rule makes it dh */
    int64_t ld = round8(tk);
    float stack[STACK_FLOATS], *kt = scratch(2 * dh * ld + 2 * BQ * ld + ld, stack), *vt = kt + dh * ld;
    float *p = vt + dh * ld, *ds = p + BQ * ld, *bias = ds + BQ * ld, scale2 = scale * (float)M_LOG2E;
    transpose(k, tk, dh, ld, kt);
    if (!mrow) key_bias(mask, tk, ld, bias);
    transpose(v, tk, dh, ld, vt);
    for (int64_t i0 = 0; i0 < tq; i0 += BQ) {
        int64_t nq = tq - i0 < BQ ? tq - i0 : BQ;
        const float *qb = q + i0 * dh, *dob = dout + i0 * dh;
        mm(nq, ld, dh, qb, dh, 1, kt, ld, p, ld, false);
        mm(nq, ld, dh, dob, dh, 1, vt, ld, ds, ld, false);
        for (int64_t i = 0; i < nq; i++) {
            float *pi = p + i * ld, *dsi = ds + i * ld;
            if (mrow) key_bias(mask + (i0 + i) * mrow, tk, ld, bias);
            float mx = scale_bias_max(pi, bias, ld, scale2), inv = 0, D = 0;
            if (mx == -INFINITY) { /* all keys masked: o was 0, so are its gradients */
                memset(pi, 0, sizeof(float) * (size_t)ld);
            } else {
                inv = 1.0f / exp_sum(pi, ld, mx);
                D = dot(dob + i * dh, o + (i0 + i) * dh, dh);
            }
            for (int64_t j = 0; j < ld; j += 8) {
                v8 x, y;
                load8(&x, pi + j, 8);
                load8(&y, dsi + j, 8);
                x *= inv;
                y = scale * x * (y - D);
                memcpy(pi + j, &x, sizeof x);
                memcpy(dsi + j, &y, sizeof y);
            }
        }
        mm(nq, dh, tk, ds, ld, 1, k, dh, dq + i0 * dh, dh, false);
        mm(tk, dh, nq, ds, 1, ld, qb, dh, dk, dh, true);
        mm(tk, dh, nq, p, 1, ld, dob, dh, dvv, dh, true);
    }
    if (kt != stack) free(kt);
}
