/* model.c - the GPT-2 model: memory layout, named tensor table, creation and destruction,
 * argument checking of the public calls, and the CPU backend. Each training-step call checks
 * its arguments here and then runs on the model's backend (llmc_backend in internal.h): the
 * CPU one below, or the CUDA one in cuda/ when the model was created with device = CUDA. */
#define _DEFAULT_SOURCE /* posix_memalign, madvise */
#include "internal.h"

#include "bf16.h"

#include <math.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Limits that keep every size computation far from overflow and reject absurd headers
 * before anything is allocated. GPT-2 XL is L48 C1600 NH25 V50257 maxT1024. */
#define MAX_VOCAB (1 << 24)
#define MAX_CHANNELS (1 << 16)
#define MAX_LAYERS 1024
#define MAX_SEQ (1 << 20)

static const char *const PARAM_NAMES[LLMC_NUM_PARAM_TENSORS] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"};

/* 2-D weight matrices: the tensors decayed when decay_matrices_only is set */
static const int PARAM_IS_MATRIX[LLMC_NUM_PARAM_TENSORS] = {1, 1, 0, 0, 1, 0, 1, 0,
                                                            0, 0, 1, 0, 1, 0, 0, 0};

static const char *const ACT_NAMES[A_NUM] = {
    "encoded", "ln1", "ln1_mean", "ln1_rstd", "qkv", "att", "atty", "attproj", "residual2",
    "ln2", "ln2_mean", "ln2_rstd", "fch", "fch_gelu", "fcproj", "residual3",
    "lnf", "lnf_mean", "lnf_rstd", "logits", "probs", "losses"};

static int act_is_per_layer(int a) { return a >= A_LN1 && a <= A_RESIDUAL3; }

/* The activations that only GEMMs read, forward and backward: ln1 (qkv; the layernorm
 * backward reads the residual input, mean and rstd), atty (attproj; attention's backward reads
 * qkv and att), ln2 (fc), fch_gelu (fcproj; gelu's backward reads fch), lnf (the classifier).
 * The bf16 GEMMs round them to bf16 anyway, so a bf16 CPU model stores them as bf16 bits:
 * the same results to the bit, half their memory. */
static int act_is_gemm_only(int a) {
    return a == A_LN1 || a == A_ATTY || a == A_LN2 || a == A_FCH_GELU || a == A_LNF;
}

/* A layout choice of CPU bf16 models, read at creation: LLMC_BF16_ACTS (the GEMM-only
 * activations kept as bf16) and LLMC_BF16_MASTER (the matrices' master weights in planes,
 * bf16_planes.c) are on unless the variable says fp32, the layout before, kept so tests can
 * show both give the same bits. Returns 0 with the reason in why for any other value. */
static int bf16_layout_choice(const char *var, const char *on, int *keep16, char *why,
                              size_t n) {
    const char *v = getenv(var);
    *keep16 = 1;
    if (!v || !v[0] || !strcmp(v, on)) return 1;
    if (!strcmp(v, "fp32")) {
        *keep16 = 0;
        return 1;
    }
    snprintf(why, n, "environment variable %s='%.64s' is not %s or fp32", var, v, on);
    return 0;
}

/* the CPU backend (defined at the end of this file) */
static int cpu_forward(llmc_model *m, int with_targets, float *mean_loss);
static int cpu_zero_grad(llmc_model *m);
static int cpu_backward(llmc_model *m, float loss_scale, int accumulate);
static int cpu_grad_sumsq(llmc_model *m, double *sumsq);
static int cpu_scale_grads(llmc_model *m, float coef);
static int cpu_adamw(llmc_model *m, const llmc_adamw_params *hp);
static int cpu_copy(llmc_model *m, int kind, size_t offset, size_t count, float *host,
                    int to_host);
static void cpu_destroy(llmc_model *m);
static const llmc_backend cpu_backend = {"cpu",           cpu_forward, cpu_zero_grad,
                                         cpu_backward,    cpu_grad_sumsq, cpu_scale_grads,
                                         cpu_adamw,       cpu_copy,    cpu_destroy};

int llmc_validate_config(const llmc_config *c, char *why, size_t n) {
    if (c->max_seq_len < 1 || c->max_seq_len > MAX_SEQ)
        snprintf(why, n, "max_seq_len %d is outside [1, %d]", c->max_seq_len, MAX_SEQ);
    else if (c->vocab_size < 1 || c->vocab_size > MAX_VOCAB)
        snprintf(why, n, "vocab_size %d is outside [1, %d]", c->vocab_size, MAX_VOCAB);
    else if (c->padded_vocab_size < c->vocab_size || c->padded_vocab_size > MAX_VOCAB)
        snprintf(why, n, "padded_vocab_size %d must be in [vocab_size %d, %d]",
                 c->padded_vocab_size, c->vocab_size, MAX_VOCAB);
    else if (c->num_layers < 1 || c->num_layers > MAX_LAYERS)
        snprintf(why, n, "num_layers %d is outside [1, %d]", c->num_layers, MAX_LAYERS);
    else if (c->channels < 1 || c->channels > MAX_CHANNELS)
        snprintf(why, n, "channels %d is outside [1, %d]", c->channels, MAX_CHANNELS);
    else if (c->num_heads < 1 || c->num_heads > c->channels)
        snprintf(why, n, "num_heads %d is outside [1, channels %d]", c->num_heads, c->channels);
    else if (c->channels % c->num_heads != 0)
        snprintf(why, n, "channels %d is not divisible by num_heads %d", c->channels,
                 c->num_heads);
    else
        return 1;
    return 0;
}

static int resolve_threads(int requested) {
    int n = requested;
#ifdef _OPENMP
    if (n <= 0) n = omp_get_max_threads();
#else
    n = 1;
#endif
    if (n < 1) n = 1;
    if (n > LLMC_MAX_THREADS) n = LLMC_MAX_THREADS;
    return n;
}

/* Sum of sizes with overflow checks; returns 0 on overflow. */
static int sum_sizes(const size_t *sizes, int count, size_t *offsets, size_t *total) {
    size_t acc = 0;
    for (int i = 0; i < count; i++) {
        offsets[i] = acc;
        if (!llmc_add_size(acc, sizes[i], &acc)) return 0;
    }
    *total = acc;
    return 1;
}

/* product of up to four factors with overflow detection */
static int prod(size_t *out, size_t a, size_t b, size_t c, size_t d) {
    size_t x;
    return llmc_mul_size(a, b, &x) && llmc_mul_size(x, c, &x) && llmc_mul_size(x, d, out);
}

static int compute_param_sizes(llmc_model *m) {
    const size_t Vp = m->cfg.padded_vocab_size, maxT = m->cfg.max_seq_len;
    const size_t L = m->cfg.num_layers, C = m->cfg.channels;
    size_t *s = m->param_sizes;
    int ok = prod(&s[P_WTE], Vp, C, 1, 1) && prod(&s[P_WPE], maxT, C, 1, 1) &&
             prod(&s[P_LN1W], L, C, 1, 1) && prod(&s[P_LN1B], L, C, 1, 1) &&
             prod(&s[P_QKVW], L, 3, C, C) && prod(&s[P_QKVB], L, 3, C, 1) &&
             prod(&s[P_ATTPROJW], L, C, C, 1) && prod(&s[P_ATTPROJB], L, C, 1, 1) &&
             prod(&s[P_LN2W], L, C, 1, 1) && prod(&s[P_LN2B], L, C, 1, 1) &&
             prod(&s[P_FCW], L, 4, C, C) && prod(&s[P_FCB], L, 4, C, 1) &&
             prod(&s[P_FCPROJW], L, C, 4, C) && prod(&s[P_FCPROJB], L, C, 1, 1) &&
             prod(&s[P_LNFW], C, 1, 1, 1) && prod(&s[P_LNFB], C, 1, 1, 1);
    return ok && sum_sizes(s, LLMC_NUM_PARAM_TENSORS, m->param_offsets, &m->num_params);
}

