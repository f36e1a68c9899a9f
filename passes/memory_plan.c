/* passes/memory_plan.c — the arena layout of a function (see memory_plan.h).
 *
 * Values are grouped by storage: a reshape shares its operand's, an optimizer update writes
 * its parameter's (a global), and an op flagged in-place in ops.def takes operand 0's buffer
 * when that buffer dies at the op and has its size. Each group lives from its first
 * definition to its last use (outputs live to the end); groups are then placed largest first
 * at the lowest offset that no group alive at the same time overlaps ("greedy by size", as
 * TFLite's planner). Forward and backward are one function, so activations kept for the
 * backward pass are planned together with everything else. With reuse off every group gets
 * its own region: the layout changes, the arithmetic does not. */
#include "memory_plan.h"

#include <stdlib.h>
#include <string.h>

static int64_t align(int64_t x) { return (x + EM3_ARENA_ALIGN - 1) / EM3_ARENA_ALIGN * EM3_ARENA_ALIGN; }

/* Workspace a node needs while it runs: lora_matmul keeps x·a ([rows, rank], small) there. */
static int64_t scratch_bytes(const em3_func *f, const em3_node *n, const int64_t *sym) {
    if (n->op != EM3_OP_LORA_MATMUL) return 0;
    const em3_type *x = &f->node[n->in[0]].type, *a = &f->node[n->in[2]].type;
    return em3_type_numel_at(x, sym) / x->dim[x->rank - 1] * a->dim[1] * 4;
}

static bool external(const em3_node *n) { return n->op == EM3_OP_INPUT || n->op == EM3_OP_PARAM; }

/* Whether node i may write its result over operand 0's storage s. */
static bool can_take(const em3_func *f, const em3_mem_plan *p, const int *group_end, int i, int s) {
    const em3_node *n = &f->node[i];
    if (!(em3_op_flags(n->op) & EM3_OPF_INPLACE) || n->op == EM3_OP_RESHAPE) return false;
    if (external(&f->node[s]) || group_end[s] != i || p->bytes[s] != p->bytes[i]) return false;
    if (!em3_type_eq(&f->node[n->in[0]].type, &n->type)) return false; /* read and written alike */
    for (int k = 1; k < n->n_in; k++)
        if (p->storage[n->in[k]] == s) return false; /* another operand reads it differently */
    return true;
}

typedef struct {
    int id;
    int64_t start, end, bytes;
} region;

static int by_size(const void *a, const void *b) {
    const region *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? 1 : -1;
    return x->id - y->id;
}

