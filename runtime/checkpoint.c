/* runtime/checkpoint.c — checkpoints as safetensors files (see checkpoint.h): every parameter
 * and optimizer state tensor under its global's name, and the loop's state, the format
 * version and an XXH64 checksum of the tensor bytes in the metadata. */
#include "checkpoint.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h" /* em3_xxh64: the checksum the data cache uses too */
#include "safetensors.h"

/* Data tables and graphs come from the dataset: a checkpoint holds what training changes. */
static bool saved(const em3_global *g) { return g->kind != EM3_GLOBAL_DATA && g->kind != EM3_GLOBAL_GRAPH; }

static uint64_t checksum(em3_exec *x) {
    const em3_module *m = em3_exec_module(x);
    em3_xxh64_state h;
    em3_xxh64_init(&h, EM3_CHECKPOINT_VERSION);
    for (int g = 0; g < m->n_global; g++)
        if (saved(&m->global[g]))
            em3_xxh64_update(&h, em3_exec_global(x, m->global[g].name),
                             (size_t)em3_type_numel(&m->global[g].type, 1) * 4);
    return em3_xxh64_digest(&h);
}

void em3_checkpoint_broadcast(em3_exec *x, em3_comm *c) {
    const em3_module *m = em3_exec_module(x);
    for (int g = 0; g < m->n_global; g++)
        if (saved(&m->global[g]))
            em3_comm_broadcast(c, em3_exec_global(x, m->global[g].name), em3_type_numel(&m->global[g].type, 1) * 4);
}

bool em3_checkpoint_save(em3_exec *x, const char *path, const em3_train_state *s, char *err,
                         size_t errlen) {
    const em3_module *m = em3_exec_module(x);
    em3_st_tensor *t = em3_xcalloc((size_t)(m->n_global ? m->n_global : 1), sizeof(*t));
    int n = 0;
    for (int g = 0; g < m->n_global; g++) {
        const em3_global *gl = &m->global[g];
        if (!saved(gl)) continue;
        t[n] = (em3_st_tensor){gl->name, gl->type.dtype == EM3_DTYPE_I32 ? EM3_MODEL_I32 : EM3_MODEL_F32,
                               gl->type.rank, {0}, em3_exec_global(x, gl->name)};
        memcpy(t[n].shape, gl->type.dim, sizeof(int64_t) * (size_t)gl->type.rank);
        n++;
    }
    char buf[32][64];
    em3_st_meta meta[32 + EM3_CKPT_MAX_GROUPS];
    int k = 0;
#define META(key, ...) (snprintf(buf[k], sizeof buf[k], __VA_ARGS__), meta[k] = (em3_st_meta){key, buf[k]}, k++)
    META("em3.checkpoint_version", "%d", EM3_CHECKPOINT_VERSION);
    META("em3.model", "%s", m->name);
    META("em3.epoch", "%lld", (long long)s->epoch);
    META("em3.batch", "%lld", (long long)s->batch);
    META("em3.step", "%lld", (long long)s->step);
    META("em3.evals", "%lld", (long long)s->evals);
    META("em3.best", "%.17g", s->best);
    META("em3.best_step", "%lld", (long long)s->best_step);
    META("em3.bad_evals", "%lld", (long long)s->bad_evals);
    META("em3.plateau_evals", "%lld", (long long)s->plateau_evals);
    META("em3.checksum", "%016llx", (unsigned long long)checksum(x));
    META("em3.n_lr", "%d", s->n_lr);
#undef META
    char lr_keys[EM3_CKPT_MAX_GROUPS][32], lr_vals[EM3_CKPT_MAX_GROUPS][32];
    for (int i = 0; i < s->n_lr; i++) {
        snprintf(lr_keys[i], sizeof lr_keys[i], "em3.lr.%d", i);
        snprintf(lr_vals[i], sizeof lr_vals[i], "%.17g", s->lr[i]);
        meta[k++] = (em3_st_meta){lr_keys[i], lr_vals[i]};
    }
    bool ok = em3_st_write(path, t, n, meta, k, err, errlen);
    free(t);
    return ok;
}

