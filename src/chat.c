/* chat: Qwen3 ChatML, rendered as the Qwen3 checkpoints' chat_template (tokenizer_config.json) does. */
#include "chat.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "sbuf.h"
#include "pyjson.h"

/*
 * This mirrors the Jinja template shipped in Qwen3's tokenizer_config.json for messages without
 * tools (tests/data/tok/chat_ref.jsonl holds HF apply_chat_template's output to compare with):
 *   - a first "system" message: "<|im_start|>system\n" + content + "<|im_end|>\n";
 *   - user (and later system) turns: "<|im_start|>ROLE\n" + content + "<|im_end|>\n";
 *   - assistant turns: a "<think>...</think>" part of the content is split off as reasoning;
 *     only assistant turns after the last real user query keep it (rendered as
 *     "<think>\n" + reasoning + "\n</think>\n\n" + answer; the final assistant turn always gets
 *     the block, empty if need be); earlier turns show only the answer;
 *   - tool turns: wrapped in <tool_response> inside a user turn, consecutive ones merged;
 *   - the generation prompt "<|im_start|>assistant\n", plus "<think>\n\n</think>\n\n" when
 *     enable_thinking is false.
 * and with tools (tests/data/tok/chat_tools_ref.jsonl, scripts/ref/chat_tools_ref.py):
 *   - a system turn that opens with the first system message's content + "\n\n" (if any), then the
 *     "# Tools" text with each tool as Jinja's tojson writes it (Python's json.dumps: ", " and ": "
 *     separators, keys in their order, non-ASCII as is) on a line of its own;
 *   - an assistant turn's tool_calls after its content, each "<tool_call>\n{"name": "NAME",
 *     "arguments": ARGS}\n</tool_call>" (ARGS through tojson; a JSON string is parsed first, as
 *     vLLM does before rendering),
 *     separated by "\n" (also from the content, when there is content).
 */

/* Python's str.strip/lstrip/rstrip('\n') on [*s, *s + *n). */
static void lstrip_nl(const char **s, size_t *n) { while (*n && **s == '\n') { (*s)++; (*n)--; } }
static void rstrip_nl(const char **s, size_t *n) { (void)s; while (*n && (*s)[*n - 1] == '\n') (*n)--; }

/* Last occurrence of needle in [s, s+n), NULL if none. */
static const char *find_last(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    if (k > n) return NULL;
    for (size_t i = n - k + 1; i-- > 0;)
        if (!memcmp(s + i, needle, k)) return s + i;
    return NULL;
}

/* An assistant message's tool_calls (a JSON array of OpenAI tool calls, or of {name, arguments}),
 * rendered after its content; content_set: the content is not empty. 0, or -1 with mq_err set. */
static int put_tool_calls(mq_sbuf *b, int idx, const char *json, int content_set) {
    cJSON *a = cJSON_Parse(json);
    if (!cJSON_IsArray(a)) {
        cJSON_Delete(a);
        mq_err_set("chat message %d: tool_calls is not a JSON array", idx);
        return -1;
    }
    const cJSON *it;
    int k = 0;
    cJSON_ArrayForEach(it, a) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(it, "function");
        const cJSON *tc = f && !cJSON_IsNull(f) ? f : it; /* {function: {name, arguments}} or {name, arguments} */
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(tc, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(tc, "arguments");
        if (!cJSON_IsString(name) || !args) {
            cJSON_Delete(a);
            mq_err_set("chat message %d: tool call %d needs a string name and arguments", idx, k);
            return -1;
        }
        if (k > 0 || content_set) mq_sbuf_put(b, "\n", 1);
        mq_sbuf_puts(b, "<tool_call>\n{\"name\": \"");
        mq_sbuf_puts(b, name->valuestring);
        mq_sbuf_puts(b, "\", \"arguments\": ");
        /* An OpenAI client sends arguments as a JSON string: like vLLM (which json.loads it before
         * the template's tojson), it is written as Python writes that JSON value, {} when empty;
         * a string that is not JSON goes in as it is (transformers' behaviour for strings). */
        cJSON *parsed = NULL;
        if (cJSON_IsString(args)) {
            const char *pe = NULL, *sv = args->valuestring;
            parsed = sv[0] ? cJSON_ParseWithOpts(sv, &pe, 1) : cJSON_CreateObject();
        }
        if (cJSON_IsString(args) && !parsed) {
            mq_sbuf_puts(b, args->valuestring);
        } else {
            char *j = mq_pyjson(parsed ? parsed : args);
            if (!j) b->oom = 1;
            else mq_sbuf_puts(b, j);
            free(j);
        }
        cJSON_Delete(parsed);
        mq_sbuf_puts(b, "}\n</tool_call>");
        k++;
    }
    cJSON_Delete(a);
    return 0;
}

static int is_tool_response(const char *c) {
    static const char *open = "<tool_response>", *close = "</tool_response>";
    size_t n = strlen(c), a = strlen(open), b = strlen(close);
    return n >= a && n >= b && !strncmp(c, open, a) && !strcmp(c + n - b, close);
}

char *mq_chat_format(const mq_chat_msg *msgs, int n, int add_generation_prompt, int enable_thinking) {
    return mq_chat_format_tools(msgs, n, NULL, add_generation_prompt, enable_thinking);
}

