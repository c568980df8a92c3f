/* megaqwen: the public API — ties model, tokenizer, backend and sampler into one context. */
#include "megaqwen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "chat.h"
#include "err.h"
#include "model.h"
#include "rope.h"
#include "sampler.h"
#include "tokenizer.h"

struct mq_ctx {
    mq_model m;
    mq_tok *tok;           /* NULL when opened without a tokenizer */
    mq_backend *be;
    mq_info info;
    int pos;               /* positions held in the KV cache */
    int has_logits;        /* backend's last_logits belongs to position pos-1 */
    int32_t *hist;         /* (max_ctx) token at each cached position */
    mq_sampling samp;
    mq_sampler sampler;
    mq_tok_stream stream;
};

void mq_params_default(mq_params *p) {
    memset(p, 0, sizeof *p);
    p->backend = "auto";
    p->load_tokenizer = 1;
}

void mq_sampling_default(mq_sampling *s) {
    memset(s, 0, sizeof *s);
    s->temperature = 0.0f;
    s->top_p = 1.0f;
    s->rep_penalty = 1.0f;
    s->seed = 42;
}

const char *mq_last_error(void) { return mq_err_get(); }

mq_ctx *mq_open(const char *dir, const mq_params *pin) {
    mq_params p;
    if (pin) p = *pin; else mq_params_default(&p);
    const char *want = p.backend ? p.backend : "auto";
    if (strcmp(want, "auto") && strcmp(want, "cpu") && strcmp(want, "cuda")) {
        mq_err_set("unknown backend '%s' (want auto, cpu or cuda)", want);
        return NULL;
    }
    mq_ctx *c = calloc(1, sizeof *c);
    if (!c) { mq_err_set("out of memory"); return NULL; }
    if (mq_model_load(&c->m, dir) != 0) { free(c); return NULL; }
    const mq_config *cfg = &c->m.cfg;
    int max_ctx = p.max_ctx > 0 ? p.max_ctx : (cfg->ctx_limit < 4096 ? cfg->ctx_limit : 4096);
    if (max_ctx > cfg->ctx_limit) {
        if (cfg->ctx_limit > cfg->max_pos)
            mq_err_set("--max-ctx %d exceeds the model's context %d (%s scaling of %d)", max_ctx, cfg->ctx_limit,
                       cfg->rope.type == MQ_ROPE_YARN ? "YaRN" : "linear", cfg->max_pos);
        else
            mq_err_set("--max-ctx %d exceeds the model's max_position_embeddings %d", max_ctx, cfg->max_pos);
        goto fail;
    }
    if (p.kv_type && strcmp(p.kv_type, "f32") && strcmp(p.kv_type, "bf16") && strcmp(p.kv_type, "f16")) {
        mq_err_set("unknown KV cache type '%s' (want f32, bf16 or f16)", p.kv_type);
        goto fail;
    }
    if (p.load_tokenizer && !(c->tok = mq_tok_load(dir))) goto fail;
    if (!strcmp(want, "cuda") || (!strcmp(want, "auto") && mq_cuda_available())) {
        c->be = mq_cuda_new_kv(&c->m, max_ctx, p.kv_type);
    } else {
        c->be = mq_cpu_new_kv(&c->m, max_ctx, p.n_threads, p.kv_type);
    }
    if (!c->be) goto fail;
    if (!(c->hist = malloc((size_t)max_ctx * sizeof *c->hist))) { mq_err_set("out of memory"); goto fail; }

    mq_info *in = &c->info;
    in->vocab_size = cfg->vocab_size;
    in->hidden_size = cfg->hidden_size;
    in->intermediate_size = cfg->intermediate_size;
    in->n_layers = cfg->n_layers;
    in->n_heads = cfg->n_heads;
    in->n_kv_heads = cfg->n_kv_heads;
    in->head_dim = cfg->head_dim;
    in->max_pos = cfg->ctx_limit;
    in->max_ctx = c->be->max_ctx;
    in->backend = c->be->name;
    in->weight_bytes = mq_model_step_bytes(&c->m);
    in->kv_elt_bytes = c->be->kv_elt > 0 ? c->be->kv_elt : 4;
    mq_rope_describe(&cfg->rope, in->rope, sizeof in->rope);
    for (int i = 0; i < c->m.gen.n_eos && i < 8; i++) in->eos_ids[in->n_eos++] = c->m.gen.eos_ids[i];
    if (!in->n_eos && cfg->eos_token_id >= 0) in->eos_ids[in->n_eos++] = cfg->eos_token_id;

    mq_sampling s;
    mq_sampling_default(&s);
    if (mq_sampler_init(&c->sampler, cfg->vocab_size, &s) != 0) goto fail;
    c->samp = s;
    return c;
fail:
    mq_close(c);
    return NULL;
}

