/* ir/ir.c — types, the op table built from ops.def, attribute slots, and the module/function
 * builder. Every node enters a function through em3_func_add, which runs the op's shape rule,
 * so a function is well typed by construction. */
#include "ir.h"

#include <stdlib.h>
#include <string.h>

/* ---- types -------------------------------------------------------------------------------- */

static const char *const dtype_names[EM3_DTYPE_COUNT] = {"f32", "i32"};

const char *em3_dtype_name(em3_dtype t) {
    EM3_ASSERT(t >= 0 && t < EM3_DTYPE_COUNT, "bad dtype %d", (int)t);
    return dtype_names[t];
}

bool em3_dtype_parse(const char *s, em3_dtype *out) {
    for (int i = 0; i < EM3_DTYPE_COUNT; i++)
        if (!strcmp(s, dtype_names[i])) {
            *out = (em3_dtype)i;
            return true;
        }
    return false;
}

em3_type em3_type_make(em3_dtype dt, int rank, const int64_t *dims) {
    EM3_ASSERT(rank >= 0 && rank <= EM3_MAX_RANK, "rank %d", rank);
    em3_type t = {.dtype = dt, .rank = rank};
    for (int i = 0; i < rank; i++) t.dim[i] = dims[i];
    return t;
}

bool em3_type_eq(const em3_type *a, const em3_type *b) {
    if (a->dtype != b->dtype || a->rank != b->rank) return false;
    for (int i = 0; i < a->rank; i++)
        if (a->dim[i] != b->dim[i]) return false;
    return true;
}

bool em3_type_has_batch(const em3_type *t) {
    for (int i = 0; i < t->rank; i++)
        if (em3_dim_has_batch(t->dim[i])) return true;
    return false;
}

bool em3_type_has_uniq(const em3_type *t) {
    for (int i = 0; i < t->rank; i++)
        if (em3_dim_sym(t->dim[i]) > 0) return true;
    return false;
}

int64_t em3_dim_size(int64_t d, int64_t batch) {
    EM3_ASSERT(em3_dim_sym(d) <= 0, "dimension in U%d sized by the batch alone", em3_dim_sym(d));
    return d < 0 ? -d * batch : d;
}

bool em3_dims_product(const int64_t *d, int n, int64_t *out) {
    int64_t k = 1;
    int sym = -1;
    for (int i = 0; i < n; i++) {
        if (d[i] < 0) {
            if (sym >= 0) return false;
            sym = em3_dim_sym(d[i]);
        }
        k *= em3_dim_coef(d[i]);
    }
    *out = sym >= 0 ? em3_dim_make(sym, k) : k;
    return true;
}

int64_t em3_type_numel(const em3_type *t, int64_t batch) {
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) n *= em3_dim_size(t->dim[i], batch);
    return n;
}

int64_t em3_type_numel_at(const em3_type *t, const int64_t *sym) {
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) n *= em3_dim_eval(t->dim[i], sym);
    return n;
}

char *em3_dim_str(int64_t d, char *buf, size_t n) {
    int s = em3_dim_sym(d);
    int64_t k = em3_dim_coef(d);
    char sym[4];
    em3_sym_name(s < 0 ? 0 : s, sym);
    if (d >= 0)
        snprintf(buf, n, "%lld", (long long)d);
    else if (k == 1)
        snprintf(buf, n, "%s", sym);
    else
        snprintf(buf, n, "%s*%lld", sym, (long long)k);
    return buf;
}

char *em3_type_str(const em3_type *t, char *buf, size_t n) {
    size_t len = (size_t)snprintf(buf, n, "%s[", em3_dtype_name(t->dtype));
    for (int i = 0; i < t->rank && len < n; i++) {
        char d[32];
        len += (size_t)snprintf(buf + len, n - len, "%s%s", i ? ", " : "",
                                em3_dim_str(t->dim[i], d, sizeof d));
    }
    if (len < n) snprintf(buf + len, n - len, "]");
    return buf;
}

