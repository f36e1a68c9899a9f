/* runtime/exec.c — see exec.h. */
#include "exec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "init.h"

typedef struct {
    em3_compiled_func desc; /* a copy: callers may free theirs */
    const em3_compiled_func *cf;
    void *arena;
    const void **output;
    const void **input;
} exec_func;

struct em3_exec {
    const em3_module *m;
    void **global;
    bool *owned; /* storage allocated here (not a bound table) */
    em3_graph **graph; /* per graph global: its matrices, built by em3_exec_bind_dataset */
    exec_func *fn;
    int n_fn;
    bool worker; /* em3_exec_worker: globals and graphs are its parent's */
};

static void *aligned(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) {
        fputs("em3: out of memory\n", stderr);
        abort();
    }
    return p;
}

/* The functions' descriptors (copied) and each one's arena and argument arrays. */
static void set_funcs(em3_exec *x, const em3_compiled_func *funcs, int n_funcs) {
    x->n_fn = n_funcs;
    x->fn = em3_xcalloc((size_t)(n_funcs ? n_funcs : 1), sizeof(exec_func));
    for (int i = 0; i < n_funcs; i++) {
        x->fn[i].desc = funcs[i];
        x->fn[i].cf = &x->fn[i].desc;
        /* a cache function's arena lives only while em3_exec_precompute runs */
        if (strncmp(funcs[i].name, "precompute.", 11)) x->fn[i].arena = aligned((size_t)funcs[i].arena_bytes);
        x->fn[i].output = em3_xcalloc((size_t)(funcs[i].n_outputs + 1), sizeof(void *));
        x->fn[i].input = em3_xcalloc((size_t)(funcs[i].n_inputs + 1), sizeof(void *));
    }
}

em3_exec *em3_exec_create(const em3_module *m, const em3_compiled_func *funcs, int n_funcs,
                          uint64_t seed) {
    em3_exec *x = em3_xcalloc(1, sizeof(*x));
    x->m = m;
    x->global = em3_xcalloc((size_t)(m->n_global ? m->n_global : 1), sizeof(void *));
    x->owned = em3_xcalloc((size_t)(m->n_global ? m->n_global : 1), sizeof(bool));
    x->graph = em3_xcalloc((size_t)(m->n_global ? m->n_global : 1), sizeof(em3_graph *));
    for (int g = 0; g < m->n_global; g++) {
        if (m->global[g].kind == EM3_GLOBAL_GRAPH) continue; /* storage: the graph's view, at binding */
        size_t bytes = (size_t)em3_type_numel(&m->global[g].type, 1) * 4;
        x->global[g] = aligned(bytes);
        x->owned[g] = true;
        memset(x->global[g], 0, bytes);
        if (m->global[g].kind != EM3_GLOBAL_DATA) em3_init_global(&m->global[g], seed, x->global[g], sizeof(float));
    }
    set_funcs(x, funcs, n_funcs);
    return x;
}

em3_exec *em3_exec_worker(em3_exec *x) {
    EM3_ASSERT(!x->worker, "a worker of a worker");
    em3_exec *w = em3_xcalloc(1, sizeof(*w));
    *w = (em3_exec){.m = x->m, .global = x->global, .graph = x->graph, .worker = true};
    em3_compiled_func *fs = em3_xcalloc((size_t)(x->n_fn ? x->n_fn : 1), sizeof(*fs));
    for (int i = 0; i < x->n_fn; i++) fs[i] = x->fn[i].desc;
    set_funcs(w, fs, x->n_fn);
    free(fs);
    return w;
}

void em3_exec_free(em3_exec *x) {
    if (!x) return;
    for (int g = 0; g < x->m->n_global && !x->worker; g++) {
        if (x->owned[g]) free(x->global[g]);
        em3_graph_free(x->graph[g]);
    }
    for (int i = 0; i < x->n_fn; i++) {
        free(x->fn[i].arena);
        free(x->fn[i].output);
        free(x->fn[i].input);
    }
    free(x->fn);
    if (!x->worker) {
        free(x->global);
        free(x->owned);
        free(x->graph);
    }
    free(x);
}

const em3_module *em3_exec_module(const em3_exec *x) { return x->m; }

void *em3_exec_global(em3_exec *x, const char *name) {
    int g = em3_module_find_global(x->m, name);
    return g < 0 ? NULL : x->global[g];
}

