/* tools/cmd_train.c — `em3 train`, `em3 eval` and `em3 predict`: compile a model for a dataset
 * (frontend, autodiff, optimizer and the -O2 passes, LLVM JIT), then run the training loop or
 * score a split with a run folder's best weights. The run folder keeps the resolved
 * configuration and the compiled IR (model.ir), so a run can be evaluated, resumed or served
 * without its sources. Started by mpirun, `em3 train` is one rank of a data-parallel job
 * (runtime/comm.h): rank 0 names and writes the run folder, every rank trains. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "codegen/codegen.h"
#include "commands.h"
#include "driver.h"
#include "run_config.h"
#include "runtime/checkpoint.h"
#include "runtime/comm.h"
#include "runtime/npy.h"

enum { OPT_DATA = 256, OPT_OUT, OPT_CONFIG, OPT_RESUME, OPT_NOPROG, OPT_SPLIT, OPT_CKPT, OPT_QUIET };

static int user_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int user_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("em3: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static char *join(const char *dir, const char *file) {
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = em3_xmalloc(n);
    snprintf(p, n, "%s/%s", dir, file);
    return p;
}

/* What a dataset tells a model: its model_constants, the vocabulary of every id column and
 * side table as vocab_NAME, and the row width of every feature table as dim_NAME (a model
 * that declares `const dim_audio = 0` can use the table only when the data has it) — all
 * optional (a model that declares one gets the dataset's value). The run's own --set
 * constants come first and win. */
static em3_const_override *model_constants(const em3_run_config *rc, const em3_dataset *ds, int *n,
                                           char ***owned) {
    int nc = em3_dataset_column_count(ds), nt = em3_dataset_table_count(ds), nk = em3_dataset_constant_count(ds), k = 0;
    em3_const_override *o = em3_xcalloc((size_t)(rc->n_consts + nk + nc + 2 * nt + 1), sizeof(*o));
    *owned = em3_xcalloc((size_t)(2 * (nk + nc + 2 * nt) + 1), sizeof(char *));
    int no = 0;
    for (int i = 0; i < rc->n_consts; i++) o[k++] = rc->consts[i];
    for (int i = 0; i < nk + nc + 2 * nt; i++) {
        char *name, *value = em3_xmalloc(32);
        if (i < nk) {
            int64_t v;
            name = em3_xstrdup(em3_dataset_constant(ds, i, &v));
            snprintf(value, 32, "%lld", (long long)v);
        } else if (i >= nk + nc + nt) {
            const em3_column *c = em3_dataset_table(ds, i - nk - nc - nt);
            if (c->dtype != EM3_DTYPE_F32) {
                free(value);
                continue;
            }
            int64_t w = 1;
            for (int r = 0; r < c->rank; r++) w *= c->dim[r];
            name = em3_xmalloc(strlen(c->name) + 8);
            sprintf(name, "dim_%s", c->name);
            snprintf(value, 32, "%lld", (long long)w);
        } else {
            const em3_column *c = i - nk < nc ? em3_dataset_column(ds, EM3_SPLIT_TRAIN, i - nk)
                                              : em3_dataset_table(ds, i - nk - nc);
            if (!c || c->vocab <= 0) {
                free(value);
                continue;
            }
            name = em3_xmalloc(strlen(c->name) + 8);
            sprintf(name, "vocab_%s", c->name);
            snprintf(value, 32, "%lld", (long long)c->vocab);
        }
        bool set = false;
        for (int j = 0; j < rc->n_consts; j++) set |= !strcmp(rc->consts[j].name, name);
        (*owned)[no++] = name;
        (*owned)[no++] = value;
        if (!set) o[k++] = (em3_const_override){name, value, true};
    }
    *n = k;
    return o;
}

