/* tools/cmd_ops.c — `em3 ops`: the op table of ir/ops.def as text or Markdown. docs/ir.md's
 * op list is this command's Markdown output, and a lit test keeps the two identical. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "driver.h"

static void flags_text(unsigned f, char *buf, size_t n) {
    snprintf(buf, n, "%s%s%s%s%s%s%s", f & EM3_OPF_INPLACE ? "in-place " : "",
             f & EM3_OPF_NOGRAD_IN0 ? "no-grad(0) " : "", f & EM3_OPF_NOGRAD_IN1 ? "no-grad(1) " : "",
             f & EM3_OPF_NOGRAD_IN2 ? "no-grad(2) " : "",
             f & EM3_OPF_NOGRAD_IN3 ? "no-grad(3) " : "", f & EM3_OPF_NOGRAD_ALL ? "no-grad(all) " : "",
             f & EM3_OPF_SIDE_EFFECT ? "side-effect " : "");
    size_t l = strlen(buf);
    if (l && buf[l - 1] == ' ') buf[l - 1] = 0;
}

int em3_cmd_ops(int argc, char **argv) {
    bool md = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--markdown"))
            md = true;
        else
            return em3_usage_error("ops", "unknown argument '%s'", argv[i]);
    }
    if (md) {
        puts("| op | operands | kind | attributes | flags |");
        puts("|---|---|---|---|---|");
    }
    for (int op = 0; op < EM3_OP_COUNT; op++) {
        char flags[128], arity[16];
        flags_text(em3_op_flags((em3_op)op), flags, sizeof flags);
        int a = em3_op_arity((em3_op)op);
        snprintf(arity, sizeof arity, a < 0 ? "1+" : "%d", a);
        const char *attrs = em3_op_attr_text((em3_op)op);
        if (md)
            printf("| `%s` | %s | %s | %s | %s |\n", em3_op_name((em3_op)op), arity,
                   em3_op_kind_name(em3_op_kind_of((em3_op)op)), *attrs ? attrs : "",
                   flags);
        else
            printf("%-14s %-3s %-13s %-40s %s\n", em3_op_name((em3_op)op), arity,
                   em3_op_kind_name(em3_op_kind_of((em3_op)op)), attrs, flags);
    }
    return 0;
}
