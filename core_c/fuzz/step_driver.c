/* step_driver.c - a small end-to-end run of the C core for valgrind memcheck (noxfile
 * `memcheck`): create, a few training steps (forward, zero_grad, backward, clip, AdamW),
 * the tensor table, host copies, save, load (checked bitwise), and the error paths.
 * Pure C, so memcheck sees every allocation of the core without the Python interpreter's
 * noise. Exit 0 = pass; 1 = a check failed (message on stderr).
 *
 *   llmc_step_driver [THREADS] [DIR]   (DIR: where the checkpoint goes, default /tmp) */
#define _POSIX_C_SOURCE 200809L
#include "llmc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures = 0;
#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "step_driver: %s:%d: check failed: %s\n", __FILE__, \
                    __LINE__, #cond);                                         \
            failures++;                                                       \
        }                                                                     \
    } while (0)

int main(int argc, char **argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 2;
    const char *dir = argc > 2 ? argv[2] : "/tmp";
    const llmc_config cfg = {16, 60, 64, 2, 2, 16};
    const llmc_options opt = {2, 0, threads, 0, 0, 0};
    llmc_model *m = NULL;
    CHECK(llmc_model_create(&cfg, &opt, 7, &m) == LLMC_OK && m);
    if (!m) return 1;

    enum { B = 2, T = 8 };
    int32_t x[B * T], y[B * T];
    unsigned s = 12345u;
    for (int i = 0; i < B * T; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (int32_t)((s >> 8) % 60);
        s = s * 1664525u + 1013904223u;
        y[i] = (int32_t)((s >> 8) % 60);
    }
    float first = 0.0f, loss = 0.0f, norm = 0.0f;
    for (int step = 1; step <= 3; step++) {
        /* step 2 takes the overwrite path (backward_ex, accumulate = 0) instead of zero_grad */
        if (step != 2) CHECK(llmc_model_zero_grad(m) == LLMC_OK);
        CHECK(llmc_model_forward(m, x, y, B, T, &loss) == LLMC_OK);
        CHECK(isfinite(loss));
        if (step == 1) first = loss;
        if (step == 2)
            CHECK(llmc_model_backward_ex(m, 1.0f, 0) == LLMC_OK);
        else
            CHECK(llmc_model_backward(m, 1.0f) == LLMC_OK);
        CHECK(llmc_model_clip_grad_norm(m, 1.0f, &norm) == LLMC_OK && isfinite(norm));
        llmc_adamw_params hp = {1e-3, 0.9, 0.95, 1e-8, 0.1, step, 1, 1.0f};
        CHECK(llmc_model_adamw_step(m, &hp) == LLMC_OK);
    }
    CHECK(loss < first);
    /* a smaller forward without targets; every named tensor readable through a host copy */
    CHECK(llmc_model_forward(m, x, NULL, 1, 5, &loss) == LLMC_OK && loss == -1.0f);
    const int n = llmc_model_num_tensors(m);
    CHECK(n > 0);
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        llmc_tensor_info ti;
        CHECK(llmc_model_tensor_info(m, i, &ti) == LLMC_OK);
        float *buf = (float *)malloc((size_t)(ti.numel ? ti.numel : 1) * sizeof(float));
        CHECK(buf && llmc_model_copy_to_host(m, ti.kind, ti.offset, ti.numel, buf) == LLMC_OK);
        for (int64_t j = 0; buf && j < ti.numel; j++) total += fabs((double)buf[j]);
        free(buf);
    }
    CHECK(isfinite(total) && total > 0.0);
    CHECK(llmc_model_set_threads(m, 1) == LLMC_OK);

    /* save, load, compare bitwise */
    char path[4096];
    snprintf(path, sizeof(path), "%s/llmc_step_driver_%ld.bin", dir, (long)getpid());
    CHECK(llmc_model_save(m, path) == LLMC_OK);
    llmc_model *m2 = NULL;
    const llmc_options opt2 = {1, 4, 1, 0, 0, 0};
    CHECK(llmc_model_load(path, &opt2, &m2) == LLMC_OK && m2);
    if (m2) {
        float *p1, *p2;
        int64_t n1, n2;
        CHECK(llmc_model_buffer(m, LLMC_KIND_PARAMS, &p1, &n1) == LLMC_OK);
        CHECK(llmc_model_buffer(m2, LLMC_KIND_PARAMS, &p2, &n2) == LLMC_OK);
        CHECK(n1 == n2 && memcmp(p1, p2, (size_t)n1 * sizeof(float)) == 0);
        CHECK(llmc_model_forward(m2, x, y, 1, 4, &loss) == LLMC_OK && isfinite(loss));
        llmc_model_destroy(m2);
    }
    remove(path);

    /* error paths: each must fail cleanly (memcheck checks they free what they allocated) */
    llmc_model *bad = NULL;
    const llmc_config bad_cfg = {16, 60, 64, 2, 3, 16}; /* C not divisible by NH */
    CHECK(llmc_model_create(&bad_cfg, &opt, 1, &bad) == LLMC_ERR_INVALID_ARGUMENT && !bad);
    CHECK(strlen(llmc_last_error()) > 0);
    CHECK(llmc_model_load("/nonexistent/llmc.bin", &opt, &bad) == LLMC_ERR_IO && !bad);
    CHECK(llmc_model_load(dir, &opt, &bad) == LLMC_ERR_IO && !bad); /* a directory */
    const int32_t oob[2] = {0, 60};
    CHECK(llmc_model_forward(m, oob, NULL, 1, 2, &loss) == LLMC_ERR_INVALID_ARGUMENT);
    CHECK(llmc_model_forward(m, x, NULL, 3, 1, &loss) == LLMC_ERR_INVALID_ARGUMENT);
    CHECK(llmc_model_backward(m, 1.0f) == LLMC_ERR_BAD_STATE); /* last forward had no targets */
    CHECK(llmc_model_tensor_info(m, n, &(llmc_tensor_info){0}) == LLMC_ERR_INVALID_ARGUMENT);
    llmc_model_destroy(m);
    if (failures) {
        fprintf(stderr, "step_driver: %d check(s) failed\n", failures);
        return 1;
    }
    fprintf(stderr, "step_driver: ok (%d tensors, first loss %.4f)\n", n, (double)first);
    return 0;
}
