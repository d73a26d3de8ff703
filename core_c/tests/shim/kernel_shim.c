/* kernel_shim.c - TEST-ONLY shared library (_kernel_shim) exporting llmc_test_* wrappers
 * around the C core's internal kernels (core_c/src/internal.h), so the Python property
 * tests (parity_tests/test_kernels.py) can run each kernel on its own against the matching
 * PyTorch op. It is linked from the same object library as libllmc, so it runs exactly the
 * kernels the model runs. Not part of the public API: nothing but the tests may use it.
 *
 * Every wrapper takes the thread count nt explicitly. Kernels that need an execution
 * context (matmul, attention backward) get one allocated here as the model would size it:
 * gemm_ws = LLMC_GEMM_WS_FLOATS * nt (64-byte aligned), row_ws = LLMC_ATTN_WS_FLOATS(T, hs) * nt, and the shared
 * pre-pack buffer only when use_shared is set (the kernels must work without it). Those
 * wrappers return 0, or -1 when the workspace cannot be allocated.
 *
 * Lives in its own directory so the C unit-test glob (tests/*.c, one executable each)
 * does not pick it up. Python loader: reference/kernel_shim.py (pyllmc.reference.kernel_shim),
 * whose cdef must match the signatures below (parity_tests/test_kernels.py checks it);
 * bump SHIM_ABI with any change of a signature so a stale shim is refused at load. */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#define SHIM_API __declspec(dllexport)
#else
#define SHIM_API __attribute__((visibility("default")))
#endif

static float *aligned_floats(size_t n) {
    void *p = NULL;
    size_t bytes = (n ? n : 1) * sizeof(float);
    bytes = (bytes + 63) / 64 * 64;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    memset(p, 0, bytes);
    return (float *)p;
}

typedef struct {
    llmc_exec ex;
    float *gemm_ws, *row_ws, *shared;
} shim_exec;

/* precision of the kernels' GEMMs (llmc_test_set_bf16): 0 fp32, 1 bf16 operands */
static int shim_bf16 = 0;

static int exec_make(shim_exec *s, int nt, int row_len, int use_shared) {
    memset(s, 0, sizeof(*s));
    if (nt < 1) nt = 1;
    if (row_len < 1) row_len = 1;
    s->gemm_ws = aligned_floats(LLMC_GEMM_WS_FLOATS * (size_t)nt);
    s->row_ws = aligned_floats((size_t)row_len * nt);
    s->shared = use_shared ? aligned_floats(LLMC_GEMM_SHARED_FLOATS) : NULL;
    if (!s->gemm_ws || !s->row_ws || (use_shared && !s->shared)) {
        free(s->gemm_ws);
        free(s->row_ws);
        free(s->shared);
        return -1;
    }
    s->ex.nt = nt;
    s->ex.gemm_ws = s->gemm_ws;
    s->ex.row_ws = s->row_ws;
    s->ex.row_ws_len = row_len;
    s->ex.gemm_shared = s->shared;
    s->ex.gemm_shared_len = use_shared ? LLMC_GEMM_SHARED_FLOATS : 0;
    s->ex.dw_beta = 1.0f; /* matmul_backward accumulates into dweight, as in a model */
    s->ex.bf16 = shim_bf16;
    return 0;
}

static void exec_free(shim_exec *s) {
    free(s->gemm_ws);
    free(s->row_ws);
    free(s->shared);
}

#define SHIM_ABI 4

SHIM_API int llmc_test_shim_abi(void) { return SHIM_ABI; }

SHIM_API const char *llmc_test_gemm_isa(void) { return llmc_gemm_isa(); }

SHIM_API const char *llmc_test_gemm_bf16_isa(void) { return llmc_gemm_bf16_isa(); }

/* From now on the GEMM, matmul and attention wrappers run in bf16 precision (on != 0), as a
 * bf16 model's kernels do, or in fp32 (0, the default). */
SHIM_API void llmc_test_set_bf16(int on) { shim_bf16 = on != 0; }

/* The GEMM itself (of the precision set by llmc_test_set_bf16), every transpose combination
 * and leading dimension (the matmul wrappers reach only three of the four), with or without
 * the shared pre-pack buffer. */
SHIM_API int llmc_test_sgemm(int transA, int transB, int M, int N, int K, const float *A,
                             int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                             int64_t ldc, int nt, int use_shared) {
    shim_exec s;
    if (exec_make(&s, nt, 1, use_shared) != 0) return -1;
    llmc_gemm(transA, transB, M, N, K, A, lda, B, ldb, beta, C, ldc, &s.ex);
    exec_free(&s);
    return 0;
}

