/* tools/cmd_check.c — `em3 check` and `em3 ir`: the frontend and the pass pipeline on a model
 * file, for users who write models and compiler people who read their IR (or, with --emit,
 * the LLVM IR, assembly or object code generated from it). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codegen/codegen.h"
#include "commands.h"
#include "driver.h"
#include "passes/memory_plan.h"

int em3_cmd_check(int argc, char **argv) {
    static const struct option longopts[] = {EM3_SOURCE_OPTIONS, {0, 0, 0, 0}};
    em3_source_opts so = {0};
    bool ok = true;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "I:", longopts, NULL)) != -1)
        if (!em3_source_option(&so, c, optarg, &ok)) {
            em3_source_opts_free(&so);
            return em3_usage_error("check", "unknown option");
        }
    if (!ok || optind >= argc) {
        em3_source_opts_free(&so);
        return ok ? em3_usage_error("check", "no input files") : 2;
    }
    int status = 0;
    for (int i = optind; i < argc; i++) {
        em3_diag *d = em3_diag_create(stderr);
        em3_module *m = em3_frontend_compile(argv[i], &so.fe, d);
        if (m) {
            int params = 0;
            int64_t weights = 0;
            for (int g = 0; g < m->n_global; g++)
                if (m->global[g].kind == EM3_GLOBAL_PARAM || m->global[g].kind == EM3_GLOBAL_FROZEN) {
                    params++;
                    weights += em3_type_numel(&m->global[g].type, 1);
                }
            em3_func *f = em3_module_find_func(m, "forward");
            if (f)
                printf("%s: ok: model %s, %d parameter tensors (%lld weights), %d IR nodes\n",
                       argv[i], m->name, params, (long long)weights, f->n_node);
            else
                printf("%s: ok (no model: syntax and declarations checked)\n", argv[i]);
        } else {
            status = 1;
        }
        em3_module_free(m);
        em3_diag_free(d);
    }
    em3_source_opts_free(&so);
    return status;
}

enum { OPT_PASSES = 256, OPT_DISABLE, OPT_PAA, OPT_PA, OPT_PC, OPT_DUMP, OPT_LOC, OPT_FUNC, OPT_EMIT, OPT_MAX_BATCH, OPT_STATS };

/* Commits an output opened with em3_afile (NULL: standard output, nothing to do); the exit
 * status. */
static int commit_output(em3_afile *a, const char *path) {
    int e = a ? em3_afile_commit(a) : 0;
    if (e) fprintf(stderr, "em3: error: cannot write %s: %s\n", path, strerror(e));
    return e ? 1 : 0;
}

/* --emit=dot: a Graphviz graph of one function (@train, else the first, unless --func). */
static int write_dot(const em3_module *m, const char *func, const char *out_path) {
    const em3_func *f = func ? em3_module_find_func(m, func) : em3_module_find_func(m, "train");
    if (!f && m->n_func) f = m->func[0];
    if (!f) {
        fprintf(stderr, "em3: error: no function to draw\n");
        return 1;
    }
    em3_afile *a = out_path ? em3_afile_open(out_path) : NULL;
    if (out_path && !a) {
        perror(out_path);
        return 1;
    }
    em3_func_print_dot(f, a ? em3_afile_stream(a) : stdout);
    return commit_output(a, out_path);
}

/* --dump-dir also receives what lowering does: every function's memory plan, and the LLVM IR
 * before and after optimisation. */
static int dump_lowering(const em3_module *m, const em3_codegen_options *co, const char *dir, em3_diag *d) {
    char path[4096];
    snprintf(path, sizeof path, "%s/memory-plan.txt", dir);
    em3_afile *a = em3_afile_open(path);
    if (!a) {
        perror(path);
        return 1;
    }
    for (int i = 0; i < m->n_func; i++) {
        em3_mem_plan *p = em3_mem_plan_create(m->func[i], co->max_batch, !co->no_mem_reuse);
        em3_mem_plan_print(m->func[i], p, em3_afile_stream(a));
        em3_mem_plan_free(p);
    }
    if (commit_output(a, path)) return 1;
    em3_codegen_options o = *co;
    o.dump_dir = dir;
    snprintf(path, sizeof path, "%s/llvm-opt.ll", dir);
    return em3_codegen_emit(m, &o, EM3_EMIT_LLVM_OPT, path, d) ? 0 : 1;
}

