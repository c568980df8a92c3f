/* megaqwen.h: the public C API — open a Qwen3 checkpoint, tokenize, feed, read logits, sample. */
#ifndef MEGAQWEN_H
#define MEGAQWEN_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mq_ctx mq_ctx;

/* Options for mq_open. Fill with mq_params_default first. */
typedef struct {
    const char *backend;  /* "auto" (cuda if available, else cpu), "cpu" or "cuda" */
    int max_ctx;          /* KV cache positions; 0 = min(max_position_embeddings, 4096) */
    int n_threads;        /* CPU threads; 0 = all cores */
    int load_tokenizer;   /* 1: tokenizer.json must load; 0: skip (ids-only use) */
    const char *kv_type;  /* KV cache element: NULL (f32, or $MQ_CUDA_KV on cuda), "f32", "bf16" or
                             "f16" (cuda: half the KV bytes, faster at long context, slightly less
                             exact, docs/perf-notes.md "KV cache precision"; cpu: the same rounded
                             values in f32 storage, to compare the backends like for like) */
} mq_params;

/* Sampling settings. temperature 0 = greedy. top_k 0 / top_p 1 / min_p 0 / rep_penalty 1 = off. */
typedef struct mq_sampling {
    float temperature;
    int top_k;
    float top_p;
    float min_p;
    float rep_penalty;
    int rep_last_n;       /* how many recent tokens the penalty looks at; 0 = all */
    uint64_t seed;
    float presence_penalty;  /* OpenAI's, in [-2, 2] (0 = off): subtracted from the logit of every */
    float frequency_penalty; /* id generated so far, the latter once per occurrence */
    int penalty_from;     /* where "generated so far" begins: positions >= this in the history
                           * (the prompt's length; 0 = the whole history) */
    const int32_t *bias_ids; /* (n_bias) OpenAI's logit_bias: bias_vals[i] in [-100, 100] is added */
    const float *bias_vals;  /* to the logit of bias_ids[i] before anything else; mq_set_sampling */
    int n_bias;              /* copies them */
    int min_tokens;          /* vLLM's min_tokens: while fewer than this many tokens follow */
    const int32_t *ban_ids;  /* penalty_from in the history, ban_ids (n_ban: the end-of-sequence */
    int n_ban;               /* and stop ids) cannot be chosen; copied like the bias */
} mq_sampling;

/* Read-only facts about an open context. */
typedef struct {
    int vocab_size, hidden_size, intermediate_size, n_layers, n_heads, n_kv_heads, head_dim;
    int max_pos;          /* the model's longest context: max_position_embeddings, or more under
                           * YaRN / linear RoPE scaling (factor x the original length) */
    int max_ctx;          /* this context's KV cache capacity */
    const char *backend;  /* "cpu" or "cuda" */
    int eos_ids[8];       /* generation stops at any of these (generation_config eos_token_id) */
    int n_eos;
    size_t weight_bytes;  /* bytes of weights one decode step reads */
    int kv_elt_bytes;     /* bytes per cached K or V element (4: fp32 cache, 2: bf16) */
    char rope[128];       /* RoPE in words, e.g. "rope theta 1e+06, yarn factor 4 (original 32768, ...)" */
} mq_info;

typedef struct {
    const char *role;     /* "system", "user", "assistant" or "tool" */
    const char *content;
    const char *tool_calls; /* assistant: its OpenAI tool_calls as a JSON array text, or NULL */
} mq_chat_msg;

void mq_params_default(mq_params *p);
/* Open a checkpoint directory (config.json, safetensors, tokenizer.json). NULL on error. */
mq_ctx *mq_open(const char *dir, const mq_params *p);
void mq_close(mq_ctx *c);
/* The last error on this thread, one line; "" if none. */
const char *mq_last_error(void);
const mq_info *mq_get_info(const mq_ctx *c);

/* Text <-> ids (need load_tokenizer). *ids / the returned string are malloc'd; caller frees. */
int mq_tokenize(mq_ctx *c, const char *text, size_t len, int32_t **ids, size_t *n);
char *mq_detokenize(mq_ctx *c, const int32_t *ids, size_t n);
/* Streaming detokenize: returns bytes appended to out (never a broken UTF-8 char), -1 on error.
 * Call with id < 0 to flush at end of stream. The stream state lives in the context. An id the
 * model has but the tokenizer lacks (embedding padding) appends nothing; past the model: -1. */
