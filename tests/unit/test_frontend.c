/* tests/unit/test_frontend.c — the DSL frontend from source text to IR: constant folding, lists,
 * instance paths, weight sharing, repeat, loops, conditionals, type patterns, @predict, --set,
 * error recovery and the limits that bound hostile input, and every model of models/. Each
 * source is compiled from an exact-size heap copy without a NUL, so that AddressSanitizer sees
 * any over-read, and its diagnostics are captured so that messages can be asserted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/frontend.h"

/* ---- compiling ------------------------------------------------------------------------------- */

typedef struct {
    em3_module *mod;
    char *diag;  /* everything printed, malloc'ed */
    int errors;
} result;

static result compile_n(const char *text, size_t len, const em3_frontend_options *opt) {
    char *copy = malloc(len ? len : 1);
    if (len) memcpy(copy, text, len);
    result r = {0};
    size_t n = 0;
    FILE *out = open_memstream(&r.diag, &n);
    em3_diag *d = em3_diag_create(out);
    r.mod = em3_frontend_compile_source("t.em3", copy, len, opt, d);
    r.errors = em3_diag_error_count(d);
    assert_true((r.mod == NULL) == (r.errors > 0));
    em3_diag_free(d);
    fclose(out);
    free(copy);
    return r;
}

static void result_free(result *r) {
    em3_module_free(r->mod);
    free(r->diag);
}

/* Compiles a program that must be correct; prints its diagnostics when it is not. */
static em3_module *compile_ok_opt(const char *text, const em3_frontend_options *opt) {
    result r = compile_n(text, strlen(text), opt);
    if (!r.mod) fprintf(stderr, "input:\n%s\n--- unexpected errors:\n%s", text, r.diag);
    assert_non_null(r.mod);
    free(r.diag);
    return r.mod;
}

static em3_module *compile_ok(const char *text) { return compile_ok_opt(text, NULL); }

/* Whether `len` bytes of text fail with exactly `n_errors` errors and print `want` (e.g.
 * "t.em3:3:7: error: unknown name 'x'"); says what they did when not. n_errors < 0: any. */
static bool fails_with_n(const char *text, size_t len, const em3_frontend_options *opt,
                         int n_errors, const char *want) {
    result r = compile_n(text, len, opt);
    bool ok = !r.mod && strstr(r.diag, want) && (n_errors < 0 || r.errors == n_errors);
    if (!ok)
        fprintf(stderr, "input:\n%.*s\n--- wanted %d error(s) with: %s\n--- got %d:\n%s\n",
                (int)(len < 2000 ? len : 2000), text, n_errors, want, r.errors, r.diag);
    result_free(&r);
    return ok;
}

static bool fails_with(const char *text, int n_errors, const char *want) {
    return fails_with_n(text, strlen(text), NULL, n_errors, want);
}

/* A model around a forward body, for tests about expressions and statements. */
static char *model_with(const char *decls, const char *forward) {
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    fprintf(f, "import \"nn.em3\"\nmodel m {\n    input x : f32[B, 4]\n%s\n    fn forward() {\n"
               "%s\n        output y = x\n    }\n}\n", decls, forward);
    fclose(f);
    return s;
}

static bool model_compiles(const char *decls, const char *forward) {
    char *src = model_with(decls, forward);
    em3_module *m = compile_ok(src);
    em3_module_free(m);
    free(src);
    return true;
}

static bool model_fails(const char *decls, const char *forward, const char *want) {
    char *src = model_with(decls, forward);
    bool ok = fails_with(src, -1, want);
    free(src);
    return ok;
}

static int count_op(const em3_func *f, em3_op op) {
    int n = 0;
    for (int i = 0; i < f->n_node; i++) n += f->node[i].op == op;
    return n;
}

static const em3_global *global(const em3_module *m, const char *name) {
    int g = em3_module_find_global(m, name);
    if (g < 0) fprintf(stderr, "no global @%s\n", name);
    assert_true(g >= 0);
    return &m->global[g];
}

static int count_params(const em3_module *m) {
    int n = 0;
    for (int g = 0; g < m->n_global; g++)
        n += m->global[g].kind == EM3_GLOBAL_PARAM || m->global[g].kind == EM3_GLOBAL_FROZEN;
    return n;
}

/* ---- compile-time values ------------------------------------------------------------------ */

