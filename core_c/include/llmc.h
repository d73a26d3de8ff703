/*
 * llmc.h - the one public header of the pyllmc C core: GPT-2 training on CPU (OpenMP) or,
 * in a build with CUDA, on an NVIDIA GPU; the device is chosen per model at run time.
 *
 * Everything between LLMC_CDEF_BEGIN and LLMC_CDEF_END is also read verbatim by the
 * Python binding (cffi cdef), so it must stay plain C declarations: no macros inside
 * that block except LLMC_API, which the binding strips. One source of truth.
 *
 * Conventions
 *  - Every function that can fail returns an llmc_status; 0 is success.
 *  - Failures on a model handle are described by llmc_model_last_error(model);
 *    failures before a handle exists (create, load) by llmc_last_error(), which is
 *    per thread.
 *  - The library never exits, aborts or prints; bad input is an error status.
 *  - Tensors live in five buffers (kinds): parameters, gradients, AdamW m, AdamW v,
 *    activations. llmc_model_tensor_info() describes each named tensor as an offset
 *    (in floats) into its kind's buffer, so callers can view memory without copying.
 *    The four parameter-shaped kinds use the checkpoint names (wte, ..., lnfb) with
 *    layer-stacked shapes (qkvw is (L, 3C, C)); reports prefix the kind (grad.wte,
 *    adam_m.wte) and slice layers (h3.qkvw) themselves.
 *  - One model handle must not be used by two threads at once; distinct handles share
 *    nothing and may run concurrently.
 *  - Devices: options.device picks the backend (LLMC_DEVICE_CPU or LLMC_DEVICE_CUDA). On a
 *    CUDA model the five buffers live in GPU memory: llmc_model_buffer() then returns DEVICE
 *    pointers (llmc_model_device() says which), with the same named-tensor offsets as on the
 *    CPU; llmc_model_copy_to_host()/llmc_model_copy_from_host() move floats either way on
 *    both devices. Every call on a CUDA model has finished on the GPU when it returns.
 */
#ifndef LLMC_H
#define LLMC_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define LLMC_API __declspec(dllexport)
#else
#define LLMC_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* LLMC_CDEF_BEGIN */

typedef enum {
    LLMC_OK = 0,
    LLMC_ERR_INVALID_ARGUMENT = 1, /* a size, pointer or value the call cannot accept */
    LLMC_ERR_OUT_OF_MEMORY = 2,    /* an allocation failed or a size overflowed */
    LLMC_ERR_IO = 3,               /* a file could not be opened, read or written */
    LLMC_ERR_BAD_FORMAT = 4,       /* a file's content is not what its format allows */
    LLMC_ERR_BAD_STATE = 5,        /* calls in the wrong order, e.g. backward before forward */
    LLMC_ERR_UNSUPPORTED = 6       /* a feature this build does not have (e.g. a backend) */
} llmc_status;

typedef enum {
    LLMC_KIND_PARAMS = 0,
    LLMC_KIND_GRADS = 1,
    LLMC_KIND_ADAM_M = 2,
    LLMC_KIND_ADAM_V = 3,
    LLMC_KIND_ACTS = 4
} llmc_kind;

typedef enum {
    LLMC_DEVICE_CPU = 0,
    LLMC_DEVICE_CUDA = 1
} llmc_device;

typedef enum {
    LLMC_PRECISION_FP32 = 0, /* fp32 everywhere (on CUDA: cuBLAS with TF32 off) */
    LLMC_PRECISION_BF16 = 1  /* matmul and attention GEMM inputs rounded to bf16 (round to
                                nearest even), fp32 accumulation, fp32 master weights,
                                gradients, optimizer state and stored activations; on the CPU
                                with AVX512_BF16 instructions where the CPU has them */
} llmc_precision;

