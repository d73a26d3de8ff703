/* bf16_planes.c - the master weights of a CPU bf16 model's matrices, kept in planes.
 *
 * Every matmul of a bf16 step reads its weight as the weight's bf16 image, and the image is
 * made once per change of the weights (AdamW), not at every call. Kept beside fp32 master
 * weights, the image costs 2 bytes per parameter more than the fp32 path (237 MiB at d12),
 * more than the bf16 activations save at small batches. In planes the image is part of the
 * master weight itself: a matrix tensor (wte, qkvw, attprojw, fcw, fcprojw) of n weights
 * keeps, in its own 4n bytes, first the n images (hi: what the matmuls read, as params16
 * was) and then the n low halves of the fp32 bits (lo). Round to nearest even gives the
 * high half of a weight or one more, so one bit per weight (planes_up, up = 1: it went up)
 * makes the fp32 value exact again: bits = (hi - up) << 16 | lo (bf16.h). The cost is that
 * bit, 1/32 of the fp32 bytes, and two exceptions (llmc_planes_canonical): a NaN is kept
 * quiet, and a weight below the smallest normal float, whose image is a signed zero, is
 * kept as that zero (no trained GPT-2 weight is within 1.2e-38 of zero).
 *
 * The other tensors (wpe, biases, layernorms; 0.8% of d12's parameters) stay fp32 with no
 * image: nothing multiplies them in a GEMM. Readers of the fp32 values go through this file:
 * the public copies (llmc_model_copy_to_host / from_host: checkpoints, the Python side),
 * AdamW (adamw.c) and the embedding lookup. A float pointer to the parameters cannot exist,
 * so llmc_model_buffer turns a planes model back into fp32 weights with a params16 image
 * (planes_unpack, once) before it hands one out: LLMC_BF16_MASTER=fp32 keeps that layout
 * from the start. */
#include "internal.h"

#include "bf16.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint16_t *hi, *lo, *up;
    size_t n;
} planes_view;

static planes_view view_of(const llmc_model *m, int i) {
    planes_view v;
    v.n = m->param_sizes[i];
    v.hi = (uint16_t *)(void *)m->p[i];
    v.lo = v.hi + v.n;
    v.up = m->planes_up + m->planes_up_off[i];
    return v;
}

static float value_at(const planes_view *v, size_t j) { return llmc_planes_get(v->hi, v->lo, v->up, j); }

/* In place, front to back: element j's image goes to bytes [2j, 2j + 2), inside floats
 * that are read already; its low half waits in the gradients (unused yet: a new or a loaded
 * model), since it goes where floats not yet read lie. The gradients are zeroed after. */
void planes_pack(llmc_model *m) {
    uint16_t *tmp = (uint16_t *)(void *)m->grads;
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        if (!planes_tensor(i)) continue;
        const planes_view v = view_of(m, i);
        const float *w = m->p[i];
        memset(v.up, 0, (v.n + 15) / 16 * sizeof(uint16_t));
        for (size_t j = 0; j < v.n; j++) {
            const float x = w[j];
            const uint32_t up = llmc_planes_split(x, v.hi + j, tmp + j);
            v.up[j / 16] = (uint16_t)(v.up[j / 16] | (up << (j % 16)));
        }
        memcpy(v.lo, tmp, v.n * sizeof(uint16_t));
    }
    memset(m->grads, 0, m->num_params * sizeof(float));
}

int planes_unpack(llmc_model *m) {
    if (!m->planes) return LLMC_OK;
    size_t most = 1;
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++)
        if (planes_tensor(i) && m->param_sizes[i] > most) most = m->param_sizes[i];
    uint16_t *p16 = (uint16_t *)calloc(m->num_params ? m->num_params : 1, sizeof(uint16_t));
    uint16_t *tmp = (uint16_t *)malloc(most * sizeof(uint16_t));
    if (!p16 || !tmp) {
        free(p16);
        free(tmp);
        return llmc_fail(m, LLMC_ERR_OUT_OF_MEMORY,
                         "cannot allocate the %zu MiB bf16 weight image that a float pointer to "
                         "the parameters of a bf16 CPU model needs",
                         (m->num_params * sizeof(uint16_t)) >> 20);
    }
    /* back to front: float j covers the images of elements 2j and 2j + 1, used already */
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        if (!planes_tensor(i)) continue;
        planes_view v = view_of(m, i);
        memcpy(tmp, v.lo, v.n * sizeof(uint16_t));
        v.lo = tmp;
        float *w = m->p[i];
        for (size_t j = v.n; j-- > 0;) w[j] = value_at(&v, j);
    }
    free(tmp);
    llmc_advise_huge_pages(p16, m->num_params * sizeof(uint16_t)); /* as params16 at creation */
    free(m->planes_up);
    m->planes_up = NULL;
    m->planes = 0;
    m->params16 = p16;
    m->params16_valid = 0; /* bf16_weights.c makes it at the next forward */
    return LLMC_OK;
}

void planes_copy(llmc_model *m, size_t offset, size_t count, float *host, int to_host) {
    const size_t end = offset + count;
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const size_t lo = m->param_offsets[i], hi = lo + m->param_sizes[i];
        const size_t b0 = lo > offset ? lo : offset, b1 = hi < end ? hi : end;
        if (b0 >= b1) continue;
        float *h = host + (b0 - offset);
        const size_t j0 = b0 - lo, n = b1 - b0;
        if (planes_tensor(i)) {
            const planes_view v = view_of(m, i);
            for (size_t j = 0; j < n; j++) {
                if (to_host)
                    h[j] = value_at(&v, j0 + j);
                else
                    llmc_planes_put(v.hi, v.lo, v.up, j0 + j, h[j]);
            }
        } else if (to_host) {
            memcpy(h, m->p[i] + j0, n * sizeof(float));
        } else {
            memcpy(m->p[i] + j0, h, n * sizeof(float));
        }
    }
}

void planes_encoder_forward(const llmc_model *m, float *out, const int32_t *inp,
                            const float *wpe, int B, int T, int C, int nt) {
    const planes_view v = view_of(m, P_WTE);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        const int t = bt % T;
        float *o = out + (size_t)bt * C;
        const size_t e = (size_t)inp[bt] * C;
        const float *p = wpe + (size_t)t * C;
        for (int c = 0; c < C; c++) o[c] = value_at(&v, e + (size_t)c) + p[c];
    }
}
