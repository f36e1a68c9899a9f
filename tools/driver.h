/* tools/driver.h — what the `em3` subcommands share: the options that choose and configure a
 * model source (-I, --set, --model) and the step that turns a source file into IR. */
#ifndef EM3_DRIVER_H
#define EM3_DRIVER_H

#include "frontend/frontend.h"
#include "passes/passes.h"

typedef struct {
    em3_frontend_options fe;
    const char **dirs;
    em3_const_override *over;
} em3_source_opts;

/* getopt_long entries for the shared options; commands append them to their own tables. */
#define EM3_SOURCE_OPTIONS                                                                  \
    {"import-dir", required_argument, 0, 'I'}, {"set", required_argument, 0, 'S'},          \
        {"model", required_argument, 0, 'M'}

#define EM3_SOURCE_HELP                                                                       \
    "  -I, --import-dir DIR   also search DIR for imported files\n"                           \
    "      --set NAME=VALUE   override a model constant (repeatable), e.g. --set d=32\n"      \
    "      --model NAME       the model to use when the file holds several\n"

/* Handles a shared option; false when `c` is not one (or its argument is malformed, after
 * printing why). */
bool em3_source_option(em3_source_opts *o, int c, const char *arg, bool *ok);
void em3_source_opts_free(em3_source_opts *o);

/* The program name and a uniform way to report command-line mistakes (exit status 2). */
int em3_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
