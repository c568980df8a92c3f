/* config: parses Qwen3 config.json (transformers 4.x and 5.x layouts) and generation_config.json. */
#include "config.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"

/* Upper bounds on dimensions: far above any real Qwen3, low enough that products of them
 * (vocab * hidden * dtype size, n_layers * ...) cannot overflow size_t or int arithmetic. */
#define MQ_MAX_VOCAB (1 << 22)
#define MQ_MAX_DIM (1 << 16)
#define MQ_MAX_INTER (1 << 20)
#define MQ_MAX_LAYERS 1024
#define MQ_MAX_HEADS 1024
#define MQ_MAX_HEAD_DIM 1024
#define MQ_MAX_POS (1 << 24)

const char *mq_dtype_name(mq_dtype t) {
    switch (t) {
    case MQ_F32: return "F32";
    case MQ_F16: return "F16";
    case MQ_BF16: return "BF16";
    }
    return "?";
}

size_t mq_dtype_size(mq_dtype t) {
    switch (t) {
    case MQ_F32: return 4;
    case MQ_F16: return 2;
    case MQ_BF16: return 2;
    }
    return 0;
}

/* Read a whole file into a malloc'd NUL-terminated buffer. Sets mq_err on failure. */
static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { mq_err_set("%s: cannot open: %s", path, strerror(errno)); return NULL; }
    size_t cap = 1 << 14, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        if (cap > ((size_t)64 << 20)) { /* a config is a few KB; refuse absurd files */
            free(buf); fclose(f);
            mq_err_set("%s: file is larger than 64 MiB, not a config", path);
            return NULL;
        }
        char *b = realloc(buf, cap *= 2);
        if (!b) free(buf);
        buf = b;
    }
    if (!buf) { fclose(f); mq_err_set("%s: out of memory", path); return NULL; }
    if (ferror(f)) { free(buf); fclose(f); mq_err_set("%s: read error", path); return NULL; }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

/* Field readers: absent (or JSON null) -> return 0 and leave *out; present and valid -> 1;
 * present and invalid -> -1 with mq_err set. */
static int get_int(const cJSON *o, const char *key, const char *name, long lo, long hi, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble)) {
        mq_err_set("%s: %s must be an integer", name, key);
        return -1;
    }
    if (v->valuedouble < (double)lo || v->valuedouble > (double)hi) {
        mq_err_set("%s: %s = %.17g is out of range [%ld, %ld]", name, key, v->valuedouble, lo, hi);
        return -1;
    }
    *out = (int)v->valuedouble;
    return 1;
}

static int get_float(const cJSON *o, const char *key, const char *name, double lo, double hi,
                     float *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        mq_err_set("%s: %s must be a number", name, key);
        return -1;
    }
    if (!(v->valuedouble >= lo && v->valuedouble <= hi)) {
        mq_err_set("%s: %s = %g is out of range [%g, %g]", name, key, v->valuedouble, lo, hi);
        return -1;
    }
    *out = (float)v->valuedouble;
    return 1;
}

static int get_bool(const cJSON *o, const char *key, const char *name, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) { mq_err_set("%s: %s must be true or false", name, key); return -1; }
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return 1;
}

/* A required positive dimension. */
static int need_int(const cJSON *o, const char *key, const char *name, long hi, int *out) {
    int r = get_int(o, key, name, 1, hi, out);
    if (r == 0) mq_err_set("%s: missing required field %s", name, key);
    return r == 1 ? 0 : -1;
}

/* A token id field that may be an int or a list of ints (first one is taken); -1 when absent. */
static int get_token_id(const cJSON *o, const char *key, const char *name, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = -1;
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > 2147483647.0) {
        mq_err_set("%s: %s must be a non-negative integer or a list of them", name, key);
        return -1;
    }
    *out = (int)v->valuedouble;
    return 0;
}

