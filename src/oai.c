/* oai: OpenAI-API request parsing/validation, response JSON and stop-string matching (no I/O). */
#include "oai.h"
#include "pyjson.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mq_oai_fail(mq_oai_err *e, int status, const char *type, const char *code, const char *param,
                const char *fmt, ...) {
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

#define BAD(param, ...) mq_oai_fail(e, 400, "invalid_request_error", NULL, param, __VA_ARGS__)

int mq_oai_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        if (c < 0x80) { i++; continue; }
        int len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c == 0xE0) { len = 3; lo = 0xA0; }
        else if (c == 0xED) { len = 3; hi = 0x9F; } /* no surrogates */
        else if (c >= 0xE1 && c <= 0xEF) len = 3;
        else if (c == 0xF0) { len = 4; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) len = 4;
        else if (c == 0xF4) { len = 4; hi = 0x8F; }
        else return 0;
        if (n - i < (size_t)len) return 0;
        if (u[i + 1] < lo || u[i + 1] > hi) return 0;
        for (int k = 2; k < len; k++)
            if (u[i + k] < 0x80 || u[i + k] > 0xBF) return 0;
        i += (size_t)len;
    }
    return 1;
}

void mq_oai_req_free(mq_oai_req *r) {
    if (!r) return;
    free(r->model);
    for (int i = 0; i < r->n_msgs; i++) {
        free((char *)r->msgs[i].content);
        free((char *)r->msgs[i].tool_calls);
    }
    free(r->msgs);
    free(r->tools);
    free(r->bias_ids);
    free(r->bias_vals);
    free(r->prompt);
    free(r->prompt_ids);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    memset(r, 0, sizeof *r);
}

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

/* A JSON string value that is valid UTF-8; else 400 naming param. */
static int get_text(const cJSON *v, const char *param, const char **out, mq_oai_err *e) {
    if (!cJSON_IsString(v) || !v->valuestring) return BAD(param, "'%s' must be a string", param);
    if (!mq_oai_utf8_valid(v->valuestring, strlen(v->valuestring)))
        return BAD(param, "'%s' is not valid UTF-8", param);
    *out = v->valuestring;
    return 0;
}

/* Optional number in [lo, hi]; absent or null leaves *has 0. */
static int get_num(const cJSON *o, const char *key, double lo, double hi, int *has, double *out,
                   mq_oai_err *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v)) return BAD(key, "'%s' must be a number", key);
    double d = v->valuedouble;
    if (!(d >= lo && d <= hi)) return BAD(key, "'%s' is %g, want a value in [%g, %g]", key, d, lo, hi);
    if (has) *has = 1;
    *out = d;
    return 0;
}

static int get_int(const cJSON *o, const char *key, double lo, double hi, int *has, double *out,
                   mq_oai_err *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || floor(v->valuedouble) != v->valuedouble)
        return BAD(key, "'%s' must be an integer", key);
    return get_num(o, key, lo, hi, has, out, e);
}

static int get_bool(const cJSON *o, const char *key, int *out, mq_oai_err *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) return BAD(key, "'%s' must be a boolean", key);
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return 0;
}

/* Message content: a string, null (empty), or an array of {"type":"text","text":...} parts. */
static int get_content(const cJSON *v, int idx, char **out, mq_oai_err *e) {
    char param[48];
    snprintf(param, sizeof param, "messages[%d].content", idx);
    if (!v || cJSON_IsNull(v)) { *out = dup_str(""); goto check; }
    if (cJSON_IsString(v)) {
        const char *s;
        if (get_text(v, param, &s, e)) return -1;
        *out = dup_str(s);
        goto check;
    }
    if (!cJSON_IsArray(v)) return BAD(param, "'%s' must be a string or an array of text parts", param);
    mq_oai_buf b = {0};
    const cJSON *part;
    cJSON_ArrayForEach(part, v) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *tx = cJSON_GetObjectItemCaseSensitive(part, "text");
        const char *s;
        if (!cJSON_IsObject(part) || !cJSON_IsString(t) || strcmp(t->valuestring, "text")) {
            mq_oai_buf_free(&b);
            return BAD(param, "'%s': only parts of type \"text\" are supported", param);
        }
        if (get_text(tx, param, &s, e)) { mq_oai_buf_free(&b); return -1; }
        if (mq_oai_buf_put(&b, s, strlen(s))) { mq_oai_buf_free(&b); goto oom; }
    }
    if (mq_oai_buf_put(&b, "", 1)) { mq_oai_buf_free(&b); goto oom; }
    *out = b.p;
check:
    if (!*out) goto oom;
    return 0;
oom:
    return mq_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
}

/* A list of tool definitions ({"type": "function", "function": {"name": ..., ...}}) or of tool calls
 * ({"id", "type": "function", "function": {"name", "arguments": a JSON string}}): what the chat
 * template and the tool-call parser rely on. `need`: a key the function object must also have
 * (calls: "arguments"), or NULL. */
static int check_tool_list(const cJSON *a, const char *param, const char *what, const char *need,
                           mq_oai_err *e) {
    if (!cJSON_IsArray(a)) return BAD(param, "'%s' must be an array", param);
    if (cJSON_GetArraySize(a) > 128) return BAD(param, "'%s' has more than 128 entries", param);
    const cJSON *it;
    int k = 0;
    cJSON_ArrayForEach(it, a) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "type");
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(it, what);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
        if (!cJSON_IsObject(it) || (t && !cJSON_IsNull(t) && (!cJSON_IsString(t) || strcmp(t->valuestring, "function"))))
            return BAD(param, "'%s'[%d] must be an object of type \"function\"", param, k);
        if (!cJSON_IsObject(f) || !cJSON_IsString(name) || !name->valuestring[0])
            return BAD(param, "'%s'[%d].function.name must be a non-empty string", param, k);
        if (!mq_oai_utf8_valid(name->valuestring, strlen(name->valuestring)))
            return BAD(param, "'%s'[%d].function.name is not valid UTF-8", param, k);
        if (need) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(f, need);
            if (!cJSON_IsString(v) || !mq_oai_utf8_valid(v->valuestring, strlen(v->valuestring)))
                return BAD(param, "'%s'[%d].function.%s must be a string (JSON text)", param, k, need);
            cJSON *a = v->valuestring[0] ? cJSON_ParseWithOpts(v->valuestring, NULL, 1) : NULL;
            const int ok = !v->valuestring[0] || a; /* (empty: {}, as vLLM takes it) */
            cJSON_Delete(a);
            if (!ok) return BAD(param, "'%s'[%d].function.%s is not valid JSON", param, k, need);
        }
        k++;
    }
    return 0;
}

