/* codegen/codegen.h — native code from the IR through LLVM 19's C API: JIT-compiled functions
 * for training in-process, and ahead-of-time objects for serving. Each IR function becomes
 * `int NAME(em3_frame *)` (runtime/abi.h) over an arena planned for a maximum batch size. */
#ifndef EM3_CODEGEN_H
#define EM3_CODEGEN_H

#include "ir/ir.h"
#include "runtime/abi.h"

typedef enum {
    EM3_EMIT_LLVM,     /* LLVM IR before optimisation */
    EM3_EMIT_LLVM_OPT, /* LLVM IR after -O3 */
    EM3_EMIT_ASM,
    EM3_EMIT_OBJ,
} em3_emit_kind;

typedef struct {
    const char *cpu;  /* NULL: the host's (JIT) or "x86-64-v3" (AOT); "native" for the host */
    bool aot;         /* position-independent code, internal kernels, portable baseline */
    bool strict_fp;   /* no reassociation of sums: results independent of vector width */
    int opt_level;    /* LLVM pipeline: 0 or 3 (default 3) */
    int64_t max_batch;/* the arena is planned for this many rows (default 1024) */
    bool no_mem_reuse;/* every value gets its own arena region */
    const char *dump_dir; /* write llvm.ll and llvm-opt.ll here */
    const char *symbol_prefix; /* AOT: prefix of exported function names ("" for JIT) */
    bool perf_map;    /* JIT: write /tmp/perf-PID.map, so that `perf report` names the code */
} em3_codegen_options;

em3_codegen_options em3_codegen_defaults(void);

typedef struct em3_jit em3_jit;

/* Compiles every function of `m` (which must outlive the result). NULL with a message on `d`
 * when LLVM reports an error (a missing symbol, an unsupported CPU name). */
em3_jit *em3_jit_compile(const em3_module *m, const em3_codegen_options *o, em3_diag *d);
void em3_jit_free(em3_jit *j);
const em3_compiled_func *em3_jit_func(const em3_jit *j, const char *name);
double em3_jit_compile_seconds(const em3_jit *j);

/* The kernels lowering `f` calls: one per node whose emitter is not cg_emit_none (leaves and
 * reshapes are buffers, not code). Fusion is measured by it. */
int em3_codegen_kernel_count(const em3_func *f);

/* Writes one form of the compiled module to `path` (atomically). */
bool em3_codegen_emit(const em3_module *m, const em3_codegen_options *o, em3_emit_kind kind,
                      const char *path, em3_diag *d);

/* The command-line spellings of emit kinds: "llvm", "llvm-opt", "asm", "obj"; and of a maximum
 * batch size (an integer 1 .. 2^31 - 1). False when `s` is neither. */
bool em3_emit_kind_parse(const char *s, em3_emit_kind *out);
bool em3_max_batch_parse(const char *s, int64_t *out);

/* Ahead-of-time build for serving (codegen/aot.c): `so_path` (libNAME.so) and `header_path`
 * (NAME.h; NULL: NAME.h next to the library) describing its C ABI (docs/c-abi.md). The module's functions must be @predict and
 * optionally @train. `o` as for em3_codegen_emit; the object is always position-independent,
 * for o->cpu or x86-64-v3, with functions named NAME_fn_*. Runs the system C compiler ($CC or
 * cc) against the static runtime em3_rt_pic. False with a message on `d` on any failure, and
 * then neither file is left behind (nor a temporary). */
bool em3_aot_build(const em3_module *m, const em3_codegen_options *o, const char *so_path,
                   const char *header_path, em3_diag *d);

#endif
