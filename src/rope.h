/* rope: RoPE inverse frequencies and cos / sin tables, computed in float32 the way HF transformers does. */
#ifndef MQ_ROPE_H
#define MQ_ROPE_H
#include "config.h"

/* inv (head_dim/2): inverse frequencies for r (transformers' _compute_{default,linear,dynamic,yarn}
 * _parameters at their initial sequence length), each step rounded to float32 as torch rounds it. */
void mq_rope_inv_freq(const mq_rope *r, int head_dim, float *inv);
/* tab (n_pos, head_dim/2, 2): for position p and pair i, cos and sin of float32(p * inv[i]), each
 * times r->attn_factor in float32 (Qwen3RotaryEmbedding's attention_scaling). Every backend reads
 * this one table, so CPU and GPU rotate by bitwise the same numbers. */
void mq_rope_table(const mq_rope *r, int head_dim, int n_pos, float *tab);
/* One line describing r for logs, e.g. "yarn factor 4 (original 32768), attention x1.1386". */
void mq_rope_describe(const mq_rope *r, char *buf, size_t n);

#endif
