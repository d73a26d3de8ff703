/* test_bf16_planes.c - the master weights of a CPU bf16 model kept in planes
 * (core_c/src/bf16_planes.c, bf16.h's llmc_planes_*):
 *
 *  - one weight: for every high half and 64 low halves each (ties, carries into the
 *    exponent, overflow to inf, NaNs, zeros, denormals among them) the image is
 *    llmc_bf16_bits of the weight and the planes give back its canonical bits exactly
 *    (itself, but a denormal as its signed zero and a NaN made quiet);
 *  - a model: a planes model (LLMC_BF16_MASTER unset) and one with fp32 master weights and a
 *    bf16 image (=fp32), given the same weights (ties, exponent carries, values that round
 *    to inf in bf16), gradients and tokens, give BITWISE the same forward loss, gradients,
 *    AdamW weights and moments and checkpoint bytes, for the AVX-512, AVX2 and portable AdamW
 *    (LLMC_GEMM_ISA unset, avx2, generic), and with AdamW in slices cut inside tensors and inside
 *    16-weight words (adamw_step_range, ZeRO-1);
 *  - the planes model holds no params16, and a float pointer to its parameters turns it back
 *    into fp32 weights (the same values) with a params16 image, after which it trains on;
 *  - a checkpoint loaded into a planes model gives the same weights.
 * Exit code 0 = pass. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "../src/bf16.h"
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

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float f_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_one_weight(void) {
    const uint16_t fixed[] = {0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFE, 0xFFFF, 0x4000};
    unsigned s = 12345u;
    long bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        for (int k = 0; k < 64; k++) {
            s = s * 1664525u + 1013904223u;
            const uint32_t low = k < 8 ? fixed[k] : (s >> 16);
            const uint32_t u = (h << 16) | low;
            const uint32_t mag = u & 0x7FFFFFFFu;
            uint32_t want = u;
            if (mag < 0x00800000u) want = u & 0x80000000u;
            if (mag > 0x7F800000u) want = u | 0x00400000u;
            uint16_t hi, lo;
            const uint32_t up = llmc_planes_split(f_of(u), &hi, &lo);
            const uint32_t back = bits_of(llmc_planes_value(hi, lo, up));
            if (hi != llmc_bf16_bits(f_of(u)) || back != want || up > 1) {
                if (bad < 5) printf("FAIL weight %08x: hi %04x up %u gives %08x, want %08x\n", u, hi, up, back, want);
                bad++;
            }
        }
    }
    CHECK(bad == 0, "%ld of 4194304 weights not kept exactly", bad);
}

static const llmc_config CFG = {16, 500, 512, 2, 2, 64}; /* maxT V Vp L NH C */
enum { B = 2, T = 16 };

static llmc_model *make(const char *master, int threads) {
    setenv("LLMC_BF16_MASTER", master, 1);
    llmc_options o = {B, T, threads, 0, LLMC_PRECISION_BF16, 0};
    llmc_model *m = NULL;
    const int st = llmc_model_create(&CFG, &o, 7, &m);
    unsetenv("LLMC_BF16_MASTER");
    CHECK(st == LLMC_OK && m, "create (%s): %s", master, llmc_last_error());
    return st == LLMC_OK ? m : NULL;
}

/* weights with the hard cases mixed in: exact ties (even and odd high halves), low halves
 * that carry into the exponent, and values that round to inf */
