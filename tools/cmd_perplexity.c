/* cmd_perplexity: placeholder until its issue lands — exits 1 with a clear line. */
#include "cmd.h"
int cmd_perplexity(int argc, char **argv) {
    (void)argc; (void)argv;
    mq_cli_err("perplexity", "not built yet");
    return MQ_EXIT_ERR;
}
