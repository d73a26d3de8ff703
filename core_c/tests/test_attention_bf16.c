/* test_attention_bf16.c - the bf16 attention's once-per-head packing of K and V.
 *
 * In bf16 precision attention_forward and attention_backward pack one head's K and V once,
 * into the thread's row workspace, for all its blocks of queries (llmc_gemm_bf16_pack_b,
 * llmc_gemm_bf16_packed); with a workspace too small for the packs each block's products pack
 * their own operands, as before. The two must give the same bits: out, att and dqkv compared
 * bitwise between a full and a too-small workspace, for every bf16 kernel this CPU runs
 * (LLMC_GEMM_ISA), 1 and 2 threads, sequence lengths that leave a ragged last block, head
 * sizes 64 and 40 (20 pairs: AMX pads the depth to 32), and several batches. A packed
 * operand read at the wrong panel, strip or depth, or a block reading another block's keys,
 * changes the bits. Exit code 0 = pass. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "../src/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

static float *floats(size_t n, unsigned seed) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    unsigned s = seed;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (float)((s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
    }
    return p;
}

typedef struct {
    float *out, *att, *dqkv;
} result;

/* forward then backward with a row workspace of row_len floats per thread */
static result run(const float *qkv, const float *dout, int B, int T, int C, int NH, int nt,
                  size_t row_len) {
    llmc_exec ex;
    memset(&ex, 0, sizeof(ex));
    ex.nt = nt;
    ex.bf16 = 1;
    ex.gemm_ws = calloc(LLMC_GEMM_WS_FLOATS * (size_t)nt, sizeof(float));
    ex.row_ws = calloc(row_len * (size_t)nt, sizeof(float));
    ex.row_ws_len = row_len;
    ex.dw_beta = 1.0f;
    result r;
    r.out = calloc((size_t)B * T * C, sizeof(float));
    r.att = calloc((size_t)B * NH * T * T, sizeof(float));
    r.dqkv = calloc((size_t)B * T * 3 * C, sizeof(float));
    attention_forward(r.out, r.att, qkv, B, T, C, NH, &ex);
    attention_backward(r.dqkv, dout, qkv, r.att, B, T, C, NH, &ex);
    free(ex.gemm_ws);
    free(ex.row_ws);
    return r;
}

static void free_result(result *r) {
    free(r->out);
    free(r->att);
    free(r->dqkv);
}

static int same(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

static void check(const char *isa, int B, int T, int C, int NH, int nt) {
    const float *qkv = floats((size_t)B * T * 3 * C, 7u + (unsigned)T);
    const float *dout = floats((size_t)B * T * C, 11u + (unsigned)C);
    const int hs = C / NH;
    result packed = run(qkv, dout, B, T, C, NH, nt, LLMC_ATTN_WS_FLOATS(T, hs));
    result plain = run(qkv, dout, B, T, C, NH, nt, (size_t)ATT_BLOCK * T); /* no room for packs */
    const int ok = same(packed.out, plain.out, (size_t)B * T * C) &&
                   same(packed.att, plain.att, (size_t)B * NH * T * T) &&
                   same(packed.dqkv, plain.dqkv, (size_t)B * T * 3 * C);
    if (!ok) {
        printf("FAIL %s B=%d T=%d C=%d NH=%d nt=%d: packed K/V differ from per-block packing\n",
               isa, B, T, C, NH, nt);
        failures++;
    }
    /* the packed path must also have computed something: not all zero */
    float mx = 0.0f;
    for (size_t i = 0; i < (size_t)B * T * 3 * C; i++)
        if (packed.dqkv[i] > mx) mx = packed.dqkv[i];
    if (!(mx > 0.0f)) {
        printf("FAIL %s B=%d T=%d C=%d NH=%d: dqkv is all zero\n", isa, B, T, C, NH);
        failures++;
    }
    free_result(&packed);
    free_result(&plain);
    free((void *)qkv);
    free((void *)dout);
}

int main(void) {
    static const char *isas[] = {"amx", "avx512bf16", "avx512", "avx2", "generic"};
    int ran = 0;
    for (size_t i = 0; i < sizeof(isas) / sizeof(isas[0]); i++) {
        setenv("LLMC_GEMM_ISA", isas[i], 1);
        if (strcmp(llmc_gemm_bf16_isa(), isas[i]) != 0) continue; /* not on this CPU */
        ran++;
        for (int nt = 1; nt <= 2; nt++) {
            check(isas[i], 1, 200, 128, 2, nt); /* hs 64; blocks 64, 64, 64, 8 */
            check(isas[i], 2, 97, 80, 2, nt);   /* hs 40 */
            check(isas[i], 3, 64, 64, 1, nt);   /* one block per head */
        }
    }
    unsetenv("LLMC_GEMM_ISA");
    if (!ran) {
        printf("FAIL no bf16 kernel ran\n");
        failures++;
    }
    printf("%s: %d bf16 kernels, %d failures\n", failures ? "FAIL" : "ok", ran, failures);
    return failures ? 1 : 0;
}
