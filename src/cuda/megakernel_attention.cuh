// megakernel_attention.cuh: the decode megakernel's attention (flash-decoding items per kv head).
// q/k RMSNorm + RoPE head prep, the online-softmax pass over a chunk of positions, the
// chunk combine.
// Part of the decode megakernel's one translation unit (megakernel.cu includes it); namespace mqk.
#ifndef MQ_MEGAKERNEL_ATTENTION_CUH
#define MQ_MEGAKERNEL_ATTENTION_CUH
#include "megakernel_core.cuh"

namespace mqk {

// One warp: RMSNorm (if nw) and RoPE (if rope) of one head vector src (hd floats, global) into
// dst: shared-memory floats (dst_f) or the cache (dst_b, KT). tmp: hd floats of this warp's smem.
template <typename KT>
__device__ void head_prep(const Params &P, const float *src, const float *nw, bool rope, int pos, float *tmp,
                          float *dst_f, KT *dst_b) {
    const int lane = threadIdx.x & 31, hd = P.hd, half = hd >> 1;
    float ss = 0.0f;
    for (int d = lane; d < hd; d += 32) {
        float v = __ldcg(src + d);
        tmp[d] = v;
        ss += v * v;
    }
    ss = warp_sum(ss);
    const float r = 1.0f / sqrtf(ss / (float)hd + P.eps);
    if (nw)
        for (int d = lane; d < hd; d += 32) tmp[d] = __ldg(nw + d) * (tmp[d] * r);
    __syncwarp();
    if (rope) {
        for (int i = lane; i < half; i += 32) {
            // table made on the host as HF does: cos/sin of float32(pos * inv_freq)
            const float2 cs = __ldg(reinterpret_cast<const float2 *>(P.rope) + (size_t)pos * half + i);
            const float c = cs.x, s = cs.y;
            const float a = tmp[i], b = tmp[i + half];
            const float o0 = a * c - b * s, o1 = b * c + a * s;
            if (dst_f) {
                dst_f[i] = o0;
                dst_f[i + half] = o1;
            } else {
                st1(dst_b + i, o0);
                st1(dst_b + i + half, o1);
            }
        }
    } else {
        for (int d = lane; d < hd; d += 32) {
            if (dst_f) dst_f[d] = tmp[d];
            else st1(dst_b + d, tmp[d]);
        }
    }
    __syncwarp();
}

// head_prep for head_dim = 32 * E: lane l owns dims [l*E, l*E + E), so the RoPE partner of a dim
// (d +- hd/2) sits in lane l ^ 16; every load (the head's values, norm weights, cos/sin) is issued
// before any is used: one memory latency instead of one per loop trip.
template <int E, typename KT>
__device__ void head_prep_v(const Params &P, const float *src, const float *nw, bool rope, int pos, float *dst_f,
                            KT *dst_b) {
    const int lane = threadIdx.x & 31, half = 16 * E, d0 = lane * E;
    float v[E], w[E], c[E], sn[E];
#pragma unroll
    for (int j = 0; j < E; j++) {
        v[j] = __ldcg(src + d0 + j);
        w[j] = nw ? __ldg(nw + d0 + j) : 1.0f;
        if (rope) {
            const float2 cs = __ldg(reinterpret_cast<const float2 *>(P.rope) + (size_t)pos * half + (d0 + j) % half);
            c[j] = cs.x, sn[j] = cs.y;
        }
    }
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < E; j++) ss += v[j] * v[j];
    ss = warp_sum(ss);
    const float r = 1.0f / sqrtf(ss / (float)(32 * E) + P.eps);
#pragma unroll
    for (int j = 0; j < E; j++) {
        float y = nw ? w[j] * (v[j] * r) : v[j];
        if (rope) {
            const float p = __shfl_xor_sync(0xffffffffu, y, 16);
            y = lane < 16 ? y * c[j] - p * sn[j] : y * c[j] + p * sn[j];
        }
        if (dst_f) dst_f[d0 + j] = y;
        else st1(dst_b + d0 + j, y);
    }
}

