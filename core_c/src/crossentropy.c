/* crossentropy.c - softmax over the first V of Vp logit columns and the cross-entropy loss;
 * its backward. The padded columns V..Vp-1 exist only to make matmuls regular: they get
 * probability 0 and gradient 0. */
#include "internal.h"

#include "bf16.h"

#include "vecmath.h"

#include <math.h>
#include <string.h>

/* One row: probabilities into p, returns log(sum exp(x - max)) + max (the log-partition).
 * Cloned for wide vectors: this is 50k exps per token, scalar it was ~6% of a d12 step. */
LLMC_CLONES static double softmax_row(float *p, const float *x, int V, int Vp) {
    float maxv = -INFINITY;
#pragma omp simd reduction(max : maxv)
    for (int i = 0; i < V; i++) maxv = x[i] > maxv ? x[i] : maxv;
    /* the sum of up to 50k terms is kept in double: a float sum here made the
     * probabilities measurably less accurate than torch's at V = 50257 */
    /* exps first, then their double sum: GCC does not vectorise one loop doing both */
    for (int i = 0; i < V; i++) p[i] = llmc_expf(x[i] - maxv);
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < V; i++) sum += (double)p[i];
    const float inv = (float)(1.0 / sum);
    for (int i = 0; i < V; i++) p[i] *= inv;
    for (int i = V; i < Vp; i++) p[i] = 0.0f;
    return log(sum) + maxv;
}

float crossentropy_forward(float *probs, float *losses, const float *logits,
                           const int32_t *targets, int N, int V, int Vp, int nt) {
    double total = 0.0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : total)
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * Vp;
        const double lse = softmax_row(probs + (size_t)n * Vp, x, V, Vp);
        /* log-sum-exp form: exact even when the target's probability underflows */
        const float loss = (float)(lse - x[targets[n]]);
        losses[n] = loss;
        total += loss;
    }
    return (float)(total / N);
}

void crossentropy_backward(float *dlogits, const float *probs, const int32_t *targets,
                           float dloss, int N, int V, int Vp, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *p = probs + (size_t)n * Vp;
        float *d = dlogits + (size_t)n * Vp;
        for (int i = 0; i < V; i++) d[i] = p[i] * dloss;
        for (int i = V; i < Vp; i++) d[i] = 0.0f;
        d[targets[n]] -= dloss;
    }
}

/* crossentropy_backward with the gradient as bf16 bits (bf16.h rounding of the same floats),
 * written in place over probs: row n's Vp bf16 fill the first half of row n's Vp floats.
 * The classifier's two GEMMs are its only readers and round it anyway, so the GEMM results
 * are the same bits, from half the bytes. A chunk of the row is read before any of its bf16
 * are written: the bf16 of elements [i, i + 64) land on the floats [i / 2, i / 2 + 32),
 * all read by then. memcpy, as the two views of the row are of different types. */
#define CE16_CHUNK 64
LLMC_CLONES static void ce16_row(char *row, int t, float dloss, int V, int Vp) {
    for (int i0 = 0; i0 < Vp; i0 += CE16_CHUNK) {
        const int len = Vp - i0 < CE16_CHUNK ? Vp - i0 : CE16_CHUNK;
        const int live = V - i0 < 0 ? 0 : (V - i0 < len ? V - i0 : len); /* columns < V */
        float g[CE16_CHUNK];
        uint16_t d[CE16_CHUNK];
        memcpy(g, row + (size_t)i0 * sizeof(float), (size_t)len * sizeof(float));
        for (int i = 0; i < live; i++) g[i] *= dloss;
        for (int i = live; i < len; i++) g[i] = 0.0f;
        if (t >= i0 && t < i0 + len) g[t - i0] -= dloss; /* as crossentropy_backward */
        for (int i = 0; i < len; i++) d[i] = (uint16_t)llmc_bf16_bits(g[i]);
        memcpy(row + (size_t)i0 * sizeof(uint16_t), d, (size_t)len * sizeof(uint16_t));
    }
}

void crossentropy_backward16(float *probs, const int32_t *targets, float dloss, int N, int V,
                             int Vp, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++) ce16_row((char *)(probs + (size_t)n * Vp), targets[n], dloss, V, Vp);
}
