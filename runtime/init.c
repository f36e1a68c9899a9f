/* runtime/init.c — xoshiro256** (seeded by splitmix64) and the parameter initialisers. Every
 * backend and the PyTorch peer take their initial weights from here, so the streams are fixed:
 * a global's values depend only on the seed, its name, its type and its init spec. Uses no IR
 * function (only ir.h's types), so it also links into AOT-built models (em3_rt_pic). */
#include "init.h"

#include <math.h>
#include <string.h>

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* splitmix64 expands one 64-bit seed into a well-mixed state; xoshiro's authors recommend it
 * because a state of mostly zero bits makes xoshiro's first outputs poor. */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void em3_rng_seed(em3_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

void em3_rng_seed_keyed(em3_rng *r, uint64_t seed, uint64_t key) {
    em3_rng_seed(r, seed ^ splitmix64(&key)); /* splitmix64's output is a bijection of its input */
}

uint64_t em3_rng_next(em3_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double em3_rng_uniform(em3_rng *r) { return (double)(em3_rng_next(r) >> 11) * 0x1.0p-53; }

/* Box–Muller without a cached spare: each call consumes exactly two outputs, so the position
 * in the stream is a function of the number of calls alone (checkpoints store only the state). */
double em3_rng_normal(em3_rng *r) {
    double u1 = 1.0 - em3_rng_uniform(r); /* (0, 1]: log(u1) is finite */
    double u2 = em3_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint64_t em3_rng_below(em3_rng *r, uint64_t n) {
    EM3_ASSERT(n > 0, "em3_rng_below(0)");
    /* Reject the lowest 2^64 mod n outputs so that every residue has the same number of
     * preimages. */
    uint64_t threshold = -n % n;
    for (;;) {
        uint64_t x = em3_rng_next(r);
        if (x >= threshold) return x % n;
    }
}

/* FNV-1a over the seed's eight bytes (little-endian) and then the name: each global gets its
 * own stream, and adding or renaming another global never shifts it. */
static uint64_t stream_seed(uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int i = 0; i < 8; i++) {
        h ^= (seed >> (8 * i)) & 0xff;
        h *= 0x100000001b3ULL;
    }
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Glorot uniform bound over the last two dims (fan_in = rows, fan_out = columns, as for a
 * [din, dout] weight used as x @ w). The spec's `a` is not used: xavier has no parameter. */
static double xavier_bound(const int64_t *dims, int rank) {
    int64_t fan_in = 1, fan_out = 1;
    if (rank == 1) fan_in = fan_out = dims[0];
    if (rank >= 2) {
        fan_in = dims[rank - 2];
        fan_out = dims[rank - 1];
    }
    return sqrt(6.0 / (double)(fan_in + fan_out));
}

static double draw(const em3_init *init, double xavier, em3_rng *r) {
    switch (init->kind) {
    case EM3_INIT_NONE:
    case EM3_INIT_ZEROS: return 0.0;
    case EM3_INIT_ONES: return 1.0;
    case EM3_INIT_CONST: return init->a;
    case EM3_INIT_NORMAL: return init->a * em3_rng_normal(r);
    case EM3_INIT_UNIFORM: return init->a * (2.0 * em3_rng_uniform(r) - 1.0);
    case EM3_INIT_XAVIER: return xavier * (2.0 * em3_rng_uniform(r) - 1.0);
    }
    EM3_UNREACHABLE("bad init kind %d", (int)init->kind);
}

void em3_init_fill(em3_init init, const int64_t *dims, int rank, const char *name, uint64_t seed,
                   void *out, size_t elem_size) {
    EM3_ASSERT(elem_size == sizeof(float) || elem_size == sizeof(double),
               "@%s: element size %zu is neither float nor double", name, elem_size);
    int64_t n = 1;
    for (int d = 0; d < rank; d++) {
        EM3_ASSERT(dims[d] > 0, "@%s: dimension %d is %lld, not a static size", name, d, (long long)dims[d]);
        n *= dims[d];
    }
    em3_rng r;
    em3_rng_seed(&r, stream_seed(seed, name));
    double bound = xavier_bound(dims, rank);
    for (int64_t i = 0; i < n; i++) {
        double v = draw(&init, bound, &r);
        if (elem_size == sizeof(float))
            ((float *)out)[i] = (float)v;
        else
            ((double *)out)[i] = v;
    }
}

void em3_init_global(const em3_global *g, uint64_t seed, void *out, size_t elem_size) {
    em3_init_fill(g->init, g->type.dim, g->type.rank, g->name, seed, out, elem_size);
}
