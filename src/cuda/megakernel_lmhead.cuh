// megakernel_lmhead.cuh: the decode megakernel's final norm + lm_head with the fused argmax.
// Or device sampling; the rows stream through matvec or through a shared-memory ring of bulk copies.
// Part of the decode megakernel's one translation unit (megakernel.cu includes it); namespace mqk.
#ifndef MQ_MEGAKERNEL_LMHEAD_CUH
#define MQ_MEGAKERNEL_LMHEAD_CUH
#include "megakernel_core.cuh"
#include "sample.cuh"

namespace mqk {

// ---- lm_head through a shared-memory ring (decode_df, MQ_CUDA_LMRING): the block's row slice of
// the lm_head is cut into chunks of `rows` rows; thread 0 keeps ns chunks in flight into ns slots
// with bulk copies (one mbarrier per slot), all warps reduce a landed chunk, then (after a
// __syncthreads) its slot is refilled with the chunk ns further on. The copies of the first ns
// chunks start before the block waits for the last layer (weights do not depend on x), so ~ns x
// 32 KB per SM are in flight instead of the ~16 KB of the streamed matvec's loads and prefetches.
// The ring's state lives in shared memory (LmShared) and its place is derived from P and sm, so
// decode_df keeps nothing of it in registers across the layers.
struct LmRing {      // a thread's copy of the ring state (the same in every thread)
    unsigned phase;  // bit s: the parity slot s's next completion flips to
    unsigned pend;   // bit s: a copy into slot s is in flight
    int nch;         // chunks of this step's slice (0: not primed: the streamed matvec)
};

struct LmShared {
    unsigned long long mb[LM_MAXNS];  // one mbarrier per slot
    LmRing st;  // written by thread 0 only, after every thread has read it (a __syncthreads between)
};

__device__ __forceinline__ LmShared &lm_shared() {
    __shared__ __align__(8) LmShared sh;
    return sh;
}

// Where the ring lives.
struct LmGeom {
    uint4 *slot;    // slot s at slot + s * rows * hidden / 8: (rows, hidden) bf16 each
    float *xs;      // (hidden) normed x, after the slots
    int rows, ns;   // rows per slot, slots (0: off)
    int r0, r1;     // this block's lm_head rows
};

// The ring from the DOWN weight buffer on (free during the lm_head; the next step's first copies
// go to buffer 0 before it): buffer 1 and the spare region after it, over sm and past it into the
// dynamic shared memory the host sized for it (gpu.cu). sm: the stage vectors, which follow those.
__device__ __forceinline__ LmGeom lm_geom(const Params &P, float *sm) {
    LmGeom g;
    g.rows = P.lmring;
    g.ns = P.lmring > 0 && P.lmns >= 2 ? min(P.lmns, LM_MAXNS) : 0;
    g.slot = reinterpret_cast<uint4 *>(reinterpret_cast<unsigned char *>(sm) -
                                       ((size_t)P.wbuf1 + P.kvbuf));
    g.xs = reinterpret_cast<float *>(g.slot + (size_t)g.ns * g.rows * (P.hidden / 8));
    block_rows(P.vocab, blockIdx.x, gridDim.x, g.r0, g.r1);
    return g;
}

// Chunk k of the slice into slot k % ns (all threads call; thread 0, or 32 with OPT_ISSW, issues).
__device__ __forceinline__ void lm_ring_issue(const Params &P, const LmGeom &g, LmRing &R, int k) {
    const int s = k % g.ns, c0 = g.r0 + k * g.rows, c1 = min(g.r1, c0 + g.rows);
    const size_t n8 = (size_t)P.hidden / 8;
    if ((int)threadIdx.x == ((P.opt & OPT_ISSW) && NT > 32 ? 32 : 0))
        bulk_g2s(smem_u32(g.slot + (size_t)s * g.rows * n8), P.lm_head + (size_t)c0 * P.hidden,
                 (size_t)(c1 - c0) * P.hidden * 2, smem_u32(lm_shared().mb + s));
    R.pend |= 1u << s;
}

// Wait until slot s's copy has landed (all threads; no-op when none is in flight).
__device__ __forceinline__ void lm_ring_wait(LmRing &R, int s) {
    if (!(R.pend >> s & 1u)) return;
    mb_wait(smem_u32(lm_shared().mb + s), R.phase >> s & 1u);
    R.phase ^= 1u << s;
    R.pend &= ~(1u << s);
}

// Thread 0: the ring's mbarriers and state (before the kernel's first __syncthreads).
__device__ __forceinline__ void lm_ring_init(const Params &P) {
    LmShared &sh = lm_shared();
    sh.st.phase = sh.st.pend = 0;
    sh.st.nch = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const int ns = P.lmring > 0 && P.lmns >= 2 ? min(P.lmns, LM_MAXNS) : 0;
    for (int k = 0; k < ns; k++)
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(sh.mb + k)) : "memory");
    if (ns) asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#else
    (void)P;
