/* codegen/jit.c — in-process compilation with ORC's LLJIT. The lowered module is split into
 * one part per core (the model's functions in the first part, the kernels spread so that
 * the parts are of about equal size), each part optimised and compiled to an object in its
 * own thread and LLVM context, and the objects are linked by the JIT: compile time is what
 * users wait for at every `em3 train`. Every external symbol is defined from the runtime's one
 * table (em3_rt_symbols), so nothing is looked up by chance in the process. On request the
 * compiled functions are listed in perf's map file, /tmp/perf-PID.map. */
#include <llvm-c/BitReader.h>
#include <llvm-c/BitWriter.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Object.h>
#include <llvm-c/Orc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cg.h"

struct em3_jit {
    LLVMOrcLLJITRef jit;
    const em3_module *m;
    em3_mem_plan **plans;
    em3_compiled_func *funcs;
    int n_funcs;
    double seconds;
};

static bool llvm_error(em3_diag *d, LLVMErrorRef e, const char *what) {
    char *msg = LLVMGetErrorMessage(e);
    em3_diag_error(d, (em3_loc){0}, "%s: %s", what, msg);
    LLVMDisposeErrorMessage(msg);
    return false;
}

static bool define_runtime_symbols(em3_jit *j, em3_diag *d) {
    int n = 0;
    while (em3_rt_symbols[n].name) n++;
    LLVMOrcCSymbolMapPair *pairs = em3_xcalloc((size_t)n, sizeof(*pairs));
    for (int i = 0; i < n; i++) {
        pairs[i].Name = LLVMOrcLLJITMangleAndIntern(j->jit, em3_rt_symbols[i].name);
        pairs[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)em3_rt_symbols[i].addr;
        pairs[i].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
    }
    LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(pairs, (size_t)n);
    free(pairs);
    LLVMErrorRef e = LLVMOrcJITDylibDefine(LLVMOrcLLJITGetMainJITDylib(j->jit), mu);
    return e ? llvm_error(d, e, "JIT: defining the runtime's symbols") : true;
}

static void describe(em3_jit *j, int i, LLVMOrcExecutorAddress addr) {
    const em3_func *f = j->m->func[i];
    em3_compiled_func *c = &j->funcs[i];
    c->name = f->name;
    c->fn = (em3_abi_fn *)(uintptr_t)addr;
    c->arena_bytes = j->plans[i]->arena_bytes;
    c->max_batch = j->plans[i]->max_batch;
    const em3_node **in = em3_xcalloc((size_t)(f->n_node ? f->n_node : 1), sizeof(*in));
    for (int k = 0; k < f->n_node; k++)
        if (f->node[k].op == EM3_OP_INPUT) in[c->n_inputs++] = &f->node[k];
    c->inputs = in;
    const char **out = em3_xcalloc((size_t)(f->n_out ? f->n_out : 1), sizeof(*out));
    em3_type *types = em3_xcalloc((size_t)(f->n_out ? f->n_out : 1), sizeof(*types));
    for (int k = 0; k < f->n_out; k++) {
        out[k] = f->out[k].name;
        types[k] = f->node[f->out[k].value].type;
    }
    c->n_outputs = f->n_out;
    c->outputs = out;
    c->output_types = types;
}

/* One part of the module: the bitcode of the whole, of which it keeps the bodies of the
 * functions `keep` selects, compiled to an object in a thread of its own. */
typedef struct {
    LLVMMemoryBufferRef bitcode; /* shared, read-only */
    const bool *keep;            /* per function of the module, in order */
    LLVMTargetMachineRef tm;     /* this part's own */
    const em3_codegen_options *o;
    LLVMMemoryBufferRef object;  /* the result, or NULL with err set */
    char *err;
} part;

static void *compile_part(void *arg) {
    part *p = arg;
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMMemoryBufferRef view = LLVMCreateMemoryBufferWithMemoryRange(
        LLVMGetBufferStart(p->bitcode), LLVMGetBufferSize(p->bitcode), "em3", 0);
    LLVMModuleRef mod = NULL;
    bool bad = LLVMParseBitcodeInContext2(ctx, view, &mod);
    LLVMDisposeMemoryBuffer(view);
    EM3_ASSERT(!bad, "the JIT cannot read back its own bitcode");
    int i = 0;
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f))
        if (!LLVMIsDeclaration(f) && !p->keep[i++]) /* another part's: a declaration here */
            for (LLVMBasicBlockRef bb; (bb = LLVMGetFirstBasicBlock(f));) LLVMDeleteBasicBlock(bb);
    cg_optimize(mod, p->tm, p->o);
    if (LLVMTargetMachineEmitToMemoryBuffer(p->tm, mod, LLVMObjectFile, &p->err, &p->object)) p->object = NULL;
    LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    return NULL;
}

/* A defined function of the module, by its position, and its size in instructions: the
 * measure of its share of the optimisation and code generation time. */
typedef struct {
    int index;
    long size;
} sized_fn;

