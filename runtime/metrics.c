/* runtime/metrics.c — the evaluation metrics of metrics.h. AUC and gAUC share one sort of the
 * kept rows by (group, score) and one count of the negatives below each run of tied scores
 * (the Mann–Whitney U with average ranks); Top-K selection keeps a bounded heap inside the
 * caller's output array, so ranking every item for every user allocates nothing. */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>

#include "ir/support.h"

/* A kept row as AUC sees it; em3_auc puts every row in group 0. */
typedef struct {
    float score;
    int32_t group;
    bool positive;
} scored_row;

/* NaN sorts after every number so that qsort sees a total order; a run holding one then has
 * it last, where auc_of_run looks. */
static int compare_score(float a, float b) {
    int a_nan = isnan(a) != 0, b_nan = isnan(b) != 0;
    if (a_nan || b_nan) return a_nan - b_nan;
    return (a > b) - (a < b);
}

static int compare_rows(const void *pa, const void *pb) {
    const scored_row *a = pa, *b = pb;
    if (a->group != b->group) return a->group < b->group ? -1 : 1;
    return compare_score(a->score, b->score);
}

static bool kept(const bool *keep, int64_t i) { return !keep || keep[i]; }

/* The kept rows sorted by (group, score); the caller frees them. */
static scored_row *sorted_rows(const float *label, const float *score, const int32_t *group,
                               const bool *keep, int64_t n, int64_t *count) {
    EM3_ASSERT(n >= 0, "metric over %lld rows", (long long)n);
    scored_row *rows = em3_xmalloc((size_t)n * sizeof *rows);
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (kept(keep, i))
            rows[m++] = (scored_row){score[i], group ? group[i] : 0, label[i] > 0.5f};
    qsort(rows, (size_t)m, sizeof *rows, compare_rows);
    *count = m;
    return rows;
}

typedef struct {
    int64_t positives, negatives;
    double auc;
} run_auc;

/* AUC of rows sorted by score. Each positive earns the negatives strictly below it plus half
 * of those tied with it: the rank sum minus its minimum P(P+1)/2, accumulated directly so
 * that no large sum is cancelled, and exact in double while P·N < 2^52. */
static run_auc auc_of_run(const scored_row *rows, int64_t m) {
    run_auc r = {0, 0, NAN};
    double wins = 0;
    for (int64_t i = 0, j; i < m; i = j) {
        int64_t p = 0;
        for (j = i; j < m && compare_score(rows[j].score, rows[i].score) == 0; j++)
            p += rows[j].positive;
        int64_t q = (j - i) - p;
        wins += (double)p * ((double)r.negatives + 0.5 * (double)q);
        r.positives += p;
        r.negatives += q;
    }
    if (r.positives && r.negatives && !isnan(rows[m - 1].score))
        r.auc = wins / ((double)r.positives * (double)r.negatives);
    return r;
}

double em3_auc(const float *label, const float *score, const bool *keep, int64_t n) {
    int64_t m;
    scored_row *rows = sorted_rows(label, score, NULL, keep, n, &m);
    double auc = auc_of_run(rows, m).auc;
    free(rows);
    return auc;
}

em3_gauc_result em3_gauc(const float *label, const float *score, const int32_t *group,
                         const bool *keep, int64_t n) {
    int64_t m;
    scored_row *rows = sorted_rows(label, score, group, keep, n, &m);
    em3_gauc_result r = {0};
    double weighted = 0, sum = 0;
    int64_t used_rows = 0, excluded_rows = 0;
    for (int64_t i = 0, j; i < m; i = j) {
        j = i + 1;
        while (j < m && rows[j].group == rows[i].group) j++;
        run_auc g = auc_of_run(rows + i, j - i);
        r.groups++;
        if (!g.positives || !g.negatives) {
            excluded_rows += j - i;
            continue;
        }
        r.groups_used++;
        used_rows += j - i;
        weighted += (double)(j - i) * g.auc;
        sum += g.auc;
    }
    free(rows);
    r.gauc = r.groups_used ? weighted / (double)used_rows : NAN;
    r.avg_auc = r.groups_used ? sum / (double)r.groups_used : NAN;
    r.excluded_fraction = m ? (double)excluded_rows / (double)m : NAN;
    return r;
}

