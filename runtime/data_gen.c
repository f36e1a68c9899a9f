/* runtime/data_gen.c — the built-in generated multimodal CTR dataset (`em3 data gen`). Items have
 * latent topics that produce image tokens and text tokens; users have topic tastes and
 * time-ordered behaviour; clicks depend on user × content affinity, recent behaviour, per-item
 * effects content cannot predict, popularity and noise. docs/data.md states the model and its
 * figures. Seeded (xoshiro256**): the same options write byte-identical files. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"
#include "ir/support.h"
#include "metrics.h"

enum {
    LATENT = 16,   /* dimension of content and taste vectors */
    STYLE = 4,     /* item latents that show in images but do not drive clicks */
    PATCHES = 8,   /* image tokens per item */
    PATCH_DIM = 48,
    TEXT_LEN = 16, /* text tokens per item (0 pads the end) */
    TEXT_FEAT = 64, /* the MMRec form's pre-extracted text vector */
    RECENT = 5,    /* behaviour items that make the short-term interest */
};

static const struct {
    const char *name;
    int64_t users, items, impressions, seq, words, topics; /* users, items, words count id 0 */
} sizes[EM3_GEN_COUNT] = {
    [EM3_GEN_TINY] = {"tiny", 100, 300, 2000, 20, 1000, 8},
    [EM3_GEN_SMALL] = {"small", 1000, 2000, 25000, 50, 2000, 12},
    [EM3_GEN_DEFAULT] = {"default", 10000, 10000, 150000, 50, 5000, 16},
    [EM3_GEN_LARGE] = {"large", 100000, 50000, 2000000, 50, 20000, 32},
};

/* The click model's weights (docs/data.md). */
static const double BIAS = -4.0, W_TASTE = 3.0, W_RECENT = 1.5, W_POP = 0.25, SD_ITEM = 1.0,
                    SD_USER = 0.4, ZIPF_ITEMS = 0.8, COLD_FRACTION = 0.1, COLD_SHARE = 0.2,
                    TOPIC_SHARE = 0.5;

const char *em3_gen_size_name(em3_gen_size s) {
    EM3_ASSERT(s >= 0 && s < EM3_GEN_COUNT, "size %d", (int)s);
    return sizes[s].name;
}

bool em3_gen_size_parse(const char *s, em3_gen_size *out) {
    for (int i = 0; i < EM3_GEN_COUNT; i++)
        if (!strcmp(s, sizes[i].name)) {
            *out = (em3_gen_size)i;
            return true;
        }
    return false;
}

/* ---- random numbers ----------------------------------------------------------------------------- */

typedef struct {
    uint64_t s[4];
    double spare;
    bool has_spare;
} rng;

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed) {
    *r = (rng){0};
    for (int i = 0; i < 4; i++) r->s[i] = splitmix(&seed);
}

static uint64_t rng_next(rng *r) {
    uint64_t *s = r->s, res = ((s[1] * 5) << 7 | (s[1] * 5) >> 57) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3] << 45 | s[3] >> 19;
    return res;
}

static double uniform(rng *r) { return (double)(rng_next(r) >> 11) * 0x1p-53; }
static int64_t below(rng *r, int64_t n) { return (int64_t)(uniform(r) * (double)n); }

static double normal(rng *r) {
    if (r->has_spare) {
        r->has_spare = false;
        return r->spare;
    }
    double u = 1.0 - uniform(r), v = uniform(r), m = sqrt(-2.0 * log(u));
    r->spare = m * sin(2 * M_PI * v);
    r->has_spare = true;
    return m * cos(2 * M_PI * v);
}

/* Cumulative weights for sampling by binary search. */
typedef struct {
    double *cum;
    int64_t *id;
    int64_t n;
} sampler;

static void sampler_add(sampler *s, int64_t id, double w, int64_t cap) {
    if (!s->cum) {
        s->cum = em3_xmalloc(sizeof *s->cum * (size_t)cap);
        s->id = em3_xmalloc(sizeof *s->id * (size_t)cap);
    }
    s->cum[s->n] = (s->n ? s->cum[s->n - 1] : 0) + w;
    s->id[s->n++] = id;
}

