/* checkpoint.c - llm.c model checkpoints: read version 3 (fp32) and 5 (bf16), write 3.
 * Everything in the header is validated, and the file size checked against it, before a
 * single parameter byte is allocated or read. */
/* POSIX: open/fcntl/fdopen/fileno/fsync (the build is -std=c11 without extensions) */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_MAGIC 20240326
#define CKPT_HEADER_INTS 256
#define CKPT_HEADER_BYTES (CKPT_HEADER_INTS * 4)

static int is_little_endian(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

/* Number of parameters (wte padding included) of the checkpoint layout in docs/formats.md, from
 * a validated header alone; 0 on overflow. Same sum as model.c's compute_param_sizes. */
static int header_num_params(const llmc_config *c, size_t *out) {
    const size_t Vp = (size_t)c->padded_vocab_size, maxT = (size_t)c->max_seq_len;
    const size_t L = (size_t)c->num_layers, C = (size_t)c->channels;
    size_t per_layer, layers, emb, CC, t;
    /* per layer: ln1 2C, qkv 3C*C + 3C, attproj C*C + C, ln2 2C, fc 4C*C + 4C,
     * fcproj 4C*C + C  =  12 C*C + 13 C */
    if (!llmc_mul_size(C, C, &CC) || !llmc_mul_size(CC, 12, &per_layer) ||
        !llmc_mul_size(C, 13, &t) || !llmc_add_size(per_layer, t, &per_layer) ||
        !llmc_mul_size(per_layer, L, &layers))
        return 0;
    /* wte Vp*C, wpe maxT*C, lnf 2C */
    if (!llmc_add_size(Vp, maxT, &t) || !llmc_add_size(t, 2, &t) || !llmc_mul_size(t, C, &emb))
        return 0;
    return llmc_add_size(layers, emb, out);
}

/* The first non-zero row of wte's padding (rows V..Vp-1, which docs/formats.md requires to be
 * zero), or 0 when they are all zero (row 0 is never padding: V >= 1). A non-zero padding row
 * means the file is not what its header says (e.g. tensors shifted by a wrong V or C). */
static size_t nonzero_padding_row(const float *wte, const llmc_config *c) {
    const size_t C = (size_t)c->channels;
    for (size_t r = (size_t)c->vocab_size; r < (size_t)c->padded_vocab_size; r++)
        for (size_t j = 0; j < C; j++)
            if (wte[r * C + j] != 0.0f) return r;
    return 0;
}

LLMC_API int32_t llmc_model_load(const char *path, const llmc_options *options,
                                 llmc_model **out) {
    if (!out) return llmc_fail_thread(LLMC_ERR_INVALID_ARGUMENT, "out pointer is NULL");
    *out = NULL;
    llmc_clear_thread_error();
    if (!path) return llmc_fail_thread(LLMC_ERR_INVALID_ARGUMENT, "path is NULL");
    if (!is_little_endian())
        return llmc_fail_thread(LLMC_ERR_UNSUPPORTED, "big-endian hosts are not supported");
    /* O_NONBLOCK: fopen() of a FIFO (named pipe) blocks until a writer appears, so a
     * hostile path hung the loader; opened non-blocking, it is rejected by the S_ISREG
     * check below. (O_NONBLOCK has no effect on reads of regular files.) */
    const int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) return llmc_fail_thread(LLMC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return llmc_fail_thread(LLMC_ERR_IO, "%s: not a regular file", path);
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        const int err = errno;
        close(fd);
        return llmc_fail_thread(LLMC_ERR_IO, "%s: cannot open: %s", path, strerror(err));
    }
    int32_t h[CKPT_HEADER_INTS];
    if (fread(h, 1, CKPT_HEADER_BYTES, f) != CKPT_HEADER_BYTES) {
        fclose(f);
        return llmc_fail_thread(LLMC_ERR_BAD_FORMAT,
                                "%s: file is %lld bytes, shorter than the %d-byte header", path,
                                (long long)st.st_size, CKPT_HEADER_BYTES);
    }
    if (h[0] != CKPT_MAGIC) {
        fclose(f);
        return llmc_fail_thread(LLMC_ERR_BAD_FORMAT,
                                "%s: bad magic %d (an llm.c model checkpoint has %d)", path, h[0],
                                CKPT_MAGIC);
    }
    const int version = h[1];
    if (version != 3 && version != 5) {
        fclose(f);
        return llmc_fail_thread(LLMC_ERR_BAD_FORMAT,
                                "%s: unsupported checkpoint version %d (3 = fp32, 5 = bf16)", path,
                                version);
    }
    /* Slots 8..255 are zero in every llm.c checkpoint (docs/formats.md). A non-zero one means a
     * header from another format or a newer version whose meaning we do not know: reading it
     * as version 3/5 would silently misinterpret the file. */
    for (int i = 8; i < CKPT_HEADER_INTS; i++) {
        if (h[i] != 0) {
            fclose(f);
            return llmc_fail_thread(LLMC_ERR_BAD_FORMAT,
                                    "%s: bad header: reserved slot %d is %d (must be 0)", path, i,
                                    h[i]);
        }
    }
    llmc_config cfg = {h[2], h[3], h[7], h[4], h[5], h[6]};
    char why[256];
    if (!llmc_validate_config(&cfg, why, sizeof(why))) {
        fclose(f);
        return llmc_fail_thread(LLMC_ERR_BAD_FORMAT, "%s: bad header: %s", path, why);
    }
    /* The file size must match the header BEFORE anything is allocated: a hostile
     * 1 KB file whose header claims a huge model otherwise made the loader allocate the
     * whole model (and its activations) first, failing with OUT_OF_MEMORY (or succeeding,
     * under overcommit) instead of reporting the bad file. */
    size_t nparams;
    {
        size_t payload, expected;
        if (!header_num_params(&cfg, &nparams) ||
            !llmc_mul_size(nparams, version == 3 ? 4 : 2, &payload) ||
            !llmc_add_size(payload, CKPT_HEADER_BYTES, &expected)) {
            fclose(f);
            return llmc_fail_thread(LLMC_ERR_BAD_FORMAT,
                                    "%s: bad header: the model size it describes overflows", path);
        }
        if ((uint64_t)st.st_size != (uint64_t)expected) {
            fclose(f);
            return llmc_fail_thread(LLMC_ERR_BAD_FORMAT,
                                    "%s: file is %lld bytes but its header describes %zu "
                                    "parameters (%zu bytes expected)",
                                    path, (long long)st.st_size, nparams, expected);
        }
    }
    llmc_options opt = {1, 0, 0, 0, 0, 0};
    if (options) opt = *options;
    if (opt.max_seq == 0) opt.max_seq = cfg.max_seq_len;
    llmc_model *m = NULL;
    int status = llmc_model_alloc(&cfg, &opt, &m);
    if (status != LLMC_OK) {
        fclose(f);
        char msg[LLMC_ERRMSG_LEN];
        snprintf(msg, sizeof(msg), "%s", llmc_last_error());
        return llmc_fail_thread(status, "%s: %s", path, msg);
    }
    /* the model's own layout must agree with the size checked above (header_num_params
     * duplicates model.c's sum so the check can run before any allocation) */
    if (m->num_params != nparams) {
        const size_t have = m->num_params;
        llmc_model_destroy(m);
        fclose(f);
        return llmc_fail_thread(LLMC_ERR_BAD_FORMAT,
                                "%s: internal error: the model has %zu parameters, the header "
                                "describes %zu",
                                path, have, nparams);
    }
    /* a CPU model reads straight into its parameters; another device through host memory */
    const int on_host = m->device == LLMC_DEVICE_CPU;
    float *params = on_host ? m->params : (float *)malloc(m->num_params * sizeof(float));
    uint16_t *tmp = NULL;
    if (version == 5) /* widen bf16 in chunks through the (still unused) gradient buffer */
        tmp = on_host ? (uint16_t *)m->grads : (uint16_t *)malloc(((size_t)1 << 20) * 2);
    if (!params || (version == 5 && !tmp)) {
        if (!on_host) {
            free(params);
            free(tmp);
        }
        llmc_model_destroy(m);
        fclose(f);
        return llmc_fail_thread(LLMC_ERR_OUT_OF_MEMORY,
                                "%s: cannot allocate host memory to read the parameters", path);
    }
    size_t got;
    if (version == 3) {
        got = fread(params, sizeof(float), m->num_params, f);
    } else {
        got = 0;
        while (got < m->num_params) {
            size_t chunk = m->num_params - got;
            if (chunk > (size_t)1 << 20) chunk = (size_t)1 << 20;
            size_t r = fread(tmp, sizeof(uint16_t), chunk, f);
            for (size_t i = 0; i < r; i++) params[got + i] = bf16_to_f32(tmp[i]);
            got += r;
            if (r != chunk) break;
        }
        if (on_host) memset(m->grads, 0, m->num_params * sizeof(float));
    }
    fclose(f);
    /* wte is the first tensor, so its padding rows are at the start of params */
    const size_t padding_row =
        got == m->num_params ? nonzero_padding_row(params, &cfg) : 0;
    int status_up = LLMC_OK;
    if (on_host && m->planes && got == m->num_params && padding_row == 0)
        planes_pack(m); /* the matrices into planes (bf16_planes.c) */
    if (!on_host) {
        free(tmp);
        if (got == m->num_params && padding_row == 0)
            status_up = m->be->copy(m, LLMC_KIND_PARAMS, 0, m->num_params, params, 0);
        free(params);
    }
    if (got != m->num_params) {
        const size_t want = m->num_params;
        llmc_model_destroy(m);
        return llmc_fail_thread(LLMC_ERR_IO, "%s: read %zu of %zu parameters", path, got, want);
    }
    if (padding_row != 0) {
        llmc_model_destroy(m);
        return llmc_fail_thread(LLMC_ERR_BAD_FORMAT,
                                "%s: wte row %zu is not zero (rows %d..%d pad the vocabulary and "
                                "must be zero)",
                                path, padding_row, cfg.vocab_size, cfg.padded_vocab_size - 1);
    }
    if (status_up != LLMC_OK) {
        char msg[LLMC_ERRMSG_LEN];
        snprintf(msg, sizeof(msg), "%s", m->errmsg);
        llmc_model_destroy(m);
        return llmc_fail_thread(status_up, "%s: %s", path, msg);
    }
    *out = m;
    return LLMC_OK;
}

