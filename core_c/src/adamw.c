/* adamw.c - the AdamW update, written to match torch.optim.AdamW operation for operation:
 * decoupled decay first, lerp-form first moment, and every scalar derived from the
 * hyperparameters in double, rounded to float once (torch forms them from Python floats). */
#include "internal.h"

#include "bf16.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LLMC_X86 1
#include <immintrin.h>
#endif

/* The update's scalars, formed in double from the hyperparameters and rounded once. */
typedef struct {
    float one_minus_b1, b2, one_minus_b2, neg_step_size, bc2_sqrt, eps_f, decay;
} adamw_scalars;

static adamw_scalars adamw_scalars_of(double lr, double beta1, double beta2, double eps,
                                      double weight_decay, int t) {
    const double bc1 = 1.0 - pow(beta1, (double)t);
    const double bc2 = 1.0 - pow(beta2, (double)t);
    adamw_scalars k;
    k.one_minus_b1 = (float)(1.0 - beta1);
    k.b2 = (float)beta2;
    k.one_minus_b2 = (float)(1.0 - beta2);
    k.neg_step_size = (float)(-(lr / bc1));
    k.bc2_sqrt = (float)sqrt(bc2);
    k.eps_f = (float)eps;
    k.decay = (float)(1.0 - lr * weight_decay);
    return k;
}

/* the scalars as the locals ADAMW_NEW reads */
#define ADAMW_SCALAR_LOCALS(k)                                                             \
    const float one_minus_b1 = (k).one_minus_b1, b2 = (k).b2, one_minus_b2 = (k).one_minus_b2; \
    const float neg_step_size = (k).neg_step_size, bc2_sqrt = (k).bc2_sqrt, eps_f = (k).eps_f; \
    const float decay = (k).decay

/* The new weight pn of element i whose weight is p0 (m[i] and v[i] updated with it). */
#define ADAMW_NEW(i, p0, pn)                                                               \
    const float g = grad[i] * grad_scale; /* exact when grad_scale is 1 */                 \
    const float p = (p0) * decay;                                                          \
    const float mi = m[i] + one_minus_b1 * (g - m[i]);                                     \
    const float vi = v[i] * b2 + one_minus_b2 * g * g;                                     \
    m[i] = mi;                                                                             \
    v[i] = vi;                                                                             \
    const float denom = sqrtf(vi) / bc2_sqrt + eps_f;                                      \
    const float pn = p + neg_step_size * (mi / denom)

/* One element of the update; STORE16 writes the bf16 image of the new weight (or nothing). */
#define ADAMW_ELEMENT(i, STORE16)                                                          \
    do {                                                                                   \
        ADAMW_NEW(i, param[i], pn);                                                        \
        param[i] = pn;                                                                     \
        STORE16;                                                                           \
    } while (0)
#define ADAMW_RANGE_ARGS                                                                   \
    const float *grad, float *m, float *v, size_t n, float grad_scale, float decay,        \
        float one_minus_b1, float b2, float one_minus_b2, float neg_step_size,             \
        float bc2_sqrt, float eps_f

LLMC_CLONES static void adamw_range(float *param, ADAMW_RANGE_ARGS) {
    for (size_t i = 0; i < n; i++) ADAMW_ELEMENT(i, (void)0);
}

/* bf16 precision: the update already streams every weight, so writing its bf16 image here
 * costs 2 bytes per parameter of store traffic instead of a separate pass that reads the
 * fp32 weights again */
LLMC_CLONES static void adamw_range16(float *param, uint16_t *param16, ADAMW_RANGE_ARGS) {
    for (size_t i = 0; i < n; i++)
        ADAMW_ELEMENT(i, param16[i] = (uint16_t)llmc_bf16_bits(param[i]));
}

/* Planes (bf16_planes.c): n / 16 whole words of up, the elements 16 to a word. One word's
 * elements are one short loop, so its bits are gathered in a register and stored once. */
