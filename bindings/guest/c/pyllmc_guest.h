/* pyllmc_guest.h - the pyllmc host ABI (version 1) for WebAssembly guests written in C.
 *
 * A guest is a wasm32-wasi command module run by `pyllmc wasm run guest.wasm`. It imports the
 * functions below from the module "pyllmc"; the host trains with the native C core and the
 * guest only ever sees handles, numbers and its own memory. Build with
 *
 *     clang --target=wasm32-wasi --sysroot=/usr -O2 -o guest.wasm guest.c
 *
 * Conventions (docs/wasm.md has the whole table):
 * - every function returns a pyllmc status (PYLLMC_OK = 0) unless stated otherwise;
 * - after a non-zero status, pyllmc_last_error() gives a one-line message naming the call and
 *   the problem; a failed call writes nothing through its out pointers;
 * - strings are (pointer, length) pairs of UTF-8 bytes, not NUL-terminated;
 * - handles are int32 > 0; 0 is never a valid handle;
 * - output buffers (out, cap, out_len): the host writes at most cap bytes (or elements) and
 *   stores the full length in *out_len, so a guest can retry with a larger buffer;
 * - paths are guest paths, resolved through the directories preopened for the guest
 *   (`--dir HOST::GUEST`); leaving them is PYLLMC_PERMISSION_DENIED.
 *
 * Every declaration below is one import, written as
 *     PYLLMC_IMPORT(name) result pyllmc_name(params);
 * and a test (parity_tests/test_wasm_sdk_abi.py) parses these lines and compares them with
 * the host's table of functions, so keep to that one-line form when adding imports.
 */
#ifndef PYLLMC_GUEST_H
#define PYLLMC_GUEST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PYLLMC_ABI_VERSION 1

#if defined(__wasm__)
#define PYLLMC_IMPORT(name) __attribute__((import_module("pyllmc"), import_name(#name)))
#else
/* Not a wasm build (e.g. an IDE's indexer): the declarations still parse. */
#define PYLLMC_IMPORT(name)
#endif

#ifdef __cplusplus
#define PYLLMC_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define PYLLMC_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

/* ------------------------------------------------------------------ status codes */
/* 0..6 are the C core's llmc_status; 7 and 8 come from the host's sandbox and budgets. */
enum pyllmc_status_code {
    PYLLMC_OK = 0,
    PYLLMC_INVALID_ARGUMENT = 1,
    PYLLMC_OUT_OF_MEMORY = 2,
    PYLLMC_IO = 3,
    PYLLMC_BAD_FORMAT = 4,
    PYLLMC_BAD_STATE = 5,
    PYLLMC_UNSUPPORTED = 6,
    PYLLMC_PERMISSION_DENIED = 7,
    PYLLMC_LIMIT_EXCEEDED = 8,
};

/* ------------------------------------------------------------------ job states */
enum pyllmc_job_state {
    PYLLMC_JOB_RUNNING = 0,
    PYLLMC_JOB_FINISHED = 1,
    PYLLMC_JOB_STOPPED = 2,
    PYLLMC_JOB_FAILED = 3,
};

/* ------------------------------------------------------------------ structs */
/* The model shape read by pyllmc_model_create: 6 x int32, the order of llm.c's header. */
typedef struct pyllmc_model_config {
    int32_t max_seq_len;
    int32_t vocab_size;
    int32_t padded_vocab_size;
    int32_t num_layers;
    int32_t num_heads;
    int32_t channels;
} pyllmc_model_config;

/* What pyllmc_job_status writes: 48 bytes, little-endian, naturally aligned. */
typedef struct pyllmc_status {
    int32_t state;        /* enum pyllmc_job_state */
    int32_t step;         /* optimizer steps done */
    int32_t total_steps;
    int32_t error;        /* the status that ended a failed job, else 0 */
    float loss;           /* last step's training loss (NaN before the first step) */
    float val_loss;       /* last evaluation's loss (NaN if none yet) */
    float lr;
    float grad_norm;
    float tokens_per_s;
    float eta_s;
    double elapsed_s;
} pyllmc_status;

