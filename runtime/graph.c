/* runtime/graph.c — graph globals (see graph.h): compressed-row matrices from triplets, the
 * user–item builder with FREEDOM's degree-sensitive edge dropout, and the item–item kNN builder
 * over the dataset's item tables. */
#include "graph.h"

#include <cblas.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "init.h"
#include "interactions.h"
#include "metrics.h"

/* A matrix in compressed rows that owns its arrays. */
typedef struct {
    int64_t rows, cols, nnz;
    int64_t *ptr;
    int32_t *col;
    float *val;
} csr_buf;

struct em3_graph {
    em3_rt_graph view; /* what spmm reads: full or train */
    csr_buf full, full_t;
    /* dropout: the full graph's edges (rows of the user–item matrix) and the current sample */
    double dropout;
    int64_t n_edges;
    int32_t *edge_row, *edge_col;
    float *edge_val;
    csr_buf train, train_t;
    uint64_t train_seed;
    int64_t train_epoch; /* -1: no sample drawn yet */
};

static void csr_free(csr_buf *m) {
    free(m->ptr);
    free(m->col);
    free(m->val);
    *m = (csr_buf){0};
}

static em3_csr csr_view(const csr_buf *m) {
    return (em3_csr){m->rows, m->cols, m->nnz, m->ptr, m->col, m->val};
}

typedef struct {
    int32_t col;
    int64_t at; /* position in the input: repeated entries are summed in input order */
} col_at;

static int by_col(const void *a, const void *b) {
    const col_at *x = a, *y = b;
    if (x->col != y->col) return x->col < y->col ? -1 : 1;
    return (x->at > y->at) - (x->at < y->at);
}

/* Compressed rows from n triplets (transpose: with rows and columns swapped): a counting sort
 * by row, each row's entries sorted by column, repeats summed. */
static csr_buf csr_from_coo(int64_t rows, int64_t cols, int64_t n, const int32_t *r, const int32_t *c,
                            const float *v, bool transpose) {
    if (transpose) {
        const int32_t *t = r;
        r = c;
        c = t;
        int64_t k = rows;
        rows = cols;
        cols = k;
    }
    csr_buf m = {.rows = rows, .cols = cols};
    m.ptr = em3_xcalloc((size_t)rows + 1, sizeof *m.ptr);
    for (int64_t e = 0; e < n; e++) {
        EM3_ASSERT(r[e] >= 0 && r[e] < rows && c[e] >= 0 && c[e] < cols, "entry (%d, %d) outside [%lld, %lld]",
                   r[e], c[e], (long long)rows, (long long)cols);
        m.ptr[r[e] + 1]++;
    }
    for (int64_t i = 0; i < rows; i++) m.ptr[i + 1] += m.ptr[i];
    col_at *order = em3_xmalloc(sizeof *order * (size_t)(n ? n : 1));
    int64_t *fill = em3_xmalloc(sizeof *fill * (size_t)(rows ? rows : 1));
    memcpy(fill, m.ptr, sizeof *fill * (size_t)rows);
    for (int64_t e = 0; e < n; e++) order[fill[r[e]]++] = (col_at){c[e], e};
    free(fill);
    m.col = em3_xmalloc(sizeof *m.col * (size_t)(n ? n : 1));
    m.val = em3_xmalloc(sizeof *m.val * (size_t)(n ? n : 1));
    int64_t out = 0;
    for (int64_t i = 0; i < rows; i++) {
        int64_t a = m.ptr[i], b = m.ptr[i + 1];
        qsort(order + a, (size_t)(b - a), sizeof *order, by_col);
        m.ptr[i] = out;
        for (int64_t k = a; k < b; k++) {
            if (k > a && order[k].col == order[k - 1].col) {
                m.val[out - 1] += v[order[k].at];
                continue;
            }
            m.col[out] = order[k].col;
            m.val[out++] = v[order[k].at];
        }
    }
    m.ptr[rows] = m.nnz = out;
    free(order);
    return m;
}

em3_graph *em3_graph_from_coo(int64_t rows, int64_t cols, int64_t n, const int32_t *row,
                              const int32_t *col, const float *val) {
    em3_graph *g = em3_xcalloc(1, sizeof *g);
    g->full = csr_from_coo(rows, cols, n, row, col, val, false);
    g->full_t = csr_from_coo(rows, cols, n, row, col, val, true);
    g->train_epoch = -1;
    em3_graph_eval(g);
    return g;
}

void em3_graph_free(em3_graph *g) {
    if (!g) return;
    csr_free(&g->full);
    csr_free(&g->full_t);
    csr_free(&g->train);
    csr_free(&g->train_t);
    free(g->edge_row);
    free(g->edge_col);
    free(g->edge_val);
    free(g);
}