/* Folding is checked by asserts that elaborate or fail, and by the shapes constants give. */
static void test_constant_folding(void **state) {
    (void)state;
    assert_true(model_compiles("", "assert 2 + 3 * 4 == 14\n"
                                    "assert (2 + 3) * 4 == 20\n"
                                    "assert 7 - 10 == -3\n"
                                    "assert -7 // 2 == -4 and 7 // 2 == 3\n"
                                    "assert -7 % 3 == 2 and 7 % -3 == -2\n"
                                    "assert 1 < 2 and 2 <= 2 and 3 > 2 and not (1 >= 2)\n"
                                    "assert true or 1 / 0 == 0\n"));
    /* an exact division of integers stays an int, so that d / heads can be a dimension */
    assert_true(model_compiles("", "assert 64 / 4 == 16\nz = zeros([B, 64 / 4])\n"));
    assert_true(model_compiles("", "assert 7 / 2 == 3.5\nassert 1.5 * 2 == 3\n"
                                    "assert 0.1 + 0.2 > 0.3\nassert float(3) / 2 == 1.5\n"
                                    "assert int(3.9) == 3 and max(2, 7.5) == 7.5\n"));
    assert_true(model_fails("", "z = zeros([B, 7 / 2])", "a dimension must be an integer known "
                                                         "at compile time, got the float 3.5"));
    assert_true(model_fails("", "k = 3 // 0", "division by zero"));
    assert_true(model_fails("", "k = 3.0 % 0", "division by zero"));
    assert_true(model_fails("", "assert 7 / 2 == 3", "assertion failed"));

    /* constants of a model and of a file shape its tensors */
    em3_module *m = compile_ok("const width = 3 * 4\n"
                               "model m {\n"
                               "    const d = width / 2, k = d // 4 + 1\n"
                               "    input x : f32[B, d]\n"
                               "    param w : f32[d, k] = 0.25 * 2\n"
                               "    fn forward() { output y = x @ w }\n"
                               "}\n");
    const em3_global *w = global(m, "w");
    assert_int_equal(w->type.rank, 2);
    assert_int_equal(w->type.dim[0], 6);
    assert_int_equal(w->type.dim[1], 2);
    assert_int_equal(w->init.kind, EM3_INIT_CONST);
    assert_true(w->init.a == 0.5);
    em3_module_free(m);
}

/* 64-bit overflow and non-finite results are errors at compile time, not undefined behaviour
 * (UBSan) or a trap (INT64_MIN / -1), and constants must fit the tensor they meet. */
static void test_arithmetic_edges(void **state) {
    (void)state;
    /* 999999999999999999 is the largest literal; m is INT64_MIN */
    const char *m = "m = -999999999999999999 * 9 - 223372036854775817";
    const char *const overflow[] = {"k = 999999999999999999 * 10", "k = -m", "k = m / -1",
                                    "k = m // -1", "k = m - 1", "k = -m * -1"};
    for (size_t i = 0; i < sizeof overflow / sizeof *overflow; i++)
        assert_true(model_fails(m, overflow[i], "does not fit in a 64-bit integer"));
    assert_true(model_compiles(m, "assert m % -1 == 0 and m < 0 and m + 1 < 0\n"
                                  "assert 999999999999999999 % -10 == -1\n"
                                  "assert -5 % 999999999999999999 == 999999999999999994\n"
                                  "assert abs(m) > 0 and max(m, 3) == 3 and min(m, 3) == m\n"
                                  "assert maximum(m, m + 1) == m + 1\n"));
    assert_true(model_fails("", "k = 1.0e300 * 1.0e300", "the result of '*' is not a finite "
                                                        "number"));
    assert_true(model_fails("", "k = 1.0e300 * 1.0e300 - 1.0e300 * 1.0e300", "not a finite"));
    assert_true(model_fails("", "k = exp(1000)", "exp(1000) is not a finite number"));
    assert_true(model_fails("input ids : i32[B]", "k = ids + 3000000000", "the number 3e+09 does "
                                                                         "not fit in i32"));
    assert_true(model_fails("", "k = x * 1.0e300", "the number 1e+300 does not fit in f32"));
}

