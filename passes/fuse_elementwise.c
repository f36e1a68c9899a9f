/* passes/fuse_elementwise.c — chains of elementwise ops become one `fused` node: one loop over
 * the result that reads each outside operand once (with broadcasting) and keeps every
 * intermediate in registers. Runs after autodiff, where the backward pass is mostly such
 * chains (dy·y·(1−y), masks, scales), so it cuts both kernel count and memory traffic.
 *
 * Groups grow backwards from a root (an elementwise node used by something else): an operand
 * joins when it is elementwise, used only inside the group, and of the root's shape (so that
 * nothing is computed more than once per element); a broadcast joins as a direct read of its
 * operand; a scalar constant becomes a literal. A group keeps at most EM3_PROGRAM_OPERANDS
 * outside operands. The fused node replaces the root in place; DCE removes the members. */
#include <stdlib.h>
#include <string.h>

#include "ir/program.h"
#include "passes.h"

typedef struct {
    em3_func *f;
    int *uses;
    bool *member;     /* in the group being built */
    bool *absorbed;   /* in any group so far */
    int ext[EM3_PROGRAM_OPERANDS], n_ext;
    int members[EM3_PROGRAM_MAX], n_members;
} group;

static const em3_node *node(const group *g, int v) { return &g->f->node[v]; }

static bool elementwise(const em3_node *n) {
    return em3_op_kind_of(n->op) == EM3_KIND_ELEMWISE && !(em3_op_flags(n->op) & EM3_OPF_SIDE_EFFECT) &&
           n->op != EM3_OP_FUSED;
}

static bool scalar_const(const em3_node *n) { return n->op == EM3_OP_CONST && n->type.rank == 0; }

static bool same_shape(const em3_type *a, const em3_type *b) {
    if (a->rank != b->rank) return false;
    for (int i = 0; i < a->rank; i++)
        if (a->dim[i] != b->dim[i]) return false;
    return true;
}

/* The value read in place of v: a broadcast member reads its operand. */
static int source(const group *g, int v) {
    while (g->member[v] && node(g, v)->op == EM3_OP_BROADCAST) v = node(g, v)->in[0];
    return v;
}

static bool is_ext(const group *g, int v) {
    for (int i = 0; i < g->n_ext; i++)
        if (g->ext[i] == v) return true;
    return false;
}

/* Outside operands the group would have with x absorbed (x's operands join the list). */
static int ext_count_with(const group *g, int x) {
    int n = g->n_ext - is_ext(g, x);
    const em3_node *xn = node(g, x);
    for (int k = 0; k < xn->n_in; k++) {
        int v = xn->in[k];
        if (!scalar_const(node(g, v)) && !g->member[v] && !is_ext(g, v) && v != x) {
            bool dup = false;
            for (int j = 0; j < k; j++) dup |= xn->in[j] == v;
            n += !dup;
        }
    }
    return n;
}

static void add_ext(group *g, int v) {
    if (!is_ext(g, v)) g->ext[g->n_ext++] = v;
}

static void drop_ext(group *g, int v) {
    for (int i = 0; i < g->n_ext; i++)
        if (g->ext[i] == v) {
            g->ext[i] = g->ext[--g->n_ext];
            return;
        }
}

