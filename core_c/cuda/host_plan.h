/* host_plan.h - host-side planning for the CUDA backend, in plain C so it is unit-tested on
 * machines without a GPU or nvcc (parity_tests/test_cuda_host_plan.py compiles host_plan.c
 * with the C compiler and checks it; the CUDA backend links the same file).
 *
 * 1. GEMM pieces. cuBLAS's cublasGemmEx / cublasGemmStridedBatchedEx take 32-bit sizes and
 *    leading dimensions, and nothing promises that they address more than 2^31 elements of
 *    one operand correctly. GPT-2's classifier at B = 64, T = 1024 has a (65536 x 50304)
 *    logits matrix: 3.3e9 elements. llmc_gemm_plan() splits any GEMM into pieces in which
 *    every operand (batch included) spans at most `limit` elements from the piece's base
 *    pointer and every size fits an int, so each piece is a valid 32-bit call. Splits are
 *    along M and N (disjoint blocks of C) and along K (partial products added in order: the
 *    first K piece applies the caller's beta, the later ones beta = 1), and over the batch.
 *    The split depends only on the shape, so results are as deterministic as cuBLAS itself.
 *
 * 2. Token order of the embedding backward. dwte[v] += sum of dout over the positions whose
 *    token is v. The CPU adds those rows in increasing position order; the CUDA kernel gives
 *    each distinct token to one thread per channel, which adds its positions in the same order
 *    (so the result is bitwise the CPU's, and the same every run: no atomics).
 *    llmc_token_segments() is the stable counting sort that lists them. */
#ifndef LLMC_CUDA_HOST_PLAN_H
#define LLMC_CUDA_HOST_PLAN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* the largest span (in elements) one 32-bit cuBLAS call is given: INT32_MAX */
#define LLMC_GEMM_SPAN_LIMIT ((int64_t)2147483647)

/* Row-major C (M x N) = alpha * op(A) (M x K) @ op(B) (K x N) + beta * C, batch times with
 * element strides sA, sB, sC; op(A) = A^T when tA (A then stored K x M), as llmc_sgemm. */
typedef struct {
    int tA, tB;
    int64_t M, N, K;
    int64_t lda, ldb, ldc;
    int64_t sA, sB, sC;
    int64_t batch;
} llmc_gemm_shape;

/* the split: piece sizes along each dimension (the last piece of each may be smaller) */
typedef struct {
    int64_t mc, nc, kc, bc;
    int64_t nm, nn, nk, nb; /* number of pieces along each: ceil(M / mc), ... */
} llmc_gemm_split;

/* one piece: a call on A + offA, B + offB, C + offC with these sizes and this beta */
typedef struct {
    int64_t offA, offB, offC;
    int64_t m, n, k, batch;
    int first_k; /* 1 for the first piece along K: it applies the caller's beta, others 1 */
} llmc_gemm_piece;

/* Elements an operand spans from its base: the index of its last element + 1 (0 if empty). */
int64_t llmc_gemm_span_a(const llmc_gemm_shape *s, int64_t m, int64_t k, int64_t batch);
int64_t llmc_gemm_span_b(const llmc_gemm_shape *s, int64_t k, int64_t n, int64_t batch);
int64_t llmc_gemm_span_c(const llmc_gemm_shape *s, int64_t m, int64_t n, int64_t batch);

/* Plan the split of shape s so that every piece's spans are <= limit (use
 * LLMC_GEMM_SPAN_LIMIT; tests pass small limits) and its sizes, leading dimensions and
 * strides fit an int32 (strides: int64 in cuBLAS). Returns 1 and fills *out, or 0 when no
 * split can satisfy it (a leading dimension or one row beyond the limit, or sizes < 1). */
int llmc_gemm_plan(const llmc_gemm_shape *s, int64_t limit, llmc_gemm_split *out);
/* Total pieces of a split, and piece i of them (0 <= i < total); order: batch, then M, then
 * N, then K innermost (so the K pieces of one C block are issued consecutively, in order). */
int64_t llmc_gemm_num_pieces(const llmc_gemm_split *p);
void llmc_gemm_piece_at(const llmc_gemm_shape *s, const llmc_gemm_split *p, int64_t i,
                        llmc_gemm_piece *out);

/* The cuBLAS call that computes one piece. cuBLAS is column-major: a row-major matrix is the
 * column-major matrix of its transpose, so the row-major C = op(A) op(B) is computed as the
 * column-major C^T = op(B)^T op(A)^T: cuBLAS's first operand is our B (with our tB), its
 * second our A (with our tA), and its m, n are our n, m. Offsets are in elements from our B,
 * A and C; the strides are those of the shape (used when batch > 1). */
typedef struct {
    int first_trans, second_trans; /* 1: CUBLAS_OP_T */
    int64_t m, n, k;
    int64_t first_off, second_off, c_off;
    int64_t first_ld, second_ld, ldc;
    int64_t first_stride, second_stride, c_stride;
    int64_t batch;
} llmc_cublas_call;
void llmc_gemm_cublas_call(const llmc_gemm_shape *s, const llmc_gemm_piece *p,
                           llmc_cublas_call *out);

/* Stable counting sort of the n tokens inp[0..n) (each in [0, V)) by value. counts is
 * scratch of V + 1 ints. On return order[0..n) lists positions grouped by token, each group
 * in increasing position; rows[0..U) the distinct tokens in increasing value; seg[0..U] the
 * group boundaries (group u is order[seg[u] .. seg[u+1])). Returns U, or -1 if a token is
 * out of range. */
int32_t llmc_token_segments(const int32_t *inp, int32_t n, int32_t V, int32_t *counts,
                            int32_t *order, int32_t *rows, int32_t *seg);

#ifdef __cplusplus
}
#endif
#endif
