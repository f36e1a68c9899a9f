/* tests/unit/test_shape_rules.c — every shape rule of ops.def through em3_func_add, from a
 * table of operand types and attributes written as text: a valid row checks the result type,
 * an invalid row the error. A test walks ops.def and fails for any op without both kinds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"

/* One row: operand types separated by spaces (for INPUT and CONST: the declared type), the
 * attributes as name=value (lists as [1,B], symbols as @name), and the expected result type,
 * or ERR(text) for a rejection whose message contains text. */
typedef struct {
    em3_op op;
    const char *operands, *attrs, *expect;
} shape_case;

#define ERR(text) "!" text

static const shape_case cases[] = {
    /* leaves */
    {EM3_OP_INPUT, "i32[B,50]", "name=@hist vocab=20000 pad=0", "i32[B,50]"},
    {EM3_OP_INPUT, "f32[B,0]", "name=@x", ERR("must be positive")},
    {EM3_OP_PARAM, "", "name=@w", "f32[4,8]"},
    {EM3_OP_PARAM, "", "name=@nope", ERR("no global named @nope")},
    {EM3_OP_CONST, "f32[]", "value=1.5", "f32[]"},
    {EM3_OP_CONST, "i32[3,-2]", "value=1", ERR("must be positive")},

    /* unary */
    {EM3_OP_NEG, "i32[B,3]", "", "i32[B,3]"},
    {EM3_OP_NEG, "f32[3] f32[3]", "", ERR("neg takes 1 operand, got 2")},
    {EM3_OP_ABS, "f32[B]", "", "f32[B]"},
    {EM3_OP_ABS, "", "", ERR("takes 1 operand, got 0")},
    {EM3_OP_STOP_GRADIENT, "f32[B,2]", "", "f32[B,2]"},
    {EM3_OP_STOP_GRADIENT, "f32[2] f32[2]", "", ERR("takes 1 operand")},
    {EM3_OP_EXP, "f32[B,3]", "", "f32[B,3]"},
    {EM3_OP_EXP, "i32[B,3]", "", ERR("exp needs a float tensor")},
    {EM3_OP_LOG, "f32[2]", "", "f32[2]"},
    {EM3_OP_LOG, "i32[2]", "", ERR("needs a float tensor")},
    {EM3_OP_SQRT, "f32[]", "", "f32[]"},
    {EM3_OP_SQRT, "i32[]", "", ERR("needs a float tensor")},
    {EM3_OP_RSQRT, "f32[B]", "", "f32[B]"},
    {EM3_OP_RSQRT, "i32[B]", "", ERR("needs a float tensor")},
    {EM3_OP_TANH, "f32[B]", "", "f32[B]"},
    {EM3_OP_TANH, "i32[B]", "", ERR("needs a float tensor")},
    {EM3_OP_SIGMOID, "f32[B,1]", "", "f32[B,1]"},
    {EM3_OP_SIGMOID, "i32[B,1]", "", ERR("needs a float tensor")},
    {EM3_OP_RELU, "f32[B,200]", "", "f32[B,200]"},
    {EM3_OP_RELU, "i32[B]", "", ERR("needs a float tensor")},
    {EM3_OP_GELU, "f32[B,64]", "", "f32[B,64]"},
    {EM3_OP_GELU, "i32[B]", "", ERR("needs a float tensor")},
    {EM3_OP_SOFTPLUS, "f32[4]", "", "f32[4]"},
    {EM3_OP_SOFTPLUS, "i32[4]", "", ERR("needs a float tensor")},
    {EM3_OP_CAST, "f32[B]", "to=i32", "i32[B]"},
    {EM3_OP_CAST, "i32[2,3]", "to=f32", "f32[2,3]"},
    {EM3_OP_CAST, "f32[B]", "to=7", ERR("unknown dtype")},

    /* binary, with numpy broadcasting where B meets only B or 1 */
    {EM3_OP_ADD, "f32[B,3] f32[3]", "", "f32[B,3]"},
    {EM3_OP_ADD, "f32[B,1] f32[1,3]", "", "f32[B,3]"},
    {EM3_OP_ADD, "f32[1] f32[B]", "", "f32[B]"},
    {EM3_OP_ADD, "f32[2,1,4] f32[B,1]", "", "f32[2,B,4]"},
    {EM3_OP_ADD, "f32[B,3] f32[5,3]", "", ERR("shapes do not broadcast")},
    {EM3_OP_ADD, "f32[3] i32[3]", "", ERR("element types differ")},
    {EM3_OP_SUB, "i32[B] i32[B]", "", "i32[B]"},
    {EM3_OP_SUB, "f32[B] f32[5]", "", ERR("do not broadcast")},
    {EM3_OP_MUL, "f32[B,4] f32[]", "", "f32[B,4]"},
    {EM3_OP_MUL, "f32[2,3] f32[3,2]", "", ERR("do not broadcast")},
    {EM3_OP_DIV, "f32[B] f32[1]", "", "f32[B]"},
    {EM3_OP_DIV, "i32[B] i32[B]", "", ERR("div needs float operands")},
    {EM3_OP_MAXIMUM, "f32[B,2] f32[2]", "", "f32[B,2]"},
    {EM3_OP_MAXIMUM, "f32[B] i32[B]", "", ERR("element types differ")},
    {EM3_OP_MINIMUM, "i32[3] i32[1]", "", "i32[3]"},
    {EM3_OP_MINIMUM, "i32[3] i32[4]", "", ERR("do not broadcast")},
    {EM3_OP_EQ, "i32[B,50] i32[]", "", "f32[B,50]"}, /* comparisons give f32 masks */
    {EM3_OP_EQ, "i32[B] f32[B]", "", ERR("element types differ")},
    {EM3_OP_NE, "i32[B,50] i32[1]", "", "f32[B,50]"},
    {EM3_OP_NE, "i32[B,50] i32[B]", "", ERR("do not broadcast")},
    {EM3_OP_LT, "f32[B] f32[B]", "", "f32[B]"},
    {EM3_OP_LT, "f32[B] f32[2]", "", ERR("do not broadcast")},
    {EM3_OP_LE, "f32[B,1] f32[3]", "", "f32[B,3]"},
    {EM3_OP_LE, "f32[2] f32[3]", "", ERR("do not broadcast")},
    {EM3_OP_GT, "i32[2] i32[2]", "", "f32[2]"},
    {EM3_OP_GT, "f32[B] i32[B]", "", ERR("element types differ")},
    {EM3_OP_GE, "f32[B] f32[]", "", "f32[B]"},
    {EM3_OP_GE, "f32[B] f32[3]", "", ERR("do not broadcast")},
    {EM3_OP_BCE_LOGITS, "f32[B,1] f32[B,1]", "", "f32[B,1]"},
    {EM3_OP_BCE_LOGITS, "f32[B] i32[B]", "", ERR("needs float operands")},
    {EM3_OP_WHERE, "f32[B,1] f32[3] f32[]", "", "f32[B,3]"},
    {EM3_OP_WHERE, "f32[B,50] i32[B,50] i32[1]", "", "i32[B,50]"},
    {EM3_OP_WHERE, "f32[B] f32[3] i32[3]", "", ERR("different element types")},
    {EM3_OP_WHERE, "f32[B] f32[4] f32[4]", "", ERR("do not broadcast")},

    /* reductions */
    {EM3_OP_SUM, "f32[B,3,4]", "axes=[0,2]", "f32[3]"},
    {EM3_OP_SUM, "f32[B,3]", "axes=[1] keepdims=1", "f32[B,1]"},
    {EM3_OP_SUM, "f32[2,3]", "axes=[2]", ERR("axis 2 is out of range")},
    {EM3_OP_SUM, "f32[2,3]", "axes=[]", ERR("at least one axis")},
    {EM3_OP_SUM, "f32[2,3]", "axes=[1,1]", ERR("given twice")},
    {EM3_OP_MEAN, "f32[B,3]", "axes=[0]", "f32[3]"},
    {EM3_OP_MEAN, "i32[B,3]", "axes=[0]", ERR("mean needs a float tensor")},
    {EM3_OP_MAX, "i32[B,3]", "axes=[1]", "i32[B]"},
    {EM3_OP_MAX, "f32[B]", "axes=[1]", ERR("out of range")},
    {EM3_OP_LOGSUMEXP, "f32[B,5]", "axis=1", "f32[B]"},
    {EM3_OP_LOGSUMEXP, "f32[B,5]", "axis=0 keepdims=1", "f32[1,5]"},
    {EM3_OP_LOGSUMEXP, "i32[B,5]", "axis=1", ERR("needs a float tensor")},
    {EM3_OP_LOGSUMEXP, "f32[B,5]", "axis=2", ERR("out of range")},
    {EM3_OP_SOFTMAX, "f32[B,4,9]", "axis=2", "f32[B,4,9]"},
    {EM3_OP_SOFTMAX, "f32[B,4]", "axis=2", ERR("out of range")},
    {EM3_OP_LOG_SOFTMAX, "f32[B,4]", "axis=1", "f32[B,4]"},
    {EM3_OP_LOG_SOFTMAX, "i32[B,4]", "axis=1", ERR("needs a float tensor")},
    {EM3_OP_LAYER_NORM, "f32[B,8,4] f32[4] f32[4]", "eps=1e-6", "f32[B,8,4]"},
    {EM3_OP_LAYER_NORM, "f32[B,4] f32[5] f32[4]", "", ERR("needs gamma of f32[4]")},
    {EM3_OP_LAYER_NORM, "f32[B,4] f32[4] f32[1,4]", "", ERR("needs beta of f32[4]")},
    {EM3_OP_LAYER_NORM, "f32[4,B] f32[4] f32[4]", "", ERR("cannot normalise over the batch")},

    /* data movement */
    {EM3_OP_RESHAPE, "f32[B,2,3]", "shape=[B,6]", "f32[B,6]"},
    {EM3_OP_RESHAPE, "f32[B,6]", "shape=[3,B,2]", "f32[3,B,2]"},
    {EM3_OP_RESHAPE, "f32[B,2,3]", "shape=[B,5]", ERR("element counts differ")},
    {EM3_OP_RESHAPE, "f32[B,2]", "shape=[4]", ERR("the batch dimension B must stay")},
    {EM3_OP_TRANSPOSE, "f32[B,2,3]", "perm=[2,0,1]", "f32[3,B,2]"},
    {EM3_OP_TRANSPOSE, "f32[2,3]", "perm=[0,0]", ERR("not a permutation")},
    {EM3_OP_TRANSPOSE, "f32[2,3]", "perm=[1]", ERR("permutation of 2 axes")},
    {EM3_OP_CONCAT, "f32[B,2] f32[B,3] f32[B,1]", "axis=1", "f32[B,6]"},
    {EM3_OP_CONCAT, "i32[2] i32[5]", "axis=0", "i32[7]"},
    {EM3_OP_CONCAT, "f32[B,2] f32[B,3]", "axis=0", ERR("does not fit")},
    {EM3_OP_CONCAT, "f32[B,2] f32[B,2]", "axis=0", ERR("along the batch dimension")},
    {EM3_OP_CONCAT, "f32[2] i32[2]", "axis=0", ERR("does not fit")},
    {EM3_OP_CONCAT, "f32[2] f32[2]", "axis=1", ERR("out of range")},
    {EM3_OP_CONCAT, "", "axis=0", ERR("at least 1 operand")},
    {EM3_OP_SLICE, "f32[B,5]", "axis=1 start=1 end=4", "f32[B,3]"},
    {EM3_OP_SLICE, "f32[B,5]", "axis=1 start=3 end=6", ERR("out of range")},
    {EM3_OP_SLICE, "f32[B,5]", "axis=1 start=2 end=2", ERR("out of range")},
    {EM3_OP_SLICE, "f32[B,5]", "axis=0 start=0 end=1", ERR("along the batch dimension")},
    {EM3_OP_BROADCAST, "f32[3]", "shape=[B,2,3]", "f32[B,2,3]"},
    {EM3_OP_BROADCAST, "f32[B,1]", "shape=[B,4]", "f32[B,4]"},
    {EM3_OP_BROADCAST, "f32[B,3]", "shape=[B,4]", ERR("cannot broadcast")},
    {EM3_OP_BROADCAST, "f32[2,3]", "shape=[3]", ERR("cannot broadcast")},
    {EM3_OP_BROADCAST, "f32[5]", "shape=[B]", ERR("cannot broadcast")},

    /* GEMM: ta/tb transpose the last two dims; leading dims broadcast */
    {EM3_OP_MATMUL, "f32[B,3] f32[3,4]", "", "f32[B,4]"},
    {EM3_OP_MATMUL, "f32[3,B] f32[3,4]", "ta=1", "f32[B,4]"},
    {EM3_OP_MATMUL, "f32[2,3] f32[4,3]", "tb=1", "f32[2,4]"},
    {EM3_OP_MATMUL, "f32[B,4,3] f32[B,5,4]", "ta=1 tb=1", "f32[B,3,5]"},
    {EM3_OP_MATMUL, "f32[2,1,3,4] f32[5,4,6]", "", "f32[2,5,3,6]"},
    {EM3_OP_MATMUL, "f32[B,8,16] f32[1,16,16]", "", "f32[B,8,16]"},
    {EM3_OP_MATMUL, "f32[B,3] f32[4,4]", "", ERR("inner dimensions differ")},
    {EM3_OP_MATMUL, "f32[3,4] f32[3,4]", "ta=0 tb=0", ERR("inner dimensions differ")},
    {EM3_OP_MATMUL, "f32[3] f32[3,4]", "", ERR("rank >= 2")},
    {EM3_OP_MATMUL, "f32[2,3,4] f32[5,4,6]", "", ERR("batch dimensions do not broadcast")},
    {EM3_OP_MATMUL, "f32[B,3,4] f32[5,4,6]", "", ERR("batch dimensions do not broadcast")},
    {EM3_OP_MATMUL, "i32[2,2] f32[2,2]", "", ERR("float operands")},

    /* gather */
    {EM3_OP_GATHER, "f32[10,4] i32[B,3]", "", "f32[B,3,4]"},
    {EM3_OP_GATHER, "i32[10,16] i32[B]", "", "i32[B,16]"},
    {EM3_OP_GATHER, "f32[10] i32[B]", "", "f32[B]"},
    {EM3_OP_GATHER, "f32[10,4] f32[B]", "", ERR("gather needs i32 ids")},
    {EM3_OP_GATHER, "f32[B,4] i32[3]", "", ERR("fixed number of rows")},
};