static int save_params(llmc_model *m, const float *params, const char *path);

/* params, or when it is NULL the model's own fp32 values, copied out 64 KiB at a time (on the
 * heap: a wasm stack is 64 KiB in all) */
static int write_params(llmc_model *m, const float *params, FILE *f) {
    if (params) return fwrite(params, sizeof(float), m->num_params, f) == m->num_params;
    enum { CHUNK = 16384 };
    float *chunk = (float *)malloc(CHUNK * sizeof(float));
    int ok = chunk != NULL;
    if (!ok) errno = ENOMEM;
    for (size_t at = 0; ok && at < m->num_params; at += CHUNK) {
        const size_t n = m->num_params - at < CHUNK ? m->num_params - at : CHUNK;
        ok = m->be->copy(m, LLMC_KIND_PARAMS, at, n, chunk, 1) == LLMC_OK &&
             fwrite(chunk, sizeof(float), n, f) == n;
    }
    free(chunk);
    return ok;
}

/* Written to "<path>.tmp", flushed to disk, then renamed over path: a crash mid-save never
 * leaves a truncated checkpoint under the real name. */
LLMC_API int32_t llmc_model_save(llmc_model *m, const char *path) {
    if (!m) return LLMC_ERR_INVALID_ARGUMENT;
    if (!path) return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT, "path is NULL");
    /* a model on another device is saved from a host copy of its parameters; one with its
     * matrices in planes (bf16_planes.c) through a small buffer (params NULL) */
    float *params = m->planes ? NULL : m->params;
    if (m->device != LLMC_DEVICE_CPU) {
        params = (float *)malloc(m->num_params * sizeof(float));
        if (!params)
            return llmc_fail(m, LLMC_ERR_OUT_OF_MEMORY,
                             "cannot allocate host memory for the parameters");
        const int st = m->be->copy(m, LLMC_KIND_PARAMS, 0, m->num_params, params, 1);
        if (st != LLMC_OK) {
            free(params);
            return st;
        }
    }
    int status = save_params(m, params, path);
    if (params && params != m->params) free(params);
    return status;
}

