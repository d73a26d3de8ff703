/* gemm_bf16.c - the GEMM of bf16 precision: C (fp32) = beta * C + op(A) @ op(B), every
 * element of A and B rounded to bf16 (round to nearest even, bf16.h), products summed in fp32.
 *
 * The tiling is the fp32 GEMM's (gemm_plan.h, gemm.c describes it); the difference is in the
 * packs and the micro-kernels. The packs read fp32 operands, round them to bf16 and store the
 * depth in PAIRS: one 32-bit word holds the bf16 of depths k (low half) and k + 1 (high half)
 * of a row of A or a column of B, the operand layout of the AVX512_BF16 dot-product
 * instruction (vdpbf16ps: per fp32 lane, acc += a_odd * b_odd, then acc += a_even * b_even,
 * each step rounded like an FMA: a product of two bf16 is exact in fp32). An odd depth is
 * padded with zeros.
 *
 * Kernels, picked at run time: AMX tiles (TDPBF16PS, 32 x 32 blocks of C) where the CPU has
 * AMX-BF16 and the OS grants the tile state; else vdpbf16ps where the CPU has AVX512_BF16
 * and the OS saves the AVX-512 registers (cpuid + xgetbv, below); elsewhere the vdpbf16ps
 * arithmetic spelled as two fp32 FMAs per pair (AVX-512F, AVX2 + FMA, or portable C with
 * fmaf). Those four give the same bits (measured on this machine: 3.2 M random dot-product
 * lanes, no difference; the C unit test and the kernel tests compare them); AMX sums the pairs
 * in another order and agrees with them to fp32 rounding (ukernel16_amx). LLMC_GEMM_ISA=
 * avx512bf16|avx512|avx2|generic forces a lesser kernel, as for fp32.
 */
#define _GNU_SOURCE /* syscall (arch_prctl, for AMX) */
#include "internal.h"

#include "bf16.h"
#include "gemm_plan.h"
#include "transpose16.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LLMC_X86 1
#include <cpuid.h>
#include <immintrin.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

#define NR LLMC_GEMM_NR

typedef void (*kernel16_fn)(int kp, const uint32_t *Ap, const uint32_t *Bp, float *C,
                            int64_t ldc, int mr, int nr, float beta);

/* the fp32 values of the even (low) and odd (high) bf16 of a pair */
static inline float pair_even(uint32_t w) { return llmc_bf16_to_float(w & 0xFFFFu); }
static inline float pair_odd(uint32_t w) { return llmc_bf16_to_float(w >> 16); }

/* Portable kernel: 4 x 32 tile; per pair the odd term first, as vdpbf16ps. fmaf is one
 * rounding per term, like the instruction (a plain a * b + acc would round twice). */
#define MR16_GENERIC 4
#define MR16_ROWS 32 /* strips of A packed by rows, for AMX */
/* A strip for AMX: blocks of 16 pairs, each the 32 rows of the strip x 16 pairs (2 KiB, one
 * tile of rows 0-15 then one of rows 16-31, 64-byte rows). Rows a whole depth apart would put
 * a tile's 16 rows 2 KiB apart (at a 1024 depth), in two L1 sets: conflict misses on every
 * tile load. Word of row r, pair p: */
#define A_ROWS_AT(r, p) ((size_t)((p) / 16) * (MR16_ROWS * 16) + (size_t)(r) * 16 + (size_t)((p) % 16))
#define GENERIC16_BODY                                                                     \
    float acc[MR16_GENERIC][NR];                                                           \
    memset(acc, 0, sizeof(acc));                                                           \
    for (int p = 0; p < kp; p++) {                                                         \
        const uint32_t *b = Bp + (size_t)p * NR, *a = Ap + (size_t)p * MR16_GENERIC;       \
        for (int r = 0; r < MR16_GENERIC; r++) {                                           \
            const float ae = pair_even(a[r]), ao = pair_odd(a[r]);                         \
            for (int c = 0; c < NR; c++)                                                   \
                acc[r][c] = fmaf(ae, pair_even(b[c]), fmaf(ao, pair_odd(b[c]), acc[r][c])); \
        }                                                                                  \
    }                                                                                      \
    store_tile(&acc[0][0], MR16_GENERIC, C, ldc, mr, nr, beta)

static void ukernel16_generic(int kp, const uint32_t *Ap, const uint32_t *Bp, float *C,
                             int64_t ldc, int mr, int nr, float beta) {
    GENERIC16_BODY;
}

#ifdef LLMC_X86
/* the same C, compiled for AVX2 + FMA: fmaf becomes vfmadd and the column loop vectorises */
__attribute__((target("avx2,fma"))) static void
ukernel16_avx2(int kp, const uint32_t *Ap, const uint32_t *Bp, float *C, int64_t ldc, int mr,
              int nr, float beta) {
    GENERIC16_BODY;
}