/* A metadata number; false (with a message) when absent or malformed. */
static bool meta_num(const em3_st_file *f, const char *path, const char *key, double *out, char *err,
                     size_t errlen) {
    const char *v = em3_st_meta_find(f, key);
    char *end;
    if (v) *out = strtod(v, &end);
    if (!v || !*v || *end) {
        snprintf(err, errlen, "checkpoint %s: %s metadata %s", path, v ? "malformed" : "missing", key);
        return false;
    }
    return true;
}

bool em3_checkpoint_load(em3_exec *x, const char *path, em3_train_state *s, char *err,
                         size_t errlen) {
    const em3_module *m = em3_exec_module(x);
    char sub[768];
    em3_st_file *f = em3_st_read(path, sub, sizeof sub);
    if (!f) {
        snprintf(err, errlen, "cannot load checkpoint: %s", sub);
        return false;
    }
    double v[10] = {0};
    static const char *const keys[] = {"em3.checkpoint_version", "em3.epoch", "em3.batch", "em3.step",
                                       "em3.evals", "em3.best", "em3.best_step", "em3.bad_evals",
                                       "em3.plateau_evals", "em3.n_lr"};
    bool ok = true;
    for (int i = 0; i < 10 && ok; i++) ok = meta_num(f, path, keys[i], &v[i], err, errlen);
    if (ok && v[0] != EM3_CHECKPOINT_VERSION)
        ok = (snprintf(err, errlen, "checkpoint %s has format version %g; this em3 reads version %d",
                       path, v[0], EM3_CHECKPOINT_VERSION), false);
    if (ok && (v[9] < 0 || v[9] > EM3_CKPT_MAX_GROUPS))
        ok = (snprintf(err, errlen, "checkpoint %s: bad learning-rate group count", path), false);
    for (int g = 0; ok && g < m->n_global; g++) {
        const em3_global *gl = &m->global[g];
        if (!saved(gl)) continue;
        const em3_st_tensor *t = em3_st_find(f, gl->name);
        bool fits = t && t->rank == gl->type.rank &&
                    t->dtype == (gl->type.dtype == EM3_DTYPE_I32 ? EM3_MODEL_I32 : EM3_MODEL_F32);
        for (int d = 0; fits && d < t->rank; d++) fits = t->shape[d] == gl->type.dim[d];
        if (!fits) {
            char want[EM3_TYPE_STR_MAX], have[EM3_TYPE_STR_MAX] = "";
            em3_type_str(&gl->type, want, sizeof want);
            if (t && t->rank <= EM3_MAX_RANK) {
                em3_type h = em3_type_make(t->dtype == EM3_MODEL_I32 ? EM3_DTYPE_I32 : EM3_DTYPE_F32, t->rank, t->shape);
                em3_type_str(&h, have, sizeof have);
            }
            if (t)
                snprintf(err, errlen, "checkpoint %s holds %s as %s%s, the model as %s: it was written for another "
                         "model or configuration", path, gl->name, have, t->dtype == EM3_MODEL_I32 || t->dtype ==
                         EM3_MODEL_F32 ? "" : " (another dtype)", want);
            else
                snprintf(err, errlen, "checkpoint %s lacks %s (the model's %s): it was written for another model "
                         "or configuration", path, gl->name, want);
            ok = false;
            break;
        }
    }
    if (ok) { /* verify before touching the model: a corrupt file changes nothing */
        em3_xxh64_state h;
        em3_xxh64_init(&h, EM3_CHECKPOINT_VERSION);
        for (int g = 0; g < m->n_global; g++)
            if (saved(&m->global[g]))
                em3_xxh64_update(&h, em3_st_find(f, m->global[g].name)->data,
                                 (size_t)em3_type_numel(&m->global[g].type, 1) * 4);
        const char *want = em3_st_meta_find(f, "em3.checksum");
        char got[32];
        snprintf(got, sizeof got, "%016llx", (unsigned long long)em3_xxh64_digest(&h));
        if (!want || strcmp(want, got))
            ok = (snprintf(err, errlen, "checkpoint %s is corrupt: its checksum does not match its data", path), false);
    }
    em3_train_state st = {.epoch = (int64_t)v[1], .batch = (int64_t)v[2], .step = (int64_t)v[3],
                          .evals = (int64_t)v[4], .best = v[5], .best_step = (int64_t)v[6],
                          .bad_evals = (int64_t)v[7], .plateau_evals = (int64_t)v[8], .n_lr = (int)v[9]};
    for (int i = 0; ok && i < st.n_lr; i++) {
        char key[32];
        snprintf(key, sizeof key, "em3.lr.%d", i);
        ok = meta_num(f, path, key, &st.lr[i], err, errlen);
    }
    if (ok) {
        for (int g = 0; g < m->n_global; g++)
            if (saved(&m->global[g]))
                memcpy(em3_exec_global(x, m->global[g].name), em3_st_find(f, m->global[g].name)->data,
                       (size_t)em3_type_numel(&m->global[g].type, 1) * 4);
        *s = st;
    }
    em3_st_free(f);
    return ok;
}

