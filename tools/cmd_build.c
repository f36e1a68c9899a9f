/* tools/cmd_build.c — `em3 build`: a model compiled ahead of time for serving, as a shared
 * object with a generated C header (codegen/aot.c, docs/c-abi.md), or as one of the compiler's
 * intermediate forms (--emit) for people reading what the code generator made of it. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "codegen/codegen.h"
#include "commands.h"
#include "driver.h"

enum { OPT_TRAIN = 256, OPT_CPU, OPT_MAX_BATCH, OPT_STRICT_FP, OPT_EMIT, OPT_DUMP, OPT_HEADER, OPT_MERGE };

/* Keeps @predict, and @train when asked for; a library exports nothing else. */
static void keep_served_functions(em3_module *m, bool train) {
    for (int i = m->n_func - 1; i >= 0; i--)
        if (strcmp(m->func[i]->name, "predict") && (!train || strcmp(m->func[i]->name, "train")))
            em3_module_remove_func(m, m->func[i]);
}

static double seconds_since(const struct timespec *t0) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

int em3_cmd_build(int argc, char **argv) {
    static const struct option longopts[] = {
        EM3_SOURCE_OPTIONS,
        {"train", no_argument, 0, OPT_TRAIN},
        {"cpu", required_argument, 0, OPT_CPU},
        {"max-batch", required_argument, 0, OPT_MAX_BATCH},
        {"strict-fp", no_argument, 0, OPT_STRICT_FP},
        {"emit", required_argument, 0, OPT_EMIT},
        {"dump-dir", required_argument, 0, OPT_DUMP},
        {"header", required_argument, 0, OPT_HEADER},
        {"merge-lora", no_argument, 0, OPT_MERGE},
        {0, 0, 0, 0}};
    em3_source_opts so = {0};
    em3_codegen_options o = em3_codegen_defaults();
    o.aot = true;
    const char *out = NULL, *header = NULL;
    bool train = false, ok = true, emit = false, merge_lora = false;
    em3_emit_kind kind = EM3_EMIT_OBJ;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "I:O:o:", longopts, NULL)) != -1) {
        if (em3_source_option(&so, c, optarg, &ok)) continue;
        switch (c) {
        case 'O':
            if (strcmp(optarg, "0") && strcmp(optarg, "3")) ok = !em3_usage_error("build", "-O takes 0 or 3");
            o.opt_level = atoi(optarg);
            break;
        case 'o': out = optarg; break;
        case OPT_TRAIN: train = true; break;
        case OPT_CPU: o.cpu = optarg; break;
        case OPT_MAX_BATCH:
            if (!em3_max_batch_parse(optarg, &o.max_batch))
                ok = !em3_usage_error("build", "--max-batch needs a positive integer, got '%s'", optarg);
            break;
        case OPT_STRICT_FP: o.strict_fp = true; break;
        case OPT_EMIT:
            emit = true;
            if (!em3_emit_kind_parse(optarg, &kind))
                ok = !em3_usage_error("build", "--emit takes llvm, llvm-opt, asm or obj, got '%s'", optarg);
            break;
        case OPT_DUMP: o.dump_dir = optarg; break;
        case OPT_HEADER: header = optarg; break;
        case OPT_MERGE: merge_lora = true; break;
        default: ok = !em3_usage_error("build", "unknown option"); break;
        }
    }
    if (ok && optind != argc - 1) ok = !em3_usage_error("build", "expected one model file");
    if (ok && !out) ok = !em3_usage_error("build", "no output: give -o libNAME.so (or -o FILE with --emit)");
    if (ok && emit && header) ok = !em3_usage_error("build", "--header does not apply with --emit");
    if (!ok) {
        em3_source_opts_free(&so);
        return 2;
    }
    if (o.dump_dir && mkdir(o.dump_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "em3: error: cannot create %s: %s\n", o.dump_dir, strerror(errno));
        em3_source_opts_free(&so);
        return 1;
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    em3_diag *d = em3_diag_create(stderr);
    em3_module *m = em3_frontend_compile(argv[optind], &so.fe, d);
    bool built = m != NULL;
    if (built) { /* -O2 without cache-frozen: a shared object has no step that fills caches */
        em3_pipeline *pl = em3_pipeline_create();
        em3_pass_options po = {.verify_each = true, .dump_dir = o.dump_dir, .quiet = true};
        built = em3_pipeline_parse(pl, train ? EM3_BUILD_TRAIN_PASSES : EM3_BUILD_PREDICT_PASSES, d) &&
                (!merge_lora || em3_pipeline_parse(pl, "merge-lora,fuse-elementwise,dce", d)) &&
                em3_pipeline_run(pl, m, &po, d);
        em3_pipeline_free(pl);
    }
    if (built) keep_served_functions(m, train);
    if (built && emit) {
        char prefix[256];
        snprintf(prefix, sizeof prefix, "%s_fn_", m->name);
        o.symbol_prefix = prefix;
        built = em3_codegen_emit(m, &o, kind, out, d);
    } else if (built) {
        built = em3_aot_build(m, &o, out, header, d);
        if (built) printf("em3: built %s for %s in %.2f s\n", out, o.cpu ? o.cpu : "x86-64-v3", seconds_since(&t0));
    }
    em3_module_free(m);
    em3_diag_free(d);
    em3_source_opts_free(&so);
    return built ? 0 : 1;
}