static int compute_act_sizes(llmc_model *m, int keep16) {
    const size_t B = m->opt.max_batch, T = m->opt.max_seq, C = m->cfg.channels;
    const size_t L = m->cfg.num_layers, NH = m->cfg.num_heads, Vp = m->cfg.padded_vocab_size;
    size_t BT;
    if (!llmc_mul_size(B, T, &BT)) return 0;
    size_t per[A_NUM]; /* floats of one layer (or of the whole tensor if not per layer) */
    int ok = prod(&per[A_ENCODED], BT, C, 1, 1) && prod(&per[A_LN1], BT, C, 1, 1) &&
             prod(&per[A_LN1_MEAN], BT, 1, 1, 1) && prod(&per[A_LN1_RSTD], BT, 1, 1, 1) &&
             prod(&per[A_QKV], BT, 3, C, 1) && prod(&per[A_ATT], B, NH, T, T) &&
             prod(&per[A_ATTY], BT, C, 1, 1) && prod(&per[A_ATTPROJ], BT, C, 1, 1) &&
             prod(&per[A_RESIDUAL2], BT, C, 1, 1) && prod(&per[A_LN2], BT, C, 1, 1) &&
             prod(&per[A_LN2_MEAN], BT, 1, 1, 1) && prod(&per[A_LN2_RSTD], BT, 1, 1, 1) &&
             prod(&per[A_FCH], BT, 4, C, 1) && prod(&per[A_FCH_GELU], BT, 4, C, 1) &&
             prod(&per[A_FCPROJ], BT, C, 1, 1) && prod(&per[A_RESIDUAL3], BT, C, 1, 1) &&
             prod(&per[A_LNF], BT, C, 1, 1) && prod(&per[A_LNF_MEAN], BT, 1, 1, 1) &&
             prod(&per[A_LNF_RSTD], BT, 1, 1, 1) && prod(&per[A_LOGITS], BT, Vp, 1, 1) &&
             prod(&per[A_PROBS], BT, Vp, 1, 1) && prod(&per[A_LOSSES], BT, 1, 1, 1);
    if (!ok) return 0;
    size_t total[A_NUM];
    for (int a = 0; a < A_NUM; a++) {
        m->act_layer_stride[a] = act_is_per_layer(a) ? per[a] : 0;
        if (!llmc_mul_size(per[a], act_is_per_layer(a) ? L : 1, &total[a])) return 0;
    }
    if (!sum_sizes(total, A_NUM, m->act_offsets, &m->num_acts)) return 0;
    /* where each lies: in acts (fp32) or, kept in bf16, in acts16; these sums are parts of
     * num_acts, so they cannot overflow */
    m->num_acts32 = m->num_acts16 = 0;
    for (int a = 0; a < A_NUM; a++) {
        size_t *n = keep16 && act_is_gemm_only(a) ? &m->num_acts16 : &m->num_acts32;
        m->act_store[a] = *n;
        *n += total[a];
    }
    return 1;
}

static float *alloc_floats(size_t n) {
    size_t bytes;
    if (!llmc_mul_size(n ? n : 1, sizeof(float), &bytes)) return NULL;
    return (float *)calloc(1, bytes);
}

/* Ask for transparent huge pages (2 MiB) over the whole 2 MiB pages inside [p, p + bytes).
 * For the parameter-sized buffers (weights, gradients, moments, the bf16 weight copy), which
 * AdamW, the norm and data parallel's socket copies stream whole every step: with 4 KiB pages
 * their TLB misses cost, at d12 with 2 threads, 8 ms of AdamW's 75 and 8 of the norm's 24
 * (fp32), and 2 ranks' collectives were slower and more erratic. These buffers are touched
 * whole or (ZeRO-1's unused moments) not at all, so huge pages add no resident memory; the
 * activations, of which a smaller batch touches only a prefix per tensor, keep 4 KiB pages.
 * Advice only: where the kernel has no THP, or refuses, nothing changes. */
static void advise_huge_pages(void *p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)2 << 20;
    const uintptr_t lo = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    const uintptr_t hi = ((uintptr_t)p + bytes) & ~(huge - 1);
    if (p && hi > lo) (void)madvise((void *)lo, (size_t)(hi - lo), MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
}

void llmc_advise_huge_pages(void *p, size_t bytes) { advise_huge_pages(p, bytes); }

static float *alloc_param_floats(size_t n) {
    float *p = alloc_floats(n);
    advise_huge_pages(p, n * sizeof(float)); /* n * 4 did not overflow in alloc_floats */
    return p;
}

/* Zeroed and 64-byte aligned (a cache line, one zmm register): the GEMM packing workspaces,
 * whose every vector load would otherwise straddle two cache lines. Small buffers only:
 * unlike calloc this touches every page at once. */
static float *alloc_aligned_floats(size_t n) {
    size_t bytes;
    if (!llmc_mul_size(n ? n : 1, sizeof(float), &bytes)) return NULL;
    bytes = (bytes + 63) / 64 * 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    memset(p, 0, bytes);
    return (float *)p;
}

/* attention workspace per thread, at the largest T */
static size_t attn_ws_floats(const llmc_model *m) {
    return LLMC_ATTN_WS_FLOATS(m->opt.max_seq, m->cfg.channels / m->cfg.num_heads);
}

/* (Re)size the per-thread workspaces for nthreads threads. Keeps the old ones on failure. */
static int ensure_workspaces(llmc_model *m, int nthreads) {
    if (m->gemm_ws && m->row_ws && nthreads <= m->ws_threads) return LLMC_OK;
    size_t g, r;
    if (!llmc_mul_size(LLMC_GEMM_WS_FLOATS, (size_t)nthreads, &g) ||
        !llmc_mul_size(attn_ws_floats(m), (size_t)nthreads, &r))
        return llmc_fail(m, LLMC_ERR_OUT_OF_MEMORY, "workspace size overflows");
    float *gw = alloc_aligned_floats(g), *rw = alloc_floats(r);
    if (!gw || !rw) {
        free(gw);
        free(rw);
        return llmc_fail(m, LLMC_ERR_OUT_OF_MEMORY,
                         "cannot allocate workspaces for %d threads", nthreads);
    }
    free(m->gemm_ws);
    free(m->row_ws);
    m->gemm_ws = gw;
    m->row_ws = rw;
    m->ws_threads = nthreads;
    return LLMC_OK;
}

static int build_tensor_table(llmc_model *m) {
    const int L = m->cfg.num_layers;
    const int n_layer_acts = A_RESIDUAL3 - A_LN1 + 1;
    m->num_entries = 4 * LLMC_NUM_PARAM_TENSORS + (A_NUM - n_layer_acts) + n_layer_acts * L;
    m->entries = (tensor_entry *)calloc((size_t)m->num_entries, sizeof(tensor_entry));
    const size_t name_len = 32;
    m->names = (char *)calloc((size_t)m->num_entries, name_len);
    if (!m->entries || !m->names) return 0;
    int e = 0;
    for (int kind = LLMC_KIND_PARAMS; kind <= LLMC_KIND_ADAM_V; kind++) {
        for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++, e++) {
            tensor_entry *t = &m->entries[e];
            char *nm = m->names + (size_t)e * name_len;
            snprintf(nm, name_len, "%s", PARAM_NAMES[i]);
            t->name = nm;
            t->kind = kind;
            t->offset = (int64_t)m->param_offsets[i];
            t->id = i;
        }
    }
    /* activations: shapes depend on B, T and are filled at query time; store (act, layer) */
    for (int a = 0; a < A_NUM; a++) {
        const int layers = act_is_per_layer(a) ? L : 1;
        for (int l = 0; l < layers; l++, e++) {
            tensor_entry *t = &m->entries[e];
            char *nm = m->names + (size_t)e * name_len;
            if (act_is_per_layer(a))
                snprintf(nm, name_len, "h%d.%s", l, ACT_NAMES[a]);
            else
                snprintf(nm, name_len, "%s", ACT_NAMES[a]);
            t->name = nm;
            t->kind = LLMC_KIND_ACTS;
            t->id = a;
            t->layer = l;
            t->offset = (int64_t)(m->act_offsets[a] + (size_t)l * m->act_layer_stride[a]);
        }
    }
    return e == m->num_entries;
}

