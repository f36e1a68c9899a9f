/* runtime/data_npz.c — NumPy .npz archives: a zip file (ZIP64 as NumPy writes it) of .npy members.
 * Members are located through the central directory and checked against their CRC-32; each is
 * then read by runtime/npy.c through a temporary file, so there is one .npy parser. Only stored
 * members (np.savez) are read: np.savez_compressed's deflate is refused with a clear message. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data_internal.h"
#include "ir/support.h"

typedef struct {
    const unsigned char *buf;
    size_t len;
    const char *path;
} zipfile;

typedef struct {
    char name[256];
    uint64_t local_off, comp, size;
    uint32_t crc;
    int method, flags;
} zipentry;

static uint64_t rd(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static uint32_t crc32_of(const unsigned char *p, size_t n) {
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static bool bad(const zipfile *z, char *err, size_t errlen, const char *what) {
    return em3_data_fail(err, errlen, "%s: not a readable .npz (zip) file: %s", z->path, what);
}

/* The central directory's offset and entry count, from the end records (ZIP64 when NumPy
 * needed it). */
static bool find_directory(const zipfile *z, uint64_t *off, uint64_t *count, char *err, size_t errlen) {
    if (z->len < 22) return bad(z, err, errlen, "too short");
    /* The end record is the last thing in the file but for a comment of up to 65535 bytes. */
    size_t lo = z->len > 22 + 65535 ? z->len - 22 - 65535 : 0, e = z->len - 22;
    while (rd(z->buf + e, 4) != 0x06054b50) {
        if (e == lo) return bad(z, err, errlen, "no end-of-directory record");
        e--;
    }
    *count = rd(z->buf + e + 10, 2);
    *off = rd(z->buf + e + 16, 4);
    if (*count == 0xFFFF || *off == 0xFFFFFFFF) {
        if (e < 20 || rd(z->buf + e - 20, 4) != 0x07064b50) return bad(z, err, errlen, "no ZIP64 locator");
        uint64_t z64 = rd(z->buf + e - 20 + 8, 8);
        if (z64 + 56 > z->len || rd(z->buf + z64, 4) != 0x06064b50)
            return bad(z, err, errlen, "bad ZIP64 end record");
        *count = rd(z->buf + z64 + 32, 8);
        *off = rd(z->buf + z64 + 48, 8);
    }
    if (*off > z->len) return bad(z, err, errlen, "directory outside the file");
    return true;
}

/* Reads the directory entry at *pos, moving *pos past it. */
static bool read_entry(const zipfile *z, uint64_t *pos, zipentry *en, char *err, size_t errlen) {
    const unsigned char *b = z->buf;
    if (*pos + 46 > z->len || rd(b + *pos, 4) != 0x02014b50) return bad(z, err, errlen, "damaged directory");
    uint64_t nlen = rd(b + *pos + 28, 2), xlen = rd(b + *pos + 30, 2), clen = rd(b + *pos + 32, 2);
    if (*pos + 46 + nlen + xlen + clen > z->len) return bad(z, err, errlen, "damaged directory");
    en->flags = (int)rd(b + *pos + 8, 2);
    en->method = (int)rd(b + *pos + 10, 2);
    en->crc = (uint32_t)rd(b + *pos + 16, 4);
    en->comp = rd(b + *pos + 20, 4);
    en->size = rd(b + *pos + 24, 4);
    en->local_off = rd(b + *pos + 42, 4);
    size_t n = nlen < sizeof en->name ? nlen : sizeof en->name - 1;
    memcpy(en->name, b + *pos + 46, n);
    en->name[n] = 0;
    /* ZIP64 extra field: 64-bit values for the fields that hold all ones, in this order. */
    const unsigned char *x = b + *pos + 46 + nlen, *xend = x + xlen;
    while (x + 4 <= xend) {
        uint64_t id = rd(x, 2), sz = rd(x + 2, 2);
        const unsigned char *v = x + 4;
        if (v + sz > xend) break;
        if (id == 1) {
            uint64_t *fields[] = {&en->size, &en->comp, &en->local_off};
            for (int i = 0; i < 3; i++)
                if (*fields[i] == 0xFFFFFFFFu && v + 8 <= x + 4 + sz) {
                    *fields[i] = rd(v, 8);
                    v += 8;
                }
        }
        x += 4 + sz;
    }
    *pos += 46 + nlen + xlen + clen;
    return true;
}

