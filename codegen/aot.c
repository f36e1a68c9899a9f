/* codegen/aot.c — ahead-of-time builds for serving: a PIC object for a baseline CPU, a generated
 * NAME.h (the C ABI) and NAME_abi.c (the model's tables for runtime/aot_host.c), linked by the
 * system C compiler with the static PIC runtime into libNAME.so exporting only the ABI, so that
 * several models share a process. Outputs appear whole or not at all (temporaries, then rename). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "codegen.h"
#include "passes/memory_plan.h"

/* Where the static PIC runtime and the headers the generated C includes are: the build tree's,
 * from runtime/CMakeLists.txt, unless the environment says otherwise (an installed em3). */
static const char *runtime_lib(void) {
    const char *e = getenv("EM3_RUNTIME_LIB");
    return e && *e ? e : EM3_RT_PIC_LIB;
}

static const char *include_dir(void) {
    const char *e = getenv("EM3_INCLUDE_DIR");
    return e && *e ? e : EM3_RT_INCLUDE_DIR;
}

/* ---- names ---------------------------------------------------------------------------------- */

static bool is_ident(const char *s) {
    if (!*s || (*s >= '0' && *s <= '9')) return false;
    for (; *s; s++)
        if (!(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
            return false;
    return true;
}

/* NAME of ".../libNAME.so": the prefix of every exported symbol. NULL unless an identifier. */
static char *c_name(const char *so_path) {
    const char *base = strrchr(so_path, '/');
    base = base ? base + 1 : so_path;
    if (!strncmp(base, "lib", 3) && base[3] && base[3] != '.') base += 3;
    char *name = em3_xstrdup(base);
    char *dot = strstr(name, ".so");
    if (dot) *dot = 0;
    if (!is_ident(name)) {
        free(name);
        return NULL;
    }
    return name;
}

/* An identifier from a tensor name for enum constants: HIST, OPT_LR_DEFAULT. */
static void upper_ident(em3_strbuf *sb, const char *s) {
    for (; *s; s++) {
        char c = *s >= 'a' && *s <= 'z' ? (char)(*s - 'a' + 'A') : *s;
        em3_sb_putc(sb, (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ? c : '_');
    }
}

static void c_string(em3_strbuf *sb, const char *s) {
    em3_sb_putc(sb, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            em3_sb_printf(sb, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            em3_sb_printf(sb, "\\%03o", *p);
        else
            em3_sb_putc(sb, (char)*p);
    }
    em3_sb_putc(sb, '"');
}

/* Appends `t` with @N@ → name, @U@ → NAME, @M@ → the model's name. */
static void emit(em3_strbuf *sb, const char *t, const char *name, const char *upper, const char *model) {
    for (const char *p = t; *p;) {
        const char *at = strchr(p, '@');
        if (!at) {
            em3_sb_printf(sb, "%s", p);
            break;
        }
        em3_sb_printf(sb, "%.*s", (int)(at - p), p);
        const char *with = !strncmp(at, "@N@", 3) ? name : !strncmp(at, "@U@", 3) ? upper : !strncmp(at, "@M@", 3) ? model : NULL;
        if (with) {
            em3_sb_printf(sb, "%s", with);
            p = at + 3;
        } else {
            em3_sb_putc(sb, '@');
            p = at + 1;
        }
    }
}

bool em3_emit_kind_parse(const char *s, em3_emit_kind *out) {
    static const char *const kinds[] = {"llvm", "llvm-opt", "asm", "obj"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, kinds[i])) {
            *out = (em3_emit_kind)i;
            return true;
        }
    return false;
}

bool em3_max_batch_parse(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < 1 || v > INT32_MAX) return false;
    *out = v;
    return true;
}

/* ---- what the generated code describes -------------------------------------------------------- */

typedef enum { ROLE_CALLER, ROLE_STEP, ROLE_LR, ROLE_ROW0 } input_role;

static input_role role_of(const em3_node *n) {
    const char *name = em3_node_s(n, "name");
    if (!strcmp(name, "opt.step")) return ROLE_STEP;
    if (!strcmp(name, "opt.row0")) return ROLE_ROW0;
    return strncmp(name, "opt.lr.", 7) ? ROLE_CALLER : ROLE_LR;
}

/* An em3_tensor_info initialiser: {"name", EM3_MODEL_F32, rank, {dims}, vocab, pad}. */
static void tensor_info(em3_strbuf *sb, const char *name, const em3_type *t, int64_t vocab, int64_t pad) {
    em3_sb_printf(sb, "{");
    c_string(sb, name);
    em3_sb_printf(sb, ", %s, %d, {", t->dtype == EM3_DTYPE_I32 ? "EM3_MODEL_I32" : "EM3_MODEL_F32", t->rank);
    for (int d = 0; d < t->rank; d++) em3_sb_printf(sb, "%s%lld", d ? ", " : "", (long long)t->dim[d]);
    em3_sb_printf(sb, "%s}, %lld, %lld}", t->rank ? "" : "0", (long long)vocab, (long long)pad);
}

static void input_info(em3_strbuf *sb, const em3_node *n) {
    em3_sb_printf(sb, "    ");
    tensor_info(sb, em3_node_s(n, "name"), &n->type, em3_node_i(n, "vocab"), em3_node_i(n, "pad"));
    em3_sb_printf(sb, ",\n");
}

static void output_info(em3_strbuf *sb, const em3_func *f, int k) {
    em3_sb_printf(sb, "    ");
    tensor_info(sb, f->out[k].name, &f->node[f->out[k].value].type, 0, -1);
    em3_sb_printf(sb, ",\n");
}

/* The value v came from, looking through reshapes and stop_gradient (which keep the values and
 * their flat order). */
static const em3_node *source(const em3_func *f, int v) {
    while (f->node[v].op == EM3_OP_RESHAPE || f->node[v].op == EM3_OP_STOP_GRADIENT) v = f->node[v].in[0];
    return &f->node[v];
}

/* Whether node n's kernel checks the i32 ids of operand 1 against the rows of operand 0
 * (cg_kernel_fail in emit_data.c and emit_update.c): gather, scatter_add, sparse updates. */
static bool checks_ids(const em3_func *f, const em3_node *n) {
    if (n->n_in < 2 || f->node[n->in[1]].type.dtype != EM3_DTYPE_I32) return false;
    return em3_op_kind_of(n->op) == EM3_KIND_GATHER || (em3_op_flags(n->op) & EM3_OPF_SIDE_EFFECT);
}

static bool is_caller_input(const em3_node *n) { return n->op == EM3_OP_INPUT && role_of(n) == ROLE_CALLER; }

static int caller_index(const em3_func *f, const em3_node *input) {
    int k = 0;
    for (int i = 0; i < f->n_node && &f->node[i] != input; i++) k += is_caller_input(&f->node[i]);
    return k;
}

/* The sizes of a function's tables: the caller's inputs, all inputs, the nodes that check ids. */
typedef struct {
    int caller, slots, faults;
} table_sizes;

static table_sizes sizes_of(const em3_func *f) {
    table_sizes t = {0, 0, 0};
    for (int i = 0; i < f->n_node; i++) {
        t.caller += is_caller_input(&f->node[i]);
        t.slots += f->node[i].op == EM3_OP_INPUT;
        t.faults += checks_ids(f, &f->node[i]);
    }
    return t;
}

/* An em3_host_fault for node i: where its ids come from and which table they index, named for
 * the messages the host builds. */
static void fault_entry(em3_strbuf *sb, const em3_func *f, int i) {
    const em3_node *n = &f->node[i];
    const em3_node *ids = source(f, n->in[1]), *table = source(f, n->in[0]);
    em3_strbuf from = {0}, tname = {0};
    int input = -1;
    if (ids->op == EM3_OP_INPUT) {
        em3_sb_printf(&from, "input '%s'", em3_node_s(ids, "name"));
        input = caller_index(f, ids);
    } else if (ids->op == EM3_OP_PARAM) {
        em3_sb_printf(&from, "table '%s'", em3_node_s(ids, "name"));
    } else if (ids->op == EM3_OP_GATHER && source(f, ids->in[0])->op == EM3_OP_PARAM) {
        em3_sb_printf(&from, "ids read from table '%s'", em3_node_s(source(f, ids->in[0]), "name"));
    } else {
        em3_sb_printf(&from, "ids computed by %s %%%d", em3_op_name(ids->op), (int)(ids - f->node));
    }
    if (table->op == EM3_OP_PARAM)
        em3_sb_printf(&tname, "%s", em3_node_s(table, "name"));
    else
        em3_sb_printf(&tname, "%%%d", (int)(table - f->node));
    em3_sb_printf(sb, "    {%d, %d, ", i, input);
    c_string(sb, from.data);
    em3_sb_printf(sb, ", ");
    c_string(sb, tname.data);
    em3_sb_printf(sb, ", %lld}, /* %s */\n", (long long)f->node[n->in[0]].type.dim[0], em3_op_name(n->op));
    em3_sb_free(&from);
    em3_sb_free(&tname);
}

static void func_tables(em3_strbuf *sb, const em3_func *f) {
    const char *fn = f->name;
    table_sizes n = sizes_of(f);
    if (n.caller) {
        em3_sb_printf(sb, "static const em3_tensor_info %s_inputs[] = {\n", fn);
        for (int i = 0; i < f->n_node; i++)
            if (is_caller_input(&f->node[i])) input_info(sb, &f->node[i]);
        em3_sb_printf(sb, "};\n");
    }
    if (n.slots) {
        em3_sb_printf(sb, "static const em3_host_slot %s_slots[] = {\n", fn);
        static const char *const roles[] = {"EM3_HOST_IN_CALLER", "EM3_HOST_IN_STEP", "EM3_HOST_IN_LR",
                                            "EM3_HOST_IN_ROW0"};
        for (int i = 0, k = 0; i < f->n_node; i++)
            if (f->node[i].op == EM3_OP_INPUT) {
                input_role r = role_of(&f->node[i]);
                em3_sb_printf(sb, "    {%s, %d}, /* %s */\n", roles[r], r == ROLE_CALLER ? k++ : -1,
                              em3_node_s(&f->node[i], "name"));
            }
        em3_sb_printf(sb, "};\n");
    }
    em3_sb_printf(sb, "static const em3_tensor_info %s_outputs[] = {\n", fn);
    for (int i = 0; i < f->n_out; i++) output_info(sb, f, i);
    em3_sb_printf(sb, "};\n");
    if (!n.faults) return;
    em3_sb_printf(sb, "static const em3_host_fault %s_faults[] = {\n", fn);
    for (int i = 0; i < f->n_node; i++)
        if (checks_ids(f, &f->node[i])) fault_entry(sb, f, i);
    em3_sb_printf(sb, "};\n");
}

static const char *const kind_names[] = {"EM3_GLOBAL_PARAM", "EM3_GLOBAL_FROZEN", "EM3_GLOBAL_DATA", "EM3_GLOBAL_STATE"};
static const char *const init_names[] = {"EM3_INIT_NONE",   "EM3_INIT_ZEROS",   "EM3_INIT_ONES",  "EM3_INIT_CONST",
                                          "EM3_INIT_NORMAL", "EM3_INIT_UNIFORM", "EM3_INIT_XAVIER"};
_Static_assert(sizeof kind_names / sizeof *kind_names == EM3_GLOBAL_STATE + 1, "a name per em3_global_kind");
_Static_assert(sizeof init_names / sizeof *init_names == EM3_INIT_XAVIER + 1, "a name per em3_init_kind");

/* What the generated files say about the library besides the module. */
typedef struct {
    const char *name, *upper, *model, *cpu;
    int64_t max_batch;
    bool train;
    const int64_t *arena_bytes; /* per function, from its memory plan at max_batch */
} lib_info;

static const char abi_wrappers[] =
    "@N@_model *@N@_create(uint64_t seed) { return (@N@_model *)em3_host_create(&model, seed); }\n"
    "void @N@_destroy(@N@_model *m) { em3_host_free((em3_host *)m); }\n"
    "const em3_model_info *@N@_info(void) { return &model.info; }\n"
    "int @N@_inputs(const char *fn, const em3_tensor_info **info) { return em3_host_inputs(&model, fn, info); }\n"
    "int @N@_outputs(const char *fn, const em3_tensor_info **info) { return em3_host_outputs(&model, fn, info); }\n"
    "int @N@_tables(const em3_tensor_info **info) {\n"
    "    if (info) *info = model.tables;\n"
    "    return model.n_tables;\n"
    "}\n"
    "int @N@_load_weights(@N@_model *m, const char *path, char *err, size_t errlen) {\n"
    "    return em3_host_load((em3_host *)m, path, err, errlen);\n"
    "}\n"
    "int @N@_save_weights(const @N@_model *m, const char *path, char *err, size_t errlen) {\n"
    "    return em3_host_save((const em3_host *)m, path, err, errlen);\n"
    "}\n"
    "int @N@_set_table(@N@_model *m, const char *name, const void *data, int64_t numel, char *err, size_t errlen) {\n"
    "    return em3_host_set_table((em3_host *)m, name, data, numel, err, errlen);\n"
    "}\n"
    "int @N@_predict(@N@_model *m, int64_t batch, const void *const *inputs, void *const *outputs, char *err,\n"
    "    size_t errlen) {\n"
    "    return em3_host_run((em3_host *)m, PREDICT, batch, inputs, outputs, 0.0f, err, errlen);\n"
    "}\n";

static const char train_wrapper[] =
    "int @N@_train_step(@N@_model *m, int64_t batch, const void *const *inputs, float lr, void *const *outputs,\n"
    "    char *err, size_t errlen) {\n"
    "    return em3_host_run((em3_host *)m, TRAIN, batch, inputs, outputs, lr, err, errlen);\n"
    "}\n";

/* NAME_abi.c: the model's tables and the exported wrappers. */
static char *abi_source(const em3_module *m, const lib_info *nm) {
    em3_strbuf sb = {0};
    emit(&sb,
         "/* @N@_abi.c — generated by `em3 build` for model @M@: the exported C ABI of lib@N@.so (@N@.h) as\n"
         " * tables for the model host (runtime/aot_host.h) and one-line wrappers. */\n"
         "#include \"@N@.h\"\n#include \"runtime/aot_host.h\"\n\n",
         nm->name, nm->upper, nm->model);
    for (int i = 0; i < m->n_func; i++) em3_sb_printf(&sb, "int %s_fn_%s(em3_frame *fr);\n", nm->name, m->func[i]->name);
    em3_sb_printf(&sb, "\nstatic const em3_host_global globals[] = {\n");
    int n_tables = 0;
    for (int g = 0; g < m->n_global; g++) {
        const em3_global *gl = &m->global[g];
        n_tables += gl->kind == EM3_GLOBAL_DATA;
        em3_sb_printf(&sb, "    {");
        tensor_info(&sb, gl->name, &gl->type, 0, -1);
        em3_sb_printf(&sb, ", %s, {%s, %.17g}},\n", kind_names[gl->kind], init_names[gl->init.kind], gl->init.a);
    }
    em3_sb_printf(&sb, "};\n");
    if (n_tables) {
        em3_sb_printf(&sb, "static const em3_tensor_info tables[] = {\n");
        for (int g = 0; g < m->n_global; g++)
            if (m->global[g].kind == EM3_GLOBAL_DATA) {
                em3_sb_printf(&sb, "    ");
                tensor_info(&sb, m->global[g].name, &m->global[g].type, 0, -1);
                em3_sb_printf(&sb, ",\n");
            }
        em3_sb_printf(&sb, "};\n");
    }
    for (int i = 0; i < m->n_func; i++) func_tables(&sb, m->func[i]);
    em3_sb_printf(&sb, "\nenum { ");
    for (int i = 0; i < m->n_func; i++) {
        upper_ident(&sb, m->func[i]->name);
        em3_sb_printf(&sb, " = %d, ", i);
    }
    em3_sb_printf(&sb, "};\nstatic const em3_host_func funcs[] = {\n");
    for (int i = 0; i < m->n_func; i++) {
        const em3_func *f = m->func[i];
        table_sizes n = sizes_of(f);
        const char *fn = f->name;
        em3_sb_printf(&sb, "    {\"%s\", %s_fn_%s, %lld, ", fn, nm->name, fn, (long long)nm->arena_bytes[i]);
        em3_sb_printf(&sb, n.slots ? "%d, %s_slots, " : "%d, NULL, ", n.slots, fn);
        em3_sb_printf(&sb, n.caller ? "%d, %s_inputs, " : "%d, NULL, ", n.caller, fn);
        em3_sb_printf(&sb, "%d, %s_outputs, ", f->n_out, fn);
        em3_sb_printf(&sb, n.faults ? "%d, %s_faults},\n" : "%d, NULL},\n", n.faults, fn);
    }
    em3_sb_printf(&sb, "};\n\nstatic const em3_host_model model = {\n    {EM3_ABI_VERSION, ");
    c_string(&sb, nm->model);
    em3_sb_printf(&sb, ", \"%s\", ", nm->name);
    c_string(&sb, nm->cpu);
    em3_sb_printf(&sb, ", %lld, %d},\n    %d, globals, %d, %s, %d, funcs};\n\n", (long long)nm->max_batch, nm->train,
                  m->n_global, n_tables, n_tables ? "tables" : "NULL", m->n_func);
    emit(&sb, abi_wrappers, nm->name, nm->upper, nm->model);
    if (nm->train) emit(&sb, train_wrapper, nm->name, nm->upper, nm->model);
    return sb.data;
}

/* ---- the header ------------------------------------------------------------------------------- */

static const char header_intro[] =
    "/* @N@.h — the C interface of lib@N@.so, generated by `em3 build` from model @M@: do not edit.\n"
    " *\n"
    " *   @N@_model *m = @N@_create(seed);                      weights from their initialisers\n"
    " *   @N@_load_weights(m, \"w.safetensors\", err, sizeof err);  or trained ones\n"
    " *   @N@_predict(m, batch, inputs, outputs, err, sizeof err);\n"
    " *   @N@_destroy(m);\n"
    " * Link with -L. -l@N@ (the library needs libopenblas), or dlopen it. Reference: docs/c-abi.md.\n"
    " *\n"
    " * Conventions.\n"
    " *  - Tensors are dense row-major arrays in native (little-endian) order: f32 is float, i32 is\n"
    " *    int32_t. In a shape, B is the call's batch size: i32[B, 50] is batch * 50 int32_t.\n"
    " *  - Functions returning int return 0 on success and 1 on an error, with a NUL-terminated\n"
    " *    message in err[0 .. errlen) (err may be NULL). A bad id, a malformed weights file or a\n"
    " *    wrong argument is an error with a message, never a crash.\n"
    " *  - Ownership: buffers stay the caller's. Inputs are read and outputs written during the call\n"
    " *    only; tables and weights are copied in. A model owns its weights and workspace.\n"
    " *  - Threads: an instance is not thread-safe; use one instance per thread (instances share\n"
    " *    nothing, so several may run at once). The functions without an instance are safe anywhere.\n"
    " *  - Versions: the ABI is versioned by @U@_ABI_VERSION; a program that dlopens the library\n"
    " *    should compare @N@_info()->abi_version with the version it was written for. Only the\n"
    " *    functions below are exported, so several models can live in one process.\n"
    " */\n"
    "#ifndef @U@_H\n#define @U@_H\n\n";

static const char header_api[] =
    "typedef struct @N@_model @N@_model;\n\n"
    "/* A new instance. Parameters and optimizer state take their declared initialisers with the\n"
    " * random streams of em3's JIT and interpreter (runtime/init.c): the same seed gives the same\n"
    " * weights everywhere. Data tables start at zero. NULL when memory runs out. */\n"
    "@N@_model *@N@_create(uint64_t seed);\n"
    "void @N@_destroy(@N@_model *m); /* NULL is allowed */\n\n"
    "/* What the library is: ABI version, model, CPU, maximum batch (static storage). */\n"
    "const em3_model_info *@N@_info(void);\n"
    "/* The inputs / outputs of function \"predict\" or \"train\" (their count, -1 for no such\n"
    " * function; *info points to static storage), and the data tables. */\n"
    "int @N@_inputs(const char *fn, const em3_tensor_info **info);\n"
    "int @N@_outputs(const char *fn, const em3_tensor_info **info);\n"
    "int @N@_tables(const em3_tensor_info **info);\n\n"
    "/* Weights in safetensors format (F32/I32 tensors named as the model's globals). Loading checks\n"
    " * the whole file first — every parameter present with the model's dtype and shape, no\n"
    " * unknown tensor — and changes nothing on an error; data tables and optimizer state are\n"
    " * loaded when present. Saving writes every global and the step counter, atomically. */\n"
    "int @N@_load_weights(@N@_model *m, const char *path, char *err, size_t errlen);\n"
    "int @N@_save_weights(const @N@_model *m, const char *path, char *err, size_t errlen);\n\n"
    "/* Copies a data table (an item side table, see the list above): `numel` elements of the\n"
    " * table's dtype (float or int32_t), row-major. */\n"
    "int @N@_set_table(@N@_model *m, const char *name, const void *data, int64_t numel, char *err,\n"
    "    size_t errlen);\n\n"
    "/* Scores `batch` rows: inputs[k] points to input k of @predict (order and shapes above),\n"
    " * outputs[k] to a caller-allocated array for output k (NULL: not wanted). Batches larger\n"
    " * than @U@_MAX_BATCH are processed in chunks. An id outside its vocabulary or table is an\n"
    " * error naming the input, row and position. */\n"
    "int @N@_predict(@N@_model *m, int64_t batch, const void *const *inputs, void *const *outputs,\n"
    "    char *err, size_t errlen);\n";

static const char header_train[] =
    "\n/* One optimizer step on `batch` rows (1 .. @U@_MAX_BATCH): inputs[k] is input k of @train\n"
    " * (above), outputs[k] receives output k (NULL: not wanted). The wrapper supplies the\n"
    " * optimizer's inputs: opt.step, the instance's step counter + 1 (counted by successful\n"
    " * steps, saved and restored with the weights), and every opt.lr.GROUP, set to `lr`. After a\n"
    " * data error some updates may have been applied and the step is not counted. */\n"
    "int @N@_train_step(@N@_model *m, int64_t batch, const void *const *inputs, float lr,\n"
    "    void *const *outputs, char *err, size_t errlen);\n";

static void describe_tensor(em3_strbuf *sb, int k, const char *name, const em3_type *t, int64_t vocab, int64_t pad) {
    char ts[EM3_TYPE_STR_MAX];
    em3_sb_printf(sb, " *   %d  %-16s %s", k, name, em3_type_str(t, ts, sizeof ts));
    if (vocab > 0) em3_sb_printf(sb, "  ids 0 .. %lld", (long long)vocab - 1);
    if (pad >= 0) em3_sb_printf(sb, ", padding %lld", (long long)pad);
    em3_sb_printf(sb, "\n");
}

static void enum_entry(em3_strbuf *sb, const char *upper, const char *fn, const char *kind, const char *name, int k) {
    em3_sb_printf(sb, "    %s_", upper);
    upper_ident(sb, fn);
    em3_sb_printf(sb, "_%s_", kind);
    upper_ident(sb, name);
    em3_sb_printf(sb, " = %d,\n", k);
}

static void header_func(em3_strbuf *sb, const em3_func *f, const lib_info *nm) {
    em3_sb_printf(sb, "/* @%s — inputs, in this order:\n", f->name);
    int k = 0;
    for (int i = 0; i < f->n_node; i++)
        if (is_caller_input(&f->node[i]))
            describe_tensor(sb, k++, em3_node_s(&f->node[i], "name"), &f->node[i].type, em3_node_i(&f->node[i], "vocab"),
                            em3_node_i(&f->node[i], "pad"));
    bool first = true;
    for (int i = 0; i < f->n_node; i++)
        if (f->node[i].op == EM3_OP_INPUT && role_of(&f->node[i]) != ROLE_CALLER) {
            em3_sb_printf(sb, "%s%s", first ? " * supplied by the wrapper: " : ", ", em3_node_s(&f->node[i], "name"));
            first = false;
        }
    if (!first) em3_sb_printf(sb, "\n");
    em3_sb_printf(sb, " * outputs:\n");
    for (int i = 0; i < f->n_out; i++) describe_tensor(sb, i, f->out[i].name, &f->node[f->out[i].value].type, 0, -1);
    int fi = 0;
    while (f->mod->func[fi] != f) fi++;
    em3_sb_printf(sb, " * workspace: %lld bytes, allocated at the first call (planned for %lld rows)\n",
                  (long long)nm->arena_bytes[fi], (long long)nm->max_batch);
    em3_sb_printf(sb, " */\n#define %s_", nm->upper);
    upper_ident(sb, f->name);
    em3_sb_printf(sb, "_N_INPUTS %d\n#define %s_", k, nm->upper);
    upper_ident(sb, f->name);
    em3_sb_printf(sb, "_N_OUTPUTS %d\nenum {\n", f->n_out);
    for (int i = 0, j = 0; i < f->n_node; i++)
        if (is_caller_input(&f->node[i]))
            enum_entry(sb, nm->upper, f->name, "IN", em3_node_s(&f->node[i], "name"), j++);
    for (int i = 0; i < f->n_out; i++) enum_entry(sb, nm->upper, f->name, "OUT", f->out[i].name, i);
    em3_sb_printf(sb, "};\n\n");
}

static char *header_source(const em3_module *m, const lib_info *nm, const char *model_h) {
    em3_strbuf sb = {0};
    emit(&sb, header_intro, nm->name, nm->upper, nm->model);
    em3_sb_printf(&sb, "%s\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n", model_h);
    em3_sb_printf(&sb, "#define %s_ABI_VERSION %d\n#define %s_MODEL ", nm->upper, EM3_ABI_VERSION, nm->upper);
    c_string(&sb, nm->model);
    em3_sb_printf(&sb, "\n#define %s_CPU ", nm->upper);
    c_string(&sb, nm->cpu);
    em3_sb_printf(&sb, " /* code needs this CPU level or newer */\n#define %s_MAX_BATCH %lld\n#define %s_HAS_TRAIN %d\n\n",
                  nm->upper, (long long)nm->max_batch, nm->upper, nm->train);
    bool tables = false;
    for (int g = 0; g < m->n_global; g++) {
        const em3_global *gl = &m->global[g];
        if (gl->kind != EM3_GLOBAL_DATA) continue;
        if (!tables) em3_sb_printf(&sb, "/* data tables (%s_set_table, or in the weights file):\n", nm->name);
        char ts[EM3_TYPE_STR_MAX];
        em3_sb_printf(&sb, " *   %-18s %s\n", gl->name, em3_type_str(&gl->type, ts, sizeof ts));
        tables = true;
    }
    if (tables) em3_sb_printf(&sb, " */\n\n");
    for (int i = 0; i < m->n_func; i++) header_func(&sb, m->func[i], nm);
    emit(&sb, header_api, nm->name, nm->upper, nm->model);
    if (nm->train) emit(&sb, header_train, nm->name, nm->upper, nm->model);
    em3_sb_printf(&sb, "\n#ifdef __cplusplus\n}\n#endif\n\n#endif\n");
    return sb.data;
}

/* ---- files and the C compiler ----------------------------------------------------------------- */

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    em3_strbuf sb = {0};
    char buf[4096];
    size_t n;
    em3_sb_printf(&sb, "%s", "");
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) em3_sb_printf(&sb, "%.*s", (int)n, buf);
    fclose(f);
    return sb.data;
}

