/* internal.h - shared definitions of the C core (not part of the public API). */
#ifndef LLMC_INTERNAL_H
#define LLMC_INTERNAL_H

#include "llmc.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus /* the CUDA backend (C++) includes this header too */
extern "C" {
#endif

#ifdef _OPENMP
#include <omp.h>
#define LLMC_THREAD_ID() omp_get_thread_num()
#define LLMC_TEAM_SIZE() omp_get_num_threads()
#else
#define LLMC_THREAD_ID() 0
#define LLMC_TEAM_SIZE() 1
#endif

/* LLMC_CLONES: compile a function for AVX-512, AVX2 and baseline x86-64 and pick one at load
 * time (GCC's target_clones). The portable build's baseline is SSE2, where the row loops of
 * softmax, layernorm, attention and AdamW ran scalar; their per-row helpers carry this.
 * The C is ISO C11 (-ffp-contract=off), so no clone fuses a multiply and an add: clones of
 * element-wise code give bitwise the same results; reductions may differ in order only. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(LLMC_SANITIZE)
#define LLMC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LLMC_CLONES
#endif

#define LLMC_NUM_PARAM_TENSORS 16
#define LLMC_ERRMSG_LEN 512

/* Parameter tensors in checkpoint order (docs/formats.md); one flat buffer holds them all. */
enum {
    P_WTE, P_WPE, P_LN1W, P_LN1B, P_QKVW, P_QKVB, P_ATTPROJW, P_ATTPROJB,
    P_LN2W, P_LN2B, P_FCW, P_FCB, P_FCPROJW, P_FCPROJB, P_LNFW, P_LNFB
};

/* Activations kept for backward and exposed by name. Per-layer tensors are stacked with a
 * stride sized for (max_batch, max_seq) so offsets never move when B or T change. */
enum {
    A_ENCODED, A_LN1, A_LN1_MEAN, A_LN1_RSTD, A_QKV, A_ATT, A_ATTY, A_ATTPROJ, A_RESIDUAL2,
    A_LN2, A_LN2_MEAN, A_LN2_RSTD, A_FCH, A_FCH_GELU, A_FCPROJ, A_RESIDUAL3,
    A_LNF, A_LNF_MEAN, A_LNF_RSTD, A_LOGITS, A_PROBS, A_LOSSES, A_NUM
};

/* Backward scratch (gradients of activations), reused layer after layer; not exposed. */
typedef struct {
    float *dresidual; /* (BT, C) gradient flowing along the residual stream */
    float *dsmall;    /* (BT, C) d ln1 / d atty / d ln2 / d lnf */
    float *dbig;      /* (BT, 4C) d fch_gelu, d fch, and d qkv (3C) */
    float *dlogits;   /* (BT, Vp): the probs activation, overwritten by backward */
} backward_scratch;

struct llmc_backend;

/* debug_fault.c: one injected fault (llmc_debug_set_fault), armed = 0 when none */
typedef struct {
    int armed;
    int act;   /* A_* */
    int layer; /* for per-layer activations */
    float delta;
} llmc_debug_fault;

typedef struct {
    const char *name; /* points into the model's name storage */
    int kind;
    int id;    /* parameter id (P_*) or activation id (A_*) */
    int layer; /* for per-layer activations */
    int64_t offset;
} tensor_entry;

struct llmc_model {
    llmc_config cfg;
    llmc_options opt;
    int nthreads; /* resolved thread count (>= 1) */

    size_t param_sizes[LLMC_NUM_PARAM_TENSORS];
    size_t param_offsets[LLMC_NUM_PARAM_TENSORS];
    size_t num_params;
    float *params, *grads, *adam_m, *adam_v;
    float *p[LLMC_NUM_PARAM_TENSORS];  /* views into params */
    float *g[LLMC_NUM_PARAM_TENSORS];  /* views into grads */
    /* bf16 precision on the CPU: the bf16 image of params (bf16.h rounding), the weight
     * operand of every matmul, made once per change of the weights instead of at every
     * GEMM call (bf16_weights.c). NULL in fp32 and on other devices. */
    uint16_t *params16;
    int params16_valid; /* params16 == round(params) */
    /* bf16 precision on the CPU, by default: the matrices' master weights are kept in planes
     * (bf16_planes.c), their image inside their own 4 bytes per weight, and params16 is NULL.
     * planes_up: one bit per weight of those tensors, 16 to a word, tensor i's from word
     * planes_up_off[i]. */
    int planes;
    uint16_t *planes_up;
    size_t planes_up_off[LLMC_NUM_PARAM_TENSORS];

    size_t act_layer_stride[A_NUM]; /* floats between layer l and l+1 (0 for non-layer) */
    size_t act_offsets[A_NUM];
    size_t num_acts;
    float *acts;
    float *a[A_NUM];
    /* bf16 precision on the CPU: the activations only GEMMs read (ln1, atty, ln2, fch_gelu,
     * lnf; model.c, ACT_GEMM_ONLY) are stored as bf16 bits, rounded as the GEMM would round
     * them (bf16.h), in acts16: a16[a] (a[a] NULL), half the bytes. The others stay fp32 in
     * acts. act_offsets and num_acts above are the PUBLIC layout (the tensor table, copies
     * in and out: fp32 for every tensor, bf16 ones widened); act_store is where a tensor
     * lies in acts or acts16. Without bf16 storage act_store == act_offsets. */
    size_t act_store[A_NUM];
    size_t num_acts32, num_acts16;
    uint16_t *acts16;
    uint16_t *a16[A_NUM];

    backward_scratch scratch;
    float *bwd_buffer;

    float *gemm_ws; /* LLMC_GEMM_WS_FLOATS * ws_threads */
    float *row_ws;  /* LLMC_ATTN_WS_FLOATS(max_seq, hs) * ws_threads */
    int ws_threads; /* threads the workspaces are sized for */
    float *gemm_shared; /* LLMC_GEMM_SHARED_FLOATS, shared by all threads */

    int B, T;             /* of the last forward */
    int have_targets;     /* last forward had targets: backward allowed */
    int32_t *targets;     /* copy of the last targets (max_batch * max_seq) */
    int32_t *inputs;      /* copy of the last inputs */
    float mean_loss;

    /* named tensor table */
    int num_entries;
    tensor_entry *entries;
    char *names;

    char errmsg[LLMC_ERRMSG_LEN];

    /* backend: the CPU path or the CUDA one (cuda/). On a CUDA model params, grads, adam_m,
     * adam_v, acts, p[] and g[] hold DEVICE pointers with the same layout as on the CPU,
     * the host-only members above (bwd_buffer, scratch, workspaces) are unused, and
     * backend_state holds the CUDA backend's own data. */
    int32_t device;    /* llmc_device */
    int32_t precision; /* llmc_precision */
    const struct llmc_backend *be;
    void *backend_state;
    /* llmc_model_buffer handed out the parameter buffer: the caller may write weights through
     * that pointer at any time (the CUDA backend's bf16 weight copy then cannot be cached) */
    int params_exposed;

    llmc_debug_fault debug_fault; /* zero (off) unless a test arms it */
};

/* Hook after a kernel of the CPU forward that produced activations first..last (A_*) of
 * layer l: adds the armed fault, if it targets one of them. Off, it costs one flag test. */
void llmc_debug_fault_apply(llmc_model *m, int first_act, int last_act, int layer);
#define LLMC_DEBUG_FAULT(m, first, last, l) \
    do { \
        if ((m)->debug_fault.armed) llmc_debug_fault_apply((m), (first), (last), (l)); \
    } while (0)

/* The device-specific half of the training step. The public functions in model.c validate
 * their arguments and the call order, then call these. Each returns an llmc_status and sets
 * the model's message on failure. forward: tokens are already copied to m->inputs (and
 * m->targets when with_targets), m->B and m->T are set; *mean_loss gets the mean loss when
 * with_targets. adamw: hyperparameters already validated. copy: count floats at offset of a
 * kind's buffer to (to_host = 1) or from host memory, bounds already checked. */
typedef struct llmc_backend {
    const char *name;
    int (*forward)(llmc_model *m, int with_targets, float *mean_loss);
    int (*zero_grad)(llmc_model *m);
    /* accumulate: grads += gradient; otherwise grads = gradient */
    int (*backward)(llmc_model *m, float loss_scale, int accumulate);
    int (*grad_sumsq)(llmc_model *m, double *sumsq);
    int (*scale_grads)(llmc_model *m, float coef);
    int (*adamw)(llmc_model *m, const llmc_adamw_params *hp);
    int (*copy)(llmc_model *m, int kind, size_t offset, size_t count, float *host, int to_host);
    void (*destroy)(llmc_model *m); /* frees what the backend allocated (not the model) */
} llmc_backend;

/* errors.c */
int llmc_fail(llmc_model *m, int status, const char *fmt, ...);       /* sets model error */
int llmc_fail_thread(int status, const char *fmt, ...);                /* sets thread error */
void llmc_clear_thread_error(void);

/* size arithmetic with overflow detection: return 0 on overflow */
int llmc_mul_size(size_t a, size_t b, size_t *out);
int llmc_add_size(size_t a, size_t b, size_t *out);

/* model.c */
int llmc_validate_config(const llmc_config *cfg, char *why, size_t why_len);
int llmc_model_alloc(const llmc_config *cfg, const llmc_options *opt, llmc_model **out);
void llmc_model_init_weights(llmc_model *m, uint64_t seed);
/* GPT-2 initialisation into host memory laid out as the parameter buffer */
void llmc_init_params(const llmc_model *m, float *params, uint64_t seed);
/* weight decay AdamW applies to parameter tensor i (P_*) under hp */
double llmc_param_weight_decay(const llmc_adamw_params *hp, int i);
/* buffer of a kind and its length in floats (host or device pointer); NULL for a bad kind */
float *llmc_kind_buffer(const llmc_model *m, int kind, size_t *numel);

/* cuda/backend.cu (only in builds with LLMC_HAVE_CUDA). Never abort without a GPU. */
#ifdef LLMC_HAVE_CUDA
/* 1 if a CUDA device and cuBLAS can be used; else 0 with the reason in why */
int llmc_cuda_usable(char *why, size_t why_len);
/* Allocate the device buffers of a model whose sizes and tensor table are set, set params,
 * grads, adam_m, adam_v, acts, p[], g[], be and backend_state. On failure frees what it
 * allocated and returns a status with the message in the thread error. */
int llmc_cuda_attach(llmc_model *m);
#endif

/* rng.c: a small deterministic generator so initialisation is reproducible everywhere */
typedef struct { uint64_t state; } llmc_rng;
void llmc_rng_seed(llmc_rng *r, uint64_t seed);
uint64_t llmc_rng_next(llmc_rng *r);
float llmc_rng_normal(llmc_rng *r);
/* p[j] = std * normal (first + j) of the stream of `seed`; parallel, thread-count independent */
void llmc_rng_fill_normal(float *p, size_t n, float std, uint64_t seed, uint64_t first, int nt);

/* kernels (each forward has its backward beside it in the same file) */
void encoder_forward(float *out, const int32_t *inp, const float *wte, const float *wpe,
                     int B, int T, int C, int nt);
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp,
                      int B, int T, int C, int nt);

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C, int nt);
/* layernorm_forward with out as bf16 bits (bf16.h rounding of layernorm_forward's floats) */
void layernorm_forward16(uint16_t *out, float *mean, float *rstd, const float *inp,
                         const float *weight, const float *bias, int N, int C, int nt);
