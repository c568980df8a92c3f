/* sampler: greedy, temperature, top-k, top-p, min-p, repetition / presence / frequency penalties with a seeded RNG. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* Order of operations, as HF transformers' generate() applies its logits processors
 * (GenerationMixin._get_logits_processor: the repetition penalty is a processor that runs before
 * the sampling warpers, which come in the order temperature, top-k, top-p, min-p):
 *   0. logit bias (OpenAI's): bias_vals[i] added to logit bias_ids[i] (before the penalties, as vLLM);
 *      then min_tokens (vLLM's): ban_ids get -inf while fewer than min_tokens tokens follow penalty_from;
 *   1. repetition penalty over the distinct ids among the last rep_last_n of hist (0 = all):
 *      logit > 0 -> logit / penalty, else logit * penalty; then OpenAI's presence and frequency
 *      penalties over the generated part of hist (from penalty_from), as vLLM applies them:
 *      logit -= frequency * count + presence * (count > 0);
 *   2. temperature == 0: greedy — argmax of the penalized logits (lowest index wins ties);
 *   3. probabilities p_i = exp((l_i - max) / T) (unnormalized; dividing the difference by T never
 *      overflows, so tiny temperatures degrade to greedy instead of to NaN);
 *   4. top-k: keep every token whose logit is >= the k-th largest (HF keeps ties with the k-th);
 *   5. top-p: sort the survivors by probability (descending, lower id first on ties) and keep each
 *      token whose preceding mass is < top_p * (mass of the survivors) — the smallest prefix
 *      reaching top_p, always at least the top token;
 *   6. min-p: keep tokens with p_i >= min_p * p_max (p_max, the top token, always survives);
 *   7. draw r uniform in [0, mass) from xorshift64* and walk the survivors.
 * NaN logits: mq_sampler_sample fails with an error (-1) rather than guess; mq_sampler_argmax
 * ignores NaNs (returns 0 if every entry is NaN). A +inf logit is chosen outright (the first one).
 * Every logit -inf: error. `logits` may alias s->probs (the API samples from a copy held there). */

/* splitmix64: spreads any seed (0 too) into a non-zero xorshift state. */
static uint64_t seed_state(uint64_t seed) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z ? z : 0x2545F4914F6CDD1Dull;
}

float mq_sampler_rand(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    uint64_t r = x * 0x2545F4914F6CDD1Dull;
    return (float)(r >> 40) * (1.0f / 16777216.0f); /* 24 bits: exactly representable, < 1 */
}

