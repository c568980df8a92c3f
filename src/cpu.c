/* cpu: the reference Qwen3 forward pass — fp32 activations and accumulation, KV cache, pthreads. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "err.h"
#include "half.h"
#include "rope.h"

/* ---------------------------------------------------------------------------------------------
 * Vector dot products. Weights stay in the mmap in their stored dtype; BF16 is converted on the
 * fly (a bf16 is the top 16 bits of an f32). GCC/clang vector extensions keep this portable C;
 * on x86-64 each kernel is also compiled for x86-64-v3 (AVX2+FMA) and picked at load time
 * (target_clones), since the build may not use -march=native (CI machines differ).
 * GCC in strict C11 mode does not contract a*b+c into an FMA, so the kernels ask for it. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define MQ_KERNEL __attribute__((optimize("fp-contract=fast"), target_clones("arch=x86-64-v3", "default")))
#else
#define MQ_KERNEL
#endif

#if defined(__GNUC__) && !defined(__clang__)
/* The 32-byte vector helpers below are static inline: no ABI crosses a file boundary. */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
/* ... and always inlined: left out of line (-O0), a helper is compiled for the default target, which
 * returns a 32-byte vector in memory, while the x86-64-v3 clone of its caller expects it in a ymm
 * register (every forward crashed in a Debug build). */
#define MQ_VEC static inline __attribute__((always_inline))

typedef float v8f __attribute__((vector_size(32)));
typedef uint16_t v8u16 __attribute__((vector_size(16)));
typedef uint32_t v8u32 __attribute__((vector_size(32)));

MQ_VEC v8f ld_f32(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

MQ_VEC v8f ld_bf16(const uint16_t *p) {
    v8u16 h;
    memcpy(&h, p, sizeof h);
    v8u32 u = __builtin_convertvector(h, v8u32) << 16;
    v8f f;
    memcpy(&f, &u, sizeof f);
    return f;
}

MQ_VEC float hsum(v8f a) {
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

static inline float bf16_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static float f16_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);               /* inf / nan */
    } else if (exp != 0) {
        u = sign | ((exp + 112) << 23) | (man << 13);       /* normal: rebias 15 -> 127 */
    } else if (man == 0) {
        u = sign;                                           /* +-0 */
    } else {                                                /* subnormal: normalize */
        int e = -1;
        do { man <<= 1; e++; } while (!(man & 0x400));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* sum a[i]*b[i], i < n */
MQ_KERNEL static float dot_f32(const float *a, const float *b, int n) {
    v8f s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 += ld_f32(a + i) * ld_f32(b + i);
        s1 += ld_f32(a + i + 8) * ld_f32(b + i + 8);
        s2 += ld_f32(a + i + 16) * ld_f32(b + i + 16);
        s3 += ld_f32(a + i + 24) * ld_f32(b + i + 24);
    }
    for (; i + 8 <= n; i += 8) s0 += ld_f32(a + i) * ld_f32(b + i);
    float s = hsum((s0 + s1) + (s2 + s3));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* sum w[i]*x[i] with w in bf16 */
MQ_KERNEL static float dot_bf16(const uint16_t *w, const float *x, int n) {
    v8f s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 += ld_bf16(w + i) * ld_f32(x + i);
        s1 += ld_bf16(w + i + 8) * ld_f32(x + i + 8);
        s2 += ld_bf16(w + i + 16) * ld_f32(x + i + 16);
        s3 += ld_bf16(w + i + 24) * ld_f32(x + i + 24);
    }
    for (; i + 8 <= n; i += 8) s0 += ld_bf16(w + i) * ld_f32(x + i);
    float s = hsum((s0 + s1) + (s2 + s3));
    for (; i < n; i++) s += bf16_f32(w[i]) * x[i];
    return s;
}

