/* sampler: greedy, temperature, top-k, top-p, min-p, repetition penalty with a seeded RNG. */
#ifndef MQ_SAMPLER_H
#define MQ_SAMPLER_H
#include <stdint.h>
#include "megaqwen.h"

typedef struct {
    mq_sampling p;
    uint64_t rng;        /* xorshift64* state, from p.seed */
    int vocab;
    float *probs;        /* (vocab) scratch, allocated once */
    int32_t *idx;        /* (vocab) scratch */
    int32_t *cnt;        /* (vocab) occurrence counts for presence / frequency (entries of the window only) */
    int32_t *bias_ids;   /* (p.n_bias) the sampler's own copy of the logit bias; p.bias_* point here */
    float *bias_vals;
    int32_t *ban_ids;    /* (p.n_ban) own copy of the min_tokens ban list; p.ban_ids points here */
} mq_sampler;

int mq_sampler_init(mq_sampler *s, int vocab, const mq_sampling *p);
void mq_sampler_free(mq_sampler *s);
/* Choose the next token from logits (vocab); logits may be modified (penalties applied in place).
 * hist = previous tokens (prompt + generated) for the repetition penalty. */
int mq_sampler_sample(mq_sampler *s, float *logits, const int32_t *hist, int n_hist);
/* Index of the largest logit (lowest index wins ties). */
int mq_sampler_argmax(const float *logits, int n);
/* Uniform float in [0,1) from a xorshift64* state (shared with device samplers). */
float mq_sampler_rand(uint64_t *state);

#endif
