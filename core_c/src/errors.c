/* errors.c - status names and error messages: per model, and per thread for create/load. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

/* Per-thread message for failures that happen before a model handle exists. Thread-local,
 * so two threads creating models never overwrite each other's message. */
static _Thread_local char thread_errmsg[LLMC_ERRMSG_LEN];

static void vformat(char *dst, const char *fmt, va_list ap) {
    vsnprintf(dst, LLMC_ERRMSG_LEN, fmt, ap);
}

int llmc_fail(llmc_model *m, int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (m) vformat(m->errmsg, fmt, ap);
    va_end(ap);
    return status;
}

int llmc_fail_thread(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vformat(thread_errmsg, fmt, ap);
    va_end(ap);
    return status;
}

void llmc_clear_thread_error(void) { thread_errmsg[0] = '\0'; }

LLMC_API const char *llmc_last_error(void) { return thread_errmsg; }

LLMC_API const char *llmc_model_last_error(const llmc_model *model) {
    if (!model) return "model handle is NULL";
    return model->errmsg;
}

LLMC_API const char *llmc_status_name(int32_t status) {
    switch (status) {
    case LLMC_OK: return "ok";
    case LLMC_ERR_INVALID_ARGUMENT: return "invalid argument";
    case LLMC_ERR_OUT_OF_MEMORY: return "out of memory";
    case LLMC_ERR_IO: return "i/o error";
    case LLMC_ERR_BAD_FORMAT: return "bad format";
    case LLMC_ERR_BAD_STATE: return "bad state";
    case LLMC_ERR_UNSUPPORTED: return "unsupported";
    default: return "unknown status";
    }
}

int llmc_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

int llmc_add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return 0;
    *out = a + b;
    return 1;
}