static em3_module *compile_model(em3_run_config *rc, const em3_source_opts *so, const em3_dataset *ds,
                                 bool train, em3_diag *d) {
    em3_frontend_options fe = so->fe;
    char **owned;
    em3_const_override *consts = model_constants(rc, ds, &fe.n_overrides, &owned);
    fe.overrides = consts;
    em3_module *m = em3_frontend_compile(rc->model, &fe, d);
    for (int i = 0; owned[i]; i++) free(owned[i]);
    free(owned);
    free(consts);
    if (!m) return NULL;
    em3_pipeline *pl = em3_pipeline_create();
    bool ok = true;
    if (train) {
        em3_pipeline_add_default(pl, (int)rc->opt_level);
        if (*rc->disable_passes) ok = em3_pipeline_disable(pl, rc->disable_passes, d);
    } else {
        em3_pipeline_add(pl, EM3_PASS_DCE);
    }
    em3_pass_options po = {.optim = &rc->optim, .quiet = true, .loss_only = true};
    ok = ok && em3_pipeline_run(pl, m, &po, d);
    em3_pipeline_free(pl);
    if (!ok) {
        em3_module_free(m);
        return NULL;
    }
    return m;
}

static em3_jit *jit(const em3_module *m, const em3_run_config *rc, em3_diag *d, FILE *log) {
    em3_codegen_options o = em3_codegen_defaults();
    o.max_batch = rc->max_batch;
    o.no_mem_reuse = rc->no_mem_reuse;
    o.perf_map = rc->perf_map;
    em3_jit *j = em3_jit_compile(m, &o, d);
    if (j && log) fprintf(log, "compiled %s in %.2f s\n", m->name, em3_jit_compile_seconds(j));
    return j;
}

/* The executor of the compiled module, or NULL with a message when its tables and workspaces
 * need more memory than the machine has (RAM and swap): a user's size constants, not a crash
 * in the middle of initialising 4 TB of weights. */
static em3_exec *executor(const em3_module *m, em3_jit *j, uint64_t seed, char *err, size_t errlen) {
    em3_compiled_func *fs = em3_xcalloc((size_t)m->n_func, sizeof(*fs));
    double tables = 0, work = 0, precompute = 0; /* a precompute arena lives while its cache fills */
    for (int g = 0; g < m->n_global; g++)
        if (m->global[g].kind != EM3_GLOBAL_GRAPH) tables += 4.0 * (double)em3_type_numel(&m->global[g].type, 1);
    for (int i = 0; i < m->n_func; i++) {
        fs[i] = *em3_jit_func(j, m->func[i]->name);
        if (strncmp(fs[i].name, "precompute.", 11))
            work += (double)fs[i].arena_bytes;
        else
            precompute = fmax(precompute, (double)fs[i].arena_bytes);
    }
    work += precompute;
    struct sysinfo si;
    double have = sysinfo(&si) == 0 ? ((double)si.totalram + (double)si.totalswap) * si.mem_unit : INFINITY;
    em3_exec *x = NULL;
    if (tables + work > have)
        snprintf(err, errlen, "model %s needs %.1f GB of memory (parameters, optimizer state and data tables "
                 "%.1f GB, workspaces %.1f GB) and this machine has %.1f GB: make its tables smaller",
                 m->name, (tables + work) / 1e9, tables / 1e9, work / 1e9, have / 1e9);
    else
        x = em3_exec_create(m, fs, m->n_func, seed);
    free(fs); /* copied by the executor; what they point to belongs to the jit */
    return x;
}

/* False with errno set when the file cannot be written in full. */
static bool write_file(const char *path, void (*fill)(FILE *, const void *), const void *ctx) {
    em3_afile *a = em3_afile_open(path);
    if (!a) return false;
    fill(em3_afile_stream(a), ctx);
    errno = em3_afile_commit(a);
    return !errno;
}

static void fill_config(FILE *f, const void *rc) { em3_run_config_write(rc, f); }
static void fill_ir(FILE *f, const void *m) { em3_module_print(m, f, 0); }

/* A run folder is never trained into twice: its checkpoints and logs would be overwritten. */
static bool holds_run(const char *dir) {
    char *p = join(dir, "config.yaml");
    bool taken = access(p, F_OK) == 0;
    free(p);
    return taken;
}

