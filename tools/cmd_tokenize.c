/* cmd_tokenize: `megaqwen tokenize` — print a text's token ids as one JSON array; --bench times it. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cmd.h"
#include "err.h"
#include "tokenizer.h"

static const char *tok_help =
    "usage: megaqwen tokenize -m DIR (--text TEXT | -f FILE) [--bench]\n"
    "  -m, --model DIR   directory with tokenizer.json (a checkpoint or tokenizer folder)\n"
    "  -t, --text TEXT   text to tokenize\n"
    "  -f, --file FILE   text from a file ('-' = standard input)\n"
    "      --bench       instead of printing ids: time tokenizer load and encode throughput\n"
    "                    (single thread) over the text, printed on stdout\n"
    "Special tokens written in the text (<|im_start|>, ...) become their ids. Output: [id,id,...]\n";

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16, k = 0;
    char *b = malloc(cap);
    while (b) {
        k += fread(b + k, 1, cap - k - 1, stdin);
        if (k < cap - 1) break;
        char *nb = realloc(b, cap *= 2);
        if (!nb) free(b);
        b = nb;
    }
    if (!b) { fprintf(stderr, "megaqwen tokenize: out of memory\n"); return NULL; }
    b[k] = 0;
    *len = k;
    return b;
}

static int bench(const char *model, const char *text, size_t len) {
    double best_load = 1e9;
    for (int i = 0; i < 5; i++) {
        double t0 = now_s();
        mq_tok *t = mq_tok_load(model);
        double dt = now_s() - t0;
        if (!t) { mq_cli_err("tokenize", "%s", mq_err_get()); return MQ_EXIT_ERR; }
        mq_tok_free(t);
        if (dt < best_load) best_load = dt;
    }
    mq_tok *t = mq_tok_load(model);
    if (!t) { mq_cli_err("tokenize", "%s", mq_err_get()); return MQ_EXIT_ERR; }
    int32_t *ids;
    size_t n = 0;
    double best = 1e9, t_all = now_s();
    int reps = 0;
    while (reps < 3 || (now_s() - t_all < 3.0 && reps < 100)) {
        double t0 = now_s();
        if (mq_tok_encode(t, text, len, &ids, &n)) {
            mq_cli_err("tokenize", "%s", mq_err_get());
            mq_tok_free(t);
            return MQ_EXIT_ERR;
        }
        double dt = now_s() - t0;
        free(ids);
        if (dt < best) best = dt;
        reps++;
    }
    mq_tok_free(t);
    printf("tokenizer load: %.1f ms (best of 5)\n", best_load * 1e3);
    printf("encode: %zu bytes -> %zu tokens in %.1f ms (best of %d): %.2f MB/s, %.0f tokens/s\n", len,
           n, best * 1e3, reps, (double)len / best / 1e6, (double)n / best);
    return MQ_EXIT_OK;
}

int cmd_tokenize(int argc, char **argv) {
    static const struct option lo[] = {{"model", 1, 0, 'm'}, {"text", 1, 0, 't'}, {"file", 1, 0, 'f'},
                                       {"bench", 0, 0, 'B'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *text = NULL, *file = NULL;
    int do_bench = 0, o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":m:t:f:h", lo, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 't': text = optarg; break;
        case 'f': file = optarg; break;
        case 'B': do_bench = 1; break;
        case 'h': fputs(tok_help, stdout); return MQ_EXIT_OK;
        case ':': mq_cli_err("tokenize", "option %s needs a value", argv[optind - 1]); return MQ_EXIT_USAGE;
        default: mq_cli_err("tokenize", "unknown option %s (see --help)", argv[optind - 1]); return MQ_EXIT_USAGE;
        }
    }
    if (optind < argc) { mq_cli_err("tokenize", "unexpected argument '%s'", argv[optind]); return MQ_EXIT_USAGE; }
    if (!model) { mq_cli_err("tokenize", "-m DIR is required (see --help)"); return MQ_EXIT_USAGE; }
    if (!!text + !!file != 1) { mq_cli_err("tokenize", "give exactly one of --text TEXT or -f FILE"); return MQ_EXIT_USAGE; }
    char *buf = NULL;
    size_t len = text ? strlen(text) : 0;
    if (file && !(buf = strcmp(file, "-") ? mq_cli_read_file(file, &len) : read_stdin(&len))) return MQ_EXIT_ERR;
    const char *src = text ? text : buf;
    if (do_bench) {
        int rc = bench(model, src, len);
        free(buf);
        return rc;
    }
    mq_tok *t = mq_tok_load(model);
    if (!t) { mq_cli_err("tokenize", "%s", mq_err_get()); free(buf); return MQ_EXIT_ERR; }
    int32_t *ids;
    size_t n;
    int rc = MQ_EXIT_ERR;
    if (mq_tok_encode(t, src, len, &ids, &n)) {
        mq_cli_err("tokenize", "%s: %s", file ? file : "--text", mq_err_get());
    } else {
        putchar('[');
        for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
        puts("]");
        free(ids);
        rc = MQ_EXIT_OK;
    }
    mq_tok_free(t);
    free(buf);
    return rc;
}