/* The layout is part of the ABI: a compiler that lays these out differently must fail here. */
PYLLMC_STATIC_ASSERT(sizeof(pyllmc_model_config) == 24, "pyllmc_model_config is 6 x int32");
PYLLMC_STATIC_ASSERT(sizeof(pyllmc_status) == 48, "pyllmc_status is 48 bytes");
PYLLMC_STATIC_ASSERT(offsetof(pyllmc_status, state) == 0, "pyllmc_status.state at 0");
PYLLMC_STATIC_ASSERT(offsetof(pyllmc_status, step) == 4, "pyllmc_status.step at 4");
PYLLMC_STATIC_ASSERT(offsetof(pyllmc_status, total_steps) == 8, "pyllmc_status.total_steps at 8");
PYLLMC_STATIC_ASSERT(offsetof(pyllmc_status, error) == 12, "pyllmc_status.error at 12");
PYLLMC_STATIC_ASSERT(offsetof(pyllmc_status, loss) == 16, "pyllmc_status.loss at 16");
PYLLMC_STATIC_ASSERT(offsetof(pyllmc_status, val_loss) == 20, "pyllmc_status.val_loss at 20");
PYLLMC_STATIC_ASSERT(offsetof(pyllmc_status, lr) == 24, "pyllmc_status.lr at 24");
PYLLMC_STATIC_ASSERT(offsetof(pyllmc_status, grad_norm) == 28, "pyllmc_status.grad_norm at 28");
PYLLMC_STATIC_ASSERT(offsetof(pyllmc_status, tokens_per_s) == 32, "pyllmc_status.tokens_per_s at 32");
PYLLMC_STATIC_ASSERT(offsetof(pyllmc_status, eta_s) == 36, "pyllmc_status.eta_s at 36");
PYLLMC_STATIC_ASSERT(offsetof(pyllmc_status, elapsed_s) == 40, "pyllmc_status.elapsed_s at 40");

/* ------------------------------------------------------------------ imports (ABI version 1) */
/* Pointers are wasm32 i32 offsets into the guest's memory; the host bounds-checks each one. */

/* The ABI version the host implements (1). Returns the version, not a status. */
PYLLMC_IMPORT(abi_version) int32_t pyllmc_abi_version(void);
/* The message of the last failed call: at most cap bytes into buf, full length in *out_len. */
PYLLMC_IMPORT(last_error) int32_t pyllmc_last_error(char *buf, int32_t cap, int32_t *out_len);

/* A fresh model of the given shape, initialised from seed. */
PYLLMC_IMPORT(model_create) int32_t pyllmc_model_create(const pyllmc_model_config *config, int64_t seed, int32_t *out_model);
/* An llm.c checkpoint (version 3 or 5) at a guest path. */
PYLLMC_IMPORT(model_load) int32_t pyllmc_model_load(const char *path, int32_t path_len, int32_t *out_model);
/* Write the parameters as an llm.c version-3 checkpoint (atomically) at a guest path. */
PYLLMC_IMPORT(model_save) int32_t pyllmc_model_save(int32_t model, const char *path, int32_t path_len);
/* *out = number of parameters (int64). */
PYLLMC_IMPORT(model_num_params) int32_t pyllmc_model_num_params(int32_t model, int64_t *out);
PYLLMC_IMPORT(model_free) int32_t pyllmc_model_free(int32_t model);

/* llm.c token shards: a guest path or glob; shuffle 0/1; batches of (batch, seq). */
PYLLMC_IMPORT(dataloader_create) int32_t pyllmc_dataloader_create(const char *pattern, int32_t pattern_len, int32_t batch, int32_t seq, int32_t shuffle, int64_t seed, int32_t *out_loader);
PYLLMC_IMPORT(dataloader_free) int32_t pyllmc_dataloader_free(int32_t loader);

/* "byte", "gpt2" (where the host has the GPT-2 BPE), or a guest path to a tokenizer.bin. */
PYLLMC_IMPORT(tokenizer_load) int32_t pyllmc_tokenizer_load(const char *spec, int32_t spec_len, int32_t *out_tok);
/* Token ids (int32) of text: at most cap ids into out_ids, the full count in *out_n. */
PYLLMC_IMPORT(tokenizer_encode) int32_t pyllmc_tokenizer_encode(int32_t tok, const char *text, int32_t text_len, int32_t *out_ids, int32_t cap, int32_t *out_n);
/* UTF-8 text of n ids: at most cap bytes into out, the full length in *out_len. */
PYLLMC_IMPORT(tokenizer_decode) int32_t pyllmc_tokenizer_decode(int32_t tok, const int32_t *ids, int32_t n, char *out, int32_t cap, int32_t *out_len);
PYLLMC_IMPORT(tokenizer_free) int32_t pyllmc_tokenizer_free(int32_t tok);

/* One optimizer step on the loader's next batch (the Trainer's AdamW settings, this lr);
   *out_loss = the batch's mean loss before the update. */
PYLLMC_IMPORT(train_step) int32_t pyllmc_train_step(int32_t model, int32_t loader, float lr, float *out_loss);
/* Mean loss over the loader's first `batches` batches (from its start). */
PYLLMC_IMPORT(evaluate) int32_t pyllmc_evaluate(int32_t model, int32_t loader, int32_t batches, float *out_loss);
/* Generate max_tokens tokens after prompt; the decoded text (prompt included) into out. */
PYLLMC_IMPORT(sample) int32_t pyllmc_sample(int32_t model, int32_t tok, const char *prompt, int32_t prompt_len, int32_t max_tokens, float temperature, int32_t top_k, int64_t seed, char *out, int32_t cap, int32_t *out_len);

