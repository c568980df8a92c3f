/* test_cpu: the CPU reference forward pass against HF transformers fixtures (tests/data/hf). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "err.h"
#include "model.h"
#include "sampler.h"
#include "testutil.h"

/* One fixture made by scripts/ref/hf_fixtures.py. */
typedef struct {
    mq_model m;
    int T, vocab;
    int32_t ids[256];      /* (T) teacher-forced ids */
    float *logits;         /* (T, vocab) HF logits */
    float max_abs;         /* max |HF logit| */
    int32_t prompt[32];
    int n_prompt;
    int32_t greedy[64];    /* HF generate(do_sample=False) continuation */
    int n_greedy;
} fixture;


static int int_array(const cJSON *root, const char *key, int32_t *out, int cap) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, key);
    assert_true(cJSON_IsArray(a));
    int n = cJSON_GetArraySize(a);
    assert_true(n > 0 && n <= cap);
    for (int i = 0; i < n; i++) out[i] = (int32_t)cJSON_GetArrayItem(a, i)->valuedouble;
    return n;
}

static fixture *fixture_load(const char *name) {
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/tests/data/hf/%s", MQ_SOURCE_DIR, name);
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    if (mq_model_load(&f->m, dir) != 0) fail_msg("mq_model_load(%s): %s", dir, mq_err_get());
    snprintf(path, sizeof path, "%s/ref.json", dir);
    char *js = mq_test_slurp(path, NULL);
    assert_non_null(js);
    cJSON *root = cJSON_Parse(js);
    assert_non_null(root);
    f->T = cJSON_GetObjectItemCaseSensitive(root, "T")->valueint;
    f->vocab = cJSON_GetObjectItemCaseSensitive(root, "vocab")->valueint;
    assert_int_equal(f->vocab, f->m.cfg.vocab_size);
    assert_int_equal(int_array(root, "ids", f->ids, 256), f->T);
    f->n_prompt = int_array(root, "prompt", f->prompt, 32);
    f->n_greedy = int_array(root, "greedy", f->greedy, 64);
    assert_true(f->n_greedy >= 20);
    cJSON_Delete(root);
    free(js);
    size_t len = 0;
    snprintf(path, sizeof path, "%s/logits.bin", dir);
    f->logits = (float *)mq_test_slurp(path, &len);
    assert_non_null(f->logits);
    assert_int_equal(len, (size_t)f->T * f->vocab * sizeof(float));
    for (size_t i = 0; i < (size_t)f->T * f->vocab; i++)
        if (fabsf(f->logits[i]) > f->max_abs) f->max_abs = fabsf(f->logits[i]);
    assert_true(f->max_abs > 1.0f);
    return f;
}

static void fixture_free(fixture *f) {
    mq_model_free(&f->m);
    free(f->logits);
    free(f);
}

/* max |a - b| over n; also counts rows whose argmax differs */
static float max_diff(const float *a, const float *b, int rows, int vocab, int *argmax_mismatch) {
    float d = 0.0f;
    *argmax_mismatch = 0;
    for (int r = 0; r < rows; r++) {
        const float *x = a + (size_t)r * vocab, *y = b + (size_t)r * vocab;
        for (int i = 0; i < vocab; i++) {
            float e = fabsf(x[i] - y[i]);
            if (!(e <= d)) d = e; /* NaN propagates as a failure */
        }
        if (mq_sampler_argmax(x, vocab) != mq_sampler_argmax(y, vocab)) (*argmax_mismatch)++;
    }
    return d;
}

static mq_backend *new_cpu(fixture *f, int max_ctx, int threads) {
    mq_backend *b = mq_cpu_new(&f->m, max_ctx, threads);
    if (!b) fail_msg("mq_cpu_new: %s", mq_err_get());
    return b;
}

/* Teacher-forced logits, all T positions in one forward (prefill batching, chunk boundary at 64),
 * against HF: max|Δ| <= 1e-3 * max|logit| and the same argmax at every position. */
static void check_teacher_forced(const char *name) {
    fixture *f = fixture_load(name);
    mq_backend *b = new_cpu(f, 256, 2);
    float *got = malloc((size_t)f->T * f->vocab * sizeof(float));
    assert_int_equal(b->forward(b, f->ids, f->T, 0, got), 0);
    int mism;
    float d = max_diff(got, f->logits, f->T, f->vocab, &mism);
    printf("  %s: teacher-forced T=%d max|d| %.3g (%.3g of max|logit| %.3g), argmax mismatches %d\n", name,
           f->T, (double)d, (double)(d / f->max_abs), (double)f->max_abs, mism);
    assert_true(d <= 1e-3f * f->max_abs);
    assert_int_equal(mism, 0);
    /* last_logits is the last row */
    assert_memory_equal(b->last_logits(b), got + (size_t)(f->T - 1) * f->vocab, f->vocab * sizeof(float));
    b->free(b);
    free(got);
    fixture_free(f);
}

static void test_tf_A(void **st) { (void)st; check_teacher_forced("A"); }
static void test_tf_B(void **st) { (void)st; check_teacher_forced("B"); }

/* The same logits whether the sequence is fed at once, token by token (the KV cache path), or in
 * two uneven pieces; and positions overwritten by a later forward (rewind) behave as fresh. */
