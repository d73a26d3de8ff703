/*
 * bench_kernels.c - time each kernel of the C core alone, at the shapes of one training step,
 * and probe the core's own GEMM peak.
 *
 *   bench_kernels kernels B T C NH V Vp L threads repeats [fp32|bf16]
 *   bench_kernels gemm N threads repeats [fp32|bf16]
 *   bench_kernels fma threads repeats
 *   bench_kernels dot threads repeats
 *
 * `kernels` prints a JSON list, one entry per kernel call site kind: its name, group, how
 * many times one training step of an L-layer model calls it (calls_per_step), and the min
 * and median milliseconds of one call over `repeats` timed calls after one warm-up call.
 * `gemm` prints the best GFLOP/s of an N x N x N llmc_sgemm in the forward (A B^T) layout.
 * `fma` prints the FMA throughput of `threads` threads (register-only, widest vectors).
 * `dot` prints the bf16 dot-product throughput (vdpbf16ps, AVX512_BF16: 64 flops per
 * instruction) in the same way: the bf16 peak ("isa": "none" and null where the CPU lacks it). A trailing bf16 runs `kernels` and `gemm` in
 * bf16 precision (GEMM operands rounded to bf16, llmc_gemm_bf16).
 *
 * Unlike bench_step.c this program calls the kernels declared in core_c/src/internal.h,
 * which is not a stable interface: when a kernel's signature changes or kernels are fused,
 * update the calls below (each kernel is one small function). The Python side reports a
 * build failure as "kernels skipped" with the compiler's message, so nothing else breaks.
 */
#define _POSIX_C_SOURCE 200112L /* setenv */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static float *buf(size_t n, float scale) {
    float *p = malloc(n * sizeof(float) + 64);
    if (!p) {
        fprintf(stderr, "bench_kernels: out of memory (%zu floats)\n", n);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) p[i] = scale * frand();
    return p;
}

/* Everything one step's kernels touch, for one layer (weights are reused across layers). */
typedef struct {
    int B, T, C, NH, V, Vp, L, nt;
    llmc_exec ex;
    int32_t *inp, *tgt;
    float *wte, *wpe, *dwte, *dwpe;
    float *x, *y, *dx, *dy;             /* (BT, C) */
    float *mean, *rstd;                 /* (BT) */
    float *lnw, *lnb, *dlnw, *dlnb;     /* (C) */
    float *qkv, *dqkv, *att;            /* (BT, 3C), (B, NH, T, T) */
    float *h4, *g4, *dh4, *dg4;         /* (BT, 4C) */
    float *w, *bias, *dw, *dbias;       /* up to (4C, C) / (Vp, C) */
    float *logits, *probs, *losses, *dlogits;
    float *p, *g, *m, *v;               /* AdamW over all parameters */
    uint16_t *p16;                      /* bf16: their bf16 image, written by the update */
    size_t num_params;
    int which;                          /* matmul shape: 0 qkv 1 attproj 2 fc 3 fcproj 4 classifier */
} ctx;

static void mm_shape(const ctx *c, int which, int *IC, int *OC) {
    switch (which) {
    case 0: *IC = c->C; *OC = 3 * c->C; break;
    case 1: *IC = c->C; *OC = c->C; break;
    case 2: *IC = c->C; *OC = 4 * c->C; break;
    case 3: *IC = 4 * c->C; *OC = c->C; break;
    default: *IC = c->C; *OC = c->Vp; break;
    }
}
static const float *mm_in(const ctx *c, int which) { return which == 3 ? c->g4 : c->x; }

