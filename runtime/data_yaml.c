/* runtime/data_yaml.c — the YAML description of a dataset (FuxiCTR's dataset_config convention
 * plus item side tables), parsed with libyaml into an em3_data_spec, and the checks that tie
 * its features together. Every mistake is reported as FILE:LINE:COL. docs/data.md lists the keys. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "data_internal.h"
#include "ir/support.h"

bool em3_data_fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return false;
}

static const char *const kind_names[] = {
    [EM3_COL_CATEGORICAL] = "categorical", [EM3_COL_NUMERIC] = "numeric",
    [EM3_COL_SEQUENCE] = "sequence",       [EM3_COL_EMBEDDING] = "embedding",
    [EM3_COL_META] = "meta",               [EM3_COL_LABEL] = "label",
};

const char *em3_col_kind_name(em3_col_kind k) {
    EM3_ASSERT(k >= 0 && k <= EM3_COL_LABEL, "column kind %d", (int)k);
    return kind_names[k];
}

bool em3_col_kind_parse(const char *s, em3_col_kind *out) {
    for (int k = 0; k <= EM3_COL_LABEL; k++)
        if (!strcmp(s, kind_names[k])) {
            *out = (em3_col_kind)k;
            return true;
        }
    return false;
}

void em3_data_spec_free(em3_data_spec *s) {
    if (!s) return;
    for (int i = 0; i < s->n_feat; i++) {
        free(s->feat[i].name);
        free(s->feat[i].source);
        free(s->feat[i].share_name);
    }
    for (int i = 0; i < s->n_table; i++) {
        free(s->table[i].name);
        free(s->table[i].file);
        free(s->table[i].array);
    }
    for (int i = 0; i < s->n_const; i++) free(s->const_name[i]);
    free(s->const_name);
    free(s->const_value);
    for (int i = 0; i < EM3_SPLIT_COUNT; i++) {
        free(s->split_file[i]);
        free(s->split_value[i]);
    }
    free(s->feat);
    free(s->table);
    free(s->name);
    free(s->origin);
    free(s->text);
    free(s->data_file);
    free(s->split_col);
    free(s->group_name);
    free(s->item_name);
    free(s);
}

bool em3_data_has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && !strcmp(s + n - k, suffix);
}

em3_data_format em3_data_source_format(const em3_data_spec *s, const char *path) {
    if (s->format != EM3_FMT_AUTO) return s->format;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return EM3_FMT_NPY_DIR;
    return em3_data_has_suffix(path, ".npz") ? EM3_FMT_NPZ : EM3_FMT_CSV;
}

/* ---- walking the document --------------------------------------------------------------------- */

typedef struct {
    yaml_document_t doc;
    const char *path;
    char *base; /* folder that relative paths start from */
    char *err;
    size_t errlen;
} yctx;

static bool yfail(yctx *y, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool yfail(yctx *y, const yaml_node_t *n, const char *fmt, ...) {
    int k = snprintf(y->err, y->errlen, "%s:%d:%d: ", y->path, (int)n->start_mark.line + 1,
                     (int)n->start_mark.column + 1);
    va_list ap;
    va_start(ap, fmt);
    if (k >= 0 && (size_t)k < y->errlen) vsnprintf(y->err + k, y->errlen - (size_t)k, fmt, ap);
    va_end(ap);
    return false;
}

static yaml_node_t *node(yctx *y, int index) { return yaml_document_get_node(&y->doc, index); }

static bool scalar(yctx *y, const yaml_node_t *n, const char *what, const char **out) {
    *out = "";
    if (n->type != YAML_SCALAR_NODE) return yfail(y, n, "%s must be a single value", what);
    *out = (const char *)n->data.scalar.value;
    return true;
}

static bool get_string(yctx *y, const yaml_node_t *n, const char *what, char **out) {
    const char *v;
    if (!scalar(y, n, what, &v)) return false;
    if (!*v) return yfail(y, n, "%s must not be empty", what);
    free(*out);
    *out = em3_xstrdup(v);
    return true;
}

static bool get_int(yctx *y, const yaml_node_t *n, const char *what, int64_t lo, int64_t *out) {
    const char *v;
    if (!scalar(y, n, what, &v)) return false;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < lo)
        return yfail(y, n, "%s must be an integer of at least %lld, not '%s'", what, (long long)lo, v);
    *out = x;
    return true;
}