void mq_close(mq_ctx *c) {
    if (!c) return;
    if (c->be) c->be->free(c->be);
    if (c->tok) mq_tok_free(c->tok);
    mq_sampler_free(&c->sampler);
    free(c->hist);
    mq_model_free(&c->m);
    free(c);
}

const mq_info *mq_get_info(const mq_ctx *c) { return &c->info; }

static int need_tok(mq_ctx *c) {
    if (c->tok) return 0;
    mq_err_set("%s: opened without a tokenizer (tokenizer.json needed for text)", c->m.dir);
    return -1;
}

int mq_tokenize(mq_ctx *c, const char *text, size_t len, int32_t **ids, size_t *n) {
    if (need_tok(c)) return -1;
    return mq_tok_encode(c->tok, text, len, ids, n);
}

char *mq_detokenize(mq_ctx *c, const int32_t *ids, size_t n) {
    char *out;
    size_t len;
    if (need_tok(c) || mq_tok_decode(c->tok, ids, n, &out, &len)) return NULL;
    return out;
}

int mq_detok_stream(mq_ctx *c, int32_t id, char *out, size_t cap) {
    if (need_tok(c)) return -1;
    if (id < 0) return mq_tok_stream_flush(&c->stream, out, cap);
    /* Ids past the tokenizer's vocabulary but inside the model's (Qwen3: 151,669 tokens, 151,936
     * embedding rows of which the rest is padding) have no text; a model can still pick one (a
     * random synthetic checkpoint does), so, as HF tokenizers' decode does, they add nothing. */
    size_t l;
    if (id < c->info.vocab_size && !mq_tok_bytes(c->tok, id, &l)) return 0;
    return mq_tok_stream_put(c->tok, &c->stream, id, out, cap);
}

void mq_detok_stream_reset(mq_ctx *c) { memset(&c->stream, 0, sizeof c->stream); }

char *mq_chat_prompt(mq_ctx *c, const mq_chat_msg *msgs, int n, int add_generation_prompt,
                     int enable_thinking) {
    (void)c;
    return mq_chat_format(msgs, n, add_generation_prompt, enable_thinking);
}

char *mq_chat_prompt_tools(mq_ctx *c, const mq_chat_msg *msgs, int n, const char *tools,
                           int add_generation_prompt, int enable_thinking) {
    (void)c;
    return mq_chat_format_tools(msgs, n, tools, add_generation_prompt, enable_thinking);
}

int32_t mq_token_id(mq_ctx *c, const char *special) {
    return c->tok ? mq_tok_special(c->tok, special) : -1;
}

const char *mq_token_bytes(mq_ctx *c, int32_t id, size_t *len) {
    *len = 0;
    if (!c->tok || id < 0) return NULL;
    const char *b = mq_tok_bytes(c->tok, id, len);
    if (!b) *len = 0;
    return b;
}

int mq_token_is_special(mq_ctx *c, int32_t id) { return c->tok ? mq_tok_is_special(c->tok, id) : 0; }

int mq_feed(mq_ctx *c, const int32_t *ids, int n, float *all_logits) {
    if (n <= 0) { mq_err_set("mq_feed: no tokens"); return -1; }
    if (n > c->info.max_ctx - c->pos) {
        mq_err_set("context full: %d tokens at position %d exceed max context %d", n, c->pos,
                   c->info.max_ctx);
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->info.vocab_size) {
            mq_err_set("token id %d out of range [0, %d)", ids[i], c->info.vocab_size);
            return -1;
        }
    c->has_logits = 0;
    if (c->be->forward(c->be, ids, n, c->pos, all_logits) != 0) return -1;
    memcpy(c->hist + c->pos, ids, (size_t)n * sizeof *ids);
    c->pos += n;
    c->has_logits = 1;
    return 0;
}

