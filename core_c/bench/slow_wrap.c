/*
 * slow_wrap.c - deliberately slowed kernels, to show that the benchmark gate catches a
 * regression. Never part of the library: pyllmc.bench.cdriver links it only into the gate's
 * own separate builds (bench_step for callgrind, a libllmc.so for the ratio check) when asked
 * (`python -m pyllmc.bench.gate --slow gelu|matmul`), together with the GNU ld option
 * --wrap=SYMBOL, which sends every call that model.c makes to SYMBOL to __wrap_SYMBOL below
 * instead; __real_SYMBOL is the original kernel. So core_c/src needs no hook at all.
 *
 *   -DLLMC_BENCH_SLOW_GELU=N    --wrap=gelu_forward: the GELU forward kernel does its work
 *                               N times (it is idempotent: out = gelu(inp) is rewritten), a
 *                               GELU kernel made N x slower.
 *   -DLLMC_BENCH_SLOW_MATMUL=N  --wrap=matmul_forward,matmul_backward: every Linear layer,
 *                               forward and backward, does its GEMMs N times (the forward is
 *                               idempotent; the backward accumulates the weight gradient N
 *                               times, which clipping absorbs; only time matters here).
 *
 * The wrappers are declared with __typeof__ of the kernels in internal.h, so if a kernel's
 * signature changes this file stops compiling (the gate reports the build error) instead of
 * calling it wrongly.
 */
#include "internal.h"

#ifdef LLMC_BENCH_SLOW_GELU
__typeof__(gelu_forward) __real_gelu_forward, __wrap_gelu_forward;
void __wrap_gelu_forward(float *out, const float *inp, size_t N, int nt) {
    for (int i = 0; i < (LLMC_BENCH_SLOW_GELU); i++) __real_gelu_forward(out, inp, N, nt);
}
#endif

#ifdef LLMC_BENCH_SLOW_MATMUL
__typeof__(matmul_forward) __real_matmul_forward, __wrap_matmul_forward;
__typeof__(matmul_backward) __real_matmul_backward, __wrap_matmul_backward;
void __wrap_matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                           int N, int IC, int OC, const llmc_exec *ex) {
    for (int i = 0; i < (LLMC_BENCH_SLOW_MATMUL); i++)
        __real_matmul_forward(out, inp, weight, bias, N, IC, OC, ex);
}
void __wrap_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int N, int IC, int OC,
                            const llmc_exec *ex) {
    for (int i = 0; i < (LLMC_BENCH_SLOW_MATMUL); i++)
        __real_matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC, ex);
}
#endif

/* keep the translation unit non-empty when no slow variant is selected */
int llmc_bench_slow_wrap_unused;
