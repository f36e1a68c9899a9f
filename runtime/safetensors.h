/* runtime/safetensors.h — tensors in Hugging Face's safetensors format (8-byte little-endian
 * header length, JSON header, raw data). The reader checks everything a file says before
 * trusting it (errors name the file and the tensor, never a crash); the writer is atomic. Free
 * of the IR, so that it links into AOT-built models too. */
#ifndef EM3_SAFETENSORS_H
#define EM3_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "em3_model.h"

/* The reader's limit on the JSON header, as Hugging Face's own (100 MB). */
#define EM3_ST_MAX_HEADER 100000000ULL

typedef struct {
    const char *name;
    int32_t dtype; /* EM3_MODEL_F32 or EM3_MODEL_I32: EM3's dtypes, the only ones read */
    int rank;
    int64_t shape[EM3_MODEL_MAX_RANK];
    /* numel × 4 bytes, little-endian. In a file read back it points into the file's bytes
     * and may be unaligned: copy it out with memcpy. */
    const void *data;
} em3_st_tensor;

typedef struct {
    const char *key, *value;
} em3_st_meta;

/* Writes the tensors (and metadata, if any) to `path` atomically: a temporary file in the same
 * folder, fsync, rename, so the file appears complete or not at all. The data are aligned to
 * 8 bytes (the header is padded with spaces). False with "PATH: reason" in err. */
bool em3_st_write(const char *path, const em3_st_tensor *t, int n, const em3_st_meta *meta,
                  int n_meta, char *err, size_t errlen);

typedef struct em3_st_file em3_st_file;

/* Reads and validates `path`: header length within the file and EM3_ST_MAX_HEADER, JSON
 * syntax, every field present and well-typed, dtypes F32/I32, data_offsets matching the shape
 * and inside the data, tensors not overlapping, names unique. NULL with "PATH: reason" (naming
 * the tensor where there is one) in err. */
em3_st_file *em3_st_read(const char *path, char *err, size_t errlen);
/* The same over bytes in memory (copied); `what` names them in messages. */
em3_st_file *em3_st_parse(const void *bytes, size_t len, const char *what, char *err, size_t errlen);
void em3_st_free(em3_st_file *f);

int em3_st_count(const em3_st_file *f);
const em3_st_tensor *em3_st_at(const em3_st_file *f, int i); /* in header order */
const em3_st_tensor *em3_st_find(const em3_st_file *f, const char *name);
const char *em3_st_meta_find(const em3_st_file *f, const char *key);

/* "F32" / "I32". */
const char *em3_st_dtype_name(int32_t dtype);

#endif