#endif
}

// Start the first ns chunks of this block's lm_head slice (all threads, before the wait for the
// last layer). The slots must be free: their last readers (the last layer's DOWN weights in its
// buffer, stage vectors) are this block's, done before the __syncthreads here. A slice of fewer
// rows than warps (matvec splits its rows across warps then) or a device without bulk copies
// keeps the streamed matvec (nch stays 0: the same for every step).
__device__ __noinline__ void lm_ring_prime(const Params &P, float *sm) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const LmGeom g = lm_geom(P, sm);
    if (g.ns < 2 || g.r1 - g.r0 < NW) return;
    LmRing R = lm_shared().st;
    __syncthreads();
    R.nch = (g.r1 - g.r0 + g.rows - 1) / g.rows;
    for (int k = 0; k < g.ns && k < R.nch; k++) lm_ring_issue(P, g, R, k);
    if (threadIdx.x == 0) lm_shared().st = R;  // read after the caller's next __syncthreads (df_wait)
#else
    (void)P, (void)sm;
#endif
}

// No copy may still be writing shared memory when the block exits (a stop token ends a step early).
__device__ __noinline__ void lm_ring_drain(const Params &P) {
    LmRing R = lm_shared().st;
    if (!R.pend) return;
    const int ns = min(P.lmns, LM_MAXNS);
    for (int s = 0; s < ns; s++) lm_ring_wait(R, s);
}

