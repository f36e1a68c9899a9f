/* runtime/topk.c — full-ranking evaluation (see topk.h): users in ascending id order, one
 * @predict call per batch of them, the K = 50 best unmasked items of each row by a bounded heap
 * (em3_topk_select), and the per-user metrics of metrics.h averaged. */
#include "topk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "interactions.h"
#include "metrics.h"

const int em3_topk_ks[EM3_TOPK_NK] = {10, 20, 50};
enum { MAX_K = 50 };

/* The three metrics by name, in the order of the reports. */
static const char *const metric_names[3] = {"recall", "ndcg", "precision"};
static void metric_values(const em3_topk_metrics *m, const double *v[3]) {
    v[0] = m->recall;
    v[1] = m->ndcg;
    v[2] = m->precision;
}

static const em3_type *score_type(const em3_exec *x, const char *score) {
    const em3_compiled_func *pf = em3_exec_func(x, "predict");
    for (int k = 0; pf && k < pf->n_outputs; k++)
        if (!strcmp(pf->outputs[k], score)) return &pf->output_types[k];
    return NULL;
}

static const em3_column *item_column(const em3_dataset *ds) {
    const char *name = em3_dataset_item(ds);
    return name ? em3_dataset_find(ds, EM3_SPLIT_TRAIN, name) : NULL;
}

bool em3_topk_model(const em3_exec *x, const em3_dataset *ds, const char *score) {
    const em3_type *t = score_type(x, score);
    const em3_column *items = item_column(ds);
    return t && items && t->rank == 2 && t->dim[0] == EM3_DIM_BATCH && t->dim[1] == items->vocab;
}

bool em3_topk_evaluate(em3_exec *x, const em3_dataset *ds, em3_split s, const char *score, int64_t batch,
                       em3_topk_metrics *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    const em3_compiled_func *pf = em3_exec_func(x, "predict");
    EM3_ASSERT(pf && em3_topk_model(x, ds, score), "not a top-K model");
    if (pf->n_inputs != 1 || pf->inputs[0]->type.dtype != EM3_DTYPE_I32 || pf->inputs[0]->type.rank != 1) {
        snprintf(err, errlen, "a top-K model's @predict takes one input, the user ids i32[B]; this one takes %d",
                 pf->n_inputs);
        return false;
    }
    em3_interactions train, held;
    if (!em3_interactions_build(ds, EM3_SPLIT_TRAIN, &train, err, errlen)) return false;
    if (!em3_interactions_build(ds, s, &held, err, errlen)) {
        em3_interactions_free(&train);
        return false;
    }
    int64_t items = item_column(ds)->vocab, n_users = 0;
    int32_t *users = em3_xmalloc(sizeof *users * (size_t)(held.users ? held.users : 1));
    for (int64_t u = 0; u < held.users; u++) {
        if (!em3_interactions_count(&held, u)) continue;
        if (u >= train.users || !em3_interactions_count(&train, u)) out->skipped++;
        else users[n_users++] = (int32_t)u;
    }
    if (!n_users) {
        snprintf(err, errlen, "the %s split has no user with training interactions to rank items for",
                 em3_split_name(s));
        free(users);
        em3_interactions_free(&train);
        em3_interactions_free(&held);
        return false;
    }
    bool *mask = em3_xcalloc((size_t)items, sizeof *mask);
    int32_t top[MAX_K];
    double sum[3][EM3_TOPK_NK] = {{0}};
    bool ok = true;
    for (int64_t at = 0; at < n_users && ok; at += batch) {
        int64_t n = n_users - at < batch ? n_users - at : batch;
        em3_exec_input in = {em3_node_s(pf->inputs[0], "name"), users + at};
        if (!(ok = em3_exec_run(x, "predict", n, &in, 1, err, errlen))) break;
        const float *sc = em3_exec_output(x, "predict", score, NULL);
        for (int64_t r = 0; r < n; r++) {
            int64_t u = users[at + r];
            const int32_t *seen = train.item + train.start[u], *truth = held.item + held.start[u];
            int64_t n_seen = em3_interactions_count(&train, u), n_truth = em3_interactions_count(&held, u);
            mask[0] = true; /* the padding id is no item */
            for (int64_t i = 0; i < n_seen; i++) mask[seen[i]] = true;
            int got = em3_topk_select(sc + r * items, mask, items, MAX_K, top);
            for (int64_t i = 0; i < n_seen; i++) mask[seen[i]] = false;
            for (int k = 0; k < EM3_TOPK_NK; k++) {
                em3_topk_result m = em3_topk(top, got, truth, n_truth, em3_topk_ks[k]);
                sum[0][k] += m.recall;
                sum[1][k] += m.ndcg;
                sum[2][k] += m.precision;
            }
        }
    }
    out->users = n_users;
    for (int k = 0; k < EM3_TOPK_NK; k++) {
        out->recall[k] = sum[0][k] / (double)n_users;
        out->ndcg[k] = sum[1][k] / (double)n_users;
        out->precision[k] = sum[2][k] / (double)n_users;
    }
    free(mask);
    free(users);
    em3_interactions_free(&train);
    em3_interactions_free(&held);
    return ok;
}

