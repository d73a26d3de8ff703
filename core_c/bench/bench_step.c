/*
 * bench_step.c - time whole GPT-2 training steps of the C core from C, through the public
 * API only (llmc.h), so it keeps building whatever happens inside core_c/src.
 *
 *   bench_step L C NH V Vp maxT B T threads warmup steps [fp32|bf16]
 *
 * Does `warmup` untimed steps, then `steps` timed ones, each: forward (with targets),
 * backward overwriting the gradients (= zero_grad + backward), gradient clipping to norm
 * 1.0, AdamW (lr 1e-4, wd 0.1), the same step as the Python benchmark. Prints one JSON object: the phases of every timed step in seconds.
 *
 * Under callgrind the timed steps are counted alone with
 *   valgrind --tool=callgrind [--instr-atstart=no] --toggle-collect=bench_counted_steps \
 *            ./bench_step ...
 * (--instr-atstart=no only when built with <valgrind/callgrind.h>; see below).
 *
 * Built by pyllmc.bench.cdriver (gcc, the CMake Release flags); see benchmarks/README.md.
 */
#define _POSIX_C_SOURCE 199309L
#include "llmc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* With valgrind's header, the timed steps also switch callgrind's instrumentation on and off,
 * so `--instr-atstart=no` skips the cost of simulating model creation and warm-up. */
#if defined(__has_include)
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define BENCH_HAVE_CALLGRIND 1
#endif
#endif
#ifndef BENCH_HAVE_CALLGRIND
#define CALLGRIND_START_INSTRUMENTATION
#define CALLGRIND_STOP_INSTRUMENTATION
#endif

#define MAX_STEPS 10000

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Peak resident set size of this process in KiB (VmHWM; Linux), -1 when unknown. */
static long peak_rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    if (!f) return -1;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static int check(llmc_model *m, int32_t st, const char *what) {
    if (st != LLMC_OK) {
        fprintf(stderr, "bench_step: %s failed: %s: %s\n", what, llmc_status_name(st),
                m ? llmc_model_last_error(m) : llmc_last_error());
        return 1;
    }
    return 0;
}

/* One training step; phases (seconds) into ph[0..2] when ph is not NULL. Gradient clipping
 * to norm 1.0 is folded into the AdamW update through grad_scale (one pass over the
 * gradients fewer than clip_grad_norm + adamw_step, bitwise the same update). */
static int one_step(llmc_model *m, const int32_t *x, const int32_t *y, int B, int T, int t,
                    double *ph, float *loss) {
    llmc_adamw_params hp;
    memset(&hp, 0, sizeof(hp));
    hp.lr = 1e-4;
    hp.beta1 = 0.9;
    hp.beta2 = 0.999;
    hp.eps = 1e-8;
    hp.weight_decay = 0.1;
    hp.t = t;
    hp.decay_matrices_only = 0;
    float norm;
    double t0 = now_s();
    if (check(m, llmc_model_forward(m, x, y, B, T, loss), "forward")) return 1;
    double t1 = now_s();
    /* accumulate = 0: the gradients are overwritten, i.e. zero_grad + backward without
     * zero_grad's pass over all gradients (what the trainer does for a step's first batch) */
    if (check(m, llmc_model_backward_ex(m, 1.0f, 0), "backward")) return 1;
    double t2 = now_s();
    if (check(m, llmc_model_grad_norm(m, &norm), "grad_norm")) return 1;
    const float coef = 1.0f / (norm + 1e-6f);
    hp.grad_scale = coef < 1.0f ? coef : 1.0f;
    if (check(m, llmc_model_adamw_step(m, &hp), "adamw_step")) return 1;
    double t3 = now_s();
    if (ph) {
        ph[0] = t1 - t0;
        ph[1] = t2 - t1;
        ph[2] = t3 - t2;
    }
    return 0;
}

/* The counted steps: callgrind collects from entry to exit of this function
 * (--toggle-collect=bench_counted_steps); never inlined so the name always exists. */
