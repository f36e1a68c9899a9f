/* bench/lora_placement.c — what each way of encoding EM3-DIN's behaviour sequence costs per
 * training step as the sequence grows: history = "full" (fine-tune the encoder through the
 * history), "all" (LoRA on every linear), "top" (LoRA on the output projection, the frozen
 * rest cached per item by cache-frozen) and "frozen" (no adapters, fully cached), for
 * L = 20 .. 400. Each configuration compiles models/em3_din.em3 with --set seq=L history=MODE
 * exactly as em3 train does (-O2, Adam), runs full training steps (forward, backward, update)
 * on random ids through the JIT, and reports the median step time, the memory the compiled
 * step plans (arena + globals, cache tables included) and the peak RSS of a process that runs
 * it. Prints a Markdown table. Not a test; docs/performance.md records its output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

#define REPS 5

static const char *const modes[] = {"full", "all", "top", "frozen"};
static const int lengths[] = {20, 50, 100, 200, 400};
enum { N_MODES = 4, N_LENGTHS = 5 };

static em3_bench_step *prepare(const char *model, const char *mode, int L, int64_t batch) {
    char seq[16];
    snprintf(seq, sizeof seq, "%d", L);
    const em3_const_override ov[] = {{"seq", seq, false}, {"history", mode, false}};
    return em3_bench_step_prepare(model, ov, 2, NULL, batch, 5);
}

int main(int argc, char **argv) {
    const char *model = "models/em3_din.em3";
    int64_t batch = 64;
    if (argc == 6 && !strcmp(argv[1], "--once")) { /* a fresh process: compile, one step, VmHWM */
        em3_bench_step *r = prepare(argv[2], argv[3], atoi(argv[4]), atoll(argv[5]));
        em3_bench_step_run(r);
        em3_bench_step_free(r);
        printf("%.1f\n", em3_bench_own_peak_rss());
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else {
            fprintf(stderr, "usage: bench_lora_placement [--batch N] [--model FILE.em3]  (run from the source folder)\n");
            return 2;
        }
    }
    printf("EM3-DIN (%s, d = 64, 10,000 items) training step — forward, backward, Adam — at batch %lld, "
           "through the JIT; median of %d steps after one warm-up. Planned memory: the step's arena plus "
           "every parameter, optimizer state and cache table. Peak RSS: a process that compiles the "
           "configuration and runs one step. Precompute: filling the cache tables once.\n\n",
           model, (long long)batch, REPS);
    printf("| L | history | median ms/step (min – max) | vs full at L = 50 | planned MiB | peak RSS MiB | precompute s |\n"
           "|---:|---|---:|---:|---:|---:|---:|\n");
    typedef struct {
        double t[REPS], planned, peak, precompute;
    } row;
    row rows[N_LENGTHS][N_MODES];
    for (int li = 0; li < N_LENGTHS; li++)
        for (int mi = 0; mi < N_MODES; mi++) {
            fprintf(stderr, "  L = %d, history = %s\n", lengths[li], modes[mi]);
            row *w = &rows[li][mi];
            em3_bench_step *r = prepare(model, modes[mi], lengths[li], batch);
            em3_bench_step_run(r);
            for (int k = 0; k < REPS; k++) w->t[k] = 1e3 * em3_bench_step_run(r);
            em3_bench_sort(w->t, REPS);
            w->planned = (double)r->planned_bytes / (1 << 20);
            w->precompute = r->precompute_s;
            em3_bench_step_free(r);
            char args[512];
            snprintf(args, sizeof args, "'%s' %s %d %lld", model, modes[mi], lengths[li], (long long)batch);
            w->peak = em3_bench_peak_rss_of("--once", args);
        }
    const row *base = &rows[1][0]; /* full fine-tuning at L = 50 */
    for (int li = 0; li < N_LENGTHS; li++)
        for (int mi = 0; mi < N_MODES; mi++) {
            const row *w = &rows[li][mi];
            printf("| %d | %s | %.0f (%.0f – %.0f) | %.2f× time, %.2f× RSS | %.0f | %.0f | %.2f |\n", lengths[li],
                   modes[mi], w->t[REPS / 2], w->t[0], w->t[REPS - 1], w->t[REPS / 2] / base->t[REPS / 2],
                   w->peak / base->peak, w->planned, w->peak, w->precompute);
        }
    return 0;
}