/* dinp += layernorm backward; dweight, dbias accumulate */
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int N, int C, int nt);

/* Execution context handed to kernels: thread count and preallocated workspaces, so no
 * kernel allocates during a step. */
typedef struct {
    int nt;                 /* OpenMP threads to use */
    float *gemm_ws;         /* LLMC_GEMM_WS_FLOATS per thread */
    float *row_ws;          /* row_ws_len floats per thread (attention, LLMC_ATTN_WS_FLOATS) */
    size_t row_ws_len;
    float *gemm_shared;     /* one operand packed once for all threads (may be NULL) */
    size_t gemm_shared_len; /* in floats */
    float dw_beta;          /* weight gradients: 1 accumulate into them, 0 overwrite */
    int bf16;               /* 1: GEMMs round their operands to bf16 (llmc_gemm_bf16) */
    /* bf16: params16[i] = round(params[i]) for i < num_params (or params16 NULL): the matmuls
     * hand a weight inside params to the GEMM as its bf16 image (weight16_of, matmul.c) */
    const float *params;
    const uint16_t *params16;
    size_t num_params;
    /* bf16 planes (bf16_planes.c): a weight inside a planes tensor has its image in the
     * tensor's first half (weight16_of, matmul.c); NULL when the model keeps none */
    const size_t *param_offsets, *param_sizes;
} llmc_exec;

