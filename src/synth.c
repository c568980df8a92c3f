/* synth: writes a synthetic Qwen3 checkpoint (real shapes, seeded random weights scaled for confident logits). */
#include "synth.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "err.h"
#include "half.h"
#include "safetensors.h"

#ifndef MQ_TOKENIZER_DIR
#define MQ_TOKENIZER_DIR ""
#endif

/*
 * Scale reasoning (why the weights are not plain N(0, 0.02)).
 *
 * With HF's init (every matrix N(0, 0.02), norms = 1) the logits of a Qwen3 shape are nearly
 * uniform: the final hidden n = RMSNorm(h) has rms 1, so logit_j = g * E_j . n has std
 * g * sigma_e * sqrt(d) = 0.02 * 32 = 0.64 nats at d = 1024, and 151936 such logits give a top
 * probability around 1e-4 — useless for checking that two backends agree on the argmax.
 *
 *  - Logit spread. For V iid Gaussian logits of std S the softmax is dominated by a handful of
 *    tokens once S exceeds sqrt(2 ln V) ~ 4.9 nats (the random-energy-model freezing point).
 *    We aim at S = 10 by giving the final norm weight the mean g = S / (sigma_e * sqrt(d))
 *    (15.6 for 0.6B, 44 for tiny), with sigma_e = 0.02 kept for the embedding. (S = 7 gave top-1
 *    probabilities of 0.12-0.8; S = 10 gives 0.2-0.999, median ~0.65, entropy 0.01-2.9 nats, measured
 *    with a naive fp32 forward on 8-20 random prompts of tiny and 0.6B.) The max-vs-second logit gap
 *    is roughly exponential with mean S / sqrt(2 ln V) ~ 2 nats, so a few percent of positions are
 *    near-ties: backend comparisons should allow an argmax flip where the top-2 gap is tiny.
 *  - Tied embeddings make the logit of the *input* token special: the residual stream still holds
 *    h0 = E_tok, and E_tok . E_tok = sigma_e^2 d, sqrt(d) times a typical E_j . E_tok. If h0
 *    dominated the final hidden the model would just repeat its input. So the residual branches
 *    must outweigh the embedding: with 2L branches of rms ~alpha, the final rms is
 *    R = sqrt(sigma_e^2 + 2L alpha^2) and the input token's logit bonus is rho = sigma_e sqrt(d)/R
 *    standard deviations. We pick rho = 0.5: alpha = sigma_e sqrt((d/rho^2 - 1) / (2L))
 *    (0.17 for 0.6B, 0.23 for tiny): a mild preference for repeats, not a copy machine. (Measured:
 *    the input token's logit sits -1..+2.6 sd from the mean; the stream's rms grows from 0.02 to
 *    ~1.0 over the 28 layers of 0.6B, i.e. like sqrt(branches), no blow-up.)
 *  - Branches. q/k/v/gate/up are N(0, 1/fan_in): their input is RMSNorm'd (rms ~1, norm weights
 *    1 +- 0.1), so outputs have rms ~1 — no blow-up in any layer. o_proj and down_proj are
 *    N(0, alpha^2/fan_in), so each branch adds rms ~alpha to the stream. With pre-norm blocks the
 *    stream then grows only like sqrt(layer), never exponentially, over 28 layers.
 *  - Attention. q_norm/k_norm weights have mean 1.5 so q.k/sqrt(head_dim) has std ~2.3: attention
 *    is neither uniform nor one-hot, so the context matters.
 * Values are triangular variates (sum of two 16-bit uniforms, rescaled to the wanted std), two per
 * draw of a counter-based splitmix64: not Gaussian, but random weights need only the right mean and
 * variance, and at ~2 ns per value 0.6B (596M values) takes ~1 s plus the write.
 */
#define SYN_SIGMA_E 0.02
#define SYN_LOGIT_STD 10.0
#define SYN_RHO 0.5
#define SYN_NORM_NOISE 0.1
#define SYN_QK_NORM_MEAN 1.5

typedef enum { K_NORMAL, K_NORM } syn_kind;

typedef struct {
    syn_kind kind;
    double mean, std;
} syn_spec;

typedef struct {
    uint64_t seed;
    mq_dtype dtype;
    const syn_spec *spec; /* (n tensors) */
} syn_state;

void mq_synth_defaults(mq_synth_opts *o) {
    memset(o, 0, sizeof *o);
    o->shape = "tiny";
    o->dtype = MQ_BF16;
    o->tied = -1;
}

