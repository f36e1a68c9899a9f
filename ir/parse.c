/* ir/parse.c — reads the text form written by ir/print.c back into a module, so that each pass
 * can be tested from a small .ir file (em3-opt + lit) and any dump can be fed back in.
 * A line-oriented recursive-descent parser over a small lexer. No rule recurses, so hostile
 * input costs time linear in its size and never stack; every error is located at its token. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

/* The verifier rejects nodes with more operands than this; the parser says so at the token. */
#define MAX_OPERANDS 64
/* Ids are i32, so no table can use more rows than this; the bound also keeps every shape
 * product and printed type within their buffers. */
#define MAX_DIM INT32_MAX
/* Longer number tokens are not numbers anything here writes. */
#define MAX_NUMBER_LEN 63

/* ---- lexer ------------------------------------------------------------------------------- */

typedef enum {
    TOK_EOF,
    TOK_NEWLINE,
    TOK_IDENT,  /* [A-Za-z_][A-Za-z0-9_.]* */
    TOK_SYMBOL, /* @ident or @"string" */
    TOK_STRING, /* "..." with \" \\ \xHH escapes, still encoded */
    TOK_VALUE,  /* %digits */
    TOK_NUMBER, /* -?digits[.digits][e[+-]digits] */
    TOK_PUNCT,  /* one of = : , ( ) [ ] { } - * */
    TOK_BAD,    /* a lexical error; `bad` says which */
} tok_kind;

typedef struct {
    tok_kind kind;
    const char *p; /* the token's bytes in the source, not NUL-terminated */
    size_t n;
    int line, col;
    bool is_int;     /* TOK_NUMBER without fraction or exponent */
    const char *bad; /* TOK_BAD: the message, or NULL for an unexpected byte */
} token;

typedef struct {
    const char *src;
    size_t len, pos, line_start;
    int line;
    token tok; /* the current token */
    em3_diag *d;
    const char *file; /* the diag engine's name for the source */
    em3_module *m;
    const char *loc_file; /* the last interned loc("file") name, shared by following nodes */
} parser;

static bool ident_start(unsigned char c) { return isalpha(c) || c == '_'; }
static bool ident_char(unsigned char c) { return isalnum(c) || c == '_' || c == '.'; }
static bool digit(unsigned char c) { return c >= '0' && c <= '9'; }

static size_t scan_digits(const char *s, size_t i, size_t n) {
    while (i < n && digit((unsigned char)s[i])) i++;
    return i;
}

/* A string runs to its closing quote; it may not span lines. Escapes are checked when the
 * string is decoded, where the column of the bad one is known. */
static size_t scan_string(const char *s, size_t i, size_t n, bool *closed) {
    for (i++; i < n && s[i] != '\n'; i++) {
        if (s[i] == '"') {
            *closed = true;
            return i + 1;
        }
        if (s[i] == '\\' && i + 1 < n && s[i + 1] != '\n') i++;
    }
    *closed = false;
    return i;
}

static size_t scan_number(const char *s, size_t i, size_t n, bool *is_int) {
    if (s[i] == '-') i++;
    i = scan_digits(s, i, n);
    *is_int = true;
    if (i + 1 < n && s[i] == '.' && digit((unsigned char)s[i + 1])) {
        i = scan_digits(s, i + 1, n);
        *is_int = false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        if (j < n && (s[j] == '+' || s[j] == '-')) j++;
        if (j < n && digit((unsigned char)s[j])) {
            i = scan_digits(s, j, n);
            *is_int = false;
        }
    }
    return i;
}

