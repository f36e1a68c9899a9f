/* runtime/npy.c — the .npy reader and writer of npy.h. The header is a Python dict literal
 * ({'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }) parsed by a small strict
 * scanner in any key order; sizes are checked against the file before anything is allocated,
 * so a hostile shape cannot make us allocate or read more than the file holds. */
#include "npy.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ir/support.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c stores and reads little-endian data in host order"
#endif

#define MAX_HEADER (1 << 20) /* NumPy writes a few hundred bytes; anything near this is junk */

static const struct {
    const char *descr;
    size_t size;
} dtypes[] = {
    [EM3_NPY_F16] = {"<f2", 2},  [EM3_NPY_F32] = {"<f4", 4}, [EM3_NPY_F64] = {"<f8", 8},
    [EM3_NPY_I32] = {"<i4", 4},  [EM3_NPY_I64] = {"<i8", 8}, [EM3_NPY_U8] = {"|u1", 1},
    [EM3_NPY_BOOL] = {"|b1", 1},
};

const char *em3_npy_dtype_name(em3_npy_dtype t) { return dtypes[t].descr; }

static bool fail(char *err, size_t n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool fail(char *err, size_t n, const char *path, const char *fmt, ...) {
    int k = snprintf(err, n, "%s: ", path);
    va_list ap;
    va_start(ap, fmt);
    if (k >= 0 && (size_t)k < n) vsnprintf(err + k, n - (size_t)k, fmt, ap);
    va_end(ap);
    return false;
}

/* ---- the header ------------------------------------------------------------------------------ */

typedef struct {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool eat(cursor *c, char ch) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A quoted string without escapes ('...' or "..."), into out. */
static bool scan_string(cursor *c, char *out, size_t n) {
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return false;
    char q = *c->p++;
    size_t len = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || len + 1 >= n) return false;
        out[len++] = *c->p++;
    }
    if (c->p >= c->end) return false;
    c->p++;
    out[len] = 0;
    return true;
}

/* A non-negative integer (Python 2 wrote a trailing L). */
static bool scan_int(cursor *c, int64_t *v) {
    skip_ws(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9') return false;
    int64_t x = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (__builtin_mul_overflow(x, 10, &x) || __builtin_add_overflow(x, *c->p - '0', &x))
            return false;
        c->p++;
    }
    if (c->p < c->end && *c->p == 'L') c->p++;
    *v = x;
    return true;
}

static bool scan_word(cursor *c, const char *w) {
    skip_ws(c);
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n)) return false;
    c->p += n;
    return true;
}

/* "(3, 4)", "(3,)", "()" */
static bool scan_shape(cursor *c, em3_npy *a) {
    if (!eat(c, '(')) return false;
    a->rank = 0;
    while (!eat(c, ')')) {
        if (a->rank == EM3_NPY_MAX_RANK || !scan_int(c, &a->shape[a->rank])) return false;
        a->rank++;
        if (!eat(c, ',')) return eat(c, ')');
    }
    return true;
}

static bool parse_header(const char *text, size_t len, em3_npy *a, const char *path, char *err,
                         size_t el) {
    cursor c = {text, text + len};
    bool seen[3] = {0}, fortran = false;
    if (!eat(&c, '{')) return fail(err, el, path, "the npy header is not a dict");
    while (!eat(&c, '}')) {
        char key[32], val[32];
        if (!scan_string(&c, key, sizeof key) || !eat(&c, ':'))
            return fail(err, el, path, "malformed npy header near offset %d", (int)(c.p - text));
        int k = !strcmp(key, "descr")           ? 0
                : !strcmp(key, "fortran_order") ? 1
                : !strcmp(key, "shape")         ? 2
                                                : -1;
        if (k < 0) return fail(err, el, path, "unknown key '%s' in the npy header", key);
        if (seen[k]) return fail(err, el, path, "key '%s' given twice in the npy header", key);
        seen[k] = true;
        if (k == 0) {
            if (!scan_string(&c, val, sizeof val))
                return fail(err, el, path, "unsupported dtype: only plain numeric dtypes are read");
            int t = -1;
            for (int i = 0; i < (int)(sizeof dtypes / sizeof dtypes[0]); i++)
                if (!strcmp(val, dtypes[i].descr)) t = i;
            if (t < 0)
                return fail(err, el, path,
                            "unsupported dtype '%s' (read: <f2 <f4 <f8 <i4 <i8 |u1 |b1)", val);
            a->dtype = (em3_npy_dtype)t;
        } else if (k == 1) {
            if (scan_word(&c, "True"))
                fortran = true;
            else if (!scan_word(&c, "False"))
                return fail(err, el, path, "fortran_order must be True or False");
        } else if (!scan_shape(&c, a)) {
            return fail(err, el, path,
                        "malformed shape in the npy header (a tuple of at most %d "
                        "sizes)",
                        EM3_NPY_MAX_RANK);
        }
        if (!eat(&c, ',')) {
            if (!eat(&c, '}'))
                return fail(err, el, path, "malformed npy header near offset %d",
                            (int)(c.p - text));
            break;
        }
    }
    skip_ws(&c);
    if (c.p != c.end) return fail(err, el, path, "junk after the npy header's dict");
    for (int k = 0; k < 3; k++)
        if (!seen[k])
            return fail(err, el, path, "the npy header lacks '%s'",
                        k == 0   ? "descr"
                        : k == 1 ? "fortran_order"
                                 : "shape");
    if (fortran)
        return fail(err, el, path,
                    "Fortran-order arrays are not supported (save a C-order copy: "
                    "np.ascontiguousarray)");
    return true;
}

