/* tests/unit/test_ir_parse.c — the IR text parser (ir/parse.c): modules built with the builder
 * API print, parse and print again byte for byte; malformed text gives the located error it
 * should; and hostile input (mutated dumps, binary bytes, huge tokens, deep brackets) never
 * crashes, hangs or reads past the buffer. Every input is parsed from an exact-size heap copy
 * without a terminating NUL, so AddressSanitizer sees any over-read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"

#define B EM3_DIM_BATCH
#define F32 EM3_DTYPE_F32
#define I32 EM3_DTYPE_I32

/* ---- parsing helpers ------------------------------------------------------------------------- */

/* Parses `len` bytes of `text` from a heap copy of exactly that size; the diagnostics land in
 * `*diag_out` (malloc'ed) when it is given. */
static em3_module *parse_n(const char *text, size_t len, char **diag_out) {
    char *copy = malloc(len ? len : 1);
    if (len) memcpy(copy, text, len);
    char *buf = NULL;
    size_t buflen = 0;
    FILE *out = open_memstream(&buf, &buflen);
    em3_diag *d = em3_diag_create(out);
    em3_module *m = em3_module_parse(copy, len, "t.ir", d);
    assert_true((m == NULL) == (em3_diag_error_count(d) > 0));
    em3_diag_free(d);
    fclose(out);
    free(copy);
    if (diag_out)
        *diag_out = buf;
    else
        free(buf);
    return m;
}

static em3_module *parse(const char *text, char **diag_out) {
    return parse_n(text, strlen(text), diag_out);
}

/* print → parse → print must reproduce the text exactly, with and without locations. */
static void assert_round_trip(const em3_module *m) {
    const unsigned flags[] = {0, EM3_PRINT_LOC};
    for (int i = 0; i < 2; i++) {
        char *s1 = em3_module_to_string(m, flags[i]), *diag = NULL;
        em3_module *m2 = parse(s1, &diag);
        if (!m2) fprintf(stderr, "%s\n--- does not parse:\n%s", s1, diag);
        assert_non_null(m2);
        char *s2 = em3_module_to_string(m2, flags[i]);
        assert_string_equal(s1, s2);
        free(s1);
        free(s2);
        free(diag);
        em3_module_free(m2);
    }
}

/* Whether text fails with `want` (e.g. "3:7: error: expected ...") among the diagnostics;
 * says what it got when not. */
static bool fails_with(const char *text, const char *want) {
    char *diag = NULL;
    em3_module *m = parse(text, &diag);
    bool ok = !m && strstr(diag, want);
    if (!ok) fprintf(stderr, "input:\n%s\n--- wanted: %s\n--- got:\n%s\n", text, want, diag);
    em3_module_free(m);
    free(diag);
    return ok;
}

/* ---- building -------------------------------------------------------------------------------- */

static em3_type ty(em3_dtype dt, int rank, ...) {
    int64_t d[EM3_MAX_RANK];
    va_list ap;
    va_start(ap, rank);
    for (int i = 0; i < rank; i++) d[i] = va_arg(ap, int);
    va_end(ap);
    return em3_type_make(dt, rank, d);
}

static int add(em3_func *f, em3_node p, int n, ...) {
    int in[8];
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) in[i] = va_arg(ap, int);
    va_end(ap);
    return em3_func_add_checked(f, &p, in, n);
}

static em3_node at(em3_op op, int line) {
    return em3_node_proto(op, (em3_loc){"model.em3", line, 5});
}

static int input(em3_func *f, const char *name, em3_type t) {
    em3_node p = at(EM3_OP_INPUT, 1);
    em3_node_set_s(&p, "name", name);
    p.type = t;
    return add(f, p, 0);
}

static int with_list(em3_func *f, em3_op op, const char *attr, const int64_t *v, int n, int x) {
    em3_node p = at(op, 2);
    em3_node_set_list(&p, attr, v, n);
    return add(f, p, 1, x);
}

static int with_int(em3_func *f, em3_op op, const char *attr, int64_t v, int x) {
    em3_node p = at(op, 3);
    em3_node_set_i(&p, attr, v);
    return add(f, p, 1, x);
}

static int read_global(em3_func *f, const char *name) {
    em3_node p = at(EM3_OP_PARAM, 1);
    em3_node_set_s(&p, "name", name);
    return add(f, p, 0);
}

/* A module that uses every op of ops.def, every global kind and init, attributes at and away
 * from their defaults, B shapes, origins, locations and names that need quoting. */
