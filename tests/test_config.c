/* test_config: config.json (4.x / 5.x layouts, dtype keys, every rejection) and generation_config.json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "config.h"
#include "err.h"
#include "testutil.h"

/* The real Qwen/Qwen3-0.6B config.json (transformers 4.51 layout). */
static const char *REAL_06B =
    "{\"architectures\":[\"Qwen3ForCausalLM\"],\"attention_bias\":false,\"attention_dropout\":0.0,"
    "\"bos_token_id\":151643,\"eos_token_id\":151645,\"head_dim\":128,\"hidden_act\":\"silu\","
    "\"hidden_size\":1024,\"initializer_range\":0.02,\"intermediate_size\":3072,"
    "\"max_position_embeddings\":40960,\"max_window_layers\":28,\"model_type\":\"qwen3\","
    "\"num_attention_heads\":16,\"num_hidden_layers\":28,\"num_key_value_heads\":8,\"rms_norm_eps\":1e-06,"
    "\"rope_scaling\":null,\"rope_theta\":1000000,\"sliding_window\":null,\"tie_word_embeddings\":true,"
    "\"torch_dtype\":\"bfloat16\",\"transformers_version\":\"4.51.0\",\"use_cache\":true,"
    "\"use_sliding_window\":false,\"vocab_size\":151936}";

/* Minimal valid config with one field spliced in (KEY_VAL is inserted as extra members). */
static int parse_with(mq_config *c, const char *extra) {
    char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"model_type\":\"qwen3\",\"vocab_size\":1000,\"hidden_size\":64,\"intermediate_size\":128,"
             "\"num_hidden_layers\":2,\"num_attention_heads\":4%s%s}",
             extra[0] ? "," : "", extra);
    return mq_config_parse(c, buf, strlen(buf), "cfg.json");
}

static void expect_err(const char *extra, const char *substr) {
    mq_config c;
    mq_err_clear();
    int r = parse_with(&c, extra);
    if (r != -1 || !strstr(mq_err_get(), substr) || !strstr(mq_err_get(), "cfg.json"))
        print_error("input %s: r=%d err='%s' (want '%s')\n", extra, r, mq_err_get(), substr);
    assert_int_equal(r, -1);
    assert_non_null(strstr(mq_err_get(), "cfg.json"));
    assert_non_null(strstr(mq_err_get(), substr));
}

static void test_real_06b(void **state) {
    (void)state;
    mq_config c;
    assert_int_equal(mq_config_parse(&c, REAL_06B, strlen(REAL_06B), "config.json"), 0);
    assert_int_equal(c.vocab_size, 151936);
    assert_int_equal(c.hidden_size, 1024);
    assert_int_equal(c.intermediate_size, 3072);
    assert_int_equal(c.n_layers, 28);
    assert_int_equal(c.n_heads, 16);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.max_pos, 40960);
    assert_float_equal(c.rope.theta, 1e6, 1e-9);
    assert_int_equal(c.rope.type, MQ_ROPE_DEFAULT);
    assert_int_equal(c.ctx_limit, 40960);
    assert_float_equal(c.rms_eps, 1e-6f, 1e-12f);
    assert_int_equal(c.tie_embeddings, 1);
    assert_int_equal(c.dtype, MQ_BF16);
    assert_int_equal(c.bos_token_id, 151643);
    assert_int_equal(c.eos_token_id, 151645);
}

/* transformers 5.x: rope_theta under rope_parameters, "dtype" instead of "torch_dtype". */
static void test_v5_layout(void **state) {
    (void)state;
    mq_config c;
    const char *js =
        "{\"model_type\":\"qwen3\",\"vocab_size\":1000,\"hidden_size\":64,\"intermediate_size\":128,"
        "\"num_hidden_layers\":3,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
        "\"rope_parameters\":{\"rope_theta\":500000.0,\"rope_type\":\"default\"},\"dtype\":\"float32\","
        "\"eos_token_id\":[7,8]}";
    assert_int_equal(mq_config_parse(&c, js, strlen(js), "v5.json"), 0);
    assert_float_equal(c.rope.theta, 5e5, 1e-9);
    assert_int_equal(c.dtype, MQ_F32);
    assert_int_equal(c.head_dim, 128); /* Qwen3Config's default, not hidden / n_heads */
    assert_int_equal(c.tie_embeddings, 0); /* Qwen3Config default */
    assert_int_equal(c.n_kv_heads, 2);
    assert_int_equal(c.eos_token_id, 7);
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(c.max_pos, 32768);
    assert_float_equal(c.rms_eps, 1e-6f, 1e-12f);
}