/* GPT-2 shape; the same fields as the llm.c checkpoint header. */
typedef struct {
    int32_t max_seq_len;       /* maxT: rows of wpe */
    int32_t vocab_size;        /* V */
    int32_t padded_vocab_size; /* Vp >= V; logits columns V..Vp-1 are ignored */
    int32_t num_layers;        /* L */
    int32_t num_heads;         /* NH; C must be divisible by NH */
    int32_t channels;          /* C */
} llmc_config;

/* Limits fixed at creation; activation memory is sized for them. */
typedef struct {
    int32_t max_batch;   /* largest B a forward call may use */
    int32_t max_seq;     /* largest T a forward call may use; 0 means config.max_seq_len */
    int32_t num_threads; /* OpenMP threads for this model; 0 means the OpenMP default */
    int32_t device;      /* llmc_device; 0 = CPU */
    int32_t precision;   /* llmc_precision; 0 = fp32 */
    int32_t reserved;    /* must be 0 */
} llmc_options;

/* One named tensor: its kind's buffer + offset (in floats), and its current shape. */
typedef struct {
    const char *name; /* e.g. "wte", "qkvw", "h0.ln1", "logits"; owned by the model */
    int32_t kind;     /* llmc_kind */
    int32_t ndim;
    int64_t shape[4];
    int64_t offset; /* in floats from the start of the kind's buffer */
    int64_t numel;
} llmc_tensor_info;

/* AdamW hyperparameters for one update; t is the 1-based step used for bias correction.
 * Doubles, because the scalars derived from them (1 - beta2, the bias corrections,
 * 1 - lr * weight_decay) must be formed in double and rounded once, as torch.optim.AdamW
 * does with Python floats: 1.0f - 0.999f differs from 0.001 by 1.3e-5 relative. */
typedef struct {
    double lr;
    double beta1;
    double beta2;
    double eps;
    double weight_decay;
    int32_t t;
    int32_t decay_matrices_only; /* 1: decay only 2-D weights (wte, wpe, qkvw, attprojw, fcw,
                                    fcprojw); 0: decay every parameter, as llm.c does */
    float grad_scale; /* gradients are multiplied by this as they are read (they stay
                         unchanged in memory): pass the clipping coefficient here instead of
                         clip_grad_norm's separate pass over every gradient. Must be > 0;
                         1 for none. The product is the same float multiply clipping does, so
                         the update is bitwise identical to clip-then-step. */
} llmc_adamw_params;

typedef struct llmc_model llmc_model;

LLMC_API int32_t llmc_abi_version(void);
/* sizeof of each public struct, so the binding can detect a stale library; 0 for a name
 * it does not know. */
LLMC_API size_t llmc_struct_size(const char *struct_name);
LLMC_API const char *llmc_status_name(int32_t status);
/* Message of the last failure of create/load on this thread ("" if none). */
LLMC_API const char *llmc_last_error(void);
/* Message of the last failure of a call on this model ("" if none). */
LLMC_API const char *llmc_model_last_error(const llmc_model *model);
/* 1 if the library was built with OpenMP. */
LLMC_API int32_t llmc_has_openmp(void);
/* End the calling thread's idle OpenMP worker threads (its next parallel call starts new
 * ones). For a thread whose C work moves to another thread, such as a training job in the
 * background: while more OpenMP threads exist in a process than it has CPUs, libgomp makes
 * every team's barriers wait in the kernel instead of spinning, so the idle workers of one
 * thread slow the busy team of another. Only the calling thread's own workers end; call it
 * outside any C call of this library. Always LLMC_OK (a no-op where the OpenMP runtime lacks
 * omp_pause_resource_all). */
LLMC_API int32_t llmc_release_threads(void);
/* 1 if the library was built with the CUDA backend (whether or not a GPU is present). */
LLMC_API int32_t llmc_built_with_cuda(void);
/* 1 if CUDA models can be created here: built with CUDA, a driver and a GPU are present and
 * cuBLAS could be loaded. Never fails or aborts; 0 otherwise (llmc_cuda_describe says why). */
LLMC_API int32_t llmc_has_cuda(void);
/* One line on the CUDA backend: the device in use, or why CUDA is not available. The string
 * is per thread and valid until the next call of this function on the thread. */
