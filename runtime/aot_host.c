/* runtime/aot_host.c — model instances of AOT-built shared objects (see aot_host.h): storage,
 * the call of a compiled function through its frame, batch chunks, data errors as messages,
 * and weights in safetensors. Nothing here may abort on a caller's mistake: a serving process
 * gets a message back for every bad argument, id or file. */
#include "aot_host.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "init.h"
#include "safetensors.h"

struct em3_host {
    const em3_host_model *m;
    void **global; /* per global: 64-byte aligned storage */
    void **arena;  /* per function */
    int64_t step;  /* train steps taken (opt.step of the next one is step + 1) */
};

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return 1;
}

static bool has_batch(const em3_tensor_info *t) {
    for (int d = 0; d < t->rank; d++)
        if (t->shape[d] < 0) return true;
    return false;
}

/* Elements with B = batch. */
static int64_t numel(const em3_tensor_info *t, int64_t batch) {
    int64_t n = 1;
    for (int d = 0; d < t->rank; d++) n *= t->shape[d] < 0 ? -t->shape[d] * batch : t->shape[d];
    return n;
}

/* Where row `row` of a tensor starts, in bytes (0 for a tensor without B). Valid when B is
 * only in dimension 0, which is what makes a batch splittable. */
static int64_t row_offset(const em3_tensor_info *t, int64_t row) { return has_batch(t) ? 4 * row * numel(t, 1) : 0; }

static bool splittable(const em3_tensor_info *t, int n) {
    for (int k = 0; k < n; k++)
        for (int d = 1; d < t[k].rank; d++)
            if (t[k].shape[d] < 0) return false;
    return true;
}

static void *alloc64(int64_t bytes) {
    size_t n = (size_t)((bytes + 63) / 64 * 64);
    return aligned_alloc(64, n ? n : 64);
}

em3_host *em3_host_create(const em3_host_model *m, uint64_t seed) {
    em3_host *h = calloc(1, sizeof(*h));
    if (!h) return NULL;
    h->m = m;
    h->global = calloc((size_t)m->n_globals + 1, sizeof(void *));
    h->arena = calloc((size_t)m->n_funcs + 1, sizeof(void *));
    bool ok = h->global && h->arena;
    for (int i = 0; ok && i < m->n_globals; i++) {
        const em3_host_global *g = &m->globals[i];
        int64_t bytes = 4 * numel(&g->t, 1);
        ok = (h->global[i] = alloc64(bytes)) != NULL;
        /* i32 globals are data tables: zero until set_table or load_weights fills them */
        if (ok && g->t.dtype == EM3_MODEL_F32 && g->kind != EM3_GLOBAL_DATA)
            em3_init_fill(g->init, g->t.shape, g->t.rank, g->t.name, seed, h->global[i], sizeof(float));
        else if (ok)
            memset(h->global[i], 0, (size_t)bytes);
    }
    if (!ok) {
        em3_host_free(h);
        return NULL;
    }
    return h;
}

void em3_host_free(em3_host *h) {
    if (!h) return;
    for (int i = 0; h->global && i < h->m->n_globals; i++) free(h->global[i]);
    for (int i = 0; h->arena && i < h->m->n_funcs; i++) free(h->arena[i]);
    free(h->global);
    free(h->arena);
    free(h);
}

/* "at row 3, position 7" (the position only for inputs with several ids per row). */
static void where(char *buf, size_t n, const em3_tensor_info *t, int64_t index, int64_t first_row) {
    int64_t per_row = numel(t, 1);
    if (!has_batch(t) || per_row < 1)
        snprintf(buf, n, "at position %" PRId64, index);
    else if (per_row == 1)
        snprintf(buf, n, "at row %" PRId64, first_row + index);
    else
        snprintf(buf, n, "at row %" PRId64 ", position %" PRId64, first_row + index / per_row, index % per_row);
}

/* Ids outside a declared vocabulary, found before any kernel runs so that the message can
 * name the input even where the ids reach a table only after other ops. */
