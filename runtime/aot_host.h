/* runtime/aot_host.h — the host side of a model built by `em3 build`: the generated NAME_abi.c
 * only describes the model in tables and wraps these functions, while everything that runs —
 * weights from a seed or a file, arenas, split batches, the train step's optimizer inputs, data
 * errors as messages — lives here, written once and compiled with the rest of the runtime. */
#ifndef EM3_AOT_HOST_H
#define EM3_AOT_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "abi.h"
#include "em3_model.h"
#include "ir/ir.h" /* em3_global_kind, em3_init: types only, no IR code is linked */

typedef struct {
    em3_tensor_info t;
    em3_global_kind kind;
    em3_init init;
} em3_host_global;

/* Who supplies an input of a compiled function: the caller, or the wrapper (the optimizer's
 * step counter and learning rates of a train step, and where the rows of a call start in the
 * caller's batch when the wrapper splits it). */
typedef enum { EM3_HOST_IN_CALLER, EM3_HOST_IN_STEP, EM3_HOST_IN_LR, EM3_HOST_IN_ROW0 } em3_host_role;

typedef struct {
    em3_host_role role;
    int index; /* EM3_HOST_IN_CALLER: the position among the caller's inputs */
} em3_host_slot;

/* A node whose kernel checks ids against a table (gather, scatter_add, sparse updates). */
typedef struct {
    int32_t node;
    int ids_input;     /* the caller's input the ids are (reshapes aside), or -1 */
    const char *ids;   /* where the ids come from, for messages: "input 'hist'", ... */
    const char *table; /* the global indexed */
    int64_t rows;
} em3_host_fault;

typedef struct {
    const char *name;
    em3_abi_fn *fn;
    int64_t arena_bytes;
    int n_slots; /* every input of the compiled function, in frame order */
    const em3_host_slot *slots;
    int n_inputs; /* the caller's inputs */
    const em3_tensor_info *inputs;
    int n_outputs;
    const em3_tensor_info *outputs;
    int n_faults;
    const em3_host_fault *faults;
} em3_host_func;

typedef struct {
    em3_model_info info;
    int n_globals; /* in module order: the order of em3_frame.global */
    const em3_host_global *globals;
    int n_tables; /* the DATA globals, as NAME_tables() reports them */
    const em3_tensor_info *tables;
    int n_funcs;
    const em3_host_func *funcs;
} em3_host_model;

typedef struct em3_host em3_host;

/* A model instance: every global allocated and initialised (parameters and optimizer state
 * from their init specs with runtime/init.h's streams for `seed`, data tables at zero). Each
 * function's arena is allocated at its first run. NULL when memory runs out. */
em3_host *em3_host_create(const em3_host_model *m, uint64_t seed);
void em3_host_free(em3_host *h);

/* Runs function `fi` on `batch` rows: inputs[k] holds the caller's input k (numel with B =
 * batch elements of its dtype, row-major), outputs[k] receives output k (NULL: not wanted).
 * A function without optimizer inputs splits batches above max_batch into chunks; a train
 * step refuses them. The wrapper supplies opt.step (the instance's step counter, incremented
 * first) and every opt.lr.GROUP (= lr). Returns 0, or 1 with a message in err: a bad
 * argument, or a data error naming the input, row and position. */
int em3_host_run(em3_host *h, int fi, int64_t batch, const void *const *inputs, void *const *outputs,
                 float lr, char *err, size_t errlen);

/* Weights as safetensors (runtime/safetensors.h). Saving writes every global, the step counter
 * and the names of the optimizer state in __metadata__. Loading needs every parameter
 * (trainable and frozen) with the model's dtype and shape, takes data tables and optimizer
 * state when present, skips optimizer state the file lists that this build lacks, and refuses
 * any other tensor; nothing is changed unless the whole file is acceptable. */
int em3_host_load(em3_host *h, const char *path, char *err, size_t errlen);
int em3_host_save(const em3_host *h, const char *path, char *err, size_t errlen);

/* Copies `numel` elements (of the table's dtype) into data table `name`. */
int em3_host_set_table(em3_host *h, const char *name, const void *data, int64_t numel, char *err,
                       size_t errlen);

/* The caller's inputs / the outputs of function `fn` ("predict", "train"); the count, or -1
 * when the model has no such function. */
int em3_host_inputs(const em3_host_model *m, const char *fn, const em3_tensor_info **info);
int em3_host_outputs(const em3_host_model *m, const char *fn, const em3_tensor_info **info);

#endif
