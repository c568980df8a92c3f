/* test_rope: RoPE inverse frequencies (default, linear, dynamic, YaRN) and the shared cos / sin table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"
#include "rope.h"

static mq_rope plain(double theta) {
    mq_rope r;
    memset(&r, 0, sizeof r);
    r.type = MQ_ROPE_DEFAULT;
    r.theta = theta;
    r.factor = 1.0;
    r.attn_factor = 1.0;
    return r;
}

/* Qwen's advice for long inputs: YaRN x4 over the original 32768 positions. */
static mq_rope qwen_yarn(void) {
    mq_rope r = plain(1e6);
    r.type = MQ_ROPE_YARN;
    r.factor = 4.0;
    r.orig_max = 32768;
    r.beta_fast = 32;
    r.beta_slow = 1;
    r.truncate = 1;
    r.attn_factor = 0.1 * log(4.0) + 1.0;
    return r;
}

/* Plain RoPE is HF's float32 1 / theta^(2i/d); dynamic equals it (below max_position_embeddings);
 * linear divides it by the factor in float32. */
static void test_plain_linear_dynamic(void **state) {
    (void)state;
    float a[64], b[64];
    mq_rope r = plain(1e6);
    mq_rope_inv_freq(&r, 128, a);
    for (int i = 0; i < 64; i++) assert_true(a[i] == 1.0f / powf(1e6f, (float)(2 * i) / 128.0f));
    assert_true(a[0] == 1.0f);
    r.type = MQ_ROPE_DYNAMIC;
    r.factor = 4;
    mq_rope_inv_freq(&r, 128, b);
    assert_memory_equal(a, b, sizeof a);
    r.type = MQ_ROPE_LINEAR;
    mq_rope_inv_freq(&r, 128, b);
    for (int i = 0; i < 64; i++) assert_true(b[i] == a[i] / 4.0f);
}

/* YaRN for Qwen3 (head_dim 128, theta 1e6, original 32768, beta 32 / 1): the ramp's bounds are
 * floor(128 ln(32768 / (32 * 2 pi)) / (2 ln 1e6)) = floor(23.61) = 23 and ceil(39.65) = 40. Below
 * 23 a frequency is kept, from 40 on it is divided by the factor, in between the two are blended
 * with weight (i - 23) / 17. */
static void test_yarn_qwen(void **state) {
    (void)state;
    float p[64], y[64];
    mq_rope pr = plain(1e6), yr = qwen_yarn();
    mq_rope_inv_freq(&pr, 128, p);
    mq_rope_inv_freq(&yr, 128, y);
    const double lo = 128 * log(32768 / (32 * 2 * M_PI)) / (2 * log(1e6));
    const double hi = 128 * log(32768 / (2 * M_PI)) / (2 * log(1e6));
    assert_int_equal((int)floor(lo), 23);
    assert_int_equal((int)ceil(hi), 40);
    for (int i = 0; i < 64; i++) {
        const float pf = powf(1e6f, (float)(2 * i) / 128.0f), inter = 1.0f / (4.0f * pf);
        if (i <= 23) {
            assert_true(y[i] == p[i]);
        } else if (i >= 40) {
            assert_true(y[i] == inter);
        } else {
            const double w = (i - 23) / 17.0; /* share of the interpolated (divided) frequency */
            const double want = w * inter + (1 - w) * p[i];
            assert_true(y[i] < p[i] && y[i] > inter);
            assert_float_equal(y[i], want, 2e-6 * want);
        }
        if (i) assert_true(y[i] < y[i - 1]);
    }
    /* untruncated bounds move the ramp: 23.61 .. 39.65 instead of 23 .. 40 */
    yr.truncate = 0;
    mq_rope_inv_freq(&yr, 128, y);
    assert_true(y[23] == p[23]);
    assert_true(y[24] < p[24]);
    const float pf40 = powf(1e6f, 80.0f / 128.0f);
    assert_true(y[40] == 1.0f / (4.0f * pf40));
    const double w39 = (39 - lo) / (hi - lo);
    assert_float_equal(y[39], w39 / (4.0 * powf(1e6f, 78.0f / 128.0f)) + (1 - w39) * p[39], 2e-6 * p[39]);
}

/* The table: position 0 is (attn, 0); every entry is float32(cos / sin of float32(p * inv)) times
 * the attention factor in float32, so plain RoPE's table is unchanged by the scaling support. */
static void test_table(void **state) {
    (void)state;
    const int hd = 32, half = 16, n = 300;
    float *t = malloc((size_t)n * hd * sizeof(float)), inv[16];
    assert_non_null(t);
    mq_rope r = plain(1e4);
    mq_rope_table(&r, hd, n, t);
    mq_rope_inv_freq(&r, hd, inv);
    for (int p = 0; p < n; p++)
        for (int i = 0; i < half; i++) {
            const float ang = (float)p * inv[i];
            assert_true(t[(p * half + i) * 2] == (float)cos((double)ang));
            assert_true(t[(p * half + i) * 2 + 1] == (float)sin((double)ang));
        }
    r = qwen_yarn();
    r.theta = 1e4;
    mq_rope_table(&r, hd, n, t);
    mq_rope_inv_freq(&r, hd, inv);
    const float s = (float)r.attn_factor;
    assert_true(t[0] == s && t[1] == 0.0f);
    for (int p = 0; p < n; p += 7)
        for (int i = 0; i < half; i++) {
            const float ang = (float)p * inv[i];
            assert_true(t[(p * half + i) * 2] == (float)cos((double)ang) * s);
            assert_true(t[(p * half + i) * 2 + 1] == (float)sin((double)ang) * s);
            const double c = t[(p * half + i) * 2], sn = t[(p * half + i) * 2 + 1];
            assert_float_equal(sqrt(c * c + sn * sn), s, 1e-6); /* rotation by the scaled radius */
        }
    free(t);
}

static void test_describe(void **state) {
    (void)state;
    char buf[200];
    mq_rope r = qwen_yarn();
    mq_rope_describe(&r, buf, sizeof buf);
    assert_non_null(strstr(buf, "yarn factor 4 (original 32768"));
    assert_non_null(strstr(buf, "attention x1.13863"));
    r = plain(1e6);
    mq_rope_describe(&r, buf, sizeof buf);
    assert_string_equal(buf, "rope theta 1e+06");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_linear_dynamic),
        cmocka_unit_test(test_yarn_qwen),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