static void weights(float *w, const llmc_model *m, unsigned seed) {
    for (size_t i = 0; i < m->num_params; i++) {
        seed = seed * 1664525u + 1013904223u;
        float x = ((seed >> 8) & 0xFFFF) / 65536.0f - 0.5f;
        uint32_t u = bits_of(x);
        switch ((seed >> 4) % 16) {
        case 0: u = (u & 0xFFFF0000u) | 0x8000u; break;               /* a tie */
        case 1: u = (u & 0xFF800000u) | 0x007FFFFFu; break;           /* carries into the exponent */
        case 2: u = (u & 0x80000000u) | 0x7F7FFFFFu; break;           /* rounds to inf */
        case 3: u = (u & 0x80000000u) | (u & 0x007FFFFFu); break;     /* a denormal */
        case 4: u = (u & 0x80000000u) | 0x7F800000u | (seed >> 10 & 0x7FFFFF) | 1u; break; /* NaN */
        case 5: u = (u & 0x80000000u) | 0x00800000u | (seed >> 28); break; /* decays to a denormal */
        default: break;
        }
        w[i] = f_of(u);
    }
    /* wte's padding rows must stay zero for checkpoints */
    for (size_t i = (size_t)CFG.vocab_size * CFG.channels; i < m->param_sizes[P_WTE]; i++) w[i] = 0.0f;
}

/* bitwise, or with canon: the planes' canonical bits of both (denormals as zeros) */
static int same_as(llmc_model *a, llmc_model *b, int kind, size_t n, const char *what, int canon) {
    float *x = malloc(n * 4), *y = malloc(n * 4);
    llmc_model_copy_to_host(a, kind, 0, (int64_t)n, x);
    llmc_model_copy_to_host(b, kind, 0, (int64_t)n, y);
    size_t diff = 0, first = n;
    for (size_t i = 0; i < n; i++)
        if (canon ? llmc_planes_canonical(x[i]) != llmc_planes_canonical(y[i])
                  : bits_of(x[i]) != bits_of(y[i])) {
            if (first == n) first = i;
            diff++;
        }
    CHECK(diff == 0, "%s: %zu of %zu differ, first at %zu (%08x against %08x)", what, diff, n,
          first, first < n ? bits_of(x[first]) : 0, first < n ? bits_of(y[first]) : 0);
    free(x);
    free(y);
    return diff == 0;
}

static int same(llmc_model *a, llmc_model *b, int kind, size_t n, const char *what) {
    return same_as(a, b, kind, n, what, 0);
}

/* the planes' invariant: every stored weight is canonical and its image is its rounding */
static void check_images(llmc_model *m, const char *what) {
    size_t bad = 0;
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        if (!planes_tensor(i)) continue;
        const uint16_t *hi = (const uint16_t *)(const void *)m->p[i];
        const size_t n = m->param_sizes[i];
        float *x = malloc(n * 4);
        llmc_model_copy_to_host(m, LLMC_KIND_PARAMS, (int64_t)m->param_offsets[i], (int64_t)n, x);
        for (size_t j = 0; j < n; j++)
            if (hi[j] != llmc_bf16_bits(x[j]) || bits_of(x[j]) != llmc_planes_canonical(x[j])) bad++;
        free(x);
    }
    CHECK(bad == 0, "%s: %zu weights whose image is not their rounding or that are not canonical", what, bad);
}

static int files_equal(const char *p, const char *q) {
    FILE *f = fopen(p, "rb"), *g = fopen(q, "rb");
    int eq = f && g;
    while (eq) {
        const int c = fgetc(f), d = fgetc(g);
        if (c != d) eq = 0;
        if (c == EOF || d == EOF) break;
    }
    if (f) fclose(f);
    if (g) fclose(g);
    return eq;
}

