/* passes/fuse_lora.c — find LoRA written from primitives and make it one op.
 *
 *   y = matmul(x, w) + s · matmul(matmul(x, a), b)      (either operand order, s optional)
 * with w frozen (a frozen parameter, or read through stop_gradient as `shares ... frozen`
 * does) becomes y = lora_matmul(x, w, a, b) {scale = s}: no gradient is ever derived for w,
 * and the kernel accumulates the low-rank product into the result. Runs before autodiff.
 * Matches only when every intermediate has no other use, and never when w is trainable
 * (full fine-tuning must keep its dW). The fused node replaces y in place. */
#include <stdlib.h>

#include "passes.h"

static bool frozen_weight(const em3_func *f, int w) {
    const em3_node *n = &f->node[w];
    if (n->op == EM3_OP_STOP_GRADIENT) return f->node[n->in[0]].op == EM3_OP_PARAM;
    if (n->op != EM3_OP_PARAM) return false;
    int g = em3_module_find_global(f->mod, n->attr[0].s);
    return g >= 0 && f->mod->global[g].kind == EM3_GLOBAL_FROZEN;
}

static bool plain_matmul(const em3_func *f, int v) {
    const em3_node *n = &f->node[v];
    return n->op == EM3_OP_MATMUL && !em3_node_i(n, "ta") && !em3_node_i(n, "tb");
}

typedef struct {
    int x, w, a, b;
    double scale;
    bool scaled;
} lora_match;

/* The low-rank side s·((x a) b) (or (x a) b); fills a, b, scale and x. */
static bool low_rank(const em3_func *f, const int *uses, int v, lora_match *r) {
    const em3_node *n = &f->node[v];
    r->scale = 1.0;
    r->scaled = false;
    if (n->op == EM3_OP_MUL) {
        for (int side = 0; side < 2; side++) {
            const em3_node *c = &f->node[n->in[side]];
            if (c->op == EM3_OP_CONST && c->type.rank == 0 && uses[n->in[1 - side]] == 1) {
                r->scale = c->attr[0].f;
                r->scaled = true;
                v = n->in[1 - side];
                break;
            }
        }
        if (!r->scaled) return false;
    }
    if (!plain_matmul(f, v)) return false;
    int xa = f->node[v].in[0];
    if (!plain_matmul(f, xa) || uses[xa] != 1) return false;
    r->b = f->node[v].in[1];
    r->a = f->node[xa].in[1];
    r->x = f->node[xa].in[0];
    return true;
}

static int fuse_func(em3_func *f) {
    int *uses = em3_xcalloc((size_t)(f->n_node ? f->n_node : 1), sizeof(int));
    for (int i = 0; i < f->n_node; i++)
        for (int k = 0; k < f->node[i].n_in; k++) uses[f->node[i].in[k]]++;
    for (int i = 0; i < f->n_out; i++) uses[f->out[i].value]++;
    int fused = 0;
    for (int y = 0; y < f->n_node; y++) {
        const em3_node add_copy = f->node[y], *add = &add_copy; /* adding nodes moves the array */
        if (add->op != EM3_OP_ADD) continue;
        for (int side = 0; side < 2; side++) {
            int xw = add->in[side], lr = add->in[1 - side];
            lora_match r;
            if (!plain_matmul(f, xw) || uses[xw] != 1 || uses[lr] != 1 || !low_rank(f, uses, lr, &r)) continue;
            if (f->node[xw].in[0] != r.x || !frozen_weight(f, f->node[xw].in[1])) continue;
            r.w = f->node[xw].in[1];
            em3_node p = em3_node_proto(EM3_OP_LORA_MATMUL, add->loc);
            em3_node_set_f(&p, "scale", r.scale);
            p.origin = r.scaled ? "matmul,matmul,matmul,mul,add" : "matmul,matmul,matmul,add";
            char err[256];
            int in[4] = {r.x, r.w, r.a, r.b};
            int tmp = em3_func_add(f, &p, in, 4, err, sizeof err);
            if (tmp < 0 || !em3_type_eq(&f->node[tmp].type, &f->node[y].type)) {
                if (tmp >= 0) f->n_node--;
                continue;
            }
            f->node[y] = f->node[tmp];
            f->n_node--;
            fused++;
            break;
        }
    }
    free(uses);
    return fused;
}

int em3_pass_fuse_lora(em3_module *m, const em3_pass_ctx *ctx) {
    (void)ctx;
    int fused = 0;
    for (int i = 0; i < m->n_func; i++) fused += fuse_func(m->func[i]);
    return fused > 0;
}
