/* ir/support.c — assert, checked allocation, arena and string buffer (see support.h). */
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

void em3_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
    fprintf(stderr, "%s:%d: internal error: assertion '%s' failed: ", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nThis is a bug in em3; please report it with the input that caused it.\n", stderr);
    abort();
}

static void *check(void *p) {
    if (!p) {
        fputs("em3: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *em3_xmalloc(size_t n) { return check(malloc(n ? n : 1)); }
void *em3_xcalloc(size_t n, size_t size) { return check(calloc(n ? n : 1, size ? size : 1)); }
void *em3_xrealloc(void *p, size_t n) { return check(realloc(p, n ? n : 1)); }
char *em3_xstrdup(const char *s) { return check(strdup(s)); }

void em3_grow(void **buf, int *cap, int need, size_t elem) {
    if (need <= *cap) return;
    int c = *cap ? *cap : 8;
    while (c < need) c *= 2;
    *buf = em3_xrealloc(*buf, (size_t)c * elem);
    *cap = c;
}

typedef struct em3_chunk {
    struct em3_chunk *next;
    size_t used, size;
    max_align_t data[];
} em3_chunk;

struct em3_arena {
    em3_chunk *head;
};

em3_arena *em3_arena_create(void) { return em3_xcalloc(1, sizeof(em3_arena)); }

void em3_arena_free(em3_arena *a) {
    if (!a) return;
    for (em3_chunk *c = a->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    free(a);
}

void *em3_arena_alloc(em3_arena *a, size_t n) {
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (!a->head || a->head->used + n > a->head->size) {
        size_t size = n > 65536 ? n : 65536;
        em3_chunk *c = em3_xmalloc(sizeof(em3_chunk) + size);
        c->used = 0;
        c->size = size;
        c->next = a->head;
        a->head = c;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

char *em3_arena_strndup(em3_arena *a, const char *s, size_t n) {
    char *p = em3_arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *em3_arena_strdup(em3_arena *a, const char *s) { return em3_arena_strndup(a, s, strlen(s)); }

char *em3_arena_printf(em3_arena *a, const char *fmt, ...) {
    em3_strbuf sb = {0};
    va_list ap;
    va_start(ap, fmt);
    em3_sb_vprintf(&sb, fmt, ap);
    va_end(ap);
    char *p = em3_arena_strndup(a, sb.data, sb.len);
    em3_sb_free(&sb);
    return p;
}

void em3_sb_vprintf(em3_strbuf *sb, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    EM3_ASSERT(n >= 0, "bad format '%s'", fmt);
    if (sb->len + (size_t)n + 1 > sb->cap) {
        size_t c = sb->cap ? sb->cap : 64;
        while (c < sb->len + (size_t)n + 1) c *= 2;
        sb->data = em3_xrealloc(sb->data, c);
        sb->cap = c;
    }
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    sb->len += (size_t)n;
}

void em3_sb_printf(em3_strbuf *sb, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    em3_sb_vprintf(sb, fmt, ap);
    va_end(ap);
}

void em3_sb_putc(em3_strbuf *sb, char c) { em3_sb_printf(sb, "%c", c); }

void em3_sb_free(em3_strbuf *sb) {
    free(sb->data);
    sb->data = NULL;
    sb->len = sb->cap = 0;
}

void em3_format_double(char *out, size_t n, double v) {
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(out, n, "%.*g", prec, v);
        if (strtod(out, NULL) == v) break;
    }
    /* Keep floats recognisable as floats in the text form: "1" would read back as an int. */
    if (!strpbrk(out, ".eEni")) {
        size_t l = strlen(out);
        if (l + 2 < n) memcpy(out + l, ".0", 3);
    }
}

bool em3_mkdir_p(const char *path) {
    char *p = em3_xstrdup(path);
    bool ok = true;
    for (char *c = p + 1; ok && *c; c++)
        if (*c == '/') {
            *c = 0;
            ok = !mkdir(p, 0777) || errno == EEXIST;
            *c = '/';
        }
    ok = ok && (!mkdir(p, 0777) || errno == EEXIST);
    free(p);
    return ok;
}
