/* frontend/ast.c — syntax tree constructors used by the Bison actions. */
#include "ast.h"

ast *ast_new(em3_arena *a, ast_kind k, em3_loc loc) {
    ast *n = em3_arena_alloc(a, sizeof(ast));
    n->kind = k;
    n->loc = loc;
    return n;
}

ast_list ast_list_append(ast_list l, ast *n) {
    if (!n) return l;
    if (!l.head)
        l.head = n;
    else
        l.tail->next = n;
    l.tail = n;
    return l;
}

int ast_list_length(const ast *head) {
    int n = 0;
    for (; head; head = head->next) n++;
    return n;
}

const char *ast_op_text(ast_op op) {
    static const char *const text[] = {"+",  "-",  "*", "/",  "//", "%",   "@",  "==", "!=",
                                       "<",  "<=", ">", ">=", "and", "or", "-", "not"};
    EM3_ASSERT(op >= 0 && op <= AST_OP_NOT, "bad operator %d", (int)op);
    return text[op];
}