static void test_lists(void **state) {
    (void)state;
    assert_true(model_compiles("", "l = [1, 2] + [3] + []\n"
                                    "assert len(l) == 3 and l[0] == 1 and l[2] == 3\n"
                                    "assert l[-1] == 3 and l[-3] == 1\n"
                                    "assert len(l[1:]) == 2 and l[1:][0] == 2\n"
                                    "assert len(l[:-1]) == 2 and len(l[5:9]) == 0\n"
                                    "n = [[1, 2], [3]]\nassert n[1][0] == 3\n"
                                    "s = x.shape\nassert len(s) == 2 and s[1] == 4 and s[0] == B\n"
                                    "assert len(s[:-1] + [2, 2]) == 3\n"));
    assert_true(model_fails("", "l = [1, 2]\nk = l[2]", "index 2 is out of range for a list of 2"));
    assert_true(model_fails("", "l = [1, 2]\nk = l[-3]", "out of range"));
    assert_true(model_fails("", "l = [1, 2]\nk = l[0, 1]", "a list takes one index"));
    assert_true(model_fails("", "k = [1] * 2", "'*' is not defined for a list and the int 2"));
}

/* ---- modules: instance paths, sharing, repeat ----------------------------------------------- */

static void test_instance_paths(void **state) {
    (void)state;
    em3_module *m = compile_ok("module Leaf(d) {\n"
                               "    param w : f32[d] = zeros\n"
                               "}\n"
                               "module Node(d) {\n"
                               "    left = Leaf(d)\n"
                               "    layers = repeat 2 { Leaf(d) }\n"
                               "    pair = [Leaf(d), Leaf(2 * d)]\n"
                               "    param own : f32[d] = ones\n"
                               "}\n"
                               "model m {\n"
                               "    input x : f32[B, 4]\n"
                               "    a = Node(4)\n"
                               "    b = repeat 2 { Node(1) }\n"
                               "    fn forward() { output y = x + a.left.w + a.layers[1].w }\n"
                               "}\n");
    static const char *const names[] = {"a.left.w",    "a.layers.0.w", "a.layers.1.w",
                                        "a.pair.0.w",  "a.pair.1.w",   "a.own",
                                        "b.0.left.w",  "b.1.layers.1.w", "b.1.pair.1.w"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) global(m, names[i]);
    assert_int_equal(global(m, "a.pair.1.w")->type.dim[0], 8);
    assert_int_equal(count_params(m), 18);
    em3_module_free(m);
}

static void test_weight_sharing(void **state) {
    (void)state;
    /* a LoRA copy of a Linear: base weights shared and frozen, only the adapters are new */
    em3_module *m = compile_ok("import \"nn.em3\"\n"
                               "model m {\n"
                               "    input x : f32[B, 4]\n"
                               "    base = Linear(4, 4)\n"
                               "    tuned = LoRALinear(4, 4, 2) shares base frozen\n"
                               "    fn forward() { output y = tuned(base(x)) }\n"
                               "}\n");
    assert_int_equal(count_params(m), 4);
    global(m, "base.w");
    global(m, "tuned.lora_a");
    global(m, "tuned.lora_b");
    assert_true(em3_module_find_global(m, "tuned.w") < 0);
    const em3_func *f = em3_module_find_func(m, "forward");
    /* the frozen uses of base.w and base.b go through stop_gradient; the plain ones do not */
    int frozen_uses = 0;
    for (int i = 0; i < f->n_node; i++) {
        const em3_node *n = &f->node[i];
        if (n->op != EM3_OP_STOP_GRADIENT) continue;
        const em3_node *p = &f->node[n->in[0]];
        assert_int_equal(p->op, EM3_OP_PARAM);
        assert_true(!strcmp(em3_node_s(p, "name"), "base.w") ||
                    !strcmp(em3_node_s(p, "name"), "base.b"));
        frozen_uses++;
    }
    assert_int_equal(frozen_uses, 2);
    em3_module_free(m);

    /* sharing without frozen: the same globals, trained through both uses */
    m = compile_ok("import \"nn.em3\"\n"
                   "model m {\n"
                   "    input x : f32[B, 4]\n"
                   "    a = Linear(4, 4)\n"
                   "    b = Linear(4, 4) shares a\n"
                   "    stack = repeat 2 { Linear(4, 4) }\n"
                   "    twin = repeat 2 { Linear(4, 4) } shares stack\n"
                   "    fn forward() { output y = b(a(x)) + twin[1](stack[0](x)) }\n"
                   "}\n");
    assert_int_equal(count_params(m), 6);
    assert_int_equal(count_op(em3_module_find_func(m, "forward"), EM3_OP_STOP_GRADIENT), 0);
    em3_module_free(m);

    assert_true(fails_with("import \"nn.em3\"\n"
                           "model m {\n"
                           "    input x : f32[B, 4]\n"
                           "    a = Linear(4, 8)\n"
                           "    b = Linear(4, 16) shares a\n"
                           "    fn forward() { output y = b(x) }\n"
                           "}\n",
                           1, "t.em3:5:30: error: cannot share b.w with a.w: it is f32[4, 16], but "
                              "a.w is f32[4, 8]"));
    assert_true(fails_with("import \"nn.em3\"\n"
                           "model m {\n"
                           "    input x : f32[B, 4]\n"
                           "    k = 3\n"
                           "    b = Linear(4, 16) shares k\n"
                           "    fn forward() { output y = b(x) }\n"
                           "}\n",
                           1, "t.em3:5:30: error: 'shares' needs a module instance or a list of "
                              "them, got the int 3"));
}

