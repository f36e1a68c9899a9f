/* runtime/rt_helpers.c — helpers that compiled code calls for what is not worth emitting as
 * LLVM IR: merging repeated ids of sparse gradients (lazy optimizer updates, sparse norms),
 * a batch's distinct ids (unique, index_of), and the table of every external symbol compiled
 * code may use. */
#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "abi.h"
#include "ir/support.h"

/* Positions 0..n-1 ordered by id (stable): repeats become neighbours, summed in input order. */
typedef struct {
    int32_t id;
    int64_t pos;
} id_pos;

static int cmp_id_pos(const void *a, const void *b) {
    const id_pos *x = a, *y = b;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* Calls visit(id, merged_row) once per distinct id; returns false at an id outside [0, rows). */
static bool merge_rows(const int32_t *ids, const float *grad, int64_t n, int64_t width,
                       int64_t rows, int64_t *bad,
                       void (*visit)(void *ctx, int32_t id, const float *row), void *ctx) {
    id_pos *order = em3_xmalloc(sizeof(id_pos) * (size_t)(n ? n : 1));
    float *acc = em3_xmalloc(sizeof(float) * (size_t)(width ? width : 1));
    bool ok = true;
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (rows >= 0 && ids[i] >= rows)) {
            *bad = ids[i];
            ok = false;
            break;
        }
        order[i] = (id_pos){ids[i], i};
    }
    if (ok) {
        qsort(order, (size_t)n, sizeof(id_pos), cmp_id_pos);
        for (int64_t i = 0; i < n;) {
            int64_t j = i;
            memcpy(acc, grad + order[i].pos * width, sizeof(float) * (size_t)width);
            while (++j < n && order[j].id == order[i].id)
                for (int64_t k = 0; k < width; k++) acc[k] += grad[order[j].pos * width + k];
            visit(ctx, order[i].id, acc);
            i = j;
        }
    }
    free(order);
    free(acc);
    return ok;
}

typedef struct {
    em3_rt_opt kind;
    const em3_rt_hyper *h;
    float *p, *s0, *s1;
    int64_t width;
    float bc1, bc2; /* Adam's bias corrections 1 - beta^t */
} update_ctx;

static void update_row(void *vctx, int32_t id, const float *g) {
    update_ctx *c = vctx;
    const em3_rt_hyper *h = c->h;
    float *p = c->p + (int64_t)id * c->width;
    float *s0 = c->s0 ? c->s0 + (int64_t)id * c->width : NULL;
    float *s1 = c->s1 ? c->s1 + (int64_t)id * c->width : NULL;
    for (int64_t k = 0; k < c->width; k++) {
        float gi = g[k];
        switch (c->kind) {
        case EM3_RT_SGD: p[k] -= h->lr * (gi + h->wd * p[k]); break;
        case EM3_RT_ADAGRAD:
            gi += h->wd * p[k];
            s0[k] += gi * gi;
            p[k] -= h->lr * gi / (sqrtf(s0[k]) + h->eps);
            break;
        case EM3_RT_ADAM:
            if (h->decoupled)
                p[k] *= 1 - h->lr * h->wd;
            else
                gi += h->wd * p[k];
            s0[k] = h->beta1 * s0[k] + (1 - h->beta1) * gi;
            s1[k] = h->beta2 * s1[k] + (1 - h->beta2) * gi * gi;
            p[k] -= h->lr * (s0[k] / c->bc1) / (sqrtf(s1[k] / c->bc2) + h->eps);
            break;
        }
    }
}

int em3_rt_sparse_update(em3_rt_opt kind, const em3_rt_hyper *h, float *param, float *s0,
                         float *s1, const int32_t *ids, const float *grad_rows, int64_t n,
                         int64_t width, int64_t rows, int64_t *bad) {
    update_ctx c = {kind, h, param, s0, s1, width, 1, 1};
    if (kind == EM3_RT_ADAM) {
        c.bc1 = 1 - powf(h->beta1, h->step);
        c.bc2 = 1 - powf(h->beta2, h->step);
    }
    return merge_rows(ids, grad_rows, n, width, rows, bad, update_row, &c) ? 0 : 1;
}