int mq_sampler_init(mq_sampler *s, int vocab, const mq_sampling *p) {
    memset(s, 0, sizeof *s);
    if (vocab <= 0) {
        mq_err_set("sampler: vocabulary size %d is not positive", vocab);
        return -1;
    }
    /* written so that NaN fails every test */
    if (!(p->temperature >= 0.0f) || p->top_k < 0 || !(p->top_p > 0.0f && p->top_p <= 1.0f) ||
        !(p->min_p >= 0.0f && p->min_p <= 1.0f) || !(p->rep_penalty > 0.0f) || p->rep_last_n < 0 ||
        isinf(p->temperature) || isinf(p->rep_penalty) || !(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f) ||
        !(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f) || p->penalty_from < 0) {
        mq_err_set("sampler: invalid settings (temperature %g, top_k %d, top_p %g, min_p %g, "
                   "repetition penalty %g, last_n %d, presence %g, frequency %g)",
                   (double)p->temperature, p->top_k, (double)p->top_p, (double)p->min_p,
                   (double)p->rep_penalty, p->rep_last_n, (double)p->presence_penalty, (double)p->frequency_penalty);
        return -1;
    }
    if (p->n_bias < 0 || (p->n_bias > 0 && (!p->bias_ids || !p->bias_vals))) {
        mq_err_set("sampler: logit bias of %d entries without its arrays", p->n_bias);
        return -1;
    }
    s->p = *p;
    s->vocab = vocab;
    s->rng = seed_state(p->seed);
    s->probs = malloc((size_t)vocab * sizeof *s->probs);
    s->idx = malloc((size_t)vocab * sizeof *s->idx);
    s->cnt = malloc((size_t)vocab * sizeof *s->cnt);
    if (!s->probs || !s->idx || !s->cnt) {
        mq_sampler_free(s);
        mq_err_set("sampler: out of memory for vocabulary %d", vocab);
        return -1;
    }
    for (int i = 0; i < p->n_bias; i++)
        if (p->bias_ids[i] < 0 || p->bias_ids[i] >= vocab || !(p->bias_vals[i] >= -100.0f && p->bias_vals[i] <= 100.0f)) {
            mq_sampler_free(s);
            mq_err_set("sampler: logit bias %d: id %d must be in [0, %d) and its bias in [-100, 100]", i,
                       p->bias_ids[i], vocab);
            return -1;
        }
    if (p->min_tokens < 0 || p->n_ban < 0 || (p->n_ban > 0 && !p->ban_ids)) {
        mq_sampler_free(s);
        mq_err_set("sampler: min_tokens %d / ban list of %d entries invalid", p->min_tokens, p->n_ban);
        return -1;
    }
    for (int i = 0; i < p->n_ban; i++)
        if (p->ban_ids[i] < 0 || p->ban_ids[i] >= vocab) {
            mq_sampler_free(s);
            mq_err_set("sampler: banned id %d out of range [0, %d)", p->ban_ids[i], vocab);
            return -1;
        }
    if (p->n_bias > 0) { /* an own copy: the caller's arrays may go away */
        s->bias_ids = malloc((size_t)p->n_bias * sizeof *s->bias_ids);
        s->bias_vals = malloc((size_t)p->n_bias * sizeof *s->bias_vals);
        if (!s->bias_ids || !s->bias_vals) {
            mq_sampler_free(s);
            mq_err_set("sampler: out of memory");
            return -1;
        }
        memcpy(s->bias_ids, p->bias_ids, (size_t)p->n_bias * sizeof *s->bias_ids);
        memcpy(s->bias_vals, p->bias_vals, (size_t)p->n_bias * sizeof *s->bias_vals);
    }
    s->p.bias_ids = s->bias_ids;
    s->p.bias_vals = s->bias_vals;
    if (p->n_ban > 0) {
        s->ban_ids = malloc((size_t)p->n_ban * sizeof *s->ban_ids);
        if (!s->ban_ids) {
            mq_sampler_free(s);
            mq_err_set("sampler: out of memory");
            return -1;
        }
        memcpy(s->ban_ids, p->ban_ids, (size_t)p->n_ban * sizeof *s->ban_ids);
    }
    s->p.ban_ids = s->ban_ids;
    return 0;
}

void mq_sampler_free(mq_sampler *s) {
    free(s->probs);
    free(s->idx);
    free(s->cnt);
    free(s->bias_ids);
    free(s->bias_vals);
    free(s->ban_ids);
    s->ban_ids = NULL;
    s->p.ban_ids = NULL;
    s->p.n_ban = 0;
    s->probs = NULL;
    s->idx = NULL;
    s->cnt = NULL;
    s->bias_ids = NULL;
    s->bias_vals = NULL;
    s->p.n_bias = 0;
}

int mq_sampler_argmax(const float *logits, int n) {
    int best = 0;
    for (int i = 0; i < n; i++)
        if (logits[i] > logits[best] || (isnan(logits[best]) && !isnan(logits[i]))) best = i;
    return best;
}

/* "a ranks before b": higher probability first, lower id first on ties (a total order, so the
 * result does not depend on the sort algorithm). */
static int before(const float *p, int32_t a, int32_t b) {
    return p[a] > p[b] || (p[a] == p[b] && a < b);
}

/* Heap sift-down on idx[0..n) where the root is the element ranked last ("after"). */
static void sift(int32_t *idx, int r, int n, const float *p) {
    for (;;) {
        int c = 2 * r + 1;
        if (c >= n) return;
        if (c + 1 < n && before(p, idx[c], idx[c + 1])) c++;
        if (!before(p, idx[r], idx[c])) return;
        int32_t t = idx[r]; idx[r] = idx[c]; idx[c] = t;
        r = c;
    }
}

