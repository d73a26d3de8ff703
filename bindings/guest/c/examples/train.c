/* train.c - a guest that trains a small GPT-2 on the host, start to finish.
 *
 * It reads llm.c token shards from a preopened directory (DATA/train_*.bin, and
 * DATA/val_*.bin when there are any), creates a model of size dN, starts a training job on
 * the host, prints a progress line whenever a step has been done, then evaluates, samples
 * some text and saves the final parameters as an llm.c checkpoint (OUT/final.bin; the
 * Trainer's own checkpoints and metrics.jsonl land in OUT too).
 *
 *     clang --target=wasm32-wasi --sysroot=/usr -O2 -I bindings/guest/c \
 *           -o train.wasm bindings/guest/c/examples/train.c
 *     pyllmc prepare-data tinyshakespeare.txt --out data
 *     pyllmc wasm run train.wasm --dir data::/data --dir runs::/runs -- --steps 50
 *
 * The settings mean what the flags of `pyllmc train` mean; with the same values
 * (`pyllmc train --model d2 --vocab-size 257 --max-seq-len 64 ...`) the run is the same,
 * bit for bit.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pyllmc_guest.h"

typedef struct {
    const char *data, *out, *tokenizer, *prompt, *schedule;
    int depth, vocab_size, max_seq_len, steps, batch, seq, warmup, threads;
    int eval_every, eval_batches, sample_tokens, save_every;
    long long seed;
    double lr;
} options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: train.wasm [--data DIR] [--out DIR] [--model dN] [--vocab-size V] [--max-seq-len N]\n"
            "                  [--steps N] [--batch B] [--seq T] [--lr LR] [--schedule S] [--warmup N]\n"
            "                  [--seed S] [--threads N] [--eval-every K] [--eval-batches K]\n"
            "                  [--save-every K] [--tokenizer byte|PATH] [--prompt TEXT] [--sample-tokens N]\n"
            "defaults: --data /data --out /runs/guest --model d2 --vocab-size 257 --max-seq-len 64\n"
            "          --steps 20 --batch 4 --seq 64 --lr 1e-3 --schedule cosine --eval-batches 4\n"
            "          --tokenizer DATA/tokenizer.bin if it exists, else byte\n");
}

/* An integer flag value, or exit 2 naming the flag. */
static long long int_arg(const char *flag, const char *v, long long lo, long long hi) {
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "train.wasm: %s: expected an integer in [%lld, %lld], got '%s'\n", flag, lo, hi, v);
        exit(2);
    }
    return x;
}

static double float_arg(const char *flag, const char *v) {
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < 0) {
        fprintf(stderr, "train.wasm: %s: expected a finite number >= 0, got '%s'\n", flag, v);
        exit(2);
    }
    return x;
}

/* Paths from the command line are joined with file names in fixed buffers: bound them. */
#define MAX_PATH_ARG 400

static const char *path_arg(const char *flag, const char *v) {
    if (strlen(v) > MAX_PATH_ARG) {
        fprintf(stderr, "train.wasm: %s: the path is longer than %d bytes\n", flag, MAX_PATH_ARG);
        exit(2);
    }
    return v;
}

static void parse(int argc, char **argv, options *o) {
    *o = (options){.data = "/data", .out = "/runs/guest", .tokenizer = NULL, .prompt = "", .schedule = "cosine",
                   .depth = 2, .vocab_size = 257, .max_seq_len = 64, .steps = 20, .batch = 4, .seq = 64,
                   .warmup = 0, .threads = 0, .eval_every = 0, .eval_batches = 4, .sample_tokens = 64,
                   .save_every = 0, .seed = 0, .lr = 1e-3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc || strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "train.wasm: unknown argument or missing value: '%s'\n", a);
            usage(stderr);
            exit(2);
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--data")) o->data = path_arg(a, v);
        else if (!strcmp(a, "--out")) o->out = path_arg(a, v);
        else if (!strcmp(a, "--tokenizer")) o->tokenizer = path_arg(a, v);
        else if (!strcmp(a, "--prompt")) o->prompt = v;
        else if (!strcmp(a, "--schedule")) o->schedule = v;
        else if (!strcmp(a, "--model")) {
            if (v[0] != 'd' && v[0] != 'D') {
                fprintf(stderr, "train.wasm: --model: expected a size dN (e.g. d2), got '%s'\n", v);
                exit(2);
            }
            o->depth = (int)int_arg(a, v + 1, 1, 48);
        }
        else if (!strcmp(a, "--vocab-size")) o->vocab_size = (int)int_arg(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--max-seq-len")) o->max_seq_len = (int)int_arg(a, v, 1, 1 << 16);
        else if (!strcmp(a, "--steps")) o->steps = (int)int_arg(a, v, 1, INT32_MAX);
        else if (!strcmp(a, "--batch")) o->batch = (int)int_arg(a, v, 1, 1 << 16);
        else if (!strcmp(a, "--seq")) o->seq = (int)int_arg(a, v, 1, 1 << 16);
        else if (!strcmp(a, "--warmup")) o->warmup = (int)int_arg(a, v, 0, INT32_MAX);
        else if (!strcmp(a, "--threads")) o->threads = (int)int_arg(a, v, 0, 1024);
        else if (!strcmp(a, "--eval-every")) o->eval_every = (int)int_arg(a, v, 0, INT32_MAX);
        else if (!strcmp(a, "--eval-batches")) o->eval_batches = (int)int_arg(a, v, 1, INT32_MAX);
        else if (!strcmp(a, "--save-every")) o->save_every = (int)int_arg(a, v, 0, INT32_MAX);
        else if (!strcmp(a, "--sample-tokens")) o->sample_tokens = (int)int_arg(a, v, 0, 1 << 16);
        else if (!strcmp(a, "--seed")) o->seed = int_arg(a, v, 0, INT64_MAX);
        else if (!strcmp(a, "--lr")) o->lr = float_arg(a, v);
        else {
            fprintf(stderr, "train.wasm: unknown flag '%s'\n", a);
            usage(stderr);
            exit(2);
        }
    }
}