LLMC_CLONES static void adamw_range_planes(uint16_t *hi, uint16_t *lo, uint16_t *up,
                                           ADAMW_RANGE_ARGS) {
    for (size_t w = 0; w < n / 16; w++) {
        const uint32_t in = up[w];
        uint32_t out = 0;
#pragma omp simd reduction(| : out)
        for (uint32_t k = 0; k < 16; k++) {
            const size_t i = w * 16 + k;
            ADAMW_NEW(i, llmc_planes_value(hi[i], lo[i], (in >> k) & 1u), pn);
            out |= llmc_planes_split(pn, hi + i, lo + i) << k;
        }
        up[w] = (uint16_t)out;
    }
}

#ifdef LLMC_X86
/* The loop above in AVX-512, one word (16 weights) per iteration, the bits of up as the
 * lane mask: GCC vectorised that loop at 8 lanes with the bits gathered lane by lane, which
 * made AdamW compute-bound (about 1.6x the time of the fp32 weights' update). The operations
 * and their order are ADAMW_NEW's and bf16.h's, so the bits are the same (IEEE operations,
 * no contraction: -ffp-contract=off under ISO C). */
__attribute__((target("avx512f"))) static void adamw_range_planes_avx512(
    uint16_t *hi, uint16_t *lo, uint16_t *up, ADAMW_RANGE_ARGS) {
    const __m512 gs = _mm512_set1_ps(grad_scale), dc = _mm512_set1_ps(decay);
    const __m512 ob1 = _mm512_set1_ps(one_minus_b1), vb2 = _mm512_set1_ps(b2);
    const __m512 ob2 = _mm512_set1_ps(one_minus_b2), nss = _mm512_set1_ps(neg_step_size);
    const __m512 b2s = _mm512_set1_ps(bc2_sqrt), ep = _mm512_set1_ps(eps_f);
    const __m512i one = _mm512_set1_epi32(1), low16 = _mm512_set1_epi32(0xFFFF);
    const __m512i absmask = _mm512_set1_epi32(0x7FFFFFFF), sign = _mm512_set1_epi32((int)0x80000000u);
    const __m512i smallest = _mm512_set1_epi32(0x00800000), inf = _mm512_set1_epi32(0x7F800000);
    const __m512i quiet = _mm512_set1_epi32(0x00400000), half = _mm512_set1_epi32(0x7FFF);
    for (size_t w = 0; w < n / 16; w++) {
        const size_t i = w * 16;
        const __mmask16 in = (__mmask16)up[w];
        __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(hi + i)));
        const __m512i l = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(lo + i)));
        h = _mm512_and_si512(_mm512_mask_sub_epi32(h, in, h, one), low16);
        const __m512 p0 = _mm512_castsi512_ps(_mm512_or_si512(_mm512_slli_epi32(h, 16), l));
        const __m512 g = _mm512_mul_ps(_mm512_loadu_ps(grad + i), gs);
        const __m512 p = _mm512_mul_ps(p0, dc);
        const __m512 m0 = _mm512_loadu_ps(m + i), v0 = _mm512_loadu_ps(v + i);
        const __m512 mi = _mm512_add_ps(m0, _mm512_mul_ps(ob1, _mm512_sub_ps(g, m0)));
        const __m512 vi = _mm512_add_ps(_mm512_mul_ps(v0, vb2), _mm512_mul_ps(_mm512_mul_ps(ob2, g), g));
        _mm512_storeu_ps(m + i, mi);
        _mm512_storeu_ps(v + i, vi);
        const __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), b2s), ep);
        const __m512 pn = _mm512_add_ps(p, _mm512_mul_ps(nss, _mm512_div_ps(mi, denom)));
        /* llmc_planes_split */
        __m512i u = _mm512_castps_si512(pn);
        const __m512i mag = _mm512_and_si512(u, absmask);
        const __mmask16 tiny = _mm512_cmplt_epu32_mask(mag, smallest);
        const __mmask16 nan = _mm512_cmpgt_epu32_mask(mag, inf);
        u = _mm512_mask_and_epi32(u, tiny, u, sign);
        u = _mm512_mask_or_epi32(u, nan, u, quiet);
        const __m512i top = _mm512_srli_epi32(u, 16);
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(half, _mm512_and_si512(top, one))), 16);
        r = _mm512_mask_mov_epi32(r, _kor_mask16(tiny, nan), top); /* zeros and quiet NaNs: their high half */
        _mm256_storeu_si256((__m256i *)(hi + i), _mm512_cvtepi32_epi16(r));
        _mm256_storeu_si256((__m256i *)(lo + i), _mm512_cvtepi32_epi16(_mm512_and_si512(u, low16)));
        up[w] = (uint16_t)_mm512_cmpneq_epi32_mask(top, r);
    }
}

