/* runtime/data_csv.c — a CSV record reader over a memory-mapped file, as pandas reads FuxiCTR's
 * files: a header line, RFC 4180 quoting ("" inside quotes), CRLF or LF, blank lines skipped.
 * Records report the 1-based line they start on, so that every data error can name it. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data_internal.h"
#include "ir/support.h"

typedef struct {
    size_t off, len;
    bool scratch; /* unescaped copy in c->scratch, else in the file */
} span;

struct em3_csv {
    char *path;
    const char *buf;
    size_t len, pos;
    int64_t line; /* line number at pos */
    char sep;
    int n_cols;
    char **header;
    span *spans;
    int cap_spans;
    em3_field *fields;
    em3_strbuf scratch;
};

const char *em3_csv_path(const em3_csv *c) { return c->path; }
int em3_csv_columns(const em3_csv *c) { return c->n_cols; }

int em3_csv_column(const em3_csv *c, const char *name) {
    for (int i = 0; i < c->n_cols; i++)
        if (!strcmp(c->header[i], name)) return i;
    return -1;
}

void em3_csv_close(em3_csv *c) {
    if (!c) return;
    if (c->len) munmap((void *)c->buf, c->len);
    for (int i = 0; i < c->n_cols; i++) free(c->header[i]);
    free(c->header);
    free(c->spans);
    free(c->fields);
    em3_sb_free(&c->scratch);
    free(c->path);
    free(c);
}

/* Splits the record at c->pos into spans; returns the number of fields, 0 at the end of the
 * file, -1 on a malformed record (err set). */
static int split_record(em3_csv *c, int64_t *start_line, char *err, size_t errlen) {
    const char *b = c->buf;
    /* blank lines are not records */
    while (c->pos < c->len && (b[c->pos] == '\n' || (b[c->pos] == '\r' && c->pos + 1 < c->len && b[c->pos + 1] == '\n'))) {
        c->pos += b[c->pos] == '\r' ? 2 : 1;
        c->line++;
    }
    if (c->pos >= c->len) return 0;
    *start_line = c->line;
    c->scratch.len = 0;
    int n = 0;
    for (;;) {
        EM3_GROW(c->spans, c->cap_spans, n + 1);
        span *s = &c->spans[n++];
        if (c->pos < c->len && b[c->pos] == '"') {
            int64_t open_line = c->line;
            s->scratch = true;
            s->off = c->scratch.len;
            c->pos++;
            for (;;) {
                if (c->pos >= c->len) {
                    em3_data_fail(err, errlen, "%s:%lld: a quoted field is not closed", c->path, (long long)open_line);
                    return -1;
                }
                char ch = b[c->pos++];
                if (ch == '"') {
                    if (c->pos < c->len && b[c->pos] == '"') c->pos++;
                    else break;
                }
                if (ch == '\n') c->line++;
                em3_sb_putc(&c->scratch, ch);
            }
            s->len = c->scratch.len - s->off;
            bool at_end = c->pos >= c->len || b[c->pos] == c->sep || b[c->pos] == '\n' ||
                          (b[c->pos] == '\r' && (c->pos + 1 >= c->len || b[c->pos + 1] == '\n'));
            if (!at_end) {
                em3_data_fail(err, errlen, "%s:%lld: text after the closing quote of field %d", c->path,
                              (long long)c->line, n);
                return -1;
            }
        } else {
            s->scratch = false;
            s->off = c->pos;
            while (c->pos < c->len && b[c->pos] != c->sep && b[c->pos] != '\n') c->pos++;
            s->len = c->pos - s->off;
            if (s->len && b[s->off + s->len - 1] == '\r' && (c->pos >= c->len || b[c->pos] == '\n')) s->len--;
        }
        if (c->pos < c->len && b[c->pos] == '\r') c->pos++; /* after a quoted field */
        if (c->pos >= c->len) return n;
        if (b[c->pos] == '\n') {
            c->pos++;
            c->line++;
            return n;
        }
        c->pos++; /* the separator */
    }
}

static void make_fields(em3_csv *c, int n) {
    for (int i = 0; i < n; i++)
        c->fields[i] = (em3_field){(c->spans[i].scratch ? c->scratch.data : c->buf) + c->spans[i].off,
                                   c->spans[i].len};
}

em3_csv *em3_csv_open(const char *path, char sep, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        em3_data_fail(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        em3_data_fail(err, errlen, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    em3_csv *c = em3_xcalloc(1, sizeof *c);
    c->path = em3_xstrdup(path);
    c->sep = sep;
    c->line = 1;
    c->len = (size_t)st.st_size;
    if (c->len) {
        void *m = mmap(NULL, c->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            em3_data_fail(err, errlen, "%s: cannot map: %s", path, strerror(errno));
            c->len = 0;
            close(fd);
            em3_csv_close(c);
            return NULL;
        }
        c->buf = m;
    }
    close(fd);
    if (c->len >= 3 && !memcmp(c->buf, "\xEF\xBB\xBF", 3)) c->pos = 3; /* a UTF-8 byte-order mark */
    int64_t line;
    int n = split_record(c, &line, err, errlen);
    if (n <= 0) {
        if (n == 0) em3_data_fail(err, errlen, "%s: empty file (a CSV file starts with a header line)", path);
        em3_csv_close(c);
        return NULL;
    }
    c->n_cols = n;
    c->header = em3_xcalloc((size_t)n, sizeof *c->header);
    c->fields = em3_xcalloc((size_t)n, sizeof *c->fields);
    make_fields(c, n);
    for (int i = 0; i < n; i++) {
        c->header[i] = em3_xmalloc(c->fields[i].len + 1);
        memcpy(c->header[i], c->fields[i].p, c->fields[i].len);
        c->header[i][c->fields[i].len] = 0;
        for (int j = 0; j < i; j++)
            if (!strcmp(c->header[j], c->header[i])) {
                em3_data_fail(err, errlen, "%s:%lld: column '%s' appears twice in the header", path,
                              (long long)line, c->header[i]);
                em3_csv_close(c);
                return NULL;
            }
    }
    return c;
}

bool em3_csv_next(em3_csv *c, const em3_field **fields, int64_t *line, char *err, size_t errlen) {
    *err = 0;
    int n = split_record(c, line, err, errlen);
    if (n <= 0) return false;
    if (n != c->n_cols)
        return em3_data_fail(err, errlen, "%s:%lld: %d fields, but the header has %d", c->path,
                             (long long)*line, n, c->n_cols);
    make_fields(c, n);
    *fields = c->fields;
    return true;
}
