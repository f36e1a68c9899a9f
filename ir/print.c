/* ir/print.c — the stable text form of the IR. Values are numbered by position, every result
 * type is printed, attributes equal to their default are left out, and nothing depends on
 * pointers or hash order, so two dumps of the same IR are byte-identical and diffable.
 * ir/parse.c reads this form back. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

static bool simple_symbol(const char *s) {
    if (!s || !(isalpha((unsigned char)*s) || *s == '_')) return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '.')) return false;
    return true;
}

static void print_string(em3_strbuf *sb, const char *s) {
    em3_sb_putc(sb, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            em3_sb_printf(sb, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            em3_sb_printf(sb, "\\x%02x", c);
        else
            em3_sb_putc(sb, (char)c);
    }
    em3_sb_putc(sb, '"');
}

static void print_symbol(em3_strbuf *sb, const char *s) {
    em3_sb_putc(sb, '@');
    if (simple_symbol(s))
        em3_sb_printf(sb, "%s", s);
    else
        print_string(sb, s ? s : "");
}

static void print_type(em3_strbuf *sb, const em3_type *t) {
    char b[EM3_TYPE_STR_MAX];
    em3_sb_printf(sb, "%s", em3_type_str(t, b, sizeof b));
}

static void print_double(em3_strbuf *sb, double v) {
    char b[40];
    em3_format_double(b, sizeof b, v);
    em3_sb_printf(sb, "%s", b);
}

static bool attr_is_default(const em3_attr_spec *s, const em3_attrval *v) {
    if (!s->has_default) return false;
    if (s->kind == EM3_ATTR_FLOAT) return v->f == s->def.f;
    return v->i == s->def.i;
}

static void print_attr_value(em3_strbuf *sb, em3_attr_kind k, const em3_attrval *v) {
    switch (k) {
    case EM3_ATTR_INT: em3_sb_printf(sb, "%lld", (long long)v->i); break;
    case EM3_ATTR_BOOL: em3_sb_printf(sb, "%s", v->i ? "true" : "false"); break;
    case EM3_ATTR_FLOAT: print_double(sb, v->f); break;
    case EM3_ATTR_DTYPE: em3_sb_printf(sb, "%s", em3_dtype_name((em3_dtype)v->i)); break;
    case EM3_ATTR_SYMBOL: print_symbol(sb, v->s); break;
    case EM3_ATTR_STRING: print_string(sb, v->s ? v->s : ""); break;
    case EM3_ATTR_INTS:
    case EM3_ATTR_SHAPE:
        em3_sb_putc(sb, '[');
        for (int i = 0; i < v->n; i++) {
            if (i) em3_sb_printf(sb, ", ");
            if (k == EM3_ATTR_SHAPE && em3_dim_has_batch(v->list[i])) {
                char d[32];
                em3_sb_printf(sb, "%s", em3_dim_str(v->list[i], d, sizeof d));
            } else
                em3_sb_printf(sb, "%lld", (long long)v->list[i]);
        }
        em3_sb_putc(sb, ']');
        break;
    }
}

static void print_node(em3_strbuf *sb, const em3_func *f, int id, unsigned flags) {
    const em3_node *n = &f->node[id];
    em3_sb_printf(sb, "  %%%d = %s", id, em3_op_name(n->op));
    int na = em3_op_attr_count(n->op), shown = 0;
    for (int i = 0; i < na; i++) {
        em3_attr_spec s = em3_op_attr(n->op, i);
        if (s.kind == EM3_ATTR_SYMBOL) {
            em3_sb_putc(sb, ' ');
            print_symbol(sb, n->attr[i].s);
        }
    }
    if (n->n_in) {
        em3_sb_putc(sb, '(');
        for (int i = 0; i < n->n_in; i++) em3_sb_printf(sb, "%s%%%d", i ? ", " : "", n->in[i]);
        em3_sb_putc(sb, ')');
    }
    for (int i = 0; i < na; i++) {
        em3_attr_spec s = em3_op_attr(n->op, i);
        if (s.kind == EM3_ATTR_SYMBOL || attr_is_default(&s, &n->attr[i])) continue;
        em3_sb_printf(sb, "%s%s = ", shown++ ? ", " : " {", s.name);
        print_attr_value(sb, s.kind, &n->attr[i]);
    }
    if (shown) em3_sb_putc(sb, '}');
    em3_sb_printf(sb, " : ");
    print_type(sb, &n->type);
    if (n->origin) {
        em3_sb_printf(sb, " origin ");
        print_string(sb, n->origin);
    }
    if ((flags & EM3_PRINT_LOC) && n->loc.file && n->loc.line > 0) {
        em3_sb_printf(sb, " loc(");
        print_string(sb, n->loc.file);
        em3_sb_printf(sb, ":%d:%d)", n->loc.line, n->loc.col);
    }
    em3_sb_putc(sb, '\n');
}

static void print_func(em3_strbuf *sb, const em3_func *f, unsigned flags) {
    em3_sb_printf(sb, "func ");
    print_symbol(sb, f->name);
    em3_sb_printf(sb, " {\n");
    for (int i = 0; i < f->n_node; i++) print_node(sb, f, i, flags);
    em3_sb_printf(sb, "  return");
    for (int i = 0; i < f->n_out; i++) {
        /* a name that is not an identifier is quoted, so that the text still parses */
        em3_sb_printf(sb, "%s ", i ? "," : "");
        if (simple_symbol(f->out[i].name))
            em3_sb_printf(sb, "%s", f->out[i].name);
        else
            print_string(sb, f->out[i].name);
        em3_sb_printf(sb, " = %%%d", f->out[i].value);
    }
    em3_sb_printf(sb, "\n}\n");
}

