/* runtime/dataset.c — em3_dataset_open: find the description (YAML, a folder holding
 * dataset.yaml, or an MMRec folder), fingerprint its sources, reuse the cache when the
 * fingerprint matches and the cache verifies, import otherwise; then serve columns, item tables,
 * vocabularies and cold-item tests from the mapped cache. */
#include <errno.h>
#include <math.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data_internal.h"
#include "init.h"
#include "ir/support.h"

struct em3_dataset {
    em3_cache cache;
    char *cache_path;
    bool reused;
    int n_col;
    em3_column *col[EM3_SPLIT_COUNT]; /* n_col each, the same names in the same order */
    em3_column *table;
    int n_table;
    bool *in_train; /* per item id: occurs in a train row */
    int64_t n_items;
    char **const_name; /* the description's model_constants */
    int64_t *const_value;
    int n_const;
    const em3_dataset *parent; /* a view borrows the parent's cache, tables and constants */
    int32_t *view_ids;
};

static const char *const split_names[EM3_SPLIT_COUNT] = {"train", "valid", "test"};

const char *em3_split_name(em3_split s) {
    EM3_ASSERT(s >= 0 && s < EM3_SPLIT_COUNT, "split %d", (int)s);
    return split_names[s];
}

/* ---- where the cache goes ----------------------------------------------------------------------- */


static bool writable_dir(const char *dir) {
    if (!em3_mkdir_p(dir)) return false;
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/.em3probe.XXXXXX", dir);
    int fd = mkstemp(probe);
    if (fd < 0) return false;
    close(fd);
    unlink(probe);
    return true;
}

/* <folder>/.em3cache/NAME.em3c, or — for a read-only dataset folder — the user's cache,
 * where the name also carries a hash of the description's absolute path. */
static char *cache_path_for(const em3_data_spec *s, const char *folder, const char *cache_dir,
                            char *err, size_t errlen) {
    em3_strbuf p = {0};
    if (cache_dir) {
        if (!em3_mkdir_p(cache_dir)) {
            em3_data_fail(err, errlen, "%s: cannot create the cache folder: %s", cache_dir, strerror(errno));
            return NULL;
        }
        em3_sb_printf(&p, "%s/%s.em3c", cache_dir, s->name);
        return p.data;
    }
    em3_sb_printf(&p, "%s/.em3cache", folder);
    if (writable_dir(p.data)) {
        em3_sb_printf(&p, "/%s.em3c", s->name);
        return p.data;
    }
    p.len = 0;
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg) em3_sb_printf(&p, "%s/em3", xdg);
    else em3_sb_printf(&p, "%s/.cache/em3", home && *home ? home : "/tmp");
    if (!em3_mkdir_p(p.data)) {
        em3_data_fail(err, errlen, "%s is read-only and %s cannot be created: give a cache folder", folder, p.data);
        em3_sb_free(&p);
        return NULL;
    }
    char *abs = realpath(s->origin, NULL);
    const char *id = abs ? abs : s->origin;
    em3_sb_printf(&p, "/%s-%016" PRIx64 ".em3c", s->name, em3_xxh64(id, strlen(id), 0));
    free(abs);
    return p.data;
}

/* ---- opening ----------------------------------------------------------------------------------- */

static char *dirname_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return em3_xstrdup(".");
    char *d = em3_xstrdup(path);
    d[slash == path ? 1 : slash - path] = 0;
    return d;
}

