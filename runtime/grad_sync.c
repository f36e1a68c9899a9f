/* runtime/grad_sync.c — combining a data-parallel step's gradients (see grad_sync.h).
 *
 * Dense gradients are packed, scaled by their shard's weight, into one flat buffer whose last
 * element is the weighted loss, so a single (bucketed) sum carries both. A table's (ids, rows)
 * pair is merged by id within its shard (repeated ids summed, ids in order of first
 * appearance) before it leaves the rank; every rank then merges all shards' pairs in shard
 * order, so @update receives each touched id once and every rank computes the same update.
 * Merging per shard, rather than per rank, keeps the order of the additions a function of the
 * shards alone: how they are spread over ranks does not change a bit. */
#include "grad_sync.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name; /* @update's input "grad.P" */
    int64_t off, n;   /* its place in the flat buffer */
} dense_grad;

typedef struct {
    const char *ids_name, *rows_name; /* "grad_ids.P", "grad_rows.P" (in @train and @update) */
    int64_t mult;       /* @update's pair holds mult × its batch rows */
    int64_t width;      /* floats per row */
    int64_t table_rows; /* rows of the table P */
    int32_t *slot;      /* per table row: its place in the merged list, or -1 */
    int32_t *ids;       /* the merged list: distinct ids in order of first appearance ... */
    float *rows;        /* ... and their summed rows */
    int64_t n, cap;
} sparse_grad;

struct em3_grad_sync {
    em3_comm *c;
    bool ordered;
    dense_grad *dense;
    int n_dense;
    int64_t total; /* floats in the flat buffer: every dense gradient, then the loss */
    float **part;  /* ordered: one flat buffer per shard added; otherwise part[0] accumulates */
    int n_part, cap_part;
    float *sum; /* the combined flat buffer */
    sparse_grad *sparse;
    int n_sparse;
    char *send; /* this rank's merged shard pairs, serialised */
    int64_t send_len, send_cap;
    void *recv; /* every rank's, in rank order */
    int64_t recv_cap, *counts;
    em3_comm_stats dense_cost, sparse_cost;
    int64_t steps;
};

em3_grad_sync *em3_grad_sync_create(em3_exec *x, em3_comm *c, bool ordered) {
    const em3_compiled_func *up = em3_exec_func(x, "update");
    EM3_ASSERT(up && em3_exec_func(x, "train"), "data-parallel training needs @train and @update");
    em3_grad_sync *g = em3_xcalloc(1, sizeof *g);
    g->c = c;
    g->ordered = ordered;
    g->dense = em3_xcalloc((size_t)up->n_inputs + 1, sizeof(dense_grad));
    g->sparse = em3_xcalloc((size_t)up->n_inputs + 1, sizeof(sparse_grad));
    const em3_module *m = em3_exec_module(x);
    for (int k = 0; k < up->n_inputs; k++) {
        const em3_node *in = up->inputs[k];
        const char *name = em3_node_s(in, "name");
        if (!strncmp(name, "grad.", 5)) {
            int64_t n = em3_type_numel(&in->type, 1);
            g->dense[g->n_dense++] = (dense_grad){name, g->total, n};
            g->total += n;
        } else if (!strncmp(name, "grad_ids.", 9)) {
            sparse_grad *s = &g->sparse[g->n_sparse++];
            s->ids_name = name;
            s->rows_name = em3_arena_printf(m->arena, "grad_rows.%s", name + 9);
            int gi = em3_module_find_global(m, name + 9);
            EM3_ASSERT(gi >= 0 && em3_dim_has_batch(in->type.dim[0]), "%s: no table, or not batch-sized", name);
            const em3_type *t = &m->global[gi].type;
            s->mult = -in->type.dim[0];
            s->table_rows = t->dim[0];
            s->width = em3_type_numel(t, 1) / t->dim[0];
            s->slot = em3_xmalloc(sizeof(int32_t) * (size_t)s->table_rows);
            memset(s->slot, 0xff, sizeof(int32_t) * (size_t)s->table_rows);
        } else {
            EM3_ASSERT(!strncmp(name, "grad_rows.", 10) || !strncmp(name, "opt.", 4), "@update input %s", name);
        }
    }
    g->total++; /* the loss */
    g->sum = em3_xmalloc(sizeof(float) * (size_t)g->total);
    g->counts = em3_xmalloc(sizeof(int64_t) * (size_t)em3_comm_size(c));
    return g;
}

