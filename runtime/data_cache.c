/* runtime/data_cache.c — the preprocessed columnar cache: one file per dataset, written through a
 * temporary file (fsync, rename) and mapped read-only. A 64-byte header points at a text
 * manifest that lists every section (column, item table, vocabulary) with its XXH64 checksum;
 * opening verifies all of them, so a damaged cache is rebuilt, never read. Also the fingerprint
 * of the sources (description + each file's size, mtime and checksum) that decides reuse. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data_internal.h"
#include "ir/support.h"

#define CACHE_MAGIC "EM3CACHE"
#define CACHE_VERSION 1
#define HEADER_BYTES 64
#define ALIGN 64

/* ---- XXH64 ----------------------------------------------------------------------------------- */

static const uint64_t P1 = 0x9E3779B185EBCA87ULL, P2 = 0xC2B2AE3D27D4EB4FULL,
                      P3 = 0x165667B19E3779F9ULL, P4 = 0x85EBCA77C2B2AE63ULL,
                      P5 = 0x27D4EB2F165667C5ULL;

static uint64_t rotl(uint64_t x, int r) { return x << r | x >> (64 - r); }
static uint64_t rd64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8); /* little-endian hosts only, as npy.c */
    return v;
}
static uint32_t rd32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t xround(uint64_t acc, uint64_t in) { return rotl(acc + in * P2, 31) * P1; }
static uint64_t xmerge(uint64_t h, uint64_t v) { return (h ^ xround(0, v)) * P1 + P4; }

void em3_xxh64_init(em3_xxh64_state *s, uint64_t seed) {
    *s = (em3_xxh64_state){.seed = seed, .v = {seed + P1 + P2, seed + P2, seed, seed - P1}};
}

void em3_xxh64_update(em3_xxh64_state *s, const void *data, size_t n) {
    const unsigned char *p = data, *end = p + n;
    s->total += n;
    if (s->memsize + n < 32) {
        memcpy(s->mem + s->memsize, p, n);
        s->memsize += n;
        return;
    }
    if (s->memsize) {
        size_t fill = 32 - s->memsize;
        memcpy(s->mem + s->memsize, p, fill);
        for (int i = 0; i < 4; i++) s->v[i] = xround(s->v[i], rd64(s->mem + 8 * i));
        p += fill;
        s->memsize = 0;
    }
    for (; p + 32 <= end; p += 32)
        for (int i = 0; i < 4; i++) s->v[i] = xround(s->v[i], rd64(p + 8 * i));
    s->memsize = (size_t)(end - p);
    memcpy(s->mem, p, s->memsize);
}

uint64_t em3_xxh64_digest(const em3_xxh64_state *s) {
    uint64_t h;
    if (s->total >= 32) {
        h = rotl(s->v[0], 1) + rotl(s->v[1], 7) + rotl(s->v[2], 12) + rotl(s->v[3], 18);
        for (int i = 0; i < 4; i++) h = xmerge(h, s->v[i]);
    } else {
        h = s->seed + P5;
    }
    h += s->total;
    const unsigned char *p = s->mem, *end = p + s->memsize;
    for (; p + 8 <= end; p += 8) h = rotl(h ^ xround(0, rd64(p)), 27) * P1 + P4;
    if (p + 4 <= end) {
        h = rotl(h ^ (uint64_t)rd32(p) * P1, 23) * P2 + P3;
        p += 4;
    }
    for (; p < end; p++) h = rotl(h ^ *p * P5, 11) * P1;
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    return h ^ (h >> 32);
}

uint64_t em3_xxh64(const void *p, size_t n, uint64_t seed) {
    em3_xxh64_state s;
    em3_xxh64_init(&s, seed);
    em3_xxh64_update(&s, p, n);
    return em3_xxh64_digest(&s);
}

/* ---- the fingerprint --------------------------------------------------------------------------- */

