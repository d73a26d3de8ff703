/* adamw.c - the AdamW update, written to match torch.optim.AdamW operation for operation:
 * decoupled decay first, lerp-form first moment, and every scalar derived from the
 * hyperparameters in double, rounded to float once (torch forms them from Python floats). */
#include "internal.h"

#include "bf16.h"

#include <math.h>

/* One element of the update; STORE16 writes the bf16 image of the new weight (or nothing). */
#define ADAMW_ELEMENT(i, STORE16)                                                          \
    do {                                                                                   \
        const float g = grad[i] * grad_scale; /* exact when grad_scale is 1 */             \
        const float p = param[i] * decay;                                                  \
        const float mi = m[i] + one_minus_b1 * (g - m[i]);                                 \
        const float vi = v[i] * b2 + one_minus_b2 * g * g;                                 \
        m[i] = mi;                                                                         \
        v[i] = vi;                                                                         \
        const float denom = sqrtf(vi) / bc2_sqrt + eps_f;                                  \
        param[i] = p + neg_step_size * (mi / denom);                                       \
        STORE16;                                                                           \
    } while (0)
#define ADAMW_RANGE_ARGS                                                                   \
    const float *grad, float *m, float *v, size_t n, float grad_scale, float decay,        \
        float one_minus_b1, float b2, float one_minus_b2, float neg_step_size,             \
        float bc2_sqrt, float eps_f

LLMC_CLONES static void adamw_range(float *param, ADAMW_RANGE_ARGS) {
    for (size_t i = 0; i < n; i++) ADAMW_ELEMENT(i, (void)0);
}

/* bf16 precision: the update already streams every weight, so writing its bf16 image here
 * costs 2 bytes per parameter of store traffic instead of a separate pass that reads the
 * fp32 weights again */
LLMC_CLONES static void adamw_range16(float *param, uint16_t *param16, ADAMW_RANGE_ARGS) {
    for (size_t i = 0; i < n; i++)
        ADAMW_ELEMENT(i, param16[i] = (uint16_t)llmc_bf16_bits(param[i]));
}

void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int t,
                  float grad_scale, int nt) {
    adamw_update16(param, NULL, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, t,
                   grad_scale, nt);
}

void adamw_update16(float *param, uint16_t *param16, const float *grad, float *m, float *v,
                    size_t n, double lr, double beta1, double beta2, double eps,
                    double weight_decay, int t, float grad_scale, int nt) {
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
        if (param16)
            adamw_range16(param + lo, param16 + lo, grad + lo, m + lo, v + lo, hi - lo,
                          grad_scale, decay, one_minus_b1, b2, one_minus_b2, neg_step_size,
                          bc2_sqrt, eps_f);
        else
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

LLMC_CLONES static void add_block(float *g, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] += src[i];
}

/* Sum of squares of g[0, n), after g += src when src is not NULL (the reduce of data
 * parallel's reduce-scatter: each block is summed right after its add, while it is in cache,
 * so the norm needs no second pass). Fixed blocks (at most SUMSQ_MAX_BLOCKS of them) summed
 * in block order, so the result does not depend on the thread count, nor on whether the add
 * came first or in another call. */
#define SUMSQ_MAX_BLOCKS 4096
static double blocked_sumsq(float *g, const float *src, size_t n, int nt) {
    double block_sums[SUMSQ_MAX_BLOCKS];
    size_t bs = n / SUMSQ_MAX_BLOCKS + 1;
    if (bs < 16384) bs = 16384;
    const long nb = (long)((n + bs - 1) / bs);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long b = 0; b < nb; b++) {
        const size_t lo = (size_t)b * bs, hi = lo + bs < n ? lo + bs : n;
        if (src) add_block(g + lo, src + lo, hi - lo);
        block_sums[b] = sumsq_block(g + lo, hi - lo);
    }
    double s = 0.0;
    for (long b = 0; b < nb; b++) s += block_sums[b];
    return s;
}

double grad_sumsq(const float *g, size_t n, int nt) {
    return blocked_sumsq((float *)g, NULL, n, nt); /* no src: g is only read */
}

/* ---- slices of the parameter buffer (ZeRO-1: each process updates its own slice) ---- */

static int check_range(llmc_model *m, int64_t offset, int64_t count, const char *what) {
    if (m->device != LLMC_DEVICE_CPU)
        return llmc_fail(m, LLMC_ERR_UNSUPPORTED, "%s: CPU models only", what);
    if (offset < 0 || count < 0 || (uint64_t)offset > m->num_params ||
        (uint64_t)count > m->num_params - (uint64_t)offset)
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT,
                         "%s: slice of %lld floats at offset %lld is outside the %zu parameters",
                         what, (long long)count, (long long)offset, m->num_params);
    return LLMC_OK;
}

LLMC_API int32_t llmc_model_adamw_step_range(llmc_model *m, const llmc_adamw_params *hp,
                                             int64_t offset, int64_t count, float *adam_m,
                                             float *adam_v) {
    if (!m) return LLMC_ERR_INVALID_ARGUMENT;
    int st = check_range(m, offset, count, "adamw_step_range");
    if (st != LLMC_OK) return st;
    if ((adam_m == NULL) != (adam_v == NULL))
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT,
                         "adamw_step_range: adam_m and adam_v must both be given or both NULL");
    st = llmc_check_adamw_params(m, hp);
    if (st != LLMC_OK) return st;
    const size_t lo = (size_t)offset, hi = lo + (size_t)count;
    float *mm = adam_m ? adam_m : m->adam_m + lo;
    float *vv = adam_v ? adam_v : m->adam_v + lo;
    /* the part of each tensor inside [lo, hi), with that tensor's weight decay */
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const size_t t0 = m->param_offsets[i], t1 = t0 + m->param_sizes[i];
        const size_t a = t0 > lo ? t0 : lo, b = t1 < hi ? t1 : hi;
        if (a >= b) continue;
        /* a current bf16 copy stays current: its slice is rewritten with the weights */
        uint16_t *p16 = m->params16 && m->params16_valid ? m->params16 + a : NULL;
        adamw_update16(m->params + a, p16, m->grads + a, mm + (a - lo), vv + (a - lo), b - a,
                       hp->lr, hp->beta1, hp->beta2, hp->eps, llmc_param_weight_decay(hp, i),
                       hp->t, hp->grad_scale, m->nthreads);
    }
    return LLMC_OK;
}

LLMC_API int32_t llmc_model_grad_sumsq_range(llmc_model *m, int64_t offset, int64_t count,
                                             double *sumsq) {
    if (!m) return LLMC_ERR_INVALID_ARGUMENT;
    if (!sumsq) return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "grad_sumsq_range: sumsq is NULL");
    const int st = check_range(m, offset, count, "grad_sumsq_range");
    if (st != LLMC_OK) return st;
    *sumsq = grad_sumsq(m->grads + offset, (size_t)count, m->nthreads);
    return LLMC_OK;
}

LLMC_API int32_t llmc_model_grad_add_range(llmc_model *m, int64_t offset, int64_t count,
                                           const float *src, double *sumsq) {
    if (!m) return LLMC_ERR_INVALID_ARGUMENT;
    if (!src && count > 0)
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "grad_add_range: src is NULL");
    const int st = check_range(m, offset, count, "grad_add_range");
    if (st != LLMC_OK) return st;
    const double s = blocked_sumsq(m->grads + offset, src, (size_t)count, m->nthreads);
    if (sumsq) *sumsq = s;
    return LLMC_OK;
}
