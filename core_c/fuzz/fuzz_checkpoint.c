/* fuzz_checkpoint.c - libFuzzer-compatible harness for the checkpoint loader (llmc_model_load).
 *
 * Each input is tried twice:
 *  1. raw: the bytes are the checkpoint file, exactly as a hostile file on disk would be;
 *  2. structured: the first 16 bytes choose a SMALL, well-formed header (so the file passes
 *     the header and size checks) and the rest fill the parameters, so the fuzzer also reaches
 *     what happens after a successful load (odd shapes, NaN/Inf/huge weights, non-zero wte
 *     padding), which random bytes almost never get to.
 * A loaded model then runs one training step (forward with targets, backward, clip, AdamW)
 * at B = T = 1 and is destroyed.
 *
 * The invariant checked: llmc_model_load returns OK with a model, or a known error status
 * with no model and a non-empty message naming the file. Anything else calls
 * __builtin_trap(), which the fuzzer (and standalone_main.c) report as a crash; ASan/UBSan
 * report memory errors and undefined behaviour themselves.
 *
 * The bytes go to a memfd (an anonymous in-memory file), opened by the loader through
 * /proc/self/fd/N: the real open/fstat/read path, without touching the disk.
 * Build: see core_c/fuzz/README.md (CMake option LLMC_BUILD_FUZZ). */
#define _GNU_SOURCE /* memfd_create */
#include "llmc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define HEADER_INTS 256
#define HEADER_BYTES (HEADER_INTS * 4)

static int g_fd = -1;
static char g_path[64];

static void check(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "fuzz_checkpoint: invariant violated: %s (last error: %s)\n", what,
                llmc_last_error());
        __builtin_trap();
    }
}

static void put_file(const uint8_t *data, size_t size) {
    if (g_fd < 0) {
        g_fd = memfd_create("llmc_fuzz", 0);
        check(g_fd >= 0, "memfd_create failed");
        snprintf(g_path, sizeof(g_path), "/proc/self/fd/%d", g_fd);
    }
    check(ftruncate(g_fd, 0) == 0, "ftruncate failed");
    size_t off = 0;
    while (off < size) {
        ssize_t w = pwrite(g_fd, data + off, size - off, (off_t)off);
        check(w > 0, "pwrite failed");
        off += (size_t)w;
    }
}

/* One training step on a loaded model: it must succeed whatever the weights are (NaN and
 * Inf included; numerical faults are the trainer's business, not a crash). */
static void exercise(llmc_model *m) {
    llmc_config cfg;
    check(llmc_model_get_config(m, &cfg) == LLMC_OK, "get_config");
    const int32_t x = 0, y = cfg.vocab_size - 1;
    float loss = 0.0f, norm = 0.0f;
    check(llmc_model_forward(m, &x, &y, 1, 1, &loss) == LLMC_OK, "forward");
    check(llmc_model_zero_grad(m) == LLMC_OK, "zero_grad");
    check(llmc_model_backward(m, 1.0f) == LLMC_OK, "backward");
    check(llmc_model_clip_grad_norm(m, 1.0f, &norm) == LLMC_OK, "clip_grad_norm");
    llmc_adamw_params hp = {1e-3, 0.9, 0.95, 1e-8, 0.1, 1, 1, 1.0f};
    check(llmc_model_adamw_step(m, &hp) == LLMC_OK, "adamw_step");
    /* a forward beyond the limits fixed at load must be refused, not run out of bounds */
    check(llmc_model_forward(m, &x, &y, 1, 2, &loss) == LLMC_ERR_INVALID_ARGUMENT,
          "forward with T > max_seq accepted");
}

/* must_load: the file is well-formed, so refusing it is a bug too (over-strict checks) */
static void try_load(int must_load) {
    llmc_options opt = {1, 1, 1, 0, 0, 0}; /* B = T = 1: activations stay tiny */
    llmc_model *m = NULL;
    const int st = llmc_model_load(g_path, &opt, &m);
    check(st == LLMC_OK || !must_load, "a well-formed checkpoint was refused");
    if (st == LLMC_OK) {
        check(m != NULL, "OK without a model");
        exercise(m);
        llmc_model_destroy(m);
        return;
    }
    check(m == NULL, "a model returned with an error status");
    check(st == LLMC_ERR_BAD_FORMAT || st == LLMC_ERR_IO || st == LLMC_ERR_OUT_OF_MEMORY ||
              st == LLMC_ERR_INVALID_ARGUMENT,
          "unexpected status");
    const char *msg = llmc_last_error();
    check(msg && msg[0] != '\0', "error without a message");
    check(strstr(msg, g_path) != NULL, "error message does not name the file");
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A well-formed small checkpoint from the input: header fields from bytes 0..15 (each kept
 * small), parameters from the remaining bytes (repeated; zeros if none). */
static void structured(const uint8_t *data, size_t size) {
    if (size < 16) return;
    const uint32_t a = rd32(data), b = rd32(data + 4), c = rd32(data + 8), d = rd32(data + 12);
    const int version = (a & 1) ? 5 : 3;
    const int maxT = 1 + (int)((a >> 1) % 8);
    const int V = 1 + (int)(b % 40);
    const int Vp = V + (int)((b >> 8) % 9);
    const int L = 1 + (int)(c % 3);
    const int NH = 1 + (int)((c >> 8) % 4);
    const int C = NH * (1 + (int)((c >> 16) % 4));
    const int keep_padding = (d & 1) != 0; /* else zero wte's padding rows, as llm.c does */
    const size_t nparams = (size_t)Vp * C + (size_t)maxT * C + (size_t)L * (12 * C * C + 13 * C) +
                           2 * (size_t)C;
    const size_t elem = version == 3 ? 4 : 2;
    const size_t total = HEADER_BYTES + nparams * elem;
    uint8_t *buf = (uint8_t *)calloc(1, total);
    check(buf != NULL, "calloc in the harness");
    int32_t h[HEADER_INTS] = {0};
    h[0] = 20240326;
    h[1] = version;
    h[2] = maxT;
    h[3] = V;
    h[4] = L;
    h[5] = NH;
    h[6] = C;
    h[7] = Vp;
    memcpy(buf, h, sizeof(h));
    const uint8_t *src = data + 16;
    const size_t nsrc = size - 16;
    if (nsrc)
        for (size_t i = 0; i < nparams * elem; i++) buf[HEADER_BYTES + i] = src[i % nsrc];
    if (!keep_padding)
        memset(buf + HEADER_BYTES + (size_t)V * C * elem, 0, (size_t)(Vp - V) * C * elem);
    put_file(buf, total);
    free(buf);
    try_load(!keep_padding || Vp == V);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    put_file(data, size);
    try_load(0);
    structured(data, size);
    return 0;
}
