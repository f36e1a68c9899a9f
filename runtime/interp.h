/* runtime/interp.h — the reference interpreter: runs IR functions node by node with plain loops
 * and OpenBLAS, the oracle every compiled backend is tested against. Values are held as
 * double; in F32 mode each float result is rounded to float after every op (float32 storage),
 * in F64 mode nothing is rounded (for finite-difference gradient checks). */
#ifndef EM3_INTERP_H
#define EM3_INTERP_H

#include <stdbool.h>
#include <stdint.h>

#include "ir/ir.h"

typedef enum { EM3_PREC_F32, EM3_PREC_F64 } em3_precision;

typedef struct em3_interp em3_interp;

em3_interp *em3_interp_create(const em3_module *m, em3_precision p);
void em3_interp_free(em3_interp *it);

/* Initialise every PARAM, FROZEN and STATE global from its init spec (runtime/init.h). DATA
 * globals start at zero; the caller fills them through em3_interp_global. GRAPH globals have
 * no storage: em3_interp_bind_graph gives them a matrix. */
void em3_interp_init_globals(em3_interp *it, uint64_t seed);

/* The storage of global `name` (numel doubles, row-major), or NULL when there is none. */
double *em3_interp_global(em3_interp *it, const char *name);

/* Binds graph global `name` to g (runtime/graph.h), which must outlive the interpreter's runs;
 * spmm reads the graph's current matrix. */
struct em3_graph;
void em3_interp_bind_graph(em3_interp *it, const char *name, const struct em3_graph *g);

typedef struct {
    const char *name;   /* the INPUT's symbol */
    const double *data; /* numel(type with B = batch) values; integer inputs hold whole numbers */
} em3_interp_input;

/* Runs function `func` with batch size `batch` (> 0). Every INPUT of the function must be
 * given, by name. A data error — an id outside its table or vocabulary, a non-integer id —
 * is a user error: returns false with a message in `err`, naming the input or op. */
bool em3_interp_run(em3_interp *it, const char *func, int64_t batch, const em3_interp_input *in,
                    int n_in, char *err, size_t errlen);

/* Results of the last run. `type` (optional) receives the value's IR type. */
const double *em3_interp_output(const em3_interp *it, const char *name, em3_type *type);
const double *em3_interp_value(const em3_interp *it, int id);

#endif
