/* cmd_serve: `megaqwen serve` — argument parsing for the OpenAI-compatible HTTP server (src/server.c). */
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "server.h"

static const char *serve_help =
    "usage: megaqwen serve -m DIR [options]\n"
    "  -m, --model DIR       checkpoint directory (config.json, *.safetensors, tokenizer.json)\n"
    "      --host ADDR       address to bind (default 127.0.0.1: this machine only)\n"
    "      --port N          TCP port (default 8080; 0 = any free port, printed on stderr)\n"
    "      --backend B       auto | cpu | cuda (default auto)\n"
    MQ_CLI_KV_HELP
    "      --max-ctx N       KV cache positions (default min(model max, 4096))\n"
    "      --threads N       CPU threads (default: all cores)\n"
    "      --api-key KEY     require 'Authorization: Bearer KEY' on /v1/ endpoints\n"
    "      --api-key-file F  the same, key read from the first line of file F\n"
    "      --queue N         requests that may wait behind the running one (default 64); past it: 503\n"
    "      --max-body BYTES  request body limit (default 4194304); past it: 413\n"
    "      --timeout S       idle / slow-client timeout in seconds (default 30)\n"
    "      --max-conn N      simultaneous connections (default 256)\n"
    "      --name NAME       model id in /v1/models and responses (default: the directory's name)\n"
    "      --reasoning-parser qwen3\n"
    "                        chat replies' <think> ... </think> as message.reasoning_content (as vLLM's)\n"
    "  -q, --quiet           no per-request log lines\n"
    "Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health.\n";

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

int cmd_serve(int argc, char **argv) {
    static const struct option lo[] = {
        {"model", 1, 0, 'm'}, {"host", 1, 0, 'H'}, {"port", 1, 0, 'p'}, {"backend", 1, 0, 'b'},
        {"max-ctx", 1, 0, 'x'}, {"threads", 1, 0, 't'}, {"api-key", 1, 0, 'k'}, {"api-key-file", 1, 0, 'K'},
        {"queue", 1, 0, 'Q'}, {"max-body", 1, 0, 'B'}, {"timeout", 1, 0, 'T'}, {"max-conn", 1, 0, 'C'},
        {"name", 1, 0, 'N'}, {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {"reasoning-parser", 1, 0, 'R'},
        MQ_CLI_KV_LONGOPT, {0, 0, 0, 0}};
    const char *model = NULL, *key = NULL, *key_file = NULL;
    mq_params prm;
    mq_params_default(&prm);
    mq_srv_opts so;
    mq_srv_opts_default(&so);
    long v;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":m:qh", lo, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 'H': so.host = optarg; break;
        case 'p': if (mq_cli_int("serve", "--port", optarg, 0, 65535, &v)) return MQ_EXIT_USAGE;
                  so.port = (int)v; break;
        case 'b': prm.backend = optarg; break;
        case MQ_CLI_KV: prm.kv_type = optarg; break;
        case 'x': if (mq_cli_int("serve", "--max-ctx", optarg, 1, 1 << 24, &v)) return MQ_EXIT_USAGE;
                  prm.max_ctx = (int)v; break;
        case 't': if (mq_cli_int("serve", "--threads", optarg, 0, 1024, &v)) return MQ_EXIT_USAGE;
                  prm.n_threads = (int)v; break;
        case 'k': key = optarg; break;
        case 'K': key_file = optarg; break;
        case 'Q': if (mq_cli_int("serve", "--queue", optarg, 0, 100000, &v)) return MQ_EXIT_USAGE;
                  so.queue = (int)v; break;
        case 'B': if (mq_cli_int("serve", "--max-body", optarg, 1024, 1L << 30, &v)) return MQ_EXIT_USAGE;
                  so.max_body = (size_t)v; break;
        case 'T': if (mq_cli_int("serve", "--timeout", optarg, 1, 86400, &v)) return MQ_EXIT_USAGE;
                  so.timeout_s = (int)v; break;
        case 'C': if (mq_cli_int("serve", "--max-conn", optarg, 1, 10000, &v)) return MQ_EXIT_USAGE;
                  so.max_conn = (int)v; break;
        case 'N': so.model_name = optarg; break;
        case 'q': so.quiet = 1; break;
        case 'R':
            if (strcmp(optarg, "qwen3")) {
                mq_cli_err("serve", "--reasoning-parser '%s' is not known (want qwen3)", optarg);
                return MQ_EXIT_USAGE;
            }
            so.reasoning = 1;
            break;
        case 'h': fputs(serve_help, stdout); return MQ_EXIT_OK;
        case ':': mq_cli_err("serve", "option %s needs a value", argv[optind - 1]); return MQ_EXIT_USAGE;
        default: mq_cli_err("serve", "unknown option %s (see --help)", argv[optind - 1]); return MQ_EXIT_USAGE;
        }
    }
    if (optind < argc) { mq_cli_err("serve", "unexpected argument '%s'", argv[optind]); return MQ_EXIT_USAGE; }
    if (!model) { mq_cli_err("serve", "-m DIR is required (see --help)"); return MQ_EXIT_USAGE; }
    if (key && key_file) { mq_cli_err("serve", "give --api-key or --api-key-file, not both"); return MQ_EXIT_USAGE; }
    if (key && !*key) { mq_cli_err("serve", "--api-key must not be empty"); return MQ_EXIT_USAGE; }

    char *file_key = NULL;
    if (key_file) {
        size_t len;
        if (!(file_key = mq_cli_read_file(key_file, &len))) return MQ_EXIT_ERR;
        file_key[strcspn(file_key, "\r\n")] = 0;
        if (!*file_key) { mq_cli_err("serve", "%s: the API key file is empty", key_file); free(file_key); return MQ_EXIT_ERR; }
        key = file_key;
    }
    so.api_key = key;

    /* Default model id: the checkpoint directory's last path component. */
    char name[256];
    if (so.model_name == NULL || !strcmp(so.model_name, "megaqwen")) {
        size_t l = strlen(model);
        while (l > 1 && model[l - 1] == '/') l--;
        size_t b = l;
        while (b > 0 && model[b - 1] != '/') b--;
        snprintf(name, sizeof name, "%.*s", (int)(l - b), model + b);
        if (name[0] && strcmp(name, ".") && strcmp(name, "..")) so.model_name = name;
    }

    mq_ctx *c = mq_open(model, &prm);
    if (!c) { mq_cli_err("serve", "%s", mq_last_error()); free(file_key); return MQ_EXIT_ERR; }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client that vanishes must not kill the server */
    so.stop = &g_stop;
    int rc = mq_srv_run(c, &so);
    if (rc) mq_cli_err("serve", "%s", mq_last_error());
    mq_close(c);
    free(file_key);
    return rc ? MQ_EXIT_ERR : MQ_EXIT_OK;
}