static bool stamp_file(const char *path, const char *origin, int line, em3_source_stamp *st,
                       char *err, size_t errlen) {
    if (strchr(path, '\n')) return em3_data_fail(err, errlen, "%s:%d: a file name with a newline", origin, line);
    int fd = open(path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        const char *why = fd < 0 ? strerror(errno) : "not a regular file";
        if (fd >= 0) close(fd);
        return line ? em3_data_fail(err, errlen, "%s: %s (named at %s:%d)", path, why, origin, line)
                    : em3_data_fail(err, errlen, "%s: %s", path, why);
    }
    em3_xxh64_state h;
    em3_xxh64_init(&h, 0);
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = em3_xmalloc(CHUNK);
    ssize_t k;
    while ((k = read(fd, buf, CHUNK)) > 0) em3_xxh64_update(&h, buf, (size_t)k);
    int e = errno;
    free(buf);
    close(fd);
    if (k < 0) return em3_data_fail(err, errlen, "%s: %s", path, strerror(e));
    *st = (em3_source_stamp){em3_xstrdup(path), sb.st_size,
                             (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec,
                             em3_xxh64_digest(&h)};
    return true;
}

void em3_source_stamps_free(em3_source_stamp *st, int n) {
    for (int i = 0; i < n; i++) free(st[i].path);
    free(st);
}

char *em3_data_npy_path(const char *dir, const char *column) {
    char *p = em3_xmalloc(strlen(dir) + strlen(column) + 6);
    sprintf(p, "%s/%s.npy", dir, column);
    return p;
}

bool em3_data_fingerprint(const em3_data_spec *s, em3_source_stamp **stamps, int *n_stamps,
                          uint64_t *fingerprint, char *err, size_t errlen) {
    /* every file the import reads, with the line of the description that names it */
    int n = 0, cap = 0;
    char **paths = NULL;
    int *lines = NULL, cap_lines = 0;
    const char *files[EM3_SPLIT_COUNT + 1];
    int file_lines[EM3_SPLIT_COUNT + 1], n_files = 0;
    for (int sp = 0; sp < EM3_SPLIT_COUNT; sp++)
        if (s->split_file[sp]) {
            file_lines[n_files] = s->split_line[sp];
            files[n_files++] = s->split_file[sp];
        }
    if (s->data_file) {
        file_lines[n_files] = s->data_line;
        files[n_files++] = s->data_file;
    }
    for (int i = 0; i < n_files + s->n_table; i++) {
        const char *f = i < n_files ? files[i] : s->table[i - n_files].file;
        int line = i < n_files ? file_lines[i] : s->table[i - n_files].line;
        bool dir = i < n_files && em3_data_source_format(s, f) == EM3_FMT_NPY_DIR;
        for (int j = 0; j < (dir ? s->n_feat : 1); j++) {
            EM3_GROW(paths, cap, n + 1);
            EM3_GROW(lines, cap_lines, n + 1);
            paths[n] = dir ? em3_data_npy_path(f, s->feat[j].source) : em3_xstrdup(f);
            lines[n++] = line;
        }
    }
    /* absolute paths: the same dataset named from another folder has the same fingerprint */
    for (int i = 0; i < n; i++) {
        char *abs = realpath(paths[i], NULL);
        if (abs) {
            free(paths[i]);
            paths[i] = abs;
        }
    }
    em3_source_stamp *st = em3_xcalloc((size_t)n + 1, sizeof *st);
    bool ok = true;
    int done = 0;
    for (; ok && done < n; done++) ok = stamp_file(paths[done], s->origin, lines[done], &st[done], err, errlen);
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
    free(lines);
    if (!ok) {
        em3_source_stamps_free(st, n); /* calloc'ed: the entries not reached hold NULL */
        return false;
    }
    em3_strbuf text = {0};
    em3_sb_printf(&text, "em3 import %d\n%.*s\n", EM3_DATA_IMPORT_VERSION, (int)s->text_len, s->text);
    for (int i = 0; i < n; i++)
        em3_sb_printf(&text, "%s %lld %lld %016" PRIx64 "\n", st[i].path, (long long)st[i].size,
                      (long long)st[i].mtime_ns, st[i].hash);
    *fingerprint = em3_xxh64(text.data, text.len, 0);
    em3_sb_free(&text);
    *stamps = st;
    *n_stamps = n;
    return true;
}

/* ---- writing ------------------------------------------------------------------------------------- */

struct em3_cache_writer {
    char *path;
    em3_afile *out;
    FILE *f;
    uint64_t off;
    em3_strbuf manifest;
};

/* A failed write is recorded by the stream and reported by the commit. */
static void put(em3_cache_writer *w, const void *data, size_t n) {
    fwrite(data, 1, n, w->f);
    w->off += n;
}

static void pad(em3_cache_writer *w) {
    static const char zeros[ALIGN];
    if (w->off % ALIGN) put(w, zeros, ALIGN - w->off % ALIGN);
}

em3_cache_writer *em3_cache_begin(const char *path, char *err, size_t errlen) {
    em3_afile *out = em3_afile_open(path);
    if (!out) {
        em3_data_fail(err, errlen, "%s: cannot create the cache: %s", path, strerror(errno));
        return NULL;
    }
    em3_cache_writer *w = em3_xcalloc(1, sizeof *w);
    w->path = em3_xstrdup(path);
    w->out = out;
    w->f = em3_afile_stream(out);
    char header[HEADER_BYTES] = {0}; /* written for real by commit */
    put(w, header, sizeof header);
    em3_sb_printf(&w->manifest, "em3-data-cache %d\n", CACHE_VERSION);
    return w;
}

static int64_t row_elems(const em3_column *c) {
    int64_t e = 1;
    for (int i = 0; i < c->rank; i++) e *= c->dim[i];
    return e;
}

static const char *const split_names[] = {"train", "valid", "test", "item"};

bool em3_cache_add_column(em3_cache_writer *w, int split, const em3_column *c, const char *shares) {
    EM3_ASSERT(split >= 0 && split <= EM3_SPLIT_COUNT && c->rank >= 0 && c->rank <= 4, "column %s", c->name);
    pad(w);
    uint64_t off = w->off, bytes = (uint64_t)(c->rows * row_elems(c)) * 4;
    put(w, c->data, bytes);
    em3_sb_printf(&w->manifest, "column %s %s %s %s %s %lld %lld %d", split_names[split], c->name,
                  em3_col_kind_name(c->kind), em3_dtype_name(c->dtype), shares ? shares : "-",
                  (long long)c->vocab, (long long)c->rows, c->rank);
    for (int i = 0; i < 4; i++) em3_sb_printf(&w->manifest, " %lld", (long long)(i < c->rank ? c->dim[i] : 0));
    em3_sb_printf(&w->manifest, " %" PRIu64 " %" PRIu64 " %016" PRIx64 "\n", off, bytes,
                  em3_xxh64(c->data, bytes, 0));
    return !ferror(w->f);
}

bool em3_cache_add_vocab(em3_cache_writer *w, const char *name, char *const *tokens, int64_t n) {
    uint64_t *offsets = em3_xmalloc(sizeof *offsets * (size_t)(n + 2));
    offsets[0] = (uint64_t)n;
    uint64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        offsets[i + 1] = at;
        at += strlen(tokens[i]) + 1;
    }
    offsets[n + 1] = at;
    pad(w);
    uint64_t off = w->off, bytes = sizeof *offsets * (uint64_t)(n + 2) + at;
    em3_xxh64_state h;
    em3_xxh64_init(&h, 0);
    put(w, offsets, sizeof *offsets * (size_t)(n + 2));
    em3_xxh64_update(&h, offsets, sizeof *offsets * (size_t)(n + 2));
    for (int64_t i = 0; i < n; i++) {
        put(w, tokens[i], strlen(tokens[i]) + 1);
        em3_xxh64_update(&h, tokens[i], strlen(tokens[i]) + 1);
    }
    free(offsets);
    em3_sb_printf(&w->manifest, "vocab %s %lld %" PRIu64 " %" PRIu64 " %016" PRIx64 "\n", name,
                  (long long)n, off, bytes, em3_xxh64_digest(&h));
    return !ferror(w->f);
}

