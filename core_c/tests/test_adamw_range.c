/* test_adamw_range.c - llmc_model_adamw_step_range, llmc_model_grad_sumsq_range and
 * llmc_model_grad_add_range: slices that cover the parameter buffer (with the caller's moment
 * buffers, cut inside tensors) give bitwise the update of llmc_model_adamw_step, for both
 * weight-decay modes; the sum of squares of the whole buffer is the square of
 * llmc_model_grad_norm; adding into a slice changes that slice alone, by a float add, and
 * returns bitwise the slice's sum of squares afterwards; bad slices are errors. */
#include "../src/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static llmc_model *make(void) {
    llmc_config c = {16, 50, 64, 2, 2, 8}; /* maxT V Vp L NH C */
    llmc_options o = {2, 0, 2, 0, 0, 0};
    llmc_model *m = NULL;
    if (llmc_model_create(&c, &o, 7, &m) != LLMC_OK) return NULL;
    return m;
}

static void fill(float *x, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = ((seed >> 8) & 0xFFFF) / 32768.0f - 1.0f;
    }
}

static int run(int decay_matrices_only) {
    llmc_model *a = make(), *b = make();
    CHECK(a && b, "create");
    if (!a || !b) return 1;
    float *pa, *pb, *ga, *gb, *ma, *va;
    int64_t n, n2;
    llmc_model_buffer(a, LLMC_KIND_PARAMS, &pa, &n);
    llmc_model_buffer(b, LLMC_KIND_PARAMS, &pb, &n2);
    llmc_model_buffer(a, LLMC_KIND_GRADS, &ga, &n);
    llmc_model_buffer(b, LLMC_KIND_GRADS, &gb, &n2);
    llmc_model_buffer(a, LLMC_KIND_ADAM_M, &ma, &n);
    llmc_model_buffer(a, LLMC_KIND_ADAM_V, &va, &n);
    /* three slices with cuts inside tensors; the caller's moments */
    const int64_t cuts[4] = {0, n / 3 + 5, 2 * n / 3 - 3, n};
    float *mb = calloc((size_t)n, sizeof(float)), *vb = calloc((size_t)n, sizeof(float));
    llmc_adamw_params hp = {1e-2, 0.9, 0.95, 1e-8, 0.1, 1, decay_matrices_only, 0.75f};
    for (int t = 1; t <= 3; t++) {
        fill(ga, (size_t)n, 100u + (unsigned)t);
        memcpy(gb, ga, (size_t)n * sizeof(float));
        hp.t = t;
        CHECK(llmc_model_adamw_step(a, &hp) == LLMC_OK, "adamw_step");
        for (int s = 0; s < 3; s++) {
            const int64_t off = cuts[s], cnt = cuts[s + 1] - cuts[s];
            CHECK(llmc_model_adamw_step_range(b, &hp, off, cnt, mb + off, vb + off) == LLMC_OK,
                  "range %d: %s", s, llmc_model_last_error(b));
        }
    }
    CHECK(memcmp(pa, pb, (size_t)n * sizeof(float)) == 0, "params differ (decay_matrices_only %d)",
          decay_matrices_only);
    CHECK(memcmp(ma, mb, (size_t)n * sizeof(float)) == 0, "adam_m differs");
    CHECK(memcmp(va, vb, (size_t)n * sizeof(float)) == 0, "adam_v differs");
    /* the model's own moments (NULL, NULL) over the whole buffer equal the full step too */
    hp.t = 4;
    fill(ga, (size_t)n, 999u);
    CHECK(llmc_model_adamw_step(a, &hp) == LLMC_OK, "adamw_step");
    float *mo, *vo;
    llmc_model_buffer(b, LLMC_KIND_ADAM_M, &mo, &n2);
    llmc_model_buffer(b, LLMC_KIND_ADAM_V, &vo, &n2);
    memcpy(mo, mb, (size_t)n * sizeof(float));
    memcpy(vo, vb, (size_t)n * sizeof(float));
    memcpy(gb, ga, (size_t)n * sizeof(float));
    CHECK(llmc_model_adamw_step_range(b, &hp, 0, n, NULL, NULL) == LLMC_OK, "own moments");
    CHECK(memcmp(pa, pb, (size_t)n * sizeof(float)) == 0, "params differ with the model's moments");
    /* sum of squares */
    float norm = 0.0f;
    double s_all = -1.0, s1 = 0.0, s2 = 0.0;
    CHECK(llmc_model_grad_norm(a, &norm) == LLMC_OK, "grad_norm");
    CHECK(llmc_model_grad_sumsq_range(a, 0, n, &s_all) == LLMC_OK, "sumsq");
    CHECK((float)sqrt(s_all) == norm, "sqrt(sumsq) %.9g != grad_norm %.9g", sqrt(s_all), norm);
    llmc_model_grad_sumsq_range(a, 0, n / 2, &s1);
    llmc_model_grad_sumsq_range(a, n / 2, n - n / 2, &s2);
    CHECK(fabs(s1 + s2 - s_all) <= 1e-12 * s_all, "halves %.17g + %.17g != %.17g", s1, s2, s_all);
    /* bad input */
    CHECK(llmc_model_adamw_step_range(b, &hp, n, 1, mb, vb) == LLMC_ERR_INVALID_ARGUMENT, "past end");
    CHECK(llmc_model_adamw_step_range(b, &hp, -1, 1, mb, vb) == LLMC_ERR_INVALID_ARGUMENT, "negative");
    CHECK(llmc_model_adamw_step_range(b, &hp, 0, n + 1, mb, vb) == LLMC_ERR_INVALID_ARGUMENT, "too long");
    CHECK(llmc_model_adamw_step_range(b, &hp, 0, 4, mb, NULL) == LLMC_ERR_INVALID_ARGUMENT, "one NULL");
    CHECK(llmc_model_adamw_step_range(b, NULL, 0, 4, mb, vb) == LLMC_ERR_INVALID_ARGUMENT, "NULL hp");
    hp.t = 0;
    CHECK(llmc_model_adamw_step_range(b, &hp, 0, 4, mb, vb) == LLMC_ERR_INVALID_ARGUMENT, "t = 0");
    CHECK(llmc_model_grad_sumsq_range(a, 0, n, NULL) == LLMC_ERR_INVALID_ARGUMENT, "NULL sumsq");
    CHECK(llmc_model_grad_sumsq_range(a, 1, n, &s1) == LLMC_ERR_INVALID_ARGUMENT, "sumsq too long");
    CHECK(llmc_model_adamw_step_range(NULL, &hp, 0, 1, mb, vb) == LLMC_ERR_INVALID_ARGUMENT, "NULL model");
    free(mb);
    free(vb);
    llmc_model_destroy(a);
    llmc_model_destroy(b);
    return 0;
}