static em3_module *build_all_ops(void) {
    em3_module *m = em3_module_create("all_ops");
    em3_loc nl = {0};
    em3_module_add_global(m, "emb", ty(F32, 2, 100, 8), EM3_GLOBAL_PARAM,
                          (em3_init){EM3_INIT_NORMAL, 0.01}, nl);
    em3_module_add_global(m, "gamma", ty(F32, 1, 8), EM3_GLOBAL_FROZEN,
                          (em3_init){EM3_INIT_ONES, 0}, nl);
    em3_module_add_global(m, "beta", ty(F32, 1, 8), EM3_GLOBAL_PARAM, (em3_init){EM3_INIT_ZEROS, 0},
                          nl);
    em3_module_add_global(m, "w", ty(F32, 2, 8, 4), EM3_GLOBAL_PARAM,
                          (em3_init){EM3_INIT_XAVIER, 0}, nl);
    em3_module_add_global(m, "side table", ty(I32, 2, 100, 3), EM3_GLOBAL_DATA,
                          (em3_init){EM3_INIT_NONE, 0}, nl);
    em3_module_add_global(m, "adam.m", ty(F32, 1, 8), EM3_GLOBAL_STATE,
                          (em3_init){EM3_INIT_CONST, -1.5}, nl);
    em3_module_add_global(m, "adam.v", ty(F32, 1, 8), EM3_GLOBAL_STATE,
                          (em3_init){EM3_INIT_ZEROS, 0}, nl);
    em3_module_add_global(m, "emb.m", ty(F32, 2, 100, 8), EM3_GLOBAL_STATE,
                          (em3_init){EM3_INIT_NONE, 0}, nl);
    em3_module_add_global(m, "emb.v", ty(F32, 2, 100, 8), EM3_GLOBAL_STATE,
                          (em3_init){EM3_INIT_NONE, 0}, nl);
    em3_module_add_global(m, "u", ty(F32, 0), EM3_GLOBAL_PARAM,
                          (em3_init){EM3_INIT_UNIFORM, 1e-300}, nl);
    em3_module_add_global(m, "lora.a", ty(F32, 2, 8, 2), EM3_GLOBAL_PARAM,
                          (em3_init){EM3_INIT_NORMAL, 0.01}, nl);
    em3_module_add_global(m, "lora.b", ty(F32, 2, 2, 4), EM3_GLOBAL_PARAM,
                          (em3_init){EM3_INIT_ZEROS, 0}, nl);
    em3_module_add_graph(m, "ui", ty(F32, 2, 7, 100), "item_knn k=3 tables=\"image\",text", nl);

    em3_func *f = em3_module_add_func(m, "train");
    int x = input(f, "x", ty(F32, 3, B, 4, 8));
    em3_node p = at(EM3_OP_INPUT, 1);
    em3_node_set_s(&p, "name", "ids");
    em3_node_set_i(&p, "vocab", 100);
    em3_node_set_i(&p, "pad", 0);
    p.type = ty(I32, 2, B, 5);
    int ids = add(f, p, 0);
    p = at(EM3_OP_INPUT, 1);
    em3_node_set_s(&p, "name", "label");
    em3_node_set_i(&p, "label", 1);
    p.type = ty(F32, 1, B);
    int label = add(f, p, 0);
    int emb = read_global(f, "emb");
    p = at(EM3_OP_CONST, 1);
    em3_node_set_f(&p, "value", 0.5);
    p.type = ty(F32, 0);
    int half = add(f, p, 0);

    int last = x;
    for (em3_op op = EM3_OP_NEG; op <= EM3_OP_SOFTPLUS; op++) last = add(f, at(op, 4), 1, x);
    add(f, at(EM3_OP_STOP_GRADIENT, 4), 1, last);
    with_int(f, EM3_OP_CAST, "to", F32, ids);
    int cmp = x;
    for (em3_op op = EM3_OP_ADD; op <= EM3_OP_GE; op++)
        cmp = add(f, at(op, 5), 2, x, op % 2 ? half : last);
    int where = add(f, at(EM3_OP_WHERE, 6), 3, cmp, x, last);

    int sum = with_list(f, EM3_OP_SUM, "axes", (int64_t[]){1, 2}, 2, where);
    em3_node mean = at(EM3_OP_MEAN, 7);
    em3_node_set_list(&mean, "axes", (int64_t[]){2}, 1);
    em3_node_set_i(&mean, "keepdims", 1);
    add(f, mean, 1, x);
    with_list(f, EM3_OP_MAX, "axes", (int64_t[]){1}, 1, x);
    with_int(f, EM3_OP_LOGSUMEXP, "axis", 2, x);
    with_int(f, EM3_OP_SOFTMAX, "axis", 2, x);
    with_int(f, EM3_OP_LOG_SOFTMAX, "axis", 1, x);
    int loss = add(f, at(EM3_OP_BCE_LOGITS, 8), 2, sum, label);

    int gamma = read_global(f, "gamma"), beta = read_global(f, "beta");
    em3_node ln = at(EM3_OP_LAYER_NORM, 9);
    ln.origin = "sub,mul,rsqrt";
    int norm = add(f, ln, 3, x, gamma, beta);
    em3_node_set_f(&ln, "eps", 1e-6);
    add(f, ln, 3, x, gamma, beta);

    with_list(f, EM3_OP_RESHAPE, "shape", (int64_t[]){B, 32}, 2, norm);
    int tr = with_list(f, EM3_OP_TRANSPOSE, "perm", (int64_t[]){0, 2, 1}, 3, x);
    em3_node cat = at(EM3_OP_CONCAT, 10);
    em3_node_set_i(&cat, "axis", 1);
    add(f, cat, 3, x, x, norm);
    em3_node sl = at(EM3_OP_SLICE, 11);
    em3_node_set_i(&sl, "axis", 1);
    em3_node_set_i(&sl, "start", 1);
    em3_node_set_i(&sl, "end", 3);
    add(f, sl, 1, x);
    with_list(f, EM3_OP_BROADCAST, "shape", (int64_t[]){B, 4, 8}, 3, half);
    add(f, at(EM3_OP_MATMUL, 12), 2, x, tr);
    em3_node mm = at(EM3_OP_MATMUL, 12);
    em3_node_set_i(&mm, "tb", 1);
    mm.origin = "";
    add(f, mm, 2, x, x);
    int g = add(f, at(EM3_OP_GATHER, 13), 2, emb, ids);
    em3_node sp = at(EM3_OP_SPMM, 13);
    em3_node_set_s(&sp, "graph", "ui");
    int spx = add(f, sp, 1, emb);
    em3_node_set_i(&sp, "transpose", 1);
    add(f, sp, 1, spx);
    with_list(f, EM3_OP_RESHAPE, "shape", (int64_t[]){-5, 8}, 2, g); /* f32[B*5, 8] */
    /* a batch's distinct ids: U1 dimensions, gathered back to the ids' rows */
    int flat = with_list(f, EM3_OP_RESHAPE, "shape", (int64_t[]){-5}, 1, ids);
    em3_node un = at(EM3_OP_UNIQUE, 13);
    em3_node_set_i(&un, "sym", 1);
    int uniq = add(f, un, 1, flat);
    int pos = add(f, at(EM3_OP_INDEX_OF, 13), 2, flat, uniq);
    int urows = add(f, at(EM3_OP_GATHER, 13), 2, emb, uniq); /* f32[U1, 8] */
    with_list(f, EM3_OP_RESHAPE, "shape", (int64_t[]){em3_dim_make(1, 8)}, 1, urows);
    add(f, at(EM3_OP_GATHER, 13), 2, urows, pos);

    /* fused ops, as the fusion passes make them (with their origin) */
    int mask = input(f, "mask", ty(F32, 3, B, 1, 4));
    em3_node att = at(EM3_OP_ATTENTION, 17);
    em3_node_set_f(&att, "scale", 0.125);
    att.origin = "matmul,mul,sub,mul,add,softmax,mul,matmul";
    int o = add(f, att, 4, x, x, x, mask);
    add(f, at(EM3_OP_ATTENTION, 17), 3, x, x, norm);
    em3_node ag = at(EM3_OP_ATTENTION_GRAD, 17);
    em3_node_set_f(&ag, "scale", 0.125);
    add(f, ag, 6, x, x, x, o, o, mask);
    em3_node fz = at(EM3_OP_FUSED, 18);
    em3_node_set_s(&fz, "program", "mul(%0, %1); add(#0, 1.5); relu(#1)");
    fz.origin = "mul,add,relu";
    add(f, fz, 2, x, x);
    em3_node lora = at(EM3_OP_LORA_MATMUL, 18);
    em3_node_set_f(&lora, "scale", 4);
    lora.origin = "matmul,matmul,matmul,mul,add";
    add(f, lora, 4, x, read_global(f, "w"), read_global(f, "lora.a"), read_global(f, "lora.b"));

    /* backward helpers and optimizer updates (operand roles: see ops.def) */
    add(f, at(EM3_OP_SCATTER_ADD, 14), 3, emb, ids, g);
    with_list(f, EM3_OP_NUMEL, "axes", (int64_t[]){0, 1}, 2, x);
    add(f, at(EM3_OP_GELU_GRAD, 14), 2, x, x);
    em3_node lng = at(EM3_OP_LAYER_NORM_GRAD, 14);
    em3_node_set_f(&lng, "eps", 1e-3);
    add(f, lng, 3, x, gamma, x);
    add(f, at(EM3_OP_SPARSE_SQNORM, 14), 2, ids, g);
    int lr = input(f, "lr", ty(F32, 0)), step = input(f, "step", ty(F32, 0));
    int m1 = read_global(f, "adam.m"), m2 = read_global(f, "adam.v");
    int e1 = read_global(f, "emb.m"), e2 = read_global(f, "emb.v");
    em3_node sgd = at(EM3_OP_SGD_UPDATE, 15);
    em3_node_set_f(&sgd, "wd", 0.01);
    add(f, sgd, 3, beta, gamma, lr);
    add(f, at(EM3_OP_MOMENTUM_UPDATE, 15), 4, beta, gamma, lr, m1);
    em3_node adam = at(EM3_OP_ADAM_UPDATE, 15);
    em3_node_set_f(&adam, "beta2", 0.98);
    em3_node_set_i(&adam, "decoupled", 1);
    add(f, adam, 6, beta, gamma, lr, step, m1, m2);
    add(f, at(EM3_OP_ADAGRAD_UPDATE, 15), 4, beta, gamma, lr, m1);
    add(f, at(EM3_OP_SPARSE_SGD_UPDATE, 16), 4, emb, ids, g, lr);
    add(f, at(EM3_OP_SPARSE_ADAM_UPDATE, 16), 7, emb, ids, g, lr, step, e1, e2);
    add(f, at(EM3_OP_SPARSE_ADAGRAD_UPDATE, 16), 5, emb, ids, g, lr, e1);
    em3_node drop = at(EM3_OP_DROPOUT, 17);
    em3_node_set_f(&drop, "p", 0.125);
    add(f, drop, 1, x);
    em3_node dtr = at(EM3_OP_DROPOUT_TRAIN, 17);
    em3_node_set_f(&dtr, "p", 0.3);
    em3_node_set_i(&dtr, "salt", 41);
    add(f, dtr, 3, x, step, step);

    em3_func_add_output(f, "loss", loss);
    em3_func_add_output(f, "emb rows", g);
    em3_func_add_output(f, "x", x);

    /* walks ops.def: a new op needs a line above, or its text form is untested */
    bool seen[EM3_OP_COUNT] = {0};
    int missing = 0;
    for (int i = 0; i < f->n_node; i++) seen[f->node[i].op] = true;
    for (int op = 0; op < EM3_OP_COUNT; op++)
        if (!seen[op])
            fprintf(stderr, "op %s is not in the round-trip module\n", em3_op_name(op)), missing++;
    assert_int_equal(missing, 0);

    em3_func *e = em3_module_add_func(m, "empty");
    (void)e;
    return m;
}