int llmc_model_alloc(const llmc_config *cfg, const llmc_options *opt, llmc_model **out) {
    char why[256];
    *out = NULL;
    if (!cfg) return llmc_fail_thread(LLMC_ERR_INVALID_ARGUMENT, "config is NULL");
    if (!llmc_validate_config(cfg, why, sizeof(why)))
        return llmc_fail_thread(LLMC_ERR_INVALID_ARGUMENT, "invalid config: %s", why);
    llmc_options o = {1, 0, 0, 0, 0, 0};
    if (opt) o = *opt;
    if (o.max_seq == 0) o.max_seq = cfg->max_seq_len;
    if (o.max_batch < 1 || o.max_batch > (1 << 20))
        return llmc_fail_thread(LLMC_ERR_INVALID_ARGUMENT, "max_batch %d is outside [1, %d]",
                                o.max_batch, 1 << 20);
    if (o.max_seq < 1 || o.max_seq > cfg->max_seq_len)
        return llmc_fail_thread(LLMC_ERR_INVALID_ARGUMENT,
                                "max_seq %d is outside [1, max_seq_len %d]", o.max_seq,
                                cfg->max_seq_len);
    if ((int64_t)o.max_batch * o.max_seq > (1 << 30))
        return llmc_fail_thread(LLMC_ERR_INVALID_ARGUMENT,
                                "max_batch * max_seq = %lld tokens is too many",
                                (long long)o.max_batch * o.max_seq);
    if (o.num_threads < 0)
        return llmc_fail_thread(LLMC_ERR_INVALID_ARGUMENT, "num_threads %d is negative",
                                o.num_threads);
    if (o.reserved != 0)
        return llmc_fail_thread(LLMC_ERR_INVALID_ARGUMENT, "options.reserved must be 0");
    if (o.device != LLMC_DEVICE_CPU && o.device != LLMC_DEVICE_CUDA)
        return llmc_fail_thread(LLMC_ERR_INVALID_ARGUMENT,
                                "options.device %d is not a device (0 = cpu, 1 = cuda)", o.device);
    if (o.precision != LLMC_PRECISION_FP32 && o.precision != LLMC_PRECISION_BF16)
        return llmc_fail_thread(LLMC_ERR_INVALID_ARGUMENT,
                                "options.precision %d is not a precision (0 = fp32, 1 = bf16)",
                                o.precision);
#ifndef LLMC_HAVE_CUDA
    if (o.device == LLMC_DEVICE_CUDA)
        return llmc_fail_thread(LLMC_ERR_UNSUPPORTED,
                                "device cuda requested, but this build of the library has no CUDA "
                                "backend (it was built without nvcc, or with LLMC_CUDA=OFF)");
#endif

    llmc_model *m = (llmc_model *)calloc(1, sizeof(llmc_model));
    if (!m) return llmc_fail_thread(LLMC_ERR_OUT_OF_MEMORY, "cannot allocate the model");
    m->cfg = *cfg;
    m->opt = o;
    m->nthreads = resolve_threads(o.num_threads);
    m->B = o.max_batch;
    m->T = o.max_seq;

    m->device = o.device;
    m->precision = o.precision;
    int keep16 = 0, planes = 0; /* CPU bf16 models: GEMM-only activations, master weights */
    if (o.device == LLMC_DEVICE_CPU && o.precision == LLMC_PRECISION_BF16 &&
        (!bf16_layout_choice("LLMC_BF16_ACTS", "bf16", &keep16, why, sizeof(why)) ||
         !bf16_layout_choice("LLMC_BF16_MASTER", "planes", &planes, why, sizeof(why)))) {
        llmc_model_destroy(m);
        return llmc_fail_thread(LLMC_ERR_INVALID_ARGUMENT, "%s", why);
    }
    if (!compute_param_sizes(m) || !compute_act_sizes(m, keep16)) {
        llmc_model_destroy(m);
        return llmc_fail_thread(LLMC_ERR_OUT_OF_MEMORY, "model sizes overflow");
    }
#ifdef LLMC_HAVE_CUDA
    if (o.device == LLMC_DEVICE_CUDA) {
        m->nthreads = 1; /* host threads are not used by the CUDA backend */
        const size_t ntok = (size_t)o.max_batch * o.max_seq;
        m->inputs = (int32_t *)calloc(ntok, sizeof(int32_t));
        m->targets = (int32_t *)calloc(ntok, sizeof(int32_t));
        if (!m->inputs || !m->targets || !build_tensor_table(m)) {
            llmc_model_destroy(m);
            return llmc_fail_thread(LLMC_ERR_OUT_OF_MEMORY,
                                    "cannot allocate the tensor table and token buffers");
        }
        const int st = llmc_cuda_attach(m); /* sets the thread error on failure */
        if (st != LLMC_OK) {
            llmc_model_destroy(m);
            return st;
        }
        *out = m;
        return LLMC_OK;
    }
#endif
    m->be = &cpu_backend;
    const size_t BT = (size_t)o.max_batch * o.max_seq, C = cfg->channels;
    /* dresidual C + dsmall C + dbig 4C per token; d logits reuse the probs activation */
    size_t bwd = 0;
    int ok = llmc_mul_size(BT, C * 6, &bwd);

    m->params = ok ? alloc_param_floats(m->num_params) : NULL;
    m->grads = ok ? alloc_param_floats(m->num_params) : NULL;
    m->adam_m = ok ? alloc_param_floats(m->num_params) : NULL;
    m->adam_v = ok ? alloc_param_floats(m->num_params) : NULL;
    m->acts = ok ? alloc_floats(m->num_acts32) : NULL;
    if (m->num_acts16 && ok) m->acts16 = (uint16_t *)calloc(m->num_acts16, sizeof(uint16_t));
    m->bwd_buffer = ok ? alloc_floats(bwd) : NULL;
    m->inputs = (int32_t *)calloc(BT, sizeof(int32_t));
    m->targets = (int32_t *)calloc(BT, sizeof(int32_t));
    m->gemm_shared = alloc_aligned_floats(LLMC_GEMM_SHARED_FLOATS);
    /* bf16: the matrices in planes (bf16_planes.c: their round-up bits here), or else the
     * weights' bf16 image (bf16_weights.c), made by the first forward */
    const int bf16 = o.precision == LLMC_PRECISION_BF16;
    m->planes = bf16 && planes;
    size_t up_words = 0;
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        m->planes_up_off[i] = up_words;
        if (m->planes && planes_tensor(i)) up_words += (m->param_sizes[i] + 15) / 16;
    }
    if (m->planes && ok) m->planes_up = (uint16_t *)calloc(up_words ? up_words : 1, sizeof(uint16_t));
    if (bf16 && !m->planes && ok)
        m->params16 = (uint16_t *)calloc(m->num_params ? m->num_params : 1, sizeof(uint16_t));
    if (m->params16) advise_huge_pages(m->params16, m->num_params * sizeof(uint16_t));
    if (!m->params || !m->grads || !m->adam_m || !m->adam_v || !m->acts || !m->bwd_buffer ||
        (bf16 && !m->params16 && !m->planes_up) || (m->num_acts16 && !m->acts16) ||
        !m->inputs || !m->targets || !m->gemm_shared || !build_tensor_table(m) ||
        ensure_workspaces(m, m->nthreads) != LLMC_OK) {
        /* in double: the sizes in the message must not themselves wrap around for huge
         * models. Split so the user sees whether the model or the batch is too large. */
        const double mib = (double)sizeof(float) / (1024.0 * 1024.0);
        const double state_mb = (double)m->num_params * 4 * mib;
        const double acts_mb = ((double)m->num_acts32 + (double)m->num_acts16 / 2 + (double)bwd) * mib;
        llmc_model_destroy(m);
        return llmc_fail_thread(LLMC_ERR_OUT_OF_MEMORY,
                                "cannot allocate model memory (about %.0f MiB: %.0f MiB of parameters, "
                                "gradients and AdamW state, %.0f MiB of activations for max_batch %d "
                                "x max_seq %d)",
                                state_mb + acts_mb, state_mb, acts_mb, o.max_batch, o.max_seq);
    }
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        m->p[i] = m->params + m->param_offsets[i];
        m->g[i] = m->grads + m->param_offsets[i];
    }
    for (int a = 0; a < A_NUM; a++) {
        const int is16 = m->acts16 && act_is_gemm_only(a);
        m->a[a] = is16 ? NULL : m->acts + m->act_store[a];
        m->a16[a] = is16 ? m->acts16 + m->act_store[a] : NULL;
    }
    m->scratch.dresidual = m->bwd_buffer;
    m->scratch.dsmall = m->scratch.dresidual + BT * C;
    m->scratch.dbig = m->scratch.dsmall + BT * C;
    /* backward turns probs into d logits in place: one (B, T, Vp) buffer fewer */
    m->scratch.dlogits = m->a[A_PROBS];
    *out = m;
    return LLMC_OK;
}