/* The same in AVX2, a word as two halves of 8 lanes: the bits of up shifted into the lanes,
 * the new ones gathered by movemask (the portable loop took 2.7 times the instructions of the
 * fp32 weights' update under callgrind). */
__attribute__((target("avx2"))) static void planes_half_avx2(
    uint16_t *hi, uint16_t *lo, uint32_t bits, const float *grad, float *m, float *v,
    const adamw_scalars *k, float grad_scale, __m256i *h_out, __m256i *l_out, uint32_t *up_out) {
    const __m256i one = _mm256_set1_epi32(1), low16 = _mm256_set1_epi32(0xFFFF);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i up = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)bits), lane), one);
    const __m256i h = _mm256_and_si256(
        _mm256_sub_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)hi)), up), low16);
    const __m256i l = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)lo));
    const __m256 p0 = _mm256_castsi256_ps(_mm256_or_si256(_mm256_slli_epi32(h, 16), l));
    const __m256 g = _mm256_mul_ps(_mm256_loadu_ps(grad), _mm256_set1_ps(grad_scale));
    const __m256 p = _mm256_mul_ps(p0, _mm256_set1_ps(k->decay));
    const __m256 m0 = _mm256_loadu_ps(m), v0 = _mm256_loadu_ps(v);
    const __m256 mi = _mm256_add_ps(m0, _mm256_mul_ps(_mm256_set1_ps(k->one_minus_b1), _mm256_sub_ps(g, m0)));
    const __m256 vi = _mm256_add_ps(_mm256_mul_ps(v0, _mm256_set1_ps(k->b2)),
                                    _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(k->one_minus_b2), g), g));
    _mm256_storeu_ps(m, mi);
    _mm256_storeu_ps(v, vi);
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), _mm256_set1_ps(k->bc2_sqrt)),
                                       _mm256_set1_ps(k->eps_f));
    const __m256 pn = _mm256_add_ps(p, _mm256_mul_ps(_mm256_set1_ps(k->neg_step_size), _mm256_div_ps(mi, denom)));
    /* llmc_planes_split; magnitudes are below 2^31, so signed compares do */
    __m256i u = _mm256_castps_si256(pn);
    const __m256i mag = _mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF));
    const __m256i tiny = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x00800000), mag);
    const __m256i nan = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7F800000));
    u = _mm256_blendv_epi8(u, _mm256_and_si256(u, _mm256_set1_epi32((int)0x80000000u)), tiny);
    u = _mm256_blendv_epi8(u, _mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), nan);
    const __m256i top = _mm256_srli_epi32(u, 16);
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), _mm256_and_si256(top, one))), 16);
    r = _mm256_blendv_epi8(r, top, _mm256_or_si256(tiny, nan)); /* zeros and quiet NaNs: their high half */
    *h_out = r;
    *l_out = _mm256_and_si256(u, low16);
    *up_out = ~(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(top, r))) & 0xFFu;
}