/* The tensor of `f` that parameter `name` starts from under the rewrites of `map`. */
static const em3_st_tensor *init_source(const em3_st_file *f, const char *name, const char *map) {
    if (!map || !*map) return em3_st_find(f, name);
    char key[1024];
    for (const char *r = map; *r;) {
        size_t len = strcspn(r, ","), colon = strcspn(r, ":");
        if (colon < len) {
            const char *to = r + colon + 1;
            size_t to_len = len - colon - 1;
            if (!strncmp(name, to, to_len)) {
                snprintf(key, sizeof key, "%.*s%s", (int)colon, r, name + to_len);
                return em3_st_find(f, key);
            }
        }
        r += len + (r[len] == ',');
    }
    return NULL;
}

bool em3_checkpoint_init(em3_exec *x, const char *path, const char *map, int *loaded, int *total,
                         char *err, size_t errlen) {
    const em3_module *m = em3_exec_module(x);
    char sub[768];
    *loaded = *total = 0;
    for (const char *r = map; r && *r;) {
        size_t len = strcspn(r, ",");
        if (strcspn(r, ":") >= len) {
            snprintf(err, errlen, "init_map '%s': each rule is FROM:TO (prefixes of names), rules joined by ','", map);
            return false;
        }
        r += len + (r[len] == ',');
    }
    em3_st_file *f = em3_st_read(path, sub, sizeof sub);
    if (!f) {
        snprintf(err, errlen, "cannot load the initial weights: %s", sub);
        return false;
    }
    bool ok = true;
    for (int pass = 0; pass < 2 && ok; pass++) { /* check everything, then copy */
        for (int g = 0; g < m->n_global && ok; g++) {
            const em3_global *gl = &m->global[g];
            if (gl->kind != EM3_GLOBAL_PARAM && gl->kind != EM3_GLOBAL_FROZEN) continue;
            const em3_st_tensor *t = init_source(f, gl->name, map);
            if (pass == 0) ++*total;
            if (!t) continue;
            bool fits = t->rank == gl->type.rank &&
                        t->dtype == (gl->type.dtype == EM3_DTYPE_I32 ? EM3_MODEL_I32 : EM3_MODEL_F32);
            for (int d = 0; fits && d < t->rank; d++) fits = t->shape[d] == gl->type.dim[d];
            if (!fits) {
                char ty[EM3_TYPE_STR_MAX];
                ok = (snprintf(err, errlen, "initial weights %s: tensor %s for parameter %s (%s) has another "
                                            "shape or type",
                               path, t->name, gl->name, em3_type_str(&gl->type, ty, sizeof ty)), false);
            } else if (pass == 1) {
                memcpy(em3_exec_global(x, gl->name), t->data, (size_t)em3_type_numel(&gl->type, 1) * 4);
                ++*loaded;
            }
        }
    }
    if (ok && *loaded == 0)
        ok = (snprintf(err, errlen, "initial weights %s: no tensor matches a parameter of the model%s", path,
                       map && *map ? " under init_map" : " (rename with init_map=FROM:TO)"), false);
    em3_st_free(f);
    return ok;
}
