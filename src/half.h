/* half: the 16-bit float formats (bf16, f16) to and from f32, rounding to nearest even as the GPU does. */
#ifndef MQ_HALF_H
#define MQ_HALF_H
#include <stdint.h>

/* f32 -> bf16 bits, round to nearest even; a NaN stays a (quiet) NaN. */
uint16_t mq_half_bf16(float x);
/* bf16 bits -> f32 (exact). */
float mq_half_bf16_f32(uint16_t h);
/* f32 -> f16 bits, round to nearest even: subnormals below 2^-14, +-inf from 65520 on (65504 is the
 * largest finite f16), a NaN stays a (quiet) NaN. The same value CUDA's __float2half_rn gives. */
uint16_t mq_half_f16(float x);
/* f16 bits -> f32 (exact, subnormals included). */
float mq_half_f16_f32(uint16_t h);

#endif
