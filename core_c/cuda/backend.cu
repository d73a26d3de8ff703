/* backend.cu - the CUDA backend: device memory, the GPT-2 step on the GPU, and the backend
 * table that model.c dispatches to (llmc_backend in internal.h).
 *
 * Layout: the five buffers (params, grads, adam_m, adam_v, acts) are single device
 * allocations with exactly the CPU layout, so the named-tensor table (offsets in floats) is
 * the same on both devices. Everything is allocated once, in llmc_cuda_attach(); a step
 * allocates nothing. Work runs on the legacy default stream (so PyTorch's default stream is
 * ordered with it), and every public call synchronises before it returns, so its errors are
 * reported by that call and its results are ready.
 *
 * Precision: LLMC_PRECISION_FP32 runs every GEMM in fp32 with TF32 off (cuBLAS default math
 * mode, compute type 32F), to compare with PyTorch fp32. LLMC_PRECISION_BF16 rounds the GEMM
 * operands (weights, activations, their gradients, and the attention scores/probabilities)
 * to bf16 and accumulates in fp32 with fp32 outputs; master weights, gradients, optimizer
 * state, layernorm, softmax, GELU and the loss stay fp32, as does every stored activation.
 * The bf16 copy of the weights is built once per change of the weights (refresh_bf16_weights).
 *
 * GEMMs go through gemm(), which splits any call whose operands span more than 2^31 - 1
 * elements into 32-bit cuBLAS calls (host_plan.h): the classifier at B = 64, T = 1024.
 *
 * Errors: every CUDA runtime and cuBLAS call is checked; a failure becomes a status and a
 * message naming the call. A failure other than out-of-memory marks the model broken (a
 * device fault leaves the CUDA context unusable), and later calls on it fail cleanly. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cublas_loader.h"
#include "host_plan.h"
#include "internal.h"
#include "kernels.h"
#include "shared_math.cuh"

using llmc_cuda::bf16;

namespace {

const size_t kCublasWorkspaceBytes = (size_t)32 << 20; /* what cuBLAS suggests for Hopper */

struct cuda_state {
    int device;
    int broken;
    llmc_cublas_api blas;
    llmc_cublas_handle handle;
    void *blas_ws;

    int32_t *inputs, *targets; /* (max_batch * max_seq) tokens on the device */
    float *dres, *dsmall, *dbig; /* backward scratch: (BT, C), (BT, C), (BT, 4C) */
    void *qkvr;                  /* q, k, v split into heads: 3 (B, NH, T, hs), float or bf16 */
    void *yr;                    /* attention output / its gradient, (B, NH, T, hs) */
    float *yr_f32;               /* attention output before merging heads, fp32 */
    float *dqkvr;                /* dq, dk, dv split into heads, fp32 */
    float *datt;                 /* (B, NH, T, T) gradient of the scores */
    float *col_partials;         /* 2 * kColChunks * 4C */
    double *red;                 /* kRedBlocks partial sums, and the loss sum */
    bf16 *params16;              /* bf16 copy of the weights (bf16 precision only) */
    int params16_valid;          /* params16 holds the current weights */
    bf16 *slot_a, *slot_b;       /* bf16 GEMM operands (bf16 precision only) */
    size_t slot_a_n, slot_b_n;

    /* the token order of the embedding backward (llmc_token_segments): host scratch and its
     * device copy; order and rows max_batch * max_seq, seg one more, counts vocab + 1 */
    int32_t *h_counts, *h_order, *h_rows, *h_seg;
    int32_t *d_order, *d_rows, *d_seg;
};

cuda_state *S(llmc_model *m) { return (cuda_state *)m->backend_state; }

int is_bf16(const llmc_model *m) { return m->precision == LLMC_PRECISION_BF16; }

const cudaStream_t kStream = 0; /* the legacy default stream */

