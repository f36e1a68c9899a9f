/* tests/parity/em3_parity.c — the EM3 side of the PyTorch parity test (torch_parity.py): compiles
 * a DSL model, initialises its globals from a seed in the reference interpreter, reads a batch
 * (and the model's data tables) from .npy files, and writes the initial weights, the loss, every
 * gradient and the weights after one Adam step as .npy files for PyTorch to check.
 *
 *   em3_parity MODEL.em3 DIR [--prec f64|f32] [--seed N] [--lr X] [--set NAME=VALUE]...
 *
 * reads  DIR/input.NAME.npy for every input and label, DIR/data.NAME.npy for every data table,
 *        DIR/graph.NAME.npy for every graph (dense: its non-zero entries are the graph's);
 * writes DIR/init.NAME.npy (parameters, frozen ones too), DIR/loss.npy, DIR/grad.NAME.npy,
 *        DIR/step.NAME.npy (trainable parameters after one Adam step at step 1, lr X). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/frontend.h"
#include "passes/passes.h"
#include "runtime/graph.h"
#include "runtime/interp.h"
#include "runtime/npy.h"

#define MAX_SETS 32
#define MAX_GRAPHS 8

typedef struct {
    const char *model, *dir;
    em3_precision prec;
    uint64_t seed;
    double lr;
    em3_const_override set[MAX_SETS];
    int n_set;
    em3_graph *graph[MAX_GRAPHS]; /* read once, bound to every interpreter */
    int n_graph;
} options;

static _Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "em3_parity: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static char *path_of(const options *o, const char *kind, const char *name) {
    size_t n = strlen(o->dir) + strlen(kind) + strlen(name) + 8;
    char *p = em3_xmalloc(n);
    snprintf(p, n, "%s/%s%s.npy", o->dir, kind, name);
    return p;
}

static em3_module *compile(const options *o, const char *passes, const em3_optim_config *cfg) {
    em3_diag *d = em3_diag_create(stderr);
    em3_frontend_options fo = {.overrides = o->set, .n_overrides = o->n_set};
    em3_module *m = em3_frontend_compile(o->model, &fo, d);
    if (!m) die("%s does not compile", o->model);
    em3_pipeline *pl = em3_pipeline_create();
    em3_pass_options po = {.verify_each = true, .quiet = true, .optim = cfg};
    if (!em3_pipeline_parse(pl, passes, d) || !em3_pipeline_run(pl, m, &po, d))
        die("%s: the passes %s failed", o->model, passes);
    em3_pipeline_free(pl);
    em3_diag_free(d);
    return m;
}

/* An array read from DIR/KIND.NAME.npy whose shape must be `t` with B = *batch (found from the
 * file when *batch is 0). */
static double *read_array(const options *o, const char *kind, const char *name, const em3_type *t,
                          int64_t *batch) {
    char err[512], *path = path_of(o, kind, name);
    em3_npy *a = em3_npy_read(path, err, sizeof err);
    if (!a) die("%s", err);
    bool ok = a->rank == t->rank;
    for (int i = 0; ok && i < t->rank; i++) {
        int64_t d = t->dim[i];
        if (em3_dim_has_batch(d) && !*batch && a->shape[i] % -d == 0) *batch = a->shape[i] / -d;
        ok = a->shape[i] == em3_dim_size(d, *batch);
    }
    char want[EM3_TYPE_STR_MAX];
    if (!ok || !*batch)
        die("%s: the array does not have the shape %s", path, em3_type_str(t, want, sizeof want));
    double *v = em3_xmalloc(sizeof(double) * (size_t)(a->numel ? a->numel : 1));
    em3_npy_to_f64(a, v);
    em3_npy_free(a);
    free(path);
    return v;
}

#define MAX_INPUTS 64

typedef struct {
    em3_interp_input in[MAX_INPUTS];
    int n;
    int64_t batch;
} batch_data;

/* The inputs of @forward. */
static batch_data read_batch(const options *o, const em3_module *m) {
    batch_data b = {.batch = 0};
    const em3_func *f = em3_module_find_func(m, "forward");
    for (int i = 0; i < f->n_node; i++) {
        if (f->node[i].op != EM3_OP_INPUT) continue;
        if (b.n == MAX_INPUTS - 2) die("%s: too many inputs", o->model);
        const char *name = em3_node_s(&f->node[i], "name");
        b.in[b.n++] =
            (em3_interp_input){name, read_array(o, "input.", name, &f->node[i].type, &b.batch)};
    }
    return b;
}

static void write_array(const options *o, const char *kind, const char *name, const em3_type *t,
                        int64_t batch, const double *v) {
    int64_t shape[EM3_MAX_RANK];
    for (int i = 0; i < t->rank; i++) shape[i] = em3_dim_size(t->dim[i], batch);
    char err[512], *path = path_of(o, kind, name);
    if (!em3_npy_write_f64(path, t->rank, shape, v, err, sizeof err)) die("%s", err);
    free(path);
}

/* Graph global gl from DIR/graph.NAME.npy, a dense matrix whose non-zeros are its entries. */
static em3_graph *read_graph(const options *o, const em3_global *gl) {
    int64_t one = 1, rows = gl->type.dim[0], cols = gl->type.dim[1], n = 0;
    double *v = read_array(o, "graph.", gl->name, &gl->type, &one);
    int32_t *row = em3_xmalloc(sizeof(int32_t) * (size_t)(rows * cols));
    int32_t *col = em3_xmalloc(sizeof(int32_t) * (size_t)(rows * cols));
    float *val = em3_xmalloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            if (v[r * cols + c] != 0) {
                row[n] = (int32_t)r;
                col[n] = (int32_t)c;
                val[n++] = (float)v[r * cols + c];
            }
    em3_graph *g = em3_graph_from_coo(rows, cols, n, row, col, val);
    free(v);
    free(row);
    free(col);
    free(val);
    return g;
}

