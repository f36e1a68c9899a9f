/* frontend/elab.c — elaboration of statements: scopes, function calls, module instantiation
 * (parameters become IR globals named by their instance path, "content.proj.w"), weight
 * sharing, and the lowering of a model into its @forward and @predict functions.
 * Expressions are in eval.c, built-in functions in builtins.c. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "elab.h"

/* ---- values and scopes ------------------------------------------------------------------ */

value v_error(void) { return (value){.kind = V_ERROR}; }
value v_int(int64_t i) { return (value){.kind = V_INT, .i = i}; }
value v_float(double f) { return (value){.kind = V_FLOAT, .f = f}; }
value v_bool(bool b) { return (value){.kind = V_BOOL, .i = b}; }
value v_tensor(int id) { return id < 0 ? v_error() : (value){.kind = V_TENSOR, .i = id}; }

const char *v_kind_name(const value *v) {
    static const char *const names[] = {"an erroneous value", "none", "a bool", "an int",
                                        "a float", "a string", "the batch dimension B",
                                        "a dtype", "a list", "a tensor", "a tensor",
                                        "a module", "a module instance", "a function",
                                        "a built-in function", "an initialiser", "a graph"};
    return names[v->kind];
}

const char *v_describe(elab *e, const value *v) {
    char b[EM3_TYPE_STR_MAX];
    switch (v->kind) {
    case V_TENSOR:
        return em3_arena_printf(e->arena, "a tensor %s",
                                em3_type_str(&em3_func_node(e->fn, (int)v->i)->type, b, sizeof b));
    case V_GLOBAL:
        return em3_arena_printf(e->arena, "a tensor %s",
                                em3_type_str(&e->mod->global[v->i].type, b, sizeof b));
    case V_GRAPH:
        return em3_arena_printf(e->arena, "graph %s %s", e->mod->global[v->i].name,
                                em3_type_str(&e->mod->global[v->i].type, b, sizeof b));
    case V_INT: return em3_arena_printf(e->arena, "the int %lld", (long long)v->i);
    case V_BATCH: {
        char d[32];
        return em3_arena_printf(e->arena, "the batch dimension %s", em3_dim_str(-v->i, d, sizeof d));
    }
    case V_FLOAT: return em3_arena_printf(e->arena, "the float %g", v->f);
    case V_MODULE: return em3_arena_printf(e->arena, "module %s", v->decl->str);
    case V_INSTANCE:
        return em3_arena_printf(e->arena, "an instance of %s", v->inst->decl->str);
    case V_FN: return em3_arena_printf(e->arena, "function %s", v->decl->str);
    case V_BUILTIN: return em3_arena_printf(e->arena, "built-in %s", builtin_name((int)v->i));
    default: return v_kind_name(v);
    }
}

void scope_bind(elab *e, scope *s, const char *name, value v, em3_loc loc) {
    for (binding *b = s->head; b; b = b->next)
        if (!strcmp(b->name, name)) {
            b->v = v;
            return;
        }
    binding *b = em3_arena_alloc(e->arena, sizeof *b);
    *b = (binding){name, v, loc, s->head};
    s->head = b;
}

binding *scope_lookup(scope *s, const char *name) {
    for (; s; s = s->parent)
        for (binding *b = s->head; b; b = b->next)
            if (!strcmp(b->name, name)) return b;
    return NULL;
}

static bool same_loc(em3_loc a, em3_loc b) {
    return a.file == b.file && a.line == b.line && a.col == b.col;
}

bool elab_error(elab *e, em3_loc loc, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    em3_diag_error(e->diag, loc, "%s", msg);
    /* an error inside a library function is found through the user's calls: show them,
       innermost first, but not more than a handful; a recursion is one note, not 200 */
    for (int i = e->depth - 1, shown = 0; i >= 0 && shown < 6; shown++) {
        int j = i;
        while (j > 0 && same_loc(e->call_site[j - 1], e->call_site[i])) j--;
        if (j == i)
            em3_diag_note(e->diag, e->call_site[i], "in %s, called here", e->call_name[i]);
        else
            em3_diag_note(e->diag, e->call_site[i], "in %s, called here %d times in a row",
                          e->call_name[i], i - j + 1);
        i = j - 1;
    }
    return false;
}

bool elab_tick(elab *e, em3_loc loc) { return elab_charge(e, 1, loc); }

bool elab_charge(elab *e, long n, em3_loc loc) {
    if (e->abort) return false;
    if (em3_diag_error_count(e->diag) - e->errors_before > EM3_ELAB_MAX_ERRORS) { /* 20 shown */
        e->abort = true;
        return false;
    }
    if ((e->steps += n) > EM3_ELAB_MAX_STEPS) {
        e->abort = true;
        return elab_error(e, loc, "the model takes too long to elaborate (over %ld steps): "
                                  "does a loop or a recursion never end?", EM3_ELAB_MAX_STEPS);
    }
    if (e->fn && e->fn->n_node > EM3_ELAB_MAX_NODES) {
        e->abort = true;
        return elab_error(e, loc, "the model grows beyond %d IR nodes", EM3_ELAB_MAX_NODES);
    }
    return true;
}

/* ---- argument binding (functions and modules share it) ------------------------------------ */

