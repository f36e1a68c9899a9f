/* frontend/lex_state.h — the scanner's per-parse state (Flex's yyextra), shared with the
 * parser's error reporting. Kept apart from lexer.l so that parser.y can see it. */
#ifndef EM3_LEX_STATE_H
#define EM3_LEX_STATE_H

#include <stdbool.h>

#include "ast.h"

#define EM3_LEX_MAX_NEST 256 /* brackets open at once; deeper input is rejected, not recursed */

typedef struct {
    em3_diag *diag;
    em3_arena *arena;
    const char *file;
    int line, col;   /* position of the next byte */
    int last_tok;    /* the last token returned, for newline-as-separator insertion */
    char nest[EM3_LEX_MAX_NEST];
    em3_loc nest_loc[EM3_LEX_MAX_NEST]; /* where each open bracket is, for "not closed" */
    int depth;       /* open (, [ and { */
    bool too_deep;   /* reported once */
    bool eof_reported;     /* an error at the end of the input was given: no second one */
    em3_loc comment; /* start of the open block comment */
    int errors;
} em3_lex_state;

#endif
