/* runtime/em3_model.h — the model-independent part of the C ABI of shared objects built by
 * `em3 build`: the descriptions of tensors and of the model. `em3 build` copies this text into
 * every generated header (under its guard), so a header is self-contained and two models'
 * headers can be included together; programs that dlopen models may include it alone. */
#ifndef EM3_MODEL_H
#define EM3_MODEL_H

#include <stddef.h>
#include <stdint.h>

/* Element types of inputs, outputs and tables (the safetensors dtypes F32 and I32). */
enum { EM3_MODEL_F32 = 0, EM3_MODEL_I32 = 1 };

#define EM3_MODEL_MAX_RANK 8

/* One input, output or data table. In shapes the batch dimension is -1 (B) and a static
 * multiple of it is -k (k·B); every other entry is a fixed size. */
typedef struct em3_tensor_info {
    const char *name;
    int32_t dtype; /* EM3_MODEL_F32 or EM3_MODEL_I32 */
    int32_t rank;
    int64_t shape[EM3_MODEL_MAX_RANK];
    int64_t vocab; /* i32 ids: valid ids are 0 .. vocab-1 (0: not declared, not checked) */
    int64_t pad;   /* the padding id of a sequence input (-1: none) */
} em3_tensor_info;

typedef struct em3_model_info {
    int32_t abi_version; /* EM3_ABI_VERSION of the em3 that built it */
    const char *model;   /* the model's name in its source */
    const char *name;    /* the C name: the prefix of every exported symbol */
    const char *cpu;     /* the CPU the code was compiled for (x86-64-v3, znver5, ...) */
    int64_t max_batch;   /* rows per call of the compiled code; larger predict batches are split */
    int32_t has_train;   /* 1 when built with --train: NAME_train_step exists */
} em3_model_info;

#endif
