/* tests/unit/test_npy.c — the .npy reader and writer: round trips, every header form NumPy
 * writes (versions, key orders, quoting), every dtype read with the float16 conversion at its
 * edges, and malformed files, each of which must be an error naming the file; and em3_afile,
 * the atomic output every writer goes through, under a write that fails midway. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ir/support.h"
#include "runtime/npy.h"

static char dir[64];

static const char *in_dir(const char *name) {
    static char path[sizeof dir + 256 + 2];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static int make_dir(void **state) {
    (void)state;
    strcpy(dir, "/tmp/em3_npy_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state) {
    (void)state;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(in_dir(e->d_name));
    if (d) closedir(d);
    return rmdir(dir);
}

static void write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(bytes, 1, n, fp), n);
    fclose(fp);
}

/* A .npy file of format `major`.0 with header dict `dict` (unpadded: the reader must not need
 * NumPy's padding) followed by n data bytes. */
static void write_npy(const char *path, int major, const char *dict, const void *data, size_t n) {
    size_t dl = strlen(dict), lsize = major == 1 ? 2 : 4;
    unsigned char *buf = malloc(8 + lsize + dl + n + 1);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    for (size_t i = 0; i < lsize; i++) buf[8 + i] = (unsigned char)(dl >> (8 * i));
    memcpy(buf + 8 + lsize, dict, dl);
    if (n) memcpy(buf + 8 + lsize + dl, data, n);
    write_bytes(path, buf, 8 + lsize + dl + n);
    free(buf);
}

static em3_npy *read_ok(const char *path) {
    char err[512] = "";
    em3_npy *a = em3_npy_read(path, err, sizeof err);
    if (!a) fail_msg("%s", err);
    return a;
}

static void expect_shape(const em3_npy *a, int rank, const int64_t *shape) {
    assert_int_equal(a->rank, rank);
    for (int i = 0; i < rank; i++) assert_int_equal(a->shape[i], shape[i]);
}

/* ---- round trips ----------------------------------------------------------------------------- */

static void test_round_trips(void **state) {
    (void)state;
    char err[512];
    const double d[6] = {1.5, -2, 0, 1e300, -1e-300, 3.141592653589793};
    const float f[4] = {0.1f, -0.0f, 65504, 1e-40f};
    const int32_t i[3] = {INT32_MIN, 0, INT32_MAX};
    const int64_t s23[] = {2, 3}, s4[] = {4}, s3[] = {3}, s203[] = {2, 0, 3};
    assert_true(em3_npy_write_f64(in_dir("d.npy"), 2, s23, d, err, sizeof err));
    assert_true(em3_npy_write_f32(in_dir("f.npy"), 1, s4, f, err, sizeof err));
    assert_true(em3_npy_write_i32(in_dir("i.npy"), 1, s3, i, err, sizeof err));
    assert_true(em3_npy_write_i32(in_dir("scalar.npy"), 0, NULL, i, err, sizeof err));
    assert_true(em3_npy_write_f64(in_dir("empty.npy"), 3, s203, d, err, sizeof err));

    em3_npy *a = read_ok(in_dir("d.npy"));
    assert_int_equal(a->dtype, EM3_NPY_F64);
    expect_shape(a, 2, s23);
    double dv[6];
    em3_npy_to_f64(a, dv);
    assert_memory_equal(dv, d, sizeof d);
    em3_npy_free(a);

    a = read_ok(in_dir("f.npy"));
    assert_int_equal(a->dtype, EM3_NPY_F32);
    float fv[4];
    em3_npy_to_f32(a, fv);
    assert_memory_equal(fv, f, sizeof f); /* including -0 and the subnormal */
    em3_npy_free(a);

    a = read_ok(in_dir("i.npy"));
    assert_int_equal(a->dtype, EM3_NPY_I32);
    int64_t iv[3];
    assert_true(em3_npy_to_i64(a, iv, err, sizeof err));
    for (int k = 0; k < 3; k++) assert_true(iv[k] == i[k]);
    em3_npy_free(a);

    a = read_ok(in_dir("scalar.npy"));
    assert_int_equal(a->rank, 0);
    assert_int_equal(a->numel, 1);
    assert_true(((const int32_t *)a->data)[0] == INT32_MIN);
    em3_npy_free(a);

    a = read_ok(in_dir("empty.npy"));
    expect_shape(a, 3, s203);
    assert_int_equal(a->numel, 0);
    em3_npy_free(a);

    /* NumPy's layout: version 1.0, the header padded to 64 bytes ending in a newline */
    FILE *fp = fopen(in_dir("d.npy"), "rb");
    unsigned char h[10];
    assert_int_equal(fread(h, 1, 10, fp), 10);
    fclose(fp);
    assert_memory_equal(h, "\x93NUMPY\x01\x00", 8);
    assert_int_equal((10 + h[8] + 256 * h[9]) % 64, 0);
}