static bool get_double(yctx *y, const yaml_node_t *n, const char *what, double *out) {
    const char *v;
    if (!scalar(y, n, what, &v)) return false;
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || x != x || x - x != 0) return yfail(y, n, "%s must be a finite number, not '%s'", what, v);
    *out = x;
    return true;
}

static bool get_bool(yctx *y, const yaml_node_t *n, const char *what, bool *out) {
    const char *v;
    if (!scalar(y, n, what, &v)) return false;
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes", "on"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No", "off"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        if (!strcmp(v, yes[i]) || !strcmp(v, no[i])) {
            *out = !strcmp(v, yes[i]);
            return true;
        }
    }
    return yfail(y, n, "%s must be true or false, not '%s'", what, v);
}

/* One character; "\t" (unquoted, so not unescaped by YAML) also means a tab. */
static bool get_char(yctx *y, const yaml_node_t *n, const char *what, char *out) {
    const char *v;
    if (!scalar(y, n, what, &v)) return false;
    if (!strcmp(v, "\\t")) v = "\t";
    if (strlen(v) != 1 || *v == '\n' || *v == '"')
        return yfail(y, n, "%s must be one character, not '%s'", what, v);
    *out = *v;
    return true;
}

static bool get_choice(yctx *y, const yaml_node_t *n, const char *what, const char *const *choices,
                       int *out) {
    const char *v;
    if (!scalar(y, n, what, &v)) return false;
    em3_strbuf list = {0};
    for (int i = 0; choices[i]; i++) {
        if (!strcmp(v, choices[i])) {
            *out = i;
            em3_sb_free(&list);
            return true;
        }
        em3_sb_printf(&list, "%s%s", i ? ", " : "", choices[i]);
    }
    yfail(y, n, "%s must be one of %s, not '%s'", what, list.data, v);
    em3_sb_free(&list);
    return false;
}

/* A path relative to the description's folder (or data_root). */
static char *resolve(yctx *y, const char *p) {
    if (p[0] == '/' || !y->base) return em3_xstrdup(p);
    char *r = em3_xmalloc(strlen(y->base) + strlen(p) + 2);
    sprintf(r, "%s/%s", y->base, p);
    return r;
}

static bool get_path(yctx *y, const yaml_node_t *n, const char *what, char **out) {
    const char *v;
    if (!scalar(y, n, what, &v)) return false;
    if (!*v) return yfail(y, n, "%s must not be empty", what);
    free(*out);
    *out = resolve(y, v);
    return true;
}

static bool want(yctx *y, const yaml_node_t *n, yaml_node_type_t t, const char *what) {
    if (n->type == t) return true;
    return yfail(y, n, "%s must be a %s", what,
                 t == YAML_MAPPING_NODE ? "mapping (key: value, ...)" : "list");
}

/* Keys of FuxiCTR's configurations that only its models (or its own loader) read: accepted
 * and ignored, so that its files load unchanged. */
static bool in_list(const char *k, const char *const *list) {
    for (int i = 0; list[i]; i++)
        if (!strcmp(k, list[i])) return true;
    return false;
}
static const char *const fuxictr_feature_keys[] = {"source", "feature_encoder", "emb_output_dim",
                                                    "dtype", NULL};
static const char *const fuxictr_top_keys[] = {"rebuild_dataset", "data_block_size", "streaming", NULL};

/* ---- features ------------------------------------------------------------------------------- */

