/* frontend/ast.h — the syntax tree of the EM3 model language. One generic node type keeps the
 * Bison actions short; `kind` says which fields are meaningful (documented per kind below).
 * Everything lives in the parse's arena and is freed with it. */
#ifndef EM3_AST_H
#define EM3_AST_H

#include <stdint.h>

#include "ir/diag.h"
#include "ir/support.h"

typedef enum {
    /* expressions */
    AST_INT,     /* ival */
    AST_FLOAT,   /* fval */
    AST_STRING,  /* str */
    AST_BOOL,    /* ival */
    AST_NONE,
    AST_NAME,    /* str */
    AST_LIST,    /* list: elements */
    AST_BINARY,  /* op, a, b */
    AST_UNARY,   /* op, a */
    AST_CALL,    /* a: callee, list: arguments (AST_KWARG for name = value) */
    AST_KWARG,   /* str: name, a: value */
    AST_INDEX,   /* a: object, list: index items (expressions or AST_SLICE) */
    AST_SLICE,   /* a: start or NULL, b: end or NULL */
    AST_ATTR,    /* a: object, str: attribute */
    AST_REPEAT,  /* str: index variable or NULL, a: count, b: body expression */
    /* statements and declarations */
    AST_IMPORT,  /* str: path */
    AST_CONST,   /* list: AST_KWARG name = value, one per constant */
    AST_PARAM,   /* str: name, a: type, b: initialiser, ival: 0, 1 frozen, 2 trainable */
    AST_INPUT,   /* str: name, a: type, list: options (AST_KWARG: vocab, pad, negative) */
    AST_LABEL,   /* str: name, a: type */
    AST_DATA,    /* str: name, a: type */
    AST_GRAPH,   /* str: name, a: type, b: the builder call, as user_item(dropout = 0.8) */
    AST_MODULE,  /* str: name, list: parameters (AST_FORMAL), list2: body */
    AST_MODEL,   /* str: name, list2: body */
    AST_FN,      /* str: name, list: parameters (AST_FORMAL), a: result type or NULL, list2: body */
    AST_FORMAL,  /* str: name, a: type or NULL, b: default or NULL */
    AST_ASSIGN,  /* str: name, a: value, b: shared instance (AST_NAME) or NULL, ival: 1 shares
                    frozen, 2 `= Module(...) frozen` (the instance's parameters frozen) */
    AST_OUTPUT,  /* str: name, a: value */
    AST_LOSS,    /* a: value */
    AST_RETURN,  /* a: value or NULL */
    AST_FOR,     /* str: variable, a: iterable or range start, b: range end or NULL, list2: body */
    AST_IF,      /* a: condition, list2: then, list: else (NULL when absent) */
    AST_ASSERT,  /* a: condition, b: message or NULL */
    AST_EXPR,    /* a: expression evaluated for its effect */
    AST_TYPE,    /* str: dtype name, list: dimensions */
} ast_kind;

/* Binary and unary operators (AST_BINARY / AST_UNARY `op`). */
typedef enum {
    AST_OP_ADD, AST_OP_SUB, AST_OP_MUL, AST_OP_DIV, AST_OP_FLOORDIV, AST_OP_MOD, AST_OP_MATMUL,
    AST_OP_EQ, AST_OP_NE, AST_OP_LT, AST_OP_LE, AST_OP_GT, AST_OP_GE,
    AST_OP_AND, AST_OP_OR, AST_OP_NEG, AST_OP_NOT,
} ast_op;

typedef struct ast ast;
struct ast {
    ast_kind kind;
    em3_loc loc;
    int op;
    int64_t ival;
    double fval;
    const char *str;
    ast *a, *b;
    ast *list, *list2; /* singly linked through `next` */
    ast *next;
};

/* A list under construction (Bison semantic value). */
typedef struct {
    ast *head, *tail;
} ast_list;

ast *ast_new(em3_arena *a, ast_kind k, em3_loc loc);
ast_list ast_list_append(ast_list l, ast *n);
int ast_list_length(const ast *head);
const char *ast_op_text(ast_op op);

/* The result of parsing one file. */
typedef struct {
    const char *file; /* the diag engine's stable name */
    ast *items;       /* top-level statements */
} ast_file;

/* Parses `text` (len bytes, may hold NUL bytes) into `out`, allocating in `arena`. Syntax
 * errors go to `d`; returns false if there were any. */
bool em3_parse_source(const char *text, size_t len, const char *file, em3_arena *arena,
                      em3_diag *d, ast_file *out);

#endif