static void test_write_is_atomic(void **state) {
    (void)state;
    char err[512];
    const double one[1] = {1}, two[2] = {2, 3};
    const int64_t s1[] = {1}, s2[] = {2};
    assert_true(em3_npy_write_f64(in_dir("w.npy"), 1, s1, one, err, sizeof err));
    assert_true(em3_npy_write_f64(in_dir("w.npy"), 1, s2, two, err, sizeof err)); /* replaces */
    em3_npy *a = read_ok(in_dir("w.npy"));
    assert_int_equal(a->numel, 2);
    em3_npy_free(a);
    int files = 0; /* no temp file left behind */
    DIR *d = opendir(dir);
    for (struct dirent *e; (e = readdir(d));) files += strstr(e->d_name, "w.npy") != NULL;
    closedir(d);
    assert_int_equal(files, 1);

    /* a missing folder: an error naming the path, and nothing written */
    char path[300];
    snprintf(path, sizeof path, "%s/no/such/dir/x.npy", dir);
    assert_false(em3_npy_write_f64(path, 1, s1, one, err, sizeof err));
    assert_non_null(strstr(err, path));
    const int64_t bad[] = {-1};
    assert_false(em3_npy_write_f64(in_dir("bad.npy"), 1, bad, one, err, sizeof err));
    assert_non_null(strstr(err, "bad shape"));
}

static int files_named(const char *part) {
    int files = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; (e = readdir(d));) files += strstr(e->d_name, part) != NULL;
    closedir(d);
    return files;
}

static char *slurp(const char *path) {
    static char buf[64];
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    return buf;
}

/* A write that fails midway (here the file size limit, as a full disk would) must leave the
 * old file as it was and no temporary behind, and say why. */