static bool bind_args(elab *e, scope *s, const ast *formals, const char *what, const value *pos,
                      int npos, const ast *const *kw_names, const value *kw, int nkw, em3_loc loc) {
    int nf = ast_list_length(formals);
    if (npos > nf)
        return elab_error(e, loc, "%s takes %d argument%s, got %d", what, nf, nf == 1 ? "" : "s",
                          npos);
    bool ok = true;
    for (int k = 0; k < nkw; k++) {
        int idx = 0;
        const ast *f = formals;
        for (; f && strcmp(f->str, kw_names[k]->str); f = f->next) idx++;
        if (!f)
            ok = elab_error(e, kw_names[k]->loc, "%s has no parameter named '%s'", what,
                            kw_names[k]->str);
        else if (idx < npos)
            ok = elab_error(e, kw_names[k]->loc, "%s: '%s' is given twice", what, f->str);
        for (int j = 0; j < k; j++)
            if (!strcmp(kw_names[j]->str, kw_names[k]->str))
                ok = elab_error(e, kw_names[k]->loc, "%s: '%s' is given twice", what, f ? f->str : kw_names[k]->str);
    }
    if (!ok) return false;
    int i = 0;
    for (const ast *f = formals; f; f = f->next, i++) {
        value v;
        em3_loc at = loc;
        if (i < npos) {
            v = pos[i];
        } else {
            int k = 0;
            while (k < nkw && strcmp(kw_names[k]->str, f->str)) k++;
            if (k < nkw) {
                v = kw[k];
                at = kw_names[k]->loc;
            } else if (f->b) {
                v = eval(e, s, f->b); /* defaults see the parameters before them */
            } else {
                return elab_error(e, loc, "%s: missing argument '%s'", what, f->str);
            }
        }
        if (f->a && v.kind != V_ERROR) {
            if (v.kind != V_TENSOR && v.kind != V_GLOBAL)
                return elab_error(e, at, "%s: '%s' must be a tensor, got %s", what, f->str,
                                  v_describe(e, &v));
            int id = as_tensor(e, &v, -1, at);
            if (id < 0) return false;
            if (!match_type(e, s, f->a, &em3_func_node(e->fn, id)->type, at,
                            em3_arena_printf(e->arena, "%s: '%s'", what, f->str)))
                return false;
        }
        scope_bind(e, s, f->str, v, f->loc);
    }
    return true;
}

value call_fn(elab *e, const ast *fn, scope *env, const value *pos, int npos,
              const ast *const *kw_names, const value *kw, int nkw, em3_loc loc) {
    if (e->depth >= EM3_ELAB_MAX_DEPTH) {
        e->abort = true;
        elab_error(e, loc, "calls are nested more than %d deep: is '%s' recursive?",
                   EM3_ELAB_MAX_DEPTH, fn->str);
        return v_error();
    }
    scope *s = em3_arena_alloc(e->arena, sizeof *s);
    s->parent = env;
    const char *what = em3_arena_printf(e->arena, "function %s", fn->str);
    if (!bind_args(e, s, fn->list, what, pos, npos, kw_names, kw, nkw, loc)) return v_error();
    e->call_site[e->depth] = loc;
    e->call_name[e->depth++] = what;
    value ret = {.kind = V_NONE};
    exec_block(e, s, fn->list2, CTX_FN, &ret);
    e->depth--;
    if (fn->a && ret.kind != V_ERROR) {
        int id = as_tensor(e, &ret, -1, loc);
        if (id < 0) return v_error();
        if (!match_type(e, s, fn->a, &em3_func_node(e->fn, id)->type, loc,
                        em3_arena_printf(e->arena, "the result of %s", fn->str)))
            return v_error();
    }
    return ret;
}

/* ---- module instances --------------------------------------------------------------------- */

/* The path of the instance being created: the assignment's name, suffixed when one
 * assignment creates several. */
static const char *next_instance_path(elab *e) {
    int k = e->name_count++;
    return k == 0 ? e->name_hint : em3_arena_printf(e->arena, "%s.%d", e->name_hint, k);
}

static instance *new_instance(elab *e, const ast *decl, const char *path) {
    instance *in = em3_arena_alloc(e->arena, sizeof *in);
    in->decl = decl;
    in->path = path;
    in->env.parent = &e->globals;
    return in;
}

static flow exec_module_body(elab *e, instance *in, ctx_kind ctx);