static int parse_messages(const cJSON *root, mq_oai_req *r, mq_oai_err *e) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!m) return BAD("messages", "'messages' is required");
    if (!cJSON_IsArray(m)) return BAD("messages", "'messages' must be an array");
    int n = cJSON_GetArraySize(m);
    if (n < 1) return BAD("messages", "'messages' must not be empty");
    if (n > 4096) return BAD("messages", "'messages' has %d entries (at most 4096)", n);
    if (!(r->msgs = calloc((size_t)n, sizeof *r->msgs)))
        return mq_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, m) {
        char param[48];
        snprintf(param, sizeof param, "messages[%d].role", i);
        if (!cJSON_IsObject(it)) return BAD(param, "messages[%d] must be an object", i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
        if (!cJSON_IsString(role)) return BAD(param, "'%s' must be a string", param);
        const char *rs = role->valuestring, *norm;
        if (!strcmp(rs, "system") || !strcmp(rs, "developer")) norm = "system";
        else if (!strcmp(rs, "user")) norm = "user";
        else if (!strcmp(rs, "assistant")) norm = "assistant";
        else if (!strcmp(rs, "tool")) norm = "tool";
        else {
            char shown[40];
            snprintf(shown, sizeof shown, "%s", rs);
            if (!mq_oai_utf8_valid(shown, strlen(shown))) snprintf(shown, sizeof shown, "?");
            return BAD(param, "unknown role '%s' in messages[%d] (want system, developer, user, assistant or tool)",
                       shown, i);
        }
        char *content = NULL;
        if (get_content(cJSON_GetObjectItemCaseSensitive(it, "content"), i, &content, e)) return -1;
        r->msgs[i].role = norm; /* static string: never freed */
        r->msgs[i].content = content;
        r->n_msgs = ++i;
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(it, "tool_calls");
        if (tc && !cJSON_IsNull(tc) && !(cJSON_IsArray(tc) && cJSON_GetArraySize(tc) == 0)) {
            snprintf(param, sizeof param, "messages[%d].tool_calls", i - 1);
            if (strcmp(norm, "assistant")) return BAD(param, "only assistant messages have tool_calls");
            if (check_tool_list(tc, param, "function", "arguments", e)) return -1;
            if (!(r->msgs[i - 1].tool_calls = cJSON_PrintUnformatted(tc)))
                return mq_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        }
    }
    int think = 1;
    if (get_bool(root, "enable_thinking", &think, e)) return -1;
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(root, "chat_template_kwargs");
    if (kw && !cJSON_IsNull(kw)) {
        if (!cJSON_IsObject(kw)) return BAD("chat_template_kwargs", "'chat_template_kwargs' must be an object");
        if (get_bool(kw, "enable_thinking", &think, e)) return -1;
    }
    r->enable_thinking = think;
    return 0;
}

/* prompt: a string, [string], [int...] or [[int...]] (one prompt per request). */
static int parse_prompt(const cJSON *root, mq_oai_req *r, mq_oai_err *e) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!p) return BAD("prompt", "'prompt' is required");
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 &&
        (cJSON_IsString(p->child) || cJSON_IsArray(p->child)))
        p = p->child;
    if (cJSON_IsString(p)) {
        const char *s;
        if (get_text(p, "prompt", &s, e)) return -1;
        if (!(r->prompt = dup_str(s))) return mq_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        return 0;
    }
    if (!cJSON_IsArray(p))
        return BAD("prompt", "'prompt' must be a string or an array of token ids");
    int n = cJSON_GetArraySize(p);
    if (n < 1) return BAD("prompt", "'prompt' must not be empty");
    if (!(r->prompt_ids = malloc((size_t)n * sizeof *r->prompt_ids)))
        return mq_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    const cJSON *it;
    size_t k = 0;
    cJSON_ArrayForEach(it, p) {
        if (!cJSON_IsNumber(it) || floor(it->valuedouble) != it->valuedouble || it->valuedouble < 0 ||
            it->valuedouble > 2147483647.0)
            return BAD("prompt", "'prompt' must be one string or one array of non-negative integer token ids "
                       "(batched prompts are not supported)");
        r->prompt_ids[k++] = (int32_t)it->valuedouble;
    }
    r->n_prompt_ids = k;
    return 0;
}

static int parse_stop(const cJSON *root, mq_oai_req *r, mq_oai_err *e) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (!s || cJSON_IsNull(s)) return 0;
    const cJSON *one[1] = {s};
    int n = 1;
    if (cJSON_IsArray(s)) {
        n = cJSON_GetArraySize(s);
        if (n > MQ_OAI_MAX_STOP) return BAD("stop", "'stop' has %d strings (at most %d)", n, MQ_OAI_MAX_STOP);
    } else if (!cJSON_IsString(s)) {
        return BAD("stop", "'stop' must be a string or an array of strings");
    }
    const cJSON *it = cJSON_IsArray(s) ? s->child : one[0];
    for (int i = 0; i < n; i++, it = it->next) {
        const char *t;
        if (get_text(it, "stop", &t, e)) return -1;
        size_t l = strlen(t);
        if (l == 0) return BAD("stop", "'stop' strings must not be empty");
        if (l > MQ_OAI_MAX_STOP_LEN) return BAD("stop", "'stop' string of %zu bytes (at most %d)", l, MQ_OAI_MAX_STOP_LEN);
        if (!(r->stop[r->n_stop] = dup_str(t))) return mq_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        r->n_stop++;
    }
    return 0;
}

