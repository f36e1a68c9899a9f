/* tools/cmd_data.c — `em3 data gen|movielens|import|info`: write the built-in generated dataset
 * or convert MovieLens into the same form, import a described dataset into its cache, and show
 * what a dataset holds (splits, columns, item tables, cold items, the cache). docs/data.md is
 * the reference. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "driver.h"
#include "runtime/dataset.h"

static int imax(int a, int b) { return a > b ? a : b; }

static double seconds_since(const struct timespec *t0) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

/* The figures of a written dataset, per split: rows, positive labels and their rate, rows of
 * cold items, and the oracle AUC when there is one (generated data). */
static void print_splits(const char *positives, const char *rate, const int64_t *rows, const int64_t *pos,
                         const int64_t *cold_rows, const double *oracle) {
    printf("  %-6s %10s %10s %8s %16s", "split", "rows", positives, rate, "cold-item rows");
    if (oracle) printf(" %11s", "oracle AUC");
    putchar('\n');
    for (int sp = 0; sp < EM3_SPLIT_COUNT; sp++) {
        printf("  %-6s %10lld %10lld %8.3f %16lld", em3_split_name((em3_split)sp), (long long)rows[sp],
               (long long)pos[sp], rows[sp] ? (double)pos[sp] / (double)rows[sp] : 0.0, (long long)cold_rows[sp]);
        if (oracle) printf(" %11.4f", oracle[sp]);
        putchar('\n');
    }
}

/* The --set line that fits the bundled models to a written dataset (also its model_constants). */
static void print_constants(int64_t users, int64_t items, int64_t seq, int64_t patches, int64_t patch_dim,
                            int64_t text_len, int64_t words) {
    printf("  model constants (vocabularies count the padding id 0): --set users=%lld --set items=%lld --set seq=%lld --set patches=%lld "
           "--set patch_dim=%lld --set text_len=%lld --set words=%lld\n",
           (long long)users, (long long)items, (long long)seq, (long long)patches, (long long)patch_dim,
           (long long)text_len, (long long)words);
}

static int data_gen(int argc, char **argv) {
    static const struct option longopts[] = {{"out", required_argument, 0, 'o'},
                                             {"size", required_argument, 0, 's'},
                                             {"seed", required_argument, 0, 'S'},
                                             {"topk", no_argument, 0, 't'},
                                             {0, 0, 0, 0}};
    em3_gen_options o = {.size = EM3_GEN_DEFAULT, .seed = 1};
    const char *out = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'o': out = optarg; break;
        case 's':
            if (!em3_gen_size_parse(optarg, &o.size))
                return em3_usage_error("data", "--size takes tiny, small, default or large, not '%s'", optarg);
            break;
        case 'S':
            o.seed = strtoull(optarg, &end, 10);
            if (!*optarg || *end) return em3_usage_error("data", "--seed takes a number, not '%s'", optarg);
            break;
        case 't': o.topk = true; break;
        default: return em3_usage_error("data", "unknown option of 'data gen'");
        }
    }
    if (!out) return em3_usage_error("data", "data gen needs --out DIR");
    if (optind < argc) return em3_usage_error("data", "unexpected argument '%s'", argv[optind]);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char err[4096];
    em3_gen_summary s;
    if (!em3_data_generate(out, &o, &s, err, sizeof err)) {
        fprintf(stderr, "em3: error: %s\n", err);
        return 1;
    }
    printf("generated gen_%s (seed %" PRIu64 ") in %s in %.2f s\n", em3_gen_size_name(o.size), o.seed,
           out, seconds_since(&t0));
    print_splits("clicks", "CTR", s.rows, s.clicks, s.cold_rows, s.oracle_auc);
    printf("  %lld users, %lld items (%lld cold: in valid/test rows, in no train row), %lld words\n",
           (long long)s.users - 1, (long long)s.items - 1, (long long)s.cold_items, (long long)s.words - 1);
    print_constants(s.users, s.items, s.seq, s.patches, s.patch_dim, s.text_len, s.words);
    if (o.topk) printf("  top-K form (MMRec): %s/topk\n", out);
    return 0;
}

/* A whole number >= 1 for an option; false for anything else. */
static bool parse_count(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < 1) return false;
    *out = v;
    return true;
}