/* AVX-512 kernels: 8 x 32 tile in 16 zmm accumulators, as the fp32 kernel. */
#define MR16_AVX512 8
#define ROW16_DECL(r) __m512 c##r##a = _mm512_setzero_ps(), c##r##b = _mm512_setzero_ps()
#define ROW16_STORE(r)                                                                     \
    do {                                                                                   \
        float *cr_ = C + (r) * ldc;                                                        \
        if (beta != 0.0f) {                                                                \
            c##r##a = _mm512_add_ps(c##r##a, _mm512_loadu_ps(cr_));                        \
            c##r##b = _mm512_add_ps(c##r##b, _mm512_loadu_ps(cr_ + 16));                   \
        }                                                                                  \
        _mm512_storeu_ps(cr_, c##r##a);                                                    \
        _mm512_storeu_ps(cr_ + 16, c##r##b);                                               \
    } while (0)
#define ROW16_TMP(r)                                                                       \
    do {                                                                                   \
        _mm512_storeu_ps(tmp + (r) * NR, c##r##a);                                         \
        _mm512_storeu_ps(tmp + (r) * NR + 16, c##r##b);                                    \
    } while (0)
#define ROWS16(M) M(0); M(1); M(2); M(3); M(4); M(5); M(6); M(7)
#define KERNEL16_EPILOGUE                                                                  \
    if (mr == MR16_AVX512 && nr == NR) {                                                   \
        ROWS16(ROW16_STORE);                                                               \
        return;                                                                            \
    }                                                                                      \
    float tmp[MR16_AVX512 * NR];                                                           \
    ROWS16(ROW16_TMP);                                                                     \
    store_tile(tmp, MR16_AVX512, C, ldc, mr, nr, beta)

/* AVX-512F without bf16 instructions: a bf16 widens to fp32 by a 16-bit shift (even) or by
 * masking off the low half (odd); two FMAs per pair. */
#define ROW16_FMA(r)                                                                       \
    do {                                                                                   \
        const __m512i a_ = _mm512_set1_epi32((int)Ap[r]);                                  \
        const __m512 ae_ = _mm512_castsi512_ps(_mm512_slli_epi32(a_, 16));                 \
        const __m512 ao_ = _mm512_castsi512_ps(_mm512_and_si512(a_, hi));                  \
        c##r##a = _mm512_fmadd_ps(ae_, b0e, _mm512_fmadd_ps(ao_, b0o, c##r##a));           \
        c##r##b = _mm512_fmadd_ps(ae_, b1e, _mm512_fmadd_ps(ao_, b1o, c##r##b));           \
    } while (0)

__attribute__((target("avx512f"))) static void
ukernel16_avx512(int kp, const uint32_t *Ap, const uint32_t *Bp, float *C, int64_t ldc, int mr,
                int nr, float beta) {
    ROWS16(ROW16_DECL);
    const __m512i hi = _mm512_set1_epi32((int)0xFFFF0000u);
    for (int p = 0; p < kp; p++) {
        const __m512i b0 = _mm512_loadu_si512((const void *)Bp);
        const __m512i b1 = _mm512_loadu_si512((const void *)(Bp + 16));
        const __m512 b0e = _mm512_castsi512_ps(_mm512_slli_epi32(b0, 16));
        const __m512 b0o = _mm512_castsi512_ps(_mm512_and_si512(b0, hi));
        const __m512 b1e = _mm512_castsi512_ps(_mm512_slli_epi32(b1, 16));
        const __m512 b1o = _mm512_castsi512_ps(_mm512_and_si512(b1, hi));
        ROWS16(ROW16_FMA);
        Ap += MR16_AVX512;
        Bp += NR;
    }
    KERNEL16_EPILOGUE;
}

/* AVX512_BF16: one vdpbf16ps per 16 columns and pair, 32 multiply-adds. */
#define ROW16_DOT(r)                                                                       \
    do {                                                                                   \
        const __m512bh a_ = (__m512bh)_mm512_set1_epi32((int)Ap[r]);                       \
        c##r##a = _mm512_dpbf16_ps(c##r##a, a_, b0);                                       \
        c##r##b = _mm512_dpbf16_ps(c##r##b, a_, b1);                                       \
    } while (0)

__attribute__((target("avx512f,avx512bf16"))) static void
ukernel16_avx512bf16(int kp, const uint32_t *Ap, const uint32_t *Bp, float *C, int64_t ldc,
                    int mr, int nr, float beta) {
    ROWS16(ROW16_DECL);
    for (int r = 0; r < mr; r++) { /* the C tile, in L1 by the time the sums are added */
        _mm_prefetch((const char *)(C + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(C + r * ldc + nr - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int p = 0; p < kp; p++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)Bp);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(Bp + 16));
        ROWS16(ROW16_DOT);
        Ap += MR16_AVX512;
        Bp += NR;
    }
    KERNEL16_EPILOGUE;
}

/* AVX512_BF16 usable: the CPU has AVX-512F and AVX512_BF16 (cpuid leaf 7) and the OS saves
 * the opmask and all 512-bit registers on a context switch (XCR0 bits 1, 2, 5, 6, 7, read
 * with xgetbv once OSXSAVE says it may be). Otherwise the instruction would fault. */
static int cpu_has_avx512bf16(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE */
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    (void)xhi;
    if ((xlo & 0xE6u) != 0xE6u) return 0;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(b & (1u << 16))) return 0; /* AVX512F */
    __cpuid_count(7, 1, a, b, c, d);
    return (a >> 5) & 1u; /* AVX512_BF16 */
}

/* AMX (tile registers, TDPBF16PS): a 32 x 32 block of C in four 16 x 16 fp32 tiles, A in two
 * 16-row tiles of 16 pairs (rows of A contiguous in depth: pack_a16_rows), B in two tiles of
 * 16 pairs x 16 columns, read straight from the pair-packed B strip (128-byte rows). The
 * depth is padded with zero pairs to a multiple of 16. TDPBF16PS sums each pair in fp32 but
 * not in vdpbf16ps's order (measured: its results differ from the emulation in the last bit
 * for about 2 in 3 elements, within 6.3 x 2^-24 of the sum of |products| for 32 terms), so
 * results on an AMX machine match the other kernels to fp32 rounding, not bitwise. */
#define MR16_AMX 32
typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_tilecfg;

/* eight 16 x 64-byte tiles; the configuration is per thread and is loaded per C tile task */
__attribute__((target("amx-tile"))) static void amx_configure(void) {
    amx_tilecfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    /* GCC 12 does not see that ldtilecfg reads cfg and dropped the stores above */
    __asm__ __volatile__("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

__attribute__((target("amx-tile"))) static void amx_release(void) { _tile_release(); }

__attribute__((target("amx-tile,amx-bf16"))) static void
ukernel16_amx(int kpp, const uint32_t *Ap, const uint32_t *Bp, float *C, int64_t ldc, int mr, int nr,
              float beta) {
    float tmp[MR16_AMX * NR];
    const int full = mr == MR16_AMX && nr == NR;
    float *dst = full ? C : tmp;
    const int64_t ld = full ? ldc : NR, stride = ld * (int64_t)sizeof(float);
    if (full && beta != 0.0f) {
        _tile_loadd(0, dst, stride);
        _tile_loadd(1, dst + 16, stride);
        _tile_loadd(2, dst + 16 * ld, stride);
        _tile_loadd(3, dst + 16 * ld + 16, stride);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int p = 0; p < kpp; p += 16) {
        const uint32_t *ablk = Ap + (size_t)p * MR16_ROWS; /* 32 rows x 16 pairs, 2 KiB */
        /* the next A block into L1 while this one computes: the strip is read once per call,
         * from L2, and the tile loads stall on it (B strips are reused by the row loop and
         * are in cache; prefetching them gained nothing) */
        if (p + 16 < kpp) {
            const char *next = (const char *)(ablk + 16 * MR16_ROWS);
            for (int l = 0; l < 2048; l += 64) _mm_prefetch(next + l, _MM_HINT_T0);
        }
        _tile_loadd(4, ablk, 64);
        _tile_loadd(5, ablk + 16 * 16, 64);
        _tile_loadd(6, Bp + (size_t)p * NR, NR * 4);
        _tile_loadd(7, Bp + (size_t)p * NR + 16, NR * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, dst, stride);
    _tile_stored(1, dst + 16, stride);
    _tile_stored(2, dst + 16 * ld, stride);
    _tile_stored(3, dst + 16 * ld + 16, stride);
    if (!full) store_tile(tmp, MR16_AMX, C, ldc, mr, nr, beta);
}

/* AMX usable: AMX-TILE and AMX-BF16 (cpuid leaf 7 EDX bits 24, 22), the OS manages the tile
 * state (XCR0 bits 17, 18) and, on Linux, grants this process the 8 KiB tile data state
 * (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA: without it the first tile instruction
 * faults). Elsewhere: no AMX. */
static int cpu_has_amx_bf16(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    (void)xhi;
    if (((xlo >> 17) & 3u) != 3u) return 0;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(d & (1u << 22)) || !(d & (1u << 24))) return 0;
#if defined(__linux__) && defined(SYS_arch_prctl)
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return 0;
#endif
}
#endif

typedef struct {
    kernel16_fn fn;
    int mr;
    const char *name;
    int avx512_pack; /* the packs may use AVX-512 */
    int amx;         /* AMX: A packed by rows (pack_a16_rows), depth padded to 16 pairs */
} kernel16;

/* The best bf16 kernel of this CPU, or the one LLMC_GEMM_ISA allows (read at every call, as
 * the fp32 GEMM does, so tests can switch kernels in one process). */
static kernel16 pick_kernel16(void) {
    kernel16 k = {ukernel16_generic, MR16_GENERIC, "generic", 0, 0};
#ifdef LLMC_X86
    static int has_dot = -1, has_amx = -1; /* cpuid once; every thread finds the same */
    if (__atomic_load_n(&has_dot, __ATOMIC_RELAXED) < 0)
        __atomic_store_n(&has_dot, cpu_has_avx512bf16(), __ATOMIC_RELAXED);
    const char *force = getenv("LLMC_GEMM_ISA");
    const int allow_amx = !force || !strcmp(force, "amx");
    if (allow_amx && __atomic_load_n(&has_amx, __ATOMIC_RELAXED) < 0)
        __atomic_store_n(&has_amx, cpu_has_amx_bf16(), __ATOMIC_RELAXED);
    const int allow_dot = allow_amx || !strcmp(force, "avx512bf16");
    const int allow512 = allow_dot || !strcmp(force, "avx512");
    const int allow2 = allow512 || !strcmp(force, "avx2");
    __builtin_cpu_init();
    if (allow_amx && __atomic_load_n(&has_amx, __ATOMIC_RELAXED) == 1) {
        k.fn = ukernel16_amx; k.mr = MR16_AMX; k.name = "amx"; k.avx512_pack = 1; k.amx = 1;
    } else if (allow_dot && __atomic_load_n(&has_dot, __ATOMIC_RELAXED) == 1) {
        k.fn = ukernel16_avx512bf16; k.mr = MR16_AVX512; k.name = "avx512bf16"; k.avx512_pack = 1;
    } else if (allow512 && __builtin_cpu_supports("avx512f")) {
        k.fn = ukernel16_avx512; k.mr = MR16_AVX512; k.name = "avx512"; k.avx512_pack = 1;
    } else if (allow2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        k.fn = ukernel16_avx2; k.mr = MR16_GENERIC; k.name = "avx2";
    }
#endif
    return k;
}

const char *llmc_gemm_bf16_isa(void) { return pick_kernel16().name; }

#ifdef LLMC_X86
/* AVX-512 packs: the bulk of every operand layout, 16 lanes at a time; the rest (ragged
 * edges) is left to the portable packs below. The rounding is bf16.h's, lane-wise. */
__attribute__((target("avx512f"))) static inline __m512i bf16_lanes(__m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i mag = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));
    const __m512i top = _mm512_srli_epi32(u, 16);
    const __m512i odd = _mm512_and_si512(top, _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), odd)), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(mag, _mm512_set1_epi32(0x7F800000));
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(top, _mm512_set1_epi32(0x0040)));
    const __mmask16 tiny = _mm512_cmplt_epu32_mask(mag, _mm512_set1_epi32(0x00800000));
    return _mm512_mask_mov_epi32(r, tiny, _mm512_and_si512(top, _mm512_set1_epi32(0x8000)));
}