void em3_grad_sync_free(em3_grad_sync *g) {
    if (!g) return;
    for (int i = 0; i < g->cap_part; i++) free(g->part[i]);
    for (int i = 0; i < g->n_sparse; i++) {
        free(g->sparse[i].slot);
        free(g->sparse[i].ids);
        free(g->sparse[i].rows);
    }
    free(g->part);
    free(g->sum);
    free(g->dense);
    free(g->sparse);
    free(g->send);
    free(g->recv);
    free(g->counts);
    free(g);
}

void em3_grad_sync_begin(em3_grad_sync *g) {
    g->n_part = 0;
    g->send_len = 0;
    for (int i = 0; i < g->n_sparse; i++) g->sparse[i].n = 0; /* the last step's list; slots are clear */
}

/* Room for n more merged rows. */
static void reserve_rows(sparse_grad *s, int64_t n) {
    if (s->n + n <= s->cap) return;
    s->cap = (s->n + n) * 2;
    s->ids = em3_xrealloc(s->ids, sizeof(int32_t) * (size_t)s->cap);
    s->rows = em3_xrealloc(s->rows, sizeof(float) * (size_t)(s->cap * s->width));
}

/* Adds n pairs (id, w·row) to the merged list, in order: a new id takes the next place, a
 * repeated one is added to its place. */
static void merge(sparse_grad *s, const int32_t *ids, const float *rows, int64_t n, float w) {
    reserve_rows(s, n);
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        EM3_ASSERT(id >= 0 && id < s->table_rows, "%s: id %d outside the table", s->ids_name, id);
        const float *r = rows + i * s->width;
        if (s->slot[id] < 0) {
            s->slot[id] = (int32_t)s->n;
            s->ids[s->n] = id;
            float *dst = s->rows + s->n++ * s->width;
            for (int64_t k = 0; k < s->width; k++) dst[k] = w * r[k];
        } else {
            float *dst = s->rows + (int64_t)s->slot[id] * s->width;
            for (int64_t k = 0; k < s->width; k++) dst[k] += w * r[k];
        }
    }
}

/* Forgets the places of the merged ids: every slot is -1 again. */
static void clear_slots(sparse_grad *s) {
    for (int64_t i = 0; i < s->n; i++) s->slot[s->ids[i]] = -1;
}

static void append(em3_grad_sync *g, const void *p, int64_t bytes) {
    if (g->send_len + bytes > g->send_cap) {
        g->send_cap = (g->send_len + bytes) * 2;
        g->send = em3_xrealloc(g->send, (size_t)g->send_cap);
    }
    memcpy(g->send + g->send_len, p, (size_t)bytes);
    g->send_len += bytes;
}

void em3_grad_sync_add(em3_grad_sync *g, const em3_exec *from, int64_t rows, float weight) {
    /* dense: into a fresh buffer per shard (ordered), or accumulated */
    int p = g->ordered ? g->n_part : 0;
    bool fresh = g->ordered || g->n_part == 0;
    if (p == g->cap_part) {
        g->part = em3_xrealloc(g->part, sizeof(float *) * (size_t)(g->cap_part + 1));
        g->part[g->cap_part++] = em3_xmalloc(sizeof(float) * (size_t)g->total);
    }
    float *buf = g->part[p];
    for (int i = 0; i < g->n_dense; i++) {
        em3_type t;
        const float *v = em3_exec_output(from, "train", g->dense[i].name, &t);
        EM3_ASSERT(v && em3_type_numel(&t, rows) == g->dense[i].n, "@train's %s", g->dense[i].name);
        float *dst = buf + g->dense[i].off;
        for (int64_t k = 0; k < g->dense[i].n; k++) dst[k] = fresh ? weight * v[k] : dst[k] + weight * v[k];
    }
    const float *loss = em3_exec_output(from, "train", "loss", NULL);
    EM3_ASSERT(loss, "@train has no loss");
    buf[g->total - 1] = fresh ? weight * *loss : buf[g->total - 1] + weight * *loss;
    g->n_part++;
    /* sparse: merged within the shard, serialised as (count, ids, rows) per table */
    for (int i = 0; i < g->n_sparse; i++) {
        sparse_grad *s = &g->sparse[i];
        em3_type t;
        const int32_t *ids = em3_exec_output(from, "train", s->ids_name, &t);
        const float *r = em3_exec_output(from, "train", s->rows_name, NULL);
        EM3_ASSERT(ids && r, "@train has no %s", s->ids_name);
        merge(s, ids, r, em3_type_numel(&t, rows), weight);
        append(g, &s->n, sizeof s->n);
        append(g, s->ids, sizeof(int32_t) * s->n);
        append(g, s->rows, (int64_t)sizeof(float) * s->n * s->width);
        clear_slots(s);
        s->n = 0;
    }
}