static void test_repeat(void **state) {
    (void)state;
    em3_module *m = compile_ok("import \"nn.em3\"\n"
                               "model m {\n"
                               "    input x : f32[B, 4]\n"
                               "    grow = repeat i in 3 { Linear(4 + i, 5 + i) }\n"
                               "    empty = repeat 0 { Linear(4, 4) }\n"
                               "    fn forward() {\n"
                               "        assert len(grow) == 3 and len(empty) == 0\n"
                               "        h = x\n"
                               "        for l in grow { h = l(h) }\n"
                               "        output y = h\n"
                               "    }\n"
                               "}\n");
    assert_int_equal(global(m, "grow.2.w")->type.dim[0], 6);
    assert_int_equal(global(m, "grow.2.w")->type.dim[1], 7);
    assert_int_equal(count_op(em3_module_find_func(m, "forward"), EM3_OP_MATMUL), 3);
    em3_module_free(m);
    assert_true(model_fails("l = repeat -1 { Linear(4, 4) }", "",
                            "repeat count -1 is outside 0 .. 100000"));
    assert_true(model_fails("", "l = repeat 2 { Linear(4, 4) }",
                            "module Linear is instantiated where it has no name"));
}

/* ---- statements ------------------------------------------------------------------------------ */

static void test_for_loops(void **state) {
    (void)state;
    assert_true(model_compiles("", "s = 0\nfor i in 1 .. 5 { s = s + i }\nassert s == 10\n"
                                    "e = 0\nfor i in 3 .. 3 { e = 1 }\nassert e == 0\n"
                                    "p = 1\nfor v in [2, 3, 7] { p = p * v }\nassert p == 42\n"
                                    "h = x\nfor k in 0 .. 3 { h = h + 1.0 }\n"));
    char *src = model_with("", "h = x\nfor k in 0 .. 3 { h = relu(h) }\noutput z = h");
    em3_module *m = compile_ok(src);
    assert_int_equal(count_op(em3_module_find_func(m, "forward"), EM3_OP_RELU), 3);
    em3_module_free(m);
    free(src);
    assert_true(model_fails("", "for i in 5 { }", "'for' iterates over a list or a range a .. b, "
                                                  "not the int 5"));
    assert_true(model_fails("", "for i in 0 .. 2.5 { }", "a range end must be an integer"));
}

static void test_if_chains(void **state) {
    (void)state;
    assert_true(model_compiles("", "if false { k = 1 } else { }\nif none { assert false }\n"));
    em3_module *m = compile_ok("fn pick(k) {\n"
                               "    if k == 0 {\n"
                               "        return 10\n"
                               "    } else if k == 1 {\n"
                               "        return 20\n"
                               "    } else {\n"
                               "        return 30\n"
                               "    }\n"
                               "}\n"
                               "model m {\n"
                               "    input x : f32[B, 4]\n"
                               "    fn forward() {\n"
                               "        assert pick(0) == 10 and pick(1) == 20 and pick(7) == 30\n"
                               "        if pick(1) == 20 { output y = x } else { output y = -x }\n"
                               "    }\n"
                               "}\n");
    assert_int_equal(count_op(em3_module_find_func(m, "forward"), EM3_OP_NEG), 0);
    em3_module_free(m);
}