static void next(parser *p) {
    const char *s = p->src;
    size_t n = p->len, i = p->pos;
    for (;;) {
        if (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r'))
            i++;
        else if (i < n && (s[i] == '#' || (s[i] == '/' && i + 1 < n && s[i + 1] == '/')))
            while (i < n && s[i] != '\n') i++;
        else
            break;
    }
    token t = {.p = s + i, .line = p->line, .col = (int)(i - p->line_start) + 1};
    size_t end = i + 1;
    unsigned char c = i < n ? (unsigned char)s[i] : 0;
    bool closed = true;
    if (i >= n) {
        t.kind = TOK_EOF;
        end = i;
    } else if (c == '\n') {
        t.kind = TOK_NEWLINE;
        p->line++;
        p->line_start = end;
    } else if (ident_start(c)) {
        t.kind = TOK_IDENT;
        while (end < n && ident_char((unsigned char)s[end])) end++;
    } else if (c == '@') {
        t.kind = TOK_SYMBOL;
        if (end < n && ident_start((unsigned char)s[end]))
            while (end < n && ident_char((unsigned char)s[end])) end++;
        else if (end < n && s[end] == '"')
            end = scan_string(s, end, n, &closed);
        else
            t.kind = TOK_BAD, t.bad = "expected a name or a quoted string after '@'";
    } else if (c == '"') {
        t.kind = TOK_STRING;
        end = scan_string(s, i, n, &closed);
    } else if (c == '%') {
        t.kind = TOK_VALUE;
        end = scan_digits(s, end, n);
        if (end == i + 1) t.kind = TOK_BAD, t.bad = "expected a value number after '%'";
    } else if (digit(c) || (c == '-' && end < n && digit((unsigned char)s[end]))) {
        t.kind = TOK_NUMBER;
        end = scan_number(s, i, n, &t.is_int);
    } else if (c && memchr("=:,()[]{}-*", c, 11)) {
        t.kind = TOK_PUNCT;
    } else {
        t.kind = TOK_BAD; /* bad == NULL: an unexpected byte */
    }
    if (!closed) t.kind = TOK_BAD, t.bad = "unterminated string (strings end on the same line)";
    t.n = end - i;
    p->pos = end;
    p->tok = t;
}

/* ---- diagnostics ---------------------------------------------------------------------------- */

/* Printable, bounded rendering of source bytes for messages: a 1 MB identifier or a binary
 * byte must not flood or garble the terminal. */
static const char *shown(char *buf, size_t cap, const char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f)
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
        if (i + 1 < n && o + 8 >= cap) {
            memcpy(buf + o, "...", 4);
            return buf;
        }
    }
    buf[o] = 0;
    return buf;
}
#define SHOWN_MAX 48
#define SHOW(buf, s) shown((buf), sizeof(buf), (s), strlen(s))

static em3_loc loc_at(const parser *p, int line, int col) { return (em3_loc){p->file, line, col}; }