/* GPT-2 initialisation: N(0, 0.02) weights, residual projections scaled by 1/sqrt(2L)
 * (they add into the residual stream once per layer and twice per block), zero biases,
 * unit layernorm weights, zero padded vocabulary rows. Drawn tensor by tensor in checkpoint
 * order from one generator, so a seed fixes the model. */
void llmc_model_init_weights(llmc_model *m, uint64_t seed) {
    llmc_init_params(m, m->params, seed);
    m->params16_valid = 0;
    if (m->planes) planes_pack(m); /* bf16_planes.c */
}

void llmc_init_params(const llmc_model *m, float *params, uint64_t seed) {
    uint64_t drawn = 0; /* normals used so far: each tensor continues the one stream */
    const int nt = m->nthreads;
    const float std = 0.02f;
    const float proj_std = 0.02f / sqrtf(2.0f * (float)m->cfg.num_layers);
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        float *p = params + m->param_offsets[i];
        const size_t n = m->param_sizes[i];
        switch (i) {
        case P_LN1W: case P_LN2W: case P_LNFW:
            for (size_t j = 0; j < n; j++) p[j] = 1.0f;
            break;
        case P_WTE: {
            const size_t real = (size_t)m->cfg.vocab_size * m->cfg.channels;
            llmc_rng_fill_normal(p, real, std, seed, drawn, nt);
            drawn += real;
            memset(p + real, 0, (n - real) * sizeof(float));
            break;
        }
        case P_WPE: case P_QKVW: case P_FCW:
            llmc_rng_fill_normal(p, n, std, seed, drawn, nt);
            drawn += n;
            break;
        case P_ATTPROJW: case P_FCPROJW:
            llmc_rng_fill_normal(p, n, proj_std, seed, drawn, nt);
            drawn += n;
            break;
        default:
            memset(p, 0, n * sizeof(float));
        }
    }
}

LLMC_API int32_t llmc_abi_version(void) { return LLMC_ABI_VERSION; }

LLMC_API size_t llmc_struct_size(const char *name) {
    if (!name) return 0;
    if (!strcmp(name, "llmc_config")) return sizeof(llmc_config);
    if (!strcmp(name, "llmc_options")) return sizeof(llmc_options);
    if (!strcmp(name, "llmc_tensor_info")) return sizeof(llmc_tensor_info);
    if (!strcmp(name, "llmc_adamw_params")) return sizeof(llmc_adamw_params);
    return 0;
}

LLMC_API int32_t llmc_built_with_cuda(void) {
#ifdef LLMC_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

/* per thread, like llmc_last_error: never shared between threads */
static _Thread_local char cuda_description[LLMC_ERRMSG_LEN];

LLMC_API int32_t llmc_has_cuda(void) {
#ifdef LLMC_HAVE_CUDA
    char why[LLMC_ERRMSG_LEN];
    return llmc_cuda_usable(why, sizeof(why));
#else
    return 0;
#endif
}

LLMC_API const char *llmc_cuda_describe(void) {
#ifdef LLMC_HAVE_CUDA
    char why[LLMC_ERRMSG_LEN - 32];
    const int ok = llmc_cuda_usable(why, sizeof(why));
    snprintf(cuda_description, sizeof(cuda_description), "%s: %s",
             ok ? "available" : "not available", why);
#else
    snprintf(cuda_description, sizeof(cuda_description),
             "not built: this library was built without the CUDA backend (no nvcc, or "
             "LLMC_CUDA=OFF)");
#endif
    return cuda_description;
}

LLMC_API int32_t llmc_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

LLMC_API int32_t llmc_release_threads(void) {
#if defined(_OPENMP) && defined(LLMC_HAVE_OMP_PAUSE)
    /* libgomp frees the calling thread's pool only; it refuses (-1) inside a parallel
     * region, where there is nothing to do anyway */
    (void)omp_pause_resource_all(omp_pause_soft);
#endif
    return LLMC_OK;
}

LLMC_API int32_t llmc_model_create(const llmc_config *config, const llmc_options *options,
                                   uint64_t seed, llmc_model **out) {
    if (!out) return llmc_fail_thread(LLMC_ERR_INVALID_ARGUMENT, "out pointer is NULL");
    llmc_clear_thread_error();
    int st = llmc_model_alloc(config, options, out);
    if (st != LLMC_OK) return st;
    llmc_model *m = *out;
    if (m->device == LLMC_DEVICE_CPU) {
        llmc_model_init_weights(m, seed);
        return LLMC_OK;
    }
    /* another device: draw the same weights on the host, then upload them */
    float *host = alloc_floats(m->num_params);
    if (!host) {
        *out = NULL;
        llmc_model_destroy(m);
        return llmc_fail_thread(LLMC_ERR_OUT_OF_MEMORY,
                                "cannot allocate %zu MiB of host memory for the initial weights",
                                (m->num_params * sizeof(float)) >> 20);
    }
    llmc_init_params(m, host, seed);
    st = m->be->copy(m, LLMC_KIND_PARAMS, 0, m->num_params, host, 0);
    free(host);
    if (st != LLMC_OK) {
        llmc_fail_thread(st, "%s", m->errmsg);
        *out = NULL;
        llmc_model_destroy(m);
    }
    return st;
}

LLMC_API void llmc_model_destroy(llmc_model *m) {
    if (!m) return;
    if (m->be && m->be->destroy) m->be->destroy(m); /* backend memory; NULLs what it freed */
    free(m->params);
    free(m->params16);
    free(m->planes_up);
    free(m->grads);
    free(m->adam_m);
    free(m->adam_v);
    free(m->acts);
    free(m->acts16);
    free(m->bwd_buffer);
    free(m->inputs);
    free(m->targets);
    free(m->entries);
    free(m->names);
    free(m->gemm_ws);
    free(m->row_ws);
    free(m->gemm_shared);
    free(m);
}

LLMC_API int32_t llmc_model_get_config(const llmc_model *m, llmc_config *out) {
    if (!m || !out) return LLMC_ERR_INVALID_ARGUMENT;
    *out = m->cfg;
    return LLMC_OK;
}

LLMC_API int32_t llmc_model_get_options(const llmc_model *m, llmc_options *out) {
    if (!m || !out) return LLMC_ERR_INVALID_ARGUMENT;
    *out = m->opt;
    out->num_threads = m->nthreads;
    return LLMC_OK;
}

LLMC_API int32_t llmc_model_set_threads(llmc_model *m, int32_t n) {
    if (!m) return LLMC_ERR_INVALID_ARGUMENT;
    if (n < 0) return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "num_threads %d is negative", n);
    if (m->device != LLMC_DEVICE_CPU) return LLMC_OK; /* no host threads to set */
    const int resolved = resolve_threads(n);
    int st = ensure_workspaces(m, resolved);
    if (st != LLMC_OK) return st;
    m->nthreads = resolved;
    return LLMC_OK;
}

