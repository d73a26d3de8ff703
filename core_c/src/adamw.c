/* adamw.c - the AdamW update, written to match torch.optim.AdamW operation for operation
 * (decoupled decay first, lerp-form first moment, bias corrections applied as torch does). */
#include "internal.h"

#include <math.h>

void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int t, int nt) {
    const double bc1 = 1.0 - pow((double)beta1, (double)t);
    const double bc2 = 1.0 - pow((double)beta2, (double)t);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float decay = 1.0f - lr * weight_decay;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float g = grad[i];
        float p = param[i] * decay;
        const float mi = m[i] + (g - m[i]) * (1.0f - beta1);
        const float vi = v[i] * beta2 + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        p -= step_size * (mi / denom);
        param[i] = p;
    }
}
