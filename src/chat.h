/* chat: Qwen3 ChatML formatting as the checkpoint's chat template produces it. */
#ifndef MQ_CHAT_H
#define MQ_CHAT_H
#include "megaqwen.h"

/* Returns a malloc'd prompt string, or NULL (mq_err) for an unknown role. */
char *mq_chat_format(const mq_chat_msg *msgs, int n, int add_generation_prompt, int enable_thinking);

#endif
