/* shared_math.cuh - the arithmetic of the CUDA kernels, as __host__ __device__ functions.
 *
 * kernels.cu computes every element-wise value and every per-row partial sum through these
 * functions, and tests/host_emulation.cu runs the same functions on the host (compiled by
 * nvcc, no GPU needed) to compare them with the CPU kernels of src/ on hard inputs
 * (parity_tests/test_cuda_host_math.py). They follow the CPU kernels operation for
 * operation: the same exp (llmc_expf from src/vecmath.h), the same formulas, double
 * accumulators where the CPU has them. The CUDA sources are compiled with --fmad=false, so the
 * device rounds after every multiply and add as the CPU's ISO C does (no fused multiply-add);
 * what the host run cannot show is the device compiler's code generation itself, which the
 * GPU tests (parity_tests/test_cuda_parity.py) check.
 *
 * Row reductions: `lanes` threads read one row, thread `lane` taking elements lane,
 * lane + lanes, ... in increasing order, and the lane_* functions return that thread's
 * partial. The kernels combine partials with warp_sum / block_sum (kernels.cu), whose order
 * of additions host_warp_sum / host_block_sum below reproduce. */
#ifndef LLMC_CUDA_SHARED_MATH_CUH
#define LLMC_CUDA_SHARED_MATH_CUH

#include <cuda_bf16.h>
#include <math.h>

#include "vecmath.h" /* llmc_expf, LLMC_HD */