/* ---- round trips ----------------------------------------------------------------------------- */

static void test_round_trip_all_ops(void **state) {
    (void)state;
    em3_module *m = build_all_ops();
    char err[512];
    if (!em3_module_verify(m, err, sizeof err)) fail_msg("%s", err);
    assert_round_trip(m);
    em3_module_free(m);
}

/* Values at the edges of what the text form can carry. */
static void test_round_trip_extremes(void **state) {
    (void)state;
    em3_module *m = em3_module_create("");
    const double fs[] = {NAN, -NAN,  INFINITY,    -INFINITY, -0.0, 5e-324, 1.7976931348623157e308,
                         0.1, 1e-05, 123456789.0, -2.5e-10};
    const char *names[] = {"9lives",   "with space", "q\"b\\s", "\xc3\xa9t\xc3\xa9",
                           "\x01\x7f", "a.b_c",      "B",       "true"};
    em3_func *f = em3_module_add_func(m, "\"quoted\" fn");
    for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) {
        em3_node p = em3_node_proto(EM3_OP_CONST, (em3_loc){0});
        em3_node_set_f(&p, "value", fs[i]);
        p.type = ty(F32, 1, 2147483647);
        em3_func_add_checked(f, &p, NULL, 0);
        char name[16];
        snprintf(name, sizeof name, "%zu", i);
        em3_module_add_global(m, name, ty(F32, 1, 1), EM3_GLOBAL_STATE,
                              (em3_init){EM3_INIT_CONST, fs[i]}, (em3_loc){0});
    }
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        em3_node p = em3_node_proto(EM3_OP_INPUT, (em3_loc){names[i], 2147483647, 0});
        em3_node_set_s(&p, "name", names[i]);
        em3_node_set_i(&p, "vocab", i ? INT64_MAX : 0);
        em3_node_set_i(&p, "pad", i ? INT64_MIN : 5);
        p.type = ty(I32, 8, B, 1, 2, 3, 4, 5, -2147483647, B);
        int v = em3_func_add_checked(f, &p, NULL, 0);
        em3_func_add_output(f, names[i], v);
    }
    assert_round_trip(m);
    em3_module_free(m);
}