__attribute__((target("avx2"))) static void adamw_range_planes_avx2(
    uint16_t *hi, uint16_t *lo, uint16_t *up, const float *grad, float *m, float *v, size_t n,
    const adamw_scalars *k, float grad_scale) {
    for (size_t w = 0; w < n / 16; w++) {
        const size_t i = w * 16;
        __m256i h0, l0, h1, l1;
        uint32_t u0, u1;
        planes_half_avx2(hi + i, lo + i, up[w], grad + i, m + i, v + i, k, grad_scale, &h0, &l0, &u0);
        planes_half_avx2(hi + i + 8, lo + i + 8, (uint32_t)up[w] >> 8, grad + i + 8, m + i + 8,
                         v + i + 8, k, grad_scale, &h1, &l1, &u1);
        /* 16-bit packs work within 128-bit lanes: put the quarters back in order */
        _mm256_storeu_si256((__m256i *)(hi + i), _mm256_permute4x64_epi64(_mm256_packus_epi32(h0, h1), 0xD8));
        _mm256_storeu_si256((__m256i *)(lo + i), _mm256_permute4x64_epi64(_mm256_packus_epi32(l0, l1), 0xD8));
        up[w] = (uint16_t)(u0 | (u1 << 8));
    }
}

/* The widest of the loops above this CPU runs and LLMC_GEMM_ISA allows (avx2 or generic: the
 * switch the tests use to run the lesser kernels on any machine): 2 AVX-512, 1 AVX2, 0 the
 * portable loop */
static int planes_kernel(void) {
    const char *force = getenv("LLMC_GEMM_ISA");
    __builtin_cpu_init();
    if (force && !strcmp(force, "generic")) return 0;
    if (!(force && !strcmp(force, "avx2")) && __builtin_cpu_supports("avx512f")) return 2;
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}
#endif

/* the same for single elements [j0, j1) (the ends of a range that are not whole words); the
 * same operations as above in the same order, so the same bits */
static void adamw_elems_planes(uint16_t *hi, uint16_t *lo, uint16_t *up, size_t j0, size_t j1,
                               ADAMW_RANGE_ARGS) {
    (void)n;
    for (size_t j = j0; j < j1; j++) {
        const size_t i = j - j0;
        ADAMW_NEW(i, llmc_planes_get(hi, lo, up, j), pn);
        llmc_planes_put(hi, lo, up, j, pn);
    }
}

void adamw_update_planes(llmc_model *md, int ti, size_t j0, size_t j1, const float *grad,
                         float *m, float *v, double lr, double beta1, double beta2, double eps,
                         double weight_decay, int t, float grad_scale, int nt) {
    const adamw_scalars k = adamw_scalars_of(lr, beta1, beta2, eps, weight_decay, t);
    ADAMW_SCALAR_LOCALS(k);
    const size_t n = md->param_sizes[ti];
    uint16_t *hi = (uint16_t *)(void *)md->p[ti], *lo = hi + n;
    uint16_t *up = md->planes_up + md->planes_up_off[ti];
    /* whole words [w0, w1) in parallel; the partial words at the ends first, alone */
    const size_t w0 = (j0 + 15) / 16, w1 = j1 / 16;
#define PLANES_ARGS(J0) grad + ((J0) - j0), m + ((J0) - j0), v + ((J0) - j0)
#define HP_ARGS grad_scale, decay, one_minus_b1, b2, one_minus_b2, neg_step_size, bc2_sqrt, eps_f
    if (w0 >= w1) {
        adamw_elems_planes(hi, lo, up, j0, j1, PLANES_ARGS(j0), j1 - j0, HP_ARGS);
        return;
    }
    adamw_elems_planes(hi, lo, up, j0, w0 * 16, PLANES_ARGS(j0), w0 * 16 - j0, HP_ARGS);
    adamw_elems_planes(hi, lo, up, w1 * 16, j1, PLANES_ARGS(w1 * 16), j1 - w1 * 16, HP_ARGS);
    int wide = 0;
#ifdef LLMC_X86
    wide = planes_kernel();
#endif
#pragma omp parallel num_threads(nt)
    {
        const size_t tid = (size_t)LLMC_THREAD_ID(), nth = (size_t)LLMC_TEAM_SIZE();
        const size_t a = w0 + (w1 - w0) * tid / nth, b = w0 + (w1 - w0) * (tid + 1) / nth;
#ifdef LLMC_X86
        if (wide == 2)
            adamw_range_planes_avx512(hi + a * 16, lo + a * 16, up + a, PLANES_ARGS(a * 16),
                                      (b - a) * 16, HP_ARGS);
        else if (wide == 1)
            adamw_range_planes_avx2(hi + a * 16, lo + a * 16, up + a, PLANES_ARGS(a * 16),
                                    (b - a) * 16, &k, grad_scale);
        else
#endif
            adamw_range_planes(hi + a * 16, lo + a * 16, up + a, PLANES_ARGS(a * 16),
                               (b - a) * 16, HP_ARGS);
    }
    (void)wide;
#undef PLANES_ARGS
#undef HP_ARGS
}

