/* test_model: tensor binding (shapes, dtypes, tying, every error) and synth round trips (load, scales, determinism). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>
#include "err.h"
#include "megaqwen.h"
#include "model.h"
#include "synth.h"
#include "testutil.h"

static char tmpdir[64];

static int setup_dir(void **state) {
    (void)state;
    return mq_test_mkdtemp(tmpdir, "/tmp/mq_test_model.XXXXXX");
}

static int teardown_dir(void **state) {
    (void)state;
    return mq_test_rmrf(tmpdir);
}

static char *sub(const char *name) {
    static char p[8][256];
    static int k;
    k = (k + 1) & 7;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    mkdir(p[k], 0755);
    return p[k];
}

static void write_text(const char *dir, const char *file, const char *s) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

/* ---- hand-made small checkpoints: vocab 32, hidden 16, inter 24, 2 layers, 2/1 heads x 8 ---- */

static const char *SMALL_CFG =
    "{\"model_type\":\"qwen3\",\"vocab_size\":32,\"hidden_size\":16,\"intermediate_size\":24,"
    "\"num_hidden_layers\":2,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"head_dim\":8,"
    "\"tie_word_embeddings\":%s,\"eos_token_id\":5}";

typedef struct {
    const char *skip;      /* tensor left out */
    const char *reshape;   /* tensor whose last dim is cut to 10 */
    const char *redtype;   /* tensor stored as I16 */
    int lm_head;           /* also store lm_head.weight */
    int extra_layer;       /* also store model.layers.2.input_layernorm.weight */
} small_opts;

/* Write a small checkpoint with raw safetensors (so any dtype string can be used); weights are
 * BF16 with element k of every tensor = k % 64 (as float). */
static void write_small(const char *dir, int tied, const small_opts *o) {
    char cfg[512];
    snprintf(cfg, sizeof cfg, SMALL_CFG, tied ? "true" : "false");
    write_text(dir, "config.json", cfg);
    struct { char name[96]; int nd; int d0, d1; } t[40];
    int n = 0;
#define T(NM, ND, A, B) do { snprintf(t[n].name, 96, "%s", NM); t[n].nd = ND; t[n].d0 = A; t[n].d1 = B; n++; } while (0)
    T("model.embed_tokens.weight", 2, 32, 16);
    T("model.norm.weight", 1, 16, 0);
    if (o->lm_head) T("lm_head.weight", 2, 32, 16);
    for (int l = 0; l < 2 + (o->extra_layer ? 1 : 0); l++) {
        char nm[96];
#define L(S, ND, A, B) do { snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, S); T(nm, ND, A, B); } while (0)
        L("input_layernorm", 1, 16, 0);
        if (l == 2) break;
        L("self_attn.q_proj", 2, 16, 16);
        L("self_attn.k_proj", 2, 8, 16);
        L("self_attn.v_proj", 2, 8, 16);
        L("self_attn.q_norm", 1, 8, 0);
        L("self_attn.k_norm", 1, 8, 0);
        L("self_attn.o_proj", 2, 16, 16);
        L("post_attention_layernorm", 1, 16, 0);
        L("mlp.gate_proj", 2, 24, 16);
        L("mlp.up_proj", 2, 24, 16);
        L("mlp.down_proj", 2, 16, 24);
#undef L
    }
#undef T
    char *hdr = malloc(1 << 16);
    size_t k = (size_t)sprintf(hdr, "{");
    size_t off = 0, sizes[40];
    int ns = 0;
    for (int i = 0; i < n; i++) {
        if (o->skip && !strcmp(o->skip, t[i].name)) continue;
        int d1 = t[i].d1, d0 = t[i].d0;
        if (o->reshape && !strcmp(o->reshape, t[i].name)) { if (t[i].nd == 2) d1 = 10; else d0 = 10; }
        const char *dt = o->redtype && !strcmp(o->redtype, t[i].name) ? "I16" : "BF16";
        size_t sz = (size_t)d0 * (size_t)(t[i].nd == 2 ? d1 : 1) * 2;
        if (t[i].nd == 2)
            k += (size_t)sprintf(hdr + k, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%d,%d],\"data_offsets\":[%zu,%zu]}",
                                 k > 1 ? "," : "", t[i].name, dt, d0, d1, off, off + sz);
        else
            k += (size_t)sprintf(hdr + k, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%d],\"data_offsets\":[%zu,%zu]}",
                                 k > 1 ? "," : "", t[i].name, dt, d0, off, off + sz);
        off += sz;
        sizes[ns++] = sz;
    }
    k += (size_t)sprintf(hdr + k, "}");
    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    uint64_t hl = k;
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(hl >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(hdr, 1, k, f);
    for (int i = 0; i < ns; i++)
        for (size_t e = 0; e < sizes[i] / 2; e++) {
            float v = (float)(e % 64);
            uint32_t u;
            memcpy(&u, &v, 4);
            uint16_t b = (uint16_t)(u >> 16);
            fwrite(&b, 2, 1, f);
        }
    fclose(f);
    free(hdr);
}

