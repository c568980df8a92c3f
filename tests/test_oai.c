/* test_oai: the OpenAI layer without a server: tool-call parsing and streaming split, response and
 * chunk shapes with tool calls and logprobs, request validation of tools / tool_calls / logprobs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include "oai.h"

static int calls_of(const char *text, mq_oai_call **c, size_t *clen) {
    return mq_oai_tool_calls(text, strlen(text), "x1", c, clen);
}

/* As vLLM's hermes parser: blocks -> calls (arguments re-serialized as Python's json.dumps), the
 * text before the first block is the content, anything malformed leaves it all content. */
static void test_tool_calls_parse(void **st) {
    (void)st;
    mq_oai_call *c;
    size_t clen;
    const char *one = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Zürich\",\"n\":[1,2.5]}}\n</tool_call>";
    assert_int_equal(calls_of(one, &c, &clen), 1);
    assert_int_equal(clen, strlen("Let me check.\n"));
    assert_string_equal(c[0].name, "get_weather");
    assert_string_equal(c[0].arguments, "{\"city\": \"Zürich\", \"n\": [1, 2.5]}");
    assert_string_equal(c[0].id, "call_x1_0");
    mq_oai_calls_free(c, 1);
    /* two blocks, the second unclosed (generation stopped): both; text between them is dropped */
    const char *two = "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": \"s\"}";
    assert_int_equal(calls_of(two, &c, &clen), 2);
    assert_int_equal(clen, 0);
    assert_string_equal(c[0].arguments, "{}");
    assert_string_equal(c[1].name, "b");
    assert_string_equal(c[1].arguments, "\"s\""); /* a string argument stays a JSON string */
    assert_string_equal(c[1].id, "call_x1_1");
    mq_oai_calls_free(c, 2);
    /* a number past double's range: Python reads inf and writes Infinity (no crash) */
    assert_int_equal(calls_of("<tool_call>{\"name\": \"f\", \"arguments\": {\"x\": -1e999}}</tool_call>x", &c, &clen), 1);
    assert_string_equal(c[0].arguments, "{\"x\": -Infinity}");
    mq_oai_calls_free(c, 1);
    /* no block; a block that is not JSON; no name; no arguments; a list: all content, no calls */
    const char *none[] = {"plain answer", "<tool_call>\n{not json}\n</tool_call>",
                          "<tool_call>{\"arguments\": {}}</tool_call>", "<tool_call>{\"name\": \"f\"}</tool_call>",
                          "<tool_call>[1]</tool_call>", "<tool_call>{\"name\": \"f\", \"arguments\": {}} extra</tool_call>",
                          "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": \"tab\there\"}}</tool_call>",
                          "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call><tool_call>oops</tool_call>"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        assert_int_equal(calls_of(none[i], &c, &clen), 0);
        assert_null(c);
        assert_int_equal(clen, strlen(none[i]));
    }
}

/* The streamed split: content up to "<tool_call>" (a tag cut across feeds included), nothing after. */
static void test_toolscan(void **st) {
    (void)st;
    const char *parts[] = {"Sure", ", calling <", "tool", "_ca", "ll>\n{\"name\"", ": \"f\", \"arguments\": {}}\n</tool_call>"};
    mq_oai_toolscan t = {0};
    mq_oai_buf out = {0};
    for (size_t i = 0; i < 6; i++) assert_int_equal(mq_oai_toolscan_feed(&t, parts[i], strlen(parts[i]), &out), 0);
    assert_int_equal(t.in_call, 1);
    assert_memory_equal(out.p, "Sure, calling ", out.n);
    assert_int_equal(out.n, strlen("Sure, calling "));
    assert_memory_equal(t.call.p, "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>", t.call.n);
    mq_oai_toolscan_free(&t);
    /* a "<" that does not become the tag is released when the next text shows it */
    mq_oai_buf_free(&out);
    assert_int_equal(mq_oai_toolscan_feed(&t, "a <tool", 7, &out), 0);
    assert_int_equal(out.n, 2);
    assert_int_equal(mq_oai_toolscan_feed(&t, "s> b", 4, &out), 0);
    assert_int_equal(t.in_call, 0);
    assert_memory_equal(out.p, "a <tools> b", out.n);
    assert_int_equal(out.n, 11);
    mq_oai_toolscan_free(&t);
    mq_oai_buf_free(&out);
}

static cJSON *choice0(char *js) {
    cJSON *o = cJSON_Parse(js);
    assert_non_null(o);
    free(js);
    return o;
}

