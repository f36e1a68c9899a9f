/* passes/merge_lora.c — for serving: lora_matmul(x, w, a, b) becomes x·(w + s·a b), one GEMM
 * against a merged weight instead of three. The merged weight depends on parameters only, so
 * it costs din·rank·dout per call against rows·rank·(din + dout) saved — a win for any batch
 * of more than a handful of rows. Only in @predict (training keeps the factors apart); run by
 * `em3 build --merge-lora`, never by default. */
#include "ir/builder.h"
#include "passes.h"

int em3_pass_merge_lora(em3_module *m, const em3_pass_ctx *ctx) {
    (void)ctx;
    em3_func *f = em3_module_find_func(m, "predict");
    int merged = 0, n = f ? f->n_node : 0;
    for (int i = 0; i < n; i++) {
        if (f->node[i].op != EM3_OP_LORA_MATMUL) continue;
        const em3_node l = f->node[i];
        em3_builder b = {f, l.loc};
        int ab = em3_b_scale(&b, em3_b_matmul(&b, l.in[2], l.in[3], false, false), em3_node_f(&l, "scale"));
        int w = em3_b_binary(&b, EM3_OP_ADD, l.in[1], ab);
        int y = em3_b_matmul(&b, l.in[0], w, false, false);
        /* the lora_matmul's slot becomes a copy of y: readers keep their operand ids */
        for (int k = 0; k < f->n_node; k++) {
            em3_node *u = &f->node[k];
            for (int o = 0; o < u->n_in; o++)
                if (u->in[o] == i) {
                    int *in = em3_arena_alloc(m->arena, sizeof(int) * (size_t)u->n_in);
                    for (int j = 0; j < u->n_in; j++) in[j] = u->in[j] == i ? y : u->in[j];
                    u->in = in;
                    break;
                }
        }
        for (int o = 0; o < f->n_out; o++)
            if (f->out[o].value == i) f->out[o].value = y;
        merged++;
    }
    if (merged) em3_func_toposort(f);
    return merged > 0;
}