/* fn f(x : f32[n, d]): unbound dimension names bind to the argument's, bound ones check it. */
static void test_type_patterns(void **state) {
    (void)state;
    const char *prog = "fn dims(x : f32[n, d]) -> f32[n, d] {\n"
                       "    assert n == 3 and d == 5\n"
                       "    return x\n"
                       "}\n"
                       "fn square(x : f32[n, n]) { return x }\n"
                       "fn batch(x : f32[n, d]) { return n == B }\n"
                       "fn width(x : f32[B, d]) { return d }\n"
                       "model m {\n"
                       "    input x : f32[B, 5]\n"
                       "    const rows = 3\n"
                       "    param w : f32[rows, 5] = zeros\n"
                       "    param q : f32[2, 2] = zeros\n"
                       "    fn forward() {\n"
                       "        v = dims(w)\n"
                       "        s = square(q)\n"
                       "        assert batch(x) and width(x) == 5\n"
                       "        output y = x %s\n"
                       "    }\n"
                       "}\n";
    char src[2048];
    snprintf(src, sizeof src, prog, "");
    em3_module_free(compile_ok(src));
    snprintf(src, sizeof src, prog, "+ square(w)");
    assert_true(fails_with(src, 1, "t.em3:17:30: error: function square: 'x': dimension 1 must "
                                   "be 3, got f32[3, 5]"));
    snprintf(src, sizeof src, prog, "+ square(cast(x, i32))");
    assert_true(fails_with(src, 1, "function square: 'x' must be f32[2 dims], got i32[B, 5]"));
    /* B in a pattern is the batch dimension, not a name to bind */
    snprintf(src, sizeof src, prog, "+ width(w)");
    assert_true(fails_with(src, 1, "function width: 'x': dimension 0 must be B, got f32[3, 5]"));
    snprintf(src, sizeof src, prog, "+ dims(3)");
    assert_true(fails_with(src, 1, "function dims: 'x' must be a tensor, got the int 3"));
}

/* ---- models ---------------------------------------------------------------------------------- */

static void test_predict_excludes_labels(void **state) {
    (void)state;
    em3_module *m = compile_ok("model m {\n"
                               "    input x : f32[B, 4]\n"
                               "    label t : f32[B]\n"
                               "    param w : f32[4] = zeros\n"
                               "    fn forward() {\n"
                               "        s = sum(x * w, axis = -1)\n"
                               "        output score = sigmoid(s)\n"
                               "        loss = bce_with_logits(s, t)\n"
                               "    }\n"
                               "}\n");
    const em3_func *fwd = em3_module_find_func(m, "forward");
    const em3_func *pred = em3_module_find_func(m, "predict");
    assert_non_null(fwd);
    assert_non_null(pred);
    assert_int_equal(fwd->n_out, 2);
    assert_int_equal(pred->n_out, 1);
    assert_string_equal(pred->out[0].name, "score");
    int labels = 0;
    for (int i = 0; i < fwd->n_node; i++)
        labels += fwd->node[i].op == EM3_OP_INPUT && em3_node_i(&fwd->node[i], "label");
    assert_int_equal(labels, 1);
    for (int i = 0; i < pred->n_node; i++) {
        assert_int_not_equal(pred->node[i].op, EM3_OP_BCE_LOGITS);
        if (pred->node[i].op == EM3_OP_INPUT)
            assert_string_equal(em3_node_s(&pred->node[i], "name"), "x");
    }
    em3_module_free(m);
}

