/* cublas_check.cu - compile-time proof that cublas_loader.h matches the real cuBLAS header.
 * Built (never linked into the library) only when CMake finds cublas_v2.h; see
 * LLMC_CUBLAS_CHECK in CMakeLists.txt. A mismatch is a compile error. */
#include <cublas_v2.h>

#include <type_traits>

#include "cublas_loader.h"

namespace real {
LLMC_CUBLAS_SIGNATURES(cublasHandle_t, cublasStatus_t, cublasOperation_t, cudaDataType,
                       cublasComputeType_t, cublasGemmAlgo_t, cublasMath_t, cudaStream_t)
}

/* each real entry point converts to the real-typed signature without a cast: same
 * parameter list (overloads in the C++ header are resolved by the target type) */
static const real::llmc_pfn_cublasCreate check_create = &cublasCreate_v2;
static const real::llmc_pfn_cublasDestroy check_destroy = &cublasDestroy_v2;
static const real::llmc_pfn_cublasGetVersion check_version = &cublasGetVersion_v2;
static const real::llmc_pfn_cublasSetStream check_stream = &cublasSetStream_v2;
static const real::llmc_pfn_cublasSetMathMode check_math = &cublasSetMathMode;
static const real::llmc_pfn_cublasSetWorkspace check_ws = &cublasSetWorkspace_v2;
static const real::llmc_pfn_cublasGetStatusString check_status = &cublasGetStatusString;
static const real::llmc_pfn_cublasGemmEx check_gemm = &cublasGemmEx;
static const real::llmc_pfn_cublasGemmStridedBatchedEx check_batched = &cublasGemmStridedBatchedEx;

/* the real types have the ABI of the ones the loader uses */
static_assert(sizeof(cublasStatus_t) == sizeof(int), "cublasStatus_t is not int-sized");
static_assert(sizeof(cublasOperation_t) == sizeof(int), "cublasOperation_t is not int-sized");
static_assert(sizeof(cudaDataType) == sizeof(int), "cudaDataType is not int-sized");
static_assert(sizeof(cublasComputeType_t) == sizeof(int), "cublasComputeType_t is not int-sized");
static_assert(sizeof(cublasGemmAlgo_t) == sizeof(int), "cublasGemmAlgo_t is not int-sized");
static_assert(sizeof(cublasMath_t) == sizeof(int), "cublasMath_t is not int-sized");
static_assert(std::is_pointer<cublasHandle_t>::value, "cublasHandle_t is not a pointer");
static_assert(std::is_pointer<cudaStream_t>::value, "cudaStream_t is not a pointer");

/* and the enum values agree */
static_assert(LLMC_CUBLAS_STATUS_SUCCESS == CUBLAS_STATUS_SUCCESS, "CUBLAS_STATUS_SUCCESS");
static_assert(LLMC_CUBLAS_OP_N == CUBLAS_OP_N, "CUBLAS_OP_N");
static_assert(LLMC_CUBLAS_OP_T == CUBLAS_OP_T, "CUBLAS_OP_T");
static_assert(LLMC_CUBLAS_GEMM_DEFAULT == CUBLAS_GEMM_DEFAULT, "CUBLAS_GEMM_DEFAULT");
static_assert(LLMC_CUBLAS_DEFAULT_MATH == CUBLAS_DEFAULT_MATH, "CUBLAS_DEFAULT_MATH");
static_assert(LLMC_CUBLAS_COMPUTE_32F == CUBLAS_COMPUTE_32F, "CUBLAS_COMPUTE_32F");
static_assert(LLMC_CUDA_R_32F == CUDA_R_32F, "CUDA_R_32F");
static_assert(LLMC_CUDA_R_16BF == CUDA_R_16BF, "CUDA_R_16BF");

/* keep the checks referenced so no compiler drops or warns about them */
const void *llmc_cublas_check_table[] = {
    (const void *)check_create, (const void *)check_destroy, (const void *)check_version,
    (const void *)check_stream, (const void *)check_math,    (const void *)check_ws,
    (const void *)check_status, (const void *)check_gemm,    (const void *)check_batched};