/* out[r] = dot(w + r*n, x) for 4 consecutive f32 rows: one pass over x for four rows (prefill). */
MQ_KERNEL static void dot4_f32(const float *w, const float *x, int n, float *out) {
    const float *w0 = w, *w1 = w + n, *w2 = w + 2 * (size_t)n, *w3 = w + 3 * (size_t)n;
    v8f s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f xv = ld_f32(x + i);
        s0 += ld_f32(w0 + i) * xv;
        s1 += ld_f32(w1 + i) * xv;
        s2 += ld_f32(w2 + i) * xv;
        s3 += ld_f32(w3 + i) * xv;
    }
    float r0 = hsum(s0), r1 = hsum(s1), r2 = hsum(s2), r3 = hsum(s3);
    for (; i < n; i++) {
        r0 += w0[i] * x[i];
        r1 += w1[i] * x[i];
        r2 += w2[i] * x[i];
        r3 += w3[i] * x[i];
    }
    out[0] = r0; out[1] = r1; out[2] = r2; out[3] = r3;
}

/* y += a * x */
MQ_KERNEL static void axpy(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

/* Rows [r0, r0+nr) of weight w (rows of `cols` elements) as f32 into out (nr, cols). */
static void rows_f32(mq_tref w, size_t r0, int nr, int cols, float *out) {
    size_t off = r0 * (size_t)cols, n = (size_t)nr * (size_t)cols;
    if (w.dt == MQ_F32) {
        memcpy(out, (const float *)w.p + off, n * sizeof(float));
    } else if (w.dt == MQ_BF16) {
        const uint16_t *p = (const uint16_t *)w.p + off;
        for (size_t i = 0; i < n; i++) out[i] = bf16_f32(p[i]);
    } else {
        const uint16_t *p = (const uint16_t *)w.p + off;
        for (size_t i = 0; i < n; i++) out[i] = f16_f32(p[i]);
    }
}

/* ---------------------------------------------------------------------------------------------
 * A small persistent thread pool: pool_run(fn, ctx) calls fn(ctx, tid, nth) on every thread
 * (the caller is tid 0) and returns when all are done. Jobs split their own work by tid. */
typedef void (*job_fn)(void *ctx, int tid, int nth);

typedef struct {
    int n;                   /* threads including the caller */
    pthread_t *th;           /* (n-1) workers */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned gen;            /* bumped per job; workers wait for a change */
    int remaining;           /* workers still running the current job */
    int quit;
    job_fn fn;
    void *ctx;
} pool;

typedef struct {
    pool *p;
    int tid;
} worker_arg;

static void *worker(void *arg) {
    worker_arg *wa = arg;
    pool *p = wa->p;
    int tid = wa->tid;
    free(wa);
    pthread_mutex_lock(&p->mu);
    /* Start from generation 0, not the current one: a job posted before this thread first took
     * the lock must still be run (reading p->gen here would skip it and deadlock pool_run). */
    unsigned seen = 0;
    for (;;) {
        while (p->gen == seen && !p->quit) pthread_cond_wait(&p->go, &p->mu);
        if (p->quit) break;
        seen = p->gen;
        job_fn fn = p->fn;
        void *ctx = p->ctx;
        pthread_mutex_unlock(&p->mu);
        fn(ctx, tid, p->n);
        pthread_mutex_lock(&p->mu);
        if (--p->remaining == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void pool_run(pool *p, job_fn fn, void *ctx) {
    if (p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->remaining = p->n - 1;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, p->n);
    pthread_mutex_lock(&p->mu);
    while (p->remaining > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

static void pool_stop(pool *p) {
    if (!p->th) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n - 1; i++) pthread_join(p->th[i], NULL);
    free(p->th);
    p->th = NULL;
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
}

static int pool_start(pool *p, int n) {
    memset(p, 0, sizeof *p);
    p->n = n;
    if (n == 1) return 0;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    p->th = calloc((size_t)n - 1, sizeof *p->th);
    if (!p->th) return -1;
    for (int i = 1; i < n; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa || (wa->p = p, wa->tid = i, pthread_create(&p->th[i - 1], NULL, worker, wa) != 0)) {
            free(wa);
            p->n = i;    /* join the ones started */
            pool_stop(p);
            return -1;
        }
    }
    return 0;
}

/* [lo, hi) = tid's share of [0, total), in multiples of `align` (last share takes the rest). */
static void split(int total, int tid, int nth, int align, int *lo, int *hi) {
    int units = (total + align - 1) / align;
    int a = (int)((long long)units * tid / nth), b = (int)((long long)units * (tid + 1) / nth);
    *lo = a * align < total ? a * align : total;
    *hi = b * align < total ? b * align : total;
}

/* ---------------------------------------------------------------------------------------------
 * The backend. Tokens are processed in chunks of up to CHUNK positions; every weight matrix is
 * read once per chunk (a matmul over the chunk's tokens), so prefill is not n separate decodes. */
enum { CHUNK = 64 };

typedef struct {
    mq_backend base;
    const mq_model *m;
    int hidden, q_dim, kv_dim, inter, hd, n_heads, n_kv, vocab, n_layers;
    pool pool;
    float *norms;      /* (n_layers, 2*hidden + 2*hd): in_norm, post_norm, q_norm, k_norm as f32 */
    float *final_norm; /* (hidden) */
    float *rope;       /* (max_ctx, hd/2, 2): cos, sin of HF's float32 pos * inv_freq[i] (src/rope.c) */
    float *kc, *vc;    /* (n_layers, max_ctx, kv_dim) fp32 K and V cache */
    int kv_round;      /* 0: K/V cached as computed; 1 / 2: rounded to bf16 / f16 first (--kv-type), the
                          values the cuda backend's 16-bit cache holds, kept in f32 storage */
    float *x;          /* (CHUNK, hidden) residual stream */
    float *xb;         /* (CHUNK, hidden) normed input of a sub-layer */
    float *q;          /* (CHUNK, q_dim) queries; reused for attention output */
    float *k, *v;      /* (CHUNK, kv_dim) this chunk's keys/values before caching */
    float *att;        /* (CHUNK, q_dim) attention output */
    float *g, *u;      /* (CHUNK, inter) MLP gate / up */
    float *wrow;       /* (n_threads, 4, max_cols) per-thread weight rows as f32 */
    float *scores;     /* (n_threads, max_ctx) per-thread attention scores */
    int max_cols;
    float *last;       /* (vocab) logits of the last processed position */
} cpu_be;

/* ---- matmul: out[t, r] (+)= sum_c W[r, c] * x[t, c] for up to 3 weights sharing x ---- */
typedef struct {
    mq_tref w;
    int rows;
    float *out;        /* (n_tok, out_stride) */
    int out_stride;
    int acc;           /* 1: add into out (residual) */
} mm_part;

typedef struct {
    cpu_be *b;
    const float *x;    /* (n_tok, cols) */
    int n_tok, cols;
    mm_part part[3];
    int n_part;
} mm_job;

static void mm_rows(cpu_be *b, const mm_job *j, const mm_part *pt, int r0, int r1, float *buf) {
    int cols = j->cols;
    if (j->n_tok == 1 && pt->w.dt != MQ_F16) {
        /* decode: stream each weight row once, converting in the dot */
        for (int r = r0; r < r1; r++) {
            float s = pt->w.dt == MQ_BF16
                          ? dot_bf16((const uint16_t *)pt->w.p + (size_t)r * cols, j->x, cols)
                          : dot_f32((const float *)pt->w.p + (size_t)r * cols, j->x, cols);
            pt->out[r] = pt->acc ? pt->out[r] + s : s;
        }
        return;
    }
    (void)b;
    float res[4];
    for (int r = r0; r < r1; r += 4) {
        int nr = r1 - r < 4 ? r1 - r : 4;
        const float *w;
        if (pt->w.dt == MQ_F32) {
            w = (const float *)pt->w.p + (size_t)r * cols;
        } else {
            rows_f32(pt->w, (size_t)r, nr, cols, buf);
            w = buf;
        }
        for (int t = 0; t < j->n_tok; t++) {
            const float *xt = j->x + (size_t)t * cols;
            if (nr == 4) {
                dot4_f32(w, xt, cols, res);
            } else {
                for (int i = 0; i < nr; i++) res[i] = dot_f32(w + (size_t)i * cols, xt, cols);
            }
            float *o = pt->out + (size_t)t * pt->out_stride + r;
            for (int i = 0; i < nr; i++) o[i] = pt->acc ? o[i] + res[i] : res[i];
        }
    }
}

static void mm_job_fn(void *ctx, int tid, int nth) {
    const mm_job *j = ctx;
    cpu_be *b = j->b;
    int total = 0;
    for (int i = 0; i < j->n_part; i++) total += j->part[i].rows;
    int lo, hi;
    split(total, tid, nth, 4, &lo, &hi);
    float *buf = b->wrow + (size_t)tid * 4 * b->max_cols;
    int base = 0;
    for (int i = 0; i < j->n_part; i++) {
        const mm_part *pt = &j->part[i];
        int a = lo > base ? lo - base : 0, e = hi - base < pt->rows ? hi - base : pt->rows;
        if (a < e) mm_rows(b, j, pt, a, e, buf);
        base += pt->rows;
    }
}

static void matmul(cpu_be *b, const float *x, int n_tok, int cols, const mm_part *parts, int n_part) {
    mm_job j = {.b = b, .x = x, .n_tok = n_tok, .cols = cols, .n_part = n_part};
    for (int i = 0; i < n_part; i++) j.part[i] = parts[i];
    pool_run(&b->pool, mm_job_fn, &j);
}

/* ---- attention: for each (token, query head), causal softmax over the cache ---- */
typedef struct {
    cpu_be *b;
    int layer, n_tok, pos0;
} att_job;

static void att_job_fn(void *ctx, int tid, int nth) {
    const att_job *j = ctx;
    cpu_be *b = j->b;
    int hd = b->hd, group = b->n_heads / b->n_kv, max_ctx = b->base.max_ctx;
    float scale = 1.0f / sqrtf((float)hd);
    float *s = b->scores + (size_t)tid * max_ctx;
    const float *kl = b->kc + (size_t)j->layer * max_ctx * b->kv_dim;
    const float *vl = b->vc + (size_t)j->layer * max_ctx * b->kv_dim;
    int lo, hi;
    split(j->n_tok * b->n_heads, tid, nth, 1, &lo, &hi);
    for (int it = lo; it < hi; it++) {
        int t = it / b->n_heads, h = it % b->n_heads, kvh = h / group, len = j->pos0 + t + 1;
        const float *q = b->q + (size_t)t * b->q_dim + (size_t)h * hd;
        float mx = -INFINITY;
        for (int p = 0; p < len; p++) {
            s[p] = dot_f32(q, kl + (size_t)p * b->kv_dim + (size_t)kvh * hd, hd) * scale;
            if (s[p] > mx) mx = s[p];
        }
        float sum = 0.0f;
        for (int p = 0; p < len; p++) {
            s[p] = expf(s[p] - mx);
            sum += s[p];
        }
        float inv = 1.0f / sum;
        float *o = b->att + (size_t)t * b->q_dim + (size_t)h * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        for (int p = 0; p < len; p++) axpy(o, s[p] * inv, vl + (size_t)p * b->kv_dim + (size_t)kvh * hd, hd);
    }
}

/* out = x * rsqrt(mean(x^2) + eps) * w, as HF's Qwen3RMSNorm in float32 */
static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    float ss = dot_f32(x, x, n);
    float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * r);
}

/* rotate-half RoPE on one head: pairs (i, i + hd/2); cs (hd/2, 2) is one position's cos, sin */
static void rope(float *v, const float *cs, int hd) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        float a = v[i], c = v[i + half], co = cs[2 * i], si = cs[2 * i + 1];
        v[i] = a * co - c * si;
        v[i + half] = c * co + a * si;
    }
}

