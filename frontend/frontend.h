/* frontend/frontend.h — the public face of the frontend: source files in, a checked IR module
 * out. Parsing, imports, name resolution, compile-time evaluation, shape checking and
 * lowering all happen behind em3_frontend_compile; every user mistake becomes a located
 * diagnostic. */
#ifndef EM3_FRONTEND_H
#define EM3_FRONTEND_H

#include "ir/ir.h"

typedef struct {
    const char *name;  /* a model-level `const` */
    const char *value; /* its new value as text: 64, 0.1, true, "str" */
    bool optional;     /* applies if the model declares it; otherwise ignored, not an error
                          (what a dataset offers, e.g. vocab_user) */
} em3_const_override;

typedef struct {
    const char *const *import_dirs; /* searched after the importing file's folder */
    int n_import_dirs;
    const em3_const_override *overrides; /* --set NAME=VALUE for model constants */
    int n_overrides;
    const char *model; /* which model to lower when a file holds several (NULL: the only one) */
} em3_frontend_options;

/* Reads, checks and lowers `path`. Returns the IR module (functions @forward: inputs and
 * labels → loss and outputs, and @predict: inputs → outputs), or NULL when the program has
 * errors (all reported to `d`). A file without a model is checked (syntax, declarations,
 * imports) and yields an empty module named after the file. */
em3_module *em3_frontend_compile(const char *path, const em3_frontend_options *opt, em3_diag *d);

/* The same from a buffer (tests, fuzzing); `name` is used in diagnostics and to resolve
 * relative imports. */
em3_module *em3_frontend_compile_source(const char *name, const char *text, size_t len,
                                        const em3_frontend_options *opt, em3_diag *d);

/* The folder of the standard library (models/lib) compiled in, searched last. */
const char *em3_frontend_stdlib_dir(void);

#endif
