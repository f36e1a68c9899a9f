/* tools/run_config.c — the table of training options (see run_config.h). One row per key:
 * its type, where it lives, its meaning and the values it admits; parsing, checking, writing,
 * reading and help all walk it. */
#include "run_config.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum { K_INT, K_FLOAT, K_BOOL, K_STR, K_OPTIM } kind;

typedef struct {
    const char *key;
    kind k;
    size_t off;
    const char *help;
    const char *range; /* numbers: "[lo, hi)" in interval notation, "inf" unbounded; NULL: any */
} option;

#define T(f) offsetof(em3_run_config, train.f)
#define O(f) offsetof(em3_run_config, optim.f)
#define R(f) offsetof(em3_run_config, f)

static const option options[] = {
    {"epochs", K_INT, T(epochs), "passes over the training split", "[0, inf)"},
    {"batch_size", K_INT, T(batch_size), "training rows per step", "[1, inf)"},
    {"eval_batch_size", K_INT, T(eval_batch_size), "rows per evaluation call", "[1, inf)"},
    {"max_steps", K_INT, T(max_steps), "stop after this many steps in all (0: no limit)", "[0, inf)"},
    {"seed", K_INT, T(seed), "seed of the initial weights and of every permutation"},
    {"deterministic", K_BOOL, T(deterministic), "one thread, fixed reduction order: bit-identical reruns"},
    {"threads", K_INT, T(threads), "data-parallel threads in each process: its shards run this many at a time (needs shards ≥ threads × ranks; 0 shards: that many)", "[1, 64]"},
    {"shards", K_INT, T(shards), "data-parallel: each batch as this many shards, gradients combined (0: one per rank)", "[0, inf)"},
    {"optimizer", K_OPTIM, O(kind), "sgd, momentum, adam, adamw or adagrad"},
    {"lr", K_FLOAT, O(lr), "learning rate of the default parameter group", "[0, inf)"},
    {"beta1", K_FLOAT, O(beta1), "Adam's first-moment decay", "[0, 1)"},
    {"beta2", K_FLOAT, O(beta2), "Adam's second-moment decay", "[0, 1)"},
    {"eps", K_FLOAT, O(eps), "Adam's / Adagrad's epsilon", "(0, inf)"},
    {"momentum", K_FLOAT, O(momentum), "SGD momentum", "[0, 1)"},
    {"weight_decay", K_FLOAT, O(weight_decay), "L2 weight decay (decoupled for adamw)", "[0, inf)"},
    {"clip_norm", K_FLOAT, O(clip_norm), "clip the global gradient norm to this (0: off)", "[0, inf)"},
    {"lazy", K_BOOL, O(lazy), "update only the touched rows of embedding tables"},
    {"adagrad_init", K_FLOAT, O(adagrad_init), "Adagrad's initial accumulator value", "[0, inf)"},
    {"monitor", K_STR, T(monitor), "early-stopping monitor: default (auc; -loss without labels; recall@20 for\n                         top-K models), auc, gauc, -logloss, -loss, recall@K, ndcg@K, precision@K,\n                         or a sum like gauc+0.5*auc"},
    {"patience", K_INT, T(patience), "evaluations without improvement before stopping (0: never)", "[0, inf)"},
    {"lr_factor", K_FLOAT, T(lr_factor), "reduce-on-plateau factor", "(0, 1]"},
    {"lr_patience", K_INT, T(lr_patience), "evaluations without improvement before reducing rates (0: off)", "[0, inf)"},
    {"min_lr", K_FLOAT, T(min_lr), "reduce-on-plateau floor", "[0, inf)"},
    {"eval_every", K_INT, T(eval_every), "evaluate every N steps (0: after each epoch)", "[0, inf)"},
    {"checkpoint_every", K_INT, T(checkpoint_every), "also checkpoint every N steps (0: at evaluations)", "[0, inf)"},
    {"log_every", K_INT, T(log_every), "a log record every N steps", "[0, inf)"},
    {"eval_test", K_BOOL, T(eval_test), "evaluate the test split with the best weights at the end"},
    {"score", K_STR, T(score), "the output of @predict the metrics score"},
    {"max_batch", K_INT, R(max_batch), "rows the compiled code is planned for (0: the larger batch size)", "[0, inf)"},
    {"opt_level", K_INT, R(opt_level), "compiler optimisation level, 0 or 2"},
    {"disable_passes", K_STR, R(disable_passes), "leave these -O2 passes out, comma-separated (e.g. dedup-rows)"},
    {"no_mem_reuse", K_BOOL, R(no_mem_reuse), "give every value its own memory (debugging)"},
    {"perf_map", K_BOOL, R(perf_map), "write /tmp/perf-PID.map: `perf report` then names the compiled kernels"},
    {"init", K_STR, R(init), "start the parameters from these weights (a checkpoint or safetensors file)"},
    {"init_map", K_STR, R(init_map), "renames for init, FROM:TO name prefixes: content.:em3.content."},
    {"items_only", K_BOOL, R(items_only), "train on the item tables alone, ids 1..n-1 (em3 pretrain)"},
    {"items_valid", K_FLOAT, R(items_valid), "with items_only: the fraction of items held out to validate", "[0, 1)"},
};
enum { N_OPTIONS = sizeof options / sizeof *options };

