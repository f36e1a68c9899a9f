/* runtime/train.c — the training loop (see train.h): batches gathered from a seeded
 * permutation, the compiled @train step with the learning-rate and step inputs, evaluation
 * with exact metrics, early stopping and reduce-on-plateau, logs, and checkpoints written so
 * that a run killed at any moment resumes to the same final weights. Data-parallel, the step
 * is @train on this rank's shards, the gradients combined (grad_sync.c), then @update; the
 * ranks decide together (em3_comm_agree) wherever one of them may fail alone. */
#include "train.h"

#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "grad_sync.h"
#include "init.h"
#include "interactions.h"
#include "metrics.h"
#include "pool.h"

em3_train_config em3_train_defaults(void) {
    em3_train_config c = {.epochs = 3, .batch_size = 256, .eval_batch_size = 1024, .seed = 1,
                          .n_groups = 1, .monitor = "default", .patience = 2, .lr_factor = 0.5,
                          .lr_patience = 0, .min_lr = 1e-6, .log_every = 100, .eval_test = true,
                          .score = "score", .progress = true, .threads = 1};
    c.groups[0] = (em3_lr_group){"default", 1e-3};
    return c;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static bool fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return false;
}

/* ---- the ranks of a data-parallel job (comm NULL: one process) ------------------------------ */

static int rank_of(const em3_train_config *c) { return c->comm ? em3_comm_rank(c->comm) : 0; }
static int ranks(const em3_train_config *c) { return c->comm ? em3_comm_size(c->comm) : 1; }

/* Whether every rank got here with ok: a rank that failed has its own message in err; the
 * others receive one that names it, and all stop together. */
static bool all_ok(const em3_train_config *c, bool ok, char *err, size_t errlen) {
    int first;
    if (!c->comm || em3_comm_agree(c->comm, ok, &first)) return ok;
    return ok ? fail(err, errlen, "stopped because rank %d failed (its message comes from that rank)", first)
              : false;
}

/* ---- inputs of a compiled function, fed from a split ------------------------------------ */

/* FEED_GRAD: a combined gradient of data-parallel training, set by the loop before each run;
 * FEED_NEGATIVE: item ids sampled for an input declared `negative`; FEED_ROW0: where the rows
 * of a run start in the step's batch (a shard's offset) */
typedef enum { FEED_COLUMN, FEED_STEP, FEED_LR, FEED_GRAD, FEED_NEGATIVE, FEED_ROW0 } feed_kind;

typedef struct {
    int n;
    em3_exec_input in[64];
    feed_kind kind[64];
    const em3_column *col[64];
    void *buf[64];
    int group[64]; /* FEED_LR: the parameter group; FEED_NEGATIVE: negatives per row */
    float scalar[64];
    em3_negative_sampler *neg; /* for inputs declared `negative` (docs/topk.md) */
    uint64_t seed;
} feeder;

static int64_t row_values(const em3_column *c) {
    int64_t n = 1;
    for (int i = 0; i < c->rank; i++) n *= c->dim[i];
    return n;
}

/* Matches each input of `cf` to a column of split s (by name) or to a loop-provided scalar,
 * checking element type and per-row shape against the model's declaration. Without a dataset
 * (@update) the other inputs are gradients. */
static bool feeder_init(feeder *fd, const em3_compiled_func *cf, const em3_dataset *ds, em3_split s,
                        const em3_train_config *c, int64_t rows, char *err, size_t errlen) {
    memset(fd, 0, sizeof *fd);
    EM3_ASSERT(cf->n_inputs <= 64, "%d inputs", cf->n_inputs);
    fd->n = cf->n_inputs;
    for (int k = 0; k < cf->n_inputs; k++) {
        const em3_node *in = cf->inputs[k];
        const char *name = em3_node_s(in, "name");
        fd->in[k].name = name;
        if (!strcmp(name, "opt.step") || !strcmp(name, "opt.row0")) {
            fd->kind[k] = !strcmp(name, "opt.step") ? FEED_STEP : FEED_ROW0;
            fd->in[k].data = &fd->scalar[k];
            continue;
        }
        if (!strncmp(name, "opt.lr.", 7)) {
            fd->kind[k] = FEED_LR;
            fd->group[k] = -1;
            for (int g = 0; g < c->n_groups; g++)
                if (!strcmp(c->groups[g].name, name + 7)) fd->group[k] = g;
            if (fd->group[k] < 0)
                return fail(err, errlen, "parameter group %s has no learning rate (set lr.%s)", name + 7, name + 7);
            fd->in[k].data = &fd->scalar[k];
            continue;
        }
        if (!ds) {
            fd->kind[k] = FEED_GRAD;
            continue;
        }
        if (em3_node_i(in, "negative")) {
            if (!fd->neg && !(fd->neg = em3_negative_sampler_create(ds, err, errlen))) return false;
            fd->kind[k] = FEED_NEGATIVE;
            fd->seed = c->seed;
            fd->group[k] = (int)em3_type_numel(&in->type, 1); /* negatives per row */
            fd->buf[k] = em3_xmalloc((size_t)(rows * fd->group[k]) * sizeof(int32_t));
            fd->in[k].data = fd->buf[k];
            continue;
        }
        const em3_column *col = em3_dataset_find(ds, s, name);
        if (!col)
            return fail(err, errlen, "the model's input %s has no column in the %s split of dataset %s",
                        name, em3_split_name(s), em3_dataset_name(ds));
        em3_type want = in->type, have = em3_type_make(col->dtype, col->rank + 1,
                                                        (int64_t[]){EM3_DIM_BATCH, col->dim[0], col->dim[1], col->dim[2], col->dim[3]});
        if (!em3_type_eq(&want, &have)) {
            char a[EM3_TYPE_STR_MAX], b[EM3_TYPE_STR_MAX];
            return fail(err, errlen, "input %s is %s in the model but the dataset's column is %s", name,
                        em3_type_str(&want, a, sizeof a), em3_type_str(&have, b, sizeof b));
        }
        int64_t vocab = em3_node_i(in, "vocab");
        if (vocab > 0 && col->vocab > vocab)
            return fail(err, errlen, "input %s has vocabulary %lld in the model but ids up to %lld in the "
                                     "dataset (set the model's size constant to at least %lld)",
                        name, (long long)vocab, (long long)col->vocab - 1, (long long)col->vocab);
        fd->kind[k] = FEED_COLUMN;
        fd->col[k] = col;
        fd->buf[k] = em3_xmalloc((size_t)(rows * row_values(col) * 4));
        fd->in[k].data = fd->buf[k];
    }
    return true;
}

