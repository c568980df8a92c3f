// prefill_mk.cuh: the prefill megakernel: a short first chunk's every layer in one persistent launch, phases between grid barriers.
//
// A prompt of <= 64 tokens through the kernel chain costs ~8 launches per layer at ~5 us each
// (docs/perf-notes.md: ~41 us per layer at 32 tokens against a weight floor of ~7.5 us). Here one
// cooperative launch of one 256-thread block per SM walks 8 phases per layer, each ended by a grid
// barrier (~1.5-3 us):
//   input RMSNorm rows (+ the previous down slabs, or the embedding) | q|k|v GEMM | q/k norm + RoPE,
//   K/V into the cache | attention | o GEMM | residual + post RMSNorm rows | gate|up GEMM with SiLU |
//   down GEMM
// The GEMMs are sgemm's tiles (sgemm_tile.cuh: 32 output features x a slab of 64-wide k chunks).
// Their weights come into shared memory by the bulk copy engine (sm_90 cp.async.bulk, one copy per
// weight row) through two slots: a block's copy jobs (its GEMM units in order, across phases and
// layers) alternate between the slots, and a slot is refilled with the job two ahead as soon as its
// fragments are in registers, so every copy is in flight one or two phases before its GEMM. (The
// first version loaded the fragments into registers with ld.global.nc before the barrier that opens
// the GEMM, as sgemm_k does before its PDL wait: ~1.4 TB/s, and each phase that ended in such a
// barrier took 9-10 us at 8 tokens.)
// Measured (docs/perf-notes.md, session 8): correct (test_mk), and slower than the chain: TTFT 1.66
// against 1.12 ms at 8 tokens, 2.05 against 1.47 at 32 (split bf16). Every phase costs 4-5 us
// (the barrier plus the L2 round trips of its loads and stores; weights wait ~0.3 us per layer),
// GEMM phases 6-7 us: 8 phases put a layer at >= 40 us. Opt-in (MQ_PREFILL_MK=1) for that reason.
// The attention is attn_small_k's f32 arithmetic (small_attend) on one (q head, 16 query rows) item
// per block, after the q/k prep phase wrote q (f32 scratch) and K/V (the decode kernel's cache).
// Every buffer a phase reads that another block wrote in this launch is read through L2 (__ldcg):
// L1 is not coherent, and the same addresses are rewritten every layer. Results match the chain's
// within fp32 summation order (the same tiles, slab counts may differ). Part of prefill.cu's
// translation unit (inside its anonymous namespace, after the helpers and kernels it reuses).
#ifndef MQ_PREFILL_MK_CUH
#define MQ_PREFILL_MK_CUH

constexpr int MK_NT = 256;     // threads per block (sgemm's tile and resid_norm_row assume 256)
constexpr int MK_PHASES = 8;   // phases (grid barriers) per layer

struct MkArgs {
    const LayerW *layers;        // (n_layers) device memory
    const __nv_bfloat16 *embed;  // (vocab, hidden)
    const float *rope;           // (max_ctx, hd/2, 2)
    void *kc, *vc;               // the decode kernel's caches (n_layers, n_kv, max_ctx, hd), KT
    const int32_t *ids;          // (T) the chunk's token ids
    float *x;                    // (T, hidden) residual stream
    __nv_bfloat16 *xn;           // (2T, max(hidden, q_dim)): normed rows, then the attention output; lo rows after T hi rows
    float *qkv;                  // (ks_qkv x T, q|k|v) slabs
    float *qf;                   // (T, q_dim) normed, roped queries (f32)
    float *dres;                 // (max(ks_o, ks_down) x T, hidden) o / down slabs
    __nv_bfloat16 *h;            // (2T, inter) silu(gate) * up, lo rows after T hi rows
    unsigned *bar;               // grid barrier counter, zeroed before the launch
    int V, H, I, L, nh, nkv, hd, maxc, T;
    int ks_qkv, ks_o, ks_down;   // K slabs of the q|k|v, o and down GEMMs (gate|up: one, SiLU epilogue)
    unsigned long long *prof;    // (MK_PHASES x n_layers) MQ_PREFILL_PROF: when each barrier opened (block 0; the
                                 // last entry: block 0's ns in weight waits); or nullptr
    float eps;
};