void em3_cache_abort(em3_cache_writer *w) {
    if (!w) return;
    em3_afile_abort(w->out);
    em3_sb_free(&w->manifest);
    free(w->path);
    free(w);
}

/* The header: magic, version, where the manifest is and its checksum, the file's length, and
 * the checksum of these fields. */
static void make_header(unsigned char *h, uint64_t moff, uint64_t mlen, uint64_t mhash, uint64_t flen) {
    memset(h, 0, HEADER_BYTES);
    memcpy(h, CACHE_MAGIC, 8);
    uint64_t v[5] = {CACHE_VERSION, moff, mlen, mhash, flen};
    memcpy(h + 8, v, sizeof v);
    uint64_t hh = em3_xxh64(h, 48, 0);
    memcpy(h + 48, &hh, 8);
}

bool em3_cache_commit(em3_cache_writer *w, const char *name, const char *label, const char *group,
                      const char *item, const em3_source_stamp *st, int n_st, uint64_t fingerprint,
                      char *err, size_t errlen) {
    em3_strbuf *m = &w->manifest;
    em3_sb_printf(m, "name %s\nfingerprint %016" PRIx64 "\nroles %s %s %s\n", name, fingerprint,
                  label ? label : "-", group ? group : "-", item ? item : "-");
    for (int i = 0; i < n_st; i++)
        em3_sb_printf(m, "source %lld %lld %016" PRIx64 " %s\n", (long long)st[i].size,
                      (long long)st[i].mtime_ns, st[i].hash, st[i].path);
    em3_sb_printf(m, "end\n");
    pad(w);
    uint64_t moff = w->off;
    put(w, m->data, m->len);
    unsigned char header[HEADER_BYTES];
    make_header(header, moff, m->len, em3_xxh64(m->data, m->len, 0), w->off);
    /* the header goes first, now that it is known */
    int e = fseeko(w->f, 0, SEEK_SET) == 0 ? 0 : errno;
    if (e) {
        em3_afile_abort(w->out);
    } else {
        fwrite(header, 1, sizeof header, w->f);
        e = em3_afile_commit(w->out);
    }
    if (e) em3_data_fail(err, errlen, "%s: cannot write the cache: %s", w->path, strerror(e));
    em3_sb_free(m);
    free(w->path);
    free(w);
    return !e;
}

