/* runtime/data_import.c — turns the sources of a description into cache columns. Two passes:
 * the first reads train to build vocabularies (as FuxiCTR 2 numbers them: the tokens seen at
 * least min_categr_count times in string order from id 1; id 0 pads, the last id is OOV) and to
 * learn sequence lengths; the second encodes every split.
 * Item tables are re-indexed by the encoded item ids. Each bad value stops the import with the
 * file and line (CSV, 1-based) or row (arrays, 0-based) where it is. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"
#include "ir/support.h"

/* ---- vocabularies ------------------------------------------------------------------------------ */

typedef struct {
    char **tok;
    int64_t *count;
    int64_t *id; /* after vocab_finish: the token's id, 0 when it fell below min_count */
    int64_t n, cap;
    int64_t *slot; /* open addressing: token index + 1, 0 = empty */
    int64_t nslot;
    char **by_id; /* tokens in id order: "" (padding), ..., "__OOV__" */
    int64_t size;
} vocab;

static uint64_t hash_tok(const char *p, size_t n) { return em3_xxh64(p, n, 0x5eed); }

/* The index of token p[0..n), added (with count 0) when `add`; -1 when absent. */
static int64_t vocab_find(vocab *v, const char *p, size_t n, bool add) {
    if (!add && !v->nslot) return -1;
    if (add && 2 * (v->n + 1) > v->nslot) { /* keep the table at most half full */
        int64_t ns = v->nslot ? 2 * v->nslot : 1024;
        int64_t *slot = em3_xcalloc((size_t)ns, sizeof *slot);
        for (int64_t i = 0; i < v->n; i++) {
            uint64_t h = hash_tok(v->tok[i], strlen(v->tok[i])) & (uint64_t)(ns - 1);
            while (slot[h]) h = (h + 1) & (uint64_t)(ns - 1);
            slot[h] = i + 1;
        }
        free(v->slot);
        v->slot = slot;
        v->nslot = ns;
    }
    uint64_t h = hash_tok(p, n) & (uint64_t)(v->nslot - 1);
    for (; v->slot[h]; h = (h + 1) & (uint64_t)(v->nslot - 1)) {
        const char *t = v->tok[v->slot[h] - 1];
        if (!strncmp(t, p, n) && !t[n]) return v->slot[h] - 1;
    }
    if (!add) return -1;
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 1024;
        v->tok = em3_xrealloc(v->tok, sizeof *v->tok * (size_t)v->cap);
        v->count = em3_xrealloc(v->count, sizeof *v->count * (size_t)v->cap);
        v->id = em3_xrealloc(v->id, sizeof *v->id * (size_t)v->cap);
    }
    char *t = em3_xmalloc(n + 1);
    memcpy(t, p, n);
    t[n] = 0;
    v->tok[v->n] = t;
    v->count[v->n] = 0;
    v->id[v->n] = 0;
    v->slot[h] = ++v->n;
    return v->n - 1;
}

static void vocab_free(vocab *v) {
    for (int64_t i = 0; i < v->n; i++) free(v->tok[i]);
    free(v->tok);
    free(v->count);
    free(v->id);
    free(v->slot);
    free(v->by_id);
}

typedef struct {
    int64_t index;
    const char *tok;
} ranked;

static int by_token(const void *a, const void *b) {
    return strcmp(((const ranked *)a)->tok, ((const ranked *)b)->tok);
}

/* Ids in token order for the tokens seen at least min_count times; then `extra` tokens (item
 * table rows not seen in train) in their order; then OOV. */
static void vocab_finish(vocab *v, int64_t min_count, const int64_t *extra, int64_t n_extra) {
    ranked *order = em3_xmalloc(sizeof *order * (size_t)(v->n + 1));
    int64_t k = 0;
    for (int64_t i = 0; i < v->n; i++)
        if (v->count[i] >= min_count) order[k++] = (ranked){i, v->tok[i]};
    qsort(order, (size_t)k, sizeof *order, by_token);
    v->by_id = em3_xmalloc(sizeof *v->by_id * (size_t)(k + n_extra + 2));
    v->by_id[0] = "";
    for (int64_t i = 0; i < k; i++) {
        v->id[order[i].index] = i + 1;
        v->by_id[i + 1] = v->tok[order[i].index];
    }
    v->size = k + 1;
    for (int64_t e = 0; e < n_extra; e++) {
        char tok[32];
        int n = snprintf(tok, sizeof tok, "%lld", (long long)extra[e]);
        int64_t i = vocab_find(v, tok, (size_t)n, true);
        if (v->id[i]) continue;
        v->id[i] = v->size;
        v->by_id[v->size++] = v->tok[i];
    }
    v->by_id[v->size++] = "__OOV__";
    free(order);
}

/* ---- the importer's state ---------------------------------------------------------------------- */