value instantiate(elab *e, const ast *module, const value *pos, int npos,
                  const ast *const *kw_names, const value *kw, int nkw, em3_loc loc) {
    if (!e->name_hint) {
        elab_error(e, loc, "module %s is instantiated where it has no name: instantiate modules "
                           "in a module or model body, as 'name = %s(...)'",
                   module->str, module->str);
        return v_error();
    }
    if (e->depth >= EM3_ELAB_MAX_DEPTH) {
        e->abort = true;
        elab_error(e, loc, "modules are nested more than %d deep: does %s contain itself?",
                   EM3_ELAB_MAX_DEPTH, module->str);
        return v_error();
    }
    instance *in = new_instance(e, module, next_instance_path(e));
    in->freeze = e->freeze;
    /* sharing goes by parameter name and shape, so a LoRALinear can take a Linear's w and b */
    if (e->share_src.kind == V_INSTANCE) {
        in->shares = e->share_src.inst;
        in->shares_frozen = e->share_frozen;
        in->shares_loc = e->share_loc;
    }
    const char *what = em3_arena_printf(e->arena, "module %s", module->str);
    /* arguments are evaluated by the caller; defaults and the body see only the module */
    const char *hint = e->name_hint;
    int count = e->name_count;
    value share = e->share_src;
    e->name_hint = NULL;
    e->share_src = (value){.kind = V_NONE};
    bool ok = bind_args(e, &in->env, module->list, what, pos, npos, kw_names, kw, nkw, loc);
    if (ok) {
        e->call_site[e->depth] = loc;
        e->call_name[e->depth++] = em3_arena_printf(e->arena, "instance %s of %s", in->path, module->str);
        exec_module_body(e, in, CTX_MODULE);
        e->depth--;
    }
    e->name_hint = hint;
    e->name_count = count;
    e->share_src = share;
    return ok ? (value){.kind = V_INSTANCE, .inst = in} : v_error();
}

/* A new global for a param or data declaration; an error past the limit, which only a
 * runaway repeat reaches (and which keeps the IR's linear name lookups affordable). */
static value add_global(elab *e, const char *name, em3_type t, em3_global_kind kind, em3_init ini,
                        em3_loc loc) {
    if (e->mod->n_global >= EM3_ELAB_MAX_GLOBALS) {
        e->abort = true;
        elab_error(e, loc, "too many parameter and data tensors: %s would be one more than %d "
                           "(is a repeat count too large?)", name, EM3_ELAB_MAX_GLOBALS);
        return v_error();
    }
    int g = em3_module_add_global(e->mod, name, t, kind, ini, loc);
    if (g < 0) {
        elab_error(e, loc, "%s is declared twice", name);
        return v_error();
    }
    return (value){.kind = V_GLOBAL, .i = g};
}

/* An initialiser written as an unknown name gets a message that lists the known ones. */
static bool known_initialiser(elab *e, scope *s, const ast *x) {
    const ast *name = x->kind == AST_CALL ? x->a : x;
    if (name->kind != AST_NAME || scope_lookup(s, name->str) || builtin_find(name->str) >= 0)
        return true;
    return elab_error(e, name->loc, "unknown initialiser '%s' (zeros, ones, xavier, normal(std), "
                                    "uniform(a), constant(v) or a number)", name->str);
}

/* A `param` statement: a new global, or the same-named global of the instance shared from.
 * Returns what the name binds to (an error value after an error, so that uses stay quiet). */
static value declare_param(elab *e, scope *s, instance *in, const ast *st) {
    em3_type t;
    if (!eval_type(e, s, st->a, &t)) return v_error();
    if (em3_type_has_batch(&t)) {
        elab_error(e, st->a->loc, "a parameter cannot have the batch dimension B");
        return v_error();
    }
    if (!known_initialiser(e, s, st->b)) return v_error();
    value init = eval(e, s, st->b);
    em3_init ini = {EM3_INIT_NONE, 0};
    if (init.kind == V_INIT) {
        ini = init.init;
    } else if (init.kind == V_BUILTIN) {
        const char *n = builtin_name((int)init.i);
        if (!em3_init_kind_parse(n, &ini.kind) || ini.kind == EM3_INIT_CONST ||
            ini.kind == EM3_INIT_NORMAL || ini.kind == EM3_INIT_UNIFORM) {
            elab_error(e, st->b->loc, "'%s' is not an initialiser (zeros, ones, xavier, "
                                      "normal(std), uniform(a), constant(v))", n);
            return v_error();
        }
    } else if (init.kind == V_INT || init.kind == V_FLOAT) {
        ini = (em3_init){EM3_INIT_CONST, init.kind == V_INT ? (double)init.i : init.f};
    } else {
        if (init.kind != V_ERROR)
            elab_error(e, st->b->loc, "a parameter's initialiser must be zeros, ones, xavier, "
                                      "normal(std), uniform(a) or a number, not %s",
                       v_describe(e, &init));
        return v_error();
    }
    const char *name = *in->path ? em3_arena_printf(e->arena, "%s.%s", in->path, st->str) : st->str;
    if (in->shares) {
        binding *b = NULL;
        for (binding *x = in->shares->env.head; x; x = x->next)
            if (!strcmp(x->name, st->str)) b = x;
        if (b && b->v.kind == V_GLOBAL) {
            const em3_global *g = &e->mod->global[b->v.i];
            if (!em3_type_eq(&g->type, &t)) {
                /* the user wrote the `shares`, not the library's param: report it there, once */
                em3_loc at = in->shares_loc;
                if (same_loc(at, e->share_reported)) return v_error();
                char b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
                e->share_reported = at;
                em3_diag_error(e->diag, at, "cannot share %s with %s: it is %s, but %s is %s",
                               name, g->name, em3_type_str(&t, b0, sizeof b0), g->name,
                               em3_type_str(&g->type, b1, sizeof b1));
                em3_diag_note(e->diag, st->loc, "%s is declared here", name);
                return v_error();
            }
            value v = b->v;
            v.frozen = v.frozen || in->shares_frozen;
            return v;
        }
    }
    bool frozen = st->ival == 1 || (in->freeze && st->ival != 2); /* 2: declared trainable */
    return add_global(e, name, t, frozen ? EM3_GLOBAL_FROZEN : EM3_GLOBAL_PARAM, ini, st->loc);
}

