/* runtime/rt_sparse.c — the sparse-dense product compiled code calls for spmm: one pass over
 * the output rows of the graph in use (or of its transpose, kept in compressed rows too, so the
 * backward product is the same loop and never scatters). */
#include "abi.h"

void em3_rt_spmm(const em3_rt_graph *g, int32_t transpose, const float *x, int64_t width, float *y) {
    const em3_csr *a = transpose ? &g->mt : &g->m;
    for (int64_t r = 0; r < a->rows; r++) {
        float *out = y + r * width;
        for (int64_t k = 0; k < width; k++) out[k] = 0;
        for (int64_t e = a->ptr[r]; e < a->ptr[r + 1]; e++) {
            const float *in = x + (int64_t)a->col[e] * width;
            float v = a->val[e];
            for (int64_t k = 0; k < width; k++) out[k] += v * in[k];
        }
    }
}