static const char *keep(em3_run_config *rc, const char *s) {
    rc->owned = em3_xrealloc(rc->owned, sizeof(char *) * (size_t)(rc->n_owned + 1));
    return rc->owned[rc->n_owned++] = em3_xstrdup(s);
}

void em3_run_config_init(em3_run_config *rc) {
    memset(rc, 0, sizeof *rc);
    rc->train = em3_train_defaults();
    rc->optim = em3_optim_defaults();
    rc->opt_level = 2;
    rc->init = rc->init_map = rc->disable_passes = "";
    rc->items_valid = 0.1;
}

void em3_run_config_free(em3_run_config *rc) {
    for (int i = 0; i < rc->n_owned; i++) free(rc->owned[i]);
    free(rc->owned);
    free(rc->consts);
}

static bool parse_int(const char *v, int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno) return false;
    *out = x;
    return true;
}

static bool parse_float(const char *v, double *out) {
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !isfinite(x)) return false;
    *out = x;
    return true;
}

/* Whether x lies in the interval `range` ("[0, 1)", "(0, inf)"). */
static bool in_range(double x, const char *range) {
    char *p;
    double lo = strtod(range + 1, &p), hi = strtod(p + 1, &p);
    return (range[0] == '[' ? x >= lo : x > lo) && (*p == ']' ? x <= hi : x < hi);
}

static bool parse_bool(const char *v, bool *out) {
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes")) return *out = true, true;
    if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no")) return *out = false, true;
    return false;
}

static em3_param_group *group(em3_run_config *rc, const char *name) {
    for (int i = 0; i < rc->optim.n_groups; i++)
        if (!strcmp(rc->groups[i].name, name)) return &rc->groups[i];
    if (rc->optim.n_groups == EM3_MAX_GROUPS - 1) return NULL;
    em3_param_group *g = &rc->groups[rc->optim.n_groups++];
    *g = (em3_param_group){keep(rc, name), NULL, -1, -1};
    return g;
}

bool em3_run_config_set(em3_run_config *rc, const char *key, const char *value, char *err, size_t errlen) {
    for (int i = 0; i < N_OPTIONS; i++) {
        const option *o = &options[i];
        if (strcmp(o->key, key)) continue;
        void *at = (char *)rc + o->off;
        bool ok = true;
        switch (o->k) {
        case K_INT: ok = parse_int(value, at); break;
        case K_FLOAT: ok = parse_float(value, at); break;
        case K_BOOL: ok = parse_bool(value, at); break;
        case K_STR: *(const char **)at = keep(rc, value); break;
        case K_OPTIM: ok = em3_optim_kind_parse(value, at); break;
        }
        if (ok && o->range && !in_range(o->k == K_INT ? (double)*(int64_t *)at : *(double *)at, o->range)) {
            snprintf(err, errlen, "--set %s=%s: must be in %s", key, value, o->range);
            return false;
        }
        if (!ok)
            snprintf(err, errlen, "--set %s=%s: expected %s", key, value,
                     o->k == K_INT ? "an integer" : o->k == K_FLOAT ? "a number"
                     : o->k == K_BOOL ? "true or false" : "sgd, momentum, adam, adamw or adagrad");
        return ok;
    }
    /* group.NAME=pattern, lr.NAME=rate, wd.NAME=decay: parameter groups */
    const char *dot = strchr(key, '.');
    if (dot && (!strncmp(key, "group.", 6) || !strncmp(key, "lr.", 3) || !strncmp(key, "wd.", 3))) {
        em3_param_group *g = group(rc, dot + 1);
        if (!g || !strcmp(dot + 1, "default")) {
            snprintf(err, errlen, "--set %s: %s", key, g ? "'default' is the group of unmatched parameters (use lr=...)"
                                                          : "too many parameter groups");
            return false;
        }
        double x;
        if (key[0] == 'g') {
            g->pattern = keep(rc, value);
            return true;
        }
        if (!parse_float(value, &x) || x < 0) {
            snprintf(err, errlen, "--set %s=%s: expected a number %s", key, value, "not below 0");
            return false;
        }
        *(key[0] == 'l' ? &g->lr : &g->weight_decay) = x;
        return true;
    }
    for (int i = 0; i < rc->n_consts; i++) /* the last --set of a constant wins */
        if (!strcmp(rc->consts[i].name, key)) {
            rc->consts[i].value = keep(rc, value);
            return true;
        }
    rc->consts = em3_xrealloc(rc->consts, sizeof(*rc->consts) * (size_t)(rc->n_consts + 1));
    rc->consts[rc->n_consts++] = (em3_const_override){keep(rc, key), keep(rc, value), false};
    return true;
}