// dynamic shared memory: the phase area (the largest phase's: attention's K, V, 16 q rows and P; a
// GEMM tile's warp sums at 64 rows; the prep's hd floats per warp), rounded to 128 bytes, then the
// two weight slots
constexpr int MK_ROWB = 16 * 128 + 16;          // a weight row's bytes in a slot: <= 16 chunks + 16 (bank spread)
constexpr size_t MK_SLOT = (size_t)sgt::FB * MK_ROWB;  // 32 rows
__host__ __device__ constexpr size_t mk_area(int hd) {
    const size_t att = ((size_t)SMALL_T * (hd + 4) + (size_t)SMALL_T * hd + 16 * hd + 16 * SMALL_T) * 4;
    const size_t red = (size_t)4 * 64 * (sgt::FB + 4) * 4, prep = (size_t)8 * hd * 4;
    const size_t m = att > red ? (att > prep ? att : prep) : (red > prep ? red : prep);
    return (m + 127) / 128 * 128;
}
__host__ __device__ constexpr size_t mk_smem(int hd) { return mk_area(hd) + 2 * MK_SLOT; }

// GEMM g of a layer (0 q|k|v, 1 o, 2 gate|up, 3 down): weights, outputs N, inputs K, slabs
struct MkGemm {
    const __nv_bfloat16 *W;
    int N, K, ks;
};
__device__ __forceinline__ MkGemm mk_gemm_of(const MkArgs &A, const LayerW *W, int g) {
    const int qd = A.nh * A.hd, kvd = A.nkv * A.hd;
    switch (g) {
    case 0: return {W ? W->qkv : nullptr, qd + 2 * kvd, A.H, A.ks_qkv};
    case 1: return {W ? W->o : nullptr, A.H, qd, A.ks_o};
    case 2: return {W ? W->gu : nullptr, 2 * A.I, A.H, 1};
    default: return {W ? W->down : nullptr, A.H, A.I, A.ks_down};
    }
}

// The layer table in shared memory (the copy issue reads it mid-phase: no global load latency there)
constexpr int MK_LMAX = 64;  // most layers (the host checks)
__shared__ LayerW s_mkl[MK_LMAX];
__shared__ unsigned long long s_mkwait;  // MQ_PREFILL_PROF: block 0's ns in weight waits

// A unit u of a GEMM: features [n0, n0 + FB), k chunks [c0, c1)
__device__ __forceinline__ void mk_unit(const MkGemm &G, int u, int &n0, int &sl, int &c0, int &c1) {
    const int nt = G.N / sgt::FB, nch = G.K / 64, cpb = (nch + G.ks - 1) / G.ks;
    n0 = (u % nt) * sgt::FB, sl = u / nt, c0 = sl * cpb, c1 = min(c0 + cpb, nch);
}

// The weight copy pipeline of a block. Job j (the block's j-th GEMM unit, in the order the phases
// run them) goes to slot j % 2 and completes that slot's mbarrier phase j / 2; `next` is the job to
// issue when a slot frees, `used` the jobs consumed so far.
struct MkPipe {
    int l, g, u;    // the next job to issue: unit u of GEMM g of layer l (l = n_layers: none left)
    unsigned next;  // its job number
    unsigned used;  // jobs consumed
};

// advance (l, g, u) to the block's next unit: the next of GEMM g, else the first of a later GEMM
__device__ __forceinline__ void mk_advance(const MkArgs &A, MkPipe &p, bool first) {
    if (!first) p.u += gridDim.x;
    while (p.l < A.L) {
        const MkGemm G = mk_gemm_of(A, nullptr, p.g);
        if (p.u < G.N / sgt::FB * G.ks) return;
        if (++p.g == 4) p.g = 0, p.l++;
        p.u = blockIdx.x;
    }
}

