/* tests/unit/op_text.h — the text notation the table-driven op tests (test_shape_rules.c,
 * test_gradcheck.c) write their rows in: types "f32[B,3]" (B*k for k·B, U1*k for k·U1) and attributes
 * "axes=[0,2] keepdims=1 name=@x to=i32". Include after cmocka.h. */
#ifndef EM3_TEST_OP_TEXT_H
#define EM3_TEST_OP_TEXT_H

#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"

/* "64", "B", "B*k", "U1" or "U1*k" at *p. */
static int64_t op_text_dim(const char **p) {
    if (**p == 'B' || **p == 'U') {
        int sym = **p == 'U' ? (*++*p) - '0' : 0;
        (*p)++;
        if (**p != '*') return em3_dim_make(sym, 1);
        (*p)++;
        return em3_dim_make(sym, op_text_dim(p));
    }
    char *end;
    int64_t v = strtoll(*p, &end, 10);
    assert_true(end != *p);
    *p = end;
    return v;
}

/* "[1,B,3]" at *p; returns the count. */
static int op_text_list(const char **p, int64_t *out, int cap) {
    assert_true(**p == '[');
    (*p)++;
    int n = 0;
    while (**p != ']') {
        assert_true(n < cap);
        out[n++] = op_text_dim(p);
        if (**p == ',') (*p)++;
    }
    (*p)++;
    return n;
}

/* "f32[B,3]" at *p. */
static em3_type op_text_type(const char **p) {
    char dt[4] = {0};
    memcpy(dt, *p, 3);
    em3_type t = {0};
    assert_true(em3_dtype_parse(dt, &t.dtype));
    *p += 3;
    t.rank = op_text_list(p, t.dim, EM3_MAX_RANK);
    return t;
}

/* Lists and symbols of a node being built: they must live until em3_func_add copies them. */
typedef struct {
    int64_t list[EM3_MAX_ATTRS][EM3_MAX_RANK];
    char sym[EM3_MAX_ATTRS][128];
} op_text_store;

/* Applies "name=value ..." to `n`. */
static void op_text_attrs(em3_node *n, const char *text, op_text_store *st) {
    const char *p = text;
    while (*p == ' ') p++;
    for (int k = 0; *p; k++) {
        const char *eq = strchr(p, '='), *end = p + strcspn(p, " ");
        assert_true(eq && eq < end && k < EM3_MAX_ATTRS);
        char name[32] = {0}, val[128] = {0};
        memcpy(name, p, (size_t)(eq - p));
        memcpy(val, eq + 1, (size_t)(end - eq - 1));
        int slot = em3_op_attr_slot(n->op, name);
        if (slot < 0) fail_msg("%s has no attribute %s", em3_op_name(n->op), name);
        em3_attr_kind kind = em3_op_attr(n->op, slot).kind;
        em3_dtype dt;
        const char *q = val;
        if (kind == EM3_ATTR_INTS || kind == EM3_ATTR_SHAPE) {
            em3_node_set_list(n, name, st->list[k], op_text_list(&q, st->list[k], EM3_MAX_RANK));
        } else if (kind == EM3_ATTR_FLOAT) {
            em3_node_set_f(n, name, strtod(val, NULL));
        } else if (kind == EM3_ATTR_SYMBOL) {
            assert_true(val[0] == '@');
            strcpy(st->sym[k], val + 1);
            em3_node_set_s(n, name, st->sym[k]);
        } else if (kind == EM3_ATTR_STRING) { /* no spaces: a program reads fine without them */
            strcpy(st->sym[k], val);
            em3_node_set_s(n, name, st->sym[k]);
        } else if (kind == EM3_ATTR_DTYPE && em3_dtype_parse(val, &dt)) {
            em3_node_set_i(n, name, dt);
        } else {
            em3_node_set_i(n, name, strtoll(val, NULL, 10));
        }
        p = end;
        while (*p == ' ') p++;
    }
}

#endif