int mq_detok_stream(mq_ctx *c, int32_t id, char *out, size_t cap);
void mq_detok_stream_reset(mq_ctx *c);
/* Qwen3 chat template; malloc'd prompt string. */
char *mq_chat_prompt(mq_ctx *c, const mq_chat_msg *msgs, int n, int add_generation_prompt,
                     int enable_thinking);
/* The same with tools (a JSON array of OpenAI tool definitions, NULL for none). */
char *mq_chat_prompt_tools(mq_ctx *c, const mq_chat_msg *msgs, int n, const char *tools,
                           int add_generation_prompt, int enable_thinking);
int32_t mq_token_id(mq_ctx *c, const char *special);  /* e.g. "<|im_end|>"; -1 if absent */
/* A token's raw bytes (not NUL-terminated; may be part of a UTF-8 character): *len bytes, or NULL
 * with *len 0 for an id the tokenizer lacks (embedding padding) or without a tokenizer. */
const char *mq_token_bytes(mq_ctx *c, int32_t id, size_t *len);
/* 1 if id is a special token (tokenizer.json's added tokens with "special": true), else 0. What
 * vLLM's skip_special_tokens leaves out of a reply's text. */
int mq_token_is_special(mq_ctx *c, int32_t id);

/* Feed n tokens at the current position (appended to the KV cache). If all_logits is non-NULL it
 * receives (n, vocab) float rows. Error if the context would pass max_ctx. Returns 0 or -1. */
int mq_feed(mq_ctx *c, const int32_t *ids, int n, float *all_logits);
/* Logits (vocab) of the last fed position; NULL before any feed. */
const float *mq_logits(mq_ctx *c);
int mq_pos(const mq_ctx *c);
/* Drop positions >= pos (keeps the KV cache of the prefix, for prompt reuse). */
int mq_rewind(mq_ctx *c, int pos);
void mq_reset(mq_ctx *c);

void mq_sampling_default(mq_sampling *s);   /* greedy */
/* Apply generation_config.json defaults where the file has them. */
void mq_sampling_from_model(mq_ctx *c, mq_sampling *s);
int mq_set_sampling(mq_ctx *c, const mq_sampling *s);  /* also reseeds the RNG */
/* Choose the next token from mq_logits with the current sampling settings. */
int32_t mq_sample(mq_ctx *c);
/* Feed `id` and choose the next token (may run fused on the device). Returns token or -1. */
int32_t mq_step(mq_ctx *c, int32_t id);
/* Greedy/sampled generation from the current state: feeds `first`, then each chosen token, up to
 * n tokens or an eos id. out gets the generated ids; returns count or -1. cb (optional) is called
 * per token; returning non-zero stops. */
typedef int (*mq_token_cb)(int32_t id, void *user);
int mq_generate(mq_ctx *c, int32_t first, int n, int32_t *out, mq_token_cb cb, void *user);
int mq_is_eos(const mq_ctx *c, int32_t id);

/* Log-probabilities of one position, from the model's raw distribution: log-softmax of the logits,
 * before temperature, penalties and top-k / top-p / min-p (as vLLM's default raw logprobs). */
enum { MQ_TOP_LOGPROBS_MAX = 20 };
typedef struct {
    float logprob;                           /* of the chosen (or given) token */
    int n_top;                               /* entries in top_*: the most likely ids, best first */
    int32_t top_ids[MQ_TOP_LOGPROBS_MAX];
    float top_lp[MQ_TOP_LOGPROBS_MAX];
} mq_logprob;
/* From a logits row (vocab floats): id's logprob and the n_top (<= 20) most likely (ties: lower
 * id first). Sums in double. */
void mq_logprobs_row(const float *logits, int vocab, int32_t id, int n_top, mq_logprob *out);
/* mq_generate that also reports each token's logprobs (cb gets them; n_top alternatives). Runs one
 * forward per token with the logits on the host and the host sampler (the same choices and RNG
 * stream as the device's sampler), so it is slower than mq_generate. */
typedef int (*mq_token_lp_cb)(int32_t id, const mq_logprob *lp, void *user);
int mq_generate_lp(mq_ctx *c, int32_t first, int n, int n_top, int32_t *out, mq_token_lp_cb cb, void *user);

/* Teacher-forced perplexity on ids with HF's sliding-window method (window ctx, stride).
 * Writes ppl, its standard error (delta method over per-token NLL) and scored token count. */
int mq_perplexity(mq_ctx *c, const int32_t *ids, size_t n, int ctx, int stride, double *ppl,
                  double *stderr_ppl, size_t *n_scored);

#ifdef __cplusplus
}
#endif
#endif
