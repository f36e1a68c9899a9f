/* docs/examples/serve.c — scoring a CSV batch with a model built by `em3 build`, loaded with
 * dlopen so that one program serves any model: it learns the inputs from the library itself
 * (NAME_inputs), reads one CSV column per input ('^'-joined ids for sequences, padded with the
 * input's padding id), calls NAME_predict once and prints one line of scores per row. */

/* Usage:
 *   cc -I EM3_SOURCE/runtime -o serve serve.c
 *   ./serve ./libdin.so din batch.csv [weights.safetensors] */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em3_model.h" /* the model-independent ABI types, also at the top of every NAME.h */

#define ABI_VERSION 1 /* the version of docs/c-abi.md this program is written against */

typedef struct model model;

/* The entry points, found by name: NAME_create, NAME_predict, ... */
typedef struct {
    const em3_model_info *(*info)(void);
    model *(*create)(uint64_t seed);
    void (*destroy)(model *m);
    int (*inputs)(const char *fn, const em3_tensor_info **info);
    int (*outputs)(const char *fn, const em3_tensor_info **info);
    int (*load_weights)(model *m, const char *path, char *err, size_t errlen);
    int (*predict)(model *m, int64_t batch, const void *const *in, void *const *out, char *err, size_t errlen);
} api;

static void *entry(void *lib, const char *name, const char *fn) {
    char sym[256];
    snprintf(sym, sizeof sym, "%s_%s", name, fn);
    void *p = dlsym(lib, sym);
    if (!p) fprintf(stderr, "serve: the library has no %s: is '%s' its name?\n", sym, name);
    return p;
}

/* Elements of one batch row of a tensor whose first dimension is the batch. */
static int64_t per_row(const em3_tensor_info *t) {
    int64_t n = 1;
    for (int d = 1; d < t->rank; d++) n *= t->shape[d];
    return t->rank > 0 && t->shape[0] == -1 ? n : -1;
}

/* Splits `line` at commas in place; returns the number of fields. */
static int split(char *line, char **field, int max) {
    int n = 0;
    line[strcspn(line, "\r\n")] = 0;
    for (char *p = line; n < max;) {
        field[n++] = p;
        p = strchr(p, ',');
        if (!p) break;
        *p++ = 0;
    }
    return n;
}

