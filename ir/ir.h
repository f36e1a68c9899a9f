/* ir/ir.h — the EM3 tensor IR: a module of globals (parameters, data tables, optimizer state)
 * and SSA functions whose nodes are ops from ops.def with static shapes and one symbolic batch
 * dimension B. Nodes live in topological order; a value is the index of the node producing it. */
#ifndef EM3_IR_H
#define EM3_IR_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "diag.h"
#include "support.h"

/* ---- types ------------------------------------------------------------------------------ */

typedef enum { EM3_DTYPE_F32, EM3_DTYPE_I32, EM3_DTYPE_COUNT } em3_dtype;

#define EM3_MAX_RANK 8
/* A dimension is a positive size, or a static multiple of a symbolic size: the batch B, or
 * U1 … U7, the count of distinct ids within a batch that a `unique` node defines (its attribute
 * sym), at most the count of those ids. -k stands for k·B (printed "B" for k = 1, "B*k"
 * otherwise), so that [B, 50, 64] can be viewed as [B*50, 64] — the shape a history of 50 items
 * per row takes when its items are processed as one batch, and the shape of a weight gradient's
 * contraction; -(s·2⁴⁰ + k) stands for k·Us ("U1", "U1*8"). Symbols never mix: a reshape keeps
 * each one's power, a concat joins multiples of one symbol. Code that sizes memory takes every
 * Us at its bound (em3_func_symbols); code that loops takes the count of the batch at hand. */
#define EM3_DIM_BATCH (-1)
#define EM3_MAX_SYMBOLS 8 /* B and U1 … U7 */
#define EM3_DIM_SYM_SHIFT 40

static inline bool em3_dim_has_batch(int64_t d) { return d < 0; }
/* The symbol of a symbolic dimension: 0 for B, s for Us. */
static inline int em3_dim_sym(int64_t d) { return d < 0 ? (int)(-d >> EM3_DIM_SYM_SHIFT) : -1; }
/* k of k·B or k·Us; a static size itself. */
static inline int64_t em3_dim_coef(int64_t d) {
    return d < 0 ? -d & (((int64_t)1 << EM3_DIM_SYM_SHIFT) - 1) : d;
}
static inline int64_t em3_dim_make(int sym, int64_t k) {
    return -(((int64_t)sym << EM3_DIM_SYM_SHIFT) + k);
}
/* The name of symbol s: "B" for 0, "U1" … "U7"; returns name. */
static inline const char *em3_sym_name(int s, char name[4]) {
    name[0] = s ? 'U' : 'B';
    name[1] = s ? (char)('0' + s) : 0;
    name[2] = 0;
    return name;
}
/* The size of d with the symbols' values sym[0] = B, sym[s] = Us. */
static inline int64_t em3_dim_eval(int64_t d, const int64_t *sym) {
    return d < 0 ? em3_dim_coef(d) * sym[em3_dim_sym(d)] : d;
}
/* The size of a dimension that can hold B but no Us. */
int64_t em3_dim_size(int64_t d, int64_t batch);
/* The product of n dimensions as one dimension, when that is expressible — at most one of them
 * symbolic ([B, 50] → B*50, [U1, 8] → U1*8); false otherwise. */
bool em3_dims_product(const int64_t *d, int n, int64_t *out);
/* "64", "B", "B*50", "U1*8" into buf; returns buf. */
char *em3_dim_str(int64_t d, char *buf, size_t n);

typedef struct {
    em3_dtype dtype;
    int rank;
    int64_t dim[EM3_MAX_RANK];
} em3_type;

const char *em3_dtype_name(em3_dtype t);
bool em3_dtype_parse(const char *s, em3_dtype *out);
em3_type em3_type_make(em3_dtype dt, int rank, const int64_t *dims);
bool em3_type_eq(const em3_type *a, const em3_type *b);
bool em3_type_has_batch(const em3_type *t);
/* Element count with B taken as `batch` (the type holds no Us). */
int64_t em3_type_numel(const em3_type *t, int64_t batch);
/* Element count with the symbols' values sym[0] = B, sym[s] = Us. */
int64_t em3_type_numel_at(const em3_type *t, const int64_t *sym);
/* Whether the type has a dimension in some Us. */
bool em3_type_has_uniq(const em3_type *t);
/* "f32[B, 64]"; returns `buf`. */
char *em3_type_str(const em3_type *t, char *buf, size_t n);
#define EM3_TYPE_STR_MAX 160

