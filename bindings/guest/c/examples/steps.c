/* steps.c - a guest that drives training itself, one train_step call per optimizer step,
 * and uses the rest of the ABI on the way: tokenizer round trip, save and reload, a
 * background job that it stops.
 *
 *     pyllmc wasm run steps.wasm --dir data::/data --dir runs::/runs -- --steps 10 --lr 1e-3
 *
 * Flags (defaults): --data /data --out /runs/steps --model d2 --vocab-size 257
 * --max-seq-len 64 --steps 10 --batch 4 --seq 64 --lr 1e-3 (constant) --seed 0
 * --prompt "To be" ; the tokenizer is DATA/tokenizer.bin if it exists, else bytes.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pyllmc_guest.h"

static void check(int32_t rc, const char *what) {
    if (rc != PYLLMC_OK) {
        fprintf(stderr, "steps.wasm: %s failed: %s: %s\n", what, pyllmc_status_name(rc), pyllmc_last_error_str());
        exit(1);
    }
}

static long long int_flag(const char *flag, const char *v, long long lo) {
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > INT32_MAX) {
        fprintf(stderr, "steps.wasm: %s: expected an integer in [%lld, %d], got '%s'\n", flag, lo, INT32_MAX, v);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv) {
    const char *data = "/data", *out = "/runs/steps", *prompt = "To be";
    int depth = 2, vocab = 257, max_seq_len = 64, steps = 10, batch = 4, seq = 64;
    long long seed = 0;
    float lr = 1e-3f;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            fprintf(stderr, "steps.wasm: %s needs a value\n", a);
            return 2;
        }
        if ((!strcmp(a, "--data") || !strcmp(a, "--out")) && strlen(v) > 400) {
            fprintf(stderr, "steps.wasm: %s: the path is longer than 400 bytes\n", a);
            return 2;
        }
        if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--model") && (v[0] == 'd' || v[0] == 'D')) depth = (int)int_flag(a, v + 1, 1);
        else if (!strcmp(a, "--vocab-size")) vocab = (int)int_flag(a, v, 1);
        else if (!strcmp(a, "--max-seq-len")) max_seq_len = (int)int_flag(a, v, 1);
        else if (!strcmp(a, "--steps")) steps = (int)int_flag(a, v, 1);
        else if (!strcmp(a, "--batch")) batch = (int)int_flag(a, v, 1);
        else if (!strcmp(a, "--seq")) seq = (int)int_flag(a, v, 1);
        else if (!strcmp(a, "--seed")) seed = int_flag(a, v, 0);
        else if (!strcmp(a, "--lr")) {
            char *end = NULL;
            lr = strtof(v, &end);
            if (end == v || *end || !isfinite(lr) || lr < 0) {
                fprintf(stderr, "steps.wasm: --lr: expected a finite number >= 0, got '%s'\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "steps.wasm: unknown flag or bad value: %s %s\n", a, v);
            return 2;
        }
    }
    if (pyllmc_abi_version() != PYLLMC_ABI_VERSION) {
        fprintf(stderr, "steps.wasm: the host speaks ABI version %d, not %d\n", pyllmc_abi_version(),
                PYLLMC_ABI_VERSION);
        return 1;
    }

    /* the shape of `--model dN` for small N: N layers, 64*N channels, N heads */
    pyllmc_model_config cfg = {.max_seq_len = max_seq_len, .vocab_size = vocab,
                               .padded_vocab_size = (vocab + 127) / 128 * 128,
                               .num_layers = depth, .num_heads = depth, .channels = 64 * depth};
    int32_t model = 0, train = 0, val = 0, tok = 0;
    check(pyllmc_model_create(&cfg, seed, &model), "model_create");
    char path[512];
    snprintf(path, sizeof path, "%s/train_*.bin", data);
    check(pyllmc_dataloader_create(path, pyllmc_strlen(path), batch, seq, 1, seed, &train), "dataloader_create");
    snprintf(path, sizeof path, "%s/val_*.bin", data);
    if (pyllmc_dataloader_create(path, pyllmc_strlen(path), batch, seq, 0, 0, &val) != PYLLMC_OK)
        val = 0;
    snprintf(path, sizeof path, "%s/tokenizer.bin", data);
    FILE *f = fopen(path, "rb");
    if (f)
        fclose(f);
    const char *spec = f ? path : "byte";
    check(pyllmc_tokenizer_load(spec, pyllmc_strlen(spec), &tok), "tokenizer_load");

    /* the output directory, made through the guest's own WASI calls (inside its preopens) */
    if (mkdir(out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "steps.wasm: cannot create %s: %s\n", out, strerror(errno));
        return 1;
    }

    /* the guest's own loop: one host call per optimizer step */
    for (int s = 1; s <= steps; s++) {
        float loss = 0;
        check(pyllmc_train_step(model, train, lr, &loss), "train_step");
        printf("step %d/%d | loss %.9g\n", s, steps, loss); /* %.9g: the exact float */
    }

    /* tokenizer round trip */
    int32_t ids[256], n = 0, len = 0;
    char text[1024];
    check(pyllmc_tokenizer_encode(tok, prompt, pyllmc_strlen(prompt), ids, 256, &n), "tokenizer_encode");
    if (n > 256) {
        fprintf(stderr, "steps.wasm: --prompt is longer than 256 tokens\n");
        return 2;
    }
    check(pyllmc_tokenizer_decode(tok, ids, n, text, (int32_t)sizeof text - 1, &len), "tokenizer_decode");
    text[len < (int32_t)sizeof text - 1 ? len : (int32_t)sizeof text - 1] = '\0';
    printf("prompt: %d tokens, decoded back: '%s'%s\n", n, text, strcmp(text, prompt) ? " (differs)" : "");

    /* save, reload: the reloaded model evaluates to the same loss */
    snprintf(path, sizeof path, "%s/steps.bin", out);
    check(pyllmc_model_save(model, path, pyllmc_strlen(path)), "model_save");
    int32_t again = 0;
    check(pyllmc_model_load(path, pyllmc_strlen(path), &again), "model_load");
    if (val) {
        float a = 0, b = 0;
        check(pyllmc_evaluate(model, val, 2, &a), "evaluate");
        check(pyllmc_evaluate(again, val, 2, &b), "evaluate");
        printf("val loss %.9g, reloaded %.9g\n", a, b);
        if (a != b) {
            fprintf(stderr, "steps.wasm: the reloaded model evaluates differently\n");
            return 1;
        }
    }

    /* a long background run on the reloaded model, stopped at once */
    int32_t job = 0;
    const char *job_config = "{\"steps\": 1000000, \"lr\": 0.0001, \"schedule\": \"constant\"}";
    check(pyllmc_train_start(again, train, 0, job_config, pyllmc_strlen(job_config), &job), "train_start");
    check(pyllmc_job_stop(job), "job_stop");
    check(pyllmc_job_wait(job, -1), "job_wait");
    pyllmc_status st;
    check(pyllmc_job_status(job, &st), "job_status");
    printf("background job: %s after %d of %d steps\n", pyllmc_job_state_name(st.state), st.step, st.total_steps);
    check(pyllmc_job_free(job), "job_free");

    check(pyllmc_model_free(again), "model_free");
    check(pyllmc_tokenizer_free(tok), "tokenizer_free");
    if (val)
        check(pyllmc_dataloader_free(val), "dataloader_free");
    check(pyllmc_dataloader_free(train), "dataloader_free");
    check(pyllmc_model_free(model), "model_free");
    return 0;
}