static void test_defaults_and_dtypes(void **state) {
    (void)state;
    mq_config c;
    assert_int_equal(parse_with(&c, ""), 0);
    assert_int_equal(c.n_kv_heads, 4); /* None -> num_attention_heads */
    assert_float_equal(c.rope.theta, 10000.0, 1e-9);
    assert_int_equal(c.dtype, MQ_BF16);
    assert_int_equal(parse_with(&c, "\"torch_dtype\":\"float16\""), 0);
    assert_int_equal(c.dtype, MQ_F16);
    assert_int_equal(parse_with(&c, "\"dtype\":\"bfloat16\""), 0);
    assert_int_equal(c.dtype, MQ_BF16);
    assert_int_equal(parse_with(&c, "\"head_dim\":128"), 0); /* explicit head_dim != hidden/heads */
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(parse_with(&c, "\"rope_scaling\":{\"rope_type\":\"default\"}"), 0);
    assert_string_equal(mq_dtype_name(MQ_BF16), "BF16");
    assert_int_equal((int)mq_dtype_size(MQ_F32), 4);
    assert_int_equal((int)mq_dtype_size(MQ_F16), 2);
}

/* RoPE scaling as Qwen's model cards tell users to add it (4.x rope_scaling) and as 5.x saves it. */
static void test_rope_scaling(void **state) {
    (void)state;
    mq_config c;
    char buf[4096];
    /* the 0.6B config with the model card's YaRN block spliced in */
    const char *yarn = "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0,\"original_max_position_embeddings\":32768}";
    const char *at = strstr(REAL_06B, "\"rope_scaling\":null");
    assert_non_null(at);
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - REAL_06B), REAL_06B, yarn, at + strlen("\"rope_scaling\":null"));
    assert_int_equal(mq_config_parse(&c, buf, strlen(buf), "config.json"), 0);
    assert_int_equal(c.rope.type, MQ_ROPE_YARN);
    assert_float_equal(c.rope.factor, 4.0, 0);
    assert_int_equal(c.rope.orig_max, 32768);
    assert_float_equal(c.rope.beta_fast, 32.0, 0);
    assert_float_equal(c.rope.beta_slow, 1.0, 0);
    assert_int_equal(c.rope.truncate, 1);
    assert_float_equal(c.rope.attn_factor, 0.1 * log(4.0) + 1.0, 1e-15);
    assert_float_equal(c.rope.theta, 1e6, 0);
    assert_int_equal(c.max_pos, 40960);
    assert_int_equal(c.ctx_limit, 131072); /* 4 x 32768 */

    /* 5.x layout; "type" (the old key) also names it; original defaults to max_position_embeddings */
    assert_int_equal(parse_with(&c, "\"max_position_embeddings\":40960,\"rope_parameters\":{\"type\":\"yarn\","
                                    "\"rope_theta\":1000000,\"factor\":2}"), 0);
    assert_int_equal(c.rope.type, MQ_ROPE_YARN);
    assert_int_equal(c.rope.orig_max, 40960);
    assert_int_equal(c.ctx_limit, 81920);
    /* no factor: max_position_embeddings / original (transformers 5.x) */
    assert_int_equal(parse_with(&c, "\"max_position_embeddings\":131072,\"rope_scaling\":{\"rope_type\":\"yarn\","
                                    "\"original_max_position_embeddings\":32768}"), 0);
    assert_float_equal(c.rope.factor, 4.0, 0);
    assert_int_equal(c.ctx_limit, 131072);
    /* a top-level original_max_position_embeddings wins over the dict's */
    assert_int_equal(parse_with(&c, "\"original_max_position_embeddings\":16384,\"rope_scaling\":{\"rope_type\":"
                                    "\"yarn\",\"factor\":2,\"original_max_position_embeddings\":32768}"), 0);
    assert_int_equal(c.rope.orig_max, 16384);
    assert_int_equal(c.ctx_limit, 32768); /* max(32768, 2 x 16384) */
    /* attention factor: explicit, or mscale / mscale_all_dim (equal: 1), or one of them only: default */
    assert_int_equal(parse_with(&c, "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4,\"attention_factor\":1.5,"
                                    "\"beta_fast\":0,\"beta_slow\":0,\"truncate\":false}"), 0);
    assert_float_equal(c.rope.attn_factor, 1.5, 0);
    assert_float_equal(c.rope.beta_fast, 32.0, 0); /* HF: get("beta_fast") or 32 */
    assert_float_equal(c.rope.beta_slow, 1.0, 0);
    assert_int_equal(c.rope.truncate, 0);
    assert_int_equal(parse_with(&c, "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4,\"truncate\":null}"), 0);
    assert_int_equal(c.rope.truncate, 0); /* HF: None is false */
    assert_int_equal(parse_with(&c, "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4,\"mscale\":0.707,"
                                    "\"mscale_all_dim\":0.707}"), 0);
    assert_float_equal(c.rope.attn_factor, 1.0, 1e-15);
    assert_int_equal(parse_with(&c, "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4,\"mscale\":1,"
                                    "\"mscale_all_dim\":2}"), 0);
    assert_float_equal(c.rope.attn_factor, (0.1 * log(4.0) + 1.0) / (0.2 * log(4.0) + 1.0), 1e-15);
    assert_int_equal(parse_with(&c, "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":1}"), 0);
    assert_float_equal(c.rope.attn_factor, 1.0, 0); /* get_mscale(1) */
    /* linear raises the limit by its factor; dynamic does not (it equals plain RoPE up to max_pos) */
    assert_int_equal(parse_with(&c, "\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":2}"), 0);
    assert_int_equal(c.rope.type, MQ_ROPE_LINEAR);
    assert_int_equal(c.ctx_limit, 65536);
    assert_int_equal(parse_with(&c, "\"rope_parameters\":{\"rope_type\":\"dynamic\",\"factor\":2,\"rope_theta\":5e5}"), 0);
    assert_int_equal(c.rope.type, MQ_ROPE_DYNAMIC);
    assert_int_equal(c.ctx_limit, 32768);
    assert_float_equal(c.rope.theta, 5e5, 0);
    /* the same theta in two places is fine; rope_scaling and rope_parameters agreeing too */
    assert_int_equal(parse_with(&c, "\"rope_theta\":1e6,\"rope_parameters\":{\"rope_theta\":1000000,"
                                    "\"rope_type\":\"yarn\",\"factor\":4},\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":3}"), 0);
    assert_float_equal(c.rope.factor, 3.0, 0); /* HF reads rope_scaling when both are given */
}

static void test_rejections(void **state) {
    (void)state;
    mq_config c;
    expect_err("\"attention_bias\":true", "attention_bias");
    expect_err("\"num_key_value_heads\":3", "not a multiple of num_key_value_heads");
    expect_err("\"num_key_value_heads\":0", "num_key_value_heads");
    expect_err("\"rope_scaling\":{\"rope_type\":\"longrope\",\"factor\":4.0}", "rope_scaling.rope_type 'longrope'");
    expect_err("\"rope_scaling\":{\"factor\":2.0}", "rope_scaling has a factor but no rope_type");
    expect_err("\"rope_scaling\":3", "rope_scaling must be an object");
    expect_err("\"rope_parameters\":[]", "rope_parameters must be an object");
    expect_err("\"rope_parameters\":{\"rope_type\":\"llama3\",\"factor\":8}", "rope_parameters.rope_type 'llama3'");
    expect_err("\"rope_parameters\":{\"rope_type\":\"linear\"}", "factor is missing");
    expect_err("\"rope_parameters\":{\"rope_type\":\"dynamic\",\"factor\":0.5}", "factor must be a number >= 1");
    expect_err("\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":\"4\"}", "factor must be a number");
    expect_err("\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4,\"beta_fast\":1,\"beta_slow\":2}",
               "beta_fast 1 must be larger than beta_slow 2");
    expect_err("\"rope_scaling\":{\"rope_type\":\"yarn\",\"original_max_position_embeddings\":65536}",
               "has no factor and max_position_embeddings 32768 < original 65536");
    expect_err("\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4,\"truncate\":1}", "truncate must be true or false");
    expect_err("\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4},\"rope_parameters\":{\"rope_type\":\"default\"}",
               "rope_scaling says 'yarn' and rope_parameters 'default'");
    expect_err("\"rope_theta\":10000,\"rope_parameters\":{\"rope_theta\":1000000}", "rope_theta is given twice");
    expect_err("\"partial_rotary_factor\":0.5", "partial_rotary_factor 0.5 is not supported");
    expect_err("\"torch_dtype\":\"int8\"", "dtype \"int8\" is not supported");
    expect_err("\"head_dim\":15", "head_dim 15 must be even");
    expect_err("\"head_dim\":-2", "head_dim");
    expect_err("\"use_sliding_window\":true", "use_sliding_window");
    expect_err("\"hidden_act\":\"gelu\"", "hidden_act");
    expect_err("\"rms_norm_eps\":-1", "rms_norm_eps");
    expect_err("\"rope_theta\":\"big\"", "rope_theta must be a number");
    expect_err("\"tie_word_embeddings\":1", "tie_word_embeddings must be true or false");
    expect_err("\"max_position_embeddings\":0", "max_position_embeddings");
    expect_err("\"bos_token_id\":-3", "bos_token_id");

    const struct { const char *js, *want; } bad[] = {
        {"{\"model_type\":\"llama\",\"vocab_size\":1}", "model_type \"llama\" is not supported"},
        {"{\"vocab_size\":1}", "missing model_type"},
        {"[1,2]", "not a JSON object"},
        {"{\"model_type\":\"qwen3\",", "bad JSON"},
        {"", "bad JSON"},
        {"{\"model_type\":\"qwen3\",\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"
         "\"num_attention_heads\":4}", "missing required field vocab_size"},
        {"{\"model_type\":\"qwen3\",\"vocab_size\":10,\"hidden_size\":0,\"intermediate_size\":128,"
         "\"num_hidden_layers\":2,\"num_attention_heads\":4}", "hidden_size = 0 is out of range"},
        {"{\"model_type\":\"qwen3\",\"vocab_size\":10,\"hidden_size\":64.5,\"intermediate_size\":128,"
         "\"num_hidden_layers\":2,\"num_attention_heads\":4}", "hidden_size must be an integer"},
        {"{\"model_type\":\"qwen3\",\"vocab_size\":10,\"hidden_size\":-64,\"intermediate_size\":128,"
         "\"num_hidden_layers\":2,\"num_attention_heads\":4}", "hidden_size = -64"},
        {"{\"model_type\":\"qwen3\",\"vocab_size\":10,\"hidden_size\":66,\"intermediate_size\":128,"
         "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"head_dim\":3}", "head_dim 3 must be even"},
        {"{\"model_type\":\"qwen3\",\"vocab_size\":1e12,\"hidden_size\":64,\"intermediate_size\":128,"
         "\"num_hidden_layers\":2,\"num_attention_heads\":4}", "vocab_size"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mq_err_clear();
        int r = mq_config_parse(&c, bad[i].js, strlen(bad[i].js), "bad.json");
        if (r != -1 || !strstr(mq_err_get(), bad[i].want))
            print_error("case %zu: r=%d err='%s' (want '%s')\n", i, r, mq_err_get(), bad[i].want);
        assert_int_equal(r, -1);
        assert_non_null(strstr(mq_err_get(), "bad.json: "));
        assert_non_null(strstr(mq_err_get(), bad[i].want));
    }
}

static char tmpdir[64];

static int setup_dir(void **state) {
    (void)state;
    return mq_test_mkdtemp(tmpdir, "/tmp/mq_test_config.XXXXXX");
}

static int teardown_dir(void **state) {
    (void)state;
    return mq_test_rmrf(tmpdir);
}

static const char *write_tmp(const char *name, const char *content) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    return path;
}

static void test_load_file(void **state) {
    (void)state;
    mq_config c;
    const char *p = write_tmp("config.json", REAL_06B);
    assert_int_equal(mq_config_load(&c, p), 0);
    assert_int_equal(c.hidden_size, 1024);
    char missing[256];
    snprintf(missing, sizeof missing, "%s/nope/config.json", tmpdir);
    mq_err_clear();
    assert_int_equal(mq_config_load(&c, missing), -1);
    assert_non_null(strstr(mq_err_get(), missing));
    assert_non_null(strstr(mq_err_get(), "cannot open"));
    p = write_tmp("bad.json", "{\"model_type\": qwen3}");
    assert_int_equal(mq_config_load(&c, p), -1);
    assert_non_null(strstr(mq_err_get(), "bad.json: bad JSON"));
}

static void test_gen_config(void **state) {
    (void)state;
    mq_gencfg g;
    const char *p = write_tmp("generation_config.json",
                              "{\"bos_token_id\":151643,\"do_sample\":true,\"eos_token_id\":[151645,151643],"
                              "\"pad_token_id\":151643,\"temperature\":0.6,\"top_k\":20,\"top_p\":0.95,"
                              "\"transformers_version\":\"4.51.0\"}");
    assert_int_equal(mq_config_load_gen(&g, p), 0);
    assert_int_equal(g.n_eos, 2);
    assert_int_equal(g.eos_ids[0], 151645);
    assert_int_equal(g.eos_ids[1], 151643);
    assert_true(g.has_temperature && g.has_top_k && g.has_top_p && g.has_do_sample);
    assert_false(g.has_min_p || g.has_rep_penalty);
    assert_float_equal(g.temperature, 0.6f, 1e-6f);
    assert_int_equal(g.top_k, 20);
    assert_float_equal(g.top_p, 0.95f, 1e-6f);
    assert_int_equal(g.do_sample, 1);

    p = write_tmp("gen2.json", "{\"eos_token_id\":2,\"min_p\":0.05,\"repetition_penalty\":1.1,"
                               "\"temperature\":null,\"do_sample\":false}");
    assert_int_equal(mq_config_load_gen(&g, p), 0);
    assert_int_equal(g.n_eos, 1);
    assert_int_equal(g.eos_ids[0], 2);
    assert_true(g.has_min_p && g.has_rep_penalty && g.has_do_sample);
    assert_false(g.has_temperature); /* null = absent */
    assert_float_equal(g.min_p, 0.05f, 1e-6f);
    assert_float_equal(g.rep_penalty, 1.1f, 1e-6f);
    assert_int_equal(g.do_sample, 0);

    char missing[256];
    snprintf(missing, sizeof missing, "%s/absent.json", tmpdir);
    g.n_eos = 5;
    assert_int_equal(mq_config_load_gen(&g, missing), 0); /* absent file is fine */
    assert_int_equal(g.n_eos, 0);
    assert_false(g.has_temperature);

    const struct { const char *js, *want; } bad[] = {
        {"{\"eos_token_id\":[1,2,3,4,5,6,7,8,9]}", "at most 8"},
        {"{\"eos_token_id\":[1,\"x\"]}", "eos_token_id"},
        {"{\"eos_token_id\":-1}", "eos_token_id"},
        {"{\"top_p\":1.5}", "top_p"},
        {"{\"top_k\":2.5}", "top_k must be an integer"},
        {"{\"temperature\":-1}", "temperature"},
        {"{\"do_sample\":\"yes\"}", "do_sample"},
        {"{\"top_k\":", "bad JSON"},
        {"[]", "bad JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = write_tmp("genbad.json", bad[i].js);
        mq_err_clear();
        int r = mq_config_load_gen(&g, p);
        if (r != -1 || !strstr(mq_err_get(), bad[i].want))
            print_error("case %zu: r=%d err='%s' (want '%s')\n", i, r, mq_err_get(), bad[i].want);
        assert_int_equal(r, -1);
        assert_non_null(strstr(mq_err_get(), "genbad.json: "));
        assert_non_null(strstr(mq_err_get(), bad[i].want));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_06b),
        cmocka_unit_test(test_v5_layout),
        cmocka_unit_test(test_defaults_and_dtypes),
        cmocka_unit_test(test_rope_scaling),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_gen_config),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
