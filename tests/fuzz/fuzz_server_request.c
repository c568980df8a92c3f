/* fuzz_server_request: libFuzzer target for the OpenAI request parser (mq_oai_parse), both endpoints,
 * and for the readers of model output (tool calls, the streamed tool-call and thinking splits). */
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
    if (r.n_stop_ids < 0 || r.n_stop_ids > MQ_OAI_MAX_STOP_IDS) __builtin_trap();
    for (int i = 0; i < r.n_stop_ids; i++)
        if (r.stop_ids[i] < 0) __builtin_trap();
    if (r.parse_calls && !r.tools) __builtin_trap();
    if (!(r.presence_penalty >= -2 && r.presence_penalty <= 2) || !(r.frequency_penalty >= -2 && r.frequency_penalty <= 2))
        __builtin_trap();
    mq_oai_req_free(&r);
}

/* The bytes as a model's reply: the parsed tool calls stay inside it, and the streamed splits
 * (fed in uneven pieces) hand every byte on exactly once. */
static void reply(const char *b, size_t n) {
    mq_oai_call *calls;
    size_t clen;
    int k = mq_oai_tool_calls(b, n, "f", &calls, &clen);
    if (k < 0 || clen > n || (k == 0 && (calls || clen != n))) __builtin_trap();
    for (int i = 0; i < k; i++)
        if (!calls[i].id || !calls[i].name || !calls[i].arguments) __builtin_trap();
    mq_oai_calls_free(calls, k);

    mq_oai_toolscan ts = {0};
    mq_oai_thinkscan th = {0};
    mq_oai_buf emit = {0}, r = {0}, c = {0};
    size_t at = 0, step = 1;
    while (at < n) {
        size_t m = n - at < step ? n - at : step;
        if (mq_oai_toolscan_feed(&ts, b + at, m, &emit) || mq_oai_thinkscan_feed(&th, b + at, m, &r, &c)) __builtin_trap();
        at += m;
        step = step * 3 % 7 + 1;
    }
    if (emit.n + ts.held.n + ts.call.n != n) __builtin_trap();
    if (mq_oai_thinkscan_flush(&th, &r, &c)) __builtin_trap();
    /* the thinking split drops at most its two tags */
    if (r.n + c.n > n || r.n + c.n + strlen("<think>") + strlen("</think>") < n) __builtin_trap();
    size_t ra, rl, ca;
    if (mq_oai_split_reasoning(b, n, &ra, &rl, &ca) && (ra + rl > n || ca > n || ca < ra + rl)) __builtin_trap();
    mq_oai_toolscan_free(&ts);
    mq_oai_thinkscan_free(&th);
    mq_oai_buf_free(&emit);
    mq_oai_buf_free(&r);
    mq_oai_buf_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Copy into an exact-size heap buffer (no NUL) so ASan catches any read past body+len. */
    char *b = malloc(size ? size : 1);
    if (!b) return 0;
    if (size) memcpy(b, data, size);
    one(MQ_OAI_CHAT, b, size);
    one(MQ_OAI_COMPLETION, b, size);
    reply(b, size);
    free(b);
    return 0;
}