/* Print the failed call and the host's message, and end the guest with exit code 1. */
static void check(int32_t rc, const char *what) {
    if (rc != PYLLMC_OK) {
        fprintf(stderr, "train.wasm: %s failed: %s: %s\n", what, pyllmc_status_name(rc), pyllmc_last_error_str());
        exit(1);
    }
}

/* The model shape of a size descriptor dN, as `pyllmc train --model dN` builds it: the GPT-2
   sizes for d12/d24/d36/d48, else N layers, 64*N channels, N heads; the vocabulary padded to a
   multiple of 128. */
static pyllmc_model_config size_config(int depth, int vocab_size, int max_seq_len) {
    int layers = depth, channels = 64 * depth, heads = depth;
    if (depth == 12) channels = 768, heads = 12;
    if (depth == 24) channels = 1024, heads = 16;
    if (depth == 36) channels = 1280, heads = 20;
    if (depth == 48) channels = 1600, heads = 25;
    return (pyllmc_model_config){.max_seq_len = max_seq_len, .vocab_size = vocab_size,
                                 .padded_vocab_size = (vocab_size + 127) / 128 * 128,
                                 .num_layers = layers, .num_heads = heads, .channels = channels};
}

static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb"); /* through the guest's own preopens, as the host resolves it */
    if (f)
        fclose(f);
    return f != NULL;
}

/* A JSON string literal of s (quotes, backslashes and control characters escaped) into buf;
   0, or -1 when it does not fit in cap bytes (nothing is ever cut short silently). */
static int json_string(char *buf, size_t cap, const char *s) {
    size_t n = 0;
    if (cap < 3)
        return -1;
    buf[n++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (n + 7 >= cap) /* room for the longest escape, the closing quote and the NUL */
            return -1;
        if (c == '"' || c == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(buf + n, cap - n, "\\u%04x", c);
        } else {
            buf[n++] = (char)c;
        }
    }
    buf[n++] = '"';
    buf[n] = '\0';
    return 0;
}