static int parse_root(mq_oai_kind kind, const cJSON *root, mq_oai_req *r, mq_oai_err *e) {
    if (!cJSON_IsObject(root)) return BAD(NULL, "the request body must be a JSON object");
    r->kind = kind;
    r->max_tokens = -1;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (m && !cJSON_IsNull(m)) {
        const char *s;
        if (get_text(m, "model", &s, e)) return -1;
        if (!(r->model = dup_str(s))) return mq_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    if (kind == MQ_OAI_CHAT ? parse_messages(root, r, e) : parse_prompt(root, r, e)) return -1;

    double d;
    int has = 0;
    if (kind == MQ_OAI_COMPLETION && get_bool(root, "echo", &r->echo, e)) return -1;
    if (get_int(root, "max_tokens", r->echo ? 0 : 1, 1 << 24, &has, &d, e)) return -1;
    if (has) r->max_tokens = (long)d;
    has = 0;
    if (get_int(root, "max_completion_tokens", 1, 1 << 24, &has, &d, e)) return -1;
    if (has) r->max_tokens = (long)d;
    if (get_num(root, "temperature", 0, 2, &r->has_temperature, &d, e)) return -1;
    if (r->has_temperature) r->temperature = (float)d;
    if (get_num(root, "top_p", 0, 1, &r->has_top_p, &d, e)) return -1;
    if (r->has_top_p) {
        if (d <= 0) return BAD("top_p", "'top_p' is %g, want a value in (0, 1]", d);
        r->top_p = (float)d;
    }
    if (get_int(root, "top_k", -1, 1 << 30, &r->has_top_k, &d, e)) return -1;
    if (r->has_top_k) r->top_k = d < 0 ? 0 : (int)d; /* -1 (vLLM) and 0 both mean off */
    if (get_num(root, "min_p", 0, 1, &r->has_min_p, &d, e)) return -1;
    if (r->has_min_p) r->min_p = (float)d;
    if (get_num(root, "repetition_penalty", 0, 10, &r->has_rep, &d, e)) return -1;
    if (r->has_rep) {
        if (d <= 0) return BAD("repetition_penalty", "'repetition_penalty' must be > 0");
        r->rep_penalty = (float)d;
    }
    if (get_int(root, "seed", -9.0e18, 9.0e18, &r->has_seed, &d, e)) return -1;
    if (r->has_seed) r->seed = (uint64_t)(int64_t)d;
    int hp = 0, hf = 0;
    if (get_num(root, "presence_penalty", -2, 2, &hp, &d, e)) return -1;
    if (hp) r->presence_penalty = (float)d;
    if (get_num(root, "frequency_penalty", -2, 2, &hf, &d, e)) return -1;
    if (hf) r->frequency_penalty = (float)d;
    {   /* n choices, generated one after the other */
        int hn = 0;
        if (get_int(root, "n", 1, MQ_OAI_MAX_N, &hn, &d, e)) return -1;
        r->n_choices = hn ? (int)d : 1;
    }
    /* logprobs: chat's "logprobs": true + "top_logprobs": 0..20; completions' "logprobs": N (the
     * N most likely beside the chosen token; OpenAI allows 5, vLLM 20) */
    if (kind == MQ_OAI_CHAT) {
        if (get_bool(root, "logprobs", &r->logprobs, e)) return -1;
        int ht = 0;
        if (get_int(root, "top_logprobs", 0, MQ_TOP_LOGPROBS_MAX, &ht, &d, e)) return -1;
        if (ht && !r->logprobs) return BAD("top_logprobs", "'top_logprobs' needs 'logprobs': true");
        if (ht) r->top_logprobs = (int)d;
    } else {
        const cJSON *lv = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
        if (cJSON_IsTrue(lv)) return BAD("logprobs", "'logprobs' is a count here (0..%d), not a boolean", MQ_TOP_LOGPROBS_MAX);
        if (!cJSON_IsFalse(lv) && get_int(root, "logprobs", 0, MQ_TOP_LOGPROBS_MAX, &r->logprobs, &d, e)) return -1;
        if (r->logprobs) r->top_logprobs = (int)d;
    }
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    if (tools && !cJSON_IsNull(tools) && !(cJSON_IsArray(tools) && cJSON_GetArraySize(tools) == 0)) {
        if (kind != MQ_OAI_CHAT) return BAD("tools", "'tools' are for chat completions");
        if (check_tool_list(tools, "tools", "function", NULL, e)) return -1;
        if (!(r->tools = cJSON_PrintUnformatted(tools)))
            return mq_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        r->parse_calls = 1;
    }
    /* tool_choice: "auto" (the default) lets the model call; "none" keeps the tools in the prompt
     * (as transformers renders them) but leaves any <tool_call> text as content. Forcing a call
     * ("required", a named function) needs constrained decoding, which this server does not do. */
    const cJSON *tch = cJSON_GetObjectItemCaseSensitive(root, "tool_choice");
    if (tch && !cJSON_IsNull(tch)) {
        if (!cJSON_IsString(tch) || (strcmp(tch->valuestring, "auto") && strcmp(tch->valuestring, "none")))
            return BAD("tool_choice", "'tool_choice' must be \"auto\" or \"none\" (forcing a tool call is not supported)");
        if (!strcmp(tch->valuestring, "none")) r->parse_calls = 0;
    }
    int ptc = 1;
    if (get_bool(root, "parallel_tool_calls", &ptc, e)) return -1;
    /* Fields that change what the reply may be: refused rather than ignored, so that no client
     * takes an unconstrained reply for a constrained one. (Default values are fine.) */
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "logit_bias")) && !cJSON_IsNull(v)) {
        /* {"token id": bias in [-100, 100]}, at most 300 entries (OpenAI's limit) */
        if (!cJSON_IsObject(v)) return BAD("logit_bias", "'logit_bias' must be an object {\"token id\": bias}");
        const int nb = cJSON_GetArraySize(v);
        if (nb > 300) return BAD("logit_bias", "'logit_bias' has %d entries (at most 300)", nb);
        if (nb > 0 && (!(r->bias_ids = malloc((size_t)nb * sizeof *r->bias_ids)) ||
                       !(r->bias_vals = malloc((size_t)nb * sizeof *r->bias_vals))))
            return mq_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        const cJSON *b;
        cJSON_ArrayForEach(b, v) {
            /* keys: token ids in decimal digits; a repeated id takes its last value (a dict's rule) */
            const char *k = b->string ? b->string : "";
            size_t nd = strspn(k, "0123456789");
            if (!nd || k[nd] || nd > 10 || strtoll(k, NULL, 10) > 2147483647LL)
                return BAD("logit_bias", "'logit_bias' keys must be token ids (decimal digits)");
            if (!cJSON_IsNumber(b) || !(b->valuedouble >= -100 && b->valuedouble <= 100))
                return BAD("logit_bias", "'logit_bias' values must be numbers in [-100, 100]");
            const int32_t id = (int32_t)strtoll(k, NULL, 10);
            int at = r->n_bias;
            for (int i = 0; i < r->n_bias; i++)
                if (r->bias_ids[i] == id) at = i;
            r->bias_ids[at] = id;
            r->bias_vals[at] = (float)b->valuedouble;
            if (at == r->n_bias) r->n_bias++;
        }
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "response_format")) && !cJSON_IsNull(v)) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(v, "type");
        if (!cJSON_IsString(t) || strcmp(t->valuestring, "text"))
            return BAD("response_format", "'response_format' other than {\"type\": \"text\"} is not supported "
                       "(it needs constrained decoding)");
    }
    static const char *const guided[] = {"guided_json", "guided_regex", "guided_choice", "guided_grammar",
                                         "structured_outputs"};
    for (size_t i = 0; i < sizeof guided / sizeof guided[0]; i++)
        if ((v = cJSON_GetObjectItemCaseSensitive(root, guided[i])) && !cJSON_IsNull(v))
            return BAD(guided[i], "'%s' is not supported (it needs constrained decoding)", guided[i]);
    {   /* vLLM's min_tokens: no end-of-sequence / stop id, and no stop string, before this many */
        int has_min = 0;
        double dm;
        if (get_int(root, "min_tokens", 0, 1 << 24, &has_min, &dm, e)) return -1;
        if (has_min) r->min_tokens = (int)dm;
        if (r->max_tokens >= 0 && r->min_tokens > r->max_tokens)
            return BAD("min_tokens", "'min_tokens' (%d) must be at most max_tokens (%ld)", r->min_tokens, r->max_tokens);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "best_of")) && !cJSON_IsNull(v) &&
        !(cJSON_IsNumber(v) && v->valuedouble == 1))
        return BAD("best_of", "'best_of' must be 1 (one sequence per request)");
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "suffix")) && !cJSON_IsNull(v) &&
        !(cJSON_IsString(v) && !v->valuestring[0]))
        return BAD("suffix", "'suffix' is not supported");
    if (get_bool(root, "ignore_eos", &r->ignore_eos, e)) return -1;
    r->skip_special = 1;
    if (get_bool(root, "skip_special_tokens", &r->skip_special, e)) return -1;
    const cJSON *sti = cJSON_GetObjectItemCaseSensitive(root, "stop_token_ids"), *it;
    if (sti && !cJSON_IsNull(sti)) {
        if (!cJSON_IsArray(sti) || cJSON_GetArraySize(sti) > MQ_OAI_MAX_STOP_IDS)
            return BAD("stop_token_ids", "'stop_token_ids' must be an array of at most %d token ids", MQ_OAI_MAX_STOP_IDS);
        cJSON_ArrayForEach(it, sti) {
            if (!cJSON_IsNumber(it) || floor(it->valuedouble) != it->valuedouble || it->valuedouble < 0 ||
                it->valuedouble > 2147483647.0)
                return BAD("stop_token_ids", "'stop_token_ids' must hold non-negative integer token ids");
            r->stop_ids[r->n_stop_ids++] = (int32_t)it->valuedouble;
        }
    }
    if (parse_stop(root, r, e)) return -1;
    if (get_bool(root, "stream", &r->stream, e)) return -1;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!r->stream) return BAD("stream_options", "'stream_options' is only allowed when 'stream' is true");
        if (!cJSON_IsObject(so)) return BAD("stream_options", "'stream_options' must be an object");
        if (get_bool(so, "include_usage", &r->include_usage, e)) {
            snprintf(e->param, sizeof e->param, "stream_options.include_usage");
            return -1;
        }
    }
    return 0;
}