void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int t,
                  float grad_scale, int nt) {
    adamw_update16(param, NULL, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, t,
                   grad_scale, nt);
}

void adamw_update16(float *param, uint16_t *param16, const float *grad, float *m, float *v,
                    size_t n, double lr, double beta1, double beta2, double eps,
                    double weight_decay, int t, float grad_scale, int nt) {
    const adamw_scalars k = adamw_scalars_of(lr, beta1, beta2, eps, weight_decay, t);
    ADAMW_SCALAR_LOCALS(k);
/* one contiguous chunk per thread: the range helper is cloned for wide vectors (scalar
 * SSE2 sqrt and two divides per element made AdamW compute-bound) */
#pragma omp parallel num_threads(nt)
    {
        const size_t tid = (size_t)LLMC_THREAD_ID(), nth = (size_t)LLMC_TEAM_SIZE();
        const size_t lo = n * tid / nth, hi = n * (tid + 1) / nth;
        if (param16)
            adamw_range16(param + lo, param16 + lo, grad + lo, m + lo, v + lo, hi - lo,
                          grad_scale, decay, one_minus_b1, b2, one_minus_b2, neg_step_size,
                          bc2_sqrt, eps_f);
        else
            adamw_range(param + lo, grad + lo, m + lo, v + lo, hi - lo, grad_scale, decay,
                        one_minus_b1, b2, one_minus_b2, neg_step_size, bc2_sqrt, eps_f);
    }
}

/* Sum of squares of one block, lanes summed in a fixed order (double: 124M squares). */
LLMC_CLONES static double sumsq_block(const float *g, size_t n) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return s;
}

LLMC_CLONES static void add_block(float *g, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] += src[i];
}

/* Sum of squares of g[0, n), after g += src when src is not NULL (the reduce of data
 * parallel's reduce-scatter: each block is summed right after its add, while it is in cache,
 * so the norm needs no second pass). Fixed blocks (at most SUMSQ_MAX_BLOCKS of them) summed
 * in block order, so the result does not depend on the thread count, nor on whether the add
 * came first or in another call. */
#define SUMSQ_MAX_BLOCKS 4096
static double blocked_sumsq(float *g, const float *src, size_t n, int nt) {
    double block_sums[SUMSQ_MAX_BLOCKS];
    size_t bs = n / SUMSQ_MAX_BLOCKS + 1;
    if (bs < 16384) bs = 16384;
    const long nb = (long)((n + bs - 1) / bs);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long b = 0; b < nb; b++) {
        const size_t lo = (size_t)b * bs, hi = lo + bs < n ? lo + bs : n;
        if (src) add_block(g + lo, src + lo, hi - lo);
        block_sums[b] = sumsq_block(g + lo, hi - lo);
    }
    double s = 0.0;
    for (long b = 0; b < nb; b++) s += block_sums[b];
    return s;
}

double grad_sumsq(const float *g, size_t n, int nt) {
    return blocked_sumsq((float *)g, NULL, n, nt); /* no src: g is only read */
}