static void expect_load_err(const char *dir, const char *want1, const char *want2) {
    mq_model m;
    mq_err_clear();
    int r = mq_model_load(&m, dir);
    if (r != -1 || !strstr(mq_err_get(), want1) || (want2 && !strstr(mq_err_get(), want2)))
        print_error("dir %s: r=%d err='%s' (want '%s' and '%s')\n", dir, r, mq_err_get(), want1,
                    want2 ? want2 : "");
    assert_int_equal(r, -1);
    assert_non_null(strstr(mq_err_get(), want1));
    if (want2) assert_non_null(strstr(mq_err_get(), want2));
    assert_null(m.layers); /* freed on error */
    assert_null(m.st);
}

static void test_small_ok(void **state) {
    (void)state;
    small_opts o = {0};
    const char *d = sub("small");
    write_small(d, 1, &o);
    mq_model m;
    assert_int_equal(mq_model_load(&m, d), 0);
    assert_int_equal(m.cfg.n_layers, 2);
    assert_ptr_equal(m.lm_head.p, m.embed.p); /* tied */
    assert_int_equal(m.embed.dt, MQ_BF16);
    assert_int_equal(m.gen.n_eos, 1);         /* no generation_config.json: config's eos */
    assert_int_equal(m.gen.eos_ids[0], 5);
    assert_float_equal(mq_model_at(m.embed, 3), 3.0f, 0.0f);
    assert_float_equal(mq_model_at(m.layers[1].down, 63), 63.0f, 0.0f);
    /* step bytes: per layer 16+256+128+128+8+8+256+16+384+384+384 elements, + norm 16 + lm_head 512; bf16 */
    size_t per = 16 + 256 + 128 + 128 + 8 + 8 + 256 + 16 + 384 + 384 + 384;
    assert_int_equal(mq_model_step_bytes(&m), (2 * per + 16 + 512) * 2);
    /* views point at distinct tensors */
    assert_true(m.layers[0].q.p != m.layers[0].k.p && m.layers[0].up.p != m.layers[1].up.p);
    mq_model_free(&m);
    assert_null(m.layers);

    /* tied even though lm_head.weight is stored: the embedding is used */
    o.lm_head = 1;
    d = sub("small_tied_stored");
    write_small(d, 1, &o);
    assert_int_equal(mq_model_load(&m, d), 0);
    assert_ptr_equal(m.lm_head.p, m.embed.p);
    mq_model_free(&m);
    /* untied with lm_head.weight: its own view */
    d = sub("small_untied");
    write_small(d, 0, &o);
    assert_int_equal(mq_model_load(&m, d), 0);
    assert_true(m.lm_head.p != m.embed.p);
    mq_model_free(&m);
    /* generation_config.json overrides eos */
    write_text(d, "generation_config.json", "{\"eos_token_id\":[9,10,11]}");
    assert_int_equal(mq_model_load(&m, d), 0);
    assert_int_equal(m.gen.n_eos, 3);
    assert_int_equal(m.gen.eos_ids[2], 11);
    mq_model_free(&m);
}