/* A model of about 140k parameters, so that a slice spans several 16384-float blocks of the
 * sum of squares and ends inside one. */
static void add_range(int threads) {
    llmc_config c = {16, 500, 512, 2, 2, 64};
    llmc_options o = {threads, 0, 2, 0, 0, 0};
    llmc_model *m = NULL;
    CHECK(llmc_model_create(&c, &o, 7, &m) == LLMC_OK && m, "create");
    if (!m) return;
    float *g = NULL;
    int64_t n = 0;
    llmc_model_buffer(m, LLMC_KIND_GRADS, &g, &n);
    CHECK(n > 5 * 16384, "model too small for several blocks: %lld", (long long)n);
    fill(g, (size_t)n, 11);
    float *before = malloc((size_t)n * sizeof(float)), *src = malloc((size_t)n * sizeof(float));
    memcpy(before, g, (size_t)n * sizeof(float));
    fill(src, (size_t)n, 12);
    const int64_t off = 37, cnt = n - off - 5;
    double s = -1.0, want = -2.0;
    CHECK(llmc_model_grad_add_range(m, off, cnt, src, &s) == LLMC_OK, "add_range");
    int wrong = 0;
    for (int64_t i = 0; i < n; i++) {
        const float expect = (i >= off && i < off + cnt) ? before[i] + src[i - off] : before[i];
        if (memcmp(&g[i], &expect, sizeof(float)) != 0 && wrong++ < 3)
            CHECK(0, "grads[%lld] = %.9g, expected %.9g", (long long)i, g[i], expect);
    }
    CHECK(wrong == 0, "%d gradients wrong after add_range", wrong);
    CHECK(llmc_model_grad_sumsq_range(m, off, cnt, &want) == LLMC_OK, "sumsq");
    CHECK(memcmp(&s, &want, sizeof s) == 0, "add_range sumsq %.17g != sumsq_range %.17g", s, want);
    CHECK(llmc_model_grad_add_range(m, 0, 16, src, NULL) == LLMC_OK, "NULL sumsq is allowed");
    CHECK(g[15] == before[15] + src[15] && g[16] == before[16], "add without sumsq");
    CHECK(llmc_model_grad_add_range(m, 0, 0, NULL, &s) == LLMC_OK && s == 0.0, "empty slice");
    CHECK(llmc_model_grad_add_range(m, 0, 4, NULL, &s) == LLMC_ERR_INVALID_ARGUMENT, "NULL src");
    CHECK(llmc_model_grad_add_range(m, 1, n, src, &s) == LLMC_ERR_INVALID_ARGUMENT, "add too long");
    CHECK(llmc_model_grad_add_range(m, -1, 1, src, &s) == LLMC_ERR_INVALID_ARGUMENT, "negative");
    CHECK(llmc_model_grad_add_range(NULL, 0, 1, src, &s) == LLMC_ERR_INVALID_ARGUMENT, "NULL model");
    free(before);
    free(src);
    llmc_model_destroy(m);
}

int main(void) {
    run(1);
    run(0);
    add_range(1);
    add_range(2);
    printf("adamw_range: %s\n", failures ? "FAILED" : "passed");
    return failures != 0;
}