static int64_t sample(const sampler *s, rng *r) {
    EM3_ASSERT(s->n > 0, "sampling from an empty pool");
    double x = uniform(r) * s->cum[s->n - 1];
    int64_t lo = 0, hi = s->n - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (s->cum[mid] > x) hi = mid;
        else lo = mid + 1;
    }
    return s->id[lo];
}

static void sampler_free(sampler *s) {
    free(s->cum);
    free(s->id);
}

/* ---- the world -------------------------------------------------------------------------------- */

typedef struct {
    int64_t users, items, seq, words, topics, impressions;
    rng r;
    double (*topic)[LATENT];
    double (*content)[LATENT]; /* per item, unit length */
    double (*taste)[LATENT];   /* per user, unit length */
    int *top1, *top2;          /* items' and users' two topics, with the weight of the first */
    double *mix, *item_bias, *pop_z, *user_bias, *activity;
    int *utop1, *utop2;
    double *umix;
    bool *cold;
    sampler warm, cold_pool, *by_topic, by_user;
    int32_t *ring; /* per user: the last `seq` behaviour items, oldest first once full */
    int64_t *behaviour;
} world;

static void unit(double *v) {
    double n = 0;
    for (int d = 0; d < LATENT; d++) n += v[d] * v[d];
    n = sqrt(n);
    for (int d = 0; d < LATENT; d++) v[d] /= n;
}

static double dot(const double *a, const double *b) {
    double s = 0;
    for (int d = 0; d < LATENT; d++) s += a[d] * b[d];
    return s;
}

/* A mixture of two topics plus noise, normalised. */
static void mixture(world *w, int t1, int t2, double m, double noise, double *out) {
    for (int d = 0; d < LATENT; d++)
        out[d] = m * w->topic[t1][d] + (1 - m) * w->topic[t2][d] + noise * normal(&w->r);
    unit(out);
}