LLMC_API const char *llmc_cuda_describe(void);

/* A fresh model with GPT-2 initialisation drawn from seed. */
LLMC_API int32_t llmc_model_create(const llmc_config *config, const llmc_options *options,
                                   uint64_t seed, llmc_model **out);
/* Load an llm.c checkpoint: version 3 (fp32) or 5 (bf16, widened to fp32). */
LLMC_API int32_t llmc_model_load(const char *path, const llmc_options *options,
                                 llmc_model **out);
/* Save parameters as an llm.c version 3 (fp32) checkpoint, written to path. */
LLMC_API int32_t llmc_model_save(llmc_model *model, const char *path);
LLMC_API void llmc_model_destroy(llmc_model *model);

LLMC_API int32_t llmc_model_get_config(const llmc_model *model, llmc_config *out);
/* The options as resolved at creation: max_seq and num_threads are never 0 here. */
LLMC_API int32_t llmc_model_get_options(const llmc_model *model, llmc_options *out);
LLMC_API int32_t llmc_model_set_threads(llmc_model *model, int32_t num_threads);

/* Forward pass over inputs (B x T int32 token ids). Always computes logits (B, T, Vp).
 * With targets (B x T int32, or NULL) it also computes probs, per-position losses and
 * the mean loss into *loss (which may be NULL); without targets *loss is set to -1. */
LLMC_API int32_t llmc_model_forward(llmc_model *model, const int32_t *inputs,
                                    const int32_t *targets, int32_t B, int32_t T, float *loss);
LLMC_API int32_t llmc_model_zero_grad(llmc_model *model);
/* Backward of the last forward (which must have had targets). It turns the probs activation
 * into d loss / d logits in place (one vocabulary-sized buffer fewer), so read probs before
 * calling backward; a second backward without a new forward is a BAD_STATE error.
 * Gradients are ADDED to the
 * gradient buffer (so micro-batches accumulate); d(loss)/d(loss) is loss_scale, so the
 * gradient is that of loss_scale * mean loss. Use 1.0 for one batch, 1/K for K micro-batches. */
LLMC_API int32_t llmc_model_backward(llmc_model *model, float loss_scale);
/* llmc_model_backward with a choice: accumulate != 0 adds to the gradients as above;
 * accumulate == 0 OVERWRITES them (grads = the gradient of this batch), the same result as
 * zero_grad followed by backward but without zero_grad's pass over all gradients and with
 * the weight-gradient matmuls writing instead of read-add-writing. Use it for the first
 * micro-batch of a step. */
LLMC_API int32_t llmc_model_backward_ex(llmc_model *model, float loss_scale, int32_t accumulate);
/* Global L2 norm of all parameter gradients. */
LLMC_API int32_t llmc_model_grad_norm(llmc_model *model, float *norm);
/* Scale gradients so their global norm is at most max_norm (as torch's clip_grad_norm_:
 * coefficient max_norm / (norm + 1e-6) when that is below 1). *norm gets the norm before. */
LLMC_API int32_t llmc_model_clip_grad_norm(llmc_model *model, float max_norm, float *norm);
LLMC_API int32_t llmc_model_adamw_step(llmc_model *model, const llmc_adamw_params *params);
/* AdamW on the parameter slice [offset, offset + count) of the flat parameter buffer
 * (checkpoint order) only, with the caller's moment buffers: adam_m and adam_v hold count
 * floats each (adam_m[0] is the moment of parameter offset), or are both NULL to use the
 * model's own moments at offset. For ZeRO-1 data parallelism, where each process keeps the
 * AdamW state of its own slice. Element for element the arithmetic of llmc_model_adamw_step
 * (weight decay per tensor as decay_matrices_only says, a slice may span tensors), so slices
 * that cover the buffer give bitwise its update. CPU models only (UNSUPPORTED otherwise). */
LLMC_API int32_t llmc_model_adamw_step_range(llmc_model *model, const llmc_adamw_params *params,
                                             int64_t offset, int64_t count, float *adam_m,
                                             float *adam_v);
