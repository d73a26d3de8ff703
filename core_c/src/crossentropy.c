/* crossentropy.c - softmax over the first V of Vp logit columns and the cross-entropy loss;
 * its backward. The padded columns V..Vp-1 exist only to make matmuls regular: they get
 * probability 0 and gradient 0. */
#include "internal.h"

#include "vecmath.h"

#include <math.h>

float crossentropy_forward(float *probs, float *losses, const float *logits,
                           const int32_t *targets, int N, int V, int Vp, int nt) {
    double total = 0.0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : total)
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * Vp;
        float *p = probs + (size_t)n * Vp;
        float maxv = -INFINITY;
        for (int i = 0; i < V; i++)
            if (x[i] > maxv) maxv = x[i];
        /* the sum of up to 50k terms is kept in double: a float sum here made the
         * probabilities measurably less accurate than torch's at V = 50257 */
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int i = 0; i < V; i++) {
            const float e = llmc_expf(x[i] - maxv);
            p[i] = e;
            sum += (double)e;
        }
        const float inv = (float)(1.0 / sum);
        for (int i = 0; i < V; i++) p[i] *= inv;
        for (int i = V; i < Vp; i++) p[i] = 0.0f;
        /* log-sum-exp form: exact even when the target's probability underflows */
        const float loss = (float)(log(sum) + maxv - x[targets[n]]);
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
