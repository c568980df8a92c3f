/* chat: Qwen3 ChatML formatting as the checkpoint's chat template produces it. */
#ifndef MQ_CHAT_H
#define MQ_CHAT_H
#include "megaqwen.h"

/* Returns a malloc'd prompt string, or NULL (mq_err) for an unknown role. */
char *mq_chat_format(const mq_chat_msg *msgs, int n, int add_generation_prompt, int enable_thinking);
/* The same with tools: a JSON array of OpenAI tool definitions (NULL or [] for none), listed in the
 * system turn as the template does; assistant messages' tool_calls are rendered either way. NULL
 * (mq_err) for a malformed tools or tool_calls. */
char *mq_chat_format_tools(const mq_chat_msg *msgs, int n, const char *tools, int add_generation_prompt,
                           int enable_thinking);

#endif
