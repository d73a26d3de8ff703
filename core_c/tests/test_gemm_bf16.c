/* test_gemm_bf16.c - the bf16 GEMM (gemm_bf16.c) and the bf16 rounding (bf16.h).
 *
 *  - rounding: hand-picked cases (ties to even, carries into the exponent, overflow to inf,
 *    NaN, denormals, signed zeros) and, on a CPU with AVX512_BF16, 4 M random bit patterns
 *    against the hardware conversion vcvtneps2bf16;
 *  - the GEMM, every kernel this CPU runs (LLMC_GEMM_ISA), all transpose combinations, odd
 *    sizes, both betas, 1 and 2 threads, with and without the shared pre-pack: BITWISE equal
 *    to a plain triple loop that spells out the documented arithmetic (operands rounded to
 *    bf16, per KC panel and depth pair an fmaf of the odd term then of the even one, panels
 *    added to C), and within fp32 accumulation error of the exact (double) product of the
 *    rounded operands; and llmc_gemm_bf16_b16 (B given as bf16 bits), llmc_gemm_bf16_a16 (A
 *    as bf16 bits) and llmc_gemm_bf16_a16b16 (both) bitwise equal to llmc_gemm_bf16 on the
 *    fp32 operands those bits round, for every kernel (A16 with row strides wider than the
 *    rows, even and odd, so pairs also start at 2-byte boundaries).
 * Exit code 0 = pass. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "../src/bf16.h"
#include "../src/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

static int failures = 0;

static float f_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void expect_round(uint32_t in, uint32_t want) {
    const uint32_t got = llmc_bf16_bits(f_of(in));
    if (got != want) {
        printf("FAIL round %08x -> %04x, want %04x\n", in, got, want);
        failures++;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f,avx512bf16"))) static int hw_round_mismatches(void) {
    unsigned s = 99u;
    int bad = 0;
    for (int it = 0; it < (1 << 18); it++) {
        uint32_t in[16];
        for (int i = 0; i < 16; i++) {
            s = s * 1664525u + 1013904223u;
            in[i] = s ^ (s >> 7) * 2654435761u;
        }
        __m512 v;
        memcpy(&v, in, 64);
        const __m256bh r = _mm512_cvtneps_pbh(v);
        uint16_t out[16];
        memcpy(out, &r, 32);
        for (int i = 0; i < 16; i++)
            if (out[i] != llmc_bf16_bits(f_of(in[i]))) {
                if (bad < 5) printf("FAIL vs vcvtneps2bf16: %08x -> hw %04x, ours %04x\n", in[i], out[i], llmc_bf16_bits(f_of(in[i])));
                bad++;
            }
    }
    return bad;
}
#endif

static void test_rounding(void) {
    expect_round(0x3F800000u, 0x3F80u); /* 1 */
    expect_round(0x3F808000u, 0x3F80u); /* 1 + 2^-8: a tie, to even (down) */
    expect_round(0x3F818000u, 0x3F82u); /* a tie, to even (up) */
    expect_round(0x3F808001u, 0x3F81u); /* just above the tie */
    expect_round(0x3F807FFFu, 0x3F80u); /* just below */
    expect_round(0x3FFFFFFFu, 0x4000u); /* carry into the exponent */
    expect_round(0x7F7FFFFFu, 0x7F80u); /* the largest float rounds to inf */
    expect_round(0x7F800000u, 0x7F80u); /* inf */
    expect_round(0xFF800000u, 0xFF80u); /* -inf */
    expect_round(0x7F800001u, 0x7FC0u); /* signalling NaN: quiet, never inf */
    expect_round(0xFFC00001u, 0xFFC0u);
    expect_round(0x7FFFFFFFu, 0x7FFFu);
    expect_round(0x00000000u, 0x0000u);
    expect_round(0x80000000u, 0x8000u);
    expect_round(0x007FFFFFu, 0x0000u); /* denormals become signed zeros */
    expect_round(0x80400000u, 0x8000u);
    expect_round(0x00800000u, 0x0080u); /* the smallest normal stays */
    expect_round(0xBF80C000u, 0xBF81u); /* -1.00390625 - : away from zero past the tie */
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (!strcmp(llmc_gemm_bf16_isa(), "avx512bf16") || !strcmp(llmc_gemm_bf16_isa(), "amx")) {
        const int bad = hw_round_mismatches();
        printf("rounding vs vcvtneps2bf16: %d mismatches in %d values\n", bad, 16 << 18);
        failures += bad != 0;
    } else {
        printf("rounding vs vcvtneps2bf16: skipped (no AVX512_BF16 here)\n");
    }
