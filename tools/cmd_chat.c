/* cmd_chat: `megaqwen chat` — interactive chat that keeps the conversation and reuses its KV cache. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cmd.h"

static const char *chat_help =
    "usage: megaqwen chat -m DIR [--system TEXT] [--no-think] [options]\n"
    "Reads one user message per line from standard input and streams each reply. The whole\n"
    "conversation is kept; each turn feeds only the tokens the KV cache does not hold yet.\n"
    "Lines: '/reset' starts a new conversation, '/exit' (or end of input) quits.\n"
    "  -m, --model DIR       checkpoint directory (config.json, *.safetensors, tokenizer.json)\n"
    "      --system TEXT     system message\n"
    "      --no-think        chat template with enable_thinking=false (no <think> reasoning)\n"
    "  -n N                  most tokens per reply (default 2048)\n"
    "      --backend B       auto | cpu | cuda (default auto)\n"
    MQ_CLI_KV_HELP
    "      --max-ctx N       KV cache positions (default min(model max, 4096))\n"
    "      --threads N       CPU threads (default: all cores)\n"
    "      --no-reuse        recompute the whole conversation each turn (to check the reuse)\n"
    "  -v, --verbose         after each reply, print to stderr how many prompt tokens the cache held\n"
    MQ_CLI_SAMPLING_HELP;

typedef struct {
    mq_chat_msg *m; /* (n) role/content, both malloc'd */
    int n, cap;
} conv;

static int conv_add(conv *c, const char *role, const char *content, size_t len) {
    if (c->n == c->cap) {
        int nc = c->cap ? 2 * c->cap : 16;
        mq_chat_msg *m = realloc(c->m, (size_t)nc * sizeof *m);
        if (!m) return -1;
        c->m = m;
        c->cap = nc;
    }
    char *r = strdup(role), *t = malloc(len + 1);
    if (!r || !t) { free(r); free(t); return -1; }
    memcpy(t, content, len);
    t[len] = 0;
    c->m[c->n].role = r;
    c->m[c->n].content = t;
    c->m[c->n].tool_calls = NULL;
    c->n++;
    return 0;
}

static void conv_pop(conv *c) {
    c->n--;
    free((char *)c->m[c->n].role);
    free((char *)c->m[c->n].content);
}

typedef struct {
    mq_ctx *c;
    int32_t *ids; /* (cap) tokens of this reply, eos excluded */
    int n, cap;
} reply;

static int on_token(int32_t id, void *user) {
    reply *r = user;
    if (mq_is_eos(r->c, id)) return 0;
    if (r->n < r->cap) r->ids[r->n++] = id;
    char buf[1024];
    int k = mq_detok_stream(r->c, id, buf, sizeof buf);
    if (k > 0) fwrite(buf, 1, (size_t)k, stdout);
    fflush(stdout);
    return 0;
}

/* One turn: render the whole conversation, keep the longest cached prefix of its tokens, feed the
 * rest and generate. hist mirrors the KV cache: hist[i] is the token at position i (mq_pos of them).
 * The prefix usually ends inside the previous reply, because the template re-renders earlier
 * assistant turns (it drops their <think> block), so the cache is rewound to where they differ. */