static void print_global(em3_strbuf *sb, const em3_global *g) {
    em3_sb_printf(sb, "global ");
    print_symbol(sb, g->name);
    em3_sb_printf(sb, " : ");
    print_type(sb, &g->type);
    em3_sb_printf(sb, " %s", em3_global_kind_name(g->kind));
    if (g->kind == EM3_GLOBAL_GRAPH) {
        em3_sb_putc(sb, ' ');
        print_string(sb, g->spec ? g->spec : "");
    }
    if (g->init.kind != EM3_INIT_NONE) {
        em3_sb_printf(sb, " init = %s", em3_init_kind_name(g->init.kind));
        if (g->init.kind == EM3_INIT_CONST || g->init.kind == EM3_INIT_NORMAL ||
            g->init.kind == EM3_INIT_UNIFORM) {
            em3_sb_putc(sb, '(');
            print_double(sb, g->init.a);
            em3_sb_putc(sb, ')');
        }
    }
    em3_sb_putc(sb, '\n');
}

static void print_module(em3_strbuf *sb, const em3_module *m, unsigned flags) {
    em3_sb_printf(sb, "module ");
    print_symbol(sb, m->name);
    em3_sb_printf(sb, "\n");
    if (m->n_global) em3_sb_putc(sb, '\n');
    for (int i = 0; i < m->n_global; i++) print_global(sb, &m->global[i]);
    for (int i = 0; i < m->n_func; i++) {
        em3_sb_putc(sb, '\n');
        print_func(sb, m->func[i], flags);
    }
}

char *em3_module_to_string(const em3_module *m, unsigned flags) {
    em3_strbuf sb = {0};
    print_module(&sb, m, flags);
    return sb.data;
}

void em3_module_print(const em3_module *m, FILE *out, unsigned flags) {
    char *s = em3_module_to_string(m, flags);
    fputs(s, out);
    free(s);
}

void em3_func_print(const em3_func *f, FILE *out, unsigned flags) {
    em3_strbuf sb = {0};
    print_func(&sb, f, flags);
    fputs(sb.data, out);
    em3_sb_free(&sb);
}
