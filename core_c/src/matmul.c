/* matmul.c - the Linear layer (weights in (out, in) layout, as the checkpoint) and its
 * backward, both on top of llmc_sgemm. */
#include "internal.h"

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int IC, int OC, const llmc_exec *ex) {
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
    llmc_sgemm(0, 1, N, OC, IC, inp, IC, weight, IC, beta, out, OC, ex);
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int IC, int OC,
                     const llmc_exec *ex) {
    if (dinp) llmc_sgemm(0, 0, N, IC, OC, dout, OC, weight, IC, 0.0f, dinp, IC, ex);
    llmc_sgemm(1, 0, OC, IC, N, dout, OC, inp, IC, 1.0f, dweight, IC, ex);
    if (dbias) {
#pragma omp parallel for num_threads(ex->nt) schedule(static)
        for (int o = 0; o < OC; o++) {
            float s = 0.0f;
            for (int n = 0; n < N; n++) s += dout[(size_t)n * OC + o];
            dbias[o] += s;
        }
    }
}