/* The module compiled to `kind`, into out_path or (through a temporary file, since LLVM writes
 * files) onto standard output. */
static int write_emitted(const em3_module *m, const em3_codegen_options *o, em3_emit_kind kind,
                         const char *out_path, em3_diag *d) {
    if (out_path) return em3_codegen_emit(m, o, kind, out_path, d) ? 0 : 1;
    char tmp[] = "/tmp/em3-emit-XXXXXX";
    int fd = mkstemp(tmp);
    if (fd < 0) {
        perror("em3: error: a temporary file");
        return 1;
    }
    close(fd);
    int status = em3_codegen_emit(m, o, kind, tmp, d) ? 0 : 1;
    FILE *f = status ? NULL : fopen(tmp, "rb");
    char buf[65536];
    size_t n;
    while (f && (n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
    if (f) fclose(f);
    remove(tmp);
    return status;
}

/* Writes through em3_afile, so that a failure leaves no partial output behind. */
static int write_ir(const em3_module *m, const char *func, const char *out_path, unsigned flags) {
    em3_func *f = func ? em3_module_find_func(m, func) : NULL;
    if (func && !f) {
        fprintf(stderr, "em3: error: no function @%s in the module\n", func);
        return 1;
    }
    em3_afile *a = out_path ? em3_afile_open(out_path) : NULL;
    if (out_path && !a) {
        perror(out_path);
        return 1;
    }
    FILE *out = a ? em3_afile_stream(a) : stdout;
    if (f)
        em3_func_print(f, out, flags);
    else
        em3_module_print(m, out, flags);
    return commit_output(a, out_path);
}

/* --stats: per function (or only `func`), its nodes, its nodes by fusion kind and op, and the
 * kernels codegen emits for it. */
static int write_stats(const em3_module *m, const char *func) {
    bool found = false;
    for (int i = 0; i < m->n_func; i++) {
        const em3_func *f = m->func[i];
        if (func && strcmp(f->name, func)) continue;
        found = true;
        int per_op[EM3_OP_COUNT] = {0}, per_kind[EM3_KIND_OPAQUE + 1] = {0};
        for (int k = 0; k < f->n_node; k++) {
            per_op[f->node[k].op]++;
            per_kind[em3_op_kind_of(f->node[k].op)]++;
        }
        printf("@%s: %d nodes, %d kernels\n", f->name, f->n_node, em3_codegen_kernel_count(f));
        for (int kind = 0; kind <= EM3_KIND_OPAQUE; kind++) {
            if (!per_kind[kind]) continue;
            printf("  %-14s %5d ", em3_op_kind_name((em3_op_kind)kind), per_kind[kind]);
            const char *sep = " ";
            for (int op = 0; op < EM3_OP_COUNT; op++)
                if (per_op[op] && em3_op_kind_of((em3_op)op) == (em3_op_kind)kind) {
                    printf("%s%s %d", sep, em3_op_name((em3_op)op), per_op[op]);
                    sep = ", ";
                }
            printf("\n");
        }
    }
    if (func && !found) {
        fprintf(stderr, "em3: error: no function @%s in the module\n", func);
        return 1;
    }
    return 0;
}

int em3_cmd_ir(int argc, char **argv) {
    static const struct option longopts[] = {
        EM3_SOURCE_OPTIONS,
        {"passes", required_argument, 0, OPT_PASSES},
        {"disable-passes", required_argument, 0, OPT_DISABLE},
        {"print-after-all", no_argument, 0, OPT_PAA},
        {"print-after", required_argument, 0, OPT_PA},
        {"print-changed", no_argument, 0, OPT_PC},
        {"dump-dir", required_argument, 0, OPT_DUMP},
        {"print-loc", no_argument, 0, OPT_LOC},
        {"func", required_argument, 0, OPT_FUNC},
        {"emit", required_argument, 0, OPT_EMIT},
        {"max-batch", required_argument, 0, OPT_MAX_BATCH},
        {"stats", no_argument, 0, OPT_STATS},
        {0, 0, 0, 0}};
    em3_codegen_options co = em3_codegen_defaults();
    em3_emit_kind kind = EM3_EMIT_LLVM;
    bool emit = false, dot = false, stats = false;
    em3_source_opts so = {0};
    em3_pass_options po = {.verify_each = true};
    const char *passes = NULL, *disable = NULL, *out_path = NULL, *func = NULL;
    int level = 2, c;
    bool ok = true;
    optind = 1;
    while ((c = getopt_long(argc, argv, "I:O:o:", longopts, NULL)) != -1) {
        if (em3_source_option(&so, c, optarg, &ok)) continue;
        switch (c) {
        case 'O':
            if (strcmp(optarg, "0") && strcmp(optarg, "2")) ok = !em3_usage_error("ir", "-O takes 0 or 2");
            level = atoi(optarg);
            break;
        case 'o': out_path = optarg; break;
        case OPT_PASSES: passes = optarg; break;
        case OPT_DISABLE: disable = optarg; break;
        case OPT_PAA: po.print_after_all = true; break;
        case OPT_PA: po.print_after = optarg; break;
        case OPT_PC: po.print_changed = true; break;
        case OPT_DUMP: po.dump_dir = optarg; break;
        case OPT_LOC: po.print_flags |= EM3_PRINT_LOC; break;
        case OPT_FUNC: func = optarg; break;
        case OPT_STATS: stats = true; break;
        case OPT_EMIT:
            emit = true;
            if (!strcmp(optarg, "dot")) dot = true;
            else if (!em3_emit_kind_parse(optarg, &kind))
                ok = !em3_usage_error("ir", "--emit takes llvm, llvm-opt, asm or obj, got '%s'", optarg);
            break;
        case OPT_MAX_BATCH:
            if (!em3_max_batch_parse(optarg, &co.max_batch))
                ok = !em3_usage_error("ir", "--max-batch needs a positive integer, got '%s'", optarg);
            break;
        default: ok = false; em3_usage_error("ir", "unknown option"); break;
        }
    }
    if (ok && optind != argc - 1) ok = !em3_usage_error("ir", "expected one model file");
    if (ok && emit && !dot && func) ok = !em3_usage_error("ir", "--emit compiles every function: drop --func");
    if (!ok) {
        em3_source_opts_free(&so);
        return 2;
    }
    em3_diag *d = em3_diag_create(stderr);
    em3_module *m = em3_frontend_compile(argv[optind], &so.fe, d);
    int status = 1;
    if (m) {
        em3_pipeline *pl = em3_pipeline_create();
        bool built = passes ? em3_pipeline_parse(pl, passes, d) : (em3_pipeline_add_default(pl, level), true);
        if (built && disable) built = em3_pipeline_disable(pl, disable, d);
        if (built && em3_pipeline_run(pl, m, &po, d))
            status = dot ? write_dot(m, func, out_path)
                   : emit ? write_emitted(m, &co, kind, out_path, d)
                   : stats ? write_stats(m, func)
                          : write_ir(m, func, out_path, po.print_flags);
        if (status == 0 && stats && out_path && !emit) status = write_ir(m, func, out_path, po.print_flags);
        if (status == 0 && po.dump_dir) status = dump_lowering(m, &co, po.dump_dir, d);
        em3_pipeline_free(pl);
    }
    em3_module_free(m);
    em3_diag_free(d);
    em3_source_opts_free(&so);
    return status;
}