/* Hand-written text the printer would write differently still means the same module. */
static void test_lenient_forms(void **state) {
    (void)state;
    const char *text = "# a comment line\r\n"
                       "module @m   // trailing comment\r\n"
                       "func @f {\n"
                       "\n"
                       "  %0 = input @x {label = false} : f32 [ B , 2 ]\n"
                       "  %1 = const {value = 2} : f32[]\n"
                       "  %2 = sum(%0) {keepdims = false, axes = [1]} : f32[B]\n"
                       "  %3 = layer_norm(%0, %1, %1) {} : f32[B, 2]\n"
                       "  return\n"
                       "}";
    char *diag = NULL;
    em3_module *m = parse(text, &diag);
    /* layer_norm's gamma must be f32[2]: the last node is wrong on purpose */
    assert_null(m);
    assert_non_null(strstr(diag, "t.ir:8:8: error: layer_norm of f32[B, 2] needs gamma of f32[2]"));
    free(diag);
    char *fixed = strdup(text);
    char *ln = strstr(fixed, "  %3");
    strcpy(ln, "  return r = %2\n}\n");
    m = parse(fixed, NULL);
    assert_non_null(m);
    char *s = em3_module_to_string(m, 0);
    assert_string_equal(s, "module @m\n\nfunc @f {\n  %0 = input @x : f32[B, 2]\n"
                           "  %1 = const {value = 2.0} : f32[]\n"
                           "  %2 = sum(%0) {axes = [1]} : f32[B]\n  return r = %2\n}\n");
    free(s);
    free(fixed);
    em3_module_free(m);
}

