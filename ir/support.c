/* ir/support.c — assert, checked allocation, arena, string buffer and atomic output files (see
 * support.h). */
#define _GNU_SOURCE /* fopencookie */
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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

struct em3_afile {
    char *path, *tmp; /* tmp NULL: written in place */
    int fd;
    int error; /* the first write's errno: a FILE keeps only that an error happened */
    FILE *f;
};

static void afile_free(em3_afile *a) {
    free(a->path);
    free(a->tmp);
    free(a);
}

static ssize_t afile_write(void *cookie, const char *buf, size_t n) {
    em3_afile *a = cookie;
    for (size_t done = 0; done < n;) {
        ssize_t k = write(a->fd, buf + done, n - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (!a->error) a->error = k < 0 ? errno : EIO;
            return (ssize_t)done; /* never negative: stdio takes a short count as the error */
        }
        done += (size_t)k;
    }
    return (ssize_t)n;
}

static int afile_seek(void *cookie, off64_t *pos, int whence) {
    off_t r = lseek(((em3_afile *)cookie)->fd, (off_t)*pos, whence);
    if (r < 0) return -1;
    *pos = r;
    return 0;
}

static int afile_close(void *cookie) { return close(((em3_afile *)cookie)->fd); }

em3_afile *em3_afile_open(const char *path) {
    em3_afile *a = em3_xcalloc(1, sizeof *a);
    struct stat st;
    bool exists = stat(path, &st) == 0;
    if ((exists && !S_ISREG(st.st_mode)) || !strncmp(path, "/dev/", 5) || !strncmp(path, "/proc/", 6)) {
        /* a terminal, pipe or device: nothing to rename over; and -o /dev/stdout redirected to
           a file (> out, >> out) is written through the shell's descriptor, not replaced */
        a->fd = open(path, O_WRONLY | O_CLOEXEC);
    } else {
        /* through a symbolic link the file it points to is replaced, not the link */
        char *real = exists ? realpath(path, NULL) : NULL;
        a->path = real ? real : em3_xstrdup(path);
        a->tmp = em3_xmalloc(strlen(a->path) + 16);
        sprintf(a->tmp, "%s.tmp.XXXXXX", a->path);
        a->fd = mkstemp(a->tmp);
        /* mkstemp's 0600 would make every output private to its writer */
        if (a->fd >= 0 && fchmod(a->fd, 0644) != 0) {
            close(a->fd);
            a->fd = -1;
        }
    }
    cookie_io_functions_t io = {.write = afile_write, .seek = afile_seek, .close = afile_close};
    if (a->fd >= 0 && (a->f = fopencookie(a, "wb", io))) return a;
    int e = errno;
    if (a->fd >= 0) close(a->fd);
    if (a->tmp) unlink(a->tmp);
    afile_free(a);
    errno = e;
    return NULL;
}

FILE *em3_afile_stream(em3_afile *a) { return a->f; }

/* Makes the rename itself durable. Best effort: some file systems refuse fsync on a folder,
 * and the file is complete in place either way. */
static void sync_dir_of(const char *path) {
    char *d = em3_xstrdup(path);
    char *slash = strrchr(d, '/');
    if (slash) *slash = 0;
    int fd = open(slash ? (*d ? d : "/") : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(d);
}

int em3_afile_commit(em3_afile *a) {
    int e = fflush(a->f) != 0 || ferror(a->f) ? (a->error ? a->error : EIO) : 0;
    if (!e && a->tmp && fsync(a->fd) != 0) e = errno;
    if (fclose(a->f) != 0 && !e) e = errno;
    if (a->tmp) {
        if (!e && rename(a->tmp, a->path) != 0) e = errno;
        if (e)
            unlink(a->tmp);
        else
            sync_dir_of(a->path);
    }
    afile_free(a);
    return e;
}

void em3_afile_abort(em3_afile *a) {
    if (!a) return;
    fclose(a->f);
    if (a->tmp) unlink(a->tmp);
    afile_free(a);
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