// The lm_head rows of the primed slice through the ring: logits into lo, the block's best (logit
// key, ~index) into *best, exactly as matvec<MV_LOGITS> computes them for the same rows (the same
// per-row summation order as its register path mv_reg where matvec takes it, else as its streamed
// loop: bit-identical logits and argmax). NX > 0: hidden <= 256 * NX, and each lane keeps its
// 8 * NX floats of xs in registers (lane l reads the same columns l + 32 j of every row).
template <int NX>
__device__ __noinline__ void lm_ring_rows(const Params &P, const LmGeom &gr, LmRing &Rr, const float *xs, float *lo,
                                          unsigned long long *best) {
    const LmGeom g = gr;  // in registers (lo's stores could alias the references for all the compiler knows)
    LmRing R = Rr;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n8 = P.hidden >> 3;
    // matvec's choice for these rows (KS == 1): mv_reg's order, or the streamed loop's
    const bool mvreg = (P.opt & OPT_REGX) && g.r1 - g.r0 >= 2 * NW && n8 == 128 && NX == 4;
    const size_t slot8 = (size_t)g.rows * n8;  // uint4 per slot
    float xr[NX > 0 ? NX : 1][8];
#pragma unroll
    for (int j = 0; j < NX; j++) {
        const int i = lane + 32 * j;
        const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
        const float4 a = i < n8 ? *reinterpret_cast<const float4 *>(xs + 8 * i) : z;
        const float4 b = i < n8 ? *reinterpret_cast<const float4 *>(xs + 8 * i + 4) : z;
        xr[j][0] = a.x, xr[j][1] = a.y, xr[j][2] = a.z, xr[j][3] = a.w;
        xr[j][4] = b.x, xr[j][5] = b.y, xr[j][6] = b.z, xr[j][7] = b.w;
    }
    unsigned long long mybest = 0;
    for (int k = 0; k < R.nch; k++) {
        const int s = k % g.ns, c0 = g.r0 + k * g.rows, c1 = min(g.r1, c0 + g.rows);
        lm_ring_wait(R, s);
        const uint4 *w = g.slot + (size_t)s * slot8;
        int row = c0 + warp;
        if constexpr (NX == 4) {  // two rows together where matvec takes mv_reg's groups (the same sums)
            auto emit = [&](int rw, float v) {
                if (lane == 0) lo[rw] = v;
                const unsigned long long kb = lm_key(v, rw);
                if (kb > mybest) mybest = kb;
            };
            if (mvreg && s_mvr >= 2)
                for (; row + NW < c1; row += 2 * NW)
                    mv_group<NX, 2>(nullptr, P.hidden, xr, c0, row - c0, w, 0, c1 - c0, emit);
        }
        for (; row < c1; row += NW) {
            const uint4 *wr = w + (size_t)(row - c0) * n8;
            float acc0 = 0.0f, acc1 = 0.0f;
            if (NX > 0 && mvreg) {
                // mv_reg's order: even pieces into acc0, odd ones into acc1 (n8 == 32 * NX)
#pragma unroll
                for (int j = 0; j < NX; j += 2) {
                    acc0 += dot8r(wr[lane + 32 * j], xr[j]);
                    if (j + 1 < NX) acc1 += dot8r(wr[lane + 32 * (j + 1)], xr[j + 1]);
                }
            } else if (NX > 0) {
                // the streamed loop's order: groups of 4 pieces (j..j+3) while all 4 exist, then one by one
                int jt = 0;
#pragma unroll
                for (int j = 0; j + 3 < NX; j += 4)
                    if (lane + 32 * (j + 3) < n8) {
                        const int i = lane + 32 * j;
                        const uint4 a = wr[i], b = wr[i + 32], c = wr[i + 64], d = wr[i + 96];
                        acc0 += dot8r(a, xr[j]) + dot8r(c, xr[j + 2]);
                        acc1 += dot8r(b, xr[j + 1]) + dot8r(d, xr[j + 3]);
                        jt = j + 4;
                    }
#pragma unroll
                for (int j = 0; j < NX; j++)
                    if (j >= jt && lane + 32 * j < n8) acc0 += dot8r(wr[lane + 32 * j], xr[j]);
            } else {
                int i = lane;
                for (; i + 96 < n8; i += 128) {
                    const uint4 a = wr[i], b = wr[i + 32], c = wr[i + 64], d = wr[i + 96];
                    acc0 += dot8(a, xs + 8 * i) + dot8(c, xs + 8 * (i + 64));
                    acc1 += dot8(b, xs + 8 * (i + 32)) + dot8(d, xs + 8 * (i + 96));
                }
                for (; i < n8; i += 32) acc0 += dot8(wr[i], xs + 8 * i);
            }
            const float acc = warp_sum(acc0 + acc1);
            if (lane == 0) lo[row] = acc;
            const unsigned long long kb = lm_key(acc, row);
            if (kb > mybest) mybest = kb;
        }
        __syncthreads();  // every warp is done with slot s
        if (k + g.ns < R.nch) lm_ring_issue(P, g, R, k + g.ns);
    }
    Rr = R;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long v = __shfl_xor_sync(0xffffffffu, mybest, o);
        if (v > mybest) mybest = v;
    }
    if (lane == 0 && mybest) atomicMax(best, mybest);
}

