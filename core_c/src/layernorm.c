/* layernorm.c - LayerNorm over the channel dimension (eps 1e-5, as GPT-2), and its backward. */
#include "internal.h"

#include <math.h>

#define LN_EPS 1e-5

/* Mean and variance are accumulated in double: rows can be long and near-constant, and a
 * two-pass float sum would lose digits the reference keeps. The cost is negligible next to
 * the matmuls. */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        double s = 0.0;
        for (int c = 0; c < C; c++) s += x[c];
        const double m = s / C;
        double v = 0.0;
        for (int c = 0; c < C; c++) {
            const double d = x[c] - m;
            v += d * d;
        }
        v /= C;
        const float r = (float)(1.0 / sqrt(v + LN_EPS));
        const float mf = (float)m;
        float *o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - mf) * r * weight[c] + bias[c];
        mean[n] = mf;
        rstd[n] = r;
    }
}

/* Two passes: rows in parallel for dinp, then channels in parallel for dweight/dbias, so
 * no thread needs a private accumulator (no allocation) and sums are deterministic. */
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int N, int C, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        const float *d = dout + (size_t)n * C;
        const float m = mean[n], r = rstd[n];
        double sum_dnorm = 0.0, sum_dnorm_xhat = 0.0;
        for (int c = 0; c < C; c++) {
            const float xhat = (x[c] - m) * r;
            const float dn = d[c] * weight[c];
            sum_dnorm += dn;
            sum_dnorm_xhat += (double)dn * xhat;
        }
        const float mean_dn = (float)(sum_dnorm / C);
        const float mean_dnx = (float)(sum_dnorm_xhat / C);
        float *di = dinp + (size_t)n * C;
        for (int c = 0; c < C; c++) {
            const float xhat = (x[c] - m) * r;
            const float dn = d[c] * weight[c];
            di[c] += r * (dn - mean_dn - xhat * mean_dnx);
        }
    }
#pragma omp parallel num_threads(nt)
    {
        /* channel slices per thread, rows in order: contiguous reads, fixed summation order */
        const int tid = LLMC_THREAD_ID(), nth = LLMC_TEAM_SIZE();
        const int c0 = (int)((int64_t)C * tid / nth), c1 = (int)((int64_t)C * (tid + 1) / nth);
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * C;
            const float *x = inp + (size_t)n * C;
            const float m = mean[n], r = rstd[n];
            for (int c = c0; c < c1; c++) {
                dweight[c] += d[c] * ((x[c] - m) * r);
                dbias[c] += d[c];
            }
        }
    }
}