static void feeder_free(feeder *fd) {
    for (int k = 0; k < fd->n; k++) free(fd->buf[k]);
    em3_negative_sampler_free(fd->neg);
}

bool em3_train_check(const em3_exec *x, const em3_dataset *ds, const em3_train_config *c, char *err, size_t errlen) {
    static const char *const funcs[] = {"train", "predict", "forward"};
    static const em3_split splits[] = {EM3_SPLIT_TRAIN, EM3_SPLIT_VALID, EM3_SPLIT_VALID};
    for (int i = 0; i < 3; i++) {
        const em3_compiled_func *f = em3_exec_func(x, funcs[i]);
        if (!f) continue;
        feeder fd;
        bool ok = feeder_init(&fd, f, ds, splits[i], c, 1, err, errlen);
        feeder_free(&fd);
        if (!ok) return false;
    }
    return true;
}

static void feeder_fill(feeder *fd, const int64_t *rows, int64_t n, int64_t row0, int64_t step, const double *lr) {
    for (int k = 0; k < fd->n; k++) {
        switch (fd->kind[k]) {
        case FEED_COLUMN: em3_column_gather(fd->col[k], rows, n, fd->buf[k]); break;
        case FEED_STEP: fd->scalar[k] = (float)step; break;
        case FEED_ROW0: fd->scalar[k] = (float)row0; break;
        case FEED_LR: fd->scalar[k] = (float)lr[fd->group[k]]; break;
        case FEED_GRAD: break;
        case FEED_NEGATIVE: /* each negative input its own stream */
            em3_negative_sample(fd->neg, rows, n, fd->group[k], fd->seed + 0x9E3779B97F4A7C15ull * (uint64_t)k, step,
                                fd->buf[k]);
            break;
        }
    }
}

/* ---- evaluation ------------------------------------------------------------------------------ */

/* This rank's share of an evaluation in `batches` batches: [*lo, *hi), whole batches, the ones
 * one process would run, so every result has the same bits however many ranks there are. */
static void eval_share(const em3_train_config *c, int64_t batches, int64_t *lo, int64_t *hi) {
    *lo = rank_of(c) * batches / ranks(c);
    *hi = (rank_of(c) + 1) * batches / ranks(c);
}

/* Every rank's elements [lo, hi) of buf (`elem` bytes each; each rank has computed its own),
 * gathered in rank order: then every rank holds all of buf[0, n). */
static void eval_gather(const em3_train_config *c, void *buf, int64_t lo, int64_t hi, int64_t n, size_t elem) {
    if (!c->comm) return;
    void *all = NULL;
    int64_t cap = 0, *counts = em3_xmalloc(sizeof(int64_t) * (size_t)ranks(c));
    em3_comm_allgather(c->comm, (char *)buf + lo * (int64_t)elem, (hi - lo) * (int64_t)elem, &all, &cap, counts);
    memcpy(buf, all, elem * (size_t)n);
    free(all);
    free(counts);
}

/* The row-weighted mean of @forward's loss over split s: what a label-free objective (the
 * contrastive pretraining of a content encoder) is evaluated by. */
static bool evaluate_loss(em3_exec *x, const em3_dataset *ds, em3_split s, const em3_train_config *c,
                          em3_eval_result *out, char *err, size_t errlen) {
    const em3_compiled_func *ff = em3_exec_func(x, "forward");
    EM3_ASSERT(ff, "no compiled @forward");
    int64_t rows = out->rows, chunk = c->eval_batch_size;
    feeder fd;
    if (!feeder_init(&fd, ff, ds, s, c, chunk, err, errlen)) return false;
    int64_t *idx = em3_xmalloc(sizeof(int64_t) * (size_t)chunk), batches = (rows + chunk - 1) / chunk, lo, hi;
    double *part = em3_xcalloc((size_t)batches, sizeof(double)), sum = 0; /* per batch: loss × rows */
    eval_share(c, batches, &lo, &hi);
    bool ok = true;
    for (int64_t b = lo; b < hi && ok; b++) {
        int64_t at = b * chunk, n = rows - at < chunk ? rows - at : chunk;
        for (int64_t i = 0; i < n; i++) idx[i] = at + i;
        feeder_fill(&fd, idx, n, 0, 0, NULL);
        ok = em3_exec_run(x, "forward", n, fd.in, fd.n, err, errlen);
        const float *lp = ok ? em3_exec_output(x, "forward", "loss", NULL) : NULL;
        if (ok && !lp) ok = fail(err, errlen, "@forward has no output 'loss'");
        if (ok) part[b] = (double)*lp * (double)n;
    }
    ok = all_ok(c, ok, err, errlen);
    if (ok) eval_gather(c, part, lo, hi, batches, sizeof(double));
    for (int64_t b = 0; b < batches; b++) sum += part[b];
    out->loss = sum / (double)rows;
    free(part);
    free(idx);
    feeder_free(&fd);
    return ok;
}

