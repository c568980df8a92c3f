/* cmd_bench: placeholder until its issue lands — exits 1 with a clear line. */
#include "cmd.h"
int cmd_bench(int argc, char **argv) {
    (void)argc; (void)argv;
    mq_cli_err("bench", "not built yet");
    return MQ_EXIT_ERR;
}