/* ---- errors ---------------------------------------------------------------------------------- */

#define HEAD "module @m\nglobal @w : f32[4, 2] param\nfunc @f {\n  %0 = input @x : f32[B, 4]\n"

static void test_errors_located(void **state) {
    (void)state;
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"", "t.ir:1:1: error: expected 'module @name' at the start of the IR, found end of file"},
        {"modul @m\n", "1:1: error: expected 'module @name' at the start of the IR, found 'modul'"},
        {"module m\n", "1:8: error: expected a module name '@name' after 'module', found 'm'"},
        {"module @m x\n", "1:11: error: expected end of line after the module name, found 'x'"},
        {"module @m\nfoo\n", "2:1: error: expected 'global' or 'func', found 'foo'"},
        {"module @m\nglobal @g : f32[2] weights\n",
         "2:20: error: expected param, frozen, data, state or graph"},
        {"module @m\nglobal @g : f64[2] param\n", "2:13: error: expected the type of the global"},
        {"module @m\nglobal @g : f32[B] param\n",
         "2:13: error: global @g has type f32[B]: a global's shape cannot hold B"},
        {"module @m\nglobal @g : f32[2] param\nglobal @g : f32[2] param\n",
         "3:8: error: global @g is declared twice"},
        {"module @m\nglobal @g : f32[2147483648] param\n",
         "2:17: error: dimension 2147483648 is out of range"},
        {"module @m\nglobal @g : f32[0] param\n",
         "2:17: error: dimension 0 is out of range (1 to 2147483647)"},
        {"module @m\nglobal @g : f32[1,1,1,1,1,1,1,1,1] param\n",
         "2:33: error: more than 8 entries in the shape"},
        {"module @m\nglobal @g : f32[2] param init = gauss\n",
         "2:33: error: expected zeros, ones, const"},
        {"module @m\nglobal @g : f32[2] param init = normal\n",
         "2:39: error: expected '(' and the argument"},
        {"module @m\nglobal @g : f32[2] param init = zeros(1)\n",
         "2:38: error: init zeros takes no argument"},
        {"module @m\nglobal @g : f32[2] param init = const(1e400)\n",
         "2:39: error: number 1e400 is out of range"},
        {HEAD "  %1 = neg(%0) f32[B, 4]\n  return\n}\n",
         "5:16: error: expected ':' after value %1, found 'f32'"},
        {HEAD "  %2 = neg(%0) : f32[B, 4]\n  return\n}\n",
         "5:3: error: expected value %1 here, not %2"},
        {HEAD "  %1 = neg(%1) : f32[B, 4]\n  return\n}\n",
         "5:12: error: value %1 is used before it is defined"},
        {HEAD "  %1 = negate(%0) : f32[B, 4]\n  return\n}\n", "5:8: error: unknown op 'negate'"},
        {HEAD "  %1 = neg(%0) : f32[B, 5]\n  return\n}\n",
         "5:18: error: %1 is written f32[B, 5], but neg gives f32[B, 4]"},
        {HEAD "  %1 = neg(%0, %0) : f32[B, 4]\n  return\n}\n",
         "5:8: error: neg takes 1 operand, got 2"},
        {HEAD "  %1 = param @w : f32[4, 2]\n  %2 = matmul(%1, %0) : f32[4, 4]\n  return\n}\n",
         "6:8: error: matmul of f32[4, 2] and f32[B, 4]: inner dimensions differ"},
        {HEAD "  %1 = param @nope : f32[4, 2]\n  return\n}\n", "5:8: error: no global named @nope"},
        {HEAD "  %1 = sum(%0) : f32[B]\n  return\n}\n", "5:8: error: sum needs attribute 'axes'"},
        {HEAD "  %1 = sum(%0) {axes = [1], axes = [1]} : f32[B]\n  return\n}\n",
         "5:29: error: attribute 'axes' is given twice"},
        {HEAD "  %1 = sum(%0) {axis = 1} : f32[B]\n  return\n}\n",
         "5:17: error: sum has no attribute 'axis'; its attributes: axes:I keepdims:b=0"},
        {HEAD "  %1 = sum(%0) {axes = 1} : f32[B]\n  return\n}\n",
         "5:24: error: expected '[' to start the value of attribute 'axes', found '1'"},
        {HEAD "  %1 = sum(%0) {axes = [1], keepdims = 1} : f32[B]\n  return\n}\n",
         "5:40: error: expected true or false, found '1'"},
        {HEAD "  %1 = softmax(%0) {axis = 1.5} : f32[B, 4]\n  return\n}\n",
         "5:28: error: expected an integer, found '1.5'"},
        {HEAD "  %1 = softmax(%0) {axis = 99999999999999999999} : f32[B, 4]\n  return\n}\n",
         "5:28: error: integer 99999999999999999999 is out of range"},
        {HEAD "  %1 = cast(%0) {to = f16} : f32[B, 4]\n  return\n}\n",
         "5:23: error: expected a dtype (f32 or i32), found 'f16'"},
        {HEAD "  %1 = input {name = @y} : f32[B]\n  return\n}\n",
         "5:14: error: expected the name of input, as '@x', found '{'"},
        {HEAD "  %1 = input @x : f32[B]\n  return\n}\n",
         "5:14: error: input @x is declared twice (first as %0)"},
        {HEAD "  %1 = input @\"\" : f32[B]\n  return\n}\n",
         "5:14: error: the name of input cannot be empty"},
        {HEAD "  %1 = input @y {vocab = -1} : i32[B]\n  return\n}\n",
         "5:26: error: an input's vocab must be >= 0"},
        {HEAD "  %1 = neg(%0) : f32[B, 4] origin abc\n  return\n}\n",
         "5:35: error: expected a quoted list of source ops"},
        {HEAD "  %1 = neg(%0) : f32[B, 4] origin \"a\\tb\"\n  return\n}\n",
         "5:37: error: bad escape in string"},
        {HEAD "  %1 = neg(%0) : f32[B, 4] origin \"a\\x00b\"\n  return\n}\n",
         "5:37: error: a string cannot contain a NUL byte"},
        {HEAD "  %1 = neg(%0) : f32[B, 4] origin \"abc\n  return\n}\n",
         "5:35: error: unterminated string"},
        {HEAD "  %1 = neg(%0) : f32[B, 4] loc(\"a.em3\":0:1)\n  return\n}\n",
         "5:40: error: line number 0 is out of range"},
        {HEAD "  %1 = neg(%0) : f32[B, 4] loc(\"a.em3\" 3)\n  return\n}\n",
         "5:40: error: expected ':' after the file name, found '3'"},
        {HEAD "  return y = %3\n}\n", "5:14: error: output y returns %3, which is not defined"},
        {HEAD "  return y = %0, y = %0\n}\n", "5:18: error: output y is returned twice"},
        {HEAD "  return y %0\n}\n", "5:12: error: expected '=' after the output name, found '%0'"},
        {HEAD "}\n", "5:1: error: expected 'return' at the end of the function, found '}'"},
        {HEAD "  return\n", "6:1: error: expected '}' after the return, found end of file"},
        {HEAD "  return\n}\nfunc @f {\n  return\n}\n", "7:6: error: function @f is defined twice"},
        {HEAD "  %1 = neg(%0) : f32[B, 4] @\n",
         "5:28: error: expected a name or a quoted string after '@'"},
        {HEAD "  %1 = neg(%0) : f32[B, 4] %\n", "5:28: error: expected a value number after '%'"},
        {HEAD "  %99999999999 = neg(%0) : f32[B, 4]\n",
         "5:3: error: value number %99999999999 is out of range"},
        {"module @m\n\x01\n", "2:1: error: unexpected character '\\x01'"},
        {"module @m\n\xc3\xa9\n", "2:1: error: unexpected character '\\xc3'"},
        {"module @m\nglobal @g : f32[2] param init = normal(-)\n",
         "2:41: error: expected 'inf' or 'nan' after '-', found ')'"},
        {"module @m\nglobal @g : f32[B*4] param\n",
         "2:13: error: global @g has type f32[B*4]: a global's shape cannot hold B"},
        {HEAD "  %1 = reshape(%0) {shape = [B*2, 2]} : f32[B*2, 2]\n"
              "  %2 = concat(%1, %0) {axis = 0} : f32[B*3, 2]\n",
         "6:8: error: concat along axis 0: operand 1 is f32[B, 4], which does not fit f32[B*2, 2]"},
        {HEAD "  %1 = reshape(%0) {shape = [B*2, 2]} : f32[B*2, 3]\n",
         "5:41: error: %1 is written f32[B*2, 3], but reshape gives f32[B*2, 2]"},
    };
    int wrong = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        wrong += !fails_with(cases[i].text, cases[i].want);
    assert_int_equal(wrong, 0);
}