static void test_set_overrides(void **state) {
    (void)state;
    const char *src = "model m {\n"
                      "    const d = 4, scale = 0.5, bias = true, act = \"relu\"\n"
                      "    input x : f32[B, d]\n"
                      "    param w : f32[d] = scale\n"
                      "    if bias {\n"
                      "        param b : f32[d] = zeros\n"
                      "    }\n"
                      "    fn forward() {\n"
                      "        assert act == \"relu\" or act == \"tanh\"\n"
                      "        output y = x * w\n"
                      "    }\n"
                      "}\n";
    const em3_const_override set[] = {{.name = "d", .value = "8"},
                                      {.name = "scale", .value = "0.125"},
                                      {.name = "bias", .value = "false"},
                                      {.name = "act", .value = "tanh"}};
    em3_frontend_options opt = {.overrides = set, .n_overrides = 4};
    em3_module *m = compile_ok_opt(src, &opt);
    assert_int_equal(global(m, "w")->type.dim[0], 8);
    assert_true(global(m, "w")->init.a == 0.125);
    assert_true(em3_module_find_global(m, "b") < 0);
    em3_module_free(m);

    const em3_const_override bad[] = {{.name = "act", .value = "sigmoid"}};
    opt = (em3_frontend_options){.overrides = bad, .n_overrides = 1};
    assert_true(fails_with_n(src, strlen(src), &opt, 1, "t.em3:9:9: error: assertion failed"));
    const em3_const_override huge[] = {{.name = "d", .value = "99999999999999999999"},
                                       {.name = "scale", .value = "nan"}};
    opt = (em3_frontend_options){.overrides = huge, .n_overrides = 2};
    assert_true(fails_with_n(src, strlen(src), &opt, 2, "t.em3:2:11: error: --set "
                             "d=99999999999999999999: the number is too large or not finite"));
    assert_true(fails_with_n(src, strlen(src), &opt, 2, "t.em3:2:18: error: --set scale=nan: "));
    const em3_const_override unknown[] = {{.name = "width", .value = "8"}};
    opt = (em3_frontend_options){.overrides = unknown, .n_overrides = 1};
    assert_true(fails_with_n(src, strlen(src), &opt, 1,
                             "t.em3:1:7: error: --set width: model m has no constant width"));
}

static void test_choose_model(void **state) {
    (void)state;
    const char *src = "model a {\n    input x : f32[B, 4]\n    fn forward() { output y = x }\n}\n"
                      "model b {\n    input x : f32[B, 4]\n    fn forward() { output y = -x }\n}\n";
    assert_true(fails_with(src, 1, "t.em3:5:7: error: this file holds several models (a, b): "
                                   "choose one with --model NAME"));
    em3_frontend_options opt = {.model = "b"};
    em3_module *m = compile_ok_opt(src, &opt);
    assert_string_equal(m->name, "b");
    em3_module_free(m);
    opt.model = "c";
    assert_true(fails_with_n(src, strlen(src), &opt, 1,
                             "t.em3: error: no model named c in this file (it has: a, b)\n"));
}

/* Every model and library file of models/ compiles (the library files to an empty module). */
static void test_models_compile(void **state) {
    (void)state;
    const char *root = getenv("EM3_SOURCE_DIR");
    assert_non_null(root);
    char pattern[4096];
    int found = 0;
    for (int pass = 0; pass < 2; pass++) {
        snprintf(pattern, sizeof pattern, "%s/models/%s*.em3", root, pass ? "lib/" : "");
        glob_t g;
        assert_int_equal(glob(pattern, 0, NULL, &g), 0);
        for (size_t i = 0; i < g.gl_pathc; i++, found++) {
            em3_diag *d = em3_diag_create(stderr);
            em3_module *m = em3_frontend_compile(g.gl_pathv[i], NULL, d);
            if (!m) fprintf(stderr, "%s does not compile\n", g.gl_pathv[i]);
            assert_non_null(m);
            bool is_model = pass == 0;
            assert_int_equal(em3_module_find_func(m, "forward") != NULL, is_model);
            assert_int_equal(em3_module_find_func(m, "predict") != NULL, is_model);
            em3_module_free(m);
            em3_diag_free(d);
        }
        globfree(&g);
    }
    assert_true(found >= 6);
}

/* ---- errors: several per run, located, without cascades -------------------------------------- */

static void test_several_errors(void **state) {
    (void)state;
    /* syntax: each statement recovers on its own, a bad last line keeps its '}' */
    assert_true(fails_with("module M(d) {\n"
                           "    param w : f32[d] = = zeros\n"
                           "    fn forward(x) {\n"
                           "        y = x + * w\n"
                           "        return y +\n"
                           "    }\n"
                           "}\n"
                           "const k = ]\n",
                           4, "t.em3:8:11: error: syntax error, unexpected ']'"));
    /* semantics: a failed declaration binds its name to an error, so uses stay quiet */
    const char *sem = "model m {\n"
                      "    input x : f32[B, 4]\n"
                      "    param w : f32[B, 4] = zeros\n"
                      "    input z : f64[B, 4]\n"
                      "    data t : f32[B, 3]\n"
                      "    param v : f32[4] = glorot\n"
                      "    fn forward() {\n"
                      "        a = x + w + z + t[0] + v\n"
                      "        b = x @ x\n"
                      "        output y = a + b + nothing\n"
                      "    }\n"
                      "}\n";
    assert_true(fails_with(sem, 6, "t.em3:3:15: error: a parameter cannot have the batch "
                                   "dimension B"));
    assert_true(fails_with(sem, 6, "t.em3:4:15: error: unknown element type 'f64' (f32 or i32)"));
    assert_true(fails_with(sem, 6, "t.em3:5:14: error: a data table has a fixed shape"));
    assert_true(fails_with(sem, 6, "t.em3:6:24: error: unknown initialiser 'glorot'"));
    assert_true(fails_with(sem, 6, "t.em3:9:15: error: matmul of f32[B, 4] and f32[B, 4]"));
    assert_true(fails_with(sem, 6, "t.em3:10:28: error: unknown name 'nothing'"));
}