static em3_feature_spec default_feature(void) {
    return (em3_feature_spec){.kind = EM3_COL_CATEGORICAL, .min_count = -1, .share = -1,
                              .splitter = '^', .line = 0};
}

static void add_feature(em3_data_spec *s, const em3_feature_spec *f, const char *name) {
    s->feat = em3_xrealloc(s->feat, sizeof *s->feat * (size_t)(s->n_feat + 1));
    em3_feature_spec *g = &s->feat[s->n_feat++];
    *g = *f;
    g->name = em3_xstrdup(name);
    g->source = em3_xstrdup(f->source ? f->source : name);
    g->share_name = f->share_name ? em3_xstrdup(f->share_name) : NULL;
}

/* One entry of feature_cols (or the label_col): a mapping whose `name` may list several
 * columns that take the same settings. */
static bool parse_feature(yctx *y, em3_data_spec *s, yaml_node_t *map, bool label, int64_t min_count) {
    if (!want(y, map, YAML_MAPPING_NODE, label ? "label_col" : "an entry of feature_cols")) return false;
    em3_feature_spec f = default_feature();
    f.kind = label ? EM3_COL_LABEL : f.kind;
    f.line = (int)map->start_mark.line + 1;
    yaml_node_t *names = NULL, *type = NULL;
    bool active = true, ok = true;
    static const char *const encodings[] = {"vocab", "identity", NULL};
    static const char *const paddings[] = {"pre", "post", NULL};
    static const char *const normalizers[] = {"none", "StandardScaler", "MinMaxScaler", NULL};
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(y, p->key), *v = node(y, p->value);
        const char *key;
        if (!(ok = scalar(y, k, "a key", &key))) break;
        if (!strcmp(key, "name")) names = v;
        else if (!strcmp(key, "type") && !label) type = v;
        else if (!strcmp(key, "active")) ok = get_bool(y, v, key, &active);
        else if (!strcmp(key, "column")) ok = get_string(y, v, key, &f.source);
        else if (!strcmp(key, "encoding")) {
            int e = 0;
            ok = get_choice(y, v, key, encodings, &e);
            f.enc = (em3_encoding)e;
        } else if (!strcmp(key, "vocab_size")) ok = get_int(y, v, key, 1, &f.vocab_size);
        else if (!strcmp(key, "id_offset")) ok = get_int(y, v, key, 0, &f.id_offset);
        else if (!strcmp(key, "min_categr_count")) ok = get_int(y, v, key, 1, &f.min_count);
        else if (!strcmp(key, "max_len")) ok = get_int(y, v, key, 1, &f.max_len);
        else if (!strcmp(key, "padding")) {
            int post = 0;
            ok = get_choice(y, v, key, paddings, &post);
            f.pad_post = post == 1;
        } else if (!strcmp(key, "splitter")) ok = get_char(y, v, key, &f.splitter);
        else if (!strcmp(key, "share_embedding")) ok = get_string(y, v, key, &f.share_name);
        else if (!strcmp(key, "embedding_dim")) ok = get_int(y, v, key, 1, &f.dim);
        else if (!strcmp(key, "fill_na")) ok = get_double(y, v, key, &f.fill_na);
        else if (!strcmp(key, "normalizer")) {
            int e = 0;
            ok = get_choice(y, v, key, normalizers, &e);
            f.normalizer = (em3_normalizer)e;
        }
        else if (!in_list(key, fuxictr_feature_keys)) ok = yfail(y, k, "unknown key '%s' in a %s", key, label ? "label_col" : "feature");
        if (!ok) break;
    }
    if (ok && !names) ok = yfail(y, map, "a %s needs a name", label ? "label_col" : "feature");
    if (ok && type) {
        const char *t;
        ok = scalar(y, type, "type", &t);
        if (ok && (!em3_col_kind_parse(t, &f.kind) || f.kind == EM3_COL_LABEL))
            ok = yfail(y, type, "type must be categorical, numeric, sequence, meta or embedding, not '%s'", t);
    } else if (ok && !label) {
        ok = yfail(y, map, "a feature needs a type");
    }
    if (ok && f.min_count < 0) f.min_count = min_count;
    if (ok && f.kind != EM3_COL_SEQUENCE && f.kind != EM3_COL_EMBEDDING && f.splitter != '^')
        ok = yfail(y, map, "splitter applies to sequence and embedding features only");
    if (ok && f.kind != EM3_COL_SEQUENCE && (f.max_len || f.pad_post))
        ok = yfail(y, map, "max_len and padding apply to sequence features only");
    if (ok && f.kind != EM3_COL_NUMERIC && f.normalizer != EM3_NORM_NONE)
        ok = yfail(y, map, "normalizer applies to numeric features only");
    if (f.kind != EM3_COL_EMBEDDING) f.dim = 0; /* FuxiCTR's embedding width: the model's business */
    if (ok && names->type == YAML_SEQUENCE_NODE) {
        if (f.source) ok = yfail(y, map, "column applies to a single name, not a list");
        for (yaml_node_item_t *it = names->data.sequence.items.start;
             ok && it < names->data.sequence.items.top; it++) {
            const char *n;
            if ((ok = scalar(y, node(y, *it), "a name", &n)) && active) add_feature(s, &f, n);
        }
    } else if (ok) {
        const char *n;
        if ((ok = scalar(y, names, "name", &n)) && active) add_feature(s, &f, n);
    }
    free(f.source);
    free(f.share_name);
    return ok;
}

