/*
 * slow_wrap.c - deliberately slowed kernels, to show that the benchmark gate catches a
 * regression. Never part of the library: pyllmc.bench.cdriver links it into a separate
 * bench_step build only when asked (`python -m pyllmc.bench.gate --slow gelu`), together
 * with the GNU ld option --wrap=SYMBOL, which sends every call that model.c makes to SYMBOL
 * to __wrap_SYMBOL below instead; __real_SYMBOL is the original kernel.
 *
 *   -DLLMC_BENCH_SLOW_GELU     --wrap=gelu_forward: the GELU forward kernel runs twice
 *                              (idempotent: out = gelu(inp) is written twice), i.e. a GELU
 *                              kernel made 2x slower.
 *   -DLLMC_BENCH_SLOW_FORWARD  --wrap=llmc_model_forward: the whole forward pass runs
 *                              twice; relies only on the public API, for when internal
 *                              kernel names change.
 */
#include "internal.h"

#ifdef LLMC_BENCH_SLOW_GELU
void __real_gelu_forward(float *out, const float *inp, size_t N, int nt);
void __wrap_gelu_forward(float *out, const float *inp, size_t N, int nt);
void __wrap_gelu_forward(float *out, const float *inp, size_t N, int nt) {
    __real_gelu_forward(out, inp, N, nt);
    __real_gelu_forward(out, inp, N, nt);
}
#endif

#ifdef LLMC_BENCH_SLOW_FORWARD
int32_t __real_llmc_model_forward(llmc_model *model, const int32_t *inputs,
                                  const int32_t *targets, int32_t B, int32_t T, float *loss);
int32_t __wrap_llmc_model_forward(llmc_model *model, const int32_t *inputs,
                                  const int32_t *targets, int32_t B, int32_t T, float *loss);
int32_t __wrap_llmc_model_forward(llmc_model *model, const int32_t *inputs,
                                  const int32_t *targets, int32_t B, int32_t T, float *loss) {
    int32_t st = __real_llmc_model_forward(model, inputs, targets, B, T, loss);
    if (st != 0) return st;
    return __real_llmc_model_forward(model, inputs, targets, B, T, loss);
}
#endif

/* keep the translation unit non-empty when no slow variant is selected */
int llmc_bench_slow_wrap_unused;