/* Merges every shard's pairs, in shard order: the ranks' serialised shards, in rank order. */
static void merge_shards(em3_grad_sync *g, const char *p, int64_t len) {
    for (const char *end = p + len; p < end;) {
        for (int i = 0; i < g->n_sparse; i++) {
            sparse_grad *s = &g->sparse[i];
            int64_t n;
            memcpy(&n, p, sizeof n);
            p += sizeof n;
            const int32_t *ids = (const int32_t *)p;
            const float *rows = (const float *)(p + sizeof(int32_t) * n);
            p += (int64_t)sizeof(int32_t) * n + (int64_t)sizeof(float) * n * s->width;
            merge(s, ids, rows, n, 1.0f);
        }
    }
}

/* Adds what the communicator did since `before` to *cost. */
static void charge(const em3_grad_sync *g, em3_comm_stats before, em3_comm_stats *cost) {
    em3_comm_stats now = em3_comm_stats_get(g->c);
    cost->bytes += now.bytes - before.bytes;
    cost->calls += now.calls - before.calls;
    cost->seconds += now.seconds - before.seconds;
}

float em3_grad_sync_combine(em3_grad_sync *g, int64_t *update_batch) {
    em3_comm_stats before = em3_comm_stats_get(g->c);
    g->steps++;
    if (g->ordered) {
        em3_comm_sum_ordered_f32(g->c, g->sum, (const float *const *)g->part, g->n_part, g->total);
    } else {
        if (g->n_part) memcpy(g->sum, g->part[0], sizeof(float) * (size_t)g->total);
        else memset(g->sum, 0, sizeof(float) * (size_t)g->total);
        em3_comm_sum_f32(g->c, g->sum, g->total);
    }
    charge(g, before, &g->dense_cost);
    *update_batch = 1;
    if (g->n_sparse == 0) return g->sum[g->total - 1];
    before = em3_comm_stats_get(g->c);
    int64_t len = em3_comm_allgather(g->c, g->send, g->send_len, &g->recv, &g->recv_cap, g->counts);
    charge(g, before, &g->sparse_cost);
    merge_shards(g, g->recv, len);
    /* @update's pairs are [mult × batch]: the smallest batch every merged list fits in, the
     * rest padded with (the first id, a zero row), which merging turns into no change */
    for (int i = 0; i < g->n_sparse; i++) {
        const sparse_grad *s = &g->sparse[i];
        EM3_ASSERT(s->n > 0, "%s: no rows in the global batch", s->ids_name);
        int64_t b = (s->n + s->mult - 1) / s->mult;
        if (b > *update_batch) *update_batch = b;
    }
    for (int i = 0; i < g->n_sparse; i++) {
        sparse_grad *s = &g->sparse[i];
        clear_slots(s); /* the list is final */
        int64_t want = s->mult * *update_batch;
        reserve_rows(s, want - s->n);
        for (int64_t k = s->n; k < want; k++) s->ids[k] = s->ids[0];
        memset(s->rows + s->n * s->width, 0, sizeof(float) * (size_t)((want - s->n) * s->width));
    }
    return g->sum[g->total - 1];
}

void em3_grad_sync_stats(const em3_grad_sync *g, em3_comm_stats *dense, em3_comm_stats *sparse, int64_t *steps) {
    *dense = g->dense_cost;
    *sparse = g->sparse_cost;
    *steps = g->steps;
}

const void *em3_grad_sync_input(const em3_grad_sync *g, const char *name) {
    for (int i = 0; i < g->n_dense; i++)
        if (!strcmp(g->dense[i].name, name)) return g->sum + g->dense[i].off;
    for (int i = 0; i < g->n_sparse; i++) {
        if (!strcmp(g->sparse[i].ids_name, name)) return g->sparse[i].ids;
        if (!strcmp(g->sparse[i].rows_name, name)) return g->sparse[i].rows;
    }
    return NULL;
}
