/* ir/support.h — the few helpers every layer shares: the internal-invariant assert, checked
 * allocation, a bump arena for IR lifetime data, a growable string buffer, and output files
 * that appear whole or not at all. */
#ifndef EM3_SUPPORT_H
#define EM3_SUPPORT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define EM3_VERSION "0.1.0"

/* An internal invariant: when it fails it is our bug, never the user's, so abort with file:line. */
#define EM3_ASSERT(cond, ...)                                                                 \
    do {                                                                                      \
        if (!(cond)) em3_assert_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                 \
    } while (0)

/* A case the code's own invariants exclude; a plain call so that every compiler mode knows the
 * function does not return past it. */
#define EM3_UNREACHABLE(...) em3_assert_fail(__FILE__, __LINE__, "unreachable", __VA_ARGS__)

_Noreturn void em3_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Allocation failure is not recoverable anywhere in this project: these abort with a message. */
void *em3_xmalloc(size_t n);
void *em3_xcalloc(size_t n, size_t size);
void *em3_xrealloc(void *p, size_t n);
char *em3_xstrdup(const char *s);

/* Grow `*buf` (with `*cap` elements of `elem` bytes) so that it holds at least `need` elements. */
void em3_grow(void **buf, int *cap, int need, size_t elem);
#define EM3_GROW(arr, cap, need) em3_grow((void **)&(arr), &(cap), (need), sizeof(*(arr)))

/* Bump arena: everything an IR module owns lives here and is freed at once. */
typedef struct em3_arena em3_arena;
em3_arena *em3_arena_create(void);
void em3_arena_free(em3_arena *a);
void *em3_arena_alloc(em3_arena *a, size_t n);
char *em3_arena_strdup(em3_arena *a, const char *s);
char *em3_arena_strndup(em3_arena *a, const char *s, size_t n);
char *em3_arena_printf(em3_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Growable NUL-terminated string buffer. */
typedef struct {
    char *data;
    size_t len, cap;
} em3_strbuf;
void em3_sb_printf(em3_strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void em3_sb_vprintf(em3_strbuf *sb, const char *fmt, va_list ap);
void em3_sb_putc(em3_strbuf *sb, char c);
void em3_sb_free(em3_strbuf *sb);

/* mkdir -p: creates `path` and its missing parents; false (errno set) on failure. */
bool em3_mkdir_p(const char *path);

/* An output file that a reader never sees half written, even across a crash or a full disk:
 * the bytes go to a temporary file beside `path` (a unique name, so concurrent writers of one
 * path do not collide), and commit renames it over `path` only after every write, the flush and
 * the fsync succeeded. Open returns NULL with errno set; commit returns 0 or the first errno
 * (a write error the stream recorded included) and removes the temporary on failure; abort
 * removes it. Both free the handle. A path that exists but is not a regular file (a terminal,
 * a pipe), or is under /dev or /proc (/dev/stdout), is written in place; through a symbolic link, the file it points to is
 * replaced and the link kept. */
typedef struct em3_afile em3_afile;
em3_afile *em3_afile_open(const char *path);
FILE *em3_afile_stream(em3_afile *a);
int em3_afile_commit(em3_afile *a);
void em3_afile_abort(em3_afile *a);

/* Shortest "%g" text that reads back to the same double: IR dumps must round-trip exactly. */
void em3_format_double(char *out, size_t n, double v);

#endif
