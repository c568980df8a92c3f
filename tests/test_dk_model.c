/* test_dk_model: a host model of the device's distributed top-k (src/cuda/sample.cuh, samp_cands and
 * sample_dk) against the definition src/sampler.c applies: on logit vectors built to be hard (exact
 * ties, ulp-adjacent runs at the k-th value, underflowing p, values whose difference from the max
 * rounds together, -inf), the candidates' survivors with p > 0 must be exactly the vocabulary's, or the
 * model must report the fallback. The model follows the device code step by step (blocks split as
 * block_rows, at most 256 x 16 rows a block, the block's k-th largest order key by a bitwise radix,
 * at most 256 candidates, the left-out maximum, the exactness check). Runs without a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NT = 256, CMAX = 256, EMAX = 16 };

static uint64_t rs = 88172645463325252ull;
static uint32_t rnd(void) {
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return (uint32_t)(rs >> 32);
}
static float unif(void) { return (float)(rnd() >> 8) * (1.0f / 16777216.0f); }

static uint32_t key_of(float x) {
    uint32_t k;
    memcpy(&k, &x, 4);
    return (k & 0x80000000u) ? ~k : (k | 0x80000000u);
}
static float unkey(uint32_t k) {
    uint32_t b = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float x;
    memcpy(&x, &b, 4);
    return x;
}

static int cmp_desc(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}
/* the k-th largest of n values (a sorted copy) */
static float kth_largest(const float *v, int n, int k) {
    float *c = malloc((size_t)n * sizeof *c);
    assert_non_null(c);
    memcpy(c, v, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, cmp_desc);
    const float r = c[k - 1];
    free(c);
    return r;
}

/* Returns 1 when the model decides (and checks it), 0 when it falls back. */
static int check_one(const float *L, int V, int nb, int k, float temp) {
    const float inv_t = 1.0f / temp;
    /* reference: p over the vocabulary (the max first), survivors p >= the k-th largest p */
    float mx = -INFINITY;
    for (int i = 0; i < V; i++)
        if (L[i] > mx) mx = L[i];
    float *p = malloc((size_t)V * sizeof *p);
    assert_non_null(p);
    for (int i = 0; i < V; i++) p[i] = expf((L[i] - mx) * inv_t);
    const float kth = kth_largest(p, V, k);
    /* the model: candidates per block */
    int *cid = malloc((size_t)nb * CMAX * sizeof *cid), M = 0, fallback = 0;
    uint32_t *xk = calloc((size_t)nb, sizeof *xk);
    assert_non_null(cid);
    assert_non_null(xk);
    for (int b = 0; b < nb && !fallback; b++) {
        const int r0 = (int)((long long)V * b / nb), r1 = (int)((long long)V * (b + 1) / nb), n = r1 - r0;
        if ((n + NT - 1) / NT > EMAX) {
            fallback = 1;
            break;
        }
        uint32_t T = 0; /* the block's k-th largest key, a bit at a time (0: fewer than k rows) */
        int need = k;
        for (int bit = 31; bit >= 0; bit--) {
            const uint32_t mask = ~0u << bit, want = T | (1u << bit);
            int c = 0;
            for (int i = 0; i < n; i++) c += (key_of(L[r0 + i]) & mask) == want;
            if (c >= need) T = want;
            else need -= c;
        }
        int cnt = 0;
        for (int i = 0; i < n; i++) {
            const uint32_t kk = key_of(L[r0 + i]);
            if (kk >= T) {
                if (cnt < CMAX) cid[M + cnt] = r0 + i;
                cnt++;
            } else if (kk > xk[b]) {
                xk[b] = kk;
            }
        }
        if (cnt > CMAX) fallback = 1;
        else M += cnt;
    }
    int decided = 0;
    if (!fallback) {
        /* the last block: the max over the candidates is the vocabulary's */
        float cmx = -INFINITY;
        for (int j = 0; j < M; j++)
            if (L[cid[j]] > cmx) cmx = L[cid[j]];
        assert_true(cmx == mx);
        assert_true(M >= k);
        float *cp = malloc((size_t)M * sizeof *cp);
        assert_non_null(cp);
        for (int j = 0; j < M; j++) cp[j] = expf((L[cid[j]] - cmx) * inv_t);
        const float ckth = kth_largest(cp, M, k);
        assert_true(ckth == kth); /* every logit of the top k is a candidate */
        int out = 0;
        for (int b = 0; b < nb; b++) {
            if (!xk[b]) continue;
            const float pe = expf((unkey(xk[b]) - cmx) * inv_t);
            if (!(pe < ckth) && pe != 0.0f) out = 1;
        }
        if (!out) {
            /* survivors with p > 0, in id order, must be the same lists */
            int a = 0, j = 0;
            for (int i = 0; i < V; i++) {
                if (!(p[i] >= kth && p[i] > 0.0f)) continue;
                while (j < M && !(cp[j] >= ckth && cp[j] > 0.0f)) j++;
                if (j >= M || cid[j] != i) fail_msg("survivor %d (p %g) missing from the candidates' (k %d)", i, p[i], k);
                j++, a++;
            }
            while (j < M && !(cp[j] >= ckth && cp[j] > 0.0f)) j++;
            if (j < M) fail_msg("candidate %d (p %g) survives but not in the vocabulary", cid[j], cp[j]);
            assert_true(a >= 1);
            decided = 1;
        }
        free(cp);
    }
    free(cid);
    free(xk);
    free(p);
    return decided;
}