static void test_small_errors(void **state) {
    (void)state;
    small_opts o = {0};
    const char *d = sub("e_missing");
    o.skip = "model.layers.1.self_attn.k_norm.weight";
    write_small(d, 1, &o);
    expect_load_err(d, "model.safetensors: missing tensor model.layers.1.self_attn.k_norm.weight", NULL);

    o = (small_opts){0};
    o.reshape = "model.layers.1.mlp.up_proj.weight";
    d = sub("e_shape");
    write_small(d, 1, &o);
    expect_load_err(d, "model.safetensors: tensor model.layers.1.mlp.up_proj.weight has shape [24, 10], expected [24, 16]",
                    NULL);
    o.reshape = "model.norm.weight";
    write_small(d, 1, &o);
    expect_load_err(d, "tensor model.norm.weight has shape [10], expected [16]", NULL);

    o = (small_opts){0};
    o.redtype = "model.layers.0.self_attn.o_proj.weight";
    d = sub("e_dtype");
    write_small(d, 1, &o);
    expect_load_err(d, "model.safetensors: tensor model.layers.0.self_attn.o_proj.weight has dtype I16", "not supported");

    o = (small_opts){0};
    d = sub("e_untied");
    write_small(d, 0, &o);
    expect_load_err(d, "model.safetensors: missing tensor lm_head.weight", "tie_word_embeddings");

    o = (small_opts){0};
    o.extra_layer = 1;
    d = sub("e_extra");
    write_small(d, 1, &o);
    expect_load_err(d, "model.safetensors: tensor model.layers.2.input_layernorm.weight is past num_hidden_layers", NULL);

    o = (small_opts){0};
    d = sub("e_type");
    write_small(d, 1, &o);
    write_text(d, "config.json", "{\"model_type\":\"qwen2\",\"vocab_size\":32}");
    expect_load_err(d, "config.json: model_type \"qwen2\" is not supported", NULL);
    write_text(d, "config.json", "{\"model_type\":\"qwen3\",");
    expect_load_err(d, "config.json: bad JSON", NULL);
    /* config says 3 layers, weights have 2 */
    write_text(d, "config.json",
               "{\"model_type\":\"qwen3\",\"vocab_size\":32,\"hidden_size\":16,\"intermediate_size\":24,"
               "\"num_hidden_layers\":3,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"head_dim\":8,"
               "\"tie_word_embeddings\":true}");
    expect_load_err(d, "missing tensor model.layers.2.input_layernorm.weight", NULL);
    /* generation_config.json broken */
    write_small(d, 1, &o);
    write_text(d, "generation_config.json", "{\"eos_token_id\":\"x\"}");
    expect_load_err(d, "generation_config.json: eos_token_id", NULL);

    d = sub("e_nocfg");
    expect_load_err(d, "config.json: cannot open", NULL);
    write_small(d, 1, &o);
    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    unlink(p);
    expect_load_err(d, "no model.safetensors or model.safetensors.index.json", NULL);
    /* truncated weights */
    write_small(d, 1, &o);
    assert_int_equal(truncate(p, 4000), 0);
    expect_load_err(d, "model.safetensors: tensor", "out of range");
}

/* ---- synth ---- */

static int file_equal(const char *a, const char *b) {
    FILE *x = fopen(a, "rb"), *y = fopen(b, "rb");
    if (!x || !y) { if (x) fclose(x); if (y) fclose(y); return -1; }
    int eq = 1, c1, c2;
    do { c1 = fgetc(x); c2 = fgetc(y); if (c1 != c2) { eq = 0; break; } } while (c1 != EOF);
    fclose(x);
    fclose(y);
    return eq;
}

