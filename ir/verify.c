/* ir/verify.c — the structural rules of the IR, checked in one place: operands defined before
 * use, arities, attribute ranges, symbols that resolve, types that the shape rules reproduce,
 * unique names. Passes run it after every change in debug builds and tests; IR read from
 * text is verified before anything else touches it. */
#include <stdarg.h>
#include <string.h>

#include "ir.h"

static bool bad(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool bad(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return false;
}

static bool verify_node(const em3_func *f, int id, char *err, size_t el) {
    const em3_node *n = &f->node[id];
    if (n->op < 0 || n->op >= EM3_OP_COUNT) return bad(err, el, "%%%d: unknown op", id);
    const char *name = em3_op_name(n->op);
    int arity = em3_op_arity(n->op);
    if (arity >= 0 ? n->n_in != arity : n->n_in < 1)
        return bad(err, el, "%%%d: %s has %d operands", id, name, n->n_in);
    em3_type in[64];
    if (n->n_in > 64) return bad(err, el, "%%%d: %s has too many operands", id, name);
    for (int i = 0; i < n->n_in; i++) {
        if (n->in[i] < 0 || n->in[i] >= id)
            return bad(err, el, "%%%d: operand %%%d is used before it is defined", id, n->in[i]);
        in[i] = f->node[n->in[i]].type;
    }
    int na = em3_op_attr_count(n->op);
    for (int i = 0; i < na; i++) {
        em3_attr_spec s = em3_op_attr(n->op, i);
        const em3_attrval *v = &n->attr[i];
        if (s.kind == EM3_ATTR_SYMBOL && (!v->s || !*v->s))
            return bad(err, el, "%%%d: %s needs a name", id, name);
        if (s.kind == EM3_ATTR_STRING && !v->s)
            return bad(err, el, "%%%d: %s needs its %s", id, name, s.name);
        if ((s.kind == EM3_ATTR_INTS || s.kind == EM3_ATTR_SHAPE) && v->n > 0 && !v->list)
            return bad(err, el, "%%%d: %s: attribute %s is malformed", id, name, s.name);
        if (s.kind == EM3_ATTR_BOOL && v->i != 0 && v->i != 1)
            return bad(err, el, "%%%d: %s: attribute %s must be true or false", id, name, s.name);
    }
    if (n->op == EM3_OP_INPUT) {
        for (int j = 0; j < id; j++)
            if (f->node[j].op == EM3_OP_INPUT && !strcmp(f->node[j].attr[0].s, n->attr[0].s))
                return bad(err, el, "%%%d: input @%s is declared twice", id, n->attr[0].s);
        if (n->attr[1].i < 0) return bad(err, el, "%%%d: input vocab must be >= 0", id);
    }
    for (int d = 0; d < n->type.rank; d++) { /* each Us is the count of an earlier unique */
        int sym = em3_dim_sym(n->type.dim[d]);
        if (sym <= 0) continue;
        if (n->op == EM3_OP_INPUT) return bad(err, el, "%%%d: an input cannot have a dimension in U%d", id, sym);
        bool defined = false;
        for (int j = 0; j <= id && !defined; j++)
            defined = f->node[j].op == EM3_OP_UNIQUE && f->node[j].attr[0].i == sym;
        if (!defined) return bad(err, el, "%%%d: U%d is used before a unique defines it", id, sym);
    }
    if (n->op == EM3_OP_UNIQUE)
        for (int j = 0; j < id; j++)
            if (f->node[j].op == EM3_OP_UNIQUE && f->node[j].attr[0].i == n->attr[0].i)
                return bad(err, el, "%%%d: U%lld is defined twice", id, (long long)n->attr[0].i);
    em3_type t;
    char why[256];
    if (!em3_op_shape_rule(n->op)(f, n, in, &t, why, sizeof why))
        return bad(err, el, "%%%d: %s: %s", id, name, why);
    if (!em3_type_eq(&t, &n->type)) {
        char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
        return bad(err, el, "%%%d: %s is declared %s but its operands give %s", id, name,
                   em3_type_str(&n->type, b0, sizeof b0), em3_type_str(&t, b1, sizeof b1));
    }
    return true;
}

bool em3_func_verify(const em3_func *f, char *err, size_t el) {
    char inner[400];
    for (int i = 0; i < f->n_node; i++)
        if (!verify_node(f, i, inner, sizeof inner))
            return bad(err, el, "in @%s: %s", f->name, inner);
    for (int i = 0; i < f->n_out; i++) {
        if (f->out[i].value < 0 || f->out[i].value >= f->n_node)
            return bad(err, el, "in @%s: output %s refers to an undefined value", f->name,
                       f->out[i].name);
        if (em3_type_has_uniq(&f->node[f->out[i].value].type)) /* callers size outputs by B */
            return bad(err, el, "in @%s: output %s has a dimension in some U", f->name, f->out[i].name);
        for (int j = 0; j < i; j++)
            if (!strcmp(f->out[i].name, f->out[j].name))
                return bad(err, el, "in @%s: output %s is returned twice", f->name,
                           f->out[i].name);
    }
    return true;
}

bool em3_module_verify(const em3_module *m, char *err, size_t el) {
    for (int i = 0; i < m->n_global; i++) {
        const em3_global *g = &m->global[i];
        for (int j = 0; j < i; j++)
            if (!strcmp(g->name, m->global[j].name))
                return bad(err, el, "global @%s is declared twice", g->name);
        for (int d = 0; d < g->type.rank; d++)
            if (g->type.dim[d] <= 0)
                return bad(err, el, "global @%s must have a fixed, positive shape", g->name);
        if ((g->kind == EM3_GLOBAL_GRAPH) != (g->spec != NULL))
            return bad(err, el, "global @%s: a graph global, and only one, has a spec", g->name);
        if (g->kind == EM3_GLOBAL_GRAPH && (g->type.rank != 2 || g->type.dtype != EM3_DTYPE_F32))
            return bad(err, el, "graph @%s must be an f32 matrix", g->name);
    }
    for (int i = 0; i < m->n_func; i++) {
        for (int j = 0; j < i; j++)
            if (!strcmp(m->func[i]->name, m->func[j]->name))
                return bad(err, el, "function @%s is defined twice", m->func[i]->name);
        if (!em3_func_verify(m->func[i], err, el)) return false;
    }
    return true;
}
