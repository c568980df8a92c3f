/* cmd_perplexity: `megaqwen perplexity` — HF-style sliding-window perplexity of a text file. */
#include <getopt.h>
#include <stdlib.h>
#include "cmd.h"

static const char *ppl_help =
    "usage: megaqwen perplexity -m DIR -f FILE [--ctx N] [--stride S] [--backend auto|cpu|cuda] [--kv-type f32|bf16|f16]\n"
    "  sliding windows of N tokens (default min(1024, context)) advancing by S (default N/2);\n"
    "  each token is scored once, with up to N-1 tokens of context, as in HF's documented method.\n"
    "  prints perplexity, its standard error, and the number of scored tokens\n";

int cmd_perplexity(int argc, char **argv) {
    static const struct option lo[] = {{"model", 1, 0, 'm'}, {"file", 1, 0, 'f'}, {"ctx", 1, 0, 'c'},
                                       {"stride", 1, 0, 's'}, {"backend", 1, 0, 'b'},
                                       {"threads", 1, 0, 't'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, MQ_CLI_KV_LONGOPT,
                                       {0, 0, 0, 0}};
    const char *model = NULL, *file = NULL;
    mq_params prm;
    mq_params_default(&prm);
    long ctx = 0, stride = 0, v;
    int o, json = 0;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":m:f:h", lo, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 'f': file = optarg; break;
        case 'c': if (mq_cli_int("perplexity", "--ctx", optarg, 2, 1 << 24, &ctx)) return MQ_EXIT_USAGE; break;
        case 's': if (mq_cli_int("perplexity", "--stride", optarg, 1, 1 << 24, &stride)) return MQ_EXIT_USAGE; break;
        case 'b': if (mq_cli_backend("perplexity", optarg)) return MQ_EXIT_USAGE;
                  prm.backend = optarg; break;
        case MQ_CLI_KV: prm.kv_type = optarg; break;
        case 't': if (mq_cli_int("perplexity", "--threads", optarg, 0, 1024, &v)) return MQ_EXIT_USAGE;
                  prm.n_threads = (int)v; break;
        case 'j': json = 1; break;
        case 'h': fputs(ppl_help, stdout); return MQ_EXIT_OK;
        case ':': mq_cli_err("perplexity", "option %s needs a value", argv[optind - 1]); return MQ_EXIT_USAGE;
        default: mq_cli_err("perplexity", "unknown option %s (see --help)", argv[optind - 1]); return MQ_EXIT_USAGE;
        }
    }
    if (optind < argc || !model || !file) {
        mq_cli_err("perplexity", "-m DIR and -f FILE are required (see --help)");
        return MQ_EXIT_USAGE;
    }
    if (stride && ctx && stride > ctx) { mq_cli_err("perplexity", "--stride must not exceed --ctx"); return MQ_EXIT_USAGE; }
    size_t tlen;
    char *text = mq_cli_read_file(file, &tlen);
    if (!text) return MQ_EXIT_ERR;
    int rc = MQ_EXIT_ERR;
    int32_t *ids = NULL;
    size_t n = 0;
    if (ctx > 0) prm.max_ctx = (int)ctx;
    mq_ctx *c = mq_open(model, &prm);
    if (!c) { mq_cli_err("perplexity", "%s", mq_last_error()); goto done; }
    const mq_info *in = mq_get_info(c);
    if (!ctx) ctx = in->max_ctx < 1024 ? in->max_ctx : 1024;
    if (!stride) stride = ctx / 2 ? ctx / 2 : 1;
    if (mq_tokenize(c, text, tlen, &ids, &n)) { mq_cli_err("perplexity", "%s", mq_last_error()); goto done; }
    double ppl, se;
    size_t scored;
    if (mq_perplexity(c, ids, n, (int)ctx, (int)stride, &ppl, &se, &scored)) {
        mq_cli_err("perplexity", "%s", mq_last_error());
        goto done;
    }
    if (json)
        printf("{\"perplexity\": %.6f, \"stderr\": %.6f, \"tokens\": %zu, \"ctx\": %ld, \"stride\": %ld, "
               "\"backend\": \"%s\"}\n", ppl, se, scored, ctx, stride, in->backend);
    else
        printf("perplexity %.4f +/- %.4f over %zu tokens (ctx %ld, stride %ld, backend %s)\n", ppl, se,
               scored, ctx, stride, in->backend);
    rc = MQ_EXIT_OK;
done:
    free(ids);
    free(text);
    mq_close(c);
    return rc;
}
