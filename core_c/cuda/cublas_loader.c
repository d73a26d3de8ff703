/* cublas_loader.c - open cuBLAS at run time (see cublas_loader.h). */
#define _GNU_SOURCE /* RTLD_NODELETE */
#include "cublas_loader.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef RTLD_NODELETE
#define RTLD_NODELETE 0
#endif

static void *open_lib(const char *name, char *why, size_t why_len) {
    dlerror();
    /* RTLD_NODELETE: cuBLAS is never unloaded once loaded; its teardown at dlclose while other
     * users (PyTorch, another model) hold handles is not worth the risk */
    void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!h) {
        const char *e = dlerror();
        snprintf(why, why_len, "cannot load cuBLAS (%s): %s", name, e ? e : "unknown error");
    }
    return h;
}

int llmc_cublas_load(llmc_cublas_api *api, char *why, size_t why_len) {
    memset(api, 0, sizeof(*api));
    const char *env = getenv("LLMC_CUBLAS_LIBRARY");
    const char *name = (env && env[0]) ? env : LLMC_CUBLAS_SONAME;
    api->lib = open_lib(name, why, why_len);
    if (!api->lib) {
        if (!env || !env[0]) {
            size_t n = strlen(why);
            snprintf(why + n, why_len > n ? why_len - n : 0,
                     " (install cuBLAS %d: the nvidia-cublas wheel or the CUDA toolkit; or "
                     "set LLMC_CUBLAS_LIBRARY to the path of " LLMC_CUBLAS_SONAME ")",
                     LLMC_CUDA_MAJOR);
        }
        return 0;
    }
    snprintf(api->path, sizeof(api->path), "%s", name);
    struct {
        const char *symbol;
        void **slot;
    } syms[] = {
        {"cublasCreate_v2", (void **)&api->create},
        {"cublasDestroy_v2", (void **)&api->destroy},
        {"cublasGetVersion_v2", (void **)&api->get_version},
        {"cublasSetStream_v2", (void **)&api->set_stream},
        {"cublasSetMathMode", (void **)&api->set_math_mode},
        {"cublasSetWorkspace_v2", (void **)&api->set_workspace},
        {"cublasGetStatusString", (void **)&api->status_string},
        {"cublasGemmEx", (void **)&api->gemm_ex},
        {"cublasGemmStridedBatchedEx", (void **)&api->gemm_strided_batched_ex},
    };
    for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
        dlerror();
        void *f = dlsym(api->lib, syms[i].symbol);
        if (!f) {
            snprintf(why, why_len, "%s has no symbol %s (cuBLAS %d or newer is needed)", name,
                     syms[i].symbol, LLMC_CUDA_MAJOR);
            llmc_cublas_unload(api);
            return 0;
        }
        /* POSIX guarantees that object and function pointers convert through dlsym */
        memcpy(syms[i].slot, &f, sizeof(f));
    }
    return 1;
}

void llmc_cublas_unload(llmc_cublas_api *api) {
    if (api->lib) dlclose(api->lib); /* a no-op for the code itself: RTLD_NODELETE */
    memset(api, 0, sizeof(*api));
}

const char *llmc_cublas_status_name(const llmc_cublas_api *api, int status) {
    if (api && api->status_string) {
        const char *s = api->status_string(status);
        if (s) return s;
    }
    return "unknown cuBLAS status";
}
