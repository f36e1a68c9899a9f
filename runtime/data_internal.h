/* runtime/data_internal.h — what the files of the data pipeline share (not a public header:
 * runtime/dataset.h is the contract): the parsed description of a dataset, which a YAML file
 * or an MMRec folder produces and the importer consumes; checksums; the CSV and array readers. */
#ifndef EM3_DATA_INTERNAL_H
#define EM3_DATA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dataset.h"
#include "npy.h"

/* Bumped whenever the importer's output for the same sources changes: old caches rebuild. */
#define EM3_DATA_IMPORT_VERSION 1

/* Formats an error into err: every data error names a file (and a line or row). */
bool em3_data_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

bool em3_data_has_suffix(const char *s, const char *suffix);

/* ---- the description ------------------------------------------------------------------------- */

typedef enum {
    EM3_ENC_VOCAB,    /* tokens → ids by frequency in train (FuxiCTR's tokenizer) */
    EM3_ENC_IDENTITY, /* the source holds integer ids already: id + id_offset */
} em3_encoding;

/* A numeric feature's scaling, fitted on the train split and applied to every split, as
 * FuxiCTR's normalizer (scikit-learn's scalers). */
typedef enum { EM3_NORM_NONE, EM3_NORM_STANDARD, EM3_NORM_MINMAX } em3_normalizer;

typedef struct {
    char *name;   /* as the model's inputs name it */
    char *source; /* the source column (CSV header, array name) it is read from */
    em3_col_kind kind;
    em3_encoding enc;
    int64_t vocab_size; /* identity: ids must stay below it (0: the largest id seen + 1) */
    int64_t id_offset;  /* identity: added to each source id (0-based ids become 1-based) */
    int64_t min_count;  /* vocab: rarer train tokens become OOV */
    char *share_name;   /* share_embedding: the feature whose vocabulary this one uses */
    int share;          /* ... its index (resolved by em3_data_spec_check), or -1 */
    int64_t max_len;    /* sequence: ids per row (0: the longest train row) */
    bool pad_post;      /* sequence: padding after the ids (default before, as FuxiCTR) */
    char splitter;      /* sequence / embedding: separator inside a CSV field */
    int64_t dim;        /* embedding: floats per row (0: from the data) */
    double fill_na;     /* numeric: value of an empty field */
    em3_normalizer normalizer; /* numeric */
    int line;           /* where the YAML declares it (0: synthesised) */
} em3_feature_spec;

typedef struct {
    char *name;
    char *file;  /* .npy, or .npz with `array` naming the member */
    char *array; /* NULL for .npy */
    em3_col_kind kind; /* EM3_COL_EMBEDDING (floats) or EM3_COL_SEQUENCE (token ids, 0 pads) */
    int64_t vocab_size; /* token ids: must stay below it (0: inferred) */
    int line;
} em3_table_spec;

typedef enum { EM3_FMT_AUTO, EM3_FMT_CSV, EM3_FMT_NPZ, EM3_FMT_NPY_DIR } em3_data_format;

typedef struct {
    char *name;
    char *origin;  /* the YAML file or MMRec folder, for messages */
    char *text;    /* the description's own bytes: part of the cache fingerprint */
    size_t text_len;
    char *split_file[EM3_SPLIT_COUNT]; /* resolved paths, NULL: the split is empty */
    int split_line[EM3_SPLIT_COUNT];
    /* Or one CSV holding all splits, told apart by a column's value (MMRec's x_label). */
    char *data_file;
    int data_line;
    char *split_col;
    char *split_value[EM3_SPLIT_COUNT];
    char separator; /* CSV field separator (0: by extension: tab for .tsv/.inter, else ',') */
    em3_data_format format; /* AUTO: by each file's extension (a folder: one .npy per column) */
    em3_feature_spec *feat; /* the label, if any, is the feature of kind EM3_COL_LABEL */
    int n_feat;
    char *group_name, *item_name;
    int group, item;        /* their feature indices (resolved by em3_data_spec_check), or -1 */
    em3_table_spec *table;
    int n_table;
    /* model_constants: values a model of this data should use (em3 train offers them) */
    char **const_name;
    int64_t *const_value;
    int n_const;
} em3_data_spec;