/* ---- the op table --------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    int arity;
    em3_op_kind kind;
    const char *attrs;
    em3_shape_fn *shape;
    unsigned flags;
} em3_op_info;

#define OP(E, NAME, ARITY, KIND, ATTRS, FLAGS, SHAPE, ...) em3_shape_fn SHAPE;
#include "ops.def"
#undef OP

static const em3_op_info op_info[EM3_OP_COUNT] = {
#define OP(E, NAME, ARITY, KIND, ATTRS, FLAGS, SHAPE, ...) \
    [EM3_OP_##E] = {NAME, ARITY, EM3_KIND_##KIND, ATTRS, SHAPE, FLAGS},
#include "ops.def"
#undef OP
};

static const em3_op_info *info(em3_op op) {
    EM3_ASSERT(op >= 0 && op < EM3_OP_COUNT, "bad op %d", (int)op);
    return &op_info[op];
}

const char *em3_op_name(em3_op op) { return info(op)->name; }
int em3_op_arity(em3_op op) { return info(op)->arity; }
em3_op_kind em3_op_kind_of(em3_op op) { return info(op)->kind; }
unsigned em3_op_flags(em3_op op) { return info(op)->flags; }
const char *em3_op_attr_text(em3_op op) { return info(op)->attrs; }
em3_shape_fn *em3_op_shape_rule(em3_op op) { return info(op)->shape; }

bool em3_op_parse(const char *name, em3_op *out) {
    for (int i = 0; i < EM3_OP_COUNT; i++)
        if (!strcmp(op_info[i].name, name)) {
            *out = (em3_op)i;
            return true;
        }
    return false;
}

const char *em3_op_kind_name(em3_op_kind k) {
    static const char *const names[] = {"leaf", "elementwise", "reduction", "data-movement",
                                        "gemm", "gather", "opaque"};
    EM3_ASSERT(k >= 0 && k <= EM3_KIND_OPAQUE, "bad kind %d", (int)k);
    return names[k];
}

bool em3_op_operand_differentiable(em3_op op, int i) {
    unsigned f = em3_op_flags(op);
    if (f & EM3_OPF_NOGRAD_ALL) return false;
    if (i == 0 && (f & EM3_OPF_NOGRAD_IN0)) return false;
    if (i == 1 && (f & EM3_OPF_NOGRAD_IN1)) return false;
    if (i == 2 && (f & EM3_OPF_NOGRAD_IN2)) return false;
    if (i == 3 && (f & EM3_OPF_NOGRAD_IN3)) return false;
    return true;
}

/* Attribute specs are tiny strings; parsing them on demand keeps ops.def the only table and
 * avoids any mutable global cache. Spec entry: name:kind[=default]. */
static bool spec_entry(const char *spec, int slot, em3_attr_spec *out, char *name, size_t cap) {
    const char *p = spec;
    for (int k = 0;; k++) {
        while (*p == ' ') p++;
        if (!*p) return false;
        const char *end = p;
        while (*end && *end != ' ') end++;
        if (k == slot) {
            const char *colon = memchr(p, ':', (size_t)(end - p));
            EM3_ASSERT(colon && (size_t)(colon - p) < cap, "bad attribute spec '%s'", spec);
            memcpy(name, p, (size_t)(colon - p));
            name[colon - p] = 0;
            memset(out, 0, sizeof(*out));
            out->kind = (em3_attr_kind)colon[1];
            if (colon[2] == '=') {
                out->has_default = true;
                char num[32];
                size_t l = (size_t)(end - (colon + 3));
                EM3_ASSERT(l < sizeof num, "bad default in '%s'", spec);
                memcpy(num, colon + 3, l);
                num[l] = 0;
                if (out->kind == EM3_ATTR_FLOAT)
                    out->def.f = strtod(num, NULL);
                else
                    out->def.i = strtoll(num, NULL, 10);
            }
            return true;
        }
        p = end;
    }
}

int em3_op_attr_count(em3_op op) {
    em3_attr_spec s;
    char name[32];
    int n = 0;
    while (spec_entry(info(op)->attrs, n, &s, name, sizeof name)) n++;
    EM3_ASSERT(n <= EM3_MAX_ATTRS, "op %s has too many attributes", em3_op_name(op));
    return n;
}