static int turn(mq_ctx *c, conv *cv, int think, long max_new, int verbose, int32_t **hist, size_t *hcap) {
    char *prompt = mq_chat_prompt(c, cv->m, cv->n, 1, think);
    if (!prompt) { mq_cli_err("chat", "%s", mq_last_error()); return -1; }
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = -1;
    reply r = {c, NULL, 0, 0};
    if (mq_tokenize(c, prompt, strlen(prompt), &ids, &n)) { /* bad UTF-8 in the line: drop it */
        mq_cli_err("chat", "message not sent: %s", mq_last_error());
        rc = 1;
        goto done;
    }
    const mq_info *in = mq_get_info(c);
    long room = (long)in->max_ctx - (long)n;
    if (room < 1) {
        mq_cli_err("chat", "the conversation (%zu tokens) fills the context of %d; type /reset (or raise --max-ctx)",
                   n, in->max_ctx);
        rc = 1;
        goto done;
    }
    if (max_new > room) max_new = room;
    size_t pos = (size_t)mq_pos(c), keep = 0;
    while (keep < pos && keep < n && (*hist)[keep] == ids[keep]) keep++;
    if (keep == n) keep = n - 1; /* the last prompt token is fed again to get fresh logits */
    if (mq_rewind(c, (int)keep)) { mq_cli_err("chat", "%s", mq_last_error()); goto done; }
    if (n - 1 > keep && mq_feed(c, ids + keep, (int)(n - 1 - keep), NULL)) {
        mq_cli_err("chat", "%s", mq_last_error());
        goto done;
    }
    r.cap = (int)max_new;
    int32_t *out = malloc((size_t)max_new * sizeof *out);
    if (!(r.ids = malloc((size_t)max_new * sizeof *r.ids)) || !out) {
        free(out);
        mq_cli_err("chat", "out of memory");
        goto done;
    }
    mq_detok_stream_reset(c);
    int got = mq_generate(c, ids[n - 1], (int)max_new, out, on_token, &r);
    char tail[64];
    int k = mq_detok_stream(c, -1, tail, sizeof tail);
    if (k > 0) fwrite(tail, 1, (size_t)k, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    if (got < 0) { free(out); mq_cli_err("chat", "%s", mq_last_error()); goto done; }
    /* the cache now holds the prompt and every reply token but the last chosen one */
    size_t p = (size_t)mq_pos(c);
    if (p > *hcap) {
        int32_t *h = realloc(*hist, p * sizeof *h);
        if (!h) { free(out); mq_cli_err("chat", "out of memory"); goto done; }
        *hist = h;
        *hcap = p;
    }
    for (size_t i = 0; i < p; i++) (*hist)[i] = i < n ? ids[i] : out[i - n];
    free(out);
    char *text = mq_detokenize(c, r.ids, (size_t)r.n);
    if (!text) { mq_cli_err("chat", "%s", mq_last_error()); goto done; }
    int bad = conv_add(cv, "assistant", text, strlen(text));
    free(text);
    if (bad) { mq_cli_err("chat", "out of memory"); goto done; }
    if (verbose)
        fprintf(stderr, "[prompt %zu tokens, %zu reused from the KV cache, %d generated]\n", n, keep, got);
    rc = 0;
done:
    free(r.ids);
    free(ids);
    free(prompt);
    return rc;
}

int cmd_chat(int argc, char **argv) {
    static const struct option lo[] = {
        {"model", 1, 0, 'm'}, {"system", 1, 0, 's'}, {"no-think", 0, 0, 'T'}, {"backend", 1, 0, 'b'},
        {"max-ctx", 1, 0, 'x'}, {"threads", 1, 0, 't'}, {"no-reuse", 0, 0, 'R'}, {"verbose", 0, 0, 'v'}, {"help", 0, 0, 'h'}, MQ_CLI_SAMPLING_LONGOPTS, MQ_CLI_KV_LONGOPT,
        {0, 0, 0, 0}};
    const char *model = NULL, *system = NULL;
    mq_params prm;
    mq_params_default(&prm);
    mq_cli_samp samp = {0};
    long max_new = 2048, v;
    int think = 1, reuse = 1, verbose = 0, o, r;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":m:n:vh", lo, NULL)) != -1) {
        if ((r = mq_cli_sampling_opt("chat", o, optarg, &samp))) {
            if (r < 0) return MQ_EXIT_USAGE;
            continue;
        }
        switch (o) {
        case 'm': model = optarg; break;
        case 's': system = optarg; break;
        case 'T': think = 0; break;
        case 'R': reuse = 0; break;
        case 'v': verbose = 1; break;
        case 'n': if (mq_cli_int("chat", "-n", optarg, 1, 1 << 24, &max_new)) return MQ_EXIT_USAGE; break;
        case 'b': prm.backend = optarg; break;
        case MQ_CLI_KV: prm.kv_type = optarg; break;
        case 'x': if (mq_cli_int("chat", "--max-ctx", optarg, 1, 1 << 24, &v)) return MQ_EXIT_USAGE;
                  prm.max_ctx = (int)v; break;
        case 't': if (mq_cli_int("chat", "--threads", optarg, 0, 1024, &v)) return MQ_EXIT_USAGE;
                  prm.n_threads = (int)v; break;
        case 'h': fputs(chat_help, stdout); return MQ_EXIT_OK;
        case ':': mq_cli_err("chat", "option %s needs a value", argv[optind - 1]); return MQ_EXIT_USAGE;
        default: mq_cli_err("chat", "unknown option %s (see --help)", argv[optind - 1]); return MQ_EXIT_USAGE;
        }
    }
    if (optind < argc) { mq_cli_err("chat", "unexpected argument '%s'", argv[optind]); return MQ_EXIT_USAGE; }
    if (!model) { mq_cli_err("chat", "-m DIR is required (see --help)"); return MQ_EXIT_USAGE; }

    mq_ctx *c = mq_open(model, &prm);
    if (!c) { mq_cli_err("chat", "%s", mq_last_error()); return MQ_EXIT_ERR; }
    if (mq_cli_sampling_apply(c, &samp)) { mq_cli_err("chat", "%s", mq_last_error()); mq_close(c); return MQ_EXIT_USAGE; }
    int tty = isatty(0);
    if (tty) fprintf(stderr, "[%s] chat: one message per line; /reset, /exit or Ctrl-D\n", mq_get_info(c)->backend);

    conv cv = {0};
    int32_t *hist = NULL;
    size_t hcap = 0;
    char *line = NULL;
    size_t lcap = 0;
    int rc = MQ_EXIT_OK;
    if (system && conv_add(&cv, "system", system, strlen(system))) { rc = MQ_EXIT_ERR; goto done; }
    for (;;) {
        if (tty) fputs("> ", stderr);
        ssize_t len = getline(&line, &lcap, stdin);
        if (len < 0) break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!len) continue;
        if (!strcmp(line, "/exit")) break;
        if (!strcmp(line, "/reset")) {
            while (cv.n > (system ? 1 : 0)) conv_pop(&cv);
            mq_reset(c);
            continue;
        }
        int32_t *chk;
        size_t nchk;
        if (mq_tokenize(c, line, (size_t)len, &chk, &nchk)) { /* bad UTF-8: say where in the line */
            mq_cli_err("chat", "message not sent: %s", mq_last_error());
            continue;
        }
        free(chk);
        if (conv_add(&cv, "user", line, (size_t)len)) { mq_cli_err("chat", "out of memory"); rc = MQ_EXIT_ERR; break; }
        if (!reuse) mq_reset(c);
        int t = turn(c, &cv, think, max_new, verbose, &hist, &hcap);
        if (t < 0) { rc = MQ_EXIT_ERR; break; }
        if (t > 0) conv_pop(&cv); /* bad text or context full: the message is dropped, chat goes on */
    }
done:
    while (cv.n) conv_pop(&cv);
    free(cv.m);
    free(hist);
    free(line);
    mq_close(c);
    return rc;
}
