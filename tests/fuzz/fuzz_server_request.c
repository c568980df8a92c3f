/* fuzz_server_request: libFuzzer target for the OpenAI request parser (mq_oai_parse), both endpoints. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "oai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one(mq_oai_kind kind, const char *body, size_t len) {
    mq_oai_req r;
    mq_oai_err e;
    memset(&r, 0, sizeof r);
    memset(&e, 0, sizeof e);
    int rc = mq_oai_parse(kind, body, len, &r, &e);
    if (rc < 0) {
        /* The error path must describe itself: an HTTP 4xx/5xx status, a type and a message. */
        if (e.msg[0] == 0 || e.status < 400 || e.status > 599 || !e.type) __builtin_trap();
        char *j = mq_oai_error_json(&e);
        if (!j) __builtin_trap();
        free(j);
        return;
    }
    if (rc != 0 || r.kind != kind) __builtin_trap();
    /* Accepted requests must satisfy what the server relies on. */
    if (kind == MQ_OAI_CHAT && (r.n_msgs <= 0 || !r.msgs)) __builtin_trap();
    if (kind == MQ_OAI_COMPLETION && !r.prompt && !r.prompt_ids) __builtin_trap();
    if (r.n_stop < 0 || r.n_stop > MQ_OAI_MAX_STOP) __builtin_trap();
    for (int i = 0; i < r.n_stop; i++)
        if (!r.stop[i] || !r.stop[i][0]) __builtin_trap();
    /* logprobs: a flag and 0..20 alternatives (the server indexes fixed arrays with it); max_tokens
     * 0 only with echo, which only completions take */
    if ((r.logprobs != 0 && r.logprobs != 1) || r.top_logprobs < 0 || r.top_logprobs > MQ_TOP_LOGPROBS_MAX) __builtin_trap();
    if (r.top_logprobs && !r.logprobs) __builtin_trap();
    if (r.max_tokens == 0 && !r.echo) __builtin_trap();
    if (r.echo && kind != MQ_OAI_COMPLETION) __builtin_trap();
    mq_oai_req_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Copy into an exact-size heap buffer (no NUL) so ASan catches any read past body+len. */
    char *b = malloc(size ? size : 1);
    if (!b) return 0;
    if (size) memcpy(b, data, size);
    one(MQ_OAI_CHAT, b, size);
    one(MQ_OAI_COMPLETION, b, size);
    free(b);
    return 0;
}
