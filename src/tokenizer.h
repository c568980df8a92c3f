/* tokenizer: byte-level BPE from tokenizer.json, exact to HF tokenizers (NFC, split regex, merges). */
#ifndef MQ_TOKENIZER_H
#define MQ_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>

typedef struct mq_tok mq_tok;

/* Load DIR/tokenizer.json (and tokenizer_config.json if present). NULL on error (mq_err). */
mq_tok *mq_tok_load(const char *dir);
void mq_tok_free(mq_tok *t);
/* Encode UTF-8 text (special/added tokens in the text match as whole tokens). Invalid UTF-8 is
 * an error (-1, mq_err says at which byte). *ids is malloc'd; caller frees. */
int mq_tok_encode(const mq_tok *t, const char *text, size_t len, int32_t **ids, size_t *n);
/* Decode to UTF-8 bytes (malloc'd, NUL-terminated; *len excludes the NUL). Out-of-range id: -1. */
int mq_tok_decode(const mq_tok *t, const int32_t *ids, size_t n, char **out, size_t *len);
/* Raw bytes of one token (after byte-level unmapping); NULL if id is out of range. */
const char *mq_tok_bytes(const mq_tok *t, int32_t id, size_t *len);
int mq_tok_vocab_size(const mq_tok *t);
/* Id of an added/special token by its content ("<|im_end|>"), -1 if absent. */
int32_t mq_tok_special(const mq_tok *t, const char *content);
/* 1 if id is an added token marked "special" in tokenizer.json (e.g. <|im_start|>; not Qwen3's
 * <think> or <tool_call>, which are added but not special), else 0. */
int mq_tok_is_special(const mq_tok *t, int32_t id);

/* Streaming decoder: holds back an incomplete UTF-8 sequence until it completes. */
typedef struct {
    char pend[8];
    int npend;
} mq_tok_stream;
/* Append token `id`'s bytes; writes the completed UTF-8 text to out (cap >= 64 + token length)
 * and returns its length, or -1 for a bad id. */
int mq_tok_stream_put(const mq_tok *t, mq_tok_stream *s, int32_t id, char *out, size_t cap);
/* Flush held bytes at end of stream (an incomplete sequence becomes U+FFFD). */
int mq_tok_stream_flush(mq_tok_stream *s, char *out, size_t cap);

#endif