static bool parse_table(yctx *y, em3_data_spec *s, yaml_node_t *map) {
    if (!want(y, map, YAML_MAPPING_NODE, "an entry of item_tables")) return false;
    em3_table_spec t = {.kind = EM3_COL_EMBEDDING, .line = (int)map->start_mark.line + 1};
    bool ok = true;
    static const char *const kinds[] = {"embedding", "sequence", NULL};
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(y, p->key), *v = node(y, p->value);
        const char *key;
        if (!(ok = scalar(y, k, "a key", &key))) break;
        if (!strcmp(key, "name")) ok = get_string(y, v, key, &t.name);
        else if (!strcmp(key, "file")) ok = get_path(y, v, key, &t.file);
        else if (!strcmp(key, "array")) ok = get_string(y, v, key, &t.array);
        else if (!strcmp(key, "type")) {
            int c = 0;
            ok = get_choice(y, v, key, kinds, &c);
            t.kind = c ? EM3_COL_SEQUENCE : EM3_COL_EMBEDDING;
        } else if (!strcmp(key, "vocab_size")) ok = get_int(y, v, key, 1, &t.vocab_size);
        else ok = yfail(y, k, "unknown key '%s' in an item table", key);
        if (!ok) break;
    }
    if (ok && (!t.name || !t.file)) ok = yfail(y, map, "an item table needs a name and a file");
    if (ok && t.array && !em3_data_has_suffix(t.file, ".npz"))
        ok = yfail(y, map, "array names a member of an .npz file; '%s' is not one", t.file);
    if (ok && !t.array && em3_data_has_suffix(t.file, ".npz")) t.array = em3_xstrdup(t.name);
    if (ok && t.kind == EM3_COL_EMBEDDING && t.vocab_size)
        ok = yfail(y, map, "vocab_size applies to tables of token ids (type: sequence)");
    if (!ok) {
        free(t.name);
        free(t.file);
        free(t.array);
        return false;
    }
    s->table = em3_xrealloc(s->table, sizeof *s->table * (size_t)(s->n_table + 1));
    s->table[s->n_table++] = t;
    return true;
}