static int save_params(llmc_model *m, const float *params, const char *path) {
    size_t plen = strlen(path);
    char *tmp = (char *)malloc(plen + 5);
    if (!tmp) return llmc_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate a path");
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int st = llmc_fail(m, LLMC_ERR_IO, "%s: cannot open for writing: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    int32_t h[CKPT_HEADER_INTS];
    memset(h, 0, sizeof(h));
    h[0] = CKPT_MAGIC;
    h[1] = 3;
    h[2] = m->cfg.max_seq_len;
    h[3] = m->cfg.vocab_size;
    h[4] = m->cfg.num_layers;
    h[5] = m->cfg.num_heads;
    h[6] = m->cfg.channels;
    h[7] = m->cfg.padded_vocab_size;
    int ok = fwrite(h, 1, sizeof(h), f) == sizeof(h) && write_params(m, params, f) &&
             fflush(f) == 0 && fsync(fileno(f)) == 0;
    int err = errno;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        remove(tmp);
        int st = llmc_fail(m, LLMC_ERR_IO, "%s: write failed: %s", path, strerror(err));
        free(tmp);
        return st;
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        remove(tmp);
        int st = llmc_fail(m, LLMC_ERR_IO, "%s: cannot rename into place: %s", path, strerror(err));
        free(tmp);
        return st;
    }
    free(tmp);
    return LLMC_OK;
}