bool em3_write_file_atomic(const char *path, const void *data, size_t n, char *err, size_t errlen) {
    em3_afile *out = em3_afile_open(path);
    int e = out ? 0 : errno;
    if (out) {
        fwrite(data, 1, n, em3_afile_stream(out));
        e = em3_afile_commit(out);
    }
    return e ? em3_data_fail(err, errlen, "%s: cannot write: %s", path, strerror(e)) : true;
}

/* ---- reading ---------------------------------------------------------------------------------- */

void em3_cache_close(em3_cache *c) {
    if (c->map) munmap(c->map, c->map_len);
    for (int i = 0; i < c->n_col; i++) {
        free(c->col[i].split);
        free(c->col[i].name);
        free(c->col[i].shares);
    }
    for (int i = 0; i < c->n_vocab; i++) free(c->vocab[i].name);
    free(c->col);
    free(c->vocab);
    free(c->name);
    free(c->label);
    free(c->group);
    free(c->item);
    em3_source_stamps_free(c->stamps, c->n_stamps);
    *c = (em3_cache){0};
}

/* Splits a manifest line into at most `max` words; the last takes the rest of the line. */
static int words(char *line, char **w, int max) {
    int n = 0;
    while (*line && n < max) {
        while (*line == ' ') line++;
        if (!*line) break;
        w[n++] = line;
        if (n == max) break;
        while (*line && *line != ' ') line++;
        if (*line) *line++ = 0;
    }
    return n;
}

