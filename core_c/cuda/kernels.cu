/* kernels.cu - CUDA kernels of the GPT-2 training step (see kernels.h for what each does).
 *
 * Written for correctness first: the CPU kernels' arithmetic (src/), through the shared
 * __host__ __device__ functions of shared_math.cuh (the same exp, the same formulas, double
 * accumulators where the CPU has them; compiled with --fmad=false, so no fused multiply-add
 * the CPU does not do), indices in size_t wherever a tensor can exceed 2^31 elements (logits
 * at B=64, T=1024 have 3.3e9), grid-stride loops for element-wise work, and every reduction
 * in a fixed order, no atomics: these kernels repeat bit for bit run to run. No fast-math. */
#include "kernels.h"

#include <math.h>

#include "shared_math.cuh"

namespace llmc_cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kEmbedThreads = 128; /* channels per block of the embedding backward */

/* blocks for n elements with a grid-stride loop: enough to fill any GPU, bounded */
unsigned grid_for(size_t n, int threads = kThreads) {
    size_t blocks = (n + threads - 1) / threads;
    if (blocks > 65536) blocks = 65536;
    if (blocks < 1) blocks = 1;
    return (unsigned)blocks;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum(double v) {
    for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = kWarp / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
 * The order of additions is host_block_sum's (shared_math.cuh). */
template <typename F>
__device__ F block_sum(F v, F *shared /* >= 32 */) {
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    const int nwarps = blockDim.x / kWarp;
    v = warp_sum(v);
    __syncthreads(); /* shared may still be read by a previous call */
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    F r = lane < nwarps ? shared[lane] : F(0);
    return warp_sum(r);
}

__device__ float block_max(float v, float *shared /* >= 32 */) {
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    const int nwarps = blockDim.x / kWarp;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    const float r = lane < nwarps ? shared[lane] : -INFINITY;
    return warp_max(r);
}

/* ------------------------------------------------------------------ encoder */

__global__ void encoder_forward_kernel(float *out, const int32_t *inp, const float *wte,
                                       const float *wpe, int T, int C, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t bt = i / C;
        const int c = (int)(i % C);
        const int t = (int)(bt % T);
        out[i] = wte[(size_t)inp[bt] * C + c] + wpe[(size_t)t * C + c];
    }
}

/* block (u, channel chunk): distinct token u = rows[u] owns its dwte row; each thread one
 * channel, adding that token's positions order[seg[u] .. seg[u+1]) in increasing order */
__global__ void encoder_backward_wte_kernel(float *dwte, const float *dout, const int32_t *order,
                                            const int32_t *rows, const int32_t *seg, int C) {
    const int u = blockIdx.x;
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float *w = dwte + (size_t)rows[u] * C + c;
    *w = embedding_row_sum(*w, dout, order, seg[u], seg[u + 1], c, C);
}

/* dwpe[t, c] += dout[b, t, c] for b = 0, 1, ... one add at a time onto dwpe: the CPU's order */
__global__ void encoder_backward_wpe_kernel(float *dwpe, const float *dout, int B, int T, int C) {
    const size_t n = (size_t)T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        dwpe[i] = position_sum(dwpe[i], dout, B, n, i);
    }
}

/* ------------------------------------------------------------------ layernorm */

/* one warp per row. Mean and variance in double, two passes, as the CPU: rows can be long
 * and near-constant (a residual stream far from zero), where float sums lose the digits
 * the variance is made of. */
__global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd, const float *inp,
                                         const float *weight, const float *bias, int N, int C) {
    const int row = blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    if (row >= N) return;
    const float *x = inp + (size_t)row * C;
    const double m = layernorm_mean(warp_sum(lane_sum(x, C, lane, kWarp)), C);
    const float r = layernorm_rstd(warp_sum(lane_sq_dev(x, C, m, lane, kWarp)), C);
    const float mf = (float)m;
    float *o = out + (size_t)row * C;
    for (int c = lane; c < C; c += kWarp) o[c] = layernorm_out(x[c], mf, r, weight[c], bias[c]);
    if (lane == 0) {
        mean[row] = mf;
        rstd[row] = r;
    }
}

