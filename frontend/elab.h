/* frontend/elab.h — internal to the frontend: compile-time values, scopes, module instances
 * and the elaboration context shared by elab.c (statements, modules, models), eval.c
 * (expressions) and builtins.c (the built-in functions). Elaboration runs the program at
 * compile time: constants fold, modules instantiate, loops unroll, and every tensor
 * operation becomes an IR node of the model's @forward function. */
#ifndef EM3_ELAB_H
#define EM3_ELAB_H

#include "ast.h"
#include "frontend.h"
#include "ir/ir.h"

typedef enum {
    V_ERROR,    /* poison: an error was already reported; using it reports nothing more */
    V_NONE,
    V_BOOL,     /* i */
    V_INT,      /* i */
    V_FLOAT,    /* f */
    V_STRING,   /* s */
    V_BATCH,    /* i·B, a multiple of the batch dimension (i = 1: B itself) */
    V_DTYPE,    /* i: em3_dtype */
    V_LIST,     /* list */
    V_TENSOR,   /* i: value id in the function being built */
    V_GLOBAL,   /* i: global index; frozen: uses get stop_gradient */
    V_MODULE,   /* decl: AST_MODULE, called to instantiate */
    V_INSTANCE, /* inst */
    V_FN,       /* decl: AST_FN; env: where it was defined (a module's functions see its names) */
    V_BUILTIN,  /* i: index into the builtin table */
    V_INIT,     /* init: a parameter initialiser */
    V_GRAPH,    /* i: global index of a graph (a sparse matrix only spmm reads) */
} vkind;

typedef struct value value;
typedef struct scope scope;
typedef struct instance instance;

struct value {
    vkind kind;
    bool frozen;
    int64_t i;
    double f;
    const char *s;
    em3_init init;
    struct {
        value *items;
        int n;
    } list;
    const ast *decl;
    scope *env;
    instance *inst;
};

typedef struct binding {
    const char *name;
    value v;
    em3_loc loc;
    struct binding *next;
} binding;

struct scope {
    binding *head;
    scope *parent;
};

struct instance {
    const ast *decl; /* AST_MODULE or AST_MODEL */
    const char *path; /* "content.proj"; "" for the model itself */
    scope env;        /* its names; parent: the global scope */
    instance *shares; /* weights taken from this instance (or NULL) */
    bool shares_frozen;
    bool freeze;      /* made by `= Module(...) frozen`, or inside such an instance: its
                         parameters are frozen unless declared `trainable` */
    em3_loc shares_loc; /* the `shares` clause that asked for it: where mismatches are reported */
};

/* Where statements run: which ones are allowed follows from it. */
typedef enum { CTX_FILE, CTX_MODULE, CTX_MODEL, CTX_FN, CTX_FORWARD } ctx_kind;

typedef struct {
    const char *name;
    int value;
    em3_loc loc;
} elab_output;

/* Limits that keep any input, however pathological, to about a second of compile time (a few
 * under the sanitizers), bounded memory and a bounded C stack. Each is far beyond what a real
 * model needs: em3_din with 12 transformer layers takes 12 500 steps, 1 500 nodes and 252
 * globals. The globals' limit is the tightest because the IR finds a global by a linear scan,
 * which makes adding n of them cost n^2 / 2 name comparisons. */
#define EM3_ELAB_MAX_DEPTH 200
#define EM3_ELAB_MAX_DEPTH_DECL (EM3_ELAB_MAX_DEPTH + 1)
#define EM3_ELAB_MAX_EXPR_DEPTH 1000
#define EM3_ELAB_MAX_STEPS 1000000L
#define EM3_ELAB_MAX_NODES 1000000
#define EM3_ELAB_MAX_GLOBALS 2048 /* parameter tensors and data tables */
#define EM3_ELAB_MAX_LIST 100000 /* elements of a compile-time list, as repeat's count */
#define EM3_ELAB_MAX_NUMEL ((int64_t)1 << 40) /* elements of one tensor, B counted as 1 */
#define EM3_ELAB_MAX_ERRORS 100 /* then stop: an error in a loop body must not repeat 10^6 times */