/* One position's K or V row (kv_dim floats) into the cache, rounded as --kv-type says. */
static void store_kv(const cpu_be *b, float *dst, const float *src) {
    if (b->kv_round == 2)
        for (int i = 0; i < b->kv_dim; i++) dst[i] = mq_half_f16_f32(mq_half_f16(src[i]));
    else if (b->kv_round == 1)
        for (int i = 0; i < b->kv_dim; i++) dst[i] = mq_half_bf16_f32(mq_half_bf16(src[i]));
    else
        memcpy(dst, src, (size_t)b->kv_dim * sizeof(float));
}

static void layer_forward(cpu_be *b, int l, int n_tok, int pos0) {
    const mq_layer_w *L = &b->m->layers[l];
    const float eps = b->m->cfg.rms_eps;
    const float *nw = b->norms + (size_t)l * (2 * b->hidden + 2 * b->hd);
    const float *in_norm = nw, *post_norm = nw + b->hidden, *qn = nw + 2 * b->hidden, *kn = qn + b->hd;
    int H = b->hidden, hd = b->hd, half = hd / 2;

    for (int t = 0; t < n_tok; t++) rmsnorm(b->xb + (size_t)t * H, b->x + (size_t)t * H, in_norm, H, eps);
    mm_part qkv[3] = {{L->q, b->q_dim, b->q, b->q_dim, 0},
                      {L->k, b->kv_dim, b->k, b->kv_dim, 0},
                      {L->v, b->kv_dim, b->v, b->kv_dim, 0}};
    matmul(b, b->xb, n_tok, H, qkv, 3);

    /* per-head q/k RMSNorm, RoPE, then K and V into the cache at their positions */
    for (int t = 0; t < n_tok; t++) {
        int pos = pos0 + t;
        const float *cs = b->rope + (size_t)pos * half * 2;
        float *q = b->q + (size_t)t * b->q_dim, *k = b->k + (size_t)t * b->kv_dim;
        for (int h = 0; h < b->n_heads; h++) {
            rmsnorm(q + h * hd, q + h * hd, qn, hd, eps);
            rope(q + h * hd, cs, hd);
        }
        for (int h = 0; h < b->n_kv; h++) {
            rmsnorm(k + h * hd, k + h * hd, kn, hd, eps);
            rope(k + h * hd, cs, hd);
        }
        size_t off = ((size_t)l * b->base.max_ctx + pos) * b->kv_dim;
        store_kv(b, b->kc + off, k);
        store_kv(b, b->vc + off, b->v + (size_t)t * b->kv_dim);
    }

    att_job aj = {b, l, n_tok, pos0};
    pool_run(&b->pool, att_job_fn, &aj);
    mm_part o = {L->o, H, b->x, H, 1}; /* residual add */
    matmul(b, b->att, n_tok, b->q_dim, &o, 1);

    for (int t = 0; t < n_tok; t++) rmsnorm(b->xb + (size_t)t * H, b->x + (size_t)t * H, post_norm, H, eps);
    mm_part gu[2] = {{L->gate, b->inter, b->g, b->inter, 0}, {L->up, b->inter, b->u, b->inter, 0}};
    matmul(b, b->xb, n_tok, H, gu, 2);
    size_t ni = (size_t)n_tok * b->inter;
    for (size_t i = 0; i < ni; i++) {
        float g = b->g[i];
        b->g[i] = g / (1.0f + expf(-g)) * b->u[i]; /* silu(gate) * up */
    }
    mm_part down = {L->down, H, b->x, H, 1}; /* residual add */
    matmul(b, b->g, n_tok, b->inter, &down, 1);
}

