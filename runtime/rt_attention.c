/* runtime/rt_attention.c — the fused attention kernels compiled code calls, one (batch, head)
 * slice at a time. The forward pass streams over blocks of keys with an online softmax
 * (FlashAttention's recurrence), so the [tq, tk] score matrix is never stored; the backward
 * pass recomputes the probabilities from q and k instead of keeping them. Keys whose mask is
 * 0 are left out; a query row with no valid key gets zeros, not NaN.
 *
 * Built with AVX2/FMA clones next to the baseline (GCC's target_clones), so the dot products
 * vectorise on the machines this runs on while the object stays portable. */
#include <math.h>
#include <string.h>

#include "abi.h"

#define KEY_BLOCK 32

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define EM3_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define EM3_CLONES
#endif

static inline float dot(const float *a, const float *b, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline bool key_valid(const float *mask_row, int64_t j) { return !mask_row || mask_row[j] != 0.0f; }

/* o[i] = Σ_j softmax_j(scale·q_i·k_j over valid j) v_j; also the row's max and sum of
 * exponentials, which the backward pass would otherwise recompute. */
EM3_CLONES
void em3_rt_attention_fwd(const float *q, const float *k, const float *v, const float *mask,
                          int64_t mask_row_stride, int64_t tq, int64_t tk, int64_t dh, int64_t dv,
                          float scale, float *o) {
    float s[KEY_BLOCK];
    for (int64_t i = 0; i < tq; i++) {
        const float *qi = q + i * dh, *mrow = mask ? mask + i * mask_row_stride : NULL;
        float *oi = o + i * dv, m = -INFINITY, l = 0;
        memset(oi, 0, sizeof(float) * (size_t)dv);
        for (int64_t j0 = 0; j0 < tk; j0 += KEY_BLOCK) {
            int64_t nb = tk - j0 < KEY_BLOCK ? tk - j0 : KEY_BLOCK;
            float bm = -INFINITY;
            for (int64_t j = 0; j < nb; j++) {
                s[j] = key_valid(mrow, j0 + j) ? scale * dot(qi, k + (j0 + j) * dh, dh) : -INFINITY;
                bm = s[j] > bm ? s[j] : bm;
            }
            if (bm == -INFINITY) continue; /* no valid key in this block */
            if (bm > m) { /* rescale what was accumulated under the old maximum */
                float r = expf(m - bm);
                l *= r;
                for (int64_t c = 0; c < dv; c++) oi[c] *= r;
                m = bm;
            }
            for (int64_t j = 0; j < nb; j++) {
                if (s[j] == -INFINITY) continue;
                float p = expf(s[j] - m);
                l += p;
                const float *vj = v + (j0 + j) * dv;
                for (int64_t c = 0; c < dv; c++) oi[c] += p * vj[c];
            }
        }
        float inv = l > 0 ? 1.0f / l : 0.0f;
        for (int64_t c = 0; c < dv; c++) oi[c] *= inv;
    }
}

/* Gradients of o with respect to q, k, v given do (FlashAttention-2's backward, row by row):
 * p_ij recomputed, D_i = do_i·o_i, ds_ij = p_ij (do_i·v_j − D_i), dq_i = scale Σ_j ds_ij k_j,
 * dk_j = scale Σ_i ds_ij q_i, dv_j = Σ_i p_ij do_i. dk and dv are accumulated, so the caller
 * zeroes them. */
EM3_CLONES
void em3_rt_attention_bwd(const float *q, const float *k, const float *v, const float *mask,
                          int64_t mask_row_stride, const float *o, const float *dout, int64_t tq,
                          int64_t tk, int64_t dh, int64_t dv, float scale, float *dq, float *dk,
                          float *dvv) {
    for (int64_t i = 0; i < tq; i++) {
        const float *qi = q + i * dh, *mrow = mask ? mask + i * mask_row_stride : NULL;
        const float *doi = dout + i * dv;
        float *dqi = dq + i * dh, m = -INFINITY, l = 0;
        memset(dqi, 0, sizeof(float) * (size_t)dh);
        for (int64_t j = 0; j < tk; j++)
            if (key_valid(mrow, j)) {
                float sj = scale * dot(qi, k + j * dh, dh);
                m = sj > m ? sj : m;
            }
        if (m == -INFINITY) continue; /* all keys masked: the output was 0, so are its gradients */
        for (int64_t j = 0; j < tk; j++)
            if (key_valid(mrow, j)) l += expf(scale * dot(qi, k + j * dh, dh) - m);
        float inv = 1.0f / l, D = dot(doi, o + i * dv, dv);
        for (int64_t j = 0; j < tk; j++) {
            if (!key_valid(mrow, j)) continue;
            const float *kj = k + j * dh, *vj = v + j * dv;
            float p = expf(scale * dot(qi, kj, dh) - m) * inv;
            float ds = p * (dot(doi, vj, dv) - D) * scale;
            float *dkj = dk + j * dh, *dvj = dvv + j * dv;
            for (int64_t c = 0; c < dv; c++) dvj[c] += p * doi[c];
            for (int64_t c = 0; c < dh; c++) {
                dqi[c] += ds * kj[c];
                dkj[c] += ds * qi[c];
            }
        }
    }
}