em3_attr_spec em3_op_attr(em3_op op, int slot) {
    em3_attr_spec s;
    char name[sizeof s.name];
    bool ok = spec_entry(info(op)->attrs, slot, &s, name, sizeof name);
    EM3_ASSERT(ok, "op %s has no attribute slot %d", em3_op_name(op), slot);
    memcpy(s.name, name, sizeof name);
    return s;
}

int em3_op_attr_slot(em3_op op, const char *name) {
    int n = em3_op_attr_count(op);
    for (int i = 0; i < n; i++)
        if (!strcmp(em3_op_attr(op, i).name, name)) return i;
    return -1;
}

/* ---- node attributes ------------------------------------------------------------------------ */

em3_node em3_node_proto(em3_op op, em3_loc loc) {
    em3_node n = {.op = op, .loc = loc};
    int c = em3_op_attr_count(op);
    for (int i = 0; i < c; i++) n.attr[i] = em3_op_attr(op, i).def;
    return n;
}

static int slot_of(const em3_node *n, const char *attr) {
    int s = em3_op_attr_slot(n->op, attr);
    EM3_ASSERT(s >= 0, "op %s has no attribute '%s'", em3_op_name(n->op), attr);
    return s;
}

void em3_node_set_i(em3_node *n, const char *a, int64_t v) { n->attr[slot_of(n, a)].i = v; }
void em3_node_set_f(em3_node *n, const char *a, double v) { n->attr[slot_of(n, a)].f = v; }
void em3_node_set_s(em3_node *n, const char *a, const char *s) { n->attr[slot_of(n, a)].s = s; }
void em3_node_set_list(em3_node *n, const char *a, const int64_t *v, int count) {
    em3_attrval *x = &n->attr[slot_of(n, a)];
    x->list = v;
    x->n = count;
}
int64_t em3_node_i(const em3_node *n, const char *a) { return n->attr[slot_of(n, a)].i; }
double em3_node_f(const em3_node *n, const char *a) { return n->attr[slot_of(n, a)].f; }
const char *em3_node_s(const em3_node *n, const char *a) { return n->attr[slot_of(n, a)].s; }
const int64_t *em3_node_list(const em3_node *n, const char *a, int *count) {
    const em3_attrval *x = &n->attr[slot_of(n, a)];
    if (count) *count = x->n;
    return x->list;
}

/* ---- modules ---------------------------------------------------------------------------------- */

em3_module *em3_module_create(const char *name) {
    em3_module *m = em3_xcalloc(1, sizeof(*m));
    m->arena = em3_arena_create();
    m->name = em3_arena_strdup(m->arena, name);
    return m;
}

static void func_free(em3_func *f) {
    free(f->node);
    free(f->out);
    free(f);
}

void em3_module_free(em3_module *m) {
    if (!m) return;
    for (int i = 0; i < m->n_func; i++) func_free(m->func[i]);
    free(m->func);
    free(m->global);
    em3_arena_free(m->arena);
    free(m);
}

int em3_module_find_global(const em3_module *m, const char *name) {
    for (int i = 0; i < m->n_global; i++)
        if (!strcmp(m->global[i].name, name)) return i;
    return -1;
}

int em3_module_add_global(em3_module *m, const char *name, em3_type type, em3_global_kind kind,
                          em3_init init, em3_loc loc) {
    if (em3_module_find_global(m, name) >= 0) return -1;
    EM3_GROW(m->global, m->cap_global, m->n_global + 1);
    m->global[m->n_global] = (em3_global){em3_arena_strdup(m->arena, name), type, kind, init, loc, NULL};
    return m->n_global++;
}

int em3_module_add_graph(em3_module *m, const char *name, em3_type type, const char *spec,
                         em3_loc loc) {
    int g = em3_module_add_global(m, name, type, EM3_GLOBAL_GRAPH, (em3_init){EM3_INIT_NONE, 0}, loc);
    if (g >= 0) m->global[g].spec = em3_arena_strdup(m->arena, spec);
    return g;
}

em3_func *em3_module_add_func(em3_module *m, const char *name) {
    EM3_ASSERT(!em3_module_find_func(m, name), "function @%s exists", name);
    em3_func *f = em3_xcalloc(1, sizeof(*f));
    f->mod = m;
    f->name = em3_arena_strdup(m->arena, name);
    EM3_GROW(m->func, m->cap_func, m->n_func + 1);
    m->func[m->n_func++] = f;
    return f;
}