static bool err_at(parser *p, const token *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool err_at(parser *p, const token *t, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return em3_diag_error(p->d, loc_at(p, t->line, t->col), "%s", msg);
}

static const char *describe(const token *t, char *buf, size_t cap) {
    char b[SHOWN_MAX];
    switch (t->kind) {
    case TOK_EOF: return "end of file";
    case TOK_NEWLINE: return "end of line";
    default: snprintf(buf, cap, "'%s'", shown(b, sizeof b, t->p, t->n)); return buf;
    }
}

/* "expected WHAT, found X" at the current token; a lexical error there is reported instead,
 * since it is the real cause. */
static bool expected(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool expected(parser *p, const char *fmt, ...) {
    const token *t = &p->tok;
    char what[256], b[SHOWN_MAX + 8];
    if (t->kind == TOK_BAD && t->bad) return err_at(p, t, "%s", t->bad);
    if (t->kind == TOK_BAD)
        return err_at(p, t, "unexpected character %s", describe(t, b, sizeof b));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return err_at(p, t, "expected %s, found %s", what, describe(t, b, sizeof b));
}

/* ---- token helpers --------------------------------------------------------------------------- */

static bool tok_eq(const token *t, const char *w) {
    size_t n = strlen(w);
    return t->n == n && !memcmp(t->p, w, n);
}
static bool is_word(const parser *p, const char *w) {
    return p->tok.kind == TOK_IDENT && tok_eq(&p->tok, w);
}
static bool is_punct(const parser *p, char c) {
    return p->tok.kind == TOK_PUNCT && p->tok.p[0] == c;
}
static bool at_eol(const parser *p) { return p->tok.kind == TOK_NEWLINE || p->tok.kind == TOK_EOF; }

static bool accept_punct(parser *p, char c) {
    if (!is_punct(p, c)) return false;
    next(p);
    return true;
}

static bool expect_punct(parser *p, char c, const char *context) {
    if (accept_punct(p, c)) return true;
    return expected(p, "'%c' %s", c, context);
}

static bool expect_eol(parser *p, const char *context) {
    if (p->tok.kind == TOK_NEWLINE)
        next(p);
    else if (p->tok.kind != TOK_EOF)
        return expected(p, "end of line %s", context);
    return true;
}

/* Error recovery: drop the rest of the line, newline included. Always consumes a token unless
 * at the end, so no loop that calls it can spin. */
static void skip_line(parser *p) {
    while (!at_eol(p)) next(p);
    if (p->tok.kind == TOK_NEWLINE) next(p);
}

static void skip_newlines(parser *p) {
    while (p->tok.kind == TOK_NEWLINE) next(p);
}

/* Decimal integer of the current NUMBER token (or the digits of a %N token) within [lo, hi];
 * `what` completes "expected ...", `noun` names it when it is out of range. */
static bool parse_int(parser *p, int64_t lo, int64_t hi, int64_t *out, const char *what,
                      const char *noun) {
    const token *t = &p->tok;
    const char *s = t->p;
    size_t n = t->n, i = 0;
    if (t->kind == TOK_VALUE)
        i = 1;
    else if (t->kind != TOK_NUMBER || !t->is_int)
        return expected(p, "%s", what);
    bool neg = i < n && s[i] == '-';
    if (neg) i++;
    uint64_t mag = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    bool overflow = false;
    for (; i < n; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (mag > (limit - d) / 10)
            overflow = true;
        else
            mag = mag * 10 + d;
    }
    int64_t v = !neg ? (int64_t)mag : mag > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)mag;
    char b[SHOWN_MAX];
    if (overflow || v < lo || v > hi)
        return err_at(p, t, "%s %s is out of range (%lld to %lld)", noun,
                      shown(b, sizeof b, t->p, t->n), (long long)lo, (long long)hi);
    *out = v;
    next(p);
    return true;
}

/* A float as em3_format_double writes it: a number, inf, nan, -inf or -nan. Integers are
 * accepted too, as a hand-written file would use them. */
static bool parse_float(parser *p, double *out, const char *what) {
    token t = p->tok;
    bool neg = accept_punct(p, '-');
    if (neg && p->tok.kind != TOK_IDENT) return expected(p, "'inf' or 'nan' after '-'");
    if (is_word(p, "inf") || is_word(p, "nan")) {
        double v = is_word(p, "inf") ? INFINITY : NAN;
        *out = neg ? -v : v;
        next(p);
        return true;
    }
    if (neg || p->tok.kind != TOK_NUMBER) return expected(p, "%s", what);
    char buf[MAX_NUMBER_LEN + 1], b[SHOWN_MAX];
    if (t.n > MAX_NUMBER_LEN)
        return err_at(p, &t, "number %s is too long", shown(b, sizeof b, t.p, t.n));
    memcpy(buf, t.p, t.n);
    buf[t.n] = 0;
    errno = 0;
    double v = strtod(buf, NULL);
    /* Underflow is fine (subnormals must round-trip); overflow would silently become inf. */
    if (errno == ERANGE && isinf(v)) return err_at(p, &t, "number %s is out of range", buf);
    *out = v;
    next(p);
    return true;
}

/* Decodes the string that starts at `q` (its opening quote) in token `t` into a malloc'ed C
 * string. A NUL cannot live in a C string, so \x00 and raw NUL bytes are errors. */
static char *decode_string(parser *p, const token *t, const char *q) {
    const char *end = t->p + t->n - 1; /* the closing quote */
    char *out = em3_xmalloc((size_t)(end - q));
    size_t o = 0;
    for (const char *s = q + 1; s < end; s++) {
        int col = t->col + (int)(s - t->p);
        unsigned char c = (unsigned char)*s;
        if (c == '\\') {
            if (s[1] == '"' || s[1] == '\\') {
                c = (unsigned char)*++s;
            } else if (s[1] == 'x' && s + 3 < end && isxdigit((unsigned char)s[2]) &&
                       isxdigit((unsigned char)s[3])) {
                char hex[3] = {s[2], s[3], 0};
                c = (unsigned char)strtoul(hex, NULL, 16);
                s += 3;
            } else {
                free(out);
                em3_diag_error(p->d, loc_at(p, t->line, col),
                               "bad escape in string: use \\\", \\\\ or \\xHH");
                return NULL;
            }
        }
        if (!c) {
            free(out);
            em3_diag_error(p->d, loc_at(p, t->line, col), "a string cannot contain a NUL byte");
            return NULL;
        }
        out[o++] = (char)c;
    }
    out[o] = 0;
    return out;
}

static char *parse_string(parser *p, const char *what) {
    if (p->tok.kind != TOK_STRING) {
        expected(p, "%s", what);
        return NULL;
    }
    char *s = decode_string(p, &p->tok, p->tok.p);
    if (s) next(p);
    return s;
}

/* @name or @"any string" → malloc'ed name. */
static char *parse_symbol(parser *p, const char *what) {
    const token *t = &p->tok;
    if (t->kind != TOK_SYMBOL) {
        expected(p, "%s", what);
        return NULL;
    }
    char *s;
    if (t->p[1] == '"') {
        s = decode_string(p, t, t->p + 1);
        if (!s) return NULL;
    } else {
        s = em3_xmalloc(t->n);
        memcpy(s, t->p + 1, t->n - 1);
        s[t->n - 1] = 0;
    }
    next(p);
    return s;
}

/* ---- types and lists ------------------------------------------------------------------------ */

static bool parse_dtype(parser *p, em3_dtype *out, const char *what) {
    for (int i = 0; i < EM3_DTYPE_COUNT; i++)
        if (is_word(p, em3_dtype_name((em3_dtype)i))) {
            *out = (em3_dtype)i;
            next(p);
            return true;
        }
    *out = EM3_DTYPE_F32; /* defined on failure too: GCC -O3 cannot see that expected() is false */
    return expected(p, "%s", what);
}

/* The symbol the current word names: 0 for "B", s for "U1" … "U7"; -1 otherwise. */
static int symbol_word(const parser *p) {
    char w[4];
    for (int s = 0; s < EM3_MAX_SYMBOLS; s++)
        if (is_word(p, em3_sym_name(s, w))) return s;
    return -1;
}

/* "[a, b, ...]" of at most EM3_MAX_RANK entries: dimensions (a positive size, B or B*k) when
 * `dims`, else any 64-bit integers. */
static bool parse_list(parser *p, bool dims, int64_t *out, int *n, const char *what) {
    *n = 0;
    if (!accept_punct(p, '[')) return expected(p, "'[' to start %s", what);
    if (accept_punct(p, ']')) return true;
    for (;;) {
        if (*n == EM3_MAX_RANK)
            return err_at(p, &p->tok, "more than %d entries in %s", EM3_MAX_RANK, what);
        int64_t v, k = 1;
        bool ok;
        if (!dims) {
            ok = parse_int(p, INT64_MIN, INT64_MAX, &v, "an integer", "integer");
        } else if (symbol_word(p) >= 0) {
            int sym = symbol_word(p);
            char name[4], after[48], noun[24];
            em3_sym_name(sym, name);
            snprintf(after, sizeof after, "a multiple of %s after '%s*'", name, name);
            snprintf(noun, sizeof noun, "multiple of %s", name);
            next(p);
            ok = !accept_punct(p, '*') || parse_int(p, 1, MAX_DIM, &k, after, noun);
            v = em3_dim_make(sym, k); /* k·B or k·Us, see EM3_DIM_BATCH */
        } else {
            ok = parse_int(p, 1, MAX_DIM, &v, "a dimension (a size, B, B*k, U1 or U1*k)", "dimension");
        }
        if (!ok) return false;
        out[(*n)++] = v;
        if (accept_punct(p, ']')) return true;
        if (!expect_punct(p, ',', "or ']' in the list")) return false;
    }
}

static bool parse_type(parser *p, em3_type *t, const char *what) {
    em3_dtype dt;
    int64_t dims[EM3_MAX_RANK];
    int rank;
    if (!parse_dtype(p, &dt, what) || !parse_list(p, true, dims, &rank, "the shape")) return false;
    *t = em3_type_make(dt, rank, dims);
    return true;
}

/* ---- globals --------------------------------------------------------------------------------- */

static bool parse_global_kind(parser *p, em3_global_kind *out) {
    for (int k = EM3_GLOBAL_PARAM; k <= EM3_GLOBAL_GRAPH; k++)
        if (is_word(p, em3_global_kind_name((em3_global_kind)k))) {
            *out = (em3_global_kind)k;
            next(p);
            return true;
        }
    return expected(p, "param, frozen, data, state or graph");
}

static bool init_takes_arg(em3_init_kind k) {
    return k == EM3_INIT_CONST || k == EM3_INIT_NORMAL || k == EM3_INIT_UNIFORM;
}

static bool parse_init(parser *p, em3_init *init) {
    *init = (em3_init){EM3_INIT_NONE, 0};
    if (!is_word(p, "init")) return true;
    next(p);
    if (!expect_punct(p, '=', "after 'init'")) return false;
    int k = EM3_INIT_NONE + 1;
    while (k <= EM3_INIT_XAVIER && !is_word(p, em3_init_kind_name((em3_init_kind)k))) k++;
    if (k > EM3_INIT_XAVIER) return expected(p, "zeros, ones, const, normal, uniform or xavier");
    init->kind = (em3_init_kind)k;
    next(p);
    if (init_takes_arg(init->kind)) {
        return expect_punct(p, '(', "and the argument of the init, as normal(0.02)") &&
               parse_float(p, &init->a, "a number") &&
               expect_punct(p, ')', "after the init argument");
    }
    if (is_punct(p, '('))
        return err_at(p, &p->tok, "init %s takes no argument", em3_init_kind_name(init->kind));
    return true;
}

/* global @name : type kind [init = kind[(a)]], or global @name : type graph "spec" —
 * recovers to the next line by itself. */
static void parse_global(parser *p) {
    next(p); /* 'global' */
    token nt = p->tok, tt;
    char *name = parse_symbol(p, "a global name '@name' after 'global'"), b[SHOWN_MAX];
    em3_type t;
    em3_global_kind kind = EM3_GLOBAL_PARAM;
    em3_init init;
    bool ok = name && expect_punct(p, ':', "after the global name");
    tt = p->tok;
    char *spec = NULL;
    ok = ok && parse_type(p, &t, "the type of the global, as f32[10, 64]") && parse_global_kind(p, &kind);
    if (ok && kind == EM3_GLOBAL_GRAPH)
        ok = (spec = parse_string(p, "the graph's spec, a quoted string")) != NULL;
    ok = ok && parse_init(p, &init) && expect_eol(p, "after the global");
    if (!ok) {
        skip_line(p);
    } else if (em3_type_has_batch(&t)) {
        char tb[EM3_TYPE_STR_MAX];
        err_at(p, &tt, "global @%s has type %s: a global's shape cannot hold B", SHOW(b, name),
               em3_type_str(&t, tb, sizeof tb));
    } else if ((spec ? em3_module_add_graph(p->m, name, t, spec, loc_at(p, nt.line, nt.col))
                     : em3_module_add_global(p->m, name, t, kind, init, loc_at(p, nt.line, nt.col))) < 0) {
        err_at(p, &nt, "global @%s is declared twice", SHOW(b, name));
    }
    free(name);
    free(spec);
}

/* ---- nodes ----------------------------------------------------------------------------------- */

/* One node line, parsed before anything is built so that a function that already failed can
 * still be checked line by line for further errors. */
typedef struct {
    int id;
    token id_tok, op_tok, type_tok;
    em3_node proto;
    bool given[EM3_MAX_ATTRS];
    token attr_tok[EM3_MAX_ATTRS];
    int64_t list[EM3_MAX_ATTRS][EM3_MAX_RANK];
    char *str[EM3_MAX_ATTRS]; /* symbol and string attributes, malloc'ed */
    char *origin;
    int in[MAX_OPERANDS];
    token in_tok[MAX_OPERANDS];
    int n_in;
    em3_type type;
} pnode;

static void pnode_free(pnode *n) {
    for (int i = 0; i < EM3_MAX_ATTRS; i++) free(n->str[i]);
    free(n->origin);
}

static bool parse_value(parser *p, int *out, const char *what) {
    int64_t v;
    if (p->tok.kind != TOK_VALUE) return expected(p, "%s", what);
    if (!parse_int(p, 0, INT_MAX - 1, &v, what, "value number")) return false;
    *out = (int)v;
    return true;
}

static bool parse_op(parser *p, em3_op *op) {
    for (int i = 0; i < EM3_OP_COUNT; i++)
        if (is_word(p, em3_op_name((em3_op)i))) {
            *op = (em3_op)i;
            next(p);
            return true;
        }
    char b[SHOWN_MAX];
    if (p->tok.kind == TOK_IDENT)
        return err_at(p, &p->tok, "unknown op '%s'", shown(b, sizeof b, p->tok.p, p->tok.n));
    return expected(p, "an op name");
}

static bool parse_attr_value(parser *p, pnode *n, int slot, const em3_attr_spec *s) {
    em3_attrval *v = &n->proto.attr[slot];
    char what[64];
    snprintf(what, sizeof what, "the value of attribute '%s'", s->name);
    switch (s->kind) {
    case EM3_ATTR_INT: return parse_int(p, INT64_MIN, INT64_MAX, &v->i, "an integer", "integer");
    case EM3_ATTR_FLOAT: return parse_float(p, &v->f, "a number");
    case EM3_ATTR_BOOL:
        if (!is_word(p, "true") && !is_word(p, "false")) return expected(p, "true or false");
        v->i = is_word(p, "true");
        next(p);
        return true;
    case EM3_ATTR_DTYPE: {
        em3_dtype dt;
        if (!parse_dtype(p, &dt, "a dtype (f32 or i32)")) return false;
        v->i = dt;
        return true;
    }
    case EM3_ATTR_INTS:
    case EM3_ATTR_SHAPE:
        v->list = n->list[slot];
        return parse_list(p, s->kind == EM3_ATTR_SHAPE, n->list[slot], &v->n, what);
    case EM3_ATTR_STRING:
        free(n->str[slot]);
        v->s = n->str[slot] = parse_string(p, what);
        return v->s != NULL;
    case EM3_ATTR_SYMBOL: break;
    }
    EM3_UNREACHABLE("attribute kind '%c' reached the brace list", s->kind);
}

/* {name = value, ...}: each attribute of the op's spec at most once, in any order. */
static bool parse_attrs(parser *p, pnode *n) {
    em3_op op = n->proto.op;
    const char *opname = em3_op_name(op);
    char b[SHOWN_MAX];
    if (accept_punct(p, '}')) return true;
    for (;;) {
        token nt = p->tok;
        if (nt.kind != TOK_IDENT) return expected(p, "an attribute name");
        int slot = -1, na = em3_op_attr_count(op);
        for (int i = 0; i < na && slot < 0; i++)
            if (tok_eq(&nt, em3_op_attr(op, i).name)) slot = i;
        const char *name = shown(b, sizeof b, nt.p, nt.n);
        if (slot < 0)
            return err_at(p, &nt, "%s has no attribute '%s'%s%s", opname, name,
                          *em3_op_attr_text(op) ? "; its attributes: " : "", em3_op_attr_text(op));
        em3_attr_spec s = em3_op_attr(op, slot);
        if (s.kind == EM3_ATTR_SYMBOL)
            return err_at(p, &nt,
                          "attribute '%s' of %s is written before the operands, as "
                          "'%s @%s'",
                          name, opname, opname, name);
        if (n->given[slot]) return err_at(p, &nt, "attribute '%s' is given twice", name);
        n->given[slot] = true;
        next(p);
        if (!expect_punct(p, '=', "after the attribute name")) return false;
        n->attr_tok[slot] = p->tok;
        if (!parse_attr_value(p, n, slot, &s)) return false;
        if (accept_punct(p, '}')) return true;
        if (!expect_punct(p, ',', "or '}' after the attribute")) return false;
    }
}

/* loc("file":line:col). The file name is interned in the module, which outlives the text. */
static bool parse_loc(parser *p, em3_loc *loc) {
    int64_t line, col;
    if (!expect_punct(p, '(', "after 'loc'")) return false;
    char *file = parse_string(p, "a quoted file name in loc(...)");
    bool ok = file && expect_punct(p, ':', "after the file name") &&
              parse_int(p, 1, INT_MAX, &line, "a line number", "line number") &&
              expect_punct(p, ':', "after the line") &&
              parse_int(p, 0, INT_MAX, &col, "a column number", "column number") &&
              expect_punct(p, ')', "after the column");
    if (ok) {
        if (!p->loc_file || strcmp(p->loc_file, file))
            p->loc_file = em3_arena_strdup(p->m->arena, file);
        *loc = (em3_loc){p->loc_file, (int)line, (int)col};
    }
    free(file);
    return ok;
}

/* %N = op @sym(%a, %b) {attr = v} : type [origin "..."] [loc("file":L:C)] */
static bool parse_node(parser *p, pnode *n) {
    char ctx[48];
    n->id_tok = p->tok;
    if (!parse_value(p, &n->id, "a value '%N'")) return false;
    snprintf(ctx, sizeof ctx, "after value %%%d", n->id);
    if (!expect_punct(p, '=', ctx)) return false;
    n->op_tok = p->tok;
    em3_op op = EM3_OP_INPUT;
    if (!parse_op(p, &op)) return false;
    n->proto = em3_node_proto(op, (em3_loc){0});
    const char *opname = em3_op_name(op);
    int na = em3_op_attr_count(op);
    for (int i = 0; i < na; i++) {
        em3_attr_spec s = em3_op_attr(op, i);
        if (s.kind != EM3_ATTR_SYMBOL) continue;
        n->attr_tok[i] = p->tok;
        char what[64];
        snprintf(what, sizeof what, "the %s of %s, as '@x'", s.name, opname);
        if (!(n->str[i] = parse_symbol(p, what))) return false;
        if (!*n->str[i])
            return err_at(p, &n->attr_tok[i], "the %s of %s cannot be empty", s.name, opname);
        n->proto.attr[i].s = n->str[i];
        n->given[i] = true;
    }
    if (accept_punct(p, '(') && !accept_punct(p, ')')) {
        for (;;) {
            if (n->n_in == MAX_OPERANDS)
                return err_at(p, &p->tok, "more than %d operands", MAX_OPERANDS);
            n->in_tok[n->n_in] = p->tok;
            if (!parse_value(p, &n->in[n->n_in], "an operand '%N'")) return false;
            n->n_in++;
            if (accept_punct(p, ')')) break;
            if (!expect_punct(p, ',', "or ')' after the operand")) return false;
        }
    }
    if (accept_punct(p, '{') && !parse_attrs(p, n)) return false;
    for (int i = 0; i < na; i++) {
        em3_attr_spec s = em3_op_attr(op, i);
        if (!s.has_default && !n->given[i])
            return err_at(p, &n->op_tok, "%s needs attribute '%s'", opname, s.name);
    }
    if (!expect_punct(p, ':', ctx)) return false;
    n->type_tok = p->tok;
    if (!parse_type(p, &n->type, "the type of the value, as f32[B, 64]")) return false;
    if (is_word(p, "origin")) {
        next(p);
        if (!(n->origin = parse_string(p, "a quoted list of source ops after 'origin'")))
            return false;
        n->proto.origin = n->origin;
    }
    if (is_word(p, "loc")) {
        next(p);
        if (!parse_loc(p, &n->proto.loc)) return false;
    }
    return expect_eol(p, "after the type");
}

/* Numbering and operands are checked even in a function that already failed (f == NULL);
 * the node is built, and its written type compared, only in one that has not. */
static bool build_node(parser *p, em3_func *f, int *next_id, pnode *n) {
    int id = n->id;
    if (id != *next_id) {
        err_at(p, &n->id_tok,
               "expected value %%%d here, not %%%d: values are numbered 0, 1, 2, ... "
               "in order",
               *next_id, id);
        *next_id = id + 1;
        return false;
    }
    *next_id = id + 1;
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i] >= id)
            return err_at(p, &n->in_tok[i], "value %%%d is used before it is defined", n->in[i]);
    if (!f) return false;
    EM3_ASSERT(f->n_node == id, "value %d built as node %d", id, f->n_node);
    if (n->proto.op == EM3_OP_INPUT) {
        char b[SHOWN_MAX];
        for (int j = 0; j < id; j++)
            if (f->node[j].op == EM3_OP_INPUT && !strcmp(f->node[j].attr[0].s, n->str[0]))
                return err_at(p, &n->attr_tok[0], "input @%s is declared twice (first as %%%d)",
                              SHOW(b, n->str[0]), j);
        if (em3_node_i(&n->proto, "vocab") < 0)
            return err_at(p, &n->attr_tok[em3_op_attr_slot(EM3_OP_INPUT, "vocab")],
                          "an input's vocab must be >= 0");
    }
    char why[256], b0[EM3_TYPE_STR_MAX], b1[EM3_TYPE_STR_MAX];
    n->proto.type = n->type; /* leaves take their type as written */
    if (em3_func_add(f, &n->proto, n->in, n->n_in, why, sizeof why) < 0)
        return err_at(p, &n->op_tok, "%s", why);
    const em3_type *t = &f->node[id].type;
    if (!em3_type_eq(t, &n->type))
        return err_at(p, &n->type_tok, "%%%d is written %s, but %s gives %s", id,
                      em3_type_str(&n->type, b0, sizeof b0), em3_op_name(n->proto.op),
                      em3_type_str(t, b1, sizeof b1));
    return true;
}

