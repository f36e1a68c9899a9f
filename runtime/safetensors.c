/* runtime/safetensors.c — the safetensors reader and writer (see safetensors.h). The header is
 * parsed by a small recursive-descent JSON reader that accepts exactly the format's shape
 * (an object of tensor entries and an optional string-to-string __metadata__), so anything
 * else in a header is an error with its byte position rather than something silently skipped. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ir/support.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data are little-endian; this reader copies them as they are"
#endif

struct em3_st_file {
    char *bytes; /* the whole file */
    size_t len;
    em3_st_tensor *t;
    int n, cap;
    em3_st_meta *meta;
    int n_meta, cap_meta;
};

static bool fail(char *err, size_t errlen, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool fail(char *err, size_t errlen, const char *what, const char *fmt, ...) {
    if (!errlen) return false;
    int k = snprintf(err, errlen, "%s: ", what);
    if (k >= 0 && (size_t)k < errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return false;
}

const char *em3_st_dtype_name(int32_t dtype) { return dtype == EM3_MODEL_I32 ? "I32" : "F32"; }

/* ---- the JSON header ---------------------------------------------------------------------- */

typedef struct {
    const char *s;
    size_t n, pos;
    const char *what;
    char *err;
    size_t errlen;
} json;

static bool jerr(json *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool jerr(json *j, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fail(j->err, j->errlen, j->what, "bad header at byte %zu: %s", j->pos + 8, msg);
}

static void skip_ws(json *j) {
    while (j->pos < j->n && strchr(" \t\r\n", j->s[j->pos]) && j->s[j->pos]) j->pos++;
}

static int peek(json *j) {
    skip_ws(j);
    return j->pos < j->n ? (unsigned char)j->s[j->pos] : -1;
}

static bool expect(json *j, char c) {
    if (peek(j) != c) return jerr(j, "expected '%c'", c);
    j->pos++;
    return true;
}

static void put_utf8(em3_strbuf *sb, uint32_t c) {
    if (c < 0x80) {
        em3_sb_putc(sb, (char)c);
    } else if (c < 0x800) {
        em3_sb_putc(sb, (char)(0xc0 | c >> 6));
        em3_sb_putc(sb, (char)(0x80 | (c & 0x3f)));
    } else if (c < 0x10000) {
        em3_sb_putc(sb, (char)(0xe0 | c >> 12));
        em3_sb_putc(sb, (char)(0x80 | ((c >> 6) & 0x3f)));
        em3_sb_putc(sb, (char)(0x80 | (c & 0x3f)));
    } else {
        em3_sb_putc(sb, (char)(0xf0 | c >> 18));
        em3_sb_putc(sb, (char)(0x80 | ((c >> 12) & 0x3f)));
        em3_sb_putc(sb, (char)(0x80 | ((c >> 6) & 0x3f)));
        em3_sb_putc(sb, (char)(0x80 | (c & 0x3f)));
    }
}

static bool hex4(json *j, uint32_t *out) {
    *out = 0;
    for (int k = 0; k < 4; k++, j->pos++) {
        if (j->pos >= j->n) return jerr(j, "unterminated \\u escape");
        char c = j->s[j->pos];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (v < 0) return jerr(j, "bad \\u escape");
        *out = *out << 4 | (uint32_t)v;
    }
    return true;
}

/* A JSON string, unescaped, malloc'ed. NUL (\u0000) is refused: names are C strings. */
static char *jstring(json *j) {
    if (!expect(j, '"')) return NULL;
    em3_strbuf sb = {0};
    em3_sb_printf(&sb, "%s", "");
    for (;;) {
        if (j->pos >= j->n) {
            jerr(j, "unterminated string");
            break;
        }
        unsigned char c = (unsigned char)j->s[j->pos++];
        if (c == '"') return sb.data;
        if (c < 0x20) {
            j->pos--;
            jerr(j, "control character in a string");
            break;
        }
        if (c != '\\') {
            em3_sb_putc(&sb, (char)c);
            continue;
        }
        if (j->pos >= j->n) {
            jerr(j, "unterminated string");
            break;
        }
        char e = j->s[j->pos++];
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
        const char *k = e ? strchr(from, e) : NULL;
        if (k) {
            em3_sb_putc(&sb, to[k - from]);
            continue;
        }
        if (e != 'u') {
            j->pos--;
            jerr(j, "unknown escape '\\%c'", e);
            break;
        }
        uint32_t u;
        if (!hex4(j, &u)) break;
        if (u >= 0xd800 && u < 0xdc00) { /* a surrogate pair */
            uint32_t lo;
            if (j->pos + 2 > j->n || j->s[j->pos] != '\\' || j->s[j->pos + 1] != 'u') {
                jerr(j, "unpaired surrogate in \\u escape");
                break;
            }
            j->pos += 2;
            if (!hex4(j, &lo)) break;
            if (lo < 0xdc00 || lo > 0xdfff) {
                jerr(j, "unpaired surrogate in \\u escape");
                break;
            }
            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
        } else if (u >= 0xdc00 && u < 0xe000) {
            jerr(j, "unpaired surrogate in \\u escape");
            break;
        }
        if (u == 0) {
            jerr(j, "\\u0000 in a string");
            break;
        }
        put_utf8(&sb, u);
    }
    em3_sb_free(&sb);
    return NULL;
}

/* A non-negative integer: digits only (no sign, fraction or exponent), at most 2^63 - 1. */
static bool juint(json *j, int64_t *out) {
    int c = peek(j);
    if (c < '0' || c > '9') return jerr(j, "expected a non-negative integer");
    if (c == '0' && j->pos + 1 < j->n && j->s[j->pos + 1] >= '0' && j->s[j->pos + 1] <= '9')
        return jerr(j, "leading zero in a number");
    int64_t v = 0;
    while (j->pos < j->n && j->s[j->pos] >= '0' && j->s[j->pos] <= '9') {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, j->s[j->pos] - '0', &v))
            return jerr(j, "number too large");
        j->pos++;
    }
    if (j->pos < j->n && strchr(".eE-+", j->s[j->pos]) && j->s[j->pos])
        return jerr(j, "expected a non-negative integer");
    *out = v;
    return true;
}

/* [n, n, ...] into out[0..max); the count in *count. */
static bool juint_list(json *j, int64_t *out, int max, int *count, const char *field) {
    if (!expect(j, '[')) return false;
    *count = 0;
    if (peek(j) == ']') {
        j->pos++;
        return true;
    }
    for (;;) {
        if (*count == max) return jerr(j, "%s has more than %d entries", field, max);
        if (!juint(j, &out[(*count)++])) return false;
        int c = peek(j);
        j->pos++;
        if (c == ']') return true;
        if (c != ',') {
            j->pos--;
            return jerr(j, "expected ',' or ']' in %s", field);
        }
    }
}

/* Calls entry(key) for each member of an object; entry parses the value and owns the key. */
static bool jobject(json *j, bool (*entry)(json *j, char *key, void *ctx), void *ctx) {
    if (!expect(j, '{')) return false;
    if (peek(j) == '}') {
        j->pos++;
        return true;
    }
    for (;;) {
        if (peek(j) != '"') return jerr(j, "expected a string key");
        char *key = jstring(j);
        if (!key) return false;
        if (!expect(j, ':')) {
            free(key);
            return false;
        }
        if (!entry(j, key, ctx)) return false; /* entry() owns the key */
        int c = peek(j);
        j->pos++;
        if (c == '}') return true;
        if (c != ',') {
            j->pos--;
            return jerr(j, "expected ',' or '}'");
        }
    }
}

static bool meta_entry(json *j, char *key, void *ctx) {
    em3_st_file *f = ctx;
    char *value = NULL;
    if (peek(j) != '"')
        jerr(j, "__metadata__ values must be strings");
    else
        value = jstring(j);
    if (!value) {
        free(key);
        return false;
    }
    EM3_GROW(f->meta, f->cap_meta, f->n_meta + 1);
    f->meta[f->n_meta++] = (em3_st_meta){key, value};
    return true;
}

typedef struct {
    em3_st_tensor *t;
    int64_t begin, end;
    unsigned seen; /* bit 0 dtype, 1 shape, 2 data_offsets */
} tensor_ctx;

/* safetensors' other dtypes: named in the error, so the user knows to convert. */
static const char *const other_dtypes[] = {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16",
                                           "F16", "BF16", "U32", "F64", "I64", "U64", NULL};

static bool tensor_field(json *j, char *key, void *vctx) {
    tensor_ctx *c = vctx;
    static const char *const fields[] = {"dtype", "shape", "data_offsets"};
    int k = 0;
    while (k < 3 && strcmp(fields[k], key)) k++;
    bool ok = false;
    if (k == 3) {
        jerr(j, "tensor '%s': unknown field '%s'", c->t->name, key);
    } else if (c->seen & 1u << k) {
        jerr(j, "tensor '%s': field '%s' given twice", c->t->name, key);
    } else if (k == 0) {
        char *dt = NULL;
        if (peek(j) != '"') {
            jerr(j, "tensor '%s': dtype must be a string", c->t->name);
        } else if (!(dt = jstring(j))) {
            /* jstring said why */
        } else if (!strcmp(dt, "F32") || !strcmp(dt, "I32")) {
            c->t->dtype = dt[0] == 'F' ? EM3_MODEL_F32 : EM3_MODEL_I32;
            ok = true;
        } else {
            bool known = false;
            for (int i = 0; other_dtypes[i]; i++) known |= !strcmp(other_dtypes[i], dt);
            jerr(j, "tensor '%s': %s dtype '%s' (EM3 reads F32 and I32)", c->t->name,
                 known ? "unsupported" : "unknown", dt);
        }
        free(dt);
    } else if (k == 1) {
        ok = juint_list(j, c->t->shape, EM3_MODEL_MAX_RANK, &c->t->rank, "shape");
    } else {
        int64_t off[3];
        int n = 0;
        ok = juint_list(j, off, 3, &n, "data_offsets");
        if (ok && n != 2) ok = jerr(j, "tensor '%s': data_offsets needs [begin, end]", c->t->name);
        if (ok) c->begin = off[0], c->end = off[1];
    }
    c->seen |= 1u << k;
    free(key);
    return ok;
}

typedef struct {
    em3_st_file *f;
    int64_t *begin, *end; /* per tensor */
    bool has_meta;
} header_ctx;

static bool header_entry(json *j, char *key, void *vctx) {
    header_ctx *h = vctx;
    em3_st_file *f = h->f;
    if (!strcmp(key, "__metadata__")) {
        free(key);
        if (h->has_meta) return jerr(j, "__metadata__ given twice");
        h->has_meta = true;
        return jobject(j, meta_entry, f);
    }
    if (!*key) {
        free(key);
        return jerr(j, "a tensor with an empty name");
    }
    EM3_GROW(f->t, f->cap, f->n + 1);
    h->begin = em3_xrealloc(h->begin, sizeof(int64_t) * (size_t)f->cap);
    h->end = em3_xrealloc(h->end, sizeof(int64_t) * (size_t)f->cap);
    em3_st_tensor *t = &f->t[f->n++];
    memset(t, 0, sizeof *t);
    t->name = key;
    tensor_ctx c = {t, 0, 0, 0};
    if (!jobject(j, tensor_field, &c)) return false;
    static const char *const fields[] = {"dtype", "shape", "data_offsets"};
    for (int k = 0; k < 3; k++)
        if (!(c.seen & 1u << k)) return jerr(j, "tensor '%s' has no %s", key, fields[k]);
    h->begin[f->n - 1] = c.begin;
    h->end[f->n - 1] = c.end;
    return true;
}

/* ---- checks over the whole header ----------------------------------------------------------- */

typedef struct {
    const char *name;
    int64_t begin, end;
} span;

static int by_name(const void *a, const void *b) { return strcmp(((const span *)a)->name, ((const span *)b)->name); }

static int by_begin(const void *a, const void *b) {
    const span *x = a, *y = b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

static int by_key(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorting, not pairwise comparison: a 100 MB header may hold millions of keys. */
static bool unique_meta(const em3_st_file *f, const char *what, char *err, size_t errlen) {
    const char **keys = em3_xmalloc(sizeof(char *) * (size_t)(f->n_meta ? f->n_meta : 1));
    for (int i = 0; i < f->n_meta; i++) keys[i] = f->meta[i].key;
    qsort(keys, (size_t)f->n_meta, sizeof(char *), by_key);
    bool ok = true;
    for (int i = 1; ok && i < f->n_meta; i++)
        if (!strcmp(keys[i], keys[i - 1])) ok = fail(err, errlen, what, "metadata key '%s' given twice", keys[i]);
    free(keys);
    return ok;
}

static bool check_tensors(em3_st_file *f, const int64_t *begin, const int64_t *end, size_t data_len,
                          const char *what, char *err, size_t errlen) {
    for (int i = 0; i < f->n; i++) {
        em3_st_tensor *t = &f->t[i];
        int64_t numel = 1, bytes;
        for (int d = 0; d < t->rank; d++)
            if (__builtin_mul_overflow(numel, t->shape[d], &numel))
                return fail(err, errlen, what, "tensor '%s': shape too large", t->name);
        if (__builtin_mul_overflow(numel, (int64_t)4, &bytes))
            return fail(err, errlen, what, "tensor '%s': shape too large", t->name);
        if (begin[i] > end[i])
            return fail(err, errlen, what, "tensor '%s': data_offsets [%lld, %lld] run backwards", t->name,
                        (long long)begin[i], (long long)end[i]);
        if ((uint64_t)end[i] > data_len)
            return fail(err, errlen, what,
                        "tensor '%s': data_offsets end %lld is past the data (%zu bytes; truncated file?)",
                        t->name, (long long)end[i], data_len);
        if (end[i] - begin[i] != bytes)
            return fail(err, errlen, what, "tensor '%s': %lld data bytes for a %s tensor of %lld elements (%lld bytes)",
                        t->name, (long long)(end[i] - begin[i]), em3_st_dtype_name(t->dtype),
                        (long long)numel, (long long)bytes);
    }
    span *sp = em3_xmalloc(sizeof(span) * (size_t)(f->n ? f->n : 1));
    bool ok = true;
    for (int i = 0; i < f->n; i++) sp[i] = (span){f->t[i].name, begin[i], end[i]};
    qsort(sp, (size_t)f->n, sizeof(span), by_name);
    for (int i = 1; ok && i < f->n; i++)
        if (!strcmp(sp[i].name, sp[i - 1].name)) ok = fail(err, errlen, what, "tensor '%s' appears twice", sp[i].name);
    qsort(sp, (size_t)f->n, sizeof(span), by_begin);
    for (int i = 1; ok && i < f->n; i++)
        if (sp[i].begin < sp[i - 1].end)
            ok = fail(err, errlen, what, "tensor '%s' overlaps tensor '%s' in the data", sp[i].name, sp[i - 1].name);
    free(sp);
    return ok;
}

em3_st_file *em3_st_parse(const void *bytes, size_t len, const char *what, char *err, size_t errlen) {
    if (len < 8) {
        fail(err, errlen, what, "%zu bytes: too short for a safetensors file (an 8-byte header length comes first)", len);
        return NULL;
    }
    const unsigned char *b = bytes;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
    if (n > EM3_ST_MAX_HEADER || n > len - 8) {
        fail(err, errlen, what, "header length %llu exceeds the file (%zu bytes) or the %llu-byte limit: not a "
             "safetensors file, or truncated", (unsigned long long)n, len, EM3_ST_MAX_HEADER);
        return NULL;
    }
    em3_st_file *f = em3_xcalloc(1, sizeof(*f));
    f->len = len;
    f->bytes = malloc(len);
    if (!f->bytes) {
        fail(err, errlen, what, "cannot allocate %zu bytes", len);
        free(f);
        return NULL;
    }
    memcpy(f->bytes, bytes, len);
    json j = {f->bytes + 8, (size_t)n, 0, what, err, errlen};
    header_ctx h = {f, NULL, NULL, false};
    bool ok = jobject(&j, header_entry, &h);
    if (ok && peek(&j) != -1) ok = jerr(&j, "text after the header's object");
    size_t data_off = 8 + (size_t)n;
    if (ok) ok = unique_meta(f, what, err, errlen) && check_tensors(f, h.begin, h.end, len - data_off, what, err, errlen);
    for (int i = 0; ok && i < f->n; i++) f->t[i].data = f->bytes + data_off + h.begin[i];
    free(h.begin);
    free(h.end);
    if (!ok) {
        em3_st_free(f);
        return NULL;
    }
    return f;
}

em3_st_file *em3_st_read(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        fail(err, errlen, path, "cannot open: %s", strerror(errno));
        if (fd >= 0) close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        fail(err, errlen, path, "not a regular file");
        return NULL;
    }
    size_t len = (size_t)st.st_size;
    char *buf = malloc(len ? len : 1);
    size_t got = 0;
    while (buf && got < len) {
        ssize_t k = read(fd, buf + got, len - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        got += (size_t)k;
    }
    int e = errno;
    close(fd);
    em3_st_file *f = NULL;
    if (!buf)
        fail(err, errlen, path, "cannot allocate %zu bytes", len);
    else if (got < len)
        fail(err, errlen, path, "cannot read: %s", got < len && e ? strerror(e) : "file shrank while reading");
    else
        f = em3_st_parse(buf, len, path, err, errlen);
    free(buf);
    return f;
}

void em3_st_free(em3_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free((char *)f->t[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free((char *)f->meta[i].key);
        free((char *)f->meta[i].value);
    }
    free(f->t);
    free(f->meta);
    free(f->bytes);
    free(f);
}

int em3_st_count(const em3_st_file *f) { return f->n; }
const em3_st_tensor *em3_st_at(const em3_st_file *f, int i) { return &f->t[i]; }

const em3_st_tensor *em3_st_find(const em3_st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

const char *em3_st_meta_find(const em3_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta[i].key, key)) return f->meta[i].value;
    return NULL;
}

/* ---- writing -------------------------------------------------------------------------------- */

static void json_string(em3_strbuf *sb, const char *s) {
    em3_sb_putc(sb, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            em3_sb_printf(sb, "\\%c", *p);
        else if (*p < 0x20)
            em3_sb_printf(sb, "\\u%04x", *p);
        else
            em3_sb_putc(sb, (char)*p);
    }
    em3_sb_putc(sb, '"');
}

bool em3_st_write(const char *path, const em3_st_tensor *t, int n, const em3_st_meta *meta,
                  int n_meta, char *err, size_t errlen) {
    em3_strbuf h = {0};
    em3_sb_putc(&h, '{');
    if (n_meta > 0) {
        json_string(&h, "__metadata__");
        em3_sb_printf(&h, ":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) em3_sb_putc(&h, ',');
            json_string(&h, meta[i].key);
            em3_sb_putc(&h, ':');
            json_string(&h, meta[i].value);
        }
        em3_sb_putc(&h, '}');
    }
    int64_t off = 0;
    int64_t *bytes = em3_xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    bool ok = true;
    for (int i = 0; ok && i < n; i++) {
        int64_t numel = 1;
        if (t[i].rank < 0 || t[i].rank > EM3_MODEL_MAX_RANK) ok = fail(err, errlen, path, "tensor '%s': rank %d", t[i].name, t[i].rank);
        for (int d = 0; ok && d < t[i].rank; d++)
            if (t[i].shape[d] < 0 || __builtin_mul_overflow(numel, t[i].shape[d], &numel))
                ok = fail(err, errlen, path, "tensor '%s': bad shape", t[i].name);
        bytes[i] = numel * 4;
        if (!ok) break;
        if (n_meta > 0 || i) em3_sb_putc(&h, ',');
        json_string(&h, t[i].name);
        em3_sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", em3_st_dtype_name(t[i].dtype));
        for (int d = 0; d < t[i].rank; d++) em3_sb_printf(&h, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        em3_sb_printf(&h, "],\"data_offsets\":[%lld,%lld]}", (long long)off, (long long)(off + bytes[i]));
        off += bytes[i];
    }
    em3_sb_putc(&h, '}');
    while ((8 + h.len) % 8) em3_sb_putc(&h, ' '); /* the data start 8-byte aligned */
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    em3_afile *out = ok ? em3_afile_open(path) : NULL;
    if (ok && !out) ok = fail(err, errlen, path, "cannot write: %s", strerror(errno));
    if (ok) {
        FILE *f = em3_afile_stream(out);
        fwrite(len8, 1, 8, f);
        fwrite(h.data, 1, h.len, f);
        for (int i = 0; i < n; i++) fwrite(t[i].data, 1, (size_t)bytes[i], f);
        int e = em3_afile_commit(out);
        if (e) ok = fail(err, errlen, path, "cannot write: %s", strerror(e));
    }
    free(bytes);
    em3_sb_free(&h);
    return ok;
}