bool em3_exec_bind_table(em3_exec *x, const char *name, const em3_column *t, char *err,
                         size_t errlen) {
    int g = em3_module_find_global(x->m, name);
    EM3_ASSERT(g >= 0 && x->m->global[g].kind == EM3_GLOBAL_DATA, "%s is not a data global", name);
    const em3_type *want = &x->m->global[g].type;
    em3_type have = em3_type_make(t->dtype, t->rank + 1, (int64_t[]){t->rows, t->dim[0], t->dim[1], t->dim[2], t->dim[3]});
    if (!em3_type_eq(want, &have)) {
        char a[EM3_TYPE_STR_MAX], b[EM3_TYPE_STR_MAX];
        snprintf(err, errlen,
                 "data table %s is %s in the dataset but the model declares %s (set the model's "
                 "size constants to the dataset's with --set, e.g. items=%lld)",
                 name, em3_type_str(&have, a, sizeof a), em3_type_str(want, b, sizeof b), (long long)t->rows);
        return false;
    }
    if (x->owned[g]) free(x->global[g]);
    x->owned[g] = false;
    x->global[g] = (void *)t->data; /* read-only: compiled code never writes a data global */
    return true;
}

void em3_exec_bind_graph(em3_exec *x, const char *name, em3_graph *graph) {
    int g = em3_module_find_global(x->m, name);
    EM3_ASSERT(g >= 0 && x->m->global[g].kind == EM3_GLOBAL_GRAPH, "%s is not a graph global", name);
    const em3_rt_graph *v = em3_graph_view(graph);
    EM3_ASSERT(v->m.rows == x->m->global[g].type.dim[0] && v->m.cols == x->m->global[g].type.dim[1],
               "graph %s bound to a matrix of another shape", name);
    em3_graph_free(x->graph[g]);
    x->graph[g] = graph;
    x->global[g] = (void *)v; /* compiled code reads the view; the runtime switches what it shows */
}

void em3_exec_graph_phase(em3_exec *x, bool training, uint64_t seed, int64_t epoch) {
    for (int g = 0; g < x->m->n_global; g++) {
        if (!x->graph[g]) continue;
        if (training) em3_graph_train(x->graph[g], seed, epoch);
        else em3_graph_eval(x->graph[g]);
    }
}

bool em3_exec_bind_dataset(em3_exec *x, const em3_dataset *ds, char *err, size_t errlen) {
    for (int g = 0; g < x->m->n_global; g++) {
        if (x->m->global[g].kind == EM3_GLOBAL_GRAPH) {
            em3_graph *graph = em3_graph_build(&x->m->global[g], ds, err, errlen);
            if (!graph) return false;
            em3_exec_bind_graph(x, x->m->global[g].name, graph);
            continue;
        }
        if (x->m->global[g].kind != EM3_GLOBAL_DATA) continue;
        const em3_column *t = em3_dataset_find_table(ds, x->m->global[g].name);
        if (!t) {
            snprintf(err, errlen, "the model reads data table %s, which dataset %s does not have",
                     x->m->global[g].name, em3_dataset_name(ds));
            return false;
        }
        if (!em3_exec_bind_table(x, x->m->global[g].name, t, err, errlen)) return false;
    }
    return true;
}

static exec_func *find_func(const em3_exec *x, const char *name) {
    for (int i = 0; i < x->n_fn; i++)
        if (!strcmp(x->fn[i].cf->name, name)) return &x->fn[i];
    return NULL;
}

const em3_compiled_func *em3_exec_func(const em3_exec *x, const char *name) {
    exec_func *f = find_func(x, name);
    return f ? f->cf : NULL;
}

/* A frame's data error in words: which op, where in the model, which id. */
static void describe_error(const em3_exec *x, const exec_func *f, const em3_frame *fr, char *err,
                           size_t errlen) {
    const em3_func *irf = em3_module_find_func(x->m, f->cf->name);
    const em3_node *n = irf && fr->err_node >= 0 && fr->err_node < irf->n_node ? &irf->node[fr->err_node] : NULL;
    const char *what = n ? em3_op_name(n->op) : "an op";
    const char *ids = "";
    if (n && n->n_in > 1 && irf->node[n->in[1]].op == EM3_OP_INPUT) ids = irf->node[n->in[1]].attr[0].s;
    if (n && n->loc.file)
        snprintf(err, errlen, "%s:%d:%d: %s%s%s: id %lld at position %lld is outside the table",
                 n->loc.file, n->loc.line, n->loc.col, what, *ids ? " of input " : "", ids,
                 (long long)fr->err_value, (long long)fr->err_index);
    else
        snprintf(err, errlen, "%s %%%d%s%s: id %lld at position %lld is outside the table", what,
                 fr->err_node, *ids ? " of input " : "", ids, (long long)fr->err_value,
                 (long long)fr->err_index);
}

