/* rope: RoPE inverse frequencies and cos / sin tables, computed in float32 the way HF transformers does. */
#include "rope.h"
#include <math.h>
#include <stdio.h>

/* YaRN's dimension (in [0, dim)) at which a frequency turns `rot` times over `len` positions. */
static double yarn_dim(double rot, int dim, double base, int len) {
    return (dim * log(len / (rot * 2 * M_PI))) / (2 * log(base));
}

void mq_rope_inv_freq(const mq_rope *r, int head_dim, float *inv) {
    const int half = head_dim / 2;
    const float base = (float)r->theta;
    if (r->type != MQ_ROPE_YARN) {
        /* default / dynamic (equal below max_position_embeddings) / linear (then / factor) */
        for (int i = 0; i < half; i++) {
            inv[i] = 1.0f / powf(base, (float)(2 * i) / (float)head_dim);
            if (r->type == MQ_ROPE_LINEAR) inv[i] /= (float)r->factor;
        }
        return;
    }
    /* YaRN: high frequencies (more than beta_fast turns over the original length) keep their
     * value, low ones (fewer than beta_slow) are divided by factor, a linear ramp blends between.
     * The bounds are computed in double like Python's math module; the ramp in float32 like torch. */
    double lo = yarn_dim(r->beta_fast, head_dim, r->theta, r->orig_max);
    double hi = yarn_dim(r->beta_slow, head_dim, r->theta, r->orig_max);
    if (r->truncate) {
        lo = floor(lo);
        hi = ceil(hi);
    }
    if (lo < 0) lo = 0;
    if (hi > head_dim - 1) hi = head_dim - 1;
    if (lo == hi) hi += 0.001; /* HF: prevent a division by zero */
    const float flo = (float)lo, span = (float)(hi - lo), f = (float)r->factor;
    for (int i = 0; i < half; i++) {
        const float pf = powf(base, (float)(2 * i) / (float)head_dim);
        const float extra = 1.0f / pf, inter = 1.0f / (f * pf);
        float ramp = ((float)i - flo) / span;
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
        const float keep = 1.0f - ramp; /* inv_freq_extrapolation_factor */
        const float a = inter * (1.0f - keep), b = extra * keep;
        inv[i] = a + b;
    }
}

void mq_rope_table(const mq_rope *r, int head_dim, int n_pos, float *tab) {
    const int half = head_dim / 2;
    float inv[512]; /* head_dim <= 1024 (config.c) */
    mq_rope_inv_freq(r, head_dim, inv);
    const float s = (float)r->attn_factor;
    for (int p = 0; p < n_pos; p++)
        for (int i = 0; i < half; i++) {
            const float ang = (float)p * inv[i];
            float *t = tab + ((size_t)p * half + i) * 2;
            t[0] = (float)cos((double)ang) * s;
            t[1] = (float)sin((double)ang) * s;
        }
}

void mq_rope_describe(const mq_rope *r, char *buf, size_t n) {
    switch (r->type) {
    case MQ_ROPE_DEFAULT: snprintf(buf, n, "rope theta %g", r->theta); break;
    case MQ_ROPE_DYNAMIC: snprintf(buf, n, "rope theta %g, dynamic factor %g (plain up to the model's length)", r->theta, r->factor); break;
    case MQ_ROPE_LINEAR: snprintf(buf, n, "rope theta %g, linear factor %g", r->theta, r->factor); break;
    case MQ_ROPE_YARN:
        snprintf(buf, n, "rope theta %g, yarn factor %g (original %d, beta %g/%g%s), attention x%.6g", r->theta,
                 r->factor, r->orig_max, r->beta_fast, r->beta_slow, r->truncate ? "" : ", untruncated",
                 r->attn_factor);
        break;
    }
}
