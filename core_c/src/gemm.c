/* gemm.c - single-precision matrix multiply for all three matmul shapes of GPT-2.
 *
 * Packed GEMM: C is cut into tiles (up to MC rows x 512 columns), each owned by one thread
 * for the whole K loop; K is cut into KC-deep panels. Per panel a tile packs its rows of A
 * into MR-row strips (k-major) and then, one at a time, NR-column strips of B, each used by
 * every row strip while it sits in L1. The smaller operand, when small enough, is packed
 * once for all threads instead (see choose_prepack). The micro-kernel keeps an MR x NR tile
 * of C in registers; it is picked at run time by CPU features (AVX-512, AVX2+FMA, or
 * portable C), so one portable build runs fast on every x86-64 machine.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LLMC_X86 1
#include <immintrin.h>
#endif

#include "gemm_plan.h"
#include "gemm_wasm.h"
#include "transpose16.h"

#define NR LLMC_GEMM_NR

typedef void (*ukernel_fn)(int kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                           int mr, int nr, float beta);

/* Portable micro-kernel: 4 x 32 tile; plain loops the compiler can vectorise. */
#define MR_GENERIC 4
static void ukernel_generic(int kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                            int mr, int nr, float beta) {
    float acc[MR_GENERIC][NR];
    memset(acc, 0, sizeof(acc));
    for (int k = 0; k < kc; k++) {
        const float *b = Bp + (size_t)k * NR;
        const float *a = Ap + (size_t)k * MR_GENERIC;
        for (int r = 0; r < MR_GENERIC; r++) {
            float ar = a[r];
            for (int c = 0; c < NR; c++) acc[r][c] += ar * b[c];
        }
    }
    store_tile(&acc[0][0], MR_GENERIC, C, ldc, mr, nr, beta);
}

#ifdef LLMC_X86
/* AVX-512: 8 x 32 tile = 16 zmm accumulators (plus 2 for B and 1 broadcast, of 32): two
 * FMA ports with 4-cycle latency need at least 8 independent chains. Accumulators are
 * named variables, not an array, so they never touch the stack. */
#define MR_AVX512 8
#define AVX512_ROW_DECL(r) __m512 c##r##a = _mm512_setzero_ps(), c##r##b = _mm512_setzero_ps()
#define AVX512_ROW_FMA(r)                                                                  \
    do {                                                                                   \
        const __m512 a_ = _mm512_set1_ps(Ap[r]);                                           \
        c##r##a = _mm512_fmadd_ps(a_, b0, c##r##a);                                        \
        c##r##b = _mm512_fmadd_ps(a_, b1, c##r##b);                                        \
    } while (0)