/* After an error the parser goes on at the next line, so one run reports several errors; a
 * function that failed is still checked line by line but builds nothing. */
static void test_errors_recover(void **state) {
    (void)state;
    const char *text = "module @m\n"
                       "global @a : f32[B] param\n"
                       "global @b : f32[2] bogus\n"
                       "func @f {\n"
                       "  %0 = input @x : f32[B, 4]\n"
                       "  %1 = neg(%0) : f32[B]\n"
                       "  %2 = neg(%7) : f32[B, 4]\n"
                       "  %3 = neg(%2) {} f32[B, 4]\n"
                       "  return\n"
                       "}\n"
                       "func @g {\n"
                       "  return\n"
                       "  %0 = input @x : f32[B]\n"
                       "}\n";
    char *diag = NULL;
    em3_module *m = parse(text, &diag);
    assert_null(m);
    const char *want[] = {
        "2:13: error:", "3:20: error:", "6:18: error:",
        "7:12: error:", "8:19: error:", "13:3: error: expected '}' after the return"};
    const char *at = diag;
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const char *hit = strstr(at, want[i]);
        if (!hit) fprintf(stderr, "missing '%s' in:\n%s", want[i], diag);
        assert_non_null(hit);
        at = hit;
    }
    free(diag);
}

/* ---- hostile input --------------------------------------------------------------------------- */

