/* adamw.c - the AdamW update, written to match torch.optim.AdamW operation for operation:
 * decoupled decay first, lerp-form first moment, and every scalar derived from the
 * hyperparameters in double, rounded to float once (torch forms them from Python floats). */
#include "internal.h"

#include <math.h>

LLMC_CLONES static void adamw_range(float *param, const float *grad, float *m, float *v,
                                    size_t n, float grad_scale, float decay, float one_minus_b1,
                                    float b2, float one_minus_b2, float neg_step_size,
                                    float bc2_sqrt, float eps_f) {
    for (size_t i = 0; i < n; i++) {
        const float g = grad[i] * grad_scale; /* exact when grad_scale is 1 */
        const float p = param[i] * decay;
        const float mi = m[i] + one_minus_b1 * (g - m[i]);
        const float vi = v[i] * b2 + one_minus_b2 * g * g;
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / bc2_sqrt + eps_f;
        param[i] = p + neg_step_size * (mi / denom);
    }
}

void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int t,
                  float grad_scale, int nt) {
    const double bc1 = 1.0 - pow(beta1, (double)t);
    const double bc2 = 1.0 - pow(beta2, (double)t);
    const float one_minus_b1 = (float)(1.0 - beta1);
    const float b2 = (float)beta2;
    const float one_minus_b2 = (float)(1.0 - beta2);
    const float neg_step_size = (float)(-(lr / bc1));
    const float bc2_sqrt = (float)sqrt(bc2);
    const float eps_f = (float)eps;
    const float decay = (float)(1.0 - lr * weight_decay);
/* one contiguous chunk per thread: the range helper is cloned for wide vectors (scalar
 * SSE2 sqrt and two divides per element made AdamW compute-bound) */
#pragma omp parallel num_threads(nt)
    {
        const size_t tid = (size_t)LLMC_THREAD_ID(), nth = (size_t)LLMC_TEAM_SIZE();
        const size_t lo = n * tid / nth, hi = n * (tid + 1) / nth;
        adamw_range(param + lo, grad + lo, m + lo, v + lo, hi - lo, grad_scale, decay,
                    one_minus_b1, b2, one_minus_b2, neg_step_size, bc2_sqrt, eps_f);
    }
}

/* Sum of squares of one block, lanes summed in a fixed order (double: 124M squares). */
LLMC_CLONES static double sumsq_block(const float *g, size_t n) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return s;
}

/* Sum of squares of g[0, n). Fixed blocks (at most SUMSQ_MAX_BLOCKS of them) summed in
 * block order, so the result does not depend on the thread count. */
#define SUMSQ_MAX_BLOCKS 4096
double grad_sumsq(const float *g, size_t n, int nt) {
    double block_sums[SUMSQ_MAX_BLOCKS];
    size_t bs = n / SUMSQ_MAX_BLOCKS + 1;
    if (bs < 16384) bs = 16384;
    const long nb = (long)((n + bs - 1) / bs);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long b = 0; b < nb; b++) {
        const size_t lo = (size_t)b * bs, hi = lo + bs < n ? lo + bs : n;
        block_sums[b] = sumsq_block(g + lo, hi - lo);
    }
    double s = 0.0;
    for (long b = 0; b < nb; b++) s += block_sums[b];
    return s;
}