/* A whole training run in the background on the host; returns at once. val_loader 0 = none.
   config_json: a JSON object of TrainerConfig fields (steps, lr, schedule, out_dir, ...). */
PYLLMC_IMPORT(train_start) int32_t pyllmc_train_start(int32_t model, int32_t train_loader, int32_t val_loader, const char *config_json, int32_t config_len, int32_t *out_job);
PYLLMC_IMPORT(job_status) int32_t pyllmc_job_status(int32_t job, pyllmc_status *out_status);
/* OK once the job has ended; PYLLMC_BAD_STATE if it still runs after timeout_ms (-1: no limit). */
PYLLMC_IMPORT(job_wait) int32_t pyllmc_job_wait(int32_t job, int32_t timeout_ms);
/* Stop after the current step (with a checkpoint when out_dir is set). */
PYLLMC_IMPORT(job_stop) int32_t pyllmc_job_stop(int32_t job);
/* A running job is stopped first. */
PYLLMC_IMPORT(job_free) int32_t pyllmc_job_free(int32_t job);

/* ------------------------------------------------------------------ additions to ABI version 1 */
/* Functions pyllmc's host adds to the fixed version-1 set. A guest that calls one needs a host
   that has it (an older host refuses to start the guest: an import it does not provide). */

/* The one-line message of a failed job (why it failed: the trainer's error), written like
   last_error: at most cap bytes into buf, the full length in *out_len; empty while the job
   runs and when it did not fail. */
PYLLMC_IMPORT(job_error) int32_t pyllmc_job_error(int32_t job, char *buf, int32_t cap, int32_t *out_len);

/* ------------------------------------------------------------------ helpers (guest side only) */
/* Helpers are static inline so that a guest that includes this header imports nothing extra. */

/* "OK", "INVALID_ARGUMENT", ... for a status code; "UNKNOWN" for any other number. */
static inline const char *pyllmc_status_name(int32_t status) {
    switch (status) {
    case PYLLMC_OK: return "OK";
    case PYLLMC_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case PYLLMC_OUT_OF_MEMORY: return "OUT_OF_MEMORY";
    case PYLLMC_IO: return "IO";
    case PYLLMC_BAD_FORMAT: return "BAD_FORMAT";
    case PYLLMC_BAD_STATE: return "BAD_STATE";
    case PYLLMC_UNSUPPORTED: return "UNSUPPORTED";
    case PYLLMC_PERMISSION_DENIED: return "PERMISSION_DENIED";
    case PYLLMC_LIMIT_EXCEEDED: return "LIMIT_EXCEEDED";
    default: return "UNKNOWN";
    }
}

/* "running", "finished", "stopped", "failed"; "unknown" for any other number. */
static inline const char *pyllmc_job_state_name(int32_t state) {
    switch (state) {
    case PYLLMC_JOB_RUNNING: return "running";
    case PYLLMC_JOB_FINISHED: return "finished";
    case PYLLMC_JOB_STOPPED: return "stopped";
    case PYLLMC_JOB_FAILED: return "failed";
    default: return "unknown";
    }
}

/* The host's last error message as a NUL-terminated string in buf (truncated to cap - 1
   bytes); returns buf. Never fails: if the host cannot give a message, buf says so. */
static inline char *pyllmc_error_string(char *buf, int32_t cap) {
    int32_t len = 0;
    if (buf == NULL || cap <= 0)
        return buf;
    if (pyllmc_last_error(buf, cap - 1, &len) != PYLLMC_OK) {
        static const char fallback[] = "(no message: last_error failed)";
        int32_t i = 0;
        for (; i < cap - 1 && fallback[i]; i++)
            buf[i] = fallback[i];
        buf[i] = '\0';
        return buf;
    }
    buf[len < cap - 1 ? len : cap - 1] = '\0';
    return buf;
}

/* The host's last error message in a buffer owned by this header (valid until the next
   call); for printing: fprintf(stderr, "%s\n", pyllmc_last_error_str()). */
static inline const char *pyllmc_last_error_str(void) {
    static char message[1024];
    return pyllmc_error_string(message, (int32_t)sizeof message);
}

/* The number of bytes of a NUL-terminated string, as the int32 length the imports take. */
static inline int32_t pyllmc_strlen(const char *s) {
    int32_t n = 0;
    if (s != NULL)
        while (s[n] && n < INT32_MAX)
            n++;
    return n;
}

#ifdef __cplusplus
}
#endif

#endif /* PYLLMC_GUEST_H */