/* Reads a YAML description (docs/data.md). NULL with "FILE:LINE:COL: reason" in err. */
em3_data_spec *em3_data_spec_load(const char *yaml_path, char *err, size_t errlen);
/* Describes an MMRec folder (NAME.inter, *_feat.npy). */
em3_data_spec *em3_data_spec_mmrec(const char *dir, char *err, size_t errlen);
/* Whether `dir` holds an MMRec dataset (exactly one *.inter file). */
bool em3_data_is_mmrec(const char *dir);
void em3_data_spec_free(em3_data_spec *s);
/* The reader for one source file of the description. */
em3_data_format em3_data_source_format(const em3_data_spec *s, const char *path);
/* Checks what no single key can: names, references between features, required keys. */
bool em3_data_spec_check(em3_data_spec *s, char *err, size_t errlen);
bool em3_col_kind_parse(const char *s, em3_col_kind *out);

/* ---- checksums (XXH64, so that `xxh64sum` can confirm them) ---------------------------------- */

typedef struct {
    uint64_t total, v[4];
    unsigned char mem[32];
    size_t memsize;
    uint64_t seed;
} em3_xxh64_state;

void em3_xxh64_init(em3_xxh64_state *s, uint64_t seed);
void em3_xxh64_update(em3_xxh64_state *s, const void *p, size_t n);
uint64_t em3_xxh64_digest(const em3_xxh64_state *s);
uint64_t em3_xxh64(const void *p, size_t n, uint64_t seed);

/* ---- CSV ------------------------------------------------------------------------------------- */

typedef struct {
    const char *p;
    size_t len;
} em3_field;

typedef struct em3_csv em3_csv;

/* Opens a CSV file and reads its header line. */
em3_csv *em3_csv_open(const char *path, char sep, char *err, size_t errlen);
void em3_csv_close(em3_csv *c);
/* Index of the header column `name`, or -1. */
int em3_csv_column(const em3_csv *c, const char *name);
int em3_csv_columns(const em3_csv *c);
/* The next record: true with its fields (as many as the header has) and the 1-based line it
 * starts on; false at the end (err empty) or on a malformed record (err set). Fields stay
 * valid until the next call. */
bool em3_csv_next(em3_csv *c, const em3_field **fields, int64_t *line, char *err, size_t errlen);
const char *em3_csv_path(const em3_csv *c);

/* ---- arrays: .npy files, .npz members ------------------------------------------------------------ */

/* Reads member `name` (without ".npy") of the .npz `path`: stored (np.savez) members only.
 * Messages name "PATH[name]"; a missing member's lists the members there are. */
em3_npy *em3_npz_read(const char *path, const char *name, char *err, size_t errlen);

/* ---- import and the cache ---------------------------------------------------------------------- */

/* A source file as the fingerprint sees it. */
typedef struct {
    char *path;
    int64_t size, mtime_ns;
    uint64_t hash;
} em3_source_stamp;

/* Every file the import reads, stamped (size, mtime, content checksum), and the fingerprint of
 * them all with the description: a cache is reused only when its fingerprint matches. */
bool em3_data_fingerprint(const em3_data_spec *s, em3_source_stamp **stamps, int *n_stamps,
                          uint64_t *fingerprint, char *err, size_t errlen);
void em3_source_stamps_free(em3_source_stamp *st, int n);
/* DIR/COLUMN.npy: where a folder source keeps a column. */
char *em3_data_npy_path(const char *dir, const char *column);

/* Writing a cache: sections stream into a temporary file that becomes `path` only when
 * em3_cache_commit succeeds (temp file, fsync, rename): a half-built cache is never seen. */