static void make_items(world *w) {
    int64_t n = w->items;
    w->content = em3_xcalloc((size_t)n, sizeof *w->content);
    w->top1 = em3_xcalloc((size_t)n, sizeof *w->top1);
    w->top2 = em3_xcalloc((size_t)n, sizeof *w->top2);
    w->mix = em3_xcalloc((size_t)n, sizeof *w->mix);
    w->item_bias = em3_xcalloc((size_t)n, sizeof *w->item_bias);
    w->pop_z = em3_xcalloc((size_t)n, sizeof *w->pop_z);
    w->cold = em3_xcalloc((size_t)n, sizeof *w->cold);
    /* popularity: a power law over a random order of the items; the first ranks of a second
     * random order are the cold (new) items */
    int64_t *rank = em3_xmalloc(sizeof *rank * (size_t)n), *order = em3_xmalloc(sizeof *order * (size_t)n);
    for (int64_t i = 0; i < n; i++) rank[i] = order[i] = i;
    for (int64_t i = n - 1; i > 1; i--) {
        int64_t j = 1 + below(&w->r, i), t = rank[i];
        rank[i] = rank[j];
        rank[j] = t;
        j = 1 + below(&w->r, i);
        t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    int64_t n_cold = (int64_t)ceil(COLD_FRACTION * (double)(n - 1));
    for (int64_t k = 1; k <= n_cold; k++) w->cold[order[k]] = true;
    double mean = 0, sq = 0;
    for (int64_t i = 1; i < n; i++) {
        w->pop_z[i] = -ZIPF_ITEMS * log((double)rank[i]);
        mean += w->pop_z[i] / (double)(n - 1);
    }
    for (int64_t i = 1; i < n; i++) sq += (w->pop_z[i] - mean) * (w->pop_z[i] - mean) / (double)(n - 1);
    w->by_topic = em3_xcalloc((size_t)w->topics, sizeof *w->by_topic);
    for (int64_t i = 1; i < n; i++) {
        double weight = exp(w->pop_z[i]);
        w->pop_z[i] = (w->pop_z[i] - mean) / sqrt(sq);
        w->top1[i] = (int)below(&w->r, w->topics);
        w->top2[i] = (int)below(&w->r, w->topics);
        w->mix[i] = 0.6 + 0.4 * uniform(&w->r);
        mixture(w, w->top1[i], w->top2[i], w->mix[i], 0.35 / sqrt(LATENT), w->content[i]);
        w->item_bias[i] = SD_ITEM * normal(&w->r);
        if (w->cold[i]) {
            sampler_add(&w->cold_pool, i, weight, n);
        } else {
            sampler_add(&w->warm, i, weight, n);
            sampler_add(&w->by_topic[w->top1[i]], i, weight, n);
        }
    }
    free(rank);
    free(order);
}

static void make_users(world *w) {
    int64_t n = w->users;
    w->taste = em3_xcalloc((size_t)n, sizeof *w->taste);
    w->utop1 = em3_xcalloc((size_t)n, sizeof *w->utop1);
    w->utop2 = em3_xcalloc((size_t)n, sizeof *w->utop2);
    w->umix = em3_xcalloc((size_t)n, sizeof *w->umix);
    w->user_bias = em3_xcalloc((size_t)n, sizeof *w->user_bias);
    w->activity = em3_xcalloc((size_t)n, sizeof *w->activity);
    for (int64_t u = 1; u < n; u++) {
        w->utop1[u] = (int)below(&w->r, w->topics);
        w->utop2[u] = (int)below(&w->r, w->topics);
        w->umix[u] = 0.5 + 0.4 * uniform(&w->r);
        mixture(w, w->utop1[u], w->utop2[u], w->umix[u], 0.5 / sqrt(LATENT), w->taste[u]);
        w->user_bias[u] = SD_USER * normal(&w->r);
        w->activity[u] = exp(normal(&w->r));
        sampler_add(&w->by_user, u, w->activity[u], n);
    }
}

/* An item shown to user u: from one of the user's topics (a retrieval stage), or by
 * popularity; in valid/test a share of the impressions goes to new (cold) items. */
static int64_t candidate(world *w, int64_t u, bool late) {
    if (late && uniform(&w->r) < COLD_SHARE) return sample(&w->cold_pool, &w->r);
    if (uniform(&w->r) < TOPIC_SHARE) {
        int t = uniform(&w->r) < w->umix[u] ? w->utop1[u] : w->utop2[u];
        if (w->by_topic[t].n) return sample(&w->by_topic[t], &w->r);
    }
    return sample(&w->warm, &w->r);
}

/* The user's last `k` behaviour items (fewer when the history is shorter), oldest first. */
static int64_t recent(const world *w, int64_t u, int64_t k, int32_t *out) {
    int64_t have = w->behaviour[u] < w->seq ? w->behaviour[u] : w->seq, n = have < k ? have : k;
    for (int64_t j = 0; j < n; j++)
        out[j] = w->ring[u * w->seq + (w->behaviour[u] - n + j) % w->seq];
    return n;
}

static void remember(world *w, int64_t u, int64_t item) {
    w->ring[u * w->seq + w->behaviour[u] % w->seq] = (int32_t)item;
    w->behaviour[u]++;
}

static double click_prob(const world *w, int64_t u, int64_t i) {
    int32_t last[RECENT];
    int64_t n = recent(w, u, RECENT, last);
    double short_term = 0;
    for (int64_t j = 0; j < n; j++) short_term += dot(w->content[last[j]], w->content[i]) / (double)n;
    double logit = BIAS + W_TASTE * dot(w->taste[u], w->content[i]) + W_RECENT * short_term +
                   w->item_bias[i] + w->user_bias[u] + W_POP * w->pop_z[i];
    return 1 / (1 + exp(-logit));
}

/* Behaviour before the log starts: clicks among warm candidates, so that histories exist
 * from the first impression. */
static void make_histories(world *w) {
    w->ring = em3_xcalloc((size_t)(w->users * w->seq), sizeof *w->ring);
    w->behaviour = em3_xcalloc((size_t)w->users, sizeof *w->behaviour);
    for (int64_t u = 1; u < w->users; u++) {
        int64_t k = 3 + (int64_t)(12 * w->activity[u]);
        if (k > 3 * w->seq) k = 3 * w->seq;
        for (int64_t j = 0; j < k; j++) {
            int64_t item = 0;
            for (int attempt = 0; attempt < 10; attempt++) {
                item = candidate(w, u, false);
                if (uniform(&w->r) < click_prob(w, u, item)) break;
            }
            remember(w, u, item);
        }
    }
}

/* ---- content ----------------------------------------------------------------------------------- */

/* Image tokens: each patch a random linear view of the item's content and style, plus noise. */
static float *make_images(world *w) {
    int64_t n = w->items, per = PATCHES * PATCH_DIM;
    double *a = em3_xmalloc(sizeof *a * (size_t)(per * LATENT)), *b = em3_xmalloc(sizeof *b * (size_t)(per * STYLE));
    for (int64_t k = 0; k < per * LATENT; k++) a[k] = normal(&w->r);
    for (int64_t k = 0; k < per * STYLE; k++) b[k] = 0.5 * normal(&w->r);
    float *img = em3_xcalloc((size_t)(n * per), sizeof *img);
    for (int64_t i = 1; i < n; i++) {
        double style[STYLE];
        for (int e = 0; e < STYLE; e++) style[e] = normal(&w->r);
        for (int64_t k = 0; k < per; k++) {
            double x = 0.7 * normal(&w->r);
            for (int d = 0; d < LATENT; d++) x += a[k * LATENT + d] * w->content[i][d];
            for (int e = 0; e < STYLE; e++) x += b[k * STYLE + e] * style[e];
            img[i * per + k] = (float)x;
        }
    }
    free(a);
    free(b);
    return img;
}

/* Text: word ids 1..G are general words, then one slice of words per topic; a token is a word
 * of one of the item's topics (70%) or a general word, Zipf-distributed within its slice. */
static int32_t *make_text(world *w) {
    int64_t general = (w->words - 1) / 5, slice = (w->words - 1 - general) / w->topics;
    sampler zg = {0}, zs = {0};
    for (int64_t k = 0; k < general; k++) sampler_add(&zg, 1 + k, 1.0 / (double)(k + 1), general);
    for (int64_t k = 0; k < slice; k++) sampler_add(&zs, k, 1.0 / (double)(k + 1), slice);
    int32_t *text = em3_xcalloc((size_t)(w->items * TEXT_LEN), sizeof *text);
    for (int64_t i = 1; i < w->items; i++) {
        int64_t len = TEXT_LEN / 2 + below(&w->r, TEXT_LEN / 2 + 1);
        for (int64_t k = 0; k < len; k++) {
            int64_t word;
            if (uniform(&w->r) < 0.7) {
                int t = uniform(&w->r) < w->mix[i] ? w->top1[i] : w->top2[i];
                word = 1 + general + t * slice + sample(&zs, &w->r);
            } else {
                word = sample(&zg, &w->r);
            }
            text[i * TEXT_LEN + k] = (int32_t)word;
        }
    }
    sampler_free(&zg);
    sampler_free(&zs);
    return text;
}

/* ---- writing (shared with data_movielens.c: both write this one form) ------------------------- */

char *em3_data_path(const char *dir, const char *name) {
    char *p = em3_xmalloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

static bool make_dir(const char *dir, const char *sub, char *err, size_t errlen) {
    char *p = sub ? em3_data_path(dir, sub) : em3_xstrdup(dir);
    bool ok = em3_mkdir_p(p);
    if (!ok) em3_data_fail(err, errlen, "%s: cannot create: %s", p, strerror(errno));
    free(p);
    return ok;
}

static bool write_i32(const char *dir, const char *name, int rank, const int64_t *shape,
                      const int32_t *data, char *err, size_t errlen) {
    char *p = em3_data_path(dir, name);
    bool ok = em3_npy_write_i32(p, rank, shape, data, err, errlen);
    free(p);
    return ok;
}

static bool write_f32(const char *dir, const char *name, int rank, const int64_t *shape,
                      const float *data, char *err, size_t errlen) {
    char *p = em3_data_path(dir, name);
    bool ok = em3_npy_write_f32(p, rank, shape, data, err, errlen);
    free(p);
    return ok;
}

static bool write_text(const char *dir, const char *name, const char *text, size_t len, char *err,
                       size_t errlen) {
    char *p = em3_data_path(dir, name);
    bool ok = em3_write_file_atomic(p, text, len, err, errlen);
    free(p);
    return ok;
}

static bool write_yaml(const char *dir, const em3_ctr_data *d, char *err, size_t errlen) {
    em3_strbuf y = {0};
    em3_sb_printf(&y,
                  "%s"
                  "dataset_id: %s\n"
                  "train_data: train\nvalid_data: valid\ntest_data: test\n"
                  "feature_cols:\n"
                  "  - {name: user, type: categorical, encoding: identity, vocab_size: %lld}\n"
                  "  - {name: item, type: categorical, encoding: identity, vocab_size: %lld}\n"
                  "  - {name: hist, type: sequence, share_embedding: item, max_len: %lld}\n"
                  "label_col: {name: click, dtype: float}\n"
                  "group_id: user\nitem_id: item\n"
                  "model_constants: {users: %lld, items: %lld, seq: %lld, patches: %lld, patch_dim: %lld, "
                  "text_len: %lld, words: %lld}\n"
                  "item_tables:\n"
                  "  - {name: image, file: items/image.npy, type: embedding}\n"
                  "  - {name: text, file: items/text.npy, type: sequence, vocab_size: %lld}\n",
                  d->comment, d->id, (long long)d->users, (long long)d->items, (long long)d->seq,
                  (long long)d->users, (long long)d->items, (long long)d->seq, (long long)d->patches,
                  (long long)d->patch_dim, (long long)d->text_len, (long long)d->words, (long long)d->words);
    bool ok = write_text(dir, "dataset.yaml", y.data, y.len, err, errlen);
    em3_sb_free(&y);
    return ok;
}

/* The splits' folders, the item tables, the extra files, and dataset.yaml last: a folder
 * without it is not a dataset yet. */
bool em3_data_write_ctr(const char *dir, const em3_ctr_data *d, char *err, size_t errlen) {
    bool ok = make_dir(dir, NULL, err, errlen) && make_dir(dir, "items", err, errlen);
    for (int s = 0; ok && s < EM3_SPLIT_COUNT; s++) {
        char *sub = em3_data_path(dir, em3_split_name((em3_split)s));
        int64_t rows = d->rows[s], hshape[2] = {rows, d->seq};
        ok = make_dir(sub, NULL, err, errlen) && write_i32(sub, "user.npy", 1, &rows, d->user[s], err, errlen) &&
             write_i32(sub, "item.npy", 1, &rows, d->item[s], err, errlen) &&
             write_i32(sub, "hist.npy", 2, hshape, d->hist[s], err, errlen) &&
             write_f32(sub, "click.npy", 1, &rows, d->click[s], err, errlen);
        free(sub);
    }
    int64_t ishape[3] = {d->items, d->patches, d->patch_dim}, tshape[2] = {d->items, d->text_len};
    ok = ok && write_f32(dir, "items/image.npy", 3, ishape, d->image, err, errlen) &&
         write_i32(dir, "items/text.npy", 2, tshape, d->text, err, errlen);
    for (int k = 0; ok && k < d->n_extra; k++)
        ok = write_text(dir, d->extra[k].name, d->extra[k].text, d->extra[k].len, err, errlen);
    return ok && write_yaml(dir, d, err, errlen);
}

/* ---- the impression log ----------------------------------------------------------------------- */

typedef struct {
    int32_t *user, *item, *hist;
    float *click;
    int64_t rows;
} split_rows;

typedef struct {
    int32_t user, item;
    int label;
} interaction;

typedef struct {
    interaction *at;
    int64_t n, cap;
} interactions;

static void add_interaction(interactions *v, int64_t user, int64_t item, int label) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 4096;
        v->at = em3_xrealloc(v->at, sizeof *v->at * (size_t)v->cap);
    }
    v->at[v->n++] = (interaction){(int32_t)user, (int32_t)item, label};
}