/* return name = %N, ...   (names are identifiers or quoted strings) */
static bool parse_return(parser *p, em3_func *f, int next_id) {
    next(p); /* 'return' */
    if (at_eol(p)) return expect_eol(p, "after 'return'");
    for (;;) {
        token nt = p->tok;
        char *name = NULL, b[SHOWN_MAX];
        if (nt.kind == TOK_IDENT) {
            name = em3_xmalloc(nt.n + 1);
            memcpy(name, nt.p, nt.n);
            name[nt.n] = 0;
            next(p);
        } else if (nt.kind == TOK_STRING) {
            name = parse_string(p, "an output name");
        } else {
            return expected(p, "an output name after 'return'");
        }
        token vt = {0};
        int v = 0;
        bool ok = name && expect_punct(p, '=', "after the output name") &&
                  ((vt = p->tok), parse_value(p, &v, "the output's value '%N'"));
        if (ok && v >= next_id)
            ok = err_at(p, &vt, "output %s returns %%%d, which is not defined", SHOW(b, name), v);
        if (ok && f && em3_func_add_output(f, name, v) < 0)
            ok = err_at(p, &nt, "output %s is returned twice", SHOW(b, name));
        free(name);
        if (!ok) return false;
        if (at_eol(p)) return expect_eol(p, "after the outputs");
        if (!expect_punct(p, ',', "or end of line after the output")) return false;
    }
}

