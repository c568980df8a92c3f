/* cmd_run: placeholder until its issue lands — exits 1 with a clear line. */
#include "cmd.h"
int cmd_run(int argc, char **argv) {
    (void)argc; (void)argv;
    mq_cli_err("run", "not built yet");
    return MQ_EXIT_ERR;
}
