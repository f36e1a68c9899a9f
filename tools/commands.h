/* tools/commands.h — the subcommands of `em3`, declared from commands.def. */
#ifndef EM3_COMMANDS_H
#define EM3_COMMANDS_H

typedef int em3_command_fn(int argc, char **argv); /* argv[0] is the command's name */

typedef struct {
    const char *name;
    em3_command_fn *fn;
    const char *summary;
    const char *help;
} em3_command;

#define CMD(NAME, FN, SUMMARY, HELP) em3_command_fn FN;
#include "commands.def"
#undef CMD

#endif