const float *mq_logits(mq_ctx *c) { return c->has_logits ? c->be->last_logits(c->be) : NULL; }

int mq_pos(const mq_ctx *c) { return c->pos; }

int mq_rewind(mq_ctx *c, int pos) {
    if (pos < 0 || pos > c->pos) {
        mq_err_set("rewind to %d outside [0, %d]", pos, c->pos);
        return -1;
    }
    if (pos != c->pos) c->has_logits = 0;
    c->pos = pos;
    return 0;
}

void mq_reset(mq_ctx *c) {
    c->pos = 0;
    c->has_logits = 0;
    mq_detok_stream_reset(c);
}

void mq_sampling_from_model(mq_ctx *c, mq_sampling *s) {
    const mq_gencfg *g = &c->m.gen;
    if (g->has_temperature) s->temperature = g->temperature;
    if (g->has_top_k) s->top_k = g->top_k;
    if (g->has_top_p) s->top_p = g->top_p;
    if (g->has_min_p) s->min_p = g->min_p;
    if (g->has_rep_penalty) s->rep_penalty = g->rep_penalty;
    if (g->has_do_sample && !g->do_sample) s->temperature = 0.0f;
}

int mq_set_sampling(mq_ctx *c, const mq_sampling *s) {
    if (!(s->temperature >= 0) || s->top_k < 0 || !(s->top_p > 0 && s->top_p <= 1) ||
        !(s->min_p >= 0 && s->min_p <= 1) || !(s->rep_penalty > 0) || s->rep_last_n < 0 ||
        !(s->presence_penalty >= -2 && s->presence_penalty <= 2) ||
        !(s->frequency_penalty >= -2 && s->frequency_penalty <= 2) || s->penalty_from < 0) {
        mq_err_set("invalid sampling settings (temperature >= 0, top_k >= 0, 0 < top_p <= 1, "
                   "0 <= min_p <= 1, repetition penalty > 0, presence / frequency in [-2, 2])");
        return -1;
    }
    /* a new sampler first: on failure the context keeps its working settings */
    mq_sampler t;
    if (mq_sampler_init(&t, c->info.vocab_size, s) != 0) return -1;
    mq_sampler_free(&c->sampler);
    c->sampler = t;
    c->samp = c->sampler.p; /* (its logit bias points at the sampler's own heap copy) */
    return 0;
}

/* min_tokens' ban applies to the token chosen after n_hist tokens of history */
static int ban_on(const mq_ctx *c, int n_hist) {
    return c->samp.min_tokens > 0 && c->samp.n_ban > 0 && n_hist - c->samp.penalty_from < c->samp.min_tokens;
}

/* Plain argmax for the token chosen after n_hist tokens (the device's greedy loop may choose it). */
static int greedy(const mq_ctx *c, int n_hist) {
    return c->samp.temperature == 0.0f && c->samp.rep_penalty == 1.0f && c->samp.presence_penalty == 0.0f &&
           c->samp.frequency_penalty == 0.0f && c->samp.n_bias == 0 && !ban_on(c, n_hist);
}

int32_t mq_sample(mq_ctx *c) {
    const float *l = mq_logits(c);
    if (!l) { mq_err_set("mq_sample: no logits (feed a token first)"); return -1; }
    if (greedy(c, c->pos)) return mq_sampler_argmax(l, c->info.vocab_size);
    /* The sampler edits logits in place (penalties); work on a copy in its scratch. */
    float *tmp = c->sampler.probs;
    memcpy(tmp, l, (size_t)c->info.vocab_size * sizeof *tmp);
    return mq_sampler_sample(&c->sampler, tmp, c->hist, c->pos);
}