/* Heapsort idx[0..n) into rank order by `before` (in place, no allocation). */
static void sort_desc(int32_t *idx, int n, const float *p) {
    for (int r = n / 2 - 1; r >= 0; r--) sift(idx, r, n, p);
    for (int end = n - 1; end > 0; end--) {
        int32_t t = idx[0]; idx[0] = idx[end]; idx[end] = t;
        sift(idx, 0, end, p);
    }
}

/* Step 1: the repetition penalty, once per distinct id. s->idx marks ids already seen (only the
 * entries of the window are touched, so the array needs no clearing). */
static void rep_penalty(mq_sampler *s, float *l, const int32_t *hist, int n_hist) {
    float pen = s->p.rep_penalty;
    if (pen == 1.0f || !hist || n_hist <= 0) return;
    int from = s->p.rep_last_n > 0 && n_hist > s->p.rep_last_n ? n_hist - s->p.rep_last_n : 0;
    for (int i = from; i < n_hist; i++)
        if (hist[i] >= 0 && hist[i] < s->vocab) s->idx[hist[i]] = 0;
    for (int i = from; i < n_hist; i++) {
        int32_t t = hist[i];
        if (t < 0 || t >= s->vocab || s->idx[t]) continue;
        s->idx[t] = 1;
        l[t] = l[t] > 0.0f ? l[t] / pen : l[t] * pen;
    }
}

/* Step 1b: presence / frequency over hist[penalty_from, n_hist), once per distinct id with its count
 * (cnt is cleared for the window's entries only). */
static void pf_penalty(mq_sampler *s, float *l, const int32_t *hist, int n_hist) {
    const float pr = s->p.presence_penalty, fr = s->p.frequency_penalty;
    if ((pr == 0.0f && fr == 0.0f) || !hist) return;
    for (int i = s->p.penalty_from; i < n_hist; i++)
        if (hist[i] >= 0 && hist[i] < s->vocab) s->cnt[hist[i]] = 0;
    for (int i = s->p.penalty_from; i < n_hist; i++)
        if (hist[i] >= 0 && hist[i] < s->vocab) s->cnt[hist[i]]++;
    for (int i = s->p.penalty_from; i < n_hist; i++) {
        const int32_t t = hist[i];
        if (t < 0 || t >= s->vocab || s->cnt[t] <= 0) continue;
        l[t] -= fr * (float)s->cnt[t] + pr;
        s->cnt[t] = 0; /* (applied: later occurrences skip it) */
    }
}

/* Step 4: top-k survivors into idx; returns their count. A min-heap of the k best in idx[0..k)
 * gives the k-th largest value; then every token >= it is collected. */
static int top_k(mq_sampler *s, const float *p, int k) {
    int32_t *h = s->idx;
    int n = s->vocab;
    for (int i = 0; i < n; i++) {
        int r;
        if (i < k) {
            r = i;                                   /* sift up */
            h[r] = i;
            while (r > 0 && p[h[(r - 1) / 2]] > p[h[r]]) {
                int32_t t = h[r]; h[r] = h[(r - 1) / 2]; h[(r - 1) / 2] = t;
                r = (r - 1) / 2;
            }
            continue;
        }
        if (!(p[i] > p[h[0]])) continue;
        h[0] = i;                                    /* replace the min, sift down */
        r = 0;
        for (;;) {
            int c = 2 * r + 1;
            if (c >= k) break;
            if (c + 1 < k && p[h[c + 1]] < p[h[c]]) c++;
            if (!(p[h[c]] < p[h[r]])) break;
            int32_t t = h[r]; h[r] = h[c]; h[c] = t;
            r = c;
        }
    }
    float kth = p[h[0]];
    int m = 0;
    for (int i = 0; i < n; i++)
        if (p[i] >= kth) h[m++] = i;
    return m;
}

