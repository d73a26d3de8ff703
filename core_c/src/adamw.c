/* adamw.c - the AdamW update, written to match torch.optim.AdamW operation for operation:
 * decoupled decay first, lerp-form first moment, and every scalar derived from the
 * hyperparameters in double, rounded to float once (torch forms them from Python floats). */
#include "internal.h"

#include <math.h>

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
#pragma omp parallel for num_threads(nt) schedule(static)
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
