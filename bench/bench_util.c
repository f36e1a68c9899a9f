/* bench/bench_util.c — see bench_util.h. */
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void em3_bench_sort(double *x, int n) { qsort(x, (size_t)n, sizeof *x, cmp_double); }

double em3_bench_own_peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kib = NAN;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kib = atof(line + 6);
    if (f) fclose(f);
    return kib / 1024;
}

double em3_bench_peak_rss_of(const char *flag, const char *args) {
    char exe[4096], cmd[8192];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return NAN;
    exe[n] = 0;
    snprintf(cmd, sizeof cmd, "'%s' %s %s", exe, flag, args);
    FILE *p = popen(cmd, "r");
    double mib = NAN;
    if (p && fscanf(p, "%lf", &mib) != 1) mib = NAN;
    if (p && pclose(p)) mib = NAN;
    return mib;
}