#define AVX512_ROW_STORE(r)                                                                \
    do {                                                                                   \
        float *cr_ = C + (r) * ldc;                                                        \
        if (beta != 0.0f) {                                                                \
            c##r##a = _mm512_add_ps(c##r##a, _mm512_loadu_ps(cr_));                        \
            c##r##b = _mm512_add_ps(c##r##b, _mm512_loadu_ps(cr_ + 16));                   \
        }                                                                                  \
        _mm512_storeu_ps(cr_, c##r##a);                                                    \
        _mm512_storeu_ps(cr_ + 16, c##r##b);                                               \
    } while (0)
#define AVX512_ROW_TMP(r)                                                                  \
    do {                                                                                   \
        _mm512_storeu_ps(tmp + (r) * NR, c##r##a);                                         \
        _mm512_storeu_ps(tmp + (r) * NR + 16, c##r##b);                                    \
    } while (0)

__attribute__((target("avx512f"))) static void
ukernel_avx512(int kc, const float *Ap, const float *Bp, float *C, int64_t ldc, int mr, int nr,
               float beta) {
    AVX512_ROW_DECL(0); AVX512_ROW_DECL(1); AVX512_ROW_DECL(2); AVX512_ROW_DECL(3);
    AVX512_ROW_DECL(4); AVX512_ROW_DECL(5); AVX512_ROW_DECL(6); AVX512_ROW_DECL(7);
    /* Fetch the C tile now so it is in L1 when the sums are stored (and added to C): the
     * weight gradients (beta = 1) come from DRAM, and a miss at the end of every tile
     * stalled the backward's dW matmuls. */
    for (int r = 0; r < mr; r++) {
        _mm_prefetch((const char *)(C + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(C + r * ldc + nr - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 4 /* +1% on the d12 shapes: less loop overhead per 16 FMAs */
    for (int k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_loadu_ps(Bp);
        const __m512 b1 = _mm512_loadu_ps(Bp + 16);
        AVX512_ROW_FMA(0); AVX512_ROW_FMA(1); AVX512_ROW_FMA(2); AVX512_ROW_FMA(3);
        AVX512_ROW_FMA(4); AVX512_ROW_FMA(5); AVX512_ROW_FMA(6); AVX512_ROW_FMA(7);
        Ap += MR_AVX512;
        Bp += NR;
    }
    if (mr == MR_AVX512 && nr == NR) {
        AVX512_ROW_STORE(0); AVX512_ROW_STORE(1); AVX512_ROW_STORE(2); AVX512_ROW_STORE(3);
        AVX512_ROW_STORE(4); AVX512_ROW_STORE(5); AVX512_ROW_STORE(6); AVX512_ROW_STORE(7);
        return;
    }
    float tmp[MR_AVX512 * NR];
    AVX512_ROW_TMP(0); AVX512_ROW_TMP(1); AVX512_ROW_TMP(2); AVX512_ROW_TMP(3);
    AVX512_ROW_TMP(4); AVX512_ROW_TMP(5); AVX512_ROW_TMP(6); AVX512_ROW_TMP(7);
    store_tile(tmp, MR_AVX512, C, ldc, mr, nr, beta);
}

/* AVX2 + FMA: 3 x 32 tile = 12 ymm accumulators (16 registers in all). */
#define MR_AVX2 3
__attribute__((target("avx2,fma"))) static void
ukernel_avx2(int kc, const float *Ap, const float *Bp, float *C, int64_t ldc, int mr, int nr,
             float beta) {
    __m256 acc[MR_AVX2][4];
    for (int r = 0; r < MR_AVX2; r++)
        for (int j = 0; j < 4; j++) acc[r][j] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(Bp), b1 = _mm256_loadu_ps(Bp + 8);
        __m256 b2 = _mm256_loadu_ps(Bp + 16), b3 = _mm256_loadu_ps(Bp + 24);
        for (int r = 0; r < MR_AVX2; r++) {
            __m256 a = _mm256_broadcast_ss(Ap + r);
            acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
            acc[r][2] = _mm256_fmadd_ps(a, b2, acc[r][2]);
            acc[r][3] = _mm256_fmadd_ps(a, b3, acc[r][3]);
        }
        Ap += MR_AVX2;
        Bp += NR;
    }
    float tmp[MR_AVX2 * NR];
    for (int r = 0; r < MR_AVX2; r++)
        for (int j = 0; j < 4; j++) _mm256_storeu_ps(tmp + r * NR + 8 * j, acc[r][j]);
    store_tile(tmp, MR_AVX2, C, ldc, mr, nr, beta);
}
#endif

typedef struct {
    ukernel_fn fn;
    int mr;
    const char *name;
    int avx512_pack; /* the packers may use AVX-512 transposes */
} ukernel;

/* The best kernel this CPU runs; LLMC_GEMM_ISA=generic|avx2 forces a lesser one (tests use it
 * to cover every kernel on one machine). avx512bf16 and amx name bf16 kernels (gemm_bf16.c):
 * for fp32 they allow what avx512 does. */
static ukernel pick_ukernel(void) {
    ukernel k = {ukernel_generic, MR_GENERIC, "generic", 0};
#if defined(__wasm_simd128__) /* the wasm core: its SIMD128 kernel (gemm_wasm.c) */
    k.fn = llmc_ukernel_wasm; k.mr = LLMC_WASM_MR; k.name = LLMC_WASM_UKERNEL_NAME;
#endif
#ifdef LLMC_X86
    const char *force = getenv("LLMC_GEMM_ISA");
    const int allow512 = !force || !strcmp(force, "avx512") || !strcmp(force, "avx512bf16") ||
                         !strcmp(force, "amx");
    const int allow2 = !force || allow512 || !strcmp(force, "avx2");
    __builtin_cpu_init();
    if (allow512 && __builtin_cpu_supports("avx512f")) {
        k.fn = ukernel_avx512; k.mr = MR_AVX512; k.name = "avx512"; k.avx512_pack = 1;
    } else if (allow2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        k.fn = ukernel_avx2; k.mr = MR_AVX2; k.name = "avx2";
    }
#endif
    return k;
}

const char *llmc_gemm_isa(void) { return pick_ukernel().name; }

#ifdef LLMC_X86 /* the packers' AVX-512 helpers (x86-64 only; called under LLMC_X86 below) */
/* One full NR-column strip of a plain (k-major) B: kc rows of 32 contiguous floats. memcpy
 * of 128 bytes compiled to `rep movsq`, whose start-up cost dominated the backward's dX
 * packs; two unaligned vector moves per row do not have it. */
__attribute__((target("avx512f"))) static void copy_strip_avx512(const float *src, int64_t ld,
                                                                 float *dst, int kc) {
    for (int k = 0; k < kc; k++) {
        const float *s = src + (int64_t)k * ld;
        _mm512_storeu_ps(dst + (size_t)k * NR, _mm512_loadu_ps(s));
        _mm512_storeu_ps(dst + (size_t)k * NR + 16, _mm512_loadu_ps(s + 16));
    }
}

/* kc rows of 8 contiguous floats, one after another (a transposed A strip). */
__attribute__((target("avx512f"))) static void copy_rows8_avx512(const float *src, int64_t ld,
                                                                 float *dst, int kc) {
    for (int k = 0; k < kc; k++) _mm256_storeu_ps(dst + (size_t)k * 8, _mm256_loadu_ps(src + (int64_t)k * ld));
}
#endif

/* Pack rows [0, mc) x depth [0, kc) of op(A) into strips of mr rows: Ap[s][k][r].
 * Loops run along the source's contiguous dimension. */
static void pack_a(float *Ap, int transA, const float *A, int64_t lda, int m0, int k0, int mc,
                   int kc, int mr, int fast) {
    int s0 = 0;
#ifdef LLMC_X86
    /* AVX-512 path: pairs of full 8-row strips, 16 k at a time, through a 16 x 16 transpose */
    if (fast && !transA && mr == 8) {
        const int k16 = kc / 16 * 16;
        for (; s0 + 16 <= mc; s0 += 16) {
            float *d0 = Ap + (size_t)s0 * kc, *d1 = Ap + (size_t)(s0 + 8) * kc;
            const float *src = A + (int64_t)(m0 + s0) * lda + k0;
            for (int k = 0; k < k16; k += 16)
                transpose16_split_avx512(src + k, lda, d0 + (size_t)k * 8, d1 + (size_t)k * 8, 8);
            for (int r = 0; r < 16; r++)
                for (int k = k16; k < kc; k++)
                    (r < 8 ? d0 : d1)[(size_t)k * 8 + (r & 7)] = src[(int64_t)r * lda + k];
        }
    }
#else
    (void)fast;
#endif
    for (int s = s0; s < mc; s += mr) {
        const int rows = mc - s < mr ? mc - s : mr;
        float *dst = Ap + (size_t)s * kc;
        if (transA) {
#ifdef LLMC_X86
            if (fast && rows == 8 && mr == 8) { /* dW's A = dout^T: 8 contiguous floats per k */
                copy_rows8_avx512(A + (int64_t)k0 * lda + m0 + s, lda, dst, kc);
                continue;
            }
#endif
            for (int k = 0; k < kc; k++) {
                const float *src = A + (int64_t)(k0 + k) * lda + m0 + s;
                float *d = dst + (size_t)k * mr;
                for (int r = 0; r < rows; r++) d[r] = src[r];
                for (int r = rows; r < mr; r++) d[r] = 0.0f;
            }
        } else {
            for (int r = 0; r < rows; r++) {
                const float *src = A + (int64_t)(m0 + s + r) * lda + k0;
                for (int k = 0; k < kc; k++) dst[(size_t)k * mr + r] = src[k];
            }
            for (int r = rows; r < mr; r++)
                for (int k = 0; k < kc; k++) dst[(size_t)k * mr + r] = 0.0f;
        }
    }
}

/* Pack depth [0, kc) x columns [0, nc) of op(B) into strips of NR columns: Bp[s][k][c]. */
static void pack_b(float *Bp, int transB, const float *B, int64_t ldb, int k0, int n0, int kc,
                   int nc, int fast) {
    int s0 = 0;
#ifdef LLMC_X86
    /* AVX-512 path for the transposing case: full 32-column strips, 16 x 16 blocks */
    if (fast && !transB) {
        for (; s0 + NR <= nc; s0 += NR)
            copy_strip_avx512(B + (int64_t)k0 * ldb + n0 + s0, ldb, Bp + (size_t)s0 * kc, kc);
    }
    if (fast && transB) {
        const int k16 = kc / 16 * 16;
        for (; s0 + NR <= nc; s0 += NR) {
            float *dst = Bp + (size_t)s0 * kc;
            for (int g = 0; g < NR; g += 16) {
                const float *src = B + (int64_t)(n0 + s0 + g) * ldb + k0;
                for (int k = 0; k < k16; k += 16)
                    transpose16_avx512(src + k, ldb, dst + (size_t)k * NR + g, NR);
                for (int c = 0; c < 16; c++)
                    for (int k = k16; k < kc; k++) dst[(size_t)k * NR + g + c] = src[(int64_t)c * ldb + k];
            }
        }
    }
#else
    (void)fast;
#endif
    for (int s = s0; s < nc; s += NR) {
        const int cols = nc - s < NR ? nc - s : NR;
        float *dst = Bp + (size_t)s * kc;
        if (!transB) {
            for (int k = 0; k < kc; k++) {
                const float *src = B + (int64_t)(k0 + k) * ldb + n0 + s;
                float *d = dst + (size_t)k * NR;
                memcpy(d, src, (size_t)cols * sizeof(float));
                for (int c = cols; c < NR; c++) d[c] = 0.0f;
            }
        } else {
            for (int c = 0; c < cols; c++) {
                const float *src = B + (int64_t)(n0 + s + c) * ldb + k0;
                for (int k = 0; k < kc; k++) dst[(size_t)k * NR + c] = src[k];
            }
            for (int c = cols; c < NR; c++)
                for (int k = 0; k < kc; k++) dst[(size_t)k * NR + c] = 0.0f;
        }
    }
}

void llmc_sgemm(int transA, int transB, int M, int N, int K, const float *A, int64_t lda,
                const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                const llmc_exec *ex) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (beta == 0.0f)
            for (int m = 0; m < M; m++) memset(C + (int64_t)m * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    const ukernel uk = pick_ukernel();
    const int mr = uk.mr;
    const int mt_max = (LLMC_GEMM_MC / mr) * mr;
    const int m_tiles = (M + mt_max - 1) / mt_max;
    /* equal row tiles, rounded up to whole micro-kernel strips */
    const int mt = ((M + m_tiles - 1) / m_tiles + mr - 1) / mr * mr;
    const int nthreads_max = ex->nt < 1 ? 1 : ex->nt;
    const int nt_width = choose_tile_width(N, m_tiles, nthreads_max);
    const int n_tiles = (N + nt_width - 1) / nt_width;
    const int tiles = m_tiles * n_tiles;
    const int nthreads = nthreads_max < tiles ? nthreads_max : tiles;
    const int k_panels = (K + LLMC_GEMM_KC - 1) / LLMC_GEMM_KC;

    /* shared pre-pack: panel p of A starts at Mr * k0, strip s at + s * kc (likewise B) */
    const int prepack = choose_prepack(M, N, K, mr, ex);
    const int Mr = (M + mr - 1) / mr * mr, Nr = (N + NR - 1) / NR * NR;
    if (prepack) {
        /* A jobs take two strips when the 16-row transpose can pack them together */
        const int a_rows = uk.avx512_pack && mr == 8 ? 16 : mr;
        const int strips = prepack == 1 ? (Mr + a_rows - 1) / a_rows : Nr / NR;
        const int jobs = strips * k_panels;
#pragma omp parallel for num_threads(nthreads_max) schedule(static)
        for (int j = 0; j < jobs; j++) {
            const int p = j / strips, st = j % strips;
            const int k0 = p * LLMC_GEMM_KC;
            const int kc = K - k0 < LLMC_GEMM_KC ? K - k0 : LLMC_GEMM_KC;
            if (prepack == 1) {
                const int m0 = st * a_rows, rows = M - m0 < a_rows ? M - m0 : a_rows;
                pack_a(ex->gemm_shared + (size_t)Mr * k0 + (size_t)m0 * kc, transA, A, lda, m0,
                       k0, rows, kc, mr, uk.avx512_pack);
            } else {
                const int n0 = st * NR, cols = N - n0 < NR ? N - n0 : NR;
                pack_b(ex->gemm_shared + (size_t)Nr * k0 + (size_t)n0 * kc, transB, B, ldb, k0,
                       n0, kc, cols, uk.avx512_pack);
            }
        }
    }

#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
    for (int tile = 0; tile < tiles; tile++) {
        float *Aw = ex->gemm_ws + (size_t)LLMC_THREAD_ID() * LLMC_GEMM_WS_FLOATS;
        float *Bw = Aw + (size_t)(LLMC_GEMM_MC + LLMC_GEMM_MR_MAX) * LLMC_GEMM_KC;
        /* n varies slowest: consecutive tiles share their B columns while they are hot */
        const int m0 = (tile % m_tiles) * mt, n0 = (tile / m_tiles) * nt_width;
        const int mc = M - m0 < mt ? M - m0 : mt;
        const int nc = N - n0 < nt_width ? N - n0 : nt_width;
        for (int k0 = 0; k0 < K; k0 += LLMC_GEMM_KC) {
            const int kc = K - k0 < LLMC_GEMM_KC ? K - k0 : LLMC_GEMM_KC;
            const float beta_k = k0 == 0 ? beta : 1.0f;
            const float *Ap;
            if (prepack == 1) {
                Ap = ex->gemm_shared + (size_t)Mr * k0 + (size_t)m0 * kc;
            } else {
                pack_a(Aw, transA, A, lda, m0, k0, mc, kc, mr, uk.avx512_pack);
                Ap = Aw;
            }
            /* B is packed one NR-column strip at a time, right before every row strip of
             * this tile uses it, into the same small buffer, which so stays in L1.
             * (Prefetching the next strip's source explicitly was measured too: no gain
             * once the packs were vectorised.) */
            const float *Bshared = prepack == 2 ? ex->gemm_shared + (size_t)Nr * k0 + (size_t)n0 * kc
                                                : NULL;
            for (int js = 0; js < nc; js += NR) {
                const int nr = nc - js < NR ? nc - js : NR;
                const float *bstrip;
                if (Bshared) {
                    bstrip = Bshared + (size_t)js * kc;
                } else {
                    /* one strip buffer, reused: it never leaves L1 */
                    pack_b(Bw, transB, B, ldb, k0, n0 + js, kc, nr, uk.avx512_pack);
                    bstrip = Bw;
                }
                for (int is = 0; is < mc; is += mr) {
                    const int rows = mc - is < mr ? mc - is : mr;
                    float *ctile = C + (int64_t)(m0 + is) * ldc + n0 + js;
                    uk.fn(kc, Ap + (size_t)is * kc, bstrip, ctile, ldc, rows, nr, beta_k);
                }
            }
        }
    }
}