/* Tries to bring x into the group rooted at `root`; recurses into x's operands. */
static void absorb(group *g, int root, int x) {
    const em3_node *xn = node(g, x);
    bool bcast = xn->op == EM3_OP_BROADCAST;
    if (g->absorbed[x] || g->member[x] || g->uses[x] != 1 || g->n_members >= EM3_PROGRAM_MAX - 1) return;
    if (!bcast && (!elementwise(xn) || !same_shape(&xn->type, &node(g, root)->type))) return;
    if (ext_count_with(g, x) > EM3_PROGRAM_OPERANDS) return;
    g->member[x] = true;
    g->members[g->n_members++] = x;
    drop_ext(g, x);
    for (int k = 0; k < xn->n_in; k++)
        if (!scalar_const(node(g, xn->in[k]))) add_ext(g, xn->in[k]);
    for (int k = 0; k < xn->n_in; k++)
        if (!scalar_const(node(g, xn->in[k]))) absorb(g, root, xn->in[k]);
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* The group's program, members in order; returns the outside operands in `ins`. */
static char *program_of(group *g, int *ins, int *n_ins) {
    qsort(g->members, (size_t)g->n_members, sizeof(int), cmp_int);
    int slot[EM3_PROGRAM_MAX];
    em3_program p = {0};
    *n_ins = 0;
    for (int m = 0; m < g->n_members; m++) {
        const em3_node *mn = node(g, g->members[m]);
        slot[m] = -1;
        if (mn->op == EM3_OP_BROADCAST) continue;
        em3_pinstr *in = &p.ins[p.n];
        in->op = mn->op;
        in->to = mn->op == EM3_OP_CAST ? (em3_dtype)em3_node_i(mn, "to") : EM3_DTYPE_F32;
        in->n_args = mn->n_in;
        for (int k = 0; k < mn->n_in; k++) {
            int v = source(g, mn->in[k]);
            em3_parg *a = &in->arg[k];
            if (scalar_const(node(g, v))) {
                *a = (em3_parg){EM3_ARG_CONST, 0, node(g, v)->attr[0].f};
            } else if (g->member[v]) {
                int j = 0;
                while (g->members[j] != v) j++;
                *a = (em3_parg){EM3_ARG_RESULT, slot[j], 0};
            } else {
                int j = 0;
                while (j < *n_ins && ins[j] != v) j++;
                if (j == *n_ins) ins[(*n_ins)++] = v;
                *a = (em3_parg){EM3_ARG_OPERAND, j, 0};
            }
        }
        slot[m] = p.n++;
    }
    em3_strbuf sb = {0};
    em3_program_print(&p, &sb);
    return sb.data;
}

static char *origin_of(const group *g) {
    em3_strbuf sb = {0};
    for (int m = 0; m < g->n_members; m++)
        em3_sb_printf(&sb, "%s%s", m ? "," : "", em3_op_name(node(g, g->members[m])->op));
    return sb.data;
}

static int fuse_func(em3_func *f) {
    int n = f->n_node ? f->n_node : 1;
    group g = {.f = f, .uses = em3_xcalloc((size_t)n, sizeof(int)), .member = em3_xcalloc((size_t)n, sizeof(bool)),
               .absorbed = em3_xcalloc((size_t)n, sizeof(bool))};
    for (int i = 0; i < f->n_node; i++)
        for (int k = 0; k < f->node[i].n_in; k++) g.uses[f->node[i].in[k]]++;
    for (int i = 0; i < f->n_out; i++) g.uses[f->out[i].value]++;
    int fused = 0;
    for (int y = f->n_node - 1; y >= 0; y--) {
        if (g.absorbed[y] || !elementwise(&f->node[y])) continue;
        g.n_ext = g.n_members = 0;
        g.member[y] = true;
        g.members[g.n_members++] = y;
        const em3_node *yn = node(&g, y);
        for (int k = 0; k < yn->n_in; k++)
            if (!scalar_const(node(&g, yn->in[k]))) add_ext(&g, yn->in[k]);
        if (g.n_ext <= EM3_PROGRAM_OPERANDS)
            for (int k = 0; k < yn->n_in; k++)
                if (!scalar_const(node(&g, yn->in[k]))) absorb(&g, y, yn->in[k]);
        int real = 0;
        for (int m = 0; m < g.n_members; m++) real += node(&g, g.members[m])->op != EM3_OP_BROADCAST;
        if (g.n_members > 1 && real > 1 && g.n_ext <= EM3_PROGRAM_OPERANDS) {
            int ins[EM3_PROGRAM_OPERANDS], n_ins;
            char *prog = program_of(&g, ins, &n_ins), *origin = origin_of(&g);
            em3_node p = em3_node_proto(EM3_OP_FUSED, f->node[y].loc);
            em3_node_set_s(&p, "program", prog);
            p.origin = origin;
            char err[256];
            int tmp = em3_func_add(f, &p, ins, n_ins, err, sizeof err);
            EM3_ASSERT(tmp >= 0, "fusing %%%d: %s", y, err);
            EM3_ASSERT(em3_type_eq(&f->node[tmp].type, &f->node[y].type), "fusing %%%d changed its type", y);
            f->node[y] = f->node[tmp];
            f->n_node--;
            free(prog);
            free(origin);
            for (int m = 0; m < g.n_members; m++) g.absorbed[g.members[m]] = true;
            fused++;
        }
        for (int m = 0; m < g.n_members; m++) g.member[g.members[m]] = false;
    }
    free(g.uses);
    free(g.member);
    free(g.absorbed);
    return fused;
}

int em3_pass_fuse_elementwise(em3_module *m, const em3_pass_ctx *ctx) {
    (void)ctx;
    int fused = 0;
    for (int i = 0; i < m->n_func; i++) fused += fuse_func(m->func[i]);
    return fused > 0;
}
