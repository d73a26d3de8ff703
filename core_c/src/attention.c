/* attention.c - causal multi-head self-attention (softmax probabilities kept for backward).
 *
 * Per (batch, head), in blocks of ATT_BLOCK query rows, the products are GEMMs on the
 * strided q, k, v slices of qkv: S = Q K^T, O = P V forward; dV = P^T dO, dP = dO V^T,
 * dQ = dS K, dK = dS^T Q backward. A block of queries t0 .. t0+rows-1 sees only keys
 * 0 .. t0+rows-1, so the GEMMs stop there and the causal upper triangle costs at most one
 * block's width. One dot product per score, as a row-at-a-time kernel does, ran at a fifth
 * of the GEMM's speed and left the T^2 part of long sequences slower than PyTorch's.
 *
 * Each thread runs its GEMMs single-threaded with its own packing workspace (thread_exec).
 */
#include "internal.h"

#include "vecmath.h"

#include <math.h>

/* One thread's view of the execution context: single-threaded GEMMs in this thread's
 * slice of the GEMM workspace, no shared pre-pack buffer (other threads use it too).
 * llmc_sgemm's own parallel loop then runs as a team of one, whose thread id is 0. */
static llmc_exec thread_exec(const llmc_exec *ex) {
    llmc_exec one = *ex;
    one.nt = 1;
    one.gemm_ws = ex->gemm_ws + (size_t)LLMC_THREAD_ID() * LLMC_GEMM_WS_FLOATS;
    one.gemm_shared = NULL;
    one.gemm_shared_len = 0;
    return one;
}

/* Row t of the scores (unscaled q.k, all T columns present, only 0..t valid) becomes the
 * softmax probabilities of scale * scores over 0..t; columns t+1 .. T-1 are set to 0. */
LLMC_CLONES static void softmax_causal_row(float *arow, int t, int T, float scale) {
    float maxv = -INFINITY;
    for (int t2 = 0; t2 <= t; t2++) {
        arow[t2] *= scale;
        if (arow[t2] > maxv) maxv = arow[t2];
    }
    for (int t2 = 0; t2 <= t; t2++) arow[t2] = llmc_expf(arow[t2] - maxv);
    double sum = 0.0; /* a separate loop: GCC does not vectorise exp and a double sum together */
#pragma omp simd reduction(+ : sum)
    for (int t2 = 0; t2 <= t; t2++) sum += arow[t2];
    const float inv = (float)(1.0 / sum);
    for (int t2 = 0; t2 <= t; t2++) arow[t2] *= inv;
    for (int t2 = t + 1; t2 < T; t2++) arow[t2] = 0.0f;
}

/* One block of query rows t0 .. t0+rows-1 of one head. q points at q of position 0 of the
 * head (k at + C, v at + 2C, rows C3 apart); out_bh at its output of position 0 (rows C
 * apart); att_bh at its T x T probabilities. kt and vp (bf16, or NULL): the head's K^T and V
 * packed once for all its blocks (attention_head_forward16); a product whose operand is not
 * packed, or whose packed product declines, packs its own, to the same bits. */
static void attention_block_forward(float *out_bh, float *att_bh, const float *q, int t0,
                                    int rows, int T, int C, int hs, float scale,
                                    const llmc_exec *one, const llmc_packed_b16 *kt,
                                    const llmc_packed_b16 *vp) {
    const int C3 = 3 * C, n = t0 + rows; /* keys this block can see */
    const float *qb = q + (size_t)t0 * C3;
    float *s = att_bh + (size_t)t0 * T, *o = out_bh + (size_t)t0 * C;
    if (!kt || !llmc_gemm_bf16_packed(0, rows, n, hs, qb, C3, kt, 0.0f, s, T, one))
        llmc_gemm(0, 1, rows, n, hs, qb, C3, q + C, C3, 0.0f, s, T, one);
    for (int r = 0; r < rows; r++) softmax_causal_row(s + (size_t)r * T, t0 + r, T, scale);
    if (!vp || !llmc_gemm_bf16_packed(0, rows, hs, n, s, T, vp, 0.0f, o, C, one))
        llmc_gemm(0, 0, rows, hs, n, s, T, q + 2 * C, C3, 0.0f, o, C, one);
}

