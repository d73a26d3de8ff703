/* standalone_main.c - a main() for libFuzzer-style harnesses where libFuzzer is not available
 * (gcc builds): replays every file given (files or directories, one level), then runs a
 * deterministic mutation campaign over them.
 *
 *   fuzz_checkpoint_replay [-runs=N] [-max_total_time=SEC] [-seed=S] [-max_len=B] CORPUS...
 *
 * -runs=0 only replays (regression inputs); the campaign stops after N runs or SEC seconds.
 *
 * Mutations (chosen at random from the seed): flip bits, set bytes, overwrite an aligned
 * int32 with an "interesting" value (0, -1, 1, INT32_MIN/MAX, powers of two; most header
 * checks are on int32 fields), truncate, extend, splice two inputs. Not coverage-guided (that
 * is what the libFuzzer build is for), but it runs under gcc's sanitizers anywhere.
 * Prints "Done N runs" like libFuzzer; a crash is the harness trapping or a sanitizer report. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    uint8_t *data;
    size_t size;
} input;

static input *g_inputs;
static size_t g_count, g_cap;

static void add_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return;
    uint8_t *buf = NULL;
    size_t size = 0, cap = 0;
    for (;;) {
        if (size == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *nb = (uint8_t *)realloc(buf, cap);
            if (!nb) break;
            buf = nb;
        }
        size_t r = fread(buf + size, 1, cap - size, f);
        size += r;
        if (r == 0) break;
    }
    fclose(f);
    if (g_count == g_cap) {
        g_cap = g_cap ? g_cap * 2 : 64;
        input *ni = (input *)realloc(g_inputs, g_cap * sizeof(input));
        if (!ni) {
            free(buf);
            return;
        }
        g_inputs = ni;
    }
    g_inputs[g_count].data = buf;
    g_inputs[g_count].size = size;
    g_count++;
}

static void add_path(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "standalone: %s: no such file or directory\n", path);
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        add_file(path);
        return;
    }
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char full[4096];
        snprintf(full, sizeof(full), "%s/%s", path, e->d_name);
        if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) add_file(full);
    }
    closedir(d);
}

static uint64_t g_rng;
static uint64_t next(void) { /* splitmix64: deterministic for a seed */
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static const int32_t INTERESTING[] = {0, -1, 1, 2, 3, 5, 7, 8, 128, 255, 256, 1024, 65535, 65536,
                                      50257, 50304, 0x7FFFFFFF, (int32_t)0x80000000, 0x40000000,
                                      -128, 20240326, 20240520, 20240328};

static size_t mutate(uint8_t *buf, size_t size, size_t max_len) {
    const int n = 1 + (int)(next() % 4);
    for (int k = 0; k < n; k++) {
        switch (next() % 7) {
        case 0: /* bit flip */
            if (size) buf[next() % size] ^= (uint8_t)(1u << (next() % 8));
            break;
        case 1: /* random byte */
            if (size) buf[next() % size] = (uint8_t)next();
            break;
        case 2: /* interesting int32, aligned: most header fields */
        case 3: {
            if (size < 4) break;
            size_t slot = next() % (size / 4);
            if (next() % 2) slot %= 16; /* favour the first header slots */
            const int32_t v = INTERESTING[next() % (sizeof(INTERESTING) / sizeof(INTERESTING[0]))];
            memcpy(buf + slot * 4, &v, 4);
            break;
        }
        case 4: /* truncate */
            if (size) size = next() % size;
            break;
        case 5: { /* extend with zeros or random bytes */
            size_t add = 1 + next() % 64;
            if (size + add > max_len) add = max_len > size ? max_len - size : 0;
            const int rnd = (int)(next() % 2);
            for (size_t i = 0; i < add; i++) buf[size + i] = rnd ? (uint8_t)next() : 0;
            size += add;
            break;
        }
        case 6: { /* splice: the tail of another input */
            const input *o = &g_inputs[next() % g_count];
            if (!o->size) break;
            size_t at = size ? next() % size : 0, from = next() % o->size;
            size_t len = o->size - from;
            if (at + len > max_len) len = max_len - at;
            memcpy(buf + at, o->data + from, len);
            if (at + len > size) size = at + len;
            break;
        }
        }
    }
    return size;
}

int main(int argc, char **argv) {
    long long runs = 10000;
    unsigned long long seed = 1;
    size_t max_len = 65536;
    double max_seconds = 0.0; /* 0: no time limit */
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "-runs=", 6))
            runs = atoll(argv[i] + 6);
        else if (!strncmp(argv[i], "-seed=", 6))
            seed = strtoull(argv[i] + 6, NULL, 10);
        else if (!strncmp(argv[i], "-max_total_time=", 16))
            max_seconds = atof(argv[i] + 16);
        else if (!strncmp(argv[i], "-max_len=", 9))
            max_len = (size_t)atoll(argv[i] + 9);
        else if (argv[i][0] == '-')
            fprintf(stderr, "standalone: ignoring option %s\n", argv[i]);
        else
            add_path(argv[i]);
    }
    if (g_count == 0) {
        fprintf(stderr, "standalone: no inputs (give corpus files or directories)\n");
        return 2;
    }
    long long done = 0;
    for (size_t i = 0; i < g_count; i++, done++) LLVMFuzzerTestOneInput(g_inputs[i].data, g_inputs[i].size);
    fprintf(stderr, "standalone: replayed %zu inputs\n", g_count);
    g_rng = seed;
    uint8_t *buf = (uint8_t *)malloc(max_len + 64);
    if (!buf) return 2;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long long r = 0; r < runs; r++, done++) {
        if (max_seconds > 0.0 && (r & 63) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec) > max_seconds)
                break;
        }
        const input *in = &g_inputs[next() % g_count];
        size_t size = in->size < max_len ? in->size : max_len;
        memcpy(buf, in->data, size);
        size = mutate(buf, size, max_len);
        LLVMFuzzerTestOneInput(buf, size);
    }
    free(buf);
    fprintf(stderr, "Done %lld runs\n", done);
    for (size_t i = 0; i < g_count; i++) free(g_inputs[i].data);
    free(g_inputs);
    return 0;
}
