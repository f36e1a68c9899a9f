/* runtime/rt_attention.c — the fused attention kernels compiled code calls, one (batch, head)
 * slice at a time, tiled FlashAttention-style: queries in blocks of BQ rows against keys in
 * blocks of BK, so only a BQ×BK tile of scores exists at once (never the [tq, tk] matrix).
 * The forward pass keeps an online softmax (running max and sum per row) and writes each
 * row's log-sum-exp nowhere: the backward pass recomputes it in a first sweep over the keys
 * and the probabilities in a second, instead of storing them. Keys whose mask is 0 are left
 * out; a query row with no valid key gets zeros, not NaN.
 *
 * The inner loops run over a tile's keys or a row's features with an inline exponential
 * (Cephes' polynomial, as codegen/mathfn.c), so GCC vectorises them; AVX2/FMA clones sit next
 * to the baseline (target_clones), keeping the object portable. */
#include <math.h>
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

/* e^x for x ≤ 0 (arguments here are s − max), flushing below −87 to 0: branch-free so that
 * loops over it vectorise. */
static inline float exp_nonpos(float x) {
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

/* The transposed key tile: on the stack for the head widths models use, else the heap. */
static float *key_tile(float *stack, int64_t dh) {
    if (dh <= 256) return stack;
    float *p = malloc(sizeof(float) * (size_t)(BK * dh));
    if (!p) abort();
    return p;
}

/* Scores of a tile: s[i][j] = scale·q_i·k_j for valid keys, −inf for masked ones; the keys
 * are first transposed so that the inner loop runs over j. */
static inline void tile_scores(const float *q, const float *k, const float *mask, int64_t mrow,
                               int64_t i0, int64_t nq, int64_t j0, int64_t nk, int64_t dh,
                               float scale, float *kt, float s[BQ][BK]) {
    for (int64_t c = 0; c < dh; c++)
        for (int64_t j = 0; j < nk; j++) kt[c * BK + j] = k[(j0 + j) * dh + c];
    for (int64_t i = 0; i < nq; i++) {
        float row[BK] = {0};
        const float *qi = q + (i0 + i) * dh;
        for (int64_t c = 0; c < dh; c++) {
            float qc = qi[c];
            for (int64_t j = 0; j < nk; j++) row[j] += qc * kt[c * BK + j];
        }
        const float *mr = mask ? mask + (i0 + i) * mrow + j0 : NULL;
        for (int64_t j = 0; j < nk; j++) s[i][j] = mr && mr[j] == 0.0f ? -INFINITY : scale * row[j];
    }
}

EM3_CLONES
void em3_rt_attention_fwd(const float *q, const float *k, const float *v, const float *mask,
                          int64_t mask_row_stride, int64_t tq, int64_t tk, int64_t dh, int64_t dv,
                          float scale, float *o) {
    float s[BQ][BK], m[BQ], l[BQ], stack[BK * 256], *kt = key_tile(stack, dh);
    for (int64_t i0 = 0; i0 < tq; i0 += BQ) {
        int64_t nq = tq - i0 < BQ ? tq - i0 : BQ;
        for (int64_t i = 0; i < nq; i++) {
            m[i] = -INFINITY;
            l[i] = 0;
            memset(o + (i0 + i) * dv, 0, sizeof(float) * (size_t)dv);
        }
        for (int64_t j0 = 0; j0 < tk; j0 += BK) {
            int64_t nk = tk - j0 < BK ? tk - j0 : BK;
            tile_scores(q, k, mask, mask_row_stride, i0, nq, j0, nk, dh, scale, kt, s);
            for (int64_t i = 0; i < nq; i++) {
                float bm = -INFINITY;
                for (int64_t j = 0; j < nk; j++) bm = s[i][j] > bm ? s[i][j] : bm;
                if (bm == -INFINITY) continue; /* no valid key of this row in the tile */
                float *oi = o + (i0 + i) * dv;
                if (bm > m[i]) { /* rescale what was accumulated under the old maximum */
                    float r = exp_nonpos(m[i] - bm);
                    l[i] *= r;
                    for (int64_t c = 0; c < dv; c++) oi[c] *= r;
                    m[i] = bm;
                }
                float p[BK], sum = 0;
                for (int64_t j = 0; j < nk; j++) {
                    p[j] = exp_nonpos(s[i][j] - m[i]);
                    sum += p[j];
                }
                l[i] += sum;
                for (int64_t j = 0; j < nk; j++) {
                    const float *vj = v + (j0 + j) * dv;
                    for (int64_t c = 0; c < dv; c++) oi[c] += p[j] * vj[c];
                }
            }
        }
        for (int64_t i = 0; i < nq; i++) {
            float inv = l[i] > 0 ? 1.0f / l[i] : 0.0f, *oi = o + (i0 + i) * dv;
            for (int64_t c = 0; c < dv; c++) oi[c] *= inv;
        }
    }
    if (kt != stack) free(kt);
}

/* Gradients of o with respect to q, k, v given do (FlashAttention-2's backward):
 * p_ij recomputed from the row's max and sum, D_i = do_i·o_i, ds_ij = scale·p_ij (do_i·v_j − D_i),
 * dq_i = Σ_j ds_ij k_j, dk_j = Σ_i ds_ij q_i, dv_j = Σ_i p_ij do_i. dk and dv are accumulated,
 * so the caller zeroes them. */
EM3_CLONES
void em3_rt_attention_bwd(const float *q, const float *k, const float *v, const float *mask,
                          int64_t mask_row_stride, const float *o, const float *dout, int64_t tq,
                          int64_t tk, int64_t dh, int64_t dv, float scale, float *dq, float *dk,
                          float *dvv) {
    float s[BQ][BK], m[BQ], l[BQ], D[BQ], stack[BK * 256], *kt = key_tile(stack, dh);
    for (int64_t i0 = 0; i0 < tq; i0 += BQ) {
        int64_t nq = tq - i0 < BQ ? tq - i0 : BQ;
        for (int64_t i = 0; i < nq; i++) {
            m[i] = -INFINITY;
            l[i] = 0;
            D[i] = 0;
            for (int64_t c = 0; c < dv; c++) D[i] += dout[(i0 + i) * dv + c] * o[(i0 + i) * dv + c];
            memset(dq + (i0 + i) * dh, 0, sizeof(float) * (size_t)dh);
        }
        for (int pass = 0; pass < 2; pass++) /* 0: each row's max and sum; 1: the gradients */
            for (int64_t j0 = 0; j0 < tk; j0 += BK) {
                int64_t nk = tk - j0 < BK ? tk - j0 : BK;
                tile_scores(q, k, mask, mask_row_stride, i0, nq, j0, nk, dh, scale, kt, s);
                for (int64_t i = 0; i < nq; i++) {
                    if (pass == 0) {
                        float bm = -INFINITY;
                        for (int64_t j = 0; j < nk; j++) bm = s[i][j] > bm ? s[i][j] : bm;
                        if (bm == -INFINITY) continue;
                        if (bm > m[i]) {
                            l[i] *= exp_nonpos(m[i] - bm);
                            m[i] = bm;
                        }
                        float sum = 0;
                        for (int64_t j = 0; j < nk; j++) sum += exp_nonpos(s[i][j] - m[i]);
                        l[i] += sum;
                        continue;
                    }
                    if (m[i] == -INFINITY) continue; /* all keys masked: o was 0, so are its gradients */
                    const float *qi = q + (i0 + i) * dh, *doi = dout + (i0 + i) * dv;
                    float *dqi = dq + (i0 + i) * dh, inv = 1.0f / l[i];
                    for (int64_t j = 0; j < nk; j++) {
                        if (s[i][j] == -INFINITY) continue;
                        const float *vj = v + (j0 + j) * dv, *kj = k + (j0 + j) * dh;
                        float p = exp_nonpos(s[i][j] - m[i]) * inv, dpv = 0;
                        for (int64_t c = 0; c < dv; c++) dpv += doi[c] * vj[c];
                        float ds = p * (dpv - D[i]) * scale;
                        float *dkj = dk + (j0 + j) * dh, *dvj = dvv + (j0 + j) * dv;
                        for (int64_t c = 0; c < dv; c++) dvj[c] += p * doi[c];
                        for (int64_t c = 0; c < dh; c++) {
                            dqi[c] += ds * kj[c];
                            dkj[c] += ds * qi[c];
                        }
                    }
                }
            }
    }
    if (kt != stack) free(kt);
}
