/* passes/memory_plan.h — where every value of a function lives when it runs: an input or a
 * global (external), an alias of another value's storage (reshape, in-place updates), or a
 * region of one arena planned for a maximum batch size. Code generation lowers buffers to
 * these offsets; the runtime allocates the arena once per compiled function. */
#ifndef EM3_MEMORY_PLAN_H
#define EM3_MEMORY_PLAN_H

#include <stdio.h>

#include "ir/ir.h"

#define EM3_ARENA_ALIGN 64

typedef struct {
    int n;
    int64_t max_batch;
    int64_t *offset;  /* per value: byte offset in the arena; -1 when external */
    int *storage;     /* per value: the value whose storage it is (itself unless an alias) */
    int64_t *bytes;   /* per value: bytes at max_batch */
    int64_t *scratch_offset, *scratch_bytes; /* per node: workspace while it runs (0 bytes: none) */
    int64_t arena_bytes;
} em3_mem_plan;

em3_mem_plan *em3_mem_plan_create(const em3_func *f, int64_t max_batch, bool reuse);
void em3_mem_plan_free(em3_mem_plan *p);
/* One line per value: id, op, bytes, offset or where it lives. */
void em3_mem_plan_print(const em3_func *f, const em3_mem_plan *p, FILE *out);

#endif