int mq_oai_parse(mq_oai_kind kind, const char *body, size_t len, mq_oai_req *r, mq_oai_err *e) {
    memset(r, 0, sizeof *r);
    memset(e, 0, sizeof *e);
    if (!body || !len) return BAD(NULL, "the request body is empty (want a JSON object)");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) {
        size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        return BAD(NULL, "malformed JSON in the request body (near byte %zu)", at);
    }
    /* Anything but whitespace after the value is malformed too. */
    for (const char *p = end; p && p < body + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n' && *p != '\0') {
            cJSON_Delete(root);
            return BAD(NULL, "malformed JSON in the request body (trailing data at byte %zu)", (size_t)(p - body));
        }
    int rc = parse_root(kind, root, r, e);
    cJSON_Delete(root);
    if (rc) mq_oai_req_free(r);
    return rc;
}

/* ---------- output ---------- */

int mq_oai_buf_put(mq_oai_buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

void mq_oai_buf_free(mq_oai_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

static int add_text(cJSON *o, const char *key, const char *text, size_t len) {
    char *q = mq_pyjson_str(text ? text : "", text ? len : 0);
    if (!q) return -1;
    cJSON *raw = cJSON_AddRawToObject(o, key, q);
    free(q);
    return raw ? 0 : -1;
}

/* A token's text for logprobs: its bytes when they are valid UTF-8, else "bytes:\\xNN..." (the
 * convention of OpenAI's and vLLM's completions for a piece of a character). malloc'd. */
static char *tok_text(const char *b, size_t n) {
    char *t = malloc(n * 4 + 8);
    if (!t) return NULL;
    if (!n) { /* (an id without bytes: embedding padding) */
        t[0] = 0;
        return t;
    }
    if (mq_oai_utf8_valid(b, n) && !memchr(b, 0, n)) {
        memcpy(t, b, n);
        t[n] = 0;
        return t;
    }
    char *p = t + sprintf(t, "bytes:");
    for (size_t i = 0; i < n; i++) p += sprintf(p, "\\x%02x", (unsigned char)b[i]);
    return t;
}

/* chat: {"token", "logprob", "bytes": [...]} (+ "top_logprobs" when tops) */
static cJSON *chat_tok(const mq_oai_alt *a, int has_lp, const mq_oai_alt *top, int n_top) {
    cJSON *o = cJSON_CreateObject(), *by = cJSON_CreateArray();
    char *t = tok_text(a->b, a->n);
    if (!o || !by || !t) { cJSON_Delete(o); cJSON_Delete(by); free(t); return NULL; }
    cJSON_AddStringToObject(o, "token", t);
    free(t);
    if (has_lp) cJSON_AddNumberToObject(o, "logprob", a->lp);
    else cJSON_AddNullToObject(o, "logprob");
    for (size_t i = 0; i < a->n; i++) cJSON_AddItemToArray(by, cJSON_CreateNumber((unsigned char)a->b[i]));
    cJSON_AddItemToObject(o, "bytes", by);
    if (top) {
        cJSON *ta = cJSON_AddArrayToObject(o, "top_logprobs");
        for (int i = 0; ta && i < n_top; i++) {
            cJSON *x = chat_tok(&top[i], 1, NULL, 0);
            if (!x) { cJSON_Delete(o); return NULL; }
            cJSON_AddItemToArray(ta, x);
        }
    }
    return o;
}

/* The choice's "logprobs": chat {"content": [...], "refusal": null}; completions {"tokens",
 * "token_logprobs", "top_logprobs", "text_offset"} (top_logprobs: the N most likely and the chosen
 * token, as OpenAI's legacy API has it). */
static int add_logprobs(cJSON *choice, mq_oai_kind kind, const mq_oai_lps *l) {
    if (!l || (!l->want && !l->n)) {
        cJSON_AddNullToObject(choice, "logprobs");
        return 0;
    }
    cJSON *o = cJSON_AddObjectToObject(choice, "logprobs");
    if (!o) return -1;
    if (kind == MQ_OAI_CHAT) {
        cJSON *c = cJSON_AddArrayToObject(o, "content");
        if (!c) return -1;
        for (size_t i = 0; i < l->n; i++) {
            cJSON *x = chat_tok(&l->lp[i].tok, l->lp[i].has_lp, l->lp[i].top, l->lp[i].n_top);
            if (!x) return -1;
            cJSON_AddItemToArray(c, x);
        }
        cJSON_AddNullToObject(o, "refusal");
        return 0;
    }
    cJSON *tk = cJSON_AddArrayToObject(o, "tokens"), *tl = cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON *tp = cJSON_AddArrayToObject(o, "top_logprobs"), *to = cJSON_AddArrayToObject(o, "text_offset");
    if (!tk || !tl || !tp || !to) return -1;
    for (size_t i = 0; i < l->n; i++) {
        const mq_oai_lp *e = &l->lp[i];
        char *t = tok_text(e->tok.b, e->tok.n);
        if (!t) return -1;
        cJSON_AddItemToArray(tk, cJSON_CreateString(t));
        cJSON_AddItemToArray(to, cJSON_CreateNumber((double)e->text_offset));
        if (!e->has_lp) {
            free(t);
            cJSON_AddItemToArray(tl, cJSON_CreateNull());
            cJSON_AddItemToArray(tp, cJSON_CreateNull());
            continue;
        }
        cJSON_AddItemToArray(tl, cJSON_CreateNumber(e->tok.lp));
        cJSON *d = cJSON_CreateObject();
        if (!d) { free(t); return -1; }
        cJSON_AddItemToArray(tp, d);
        int chosen_in = 0;
        for (int k = 0; k < e->n_top; k++) {
            char *a = tok_text(e->top[k].b, e->top[k].n);
            if (!a) { free(t); return -1; }
            if (!cJSON_GetObjectItemCaseSensitive(d, a)) cJSON_AddNumberToObject(d, a, e->top[k].lp);
            chosen_in |= e->top[k].n == e->tok.n && !memcmp(e->top[k].b, e->tok.b, e->tok.n);
            free(a);
        }
        if (!chosen_in && !cJSON_GetObjectItemCaseSensitive(d, t)) cJSON_AddNumberToObject(d, t, e->tok.lp);
        free(t);
    }
    return 0;
}

static cJSON *usage_obj(const mq_oai_usage *u) {
    cJSON *us = cJSON_CreateObject();
    if (!us) return NULL;
    cJSON_AddNumberToObject(us, "prompt_tokens", u->prompt_tokens);
    cJSON_AddNumberToObject(us, "completion_tokens", u->completion_tokens);
    cJSON_AddNumberToObject(us, "total_tokens", u->prompt_tokens + u->completion_tokens);
    cJSON *d = cJSON_AddObjectToObject(us, "prompt_tokens_details");
    if (d) cJSON_AddNumberToObject(d, "cached_tokens", u->cached_tokens);
    return us;
}

static cJSON *envelope(mq_oai_kind kind, const char *id, long created, const char *model, int chunk) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", kind == MQ_OAI_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                                             : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)created);
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddStringToObject(o, "system_fingerprint", "megaqwen");
    return o;
}

static char *print_free(cJSON *o, int sse) {
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!s || !sse) return s;
    size_t n = strlen(s);
    char *ev = malloc(n + 9);
    if (ev) {
        memcpy(ev, "data: ", 6);
        memcpy(ev + 6, s, n);
        memcpy(ev + 6 + n, "\n\n", 3);
    }
    cJSON_free(s);
    return ev;
}