LLMC_API int32_t llmc_model_num_tensors(const llmc_model *m) { return m ? m->num_entries : 0; }

static void fill_param_shape(const llmc_model *m, int id, llmc_tensor_info *o) {
    const int64_t L = m->cfg.num_layers, C = m->cfg.channels;
    int64_t s[3] = {0, 0, 0};
    int nd = 2;
    switch (id) {
    case P_WTE: s[0] = m->cfg.padded_vocab_size; s[1] = C; break;
    case P_WPE: s[0] = m->cfg.max_seq_len; s[1] = C; break;
    case P_LN1W: case P_LN1B: case P_ATTPROJB: case P_LN2W: case P_LN2B: case P_FCPROJB:
        s[0] = L; s[1] = C; break;
    case P_QKVB: s[0] = L; s[1] = 3 * C; break;
    case P_FCB: s[0] = L; s[1] = 4 * C; break;
    case P_QKVW: nd = 3; s[0] = L; s[1] = 3 * C; s[2] = C; break;
    case P_ATTPROJW: nd = 3; s[0] = L; s[1] = C; s[2] = C; break;
    case P_FCW: nd = 3; s[0] = L; s[1] = 4 * C; s[2] = C; break;
    case P_FCPROJW: nd = 3; s[0] = L; s[1] = C; s[2] = 4 * C; break;
    default: nd = 1; s[0] = C; /* lnfw, lnfb */
    }
    o->ndim = nd;
    for (int i = 0; i < 3; i++) o->shape[i] = s[i];
}

static void fill_act_shape(const llmc_model *m, int a, llmc_tensor_info *o) {
    const int64_t B = m->B, T = m->T, C = m->cfg.channels;
    o->ndim = 3;
    o->shape[0] = B;
    o->shape[1] = T;
    switch (a) {
    case A_LN1_MEAN: case A_LN1_RSTD: case A_LN2_MEAN: case A_LN2_RSTD:
    case A_LNF_MEAN: case A_LNF_RSTD: case A_LOSSES:
        o->ndim = 2; break;
    case A_QKV: o->shape[2] = 3 * C; break;
    case A_FCH: case A_FCH_GELU: o->shape[2] = 4 * C; break;
    case A_LOGITS: case A_PROBS: o->shape[2] = m->cfg.padded_vocab_size; break;
    case A_ATT:
        o->ndim = 4; o->shape[1] = m->cfg.num_heads; o->shape[2] = T; o->shape[3] = T; break;
    default: o->shape[2] = C;
    }
}

LLMC_API int32_t llmc_model_tensor_info(const llmc_model *m, int32_t index,
                                        llmc_tensor_info *out) {
    if (!m || !out) return LLMC_ERR_INVALID_ARGUMENT;
    if (index < 0 || index >= m->num_entries)
        return llmc_fail((llmc_model *)m, LLMC_ERR_INVALID_ARGUMENT,
                         "tensor index %d is outside [0, %d)", index, m->num_entries);
    const tensor_entry *t = &m->entries[index];
    memset(out, 0, sizeof(*out));
    out->name = t->name;
    out->kind = t->kind;
    out->offset = t->offset;
    if (t->kind == LLMC_KIND_ACTS)
        fill_act_shape(m, t->id, out);
    else
        fill_param_shape(m, t->id, out);
    int64_t n = 1;
    for (int i = 0; i < out->ndim; i++) n *= out->shape[i];
    out->numel = n;
    return LLMC_OK;
}

LLMC_API int32_t llmc_model_buffer(llmc_model *m, int32_t kind, float **data, int64_t *numel) {
    if (!m || !numel) return LLMC_ERR_INVALID_ARGUMENT;
    float *p = NULL;
    switch (kind) {
    case LLMC_KIND_PARAMS: p = m->params; *numel = (int64_t)m->num_params; break;
    case LLMC_KIND_GRADS: p = m->grads; *numel = (int64_t)m->num_params; break;
    case LLMC_KIND_ADAM_M: p = m->adam_m; *numel = (int64_t)m->num_params; break;
    case LLMC_KIND_ADAM_V: p = m->adam_v; *numel = (int64_t)m->num_params; break;
    case LLMC_KIND_ACTS: p = m->acts; *numel = (int64_t)m->num_acts; break;
    default: return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "unknown tensor kind %d", kind);
    }
    /* data NULL asks for the length alone: no pointer leaves the library */
    if (data && kind == LLMC_KIND_ACTS && m->acts16)
        return llmc_fail(m, LLMC_ERR_UNSUPPORTED,
                         "the activations of this bf16 CPU model are not one float buffer (ln1, "
                         "atty, ln2, fch_gelu and lnf are stored as bf16): copy them out with "
                         "llmc_model_copy_to_host, which widens those to float");
    if (data && kind == LLMC_KIND_PARAMS && m->planes) {
        /* weights in planes are no float buffer: back to fp32 weights and an image, once */
        const int st = planes_unpack(m);
        if (st != LLMC_OK) return st;
    }
    if (data) {
        *data = p;
        if (kind == LLMC_KIND_PARAMS) m->params_exposed = 1;
    }
    return LLMC_OK;
}

float *llmc_kind_buffer(const llmc_model *m, int kind, size_t *numel) {
    switch (kind) {
    case LLMC_KIND_PARAMS: *numel = m->num_params; return m->params;
    case LLMC_KIND_GRADS: *numel = m->num_params; return m->grads;
    case LLMC_KIND_ADAM_M: *numel = m->num_params; return m->adam_m;
    case LLMC_KIND_ADAM_V: *numel = m->num_params; return m->adam_v;
    case LLMC_KIND_ACTS: *numel = m->num_acts; return m->acts;
    default: *numel = 0; return NULL;
    }
}

LLMC_API int32_t llmc_model_device(const llmc_model *m) { return m ? m->device : -1; }

LLMC_API int32_t llmc_model_precision(const llmc_model *m) { return m ? m->precision : -1; }

static int copy_checked(llmc_model *m, int32_t kind, int64_t offset, int64_t count, float *host,
                        int to_host) {
    if (!m) return LLMC_ERR_INVALID_ARGUMENT;
    size_t n = 0;
    if (!llmc_kind_buffer(m, kind, &n))
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "unknown tensor kind %d", kind);
    if (offset < 0 || count < 0 || (uint64_t)offset > n || (uint64_t)count > n - (uint64_t)offset)
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT,
                         "copy of %lld floats at offset %lld is outside the buffer of %zu floats",
                         (long long)count, (long long)offset, n);
    if (count == 0) return LLMC_OK;
    if (!host) return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "host pointer is NULL");
    return m->be->copy(m, kind, (size_t)offset, (size_t)count, host, to_host);
}