static bool parse_split_col(yctx *y, em3_data_spec *s, yaml_node_t *map) {
    if (!want(y, map, YAML_MAPPING_NODE, "split_col")) return false;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(y, p->key), *v = node(y, p->value);
        const char *key;
        if (!scalar(y, k, "a key", &key)) return false;
        bool ok;
        if (!strcmp(key, "name")) {
            ok = get_string(y, v, key, &s->split_col);
        } else {
            int sp = 0;
            while (sp < EM3_SPLIT_COUNT && strcmp(key, em3_split_name((em3_split)sp))) sp++;
            if (sp == EM3_SPLIT_COUNT)
                return yfail(y, k, "split_col takes name, train, valid and test, not '%s'", key);
            const char *val;
            ok = scalar(y, v, key, &val);
            if (ok) s->split_value[sp] = em3_xstrdup(val);
        }
        if (!ok) return false;
    }
    if (!s->split_col || !s->split_value[EM3_SPLIT_TRAIN])
        return yfail(y, map, "split_col needs a name and the value that marks train rows");
    return true;
}

/* ---- the document ----------------------------------------------------------------------------- */

static const char *const top_keys[] = {
    "dataset_id", "data_root", "data_format", "train_data", "valid_data", "test_data", "data",
    "split_col", "separator", "min_categr_count", "feature_cols", "label_col", "group_id",
    "item_id", "item_tables", "model_constants", NULL};

static bool is_top_key(const char *k) {
    for (int i = 0; top_keys[i]; i++)
        if (!strcmp(k, top_keys[i])) return true;
    return in_list(k, fuxictr_top_keys);
}

static yaml_node_t *find_key(yctx *y, yaml_node_t *map, const char *key) {
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(y, p->key);
        if (k->type == YAML_SCALAR_NODE && !strcmp((char *)k->data.scalar.value, key))
            return node(y, p->value);
    }
    return NULL;
}

