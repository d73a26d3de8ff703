/* layernorm.c - LayerNorm over the channel dimension (eps 1e-5, as GPT-2), and its backward. */
#include "internal.h"

#include "bf16.h"

#include <math.h>

#define LN_EPS 1e-5
#define LN_CHUNK 256

/* Mean and variance are accumulated in double: rows can be long and near-constant, and a
 * two-pass float sum would lose digits the reference keeps. The cost is negligible next to
 * the matmuls. Always inlined: each clone of the row functions needs its own vector build of
 * it (GCC called one baseline copy from both otherwise). */
static inline __attribute__((always_inline)) void layernorm_stats(const float *x, int C,
                                                                 float *mean, float *rstd) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < C; c++) s += x[c];
    const double m = s / C;
    double v = 0.0;
#pragma omp simd reduction(+ : v)
    for (int c = 0; c < C; c++) {
        const double d = x[c] - m;
        v += d * d;
    }
    v /= C;
    *rstd = (float)(1.0 / sqrt(v + LN_EPS));
    *mean = (float)m;
}

LLMC_CLONES static void layernorm_row(float *o, float *mean, float *rstd, const float *x,
                                      const float *weight, const float *bias, int C) {
    float mf, r;
    layernorm_stats(x, C, &mf, &r);
    for (int c = 0; c < C; c++) o[c] = (x[c] - mf) * r * weight[c] + bias[c];
    *mean = mf;
    *rstd = r;
}

/* the same row with the output rounded to bf16 as it is written (bf16 precision keeps it so:
 * only GEMMs read it, and they round it anyway). Rounded in the loop: through a chunk
 * buffer, as GELU does, measured 2.8 instead of 2.0 more instructions per element (callgrind,
 * AVX2). */
LLMC_CLONES static void layernorm_row16(uint16_t *o, float *mean, float *rstd, const float *x,
                                        const float *weight, const float *bias, int C) {
    float mf, r;
    layernorm_stats(x, C, &mf, &r);
    for (int c = 0; c < C; c++) o[c] = (uint16_t)llmc_bf16_bits((x[c] - mf) * r * weight[c] + bias[c]);
    *mean = mf;
    *rstd = r;
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++)
        layernorm_row(out + (size_t)n * C, mean + n, rstd + n, inp + (size_t)n * C, weight, bias,
                      C);
}

void layernorm_forward16(uint16_t *out, float *mean, float *rstd, const float *inp,
                         const float *weight, const float *bias, int N, int C, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++)
        layernorm_row16(out + (size_t)n * C, mean + n, rstd + n, inp + (size_t)n * C, weight,
                        bias, C);
}

/* dinp row (accumulated) of one token */
LLMC_CLONES static void layernorm_backward_row(float *di, const float *d, const float *x,
                                               const float *weight, float m, float r, int C) {
    double sum_dnorm = 0.0, sum_dnorm_xhat = 0.0;
#pragma omp simd reduction(+ : sum_dnorm, sum_dnorm_xhat)
    for (int c = 0; c < C; c++) {
        const float xhat = (x[c] - m) * r;
        const float dn = d[c] * weight[c];
        sum_dnorm += dn;
        sum_dnorm_xhat += (double)dn * xhat;
    }
    const float mean_dn = (float)(sum_dnorm / C);
    const float mean_dnx = (float)(sum_dnorm_xhat / C);
    for (int c = 0; c < C; c++) {
        const float xhat = (x[c] - m) * r;
        const float dn = d[c] * weight[c];
        di[c] += r * (dn - mean_dn - xhat * mean_dnx);
    }
}

/* dweight/dbias contributions of one token to w channels, into double accumulators */
LLMC_CLONES static void layernorm_dweight_row(double *aw, double *ab, const float *d,
                                              const float *x, float m, float r, int w) {
    for (int j = 0; j < w; j++) {
        aw[j] += d[j] * ((x[j] - m) * r);
        ab[j] += d[j];
    }
}

/* Two passes: rows in parallel for dinp, then channels in parallel for dweight/dbias, so
 * no thread needs a private accumulator (no allocation) and sums are deterministic. */
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int N, int C, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++)
        layernorm_backward_row(dinp + (size_t)n * C, dout + (size_t)n * C, inp + (size_t)n * C,
                               weight, mean[n], rstd[n], C);
#pragma omp parallel num_threads(nt)
    {
        /* channel slices per thread, rows in order: contiguous reads, fixed summation order;
         * the sums over the N = B*T rows in double, LN_CHUNK channels at a time (a float
         * running sum's error grows like N ulp, as in matmul.c's bias_backward) */
        const int tid = LLMC_THREAD_ID(), nth = LLMC_TEAM_SIZE();
        const int c0 = (int)((int64_t)C * tid / nth), c1 = (int)((int64_t)C * (tid + 1) / nth);
        double aw[LN_CHUNK], ab[LN_CHUNK];
        for (int k0 = c0; k0 < c1; k0 += LN_CHUNK) {
            const int w = c1 - k0 < LN_CHUNK ? c1 - k0 : LN_CHUNK;
            for (int j = 0; j < w; j++) aw[j] = ab[j] = 0.0;
            for (int n = 0; n < N; n++)
                layernorm_dweight_row(aw, ab, dout + (size_t)n * C + k0, inp + (size_t)n * C + k0,
                                      mean[n], rstd[n], w);
            for (int j = 0; j < w; j++) {
                dweight[k0 + j] += (float)aw[j];
                dbias[k0 + j] += (float)ab[j];
            }
        }
    }
}