/* The shapes synth knows: the real Qwen3 dense models' config.json values (hidden, intermediate,
 * layers, q / kv heads; head_dim 128, vocab 151936, rope_theta 1e6, max_position_embeddings 40960
 * for all of them), and tiny for fast tests. tied: tie_word_embeddings as the real model has it. */
static const struct {
    const char *name;
    int hidden, inter, layers, heads, kv_heads, head_dim, tied;
} shapes[] = {
    {"qwen3-0.6b", 1024, 3072, 28, 16, 8, 128, 1},
    {"qwen3-1.7b", 2048, 6144, 28, 16, 8, 128, 1},
    {"qwen3-4b", 2560, 9728, 36, 32, 8, 128, 1},
    {"qwen3-8b", 4096, 12288, 36, 32, 8, 128, 0},
    {"qwen3-14b", 5120, 17408, 40, 40, 8, 128, 0},
    {"tiny", 128, 384, 2, 4, 2, 32, 1},
    /* test shapes for what 4B / 8B (4 q heads per kv head, hidden 2560 = 5 x 512) and 14B (5 per kv
     * head) take through the kernels, at tiny's cost: hidden 320, head_dim 128 */
    {"tiny-gqa4", 320, 960, 2, 8, 2, 128, 1},
    {"tiny-gqa5", 320, 960, 2, 10, 2, 128, 1},
};

const char *mq_synth_shape_list(void) {
    return "qwen3-0.6b, qwen3-1.7b, qwen3-4b, qwen3-8b, qwen3-14b, tiny, tiny-gqa4 or tiny-gqa5";
}

int mq_synth_shape(const char *shape, mq_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 151936; /* the real vocab, so the real tokenizer works with every shape */
    c->max_pos = 40960;
    c->rope.theta = 1e6;
    c->rope.factor = 1.0;
    c->rope.attn_factor = 1.0;
    c->rms_eps = 1e-6f;
    c->dtype = MQ_BF16;
    c->bos_token_id = 151643;
    c->eos_token_id = 151645;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        if (strcmp(shape, shapes[i].name)) continue;
        c->hidden_size = shapes[i].hidden;
        c->intermediate_size = shapes[i].inter;
        c->n_layers = shapes[i].layers;
        c->n_heads = shapes[i].heads;
        c->n_kv_heads = shapes[i].kv_heads;
        c->head_dim = shapes[i].head_dim;
        c->tie_embeddings = shapes[i].tied;
        return 0;
    }
    mq_err_set("synth: unknown shape '%s' (want %s)", shape, mq_synth_shape_list());
    return -1;
}

/* splitmix64's output function on a counter: element j of a tensor is mix(base + j * golden), so
 * any chunk of a tensor can be generated on its own (the writer streams chunks). */
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* mq_st_fill_fn: bytes [off, off + nbytes) of tensor i, from a stream that depends only on (seed, i). */
static int fill(void *dst, size_t off, size_t nbytes, int i, void *user) {
    const syn_state *s = user;
    const syn_spec *sp = &s->spec[i];
    const uint64_t golden = 0x9E3779B97F4A7C15ull;
    const uint64_t base = mix64(s->seed ^ mix64(0xD1B54A32D192ED03ull * (uint64_t)(i + 1)));
    const size_t es = mq_dtype_size(s->dtype), j0 = off / es, n = nbytes / es;
    /* Each 64-bit draw gives two values (elements 2q and 2q+1), each the sum of two 16-bit uniforms:
     * triangular on (-1, 1) after centering, variance 2 * (65536^2 - 1) / 12 / 65536^2 ~ 1/6. */
    const float k = (float)(sp->std * sqrt(6.0) / 65536.0), m = (float)sp->mean;
    const float c = 65535.0f;
    float *of = dst;
    uint16_t *ob = dst;
    const int f32 = s->dtype == MQ_F32;
    /* The writer's chunks start at multiples of 8 bytes, so j0 is even and pairs never straddle. */
    for (size_t j = 0; j < n; j += 2) {
        uint64_t r = mix64(base + (uint64_t)((j0 + j) >> 1) * golden);
        float v0 = m + k * ((float)(int32_t)((uint32_t)(r & 0xffff) + (uint32_t)((r >> 16) & 0xffff)) - c);
        float v1 = m + k * ((float)(int32_t)((uint32_t)((r >> 32) & 0xffff) + (uint32_t)(r >> 48)) - c);
        if (f32) {
            of[j] = v0;
            if (j + 1 < n) of[j + 1] = v1;
        } else {
            ob[j] = mq_half_bf16(v0);
            if (j + 1 < n) ob[j + 1] = mq_half_bf16(v1);
        }
    }
    return 0;
}