/* The envelope plus one choice object {"index": index} in "choices"; *choice points at it. */
static cJSON *envelope_choice(mq_oai_kind kind, const char *id, long created, const char *model,
                              int chunk, int index, cJSON **choice) {
    cJSON *o = envelope(kind, id, created, model, chunk);
    if (!o) return NULL;
    cJSON *ch = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
    if (!ch || !c) { cJSON_Delete(c); cJSON_Delete(o); return NULL; }
    cJSON_AddItemToArray(ch, c);
    cJSON_AddNumberToObject(c, "index", index);
    *choice = c;
    return o;
}

/* "tool_calls": [{(index,) id, type, function: {name, arguments}}] into o */
static int add_calls(cJSON *o, const mq_oai_call *calls, int n, int with_index) {
    cJSON *a = cJSON_AddArrayToObject(o, "tool_calls");
    if (!a) return -1;
    for (int i = 0; i < n; i++) {
        cJSON *c = cJSON_CreateObject(), *f = cJSON_CreateObject();
        if (!c || !f) { cJSON_Delete(c); cJSON_Delete(f); return -1; }
        cJSON_AddItemToArray(a, c);
        if (with_index) cJSON_AddNumberToObject(c, "index", i);
        cJSON_AddStringToObject(c, "id", calls[i].id);
        cJSON_AddStringToObject(c, "type", "function");
        cJSON_AddItemToObject(c, "function", f);
        cJSON_AddStringToObject(f, "name", calls[i].name);
        cJSON_AddStringToObject(f, "arguments", calls[i].arguments);
    }
    return 0;
}

