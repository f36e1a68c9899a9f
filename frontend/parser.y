/* frontend/parser.y — the grammar of the EM3 model language (Bison, pure, with locations).
 *
 * Modules, models and functions share one statement grammar; which statements may appear
 * where (a `param` only in a module, `output` only in a model's forward) is checked by the
 * elaborator, which can say so in words instead of "syntax error". Statements end at a
 * separator token that the scanner makes from newlines (see lexer.l) or from ';'. */
%define api.pure full
%define parse.error verbose
%locations
%expect 0
%param {yyscan_t scanner}
%parse-param {em3_parse_ctx *ctx}

%code requires {
#include "ast.h"
#include "lex_state.h"
typedef void *yyscan_t;
typedef struct {
    em3_lex_state *lex;
    ast *items;
} em3_parse_ctx;
}

%code {
#include "lexer.h"

/* Nesting is bounded so that no later recursive walk of the tree can exhaust the C stack. */
#define YYMAXDEPTH 1000

static em3_loc L(em3_parse_ctx *ctx, YYLTYPE l) {
    return (em3_loc){ctx->lex->file, l.first_line, l.first_column};
}
#define NODE(kind, loc) ast_new(ctx->lex->arena, (kind), L(ctx, (loc)))

static ast *binary(em3_parse_ctx *ctx, YYLTYPE loc, ast_op op, ast *a, ast *b) {
    ast *n = NODE(AST_BINARY, loc);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

/* Go's rule, with Go's reason: the newline after '}' ends the if statement, so an `else` on
 * the next line starts a statement of its own. It parses as one, so that the message can say
 * why and nothing after it is misread. */
static void orphan_else(em3_parse_ctx *ctx, YYLTYPE loc) {
    ctx->lex->errors++;
    em3_diag_error(ctx->lex->diag, L(ctx, loc), "'else' must be on the same line as the '}' that "
                                                "closes the if block");
}

static void yyerror(YYLTYPE *loc, yyscan_t scanner, em3_parse_ctx *ctx, const char *msg) {
    (void)scanner;
    if (!strcmp(msg, "memory exhausted")) msg = "the program is nested too deeply";
    ctx->lex->errors++;
    em3_diag_error(ctx->lex->diag, L(ctx, *loc), "%s", msg);
}
}

%union {
    int64_t ival;
    double fval;
    const char *str;
    ast *node;
    ast_list list;
}

%token <str> IDENT "name"
%token <ival> INT "integer"
%token <fval> FLOAT "number"
%token <str> STRING "string"
%token SEP "end of statement"
%token IMPORT "import" CONST "const" MODULE "module" MODEL "model" PARAM "param"
%token INPUT "input" LABEL "label" DATA "data" GRAPH "graph" FN "fn" OUTPUT "output" LOSS "loss"
%token RETURN "return" FOR "for" IN "in" IF "if" ELSE "else" ASSERT "assert"
%token REPEAT "repeat" SHARES "shares" FROZEN "frozen" TRAINABLE "trainable"
%token TRUE "true" FALSE "false" NONE "none"
%token AND "and" OR "or" NOT "not"
%token EQ "==" NE "!=" LE "<=" GE ">=" FLOORDIV "//" ARROW "->" DOTDOT ".."

%left OR
%left AND
%precedence NOT
%nonassoc EQ NE '<' LE '>' GE
%left '+' '-'
%left '*' '/' FLOORDIV '%' '@'
%precedence UMINUS

%type <list> stmts block const_list formals formal_list input_opts args arg_list exprs
%type <list> index_items dims
%type <node> stmt if_stmt type formal arg expr postfix primary index_item opt_expr opt_result
%type <node> opt_default opt_type const_item
%type <ival> opt_frozen param_mode

%%

file
    : stmts                         { ctx->items = $1.head; }
    ;

stmts
    : %empty                        { $$ = (ast_list){0}; }
    | stmts SEP                     { $$ = $1; }
    | stmts stmt SEP                { $$ = ast_list_append($1, $2); }
    | stmts error SEP               { $$ = $1; yyerrok; }
    ;

block
    : '{' stmts '}'                 { $$ = $2; }
    | '{' stmts error '}'           { $$ = $2; yyerrok; } /* recover inside the braces: a bad
                                                             last line does not eat the '}' */
    ;

stmt
    : IMPORT STRING                 { $$ = NODE(AST_IMPORT, @$); $$->str = $2; }
    | CONST const_list              { $$ = NODE(AST_CONST, @$); $$->list = $2.head; }
    | PARAM IDENT ':' type param_mode '=' expr {
                                      $$ = NODE(AST_PARAM, @2); $$->str = $2; $$->a = $4;
                                      $$->ival = $5; $$->b = $7; }
    | INPUT IDENT ':' type input_opts {
                                      $$ = NODE(AST_INPUT, @2); $$->str = $2; $$->a = $4;
                                      $$->list = $5.head; }
    | LABEL IDENT ':' type          { $$ = NODE(AST_LABEL, @2); $$->str = $2; $$->a = $4; }
    | DATA IDENT ':' type           { $$ = NODE(AST_DATA, @2); $$->str = $2; $$->a = $4; }
    | GRAPH IDENT ':' type '=' expr { $$ = NODE(AST_GRAPH, @2); $$->str = $2; $$->a = $4; $$->b = $6; }
    | MODULE IDENT '(' formals ')' block {
                                      $$ = NODE(AST_MODULE, @2); $$->str = $2;
                                      $$->list = $4.head; $$->list2 = $6.head; }
    | MODULE IDENT block            { $$ = NODE(AST_MODULE, @2); $$->str = $2; $$->list2 = $3.head; }
    | MODEL IDENT block             { $$ = NODE(AST_MODEL, @2); $$->str = $2; $$->list2 = $3.head; }
    | FN IDENT '(' formals ')' opt_result block {
                                      $$ = NODE(AST_FN, @2); $$->str = $2; $$->list = $4.head;
                                      $$->a = $6; $$->list2 = $7.head; }
    | IDENT '=' expr                { $$ = NODE(AST_ASSIGN, @1); $$->str = $1; $$->a = $3; }
    | IDENT '=' expr FROZEN          { $$ = NODE(AST_ASSIGN, @1); $$->str = $1; $$->a = $3; $$->ival = 2; }
    | IDENT '=' expr SHARES IDENT opt_frozen {
                                      $$ = NODE(AST_ASSIGN, @1); $$->str = $1; $$->a = $3;
                                      $$->b = NODE(AST_NAME, @5); $$->b->str = $5; $$->ival = $6; }
    | OUTPUT IDENT '=' expr         { $$ = NODE(AST_OUTPUT, @2); $$->str = $2; $$->a = $4; }
    | LOSS '=' expr                 { $$ = NODE(AST_LOSS, @1); $$->a = $3; }
    | RETURN                        { $$ = NODE(AST_RETURN, @1); }
    | RETURN expr                   { $$ = NODE(AST_RETURN, @1); $$->a = $2; }
    | FOR IDENT IN expr block       { $$ = NODE(AST_FOR, @1); $$->str = $2; $$->a = $4; $$->list2 = $5.head; }
    | FOR IDENT IN expr DOTDOT expr block {
                                      $$ = NODE(AST_FOR, @1); $$->str = $2; $$->a = $4; $$->b = $6;
                                      $$->list2 = $7.head; }
    | if_stmt                       { $$ = $1; }
    | ELSE block                    { $$ = NULL; orphan_else(ctx, @1); }
    | ELSE if_stmt                  { $$ = NULL; orphan_else(ctx, @1); }
    | ASSERT expr                   { $$ = NODE(AST_ASSERT, @1); $$->a = $2; }
    | ASSERT expr ',' expr          { $$ = NODE(AST_ASSERT, @1); $$->a = $2; $$->b = $4; }
    | expr                          { $$ = NODE(AST_EXPR, @1); $$->a = $1; }
    ;

if_stmt
    : IF expr block                 { $$ = NODE(AST_IF, @1); $$->a = $2; $$->list2 = $3.head; }
    | IF expr block ELSE block      {
                                      $$ = NODE(AST_IF, @1); $$->a = $2; $$->list2 = $3.head;
                                      /* an empty else still differs from none: mark it */
                                      $$->list = $5.head ? $5.head : NODE(AST_NONE, @4); }
    | IF expr block ELSE if_stmt    { $$ = NODE(AST_IF, @1); $$->a = $2; $$->list2 = $3.head; $$->list = $5; }
    ;

const_list
    : const_item                    { $$ = ast_list_append((ast_list){0}, $1); }
    | const_list ',' const_item     { $$ = ast_list_append($1, $3); }
    ;

const_item
    : IDENT '=' expr                { $$ = NODE(AST_KWARG, @1); $$->str = $1; $$->a = $3; }
    ;

opt_frozen
    : %empty                        { $$ = 0; }
    | FROZEN                        { $$ = 1; }
    ;

param_mode
    : %empty                        { $$ = 0; }
    | FROZEN                        { $$ = 1; }
    | TRAINABLE                     { $$ = 2; }
    ;

input_opts
    : %empty                        { $$ = (ast_list){0}; }
    | input_opts IDENT expr         {
                                      ast *o = NODE(AST_KWARG, @2); o->str = $2; o->a = $3;
                                      $$ = ast_list_append($1, o); }
    ;

type
    : IDENT '[' ']'                 { $$ = NODE(AST_TYPE, @1); $$->str = $1; }
    | IDENT '[' dims ']'            { $$ = NODE(AST_TYPE, @1); $$->str = $1; $$->list = $3.head; }
    ;

dims
    : expr                          { $$ = ast_list_append((ast_list){0}, $1); }
    | dims ',' expr                 { $$ = ast_list_append($1, $3); }
    ;

formals
    : %empty                        { $$ = (ast_list){0}; }
    | formal_list                   { $$ = $1; }
    | formal_list ','               { $$ = $1; }
    ;

formal_list
    : formal                        { $$ = ast_list_append((ast_list){0}, $1); }
    | formal_list ',' formal        { $$ = ast_list_append($1, $3); }
    ;

formal
    : IDENT opt_type opt_default    { $$ = NODE(AST_FORMAL, @1); $$->str = $1; $$->a = $2; $$->b = $3; }
    ;

opt_type
    : %empty                        { $$ = NULL; }
    | ':' type                      { $$ = $2; }
    ;

opt_default
    : %empty                        { $$ = NULL; }
    | '=' expr                      { $$ = $2; }
    ;

opt_result
    : %empty                        { $$ = NULL; }
    | ARROW type                    { $$ = $2; }
    ;

expr
    : postfix                       { $$ = $1; }
    | expr OR expr                  { $$ = binary(ctx, @2, AST_OP_OR, $1, $3); }
    | expr AND expr                 { $$ = binary(ctx, @2, AST_OP_AND, $1, $3); }
    | expr EQ expr                  { $$ = binary(ctx, @2, AST_OP_EQ, $1, $3); }
    | expr NE expr                  { $$ = binary(ctx, @2, AST_OP_NE, $1, $3); }
    | expr '<' expr                 { $$ = binary(ctx, @2, AST_OP_LT, $1, $3); }
    | expr LE expr                  { $$ = binary(ctx, @2, AST_OP_LE, $1, $3); }
    | expr '>' expr                 { $$ = binary(ctx, @2, AST_OP_GT, $1, $3); }
    | expr GE expr                  { $$ = binary(ctx, @2, AST_OP_GE, $1, $3); }
    | expr '+' expr                 { $$ = binary(ctx, @2, AST_OP_ADD, $1, $3); }
    | expr '-' expr                 { $$ = binary(ctx, @2, AST_OP_SUB, $1, $3); }
    | expr '*' expr                 { $$ = binary(ctx, @2, AST_OP_MUL, $1, $3); }
    | expr '/' expr                 { $$ = binary(ctx, @2, AST_OP_DIV, $1, $3); }
    | expr FLOORDIV expr            { $$ = binary(ctx, @2, AST_OP_FLOORDIV, $1, $3); }
    | expr '%' expr                 { $$ = binary(ctx, @2, AST_OP_MOD, $1, $3); }
    | expr '@' expr                 { $$ = binary(ctx, @2, AST_OP_MATMUL, $1, $3); }
    | '-' expr %prec UMINUS         { $$ = NODE(AST_UNARY, @1); $$->op = AST_OP_NEG; $$->a = $2; }
    | NOT expr                      { $$ = NODE(AST_UNARY, @1); $$->op = AST_OP_NOT; $$->a = $2; }
    ;

postfix
    : primary                       { $$ = $1; }
    | postfix '(' args ')'          { $$ = NODE(AST_CALL, @2); $$->a = $1; $$->list = $3.head; }
    | postfix '[' index_items ']'   { $$ = NODE(AST_INDEX, @2); $$->a = $1; $$->list = $3.head; }
    | postfix '.' IDENT             { $$ = NODE(AST_ATTR, @3); $$->a = $1; $$->str = $3; }
    ;

primary
    : INT                           { $$ = NODE(AST_INT, @1); $$->ival = $1; }
    | FLOAT                         { $$ = NODE(AST_FLOAT, @1); $$->fval = $1; }
    | STRING                        { $$ = NODE(AST_STRING, @1); $$->str = $1; }
    | TRUE                          { $$ = NODE(AST_BOOL, @1); $$->ival = 1; }
    | FALSE                         { $$ = NODE(AST_BOOL, @1); $$->ival = 0; }
    | NONE                          { $$ = NODE(AST_NONE, @1); }
    | IDENT                         { $$ = NODE(AST_NAME, @1); $$->str = $1; }
    | '(' expr ')'                  { $$ = $2; }
    | '[' ']'                       { $$ = NODE(AST_LIST, @1); }
    | '[' exprs ']'                 { $$ = NODE(AST_LIST, @1); $$->list = $2.head; }
    | '[' exprs ',' ']'             { $$ = NODE(AST_LIST, @1); $$->list = $2.head; }
    | REPEAT expr '{' expr SEP '}'  { $$ = NODE(AST_REPEAT, @1); $$->a = $2; $$->b = $4; }
    | REPEAT IDENT IN expr '{' expr SEP '}' {
                                      $$ = NODE(AST_REPEAT, @1); $$->str = $2; $$->a = $4; $$->b = $6; }
    ;

exprs
    : expr                          { $$ = ast_list_append((ast_list){0}, $1); }
    | exprs ',' expr                { $$ = ast_list_append($1, $3); }
    ;

args
    : %empty                        { $$ = (ast_list){0}; }
    | arg_list                      { $$ = $1; }
    | arg_list ','                  { $$ = $1; }
    ;

arg_list
    : arg                           { $$ = ast_list_append((ast_list){0}, $1); }
    | arg_list ',' arg              { $$ = ast_list_append($1, $3); }
    ;

arg
    : expr                          { $$ = $1; }
    | IDENT '=' expr                { $$ = NODE(AST_KWARG, @1); $$->str = $1; $$->a = $3; }
    ;

index_items
    : index_item                    { $$ = ast_list_append((ast_list){0}, $1); }
    | index_items ',' index_item    { $$ = ast_list_append($1, $3); }
    ;

index_item
    : expr                          { $$ = $1; }
    | opt_expr ':' opt_expr         { $$ = NODE(AST_SLICE, @2); $$->a = $1; $$->b = $3; }
    ;

opt_expr
    : %empty                        { $$ = NULL; }
    | expr                          { $$ = $1; }
    ;

%%

bool em3_parse_source(const char *text, size_t len, const char *file, em3_arena *arena,
                      em3_diag *d, ast_file *out) {
    em3_lex_state st = {.diag = d, .arena = arena, .file = file, .line = 1, .col = 1};
    yyscan_t scanner;
    if (yylex_init_extra(&st, &scanner)) return em3_diag_error(d, (em3_loc){file, 0, 0}, "cannot start the scanner");
    YY_BUFFER_STATE buf = yy_scan_bytes(text, (int)len, scanner);
    em3_parse_ctx ctx = {.lex = &st};
    int r = yyparse(scanner, &ctx);
    yy_delete_buffer(buf, scanner);
    yylex_destroy(scanner);
    out->file = file;
    out->items = ctx.items;
    return r == 0 && st.errors == 0;
}