static bool num(const char *s, int64_t *v) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    *v = x;
    return *s && !*end && !errno && x >= 0;
}

static bool hex(const char *s, uint64_t *v) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 16);
    *v = x;
    return *s && !*end && !errno;
}

static char *dash_null(const char *s) { return strcmp(s, "-") ? em3_xstrdup(s) : NULL; }

/* A section [off, off + bytes) inside the data part, aligned, with the checksum it should have. */
static bool section_ok(const em3_cache *c, uint64_t moff, int64_t off, int64_t bytes, uint64_t hash) {
    return off >= HEADER_BYTES && off % ALIGN == 0 && (uint64_t)off <= moff &&
           (uint64_t)bytes <= moff - (uint64_t)off &&
           em3_xxh64((const char *)c->map + off, (size_t)bytes, 0) == hash;
}

static bool parse_column(em3_cache *c, char **w, int nw, uint64_t moff) {
    /* column SPLIT NAME KIND DTYPE SHARES VOCAB ROWS RANK D0 D1 D2 D3 OFFSET BYTES HASH */
    if (nw != 16) return false;
    em3_cache_column col = {0};
    em3_column *k = &col.col;
    int64_t v[9];
    for (int i = 0; i < 9; i++)
        if (!num(w[6 + i], &v[i])) return false;
    uint64_t hash;
    em3_dtype dt;
    em3_col_kind kind;
    if (!hex(w[15], &hash) || !em3_col_kind_parse(w[3], &kind) || !em3_dtype_parse(w[4], &dt) ||
        v[2] > 4)
        return false;
    int split = 0;
    while (split <= EM3_SPLIT_COUNT && strcmp(w[1], split_names[split])) split++;
    if (split > EM3_SPLIT_COUNT) return false;
    *k = (em3_column){.kind = kind, .dtype = dt, .vocab = v[0], .rows = v[1], .rank = (int)v[2]};
    int64_t elems = 1;
    for (int i = 0; i < 4; i++) {
        k->dim[i] = v[3 + i];
        if (i < k->rank && (k->dim[i] <= 0 || __builtin_mul_overflow(elems, k->dim[i], &elems))) return false;
    }
    int64_t off = v[7], bytes = v[8], want;
    if (__builtin_mul_overflow(elems, k->rows, &want) || __builtin_mul_overflow(want, 4, &want) ||
        want != bytes || !section_ok(c, moff, off, bytes, hash))
        return false;
    k->data = (const char *)c->map + off;
    col.split = em3_xstrdup(w[1]);
    col.name = em3_xstrdup(w[2]);
    col.shares = dash_null(w[5]);
    k->name = col.name;
    k->shares = col.shares;
    c->col = em3_xrealloc(c->col, sizeof *c->col * (size_t)(c->n_col + 1));
    c->col[c->n_col++] = col;
    return true;
}

static bool parse_vocab(em3_cache *c, char **w, int nw, uint64_t moff) {
    int64_t count, off, bytes;
    uint64_t hash;
    if (nw != 6 || !num(w[2], &count) || !num(w[3], &off) || !num(w[4], &bytes) || !hex(w[5], &hash) ||
        !section_ok(c, moff, off, bytes, hash))
        return false;
    const char *base = (const char *)c->map + off;
    uint64_t n;
    memcpy(&n, base, 8);
    int64_t head = 8 * (count + 2);
    if (n != (uint64_t)count || head > bytes) return false;
    const uint64_t *offsets = (const uint64_t *)(base + 8);
    const char *blob = base + head;
    uint64_t blen = (uint64_t)(bytes - head);
    if (offsets[count] != blen) return false;
    for (int64_t i = 0; i < count; i++)
        if (offsets[i] >= offsets[i + 1] || blob[offsets[i + 1] - 1] != 0) return false;
    c->vocab = em3_xrealloc(c->vocab, sizeof *c->vocab * (size_t)(c->n_vocab + 1));
    c->vocab[c->n_vocab++] = (em3_cache_vocab){em3_xstrdup(w[1]), count, offsets, blob};
    return true;
}