int32_t mq_step(mq_ctx *c, int32_t id) {
    if (!greedy(c, c->pos + 1) && c->be->step_sample) {
        if (c->pos >= c->info.max_ctx) {
            mq_err_set("context full: position %d reaches max context %d", c->pos, c->info.max_ctx);
            return -1;
        }
        if (id < 0 || id >= c->info.vocab_size) { mq_err_set("token id %d out of range", id); return -1; }
        c->hist[c->pos] = id;
        int r = c->be->step_sample(c->be, id, c->pos, &c->samp, &c->sampler.rng, c->hist, c->pos + 1);
        c->has_logits = 0;
        if (r < 0) return -1;
        c->pos++;
        return r;
    }
    if (mq_feed(c, &id, 1, NULL) != 0) return -1;
    return mq_sample(c);
}

int mq_is_eos(const mq_ctx *c, int32_t id) {
    for (int i = 0; i < c->info.n_eos; i++)
        if (c->info.eos_ids[i] == id) return 1;
    return 0;
}

int mq_generate(mq_ctx *c, int32_t first, int n, int32_t *out, mq_token_cb cb, void *user) {
    int k = 0;
    int32_t id = first;
    /* Device-side loops (greedy, or sampling the device supports) in chunks: a small first chunk
     * so streaming starts at once. */
    const int g = greedy(c, c->pos + 1);
    int dev = g ? c->be->generate_greedy != NULL : c->be->generate_sample != NULL;
    const int banned = ban_on(c, c->pos + 1); /* min_tokens: the device loops may take over after it */
    if (dev) {
        int chunk = 4;
        while (k < n) {
            int want = n - k < chunk ? n - k : chunk;
            if (want > c->info.max_ctx - c->pos) want = c->info.max_ctx - c->pos;
            if (want <= 0) {
                mq_err_set("context full: position %d reaches max context %d", c->pos, c->info.max_ctx);
                return -1;
            }
            if (id < 0 || id >= c->info.vocab_size) { mq_err_set("token id %d out of range", id); return -1; }
            int got;
            if (g) {
                got = c->be->generate_greedy(c->be, id, c->pos, want, c->info.eos_ids, c->info.n_eos, out + k);
            } else {
                c->hist[c->pos] = id; /* the penalty window includes the fed id, as mq_step's */
                got = c->be->generate_sample(c->be, id, c->pos, want, &c->samp, &c->sampler.rng, c->hist,
                                             c->pos + 1, c->info.eos_ids, c->info.n_eos, out + k);
                if (got == 0) { /* settings the device cannot sample: step through mq_step */
                    dev = 0;
                    break;
                }
            }
            c->has_logits = 0;
            if (got < 0) return -1;
            /* fed: id, then out[k..k+got-2]; out[k+got-1] is chosen, not yet fed. */
            c->hist[c->pos] = id;
            for (int i = 0; i + 1 < got; i++) c->hist[c->pos + 1 + i] = out[k + i];
            c->pos += got;
            for (int i = 0; i < got; i++) {
                int32_t t = out[k + i];
                if (cb && cb(t, user)) return k + i + 1;
                if (mq_is_eos(c, t)) return k + i + 1;
            }
            k += got;
            id = out[k - 1];
            if (chunk < 64) chunk *= 2;
        }
        if (dev) return k;
    }
    while (k < n) {
        if (banned && !ban_on(c, c->pos + 1) && (c->be->generate_greedy || c->be->generate_sample))
            return k + mq_generate(c, id, n - k, out + k, cb, user); /* (at most once: the ban is over) */
        int32_t t = mq_step(c, id);
        if (t < 0) return -1;
        out[k++] = t;
        if (cb && cb(t, user)) break;
        if (mq_is_eos(c, t)) break;
        id = t;
    }
    return k;
}