// Warp 0 issues the next job's copies (one weight row per lane) into its slot; every thread advances.
// The slot's previous contents were last read (generic proxy) before a __syncthreads.
__device__ __forceinline__ void mk_issue(const MkArgs &A, MkPipe &p, unsigned slots, unsigned mb0) {
    if (p.l >= A.L) return;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (threadIdx.x < 32) {
        const MkGemm G = mk_gemm_of(A, &s_mkl[p.l], p.g);
        int n0, sl, c0, c1;
        mk_unit(G, p.u, n0, sl, c0, c1);
        const unsigned rowb = (unsigned)(c1 - c0) * 128, lane = threadIdx.x;
        const unsigned mb = mb0 + 8 * (p.next & 1), dst = slots + (p.next & 1) * (unsigned)MK_SLOT;
        if (lane == 0)
            asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(mb), "r"(rowb * sgt::FB)
                         : "memory");
        __syncwarp();
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                         dst + lane * MK_ROWB),
                     "l"(G.W + (size_t)(n0 + lane) * G.K + 64 * c0), "r"(rowb), "r"(mb)
                     : "memory");
    }
#else
    (void)slots, (void)mb0;  // sm_90 only: the host runs this kernel on sm_90 code only
#endif
    p.next++;
    mk_advance(A, p, false);
}

// A GEMM phase (after the grid barrier that makes X ready): for each of the block's units, wait for
// its weights in the slot, load the fragments, refill the slot with the job two ahead, then the mma
// pass and the epilogue: out slab s (T, N) = X (T, K) W^T over slab s's k chunks, or with hb the SiLU
// epilogue (one slab).
template <int MT, bool LO>
__device__ __noinline__ void mk_gemm(const MkArgs &A, int g, const __nv_bfloat16 *X, float *out, __nv_bfloat16 *hb,
                                     unsigned *target, float *smem, unsigned slots, unsigned mb0, MkPipe *pipe) {
    using namespace sgt;
    mqk::grid_sync(A.bar, *target, A.prof);
    const MkGemm G = mk_gemm_of(A, nullptr, g);
    Red<MT> red = reinterpret_cast<Red<MT>>(smem);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, q = lane & 3;
    for (int u = blockIdx.x; u < G.N / FB * G.ks; u += gridDim.x) {
        int n0, sl, c0, c1;
        mk_unit(G, u, n0, sl, c0, c1);
        const unsigned slot = pipe->used & 1;
        const unsigned long long tw = A.prof ? mqk::globaltimer() : 0;
        mqk::mb_wait(mb0 + 8 * slot, (pipe->used >> 1) & 1);
        if (A.prof && blockIdx.x == 0 && threadIdx.x == 0) s_mkwait += mqk::globaltimer() - tw;
        pipe->used++;
        Frag<CPW_MAX> w;
        const unsigned base = slots + slot * (unsigned)MK_SLOT;
#pragma unroll
        for (int j = 0; j < CPW_MAX; j++) {
            const int c = c0 + warp + NW * j;
#pragma unroll
            for (int f = 0; f < FT; f++) {
                if (c < c1) {
                    const unsigned a = base + (8 * f + gq) * MK_ROWB + (c - c0) * 128 + 32 * q;
                    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];"
                                 : "=r"(w.a[j][f].x), "=r"(w.a[j][f].y), "=r"(w.a[j][f].z), "=r"(w.a[j][f].w)
                                 : "r"(a));
                    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];"
                                 : "=r"(w.b[j][f].x), "=r"(w.b[j][f].y), "=r"(w.b[j][f].z), "=r"(w.b[j][f].w)
                                 : "r"(a + 16));
                } else {
                    w.a[j][f] = w.b[j][f] = make_uint4(0, 0, 0, 0);
                }
            }
        }
        __syncthreads();  // the slot is read: refill it
        mk_issue(A, *pipe, slots, mb0);
        mma_sum<MT, LO>(w, X, A.T, G.K, c0, c1, red);
        if (hb)
            store_silu<MT, LO>(red, A.T, G.N, n0, hb);
        else
            store_f32<MT>(red, A.T, G.N, n0, out + (size_t)sl * A.T * G.N);
        __syncthreads();  // red is rewritten by the next unit
    }
}

