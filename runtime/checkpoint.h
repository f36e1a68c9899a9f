/* runtime/checkpoint.h — training checkpoints: every non-data global (parameters and
 * optimizer state) plus the loop's position and schedule state, so that a resumed run
 * continues exactly. Written atomically (temporary file, fsync, rename) with a format
 * version and a checksum; a corrupt or incompatible file is refused with a clear message and
 * never overwritten by a failed write. The tensors are stored in the safetensors layout, so
 * other tools can read a checkpoint's weights. */
#ifndef EM3_CHECKPOINT_H
#define EM3_CHECKPOINT_H

#include "comm.h"
#include "exec.h"

#define EM3_CHECKPOINT_VERSION 1
#define EM3_CKPT_MAX_GROUPS 16

typedef struct {
    int64_t epoch;    /* the epoch in progress, 0-based */
    int64_t batch;    /* batches of that epoch already trained */
    int64_t step;     /* steps trained in all */
    int64_t evals;    /* evaluations done */
    double lr[EM3_CKPT_MAX_GROUPS];
    int n_lr;
    double best;      /* the best monitor value so far (-inf before the first) */
    int64_t best_step;
    int64_t bad_evals;     /* evaluations since the best */
    int64_t plateau_evals; /* evaluations since the best or the last rate reduction */
} em3_train_state;

bool em3_checkpoint_save(em3_exec *x, const char *path, const em3_train_state *s, char *err,
                         size_t errlen);
/* Loads into x's globals; the module must have the same globals (names, shapes). */
bool em3_checkpoint_load(em3_exec *x, const char *path, em3_train_state *s, char *err,
                         size_t errlen);
/* Rank 0's values of everything a checkpoint holds, to every rank of c (a collective): how the
 * ranks of a data-parallel job start from the same weights. */
void em3_checkpoint_broadcast(em3_exec *x, em3_comm *c);

/* Starts a model from another run's weights: every parameter (trainable or frozen) of x
 * whose name is found in the safetensors file `path` (a checkpoint, or weights from any tool)
 * takes that tensor. `map` ("FROM:TO,FROM:TO", may be NULL) renames: a parameter named
 * TO + rest is looked up as FROM + rest, by the first rule whose TO prefixes it, so one
 * pretrained module can start several copies. Optimizer state starts fresh. False (changing
 * nothing) when a found tensor has another shape or type, or when no parameter is found;
 * *loaded and *total count the parameters filled and those that could have been. */
bool em3_checkpoint_init(em3_exec *x, const char *path, const char *map, int *loaded, int *total,
                         char *err, size_t errlen);

#endif