/* ---- reading --------------------------------------------------------------------------------- */

void em3_npy_free(em3_npy *a) {
    if (!a) return;
    free(a->path);
    free(a->data);
    free(a);
}

static uint32_t le(const unsigned char *b, int n) {
    uint32_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

/* Reads the file into a (already holding its path); false with the reason. */
static bool read_into(FILE *fp, em3_npy *a, char *err, size_t el) {
    const char *path = a->path;
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) return fail(err, el, path, "%s", strerror(errno));
    if (!S_ISREG(st.st_mode)) return fail(err, el, path, "not a regular file");
    unsigned char pre[12];
    if (fread(pre, 1, 8, fp) != 8 || memcmp(pre, "\x93NUMPY", 6))
        return fail(err, el, path, "not a .npy file (bad magic)");
    int major = pre[6], minor = pre[7];
    if (major < 1 || major > 3 || minor != 0)
        return fail(err, el, path, "unsupported .npy format version %d.%d", major, minor);
    int lsize = major == 1 ? 2 : 4;
    if (fread(pre + 8, 1, (size_t)lsize, fp) != (size_t)lsize)
        return fail(err, el, path, "truncated .npy header");
    uint32_t hlen = le(pre + 8, lsize);
    int64_t start = 8 + lsize, rest = (int64_t)st.st_size - start;
    if (hlen > MAX_HEADER || (int64_t)hlen > rest)
        return fail(err, el, path, "truncated or oversized .npy header (%u bytes)", (unsigned)hlen);
    char *text = em3_xmalloc(hlen + 1);
    bool ok = fread(text, 1, hlen, fp) == hlen;
    text[hlen] = 0;
    ok = ok ? parse_header(text, hlen, a, path, err, el) : fail(err, el, path, "read error");
    free(text);
    if (!ok) return false;

    int64_t numel = 1, bytes;
    for (int i = 0; i < a->rank; i++)
        if (__builtin_mul_overflow(numel, a->shape[i], &numel))
            return fail(err, el, path, "the shape's element count overflows");
    if (__builtin_mul_overflow(numel, (int64_t)dtypes[a->dtype].size, &bytes))
        return fail(err, el, path, "the shape's size overflows");
    rest -= hlen;
    if (bytes > rest)
        return fail(err, el, path,
                    "truncated: the shape needs %lld bytes of data, the file has %lld",
                    (long long)bytes, (long long)rest);
    if (bytes < rest)
        return fail(err, el, path, "%lld bytes after the array's data", (long long)(rest - bytes));
    a->numel = numel;
    a->data = em3_xmalloc((size_t)(bytes ? bytes : 1));
    if (fread(a->data, 1, (size_t)bytes, fp) != (size_t)bytes)
        return fail(err, el, path, "read error");
    return true;
}

em3_npy *em3_npy_read(const char *path, char *err, size_t errlen) {
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (read_into rejects it) */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    FILE *fp = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!fp) {
        fail(err, errlen, path, "%s", strerror(errno));
        if (fd >= 0) close(fd);
        return NULL;
    }
    em3_npy *a = em3_xcalloc(1, sizeof *a);
    a->path = em3_xstrdup(path);
    bool ok = read_into(fp, a, err, errlen);
    fclose(fp);
    if (!ok) {
        em3_npy_free(a);
        return NULL;
    }
    return a;
}

/* ---- conversion ------------------------------------------------------------------------------ */

double em3_npy_half_to_double(uint16_t h) {
    int sign = h >> 15, exp = h >> 10 & 0x1f, mant = h & 0x3ff;
    double v;
    if (exp == 0x1f)
        v = mant ? NAN : INFINITY;
    else if (exp == 0) /* subnormal: no implicit 1 */
        v = ldexp(mant, -24);
    else
        v = ldexp(mant | 0x400, exp - 25);
    return sign ? -v : v;
}

