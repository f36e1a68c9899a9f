/* runtime/data_movielens.c — `em3 data movielens`: a MovieLens folder (ratings.csv, movies.csv,
 * tags.csv) becomes a dataset of exactly the form `em3 data gen` writes, so that the same models
 * train on it unchanged: one row per rating, the label rating >= min_rating, a per-user
 * chronological split, the user's earlier rated movies as behaviour, title words, genres and
 * tags as text tokens, and the genres as one multi-hot "image" token. docs/data.md ("MovieLens")
 * states every rule. Every sort is a total order, so the same inputs give byte-identical files. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data_internal.h"
#include "ir/support.h"

/* Of each user's ratings (rounded half up), the last HOLDOUT_PERCENT% go to test and as many
 * before them to valid. */
enum { HOLDOUT_PERCENT = 10 };

typedef struct {
    int64_t id; /* movieId */
    char *title, *genres;
    int64_t line;
    int32_t item; /* the dataset's item id (1..), 0 for a movie nobody rated */
    int first_tag, n_tags; /* its tags: a range of the sorted tag counts */
} movie;

typedef struct {
    int64_t user, movie_id, ts, line;
    int32_t movie; /* index into the movies, sorted by movieId */
    bool positive;
} rating;

typedef struct {
    int32_t movie;
    char *text; /* normalised: lower case, single spaces */
    int64_t count;
} tag;

typedef struct {
    char **at;
    int n, cap;
} tokens;

static void tokens_add(tokens *t, char *s) {
    EM3_GROW(t->at, t->cap, t->n + 1);
    t->at[t->n++] = s;
}

static void tokens_clear(tokens *t) {
    for (int i = 0; i < t->n; i++) free(t->at[i]);
    t->n = 0;
}