static void synth(const char *dir, uint64_t seed, mq_dtype dt, int tied, const char *tokdir) {
    mq_synth_opts o;
    mq_synth_defaults(&o);
    o.shape = "tiny";
    o.seed = seed;
    o.dtype = dt;
    o.tied = tied;
    o.tokenizer_dir = tokdir;
    int r = mq_synth_write(dir, &o);
    if (r < 0) print_error("synth: %s\n", mq_err_get());
    assert_int_equal(r, 0);
}

static double mean_of(mq_tref t, size_t n, double *sd) {
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) { double v = mq_model_at(t, i); s += v; s2 += v * v; }
    double m = s / (double)n;
    *sd = sqrt(s2 / (double)n - m * m);
    return m;
}

static void test_synth_tiny(void **state) {
    (void)state;
    const char *d = sub("syn_a");
    synth(d, 42, MQ_BF16, -1, "/nonexistent-tokenizer-dir");
    mq_model m;
    assert_int_equal(mq_model_load(&m, d), 0);
    mq_config c;
    assert_int_equal(mq_synth_shape("tiny", &c), 0);
    assert_int_equal(m.cfg.vocab_size, 151936);
    assert_int_equal(m.cfg.hidden_size, c.hidden_size);
    assert_int_equal(m.cfg.n_layers, 2);
    assert_int_equal(m.cfg.n_heads, 4);
    assert_int_equal(m.cfg.n_kv_heads, 2);
    assert_int_equal(m.cfg.head_dim, 32);
    assert_int_equal(m.cfg.intermediate_size, 384);
    assert_int_equal(m.cfg.tie_embeddings, 1);
    assert_ptr_equal(m.lm_head.p, m.embed.p);
    assert_int_equal(m.embed.dt, MQ_BF16);
    assert_int_equal(m.layers[1].down.dt, MQ_BF16);
    assert_int_equal(m.gen.n_eos, 2);
    assert_int_equal(m.gen.eos_ids[0], 151645);
    assert_true(m.gen.has_top_k && m.gen.top_k == 20);
    assert_int_equal(mq_st_count(m.st), 2 + 11 * 2);
    /* the scales the comment in synth.c promises */
    double sd, mu;
    mu = mean_of(m.embed, 151936 * 128, &sd);
    assert_true(fabs(mu) < 1e-3 && fabs(sd - 0.02) < 0.001);
    mu = mean_of(m.layers[0].in_norm, 128, &sd);
    assert_true(fabs(mu - 1.0) < 0.05 && sd > 0.05 && sd < 0.15);
    mu = mean_of(m.layers[0].q_norm, 32, &sd);
    assert_true(fabs(mu - 1.5) < 0.1);
    mu = mean_of(m.layers[1].q, 128 * 128, &sd);
    assert_true(fabs(sd - 1.0 / sqrt(128.0)) < 0.005);
    double g = 10.0 / (0.02 * sqrt(128.0));
    mu = mean_of(m.final_norm, 128, &sd);
    assert_true(fabs(mu - g) < 0.05 * g);
    double alpha = 0.02 * sqrt((128.0 / 0.25 - 1.0) / 4.0);
    mu = mean_of(m.layers[1].down, 128 * 384, &sd);
    assert_true(fabs(sd - alpha / sqrt(384.0)) < 0.05 * alpha / sqrt(384.0));
    /* no tokenizer dir: written without tokenizer files */
    char p[512];
    snprintf(p, sizeof p, "%s/tokenizer.json", d);
    assert_int_equal(access(p, F_OK), -1);

    /* determinism: same seed => same bytes; different seed => different bytes */
    const char *d2 = sub("syn_b"), *d3 = sub("syn_c");
    synth(d2, 42, MQ_BF16, -1, "/nonexistent-tokenizer-dir");
    synth(d3, 43, MQ_BF16, -1, "/nonexistent-tokenizer-dir");
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/model.safetensors", d);
    snprintf(b, sizeof b, "%s/model.safetensors", d2);
    assert_int_equal(file_equal(a, b), 1);
    snprintf(b, sizeof b, "%s/model.safetensors", d3);
    assert_int_equal(file_equal(a, b), 0);
    snprintf(a, sizeof a, "%s/config.json", d);
    snprintf(b, sizeof b, "%s/config.json", d3);
    assert_int_equal(file_equal(a, b), 1);

    /* f32 of the same seed holds the very values the bf16 file rounds */
    const char *d4 = sub("syn_f32");
    synth(d4, 42, MQ_F32, -1, "/nonexistent-tokenizer-dir");
    mq_model m4;
    assert_int_equal(mq_model_load(&m4, d4), 0);
    assert_int_equal(m4.embed.dt, MQ_F32);
    assert_int_equal(m4.cfg.dtype, MQ_F32);
    for (size_t i = 0; i < 1000; i++) {
        float f = mq_model_at(m4.layers[1].up, i * 37), h = mq_model_at(m.layers[1].up, i * 37);
        assert_true(fabsf(f - h) <= fabsf(f) * (1.0f / 256.0f));
    }
    mq_model_free(&m4);
    mq_model_free(&m);
}