static int mkdir_p(const char *dir) {
    char p[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof p) { mq_err_set("synth: bad output directory '%s'", dir); return -1; }
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++)
        if (p[i] == '/' || p[i] == 0) {
            char c = p[i];
            p[i] = 0;
            if (mkdir(p, 0755) < 0 && errno != EEXIST) {
                mq_err_set("%s: cannot create directory: %s", p, strerror(errno));
                return -1;
            }
            p[i] = c;
        }
    struct stat sb;
    if (stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode)) { mq_err_set("%s: not a directory", dir); return -1; }
    return 0;
}

static int write_json(const char *dir, const char *file, cJSON *o) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    if (!s) { mq_err_set("%s: out of memory", path); return -1; }
    FILE *f = fopen(path, "w");
    if (!f) { free(s); mq_err_set("%s: cannot create: %s", path, strerror(errno)); return -1; }
    int ok = fputs(s, f) >= 0 && fputc('\n', f) != EOF;
    ok = (fclose(f) == 0) && ok;
    free(s);
    if (!ok) { mq_err_set("%s: write failed", path); return -1; }
    return 0;
}

/* config.json in the transformers 4.x layout the real Qwen3 checkpoints ship with. */
static cJSON *config_json(const mq_config *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON *a = cJSON_AddArrayToObject(o, "architectures");
    cJSON_AddItemToArray(a, cJSON_CreateString("Qwen3ForCausalLM"));
    cJSON_AddBoolToObject(o, "attention_bias", 0);
    cJSON_AddNumberToObject(o, "attention_dropout", 0.0);
    cJSON_AddNumberToObject(o, "bos_token_id", c->bos_token_id);
    cJSON_AddNumberToObject(o, "eos_token_id", c->eos_token_id);
    cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    cJSON_AddNumberToObject(o, "hidden_size", c->hidden_size);
    cJSON_AddNumberToObject(o, "initializer_range", 0.02);
    cJSON_AddNumberToObject(o, "intermediate_size", c->intermediate_size);
    cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_pos);
    cJSON_AddNumberToObject(o, "max_window_layers", c->n_layers);
    cJSON_AddStringToObject(o, "model_type", "qwen3");
    cJSON_AddNumberToObject(o, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(o, "rms_norm_eps", 1e-6);
    if (c->rope.type == MQ_ROPE_YARN) { /* as Qwen's model cards say to add it for long inputs */
        cJSON *rs = cJSON_AddObjectToObject(o, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type", "yarn");
        cJSON_AddNumberToObject(rs, "factor", c->rope.factor);
        cJSON_AddNumberToObject(rs, "original_max_position_embeddings", c->rope.orig_max);
    } else {
        cJSON_AddNullToObject(o, "rope_scaling");
    }
    cJSON_AddNumberToObject(o, "rope_theta", c->rope.theta);
    cJSON_AddNullToObject(o, "sliding_window");
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_embeddings);
    cJSON_AddStringToObject(o, "torch_dtype", c->dtype == MQ_F32 ? "float32" : "bfloat16");
    cJSON_AddStringToObject(o, "transformers_version", "4.51.0");
    cJSON_AddBoolToObject(o, "use_cache", 1);
    cJSON_AddBoolToObject(o, "use_sliding_window", 0);
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    return o;
}

static cJSON *gen_json(void) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "bos_token_id", 151643);
    cJSON_AddBoolToObject(o, "do_sample", 1);
    cJSON *e = cJSON_AddArrayToObject(o, "eos_token_id");
    cJSON_AddItemToArray(e, cJSON_CreateNumber(151645));
    cJSON_AddItemToArray(e, cJSON_CreateNumber(151643));
    cJSON_AddNumberToObject(o, "pad_token_id", 151643);
    cJSON_AddNumberToObject(o, "temperature", 0.6);
    cJSON_AddNumberToObject(o, "top_k", 20);
    cJSON_AddNumberToObject(o, "top_p", 0.95);
    cJSON_AddStringToObject(o, "transformers_version", "4.51.0");
    return o;
}