typedef struct {
    em3_diag *diag;
    em3_arena *arena; /* values, scopes, instances: freed when elaboration ends */
    em3_module *mod;
    em3_func *fn;     /* @forward, being built */
    scope globals;    /* top-level declarations of every loaded file */
    const em3_frontend_options *opt;
    int *param_node, *frozen_node; /* per global: its param node in @forward (or -1) */
    int cap_nodes;
    int depth;           /* function call and instantiation depth */
    em3_loc call_site[EM3_ELAB_MAX_DEPTH_DECL]; /* where each active call was made */
    const char *call_name[EM3_ELAB_MAX_DEPTH_DECL];
    int eval_depth;      /* expressions being evaluated, nested: bounds the C stack */
    long steps;          /* statements and expressions evaluated, bounded */
    bool abort;          /* stop elaborating: a limit was hit */
    int errors_before;   /* the diag's error count when this compilation began */
    const char *name_hint; /* module-level assignment target: names new instances */
    int name_count;
    value share_src;       /* the instance (or list of them) a new instance takes weights from */
    bool freeze;           /* instances created now are frozen (see instance.freeze) */
    bool share_frozen;
    em3_loc share_loc;      /* the `shares` clause of share_src */
    em3_loc share_reported; /* a `shares` clause already reported as mismatched: once is enough */
    int loss;            /* value id of the loss, or -1 */
    em3_loc loss_loc;
    elab_output *out;
    int n_out, cap_out;
} elab;


/* ---- values and scopes (elab.c) ---- */
value v_error(void);
value v_int(int64_t i);
value v_float(double f);
value v_bool(bool b);
value v_tensor(int id);
const char *v_kind_name(const value *v);
/* "f32[B, 64]", "int 3", "module Linear": for messages. */
const char *v_describe(elab *e, const value *v);
void scope_bind(elab *e, scope *s, const char *name, value v, em3_loc loc);
binding *scope_lookup(scope *s, const char *name);
/* Reports and returns false when the step budget or the abort flag says stop. */
bool elab_tick(elab *e, em3_loc loc);
/* Charges `n` steps for work that is not one step (copying a long list). */
bool elab_charge(elab *e, long n, em3_loc loc);
bool elab_error(elab *e, em3_loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- statements (elab.c) ---- */
typedef enum { FLOW_NEXT, FLOW_RETURN } flow;
flow exec_block(elab *e, scope *s, const ast *stmts, ctx_kind ctx, value *ret);
/* Calls a user function (AST_FN) with already evaluated arguments. */
value call_fn(elab *e, const ast *fn, scope *env, const value *pos, int npos,
              const ast *const *kw_names, const value *kw, int nkw, em3_loc loc);
value instantiate(elab *e, const ast *module, const value *pos, int npos,
                  const ast *const *kw_names, const value *kw, int nkw, em3_loc loc);

/* ---- expressions (eval.c) ---- */
value eval(elab *e, scope *s, const ast *x);
/* The value as an IR tensor of @forward (materialising parameters and constants); -1 with an
 * error reported when it is not a tensor. `like` gives the dtype for numbers (-1: by value). */
int as_tensor(elab *e, const value *v, int like, em3_loc loc);
/* Compile-time integer / number / dims; false with an error reported otherwise. */
bool as_int(elab *e, const value *v, em3_loc loc, const char *what, int64_t *out);
bool as_number(elab *e, const value *v, em3_loc loc, const char *what, double *out);
bool as_bool(elab *e, const value *v, em3_loc loc, const char *what, bool *out);
/* A type expression; with `bind` (function parameters) unknown dimension names bind. */
bool eval_type(elab *e, scope *s, const ast *t, em3_type *out);
/* Checks `actual` against a type pattern (a function parameter's or result's annotation):
 * a dimension written as an unbound name binds to the actual dimension in `s`. */
bool match_type(elab *e, scope *s, const ast *t, const em3_type *actual, em3_loc loc,
                const char *what);
/* Adds an IR node, reporting a shape-rule error at `loc`. Returns the value or -1. */
int emit(elab *e, em3_node *proto, const int *in, int n_in, em3_loc loc);
/* A constant tensor of `rank` dims (0: a scalar); an error when v does not fit the dtype. */
int emit_const(elab *e, double v, em3_dtype dt, const int64_t *dims, int rank, em3_loc loc);
int emit_unary(elab *e, em3_op op, int x, em3_loc loc);
int emit_binary(elab *e, em3_op op, int a, int b, em3_loc loc);
int emit_reduce(elab *e, em3_op op, int x, const int64_t *axes, int n_axes, bool keep,
                em3_loc loc);
int emit_reshape(elab *e, int x, const int64_t *dims, int rank, em3_loc loc);
/* Reports and returns false when a shape has more than EM3_ELAB_MAX_NUMEL elements. */
bool check_numel(elab *e, const int64_t *dims, int rank, em3_loc loc);
/* Normalises a possibly negative axis against `rank`; reports and returns -1 if outside. */
int norm_axis(elab *e, int64_t axis, int rank, em3_loc loc);
value call_value(elab *e, scope *s, const value *callee, const ast *call);

/* ---- builtins (builtins.c) ---- */
int builtin_find(const char *name);
const char *builtin_name(int b);
value builtin_call(elab *e, int b, const value *pos, int npos, const ast *const *kw_names,
                   const value *kw, int nkw, em3_loc loc);

#endif
