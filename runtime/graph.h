/* runtime/graph.h — graph globals: the sparse matrices a model multiplies dense tensors by
 * (spmm), built from the dataset when a model is bound to it, as the global's spec says:
 *
 *   user_item [dropout=P]        the user–item matrix of the training interactions, [users,
 *                                items] (ids as the dataset's user and item columns), normalised
 *                                as LightGCN's adjacency: 1/√(d_u d_i). With dropout, each
 *                                training epoch uses a sample of (1−P)·E edges drawn without
 *                                replacement with probability ∝ 1/√(d_u d_i), normalised again
 *                                by its own degrees (FREEDOM's degree-sensitive edge pruning);
 *                                evaluation always uses every edge.
 *   item_knn k=K tables=A,B,... weights=a,b,...
 *                                the frozen item–item graph: for each named item table, every
 *                                item's K most cosine-similar items (itself included), with
 *                                values 1/√(d_i d_j) (d: out-degree), the tables' matrices summed
 *                                with the weights (default: equal, summing to 1) — FREEDOM's
 *                                multimodal graph. Rows of zeros (the padding id 0, items
 *                                without features) have no edges.
 *
 * Compiled code and the interpreter read a graph through its em3_rt_graph view (abi.h), whose
 * address never changes while the matrices behind it do. */
#ifndef EM3_GRAPH_H
#define EM3_GRAPH_H

#include "abi.h"
#include "dataset.h"

typedef struct em3_graph em3_graph;

/* Builds graph global g for dataset ds; NULL with a message naming the graph (and the model's
 * source line) when the spec or the data do not fit. */
em3_graph *em3_graph_build(const em3_global *g, const em3_dataset *ds, char *err, size_t errlen);
/* A fixed graph from n (row, col, value) triplets; repeated positions are summed. */
em3_graph *em3_graph_from_coo(int64_t rows, int64_t cols, int64_t n, const int32_t *row,
                              const int32_t *col, const float *val);
void em3_graph_free(em3_graph *g);

const em3_rt_graph *em3_graph_view(const em3_graph *g);
/* Entries of the full graph (what evaluation uses). */
int64_t em3_graph_nnz(const em3_graph *g);

/* Training in epoch `epoch` of a run seeded `seed`: a graph with dropout switches to that
 * epoch's sample, drawn once per (seed, epoch), so a resumed run sees the same graphs. */
void em3_graph_train(em3_graph *g, uint64_t seed, int64_t epoch);
/* Evaluation (the state a graph starts in): the full graph. */
void em3_graph_eval(em3_graph *g);

#endif
