/* passes/fuse_attention.c — find attention written from primitives and make it one op.
 *
 *   s  = matmul(q, k, tb) · c            (or / c, or no scale)
 *   p  = softmax(s + (m − 1)·BIG) · m    (masked: m broadcastable to [..., tq, tk], BIG ≥ 1e4)
 *   p  = softmax(s)                      (unmasked)
 *   o  = matmul(p, v)
 * becomes o = attention(q, k, v[, m]) {scale = c}. Runs before autodiff, so the fused op's own
 * VJP is used and nothing of the [tq, tk] scores is kept for the backward pass. Matches only
 * when every intermediate has no other use (a softmax output used elsewhere stays unfused),
 * and only attention with one width for keys and values (dh == dv), which its packed gradient
 * needs. The fused node replaces o in place; DCE removes the rest. */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

typedef struct {
    const em3_func *f;
    int *uses;
} matcher;

static const em3_node *node(const matcher *m, int v) { return &m->f->node[v]; }

static bool scalar_const(const matcher *m, int v, double *value) {
    const em3_node *n = node(m, v);
    if (n->op != EM3_OP_CONST || n->type.rank != 0) return false;
    *value = n->attr[0].f;
    return true;
}

/* a·c or c·a with c a scalar constant: the other operand, or -1 */
static int times_const(const matcher *m, int v, double *c) {
    const em3_node *n = node(m, v);
    if (n->op != EM3_OP_MUL) return -1;
    if (scalar_const(m, n->in[1], c)) return n->in[0];
    if (scalar_const(m, n->in[0], c)) return n->in[1];
    return -1;
}

static bool last_axis(const em3_node *n) {
    return em3_node_i(n, "axis") == n->type.rank - 1;
}

/* The mask m of (m − 1)·BIG, or -1. */
static int mask_of_bias(const matcher *m, int bias) {
    double big, one;
    int d = times_const(m, bias, &big);
    if (d < 0 || big < 1e4) return -1;
    const em3_node *sub = node(m, d);
    if (sub->op != EM3_OP_SUB || !scalar_const(m, sub->in[1], &one) || one != 1.0) return -1;
    return sub->in[0];
}

typedef struct {
    int q, k, v, mask;
    double scale;
    char origin[128];
} att_match;

static bool single(const matcher *m, int v) { return m->uses[v] == 1; }

static bool match(const matcher *m, int o, att_match *r) {
    const em3_node *mm = node(m, o);
    if (mm->op != EM3_OP_MATMUL || em3_node_i(mm, "ta") || em3_node_i(mm, "tb")) return false;
    int p = mm->in[0];
    r->v = mm->in[1];
    r->mask = -1;
    if (!single(m, p)) return false;
    int sm = p, logits = -1;
    em3_strbuf origin = {0};
    if (node(m, p)->op == EM3_OP_MUL) { /* masked: softmax(s + bias) · mask */
        const em3_node *pm = node(m, p);
        for (int side = 0; side < 2 && r->mask < 0; side++) {
            int a = pm->in[side], b = pm->in[1 - side];
            if (node(m, a)->op != EM3_OP_SOFTMAX || !single(m, a)) continue;
            const em3_node *add = node(m, node(m, a)->in[0]);
            if (add->op != EM3_OP_ADD || !single(m, node(m, a)->in[0])) continue;
            for (int s2 = 0; s2 < 2 && r->mask < 0; s2++)
                if (mask_of_bias(m, add->in[s2]) == b) {
                    r->mask = b;
                    sm = a;
                    logits = add->in[1 - s2];
                }
        }
        if (r->mask < 0) return false;
    } else if (node(m, p)->op == EM3_OP_SOFTMAX) {
        logits = node(m, p)->in[0];
    } else {
        return false;
    }
    if (!last_axis(node(m, sm))) return false;
    /* logits = matmul(q, k, tb) [· c | / c] */
    double c;
    int raw = times_const(m, logits, &c);
    r->scale = 1.0;
    if (raw >= 0) {
        r->scale = c;
    } else if (node(m, logits)->op == EM3_OP_DIV && scalar_const(m, node(m, logits)->in[1], &c) && c != 0) {
        raw = node(m, logits)->in[0];
        r->scale = 1.0 / c;
    } else {
        raw = logits;
    }
    if (raw != logits && !single(m, logits)) return false;
    const em3_node *qk = node(m, raw);
    if (qk->op != EM3_OP_MATMUL || em3_node_i(qk, "ta") || !em3_node_i(qk, "tb") || !single(m, raw)) return false;
    r->q = qk->in[0];
    r->k = qk->in[1];
    const em3_type *qt = &node(m, r->q)->type, *vt = &node(m, r->v)->type;
    if (qt->dim[qt->rank - 1] != vt->dim[vt->rank - 1]) return false; /* dh == dv */
    em3_sb_printf(&origin, "matmul,%s%s%ssoftmax%s,matmul", raw != logits ? em3_op_name(node(m, logits)->op) : "",
                  raw != logits ? "," : "", r->mask >= 0 ? "sub,mul,add," : "", r->mask >= 0 ? ",mul" : "");
    snprintf(r->origin, sizeof r->origin, "%s", origin.data);
    em3_sb_free(&origin);
    return true;
}

static int fuse_func(em3_func *f) {
    matcher m = {f, em3_xcalloc((size_t)(f->n_node ? f->n_node : 1), sizeof(int))};
    for (int i = 0; i < f->n_node; i++)
        for (int k = 0; k < f->node[i].n_in; k++) m.uses[f->node[i].in[k]]++;
    for (int i = 0; i < f->n_out; i++) m.uses[f->out[i].value]++;
    int fused = 0;
    for (int o = 0; o < f->n_node; o++) {
        att_match r;
        if (!match(&m, o, &r)) continue;
        em3_node a = em3_node_proto(EM3_OP_ATTENTION, f->node[o].loc);
        em3_node_set_f(&a, "scale", r.scale);
        a.origin = r.origin;
        int in[4] = {r.q, r.k, r.v, r.mask}, n_in = r.mask >= 0 ? 4 : 3;
        char err[256];
        /* the shape rule decides the rest (mask shape, broadcasting); a misfit stays unfused */
        int tmp = em3_func_add(f, &a, in, n_in, err, sizeof err);
        if (tmp < 0 || !em3_type_eq(&f->node[tmp].type, &f->node[o].type)) {
            if (tmp >= 0) f->n_node--; /* drop the trial node: nothing refers to it */
            continue;
        }
        f->node[o] = f->node[tmp]; /* operands precede o: valid in o's place */
        f->n_node--;
        fused++;
    }
    free(m.uses);
    return fused;
}

int em3_pass_fuse_attention(em3_module *m, const em3_pass_ctx *ctx) {
    (void)ctx;
    int fused = 0;
    for (int i = 0; i < m->n_func; i++) fused += fuse_func(m->func[i]);
    return fused > 0;
}
