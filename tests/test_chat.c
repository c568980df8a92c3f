/* test_chat: mq_chat_format against HF apply_chat_template on Qwen3's template (chat_ref.jsonl). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "chat.h"
#include "err.h"
#include "tokenizer.h"
#include "testutil.h"

#define TOKDIR MQ_SOURCE_DIR "/.deps/qwen3-tokenizer"
#define REF MQ_SOURCE_DIR "/tests/data/tok/chat_ref.jsonl"
#define TOOLS_REF MQ_SOURCE_DIR "/tests/data/tok/chat_tools_ref.jsonl"


/* The next case of a reference .jsonl held in buf (first call: buf, then NULL), its meta line
 * skipped; NULL after the last. */
static cJSON *next_case(char *buf, char **save) {
    for (char *line = strtok_r(buf, "\n", save); line; line = strtok_r(NULL, "\n", save)) {
        cJSON *j = cJSON_Parse(line);
        assert_non_null(j);
        if (!cJSON_GetObjectItemCaseSensitive(j, "meta")) return j;
        cJSON_Delete(j);
    }
    return NULL;
}

/* A reference case's messages into mm (role, content borrowed from j; tool_calls printed into
 * calls[k], to free); returns the count and adds the messages with tool calls to *with_calls. */
static int load_msgs(const cJSON *j, mq_chat_msg *mm, char **calls, int *with_calls) {
    const cJSON *m;
    int k = 0;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(j, "messages")) {
        assert_true(k < 32);
        mm[k].role = cJSON_GetObjectItemCaseSensitive(m, "role")->valuestring;
        mm[k].content = cJSON_GetObjectItemCaseSensitive(m, "content")->valuestring;
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        mm[k].tool_calls = calls[k] = tc ? cJSON_PrintUnformatted(tc) : NULL;
        *with_calls += tc != NULL;
        k++;
    }
    return k;
}

/* Every recorded conversation x {generation prompt on/off} x {enable_thinking default/true/false}:
 * the same prompt text as HF, and the same ids once tokenized. */
static void test_against_hf(void **state) {
    (void)state;
    mq_tok *t = mq_tok_load(TOKDIR);
    if (!t) print_error("%s (run scripts/deps.sh)\n", mq_err_get());
    assert_non_null(t);
    char *b = mq_test_slurp(REF, NULL);
    assert_non_null(b);
    int n = 0, bad = 0;
    char *save = NULL;
    for (cJSON *j = next_case(b, &save); j; j = next_case(NULL, &save)) {
        mq_chat_msg mm[32];
        char *calls[32] = {0};
        int unused = 0, k = load_msgs(j, mm, calls, &unused);
        int gen = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "add_generation_prompt"));
        /* null = not passed: the template then thinks (only an explicit false adds the empty block) */
        int think = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "enable_thinking"));
        const char *want = cJSON_GetObjectItemCaseSensitive(j, "text")->valuestring;
        char *got = mq_chat_format(mm, k, gen, think);
        assert_non_null(got);
        if (strcmp(got, want)) {
            bad++;
            print_error("case %d (gen=%d think=%d):\n--- HF\n%s\n--- ours\n%s\n---\n", n, gen, think, want, got);
        } else {
            const cJSON *rids = cJSON_GetObjectItemCaseSensitive(j, "ids");
            int32_t *ids;
            size_t ni;
            assert_int_equal(mq_tok_encode(t, got, strlen(got), &ids, &ni), 0);
            int same = (int)ni == cJSON_GetArraySize(rids);
            for (size_t i = 0; same && i < ni; i++) same = ids[i] == cJSON_GetArrayItem(rids, (int)i)->valueint;
            if (!same) { bad++; print_error("case %d: ids differ from HF\n", n); }
            free(ids);
        }
        free(got);
        for (int i = 0; i < k; i++) free(calls[i]);
        cJSON_Delete(j);
        n++;
    }
    print_message("chat: %d template cases, %d differ from HF\n", n, bad);
    assert_true(n >= 100);
    assert_int_equal(bad, 0);
    free(b);
    mq_tok_free(t);
}