bool em3_evaluate(em3_exec *x, const em3_dataset *ds, em3_split s, const em3_train_config *c,
                  em3_eval_result *out, char *err, size_t errlen) {
    const em3_compiled_func *pf = em3_exec_func(x, "predict");
    EM3_ASSERT(pf, "no compiled @predict");
    int64_t rows = em3_dataset_rows(ds, s), chunk = c->eval_batch_size;
    memset(out, 0, sizeof *out);
    out->rows = rows;
    out->loss = out->auc = out->gauc = out->avg_auc = out->logloss = NAN;
    out->auc_cold = out->auc_warm = out->logloss_cold = out->logloss_warm = NAN;
    em3_exec_graph_phase(x, false, 0, 0);
    if ((out->topk = em3_topk_model(x, ds, c->score)))
        return em3_topk_evaluate(x, ds, s, c->score, chunk, &out->ranking, err, errlen);
    if (rows == 0) return fail(err, errlen, "the %s split is empty", em3_split_name(s));
    const char *label = em3_dataset_label(ds);
    if (!label) return evaluate_loss(x, ds, s, c, out, err, errlen);
    const em3_column *lab = label ? em3_dataset_find(ds, s, label) : NULL;
    if (!lab || lab->dtype != EM3_DTYPE_F32 || lab->rank != 0)
        return fail(err, errlen, "dataset %s has no f32 label column", em3_dataset_name(ds));
    feeder fd;
    if (!feeder_init(&fd, pf, ds, s, c, chunk, err, errlen)) return false;
    float *score = em3_xmalloc(sizeof(float) * (size_t)rows), *y = em3_xmalloc(sizeof(float) * (size_t)rows);
    int64_t *idx = em3_xmalloc(sizeof(int64_t) * (size_t)chunk);
    int64_t lo, hi;
    eval_share(c, (rows + chunk - 1) / chunk, &lo, &hi);
    lo *= chunk;
    hi = hi * chunk < rows ? hi * chunk : rows;
    bool ok = true;
    for (int64_t at = lo; at < hi && ok; at += chunk) {
        int64_t n = hi - at < chunk ? hi - at : chunk;
        for (int64_t i = 0; i < n; i++) idx[i] = at + i;
        feeder_fill(&fd, idx, n, 0, 0, NULL);
        ok = em3_exec_run(x, "predict", n, fd.in, fd.n, err, errlen);
        em3_type t;
        const float *sc = ok ? em3_exec_output(x, "predict", c->score, &t) : NULL;
        if (ok && (!sc || em3_type_numel(&t, n) != n))
            ok = fail(err, errlen, "@predict has no output '%s' with one score per row (set score=NAME)", c->score);
        if (ok) memcpy(score + at, sc, sizeof(float) * (size_t)n);
    }
    ok = all_ok(c, ok, err, errlen);
    if (ok) eval_gather(c, score, lo, hi, rows, sizeof(float));
    if (ok) {
        memcpy(y, lab->data, sizeof(float) * (size_t)rows);
        out->auc = em3_auc(y, score, NULL, rows);
        out->logloss = em3_logloss(y, score, NULL, rows);
        const char *gname = em3_dataset_group(ds);
        const em3_column *g = gname ? em3_dataset_find(ds, s, gname) : NULL;
        if (g && g->dtype == EM3_DTYPE_I32) {
            em3_gauc_result gr = em3_gauc(y, score, g->data, NULL, rows);
            out->gauc = gr.gauc;
            out->avg_auc = gr.avg_auc;
            out->excluded = gr.excluded_fraction;
        }
        const char *iname = em3_dataset_item(ds);
        const em3_column *it = iname ? em3_dataset_find(ds, s, iname) : NULL;
        if (it && it->dtype == EM3_DTYPE_I32) {
            bool *cold = em3_xmalloc((size_t)rows), *warm = em3_xmalloc((size_t)rows);
            for (int64_t i = 0; i < rows; i++) {
                cold[i] = em3_dataset_is_cold(ds, ((const int32_t *)it->data)[i]);
                warm[i] = !cold[i];
                out->rows_cold += cold[i];
            }
            out->auc_cold = em3_auc(y, score, cold, rows);
            out->logloss_cold = em3_logloss(y, score, cold, rows);
            out->auc_warm = em3_auc(y, score, warm, rows);
            out->logloss_warm = em3_logloss(y, score, warm, rows);
            free(cold);
            free(warm);
        }
    }
    free(score);
    free(y);
    free(idx);
    feeder_free(&fd);
    return ok;
}