/* out (N, OC) = inp (N, IC) @ weight (OC, IC)^T + bias (OC or NULL) */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int IC, int OC, const llmc_exec *ex);
/* dinp (N, IC) = dout @ weight (overwritten, skipped when dinp is NULL);
 * dweight = dw_beta * dweight + dout^T @ inp; dbias += colsum(dout) (skipped when NULL) */
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int IC, int OC,
                     const llmc_exec *ex);

/* the same two with the input activation as bf16 bits (inp16, (N, IC)): bitwise the results
 * for the fp32 input those bits round (the GEMMs round it anyway) */
void matmul_forward16(float *out, const uint16_t *inp16, const float *weight, const float *bias,
                      int N, int IC, int OC, const llmc_exec *ex);
void matmul_backward16(float *dinp, float *dweight, float *dbias, const float *dout,
                       const uint16_t *inp16, const float *weight, int N, int IC, int OC,
                       const llmc_exec *ex);
/* matmul_backward16 with dout as bf16 bits too (dout16, rows ld_dout apart): the classifier,
 * whose logit gradient the bf16 cross-entropy backward writes as bf16 */
void matmul_backward16_dout16(float *dinp, float *dweight, const uint16_t *dout16,
                              int64_t ld_dout, const uint16_t *inp16, const float *weight,
                              int N, int IC, int OC, const llmc_exec *ex);