template <bool LO>
__device__ __forceinline__ void mk_gemm_t(const MkArgs &A, int g, const __nv_bfloat16 *X, float *out,
                                          __nv_bfloat16 *hb, unsigned *target, float *smem, unsigned slots,
                                          unsigned mb0, MkPipe *pipe) {
    switch ((A.T + 15) / 16) {
    case 1: mk_gemm<1, LO>(A, g, X, out, hb, target, smem, slots, mb0, pipe); break;
    case 2: mk_gemm<2, LO>(A, g, X, out, hb, target, smem, slots, mb0, pipe); break;
    case 3: mk_gemm<3, LO>(A, g, X, out, hb, target, smem, slots, mb0, pipe); break;
    default: mk_gemm<4, LO>(A, g, X, out, hb, target, smem, slots, mb0, pipe); break;
    }
}

// The attention phase of layer l: items (q head h, 16 query rows) over the blocks. K/V rows [0, q1)
// of h's kv head from the cache (as decode reads them) and the q rows, all f32 in shared memory,
// then small_attend -> att (+ lo rows) as the o GEMM's input.
template <int HD, typename KT, bool LO>
__device__ __noinline__ void mk_attn(const MkArgs &A, int l, float *smem) {
    constexpr int KS = HD + 4;
    float *Ks = smem, *Vs = Ks + (size_t)SMALL_T * KS, *Qs = Vs + (size_t)SMALL_T * HD, *Ps = Qs + 16 * HD;
    const int T = A.T, nrt = (T + 15) / 16, G = A.nh / A.nkv, qd = A.nh * HD;
    const size_t lo = (size_t)l * A.maxc * A.nkv * HD;  // layer l's (n_kv, max_ctx, HD)
    __nv_bfloat16 *att = A.xn, *atl = LO ? A.xn + (size_t)T * qd : nullptr;
    for (int it = blockIdx.x; it < A.nh * nrt; it += gridDim.x) {
        const int h = it / nrt, q0 = (it % nrt) * 16, q1 = min(T, q0 + 16);
        const KT *kc = static_cast<const KT *>(A.kc) + lo + (size_t)(h / G) * A.maxc * HD;
        const KT *vc = static_cast<const KT *>(A.vc) + lo + (size_t)(h / G) * A.maxc * HD;
        for (int i = threadIdx.x; i < q1 * HD; i += MK_NT) {  // rows [0, q1) are contiguous (head-major)
            const int t = i / HD, d = i % HD;
            Ks[t * KS + d] = ld_f32(kc + i);
            Vs[i] = ld_f32(vc + i);
        }
        for (int i = threadIdx.x; i < (q1 - q0) * HD; i += MK_NT) {
            const int r = i / HD, d = i % HD;
            Qs[i] = __ldcg(A.qf + (size_t)(q0 + r) * qd + (size_t)h * HD + d);
        }
        __syncthreads();
        small_attend<HD>(Qs, Ks, Vs, Ps, h, q0, q1, qd, att, atl);
        __syncthreads();  // the next item rewrites Ks, Vs, Qs, Ps
    }
}

