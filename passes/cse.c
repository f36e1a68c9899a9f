/* passes/cse.c — common subexpression elimination: two nodes with the same op, attributes,
 * operands and type compute the same value (the IR has value semantics), so later ones are
 * replaced by the first. Autodiff recomputes small things freely (a sigmoid in the forward
 * and again in its VJP); this pass and DCE clean that up. Side-effecting ops are never
 * merged. */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

/* A node's identity as text: op, attributes, operand ids and result type. */
static char *node_key(const em3_node *n) {
    em3_strbuf sb = {0};
    char t[EM3_TYPE_STR_MAX];
    em3_sb_printf(&sb, "%s:%s", em3_op_name(n->op), em3_type_str(&n->type, t, sizeof t));
    int na = em3_op_attr_count(n->op);
    for (int i = 0; i < na; i++) {
        const em3_attrval *a = &n->attr[i];
        /* doubles by bit pattern: 0.0 and -0.0 differ, NaN equals itself */
        uint64_t bits;
        memcpy(&bits, &a->f, sizeof bits);
        em3_sb_printf(&sb, "|%lld,%llx,%s", (long long)a->i, (unsigned long long)bits, a->s ? a->s : "");
        for (int k = 0; k < a->n; k++) em3_sb_printf(&sb, ",%lld", (long long)a->list[k]);
    }
    for (int k = 0; k < n->n_in; k++) em3_sb_printf(&sb, "|%%%d", n->in[k]);
    return sb.data;
}

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int cse_func(em3_func *f) {
    int n = f->n_node, cap = 1;
    while (cap < 2 * n) cap *= 2;
    char **key = em3_xcalloc((size_t)cap, sizeof(char *));
    int *slot_id = em3_xmalloc(sizeof(int) * (size_t)cap);
    int *map = em3_xmalloc(sizeof(int) * (size_t)(n ? n : 1));
    int merged = 0;
    for (int i = 0; i < n; i++) {
        em3_node *nd = &f->node[i];
        map[i] = i;
        /* operands already point at their representatives (they come first) */
        bool change = false;
        for (int k = 0; k < nd->n_in; k++) change |= map[nd->in[k]] != nd->in[k];
        if (change) {
            int *in = em3_arena_alloc(f->mod->arena, sizeof(int) * (size_t)nd->n_in);
            for (int k = 0; k < nd->n_in; k++) in[k] = map[nd->in[k]];
            nd->in = in;
        }
        if ((em3_op_flags(nd->op) & EM3_OPF_SIDE_EFFECT) || nd->op == EM3_OP_INPUT) continue;
        char *k = node_key(nd);
        uint64_t h = hash_str(k) & (uint64_t)(cap - 1);
        while (key[h] && strcmp(key[h], k)) h = (h + 1) & (uint64_t)(cap - 1);
        if (key[h]) {
            map[i] = slot_id[h];
            merged++;
            free(k);
        } else {
            key[h] = k;
            slot_id[h] = i;
        }
    }
    for (int i = 0; i < f->n_out; i++) f->out[i].value = map[f->out[i].value];
    for (int i = 0; i < cap; i++) free(key[i]);
    free(key);
    free(slot_id);
    free(map);
    return merged;
}

int em3_pass_cse(em3_module *m, const em3_pass_ctx *ctx) {
    (void)ctx;
    int merged = 0;
    for (int i = 0; i < m->n_func; i++) merged += cse_func(m->func[i]);
    return merged > 0;
}