// head_prep through the vectorized version when head_dim is 32, 64, 128 or 256.
template <typename KT>
__device__ void prep_head(const Params &P, const float *src, const float *nw, bool rope, int pos, float *tmp,
                          float *dst_f, KT *dst_b) {
    switch (P.hd) {
    case 32: head_prep_v<1, KT>(P, src, nw, rope, pos, dst_f, dst_b); break;
    case 64: head_prep_v<2, KT>(P, src, nw, rope, pos, dst_f, dst_b); break;
    case 128: head_prep_v<4, KT>(P, src, nw, rope, pos, dst_f, dst_b); break;
    case 256: head_prep_v<8, KT>(P, src, nw, rope, pos, dst_f, dst_b); break;
    default: head_prep<KT>(P, src, nw, rope, pos, tmp, dst_f, dst_b); break;
    }
    __syncwarp();
}

// Row 0 of kv head kvh of layer l in a K or V cache, head-major (n_layers, n_kv, max_ctx, hd): the
// head's row p at + p * hd, so its rows for consecutive positions are contiguous.
template <typename KT>
__device__ __forceinline__ KT *kv_rows(void *cache, const Params &P, int l, int kvh) {
    return static_cast<KT *>(cache) + ((size_t)l * P.nkv + (size_t)kvh) * (size_t)P.max_ctx * (size_t)P.hd;
}

// NR rows' update of one lane's online softmax for GS query heads at once (kf, vf: the rows' 8
// dims of K and V; valid: rows before the chunk's end, a prefix): the NR scores and their shuffle
// reductions are independent, then one maximum, one rescale of acc and NR + 1 exp2 per head. A row
// at a time (one max, two exp2 and a rescale per row, each row's update waiting for the last) made
// the loop latency bound: ~0.66 us per row group iteration at 8 warps per SM (run 81, 32K).
template <int GS, int NR>
__device__ __forceinline__ void att_rows(const float (&q)[GS][8], float (&m)[GS], float (&ls)[GS], float (&acc)[GS][8],
                                         const float (&kf)[NR][8], const float (&vf)[NR][8], const bool (&valid)[NR],
                                         int lpr) {
    float sc[NR][GS];
#pragma unroll
    for (int r = 0; r < NR; r++)
#pragma unroll
        for (int g = 0; g < GS; g++) {
            float s = 0.0f;
#pragma unroll
            for (int j = 0; j < 8; j++) s = fmaf(q[g][j], kf[r][j], s);
            sc[r][g] = s;
        }
    for (int o = lpr >> 1; o > 0; o >>= 1)
#pragma unroll
        for (int r = 0; r < NR; r++)
#pragma unroll
            for (int g = 0; g < GS; g++) sc[r][g] += __shfl_xor_sync(0xffffffffu, sc[r][g], o);
    if (!valid[0]) return;  // no row of this row group: nothing to add
#pragma unroll
    for (int g = 0; g < GS; g++) {
        float mn = m[g];
#pragma unroll
        for (int r = 0; r < NR; r++)
            if (valid[r]) mn = fmaxf(mn, sc[r][g]);
        const float corr = exp2f(m[g] - mn);  // m = -inf (nothing yet): 0; mn is finite
        float pe[NR], l = ls[g] * corr;
#pragma unroll
        for (int r = 0; r < NR; r++) {
            pe[r] = valid[r] ? exp2f(sc[r][g] - mn) : 0.0f;
            l += pe[r];
        }
        m[g] = mn;
        ls[g] = l;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float a = acc[g][j] * corr;
#pragma unroll
            for (int r = 0; r < NR; r++) a = fmaf(pe[r], vf[r][j], a);
            acc[g][j] = a;
        }
    }
}

// Online-softmax pass of one row-group layout over positions [p0, p1) for GS query heads
// (qs: GS x hd, smem). Lanes work in row groups of LPR lanes (LPR = hd/8 rounded up to a power of
// two): each lane holds 8 dims of a K/V row. GS is compile-time so the per-head accumulators stay
// in registers. Leaves the chunk's combined (m, l, acc) per head in out (GS x (hd+2), smem), with
// m in log2 units. K/V rows come from the cache (head-major: Kl is the kv head's row 0): row p at
// Kl + p * hd.
// R: rows per row group per loop trip, all loaded before any is used, so a chunk of up to
// R x (row groups) positions costs one memory latency (R = 2 took two trips for a 64-position
// chunk: 3.6 us of loop at pos 130, run 20). pm: NW x GS x (hd+2) floats of scratch.
// RING (decode_df, MQ_CUDA_ATTPIPE, sm_90): rows [p0, pe) come through the bulk-copy ring in
// ring0 / ring1 (see there), rows [pe, p1) from the cache (Kl, Vl: the kv head's row 0).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
// The K/V ring's state (att_pass, RING): slot s's mbarrier (full), and bit s = the phase parity its
// next use completes. Only the kernels that use them (decode_df<..., RING>) allocate them.
static __shared__ __align__(8) unsigned long long att_ring_mb[ATTPIPE_MAXNS];
static __shared__ unsigned att_ring_ph;