/* pairs of two rows: lane i = (e[i], o[i]) */
__attribute__((target("avx512f"))) static inline __m512i pairs_of_rows(const float *e, const float *o) {
    return _mm512_or_si512(bf16_lanes(_mm512_loadu_ps(e)), _mm512_slli_epi32(bf16_lanes(_mm512_loadu_ps(o)), 16));
}

/* pairs along one row: lane i = (src[2i], src[2i + 1]), 32 floats in */
__attribute__((target("avx512f"))) static inline __m512i pairs_in_row(const float *src) {
    const __m256i lo = _mm512_cvtepi32_epi16(bf16_lanes(_mm512_loadu_ps(src)));
    const __m256i hi = _mm512_cvtepi32_epi16(bf16_lanes(_mm512_loadu_ps(src + 16)));
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* A in 8-row strips, 16 rows (two strips) at a time; returns the rows done */
__attribute__((target("avx512f"))) static int pack_a16_avx512(uint32_t *Ap, int transA, const float *A,
                                                              int64_t lda, int m0, int k0, int mc, int kc) {
    const int kp = (kc + 1) / 2, kfull = kc / 2;
    int s = 0;
    for (; s + 16 <= mc; s += 16) {
        uint32_t *d0 = Ap + (size_t)s * kp, *d1 = Ap + (size_t)(s + 8) * kp;
        if (transA) { /* rows of A are depths: 16 contiguous m per row pair */
            for (int p = 0; p < kp; p++) {
                const float *e = A + (int64_t)(k0 + 2 * p) * lda + m0 + s;
                const __m512i v = p < kfull ? pairs_of_rows(e, e + lda) : bf16_lanes(_mm512_loadu_ps(e));
                _mm256_storeu_si256((__m256i *)(d0 + (size_t)p * 8), _mm512_castsi512_si256(v));
                _mm256_storeu_si256((__m256i *)(d1 + (size_t)p * 8), _mm512_extracti64x4_epi64(v, 1));
            }
        } else { /* depth contiguous: 16 rows x 16 pairs, transposed */
            const int p16 = kfull / 16 * 16;
            uint32_t tmp[16 * 16];
            for (int p = 0; p < p16; p += 16) {
                for (int r = 0; r < 16; r++)
                    _mm512_storeu_si512((void *)(tmp + 16 * r),
                                        pairs_in_row(A + (int64_t)(m0 + s + r) * lda + k0 + 2 * p));
                transpose16_split_avx512((const float *)tmp, 16, (float *)(d0 + (size_t)p * 8),
                                         (float *)(d1 + (size_t)p * 8), 8);
            }
            for (int r = 0; r < 16; r++) {
                const float *src = A + (int64_t)(m0 + s + r) * lda + k0;
                uint32_t *d = (r < 8 ? d0 : d1) + (r & 7);
                for (int p = p16; p < kfull; p++) d[(size_t)p * 8] = llmc_bf16_pair(src[2 * p], src[2 * p + 1]);
                if (kp > kfull) d[(size_t)kfull * 8] = llmc_bf16_bits(src[kc - 1]);
            }
        }
    }
    return s;
}

/* B in full 32-column strips; returns the columns done */
__attribute__((target("avx512f"))) static int pack_b16_avx512(uint32_t *Bp, int transB, const float *B,
                                                              int64_t ldb, int k0, int n0, int kc, int nc,
                                                              int kpp) {
    const int kp = (kc + 1) / 2, kfull = kc / 2;
    int s = 0;
    for (; s + NR <= nc; s += NR) {
        uint32_t *dst = Bp + (size_t)s * kpp;
        for (int p = kp; p < kpp; p++) /* zero pairs up to the padded depth (AMX) */
            for (int c = 0; c < NR; c++) dst[(size_t)p * NR + c] = 0;
        if (!transB) { /* rows of B are depths: pair two rows, 32 columns */
            for (int p = 0; p < kp; p++) {
                const float *e = B + (int64_t)(k0 + 2 * p) * ldb + n0 + s;
                uint32_t *d = dst + (size_t)p * NR;
                if (p < kfull) {
                    _mm512_storeu_si512((void *)d, pairs_of_rows(e, e + ldb));
                    _mm512_storeu_si512((void *)(d + 16), pairs_of_rows(e + 16, e + 16 + ldb));
                } else {
                    _mm512_storeu_si512((void *)d, bf16_lanes(_mm512_loadu_ps(e)));
                    _mm512_storeu_si512((void *)(d + 16), bf16_lanes(_mm512_loadu_ps(e + 16)));
                }
            }
        } else { /* depth contiguous: per 16 columns, 16 x 16 pairs transposed */
            const int p16 = kfull / 16 * 16;
            uint32_t tmp[16 * 16];
            for (int g = 0; g < NR; g += 16) {
                for (int p = 0; p < p16; p += 16) {
                    for (int c = 0; c < 16; c++)
                        _mm512_storeu_si512((void *)(tmp + 16 * c),
                                            pairs_in_row(B + (int64_t)(n0 + s + g + c) * ldb + k0 + 2 * p));
                    transpose16_avx512((const float *)tmp, 16, (float *)(dst + (size_t)p * NR + g), NR);
                }
                for (int c = 0; c < 16; c++) {
                    const float *src = B + (int64_t)(n0 + s + g + c) * ldb + k0;
                    for (int p = p16; p < kfull; p++)
                        dst[(size_t)p * NR + g + c] = llmc_bf16_pair(src[2 * p], src[2 * p + 1]);
                    if (kp > kfull) dst[(size_t)kfull * NR + g + c] = llmc_bf16_bits(src[kc - 1]);
                }
            }
        }
    }
    return s;
}

/* B given as bf16 bits (the kept weight copy), in full 32-column strips; returns the columns
 * done. No rounding left to do: pairing two rows is a widening and an or, and when the depth
 * is contiguous the pairs already are 32-bit words, so the pack is the 16 x 16 transpose. */
__attribute__((target("avx512f"))) static int pack_b16_from16_avx512(uint32_t *Bp, int transB,
                                                                     const uint16_t *B, int64_t ldb,
                                                                     int k0, int n0, int kc, int nc,
                                                                     int kpp) {
    const int kp = (kc + 1) / 2, kfull = kc / 2;
    if (transB && (ldb & 1)) return 0; /* odd rows: the pairs are not 32-bit words */
    int s = 0;
    for (; s + NR <= nc; s += NR) {
        uint32_t *dst = Bp + (size_t)s * kpp;
        for (int p = kp; p < kpp; p++) /* zero pairs up to the padded depth (AMX) */
            for (int c = 0; c < NR; c++) dst[(size_t)p * NR + c] = 0;
        if (!transB) { /* rows of B are depths: interleave two rows, 32 columns */
            for (int p = 0; p < kp; p++) {
                const uint16_t *e = B + (int64_t)(k0 + 2 * p) * ldb + n0 + s;
                uint32_t *d = dst + (size_t)p * NR;
                for (int h = 0; h < NR; h += 16) {
                    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(e + h)));
                    if (p < kfull)
                        w = _mm512_or_si512(w, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(
                                                                     (const __m256i *)(e + ldb + h))), 16));
                    _mm512_storeu_si512((void *)(d + h), w);
                }
            }
        } else { /* depth contiguous: per 16 columns, 16 x 16 pairs transposed */
            const int p16 = kfull / 16 * 16;
            for (int g = 0; g < NR; g += 16) {
                const uint16_t *src0 = B + (int64_t)(n0 + s + g) * ldb + k0;
                for (int p = 0; p < p16; p += 16)
                    transpose16_avx512((const float *)(const void *)(src0 + 2 * p), ldb / 2,
                                       (float *)(dst + (size_t)p * NR + g), NR);
                for (int c = 0; c < 16; c++) {
                    const uint16_t *src = src0 + (int64_t)c * ldb;
                    for (int p = p16; p < kfull; p++)
                        dst[(size_t)p * NR + g + c] = (uint32_t)src[2 * p] | ((uint32_t)src[2 * p + 1] << 16);
                    if (kp > kfull) dst[(size_t)kfull * NR + g + c] = src[kc - 1];
                }
            }
        }
    }
    return s;
}