LLMC_API int32_t llmc_model_copy_to_host(llmc_model *m, int32_t kind, int64_t offset,
                                         int64_t count, float *dst) {
    return copy_checked(m, kind, offset, count, dst, 1);
}

LLMC_API int32_t llmc_model_copy_from_host(llmc_model *m, int32_t kind, int64_t offset,
                                           int64_t count, const float *src) {
    return copy_checked(m, kind, offset, count, (float *)src, 0);
}

double llmc_param_weight_decay(const llmc_adamw_params *hp, int i) {
    return (!hp->decay_matrices_only || PARAM_IS_MATRIX[i]) ? hp->weight_decay : 0.0;
}

/* ---- training step pieces ---- */

static llmc_exec exec_of(llmc_model *m) {
    llmc_exec ex = {m->nthreads, m->gemm_ws, m->row_ws, attn_ws_floats(m), m->gemm_shared,
                    LLMC_GEMM_SHARED_FLOATS, 1.0f, m->precision == LLMC_PRECISION_BF16,
                    m->params, m->params16_valid ? m->params16 : NULL, m->num_params,
                    m->planes ? m->param_offsets : NULL, m->param_sizes};
    return ex;
}

/* pointer to layer l of a per-layer activation stored in fp32 */
static float *act(llmc_model *m, int a, int l) { return m->a[a] + (size_t)l * m->act_layer_stride[a]; }

/* layer l of a GEMM-only activation stored as bf16 bits, or NULL where it is fp32 */
static uint16_t *act16(llmc_model *m, int a, int l) {
    return m->a16[a] ? m->a16[a] + (size_t)l * m->act_layer_stride[a] : NULL;
}

/* layernorm into activation a (ln1, ln2, lnf; mean and rstd follow it) of layer l */
static void ln_forward_into(llmc_model *m, int a, int l, const float *inp, const float *w,
                            const float *b, int BT) {
    const int C = m->cfg.channels;
    uint16_t *o16 = act16(m, a, l);
    if (o16)
        layernorm_forward16(o16, act(m, a + 1, l), act(m, a + 2, l), inp, w, b, BT, C, m->nthreads);
    else
        layernorm_forward(act(m, a, l), act(m, a + 1, l), act(m, a + 2, l), inp, w, b, BT, C,
                          m->nthreads);
}

/* the Linear layer whose input is activation a of layer l, and its backward */
static void linear_forward_of(llmc_model *m, float *out, int a, int l, const float *w,
                              const float *b, int N, int IC, int OC, const llmc_exec *ex) {
    const uint16_t *in16 = act16(m, a, l);
    if (in16)
        matmul_forward16(out, in16, w, b, N, IC, OC, ex);
    else
        matmul_forward(out, act(m, a, l), w, b, N, IC, OC, ex);
}

static void linear_backward_of(llmc_model *m, float *dinp, float *dw, float *db,
                               const float *dout, int a, int l, const float *w, int N, int IC,
                               int OC, const llmc_exec *ex) {
    const uint16_t *in16 = act16(m, a, l);
    if (in16)
        matmul_backward16(dinp, dw, db, dout, in16, w, N, IC, OC, ex);
    else
        matmul_backward(dinp, dw, db, dout, act(m, a, l), w, N, IC, OC, ex);
}

static int check_tokens(llmc_model *m, const int32_t *tok, int B, int T, const char *what) {
    const int V = m->cfg.vocab_size;
    for (int i = 0; i < B * T; i++) {
        if (tok[i] < 0 || tok[i] >= V)
            return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT,
                             "%s[%d, %d] = %d is not a token id in [0, vocab_size %d)", what,
                             i / T, i % T, tok[i], V);
    }
    return LLMC_OK;
}

LLMC_API int32_t llmc_model_forward(llmc_model *m, const int32_t *inputs, const int32_t *targets,
                                    int32_t B, int32_t T, float *loss) {
    if (!m) return LLMC_ERR_INVALID_ARGUMENT;
    if (!inputs) return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "inputs is NULL");
    if (B < 1 || B > m->opt.max_batch)
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "B = %d is outside [1, max_batch %d]", B,
                         m->opt.max_batch);
    if (T < 1 || T > m->opt.max_seq)
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "T = %d is outside [1, max_seq %d]", T,
                         m->opt.max_seq);
    int st = check_tokens(m, inputs, B, T, "inputs");
    if (st == LLMC_OK && targets) st = check_tokens(m, targets, B, T, "targets");
    if (st != LLMC_OK) return st;

    memcpy(m->inputs, inputs, (size_t)B * T * sizeof(int32_t));
    if (targets) memcpy(m->targets, targets, (size_t)B * T * sizeof(int32_t));
    m->B = B;
    m->T = T;
    m->have_targets = 0;
    float mean_loss = -1.0f;
    st = m->be->forward(m, targets != NULL, &mean_loss);
    if (st != LLMC_OK) return st;
    if (targets) {
        m->mean_loss = mean_loss;
        m->have_targets = 1;
    }
    if (loss) *loss = targets ? mean_loss : -1.0f;
    return LLMC_OK;
}

LLMC_API int32_t llmc_model_zero_grad(llmc_model *m) {
    if (!m) return LLMC_ERR_INVALID_ARGUMENT;
    return m->be->zero_grad(m);
}

LLMC_API int32_t llmc_model_backward_ex(llmc_model *m, float loss_scale, int32_t accumulate) {
    if (!m) return LLMC_ERR_INVALID_ARGUMENT;
    if (!m->have_targets)
        return llmc_fail(m, LLMC_ERR_BAD_STATE,
                         "backward needs a preceding forward call with targets");
    if (!isfinite(loss_scale))
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "loss_scale is not finite");
    const int st = m->be->backward(m, loss_scale, accumulate);
    m->have_targets = 0; /* probs are consumed: the next backward needs a new forward */
    return st;
}

LLMC_API int32_t llmc_model_backward(llmc_model *m, float loss_scale) {
    return llmc_model_backward_ex(m, loss_scale, 1);
}

LLMC_API int32_t llmc_model_grad_norm(llmc_model *m, float *norm) {
    if (!m || !norm) return LLMC_ERR_INVALID_ARGUMENT;
    double sumsq = 0.0;
    const int st = m->be->grad_sumsq(m, &sumsq);
    if (st != LLMC_OK) return st;
    *norm = (float)sqrt(sumsq);
    return LLMC_OK;
}

LLMC_API int32_t llmc_model_clip_grad_norm(llmc_model *m, float max_norm, float *norm) {
    if (!m) return LLMC_ERR_INVALID_ARGUMENT;
    if (!(max_norm > 0.0f) || !isfinite(max_norm))
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "max_norm must be positive and finite");
    double sumsq = 0.0;
    int st = m->be->grad_sumsq(m, &sumsq);
    if (st != LLMC_OK) return st;
    const float total = (float)sqrt(sumsq);
    if (norm) *norm = total;
    const float coef = max_norm / (total + 1e-6f);
    if (coef < 1.0f) st = m->be->scale_grads(m, coef);
    return st;
}

LLMC_API int32_t llmc_model_adamw_step(llmc_model *m, const llmc_adamw_params *hp) {
    if (!m) return LLMC_ERR_INVALID_ARGUMENT;
    const int st = llmc_check_adamw_params(m, hp);
    return st != LLMC_OK ? st : m->be->adamw(m, hp);
}

