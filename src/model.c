/* model: binds Qwen3 tensor names to shape- and dtype-checked weight views into the mmap'd checkpoint. */
#include "model.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "err.h"
#include "half.h"

/* What error messages call the weights when a tensor is missing (no shard to name yet). */
static const char *weights_label(const char *dir) {
    char p[4096];
    struct stat sb;
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (stat(p, &sb) == 0) return "model.safetensors";
    return "model.safetensors.index.json";
}

static void fmt_shape(char *out, size_t cap, const int64_t *s, int nd) {
    size_t k = 0;
    k += (size_t)snprintf(out + k, cap - k, "[");
    for (int i = 0; i < nd && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (k < cap) snprintf(out + k, cap - k, "]");
}

/* Bind tensor `name` with expected shape (d0) or (d0, d1) into *out. */
static int bind(const mq_model *m, const char *name, int nd, int64_t d0, int64_t d1, mq_tref *out) {
    const mq_st_tensor *t = mq_st_find(m->st, name);
    if (!t) {
        mq_err_set("%s: missing tensor %s (in %s)", weights_label(m->dir), name, m->dir);
        return -1;
    }
    int64_t want[2] = {d0, d1};
    int ok = t->ndim == nd;
    for (int i = 0; ok && i < nd; i++) ok = t->shape[i] == want[i];
    if (!ok) {
        char got[160], exp[64];
        fmt_shape(got, sizeof got, t->shape, t->ndim);
        fmt_shape(exp, sizeof exp, want, nd);
        mq_err_set("%s: tensor %s has shape %s, expected %s", t->file, name, got, exp);
        return -1;
    }
    if (mq_st_engine_dtype(t->dtype, &out->dt) < 0) {
        mq_err_set("%s: tensor %s has dtype %s, which is not supported (want F32, F16 or BF16)", t->file, name,
                   mq_st_dtype_name(t->dtype));
        return -1;
    }
    out->p = t->data;
    return 0;
}

static int bind_layer(const mq_model *m, int i, mq_layer_w *w) {
    const mq_config *c = &m->cfg;
    int64_t h = c->hidden_size, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t f = c->intermediate_size, hd = c->head_dim;
    static const char *const sfx[] = {
        "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.q_norm",
        "self_attn.k_norm", "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
        "mlp.down_proj"};
    mq_tref *dst[] = {&w->in_norm, &w->q, &w->k, &w->v, &w->q_norm, &w->k_norm,
                      &w->o, &w->post_norm, &w->gate, &w->up, &w->down};
    const int nd[] = {1, 2, 2, 2, 1, 1, 2, 1, 2, 2, 2};
    const int64_t d0[] = {h, q, kv, kv, hd, hd, h, h, f, f, h};
    const int64_t d1[] = {0, h, h, h, 0, 0, q, 0, h, h, f};
    for (size_t k = 0; k < sizeof sfx / sizeof sfx[0]; k++) {
        char name[128];
        snprintf(name, sizeof name, "model.layers.%d.%s.weight", i, sfx[k]);
        if (bind(m, name, nd[k], d0[k], d1[k], dst[k]) < 0) return -1;
    }
    return 0;
}

/* A checkpoint with layers past n_layers means config.json and the weights disagree. */
static int check_extra_layers(const mq_model *m) {
    for (int i = 0; i < mq_st_count(m->st); i++) {
        const mq_st_tensor *t = mq_st_at(m->st, i);
        int l;
        if (sscanf(t->name, "model.layers.%d.", &l) == 1 && (l < 0 || l >= m->cfg.n_layers)) {
            mq_err_set("%s: tensor %s is past num_hidden_layers = %d in config.json", t->file, t->name,
                       m->cfg.n_layers);
            return -1;
        }
    }
    return 0;
}

int mq_model_load(mq_model *m, const char *dir) {
    memset(m, 0, sizeof *m);
    char path[4096];
    if (!(m->dir = strdup(dir))) { mq_err_set("%s: out of memory", dir); return -1; }
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (mq_config_load(&m->cfg, path) < 0) goto fail;
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    if (mq_config_load_gen(&m->gen, path) < 0) goto fail;
    /* No eos list in generation_config.json: fall back to config.json's eos_token_id. */
    if (m->gen.n_eos == 0 && m->cfg.eos_token_id >= 0) m->gen.eos_ids[m->gen.n_eos++] = m->cfg.eos_token_id;
    if (!(m->st = mq_st_open(dir))) goto fail;
    const mq_config *c = &m->cfg;
    if (check_extra_layers(m) < 0) goto fail;
    if (bind(m, "model.embed_tokens.weight", 2, c->vocab_size, c->hidden_size, &m->embed) < 0 ||
        bind(m, "model.norm.weight", 1, c->hidden_size, 0, &m->final_norm) < 0)
        goto fail;
    /* Tied: lm_head is the embedding (a stored lm_head.weight is ignored, as HF ties it over). */
    if (c->tie_embeddings) {
        m->lm_head = m->embed;
    } else if (!mq_st_find(m->st, "lm_head.weight")) {
        mq_err_set("%s: missing tensor lm_head.weight (config.json has tie_word_embeddings false)",
                   weights_label(dir));
        goto fail;
    } else if (bind(m, "lm_head.weight", 2, c->vocab_size, c->hidden_size, &m->lm_head) < 0) {
        goto fail;
    }
    if (!(m->layers = calloc((size_t)c->n_layers, sizeof *m->layers))) {
        mq_err_set("%s: out of memory", dir);
        goto fail;
    }
    for (int i = 0; i < c->n_layers; i++)
        if (bind_layer(m, i, &m->layers[i]) < 0) goto fail;
    return 0;
fail:
    mq_model_free(m);
    return -1;
}

void mq_model_free(mq_model *m) {
    if (!m) return;
    mq_st_close(m->st);
    free(m->layers);
    free(m->dir);
    memset(m, 0, sizeof *m);
}

float mq_model_at(mq_tref t, size_t i) {
    /* memcpy: safetensors data need not be aligned for the element type. */
    if (t.dt == MQ_F32) {
        float x;
        memcpy(&x, (const char *)t.p + 4 * i, 4);
        return x;
    }
    uint16_t h;
    memcpy(&h, (const char *)t.p + 2 * i, 2);
    if (t.dt == MQ_F16) return mq_half_f16_f32(h);
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

size_t mq_model_step_bytes(const mq_model *m) {
    const mq_config *c = &m->cfg;
    size_t h = (size_t)c->hidden_size, q = (size_t)c->n_heads * c->head_dim;
    size_t kv = (size_t)c->n_kv_heads * c->head_dim, f = (size_t)c->intermediate_size, hd = (size_t)c->head_dim;
    size_t b = 0;
    for (int i = 0; i < c->n_layers; i++) {
        const mq_layer_w *w = &m->layers[i];
        b += h * mq_dtype_size(w->in_norm.dt) + q * h * mq_dtype_size(w->q.dt) +
             kv * h * (mq_dtype_size(w->k.dt) + mq_dtype_size(w->v.dt)) +
             hd * (mq_dtype_size(w->q_norm.dt) + mq_dtype_size(w->k_norm.dt)) + h * q * mq_dtype_size(w->o.dt) +
             h * mq_dtype_size(w->post_norm.dt) + f * h * (mq_dtype_size(w->gate.dt) + mq_dtype_size(w->up.dt)) +
             h * f * mq_dtype_size(w->down.dt);
    }
    b += h * mq_dtype_size(m->final_norm.dt) + (size_t)c->vocab_size * h * mq_dtype_size(m->lm_head.dt);
    return b;
}
