/* gelu.c - GELU with the tanh approximation (HF "gelu_new"), its backward, and the
 * residual add. */
#include "internal.h"

#include <math.h>

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_A 0.044715f

void gelu_forward(float *out, const float *inp, size_t N, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t i = 0; i < N; i++) {
        const float x = inp[i];
        const float u = GELU_K * (x + GELU_A * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanhf(u));
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t N, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t i = 0; i < N; i++) {
        const float x = inp[i];
        const float u = GELU_K * (x + GELU_A * x * x * x);
        const float th = tanhf(u);
        const float sech2 = 1.0f - th * th;
        const float local = 0.5f * (1.0f + th) +
                            0.5f * x * sech2 * GELU_K * (1.0f + 3.0f * GELU_A * x * x);
        dinp[i] = local * dout[i];
    }
}

void residual_forward(float *out, const float *a, const float *b, size_t N, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}