// Thread 0, once per launch, before the kernel's fence.mbarrier_init and __syncthreads.
__device__ __forceinline__ void att_ring_init() {
    for (int i = 0; i < ATTPIPE_MAXNS; i++)
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(att_ring_mb + i)) : "memory");
    att_ring_ph = 0;
}
#endif

template <int GS, int R, typename KT, bool RING = false>
__device__ void att_pass(const Params &P, const KT *Kl, const KT *Vl, int p0, int p1,
                         const float *qs, float *pm, float *out, unsigned char *ring0 = nullptr,
                         unsigned char *ring1 = nullptr, int pe = 0) {
    const int hd = P.hd, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t rs = (size_t)hd;  // row stride
    const int LPR = P.lpr, RPW = 32 / LPR;
    const int rg = lane / LPR, sub = lane % LPR, nrg = NW * RPW;
    const bool act = sub * 8 < hd;
    const float qscale = rsqrtf((float)hd) * 1.4426950408889634f;  // scores in log2 units
    float q[GS][8], m[GS], ls[GS], acc[GS][8];
#pragma unroll
    for (int g = 0; g < GS; g++) {
        m[g] = -INFINITY;
        ls[g] = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            q[g][j] = act ? qs[g * hd + sub * 8 + j] * qscale : 0.0f;
            acc[g][j] = 0.0f;
        }
    }
    // Trip counts must be warp-uniform: the score reduction shuffles across the whole warp, so a
    // row group past the end still runs the loop and only skips the update.
    const int span = nrg;  // positions one row of the block's row groups covers
    if constexpr (RING) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        // The K/V rows of positions [p0, pe) stream by the bulk copy engine through P.attns slots
        // of P.attslot bytes: P.attns0 in ring0 (decode_df's buffer 0, which holds no copy during
        // attention for blocks with an item), the rest in ring1 (the spare region, unused when
        // the chunk did not fit there). A slot holds rsl consecutive rows of K then the same rows of
        // V (two contiguous ranges of the head-major cache: two copies, issued by thread 0,
        // completing on the slot's mbarrier); the other slots are in flight while one is computed,
        // without registers; a __syncthreads after each slot, then thread 0 refills it (~0.4 us a
        // slot, run 81: so slots of 32-48 KB). Rows [pe, p1) (at most this step's position, which
        // this block's head prep wrote just before) come from the cache after the ring.
        unsigned long long *s_pmb = att_ring_mb;  // slot s full (initialised once per launch: att_ring_init)
        const unsigned rowb = (unsigned)hd * sizeof(KT);
        const size_t slotb = P.attslot;
        const int NS = P.attns, N0 = P.attns0;
        const int rsl = (int)(slotb / 2 / rowb);              // rows per slot (48 at hd 128, f32, 48 KB)
        const int nt = pe > p0 ? (pe - p0 + rsl - 1) / rsl : 0;  // trips (block-uniform)
        auto slot_at = [&](int i) { return i < N0 ? ring0 + (size_t)i * slotb : ring1 + (size_t)(i - N0) * slotb; };
        auto issue = [&](int t) {  // trip t: rows [p0 + t rsl, min(pe, +rsl)) into slot t % NS (thread 0)
            const int a = p0 + t * rsl, n = min(pe - a, rsl);
            const unsigned bytes = (unsigned)n * rowb, mb = smem_u32(s_pmb + t % NS);
            const unsigned dst = smem_u32(slot_at(t % NS));
            asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(mb), "r"(2 * bytes) : "memory");
            asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
                         "l"(Kl + (size_t)a * hd), "r"(bytes), "r"(mb)
                         : "memory");
            asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                             dst + (unsigned)(slotb / 2)),
                         "l"(Vl + (size_t)a * hd), "r"(bytes), "r"(mb)
                         : "memory");
        };
        if (threadIdx.x == 0 && nt > 0) {
            // the ring was last read through the generic proxy; the rows were written by other
            // blocks' generic stores, ordered before this block by the counters' release/acquire:
            // order both before the async copies
            asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
            asm volatile("fence.proxy.async.global;" ::: "memory");
            for (int t = 0; t < NS && t < nt; t++) issue(t);
        }
        __syncthreads();  // att_ring_ph as the previous pass left it
        // slot s's next phase parity: bit s of att_ring_ph, flipped by each use (the barriers are
        // initialised once per launch: re-initialising one that a bulk copy completed on is what
        // compute-sanitizer's racecheck flagged as unordered copies into the slot, run 85)
        const unsigned ph0 = att_ring_ph;
        for (int t = 0; t < nt; t++) {
            const int a = p0 + t * rsl, e = min(pe, a + rsl);
            const unsigned char *slot = slot_at(t % NS);
            mb_wait(smem_u32(s_pmb + t % NS), ((ph0 >> (t % NS)) ^ (unsigned)(t / NS)) & 1u);
            const KT *ks = reinterpret_cast<const KT *>(slot), *vs = reinterpret_cast<const KT *>(slot + slotb / 2);
            for (int base = a + warp * RPW; base < e; base += 2 * span) {  // two rows per row group at once
                const int pa = base + rg;
                float kf[2][8], vf[2][8];
                bool va[2];
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const int p = pa + r * span;
                    va[r] = p < e;
                    const bool ok = act && va[r];
                    ld8s(ks + (size_t)(ok ? p - a : 0) * hd + sub * 8, ok, kf[r]);
                    ld8s(vs + (size_t)(ok ? p - a : 0) * hd + sub * 8, ok, vf[r]);
                }
                att_rows<GS, 2>(q, m, ls, acc, kf, vf, va, LPR);
            }
            __syncthreads();  // every warp is done with the slot: refill it
            if (threadIdx.x == 0 && t + NS < nt) {
                asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
                issue(t + NS);
            }
        }
        if (threadIdx.x == 0 && nt > 0) {  // every thread read ph0 before the loop's __syncthreads
            unsigned ph = ph0;
            for (int sl = 0; sl < NS; sl++)
                if ((nt / NS + (sl < nt % NS ? 1 : 0)) & 1) ph ^= 1u << sl;
            att_ring_ph = ph;
        }
        for (int base = pe + warp * RPW; base < p1; base += span) {  // [pe, p1): this step's position
            const int p = base + rg;
            float kf[1][8], vf[1][8];
            const bool va[1] = {p < p1};
            ld8(Kl + (size_t)(va[0] && act ? p : 0) * hd + sub * 8, va[0] && act, kf[0]);
            ld8(Vl + (size_t)(va[0] && act ? p : 0) * hd + sub * 8, va[0] && act, vf[0]);
            att_rows<GS, 1>(q, m, ls, acc, kf, vf, va, LPR);
        }
