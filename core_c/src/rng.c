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
