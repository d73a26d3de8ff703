/* bf16_weights.c - the bf16 copy of the weights of a CPU model in bf16 precision, where the
 * model keeps fp32 master weights (LLMC_BF16_MASTER=fp32, or once a float pointer to them was
 * handed out); by default the copy lives inside the master weights (bf16_planes.c).
 *
 * Every matmul of a bf16 step rounds its weight operand to bf16: the forward and the input
 * gradient each read every weight once. Rounding inside the GEMM packs did it twice per step
 * and read 4 bytes per weight each time; the copy m->params16 (2 bytes per parameter) is
 * made once per change of the weights and the packs read it as it is.
 *
 * When it is made: AdamW writes it with the new weights (adamw_update16: the update streams
 * the weights anyway), so a training step never converts them separately. Anything else
 * that writes the weights marks it stale (params16_valid = 0: a copy into the parameters,
 * which checkpoint loads and resumes use, a fresh model) and the next forward or backward
 * remakes it. Once the parameter pointer has been handed out (llmc_model_buffer, the numpy
 * and torch views), writes through it cannot be seen, so from then on every forward and
 * backward remakes it: correct whatever the caller does, at the old cost. */
#include "internal.h"

#include "bf16.h"

/* cloned for wide vectors: llmc_bf16_bits is branch-free, so the loop vectorises */
LLMC_CLONES static void round_range(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (uint16_t)llmc_bf16_bits(src[i]);
}

void bf16_round_copy(uint16_t *dst, const float *src, size_t n, int nt) {
#pragma omp parallel num_threads(nt)
    {
        const size_t tid = (size_t)LLMC_THREAD_ID(), nth = (size_t)LLMC_TEAM_SIZE();
        const size_t lo = n * tid / nth, hi = n * (tid + 1) / nth;
        round_range(dst + lo, src + lo, hi - lo);
    }
}

void bf16_weights_refresh(llmc_model *m) {
    if (!m->params16 || (m->params16_valid && !m->params_exposed)) return;
    bf16_round_copy(m->params16, m->params, m->num_params, m->nthreads);
    m->params16_valid = 1;
}
