/* ir/program.c — the programs of fused elementwise nodes (see program.h). */
#include "program.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static bool perr(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool perr(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return false;
}

static const char *skip(const char *s) {
    while (*s == ' ') s++;
    return s;
}

bool em3_program_parse(const char *text, em3_program *p, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    const char *s = skip(text);
    while (*s) {
        if (p->n == EM3_PROGRAM_MAX) return perr(err, errlen, "program longer than %d instructions", EM3_PROGRAM_MAX);
        em3_pinstr *in = &p->ins[p->n];
        char name[32];
        size_t len = 0;
        while ((isalnum((unsigned char)s[len]) || s[len] == '_' || s[len] == '.') && len < sizeof name - 1) len++;
        memcpy(name, s, len);
        name[len] = 0;
        char *dot = strchr(name, '.');
        if (dot) *dot = 0;
        if (!em3_op_parse(name, &in->op) || em3_op_kind_of(in->op) != EM3_KIND_ELEMWISE ||
            (em3_op_flags(in->op) & EM3_OPF_SIDE_EFFECT) || in->op == EM3_OP_FUSED)
            return perr(err, errlen, "instruction %d: '%s' is not an elementwise op", p->n, name);
        if ((in->op == EM3_OP_CAST) != (dot != NULL) || (dot && !em3_dtype_parse(dot + 1, &in->to)))
            return perr(err, errlen, "instruction %d: a cast is written cast.f32 or cast.i32", p->n);
        s = skip(s + len);
        if (*s++ != '(') return perr(err, errlen, "instruction %d: expected '('", p->n);
        for (;;) {
            s = skip(s);
            if (in->n_args == 3) return perr(err, errlen, "instruction %d: too many arguments", p->n);
            em3_parg *a = &in->arg[in->n_args++];
            char *end;
            if (*s == '%' || *s == '#') {
                a->kind = *s == '%' ? EM3_ARG_OPERAND : EM3_ARG_RESULT;
                long v = strtol(s + 1, &end, 10);
                if (end == s + 1 || v < 0 || v > 1000) return perr(err, errlen, "instruction %d: bad reference", p->n);
                a->index = (int)v;
                if (a->kind == EM3_ARG_RESULT && a->index >= p->n)
                    return perr(err, errlen, "instruction %d refers to #%d, not computed yet", p->n, a->index);
            } else {
                a->kind = EM3_ARG_CONST;
                a->value = strtod(s, &end);
                if (end == s) return perr(err, errlen, "instruction %d: expected %%k, #j or a number", p->n);
            }
            s = skip(end);
            if (*s == ',') {
                s++;
                continue;
            }
            if (*s++ != ')') return perr(err, errlen, "instruction %d: expected ')'", p->n);
            break;
        }
        if (in->n_args != em3_op_arity(in->op))
            return perr(err, errlen, "instruction %d: %s takes %d arguments", p->n, em3_op_name(in->op),
                        em3_op_arity(in->op));
        p->n++;
        s = skip(s);
        if (*s == ';') s = skip(s + 1);
        else if (*s) return perr(err, errlen, "instruction %d: expected ';'", p->n - 1);
    }
    return p->n > 0 || perr(err, errlen, "an empty program");
}

void em3_program_print(const em3_program *p, em3_strbuf *sb) {
    for (int i = 0; i < p->n; i++) {
        const em3_pinstr *in = &p->ins[i];
        em3_sb_printf(sb, "%s%s%s%s(", i ? "; " : "", em3_op_name(in->op), in->op == EM3_OP_CAST ? "." : "",
                      in->op == EM3_OP_CAST ? em3_dtype_name(in->to) : "");
        for (int a = 0; a < in->n_args; a++) {
            const em3_parg *g = &in->arg[a];
            if (a) em3_sb_printf(sb, ", ");
            if (g->kind == EM3_ARG_CONST) {
                char num[40];
                em3_format_double(num, sizeof num, g->value);
                em3_sb_printf(sb, "%s", num);
            } else {
                em3_sb_printf(sb, "%c%d", g->kind == EM3_ARG_OPERAND ? '%' : '#', g->index);
            }
        }
        em3_sb_putc(sb, ')');
    }
}

em3_dtype em3_program_arg_dtype(const em3_program *p, const em3_pinstr *ins, int a, const em3_dtype *operands) {
    const em3_parg *g = &ins->arg[a];
    if (g->kind == EM3_ARG_OPERAND) return operands[g->index];
    if (g->kind == EM3_ARG_RESULT) return p->ins[g->index].dtype;
    for (int k = 0; k < ins->n_args; k++) /* a number takes its neighbour's type */
        if (ins->arg[k].kind != EM3_ARG_CONST && !(ins->op == EM3_OP_WHERE && k == 0))
            return em3_program_arg_dtype(p, ins, k, operands);
    return EM3_DTYPE_F32;
}

em3_node em3_program_node(const em3_pinstr *ins) {
    em3_node n = em3_node_proto(ins->op, (em3_loc){0});
    if (ins->op == EM3_OP_CAST) em3_node_set_i(&n, "to", ins->to);
    n.n_in = ins->n_args;
    return n;
}

bool em3_program_check(em3_program *p, const em3_dtype *operands, int n_operands, char *err,
                       size_t errlen) {
    for (int i = 0; i < p->n; i++) {
        em3_pinstr *in = &p->ins[i];
        em3_type t[3];
        for (int a = 0; a < in->n_args; a++) {
            if (in->arg[a].kind == EM3_ARG_OPERAND && in->arg[a].index >= n_operands)
                return perr(err, errlen, "instruction %d uses operand %%%d of %d", i, in->arg[a].index, n_operands);
            t[a] = em3_type_make(em3_program_arg_dtype(p, in, a, operands), 0, NULL);
        }
        em3_node n = em3_program_node(in);
        em3_type out;
        char why[200];
        if (!em3_op_shape_rule(in->op)(NULL, &n, t, &out, why, sizeof why))
            return perr(err, errlen, "instruction %d: %s", i, why);
        in->dtype = out.dtype;
    }
    return true;
}