static void check_incremental(const char *name) {
    fixture *f = fixture_load(name);
    size_t V = (size_t)f->vocab;
    float *all = malloc(f->T * V * sizeof(float)), *one = malloc(f->T * V * sizeof(float));
    mq_backend *b = new_cpu(f, 128, 2);
    assert_int_equal(b->forward(b, f->ids, f->T, 0, all), 0);
    /* token by token on the same backend: overwrites the cache from position 0 */
    for (int t = 0; t < f->T; t++) {
        assert_int_equal(b->forward(b, &f->ids[t], 1, t, NULL), 0);
        memcpy(one + t * V, b->last_logits(b), V * sizeof(float));
    }
    int mism;
    float d = max_diff(one, all, f->T, f->vocab, &mism);
    printf("  %s: token-by-token vs batched max|d| %.3g\n", name, (double)d);
    assert_true(d <= 1e-4f * f->max_abs);
    assert_int_equal(mism, 0);
    /* two pieces: 37 then the rest, rows of the second piece only */
    assert_int_equal(b->forward(b, f->ids, 37, 0, NULL), 0);
    assert_int_equal(b->forward(b, f->ids + 37, f->T - 37, 37, one + 37 * V), 0);
    d = max_diff(one + 37 * V, all + 37 * V, f->T - 37, f->vocab, &mism);
    assert_true(d <= 1e-4f * f->max_abs);
    assert_int_equal(mism, 0);
    /* rewind: overwrite positions 10.. with other tokens, then restore: same logits again */
    int32_t junk[20];
    for (int i = 0; i < 20; i++) junk[i] = (f->ids[i] * 7 + 3) % f->vocab;
    assert_int_equal(b->forward(b, junk, 20, 10, NULL), 0);
    assert_int_equal(b->forward(b, f->ids + 10, f->T - 10, 10, one + 10 * V), 0);
    d = max_diff(one + 10 * V, all + 10 * V, f->T - 10, f->vocab, &mism);
    assert_true(d <= 1e-4f * f->max_abs);
    assert_int_equal(mism, 0);
    b->free(b);
    free(all);
    free(one);
    fixture_free(f);
}

static void test_incremental_A(void **st) { (void)st; check_incremental("A"); }
static void test_incremental_B(void **st) { (void)st; check_incremental("B"); }

/* Greedy continuation of HF's prompt, token by token through the cache: identical ids. */
static void check_greedy(const char *name) {
    fixture *f = fixture_load(name);
    mq_backend *b = new_cpu(f, 128, 2);
    assert_int_equal(b->forward(b, f->prompt, f->n_prompt, 0, NULL), 0);
    int pos = f->n_prompt, same = 0;
    for (int i = 0; i < f->n_greedy; i++) {
        int32_t next = mq_sampler_argmax(b->last_logits(b), f->vocab);
        if (next != f->greedy[i]) break;
        same++;
        assert_int_equal(b->forward(b, &next, 1, pos++, NULL), 0);
    }
    printf("  %s: greedy %d/%d tokens identical to HF generate\n", name, same, f->n_greedy);
    assert_int_equal(same, f->n_greedy);
    b->free(b);
    fixture_free(f);
}

static void test_greedy_A(void **st) { (void)st; check_greedy("A"); }
static void test_greedy_B(void **st) { (void)st; check_greedy("B"); }

/* Fixture C (YaRN RoPE scaling, 80 positions over an original length of 32) is made on a machine
 * with transformers (scripts/ref/hf_fixtures.py --only C); until it is committed these skip. */
static void test_yarn_C(void **st) {
    (void)st;
    if (!mq_test_hf_fixture(MQ_SOURCE_DIR, "C")) skip();
    check_teacher_forced("C");
    check_incremental("C");
    check_greedy("C");
}

/* Work is split by rows and heads, never inside a sum: any thread count gives identical bits. */
static void test_threads_bitwise(void **st) {
    (void)st;
    fixture *f = fixture_load("B");
    size_t n = (size_t)f->T * f->vocab;
    float *a = malloc(n * sizeof(float)), *c = malloc(n * sizeof(float));
    mq_backend *b1 = new_cpu(f, 96, 1), *b3 = new_cpu(f, 96, 3);
    assert_int_equal(b1->forward(b1, f->ids, f->T, 0, a), 0);
    assert_int_equal(b3->forward(b3, f->ids, f->T, 0, c), 0);
    assert_memory_equal(a, c, n * sizeof(float));
    b1->free(b1);
    b3->free(b3);
    free(a);
    free(c);
    fixture_free(f);
}

static void test_errors(void **st) {
    (void)st;
    fixture *f = fixture_load("A");
    mq_backend *b = new_cpu(f, 16, 2);
    assert_int_equal(b->max_ctx, 16);
    assert_string_equal(b->name, "cpu");
    int32_t ids[20] = {0};
    mq_err_clear();
    assert_int_equal(b->forward(b, ids, 17, 0, NULL), -1); /* past max_ctx */
    assert_non_null(strstr(mq_err_get(), "cpu:"));
    assert_int_equal(b->forward(b, ids, 2, 15, NULL), -1);
    assert_int_equal(b->forward(b, ids, 16, 0, NULL), 0);  /* exactly full is fine */
    ids[3] = f->vocab;
    mq_err_clear();
    assert_int_equal(b->forward(b, ids, 5, 0, NULL), -1);  /* id out of vocabulary */
    assert_non_null(strstr(mq_err_get(), "vocabulary"));
    ids[3] = -1;
    assert_int_equal(b->forward(b, ids, 5, 0, NULL), -1);
    assert_null(mq_cpu_new(&f->m, 0, 1));
    b->free(b);
    fixture_free(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tf_A),          cmocka_unit_test(test_tf_B),
        cmocka_unit_test(test_incremental_A), cmocka_unit_test(test_incremental_B),
        cmocka_unit_test(test_greedy_A),      cmocka_unit_test(test_greedy_B),
        cmocka_unit_test(test_yarn_C),
        cmocka_unit_test(test_threads_bitwise), cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