static bool parse_top(yctx *y, em3_data_spec *s, yaml_node_t *map) {
    /* data_root first: the paths of the other keys start there. */
    yaml_node_t *root = find_key(y, map, "data_root");
    if (root) {
        const char *r;
        if (!scalar(y, root, "data_root", &r)) return false;
        char *base = resolve(y, r);
        free(y->base);
        y->base = base;
    }
    int64_t min_count = 1;
    yaml_node_t *mc = find_key(y, map, "min_categr_count");
    if (mc && !get_int(y, mc, "min_categr_count", 1, &min_count)) return false;

    static const char *const formats[] = {"auto", "csv", "npz", "npy", NULL};
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(y, p->key), *v = node(y, p->value);
        const char *key;
        if (!scalar(y, k, "a key", &key)) return false;
        bool ok = true;
        int sp = !strcmp(key, "train_data") ? 0 : !strcmp(key, "valid_data") ? 1 : !strcmp(key, "test_data") ? 2 : -1;
        if (sp >= 0) {
            ok = get_path(y, v, key, &s->split_file[sp]);
            s->split_line[sp] = (int)v->start_mark.line + 1;
        } else if (!strcmp(key, "dataset_id")) {
            ok = get_string(y, v, key, &s->name);
        } else if (!strcmp(key, "data")) {
            ok = get_path(y, v, key, &s->data_file);
            s->data_line = (int)v->start_mark.line + 1;
        } else if (!strcmp(key, "data_format")) {
            int f = 0;
            ok = get_choice(y, v, key, formats, &f);
            s->format = (em3_data_format)f;
        } else if (!strcmp(key, "split_col")) {
            ok = parse_split_col(y, s, v);
        } else if (!strcmp(key, "separator")) {
            ok = get_char(y, v, key, &s->separator);
        } else if (!strcmp(key, "feature_cols")) {
            ok = want(y, v, YAML_SEQUENCE_NODE, key);
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 ok && it < v->data.sequence.items.top; it++)
                ok = parse_feature(y, s, node(y, *it), false, min_count);
        } else if (!strcmp(key, "label_col")) {
            yaml_node_t *l = v;
            if (l->type == YAML_SEQUENCE_NODE) {
                if (l->data.sequence.items.top - l->data.sequence.items.start != 1)
                    return yfail(y, l, "label_col: one label is supported");
                l = node(y, *l->data.sequence.items.start);
            }
            ok = parse_feature(y, s, l, true, min_count);
        } else if (!strcmp(key, "group_id")) {
            ok = get_string(y, v, key, &s->group_name);
        } else if (!strcmp(key, "item_id")) {
            ok = get_string(y, v, key, &s->item_name);
        } else if (!strcmp(key, "model_constants")) {
            ok = want(y, v, YAML_MAPPING_NODE, key);
            for (yaml_node_pair_t *c = ok ? v->data.mapping.pairs.start : NULL; ok && c < v->data.mapping.pairs.top; c++) {
                const char *name;
                int64_t value;
                ok = scalar(y, node(y, c->key), "a constant's name", &name) &&
                     get_int(y, node(y, c->value), name, INT64_MIN, &value);
                if (!ok) break;
                s->const_name = em3_xrealloc(s->const_name, sizeof(char *) * (size_t)(s->n_const + 1));
                s->const_value = em3_xrealloc(s->const_value, sizeof(int64_t) * (size_t)(s->n_const + 1));
                s->const_name[s->n_const] = em3_xstrdup(name);
                s->const_value[s->n_const++] = value;
            }
        } else if (!strcmp(key, "item_tables")) {
            ok = want(y, v, YAML_SEQUENCE_NODE, key);
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 ok && it < v->data.sequence.items.top; it++)
                ok = parse_table(y, s, node(y, *it));
        } else if (!is_top_key(key)) {
            ok = yfail(y, k, "unknown key '%s' (see docs/data.md for the keys of a dataset)", key);
        }
        if (!ok) return false;
    }
    if (!s->split_file[EM3_SPLIT_TRAIN] && !s->data_file)
        return yfail(y, map, "the dataset needs train_data (or data with split_col)");
    if (s->data_file && (!s->split_col || s->split_file[0] || s->split_file[1] || s->split_file[2]))
        return yfail(y, map, "data (one file for all splits) goes with split_col and without "
                             "train_data/valid_data/test_data");
    if (s->split_col && !s->data_file) return yfail(y, map, "split_col needs data (the file it splits)");
    return true;
}

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return em3_xstrdup(".");
    if (slash == path) return em3_xstrdup("/");
    char *d = em3_xstrdup(path);
    d[slash - path] = 0;
    return d;
}

static char *read_text(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        em3_data_fail(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    em3_strbuf sb = {0};
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, fp)) > 0) em3_sb_printf(&sb, "%.*s", (int)n, buf);
    bool bad = ferror(fp) || memchr(sb.data ? sb.data : "", 0, sb.len);
    fclose(fp);
    if (bad) {
        em3_sb_free(&sb);
        em3_data_fail(err, errlen, "%s: cannot read (or not a text file)", path);
        return NULL;
    }
    *len = sb.len;
    return sb.data ? sb.data : em3_xstrdup("");
}