/* ---- slices of the parameter buffer (ZeRO-1: each process updates its own slice) ---- */

static int check_range(llmc_model *m, int64_t offset, int64_t count, const char *what) {
    if (m->device != LLMC_DEVICE_CPU)
        return llmc_fail(m, LLMC_ERR_UNSUPPORTED, "%s: CPU models only", what);
    if (offset < 0 || count < 0 || (uint64_t)offset > m->num_params ||
        (uint64_t)count > m->num_params - (uint64_t)offset)
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT,
                         "%s: slice of %lld floats at offset %lld is outside the %zu parameters",
                         what, (long long)count, (long long)offset, m->num_params);
    return LLMC_OK;
}

LLMC_API int32_t llmc_model_adamw_step_range(llmc_model *m, const llmc_adamw_params *hp,
                                             int64_t offset, int64_t count, float *adam_m,
                                             float *adam_v) {
    if (!m) return LLMC_ERR_INVALID_ARGUMENT;
    int st = check_range(m, offset, count, "adamw_step_range");
    if (st != LLMC_OK) return st;
    if ((adam_m == NULL) != (adam_v == NULL))
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT,
                         "adamw_step_range: adam_m and adam_v must both be given or both NULL");
    st = llmc_check_adamw_params(m, hp);
    if (st != LLMC_OK) return st;
    const size_t lo = (size_t)offset, hi = lo + (size_t)count;
    float *mm = adam_m ? adam_m : m->adam_m + lo;
    float *vv = adam_v ? adam_v : m->adam_v + lo;
    /* the part of each tensor inside [lo, hi), with that tensor's weight decay */
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const size_t t0 = m->param_offsets[i], t1 = t0 + m->param_sizes[i];
        const size_t a = t0 > lo ? t0 : lo, b = t1 < hi ? t1 : hi;
        if (a >= b) continue;
        if (m->planes && planes_tensor(i)) {
            adamw_update_planes(m, i, a - t0, b - t0, m->grads + a, mm + (a - lo), vv + (a - lo),
                                hp->lr, hp->beta1, hp->beta2, hp->eps,
                                llmc_param_weight_decay(hp, i), hp->t, hp->grad_scale,
                                m->nthreads);
            continue;
        }
        /* a current bf16 copy stays current: its slice is rewritten with the weights */
        uint16_t *p16 = m->params16 && m->params16_valid ? m->params16 + a : NULL;
        adamw_update16(m->params + a, p16, m->grads + a, mm + (a - lo), vv + (a - lo), b - a,
                       hp->lr, hp->beta1, hp->beta2, hp->eps, llmc_param_weight_decay(hp, i),
                       hp->t, hp->grad_scale, m->nthreads);
    }
    return LLMC_OK;
}

LLMC_API int32_t llmc_model_grad_sumsq_range(llmc_model *m, int64_t offset, int64_t count,
                                             double *sumsq) {
    if (!m) return LLMC_ERR_INVALID_ARGUMENT;
    if (!sumsq) return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "grad_sumsq_range: sumsq is NULL");
    const int st = check_range(m, offset, count, "grad_sumsq_range");
    if (st != LLMC_OK) return st;
    *sumsq = grad_sumsq(m->grads + offset, (size_t)count, m->nthreads);
    return LLMC_OK;
}

LLMC_API int32_t llmc_model_grad_add_range(llmc_model *m, int64_t offset, int64_t count,
                                           const float *src, double *sumsq) {
    if (!m) return LLMC_ERR_INVALID_ARGUMENT;
    if (!src && count > 0)
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "grad_add_range: src is NULL");
    const int st = check_range(m, offset, count, "grad_add_range");
    if (st != LLMC_OK) return st;
    const double s = blocked_sumsq(m->grads + offset, src, (size_t)count, m->nthreads);
    if (sumsq) *sumsq = s;
    return LLMC_OK;
}