/* ---- ops (from ops.def) ----------------------------------------------------------------- */

typedef enum {
#define OP(E, ...) EM3_OP_##E,
#include "ops.def"
#undef OP
    EM3_OP_COUNT
} em3_op;

typedef enum {
    EM3_KIND_LEAF,
    EM3_KIND_ELEMWISE,
    EM3_KIND_REDUCE,
    EM3_KIND_SHAPE,
    EM3_KIND_GEMM,
    EM3_KIND_GATHER,
    EM3_KIND_OPAQUE,
} em3_op_kind;

enum {
    EM3_OPF_INPLACE = 1 << 0,     /* the result may take operand 0's buffer when it dies here */
    EM3_OPF_NOGRAD_IN0 = 1 << 1,  /* operand 0 receives no gradient */
    EM3_OPF_NOGRAD_IN1 = 1 << 2,  /* operand 1 receives no gradient (ids, labels) */
    EM3_OPF_NOGRAD_ALL = 1 << 3,  /* no operand receives a gradient */
    EM3_OPF_SIDE_EFFECT = 1 << 4, /* writes a global: never removed, ordered after its reads */
    EM3_OPF_NOGRAD_IN3 = 1 << 5,  /* operand 3 receives no gradient (attention's mask) */
    EM3_OPF_NOGRAD_IN2 = 1 << 6,  /* operand 2 receives no gradient (dropout_train's row0) */
};

typedef enum {
    EM3_ATTR_INT = 'i',
    EM3_ATTR_FLOAT = 'f',
    EM3_ATTR_BOOL = 'b',
    EM3_ATTR_DTYPE = 't',
    EM3_ATTR_SYMBOL = '@',
    EM3_ATTR_INTS = 'I',
    EM3_ATTR_SHAPE = 'S',
    EM3_ATTR_STRING = 's',
} em3_attr_kind;

#define EM3_MAX_ATTRS 6

/* One attribute slot; which member is meaningful follows the op's attribute spec. */
typedef struct {
    int64_t i;            /* INT, BOOL, DTYPE */
    double f;             /* FLOAT */
    const char *s;        /* SYMBOL, STRING */
    const int64_t *list;  /* INTS, SHAPE (B as EM3_DIM_BATCH) */
    int n;                /* length of list */
} em3_attrval;

typedef struct {
    char name[24];
    em3_attr_kind kind;
    bool has_default;
    em3_attrval def;
} em3_attr_spec;

const char *em3_op_name(em3_op op);
bool em3_op_parse(const char *name, em3_op *out);
int em3_op_arity(em3_op op);
em3_op_kind em3_op_kind_of(em3_op op);
const char *em3_op_kind_name(em3_op_kind k);
unsigned em3_op_flags(em3_op op);
const char *em3_op_attr_text(em3_op op); /* the raw spec string, for docs */
int em3_op_attr_count(em3_op op);
em3_attr_spec em3_op_attr(em3_op op, int slot);
int em3_op_attr_slot(em3_op op, const char *name); /* -1 when the op has no such attribute */
/* Whether operand `i` of `op` can carry a gradient (from the NOGRAD flags). */
bool em3_op_operand_differentiable(em3_op op, int i);

/* dropout_train's mask: element `index` of the site `salt` at training step `step` is kept
 * when a 32-bit hash of the three is at least p·2³² (murmur3's finaliser, which mixes every
 * input bit into every output bit). Integer arithmetic only, so the interpreter, the JIT and
 * a built library draw the same mask; codegen/emit_data.c emits these very operations. */