static void test_atomic_output(void **state) {
    (void)state;
    em3_afile *a = em3_afile_open(in_dir("a.txt"));
    assert_non_null(a);
    fputs("old", em3_afile_stream(a));
    assert_int_equal(em3_afile_commit(a), 0);
    struct stat st;
    assert_int_equal(stat(in_dir("a.txt"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);

    a = em3_afile_open(in_dir("a.txt")); /* abandoned: nothing changes */
    fputs("new", em3_afile_stream(a));
    em3_afile_abort(a);
    assert_string_equal(slurp(in_dir("a.txt")), "old");
    assert_int_equal(files_named("a.txt"), 1);

    struct rlimit old_limit, small;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
    small = old_limit;
    small.rlim_cur = 4096;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    static char big[1 << 16];
    a = em3_afile_open(in_dir("a.txt"));
    fwrite(big, 1, sizeof big, em3_afile_stream(a));
    int e = em3_afile_commit(a);
    char err[512];
    const int64_t shape[] = {(int64_t)sizeof big / 8};
    bool npy_ok = em3_npy_write_f64(in_dir("a.npy"), 1, shape, (const double *)big, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old_limit);
    signal(SIGXFSZ, old_handler);
    assert_int_equal(e, EFBIG);
    assert_string_equal(slurp(in_dir("a.txt")), "old");
    assert_int_equal(files_named("a.txt"), 1);
    assert_false(npy_ok);
    assert_non_null(strstr(err, "cannot write"));
    assert_int_equal(files_named("a.npy"), 0);

    /* through a link the target is replaced; a device is written in place and stays one */
    assert_int_equal(symlink("a.txt", in_dir("link.txt")), 0);
    a = em3_afile_open(in_dir("link.txt"));
    fputs("via link", em3_afile_stream(a));
    assert_int_equal(em3_afile_commit(a), 0);
    assert_string_equal(slurp(in_dir("a.txt")), "via link");
    assert_int_equal(lstat(in_dir("link.txt"), &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    a = em3_afile_open("/dev/null");
    assert_non_null(a);
    fputs("nothing", em3_afile_stream(a));
    assert_int_equal(em3_afile_commit(a), 0);
    assert_int_equal(stat("/dev/null", &st), 0);
    assert_true(S_ISCHR(st.st_mode));
    if ((a = em3_afile_open("/dev/full"))) { /* a full disk, where the device exists */
        fputs("x", em3_afile_stream(a));
        assert_int_equal(em3_afile_commit(a), ENOSPC);
    }

    errno = 0; /* a folder that does not exist */
    char path[300];
    snprintf(path, sizeof path, "%s/no/such/a.txt", dir);
    assert_null(em3_afile_open(path));
    assert_int_equal(errno, ENOENT);
}

/* ---- header forms ---------------------------------------------------------------------------- */

static void test_header_forms(void **state) {
    (void)state;
    const float v[6] = {1, 2, 3, 4, 5, 6};
    static const struct {
        int major;
        const char *dict;
        int rank;
        int64_t shape[2];
    } rows[] = {
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 2, {2, 3}},
        {1, "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}", 2, {2, 3}},
        {1, "{'fortran_order':False,'descr':'<f4','shape':(6,)}", 1, {6}},
        {1, "{\"descr\": \"<f4\", \"shape\": (2L, 3L), \"fortran_order\": False}   \n", 2, {2, 3}},
        {2, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }\n", 1, {6}},
        {3, "{'shape': ( 2 , 3 ,), 'descr': '<f4', 'fortran_order': False, }", 2, {2, 3}},
    };
    for (int i = 0; i < (int)(sizeof rows / sizeof rows[0]); i++) {
        write_npy(in_dir("h.npy"), rows[i].major, rows[i].dict, v, sizeof v);
        em3_npy *a = read_ok(in_dir("h.npy"));
        expect_shape(a, rows[i].rank, rows[i].shape);
        float got[6];
        em3_npy_to_f32(a, got);
        assert_memory_equal(got, v, sizeof v);
        em3_npy_free(a);
    }
}

/* ---- dtypes ---------------------------------------------------------------------------------- */

/* IEEE binary16 at its edges: signed zeros, the smallest subnormal and normal, the largest
 * finite, infinities and NaN, and a value that rounds (1/3). */
static void test_float16(void **state) {
    (void)state;
    static const struct {
        uint16_t bits;
        double want;
    } rows[] = {
        {0x0000, 0.0},
        {0x8000, -0.0},
        {0x0001, 0x1p-24},        /* smallest subnormal */
        {0x03ff, 1023 * 0x1p-24}, /* largest subnormal */
        {0x8200, -0x1p-15},       /* a negative subnormal */
        {0x0400, 0x1p-14},        /* smallest normal */
        {0x3c00, 1.0},
        {0x3c01, 1.0 + 0x1p-10}, /* one ulp above 1 */
        {0xc000, -2.0},
        {0x3555, 0.333251953125}, /* 1/3 rounded to half */
        {0x7bff, 65504.0},        /* largest finite */
        {0x7c00, INFINITY},
        {0xfc00, -INFINITY},
        {0x7e00, NAN},
        {0xfc01, NAN}, /* a signalling NaN pattern */
    };
    enum { N = sizeof rows / sizeof rows[0] };
    uint16_t bits[N];
    for (int i = 0; i < N; i++) {
        double got = em3_npy_half_to_double(rows[i].bits);
        if (isnan(rows[i].want))
            assert_true(isnan(got));
        else
            assert_true(got == rows[i].want && signbit(got) == signbit(rows[i].want));
        bits[i] = rows[i].bits;
    }
    /* the same through a <f2 file, to double and to float */
    char dict[96];
    snprintf(dict, sizeof dict, "{'descr': '<f2', 'fortran_order': False, 'shape': (%d,), }", N);
    write_npy(in_dir("half.npy"), 1, dict, bits, sizeof bits);
    em3_npy *a = read_ok(in_dir("half.npy"));
    assert_int_equal(a->dtype, EM3_NPY_F16);
    double d[N];
    float f[N];
    em3_npy_to_f64(a, d);
    em3_npy_to_f32(a, f);
    for (int i = 0; i < N; i++) {
        assert_true(isnan(rows[i].want) ? isnan(d[i]) && isnan(f[i])
                                        : d[i] == rows[i].want && f[i] == (float)rows[i].want);
    }
    char err[256];
    int64_t iv[N];
    assert_false(em3_npy_to_i64(a, iv, err, sizeof err)); /* 2^-24 is not an integer */
    assert_non_null(strstr(err, "half.npy: element 2"));
    em3_npy_free(a);
}

static void test_integer_and_bool_dtypes(void **state) {
    (void)state;
    char err[256];
    const unsigned char bytes[4] = {0, 1, 2, 255};
    const int64_t big[3] = {-(1LL << 62), (1LL << 53) + 1, 7}, s22[] = {2, 2};
    static const struct {
        const char *descr;
        em3_npy_dtype dtype;
        double want[4];
    } rows[] = {{"|u1", EM3_NPY_U8, {0, 1, 2, 255}}, {"|b1", EM3_NPY_BOOL, {0, 1, 1, 1}}};
    for (int r = 0; r < 2; r++) {
        char dict[96];
        snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (2, 2)}",
                 rows[r].descr);
        write_npy(in_dir("b.npy"), 1, dict, bytes, 4);
        em3_npy *a = read_ok(in_dir("b.npy"));
        assert_int_equal(a->dtype, rows[r].dtype);
        assert_string_equal(em3_npy_dtype_name(a->dtype), rows[r].descr);
        expect_shape(a, 2, s22);
        double d[4];
        int64_t iv[4];
        em3_npy_to_f64(a, d);
        assert_true(em3_npy_to_i64(a, iv, err, sizeof err));
        for (int i = 0; i < 4; i++)
            assert_true(d[i] == rows[r].want[i] && iv[i] == rows[r].want[i]);
        em3_npy_free(a);
    }
    /* int64 stays exact on the way to int64 (2^53 + 1 has no double) */
    write_npy(in_dir("l.npy"), 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,)}", big,
              sizeof big);
    em3_npy *a = read_ok(in_dir("l.npy"));
    int64_t iv[3];
    assert_true(em3_npy_to_i64(a, iv, err, sizeof err));
    assert_memory_equal(iv, big, sizeof big);
    em3_npy_free(a);
    /* a NaN and a fraction cannot become ids */
    const double bad[2] = {NAN, 0.5};
    write_npy(in_dir("nan.npy"), 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,)}", bad,
              sizeof bad);
    a = read_ok(in_dir("nan.npy"));
    assert_false(em3_npy_to_i64(a, iv, err, sizeof err));
    assert_non_null(strstr(err, "nan.npy: element 0"));
    em3_npy_free(a);
}