static int cpu_forward(mq_backend *be, const int32_t *ids, int n, int pos, float *logits) {
    cpu_be *b = (cpu_be *)be;
    if (n < 0 || pos < 0 || (long long)pos + n > be->max_ctx) {
        mq_err_set("cpu: forward of %d tokens at position %d passes the KV cache (%d positions)", n, pos,
                   be->max_ctx);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= b->vocab) {
            mq_err_set("cpu: token id %d at index %d is outside the vocabulary (%d)", (int)ids[i], i, b->vocab);
            return -1;
        }
    }
    int H = b->hidden;
    for (int c0 = 0; c0 < n; c0 += CHUNK) {
        int nt = n - c0 < CHUNK ? n - c0 : CHUNK;
        for (int t = 0; t < nt; t++) rows_f32(b->m->embed, (size_t)ids[c0 + t], 1, H, b->x + (size_t)t * H);
        for (int l = 0; l < b->n_layers; l++) layer_forward(b, l, nt, pos + c0);
        int last_chunk = c0 + nt == n;
        if (logits) {
            for (int t = 0; t < nt; t++)
                rmsnorm(b->xb + (size_t)t * H, b->x + (size_t)t * H, b->final_norm, H, b->m->cfg.rms_eps);
            mm_part lm = {b->m->lm_head, b->vocab, logits + (size_t)c0 * b->vocab, b->vocab, 0};
            matmul(b, b->xb, nt, H, &lm, 1);
            if (last_chunk)
                memcpy(b->last, logits + (size_t)(n - 1) * b->vocab, (size_t)b->vocab * sizeof(float));
        } else if (last_chunk) {
            rmsnorm(b->xb, b->x + (size_t)(nt - 1) * H, b->final_norm, H, b->m->cfg.rms_eps);
            mm_part lm = {b->m->lm_head, b->vocab, b->last, b->vocab, 0};
            matmul(b, b->xb, 1, H, &lm, 1);
        }
    }
    return 0;
}