static int check_vocab(const em3_host_func *f, int64_t batch, const void *const *inputs, char *err, size_t errlen) {
    for (int k = 0; k < f->n_inputs; k++) {
        const em3_tensor_info *t = &f->inputs[k];
        if (t->dtype != EM3_MODEL_I32 || t->vocab <= 0) continue;
        const int32_t *ids = inputs[k];
        int64_t n = numel(t, batch);
        for (int64_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= t->vocab) {
                char at[96];
                where(at, sizeof at, t, i, 0);
                return fail(err, errlen, "%s: input '%s': id %" PRId32 " %s is outside its vocabulary (0 .. %" PRId64 ")",
                            f->name, t->name, ids[i], at, t->vocab - 1);
            }
    }
    return 0;
}

/* The message for a kernel's report of a bad id (em3_frame err_*) in the chunk of `rows` rows
 * from `first_row`. Kernels of the same signature are shared between nodes, so err_node may
 * name another node of the same kind; for ids that come straight from the caller the failing
 * node is found again instead: kernels run in node order and stop at the first bad id, so it
 * is the first such node with an id outside its table. */
static int data_error(const em3_host_func *f, const em3_frame *fr, const void *const *inputs, int64_t first_row,
                      int64_t rows, char *err, size_t errlen) {
    const em3_host_fault *x = NULL;
    int64_t index = fr->err_index, value = fr->err_value;
    for (int i = 0; i < f->n_faults && !x; i++)
        if (f->faults[i].node == fr->err_node) x = &f->faults[i];
    if (x && x->ids_input >= 0)
        for (int i = 0; i < f->n_faults; i++) {
            const em3_host_fault *y = &f->faults[i];
            if (y->ids_input < 0) continue;
            const em3_tensor_info *t = &f->inputs[y->ids_input];
            const int32_t *ids = (const int32_t *)((const char *)inputs[y->ids_input] + row_offset(t, first_row));
            int64_t n = numel(t, rows), k = 0;
            while (k < n && ids[k] >= 0 && ids[k] < y->rows) k++;
            if (k < n) {
                x = y, index = k, value = ids[k];
                break;
            }
        }
    if (!x)
        return fail(err, errlen, "%s: value %%%" PRId32 ": id %" PRId64 " at position %" PRId64 " is out of range",
                    f->name, fr->err_node, value, index);
    char at[96] = "";
    if (x->ids_input >= 0 && index >= 0) {
        at[0] = ' ';
        where(at + 1, sizeof at - 1, &f->inputs[x->ids_input], index, first_row);
    }
    return fail(err, errlen, "%s: %s: id %" PRId64 "%s is outside table '%s' (%" PRId64 " rows)", f->name, x->ids,
                value, at, x->table, x->rows);
}

int em3_host_run(em3_host *h, int fi, int64_t batch, const void *const *inputs, void *const *outputs,
                 float lr, char *err, size_t errlen) {
    if (!h) return fail(err, errlen, "no model (NULL)");
    const em3_host_func *f = &h->m->funcs[fi];
    bool optimizer = false;
    for (int s = 0; s < f->n_slots; s++) optimizer |= f->slots[s].role != EM3_HOST_IN_CALLER;
    if (batch < 0 || (batch == 0 && optimizer))
        return fail(err, errlen, "%s: batch %" PRId64 ": needs at least one row", f->name, batch);
    if (batch == 0) return 0;
    if (f->n_inputs && !inputs) return fail(err, errlen, "%s: no inputs (NULL)", f->name);
    for (int k = 0; k < f->n_inputs; k++)
        if (!inputs[k]) return fail(err, errlen, "%s: input '%s' is NULL", f->name, f->inputs[k].name);
    int64_t max = h->m->info.max_batch;
    if (batch > max && optimizer)
        return fail(err, errlen, "%s: batch %" PRId64 " exceeds the maximum batch %" PRId64 " the model was built for "
                    "(one train step is one batch; rebuild with a larger --max-batch)", f->name, batch, max);
    if (batch > max && !(splittable(f->inputs, f->n_inputs) && splittable(f->outputs, f->n_outputs)))
        return fail(err, errlen, "%s: batch %" PRId64 " exceeds the maximum batch %" PRId64 " and cannot be split "
                    "(the batch dimension is not the first of every input and output)", f->name, batch, max);
    if (check_vocab(f, batch, inputs, err, errlen)) return 1;
    const void *in[f->n_slots + 1];
    const void *out[f->n_outputs + 1];
    /* arenas are allocated on first use: a serving process never pays for the train step's */
    if (!h->arena[fi] && !(h->arena[fi] = alloc64(f->arena_bytes)))
        return fail(err, errlen, "%s: out of memory: its workspace takes %" PRId64 " bytes at the maximum batch %" PRId64
                    " (rebuild with a smaller --max-batch)", f->name, f->arena_bytes, max);
    float step = (float)(h->step + 1);
    for (int64_t first = 0; first < batch; first += max) {
        int64_t rows = batch - first < max ? batch - first : max;
        float row0 = (float)first;
        for (int s = 0; s < f->n_slots; s++) {
            const em3_host_slot *sl = &f->slots[s];
            if (sl->role == EM3_HOST_IN_CALLER)
                in[s] = (const char *)inputs[sl->index] + row_offset(&f->inputs[sl->index], first);
            else
                in[s] = sl->role == EM3_HOST_IN_STEP ? &step : sl->role == EM3_HOST_IN_ROW0 ? (const void *)&row0 : &lr;
        }
        em3_frame fr = {.batch = rows, .arena = h->arena[fi], .global = h->global, .input = in, .output = out};
        if (f->fn(&fr)) return data_error(f, &fr, inputs, first, rows, err, errlen);
        for (int k = 0; outputs && k < f->n_outputs; k++)
            if (outputs[k])
                memcpy((char *)outputs[k] + row_offset(&f->outputs[k], first), out[k],
                       (size_t)(4 * numel(&f->outputs[k], rows)));
    }
    if (optimizer) h->step++;
    return 0;
}