int mq_sampler_sample(mq_sampler *s, float *logits, const int32_t *hist, int n_hist) {
    int n = s->vocab;
    for (int i = 0; i < s->p.n_bias; i++)
        if (s->p.bias_ids[i] >= 0 && s->p.bias_ids[i] < n) logits[s->p.bias_ids[i]] += s->p.bias_vals[i];
    if (n_hist - s->p.penalty_from < s->p.min_tokens) /* min_tokens: no end yet */
        for (int i = 0; i < s->p.n_ban; i++)
            if (s->p.ban_ids[i] >= 0 && s->p.ban_ids[i] < n) logits[s->p.ban_ids[i]] = -INFINITY;
    rep_penalty(s, logits, hist, n_hist);
    pf_penalty(s, logits, hist, n_hist);
    float mx = -INFINITY;
    int imx = -1;
    for (int i = 0; i < n; i++) {
        if (isnan(logits[i])) {
            mq_err_set("sampler: logit %d is NaN", i);
            return -1;
        }
        if (logits[i] > mx || imx < 0) { mx = logits[i]; imx = i; }
    }
    if (mx == -INFINITY) {
        mq_err_set("sampler: every logit is -inf");
        return -1;
    }
    if (s->p.temperature == 0.0f || mx == INFINITY) return imx; /* greedy / an infinite logit */

    /* Step 3. p may be the same array as logits: each p[i] needs only logits[i]. */
    float *p = s->probs, inv_t = 1.0f / s->p.temperature;
    for (int i = 0; i < n; i++) p[i] = expf((logits[i] - mx) * inv_t);
    /* p[imx] == 1 is the largest probability from here on */

    int32_t *idx = s->idx;
    int k = s->p.top_k, m = n;
    int use_p = s->p.top_p < 1.0f, use_min = s->p.min_p > 0.0f;
    if (k > 0 && k < n) {
        m = top_k(s, p, k);
    } else if (use_p || use_min) {
        for (int i = 0; i < n; i++) idx[i] = i;
    } else {
        /* temperature alone: walk the whole vocabulary in id order */
        double tot = 0.0;
        for (int i = 0; i < n; i++) tot += p[i];
        double r = (double)mq_sampler_rand(&s->rng) * tot, c = 0.0;
        int last = imx;
        for (int i = 0; i < n; i++) {
            if (p[i] <= 0.0f) continue;
            c += p[i];
            last = i;
            if (c > r) return i;
        }
        return last;
    }

    if (use_p) {
        double tot = 0.0;
        for (int i = 0; i < m; i++) tot += p[idx[i]];
        double target = (double)s->p.top_p * tot;
        /* Sort only the head: gather tokens with p >= tau (all ranking above the rest), lowering
         * tau until their mass reaches the target; then the cut lies inside the gathered head. */
        float tau = 1.0f / 16.0f;
        int h = 0;
        for (;;) {
            double mass = 0.0;
            h = 0;
            for (int i = 0; i < m; i++) {
                int32_t t = idx[i];
                if (p[t] >= tau) {
                    idx[i] = idx[h];
                    idx[h++] = t;
                    mass += p[t];
                }
            }
            if (mass >= target || tau == 0.0f || h == m) break;
            tau = tau < 1e-30f ? 0.0f : tau / 16.0f;
        }
        sort_desc(idx, h, p);
        double before_mass = 0.0;
        int keep = 0;
        while (keep < h && (keep == 0 || before_mass < target)) before_mass += p[idx[keep++]];
        m = keep;
    }
    if (use_min) {
        int j = 0;
        for (int i = 0; i < m; i++)
            if (p[idx[i]] >= s->p.min_p) idx[j++] = idx[i]; /* p_max is 1 */
        m = j;
    }
    double tot = 0.0;
    for (int i = 0; i < m; i++) tot += p[idx[i]];
    double r = (double)mq_sampler_rand(&s->rng) * tot, c = 0.0;
    int last = idx[0];
    for (int i = 0; i < m; i++) {
        float q = p[idx[i]];
        if (q <= 0.0f) continue;
        c += q;
        last = idx[i];
        if (c > r) return idx[i];
    }
    return last;
}