em3_func *em3_module_find_func(const em3_module *m, const char *name) {
    for (int i = 0; i < m->n_func; i++)
        if (!strcmp(m->func[i]->name, name)) return m->func[i];
    return NULL;
}

void em3_module_remove_func(em3_module *m, em3_func *f) {
    for (int i = 0; i < m->n_func; i++)
        if (m->func[i] == f) {
            memmove(&m->func[i], &m->func[i + 1], (size_t)(m->n_func - i - 1) * sizeof(*m->func));
            m->n_func--;
            func_free(f);
            return;
        }
    EM3_UNREACHABLE("function not in module");
}

const char *const *em3_graph_builder_options(const char *builder) {
    static const char *const user_item[] = {"dropout", NULL}, *const item_knn[] = {"k", "tables", "weights", NULL};
    if (!strcmp(builder, "user_item")) return user_item;
    if (!strcmp(builder, "item_knn")) return item_knn;
    return NULL;
}

const char *em3_global_kind_name(em3_global_kind k) {
    static const char *const names[] = {"param", "frozen", "data", "state", "graph"};
    EM3_ASSERT(k >= 0 && k <= EM3_GLOBAL_GRAPH, "bad global kind %d", (int)k);
    return names[k];
}

static const char *const init_names[] = {"none",   "zeros",   "ones",  "const",
                                         "normal", "uniform", "xavier"};

const char *em3_init_kind_name(em3_init_kind k) {
    EM3_ASSERT(k >= 0 && k <= EM3_INIT_XAVIER, "bad init kind %d", (int)k);
    return init_names[k];
}

bool em3_init_kind_parse(const char *s, em3_init_kind *out) {
    for (int i = 0; i <= EM3_INIT_XAVIER; i++)
        if (!strcmp(s, init_names[i])) {
            *out = (em3_init_kind)i;
            return true;
        }
    return false;
}

/* ---- functions -------------------------------------------------------------------------------- */

void em3_func_symbols(const em3_func *f, int64_t batch, int64_t sym[EM3_MAX_SYMBOLS]) {
    memset(sym, 0, sizeof(int64_t) * EM3_MAX_SYMBOLS);
    sym[0] = batch;
    for (int i = 0; i < f->n_node; i++)
        if (f->node[i].op == EM3_OP_UNIQUE)
            sym[em3_node_i(&f->node[i], "sym")] = em3_type_numel(&f->node[f->node[i].in[0]].type, batch);
}

const em3_node *em3_func_node(const em3_func *f, int id) {
    EM3_ASSERT(id >= 0 && id < f->n_node, "value %%%d out of range (%d nodes)", id, f->n_node);
    return &f->node[id];
}

int em3_func_add(em3_func *f, const em3_node *proto, const int *in, int n_in, char *err,
                 size_t errlen) {
    int arity = em3_op_arity(proto->op);
    if (arity >= 0 ? n_in != arity : n_in < 1) {
        snprintf(err, errlen, "%s takes %s%d operand%s, got %d", em3_op_name(proto->op),
                 arity < 0 ? "at least " : "", arity < 0 ? 1 : arity,
                 (arity < 0 ? 1 : arity) == 1 ? "" : "s", n_in);
        return -1;
    }
    em3_type in_types[16] = {0}, *types = n_in <= 16 ? in_types : em3_xmalloc(sizeof(em3_type) * (size_t)n_in);
    for (int i = 0; i < n_in; i++) {
        EM3_ASSERT(in[i] >= 0 && in[i] < f->n_node, "operand %%%d is not defined yet", in[i]);
        types[i] = f->node[in[i]].type;
    }
    em3_node n = *proto;
    n.n_in = n_in;
    n.in = in; /* the rule reads operand ids (e.g. param symbols) before they are copied */
    bool ok = em3_op_shape_rule(n.op)(f, &n, types, &n.type, err, errlen);
    if (types != in_types) free(types);
    if (!ok) return -1;

    em3_arena *a = f->mod->arena;
    int *ins = em3_arena_alloc(a, sizeof(int) * (size_t)(n_in ? n_in : 1));
    if (n_in) memcpy(ins, in, sizeof(int) * (size_t)n_in);
    n.in = ins;
    int na = em3_op_attr_count(n.op);
    for (int i = 0; i < na; i++) {
        em3_attrval *v = &n.attr[i];
        if (v->s) v->s = em3_arena_strdup(a, v->s);
        if (v->list) {
            int64_t *l = em3_arena_alloc(a, sizeof(int64_t) * (size_t)(v->n ? v->n : 1));
            if (v->n) memcpy(l, v->list, sizeof(int64_t) * (size_t)v->n);
            v->list = l;
        }
    }
    if (n.origin) n.origin = em3_arena_strdup(a, n.origin);
    EM3_GROW(f->node, f->cap_node, f->n_node + 1);
    f->node[f->n_node] = n;
    return f->n_node++;
}