/* log of x clipped to [ε, 1−ε]. Comparisons rather than fmin/fmax, which would turn a NaN
 * score into ε. */
static double clipped_log(double x) {
    const double eps = 1e-15;
    if (x < eps) x = eps;
    if (x > 1 - eps) x = 1 - eps;
    return log(x);
}

double em3_logloss(const float *label, const float *score, const bool *keep, int64_t n) {
    EM3_ASSERT(n >= 0, "logloss over %lld rows", (long long)n);
    double sum = 0;
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!kept(keep, i)) continue;
        double y = label[i], p = score[i];
        /* Clipping p and 1 − p each, rather than 1 − clip(p): the same in exact arithmetic,
         * but 1 − (1 − ε) is 0.9992e-15 in double, and a confident wrong 1 should cost
         * exactly what a confident wrong 0 does, −log ε. */
        sum -= y * clipped_log(p) + (1 - y) * clipped_log(1 - p);
        m++;
    }
    return m ? sum / (double)m : NAN;
}

em3_topk_result em3_topk(const int32_t *ranked, int64_t n_ranked, const int32_t *truth,
                         int64_t n_truth, int k) {
    EM3_ASSERT(k > 0 && n_ranked >= 0 && n_truth >= 0, "top-%d over %lld ranked, %lld true", k,
               (long long)n_ranked, (long long)n_truth);
    if (n_truth == 0) return (em3_topk_result){NAN, NAN, NAN};
    int64_t depth = n_ranked < k ? n_ranked : k;
    int64_t hits = 0;
    double dcg = 0;
    /* A linear scan of truth per position: over all users this costs K × (test-set size),
     * less than sorting each user's truth would, and needs no allocation. */
    for (int64_t i = 0; i < depth; i++)
        for (int64_t j = 0; j < n_truth; j++)
            if (ranked[i] == truth[j]) {
                hits++;
                dcg += 1 / log2((double)i + 2);
                break;
            }
    double idcg = 0;
    for (int64_t i = 0; i < (n_truth < k ? n_truth : k); i++) idcg += 1 / log2((double)i + 2);
    return (em3_topk_result){
        .recall = (double)hits / (double)n_truth,
        .ndcg = dcg / idcg,
        .precision = (double)hits / k,
    };
}

/* Whether item a ranks before item b: higher score, NaN below every number, then lower index. */
static bool ranks_before(const float *scores, int32_t a, int32_t b) {
    float x = scores[a], y = scores[b];
    if (x != y) { /* also when either is NaN */
        if (!isnan(x) != !isnan(y)) return isnan(y);
        if (!isnan(x)) return x > y;
    }
    return a < b;
}

/* heap[0..size) is a heap with the item ranking last at its root. */
static void sift_down(const float *scores, int32_t *heap, int size, int at) {
    for (;;) {
        int last = at;
        for (int c = 2 * at + 1; c <= 2 * at + 2 && c < size; c++)
            if (ranks_before(scores, heap[last], heap[c])) last = c;
        if (last == at) return;
        int32_t t = heap[at];
        heap[at] = heap[last];
        heap[last] = t;
        at = last;
    }
}

static void sift_up(const float *scores, int32_t *heap, int at) {
    while (at > 0 && ranks_before(scores, heap[(at - 1) / 2], heap[at])) {
        int parent = (at - 1) / 2;
        int32_t t = heap[at];
        heap[at] = heap[parent];
        heap[parent] = t;
        at = parent;
    }
}

int em3_topk_select(const float *scores, const bool *mask, int64_t n, int k, int32_t *out) {
    EM3_ASSERT(k >= 0 && n >= 0 && n <= INT32_MAX, "top-%d of %lld scores", k, (long long)n);
    int size = 0;
    for (int64_t i = 0; i < n; i++) {
        if (mask && mask[i]) continue;
        if (size < k) {
            out[size] = (int32_t)i;
            sift_up(scores, out, size++);
        } else if (size > 0 && ranks_before(scores, (int32_t)i, out[0])) {
            out[0] = (int32_t)i;
            sift_down(scores, out, size, 0);
        }
    }
    /* Heapsort in place: moving the root (last-ranked) to the end leaves out best first. */
    for (int end = size - 1; end > 0; end--) {
        int32_t t = out[0];
        out[0] = out[end];
        out[end] = t;
        sift_down(scores, out, end, 0);
    }
    return size;
}