/* both layouts through forward, backward and AdamW (whole, or in slices when cut) */
static void train_pair(const char *isa, int threads, int sliced) {
    if (isa) setenv("LLMC_GEMM_ISA", isa, 1);
    llmc_model *pl = make("planes", threads), *fp = make("fp32", threads);
    if (!pl || !fp) return;
    CHECK(pl->planes == 1 && pl->params16 == NULL && pl->planes_up != NULL, "planes layout");
    CHECK(fp->planes == 0 && fp->params16 != NULL, "fp32 layout");
    const size_t n = pl->num_params;
    float *w = malloc(n * 4);
    weights(w, pl, 99u);
    llmc_model_copy_from_host(pl, LLMC_KIND_PARAMS, 0, (int64_t)n, w);
    llmc_model_copy_from_host(fp, LLMC_KIND_PARAMS, 0, (int64_t)n, w);
    same_as(pl, fp, LLMC_KIND_PARAMS, n, "weights copied in", 1);
    int32_t tok[B * T], tgt[B * T];
    for (int i = 0; i < B * T; i++) {
        tok[i] = (i * 37 + 11) % CFG.vocab_size;
        tgt[i] = (i * 53 + 5) % CFG.vocab_size;
    }
    /* the inf-rounding weights and NaNs would make the loss NaN, and denormals are kept as
     * zeros, near-denormals may decay into one (compared canonically below): training runs
     * on a sane copy, bitwise */
    for (size_t i = 0; i < n; i++)
        if (!(w[i] > -1.0f && w[i] < 1.0f) || (w[i] != 0.0f && fabsf(w[i]) < 1e-30f))
            w[i] = 0.25f;
    llmc_model_copy_from_host(pl, LLMC_KIND_PARAMS, 0, (int64_t)n, w);
    llmc_model_copy_from_host(fp, LLMC_KIND_PARAMS, 0, (int64_t)n, w);
    for (int step = 1; step <= 3; step++) {
        float la = 0, lb = 0;
        CHECK(llmc_model_forward(pl, tok, tgt, B, T, &la) == LLMC_OK, "forward");
        CHECK(llmc_model_forward(fp, tok, tgt, B, T, &lb) == LLMC_OK, "forward");
        CHECK(bits_of(la) == bits_of(lb), "step %d loss %.9g against %.9g", step, la, lb);
        llmc_model_backward_ex(pl, 1.0f, 0);
        llmc_model_backward_ex(fp, 1.0f, 0);
        same(pl, fp, LLMC_KIND_GRADS, n, "gradients");
        llmc_adamw_params hp = {1e-2, 0.9, 0.999, 1e-8, 0.1, step, 0, 0.5f};
        if (sliced) { /* cuts inside words and tensors, the moments the model's own */
            const int64_t cuts[] = {0, 7, 16 * 40 + 3, (int64_t)pl->param_offsets[P_QKVW] + 21,
                                    (int64_t)n - 5, (int64_t)n};
            for (int c = 0; c + 1 < 6; c++)
                CHECK(llmc_model_adamw_step_range(pl, &hp, cuts[c], cuts[c + 1] - cuts[c], NULL,
                                                  NULL) == LLMC_OK,
                      "adamw_step_range: %s", llmc_model_last_error(pl));
        } else {
            llmc_model_adamw_step(pl, &hp);
        }
        llmc_model_adamw_step(fp, &hp);
        same(pl, fp, LLMC_KIND_PARAMS, n, "weights after AdamW");
        same(pl, fp, LLMC_KIND_ADAM_M, n, "first moments");
        same(pl, fp, LLMC_KIND_ADAM_V, n, "second moments");
    }
    CHECK(pl->planes == 1, "still in planes after training");
    check_images(pl, "after training");
    /* checkpoints: the same bytes, and a load into planes gives the weights back */
    CHECK(llmc_model_save(pl, "test_bf16_planes_a.bin") == LLMC_OK, "save planes");
    CHECK(llmc_model_save(fp, "test_bf16_planes_b.bin") == LLMC_OK, "save fp32");
    CHECK(files_equal("test_bf16_planes_a.bin", "test_bf16_planes_b.bin"), "checkpoint bytes differ");
    llmc_options o = {B, T, threads, 0, LLMC_PRECISION_BF16, 0};
    llmc_model *ld = NULL;
    CHECK(llmc_model_load("test_bf16_planes_a.bin", &o, &ld) == LLMC_OK && ld, "load");
    if (ld) {
        CHECK(ld->planes == 1 && ld->params16 == NULL, "a loaded bf16 model is in planes");
        same(ld, fp, LLMC_KIND_PARAMS, n, "loaded weights");
        float zero = 1.0f;
        llmc_model_copy_to_host(ld, LLMC_KIND_GRADS, 0, 1, &zero);
        CHECK(zero == 0.0f, "the gradients used on the way are zero again");
        llmc_model_destroy(ld);
    }
    remove("test_bf16_planes_a.bin");
    remove("test_bf16_planes_b.bin");
    /* the edge cases straight through AdamW (no forward): ties, carries, infs, NaNs and
     * denormals; zero gradients and moments, so the update is the decay alone and denormals
     * stay denormal in the fp32 layout (planes keep them as zeros: compared canonically) */
    weights(w, pl, 5u);
    llmc_model_copy_from_host(pl, LLMC_KIND_PARAMS, 0, (int64_t)n, w);
    llmc_model_copy_from_host(fp, LLMC_KIND_PARAMS, 0, (int64_t)n, w);
    float *zeros = calloc(n, 4);
    for (int k = LLMC_KIND_GRADS; k <= LLMC_KIND_ADAM_V; k++) {
        llmc_model_copy_from_host(pl, k, 0, (int64_t)n, zeros);
        llmc_model_copy_from_host(fp, k, 0, (int64_t)n, zeros);
    }
    free(zeros);
    llmc_adamw_params hp = {1e-6, 0.9, 0.999, 1e-8, 0.1, 4, 0, 1.0f};
    llmc_model_adamw_step(pl, &hp);
    llmc_model_adamw_step(fp, &hp);
    same_as(pl, fp, LLMC_KIND_PARAMS, n, "edge-case weights after AdamW", 1);
    check_images(pl, "edge cases after AdamW");
    /* a float pointer: back to fp32 weights, the same values, and training goes on alike */
    float *before = malloc(n * 4);
    llmc_model_copy_to_host(pl, LLMC_KIND_PARAMS, 0, (int64_t)n, before);
    float *ptr = NULL;
    int64_t len = 0;
    CHECK(llmc_model_buffer(pl, LLMC_KIND_PARAMS, NULL, &len) == LLMC_OK && pl->planes == 1,
          "asking for the length alone keeps the planes");
    CHECK(llmc_model_buffer(pl, LLMC_KIND_PARAMS, &ptr, &len) == LLMC_OK && ptr, "buffer");
    CHECK(pl->planes == 0 && pl->params16 != NULL && pl->planes_up == NULL, "unpacked");
    CHECK(ptr && memcmp(ptr, before, n * 4) == 0, "the float buffer holds the same weights");
    for (size_t i = 0; i < n; i++) before[i] = (before[i] > -1.0f && before[i] < 1.0f) ? before[i] : 0.25f;
    memcpy(ptr, before, n * 4); /* a write through the pointer, as numpy views do */
    llmc_model_copy_from_host(fp, LLMC_KIND_PARAMS, 0, (int64_t)n, before);
    float la = 0, lb = 0;
    llmc_model_forward(pl, tok, tgt, B, T, &la);
    llmc_model_forward(fp, tok, tgt, B, T, &lb);
    CHECK(bits_of(la) == bits_of(lb), "after unpacking: loss %.9g against %.9g", la, lb);
    free(before);
    free(w);
    llmc_model_destroy(pl);
    llmc_model_destroy(fp);
    if (isa) unsetenv("LLMC_GEMM_ISA");
}

int main(void) {
    test_one_weight();
    train_pair(NULL, 2, 0);
    train_pair(NULL, 1, 1);
    train_pair("avx2", 2, 0);
    train_pair("generic", 2, 0);
    train_pair("generic", 2, 1);
    /* a bad value of the switch is an error naming it */
    setenv("LLMC_BF16_MASTER", "fp16", 1);
    llmc_options o = {B, T, 1, 0, LLMC_PRECISION_BF16, 0};
    llmc_model *m = NULL;
    CHECK(llmc_model_create(&CFG, &o, 7, &m) == LLMC_ERR_INVALID_ARGUMENT && !m &&
              strstr(llmc_last_error(), "LLMC_BF16_MASTER"),
          "LLMC_BF16_MASTER=fp16: %s", llmc_last_error());
    unsetenv("LLMC_BF16_MASTER");
    if (failures) printf("%d failure(s)\n", failures);
    else printf("test_bf16_planes: ok\n");
    return failures ? 1 : 0;
}
