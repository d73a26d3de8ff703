/* host_emulation.cu - TEST-ONLY: the CUDA kernels' arithmetic run on the host.
 *
 * Compiled by nvcc into a small shared library (parity_tests/test_cuda_host_math.py builds
 * it; no GPU needed), whose emu_* functions redo what the kernels of kernels.cu compute,
 * through the same shared_math.cuh functions, with the kernels' thread layout emulated:
 * each row's lane partials computed lane by lane and combined in warp_sum's / block_sum's
 * order (host_warp_sum, host_block_sum). The test compares them with the CPU kernels of
 * src/ (through the kernel shim) on hard inputs. Thread layouts are the kernels': one warp
 * (32 lanes) per layernorm and attention-softmax row, kClassifierThreads per classifier row,
 * one thread per (token, channel) in the embedding backward. */
#include <stdint.h>
#include <string.h>

#include "host_plan.h"
#include "shared_math.cuh"

using namespace llmc_cuda;

#define EMU_API extern "C" __attribute__((visibility("default")))

/* bump with any change of a signature below (the test's cdef must match) */
EMU_API int emu_abi(void) { return 1; }

EMU_API void emu_gelu_forward(float *out, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = gelu_value(x[i]);
}

EMU_API void emu_gelu_backward(float *dinp, const float *x, const float *dout, int64_t n) {
    for (int64_t i = 0; i < n; i++) dinp[i] = gelu_grad(x[i], dout[i]);
}

EMU_API void emu_round_bf16(uint16_t *out, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const __nv_bfloat16 h = round_bf16(x[i]);
        memcpy(&out[i], &h, sizeof(uint16_t));
    }
}

EMU_API void emu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                   const float *w, const float *b, int N, int C) {
    for (int row = 0; row < N; row++) {
        const float *x = inp + (size_t)row * C;
        double part[kWarp];
        for (int l = 0; l < kWarp; l++) part[l] = lane_sum(x, C, l, kWarp);
        const double m = layernorm_mean(host_warp_sum(part), C);
        for (int l = 0; l < kWarp; l++) part[l] = lane_sq_dev(x, C, m, l, kWarp);
        const float r = layernorm_rstd(host_warp_sum(part), C);
        const float mf = (float)m;
        for (int c = 0; c < C; c++)
            out[(size_t)row * C + c] = layernorm_out(x[c], mf, r, w[c], b[c]);
        mean[row] = mf;
        rstd[row] = r;
    }
}

/* dinp += (the kernel accumulates into dinp, as the CPU) */
EMU_API void emu_layernorm_backward_dinp(float *dinp, const float *dout, const float *inp,
                                         const float *w, const float *mean, const float *rstd,
                                         int N, int C) {
    for (int row = 0; row < N; row++) {
        const float *x = inp + (size_t)row * C, *d = dout + (size_t)row * C;
        const float m = mean[row], r = rstd[row];
        double a[kWarp], bsum[kWarp];
        for (int l = 0; l < kWarp; l++)
            lane_layernorm_backward_sums(d, x, w, m, r, C, l, kWarp, &a[l], &bsum[l]);
        const float mean_dn = (float)(host_warp_sum(a) / C);
        const float mean_dnx = (float)(host_warp_sum(bsum) / C);
        for (int c = 0; c < C; c++)
            dinp[(size_t)row * C + c] += layernorm_dinp(d[c], x[c], w[c], m, r, mean_dn, mean_dnx);
    }
}

EMU_API void emu_classifier_forward(float *probs, float *losses, const float *logits,
                                    const int32_t *targets, int N, int V, int Vp) {
    const int nt = kClassifierThreads;
    double part[kClassifierThreads];
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * Vp;
        float *p = probs + (size_t)n * Vp;
        float mx = -INFINITY; /* a max is exact in any order */
        for (int t = 0; t < nt; t++) {
            const float v = lane_max(x, V, t, nt);
            mx = v > mx ? v : mx;
        }
        for (int t = 0; t < nt; t++) part[t] = lane_exp(p, x, V, mx, t, nt);
        const double sum = host_block_sum(part, nt);
        const float inv = softmax_inv(sum);
        for (int i = 0; i < Vp; i++) p[i] = i < V ? p[i] * inv : 0.0f;
        losses[n] = crossentropy_loss(sum, mx, x[targets[n]]);
    }
}

/* rows of T scaled scores, row r at position t = r % T, in place */
EMU_API void emu_softmax_causal_forward(float *att, int64_t rows, int T) {
    for (int64_t r = 0; r < rows; r++) {
        const int t = (int)(r % T);
        float *a = att + r * T;
        float mx = -INFINITY;
        for (int l = 0; l < kWarp; l++) {
            const float v = lane_max(a, t + 1, l, kWarp);
            mx = v > mx ? v : mx;
        }
        double part[kWarp];
        for (int l = 0; l < kWarp; l++) part[l] = lane_exp(a, a, t + 1, mx, l, kWarp);
        const float inv = softmax_inv(host_warp_sum(part));
        for (int s = 0; s < T; s++) a[s] = s <= t ? a[s] * inv : 0.0f;
    }
}

EMU_API void emu_adamw(float *param, const float *grad, float *m, float *v, int64_t n,
                       double lr, double beta1, double beta2, double eps, double weight_decay,
                       int t, float grad_scale) {
    const adamw_scalars k = adamw_scalars_of(lr, beta1, beta2, eps, t);
    const float decay = adamw_decay_of(lr, weight_decay);
    for (int64_t i = 0; i < n; i++)
        adamw_element(param + i, grad[i], m + i, v + i, k.one_minus_b1, k.b2, k.one_minus_b2,
                      k.neg_step, k.bc2_sqrt, k.eps, decay, grad_scale);
}

/* dwte and dwpe accumulate, as the kernels (and the CPU). Returns the number of distinct
 * tokens, or -1 (a token out of range). */
EMU_API int emu_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp,
                                 int B, int T, int C, int V) {
    const int BT = B * T;
    int32_t *counts = new int32_t[(size_t)V + 1], *order = new int32_t[BT];
    int32_t *rows = new int32_t[BT], *seg = new int32_t[(size_t)BT + 1];
    const int32_t U = llmc_token_segments(inp, BT, V, counts, order, rows, seg);
    for (int32_t u = 0; u < U; u++)
        for (int c = 0; c < C; c++) {
            float *w = dwte + (size_t)rows[u] * C + c;
            *w = embedding_row_sum(*w, dout, order, seg[u], seg[u + 1], c, C);
        }
    if (U >= 0) {
        const size_t n = (size_t)T * C;
        for (size_t i = 0; i < n; i++) dwpe[i] = position_sum(dwpe[i], dout, B, n, i);
    }
    delete[] counts;
    delete[] order;
    delete[] rows;
    delete[] seg;
    return U;
}