/* Regressions for what the malformed corpus and the fuzzer found; each once crashed, hung,
 * cascaded or was misreported. */
static void test_lexer_regressions(void **state) {
    (void)state;
    /* NUL bytes are characters of the buffer, not its end */
    const char nul[] = "const a = 1\nconst b = 2 \0 + 3\nconst c = 4\n";
    assert_true(fails_with_n(nul, sizeof nul - 1, NULL, 1,
                             "t.em3:2:13: error: unexpected character 0x00"));
    assert_true(fails_with("const x = 1e999\n", 1, "t.em3:1:11: error: number literal is too "
                                                    "large"));
    assert_true(fails_with("const x = 99999999999999999999\n", 1, "integer literal is too large"));
    assert_true(fails_with("const x = 1 \xff\n", 1, "t.em3:1:13: error: invalid UTF-8 byte 0xff"));
    assert_true(fails_with("const \xe2\x82\xac = 1\n", 1, "t.em3:1:7: error: unexpected "
                                                           "character U+20AC"));
    /* an unexpected character costs one message, not a cascade of syntax errors */
    assert_true(fails_with("model m { x = $ 1 }\n", 1, "t.em3:1:15: error: unexpected "
                                                        "character '$'"));
    /* Go's rule for else, said in words, and the parse goes on as if it were well placed */
    assert_true(fails_with("fn f(a) {\n    if a { return 1 }\n    else { return 2 }\n}\n"
                           "const k = f(0)\n",
                           1, "t.em3:3:5: error: 'else' must be on the same line as the '}'"));
    /* the end of the file inside a block or a comment: one error where the fix goes */
    assert_true(fails_with("module M {\n    fn f(x) {\n        return x\n}\n", 1,
                           "t.em3:1:10: error: '{' is not closed: the file ends before its '}'"));
    assert_true(fails_with("module M {\n    /* open\n", 1,
                           "t.em3:2:5: error: unterminated comment"));
    assert_true(fails_with("const l = [1, 2\n", 1, "t.em3:1:11: error: '[' is not closed"));
    assert_true(fails_with("", 1, "t.em3:1:1: error: the file is empty"));
    /* a top-level const cannot silently replace a module, nor another const */
    assert_true(fails_with("module M {}\nconst k = 1, M = 2\nconst k = 3\n", 2,
                           "t.em3:2:14: error: 'M' is already defined\n"));
    assert_true(fails_with("module M {}\nconst k = 1, M = 2\nconst k = 3\n", 2,
                           "t.em3:3:7: error: 'k' is already defined\n"));
    assert_true(fails_with("# only a comment\n", 1, "t.em3:1:1: error: the file is empty"));
}