static bool at_top_keyword(const parser *p) {
    return p->tok.kind == TOK_EOF || is_word(p, "func") || is_word(p, "global");
}

/* func @name { nodes... return ... } — errors poison the function (f = NULL) but the rest of
 * its lines are still checked. */
static void parse_func(parser *p) {
    next(p); /* 'func' */
    token nt = p->tok;
    char *name = parse_symbol(p, "a function name '@name' after 'func'"), b[SHOWN_MAX];
    em3_func *f = NULL;
    if (name && em3_module_find_func(p->m, name))
        err_at(p, &nt, "function @%s is defined twice", SHOW(b, name));
    else if (name)
        f = em3_module_add_func(p->m, name);
    if (!name || !expect_punct(p, '{', "after the function name") || !expect_eol(p, "after '{'")) {
        f = NULL;
        skip_line(p);
    }
    free(name);
    int next_id = 0;
    for (;;) {
        skip_newlines(p);
        if (p->tok.kind == TOK_VALUE) {
            pnode n;
            memset(&n, 0, sizeof n);
            n.id = -1;
            bool ok = parse_node(p, &n);
            if (ok) {
                ok = build_node(p, f, &next_id, &n);
            } else {
                skip_line(p);
                if (n.id == next_id) next_id++; /* the broken line still defined its value */
            }
            if (!ok) f = NULL;
            pnode_free(&n);
        } else if (is_word(p, "return")) {
            if (!parse_return(p, f, next_id)) skip_line(p);
            break;
        } else if (is_punct(p, '}') || at_top_keyword(p)) {
            expected(p, "'return' at the end of the function");
            if (is_punct(p, '}')) skip_line(p);
            return;
        } else {
            expected(p, "a node '%%N = op ...' or 'return'");
            skip_line(p);
        }
    }
    skip_newlines(p);
    if (accept_punct(p, '}')) {
        if (!expect_eol(p, "after '}'")) skip_line(p);
        return;
    }
    expected(p, "'}' after the return");
    while (!at_top_keyword(p) && !is_punct(p, '}')) skip_line(p);
    if (is_punct(p, '}')) skip_line(p);
}

