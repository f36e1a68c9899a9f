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
 * values, and their transposes for dk and dv. AVX2/FMA clones sit next to the baseline
 * (target_clones), keeping the object portable. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "abi.h"

#define BQ 32
#define BK 64

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define EM3_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define EM3_CLONES
#endif
#define INLINE static inline __attribute__((always_inline))

/* Eight floats; the baseline clone splits each operation into two SSE ones. No function takes
 * or returns one by value: that ABI would depend on AVX. */
typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

/* v ← the first n ≤ 8 floats at p, the rest zero; n is a constant 8 on every hot path. */
INLINE void load8(v8 *v, const float *p, int64_t n) {
    *v = (v8){0};
    memcpy(v, p, sizeof(float) * (size_t)n);
}

/* e^x for x ≤ 0 (arguments here are s − max), flushing below −87 to 0: branch-free so that
 * loops over it vectorise (Cephes' polynomial, as codegen/mathfn.c). */
INLINE float exp_nonpos(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        int32_t i;
        float f;
    } s = {.i = ((int32_t)n + 127) << 23};
    return x <= -87.0f ? 0.0f : p * s.f;
}

/* ---- the micro-kernel --------------------------------------------------------------------- */

/* C[r][c] (+)= Σ_t A[r·ar + t·at] · B[t·ldb + c] for R rows and NV·8 columns, the last vector
 * holding `last` ≤ 8 of them; the accumulators stay in registers across t. */
INLINE void mm_tile(int R, int NV, int64_t last, int64_t nt, const float *a, int64_t ar, int64_t at,
                    const float *b, int64_t ldb, float *c, int64_t ldc, bool add) {
    v8 acc[4][2] = {{{0}}};
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

/* ---- rows of scores ----------------------------------------------------------------------- */

/* Rows 0 .. n of x [n, w] into t[c·ld + j], zero up to column ld (a multiple of 8). */
INLINE void transpose(const float *x, int64_t n, int64_t w, int64_t ld, float *t) {
    for (int64_t c = 0; c < w; c++) {
        for (int64_t j = 0; j < n; j++) t[c * ld + j] = x[j * w + c];
        for (int64_t j = n; j < ld; j++) t[c * ld + j] = 0;
    }
}

/* Scales a row of n8 (a multiple of 8) raw scores, of which the first n are keys, masks the
 * rest and the keys whose mask is 0 to −inf, and returns its maximum. */
INLINE float scale_mask_max(float *s, int64_t n, int64_t n8, const float *mr, float scale) {
    for (int64_t j = 0; j < n; j++) s[j] = mr && mr[j] == 0.0f ? -INFINITY : scale * s[j];
    for (int64_t j = n; j < n8; j++) s[j] = -INFINITY;
    v8 m, x;
    load8(&m, s, 8);
    for (int64_t j = 8; j < n8; j += 8) {
        load8(&x, s + j, 8);
        v8i gt = x > m;
        m = (v8)(((v8i)x & gt) | ((v8i)m & ~gt));
    }
    float r = m[0];
    for (int u = 1; u < 8; u++) r = m[u] > r ? m[u] : r;
    return r;
}

/* s ← e^(s − m) over n8 columns (a multiple of 8); returns their sum. */
INLINE float exp_sum(float *s, int64_t n8, float m) {
    for (int64_t j = 0; j < n8; j++) s[j] = exp_nonpos(s[j] - m);
    v8 sum = {0}, x;
    for (int64_t j = 0; j < n8; j += 8) {
        load8(&x, s + j, 8);
        sum += x;
    }
    float r = 0;
    for (int u = 0; u < 8; u++) r += sum[u];
    return r;
}

static int64_t round8(int64_t n) { return (n + 7) & ~(int64_t)7; }

static float *scratch(int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)n);
    if (!p) abort();
    return p;
}

/* ---- forward ------------------------------------------------------------------------------ */

