/* test_sampler: greedy, temperature, top-k/top-p/min-p support, seeding, repetition penalty, NaN. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include <stdlib.h>
#include "err.h"
#include "sampler.h"

enum { V = 8 };

static mq_sampling base(void) {
    mq_sampling p = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .rep_penalty = 1.0f,
                     .rep_last_n = 0, .seed = 42};
    return p;
}

/* logits of a known distribution: p ∝ {8,4,2,1,1,0.5,0.25,0.25}/17 */
static void dist(float *l) {
    const float w[V] = {8, 4, 2, 1, 1, 0.5f, 0.25f, 0.25f};
    for (int i = 0; i < V; i++) l[i] = logf(w[i]);
}

static int draw(mq_sampler *s) {
    float l[V];
    dist(l);
    int t = mq_sampler_sample(s, l, NULL, 0);
    assert_true(t >= 0 && t < V);
    return t;
}

static void test_argmax(void **st) {
    (void)st;
    float a[5] = {1, 3, 3, -1, 2};
    assert_int_equal(mq_sampler_argmax(a, 5), 1); /* lowest index wins ties */
    float b[3] = {NAN, 0.5f, NAN};
    assert_int_equal(mq_sampler_argmax(b, 3), 1); /* NaNs ignored */
    mq_sampling p = base();
    p.temperature = 0.0f;
    mq_sampler s;
    assert_int_equal(mq_sampler_init(&s, 5, &p), 0);
    float c[5] = {1, 3, 3, -1, 2};
    assert_int_equal(mq_sampler_sample(&s, c, NULL, 0), 1);
    mq_sampler_free(&s);
}

static void test_topk1_is_greedy(void **st) {
    (void)st;
    mq_sampling p = base();
    p.top_k = 1;
    mq_sampler s;
    assert_int_equal(mq_sampler_init(&s, V, &p), 0);
    for (int i = 0; i < 200; i++) assert_int_equal(draw(&s), 0);
    mq_sampler_free(&s);
}

/* Empirical frequencies over 20000 draws. */
static void freqs(const mq_sampling *p, double *f) {
    mq_sampler s;
    assert_int_equal(mq_sampler_init(&s, V, p), 0);
    memset(f, 0, V * sizeof *f);
    for (int i = 0; i < 20000; i++) f[draw(&s)] += 1.0 / 20000;
    mq_sampler_free(&s);
}

static void test_temperature_frequencies(void **st) {
    (void)st;
    mq_sampling p = base();
    double f[V];
    freqs(&p, f);
    const double w[V] = {8, 4, 2, 1, 1, 0.5, 0.25, 0.25};
    for (int i = 0; i < V; i++) assert_true(fabs(f[i] - w[i] / 17.0) < 0.02);
    /* T = 0.5 squares the weights: p ∝ {64,16,4,1,1,.25,.0625,.0625} */
    p.temperature = 0.5f;
    freqs(&p, f);
    assert_true(fabs(f[0] - 64.0 / 86.375) < 0.02);
    assert_true(fabs(f[1] - 16.0 / 86.375) < 0.02);
}

static void test_topk_topp_minp_support(void **st) {
    (void)st;
    mq_sampling p = base();
    double f[V];
    p.top_k = 3; /* support {0,1,2}, renormalized 8:4:2 */
    freqs(&p, f);
    for (int i = 3; i < V; i++) assert_true(f[i] == 0.0);
    assert_true(fabs(f[0] - 8.0 / 14) < 0.02 && fabs(f[2] - 2.0 / 14) < 0.02);
    p = base();
    p.top_p = 0.75f; /* masses 8/17=.47, +4/17=.71 < .75, +2/17=.82: keep {0,1,2} */
    freqs(&p, f);
    for (int i = 3; i < V; i++) assert_true(f[i] == 0.0);
    assert_true(f[2] > 0.1);
    p.top_p = 0.5f; /* .47 < .5 -> token 1 crosses: {0,1} */
    freqs(&p, f);
    for (int i = 2; i < V; i++) assert_true(f[i] == 0.0);
    assert_true(fabs(f[0] - 2.0 / 3) < 0.02);
    p = base();
    p.min_p = 0.2f; /* keep p >= 0.2 * p_max: weights >= 1.6 -> {0,1,2} */
    freqs(&p, f);
    for (int i = 3; i < V; i++) assert_true(f[i] == 0.0);
    p.min_p = 0.1f; /* weights >= 0.8 -> {0..4} */
    freqs(&p, f);
    assert_true(f[3] > 0.03 && f[4] > 0.03 && f[5] == 0.0);
}