static bool write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return false;
    bool ok = fputs(text, f) >= 0;
    return (fclose(f) == 0) && ok;
}

/* An empty file next to `path` (same folder, so that rename is atomic), or NULL with errno. */
static char *temp_beside(const char *path) {
    char *tmp = em3_xmalloc(strlen(path) + 16);
    sprintf(tmp, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        free(tmp);
        return NULL;
    }
    close(fd);
    return tmp;
}

static void split_words(const char *s, char ***argv, int *argc) {
    char *copy = em3_xstrdup(s);
    for (char *w = strtok(copy, " \t"); w; w = strtok(NULL, " \t")) {
        *argv = em3_xrealloc(*argv, sizeof(char *) * (size_t)(*argc + 2));
        (*argv)[(*argc)++] = em3_xstrdup(w);
    }
    free(copy);
}

/* Runs the C compiler (CC, "cc" by default, split at spaces) with `args`, its output in `log`. */
static bool run_cc(const char *const *args, const char *log, const char *what, em3_diag *d) {
    const char *cc_env = getenv("CC");
    char **argv = NULL;
    int argc = 0;
    split_words(cc_env && *cc_env ? cc_env : "cc", &argv, &argc);
    if (!argc) split_words("cc", &argv, &argc);
    for (int i = 0; args[i]; i++) {
        argv = em3_xrealloc(argv, sizeof(char *) * (size_t)(argc + 2));
        argv[argc++] = em3_xstrdup(args[i]);
    }
    argv[argc] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run '%s': %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status = 0;
    bool ok = pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    char *out = read_text(log);
    if (pid < 0)
        em3_diag_error(d, (em3_loc){0}, "cannot start the C compiler: %s", strerror(errno));
    else if (!ok)
        em3_diag_error(d, (em3_loc){0}, "%s failed: the C compiler '%s' %s %d (set CC to choose another)%s%.4000s", what,
                       argv[0], WIFEXITED(status) ? "exited with status" : "was killed by signal",
                       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), out && *out ? ":\n" : "",
                       out ? out : "");
    else if (out && *out)
        em3_diag_warning(d, (em3_loc){0}, "the C compiler said, for %s:\n%.4000s", what, out);
    free(out);
    for (int i = 0; i < argc; i++) free(argv[i]);
    free(argv);
    return ok;
}