const em3_rt_graph *em3_graph_view(const em3_graph *g) { return &g->view; }
int64_t em3_graph_nnz(const em3_graph *g) { return g->full.nnz; }

void em3_graph_eval(em3_graph *g) {
    g->view = (em3_rt_graph){csr_view(&g->full), csr_view(&g->full_t)};
}

/* ---- the user–item graph -------------------------------------------------------------------- */

/* 1/√(d_r d_c) for edges (r[e], c[e]), degrees counted over these edges. */
static void normalise_bipartite(int64_t rows, int64_t cols, int64_t n, const int32_t *r, const int32_t *c,
                                float *v) {
    int64_t *dr = em3_xcalloc((size_t)rows + 1, sizeof *dr), *dc = em3_xcalloc((size_t)cols + 1, sizeof *dc);
    for (int64_t e = 0; e < n; e++) {
        dr[r[e]]++;
        dc[c[e]]++;
    }
    for (int64_t e = 0; e < n; e++) v[e] = (float)(1 / sqrt((double)dr[r[e]] * (double)dc[c[e]]));
    free(dr);
    free(dc);
}

typedef struct {
    double key;
    int64_t edge;
} keyed;

static int by_key_desc(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    return (x->edge > y->edge) - (x->edge < y->edge);
}

/* Edges kept in an epoch: ⌊(1 − dropout)·E⌋ of the E edges, drawn without replacement with
 * probability ∝ their full-graph values w_e (torch.multinomial, as FREEDOM samples): the edges
 * with the largest keys log(u_e)/w_e, u_e uniform (Efraimidis and Spirakis, 2006). */
void em3_graph_train(em3_graph *g, uint64_t seed, int64_t epoch) {
    if (g->dropout <= 0) return; /* the full graph serves training too */
    if (g->train_epoch != epoch || g->train_seed != seed) {
        em3_rng rng;
        em3_rng_seed(&rng, seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)epoch + 1) * 0xD1B54A32D192ED03ull);
        int64_t n = g->n_edges, keep = (int64_t)((double)n * (1 - g->dropout));
        keyed *k = em3_xmalloc(sizeof *k * (size_t)(n ? n : 1));
        for (int64_t e = 0; e < n; e++) k[e] = (keyed){log(1 - em3_rng_uniform(&rng)) / g->edge_val[e], e};
        qsort(k, (size_t)n, sizeof *k, by_key_desc);
        int32_t *r = em3_xmalloc(sizeof *r * (size_t)(keep ? keep : 1)), *c = em3_xmalloc(sizeof *c * (size_t)(keep ? keep : 1));
        float *v = em3_xmalloc(sizeof *v * (size_t)(keep ? keep : 1));
        for (int64_t e = 0; e < keep; e++) {
            r[e] = g->edge_row[k[e].edge];
            c[e] = g->edge_col[k[e].edge];
        }
        normalise_bipartite(g->full.rows, g->full.cols, keep, r, c, v);
        csr_free(&g->train);
        csr_free(&g->train_t);
        g->train = csr_from_coo(g->full.rows, g->full.cols, keep, r, c, v, false);
        g->train_t = csr_from_coo(g->full.rows, g->full.cols, keep, r, c, v, true);
        g->train_seed = seed;
        g->train_epoch = epoch;
        free(k);
        free(r);
        free(c);
        free(v);
    }
    g->view = (em3_rt_graph){csr_view(&g->train), csr_view(&g->train_t)};
}

static em3_graph *build_user_item(const em3_global *gl, const em3_dataset *ds, double dropout, char *err,
                                  size_t errlen) {
    em3_interactions x;
    if (!em3_interactions_build(ds, EM3_SPLIT_TRAIN, &x, err, errlen)) return NULL;
    int64_t rows = gl->type.dim[0], cols = gl->type.dim[1];
    if (x.users > rows || x.items > cols) {
        snprintf(err, errlen, "it is [%lld, %lld], but dataset %s has %lld user and %lld item ids "
                              "(set the model's size constants: users=%lld items=%lld)",
                 (long long)rows, (long long)cols, em3_dataset_name(ds), (long long)x.users, (long long)x.items,
                 (long long)x.users, (long long)x.items);
        em3_interactions_free(&x);
        return NULL;
    }
    int64_t n = x.start[x.users];
    int32_t *r = em3_xmalloc(sizeof *r * (size_t)(n ? n : 1));
    float *v = em3_xmalloc(sizeof *v * (size_t)(n ? n : 1));
    for (int64_t u = 0; u < x.users; u++)
        for (int64_t e = x.start[u]; e < x.start[u + 1]; e++) r[e] = (int32_t)u;
    normalise_bipartite(rows, cols, n, r, x.item, v);
    em3_graph *g = em3_graph_from_coo(rows, cols, n, r, x.item, v);
    g->dropout = dropout;
    g->n_edges = n;
    g->edge_row = r;
    g->edge_col = x.item;
    g->edge_val = v;
    free(x.start);
    return g;
}

