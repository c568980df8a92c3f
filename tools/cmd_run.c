/* cmd_run: `megaqwen run` — tokenize a prompt (or take ids), prefill, stream a continuation. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cmd.h"

static const char *run_help =
    "usage: megaqwen run -m DIR (-p TEXT | -f FILE | --prompt-ids 1,2,3) [options]\n"
    "  -m, --model DIR       checkpoint directory (config.json, *.safetensors, tokenizer.json)\n"
    "  -p, --prompt TEXT     prompt text\n"
    "  -f, --file FILE       prompt text from a file\n"
    "      --prompt-ids IDS  prompt as comma-separated token ids\n"
    "  -n N                  tokens to generate (default 128)\n"
    "      --ids             print generated token ids instead of text\n"
    "      --chat            wrap the prompt in the model's chat template\n"
    "      --system TEXT     system message (with --chat)\n"
    "      --no-think        chat template with enable_thinking=false\n"
    "      --ignore-eos      keep generating past end-of-sequence tokens\n"
    "      --backend B       auto | cpu | cuda (default auto)\n"
    MQ_CLI_KV_HELP
    "      --max-ctx N       KV cache positions (default min(model max, 4096))\n"
    "      --threads N       CPU threads (default: all cores)\n" MQ_CLI_SAMPLING_HELP;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
    mq_ctx *c;
    int ids_mode, ignore_eos, count;
    double t_first;
} run_state;

static int on_token(int32_t id, void *user) {
    run_state *st = user;
    if (!st->count++) st->t_first = now_s();
    if (!st->ignore_eos && mq_is_eos(st->c, id)) return 0;
    if (st->ids_mode) {
        printf("%s%d", st->count > 1 ? "," : "", id);
    } else {
        char buf[512];
        int k = mq_detok_stream(st->c, id, buf, sizeof buf);
        if (k > 0) fwrite(buf, 1, (size_t)k, stdout);
    }
    fflush(stdout);
    return 0;
}

int cmd_run(int argc, char **argv) {
    static const struct option lo[] = {
        {"model", 1, 0, 'm'}, {"prompt", 1, 0, 'p'}, {"file", 1, 0, 'f'}, {"prompt-ids", 1, 0, 'I'},
        {"ids", 0, 0, 'i'}, {"chat", 0, 0, 'c'}, {"system", 1, 0, 's'}, {"no-think", 0, 0, 'T'},
        {"ignore-eos", 0, 0, 'E'}, {"backend", 1, 0, 'b'}, {"max-ctx", 1, 0, 'x'},
        {"threads", 1, 0, 't'}, {"help", 0, 0, 'h'}, MQ_CLI_SAMPLING_LONGOPTS, MQ_CLI_KV_LONGOPT, {0, 0, 0, 0}};
    const char *model = NULL, *prompt = NULL, *file = NULL, *pids = NULL, *system = NULL;
    mq_params prm;
    mq_params_default(&prm);
    mq_cli_samp samp = {0};
    long n = 128, v;
    int ids_mode = 0, chat = 0, think = 1, ignore_eos = 0, o, r;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":m:p:f:n:h", lo, NULL)) != -1) {
        if ((r = mq_cli_sampling_opt("run", o, optarg, &samp))) {
            if (r < 0) return MQ_EXIT_USAGE;
            continue;
        }
        switch (o) {
        case 'm': model = optarg; break;
        case 'p': prompt = optarg; break;
        case 'f': file = optarg; break;
        case 'I': pids = optarg; break;
        case 'n': if (mq_cli_int("run", "-n", optarg, 0, 1 << 24, &n)) return MQ_EXIT_USAGE; break;
        case 'i': ids_mode = 1; break;
        case 'c': chat = 1; break;
        case 's': system = optarg; break;
        case 'T': think = 0; break;
        case 'E': ignore_eos = 1; break;
        case 'b': if (mq_cli_backend("run", optarg)) return MQ_EXIT_USAGE;
                  prm.backend = optarg; break;
        case MQ_CLI_KV: prm.kv_type = optarg; break;
        case 'x': if (mq_cli_int("run", "--max-ctx", optarg, 1, 1 << 24, &v)) return MQ_EXIT_USAGE;
                  prm.max_ctx = (int)v; break;
        case 't': if (mq_cli_int("run", "--threads", optarg, 0, 1024, &v)) return MQ_EXIT_USAGE;
                  prm.n_threads = (int)v; break;
        case 'h': fputs(run_help, stdout); return MQ_EXIT_OK;
        case ':': mq_cli_err("run", "option %s needs a value", argv[optind - 1]); return MQ_EXIT_USAGE;
        default: mq_cli_err("run", "unknown option %s (see --help)", argv[optind - 1]); return MQ_EXIT_USAGE;
        }
    }
    if (optind < argc) { mq_cli_err("run", "unexpected argument '%s'", argv[optind]); return MQ_EXIT_USAGE; }
    if (!model) { mq_cli_err("run", "-m DIR is required (see --help)"); return MQ_EXIT_USAGE; }
    if (!!prompt + !!file + !!pids != 1) {
        mq_cli_err("run", "give exactly one of -p TEXT, -f FILE or --prompt-ids IDS");
        return MQ_EXIT_USAGE;
    }
    if (pids && chat) { mq_cli_err("run", "--chat needs a text prompt"); return MQ_EXIT_USAGE; }
    if ((system || !think) && !chat) { mq_cli_err("run", "--system/--no-think need --chat"); return MQ_EXIT_USAGE; }

    int32_t *ids = NULL;
    size_t nids = 0;
    if (pids && mq_cli_parse_ids(pids, &ids, &nids)) {
        mq_cli_err("run", "bad --prompt-ids '%s' (want comma-separated non-negative integers)", pids);
        return MQ_EXIT_USAGE;
    }
    char *text = NULL;
    size_t tlen = 0;
    if (file && !(text = mq_cli_read_file(file, &tlen))) return MQ_EXIT_ERR;
    prm.load_tokenizer = !(pids && ids_mode);

    int rc = MQ_EXIT_ERR;
    char *wrapped = NULL;
    int32_t *out = NULL;
    double t0 = now_s();
    mq_ctx *c = mq_open(model, &prm);
    if (!c) { mq_cli_err("run", "%s", mq_last_error()); goto done; }
    if (mq_cli_sampling_apply(c, &samp)) { mq_cli_err("run", "%s", mq_last_error()); rc = MQ_EXIT_USAGE; goto done; }
    double t_open = now_s() - t0;
    if (!pids) {
        const char *src = prompt ? prompt : text;
        size_t slen = prompt ? strlen(prompt) : tlen;
        if (chat) {
            mq_chat_msg msgs[2];
            int k = 0;
            if (system) msgs[k++] = (mq_chat_msg){"system", system, NULL};
            msgs[k++] = (mq_chat_msg){"user", src, NULL};
            if (!(wrapped = mq_chat_prompt(c, msgs, k, 1, think))) { mq_cli_err("run", "%s", mq_last_error()); goto done; }
            src = wrapped;
            slen = strlen(wrapped);
        }
        if (mq_tokenize(c, src, slen, &ids, &nids)) { mq_cli_err("run", "%s", mq_last_error()); goto done; }
        if (!nids) { mq_cli_err("run", "the prompt is empty after tokenization"); goto done; }
    }
    const mq_info *in = mq_get_info(c);
    if (nids + (size_t)n > (size_t)in->max_ctx) {
        mq_cli_err("run", "prompt of %zu tokens + %ld new tokens exceeds the context of %d (raise --max-ctx, "
                   "model max %d)", nids, n, in->max_ctx, in->max_pos);
        goto done;
    }
    if (samp.set & (128 | 256)) { /* presence / frequency count the generated tokens: from the prompt's end */
        mq_sampling sv;
        mq_cli_sampling_resolve(c, &samp, &sv);
        sv.penalty_from = (int)nids;
        if (mq_set_sampling(c, &sv)) { mq_cli_err("run", "%s", mq_last_error()); rc = MQ_EXIT_USAGE; goto done; }
    }
    run_state st = {c, ids_mode, ignore_eos, 0, 0};
    double t1 = now_s();
    int gen = 0;
    if (n > 0) {
        /* Prefill all but the last prompt token; generation then feeds the last one. */
        if (nids > 1 && mq_feed(c, ids, (int)nids - 1, NULL)) { mq_cli_err("run", "%s", mq_last_error()); goto done; }
        if (!(out = malloc((size_t)n * sizeof *out))) { mq_cli_err("run", "out of memory"); goto done; }
        if (ignore_eos) {
            /* mq_generate returns at an end-of-sequence token: call it again from there, so the
             * tokens still come from its device-side loop (one launch for many, not one each) */
            int32_t id = ids[nids - 1];
            while (gen < n) {
                int got = mq_generate(c, id, (int)n - gen, out + gen, on_token, &st);
                if (got <= 0) { mq_cli_err("run", "%s", got < 0 ? mq_last_error() : "no token generated"); goto done; }
                gen += got;
                id = out[gen - 1];
            }
        } else {
            gen = mq_generate(c, ids[nids - 1], (int)n, out, on_token, &st);
            if (gen < 0) { mq_cli_err("run", "%s", mq_last_error()); goto done; }
        }
    }
    double t2 = now_s();
    if (!ids_mode) {
        char buf[64];
        int k = mq_detok_stream(c, -1, buf, sizeof buf);
        if (k > 0) fwrite(buf, 1, (size_t)k, stdout);
    }
    fputc('\n', stdout);
    fflush(stdout);
    double ttft = st.count ? st.t_first - t1 : 0, dec = t2 - (st.count ? st.t_first : t1);
    fprintf(stderr, "[%s] load %.2f s | prompt %zu tokens | generated %d tokens | TTFT %.1f ms | "
            "decode %.1f tok/s\n", in->backend, t_open, nids, gen, 1e3 * ttft,
            gen > 1 && dec > 0 ? (gen - 1) / dec : 0.0);
    rc = MQ_EXIT_OK;
done:
    free(out);
    free(wrapped);
    free(ids);
    free(text);
    mq_close(c);
    return rc;
}
