/* oai: OpenAI-API request parsing/validation, response JSON and stop-string matching (no I/O). */
#ifndef MQ_OAI_H
#define MQ_OAI_H
#include <stddef.h>
#include <stdint.h>

#include "megaqwen.h"

typedef enum { MQ_OAI_CHAT = 0, MQ_OAI_COMPLETION = 1 } mq_oai_kind;

enum { MQ_OAI_MAX_STOP = 4, MQ_OAI_MAX_STOP_LEN = 256, MQ_OAI_MAX_STOP_IDS = 16, MQ_OAI_MAX_N = 16 };

/* A validated request. Every pointer is owned (mq_oai_req_free). */
typedef struct {
    mq_oai_kind kind;
    char *model;                 /* requested model name, NULL if absent */
    mq_chat_msg *msgs;           /* chat: (n_msgs) role/content, roles normalized */
    int n_msgs;
    int enable_thinking;         /* chat: Qwen3 template switch (default 1) */
    char *prompt;                /* completion: prompt text, or NULL when given as ids */
    int32_t *prompt_ids;         /* completion: (n_prompt_ids) prompt token ids, NULL for text */
    size_t n_prompt_ids;
    long max_tokens;             /* -1: not given (fill the context) */
    int has_temperature, has_top_p, has_top_k, has_min_p, has_seed, has_rep;
    float temperature, top_p, min_p, rep_penalty;
    float presence_penalty, frequency_penalty; /* OpenAI's, [-2, 2], 0 when absent */
    int32_t *bias_ids;           /* (n_bias) logit_bias: ids (not yet checked against the vocabulary) */
    float *bias_vals;            /* (n_bias) and their biases, [-100, 100] */
    int n_bias;
    int top_k;
    uint64_t seed;
    char *stop[MQ_OAI_MAX_STOP]; /* (n_stop) non-empty UTF-8 stop strings */
    int n_stop;
    int stream, include_usage;
    int logprobs;                /* 1: report each token's logprob (chat "logprobs": true, completions
                                  * "logprobs": N) */
    int top_logprobs;            /* alternatives per token (chat "top_logprobs", completions' N), 0..20 */
    int echo;                    /* completions: the prompt comes back first (with logprobs: theirs,
                                  * the first token's null); then max_tokens may be 0 */
    char *tools;                 /* chat: the tool definitions as a JSON array text, or NULL */
    int parse_calls;             /* chat: tools given and tool_choice "auto": <tool_call> blocks in the
                                  * reply become tool_calls */
    int ignore_eos;              /* vLLM's: generate max_tokens, past end-of-sequence tokens */
    int n_choices;               /* "n": choices (1..MQ_OAI_MAX_N), generated one after the other */
    int min_tokens;              /* vLLM's: the reply has at least this many tokens (end-of-sequence and
                                  * stop ids banned, stop strings not matched before) */
    int skip_special;            /* vLLM's skip_special_tokens (default 1): special tokens the model
                                  * emits (e.g. <|im_start|>) stay out of the reply's text */
    int32_t stop_ids[MQ_OAI_MAX_STOP_IDS]; /* vLLM's stop_token_ids: these end the reply too (their */
    int n_stop_ids;                        /* text stays in it) */
} mq_oai_req;

/* An API error: HTTP status plus OpenAI's error object fields. */
typedef struct {
    int status;
    const char *type;            /* "invalid_request_error", "server_error", ... */
    const char *code;            /* NULL or e.g. "invalid_api_key" */
    char param[64];              /* "" = null */
    char msg[512];
} mq_oai_err;