bool em3_topk_metric(const em3_topk_metrics *m, const char *name, size_t len, double *out) {
    const double *v[3];
    metric_values(m, v);
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(metric_names[i]);
        if (len <= n + 1 || strncmp(name, metric_names[i], n) || name[n] != '@') continue;
        for (int k = 0; k < EM3_TOPK_NK; k++) {
            char want[8];
            int w = snprintf(want, sizeof want, "%d", em3_topk_ks[k]);
            if ((size_t)w == len - n - 1 && !strncmp(name + n + 1, want, (size_t)w)) {
                *out = v[i][k];
                return true;
            }
        }
    }
    return false;
}

void em3_topk_print_header(FILE *out) {
    fprintf(out, "%-8s %7s", "split", "users");
    for (int k = 0; k < EM3_TOPK_NK; k++) fprintf(out, " %9s%-2d", "Recall@", em3_topk_ks[k]);
    for (int k = 0; k < EM3_TOPK_NK; k++) fprintf(out, " %7s%-2d", "NDCG@", em3_topk_ks[k]);
    for (int k = 0; k < EM3_TOPK_NK; k++) fprintf(out, " %12s%-2d", "Precision@", em3_topk_ks[k]);
    fputc('\n', out);
}

void em3_topk_print_row(FILE *out, const char *split, const em3_topk_metrics *m) {
    fprintf(out, "%-8s %7lld", split, (long long)m->users);
    for (int k = 0; k < EM3_TOPK_NK; k++) fprintf(out, " %11.4f", m->recall[k]);
    for (int k = 0; k < EM3_TOPK_NK; k++) fprintf(out, " %9.4f", m->ndcg[k]);
    for (int k = 0; k < EM3_TOPK_NK; k++) fprintf(out, " %14.4f", m->precision[k]);
    fputc('\n', out);
}

void em3_topk_print_brief(FILE *out, const em3_topk_metrics *m) {
    fprintf(out, "Recall@10 %.4f Recall@20 %.4f NDCG@10 %.4f NDCG@20 %.4f (%lld users)", m->recall[0], m->recall[1],
            m->ndcg[0], m->ndcg[1], (long long)m->users);
}

void em3_topk_print_json(FILE *out, const em3_topk_metrics *m) {
    const double *v[3];
    metric_values(m, v);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < EM3_TOPK_NK; k++)
            fprintf(out, "%s\"%s@%d\":%.6f", i || k ? "," : "", metric_names[i], em3_topk_ks[k], v[i][k]);
    fprintf(out, ",\"users\":%lld", (long long)m->users);
}

void em3_topk_print_csv_header(FILE *out) {
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < EM3_TOPK_NK; k++)
            fprintf(out, "%s%s@%d", i || k ? "," : "", metric_names[i], em3_topk_ks[k]);
}

void em3_topk_print_csv(FILE *out, const em3_topk_metrics *m) {
    const double *v[3];
    metric_values(m, v);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < EM3_TOPK_NK; k++) fprintf(out, "%s%.6f", i || k ? "," : "", v[i][k]);
}
