/* codegen/target.c — LLVM set-up shared by the JIT and ahead-of-time builds: target machines
 * (the host's CPU and features for the JIT; a portable baseline, x86-64-v3, for objects
 * shipped elsewhere), the O3 pipeline with both vectorisers on and the target machine passed
 * (without it nothing vectorises), and writing a module as LLVM IR, assembly or an object. */
#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg.h"

em3_codegen_options em3_codegen_defaults(void) {
    return (em3_codegen_options){.opt_level = 3, .max_batch = 1024};
}

bool cg_llvm_init(em3_diag *d) {
    if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter() || LLVMInitializeNativeAsmParser())
        return em3_diag_error(d, (em3_loc){0}, "LLVM has no code generator for this machine");
    return true;
}

/* LLVM silently ignores a CPU name it does not know; we refuse it instead. */
static const char *const known_cpus[] = {
    "x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4", "haswell", "broadwell", "skylake",
    "skylake-avx512", "cascadelake", "icelake-client", "icelake-server", "tigerlake",
    "sapphirerapids", "alderlake", "znver1", "znver2", "znver3", "znver4", "znver5", NULL};

LLVMTargetMachineRef cg_target_machine(const em3_codegen_options *o, em3_diag *d) {
    char *triple = LLVMGetDefaultTargetTriple(), *err = NULL;
    LLVMTargetRef target;
    if (LLVMGetTargetFromTriple(triple, &target, &err)) {
        em3_diag_error(d, (em3_loc){0}, "LLVM: %s", err);
        LLVMDisposeMessage(err);
        LLVMDisposeMessage(triple);
        return NULL;
    }
    const char *cpu = o->cpu ? o->cpu : o->aot ? "x86-64-v3" : "native";
    char *host_cpu = NULL, *host_features = NULL;
    const char *features = "";
    if (!strcmp(cpu, "native")) {
        cpu = host_cpu = LLVMGetHostCPUName();
        features = host_features = LLVMGetHostCPUFeatures();
    } else {
        bool known = false;
        for (int i = 0; known_cpus[i]; i++) known |= !strcmp(known_cpus[i], cpu);
        if (!known) {
            em3_diag_error(d, (em3_loc){0}, "unknown CPU '%s' (native, x86-64-v2, x86-64-v3, x86-64-v4, "
                                            "haswell, skylake-avx512, znver3, znver4, ...)", cpu);
            LLVMDisposeMessage(triple);
            return NULL;
        }
    }
    LLVMTargetMachineRef tm = LLVMCreateTargetMachine(
        target, triple, cpu, features, o->opt_level > 0 ? LLVMCodeGenLevelAggressive : LLVMCodeGenLevelNone,
        o->aot ? LLVMRelocPIC : LLVMRelocDefault, o->aot ? LLVMCodeModelDefault : LLVMCodeModelJITDefault);
    if (host_cpu) LLVMDisposeMessage(host_cpu);
    if (host_features) LLVMDisposeMessage(host_features);
    LLVMDisposeMessage(triple);
    if (!tm) em3_diag_error(d, (em3_loc){0}, "LLVM could not create a target machine for CPU %s", cpu);
    return tm;
}

static void verify(LLVMModuleRef m) {
    char *msg = NULL;
    bool broken = LLVMVerifyModule(m, LLVMReturnStatusAction, &msg);
    EM3_ASSERT(!broken, "codegen produced invalid LLVM IR: %s", msg ? msg : "");
    LLVMDisposeMessage(msg);
}

void cg_optimize(LLVMModuleRef m, LLVMTargetMachineRef tm, const em3_codegen_options *o) {
    verify(m);
    LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
    LLVMPassBuilderOptionsSetLoopVectorization(po, 1);
    LLVMPassBuilderOptionsSetSLPVectorization(po, 1);
    LLVMPassBuilderOptionsSetLoopUnrolling(po, 1);
    LLVMErrorRef e = LLVMRunPasses(m, o->opt_level > 0 ? "default<O3>" : "default<O0>", tm, po);
    EM3_ASSERT(!e, "LLVM's pass pipeline failed: %s", e ? LLVMGetErrorMessage(e) : "");
    LLVMDisposePassBuilderOptions(po);
}

/* A lowered module with the target's triple and data layout, optimised unless `raw`. */
LLVMModuleRef cg_build_module(const em3_module *m, LLVMContextRef ctx, const em3_codegen_options *o,
                              LLVMTargetMachineRef tm, bool raw, em3_mem_plan **plans) {
    LLVMModuleRef mod = cg_lower_module(m, ctx, o, plans);
    char *triple = LLVMGetTargetMachineTriple(tm);
    LLVMSetTarget(mod, triple);
    LLVMDisposeMessage(triple);
    LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(mod, layout);
    LLVMDisposeTargetData(layout);
    if (o->dump_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/llvm.ll", o->dump_dir);
        LLVMPrintModuleToFile(mod, path, NULL);
    }
    if (raw) {
        verify(mod);
        return mod;
    }
    cg_optimize(mod, tm, o);
    if (o->dump_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/llvm-opt.ll", o->dump_dir);
        LLVMPrintModuleToFile(mod, path, NULL);
    }
    return mod;
}

bool em3_codegen_emit(const em3_module *m, const em3_codegen_options *o, em3_emit_kind kind,
                      const char *path, em3_diag *d) {
    if (!cg_llvm_init(d)) return false;
    LLVMTargetMachineRef tm = cg_target_machine(o, d);
    if (!tm) return false;
    em3_mem_plan **plans = em3_xcalloc((size_t)(m->n_func ? m->n_func : 1), sizeof(*plans));
    for (int i = 0; i < m->n_func; i++) plans[i] = em3_mem_plan_create(m->func[i], o->max_batch, !o->no_mem_reuse);
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = cg_build_module(m, ctx, o, tm, kind == EM3_EMIT_LLVM, plans);
    /* Emitted to memory and written through em3_afile: a failure leaves no partial output. */
    char *err = NULL, *text = NULL;
    LLVMMemoryBufferRef buf = NULL;
    bool ok;
    if (kind == EM3_EMIT_LLVM || kind == EM3_EMIT_LLVM_OPT)
        ok = (text = LLVMPrintModuleToString(mod)) != NULL;
    else
        ok = !LLVMTargetMachineEmitToMemoryBuffer(tm, mod, kind == EM3_EMIT_ASM ? LLVMAssemblyFile : LLVMObjectFile,
                                                  &err, &buf);
    em3_afile *out = ok ? em3_afile_open(path) : NULL;
    int e = ok && !out ? errno : 0;
    if (out) {
        if (text)
            fputs(text, em3_afile_stream(out));
        else
            fwrite(LLVMGetBufferStart(buf), 1, LLVMGetBufferSize(buf), em3_afile_stream(out));
        e = em3_afile_commit(out);
    }
    if (!ok || e) {
        em3_diag_error(d, (em3_loc){0}, "cannot write %s: %s", path, e ? strerror(e) : err ? err : "LLVM emitted nothing");
        ok = false;
    }
    if (text) LLVMDisposeMessage(text);
    if (buf) LLVMDisposeMemoryBuffer(buf);
    LLVMDisposeMessage(err);
    LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    LLVMDisposeTargetMachine(tm);
    for (int i = 0; i < m->n_func; i++) em3_mem_plan_free(plans[i]);
    free(plans);
    return ok;
}