/* The files of one build, removed at the end whatever happens. */
typedef struct {
    char work[4096];
    char *so_tmp, *h_tmp;
} build_files;

static void work_path(char *out, size_t n, const build_files *b, const char *name, const char *ext) {
    snprintf(out, n, "%s/%s%s", b->work, name, ext);
}

static void cleanup(build_files *b, const char *name) {
    if (b->so_tmp) unlink(b->so_tmp);
    if (b->h_tmp) unlink(b->h_tmp);
    free(b->so_tmp);
    free(b->h_tmp);
    if (!b->work[0]) return;
    static const char *const files[] = {".o", ".o.tmp", "_abi.c", ".h", ".map", ".log"};
    char p[4200];
    for (int i = 0; i < 6; i++) {
        work_path(p, sizeof p, b, name, files[i]);
        unlink(p);
    }
    rmdir(b->work);
}

static bool link_library(const em3_module *m, const em3_codegen_options *o, const lib_info *nm, build_files *b,
                         const char *header, em3_diag *d) {
    char obj[4200], src[4200], hdr[4200], map[4200], log[4200], version_script[4300];
    work_path(obj, sizeof obj, b, nm->name, ".o");
    work_path(src, sizeof src, b, nm->name, "_abi.c");
    work_path(hdr, sizeof hdr, b, nm->name, ".h");
    work_path(map, sizeof map, b, nm->name, ".map");
    work_path(log, sizeof log, b, nm->name, ".log");
    em3_codegen_options ao = *o;
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s_fn_", nm->name);
    ao.aot = true;
    ao.symbol_prefix = prefix;
    if (!em3_codegen_emit(m, &ao, EM3_EMIT_OBJ, obj, d)) return false;

    char *abi = abi_source(m, nm);
    em3_strbuf vs = {0};
    emit(&vs, "{\n  global:\n    @N@_create; @N@_destroy; @N@_info; @N@_inputs; @N@_outputs; @N@_tables;\n"
              "    @N@_load_weights; @N@_save_weights; @N@_set_table; @N@_predict;\n",
         nm->name, nm->upper, nm->model);
    if (nm->train) emit(&vs, "    @N@_train_step;\n", nm->name, nm->upper, nm->model);
    em3_sb_printf(&vs, "  local: *;\n};\n");
    bool ok = write_text(src, abi) && write_text(hdr, header) && write_text(map, vs.data);
    if (!ok) em3_diag_error(d, (em3_loc){0}, "cannot write into the temporary folder %s: %s", b->work, strerror(errno));
    if (ok && o->dump_dir) {
        char dump[4200];
        snprintf(dump, sizeof dump, "%s/%s_abi.c", o->dump_dir, nm->name);
        if (!write_text(dump, abi)) em3_diag_warning(d, (em3_loc){0}, "cannot write %s: %s", dump, strerror(errno));
    }
    free(abi);
    em3_sb_free(&vs);
    if (!ok) return false;
    snprintf(version_script, sizeof version_script, "-Wl,--version-script=%s", map);
    const char *args[] = {"-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-I", include_dir(), "-o", b->so_tmp, src, obj,
                          runtime_lib(), "-lopenblas", "-lm", version_script, "-Wl,-z,defs", NULL};
    char what[4200];
    snprintf(what, sizeof what, "linking %s", nm->name);
    return run_cc(args, log, what, d);
}