/* ---- the item–item kNN graph ---------------------------------------------------------------- */

typedef struct {
    int32_t *r, *c;
    float *v;
    int64_t n, cap;
} triplets;

static void triplets_free(triplets *t) {
    free(t->r);
    free(t->c);
    free(t->v);
}

static void push(triplets *t, int32_t r, int32_t c, float v) {
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 1024;
        t->r = em3_xrealloc(t->r, sizeof *t->r * (size_t)t->cap);
        t->c = em3_xrealloc(t->c, sizeof *t->c * (size_t)t->cap);
        t->v = em3_xrealloc(t->v, sizeof *t->v * (size_t)t->cap);
    }
    t->r[t->n] = r;
    t->c[t->n] = c;
    t->v[t->n++] = v;
}

/* Adds weight · D^-½ A D^-½ of one table's kNN graph A to `out`. */
static void knn_of_table(const em3_column *t, int64_t k, double weight, triplets *out) {
    int64_t n = t->rows, w = 1;
    for (int i = 0; i < t->rank; i++) w *= t->dim[i];
    const float *x = t->data;
    float *unit = em3_xmalloc(sizeof *unit * (size_t)(n * w));
    bool *isolated = em3_xmalloc((size_t)n);
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int64_t j = 0; j < w; j++) s += (double)x[i * w + j] * x[i * w + j];
        isolated[i] = !(s > 0);
        for (int64_t j = 0; j < w; j++) unit[i * w + j] = isolated[i] ? 0 : (float)(x[i * w + j] / sqrt(s));
    }
    enum { BLOCK = 256 };
    float *sim = em3_xmalloc(sizeof *sim * (size_t)(BLOCK * n));
    int32_t *top = em3_xmalloc(sizeof *top * (size_t)k);
    triplets a = {0};
    for (int64_t i0 = 0; i0 < n; i0 += BLOCK) {
        int64_t b = n - i0 < BLOCK ? n - i0 : BLOCK;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b, (int)n, (int)w, 1, unit + i0 * w, (int)w,
                    unit, (int)w, 0, sim, (int)n);
        for (int64_t i = i0; i < i0 + b; i++) {
            if (isolated[i]) continue;
            int got = em3_topk_select(sim + (i - i0) * n, isolated, n, (int)k, top);
            for (int j = 0; j < got; j++) push(&a, (int32_t)i, top[j], 1);
        }
    }
    int64_t *deg = em3_xcalloc((size_t)n, sizeof *deg);
    for (int64_t e = 0; e < a.n; e++) deg[a.r[e]]++;
    for (int64_t e = 0; e < a.n; e++)
        push(out, a.r[e], a.c[e], (float)(weight / sqrt((double)deg[a.r[e]] * (double)deg[a.c[e]])));
    free(deg);
    triplets_free(&a);
    free(top);
    free(sim);
    free(unit);
    free(isolated);
}

/* ---- specs ------------------------------------------------------------------------------------ */

