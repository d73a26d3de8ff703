/* rng.c - splitmix64 and Box-Muller normals: deterministic weight initialisation from a seed,
 * identical on every platform and thread count. */
#include "internal.h"

#include <math.h>

void llmc_rng_seed(llmc_rng *r, uint64_t seed) { r->state = seed ^ 0x9E3779B97F4A7C15ULL; }

uint64_t llmc_rng_next(llmc_rng *r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* uniform in (0, 1]: 53 random bits, never 0 so log() is finite */
static double uniform01(llmc_rng *r) {
    return ((double)(llmc_rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
}

float llmc_rng_normal(llmc_rng *r) {
    double u1 = uniform01(r), u2 = uniform01(r);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* splitmix64 draw number i (0-based) of the stream seeded with `seed`, without stepping a
 * state: the generator is a counter, so any draw can be computed directly. */
static uint64_t draw_at(uint64_t seed, uint64_t i) {
    uint64_t z = (seed ^ 0x9E3779B97F4A7C15ULL) + (i + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* p[j] = std * normal number (first + j) of the stream. Normals come in Box-Muller pairs
 * (cos and sin of one draw pair), pair q from draws 2q and 2q + 1; the values depend only on
 * the seed and the index, so the fill runs in parallel and gives the same numbers for any
 * thread count. (One log and sqrt per two normals, and both cores: creating a 124M model
 * spent over a second in scalar log/cos before.) */
void llmc_rng_fill_normal(float *p, size_t n, float std, uint64_t seed, uint64_t first, int nt) {
    const double two_pi = 6.283185307179586, inv53 = 1.0 / 9007199254740992.0;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t j = 0; j < (int64_t)n; j++) {
        const uint64_t idx = first + (uint64_t)j, q = idx / 2;
        /* an odd element is written by its even partner's iteration (j - 1), except at
         * j = 0, where the partner belongs to the previous tensor: one writer per element */
        if ((idx & 1) && j > 0) continue;
        const double u1 = ((double)(draw_at(seed, 2 * q) >> 11) + 1.0) * inv53; /* (0, 1] */
        const double u2 = ((double)(draw_at(seed, 2 * q + 1) >> 11) + 1.0) * inv53;
        const double r = sqrt(-2.0 * log(u1)), a = two_pi * u2;
        if (idx & 1) {
            p[j] = (float)(std * r * sin(a));
        } else {
            p[j] = (float)(std * r * cos(a));
            if (j + 1 < (int64_t)n) p[j + 1] = (float)(std * r * sin(a));
        }
    }
}
