// sample.cuh: next-token sampling on the device, in the one block that finishes the lm_head last.
// Mirrors src/sampler.c step by step (repetition penalty, temperature, top-k, top-p, min-p, then a
// walk with xorshift64*), for top_k in [1, SAMPLE_MAXK] or temperature alone; the host falls back
// to src/sampler.c for other settings (cuda_backend.c). Sums run in double as on the CPU, but in a
// different order, so a draw that lands within rounding of a boundary may differ (never seen).
#ifndef MQ_SAMPLE_CUH
#define MQ_SAMPLE_CUH
#include "megakernel.cuh"

namespace mqk {

constexpr int SAMPLE_MAXK = 1024;  // most survivors of top-k the device path keeps
constexpr int SAMPLE_QUICK = 256;  // top-k's quick path: most candidates (its k-th search is O(m^2) / NT:
                                   // at k = 1000 it cost 10% against the radix passes, run 91)
constexpr int SAMPLE_SMEM_WORDS = 4 * SAMPLE_MAXK + 3 * NT + 256 + SAMPLE_MAXK;
// The distributed top-k (samp_cands, sample_dk): for 1 <= top_k <= DK_MAXK every lm_head block offers
// the candidates among its rows (at most DK_CMAX, else the one-block path runs), with at most DK_E
// rows a thread (a block's rows <= NT * DK_E).
constexpr int DK_MAXK = 64;
constexpr int DK_CMAX = 256;
constexpr int DK_E = 16;

// -DMQ_SAMPLE_TIMING (a measurement build): thread 0 of sample_block prints the clock cycles of its
// phases for the first 12 draws of a launch sequence
#ifdef MQ_SAMPLE_TIMING
static __device__ unsigned samp_tcnt;
#define SAMP_MARK(k) \
    do {              \
        if (tid == 0) samp_t[k] = clock64(); \
    } while (0)
#define SAMP_PRINT(path)                                                                                          \
    do {                                                                                                          \
        if (tid == 0 && atomicAdd(&samp_tcnt, 1u) < 12u)                                                          \
            printf("sample %s: pen %lld max %lld exp %lld sel %lld gather %lld topp %lld walk %lld (cycles)\n", path, \
                   samp_t[1] - samp_t[0], samp_t[2] - samp_t[1], samp_t[3] - samp_t[2], samp_t[4] - samp_t[3],   \
                   samp_t[5] - samp_t[4], samp_t[6] - samp_t[5], samp_t[7] - samp_t[6]);                          \
    } while (0)
#else
#define SAMP_MARK(k) \
    do {              \
    } while (0)
#define SAMP_PRINT(path) \
    do {                  \
    } while (0)
#endif

__device__ __forceinline__ float samp_rand(unsigned long long *state) {
    unsigned long long x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    const unsigned long long r = x * 0x2545F4914F6CDD1Dull;
    return (float)(r >> 40) * (1.0f / 16777216.0f);
}

// order keys of floats: unsigned comparison of keys = float comparison (NaN aside); samp_unkey inverts
__device__ __forceinline__ unsigned samp_key(float x) {
    const unsigned k = __float_as_uint(x);
    return (k & 0x80000000u) ? ~k : (k | 0x80000000u);
}
__device__ __forceinline__ float samp_unkey(unsigned k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// "a ranks before b": higher p first, lower id on ties (sampler.c's order)
__device__ __forceinline__ bool samp_before(float pa, int a, float pb, int b) { return pa > pb || (pa == pb && a < b); }

// Block-wide exclusive scan of one int per thread (NT threads); returns this thread's prefix and
// the total in *tot. sc: NT ints of shared memory.
__device__ __forceinline__ int samp_scan(int v, int *sc, int *tot) {
    __syncthreads();
    sc[threadIdx.x] = v;
    __syncthreads();
    for (int o = 1; o < NT; o <<= 1) {
        const int t = threadIdx.x >= (unsigned)o ? sc[threadIdx.x - o] : 0;
        __syncthreads();
        sc[threadIdx.x] += t;
        __syncthreads();
    }
    *tot = sc[NT - 1];
    return sc[threadIdx.x] - v;
}

// The vocabulary passes below are latency bound in one block (run 89: ~300 cycles of L2 latency per
// element per thread, ~90 us a pass), so each thread keeps SAMP_U groups of 4 elements in flight:
// elements 4j..4j+3 of a (out of range: `fill`), as one 16-byte load when vec (V % 4 == 0, aligned).
constexpr int SAMP_U = 4;
__device__ __forceinline__ float4 samp_ld4(const float *a, int j, int V, bool vec, float fill) {
    if (vec) return 4 * j < V ? __ldcg(reinterpret_cast<const float4 *>(a) + j) : make_float4(fill, fill, fill, fill);
    float e[4];
#pragma unroll
    for (int c = 0; c < 4; c++) e[c] = 4 * j + c < V ? __ldcg(a + 4 * j + c) : fill;
    return make_float4(e[0], e[1], e[2], e[3]);
}
__device__ __forceinline__ float samp_at(const float4 &v, int c) { return c == 0 ? v.x : c == 1 ? v.y : c == 2 ? v.z : v.w; }

// The repetition penalty (sampler.c's step 1), once per distinct id of the window hist[0, nh), for
// the ids in [a, b) (the calling block owns logits[a, b)): P.seen marks, then cleared.
static __device__ __noinline__ void samp_penalty(const Params &P, float *logits, int nh, int a, int b) {
    const float pen = P.s_pen;
    if (pen == 1.0f || nh <= 0) return;
    const int from = P.s_last_n > 0 && nh > P.s_last_n ? nh - P.s_last_n : 0;
    for (int i = from + (int)threadIdx.x; i < nh; i += NT) {
        const int t = __ldcg(P.hist + i);
        if (t >= a && t < b && atomicExch(P.seen + t, 1u) == 0u) {
            const float l = __ldcg(logits + t);
            logits[t] = l > 0.0f ? l / pen : l * pen;
        }
    }
    __threadfence_block();
    __syncthreads();
    for (int i = from + (int)threadIdx.x; i < nh; i += NT) {
        const int t = __ldcg(P.hist + i);
        if (t >= a && t < b) P.seen[t] = 0u;
    }
    __threadfence_block();
    __syncthreads();
}

// Sample from logits (vocab, global; modified in place by the penalty), penalising the ids
// hist[0, nh). sm: SAMPLE_SMEM_WORDS words of shared memory. Every thread returns the token (-1: NaN
// or all -inf logits). The logits and hist come from other blocks within this launch (a launch runs
// many steps, and this block may have read older values of the same lines into its L1): read
// through L2 (__ldcg).
// The distributed path's input (sample_dk): the p of M candidates in P.probs, in id order, their ids,
// the maximum logit and its id, and per lm_head block the order key of the largest logit it left out.
struct SampIn {
    int M;
    const int *cid;   // (M) ids
    float mx;
    int imx;
    const unsigned *xk;  // (nb) samp_key of a block's largest left-out logit, 0: none
    int nb;
};

// pen_done: the lm_head blocks applied the penalty already (samp_cands). din: sample the candidates
// (steps 1-3 done by sample_dk); returns -3 when they cannot decide the draw exactly (a left-out logit
// may reach the k-th largest p: the caller runs the whole-vocabulary path; no RNG drawn yet).
static __device__ __noinline__ int sample_block(const Params &P, float *logits, float *sm, int nh,
                                                unsigned long long known, int pen_done = 0,
                                                const SampIn *din = nullptr) {
    const int V = din ? din->M : P.vocab, tid = threadIdx.x;
    int *sidx = reinterpret_cast<int *>(sm);               // (SAMPLE_MAXK) survivors
    int *sorted = sidx + SAMPLE_MAXK;                      // (SAMPLE_MAXK)
    float *sp = reinterpret_cast<float *>(sorted + SAMPLE_MAXK);  // (SAMPLE_MAXK) their p
    int *sc = reinterpret_cast<int *>(sp + SAMPLE_MAXK);   // (NT) scan scratch
    double *dsc = reinterpret_cast<double *>(sc + NT);     // (NT) double sums
    int *hist = reinterpret_cast<int *>(dsc + NT);         // (256) radix histogram
    int *kept = hist + 256;                                // (SAMPLE_MAXK) slots kept by min-p
    __shared__ int s_tok, s_m, s_imx;
    __shared__ unsigned long long s_best;
    __shared__ float s_mx;
    __shared__ unsigned s_prefix;
    __shared__ int s_need, s_cand, s_surv;
    __shared__ float s_kth;
#ifdef MQ_SAMPLE_TIMING
    long long samp_t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#endif
    SAMP_MARK(0);

    // 1. repetition penalty, once per distinct id of the window (P.seen marks, then cleared)
    const float pen = P.s_pen;
    if (!pen_done && !din) samp_penalty(P, logits, nh, 0, V);
    SAMP_MARK(1);
    // 2. max (lowest index on ties); NaN fails. known: the lm_head's fused argmax key over these
    // logits (0: none). Without a penalty it is this maximum, so the pass is skipped when that is
    // finite (a NaN elsewhere is then caught by the exp pass); else the pass runs.
    const bool vec = (V & 3) == 0 && !((reinterpret_cast<uintptr_t>(logits) | reinterpret_cast<uintptr_t>(P.probs)) & 15);
    const int V4 = (V + 3) >> 2;  // groups of 4 elements; a trip covers SAMP_U * NT of them
    bool skip = din != nullptr;
    if (din && tid == 0) s_mx = din->mx, s_imx = din->imx;
    if (!din && known && !(pen != 1.0f && nh > 0)) {
        if (tid == 0) {
            s_imx = (int)(0xffffffffu - (unsigned)(known & 0xffffffffu));
            s_mx = s_imx >= 0 && s_imx < V ? __ldcg(logits + s_imx) : NAN;
        }
        __syncthreads();
        skip = isfinite(s_mx);  // (block-uniform)
    }
    int nan = 0;
    if (!skip) {
        unsigned long long best = 0;
        for (int b = 0; b < V4; b += SAMP_U * NT) {
            float4 v[SAMP_U];
#pragma unroll
            for (int u = 0; u < SAMP_U; u++) v[u] = samp_ld4(logits, b + u * NT + tid, V, vec, -INFINITY);
#pragma unroll
            for (int u = 0; u < SAMP_U; u++)
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const int i = 4 * (b + u * NT + tid) + c;
                    const float x = samp_at(v[u], c);
                    if (i >= V) continue;
                    if (x != x) nan = 1;
                    unsigned k = __float_as_uint(x);
                    k = (k & 0x80000000u) ? ~k : (k | 0x80000000u);
                    const unsigned long long key = ((unsigned long long)k << 32) | (0xffffffffu - (unsigned)i);
                    if (key > best) best = key;
                }
        }
        for (int o = 16; o > 0; o >>= 1) {
            const unsigned long long v = __shfl_xor_sync(0xffffffffu, best, o);
            if (v > best) best = v;
        }
        nan = __syncthreads_or(nan);
        if (tid == 0) s_best = 0ull;
        __syncthreads();
        if ((tid & 31) == 0) atomicMax(&s_best, best);
        __syncthreads();
        if (tid == 0) {
            s_imx = (int)(0xffffffffu - (unsigned)(s_best & 0xffffffffu));
            s_mx = __ldcg(logits + s_imx);
        }
        __syncthreads();
    }
    if (din) __syncthreads();  // (s_mx, s_imx)
    const float mx = s_mx;
    const int imx = s_imx;
    if (nan || mx == -INFINITY) return -1;
    if (P.s_temp == 0.0f || mx == INFINITY) return imx;
    SAMP_MARK(2);
    // 3. p_i = exp((l_i - max) / T), into P.probs (in: there already)
    float *p = P.probs;
    const float inv_t = 1.0f / P.s_temp;
    for (int b = 0; b < (din ? 0 : V4); b += SAMP_U * NT) {
        float4 v[SAMP_U];
#pragma unroll
        for (int u = 0; u < SAMP_U; u++) v[u] = samp_ld4(logits, b + u * NT + tid, V, vec, -INFINITY);
#pragma unroll
        for (int u = 0; u < SAMP_U; u++) {
            const int j = b + u * NT + tid;
            if (4 * j >= V) continue;
            const float4 e = make_float4(expf((v[u].x - mx) * inv_t), expf((v[u].y - mx) * inv_t),
                                         expf((v[u].z - mx) * inv_t), expf((v[u].w - mx) * inv_t));
            if (e.x != e.x || e.y != e.y || e.z != e.z || e.w != e.w) nan = 1;  // (a NaN logit)
            if (vec) {
                reinterpret_cast<float4 *>(p)[j] = e;
            } else {
#pragma unroll
                for (int c = 0; c < 4; c++)
                    if (4 * j + c < V) p[4 * j + c] = samp_at(e, c);
            }
        }
    }
    __threadfence_block();
    if (__syncthreads_or(nan)) return -1;  // (the max pass was skipped: a NaN logit)
    SAMP_MARK(3);
    const int k = P.s_top_k;
    const bool use_p = P.s_top_p < 1.0f, use_min = P.s_min_p > 0.0f;
    // per-thread contiguous chunks of a multiple of 4 elements (16-byte aligned in vec mode)
    const int chunk = (((V + NT - 1) / NT) + 3) & ~3, i0 = min(V, tid * chunk), i1 = min(V, i0 + chunk);
    if (!(k > 0 && k < V)) {
        // temperature alone (the host keeps top-p/min-p without top-k): walk the vocabulary in id
        // order. Per-thread contiguous chunks, chunk sums in double, then the owning thread walks.
        double sum = 0.0;
        for (int a = i0; a < i1; a += 4 * SAMP_U) {  // element order within the chunk, SAMP_U loads in flight
            float4 v[SAMP_U];
#pragma unroll
            for (int u = 0; u < SAMP_U; u++) v[u] = samp_ld4(p, (a >> 2) + u, i1, vec, 0.0f);
#pragma unroll
            for (int u = 0; u < SAMP_U; u++)
#pragma unroll
                for (int c = 0; c < 4; c++) sum += samp_at(v[u], c);
        }
        dsc[tid] = sum;
        __syncthreads();
        if (tid == 0) {
            double tot = 0.0;
            for (int t = 0; t < NT; t++) tot += dsc[t];
            const double r = (double)samp_rand(P.rng) * tot;
            double c = 0.0;
            int tok = imx, t = 0;
            for (; t < NT; t++) {
                if (c + dsc[t] > r) break;
                c += dsc[t];
            }
            int last = imx;
            bool found = false;
            for (int tt = t; tt < NT && !found; tt++) {
                const int a = min(V, tt * chunk), b = min(V, a + chunk);
                for (int a4 = a; a4 < b && !found; a4 += 4 * SAMP_U) {  // loads ahead of the walk
                    float4 v[SAMP_U];
#pragma unroll
                    for (int u = 0; u < SAMP_U; u++) v[u] = samp_ld4(p, (a4 >> 2) + u, b, vec, 0.0f);
                    for (int e = 0; e < 4 * SAMP_U && a4 + e < b; e++) {
                        const float q = samp_at(v[e >> 2], e & 3);
                        if (q <= 0.0f) continue;
                        c += q;
                        last = a4 + e;
                        if (c > r) {
                            tok = a4 + e;
                            found = true;
                            break;
                        }
                    }
                }
            }
            s_tok = found ? tok : last;
        }
        __syncthreads();
        SAMP_MARK(4);
        SAMP_MARK(5);
        SAMP_MARK(6);
        SAMP_MARK(7);
        SAMP_PRINT("temp");
        return s_tok;
    }
    // 4. top-k: the k-th largest p by radix select on its bits (p >= 0: bits order as values)
    if (tid == 0) {
        s_prefix = 0;
        s_need = k;
    }
    // quick: after the first pass, when the values in the k-th largest one's top byte and above are
    // at most SAMPLE_QUICK, those candidates are gathered and the k-th is found among them in shared
    // memory, instead of three more passes over the vocabulary (each ~70 us, run 90)
    bool quick = false;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = tid; b < 256; b += NT) hist[b] = 0;
        __syncthreads();
        const unsigned pre = s_prefix, hmask = shift == 24 ? 0u : ~0u << (shift + 8);
        // Bin 0 is never read (the choice below ends there by default), so it is not counted: most
        // of a vocabulary's p share a few high-order bytes, and shared-memory atomics on one
        // address from many lanes serialise; the lanes of a warp that share a bin add once.
        for (int b = 0; b < V4; b += SAMP_U * NT) {  // the same trip count in every lane (warp votes)
            float4 v[SAMP_U];
#pragma unroll
            for (int u = 0; u < SAMP_U; u++) v[u] = samp_ld4(p, b + u * NT + tid, V, vec, 0.0f);
#pragma unroll
            for (int u = 0; u < SAMP_U; u++)
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const unsigned x = __float_as_uint(samp_at(v[u], c));  // (out of range: 0, never counted)
                    const unsigned bin = (x >> shift) & 255u;
                    const bool in = (x & hmask) == (pre & hmask) && bin != 0u;
                    const unsigned act = __ballot_sync(0xffffffffu, in);
                    if (in) {
                        const unsigned peers = __match_any_sync(act, bin);
                        if ((threadIdx.x & 31) == (unsigned)(__ffs(peers) - 1)) atomicAdd(hist + bin, __popc(peers));
                    }
                }
        }
        __syncthreads();
        if (tid == 0) {
            int need = s_need, b = 255, cand = 0;
            for (; b > 0; b--) {
                cand += hist[b];
                if (hist[b] >= need) break;
                need -= hist[b];
            }
            s_need = need;
            s_prefix = pre | ((unsigned)b << shift);
            s_cand = b > 0 ? cand : SAMPLE_MAXK + 1;  // (bin 0 is not counted)
        }
        __syncthreads();
        if (shift == 24 && s_cand <= SAMPLE_QUICK) {  // (block-uniform)
            quick = true;
            break;
        }
    }
    // gathered: p >= thr, which is the k-th largest p, or (quick) the lower edge of its top byte
    const float thr = __uint_as_float(s_prefix);
    float kth = thr;
    SAMP_MARK(4);
    // survivors p >= kth, in id order. Usually few (k plus ties): gathered in any order by a
    // coalesced pass, then placed by rank of id; past SAMPLE_MAXK (ties at kth) the first
    // SAMPLE_MAXK in id order are kept, by an ordered compaction over per-thread chunks
    int m;
    if (tid == 0) s_m = 0, s_surv = 0, s_kth = thr;
    __syncthreads();
    {
        const int *cand = din ? din->cid : nullptr;           // (din) index -> id
        int *gid = sorted;                                    // (SAMPLE_MAXK) gathered ids
        float *gp = reinterpret_cast<float *>(kept);          // (SAMPLE_MAXK) and their p
        for (int b = 0; b < V4; b += SAMP_U * NT) {  // (warp-uniform trip count, as above)
            float4 v[SAMP_U];
#pragma unroll
            for (int u = 0; u < SAMP_U; u++) v[u] = samp_ld4(p, b + u * NT + tid, V, vec, -1.0f);
#pragma unroll
            for (int u = 0; u < SAMP_U; u++)
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const float x = samp_at(v[u], c);  // (out of range: -1, below any thr >= 0)
                    const bool in = x >= thr;
                    const unsigned act = __ballot_sync(0xffffffffu, in);
                    if (!act) continue;
                    int base = 0;
                    if ((threadIdx.x & 31) == (unsigned)(__ffs(act) - 1)) base = atomicAdd(&s_m, __popc(act));
                    base = __shfl_sync(0xffffffffu, base, __ffs(act) - 1);
                    const int slot = base + __popc(act & ((1u << (threadIdx.x & 31)) - 1u));
                    if (in && slot < SAMPLE_MAXK) {
                        const int ix = 4 * (b + u * NT + tid) + c;
                        gid[slot] = cand ? __ldcg(cand + ix) : ix, gp[slot] = x;
                    }
                }
        }
        __syncthreads();
        m = s_m;
        if (quick) {
            // the k-th largest among the m candidates (every p above it is one of them): the value
            // with fewer than k above it and at least k at or above it, written by its first holder
            for (int a = tid; a < m; a += NT) {
                int gt = 0, ge = 0, before = 0;
                for (int b = 0; b < m; b++) {
                    gt += gp[b] > gp[a];
                    ge += gp[b] >= gp[a];
                    before += b < a && gp[b] == gp[a];
                }
                if (gt < k && k <= ge && !before) s_kth = gp[a];
            }
            __syncthreads();
            kth = s_kth;
        }
        if (m <= SAMPLE_MAXK) {  // survivors (p >= kth) placed by rank of id
            int cnt = 0;
            for (int a = tid; a < m; a += NT) {
                if (gp[a] < kth) continue;
                int r = 0;
                for (int b = 0; b < m; b++) r += gp[b] >= kth && gid[b] < gid[a];
                sidx[r] = gid[a];
                sp[r] = gp[a];
                cnt++;
            }
            atomicAdd(&s_surv, cnt);
        }
        __syncthreads();
        if (m <= SAMPLE_MAXK) m = s_surv;
    }
    if (m > SAMPLE_MAXK) {
        int cnt = 0;
        for (int i = i0; i < i1; i++) cnt += p[i] >= kth;
        int off = samp_scan(cnt, sc, &m);
        for (int i = i0; i < i1; i++)
            if (p[i] >= kth) {
                if (off < SAMPLE_MAXK) {
                    sidx[off] = din ? __ldcg(din->cid + i) : i;
                    sp[off] = p[i];
                }
                off++;
            }
        m = SAMPLE_MAXK;
        __syncthreads();
    }
    if (din) {
        // exact only if no left-out logit reaches the k-th largest p (p is monotone in the logit; a
        // left-out p of 0 never matters: such survivors add no mass and are never drawn)
        bool out = false;
        for (int b = tid; b < din->nb; b += NT) {
            const unsigned xk = __ldcg(din->xk + b);
            if (!xk) continue;
            const float pe = expf((samp_unkey(xk) - mx) * inv_t);
            if (!(pe < kth) && pe != 0.0f) out = true;
        }
        if (__syncthreads_or(out)) return -3;
    }
    SAMP_MARK(5);
    int *order = sidx;  // current survivor order
    if (use_p) {
        // rank sort (descending p, lower id first), then keep the smallest prefix reaching top_p
        for (int a = tid; a < m; a += NT) {
            int r = 0;
            for (int b = 0; b < m; b++) r += samp_before(sp[b], sidx[b], sp[a], sidx[a]);
            sorted[r] = a;  // position -> survivor slot
        }
        __syncthreads();
        if (tid == 0) {
            double tot = 0.0;
            for (int i = 0; i < m; i++) tot += sp[i];
            const double target = (double)P.s_top_p * tot;
            double before = 0.0;
            int keep = 0;
            while (keep < m && (keep == 0 || before < target)) before += sp[sorted[keep++]];
            // rewrite sorted[] as survivor slots in rank order, keep entries
            s_m = keep;
        }
        __syncthreads();
        m = s_m;
        order = sorted;  // entries are slots into sidx/sp
    }
    SAMP_MARK(6);
    if (tid == 0) {
        // 6. min-p, 7. the walk (sequential: at most SAMPLE_MAXK survivors)
        const bool slots = use_p;
        int j = 0;
        for (int i = 0; i < m; i++) {
            const int slot = slots ? order[i] : i;
            if (!use_min || sp[slot] >= P.s_min_p) kept[j++] = slot;
        }
        double tot = 0.0;
        for (int i = 0; i < j; i++) tot += sp[kept[i]];
        const double r = (double)samp_rand(P.rng) * tot;
        double c = 0.0;
        int last = j > 0 ? sidx[kept[0]] : imx, tok = -2;
        for (int i = 0; i < j; i++) {
            const float q = sp[kept[i]];
            if (q <= 0.0f) continue;
            c += q;
            last = sidx[kept[i]];
            if (c > r) {
                tok = last;
                break;
            }
        }
        s_tok = tok == -2 ? last : tok;
    }
    __syncthreads();
    SAMP_MARK(7);
    SAMP_PRINT("top-k");
    return s_tok;
}

