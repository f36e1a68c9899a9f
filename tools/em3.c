/* tools/em3.c — the `em3` command: a table of subcommands, each with its summary and help text,
 * dispatched from argv[1]. Exit status: 0 success, 1 a user error in a model or data, 2 a
 * command-line mistake. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "driver.h"
#include "run_config.h"
#include "ir/support.h"

static const em3_command commands[] = {
#define CMD(NAME, FN, SUMMARY, HELP) {NAME, FN, SUMMARY, HELP},
#include "commands.def"
#undef CMD
};
enum { N_COMMANDS = sizeof commands / sizeof *commands };

static void overview(FILE *out) {
    fputs("usage: em3 <command> [options] [args]\n\n"
          "EM3 compiles recommendation models written in the EM3 model language into native\n"
          "code, trains them and serves them.\n\ncommands:\n",
          out);
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fputs("\n'em3 help COMMAND' or 'em3 COMMAND --help' describes a command.\n", out);
}

/* A command's help; `train` appends the table of run options it shares with --set. */
static void print_help(const em3_command *c, FILE *out) {
    fputs(c->help, out);
    if (c->fn == em3_cmd_train || c->fn == em3_cmd_pretrain) em3_run_config_help(out);
}

static const em3_command *find(const char *name) {
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(commands[i].name, name)) return &commands[i];
    return NULL;
}

int em3_cmd_help(int argc, char **argv) {
    if (argc < 2) {
        overview(stdout);
        return 0;
    }
    const em3_command *c = find(argv[1]);
    if (!c) {
        fprintf(stderr, "em3: error: no command '%s'\n", argv[1]);
        overview(stderr);
        return 2;
    }
    print_help(c, stdout);
    return 0;
}

int main(int argc, char **argv) {
    /* log lines of a long run reach a pipe or file as they are written, not at exit */
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        overview(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("em3 %s (IR text format v1)\n", EM3_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        overview(stdout);
        return 0;
    }
    const em3_command *c = find(argv[1]);
    if (!c) {
        fprintf(stderr, "em3: error: no command '%s'\n\n", argv[1]);
        overview(stderr);
        return 2;
    }
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            print_help(c, stdout);
            return 0;
        }
    return c->fn(argc - 1, argv + 1);
}
