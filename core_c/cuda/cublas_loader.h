/* cublas_loader.h - the few cuBLAS entry points the CUDA backend uses, loaded at run time.
 *
 * libllmc does not link cuBLAS: it opens libcublas.so.<CUDA major> (libcublas.so.13 for a
 * CUDA 13 build) with dlopen() when a CUDA model is
 * created (or llmc_has_cuda() asks). So the library loads, and its CPU backend works, on
 * machines without cuBLAS, and the build needs no cuBLAS headers (CI has nvcc only).
 *
 * The declarations below use plain C types that have the same ABI as cuBLAS's own (its enums
 * are int-sized, its handle is a pointer). LLMC_CUBLAS_SIGNATURES writes every function type
 * once, parameterised by the type names, so cublas_check.cu can instantiate it with the real
 * cuBLAS types and prove at compile time, when cublas_v2.h is available, that each signature
 * and enum value here matches the real header.
 *
 * Library search order: $LLMC_CUBLAS_LIBRARY (a path), then LLMC_CUBLAS_SONAME through the
 * dynamic loader (LD_LIBRARY_PATH, the system paths, or a copy already loaded in the process,
 * e.g. by PyTorch or by the Python binding from the nvidia-cublas wheel). */
#ifndef LLMC_CUBLAS_LOADER_H
#define LLMC_CUBLAS_LOADER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* the major version of the CUDA toolkit the library is built with (CMake sets it) */
#ifndef LLMC_CUDA_MAJOR
#define LLMC_CUDA_MAJOR 13
#endif
#define LLMC_STR2_(x) #x
#define LLMC_STR_(x) LLMC_STR2_(x)
#define LLMC_CUBLAS_SONAME "libcublas.so." LLMC_STR_(LLMC_CUDA_MAJOR)

/* enum values, as in cublas_api.h and library_types.h (checked by cublas_check.cu) */
#define LLMC_CUBLAS_STATUS_SUCCESS 0
#define LLMC_CUBLAS_OP_N 0
#define LLMC_CUBLAS_OP_T 1
#define LLMC_CUBLAS_GEMM_DEFAULT (-1)
#define LLMC_CUBLAS_DEFAULT_MATH 0 /* no TF32: fp32 GEMMs are computed in fp32 */
#define LLMC_CUBLAS_COMPUTE_32F 68
#define LLMC_CUDA_R_32F 0
#define LLMC_CUDA_R_16BF 14

/* H handle, ST status, OP operation, DT data type, CT compute type, AL algorithm, MA math
 * mode, SM stream */
#define LLMC_CUBLAS_SIGNATURES(H, ST, OP, DT, CT, AL, MA, SM)                                 \
    typedef ST (*llmc_pfn_cublasCreate)(H *);                                                \
    typedef ST (*llmc_pfn_cublasDestroy)(H);                                                 \
    typedef ST (*llmc_pfn_cublasGetVersion)(H, int *);                                       \
    typedef ST (*llmc_pfn_cublasSetStream)(H, SM);                                           \
    typedef ST (*llmc_pfn_cublasSetMathMode)(H, MA);                                         \
    typedef ST (*llmc_pfn_cublasSetWorkspace)(H, void *, size_t);                            \
    typedef const char *(*llmc_pfn_cublasGetStatusString)(ST);                               \
    typedef ST (*llmc_pfn_cublasGemmEx)(H, OP, OP, int, int, int, const void *, const void *, \
                                        DT, int, const void *, DT, int, const void *, void *,  \
                                        DT, int, CT, AL);                                      \
    typedef ST (*llmc_pfn_cublasGemmStridedBatchedEx)(                                       \
        H, OP, OP, int, int, int, const void *, const void *, DT, int, long long int,          \
        const void *, DT, int, long long int, const void *, void *, DT, int, long long int,    \
        int, CT, AL);

typedef struct llmc_cublas_context *llmc_cublas_handle; /* cublasHandle_t */
typedef struct llmc_cuda_stream *llmc_cuda_stream_t;     /* cudaStream_t */

LLMC_CUBLAS_SIGNATURES(llmc_cublas_handle, int, int, int, int, int, int, llmc_cuda_stream_t)

typedef struct {
    void *lib; /* dlopen handle */
    char path[256];
    llmc_pfn_cublasCreate create;
    llmc_pfn_cublasDestroy destroy;
    llmc_pfn_cublasGetVersion get_version;
    llmc_pfn_cublasSetStream set_stream;
    llmc_pfn_cublasSetMathMode set_math_mode;
    llmc_pfn_cublasSetWorkspace set_workspace;
    llmc_pfn_cublasGetStatusString status_string;
    llmc_pfn_cublasGemmEx gemm_ex;
    llmc_pfn_cublasGemmStridedBatchedEx gemm_strided_batched_ex;
} llmc_cublas_api;

/* Open cuBLAS and resolve every entry point. 1 on success; 0 with the reason in why. */
int llmc_cublas_load(llmc_cublas_api *api, char *why, size_t why_len);
/* Forget the entry points (the library itself stays loaded: RTLD_NODELETE). */
void llmc_cublas_unload(llmc_cublas_api *api);
/* A message for a cuBLAS status. */
const char *llmc_cublas_status_name(const llmc_cublas_api *api, int status);

#ifdef __cplusplus
}
#endif
#endif