static int by_pair(const void *a, const void *b) {
    const interaction *x = a, *y = b;
    if (x->user != y->user) return x->user < y->user ? -1 : 1;
    if (x->item != y->item) return x->item < y->item ? -1 : 1;
    return x->label - y->label;
}

/* The MMRec form: clicked impressions (and the behaviour before the log, as training
 * interactions), each (user, item) pair once, with its earliest split; ids 0-based. */
static bool write_topk(const char *dir, world *w, interaction *ia, int64_t n, const float *img,
                       const int32_t *text, char *err, size_t errlen) {
    if (!make_dir(dir, "topk", err, errlen)) return false;
    char *sub = em3_data_path(dir, "topk");
    qsort(ia, (size_t)n, sizeof *ia, by_pair);
    em3_strbuf s = {0};
    em3_sb_printf(&s, "userID\titemID\tx_label\n");
    for (int64_t k = 0; k < n; k++)
        if (!k || ia[k].user != ia[k - 1].user || ia[k].item != ia[k - 1].item)
            em3_sb_printf(&s, "%d\t%d\t%d\n", ia[k].user - 1, ia[k].item - 1, ia[k].label);
    bool ok = write_text(sub, "gen.inter", s.data, s.len, err, errlen);
    em3_sb_free(&s);
    int64_t items = w->items - 1, per = PATCHES * PATCH_DIM;
    int64_t shape_img[2] = {items, per}, shape_txt[2] = {items, TEXT_FEAT};
    ok = ok && write_f32(sub, "image_feat.npy", 2, shape_img, img + per, err, errlen);
    /* text as a pre-extracted vector: the mean of random word vectors over the item's words */
    float *words = em3_xmalloc(sizeof *words * (size_t)(w->words * TEXT_FEAT));
    float *feat = em3_xcalloc((size_t)(items * TEXT_FEAT), sizeof *feat);
    for (int64_t k = 0; k < w->words * TEXT_FEAT; k++) words[k] = (float)normal(&w->r);
    for (int64_t i = 0; i < items; i++) {
        int len = 0;
        for (int t = 0; t < TEXT_LEN; t++) {
            int32_t word = text[(i + 1) * TEXT_LEN + t];
            if (!word) continue;
            len++;
            for (int d = 0; d < TEXT_FEAT; d++) feat[i * TEXT_FEAT + d] += words[word * TEXT_FEAT + d];
        }
        for (int d = 0; d < TEXT_FEAT && len; d++) feat[i * TEXT_FEAT + d] /= (float)len;
    }
    ok = ok && write_f32(sub, "text_feat.npy", 2, shape_txt, feat, err, errlen);
    free(words);
    free(feat);
    free(sub);
    return ok;
}