int em3_func_add_checked(em3_func *f, const em3_node *proto, const int *in, int n_in) {
    char err[256];
    int id = em3_func_add(f, proto, in, n_in, err, sizeof err);
    EM3_ASSERT(id >= 0, "building %s in @%s: %s", em3_op_name(proto->op), f->name, err);
    return id;
}

int em3_func_add_output(em3_func *f, const char *name, int value) {
    EM3_ASSERT(value >= 0 && value < f->n_node, "output %s: bad value %d", name, value);
    for (int i = 0; i < f->n_out; i++)
        if (!strcmp(f->out[i].name, name)) return -1;
    EM3_GROW(f->out, f->cap_out, f->n_out + 1);
    f->out[f->n_out] = (em3_output){em3_arena_strdup(f->mod->arena, name), value};
    return f->n_out++;
}

void em3_func_compact(em3_func *f, const bool *keep) {
    int *map = em3_xmalloc(sizeof(int) * (size_t)(f->n_node ? f->n_node : 1));
    int n = 0;
    for (int i = 0; i < f->n_node; i++) {
        map[i] = -1;
        if (!keep[i]) continue;
        em3_node nd = f->node[i];
        int *in = em3_arena_alloc(f->mod->arena, sizeof(int) * (size_t)(nd.n_in ? nd.n_in : 1));
        for (int k = 0; k < nd.n_in; k++) {
            EM3_ASSERT(map[nd.in[k]] >= 0, "compact keeps %%%d but drops its operand %%%d", i, nd.in[k]);
            in[k] = map[nd.in[k]];
        }
        nd.in = in;
        f->node[n] = nd;
        map[i] = n++;
    }
    f->n_node = n;
    int o = 0;
    for (int i = 0; i < f->n_out; i++)
        if (map[f->out[i].value] >= 0) f->out[o++] = (em3_output){f->out[i].name, map[f->out[i].value]};
    f->n_out = o;
    free(map);
}

void em3_func_remove_output(em3_func *f, const char *name) {
    for (int i = 0; i < f->n_out; i++)
        if (!strcmp(f->out[i].name, name)) {
            memmove(&f->out[i], &f->out[i + 1], sizeof(em3_output) * (size_t)(f->n_out - i - 1));
            f->n_out--;
            return;
        }
}

