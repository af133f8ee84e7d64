/* A small program against llama.cpp's C API, built by `cargo xtask runtime-check`.
 *
 *   llama_probe logprobs MODEL.gguf THREADS ID...   next-token log-probabilities after the ids,
 *                                                   one line: "logprobs v0 v1 ..." (whole vocab)
 *   llama_probe tensors MODEL.gguf                  "tensors N" then "NAME BYTES" per tensor
 *   llama_probe speed MODEL.gguf THREADS N_PROMPT N_GEN
 *                                                   "speed PP_TOK_S TG_TOK_S": prompt processing
 *                                                   of N_PROMPT tokens in one batch, then N_GEN
 *                                                   single-token decodes (greedy)
 */
#define _POSIX_C_SOURCE 199309L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level >= GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static struct llama_context *open_ctx(const char *path, int threads, int n_ctx,
                                      struct llama_model **model_out) {
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    /* No repacked weight buffers: the AMX ones fault (SIGILL) on machines whose kernel does not
     * grant AMX tiles, and the plain CPU path is the one every machine runs. */
    mp.use_extra_bufts = 0;
    struct llama_model *model = llama_model_load_from_file(path, mp);
    if (!model) {
        fprintf(stderr, "cannot load %s\n", path);
        exit(2);
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = n_ctx;
    cp.n_ubatch = n_ctx;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.no_perf = 1;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "cannot create a context for %s\n", path);
        exit(2);
    }
    *model_out = model;
    return ctx;
}

static int logprobs(const char *path, int threads, int n, char **ids) {
    llama_token *tok = malloc(sizeof(llama_token) * n);
    for (int i = 0; i < n; i++) {
        tok[i] = (llama_token)atoi(ids[i]);
    }
    struct llama_model *model;
    struct llama_context *ctx = open_ctx(path, threads, n < 64 ? 64 : n, &model);
    if (llama_decode(ctx, llama_batch_get_one(tok, n)) != 0) {
        fprintf(stderr, "llama_decode failed\n");
        return 2;
    }
    const float *logits = llama_get_logits_ith(ctx, -1);
    int vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    double max = -INFINITY, sum = 0.0;
    for (int v = 0; v < vocab; v++) {
        if (logits[v] > max) max = logits[v];
    }
    for (int v = 0; v < vocab; v++) {
        sum += exp(logits[v] - max);
    }
    double lse = max + log(sum);
    printf("logprobs");
    for (int v = 0; v < vocab; v++) {
        printf(" %.6f", logits[v] - lse);
    }
    printf("\n");
    llama_free(ctx);
    llama_model_free(model);
    free(tok);
    return 0;
}

static int tensors(const char *path) {
    struct gguf_init_params p = {.no_alloc = 1, .ctx = NULL};
    struct gguf_context *g = gguf_init_from_file(path, p);
    if (!g) {
        fprintf(stderr, "cannot read %s\n", path);
        return 2;
    }
    int64_t n = gguf_get_n_tensors(g);
    printf("tensors %lld\n", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        printf("%s %zu\n", gguf_get_tensor_name(g, i), gguf_get_tensor_size(g, i));
    }
    gguf_free(g);
    return 0;
}

static int speed(const char *path, int threads, int n_prompt, int n_gen) {
    struct llama_model *model;
    struct llama_context *ctx = open_ctx(path, threads, n_prompt + n_gen + 8, &model);
    int vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    llama_token *tok = malloc(sizeof(llama_token) * n_prompt);
    for (int i = 0; i < n_prompt; i++) {
        tok[i] = (llama_token)((i * 7919 + 13) % vocab);
    }
    double t0 = now();
    if (llama_decode(ctx, llama_batch_get_one(tok, n_prompt)) != 0) {
        fprintf(stderr, "llama_decode failed\n");
        return 2;
    }
    double t1 = now();
    llama_token next = 0;
    for (int i = 0; i < n_gen; i++) {
        const float *logits = llama_get_logits_ith(ctx, -1);
        next = 0;
        for (int v = 1; v < vocab; v++) {
            if (logits[v] > logits[next]) next = v;
        }
        if (llama_decode(ctx, llama_batch_get_one(&next, 1)) != 0) {
            fprintf(stderr, "llama_decode failed\n");
            return 2;
        }
    }
    double t2 = now();
    printf("speed %.3f %.3f\n", n_prompt / (t1 - t0), n_gen / (t2 - t1));
    llama_free(ctx);
    llama_model_free(model);
    free(tok);
    return 0;
}

int main(int argc, char **argv) {
    llama_log_set(quiet, NULL);
    llama_backend_init();
    if (argc >= 5 && strcmp(argv[1], "logprobs") == 0) {
        return logprobs(argv[2], atoi(argv[3]), argc - 4, argv + 4);
    }
    if (argc == 3 && strcmp(argv[1], "tensors") == 0) {
        return tensors(argv[2]);
    }
    if (argc == 6 && strcmp(argv[1], "speed") == 0) {
        return speed(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    }
    fprintf(stderr, "usage: llama_probe logprobs MODEL THREADS ID... | tensors MODEL | "
                    "speed MODEL THREADS N_PROMPT N_GEN\n");
    return 1;
}