/* one warp per row: dinp += rstd * (dn - mean(dn) - xhat * mean(dn * xhat)), dn = dout * w */
__global__ void layernorm_backward_dinp_kernel(float *dinp, const float *dout, const float *inp,
                                               const float *weight, const float *mean,
                                               const float *rstd, int N, int C) {
    const int row = blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    if (row >= N) return;
    const float *x = inp + (size_t)row * C;
    const float *d = dout + (size_t)row * C;
    const float m = mean[row], r = rstd[row];
    double sdn, sdnx; /* in double, as the CPU */
    lane_layernorm_backward_sums(d, x, weight, m, r, C, lane, kWarp, &sdn, &sdnx);
    const float mean_dn = (float)(warp_sum(sdn) / C);
    const float mean_dnx = (float)(warp_sum(sdnx) / C);
    float *di = dinp + (size_t)row * C;
    for (int c = lane; c < C; c += kWarp)
        di[c] += layernorm_dinp(d[c], x[c], weight[c], m, r, mean_dn, mean_dnx);
}

/* Column sums in two stages. Stage 1: block (32 x 8 threads) of grid (ceil(C / 32),
 * kColChunks) sums rows [chunk * rows_per, ...) of 32 columns into partials[chunk][c].
 * With inp != NULL it is the layernorm case: partials for dweight (sum dout * xhat) in the
 * first kColChunks * C floats and for dbias (sum dout) in the next; otherwise only dbias. */
__global__ void column_partials_kernel(float *partials, const float *dout, const float *inp,
                                       const float *mean, const float *rstd, int N, int C) {
    __shared__ float sw[8][33];
    __shared__ float sb[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    const int chunk = blockIdx.y;
    const int rows_per = (N + kColChunks - 1) / kColChunks;
    const int r0 = chunk * rows_per;
    const int r1 = min(N, r0 + rows_per);
    float accw = 0.0f, accb = 0.0f;
    if (c < C) {
        for (int r = r0 + threadIdx.y; r < r1; r += 8) {
            const float d = dout[(size_t)r * C + c];
            accb += d;
            if (inp) accw += d * ((inp[(size_t)r * C + c] - mean[r]) * rstd[r]);
        }
    }
    sw[threadIdx.y][threadIdx.x] = accw;
    sb[threadIdx.y][threadIdx.x] = accb;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float w = 0.0f, b = 0.0f;
        for (int y = 0; y < 8; y++) {
            w += sw[y][threadIdx.x];
            b += sb[y][threadIdx.x];
        }
        if (inp) {
            partials[(size_t)chunk * C + c] = w;
            partials[(size_t)(kColChunks + chunk) * C + c] = b;
        } else {
            partials[(size_t)chunk * C + c] = b;
        }
    }
}

/* Stage 2: out[c] += sum over chunks of partials[chunk][c], chunks in order */
__global__ void column_finish_kernel(float *out, const float *partials, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int k = 0; k < kColChunks; k++) s += partials[(size_t)k * C + c];
    out[c] += s;
}

/* ------------------------------------------------------------------ matmul helpers */

__global__ void bias_broadcast_kernel(float *out, const float *bias, int OC, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = bias[i % OC];
}

/* ------------------------------------------------------------------ element-wise */

__global__ void residual_kernel(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

__global__ void gelu_forward_kernel(float *out, const float *inp, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = gelu_value(inp[i]);
}

__global__ void gelu_backward_kernel(float *dinp, const float *inp, const float *dout, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dinp[i] = gelu_grad(inp[i], dout[i]);
}

__global__ void to_bf16_kernel(bf16 *out, const float *in, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = round_bf16(in[i]);
}

__global__ void scale_kernel(float *x, float coef, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] *= coef;
}

__global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, size_t n,
                             float one_minus_b1, float b2, float one_minus_b2, float neg_step,
                             float bc2_sqrt, float eps, float decay, float grad_scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        adamw_element(param + i, grad[i], m + i, v + i, one_minus_b1, b2, one_minus_b2,
                      neg_step, bc2_sqrt, eps, decay, grad_scale);
}

/* ------------------------------------------------------------------ attention layout */

template <typename T>
__device__ __forceinline__ T convert(float x);
template <>
__device__ __forceinline__ float convert<float>(float x) { return x; }
template <>
__device__ __forceinline__ bf16 convert<bf16>(float x) { return round_bf16(x); }

/* element i of a (B, NH, T, hs) tensor -> its (b, t, h * hs + d) position in (B, T, *) */
__device__ __forceinline__ void head_index(size_t i, int T, int NH, int hs, size_t *bt,
                                           int *col) {
    const int d = (int)(i % hs);
    size_t r = i / hs;
    const int t = (int)(r % T);
    r /= T;
    const int h = (int)(r % NH);
    const size_t b = r / NH;
    *bt = b * T + t;
    *col = h * hs + d;
}