static bool open_zip(const char *path, zipfile *z, char *err, size_t errlen) {
    *z = (zipfile){.path = path};
    int fd = open(path, O_RDONLY);
    if (fd < 0) return em3_data_fail(err, errlen, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
        close(fd);
        return em3_data_fail(err, errlen, "%s: not a regular, non-empty file", path);
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return em3_data_fail(err, errlen, "%s: cannot map: %s", path, strerror(errno));
    z->buf = m;
    z->len = (size_t)st.st_size;
    return true;
}

static void close_zip(zipfile *z) {
    if (z->buf) munmap((void *)z->buf, z->len);
}

static bool is_npy_member(const char *name) {
    size_t n = strlen(name);
    return n > 4 && !strcmp(name + n - 4, ".npy");
}

/* Replaces the temporary file's name at the start of npy.c's message by "PATH[name]". */
static void rename_message(char *err, size_t errlen, const char *tmp, const char *shown) {
    size_t t = strlen(tmp);
    if (strncmp(err, tmp, t)) return;
    char *rest = em3_xstrdup(err + t);
    snprintf(err, errlen, "%s%s", shown, rest);
    free(rest);
}

em3_npy *em3_npz_read(const char *path, const char *name, char *err, size_t errlen) {
    char shown[4096];
    snprintf(shown, sizeof shown, "%s[%s]", path, name);
    zipfile z;
    uint64_t pos = 0, count = 0;
    if (!open_zip(path, &z, err, errlen)) return NULL;
    em3_npy *a = NULL;
    zipentry en = {0};
    em3_strbuf members = {0}; /* for the message when `name` is not one */
    bool found = false, ok = find_directory(&z, &pos, &count, err, errlen);
    for (uint64_t i = 0; ok && !found && i < count; i++) {
        ok = read_entry(&z, &pos, &en, err, errlen);
        found = ok && is_npy_member(en.name) && strlen(en.name) == strlen(name) + 4 &&
                !strncmp(en.name, name, strlen(name));
        if (ok && is_npy_member(en.name))
            em3_sb_printf(&members, "%s%.*s", members.len ? ", " : "", (int)strlen(en.name) - 4, en.name);
    }
    const unsigned char *data = NULL;
    if (ok && !found)
        ok = em3_data_fail(err, errlen, "%s: has no array '%s' (it has: %s)", path, name,
                           members.len ? members.data : "none");
    em3_sb_free(&members);
    if (ok && (en.method != 0 || (en.flags & 1)))
        ok = em3_data_fail(err, errlen, "%s: compressed or encrypted member (np.savez_compressed); "
                           "save with np.savez, or as .npy files", shown);
    if (ok) {
        uint64_t lo = en.local_off;
        if (lo + 30 > z.len || rd(z.buf + lo, 4) != 0x04034b50) {
            ok = bad(&z, err, errlen, "damaged local header");
        } else {
            uint64_t start = lo + 30 + rd(z.buf + lo + 26, 2) + rd(z.buf + lo + 28, 2);
            if (en.comp != en.size || start > z.len || en.size > z.len - start)
                ok = em3_data_fail(err, errlen, "%s: truncated (the archive ends inside this array)", shown);
            else if (crc32_of(z.buf + start, en.size) != en.crc)
                ok = em3_data_fail(err, errlen, "%s: damaged (CRC-32 mismatch)", shown);
            else
                data = z.buf + start;
        }
    }
    if (ok) {
        const char *tdir = getenv("TMPDIR");
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s/em3-npz-XXXXXX", tdir && *tdir ? tdir : "/tmp");
        int fd = mkstemp(tmp);
        FILE *fp = fd >= 0 ? fdopen(fd, "wb") : NULL;
        bool written = fp && fwrite(data, 1, en.size, fp) == en.size;
        if (fp ? fclose(fp) != 0 : (fd >= 0 && close(fd) != 0)) written = false;
        if (!written) {
            em3_data_fail(err, errlen, "%s: cannot extract to %s: %s", shown, tmp, strerror(errno));
        } else if ((a = em3_npy_read(tmp, err, errlen))) {
            free(a->path);
            a->path = em3_xstrdup(shown);
        } else {
            rename_message(err, errlen, tmp, shown);
        }
        if (fd >= 0) unlink(tmp);
    }
    close_zip(&z);
    return a;
}