static void test_shapes(void **state) {
    (void)state;
    mq_chat_msg m[] = {{"system", "S", NULL}, {"user", "U", NULL}};
    char *p = mq_chat_format(m, 2, 1, 0);
    assert_string_equal(p, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                           "<|im_start|>assistant\n<think>\n\n</think>\n\n");
    free(p);
    p = mq_chat_format(m + 1, 1, 1, 1);
    assert_string_equal(p, "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
    free(p);
    p = mq_chat_format(m, 0, 0, 1);
    assert_string_equal(p, "");
    free(p);
    /* the prompt of turn N is a prefix of the prompt of turn N+1 when the reply is stored as the
     * model produced it after a no-think prompt — what lets `megaqwen chat` reuse its KV cache */
    mq_chat_msg c[] = {{"user", "hi", NULL}, {"assistant", "<think>\n\n</think>\n\nhello", NULL}, {"user", "again", NULL}};
    char *p1 = mq_chat_format(c, 1, 1, 0), *p2 = mq_chat_format(c, 3, 1, 0);
    assert_non_null(strstr(p2, "<|im_start|>assistant\nhello<|im_end|>\n"));
    assert_memory_not_equal(p1, p2, strlen(p1)); /* the template drops the old think block */
    free(p1);
    free(p2);
}

/* Tools and tool calls (chat_tools_ref.jsonl: the template rendered by jinja2 set up as transformers
 * sets it up, checked there against chat_ref.jsonl's transformers output): the same text. Tool
 * calls are handed over as JSON text, as the server does with a request's messages. */
static void test_tools_against_ref(void **state) {
    (void)state;
    char *b = mq_test_slurp(TOOLS_REF, NULL);
    assert_non_null(b);
    int n = 0, bad = 0, with_calls = 0;
    char *save = NULL;
    for (cJSON *j = next_case(b, &save); j; j = next_case(NULL, &save)) {
        mq_chat_msg mm[32];
        char *calls[32] = {0};
        int k = load_msgs(j, mm, calls, &with_calls);
        const cJSON *tl = cJSON_GetObjectItemCaseSensitive(j, "tools");
        char *tools = cJSON_IsArray(tl) ? cJSON_PrintUnformatted(tl) : NULL;
        int gen = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "add_generation_prompt"));
        int think = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "enable_thinking"));
        const char *want = cJSON_GetObjectItemCaseSensitive(j, "text")->valuestring;
        char *got = mq_chat_format_tools(mm, k, tools, gen, think);
        if (!got || strcmp(got, want)) {
            bad++;
            print_error("tools case %d (gen=%d think=%d): %s\n--- ref\n%s\n--- ours\n%s\n---\n", n, gen, think,
                        got ? "" : mq_err_get(), want, got ? got : "(null)");
        }
        free(got);
        free(tools);
        for (int i = 0; i < k; i++) free(calls[i]);
        cJSON_Delete(j);
        n++;
    }
    print_message("chat: %d tool cases (%d messages with tool calls), %d differ\n", n, with_calls, bad);
    assert_true(n >= 40);
    assert_true(with_calls > 0);
    assert_int_equal(bad, 0);
    free(b);
}

/* Tools' JSON as Python's json.dumps writes it (numbers, escapes), and malformed input refused. */
static void test_tools_json(void **state) {
    (void)state;
    mq_chat_msg u[] = {{"user", "x", NULL}};
    char *p = mq_chat_format_tools(u, 1, "[{\"a\":[1,-2,0.5,1e-5,0.0001,123.25,1e16,1.5e20,-0.0,3e-7],"
                                          "\"s\":\"q\\\"\\\\\\n\\u0001\\u00e9\",\"e\":{},\"l\":[],\"n\":null,\"t\":true}]", 1, 1);
    assert_non_null(p);
    assert_non_null(strstr(p, "\n{\"a\": [1, -2, 0.5, 1e-05, 0.0001, 123.25, 1e+16, 1.5e+20, 0, 3e-07], "
                              "\"s\": \"q\\\"\\\\\\n\\u0001\u00e9\", \"e\": {}, \"l\": [], \"n\": null, \"t\": true}\n</tools>"));
    free(p);
    p = mq_chat_format_tools(u, 1, "[]", 1, 1); /* an empty list: no tools section */
    char *q = mq_chat_format(u, 1, 1, 1);
    assert_string_equal(p, q);
    free(p);
    free(q);
    mq_err_clear();
    assert_null(mq_chat_format_tools(u, 1, "{\"not\":\"a list\"}", 1, 1));
    assert_non_null(strstr(mq_err_get(), "tools is not a JSON array"));
    mq_chat_msg a[] = {{"user", "x", NULL}, {"assistant", "", "[{\"function\":{\"name\":3}}]"}};
    assert_null(mq_chat_format_tools(a, 2, NULL, 1, 1));
    assert_non_null(strstr(mq_err_get(), "needs a string name and arguments"));
    a[1].tool_calls = "[{\"name\":\"f\",\"arguments\":{\"k\":[1,2]}}]"; /* arguments as JSON: tojson */
    p = mq_chat_format_tools(a, 2, NULL, 0, 1);
    assert_non_null(p);
    /* (the last assistant turn after the query gets the empty think block; no content: no "\n") */
    assert_non_null(strstr(p, "<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>\n{\"name\": \"f\", "
                              "\"arguments\": {\"k\": [1, 2]}}\n</tool_call><|im_end|>"));
    free(p);
}

static void test_errors(void **state) {
    (void)state;
    mq_chat_msg bad[] = {{"user", "x", NULL}, {"robot", "y", NULL}};
    mq_err_clear();
    assert_null(mq_chat_format(bad, 2, 1, 1));
    assert_non_null(strstr(mq_err_get(), "robot"));
    mq_chat_msg nul[] = {{"user", NULL, NULL}};
    assert_null(mq_chat_format(nul, 1, 1, 1));
    assert_non_null(strstr(mq_err_get(), "no content"));
    mq_chat_msg norole[] = {{NULL, "x", NULL}};
    assert_null(mq_chat_format(norole, 1, 1, 1));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_hf),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_tools_against_ref),
        cmocka_unit_test(test_tools_json),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