/* ---- malformed files ------------------------------------------------------------------------- */

static void expect_read_error(const char *path, const char *want) {
    char err[512] = "";
    em3_npy *a = em3_npy_read(path, err, sizeof err);
    if (a) fail_msg("%s was read; want an error containing \"%s\"", path, want);
    if (strncmp(err, path, strlen(path)) || !strstr(err, want))
        fail_msg("error \"%s\" does not name %s or lacks \"%s\"", err, path, want);
}

static void test_malformed_headers(void **state) {
    (void)state;
    const double data[4] = {0};
    static const struct {
        int major;
        const char *dict;
        size_t data_bytes;
        const char *want;
    } rows[] = {
        {1, "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }", 32, "Fortran-order"},
        {1, "{'descr': '<c16', 'fortran_order': False, 'shape': (2,), }", 32,
         "unsupported dtype '<c16'"},
        {1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8,
         "unsupported dtype '>f4'"},
        {1, "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", 16,
         "unsupported dtype '|O'"},
        {1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8,
         "unsupported dtype"},
        {1,
         "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, "
         "4611686018427387904), }",
         32, "count overflows"},
        {1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1152921504606846976,), }", 32,
         "size overflows"},
        {1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,), }", 32,
         "truncated: the shape needs 8796093022208 bytes"},
        {1, "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }", 32,
         "malformed shape"},
        {1, "{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }", 32, "malformed shape"},
        {1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2, }", 32, "malformed shape"},
        {1,
         "{'descr': '<f8', 'fortran_order': False, 'shape': "
         "(1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,"
         "1,1,1,1,1,1,1,1,1,1,1,1,1), }",
         8, "malformed shape"},
        {1, "{'descr': '<f8', 'fortran_order': False}", 32, "lacks 'shape'"},
        {1, "{'shape': (4,), 'fortran_order': False}", 32, "lacks 'descr'"},
        {1, "{'descr': '<f8', 'shape': (4,)}", 32, "lacks 'fortran_order'"},
        {1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), 'extra': 1}", 32,
         "unknown key 'extra'"},
        {1, "{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (4,)}", 32,
         "given twice"},
        {1, "{'descr': '<f8', 'fortran_order': Maybe, 'shape': (4,)}", 32, "True or False"},
        {1, "['descr', '<f8']", 32, "not a dict"},
        {1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4,)} x", 32, "junk after"},
        {1, "{'descr': '<f8 , 'fortran_order': False, 'shape': (4,)}", 32, "unsupported dtype"},
        {1, "{'descr': '<f8', 'fortran_order': False 'shape': (4,)}", 32, "malformed npy header"},
        {1, "{'descr' '<f8'}", 32, "malformed npy header"},
        {1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", 24,
         "truncated: the shape needs 32"},
        {1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", 32, "8 bytes after"},
        {2, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2)", 32, "malformed npy header"},
    };
    for (int i = 0; i < (int)(sizeof rows / sizeof rows[0]); i++) {
        print_message("  row %d\n", i);
        write_npy(in_dir("bad.npy"), rows[i].major, rows[i].dict, data, rows[i].data_bytes);
        expect_read_error(in_dir("bad.npy"), rows[i].want);
    }
}

