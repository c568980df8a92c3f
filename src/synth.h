/* synth: writes a random but deterministic, confidently-predicting Qwen3 checkpoint of a real shape. */
#ifndef MQ_SYNTH_H
#define MQ_SYNTH_H
#include <stdint.h>
#include <stdio.h>
#include "config.h"

typedef struct {
    const char *shape;         /* a name of mq_synth_shape_list(), e.g. "qwen3-0.6b" or "tiny" */
    uint64_t seed;             /* same seed (and shape/dtype/tied) => byte-identical files */
    mq_dtype dtype;            /* MQ_BF16 (default) or MQ_F32 */
    int tied;                  /* -1: the shape's default (as the real model: untied for 8B, 14B), 0: untied, 1: tied */
    int layers;                /* > 0: this many layers instead of the shape's (a big shape's kernels, tested fast) */
    double yarn_factor;        /* > 0: config.json asks for YaRN RoPE scaling with this factor ... */
    int yarn_orig;             /* ... over this original_max_position_embeddings (Qwen's advice: 4, 32768) */
    const char *tokenizer_dir; /* NULL: env MQ_TOKENIZER_DIR, else the build's MQ_TOKENIZER_DIR */
    FILE *log;                 /* what was written and the scale notes; NULL = silent */
} mq_synth_opts;

void mq_synth_defaults(mq_synth_opts *o);
/* The known shape names, for messages: "qwen3-0.6b, qwen3-1.7b, ... or tiny". */
const char *mq_synth_shape_list(void);
/* Dims of a named shape (config as synth writes it). Returns 0, or -1 for an unknown name. */
int mq_synth_shape(const char *shape, mq_config *c);
/* Write config.json, generation_config.json, model.safetensors (+ tokenizer files when found)
 * into dir (created if needed). Returns 0 or -1 (mq_err). */
int mq_synth_write(const char *dir, const mq_synth_opts *o);

#endif
