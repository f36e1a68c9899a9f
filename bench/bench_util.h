/* bench/bench_util.h — what the benchmarks share: sorting repetitions for medians and peak
 * resident memory, of this process or of a fresh run of it. */
#ifndef EM3_BENCH_UTIL_H
#define EM3_BENCH_UTIL_H

/* Sorts n doubles ascending (medians and ranges of repetitions). */
void em3_bench_sort(double *x, int n);
/* This process's peak resident set (VmHWM), in MiB; NaN when /proc cannot tell. */
double em3_bench_own_peak_rss(void);
/* The number a fresh run of this program prints when given `flag args` (args already quoted
 * for the shell): its own peak RSS in MiB. A fresh process, because a spawned child's
 * rusage would carry the parent's high-water mark across exec. NaN on failure. */
double em3_bench_peak_rss_of(const char *flag, const char *args);

#endif