/* Sum of squares, in double, of the gradients [offset, offset + count): the share of the
 * global squared norm one slice holds (llmc_model_grad_norm is sqrt of it for the whole
 * buffer, bitwise). CPU models only. */
LLMC_API int32_t llmc_model_grad_sumsq_range(llmc_model *model, int64_t offset, int64_t count,
                                             double *sumsq);
/* The reduce of a data-parallel reduce-scatter: gradients[offset + i] += src[i] for i in
 * [0, count) (src: count floats in host memory, not overlapping the gradients), and, when
 * sumsq is not NULL, the sum of squares of the summed slice, bitwise what
 * llmc_model_grad_sumsq_range(model, offset, count) then returns; it is taken block by
 * block as the sums are written, so the norm costs no second pass. CPU models only. */
LLMC_API int32_t llmc_model_grad_add_range(llmc_model *model, int64_t offset, int64_t count,
                                           const float *src, double *sumsq);

/* The named tensors: count, and the info of the i-th (0 <= i < count). Activation shapes
 * follow the B and T of the last forward call (max_batch, max_seq before any). */
LLMC_API int32_t llmc_model_num_tensors(const llmc_model *model);
LLMC_API int32_t llmc_model_tensor_info(const llmc_model *model, int32_t index,
                                        llmc_tensor_info *out);
/* Base pointer and length (in floats) of one kind's buffer: a host pointer on a CPU model,
 * a device pointer on a CUDA model. data may be NULL to ask for the length only. Handing out
 * the parameter pointer tells a bf16 model (CPU or CUDA) that its weights may be written
 * behind its back: it then rebuilds its bf16 weight copy at every forward and backward, not
 * only after the changes it sees (AdamW, copies into the parameters, loads). A bf16 CPU model
 * stores the activations only matmuls read (ln1, atty, ln2, fch_gelu, lnf) as bf16: it has no
 * float activation buffer, so asking for that pointer is LLMC_ERR_UNSUPPORTED (the length
 * alone works); the copies below widen those tensors to float (and round them on the way in). */
LLMC_API int32_t llmc_model_buffer(llmc_model *model, int32_t kind, float **data, int64_t *numel);
/* llmc_device of the model's buffers (-1 for NULL). */
LLMC_API int32_t llmc_model_device(const llmc_model *model);
/* llmc_precision of the model (-1 for NULL). */
LLMC_API int32_t llmc_model_precision(const llmc_model *model);
/* Copy count floats starting at offset (in floats) of one kind's buffer to host memory dst,
 * or from host memory src into it; on either device. offset + count must lie within the
 * buffer. */
LLMC_API int32_t llmc_model_copy_to_host(llmc_model *model, int32_t kind, int64_t offset,
                                         int64_t count, float *dst);
LLMC_API int32_t llmc_model_copy_from_host(llmc_model *model, int32_t kind, int64_t offset,
                                           int64_t count, const float *src);

/* Testing aid (debug_fault.c): from the next forward on, add delta to element 0 of the named
 * activation (e.g. "h3.fch", "logits") right after the kernel that produces it, on every
 * forward until cleared with tensor_name NULL or "". Lets tests prove that the parity harness
 * localises a wrong kernel output. CPU models only (UNSUPPORTED elsewhere); an unknown name is
 * INVALID_ARGUMENT. When unset it costs one flag test per kernel call. */
LLMC_API int32_t llmc_debug_set_fault(llmc_model *model, const char *tensor_name, float delta);

/* LLMC_CDEF_END */

/* 4: llmc_debug_set_fault; 5: llmc_model_backward_ex; 6: llmc_model_adamw_step_range,
 * llmc_model_grad_sumsq_range, bf16 precision on the CPU; 7: llmc_release_threads;
 * 8: llmc_model_grad_add_range */
#define LLMC_ABI_VERSION 8

#ifdef __cplusplus
}
#endif
#endif /* LLMC_H */
