/* tests/fuzz/fuzz_frontend.c — libFuzzer target for the DSL frontend (frontend/): any bytes
 * must either compile to a module that verifies or be rejected with at least one diagnostic —
 * never crash, hang, over-read, leak or exhaust the stack — and the elaboration limits must keep
 * every input to well under the fuzzer's timeout.
 *
 * Imports resolve as for `em3 check`: the standard library through EM3_PATH, which the
 * initialiser points at models/lib of the source tree (the frontend knows the tree's models/
 * folder as em3_frontend_stdlib_dir()), so seeds such as models/din.em3 elaborate fully.
 * Seeds: the .em3 files of models/, models/lib/ and (recursively) tests/lit/. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "frontend/frontend.h"

/* libFuzzer's entry points take no context, so the sink for diagnostics is opened once here. */
static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    devnull = fopen("/dev/null", "w");
    EM3_ASSERT(devnull, "cannot open /dev/null");
    char lib[4096];
    snprintf(lib, sizeof lib, "%s/lib", em3_frontend_stdlib_dir());
    setenv("EM3_PATH", lib, 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    em3_diag *d = em3_diag_create(devnull);
    em3_module *m = em3_frontend_compile_source("fuzz.em3", (const char *)data, size, NULL, d);
    /* a rejected program always says why; an accepted one has no errors (and has verified) */
    EM3_ASSERT((m == NULL) == (em3_diag_error_count(d) > 0), "module %p with %d errors", (void *)m,
               em3_diag_error_count(d));
    em3_module_free(m);
    em3_diag_free(d);
    return 0;
}