/* runs/MODEL-DATE-TIME, with a -2, -3, ... suffix when runs start within the same second. */
static void default_out_dir(em3_run_config *rc, char *buf, size_t n) {
    const char *base = strrchr(rc->model, '/') ? strrchr(rc->model, '/') + 1 : rc->model;
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    snprintf(buf, n, "runs/%.*s-%04d%02d%02d-%02d%02d%02d", (int)strcspn(base, "."), base, tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    size_t len = strlen(buf);
    for (int k = 2; holds_run(buf) && k < 1000; k++) snprintf(buf + len, n - len, "-%d", k);
}

/* Rank 0 names the run folder (the default name holds the time, which ranks may read a second
 * apart) and checks that no run is in it; every rank learns both. */
static bool choose_out_dir(em3_run_config *rc, em3_comm *comm, bool resume, char *buf, size_t n) {
    int taken = 0;
    if (em3_comm_rank(comm) == 0) {
        if (!rc->train.out_dir) default_out_dir(rc, buf, n);
        else snprintf(buf, n, "%s", rc->train.out_dir);
        taken = !resume && holds_run(buf);
    }
    em3_comm_broadcast(comm, buf, (int64_t)n);
    em3_comm_broadcast(comm, &taken, sizeof taken);
    rc->train.out_dir = buf;
    if (taken)
        user_error("%s already holds a run: continue it with --resume %s, or choose another --out", buf, buf);
    return !taken;
}

/* `em3 train`, and `em3 pretrain` (cmd "pretrain"): the same loop over the dataset's item
 * tables alone, monitored by the validation loss. */
static int train_command(int argc, char **argv, const char *cmd) {
    static const struct option longopts[] = {
        EM3_SOURCE_OPTIONS,
        {"data", required_argument, 0, OPT_DATA},
        {"out", required_argument, 0, OPT_OUT},
        {"config", required_argument, 0, OPT_CONFIG},
        {"resume", required_argument, 0, OPT_RESUME},
        {"no-progress", no_argument, 0, OPT_NOPROG},
        {0, 0, 0, 0}};
    em3_source_opts so = {0};
    em3_run_config rc;
    em3_run_config_init(&rc);
    if (!strcmp(cmd, "pretrain")) {
        rc.items_only = true;
        rc.train.monitor = "-loss";
    }
    const char *resume = NULL;
    char err[1024], outbuf[4096];
    bool ok = true;
    int c;
    /* first pass: a config file or a run to resume provide defaults that --set overrides */
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--resume")) resume = argv[i + 1];
        if (!strcmp(argv[i], "--config") && !em3_run_config_read(&rc, argv[i + 1], err, sizeof err))
            return user_error("%s", err);
    }
    if (resume) {
        char *p = join(resume, "config.yaml");
        ok = em3_run_config_read(&rc, p, err, sizeof err);
        free(p);
        if (!ok) return user_error("--resume %s: %s", resume, err);
        rc.train.out_dir = resume;
    }
    optind = 1;
    while ((c = getopt_long(argc, argv, "I:", longopts, NULL)) != -1) {
        if (c == 'S') { /* --set: an option of the run, or a model constant */
            const char *eq = strchr(optarg, '=');
            char key[256];
            if (!eq || eq == optarg) {
                ok = !em3_usage_error(cmd, "--set needs KEY=VALUE, got '%s'", optarg);
                continue;
            }
            snprintf(key, sizeof key, "%.*s", (int)(eq - optarg), optarg);
            if (!em3_run_config_set(&rc, key, eq + 1, err, sizeof err)) ok = !em3_usage_error(cmd, "%s", err);
            continue;
        }
        if (em3_source_option(&so, c, optarg, &ok)) continue;
        switch (c) {
        case OPT_DATA: rc.data = optarg; break;
        case OPT_OUT: rc.train.out_dir = optarg; break;
        case OPT_CONFIG: case OPT_RESUME: break;
        case OPT_NOPROG: rc.train.progress = false; break;
        default: ok = false; em3_usage_error(cmd, "unknown option"); break;
        }
    }
    if (ok && optind < argc) rc.model = argv[optind++];
    if (ok && (!rc.model || optind != argc)) ok = !em3_usage_error(cmd, "expected one model file");
    if (ok && !rc.data) ok = !em3_usage_error(cmd, "--data DATASET is required");
    if (ok && !em3_run_config_finish(&rc, err, sizeof err)) ok = !em3_usage_error(cmd, "%s", err);
    if (!ok) {
        em3_source_opts_free(&so);
        em3_run_config_free(&rc);
        return 2;
    }
    em3_comm *comm = em3_comm_create(err, sizeof err);
    int64_t shards = comm && rc.train.shards ? rc.train.shards : comm ? em3_comm_size(comm) * rc.train.threads : 1;
    int code = 0;
    if (!comm) code = user_error("%s", err);
    else if (shards % em3_comm_size(comm))
        code = em3_usage_error(cmd, "shards=%lld cannot be split evenly over %d ranks", (long long)shards,
                               em3_comm_size(comm));
    else if (shards / em3_comm_size(comm) < rc.train.threads)
        code = em3_usage_error(cmd, "threads=%lld needs at least %lld shards per rank, not %lld",
                               (long long)rc.train.threads, (long long)rc.train.threads,
                               (long long)(shards / em3_comm_size(comm)));
    else if (!choose_out_dir(&rc, comm, resume != NULL, outbuf, sizeof outbuf)) code = 1;
    if (code) {
        em3_comm_free(comm);
        em3_source_opts_free(&so);
        em3_run_config_free(&rc);
        return code;
    }
    bool leader = em3_comm_rank(comm) == 0;
    char who[32] = ""; /* which rank a message comes from, when there are several */
    if (em3_comm_size(comm) > 1) snprintf(who, sizeof who, "rank %d: ", em3_comm_rank(comm));
    rc.optim.separate_update = shards > 1; /* gradients leave @train to be combined, then @update */
    int status = 1;
    em3_diag *d = em3_diag_create(stderr);
    em3_data_options dopt = {0};
    em3_dataset *source = em3_dataset_open(rc.data, &dopt, err, sizeof err), *ds = source;
    if (source && rc.items_only) ds = em3_dataset_items_view(source, rc.items_valid, rc.train.seed, err, sizeof err);
    em3_module *m = ds ? compile_model(&rc, &so, ds, true, d) : NULL;
    if (m && em3_dataset_label(ds)) /* evaluation scores @predict; @forward's loss is for label-free runs */
        em3_module_remove_func(m, em3_module_find_func(m, "forward"));
    em3_jit *j = m ? jit(m, &rc, d, leader ? stderr : NULL) : NULL;
    em3_exec *x = j ? executor(m, j, rc.train.seed, err, sizeof err) : NULL;
    int loaded, total;
    if (!ds || (j && !x)) {
        user_error("%s%s", who, err);
    } else if (x && (!em3_exec_bind_dataset(x, ds, err, sizeof err) || !em3_train_check(x, ds, &rc.train, err, sizeof err))) {
        user_error("%s%s", who, err);
    } else if (x && !resume && *rc.init &&
               !em3_checkpoint_init(x, rc.init, rc.init_map, &loaded, &total, err, sizeof err)) {
        user_error("%s%s", who, err);
    } else if (x) {
        if (!resume && *rc.init && leader)
            fprintf(stderr, "init: %d of %d parameters from %s\n", loaded, total, rc.init);
        bool written = true; /* rank 0 writes the run folder; the others wait to hear that it did */
        char *pc = join(rc.train.out_dir, "config.yaml"), *pm = join(rc.train.out_dir, "model.ir");
        if (leader && !em3_mkdir_p(rc.train.out_dir))
            written = !user_error("cannot create %s: %s", rc.train.out_dir, strerror(errno));
        else if (leader && !resume && (!write_file(pc, fill_config, &rc) || !write_file(pm, fill_ir, m)))
            written = !user_error("cannot write the run folder %s: %s", rc.train.out_dir, strerror(errno));
        free(pc);
        free(pm);
        rc.train.comm = comm;
        rc.train.shards = shards; /* resolved after config.yaml keeps the setting: a resumed run may have other ranks */
        FILE *log = leader ? stdout : fopen("/dev/null", "w");
        if (!em3_comm_agree(comm, written, NULL)) {
            if (written) user_error("%sstopped: rank 0 could not write the run folder", who);
        } else if (!em3_train(x, ds, &rc.train, resume != NULL, log ? log : stdout, err, sizeof err)) {
            user_error("%s%s", who, err);
        } else {
            if (leader) printf("\nrun folder: %s\n", rc.train.out_dir);
            status = 0;
        }
        if (log && log != stdout) fclose(log);
    }
    em3_exec_free(x);
    em3_jit_free(j);
    em3_module_free(m);
    if (ds != source) em3_dataset_free(ds);
    em3_dataset_free(source);
    em3_diag_free(d);
    em3_comm_free(comm);
    em3_source_opts_free(&so);
    em3_run_config_free(&rc);
    return status;
}

