/* frontend/source.c — reading source files, following imports (relative to the importing
 * file, then the import folders, then $EM3_PATH, then the standard library), detecting import
 * cycles, declaring every file's top-level names in one scope, and lowering the chosen model.
 * This is the entry point behind frontend.h. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "elab.h"

#ifndef EM3_STDLIB_DIR
#define EM3_STDLIB_DIR "models"
#endif

#define MAX_SOURCE_BYTES (64 << 20)

bool elab_model(elab *e, const ast *model);

const char *em3_frontend_stdlib_dir(void) { return EM3_STDLIB_DIR; }

typedef struct {
    char *path; /* canonical */
    ast_file ast;
    bool done; /* false while its imports are being loaded: a cycle if met again */
} loaded_file;

typedef struct {
    elab *e;
    loaded_file *files;
    int n, cap;
} loader;

/* Reads a whole file; a user error (located at `from`) when it cannot. */
static char *read_file(elab *e, const char *path, em3_loc from, size_t *len) {
    struct stat st;
    bool known = stat(path, &st) == 0;
    if (known && S_ISDIR(st.st_mode)) {
        elab_error(e, from, "%s is a directory, not a source file", path);
        return NULL;
    }
    /* an import of a device or a pipe could block or never end; the main file may be one */
    if (known && from.line > 0 && !S_ISREG(st.st_mode)) {
        elab_error(e, from, "%s is not a regular file", path);
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        elab_error(e, from, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 > cap) {
            cap = cap ? cap * 2 : 65536;
            buf = em3_xrealloc(buf, cap);
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n > MAX_SOURCE_BYTES) {
            fclose(f);
            free(buf);
            elab_error(e, from, "%s is larger than %d MB: not a model source", path,
                       MAX_SOURCE_BYTES >> 20);
            return NULL;
        }
        if (r == 0) break;
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        elab_error(e, from, "cannot read %s", path);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Any kind of file: a folder found by an import is then reported as one by read_file. */
static bool path_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Where `import "name"` written in `from_file` points, or NULL. */
static char *resolve_import(elab *e, const char *name, const char *from_file) {
    char buf[PATH_MAX + 256];
    if (name[0] == '/') return path_exists(name) ? em3_xstrdup(name) : NULL;
    const char *slash = strrchr(from_file, '/');
    if (slash)
        snprintf(buf, sizeof buf, "%.*s/%s", (int)(slash - from_file), from_file, name);
    else
        snprintf(buf, sizeof buf, "%s", name);
    if (path_exists(buf)) return em3_xstrdup(buf);
    for (int i = 0; e->opt && i < e->opt->n_import_dirs; i++) {
        snprintf(buf, sizeof buf, "%s/%s", e->opt->import_dirs[i], name);
        if (path_exists(buf)) return em3_xstrdup(buf);
    }
    const char *env = getenv("EM3_PATH");
    if (env) {
        char *copy = em3_xstrdup(env), *save = NULL;
        for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
            snprintf(buf, sizeof buf, "%s/%s", d, name);
            if (path_exists(buf)) {
                free(copy);
                return em3_xstrdup(buf);
            }
        }
        free(copy);
    }
    snprintf(buf, sizeof buf, "%s/%s", EM3_STDLIB_DIR, name);
    return path_exists(buf) ? em3_xstrdup(buf) : NULL;
}

static bool load(loader *ld, const char *path, const char *text, size_t len, em3_loc from);

static bool load_imports(loader *ld, const ast_file *f) {
    bool ok = true;
    for (const ast *it = f->items; it; it = it->next) {
        if (it->kind != AST_IMPORT) continue;
        char *p = resolve_import(ld->e, it->str, f->file);
        if (!p) {
            ok = elab_error(ld->e, it->loc, "cannot find '%s' to import (searched next to %s, "
                                            "the -I folders, $EM3_PATH and %s)",
                            it->str, f->file, EM3_STDLIB_DIR);
            continue;
        }
        ok &= load(ld, p, NULL, 0, it->loc);
        free(p);
    }
    return ok;
}

static bool load(loader *ld, const char *path, const char *text, size_t len, em3_loc from) {
    elab *e = ld->e;
    char canon[PATH_MAX];
    if (!realpath(path, canon)) snprintf(canon, sizeof canon, "%s", path);
    for (int i = 0; i < ld->n; i++)
        if (!strcmp(ld->files[i].path, canon)) {
            if (ld->files[i].done) return true; /* a diamond: already loaded */
            em3_strbuf chain = {0};
            for (int k = i; k < ld->n; k++)
                if (!ld->files[k].done) em3_sb_printf(&chain, "%s -> ", ld->files[k].ast.file);
            em3_sb_printf(&chain, "%s", path);
            elab_error(e, from, "import cycle: %s", chain.data);
            em3_sb_free(&chain);
            return false;
        }
    char *owned = NULL;
    if (!text) {
        text = owned = read_file(e, path, from, &len);
        if (!text) return false;
    } else if (len > MAX_SOURCE_BYTES) { /* a buffer from the API: the scanner takes an int */
        return elab_error(e, (em3_loc){path, 0, 0}, "%s is larger than %d MB: not a model source",
                          path, MAX_SOURCE_BYTES >> 20);
    }
    const char *file = em3_diag_add_source(e->diag, path, text, len);
    EM3_GROW(ld->files, ld->cap, ld->n + 1);
    int me = ld->n++;
    ld->files[me] = (loaded_file){em3_xstrdup(canon), {file, NULL}, false};
    bool ok = em3_parse_source(text, len, file, e->arena, e->diag, &ld->files[me].ast);
    free(owned);
    ast_file parsed = ld->files[me].ast;
    ok &= load_imports(ld, &parsed);
    /* keep dependencies before dependents: move this file to the end */
    loaded_file self = ld->files[me];
    memmove(&ld->files[me], &ld->files[me + 1], sizeof(loaded_file) * (size_t)(ld->n - me - 1));
    self.done = true;
    ld->files[ld->n - 1] = self;
    return ok;
}

/* A top-level name (module, model, fn or const) of any loaded file: defined once. */
static void declare(elab *e, const char *name, value v, em3_loc loc) {
    binding *prev = NULL;
    for (binding *b = e->globals.head; b; b = b->next)
        if (!strcmp(b->name, name)) prev = b;
    if (prev) {
        elab_error(e, loc, "'%s' is already defined", name);
        em3_diag_note(e->diag, prev->loc, "the earlier definition of '%s' is here", name);
        return;
    }
    if (builtin_find(name) >= 0 || !strcmp(name, "B"))
        em3_diag_warning(e->diag, loc, "'%s' hides the built-in of the same name", name);
    scope_bind(e, &e->globals, name, v, loc);
}

/* Top-level statements of every file, dependencies first. */
static void declare_files(elab *e, loader *ld) {
    for (int i = 0; i < ld->n; i++)
        for (const ast *it = ld->files[i].ast.items; it; it = it->next) {
            switch (it->kind) {
            case AST_IMPORT: break;
            case AST_MODULE:
            case AST_MODEL:
            case AST_FN:
                declare(e, it->str,
                        (value){.kind = it->kind == AST_FN ? V_FN : V_MODULE, .decl = it,
                                .env = &e->globals},
                        it->loc);
                break;
            case AST_CONST:
                for (const ast *c = it->list; c; c = c->next) {
                    value v = eval(e, &e->globals, c->a);
                    if (v.kind == V_TENSOR || v.kind == V_GLOBAL) {
                        elab_error(e, c->loc, "a top-level const must be known at compile time");
                        v = v_error();
                    }
                    declare(e, c->str, v, c->loc);
                }
                break;
            default:
                elab_error(e, it->loc, "only import, const, module, model and fn declarations "
                                       "may stand at the top level of a file");
            }
        }
}

static const ast *choose_model(elab *e, const ast_file *root) {
    const char *want = e->opt ? e->opt->model : NULL;
    const ast *found = NULL, *second = NULL;
    int n = 0;
    em3_strbuf names = {0};
    for (const ast *it = root->items; it; it = it->next)
        if (it->kind == AST_MODEL) {
            em3_sb_printf(&names, "%s%s", n++ ? ", " : "", it->str);
            if (want && strcmp(want, it->str)) continue;
            if (found && !second) second = it;
            if (!found) found = it;
        }
    if (want && !found)
        elab_error(e, (em3_loc){root->file, 0, 0}, "no model named %s in this file%s%s%s", want,
                   n ? " (it has: " : "", n ? names.data : "", n ? ")" : "");
    else if (second)
        elab_error(e, second->loc, "this file holds several models (%s): choose one with "
                                   "--model NAME", names.data);
    em3_sb_free(&names);
    return em3_diag_error_count(e->diag) ? NULL : found;
}

static em3_module *compile(const char *path, const char *text, size_t len,
                           const em3_frontend_options *opt, em3_diag *d) {
    int errors_before = em3_diag_error_count(d);
    elab e = {.diag = d, .arena = em3_arena_create(), .opt = opt, .loss = -1,
              .errors_before = errors_before};
    loader ld = {.e = &e};
    bool ok = load(&ld, path, text, len, (em3_loc){0});
    em3_module *m = NULL;
    if (ok) {
        const ast_file *root = NULL;
        char canon[PATH_MAX];
        if (!realpath(path, canon)) snprintf(canon, sizeof canon, "%s", path);
        for (int i = 0; i < ld.n; i++)
            if (!strcmp(ld.files[i].path, canon)) root = &ld.files[i].ast;
        EM3_ASSERT(root, "the root file %s was not loaded", path);
        if (!root->items) /* most likely a truncated or wrong file: say so rather than "ok" */
            elab_error(&e, (em3_loc){root->file, 1, 1}, "the file is empty: no declarations to "
                                                       "check");
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        m = em3_module_create(em3_arena_strndup(e.arena, base, strcspn(base, ".")));
        e.mod = m;
        declare_files(&e, &ld);
        const ast *model = em3_diag_error_count(d) == errors_before ? choose_model(&e, root) : NULL;
        if (model) {
            m->name = em3_arena_strdup(m->arena, model->str);
            elab_model(&e, model);
        }
        if (em3_diag_error_count(d) != errors_before) {
            em3_module_free(m);
            m = NULL;
        }
    }
    for (int i = 0; i < ld.n; i++) free(ld.files[i].path);
    free(ld.files);
    free(e.param_node);
    free(e.frozen_node);
    free(e.out);
    em3_arena_free(e.arena);
    if (m) {
        char err[512];
        EM3_ASSERT(em3_module_verify(m, err, sizeof err), "the frontend produced invalid IR: %s", err);
    }
    return m;
}

em3_module *em3_frontend_compile(const char *path, const em3_frontend_options *opt, em3_diag *d) {
    return compile(path, NULL, 0, opt, d);
}

em3_module *em3_frontend_compile_source(const char *name, const char *text, size_t len,
                                        const em3_frontend_options *opt, em3_diag *d) {
    return compile(name, text, len, opt, d);
}
