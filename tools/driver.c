/* tools/driver.c — shared pieces of the `em3` subcommands (see driver.h). */
#include "driver.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

bool em3_source_option(em3_source_opts *o, int c, const char *arg, bool *ok) {
    switch (c) {
    case 'I':
        o->dirs = em3_xrealloc(o->dirs, sizeof(char *) * (size_t)(o->fe.n_import_dirs + 1));
        o->dirs[o->fe.n_import_dirs++] = arg;
        o->fe.import_dirs = o->dirs;
        return true;
    case 'S': {
        const char *eq = strchr(arg, '=');
        if (!eq || eq == arg) {
            *ok = false;
            em3_usage_error(NULL, "--set needs NAME=VALUE, got '%s'", arg);
            return true;
        }
        o->over = em3_xrealloc(o->over, sizeof(*o->over) * (size_t)(o->fe.n_overrides + 1));
        char *name = em3_xstrdup(arg);
        name[eq - arg] = 0;
        o->over[o->fe.n_overrides++] = (em3_const_override){name, eq + 1, false};
        o->fe.overrides = o->over;
        return true;
    }
    case 'M': o->fe.model = arg; return true;
    default: return false;
    }
}

void em3_source_opts_free(em3_source_opts *o) {
    for (int i = 0; i < o->fe.n_overrides; i++) free((char *)o->over[i].name);
    free(o->over);
    free(o->dirs);
}

int em3_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("em3: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (cmd)
        fprintf(stderr, "\n(see 'em3 help %s')\n", cmd);
    else
        fputc('\n', stderr);
    return 2;
}
