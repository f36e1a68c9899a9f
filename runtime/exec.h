/* runtime/exec.h — running compiled model functions: the model's globals in memory
 * (parameters initialised from the seed, optimizer state, data tables bound to the dataset's
 * side tables without copying), one arena per function, inputs bound by name. Compiled code
 * arrives as em3_compiled_func descriptors (runtime/abi.h, copied here), whatever produced them. */
#ifndef EM3_EXEC_H
#define EM3_EXEC_H

#include "abi.h"
#include "dataset.h"

typedef struct em3_exec em3_exec;

em3_exec *em3_exec_create(const em3_module *m, const em3_compiled_func *funcs, int n_funcs,
                          uint64_t seed);
void em3_exec_free(em3_exec *x);
/* A second executor of x's functions for another thread: x's globals and graphs (shared, not
 * copied), arenas and arguments of its own, so that it can run a function while x runs one.
 * Nothing may write a global meanwhile (data-parallel @train only reads them). Freed with
 * em3_exec_free before x. */
em3_exec *em3_exec_worker(em3_exec *x);

const em3_module *em3_exec_module(const em3_exec *x);
/* The storage of global `name` (numel elements of its dtype), or NULL. */
void *em3_exec_global(em3_exec *x, const char *name);

/* Points data global `name` at a dataset side table; false (with a message suggesting the
 * --set that fixes it) when shapes or types differ. */
bool em3_exec_bind_table(em3_exec *x, const char *name, const em3_column *table, char *err,
                         size_t errlen);
/* Binds every data global of the model to the dataset's table of the same name, and builds
 * every graph global from the dataset (runtime/graph.h). */
bool em3_exec_bind_dataset(em3_exec *x, const em3_dataset *ds, char *err, size_t errlen);
/* Gives graph global `name` its matrices (taking ownership of `graph`). */
struct em3_graph;
void em3_exec_bind_graph(em3_exec *x, const char *name, struct em3_graph *graph);
/* Which matrices graphs show: training in `epoch` of a run seeded `seed` (a graph with edge
 * dropout shows that epoch's sample), or evaluation (every graph whole; the initial state). */
void em3_exec_graph_phase(em3_exec *x, bool training, uint64_t seed, int64_t epoch);

const em3_compiled_func *em3_exec_func(const em3_exec *x, const char *name);

typedef struct {
    const char *name;
    const void *data; /* batch × row values of the input's dtype */
} em3_exec_input;

/* Runs `func` on a batch (1 .. max batch). Every input of the function must be given; a data
 * error (an id outside its table) is reported with the node's source location. */
bool em3_exec_run(em3_exec *x, const char *func, int64_t batch, const em3_exec_input *in, int n_in,
                  char *err, size_t errlen);
/* Fills every cache table from its @precompute.NAME function (made by the cache-frozen pass):
 * all ids of the function's id input, in batches, each row of the result stored at its id.
 * Run before training and after loading weights. */
bool em3_exec_precompute(em3_exec *x, char *err, size_t errlen);

/* An output of the last run of `func` (valid until the next run of it). */
const void *em3_exec_output(const em3_exec *x, const char *func, const char *name, em3_type *type);

#endif