// Final norm + lm_head rows of this block with a fused argmax; the last block to finish reduces the
// per-block bests, picks the token (argmax or device sampling), records it and, when another step
// follows, embeds it into x. Returns true in that last block. stamp: where to record the time this
// block finished its rows (profile), or NULL. RING (decode_df): the rows come through the lm_head
// ring when lm_ring_prime started it for this step (else, and always in decode_kernel, they stream
// through matvec with an L2 prefetch).
template <bool RING = false>
__device__ __noinline__ bool lm_step(const Params &P, int step, bool more, float *sm, float *red,
                                     unsigned long long *stamp) {
    __shared__ unsigned long long s_best;
    __shared__ int s_last;
    const int H = P.hidden;
    LmRing R = {0u, 0u, 0};
    if (RING) R = lm_shared().st;  // written by lm_ring_prime before the caller's df_wait (__syncthreads)
    LmGeom g;
    if (R.nch > 0) g = lm_geom(P, sm);
    float *xs = R.nch > 0 ? g.xs : sm;  // the ring's slots may cover sm
    load_norm(P.x, P.final_norm, H, P.eps, xs, red, (P.opt & OPT_NORMW) != 0);
    if (threadIdx.x == 0) s_best = 0;
    __syncthreads();
    float *lo = P.logits + (P.logits_all ? (size_t)step * P.vocab : 0);
    if (R.nch > 0) {
        const int n8 = H >> 3;
        if (n8 <= 32 * 4) lm_ring_rows<4>(P, g, R, xs, lo, &s_best);
        else if (n8 <= 32 * 8) lm_ring_rows<8>(P, g, R, xs, lo, &s_best);
        else lm_ring_rows<0>(P, g, R, xs, lo, &s_best);
        R.nch = 0;  // consumed: every copy has landed (pend == 0)
        if (threadIdx.x == 0) lm_shared().st = R;  // all threads read st before the chunks' __syncthreads
    } else {
        matvec<MV_LOGITS>(P.lm_head, P.vocab, H, sm, lo, red, &s_best, nullptr, -1, -1, nullptr, P.lmpf, nullptr,
                          (P.opt & OPT_REGX) != 0);
    }
    __syncthreads();
    // sampling with a small top-k: this block's candidates (sample.cuh's distributed top-k)
    const bool dk = P.samp && P.dk && P.s_temp != 0.0f && P.s_top_k >= 1 && P.s_top_k <= DK_MAXK && gridDim.x <= NT;
    if (dk) {
        int r0, r1;
        block_rows(P.vocab, blockIdx.x, gridDim.x, r0, r1);
        samp_cands(P, lo, r0, r1, P.n_hist + step);
    }
    if (threadIdx.x == 0) {
        if (stamp) *stamp = globaltimer();
        P.best[blockIdx.x] = s_best;
        __threadfence();
        const unsigned old = atomicAdd(P.lm_cnt, 1u);
        s_last = old == gridDim.x - 1;
        if (s_last) __threadfence();
    }
    __syncthreads();
    if (!s_last) return false;
    // MQ_CUDA_PROFILE: the last block's tail (gpu.cu's lm_tail_profile)
    unsigned long long *lt = P.sprof && step < 16 && threadIdx.x == 0 ? P.sprof + 64 + 8 * step : nullptr;
    if (lt) lt[0] = globaltimer();
    // reduce the per-block bests (max key = max logit, lowest index on ties)
    unsigned long long b = 0;
    for (int i = threadIdx.x; i < (int)gridDim.x; i += NT) {
        unsigned long long v = __ldcg(P.best + i);
        if (v > b) b = v;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        unsigned long long v = __shfl_xor_sync(0xffffffffu, b, o);
        if (v > b) b = v;
    }
    if (threadIdx.x == 0) s_best = 0;
    __syncthreads();
    if ((threadIdx.x & 31) == 0 && b) atomicMax(&s_best, b);
    __syncthreads();
    int tok = s_best ? (int)(0xffffffffu - (unsigned)(s_best & 0xffffffffu)) : 0;
    if (lt) lt[1] = globaltimer();
    // sampling: the window is the host's n_hist ids plus the tokens this launch fed since
    if (P.samp) {  // -1: NaN / all -inf logits: stop
        tok = dk ? sample_dk(P, sm, P.n_hist + step, (int)gridDim.x) : -3;
        if (tok == -3) tok = sample_block(P, lo, sm, P.n_hist + step, s_best, dk ? 1 : 0);
    }
    bool stop = tok < 0;
    if (!P.ids)
        for (int i = 0; i < P.n_stop; i++) stop |= P.stop[i] == tok;
    if (threadIdx.x == 0) {
        // the token the next step feeds joins its penalty window (published with the embedding:
        // the caller's arrival releases both)
        if (P.samp && more && !stop) P.hist[P.n_hist + step] = tok;
        P.tokens[step] = tok;
        *P.lm_cnt = 0;
        P.ctl[1] = step + 1;  // steps done
        if (stop) P.ctl[0] = 1;
    }
    if (lt) lt[2] = globaltimer();
    if (more && !stop) embed(P, P.ids ? P.ids[step + 1] : tok);
    if (P.sprof && step < 16) {  // (block-uniform)
        __syncthreads();
        if (lt) lt[3] = globaltimer();
    }
    return true;
}

}  // namespace mqk

#endif