/* ---- weights ------------------------------------------------------------------------------ */

static bool listed(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return true;
        p = comma ? comma + 1 : NULL;
    }
    return false;
}

static void shape_str(char *buf, size_t n, const int64_t *shape, int rank) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < rank && k < n; d++) k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static int find_global(const em3_host_model *m, const char *name) {
    for (int i = 0; i < m->n_globals; i++)
        if (!strcmp(m->globals[i].t.name, name)) return i;
    return -1;
}

/* Whether every tensor of `f` may go into the model; the global of each in src[i]. */
static int check_file(const em3_host *h, const em3_st_file *f, const char *path, int *src, char *err, size_t errlen) {
    const em3_host_model *m = h->m;
    const char *state = em3_st_meta_find(f, "em3.optimizer_state");
    for (int i = 0; i < m->n_globals; i++) src[i] = -1;
    for (int i = 0; i < em3_st_count(f); i++) {
        const em3_st_tensor *t = em3_st_at(f, i);
        int g = find_global(m, t->name);
        if (g < 0 && listed(state, t->name)) continue; /* a training build's optimizer state */
        if (g < 0)
            return fail(err, errlen, "%s: tensor '%s' is not a parameter, table or state of model %s", path, t->name,
                        m->info.model);
        const em3_tensor_info *want = &m->globals[g].t;
        bool same = t->dtype == want->dtype && t->rank == want->rank;
        for (int d = 0; same && d < t->rank; d++) same = t->shape[d] == want->shape[d];
        if (!same) {
            char a[160], b[160];
            shape_str(a, sizeof a, t->shape, t->rank);
            shape_str(b, sizeof b, want->shape, want->rank);
            return fail(err, errlen, "%s: tensor '%s' is %s%s, model %s expects %s%s", path, t->name,
                        em3_st_dtype_name(t->dtype), a, m->info.model, em3_st_dtype_name(want->dtype), b);
        }
        src[g] = i;
    }
    for (int g = 0; g < m->n_globals; g++) {
        em3_global_kind k = m->globals[g].kind;
        if (src[g] < 0 && (k == EM3_GLOBAL_PARAM || k == EM3_GLOBAL_FROZEN))
            return fail(err, errlen, "%s: tensor '%s' is missing (model %s needs every parameter)", path,
                        m->globals[g].t.name, m->info.model);
    }
    return 0;
}

