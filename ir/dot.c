/* ir/dot.c — a function as a Graphviz graph: one box per node with its op and type, one edge
 * per operand; fused nodes are drawn as clusters listing the ops they replaced, so a user can
 * see at a glance what fusion did. `em3 ir --emit=dot` writes it. */
#include <string.h>

#include "ir.h"

static void label_escape(FILE *out, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', out);
        fputc(*s, out);
    }
}

void em3_func_print_dot(const em3_func *f, FILE *out) {
    fprintf(out, "digraph \"%s\" {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n",
            f->name);
    for (int i = 0; i < f->n_node; i++) {
        const em3_node *n = &f->node[i];
        char t[EM3_TYPE_STR_MAX];
        em3_type_str(&n->type, t, sizeof t);
        const char *sym = em3_op_attr_count(n->op) && em3_op_attr(n->op, 0).kind == EM3_ATTR_SYMBOL ? n->attr[0].s : NULL;
        if (n->origin) {
            fprintf(out, "  subgraph cluster_%d {\n    style=rounded; color=blue; label=\"fused: ", i);
            label_escape(out, n->origin);
            fprintf(out, "\";\n  ");
        }
        fprintf(out, "  n%d [label=\"%%%d = %s%s", i, i, em3_op_name(n->op), sym ? " @" : "");
        if (sym) label_escape(out, sym);
        fprintf(out, "\\n%s\"%s];\n", t, n->op == EM3_OP_INPUT || n->op == EM3_OP_PARAM ? ", style=filled, fillcolor=\"#eeeeee\"" : "");
        if (n->origin) fprintf(out, "  }\n");
        for (int k = 0; k < n->n_in; k++) fprintf(out, "  n%d -> n%d;\n", n->in[k], i);
    }
    for (int i = 0; i < f->n_out; i++) {
        fprintf(out, "  out%d [label=\"", i);
        label_escape(out, f->out[i].name);
        fprintf(out, "\", shape=ellipse];\n  n%d -> out%d;\n", f->out[i].value, i);
    }
    fprintf(out, "}\n");
}
