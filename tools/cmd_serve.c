/* cmd_serve: placeholder until its issue lands — exits 1 with a clear line. */
#include "cmd.h"
int cmd_serve(int argc, char **argv) {
    (void)argc; (void)argv;
    mq_cli_err("serve", "not built yet");
    return MQ_EXIT_ERR;
}
