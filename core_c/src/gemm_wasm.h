/* gemm_wasm.h - the WebAssembly core's GEMM micro-kernel (gemm_wasm.c), which gemm.c picks
 * when compiled for wasm with SIMD128. Only declared in wasm builds. */
#ifndef LLMC_GEMM_WASM_H
#define LLMC_GEMM_WASM_H

#include <stdint.h>

#if defined(__wasm_simd128__)
#ifndef LLMC_WASM_MR
#define LLMC_WASM_MR 3 /* rows of the register tile */
#endif
#ifndef LLMC_WASM_W
#define LLMC_WASM_W 4 /* its width in 4-float vectors, a divisor of NR / 4 = 8 */
#endif
#ifdef LLMC_WASM_RELAXED
#define LLMC_WASM_UKERNEL_NAME "wasm-relaxed-simd"
#else
#define LLMC_WASM_UKERNEL_NAME "wasm-simd128"
#endif
void llmc_ukernel_wasm(int kc, const float *Ap, const float *Bp, float *C, int64_t ldc, int mr,
                       int nr, float beta);
#endif

#endif