void em3_eval_print_header(FILE *out, const em3_eval_result *r) {
    if (r->topk) em3_topk_print_header(out);
    else if (!isnan(r->loss)) fprintf(out, "%-8s %9s %8s\n", "split", "rows", "loss");
    else fprintf(out, "%-8s %9s %8s %8s %8s %9s %9s %9s\n", "split", "rows", "AUC", "gAUC", "logloss",
                 "AUC cold", "AUC warm", "cold rows");
}

void em3_eval_print_row(FILE *out, const char *name, const em3_eval_result *r) {
    if (r->topk) em3_topk_print_row(out, name, &r->ranking);
    else if (!isnan(r->loss)) fprintf(out, "%-8s %9lld %8.4f\n", name, (long long)r->rows, r->loss);
    else fprintf(out, "%-8s %9lld %8.4f %8.4f %8.4f %9.4f %9.4f %9lld\n", name, (long long)r->rows, r->auc,
                 r->gauc, r->logloss, r->auc_cold, r->auc_warm, (long long)r->rows_cold);
}

/* ---- the monitor: a weighted sum of metrics, larger is better -------------------------------- */

static bool monitor_value(const char *spec, const em3_eval_result *r, double *out, char *err, size_t errlen) {
    if (!strcmp(spec, "default")) spec = r->topk ? "recall@20" : !isnan(r->loss) ? "-loss" : "auc";
    double total = 0;
    const char *p = spec;
    while (*p) {
        double sign = 1, coef = 1;
        while (*p == ' ') p++;
        if (*p == '+' || *p == '-') sign = *p++ == '-' ? -1 : 1;
        while (*p == ' ') p++;
        char *end;
        double v = strtod(p, &end);
        if (end != p) {
            coef = v;
            p = end;
            while (*p == ' ') p++;
            if (*p == '*') p++;
            while (*p == ' ') p++;
        }
        size_t len = strcspn(p, "+- ");
        double m;
        if (r->topk) {
            if (!em3_topk_metric(&r->ranking, p, len, &m))
                return fail(err, errlen, "monitor '%s': unknown metric '%.*s' for a top-K model (recall@K, "
                                         "ndcg@K, precision@K; K = 10, 20, 50)", spec, (int)len, p);
        } else if (len == 3 && !strncmp(p, "auc", 3)) m = r->auc;
        else if (len == 4 && !strncmp(p, "gauc", 4)) m = r->gauc;
        else if (len == 7 && !strncmp(p, "logloss", 7)) m = r->logloss;
        else if (len == 8 && !strncmp(p, "auc_cold", 8)) m = r->auc_cold;
        else if (len == 4 && !strncmp(p, "loss", 4)) m = r->loss;
        else return fail(err, errlen, "monitor '%s': unknown metric '%.*s' (auc, gauc, logloss, auc_cold, loss)",
                         spec, (int)len, p);
        if (isnan(m) && !isnan(r->loss))
            return fail(err, errlen, "monitor '%s': a dataset without labels is evaluated by its loss (monitor -loss)", spec);
        if (isnan(m))
            return fail(err, errlen, "monitor '%s': %.*s is undefined on the valid split (%s): monitor another "
                                     "metric, e.g. -logloss",
                        spec, (int)len, p, len == 4 && !strncmp(p, "loss", 4) ? "it has labels: it is scored, not a loss"
                                           : "a single class, or no rows of the slice");
        total += sign * coef * m;
        p += len;
        while (*p == ' ') p++;
    }
    *out = total;
    return true;
}

/* ---- the loop --------------------------------------------------------------------------------- */