static void k_encoder_fwd(ctx *c) { encoder_forward(c->y, c->inp, c->wte, c->wpe, c->B, c->T, c->C, c->nt); }
static void k_encoder_bwd(ctx *c) { encoder_backward(c->dwte, c->dwpe, c->dy, c->inp, c->B, c->T, c->C, c->nt); }
static void k_ln_fwd(ctx *c) {
    layernorm_forward(c->y, c->mean, c->rstd, c->x, c->lnw, c->lnb, c->B * c->T, c->C, c->nt);
}
static void k_ln_bwd(ctx *c) {
    layernorm_backward(c->dx, c->dlnw, c->dlnb, c->dy, c->x, c->lnw, c->mean, c->rstd,
                       c->B * c->T, c->C, c->nt);
}
static void k_mm_fwd(ctx *c) {
    int IC, OC;
    mm_shape(c, c->which, &IC, &OC);
    float *out = c->which == 4 ? c->logits : c->which == 0 ? c->qkv : c->which == 2 ? c->h4 : c->y;
    const float *w = c->which == 4 ? c->wte : c->w;
    matmul_forward(out, mm_in(c, c->which), w, c->which == 4 ? NULL : c->bias, c->B * c->T, IC, OC, &c->ex);
}
static void k_mm_bwd(ctx *c) {
    int IC, OC;
    mm_shape(c, c->which, &IC, &OC);
    const float *dout = c->which == 4 ? c->dlogits : c->which == 0 ? c->dqkv : c->which == 2 ? c->dh4 : c->dy;
    float *dinp = c->which == 3 ? c->dg4 : c->dx;
    const float *w = c->which == 4 ? c->wte : c->w;
    float *dw = c->which == 4 ? c->dwte : c->dw;
    matmul_backward(dinp, dw, c->which == 4 ? NULL : c->dbias, dout, mm_in(c, c->which), w,
                    c->B * c->T, IC, OC, &c->ex);
}
static void k_att_fwd(ctx *c) { attention_forward(c->y, c->att, c->qkv, c->B, c->T, c->C, c->NH, &c->ex); }
static void k_att_bwd(ctx *c) {
    attention_backward(c->dqkv, c->dy, c->qkv, c->att, c->B, c->T, c->C, c->NH, &c->ex);
}
static void k_gelu_fwd(ctx *c) { gelu_forward(c->g4, c->h4, (size_t)c->B * c->T * 4 * c->C, c->nt); }
static void k_gelu_bwd(ctx *c) { gelu_backward(c->dh4, c->h4, c->dg4, (size_t)c->B * c->T * 4 * c->C, c->nt); }
static void k_residual(ctx *c) { residual_forward(c->dx, c->x, c->y, (size_t)c->B * c->T * c->C, c->nt); }
static void k_ce_fwd(ctx *c) {
    crossentropy_forward(c->probs, c->losses, c->logits, c->tgt, c->B * c->T, c->V, c->Vp, c->nt);
}
static void k_ce_bwd(ctx *c) {
    crossentropy_backward(c->dlogits, c->probs, c->tgt, 1.0f / (float)(c->B * c->T), c->B * c->T,
                          c->V, c->Vp, c->nt);
}
static void k_adamw(ctx *c) {
    adamw_update16(c->p, c->p16, c->g, c->m, c->v, c->num_params, 1e-4, 0.9, 0.999, 1e-8, 0.1, 1,
                   1.0f, c->nt);
}

typedef struct {
    const char *name, *group;
    void (*fn)(ctx *);
    int which;      /* matmul shape, -1 otherwise */
    long calls;     /* per training step */
    double flops;   /* per call (matmuls and attention), 0 when not counted */
} kernel;

static void time_kernel(ctx *c, const kernel *k, int repeats, int first) {
    c->which = k->which;
    k->fn(c); /* warm-up */
    double *ts = malloc(sizeof(double) * (size_t)repeats);
    for (int r = 0; r < repeats; r++) {
        double t0 = now_s();
        k->fn(c);
        ts[r] = now_s() - t0;
    }
    for (int i = 1; i < repeats; i++) { /* insertion sort for the median */
        double v = ts[i];
        int j = i - 1;
        while (j >= 0 && ts[j] > v) { ts[j + 1] = ts[j]; j--; }
        ts[j + 1] = v;
    }
    double med = repeats % 2 ? ts[repeats / 2] : 0.5 * (ts[repeats / 2 - 1] + ts[repeats / 2]);
    printf("%s\n  {\"name\": \"%s\", \"group\": \"%s\", \"calls_per_step\": %ld, \"flops\": %.6g, "
           "\"ms_min\": %.6f, \"ms_median\": %.6f}",
           first ? "" : ",", k->name, k->group, k->calls, k->flops, 1e3 * ts[0], 1e3 * med);
    fflush(stdout);
    free(ts);
}