// The distributed top-k, part 1, in every lm_head block after its rows' logits (lo[r0, r1), written
// by this block): the penalty for the window's ids among those rows (as sample_block's step 1; the
// rows are this block's alone), then the candidates: the block's k-th largest logit T (a radix select
// on order keys, a bit at a time; every logit of the global top k is at least its block's T), and the
// logits >= T (k plus ties) with their ids, in id order, into dk_l / dk_i (more than DK_CMAX, a NaN, or
// more than DK_E rows a thread: dk_n = -1, the last block runs the whole-vocabulary path). dk_x: the
// largest logit left out, for sample_block's exactness check. Ends with __syncthreads.
static __device__ __noinline__ void samp_cands(const Params &P, float *lo, int r0, int r1, int nh) {
    __shared__ int s_sc[NT];
    __shared__ int s_wc[2][NT / 32];
    __shared__ unsigned s_x;
    const int tid = threadIdx.x, b = blockIdx.x, n = r1 - r0, k = P.s_top_k, E = (n + NT - 1) / NT;
    if (tid == 0) s_x = 0u;
    samp_penalty(P, lo, nh, r0, r1);
    __syncthreads();  // (s_x)
    if (E > DK_E) {  // (block-uniform)
        if (tid == 0) P.dk_n[b] = -1;
        __syncthreads();
        return;
    }
    // thread t holds rows r0 + t E + j (j < E): contiguous, so the candidates come out in id order
    unsigned key[DK_E];
    int bad = 0;
#pragma unroll
    for (int j = 0; j < DK_E; j++) {
        const int i = tid * E + j;
        key[j] = 0u;  // (no row: below every float's key)
        if (j < E && i < n) {
            const float x = __ldcg(lo + r0 + i);
            bad |= x != x;
            key[j] = samp_key(x);
        }
    }
    // the block's k-th largest key, a bit at a time: each warp counts the keys that match the prefix
    // with this bit set, the block adds the warps' counts (two count slots, one barrier a bit)
    unsigned pre = 0u;
    int need = k;
    for (int bit = 31; bit >= 0; bit--) {
        const unsigned mask = ~0u << bit, want = pre | (1u << bit);
        int c = 0;
#pragma unroll
        for (int j = 0; j < DK_E; j++) c += (key[j] & mask) == want;
        c = (int)__reduce_add_sync(0xffffffffu, (unsigned)c);
        if ((tid & 31) == 0) s_wc[bit & 1][tid >> 5] = c;
        __syncthreads();
        int tc = 0;
#pragma unroll
        for (int w = 0; w < NT / 32; w++) tc += s_wc[bit & 1][w];
        if (tc >= need) pre = want;
        else need -= tc;
    }
    // (a block with fewer than k rows ends at 0: all of its rows are candidates)
    bad = __syncthreads_or(bad);
    const unsigned T = pre;
    int c = 0;
    unsigned xk = 0u;
#pragma unroll
    for (int j = 0; j < DK_E; j++)
        if (key[j]) {
            if (key[j] >= T) c++;
            else xk = max(xk, key[j]);
        }
    xk = __reduce_max_sync(0xffffffffu, xk);
    if ((tid & 31) == 0 && xk) atomicMax(&s_x, xk);
    int tot;
    int off = samp_scan(c, s_sc, &tot);  // (its __syncthreads also publish s_x)
    if (bad || tot > DK_CMAX) {
        if (tid == 0) P.dk_n[b] = -1;
        __syncthreads();
        return;
    }
    float *dl = P.dk_l + (size_t)b * DK_CMAX;
    int *di = P.dk_i + (size_t)b * DK_CMAX;
#pragma unroll
    for (int j = 0; j < DK_E; j++)
        if (key[j] && key[j] >= T) {
            dl[off] = samp_unkey(key[j]);
            di[off] = r0 + tid * E + j;
            off++;
        }
    if (tid == 0) P.dk_n[b] = tot, P.dk_x[b] = s_x;
    __threadfence();  // (before the caller's arrival on the lm_head counter)
    __syncthreads();
}