static void free_world(world *w) {
    free(w->topic);
    free(w->content);
    free(w->taste);
    free(w->top1);
    free(w->top2);
    free(w->mix);
    free(w->item_bias);
    free(w->pop_z);
    free(w->user_bias);
    free(w->activity);
    free(w->utop1);
    free(w->utop2);
    free(w->umix);
    free(w->cold);
    sampler_free(&w->warm);
    sampler_free(&w->cold_pool);
    sampler_free(&w->by_user);
    for (int t = 0; w->by_topic && t < w->topics; t++) sampler_free(&w->by_topic[t]);
    free(w->by_topic);
    free(w->ring);
    free(w->behaviour);
}

/* The impression log in time order: the first 80% train, then 10% valid, 10% test. Each
 * impression: a user by activity, a candidate, the click draw; a click extends the user's
 * behaviour. Also the summary's figures and, for the MMRec form, the interactions. */
static void make_log(world *w, split_rows *sp, em3_gen_summary *sum, interactions *ia, bool topk) {
    int64_t bound[EM3_SPLIT_COUNT + 1] = {0, w->impressions * 8 / 10, w->impressions * 9 / 10, w->impressions};
    int32_t *last = em3_xmalloc(sizeof *last * (size_t)w->seq);
    for (int64_t u = 1; topk && u < w->users; u++) { /* behaviour before the log: training */
        int64_t n = recent(w, u, w->seq, last);
        for (int64_t j = 0; j < n; j++) add_interaction(ia, u, last[j], EM3_SPLIT_TRAIN);
    }
    bool *in_train = em3_xcalloc((size_t)w->items, sizeof *in_train);
    bool *counted = em3_xcalloc((size_t)w->items, sizeof *counted);
    float *prob = em3_xmalloc(sizeof *prob * (size_t)(w->impressions + 1)); /* the true P(click) */
    for (int s = 0; s < EM3_SPLIT_COUNT; s++) {
        int64_t rows = bound[s + 1] - bound[s];
        sp[s] = (split_rows){em3_xmalloc(sizeof(int32_t) * (size_t)(rows + 1)),
                             em3_xmalloc(sizeof(int32_t) * (size_t)(rows + 1)),
                             em3_xcalloc((size_t)(rows * w->seq + 1), sizeof(int32_t)),
                             em3_xmalloc(sizeof(float) * (size_t)(rows + 1)), rows};
        for (int64_t r = 0; r < rows; r++) {
            int64_t u = sample(&w->by_user, &w->r), i = candidate(w, u, s != EM3_SPLIT_TRAIN);
            int64_t n = recent(w, u, w->seq, last); /* padding first, the most recent last */
            memcpy(sp[s].hist + (r + 1) * w->seq - n, last, sizeof *last * (size_t)n);
            double p = click_prob(w, u, i);
            bool click = uniform(&w->r) < p;
            sp[s].user[r] = (int32_t)u;
            sp[s].item[r] = (int32_t)i;
            sp[s].click[r] = click;
            prob[r] = (float)p;
            sum->clicks[s] += click;
            if (s == EM3_SPLIT_TRAIN) in_train[i] = true;
            sum->cold_rows[s] += !in_train[i];
            if (!in_train[i] && !counted[i]) {
                counted[i] = true;
                sum->cold_items++;
            }
            if (click) remember(w, u, i);
            if (click && topk) add_interaction(ia, u, i, s);
        }
        sum->rows[s] = rows;
        sum->oracle_auc[s] = em3_auc(sp[s].click, prob, NULL, rows);
    }
    free(in_train);
    free(counted);
    free(prob);
    free(last);
}