static int data_movielens(int argc, char **argv) {
    static const struct option longopts[] = {{"out", required_argument, 0, 'o'},
                                             {"max-len", required_argument, 0, 'L'},
                                             {"min-rating", required_argument, 0, 'r'},
                                             {"text-len", required_argument, 0, 'T'},
                                             {"min-count", required_argument, 0, 'c'},
                                             {0, 0, 0, 0}};
    em3_movielens_options o = {.min_rating = 4, .max_len = 50, .text_len = 16, .min_count = 2};
    const char *out = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'o': out = optarg; break;
        case 'L':
            if (!parse_count(optarg, &o.max_len)) return em3_usage_error("data", "--max-len takes a number >= 1, not '%s'", optarg);
            break;
        case 'T':
            if (!parse_count(optarg, &o.text_len)) return em3_usage_error("data", "--text-len takes a number >= 1, not '%s'", optarg);
            break;
        case 'c':
            if (!parse_count(optarg, &o.min_count)) return em3_usage_error("data", "--min-count takes a number >= 1, not '%s'", optarg);
            break;
        case 'r':
            o.min_rating = strtod(optarg, &end);
            if (!*optarg || *end || !isfinite(o.min_rating))
                return em3_usage_error("data", "--min-rating takes a number, not '%s'", optarg);
            break;
        default: return em3_usage_error("data", "unknown option of 'data movielens'");
        }
    }
    if (!out) return em3_usage_error("data", "data movielens needs --out DIR");
    if (optind + 1 != argc) return em3_usage_error("data", "data movielens takes one MovieLens folder (ratings.csv, movies.csv, tags.csv)");
    const char *src = argv[optind];
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char err[4096];
    em3_movielens_summary s;
    if (!em3_data_convert_movielens(src, out, &o, &s, err, sizeof err)) {
        fprintf(stderr, "em3: error: %s\n", err);
        return 1;
    }
    printf("converted %s (%lld ratings; label: rating >= %g) into %s in %.2f s\n", src, (long long)s.ratings,
           o.min_rating, out, seconds_since(&t0));
    print_splits("positives", "rate", s.rows, s.positives, s.cold_rows, NULL);
    printf("  %lld users, %lld items (%lld cold: in valid/test rows, in no train row), %lld genres (the image token)\n",
           (long long)s.users - 1, (long long)s.items - 1, (long long)s.cold_items, (long long)s.patch_dim);
    printf("  text: %lld tokens in >= %lld items, + __OOV__; %.1f of %lld token slots used per item, %lld items cut, "
           "%.1f%% OOV, %lld items tagged\n",
           (long long)s.words - 2, (long long)s.min_count, (double)s.text_tokens / (double)(s.items - 1),
           (long long)s.text_len, (long long)s.truncated_items,
           s.text_tokens ? 100.0 * (double)s.oov_tokens / (double)s.text_tokens : 0.0, (long long)s.tagged_items);
    print_constants(s.users, s.items, s.seq, s.patches, s.patch_dim, s.text_len, s.words);
    return 0;
}

static void shape_text(const em3_column *c, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "%s[", c->dtype == EM3_DTYPE_I32 ? "i32" : "f32");
    for (int i = 0; i < c->rank && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)c->dim[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static void print_column(const em3_dataset *ds, const em3_column *c, int width, const char *role) {
    char shape[96];
    shape_text(c, shape, sizeof shape);
    printf("  %-*s %-12s %-12s", width, c->name, em3_col_kind_name(c->kind), shape);
    if (c->vocab) printf(" vocab %lld", (long long)c->vocab);
    if (c->shares) printf(" (shares %s)", c->shares);
    if (c->kind == EM3_COL_NUMERIC && c->rows) { /* what a normalizer (or its absence) left */
        em3_float_stats st = em3_float_stats_of(c->data, c->rows);
        printf("train mean %.4g, std %.4g, range [%.4g, %.4g]", st.mean, st.std, st.min, st.max);
    }
    const char *t1 = em3_dataset_token(ds, c->name, 1);
    if (t1 && !c->shares) {
        printf(", tokens '%s'", t1);
        for (int64_t id = 2; id <= 3 && id + 1 < c->vocab; id++) printf(" '%s'", em3_dataset_token(ds, c->name, id));
    }
    if (role) printf("  [%s]", role);
    putchar('\n');
}

static int open_dataset(int argc, char **argv, bool import, em3_dataset **out) {
    static const struct option longopts[] = {{"cache", required_argument, 0, 'c'},
                                             {"rebuild", no_argument, 0, 'r'},
                                             {"quiet", no_argument, 0, 'q'},
                                             {0, 0, 0, 0}};
    em3_data_options o = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:q", longopts, NULL)) != -1) {
        if (c == 'c') o.cache_dir = optarg;
        else if (c == 'r' && import) o.rebuild = true;
        else if (c == 'q') o.quiet = true;
        else return em3_usage_error("data", "unknown option of 'data %s'", argv[0]);
    }
    if (optind + 1 != argc) return em3_usage_error("data", "data %s takes one dataset (a YAML file or a folder)", argv[0]);
    char err[4096];
    *out = em3_dataset_open(argv[optind], &o, err, sizeof err);
    if (!*out) {
        fprintf(stderr, "em3: error: %s\n", err);
        return 1;
    }
    return 0;
}