static int parse_dtype(const char *s, mq_dtype *out) {
    if (!strcmp(s, "bfloat16")) *out = MQ_BF16;
    else if (!strcmp(s, "float16") || !strcmp(s, "half")) *out = MQ_F16;
    else if (!strcmp(s, "float32") || !strcmp(s, "float")) *out = MQ_F32;
    else return -1;
    return 0;
}

static int get_double(const cJSON *o, const char *key, const char *name, double lo, double hi, double *out) {
    float unused;
    int r = get_float(o, key, name, lo, hi, &unused);
    if (r == 1) *out = cJSON_GetObjectItemCaseSensitive(o, key)->valuedouble;
    return r;
}

/* RoPE: 4.x writes rope_theta (+ rope_scaling) at the top level, 5.x nests both in rope_parameters.
 * Resolved as transformers 5.x resolves them (convert_rope_params_to_dict, standardize_rope_params,
 * _compute_*_parameters): a non-null rope_scaling is the dict read; rope_theta is the dict's or the
 * top level's (10000 when neither has it); a top-level original_max_position_embeddings wins over
 * the dict's; YaRN's factor falls back to max_position_embeddings / original, beta_fast / beta_slow
 * to 32 / 1 when absent or 0, attention_factor to the mscale formula. Where two places give
 * different values we refuse rather than guess which one the checkpoint's author meant. */