em3_data_spec *em3_data_spec_load(const char *yaml_path, char *err, size_t errlen) {
    em3_data_spec *s = em3_xcalloc(1, sizeof *s);
    s->group = s->item = -1;
    s->origin = em3_xstrdup(yaml_path);
    if (!(s->text = read_text(yaml_path, &s->text_len, err, errlen))) {
        em3_data_spec_free(s);
        return NULL;
    }
    yctx y = {.path = yaml_path, .base = dir_of(yaml_path), .err = err, .errlen = errlen};
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)s->text, s->text_len);
    bool ok = yaml_parser_load(&parser, &y.doc);
    if (!ok) {
        yaml_mark_t m = parser.problem_mark;
        em3_data_fail(err, errlen, "%s:%d:%d: malformed YAML: %s%s%s", yaml_path, (int)m.line + 1,
                      (int)m.column + 1, parser.problem ? parser.problem : "syntax error",
                      parser.context ? " " : "", parser.context ? parser.context : "");
    }
    yaml_parser_delete(&parser);
    if (ok) {
        yaml_node_t *root = yaml_document_get_root_node(&y.doc);
        if (!root) {
            ok = em3_data_fail(err, errlen, "%s: empty dataset description", yaml_path);
        } else if ((ok = want(&y, root, YAML_MAPPING_NODE, "a dataset description"))) {
            /* FuxiCTR's form: one top-level key, the dataset id, over the description. */
            yaml_node_pair_t *p = root->data.mapping.pairs.start;
            yaml_node_t *k0 = root->data.mapping.pairs.top - p == 1 ? node(&y, p->key) : NULL;
            if (k0 && k0->type == YAML_SCALAR_NODE && !is_top_key((char *)k0->data.scalar.value) &&
                node(&y, p->value)->type == YAML_MAPPING_NODE) {
                s->name = em3_xstrdup((char *)k0->data.scalar.value);
                root = node(&y, p->value);
            }
            ok = parse_top(&y, s, root);
        }
        yaml_document_delete(&y.doc);
    }
    if (ok && !s->name) { /* the folder's name, made a name: "my-data.v2" becomes "my_data_v2" */
        char *d = dir_of(yaml_path);
        char *abs = realpath(d, NULL);
        const char *base = strrchr(abs ? abs : d, '/');
        em3_strbuf name = {0};
        em3_sb_printf(&name, "%s%s", base && base[1] >= '0' && base[1] <= '9' ? "_" : "",
                      base && base[1] ? base + 1 : "dataset");
        for (char *c = name.data; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9'))) *c = '_';
        s->name = name.data;
        free(abs);
        free(d);
    }
    free(y.base);
    if (ok) ok = em3_data_spec_check(s, err, errlen);
    if (!ok) {
        em3_data_spec_free(s);
        return NULL;
    }
    return s;
}

/* ---- consistency ------------------------------------------------------------------------------ */

