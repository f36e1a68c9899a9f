/* runtime/metrics.h — evaluation metrics with exact, named definitions (docs/metrics.md):
 *   AUC: the probability that a random positive scores above a random negative, tied pairs
 *        counting ½ (sklearn's roc_auc_score); undefined (NaN) with one class only.
 *   gAUC: per group (user) AUC weighted by the group's number of impressions, over groups
 *        having both classes (FuxiCTR / BARS); the fraction of impressions in excluded
 *        (single-class) groups is reported alongside. avgAUC: the unweighted mean.
 *   logloss: −mean(y log p + (1−y) log(1−p)) in double, p clipped to [ε, 1−ε], ε = 1e-15.
 *   Recall@K, NDCG@K, Precision@K: by full ranking over all items with the user's training
 *        items masked, users without training interactions excluded (MMRec's definitions).
 * Every metric can be computed over a subset of rows (cold-item and warm-item slices):
 * `keep` selects rows, NULL keeps all. Labels are 0/1; AUC counts a row positive when its
 * label is > 0.5. A NaN score makes the metrics it enters NaN, never a silent number. */
#ifndef EM3_METRICS_H
#define EM3_METRICS_H

#include <stdbool.h>
#include <stdint.h>

/* AUC of n (label, score) pairs. O(n log n); NaN with no positive or no negative kept. */
double em3_auc(const float *label, const float *score, const bool *keep, int64_t n);

typedef struct {
    double gauc, avg_auc;     /* NaN when no group has both classes */
    double excluded_fraction; /* impressions in single-class groups / kept impressions */
    int64_t groups, groups_used;
} em3_gauc_result;

/* gAUC with group[i] the group (user) of row i; any int32 ids, in any order. O(n log n). */
em3_gauc_result em3_gauc(const float *label, const float *score, const int32_t *group,
                         const bool *keep, int64_t n);

/* NaN when no row is kept. */
double em3_logloss(const float *label, const float *score, const bool *keep, int64_t n);

/* Top-K metrics of one user: `ranked` are the user's top item ids by score, best first
 * (training items already excluded; em3_topk_select), of which the first min(k, n_ranked)
 * count; `truth` the user's held-out items, distinct. All three are NaN when n_truth is 0:
 * such a user has nothing to recall and is left out of the means. */
typedef struct {
    double recall, ndcg, precision;
} em3_topk_result;

em3_topk_result em3_topk(const int32_t *ranked, int64_t n_ranked, const int32_t *truth,
                         int64_t n_truth, int k);

/* Top-K of one row of scores: writes to out the indices of the k largest of scores[0..n)
 * with mask[i] false (mask NULL: none masked), largest first, ties by lower index, NaN below
 * every number; returns how many it wrote, min(k, unmasked count). O(n log k), no allocation. */
int em3_topk_select(const float *scores, const bool *mask, int64_t n, int k, int32_t *out);

#endif