int cuda_fail(llmc_model *m, cudaError_t e, const char *what) {
    if (e != cudaErrorMemoryAllocation) S(m)->broken = 1;
    (void)cudaGetLastError(); /* clear a non-sticky error so it is not reported twice */
    return llmc_fail(m, e == cudaErrorMemoryAllocation ? LLMC_ERR_OUT_OF_MEMORY : LLMC_ERR_BAD_STATE,
                     "CUDA error in %s: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e));
}

int blas_fail(llmc_model *m, int status, const char *what) {
    S(m)->broken = 1;
    return llmc_fail(m, LLMC_ERR_BAD_STATE, "cuBLAS error %d in %s: %s", status, what,
                     llmc_cublas_status_name(&S(m)->blas, status));
}

#define CU(call)                                              \
    do {                                                      \
        const cudaError_t e_ = (call);                        \
        if (e_ != cudaSuccess) return cuda_fail(m, e_, #call); \
    } while (0)

/* after a kernel launch: launch errors now, execution errors at the next synchronisation */
#define LAUNCHED(what)                                          \
    do {                                                        \
        const cudaError_t e_ = cudaGetLastError();              \
        if (e_ != cudaSuccess) return cuda_fail(m, e_, (what)); \
    } while (0)

/* every public entry: the model's device current on this thread, and not broken */
int enter(llmc_model *m) {
    cuda_state *s = S(m);
    if (s->broken)
        return llmc_fail(m, LLMC_ERR_BAD_STATE,
                         "an earlier CUDA error left this model unusable; destroy it and "
                         "create a new one");
    CU(cudaSetDevice(s->device));
    return LLMC_OK;
}

/* end of every public entry: wait for the GPU and report what went wrong there */
int leave(llmc_model *m) {
    CU(cudaStreamSynchronize(kStream));
    CU(cudaGetLastError());
    return LLMC_OK;
}

#define TRY(call)                          \
    do {                                   \
        const int st_ = (call);            \
        if (st_ != LLMC_OK) return st_;    \
    } while (0)

/* ------------------------------------------------------------------ GEMM */

/* Row-major C (M x N) = alpha * op(A) (M x K) @ op(B) (K x N) + beta * C, batched with element
 * strides sA, sB, sC (batch = 1: a plain GEMM). op(A) = A^T when tA (then A is stored K x M),
 * as llmc_sgemm on the CPU. A and B are float, or bf16 when bf16 is set; C is float. Sizes
 * are 64-bit here: llmc_gemm_plan splits the product into pieces that 32-bit cuBLAS calls
 * address safely (one piece unless an operand spans more than 2^31 - 1 elements), issued in
 * order on the one stream, and llmc_gemm_cublas_call maps each to cuBLAS's column-major
 * arguments (both in host_plan.c, unit-tested against a column-major emulation of cuBLAS). */
int gemm(llmc_model *m, int tA, int tB, int64_t M, int64_t N, int64_t K, const void *A,
         int64_t lda, int64_t sA, const void *B, int64_t ldb, int64_t sB, float *C, int64_t ldc,
         int64_t sC, int64_t batch, float alpha, float beta, int bf16_operands,
         const char *what) {
    cuda_state *s = S(m);
    const int type = bf16_operands ? LLMC_CUDA_R_16BF : LLMC_CUDA_R_32F;
    const size_t esz = bf16_operands ? sizeof(bf16) : sizeof(float);
    const llmc_gemm_shape shape = {tA, tB, M, N, K, lda, ldb, ldc, sA, sB, sC, batch};
    llmc_gemm_split split;
    if (!llmc_gemm_plan(&shape, LLMC_GEMM_SPAN_LIMIT, &split))
        return llmc_fail(m, LLMC_ERR_UNSUPPORTED,
                         "the %s GEMM (M %lld, N %lld, K %lld, batch %lld) cannot be split into "
                         "32-bit cuBLAS calls; lower max_batch or max_seq",
                         what, (long long)M, (long long)N, (long long)K, (long long)batch);
    const int64_t pieces = llmc_gemm_num_pieces(&split);
    for (int64_t i = 0; i < pieces; i++) {
        llmc_gemm_piece pc;
        llmc_cublas_call c;
        llmc_gemm_piece_at(&shape, &split, i, &pc);
        llmc_gemm_cublas_call(&shape, &pc, &c);
        const void *first = (const char *)B + (size_t)c.first_off * esz;
        const void *second = (const char *)A + (size_t)c.second_off * esz;
        float *cc = C + c.c_off;
        const int op1 = c.first_trans ? LLMC_CUBLAS_OP_T : LLMC_CUBLAS_OP_N;
        const int op2 = c.second_trans ? LLMC_CUBLAS_OP_T : LLMC_CUBLAS_OP_N;
        const float bt = pc.first_k ? beta : 1.0f; /* later K pieces add to the first's */
        /* the plan keeps every size, leading dimension and count within int32 */
        int st;
        if (c.batch == 1)
            st = s->blas.gemm_ex(s->handle, op1, op2, (int)c.m, (int)c.n, (int)c.k, &alpha, first,
                                 type, (int)c.first_ld, second, type, (int)c.second_ld, &bt, cc,
                                 LLMC_CUDA_R_32F, (int)c.ldc, LLMC_CUBLAS_COMPUTE_32F,
                                 LLMC_CUBLAS_GEMM_DEFAULT);
        else
            st = s->blas.gemm_strided_batched_ex(
                s->handle, op1, op2, (int)c.m, (int)c.n, (int)c.k, &alpha, first, type,
                (int)c.first_ld, c.first_stride, second, type, (int)c.second_ld, c.second_stride,
                &bt, cc, LLMC_CUDA_R_32F, (int)c.ldc, c.c_stride, (int)c.batch,
                LLMC_CUBLAS_COMPUTE_32F, LLMC_CUBLAS_GEMM_DEFAULT);
        if (st != LLMC_CUBLAS_STATUS_SUCCESS) return blas_fail(m, st, what);
    }
    return LLMC_OK;
}

/* x as a GEMM operand: itself in fp32, a bf16 copy in slot (of at least n) in bf16 mode */
int operand(llmc_model *m, const float *x, size_t n, bf16 *slot, size_t slot_n,
            const void **out) {
    if (!is_bf16(m)) {
        *out = x;
        return LLMC_OK;
    }
    if (n > slot_n)
        return llmc_fail(m, LLMC_ERR_BAD_STATE, "internal: bf16 operand of %zu > slot of %zu", n,
                         slot_n);
    llmc_cuda::to_bf16(slot, x, n, kStream);
    LAUNCHED("to_bf16");
    *out = slot;
    return LLMC_OK;
}

/* the weight of parameter tensor i at element offset off, as a GEMM operand */
const void *weight(llmc_model *m, int i, size_t off) {
    if (is_bf16(m)) return S(m)->params16 + m->param_offsets[i] + off;
    return m->p[i] + off;
}

/* out (N, OC) = inp (N, IC) @ W (OC, IC)^T + bias */
int linear_forward(llmc_model *m, float *out, const float *inp, int wi, size_t woff,
                   const float *bias, int N, int IC, int OC) {
    cuda_state *s = S(m);
    float beta = 0.0f;
    if (bias) {
        llmc_cuda::bias_broadcast(out, bias, N, OC, kStream);
        LAUNCHED("bias_broadcast");
        beta = 1.0f;
    }
    const void *a = nullptr;
    TRY(operand(m, inp, (size_t)N * IC, s->slot_b, s->slot_b_n, &a));
    return gemm(m, 0, 1, N, OC, IC, a, IC, 0, weight(m, wi, woff), IC, 0, out, OC, 0, 1, 1.0f,
                beta, is_bf16(m), "linear forward");
}

/* dinp (N, IC) = dout @ W (skipped when dinp is NULL); dW += dout^T @ inp; dbias += colsum */
int linear_backward(llmc_model *m, float *dinp, float *dweight, float *dbias, const float *dout,
                    const float *inp, int wi, size_t woff, int N, int IC, int OC) {
    cuda_state *s = S(m);
    const void *d = nullptr, *x = nullptr;
    TRY(operand(m, dout, (size_t)N * OC, s->slot_a, s->slot_a_n, &d));
    TRY(operand(m, inp, (size_t)N * IC, s->slot_b, s->slot_b_n, &x));
    if (dinp)
        TRY(gemm(m, 0, 0, N, IC, OC, d, OC, 0, weight(m, wi, woff), IC, 0, dinp, IC, 0, 1, 1.0f,
                 0.0f, is_bf16(m), "linear backward (input)"));
    TRY(gemm(m, 1, 0, OC, IC, N, d, OC, 0, x, IC, 0, dweight, IC, 0, 1, 1.0f, 1.0f, is_bf16(m),
             "linear backward (weight)"));
    if (dbias) {
        llmc_cuda::bias_backward(dbias, dout, N, OC, s->col_partials, kStream);
        LAUNCHED("bias_backward");
    }
    return LLMC_OK;
}

/* ------------------------------------------------------------------ attention */

/* the heads of q, k, v from qkv (B, T, 3C), in the GEMM operand type */
int split_qkv(llmc_model *m, const float *qkv, int B, int T, const void **q, const void **k,
              const void **v) {
    cuda_state *s = S(m);
    const int NH = m->cfg.num_heads, hs = m->cfg.channels / NH;
    const size_t n = (size_t)B * T * m->cfg.channels;
    if (is_bf16(m)) {
        bf16 *base = (bf16 *)s->qkvr;
        llmc_cuda::split_heads_qkv(base, base + n, base + 2 * n, qkv, B, T, NH, hs, kStream);
        *q = base, *k = base + n, *v = base + 2 * n;
    } else {
        float *base = (float *)s->qkvr;
        llmc_cuda::split_heads_qkv(base, base + n, base + 2 * n, qkv, B, T, NH, hs, kStream);
        *q = base, *k = base + n, *v = base + 2 * n;
    }
    LAUNCHED("split_heads_qkv");
    return LLMC_OK;
}

/* out (B, T, C), att (B, NH, T, T) probabilities, from qkv (B, T, 3C); as the CPU's
 * attention_forward, through cuBLAS: scores = scale q k^T, causal softmax, y = att v */
int attention_forward(llmc_model *m, float *out, float *att, const float *qkv, int B, int T) {
    cuda_state *s = S(m);
    const int C = m->cfg.channels, NH = m->cfg.num_heads, hs = C / NH, BNH = B * NH;
    const float scale = 1.0f / sqrtf((float)hs);
    const void *q = nullptr, *k = nullptr, *v = nullptr;
    TRY(split_qkv(m, qkv, B, T, &q, &k, &v));
    const int64_t sq = (int64_t)T * hs, sa = (int64_t)T * T;
    TRY(gemm(m, 0, 1, T, T, hs, q, hs, sq, k, hs, sq, att, T, sa, BNH, scale, 0.0f, is_bf16(m),
             "attention scores"));
    llmc_cuda::softmax_causal_forward(att, BNH, T, kStream);
    LAUNCHED("softmax_causal_forward");
    const void *a = nullptr;
    TRY(operand(m, att, (size_t)BNH * T * T, s->slot_a, s->slot_a_n, &a));
    TRY(gemm(m, 0, 0, T, hs, T, a, T, sa, v, hs, sq, s->yr_f32, hs, sq, BNH, 1.0f, 0.0f,
             is_bf16(m), "attention output"));
    llmc_cuda::merge_heads(out, s->yr_f32, B, T, NH, hs, kStream);
    LAUNCHED("merge_heads");
    return LLMC_OK;
}

/* dqkv (B, T, 3C) (overwritten) from dout (B, T, C), as the CPU's attention_backward */
int attention_backward(llmc_model *m, float *dqkv, const float *dout, const float *qkv,
                       const float *att, int B, int T) {
    cuda_state *s = S(m);
    const int C = m->cfg.channels, NH = m->cfg.num_heads, hs = C / NH, BNH = B * NH;
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t n = (size_t)B * T * C;
    const int64_t sq = (int64_t)T * hs, sa = (int64_t)T * T;
    const int bf = is_bf16(m);
    const void *q = nullptr, *k = nullptr, *v = nullptr, *dy = nullptr;
    TRY(split_qkv(m, qkv, B, T, &q, &k, &v));
    if (bf)
        llmc_cuda::split_heads((bf16 *)s->yr, dout, B, T, NH, hs, kStream);
    else
        llmc_cuda::split_heads((float *)s->yr, dout, B, T, NH, hs, kStream);
    LAUNCHED("split_heads");
    dy = s->yr;
    float *dq = s->dqkvr, *dk = dq + n, *dv = dk + n;
    /* datt = dy v^T; dv = att^T dy */
    TRY(gemm(m, 0, 1, T, T, hs, dy, hs, sq, v, hs, sq, s->datt, T, sa, BNH, 1.0f, 0.0f, bf,
             "attention backward (d probabilities)"));
    const void *a = nullptr;
    TRY(operand(m, att, (size_t)BNH * T * T, s->slot_a, s->slot_a_n, &a));
    TRY(gemm(m, 1, 0, T, hs, T, a, T, sa, dy, hs, sq, dv, hs, sq, BNH, 1.0f, 0.0f, bf,
             "attention backward (d v)"));
    /* through the softmax (and the score scale) */
    llmc_cuda::softmax_causal_backward(s->datt, att, BNH, T, scale, kStream);
    LAUNCHED("softmax_causal_backward");
    const void *dp = nullptr;
    TRY(operand(m, s->datt, (size_t)BNH * T * T, s->slot_b, s->slot_b_n, &dp));
    /* dq = dpre k; dk = dpre^T q */
    TRY(gemm(m, 0, 0, T, hs, T, dp, T, sa, k, hs, sq, dq, hs, sq, BNH, 1.0f, 0.0f, bf,
             "attention backward (d q)"));
    TRY(gemm(m, 1, 0, T, hs, T, dp, T, sa, q, hs, sq, dk, hs, sq, BNH, 1.0f, 0.0f, bf,
             "attention backward (d k)"));
    llmc_cuda::merge_heads_qkv(dqkv, dq, dk, dv, B, T, NH, hs, kStream);
    LAUNCHED("merge_heads_qkv");
    return LLMC_OK;
}

/* ------------------------------------------------------------------ the step */

float *act(llmc_model *m, int a, int l) { return m->a[a] + (size_t)l * m->act_layer_stride[a]; }

/* The bf16 copy of the weights, built when the weights may have changed since it was last
 * built: after an AdamW step or a copy into the parameters (checkpoint loads included) --
 * so once per optimizer step, not at every forward and backward -- and at every forward and
 * backward once a raw parameter pointer has been handed out (llmc_model_buffer, which
 * torch_view uses: the caller may write through it at any time, unseen). */
int refresh_bf16_weights(llmc_model *m) {
    cuda_state *s = S(m);
    if (!is_bf16(m) || (s->params16_valid && !m->params_exposed)) return LLMC_OK;
    llmc_cuda::to_bf16(s->params16, m->params, m->num_params, kStream);
    LAUNCHED("to_bf16 (weights)");
    s->params16_valid = 1;
    return LLMC_OK;
}

/* the weights are about to change (or may have): the bf16 copy is stale */
void invalidate_bf16_weights(llmc_model *m) { S(m)->params16_valid = 0; }

/* positions grouped by token for the embedding backward, computed on the host from the last
 * forward's tokens (m->inputs) and uploaded; returns the number of distinct tokens */
int upload_token_segments(llmc_model *m, int BT, int *U) {
    cuda_state *s = S(m);
    const int32_t u = llmc_token_segments(m->inputs, BT, m->cfg.vocab_size, s->h_counts,
                                          s->h_order, s->h_rows, s->h_seg);
    if (u < 1)
        return llmc_fail(m, LLMC_ERR_BAD_STATE,
                         "internal: the last forward's tokens are not in [0, vocab_size)");
    CU(cudaMemcpy(s->d_order, s->h_order, (size_t)BT * sizeof(int32_t), cudaMemcpyHostToDevice));
    CU(cudaMemcpy(s->d_rows, s->h_rows, (size_t)u * sizeof(int32_t), cudaMemcpyHostToDevice));
    CU(cudaMemcpy(s->d_seg, s->h_seg, ((size_t)u + 1) * sizeof(int32_t),
                  cudaMemcpyHostToDevice));
    *U = u;
    return LLMC_OK;
}

int forward_body(llmc_model *m, int with_targets, float *mean_loss) {
    cuda_state *s = S(m);
    const int B = m->B, T = m->T, BT = B * T;
    const int C = m->cfg.channels, L = m->cfg.num_layers;
    const int V = m->cfg.vocab_size, Vp = m->cfg.padded_vocab_size;
    float **p = m->p;

    CU(cudaMemcpy(s->inputs, m->inputs, (size_t)BT * sizeof(int32_t), cudaMemcpyHostToDevice));
    if (with_targets)
        CU(cudaMemcpy(s->targets, m->targets, (size_t)BT * sizeof(int32_t),
                      cudaMemcpyHostToDevice));
    TRY(refresh_bf16_weights(m));

    llmc_cuda::encoder_forward(m->a[A_ENCODED], s->inputs, p[P_WTE], p[P_WPE], B, T, C, kStream);
    LAUNCHED("encoder_forward");
    for (int l = 0; l < L; l++) {
        const float *res = l == 0 ? m->a[A_ENCODED] : act(m, A_RESIDUAL3, l - 1);
        const size_t lc = (size_t)l * C;
        llmc_cuda::layernorm_forward(act(m, A_LN1, l), act(m, A_LN1_MEAN, l),
                                     act(m, A_LN1_RSTD, l), res, p[P_LN1W] + lc, p[P_LN1B] + lc,
                                     BT, C, kStream);
        LAUNCHED("layernorm_forward (ln1)");
        TRY(linear_forward(m, act(m, A_QKV, l), act(m, A_LN1, l), P_QKVW, lc * 3 * C,
                           p[P_QKVB] + lc * 3, BT, C, 3 * C));
        TRY(attention_forward(m, act(m, A_ATTY, l), act(m, A_ATT, l), act(m, A_QKV, l), B, T));
        TRY(linear_forward(m, act(m, A_ATTPROJ, l), act(m, A_ATTY, l), P_ATTPROJW, lc * C,
                           p[P_ATTPROJB] + lc, BT, C, C));
        llmc_cuda::residual_forward(act(m, A_RESIDUAL2, l), res, act(m, A_ATTPROJ, l),
                                    (size_t)BT * C, kStream);
        LAUNCHED("residual_forward");
        llmc_cuda::layernorm_forward(act(m, A_LN2, l), act(m, A_LN2_MEAN, l),
                                     act(m, A_LN2_RSTD, l), act(m, A_RESIDUAL2, l),
                                     p[P_LN2W] + lc, p[P_LN2B] + lc, BT, C, kStream);
        LAUNCHED("layernorm_forward (ln2)");
        TRY(linear_forward(m, act(m, A_FCH, l), act(m, A_LN2, l), P_FCW, lc * 4 * C,
                           p[P_FCB] + lc * 4, BT, C, 4 * C));
        llmc_cuda::gelu_forward(act(m, A_FCH_GELU, l), act(m, A_FCH, l), (size_t)BT * 4 * C,
                                kStream);
        LAUNCHED("gelu_forward");
        TRY(linear_forward(m, act(m, A_FCPROJ, l), act(m, A_FCH_GELU, l), P_FCPROJW, lc * 4 * C,
                           p[P_FCPROJB] + lc, BT, 4 * C, C));
        llmc_cuda::residual_forward(act(m, A_RESIDUAL3, l), act(m, A_RESIDUAL2, l),
                                    act(m, A_FCPROJ, l), (size_t)BT * C, kStream);
        LAUNCHED("residual_forward");
    }
    llmc_cuda::layernorm_forward(m->a[A_LNF], m->a[A_LNF_MEAN], m->a[A_LNF_RSTD],
                                 act(m, A_RESIDUAL3, L - 1), p[P_LNFW], p[P_LNFB], BT, C, kStream);
    LAUNCHED("layernorm_forward (lnf)");
    /* weight tying: the classifier is wte itself */
    TRY(linear_forward(m, m->a[A_LOGITS], m->a[A_LNF], P_WTE, 0, NULL, BT, C, Vp));

    if (with_targets) {
        llmc_cuda::classifier_forward(m->a[A_PROBS], m->a[A_LOSSES], m->a[A_LOGITS], s->targets,
                                      BT, V, Vp, kStream);
        LAUNCHED("classifier_forward");
        llmc_cuda::sum_losses(s->red + llmc_cuda::kRedBlocks, m->a[A_LOSSES], BT, kStream);
        LAUNCHED("sum_losses");
        double total = 0.0;
        CU(cudaMemcpy(&total, s->red + llmc_cuda::kRedBlocks, sizeof(double),
                      cudaMemcpyDeviceToHost));
        *mean_loss = (float)(total / BT);
    }
    return LLMC_OK;
}

int backward_body(llmc_model *m, float loss_scale) {
    cuda_state *s = S(m);
    const int B = m->B, T = m->T, BT = B * T;
    const int C = m->cfg.channels, L = m->cfg.num_layers;
    const int V = m->cfg.vocab_size, Vp = m->cfg.padded_vocab_size;
    float **p = m->p, **g = m->g;
    float *dres = s->dres, *dsmall = s->dsmall, *dbig = s->dbig;
    float *dlogits = m->a[A_PROBS]; /* probs become d logits in place, as on the CPU */

    /* first, while the GPU is idle (the last call synchronised): the host's share */
    int U = 0;
    TRY(upload_token_segments(m, BT, &U));
    TRY(refresh_bf16_weights(m));
    llmc_cuda::classifier_backward(dlogits, s->targets, loss_scale / (float)BT, BT, V, Vp,
                                   kStream);
    LAUNCHED("classifier_backward");
    TRY(linear_backward(m, dsmall, g[P_WTE], NULL, dlogits, m->a[A_LNF], P_WTE, 0, BT, C, Vp));
    CU(cudaMemsetAsync(dres, 0, (size_t)BT * C * sizeof(float), kStream));
    llmc_cuda::layernorm_backward(dres, g[P_LNFW], g[P_LNFB], dsmall, act(m, A_RESIDUAL3, L - 1),
                                  p[P_LNFW], m->a[A_LNF_MEAN], m->a[A_LNF_RSTD], BT, C,
                                  s->col_partials, kStream);
    LAUNCHED("layernorm_backward (lnf)");

    for (int l = L - 1; l >= 0; l--) {
        const float *res = l == 0 ? m->a[A_ENCODED] : act(m, A_RESIDUAL3, l - 1);
        const size_t lc = (size_t)l * C;
        /* dres holds d residual3[l]; the MLP branch */
        TRY(linear_backward(m, dbig, g[P_FCPROJW] + lc * 4 * C, g[P_FCPROJB] + lc, dres,
                            act(m, A_FCH_GELU, l), P_FCPROJW, lc * 4 * C, BT, 4 * C, C));
        llmc_cuda::gelu_backward(dbig, act(m, A_FCH, l), dbig, (size_t)BT * 4 * C, kStream);
        LAUNCHED("gelu_backward");
        TRY(linear_backward(m, dsmall, g[P_FCW] + lc * 4 * C, g[P_FCB] + lc * 4, dbig,
                            act(m, A_LN2, l), P_FCW, lc * 4 * C, BT, C, 4 * C));
        llmc_cuda::layernorm_backward(dres, g[P_LN2W] + lc, g[P_LN2B] + lc, dsmall,
                                      act(m, A_RESIDUAL2, l), p[P_LN2W] + lc,
                                      act(m, A_LN2_MEAN, l), act(m, A_LN2_RSTD, l), BT, C,
                                      s->col_partials, kStream);
        LAUNCHED("layernorm_backward (ln2)");
        /* dres now holds d residual2[l]; the attention branch */
        TRY(linear_backward(m, dsmall, g[P_ATTPROJW] + lc * C, g[P_ATTPROJB] + lc, dres,
                            act(m, A_ATTY, l), P_ATTPROJW, lc * C, BT, C, C));
        TRY(attention_backward(m, dbig, dsmall, act(m, A_QKV, l), act(m, A_ATT, l), B, T));
        TRY(linear_backward(m, dsmall, g[P_QKVW] + lc * 3 * C, g[P_QKVB] + lc * 3, dbig,
                            act(m, A_LN1, l), P_QKVW, lc * 3 * C, BT, C, 3 * C));
        llmc_cuda::layernorm_backward(dres, g[P_LN1W] + lc, g[P_LN1B] + lc, dsmall, res,
                                      p[P_LN1W] + lc, act(m, A_LN1_MEAN, l),
                                      act(m, A_LN1_RSTD, l), BT, C, s->col_partials, kStream);
        LAUNCHED("layernorm_backward (ln1)");
    }
    llmc_cuda::encoder_backward(g[P_WTE], g[P_WPE], dres, s->d_order, s->d_rows, s->d_seg, U, B,
                                T, C, kStream);
    LAUNCHED("encoder_backward");
    return LLMC_OK;
}

/* ------------------------------------------------------------------ backend table */

int cuda_forward(llmc_model *m, int with_targets, float *mean_loss) {
    TRY(enter(m));
    TRY(forward_body(m, with_targets, mean_loss));
    return leave(m);
}

int cuda_zero_grad(llmc_model *m) {
    TRY(enter(m));
    CU(cudaMemsetAsync(m->grads, 0, m->num_params * sizeof(float), kStream));
    return leave(m);
}

int cuda_backward(llmc_model *m, float loss_scale, int accumulate) {
    TRY(enter(m));
    /* overwrite mode as zero_grad + accumulate (a memset is cheap next to a GPU backward) */
    if (!accumulate) CU(cudaMemsetAsync(m->grads, 0, m->num_params * sizeof(float), kStream));
    TRY(backward_body(m, loss_scale));
    return leave(m);
}

int cuda_grad_sumsq(llmc_model *m, double *sumsq) {
    TRY(enter(m));
    cuda_state *s = S(m);
    llmc_cuda::sumsq_partials(s->red, m->grads, m->num_params, kStream);
    LAUNCHED("sumsq_partials");
    double part[llmc_cuda::kRedBlocks];
    CU(cudaMemcpy(part, s->red, sizeof(part), cudaMemcpyDeviceToHost));
    double total = 0.0;
    for (int i = 0; i < llmc_cuda::kRedBlocks; i++) total += part[i];
    *sumsq = total;
    return leave(m);
}

int cuda_scale_grads(llmc_model *m, float coef) {
    TRY(enter(m));
    llmc_cuda::scale_inplace(m->grads, coef, m->num_params, kStream);
    LAUNCHED("scale_inplace");
    return leave(m);
}

int cuda_adamw(llmc_model *m, const llmc_adamw_params *hp) {
    TRY(enter(m));
    invalidate_bf16_weights(m);
    const llmc_cuda::adamw_scalars k =
        llmc_cuda::adamw_scalars_of(hp->lr, hp->beta1, hp->beta2, hp->eps, hp->t);
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const float decay = llmc_cuda::adamw_decay_of(hp->lr, llmc_param_weight_decay(hp, i));
        const size_t off = m->param_offsets[i];
        llmc_cuda::adamw(m->params + off, m->grads + off, m->adam_m + off, m->adam_v + off,
                         m->param_sizes[i], k.one_minus_b1, k.b2, k.one_minus_b2, k.neg_step,
                         k.bc2_sqrt, k.eps, decay, hp->grad_scale, kStream);
        LAUNCHED("adamw");
    }
    return leave(m);
}

int cuda_copy(llmc_model *m, int kind, size_t offset, size_t count, float *host, int to_host) {
    TRY(enter(m));
    size_t n;
    float *buf = llmc_kind_buffer(m, kind, &n);
    if (kind == LLMC_KIND_PARAMS && !to_host) invalidate_bf16_weights(m);
    if (to_host)
        CU(cudaMemcpy(host, buf + offset, count * sizeof(float), cudaMemcpyDeviceToHost));
    else
        CU(cudaMemcpy(buf + offset, host, count * sizeof(float), cudaMemcpyHostToDevice));
    return leave(m);
}

void free_state(llmc_model *m) {
    cuda_state *s = S(m);
    if (!s) return;
    /* teardown is best effort: with a broken context these may fail, and nothing can be done
     * about it but let the process own the memory until it exits */
    (void)cudaSetDevice(s->device);
    if (s->handle && s->blas.destroy) (void)s->blas.destroy(s->handle);
    void *ptrs[] = {m->params,  m->grads,  m->adam_m,   m->adam_v,  m->acts,
                    s->blas_ws, s->inputs, s->targets,  s->dres,    s->dsmall,
                    s->dbig,    s->qkvr,   s->yr,       s->yr_f32,  s->dqkvr,
                    s->datt,    s->col_partials, s->red, s->params16, s->slot_a,
                    s->slot_b,  s->d_order, s->d_rows, s->d_seg};
    for (size_t i = 0; i < sizeof(ptrs) / sizeof(ptrs[0]); i++)
        if (ptrs[i]) (void)cudaFree(ptrs[i]);
    (void)cudaGetLastError(); /* clear what teardown left */
    free(s->h_counts);
    free(s->h_order);
    free(s->h_rows);
    free(s->h_seg);
    llmc_cublas_unload(&s->blas);
    free(s);
    m->backend_state = NULL;
    m->params = m->grads = m->adam_m = m->adam_v = m->acts = NULL;
}

void cuda_destroy(llmc_model *m) { free_state(m); }

const llmc_backend cuda_backend = {"cuda",          cuda_forward,   cuda_zero_grad,
                                   cuda_backward,   cuda_grad_sumsq, cuda_scale_grads,
                                   cuda_adamw,      cuda_copy,      cuda_destroy};

/* checked size arithmetic for the allocations */
int mul3(size_t a, size_t b, size_t c, size_t *out) {
    size_t x;
    return llmc_mul_size(a, b, &x) && llmc_mul_size(x, c, out);
}

size_t max3(size_t a, size_t b, size_t c) {
    size_t x = a > b ? a : b;
    return x > c ? x : c;
}

}  // namespace

