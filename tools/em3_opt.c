/* tools/em3_opt.c — em3-opt, the pass driver: reads IR text, runs the passes named on the
 * command line and prints the result. Every pass is tested through it with lit + FileCheck,
 * and any dump the compiler writes can be fed back in to replay one stage. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "passes/passes.h"

/* Exit codes: a bad command line is told apart from bad input, as the GNU tools do. */
enum { EXIT_USER_ERROR = 1, EXIT_USAGE = 2 };

static void usage(FILE *out) {
    fputs("usage: em3-opt [options] FILE.ir|-\n"
          "Reads EM3 IR text, runs the passes given with --passes in order and prints the\n"
          "resulting module.\n"
          "\n"
          "  --passes=P1,P2,...     passes to run (see --list-passes)\n"
          "  --print-after-all      print the module after every pass\n"
          "  --print-after=P1,...   print the module after the named passes\n"
          "  --print-changed        print only after passes that changed the module\n"
          "  --dump-dir=DIR         write DIR/NN-PASS.ir before the first and after every pass\n"
          "  --print-loc            print DSL source locations (loc(\"file\":line:col))\n"
          "  --verify-each          verify the IR after every pass\n"
          "  --list-passes          list the passes and exit\n"
          "  -o FILE                write the final module to FILE instead of stdout\n"
          "  -q, --no-print         do not print the final module\n"
          "  -h, --help             show this help and exit\n"
          "  --version              show the version and exit\n",
          out);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("em3-opt: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'em3-opt --help' for more information.\n", stderr);
    return EXIT_USAGE;
}

static void list_passes(void) {
    for (int i = 0; i < EM3_PASS_COUNT; i++)
        printf("  %-20s %s\n", em3_pass_name((em3_pass_id)i), em3_pass_description((em3_pass_id)i));
}

/* Every name in a comma-separated list must be a pass; returns the first that is not. */
static char *unknown_pass(const char *list) {
    char *copy = em3_xstrdup(list), *save = NULL, *bad = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && !bad; tok = strtok_r(NULL, ",", &save)) {
        em3_pass_id p;
        if (!em3_pass_parse(tok, &p)) bad = em3_xstrdup(tok);
    }
    free(copy);
    return bad;
}

/* The whole input, from a file or stdin ("-"); NULL with errno set on failure. */
static char *read_all(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = em3_xmalloc(cap);
    for (;;) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        cap *= 2;
        buf = em3_xrealloc(buf, cap);
    }
    int err = ferror(f) ? errno : 0;
    if (f != stdin) fclose(f);
    if (err) {
        free(buf);
        errno = err;
        return NULL;
    }
    *len = n;
    return buf;
}

/* Writes through em3_afile, so a failure never leaves a partial file. */
static bool write_module(const char *path, const em3_module *m, unsigned flags) {
    if (!strcmp(path, "-")) {
        em3_module_print(m, stdout, flags);
        return true;
    }
    em3_afile *a = em3_afile_open(path);
    int e = a ? 0 : errno;
    if (a) {
        em3_module_print(m, em3_afile_stream(a), flags);
        e = em3_afile_commit(a);
    }
    if (e) fprintf(stderr, "em3-opt: cannot write %s: %s\n", path, strerror(e));
    return !e;
}

enum {
    OPT_PASSES = 256,
    OPT_PRINT_AFTER_ALL,
    OPT_PRINT_AFTER,
    OPT_PRINT_CHANGED,
    OPT_DUMP_DIR,
    OPT_PRINT_LOC,
    OPT_VERIFY_EACH,
    OPT_LIST_PASSES,
    OPT_VERSION,
};

static const struct option long_options[] = {
    {"passes", required_argument, NULL, OPT_PASSES},
    {"print-after-all", no_argument, NULL, OPT_PRINT_AFTER_ALL},
    {"print-after", required_argument, NULL, OPT_PRINT_AFTER},
    {"print-changed", no_argument, NULL, OPT_PRINT_CHANGED},
    {"dump-dir", required_argument, NULL, OPT_DUMP_DIR},
    {"print-loc", no_argument, NULL, OPT_PRINT_LOC},
    {"verify-each", no_argument, NULL, OPT_VERIFY_EACH},
    {"list-passes", no_argument, NULL, OPT_LIST_PASSES},
    {"no-print", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

int main(int argc, char **argv) {
    em3_pass_options opt = {0};
    const char *passes = NULL, *output = "-";
    bool print = true;
    int c;
    while ((c = getopt_long(argc, argv, "ho:q", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_PASSES: passes = optarg; break;
        case OPT_PRINT_AFTER_ALL: opt.print_after_all = true; break;
        case OPT_PRINT_AFTER: opt.print_after = optarg; break;
        case OPT_PRINT_CHANGED: opt.print_changed = true; break;
        case OPT_DUMP_DIR: opt.dump_dir = optarg; break;
        case OPT_PRINT_LOC: opt.print_flags |= EM3_PRINT_LOC; break;
        case OPT_VERIFY_EACH: opt.verify_each = true; break;
        case OPT_LIST_PASSES: list_passes(); return 0;
        case 'o': output = optarg; break;
        case 'q': print = false; break;
        case 'h': usage(stdout); return 0;
        case OPT_VERSION: printf("em3-opt (EM3) %s\n", EM3_VERSION); return 0;
        default: /* getopt_long has said what is wrong */
            fputs("Try 'em3-opt --help' for more information.\n", stderr);
            return EXIT_USAGE;
        }
    }
    if (optind == argc) return usage_error("no input file (use - for stdin)");
    if (argc - optind > 1) return usage_error("unexpected argument '%s'", argv[optind + 1]);
    const char *input = argv[optind];
    if (opt.print_after) {
        char *bad = unknown_pass(opt.print_after);
        if (bad) {
            int r = usage_error("unknown pass '%s' in --print-after (see --list-passes)", bad);
            free(bad);
            return r;
        }
    }

    em3_diag *d = em3_diag_create(stderr);
    em3_pipeline *pl = em3_pipeline_create();
    int rc = 0;
    char *text = NULL;
    em3_module *m = NULL;
    size_t len = 0;
    if (passes && !em3_pipeline_parse(pl, passes, d)) {
        fputs("Try 'em3-opt --help' for more information.\n", stderr);
        rc = EXIT_USAGE;
    } else if (!(text = read_all(input, &len))) {
        fprintf(stderr, "em3-opt: cannot read %s: %s\n", input, strerror(errno));
        rc = EXIT_USER_ERROR;
    } else if (!(m = em3_module_parse(text, len, strcmp(input, "-") ? input : "<stdin>", d)) ||
               !em3_pipeline_run(pl, m, &opt, d) ||
               (print && !write_module(output, m, opt.print_flags))) {
        rc = EXIT_USER_ERROR;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "em3-opt: cannot write to stdout: %s\n", strerror(errno));
        rc = EXIT_USER_ERROR;
    }
    em3_module_free(m);
    free(text);
    em3_pipeline_free(pl);
    em3_diag_free(d);
    return rc;
}