bool em3_run_config_finish(em3_run_config *rc, char *err, size_t errlen) {
    em3_train_config *t = &rc->train;
    t->groups[0] = (em3_lr_group){"default", rc->optim.lr};
    t->n_groups = 1;
    for (int i = 0; i < rc->optim.n_groups; i++) {
        em3_param_group *g = &rc->groups[i];
        if (!g->pattern) {
            snprintf(err, errlen, "parameter group %s has no pattern (--set group.%s='content.*')", g->name, g->name);
            return false;
        }
        if (g->lr < 0) g->lr = rc->optim.lr;
        t->groups[t->n_groups++] = (em3_lr_group){g->name, g->lr};
    }
    rc->optim.groups = rc->groups;
    if (t->shards > t->batch_size) {
        snprintf(err, errlen, "shards must be between 0 (one per rank) and batch_size (%lld)", (long long)t->batch_size);
        return false;
    }
    if (rc->opt_level != 0 && rc->opt_level != 2) {
        snprintf(err, errlen, "opt_level must be 0 or 2");
        return false;
    }
    if (rc->max_batch == 0) rc->max_batch = t->batch_size > t->eval_batch_size ? t->batch_size : t->eval_batch_size;
    if (rc->max_batch < t->batch_size || rc->max_batch < t->eval_batch_size) {
        snprintf(err, errlen, "max_batch %lld is smaller than a batch size", (long long)rc->max_batch);
        return false;
    }
    return true;
}

/* 0.9, not 0.90000000000000002: the shortest text that reads back to the same value */
static const char *shortest(double v, char num[static 32]) {
    em3_format_double(num, 32, v);
    return num;
}

void em3_run_config_write(const em3_run_config *rc, FILE *out) {
    char num[32];
    fprintf(out, "# em3 run configuration, resolved (em3 train --set KEY=VALUE sets these)\n");
    if (rc->model) fprintf(out, "model: %s\n", rc->model);
    if (rc->data) fprintf(out, "data: %s\n", rc->data);
    for (int i = 0; i < N_OPTIONS; i++) {
        const option *o = &options[i];
        const void *at = (const char *)rc + o->off;
        fprintf(out, "%s: ", o->key);
        switch (o->k) {
        case K_INT: fprintf(out, "%lld\n", (long long)*(const int64_t *)at); break;
        case K_FLOAT: fprintf(out, "%s\n", shortest(*(const double *)at, num)); break;
        case K_BOOL: fprintf(out, "%s\n", *(const bool *)at ? "true" : "false"); break;
        case K_STR: fprintf(out, "%s\n", *(const char *const *)at); break;
        case K_OPTIM: fprintf(out, "%s\n", em3_optim_kind_name(*(const em3_optim_kind *)at)); break;
        }
    }
    for (int i = 0; i < rc->optim.n_groups; i++) {
        const em3_param_group *g = &rc->groups[i];
        fprintf(out, "group.%s: %s\nlr.%s: %s\n", g->name, g->pattern ? g->pattern : "", g->name,
                shortest(g->lr, num));
        if (g->weight_decay >= 0) fprintf(out, "wd.%s: %s\n", g->name, shortest(g->weight_decay, num));
    }
    for (int i = 0; i < rc->n_consts; i++) fprintf(out, "const.%s: %s\n", rc->consts[i].name, rc->consts[i].value);
}

bool em3_run_config_read(em3_run_config *rc, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return false;
    }
    char line[4096];
    bool ok = true;
    for (int n = 1; ok && fgets(line, sizeof line, f); n++) {
        line[strcspn(line, "\n")] = 0;
        if (!line[0] || line[0] == '#') continue;
        char *colon = strstr(line, ": ");
        if (!colon) {
            snprintf(err, errlen, "%s:%d: expected 'key: value'", path, n);
            ok = false;
            break;
        }
        *colon = 0;
        const char *k = line, *v = colon + 2;
        char sub[512];
        if (!strcmp(k, "model")) rc->model = keep(rc, v);
        else if (!strcmp(k, "data")) rc->data = keep(rc, v);
        else if (!strncmp(k, "const.", 6)) ok = em3_run_config_set(rc, k + 6, v, sub, sizeof sub);
        else ok = em3_run_config_set(rc, k, v, sub, sizeof sub);
        if (!ok) snprintf(err, errlen, "%s:%d: %s", path, n, sub);
    }
    fclose(f);
    return ok;
}

void em3_run_config_help(FILE *out) {
    for (int i = 0; i < N_OPTIONS; i++)
        fprintf(out, "      %-18s %s%s%s\n", options[i].key, options[i].help, options[i].range ? ", in " : "",
                options[i].range ? options[i].range : "");
    fprintf(out, "      %-18s %s\n", "group.NAME", "a parameter group: an fnmatch pattern over parameter names");
    fprintf(out, "      %-18s %s\n", "lr.NAME, wd.NAME", "the group's learning rate and weight decay");
    fprintf(out, "      %-18s %s\n", "OTHER", "any other key is a model constant (e.g. d=32)");
}