static int data_import(int argc, char **argv) {
    em3_dataset *ds;
    int status = open_dataset(argc, argv, true, &ds);
    if (status) return status;
    printf("%s: %lld train, %lld valid, %lld test rows; cache %s (%s)\n", em3_dataset_name(ds),
           (long long)em3_dataset_rows(ds, EM3_SPLIT_TRAIN), (long long)em3_dataset_rows(ds, EM3_SPLIT_VALID),
           (long long)em3_dataset_rows(ds, EM3_SPLIT_TEST), em3_dataset_cache_path(ds),
           em3_dataset_cache_reused(ds) ? "up to date, reused" : "imported now");
    em3_dataset_free(ds);
    return 0;
}

static double label_rate(const em3_column *c) {
    const float *v = c->data;
    double sum = 0;
    for (int64_t r = 0; r < c->rows; r++) sum += v[r];
    return c->rows ? sum / (double)c->rows : 0;
}

static int data_info(int argc, char **argv) {
    em3_dataset *ds;
    int status = open_dataset(argc, argv, false, &ds);
    if (status) return status;
    const char *label = em3_dataset_label(ds), *group = em3_dataset_group(ds), *item = em3_dataset_item(ds);
    printf("dataset %s\n", em3_dataset_name(ds));
    printf("cache   %s (%s)\n", em3_dataset_cache_path(ds),
           em3_dataset_cache_reused(ds) ? "up to date, checksums verified" : "imported now");
    printf("splits ");
    for (int sp = 0; sp < EM3_SPLIT_COUNT; sp++) {
        printf("  %s %lld rows", em3_split_name((em3_split)sp), (long long)em3_dataset_rows(ds, (em3_split)sp));
        if (label && em3_dataset_rows(ds, (em3_split)sp))
            printf(" (%s rate %.4f)", label, label_rate(em3_dataset_find(ds, (em3_split)sp, label)));
        putchar(sp + 1 < EM3_SPLIT_COUNT ? ',' : '\n');
    }
    int width = 8;
    for (int i = 0; i < em3_dataset_column_count(ds); i++)
        width = imax(width, (int)strlen(em3_dataset_column(ds, EM3_SPLIT_TRAIN, i)->name));
    for (int i = 0; i < em3_dataset_table_count(ds); i++)
        width = imax(width, (int)strlen(em3_dataset_table(ds, i)->name));
    printf("columns\n");
    for (int i = 0; i < em3_dataset_column_count(ds); i++) {
        const em3_column *c = em3_dataset_column(ds, EM3_SPLIT_TRAIN, i);
        char role[64] = "";
        if (label && !strcmp(c->name, label)) strcat(role, "label ");
        if (group && !strcmp(c->name, group)) strcat(role, "group for gAUC ");
        if (item && !strcmp(c->name, item)) strcat(role, "item id ");
        if (*role) role[strlen(role) - 1] = 0;
        print_column(ds, c, width, *role ? role : NULL);
    }
    if (em3_dataset_table_count(ds)) {
        printf("item tables (rows are %s ids)\n", item);
        for (int i = 0; i < em3_dataset_table_count(ds); i++) {
            const em3_column *t = em3_dataset_table(ds, i);
            print_column(ds, t, width, NULL);
        }
    }
    if (item) {
        int64_t vocab = em3_dataset_find(ds, EM3_SPLIT_TRAIN, item)->vocab, cold = 0, shown = 0;
        bool *seen = calloc((size_t)vocab + 1, sizeof *seen);
        for (int32_t id = 1; id < vocab; id++) cold += em3_dataset_is_cold(ds, id);
        printf("cold items (in no train row): %lld of %lld ids;", (long long)cold, (long long)vocab - 1);
        for (int sp = EM3_SPLIT_VALID; sp < EM3_SPLIT_COUNT; sp++) {
            const em3_column *c = em3_dataset_find(ds, (em3_split)sp, item);
            const int32_t *ids = c->data;
            int64_t rows = 0;
            for (int64_t r = 0; r < c->rows; r++)
                if (em3_dataset_is_cold(ds, ids[r])) {
                    rows++;
                    shown += ids[r] < vocab && !seen[ids[r]];
                    if (ids[r] < vocab) seen[ids[r]] = true;
                }
            printf(" %s %lld rows (%.1f%%),", em3_split_name((em3_split)sp), (long long)rows,
                   c->rows ? 100.0 * (double)rows / (double)c->rows : 0.0);
        }
        printf(" %lld distinct\n", (long long)shown);
        free(seen);
    }
    em3_dataset_free(ds);
    return 0;
}

int em3_cmd_data(int argc, char **argv) {
    if (argc < 2) return em3_usage_error("data", "data needs a subcommand: gen, movielens, import or info");
    if (!strcmp(argv[1], "gen")) return data_gen(argc - 1, argv + 1);
    if (!strcmp(argv[1], "movielens")) return data_movielens(argc - 1, argv + 1);
    if (!strcmp(argv[1], "import")) return data_import(argc - 1, argv + 1);
    if (!strcmp(argv[1], "info")) return data_info(argc - 1, argv + 1);
    return em3_usage_error("data", "no subcommand 'data %s' (gen, movielens, import or info)", argv[1]);
}
