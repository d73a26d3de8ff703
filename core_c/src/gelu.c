/* gelu.c - GELU with the tanh approximation (HF "gelu_new"), its backward, and the
 * residual add. The per-range helpers are compiled for AVX-512, AVX2 and baseline x86-64
 * and chosen at load time (target_clones), so a portable build still runs wide vectors. */
#include "internal.h"

#include "bf16.h"
#include "vecmath.h"

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_A 0.044715f

/* LLMC_CLONES: internal.h */

/* 0.5 x (1 + tanh(u)) = x * sigmoid(2u): the sigmoid form keeps full relative precision
 * for negative x, where 1 + tanh(u) would cancel. */
static inline float gelu_of(float x) {
    const float u = GELU_K * (x + GELU_A * x * x * x);
    return x / (1.0f + llmc_expf(-2.0f * u));
}

LLMC_CLONES static void gelu_range(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = gelu_of(inp[i]);
}

/* the output rounded to bf16 as it is written (bf16 precision keeps fch_gelu so: only the
 * fcproj GEMMs read it; gelu's backward reads fch) */
LLMC_CLONES static void gelu_range16(uint16_t *out, const float *inp, size_t n) {
    float tmp[LLMC_BF16_CHUNK];
    for (size_t i0 = 0; i0 < n; i0 += LLMC_BF16_CHUNK) {
        const size_t w = n - i0 < LLMC_BF16_CHUNK ? n - i0 : LLMC_BF16_CHUNK;
        for (size_t i = 0; i < w; i++) tmp[i] = gelu_of(inp[i0 + i]);
        llmc_bf16_round_into(out + i0, tmp, w);
    }
}

/* d/dx = s + 2 x s (1 - s) du/dx with s = sigmoid(2u), since 0.5 (1 + tanh) = s and
 * 0.5 sech^2 = 2 s (1 - s). */
LLMC_CLONES static void gelu_backward_range(float *dinp, const float *inp, const float *dout,
                                            size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float x = inp[i];
        const float u = GELU_K * (x + GELU_A * x * x * x);
        const float s = 1.0f / (1.0f + llmc_expf(-2.0f * u));
        const float du = GELU_K * (1.0f + 3.0f * GELU_A * x * x);
        const float local = s + 2.0f * x * s * (1.0f - s) * du;
        dinp[i] = local * dout[i];
    }
}

/* split [0, N) into one contiguous chunk per thread */
#define FOR_THREAD_CHUNK(N, nt, body)                                                      \
    _Pragma("omp parallel num_threads(nt)") {                                              \
        const size_t tid_ = (size_t)LLMC_THREAD_ID(), nth_ = (size_t)LLMC_TEAM_SIZE();     \
        const size_t lo = (N) * tid_ / nth_, hi = (N) * (tid_ + 1) / nth_;                 \
        body;                                                                              \
    }

void gelu_forward(float *out, const float *inp, size_t N, int nt) {
    FOR_THREAD_CHUNK(N, nt, gelu_range(out + lo, inp + lo, hi - lo))
}

void gelu_forward16(uint16_t *out, const float *inp, size_t N, int nt) {
    FOR_THREAD_CHUNK(N, nt, gelu_range16(out + lo, inp + lo, hi - lo))
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t N, int nt) {
    FOR_THREAD_CHUNK(N, nt, gelu_backward_range(dinp + lo, inp + lo, dout + lo, hi - lo))
}

void residual_forward(float *out, const float *a, const float *b, size_t N, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}