static int parse_rope(mq_config *c, const cJSON *o, const char *name) {
    mq_rope *r = &c->rope;
    memset(r, 0, sizeof *r);
    r->theta = 10000.0;
    r->factor = 1.0;
    r->attn_factor = 1.0;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(o, "rope_scaling");
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(o, "rope_parameters");
    if (rs && cJSON_IsNull(rs)) rs = NULL;
    if (rp && cJSON_IsNull(rp)) rp = NULL;
    if (rs && !cJSON_IsObject(rs)) { mq_err_set("%s: rope_scaling must be an object or null", name); return -1; }
    if (rp && !cJSON_IsObject(rp)) { mq_err_set("%s: rope_parameters must be an object or null", name); return -1; }
    const cJSON *d = rs ? rs : rp;
    const char *where = rs ? "rope_scaling" : "rope_parameters";

    /* rope_theta: top level and / or inside the dict(s); all that are present must agree */
    double th[3] = {0, 0, 0};
    int nth = 0;
    const cJSON *srcs[3] = {o, rs, rp};
    for (int i = 0; i < 3; i++) {
        if (!srcs[i]) continue;
        int k = get_double(srcs[i], "rope_theta", name, 1e-3, 1e30, &th[nth]);
        if (k < 0) return -1;
        if (k && nth && th[nth] != th[0]) {
            mq_err_set("%s: rope_theta is given twice with different values (%g and %g)", name, th[0], th[nth]);
            return -1;
        }
        nth += k;
    }
    if (nth) r->theta = th[0];
    double prf = 1.0;
    if (get_double(o, "partial_rotary_factor", name, 0.0, 1.0, &prf) < 0 ||
        (d && get_double(d, "partial_rotary_factor", name, 0.0, 1.0, &prf) < 0))
        return -1;
    if (prf != 1.0) {
        mq_err_set("%s: partial_rotary_factor %g is not supported (Qwen3 rotates the whole head)", name, prf);
        return -1;
    }
    if (!d) return 0;

    const cJSON *t = cJSON_GetObjectItemCaseSensitive(d, "rope_type");
    if (!t || cJSON_IsNull(t)) t = cJSON_GetObjectItemCaseSensitive(d, "type");
    const char *ty = "default";
    if (t && !cJSON_IsNull(t)) {
        if (!cJSON_IsString(t)) { mq_err_set("%s: %s.rope_type must be a string", name, where); return -1; }
        ty = t->valuestring;
    } else if (cJSON_GetObjectItemCaseSensitive(d, "factor")) { /* 5.x would ignore it, 4.x fails */
        mq_err_set("%s: %s has a factor but no rope_type", name, where);
        return -1;
    }
    if (!strcmp(ty, "default")) r->type = MQ_ROPE_DEFAULT;
    else if (!strcmp(ty, "linear")) r->type = MQ_ROPE_LINEAR;
    else if (!strcmp(ty, "dynamic")) r->type = MQ_ROPE_DYNAMIC;
    else if (!strcmp(ty, "yarn")) r->type = MQ_ROPE_YARN;
    else {
        mq_err_set("%s: %s.rope_type '%.40s' is not supported (default, linear, dynamic and yarn are)", name,
                   where, ty);
        return -1;
    }
    if (rs && rp) { /* both: HF reads rope_scaling; refuse a rope_parameters that says otherwise */
        const cJSON *t2 = cJSON_GetObjectItemCaseSensitive(rp, "rope_type");
        const char *ty2 = t2 && cJSON_IsString(t2) ? t2->valuestring : "default";
        if (strcmp(ty, ty2)) {
            mq_err_set("%s: rope_scaling says '%.40s' and rope_parameters '%.40s'", name, ty, ty2);
            return -1;
        }
    }
    if (r->type == MQ_ROPE_DEFAULT) return 0;

    int hf = get_double(d, "factor", name, 1.0, 1e6, &r->factor);
    if (hf < 0) {
        mq_err_set("%s: %s.factor must be a number >= 1", name, where);
        return -1;
    }
    int ho = get_int(o, "original_max_position_embeddings", name, 1, MQ_MAX_POS, &r->orig_max);
    if (ho == 0) ho = get_int(d, "original_max_position_embeddings", name, 1, MQ_MAX_POS, &r->orig_max);
    if (ho < 0) return -1;
    if (ho == 0) r->orig_max = c->max_pos;
    if (r->type != MQ_ROPE_YARN) {
        if (!hf) { mq_err_set("%s: %s.factor is missing (rope_type '%s' needs it)", name, where, ty); return -1; }
        if (r->type == MQ_ROPE_LINEAR && r->factor * c->max_pos > c->ctx_limit)
            c->ctx_limit = (int)fmin(r->factor * c->max_pos, MQ_MAX_POS);
        return 0;
    }
    /* YaRN */
    if (!hf) {
        r->factor = (double)c->max_pos / r->orig_max;
        if (r->factor < 1.0) {
            mq_err_set("%s: %s has no factor and max_position_embeddings %d < original %d", name, where,
                       c->max_pos, r->orig_max);
            return -1;
        }
    }
    double mscale = 0, mscale_all = 0;
    r->beta_fast = 0;
    r->beta_slow = 0;
    r->truncate = 1;
    if (get_double(d, "beta_fast", name, 0.0, 1e6, &r->beta_fast) < 0 ||
        get_double(d, "beta_slow", name, 0.0, 1e6, &r->beta_slow) < 0 ||
        get_double(d, "mscale", name, 0.0, 1e6, &mscale) < 0 ||
        get_double(d, "mscale_all_dim", name, 0.0, 1e6, &mscale_all) < 0 ||
        get_bool(d, "truncate", name, &r->truncate) < 0)
        return -1;
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(d, "truncate");
    if (tr && cJSON_IsNull(tr)) r->truncate = 0; /* HF: .get("truncate", True) is None, i.e. false */
    if (r->beta_fast == 0) r->beta_fast = 32; /* HF: rope_parameters.get("beta_fast") or 32 */
    if (r->beta_slow == 0) r->beta_slow = 1;
    if (!(r->beta_fast > r->beta_slow)) {
        mq_err_set("%s: %s.beta_fast %g must be larger than beta_slow %g", name, where, r->beta_fast, r->beta_slow);
        return -1;
    }
    int ha = get_double(d, "attention_factor", name, 1e-6, 1e6, &r->attn_factor);
    if (ha < 0) return -1;
    if (!ha) { /* HF's get_mscale(scale, m) = 0.1 m ln(scale) + 1 for scale > 1, else 1 */
        const double f = r->factor;
        if (mscale != 0 && mscale_all != 0)
            r->attn_factor = f <= 1 ? 1.0 : (0.1 * mscale * log(f) + 1.0) / (0.1 * mscale_all * log(f) + 1.0);
        else
            r->attn_factor = f <= 1 ? 1.0 : 0.1 * log(f) + 1.0;
    }
    double lim = r->factor * r->orig_max;
    if (lim > c->ctx_limit) c->ctx_limit = (int)fmin(lim, MQ_MAX_POS);
    return 0;
}