/* mq_set_sampling through the public API: a refused setting leaves the working one in place (its
 * logit bias included), and the bias steers the CPU backend's greedy choice. */
static void test_api_sampling(void **state) {
    (void)state;
    const char *d = sub("syn_api");
    synth(d, 9, MQ_BF16, -1, "/nonexistent-tokenizer-dir");
    mq_params prm;
    mq_params_default(&prm);
    prm.backend = "cpu";
    prm.load_tokenizer = 0;
    prm.max_ctx = 64;
    prm.n_threads = 1;
    mq_ctx *c = mq_open(d, &prm);
    assert_non_null(c);
    mq_sampling s;
    mq_sampling_default(&s);
    int32_t id = 1234;
    float plus = 100.0f;
    s.bias_ids = &id;
    s.bias_vals = &plus;
    s.n_bias = 1;
    assert_int_equal(mq_set_sampling(c, &s), 0);
    id = 7; /* (the context holds its own copy) */
    mq_sampling bad = s;
    int32_t far = 999999;
    bad.bias_ids = &far;
    mq_err_clear();
    assert_int_equal(mq_set_sampling(c, &bad), -1);
    assert_non_null(strstr(mq_last_error(), "logit bias"));
    int32_t out[3];
    assert_int_equal(mq_generate(c, 785, 3, out, NULL, NULL), 3);
    for (int i = 0; i < 3; i++) assert_int_equal(out[i], 1234);
    mq_close(c);
}