em3_mem_plan *em3_mem_plan_create(const em3_func *f, int64_t max_batch, bool reuse) {
    em3_mem_plan *p = em3_xcalloc(1, sizeof(*p));
    int n = f->n_node, cap = n ? n : 1;
    p->n = n;
    p->max_batch = max_batch;
    p->offset = em3_xmalloc(sizeof(int64_t) * (size_t)cap);
    p->storage = em3_xmalloc(sizeof(int) * (size_t)cap);
    p->bytes = em3_xmalloc(sizeof(int64_t) * (size_t)cap);
    p->scratch_offset = em3_xcalloc((size_t)cap, sizeof(int64_t));
    p->scratch_bytes = em3_xcalloc((size_t)cap, sizeof(int64_t));
    int *last = em3_xmalloc(sizeof(int) * (size_t)cap), *group_end = em3_xmalloc(sizeof(int) * (size_t)cap);
    for (int i = 0; i < n; i++) {
        last[i] = i;
        for (int k = 0; k < f->node[i].n_in; k++) last[f->node[i].in[k]] = i;
    }
    for (int i = 0; i < f->n_out; i++) last[f->out[i].value] = n;

    int64_t sym[EM3_MAX_SYMBOLS]; /* every Us at its bound */
    em3_func_symbols(f, max_batch, sym);
    for (int i = 0; i < n; i++) {
        const em3_node *nd = &f->node[i];
        p->bytes[i] = em3_type_numel_at(&nd->type, sym) * 4; /* f32 and i32 */
        p->storage[i] = i;
        group_end[i] = last[i];
        bool alias = nd->op == EM3_OP_RESHAPE || (em3_op_flags(nd->op) & EM3_OPF_SIDE_EFFECT);
        if (!alias && reuse && nd->n_in > 0 && can_take(f, p, group_end, i, p->storage[nd->in[0]])) alias = true;
        if (alias) {
            int s = p->storage[nd->in[0]];
            p->storage[i] = s;
            if (last[i] > group_end[s]) group_end[s] = last[i];
        }
        p->scratch_bytes[i] = scratch_bytes(f, nd, sym);
    }

    /* one region per arena group and per scratch */
    region *r = em3_xmalloc(sizeof(region) * (size_t)(2 * cap));
    int nr = 0;
    for (int i = 0; i < n; i++) {
        p->offset[i] = -1;
        if (p->storage[i] == i && !external(&f->node[i]))
            r[nr++] = (region){i, i, group_end[i], align(p->bytes[i])};
        if (p->scratch_bytes[i] > 0) r[nr++] = (region){n + i, i, i, align(p->scratch_bytes[i])};
    }
    int64_t top = 0;
    if (!reuse) {
        for (int k = 0; k < nr; k++) {
            int64_t *at = r[k].id < n ? &p->offset[r[k].id] : &p->scratch_offset[r[k].id - n];
            *at = top;
            top += r[k].bytes;
        }
    } else {
        qsort(r, (size_t)nr, sizeof(region), by_size);
        int64_t *placed = em3_xmalloc(sizeof(int64_t) * (size_t)(nr ? nr : 1));
        for (int k = 0; k < nr; k++) {
            /* the lowest offset clear of every placed region alive at the same time: try 0 and
               the end of each such region, smallest first */
            int64_t best = -1;
            for (int c = -1; c < k; c++) {
                int64_t cand = c < 0 ? 0 : placed[c] + r[c].bytes;
                if (c >= 0 && (r[c].end < r[k].start || r[k].end < r[c].start)) continue;
                if (best >= 0 && cand >= best) continue;
                bool clear = true;
                for (int o = 0; o < k && clear; o++)
                    clear = r[o].end < r[k].start || r[k].end < r[o].start || placed[o] + r[o].bytes <= cand ||
                            cand + r[k].bytes <= placed[o];
                if (clear) best = cand;
            }
            placed[k] = best;
            int64_t *at = r[k].id < n ? &p->offset[r[k].id] : &p->scratch_offset[r[k].id - n];
            *at = best;
            if (best + r[k].bytes > top) top = best + r[k].bytes;
        }
        free(placed);
    }
    for (int i = 0; i < n; i++)
        if (p->storage[i] != i) p->offset[i] = p->offset[p->storage[i]];
    p->arena_bytes = align(top);
    free(r);
    free(last);
    free(group_end);
    return p;
}

void em3_mem_plan_free(em3_mem_plan *p) {
    if (!p) return;
    free(p->offset);
    free(p->storage);
    free(p->bytes);
    free(p->scratch_offset);
    free(p->scratch_bytes);
    free(p);
}

void em3_mem_plan_print(const em3_func *f, const em3_mem_plan *p, FILE *out) {
    fprintf(out, "# memory plan of @%s at max batch %lld: arena %lld bytes\n", f->name,
            (long long)p->max_batch, (long long)p->arena_bytes);
    fprintf(out, "# value  op                    bytes        offset  storage\n");
    for (int i = 0; i < p->n; i++) {
        const em3_node *nd = &f->node[i];
        fprintf(out, "%%%-6d %-20s %12lld  ", i, em3_op_name(nd->op), (long long)p->bytes[i]);
        if (external(nd))
            fprintf(out, "%12s  %s\n", "-", nd->op == EM3_OP_INPUT ? "input" : "global");
        else if (p->storage[i] != i)
            fprintf(out, "%12lld  shares %%%d\n", (long long)p->offset[i], p->storage[i]);
        else
            fprintf(out, "%12lld  own\n", (long long)p->offset[i]);
        if (p->scratch_bytes[i] > 0)
            fprintf(out, "        %-20s %12lld  %12lld  scratch of %%%d\n", "", (long long)p->scratch_bytes[i],
                    (long long)p->scratch_offset[i], i);
    }
}