/* The option `negative ITEM` of input p: the runtime samples it (docs/topk.md); ITEM must be an
 * earlier i32 id input, and both need the same vocabulary, given before. */
static void input_negative(elab *e, const ast *o, const value *v, em3_node *p) {
    const em3_node *pos = v->kind == V_TENSOR ? em3_func_node(e->fn, (int)v->i) : NULL;
    if (v->kind == V_ERROR) return;
    if (!pos || pos->op != EM3_OP_INPUT || pos->type.dtype != EM3_DTYPE_I32 || em3_node_i(pos, "label")) {
        elab_error(e, o->a->loc, "negative names the input of positive items, not %s", v_describe(e, v));
        return;
    }
    const em3_type *t = &p->type;
    if (t->dtype != EM3_DTYPE_I32 || t->rank < 1 || t->rank > 2 || t->dim[0] != EM3_DIM_BATCH ||
        (t->rank == 2 && em3_dim_has_batch(t->dim[1])) || em3_node_i(p, "vocab") != em3_node_i(pos, "vocab") ||
        em3_node_i(p, "vocab") <= 0)
        elab_error(e, o->loc, "a negative input is i32[B] or i32[B, k] with the vocab of %s, declared before "
                              "'negative'", em3_node_s(pos, "name"));
    else
        em3_node_set_i(p, "negative", 1);
}

/* input / label declarations: INPUT nodes of @forward, in declaration order. */
static value declare_input(elab *e, scope *s, const ast *st) {
    em3_type t;
    if (!eval_type(e, s, st->a, &t)) return v_error();
    em3_node p = em3_node_proto(EM3_OP_INPUT, st->loc);
    em3_node_set_s(&p, "name", st->str);
    if (st->kind == AST_LABEL) em3_node_set_i(&p, "label", 1);
    p.type = t;
    for (const ast *o = st->list; o; o = o->next) {
        value v = eval(e, s, o->a);
        int64_t x;
        if (!strcmp(o->str, "negative")) {
            input_negative(e, o, &v, &p);
            continue;
        }
        if (strcmp(o->str, "vocab") && strcmp(o->str, "pad")) {
            elab_error(e, o->loc, "unknown input option '%s' (vocab N, pad N, negative ITEM)", o->str);
            continue;
        }
        if (!as_int(e, &v, o->a->loc, o->str, &x)) continue;
        if (!strcmp(o->str, "vocab") && x <= 0) {
            elab_error(e, o->a->loc, "vocab must be positive, not %lld", (long long)x);
            continue;
        }
        if (t.dtype != EM3_DTYPE_I32) {
            elab_error(e, o->loc, "'%s' applies to i32 id inputs only", o->str);
            continue;
        }
        em3_node_set_i(&p, o->str, x);
    }
    for (int i = 0; i < e->fn->n_node; i++)
        if (e->fn->node[i].op == EM3_OP_INPUT && !strcmp(e->fn->node[i].attr[0].s, st->str)) {
            elab_error(e, st->loc, "input %s is declared twice", st->str);
            return v_error();
        }
    return v_tensor(emit(e, &p, NULL, 0, st->loc));
}

static value declare_data(elab *e, scope *s, const ast *st) {
    em3_type t;
    if (!eval_type(e, s, st->a, &t)) return v_error();
    if (em3_type_has_batch(&t)) {
        elab_error(e, st->a->loc, "a data table has a fixed shape: B is not allowed here");
        return v_error();
    }
    return add_global(e, st->str, t, EM3_GLOBAL_DATA, (em3_init){EM3_INIT_NONE, 0}, st->loc);
}

/* One option value of a graph builder as spec text: a number, a bool, a name-like string, or a
 * list of them joined by commas. False after reporting what cannot be written in a spec. */
static bool spec_value(elab *e, const value *v, em3_loc loc, em3_strbuf *out) {
    char num[32];
    switch (v->kind) {
    case V_INT: em3_sb_printf(out, "%lld", (long long)v->i); return true;
    case V_FLOAT: em3_format_double(num, sizeof num, v->f); em3_sb_printf(out, "%s", num); return true;
    case V_BOOL: em3_sb_printf(out, "%s", v->i ? "true" : "false"); return true;
    case V_STRING:
        if (!*v->s || v->s[strcspn(v->s, " ,=\"\\")])
            return elab_error(e, loc, "\"%s\" cannot be a graph option: names only, without spaces, commas, "
                                      "'=' or quotes", v->s);
        em3_sb_printf(out, "%s", v->s);
        return true;
    case V_LIST:
        if (!v->list.n) return elab_error(e, loc, "a graph option cannot be an empty list");
        for (int i = 0; i < v->list.n; i++) {
            if (v->list.items[i].kind == V_LIST) return elab_error(e, loc, "a graph option cannot nest lists");
            if (i) em3_sb_putc(out, ',');
            if (!spec_value(e, &v->list.items[i], loc, out)) return false;
        }
        return true;
    case V_ERROR: return false;
    default: return elab_error(e, loc, "a graph option is a number, a string or a list, not %s", v_describe(e, v));
    }
}