static long n_instructions(LLVMValueRef f) {
    long n = 0;
    for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(f); bb; bb = LLVMGetNextBasicBlock(bb))
        for (LLVMValueRef in = LLVMGetFirstInstruction(bb); in; in = LLVMGetNextInstruction(in)) n++;
    return n;
}

static int larger_first(const void *a, const void *b) {
    long x = ((const sized_fn *)a)->size, y = ((const sized_fn *)b)->size;
    return (x < y) - (x > y);
}

/* The function symbols an object defines, with their sizes (for the perf map). */
typedef struct {
    char *name;
    uint64_t size;
} sized_symbol;

typedef struct {
    sized_symbol *s;
    int n, cap;
} symbol_list;

static void list_functions(LLVMMemoryBufferRef object, symbol_list *out) {
    char *err = NULL;
    LLVMBinaryRef bin = LLVMCreateBinary(object, NULL, &err);
    if (!bin) { /* the JIT will report the same object as bad */
        LLVMDisposeMessage(err);
        return;
    }
    LLVMSymbolIteratorRef it = LLVMObjectFileCopySymbolIterator(bin);
    for (; !LLVMObjectFileIsSymbolIteratorAtEnd(bin, it); LLVMMoveToNextSymbol(it)) {
        const char *name = LLVMGetSymbolName(it);
        uint64_t size = LLVMGetSymbolSize(it);
        if (!size || !name || !*name || name[0] == '.') continue; /* sections, locals */
        EM3_GROW(out->s, out->cap, out->n + 1);
        out->s[out->n++] = (sized_symbol){em3_xstrdup(name), size};
    }
    LLVMDisposeSymbolIterator(it);
    LLVMDisposeBinary(bin);
}

/* perf's JIT map: "START SIZE NAME" in hex per line, the addresses as the JIT placed them.
 * A symbol that is not code (a constant pool) fails the lookup or is simply listed: perf only
 * uses the lines whose ranges its samples fall in. */
static void write_perf_map(LLVMOrcLLJITRef jit, const symbol_list *syms, em3_diag *d) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%ld.map", (long)getpid());
    FILE *f = fopen(path, "a");
    if (!f) {
        em3_diag_warning(d, (em3_loc){0}, "cannot write the perf map %s", path);
        return;
    }
    for (int i = 0; i < syms->n; i++) {
        LLVMOrcExecutorAddress addr = 0;
        LLVMErrorRef e = LLVMOrcLLJITLookup(jit, &addr, syms->s[i].name);
        if (e) {
            LLVMConsumeError(e);
            continue;
        }
        fprintf(f, "%llx %llx %s\n", (unsigned long long)addr, (unsigned long long)syms->s[i].size, syms->s[i].name);
    }
    fclose(f);
}