namespace llmc_cuda {

constexpr int kWarp = 32;
/* threads per row of the classifier's softmax: its order of additions depends on it */
constexpr int kClassifierThreads = 512;

/* ------------------------------------------------------------------ element-wise */

/* GELU, tanh approximation, in the CPU's sigmoid form (src/gelu.c):
 * 0.5 x (1 + tanh u) = x sigmoid(2u), which keeps full relative precision for negative x,
 * where 1 + tanh(u) cancels. */
#define LLMC_GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define LLMC_GELU_A 0.044715f

LLMC_HD inline float gelu_value(float x) {
    const float u = LLMC_GELU_K * (x + LLMC_GELU_A * x * x * x);
    return x / (1.0f + llmc_expf(-2.0f * u));
}

/* d gelu / dx * dout = (s + 2 x s (1 - s) du/dx) * dout, s = sigmoid(2u) */
LLMC_HD inline float gelu_grad(float x, float dout) {
    const float u = LLMC_GELU_K * (x + LLMC_GELU_A * x * x * x);
    const float s = 1.0f / (1.0f + llmc_expf(-2.0f * u));
    const float du = LLMC_GELU_K * (1.0f + 3.0f * LLMC_GELU_A * x * x);
    const float local = s + 2.0f * x * s * (1.0f - s) * du;
    return local * dout;
}

/* bf16 GEMM operands: round to nearest even */
LLMC_HD inline __nv_bfloat16 round_bf16(float x) { return __float2bfloat16_rn(x); }

/* AdamW's scalars exactly as src/adamw.c forms them: in double, rounded to float once (host) */
struct adamw_scalars {
    float one_minus_b1, b2, one_minus_b2, neg_step, bc2_sqrt, eps;
};
inline adamw_scalars adamw_scalars_of(double lr, double beta1, double beta2, double eps, int t) {
    const double bc1 = 1.0 - pow(beta1, (double)t);
    const double bc2 = 1.0 - pow(beta2, (double)t);
    adamw_scalars k;
    k.one_minus_b1 = (float)(1.0 - beta1);
    k.b2 = (float)beta2;
    k.one_minus_b2 = (float)(1.0 - beta2);
    k.neg_step = (float)(-(lr / bc1));
    k.bc2_sqrt = (float)sqrt(bc2);
    k.eps = (float)eps;
    return k;
}
/* the decoupled weight decay factor of a tensor with decay wd */
inline float adamw_decay_of(double lr, double wd) { return (float)(1.0 - lr * wd); }

/* One AdamW element, src/adamw.c's operations in its order; the scalars from
 * adamw_scalars_of. Updates *param, *m, *v. */
LLMC_HD inline void adamw_element(float *param, float grad, float *m, float *v,
                                  float one_minus_b1, float b2, float one_minus_b2,
                                  float neg_step, float bc2_sqrt, float eps, float decay,
                                  float grad_scale) {
    const float g = grad * grad_scale;
    const float p = *param * decay;
    const float mi = *m + one_minus_b1 * (g - *m);
    const float vi = *v * b2 + one_minus_b2 * g * g;
    *m = mi;
    *v = vi;
    const float denom = sqrtf(vi) / bc2_sqrt + eps;
    *param = p + neg_step * (mi / denom);
}

/* ------------------------------------------------------------------ per-lane partials */

LLMC_HD inline double lane_sum(const float *x, int n, int lane, int lanes) {
    double s = 0.0;
    for (int i = lane; i < n; i += lanes) s += x[i];
    return s;
}

/* sum of (x - m)^2 in double, m the double mean: the CPU's second pass */
LLMC_HD inline double lane_sq_dev(const float *x, int n, double m, int lane, int lanes) {
    double s = 0.0;
    for (int i = lane; i < n; i += lanes) {
        const double d = x[i] - m;
        s += d * d;
    }
    return s;
}

LLMC_HD inline float lane_max(const float *x, int n, int lane, int lanes) {
    float mx = -INFINITY;
    for (int i = lane; i < n; i += lanes) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

/* e[i] = exp(x[i] - mx) for this lane's i (e may be x: in place); returns their sum in
 * double, as the CPU's softmaxes */
LLMC_HD inline double lane_exp(float *e, const float *x, int n, float mx, int lane, int lanes) {
    double s = 0.0;
    for (int i = lane; i < n; i += lanes) {
        const float ei = llmc_expf(x[i] - mx);
        e[i] = ei;
        s += (double)ei;
    }
    return s;
}

/* layernorm backward: sum of dn = dout * w and of dn * xhat, in double (src/layernorm.c) */
LLMC_HD inline void lane_layernorm_backward_sums(const float *d, const float *x,
                                                 const float *w, float m, float r, int n,
                                                 int lane, int lanes, double *sdn,
                                                 double *sdnx) {
    double a = 0.0, b = 0.0;
    for (int i = lane; i < n; i += lanes) {
        const float xhat = (x[i] - m) * r;
        const float dn = d[i] * w[i];
        a += dn;
        b += (double)dn * xhat;
    }
    *sdn = a;
    *sdnx = b;
}

/* ------------------------------------------------------------------ row results */

#define LLMC_LN_EPS 1e-5

/* mean (double, for the second pass) from the row sum */
LLMC_HD inline double layernorm_mean(double sum, int C) { return sum / C; }
/* rstd from the sum of squared deviations, rounded to float once */
LLMC_HD inline float layernorm_rstd(double sq_dev, int C) {
    return (float)(1.0 / sqrt(sq_dev / C + LLMC_LN_EPS));
}
LLMC_HD inline float layernorm_out(float x, float mean, float rstd, float w, float b) {
    return (x - mean) * rstd * w + b;
}
/* dinp element added: r (dn - mean(dn) - xhat mean(dn xhat)) */
LLMC_HD inline float layernorm_dinp(float d, float x, float w, float m, float r, float mean_dn,
                                    float mean_dnx) {
    const float xhat = (x - m) * r;
    const float dn = d * w;
    return r * (dn - mean_dn - xhat * mean_dnx);
}

/* softmax normaliser from the double sum of exps, rounded to float once */
LLMC_HD inline float softmax_inv(double sum) { return (float)(1.0 / sum); }
/* cross-entropy loss: log-sum-exp - logit[target], in double, rounded once */
LLMC_HD inline float crossentropy_loss(double sum, float mx, float target_logit) {
    return (float)(log(sum) + mx - target_logit);
}

/* dwte[v, c] (acc, its current value) += dout[p, c] for the positions p = order[j0 .. j1) of
 * token v, in that (increasing) order: the CPU's order (src/encoder.c), one float add each */
LLMC_HD inline float embedding_row_sum(float acc, const float *dout, const int32_t *order,
                                       int j0, int j1, int c, int C) {
    for (int j = j0; j < j1; j++) acc += dout[(size_t)order[j] * C + c];
    return acc;
}

/* dwpe element i (acc, its current value) += dout[b, i] for b = 0 .. B - 1, n = T * C apart:
 * the CPU's order, one float add each */
LLMC_HD inline float position_sum(float acc, const float *dout, int B, size_t n, size_t i) {
    for (int b = 0; b < B; b++) acc += dout[(size_t)b * n + i];
    return acc;
}

/* ------------------------------------------------------------------ host emulation */

/* warp_sum's order: the xor butterfly v[l] += v[l ^ o] for o = 16, 8, 4, 2, 1; afterwards
 * every lane holds the same value (a + b == b + a exactly). v[32] is overwritten. */
template <typename F>
inline F host_warp_sum(F *v) {
    for (int o = kWarp / 2; o > 0; o >>= 1) {
        F t[kWarp];
        for (int l = 0; l < kWarp; l++) t[l] = v[l] + v[l ^ o];
        for (int l = 0; l < kWarp; l++) v[l] = t[l];
    }
    return v[0];
}

/* block_sum's order for `threads` (a multiple of 32, at most 1024) partials: each warp's
 * butterfly, then the butterfly of the warp results padded with zeros to 32 lanes */
template <typename F>
inline F host_block_sum(const F *partials, int threads) {
    F warps[kWarp];
    for (int w = 0; w < kWarp; w++) warps[w] = F(0);
    for (int w = 0; w < threads / kWarp; w++) {
        F v[kWarp];
        for (int l = 0; l < kWarp; l++) v[l] = partials[w * kWarp + l];
        warps[w] = host_warp_sum(v);
    }
    return host_warp_sum(warps);
}

}  // namespace llmc_cuda

#endif
