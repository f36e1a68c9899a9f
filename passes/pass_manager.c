/* passes/pass_manager.c — runs passes in order and takes the dumps users inspect: after every
 * pass, after chosen ones, only after those that changed something, or one numbered file per
 * pass in a dump directory. Also holds the two trivial passes, verify and print. */
#include "passes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    const char *name;
    em3_pass_fn *fn;
    int level;
    const char *desc;
} em3_pass_info;

static const em3_pass_info pass_info[EM3_PASS_COUNT] = {
#define PASS(E, NAME, FN, LEVEL, DESC) [EM3_PASS_##E] = {NAME, FN, LEVEL, DESC},
#include "passes.def"
#undef PASS
};

const char *em3_pass_name(em3_pass_id p) { return pass_info[p].name; }
const char *em3_pass_description(em3_pass_id p) { return pass_info[p].desc; }

bool em3_pass_parse(const char *name, em3_pass_id *out) {
    for (int i = 0; i < EM3_PASS_COUNT; i++)
        if (!strcmp(pass_info[i].name, name)) {
            *out = (em3_pass_id)i;
            return true;
        }
    return false;
}

struct em3_pipeline {
    em3_pass_id *pass;
    int n, cap;
};

em3_pipeline *em3_pipeline_create(void) { return em3_xcalloc(1, sizeof(em3_pipeline)); }

void em3_pipeline_free(em3_pipeline *pl) {
    if (!pl) return;
    free(pl->pass);
    free(pl);
}

void em3_pipeline_add(em3_pipeline *pl, em3_pass_id p) {
    EM3_GROW(pl->pass, pl->cap, pl->n + 1);
    pl->pass[pl->n++] = p;
}

bool em3_pipeline_parse(em3_pipeline *pl, const char *list, em3_diag *d) {
    char *copy = em3_xstrdup(list), *save = NULL;
    bool ok = true;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        em3_pass_id p;
        if (!em3_pass_parse(tok, &p)) {
            ok = em3_diag_error(d, (em3_loc){0}, "unknown pass '%s' (em3-opt --list-passes lists them)", tok);
            continue;
        }
        em3_pipeline_add(pl, p);
    }
    free(copy);
    return ok;
}

void em3_pipeline_add_default(em3_pipeline *pl, int opt_level) {
    for (int i = 0; i < EM3_PASS_COUNT; i++)
        if (pass_info[i].level >= 0 && pass_info[i].level <= opt_level) em3_pipeline_add(pl, (em3_pass_id)i);
}

bool em3_pipeline_disable(em3_pipeline *pl, const char *list, em3_diag *d) {
    em3_pipeline *off = em3_pipeline_create();
    bool ok = em3_pipeline_parse(off, list, d);
    for (int k = 0; k < off->n; k++) {
        if (pass_info[off->pass[k]].level != 2) {
            ok = em3_diag_error(d, (em3_loc){0}, "pass '%s' is not an optimisation (-O2) and cannot be disabled",
                                em3_pass_name(off->pass[k]));
            continue;
        }
        int n = 0;
        for (int i = 0; i < pl->n; i++)
            if (pl->pass[i] != off->pass[k]) pl->pass[n++] = pl->pass[i];
        pl->n = n;
    }
    em3_pipeline_free(off);
    return ok;
}

static bool in_list(const char *list, const char *name) {
    if (!list) return false;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && !strncmp(p, name, n)) return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

static bool dump_to_dir(const em3_pass_options *o, int index, const char *name, const em3_module *m,
                        em3_diag *d) {
    if (mkdir(o->dump_dir, 0777) && errno != EEXIST)
        return em3_diag_error(d, (em3_loc){0}, "cannot create dump directory %s: %s", o->dump_dir,
                              strerror(errno));
    char path[4096];
    snprintf(path, sizeof path, "%s/%02d-%s.ir", o->dump_dir, index, name);
    em3_afile *a = em3_afile_open(path);
    int e = a ? 0 : errno;
    if (a) {
        em3_module_print(m, em3_afile_stream(a), o->print_flags);
        e = em3_afile_commit(a);
    }
    return e ? em3_diag_error(d, (em3_loc){0}, "cannot write %s: %s", path, strerror(e)) : true;
}

bool em3_pipeline_run(em3_pipeline *pl, em3_module *m, const em3_pass_options *opt, em3_diag *d) {
    em3_pass_options none = {0};
    const em3_pass_options *o = opt ? opt : &none;
    FILE *out = o->out ? o->out : stdout;
    em3_pass_ctx ctx = {o, d};
    if (o->dump_dir && !dump_to_dir(o, 0, "input", m, d)) return false;
    for (int i = 0; i < pl->n; i++) {
        const em3_pass_info *p = &pass_info[pl->pass[i]];
        int r = p->fn(m, &ctx);
        if (r < 0) return false;
        if (o->verify_each) {
            char err[512];
            EM3_ASSERT(em3_module_verify(m, err, sizeof err), "after pass %s: %s", p->name, err);
        }
        bool want = o->print_after_all || in_list(o->print_after, p->name);
        if (o->print_changed) want = want ? r > 0 : (!o->print_after_all && !o->print_after && r > 0);
        if (want) {
            fprintf(out, "// ----- IR after %s%s -----\n", p->name, r > 0 ? "" : " (unchanged)");
            em3_module_print(m, out, o->print_flags);
        }
        if (o->dump_dir && !dump_to_dir(o, i + 1, p->name, m, d)) return false;
    }
    return true;
}

int em3_pass_verify(em3_module *m, const em3_pass_ctx *ctx) {
    char err[512];
    if (!em3_module_verify(m, err, sizeof err)) {
        em3_diag_error(ctx->diag, (em3_loc){0}, "invalid IR: %s", err);
        return -1;
    }
    return 0;
}

int em3_pass_print(em3_module *m, const em3_pass_ctx *ctx) {
    em3_module_print(m, ctx->opt->out ? ctx->opt->out : stdout, ctx->opt->print_flags);
    return 0;
}