// The distributed top-k, part 2, in the last lm_head block: the nb blocks' candidates in one compact
// list (id order; logits then p in P.probs, ids in dk_c), their maximum (the vocabulary's: it is its
// block's largest, always a candidate), then sample_block's top-k, top-p, min-p and walk over them.
// Returns the token, -1 as sample_block, or -3: the whole-vocabulary path must decide (a block offered
// too many candidates or saw a NaN, or a left-out logit could tie the k-th largest p).
static __device__ __noinline__ int sample_dk(const Params &P, float *sm, int nh, int nb) {
    const int tid = threadIdx.x, lane = tid & 31;
    int *sc = reinterpret_cast<int *>(sm);  // (NT) scan scratch
    int *boff = sc + NT;                    // (NT) each block's first compact slot
    __shared__ unsigned long long s_b;
    const int c = tid < nb ? __ldcg(P.dk_n + tid) : 0;
    if (__syncthreads_or(c < 0)) return -3;
    int M;
    boff[tid] = samp_scan(c, sc, &M);
    if (tid == 0) s_b = 0ull;
    __syncthreads();
    // the compact list, flattened: candidate m of the union is slot m - boff[b] of the last block b with
    // boff[b] <= m (that block is not empty: m < boff[b + 1]); each thread's loads for 4 candidates issue
    // together, so the list costs ~M / (4 NT) L2 round trips instead of a warp's blocks one after another
    // (session 32: the last block's tail ~40 us a sampled token). The logits wait in shared memory for
    // the exp pass when they fit (xs, after sc and boff), else in P.probs.
    float *xs = reinterpret_cast<float *>(boff + NT);
    const bool inshm = M <= SAMPLE_SMEM_WORDS - 2 * NT;
    unsigned long long best = 0ull;
    for (int m0 = 0; m0 < M; m0 += 4 * NT) {
        float x[4];
        int id[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int m = m0 + u * NT + tid;
            x[u] = 0.0f, id[u] = 0;
            if (m < M) {
                int lo = 0, hi = nb - 1;
                while (lo < hi) {
                    const int mid = (lo + hi + 1) >> 1;
                    if (boff[mid] <= m) lo = mid;
                    else hi = mid - 1;
                }
                const size_t e = (size_t)lo * DK_CMAX + (m - boff[lo]);
                x[u] = __ldcg(P.dk_l + e);
                id[u] = __ldcg(P.dk_i + e);
            }
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int m = m0 + u * NT + tid;
            if (m >= M) continue;
            if (inshm) xs[m] = x[u];
            else P.probs[m] = x[u];
            P.dk_c[m] = id[u];
            const unsigned long long key = ((unsigned long long)samp_key(x[u]) << 32) | (0xffffffffu - (unsigned)id[u]);
            if (key > best) best = key;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long v = __shfl_xor_sync(0xffffffffu, best, o);
        if (v > best) best = v;
    }
    if (lane == 0 && best) atomicMax(&s_b, best);
    __threadfence_block();
    __syncthreads();
    SampIn in;
    in.M = M, in.cid = P.dk_c, in.xk = P.dk_x, in.nb = nb;
    in.imx = (int)(0xffffffffu - (unsigned)(s_b & 0xffffffffu));
    in.mx = samp_unkey((unsigned)(s_b >> 32));
    if (in.mx == -INFINITY) return -1;  // (every logit -inf; s_b is never 0: k >= 1 candidates)
    if (in.mx == INFINITY) return in.imx;
    const float inv_t = 1.0f / P.s_temp;
    for (int j = tid; j < M; j += NT) P.probs[j] = expf(((inshm ? xs[j] : __ldcg(P.probs + j)) - in.mx) * inv_t);
    __threadfence_block();
    __syncthreads();
    return sample_block(P, nullptr, sm, nh, 0ull, 1, &in);
}

}  // namespace mqk

#endif