static bool parse_manifest(em3_cache *c, char *text, uint64_t moff) {
    bool ended = false, first = true;
    for (char *line = text, *next; line && *line && !ended; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        char *w[17]; /* one more than a column line has, so that extra words show */
        bool source = !strncmp(line, "source ", 7);
        int nw = words(line, w, source ? 5 : 17);
        bool ok = nw > 0;
        if (ok && first) {
            ok = nw == 2 && !strcmp(w[0], "em3-data-cache") && atoi(w[1]) == CACHE_VERSION;
            first = false;
        } else if (ok && !strcmp(w[0], "column")) {
            ok = parse_column(c, w, nw, moff);
        } else if (ok && !strcmp(w[0], "vocab")) {
            ok = parse_vocab(c, w, nw, moff);
        } else if (ok && !strcmp(w[0], "name") && nw == 2) {
            c->name = em3_xstrdup(w[1]);
        } else if (ok && !strcmp(w[0], "fingerprint") && nw == 2) {
            ok = hex(w[1], &c->fingerprint);
        } else if (ok && !strcmp(w[0], "roles") && nw == 4) {
            c->label = dash_null(w[1]);
            c->group = dash_null(w[2]);
            c->item = dash_null(w[3]);
        } else if (ok && source && nw == 5) {
            em3_source_stamp s = {0};
            ok = num(w[1], &s.size) && num(w[2], &s.mtime_ns) && hex(w[3], &s.hash);
            s.path = em3_xstrdup(w[4]);
            c->stamps = em3_xrealloc(c->stamps, sizeof *c->stamps * (size_t)(c->n_stamps + 1));
            c->stamps[c->n_stamps++] = s;
        } else if (ok && !strcmp(w[0], "end") && nw == 1) {
            ended = true;
        } else {
            ok = false;
        }
        if (!ok) return false;
    }
    return ended && c->name;
}

bool em3_cache_open(const char *path, em3_cache *c, char *err, size_t errlen) {
    *c = (em3_cache){0};
    int fd = open(path, O_RDONLY);
    if (fd < 0) return em3_data_fail(err, errlen, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < HEADER_BYTES) {
        close(fd);
        return em3_data_fail(err, errlen, "%s: damaged (shorter than its header)", path);
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return em3_data_fail(err, errlen, "%s: cannot map: %s", path, strerror(errno));
    c->map = m;
    c->map_len = (size_t)st.st_size;
    const unsigned char *h = m;
    uint64_t v[5], hh;
    memcpy(v, h + 8, sizeof v);
    memcpy(&hh, h + 48, 8);
    if (memcmp(h, CACHE_MAGIC, 8) || em3_xxh64(h, 48, 0) != hh) {
        em3_cache_close(c);
        return em3_data_fail(err, errlen, "%s: damaged header", path);
    }
    uint64_t moff = v[1], mlen = v[2];
    if (v[0] != CACHE_VERSION || v[4] != (uint64_t)st.st_size || moff > v[4] || mlen > v[4] - moff ||
        em3_xxh64(h + moff, mlen, 0) != v[3]) {
        em3_cache_close(c);
        return em3_data_fail(err, errlen, "%s: damaged, truncated or from another version", path);
    }
    char *text = em3_xmalloc(mlen + 1);
    memcpy(text, h + moff, mlen);
    text[mlen] = 0;
    bool ok = parse_manifest(c, text, moff);
    free(text);
    if (!ok) {
        em3_cache_close(c);
        return em3_data_fail(err, errlen, "%s: damaged (a section does not match its checksum)", path);
    }
    return true;
}
