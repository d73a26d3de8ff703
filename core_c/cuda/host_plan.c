/* host_plan.c - GEMM splitting and the embedding-backward token order (see host_plan.h). */
#include "host_plan.h"

#include <string.h>

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* (rows - 1) * ld + width + (batch - 1) * stride: the span of `batch` row-major blocks */
static int64_t span(int64_t rows, int64_t width, int64_t ld, int64_t batch, int64_t stride) {
    if (rows < 1 || width < 1 || batch < 1) return 0;
    return (rows - 1) * ld + width + (batch - 1) * stride;
}

int64_t llmc_gemm_span_a(const llmc_gemm_shape *s, int64_t m, int64_t k, int64_t batch) {
    return s->tA ? span(k, m, s->lda, batch, s->sA) : span(m, k, s->lda, batch, s->sA);
}

int64_t llmc_gemm_span_b(const llmc_gemm_shape *s, int64_t k, int64_t n, int64_t batch) {
    return s->tB ? span(n, k, s->ldb, batch, s->sB) : span(k, n, s->ldb, batch, s->sB);
}

int64_t llmc_gemm_span_c(const llmc_gemm_shape *s, int64_t m, int64_t n, int64_t batch) {
    return span(m, n, s->ldc, batch, s->sC);
}

/* make (*rows - 1) * ld + *width <= limit: fewer rows first; the width only when a single
 * row is already too wide (then one row per piece). Returns 1 if anything changed. */
static int fit(int64_t *rows, int64_t *width, int64_t ld, int64_t limit) {
    const int64_t r0 = *rows, w0 = *width;
    if (*width > limit) *width = limit;
    const int64_t r_max = (limit - *width) / ld + 1;
    if (*rows > r_max) *rows = r_max;
    return *rows != r0 || *width != w0;
}

/* at most as many batch entries as keep (bc - 1) * stride + one >= 0 within limit */
static int64_t batch_fit(int64_t bc, int64_t one, int64_t stride, int64_t limit) {
    if (stride <= 0 || bc <= 1) return bc;
    return min64(bc, (limit - one) / stride + 1);
}

int llmc_gemm_plan(const llmc_gemm_shape *s, int64_t limit, llmc_gemm_split *out) {
    const int64_t I32 = 2147483647;
    memset(out, 0, sizeof(*out));
    if (limit < 1 || s->M < 1 || s->N < 1 || s->K < 1 || s->batch < 1) return 0;
    if (s->lda < 1 || s->ldb < 1 || s->ldc < 1 || s->lda > I32 || s->ldb > I32 || s->ldc > I32)
        return 0;
    if (s->sA < 0 || s->sB < 0 || s->sC < 0) return 0;
    if (limit > LLMC_GEMM_SPAN_LIMIT) limit = LLMC_GEMM_SPAN_LIMIT;
    int64_t mc = min64(s->M, I32), nc = min64(s->N, I32), kc = min64(s->K, I32);
    int64_t bc = min64(s->batch, I32);
    /* each fit only lowers sizes and no lowering raises another span: this ends, and when
     * nothing changes every single-matrix span is within the limit */
    for (int changed = 1; changed;) {
        changed = fit(&mc, &nc, s->ldc, limit);
        changed |= s->tA ? fit(&kc, &mc, s->lda, limit) : fit(&mc, &kc, s->lda, limit);
        changed |= s->tB ? fit(&nc, &kc, s->ldb, limit) : fit(&kc, &nc, s->ldb, limit);
    }
    if (mc < 1 || nc < 1 || kc < 1) return 0;
    bc = batch_fit(bc, llmc_gemm_span_a(s, mc, kc, 1), s->sA, limit);
    bc = batch_fit(bc, llmc_gemm_span_b(s, kc, nc, 1), s->sB, limit);
    bc = batch_fit(bc, llmc_gemm_span_c(s, mc, nc, 1), s->sC, limit);
    if (bc < 1) return 0;
    /* as few pieces as those sizes allow, made as equal as possible (smaller pieces only
     * shrink the spans) */
    out->nm = ceil_div(s->M, mc), out->mc = ceil_div(s->M, out->nm);
    out->nn = ceil_div(s->N, nc), out->nc = ceil_div(s->N, out->nn);
    out->nk = ceil_div(s->K, kc), out->kc = ceil_div(s->K, out->nk);
    out->nb = ceil_div(s->batch, bc), out->bc = ceil_div(s->batch, out->nb);
    return 1;
}

int64_t llmc_gemm_num_pieces(const llmc_gemm_split *p) { return p->nb * p->nm * p->nn * p->nk; }

void llmc_gemm_piece_at(const llmc_gemm_shape *s, const llmc_gemm_split *p, int64_t i,
                        llmc_gemm_piece *out) {
    const int64_t ik = i % p->nk;
    i /= p->nk;
    const int64_t in = i % p->nn;
    i /= p->nn;
    const int64_t im = i % p->nm;
    const int64_t ib = i / p->nm;
    const int64_t b0 = ib * p->bc, m0 = im * p->mc, n0 = in * p->nc, k0 = ik * p->kc;
    out->batch = min64(p->bc, s->batch - b0);
    out->m = min64(p->mc, s->M - m0);
    out->n = min64(p->nc, s->N - n0);
    out->k = min64(p->kc, s->K - k0);
    out->offA = b0 * s->sA + (s->tA ? k0 * s->lda + m0 : m0 * s->lda + k0);
    out->offB = b0 * s->sB + (s->tB ? n0 * s->ldb + k0 : k0 * s->ldb + n0);
    out->offC = b0 * s->sC + m0 * s->ldc + n0;
    out->first_k = ik == 0;
}

void llmc_gemm_cublas_call(const llmc_gemm_shape *s, const llmc_gemm_piece *p,
                           llmc_cublas_call *out) {
    out->first_trans = s->tB;
    out->second_trans = s->tA;
    out->m = p->n;
    out->n = p->m;
    out->k = p->k;
    out->first_off = p->offB;
    out->second_off = p->offA;
    out->c_off = p->offC;
    out->first_ld = s->ldb;
    out->second_ld = s->lda;
    out->ldc = s->ldc;
    out->first_stride = s->sB;
    out->second_stride = s->sA;
    out->c_stride = s->sC;
    out->batch = p->batch;
}

int32_t llmc_token_segments(const int32_t *inp, int32_t n, int32_t V, int32_t *counts,
                            int32_t *order, int32_t *rows, int32_t *seg) {
    memset(counts, 0, ((size_t)V + 1) * sizeof(int32_t));
    for (int32_t i = 0; i < n; i++) {
        if (inp[i] < 0 || inp[i] >= V) return -1;
        counts[inp[i] + 1]++;
    }
    for (int32_t v = 0; v < V; v++) counts[v + 1] += counts[v]; /* counts[v]: start of v */
    int32_t U = 0;
    for (int32_t v = 0; v < V; v++) {
        if (counts[v + 1] > counts[v]) {
            rows[U] = v;
            seg[U] = counts[v];
            U++;
        }
    }
    seg[U] = n;
    /* positions in increasing order, each to the next free slot of its token: stable */
    for (int32_t i = 0; i < n; i++) order[counts[inp[i]]++] = i;
    return U;
}