/* ------------------------------------------------------------------ entry points */

extern "C" int llmc_cuda_usable(char *why, size_t why_len) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        const char *hint = e == cudaErrorInsufficientDriver
                               ? "no NVIDIA driver found, or the driver is too old for this "
                                 "library's CUDA runtime"
                           : e == cudaErrorNoDevice ? "no CUDA device found"
                                                    : "no usable CUDA driver or device";
        snprintf(why, why_len, "%s (built with CUDA %d.%d; cudaGetDeviceCount: %s: %s)", hint,
                 CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10, cudaGetErrorName(e),
                 cudaGetErrorString(e));
        (void)cudaGetLastError();
        return 0;
    }
    if (count < 1) {
        snprintf(why, why_len, "no CUDA device found");
        return 0;
    }
    int dev = 0;
    cudaDeviceProp prop;
    e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, dev);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(why, why_len, "cannot query CUDA device %d: %s: %s", dev, cudaGetErrorName(e),
                 cudaGetErrorString(e));
        return 0;
    }
    /* is there code in this library that runs on the device? */
    cudaFuncAttributes attr;
    e = cudaFuncGetAttributes(&attr, llmc_cuda::probe_kernel());
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(why, why_len,
                 "device %d (%s, compute capability %d.%d) cannot run this build's kernels "
                 "(see CMAKE_CUDA_ARCHITECTURES; the default is sm_80, sm_90 and PTX for newer GPUs): %s",
                 dev, prop.name, prop.major, prop.minor, cudaGetErrorString(e));
        return 0;
    }
    llmc_cublas_api api;
    char blas_why[384];
    if (!llmc_cublas_load(&api, blas_why, sizeof(blas_why))) {
        snprintf(why, why_len, "device %d (%s) found, but %s", dev, prop.name, blas_why);
        return 0;
    }
    snprintf(why, why_len, "device %d: %s, compute capability %d.%d, %.1f GiB; cuBLAS from %s", dev,
             prop.name, prop.major, prop.minor, (double)prop.totalGlobalMem / (1 << 30),
             api.path);
    llmc_cublas_unload(&api);
    return 1;
}

