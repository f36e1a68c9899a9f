/* runtime/dataset.h — datasets as the training loop sees them: per split (train, valid, test)
 * a set of equally long columns named like the model's inputs and labels, plus item side
 * tables (item id → content) joined at batch time through the model's `data` globals.
 * Columns come from a preprocessed, memory-mapped, checksummed columnar cache that
 * em3_dataset_open builds from the sources a YAML description names (CSV, NumPy, MMRec) the
 * first time, and reuses while the sources are unchanged. docs/data.md is the reference. */
#ifndef EM3_DATASET_H
#define EM3_DATASET_H

#include <stdbool.h>
#include <stdint.h>

#include "ir/ir.h"

typedef enum { EM3_SPLIT_TRAIN, EM3_SPLIT_VALID, EM3_SPLIT_TEST, EM3_SPLIT_COUNT } em3_split;

const char *em3_split_name(em3_split s);

/* The role a column plays, from the YAML description (FuxiCTR's feature types). */
typedef enum {
    EM3_COL_CATEGORICAL, /* one id per row (0 pads; with a vocabulary the last id is OOV) */
    EM3_COL_NUMERIC,     /* one float per row */
    EM3_COL_SEQUENCE,    /* max_len ids per row, padded with 0 (also: a table of token ids) */
    EM3_COL_EMBEDDING,   /* a dense float vector per row */
    EM3_COL_META,        /* group id (user) for gAUC; not a model input unless named */
    EM3_COL_LABEL,       /* the target */
} em3_col_kind;

const char *em3_col_kind_name(em3_col_kind k); /* "categorical", ... as the YAML spells them */

typedef struct {
    const char *name;
    em3_col_kind kind;
    em3_dtype dtype;    /* i32 ids or f32 values */
    int rank;           /* per-row shape: rank 0 scalar, 1 for a sequence/vector, ... */
    int64_t dim[4];
    int64_t rows;       /* rows of this split (of an item table: the item vocabulary) */
    int64_t vocab;      /* ids are in [0, vocab) (categorical / sequence), else 0 */
    const char *shares; /* the column whose ids (and embedding) these are, or NULL */
    const void *data;   /* rows × prod(dim) values, row-major, read-only (mapped) */
} em3_column;

typedef struct em3_dataset em3_dataset;

typedef struct {
    const char *cache_dir; /* NULL: "<dataset folder>/.em3cache" */
    bool rebuild;          /* ignore an existing cache */
    bool quiet;            /* no progress lines on stderr */
} em3_data_options;

/* Opens a dataset: `path` is a YAML description (docs/data.md), or a folder holding
 * dataset.yaml, or an MMRec folder (NAME.inter + *_feat.npy). Imports into the cache when
 * needed. NULL with a message naming the file (and line or row, for data errors) in `err`.
 * `o` may be NULL (defaults). When the dataset folder is not writable the cache goes to
 * $XDG_CACHE_HOME/em3 (or ~/.cache/em3). */
em3_dataset *em3_dataset_open(const char *path, const em3_data_options *o, char *err, size_t errlen);
void em3_dataset_free(em3_dataset *ds);

/* The items of `parent` as a dataset of their own, for training on item content alone
 * (`em3 pretrain`): one column "item" holding the ids 1 .. items-1 of the item tables in a
 * seeded order, a `valid_fraction` of them held out as the valid split, no test split and no
 * label. It borrows the parent's item tables and constants: free it before the parent. */
em3_dataset *em3_dataset_items_view(const em3_dataset *parent, double valid_fraction, uint64_t seed,
                                    char *err, size_t errlen);

const char *em3_dataset_name(const em3_dataset *ds);
const char *em3_dataset_cache_path(const em3_dataset *ds);
bool em3_dataset_cache_reused(const em3_dataset *ds); /* false: imported by this open */
int64_t em3_dataset_rows(const em3_dataset *ds, em3_split s);
int em3_dataset_column_count(const em3_dataset *ds);
/* Column i (or by name) of split s; NULL when absent. */
const em3_column *em3_dataset_column(const em3_dataset *ds, em3_split s, int i);
const em3_column *em3_dataset_find(const em3_dataset *ds, em3_split s, const char *name);
/* Item side tables by name: rows are item ids; data `rows × prod(dim)`. */
int em3_dataset_table_count(const em3_dataset *ds);
const em3_column *em3_dataset_table(const em3_dataset *ds, int i);
const em3_column *em3_dataset_find_table(const em3_dataset *ds, const char *name);