static void test_response_shapes(void **st) {
    (void)st;
    mq_oai_call c[2] = {{"call_a_0", "f", "{\"x\": 1}"}, {"call_a_1", "g", "{}"}};
    mq_oai_usage u = {5, 7, 0};
    mq_oai_reply r = {.text = "", .finish = "tool_calls", .usage = &u, .calls = c, .n_calls = 2};
    cJSON *o = choice0(mq_oai_response_json(MQ_OAI_CHAT, "chatcmpl-a", 1, "m", &r, 1));
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), *m = cJSON_GetObjectItem(ch, "message");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(m, "content")));
    assert_string_equal(cJSON_GetObjectItem(ch, "finish_reason")->valuestring, "tool_calls");
    const cJSON *tc = cJSON_GetObjectItem(m, "tool_calls");
    assert_int_equal(cJSON_GetArraySize(tc), 2);
    const cJSON *t1 = cJSON_GetArrayItem(tc, 1);
    assert_string_equal(cJSON_GetObjectItem(t1, "id")->valuestring, "call_a_1");
    assert_string_equal(cJSON_GetObjectItem(t1, "type")->valuestring, "function");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(t1, "function"), "name")->valuestring, "g");
    assert_null(cJSON_GetObjectItem(t1, "index")); /* index only in stream deltas */
    cJSON_Delete(o);
    /* content kept beside the calls */
    r.text = "Checking.";
    r.len = 9;
    r.n_calls = 1;
    o = choice0(mq_oai_response_json(MQ_OAI_CHAT, "chatcmpl-a", 1, "m", &r, 1));
    m = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "message");
    assert_string_equal(cJSON_GetObjectItem(m, "content")->valuestring, "Checking.");
    cJSON_Delete(o);
    /* the stream's tool-call chunk */
    char *ev = mq_oai_calls_sse("chatcmpl-a", 1, "m", 0, c, 2, 0);
    assert_non_null(ev);
    assert_memory_equal(ev, "data: {", 7);
    o = choice0(strndup(ev + 6, strlen(ev) - 8));
    free(ev);
    const cJSON *d = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "delta");
    tc = cJSON_GetObjectItem(d, "tool_calls");
    assert_int_equal(cJSON_GetArrayItem(tc, 1)->child->valueint, 1); /* "index" first */
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(tc, 0), "function"), "arguments")->valuestring,
                        "{\"x\": 1}");
    cJSON_Delete(o);
}

/* Qwen3's thinking: a finished reply split as vLLM's qwen3 parser splits it, and the streamed split. */
static void test_reasoning(void **st) {
    (void)st;
    size_t ra, rl, ca;
    const char *r1 = "<think>\nLet me see.\n</think>\n\nIt is 4.";
    assert_int_equal(mq_oai_split_reasoning(r1, strlen(r1), &ra, &rl, &ca), 1);
    assert_int_equal(rl, strlen("\nLet me see.\n"));
    assert_memory_equal(r1 + ra, "\nLet me see.\n", rl);
    assert_string_equal(r1 + ca, "\n\nIt is 4.");
    const char *r2 = "no tags at all", *r3 = "<think>never closed", *r4 = "</think> then <think>x";
    assert_int_equal(mq_oai_split_reasoning(r2, strlen(r2), &ra, &rl, &ca), 0);
    assert_int_equal(ca, 0);
    assert_int_equal(mq_oai_split_reasoning(r3, strlen(r3), &ra, &rl, &ca), 0);
    assert_int_equal(ca, 0);
    assert_int_equal(mq_oai_split_reasoning(r4, strlen(r4), &ra, &rl, &ca), 0);
    assert_string_equal(r4 + ca, "x"); /* vLLM: the text after the <think>, the tag dropped */

    /* streamed, tags cut across feeds */
    const char *parts[] = {"<th", "ink>\nhmm", " </th", "ink>", "\n\nThe answer"};
    mq_oai_thinkscan t = {0};
    mq_oai_buf r = {0}, c = {0};
    for (int i = 0; i < 5; i++) assert_int_equal(mq_oai_thinkscan_feed(&t, parts[i], strlen(parts[i]), &r, &c), 0);
    assert_int_equal(mq_oai_thinkscan_flush(&t, &r, &c), 0);
    assert_int_equal(r.n, strlen("\nhmm "));
    assert_memory_equal(r.p, "\nhmm ", r.n);
    assert_int_equal(c.n, strlen("\n\nThe answer"));
    assert_memory_equal(c.p, "\n\nThe answer", c.n);
    mq_oai_thinkscan_free(&t);
    r.n = c.n = 0;
    /* a reply that does not open with <think> is all content, a "<" included */
    assert_int_equal(mq_oai_thinkscan_feed(&t, "<", 1, &r, &c), 0);
    assert_int_equal(c.n, 0); /* (could still be the tag) */
    assert_int_equal(mq_oai_thinkscan_feed(&t, "b>old</think>", 13, &r, &c), 0);
    assert_int_equal(r.n, 0);
    assert_memory_equal(c.p, "<b>old</think>", c.n);
    mq_oai_thinkscan_free(&t);
    /* unfinished thinking (the length ran out) stays thinking */
    r.n = c.n = 0;
    assert_int_equal(mq_oai_thinkscan_feed(&t, "<think>abc</thi", 15, &r, &c), 0);
    assert_int_equal(mq_oai_thinkscan_flush(&t, &r, &c), 0);
    assert_memory_equal(r.p, "abc</thi", r.n);
    assert_int_equal(c.n, 0);
    mq_oai_thinkscan_free(&t);
    mq_oai_buf_free(&r);
    mq_oai_buf_free(&c);
    /* the response: reasoning_content beside a null content */
    mq_oai_usage u = {1, 2, 0};
    mq_oai_reply rep = {.text = "", .reasoning = "x", .rlen = 1, .finish = "length", .usage = &u};
    cJSON *o = choice0(mq_oai_response_json(MQ_OAI_CHAT, "chatcmpl-a", 1, "m", &rep, 1));
    const cJSON *m = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "message");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(m, "content")));
    assert_string_equal(cJSON_GetObjectItem(m, "reasoning_content")->valuestring, "x");
    cJSON_Delete(o);
}