/* A for AMX, rows contiguous in depth: of one 32-row strip, the rows [0, rows) it can do 16
 * at a time with full 16-pair blocks; returns the rows done (the rest: pack_a16_rows) */
__attribute__((target("avx512f"))) static int pack_a16_rows_avx512(uint32_t *dst, int transA,
                                                                   const float *A, int64_t lda, int m0,
                                                                   int k0, int rows, int kc, int kpp) {
    const int kp = (kc + 1) / 2, kfull = kc / 2, p16 = kfull / 16 * 16;
    int r = 0;
    for (; r + 16 <= rows; r += 16) {
        uint32_t tmp[16 * 16];
        for (int p = 0; p < p16; p += 16) {
            if (!transA) { /* one row: 32 floats -> 16 pairs, already in place */
                for (int i = 0; i < 16; i++)
                    _mm512_storeu_si512((void *)(dst + A_ROWS_AT(r + i, p)),
                                        pairs_in_row(A + (int64_t)(m0 + r + i) * lda + k0 + 2 * p));
            } else { /* pairs of rows of A give 16 rows of one pair: transpose 16 x 16 */
                for (int j = 0; j < 16; j++) {
                    const float *e = A + (int64_t)(k0 + 2 * (p + j)) * lda + m0 + r;
                    _mm512_storeu_si512((void *)(tmp + 16 * j), pairs_of_rows(e, e + lda));
                }
                transpose16_avx512((const float *)tmp, 16, (float *)(dst + A_ROWS_AT(r, p)), 16);
            }
        }
        for (int i = 0; i < 16; i++) { /* the ragged end of the depth, and the padding */
            uint32_t *d = dst + A_ROWS_AT(r + i, 0);
            for (int p = p16; p < kfull; p++)
                d[A_ROWS_AT(0, p)] = transA ? llmc_bf16_pair(A[(int64_t)(k0 + 2 * p) * lda + m0 + r + i],
                                               A[(int64_t)(k0 + 2 * p + 1) * lda + m0 + r + i])
                              : llmc_bf16_pair(A[(int64_t)(m0 + r + i) * lda + k0 + 2 * p],
                                               A[(int64_t)(m0 + r + i) * lda + k0 + 2 * p + 1]);
            int p = kfull;
            if (kp > kfull)
                d[A_ROWS_AT(0, p)] = llmc_bf16_bits(transA ? A[(int64_t)(k0 + kc - 1) * lda + m0 + r + i]
                                                             : A[(int64_t)(m0 + r + i) * lda + k0 + kc - 1]);
            if (kp > kfull) p++;
            for (; p < kpp; p++) d[A_ROWS_AT(0, p)] = 0;
        }
    }
    return r;
}
#endif