static void add_sq(void *vctx, int32_t id, const float *row) {
    (void)id;
    double *c = vctx;
    for (int64_t k = 0; k < (int64_t)c[1]; k++) c[0] += (double)row[k] * row[k];
}

float em3_rt_sparse_sqnorm(const int32_t *ids, const float *grad_rows, int64_t n, int64_t width) {
    double c[2] = {0, (double)width};
    int64_t bad;
    merge_rows(ids, grad_rows, n, width, -1, &bad, add_sq, c);
    return (float)c[0];
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Ids are table rows, so they span a range not much wider than their count: then one pass
 * marks them in a table over the range (no sort, no search); qsort and binary search are the
 * fallback for sparse ranges. Returns the span hi − lo + 1 when it is dense enough, else 0. */
static uint64_t dense_span(const int32_t *ids, int64_t n, int32_t *lo) {
    if (n == 0) return 0;
    int32_t a = ids[0], b = ids[0];
    for (int64_t i = 1; i < n; i++) {
        if (ids[i] < a) a = ids[i];
        if (ids[i] > b) b = ids[i];
    }
    uint64_t span = (uint64_t)((int64_t)b - a) + 1;
    *lo = a;
    return span <= 4 * (uint64_t)n + 65536 ? span : 0;
}

int64_t em3_rt_unique(const int32_t *ids, int64_t n, int32_t *out) {
    int32_t lo;
    uint64_t span = dense_span(ids, n, &lo);
    int64_t u = 0;
    if (span) {
        uint8_t *seen = em3_xcalloc(span, 1);
        for (int64_t i = 0; i < n; i++) seen[ids[i] - lo] = 1;
        for (uint64_t k = 0; k < span; k++)
            if (seen[k]) out[u++] = (int32_t)((int64_t)lo + (int64_t)k);
        free(seen);
        return u;
    }
    memcpy(out, ids, sizeof(int32_t) * (size_t)n);
    qsort(out, (size_t)n, sizeof(int32_t), cmp_i32);
    for (int64_t i = 0; i < n; i++)
        if (u == 0 || out[i] != out[u - 1]) out[u++] = out[i];
    return u;
}

int64_t em3_rt_index_of(const int32_t *ids, int64_t n, const int32_t *u, int64_t nu, int32_t *out) {
    int32_t lo;
    uint64_t span = dense_span(u, nu, &lo);
    if (span && span <= 4 * (uint64_t)n + 65536) { /* a position table over u's range */
        int32_t *pos = em3_xmalloc(sizeof(int32_t) * span);
        memset(pos, 0xff, sizeof(int32_t) * span);
        for (int64_t k = 0; k < nu; k++) pos[u[k] - lo] = (int32_t)k;
        int64_t bad = -1;
        for (int64_t i = 0; i < n && bad < 0; i++) {
            int64_t at = (int64_t)ids[i] - lo;
            if (at < 0 || (uint64_t)at >= span || pos[at] < 0) bad = i;
            else out[i] = pos[at];
        }
        free(pos);
        return bad;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t a = 0, b = nu;
        while (a < b) {
            int64_t mid = a + (b - a) / 2;
            if (u[mid] < ids[i])
                a = mid + 1;
            else
                b = mid;
        }
        if (a == nu || u[a] != ids[i]) return i;
        out[i] = (int32_t)a;
    }
    return -1;
}

const em3_rt_symbol em3_rt_symbols[] = {
    {"cblas_sgemm", (void *)cblas_sgemm},
    {"em3_rt_sparse_update", (void *)em3_rt_sparse_update},
    {"em3_rt_sparse_sqnorm", (void *)em3_rt_sparse_sqnorm},
    {"em3_rt_attention_fwd", (void *)em3_rt_attention_fwd},
    {"em3_rt_attention_bwd", (void *)em3_rt_attention_bwd},
    {"em3_rt_spmm", (void *)em3_rt_spmm},
    {"em3_rt_unique", (void *)em3_rt_unique},
    {"em3_rt_index_of", (void *)em3_rt_index_of},
    {"memcpy", (void *)memcpy},
    {"memset", (void *)memset},
    {"memmove", (void *)memmove},
    {"powf", (void *)powf},
    {NULL, NULL},
};