/* An interpreter with globals from the seed, data tables and graphs from DIR. */
static em3_interp *start(options *o, const em3_module *m) {
    em3_interp *it = em3_interp_create(m, o->prec);
    em3_interp_init_globals(it, o->seed);
    for (int g = 0, n_graph = 0; g < m->n_global; g++) {
        const em3_global *gl = &m->global[g];
        if (gl->kind == EM3_GLOBAL_GRAPH) {
            if (n_graph == o->n_graph) {
                if (o->n_graph == MAX_GRAPHS) die("%s: too many graphs", o->model);
                o->graph[o->n_graph++] = read_graph(o, gl);
            }
            em3_interp_bind_graph(it, gl->name, o->graph[n_graph++]);
        }
        if (gl->kind != EM3_GLOBAL_DATA) continue;
        int64_t one = 1;
        double *v = read_array(o, "data.", gl->name, &gl->type, &one);
        memcpy(em3_interp_global(it, gl->name), v,
               sizeof(double) * (size_t)em3_type_numel(&gl->type, 1));
        free(v);
    }
    return it;
}

/* @train on the batch, with the optimizer's lr and step 1 (ignored before the optimizer pass). */
static void run(em3_interp *it, const batch_data *b, double lr) {
    em3_interp_input in[MAX_INPUTS];
    memcpy(in, b->in, sizeof(em3_interp_input) * (size_t)b->n);
    double step = 1;
    in[b->n] = (em3_interp_input){"opt.lr.default", &lr};
    in[b->n + 1] = (em3_interp_input){"opt.step", &step};
    char err[512];
    if (!em3_interp_run(it, "train", b->batch, in, b->n + 2, err, sizeof err))
        die("@train: %s", err);
}

static const char usage[] =
    "usage: em3_parity MODEL.em3 DIR [--prec f64|f32] [--seed N] [--lr X] [--set NAME=VALUE]...";

static options parse_args(int argc, char **argv) {
    options o = {.prec = EM3_PREC_F64, .seed = 1, .lr = 1e-3};
    int pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--prec") && v) {
            if (strcmp(v, "f64") && strcmp(v, "f32")) die("--prec is f64 or f32, not %s", v);
            o.prec = !strcmp(v, "f32") ? EM3_PREC_F32 : EM3_PREC_F64;
            i++;
        } else if (!strcmp(a, "--seed") && v) {
            o.seed = strtoull(v, NULL, 10);
            i++;
        } else if (!strcmp(a, "--lr") && v) {
            o.lr = strtod(v, NULL);
            i++;
        } else if (!strcmp(a, "--set") && v) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v) die("--set takes NAME=VALUE, not %s", v);
            if (o.n_set == MAX_SETS) die("too many --set");
            char *name = em3_xstrdup(v);
            name[eq - v] = '\0';
            o.set[o.n_set++] = (em3_const_override){name, eq + 1, false};
            i++;
        } else if (a[0] != '-' && pos < 2) {
            *(pos++ ? &o.dir : &o.model) = a;
        } else {
            die("unexpected argument %s\n%s", a, usage);
        }
    }
    if (pos != 2) die("%s", usage);
    return o;
}

int main(int argc, char **argv) {
    options o = parse_args(argc, argv);

    /* the loss and every gradient, from the initial weights */
    em3_module *m = compile(&o, "autodiff", NULL);
    batch_data b = read_batch(&o, m);
    em3_interp *it = start(&o, m);
    for (int g = 0; g < m->n_global; g++) {
        const em3_global *gl = &m->global[g];
        if (gl->kind == EM3_GLOBAL_PARAM || gl->kind == EM3_GLOBAL_FROZEN)
            write_array(&o, "init.", gl->name, &gl->type, 1, em3_interp_global(it, gl->name));
    }
    run(it, &b, o.lr);
    const em3_func *tr = em3_module_find_func(m, "train");
    for (int i = 0; i < tr->n_out; i++) {
        const char *name = tr->out[i].name;
        bool grad = !strncmp(name, "grad.", 5);
        if (!grad && strcmp(name, "loss")) continue;
        em3_type t;
        const double *v = em3_interp_output(it, name, &t);
        write_array(&o, "", name, &t, b.batch, v);
    }
    em3_interp_free(it);

    /* one Adam step (PyTorch's defaults: β = (0.9, 0.999), ε = 1e-8, no weight decay) */
    em3_optim_config cfg = em3_optim_defaults();
    cfg.kind = EM3_OPTIM_ADAM;
    cfg.lr = o.lr;
    em3_module *ms = compile(&o, "autodiff,optimizer,dce", &cfg);
    it = start(&o, ms);
    run(it, &b, o.lr);
    for (int g = 0; g < ms->n_global; g++) {
        const em3_global *gl = &ms->global[g];
        if (gl->kind == EM3_GLOBAL_PARAM)
            write_array(&o, "step.", gl->name, &gl->type, 1, em3_interp_global(it, gl->name));
    }
    em3_interp_free(it);

    for (int i = 0; i < b.n; i++) free((void *)b.in[i].data);
    for (int i = 0; i < o.n_graph; i++) em3_graph_free(o.graph[i]);
    for (int i = 0; i < o.n_set; i++) free((void *)o.set[i].name);
    em3_module_free(m);
    em3_module_free(ms);
    return 0;
}
