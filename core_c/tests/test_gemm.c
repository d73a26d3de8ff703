/* test_gemm.c - llmc_sgemm against a naive triple loop for all transpose combinations,
 * odd sizes (edges of every blocking level) and both beta values. Exit code 0 = pass. */
#include "../src/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return ((*s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

static int check(int tA, int tB, int M, int N, int K, float beta, int nt) {
    unsigned s = 1234u + (unsigned)(M * 7 + N * 13 + K);
    float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)K * N);
    float *C = malloc(sizeof(float) * (size_t)M * N), *R = malloc(sizeof(float) * (size_t)M * N);
    for (int i = 0; i < M * K; i++) A[i] = frand(&s);
    for (int i = 0; i < K * N; i++) B[i] = frand(&s);
    for (int i = 0; i < M * N; i++) C[i] = R[i] = frand(&s);
    const int64_t lda = tA ? M : K, ldb = tB ? K : N;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double acc = beta * R[m * N + n];
            for (int k = 0; k < K; k++)
                acc += (double)(tA ? A[k * lda + m] : A[m * lda + k]) *
                       (tB ? B[n * ldb + k] : B[k * ldb + n]);
            R[m * N + n] = (float)acc;
        }
    float *ws = malloc(sizeof(float) * LLMC_GEMM_WS_FLOATS * nt);
    float *sh = malloc(sizeof(float) * LLMC_GEMM_SHARED_FLOATS); llmc_exec ex = {nt, ws, NULL, 0, (M % 2) ? NULL : sh, LLMC_GEMM_SHARED_FLOATS, 1.0f};
    llmc_sgemm(tA, tB, M, N, K, A, lda, B, ldb, beta, C, N, &ex);
    double worst = 0.0;
    for (int i = 0; i < M * N; i++) {
        double e = fabs(C[i] - R[i]) / (1.0 + fabs(R[i]));
        if (e > worst) worst = e;
    }
    free(A); free(B); free(C); free(R); free(ws); free(sh);
    /* K <= 600 products of magnitude <= 1 summed in fp32: error well below 1e-4 */
    int ok = worst < 1e-4;
    if (!ok) printf("FAIL tA=%d tB=%d M=%d N=%d K=%d beta=%g nt=%d err=%g\n", tA, tB, M, N, K, beta, nt, worst);
    return ok;
}

int main(void) {
    int sizes[][3] = {{1, 1, 1}, {7, 33, 5}, {6, 32, 256}, {97, 513, 257}, {200, 65, 600}, {13, 1100, 31}};
    int pass = 0, fail = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        for (int tA = 0; tA < 2; tA++)
            for (int tB = 0; tB < 2; tB++)
                for (int b = 0; b < 2; b++)
                    for (int nt = 1; nt <= 2; nt++) {
                        if (check(tA, tB, sizes[i][0], sizes[i][1], sizes[i][2], (float)b, nt)) pass++;
                        else fail++;
                    }
    printf("gemm (%s): %d passed, %d failed\n", llmc_gemm_isa(), pass, fail);
    return fail != 0;
}