static void test_seed_reproducible(void **st) {
    (void)st;
    mq_sampling p = base();
    mq_sampler a, b, c;
    assert_int_equal(mq_sampler_init(&a, V, &p), 0);
    assert_int_equal(mq_sampler_init(&b, V, &p), 0);
    p.seed = 43;
    assert_int_equal(mq_sampler_init(&c, V, &p), 0);
    int diff = 0;
    for (int i = 0; i < 100; i++) {
        int x = draw(&a), y = draw(&b), z = draw(&c);
        assert_int_equal(x, y);
        diff += x != z;
    }
    assert_true(diff > 10);
    uint64_t r = 7;
    for (int i = 0; i < 1000; i++) {
        float u = mq_sampler_rand(&r);
        assert_true(u >= 0.0f && u < 1.0f);
    }
    mq_sampler_free(&a);
    mq_sampler_free(&b);
    mq_sampler_free(&c);
}

static void test_rep_penalty(void **st) {
    (void)st;
    mq_sampling p = base();
    p.temperature = 0.0f;
    p.rep_penalty = 2.0f;
    mq_sampler s;
    assert_int_equal(mq_sampler_init(&s, 4, &p), 0);
    float l[4] = {3.0f, 2.0f, -1.0f, 0.5f};
    int32_t hist[4] = {0, 2, 0, 0}; /* 0 repeated: penalized once */
    assert_int_equal(mq_sampler_sample(&s, l, hist, 4), 1);
    assert_true(l[0] == 1.5f && l[1] == 2.0f && l[2] == -2.0f && l[3] == 0.5f);
    mq_sampler_free(&s);
    p.rep_last_n = 1; /* only the last token (2) */
    assert_int_equal(mq_sampler_init(&s, 4, &p), 0);
    float m[4] = {3.0f, 2.0f, -1.0f, 0.5f};
    int32_t h2[2] = {0, 2};
    assert_int_equal(mq_sampler_sample(&s, m, h2, 2), 0);
    assert_true(m[0] == 3.0f && m[2] == -2.0f);
    mq_sampler_free(&s);
}

/* OpenAI's presence / frequency penalties, over the generated part of the history only (from
 * penalty_from): logit -= frequency * count + presence, once per distinct id. */
static void test_presence_frequency(void **st) {
    (void)st;
    mq_sampling p = base();
    p.temperature = 0.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 1.0f;
    p.penalty_from = 2; /* hist[0..2) is the prompt */
    mq_sampler s;
    assert_int_equal(mq_sampler_init(&s, 4, &p), 0);
    float l[4] = {3.0f, 2.0f, -1.0f, 0.5f};
    int32_t hist[6] = {3, 3, 0, 2, 0, 0}; /* output: 0 three times, 2 once; 3 only in the prompt */
    assert_int_equal(mq_sampler_sample(&s, l, hist, 6), 1);
    assert_true(l[0] == 3.0f - 3.5f && l[1] == 2.0f && l[2] == -1.0f - 1.5f && l[3] == 0.5f);
    mq_sampler_free(&s);
    /* negative values encourage repeats */
    p.presence_penalty = -2.0f;
    p.frequency_penalty = 0.0f;
    assert_int_equal(mq_sampler_init(&s, 4, &p), 0);
    float m[4] = {3.0f, 2.0f, -1.0f, 0.5f};
    assert_int_equal(mq_sampler_sample(&s, m, hist, 6), 0);
    assert_true(m[0] == 5.0f && m[2] == 1.0f && m[3] == 0.5f);
    mq_sampler_free(&s);
    /* out of [-2, 2]: refused */
    p.presence_penalty = 2.5f;
    assert_int_equal(mq_sampler_init(&s, 4, &p), -1);
    p.presence_penalty = 0.0f;
    p.frequency_penalty = NAN;
    assert_int_equal(mq_sampler_init(&s, 4, &p), -1);
}

/* OpenAI's logit bias: added before anything else; the sampler keeps its own copy. */
static void test_logit_bias(void **st) {
    (void)st;
    mq_sampling p = base();
    p.temperature = 0.0f;
    int32_t *ids = malloc(2 * sizeof *ids);
    float *vals = malloc(2 * sizeof *vals);
    ids[0] = 3;
    vals[0] = 100.0f;
    ids[1] = 0;
    vals[1] = -100.0f;
    p.bias_ids = ids;
    p.bias_vals = vals;
    p.n_bias = 2;
    mq_sampler s;
    assert_int_equal(mq_sampler_init(&s, 4, &p), 0);
    free(ids); /* (the sampler copied them) */
    free(vals);
    float l[4] = {3.0f, 2.0f, -1.0f, 0.5f};
    assert_int_equal(mq_sampler_sample(&s, l, NULL, 0), 3);
    assert_true(l[3] == 100.5f && l[0] == -97.0f && l[1] == 2.0f);
    mq_sampler_free(&s);
    /* out of range: refused */
    int32_t bad_id = 4;
    float ok_val = 1.0f, bad_val = 101.0f;
    p.bias_ids = &bad_id;
    p.bias_vals = &ok_val;
    p.n_bias = 1;
    assert_int_equal(mq_sampler_init(&s, 4, &p), -1);
    bad_id = 1;
    p.bias_vals = &bad_val;
    assert_int_equal(mq_sampler_init(&s, 4, &p), -1);
}