typedef struct {
    int owner;        /* the feature whose vocabulary / id range this one uses */
    int64_t elems;    /* values per row (1, max_len, the embedding's size) */
    int rank;
    int64_t dim[4];   /* per-row shape */
    int64_t longest;  /* sequence: the longest train row (pass 1) */
    int64_t max_id;   /* owner, identity: the largest id seen */
    void *data[EM3_SPLIT_COUNT];
    int64_t rows[EM3_SPLIT_COUNT], cap[EM3_SPLIT_COUNT];
    int csv_col;      /* in the CSV being read */
} feat_state;

typedef struct {
    const em3_data_spec *s;
    char *err;
    size_t errlen;
    feat_state *fs;
    vocab *voc;        /* per feature; used for owners with a vocabulary */
    em3_npy **table;   /* the item tables as read */
    int64_t *seq;      /* scratch: one sequence's ids */
    int64_t seq_cap;
    bool counting;     /* pass 1 */
} importer;

/* Where a value is, for messages: a CSV line (1-based) or an array row (0-based). */
typedef struct {
    const char *file;
    int64_t at;
    bool csv;
} where;

static bool vfail(importer *im, const where *w, const em3_feature_spec *f, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool vfail(importer *im, const where *w, const em3_feature_spec *f, const char *fmt, ...) {
    int k = snprintf(im->err, im->errlen, w->csv ? "%s:%lld: column '%s': " : "%s: row %lld: column '%s': ",
                     w->file, (long long)w->at, f->source);
    va_list ap;
    va_start(ap, fmt);
    if (k >= 0 && (size_t)k < im->errlen) vsnprintf(im->err + k, im->errlen - (size_t)k, fmt, ap);
    va_end(ap);
    return false;
}

static bool is_ids(em3_col_kind k) {
    return k == EM3_COL_CATEGORICAL || k == EM3_COL_SEQUENCE || k == EM3_COL_META;
}

static bool is_float(em3_col_kind k) {
    return k == EM3_COL_NUMERIC || k == EM3_COL_EMBEDDING || k == EM3_COL_LABEL;
}

/* A new zeroed row of feature i in split sp. */
static void *new_row(importer *im, int i, int sp) {
    feat_state *st = &im->fs[i];
    if (st->rows[sp] == st->cap[sp]) {
        st->cap[sp] = st->cap[sp] ? 2 * st->cap[sp] : 1024;
        st->data[sp] = em3_xrealloc(st->data[sp], (size_t)(st->cap[sp] * st->elems) * 4);
    }
    void *row = (char *)st->data[sp] + (size_t)(st->rows[sp]++ * st->elems) * 4;
    memset(row, 0, (size_t)st->elems * 4);
    return row;
}

/* ---- values ------------------------------------------------------------------------------------ */

/* A whole number written in decimal ("12", "-3", "12.0"); false for anything else. */
static bool parse_int(const char *p, size_t n, int64_t *out) {
    char buf[64];
    if (!n || n >= sizeof buf) return false;
    memcpy(buf, p, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (!*end && !errno) {
        *out = v;
        return true;
    }
    double d = strtod(buf, &end);
    if (*end || d != trunc(d) || !(fabs(d) < 0x1p62)) return false;
    *out = (int64_t)d;
    return true;
}

static bool parse_num(const char *p, size_t n, double *out) {
    char buf[64];
    if (!n || n >= sizeof buf) return false;
    memcpy(buf, p, n);
    buf[n] = 0;
    char *end;
    *out = strtod(buf, &end);
    return !*end;
}

/* The id of source id `raw` of an identity-encoded feature. */
static bool encode_raw(importer *im, int i, int64_t raw, const where *w, int64_t *id) {
    const em3_feature_spec *f = &im->s->feat[i];
    feat_state *o = &im->fs[im->fs[i].owner];
    if (raw < 0 || (f->vocab_size && raw >= f->vocab_size - f->id_offset))
        return vfail(im, w, f, "id %lld is outside [0, %lld) (vocab_size %lld%s)", (long long)raw,
                     (long long)(f->vocab_size ? f->vocab_size - f->id_offset : INT32_MAX),
                     (long long)f->vocab_size, f->id_offset ? " with id_offset" : "");
    if (raw + f->id_offset > INT32_MAX - 1) return vfail(im, w, f, "id %lld does not fit 32 bits", (long long)raw);
    *id = raw + f->id_offset;
    if (*id > o->max_id) o->max_id = *id;
    return true;
}

/* The id of a token of feature i; pass 1 counts it instead. An empty token is a missing value:
 * out of vocabulary, as in FuxiCTR (with identity encoding: the padding id 0). */
static bool encode_token(importer *im, int i, const char *tok, size_t n, const where *w, int64_t *id) {
    const em3_feature_spec *f = &im->s->feat[i];
    *id = 0;
    if (f->enc == EM3_ENC_VOCAB) {
        vocab *v = &im->voc[im->fs[i].owner];
        if (im->counting) {
            if (n) {
                int64_t k = vocab_find(v, tok, n, true); /* may move v->count */
                v->count[k]++;
            }
            return true;
        }
        int64_t k = n ? vocab_find(v, tok, n, false) : -1;
        *id = k >= 0 && v->id[k] ? v->id[k] : v->size - 1;
        return true;
    }
    int64_t raw;
    if (!n) return true;
    if (!parse_int(tok, n, &raw)) return vfail(im, w, f, "'%.*s' is not an integer id (encoding: identity)", (int)n, tok);
    return encode_raw(im, i, raw, w, id);
}

static bool finite_value(importer *im, int i, double v, const where *w, float *out) {
    const em3_feature_spec *f = &im->s->feat[i];
    if (isnan(v) || isinf(v))
        return vfail(im, w, f, "%s in a %s column", isnan(v) ? "NaN" : "infinity", em3_col_kind_name(f->kind));
    if (fabs(v) > 3.4e38) return vfail(im, w, f, "%g does not fit a float", v);
    *out = (float)v;
    return true;
}

/* A finite number, or fill_na for an empty numeric field. */
static bool encode_number(importer *im, int i, const char *p, size_t n, const where *w, float *out) {
    const em3_feature_spec *f = &im->s->feat[i];
    double v;
    if (!n && f->kind == EM3_COL_NUMERIC) v = f->fill_na;
    else if (!n) return vfail(im, w, f, "empty (a %s needs a value)", f->kind == EM3_COL_LABEL ? "label" : "vector");
    else if (!parse_num(p, n, &v)) return vfail(im, w, f, "'%.*s' is not a number", (int)n, p);
    return finite_value(im, i, v, w, out);
}

/* Places the n ids of im->seq into a row of max_len, padded and truncated on the same side
 * as FuxiCTR does: `pre` (its default) keeps the last max_len ids, aligned to the end. */
static void place_sequence(const importer *im, int i, int64_t n, int32_t *row) {
    bool post = im->s->feat[i].pad_post;
    int64_t len = im->fs[i].elems, keep = n < len ? n : len;
    const int64_t *ids = im->seq + (post ? 0 : n - keep);
    int64_t at = post ? 0 : len - keep;
    for (int64_t k = 0; k < keep; k++) row[at + k] = (int32_t)ids[k];
}

static void seq_push(importer *im, int64_t n, int64_t id) {
    if (n == im->seq_cap) {
        im->seq_cap = im->seq_cap ? 2 * im->seq_cap : 256;
        im->seq = em3_xrealloc(im->seq, sizeof *im->seq * (size_t)im->seq_cap);
    }
    im->seq[n] = id;
}

/* ---- CSV --------------------------------------------------------------------------------------- */

/* One field of one row: counted (pass 1) or encoded into split sp (pass 2). */
static bool csv_value(importer *im, int i, int sp, const em3_field *fd, const where *w) {
    const em3_feature_spec *f = &im->s->feat[i];
    feat_state *st = &im->fs[i];
    int64_t id;
    switch (f->kind) {
    case EM3_COL_CATEGORICAL:
    case EM3_COL_META:
        if (!encode_token(im, i, fd->p, fd->len, w, &id)) return false;
        if (!im->counting) *(int32_t *)new_row(im, i, sp) = (int32_t)id;
        return true;
    case EM3_COL_SEQUENCE: {
        int64_t n = 0;
        for (size_t a = 0; a < fd->len;) {
            size_t b = a;
            while (b < fd->len && fd->p[b] != f->splitter) b++;
            if (b > a) { /* empty tokens ("1^^2") are skipped */
                if (!encode_token(im, i, fd->p + a, b - a, w, &id)) return false;
                if (!im->counting) seq_push(im, n, id);
                n++;
            }
            a = b + 1;
        }
        if (im->counting) {
            if (n > st->longest) st->longest = n;
        } else {
            place_sequence(im, i, n, new_row(im, i, sp));
        }
        return true;
    }
    case EM3_COL_EMBEDDING: {
        int64_t n = 1;
        for (size_t a = 0; a < fd->len; a++) n += fd->p[a] == f->splitter;
        if (im->counting) {
            if (!st->elems && !f->dim) st->elems = n; /* the first train row decides */
            return true;
        }
        if (n != st->elems)
            return vfail(im, w, f, "%lld values, the embedding has %lld", (long long)n, (long long)st->elems);
        float *row = new_row(im, i, sp);
        for (size_t a = 0, k = 0; k < (size_t)n; k++) {
            size_t b = a;
            while (b < fd->len && fd->p[b] != f->splitter) b++;
            if (!encode_number(im, i, fd->p + a, b - a, w, &row[k])) return false;
            a = b + 1;
        }
        return true;
    }
    case EM3_COL_NUMERIC:
    case EM3_COL_LABEL:
        return im->counting || encode_number(im, i, fd->p, fd->len, w, new_row(im, i, sp));
    }
    EM3_UNREACHABLE("column kind %d", (int)f->kind);
}

/* Reads a CSV file whose rows all belong to split `fixed`, or (fixed < 0) to the split the
 * split column names. */
static bool scan_csv(importer *im, const char *path, int fixed) {
    const em3_data_spec *s = im->s;
    char sep = s->separator ? s->separator
             : em3_data_has_suffix(path, ".tsv") || em3_data_has_suffix(path, ".inter") ? '\t' : ',';
    em3_csv *c = em3_csv_open(path, sep, im->err, im->errlen);
    if (!c) return false;
    bool ok = true;
    for (int i = 0; ok && i < s->n_feat; i++) {
        im->fs[i].csv_col = em3_csv_column(c, s->feat[i].source);
        if (im->fs[i].csv_col < 0)
            ok = em3_data_fail(im->err, im->errlen, "%s:1: no column '%s' in the header (declared at %s:%d)",
                               path, s->feat[i].source, s->origin, s->feat[i].line);
    }
    int split_col = fixed < 0 ? em3_csv_column(c, s->split_col) : -1;
    if (ok && fixed < 0 && split_col < 0)
        ok = em3_data_fail(im->err, im->errlen, "%s:1: no split column '%s' in the header", path, s->split_col);
    const em3_field *fd;
    int64_t line;
    while (ok && em3_csv_next(c, &fd, &line, im->err, im->errlen)) {
        int sp = fixed;
        if (fixed < 0) {
            const em3_field *v = &fd[split_col];
            for (sp = 0; sp < EM3_SPLIT_COUNT; sp++)
                if (s->split_value[sp] && strlen(s->split_value[sp]) == v->len && !memcmp(s->split_value[sp], v->p, v->len))
                    break;
            if (sp == EM3_SPLIT_COUNT) {
                ok = em3_data_fail(im->err, im->errlen, "%s:%lld: split column '%s' holds '%.*s', which "
                                   "names no split", path, (long long)line, s->split_col, (int)v->len, v->p);
                break;
            }
        }
        if (im->counting && sp != EM3_SPLIT_TRAIN) continue;
        where w = {path, line, true};
        for (int i = 0; ok && i < s->n_feat; i++) ok = csv_value(im, i, sp, &fd[im->fs[i].csv_col], &w);
    }
    if (ok && *im->err) ok = false; /* em3_csv_next stopped on a malformed record */
    em3_csv_close(c);
    return ok;
}

/* ---- arrays ------------------------------------------------------------------------------------ */

static bool is_int_dtype(em3_npy_dtype t) {
    return t == EM3_NPY_I32 || t == EM3_NPY_I64 || t == EM3_NPY_U8 || t == EM3_NPY_BOOL;
}

static em3_npy *read_array(importer *im, const char *path, em3_data_format fmt, const char *name) {
    if (fmt == EM3_FMT_NPZ) return em3_npz_read(path, name, im->err, im->errlen);
    char *p = em3_data_npy_path(path, name);
    em3_npy *a = em3_npy_read(p, im->err, im->errlen);
    free(p);
    return a;
}

/* Checks that an array has the shape and dtype its feature needs: [rows] or [rows, 1] for one
 * value per row, [rows, L] for a sequence, [rows, ...] for an embedding. */
static bool check_array(importer *im, int i, const em3_npy *a, int64_t rows) {
    const em3_feature_spec *f = &im->s->feat[i];
    const char *p = a->path;
    if (a->rank < 1 || a->shape[0] != rows)
        return em3_data_fail(im->err, im->errlen, "%s: %lld rows, but the other columns have %lld", p,
                             (long long)(a->rank ? a->shape[0] : 0), (long long)rows);
    bool scalar = f->kind != EM3_COL_SEQUENCE && f->kind != EM3_COL_EMBEDDING;
    if (scalar && !(a->rank == 1 || (a->rank == 2 && a->shape[1] == 1)))
        return em3_data_fail(im->err, im->errlen, "%s: a %s column holds one value per row, not rank %d",
                             p, em3_col_kind_name(f->kind), a->rank);
    if (f->kind == EM3_COL_SEQUENCE && a->rank != 2)
        return em3_data_fail(im->err, im->errlen, "%s: a sequence is a [rows, length] array, not rank %d", p, a->rank);
    if (f->kind == EM3_COL_EMBEDDING && (a->rank < 2 || a->rank > 5))
        return em3_data_fail(im->err, im->errlen, "%s: an embedding is a [rows, ...] array of rank 2 to 5", p);
    if (is_ids(f->kind) && !is_int_dtype(a->dtype))
        return em3_data_fail(im->err, im->errlen, "%s: ids of column '%s' must be integers, not %s", p,
                             f->source, em3_npy_dtype_name(a->dtype));
    return true;
}

/* Feature i of split sp from its array: counted (pass 1) or encoded (pass 2). */
static bool array_column(importer *im, int i, int sp, const em3_npy *a) {
    const em3_feature_spec *f = &im->s->feat[i];
    feat_state *st = &im->fs[i];
    int64_t rows = a->shape[0], per = rows ? a->numel / rows : 0;
    if (f->kind == EM3_COL_SEQUENCE && im->counting && per > st->longest) st->longest = per;
    if (f->kind == EM3_COL_EMBEDDING) {
        int64_t e = per;
        if (!st->elems && (im->counting || !f->dim)) {
            st->elems = e;
            st->rank = a->rank - 1;
            for (int d = 1; d < a->rank; d++) st->dim[d - 1] = a->shape[d];
        }
        if (im->counting) return true;
        if (e != st->elems)
            return em3_data_fail(im->err, im->errlen, "%s: %lld values per row, the embedding has %lld",
                                 a->path, (long long)e, (long long)st->elems);
    }
    if (im->counting && !(is_ids(f->kind) && f->enc == EM3_ENC_VOCAB)) return true;
    where w = {a->path, 0, false};
    if (is_float(f->kind)) {
        double *v = em3_xmalloc(sizeof *v * (size_t)(a->numel + 1));
        em3_npy_to_f64(a, v);
        bool ok = true;
        for (int64_t r = 0; ok && r < rows; r++) {
            float *row = new_row(im, i, sp);
            w.at = r;
            for (int64_t k = 0; ok && k < per; k++) ok = finite_value(im, i, v[r * per + k], &w, &row[k]);
        }
        free(v);
        return ok;
    }
    /* converted a block of rows at a time: a history column of millions of rows would
     * otherwise take twice its size again as int64 */
    enum { BLOCK = 1 << 16 };
    size_t esize = a->dtype == EM3_NPY_I32 ? 4 : a->dtype == EM3_NPY_I64 ? 8 : 1;
    int64_t *v = em3_xmalloc(sizeof *v * (size_t)(BLOCK * per + 1));
    bool ok = true;
    for (int64_t r = 0; ok && r < rows; r++) {
        if (r % BLOCK == 0) {
            em3_npy view = *a;
            view.data = (char *)a->data + (size_t)(r * per) * esize;
            view.numel = (rows - r < BLOCK ? rows - r : BLOCK) * per;
            if (!(ok = em3_npy_to_i64(&view, v, im->err, im->errlen))) break;
        }
        w.at = r;
        int64_t n = 0;
        for (int64_t k = 0; ok && k < per; k++) {
            int64_t x = v[(r % BLOCK) * per + k], id;
            /* in arrays a sequence is padded with 0 (or, with id_offset, a negative value) */
            if (f->kind == EM3_COL_SEQUENCE && (x < 0 || (x == 0 && (f->id_offset == 0 || f->enc == EM3_ENC_VOCAB))))
                continue;
            if (f->enc == EM3_ENC_IDENTITY) {
                ok = encode_raw(im, i, x, &w, &id);
            } else {
                char tok[24];
                ok = encode_token(im, i, tok, (size_t)snprintf(tok, sizeof tok, "%lld", (long long)x), &w, &id);
            }
            if (f->kind == EM3_COL_SEQUENCE) seq_push(im, n++, id);
            else if (!im->counting) *(int32_t *)new_row(im, i, sp) = (int32_t)id;
        }
        if (ok && f->kind == EM3_COL_SEQUENCE && !im->counting) place_sequence(im, i, n, new_row(im, i, sp));
    }
    free(v);
    return ok;
}

static bool scan_arrays(importer *im, const char *path, em3_data_format fmt, int sp) {
    const em3_data_spec *s = im->s;
    bool ok = true;
    int64_t rows = -1;
    for (int i = 0; ok && i < s->n_feat; i++) {
        em3_npy *a = read_array(im, path, fmt, s->feat[i].source);
        if (!a) return false;
        if (rows < 0) rows = a->rank ? a->shape[0] : 0;
        ok = check_array(im, i, a, rows) && array_column(im, i, sp, a);
        em3_npy_free(a);
    }
    return ok;
}

/* ---- the passes -------------------------------------------------------------------------------- */

static bool scan_split(importer *im, int sp) {
    const char *path = im->s->split_file[sp];
    if (!path) return true;
    em3_data_format fmt = em3_data_source_format(im->s, path);
    return fmt == EM3_FMT_CSV ? scan_csv(im, path, sp) : scan_arrays(im, path, fmt, sp);
}

static bool scan(importer *im, bool counting) {
    im->counting = counting;
    if (im->s->data_file) return scan_csv(im, im->s->data_file, -1);
    for (int sp = 0; sp < (counting ? 1 : EM3_SPLIT_COUNT); sp++)
        if (!scan_split(im, sp)) return false;
    return true;
}

/* After pass 1: every column's row shape. */
static bool decide_shapes(importer *im) {
    const em3_data_spec *s = im->s;
    for (int i = 0; i < s->n_feat; i++) {
        const em3_feature_spec *f = &s->feat[i];
        feat_state *st = &im->fs[i];
        if (f->kind == EM3_COL_SEQUENCE) {
            st->elems = f->max_len ? f->max_len : st->longest > 0 ? st->longest : 1;
            st->rank = 1;
            st->dim[0] = st->elems;
        } else if (f->kind == EM3_COL_EMBEDDING) {
            if (f->dim) st->elems = f->dim;
            if (!st->elems)
                return em3_data_fail(im->err, im->errlen, "%s:%d: embedding '%s' has no train rows to take "
                                     "its size from: give embedding_dim", s->origin, f->line, f->name);
            if (!st->rank) {
                st->rank = 1;
                st->dim[0] = st->elems;
            }
        } else {
            st->elems = 1;
        }
    }
    return true;
}

/* ---- item tables ------------------------------------------------------------------------------- */

static bool read_tables(importer *im) {
    const em3_data_spec *s = im->s;
    for (int t = 0; t < s->n_table; t++) {
        const em3_table_spec *ts = &s->table[t];
        em3_npy *a = ts->array ? em3_npz_read(ts->file, ts->array, im->err, im->errlen)
                               : em3_npy_read(ts->file, im->err, im->errlen);
        if (!a) return false;
        im->table[t] = a;
        if (a->rank < 1 || a->rank > 5)
            return em3_data_fail(im->err, im->errlen, "%s: an item table is an array [items, ...] of rank "
                                 "1 to 5, not %d", a->path, a->rank);
        if (ts->kind == EM3_COL_SEQUENCE && !is_int_dtype(a->dtype))
            return em3_data_fail(im->err, im->errlen, "%s: token ids (type: sequence) must be integers, not %s",
                                 a->path, em3_npy_dtype_name(a->dtype));
    }
    return true;
}

/* Table t re-indexed by encoded item id: row e holds the source row of item e. */
static bool build_table(importer *im, int t, const int64_t *src_row, int64_t items, em3_column *out) {
    const em3_table_spec *ts = &im->s->table[t];
    const em3_npy *a = im->table[t];
    int64_t per = a->shape[0] ? a->numel / a->shape[0] : 1;
    *out = (em3_column){.name = ts->name, .kind = ts->kind, .rows = items, .rank = a->rank - 1,
                        .dtype = ts->kind == EM3_COL_SEQUENCE ? EM3_DTYPE_I32 : EM3_DTYPE_F32};
    for (int d = 1; d < a->rank; d++) out->dim[d - 1] = a->shape[d];
    void *data = em3_xcalloc((size_t)(items * per) + 1, 4);
    out->data = data;
    if (ts->kind == EM3_COL_EMBEDDING) {
        float *src = em3_xmalloc(sizeof *src * (size_t)(a->numel + 1));
        em3_npy_to_f32(a, src);
        bool ok = true;
        for (int64_t k = 0; ok && k < a->numel; k++)
            if (!isfinite(src[k]))
                ok = em3_data_fail(im->err, im->errlen, "%s: row %lld: %s in an item table", a->path,
                                   (long long)(k / per), isnan(src[k]) ? "NaN" : "infinity");
        for (int64_t e = 0; ok && e < items; e++)
            if (src_row[e] >= 0) memcpy((float *)data + e * per, src + src_row[e] * per, sizeof *src * (size_t)per);
        free(src);
        return ok;
    }
    int64_t *src = em3_xmalloc(sizeof *src * (size_t)(a->numel + 1)), vmax = 0;
    bool ok = em3_npy_to_i64(a, src, im->err, im->errlen);
    for (int64_t k = 0; ok && k < a->numel; k++) {
        if (src[k] < 0 || (ts->vocab_size && src[k] >= ts->vocab_size) || src[k] > INT32_MAX - 1)
            ok = em3_data_fail(im->err, im->errlen, "%s: row %lld: token id %lld is outside [0, %lld)", a->path,
                               (long long)(k / per), (long long)src[k],
                               (long long)(ts->vocab_size ? ts->vocab_size : INT32_MAX));
        else if (src[k] > vmax) vmax = src[k];
    }
    out->vocab = ts->vocab_size ? ts->vocab_size : vmax + 1;
    for (int64_t e = 0; ok && e < items; e++)
        if (src_row[e] >= 0)
            for (int64_t k = 0; k < per; k++) ((int32_t *)data)[e * per + k] = (int32_t)src[src_row[e] * per + k];
    free(src);
    return ok;
}

/* For each encoded item id, the source row of the tables (-1: none, a zero row). With a
 * vocabulary, tokens are table row numbers; with identity, row = id - id_offset. */
static int64_t *table_rows(importer *im, int64_t items, int64_t table_rows_n) {
    const em3_data_spec *s = im->s;
    const em3_feature_spec *f = &s->feat[im->fs[s->item].owner];
    int64_t *row = em3_xmalloc(sizeof *row * (size_t)items);
    for (int64_t e = 0; e < items; e++) {
        row[e] = -1;
        if (f->enc == EM3_ENC_IDENTITY) {
            if (e - f->id_offset >= 0 && e - f->id_offset < table_rows_n) row[e] = e - f->id_offset;
            continue;
        }
        const char *tok = im->voc[im->fs[s->item].owner].by_id[e];
        int64_t r;
        if (e == 0 || e == items - 1) continue; /* padding, OOV */
        if (!parse_int(tok, strlen(tok), &r) || r < 0 || r >= table_rows_n) {
            em3_data_fail(im->err, im->errlen, "%s: item '%s' of column '%s' has no row (the item tables "
                          "have %lld rows, and item ids are their row numbers)", s->table[0].file, tok,
                          s->feat[s->item].source, (long long)table_rows_n);
            free(row);
            return NULL;
        }
        row[e] = r;
    }
    return row;
}

/* ---- normalizers --------------------------------------------------------------------------------- */

/* Fits each numeric feature's normalizer on its train values and rescales every split in place,
 * as scikit-learn's scalers do (StandardScaler: the population standard deviation; a constant
 * feature keeps scale 1). Statistics in double; the result rounded to f32 once. */
static bool normalize(importer *im) {
    const em3_data_spec *s = im->s;
    for (int i = 0; i < s->n_feat; i++) {
        const em3_feature_spec *f = &s->feat[i];
        feat_state *fs = &im->fs[i];
        if (f->normalizer == EM3_NORM_NONE) continue;
        int64_t n = fs->rows[EM3_SPLIT_TRAIN] * fs->elems;
        if (n == 0)
            return em3_data_fail(im->err, im->errlen, "%s:%d: normalizer of '%s': the train split is empty, "
                                 "nothing to fit it on", s->origin, f->line, f->name);
        em3_float_stats st = em3_float_stats_of(fs->data[EM3_SPLIT_TRAIN], n);
        double shift = f->normalizer == EM3_NORM_STANDARD ? st.mean : st.min;
        double scale = f->normalizer == EM3_NORM_STANDARD ? st.std : st.max - st.min;
        if (!(scale > 0)) scale = 1;
        for (int sp = 0; sp < EM3_SPLIT_COUNT; sp++) {
            float *v = fs->data[sp];
            for (int64_t k = 0; k < fs->rows[sp] * fs->elems; k++) v[k] = (float)((v[k] - shift) / scale);
        }
    }
    return true;
}

/* ---- the import -------------------------------------------------------------------------------- */

static int64_t vocab_of(const importer *im, int i) {
    const em3_feature_spec *f = &im->s->feat[i];
    int o = im->fs[i].owner;
    if (!is_ids(f->kind)) return 0;
    if (f->enc == EM3_ENC_VOCAB) return im->voc[o].size;
    return im->s->feat[o].vocab_size ? im->s->feat[o].vocab_size : im->fs[o].max_id + 1;
}

static bool write_cache(importer *im, const char *path, const em3_source_stamp *st, int n_st,
                        uint64_t fingerprint, const em3_column *tables) {
    const em3_data_spec *s = im->s;
    em3_cache_writer *w = em3_cache_begin(path, im->err, im->errlen);
    if (!w) return false;
    bool ok = true;
    for (int sp = 0; ok && sp < EM3_SPLIT_COUNT; sp++)
        for (int i = 0; ok && i < s->n_feat; i++) {
            const em3_feature_spec *f = &s->feat[i];
            feat_state *fs = &im->fs[i];
            em3_column c = {.name = f->name, .kind = f->kind, .rank = fs->rank, .rows = fs->rows[sp],
                            .dtype = is_ids(f->kind) ? EM3_DTYPE_I32 : EM3_DTYPE_F32,
                            .vocab = vocab_of(im, i), .data = fs->data[sp] ? fs->data[sp] : ""};
            memcpy(c.dim, fs->dim, sizeof c.dim);
            ok = em3_cache_add_column(w, sp, &c, f->share >= 0 ? s->feat[f->share].name : NULL);
        }
    for (int t = 0; ok && t < s->n_table; t++) ok = em3_cache_add_column(w, EM3_SPLIT_COUNT, &tables[t], NULL);
    for (int i = 0; ok && i < s->n_feat; i++)
        if (is_ids(s->feat[i].kind) && s->feat[i].enc == EM3_ENC_VOCAB && im->fs[i].owner == i)
            ok = em3_cache_add_vocab(w, s->feat[i].name, im->voc[i].by_id, im->voc[i].size);
    int label = -1;
    for (int i = 0; i < s->n_feat; i++)
        if (s->feat[i].kind == EM3_COL_LABEL) label = i;
    if (!ok) {
        em3_cache_abort(w);
        return em3_data_fail(im->err, im->errlen, "%s: cannot write the cache", path);
    }
    return em3_cache_commit(w, s->name, label >= 0 ? s->feat[label].name : NULL,
                            s->group >= 0 ? s->feat[s->group].name : NULL,
                            s->item >= 0 ? s->feat[s->item].name : NULL, st, n_st, fingerprint, im->err,
                            im->errlen);
}

/* After the passes: item tables keyed by the encoded item ids. */
static bool finish_tables(importer *im, em3_column *tables) {
    const em3_data_spec *s = im->s;
    if (!s->n_table) return true;
    int64_t trows = im->table[0]->shape[0];
    for (int t = 1; t < s->n_table; t++)
        if (im->table[t]->shape[0] != trows)
            return em3_data_fail(im->err, im->errlen, "%s: %lld rows, but %s has %lld: item tables have one "
                                 "row per item", im->table[t]->path, (long long)im->table[t]->shape[0],
                                 im->table[0]->path, (long long)trows);
    int o = im->fs[s->item].owner;
    const em3_feature_spec *f = &s->feat[o];
    if (f->enc == EM3_ENC_IDENTITY) {
        if (im->fs[o].max_id >= trows + f->id_offset)
            return em3_data_fail(im->err, im->errlen, "%s: %lld rows, but column '%s' holds item id %lld "
                                 "(row %lld): every item needs a row", im->table[0]->path, (long long)trows,
                                 f->source, (long long)im->fs[o].max_id, (long long)(im->fs[o].max_id - f->id_offset));
        if (f->vocab_size && trows + f->id_offset > f->vocab_size)
            return em3_data_fail(im->err, im->errlen, "%s: %lld rows, but vocab_size %lld of '%s' leaves room "
                                 "for %lld items", im->table[0]->path, (long long)trows, (long long)f->vocab_size,
                                 f->name, (long long)(f->vocab_size - f->id_offset));
        if (trows + f->id_offset > im->fs[o].max_id + 1) im->fs[o].max_id = trows + f->id_offset - 1;
    }
    int64_t items = vocab_of(im, s->item);
    int64_t *rows = table_rows(im, items, trows);
    if (!rows) return false;
    bool ok = true;
    for (int t = 0; ok && t < s->n_table; t++) ok = build_table(im, t, rows, items, &tables[t]);
    free(rows);
    return ok;
}

bool em3_data_import(const em3_data_spec *s, const char *cache_path, const em3_source_stamp *st,
                     int n_st, uint64_t fingerprint, bool quiet, char *err, size_t errlen) {
    importer im = {.s = s, .err = err, .errlen = errlen};
    *err = 0;
    im.fs = em3_xcalloc((size_t)s->n_feat + 1, sizeof *im.fs);
    im.voc = em3_xcalloc((size_t)s->n_feat + 1, sizeof *im.voc);
    im.table = em3_xcalloc((size_t)s->n_table + 1, sizeof *im.table);
    em3_column *tables = em3_xcalloc((size_t)s->n_table + 1, sizeof *tables);
    for (int i = 0; i < s->n_feat; i++) im.fs[i].owner = s->feat[i].share >= 0 ? s->feat[i].share : i;

    bool ok = read_tables(&im) && scan(&im, true) && decide_shapes(&im);
    for (int i = 0; ok && i < s->n_feat; i++) {
        const em3_feature_spec *f = &s->feat[i];
        if (!is_ids(f->kind) || f->enc != EM3_ENC_VOCAB || im.fs[i].owner != i) continue;
        /* the item vocabulary also holds every item of the tables, so cold items keep content */
        int64_t n_extra = i == s->item && s->n_table ? im.table[0]->shape[0] : 0;
        int64_t *extra = em3_xmalloc(sizeof *extra * (size_t)(n_extra + 1));
        for (int64_t r = 0; r < n_extra; r++) extra[r] = r;
        vocab_finish(&im.voc[i], f->min_count, extra, n_extra);
        free(extra);
        if (im.voc[i].size > INT32_MAX)
            ok = em3_data_fail(err, errlen, "%s:%d: the vocabulary of '%s' outgrows 32-bit ids", s->origin,
                               f->line, f->name);
    }
    ok = ok && scan(&im, false) && normalize(&im) && finish_tables(&im, tables);
    if (ok && !quiet) {
        fprintf(stderr, "em3: %s: imported", s->name);
        for (int sp = 0; sp < EM3_SPLIT_COUNT; sp++)
            fprintf(stderr, " %s %lld%s", em3_split_name((em3_split)sp), (long long)(s->n_feat ? im.fs[0].rows[sp] : 0),
                    sp + 1 < EM3_SPLIT_COUNT ? "," : " rows\n");
    }
    ok = ok && write_cache(&im, cache_path, st, n_st, fingerprint, tables);

    for (int i = 0; i < s->n_feat; i++) {
        for (int sp = 0; sp < EM3_SPLIT_COUNT; sp++) free(im.fs[i].data[sp]);
        vocab_free(&im.voc[i]);
    }
    for (int t = 0; t < s->n_table; t++) {
        em3_npy_free(im.table[t]);
        free((void *)tables[t].data);
    }
    free(tables);
    free(im.table);
    free(im.fs);
    free(im.voc);
    free(im.seq);
    return ok;
}