/* The description `path` stands for, and the folder its cache belongs to. */
static em3_data_spec *load_spec(const char *path, char **folder, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st) != 0) {
        em3_data_fail(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if (!S_ISDIR(st.st_mode)) {
        *folder = dirname_of(path);
        return em3_data_spec_load(path, err, errlen);
    }
    *folder = em3_xstrdup(path);
    char *yaml = em3_xmalloc(strlen(path) + sizeof "/dataset.yaml");
    sprintf(yaml, "%s/dataset.yaml", path);
    em3_data_spec *s = NULL;
    if (stat(yaml, &st) == 0) s = em3_data_spec_load(yaml, err, errlen);
    else if (em3_data_is_mmrec(path)) s = em3_data_spec_mmrec(path, err, errlen);
    else em3_data_fail(err, errlen, "%s: neither dataset.yaml nor an MMRec NAME.inter file is here", path);
    free(yaml);
    return s;
}

static int split_of(const char *name) {
    int sp = 0;
    while (sp < EM3_SPLIT_COUNT && strcmp(name, split_names[sp])) sp++;
    return sp; /* EM3_SPLIT_COUNT: an item table */
}

/* The cache's columns by split, checked to be the same columns in every split. */
static bool organise(em3_dataset *ds, char *err, size_t errlen) {
    em3_cache *c = &ds->cache;
    int per[EM3_SPLIT_COUNT + 1] = {0};
    for (int i = 0; i < c->n_col; i++) per[split_of(c->col[i].split)]++;
    ds->n_col = per[EM3_SPLIT_TRAIN];
    ds->n_table = per[EM3_SPLIT_COUNT];
    for (int sp = 0; sp < EM3_SPLIT_COUNT; sp++)
        if (per[sp] != ds->n_col)
            return em3_data_fail(err, errlen, "%s: damaged (splits with different columns)", ds->cache_path);
    for (int sp = 0; sp < EM3_SPLIT_COUNT; sp++) ds->col[sp] = em3_xcalloc((size_t)ds->n_col + 1, sizeof *ds->col[sp]);
    ds->table = em3_xcalloc((size_t)ds->n_table + 1, sizeof *ds->table);
    memset(per, 0, sizeof per);
    for (int i = 0; i < c->n_col; i++) {
        int sp = split_of(c->col[i].split);
        if (sp == EM3_SPLIT_COUNT) ds->table[per[sp]++] = c->col[i].col;
        else ds->col[sp][per[sp]++] = c->col[i].col;
    }
    for (int sp = 1; sp < EM3_SPLIT_COUNT; sp++)
        for (int i = 0; i < ds->n_col; i++)
            if (strcmp(ds->col[sp][i].name, ds->col[0][i].name))
                return em3_data_fail(err, errlen, "%s: damaged (splits with different columns)", ds->cache_path);
    /* cold items: ids that no train row has as its item */
    const em3_column *item = c->item ? em3_dataset_find(ds, EM3_SPLIT_TRAIN, c->item) : NULL;
    if (item) {
        ds->n_items = item->vocab;
        ds->in_train = em3_xcalloc((size_t)ds->n_items + 1, sizeof *ds->in_train);
        const int32_t *ids = item->data;
        for (int64_t r = 0; r < item->rows; r++)
            if (ids[r] >= 0 && ids[r] < ds->n_items) ds->in_train[ids[r]] = true;
    }
    return true;
}

em3_dataset *em3_dataset_open(const char *path, const em3_data_options *o, char *err, size_t errlen) {
    const em3_data_options defaults = {0};
    if (!o) o = &defaults;
    char *folder = NULL;
    em3_data_spec *s = load_spec(path, &folder, err, errlen);
    em3_source_stamp *st = NULL;
    int n_st = 0;
    uint64_t fp = 0;
    em3_dataset *ds = NULL;
    char *cpath = NULL;
    if (!s || !em3_data_fingerprint(s, &st, &n_st, &fp, err, errlen) ||
        !(cpath = cache_path_for(s, folder, o->cache_dir, err, errlen)))
        goto done;
    ds = em3_xcalloc(1, sizeof *ds);
    ds->cache_path = cpath; /* ds owns it from here */
    cpath = NULL;
    struct stat sb;
    if (!o->rebuild && stat(ds->cache_path, &sb) == 0) {
        char why[1024];
        if (!em3_cache_open(ds->cache_path, &ds->cache, why, sizeof why)) {
            if (!o->quiet) fprintf(stderr, "em3: %s: rebuilding the cache: %s\n", s->name, why);
        } else if (ds->cache.fingerprint != fp) {
            if (!o->quiet) fprintf(stderr, "em3: %s: the sources changed; re-importing\n", s->name);
            em3_cache_close(&ds->cache);
        } else {
            ds->reused = true;
        }
    }
    if (!ds->reused) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (!o->quiet) fprintf(stderr, "em3: %s: importing into %s\n", s->name, ds->cache_path);
        if (!em3_data_import(s, ds->cache_path, st, n_st, fp, o->quiet, err, errlen) ||
            !em3_cache_open(ds->cache_path, &ds->cache, err, errlen)) {
            em3_dataset_free(ds);
            ds = NULL;
            goto done;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (!o->quiet)
            fprintf(stderr, "em3: %s: cache written in %.2f s\n", s->name,
                    (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    }
    if (!organise(ds, err, errlen)) {
        em3_dataset_free(ds);
        ds = NULL;
        goto done;
    }
    ds->const_name = s->const_name; /* taken over from the description */
    ds->const_value = s->const_value;
    ds->n_const = s->n_const;
    s->const_name = NULL;
    s->const_value = NULL;
    s->n_const = 0;
done:
    free(cpath);
    em3_source_stamps_free(st, n_st);
    em3_data_spec_free(s);
    free(folder);
    return ds;
}

void em3_dataset_free(em3_dataset *ds) {
    if (!ds) return;
    for (int sp = 0; sp < EM3_SPLIT_COUNT; sp++) free(ds->col[sp]);
    if (ds->parent) {
        free(ds->view_ids);
        free(ds);
        return;
    }
    for (int i = 0; i < ds->n_const; i++) free(ds->const_name[i]);
    free(ds->const_name);
    free(ds->const_value);
    em3_cache_close(&ds->cache);
    free(ds->table);
    free(ds->in_train);
    free(ds->cache_path);
    free(ds);
}

em3_dataset *em3_dataset_items_view(const em3_dataset *parent, double valid_fraction, uint64_t seed,
                                    char *err, size_t errlen) {
    if (parent->n_table == 0) {
        em3_data_fail(err, errlen, "dataset %s has no item tables to train on", em3_dataset_name(parent));
        return NULL;
    }
    int64_t items = parent->table[0].rows, n = items - 1;
    int64_t n_valid = (int64_t)((double)n * valid_fraction + 0.5);
    if (n < 2 || n_valid < 1 || n_valid >= n) {
        em3_data_fail(err, errlen, "dataset %s: %lld items cannot be split with a valid fraction of %g",
                      em3_dataset_name(parent), (long long)n, valid_fraction);
        return NULL;
    }
    em3_dataset *v = em3_xcalloc(1, sizeof *v);
    v->parent = parent;
    v->reused = parent->reused;
    v->table = parent->table;
    v->n_table = parent->n_table;
    v->const_name = parent->const_name;
    v->const_value = parent->const_value;
    v->n_const = parent->n_const;
    /* ids 1..n in a seeded order: the first n_valid are held out */
    v->view_ids = em3_xmalloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) v->view_ids[i] = (int32_t)(i + 1);
    em3_rng r;
    em3_rng_seed(&r, seed ^ 0x5EEDFACEu);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)em3_rng_below(&r, (uint64_t)i + 1);
        int32_t t = v->view_ids[i];
        v->view_ids[i] = v->view_ids[j];
        v->view_ids[j] = t;
    }
    const int64_t rows[EM3_SPLIT_COUNT] = {n - n_valid, n_valid, 0};
    const int32_t *at[EM3_SPLIT_COUNT] = {v->view_ids + n_valid, v->view_ids, v->view_ids};
    v->n_col = 1;
    for (int sp = 0; sp < EM3_SPLIT_COUNT; sp++) {
        v->col[sp] = em3_xcalloc(1, sizeof *v->col[sp]);
        v->col[sp][0] = (em3_column){.name = "item", .kind = EM3_COL_CATEGORICAL, .dtype = EM3_DTYPE_I32,
                                     .rows = rows[sp], .vocab = items, .data = at[sp]};
    }
    return v;
}