#endif
    } else if constexpr (sizeof(KT) == 2 && R == 2 && GS <= 2) {
        // 16-bit cache, rows from the cache, 2 rows per trip (the grid kernel's passes): a trip
        // keeps its rows as loaded (4 registers per 8 elements, half of the floats') and converts
        // one row at a time, so it carries 2R rows in the registers f32 uses for R: the same bytes
        // in flight per trip (R rows of a 16-bit cache in flight: 1.6 TB/s at 32K, run 58). Only
        // there: in the dataflow kernel the extra registers of its attention call raise decode_df's spills.
        constexpr int R2 = 2 * R;
        for (int base = p0 + warp * RPW; base < p1; base += R2 * span) {
            const int pa = base + rg;
            uint4 kr[R2], vr[R2];
#pragma unroll
            for (int r = 0; r < R2; r++) {
                const int p = pa + r * span;
                const bool ok = act && p < p1;
                const uint4 *kp = reinterpret_cast<const uint4 *>(Kl + (size_t)p * rs + sub * 8);
                const uint4 *vp = reinterpret_cast<const uint4 *>(Vl + (size_t)p * rs + sub * 8);
                const uint4 z = make_uint4(0, 0, 0, 0);
                kr[r] = ok ? __ldcg(kp) : z;
                vr[r] = ok ? __ldcg(vp) : z;
            }
#pragma unroll
            for (int r = 0; r < R2; r += 2) {
                if (base + r * span >= p1) break;  // warp-uniform: the warp's first row is past the end
                float kf[2][8], vf[2][8];
                unpack8(kr[r], kf[0], Kl);
                unpack8(vr[r], vf[0], Kl);
                unpack8(kr[r + 1], kf[1], Kl);
                unpack8(vr[r + 1], vf[1], Kl);
                const bool va[2] = {pa + r * span < p1, pa + (r + 1) * span < p1};
                att_rows<GS, 2>(q, m, ls, acc, kf, vf, va, LPR);
            }
        }
    } else {
        for (int base = p0 + warp * RPW; base < p1; base += R * span) {
            const int pa = base + rg;
            float kf[R][8], vf[R][8];
#pragma unroll
            for (int r = 0; r < R; r++) {
                const int p = pa + r * span;
                const bool ok = act && p < p1;
                ld8(Kl + (size_t)p * rs + sub * 8, ok, kf[r]);
                ld8(Vl + (size_t)p * rs + sub * 8, ok, vf[r]);
            }
            bool va[R];
#pragma unroll
            for (int r = 0; r < R; r++) va[r] = pa + r * span < p1;
            att_rows<GS, R>(q, m, ls, acc, kf, vf, va, LPR);
        }
    }
    sprof_mark(P, SP_ATTLOOP);
    // combine the warp's row groups by shuffles (lane sub of row groups rg and rg ^ k holds the same
    // dims), so only NW entries per head go through shared memory (was NW x RPW: 1.9 us, run 20)
    for (int o = LPR; o < 32; o <<= 1) {
#pragma unroll
        for (int g = 0; g < GS; g++) {
            const float mo = __shfl_xor_sync(0xffffffffu, m[g], o), lo = __shfl_xor_sync(0xffffffffu, ls[g], o);
            const float mn = fmaxf(m[g], mo);
            const float a = mn == -INFINITY ? 0.0f : exp2f(m[g] - mn), b = mn == -INFINITY ? 0.0f : exp2f(mo - mn);
            m[g] = mn;
            ls[g] = ls[g] * a + lo * b;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float ao = __shfl_xor_sync(0xffffffffu, acc[g][j], o);
                acc[g][j] = acc[g][j] * a + ao * b;
            }
        }
    }
    const int stride = hd + 2;
    if (rg == 0) {
#pragma unroll
        for (int g = 0; g < GS; g++) {
            float *e = pm + ((size_t)warp * GS + g) * stride;
            if (sub == 0) {
                e[0] = m[g];
                e[1] = ls[g];
            }
            if (act)
#pragma unroll
                for (int j = 0; j < 8; j++) e[2 + sub * 8 + j] = acc[g][j];
        }
    }
    __syncthreads();
    // combine the warps (an empty one has m = -inf)
    for (int t = threadIdx.x; t < GS * hd; t += NT) {
        const int g = t / hd, d = t % hd;
        float M = -INFINITY;
        for (int r = 0; r < NW; r++) M = fmaxf(M, pm[((size_t)r * GS + g) * stride]);
        float Ls = 0.0f, A = 0.0f;
        for (int r = 0; r < NW; r++) {
            const float *e = pm + ((size_t)r * GS + g) * stride;
            if (e[0] == -INFINITY) continue;
            const float w = exp2f(e[0] - M);
            Ls += e[1] * w;
            A += e[2 + d] * w;
        }
        float *o = out + (size_t)g * stride;
        if (d == 0) {
            o[0] = M;
            o[1] = Ls;
        }
        o[2 + d] = A;
    }
    __syncthreads();
}