/* "prefix" + the n bytes at s, lower-cased (ASCII only: UTF-8 bytes are kept as they are). */
static char *lower_token(const char *prefix, const char *s, size_t n) {
    size_t k = strlen(prefix);
    char *out = em3_xmalloc(k + n + 1);
    memcpy(out, prefix, k);
    for (size_t i = 0; i < n; i++) out[k + i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
    out[k + n] = 0;
    return out;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* ---- reading ---------------------------------------------------------------------------------- */

/* A MovieLens CSV with the columns it must have (in any order, others ignored). */
typedef struct {
    em3_csv *csv;
    int col[4];
    const char *const *names;
} csv_table;

static bool table_open(csv_table *t, const char *dir, const char *file, const char *const *names, int n,
                       char *err, size_t errlen) {
    char *path = em3_data_path(dir, file);
    t->csv = em3_csv_open(path, ',', err, errlen);
    t->names = names;
    free(path);
    if (!t->csv) return false;
    for (int i = 0; i < n; i++)
        if ((t->col[i] = em3_csv_column(t->csv, names[i])) < 0) {
            em3_data_fail(err, errlen, "%s:1: no column '%s' in the header", em3_csv_path(t->csv), names[i]);
            em3_csv_close(t->csv);
            return false;
        }
    return true;
}

/* Field i of a record as a NUL-terminated number text; false when it cannot be one. */
static bool number_text(const em3_field *f, char *buf, size_t n) {
    if (!f->len || f->len >= n || f->p[0] == ' ' || f->p[0] == '\t') return false;
    memcpy(buf, f->p, f->len);
    buf[f->len] = 0;
    return true;
}

static bool field_int(const csv_table *t, const em3_field *fields, int i, int64_t line, int64_t *out, char *err,
                      size_t errlen) {
    char buf[32], *end;
    const em3_field *f = &fields[t->col[i]];
    errno = 0;
    if (number_text(f, buf, sizeof buf)) {
        long long v = strtoll(buf, &end, 10);
        if (!*end && !errno) {
            *out = v;
            return true;
        }
    }
    return em3_data_fail(err, errlen, "%s:%lld: column '%s': '%.*s' is not an integer", em3_csv_path(t->csv),
                         (long long)line, t->names[i], (int)(f->len > 40 ? 40 : f->len), f->p);
}

static bool field_number(const csv_table *t, const em3_field *fields, int i, int64_t line, double *out, char *err,
                         size_t errlen) {
    char buf[64], *end;
    const em3_field *f = &fields[t->col[i]];
    if (number_text(f, buf, sizeof buf)) {
        double v = strtod(buf, &end);
        if (!*end && isfinite(v)) {
            *out = v;
            return true;
        }
    }
    return em3_data_fail(err, errlen, "%s:%lld: column '%s': '%.*s' is not a finite number", em3_csv_path(t->csv),
                         (long long)line, t->names[i], (int)(f->len > 40 ? 40 : f->len), f->p);
}

static char *field_dup(const em3_field *f) {
    char *s = em3_xmalloc(f->len + 1);
    memcpy(s, f->p, f->len);
    s[f->len] = 0;
    return s;
}

static int by_movie_id(const void *a, const void *b) {
    const movie *x = a, *y = b;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return x->line < y->line ? -1 : x->line > y->line;
}

static int32_t find_movie(const movie *m, int n, int64_t id) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (m[mid].id < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && m[lo].id == id ? lo : -1;
}

/* movies.csv: movieId,title,genres; sorted by movieId, each id once. */
static bool read_movies(const char *dir, movie **out, int *n_out, char *err, size_t errlen) {
    static const char *const names[] = {"movieId", "title", "genres"};
    csv_table t;
    if (!table_open(&t, dir, "movies.csv", names, 3, err, errlen)) return false;
    movie *m = NULL;
    int n = 0, cap = 0;
    const em3_field *f;
    int64_t line;
    bool ok = true;
    while (ok && em3_csv_next(t.csv, &f, &line, err, errlen)) {
        EM3_GROW(m, cap, n + 1);
        m[n] = (movie){.line = line};
        ok = field_int(&t, f, 0, line, &m[n].id, err, errlen);
        if (ok) {
            m[n].title = field_dup(&f[t.col[1]]);
            m[n++].genres = field_dup(&f[t.col[2]]);
        }
    }
    ok = ok && !*err;
    if (ok && n) qsort(m, (size_t)n, sizeof *m, by_movie_id); /* qsort of NULL is undefined, even empty */
    for (int i = 1; ok && i < n; i++)
        if (m[i].id == m[i - 1].id)
            ok = em3_data_fail(err, errlen, "%s:%lld: movie %lld appears again (first at line %lld)",
                               em3_csv_path(t.csv), (long long)m[i].line, (long long)m[i].id,
                               (long long)m[i - 1].line);
    em3_csv_close(t.csv);
    *out = m;
    *n_out = n;
    return ok;
}

/* ratings.csv: userId,movieId,rating,timestamp; every movie must be in movies.csv. */
static bool read_ratings(const char *dir, const movie *m, int n_movies, double min_rating, rating **out,
                         int64_t *n_out, char *err, size_t errlen) {
    static const char *const names[] = {"userId", "movieId", "rating", "timestamp"};
    csv_table t;
    if (!table_open(&t, dir, "ratings.csv", names, 4, err, errlen)) return false;
    rating *r = NULL;
    int64_t n = 0, cap = 0;
    const em3_field *f;
    int64_t line;
    double value = 0;
    bool ok = true;
    while (ok && em3_csv_next(t.csv, &f, &line, err, errlen)) {
        if (n == cap) {
            cap = cap ? 2 * cap : 4096;
            r = em3_xrealloc(r, sizeof *r * (size_t)cap);
        }
        rating *x = &r[n++];
        *x = (rating){.line = line};
        ok = field_int(&t, f, 0, line, &x->user, err, errlen) && field_int(&t, f, 1, line, &x->movie_id, err, errlen) &&
             field_number(&t, f, 2, line, &value, err, errlen) && field_int(&t, f, 3, line, &x->ts, err, errlen);
        if (ok && (x->movie = find_movie(m, n_movies, x->movie_id)) < 0)
            ok = em3_data_fail(err, errlen, "%s:%lld: movie %lld is not in movies.csv", em3_csv_path(t.csv),
                               (long long)line, (long long)x->movie_id);
        x->positive = ok && value >= min_rating;
    }
    ok = ok && !*err;
    if (ok && !n) ok = em3_data_fail(err, errlen, "%s: no ratings", em3_csv_path(t.csv));
    em3_csv_close(t.csv);
    *out = r;
    *n_out = n;
    return ok;
}

/* A tag as a token: lower case, outer blanks dropped, inner runs of blanks made one space. */
static char *normalise_tag(const em3_field *f) {
    char *s = em3_xmalloc(f->len + 1);
    size_t k = 0;
    bool blank = false;
    for (size_t i = 0; i < f->len; i++) {
        char c = f->p[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            blank = k > 0;
            continue;
        }
        if (blank) s[k++] = ' ';
        blank = false;
        s[k++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    s[k] = 0;
    return s;
}

static int by_movie_text(const void *a, const void *b) {
    const tag *x = a, *y = b;
    if (x->movie != y->movie) return x->movie < y->movie ? -1 : 1;
    return strcmp(x->text, y->text);
}

/* Within a movie: the tag applied most often first, then by text. */
static int by_movie_count(const void *a, const void *b) {
    const tag *x = a, *y = b;
    if (x->movie != y->movie) return x->movie < y->movie ? -1 : 1;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return strcmp(x->text, y->text);
}

/* tags.csv (optional; of MovieLens's userId,movieId,tag,timestamp the movieId and tag). Each
 * distinct (movie, tag) once with the number of times it was applied; each movie's range of
 * them in m[].first_tag, n_tags. */
static bool read_tags(const char *dir, movie *m, int n_movies, tag **out, int *n_out, char *err, size_t errlen) {
    static const char *const names[] = {"movieId", "tag"};
    *out = NULL;
    *n_out = 0;
    char *path = em3_data_path(dir, "tags.csv");
    struct stat st;
    bool present = stat(path, &st) == 0;
    free(path);
    if (!present) return true;
    csv_table t;
    if (!table_open(&t, dir, "tags.csv", names, 2, err, errlen)) return false;
    tag *g = NULL;
    int n = 0, cap = 0;
    const em3_field *f;
    int64_t line, id;
    bool ok = true;
    while (ok && em3_csv_next(t.csv, &f, &line, err, errlen)) {
        int32_t mi = -1;
        ok = field_int(&t, f, 0, line, &id, err, errlen);
        if (ok && (mi = find_movie(m, n_movies, id)) < 0)
            ok = em3_data_fail(err, errlen, "%s:%lld: movie %lld is not in movies.csv", em3_csv_path(t.csv),
                               (long long)line, (long long)id);
        if (!ok) break;
        char *text = normalise_tag(&f[t.col[1]]);
        if (!*text) { /* an empty tag says nothing */
            free(text);
            continue;
        }
        EM3_GROW(g, cap, n + 1);
        g[n++] = (tag){mi, text, 1};
    }
    ok = ok && !*err;
    em3_csv_close(t.csv);
    if (n) qsort(g, (size_t)n, sizeof *g, by_movie_text);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (k && g[k - 1].movie == g[i].movie && !strcmp(g[k - 1].text, g[i].text)) {
            g[k - 1].count++;
            free(g[i].text);
        } else {
            g[k++] = g[i];
        }
    }
    if (k) qsort(g, (size_t)k, sizeof *g, by_movie_count);
    for (int i = 0; i < k; i++) {
        if (!m[g[i].movie].n_tags) m[g[i].movie].first_tag = i;
        m[g[i].movie].n_tags++;
    }
    *out = g;
    *n_out = k;
    return ok;
}

/* ---- item content ----------------------------------------------------------------------------- */

/* The title's release year: a trailing "(dddd)"; *end becomes the length of the rest. */
static const char *title_year(const char *title, size_t *end) {
    size_t n = strlen(title);
    while (n && title[n - 1] == ' ') n--;
    *end = n;
    if (n < 6 || title[n - 1] != ')' || title[n - 6] != '(') return NULL;
    for (size_t i = n - 5; i < n - 1; i++)
        if (title[i] < '0' || title[i] > '9') return NULL;
    *end = n - 6;
    return title + n - 5;
}

static bool word_byte(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

/* A movie's text tokens in their order: its genres, its year, its title's words, its tags. */
static void movie_tokens(const movie *m, const tag *tags, tokens *out) {
    for (const char *g = m->genres; *g;) {
        size_t n = strcspn(g, "|");
        if (n) tokens_add(out, lower_token("genre:", g, n));
        g += n + (g[n] == '|');
    }
    if (!out->n) /* an empty field says what MovieLens spells out; and the image keeps a column */
        tokens_add(out, em3_xstrdup("genre:(no genres listed)"));
    size_t end;
    const char *year = title_year(m->title, &end);
    if (year) tokens_add(out, lower_token("year:", year, 4));
    /* words: runs of letters, digits and UTF-8 bytes; an apostrophe joins ("schindler's" is one
     * word, "schindlers"), anything else separates */
    em3_strbuf w = {0};
    for (size_t i = 0; i <= end; i++) {
        unsigned char c = i < end ? (unsigned char)m->title[i] : ' ';
        if (word_byte(c)) {
            em3_sb_putc(&w, (char)c);
        } else if (c != '\'' && w.len) {
            tokens_add(out, lower_token("", w.data, w.len));
            w.len = 0;
        }
    }
    em3_sb_free(&w);
    for (int k = 0; k < m->n_tags; k++) {
        const char *text = tags[m->first_tag + k].text;
        tokens_add(out, lower_token("tag:", text, strlen(text)));
    }
}

/* The text vocabulary: tokens in at least min_count items, in byte order; ids 1.. (0 pads, the
 * last id is __OOV__). Counts are of items, not of occurrences. */
typedef struct {
    char **token;
    int64_t *items;
    int64_t n;
} vocab;

static void build_vocab(tokens *per_item, int64_t n_items, int64_t min_count, vocab *v) {
    char **all = NULL;
    int64_t n = 0, cap = 0;
    for (int64_t i = 1; i < n_items; i++) {
        tokens *t = &per_item[i];
        char **own = em3_xmalloc(sizeof *own * (size_t)(t->n + 1));
        memcpy(own, t->at, sizeof *own * (size_t)t->n);
        qsort(own, (size_t)t->n, sizeof *own, cmp_str);
        for (int k = 0; k < t->n; k++) {
            if (k && !strcmp(own[k], own[k - 1])) continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 4096;
                all = em3_xrealloc(all, sizeof *all * (size_t)cap);
            }
            all[n++] = own[k];
        }
        free(own);
    }
    qsort(all, (size_t)n, sizeof *all, cmp_str);
    *v = (vocab){em3_xmalloc(sizeof(char *) * (size_t)(n + 1)), em3_xmalloc(sizeof(int64_t) * (size_t)(n + 1)), 0};
    for (int64_t k = 0; k < n;) {
        int64_t j = k;
        while (j < n && !strcmp(all[j], all[k])) j++;
        if (j - k >= min_count) {
            v->token[v->n] = em3_xstrdup(all[k]);
            v->items[v->n++] = j - k;
        }
        k = j;
    }
    free(all);
}

static int32_t token_id(const vocab *v, const char *s) {
    int64_t lo = 0, hi = v->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (strcmp(v->token[mid], s) < 0) lo = mid + 1;
        else hi = mid;
    }
    return (int32_t)(lo < v->n && !strcmp(v->token[lo], s) ? lo + 1 : v->n + 1);
}

/* The genres as columns: every distinct genre token, in byte order. */
static int64_t genre_columns(tokens *per_item, int64_t n_items, char ***out) {
    char **g = NULL;
    int n = 0, cap = 0;
    for (int64_t i = 1; i < n_items; i++)
        for (int k = 0; k < per_item[i].n; k++)
            if (!strncmp(per_item[i].at[k], "genre:", 6)) {
                EM3_GROW(g, cap, n + 1);
                g[n++] = per_item[i].at[k];
            }
    qsort(g, (size_t)n, sizeof *g, cmp_str);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!k || strcmp(g[k - 1], g[i])) g[k++] = g[i];
    *out = g;
    return k;
}

static int64_t genre_column(char **g, int64_t n, const char *s) {
    for (int64_t k = 0; k < n; k++)
        if (!strcmp(g[k], s)) return k;
    EM3_UNREACHABLE("genre '%s' has no column", s);
}

/* ---- rows ------------------------------------------------------------------------------------- */

/* A user's ratings in time; ties by movieId, then by line (a movie rated twice at once). */
static int by_user_time(const void *a, const void *b) {
    const rating *x = a, *y = b;
    if (x->user != y->user) return x->user < y->user ? -1 : 1;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    if (x->movie_id != y->movie_id) return x->movie_id < y->movie_id ? -1 : 1;
    return x->line < y->line ? -1 : x->line > y->line;
}

/* How many of a user's n ratings go to valid (and as many to test). */
static int64_t holdout(int64_t n) { return (n * HOLDOUT_PERCENT + 50) / 100; }

static em3_split split_of(int64_t k, int64_t n) {
    int64_t h = holdout(n);
    return k >= n - h ? EM3_SPLIT_TEST : k >= n - 2 * h ? EM3_SPLIT_VALID : EM3_SPLIT_TRAIN;
}

typedef struct {
    int32_t *user[EM3_SPLIT_COUNT], *item[EM3_SPLIT_COUNT], *hist[EM3_SPLIT_COUNT];
    float *click[EM3_SPLIT_COUNT];
    int64_t rows[EM3_SPLIT_COUNT];
} rows;

/* One row per rating, per split in (user, time) order; hist = the item ids of the user's
 * `seq` ratings before it, the most recent last, padding (0) first. */
static int64_t make_rows(const rating *r, int64_t n, const movie *m, int64_t seq, rows *out) {
    int64_t users = 0, at[EM3_SPLIT_COUNT] = {0};
    for (int pass = 0; pass < 2; pass++) {
        users = 0;
        for (int64_t b = 0; b < n;) {
            int64_t e = b;
            while (e < n && r[e].user == r[b].user) e++;
            users++;
            for (int64_t k = 0; k < e - b; k++) {
                em3_split s = split_of(k, e - b);
                if (!pass) {
                    out->rows[s]++;
                    continue;
                }
                int64_t row = at[s]++, have = k < seq ? k : seq;
                out->user[s][row] = (int32_t)users;
                out->item[s][row] = m[r[b + k].movie].item;
                out->click[s][row] = r[b + k].positive;
                for (int64_t j = 0; j < have; j++)
                    out->hist[s][(row + 1) * seq - have + j] = m[r[b + k - have + j].movie].item;
            }
            b = e;
        }
        for (int s = 0; !pass && s < EM3_SPLIT_COUNT; s++) {
            out->user[s] = em3_xmalloc(sizeof(int32_t) * (size_t)(out->rows[s] + 1));
            out->item[s] = em3_xmalloc(sizeof(int32_t) * (size_t)(out->rows[s] + 1));
            out->hist[s] = em3_xcalloc((size_t)(out->rows[s] * seq + 1), sizeof(int32_t));
            out->click[s] = em3_xmalloc(sizeof(float) * (size_t)(out->rows[s] + 1));
        }
    }
    return users;
}

static void rows_free(rows *rw) {
    for (int s = 0; s < EM3_SPLIT_COUNT; s++) {
        free(rw->user[s]);
        free(rw->item[s]);
        free(rw->hist[s]);
        free(rw->click[s]);
    }
}

/* The split figures; cold items are those in valid or test rows and in no train row, as the
 * generator counts them (and em3_dataset_is_cold sees them). */
static void count_rows(const rows *rw, em3_movielens_summary *sum) {
    bool *in_train = em3_xcalloc((size_t)sum->items, sizeof *in_train), *counted = em3_xcalloc((size_t)sum->items, 1);
    for (int64_t k = 0; k < rw->rows[EM3_SPLIT_TRAIN]; k++) in_train[rw->item[EM3_SPLIT_TRAIN][k]] = true;
    for (int s = 0; s < EM3_SPLIT_COUNT; s++) {
        sum->rows[s] = rw->rows[s];
        for (int64_t k = 0; k < rw->rows[s]; k++) {
            int32_t it = rw->item[s][k];
            sum->positives[s] += rw->click[s][k] > 0;
            sum->cold_rows[s] += !in_train[it];
            sum->cold_items += !in_train[it] && !counted[it];
            counted[it] |= !in_train[it];
        }
    }
    free(in_train);
    free(counted);
}

/* ---- the item tables -------------------------------------------------------------------------- */

typedef struct {
    tokens *text; /* per item id, every token in order (before truncation) */
    vocab v;
    char **genres; /* the image's columns (tokens of `text`, not owned) */
    int64_t n_genres;
    float *image;  /* [items, 1, genres] */
    int32_t *table; /* [items, text_len] */
} content;

static void make_content(const movie *m, int n_movies, const tag *tags, const em3_movielens_options *o, content *c,
                         em3_movielens_summary *sum) {
    int64_t items = sum->items, T = o->text_len;
    c->text = em3_xcalloc((size_t)items, sizeof *c->text);
    for (int i = 0; i < n_movies; i++)
        if (m[i].item) {
            movie_tokens(&m[i], tags, &c->text[m[i].item]);
            sum->tagged_items += m[i].n_tags > 0;
        }
    build_vocab(c->text, items, o->min_count, &c->v);
    sum->words = c->v.n + 2;
    int64_t g = sum->patch_dim = c->n_genres = genre_columns(c->text, items, &c->genres);
    c->image = em3_xcalloc((size_t)(items * g), sizeof *c->image);
    c->table = em3_xcalloc((size_t)(items * T), sizeof *c->table);
    for (int64_t i = 1; i < items; i++) {
        const tokens *t = &c->text[i];
        sum->truncated_items += t->n > T;
        for (int k = 0; k < t->n; k++) {
            if (k < T) {
                int32_t id = token_id(&c->v, t->at[k]);
                c->table[i * T + k] = id;
                sum->text_tokens++;
                sum->oov_tokens += id == c->v.n + 1;
            }
            if (!strncmp(t->at[k], "genre:", 6)) c->image[i * g + genre_column(c->genres, g, t->at[k])] = 1;
        }
    }
}

static void content_free(content *c, int64_t items) {
    for (int64_t i = 0; c->text && i < items; i++) {
        tokens_clear(&c->text[i]);
        free(c->text[i].at);
    }
    for (int64_t k = 0; k < c->v.n; k++) free(c->v.token[k]);
    free(c->v.token);
    free(c->v.items);
    free(c->text);
    free(c->genres);
    free(c->image);
    free(c->table);
}

/* What the ids mean, for reading tables and predictions (not part of the description):
 * items/text_vocab.tsv, items/genres.txt, items/movies.tsv, users.tsv. */
enum { ID_FILES = 4 };

static void id_files(const content *c, const movie *m, int n_movies, const rating *r, int64_t n_ratings,
                     em3_strbuf *f, em3_data_file *out) {
    em3_sb_printf(&f[0], "id\ttoken\titems\n0\t\t0\n");
    for (int64_t k = 0; k < c->v.n; k++)
        em3_sb_printf(&f[0], "%lld\t%s\t%lld\n", (long long)k + 1, c->v.token[k], (long long)c->v.items[k]);
    em3_sb_printf(&f[0], "%lld\t__OOV__\t0\n", (long long)c->v.n + 1);
    for (int64_t k = 0; k < c->n_genres; k++) em3_sb_printf(&f[1], "%s\n", c->genres[k] + 6);
    em3_sb_printf(&f[2], "item\tmovieId\ttitle\n");
    for (int i = 0; i < n_movies; i++)
        if (m[i].item) em3_sb_printf(&f[2], "%d\t%lld\t%s\n", m[i].item, (long long)m[i].id, m[i].title);
    em3_sb_printf(&f[3], "user\tuserId\n");
    for (int64_t k = 0, u = 0; k < n_ratings; k++)
        if (!k || r[k].user != r[k - 1].user) em3_sb_printf(&f[3], "%lld\t%lld\n", (long long)++u, (long long)r[k].user);
    static const char *const names[ID_FILES] = {"items/text_vocab.tsv", "items/genres.txt", "items/movies.tsv", "users.tsv"};
    for (int k = 0; k < ID_FILES; k++) out[k] = (em3_data_file){names[k], f[k].data ? f[k].data : "", f[k].len};
}

/* ---- the conversion --------------------------------------------------------------------------- */

bool em3_data_convert_movielens(const char *src, const char *dir, const em3_movielens_options *o,
                                em3_movielens_summary *out, char *err, size_t errlen) {
    EM3_ASSERT(o->max_len > 0 && o->text_len > 0 && o->min_count > 0, "options are checked by the caller");
    *err = 0;
    movie *m = NULL;
    rating *r = NULL;
    tag *tags = NULL;
    int n_movies = 0, n_tags = 0;
    int64_t n_ratings = 0;
    bool ok = read_movies(src, &m, &n_movies, err, errlen) &&
              read_ratings(src, m, n_movies, o->min_rating, &r, &n_ratings, err, errlen) &&
              read_tags(src, m, n_movies, &tags, &n_tags, err, errlen);
    em3_movielens_summary sum = {.seq = o->max_len, .patches = 1, .text_len = o->text_len,
                                 .min_count = o->min_count, .ratings = n_ratings};
    rows rw = {0};
    content c = {0};
    em3_strbuf files[ID_FILES] = {{0}};
    if (ok) {
        /* items: the rated movies, numbered in movieId order; users likewise in rows */
        for (int64_t k = 0; k < n_ratings; k++) m[r[k].movie].item = 1;
        sum.items = 1;
        for (int i = 0; i < n_movies; i++)
            if (m[i].item) m[i].item = (int32_t)sum.items++;
        qsort(r, (size_t)n_ratings, sizeof *r, by_user_time);
        sum.users = make_rows(r, n_ratings, m, o->max_len, &rw) + 1;
        count_rows(&rw, &sum);
        make_content(m, n_movies, tags, o, &c, &sum);
        em3_data_file extra[ID_FILES];
        id_files(&c, m, n_movies, r, n_ratings, files, extra);

        char comment[512];
        snprintf(comment, sizeof comment,
                 "# MovieLens as a CTR dataset: em3 data movielens --max-len %lld --min-rating %g "
                 "--text-len %lld --min-count %lld\n"
                 "# docs/data.md (\"MovieLens\") gives the conversion rules; model_constants are what the\n"
                 "# bundled models need to fit it (em3 train applies them).\n",
                 (long long)o->max_len, o->min_rating, (long long)o->text_len, (long long)o->min_count);
        em3_ctr_data d = {.id = "movielens", .comment = comment, .users = sum.users, .items = sum.items,
                          .seq = o->max_len, .patches = 1, .patch_dim = sum.patch_dim, .text_len = o->text_len,
                          .words = sum.words, .image = c.image, .text = c.table, .extra = extra, .n_extra = ID_FILES};
        for (int s = 0; s < EM3_SPLIT_COUNT; s++) {
            d.rows[s] = rw.rows[s];
            d.user[s] = rw.user[s];
            d.item[s] = rw.item[s];
            d.hist[s] = rw.hist[s];
            d.click[s] = rw.click[s];
        }
        ok = em3_data_write_ctr(dir, &d, err, errlen);
    }
    rows_free(&rw);
    content_free(&c, sum.items);
    for (int k = 0; k < ID_FILES; k++) em3_sb_free(&files[k]);
    for (int i = 0; i < n_movies; i++) {
        free(m[i].title);
        free(m[i].genres);
    }
    for (int i = 0; i < n_tags; i++) free(tags[i].text);
    free(tags);
    free(r);
    free(m);
    if (ok && out) *out = sum;
    return ok;
}