__attribute__((noinline)) int bench_counted_steps(llmc_model *m, const int32_t *x,
                                                  const int32_t *y, int B, int T, int first_t,
                                                  int steps, double *phases, float *losses) {
    int rc = 0;
    for (int s = 0; s < steps && rc == 0; s++)
        rc = one_step(m, x, y, B, T, first_t + s, phases + 3 * s, losses + s);
    return rc;
}

/* The measured region; with callgrind's header it also switches instrumentation on and off,
 * so `--instr-atstart=no` skips simulating model creation and warm-up. */
__attribute__((noinline)) int bench_timed_steps(llmc_model *m, const int32_t *x,
                                                const int32_t *y, int B, int T, int first_t,
                                                int steps, double *phases, float *losses) {
    CALLGRIND_START_INSTRUMENTATION;
    int rc = bench_counted_steps(m, x, y, B, T, first_t, steps, phases, losses);
    CALLGRIND_STOP_INSTRUMENTATION;
    return rc;
}

static int arg_int(const char *s, const char *name, long lo, long hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "bench_step: %s = '%s' is not an integer in [%ld, %ld]\n", name, s, lo, hi);
        return 1;
    }
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv) {
    static const char *names[] = {"L", "C", "NH", "V", "Vp", "maxT", "B", "T", "threads", "warmup", "steps"};
    int v[11];
    const char *prec = argc == 13 ? argv[12] : "fp32"; /* the precision of the model */
    if ((argc != 12 && argc != 13) || (strcmp(prec, "fp32") && strcmp(prec, "bf16"))) {
        fprintf(stderr, "usage: bench_step L C NH V Vp maxT B T threads warmup steps [fp32|bf16]\n");
        return 2;
    }
    for (int i = 0; i < 11; i++) {
        long lo = (i == 8 || i == 9) ? 0 : 1;
        long hi = i == 10 ? MAX_STEPS : 1L << 30;
        if (arg_int(argv[i + 1], names[i], lo, hi, &v[i])) return 2;
    }
    llmc_config cfg = {v[5], v[3], v[4], v[0], v[2], v[1]};
    llmc_options opt = {v[6], v[7], v[8], 0, 0, 0};
    opt.precision = strcmp(prec, "bf16") ? LLMC_PRECISION_FP32 : LLMC_PRECISION_BF16;
    const int B = v[6], T = v[7], warmup = v[9], steps = v[10];
    llmc_model *m = NULL;
    if (check(NULL, llmc_model_create(&cfg, &opt, 0, &m), "create")) return 1;

    int32_t *x = malloc(sizeof(int32_t) * (size_t)B * T);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)B * T);
    double *phases = malloc(sizeof(double) * 3 * (size_t)steps);
    float *losses = malloc(sizeof(float) * (size_t)(steps > 0 ? steps : 1));
    if (!x || !y || !phases || !losses) {
        fprintf(stderr, "bench_step: out of memory\n");
        return 1;
    }
    uint64_t r = 88172645463325252ull; /* xorshift: fixed tokens */
    for (int i = 0; i < B * T; i++) {
        r ^= r << 13; r ^= r >> 7; r ^= r << 17;
        x[i] = (int32_t)(r % (uint64_t)cfg.vocab_size);
        r ^= r << 13; r ^= r >> 7; r ^= r << 17;
        y[i] = (int32_t)(r % (uint64_t)cfg.vocab_size);
    }
    float loss;
    for (int s = 0; s < warmup; s++)
        if (one_step(m, x, y, B, T, s + 1, NULL, &loss)) return 1;
    if (bench_timed_steps(m, x, y, B, T, warmup + 1, steps, phases, losses)) return 1;

    printf("{\"threads\": %d, \"steps\": [", v[8]);
    for (int s = 0; s < steps; s++)
        printf("%s{\"forward\": %.9f, \"backward\": %.9f, \"update\": %.9f}", s ? ", " : "",
               phases[3 * s], phases[3 * s + 1], phases[3 * s + 2]);
    printf("], \"losses\": [");
    for (int s = 0; s < steps; s++) printf("%s%.6f", s ? ", " : "", losses[s]);
    printf("], \"peak_rss_kb\": %ld}\n", peak_rss_kb());
    llmc_model_destroy(m);
    free(x); free(y); free(phases); free(losses);
    return 0;
}