static void permutation(int64_t *perm, int64_t n, uint64_t seed, int64_t epoch) {
    em3_rng r;
    em3_rng_seed(&r, seed * 0x9E3779B97F4A7C15ull + (uint64_t)epoch + 1);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)em3_rng_below(&r, (uint64_t)i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static char *run_path(const em3_train_config *c, const char *file) {
    size_t n = strlen(c->out_dir) + strlen(file) + 2;
    char *p = em3_xmalloc(n);
    snprintf(p, n, "%s/%s", c->out_dir, file);
    return p;
}

typedef struct {
    em3_exec *x;
    const em3_dataset *ds;
    const em3_train_config *c;
    FILE *log, *jsonl, *csv;
    em3_train_state st;
    double t_start, t_last;
    double t_train; /* seconds in training steps (batches and @train), evaluations excluded */
    int64_t steps_per_epoch;
    em3_grad_sync *gs; /* data-parallel: the gradients of the step's shards (else NULL) */
    feeder up;         /* ... and @update's inputs */
    /* data-parallel: shards run `threads` at a time, thread t with executor wx[t] (wx[0] = x,
       the others its workers) and feeder wfd[t] */
    em3_pool *pool;
    em3_exec **wx;
    feeder *wfd;
    int blas_wave, blas_serial; /* OpenBLAS threads while a wave runs, and otherwise */
} loop;

/* Written by rank 0 alone. */
static bool save(loop *L, const char *file, char *err, size_t errlen) {
    bool ok = true;
    if (rank_of(L->c) == 0) {
        char *p = run_path(L->c, file);
        ok = em3_checkpoint_save(L->x, p, &L->st, err, errlen);
        free(p);
    }
    return all_ok(L->c, ok, err, errlen);
}

/* Rank 0 reads a checkpoint (weights and, with `st`, the loop's state) and gives it to every
 * rank. */
static bool load(loop *L, const char *file, em3_train_state *st, char *err, size_t errlen) {
    bool ok = true;
    em3_train_state scratch;
    if (rank_of(L->c) == 0) {
        char *p = run_path(L->c, file);
        ok = em3_checkpoint_load(L->x, p, st ? st : &scratch, err, errlen);
        free(p);
    }
    if (!all_ok(L->c, ok, err, errlen)) return false;
    if (L->c->comm) {
        if (st) em3_comm_broadcast(L->c->comm, st, sizeof *st);
        em3_checkpoint_broadcast(L->x, L->c->comm);
    }
    return true;
}

#define EM3_MAX_THREADS 64

/* A wave of a data-parallel step: shards s0, s0 + 1, … side by side, shard s0 + t on thread t. */
typedef struct {
    loop *L;
    const int64_t *rows;
    int64_t n, s0;
    bool ok[EM3_MAX_THREADS];
    char err[EM3_MAX_THREADS][256];
} wave;

static void shard_task(void *ctx, int t) {
    wave *w = ctx;
    loop *L = w->L;
    int64_t S = L->c->shards, s = w->s0 + t, lo = s * w->n / S, hi = (s + 1) * w->n / S;
    w->ok[t] = true;
    if (hi == lo) return;
    feeder *fd = &L->wfd[t];
    feeder_fill(fd, w->rows + lo, hi - lo, lo, L->st.step + 1, L->st.lr);
    w->ok[t] = em3_exec_run(L->wx[t], "train", hi - lo, fd->in, fd->n, w->err[t], sizeof w->err[t]);
}

/* One step on the global batch rows[0, n): through @train alone, or data-parallel — @train on
 * each of this rank's shards (shard s holds rows [s·n/S, (s+1)·n/S)), the gradients combined
 * over every shard of every rank, then @update, unless the loss is not finite. */
static bool step(loop *L, feeder *fd, const int64_t *rows, int64_t n, float *loss, char *err, size_t errlen) {
    if (!L->gs) {
        feeder_fill(fd, rows, n, 0, L->st.step + 1, L->st.lr);
        if (!em3_exec_run(L->x, "train", n, fd->in, fd->n, err, errlen)) return false;
        *loss = *(const float *)em3_exec_output(L->x, "train", "loss", NULL);
        return true;
    }
    int64_t S = L->c->shards, per_rank = S / ranks(L->c), first = rank_of(L->c) * per_rank;
    int T = em3_pool_threads(L->pool);
    bool ok = true;
    em3_grad_sync_begin(L->gs);
    /* waves of T shards side by side, each added in shard order once all of the wave are done,
       so the sums, and the bits, do not depend on T */
    for (int64_t s0 = first; ok && s0 < first + per_rank; s0 += T) {
        wave w = {.L = L, .rows = rows, .n = n, .s0 = s0};
        int tasks = (int)(first + per_rank - s0 < T ? first + per_rank - s0 : T);
        /* OpenBLAS on the cores each thread has; all of them again for the rest */
        if (T > 1) openblas_set_num_threads(L->blas_wave);
        em3_pool_run(L->pool, shard_task, &w, tasks);
        if (T > 1) openblas_set_num_threads(L->blas_serial);
        for (int t = 0; ok && t < tasks; t++) {
            int64_t lo = (s0 + t) * n / S, hi = (s0 + t + 1) * n / S;
            if (hi == lo) continue;
            if (!(ok = w.ok[t])) snprintf(err, errlen, "%s", w.err[t]);
            else em3_grad_sync_add(L->gs, L->wx[t], hi - lo, (float)((double)(hi - lo) / (double)n));
        }
    }
    if (!all_ok(L->c, ok, err, errlen)) return false;
    int64_t batch;
    *loss = em3_grad_sync_combine(L->gs, &batch);
    if (!isfinite(*loss)) return true;
    feeder_fill(&L->up, NULL, 0, 0, L->st.step + 1, L->st.lr);
    for (int k = 0; k < L->up.n; k++)
        if (L->up.kind[k] == FEED_GRAD) L->up.in[k].data = em3_grad_sync_input(L->gs, L->up.in[k].name);
    return em3_exec_run(L->x, "update", batch, L->up.in, L->up.n, err, errlen);
}

/* Evaluates valid, logs, updates best / patience / plateau; *stop when patience runs out. */
static bool evaluate_and_schedule(loop *L, bool *stop, char *err, size_t errlen) {
    em3_eval_result r;
    if (!em3_evaluate(L->x, L->ds, EM3_SPLIT_VALID, L->c, &r, err, errlen)) return false;
    double v = 0;
    if (!monitor_value(L->c->monitor, &r, &v, err, errlen)) return false;
    L->st.evals++;
    bool better = v > L->st.best;
    if (better) {
        L->st.best = v;
        L->st.best_step = L->st.step;
        L->st.bad_evals = L->st.plateau_evals = 0;
    } else {
        L->st.bad_evals++;
        L->st.plateau_evals++;
    }
    bool reduced = false;
    if (L->c->lr_patience > 0 && L->st.plateau_evals >= L->c->lr_patience) {
        for (int g = 0; g < L->st.n_lr; g++) L->st.lr[g] = fmax(L->st.lr[g] * L->c->lr_factor, L->c->min_lr);
        L->st.plateau_evals = 0;
        reduced = true;
    }
    double secs = now() - L->t_start;
    double epoch = (double)L->st.step / (double)L->steps_per_epoch;
    fprintf(L->log, "[eval %lld] epoch %.2f step %lld: valid ", (long long)L->st.evals, epoch, (long long)L->st.step);
    fprintf(L->jsonl, "{\"event\":\"eval\",\"epoch\":%.4f,\"step\":%lld,\"seconds\":%.3f,\"train_seconds\":%.3f,",
            epoch, (long long)L->st.step, secs, L->t_train);
    fprintf(L->csv, "%.4f,%lld,%.3f,", epoch, (long long)L->st.step, secs);
    if (r.topk) {
        em3_topk_print_brief(L->log, &r.ranking);
        em3_topk_print_json(L->jsonl, &r.ranking);
        em3_topk_print_csv(L->csv, &r.ranking);
    } else if (!isnan(r.loss)) {
        fprintf(L->log, "loss %.4f", r.loss);
        fprintf(L->jsonl, "\"loss\":%.6f", r.loss);
    } else {
        fprintf(L->log, "AUC %.4f gAUC %.4f logloss %.4f (cold AUC %.4f, warm AUC %.4f)", r.auc, r.gauc, r.logloss,
                r.auc_cold, r.auc_warm);
        fprintf(L->jsonl, "\"auc\":%.6f,\"gauc\":%.6f,\"logloss\":%.6f,\"auc_cold\":%.6f,\"auc_warm\":%.6f", r.auc,
                isnan(r.gauc) ? -1 : r.gauc, r.logloss, isnan(r.auc_cold) ? -1 : r.auc_cold,
                isnan(r.auc_warm) ? -1 : r.auc_warm);
    }
    if (!r.topk)
        fprintf(L->csv, "%.6f,%.6f,%.6f,%.6f,%.6f,%.6f", r.loss, r.auc, r.gauc, r.logloss, r.auc_cold, r.auc_warm);
    fprintf(L->log, " monitor %.4f%s%s\n", v, better ? " (best)" : "", reduced ? ", learning rate reduced" : "");
    fprintf(L->jsonl, ",\"monitor\":%.6f,\"best\":%s,\"lr\":%g}\n", v, better ? "true" : "false", L->st.lr[0]);
    fprintf(L->csv, ",%g\n", L->st.lr[0]);
    fflush(L->jsonl);
    fflush(L->csv);
    if (better && !save(L, "best.ckpt", err, errlen)) return false;
    *stop = L->c->patience > 0 && L->st.bad_evals >= L->c->patience;
    if (*stop)
        fprintf(L->log, "early stop: no improvement of '%s' in %lld evaluations\n", L->c->monitor,
                (long long)L->st.bad_evals);
    return true;
}

/* What combining the gradients cost per step: what rank 0 received (comm.h) and the time. */
static void log_sync_cost(loop *L) {
    em3_comm_stats dense, sparse;
    int64_t n;
    em3_grad_sync_stats(L->gs, &dense, &sparse, &n);
    if (n == 0) return;
    fprintf(L->log, "data-parallel: %d ranks, %lld shards; per step %.1f kB of dense gradients in %.3f ms, "
                    "%.1f kB of embedding rows in %.3f ms\n", ranks(L->c), (long long)L->c->shards,
            (double)dense.bytes / (double)n / 1e3, dense.seconds / (double)n * 1e3,
            (double)sparse.bytes / (double)n / 1e3, sparse.seconds / (double)n * 1e3);
}

/* A progress line that rewrites itself, on rank 0's terminal. */
static bool live_progress(const em3_train_config *c) {
    return c->progress && isatty(fileno(stderr)) && rank_of(c) == 0;
}

static void progress(loop *L, double loss, bool force) {
    double t = now();
    if (!force && t - L->t_last < 0.5) return;
    L->t_last = t;
    const em3_train_config *c = L->c;
    int64_t done = L->st.step, total = c->epochs * L->steps_per_epoch;
    if (c->max_steps && c->max_steps < total) total = c->max_steps;
    double rate = (double)done * (double)c->batch_size / fmax(t - L->t_start, 1e-9);
    double eta = rate > 0 ? (double)(total - done) * (double)c->batch_size / rate : 0;
    if (live_progress(c))
        fprintf(stderr, "\r  epoch %lld/%lld  step %lld/%lld  %8.0f samples/s  loss %.4f  ETA %lld:%02lld   ",
                (long long)L->st.epoch + 1, (long long)c->epochs, (long long)done, (long long)total, rate, loss,
                (long long)eta / 60, (long long)eta % 60);
}

/* The threads that run a data-parallel step's shards (one: the caller alone): a worker
 * executor and a feeder each, and OpenBLAS on the cores left to each. With more than one,
 * @train must only read the globals (with @update apart it does). */
static bool start_threads(loop *L, char *err, size_t errlen) {
    const em3_train_config *c = L->c;
    int T = (int)c->threads;
    EM3_ASSERT(T <= EM3_MAX_THREADS && c->shards / ranks(c) >= T, "%d threads for %lld shards on %d ranks", T,
               (long long)c->shards, ranks(c));
    const em3_func *f = em3_module_find_func(em3_exec_module(L->x), "train");
    for (int i = 0; f && i < f->n_node; i++)
        EM3_ASSERT(!(em3_op_flags(f->node[i].op) & EM3_OPF_SIDE_EFFECT), "@train writes a global (node %d)", i);
    L->pool = em3_pool_create(T);
    L->wx = em3_xcalloc((size_t)T, sizeof *L->wx);
    L->wfd = em3_xcalloc((size_t)T, sizeof *L->wfd);
    L->wx[0] = L->x;
    bool ok = true;
    for (int t = 0; t < T; t++) {
        if (t) L->wx[t] = em3_exec_worker(L->x);
        if (ok) ok = feeder_init(&L->wfd[t], em3_exec_func(L->x, "train"), L->ds, EM3_SPLIT_TRAIN, c,
                                 (c->batch_size + c->shards - 1) / c->shards, err, errlen);
    }
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN) / (c->comm ? em3_comm_local_size(c->comm) : 1);
    L->blas_serial = c->deterministic || cores < 1 ? 1 : cores;
    L->blas_wave = c->deterministic || cores / T < 1 ? 1 : cores / T;
    return ok;
}