bool em3_data_generate(const char *dir, const em3_gen_options *o, em3_gen_summary *out, char *err,
                       size_t errlen) {
    EM3_ASSERT(o->size >= 0 && o->size < EM3_GEN_COUNT, "size %d", (int)o->size);
    world w = {.users = sizes[o->size].users, .items = sizes[o->size].items, .seq = sizes[o->size].seq,
               .words = sizes[o->size].words, .topics = sizes[o->size].topics,
               .impressions = sizes[o->size].impressions};
    rng_seed(&w.r, o->seed);
    w.topic = em3_xcalloc((size_t)w.topics, sizeof *w.topic);
    for (int64_t t = 0; t < w.topics; t++) {
        for (int d = 0; d < LATENT; d++) w.topic[t][d] = normal(&w.r);
        unit(w.topic[t]);
    }
    make_items(&w);
    make_users(&w);
    make_histories(&w);
    float *img = make_images(&w);
    int32_t *text = make_text(&w);
    em3_gen_summary sum = {.users = w.users, .items = w.items, .words = w.words, .seq = w.seq,
                           .patches = PATCHES, .patch_dim = PATCH_DIM, .text_len = TEXT_LEN};
    split_rows sp[EM3_SPLIT_COUNT];
    interactions ia = {0};
    make_log(&w, sp, &sum, &ia, o->topk);
    char comment[256];
    snprintf(comment, sizeof comment,
             "# A generated multimodal CTR dataset: em3 data gen --size %s --seed %llu\n"
             "# docs/data.md describes the generative model; model_constants are what the\n"
             "# bundled models need to fit it (em3 train applies them).\n",
             sizes[o->size].name, (unsigned long long)o->seed);
    char id[32];
    snprintf(id, sizeof id, "gen_%s", sizes[o->size].name);
    em3_ctr_data d = {.id = id, .comment = comment, .users = w.users, .items = w.items, .seq = w.seq,
                      .patches = PATCHES, .patch_dim = PATCH_DIM, .text_len = TEXT_LEN, .words = w.words,
                      .image = img, .text = text};
    for (int s = 0; s < EM3_SPLIT_COUNT; s++) {
        d.rows[s] = sp[s].rows;
        d.user[s] = sp[s].user;
        d.item[s] = sp[s].item;
        d.hist[s] = sp[s].hist;
        d.click[s] = sp[s].click;
    }
    bool ok = em3_data_write_ctr(dir, &d, err, errlen);
    if (ok) { /* the generator's truth, for colouring plots of learnt embeddings: no model reads it */
        int32_t *topic = em3_xmalloc(sizeof(int32_t) * (size_t)w.items);
        for (int64_t i = 0; i < w.items; i++) topic[i] = i ? (int32_t)w.top1[i] : -1;
        char *items_dir = em3_data_path(dir, "items");
        ok = write_i32(items_dir, "topic.npy", 1, &w.items, topic, err, errlen);
        free(items_dir);
        free(topic);
    }
    if (ok && o->topk) ok = write_topk(dir, &w, ia.at, ia.n, img, text, err, errlen);
    for (int s = 0; s < EM3_SPLIT_COUNT; s++) {
        free(sp[s].user);
        free(sp[s].item);
        free(sp[s].hist);
        free(sp[s].click);
    }
    free(ia.at);
    free(img);
    free(text);
    free_world(&w);
    if (ok && out) *out = sum;
    return ok;
}