static int parse_obj(mq_config *c, const cJSON *o, const char *name) {
    memset(c, 0, sizeof *c);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(o, "model_type");
    if (!mt) { mq_err_set("%s: missing model_type (want \"qwen3\")", name); return -1; }
    if (!cJSON_IsString(mt) || strcmp(mt->valuestring, "qwen3")) {
        char *p = cJSON_PrintUnformatted(mt);
        mq_err_set("%s: model_type %.60s is not supported (want \"qwen3\")", name, p ? p : "?");
        free(p);
        return -1;
    }
    if (need_int(o, "vocab_size", name, MQ_MAX_VOCAB, &c->vocab_size) ||
        need_int(o, "hidden_size", name, MQ_MAX_DIM, &c->hidden_size) ||
        need_int(o, "intermediate_size", name, MQ_MAX_INTER, &c->intermediate_size) ||
        need_int(o, "num_hidden_layers", name, MQ_MAX_LAYERS, &c->n_layers) ||
        need_int(o, "num_attention_heads", name, MQ_MAX_HEADS, &c->n_heads))
        return -1;
    /* Qwen3Config: num_key_value_heads None -> num_attention_heads. */
    c->n_kv_heads = c->n_heads;
    if (get_int(o, "num_key_value_heads", name, 1, MQ_MAX_HEADS, &c->n_kv_heads) < 0) return -1;
    if (c->n_heads % c->n_kv_heads) {
        mq_err_set("%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", name,
                   c->n_heads, c->n_kv_heads);
        return -1;
    }
    /* Qwen3Config's head_dim defaults to 128 (not hidden / heads): a config.json without it means
     * 128 to transformers, so it does here too. */
    int hd = 128;
    if (get_int(o, "head_dim", name, 1, MQ_MAX_HEAD_DIM, &hd) < 0) return -1;
    if (hd % 2) { mq_err_set("%s: head_dim %d must be even for RoPE", name, hd); return -1; }
    c->head_dim = hd;
    c->max_pos = 32768; /* Qwen3Config default */
    if (get_int(o, "max_position_embeddings", name, 1, MQ_MAX_POS, &c->max_pos) < 0) return -1;
    c->rms_eps = 1e-6f;
    if (get_float(o, "rms_norm_eps", name, 1e-30, 1.0, &c->rms_eps) < 0) return -1;
    if (get_bool(o, "tie_word_embeddings", name, &c->tie_embeddings) < 0) return -1;

    c->ctx_limit = c->max_pos;
    if (parse_rope(c, o, name) < 0) return -1;

    /* Features a Qwen3 dense model could switch on that this engine does not implement. */
    int ab = 0, sw = 0;
    if (get_bool(o, "attention_bias", name, &ab) < 0) return -1;
    if (ab) { mq_err_set("%s: attention_bias true is not supported", name); return -1; }
    if (get_bool(o, "use_sliding_window", name, &sw) < 0) return -1;
    if (sw) { mq_err_set("%s: use_sliding_window true is not supported", name); return -1; }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(o, "hidden_act");
    if (act && !cJSON_IsNull(act) && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu"))) {
        mq_err_set("%s: hidden_act must be \"silu\"", name);
        return -1;
    }

    c->dtype = MQ_BF16;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(o, "torch_dtype");
    if (!dt || cJSON_IsNull(dt)) dt = cJSON_GetObjectItemCaseSensitive(o, "dtype");
    if (dt && !cJSON_IsNull(dt)) {
        if (!cJSON_IsString(dt) || parse_dtype(dt->valuestring, &c->dtype) < 0) {
            char *p = cJSON_PrintUnformatted(dt);
            mq_err_set("%s: dtype %.60s is not supported (want bfloat16, float16 or float32)", name,
                       p ? p : "?");
            free(p);
            return -1;
        }
    }
    if (get_token_id(o, "bos_token_id", name, &c->bos_token_id) < 0 ||
        get_token_id(o, "eos_token_id", name, &c->eos_token_id) < 0)
        return -1;
    return 0;
}

