/* bf16.h - rounding fp32 to bfloat16 (the top 16 bits of an fp32) for the bf16 GEMMs.
 *
 * Round to nearest even, NaN kept quiet (sign and top payload bits kept), and inputs below
 * the smallest normal float (zeros and denormals) become a zero of the same sign. That is
 * exactly what the AVX512_BF16 conversion (vcvtneps2bf16) does, and the bf16 dot-product
 * instruction treats denormal inputs as zero anyway: with denormals flushed here, the
 * hardware kernel and the portable ones see the same operands and give the same bits. (CUDA
 * and PyTorch keep bf16 denormals, values below 1.2e-38, that no GPT-2 GEMM operand has.) */
#ifndef LLMC_BF16_H
#define LLMC_BF16_H

#include <stdint.h>
#include <string.h>

/* the bf16 bits of x, in the low half of the result (written without branches, so loops of
 * it vectorise) */
static inline uint32_t llmc_bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof(u));
    const uint32_t mag = u & 0x7FFFFFFFu;
    uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    r = mag > 0x7F800000u ? ((u >> 16) | 0x0040u) : r; /* NaN: quiet */
    r = mag < 0x00800000u ? ((u >> 16) & 0x8000u) : r; /* zero, denormal: signed zero */
    return r;
}

/* dst[i] = bits of src[i], i < n: a plain loop, which vectorises where it is inlined (into
 * the clones of the callers). GELU's bf16 output is computed a chunk of floats at a time into
 * a small local buffer and rounded with this: a loop that computed and rounded in one did not
 * vectorise (16 more instructions per element than the fp32 GELU, callgrind, AVX2; 2.7 so) */
#define LLMC_BF16_CHUNK 256
static inline void llmc_bf16_round_into(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (uint16_t)llmc_bf16_bits(src[i]);
}

/* bf16 bits back to the fp32 they stand for (exact) */
static inline float llmc_bf16_to_float(uint32_t bits) {
    const uint32_t u = bits << 16;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* two operands of one GEMM term pair, as the bf16 kernels consume them: the bf16 of depth
 * k (even) in the low half, of depth k + 1 in the high half */
static inline uint32_t llmc_bf16_pair(float even, float odd) {
    return llmc_bf16_bits(even) | (llmc_bf16_bits(odd) << 16);
}

/* ---- a weight in planes (bf16_planes.c): its bf16 image hi, the low half lo of its fp32
 * bits, and up = 1 where the rounding went up (hi is the high half plus one) ---- */

/* the fp32 bits a weight is kept as in planes: zeros and denormals, whose image is a signed
 * zero that says nothing of their high half, become that zero; a NaN is made quiet, so its
 * image is its own high half. Every other value is kept as it is. */
static inline uint32_t llmc_planes_canonical(float w) {
    uint32_t u;
    memcpy(&u, &w, sizeof(u));
    const uint32_t mag = u & 0x7FFFFFFFu;
    u = mag < 0x00800000u ? (u & 0x80000000u) : u;
    u = mag > 0x7F800000u ? (u | 0x00400000u) : u;
    return u;
}

/* the weight of (hi, lo, up): exact for every canonical value */
static inline float llmc_planes_value(uint32_t hi, uint32_t lo, uint32_t up) {
    const uint32_t u = (((hi - up) & 0xFFFFu) << 16) | lo;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* w as (hi, lo, up); returns up. For a normal w the image is its high half or one more
 * (round to nearest even never moves further), so one bit tells which. */
static inline uint32_t llmc_planes_split(float w, uint16_t *hi, uint16_t *lo) {
    const uint32_t u = llmc_planes_canonical(w);
    float c;
    memcpy(&c, &u, sizeof(c));
    const uint32_t r = llmc_bf16_bits(c);
    *hi = (uint16_t)r;
    *lo = (uint16_t)(u & 0xFFFFu);
    return (u >> 16) != r;
}

/* Element j of planes hi, lo with its round-up bit in up (16 to a word, bit j % 16 of word
 * j / 16): read, and written. A write changes one bit of a word shared with 15 neighbours. */
static inline float llmc_planes_get(const uint16_t *hi, const uint16_t *lo, const uint16_t *up,
                                    size_t j) {
    return llmc_planes_value(hi[j], lo[j], ((uint32_t)up[j / 16] >> (j % 16)) & 1u);
}

static inline void llmc_planes_put(uint16_t *hi, uint16_t *lo, uint16_t *up, size_t j, float w) {
    const uint32_t bit = 1u << (j % 16);
    const uint32_t went_up = llmc_planes_split(w, hi + j, lo + j);
    up[j / 16] = (uint16_t)(went_up ? (up[j / 16] | bit) : (up[j / 16] & ~bit));
}

#endif
