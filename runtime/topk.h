/* runtime/topk.h — full-ranking evaluation in the MMRec top-K setting (docs/topk.md). A top-K
 * model's @predict takes a batch of user ids and scores every item ([B, items]); each user who
 * has held-out items in the split and interactions in the training split ranks all items with
 * the training items (and the padding id 0) masked, and Recall, NDCG and Precision at
 * K = 10, 20, 50 (metrics.h) are averaged over those users. */
#ifndef EM3_TOPK_H
#define EM3_TOPK_H

#include <stdio.h>

#include "dataset.h"
#include "exec.h"

#define EM3_TOPK_NK 3
extern const int em3_topk_ks[EM3_TOPK_NK]; /* 10, 20, 50 */

typedef struct {
    double recall[EM3_TOPK_NK], ndcg[EM3_TOPK_NK], precision[EM3_TOPK_NK];
    int64_t users;   /* users evaluated */
    int64_t skipped; /* users with held-out items but no training interactions (left out) */
} em3_topk_metrics;

/* Whether @predict's output `score` scores every item of ds for each row: [B, items]. */
bool em3_topk_model(const em3_exec *x, const em3_dataset *ds, const char *score);

/* Evaluates split s, `batch` users per @predict call. */
bool em3_topk_evaluate(em3_exec *x, const em3_dataset *ds, em3_split s, const char *score, int64_t batch,
                       em3_topk_metrics *out, char *err, size_t errlen);

/* The value of metric `name` ("recall@20", "ndcg@10", "precision@50"; len bytes of it), or
 * false when there is no such metric. */
bool em3_topk_metric(const em3_topk_metrics *m, const char *name, size_t len, double *out);

/* Reporting: a table header and row, a log line's metrics, JSON fields, CSV columns. */
void em3_topk_print_header(FILE *out);
void em3_topk_print_row(FILE *out, const char *split, const em3_topk_metrics *m);
void em3_topk_print_brief(FILE *out, const em3_topk_metrics *m);
void em3_topk_print_json(FILE *out, const em3_topk_metrics *m); /* "recall@10":..., ... (no braces) */
void em3_topk_print_csv_header(FILE *out);                       /* recall@10,...,precision@50 */
void em3_topk_print_csv(FILE *out, const em3_topk_metrics *m);

#endif