/* graph NAME : f32[rows, cols] = BUILDER(key = value, ...): a graph global whose spec the
 * runtime builds it from (runtime/graph.h). The builder and its options are checked against
 * ir.h's list; what the values mean is the runtime's to check, at the declaration's location. */
static value declare_graph(elab *e, scope *s, const ast *st) {
    em3_type t;
    if (!eval_type(e, s, st->a, &t)) return v_error();
    if (t.dtype != EM3_DTYPE_F32 || t.rank != 2 || em3_type_has_batch(&t)) {
        char b[EM3_TYPE_STR_MAX];
        elab_error(e, st->a->loc, "a graph is an f32 matrix of fixed shape, not %s", em3_type_str(&t, b, sizeof b));
        return v_error();
    }
    const ast *call = st->b;
    if (call->kind != AST_CALL || call->a->kind != AST_NAME) {
        elab_error(e, call->loc, "a graph is built by a call: user_item(...) or item_knn(...)");
        return v_error();
    }
    const char *const *keys = em3_graph_builder_options(call->a->str);
    if (!keys) {
        elab_error(e, call->a->loc, "unknown graph builder '%s' (user_item, item_knn)", call->a->str);
        return v_error();
    }
    em3_strbuf spec = {0};
    em3_sb_printf(&spec, "%s", call->a->str);
    bool ok = true;
    for (const ast *arg = call->list; arg; arg = arg->next) {
        if (arg->kind != AST_KWARG) {
            ok = elab_error(e, arg->loc, "graph options are named: %s(key = value, ...)", call->a->str);
            continue;
        }
        bool known = false;
        for (int i = 0; keys[i]; i++) known |= !strcmp(keys[i], arg->str);
        if (!known) {
            em3_strbuf list = {0};
            for (int i = 0; keys[i]; i++) em3_sb_printf(&list, "%s%s", i ? ", " : "", keys[i]);
            ok = elab_error(e, arg->loc, "%s has no option '%s' (it takes: %s)", call->a->str, arg->str, list.data);
            em3_sb_free(&list);
            continue;
        }
        em3_sb_printf(&spec, " %s=", arg->str);
        value v = eval(e, s, arg->a);
        ok = spec_value(e, &v, arg->a->loc, &spec) && ok;
    }
    value r = v_error();
    if (ok) {
        r = add_global(e, st->str, t, EM3_GLOBAL_GRAPH, (em3_init){EM3_INIT_NONE, 0}, st->loc);
        if (r.kind == V_GLOBAL) {
            e->mod->global[r.i].spec = em3_arena_strdup(e->mod->arena, spec.data);
            r.kind = V_GRAPH;
        }
    }
    em3_sb_free(&spec);
    return r;
}

/* A model-level constant may be overridden from the command line (--set NAME=VALUE). */
static value override_value(elab *e, const char *name, em3_loc loc, bool *found) {
    *found = false;
    if (!e->opt) return v_error();
    for (int i = 0; i < e->opt->n_overrides; i++) {
        const em3_const_override *o = &e->opt->overrides[i];
        if (strcmp(o->name, name)) continue;
        *found = true;
        char *end;
        errno = 0;
        long long iv = strtoll(o->value, &end, 10);
        bool range = errno == ERANGE;
        if (*o->value && !*end && !range) return v_int(iv);
        double fv = strtod(o->value, &end);
        if (*o->value && !*end && !range && isfinite(fv)) return v_float(fv);
        if (*o->value && !*end) { /* inf, nan, 1e999, or an integer beyond 64 bits */
            elab_error(e, loc, "--set %s=%s: the number is too large or not finite", name,
                       o->value);
            return v_error();
        }
        if (!strcmp(o->value, "true") || !strcmp(o->value, "false"))
            return v_bool(!strcmp(o->value, "true"));
        return (value){.kind = V_STRING, .s = o->value};
    }
    return v_error();
}

static const char *ctx_name(ctx_kind c) {
    static const char *const n[] = {"at the top level of a file", "in a module body",
                                    "in a model body", "in a function",
                                    "in the model's forward"};
    return n[c];
}

static bool is_compile_time(const value *v) {
    return v->kind != V_TENSOR && v->kind != V_GLOBAL;
}

static flow exec_stmt(elab *e, scope *s, instance *in, const ast *st, ctx_kind ctx, value *ret);

static flow exec_stmts(elab *e, scope *s, instance *in, const ast *stmts, ctx_kind ctx,
                       value *ret) {
    for (const ast *st = stmts; st && !e->abort; st = st->next)
        if (exec_stmt(e, s, in, st, ctx, ret) == FLOW_RETURN) return FLOW_RETURN;
    return FLOW_NEXT;
}

flow exec_block(elab *e, scope *s, const ast *stmts, ctx_kind ctx, value *ret) {
    return exec_stmts(e, s, NULL, stmts, ctx, ret);
}

static flow exec_module_body(elab *e, instance *in, ctx_kind ctx) {
    value ret;
    return exec_stmts(e, &in->env, in, in->decl->list2, ctx, &ret);
}

static bool allowed(elab *e, const ast *st, ctx_kind ctx, bool ok, const char *what) {
    if (!ok) elab_error(e, st->loc, "%s is not allowed %s", what, ctx_name(ctx));
    return ok;
}

