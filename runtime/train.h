/* runtime/train.h — the training loop: epochs over a seeded permutation of the training split,
 * one compiled training step per batch, evaluation with exact metrics (overall and on cold and
 * warm items), early stopping on a monitor, reduce-on-plateau learning rates, a run folder
 * with the resolved configuration, a JSONL log, a metrics CSV and checkpoints that make a
 * resumed run continue exactly. docs/training.md documents every option. */
#ifndef EM3_TRAIN_H
#define EM3_TRAIN_H

#include <stdio.h>

#include "comm.h"
#include "dataset.h"
#include "exec.h"
#include "topk.h"

#define EM3_MAX_GROUPS 16

typedef struct {
    const char *name; /* "default" for parameters no pattern matches */
    double lr;
} em3_lr_group;

typedef struct {
    int64_t epochs;
    int64_t batch_size;      /* training rows per step (≤ the compiled max batch) */
    int64_t eval_batch_size; /* rows per evaluation call */
    int64_t max_steps;       /* stop after this many steps in all (0: no limit) */
    uint64_t seed;           /* weights, permutations: everything random */
    bool deterministic;      /* one thread, fixed reduction order: bit-identical reruns */
    em3_lr_group groups[EM3_MAX_GROUPS];
    int n_groups;            /* groups[0] is "default" */
    const char *monitor;     /* "auc", "gauc", "-logloss", "-loss", "recall@20", ... or a weighted
                                sum "gauc+0.5*auc"; "default": auc, -loss on a dataset without
                                labels, recall@20 for top-K models */
    int64_t patience;        /* evaluations without improvement before stopping (0: never) */
    double lr_factor;        /* reduce-on-plateau: multiply the rates by this ... */
    int64_t lr_patience;     /* ... after this many evaluations without improvement (0: off) */
    double min_lr;
    int64_t eval_every;      /* evaluate every N steps (0: after each epoch) */
    int64_t checkpoint_every;/* also checkpoint every N steps (0: only at evaluations) */
    int64_t log_every;       /* a log line every N steps */
    bool eval_test;          /* evaluate the test split with the best weights at the end */
    const char *score;       /* the @predict output scored by the metrics */
    const char *out_dir;     /* the run folder */
    bool progress;           /* a live progress line (when stderr is a terminal) */
    /* Data-parallel training (the model compiled with @update, docs/training.md): the global
     * batch is cut into `shards` (0: one per rank), each rank runs @train on its share and the
     * gradients are combined before @update. Only rank 0 writes the run folder. */
    int64_t shards;
    int64_t threads;         /* shards of a rank run this many at a time, on threads of its own */
    em3_comm *comm;          /* the job's ranks (NULL: one process) */
} em3_train_config;

em3_train_config em3_train_defaults(void);

typedef struct {
    double loss; /* a dataset without labels (em3 pretrain): the mean @forward loss; else NaN */
    double auc, gauc, avg_auc, logloss, excluded;
    double auc_cold, logloss_cold, auc_warm, logloss_warm;
    int64_t rows, rows_cold;
    bool topk;                /* a top-K model: `ranking` holds its metrics, the rest is unset */
    em3_topk_metrics ranking;
} em3_eval_result;

/* Scores every row of split s (the last partial batch included) and computes the metrics; on a
 * dataset without a label, the mean loss of @forward instead; for a top-K model (topk.h),
 * ranks every item for the split's users instead. With several ranks each scores its share
 * of the batches and the results are gathered, so every rank computes the metrics of the
 * whole split, as one process would. */
bool em3_evaluate(em3_exec *x, const em3_dataset *ds, em3_split s, const em3_train_config *c,
                  em3_eval_result *out, char *err, size_t errlen);

/* Whether the dataset feeds every input of the functions em3_train and em3_evaluate run — its
 * columns, their types and vocabularies, the learning rates of the parameter groups — so that
 * a mismatch is reported before a run folder is made, not at the first step. */
bool em3_train_check(const em3_exec *x, const em3_dataset *ds, const em3_train_config *c, char *err, size_t errlen);

/* Runs (or, with `resume`, continues) training. Progress and the final table go to `log`.
 * Returns false on errors (data, NaN loss, I/O) with a message in `err`; the last good
 * checkpoint is then intact. */
bool em3_train(em3_exec *x, const em3_dataset *ds, const em3_train_config *c, bool resume,
               FILE *log, char *err, size_t errlen);

/* Prints "split | AUC | gAUC | logloss | ... " rows (a label-free dataset: "split | rows | loss";
 * a top-K model: "split | users | Recall@10 | ..."), the header for results of r's kind. */
void em3_eval_print_header(FILE *out, const em3_eval_result *r);
void em3_eval_print_row(FILE *out, const char *name, const em3_eval_result *r);

#endif