int main(int argc, char **argv) {
    options o;
    parse(argc, argv, &o);

    int32_t version = pyllmc_abi_version();
    if (version != PYLLMC_ABI_VERSION) {
        fprintf(stderr, "train.wasm: the host speaks ABI version %d, this guest was built for %d\n",
                version, PYLLMC_ABI_VERSION);
        return 1;
    }

    /* model */
    pyllmc_model_config cfg = size_config(o.depth, o.vocab_size, o.max_seq_len);
    int32_t model = 0;
    int64_t num_params = 0;
    check(pyllmc_model_create(&cfg, o.seed, &model), "model_create");
    check(pyllmc_model_num_params(model, &num_params), "model_num_params");
    printf("model: GPT-2 L%d C%d H%d V%d (%.2fM params)\n", cfg.num_layers, cfg.channels, cfg.num_heads,
           cfg.vocab_size, (double)num_params / 1e6);

    /* data: shuffled training windows, the validation shards in order */
    char pattern[512];
    int32_t train = 0, val = 0;
    snprintf(pattern, sizeof pattern, "%s/train_*.bin", o.data);
    check(pyllmc_dataloader_create(pattern, pyllmc_strlen(pattern), o.batch, o.seq, 1, o.seed, &train),
          "dataloader_create (training shards)");
    snprintf(pattern, sizeof pattern, "%s/val_*.bin", o.data);
    int32_t rc = pyllmc_dataloader_create(pattern, pyllmc_strlen(pattern), o.batch, o.seq, 0, 0, &val);
    if (rc != PYLLMC_OK) {
        printf("no validation data (%s: %s)\n", pyllmc_status_name(rc), pyllmc_last_error_str());
        val = 0;
    }

    /* tokenizer: the one next to the data, else bytes */
    char tok_path[512];
    const char *tok_spec = o.tokenizer;
    if (tok_spec == NULL) {
        snprintf(tok_path, sizeof tok_path, "%s/tokenizer.bin", o.data);
        tok_spec = file_exists(tok_path) ? tok_path : "byte";
    }
    int32_t tok = 0;
    check(pyllmc_tokenizer_load(tok_spec, pyllmc_strlen(tok_spec), &tok), "tokenizer_load");

    /* the training job */
    char out_json[6 * MAX_PATH_ARG + 8], sched_json[64], config[sizeof out_json + 512];
    if (json_string(out_json, sizeof out_json, o.out) != 0 || json_string(sched_json, sizeof sched_json, o.schedule) != 0) {
        fprintf(stderr, "train.wasm: --out or --schedule is too long\n");
        return 2;
    }
    int n = snprintf(config, sizeof config,
                     "{\"steps\": %d, \"lr\": %.17g, \"schedule\": %s, \"warmup\": %d, \"seed\": %lld, "
                     "\"threads\": %d, \"eval_every\": %d, \"eval_batches\": %d, \"save_every\": %d, "
                     "\"out_dir\": %s}",
                     o.steps, o.lr, sched_json, o.warmup, o.seed, o.threads, o.eval_every, o.eval_batches,
                     o.save_every, out_json);
    if (n < 0 || n >= (int)sizeof config) {
        fprintf(stderr, "train.wasm: --out or --schedule is too long\n");
        return 2;
    }
    int32_t job = 0;
    check(pyllmc_train_start(model, train, val, config, n, &job), "train_start");
    printf("training: %d steps, B=%d T=%d, lr %g (%s), out %s\n", o.steps, o.batch, o.seq, o.lr, o.schedule, o.out);

    /* poll: job_wait doubles as the sleep between status reads */
    pyllmc_status st;
    int last_step = -1;
    for (;;) {
        rc = pyllmc_job_wait(job, 200);
        if (rc != PYLLMC_OK && rc != PYLLMC_BAD_STATE)
            check(rc, "job_wait");
        check(pyllmc_job_status(job, &st), "job_status");
        if (st.step != last_step && st.step > 0) {
            last_step = st.step;
            printf("step %d/%d | loss %.4f", st.step, st.total_steps, st.loss);
            if (!isnan(st.val_loss))
                printf(" | val %.4f", st.val_loss);
            printf(" | lr %.2e | norm %.3f | %.0f tok/s | eta %.0fs | %.1fs\n", st.lr, st.grad_norm,
                   st.tokens_per_s, st.eta_s, st.elapsed_s);
            fflush(stdout);
        }
        if (rc == PYLLMC_OK)
            break;
    }
    if (st.state != PYLLMC_JOB_FINISHED) {
        char why[1024];
        int32_t why_len = 0;
        check(pyllmc_job_error(job, why, (int32_t)sizeof why - 1, &why_len), "job_error");
        why[why_len < (int32_t)sizeof why - 1 ? why_len : (int32_t)sizeof why - 1] = '\0';
        fprintf(stderr, "train.wasm: the job ended %s at step %d (%s: %s)\n", pyllmc_job_state_name(st.state),
                st.step, pyllmc_status_name(st.error), why);
        return 1;
    }
    check(pyllmc_job_free(job), "job_free");

    /* evaluate, sample, save */
    if (val) {
        float val_loss = 0;
        check(pyllmc_evaluate(model, val, o.eval_batches, &val_loss), "evaluate");
        printf("val loss %.4f (%d batches)\n", val_loss, o.eval_batches);
    }
    if (o.sample_tokens > 0) {
        static char text[1 << 16];
        int32_t len = 0;
        check(pyllmc_sample(model, tok, o.prompt, pyllmc_strlen(o.prompt), o.sample_tokens, 1.0f, 0, o.seed, text,
                            (int32_t)sizeof text - 1, &len),
              "sample");
        text[len < (int32_t)sizeof text - 1 ? len : (int32_t)sizeof text - 1] = '\0';
        printf("--- sample ---\n%s\n---\n", text);
    }
    char final_path[600];
    snprintf(final_path, sizeof final_path, "%s/final.bin", o.out);
    check(pyllmc_model_save(model, final_path, pyllmc_strlen(final_path)), "model_save");
    printf("saved %s\n", final_path);

    check(pyllmc_tokenizer_free(tok), "tokenizer_free");
    if (val)
        check(pyllmc_dataloader_free(val), "dataloader_free");
    check(pyllmc_dataloader_free(train), "dataloader_free");
    check(pyllmc_model_free(model), "model_free");
    return 0;
}
