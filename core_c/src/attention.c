/* attention.c - causal multi-head self-attention (softmax probabilities kept for backward). */
#include "internal.h"

#include "vecmath.h"

#include <math.h>
#include <string.h>

/* One query row t of one head: scores, softmax (kept in arow), and the weighted sum of values.
 * k and v of position t2 are at kbase / vbase + t2 * C3. Cloned for wide vectors. */
LLMC_CLONES static void attention_row_forward(float *o, float *arow, const float *q,
                                              const float *kbase, const float *vbase, int t,
                                              int T, int hs, int C3, float scale) {
    float maxv = -INFINITY;
    for (int t2 = 0; t2 <= t; t2++) {
        const float *k = kbase + (size_t)t2 * C3;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int i = 0; i < hs; i++) s += q[i] * k[i];
        s *= scale;
        arow[t2] = s;
        if (s > maxv) maxv = s;
    }
    for (int t2 = 0; t2 <= t; t2++) arow[t2] = llmc_expf(arow[t2] - maxv);
    double sum = 0.0; /* a separate loop: GCC does not vectorise exp and a double sum together */
#pragma omp simd reduction(+ : sum)
    for (int t2 = 0; t2 <= t; t2++) sum += arow[t2];
    const float inv = (float)(1.0 / sum);
    for (int t2 = 0; t2 <= t; t2++) arow[t2] *= inv;
    for (int t2 = t + 1; t2 < T; t2++) arow[t2] = 0.0f;
    for (int i = 0; i < hs; i++) o[i] = 0.0f;
    for (int t2 = 0; t2 <= t; t2++) {
        const float *v = vbase + (size_t)t2 * C3;
        const float a = arow[t2];
        for (int i = 0; i < hs; i++) o[i] += a * v[i];
    }
}

/* qkv rows hold [q | k | v], each C wide, heads of hs = C / NH channels side by side.
 * att (B, NH, T, T) holds the softmax probabilities; entries above the diagonal are 0. */
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH,
                       const llmc_exec *ex) {
    const int hs = C / NH;
    const int C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for collapse(3) num_threads(ex->nt) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int t = 0; t < T; t++) {
                const float *base = qkv + (size_t)b * T * C3 + h * hs;
                attention_row_forward(out + ((size_t)b * T + t) * C + h * hs,
                                      att + (((size_t)b * NH + h) * T + t) * T,
                                      base + (size_t)t * C3, base + C, base + 2 * C, t, T, hs,
                                      C3, scale);
            }
        }
    }
}

/* One (batch, head): dq, dk, dv of that head (its slice of dqkv, zeroed here). base points
 * at q of position 0 of the head, dbase likewise in dqkv; datt is a row buffer of T floats. */
LLMC_CLONES static void attention_head_backward(float *dbase, const float *dout_bh,
                                                const float *base, const float *att_bh,
                                                float *datt, int T, int C, int hs, float scale) {
    const int C3 = 3 * C;
    for (int t = 0; t < T; t++) {
        float *dst = dbase + (size_t)t * C3;
        memset(dst, 0, sizeof(float) * hs);
        memset(dst + C, 0, sizeof(float) * hs);
        memset(dst + 2 * C, 0, sizeof(float) * hs);
    }
    for (int t = 0; t < T; t++) {
        const float *arow = att_bh + (size_t)t * T;
        const float *dy = dout_bh + (size_t)t * C;
        const float *q = base + (size_t)t * C3;
        float *dq = dbase + (size_t)t * C3;
        /* out_t = sum_t2 att[t2] v_t2  ->  datt[t2] = dy . v_t2, dv_t2 += att[t2] dy */
        float dot = 0.0f;
        for (int t2 = 0; t2 <= t; t2++) {
            const float *v = base + (size_t)t2 * C3 + 2 * C;
            float *dv = dbase + (size_t)t2 * C3 + 2 * C;
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
            const float *k = base + (size_t)t2 * C3 + C;
            float *dk = dbase + (size_t)t2 * C3 + C;
            for (int i = 0; i < hs; i++) {
                dq[i] += dpre * k[i];
                dk[i] += dpre * q[i];
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
/* static: each thread a contiguous block of (batch, head) pairs, equal work each. With
 * dynamic scheduling neighbouring heads went to different threads, whose writes to the
 * same rows of dqkv made the 2-thread backward no faster than 1 thread. */
#pragma omp parallel for collapse(2) num_threads(ex->nt) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            float *datt = ex->row_ws + (size_t)LLMC_THREAD_ID() * ex->row_ws_len;
            const size_t off = (size_t)b * T * C3 + (size_t)h * hs;
            attention_head_backward(dqkv + off, dout + (size_t)b * T * C + (size_t)h * hs,
                                    qkv + off, att + ((size_t)b * NH + h) * T * T, datt, T, C,
                                    hs, scale);
        }
    }
}