static inline uint32_t em3_dropout_mix(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}
static inline uint32_t em3_dropout_key(uint32_t salt, uint32_t step) {
    return em3_dropout_mix(salt * 0x9e3779b1u ^ em3_dropout_mix(step + 0x632be5abu));
}
static inline uint32_t em3_dropout_threshold(double p) {
    return p <= 0 ? 0 : p >= 1 ? UINT32_MAX : (uint32_t)(p * 4294967296.0);
}
static inline bool em3_dropout_keep(uint32_t key, uint32_t index, uint32_t threshold) {
    return em3_dropout_mix(index * 0xcc9e2d51u ^ key) >= threshold;
}
/* The index in the whole batch of a call's first element, the call holding the batch's rows
 * from row0 on (a value without the batch dimension: 0, every call sees all of it). */
static inline int64_t em3_dropout_first(const em3_type *t, int64_t row0) {
    return em3_type_has_batch(t) ? row0 * em3_type_numel(t, 1) : 0;
}

/* ---- nodes, functions, modules ------------------------------------------------------------ */

typedef struct {
    em3_op op;
    em3_type type;
    int n_in;
    const int *in; /* operand value ids, all smaller than this node's id */
    em3_attrval attr[EM3_MAX_ATTRS];
    em3_loc loc;        /* where the DSL wrote it (line 0 when unknown) */
    const char *origin; /* for fused nodes: the source ops, "matmul,mul,softmax,matmul" */
} em3_node;

typedef struct em3_module em3_module;

typedef struct {
    const char *name;
    int value;
} em3_output;

typedef struct {
    em3_module *mod;
    const char *name;
    em3_node *node;
    int n_node, cap_node;
    em3_output *out;
    int n_out, cap_out;
} em3_func;

typedef enum {
    EM3_GLOBAL_PARAM,  /* trainable parameter */
    EM3_GLOBAL_FROZEN, /* parameter that is never trained */
    EM3_GLOBAL_DATA,   /* a table supplied by the dataset (item side table) */
    EM3_GLOBAL_STATE,  /* optimizer or runtime state */
    EM3_GLOBAL_GRAPH,  /* a sparse matrix the runtime builds from the dataset (spec: how);
                          read only by spmm, never stored densely */
} em3_global_kind;

typedef enum {
    EM3_INIT_NONE,
    EM3_INIT_ZEROS,
    EM3_INIT_ONES,
    EM3_INIT_CONST,   /* a */
    EM3_INIT_NORMAL,  /* N(0, a^2) */
    EM3_INIT_UNIFORM, /* U(-a, a) */
    EM3_INIT_XAVIER,  /* Glorot uniform over the last two dims */
} em3_init_kind;

typedef struct {
    em3_init_kind kind;
    double a;
} em3_init;

typedef struct {
    const char *name;
    em3_type type;
    em3_global_kind kind;
    em3_init init;
    em3_loc loc;
    const char *spec; /* GRAPH: the builder and its options, e.g. "user_item dropout=0.8"
                         (runtime/graph.h reads it); NULL otherwise */
} em3_global;

struct em3_module {
    em3_arena *arena;
    const char *name;
    em3_global *global;
    int n_global, cap_global;
    em3_func **func;
    int n_func, cap_func;
};

em3_module *em3_module_create(const char *name);
void em3_module_free(em3_module *m);

/* Adds a global; returns its index, or -1 if the name is taken. */
int em3_module_add_global(em3_module *m, const char *name, em3_type type, em3_global_kind kind,
                          em3_init init, em3_loc loc);
/* Adds a GRAPH global built by the runtime as `spec` says; -1 if the name is taken. */
int em3_module_add_graph(em3_module *m, const char *name, em3_type type, const char *spec,
                         em3_loc loc);
int em3_module_find_global(const em3_module *m, const char *name);
em3_func *em3_module_add_func(em3_module *m, const char *name);
em3_func *em3_module_find_func(const em3_module *m, const char *name);
/* Removes and frees function `f` from its module. */
void em3_module_remove_func(em3_module *m, em3_func *f);

const char *em3_global_kind_name(em3_global_kind k);
/* The options of graph builder `builder` (a graph global's spec is "BUILDER key=value ..."),
 * NULL-terminated, or NULL when no such builder exists. The list is the contract between the
 * frontend, which checks graph declarations against it, and the runtime, which builds the
 * graphs (runtime/graph.h says what each option means). */
const char *const *em3_graph_builder_options(const char *builder);
const char *em3_init_kind_name(em3_init_kind k);
bool em3_init_kind_parse(const char *s, em3_init_kind *out);