/* Sources that are huge or deep in one direction are bounded without exhausting the stack. */
static void test_nesting_limits(void **state) {
    (void)state;
    size_t n = 200000, len = 0;
    char *s = malloc(16 + 4 * n);
    len += (size_t)sprintf(s, "const x = 1");
    for (size_t i = 0; i < n; i++) len += (size_t)sprintf(s + len, " + 1");
    assert_true(fails_with_n(s, len, NULL, 1, "error: the expression is nested more than 1000 "
                                              "deep"));
    /* the other left-leaning chains: calls, indexing, attributes */
    const char *const chains[] = {"()", "[0]", ".a"};
    for (int c = 0; c < 3; c++) {
        len = (size_t)sprintf(s, "model m {\n    input x : f32[B, 4]\n    fn forward() {\n"
                                 "        k = x");
        for (size_t i = 0; i < 50000; i++) len += (size_t)sprintf(s + len, "%s", chains[c]);
        len += (size_t)sprintf(s + len, "\n        output y = x\n    }\n}\n");
        assert_true(fails_with_n(s, len, NULL, -1, "t.em3:4:"));
    }
    len = (size_t)sprintf(s, "const x = ");
    for (size_t i = 0; i < n; i++) s[len++] = '(';
    assert_true(fails_with_n(s, len, NULL, 1, "t.em3:1:267: error: brackets are nested too "
                                              "deeply"));
    /* long runs of blank and comment lines scan in linear time (a look-ahead for an else on
       the next line once made every newline rescan the rest of the run) */
    len = (size_t)sprintf(s, "fn f(a) {\n    if a { return 1 }");
    for (size_t i = 0; i < n / 2; i++) len += (size_t)sprintf(s + len, i % 2 ? "\n" : "\n# c");
    len += (size_t)sprintf(s + len, "\n    else { return 2 }\n}\nconst k = f(0)\n");
    assert_true(fails_with_n(s, len, NULL, 1, "error: 'else' must be on the same line"));
    len = (size_t)sprintf(s, "const x = ");
    for (size_t i = 0; i < n; i++) s[len++] = '-';
    s[len++] = '1';
    assert_true(fails_with_n(s, len, NULL, 1, "error: the program is nested too deeply"));
    free(s);
}

static void test_elaboration_limits(void **state) {
    (void)state;
    assert_true(model_fails("", "l = [1]\nfor i in 0 .. 40 { l = l + l }",
                            "a list of 131072 elements is too long (at most 100000)"));
    assert_true(model_fails("", "k = B * 1073741824 * 2", "B can only be multiplied by a positive "
                                                          "integer, and by at most 2^30 in all"));
    assert_true(model_fails("param w : f32[1099511627776, 2] = zeros", "",
                            "a tensor of more than 2^40 elements is too large"));
    assert_true(model_fails("", "z = zeros([65536, 65536, 65536])", "too large"));
    assert_true(fails_with("fn f(n) { return f(n + 1) + 1 }\nconst k = f(0)\n", 1,
                           "calls are nested more than 200 deep: is 'f' recursive?"));
    /* an empty loop body still costs a step per iteration (found by the fuzzer: it spun) */
    assert_true(model_fails("", "for i in 0 .. 1000000000000 { }", "the model takes too long to "
                                                                  "elaborate"));
    assert_true(model_fails("", "l = [1, 1, 1, 1]\nfor i in 0 .. 1000000 { for j in l { } }",
                            "the model takes too long to elaborate"));
    /* an error in a body repeated 100 000 times stops after a hundred (found by the fuzzer:
       10 s under the sanitizers before) */
    char *src = model_with("l = repeat 100000 { Nothing(4) }", "");
    result r = compile_n(src, strlen(src), NULL);
    assert_true(r.errors > 20 && r.errors < 200);
    assert_non_null(strstr(r.diag, "further diagnostics are not shown"));
    result_free(&r);
    free(src);
    /* a device is no source: reading /dev/zero would take 64 MB, a pipe could block */
    assert_true(fails_with("import \"/dev/zero\"\n", 1, "t.em3:1:1: error: /dev/zero is not a "
                                                         "regular file"));
}

int main(void) {
    /* imports of the standard library resolve through EM3_PATH, as for the lit tests */
    const char *root = getenv("EM3_SOURCE_DIR");
    if (root) {
        char lib[4096];
        snprintf(lib, sizeof lib, "%s/models/lib", root);
        setenv("EM3_PATH", lib, 1);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constant_folding),  cmocka_unit_test(test_arithmetic_edges),
        cmocka_unit_test(test_lists),
        cmocka_unit_test(test_instance_paths),    cmocka_unit_test(test_weight_sharing),
        cmocka_unit_test(test_repeat),            cmocka_unit_test(test_for_loops),
        cmocka_unit_test(test_if_chains),         cmocka_unit_test(test_type_patterns),
        cmocka_unit_test(test_predict_excludes_labels), cmocka_unit_test(test_set_overrides),
        cmocka_unit_test(test_choose_model),      cmocka_unit_test(test_models_compile),
        cmocka_unit_test(test_several_errors),    cmocka_unit_test(test_lexer_regressions),
        cmocka_unit_test(test_nesting_limits),    cmocka_unit_test(test_elaboration_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