/* ---- access ------------------------------------------------------------------------------------ */

const char *em3_dataset_name(const em3_dataset *ds) { return ds->parent ? ds->parent->cache.name : ds->cache.name; }
const char *em3_dataset_cache_path(const em3_dataset *ds) {
    return ds->parent ? ds->parent->cache_path : ds->cache_path;
}
bool em3_dataset_cache_reused(const em3_dataset *ds) { return ds->reused; }
int em3_dataset_column_count(const em3_dataset *ds) { return ds->n_col; }
int em3_dataset_table_count(const em3_dataset *ds) { return ds->n_table; }
const char *em3_dataset_label(const em3_dataset *ds) { return ds->cache.label; }
const char *em3_dataset_group(const em3_dataset *ds) { return ds->cache.group; }
const char *em3_dataset_item(const em3_dataset *ds) { return ds->cache.item; }

int64_t em3_dataset_rows(const em3_dataset *ds, em3_split s) {
    EM3_ASSERT(s >= 0 && s < EM3_SPLIT_COUNT, "split %d", (int)s);
    return ds->n_col ? ds->col[s][0].rows : 0;
}

const em3_column *em3_dataset_column(const em3_dataset *ds, em3_split s, int i) {
    EM3_ASSERT(s >= 0 && s < EM3_SPLIT_COUNT, "split %d", (int)s);
    return i >= 0 && i < ds->n_col ? &ds->col[s][i] : NULL;
}