/* Lowers `m`, splits it into parts and compiles them in parallel; the objects go to `jit`. */
static bool compile_parts(const em3_module *m, const em3_codegen_options *o, em3_mem_plan **plans,
                          LLVMOrcLLJITRef jit, em3_diag *d) {
    LLVMTargetMachineRef tm = cg_target_machine(o, d);
    if (!tm) return false;
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = cg_build_module(m, ctx, o, tm, true, plans);
    LLVMDisposeTargetMachine(tm);
    /* the model's functions go to the first part; the kernels, largest first, each to the
       part with the fewest instructions so far (the parts finish together, and the wall time
       is the slowest part's); all defined functions external so that the parts link */
    int n_def = 0, n_kernels = 0;
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f))
        if (!LLVMIsDeclaration(f)) n_def++, n_kernels += LLVMGetLinkage(f) == LLVMInternalLinkage;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int n_parts = cores < 1 ? 1 : cores > 8 ? 8 : (int)cores;
    if (n_parts > n_kernels / 8 + 1) n_parts = n_kernels / 8 + 1; /* a few kernels: not worth a thread */
    bool *keep = em3_xcalloc((size_t)(n_parts * (n_def ? n_def : 1)), sizeof *keep);
    sized_fn *kernels = em3_xcalloc((size_t)(n_kernels ? n_kernels : 1), sizeof *kernels);
    long *load = em3_xcalloc((size_t)n_parts, sizeof *load);
    int i = 0, k = 0;
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f)) {
        if (LLVMIsDeclaration(f)) continue;
        if (LLVMGetLinkage(f) == LLVMInternalLinkage) {
            kernels[k++] = (sized_fn){i, n_instructions(f)};
            LLVMSetLinkage(f, LLVMExternalLinkage);
        } else {
            keep[i] = true;
            load[0] += n_instructions(f) / 4; /* straight-line calls: cheaper per instruction */
        }
        i++;
    }
    qsort(kernels, (size_t)n_kernels, sizeof *kernels, larger_first);
    for (k = 0; k < n_kernels; k++) {
        int least = 0;
        for (int p = 1; p < n_parts; p++)
            if (load[p] < load[least]) least = p;
        keep[least * n_def + kernels[k].index] = true;
        load[least] += kernels[k].size;
    }
    free(kernels);
    free(load);
    LLVMMemoryBufferRef bitcode = LLVMWriteBitcodeToMemoryBuffer(mod);
    LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    part *parts = em3_xcalloc((size_t)n_parts, sizeof *parts);
    pthread_t *threads = em3_xcalloc((size_t)n_parts, sizeof *threads);
    bool *started = em3_xcalloc((size_t)n_parts, sizeof *started), ok = true;
    for (int p = 0; p < n_parts && ok; p++) {
        parts[p] = (part){bitcode, keep + p * n_def, cg_target_machine(o, d), o, NULL, NULL};
        ok = parts[p].tm != NULL;
    }
    for (int p = 1; p < n_parts && ok; p++) started[p] = pthread_create(&threads[p], NULL, compile_part, &parts[p]) == 0;
    for (int p = 0; p < n_parts && ok; p++) /* part 0, and any whose thread did not start, here */
        if (!started[p]) compile_part(&parts[p]);
    for (int p = 1; p < n_parts; p++)
        if (started[p]) pthread_join(threads[p], NULL);
    symbol_list syms = {0};
    for (int p = 0; p < n_parts; p++) {
        if (ok && parts[p].object && o->perf_map) list_functions(parts[p].object, &syms);
        if (ok && parts[p].object) {
            LLVMErrorRef e = LLVMOrcLLJITAddObjectFile(jit, LLVMOrcLLJITGetMainJITDylib(jit), parts[p].object);
            parts[p].object = NULL; /* the JIT owns it, even on failure */
            if (e) ok = llvm_error(d, e, "JIT: cannot add compiled code");
        } else if (ok) {
            em3_diag_error(d, (em3_loc){0}, "LLVM cannot compile the model: %s", parts[p].err ? parts[p].err : "?");
            ok = false;
        }
        if (parts[p].object) LLVMDisposeMemoryBuffer(parts[p].object);
        if (parts[p].tm) LLVMDisposeTargetMachine(parts[p].tm);
        LLVMDisposeMessage(parts[p].err);
    }
    if (ok && o->perf_map) write_perf_map(jit, &syms, d);
    for (int s = 0; s < syms.n; s++) free(syms.s[s].name);
    free(syms.s);
    LLVMDisposeMemoryBuffer(bitcode);
    free(started);
    free(threads);
    free(parts);
    free(keep);
    return ok;
}

em3_jit *em3_jit_compile(const em3_module *m, const em3_codegen_options *o, em3_diag *d) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!cg_llvm_init(d)) return NULL;
    LLVMTargetMachineRef jtm = cg_target_machine(o, d); /* the JIT takes ownership of this one */
    if (!jtm) return NULL;
    em3_jit *j = em3_xcalloc(1, sizeof(*j));
    j->m = m;
    j->n_funcs = m->n_func;
    j->plans = em3_xcalloc((size_t)(m->n_func ? m->n_func : 1), sizeof(*j->plans));
    j->funcs = em3_xcalloc((size_t)(m->n_func ? m->n_func : 1), sizeof(*j->funcs));
    for (int i = 0; i < m->n_func; i++) j->plans[i] = em3_mem_plan_create(m->func[i], o->max_batch, !o->no_mem_reuse);

    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(jtm));
    LLVMErrorRef e = LLVMOrcCreateLLJIT(&j->jit, builder);
    bool ok;
    if (e) {
        ok = llvm_error(d, e, "JIT: cannot start");
        j->jit = NULL;
    } else {
        ok = define_runtime_symbols(j, d) && compile_parts(m, o, j->plans, j->jit, d);
    }
    char sym[256];
    for (int i = 0; ok && i < m->n_func; i++) {
        LLVMOrcExecutorAddress addr = 0;
        snprintf(sym, sizeof sym, "%s%s", o->symbol_prefix ? o->symbol_prefix : "", m->func[i]->name);
        e = LLVMOrcLLJITLookup(j->jit, &addr, sym);
        if (e)
            ok = llvm_error(d, e, "JIT: cannot compile the model");
        else
            describe(j, i, addr);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    j->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (!ok) {
        em3_jit_free(j);
        return NULL;
    }
    return j;
}

void em3_jit_free(em3_jit *j) {
    if (!j) return;
    if (j->jit) {
        LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->jit);
        if (e) LLVMConsumeError(e);
    }
    for (int i = 0; i < j->n_funcs; i++) {
        free((void *)j->funcs[i].inputs);
        free((void *)j->funcs[i].outputs);
        free((void *)j->funcs[i].output_types);
        em3_mem_plan_free(j->plans[i]);
    }
    free(j->funcs);
    free(j->plans);
    free(j);
}

const em3_compiled_func *em3_jit_func(const em3_jit *j, const char *name) {
    for (int i = 0; i < j->n_funcs; i++)
        if (j->funcs[i].fn && !strcmp(j->funcs[i].name, name)) return &j->funcs[i];
    return NULL;
}

double em3_jit_compile_seconds(const em3_jit *j) { return j->seconds; }