static void stop_threads(loop *L) {
    if (!L->pool) return;
    for (int t = 0; t < em3_pool_threads(L->pool); t++) {
        feeder_free(&L->wfd[t]);
        if (t) em3_exec_free(L->wx[t]);
    }
    em3_pool_free(L->pool);
    free(L->wfd);
    free(L->wx);
    L->pool = NULL;
}

/* A write interrupted by a kill leaves its temporary (em3_afile's NAME.tmp.XXXXXX) in the run
 * folder; the resumed run removes them, since nothing but this run writes there. */
static void remove_stale_temps(const char *dir) {
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        const char *t = strstr(e->d_name, ".tmp.");
        if (!t || strlen(t) != strlen(".tmp.XXXXXX")) continue;
        char *p = em3_xmalloc(strlen(dir) + strlen(e->d_name) + 2);
        sprintf(p, "%s/%s", dir, e->d_name);
        unlink(p);
        free(p);
    }
    if (d) closedir(d);
}

bool em3_train(em3_exec *x, const em3_dataset *ds, const em3_train_config *c, bool resume,
               FILE *log, char *err, size_t errlen) {
    const em3_compiled_func *tf = em3_exec_func(x, "train");
    EM3_ASSERT(tf, "no compiled @train");
    bool leader = rank_of(c) == 0, parallel = em3_exec_func(x, "update") != NULL;
    EM3_ASSERT(!parallel || (c->shards > 0 && c->shards % ranks(c) == 0), "%lld shards on %d ranks",
               (long long)c->shards, ranks(c));
    /* ranks on one machine share its cores; OpenBLAS would otherwise start a thread per core in each */
    if (c->deterministic) openblas_set_num_threads(1);
    else if (c->comm && em3_comm_local_size(c->comm) > 1) {
        int threads = (int)sysconf(_SC_NPROCESSORS_ONLN) / em3_comm_local_size(c->comm);
        openblas_set_num_threads(threads > 1 ? threads : 1);
    }
    bool made = !leader || em3_mkdir_p(c->out_dir) ||
                fail(err, errlen, "cannot create run folder %s: %s", c->out_dir, strerror(errno));
    if (!all_ok(c, made, err, errlen)) return false;
    int64_t rows = em3_dataset_rows(ds, EM3_SPLIT_TRAIN);
    if (rows == 0) return fail(err, errlen, "the training split is empty");
    loop L = {.x = x, .ds = ds, .c = c, .log = log};
    L.st.best = -INFINITY;
    L.st.n_lr = c->n_groups;
    for (int g = 0; g < c->n_groups; g++) L.st.lr[g] = c->groups[g].lr;
    if (resume) {
        if (leader) remove_stale_temps(c->out_dir);
        if (!load(&L, "last.ckpt", &L.st, err, errlen)) return false;
        fprintf(log, "resuming at epoch %lld, batch %lld (step %lld)\n", (long long)L.st.epoch + 1,
                (long long)L.st.batch, (long long)L.st.step);
    } else if (c->comm) {
        em3_checkpoint_broadcast(x, c->comm); /* every rank starts from rank 0's weights */
    }
    if (!em3_exec_precompute(x, err, errlen)) return false;
    char *pj = run_path(c, "log.jsonl"), *pc = run_path(c, "metrics.csv");
    L.jsonl = fopen(leader ? pj : "/dev/null", resume ? "a" : "w");
    L.csv = fopen(leader ? pc : "/dev/null", resume ? "a" : "w");
    free(pj);
    free(pc);
    if (!L.jsonl || !L.csv) {
        if (L.jsonl) fclose(L.jsonl);
        if (L.csv) fclose(L.csv);
        return fail(err, errlen, "cannot write the logs in %s: %s", c->out_dir, strerror(errno));
    }
    if (!resume && em3_topk_model(x, ds, c->score)) {
        fprintf(L.csv, "epoch,step,seconds,");
        em3_topk_print_csv_header(L.csv);
        fprintf(L.csv, ",lr\n");
    } else if (!resume) {
        fprintf(L.csv, "epoch,step,seconds,loss,auc,gauc,logloss,auc_cold,auc_warm,lr\n");
    }

    feeder fd;
    int64_t bs = c->batch_size;
    bool ok = feeder_init(&fd, tf, ds, EM3_SPLIT_TRAIN, c, bs, err, errlen);
    if (ok && parallel) {
        ok = feeder_init(&L.up, em3_exec_func(x, "update"), NULL, EM3_SPLIT_TRAIN, c, 0, err, errlen);
        EM3_ASSERT(c->comm, "data-parallel training without a communicator");
        L.gs = em3_grad_sync_create(x, c->comm, c->deterministic);
    }
    if (ok && parallel) ok = start_threads(&L, err, errlen);
    int64_t *perm = em3_xmalloc(sizeof(int64_t) * (size_t)rows);
    L.steps_per_epoch = (rows + bs - 1) / bs;
    L.t_start = L.t_last = now();
    double loss_sum = 0;
    int64_t loss_n = 0;
    bool stop = false;
    int64_t perm_epoch = -1;
    /* (epoch, batch) is always the next batch to train: that is what a checkpoint records */
    while (ok && !stop && L.st.epoch < c->epochs) {
        if (perm_epoch != L.st.epoch) {
            permutation(perm, rows, c->seed, L.st.epoch);
            perm_epoch = L.st.epoch;
        }
        int64_t at = L.st.batch * bs, n = rows - at < bs ? rows - at : bs;
        double t0 = now();
        em3_exec_graph_phase(x, true, c->seed, L.st.epoch); /* an epoch's drop-edge sample */
        float loss;
        if (!(ok = step(&L, &fd, perm + at, n, &loss, err, errlen))) break;
        L.t_train += now() - t0;
        if (!isfinite(loss)) {
            ok = fail(err, errlen, "the loss is %g at step %lld (epoch %lld, batch %lld): training "
                                   "stopped; the last good checkpoint is %s/last.ckpt",
                      (double)loss, (long long)L.st.step + 1, (long long)L.st.epoch + 1,
                      (long long)L.st.batch + 1, c->out_dir);
            break;
        }
        L.st.step++;
        loss_sum += loss;
        loss_n++;
        bool epoch_end = ++L.st.batch == L.steps_per_epoch;
        if (epoch_end) {
            L.st.epoch++;
            L.st.batch = 0;
        }
        progress(&L, loss_sum / (double)loss_n, false);
        if (c->log_every && L.st.step % c->log_every == 0) {
            fprintf(L.jsonl, "{\"event\":\"train\",\"epoch\":%.4f,\"step\":%lld,\"seconds\":%.3f,\"loss\":%.6f}\n",
                    (double)L.st.step / (double)L.steps_per_epoch, (long long)L.st.step, now() - L.t_start,
                    loss_sum / (double)loss_n);
            if (!live_progress(c))
                fprintf(log, "  step %lld  loss %.4f\n", (long long)L.st.step, loss_sum / (double)loss_n);
            loss_sum = 0;
            loss_n = 0;
        }
        bool limit = c->max_steps && L.st.step >= c->max_steps;
        if (c->eval_every ? L.st.step % c->eval_every == 0 : epoch_end) {
            if (live_progress(c)) fputc('\n', stderr);
            ok = evaluate_and_schedule(&L, &stop, err, errlen);
        }
        if (ok && (epoch_end || limit || stop || (c->checkpoint_every && L.st.step % c->checkpoint_every == 0)))
            ok = save(&L, "last.ckpt", err, errlen);
        stop |= limit;
    }
    if (live_progress(c)) fputc('\n', stderr);
    free(perm);
    feeder_free(&fd);
    if (ok) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        double secs = now() - L.t_start, peak_mb = (double)ru.ru_maxrss / 1024.0;
        fprintf(log, "trained %lld steps in %.1f s; peak memory %.0f MB", (long long)L.st.step, secs, peak_mb);
        if (L.st.evals) fprintf(log, "; best monitor %.4f at step %lld", L.st.best, (long long)L.st.best_step);
        fputc('\n', log);
        if (L.gs && ranks(c) > 1) log_sync_cost(&L);
        /* this session's figures (a resumed run's are its own part) */
        fprintf(L.jsonl, "{\"event\":\"done\",\"step\":%lld,\"seconds\":%.3f,\"peak_rss_mb\":%.1f}\n",
                (long long)L.st.step, secs, peak_mb);
        if (L.st.evals) ok = load(&L, "best.ckpt", NULL, err, errlen) && em3_exec_precompute(x, err, errlen);
    }
    if (ok) {
        em3_eval_result r;
        fputc('\n', log);
        ok = em3_evaluate(x, ds, EM3_SPLIT_VALID, c, &r, err, errlen);
        if (ok) {
            em3_eval_print_header(log, &r);
            em3_eval_print_row(log, "valid", &r);
        }
        if (ok && c->eval_test && em3_dataset_rows(ds, EM3_SPLIT_TEST) > 0) {
            ok = em3_evaluate(x, ds, EM3_SPLIT_TEST, c, &r, err, errlen);
            if (ok) {
                em3_eval_print_row(log, "test", &r);
                fprintf(L.jsonl, "{\"event\":\"test\",");
                if (r.topk)
                    em3_topk_print_json(L.jsonl, &r.ranking);
                else
                    fprintf(L.jsonl, "\"auc\":%.6f,\"gauc\":%.6f,\"logloss\":%.6f,\"auc_cold\":%.6f,\"auc_warm\":%.6f",
                            r.auc, isnan(r.gauc) ? -1 : r.gauc, r.logloss, isnan(r.auc_cold) ? -1 : r.auc_cold,
                            isnan(r.auc_warm) ? -1 : r.auc_warm);
                fprintf(L.jsonl, "}\n");
            }
        }
    }
    if (L.gs) {
        feeder_free(&L.up);
        em3_grad_sync_free(L.gs);
    }
    stop_threads(&L);
    fclose(L.jsonl);
    fclose(L.csv);
    return ok;
}
