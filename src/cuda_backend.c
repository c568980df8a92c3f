/* cuda_backend: the "cuda" backend — uploads the model as bf16 and drives the megakernel via gpu.h. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "err.h"

#ifndef MQ_HAVE_CUDA

int mq_cuda_available(void) { return 0; }
int mq_cuda_prefill_wgmma(void) { return 0; }

mq_backend *mq_cuda_new_kv(const mq_model *m, int max_ctx, const char *kv) {
    (void)m;
    (void)max_ctx;
    (void)kv;
    mq_err_set("megaqwen was built without CUDA");
    return NULL;
}

#else

#include "gpu.h"
#include "rope.h"
#include "half.h"
#include "sampler.h"

int mq_cuda_available(void) { return mq_gpu_available(); }
int mq_cuda_prefill_wgmma(void) { return mq_gpu_available() && mq_gpu_prefill_wgmma(); }

typedef struct {
    mq_backend base;
    const mq_model *m;
    mq_gpu *g;
    int vocab;
    float *last; /* (vocab) logits of the last position forward processed */
    int timing;  /* MQ_PREFILL_TIMING set: print the host scan's time after each prompt */
    int pinned;  /* last is page-locked: a 152K vocabulary's 608 KB copy without the driver's staging
                  * through its own pinned buffer (-0.1 ms TTFT at 8-32 tokens, run 102); calloc'd
                  * when the driver refuses */
    mq_sampler smp; /* host sampler for settings the device path does not take (lazy) */
    int has_smp;
} cuda_be;

/* n elements of t as bf16 into dst. Device weights are always bf16: f32/f16 checkpoints are
 * rounded at upload (documented in docs/perf-notes.md). */
static void to_bf16(mq_tref t, size_t n, uint16_t *dst) {
    if (t.dt == MQ_BF16) {
        memcpy(dst, t.p, n * 2);
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = mq_half_bf16(mq_model_at(t, i));
}

static void to_f32(mq_tref t, size_t n, float *dst) {
    for (size_t i = 0; i < n; i++) dst[i] = mq_model_at(t, i);
}

/* 1 if any of v[0..n) is NaN or +-inf (all exponent bits set), tested on the bit patterns in blocks
 * of 8 without an early exit, which gcc -O2 vectorizes: ~18 us for a 152K vocabulary where an
 * isfinite test per element took ~36 (measured on the 2-core development machine). */
static int any_nonfinite(const float *v, int n) {
    uint32_t any = 0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        uint32_t b[8], a = 0;
        memcpy(b, v + i, sizeof b);
        for (int j = 0; j < 8; j++) a |= (b[j] & 0x7f800000u) == 0x7f800000u;
        any |= a;
    }
    for (; i < n; i++) any |= !isfinite(v[i]);
    return any != 0;
}

static int cuda_forward(mq_backend *be, const int32_t *ids, int n, int pos, float *logits) {
    cuda_be *b = (cuda_be *)be;
    if (n < 1) return 0;
    int r = mq_gpu_run(b->g, ids, 0, pos, n, logits, b->last, NULL, 0, NULL);
    if (r < 0) return -1;
    /* A 16-bit cache saturates: f16 holds at most 65504, so a larger K or V value becomes inf and the
     * logits NaN. With the f32 cache a prompt's attention still rounds K and V to f16 in the prefill
     * (MQ_PREFILL_PV16, default 2). Checked on the rows that reach the host (prompts, teacher-forced
     * logits; with the f32 cache only after a prefill, n > 1, so that host-sampled decoding does not
     * scan the vocabulary once more per token), not inside device-side generation. */
    /* the device's check of the last row when it made one (a prompt through the GEMV head), else
     * the host scans the copied row (34 us for a 152K vocabulary on the device machine, run 109) */
    int bad = mq_gpu_last_nonfinite(b->g);
    if (bad < 0 && (b->base.kv_elt == 2 || n > 1)) {
        struct timespec t0 = {0, 0}, t1;
        if (b->timing) clock_gettime(CLOCK_MONOTONIC, &t0);
        bad = any_nonfinite(b->last, b->vocab);
        if (b->timing) { /* MQ_PREFILL_TIMING: beside prefill.cu's parts */
            clock_gettime(CLOCK_MONOTONIC, &t1);
            fprintf(stderr, "prefill timing: the host's scan of the last logits %.1f us (%s)\n",
                    (t1.tv_sec - t0.tv_sec) * 1e6 + (t1.tv_nsec - t0.tv_nsec) * 1e-3, bad ? "non-finite" : "finite");
        }
    }
    if (bad > 0) {
        if (b->base.kv_elt == 2)
            mq_err_set("cuda: non-finite logits at position %d: a K/V value may be past the 16-bit KV "
                       "cache's range (f16: 65504); --kv-type f32 avoids it", pos + n - 1);
        else
            mq_err_set("cuda: non-finite logits at position %d: the checkpoint holds NaN/inf, or a K/V value "
                       "is past f16's range (65504) in the prompt's attention (MQ_PREFILL_PV16=0 keeps it in "
                       "split bf16)", pos + n - 1);
        return -1;
    }
    return 0;
}