/* One CSV cell into row `row` of tensor t: '^'-joined values, padded to the row's length. */
static int parse_cell(const em3_tensor_info *t, char *cell, void *data, int64_t row, long line) {
    int64_t n = per_row(t), k = 0;
    for (char *p = cell, *next; *p; p = next, k++) {
        next = p + strcspn(p, "^");
        if (*next) *next++ = 0;
        if (k == n) {
            fprintf(stderr, "serve: line %ld, column %s: more than %lld values\n", line, t->name, (long long)n);
            return 1;
        }
        char *end;
        errno = 0;
        if (t->dtype == EM3_MODEL_I32) {
            long v = strtol(p, &end, 10);
            if (v < INT32_MIN || v > INT32_MAX) errno = ERANGE;
            ((int32_t *)data)[row * n + k] = (int32_t)v;
        } else {
            ((float *)data)[row * n + k] = strtof(p, &end);
        }
        if (end == p || *end || errno) {
            fprintf(stderr, "serve: line %ld, column %s: '%s' is not a number\n", line, t->name, p);
            return 1;
        }
    }
    for (; k < n; k++) {
        if (t->pad < 0 || t->dtype != EM3_MODEL_I32) {
            fprintf(stderr, "serve: line %ld, column %s: %lld values, expected %lld\n", line, t->name, (long long)k,
                    (long long)n);
            return 1;
        }
        ((int32_t *)data)[row * n + k] = (int32_t)t->pad;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: serve LIBRARY NAME DATA.csv [WEIGHTS.safetensors]\n");
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "serve: %s\n", dlerror());
        return 1;
    }
    const char *name = argv[2];
    api a = {entry(lib, name, "info"),         entry(lib, name, "create"),  entry(lib, name, "destroy"),
             entry(lib, name, "inputs"),       entry(lib, name, "outputs"), entry(lib, name, "load_weights"),
             entry(lib, name, "predict")};
    if (!a.info || !a.create || !a.destroy || !a.inputs || !a.outputs || !a.load_weights || !a.predict) return 1;
    if (a.info()->abi_version != ABI_VERSION) {
        fprintf(stderr, "serve: %s has ABI version %d, this program knows %d\n", argv[1], a.info()->abi_version,
                ABI_VERSION);
        return 1;
    }
    const em3_tensor_info *in, *out;
    int n_in = a.inputs("predict", &in), n_out = a.outputs("predict", &out);
    if (n_in > 256 || n_out > 256) {
        fprintf(stderr, "serve: more than 256 inputs or outputs\n");
        return 1;
    }
    for (int k = 0; k < n_in + n_out; k++)
        if (per_row(k < n_in ? &in[k] : &out[k - n_in]) < 0) {
            fprintf(stderr, "serve: %s does not start with the batch dimension\n", k < n_in ? in[k].name : out[k - n_in].name);
            return 1;
        }

    FILE *f = fopen(argv[3], "r");
    if (!f) {
        fprintf(stderr, "serve: %s: %s\n", argv[3], strerror(errno));
        return 1;
    }
    /* the header names the columns; each input is found by name, other columns are ignored */
    char *line = NULL, *field[256];
    size_t cap = 0;
    int column[256], n_fields = getline(&line, &cap, f) > 0 ? split(line, field, 256) : 0;
    for (int k = 0; k < n_in; k++) {
        column[k] = -1;
        for (int c = 0; c < n_fields; c++)
            if (!strcmp(field[c], in[k].name)) column[k] = c;
        if (column[k] < 0) {
            fprintf(stderr, "serve: %s has no column '%s' (the model's inputs:", argv[3], in[k].name);
            for (int j = 0; j < n_in; j++) fprintf(stderr, " %s", in[j].name);
            fprintf(stderr, ")\n");
            return 1;
        }
    }
    void *data[256] = {0};
    int64_t rows = 0, cap_rows = 0;
    for (long ln = 2; getline(&line, &cap, f) > 0; ln++) {
        if (line[strspn(line, " \r\n")] == 0) continue;
        if (rows == cap_rows) {
            cap_rows = cap_rows ? 2 * cap_rows : 64;
            for (int k = 0; k < n_in; k++) data[k] = realloc(data[k], (size_t)(cap_rows * per_row(&in[k])) * 4);
        }
        int n = split(line, field, 256);
        for (int k = 0; k < n_in; k++) {
            if (column[k] >= n) {
                fprintf(stderr, "serve: line %ld has no column '%s'\n", ln, in[k].name);
                return 1;
            }
            if (parse_cell(&in[k], field[column[k]], data[k], rows, ln)) return 1;
        }
        rows++;
    }
    fclose(f);
    free(line);

    model *m = a.create(1);
    char err[512];
    if (!m || (argc == 5 && a.load_weights(m, argv[4], err, sizeof err))) {
        fprintf(stderr, "serve: %s\n", m ? err : "out of memory");
        return 1;
    }
    void *scores[256];
    for (int k = 0; k < n_out; k++) scores[k] = malloc((size_t)(rows * per_row(&out[k])) * 4 + 4);
    if (a.predict(m, rows, (const void *const *)data, scores, err, sizeof err)) {
        fprintf(stderr, "serve: %s\n", err);
        return 1;
    }
    for (int k = 0; k < n_out; k++) printf("%s%s", k ? "," : "", out[k].name);
    printf("\n");
    for (int64_t r = 0; r < rows; r++) {
        for (int k = 0; k < n_out; k++) {
            int64_t n = per_row(&out[k]);
            for (int64_t j = 0; j < n; j++) {
                const char *sep = j ? "^" : k ? "," : "";
                if (out[k].dtype == EM3_MODEL_I32)
                    printf("%s%d", sep, ((const int32_t *)scores[k])[r * n + j]);
                else
                    printf("%s%.9g", sep, ((const float *)scores[k])[r * n + j]);
            }
        }
        printf("\n");
    }
    for (int k = 0; k < n_out; k++) free(scores[k]);
    for (int k = 0; k < n_in; k++) free(data[k]);
    a.destroy(m);
    dlclose(lib);
    return 0;
}