/* Attention works in blocks of ATT_BLOCK query rows (attention.c). Per-thread workspace
 * (ex->row_ws, ex->row_ws_len floats each) its backward needs at sequence length T: one
 * block's rows of d(att), ATT_BLOCK x T (256 KiB at T = 1024). */
#define ATT_BLOCK 64
#define LLMC_ATTN_WS_FLOATS(T, hs) \
    ((size_t)ATT_BLOCK * (size_t)(T) + LLMC_ATTN_PACK_WORDS(T, hs))
/* bf16: room for two of one head's operands packed once (llmc_packed_b16: K and V, either
 * way round), a bound on llmc_gemm_bf16_pack_b's size for depth and columns T and hs */
#define LLMC_ATTN_PACK_WORDS(T, hs) (2 * ((size_t)(T) + 64) * ((size_t)(hs) + 32))
/* causal self-attention over qkv (B, T, 3C) -> out (B, T, C); att (B, NH, T, T) probs */
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH,
                       const llmc_exec *ex);
/* dqkv (B, T, 3C) is overwritten */
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                        int B, int T, int C, int NH, const llmc_exec *ex);

void gelu_forward(float *out, const float *inp, size_t N, int nt);
/* gelu_forward with the output as bf16 bits (bf16.h rounding of gelu_forward's floats) */
void gelu_forward16(uint16_t *out, const float *inp, size_t N, int nt);
/* dinp = gelu'(inp) * dout (dinp may alias dout) */
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t N, int nt);

void residual_forward(float *out, const float *a, const float *b, size_t N, int nt);

/* probs over the first V of Vp columns, per-position losses; returns mean loss */
float crossentropy_forward(float *probs, float *losses, const float *logits,
                           const int32_t *targets, int N, int V, int Vp, int nt);
/* dlogits = (probs - onehot) * dloss, padded columns 0 (overwritten) */
void crossentropy_backward(float *dlogits, const float *probs, const int32_t *targets,
                           float dloss, int N, int V, int Vp, int nt);
/* the same, as bf16 bits, in place: row n's Vp bf16 at the start of row n of probs */
void crossentropy_backward16(float *probs, const int32_t *targets, float dloss, int N, int V,
                             int Vp, int nt);