// Chunks per kv head for a context of len positions (*csz positions each, the last may be short):
// at least P.minch positions a chunk, at most grid / n_kv chunks (one item per block).
__device__ __forceinline__ int att_chunks(const Params &P, int len, int &csz) {
    const int minch = P.minch > 0 ? P.minch : 64;
    int nch = (len + minch - 1) / minch;
    int cap = (int)gridDim.x / P.nkv;
    if (cap < 1) cap = 1;
    if (cap > P.max_chunks) cap = P.max_chunks;
    if (nch > cap) nch = cap;
    csz = (len + nch - 1) / nch;
    return (len + csz - 1) / csz;
}

// Attention of layer l at position pos for the block's (kv head, chunk) item: the G query heads
// of a kv head are done in passes of at most 4 (register budget); K/V rows are re-read per pass.
// defer: leave the chunk partials for the O stage to combine (combine_att) instead of combining them here.
// RB: rows per row group per att_pass trip for passes of 1-2 heads (4: one trip covers a
// 64-position chunk; the grid kernel's 128-register budget takes 2, which spilled at 4).
// RING: called by decode_df<..., RING> (two-buffer mode: sm is its stage-vector region, weight buffer
// 0 at sm - (wbuf + wbuf1 + kvbuf), the spare region at sm - kvbuf): MQ_CUDA_ATTPIPE's ring.
template <typename KT, int RB, bool RING = false>
__device__ __noinline__ void attention(const Params &P, int l, int pos, float *sm, bool defer = false) {
    const int hd = P.hd, len = pos + 1, warp = threadIdx.x >> 5, G = P.nh / P.nkv;
    const int maxch = P.max_chunks;
    int csz;
    const int nch = att_chunks(P, len, csz);
    const int item = blockIdx.x;
    if (item >= P.nkv * nch) return;
    const int kvh = item / nch, c = item % nch;
    const int p0 = c * csz, p1 = min(len, p0 + csz);
    const LayerW L = P.layers[l];
    const size_t kvd = (size_t)P.nkv * hd;  // k (and v) part of the q|k|v vector
    KT *Kl = kv_rows<KT>(P.kc, P, l, kvh);   // the kv head's cache rows: row p at + p*hd
    KT *Vl = kv_rows<KT>(P.vc, P, l, kvh);
    const int stride = hd + 2;

    float *qs = sm;                      // (G, hd) normed, roped queries
    float *res = qs + G * hd;            // (G, hd+2) this chunk's (m, l, acc) per head
    float *tmp = res + G * stride;       // (NW, hd) per-warp scratch
    float *pm = tmp + NW * hd;           // (NW, 4, hd+2) per-warp partials (att_pass)
    __shared__ int s_last;

    // q heads of this kv head; the chunk holding `pos` also writes this position's K and V
    const int ntask = G + (p1 == len ? 2 : 0);
    for (int t = warp; t < ntask; t += NW) {
        if (t < G)
            prep_head<KT>(P, P.qkv + (size_t)(kvh * G + t) * hd, L.q_norm, true, pos, tmp + warp * hd, qs + t * hd,
                          nullptr);
        else if (t == G)
            prep_head(P, P.qkv + P.qdim + (size_t)kvh * hd, L.k_norm, true, pos, tmp + warp * hd, nullptr,
                      Kl + (size_t)pos * hd);
        else
            prep_head(P, P.qkv + P.qdim + kvd + (size_t)kvh * hd, nullptr, false, pos, tmp + warp * hd, nullptr,
                      Vl + (size_t)pos * hd);
    }
    __syncthreads();
    sprof_mark(P, SP_ATT);  // q/k/v head prep
    // MQ_CUDA_ATTPIPE: long chunks through the bulk-copy ring (att_pass, RING), 1-2 heads per pass.
    // Buffer 0 is free here unless this block copies gate|up into it during attention (GUEARLY
    // without GUATT); its q|k|v readers passed the QKV stage's arrival, and gate|up's copy into it
    // starts after the O stage's __syncthreads, when the ring's last copies have landed and been read.
    bool ring = false;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900  // the ring's bulk copies
    ring = RING && P.attpipe > 0 && p1 - p0 >= P.attpipe && !((P.opt & OPT_GUEARLY) && !(P.opt & OPT_GUATT));
#endif
    const int gmax = ring ? 2 : 4;
    for (int g0 = 0; g0 < G; g0 += gmax) {
        const int gs = G - g0 < gmax ? G - g0 : gmax;
        const float *qg = qs + g0 * hd;
        float *rg = res + (size_t)g0 * stride;
        if (ring) {
            unsigned char *r1 = reinterpret_cast<unsigned char *>(sm) - P.kvbuf, *r0 = r1 - ((size_t)P.wbuf + P.wbuf1);
            const int pe = min(p1, pos);  // rows before this step's position: written by earlier steps
            if (gs == 1) att_pass<1, 2, KT, true>(P, Kl, Vl, p0, p1, qg, pm, rg, r0, r1, pe);
            else att_pass<2, 2, KT, true>(P, Kl, Vl, p0, p1, qg, pm, rg, r0, r1, pe);
            continue;
        }
        switch (gs) {
        case 1: att_pass<1, RB, KT>(P, Kl, Vl, p0, p1, qg, pm, rg); break;
        case 2: att_pass<2, RB, KT>(P, Kl, Vl, p0, p1, qg, pm, rg); break;
        case 3: att_pass<3, 2, KT>(P, Kl, Vl, p0, p1, qg, pm, rg); break;
        default: att_pass<4, 2, KT>(P, Kl, Vl, p0, p1, qg, pm, rg); break;
        }
    }
    sprof_mark(P, SP_ATT + 1);  // the row-group combine after the online softmax (SP_ATTLOOP)
    float *part = P.part;  // (n_heads, max_chunks, hd+2)
    if (nch == 1) {
        for (int t = threadIdx.x; t < G * hd; t += NT) {
            const int g = t / hd, d = t % hd;
            const float *e = res + (size_t)g * stride;
            P.att[(size_t)(kvh * G + g) * hd + d] = e[2 + d] / e[1];
        }
        return;
    }
    for (int t = threadIdx.x; t < G * stride; t += NT) {
        const int g = t / stride, d = t % stride;
        part[((size_t)(kvh * G + g) * maxch + c) * stride + d] = res[t];
    }
    if (defer) return;  // the O stage combines the chunks (combine_att)
    // the last chunk of this kv head to finish combines all chunks
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        const unsigned old = atomicAdd(P.att_cnt + kvh, 1u);
        s_last = old == (unsigned)nch - 1;
        if (s_last) {
            __threadfence();
            P.att_cnt[kvh] = 0;  // next use is after a grid barrier
        }
    }
    __syncthreads();
    sprof_mark(P, SP_ATT + 2);  // chunk partials out + counter
    if (!s_last) return;
    for (int t = threadIdx.x; t < G * hd; t += NT) {
        const int g = t / hd, d = t % hd, h = kvh * G + g;
        const float *base = part + (size_t)h * maxch * stride;
        float M = -INFINITY;
        for (int k = 0; k < nch; k++) M = fmaxf(M, __ldcg(base + (size_t)k * stride));
        float Ls = 0.0f, A = 0.0f;
        for (int k = 0; k < nch; k++) {
            const float w = exp2f(__ldcg(base + (size_t)k * stride) - M);
            Ls += __ldcg(base + (size_t)k * stride + 1) * w;
            A += __ldcg(base + (size_t)k * stride + 2 + d) * w;
        }
        P.att[(size_t)h * hd + d] = A / Ls;
    }
}

