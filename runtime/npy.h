/* runtime/npy.h — NumPy .npy files (format versions 1.0, 2.0 and 3.0), the exchange format for
 * feature tables, test batches and weights shared with the PyTorch peer. Reading checks
 * everything a file says before trusting it: a malformed file is an error naming the file,
 * never a crash or a read past the data. Writing is atomic (temp file, fsync, rename). */
#ifndef EM3_NPY_H
#define EM3_NPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The element types read: <f2 <f4 <f8 <i4 <i8 |u1 |b1 (little-endian, or one byte). */
typedef enum {
    EM3_NPY_F16,
    EM3_NPY_F32,
    EM3_NPY_F64,
    EM3_NPY_I32,
    EM3_NPY_I64,
    EM3_NPY_U8,
    EM3_NPY_BOOL,
} em3_npy_dtype;

#define EM3_NPY_MAX_RANK 32 /* NumPy's own limit */

typedef struct {
    char *path; /* for messages about this array */
    em3_npy_dtype dtype;
    int rank;
    int64_t shape[EM3_NPY_MAX_RANK];
    int64_t numel;
    void *data; /* numel elements of dtype, C order, as stored (little-endian) */
} em3_npy;

/* Reads `path`. Returns NULL with "PATH: reason" in `err` when the file cannot be read or is
 * not a C-order array of a supported dtype. */
em3_npy *em3_npy_read(const char *path, char *err, size_t errlen);
void em3_npy_free(em3_npy *a);

const char *em3_npy_dtype_name(em3_npy_dtype t); /* "<f4", "|b1", ... */

/* The elements converted into `out` (a->numel of them). Floats to float round to nearest;
 * 64-bit integers above 2^53 lose precision as doubles; bools are 0/1. Converting to int64
 * fails for a float that is not a whole number within int64 (message in err). */
void em3_npy_to_f64(const em3_npy *a, double *out);
void em3_npy_to_f32(const em3_npy *a, float *out);
bool em3_npy_to_i64(const em3_npy *a, int64_t *out, char *err, size_t errlen);

/* IEEE binary16 to double (exact: every half is a double). */
double em3_npy_half_to_double(uint16_t h);

/* Write a C-order array of `rank` dims atomically: the file appears complete or not at all.
 * False with "PATH: reason" in err on an I/O error or a bad shape. */
bool em3_npy_write_f64(const char *path, int rank, const int64_t *shape, const double *data,
                       char *err, size_t errlen);
bool em3_npy_write_f32(const char *path, int rank, const int64_t *shape, const float *data,
                       char *err, size_t errlen);
bool em3_npy_write_i32(const char *path, int rank, const int64_t *shape, const int32_t *data,
                       char *err, size_t errlen);

#endif
