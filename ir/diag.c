/* ir/diag.c — located diagnostics with the quoted source line and a caret (see diag.h). */
#include "diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

typedef struct {
    char *name;
    char *text;
    size_t len;
} em3_source;

struct em3_diag {
    FILE *out;
    em3_source *src;
    int n_src, cap_src;
    int errors, printed;
};

em3_diag *em3_diag_create(FILE *out) {
    em3_diag *d = em3_xcalloc(1, sizeof(*d));
    d->out = out;
    return d;
}

void em3_diag_free(em3_diag *d) {
    if (!d) return;
    for (int i = 0; i < d->n_src; i++) {
        free(d->src[i].name);
        free(d->src[i].text);
    }
    free(d->src);
    free(d);
}

const char *em3_diag_add_source(em3_diag *d, const char *name, const char *text, size_t len) {
    EM3_GROW(d->src, d->cap_src, d->n_src + 1);
    em3_source *s = &d->src[d->n_src++];
    s->name = em3_xstrdup(name);
    s->text = em3_xmalloc(len + 1);
    memcpy(s->text, text, len);
    s->text[len] = 0;
    s->len = len;
    return s->name;
}

static const em3_source *find_source(const em3_diag *d, const char *file) {
    for (int i = d->n_src - 1; i >= 0; i--)
        if (d->src[i].name == file) return &d->src[i];
    return NULL;
}

/* Quote the line with a caret under the column. Bytes that would garble a terminal (control
 * characters, NUL, invalid UTF-8) are shown as '?', and very long lines are cut around the
 * column, so that quoting garbage input stays readable. */
static void quote_line(em3_diag *d, em3_loc loc) {
    const em3_source *s = find_source(d, loc.file);
    if (!s || loc.line <= 0) return;
    size_t pos = 0;
    for (int l = 1; l < loc.line && pos < s->len; pos++)
        if (s->text[pos] == '\n') l++;
    size_t end = pos;
    while (end < s->len && s->text[end] != '\n') end++;
    size_t col = loc.col > 0 ? (size_t)loc.col - 1 : 0;
    size_t from = pos, to = end;
    if (col > 100) from = pos + col - 60;
    if (to - from > 160) to = from + 160;
    if (from > end) return;
    fputs("  ", d->out);
    for (size_t i = from; i < to; i++) {
        unsigned char c = (unsigned char)s->text[i];
        fputc(c == '\t' ? ' ' : (c < 0x20 || c >= 0x7f) ? '?' : (int)c, d->out);
    }
    fputs("\n  ", d->out);
    for (size_t i = from; i < pos + col && i < to + 1; i++) fputc(' ', d->out);
    fputs("^\n", d->out);
}

static void report(em3_diag *d, const char *kind, em3_loc loc, const char *fmt, va_list ap) {
    if (d->printed >= EM3_DIAG_MAX_PRINTED) return;
    d->printed++;
    if (loc.file && loc.line > 0)
        fprintf(d->out, "%s:%d:%d: %s: ", loc.file, loc.line, loc.col, kind);
    else if (loc.file)
        fprintf(d->out, "%s: %s: ", loc.file, kind);
    else
        fprintf(d->out, "em3: %s: ", kind);
    vfprintf(d->out, fmt, ap);
    fputc('\n', d->out);
    quote_line(d, loc);
    if (d->printed == EM3_DIAG_MAX_PRINTED)
        fprintf(d->out, "em3: note: further diagnostics are not shown\n");
}

bool em3_diag_error(em3_diag *d, em3_loc loc, const char *fmt, ...) {
    d->errors++;
    va_list ap;
    va_start(ap, fmt);
    report(d, "error", loc, fmt, ap);
    va_end(ap);
    return false;
}

void em3_diag_note(em3_diag *d, em3_loc loc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    report(d, "note", loc, fmt, ap);
    va_end(ap);
}

void em3_diag_warning(em3_diag *d, em3_loc loc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    report(d, "warning", loc, fmt, ap);
    va_end(ap);
}

int em3_diag_error_count(const em3_diag *d) { return d->errors; }
