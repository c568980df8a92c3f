/* test_half: f32 <-> bf16 / f16 conversions (src/half.c): rounding to nearest even, ties, subnormals, range, NaN. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>
#include "half.h"

static float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static void test_f16_values(void **st) {
    (void)st;
    struct { float x; uint16_t h; } c[] = {
        {0.0f, 0x0000}, {-0.0f, 0x8000}, {1.0f, 0x3c00}, {-2.0f, 0xc000}, {0.5f, 0x3800},
        {65504.0f, 0x7bff},                          /* largest finite */
        {65519.0f, 0x7bff},                          /* below the midpoint to 65536 */
        {65520.0f, 0x7c00},                          /* the midpoint: ties to even = inf */
        {1e30f, 0x7c00}, {-INFINITY, 0xfc00},
        {1.0f + 1.0f / 2048, 0x3c00},                /* tie between 0x3c00 and 0x3c01: even */
        {1.0f + 3.0f / 2048, 0x3c02},                /* tie between 0x3c01 and 0x3c02: even */
        {1.0f + 1.0f / 2048 + 1.0f / 65536, 0x3c01}, /* just past the tie */
        {0.333333343f, 0x3555},
        {6.103515625e-05f, 0x0400},                  /* 2^-14, the smallest normal */
        {5.9604644775390625e-08f, 0x0001},           /* 2^-24, the smallest subnormal */
        {2.98023223876953125e-08f, 0x0000},          /* 2^-25: a tie with 0, to even */
        {4.0e-08f, 0x0001}, {1.0e-8f, 0x0000},
        {6.1017e-05f, 0x0400},                       /* 1023.7 x 2^-24: rounds up into the normals */
        {6.0975e-05f, 0x03ff},                       /* 1022.98 x 2^-24: the largest subnormal */
        {-3.0e-5f, 0x81f7},                          /* subnormal: 503.3 x 2^-24 -> 503 */
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        const uint16_t h = mq_half_f16(c[i].x);
        if (h != c[i].h) fail_msg("f16(%.9g) = 0x%04x, want 0x%04x", (double)c[i].x, h, c[i].h);
    }
    assert_true(isnan(mq_half_f16_f32(mq_half_f16(NAN))));
}

/* Every finite f16 survives f16 -> f32 -> f16, and the f32 -> f16 rounding of the midpoints between
 * neighbours goes to the even one. */
static void test_f16_roundtrip(void **st) {
    (void)st;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        if ((h & 0x7c00u) == 0x7c00u) continue; /* inf, NaN */
        const float x = mq_half_f16_f32((uint16_t)h);
        assert_int_equal(mq_half_f16(x), h);
        if ((h & 0x7fffu) == 0x7bffu) continue; /* the next one up is inf */
        const float y = mq_half_f16_f32((uint16_t)(h + 1)), mid = x + (y - x) / 2;
        if ((h & 0x8000u) == 0 && mid > x && mid < y) assert_int_equal(mq_half_f16(mid), (h & 1u) ? h + 1 : h);
    }
}

static void test_bf16(void **st) {
    (void)st;
    assert_int_equal(mq_half_bf16(1.0f), 0x3f80);
    assert_int_equal(mq_half_bf16(bits_f32(0x3f808000u)), 0x3f80); /* tie: even */
    assert_int_equal(mq_half_bf16(bits_f32(0x3f818000u)), 0x3f82); /* tie: even */
    assert_int_equal(mq_half_bf16(bits_f32(0x3f808001u)), 0x3f81);
    assert_true(mq_half_bf16_f32(mq_half_bf16(3.0f)) == 3.0f);
    assert_true(isnan(mq_half_bf16_f32(mq_half_bf16(NAN))));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_values),
        cmocka_unit_test(test_f16_roundtrip),
        cmocka_unit_test(test_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