int em3_cmd_train(int argc, char **argv) { return train_command(argc, argv, "train"); }
int em3_cmd_pretrain(int argc, char **argv) { return train_command(argc, argv, "pretrain"); }

/* eval and predict: a run folder's model.ir and checkpoint, on a split of a dataset. */
typedef struct {
    em3_run_config rc;
    em3_diag *d;
    em3_dataset *source, *ds; /* ds: source itself, or its items (a pretraining run) */
    em3_module *m;
    em3_jit *j;
    em3_exec *x;
} scoring;

static bool open_run(scoring *s, const char *run, const char *data, const char *ckpt, char *err, size_t errlen) {
    em3_run_config_init(&s->rc);
    char *pc = join(run, "config.yaml"), *pm = join(run, "model.ir");
    bool ok = em3_run_config_read(&s->rc, pc, err, errlen) && em3_run_config_finish(&s->rc, err, errlen);
    s->d = em3_diag_create(stderr);
    if (ok) {
        FILE *f = fopen(pm, "rb");
        char *text = NULL;
        size_t n = 0;
        if (f) {
            FILE *mem = open_memstream(&text, &n);
            char buf[65536];
            size_t r;
            while ((r = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, r, mem);
            fclose(mem);
            fclose(f);
            s->m = em3_module_parse(text, n, pm, s->d);
            free(text);
        }
        if (!s->m) ok = (snprintf(err, errlen, "cannot read the compiled model %s", pm), false);
    }
    if (ok) { /* only @predict is needed to score (and @forward, for a label-free run's loss) */
        for (int i = s->m->n_func - 1; i >= 0; i--)
            if (strcmp(s->m->func[i]->name, "predict") && (!s->rc.items_only || strcmp(s->m->func[i]->name, "forward")))
                em3_module_remove_func(s->m, s->m->func[i]);
        em3_data_options dopt = {0};
        s->ds = s->source = em3_dataset_open(data ? data : s->rc.data, &dopt, err, errlen);
        if (s->source && s->rc.items_only)
            s->ds = em3_dataset_items_view(s->source, s->rc.items_valid, s->rc.train.seed, err, errlen);
        ok = s->ds != NULL;
    }
    if (ok) ok = (s->j = jit(s->m, &s->rc, s->d, NULL)) != NULL;
    if (ok) {
        s->x = executor(s->m, s->j, s->rc.train.seed, err, errlen);
        ok = s->x && em3_exec_bind_dataset(s->x, s->ds, err, errlen);
    }
    if (ok) {
        char file[64];
        snprintf(file, sizeof file, "%s.ckpt", ckpt);
        char *pk = join(run, file);
        em3_train_state st;
        ok = em3_checkpoint_load(s->x, pk, &st, err, errlen) && em3_exec_precompute(s->x, err, errlen);
        free(pk);
    }
    free(pc);
    free(pm);
    return ok;
}

static void close_run(scoring *s) {
    em3_exec_free(s->x);
    em3_jit_free(s->j);
    em3_module_free(s->m);
    if (s->ds != s->source) em3_dataset_free(s->ds);
    em3_dataset_free(s->source);
    em3_diag_free(s->d);
    em3_run_config_free(&s->rc);
}

static bool parse_split(const char *s, em3_split *out) {
    for (int i = 0; i < EM3_SPLIT_COUNT; i++)
        if (!strcmp(s, em3_split_name((em3_split)i))) return *out = (em3_split)i, true;
    return false;
}

/* The options of the commands that read a run folder (eval, predict, export-embeddings):
 * --data, --checkpoint best|last, and where the command takes them --split and -o. Returns 0,
 * or the exit status of a usage mistake (already reported). */
typedef struct {
    const char *run, *data, *ckpt, *out;
    em3_split split;
} run_args;

static int parse_run_args(int argc, char **argv, const char *cmd, bool with_split, bool with_out, run_args *a) {
    static const struct option longopts[] = {{"data", required_argument, 0, OPT_DATA},
                                             {"split", required_argument, 0, OPT_SPLIT},
                                             {"checkpoint", required_argument, 0, OPT_CKPT},
                                             {0, 0, 0, 0}};
    *a = (run_args){.ckpt = "best", .split = EM3_SPLIT_TEST};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, with_out ? "o:" : "", longopts, NULL)) != -1) {
        if (c == OPT_DATA) a->data = optarg;
        else if (c == OPT_CKPT) a->ckpt = optarg;
        else if (c == 'o') a->out = optarg;
        else if (c == OPT_SPLIT && with_split && parse_split(optarg, &a->split)) continue;
        else return em3_usage_error(cmd, c == OPT_SPLIT && with_split ? "--split takes train, valid or test" : "unknown option");
    }
    if (optind != argc - 1) return em3_usage_error(cmd, "expected one run folder");
    if (strcmp(a->ckpt, "best") && strcmp(a->ckpt, "last")) return em3_usage_error(cmd, "--checkpoint takes best or last");
    a->run = argv[optind];
    return 0;
}

