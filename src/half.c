/* half: the 16-bit float formats (bf16, f16) to and from f32, rounding to nearest even as the GPU does. */
#include "half.h"

#include <math.h>
#include <string.h>

uint16_t mq_half_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float mq_half_bf16_f32(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

uint16_t mq_half_f16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    const uint16_t s = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return s | 0x7e00u;           /* NaN */
    if (a >= 0x477ff000u) return s | 0x7c00u;          /* >= 65520 rounds past 65504: inf (and inf) */
    if (a >= 0x38800000u) {                            /* a normal f16 (>= 2^-14): keep 10 mantissa bits */
        a += 0x0fffu + ((a >> 13) & 1u);               /* round to nearest even on the 13 dropped bits */
        return s | (uint16_t)((a - 0x38000000u) >> 13); /* exponent bias 127 -> 15 */
    }
    /* subnormal (or zero): the value is m x 2^-24 with m = |x| 2^24 rounded to nearest even (the
     * scaling is exact; m = 1024 is the smallest normal, whose encoding is 0x0400) */
    return s | (uint16_t)nearbyintf(fabsf(x) * 16777216.0f);
}

float mq_half_f16_f32(uint16_t h) {
    uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, f = h & 0x3ffu, u;
    if (e == 0) {
        if (f == 0) {
            u = s;
        } else { /* subnormal: renormalize */
            e = 127 - 15 + 1;
            while (!(f & 0x400u)) {
                f <<= 1;
                e--;
            }
            u = s | e << 23 | (f & 0x3ffu) << 13;
        }
    } else if (e == 31) {
        u = s | 0x7f800000u | f << 13;
    } else {
        u = s | (e + 127 - 15) << 23 | f << 13;
    }
    float x;
    memcpy(&x, &u, 4);
    return x;
}
