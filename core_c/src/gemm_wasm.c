/* gemm_wasm.c - GEMM micro-kernel of the WebAssembly core: SIMD128, relaxed-SIMD fused
 * multiply-add when the build has it (LLMC_WASM_RELAXED, see core_c/cmake/wasm_module.cmake).
 *
 * It plugs into gemm.c's packed GEMM like the x86 kernels (same packing: A strips of
 * LLMC_WASM_MR rows, k-major; B strips of NR = 32 columns, k-major), so it serves the three
 * matmul shapes (forward, dinp, dweight) and the attention products alike.
 * Register budget: wasm runtimes map v128 values onto the host's 16 SSE/AVX registers, so
 * the MR x 32 tile is done in parts of LLMC_WASM_W vectors (4 W columns): MR x W
 * accumulators, W vectors of the B row, one broadcast of A, all within 16 registers; the A
 * strip is re-read from L1 for each part. Each element is summed over k in order, one
 * multiply-add per k, as the portable kernel does; with relaxed SIMD the multiply-add is
 * fused (one rounding), without it a multiply then an add (two), as ISO C without
 * contraction. */
#include "gemm_wasm.h"

#if defined(__wasm_simd128__)
#include <wasm_simd128.h>

#include "gemm_plan.h"
#include "internal.h"

#define NR LLMC_GEMM_NR
#define MR LLMC_WASM_MR
#define W LLMC_WASM_W

#ifdef LLMC_WASM_RELAXED
#define MADD(a, b, c) __builtin_wasm_relaxed_madd_f32x4((a), (b), (c)) /* a * b + c, fused */
#else
#define MADD(a, b, c) wasm_f32x4_add(wasm_f32x4_mul((a), (b)), (c))
#endif

/* W vectors (4 W columns, from column h) of the MR x NR tile, written to out (row stride
 * ldo), added to what is there when add is set. The loops over r and j have constant
 * bounds and are unrolled fully, so every accumulator is a value of its own, never memory. */
static inline void part_tile(int kc, const float *Ap, const float *Bp, int h, float *out,
                             int64_t ldo, int add) {
    v128_t acc[MR][W];
#pragma clang loop unroll(full)
    for (int r = 0; r < MR; r++)
#pragma clang loop unroll(full)
        for (int j = 0; j < W; j++) acc[r][j] = wasm_f32x4_splat(0.0f);
    for (int k = 0; k < kc; k++) {
        const float *b = Bp + (size_t)k * NR + h;
        v128_t bv[W];
#pragma clang loop unroll(full)
        for (int j = 0; j < W; j++) bv[j] = wasm_v128_load(b + 4 * j);
#pragma clang loop unroll(full)
        for (int r = 0; r < MR; r++) {
            const v128_t a = wasm_v128_load32_splat(Ap + (size_t)k * MR + r);
#pragma clang loop unroll(full)
            for (int j = 0; j < W; j++) acc[r][j] = MADD(a, bv[j], acc[r][j]);
        }
    }
#pragma clang loop unroll(full)
    for (int r = 0; r < MR; r++) {
        float *o = out + r * ldo;
#pragma clang loop unroll(full)
        for (int j = 0; j < W; j++) {
            v128_t v = acc[r][j];
            if (add) v = wasm_f32x4_add(v, wasm_v128_load(o + 4 * j));
            wasm_v128_store(o + 4 * j, v);
        }
    }
}

void llmc_ukernel_wasm(int kc, const float *Ap, const float *Bp, float *C, int64_t ldc, int mr,
                       int nr, float beta) {
    if (mr == MR && nr == NR) { /* a full tile: straight into C */
        for (int h = 0; h < NR; h += 4 * W) part_tile(kc, Ap, Bp, h, C + h, ldc, beta != 0.0f);
        return;
    }
    float tmp[MR * NR]; /* an edge tile: only its valid corner goes to C */
    for (int h = 0; h < NR; h += 4 * W) part_tile(kc, Ap, Bp, h, tmp + h, NR, 0);
    store_tile(tmp, MR, C, ldc, mr, nr, beta);
}
#else
typedef int llmc_gemm_wasm_unused; /* native builds: nothing here (ISO C wants a declaration) */
#endif