static const float *cuda_last_logits(mq_backend *be) { return ((cuda_be *)be)->last; }

static int cuda_generate_greedy(mq_backend *be, int32_t id, int pos, int n, const int32_t *stop, int n_stop,
                                int32_t *out) {
    cuda_be *b = (cuda_be *)be;
    if (n < 1) return 0;
    return mq_gpu_run(b->g, NULL, id, pos, n, NULL, NULL, stop, n_stop, out);
}

/* Settings only the host sampler applies, for the token chosen after n_hist tokens of history:
 * presence / frequency penalties, logit bias, and min_tokens' ban while it holds (it holds for a
 * prefix of the reply, so a launch whose first token is past it is past it for all its tokens). */
static int host_only(const mq_sampling *s, int n_hist) {
    return s->presence_penalty != 0.0f || s->frequency_penalty != 0.0f || s->n_bias > 0 ||
           (s->min_tokens > 0 && s->n_ban > 0 && n_hist - s->penalty_from < s->min_tokens);
}

/* Feed id at pos and sample the next token: on the device when the settings allow (one launch,
 * no logits copied), else forward + src/sampler.c on the host with the same RNG state. */
static int cuda_step_sample(mq_backend *be, int32_t id, int pos, const mq_sampling *s, uint64_t *rng,
                            const int32_t *hist, int n_hist) {
    cuda_be *b = (cuda_be *)be;
    mq_gpu_samp gs = {.temperature = s->temperature, .top_p = s->top_p, .min_p = s->min_p,
                      .rep_penalty = s->rep_penalty, .top_k = s->top_k, .rep_last_n = s->rep_last_n};
    if (!host_only(s, n_hist) && mq_gpu_sample_supported(b->g, &gs)) {
        int32_t t = -1;
        return mq_gpu_sample(b->g, id, pos, 1, &gs, rng, hist, n_hist, NULL, 0, &t) < 0 ? -1 : t;
    }
    if (cuda_forward(be, &id, 1, pos, NULL) != 0) return -1;
    if (!b->has_smp) {
        if (mq_sampler_init(&b->smp, b->vocab, s) != 0) return -1;
        b->has_smp = 1;
    }
    /* (the settings' logit bias points at the caller's sampler copy, alive while they are in use) */
    b->smp.p = *s;
    b->smp.rng = *rng;
    memcpy(b->smp.probs, b->last, (size_t)b->vocab * sizeof(float));
    int t = mq_sampler_sample(&b->smp, b->smp.probs, hist, n_hist);
    *rng = b->smp.rng;
    return t;
}

/* Many sampled steps in one launch (mq_gpu_sample); 0 when the settings need the host sampler. */
static int cuda_generate_sample(mq_backend *be, int32_t id, int pos, int n, const mq_sampling *s, uint64_t *rng,
                                const int32_t *hist, int n_hist, const int32_t *stop, int n_stop, int32_t *out) {
    cuda_be *b = (cuda_be *)be;
    mq_gpu_samp gs = {.temperature = s->temperature, .top_p = s->top_p, .min_p = s->min_p,
                      .rep_penalty = s->rep_penalty, .top_k = s->top_k, .rep_last_n = s->rep_last_n};
    if (n < 1 || host_only(s, n_hist) || !mq_gpu_sample_supported(b->g, &gs)) return 0;
    return mq_gpu_sample(b->g, id, pos, n, &gs, rng, hist, n_hist, stop, n_stop, out);
}

static void cuda_free(mq_backend *be) {
    cuda_be *b = (cuda_be *)be;
    if (!b) return;
    if (b->has_smp) mq_sampler_free(&b->smp);
    mq_gpu_free(b->g);
    if (b->pinned) mq_gpu_host_free(b->last);
    else free(b->last);
    free(b);
}

static int put_bf16(mq_gpu *g, mq_gpu_slot slot, int layer, const mq_tref *parts, const size_t *counts, int np,
                    uint16_t *buf) {
    size_t o = 0;
    for (int i = 0; i < np; i++) {
        to_bf16(parts[i], counts[i], buf + o);
        o += counts[i];
    }
    return mq_gpu_put(g, slot, layer, buf, o * 2);
}

static int put_f32(mq_gpu *g, mq_gpu_slot slot, int layer, mq_tref t, size_t n, float *buf) {
    to_f32(t, n, buf);
    return mq_gpu_put(g, slot, layer, buf, n * 4);
}

