/* tests/fuzz/fuzz_ir_parser.c — libFuzzer target for the IR text parser (ir/parse.c). Any bytes
 * must either parse or be rejected with diagnostics — never crash, hang, over-read or leak —
 * and whatever parses must print to text that parses back to the very same text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"

/* libFuzzer's entry points take no context, so the sink for diagnostics is opened once here. */
static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    devnull = fopen("/dev/null", "w");
    EM3_ASSERT(devnull, "cannot open /dev/null");
    return 0;
}

static em3_module *parse(const char *text, size_t len, FILE *diag_out) {
    em3_diag *d = em3_diag_create(diag_out);
    em3_module *m = em3_module_parse(text, len, "fuzz.ir", d);
    em3_diag_free(d);
    return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    em3_module *m = parse((const char *)data, size, devnull);
    if (!m) return 0;
    char *s1 = em3_module_to_string(m, EM3_PRINT_LOC);
    em3_module *m2 = parse(s1, strlen(s1), stderr);
    EM3_ASSERT(m2, "the printed module does not parse back:\n%s", s1);
    char *s2 = em3_module_to_string(m2, EM3_PRINT_LOC);
    EM3_ASSERT(!strcmp(s1, s2), "print -> parse -> print changed the text:\n%s\n--- became:\n%s",
               s1, s2);
    free(s1);
    free(s2);
    em3_module_free(m2);
    em3_module_free(m);
    return 0;
}