template <typename T>
__global__ void split_heads_qkv_kernel(T *q, T *k, T *v, const float *qkv, int Tn, int NH,
                                       int hs, size_t n) {
    const int C = NH * hs;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t bt;
        int col;
        head_index(i, Tn, NH, hs, &bt, &col);
        const float *row = qkv + bt * 3 * C;
        q[i] = convert<T>(row[col]);
        k[i] = convert<T>(row[C + col]);
        v[i] = convert<T>(row[2 * C + col]);
    }
}

template <typename T>
__global__ void split_heads_kernel(T *out, const float *x, int Tn, int NH, int hs, size_t n) {
    const int C = NH * hs;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t bt;
        int col;
        head_index(i, Tn, NH, hs, &bt, &col);
        out[i] = convert<T>(x[bt * C + col]);
    }
}

__global__ void merge_heads_kernel(float *out, const float *y, int Tn, int NH, int hs, size_t n) {
    const int C = NH * hs;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t bt;
        int col;
        head_index(i, Tn, NH, hs, &bt, &col);
        out[bt * C + col] = y[i];
    }
}

__global__ void merge_heads_qkv_kernel(float *dqkv, const float *dq, const float *dk,
                                       const float *dv, int Tn, int NH, int hs, size_t n) {
    const int C = NH * hs;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t bt;
        int col;
        head_index(i, Tn, NH, hs, &bt, &col);
        float *row = dqkv + bt * 3 * C;
        row[col] = dq[i];
        row[C + col] = dk[i];
        row[2 * C + col] = dv[i];
    }
}

/* one warp per row r of the (BNH * T, T) scaled scores; row r is position t = r % T. As
 * the CPU's softmax_causal_row: exps of x - max, their sum in double, one float 1/sum. Each
 * lane writes its exps in place and scales the same entries afterwards. */
__global__ void softmax_causal_forward_kernel(float *att, size_t rows, int T) {
    const size_t r = blockIdx.x * (size_t)(blockDim.x / kWarp) + threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    if (r >= rows) return;
    const int t = (int)(r % T);
    float *a = att + r * T;
    const float mx = warp_max(lane_max(a, t + 1, lane, kWarp));
    const float inv = softmax_inv(warp_sum(lane_exp(a, a, t + 1, mx, lane, kWarp)));
    for (int s = lane; s < T; s += kWarp) a[s] = s <= t ? a[s] * inv : 0.0f;
}

__global__ void softmax_causal_backward_kernel(float *datt, const float *att, size_t rows, int T,
                                               float scale) {
    const size_t r = blockIdx.x * (size_t)(blockDim.x / kWarp) + threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    if (r >= rows) return;
    const int t = (int)(r % T);
    float *d = datt + r * T;
    const float *a = att + r * T;
    float dot = 0.0f;
    for (int s = lane; s <= t; s += kWarp) dot += a[s] * d[s];
    dot = warp_sum(dot);
    for (int s = lane; s < T; s += kWarp) d[s] = s <= t ? a[s] * (d[s] - dot) * scale : 0.0f;
}

/* ------------------------------------------------------------------ classifier */

/* one block per row, as the CPU's softmax_row (src/crossentropy.c): the max; the exps of
 * x - max written to probs with their sum in double; probs scaled by one float 1/sum. Each
 * thread scales the entries it wrote, so no barrier is needed between the two. */
__global__ void classifier_forward_kernel(float *probs, float *losses, const float *logits,
                                          const int32_t *targets, int V, int Vp) {
    __shared__ float s_max[32];
    __shared__ double s_sum[32];
    const size_t n = blockIdx.x;
    const float *x = logits + n * Vp;
    float *p = probs + n * Vp;
    const int tid = threadIdx.x, nt = blockDim.x;
    const float mx = block_max(lane_max(x, V, tid, nt), s_max);
    const double sum = block_sum(lane_exp(p, x, V, mx, tid, nt), s_sum);
    const float inv = softmax_inv(sum);
    for (int i = tid; i < Vp; i += nt) p[i] = i < V ? p[i] * inv : 0.0f;
    if (tid == 0) losses[n] = crossentropy_loss(sum, mx, x[targets[n]]);
}