/* choice c's fields (message or text, logprobs, finish_reason) from reply r */
static int fill_choice(cJSON *c, mq_oai_kind kind, const mq_oai_reply *r) {
    int bad = 0;
    if (kind == MQ_OAI_CHAT) {
        cJSON *m = cJSON_AddObjectToObject(c, "message");
        if (!m) return 1;
        cJSON_AddStringToObject(m, "role", "assistant");
        /* null content: only tool calls, or only thinking (as vLLM's reasoning parsers give it) */
        if ((r->n_calls > 0 || r->reasoning) && r->len == 0) cJSON_AddNullToObject(m, "content");
        else bad |= add_text(m, "content", r->text, r->len);
        if (r->reasoning) bad |= add_text(m, "reasoning_content", r->reasoning, r->rlen);
        cJSON_AddNullToObject(m, "refusal");
        if (r->n_calls > 0) bad |= add_calls(m, r->calls, r->n_calls, 0);
    } else {
        bad |= add_text(c, "text", r->text, r->len);
    }
    bad |= add_logprobs(c, kind, r->lps);
    cJSON_AddStringToObject(c, "finish_reason", r->finish);
    return bad;
}

char *mq_oai_response_json(mq_oai_kind kind, const char *id, long created, const char *model, const mq_oai_reply *r,
                           int n) {
    cJSON *c, *o = envelope_choice(kind, id, created, model, 0, 0, &c);
    if (!o) return NULL;
    int bad = fill_choice(c, kind, &r[0]);
    cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "choices");
    for (int i = 1; i < n && !bad; i++) {
        cJSON *ci = cJSON_CreateObject();
        if (!ci) { bad = 1; break; }
        cJSON_AddItemToArray(ch, ci);
        cJSON_AddNumberToObject(ci, "index", i);
        bad |= fill_choice(ci, kind, &r[i]);
    }
    cJSON *us = usage_obj(r[0].usage);
    if (!us) bad = 1;
    else cJSON_AddItemToObject(o, "usage", us);
    if (bad) { cJSON_Delete(o); return NULL; }
    return print_free(o, 0);
}

char *mq_oai_chunk_sse(mq_oai_kind kind, const char *id, long created, const char *model, int index,
                       const char *text, size_t len, int role_first, const char *finish,
                       int usage_null, const mq_oai_lps *lps) {
    cJSON *c, *o = envelope_choice(kind, id, created, model, 1, index, &c);
    if (!o) return NULL;
    int bad = 0;
    if (kind == MQ_OAI_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (!d) bad = 1;
        else {
            if (role_first) cJSON_AddStringToObject(d, "role", "assistant");
            if (text) bad |= add_text(d, "content", text, len);
        }
    } else {
        bad |= add_text(c, "text", text, len);
    }
    bad |= add_logprobs(c, kind, lps);
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    if (usage_null) cJSON_AddNullToObject(o, "usage");
    if (bad) { cJSON_Delete(o); return NULL; }
    return print_free(o, 1);
}

char *mq_oai_calls_sse(const char *id, long created, const char *model, int index, const mq_oai_call *calls, int n,
                       int usage_null) {
    cJSON *c, *o = envelope_choice(MQ_OAI_CHAT, id, created, model, 1, index, &c);
    if (!o) return NULL;
    cJSON *d = cJSON_AddObjectToObject(c, "delta");
    int bad = !d || add_calls(d, calls, n, 1);
    cJSON_AddNullToObject(c, "logprobs");
    cJSON_AddNullToObject(c, "finish_reason");
    if (usage_null) cJSON_AddNullToObject(o, "usage");
    if (bad) { cJSON_Delete(o); return NULL; }
    return print_free(o, 1);
}

char *mq_oai_reasoning_sse(const char *id, long created, const char *model, int index, const char *text, size_t len,
                           int usage_null, const mq_oai_lps *lps) {
    cJSON *c, *o = envelope_choice(MQ_OAI_CHAT, id, created, model, 1, index, &c);
    if (!o) return NULL;
    cJSON *d = cJSON_AddObjectToObject(c, "delta");
    int bad = !d || add_text(d, "reasoning_content", text, len);
    bad |= add_logprobs(c, MQ_OAI_CHAT, lps);
    cJSON_AddNullToObject(c, "finish_reason");
    if (usage_null) cJSON_AddNullToObject(o, "usage");
    if (bad) { cJSON_Delete(o); return NULL; }
    return print_free(o, 1);
}

char *mq_oai_usage_sse(mq_oai_kind kind, const char *id, long created, const char *model,
                       const mq_oai_usage *u) {
    cJSON *o = envelope(kind, id, created, model, 1);
    if (!o) return NULL;
    cJSON *us = usage_obj(u);
    if (!cJSON_AddArrayToObject(o, "choices") || !us) { cJSON_Delete(us); cJSON_Delete(o); return NULL; }
    cJSON_AddItemToObject(o, "usage", us);
    return print_free(o, 1);
}

mq_oai_kind mq_oai_tokenize_kind(const char *body, size_t len) {
    cJSON *o = body && len ? cJSON_ParseWithLength(body, len) : NULL;
    const mq_oai_kind k = cJSON_GetObjectItemCaseSensitive(o, "messages") ? MQ_OAI_CHAT : MQ_OAI_COMPLETION;
    cJSON_Delete(o);
    return k;
}

char *mq_oai_tokenize_json(const int32_t *ids, size_t n, int max_ctx) {
    cJSON *o = cJSON_CreateObject(), *a = cJSON_CreateArray();
    if (!o || !a) { cJSON_Delete(o); cJSON_Delete(a); return NULL; }
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    cJSON_AddNumberToObject(o, "count", (double)n);
    cJSON_AddNumberToObject(o, "max_model_len", max_ctx);
    cJSON_AddItemToObject(o, "tokens", a);
    return print_free(o, 0);
}