static void test_synth_untied_tokenizer(void **state) {
    (void)state;
    const char *tok = sub("tokfiles");
    write_text(tok, "tokenizer.json", "{\"model\":{\"type\":\"BPE\"}}");
    write_text(tok, "tokenizer_config.json", "{\"eos_token\":\"<|im_end|>\"}");
    const char *d = sub("syn_untied");
    synth(d, 7, MQ_BF16, 0, tok);
    mq_model m;
    assert_int_equal(mq_model_load(&m, d), 0);
    assert_int_equal(m.cfg.tie_embeddings, 0);
    assert_true(m.lm_head.p != m.embed.p);
    assert_non_null(mq_st_find(m.st, "lm_head.weight"));
    assert_int_equal(mq_st_count(m.st), 3 + 11 * 2);
    mq_model_free(&m);
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/tokenizer.json", tok);
    snprintf(b, sizeof b, "%s/tokenizer.json", d);
    assert_int_equal(file_equal(a, b), 1);
    snprintf(a, sizeof a, "%s/tokenizer_config.json", tok);
    snprintf(b, sizeof b, "%s/tokenizer_config.json", d);
    assert_int_equal(file_equal(a, b), 1);
    /* unknown shape */
    mq_synth_opts o;
    mq_synth_defaults(&o);
    o.shape = "qwen3-70b";
    assert_int_equal(mq_synth_write(d, &o), -1);
    assert_non_null(strstr(mq_err_get(), "unknown shape 'qwen3-70b'"));
    /* the real Qwen3 config.json values (8B has its own lm_head), and the test shapes */
    static const struct {
        const char *name;
        int hidden, inter, layers, heads, kv, hd, tied;
    } want[] = {
        {"qwen3-1.7b", 2048, 6144, 28, 16, 8, 128, 1}, {"qwen3-4b", 2560, 9728, 36, 32, 8, 128, 1},
        {"qwen3-8b", 4096, 12288, 36, 32, 8, 128, 0},  {"tiny", 128, 384, 2, 4, 2, 32, 1},
        {"tiny-gqa5", 320, 960, 2, 10, 2, 128, 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        mq_config c;
        assert_int_equal(mq_synth_shape(want[i].name, &c), 0);
        const int got[7] = {c.hidden_size, c.intermediate_size, c.n_layers, c.n_heads,
                            c.n_kv_heads,  c.head_dim,          c.tie_embeddings};
        const int exp[7] = {want[i].hidden, want[i].inter, want[i].layers, want[i].heads,
                            want[i].kv,     want[i].hd,    want[i].tied};
        assert_memory_equal(got, exp, sizeof got);
        assert_int_equal(c.max_pos, 40960);
        assert_int_equal(c.vocab_size, 151936);
    }
}

/* Printed benchmark, off by default (multi-GB): MQ_BENCH_LOAD=qwen3-0.6b ./test_model
 * synthesizes that shape, then times mq_model_load cold (file dropped from the page cache with
 * POSIX_FADV_DONTNEED) and warm, and the cost of first touching every weight page. */
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double touch_all(const mq_model *m) {
    double t0 = now_s();
    volatile unsigned s = 0;
    for (int i = 0; i < mq_st_count(m->st); i++) {
        const mq_st_tensor *t = mq_st_at(m->st, i);
        for (size_t k = 0; k < t->nbytes; k += 4096) s += ((const unsigned char *)t->data)[k];
    }
    (void)s;
    return now_s() - t0;
}

static void bench_load(void **state) {
    (void)state;
    const char *shape = getenv("MQ_BENCH_LOAD");
    if (!shape || !*shape) { skip(); return; }
    const char *d = sub("bench");
    mq_synth_opts o;
    mq_synth_defaults(&o);
    o.shape = shape;
    o.log = stdout;
    double t0 = now_s();
    assert_int_equal(mq_synth_write(d, &o), 0);
    printf("bench: synth %s %.2f s\n", shape, now_s() - t0);
    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    mq_model m;
    t0 = now_s();
    assert_int_equal(mq_model_load(&m, d), 0);
    double cold = now_s() - t0, tc = touch_all(&m), mb = (double)mq_model_step_bytes(&m) / 1e6;
    mq_model_free(&m);
    printf("bench: cold mq_model_load %.2f ms; first touch of all %.0f MB of weights %.3f s\n", cold * 1e3, mb, tc);
    for (int r = 0; r < 3; r++) {
        t0 = now_s();
        assert_int_equal(mq_model_load(&m, d), 0);
        double warm = now_s() - t0, tw = touch_all(&m);
        printf("bench: warm mq_model_load %.2f ms; touch all pages %.3f s; step bytes %zu\n", warm * 1e3, tw,
               mq_model_step_bytes(&m));
        mq_model_free(&m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_ok),
        cmocka_unit_test(test_small_errors),
        cmocka_unit_test(test_synth_tiny),
        cmocka_unit_test(test_api_sampling),
        cmocka_unit_test(test_synth_untied_tokenizer),
        cmocka_unit_test(bench_load),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
