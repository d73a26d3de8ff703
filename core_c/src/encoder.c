/* encoder.c - token + position embedding, and its backward. */
#include "internal.h"

/* out[b,t,:] = wte[inp[b,t],:] + wpe[t,:] */
void encoder_forward(float *out, const int32_t *inp, const float *wte, const float *wpe,
                     int B, int T, int C, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        const int t = bt % T;
        float *o = out + (size_t)bt * C;
        const float *e = wte + (size_t)inp[bt] * C;
        const float *p = wpe + (size_t)t * C;
        for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
    }
}

/* The same token may appear at many positions, so rows of dwte are shared between
 * positions: threads split the channels instead, which keeps the sums race-free and in a
 * fixed order (deterministic for any thread count). */
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp,
                      int B, int T, int C, int nt) {
#pragma omp parallel num_threads(nt)
    {
        const int tid = LLMC_THREAD_ID(), n = LLMC_TEAM_SIZE();
        const int c0 = (int)((int64_t)C * tid / n), c1 = (int)((int64_t)C * (tid + 1) / n);
        for (int bt = 0; bt < B * T; bt++) {
            const int t = bt % T;
            const float *d = dout + (size_t)bt * C;
            float *ew = dwte + (size_t)inp[bt] * C;
            float *pw = dwpe + (size_t)t * C;
            for (int c = c0; c < c1; c++) {
                ew[c] += d[c];
                pw[c] += d[c];
            }
        }
    }
}