static double element(const em3_npy *a, int64_t i) {
    const unsigned char *p = (const unsigned char *)a->data + (size_t)i * dtypes[a->dtype].size;
    switch (a->dtype) {
    case EM3_NPY_F16: {
        uint16_t h;
        memcpy(&h, p, 2);
        return em3_npy_half_to_double(h);
    }
    case EM3_NPY_F32: {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    case EM3_NPY_F64: {
        double d;
        memcpy(&d, p, 8);
        return d;
    }
    case EM3_NPY_I32: {
        int32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    case EM3_NPY_I64: {
        int64_t v;
        memcpy(&v, p, 8);
        return (double)v;
    }
    case EM3_NPY_U8: return *p;
    case EM3_NPY_BOOL: return *p != 0;
    }
    EM3_UNREACHABLE("npy dtype %d", (int)a->dtype);
}

void em3_npy_to_f64(const em3_npy *a, double *out) {
    for (int64_t i = 0; i < a->numel; i++) out[i] = element(a, i);
}

void em3_npy_to_f32(const em3_npy *a, float *out) {
    for (int64_t i = 0; i < a->numel; i++) out[i] = (float)element(a, i);
}

bool em3_npy_to_i64(const em3_npy *a, int64_t *out, char *err, size_t errlen) {
    for (int64_t i = 0; i < a->numel; i++) {
        if (a->dtype == EM3_NPY_I64) { /* exact beyond 2^53, unlike a trip through double */
            memcpy(&out[i], (const char *)a->data + i * 8, 8);
            continue;
        }
        double v = element(a, i);
        if (!(v == trunc(v) && v >= -0x1p63 && v < 0x1p63))
            return fail(err, errlen, a->path, "element %lld (%.17g) is not an integer",
                        (long long)i, v);
        out[i] = (int64_t)v;
    }
    return true;
}

/* ---- writing --------------------------------------------------------------------------------- */

/* The full header (magic, version, length, padded dict): a multiple of 64 bytes, so that the
 * data is aligned as NumPy aligns it. Version 2.0 only when the dict outgrows 65535 bytes. */
static char *make_header(const char *descr, int rank, const int64_t *shape, size_t *len) {
    em3_strbuf d = {0};
    em3_sb_printf(&d, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int i = 0; i < rank; i++)
        em3_sb_printf(&d, "%lld%s", (long long)shape[i],
                      rank == 1      ? ","
                      : i + 1 < rank ? ", "
                                     : "");
    em3_sb_printf(&d, "), }");
    int lsize = d.len + 12 + 64 > 65535 ? 4 : 2;
    size_t pre = 8 + (size_t)lsize, total = (pre + d.len + 1 + 63) / 64 * 64, hlen = total - pre;
    char *h = em3_xmalloc(total);
    memcpy(h, "\x93NUMPY", 6);
    h[6] = lsize == 2 ? 1 : 2;
    h[7] = 0;
    for (int i = 0; i < lsize; i++) h[8 + i] = (char)(hlen >> (8 * i) & 0xff);
    memcpy(h + pre, d.data, d.len);
    memset(h + pre + d.len, ' ', hlen - d.len - 1);
    h[total - 1] = '\n';
    em3_sb_free(&d);
    *len = total;
    return h;
}

static bool write_array(const char *path, em3_npy_dtype t, int rank, const int64_t *shape,
                        const void *data, char *err, size_t el) {
    if (rank < 0 || rank > EM3_NPY_MAX_RANK) return fail(err, el, path, "rank %d", rank);
    int64_t numel = 1, bytes;
    for (int i = 0; i < rank; i++)
        if (shape[i] < 0 || __builtin_mul_overflow(numel, shape[i], &numel))
            return fail(err, el, path, "bad shape (dimension %d)", i);
    if (__builtin_mul_overflow(numel, (int64_t)dtypes[t].size, &bytes))
        return fail(err, el, path, "the array is too large");
    size_t hlen;
    char *header = make_header(dtypes[t].descr, rank, shape, &hlen);
    em3_afile *out = em3_afile_open(path);
    int e = out ? 0 : errno;
    if (out) {
        FILE *f = em3_afile_stream(out);
        fwrite(header, 1, hlen, f);
        fwrite(data, 1, (size_t)bytes, f);
        e = em3_afile_commit(out);
    }
    if (e) fail(err, el, path, "cannot write: %s", strerror(e));
    free(header);
    return !e;
}

bool em3_npy_write_f64(const char *path, int rank, const int64_t *shape, const double *data,
                       char *err, size_t errlen) {
    return write_array(path, EM3_NPY_F64, rank, shape, data, err, errlen);
}

bool em3_npy_write_f32(const char *path, int rank, const int64_t *shape, const float *data,
                       char *err, size_t errlen) {
    return write_array(path, EM3_NPY_F32, rank, shape, data, err, errlen);
}

bool em3_npy_write_i32(const char *path, int rank, const int64_t *shape, const int32_t *data,
                       char *err, size_t errlen) {
    return write_array(path, EM3_NPY_I32, rank, shape, data, err, errlen);
}