static void parse_must_fail(const char *text, size_t len) {
    em3_module *m = parse_n(text, len, NULL);
    assert_null(m);
}

static void test_hostile_input(void **state) {
    (void)state;
    parse_must_fail(NULL, 0);
    parse_must_fail("", 0);
    size_t big = 1 << 20;
    char *s = malloc(big + 64);

    /* a 1 MB identifier in each place an identifier goes; only a module name may be that long */
    const char *prefixes[] = {"module @",
                              "",
                              "module @m\nglobal @",
                              "module @m\nfunc @f {\n  %0 = ",
                              "module @m\nfunc @f {\n  %0 = input @x {",
                              "module @m\nfunc @f {\n  return "};
    for (size_t k = 0; k < sizeof prefixes / sizeof *prefixes; k++) {
        size_t n = strlen(prefixes[k]);
        memcpy(s, prefixes[k], n);
        memset(s + n, 'a', big);
        if (k) {
            parse_must_fail(s, n + big);
        } else {
            em3_module *m = parse_n(s, n + big, NULL);
            assert_int_equal(strlen(m->name), big);
            em3_module_free(m);
        }
    }
    /* 100 000 nested brackets, parentheses and braces */
    const char *opens = "[({";
    for (int k = 0; k < 3; k++) {
        const char *pre = "module @m\nglobal @g : f32";
        size_t n = strlen(pre);
        memcpy(s, pre, n);
        memset(s + n, opens[k], 100000);
        parse_must_fail(s, n + 100000);
    }
    /* huge numbers, a NUL in the middle of a valid module, every byte value, a lone quote */
    parse_must_fail("module @m\nglobal @g : f32[99999999999999999999999999999999] param\n", 65);
    const char nul[] = "module @m\nfunc @f {\n  %0 = input @x : f32[B]\0\n  return\n}\n";
    parse_must_fail(nul, sizeof nul - 1);
    for (int i = 0; i < 256; i++) s[i] = (char)i;
    parse_must_fail(s, 256);
    parse_must_fail("\"", 1);
    parse_must_fail("module @\"", 9);
    parse_must_fail("module @m\nfunc @f {\n  %0 = const {value = 1", 38);
    /* a million newlines and a million errors stay linear and quiet */
    memset(s, '\n', big);
    parse_must_fail(s, big);
    for (size_t i = 0; i < big; i += 2) s[i] = '}', s[i + 1] = '\n';
    parse_must_fail(s, big);
    free(s);
}