static int parse(const char *s, long lo, long hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) return 1;
    *out = (int)v;
    return 0;
}

static llmc_exec make_exec(int nt, int max_seq) {
    llmc_exec ex;
    memset(&ex, 0, sizeof(ex));
    ex.nt = nt;
    ex.gemm_ws = buf(LLMC_GEMM_WS_FLOATS * (size_t)nt, 0.0f);
    ex.row_ws = buf((size_t)max_seq * nt, 0.0f);
    ex.row_ws_len = max_seq;
    ex.dw_beta = 1.0f; /* matmul_backward accumulates into dweight, as in a model */
    return ex;
}

/* a trailing precision argument: 0 fp32 (absent or "fp32"), 1 bf16, -1 not a precision */
static int parse_precision(const char *s) {
    if (!s || !strcmp(s, "fp32")) return 0;
    return !strcmp(s, "bf16") ? 1 : -1;
}

static int run_gemm(int argc, char **argv) {
    int N, nt, repeats;
    const int bf16 = parse_precision(argc == 6 ? argv[5] : NULL);
    if ((argc != 5 && argc != 6) || bf16 < 0 || parse(argv[2], 1, 1 << 15, &N) ||
        parse(argv[3], 1, LLMC_MAX_THREADS, &nt) || parse(argv[4], 1, 100000, &repeats)) {
        fprintf(stderr, "usage: bench_kernels gemm N threads repeats [fp32|bf16]\n");
        return 2;
    }
    llmc_exec ex = make_exec(nt, 1);
    ex.bf16 = bf16;
    float *A = buf((size_t)N * N, 1.0f), *Bm = buf((size_t)N * N, 1.0f), *Cm = buf((size_t)N * N, 0.0f);
    llmc_gemm(0, 1, N, N, N, A, N, Bm, N, 0.0f, Cm, N, &ex);
    double best = 1e30;
    for (int r = 0; r < repeats; r++) {
        double t0 = now_s();
        llmc_gemm(0, 1, N, N, N, A, N, Bm, N, 0.0f, Cm, N, &ex);
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    printf("{\"n\": %d, \"threads\": %d, \"precision\": \"%s\", \"isa\": \"%s\", \"gflops\": %.3f, "
           "\"ms_min\": %.4f}\n", N, nt, bf16 ? "bf16" : "fp32", bf16 ? llmc_gemm_bf16_isa() : llmc_gemm_isa(),
           2.0 * N * (double)N * N / best / 1e9, 1e3 * best);
    return 0;
}

/* ---- FMA throughput probe: the machine's arithmetic peak, measured, not from a datasheet.
 * Each thread runs NCHAIN independent chains of fused multiply-adds in registers (enough
 * independent chains to cover the FMA latency on two ports), so nothing but the FMA units
 * limits it. Values stay finite (x = x * b + c with b slightly below 1). */
#define NCHAIN 12
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <immintrin.h>
#define FMA_X86 1
__attribute__((target("avx512f"))) static float fma_avx512(long iters) {
    __m512 x[NCHAIN];
    const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);
    for (int j = 0; j < NCHAIN; j++) x[j] = _mm512_set1_ps(1.0f + 0.01f * (float)j);
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < NCHAIN; j++) x[j] = _mm512_fmadd_ps(x[j], b, c);
    __m512 s = x[0];
    for (int j = 1; j < NCHAIN; j++) s = _mm512_add_ps(s, x[j]);
    return _mm512_reduce_add_ps(s);
}
__attribute__((target("avx2,fma"))) static float fma_avx2(long iters) {
    __m256 x[NCHAIN];
    const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
    for (int j = 0; j < NCHAIN; j++) x[j] = _mm256_set1_ps(1.0f + 0.01f * (float)j);
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < NCHAIN; j++) x[j] = _mm256_fmadd_ps(x[j], b, c);
    float out[8], r = 0.0f;
    __m256 s = x[0];
    for (int j = 1; j < NCHAIN; j++) s = _mm256_add_ps(s, x[j]);
    _mm256_storeu_ps(out, s);
    for (int k = 0; k < 8; k++) r += out[k];
    return r;
}
#endif

/* bf16 dot-product probe: NCHAIN independent vdpbf16ps chains per thread (each instruction
 * 16 lanes x 2 multiply-adds); the operands are small so the sums stay finite. */