const em3_column *em3_dataset_find(const em3_dataset *ds, em3_split s, const char *name) {
    EM3_ASSERT(s >= 0 && s < EM3_SPLIT_COUNT, "split %d", (int)s);
    for (int i = 0; i < ds->n_col; i++)
        if (!strcmp(ds->col[s][i].name, name)) return &ds->col[s][i];
    return NULL;
}

const em3_column *em3_dataset_table(const em3_dataset *ds, int i) {
    return i >= 0 && i < ds->n_table ? &ds->table[i] : NULL;
}

const em3_column *em3_dataset_find_table(const em3_dataset *ds, const char *name) {
    for (int i = 0; i < ds->n_table; i++)
        if (!strcmp(ds->table[i].name, name)) return &ds->table[i];
    return NULL;
}

bool em3_dataset_is_cold(const em3_dataset *ds, int32_t item) {
    return ds->in_train && item > 0 && (item >= ds->n_items || !ds->in_train[item]);
}

const char *em3_dataset_token(const em3_dataset *ds, const char *column, int64_t id) {
    if (ds->parent) return em3_dataset_token(ds->parent, column, id);
    const em3_column *c = em3_dataset_find(ds, EM3_SPLIT_TRAIN, column);
    if (!c) c = em3_dataset_find_table(ds, column);
    if (!c) return NULL;
    const char *owner = c->shares ? c->shares : c->name;
    for (int i = 0; i < ds->cache.n_vocab; i++) {
        const em3_cache_vocab *v = &ds->cache.vocab[i];
        if (!strcmp(v->name, owner)) return id >= 0 && id < v->count ? v->blob + v->offsets[id] : NULL;
    }
    return NULL;
}

em3_float_stats em3_float_stats_of(const float *x, int64_t n) {
    EM3_ASSERT(n > 0, "statistics of %lld values", (long long)n);
    em3_float_stats st = {.min = x[0], .max = x[0]};
    for (int64_t k = 0; k < n; k++) {
        st.min = fmin(st.min, x[k]), st.max = fmax(st.max, x[k]);
        st.mean += x[k];
    }
    st.mean /= (double)n;
    for (int64_t k = 0; k < n; k++) st.std += (x[k] - st.mean) * (x[k] - st.mean);
    st.std = sqrt(st.std / (double)n);
    return st;
}

void em3_column_gather(const em3_column *c, const int64_t *rows, int64_t n, void *out) {
    size_t row_bytes = 4;
    for (int i = 0; i < c->rank; i++) row_bytes *= (size_t)c->dim[i];
    for (int64_t k = 0; k < n; k++) {
        EM3_ASSERT(rows[k] >= 0 && rows[k] < c->rows, "row %lld of column %s (%lld rows)",
                   (long long)rows[k], c->name, (long long)c->rows);
        memcpy((char *)out + (size_t)k * row_bytes, (const char *)c->data + (size_t)rows[k] * row_bytes, row_bytes);
    }
}

int em3_dataset_constant_count(const em3_dataset *ds) { return ds->n_const; }

const char *em3_dataset_constant(const em3_dataset *ds, int i, int64_t *value) {
    EM3_ASSERT(i >= 0 && i < ds->n_const, "constant %d of %d", i, ds->n_const);
    *value = ds->const_value[i];
    return ds->const_name[i];
}