int em3_cmd_eval(int argc, char **argv) {
    run_args a;
    int bad = parse_run_args(argc, argv, "eval", true, false, &a);
    if (bad) return bad;
    scoring s = {0};
    char err[1024];
    int status = 1;
    em3_eval_result r;
    if (!open_run(&s, a.run, a.data, a.ckpt, err, sizeof err) ||
        !em3_evaluate(s.x, s.ds, a.split, &s.rc.train, &r, err, sizeof err)) {
        user_error("%s", err);
    } else {
        em3_eval_print_header(stdout, &r);
        em3_eval_print_row(stdout, em3_split_name(a.split), &r);
        status = 0;
    }
    close_run(&s);
    return status;
}

int em3_cmd_predict(int argc, char **argv) {
    run_args a;
    int bad = parse_run_args(argc, argv, "predict", true, true, &a);
    if (bad) return bad;
    if (!a.out) return em3_usage_error("predict", "-o SCORES.csv is required");
    const char *out = a.out;
    em3_split split = a.split;
    scoring s = {0};
    char err[1024];
    int status = 1;
    em3_afile *file = NULL;
    if (!open_run(&s, a.run, a.data, a.ckpt, err, sizeof err)) {
        user_error("%s", err);
    } else if (!(file = em3_afile_open(out))) {
        user_error("cannot write %s: %s", out, strerror(errno));
    } else {
        FILE *f = em3_afile_stream(file);
        const em3_compiled_func *pf = em3_exec_func(s.x, "predict");
        int64_t rows = em3_dataset_rows(s.ds, split), chunk = s.rc.train.eval_batch_size;
        bool ok = true;
        fprintf(f, "row");
        for (int k = 0; k < pf->n_outputs; k++) fprintf(f, ",%s", pf->outputs[k]);
        fputc('\n', f);
        em3_exec_input in[64];
        int64_t *idx = em3_xmalloc(sizeof(int64_t) * (size_t)chunk);
        void *bufs[64] = {0};
        for (int k = 0; k < pf->n_inputs && ok; k++) {
            const char *name = em3_node_s(pf->inputs[k], "name");
            const em3_column *col = em3_dataset_find(s.ds, split, name);
            if (!col) {
                ok = false;
                user_error("the model's input %s has no column in the %s split", name, em3_split_name(split));
                break;
            }
            int64_t w = 1;
            for (int i = 0; i < col->rank; i++) w *= col->dim[i];
            bufs[k] = em3_xmalloc((size_t)(chunk * w * 4));
            in[k] = (em3_exec_input){name, bufs[k]};
        }
        for (int64_t at = 0; ok && at < rows; at += chunk) {
            int64_t n = rows - at < chunk ? rows - at : chunk;
            for (int64_t i = 0; i < n; i++) idx[i] = at + i;
            for (int k = 0; k < pf->n_inputs; k++)
                em3_column_gather(em3_dataset_find(s.ds, split, in[k].name), idx, n, bufs[k]);
            if (!(ok = em3_exec_run(s.x, "predict", n, in, pf->n_inputs, err, sizeof err))) {
                user_error("%s", err);
                break;
            }
            for (int64_t i = 0; i < n; i++) {
                fprintf(f, "%lld", (long long)(at + i));
                for (int k = 0; k < pf->n_outputs; k++) {
                    em3_type t;
                    const float *o = em3_exec_output(s.x, "predict", pf->outputs[k], &t);
                    int64_t per = em3_type_numel(&t, n) / n;
                    for (int64_t e = 0; e < per; e++) fprintf(f, "%s%.9g", e ? " " : ",", (double)o[i * per + e]);
                }
                fputc('\n', f);
            }
        }
        for (int k = 0; k < pf->n_inputs; k++) free(bufs[k]);
        free(idx);
        int e = 0;
        if (!ok)
            em3_afile_abort(file);
        else if ((e = em3_afile_commit(file)))
            user_error("cannot write %s: %s", out, strerror(e));
        else {
            fprintf(stderr, "wrote %lld rows to %s\n", (long long)rows, out);
            status = 0;
        }
    }
    close_run(&s);
    return status;
}