#endif
}

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    /* mixed magnitudes, so that rounding to bf16 loses bits */
    const float base = ((*s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
    return base * (1.0f + (float)((*s >> 4) & 15) / 7.0f);
}

static float rb(float x) { return llmc_bf16_to_float(llmc_bf16_bits(x)); }

static int check(const char *isa, int tA, int tB, int M, int N, int K, float beta, int nt,
                 int shared) {
    const int bitwise = strcmp(isa, "amx") != 0;
    unsigned s = 4321u + (unsigned)(M * 7 + N * 13 + K);
    float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)K * N);
    float *C = malloc(sizeof(float) * (size_t)M * N), *R = malloc(sizeof(float) * (size_t)M * N);
    double *E = malloc(sizeof(double) * (size_t)M * N), *S = malloc(sizeof(double) * (size_t)M * N);
    for (int i = 0; i < M * K; i++) A[i] = frand(&s);
    for (int i = 0; i < K * N; i++) B[i] = frand(&s);
    for (int i = 0; i < M * N; i++) C[i] = R[i] = frand(&s);
    /* the same B as bf16 bits (the model's kept weight copy), and a C for that product */
    uint16_t *B16 = malloc(sizeof(uint16_t) * (size_t)K * N);
    float *C16 = malloc(sizeof(float) * (size_t)M * N);
    for (int i = 0; i < K * N; i++) B16[i] = (uint16_t)llmc_bf16_bits(B[i]);
    memcpy(C16, C, sizeof(float) * (size_t)M * N);
    const int64_t lda = tA ? M : K, ldb = tB ? K : N;
    /* A as bf16 bits (kept activations), rows lda16 = lda + 2 or + 3 apart (by the shape: both
     * parities; odd, a row starts at any 2-byte boundary and the AVX-512 pack stands aside);
     * the pad columns hold NaN bits, which must never be read */
    const int64_t lda16 = lda + 2 + ((lda + M + N + K) & 1), arows = tA ? K : M; /* parity of M+N+K */
    uint16_t *A16 = malloc(sizeof(uint16_t) * (size_t)(arows * lda16));
    for (int64_t r = 0; r < arows; r++)
        for (int64_t c = 0; c < lda16; c++)
            A16[r * lda16 + c] = c < lda ? (uint16_t)llmc_bf16_bits(A[r * lda + c]) : 0x7FC1u;
    float *CA = malloc(sizeof(float) * (size_t)M * N), *CAB = malloc(sizeof(float) * (size_t)M * N);
    memcpy(CA, C, sizeof(float) * (size_t)M * N);
    memcpy(CAB, C, sizeof(float) * (size_t)M * N);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            const float c0 = R[m * N + n];
            double exact = beta * (double)c0, mag = fabs(beta * (double)c0);
            float c = c0;
            for (int k0 = 0; k0 < K; k0 += LLMC_GEMM_KC) {
                const int k1 = k0 + LLMC_GEMM_KC < K ? k0 + LLMC_GEMM_KC : K;
                float acc = 0.0f;
                for (int k = k0; k < k1; k += 2) {
                    const float ae = rb(tA ? A[k * lda + m] : A[m * lda + k]);
                    const float be = rb(tB ? B[n * ldb + k] : B[k * ldb + n]);
                    const float ao = k + 1 < k1 ? rb(tA ? A[(k + 1) * lda + m] : A[m * lda + k + 1]) : 0.0f;
                    const float bo = k + 1 < k1 ? rb(tB ? B[n * ldb + k + 1] : B[(k + 1) * ldb + n]) : 0.0f;
                    acc = fmaf(ae, be, fmaf(ao, bo, acc));
                    exact += (double)ae * be + (double)ao * bo;
                    mag += fabs((double)ae * be) + fabs((double)ao * bo);
                }
                c = (k0 == 0 && beta == 0.0f) ? acc : c + acc;
            }
            R[m * N + n] = c;
            E[m * N + n] = exact;
            S[m * N + n] = mag;
        }
    float *ws = malloc(sizeof(float) * LLMC_GEMM_WS_FLOATS * nt);
    float *sh = malloc(sizeof(float) * LLMC_GEMM_SHARED_FLOATS);
    llmc_exec ex = {nt, ws, NULL, 0, shared ? sh : NULL, LLMC_GEMM_SHARED_FLOATS, 1.0f, 1};
    llmc_gemm_bf16(tA, tB, M, N, K, A, lda, B, ldb, beta, C, N, &ex);
    llmc_gemm_bf16_b16(tA, tB, M, N, K, A, lda, B16, ldb, beta, C16, N, &ex);
    llmc_gemm_bf16_a16(tA, tB, M, N, K, A16, lda16, B, ldb, beta, CA, N, &ex);
    llmc_gemm_bf16_a16b16(tA, tB, M, N, K, A16, lda16, B16, ldb, beta, CAB, N, &ex);
    int bit_diff = 0, b16_diff = 0, a16_diff = 0;
    double worst = 0.0;
    for (int i = 0; i < M * N; i++) {
        if (memcmp(&C[i], &R[i], 4) != 0) bit_diff++;
        if (memcmp(&C[i], &C16[i], 4) != 0) b16_diff++; /* every kernel, amx included */
        if (memcmp(&C[i], &CA[i], 4) != 0 || memcmp(&C[i], &CAB[i], 4) != 0) a16_diff++;
        /* fp32 sums of K + 1 terms: at most (K + 1) * 2^-24 of the sum of magnitudes */
        const double e = fabs(C[i] - E[i]) / ((K + 2) * ldexp(1.0, -24) * (S[i] + 1e-30));
        if (e > worst) worst = e;
    }
    free(A); free(B); free(C); free(R); free(E); free(S); free(ws); free(sh); free(B16); free(C16);
    free(A16); free(CA); free(CAB);
    const int ok = (bit_diff == 0 || !bitwise) && worst <= 1.0 && b16_diff == 0 && a16_diff == 0;
    if (!ok)
        printf("FAIL %s tA=%d tB=%d M=%d N=%d K=%d beta=%g nt=%d shared=%d: %d elements differ "
               "from the emulation, error/bound %g, %d differ between fp32 and bf16 B, %d between "
               "fp32 and bf16 A\n", isa, tA, tB, M, N, K, beta, nt, shared, bit_diff, worst,
               b16_diff, a16_diff);
    return ok;
}

