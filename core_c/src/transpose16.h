/* transpose16.h - 16 x 16 fp32 (or any 32-bit) transposes in AVX-512 registers, for the GEMM
 * packs (gemm.c, gemm_bf16.c). x86-64 only. */
#ifndef LLMC_TRANSPOSE16_H
#define LLMC_TRANSPOSE16_H

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <stdint.h>

/* 16 x 16 transpose in registers: dst row j = src column j. Packing an operand whose
 * contiguous dimension is k (weights in forward, activations as A) is a transpose; done one
 * float at a time it costs several times the bandwidth of the copy itself. */
__attribute__((target("avx512f"))) static inline void transpose16_avx512(const float *src, int64_t ld,
                                                                   float *dst, int64_t ldd) {
    __m512 r[16], a[16], b[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * ld);
    /* 32-bit interleave of row pairs, then 64-bit interleave of pair pairs: b[4q + c] holds,
     * in its 128-bit lane l, column 4l + c of rows 4q .. 4q+3 */
    for (int p = 0; p < 8; p++) {
        a[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
        a[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
    for (int q = 0; q < 4; q++) {
        const __m512d x0 = _mm512_castps_pd(a[4 * q]), x1 = _mm512_castps_pd(a[4 * q + 1]);
        const __m512d x2 = _mm512_castps_pd(a[4 * q + 2]), x3 = _mm512_castps_pd(a[4 * q + 3]);
        b[4 * q + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(x0, x2));
        b[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(x0, x2));
        b[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(x1, x3));
        b[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(x1, x3));
    }
    /* then a 4 x 4 transpose of 128-bit lanes for each c */
    for (int c = 0; c < 4; c++) {
        const __m512 e0 = _mm512_shuffle_f32x4(b[c], b[4 + c], 0x44);
        const __m512 e1 = _mm512_shuffle_f32x4(b[c], b[4 + c], 0xEE);
        const __m512 e2 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], 0x44);
        const __m512 e3 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], 0xEE);
        _mm512_storeu_ps(dst + (c + 0) * ldd, _mm512_shuffle_f32x4(e0, e2, 0x88));
        _mm512_storeu_ps(dst + (c + 4) * ldd, _mm512_shuffle_f32x4(e0, e2, 0xDD));
        _mm512_storeu_ps(dst + (c + 8) * ldd, _mm512_shuffle_f32x4(e1, e3, 0x88));
        _mm512_storeu_ps(dst + (c + 12) * ldd, _mm512_shuffle_f32x4(e1, e3, 0xDD));
    }
}

/* Same transpose, but output row j is split: columns 0-7 to dst0 row j, 8-15 to dst1 row j
 * (two 8-row A strips at once). */
__attribute__((target("avx512f"))) static inline void transpose16_split_avx512(const float *src,
                                                                         int64_t ld, float *dst0,
                                                                         float *dst1,
                                                                         int64_t ldd) {
    float tmp[16 * 16];
    transpose16_avx512(src, ld, tmp, 16);
    for (int j = 0; j < 16; j++) {
        const __m512 v = _mm512_loadu_ps(tmp + 16 * j);
        _mm256_storeu_ps(dst0 + j * ldd, _mm512_castps512_ps256(v));
        _mm256_storeu_ps(dst1 + j * ldd,
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    }
}

#endif
#endif