/* shared by llmc_model_adamw_step and llmc_model_adamw_step_range (adamw.c) */
int llmc_check_adamw_params(llmc_model *m, const llmc_adamw_params *hp) {
    if (!hp) return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "adamw params is NULL");
    if (!isfinite(hp->lr) || hp->lr < 0.0)
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "lr %g must be finite and >= 0", hp->lr);
    if (!(hp->beta1 >= 0.0 && hp->beta1 < 1.0) || !(hp->beta2 >= 0.0 && hp->beta2 < 1.0))
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "betas (%g, %g) must be in [0, 1)",
                         hp->beta1, hp->beta2);
    if (!(hp->eps >= 0.0) || !isfinite(hp->eps))
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "eps %g must be finite and >= 0", hp->eps);
    if (!(hp->grad_scale > 0.0f) || !isfinite(hp->grad_scale))
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT,
                         "grad_scale %g must be positive and finite (1 for no scaling)",
                         (double)hp->grad_scale);
    if (!(hp->weight_decay >= 0.0) || !isfinite(hp->weight_decay))
        return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "weight_decay %g must be finite and >= 0",
                         hp->weight_decay);
    if (hp->t < 1) return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "step t = %d must be >= 1", hp->t);
    return LLMC_OK;
}

/* ---- the CPU backend ---- */

static int cpu_forward(llmc_model *m, int with_targets, float *mean_loss) {
    const int B = m->B, T = m->T;
    const int C = m->cfg.channels, NH = m->cfg.num_heads, L = m->cfg.num_layers;
    const int Vp = m->cfg.padded_vocab_size, BT = B * T, nt = m->nthreads;
    bf16_weights_refresh(m);
    const llmc_exec ex = exec_of(m);
    float **p = m->p;

    if (m->planes)
        planes_encoder_forward(m, m->a[A_ENCODED], m->inputs, p[P_WPE], B, T, C, nt);
    else
        encoder_forward(m->a[A_ENCODED], m->inputs, p[P_WTE], p[P_WPE], B, T, C, nt);
    LLMC_DEBUG_FAULT(m, A_ENCODED, A_ENCODED, 0);
    for (int l = 0; l < L; l++) {
        const float *res = l == 0 ? m->a[A_ENCODED] : act(m, A_RESIDUAL3, l - 1);
        const size_t lc = (size_t)l * C;
        ln_forward_into(m, A_LN1, l, res, p[P_LN1W] + lc, p[P_LN1B] + lc, BT);
        LLMC_DEBUG_FAULT(m, A_LN1, A_LN1_RSTD, l);
        linear_forward_of(m, act(m, A_QKV, l), A_LN1, l, p[P_QKVW] + lc * 3 * C,
                          p[P_QKVB] + lc * 3, BT, C, 3 * C, &ex);
        LLMC_DEBUG_FAULT(m, A_QKV, A_QKV, l);
        /* atty kept in bf16: attention writes floats (its GEMM's C) into the backward's
         * (BT, C) scratch, idle in a forward, and they are rounded into place */
        uint16_t *atty16 = act16(m, A_ATTY, l);
        float *atty = atty16 ? m->scratch.dsmall : act(m, A_ATTY, l);
        attention_forward(atty, act(m, A_ATT, l), act(m, A_QKV, l), B, T, C, NH, &ex);
        if (atty16) bf16_round_copy(atty16, atty, (size_t)BT * C, nt);
        LLMC_DEBUG_FAULT(m, A_ATT, A_ATTY, l);
        linear_forward_of(m, act(m, A_ATTPROJ, l), A_ATTY, l, p[P_ATTPROJW] + lc * C,
                          p[P_ATTPROJB] + lc, BT, C, C, &ex);
        LLMC_DEBUG_FAULT(m, A_ATTPROJ, A_ATTPROJ, l);
        residual_forward(act(m, A_RESIDUAL2, l), res, act(m, A_ATTPROJ, l), (size_t)BT * C, nt);
        LLMC_DEBUG_FAULT(m, A_RESIDUAL2, A_RESIDUAL2, l);
        ln_forward_into(m, A_LN2, l, act(m, A_RESIDUAL2, l), p[P_LN2W] + lc, p[P_LN2B] + lc, BT);
        LLMC_DEBUG_FAULT(m, A_LN2, A_LN2_RSTD, l);
        linear_forward_of(m, act(m, A_FCH, l), A_LN2, l, p[P_FCW] + lc * 4 * C,
                          p[P_FCB] + lc * 4, BT, C, 4 * C, &ex);
        LLMC_DEBUG_FAULT(m, A_FCH, A_FCH, l);
        if (act16(m, A_FCH_GELU, l))
            gelu_forward16(act16(m, A_FCH_GELU, l), act(m, A_FCH, l), (size_t)BT * 4 * C, nt);
        else
            gelu_forward(act(m, A_FCH_GELU, l), act(m, A_FCH, l), (size_t)BT * 4 * C, nt);
        LLMC_DEBUG_FAULT(m, A_FCH_GELU, A_FCH_GELU, l);
        linear_forward_of(m, act(m, A_FCPROJ, l), A_FCH_GELU, l, p[P_FCPROJW] + lc * 4 * C,
                          p[P_FCPROJB] + lc, BT, 4 * C, C, &ex);
        LLMC_DEBUG_FAULT(m, A_FCPROJ, A_FCPROJ, l);
        residual_forward(act(m, A_RESIDUAL3, l), act(m, A_RESIDUAL2, l), act(m, A_FCPROJ, l),
                         (size_t)BT * C, nt);
        LLMC_DEBUG_FAULT(m, A_RESIDUAL3, A_RESIDUAL3, l);
    }
    ln_forward_into(m, A_LNF, 0, act(m, A_RESIDUAL3, L - 1), p[P_LNFW], p[P_LNFB], BT);
    LLMC_DEBUG_FAULT(m, A_LNF, A_LNF_RSTD, 0);
    /* weight tying: the classifier is wte itself */
    linear_forward_of(m, m->a[A_LOGITS], A_LNF, 0, p[P_WTE], NULL, BT, C, Vp, &ex);
    LLMC_DEBUG_FAULT(m, A_LOGITS, A_LOGITS, 0);

    if (with_targets) {
        *mean_loss = crossentropy_forward(m->a[A_PROBS], m->a[A_LOSSES], m->a[A_LOGITS],
                                          m->targets, BT, m->cfg.vocab_size, Vp, nt);
        LLMC_DEBUG_FAULT(m, A_PROBS, A_LOSSES, 0);
    }
    return LLMC_OK;
}

static int cpu_zero_grad(llmc_model *m) {
    const size_t n = m->num_params;
    float *g = m->grads;
#pragma omp parallel for num_threads(m->nthreads) schedule(static)
    for (size_t i = 0; i < n; i++) g[i] = 0.0f;
    return LLMC_OK;
}