int mq_config_parse(mq_config *c, const char *json, size_t len, const char *name) {
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!o) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        mq_err_set("%s: bad JSON near byte %zu", name, at);
        return -1;
    }
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        mq_err_set("%s: top level is not a JSON object", name);
        return -1;
    }
    int r = parse_obj(c, o, name);
    cJSON_Delete(o);
    return r;
}

int mq_config_load(mq_config *c, const char *path) {
    size_t len;
    char *buf = read_all(path, &len);
    if (!buf) return -1;
    int r = mq_config_parse(c, buf, len, path);
    free(buf);
    return r;
}

int mq_config_load_gen(mq_gencfg *g, const char *path) {
    memset(g, 0, sizeof *g);
    FILE *probe = fopen(path, "rb");
    if (!probe && errno == ENOENT) return 0;
    if (probe) fclose(probe);
    size_t len;
    char *buf = read_all(path, &len);
    if (!buf) return -1;
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!o || !cJSON_IsObject(o)) {
        size_t at = o ? 0 : (end && end >= buf ? (size_t)(end - buf) : 0);
        cJSON_Delete(o);
        free(buf);
        if (at) mq_err_set("%s: bad JSON near byte %zu", path, at);
        else mq_err_set("%s: bad JSON (top level must be an object)", path);
        return -1;
    }
    free(buf);
    int r = -1;
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(o, "eos_token_id");
    if (eos && !cJSON_IsNull(eos)) {
        int n = cJSON_IsArray(eos) ? cJSON_GetArraySize(eos) : 1;
        if (n > (int)(sizeof g->eos_ids / sizeof g->eos_ids[0])) {
            mq_err_set("%s: eos_token_id lists %d ids, at most 8 are supported", path, n);
            goto out;
        }
        for (int i = 0; i < n; i++) {
            const cJSON *v = cJSON_IsArray(eos) ? cJSON_GetArrayItem(eos, i) : eos;
            if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
                v->valuedouble > 2147483647.0) {
                mq_err_set("%s: eos_token_id must be a non-negative integer or a list of them", path);
                goto out;
            }
            g->eos_ids[g->n_eos++] = (int)v->valuedouble;
        }
    }
    int k;
    if ((k = get_float(o, "temperature", path, 0.0, 1e6, &g->temperature)) < 0) goto out;
    g->has_temperature = k;
    if ((k = get_int(o, "top_k", path, 0, 2147483647L, &g->top_k)) < 0) goto out;
    g->has_top_k = k;
    if ((k = get_float(o, "top_p", path, 0.0, 1.0, &g->top_p)) < 0) goto out;
    g->has_top_p = k;
    if ((k = get_float(o, "min_p", path, 0.0, 1.0, &g->min_p)) < 0) goto out;
    g->has_min_p = k;
    if ((k = get_float(o, "repetition_penalty", path, 1e-6, 1e6, &g->rep_penalty)) < 0) goto out;
    g->has_rep_penalty = k;
    if ((k = get_bool(o, "do_sample", path, &g->do_sample)) < 0) goto out;
    g->has_do_sample = k;
    r = 0;
out:
    cJSON_Delete(o);
    if (r < 0) memset(g, 0, sizeof *g);
    return r;
}