/* Pack rows [0, mc) x depth [0, kc) of op(A), rounded to bf16, into strips of mr rows:
 * Ap[s][p][r] = the pair of depths 2p, 2p + 1 of row r of strip s. */
LLMC_CLONES static void pack_a16(uint32_t *Ap, int transA, const float *A, int64_t lda, int m0,
                                 int k0, int mc, int kc, int mr, int fast) {
    const int kp = (kc + 1) / 2, kfull = kc / 2;
    int s0 = 0;
#ifdef LLMC_X86
    if (fast && mr == 8) s0 = pack_a16_avx512(Ap, transA, A, lda, m0, k0, mc, kc);
#else
    (void)fast;
#endif
    for (int s = s0; s < mc; s += mr) {
        const int rows = mc - s < mr ? mc - s : mr;
        uint32_t *dst = Ap + (size_t)s * kp;
        if (transA) { /* depth is the row index of A: pair two rows */
            for (int p = 0; p < kp; p++) {
                const float *e = A + (int64_t)(k0 + 2 * p) * lda + m0 + s;
                uint32_t *d = dst + (size_t)p * mr;
                if (p < kfull) {
                    const float *o = e + lda;
                    for (int r = 0; r < rows; r++) d[r] = llmc_bf16_pair(e[r], o[r]);
                } else {
                    for (int r = 0; r < rows; r++) d[r] = llmc_bf16_bits(e[r]);
                }
                for (int r = rows; r < mr; r++) d[r] = 0;
            }
        } else { /* depth is contiguous: neighbours pair */
            for (int r = 0; r < rows; r++) {
                const float *src = A + (int64_t)(m0 + s + r) * lda + k0;
                for (int p = 0; p < kfull; p++)
                    dst[(size_t)p * mr + r] = llmc_bf16_pair(src[2 * p], src[2 * p + 1]);
                if (kp > kfull) dst[(size_t)kfull * mr + r] = llmc_bf16_bits(src[kc - 1]);
            }
            for (int r = rows; r < mr; r++)
                for (int p = 0; p < kp; p++) dst[(size_t)p * mr + r] = 0;
        }
    }
}

/* Pack depth [0, kc) x columns [0, nc) of op(B), rounded to bf16, into strips of NR columns:
 * Bp[s][p][c] = the pair of depths 2p, 2p + 1 of column c of strip s, p < kpp (pairs past
 * the depth, up to the padded kpp, are zero). */
LLMC_CLONES static void pack_b16(uint32_t *Bp, int transB, const float *B, int64_t ldb, int k0,
                                 int n0, int kc, int nc, int fast, int kpp) {
    const int kp = (kc + 1) / 2, kfull = kc / 2;
    int s0 = 0;
#ifdef LLMC_X86
    if (fast) s0 = pack_b16_avx512(Bp, transB, B, ldb, k0, n0, kc, nc, kpp);
#else
    (void)fast;
#endif
    for (int s = s0; s < nc; s += NR) {
        const int cols = nc - s < NR ? nc - s : NR;
        uint32_t *dst = Bp + (size_t)s * kpp;
        for (int p = kp; p < kpp; p++) /* zero pairs up to the padded depth (AMX) */
            for (int c = 0; c < NR; c++) dst[(size_t)p * NR + c] = 0;
        if (!transB) { /* depth is the row index of B: pair two rows */
            for (int p = 0; p < kp; p++) {
                const float *e = B + (int64_t)(k0 + 2 * p) * ldb + n0 + s;
                uint32_t *d = dst + (size_t)p * NR;
                if (p < kfull) {
                    const float *o = e + ldb;
                    for (int c = 0; c < cols; c++) d[c] = llmc_bf16_pair(e[c], o[c]);
                } else {
                    for (int c = 0; c < cols; c++) d[c] = llmc_bf16_bits(e[c]);
                }
                for (int c = cols; c < NR; c++) d[c] = 0;
            }
        } else { /* depth is contiguous: neighbours pair */
            for (int c = 0; c < cols; c++) {
                const float *src = B + (int64_t)(n0 + s + c) * ldb + k0;
                for (int p = 0; p < kfull; p++)
                    dst[(size_t)p * NR + c] = llmc_bf16_pair(src[2 * p], src[2 * p + 1]);
                if (kp > kfull) dst[(size_t)kfull * NR + c] = llmc_bf16_bits(src[kc - 1]);
            }
            for (int c = cols; c < NR; c++)
                for (int p = 0; p < kp; p++) dst[(size_t)p * NR + c] = 0;
        }
    }
}

/* pack_b16 of a B given as bf16 bits: the same layout, no rounding */
LLMC_CLONES static void pack_b16_from16(uint32_t *Bp, int transB, const uint16_t *B, int64_t ldb,
                                        int k0, int n0, int kc, int nc, int fast, int kpp) {
    const int kp = (kc + 1) / 2, kfull = kc / 2;
    int s0 = 0;
#ifdef LLMC_X86
    if (fast) s0 = pack_b16_from16_avx512(Bp, transB, B, ldb, k0, n0, kc, nc, kpp);
#else
    (void)fast;
#endif
    for (int s = s0; s < nc; s += NR) {
        const int cols = nc - s < NR ? nc - s : NR;
        uint32_t *dst = Bp + (size_t)s * kpp;
        for (int p = kp; p < kpp; p++)
            for (int c = 0; c < NR; c++) dst[(size_t)p * NR + c] = 0;
        if (!transB) { /* depth is the row index of B: interleave two rows */
            for (int p = 0; p < kp; p++) {
                const uint16_t *e = B + (int64_t)(k0 + 2 * p) * ldb + n0 + s;
                uint32_t *d = dst + (size_t)p * NR;
                if (p < kfull) {
                    const uint16_t *o = e + ldb;
                    for (int c = 0; c < cols; c++) d[c] = (uint32_t)e[c] | ((uint32_t)o[c] << 16);
                } else {
                    for (int c = 0; c < cols; c++) d[c] = e[c];
                }
                for (int c = cols; c < NR; c++) d[c] = 0;
            }
        } else { /* depth is contiguous: neighbours pair */
            for (int c = 0; c < cols; c++) {
                const uint16_t *src = B + (int64_t)(n0 + s + c) * ldb + k0;
                for (int p = 0; p < kfull; p++)
                    dst[(size_t)p * NR + c] = (uint32_t)src[2 * p] | ((uint32_t)src[2 * p + 1] << 16);
                if (kp > kfull) dst[(size_t)kfull * NR + c] = src[kc - 1];
            }
            for (int c = cols; c < NR; c++)
                for (int p = 0; p < kp; p++) dst[(size_t)p * NR + c] = 0;
        }
    }
}

