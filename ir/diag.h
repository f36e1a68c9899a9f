/* ir/diag.h — user-facing diagnostics: "file:line:col: error: message", the source line and a
 * caret. Shared by the DSL frontend and the IR text parser; collects several errors per run. */
#ifndef EM3_DIAG_H
#define EM3_DIAG_H

#include <stdbool.h>
#include <stdio.h>

/* A source position. `file` points into the diag engine's file table (stable for its life). */
typedef struct {
    const char *file;
    int line, col; /* 1-based; line 0 means "no location" */
} em3_loc;

typedef struct em3_diag em3_diag;

em3_diag *em3_diag_create(FILE *out);
void em3_diag_free(em3_diag *d);

/* Register a source buffer so that diagnostics can quote its lines. Returns the stable file name
 * pointer to put in locations. The text is copied. */
const char *em3_diag_add_source(em3_diag *d, const char *name, const char *text, size_t len);

/* Report a user error (returns false so callers can `return em3_diag_error(...)`). */
bool em3_diag_error(em3_diag *d, em3_loc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void em3_diag_note(em3_diag *d, em3_loc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void em3_diag_warning(em3_diag *d, em3_loc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int em3_diag_error_count(const em3_diag *d);

/* Past this many errors further ones are counted but not printed (one bad byte in a binary
 * file must not print a million lines). */
#define EM3_DIAG_MAX_PRINTED 20

#endif