extern "C" int llmc_cuda_attach(llmc_model *m) {
    char why[LLMC_ERRMSG_LEN - 64];
    if (!llmc_cuda_usable(why, sizeof(why)))
        return llmc_fail_thread(LLMC_ERR_UNSUPPORTED, "device cuda requested, but CUDA is not "
                                "available: %s", why);
    cuda_state *s = (cuda_state *)calloc(1, sizeof(cuda_state));
    if (!s) return llmc_fail_thread(LLMC_ERR_OUT_OF_MEMORY, "cannot allocate the CUDA state");
    m->backend_state = s;
    m->be = &cuda_backend;
    {
        /* the calling thread's current device; made current explicitly so the context exists */
        int dev = 0;
        cudaError_t e = cudaGetDevice(&dev);
        const char *call = "cudaGetDevice";
        if (e == cudaSuccess) {
            e = cudaSetDevice(dev);
            call = "cudaSetDevice";
        }
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            free_state(m);
            m->be = NULL;
            return llmc_fail_thread(LLMC_ERR_BAD_STATE, "cannot select the CUDA device: %s: %s (%s)",
                                    call, cudaGetErrorName(e), cudaGetErrorString(e));
        }
        s->device = dev;
    }

    if (!llmc_cublas_load(&s->blas, why, sizeof(why))) {
        free_state(m);
        m->be = NULL;
        return llmc_fail_thread(LLMC_ERR_UNSUPPORTED, "%s", why);
    }

    const size_t B = m->opt.max_batch, T = m->opt.max_seq, C = m->cfg.channels;
    const size_t NH = m->cfg.num_heads, Vp = m->cfg.padded_vocab_size;
    const size_t BT = B * T; /* <= 2^30, checked by llmc_model_alloc */
    const int bf = is_bf16(m);
    size_t n_att = 0, n_logits = 0, n_c = 0;
    int ok = mul3(B * NH, T, T, &n_att) && mul3(BT, Vp, 1, &n_logits) && mul3(BT, C, 1, &n_c);
    const size_t slot_a = max3(n_logits, n_att, 4 * n_c); /* d logits, att, d out */
    const size_t slot_b = max3(4 * n_c, n_att, 1);        /* inputs, d scores */
    const size_t head_elem = bf ? sizeof(bf16) : sizeof(float);
    struct {
        void **ptr;
        size_t count, elem;
        const char *what;
    } allocs[] = {
        {(void **)&m->params, m->num_params, sizeof(float), "parameters"},
        {(void **)&m->grads, m->num_params, sizeof(float), "gradients"},
        {(void **)&m->adam_m, m->num_params, sizeof(float), "AdamW m"},
        {(void **)&m->adam_v, m->num_params, sizeof(float), "AdamW v"},
        {(void **)&m->acts, m->num_acts, sizeof(float), "activations"},
        {&s->blas_ws, kCublasWorkspaceBytes, 1, "cuBLAS workspace"},
        {(void **)&s->inputs, BT, sizeof(int32_t), "inputs"},
        {(void **)&s->targets, BT, sizeof(int32_t), "targets"},
        {(void **)&s->dres, n_c, sizeof(float), "backward scratch"},
        {(void **)&s->dsmall, n_c, sizeof(float), "backward scratch"},
        {(void **)&s->dbig, 4 * n_c, sizeof(float), "backward scratch"},
        {&s->qkvr, 3 * n_c, head_elem, "attention q, k, v"},
        {&s->yr, n_c, head_elem, "attention d y"},
        {(void **)&s->yr_f32, n_c, sizeof(float), "attention y"},
        {(void **)&s->dqkvr, 3 * n_c, sizeof(float), "attention d q, k, v"},
        {(void **)&s->datt, n_att, sizeof(float), "attention d scores"},
        {(void **)&s->col_partials, 2 * (size_t)llmc_cuda::kColChunks * 4 * C, sizeof(float),
         "column sums"},
        {(void **)&s->red, llmc_cuda::kRedBlocks + 1, sizeof(double), "reductions"},
        {(void **)&s->params16, bf ? m->num_params : 0, sizeof(bf16), "bf16 weights"},
        {(void **)&s->slot_a, bf ? slot_a : 0, sizeof(bf16), "bf16 operands"},
        {(void **)&s->slot_b, bf ? slot_b : 0, sizeof(bf16), "bf16 operands"},
        {(void **)&s->d_order, BT, sizeof(int32_t), "embedding backward order"},
        {(void **)&s->d_rows, BT, sizeof(int32_t), "embedding backward order"},
        {(void **)&s->d_seg, BT + 1, sizeof(int32_t), "embedding backward order"},
    };
    const size_t nallocs = sizeof(allocs) / sizeof(allocs[0]);
    size_t total = 0;
    for (size_t i = 0; ok && i < nallocs; i++) {
        size_t bytes;
        ok = llmc_mul_size(allocs[i].count, allocs[i].elem, &bytes) &&
             llmc_add_size(total, bytes, &total);
    }
    if (!ok) {
        free_state(m);
        m->be = NULL;
        return llmc_fail_thread(LLMC_ERR_OUT_OF_MEMORY, "CUDA model sizes overflow");
    }
    s->h_counts = (int32_t *)malloc(((size_t)m->cfg.vocab_size + 1) * sizeof(int32_t));
    s->h_order = (int32_t *)malloc(BT * sizeof(int32_t));
    s->h_rows = (int32_t *)malloc(BT * sizeof(int32_t));
    s->h_seg = (int32_t *)malloc((BT + 1) * sizeof(int32_t));
    if (!s->h_counts || !s->h_order || !s->h_rows || !s->h_seg) {
        free_state(m);
        m->be = NULL;
        return llmc_fail_thread(LLMC_ERR_OUT_OF_MEMORY,
                                "cannot allocate host memory for the CUDA model's token order");
    }
    for (size_t i = 0; i < nallocs; i++) {
        if (allocs[i].count == 0) continue;
        const size_t bytes = allocs[i].count * allocs[i].elem;
        const cudaError_t e = cudaMalloc(allocs[i].ptr, bytes);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            size_t free_b = 0, total_b = 0;
            char avail[96] = "the free GPU memory is unknown";
            if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
                snprintf(avail, sizeof(avail), "the GPU has %zu MiB free of %zu", free_b >> 20,
                         total_b >> 20);
            else
                (void)cudaGetLastError();
            free_state(m);
            m->be = NULL;
            return llmc_fail_thread(
                e == cudaErrorMemoryAllocation ? LLMC_ERR_OUT_OF_MEMORY : LLMC_ERR_BAD_STATE,
                "cannot allocate %zu MiB of GPU memory for the %s (%s); the model needs %zu MiB "
                "in all, %s; lower max_batch or max_seq",
                bytes >> 20, allocs[i].what, cudaGetErrorString(e), total >> 20, avail);
        }
    }
    s->slot_a_n = bf ? slot_a : 0;
    s->slot_b_n = bf ? slot_b : 0;
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        m->p[i] = m->params + m->param_offsets[i];
        m->g[i] = m->grads + m->param_offsets[i];
    }
    for (int a = 0; a < A_NUM; a++) m->a[a] = m->acts + m->act_offsets[a];

    /* cuBLAS: default (fp32, no TF32) math, our stream and workspace */
    int st = s->blas.create(&s->handle);
    if (st == LLMC_CUBLAS_STATUS_SUCCESS) st = s->blas.set_stream(s->handle, NULL);
    if (st == LLMC_CUBLAS_STATUS_SUCCESS)
        st = s->blas.set_math_mode(s->handle, LLMC_CUBLAS_DEFAULT_MATH);
    if (st == LLMC_CUBLAS_STATUS_SUCCESS)
        st = s->blas.set_workspace(s->handle, s->blas_ws, kCublasWorkspaceBytes);
    if (st != LLMC_CUBLAS_STATUS_SUCCESS) {
        const char *msg = llmc_cublas_status_name(&s->blas, st);
        char copy[128];
        snprintf(copy, sizeof(copy), "%s", msg);
        free_state(m);
        m->be = NULL;
        return llmc_fail_thread(LLMC_ERR_BAD_STATE, "cannot set up cuBLAS: status %d (%s)", st,
                                copy);
    }

    /* zeroed buffers, as calloc gives on the CPU */
    void *zero[] = {m->params, m->grads, m->adam_m, m->adam_v, m->acts};
    size_t zbytes[] = {m->num_params * 4, m->num_params * 4, m->num_params * 4,
                       m->num_params * 4, m->num_acts * 4};
    for (int i = 0; i < 5; i++) {
        const cudaError_t e = cudaMemset(zero[i], 0, zbytes[i]);
        if (e != cudaSuccess) {
            free_state(m);
            m->be = NULL;
            return llmc_fail_thread(LLMC_ERR_BAD_STATE, "cudaMemset: %s", cudaGetErrorString(e));
        }
    }
    const cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        free_state(m);
        m->be = NULL;
        return llmc_fail_thread(LLMC_ERR_BAD_STATE, "cudaDeviceSynchronize: %s",
                                cudaGetErrorString(e));
    }
    return LLMC_OK;
}