int mq_oai_parse_detokenize(const char *body, size_t len, int vocab, int32_t **ids, size_t *n, mq_oai_err *e) {
    *ids = NULL;
    *n = 0;
    memset(e, 0, sizeof *e);
    cJSON *o = body && len ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "tokens"), *it;
    if (!cJSON_IsObject(o) || !cJSON_IsArray(t)) {
        cJSON_Delete(o);
        return BAD("tokens", "the body must be {\"tokens\": [token ids]}");
    }
    int32_t *v = malloc(((size_t)cJSON_GetArraySize(t) + 1) * sizeof *v);
    if (!v) { cJSON_Delete(o); return mq_oai_fail(e, 500, "server_error", NULL, NULL, "out of memory"); }
    size_t k = 0;
    cJSON_ArrayForEach(it, t) {
        if (!cJSON_IsNumber(it) || floor(it->valuedouble) != it->valuedouble || it->valuedouble < 0 ||
            it->valuedouble >= vocab) {
            free(v);
            cJSON_Delete(o);
            return BAD("tokens", "'tokens'[%zu] is not a token id in [0, %d)", k, vocab);
        }
        v[k++] = (int32_t)it->valuedouble;
    }
    cJSON_Delete(o);
    *ids = v;
    *n = k;
    return 0;
}

char *mq_oai_detokenize_json(const char *text) {
    cJSON *o = cJSON_CreateObject();
    if (!o || add_text(o, "prompt", text, strlen(text))) { cJSON_Delete(o); return NULL; }
    return print_free(o, 0);
}

char *mq_oai_models_json(const char *model, long created, int max_ctx) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *d = cJSON_AddArrayToObject(o, "data"), *m = cJSON_CreateObject();
    if (!d || !m) { cJSON_Delete(m); cJSON_Delete(o); return NULL; }
    cJSON_AddItemToArray(d, m);
    cJSON_AddStringToObject(m, "id", model);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)created);
    cJSON_AddStringToObject(m, "owned_by", "megaqwen");
    cJSON_AddNumberToObject(m, "max_model_len", max_ctx);
    return print_free(o, 0);
}

char *mq_oai_error_json(const mq_oai_err *e) {
    cJSON *o = cJSON_CreateObject(), *er = cJSON_CreateObject();
    if (!o || !er) { cJSON_Delete(o); cJSON_Delete(er); return NULL; }
    cJSON_AddItemToObject(o, "error", er);
    /* Messages may quote request bytes: keep them valid UTF-8 for the client's JSON parser. */
    char msg[sizeof e->msg];
    snprintf(msg, sizeof msg, "%s", e->msg);
    if (!mq_oai_utf8_valid(msg, strlen(msg)))
        for (char *p = msg; *p; p++) if ((unsigned char)*p >= 0x80) *p = '?';
    cJSON_AddStringToObject(er, "message", msg);
    cJSON_AddStringToObject(er, "type", e->type ? e->type : "invalid_request_error");
    if (e->param[0]) cJSON_AddStringToObject(er, "param", e->param);
    else cJSON_AddNullToObject(er, "param");
    if (e->code) cJSON_AddStringToObject(er, "code", e->code);
    else cJSON_AddNullToObject(er, "code");
    return print_free(o, 0);
}

/* ---------- stop strings ---------- */

/* Length of the longest suffix of h that is a proper prefix of some stop string. */
static size_t held_suffix(const mq_oai_stop *s, const char *h, size_t n) {
    size_t best = 0;
    for (int i = 0; i < s->n; i++) {
        size_t sl = strlen(s->stop[i]);
        size_t max = sl - 1 < n ? sl - 1 : n;
        for (size_t k = max; k > best; k--)
            if (!memcmp(h + n - k, s->stop[i], k)) { best = k; break; }
    }
    return best;
}

int mq_oai_stop_feed(mq_oai_stop *s, const char *text, size_t n, mq_oai_buf *emit) {
    if (s->n == 0) return n ? mq_oai_buf_put(emit, text, n) : 0;
    const size_t old = s->held.n;
    if (mq_oai_buf_put(&s->held, text, n)) return -1;
    const char *h = s->held.p;
    size_t hn = s->held.n, first = (size_t)-1;
    /* Earliest complete occurrence of any stop string that ends in the new text: everything before
     * it is released. (hold_only: none; the held tail still waits for what follows.) */
    for (int i = 0; !s->hold_only && i < s->n; i++) {
        const char *st = s->stop[i];
        size_t sl = strlen(st);
        for (size_t p = 0; p + sl <= hn && p < first; p++)
            if (p + sl > old && h[p] == st[0] && !memcmp(h + p, st, sl)) { first = p; break; }
    }
    if (first != (size_t)-1) {
        int rc = mq_oai_buf_put(emit, h, first);
        s->held.n = 0;
        return rc ? -1 : 1;
    }
    size_t keep = held_suffix(s, h, hn);
    if (mq_oai_buf_put(emit, h, hn - keep)) return -1;
    memmove(s->held.p, h + hn - keep, keep);
    s->held.n = keep;
    return 0;
}

int mq_oai_stop_flush(mq_oai_stop *s, mq_oai_buf *emit) {
    int rc = s->held.n ? mq_oai_buf_put(emit, s->held.p, s->held.n) : 0;
    s->held.n = 0;
    return rc;
}

/* ---------- tool calls ---------- */

static const char CALL_OPEN[] = "<tool_call>", CALL_CLOSE[] = "</tool_call>";
static size_t tag_tail(const char *h, size_t n, const char *tag);

void mq_oai_calls_free(mq_oai_call *c, int n) {
    for (int i = 0; c && i < n; i++) {
        free(c[i].id);
        free(c[i].name);
        free(c[i].arguments);
    }
    free(c);
}

static const char *find_in(const char *s, size_t n, const char *needle) {
    const size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (s[i] == needle[0] && !memcmp(s + i, needle, k)) return s + i;
    return NULL;
}