/* Names of the columns that play these roles (NULL when the dataset has none). */
const char *em3_dataset_label(const em3_dataset *ds);
const char *em3_dataset_group(const em3_dataset *ds); /* meta: user id for gAUC */
const char *em3_dataset_item(const em3_dataset *ds);  /* item id: cold/warm slices */
/* The description's model_constants (name: integer), which a model of this data should use
 * (em3 train passes them to models that declare them). */
int em3_dataset_constant_count(const em3_dataset *ds);
const char *em3_dataset_constant(const em3_dataset *ds, int i, int64_t *value);

/* Whether item id `item` occurs in no training row (a cold item). */
bool em3_dataset_is_cold(const em3_dataset *ds, int32_t item);
/* The source token of id `id` of a vocabulary-encoded column (or table), "" for the padding
 * id 0; NULL when the column keeps its source's own ids (encoding: identity) or `id` is out of
 * range. The last id of a vocabulary is "__OOV__". */
const char *em3_dataset_token(const em3_dataset *ds, const char *column, int64_t id);

/* Copies rows[0..n) of column `c` into `out` (n × row size values): batches are gathered
 * from the permutation of an epoch. */
void em3_column_gather(const em3_column *c, const int64_t *rows, int64_t n, void *out);

/* Summary of n > 0 floats, in double: what a numeric feature's normalizer is fitted on and
 * what `em3 data info` shows (std: the population standard deviation, as scikit-learn's). */
typedef struct {
    double mean, std, min, max;
} em3_float_stats;
em3_float_stats em3_float_stats_of(const float *x, int64_t n);

/* ---- the built-in generated dataset (docs/data.md describes its generative model) ---- */

typedef enum { EM3_GEN_TINY, EM3_GEN_SMALL, EM3_GEN_DEFAULT, EM3_GEN_LARGE, EM3_GEN_COUNT } em3_gen_size;

const char *em3_gen_size_name(em3_gen_size s);
bool em3_gen_size_parse(const char *s, em3_gen_size *out);

typedef struct {
    em3_gen_size size;
    uint64_t seed;
    bool topk;          /* also write the MMRec form (topk/gen.inter + image/text features) */
} em3_gen_options;

/* What was generated: the model constants that fit it (vocabularies count the padding id 0)
 * and the figures docs/data.md tabulates. */
typedef struct {
    int64_t users, items, words;                /* vocabularies of user, item / hist, text */
    int64_t seq, patches, patch_dim, text_len; /* shapes of hist, image, text */
    int64_t rows[EM3_SPLIT_COUNT], clicks[EM3_SPLIT_COUNT];
    int64_t cold_items;                 /* items in valid/test rows but in no train row */
    int64_t cold_rows[EM3_SPLIT_COUNT]; /* impressions of such an item */
    double oracle_auc[EM3_SPLIT_COUNT]; /* AUC of the true click probabilities: the ceiling */
} em3_gen_summary;

/* Writes a dataset folder (dataset.yaml, the split folders of .npy columns, the item side
 * tables). The same options give byte-identical files. `out` may be NULL. */
bool em3_data_generate(const char *dir, const em3_gen_options *o, em3_gen_summary *out, char *err,
                       size_t errlen);

/* ---- MovieLens as a CTR dataset (docs/data.md, "MovieLens") ---- */

typedef struct {
    double min_rating; /* the label: rating >= min_rating */
    int64_t max_len;   /* hist: the most recent earlier ratings kept */
    int64_t text_len;  /* text tokens per item */
    int64_t min_count; /* a token needs this many items to get its own id (else __OOV__) */
} em3_movielens_options;

/* What was written: the model constants (vocabularies count the padding id 0) and figures. */
typedef struct {
    int64_t users, items, words;                /* vocabularies of user, item / hist, text */
    int64_t seq, patches, patch_dim, text_len; /* shapes of hist, image (the genres), text */
    int64_t min_count, ratings;
    int64_t rows[EM3_SPLIT_COUNT], positives[EM3_SPLIT_COUNT];
    int64_t cold_items;                 /* items in valid/test rows but in no train row */
    int64_t cold_rows[EM3_SPLIT_COUNT]; /* ratings of such an item */
    int64_t text_tokens, oov_tokens;    /* non-padding ids in the text table; of them __OOV__ */
    int64_t tagged_items, truncated_items;
} em3_movielens_summary;

/* Converts the MovieLens folder `src` (ratings.csv, movies.csv, optionally tags.csv) into a
 * dataset folder `dir` of the form em3_data_generate writes. Malformed input is an error naming
 * the file and line. The same inputs and options give byte-identical files. `out` may be NULL. */
bool em3_data_convert_movielens(const char *src, const char *dir, const em3_movielens_options *o,
                                em3_movielens_summary *out, char *err, size_t errlen);

#endif