bool em3_aot_build(const em3_module *m, const em3_codegen_options *o, const char *so_path, const char *header_path,
                   em3_diag *d) {
    char *name = c_name(so_path);
    if (!name)
        return em3_diag_error(d, (em3_loc){0}, "cannot name the library's symbols after '%s': call it libNAME.so with "
                                               "NAME a C identifier (letters, digits, '_')", so_path);
    char beside[4200];
    if (!header_path) {
        const char *slash = strrchr(so_path, '/');
        snprintf(beside, sizeof beside, "%.*s%s.h", slash ? (int)(slash - so_path + 1) : 0, so_path, name);
        header_path = beside;
    }
    bool ok = true;
    if (!em3_module_find_func(m, "predict"))
        ok = em3_diag_error(d, (em3_loc){0}, "model %s has no @predict function to export", m->name);
    for (int i = 0; ok && i < m->n_func; i++)
        if (strcmp(m->func[i]->name, "predict") && strcmp(m->func[i]->name, "train"))
            ok = em3_diag_error(d, (em3_loc){0}, "function @%s has no C entry point (a library exports @predict and "
                                                 "@train)", m->func[i]->name);
    for (int g = 0; ok && g < m->n_global; g++)
        if (m->global[g].kind == EM3_GLOBAL_GRAPH) /* the model host has no dataset to build it from */
            ok = em3_diag_error(d, m->global[g].loc, "graph %s is built from a dataset at run time: models with "
                                                      "graphs run under `em3 train` and `em3 eval`, not as libraries",
                                m->global[g].name);
    if (ok && !strcmp(so_path, header_path))
        ok = em3_diag_error(d, (em3_loc){0}, "the library and the header would both be %s", so_path);
    char path[4200];
    snprintf(path, sizeof path, "%s/runtime/em3_model.h", include_dir());
    char *model_h = ok ? read_text(path) : NULL;
    if (ok && !model_h)
        ok = em3_diag_error(d, (em3_loc){0}, "cannot read %s: %s (set EM3_INCLUDE_DIR to em3's source folder)", path,
                            strerror(errno));
    if (ok && access(runtime_lib(), R_OK) != 0)
        ok = em3_diag_error(d, (em3_loc){0}, "cannot read the AOT runtime library %s: %s (build the em3_rt_pic target, "
                                             "or set EM3_RUNTIME_LIB)", runtime_lib(), strerror(errno));

    build_files b = {.work = ""};
    if (ok && !(b.so_tmp = temp_beside(so_path))) ok = em3_diag_error(d, (em3_loc){0}, "cannot write %s: %s", so_path, strerror(errno));
    if (ok && !(b.h_tmp = temp_beside(header_path)))
        ok = em3_diag_error(d, (em3_loc){0}, "cannot write %s: %s", header_path, strerror(errno));
    const char *tmpdir = getenv("TMPDIR");
    snprintf(b.work, sizeof b.work, "%s/em3-build-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (ok && !mkdtemp(b.work)) {
        ok = em3_diag_error(d, (em3_loc){0}, "cannot create a temporary folder %s: %s", b.work, strerror(errno));
        b.work[0] = 0;
    } else if (!ok) {
        b.work[0] = 0;
    }

    char upper[256], host_cpu[128] = "";
    snprintf(upper, sizeof upper, "%s", name);
    for (char *p = upper; *p; p++)
        if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
    const char *cpu = o->cpu ? o->cpu : "x86-64-v3";
    if (!strcmp(cpu, "native")) { /* the header records what "native" meant on the build machine */
        char *h = LLVMGetHostCPUName();
        snprintf(host_cpu, sizeof host_cpu, "%s", h);
        LLVMDisposeMessage(h);
        cpu = host_cpu;
    }
    /* the plans em3_codegen_emit makes for the object, so that the sizes match its offsets */
    int64_t *arena = em3_xcalloc((size_t)m->n_func + 1, sizeof(int64_t));
    for (int i = 0; i < m->n_func; i++) {
        em3_mem_plan *plan = em3_mem_plan_create(m->func[i], o->max_batch, !o->no_mem_reuse);
        arena[i] = plan->arena_bytes;
        em3_mem_plan_free(plan);
        if (ok && arena[i] > (int64_t)4 << 30)
            em3_diag_warning(d, (em3_loc){0}, "@%s's workspace is %.1f GB at the maximum batch of %lld rows (allocated "
                             "at its first call; --max-batch sets the rows)", m->func[i]->name, (double)arena[i] / 1e9,
                             (long long)o->max_batch);
    }
    lib_info nm = {name, upper, m->name, cpu, o->max_batch, em3_module_find_func(m, "train") != NULL, arena};
    char *header = ok ? header_source(m, &nm, model_h) : NULL;
    if (ok) ok = link_library(m, o, &nm, &b, header, d);
    if (ok && (!write_text(b.h_tmp, header) || chmod(b.h_tmp, 0644) != 0 || chmod(b.so_tmp, 0755) != 0))
        ok = em3_diag_error(d, (em3_loc){0}, "cannot write %s: %s", header_path, strerror(errno));
    if (ok && rename(b.so_tmp, so_path) != 0) ok = em3_diag_error(d, (em3_loc){0}, "cannot write %s: %s", so_path, strerror(errno));
    if (ok && rename(b.h_tmp, header_path) != 0) {
        ok = em3_diag_error(d, (em3_loc){0}, "cannot write %s: %s", header_path, strerror(errno));
        unlink(so_path); /* no library without its header */
    }
    if (ok) {
        free(b.so_tmp), free(b.h_tmp);
        b.so_tmp = b.h_tmp = NULL;
    }
    cleanup(&b, name);
    free(arena);
    free(header);
    free(model_h);
    free(name);
    return ok;
}