enum { PAT_NORMAL, PAT_TIES, PAT_ULP, PAT_GAP, PAT_COLLAPSE, PAT_NINF, PAT_TIEX, PAT_N };

static void fill(float *L, int V, int pat, int k) {
    for (int i = 0; i < V; i++) {
        float s = 0.0f;
        for (int u = 0; u < 4; u++) s += unif();
        L[i] = 4.0f * (s - 2.0f);
    }
    switch (pat) {
    case PAT_TIES: /* logits on a coarse grid: long runs of exact ties everywhere */
        for (int i = 0; i < V; i++) L[i] = floorf(L[i] * 2.0f) * 0.5f;
        break;
    case PAT_ULP: { /* 3k logits one ulp apart around the top, spread over the blocks */
        float v = 12.0f;
        for (int j = 0; j < 3 * k; j++) {
            L[(int)(rnd() % (uint32_t)V)] = v;
            v = nextafterf(v, 0.0f);
        }
        break;
    }
    case PAT_GAP: /* one logit far above: most p underflow to 0 (the k-th largest p may be 0) */
        L[rnd() % (uint32_t)V] = 200.0f;
        for (int j = 0; j < k / 2; j++) L[rnd() % (uint32_t)V] = 150.0f + unif();
        break;
    case PAT_COLLAPSE: /* small logits whose differences from a large max round together */
        L[rnd() % (uint32_t)V] = 30.0f;
        for (int j = 0; j < 4 * k; j++) {
            float v = 0.001f;
            for (int s = (int)(rnd() % 64); s > 0; s--) v = nextafterf(v, 1.0f);
            L[rnd() % (uint32_t)V] = v + 10.0f * (rnd() % 2 ? 0.0f : 1e-3f);
        }
        for (int i = 0; i < V; i++)
            if (L[i] > 0.002f && L[i] < 30.0f) L[i] -= 20.0f;
        break;
    case PAT_TIEX: /* 2k logits a few ulps apart in the first block's rows, below a max of 30 from which
                    * their differences round to one value: equal p, so the CPU keeps all 2k while the
                    * first block offers k of them (the exactness check must send this to the fallback) */
        for (int i = 0; i < V; i++) L[i] = -5.0f - unif();
        L[V - 1] = 30.0f;
        {
            float v = 0.001f;
            for (int j = 0; j < 2 * k; j++, v = nextafterf(v, 1.0f)) L[j] = v;
        }
        break;
    case PAT_NINF: /* a third of the vocabulary banned */
        for (int i = 0; i < V; i++)
            if (rnd() % 3 == 0) L[i] = -INFINITY;
        break;
    default: break;
    }
}

static void test_model(void **st) {
    (void)st;
    const int Vs[3] = {151936, 4099, 600};
    const int nbs[3] = {132, 120, 7};
    const int ks[4] = {1, 20, 40, 64};
    const float ts[3] = {0.6f, 1.0f, 1.7f};
    int decided = 0, total = 0;
    for (int vi = 0; vi < 3; vi++) {
        const int V = Vs[vi];
        float *L = malloc((size_t)V * sizeof *L);
        assert_non_null(L);
        for (int pat = 0; pat < PAT_N; pat++)
            for (int ki = 0; ki < 4; ki++) {
                const int k = ks[ki];
                if (k >= V) continue;
                fill(L, V, pat, k);
                const int nb = nbs[(pat + ki) % 3];
                const int d = check_one(L, V, nb, k, ts[(pat + 2 * ki) % 3]);
                decided += d;
                if (getenv("MQ_DK_VERBOSE")) printf("  V %d, pattern %d, k %d, %d blocks: %s\n", V, pat, k, nb, d ? "decided" : "fallback");
                total++;
            }
        free(L);
    }
    printf("  distributed top-k model: %d of %d cases decided from the candidates, the rest fall back\n", decided,
           total);
    assert_true(decided >= total / 2); /* the fallback is for rare ties, not the common case */
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_model)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
