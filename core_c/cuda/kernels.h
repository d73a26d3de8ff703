/* kernels.h - the CUDA kernels of the GPT-2 step (kernels.cu), as host launch functions.
 *
 * Every function enqueues work on `stream` and returns at once; the caller checks
 * cudaGetLastError() after it. Buffers are device pointers, row-major, float32 unless the
 * type says otherwise; the semantics follow the CPU kernels in src/ (same inputs, same
 * outputs, same in-place conventions), so backend.cu reads like model.c's CPU step. */
#ifndef LLMC_CUDA_KERNELS_H
#define LLMC_CUDA_KERNELS_H

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

namespace llmc_cuda {

typedef __nv_bfloat16 bf16;

/* blocks of the two-stage column sums (bias and layernorm parameter gradients) */
constexpr int kColChunks = 64;
/* blocks of the gradient sum of squares; the host adds the kRedBlocks partial sums */
constexpr int kRedBlocks = 512;

/* out[b,t,:] = wte[inp[b,t],:] + wpe[t,:] */
void encoder_forward(float *out, const int32_t *inp, const float *wte, const float *wpe, int B,
                     int T, int C, cudaStream_t stream);
/* dwte[v,:] += dout[b,t,:] over the positions of token v, and dwpe[t,:] += dout[b,t,:], each
 * sum one add at a time in increasing position, as the CPU (bitwise the same; no atomics).
 * The positions come grouped by token from llmc_token_segments (host_plan.h): the U distinct
 * tokens rows[0..U), their positions order[seg[u] .. seg[u+1]) (device arrays). */
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *order,
                      const int32_t *rows, const int32_t *seg, int U, int B, int T, int C,
                      cudaStream_t stream);

/* LayerNorm over C (eps 1e-5), keeping mean and rstd per row; statistics in double */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C,
                       cudaStream_t stream);
/* dinp += layernorm backward; dweight, dbias += (two stages through partials, which holds
 * 2 * kColChunks * C floats; fixed summation order) */
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int N, int C, float *partials, cudaStream_t stream);

/* out[n, :] = bias for every row n (the GEMM then accumulates onto it, as the CPU does) */
void bias_broadcast(float *out, const float *bias, int N, int OC, cudaStream_t stream);
/* dbias[o] += sum_n dout[n, o] (two stages through partials: kColChunks * OC floats) */
void bias_backward(float *dbias, const float *dout, int N, int OC, float *partials,
                   cudaStream_t stream);

void residual_forward(float *out, const float *a, const float *b, size_t n, cudaStream_t stream);
/* GELU, tanh approximation in the CPU's sigmoid form (shared_math.cuh); backward:
 * dinp = gelu'(inp) * dout (dinp may alias dout) */
void gelu_forward(float *out, const float *inp, size_t n, cudaStream_t stream);
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n,
                   cudaStream_t stream);

/* qkv (B, T, 3C) -> q, k, v each (B, NH, T, hs), as float or bf16 */
void split_heads_qkv(float *q, float *k, float *v, const float *qkv, int B, int T, int NH,
                     int hs, cudaStream_t stream);
void split_heads_qkv(bf16 *q, bf16 *k, bf16 *v, const float *qkv, int B, int T, int NH, int hs,
                     cudaStream_t stream);
/* x (B, T, C) -> (B, NH, T, hs) */
void split_heads(float *out, const float *x, int B, int T, int NH, int hs, cudaStream_t stream);
void split_heads(bf16 *out, const float *x, int B, int T, int NH, int hs, cudaStream_t stream);
/* (B, NH, T, hs) -> (B, T, C) */
void merge_heads(float *out, const float *y, int B, int T, int NH, int hs, cudaStream_t stream);
/* dq, dk, dv each (B, NH, T, hs) -> dqkv (B, T, 3C) (overwritten) */
void merge_heads_qkv(float *dqkv, const float *dq, const float *dk, const float *dv, int B,
                     int T, int NH, int hs, cudaStream_t stream);
/* rows of att (BNH * T rows of T): row t of each (b, h) gets the softmax of its first t + 1
 * entries, in place, as the CPU (exps, double sum, one float 1/sum); entries above the
 * diagonal become 0 */
void softmax_causal_forward(float *att, int BNH, int T, cudaStream_t stream);
/* datt (in place) -> d pre-softmax scores times scale: att * (datt - sum(att * datt)) * scale
 * on and below the diagonal, 0 above */
void softmax_causal_backward(float *datt, const float *att, int BNH, int T, float scale,
                             cudaStream_t stream);

/* softmax over the first V of Vp columns (padded columns 0) and per-row loss
 * log(sum exp) + max - logit[target], as the CPU's crossentropy_forward: the max, the exps
 * with their sum in double, one scale by the float 1/sum (kClassifierThreads per row) */
void classifier_forward(float *probs, float *losses, const float *logits,
                        const int32_t *targets, int N, int V, int Vp, cudaStream_t stream);
/* probs -> d logits in place: (probs - onehot(target)) * dloss; padded columns 0 */
void classifier_backward(float *probs, const int32_t *targets, float dloss, int N, int V, int Vp,
                         cudaStream_t stream);
/* *out = sum of losses[0..N) in double, fixed order (one block) */
void sum_losses(double *out, const float *losses, int N, cudaStream_t stream);

/* out = bf16(in), round to nearest even */
void to_bf16(bf16 *out, const float *in, size_t n, cudaStream_t stream);
/* partials[kRedBlocks] = sums of x[i]^2 in double over a fixed split of [0, n) */
void sumsq_partials(double *partials, const float *x, size_t n, cudaStream_t stream);
void scale_inplace(float *x, float coef, size_t n, cudaStream_t stream);
/* AdamW for one tensor, the CPU's arithmetic (adamw.c); the scalars come from the host:
 * one_minus_b1 = 1 - beta1, b2 = beta2, one_minus_b2 = 1 - beta2,
 * neg_step = -lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t), decay = 1 - lr * wd */
void adamw(float *param, const float *grad, float *m, float *v, size_t n, float one_minus_b1,
           float b2, float one_minus_b2, float neg_step, float bc2_sqrt, float eps, float decay,
           float grad_scale, cudaStream_t stream);

/* a kernel of this file, for the "is there code for this GPU" probe */
const void *probe_kernel(void);

}  // namespace llmc_cuda

#endif