typedef struct em3_cache_writer em3_cache_writer;

em3_cache_writer *em3_cache_begin(const char *path, char *err, size_t errlen);
/* A column of a split (split < EM3_SPLIT_COUNT) or an item table (split == EM3_SPLIT_COUNT). */
bool em3_cache_add_column(em3_cache_writer *w, int split, const em3_column *c, const char *shares);
/* The tokens of a vocabulary, in id order (id 0 the padding). */
bool em3_cache_add_vocab(em3_cache_writer *w, const char *name, char *const *tokens, int64_t n);
/* The closing record: roles, sources and fingerprint. Frees w either way. */
bool em3_cache_commit(em3_cache_writer *w, const char *name, const char *label, const char *group,
                      const char *item, const em3_source_stamp *st, int n_st, uint64_t fingerprint,
                      char *err, size_t errlen);
void em3_cache_abort(em3_cache_writer *w);

/* Imports the sources a description names into a cache at `cache_path`. */
bool em3_data_import(const em3_data_spec *s, const char *cache_path, const em3_source_stamp *st,
                     int n_st, uint64_t fingerprint, bool quiet, char *err, size_t errlen);

/* A cache as read back: the map, and everything its manifest says. */
typedef struct {
    char *split, *name, *shares;  /* split: "train", "valid", "test" or "item" (a table) */
    em3_column col;
} em3_cache_column;

typedef struct {
    char *name;
    int64_t count;
    const uint64_t *offsets; /* count + 1, into blob */
    const char *blob;
} em3_cache_vocab;

typedef struct {
    void *map;
    size_t map_len;
    char *name, *label, *group, *item;
    uint64_t fingerprint;
    em3_cache_column *col;
    int n_col;
    em3_cache_vocab *vocab;
    int n_vocab;
    em3_source_stamp *stamps;
    int n_stamps;
} em3_cache;

/* Maps and verifies a cache (header, manifest and every section's checksum). False with the
 * reason when it is missing, from another version or damaged. */
bool em3_cache_open(const char *path, em3_cache *c, char *err, size_t errlen);
void em3_cache_close(em3_cache *c);

/* ---- writing a dataset folder (data_gen.c; `em3 data gen` and `em3 data movielens`) ------------ */

/* DIR/NAME, allocated. */
char *em3_data_path(const char *dir, const char *name);

/* A file besides the columns and tables, e.g. a vocabulary: NAME is relative to the folder. */
typedef struct {
    const char *name, *text;
    size_t len;
} em3_data_file;

/* A CTR dataset in the form docs/data.md describes for `em3 data gen`: per split the columns
 * user, item, hist, click; the item tables image [items, patches, patch_dim] (f32) and text
 * [items, text_len] (token ids, 0 pads); dataset.yaml with these as model_constants. Sizes are
 * vocabularies: they count the padding id 0. */
typedef struct {
    const char *id;      /* dataset_id */
    const char *comment; /* '#' lines that open dataset.yaml */
    int64_t users, items, seq, patches, patch_dim, text_len, words;
    int64_t rows[EM3_SPLIT_COUNT];
    const int32_t *user[EM3_SPLIT_COUNT], *item[EM3_SPLIT_COUNT], *hist[EM3_SPLIT_COUNT];
    const float *click[EM3_SPLIT_COUNT];
    const float *image;
    const int32_t *text;
    const em3_data_file *extra;
    int n_extra;
} em3_ctr_data;

/* Writes the folder (creating it): columns, tables, extra files, and dataset.yaml last, so
 * that a folder without it is not a dataset yet. Each file is written atomically. */
bool em3_data_write_ctr(const char *dir, const em3_ctr_data *d, char *err, size_t errlen);

/* Writes `n` bytes atomically at `path` (temp, fsync, rename). */
bool em3_write_file_atomic(const char *path, const void *data, size_t n, char *err, size_t errlen);

#endif
