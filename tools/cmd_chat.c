/* cmd_chat: placeholder until its issue lands — exits 1 with a clear line. */
#include "cmd.h"
int cmd_chat(int argc, char **argv) {
    (void)argc; (void)argv;
    mq_cli_err("chat", "not built yet");
    return MQ_EXIT_ERR;
}