void mq_logprobs_row(const float *l, int vocab, int32_t id, int n_top, mq_logprob *out) {
    if (n_top < 0) n_top = 0;
    if (n_top > MQ_TOP_LOGPROBS_MAX) n_top = MQ_TOP_LOGPROBS_MAX;
    float mx = -INFINITY;
    for (int i = 0; i < vocab; i++) mx = l[i] > mx ? l[i] : mx;
    double s = 0;
    for (int i = 0; i < vocab; i++) s += exp((double)l[i] - mx);
    const double lse = mx + log(s);
    out->logprob = id >= 0 && id < vocab ? (float)(l[id] - lse) : -INFINITY;
    /* top n_top by insertion into a short sorted list (n_top <= 20, one pass over the vocabulary) */
    int k = 0;
    for (int i = 0; i < vocab && n_top; i++) {
        if (k == n_top && !(l[i] > l[out->top_ids[k - 1]])) continue;
        int j = k < n_top ? k++ : k - 1;
        while (j > 0 && l[i] > l[out->top_ids[j - 1]]) {
            out->top_ids[j] = out->top_ids[j - 1];
            j--;
        }
        out->top_ids[j] = i;
    }
    out->n_top = k;
    for (int j = 0; j < k; j++) out->top_lp[j] = (float)(l[out->top_ids[j]] - lse);
}

int mq_generate_lp(mq_ctx *c, int32_t first, int n, int n_top, int32_t *out, mq_token_lp_cb cb, void *user) {
    int32_t id = first;
    mq_logprob lp;
    for (int k = 0; k < n;) {
        if (mq_feed(c, &id, 1, NULL) != 0) return -1;
        const float *l = mq_logits(c);
        const int32_t t = mq_sample(c);
        if (t < 0) return -1;
        mq_logprobs_row(l, c->info.vocab_size, t, n_top, &lp);
        out[k++] = t;
        if (cb && cb(t, &lp, user)) return k;
        if (mq_is_eos(c, t)) return k;
        id = t;
    }
    return n;
}

/* HF's documented sliding-window perplexity: windows of `ctx` tokens advancing by `stride`; each
 * window scores only the tokens not scored by the previous one (its last trg_len tokens), the
 * first window scores all but its first token. Logits come in chunks to bound memory. */
int mq_perplexity(mq_ctx *c, const int32_t *ids, size_t n, int ctx, int stride, double *ppl,
                  double *stderr_ppl, size_t *n_scored) {
    if (ctx <= 1 || stride <= 0 || stride > ctx) {
        mq_err_set("perplexity: need ctx > 1 and 0 < stride <= ctx (got ctx %d, stride %d)", ctx, stride);
        return -1;
    }
    if (ctx > c->info.max_ctx) {
        mq_err_set("perplexity: window %d exceeds max context %d", ctx, c->info.max_ctx);
        return -1;
    }
    if (n < 2) { mq_err_set("perplexity: need at least 2 tokens, got %zu", n); return -1; }
    const int V = c->info.vocab_size, CH = 64;
    float *lg = malloc((size_t)CH * V * sizeof *lg);
    if (!lg) { mq_err_set("out of memory"); return -1; }
    double sum = 0, sum2 = 0;
    size_t cnt = 0, prev_end = 0;
    for (size_t begin = 0; begin < n; begin += (size_t)stride) {
        size_t end = begin + (size_t)ctx < n ? begin + (size_t)ctx : n;
        size_t trg_len = end - prev_end;
        size_t first_scored = end - trg_len; /* positions j >= this are targets */
        mq_reset(c);
        for (size_t s = begin; s < end; s += CH) {
            int m = (int)(end - s < (size_t)CH ? end - s : (size_t)CH);
            if (mq_feed(c, ids + s, m, lg) != 0) { free(lg); return -1; }
            for (int r = 0; r < m; r++) {
                size_t j = s + (size_t)r + 1; /* row r predicts token j */
                if (j >= end || j < first_scored || j <= begin) continue;
                const float *row = lg + (size_t)r * V;
                float mx = row[0];
                for (int v = 1; v < V; v++) if (row[v] > mx) mx = row[v];
                double z = 0;
                for (int v = 0; v < V; v++) z += exp((double)row[v] - mx);
                double nll = log(z) + mx - row[ids[j]];
                sum += nll;
                sum2 += nll * nll;
                cnt++;
            }
        }
        prev_end = end;
        if (end == n) break;
    }
    free(lg);
    mq_reset(c);
    double mean = sum / (double)cnt;
    double var = cnt > 1 ? (sum2 - sum * mean) / (double)(cnt - 1) : 0;
    if (var < 0) var = 0;
    *ppl = exp(mean);
    *stderr_ppl = *ppl * sqrt(var / (double)cnt);
    *n_scored = cnt;
    return 0;
}