SHIM_API void llmc_test_encoder_forward(float *out, const int32_t *inp, const float *wte,
                                        const float *wpe, int B, int T, int C, int nt) {
    encoder_forward(out, inp, wte, wpe, B, T, C, nt);
}

SHIM_API void llmc_test_encoder_backward(float *dwte, float *dwpe, const float *dout,
                                         const int32_t *inp, int B, int T, int C, int nt) {
    encoder_backward(dwte, dwpe, dout, inp, B, T, C, nt);
}

SHIM_API void llmc_test_layernorm_forward(float *out, float *mean, float *rstd,
                                          const float *inp, const float *weight,
                                          const float *bias, int N, int C, int nt) {
    layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, nt);
}

SHIM_API void llmc_test_layernorm_backward(float *dinp, float *dweight, float *dbias,
                                           const float *dout, const float *inp,
                                           const float *weight, const float *mean,
                                           const float *rstd, int N, int C, int nt) {
    layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C, nt);
}

SHIM_API int llmc_test_matmul_forward(float *out, const float *inp, const float *weight,
                                      const float *bias, int N, int IC, int OC, int nt,
                                      int use_shared) {
    shim_exec s;
    if (exec_make(&s, nt, 1, use_shared) != 0) return -1;
    matmul_forward(out, inp, weight, bias, N, IC, OC, &s.ex);
    exec_free(&s);
    return 0;
}

/* accumulate: dweight += (dw_beta 1, as in an accumulating backward); 0: dweight is
 * overwritten (dw_beta 0, the first micro-batch's backward) */
SHIM_API int llmc_test_matmul_backward(float *dinp, float *dweight, float *dbias,
                                       const float *dout, const float *inp,
                                       const float *weight, int N, int IC, int OC, int nt,
                                       int use_shared, int accumulate) {
    shim_exec s;
    if (exec_make(&s, nt, 1, use_shared) != 0) return -1;
    s.ex.dw_beta = accumulate ? 1.0f : 0.0f;
    matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC, &s.ex);
    exec_free(&s);
    return 0;
}

SHIM_API int llmc_test_attention_forward(float *out, float *att, const float *qkv, int B,
                                         int T, int C, int NH, int nt) {
    shim_exec s;
    if (exec_make(&s, nt, (int)LLMC_ATTN_WS_FLOATS(T, C / NH), 0) != 0) return -1;
    attention_forward(out, att, qkv, B, T, C, NH, &s.ex);
    exec_free(&s);
    return 0;
}

SHIM_API int llmc_test_attention_backward(float *dqkv, const float *dout, const float *qkv,
                                          const float *att, int B, int T, int C, int NH,
                                          int nt) {
    shim_exec s;
    if (exec_make(&s, nt, (int)LLMC_ATTN_WS_FLOATS(T, C / NH), 0) != 0) return -1;
    attention_backward(dqkv, dout, qkv, att, B, T, C, NH, &s.ex);
    exec_free(&s);
    return 0;
}

SHIM_API void llmc_test_gelu_forward(float *out, const float *inp, int64_t N, int nt) {
    gelu_forward(out, inp, (size_t)N, nt);
}

SHIM_API void llmc_test_gelu_backward(float *dinp, const float *inp, const float *dout,
                                      int64_t N, int nt) {
    gelu_backward(dinp, inp, dout, (size_t)N, nt);
}

SHIM_API void llmc_test_residual_forward(float *out, const float *a, const float *b, int64_t N,
                                         int nt) {
    residual_forward(out, a, b, (size_t)N, nt);
}

SHIM_API float llmc_test_crossentropy_forward(float *probs, float *losses, const float *logits,
                                              const int32_t *targets, int N, int V, int Vp,
                                              int nt) {
    return crossentropy_forward(probs, losses, logits, targets, N, V, Vp, nt);
}

SHIM_API void llmc_test_crossentropy_backward(float *dlogits, const float *probs,
                                              const int32_t *targets, float dloss, int N,
                                              int V, int Vp, int nt) {
    crossentropy_backward(dlogits, probs, targets, dloss, N, V, Vp, nt);
}

SHIM_API void llmc_test_adamw(float *param, const float *grad, float *m, float *v, int64_t n,
                              double lr, double beta1, double beta2, double eps,
                              double weight_decay, int t, float grad_scale, int nt) {
    adamw_update(param, grad, m, v, (size_t)n, lr, beta1, beta2, eps, weight_decay, t,
                 grad_scale, nt);
}