/* What `shares` takes: an instance, or a list of them shared element by element (eval.c). */
static bool is_shareable(const value *v) {
    if (v->kind != V_LIST) return v->kind == V_INSTANCE;
    for (int i = 0; i < v->list.n; i++)
        if (v->list.items[i].kind != V_INSTANCE) return false;
    return true;
}

static void exec_assign(elab *e, scope *s, instance *in, const ast *st, ctx_kind ctx) {
    bool module_level = ctx == CTX_MODULE || ctx == CTX_MODEL;
    if (st->b && !allowed(e, st, ctx, module_level, "'shares'")) return;
    const char *hint = e->name_hint;
    int count = e->name_count;
    value share = e->share_src;
    bool share_frozen = e->share_frozen, freeze = e->freeze;
    em3_loc share_loc = e->share_loc;
    if (module_level) {
        e->freeze = (!st->b && st->ival == 2) || (in && in->freeze);
        e->name_hint = *in->path ? em3_arena_printf(e->arena, "%s.%s", in->path, st->str) : st->str;
        e->name_count = 0;
        e->share_src = (value){.kind = V_NONE};
        /* inside an instance that shares weights, same-named children share too */
        if (in->shares) {
            binding *b = NULL;
            for (binding *x = in->shares->env.head; x; x = x->next)
                if (!strcmp(x->name, st->str)) b = x;
            if (b) e->share_src = b->v;
            e->share_frozen = in->shares_frozen;
            e->share_loc = in->shares_loc;
        }
        if (st->b) {
            value src = eval(e, s, st->b);
            if (!is_shareable(&src) && src.kind != V_ERROR)
                elab_error(e, st->b->loc, "'shares' needs a module instance or a list of them, "
                                          "got %s", v_describe(e, &src));
            e->share_src = src;
            e->share_frozen = st->ival != 0;
            e->share_loc = st->b->loc;
        }
    }
    value v = eval(e, s, st->a);
    if (module_level && st->b && !is_shareable(&v) && v.kind != V_ERROR)
        elab_error(e, st->loc, "'shares' applies to a module instantiation (or a list of them)");
    e->name_hint = hint;
    e->name_count = count;
    e->share_src = share;
    e->share_frozen = share_frozen;
    e->share_loc = share_loc;
    e->freeze = freeze;
    if (!st->b && st->ival == 2 && v.kind != V_INSTANCE && v.kind != V_LIST && v.kind != V_ERROR)
        elab_error(e, st->loc, "'frozen' after an assignment applies to a module instantiation");
    scope_bind(e, s, st->str, v, st->loc);
}

static void exec_if(elab *e, scope *s, instance *in, const ast *st, ctx_kind ctx, value *ret,
                    flow *fl) {
    value c = eval(e, s, st->a);
    bool b = false;
    if (c.kind == V_TENSOR || c.kind == V_GLOBAL) {
        elab_error(e, st->a->loc, "'if' needs a condition known at compile time; for a choice "
                                  "per element use where(cond, a, b)");
        return;
    }
    if (!as_bool(e, &c, st->a->loc, "the condition of 'if'", &b)) return;
    const ast *branch = b ? st->list2 : st->list;
    if (branch && branch->kind == AST_NONE) branch = NULL; /* the empty-else marker */
    *fl = exec_stmts(e, s, in, branch, ctx, ret);
}

static void exec_for(elab *e, scope *s, instance *in, const ast *st, ctx_kind ctx, value *ret,
                     flow *fl) {
    value a = eval(e, s, st->a);
    if (st->b) {
        value b = eval(e, s, st->b);
        int64_t lo, hi;
        if (!as_int(e, &a, st->a->loc, "a range start", &lo) ||
            !as_int(e, &b, st->b->loc, "a range end", &hi))
            return;
        /* each iteration is a step, so that an empty body cannot spin 10^12 times */
        for (int64_t i = lo; i < hi && elab_tick(e, st->loc); i++) {
            scope_bind(e, s, st->str, v_int(i), st->loc);
            if ((*fl = exec_stmts(e, s, in, st->list2, ctx, ret)) == FLOW_RETURN) return;
        }
        return;
    }
    if (a.kind != V_LIST) {
        if (a.kind != V_ERROR)
            elab_error(e, st->a->loc, "'for' iterates over a list or a range a .. b, not %s",
                       v_describe(e, &a));
        return;
    }
    for (int i = 0; i < a.list.n && elab_tick(e, st->loc); i++) {
        scope_bind(e, s, st->str, a.list.items[i], st->loc);
        if ((*fl = exec_stmts(e, s, in, st->list2, ctx, ret)) == FLOW_RETURN) return;
    }
}

/* `output NAME = expr` also binds NAME, as an assignment would: later statements may use it
 * (a poisoned value too, so that one error is not reported again as an unknown name). */