/* B of the GEMM, fp32 (rounded here) or bf16 bits (B16 non-NULL) */
static void pack_b_any(uint32_t *Bp, int transB, const float *B, const uint16_t *B16, int64_t ldb,
                       int k0, int n0, int kc, int nc, int fast, int kpp) {
    if (B16)
        pack_b16_from16(Bp, transB, B16, ldb, k0, n0, kc, nc, fast, kpp);
    else
        pack_b16(Bp, transB, B, ldb, k0, n0, kc, nc, fast, kpp);
}

/* Pack rows [0, mc) x depth [0, kc) of op(A), rounded to bf16, for AMX: strips of 32 rows,
 * each row its kpp pairs contiguous, Ap[s][r][p] (zero past the depth and the rows). */
LLMC_CLONES static void pack_a16_rows(uint32_t *Ap, int transA, const float *A, int64_t lda, int m0,
                                      int k0, int mc, int kc, int kpp) {
    const int kp = (kc + 1) / 2, kfull = kc / 2;
    for (int s = 0; s < mc; s += MR16_ROWS) {
        const int rows = mc - s < MR16_ROWS ? mc - s : MR16_ROWS;
        uint32_t *dst = Ap + (size_t)s * kpp;
        int r0 = 0;
#ifdef LLMC_X86
        r0 = pack_a16_rows_avx512(dst, transA, A, lda, m0 + s, k0, rows, kc, kpp);
#endif
        for (int r = r0; r < MR16_ROWS; r++) {
            uint32_t *d = dst + A_ROWS_AT(r, 0);
            int p = 0;
            if (r < rows && !transA) {
                const float *src = A + (int64_t)(m0 + s + r) * lda + k0;
                for (; p < kfull; p++) d[A_ROWS_AT(0, p)] = llmc_bf16_pair(src[2 * p], src[2 * p + 1]);
                if (kp > kfull) d[A_ROWS_AT(0, p)] = llmc_bf16_bits(src[kc - 1]), p++;
            } else if (r < rows) {
                const float *src = A + (int64_t)k0 * lda + m0 + s + r;
                for (; p < kfull; p++)
                    d[A_ROWS_AT(0, p)] =
                        llmc_bf16_pair(src[(int64_t)(2 * p) * lda], src[(int64_t)(2 * p + 1) * lda]);
                if (kp > kfull) d[A_ROWS_AT(0, p)] = llmc_bf16_bits(src[(int64_t)(kc - 1) * lda]), p++;
            }
            for (; p < kpp; p++) d[A_ROWS_AT(0, p)] = 0;
        }
    }
}

/* A given as bf16 bits (the activations a bf16 model keeps in bf16, model.c): the packs of
 * pack_a16 and pack_a16_rows in the same layouts, no rounding left to do. When the depth is
 * contiguous (transA = 0, the forward's activations) two neighbouring bf16 already are the
 * 32-bit pair word; read as such through memcpy (rows may start at any 2-byte boundary). */
static inline uint32_t word16_at(const uint16_t *src) {
    uint32_t w;
    memcpy(&w, src, sizeof(w));
    return w;
}

#ifdef LLMC_X86
/* A given as bf16 bits in 8-row strips, the depth contiguous (transA = 0), 16 rows (two
 * strips) at a time: the pairs are 32-bit words already, so the pack is the 16 x 16 transpose
 * (as pack_b16_from16_avx512's). Rows an odd number of bf16 apart are left to the portable
 * pack (their pairs are not 32-bit words). Returns the rows done. */
__attribute__((target("avx512f"))) static int pack_a16_from16_avx512(uint32_t *Ap, const uint16_t *A,
                                                                     int64_t lda, int m0, int k0,
                                                                     int mc, int kc) {
    const int kp = (kc + 1) / 2, kfull = kc / 2, p16 = kfull / 16 * 16;
    if (lda & 1) return 0;
    int s = 0;
    for (; s + 16 <= mc; s += 16) {
        uint32_t *d0 = Ap + (size_t)s * kp, *d1 = Ap + (size_t)(s + 8) * kp;
        const uint16_t *src0 = A + (int64_t)(m0 + s) * lda + k0;
        for (int p = 0; p < p16; p += 16)
            transpose16_split_avx512((const float *)(const void *)(src0 + 2 * p), lda / 2,
                                     (float *)(d0 + (size_t)p * 8), (float *)(d1 + (size_t)p * 8), 8);
        for (int r = 0; r < 16; r++) {
            const uint16_t *src = src0 + (int64_t)r * lda;
            uint32_t *d = (r < 8 ? d0 : d1) + (r & 7);
            for (int p = p16; p < kfull; p++) d[(size_t)p * 8] = word16_at(src + 2 * p);
            if (kp > kfull) d[(size_t)kfull * 8] = src[kc - 1];
        }
    }
    return s;
}
#endif

/* pack_a16 from bf16 bits: strips of mr rows, Ap[s][p][r] */
LLMC_CLONES static void pack_a16_from16(uint32_t *Ap, int transA, const uint16_t *A, int64_t lda,
                                        int m0, int k0, int mc, int kc, int mr, int fast) {
    const int kp = (kc + 1) / 2, kfull = kc / 2;
    int s0 = 0;
#ifdef LLMC_X86
    if (fast && mr == 8 && !transA) s0 = pack_a16_from16_avx512(Ap, A, lda, m0, k0, mc, kc);
#else
    (void)fast;
#endif
    for (int s = s0; s < mc; s += mr) {
        const int rows = mc - s < mr ? mc - s : mr;
        uint32_t *dst = Ap + (size_t)s * kp;
        if (transA) { /* depth is the row index of A: interleave two rows */
            for (int p = 0; p < kp; p++) {
                const uint16_t *e = A + (int64_t)(k0 + 2 * p) * lda + m0 + s;
                uint32_t *d = dst + (size_t)p * mr;
                if (p < kfull) {
                    const uint16_t *o = e + lda;
                    for (int r = 0; r < rows; r++) d[r] = (uint32_t)e[r] | ((uint32_t)o[r] << 16);
                } else {
                    for (int r = 0; r < rows; r++) d[r] = e[r];
                }
                for (int r = rows; r < mr; r++) d[r] = 0;
            }
        } else { /* depth contiguous: the pairs are words of the row */
            for (int r = 0; r < rows; r++) {
                const uint16_t *src = A + (int64_t)(m0 + s + r) * lda + k0;
                for (int p = 0; p < kfull; p++) dst[(size_t)p * mr + r] = word16_at(src + 2 * p);
                if (kp > kfull) dst[(size_t)kfull * mr + r] = src[kc - 1];
            }
            for (int r = rows; r < mr; r++)
                for (int p = 0; p < kp; p++) dst[(size_t)p * mr + r] = 0;
        }
    }
}

