/* matmul.c - the Linear layer (weights in (out, in) layout, as the checkpoint) and its
 * backward, both on top of llmc_gemm (fp32, or bf16 operands in bf16 precision). */
#include "internal.h"

/* dbias[o] += sum_n dout[n, o]. Threads split the columns and walk rows in order, so memory
 * is read row by row (contiguously) and every sum has a fixed order. The sums run in double,
 * BIAS_CHUNK columns at a time: a float running sum over N = B*T rows has an error growing
 * like N ulp, measured 3.5x torch's (pairwise) error at N = 591 and growing with N. */
#define BIAS_CHUNK 256
static void bias_backward(float *dbias, const float *dout, int N, int OC, int nt) {
#pragma omp parallel num_threads(nt)
    {
        const int tid = LLMC_THREAD_ID(), n = LLMC_TEAM_SIZE();
        const int o0 = (int)((int64_t)OC * tid / n), o1 = (int)((int64_t)OC * (tid + 1) / n);
        double acc[BIAS_CHUNK];
        for (int c0 = o0; c0 < o1; c0 += BIAS_CHUNK) {
            const int w = o1 - c0 < BIAS_CHUNK ? o1 - c0 : BIAS_CHUNK;
            for (int j = 0; j < w; j++) acc[j] = 0.0;
            for (int r = 0; r < N; r++) {
                const float *d = dout + (size_t)r * OC + c0;
                for (int j = 0; j < w; j++) acc[j] += d[j];
            }
            for (int j = 0; j < w; j++) dbias[c0 + j] += (float)acc[j];
        }
    }
}

/* The bf16 image of a weight that lies in the model's parameters (in its planes tensor,
 * bf16_planes.c, or ex->params16, kept by bf16_weights.c), or NULL: in fp32, or a weight
 * from elsewhere (kernel tests, benchmarks), which the bf16 GEMM then rounds itself, to the
 * same bits. */
static const uint16_t *weight16_of(const llmc_exec *ex, const float *weight) {
    if (!ex->bf16 || weight < ex->params || weight >= ex->params + ex->num_params) return NULL;
    const size_t at = (size_t)(weight - ex->params);
    if (ex->param_offsets) { /* planes: the image is the first half of the weight's tensor */
        for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
            const size_t t0 = ex->param_offsets[i];
            if (planes_tensor(i) && at >= t0 && at < t0 + ex->param_sizes[i])
                return (const uint16_t *)(const void *)(ex->params + t0) + (at - t0);
        }
        return NULL; /* a tensor kept in fp32 */
    }
    return ex->params16 ? ex->params16 + at : NULL;
}

/* the Linear forward on an fp32 input (inp) or a bf16 one (inp16 non-NULL, bf16 precision):
 * inlined into both entry points, so the fp32 one compiles as before */
static inline void linear_forward(float *out, const float *inp, const uint16_t *inp16,
                                  const float *weight, const float *bias, int N, int IC, int OC,
                                  const llmc_exec *ex) {
    float beta = 0.0f;
    if (bias) {
        /* start from the bias so the GEMM accumulates onto it: no extra pass afterwards */
#pragma omp parallel for num_threads(ex->nt) schedule(static)
        for (int n = 0; n < N; n++) {
            float *o = out + (size_t)n * OC;
            for (int o2 = 0; o2 < OC; o2++) o[o2] = bias[o2];
        }
        beta = 1.0f;
    }
    const uint16_t *w16 = weight16_of(ex, weight);
    if (inp16 && w16)
        llmc_gemm_bf16_a16b16(0, 1, N, OC, IC, inp16, IC, w16, IC, beta, out, OC, ex);
    else if (inp16)
        llmc_gemm_bf16_a16(0, 1, N, OC, IC, inp16, IC, weight, IC, beta, out, OC, ex);
    else if (w16)
        llmc_gemm_bf16_b16(0, 1, N, OC, IC, inp, IC, w16, IC, beta, out, OC, ex);
    else
        llmc_gemm(0, 1, N, OC, IC, inp, IC, weight, IC, beta, out, OC, ex);
}

static inline void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                   const float *inp, const uint16_t *inp16, const float *weight,
                                   int N, int IC, int OC, const llmc_exec *ex) {
    const uint16_t *w16 = dinp ? weight16_of(ex, weight) : NULL;
    if (w16)
        llmc_gemm_bf16_b16(0, 0, N, IC, OC, dout, OC, w16, IC, 0.0f, dinp, IC, ex);
    else if (dinp)
        llmc_gemm(0, 0, N, IC, OC, dout, OC, weight, IC, 0.0f, dinp, IC, ex);
    if (inp16)
        llmc_gemm_bf16_b16(1, 0, OC, IC, N, dout, OC, inp16, IC, ex->dw_beta, dweight, IC, ex);
    else
        llmc_gemm(1, 0, OC, IC, N, dout, OC, inp, IC, ex->dw_beta, dweight, IC, ex);
    if (dbias) bias_backward(dbias, dout, N, OC, ex->nt);
}

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int IC, int OC, const llmc_exec *ex) {
    linear_forward(out, inp, NULL, weight, bias, N, IC, OC, ex);
}

void matmul_forward16(float *out, const uint16_t *inp16, const float *weight, const float *bias,
                      int N, int IC, int OC, const llmc_exec *ex) {
    linear_forward(out, NULL, inp16, weight, bias, N, IC, OC, ex);
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int IC, int OC,
                     const llmc_exec *ex) {
    linear_backward(dinp, dweight, dbias, dout, inp, NULL, weight, N, IC, OC, ex);
}

void matmul_backward16(float *dinp, float *dweight, float *dbias, const float *dout,
                       const uint16_t *inp16, const float *weight, int N, int IC, int OC,
                       const llmc_exec *ex) {
    linear_backward(dinp, dweight, dbias, dout, NULL, inp16, weight, N, IC, OC, ex);
}

void matmul_backward16_dout16(float *dinp, float *dweight, const uint16_t *dout16,
                              int64_t ld_dout, const uint16_t *inp16, const float *weight,
                              int N, int IC, int OC, const llmc_exec *ex) {
    const uint16_t *w16 = weight16_of(ex, weight);
    if (w16)
        llmc_gemm_bf16_a16b16(0, 0, N, IC, OC, dout16, ld_dout, w16, IC, 0.0f, dinp, IC, ex);
    else
        llmc_gemm_bf16_a16(0, 0, N, IC, OC, dout16, ld_dout, weight, IC, 0.0f, dinp, IC, ex);
    llmc_gemm_bf16_a16b16(1, 0, OC, IC, N, dout16, ld_dout, inp16, IC, ex->dw_beta, dweight, IC,
                          ex);
}