/* gemm.c: C (M, N) = beta * C + op(A) (M, K) @ op(B) (K, N); beta is 0 or 1.
 * op(A)(m, k) = transA ? A[k * lda + m] : A[m * lda + k]; likewise for B. */
#define LLMC_GEMM_MC 288
#define LLMC_GEMM_KC 256
#define LLMC_GEMM_NR 32
#define LLMC_GEMM_MR_MAX 8
/* per thread: one packed A block (MC x KC) and one packed B strip (KC x NR) */
/* bf16 (gemm_bf16.c): panels of KC depths (stored as KC / 2 32-bit pairs) for the
 * vdpbf16ps kernels and its emulations, of KC16_AMX for the AMX kernel, which loads and stores
 * its C tiles once per panel: at 256 depths that C traffic was a large part of the kernel's
 * time (d12 B4 T64 kernel breakdown: 427 -> 406 ms per step at 1024). The panel depth fixes
 * where partial sums are added to C, so it is part of the bf16 result's bits. */
#define LLMC_GEMM_KC16_AMX 1024
#define LLMC_GEMM_KC16_MAX (LLMC_GEMM_KC16_AMX > LLMC_GEMM_KC ? LLMC_GEMM_KC16_AMX : LLMC_GEMM_KC)
#define LLMC_GEMM_WS16_A ((size_t)(LLMC_GEMM_MC + LLMC_GEMM_MR_MAX) * (LLMC_GEMM_KC16_MAX / 2))
#define LLMC_GEMM_WS16 (LLMC_GEMM_WS16_A + (size_t)(LLMC_GEMM_KC16_MAX / 2) * LLMC_GEMM_NR)
#define LLMC_GEMM_WS32 \
    ((size_t)(LLMC_GEMM_MC + LLMC_GEMM_MR_MAX) * LLMC_GEMM_KC + (size_t)LLMC_GEMM_KC * LLMC_GEMM_NR)
/* per thread: the larger of the two GEMMs' needs */
#define LLMC_GEMM_WS_FLOATS (LLMC_GEMM_WS32 > LLMC_GEMM_WS16 ? LLMC_GEMM_WS32 : LLMC_GEMM_WS16)
#define LLMC_MAX_THREADS 256
#define LLMC_GEMM_SHARED_FLOATS ((size_t)1 << 20) /* 4 MiB: fits a 256 x 3072 operand */
void llmc_sgemm(int transA, int transB, int M, int N, int K, const float *A, int64_t lda,
                const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                const llmc_exec *ex);
const char *llmc_gemm_isa(void);
/* gemm_bf16.c: the same product with every element of A and B rounded to bf16 (round to
 * nearest even), fp32 accumulation and fp32 C; the bf16 precision's GEMM */
void llmc_gemm_bf16(int transA, int transB, int M, int N, int K, const float *A, int64_t lda,
                    const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                    const llmc_exec *ex);
const char *llmc_gemm_bf16_isa(void);
/* the same product with B given as bf16 bits already (B16, op(B) as for llmc_gemm_bf16, ldb
 * in bf16 elements): bitwise the result of llmc_gemm_bf16 on the fp32 B that B16 rounds */
void llmc_gemm_bf16_b16(int transA, int transB, int M, int N, int K, const float *A,
                        int64_t lda, const uint16_t *B16, int64_t ldb, float beta, float *C,
                        int64_t ldc, const llmc_exec *ex);
/* the same product with A (A16), or A and B (A16, B16), given as bf16 bits (op(A) as for
 * llmc_gemm_bf16, lda in bf16 elements): the activations a bf16 model keeps in bf16. Bitwise
 * the result of llmc_gemm_bf16 on the fp32 operands those bits round. */
void llmc_gemm_bf16_a16(int transA, int transB, int M, int N, int K, const uint16_t *A16,
                        int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                        int64_t ldc, const llmc_exec *ex);
void llmc_gemm_bf16_a16b16(int transA, int transB, int M, int N, int K, const uint16_t *A16,
                           int64_t lda, const uint16_t *B16, int64_t ldb, float beta, float *C,
                           int64_t ldc, const llmc_exec *ex);