/* bf16: one head's forward with its K and V packed once, into this thread's row_ws (which
 * the forward does not otherwise use), instead of once per block of queries */
static void attention_head_forward16(float *out_bh, float *att_bh, const float *q, int T, int C,
                                     int hs, float scale, const llmc_exec *one, uint32_t *ws,
                                     size_t ws_words) {
    const int C3 = 3 * C;
    llmc_packed_b16 kt, vp;
    const int packed = llmc_gemm_bf16_pack_b(&kt, ws, ws_words / 2, 1, hs, T, q + C, C3) &&
                       llmc_gemm_bf16_pack_b(&vp, ws + ws_words / 2, ws_words / 2, 0, T, hs,
                                             q + 2 * C, C3);
    const int nblocks = (T + ATT_BLOCK - 1) / ATT_BLOCK;
    for (int i = 0; i < nblocks; i++) {
        const int t0 = i * ATT_BLOCK, rows = T - t0 < ATT_BLOCK ? T - t0 : ATT_BLOCK;
        attention_block_forward(out_bh, att_bh, q, t0, rows, T, C, hs, scale, one,
                                packed ? &kt : NULL, packed ? &vp : NULL);
    }
}

/* qkv rows hold [q | k | v], each C wide, heads of hs = C / NH channels side by side.
 * att (B, NH, T, T) holds the softmax probabilities; entries above the diagonal are 0. */
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH,
                       const llmc_exec *ex) {
    const int hs = C / NH;
    const int C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    const int nblocks = (T + ATT_BLOCK - 1) / ATT_BLOCK;
    if (ex->bf16) {
/* whole heads, each with its K and V packed once; equal work per head */
#pragma omp parallel for collapse(2) num_threads(ex->nt) schedule(static)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < NH; h++) {
                const llmc_exec one = thread_exec(ex);
                float *row = ex->row_ws + (size_t)LLMC_THREAD_ID() * ex->row_ws_len;
                float *out_bh = out + (size_t)b * T * C + h * hs;
                float *att_bh = att + ((size_t)b * NH + h) * T * T;
                const float *q = qkv + (size_t)b * T * C3 + h * hs;
                attention_head_forward16(out_bh, att_bh, q, T, C, hs, scale, &one,
                                         (uint32_t *)(void *)row, ex->row_ws_len);
            }
        }
        return;
    }
/* blocks of one head are independent here; round-robin, since later blocks see more keys */
#pragma omp parallel for collapse(3) num_threads(ex->nt) schedule(static, 1)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int i = 0; i < nblocks; i++) {
                const llmc_exec one = thread_exec(ex);
                const int t0 = i * ATT_BLOCK, rows = T - t0 < ATT_BLOCK ? T - t0 : ATT_BLOCK;
                attention_block_forward(out + (size_t)b * T * C + h * hs,
                                        att + ((size_t)b * NH + h) * T * T,
                                        qkv + (size_t)b * T * C3 + h * hs, t0, rows, T, C, hs,
                                        scale, &one, NULL, NULL);
            }
        }
    }
}

/* Softmax backward of one row of a block, in place: dp[t2] = dL/dP[t2] becomes
 * dL/dscore[t2] = P[t2] (dp[t2] - sum_j P[j] dp[j]) * scale for t2 <= t, 0 after. */
LLMC_CLONES static void softmax_causal_row_backward(float *dp, const float *arow, int t, int n,
                                                    float scale) {
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int t2 = 0; t2 <= t; t2++) dot += arow[t2] * dp[t2];
    for (int t2 = 0; t2 <= t; t2++) dp[t2] = arow[t2] * (dp[t2] - dot) * scale;
    for (int t2 = t + 1; t2 < n; t2++) dp[t2] = 0.0f;
}