#ifdef FMA_X86
__attribute__((target("avx512f,avx512bf16"))) static float dot_avx512bf16(long iters) {
    __m512 x[NCHAIN];
    const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(-1e-3f));
    const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.25f));
    for (int j = 0; j < NCHAIN; j++) x[j] = _mm512_set1_ps(1.0f + 0.01f * (float)j);
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < NCHAIN; j++) x[j] = _mm512_dpbf16_ps(x[j], a, b);
    __m512 s = x[0];
    for (int j = 1; j < NCHAIN; j++) s = _mm512_add_ps(s, x[j]);
    return _mm512_reduce_add_ps(s);
}
#endif

static int run_dot(int argc, char **argv) {
    int nt, repeats;
    if (argc != 4 || parse(argv[2], 1, LLMC_MAX_THREADS, &nt) || parse(argv[3], 1, 100000, &repeats)) {
        fprintf(stderr, "usage: bench_kernels dot threads repeats\n");
        return 2;
    }
    /* the GEMM's own detection (cpuid + xgetbv), asked for the vdpbf16ps kernel (on an AMX
     * machine the default kernel is amx): the probe runs where that kernel would */
    setenv("LLMC_GEMM_ISA", "avx512bf16", 1);
    const int has_dot = !strcmp(llmc_gemm_bf16_isa(), "avx512bf16");
    unsetenv("LLMC_GEMM_ISA");
    if (!has_dot) {
        printf("{\"threads\": %d, \"isa\": \"none\", \"gflops\": null}\n", nt);
        return 0;
    }
    const long iters = 20L * 1000 * 1000;
    double best = 1e30;
    volatile float sink = 0.0f;
    for (int r = 0; r <= repeats; r++) {
        double t0 = now_s();
        float acc = 0.0f;
#pragma omp parallel num_threads(nt) reduction(+ : acc)
        {
#ifdef FMA_X86
            acc += dot_avx512bf16(iters);
#endif
        }
        const double t = now_s() - t0;
        sink += acc;
        if (r > 0 && t < best) best = t;
    }
    (void)sink;
    const double flops = 4.0 * 16 * NCHAIN * (double)iters * nt; /* 16 lanes x 2 pairs x 2 flops */
    printf("{\"threads\": %d, \"isa\": \"avx512bf16\", \"gflops\": %.3f, \"ms_min\": %.4f}\n", nt,
           flops / best / 1e9, 1e3 * best);
    return 0;
}

