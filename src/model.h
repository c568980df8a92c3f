/* model: binds Qwen3 tensor names to typed, shape-checked weight views (no copies). */
#ifndef MQ_MODEL_H
#define MQ_MODEL_H
#include "config.h"
#include "safetensors.h"

/* A weight view into the mmap: row-major, dtype as stored (F32, F16 or BF16). */
typedef struct {
    const void *p;
    mq_dtype dt;
} mq_tref;

typedef struct {
    mq_tref in_norm;   /* input_layernorm          (hidden) */
    mq_tref q;         /* self_attn.q_proj          (n_heads*head_dim, hidden) */
    mq_tref k;         /* self_attn.k_proj          (n_kv_heads*head_dim, hidden) */
    mq_tref v;         /* self_attn.v_proj          (n_kv_heads*head_dim, hidden) */
    mq_tref q_norm;    /* self_attn.q_norm          (head_dim) */
    mq_tref k_norm;    /* self_attn.k_norm          (head_dim) */
    mq_tref o;         /* self_attn.o_proj          (hidden, n_heads*head_dim) */
    mq_tref post_norm; /* post_attention_layernorm  (hidden) */
    mq_tref gate;      /* mlp.gate_proj             (intermediate, hidden) */
    mq_tref up;        /* mlp.up_proj               (intermediate, hidden) */
    mq_tref down;      /* mlp.down_proj             (hidden, intermediate) */
} mq_layer_w;

typedef struct {
    mq_config cfg;
    mq_gencfg gen;
    mq_st *st;          /* owns the mmaps */
    mq_tref embed;      /* model.embed_tokens (vocab, hidden) */
    mq_tref final_norm; /* model.norm (hidden) */
    mq_tref lm_head;    /* lm_head (vocab, hidden); the embed view when tied */
    mq_layer_w *layers; /* (n_layers) */
    char *dir;          /* checkpoint directory */
} mq_model;

/* Load config.json, generation_config.json and the safetensors of `dir`; check every tensor's
 * presence, shape and dtype. Returns 0 or -1 (mq_err: one line naming file and problem). */
int mq_model_load(mq_model *m, const char *dir);
void mq_model_free(mq_model *m);

/* Element i of a weight view as float (bf16/f16/f32). */
float mq_model_at(mq_tref t, size_t i);
/* Bytes of all weights a decode step reads (layers + final norm + lm_head). */
size_t mq_model_step_bytes(const mq_model *m);

#endif