char *mq_chat_format_tools(const mq_chat_msg *msgs, int n, const char *tools, int add_generation_prompt,
                           int enable_thinking) {
    for (int i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        if (!r || (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "tool"))) {
            mq_err_set("chat message %d: unknown role '%s' (want system, user, assistant or tool)", i,
                       r ? r : "(null)");
            return NULL;
        }
        if (!msgs[i].content) {
            mq_err_set("chat message %d (%s): no content", i, r);
            return NULL;
        }
    }
    cJSON *tl = NULL;
    if (tools) {
        tl = cJSON_Parse(tools);
        if (!cJSON_IsArray(tl)) {
            cJSON_Delete(tl);
            mq_err_set("chat: tools is not a JSON array");
            return NULL;
        }
    }
    mq_sbuf b = {0};
    mq_sbuf_put(&b, "", 0); /* an empty prompt is still a string */
    if (tl && cJSON_GetArraySize(tl) > 0) { /* (an empty list is false to the template) */
        mq_sbuf_puts(&b, "<|im_start|>system\n");
        if (n > 0 && !strcmp(msgs[0].role, "system")) {
            mq_sbuf_puts(&b, msgs[0].content);
            mq_sbuf_puts(&b, "\n\n");
        }
        mq_sbuf_puts(&b, "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                  "You are provided with function signatures within <tools></tools> XML tags:\n<tools>");
        const cJSON *t;
        cJSON_ArrayForEach(t, tl) {
            char *j = mq_pyjson(t);
            mq_sbuf_put(&b, "\n", 1);
            if (!j) b.oom = 1;
            else mq_sbuf_puts(&b, j);
            free(j);
        }
        mq_sbuf_puts(&b, "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
                  "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
                  "\"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n");
    } else if (n > 0 && !strcmp(msgs[0].role, "system")) {
        mq_sbuf_puts(&b, "<|im_start|>system\n");
        mq_sbuf_puts(&b, msgs[0].content);
        mq_sbuf_puts(&b, "<|im_end|>\n");
    }
    cJSON_Delete(tl);
    /* the last user message that is not a wrapped tool response: reasoning is kept after it */
    int last_query = n - 1;
    for (int i = n - 1; i >= 0; i--)
        if (!strcmp(msgs[i].role, "user") && !is_tool_response(msgs[i].content)) { last_query = i; break; }

    for (int i = 0; i < n; i++) {
        const char *role = msgs[i].role, *c = msgs[i].content;
        if (!strcmp(role, "user") || (!strcmp(role, "system") && i > 0)) {
            mq_sbuf_puts(&b, "<|im_start|>");
            mq_sbuf_puts(&b, role);
            mq_sbuf_puts(&b, "\n");
            mq_sbuf_puts(&b, c);
            mq_sbuf_puts(&b, "<|im_end|>\n");
        } else if (!strcmp(role, "assistant")) {
            const char *ans = c, *rs = "";
            size_t an = strlen(c), rn = 0;
            const char *end_think = strstr(c, "</think>");
            if (end_think) {
                /* content.split('</think>')[-1].lstrip('\n') */
                const char *last = find_last(c, an, "</think>");
                ans = last + strlen("</think>");
                an = strlen(ans);
                lstrip_nl(&ans, &an);
                /* content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
                rs = c;
                rn = (size_t)(end_think - c);
                rstrip_nl(&rs, &rn);
                const char *open = find_last(rs, rn, "<think>");
                if (open) {
                    rn -= (size_t)(open + strlen("<think>") - rs);
                    rs = open + strlen("<think>");
                }
                lstrip_nl(&rs, &rn);
            }
            const int content_set = an > 0; /* the template tests `content` before its lstrip below */
            mq_sbuf_puts(&b, "<|im_start|>assistant\n");
            if (i > last_query && (i == n - 1 || rn > 0)) {
                const char *r2 = rs;
                size_t r2n = rn;
                lstrip_nl(&r2, &r2n);
                rstrip_nl(&r2, &r2n);
                lstrip_nl(&ans, &an);
                mq_sbuf_puts(&b, "<think>\n");
                mq_sbuf_put(&b, r2, r2n);
                mq_sbuf_puts(&b, "\n</think>\n\n");
            }
            mq_sbuf_put(&b, ans, an);
            if (msgs[i].tool_calls && put_tool_calls(&b, i, msgs[i].tool_calls, content_set)) {
                free(b.p);
                return NULL;
            }
            mq_sbuf_puts(&b, "<|im_end|>\n");
        } else if (!strcmp(role, "tool")) {
            if (i == 0 || strcmp(msgs[i - 1].role, "tool")) mq_sbuf_puts(&b, "<|im_start|>user");
            mq_sbuf_puts(&b, "\n<tool_response>\n");
            mq_sbuf_puts(&b, c);
            mq_sbuf_puts(&b, "\n</tool_response>");
            if (i == n - 1 || strcmp(msgs[i + 1].role, "tool")) mq_sbuf_puts(&b, "<|im_end|>\n");
        }
        /* a first system message was rendered above */
    }
    if (add_generation_prompt) {
        mq_sbuf_puts(&b, "<|im_start|>assistant\n");
        if (!enable_thinking) mq_sbuf_puts(&b, "<think>\n\n</think>\n\n");
    }
    if (b.oom) {
        free(b.p);
        mq_err_set("chat: out of memory");
        return NULL;
    }
    return b.p;
}