static const float *cpu_last_logits(mq_backend *be) {
    return ((cpu_be *)be)->last;
}

static void cpu_free(mq_backend *be) {
    cpu_be *b = (cpu_be *)be;
    if (!b) return;
    pool_stop(&b->pool);
    float *bufs[] = {b->norms, b->final_norm, b->rope, b->kc, b->vc, b->x, b->xb,
                     b->q, b->k, b->v, b->att, b->g, b->u, b->wrow, b->scores, b->last};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(b);
}

static float *falloc(size_t n) {
    return malloc((n ? n : 1) * sizeof(float));
}

static void tref_f32(mq_tref t, int n, float *out) {
    rows_f32(t, 0, 1, n, out);
}

mq_backend *mq_cpu_new(const mq_model *m, int max_ctx, int n_threads) { return mq_cpu_new_kv(m, max_ctx, n_threads, NULL); }

mq_backend *mq_cpu_new_kv(const mq_model *m, int max_ctx, int n_threads, const char *kvt) {
    const mq_config *c = &m->cfg;
    const int kvr = !kvt || !strcmp(kvt, "f32") ? 0 : !strcmp(kvt, "bf16") ? 1 : !strcmp(kvt, "f16") ? 2 : -1;
    if (kvr < 0) {
        mq_err_set("cpu: KV cache type '%.20s': expected f32, bf16 or f16", kvt);
        return NULL;
    }
    if (c->n_heads <= 0 || c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads || c->head_dim <= 0 ||
        c->head_dim % 2 || c->hidden_size <= 0 || c->intermediate_size <= 0 || c->vocab_size <= 0 ||
        c->n_layers <= 0) {
        mq_err_set("cpu: unsupported model dimensions (heads %d, kv heads %d, head_dim %d)", c->n_heads,
                   c->n_kv_heads, c->head_dim);
        return NULL;
    }
    if (max_ctx <= 0) {
        mq_err_set("cpu: max_ctx must be positive (got %d)", max_ctx);
        return NULL;
    }
    if (n_threads <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = nc > 0 ? (int)nc : 1;
    }
    if (n_threads > 256) n_threads = 256;
    cpu_be *b = calloc(1, sizeof *b);
    if (!b) {
        mq_err_set("cpu: out of memory");
        return NULL;
    }
    b->base.name = "cpu";
    b->base.max_ctx = max_ctx;
    b->base.kv_elt = 4; /* fp32 cache (16-bit types: rounded values in f32 storage) */
    b->kv_round = kvr;
    b->base.forward = cpu_forward;
    b->base.last_logits = cpu_last_logits;
    b->base.free = cpu_free;
    b->m = m;
    b->hidden = c->hidden_size;
    b->hd = c->head_dim;
    b->n_heads = c->n_heads;
    b->n_kv = c->n_kv_heads;
    b->q_dim = c->n_heads * c->head_dim;
    b->kv_dim = c->n_kv_heads * c->head_dim;
    b->inter = c->intermediate_size;
    b->vocab = c->vocab_size;
    b->n_layers = c->n_layers;
    int mc = b->hidden;
    if (b->q_dim > mc) mc = b->q_dim;
    if (b->inter > mc) mc = b->inter;
    b->max_cols = mc;

    size_t nl = (size_t)b->n_layers, half = (size_t)b->hd / 2, kv = nl * (size_t)max_ctx * b->kv_dim;
    b->norms = falloc(nl * (2 * b->hidden + 2 * b->hd));
    b->final_norm = falloc((size_t)b->hidden);
    b->rope = falloc((size_t)max_ctx * half * 2);
    b->kc = falloc(kv);
    b->vc = falloc(kv);
    b->x = falloc((size_t)CHUNK * b->hidden);
    b->xb = falloc((size_t)CHUNK * b->hidden);
    b->q = falloc((size_t)CHUNK * b->q_dim);
    b->k = falloc((size_t)CHUNK * b->kv_dim);
    b->v = falloc((size_t)CHUNK * b->kv_dim);
    b->att = falloc((size_t)CHUNK * b->q_dim);
    b->g = falloc((size_t)CHUNK * b->inter);
    b->u = falloc((size_t)CHUNK * b->inter);
    b->wrow = falloc((size_t)n_threads * 4 * mc);
    b->scores = falloc((size_t)n_threads * max_ctx);
    b->last = calloc((size_t)b->vocab, sizeof(float));
    if (!b->norms || !b->final_norm || !b->rope || !b->kc || !b->vc || !b->x || !b->xb ||
        !b->q || !b->k || !b->v || !b->att || !b->g || !b->u || !b->wrow || !b->scores || !b->last) {
        mq_err_set("cpu: out of memory allocating the KV cache (%d positions) and buffers", max_ctx);
        cpu_free(&b->base);
        return NULL;
    }
    /* Norm weights are tiny: hold them as f32 rather than converting per use. */
    for (int l = 0; l < b->n_layers; l++) {
        float *nw = b->norms + (size_t)l * (2 * b->hidden + 2 * b->hd);
        tref_f32(m->layers[l].in_norm, b->hidden, nw);
        tref_f32(m->layers[l].post_norm, b->hidden, nw + b->hidden);
        tref_f32(m->layers[l].q_norm, b->hd, nw + 2 * b->hidden);
        tref_f32(m->layers[l].k_norm, b->hd, nw + 2 * b->hidden + b->hd);
    }
    tref_f32(m->final_norm, b->hidden, b->final_norm);
    mq_rope_table(&c->rope, b->hd, max_ctx, b->rope);
    if (pool_start(&b->pool, n_threads) != 0) {
        mq_err_set("cpu: cannot start %d threads", n_threads);
        b->pool.th = NULL;
        cpu_free(&b->base);
        return NULL;
    }
    return &b->base;
}
