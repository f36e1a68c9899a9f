/* passes/memory_plan.c — the arena layout of a function (see memory_plan.h). */
#include "memory_plan.h"

#include <stdlib.h>

static int64_t elem_bytes(em3_dtype dt) {
    (void)dt; /* f32 and i32 are both four bytes */
    return 4;
}

em3_mem_plan *em3_mem_plan_create(const em3_func *f, int64_t max_batch, bool reuse) {
    (void)reuse;
    em3_mem_plan *p = em3_xcalloc(1, sizeof(*p));
    int n = f->n_node ? f->n_node : 1;
    p->n = f->n_node;
    p->max_batch = max_batch;
    p->offset = em3_xmalloc(sizeof(int64_t) * (size_t)n);
    p->storage = em3_xmalloc(sizeof(int) * (size_t)n);
    p->bytes = em3_xmalloc(sizeof(int64_t) * (size_t)n);
    int64_t top = 0;
    for (int i = 0; i < f->n_node; i++) {
        const em3_node *nd = &f->node[i];
        p->bytes[i] = em3_type_numel(&nd->type, max_batch) * elem_bytes(nd->type.dtype);
        p->storage[i] = i;
        p->offset[i] = -1;
        if (nd->op == EM3_OP_INPUT || nd->op == EM3_OP_PARAM) continue;
        if (nd->op == EM3_OP_RESHAPE || (em3_op_flags(nd->op) & EM3_OPF_SIDE_EFFECT)) {
            p->storage[i] = p->storage[nd->in[0]];
            p->offset[i] = p->offset[nd->in[0]];
            continue;
        }
        top = (top + EM3_ARENA_ALIGN - 1) / EM3_ARENA_ALIGN * EM3_ARENA_ALIGN;
        p->offset[i] = top;
        top += p->bytes[i];
    }
    p->arena_bytes = (top + EM3_ARENA_ALIGN - 1) / EM3_ARENA_ALIGN * EM3_ARENA_ALIGN;
    return p;
}

void em3_mem_plan_free(em3_mem_plan *p) {
    if (!p) return;
    free(p->offset);
    free(p->storage);
    free(p->bytes);
    free(p);
}

void em3_mem_plan_print(const em3_func *f, const em3_mem_plan *p, FILE *out) {
    fprintf(out, "# memory plan of @%s at max batch %lld: arena %lld bytes\n", f->name,
            (long long)p->max_batch, (long long)p->arena_bytes);
    fprintf(out, "# value  op                    bytes        offset\n");
    for (int i = 0; i < p->n; i++) {
        const em3_node *nd = &f->node[i];
        fprintf(out, "%%%-6d %-20s %12lld  ", i, em3_op_name(nd->op), (long long)p->bytes[i]);
        if (p->storage[i] != i)
            fprintf(out, "alias of %%%d\n", p->storage[i]);
        else if (p->offset[i] < 0)
            fprintf(out, "%s\n", nd->op == EM3_OP_INPUT ? "input" : "global");
        else
            fprintf(out, "%lld\n", (long long)p->offset[i]);
    }
}