static int run_fma(int argc, char **argv) {
    int nt, repeats;
    if (argc != 4 || parse(argv[2], 1, LLMC_MAX_THREADS, &nt) || parse(argv[3], 1, 100000, &repeats)) {
        fprintf(stderr, "usage: bench_kernels fma threads repeats\n");
        return 2;
    }
    const char *isa = "none";
    int width = 0;
#ifdef FMA_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) { isa = "avx512"; width = 16; }
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) { isa = "avx2"; width = 8; }
#endif
    if (!width) {
        printf("{\"threads\": %d, \"isa\": \"none\", \"gflops\": null}\n", nt);
        return 0;
    }
    const long iters = 20L * 1000 * 1000; /* ~0.1-0.3 s per call on one core */
    double best = 1e30;
    volatile float sink = 0.0f;
    for (int r = 0; r <= repeats; r++) { /* r == 0: warm-up (clocks up, threads started) */
        double t0 = now_s();
        float acc = 0.0f;
#pragma omp parallel num_threads(nt) reduction(+ : acc)
        {
#ifdef FMA_X86
            acc += width == 16 ? fma_avx512(iters) : fma_avx2(iters);
#endif
        }
        const double t = now_s() - t0;
        sink += acc;
        if (r > 0 && t < best) best = t;
    }
    (void)sink;
    const double flops = 2.0 * width * NCHAIN * (double)iters * nt;
    printf("{\"threads\": %d, \"isa\": \"%s\", \"gflops\": %.3f, \"ms_min\": %.4f}\n", nt, isa, flops / best / 1e9,
           1e3 * best);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "gemm") == 0) return run_gemm(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "fma") == 0) return run_fma(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "dot") == 0) return run_dot(argc, argv);
    int a[9];
    static const long hi[9] = {1 << 20, 1 << 20, 1 << 20, 1 << 16, 1 << 24, 1 << 24, 1 << 12, LLMC_MAX_THREADS, 100000};
    const int bf16 = parse_precision(argc == 12 ? argv[11] : NULL);
    int bad = (argc != 11 && argc != 12) || bf16 < 0 || strcmp(argv[1], "kernels") != 0;
    for (int i = 0; !bad && i < 9; i++) bad = parse(argv[i + 2], 1, hi[i], &a[i]);
    if (bad || a[2] % a[3] || a[5] < a[4]) {
        fprintf(stderr, "usage: bench_kernels kernels B T C NH V Vp L threads repeats [fp32|bf16]\n"
                        "       bench_kernels gemm N threads repeats [fp32|bf16]\n"
                        "       bench_kernels fma|dot threads repeats\n");
        return 2;
    }
    ctx c;
    memset(&c, 0, sizeof(c));
    c.B = a[0]; c.T = a[1]; c.C = a[2]; c.NH = a[3]; c.V = a[4]; c.Vp = a[5]; c.L = a[6]; c.nt = a[7];
    const int repeats = a[8];
    const size_t BT = (size_t)c.B * c.T, C = (size_t)c.C, Vp = (size_t)c.Vp;
    c.ex = make_exec(c.nt, (int)LLMC_ATTN_WS_FLOATS(c.T, c.C / c.NH));
    c.ex.bf16 = bf16;
    c.inp = malloc(BT * sizeof(int32_t));
    c.tgt = malloc(BT * sizeof(int32_t));
    for (size_t i = 0; i < BT; i++) {
        c.inp[i] = (int32_t)((frand() + 1.0f) * 0.5f * (float)(c.V - 1));
        c.tgt[i] = (int32_t)((frand() + 1.0f) * 0.5f * (float)(c.V - 1));
    }
    /* the matmul weights in one block, as in a model, so that in bf16 they have a bf16 image
     * that the matmuls read (ex.params16, as the model's kept weight copy) */
    float *wts = buf(Vp * C + 4 * C * C, 0.02f);
    c.wte = wts; c.wpe = buf((size_t)c.T * C, 0.02f);
    c.dwte = buf(Vp * C, 0.0f); c.dwpe = buf((size_t)c.T * C, 0.0f);
    c.x = buf(BT * C, 1.0f); c.y = buf(BT * C, 1.0f); c.dx = buf(BT * C, 0.01f); c.dy = buf(BT * C, 0.01f);
    c.mean = buf(BT, 0.0f); c.rstd = buf(BT, 0.0f);
    c.lnw = buf(C, 1.0f); c.lnb = buf(C, 0.1f); c.dlnw = buf(C, 0.0f); c.dlnb = buf(C, 0.0f);
    c.qkv = buf(BT * 3 * C, 1.0f); c.dqkv = buf(BT * 3 * C, 0.01f);
    c.att = buf((size_t)c.B * c.NH * c.T * c.T, 0.0f);
    c.h4 = buf(BT * 4 * C, 1.0f); c.g4 = buf(BT * 4 * C, 1.0f);
    c.dh4 = buf(BT * 4 * C, 0.01f); c.dg4 = buf(BT * 4 * C, 0.01f);
    c.w = wts + Vp * C; c.bias = buf(4 * C, 0.02f); c.dw = buf(4 * C * C, 0.0f); c.dbias = buf(4 * C, 0.0f);
    c.logits = buf(BT * Vp, 1.0f); c.probs = buf(BT * Vp, 0.0f); c.losses = buf(BT, 0.0f);
    c.dlogits = buf(BT * Vp, 0.0f);
    if (bf16) {
        const size_t nw = Vp * C + 4 * C * C;
        uint16_t *w16 = malloc(nw * sizeof(uint16_t));
        if (!w16) return 1;
        bf16_round_copy(w16, wts, nw, c.nt);
        c.ex.params = wts;
        c.ex.params16 = w16;
        c.ex.num_params = nw;
    }
    /* kernels whose backward needs forward results: run the forwards once */
    layernorm_forward(c.y, c.mean, c.rstd, c.x, c.lnw, c.lnb, (int)BT, c.C, c.nt);
    attention_forward(c.y, c.att, c.qkv, c.B, c.T, c.C, c.NH, &c.ex);
    crossentropy_forward(c.probs, c.losses, c.logits, c.tgt, (int)BT, c.V, c.Vp, c.nt);
    crossentropy_backward(c.dlogits, c.probs, c.tgt, 1.0f / (float)BT, (int)BT, c.V, c.Vp, c.nt);

    const long L = c.L;
    const double bt = (double)BT, cc = (double)C, att_flops = 4.0 * c.B * (double)c.T * c.T * cc;
    const kernel ks[] = {
        {"encoder_forward", "encoder", k_encoder_fwd, -1, 1, 0},
        {"layernorm_forward", "layernorm", k_ln_fwd, -1, 2 * L + 1, 0},
        {"matmul_forward.qkv", "matmul_fwd", k_mm_fwd, 0, L, 2 * bt * cc * 3 * cc},
        {"attention_forward", "attention", k_att_fwd, -1, L, att_flops},
        {"matmul_forward.attproj", "matmul_fwd", k_mm_fwd, 1, L, 2 * bt * cc * cc},
        {"residual_forward", "residual", k_residual, -1, 2 * L, 0},
        {"matmul_forward.fc", "matmul_fwd", k_mm_fwd, 2, L, 2 * bt * cc * 4 * cc},
        {"gelu_forward", "gelu", k_gelu_fwd, -1, L, 0},
        {"matmul_forward.fcproj", "matmul_fwd", k_mm_fwd, 3, L, 2 * bt * 4 * cc * cc},
        {"matmul_forward.classifier", "matmul_fwd", k_mm_fwd, 4, 1, 2 * bt * cc * (double)Vp},
        {"crossentropy_forward", "crossentropy", k_ce_fwd, -1, 1, 0},
        {"crossentropy_backward", "crossentropy", k_ce_bwd, -1, 1, 0},
        {"matmul_backward.classifier", "matmul_bwd", k_mm_bwd, 4, 1, 4 * bt * cc * (double)Vp},
        {"layernorm_backward", "layernorm", k_ln_bwd, -1, 2 * L + 1, 0},
        {"matmul_backward.fcproj", "matmul_bwd", k_mm_bwd, 3, L, 4 * bt * 4 * cc * cc},
        {"gelu_backward", "gelu", k_gelu_bwd, -1, L, 0},
        {"matmul_backward.fc", "matmul_bwd", k_mm_bwd, 2, L, 4 * bt * cc * 4 * cc},
        {"matmul_backward.attproj", "matmul_bwd", k_mm_bwd, 1, L, 4 * bt * cc * cc},
        {"attention_backward", "attention", k_att_bwd, -1, L, 2 * att_flops},
        {"matmul_backward.qkv", "matmul_bwd", k_mm_bwd, 0, L, 4 * bt * cc * 3 * cc},
        {"encoder_backward", "encoder", k_encoder_bwd, -1, 1, 0},
    };
    printf("{\"isa\": \"%s\", \"precision\": \"%s\", \"threads\": %d, \"kernels\": [",
           bf16 ? llmc_gemm_bf16_isa() : llmc_gemm_isa(), bf16 ? "bf16" : "fp32", c.nt);
    const int nk = (int)(sizeof(ks) / sizeof(ks[0]));
    for (int i = 0; i < nk; i++) time_kernel(&c, &ks[i], repeats, i == 0);
    /* AdamW over every parameter of the model (the model calls it once per tensor) */
    c.num_params = Vp * C + (size_t)c.T * C + (size_t)L * (12 * C * C + 13 * C) + 2 * C;
    c.p = buf(c.num_params, 0.02f); c.g = buf(c.num_params, 0.001f);
    c.m = buf(c.num_params, 0.0f); c.v = buf(c.num_params, 0.0f);
    c.p16 = bf16 ? malloc(c.num_params * sizeof(uint16_t)) : NULL;
    const kernel adam = {"adamw_update", "adamw", k_adamw, -1, 1, 0};
    time_kernel(&c, &adam, repeats, 0);
    printf("\n]}\n");
    return 0;
}