// grid (SMs), block MK_NT, cooperative (every block resident: the grid barriers); dynamic shared
// memory mk_smem(hd). KT: the KV cache's element type; LO: split bf16 GEMM inputs.
template <bool LO, typename KT>
__global__ void __launch_bounds__(MK_NT, 1) prefill_mk(MkArgs A) {
    extern __shared__ __align__(128) float msm[];
    __shared__ __align__(8) unsigned long long mk_mb[2];  // the slots' mbarriers
    unsigned target = 0;
    const int T = A.T, H = A.H, hd = A.hd, qd = A.nh * hd, kvd = A.nkv * hd, nslot = A.nh + 2 * A.nkv;
    const int ng = (nslot + 7) / 8;  // prep items: (token, group of 8 slots), a slot per warp
    const size_t TH = (size_t)T * H;
    __nv_bfloat16 *xl = LO ? A.xn + TH : nullptr;
    const unsigned slots = (unsigned)__cvta_generic_to_shared(msm) + (unsigned)mk_area(hd);
    const unsigned mb0 = (unsigned)__cvta_generic_to_shared(mk_mb);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (threadIdx.x == 0) {
        for (int k = 0; k < 2; k++) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(mb0 + 8 * k) : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
#endif
    for (int l = threadIdx.x; l < A.L; l += MK_NT) s_mkl[l] = A.layers[l];
    if (threadIdx.x == 0) s_mkwait = 0;
    __syncthreads();
    MkPipe pipe = {0, 0, (int)blockIdx.x, 0, 0};
    mk_advance(A, pipe, true);
    mk_issue(A, pipe, slots, mb0);  // jobs 0 and 1: the first layer's first two units
    mk_issue(A, pipe, slots, mb0);
    for (int l = 0; l < A.L; l++) {
        const LayerW &W = s_mkl[l];
        for (int t = blockIdx.x; t < T; t += gridDim.x)
            resid_norm_row(t, l == 0 ? A.ids : nullptr, A.embed, A.V, A.x, l == 0 ? nullptr : A.dres, A.ks_down, TH,
                           W.in_norm, A.xn, xl, H, A.eps);
        mk_gemm_t<LO>(A, 0, A.xn, A.qkv, nullptr, &target, msm, slots, mb0, &pipe);
        mqk::grid_sync(A.bar, target, A.prof);
        {
            const size_t lo = (size_t)l * A.maxc * kvd;
            KT *kc = static_cast<KT *>(A.kc) + lo, *vc = static_cast<KT *>(A.vc) + lo;
            const int warp = threadIdx.x >> 5;
            for (int it = blockIdx.x; it < T * ng; it += gridDim.x) {
                const int t = it / ng, s = (it % ng) * 8 + warp;
                if (s < nslot)
                    prep_slot<KT>(A.qkv + (size_t)t * (qd + 2 * kvd), A.ks_qkv, (size_t)T * (qd + 2 * kvd), s, t, t,
                                  W.q_norm, W.k_norm, A.rope, msm + warp * hd, nullptr, nullptr, A.qf, kc, vc, nullptr,
                                  nullptr, nullptr, nullptr, A.nh, A.nkv, hd, A.maxc, A.eps);
            }
        }
        mqk::grid_sync(A.bar, target, A.prof);
        if (hd == 128) mk_attn<128, KT, LO>(A, l, msm);
        else if (hd == 64) mk_attn<64, KT, LO>(A, l, msm);
        else mk_attn<32, KT, LO>(A, l, msm);
        mk_gemm_t<LO>(A, 1, A.xn, A.dres, nullptr, &target, msm, slots, mb0, &pipe);
        mqk::grid_sync(A.bar, target, A.prof);
        for (int t = blockIdx.x; t < T; t += gridDim.x)
            resid_norm_row(t, nullptr, A.embed, A.V, A.x, A.dres, A.ks_o, TH, W.post_norm, A.xn, xl, H, A.eps);
        mk_gemm_t<LO>(A, 2, A.xn, nullptr, A.h, &target, msm, slots, mb0, &pipe);
        mk_gemm_t<LO>(A, 3, A.h, A.dres, nullptr, &target, msm, slots, mb0, &pipe);
        if (l + 1 < A.L) mqk::grid_sync(A.bar, target, A.prof);  // the next input norm reads the down slabs
    }
    if (A.prof && blockIdx.x == 0 && threadIdx.x == 0) A.prof[MK_PHASES * A.L - 1] = s_mkwait;
}

#endif