int main(void) {
    test_rounding();
    /* amx: within fp32 accumulation error, not bitwise (gemm_bf16.c); the others bitwise */
    static const char *const isas[] = {"amx", "avx512bf16", "avx512", "avx2", "generic"};
    int sizes[][3] = {{1, 1, 1}, {7, 33, 5}, {6, 32, 256}, {9, 40, 513}, {97, 513, 257},
                      {200, 65, 600}, {13, 1100, 31}, {300, 70, 2}, {64, 48, 130},
                      {35, 66, 2 * LLMC_GEMM_KC16_AMX + 37}}; /* three AMX panels, a ragged last */
    int pass = 0, fail = 0;
    for (size_t q = 0; q < sizeof(isas) / sizeof(isas[0]); q++) {
        setenv("LLMC_GEMM_ISA", isas[q], 1);
        const char *got = llmc_gemm_bf16_isa();
        if (strcmp(got, isas[q]) != 0) {
            printf("kernel %s: not on this CPU (%s runs instead)\n", isas[q], got);
            continue;
        }
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
            for (int tA = 0; tA < 2; tA++)
                for (int tB = 0; tB < 2; tB++)
                    for (int b = 0; b < 2; b++)
                        for (int nt = 1; nt <= 2; nt++) {
                            if (check(got, tA, tB, sizes[i][0], sizes[i][1], sizes[i][2], (float)b, nt, (int)(i % 2)))
                                pass++;
                            else
                                fail++;
                        }
        printf("gemm bf16 (%s): %d passed, %d failed so far\n", got, pass, fail);
    }
    unsetenv("LLMC_GEMM_ISA");
    return fail != 0 || failures != 0;
}
