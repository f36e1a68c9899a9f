/* passes/dce.c — dead code elimination: keeps what a function returns and every op with a
 * side effect (optimizer updates), with everything they read; drops the rest, including
 * inputs nothing reads, so a function's inputs are exactly what it needs. */
#include <stdlib.h>

#include "passes.h"

int em3_pass_dce(em3_module *m, const em3_pass_ctx *ctx) {
    (void)ctx;
    int changed = 0;
    for (int fi = 0; fi < m->n_func; fi++) {
        em3_func *f = m->func[fi];
        bool *live = em3_xcalloc((size_t)(f->n_node ? f->n_node : 1), sizeof(bool));
        for (int i = 0; i < f->n_out; i++) live[f->out[i].value] = true;
        for (int i = f->n_node - 1; i >= 0; i--) {
            if (em3_op_flags(f->node[i].op) & EM3_OPF_SIDE_EFFECT) live[i] = true;
            if (live[i])
                for (int k = 0; k < f->node[i].n_in; k++) live[f->node[i].in[k]] = true;
        }
        int before = f->n_node;
        em3_func_compact(f, live);
        changed |= f->n_node != before;
        free(live);
    }
    return changed;
}