/* pack_a16_rows from bf16 bits (AMX): strips of 32 rows in A_ROWS_AT blocks of 16 pairs */
LLMC_CLONES static void pack_a16_rows_from16(uint32_t *Ap, int transA, const uint16_t *A,
                                             int64_t lda, int m0, int k0, int mc, int kc, int kpp) {
    const int kp = (kc + 1) / 2, kfull = kc / 2, p16 = kfull / 16 * 16;
    for (int s = 0; s < mc; s += MR16_ROWS) {
        const int rows = mc - s < MR16_ROWS ? mc - s : MR16_ROWS;
        uint32_t *dst = Ap + (size_t)s * kpp;
        for (int r = 0; r < MR16_ROWS; r++) {
            uint32_t *d = dst + A_ROWS_AT(r, 0);
            int p = 0;
            if (r < rows && !transA) {
                const uint16_t *src = A + (int64_t)(m0 + s + r) * lda + k0;
                for (; p < p16; p += 16) /* a block's 16 pairs of a row: 32 bf16, in place */
                    memcpy(d + A_ROWS_AT(0, p), src + 2 * p, 16 * sizeof(uint32_t));
                for (; p < kfull; p++) d[A_ROWS_AT(0, p)] = word16_at(src + 2 * p);
                if (kp > kfull) d[A_ROWS_AT(0, p)] = src[kc - 1], p++;
            } else if (r < rows) {
                const uint16_t *src = A + (int64_t)k0 * lda + m0 + s + r;
                for (; p < kfull; p++)
                    d[A_ROWS_AT(0, p)] = (uint32_t)src[(int64_t)(2 * p) * lda] |
                                         ((uint32_t)src[(int64_t)(2 * p + 1) * lda] << 16);
                if (kp > kfull) d[A_ROWS_AT(0, p)] = src[(int64_t)(kc - 1) * lda], p++;
            }
            for (; p < kpp; p++) d[A_ROWS_AT(0, p)] = 0;
        }
    }
}

/* A of the GEMM for kernel uk, fp32 (rounded here) or bf16 bits (A16 non-NULL) */
static inline void pack_a_any(uint32_t *Ap, const kernel16 *uk, int transA, const float *A,
                       const uint16_t *A16, int64_t lda, int m0, int k0, int mc, int kc, int kpp) {
    if (A16 && uk->amx)
        pack_a16_rows_from16(Ap, transA, A16, lda, m0, k0, mc, kc, kpp);
    else if (A16)
        pack_a16_from16(Ap, transA, A16, lda, m0, k0, mc, kc, uk->mr, uk->avx512_pack);
    else if (uk->amx)
        pack_a16_rows(Ap, transA, A, lda, m0, k0, mc, kc, kpp);
    else
        pack_a16(Ap, transA, A, lda, m0, k0, mc, kc, uk->mr, uk->avx512_pack);
}

/* pairs per packed row or column of a panel kc deep: (kc + 1) / 2, for AMX padded to 16 */
static inline int panel_pairs(const kernel16 *uk, int kc) {
    return uk->amx ? (kc + 31) / 32 * 16 : (kc + 1) / 2;
}

/* strip n0 of panel k0 of op(B) (K x N), packed into its place among all the panels (every
 * panel but the last KC16 deep, its strips Nr columns in all): gemm16's shared pre-pack of B
 * and llmc_gemm_bf16_pack_b */
static void pack_b_panel_strip(uint32_t *panels, const kernel16 *uk, int KC16, int transB,
                               const float *B, const uint16_t *B16, int64_t ldb, int K, int N,
                               int k0, int n0) {
    const int kc = K - k0 < KC16 ? K - k0 : KC16, kpp = panel_pairs(uk, kc);
    const int Nr = (N + NR - 1) / NR * NR, cols = N - n0 < NR ? N - n0 : NR;
    pack_b_any(panels + (size_t)Nr * (k0 / 2) + (size_t)n0 * kpp, transB, B, B16, ldb, k0, n0, kc,
               cols, uk->avx512_pack, kpp);
}

/* the driver: A and B each in fp32 or, with A16 / B16, as bf16 bits; or B packed already
 * (pb: llmc_gemm_bf16_pack_b, whose panels may be deeper and wider than this product's) */