/* One (batch, head): dq, dk, dv of that head (its slice of dqkv, overwritten). base points
 * at q of position 0 of the head, dbase likewise in dqkv; dp is ATT_BLOCK x T scratch.
 * Blocks run last first: the last block sees every key, so its dK and dV products write
 * all T rows (beta 0) and the earlier, narrower blocks add to theirs. */
static void attention_head_backward(float *dbase, const float *dout_bh, const float *base,
                                    const float *att_bh, float *dp, int T, int C, int hs,
                                    float scale, const llmc_exec *one, uint32_t *ws,
                                    size_t ws_words) {
    const int C3 = 3 * C;
    const float *k = base + C, *v = base + 2 * C;
    float *dk = dbase + C, *dv = dbase + 2 * C;
    /* bf16: V (as V^T) and K packed once for every block, as in the forward (ws may be
     * NULL: fp32, or no room; then each product packs its own, to the same bits) */
    llmc_packed_b16 vt_, kp_;
    const llmc_packed_b16 *vt = NULL, *kp = NULL;
    if (ws && llmc_gemm_bf16_pack_b(&vt_, ws, ws_words / 2, 1, hs, T, v, C3) &&
        llmc_gemm_bf16_pack_b(&kp_, ws + ws_words / 2, ws_words / 2, 0, T, hs, k, C3)) {
        vt = &vt_;
        kp = &kp_;
    }
    const int nblocks = (T + ATT_BLOCK - 1) / ATT_BLOCK;
    for (int i = nblocks - 1; i >= 0; i--) {
        const int t0 = i * ATT_BLOCK, rows = T - t0 < ATT_BLOCK ? T - t0 : ATT_BLOCK;
        const int n = t0 + rows;
        const float beta = i == nblocks - 1 ? 0.0f : 1.0f;
        const float *p = att_bh + (size_t)t0 * T;
        const float *dy = dout_bh + (size_t)t0 * C;
        llmc_gemm(1, 0, n, hs, rows, p, T, dy, C, beta, dv, C3, one);        /* dV += P^T dO */
        if (!vt || !llmc_gemm_bf16_packed(0, rows, n, hs, dy, C, vt, 0.0f, dp, T, one))
            llmc_gemm(0, 1, rows, n, hs, dy, C, v, C3, 0.0f, dp, T, one);    /* dP = dO V^T */
        for (int r = 0; r < rows; r++)
            softmax_causal_row_backward(dp + (size_t)r * T, p + (size_t)r * T, t0 + r, n, scale);
        if (!kp || !llmc_gemm_bf16_packed(0, rows, hs, n, dp, T, kp, 0.0f, dbase + (size_t)t0 * C3,
                                          C3, one))
            llmc_gemm(0, 0, rows, hs, n, dp, T, k, C3, 0.0f, dbase + (size_t)t0 * C3, C3,
                       one);                                                  /* dQ = dS K */
        llmc_gemm(1, 0, n, hs, rows, dp, T, base + (size_t)t0 * C3, C3, beta, dk, C3,
                   one);                                                      /* dK += dS^T Q */
    }
}

/* Work is split by (batch, head): each pair owns its slice of dqkv, so threads never write
 * the same memory; the blocks of a head add into the same dK and dV rows, so stay together. */
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
            const llmc_exec one = thread_exec(ex);
            float *dp = ex->row_ws + (size_t)LLMC_THREAD_ID() * ex->row_ws_len;
            const size_t dp_len = (size_t)ATT_BLOCK * T; /* the rest of row_ws: the packs */
            uint32_t *ws = ex->bf16 && ex->row_ws_len > dp_len ? (uint32_t *)(void *)(dp + dp_len) : NULL;
            const size_t off = (size_t)b * T * C3 + (size_t)h * hs;
            attention_head_backward(dqkv + off, dout + (size_t)b * T * C + (size_t)h * hs,
                                    qkv + off, att + ((size_t)b * NH + h) * T * T, dp, T, C,
                                    hs, scale, &one, ws, ws ? ex->row_ws_len - dp_len : 0);
        }
    }
}
