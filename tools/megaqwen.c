/* megaqwen: the CLI entry point — dispatches git-style subcommands; shared argument helpers. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "cmd.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    {"run", cmd_run, "generate a continuation of a prompt (text or ids)"},
    {"chat", cmd_chat, "interactive chat that keeps the conversation and its KV cache"},
    {"logits", cmd_logits, "teacher-forced logits as raw float32 [T, vocab]"},
    {"perplexity", cmd_perplexity, "sliding-window perplexity of a text file"},
    {"tokenize", cmd_tokenize, "print token ids of a text as a JSON array"},
    {"detokenize", cmd_detokenize, "print the text of token ids"},
    {"synth", cmd_synth, "write a synthetic checkpoint of a real Qwen3 shape"},
    {"bench", cmd_bench, "decode/TTFT/power benchmark of megaqwen's backends"},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: megaqwen <command> [options]   (megaqwen <command> --help)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-11s %s\n", cmds[i].name, cmds[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return MQ_EXIT_USAGE; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return MQ_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "megaqwen: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return MQ_EXIT_USAGE;
}

void mq_cli_err(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "megaqwen %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int mq_cli_backend(const char *cmd, const char *v) {
    if (!strcmp(v, "auto") || !strcmp(v, "cpu") || !strcmp(v, "cuda")) return 0;
    mq_cli_err(cmd, "unknown backend '%s' (want auto, cpu or cuda)", v);
    return -1;
}

int mq_cli_parse_ids(const char *s, int32_t **ids, size_t *n) {
    size_t cap = 16, k = 0;
    int32_t *a = malloc(cap * sizeof *a);
    if (!a) return -1;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) { free(a); return -1; }
        if (k == cap) {
            int32_t *b = realloc(a, (cap *= 2) * sizeof *a);
            if (!b) { free(a); return -1; }
            a = b;
        }
        a[k++] = (int32_t)v;
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p) { free(a); return -1; }
    }
    if (!k) { free(a); return -1; }
    *ids = a;
    *n = k;
    return 0;
}

int mq_cli_int(const char *cmd, const char *opt, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || errno || x < lo || x > hi) {
        mq_cli_err(cmd, "bad value for %s: '%s' (want an integer in [%ld, %ld])", opt, v ? v : "", lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int mq_cli_float(const char *cmd, const char *opt, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || end == v || *end || errno || !(x >= lo && x <= hi)) {
        mq_cli_err(cmd, "bad value for %s: '%s' (want a number in [%g, %g])", opt, v ? v : "", lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

char *mq_cli_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "megaqwen: %s: %s\n", path, strerror(errno)); return NULL; }
    size_t cap = 1 << 16, k = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) { fclose(f); fprintf(stderr, "megaqwen: %s: out of memory\n", path); return NULL; }
        k += fread(buf + k, 1, cap - k - 1, f);
        if (k < cap - 1) break;
        char *b = realloc(buf, cap *= 2);
        if (!b) free(buf);
        buf = b;
    }
    int err = ferror(f);
    fclose(f);
    if (err) { free(buf); fprintf(stderr, "megaqwen: %s: read error\n", path); return NULL; }
    buf[k] = 0;
    if (len) *len = k;
    return buf;
}

int mq_cli_sampling_opt(const char *cmd, int opt, const char *arg, mq_cli_samp *s) {
    long l;
    double d;
    switch (opt) {
    case 1001:
        if (mq_cli_float(cmd, "--temp", arg, 0, 100, &d)) return -1;
        s->v.temperature = (float)d;
        break;
    case 1002:
        if (mq_cli_int(cmd, "--top-k", arg, 0, 1 << 30, &l)) return -1;
        s->v.top_k = (int)l;
        break;
    case 1003:
        if (mq_cli_float(cmd, "--top-p", arg, 1e-6, 1, &d)) return -1;
        s->v.top_p = (float)d;
        break;
    case 1004:
        if (mq_cli_float(cmd, "--min-p", arg, 0, 1, &d)) return -1;
        s->v.min_p = (float)d;
        break;
    case 1005:
        if (mq_cli_float(cmd, "--repeat-penalty", arg, 1e-3, 100, &d)) return -1;
        s->v.rep_penalty = (float)d;
        break;
    case 1006:
        if (mq_cli_int(cmd, "--repeat-last-n", arg, 0, 1 << 30, &l)) return -1;
        s->v.rep_last_n = (int)l;
        break;
    case 1007: {
        char *end;
        errno = 0;
        unsigned long long x = strtoull(arg, &end, 10);
        if (!*arg || *end || errno || *arg == '-') {
            mq_cli_err(cmd, "bad value for --seed: '%s'", arg);
            return -1;
        }
        s->v.seed = x;
        break;
    }
    case 1008:
        if (mq_cli_float(cmd, "--presence-penalty", arg, -2, 2, &d)) return -1;
        s->v.presence_penalty = (float)d;
        break;
    case 1009:
        if (mq_cli_float(cmd, "--frequency-penalty", arg, -2, 2, &d)) return -1;
        s->v.frequency_penalty = (float)d;
        break;
    default:
        return 0;
    }
    s->set |= 1u << (opt - 1001);
    return 1;
}

int mq_cli_sampling_apply(mq_ctx *c, const mq_cli_samp *s) {
    mq_sampling v;
    mq_cli_sampling_resolve(c, s, &v);
    return mq_set_sampling(c, &v);
}

void mq_cli_sampling_resolve(mq_ctx *c, const mq_cli_samp *s, mq_sampling *out) {
    mq_sampling v;
    mq_sampling_default(&v);
    mq_sampling_from_model(c, &v);
    if (s->set & 1) v.temperature = s->v.temperature;
    if (s->set & 2) v.top_k = s->v.top_k;
    if (s->set & 4) v.top_p = s->v.top_p;
    if (s->set & 8) v.min_p = s->v.min_p;
    if (s->set & 16) v.rep_penalty = s->v.rep_penalty;
    if (s->set & 32) v.rep_last_n = s->v.rep_last_n;
    if (s->set & 64) v.seed = s->v.seed;
    if (s->set & 128) v.presence_penalty = s->v.presence_penalty;
    if (s->set & 256) v.frequency_penalty = s->v.frequency_penalty;
    *out = v;
}