static bool is_ident(const char *s) {
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return false;
    for (s++; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

static int find_feature(const em3_data_spec *s, const char *name) {
    for (int i = 0; i < s->n_feat; i++)
        if (!strcmp(s->feat[i].name, name)) return i;
    return -1;
}

/* Messages about a feature point at the line that declares it. */
static bool ffail(const em3_data_spec *s, int line, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static bool ffail(const em3_data_spec *s, int line, char *err, size_t errlen, const char *fmt, ...) {
    int k = line ? snprintf(err, errlen, "%s:%d: ", s->origin, line) : snprintf(err, errlen, "%s: ", s->origin);
    va_list ap;
    va_start(ap, fmt);
    if (k >= 0 && (size_t)k < errlen) vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
    va_end(ap);
    return false;
}

static bool resolve_role(em3_data_spec *s, const char *name, const char *role, int *out, char *err,
                         size_t errlen) {
    *out = -1;
    if (!name) return true;
    int i = find_feature(s, name);
    if (i < 0) return ffail(s, 0, err, errlen, "%s '%s' is not a feature", role, name);
    if (s->feat[i].kind != EM3_COL_CATEGORICAL && s->feat[i].kind != EM3_COL_META)
        return ffail(s, s->feat[i].line, err, errlen, "%s '%s' must be a categorical or meta feature",
                     role, name);
    *out = i;
    return true;
}

bool em3_data_spec_check(em3_data_spec *s, char *err, size_t errlen) {
    if (!is_ident(s->name))
        return ffail(s, 0, err, errlen, "dataset_id '%s' must be a name (letters, digits, _)", s->name);
    int labels = 0;
    for (int i = 0; i < s->n_feat; i++) {
        em3_feature_spec *f = &s->feat[i];
        if (!is_ident(f->name))
            return ffail(s, f->line, err, errlen, "column name '%s' must be a name (letters, digits, _) "
                         "to match a model input", f->name);
        for (int j = 0; j < i; j++)
            if (!strcmp(s->feat[j].name, f->name))
                return ffail(s, f->line, err, errlen, "column '%s' is declared twice", f->name);
        labels += f->kind == EM3_COL_LABEL;
    }
    if (labels > 1) return ffail(s, 0, err, errlen, "more than one label_col");
    for (int i = 0; i < s->n_table; i++) {
        if (!is_ident(s->table[i].name))
            return ffail(s, s->table[i].line, err, errlen, "table name '%s' must be a name", s->table[i].name);
        if (find_feature(s, s->table[i].name) >= 0)
            return ffail(s, s->table[i].line, err, errlen, "table '%s' has the name of a column",
                         s->table[i].name);
        for (int j = 0; j < i; j++)
            if (!strcmp(s->table[j].name, s->table[i].name))
                return ffail(s, s->table[i].line, err, errlen, "table '%s' is declared twice", s->table[i].name);
    }
    /* Sharing: a feature takes its vocabulary settings from the feature it shares, following
     * chains to the owner. */
    for (int i = 0; i < s->n_feat; i++) {
        em3_feature_spec *f = &s->feat[i];
        f->share = -1;
        if (!f->share_name) continue;
        if (f->kind != EM3_COL_SEQUENCE && f->kind != EM3_COL_CATEGORICAL)
            return ffail(s, f->line, err, errlen, "share_embedding applies to categorical and sequence features");
        int o = find_feature(s, f->share_name), hops = 0;
        if (o < 0) return ffail(s, f->line, err, errlen, "'%s' shares '%s', which is not a feature", f->name, f->share_name);
        while (s->feat[o].share_name && hops++ < s->n_feat) o = find_feature(s, s->feat[o].share_name);
        if (o < 0 || o == i || hops > s->n_feat)
            return ffail(s, f->line, err, errlen, "share_embedding of '%s' goes round in a circle", f->name);
        const em3_feature_spec *w = &s->feat[o];
        if (w->kind != EM3_COL_CATEGORICAL && w->kind != EM3_COL_SEQUENCE)
            return ffail(s, f->line, err, errlen, "'%s' shares '%s', which is %s, not categorical or sequence",
                         f->name, w->name, em3_col_kind_name(w->kind));
        f->share = o;
        f->enc = w->enc;
        f->vocab_size = w->vocab_size;
        f->id_offset = w->id_offset;
        f->min_count = w->min_count;
    }
    for (int i = 0; i < s->n_feat; i++) {
        const em3_feature_spec *f = &s->feat[i];
        bool ids = f->kind == EM3_COL_CATEGORICAL || f->kind == EM3_COL_SEQUENCE || f->kind == EM3_COL_META;
        if (!ids && (f->enc != EM3_ENC_VOCAB || f->vocab_size || f->id_offset))
            return ffail(s, f->line, err, errlen, "encoding, vocab_size and id_offset apply to id features");
        if (f->enc == EM3_ENC_VOCAB && (f->vocab_size || f->id_offset) && f->share < 0)
            return ffail(s, f->line, err, errlen, "'%s': vocab_size and id_offset go with encoding: identity "
                         "(a vocabulary's size comes from the data)", f->name);
        if (f->vocab_size && f->id_offset >= f->vocab_size)
            return ffail(s, f->line, err, errlen, "'%s': id_offset must be below vocab_size", f->name);
    }
    if (!resolve_role(s, s->group_name, "group_id", &s->group, err, errlen) ||
        !resolve_role(s, s->item_name, "item_id", &s->item, err, errlen))
        return false;
    if (s->n_table && s->item < 0)
        return ffail(s, s->table[0].line, err, errlen, "item_tables need item_id: the feature whose ids index their rows");
    return true;
}