/* ---- reading the table's text ------------------------------------------------------------- */

static int64_t parse_dim(const char **p) {
    if (**p == 'B') {
        (*p)++;
        return EM3_DIM_BATCH;
    }
    char *end;
    int64_t v = strtoll(*p, &end, 10);
    assert_true(end != *p);
    *p = end;
    return v;
}

/* "[1,B,3]" at *p; returns the count. */
static int parse_list(const char **p, int64_t *out, int cap) {
    assert_true(**p == '[');
    (*p)++;
    int n = 0;
    while (**p != ']') {
        assert_true(n < cap);
        out[n++] = parse_dim(p);
        if (**p == ',') (*p)++;
    }
    (*p)++;
    return n;
}

/* "f32[B,3]" at *p. */
static em3_type parse_type(const char **p) {
    char dt[4] = {0};
    memcpy(dt, *p, 3);
    em3_type t = {0};
    assert_true(em3_dtype_parse(dt, &t.dtype));
    *p += 3;
    t.rank = parse_list(p, t.dim, EM3_MAX_RANK);
    return t;
}

/* Lists and symbols of a node being built: they must live until em3_func_add copies them. */
typedef struct {
    int64_t list[EM3_MAX_ATTRS][EM3_MAX_RANK];
    char sym[EM3_MAX_ATTRS][32];
} attr_store;