static em3_graph *fail(const em3_global *gl, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static em3_graph *fail(const em3_global *gl, char *err, size_t errlen, const char *fmt, ...) {
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (gl->loc.file)
        snprintf(err, errlen, "%s:%d:%d: graph %s (\"%s\"): %s", gl->loc.file, gl->loc.line, gl->loc.col, gl->name,
                 gl->spec, why);
    else
        snprintf(err, errlen, "graph %s (\"%s\"): %s", gl->name, gl->spec, why);
    return NULL;
}

/* Splits the spec's options (space-separated key=value words after the builder's name) into
 * vals[i] for keys[i] ("" when absent); false with *bad, *bad_len at a word that is no known
 * key=value. */
static bool spec_words(const char *spec, const char *const *keys, const char **bad, int *bad_len,
                       char vals[][256]) {
    const char *p = spec + strcspn(spec, " ");
    for (int i = 0; keys[i]; i++) vals[i][0] = 0;
    for (;;) {
        p += strspn(p, " ");
        size_t len = strcspn(p, " ");
        if (!len) return true;
        const char *eq = memchr(p, '=', len);
        int hit = -1;
        for (int i = 0; keys[i] && eq; i++)
            if ((size_t)(eq - p) == strlen(keys[i]) && !strncmp(p, keys[i], (size_t)(eq - p))) hit = i;
        if (hit < 0 || len - (size_t)(eq - p) - 1 >= 256) {
            *bad = p;
            *bad_len = (int)len;
            return false;
        }
        snprintf(vals[hit], 256, "%.*s", (int)(len - (size_t)(eq - p) - 1), eq + 1);
        p += len;
    }
}

static bool number(const char *s, double *out) {
    char *end;
    *out = strtod(s, &end);
    return *s && !*end && isfinite(*out);
}

/* The i-th comma-separated element of list into buf (false past the end). */
static bool list_item(const char *list, int i, char *buf, size_t n) {
    for (; i > 0; i--) {
        list = strchr(list, ',');
        if (!list) return false;
        list++;
    }
    if (!*list) return false;
    size_t len = strcspn(list, ",");
    snprintf(buf, n, "%.*s", (int)len, list);
    return true;
}

static em3_graph *build_item_knn(const em3_global *gl, const em3_dataset *ds, const char *k_text,
                                 const char *tables, const char *weights, char *err, size_t errlen) {
    double k;
    if (!number(k_text, &k) || k < 1 || k != floor(k) || k > 1e6)
        return fail(gl, err, errlen, "k must be a positive integer, not '%s'", k_text);
    if (gl->type.dim[0] != gl->type.dim[1]) return fail(gl, err, errlen, "an item-item graph is square");
    int n_tables = 0;
    char name[256], w_text[256];
    while (list_item(tables, n_tables, name, sizeof name)) n_tables++;
    if (!n_tables) return fail(gl, err, errlen, "tables names no item table (tables=NAME,...)");
    int n_weights = 0;
    while (list_item(weights, n_weights, w_text, sizeof w_text)) n_weights++;
    if (*weights && n_weights != n_tables)
        return fail(gl, err, errlen, "%d weights for %d tables", n_weights, n_tables);
    triplets t = {0};
    for (int i = 0; i < n_tables; i++) {
        list_item(tables, i, name, sizeof name);
        double w = 1.0 / n_tables;
        if (*weights && (!list_item(weights, i, w_text, sizeof w_text) || !number(w_text, &w) || w < 0)) {
            triplets_free(&t);
            return fail(gl, err, errlen, "weight '%s' is not a number >= 0", w_text);
        }
        const em3_column *c = em3_dataset_find_table(ds, name);
        const char *why = !c                          ? "the dataset has no such item table"
                          : c->dtype != EM3_DTYPE_F32 ? "its values are ids, not features"
                          : c->rows != gl->type.dim[0] ? "its rows are not the graph's items"
                                                       : NULL;
        if (why) {
            triplets_free(&t);
            return fail(gl, err, errlen, "table %s: %s", name, why);
        }
        knn_of_table(c, (int64_t)k, w, &t);
    }
    em3_graph *g = em3_graph_from_coo(gl->type.dim[0], gl->type.dim[1], t.n, t.r, t.c, t.v);
    triplets_free(&t);
    return g;
}

/* A builder's options as "a, b, c", for messages. */
static const char *option_list(const char *const *keys, char *buf, size_t n) {
    size_t at = 0;
    buf[0] = 0;
    for (int i = 0; keys[i] && at < n; i++) at += (size_t)snprintf(buf + at, n - at, "%s%s", i ? ", " : "", keys[i]);
    return buf;
}

em3_graph *em3_graph_build(const em3_global *gl, const em3_dataset *ds, char *err, size_t errlen) {
    EM3_ASSERT(gl->kind == EM3_GLOBAL_GRAPH && gl->spec, "%s is not a graph", gl->name);
    const char *spec = gl->spec, *bad = NULL;
    int bad_len = 0;
    char builder[64], vals[3][256], names[128];
    snprintf(builder, sizeof builder, "%.*s", (int)strcspn(spec, " "), spec);
    const char *const *keys = em3_graph_builder_options(builder);
    if (!keys) return fail(gl, err, errlen, "unknown graph builder '%s' (user_item, item_knn)", builder);
    if (!spec_words(spec, keys, &bad, &bad_len, vals))
        return fail(gl, err, errlen, "unknown option '%.*s' (%s)", bad_len, bad, option_list(keys, names, sizeof names));
    if (!strcmp(builder, "user_item")) { /* options: dropout */
        double p = 0;
        if (*vals[0] && (!number(vals[0], &p) || p < 0 || p >= 1))
            return fail(gl, err, errlen, "dropout must be in [0, 1), not '%s'", vals[0]);
        char why[512];
        em3_graph *g = build_user_item(gl, ds, p, why, sizeof why);
        return g ? g : fail(gl, err, errlen, "%s", why);
    }
    /* item_knn; options: k, tables, weights */
    return build_item_knn(gl, ds, *vals[0] ? vals[0] : "10", vals[1], vals[2], err, errlen);
}
