/* config: Qwen3 config.json and generation_config.json parsed into plain structs. */
#ifndef MQ_CONFIG_H
#define MQ_CONFIG_H
#include <stddef.h>
#include <stdint.h>

typedef enum { MQ_F32 = 0, MQ_F16 = 1, MQ_BF16 = 2 } mq_dtype;

/* RoPE variants HF transformers implements that a Qwen3 checkpoint may name. DYNAMIC equals
 * DEFAULT up to max_position_embeddings, which is as far as it is allowed to run here. */
typedef enum { MQ_ROPE_DEFAULT = 0, MQ_ROPE_LINEAR, MQ_ROPE_DYNAMIC, MQ_ROPE_YARN } mq_rope_type;

/* rope_scaling (4.x) / rope_parameters (5.x), resolved the way transformers 5.x resolves them
 * (defaults filled in), so src/rope.c only does arithmetic. */
typedef struct {
    mq_rope_type type;
    double theta;            /* rope_theta */
    double factor;           /* LINEAR / DYNAMIC / YARN: scaling factor (>= 1); 1 for DEFAULT */
    int orig_max;            /* YARN: original_max_position_embeddings (defaults to max_pos) */
    double beta_fast;        /* YARN: ramp bounds in rotations over orig_max: 32 ... */
    double beta_slow;        /* ... and 1 unless set */
    int truncate;            /* YARN: floor / ceil the ramp's dimension bounds (default true) */
    double attn_factor;      /* multiplies cos and sin: 1, or YARN's attention_factor (0.1 ln f + 1) */
} mq_rope;

typedef struct {
    int vocab_size;          /* 151936 for Qwen3 */
    int hidden_size;         /* d_model, e.g. 1024 */
    int intermediate_size;   /* MLP width, e.g. 3072 */
    int n_layers;            /* num_hidden_layers */
    int n_heads;             /* num_attention_heads (query heads) */
    int n_kv_heads;          /* num_key_value_heads; n_heads % n_kv_heads == 0 */
    int head_dim;            /* explicit in Qwen3 configs (128); else hidden/n_heads */
    int max_pos;             /* max_position_embeddings */
    int ctx_limit;           /* longest context allowed: max_pos, or YARN / LINEAR factor x the
                              * original length where larger (how vLLM derives max_model_len) */
    mq_rope rope;            /* rope_theta and scaling: top level (4.x) or rope_parameters (5.x) */
    float rms_eps;           /* rms_norm_eps */
    int tie_embeddings;      /* tie_word_embeddings */
    mq_dtype dtype;          /* torch_dtype / dtype; informational (tensors carry their own) */
    int bos_token_id;        /* -1 when absent */
    int eos_token_id;        /* -1 when absent */
} mq_config;

/* Generation defaults; has_* say whether the file set the field. */
typedef struct {
    int eos_ids[8];
    int n_eos;
    int has_temperature, has_top_k, has_top_p, has_min_p, has_rep_penalty, has_do_sample;
    float temperature, top_p, min_p, rep_penalty;
    int top_k, do_sample;
} mq_gencfg;

/* Parse config.json at `path`. Rejects: bad JSON, missing/invalid fields, model_type other than
 * "qwen3", attention_bias true, unsupported dtype, inconsistent dims. Returns 0 or -1 (mq_err). */
int mq_config_load(mq_config *c, const char *path);
/* Same, from a buffer (for the fuzzer and tests); `name` is used in error messages. */
int mq_config_parse(mq_config *c, const char *json, size_t len, const char *name);
/* generation_config.json; a missing file is not an error (returns 0, nothing set). */
int mq_config_load_gen(mq_gencfg *g, const char *path);
const char *mq_dtype_name(mq_dtype t);
size_t mq_dtype_size(mq_dtype t);

#endif
