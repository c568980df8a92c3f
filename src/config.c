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

/* rope_scaling / rope_parameters.rope_type: only plain RoPE is implemented. */
static int check_rope_type(const cJSON *rp, const char *name, const char *where, int need_type) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rp, "rope_type");
    if (!t) t = cJSON_GetObjectItemCaseSensitive(rp, "type");
    if (!t || cJSON_IsNull(t)) {
        if (!need_type) return 0;
        mq_err_set("%s: %s is not supported (must be null)", name, where);
        return -1;
    }
    if (!cJSON_IsString(t)) { mq_err_set("%s: %s.rope_type must be a string", name, where); return -1; }
    if (strcmp(t->valuestring, "default")) {
        mq_err_set("%s: %s.rope_type '%s' is not supported (only plain RoPE)", name, where, t->valuestring);
        return -1;
    }
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
    int hd = 0;
    int r = get_int(o, "head_dim", name, 1, MQ_MAX_HEAD_DIM, &hd);
    if (r < 0) return -1;
    if (r == 0) {
        if (c->hidden_size % c->n_heads) {
            mq_err_set("%s: no head_dim and hidden_size %d is not a multiple of num_attention_heads %d",
                       name, c->hidden_size, c->n_heads);
            return -1;
        }
        hd = c->hidden_size / c->n_heads;
    }
    if (hd % 2) { mq_err_set("%s: head_dim %d must be even for RoPE", name, hd); return -1; }
    c->head_dim = hd;
    c->max_pos = 32768; /* Qwen3Config default */
    if (get_int(o, "max_position_embeddings", name, 1, MQ_MAX_POS, &c->max_pos) < 0) return -1;
    c->rms_eps = 1e-6f;
    if (get_float(o, "rms_norm_eps", name, 1e-30, 1.0, &c->rms_eps) < 0) return -1;
    if (get_bool(o, "tie_word_embeddings", name, &c->tie_embeddings) < 0) return -1;

    /* RoPE: 4.x has rope_theta (+ rope_scaling) at top level, 5.x nests them in rope_parameters. */
    c->rope_theta = 10000.0f;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(o, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) { /* only a no-op {"rope_type": "default"} is accepted */
        if (!cJSON_IsObject(rs)) {
            mq_err_set("%s: rope_scaling is not supported (must be null)", name);
            return -1;
        }
        if (check_rope_type(rs, name, "rope_scaling", 1) < 0) return -1;
    }
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(o, "rope_parameters");
    if (rp && !cJSON_IsNull(rp)) {
        if (!cJSON_IsObject(rp)) { mq_err_set("%s: rope_parameters must be an object", name); return -1; }
        if (check_rope_type(rp, name, "rope_parameters", 0) < 0) return -1;
        if (get_float(rp, "rope_theta", name, 1e-3, 1e30, &c->rope_theta) < 0) return -1;
    }
    if (get_float(o, "rope_theta", name, 1e-3, 1e30, &c->rope_theta) < 0) return -1;

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