// The attention output (q_dim floats) into sm from the per-chunk partials of all heads (nch > 1
// chunks each: (m, l, acc) with m in log2 units), for a consumer that needs all heads anyway: one
// round of loads in the O stage instead of a counter and a combining block per kv head.
// ml: 2 * n_heads * nch floats of shared memory for the per-chunk (m, l).
__device__ void combine_att(const Params &P, int nch, float *sm, float *ml) {
    const int hd = P.hd, stride = hd + 2, maxch = P.max_chunks;
    for (int i = threadIdx.x; i < P.nh * nch; i += NT) {
        const int h = i / nch, k = i % nch;
        const float *e = P.part + ((size_t)h * maxch + k) * stride;
        ml[2 * i] = __ldcg(e);
        ml[2 * i + 1] = __ldcg(e + 1);
    }
    __syncthreads();
    for (int t = threadIdx.x; t < P.qdim; t += NT) {
        const int h = t / hd, d = t % hd;
        const float *mh = ml + 2 * h * nch;
        float M = -INFINITY;
        for (int k = 0; k < nch; k++) M = fmaxf(M, mh[2 * k]);
        const float *base = P.part + (size_t)h * maxch * stride + 2 + d;
        float Ls = 0.0f, A = 0.0f;
#pragma unroll 4
        for (int k = 0; k < nch; k++) {
            const float w = exp2f(mh[2 * k] - M);
            Ls += mh[2 * k + 1] * w;
            A += __ldcg(base + (size_t)k * stride) * w;
        }
        sm[t] = A / Ls;
    }
    __syncthreads();
}

}  // namespace mqk

#endif