__global__ void classifier_backward_kernel(float *probs, const int32_t *targets, float dloss,
                                           int V, int Vp, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t n = i / Vp;
        const int c = (int)(i % Vp);
        float d = 0.0f;
        if (c < V) {
            d = probs[i] * dloss;
            if (c == targets[n]) d -= dloss;
        }
        probs[i] = d;
    }
}

__global__ void sum_losses_kernel(double *out, const float *losses, int N) {
    __shared__ double shared[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < N; i += blockDim.x) s += (double)losses[i];
    s = block_sum(s, shared);
    if (threadIdx.x == 0) *out = s;
}

__global__ void sumsq_partials_kernel(double *partials, const float *x, size_t n) {
    __shared__ double shared[32];
    /* a fixed split of [0, n): the result does not depend on the GPU */
    double s = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const double g = (double)x[i];
        s += g * g;
    }
    s = block_sum(s, shared);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

}  // namespace

/* ------------------------------------------------------------------ launchers */

void encoder_forward(float *out, const int32_t *inp, const float *wte, const float *wpe, int B,
                     int T, int C, cudaStream_t stream) {
    const size_t n = (size_t)B * T * C;
    encoder_forward_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, inp, wte, wpe, T, C, n);
}

void encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *order,
                      const int32_t *rows, const int32_t *seg, int U, int B, int T, int C,
                      cudaStream_t stream) {
    const dim3 grid((unsigned)U, (unsigned)((C + kEmbedThreads - 1) / kEmbedThreads));
    encoder_backward_wte_kernel<<<grid, kEmbedThreads, 0, stream>>>(dwte, dout, order, rows, seg,
                                                                    C);
    encoder_backward_wpe_kernel<<<grid_for((size_t)T * C), kThreads, 0, stream>>>(dwpe, dout, B,
                                                                                  T, C);
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C,
                       cudaStream_t stream) {
    const int rows_per_block = kThreads / kWarp;
    const unsigned blocks = (unsigned)((N + rows_per_block - 1) / rows_per_block);
    layernorm_forward_kernel<<<blocks, kThreads, 0, stream>>>(out, mean, rstd, inp, weight, bias,
                                                              N, C);
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int N, int C, float *partials, cudaStream_t stream) {
    const int rows_per_block = kThreads / kWarp;
    const unsigned blocks = (unsigned)((N + rows_per_block - 1) / rows_per_block);
    layernorm_backward_dinp_kernel<<<blocks, kThreads, 0, stream>>>(dinp, dout, inp, weight,
                                                                    mean, rstd, N, C);
    const dim3 grid((unsigned)((C + 31) / 32), kColChunks), block(32, 8);
    column_partials_kernel<<<grid, block, 0, stream>>>(partials, dout, inp, mean, rstd, N, C);
    const unsigned fb = (unsigned)((C + kThreads - 1) / kThreads);
    column_finish_kernel<<<fb, kThreads, 0, stream>>>(dweight, partials, C);
    column_finish_kernel<<<fb, kThreads, 0, stream>>>(dbias, partials + (size_t)kColChunks * C,
                                                      C);
}

void bias_broadcast(float *out, const float *bias, int N, int OC, cudaStream_t stream) {
    const size_t n = (size_t)N * OC;
    bias_broadcast_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, bias, OC, n);
}

void bias_backward(float *dbias, const float *dout, int N, int OC, float *partials,
                   cudaStream_t stream) {
    const dim3 grid((unsigned)((OC + 31) / 32), kColChunks), block(32, 8);
    column_partials_kernel<<<grid, block, 0, stream>>>(partials, dout, nullptr, nullptr, nullptr,
                                                       N, OC);
    const unsigned fb = (unsigned)((OC + kThreads - 1) / kThreads);
    column_finish_kernel<<<fb, kThreads, 0, stream>>>(dbias, partials, OC);
}

void residual_forward(float *out, const float *a, const float *b, size_t n, cudaStream_t stream) {
    residual_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, a, b, n);
}

void gelu_forward(float *out, const float *inp, size_t n, cudaStream_t stream) {
    gelu_forward_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, inp, n);
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n,
                   cudaStream_t stream) {
    gelu_backward_kernel<<<grid_for(n), kThreads, 0, stream>>>(dinp, inp, dout, n);
}

void split_heads_qkv(float *q, float *k, float *v, const float *qkv, int B, int T, int NH,
                     int hs, cudaStream_t stream) {
    const size_t n = (size_t)B * NH * T * hs;
    split_heads_qkv_kernel<float><<<grid_for(n), kThreads, 0, stream>>>(q, k, v, qkv, T, NH, hs,
                                                                        n);
}

