/* cmd_logits: `megaqwen logits` — teacher-forced logits of an id sequence as raw float32 [T, vocab]. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include "cmd.h"

static const char *logits_help =
    "usage: megaqwen logits -m DIR --ids 1,2,3 -o FILE [--backend auto|cpu|cuda] [--max-ctx N] [--kv-type f32|bf16|f16]\n"
    "  writes little-endian float32 logits, shape [T, vocab], row-major (row t predicts token t+1)\n";

int cmd_logits(int argc, char **argv) {
    static const struct option lo[] = {{"model", 1, 0, 'm'}, {"ids", 1, 0, 'i'}, {"output", 1, 0, 'o'},
                                       {"backend", 1, 0, 'b'}, {"max-ctx", 1, 0, 'x'},
                                       {"threads", 1, 0, 't'}, {"help", 0, 0, 'h'}, MQ_CLI_KV_LONGOPT, {0, 0, 0, 0}};
    const char *model = NULL, *idstr = NULL, *outp = NULL;
    mq_params prm;
    mq_params_default(&prm);
    prm.load_tokenizer = 0;
    long v;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":m:o:h", lo, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 'i': idstr = optarg; break;
        case 'o': outp = optarg; break;
        case 'b': if (mq_cli_backend("logits", optarg)) return MQ_EXIT_USAGE;
                  prm.backend = optarg; break;
        case MQ_CLI_KV: prm.kv_type = optarg; break;
        case 'x': if (mq_cli_int("logits", "--max-ctx", optarg, 1, 1 << 24, &v)) return MQ_EXIT_USAGE;
                  prm.max_ctx = (int)v; break;
        case 't': if (mq_cli_int("logits", "--threads", optarg, 0, 1024, &v)) return MQ_EXIT_USAGE;
                  prm.n_threads = (int)v; break;
        case 'h': fputs(logits_help, stdout); return MQ_EXIT_OK;
        case ':': mq_cli_err("logits", "option %s needs a value", argv[optind - 1]); return MQ_EXIT_USAGE;
        default: mq_cli_err("logits", "unknown option %s (see --help)", argv[optind - 1]); return MQ_EXIT_USAGE;
        }
    }
    if (optind < argc || !model || !idstr || !outp) {
        mq_cli_err("logits", "-m DIR, --ids IDS and -o FILE are required (see --help)");
        return MQ_EXIT_USAGE;
    }
    int32_t *ids;
    size_t n;
    if (mq_cli_parse_ids(idstr, &ids, &n)) {
        mq_cli_err("logits", "bad --ids '%s' (want comma-separated non-negative integers)", idstr);
        return MQ_EXIT_USAGE;
    }
    int rc = MQ_EXIT_ERR;
    float *lg = NULL;
    FILE *f = NULL;
    mq_ctx *c = mq_open(model, &prm);
    if (!c) { mq_cli_err("logits", "%s", mq_last_error()); goto done; }
    const mq_info *in = mq_get_info(c);
    if (n > (size_t)in->max_ctx) {
        mq_cli_err("logits", "%zu ids exceed the context of %d (raise --max-ctx, model max %d)", n,
                   in->max_ctx, in->max_pos);
        goto done;
    }
    size_t V = (size_t)in->vocab_size, CH = 256;
    if (!(lg = malloc(CH * V * sizeof *lg))) { mq_cli_err("logits", "out of memory"); goto done; }
    if (!(f = fopen(outp, "wb"))) { mq_cli_err("logits", "%s: %s", outp, strerror(errno)); goto done; }
    /* Chunks bound host memory: T x vocab floats can be gigabytes for long sequences. */
    for (size_t s = 0; s < n; s += CH) {
        size_t m = n - s < CH ? n - s : CH;
        if (mq_feed(c, ids + s, (int)m, lg)) { mq_cli_err("logits", "%s", mq_last_error()); goto done; }
        if (fwrite(lg, sizeof *lg, m * V, f) != m * V) { mq_cli_err("logits", "%s: write failed", outp); goto done; }
    }
    if (fclose(f)) { f = NULL; mq_cli_err("logits", "%s: write failed", outp); goto done; }
    f = NULL;
    fprintf(stderr, "[%s] wrote %zu x %zu float32 logits to %s\n", in->backend, n, V, outp);
    rc = MQ_EXIT_OK;
done:
    if (f) fclose(f);
    free(lg);
    free(ids);
    mq_close(c);
    return rc;
}