static void gemm16(int transA, int transB, int M, int N, int K, const float *A, const uint16_t *A16,
                   int64_t lda, const float *B, const uint16_t *B16, int64_t ldb, float beta, float *C,
                   int64_t ldc, const llmc_exec *ex, const llmc_packed_b16 *pb) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (beta == 0.0f)
            for (int m = 0; m < M; m++) memset(C + (int64_t)m * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    const kernel16 uk = pick_kernel16();
    const int mr = uk.mr;
    const int KC16 = uk.amx ? LLMC_GEMM_KC16_AMX : LLMC_GEMM_KC; /* panel depth (internal.h) */
    const int mt_max = (LLMC_GEMM_MC / mr) * mr;
    const int m_tiles = (M + mt_max - 1) / mt_max;
    const int mt = ((M + m_tiles - 1) / m_tiles + mr - 1) / mr * mr;
    const int nthreads_max = ex->nt < 1 ? 1 : ex->nt;
    const int nt_width = choose_tile_width(N, m_tiles, nthreads_max);
    const int n_tiles = (N + nt_width - 1) / nt_width;
    const int tiles = m_tiles * n_tiles;
    const int nthreads = nthreads_max < tiles ? nthreads_max : tiles;
    const int k_panels = (K + KC16 - 1) / KC16;
    const int kw = (K / KC16) * (KC16 / 2) + (K % KC16 ? panel_pairs(&uk, K % KC16) : 0);

    /* shared pre-pack in pairs: panel p of A starts at Mr * k0 / 2 (every panel but the last
     * is KC deep, KC pairs-even and a multiple of 32), strip s at + s * kpp; likewise B */
    uint32_t *shared = (uint32_t *)ex->gemm_shared;
    const int prepack = pb ? 0 : choose_prepack(M, N, kw, mr, ex);
    const int Mr = (M + mr - 1) / mr * mr, Nr = (N + NR - 1) / NR * NR;
    const int Nr_pb = pb ? (pb->N + NR - 1) / NR * NR : 0;
    if (prepack) {
        /* A jobs take two strips when the AVX-512 pack can do them together */
        const int a_rows = uk.avx512_pack && mr == 8 ? 16 : mr;
        const int strips = prepack == 1 ? (Mr + a_rows - 1) / a_rows : Nr / NR;
        const int jobs = strips * k_panels;
#pragma omp parallel for num_threads(nthreads_max) schedule(static)
        for (int j = 0; j < jobs; j++) {
            const int p = j / strips, st = j % strips;
            const int k0 = p * KC16;
            const int kc = K - k0 < KC16 ? K - k0 : KC16;
            const int kpp = panel_pairs(&uk, kc);
            if (prepack == 1) {
                const int m0 = st * a_rows, rows = M - m0 < a_rows ? M - m0 : a_rows;
                uint32_t *dst = shared + (size_t)Mr * (k0 / 2) + (size_t)m0 * kpp;
                pack_a_any(dst, &uk, transA, A, A16, lda, m0, k0, rows, kc, kpp);
            } else {
                pack_b_panel_strip(shared, &uk, KC16, transB, B, B16, ldb, K, N, k0, st * NR);
            }
        }
    }

#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
    for (int tile = 0; tile < tiles; tile++) {
        /* the thread's fp32 workspace holds the bf16 pairs (half its size would do) */
        uint32_t *Aw = (uint32_t *)(ex->gemm_ws + (size_t)LLMC_THREAD_ID() * LLMC_GEMM_WS_FLOATS);
        uint32_t *Bw = Aw + LLMC_GEMM_WS16_A;
        const int m0 = (tile % m_tiles) * mt, n0 = (tile / m_tiles) * nt_width;
        const int mc = M - m0 < mt ? M - m0 : mt;
        const int nc = N - n0 < nt_width ? N - n0 : nt_width;
#ifdef LLMC_X86
        if (uk.amx) amx_configure(); /* tile configuration is per thread */
#endif
        for (int k0 = 0; k0 < K; k0 += KC16) {
            const int kc = K - k0 < KC16 ? K - k0 : KC16;
            const int kpp = panel_pairs(&uk, kc);
            const float beta_k = k0 == 0 ? beta : 1.0f;
            const uint32_t *Ap;
            if (prepack == 1) {
                Ap = shared + (size_t)Mr * (k0 / 2) + (size_t)m0 * kpp;
            } else {
                pack_a_any(Aw, &uk, transA, A, A16, lda, m0, k0, mc, kc, kpp);
                Ap = Aw;
            }
            /* B packed ahead: this panel's strips, kppb pairs apart (pb's panel may be deeper:
             * the kernel reads the first kpp pairs of a strip, past the depth it multiplies
             * the zero pairs of A) */
            const int kppb = pb ? panel_pairs(&uk, pb->K - k0 < KC16 ? pb->K - k0 : KC16) : kpp;
            const uint32_t *Bshared =
                pb ? pb->words + (size_t)Nr_pb * (k0 / 2) + (size_t)n0 * kppb
                   : prepack == 2 ? shared + (size_t)Nr * (k0 / 2) + (size_t)n0 * kpp : NULL;
            for (int js = 0; js < nc; js += NR) {
                const int nr = nc - js < NR ? nc - js : NR;
                const uint32_t *bstrip;
                if (Bshared) {
                    bstrip = Bshared + (size_t)js * kppb;
                } else {
                    pack_b_any(Bw, transB, B, B16, ldb, k0, n0 + js, kc, nr, uk.avx512_pack, kpp);
                    bstrip = Bw;
                }
                for (int is = 0; is < mc; is += mr) {
                    const int rows = mc - is < mr ? mc - is : mr;
                    float *ctile = C + (int64_t)(m0 + is) * ldc + n0 + js;
                    uk.fn(kpp, Ap + (size_t)is * kpp, bstrip, ctile, ldc, rows, nr, beta_k);
                }
            }
        }
#ifdef LLMC_X86
        if (uk.amx) amx_release();
#endif
    }
}

void llmc_gemm_bf16(int transA, int transB, int M, int N, int K, const float *A, int64_t lda,
                    const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                    const llmc_exec *ex) {
    gemm16(transA, transB, M, N, K, A, NULL, lda, B, NULL, ldb, beta, C, ldc, ex, NULL);
}

void llmc_gemm_bf16_b16(int transA, int transB, int M, int N, int K, const float *A,
                        int64_t lda, const uint16_t *B16, int64_t ldb, float beta, float *C,
                        int64_t ldc, const llmc_exec *ex) {
    gemm16(transA, transB, M, N, K, A, NULL, lda, NULL, B16, ldb, beta, C, ldc, ex, NULL);
}

void llmc_gemm_bf16_a16(int transA, int transB, int M, int N, int K, const uint16_t *A16,
                        int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                        int64_t ldc, const llmc_exec *ex) {
    gemm16(transA, transB, M, N, K, NULL, A16, lda, B, NULL, ldb, beta, C, ldc, ex, NULL);
}

void llmc_gemm_bf16_a16b16(int transA, int transB, int M, int N, int K, const uint16_t *A16,
                           int64_t lda, const uint16_t *B16, int64_t ldb, float beta, float *C,
                           int64_t ldc, const llmc_exec *ex) {
    gemm16(transA, transB, M, N, K, NULL, A16, lda, NULL, B16, ldb, beta, C, ldc, ex, NULL);
}

/* ---- a B operand packed once for several GEMMs (attention's K and V) ---- */

/* words of the panels of op(B) (K x N) for kernel uk: every panel but the last KC16 deep */
static size_t packed_b_words(const kernel16 *uk, int K, int N) {
    const int KC16 = uk->amx ? LLMC_GEMM_KC16_AMX : LLMC_GEMM_KC;
    const size_t Nr = (size_t)(N + NR - 1) / NR * NR;
    return Nr * ((size_t)(K / KC16) * (KC16 / 2) + (K % KC16 ? (size_t)panel_pairs(uk, K % KC16) : 0));
}

int llmc_gemm_bf16_pack_b(llmc_packed_b16 *pb, uint32_t *words, size_t cap, int transB, int K,
                          int N, const float *B, int64_t ldb) {
    const kernel16 uk = pick_kernel16();
    pb->words = NULL;
    if (K <= 0 || N <= 0 || packed_b_words(&uk, K, N) > cap) return 0;
    const int KC16 = uk.amx ? LLMC_GEMM_KC16_AMX : LLMC_GEMM_KC;
    for (int k0 = 0; k0 < K; k0 += KC16)
        for (int n0 = 0; n0 < N; n0 += NR)
            pack_b_panel_strip(words, &uk, KC16, transB, B, NULL, ldb, K, N, k0, n0);
    pb->words = words;
    pb->K = K;
    pb->N = N;
    pb->amx = uk.amx;
    pb->mr = uk.mr;
    return 1;
}

/* C (M x N) = beta C + op(A) @ op(B)[0:K, 0:N], op(B) from pb (K <= pb->K, N <= pb->N), with
 * ex's threads (attention: one). The bits are those of the GEMM that packs B itself. Returns
 * 0 (nothing done) if the kernel is not the one pb was packed for (LLMC_GEMM_ISA changed in
 * between) or the product does not fit in pb. */
int llmc_gemm_bf16_packed(int transA, int M, int N, int K, const float *A, int64_t lda,
                          const llmc_packed_b16 *pb, float beta, float *C, int64_t ldc,
                          const llmc_exec *ex) {
    const kernel16 uk = pick_kernel16();
    if (!pb->words || uk.amx != pb->amx || uk.mr != pb->mr || K > pb->K || N > pb->N) return 0;
    gemm16(transA, 0, M, N, K, A, NULL, lda, NULL, NULL, 0, beta, C, ldc, ex, pb);
    return 1;
}