static int cpu_backward(llmc_model *m, float loss_scale, int accumulate) {
    const int B = m->B, T = m->T, BT = B * T;
    const int C = m->cfg.channels, NH = m->cfg.num_heads, L = m->cfg.num_layers;
    const int V = m->cfg.vocab_size, Vp = m->cfg.padded_vocab_size, nt = m->nthreads;
    bf16_weights_refresh(m);
    llmc_exec ex = exec_of(m);
    float **p = m->p, **g = m->g;
    if (!accumulate) {
        /* Overwrite mode: the weight matrices' gradients (all but ~1% of them) are written
         * whole by their matmuls with beta 0 (wte's by the classifier, before the encoder
         * adds to it); only the small rest (wpe, biases, layernorms) is zeroed here. */
        ex.dw_beta = 0.0f;
        for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++)
            if (i != P_WTE && i != P_QKVW && i != P_ATTPROJW && i != P_FCW && i != P_FCPROJW)
                memset(g[i], 0, m->param_sizes[i] * sizeof(float));
    }
    float *dres = m->scratch.dresidual, *dsmall = m->scratch.dsmall, *dbig = m->scratch.dbig;

    const float dloss = loss_scale / (float)BT; /* the loss is the mean over B*T tokens */
    const uint16_t *lnf16 = act16(m, A_LNF, 0);
    if (lnf16) { /* bf16 storage: the logit gradient as bf16 too, in place over probs */
        crossentropy_backward16(m->a[A_PROBS], m->targets, dloss, BT, V, Vp, nt);
        matmul_backward16_dout16(dsmall, g[P_WTE], (const uint16_t *)(void *)m->a[A_PROBS],
                                 2 * (int64_t)Vp, lnf16, p[P_WTE], BT, C, Vp, &ex);
    } else {
        crossentropy_backward(m->scratch.dlogits, m->a[A_PROBS], m->targets, dloss, BT, V, Vp,
                              nt);
        linear_backward_of(m, dsmall, g[P_WTE], NULL, m->scratch.dlogits, A_LNF, 0, p[P_WTE],
                           BT, C, Vp, &ex);
    }
    memset(dres, 0, (size_t)BT * C * sizeof(float));
    layernorm_backward(dres, g[P_LNFW], g[P_LNFB], dsmall, act(m, A_RESIDUAL3, L - 1),
                       p[P_LNFW], m->a[A_LNF_MEAN], m->a[A_LNF_RSTD], BT, C, nt);

    for (int l = L - 1; l >= 0; l--) {
        const float *res = l == 0 ? m->a[A_ENCODED] : act(m, A_RESIDUAL3, l - 1);
        const size_t lc = (size_t)l * C;
        /* dres holds d residual3[l]; the MLP branch */
        linear_backward_of(m, dbig, g[P_FCPROJW] + lc * 4 * C, g[P_FCPROJB] + lc, dres, A_FCH_GELU,
                           l, p[P_FCPROJW] + lc * 4 * C, BT, 4 * C, C, &ex);
        gelu_backward(dbig, act(m, A_FCH, l), dbig, (size_t)BT * 4 * C, nt);
        linear_backward_of(m, dsmall, g[P_FCW] + lc * 4 * C, g[P_FCB] + lc * 4, dbig, A_LN2, l,
                           p[P_FCW] + lc * 4 * C, BT, C, 4 * C, &ex);
        layernorm_backward(dres, g[P_LN2W] + lc, g[P_LN2B] + lc, dsmall, act(m, A_RESIDUAL2, l),
                           p[P_LN2W] + lc, act(m, A_LN2_MEAN, l), act(m, A_LN2_RSTD, l), BT, C,
                           nt);
        /* dres now holds d residual2[l]; the attention branch */
        linear_backward_of(m, dsmall, g[P_ATTPROJW] + lc * C, g[P_ATTPROJB] + lc, dres, A_ATTY, l,
                           p[P_ATTPROJW] + lc * C, BT, C, C, &ex);
        attention_backward(dbig, dsmall, act(m, A_QKV, l), act(m, A_ATT, l), B, T, C, NH, &ex);
        linear_backward_of(m, dsmall, g[P_QKVW] + lc * 3 * C, g[P_QKVB] + lc * 3, dbig, A_LN1, l,
                           p[P_QKVW] + lc * 3 * C, BT, C, 3 * C, &ex);
        layernorm_backward(dres, g[P_LN1W] + lc, g[P_LN1B] + lc, dsmall, res, p[P_LN1W] + lc,
                           act(m, A_LN1_MEAN, l), act(m, A_LN1_RSTD, l), BT, C, nt);
    }
    encoder_backward(g[P_WTE], g[P_WPE], dres, m->inputs, B, T, C, nt);
    return LLMC_OK;
}

static int cpu_grad_sumsq(llmc_model *m, double *sumsq) {
    const size_t n = m->num_params;
    const float *g = m->grads;
    *sumsq = grad_sumsq(g, n, m->nthreads); /* adamw.c */
    return LLMC_OK;
}

static int cpu_scale_grads(llmc_model *m, float coef) {
    const size_t n = m->num_params;
    float *g = m->grads;
#pragma omp parallel for num_threads(m->nthreads) schedule(static)
    for (size_t i = 0; i < n; i++) g[i] *= coef;
    return LLMC_OK;
}

static int cpu_adamw(llmc_model *m, const llmc_adamw_params *hp) {
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const double wd = llmc_param_weight_decay(hp, i);
        const size_t off = m->param_offsets[i];
        if (m->planes && planes_tensor(i)) { /* bf16_planes.c */
            adamw_update_planes(m, i, 0, m->param_sizes[i], m->grads + off, m->adam_m + off,
                                m->adam_v + off, hp->lr, hp->beta1, hp->beta2, hp->eps, wd, hp->t,
                                hp->grad_scale, m->nthreads);
            continue;
        }
        /* bf16: the weights' bf16 image is written with them (bf16_weights.c) */
        adamw_update16(m->params + off, m->params16 ? m->params16 + off : NULL, m->grads + off,
                       m->adam_m + off, m->adam_v + off, m->param_sizes[i], hp->lr, hp->beta1,
                       hp->beta2, hp->eps, wd, hp->t, hp->grad_scale, m->nthreads);
    }
    if (m->params16) m->params16_valid = 1; /* every weight was rewritten */
    return LLMC_OK;
}

/* Copy logical activations [offset, offset + count) (the public fp32 layout) to or from the
 * host, tensor by tensor: memcpy for those stored in fp32, widening (to the host, exact) or
 * rounding (from it, bf16.h) for those kept in bf16. */
static void acts_copy(llmc_model *m, size_t offset, size_t count, float *host, int to_host) {
    const size_t end = offset + count;
    for (int a = 0; a < A_NUM; a++) {
        const size_t lo = m->act_offsets[a], hi = a + 1 < A_NUM ? m->act_offsets[a + 1] : m->num_acts;
        const size_t b0 = lo > offset ? lo : offset, b1 = hi < end ? hi : end;
        if (b0 >= b1) continue;
        float *h = host + (b0 - offset);
        const size_t at = m->act_store[a] + (b0 - lo), n = b1 - b0;
        if (m->a16[a] && to_host) {
            const uint16_t *s16 = m->acts16 + at;
            for (size_t i = 0; i < n; i++) h[i] = llmc_bf16_to_float(s16[i]);
        } else if (m->a16[a]) {
            uint16_t *d16 = m->acts16 + at;
            for (size_t i = 0; i < n; i++) d16[i] = (uint16_t)llmc_bf16_bits(h[i]);
        } else if (to_host) {
            memcpy(h, m->acts + at, n * sizeof(float));
        } else {
            memcpy(m->acts + at, h, n * sizeof(float));
        }
    }
}

static int cpu_copy(llmc_model *m, int kind, size_t offset, size_t count, float *host,
                    int to_host) {
    if (kind == LLMC_KIND_ACTS && m->acts16) {
        acts_copy(m, offset, count, host, to_host);
        return LLMC_OK;
    }
    if (kind == LLMC_KIND_PARAMS && m->planes) {
        planes_copy(m, offset, count, host, to_host);
        return LLMC_OK;
    }
    size_t n;
    float *buf = llmc_kind_buffer(m, kind, &n);
    if (to_host)
        memcpy(host, buf + offset, count * sizeof(float));
    else
        memcpy(buf + offset, host, count * sizeof(float));
    if (!to_host && kind == LLMC_KIND_PARAMS) m->params16_valid = 0; /* bf16_weights.c */
    return LLMC_OK;
}

/* the CPU buffers are freed by llmc_model_destroy itself */
static void cpu_destroy(llmc_model *m) { (void)m; }