static int parse(mq_oai_kind k, const char *body, mq_oai_req *r, mq_oai_err *e) {
    return mq_oai_parse(k, body, strlen(body), r, e);
}

/* tools, tool_choice, tool messages and assistant tool_calls as the template and parser need them. */
static void test_request_tools(void **st) {
    (void)st;
    mq_oai_req r;
    mq_oai_err e;
    const char *ok = "{\"messages\":[{\"role\":\"user\",\"content\":\"w?\"},"
                     "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
                     "\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}]},"
                     "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"sunny\"}],"
                     "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{}}}],"
                     "\"tool_choice\":\"auto\",\"parallel_tool_calls\":true}";
    assert_int_equal(parse(MQ_OAI_CHAT, ok, &r, &e), 0);
    assert_int_equal(r.n_msgs, 3);
    assert_string_equal(r.msgs[2].role, "tool");
    assert_string_equal(r.msgs[1].content, "");
    assert_non_null(strstr(r.msgs[1].tool_calls, "\"name\":\"get_weather\""));
    assert_non_null(r.tools);
    assert_int_equal(r.parse_calls, 1);
    mq_oai_req_free(&r);
    assert_int_equal(parse(MQ_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\","
                                        "\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"none\"}", &r, &e), 0);
    assert_non_null(r.tools); /* still in the prompt */
    assert_int_equal(r.parse_calls, 0);
    mq_oai_req_free(&r);
    /* logit_bias: a repeated id takes its last value (a dict's rule), keys are decimal digits only */
    assert_int_equal(parse(MQ_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"5\":1,\"7\":-3,\"05\":2}}", &r, &e), 0);
    assert_int_equal(r.n_bias, 2);
    assert_int_equal(r.bias_ids[0], 5);
    assert_true(r.bias_vals[0] == 2.0f && r.bias_vals[1] == -3.0f);
    mq_oai_req_free(&r);
    const struct { mq_oai_kind k; const char *body, *param, *msg; } bad[] = {
        {MQ_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"+5\":1}}", "logit_bias", "decimal digits"},
        {MQ_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"5\":\"a\"}}", "logit_bias", "[-100, 100]"},
        {MQ_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\"}]}", "tools",
         "function.name must be a non-empty string"},
        {MQ_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"code\",\"function\":{\"name\":\"f\"}}]}",
         "tools", "of type \"function\""},
        {MQ_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":{}}", "tools", "must be an array"},
        {MQ_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"required\"}", "tool_choice",
         "forcing a tool call is not supported"},
        {MQ_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}]}",
         "messages[0].tool_calls", "only assistant messages"},
        {MQ_OAI_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":{}}}]}]}",
         "messages[0].tool_calls", "arguments must be a string"},
        {MQ_OAI_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":\"{oops\"}}]}]}",
         "messages[0].tool_calls", "arguments is not valid JSON"},
        {MQ_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"parallel_tool_calls\":1}", "parallel_tool_calls",
         "must be a boolean"},
        {MQ_OAI_COMPLETION, "{\"prompt\":\"x\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}", "tools",
         "for chat completions"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse(bad[i].k, bad[i].body, &r, &e);
        if (rc != -1 || strcmp(e.param, bad[i].param) || !strstr(e.msg, bad[i].msg))
            print_error("case %zu: rc %d param '%s' msg '%s'\n", i, rc, e.param, e.msg);
        assert_int_equal(rc, -1);
        assert_int_equal(e.status, 400);
        assert_string_equal(e.param, bad[i].param);
        assert_non_null(strstr(e.msg, bad[i].msg));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tool_calls_parse),
        cmocka_unit_test(test_toolscan),
        cmocka_unit_test(test_response_shapes),
        cmocka_unit_test(test_reasoning),
        cmocka_unit_test(test_request_tools),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