/* vLLM's min_tokens: the banned ids get -inf while fewer than min_tokens tokens follow
 * penalty_from in the history, then they are back; the ban list is copied; bad ids are refused. */
static void test_min_tokens(void **st) {
    (void)st;
    mq_sampling p = base();
    p.temperature = 0.0f;
    int32_t *ban = malloc(2 * sizeof *ban);
    ban[0] = 3;
    ban[1] = 1;
    p.ban_ids = ban;
    p.n_ban = 2;
    p.min_tokens = 2;
    p.penalty_from = 5; /* a 5-token prompt */
    mq_sampler s;
    assert_int_equal(mq_sampler_init(&s, 4, &p), 0);
    free(ban); /* (the sampler copied it) */
    const int32_t hist[8] = {0, 0, 0, 0, 0, 2, 2, 2};
    for (int n_hist = 5; n_hist <= 7; n_hist++) {
        float l[4] = {0.0f, 5.0f, 1.0f, 9.0f};
        const int want = n_hist - 5 < 2 ? 2 : 3; /* 3 and 1 banned for the first two reply tokens */
        assert_int_equal(mq_sampler_sample(&s, l, hist, n_hist), want);
    }
    /* sampled too: never a banned id before min_tokens */
    mq_sampler_free(&s);
    int32_t b3 = 3;
    p.ban_ids = &b3;
    p.n_ban = 1;
    p.temperature = 1.0f;
    assert_int_equal(mq_sampler_init(&s, 4, &p), 0);
    for (int i = 0; i < 200; i++) {
        float l[4] = {0.0f, 0.0f, 0.0f, 3.0f};
        assert_int_not_equal(mq_sampler_sample(&s, l, hist, 6), 3);
    }
    mq_sampler_free(&s);
    b3 = 4; /* out of range */
    assert_int_equal(mq_sampler_init(&s, 4, &p), -1);
    b3 = 0;
    p.min_tokens = -1;
    assert_int_equal(mq_sampler_init(&s, 4, &p), -1);
}

static void test_edges(void **st) {
    (void)st;
    mq_sampling p = base();
    p.temperature = 1e-30f; /* tiny temperature: greedy, never NaN */
    mq_sampler s;
    assert_int_equal(mq_sampler_init(&s, V, &p), 0);
    for (int i = 0; i < 50; i++) assert_int_equal(draw(&s), 0);
    float l[V];
    dist(l);
    l[5] = NAN;
    mq_err_clear();
    assert_int_equal(mq_sampler_sample(&s, l, NULL, 0), -1);
    assert_non_null(strstr(mq_err_get(), "NaN"));
    for (int i = 0; i < V; i++) l[i] = -INFINITY;
    assert_int_equal(mq_sampler_sample(&s, l, NULL, 0), -1);
    dist(l);
    l[6] = INFINITY;
    assert_int_equal(mq_sampler_sample(&s, l, NULL, 0), 6);
    mq_sampler_free(&s);
    /* invalid settings are refused */
    mq_sampling bad = base();
    bad.temperature = -1.0f;
    assert_int_equal(mq_sampler_init(&s, V, &bad), -1);
    bad = base();
    bad.top_p = NAN;
    assert_int_equal(mq_sampler_init(&s, V, &bad), -1);
    bad = base();
    bad.rep_penalty = 0.0f;
    assert_int_equal(mq_sampler_init(&s, V, &bad), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argmax),           cmocka_unit_test(test_topk1_is_greedy),
        cmocka_unit_test(test_temperature_frequencies), cmocka_unit_test(test_topk_topp_minp_support),
        cmocka_unit_test(test_seed_reproducible), cmocka_unit_test(test_rep_penalty),
        cmocka_unit_test(test_presence_frequency),
        cmocka_unit_test(test_logit_bias),
        cmocka_unit_test(test_min_tokens),
        cmocka_unit_test(test_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
