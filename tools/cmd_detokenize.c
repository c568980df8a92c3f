/* cmd_detokenize: `megaqwen detokenize` — print the text of comma-separated token ids. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include "cmd.h"
#include "err.h"
#include "tokenizer.h"

static const char *detok_help =
    "usage: megaqwen detokenize -m DIR --ids 1,2,3\n"
    "  -m, --model DIR   directory with tokenizer.json (a checkpoint or tokenizer folder)\n"
    "      --ids IDS     comma-separated token ids\n"
    "Prints the decoded text (special tokens included) and a newline; bytes that do not form\n"
    "valid UTF-8 print as U+FFFD, as HF's decode does.\n";

int cmd_detokenize(int argc, char **argv) {
    static const struct option lo[] = {{"model", 1, 0, 'm'}, {"ids", 1, 0, 'i'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *sids = NULL;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":m:h", lo, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 'i': sids = optarg; break;
        case 'h': fputs(detok_help, stdout); return MQ_EXIT_OK;
        case ':': mq_cli_err("detokenize", "option %s needs a value", argv[optind - 1]); return MQ_EXIT_USAGE;
        default: mq_cli_err("detokenize", "unknown option %s (see --help)", argv[optind - 1]); return MQ_EXIT_USAGE;
        }
    }
    if (optind < argc) { mq_cli_err("detokenize", "unexpected argument '%s'", argv[optind]); return MQ_EXIT_USAGE; }
    if (!model || !sids) { mq_cli_err("detokenize", "-m DIR and --ids IDS are required (see --help)"); return MQ_EXIT_USAGE; }
    int32_t *ids;
    size_t n;
    if (mq_cli_parse_ids(sids, &ids, &n)) {
        mq_cli_err("detokenize", "bad --ids '%s' (want comma-separated non-negative integers)", sids);
        return MQ_EXIT_USAGE;
    }
    mq_tok *t = mq_tok_load(model);
    if (!t) { mq_cli_err("detokenize", "%s", mq_err_get()); free(ids); return MQ_EXIT_ERR; }
    char *out;
    size_t len;
    int rc = MQ_EXIT_ERR;
    if (mq_tok_decode(t, ids, n, &out, &len)) {
        mq_cli_err("detokenize", "%s", mq_err_get());
    } else {
        fwrite(out, 1, len, stdout);
        fputc('\n', stdout);
        free(out);
        rc = MQ_EXIT_OK;
    }
    mq_tok_free(t);
    free(ids);
    return rc;
}