/* Fill e (always returns -1, for `return mq_oai_fail(...)`). */
int mq_oai_fail(mq_oai_err *e, int status, const char *type, const char *code, const char *param,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Parse and validate a request body of `kind`. 0 ok (free r with mq_oai_req_free), -1 with e set
 * (r left empty). Never reads past body+len; body need not be NUL-terminated. */
int mq_oai_parse(mq_oai_kind kind, const char *body, size_t len, mq_oai_req *r, mq_oai_err *e);
void mq_oai_req_free(mq_oai_req *r);
/* {"error":{...}} as a malloc'd string. */
char *mq_oai_error_json(const mq_oai_err *e);
/* 1 if s[0..n) is valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
int mq_oai_utf8_valid(const char *s, size_t n);

/* Usage numbers of one finished request. */
typedef struct {
    int prompt_tokens, completion_tokens, cached_tokens;
} mq_oai_usage;

/* One token's bytes (borrowed, may be part of a UTF-8 character) and logprob. */
typedef struct {
    const char *b;
    size_t n;
    float lp;
} mq_oai_alt;
/* A token's entry in a response's logprobs. */
typedef struct {
    mq_oai_alt tok;
    int has_lp;                  /* 0: null (an echoed prompt's first token) */
    int n_top;
    mq_oai_alt top[MQ_TOP_LOGPROBS_MAX];
    size_t text_offset;          /* completions: byte offset of the token's text in the choice's text */
} mq_oai_lp;
/* Logprobs of n tokens: NULL lp (or n 0 without want) gives "logprobs": null. */
typedef struct {
    const mq_oai_lp *lp;
    size_t n;
    int want;                    /* the request asked for logprobs: an empty list is [], not null */
} mq_oai_lps;

/* A tool call read from a reply (all malloc'd; mq_oai_calls_free). */
typedef struct {
    char *id;                    /* "call_..." */
    char *name;
    char *arguments;             /* JSON text, as Python's json.dumps writes the model's arguments */
} mq_oai_call;
/* The tool calls in a chat reply, read as vLLM's hermes parser (Qwen3's format) reads them: every
 * "<tool_call>JSON</tool_call>" block (the last may be unclosed) whose JSON is an object with a
 * string "name" and "arguments". Returns their count (*calls malloc'd, ids "call_<id_base>_<k>";
 * *content_len: the bytes before the first block, the reply's content), 0 when there is no block
 * or any block is not such JSON (the whole reply is then content), -1 when out of memory. */
int mq_oai_tool_calls(const char *text, size_t n, const char *id_base, mq_oai_call **calls, size_t *content_len);
void mq_oai_calls_free(mq_oai_call *c, int n);

/* What a finished request produced. */
typedef struct {
    const char *text;            /* chat: the content; completions: the text */
    size_t len;
    const char *reasoning;       /* chat with a reasoning parser: the thinking (reasoning_content), or NULL */
    size_t rlen;
    const char *finish;          /* "stop", "length" or "tool_calls" */
    const mq_oai_usage *usage;
    const mq_oai_lps *lps;       /* or NULL */
    const mq_oai_call *calls;    /* chat: the reply's tool calls (content null when len is 0), or NULL */
    int n_calls;
} mq_oai_reply;
/* Full (non-streamed) response body with n choices (r[i] is choice i; usage from r[0]), malloc'd. */
char *mq_oai_response_json(mq_oai_kind kind, const char *id, long created, const char *model, const mq_oai_reply *r,
                           int n);
/* A chat chunk whose delta carries the tool calls (index, id, type, name and all the arguments). */
char *mq_oai_calls_sse(const char *id, long created, const char *model, int index, const mq_oai_call *calls, int n,
                       int usage_null);
/* A chat chunk whose delta carries reasoning_content (and this chunk's logprobs, or NULL). */
char *mq_oai_reasoning_sse(const char *id, long created, const char *model, int index, const char *text, size_t len,
                           int usage_null, const mq_oai_lps *lps);
/* One SSE event "data: {chunk}\n\n", malloc'd. text may be NULL (no content field for chat's
 * final chunk); role_first adds chat's {"role":"assistant"}; finish NULL = null. usage_null adds
 * "usage":null (stream_options.include_usage). lps: this chunk's tokens' logprobs, or NULL. */
char *mq_oai_chunk_sse(mq_oai_kind kind, const char *id, long created, const char *model, int index /* choice */,
                       const char *text, size_t len, int role_first, const char *finish,
                       int usage_null, const mq_oai_lps *lps);
/* The final usage-only SSE event (choices: []), malloc'd. */
char *mq_oai_usage_sse(mq_oai_kind kind, const char *id, long created, const char *model,
                       const mq_oai_usage *u);
/* /tokenize: MQ_OAI_CHAT when the body has "messages" (then parsed as a chat request), else
 * MQ_OAI_COMPLETION ("prompt"). Its reply {"count", "max_model_len", "tokens"}, malloc'd. */
mq_oai_kind mq_oai_tokenize_kind(const char *body, size_t len);
char *mq_oai_tokenize_json(const int32_t *ids, size_t n, int max_ctx);
/* /detokenize: {"tokens": [ids in [0, vocab)]} -> *ids (malloc'd); 0, or -1 with e. Its reply
 * {"prompt": text}, malloc'd. */
int mq_oai_parse_detokenize(const char *body, size_t len, int vocab, int32_t **ids, size_t *n, mq_oai_err *e);
char *mq_oai_detokenize_json(const char *text);
/* GET /v1/models body, malloc'd. */
char *mq_oai_models_json(const char *model, long created, int max_ctx);

/* Growable byte buffer. */
typedef struct {
    char *p;
    size_t n, cap;
} mq_oai_buf;
int mq_oai_buf_put(mq_oai_buf *b, const char *s, size_t n); /* 0 or -1 (out of memory) */
void mq_oai_buf_free(mq_oai_buf *b);

/* Stop-string matcher over a text stream: text that could still be the start of a stop string is
 * held back, so a match is found even when it spans token boundaries and nothing past it leaks. */
typedef struct {
    char *const *stop;           /* (n) borrowed stop strings */
    int n;
    mq_oai_buf held;             /* text not yet released */
    int hold_only;               /* set by the caller: text fed now cannot complete a stop string
                                  * (min_tokens), though a string it begins may complete later */
} mq_oai_stop;
/* Add text; appends what may be released to emit. Returns 1 when a stop string completed (emit
 * gets the text before it; the rest is dropped), 0 otherwise, -1 out of memory. A match must end
 * in the text of this call (held text is a proper prefix of a stop string, or was fed hold_only). */
int mq_oai_stop_feed(mq_oai_stop *s, const char *text, size_t n, mq_oai_buf *emit);
/* End of stream without a match: release the held text. */
int mq_oai_stop_flush(mq_oai_stop *s, mq_oai_buf *emit);

/* Streamed text split at the first "<tool_call>": what comes before is released (less a tail that
 * could still begin the tag), the rest is kept in `call` for mq_oai_tool_calls at the end. */
typedef struct {
    mq_oai_buf held;             /* released text's undecided tail */
    mq_oai_buf call;             /* from "<tool_call>" on */
    int in_call;
} mq_oai_toolscan;
/* Adds text; appends what may be sent as content to emit. 0, or -1 out of memory. */
int mq_oai_toolscan_feed(mq_oai_toolscan *t, const char *s, size_t n, mq_oai_buf *emit);
void mq_oai_toolscan_free(mq_oai_toolscan *t);

/* Streamed Qwen3 reply split into thinking and content: a reply that opens with "<think>" is
 * thinking up to "</think>", content after it; any other reply is all content. (A finished
 * reply is split by mq_oai_split_reasoning.) */
typedef struct {
    int state;                   /* 0: deciding, 1: in the thinking, 2: content */
    mq_oai_buf held;             /* text that may still be (part of) a tag */
} mq_oai_thinkscan;
/* Adds text; appends thinking to r and content to c. 0, or -1 out of memory. */
int mq_oai_thinkscan_feed(mq_oai_thinkscan *t, const char *s, size_t n, mq_oai_buf *r, mq_oai_buf *c);
/* End of the reply: releases what is held (an unfinished thinking stays thinking). */
int mq_oai_thinkscan_flush(mq_oai_thinkscan *t, mq_oai_buf *r, mq_oai_buf *c);
void mq_oai_thinkscan_free(mq_oai_thinkscan *t);
/* A finished reply, as vLLM's qwen3 reasoning parser splits it: with both "<think>" and "</think>"
 * in it, the thinking is what lies between the first <think> and the first </think> after it and the
 * content what follows; returns 1 and the two ranges (offsets into text). Otherwise 0 (all content;
 * *content_at is past a <think> tag when only that one is there, as vLLM drops it). */
int mq_oai_split_reasoning(const char *text, size_t n, size_t *r_at, size_t *r_len, size_t *content_at);

#endif