/* op(B) of a bf16 GEMM packed once for several products that use its
 * leading rows and columns (attention: one head's K and V for every block of queries) */
typedef struct {
    uint32_t *words;
    int K, N;    /* depth and columns packed */
    int amx, mr; /* the kernel it was packed for */
} llmc_packed_b16;
/* pack op(B) (K x N) into words (cap of them); 0 when it does not fit (then unusable) */
int llmc_gemm_bf16_pack_b(llmc_packed_b16 *pb, uint32_t *words, size_t cap, int transB, int K,
                          int N, const float *B, int64_t ldb);
/* C = beta C + op(A) @ op(B)[:K, :N] with op(B) from pb, with ex's threads; 0 when pb does
 * not fit this product or the kernel changed (the caller then runs llmc_gemm) */
int llmc_gemm_bf16_packed(int transA, int M, int N, int K, const float *A, int64_t lda,
                          const llmc_packed_b16 *pb, float beta, float *C, int64_t ldc,
                          const llmc_exec *ex);
/* the GEMM of the context's precision: what matmul and attention call */
static inline void llmc_gemm(int transA, int transB, int M, int N, int K, const float *A,
                             int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                             int64_t ldc, const llmc_exec *ex) {
    if (ex->bf16)
        llmc_gemm_bf16(transA, transB, M, N, K, A, lda, B, ldb, beta, C, ldc, ex);
    else
        llmc_sgemm(transA, transB, M, N, K, A, lda, B, ldb, beta, C, ldc, ex);
}

/* adamw.c: returns nothing; hyperparameters per torch.optim.AdamW */
/* sum of squares of g[0, n), independent of the thread count */
double grad_sumsq(const float *g, size_t n, int nt);
void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int t,
                  float grad_scale, int nt);
/* bf16_weights.c: dst[i] = round(src[i]) to bf16 bits (bf16.h), i < n */
void bf16_round_copy(uint16_t *dst, const float *src, size_t n, int nt);
/* the bf16 weight copy of a CPU bf16 model: made current when stale or when the parameter
 * pointer was handed out (writes through it are unseen); nothing in fp32 */
void bf16_weights_refresh(llmc_model *m);
/* The tensors kept in planes by a bf16 CPU model: the five matrices the matmuls read. */
static inline int planes_tensor(int i) {
    return i == P_WTE || i == P_QKVW || i == P_ATTPROJW || i == P_FCW || i == P_FCPROJW;
}
/* bf16_planes.c. pack: every planes tensor from the fp32 values in it, through the gradients
 * (unused yet; zeroed after). unpack: back to fp32 weights beside a params16 image
 * (the layout of LLMC_BF16_MASTER=fp32; LLMC_OK or the model error). copy: the public fp32
 * layout of the parameters [offset, offset + count) to or from host. */
void planes_pack(llmc_model *m);
/* model.c: transparent huge pages for a parameter-sized buffer (advice only; Linux) */
void llmc_advise_huge_pages(void *p, size_t bytes);
int planes_unpack(llmc_model *m);
void planes_copy(llmc_model *m, size_t offset, size_t count, float *host, int to_host);
/* encoder_forward with wte in planes */
void planes_encoder_forward(const llmc_model *m, float *out, const int32_t *inp,
                            const float *wpe, int B, int T, int C, int nt);
/* AdamW of elements [j0, j1) of planes tensor i; m and v at element j0 */
void adamw_update_planes(llmc_model *md, int i, size_t j0, size_t j1, const float *grad,
                         float *m, float *v, double lr, double beta1, double beta2, double eps,
                         double weight_decay, int t, float grad_scale, int nt);
/* adamw_update that also writes param16[i] = round(param[i]) (bf16 precision) */
void adamw_update16(float *param, uint16_t *param16, const float *grad, float *m, float *v,
                    size_t n, double lr, double beta1, double beta2, double eps,
                    double weight_decay, int t, float grad_scale, int nt);

/* model.c: the hyperparameter checks of llmc_model_adamw_step (LLMC_OK or the model error) */
int llmc_check_adamw_params(llmc_model *m, const llmc_adamw_params *hp);

#ifdef __cplusplus
}
#endif

#endif