/* For each @predict output, whether it depends on no input but `only`: outputs that are a
 * function of the item id alone (content embeddings) can be computed for every item. */
static bool *outputs_of_input_alone(const em3_func *f, const char *only) {
    uint64_t *dep = em3_xcalloc((size_t)f->n_node, sizeof *dep); /* bit k: the k-th input */
    uint64_t want = 0;
    for (int i = 0, k = 0; i < f->n_node; i++) {
        const em3_node *n = &f->node[i];
        if (n->op == EM3_OP_INPUT) {
            if (k < 64) dep[i] = 1ull << k;
            if (!strcmp(em3_node_s(n, "name"), only)) want = dep[i];
            k++;
        }
        for (int j = 0; j < n->n_in; j++) dep[i] |= dep[n->in[j]];
    }
    bool *alone = em3_xcalloc((size_t)f->n_out + 1, sizeof *alone);
    for (int o = 0; o < f->n_out; o++) alone[o] = want && dep[f->out[o].value] == want;
    free(dep);
    return alone;
}

/* Writes every embedding table of the model (a parameter NAME.table, rows × d) as NAME.npy,
 * and every @predict output that depends on the item id alone, computed for all item ids, as
 * OUTPUT.npy (row = item id; row 0, the padding id, is zeros). */
static bool export_embeddings(scoring *s, const char *dir, char *err, size_t errlen) {
    const em3_module *m = s->m;
    char path[4096];
    for (int g = 0; g < m->n_global; g++) {
        const em3_global *gl = &m->global[g];
        size_t len = strlen(gl->name);
        if ((gl->kind != EM3_GLOBAL_PARAM && gl->kind != EM3_GLOBAL_FROZEN) || gl->type.rank != 2 ||
            len < 6 || strcmp(gl->name + len - 6, ".table"))
            continue;
        snprintf(path, sizeof path, "%s/%.*s.npy", dir, (int)len - 6, gl->name);
        if (!em3_npy_write_f32(path, 2, gl->type.dim, em3_exec_global(s->x, gl->name), err, errlen)) return false;
        printf("wrote %s [%lld, %lld]: parameter %s\n", path, (long long)gl->type.dim[0], (long long)gl->type.dim[1],
               gl->name);
    }
    const em3_func *f = em3_module_find_func(m, "predict");
    const em3_compiled_func *pf = em3_exec_func(s->x, "predict");
    const char *item = em3_dataset_item(s->ds);
    const em3_node *item_in = NULL;
    for (int k = 0; k < pf->n_inputs; k++)
        if (item && !strcmp(em3_node_s(pf->inputs[k], "name"), item)) item_in = pf->inputs[k];
    if (!item_in || em3_node_i(item_in, "vocab") < 2) return true; /* no per-item outputs to compute */
    bool *alone = outputs_of_input_alone(f, item);
    int64_t items = em3_node_i(item_in, "vocab"), chunk = s->rc.train.eval_batch_size;
    em3_exec_input in[64];
    void *buf[64] = {0};
    for (int k = 0; k < pf->n_inputs; k++) { /* the other inputs do not reach these outputs: zeros */
        buf[k] = em3_xcalloc((size_t)em3_type_numel(&pf->inputs[k]->type, chunk), 4);
        in[k] = (em3_exec_input){em3_node_s(pf->inputs[k], "name"), buf[k]};
    }
    bool ok = true;
    for (int o = 0; o < f->n_out && ok; o++) {
        if (!alone[o]) continue;
        const em3_type *t = &f->node[f->out[o].value].type;
        int64_t per = em3_type_numel(t, 1); /* one row of the batch */
        float *all = em3_xcalloc((size_t)(items * per), sizeof(float));
        for (int64_t at = 1; at < items && ok; at += chunk) {
            int64_t n = items - at < chunk ? items - at : chunk;
            for (int k = 0; k < pf->n_inputs; k++)
                if (pf->inputs[k] == item_in)
                    for (int64_t i = 0; i < n; i++) ((int32_t *)buf[k])[i] = (int32_t)(at + i);
            ok = em3_exec_run(s->x, "predict", n, in, pf->n_inputs, err, errlen);
            if (ok) memcpy(all + at * per, em3_exec_output(s->x, "predict", f->out[o].name, NULL), sizeof(float) * (size_t)(n * per));
        }
        snprintf(path, sizeof path, "%s/%s.npy", dir, f->out[o].name);
        int64_t shape[2] = {items, per};
        if (ok) ok = em3_npy_write_f32(path, 2, shape, all, err, errlen);
        if (ok) printf("wrote %s [%lld, %lld]: output %s of every item id\n", path, (long long)items, (long long)per,
                       f->out[o].name);
        free(all);
    }
    for (int k = 0; k < pf->n_inputs; k++) free(buf[k]);
    free(alone);
    return ok;
}

int em3_cmd_export_embeddings(int argc, char **argv) {
    run_args a;
    int bad = parse_run_args(argc, argv, "export-embeddings", false, true, &a);
    if (bad) return bad;
    char *dflt = join(a.run, "embeddings");
    const char *out = a.out ? a.out : dflt;
    scoring s = {0};
    char err[1024];
    int status = 1;
    if (!open_run(&s, a.run, a.data, a.ckpt, err, sizeof err)) user_error("%s", err);
    else if (!em3_mkdir_p(out)) user_error("cannot create %s: %s", out, strerror(errno));
    else if (!export_embeddings(&s, out, err, sizeof err)) user_error("%s", err);
    else status = 0;
    close_run(&s);
    free(dflt);
    return status;
}
