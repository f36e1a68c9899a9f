/* tests/unit/test_data.c — the data pipeline: YAML descriptions (and their mistakes), the CSV,
 * .npy/.npz and MMRec readers, bad data (each error names the file and line or row), the cache
 * (reuse, invalidation, damage, atomicity), the generator (reproducible, with the statistics
 * docs/data.md states), the MovieLens conversion (on tests/data/movielens_tiny, worked out by
 * hand) and, when ../shared/data is present, the real FuxiCTR, TikTok and MovieLens samples. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "scratch_dir.h"
#include "runtime/data_internal.h"
#include "runtime/dataset.h"
#include "runtime/npy.h"

/* ---- a temporary folder per test ------------------------------------------------------------------ */

static char dir[64];

static const char *in_dir(const char *name) {
    static char bufs[4][512]; /* a few paths may be alive in one expression */
    static int next;
    char *p = bufs[next++ % 4];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static int make_dir(void **state) {
    (void)state;
    strcpy(dir, "/tmp/em3_data_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state) {
    (void)state;
    rm_tree(dir);
    return 0;
}

static void put(const char *name, const char *text) {
    FILE *fp = fopen(in_dir(name), "wb");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void sub(const char *name) { assert_int_equal(mkdir(in_dir(name), 0755), 0); }

static char *slurp(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, fp);
    fclose(fp);
    return b;
}

static em3_dataset *open_ds(const char *path, char *err, size_t n) {
    em3_data_options o = {.cache_dir = in_dir("cache"), .quiet = true};
    return em3_dataset_open(path, &o, err, n);
}

/* Opening `path` fails with a message holding every given fragment. */
static void expect_error(const char *path, const char *frag1, const char *frag2) {
    char err[2048] = "";
    em3_dataset *ds = open_ds(path, err, sizeof err);
    if (ds) fail_msg("opening %s should fail with '%s'", path, frag1);
    if (!strstr(err, frag1) || (frag2 && !strstr(err, frag2)))
        fail_msg("message '%s' lacks '%s' / '%s'", err, frag1, frag2 ? frag2 : "");
}

static const int32_t *ids(const em3_dataset *ds, em3_split s, const char *col) {
    const em3_column *c = em3_dataset_find(ds, s, col);
    assert_non_null(c);
    assert_int_equal(c->dtype, EM3_DTYPE_I32);
    return c->data;
}

static const float *floats(const em3_dataset *ds, em3_split s, const char *col) {
    const em3_column *c = em3_dataset_find(ds, s, col);
    assert_non_null(c);
    assert_int_equal(c->dtype, EM3_DTYPE_F32);
    return c->data;
}

/* ---- checksums ---------------------------------------------------------------------------------- */

static void test_xxh64(void **state) {
    (void)state;
    assert_true(em3_xxh64("", 0, 0) == 0xEF46DB3751D8E999ULL);
    assert_true(em3_xxh64("abc", 3, 0) == 0x44BC2CF5AD770999ULL);
    const char *s = "Nobody inspects the spammish repetition";
    assert_true(em3_xxh64(s, strlen(s), 0) == 0xFBCEA83C8A378BF1ULL);
    char big[1000];
    for (int i = 0; i < 1000; i++) big[i] = (char)(i * 7);
    em3_xxh64_state h;
    em3_xxh64_init(&h, 5);
    for (size_t at = 0, step = 1; at < sizeof big; at += step, step = step * 2 % 37 + 1)
        em3_xxh64_update(&h, big + at, at + step > sizeof big ? sizeof big - at : step);
    assert_true(em3_xxh64_digest(&h) == em3_xxh64(big, sizeof big, 5));
}

/* ---- YAML ----------------------------------------------------------------------------------------- */

static void test_yaml_fuxictr_form(void **state) {
    (void)state;
    put("d.yaml", "# FuxiCTR's form: the dataset id over the description\n"
                  "my_set:\n"
                  "  data_root: data\n"
                  "  data_format: csv\n"
                  "  train_data: train.csv\n"
                  "  rebuild_dataset: False\n"
                  "  min_categr_count: 2\n"
                  "  feature_cols:\n"
                  "    - {name: [a, b], active: True, dtype: str, type: categorical, source: user}\n"
                  "    - {name: c, active: False, dtype: str, type: categorical}\n"
                  "    - {name: s, type: sequence, splitter: '|', max_len: 4, padding: post, share_embedding: a}\n"
                  "    - {name: e, type: embedding, embedding_dim: 3}\n"
                  "    - {name: n, type: numeric, fill_na: 0.5}\n"
                  "    - {name: g, type: meta, encoding: identity, vocab_size: 10, id_offset: 1}\n"
                  "  label_col: [{name: y, dtype: float}]\n"
                  "  group_id: g\n");
    char err[1024];
    em3_data_spec *s = em3_data_spec_load(in_dir("d.yaml"), err, sizeof err);
    if (!s) fail_msg("%s", err);
    assert_string_equal(s->name, "my_set");
    assert_string_equal(s->split_file[EM3_SPLIT_TRAIN], in_dir("data/train.csv"));
    assert_null(s->split_file[EM3_SPLIT_VALID]);
    assert_int_equal(s->n_feat, 7); /* a, b, s, e, n, g, y: c is inactive */
    assert_string_equal(s->feat[1].name, "b");
    assert_int_equal(s->feat[1].min_count, 2);
    assert_int_equal(s->feat[2].splitter, '|');
    assert_true(s->feat[2].pad_post);
    assert_int_equal(s->feat[2].share, 0);
    assert_int_equal(s->feat[2].min_count, 2);
    assert_int_equal(s->feat[3].dim, 3);
    assert_true(s->feat[4].fill_na == 0.5);
    assert_int_equal(s->feat[5].enc, EM3_ENC_IDENTITY);
    assert_int_equal(s->feat[5].id_offset, 1);
    assert_int_equal(s->feat[6].kind, EM3_COL_LABEL);
    assert_int_equal(s->group, 5);
    assert_int_equal(s->item, -1);
    em3_data_spec_free(s);
}

/* Each malformed description fails with FILE:LINE and words about the mistake. */
static void test_yaml_errors(void **state) {
    (void)state;
    static const struct {
        const char *text, *where, *what;
    } cases[] = {
        {"train_data: t.csv\nfeature_cols: [\n", "bad.yaml:3:", "malformed YAML"},
        {"train_data: t.csv\nfeature_cols:\n  - {name: a, type: categorical, colour: red}\n", "bad.yaml:3:", "unknown key 'colour'"},
        {"train_data: t.csv\nfeature_cols:\n  - {name: a}\n", "bad.yaml:3:", "needs a type"},
        {"train_data: t.csv\nfeature_cols:\n  - {name: a, type: cat}\n", "bad.yaml:3:", "type must be"},
        {"train_data: t.csv\nfeature_cols:\n  - {name: a, type: sequence, max_len: many}\n", "bad.yaml:3:", "max_len must be an integer"},
        {"train_data: t.csv\nfeature_cols:\n  - {name: a, type: sequence, padding: middle}\n", "bad.yaml:3:", "padding must be one of pre, post"},
        {"train_data: t.csv\nfeature_cols:\n  - {name: a, type: sequence, share_embedding: zz}\n", "bad.yaml:3:", "not a feature"},
        {"train_data: t.csv\nfeature_cols:\n  - {name: a, type: sequence, share_embedding: b}\n"
         "  - {name: b, type: sequence, share_embedding: a}\n", "bad.yaml:", "circle"},
        {"train_data: t.csv\nfeature_cols:\n  - {name: a, type: numeric}\n  - {name: a, type: numeric}\n", "bad.yaml:4:", "declared twice"},
        {"feature_cols:\n  - {name: a, type: numeric}\n", "bad.yaml:1:", "needs train_data"},
        {"train_data: t.csv\nfeature_cols:\n  - {name: a, type: categorical, vocab_size: 9}\n", "bad.yaml:3:", "encoding: identity"},
        {"train_data: t.csv\nfeature_cols:\n  - {name: 'a b', type: numeric}\n", "bad.yaml:3:", "must be a name"},
        {"train_data: t.csv\nfeature_cols:\n  - {name: a, type: categorical}\nitem_tables:\n"
         "  - {name: image, file: i.npy}\n", "bad.yaml:5:", "need item_id"},
        {"train_data: t.csv\ngroup_id: nobody\nfeature_cols:\n  - {name: a, type: numeric}\n", "bad.yaml:", "group_id 'nobody'"},
        {"train_data: t.csv\nseparator: ab\nfeature_cols: []\n", "bad.yaml:2:", "one character"},
        {"- just\n- a list\n", "bad.yaml:1:", "must be a mapping"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        put("bad.yaml", cases[i].text);
        char err[1024] = "";
        em3_data_spec *s = em3_data_spec_load(in_dir("bad.yaml"), err, sizeof err);
        if (s) fail_msg("case %zu parsed", i);
        if (!strstr(err, cases[i].where) || !strstr(err, cases[i].what))
            fail_msg("case %zu: '%s' lacks '%s' or '%s'", i, err, cases[i].where, cases[i].what);
    }
}

/* ---- CSV -------------------------------------------------------------------------------------- */

static void test_csv_reader(void **state) {
    (void)state;
    put("q.csv", "\xEF\xBB\xBF" "a,b,c\r\n"
                 "1,\"x,y\",\"say \"\"hi\"\"\"\r\n"
                 "\r\n"
                 "2,\"two\nlines\",\r\n"
                 "3,,last");
    char err[512];
    em3_csv *c = em3_csv_open(in_dir("q.csv"), ',', err, sizeof err);
    assert_non_null(c);
    assert_int_equal(em3_csv_columns(c), 3);
    assert_int_equal(em3_csv_column(c, "c"), 2);
    const em3_field *f;
    int64_t line;
    assert_true(em3_csv_next(c, &f, &line, err, sizeof err));
    assert_int_equal(line, 2);
    assert_int_equal(f[1].len, 3);
    assert_memory_equal(f[1].p, "x,y", 3);
    assert_int_equal(f[2].len, 8);
    assert_memory_equal(f[2].p, "say \"hi\"", 8);
    assert_true(em3_csv_next(c, &f, &line, err, sizeof err));
    assert_int_equal(line, 4); /* the blank line 3 is skipped */
    assert_memory_equal(f[1].p, "two\nlines", 9);
    assert_int_equal(f[2].len, 0);
    assert_true(em3_csv_next(c, &f, &line, err, sizeof err));
    assert_int_equal(line, 6); /* the quoted newline counted */
    assert_memory_equal(f[2].p, "last", 4);
    assert_false(em3_csv_next(c, &f, &line, err, sizeof err));
    assert_string_equal(err, "");
    em3_csv_close(c);

    put("dup.csv", "a,b,a\n");
    assert_null(em3_csv_open(in_dir("dup.csv"), ',', err, sizeof err));
    assert_non_null(strstr(err, "dup.csv:1: column 'a' appears twice"));
    put("empty.csv", "");
    assert_null(em3_csv_open(in_dir("empty.csv"), ',', err, sizeof err));
    assert_non_null(strstr(err, "empty.csv: empty file"));
}

static const char *toy_yaml =
    "dataset_id: toy\n"
    "train_data: train.csv\n"
    "valid_data: valid.csv\n"
    "feature_cols:\n"
    "  - {name: user, type: categorical}\n"
    "  - {name: item, type: categorical}\n"
    "  - {name: hist, type: sequence, max_len: 3, share_embedding: item}\n"
    "  - {name: price, type: numeric, fill_na: -1}\n"
    "  - {name: vec, type: embedding}\n"
    "label_col: {name: click, dtype: float}\n"
    "group_id: user\n"
    "item_id: item\n";

static const char *toy_train = "user,item,hist,price,vec,click\n"
                               "u1,10,10^11,1.5,0.1^0.2,1\n"
                               "u2,11,,2.5,0.3^0.4,0\n"
                               "u1,10,\"11^12^10\",,0.5^0.6,1\n"
                               "u3,12,10,3.5,\"0.7^0.8\",0\n";

static void put_toy(void) {
    put("toy.yaml", toy_yaml);
    put("train.csv", toy_train);
    put("valid.csv", "user,item,hist,price,vec,click\nu4,13,13^10^11^12,0,1^2,1\n");
}

static void test_csv_dataset(void **state) {
    (void)state;
    put_toy();
    char err[1024];
    em3_dataset *ds = open_ds(in_dir("toy.yaml"), err, sizeof err);
    if (!ds) fail_msg("%s", err);
    assert_string_equal(em3_dataset_name(ds), "toy");
    assert_int_equal(em3_dataset_rows(ds, EM3_SPLIT_TRAIN), 4);
    assert_int_equal(em3_dataset_rows(ds, EM3_SPLIT_VALID), 1);
    assert_int_equal(em3_dataset_rows(ds, EM3_SPLIT_TEST), 0);
    assert_int_equal(em3_dataset_column_count(ds), 6);
    assert_string_equal(em3_dataset_label(ds), "click");
    assert_string_equal(em3_dataset_group(ds), "user");
    assert_string_equal(em3_dataset_item(ds), "item");
    /* vocabularies: train tokens in string order from 1, then OOV */
    const int32_t *user = ids(ds, EM3_SPLIT_TRAIN, "user"), *item = ids(ds, EM3_SPLIT_TRAIN, "item");
    int32_t want_user[] = {1, 2, 1, 3}, want_item[] = {1, 2, 1, 3};
    assert_memory_equal(user, want_user, sizeof want_user);
    assert_memory_equal(item, want_item, sizeof want_item);
    const em3_column *hist = em3_dataset_find(ds, EM3_SPLIT_TRAIN, "hist");
    assert_int_equal(hist->vocab, 5);
    assert_string_equal(hist->shares, "item");
    assert_int_equal(hist->rank, 1);
    assert_int_equal(hist->dim[0], 3);
    int32_t want_hist[] = {0, 1, 2, 0, 0, 0, 2, 3, 1, 0, 0, 1}; /* padded before */
    assert_memory_equal(hist->data, want_hist, sizeof want_hist);
    const float *price = floats(ds, EM3_SPLIT_TRAIN, "price");
    assert_true(price[0] == 1.5f && price[2] == -1.0f && price[3] == 3.5f);
    const em3_column *vec = em3_dataset_find(ds, EM3_SPLIT_TRAIN, "vec");
    assert_int_equal(vec->dim[0], 2);
    assert_true(((const float *)vec->data)[7] == 0.8f);
    assert_string_equal(em3_dataset_token(ds, "item", 1), "10");
    assert_string_equal(em3_dataset_token(ds, "hist", 3), "12");
    assert_string_equal(em3_dataset_token(ds, "hist", 4), "__OOV__");
    assert_string_equal(em3_dataset_token(ds, "user", 0), "");
    assert_null(em3_dataset_token(ds, "price", 1));
    /* valid: unknown tokens are OOV; a long sequence keeps its last max_len ids */
    assert_int_equal(ids(ds, EM3_SPLIT_VALID, "user")[0], 4);
    assert_int_equal(ids(ds, EM3_SPLIT_VALID, "item")[0], 4);
    int32_t want_vhist[] = {1, 2, 3};
    assert_memory_equal(ids(ds, EM3_SPLIT_VALID, "hist"), want_vhist, sizeof want_vhist);
    assert_true(em3_dataset_is_cold(ds, 4));
    assert_false(em3_dataset_is_cold(ds, 3));
    assert_false(em3_dataset_is_cold(ds, 0));
    /* batches are gathered from any subset of rows, in any order */
    int64_t rows[] = {3, 0, 3};
    int32_t out[9];
    em3_column_gather(hist, rows, 3, out);
    int32_t want_out[] = {0, 0, 1, 0, 1, 2, 0, 0, 1};
    assert_memory_equal(out, want_out, sizeof want_out);
    em3_dataset_free(ds);
}

/* normalizer: fitted on train (fill_na values included), applied to every split, as
 * scikit-learn's scalers: train prices 1.5, 2.5, -1 (empty), 3.5; valid 0. */
static void test_normalizers(void **state) {
    (void)state;
    put_toy();
    static const struct {
        const char *name;
        double train0, valid0;
    } cases[] = {
        {"StandardScaler", (1.5 - 1.625) / 1.6723860, (0 - 1.625) / 1.6723860}, /* std: sqrt(2.796875) */
        {"MinMaxScaler", 2.5 / 4.5, 1 / 4.5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char yaml[1024], err[1024];
        snprintf(yaml, sizeof yaml, "%s", toy_yaml);
        char *at = strstr(yaml, "fill_na: -1}");
        snprintf(at, sizeof yaml - (size_t)(at - yaml), "fill_na: -1, normalizer: %s}%s", cases[i].name,
                 strstr(toy_yaml, "fill_na: -1}") + strlen("fill_na: -1}"));
        put("toy.yaml", yaml);
        em3_dataset *ds = open_ds(in_dir("toy.yaml"), err, sizeof err);
        if (!ds) fail_msg("%s: %s", cases[i].name, err);
        const float *train = floats(ds, EM3_SPLIT_TRAIN, "price"), *valid = floats(ds, EM3_SPLIT_VALID, "price");
        assert_float_equal(train[0], cases[i].train0, 1e-6);
        assert_float_equal(valid[0], cases[i].valid0, 1e-6);
        double mean = (train[0] + train[1] + train[2] + train[3]) / 4;
        if (i == 0) assert_float_equal(mean, 0, 1e-6);
        em3_dataset_free(ds);
    }
    put("bad.yaml", "train_data: t.csv\nfeature_cols:\n  - {name: a, type: categorical, normalizer: MinMaxScaler}\n");
    char err[1024] = "";
    assert_null(em3_data_spec_load(in_dir("bad.yaml"), err, sizeof err));
    assert_non_null(strstr(err, "bad.yaml:3:"));
    assert_non_null(strstr(err, "normalizer applies to numeric features only"));
    put("bad.yaml", "train_data: t.csv\nfeature_cols:\n  - {name: a, type: numeric, normalizer: Zscore}\n");
    assert_null(em3_data_spec_load(in_dir("bad.yaml"), err, sizeof err));
    assert_non_null(strstr(err, "StandardScaler"));
}

/* Bad data: every message names the file and the 1-based line. */
static void test_csv_errors(void **state) {
    (void)state;
    static const struct {
        const char *train, *where, *what;
    } cases[] = {
        {"user,item,hist,price,vec,click\nu1,10,10,1,0^0,1\nu1,10,10,1,0^0\n", "train.csv:3:", "5 fields, but the header has 6"},
        {"user,item,hist,price,vec,click\nu1,10,10,nan,0^0,1\n", "train.csv:2:", "column 'price': NaN"},
        {"user,item,hist,price,vec,click\nu1,10,10,1,0^0,1\nu1,10,10,cheap,0^0,1\n", "train.csv:3:", "'cheap' is not a number"},
        {"user,item,hist,price,vec,click\nu1,10,10,1,0^0,1\nu1,10,10,1,0^0^0,1\n", "train.csv:3:", "column 'vec': 3 values"},
        {"user,item,hist,price,vec,click\nu1,10,10,1,0^inf,1\n", "train.csv:2:", "infinity"},
        {"user,item,hist,price,vec,click\nu1,10,10,1,0^0,\n", "train.csv:2:", "column 'click': empty"},
        {"user,item,hist,vec,click\nu1,10,10,0^0,1\n", "train.csv:1:", "no column 'price'"},
        {"user,item,hist,price,vec,click\nu1,10,10,1,0^0,1\nu1,\"10,10,1,0^0,1\n", "train.csv:3:", "not closed"},
    };
    put_toy();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        put("train.csv", cases[i].train);
        expect_error(in_dir("toy.yaml"), cases[i].where, cases[i].what);
    }
    put("train.csv", toy_train);
    unlink(in_dir("valid.csv"));
    expect_error(in_dir("toy.yaml"), "valid.csv: No such file", "toy.yaml:3"); /* names the YAML line */

    /* identity ids outside vocab_size */
    put("id.yaml", "train_data: train.csv\nfeature_cols:\n"
                   "  - {name: item, type: categorical, encoding: identity, vocab_size: 12}\n");
    expect_error(in_dir("id.yaml"), "train.csv:5: column 'item': id 12 is outside [0, 12)", NULL);
    put("id.yaml", "train_data: train.csv\nfeature_cols:\n  - {name: user, type: categorical, encoding: identity}\n");
    expect_error(in_dir("id.yaml"), "train.csv:2: column 'user': 'u1' is not an integer id", NULL);
}

/* ---- arrays --------------------------------------------------------------------------------------- */

/* A .npy file of float16 values (npy.c writes f32/f64/i32 only). */
static void put_f16(const char *name, int rows, int cols, const uint16_t *v) {
    char dict[128];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f2', 'fortran_order': False, 'shape': (%d, %d), }", rows, cols);
    FILE *fp = fopen(in_dir(name), "wb");
    assert_non_null(fp);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)n, 0};
    fwrite(pre, 1, 10, fp);
    fwrite(dict, 1, (size_t)n, fp);
    fwrite(v, 2, (size_t)(rows * cols), fp);
    fclose(fp);
}

static uint32_t crc32_ref(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

static void le(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* A zip of stored members NAME.npy, made from .npy files in the folder (as np.savez does). */
static void put_npz(const char *name, const char *const *members, int n, int method) {
    FILE *out = fopen(in_dir(name), "wb");
    assert_non_null(out);
    unsigned char cd[4096];
    size_t cdlen = 0, off = 0;
    for (int m = 0; m < n; m++) {
        char file[64];
        snprintf(file, sizeof file, "%s.npy", members[m]);
        size_t len;
        char *data = slurp(in_dir(file), &len);
        assert_non_null(data);
        uint32_t crc = crc32_ref((unsigned char *)data, len);
        size_t nl = strlen(file);
        unsigned char lh[30] = {0};
        le(lh, 0x04034b50, 4);
        le(lh + 4, 20, 2);
        le(lh + 8, (uint64_t)method, 2);
        le(lh + 14, crc, 4);
        le(lh + 18, len, 4);
        le(lh + 22, len, 4);
        le(lh + 26, nl, 2);
        fwrite(lh, 1, 30, out);
        fwrite(file, 1, nl, out);
        fwrite(data, 1, len, out);
        unsigned char *c = cd + cdlen;
        memset(c, 0, 46);
        le(c, 0x02014b50, 4);
        le(c + 10, (uint64_t)method, 2);
        le(c + 16, crc, 4);
        le(c + 20, len, 4);
        le(c + 24, len, 4);
        le(c + 28, nl, 2);
        le(c + 42, off, 4);
        memcpy(c + 46, file, nl);
        cdlen += 46 + nl;
        off += 30 + nl + len;
        free(data);
    }
    fwrite(cd, 1, cdlen, out);
    unsigned char end[22] = {0};
    le(end, 0x06054b50, 4);
    le(end + 8, (uint64_t)n, 2);
    le(end + 10, (uint64_t)n, 2);
    le(end + 12, cdlen, 4);
    le(end + 16, off, 4);
    fwrite(end, 1, 22, out);
    fclose(out);
}

static void write_ids(const char *name, int64_t n, const int32_t *v) {
    char err[256];
    assert_true(em3_npy_write_i32(in_dir(name), 1, &n, v, err, sizeof err));
}

static void test_npy_folder_and_tables(void **state) {
    (void)state;
    sub("train");
    sub("items");
    int32_t user[] = {1, 2, 3}, item[] = {1, 2, 1}, hist[] = {0, 1, 2, 0, 0, 0, 0, 0, 2};
    float click[] = {1, 0, 1};
    int64_t n = 3, hshape[2] = {3, 3};
    char err[1024];
    write_ids("train/user.npy", n, user);
    write_ids("train/item.npy", n, item);
    assert_true(em3_npy_write_i32(in_dir("train/hist.npy"), 2, hshape, hist, err, sizeof err));
    assert_true(em3_npy_write_f32(in_dir("train/click.npy"), 1, &n, click, err, sizeof err));
    float vec[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    int64_t vshape[3] = {3, 2, 2};
    assert_true(em3_npy_write_f32(in_dir("train/vec.npy"), 3, vshape, vec, err, sizeof err));
    int32_t age[] = {30, 40, 50};
    write_ids("train/age.npy", n, age);
    /* item tables: float16 image vectors, token ids */
    uint16_t img[] = {0x3c00, 0x4000, 0xbc00, 0x3800, 0x0000, 0x7bff}; /* 1 2 -1 .5 0 65504 */
    put_f16("items/image.npy", 3, 2, img);
    int32_t text[] = {0, 0, 5, 6, 7, 0};
    int64_t tshape[2] = {3, 2};
    assert_true(em3_npy_write_i32(in_dir("items/text.npy"), 2, tshape, text, err, sizeof err));
    put("a.yaml", "dataset_id: arr\ntrain_data: train\nfeature_cols:\n"
                  "  - {name: user, type: categorical, encoding: identity, vocab_size: 4}\n"
                  "  - {name: item, type: categorical, encoding: identity}\n"
                  "  - {name: hist, type: sequence, share_embedding: item, max_len: 4}\n"
                  "  - {name: vec, type: embedding}\n  - {name: age, type: numeric}\n"
                  "label_col: {name: click}\nitem_id: item\n"
                  "item_tables:\n  - {name: image, file: items/image.npy}\n"
                  "  - {name: text, file: items/text.npy, type: sequence, vocab_size: 8}\n");
    em3_dataset *ds = open_ds(in_dir("a.yaml"), err, sizeof err);
    if (!ds) fail_msg("%s", err);
    const em3_column *h = em3_dataset_find(ds, EM3_SPLIT_TRAIN, "hist");
    int32_t want_hist[] = {0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 2}; /* zeros are padding: re-padded to 4 */
    assert_memory_equal(h->data, want_hist, sizeof want_hist);
    assert_int_equal(h->vocab, 3); /* item: identity, from the table's 3 rows */
    const em3_column *v = em3_dataset_find(ds, EM3_SPLIT_TRAIN, "vec");
    assert_int_equal(v->rank, 2); /* an embedding keeps its per-row shape */
    assert_int_equal(v->dim[0], 2);
    assert_int_equal(v->dim[1], 2);
    assert_true(((const float *)v->data)[9] == 9);
    assert_true(floats(ds, EM3_SPLIT_TRAIN, "age")[2] == 50); /* integers read as numbers */
    const em3_column *im = em3_dataset_find_table(ds, "image");
    assert_non_null(im);
    assert_int_equal(im->rows, 3);
    assert_int_equal(im->dim[0], 2);
    const float *f = im->data;
    assert_true(f[0] == 1 && f[1] == 2 && f[2] == -1 && f[3] == 0.5f && f[5] == 65504);
    const em3_column *tx = em3_dataset_find_table(ds, "text");
    assert_int_equal(tx->vocab, 8);
    assert_int_equal(((const int32_t *)tx->data)[3], 6);
    em3_dataset_free(ds);

    /* wrong dtype, ids out of range, NaN in a table, truncated file: named by file (and row) */
    assert_true(em3_npy_write_f32(in_dir("train/item.npy"), 1, &n, click, err, sizeof err));
    expect_error(in_dir("a.yaml"), "train/item.npy", "must be integers, not <f4");
    int32_t big[] = {1, 9, 3};
    write_ids("train/item.npy", n, item);
    write_ids("train/user.npy", n, big);
    expect_error(in_dir("a.yaml"), "train/user.npy: row 1: column 'user': id 9 is outside [0, 4)", NULL);
    write_ids("train/user.npy", n, user);
    uint16_t nan_img[] = {0x3c00, 0x4000, 0xbc00, 0x7e00, 0x0000, 0x7bff};
    put_f16("items/image.npy", 3, 2, nan_img);
    expect_error(in_dir("a.yaml"), "items/image.npy: row 1: NaN", NULL);
    put_f16("items/image.npy", 3, 2, img);
    int fd = open(in_dir("train/hist.npy"), O_WRONLY);
    assert_int_equal(ftruncate(fd, 100), 0);
    close(fd);
    expect_error(in_dir("a.yaml"), "train/hist.npy", "truncated");
    int32_t short_user[] = {1, 2};
    assert_true(em3_npy_write_i32(in_dir("train/hist.npy"), 2, hshape, hist, err, sizeof err));
    write_ids("train/user.npy", 2, short_user);
    expect_error(in_dir("a.yaml"), "train/item.npy: 3 rows, but the other columns have 2", NULL);
}

static void test_npz(void **state) {
    (void)state;
    int32_t user[] = {3, 1, 2};
    float click[] = {0, 1, 0};
    int64_t n = 3;
    char err[1024];
    write_ids("user.npy", n, user);
    assert_true(em3_npy_write_f32(in_dir("click.npy"), 1, &n, click, err, sizeof err));
    const char *members[] = {"user", "click"};
    put_npz("train.npz", members, 2, 0);
    put("z.yaml", "train_data: train.npz\nfeature_cols:\n  - {name: user, type: categorical}\nlabel_col: {name: click}\n");
    em3_dataset *ds = open_ds(in_dir("z.yaml"), err, sizeof err);
    if (!ds) fail_msg("%s", err);
    int32_t want[] = {3, 1, 2}; /* tokens "3" "1" "2" in string order */
    assert_memory_equal(ids(ds, EM3_SPLIT_TRAIN, "user"), want, sizeof want);
    assert_true(floats(ds, EM3_SPLIT_TRAIN, "click")[1] == 1);
    em3_dataset_free(ds);

    em3_npy *a = em3_npz_read(in_dir("train.npz"), "nothing", err, sizeof err);
    assert_null(a);
    assert_non_null(strstr(err, "train.npz: has no array 'nothing' (it has: user, click)"));
    put_npz("train.npz", members, 2, 8);
    expect_error(in_dir("z.yaml"), "train.npz[user]: compressed", NULL);
    put_npz("train.npz", members, 2, 0);
    size_t len;
    char *bytes = slurp(in_dir("train.npz"), &len);
    bytes[30 + 8 + 100] ^= 1; /* inside user.npy's data */
    FILE *fp = fopen(in_dir("train.npz"), "wb");
    fwrite(bytes, 1, len, fp);
    fclose(fp);
    expect_error(in_dir("z.yaml"), "train.npz[user]: damaged (CRC-32", NULL);
    fp = fopen(in_dir("train.npz"), "wb");
    fwrite(bytes, 1, len / 2, fp);
    fclose(fp);
    free(bytes);
    expect_error(in_dir("z.yaml"), "train.npz: not a readable .npz", NULL);
}

/* ---- MMRec ---------------------------------------------------------------------------------------- */

static void test_mmrec(void **state) {
    (void)state;
    sub("mm");
    put("mm/toy.inter", "userID\titemID\tx_label\n0\t0\t0\n0\t1\t0\n1\t1\t0\n1\t2\t1\n2\t3\t2\n");
    uint16_t img[] = {0x3c00, 0x4000, 0x4200, 0x4400, 0x4500, 0x4600, 0x4700, 0x4800};
    put_f16("mm/image_feat.npy", 4, 2, img);
    char err[1024];
    em3_dataset *ds = open_ds(in_dir("mm"), err, sizeof err);
    if (!ds) fail_msg("%s", err);
    assert_string_equal(em3_dataset_name(ds), "toy");
    assert_int_equal(em3_dataset_rows(ds, EM3_SPLIT_TRAIN), 3);
    assert_int_equal(em3_dataset_rows(ds, EM3_SPLIT_VALID), 1);
    assert_int_equal(em3_dataset_rows(ds, EM3_SPLIT_TEST), 1);
    assert_null(em3_dataset_label(ds));
    int32_t want_user[] = {1, 1, 2}, want_item[] = {1, 2, 2};
    assert_memory_equal(ids(ds, EM3_SPLIT_TRAIN, "user"), want_user, sizeof want_user);
    assert_memory_equal(ids(ds, EM3_SPLIT_TRAIN, "item"), want_item, sizeof want_item);
    assert_int_equal(ids(ds, EM3_SPLIT_TEST, "item")[0], 4);
    const em3_column *t = em3_dataset_find_table(ds, "image");
    assert_int_equal(t->rows, 5); /* 4 items + the padding row 0 */
    const float *f = t->data;
    assert_true(f[0] == 0 && f[1] == 0 && f[2] == 1 && f[3] == 2 && f[9] == 8);
    assert_true(em3_dataset_is_cold(ds, 3) && em3_dataset_is_cold(ds, 4));
    assert_false(em3_dataset_is_cold(ds, 2));
    em3_dataset_free(ds);

    put("mm/toy.inter", "userID\titemID\tx_label\n0\t0\t0\n0\t1\t7\n");
    expect_error(in_dir("mm"), "toy.inter:3: split column 'x_label' holds '7'", NULL);
    put("mm/toy.inter", "userID\titemID\tx_label\n0\t0\t0\n0\t9\t0\n");
    expect_error(in_dir("mm"), "image_feat.npy: 4 rows, but column 'itemID' holds item id 10", NULL);
    put("mm/toy.inter", "userID\titemID\tx_label\n0\t0\t0\n0\t-1\t0\n");
    expect_error(in_dir("mm"), "toy.inter:3: column 'itemID': id -1", NULL);
}

/* ---- the cache ------------------------------------------------------------------------------------ */

static bool reopen(bool *reused) {
    char err[1024];
    em3_dataset *ds = open_ds(in_dir("toy.yaml"), err, sizeof err);
    if (!ds) fail_msg("%s", err);
    *reused = em3_dataset_cache_reused(ds);
    int32_t want_hist[] = {0, 1, 2, 0, 0, 0, 2, 3, 1, 0, 0, 1};
    bool same = !memcmp(em3_dataset_find(ds, EM3_SPLIT_TRAIN, "hist")->data, want_hist, sizeof want_hist) &&
                ids(ds, EM3_SPLIT_TRAIN, "user")[3] == 3;
    em3_dataset_free(ds);
    return same;
}

/* Flips one bit of the byte at `at` (from the end when negative). */
static void flip(const char *path, long at) {
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    fseek(fp, at < 0 ? (long)st.st_size + at : at, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, -1, SEEK_CUR);
    fputc(c ^ 0x10, fp);
    fclose(fp);
}

static void test_cache(void **state) {
    (void)state;
    put_toy();
    bool reused;
    assert_true(reopen(&reused));
    assert_false(reused);
    assert_true(reopen(&reused));
    assert_true(reused); /* unchanged sources: no import */

    /* touching a source (mtime) or changing its content (same size, same mtime) re-imports */
    struct timespec later[2] = {{time(NULL) + 10, 0}, {time(NULL) + 10, 0}};
    assert_int_equal(utimensat(AT_FDCWD, in_dir("train.csv"), later, 0), 0);
    assert_true(reopen(&reused));
    assert_false(reused);
    struct stat st;
    stat(in_dir("valid.csv"), &st);
    put("valid.csv", "user,item,hist,price,vec,click\nu5,13,13^10^11^12,0,1^2,1\n");
    struct timespec same[2] = {st.st_atim, st.st_mtim};
    utimensat(AT_FDCWD, in_dir("valid.csv"), same, 0);
    assert_true(reopen(&reused));
    assert_false(reused);
    assert_true(reopen(&reused));
    assert_true(reused);
    /* a changed description re-imports too */
    put("toy.yaml", "# a comment\n");
    FILE *fp = fopen(in_dir("toy.yaml"), "a");
    fputs(toy_yaml, fp);
    fclose(fp);
    assert_true(reopen(&reused));
    assert_false(reused);

    /* damage anywhere: in a column, the manifest, the header, a cut: rebuilt, never misread */
    char cache[512];
    snprintf(cache, sizeof cache, "%s", in_dir("cache/toy.em3c"));
    long spots[] = {64, 70, -20, 9, 50};
    for (size_t i = 0; i < sizeof spots / sizeof *spots; i++) {
        flip(cache, spots[i]);
        assert_true(reopen(&reused));
        assert_false(reused);
    }
    stat(cache, &st);
    assert_int_equal(truncate(cache, st.st_size - 100), 0);
    assert_true(reopen(&reused));
    assert_false(reused);

    /* a failed import leaves the good cache untouched and no temporary file behind */
    size_t before_len, after_len;
    char *before = slurp(cache, &before_len);
    put("train.csv", "user,item,hist,price,vec,click\nu1,10,10,oops,0^0,1\n");
    expect_error(in_dir("toy.yaml"), "train.csv:2:", "'oops' is not a number");
    char *after = slurp(cache, &after_len);
    assert_int_equal(before_len, after_len);
    assert_memory_equal(before, after, before_len);
    free(before);
    free(after);
    DIR *d = opendir(in_dir("cache"));
    int files = 0;
    for (struct dirent *e; (e = readdir(d));) files += e->d_name[0] != '.';
    closedir(d);
    assert_int_equal(files, 1);
    /* a stray half-written temporary file is never read */
    put("train.csv", toy_train);
    put("cache/toy.em3c.tmp.AbC123", "EM3CACHE junk");
    assert_true(reopen(&reused));
}

/* ---- the generator -------------------------------------------------------------------------------- */

static const char *const gen_files[] = {
    "dataset.yaml", "train/user.npy", "train/item.npy", "train/hist.npy", "train/click.npy",
    "valid/user.npy", "valid/item.npy", "valid/hist.npy", "valid/click.npy", "test/user.npy",
    "test/item.npy", "test/hist.npy", "test/click.npy", "items/image.npy", "items/text.npy",
    "topk/gen.inter", "topk/image_feat.npy", "topk/text_feat.npy", NULL};

static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    bool same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

static void test_gen_reproducible(void **state) {
    (void)state;
    char err[1024], a[600], b[600];
    em3_gen_summary s;
    em3_gen_options o = {.size = EM3_GEN_TINY, .seed = 7, .topk = true};
    clock_t t0 = clock();
    assert_true(em3_data_generate(in_dir("a"), &o, &s, err, sizeof err));
    double cpu = (double)(clock() - t0) / CLOCKS_PER_SEC;
    if (cpu > 0.5) fail_msg("the tiny dataset took %.2f s of CPU", cpu);
    assert_true(em3_data_generate(in_dir("b"), &o, NULL, err, sizeof err));
    for (int i = 0; gen_files[i]; i++) {
        snprintf(a, sizeof a, "%s/a/%s", dir, gen_files[i]);
        snprintf(b, sizeof b, "%s/b/%s", dir, gen_files[i]);
        if (!same_file(a, b)) fail_msg("%s differs between two runs with one seed", gen_files[i]);
    }
    o.seed = 8;
    assert_true(em3_data_generate(in_dir("c"), &o, NULL, err, sizeof err));
    for (int i = 0; gen_files[i]; i++) {
        snprintf(a, sizeof a, "%s/a/%s", dir, gen_files[i]);
        snprintf(b, sizeof b, "%s/c/%s", dir, gen_files[i]);
        if (same_file(a, b)) fail_msg("%s is the same with another seed", gen_files[i]);
    }
}

static int by_desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

/* The tiny dataset's statistics, as docs/data.md states them. */
static void test_gen_statistics(void **state) {
    (void)state;
    char err[1024];
    em3_gen_summary s;
    em3_gen_options o = {.size = EM3_GEN_TINY, .seed = 1};
    assert_true(em3_data_generate(in_dir("g"), &o, &s, err, sizeof err));
    assert_int_equal(s.rows[EM3_SPLIT_TRAIN], 1600);
    assert_int_equal(s.rows[EM3_SPLIT_VALID], 200);
    assert_int_equal(s.rows[EM3_SPLIT_TEST], 200);
    for (int sp = 0; sp < EM3_SPLIT_COUNT; sp++) {
        double ctr = (double)s.clicks[sp] / (double)s.rows[sp];
        if (ctr < 0.10 || ctr > 0.30) fail_msg("%s click rate %.3f outside [0.10, 0.30]", em3_split_name((em3_split)sp), ctr);
        assert_true(s.oracle_auc[sp] > 0.75);
    }
    em3_dataset *ds = open_ds(in_dir("g"), err, sizeof err);
    if (!ds) fail_msg("%s", err);
    assert_int_equal(em3_dataset_find(ds, EM3_SPLIT_TRAIN, "user")->vocab, s.users);
    assert_int_equal(em3_dataset_find(ds, EM3_SPLIT_TRAIN, "item")->vocab, s.items);
    const em3_column *hist = em3_dataset_find(ds, EM3_SPLIT_TRAIN, "hist");
    assert_int_equal(hist->dim[0], s.seq);
    const em3_column *img = em3_dataset_find_table(ds, "image"), *txt = em3_dataset_find_table(ds, "text");
    assert_int_equal(img->rows, s.items);
    assert_int_equal(img->rank, 2);
    assert_int_equal(img->dim[0], s.patches);
    assert_int_equal(img->dim[1], s.patch_dim);
    assert_int_equal(txt->dim[0], s.text_len);
    assert_int_equal(txt->vocab, s.words);
    for (int k = 0; k < s.patches * s.patch_dim; k++) assert_true(((const float *)img->data)[k] == 0); /* padding item */
    /* cold items: never in train rows, present in valid and test, as the summary says */
    for (int sp = 0; sp < EM3_SPLIT_COUNT; sp++) {
        const em3_column *it = em3_dataset_find(ds, (em3_split)sp, "item");
        int64_t cold = 0;
        for (int64_t r = 0; r < it->rows; r++) cold += em3_dataset_is_cold(ds, ((const int32_t *)it->data)[r]);
        assert_int_equal(cold, s.cold_rows[sp]);
        if (sp != EM3_SPLIT_TRAIN && cold < it->rows / 10) fail_msg("%s has only %lld cold rows", em3_split_name((em3_split)sp), (long long)cold);
    }
    assert_int_equal(s.cold_rows[EM3_SPLIT_TRAIN], 0);
    /* power-law popularity: the top tenth of the items takes a large share of train impressions */
    const em3_column *it = em3_dataset_find(ds, EM3_SPLIT_TRAIN, "item");
    int64_t *count = calloc((size_t)s.items, sizeof *count);
    for (int64_t r = 0; r < it->rows; r++) count[((const int32_t *)it->data)[r]]++;
    qsort(count, (size_t)s.items, sizeof *count, by_desc);
    int64_t top = 0;
    for (int64_t i = 0; i < s.items / 10; i++) top += count[i];
    if ((double)top < 0.35 * (double)it->rows) fail_msg("top 10%% of items: %lld of %lld impressions", (long long)top, (long long)it->rows);
    assert_true(count[0] > 10 * count[s.items / 2]);
    free(count);
    /* histories: padding first, most recent last, ids in range */
    const int32_t *h = hist->data;
    int64_t nonempty = 0;
    for (int64_t r = 0; r < hist->rows; r++) {
        bool seen = false;
        for (int64_t k = 0; k < s.seq; k++) {
            int32_t v = h[r * s.seq + k];
            assert_true(v >= 0 && v < s.items);
            if (v) seen = true;
            else assert_false(seen);
        }
        nonempty += seen;
    }
    assert_true(nonempty > hist->rows * 9 / 10);
    em3_dataset_free(ds);
}

/* ---- MovieLens ------------------------------------------------------------------------------------ */

static const char *source(const char *rel) {
    static char p[1024];
    const char *src = getenv("EM3_SOURCE_DIR");
    snprintf(p, sizeof p, "%s/%s", src ? src : "..", rel);
    return p;
}

static const em3_movielens_options ml_opts = {.min_rating = 4, .max_len = 4, .text_len = 8, .min_count = 2};

static void expect_rows(const em3_dataset *ds, em3_split s, int64_t n, const int32_t *user, const int32_t *item,
                        const float *click, const int32_t *hist) {
    assert_int_equal(em3_dataset_rows(ds, s), n);
    assert_memory_equal(ids(ds, s, "user"), user, sizeof *user * (size_t)n);
    assert_memory_equal(ids(ds, s, "item"), item, sizeof *item * (size_t)n);
    assert_memory_equal(floats(ds, s, "click"), click, sizeof *click * (size_t)n);
    assert_memory_equal(ids(ds, s, "hist"), hist, sizeof *hist * (size_t)n * 4);
}

/* tests/data/movielens_tiny: users 3, 7, 9 become 1, 2, 3; the rated movies 1 2 3 5 10 20 30 50
 * 60 70 become items 1..10 (movie 40 has no rating: no item). User 3 has 10 ratings (8 train,
 * then 1 valid, 1 test), user 7 has 5 (3, 1, 1), user 9 has 4 (all train: 10% rounds to 0).
 * Movie 50 (item 8) is rated only in test rows: the one cold item. */
static void test_movielens_tiny(void **state) {
    (void)state;
    char err[1024];
    em3_movielens_summary s;
    assert_true(em3_data_convert_movielens(source("tests/data/movielens_tiny"), in_dir("ml"), &ml_opts, &s, err, sizeof err));
    assert_int_equal(s.users, 4);
    assert_int_equal(s.items, 11);
    assert_int_equal(s.seq, 4);
    assert_int_equal(s.patches, 1);
    assert_int_equal(s.patch_dim, 13); /* the genres of rated movies; (no genres listed) is only movie 40's */
    assert_int_equal(s.text_len, 8);
    assert_int_equal(s.words, 13);     /* padding, 11 tokens in >= 2 movies, __OOV__ */
    assert_int_equal(s.cold_items, 1);
    assert_int_equal(s.tagged_items, 3);
    int64_t rows[] = {15, 2, 2}, pos[] = {9, 1, 1}, cold[] = {0, 0, 2};
    assert_memory_equal(s.rows, rows, sizeof rows);
    assert_memory_equal(s.positives, pos, sizeof pos);
    assert_memory_equal(s.cold_rows, cold, sizeof cold);

    em3_dataset *ds = open_ds(in_dir("ml"), err, sizeof err);
    if (!ds) fail_msg("%s", err);
    /* user 3 in time (300 is a tie: movie 3 before movie 5), then user 7, then user 9;
     * label: rating >= 4 (3.5 is not); hist: the 4 ratings before, padding first */
    static const int32_t tu[] = {1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3},
                         ti[] = {1, 2, 3, 4, 5, 6, 7, 9, 1, 5, 9, 10, 3, 7, 4},
                         th[] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5,
                                 3, 4, 5, 6, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 5, 0, 0, 0, 0,
                                 0, 0, 0, 10, 0, 0, 10, 3, 0, 10, 3, 7};
    static const float tc[] = {1, 0, 0, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1};
    expect_rows(ds, EM3_SPLIT_TRAIN, 15, tu, ti, tc, th);
    static const int32_t vu[] = {1, 2}, vi[] = {10, 6}, vh[] = {5, 6, 7, 9, 0, 1, 5, 9};
    static const float vc[] = {1, 0};
    expect_rows(ds, EM3_SPLIT_VALID, 2, vu, vi, vc, vh);
    /* test rows see the valid ratings before them as behaviour */
    static const int32_t su[] = {1, 2}, si[] = {8, 8}, sh[] = {6, 7, 9, 10, 1, 5, 9, 6};
    static const float sc[] = {1, 0};
    expect_rows(ds, EM3_SPLIT_TEST, 2, su, si, sc, sh);
    for (int32_t id = 1; id < 11; id++) assert_int_equal(em3_dataset_is_cold(ds, id), id == 8);

    /* text: genres, year, title words, tags (most applied first); ids in byte order of the tokens
     * in >= 2 movies: 1 genre:action ... 9 "tag:funny, clever", 10 the, 11 year:1995; 12 OOV */
    const em3_column *text = em3_dataset_find_table(ds, "text");
    assert_int_equal(text->rows, 11);
    assert_int_equal(text->vocab, 13);
    static const int32_t want[][8] = {
        [1] = {2, 12, 3, 4, 6, 11, 12, 12}, /* Toy Story: cut at 8 before "tag:pixar", "tag:funny, clever" */
        [2] = {2, 3, 6, 11, 12, 9, 0, 0},   /* Jumanji + the tag "  Funny,   Clever " normalised */
        [3] = {4, 5, 12, 11, 12, 12, 10, 0}, /* "American President, The (1995)" */
        [6] = {5, 12, 12, 12, 12, 0, 0, 0},  /* Schindler's List (1993): schindlers list */
        [7] = {7, 12, 12, 0, 0, 0, 0, 0},    /* Babylon 5: no year */
    };
    const int32_t *t = text->data;
    for (int i = 0; i < 8; i++) assert_int_equal(t[i], 0); /* the padding item */
    for (int it = 1; it < 8; it++)
        if (want[it][0]) assert_memory_equal(t + it * 8, want[it], sizeof want[it]);
    /* the image: one token, the genre multi-hot (action adventure animation children comedy ...) */
    const em3_column *img = em3_dataset_find_table(ds, "image");
    assert_int_equal(img->rank, 2);
    assert_int_equal(img->dim[0], 1);
    assert_int_equal(img->dim[1], 13);
    static const float toy[13] = {0, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0};
    assert_memory_equal((const float *)img->data + 13, toy, sizeof toy);
    int64_t v;
    for (int k = 0; k < em3_dataset_constant_count(ds); k++) {
        const char *name = em3_dataset_constant(ds, k, &v);
        int64_t expect = !strcmp(name, "users") ? 4 : !strcmp(name, "items") ? 11 : !strcmp(name, "seq") ? 4
                       : !strcmp(name, "patches") ? 1 : !strcmp(name, "patch_dim") ? 13
                       : !strcmp(name, "text_len") ? 8 : 13;
        assert_int_equal(v, expect);
    }
    em3_dataset_free(ds);
    size_t n;
    char *vocab = slurp(in_dir("ml/items/text_vocab.tsv"), &n);
    assert_non_null(strstr(vocab, "\n9\ttag:funny, clever\t2\n10\tthe\t4\n11\tyear:1995\t5\n12\t__OOV__\t0\n"));
    free(vocab);

    /* the same inputs: the same bytes */
    assert_true(em3_data_convert_movielens(source("tests/data/movielens_tiny"), in_dir("ml2"), &ml_opts, NULL, err, sizeof err));
    static const char *const files[] = {"items/text_vocab.tsv", "items/genres.txt", "items/movies.tsv", "users.tsv", NULL};
    char a[600], b[600];
    for (int k = 0; gen_files[k] && strncmp(gen_files[k], "topk/", 5); k++) {
        snprintf(a, sizeof a, "%s/ml/%s", dir, gen_files[k]);
        snprintf(b, sizeof b, "%s/ml2/%s", dir, gen_files[k]);
        if (!same_file(a, b)) fail_msg("%s differs between two conversions", gen_files[k]);
    }
    for (int k = 0; files[k]; k++) {
        snprintf(a, sizeof a, "%s/ml/%s", dir, files[k]);
        snprintf(b, sizeof b, "%s/ml2/%s", dir, files[k]);
        if (!same_file(a, b)) fail_msg("%s differs between two conversions", files[k]);
    }
}

/* A malformed or inconsistent MovieLens folder: the file and line, nothing written. */
static void expect_ml_error(const char *file, const char *text, const char *frag) {
    static const char *const files[] = {"movies.csv", "ratings.csv", "tags.csv"};
    char err[1024] = "", from[1200];
    mkdir(in_dir("src"), 0755);
    for (int k = 0; k < 3; k++) { /* the tiny folder, with `file` replaced */
        size_t n;
        snprintf(from, sizeof from, "%s/%s", source("tests/data/movielens_tiny"), files[k]);
        char *orig = slurp(from, &n);
        assert_non_null(orig);
        orig[n] = 0;
        snprintf(from, sizeof from, "src/%s", files[k]);
        put(from, strcmp(files[k], file) ? orig : text);
        free(orig);
    }
    if (em3_data_convert_movielens(in_dir("src"), in_dir("bad"), &ml_opts, NULL, err, sizeof err))
        fail_msg("converting with a bad %s should fail with '%s'", file, frag);
    if (!strstr(err, frag)) fail_msg("message '%s' lacks '%s'", err, frag);
    struct stat st;
    assert_int_not_equal(stat(in_dir("bad/dataset.yaml"), &st), 0);
}

static void test_movielens_errors(void **state) {
    (void)state;
    expect_ml_error("ratings.csv", "userId,movieId,rating,timestamp\n3,1,4.0,100\n3,2,3.5\n", "src/ratings.csv:3: 3 fields, but the header has 4");
    expect_ml_error("ratings.csv", "userId,movieId,rating,timestamp\n3,1,4.0,100\n\n3,2,four,200\n",
                    "src/ratings.csv:4: column 'rating': 'four' is not a finite number");
    expect_ml_error("ratings.csv", "userId,movieId,rating,timestamp\n3,99,4.0,100\n", "src/ratings.csv:2: movie 99 is not in movies.csv");
    expect_ml_error("ratings.csv", "userId,movieId,rating,timestamp\nx,1,4.0,100\n", "src/ratings.csv:2: column 'userId': 'x' is not an integer");
    expect_ml_error("ratings.csv", "userId,movieId,rating\n3,1,4.0\n", "src/ratings.csv:1: no column 'timestamp' in the header");
    expect_ml_error("ratings.csv", "userId,movieId,rating,timestamp\n", "src/ratings.csv: no ratings");
    expect_ml_error("movies.csv", "movieId,title,genres\n1,\"Toy Story, (1995),Comedy\n", "src/movies.csv:2: a quoted field is not closed");
    expect_ml_error("movies.csv", "movieId,title,genres\n1,A,Drama\n2,B,Drama\n1,C,Drama\n", "src/movies.csv:4: movie 1 appears again (first at line 2)");
    expect_ml_error("movies.csv", "movieId,title,genres\n", "src/ratings.csv:2: movie 70 is not in movies.csv");
    expect_ml_error("tags.csv", "userId,movieId,tag,timestamp\n3,1,a,1\n3,1,\"b,c\",2,9\n", "src/tags.csv:3: 5 fields, but the header has 4");
    expect_ml_error("tags.csv", "userId,movieId,tag,timestamp\n3,77,a,1\n", "src/tags.csv:2: movie 77 is not in movies.csv");
    /* tags.csv is optional; the others are not. An empty genres field is "(no genres listed)". */
    char err[1024];
    unlink(in_dir("src/tags.csv"));
    put("src/movies.csv", "movieId,title,genres\n1,Toy Story (1995),\n");
    put("src/ratings.csv", "userId,movieId,rating,timestamp\n3,1,4.0,100\n");
    em3_movielens_summary s;
    assert_true(em3_data_convert_movielens(in_dir("src"), in_dir("untagged"), &ml_opts, &s, err, sizeof err));
    assert_int_equal(s.tagged_items, 0);
    assert_int_equal(s.patch_dim, 1);
    size_t n;
    char *genres = slurp(in_dir("untagged/items/genres.txt"), &n);
    assert_true(n == 19 && !memcmp(genres, "(no genres listed)\n", 19));
    free(genres);
    unlink(in_dir("src/movies.csv"));
    assert_false(em3_data_convert_movielens(in_dir("src"), in_dir("bad"), &ml_opts, NULL, err, sizeof err));
    assert_non_null(strstr(err, "src/movies.csv: No such file or directory"));
}

/* ---- the real samples in ../shared/data ----------------------------------------------------------- */

static const char *shared(const char *rel) {
    static char p[1024];
    const char *src = getenv("EM3_SOURCE_DIR");
    snprintf(p, sizeof p, "%s/../shared/data/%s", src ? src : "..", rel);
    return p;
}

/* FuxiCTR's tiny CSV read with tests/data/fuxictr_tiny_csv.yaml gives exactly the arrays FuxiCTR
 * itself preprocessed from it (tiny_seq's .npz files). */
static void test_fuxictr_tiny(void **state) {
    (void)state;
    struct stat st;
    if (stat(shared("ctr-samples/fuxictr-tiny-csv"), &st) != 0) {
        print_message("skipped: %s is absent\n", shared("ctr-samples/fuxictr-tiny-csv"));
        skip();
    }
    char yaml[1024], err[2048];
    const char *src = getenv("EM3_SOURCE_DIR");
    snprintf(yaml, sizeof yaml, "%s/tests/data/fuxictr_tiny_csv.yaml", src ? src : "..");
    em3_dataset *ds = open_ds(yaml, err, sizeof err);
    if (!ds) fail_msg("%s", err);
    assert_int_equal(em3_dataset_column_count(ds), 17);
    for (int sp = 0; sp < EM3_SPLIT_COUNT; sp++) {
        char npz[64];
        snprintf(npz, sizeof npz, "ctr-samples/fuxictr-tiny-seq/%s.npz", em3_split_name((em3_split)sp));
        int compared = 0;
        for (int i = 0; i < em3_dataset_column_count(ds); i++) {
            const em3_column *c = em3_dataset_column(ds, (em3_split)sp, i);
            if (!strcmp(c->name, "price")) continue; /* numeric: FuxiCTR's tiny_seq left it out */
            em3_npy *a = em3_npz_read(shared(npz), c->name, err, sizeof err);
            if (!a) fail_msg("%s", err);
            assert_int_equal(a->numel, c->rows * (c->rank ? c->dim[0] : 1));
            double *v = malloc(sizeof *v * (size_t)a->numel);
            em3_npy_to_f64(a, v);
            for (int64_t k = 0; k < a->numel; k++) {
                double mine = c->dtype == EM3_DTYPE_I32 ? ((const int32_t *)c->data)[k] : ((const float *)c->data)[k];
                if (mine != v[k]) fail_msg("%s %s[%lld]: %g, FuxiCTR %g", em3_split_name((em3_split)sp), c->name, (long long)k, mine, v[k]);
            }
            free(v);
            em3_npy_free(a);
            compared++;
        }
        assert_int_equal(compared, 16);
    }
    em3_dataset_free(ds);
}

static void test_tiktok(void **state) {
    (void)state;
    struct stat st;
    if (stat(shared("tiktok/tiktok.inter"), &st) != 0) {
        print_message("skipped: %s is absent\n", shared("tiktok"));
        skip();
    }
    char err[2048];
    em3_dataset *ds = open_ds(shared("tiktok"), err, sizeof err);
    if (!ds) fail_msg("%s", err);
    assert_int_equal(em3_dataset_rows(ds, EM3_SPLIT_TRAIN), 59541);
    assert_int_equal(em3_dataset_rows(ds, EM3_SPLIT_VALID), 3051);
    assert_int_equal(em3_dataset_rows(ds, EM3_SPLIT_TEST), 6130);
    assert_int_equal(em3_dataset_find(ds, EM3_SPLIT_TRAIN, "user")->vocab, 9309);
    assert_int_equal(em3_dataset_find(ds, EM3_SPLIT_TRAIN, "item")->vocab, 6711);
    const em3_column *img = em3_dataset_find_table(ds, "image");
    assert_non_null(img);
    assert_non_null(em3_dataset_find_table(ds, "audio"));
    assert_int_equal(img->rows, 6711);
    assert_int_equal(img->dim[0], 128);
    em3_npy *a = em3_npy_read(shared("tiktok/image_feat.npy"), err, sizeof err);
    assert_non_null(a);
    assert_int_equal(a->dtype, EM3_NPY_F16);
    float *f = malloc(sizeof *f * (size_t)a->numel);
    em3_npy_to_f32(a, f);
    assert_memory_equal((const float *)img->data + 128, f, sizeof *f * (size_t)a->numel); /* row i+1 = item i */
    free(f);
    em3_npy_free(a);
    int64_t cold = 0;
    for (int32_t id = 1; id < 6711; id++) cold += em3_dataset_is_cold(ds, id);
    assert_int_equal(cold, 465); /* as the data's README says */
    em3_dataset_free(ds);
}

/* ml-latest-small with the defaults: the figures docs/data.md ("MovieLens") states; an independent
 * Python reimplementation of the rules gave the same arrays when they were written. */
static void test_movielens_small(void **state) {
    (void)state;
    struct stat st;
    if (stat(shared("movielens-small/ratings.csv"), &st) != 0) {
        print_message("skipped: %s is absent\n", shared("movielens-small"));
        skip();
    }
    char err[2048];
    em3_movielens_summary s;
    em3_movielens_options o = {.min_rating = 4, .max_len = 50, .text_len = 16, .min_count = 2};
    assert_true(em3_data_convert_movielens(shared("movielens-small"), in_dir("ml"), &o, &s, err, sizeof err));
    int64_t rows[] = {80592, 10122, 10122}, cold[] = {0, 745, 948};
    assert_memory_equal(s.rows, rows, sizeof rows);
    assert_memory_equal(s.cold_rows, cold, sizeof cold);
    assert_int_equal(s.positives[EM3_SPLIT_TRAIN], 39173);
    assert_int_equal(s.users, 611);
    assert_int_equal(s.items, 9725);
    assert_int_equal(s.cold_items, 1486);
    assert_int_equal(s.patch_dim, 20);
    assert_int_equal(s.words, 3923);
    assert_int_equal(s.tagged_items, 1554);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xxh64),
        cmocka_unit_test_setup_teardown(test_yaml_fuxictr_form, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_yaml_errors, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_csv_reader, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_csv_dataset, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_normalizers, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_csv_errors, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_npy_folder_and_tables, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_npz, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_mmrec, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_cache, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_gen_reproducible, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_gen_statistics, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_movielens_tiny, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_movielens_errors, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_fuxictr_tiny, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_tiktok, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_movielens_small, make_dir, remove_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