void em3_func_toposort(em3_func *f) {
    int n = f->n_node;
    if (n == 0) return;
    int *pending = em3_xcalloc((size_t)n, sizeof(int)), *order = em3_xmalloc(sizeof(int) * (size_t)n);
    int *users_start = em3_xcalloc((size_t)n + 1, sizeof(int)), *users, *fill = em3_xcalloc((size_t)n, sizeof(int));
    for (int i = 0; i < n; i++)
        for (int k = 0; k < f->node[i].n_in; k++) users_start[f->node[i].in[k] + 1]++;
    for (int i = 0; i < n; i++) users_start[i + 1] += users_start[i];
    users = em3_xmalloc(sizeof(int) * (size_t)(users_start[n] ? users_start[n] : 1));
    for (int i = 0; i < n; i++)
        for (int k = 0; k < f->node[i].n_in; k++) {
            int v = f->node[i].in[k];
            users[users_start[v] + fill[v]++] = i;
        }
    /* Kahn's algorithm taking the lowest original index first (a binary heap) */
    int *heap = em3_xmalloc(sizeof(int) * (size_t)n), nh = 0, no = 0;
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < f->node[i].n_in; k++) pending[i]++;
        if (!pending[i]) {
            int c = nh++;
            for (heap[c] = i; c && heap[(c - 1) / 2] > heap[c]; c = (c - 1) / 2) {
                int t = heap[c]; heap[c] = heap[(c - 1) / 2]; heap[(c - 1) / 2] = t;
            }
        }
    }
    while (nh) {
        int v = heap[0];
        heap[0] = heap[--nh];
        for (int c = 0;;) {
            int l = 2 * c + 1, r = l + 1, m = c;
            if (l < nh && heap[l] < heap[m]) m = l;
            if (r < nh && heap[r] < heap[m]) m = r;
            if (m == c) break;
            int t = heap[c]; heap[c] = heap[m]; heap[m] = t;
            c = m;
        }
        order[no++] = v;
        for (int u = users_start[v]; u < users_start[v + 1]; u++)
            if (--pending[users[u]] == 0) {
                int c = nh++;
                for (heap[c] = users[u]; c && heap[(c - 1) / 2] > heap[c]; c = (c - 1) / 2) {
                    int t = heap[c]; heap[c] = heap[(c - 1) / 2]; heap[(c - 1) / 2] = t;
                }
            }
    }
    EM3_ASSERT(no == n, "@%s has a cycle", f->name);
    int *pos = em3_xmalloc(sizeof(int) * (size_t)n);
    em3_node *nodes = em3_xmalloc(sizeof(em3_node) * (size_t)n);
    for (int i = 0; i < n; i++) pos[order[i]] = i;
    for (int i = 0; i < n; i++) {
        em3_node nd = f->node[order[i]];
        int *in = em3_arena_alloc(f->mod->arena, sizeof(int) * (size_t)(nd.n_in ? nd.n_in : 1));
        for (int k = 0; k < nd.n_in; k++) in[k] = pos[nd.in[k]];
        nd.in = in;
        nodes[i] = nd;
    }
    memcpy(f->node, nodes, sizeof(em3_node) * (size_t)n);
    for (int i = 0; i < f->n_out; i++) f->out[i].value = pos[f->out[i].value];
    free(nodes);
    free(pos);
    free(heap);
    free(users);
    free(users_start);
    free(fill);
    free(order);
    free(pending);
}

em3_func *em3_func_slice(em3_func *f, const char *name, const char *const *outputs, int n_outputs) {
    bool *live = em3_xcalloc((size_t)(f->n_node ? f->n_node : 1), sizeof(bool));
    int *vals = em3_xmalloc(sizeof(int) * (size_t)(n_outputs ? n_outputs : 1));
    for (int o = 0; o < n_outputs; o++) {
        vals[o] = -1;
        for (int i = 0; i < f->n_out; i++)
            if (!strcmp(f->out[i].name, outputs[o])) vals[o] = f->out[i].value;
        EM3_ASSERT(vals[o] >= 0, "@%s has no output %s", f->name, outputs[o]);
        live[vals[o]] = true;
    }
    for (int i = f->n_node - 1; i >= 0; i--)
        if (live[i])
            for (int k = 0; k < f->node[i].n_in; k++) live[f->node[i].in[k]] = true;
    em3_func *p = em3_module_add_func(f->mod, name);
    int *map = em3_xmalloc(sizeof(int) * (size_t)(f->n_node ? f->n_node : 1));
    for (int i = 0; i < f->n_node; i++) {
        map[i] = -1;
        if (!live[i]) continue;
        const em3_node nd = f->node[i]; /* adding to p may not move f's nodes, but be plain */
        int *in = em3_xmalloc(sizeof(int) * (size_t)(nd.n_in ? nd.n_in : 1));
        for (int k = 0; k < nd.n_in; k++) in[k] = map[nd.in[k]];
        map[i] = em3_func_add_checked(p, &nd, in, nd.n_in);
        free(in);
    }
    for (int o = 0; o < n_outputs; o++) em3_func_add_output(p, outputs[o], map[vals[o]]);
    free(map);
    free(vals);
    free(live);
    return p;
}