int mq_oai_tool_calls(const char *text, size_t n, const char *id_base, mq_oai_call **calls, size_t *content_len) {
    *calls = NULL;
    *content_len = n;
    const char *first = find_in(text, n, CALL_OPEN), *end = text + n;
    if (!first) return 0;
    int k = 0, cap = 0, rc = 0;
    mq_oai_call *cs = NULL;
    for (const char *p = first; p; ) {
        const char *body = p + strlen(CALL_OPEN), *close = find_in(body, (size_t)(end - body), CALL_CLOSE);
        const char *stop = close ? close : end;
        /* one JSON value with only whitespace around it and no raw control character inside a
         * string, as json.loads takes it */
        int in_str = 0, ctl = 0;
        for (const char *q = body; q < stop && !ctl; q++) {
            if (in_str && *q == '\\' && q + 1 < stop) q++;
            else if (*q == '"') in_str = !in_str;
            else if (in_str && (unsigned char)*q < 0x20) ctl = 1;
        }
        if (ctl) { rc = 0; goto out; }
        const char *pe = NULL;
        cJSON *j = cJSON_ParseWithLengthOpts(body, (size_t)(stop - body), &pe, 0);
        while (j && pe && pe < stop && (*pe == ' ' || *pe == '\n' || *pe == '\r' || *pe == '\t')) pe++;
        if (j && pe != stop) {
            cJSON_Delete(j);
            j = NULL;
        }
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(j, "arguments");
        if (!cJSON_IsObject(j) || !cJSON_IsString(name) || !args) { cJSON_Delete(j); rc = 0; goto out; }
        if (k == cap) {
            cap = cap ? 2 * cap : 4;
            mq_oai_call *q = realloc(cs, (size_t)cap * sizeof *q);
            if (!q) { cJSON_Delete(j); rc = -1; goto out; }
            cs = q;
        }
        char idb[96];
        snprintf(idb, sizeof idb, "call_%s_%d", id_base, k);
        cs[k].id = dup_str(idb);
        cs[k].name = dup_str(name->valuestring);
        cs[k].arguments = mq_pyjson(args);
        k++;
        cJSON_Delete(j);
        if (!cs[k - 1].id || !cs[k - 1].name || !cs[k - 1].arguments) { rc = -1; goto out; }
        if (!close) break;
        const char *after = close + strlen(CALL_CLOSE);
        p = find_in(after, (size_t)(end - after), CALL_OPEN);
    }
    *calls = cs;
    *content_len = (size_t)(first - text);
    return k;
out:
    mq_oai_calls_free(cs, k);
    return rc;
}

int mq_oai_toolscan_feed(mq_oai_toolscan *t, const char *s, size_t n, mq_oai_buf *emit) {
    if (t->in_call) return mq_oai_buf_put(&t->call, s, n);
    if (mq_oai_buf_put(&t->held, s, n)) return -1;
    const char *h = t->held.p;
    const size_t hn = t->held.n;
    const char *at = find_in(h, hn, CALL_OPEN);
    if (at) {
        t->in_call = 1;
        if (mq_oai_buf_put(emit, h, (size_t)(at - h)) || mq_oai_buf_put(&t->call, at, hn - (size_t)(at - h)))
            return -1;
        t->held.n = 0;
        return 0;
    }
    const size_t keep = tag_tail(h, hn, CALL_OPEN);
    if (mq_oai_buf_put(emit, h, hn - keep)) return -1;
    memmove(t->held.p, h + hn - keep, keep);
    t->held.n = keep;
    return 0;
}

void mq_oai_toolscan_free(mq_oai_toolscan *t) {
    mq_oai_buf_free(&t->held);
    mq_oai_buf_free(&t->call);
    t->in_call = 0;
}

/* ---------- reasoning (Qwen3's <think> ... </think>) ---------- */

static const char THINK_OPEN[] = "<think>", THINK_CLOSE[] = "</think>";

int mq_oai_split_reasoning(const char *text, size_t n, size_t *r_at, size_t *r_len, size_t *content_at) {
    *r_at = *r_len = *content_at = 0;
    const char *o = find_in(text, n, THINK_OPEN);
    if (!o || !find_in(text, n, THINK_CLOSE)) return 0;
    const char *after = o + strlen(THINK_OPEN), *end = text + n;
    const char *c = find_in(after, (size_t)(end - after), THINK_CLOSE);
    if (!c) { /* only a </think> before the <think>: vLLM keeps what follows the <think> as content */
        *content_at = (size_t)(after - text);
        return 0;
    }
    *r_at = (size_t)(after - text);
    *r_len = (size_t)(c - after);
    *content_at = (size_t)(c - text) + strlen(THINK_CLOSE);
    return 1;
}

/* the longest tail of h[0..n) that is a proper prefix of tag */
static size_t tag_tail(const char *h, size_t n, const char *tag) {
    const size_t k = strlen(tag);
    for (size_t m = k - 1 < n ? k - 1 : n; m > 0; m--)
        if (!memcmp(h + n - m, tag, m)) return m;
    return 0;
}

int mq_oai_thinkscan_feed(mq_oai_thinkscan *t, const char *s, size_t n, mq_oai_buf *r, mq_oai_buf *c) {
    if (t->state == 2) return mq_oai_buf_put(c, s, n);
    if (mq_oai_buf_put(&t->held, s, n)) return -1;
    if (t->state == 0) {
        const size_t k = strlen(THINK_OPEN), hn = t->held.n;
        if (hn < k && !memcmp(THINK_OPEN, t->held.p, hn)) return 0; /* may still become the tag */
        if (hn >= k && !memcmp(t->held.p, THINK_OPEN, k)) {
            t->state = 1;
            memmove(t->held.p, t->held.p + k, hn - k);
            t->held.n = hn - k;
        } else {
            t->state = 2;
            int rc = mq_oai_buf_put(c, t->held.p, hn);
            t->held.n = 0;
            return rc;
        }
    }
    /* in the thinking */
    const char *h = t->held.p, *e = find_in(h, t->held.n, THINK_CLOSE);
    if (e) {
        const size_t before = (size_t)(e - h), rest = t->held.n - before - strlen(THINK_CLOSE);
        t->state = 2;
        int rc = mq_oai_buf_put(r, h, before) || mq_oai_buf_put(c, e + strlen(THINK_CLOSE), rest);
        t->held.n = 0;
        return rc ? -1 : 0;
    }
    const size_t keep = tag_tail(h, t->held.n, THINK_CLOSE);
    if (mq_oai_buf_put(r, h, t->held.n - keep)) return -1;
    memmove(t->held.p, h + t->held.n - keep, keep);
    t->held.n = keep;
    return 0;
}

int mq_oai_thinkscan_flush(mq_oai_thinkscan *t, mq_oai_buf *r, mq_oai_buf *c) {
    int rc = 0;
    if (t->held.n) rc = mq_oai_buf_put(t->state == 1 ? r : c, t->held.p, t->held.n);
    t->held.n = 0;
    return rc;
}

void mq_oai_thinkscan_free(mq_oai_thinkscan *t) {
    mq_oai_buf_free(&t->held);
    t->state = 0;
}