INLINE void fwd_slice(const float *q, const float *k, const float *v, const float *mask, int64_t mrow,
                      int64_t tq, int64_t tk, int64_t dh, int64_t dv, float scale, float *o) {
    int64_t ld = round8(tk);
    float *kt = scratch(dh * ld + BQ * BK), *s = kt + dh * ld, m[BQ], l[BQ];
    transpose(k, tk, dh, ld, kt);
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
                const float *mr = mask ? mask + (i0 + i) * mrow + j0 : NULL;
                float bm = scale_mask_max(si, nk, nk8, mr, scale);
                if (bm == -INFINITY) { /* no valid key of this row in the block */
                    memset(si, 0, sizeof(float) * (size_t)nk8);
                    continue;
                }
                if (bm > m[i]) { /* rescale what was accumulated under the old maximum */
                    float r = exp_nonpos(m[i] - bm);
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
    free(kt);
}

EM3_CLONES
void em3_rt_attention_fwd(const float *q, const float *k, const float *v, const float *mask,
                          int64_t mask_row_stride, int64_t tq, int64_t tk, int64_t dh, int64_t dv,
                          float scale, float *o) {
    fwd_slice(q, k, v, mask, mask_row_stride, tq, tk, dh, dv, scale, o);
}

/* ---- backward ----------------------------------------------------------------------------- */

/* Gradients of o with respect to q, k, v given do (FlashAttention-2's formulas): per block of
 * query rows, p_ij = e^(s_ij − m_i)/l_i from the strip, D_i = do_i·o_i,
 * ds_ij = scale·p_ij (do_i·v_j − D_i), dq_i = Σ_j ds_ij k_j, dk_j += Σ_i ds_ij q_i,
 * dv_j += Σ_i p_ij do_i. dq is filled; dk and dv are accumulated, so the caller zeroes them. */
INLINE void bwd_slice(const float *q, const float *k, const float *v, const float *mask, int64_t mrow,
                      const float *o, const float *dout, int64_t tq, int64_t tk, int64_t dh, float scale,
                      float *dq, float *dk, float *dvv) {
    int64_t ld = round8(tk);
    float *kt = scratch(2 * dh * ld + 2 * BQ * ld), *vt = kt + dh * ld, *p = vt + dh * ld, *ds = p + BQ * ld;
    transpose(k, tk, dh, ld, kt);
    transpose(v, tk, dh, ld, vt);
    for (int64_t i0 = 0; i0 < tq; i0 += BQ) {
        int64_t nq = tq - i0 < BQ ? tq - i0 : BQ;
        const float *qb = q + i0 * dh, *dob = dout + i0 * dh;
        mm(nq, ld, dh, qb, dh, 1, kt, ld, p, ld, false);
        mm(nq, ld, dh, dob, dh, 1, vt, ld, ds, ld, false);
        for (int64_t i = 0; i < nq; i++) {
            float *pi = p + i * ld, *dsi = ds + i * ld;
            float mx = scale_mask_max(pi, tk, ld, mask ? mask + (i0 + i) * mrow : NULL, scale), inv = 0, D = 0;
            if (mx == -INFINITY) { /* all keys masked: o was 0, so are its gradients */
                memset(pi, 0, sizeof(float) * (size_t)ld);
            } else {
                inv = 1.0f / exp_sum(pi, ld, mx);
                for (int64_t c = 0; c < dh; c++) D += dob[i * dh + c] * o[(i0 + i) * dh + c];
            }
            for (int64_t j = 0; j < ld; j++) {
                pi[j] *= inv;
                dsi[j] = scale * pi[j] * (dsi[j] - D);
            }
        }
        mm(nq, dh, tk, ds, ld, 1, k, dh, dq + i0 * dh, dh, false);
        mm(tk, dh, nq, ds, 1, ld, qb, dh, dk, dh, true);
        mm(tk, dh, nq, p, 1, ld, dob, dh, dvv, dh, true);
    }
    free(kt);
}

EM3_CLONES
void em3_rt_attention_bwd(const float *q, const float *k, const float *v, const float *mask,
                          int64_t mask_row_stride, const float *o, const float *dout, int64_t tq,
                          int64_t tk, int64_t dh, int64_t dv, float scale, float *dq, float *dk,
                          float *dvv) {
    (void)dv; /* attention_grad's shape rule makes it dh */
    bwd_slice(q, k, v, mask, mask_row_stride, o, dout, tq, tk, dh, scale, dq, dk, dvv);
}