static void exec_output(elab *e, scope *s, const ast *st) {
    value v = eval(e, s, st->a);
    int id = as_tensor(e, &v, -1, st->a->loc);
    if (strcmp(st->str, "loss")) scope_bind(e, s, st->str, id < 0 ? v_error() : v_tensor(id), st->loc);
    if (id < 0) return;
    for (int i = 0; i < e->n_out; i++)
        if (!strcmp(e->out[i].name, st->str)) {
            elab_error(e, st->loc, "output %s is given twice", st->str);
            return;
        }
    if (!strcmp(st->str, "loss")) {
        elab_error(e, st->loc, "'loss' is reserved for the loss statement: loss = ...");
        return;
    }
    EM3_GROW(e->out, e->cap_out, e->n_out + 1);
    e->out[e->n_out++] = (elab_output){st->str, id, st->loc};
}

static void exec_loss(elab *e, scope *s, const ast *st) {
    value v = eval(e, s, st->a);
    int id = as_tensor(e, &v, -1, st->a->loc);
    if (id < 0) return;
    const em3_type *t = &em3_func_node(e->fn, id)->type;
    char b[EM3_TYPE_STR_MAX];
    if (t->rank != 0 || t->dtype != EM3_DTYPE_F32) {
        elab_error(e, st->a->loc, "the loss must be an f32 scalar, got %s (reduce it with mean or sum)",
                   em3_type_str(t, b, sizeof b));
        return;
    }
    if (e->loss >= 0) {
        elab_error(e, st->loc, "the loss is given twice (add the terms into one loss)");
        return;
    }
    e->loss = id;
    e->loss_loc = st->loc;
}

static flow exec_stmt(elab *e, scope *s, instance *in, const ast *st, ctx_kind ctx, value *ret) {
    if (!elab_tick(e, st->loc)) return FLOW_NEXT;
    bool body = ctx == CTX_MODULE || ctx == CTX_MODEL;
    bool code = ctx == CTX_FN || ctx == CTX_FORWARD;
    flow fl = FLOW_NEXT;
    switch (st->kind) {
    case AST_NONE: break;
    case AST_IMPORT: allowed(e, st, ctx, false, "import"); break;
    case AST_MODULE: allowed(e, st, ctx, ctx == CTX_FILE, "a module declaration"); break;
    case AST_MODEL: allowed(e, st, ctx, ctx == CTX_FILE, "a model declaration"); break;
    case AST_CONST:
        for (const ast *c = st->list; c; c = c->next) {
            bool over = false;
            value v = ctx == CTX_MODEL ? override_value(e, c->str, c->loc, &over) : v_error();
            if (!over) v = eval(e, s, c->a);
            if (!is_compile_time(&v)) {
                elab_error(e, c->loc, "const %s must be known at compile time, but it is %s "
                                      "(use a plain assignment for tensors)", c->str,
                           v_describe(e, &v));
                v = v_error();
            }
            scope_bind(e, s, c->str, v, c->loc);
        }
        break;
    case AST_PARAM:
        if (allowed(e, st, ctx, body, "a parameter declaration"))
            scope_bind(e, s, st->str, declare_param(e, s, in, st), st->loc);
        break;
    case AST_INPUT:
    case AST_LABEL:
        if (allowed(e, st, ctx, ctx == CTX_MODEL,
                    st->kind == AST_INPUT ? "an input declaration" : "a label declaration"))
            scope_bind(e, s, st->str, declare_input(e, s, st), st->loc);
        break;
    case AST_DATA:
        if (allowed(e, st, ctx, ctx == CTX_MODEL, "a data table declaration"))
            scope_bind(e, s, st->str, declare_data(e, s, st), st->loc);
        break;
    case AST_GRAPH:
        if (allowed(e, st, ctx, ctx == CTX_MODEL, "a graph declaration"))
            scope_bind(e, s, st->str, declare_graph(e, s, st), st->loc);
        break;
    case AST_FN:
        if (allowed(e, st, ctx, body || ctx == CTX_FILE, "a function declaration"))
            scope_bind(e, s, st->str, (value){.kind = V_FN, .decl = st, .env = s}, st->loc);
        break;
    case AST_ASSIGN:
        if (allowed(e, st, ctx, ctx != CTX_FILE, "an assignment (top-level names use const)"))
            exec_assign(e, s, in, st, ctx);
        break;
    case AST_OUTPUT:
        if (allowed(e, st, ctx, ctx == CTX_FORWARD, "an output statement")) exec_output(e, s, st);
        break;
    case AST_LOSS:
        if (allowed(e, st, ctx, ctx == CTX_FORWARD, "a loss statement")) exec_loss(e, s, st);
        break;
    case AST_RETURN:
        if (ctx == CTX_FORWARD) {
            elab_error(e, st->loc, "'return' is not allowed in the model's forward: it ends "
                                   "with output and loss statements");
            break;
        }
        if (!allowed(e, st, ctx, ctx == CTX_FN, "'return'")) break;
        *ret = st->a ? eval(e, s, st->a) : (value){.kind = V_NONE};
        fl = FLOW_RETURN;
        break;
    case AST_FOR:
        if (allowed(e, st, ctx, code, "a for loop (use repeat for lists of modules)"))
            exec_for(e, s, in, st, ctx, ret, &fl);
        break;
    case AST_IF:
        if (allowed(e, st, ctx, ctx != CTX_FILE, "an if statement")) exec_if(e, s, in, st, ctx, ret, &fl);
        break;
    case AST_ASSERT: {
        value c = eval(e, s, st->a);
        bool b = false;
        if (!as_bool(e, &c, st->a->loc, "an assertion", &b) || b) break;
        value m = st->b ? eval(e, s, st->b) : (value){.kind = V_NONE};
        elab_error(e, st->loc, "assertion failed%s%s", m.kind == V_STRING ? ": " : "",
                   m.kind == V_STRING ? m.s : "");
        break;
    }
    case AST_EXPR:
        if (allowed(e, st, ctx, ctx != CTX_FILE, "an expression statement")) {
            const char *hint = e->name_hint;
            e->name_hint = NULL;
            eval(e, s, st->a);
            e->name_hint = hint;
        }
        break;
    default: EM3_UNREACHABLE("statement kind %d in a statement list", (int)st->kind);
    }
    return fl;
}