static void test_malformed_files(void **state) {
    (void)state;
    static const struct {
        const char *bytes;
        size_t n;
        const char *want;
    } rows[] = {
        {"", 0, "bad magic"},
        {"\x93NUMP", 5, "bad magic"},
        {"\x93NUMPZ\x01\x00\x10\x00", 10, "bad magic"},
        {"PK\x03\x04\x14\x00\x00\x00", 8, "bad magic"}, /* an .npz is a zip */
        {"\x93NUMPY\x04\x00\x10\x00", 10, "unsupported .npy format version 4.0"},
        {"\x93NUMPY\x01\x01\x10\x00", 10, "unsupported .npy format version 1.1"},
        {"\x93NUMPY\x01\x00\x10", 9, "truncated .npy header"},
        {"\x93NUMPY\x02\x00\x10\x00\x00", 11, "truncated .npy header"},
        {"\x93NUMPY\x01\x00\x40\x00{'descr'", 17, "truncated or oversized .npy header"},
        {"\x93NUMPY\x02\x00\xff\xff\xff\xff{}", 14,
         "truncated or oversized .npy header (4294967295"},
    };
    for (int i = 0; i < (int)(sizeof rows / sizeof rows[0]); i++) {
        write_bytes(in_dir("raw.npy"), rows[i].bytes, rows[i].n);
        expect_read_error(in_dir("raw.npy"), rows[i].want);
    }
    expect_read_error(in_dir("missing.npy"), "No such file");
    expect_read_error(dir, "not a regular file");
    assert_int_equal(mkfifo(in_dir("fifo.npy"), 0600), 0); /* must not wait for a writer */
    expect_read_error(in_dir("fifo.npy"), "not a regular file");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_write_is_atomic),
        cmocka_unit_test(test_atomic_output),
        cmocka_unit_test(test_header_forms),
        cmocka_unit_test(test_float16),
        cmocka_unit_test(test_integer_and_bool_dtypes),
        cmocka_unit_test(test_malformed_headers),
        cmocka_unit_test(test_malformed_files),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