/* ---- the module ------------------------------------------------------------------------------ */

static void parse_module(parser *p) {
    skip_newlines(p);
    char *name = NULL;
    if (is_word(p, "module")) {
        next(p);
        name = parse_symbol(p, "a module name '@name' after 'module'");
        if (!name || !expect_eol(p, "after the module name")) skip_line(p);
    } else {
        /* go on as if it were there: the rest of the file can still be checked */
        expected(p, "'module @name' at the start of the IR");
    }
    p->m = em3_module_create(name ? name : "");
    free(name);
    for (;;) {
        skip_newlines(p);
        if (p->tok.kind == TOK_EOF) break;
        if (is_word(p, "global")) {
            parse_global(p);
        } else if (is_word(p, "func")) {
            parse_func(p);
        } else {
            expected(p, "'global' or 'func'");
            skip_line(p);
        }
    }
}

em3_module *em3_module_parse(const char *text, size_t len, const char *file, em3_diag *d) {
    EM3_ASSERT(d, "em3_module_parse needs a diagnostics engine");
    if (!text) len = 0;
    if (!file) file = "<input>";
    /* line and column numbers are ints */
    if (len >= INT_MAX) {
        em3_diag_error(d, (em3_loc){file, 0, 0}, "IR text of %zu bytes is too large", len);
        return NULL;
    }
    int errors = em3_diag_error_count(d);
    parser p = {.src = text ? text : "", .len = len, .line = 1, .d = d};
    p.file = em3_diag_add_source(d, file, p.src, len);
    next(&p);
    parse_module(&p);
    if (em3_diag_error_count(d) == errors) {
        char why[512];
        /* Every rule of the verifier is checked above where its token is known; this is the
         * net for any rule added there later. */
        if (!em3_module_verify(p.m, why, sizeof why))
            em3_diag_error(d, (em3_loc){p.file, 0, 0}, "invalid IR: %s", why);
    }
    if (em3_diag_error_count(d) != errors) {
        em3_module_free(p.m);
        return NULL;
    }
    return p.m;
}
