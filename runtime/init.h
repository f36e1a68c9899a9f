/* runtime/init.h — the deterministic random number generator and parameter initialisation
 * shared by every backend (interpreter, JIT, AOT), so that the same seed gives the same
 * initial weights everywhere. */
#ifndef EM3_INIT_H
#define EM3_INIT_H

#include <stdint.h>

#include "ir/ir.h"

/* xoshiro256** seeded through splitmix64: fast, small state, reproducible across machines. */
typedef struct {
    uint64_t s[4];
} em3_rng;

void em3_rng_seed(em3_rng *r, uint64_t seed);
/* The stream of (seed, key): keys that differ give unrelated streams (em3_rng_seed(seed + key)
 * would not: splitmix64's streams from seeds a multiple of its increment apart overlap). */
void em3_rng_seed_keyed(em3_rng *r, uint64_t seed, uint64_t key);
uint64_t em3_rng_next(em3_rng *r);
double em3_rng_uniform(em3_rng *r); /* [0, 1) with 53 random bits */
double em3_rng_normal(em3_rng *r);  /* N(0, 1) */
uint64_t em3_rng_below(em3_rng *r, uint64_t n); /* uniform in [0, n), unbiased */

/* Fill a tensor of static shape dims[0..rank) from an init spec. The stream depends only on
 * `seed` and the tensor's name, so adding a parameter never changes another's initial values.
 * `elem_size` is sizeof(float) or sizeof(double). Needs no IR module: AOT-built models call it. */
void em3_init_fill(em3_init init, const int64_t *dims, int rank, const char *name, uint64_t seed,
                   void *out, size_t elem_size);
/* The same for a global of a module (its type must not have the batch dimension). */
void em3_init_global(const em3_global *g, uint64_t seed, void *out, size_t elem_size);

#endif
