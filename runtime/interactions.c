/* runtime/interactions.c — see interactions.h. A counting sort by user, then each user's items
 * sorted and deduplicated: O(rows log(items per user)); the negative sampler on top. */
#include "interactions.h"

#include <stdio.h>
#include <stdlib.h>

#include "init.h"

static int by_id(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static const em3_column *id_column(const em3_dataset *ds, em3_split s, const char *name) {
    const em3_column *c = name ? em3_dataset_find(ds, s, name) : NULL;
    return c && c->dtype == EM3_DTYPE_I32 && c->rank == 0 && c->vocab > 0 ? c : NULL;
}

bool em3_interactions_build(const em3_dataset *ds, em3_split s, em3_interactions *out, char *err,
                            size_t errlen) {
    const em3_column *u = id_column(ds, s, em3_dataset_group(ds)), *it = id_column(ds, s, em3_dataset_item(ds));
    if (!u || !it) {
        snprintf(err, errlen,
                 "dataset %s has no user and item id columns (group_id and item_id): the top-K "
                 "setting needs user–item interactions, as an MMRec folder gives",
                 em3_dataset_name(ds));
        return false;
    }
    int64_t n = em3_dataset_rows(ds, s), users = u->vocab;
    const int32_t *uid = u->data, *iid = it->data;
    em3_interactions x = {.users = users, .items = it->vocab, .rows = n};
    x.start = em3_xcalloc((size_t)users + 1, sizeof *x.start);
    x.item = em3_xmalloc(sizeof *x.item * (size_t)(n ? n : 1));
    for (int64_t r = 0; r < n; r++) x.start[uid[r] + 1]++; /* ids are < vocab: the import checked */
    for (int64_t v = 0; v < users; v++) x.start[v + 1] += x.start[v];
    int64_t *fill = em3_xmalloc(sizeof *fill * (size_t)(users ? users : 1));
    for (int64_t v = 0; v < users; v++) fill[v] = x.start[v];
    for (int64_t r = 0; r < n; r++) x.item[fill[uid[r]]++] = iid[r];
    free(fill);
    int64_t kept = 0;
    for (int64_t v = 0; v < users; v++) { /* sort and merge each user's list, packing in place */
        int64_t a = x.start[v], b = x.start[v + 1];
        qsort(x.item + a, (size_t)(b - a), sizeof *x.item, by_id);
        x.start[v] = kept;
        for (int64_t k = a; k < b; k++)
            if (k == a || x.item[k] != x.item[k - 1]) x.item[kept++] = x.item[k];
    }
    x.start[users] = kept;
    *out = x;
    return true;
}

void em3_interactions_free(em3_interactions *x) {
    free(x->start);
    free(x->item);
    *x = (em3_interactions){0};
}

bool em3_interactions_has(const em3_interactions *x, int64_t u, int32_t i) {
    if (u < 0 || u >= x->users) return false;
    int64_t lo = x->start[u], hi = x->start[u + 1];
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (x->item[mid] == i) return true;
        if (x->item[mid] < i) lo = mid + 1;
        else hi = mid;
    }
    return false;
}

struct em3_negative_sampler {
    em3_interactions train;
    const int32_t *user; /* the training split's user column */
    int32_t *pool;       /* the distinct items of the training split, ascending */
    int64_t n_pool;
};

em3_negative_sampler *em3_negative_sampler_create(const em3_dataset *ds, char *err, size_t errlen) {
    em3_negative_sampler *s = em3_xcalloc(1, sizeof *s);
    if (!em3_interactions_build(ds, EM3_SPLIT_TRAIN, &s->train, err, errlen)) {
        free(s);
        return NULL;
    }
    s->user = em3_dataset_find(ds, EM3_SPLIT_TRAIN, em3_dataset_group(ds))->data;
    bool *seen = em3_xcalloc((size_t)s->train.items + 1, sizeof *seen);
    for (int64_t e = 0; e < s->train.start[s->train.users]; e++) seen[s->train.item[e]] = true;
    s->pool = em3_xmalloc(sizeof *s->pool * (size_t)(s->train.items + 1));
    for (int64_t i = 0; i < s->train.items; i++)
        if (seen[i]) s->pool[s->n_pool++] = (int32_t)i;
    free(seen);
    if (!s->n_pool) {
        snprintf(err, errlen, "the training split of %s has no interactions to sample negatives from",
                 em3_dataset_name(ds));
        em3_negative_sampler_free(s);
        return NULL;
    }
    return s;
}

void em3_negative_sampler_free(em3_negative_sampler *s) {
    if (!s) return;
    em3_interactions_free(&s->train);
    free(s->pool);
    free(s);
}

void em3_negative_sample(const em3_negative_sampler *s, const int64_t *rows, int64_t n, int64_t per_row,
                         uint64_t seed, int64_t step, int32_t *out) {
    uint64_t base = (seed ^ 0x6e65676174697665ull /* "negative" */) * 0x9E3779B97F4A7C15ull + (uint64_t)step;
    for (int64_t i = 0; i < n; i++) {
        em3_rng r;
        em3_rng_seed_keyed(&r, base, (uint64_t)rows[i]);
        int64_t u = s->user[rows[i]];
        bool all = em3_interactions_count(&s->train, u) >= s->n_pool;
        for (int64_t j = 0; j < per_row; j++) {
            int32_t item;
            do item = s->pool[em3_rng_below(&r, (uint64_t)s->n_pool)];
            while (!all && em3_interactions_has(&s->train, u, item));
            out[i * per_row + j] = item;
        }
    }
}
