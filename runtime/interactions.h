/* runtime/interactions.h — who interacted with what: for one split, each user's distinct items
 * in ascending order (a compressed-row index of the split's (user, item) rows). The top-K
 * setting builds on it: the user–item graph and negative sampling from the training split, the
 * mask and the held-out truth of full-ranking evaluation. */
#ifndef EM3_INTERACTIONS_H
#define EM3_INTERACTIONS_H

#include "dataset.h"

typedef struct {
    int64_t users, items; /* the id ranges: the vocabularies of the user and item columns */
    int64_t *start;       /* users + 1: user u's items are item[start[u] .. start[u+1]) */
    int32_t *item;
    int64_t rows;         /* the split's rows (pairs before duplicates were merged) */
} em3_interactions;

/* Indexes split s by the dataset's user (group) and item columns; false, with a message, when
 * the dataset has no such i32 columns (top-K data is MMRec's user–item pairs). */
bool em3_interactions_build(const em3_dataset *ds, em3_split s, em3_interactions *out, char *err,
                            size_t errlen);
void em3_interactions_free(em3_interactions *x);
/* Whether user u interacted with item i (binary search; false for ids out of range). */
bool em3_interactions_has(const em3_interactions *x, int64_t u, int32_t i);
static inline int64_t em3_interactions_count(const em3_interactions *x, int64_t u) {
    return x->start[u + 1] - x->start[u];
}

/* Negative sampling for BPR as MMRec does it: for a training row of user u, an item drawn
 * uniformly from the items of the training split (each distinct item once) until one is not
 * among u's training items. A user who has interacted with every such item gets a uniform
 * draw (MMRec would loop forever). */
typedef struct em3_negative_sampler em3_negative_sampler;

em3_negative_sampler *em3_negative_sampler_create(const em3_dataset *ds, char *err, size_t errlen);
void em3_negative_sampler_free(em3_negative_sampler *s);
/* out[i·per_row .. (i+1)·per_row): negatives for training row rows[i]. A row's draws are a
 * function of (seed, step, the row) only: a resumed run samples what the uninterrupted one did,
 * and a batch split into shards or over ranks samples what it does whole. */
void em3_negative_sample(const em3_negative_sampler *s, const int64_t *rows, int64_t n, int64_t per_row,
                         uint64_t seed, int64_t step, int32_t *out);

#endif
