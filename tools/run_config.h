/* tools/run_config.h — every option of a training run in one table: the runtime's loop
 * settings and the optimizer pass's, set by --set KEY=VALUE (or a run folder's config.yaml)
 * and written back resolved into the run folder. Keys the table does not know are model
 * constants, handed to the frontend. */
#ifndef EM3_RUN_CONFIG_H
#define EM3_RUN_CONFIG_H

#include <stdio.h>

#include "frontend/frontend.h"
#include "passes/passes.h"
#include "runtime/train.h"

typedef struct {
    em3_train_config train;
    em3_optim_config optim;
    em3_param_group groups[EM3_MAX_GROUPS]; /* optimizer groups (group.NAME=pattern) */
    int64_t max_batch;  /* the compiled arena's capacity; 0: the larger batch size */
    int64_t opt_level;  /* 0 or 2 */
    const char *disable_passes; /* -O2 passes left out, comma-separated ("": none) */
    bool no_mem_reuse;
    bool perf_map;
    const char *init;     /* weights to start from ("" none), renamed by init_map */
    const char *init_map;
    bool items_only;      /* train on the item tables alone (em3 pretrain) */
    double items_valid;   /* ... holding out this fraction of the items */
    const char *model;  /* the model source */
    const char *data;   /* the dataset */
    /* model constants not in the table, in order */
    em3_const_override *consts;
    int n_consts;
    char **owned;       /* strings this config owns */
    int n_owned;
} em3_run_config;

void em3_run_config_init(em3_run_config *rc);
void em3_run_config_free(em3_run_config *rc);

/* Applies KEY=VALUE; false with a message for a malformed value or a bad group name. */
bool em3_run_config_set(em3_run_config *rc, const char *key, const char *value, char *err, size_t errlen);
/* Fills the derived parts (learning-rate groups for the loop and the pass). */
bool em3_run_config_finish(em3_run_config *rc, char *err, size_t errlen);
/* Writes every option as "key: value" lines (a flat YAML file), then the model constants. */
void em3_run_config_write(const em3_run_config *rc, FILE *out);
/* Reads what em3_run_config_write wrote. */
bool em3_run_config_read(em3_run_config *rc, const char *path, char *err, size_t errlen);
/* The options and their meaning, for --help and docs/training.md. */
void em3_run_config_help(FILE *out);

#endif