void split_heads_qkv(bf16 *q, bf16 *k, bf16 *v, const float *qkv, int B, int T, int NH, int hs,
                     cudaStream_t stream) {
    const size_t n = (size_t)B * NH * T * hs;
    split_heads_qkv_kernel<bf16><<<grid_for(n), kThreads, 0, stream>>>(q, k, v, qkv, T, NH, hs,
                                                                       n);
}

void split_heads(float *out, const float *x, int B, int T, int NH, int hs, cudaStream_t stream) {
    const size_t n = (size_t)B * NH * T * hs;
    split_heads_kernel<float><<<grid_for(n), kThreads, 0, stream>>>(out, x, T, NH, hs, n);
}

void split_heads(bf16 *out, const float *x, int B, int T, int NH, int hs, cudaStream_t stream) {
    const size_t n = (size_t)B * NH * T * hs;
    split_heads_kernel<bf16><<<grid_for(n), kThreads, 0, stream>>>(out, x, T, NH, hs, n);
}

void merge_heads(float *out, const float *y, int B, int T, int NH, int hs, cudaStream_t stream) {
    const size_t n = (size_t)B * NH * T * hs;
    merge_heads_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, y, T, NH, hs, n);
}

void merge_heads_qkv(float *dqkv, const float *dq, const float *dk, const float *dv, int B,
                     int T, int NH, int hs, cudaStream_t stream) {
    const size_t n = (size_t)B * NH * T * hs;
    merge_heads_qkv_kernel<<<grid_for(n), kThreads, 0, stream>>>(dqkv, dq, dk, dv, T, NH, hs, n);
}

void softmax_causal_forward(float *att, int BNH, int T, cudaStream_t stream) {
    const size_t rows = (size_t)BNH * T;
    const size_t rows_per_block = kThreads / kWarp;
    const unsigned blocks = (unsigned)((rows + rows_per_block - 1) / rows_per_block);
    softmax_causal_forward_kernel<<<blocks, kThreads, 0, stream>>>(att, rows, T);
}

void softmax_causal_backward(float *datt, const float *att, int BNH, int T, float scale,
                             cudaStream_t stream) {
    const size_t rows = (size_t)BNH * T;
    const size_t rows_per_block = kThreads / kWarp;
    const unsigned blocks = (unsigned)((rows + rows_per_block - 1) / rows_per_block);
    softmax_causal_backward_kernel<<<blocks, kThreads, 0, stream>>>(datt, att, rows, T, scale);
}

void classifier_forward(float *probs, float *losses, const float *logits,
                        const int32_t *targets, int N, int V, int Vp, cudaStream_t stream) {
    classifier_forward_kernel<<<(unsigned)N, kClassifierThreads, 0, stream>>>(probs, losses,
                                                                              logits, targets,
                                                                              V, Vp);
}

void classifier_backward(float *probs, const int32_t *targets, float dloss, int N, int V, int Vp,
                         cudaStream_t stream) {
    const size_t total = (size_t)N * Vp;
    classifier_backward_kernel<<<grid_for(total), kThreads, 0, stream>>>(probs, targets, dloss, V,
                                                                         Vp, total);
}

void sum_losses(double *out, const float *losses, int N, cudaStream_t stream) {
    sum_losses_kernel<<<1, 1024, 0, stream>>>(out, losses, N);
}

void to_bf16(bf16 *out, const float *in, size_t n, cudaStream_t stream) {
    to_bf16_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, in, n);
}

void sumsq_partials(double *partials, const float *x, size_t n, cudaStream_t stream) {
    sumsq_partials_kernel<<<kRedBlocks, kThreads, 0, stream>>>(partials, x, n);
}

void scale_inplace(float *x, float coef, size_t n, cudaStream_t stream) {
    scale_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, coef, n);
}

void adamw(float *param, const float *grad, float *m, float *v, size_t n, float one_minus_b1,
           float b2, float one_minus_b2, float neg_step, float bc2_sqrt, float eps, float decay,
           float grad_scale, cudaStream_t stream) {
    adamw_kernel<<<grid_for(n), kThreads, 0, stream>>>(param, grad, m, v, n, one_minus_b1, b2,
                                                       one_minus_b2, neg_step, bc2_sqrt, eps,
                                                       decay, grad_scale);
}

const void *probe_kernel(void) { return (const void *)scale_kernel; }

}  // namespace llmc_cuda