int em3_host_load(em3_host *h, const char *path, char *err, size_t errlen) {
    if (!h || !path) return fail(err, errlen, "load_weights: no model or path (NULL)");
    em3_st_file *f = em3_st_read(path, err, errlen);
    if (!f) return 1;
    int *src = malloc(sizeof(int) * ((size_t)h->m->n_globals + 1));
    int rc = src ? check_file(h, f, path, src, err, errlen) : fail(err, errlen, "%s: out of memory", path);
    int64_t step = h->step;
    const char *s = em3_st_meta_find(f, "em3.step");
    if (!rc && s) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || *end || v < 0) rc = fail(err, errlen, "%s: metadata em3.step is '%s', not a step count", path, s);
        step = v;
    }
    for (int g = 0; !rc && g < h->m->n_globals; g++)
        if (src[g] >= 0) memcpy(h->global[g], em3_st_at(f, src[g])->data, (size_t)(4 * numel(&h->m->globals[g].t, 1)));
    if (!rc) h->step = step;
    free(src);
    em3_st_free(f);
    return rc;
}

int em3_host_save(const em3_host *h, const char *path, char *err, size_t errlen) {
    if (!h || !path) return fail(err, errlen, "save_weights: no model or path (NULL)");
    const em3_host_model *m = h->m;
    em3_st_tensor *t = calloc((size_t)m->n_globals + 1, sizeof(*t));
    size_t cap = 1;
    for (int g = 0; g < m->n_globals; g++) cap += strlen(m->globals[g].t.name) + 1;
    char *state = calloc(cap, 1);
    if (!t || !state) {
        free(t);
        free(state);
        return fail(err, errlen, "%s: out of memory", path);
    }
    for (int g = 0; g < m->n_globals; g++) {
        const em3_tensor_info *i = &m->globals[g].t;
        t[g] = (em3_st_tensor){.name = i->name, .dtype = i->dtype, .rank = i->rank, .data = h->global[g]};
        memcpy(t[g].shape, i->shape, sizeof i->shape);
        if (m->globals[g].kind == EM3_GLOBAL_STATE) {
            if (*state) strcat(state, ",");
            strcat(state, i->name);
        }
    }
    char step[32], abi[16];
    snprintf(step, sizeof step, "%" PRId64, h->step);
    snprintf(abi, sizeof abi, "%d", (int)m->info.abi_version);
    em3_st_meta meta[] = {{"em3.model", m->info.model}, {"em3.abi_version", abi}, {"em3.step", step},
                          {"em3.optimizer_state", state}};
    int rc = em3_st_write(path, t, m->n_globals, meta, *state ? 4 : 3, err, errlen) ? 0 : 1;
    free(t);
    free(state);
    return rc;
}

int em3_host_set_table(em3_host *h, const char *name, const void *data, int64_t n, char *err, size_t errlen) {
    if (!h || !name || !data) return fail(err, errlen, "set_table: no model, name or data (NULL)");
    int g = find_global(h->m, name);
    if (g < 0 || h->m->globals[g].kind != EM3_GLOBAL_DATA)
        return fail(err, errlen, "set_table: model %s has no data table '%s'%s", h->m->info.model, name,
                    g < 0 ? "" : " (it is a parameter: use load_weights)");
    const em3_tensor_info *t = &h->m->globals[g].t;
    if (n != numel(t, 1)) {
        char s[160];
        shape_str(s, sizeof s, t->shape, t->rank);
        return fail(err, errlen, "set_table: table '%s' is %s%s: %" PRId64 " elements, not %" PRId64, name,
                    em3_st_dtype_name(t->dtype), s, numel(t, 1), n);
    }
    memcpy(h->global[g], data, (size_t)(4 * n));
    return 0;
}

static const em3_host_func *func_named(const em3_host_model *m, const char *fn) {
    for (int i = 0; fn && i < m->n_funcs; i++)
        if (!strcmp(m->funcs[i].name, fn)) return &m->funcs[i];
    return NULL;
}

int em3_host_inputs(const em3_host_model *m, const char *fn, const em3_tensor_info **info) {
    const em3_host_func *f = func_named(m, fn);
    if (info) *info = f ? f->inputs : NULL;
    return f ? f->n_inputs : -1;
}

int em3_host_outputs(const em3_host_model *m, const char *fn, const em3_tensor_info **info) {
    const em3_host_func *f = func_named(m, fn);
    if (info) *info = f ? f->outputs : NULL;
    return f ? f->n_outputs : -1;
}
