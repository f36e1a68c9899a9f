/* codegen/jit.c — in-process compilation with ORC's LLJIT. The module is optimised before it
 * is handed over (LLJIT does not optimise), and every external symbol is defined from the
 * runtime's one table (em3_rt_symbols), so nothing is looked up by chance in the process. */
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

em3_jit *em3_jit_compile(const em3_module *m, const em3_codegen_options *o, em3_diag *d) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!cg_llvm_init(d)) return NULL;
    LLVMTargetMachineRef tm = cg_target_machine(o, d);
    if (!tm) return NULL;
    em3_jit *j = em3_xcalloc(1, sizeof(*j));
    j->m = m;
    j->n_funcs = m->n_func;
    j->plans = em3_xcalloc((size_t)(m->n_func ? m->n_func : 1), sizeof(*j->plans));
    j->funcs = em3_xcalloc((size_t)(m->n_func ? m->n_func : 1), sizeof(*j->funcs));
    for (int i = 0; i < m->n_func; i++) j->plans[i] = em3_mem_plan_create(m->func[i], o->max_batch, !o->no_mem_reuse);

    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMModuleRef mod = cg_build_module(m, LLVMOrcThreadSafeContextGetContext(tsc), o, tm, false, j->plans);
    LLVMDisposeTargetMachine(tm);

    bool ok = true;
    LLVMTargetMachineRef jtm = cg_target_machine(o, d); /* the JIT takes ownership of this one */
    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(jtm));
    LLVMErrorRef e = LLVMOrcCreateLLJIT(&j->jit, builder);
    if (e) {
        ok = llvm_error(d, e, "JIT: cannot start");
        j->jit = NULL;
        LLVMDisposeModule(mod);
    } else {
        ok = define_runtime_symbols(j, d);
        LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsc);
        e = LLVMOrcLLJITAddLLVMIRModule(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), tsm);
        if (e) ok = llvm_error(d, e, "JIT: cannot add the module");
    }
    LLVMOrcDisposeThreadSafeContext(tsc);
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