/* A node under construction: set op, operands, attributes (start from em3_node_proto, which
 * fills the defaults), the location, and for leaves the type. */
em3_node em3_node_proto(em3_op op, em3_loc loc);
void em3_node_set_i(em3_node *n, const char *attr, int64_t v);
void em3_node_set_f(em3_node *n, const char *attr, double v);
void em3_node_set_s(em3_node *n, const char *attr, const char *s);       /* copied into arena on add */
void em3_node_set_list(em3_node *n, const char *attr, const int64_t *v, int count); /* likewise */
int64_t em3_node_i(const em3_node *n, const char *attr);
double em3_node_f(const em3_node *n, const char *attr);
const char *em3_node_s(const em3_node *n, const char *attr);
const int64_t *em3_node_list(const em3_node *n, const char *attr, int *count);

/* Append a node to `f`, computing its type with the op's shape rule. Operands, strings and
 * lists are copied into the module's arena. Returns the new value id, or -1 when the rule
 * rejects the operands, with the reason in `err` (a user error for the caller to locate). */
int em3_func_add(em3_func *f, const em3_node *proto, const int *in, int n_in, char *err,
                 size_t errlen);
/* The same for an IR producer that cannot be wrong: an error is an internal assertion. */
int em3_func_add_checked(em3_func *f, const em3_node *proto, const int *in, int n_in);
int em3_func_add_output(em3_func *f, const char *name, int value);
/* Keeps the nodes with keep[i] (whose operands must be kept too) and renumbers values and
 * outputs in order. Outputs whose value is dropped are removed. */
void em3_func_compact(em3_func *f, const bool *keep);
/* Removes the output named `name` (no-op when absent). */
void em3_func_remove_output(em3_func *f, const char *name);
/* Re-sorts the nodes topologically, keeping the current order wherever operands allow (a
 * pass may append a node and then point earlier users at it). */
void em3_func_toposort(em3_func *f);
/* A new function `name` in f's module holding just the nodes the given outputs of f need, in
 * f's order, returning those outputs. */
em3_func *em3_func_slice(em3_func *f, const char *name, const char *const *outputs, int n_outputs);
const em3_node *em3_func_node(const em3_func *f, int id);
/* The symbols' values at their largest for batch size `batch`: sym[0] = batch, sym[s] the
 * element count of the ids that f's `unique` node of symbol s reads (0 when f has none), so
 * that a buffer sized with them holds the value of any batch of at most `batch` rows. */
void em3_func_symbols(const em3_func *f, int64_t batch, int64_t sym[EM3_MAX_SYMBOLS]);

/* ---- shape rules (ir/shape.c), used by em3_func_add and the verifier ------------------------ */

typedef bool em3_shape_fn(const em3_func *f, const em3_node *n, const em3_type *in, em3_type *out,
                          char *err, size_t errlen);
em3_shape_fn *em3_op_shape_rule(em3_op op);

/* Numpy broadcasting of two shapes (B meets only B or 1). */
bool em3_broadcast_shapes(const em3_type *a, const em3_type *b, em3_type *out);

/* ---- verifier, printer ---------------------------------------------------------------------- */

/* Checks every structural rule of the IR. Returns true when valid; otherwise writes the first
 * problem, naming the function and value, into `err`. */
bool em3_module_verify(const em3_module *m, char *err, size_t errlen);
bool em3_func_verify(const em3_func *f, char *err, size_t errlen);

enum {
    EM3_PRINT_LOC = 1 << 0, /* append loc("file":line:col) to nodes that have one */
};
void em3_module_print(const em3_module *m, FILE *out, unsigned flags);
void em3_func_print(const em3_func *f, FILE *out, unsigned flags);
char *em3_module_to_string(const em3_module *m, unsigned flags); /* malloc'ed */
/* Graphviz: nodes, operand edges, outputs; fused nodes as clusters naming their origin. */
void em3_func_print_dot(const em3_func *f, FILE *out);

/* Parses the printed form back (ir/parse.c). Errors go to `d` located in `file`. */
em3_module *em3_module_parse(const char *text, size_t len, const char *file, em3_diag *d);

#endif