/* Applies "name=value ..." to `n`. */
static void apply_attrs(em3_node *n, const char *text, attr_store *st) {
    const char *p = text;
    while (*p == ' ') p++;
    for (int k = 0; *p; k++) {
        const char *eq = strchr(p, '='), *end = p + strcspn(p, " ");
        assert_true(eq && eq < end && k < EM3_MAX_ATTRS);
        char name[32] = {0}, val[64] = {0};
        memcpy(name, p, (size_t)(eq - p));
        memcpy(val, eq + 1, (size_t)(end - eq - 1));
        int slot = em3_op_attr_slot(n->op, name);
        if (slot < 0) fail_msg("%s has no attribute %s", em3_op_name(n->op), name);
        em3_attr_kind kind = em3_op_attr(n->op, slot).kind;
        em3_dtype dt;
        const char *q = val;
        if (kind == EM3_ATTR_INTS || kind == EM3_ATTR_SHAPE) {
            em3_node_set_list(n, name, st->list[k], parse_list(&q, st->list[k], EM3_MAX_RANK));
        } else if (kind == EM3_ATTR_FLOAT) {
            em3_node_set_f(n, name, strtod(val, NULL));
        } else if (kind == EM3_ATTR_SYMBOL) {
            assert_true(val[0] == '@');
            strcpy(st->sym[k], val + 1);
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

/* ---- the tests ---------------------------------------------------------------------------- */

static bool is_leaf(em3_op op) { return em3_op_kind_of(op) == EM3_KIND_LEAF; }

/* Builds row `c` in a fresh function of `m`: operands become inputs of the given types. Returns
 * the value id or -1 with the message in err. */
static int build(em3_module *m, int row, const shape_case *c, char *err, size_t errlen) {
    char fname[32];
    snprintf(fname, sizeof fname, "case%d", row);
    em3_func *f = em3_module_add_func(m, fname);
    em3_node n = em3_node_proto(c->op, (em3_loc){0});
    attr_store st;
    apply_attrs(&n, c->attrs, &st);
    int in[8], n_in = 0;
    const char *p = c->operands;
    while (*p == ' ') p++;
    if (is_leaf(c->op)) {
        if (*p) n.type = parse_type(&p);
    } else {
        for (; *p; n_in++) {
            assert_true(n_in < 8);
            em3_node o = em3_node_proto(EM3_OP_INPUT, (em3_loc){0});
            char name[8];
            snprintf(name, sizeof name, "o%d", n_in);
            em3_node_set_s(&o, "name", name);
            o.type = parse_type(&p);
            in[n_in] = em3_func_add_checked(f, &o, NULL, 0);
            while (*p == ' ') p++;
        }
    }
    err[0] = 0;
    return em3_func_add(f, &n, in, n_in, err, errlen);
}

static em3_module *test_module(void) {
    em3_module *m = em3_module_create("shapes");
    em3_init none = {EM3_INIT_NONE, 0};
    em3_module_add_global(m, "w", em3_type_make(EM3_DTYPE_F32, 2, (int64_t[]){4, 8}),
                          EM3_GLOBAL_PARAM, none, (em3_loc){0});
    return m;
}

static void test_every_row(void **state) {
    (void)state;
    em3_module *m = test_module();
    int failures = 0;
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        const shape_case *c = &cases[i];
        char err[256], got[EM3_TYPE_STR_MAX];
        int id = build(m, i, c, err, sizeof err);
        const char *what = NULL;
        if (c->expect[0] == '!') {
            if (id >= 0)
                what = "accepted";
            else if (!err[0] || !strstr(err, c->expect + 1))
                what = "rejected with another message";
        } else if (id < 0) {
            what = "rejected";
        } else {
            const char *p = c->expect;
            em3_type want = parse_type(&p);
            const em3_node *nd = em3_func_node(m->func[m->n_func - 1], id);
            if (!em3_type_eq(&nd->type, &want)) what = "typed differently";
        }
        if (what) {
            const em3_func *f = m->func[m->n_func - 1];
            print_error("row %d: %s(%s) {%s}: want %s, %s: %s\n", i, em3_op_name(c->op),
                        c->operands, c->attrs, c->expect, what,
                        id >= 0 ? em3_type_str(&f->node[id].type, got, sizeof got) : err);
            failures++;
        }
    }
    em3_module_free(m);
    assert_int_equal(failures, 0);
}

/* A new op in ops.def must get a valid and an invalid row here. */
static void test_every_op_has_rows(void **state) {
    (void)state;
    bool valid[EM3_OP_COUNT] = {0}, invalid[EM3_OP_COUNT] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        (cases[i].expect[0] == '!' ? invalid : valid)[cases[i].op] = true;
    int missing = 0;
    for (int op = 0; op < EM3_OP_COUNT; op++)
        if (!valid[op] || !invalid[op]) {
            print_error("op %s has no %s row\n", em3_op_name((em3_op)op),
                        valid[op] ? "invalid" : "valid");
            missing++;
        }
    assert_int_equal(missing, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_row),
        cmocka_unit_test(test_every_op_has_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