/* ---- models ------------------------------------------------------------------------------- */

/* @predict: the outputs' slice of @forward. Labels must not reach it. */
static void build_predict(elab *e) {
    em3_func *f = e->fn;
    bool *live = em3_xcalloc((size_t)f->n_node, sizeof(bool));
    for (int i = 0; i < e->n_out; i++) live[e->out[i].value] = true;
    for (int i = f->n_node - 1; i >= 0; i--)
        if (live[i])
            for (int k = 0; k < f->node[i].n_in; k++) live[f->node[i].in[k]] = true;
    bool label_reached = false;
    for (int i = 0; i < f->n_node; i++)
        if (live[i] && f->node[i].op == EM3_OP_INPUT && em3_node_i(&f->node[i], "label")) {
            /* name the output that depends on it */
            for (int o = 0; o < e->n_out && !label_reached; o++) {
                bool *dep = em3_xcalloc((size_t)f->n_node, sizeof(bool));
                dep[e->out[o].value] = true;
                for (int j = e->out[o].value; j >= 0; j--)
                    if (dep[j])
                        for (int k = 0; k < f->node[j].n_in; k++) dep[f->node[j].in[k]] = true;
                if (dep[i]) {
                    elab_error(e, e->out[o].loc, "output %s depends on the label %s: outputs "
                                                 "are what the model predicts without labels",
                               e->out[o].name, f->node[i].attr[0].s);
                    label_reached = true;
                }
                free(dep);
            }
        }
    if (!label_reached) {
        em3_func *p = em3_module_add_func(e->mod, "predict");
        int *map = em3_xmalloc(sizeof(int) * (size_t)f->n_node);
        for (int i = 0; i < f->n_node; i++) {
            map[i] = -1;
            if (!live[i]) continue;
            int in[64], *ins = f->node[i].n_in <= 64 ? in : em3_xmalloc(sizeof(int) * (size_t)f->node[i].n_in);
            for (int k = 0; k < f->node[i].n_in; k++) ins[k] = map[f->node[i].in[k]];
            map[i] = em3_func_add_checked(p, &f->node[i], ins, f->node[i].n_in);
            if (ins != in) free(ins);
        }
        for (int i = 0; i < e->n_out; i++)
            em3_func_add_output(p, e->out[i].name, map[e->out[i].value]);
        free(map);
    }
    free(live);
}

bool elab_model(elab *e, const ast *model) {
    instance *in = new_instance(e, model, "");
    e->fn = em3_module_add_func(e->mod, "forward");
    e->loss = -1;
    exec_module_body(e, in, CTX_MODEL);
    if (e->abort) return false;
    if (e->opt)
        for (int i = 0; i < e->opt->n_overrides; i++) {
            bool declared = false;
            for (const ast *st = model->list2; st; st = st->next)
                if (st->kind == AST_CONST)
                    for (const ast *c = st->list; c; c = c->next)
                        if (!strcmp(c->str, e->opt->overrides[i].name)) declared = true;
            if (!declared && !e->opt->overrides[i].optional)
                elab_error(e, model->loc, "--set %s: model %s has no constant %s",
                           e->opt->overrides[i].name, model->str, e->opt->overrides[i].name);
        }
    binding *fwd = NULL;
    for (binding *b = in->env.head; b; b = b->next)
        if (!strcmp(b->name, "forward")) fwd = b;
    if (!fwd || fwd->v.kind != V_FN)
        return elab_error(e, model->loc, "model %s needs a function 'fn forward() { ... }' that "
                                         "ends with output and loss statements", model->str);
    if (fwd->v.decl->list)
        return elab_error(e, fwd->v.decl->loc, "a model's forward takes no parameters: it "
                                               "reads the model's inputs by name");
    scope *s = em3_arena_alloc(e->arena, sizeof *s);
    s->parent = &in->env;
    value ret;
    exec_stmts(e, s, in, fwd->v.decl->list2, CTX_FORWARD, &ret);
    if (e->abort || em3_diag_error_count(e->diag)) return false;
    if (e->n_out == 0)
        return elab_error(e, fwd->v.decl->loc, "model %s has no outputs: add 'output NAME = ...' "
                                               "to its forward", model->str);
    if (e->loss >= 0) em3_func_add_output(e->fn, "loss", e->loss);
    for (int i = 0; i < e->n_out; i++) em3_func_add_output(e->fn, e->out[i].name, e->out[i].value);
    build_predict(e);
    return em3_diag_error_count(e->diag) == 0;
}
