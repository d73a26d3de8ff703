/* gemm_plan.h - how a GEMM is cut into work, shared by the fp32 GEMM (gemm.c) and the bf16
 * one (gemm_bf16.c): C tiles per thread, the shared pre-pack choice, and the store of a
 * micro-kernel's partial tile. Static inline: each GEMM gets its own copy, as before. */
#ifndef LLMC_GEMM_PLAN_H
#define LLMC_GEMM_PLAN_H

#include "internal.h"

#include <stddef.h>
#include <stdint.h>

/* Write an MR x NR tile held in tmp to C, only the valid mr x nr corner. */
static inline void store_tile(const float *tmp, int MR, float *C, int64_t ldc, int mr, int nr,
                       float beta) {
    for (int r = 0; r < mr; r++) {
        float *crow = C + r * ldc;
        const float *trow = tmp + r * LLMC_GEMM_NR;
        if (beta != 0.0f) {
            for (int c = 0; c < nr; c++) crow[c] += trow[c];
        } else {
            for (int c = 0; c < nr; c++) crow[c] = trow[c];
        }
    }
    (void)MR;
}

/* Work is split into tiles of C (up to MT x NT), each owned by one thread for the whole K
 * loop: no barriers between K panels and no two threads ever write the same C element.
 * Packing costs about 1/NT + 1/MT of the multiply-adds, so tiles should be wide; but the
 * threads should also get equal work. choose_tile_width() trades the two off. */
static inline int choose_tile_width(int N, int m_tiles, int nthreads) {
    static const int widths[] = {1024, 768, 512, 384, 256, 192, 128, 96, 64};
    int best = widths[0];
    double best_cost = 1e300;
    for (size_t i = 0; i < sizeof(widths) / sizeof(widths[0]); i++) {
        const int w = widths[i];
        const int tiles = m_tiles * ((N + w - 1) / w);
        const int rounds = (tiles + nthreads - 1) / nthreads;
        const int eff_w = w < N ? w : N;
        /* time ~ rounds of one tile's work, inflated by the packing share (~16 / width) */
        const double cost = (double)rounds * eff_w * (1.0 + 16.0 / eff_w);
        if (cost < best_cost - 1e-9) {
            best_cost = cost;
            best = w;
        }
    }
    return best;
}

/* The smaller operand, when it fits the shared buffer, is packed once for all tiles instead
 * of once per tile: for the classifier (lnf is 256 x 768, wte 50304 x 768) that removes
 * hundreds of repeated packs. Returns 1 (A), 2 (B) or 0 (pack per tile). K is the depth in
 * 32-bit words of a packed column: K floats in fp32, (K + 1) / 2 bf16 pairs in bf16. */
static inline int choose_prepack(int M, int N, int K, int mr, const llmc_exec *ex) {
    if (!ex->gemm_shared) return 0;
    const size_t a = (size_t)((M + mr - 1) / mr * mr) * (size_t)K;
    const size_t b = (size_t)K * (size_t)((N + LLMC_GEMM_NR - 1) / LLMC_GEMM_NR * LLMC_GEMM_NR);
    const size_t cap = ex->gemm_shared_len;
    if (M <= N && a <= cap) return 1;
    if (b <= cap) return 2;
    if (a <= cap) return 1;
    return 0;
}

#endif
