/* amx_kernel_probe.c - the AMX micro-kernel alone, on one core: GFLOP/s of repeated calls on
 * packed strips that stay in L1 (small kpp), L2 or beyond (many strips). Includes the
 * source to reach the static kernel. Build (from the repository root):
 *   gcc -O3 -fno-math-errno -fopenmp -Icore_c/src -Icore_c/include \
 *     benchmarks/results/bench_bf16_s3_quiet/amx_kernel_probe.c core_c/src/errors.c -lm
 * Run: ./a.out KPP CALLS STRIPS BETA (pairs per call, calls, A strips cycled, 0 or 1). */
#include "../../../core_c/src/gemm_bf16.c"
#include <stdio.h>
#include <omp.h>
int main(int argc, char **argv) {
    int kpp = argc > 1 ? atoi(argv[1]) : 512; int calls = argc > 2 ? atoi(argv[2]) : 2000; int nstrip = argc > 3 ? atoi(argv[3]) : 1;
    if (!cpu_has_amx_bf16()) { printf("no amx\n"); return 1; }
    uint32_t *A = aligned_alloc(64, (size_t)nstrip * 32 * kpp * 4), *B = aligned_alloc(64, (size_t)32 * kpp * 4);
    for (size_t i = 0; i < (size_t)nstrip * 32 * kpp; i++) A[i] = 0x3f803f80u;
    for (size_t i = 0; i < (size_t)32 * kpp; i++) B[i] = 0x3f803f80u;
    float *C = aligned_alloc(64, 32 * 32 * 4 * nstrip);
    amx_configure();
    double best = 1e9; float beta = argc > 4 ? atof(argv[4]) : 0.0f;
    for (int r = 0; r < 5; r++) {
        double t = omp_get_wtime();
        for (int c = 0; c < calls; c++) ukernel16_amx(kpp, A + (size_t)(c % nstrip) * 32 * kpp, B, C + (c % nstrip) * 1024, 32, 32, 32, beta);
        double dt = omp_get_wtime() - t; if (dt < best) best = dt;
    }
    amx_release();
    double flops = 2.0 * 32 * 32 * (2.0 * kpp) * calls;
    printf("kpp %d strips %d: %.0f GFLOP/s (1 core)\n", kpp, nstrip, flops / best / 1e9);
    return 0;
}