/* Copy src_dir/file to dir/file. Returns 1 copied, 0 source absent, -1 error. */
static int copy_file(const char *src_dir, const char *dir, const char *file) {
    char sp[4096], dp[4096];
    snprintf(sp, sizeof sp, "%s/%s", src_dir, file);
    snprintf(dp, sizeof dp, "%s/%s", dir, file);
    FILE *in = fopen(sp, "rb");
    if (!in) return 0;
    FILE *out = fopen(dp, "wb");
    if (!out) { fclose(in); mq_err_set("%s: cannot create: %s", dp, strerror(errno)); return -1; }
    char buf[1 << 16];
    size_t n;
    int ok = 1;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
    ok = ok && !ferror(in);
    fclose(in);
    ok = (fclose(out) == 0) && ok;
    if (!ok) { mq_err_set("%s: copy from %s failed", dp, sp); return -1; }
    return 1;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int mq_synth_write(const char *dir, const mq_synth_opts *o) {
    mq_config c;
    if (mq_synth_shape(o->shape, &c) < 0) return -1;
    if (o->dtype != MQ_BF16 && o->dtype != MQ_F32) {
        mq_err_set("synth: dtype must be bf16 or f32");
        return -1;
    }
    if (o->tied >= 0) c.tie_embeddings = o->tied;
    if (o->layers < 0 || o->layers > 1000) {
        mq_err_set("synth: layers must be 1..1000 (0: the shape's), got %d", o->layers);
        return -1;
    }
    if (o->layers > 0) c.n_layers = o->layers;
    if (o->yarn_factor != 0) {
        if (!(o->yarn_factor >= 1.0 && o->yarn_factor <= 1e3) || o->yarn_orig < 1 || o->yarn_orig > c.max_pos) {
            mq_err_set("synth: yarn factor must be in [1, 1000] and its original length in [1, %d]", c.max_pos);
            return -1;
        }
        c.rope.type = MQ_ROPE_YARN;
        c.rope.factor = o->yarn_factor;
        c.rope.orig_max = o->yarn_orig;
    }
    c.dtype = o->dtype;
    if (mkdir_p(dir) < 0) return -1;
    double t0 = now_s();

    const double d = c.hidden_size, L = c.n_layers;
    const double alpha = SYN_SIGMA_E * sqrt((d / (SYN_RHO * SYN_RHO) - 1.0) / (2.0 * L));
    const double g = SYN_LOGIT_STD / (SYN_SIGMA_E * sqrt(d));
    const int64_t h = c.hidden_size, q = (int64_t)c.n_heads * c.head_dim, kv = (int64_t)c.n_kv_heads * c.head_dim;
    const int64_t f = c.intermediate_size, hd = c.head_dim, V = c.vocab_size;

    int n = 2 + 11 * c.n_layers + (c.tie_embeddings ? 0 : 1);
    mq_st_wtensor *t = calloc((size_t)n, sizeof *t);
    syn_spec *sp = calloc((size_t)n, sizeof *sp);
    char *names = calloc((size_t)n, 96);
    if (!t || !sp || !names) {
        free(t); free(sp); free(names);
        mq_err_set("synth: out of memory");
        return -1;
    }
    int k = 0;
#define ADD(NAME_FMT, LAYER, ND, D0, D1, KIND, MEAN, STD)                        \
    do {                                                                         \
        snprintf(names + 96 * k, 96, NAME_FMT, LAYER);                           \
        t[k] = (mq_st_wtensor){names + 96 * k, c.dtype, ND, {D0, D1, 0, 0}, NULL}; \
        sp[k] = (syn_spec){KIND, MEAN, STD};                                     \
        k++;                                                                     \
    } while (0)
    ADD("model.embed_tokens.weight%.0d", 0, 2, V, h, K_NORMAL, 0.0, SYN_SIGMA_E);
    for (int i = 0; i < c.n_layers; i++) {
        ADD("model.layers.%d.input_layernorm.weight", i, 1, h, 0, K_NORM, 1.0, SYN_NORM_NOISE);
        ADD("model.layers.%d.self_attn.q_proj.weight", i, 2, q, h, K_NORMAL, 0.0, 1.0 / sqrt(d));
        ADD("model.layers.%d.self_attn.k_proj.weight", i, 2, kv, h, K_NORMAL, 0.0, 1.0 / sqrt(d));
        ADD("model.layers.%d.self_attn.v_proj.weight", i, 2, kv, h, K_NORMAL, 0.0, 1.0 / sqrt(d));
        ADD("model.layers.%d.self_attn.q_norm.weight", i, 1, hd, 0, K_NORM, SYN_QK_NORM_MEAN, SYN_NORM_NOISE);
        ADD("model.layers.%d.self_attn.k_norm.weight", i, 1, hd, 0, K_NORM, SYN_QK_NORM_MEAN, SYN_NORM_NOISE);
        ADD("model.layers.%d.self_attn.o_proj.weight", i, 2, h, q, K_NORMAL, 0.0, alpha / sqrt((double)q));
        ADD("model.layers.%d.post_attention_layernorm.weight", i, 1, h, 0, K_NORM, 1.0, SYN_NORM_NOISE);
        ADD("model.layers.%d.mlp.gate_proj.weight", i, 2, f, h, K_NORMAL, 0.0, 1.0 / sqrt(d));
        ADD("model.layers.%d.mlp.up_proj.weight", i, 2, f, h, K_NORMAL, 0.0, 1.0 / sqrt(d));
        ADD("model.layers.%d.mlp.down_proj.weight", i, 2, h, f, K_NORMAL, 0.0, alpha / sqrt((double)f));
    }
    ADD("model.norm.weight%.0d", 0, 1, h, 0, K_NORM, g, g * SYN_NORM_NOISE);
    if (!c.tie_embeddings) ADD("lm_head.weight%.0d", 0, 2, V, h, K_NORMAL, 0.0, SYN_SIGMA_E);
#undef ADD

    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    syn_state ss = {o->seed, c.dtype, sp};
    int r = mq_st_write_fn(path, t, n, fill, &ss);
    double params = 0;
    for (int i = 0; i < n; i++) params += (double)t[i].shape[0] * (t[i].ndim == 2 ? (double)t[i].shape[1] : 1.0);
    free(t);
    free(sp);
    free(names);
    if (r < 0) return -1;
    double t1 = now_s();
    if (write_json(dir, "config.json", config_json(&c)) < 0 || write_json(dir, "generation_config.json", gen_json()) < 0)
        return -1;

    const char *tok = o->tokenizer_dir;
    if (!tok) tok = getenv("MQ_TOKENIZER_DIR");
    if (!tok || !*tok) tok = MQ_TOKENIZER_DIR;
    int tj = copy_file(tok, dir, "tokenizer.json");
    if (tj < 0) return -1;
    int tc = tj ? copy_file(tok, dir, "tokenizer_config.json") : 0;
    if (tc < 0) return -1;

    if (o->log) {
        FILE *L_ = o->log;
        fprintf(L_, "synth: %s/model.safetensors: %d tensors, %.0f params, %s, %.1f MB in %.2f s\n", dir, n,
                params, mq_dtype_name(c.dtype), params * (double)mq_dtype_size(c.dtype) / 1e6, t1 - t0);
        fprintf(L_, "synth: %s/config.json (%s: %d layers, hidden %d, %d/%d heads x %d, intermediate %d, vocab %d, %s)\n",
                dir, o->shape, c.n_layers, c.hidden_size, c.n_heads, c.n_kv_heads, c.head_dim, c.intermediate_size,
                c.vocab_size, c.tie_embeddings ? "tied" : "untied");
        fprintf(L_, "synth: %s/generation_config.json\n", dir);
        if (tj) fprintf(L_, "synth: tokenizer.json%s copied from %s\n", tc ? " + tokenizer_config.json" : "", tok);
        fprintf(L_, "synth: scales: embed std %.3g; q/k/v/gate/up std 1/sqrt(%d); o/down branch rms %.3g "
                    "(input-token logit bonus %.2f sd); q/k_norm mean %.2g; final norm mean %.3g "
                    "(target logit std %.0f nats); norm noise %.0f%%; seed %llu\n",
                SYN_SIGMA_E, c.hidden_size, alpha, SYN_RHO, SYN_QK_NORM_MEAN, g, SYN_LOGIT_STD, SYN_NORM_NOISE * 100,
                (unsigned long long)o->seed);
    }
    if (!tj)
        fprintf(stderr,
                "synth: warning: no tokenizer.json in %s (run scripts/deps.sh or set MQ_TOKENIZER_DIR); "
                "checkpoint written without tokenizer files\n",
                tok);
    return 0;
}