/* ---- mutated dumps --------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Flips, inserts, deletes and copies bytes of a valid dump. Whatever parses must print to text
 * that parses back to the same text. */
static void test_mutated_dumps(void **state) {
    (void)state;
    em3_module *m = build_all_ops();
    char *base = em3_module_to_string(m, EM3_PRINT_LOC);
    em3_module_free(m);
    size_t n0 = strlen(base);
    char *buf = malloc(2 * n0 + 64);
    const char tokens[] = "%@\"[](){}:=,-B0123456789\n \\#/ex";
    uint64_t seed = 12345;
    int parsed = 0;
    for (int iter = 0; iter < 4000; iter++) {
        memcpy(buf, base, n0);
        size_t n = n0;
        int edits = 1 + (int)(rng_next(&seed) % 4);
        for (int e = 0; e < edits && n > 2; e++) {
            size_t pos = rng_next(&seed) % n;
            switch (rng_next(&seed) % 5) {
            case 0: buf[pos] = (char)rng_next(&seed); break;
            case 1: buf[pos] = tokens[rng_next(&seed) % (sizeof tokens - 1)]; break;
            case 2: memmove(buf + pos, buf + pos + 1, n - pos - 1), n--; break;
            case 3:
                memmove(buf + pos + 1, buf + pos, n - pos), n++;
                buf[pos] = tokens[rng_next(&seed) % (sizeof tokens - 1)];
                break;
            case 4: n = pos + 1; break; /* truncate */
            }
        }
        em3_module *mm = parse_n(buf, n, NULL);
        if (!mm) continue;
        parsed++;
        assert_round_trip(mm);
        em3_module_free(mm);
    }
    /* some mutations are harmless (a digit in a float, a truncated trailing newline) */
    assert_true(parsed > 0);
    free(buf);
    free(base);
}

/* Inputs that went wrong while the parser was written (the fuzzer has found nothing since):
 * a global rejected after its line was read made the parser skip the next line unchecked, and
 * a node line with a syntax error did not count its value, so the next one was reported as
 * out of order. */
static void test_regressions(void **state) {
    (void)state;
    char *diag = NULL;
    assert_null(parse("module @m\nglobal @a : f32[B] param\nglobal @b : f32[B] param\n", &diag));
    assert_non_null(strstr(diag, "t.ir:2:13: error:"));
    assert_non_null(strstr(diag, "t.ir:3:13: error:"));
    free(diag);
    assert_null(parse(HEAD "  %1 = neg(%0) f32[B, 4]\n  %2 = neg(%0) : f32[B, 4]\n  return\n}\n",
                      &diag));
    assert_non_null(strstr(diag, "t.ir:5:16: error:"));
    assert_null(strstr(diag, "t.ir:6:"));
    free(diag);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_all_ops), cmocka_unit_test(test_round_trip_extremes),
        cmocka_unit_test(test_lenient_forms),      cmocka_unit_test(test_errors_located),
        cmocka_unit_test(test_errors_recover),     cmocka_unit_test(test_hostile_input),
        cmocka_unit_test(test_mutated_dumps),      cmocka_unit_test(test_regressions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