mq_backend *mq_cuda_new_kv(const mq_model *m, int max_ctx, const char *kv) {
    const mq_config *c = &m->cfg;
    mq_gpu_shape s = {.vocab = c->vocab_size,
                      .hidden = c->hidden_size,
                      .inter = c->intermediate_size,
                      .n_layers = c->n_layers,
                      .n_heads = c->n_heads,
                      .n_kv = c->n_kv_heads,
                      .head_dim = c->head_dim,
                      .eps = c->rms_eps,
                      .tied = m->lm_head.p == m->embed.p};
    cuda_be *b = calloc(1, sizeof *b);
    if (!b) {
        mq_err_set("cuda: out of host memory");
        return NULL;
    }
    b->m = m;
    b->vocab = c->vocab_size;
    b->last = mq_gpu_host_floats((size_t)c->vocab_size);
    b->pinned = b->last != NULL;
    const char *tm = getenv("MQ_PREFILL_TIMING");
    b->timing = tm && atoi(tm) > 0;
    if (!b->last) b->last = calloc((size_t)c->vocab_size, sizeof(float));
    const size_t H = c->hidden_size, hd = c->head_dim, Q = (size_t)c->n_heads * hd, KV = (size_t)c->n_kv_heads * hd;
    const size_t I = c->intermediate_size, V = c->vocab_size;
    size_t big = V * H;
    if ((Q + 2 * KV) * H > big) big = (Q + 2 * KV) * H;
    if (2 * I * H > big) big = 2 * I * H;
    uint16_t *buf = malloc(big * 2);
    float *fbuf = malloc((H > hd ? H : hd) * sizeof(float));
    if (!b->last || !buf || !fbuf) {
        mq_err_set("cuda: out of host memory");
        goto fail;
    }
    if (!(b->g = mq_gpu_new(&s, max_ctx, kv))) goto fail;
    for (int l = 0; l < c->n_layers; l++) {
        const mq_layer_w *L = &m->layers[l];
        mq_tref qkv[3] = {L->q, L->k, L->v};
        size_t nqkv[3] = {Q * H, KV * H, KV * H};
        mq_tref gu[2] = {L->gate, L->up};
        size_t ngu[2] = {I * H, I * H};
        size_t no = H * Q, nd = H * I;
        if (put_bf16(b->g, MQ_GPU_QKV, l, qkv, nqkv, 3, buf) || put_bf16(b->g, MQ_GPU_O, l, &L->o, &no, 1, buf) ||
            put_bf16(b->g, MQ_GPU_GATEUP, l, gu, ngu, 2, buf) ||
            put_bf16(b->g, MQ_GPU_DOWN, l, &L->down, &nd, 1, buf) ||
            put_f32(b->g, MQ_GPU_IN_NORM, l, L->in_norm, H, fbuf) ||
            put_f32(b->g, MQ_GPU_POST_NORM, l, L->post_norm, H, fbuf) ||
            put_f32(b->g, MQ_GPU_Q_NORM, l, L->q_norm, hd, fbuf) || put_f32(b->g, MQ_GPU_K_NORM, l, L->k_norm, hd, fbuf))
            goto fail;
    }
    size_t ne = V * H;
    if (put_bf16(b->g, MQ_GPU_EMBED, 0, &m->embed, &ne, 1, buf)) goto fail;
    if (!s.tied && put_bf16(b->g, MQ_GPU_LM_HEAD, 0, &m->lm_head, &ne, 1, buf)) goto fail;
    if (put_f32(b->g, MQ_GPU_FINAL_NORM, 0, m->final_norm, H, fbuf)) goto fail;
    /* RoPE: the CPU reference's own table (src/rope.c), so both rotate by the same floats */
    const size_t nrope = (size_t)max_ctx * hd;
    float *rtab = malloc(nrope * sizeof(float));
    if (!rtab) { mq_err_set("cuda: out of host memory"); goto fail; }
    mq_rope_table(&c->rope, (int)hd, max_ctx, rtab);
    int rr = mq_gpu_put(b->g, MQ_GPU_ROPE, 0, rtab, nrope * sizeof(float));
    free(rtab);
    if (rr) goto fail;
    free(buf);
    free(fbuf);
    b->base.name = "cuda";
    b->base.max_ctx = max_ctx;
    b->base.kv_elt = mq_gpu_kv_elt(b->g);
    b->base.forward = cuda_forward;
    b->base.last_logits = cuda_last_logits;
    b->base.generate_greedy = cuda_generate_greedy;
    b->base.step_sample = cuda_step_sample;
    b->base.generate_sample = cuda_generate_sample;
    b->base.free = cuda_free;
    return &b->base;
fail:
    free(buf);
    free(fbuf);
    cuda_free(&b->base);
    return NULL;
}

/* The device description for logs (bench prints it); "" without a device. */
const char *mq_cuda_describe(const mq_backend *be);
const char *mq_cuda_describe(const mq_backend *be) {
    return be && !strcmp(be->name, "cuda") ? mq_gpu_describe(((const cuda_be *)be)->g) : "";
}

#endif

mq_backend *mq_cuda_new(const mq_model *m, int max_ctx) { return mq_cuda_new_kv(m, max_ctx, NULL); }
