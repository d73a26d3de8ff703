/* attention.c - causal multi-head self-attention (softmax probabilities kept for backward). */
#include "internal.h"

#include "vecmath.h"

#include <math.h>
#include <string.h>

/* qkv rows hold [q | k | v], each C wide, heads of hs = C / NH channels side by side.
 * att (B, NH, T, T) holds the softmax probabilities; entries above the diagonal are 0. */
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH,
                       int nt) {
    const int hs = C / NH;
    const int C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for collapse(3) num_threads(nt) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int t = 0; t < T; t++) {
                const float *q = qkv + ((size_t)b * T + t) * C3 + h * hs;
                float *arow = att + (((size_t)b * NH + h) * T + t) * T;
                float maxv = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *k = qkv + ((size_t)b * T + t2) * C3 + C + h * hs;
                    float s = 0.0f;
#pragma omp simd reduction(+ : s)
                    for (int i = 0; i < hs; i++) s += q[i] * k[i];
                    s *= scale;
                    arow[t2] = s;
                    if (s > maxv) maxv = s;
                }
                double sum = 0.0;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float e = llmc_expf(arow[t2] - maxv);
                    arow[t2] = e;
                    sum += e;
                }
                const float inv = (float)(1.0 / sum);
                for (int t2 = 0; t2 <= t; t2++) arow[t2] *= inv;
                for (int t2 = t + 1; t2 < T; t2++) arow[t2] = 0.0f;

                float *o = out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *v = qkv + ((size_t)b * T + t2) * C3 + 2 * C + h * hs;
                    const float a = arow[t2];
                    for (int i = 0; i < hs; i++) o[i] += a * v[i];
                }
            }
        }
    }
}

/* Work is split by (batch, head): each pair owns its slice of dqkv, so threads never write
 * the same memory. The gradient of one probability row needs the row of d(att) first
 * (softmax backward uses its dot product with att), kept in a per-thread row buffer. */
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                        int B, int T, int C, int NH, const llmc_exec *ex) {
    const int hs = C / NH;
    const int C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for collapse(2) num_threads(ex->nt) schedule(dynamic, 1)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            float *datt = ex->row_ws + (size_t)LLMC_THREAD_ID() * ex->row_ws_len;
            for (int t = 0; t < T; t++) {
                float *dst = dqkv + ((size_t)b * T + t) * C3 + h * hs;
                memset(dst, 0, sizeof(float) * hs);
                memset(dst + C, 0, sizeof(float) * hs);
                memset(dst + 2 * C, 0, sizeof(float) * hs);
            }
            for (int t = 0; t < T; t++) {
                const float *arow = att + (((size_t)b * NH + h) * T + t) * T;
                const float *dy = dout + ((size_t)b * T + t) * C + h * hs;
                const float *q = qkv + ((size_t)b * T + t) * C3 + h * hs;
                float *dq = dqkv + ((size_t)b * T + t) * C3 + h * hs;
                /* out_t = sum_t2 att[t2] v_t2  ->  datt[t2] = dy . v_t2, dv_t2 += att[t2] dy */
                float dot = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *v = qkv + ((size_t)b * T + t2) * C3 + 2 * C + h * hs;
                    float *dv = dqkv + ((size_t)b * T + t2) * C3 + 2 * C + h * hs;
                    float s = 0.0f;
#pragma omp simd reduction(+ : s)
                    for (int i = 0; i < hs; i++) s += dy[i] * v[i];
                    datt[t2] = s;
                    dot += s * arow[t2];
                    const float a = arow[t2];
                    for (int i = 0; i < hs; i++) dv[i] += a * dy[i];
                }
                /* softmax backward: dpre = att * (datt - sum(att * datt)), then through the
                 * scaled dot product into q and k */
                for (int t2 = 0; t2 <= t; t2++) {
                    const float dpre = arow[t2] * (datt[t2] - dot) * scale;
                    const float *k = qkv + ((size_t)b * T + t2) * C3 + C + h * hs;
                    float *dk = dqkv + ((size_t)b * T + t2) * C3 + C + h * hs;
                    for (int i = 0; i < hs; i++) {
                        dq[i] += dpre * k[i];
                        dk[i] += dpre * q[i];
                    }
                }
            }
        }
    }
}
