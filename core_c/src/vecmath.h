/* vecmath.h - exp written so compilers vectorise the loops that call them.
 * libm's expf is a scalar call, and GELU and the softmaxes call them for every
 * element: at GPT-2 124M, B=4, T=64 that is ~30 M calls per step, a sixth of the step.
 * Accuracy: within ~2 ulp of expf over the float range (Cody-Waite range reduction plus a
 * degree-7 polynomial on [-ln2/2, ln2/2], whose truncation error is < 1e-8 relative). */
#ifndef LLMC_VECMATH_H
#define LLMC_VECMATH_H

#include <stdint.h>
#include <string.h>

/* LLMC_HD: when nvcc compiles this header (the CUDA kernels, cuda/shared_math.cuh) the
 * function is also a device function, so both backends compute exactly this exp. */
#ifdef __CUDACC__
#define LLMC_HD __host__ __device__
#else
#define LLMC_HD
#endif

static inline LLMC_HD float llmc_expf(float x) {
    const float hi = 88.37f, lo = -87.33f; /* exp stays a normal float in between */
    /* written so NaN lands on lo (x >= lo is false): converting NaN to int below is
     * undefined behaviour (found by the fuzzer with UBSan) */
    const float xc = x > hi ? hi : (x >= lo ? x : lo);
    /* n = round(x / ln2) via the 1.5 * 2^23 trick (exact for |n| < 2^22, no libm call) */
    const float shifter = 12582912.0f;
    const float n = (xc * 1.44269504088896341f + shifter) - shifter;
    /* f = x - n ln2, with ln2 split in two so the product is exact */
    const float f = (xc - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
    float p = 1.9841270e-4f;                 /* 1/7! */
    p = p * f + 1.3888889e-3f;               /* 1/6! */
    p = p * f + 8.3333333e-3f;               /* 1/5! */
    p = p * f + 4.1666667e-2f;               /* 1/4! */
    p = p * f + 1.6666667e-1f;               /* 1/3! */
    p = p * f + 0.5f;
    p = p * f + 1.0f;
    p = p * f + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23; /* 2^n */
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    const float r = p * scale;
    /* below the smallest normal: flush to 0; NaN in, NaN out */
    return x < lo ? 0.0f : (x != x ? x : r);
}

#endif