bool em3_exec_run(em3_exec *x, const char *func, int64_t batch, const em3_exec_input *in, int n_in,
                  char *err, size_t errlen) {
    exec_func *f = find_func(x, func);
    EM3_ASSERT(f, "no compiled function %s", func);
    for (int g = 0; g < x->m->n_global; g++)
        if (x->m->global[g].kind == EM3_GLOBAL_GRAPH && !x->graph[g]) {
            snprintf(err, errlen, "graph %s has no matrix: it is built from the dataset (bind one first)",
                     x->m->global[g].name);
            return false;
        }
    for (int k = 0; k < f->cf->n_inputs; k++) {
        const char *name = em3_node_s(f->cf->inputs[k], "name");
        f->input[k] = NULL;
        for (int i = 0; i < n_in && !f->input[k]; i++)
            if (!strcmp(in[i].name, name)) f->input[k] = in[i].data;
        if (!f->input[k]) {
            snprintf(err, errlen, "@%s needs input %s, which was not given", func, name);
            return false;
        }
    }
    em3_frame fr = {.batch = batch, .arena = f->arena, .global = x->global, .input = f->input,
                    .output = f->output, .err_node = -1};
    if (f->cf->fn(&fr)) {
        describe_error(x, f, &fr, err, errlen);
        return false;
    }
    return true;
}

const void *em3_exec_output(const em3_exec *x, const char *func, const char *name, em3_type *type) {
    exec_func *f = find_func(x, func);
    if (!f) return NULL;
    for (int k = 0; k < f->cf->n_outputs; k++)
        if (!strcmp(f->cf->outputs[k], name)) {
            if (type) *type = f->cf->output_types[k];
            return f->output[k];
        }
    return NULL;
}

bool em3_exec_precompute(em3_exec *x, char *err, size_t errlen) {
    for (int i = 0; i < x->n_fn; i++) {
        const em3_compiled_func *cf = x->fn[i].cf;
        if (strncmp(cf->name, "precompute.", 11)) continue;
        EM3_ASSERT(cf->n_inputs == 1 && cf->n_outputs == 1, "@%s: one id input, one output", cf->name);
        const em3_node *in = cf->inputs[0];
        int64_t vocab = em3_node_i(in, "vocab"), per_row = em3_type_numel(&in->type, 1);
        /* at most ~1024 ids per call: a smaller batch touches a proportionally smaller part of
           the arena planned for the maximum one, so the fill does not set the peak memory */
        int64_t rows = (vocab + per_row - 1) / per_row, chunk = 1024 / per_row;
        if (chunk < 1) chunk = 1;
        if (chunk > cf->max_batch) chunk = cf->max_batch;
        x->fn[i].arena = aligned((size_t)cf->arena_bytes);
        float *table = em3_exec_global(x, cf->name + 11);
        EM3_ASSERT(table, "no cache table %s", cf->name + 11);
        int64_t width = em3_type_numel(&cf->output_types[0], 1) / per_row;
        int32_t *ids = em3_xmalloc(sizeof(int32_t) * (size_t)(chunk * per_row));
        bool ok = true;
        for (int64_t at = 0; ok && at < rows; at += chunk) {
            int64_t n = rows - at < chunk ? rows - at : chunk, first = at * per_row;
            for (int64_t k = 0; k < n * per_row; k++) ids[k] = first + k < vocab ? (int32_t)(first + k) : 0;
            em3_exec_input arg = {em3_node_s(in, "name"), ids};
            ok = em3_exec_run(x, cf->name, n, &arg, 1, err, errlen);
            if (!ok) break;
            const float *v = em3_exec_output(x, cf->name, cf->outputs[0], NULL);
            int64_t valid = vocab - first < n * per_row ? vocab - first : n * per_row;
            memcpy(table + first * width, v, sizeof(float) * (size_t)(valid * width));
        }
        free(ids);
        free(x->fn[i].arena);
        x->fn[i].arena = NULL;
        if (!ok) return false;
    }
    return true;
}
