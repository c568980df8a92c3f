// megakernel: the whole Qwen3 decode step (all layers, lm_head, argmax) in one persistent launch.
//
// One cooperative launch runs n decode steps. Every block walks the same stage list; a stage's
// work is split over all blocks (rows of a weight matrix, or (kv head, position chunk) items of
// attention) and stages are separated by a grid barrier on one monotonically growing counter.
// Before it waits at a barrier, each block asks L2 to prefetch its slice of the NEXT weight
// matrix, so HBM keeps streaming weights while the grid synchronizes (weights do not depend on
// activations). Per layer:
//   QKV    rmsnorm(x) (every block, redundantly: cheaper than a barrier) -> fused q|k|v matvec
//   ATTN   per (kv head, chunk): q/k RMSNorm + RoPE, K/V of this position into the cache (f32 or
//          bf16 or f16 (kvtype.cuh); head-major (layer, kv head, pos, hd), so a chunk's rows are contiguous),
//          online-softmax over the chunk (flash-decoding); the last chunk to finish combines
//   O      o_proj matvec, residual add into x
//   GU     rmsnorm(x) -> fused gate|up matvec
//   DOWN   silu(gate)*up -> down matvec, residual add into x
// then final rmsnorm + lm_head over all blocks with a per-block argmax; the last block to finish
// reduces the argmax, embeds the next token into x and (greedy) feeds it to the next step.
// This file holds the two kernels (decode_kernel: grid barriers; decode_df: dataflow counters) and
// their stage plumbing; their parts live in megakernel_core.cuh (matvec, loads, bulk copies),
// megakernel_attention.cuh and megakernel_lmhead.cuh, all one translation unit.
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>

#include "megakernel.cuh"
#include "megakernel_attention.cuh"
#include "megakernel_core.cuh"
#include "megakernel_lmhead.cuh"
#include "sample.cuh"

namespace mqk {

// Split-K part of down for this block's pairs [c0, c0 + nc) of the intermediate dim:
// x[r] += sum_j downT[c0 + j][r] h[j], with float4 atomics (every block adds its part; the sum's
// rounding depends on the order the atomics land, ~1e-7 relative). downT is (inter, hidden):
// its rows c0.. are staged at dt (shared memory), or read from global memory when dt is null.
// Each thread owns 4 consecutive outputs, so a warp reads 256 contiguous bytes of a row per j.
template <bool SMEM>
__device__ __forceinline__ void down_part(const Params &P, const uint2 *d2, int nc, const float *h) {
    const int H4 = P.hidden >> 2;
    for (int r4 = threadIdx.x; r4 < H4; r4 += NT) {
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
#pragma unroll 4
        for (int j = 0; j < nc; j++) {
            const uint2 w = SMEM ? d2[(size_t)j * H4 + r4] : __ldg(d2 + (size_t)j * H4 + r4);
            const float hj = h[j];
            a0 = fmaf(__uint_as_float(w.x << 16), hj, a0);
            a1 = fmaf(__uint_as_float(w.x & 0xffff0000u), hj, a1);
            a2 = fmaf(__uint_as_float(w.y << 16), hj, a2);
            a3 = fmaf(__uint_as_float(w.y & 0xffff0000u), hj, a3);
        }
        float *x = P.x + (size_t)r4 * 4;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        // red (no value returned): atomicAdd(float4 *) compiles to atom.add.v4.f32 with a result
        asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(x), "f"(a0), "f"(a1), "f"(a2), "f"(a3)
                     : "memory");
#else
        atomicAdd(x, a0), atomicAdd(x + 1, a1), atomicAdd(x + 2, a2), atomicAdd(x + 3, a3);
#endif
    }
}
__device__ __noinline__ void down_splitk(const Params &P, const __nv_bfloat16 *downT, int c0, int nc, const float *h,
                                         const uint4 *dt) {
    if (dt) down_part<true>(P, reinterpret_cast<const uint2 *>(dt), nc, h);
    else down_part<false>(P, reinterpret_cast<const uint2 *>(downT + (size_t)c0 * P.hidden), nc, h);
}

// h[j] = silu(g[2j]) * g[2j + 1] for j < nc (the block's interleaved (gate, up) pairs, shared memory)
__device__ __forceinline__ void silu_pairs(const float *g, float *h, int nc) {
    for (int j = threadIdx.x; j < nc; j += NT) {
        const float gt = g[2 * j], up = g[2 * j + 1];
        h[j] = gt / (1.0f + expf(-gt)) * up;
    }
}

// Fused MLP for this block's pairs [c0, c1) of the intermediate dim: gate|up rows (interleaved:
// row 2j = gate_j, 2j+1 = up_j) -> h_j = silu(gate_j) * up_j in shared memory -> split-K slice of
// down (down_splitk). Saves the grid barrier between gate|up and down. xs: normed input (hidden),
// hs: 3*(c1-c0) floats; ws: the staged gate|up pairs followed by the downT rows, or null.
__device__ __noinline__ void mlp_fused(const Params &P, const LayerW &L, const float *xs, float *hs, float *red,
                          const uint4 *ws) {
    const int H = P.hidden, I = P.inter;
    int c0, c1;
    block_rows(I, blockIdx.x, gridDim.x, c0, c1);
    const int nc = c1 - c0;
    if (nc <= 0) return;
    matvec<MV_SMEM>(L.gu, 2 * I, H, xs, hs, red, nullptr, ws, 2 * c0, 2 * c1);
    __syncthreads();
    float *h = hs + 2 * nc;
    silu_pairs(hs, h, nc);
    __syncthreads();
    down_splitk(P, L.down, c0, nc, h, ws ? ws + (size_t)2 * nc * H / 8 : nullptr);
}

template <typename KT>
__global__ void __launch_bounds__(NT, 2) decode_kernel(Params P) {
    extern __shared__ __align__(16) unsigned char dsm[];
    __shared__ float red[NT / 32 * 2 > 32 ? NT / 32 * 2 : 32];
    unsigned target = 0;
    const int H = P.hidden, I = P.inter, QKVR = P.qdim + 2 * P.nkv * P.hd;
    const size_t PF = (size_t)1 << 20;  // prefetch cap per block and matrix
    const bool regx = P.opt & OPT_REGX;
    const bool normw = P.opt & OPT_NORMW;

    // Shared memory: [ws: staged weight slice, P.wsmem bytes][sm: stage vectors / attention]
    uint4 *wsb = P.wsmem ? reinterpret_cast<uint4 *>(dsm) : nullptr;
    float *sm = reinterpret_cast<float *>(dsm + P.wsmem);
    const size_t WS = P.wsmem;
    wpol_init(P);  // published by the first grid_sync's __syncthreads
    if (blockIdx.x == 0) embed(P, P.ids ? P.ids[0] : P.first);
    const uint4 *ws = P.n_layers > 0 ? stage_rows(P.layers[0].qkv, QKVR, H, wsb, WS) : nullptr;
    grid_sync(P.bar, target, P.prof);

    for (int step = 0; step < P.n; step++) {
        const int pos = P.pos + step;
        for (int l = 0; l < P.n_layers; l++) {
            const LayerW L = P.layers[l];
            // QKV (its weights were staged before the previous barrier)
            load_norm(P.x, L.in_norm, H, P.eps, sm, red, normw);
            stage_wait();
            matvec<MV_STORE>(L.qkv, QKVR, H, sm, P.qkv, red, nullptr, ws, -1, -1, nullptr, 0, nullptr, regx);
            __syncthreads();
            ws = stage_rows(L.o, H, P.qdim, wsb, WS);
            if (!ws) prefetch_rows(L.o, H, P.qdim, PF);
            grid_sync(P.bar, target, P.prof);
            // ATTN (the o_proj slice streams into shared memory meanwhile)
            attention<KT, 2>(P, l, pos, sm);
            if (!ws) prefetch_rows(L.gu, 2 * I, H, PF);
            grid_sync(P.bar, target, P.prof);
            // O
            for (int i = threadIdx.x; i < P.qdim; i += NT) sm[i] = __ldcg(P.att + i);
            stage_wait();
            matvec<MV_ADD>(L.o, H, P.qdim, sm, P.x, red, nullptr, ws, -1, -1, P.fuse ? P.x1 : nullptr);
            __syncthreads();
            if (P.fuse) {
                // stage gate|up pairs [c0, c1) and downT rows [c0, c1) of this block, one group
                int c0, c1;
                block_rows(I, blockIdx.x, gridDim.x, c0, c1);
                const size_t gub = (size_t)2 * (c1 - c0) * H * 2;
                ws = stage_rows(L.gu, 2 * I, H, wsb, WS, 2 * c0, 2 * c1, false);
                if (ws && !stage_rows(L.down, I, H, wsb + gub / 16, WS - gub, c0, c1, true)) ws = nullptr;
                if (!ws) {
                    asm volatile("cp.async.commit_group;" ::: "memory");
                    prefetch_l2(L.gu + (size_t)2 * c0 * H, gub);
                    prefetch_l2(L.down + (size_t)c0 * H, (size_t)(c1 - c0) * H * 2);
                }
                grid_sync(P.bar, target, P.prof);
                // GATE|UP + DOWN fused (reads x1, accumulates into x)
                load_norm(P.x1, L.post_norm, H, P.eps, sm, red);
                stage_wait();
                mlp_fused(P, L, sm, sm + H, red, ws);
                __syncthreads();
                if (l + 1 < P.n_layers) {
                    ws = stage_rows(P.layers[l + 1].qkv, QKVR, H, wsb, WS);
                    if (!ws) prefetch_rows(P.layers[l + 1].qkv, QKVR, H, PF);
                } else {
                    prefetch_rows(P.lm_head, P.vocab, H, PF);
                }
                grid_sync(P.bar, target, P.prof);
                continue;
            }
            ws = stage_rows(L.gu, 2 * I, H, wsb, WS);
            if (!ws) prefetch_rows(L.down, H, I, PF);
            grid_sync(P.bar, target, P.prof);
            // GU
            load_norm(P.x, L.post_norm, H, P.eps, sm, red, normw);
            stage_wait();
            matvec<MV_STORE>(L.gu, 2 * I, H, sm, P.gu, red, nullptr, ws, -1, -1, nullptr, 0, nullptr, regx);
            __syncthreads();
            ws = stage_rows(L.down, H, I, wsb, WS);
            if (l + 1 < P.n_layers) prefetch_rows(P.layers[l + 1].qkv, QKVR, H, PF);
            else prefetch_rows(P.lm_head, P.vocab, H, PF);
            grid_sync(P.bar, target, P.prof);
            // DOWN
            for (int i = threadIdx.x; i < I; i += NT) {
                const float g = __ldcg(P.gu + 2 * i), u = __ldcg(P.gu + 2 * i + 1);  // interleaved
                sm[i] = g / (1.0f + expf(-g)) * u;
            }
            stage_wait();
            matvec<MV_ADD>(L.down, H, I, sm, P.x, red, nullptr, ws);
            __syncthreads();
            if (l + 1 < P.n_layers) ws = stage_rows(P.layers[l + 1].qkv, QKVR, H, wsb, WS);
            grid_sync(P.bar, target, P.prof);
        }
        // LM head + argmax (skipped for teacher-forced steps whose logits nobody reads)
        const bool need_lm = !P.ids || P.logits_all || step == P.n - 1;
        const bool more = step + 1 < P.n;
        if (need_lm) {
            lm_step(P, step, more, sm, red, nullptr);
        } else if (blockIdx.x == 0) {
            if (threadIdx.x == 0) P.ctl[1] = step + 1;
            embed(P, P.ids[step + 1]);
        }
        if (!more) break;
        if (P.n_layers > 0) {
            __syncthreads();
            ws = stage_rows(P.layers[0].qkv, QKVR, H, wsb, WS);
            if (!ws) prefetch_rows(P.layers[0].qkv, QKVR, H, PF);
        }
        grid_sync(P.bar, target, P.prof);
        if (__ldcg(reinterpret_cast<const int *>(P.ctl)) != 0) break;  // a stop token was chosen
    }
}


// ---------------------------------------------------------------------------------------------
// decode_df: the same step with dataflow counters instead of grid barriers (MQ_CUDA_SYNC=df).
//
// Each (layer, stage) has a counter that its producer blocks bump once per step (release) after
// writing their part; a consumer block waits (acquire) only for the stage it reads, and only if it
// has work in its own stage, so a block runs ahead into the next stage's set-up while slower
// blocks finish. Every stage reads all of the previous stage's output (except attention, which
// needs only QKV), so waits chain layer to layer and no buffer is overwritten while a slower block
// still reads it: a stage's writers run only after all readers of the buffer's previous contents
// have arrived on some counter this stage transitively waits for.
//
// Weights do not depend on activations, so a block's slice of the NEXT weight stage is copied into
// one of two shared-memory buffers by the bulk copy engine (cp.async.bulk + mbarrier, sm_90) as
// soon as the buffer is free, i.e. one whole stage ahead; the wait for the data dependency and the
// weight copy overlap. Slices larger than a buffer (and all of the lm_head) stream from global
// memory with an L2 prefetch instead (MQ_CUDA_LMRING: the lm_head through a ring of bulk copies
// from the DOWN buffer on, see lm_ring_prime). Stage order and buffers per layer:
//   QKV (buf 0) -> ATTN (no weights) -> O (buf 1) -> GU (buf 0) -> DOWN (buf 1) -> next QKV (buf 0)
// or, with the fused MLP (FUSE, the default): ... -> O (buf 1) -> MLP (gate|up pairs buf 0, downT
// rows buf 1; the next q|k|v copy into buf 0 after the block's arrival) -> next QKV.
// ---------------------------------------------------------------------------------------------
enum { S_QKV = 0, S_ATT = 1, S_O = 2, S_GU = 3, S_DOWN = 4, NSTAGE = 5 };

__device__ __forceinline__ void df_arrive(unsigned *c, unsigned long long *stamp) {
    __syncthreads();  // the block's writes happen-before thread 0's release
    if (threadIdx.x == 0) {
        if (stamp) *stamp = globaltimer();
        asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(c), "r"(1u) : "memory");
    }
}

// OPT_POLLR: poll with relaxed loads, then one acquire load of the counter (it reads a value at
// least as new as the one polled, so it synchronizes with the releases that reached the target).
__device__ __forceinline__ void df_wait(const Params &P, const unsigned *c, unsigned target,
                                        unsigned long long *stamp) {
    if (threadIdx.x == 0) {
        const long long t0 = clock64();
        const bool rel = P.opt & OPT_POLLR;
        while ((rel ? ld_relaxed(c) : ld_acquire(c)) < target) {
            if (clock64() - t0 > (1ll << 36)) {  // ~30 s: a dependency that never completes is a bug
                printf("megakernel(df): block %d stuck waiting for a counter to reach %u (at %u)\n", blockIdx.x,
                       target, ld_acquire(c));
                __trap();
            }
        }
        if (rel) (void)ld_acquire(c);
        if (stamp) *stamp = globaltimer();
    }
    __syncthreads();  // thread 0's acquire orders the block's later reads
}

// Blocks with a non-empty balanced slice of `rows` rows (block_rows gives rows*b/nb ...).
__device__ __forceinline__ unsigned producers(int rows) { return (unsigned)min(rows, (int)gridDim.x); }

// This block's rows [r0, r1) of a rows-row matrix; pairs: whole row pairs (2j, 2j+1) (OPT_HPAIR's
// gate|up split: rows / 2 pairs balanced over the blocks).
__device__ __forceinline__ void pair_rows(int rows, bool pairs, int &r0, int &r1) {
    if (!pairs) {
        block_rows(rows, blockIdx.x, gridDim.x, r0, r1);
        return;
    }
    block_rows(rows / 2, blockIdx.x, gridDim.x, r0, r1);
    r0 *= 2, r1 *= 2;
}


// Staged weight buffers: two shared-memory buffers, each with an mbarrier the bulk copy completes.
struct WStage {
    uint4 *buf[2];
    unsigned long long *mb;  // (2) mbarriers in shared memory
    unsigned phase[2];       // parity each buffer's next completion flips to
    int pend[2];             // a copy into the buffer is in flight
    size_t cap[2];           // bytes per buffer
    int iss;                 // the thread that issues the copies (OPT_ISSW: 32, else 0)
};

// Start copying this block's row slice of W (rows, cols) into buffer k; false (nothing issued)
// when the slice is empty, larger than a buffer, or the device has no bulk copy engine. The
// caller has passed a __syncthreads since the buffer's last readers.
// Invariants the mbarrier parity relies on: per buffer, issues and ws_take calls alternate, and
// every thread has left its ws_take (a __syncthreads, e.g. in df_arrive) before the buffer is
// issued again, so no thread can still be polling a phase that has completed twice. A block with
// no rows in a stage issues nothing for it (the same block_rows split), so its bare ws_take in
// that stage has nothing to wait for.
__device__ __forceinline__ bool ws_issue(WStage &S, int k, const __nv_bfloat16 *W, int rows, int cols,
                                         bool pairs = false) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    int r0, r1;
    pair_rows(rows, pairs, r0, r1);
    const size_t bytes = (size_t)(r1 - r0) * cols * 2;
    if (bytes == 0 || bytes > S.cap[k]) return false;
    if ((int)threadIdx.x == S.iss) bulk_g2s(smem_u32(S.buf[k]), W + (size_t)r0 * cols, bytes, smem_u32(S.mb + k));
    S.pend[k] = 1;
    return true;
#else
    (void)S, (void)k, (void)W, (void)rows, (void)cols, (void)pairs;
    return false;
#endif
}

// Wait until buffer k's copy has landed (all threads); returns the buffer, or nullptr if none.
__device__ __forceinline__ const uint4 *ws_take(WStage &S, int k) {
    if (!S.pend[k]) return nullptr;
    mb_wait(smem_u32(S.mb + k), S.phase[k]);
    S.phase[k] ^= 1u;
    S.pend[k] = 0;
    return S.buf[k];
}

// OPT_HPAIR applies: the block's gate|up rows fit in sm after x (the host sizes sm for
// max(hidden, inter, q_dim) floats)
__device__ __forceinline__ bool hpair_on(const Params &P) {
    const int G = (int)gridDim.x;
    return (P.opt & OPT_HPAIR) && P.hidden + 2 * ((P.inter + G - 1) / G) <= max(P.hidden, P.inter);
}

// The weight matrix of stage st (QKV, O, GU or DOWN) of layer l.
__device__ __forceinline__ const __nv_bfloat16 *stage_w(const Params &P, int l, int st, int &rows, int &cols) {
    const LayerW L = P.layers[l];
    const int H = P.hidden, I = P.inter;
    switch (st) {
    case S_QKV: rows = P.qdim + 2 * P.nkv * P.hd, cols = H; return L.qkv;
    case S_O: rows = H, cols = P.qdim; return L.o;
    case S_GU: rows = 2 * I, cols = H; return L.gu;
    default:  // (hidden, inter), or its transpose (inter, hidden) for the fused MLP
        if (P.fuse) rows = I, cols = H;
        else rows = H, cols = I;
        return L.down;
    }
}

// Start the weights of stage st of layer l into buffer k, or into L2 (P.wpf bytes, default none)
// when they do not fit. (Also prefetching the stage after into L2 measured slower: 708 vs 767
// tok/s, docs/perf-notes.md.)
__device__ __forceinline__ void ws_next(WStage &S, int k, const Params &P, int l, int st) {
    int rows, cols;
    const __nv_bfloat16 *W = stage_w(P, l, st, rows, cols);
    if (!ws_issue(S, k, W, rows, cols, st == S_GU && (hpair_on(P) || P.fuse)))
        prefetch_rows(W, rows, cols, P.wpf);
}

// The rest of a matvec stage once its input vector is in sm: wait for the staged weights of
// buffer buf, out (=|+=) W sm, publish on counter c. Sub-stage marks k .. k+3 (input load, weight
// wait, matvec, publish). (OPT_HPAIR's gate|up stage spells the same steps out with its SiLU
// between matvec and publish: folding it in here as a callback raised decode_df's spills.)
template <int MODE>
__device__ __forceinline__ void df_mv(const Params &P, WStage &S, int buf, const __nv_bfloat16 *W, int rows,
                                      int cols, const float *sm, float *out, float *red, const float *xo, bool regx,
                                      unsigned *c, unsigned long long *st, int k, float *out2 = nullptr) {
    sprof_mark(P, k);
    const uint4 *ws = ws_take(S, buf);
    sprof_mark(P, k + 1);
    matvec<MODE>(W, rows, cols, sm, out, red, nullptr, ws, -1, -1, out2, 0, xo, regx);
    sprof_mark(P, k + 2);
    df_arrive(c, st);
    sprof_mark(P, k + 3);
}

// The block's rows [r0, r1) of the residual x into xo (shared memory) for MV_ADD; returns xo, or
// NULL (MV_ADD reads them back from x) when xo is NULL or the block has more than NT rows.
__device__ __forceinline__ const float *own_x(const Params &P, int r0, int r1, float *xo) {
    if (!xo || r1 - r0 > NT) return nullptr;
    if ((int)threadIdx.x < r1 - r0) xo[threadIdx.x] = __ldcg(P.x + r0 + threadIdx.x);
    return xo;  // the caller's dependency wait (__syncthreads) orders these stores before the reads
}

// FUSE (MQ_CUDA_FUSE=1, P.fuse): gate|up and down as one stage (the fused MLP below); a template
// parameter so that each kernel holds only its own MLP's code (both in one body raised the spills
// and cost the unfused kernel 4%, run 67). RING (with FUSE only): attention's long chunks read their
// K/V rows through the bulk-copy ring (att_pass, MQ_CUDA_ATTPIPE); a kernel of its own, launched
// only for long contexts, because its code in the default kernel cost short contexts 1-5% (spills,
// session 15 run 84).
template <typename KT, bool FUSE, bool RING = false>
__global__ void __launch_bounds__(NT, 1) decode_df(const __grid_constant__ Params P) {
    // The out-of-line stages (attention, the lm_head's) read Params through this shared
    // copy, the kernel body from the parameter itself. Passed by value, those functions read the
    // fields from a local copy (a 680-byte stack frame) that mostly lives in L2 (run 20: grid-constant
    // was +4.5-7.6%); through the parameter's generic address, compute-sanitizer's instrumented clones
    // of them read wrong values (run 22).
    __shared__ Params sP;
    if (threadIdx.x == 0) sP = P;
    __syncthreads();
    const Params &Ps = sP;
    extern __shared__ __align__(128) unsigned char dsm[];
    __shared__ float red[NT / 32 * 2 > 32 ? NT / 32 * 2 : 32];
    __shared__ float s_xo[NT];  // the block's own rows of x (OPT_OWNX)
    __shared__ __align__(8) unsigned long long s_mb[2];
    const int H = P.hidden, I = P.inter, Lc = P.n_layers, QKVR = P.qdim + 2 * P.nkv * P.hd;
    const unsigned G = gridDim.x;
    // Shared memory: [weight buffer 0][weight buffer 1][spare region (P.kvbuf, may be 0)][sm: stage
    // vectors / attention scratch]. During the lm_head, its ring (P.lmring, P.lmns) covers buffer 1,
    // the spare region, sm and beyond; attention's K/V ring (RING) uses buffer 0 and the spare region.
    // Which buffer each stage reads: QKV 0, O 1, GU 0, DOWN 1; each stage's copy starts when the
    // previous stage starts (one stage ahead).
    const bool regx = P.opt & OPT_REGX;
    const bool normw = P.opt & OPT_NORMW, ownx = P.opt & OPT_OWNX;
    const bool gue = P.opt & OPT_GUEARLY;
    WStage S;
    S.mb = s_mb;
    S.iss = (P.opt & OPT_ISSW) && NT > 32 ? 32 : 0;
    for (int k = 0; k < 2; k++) S.phase[k] = 0, S.pend[k] = 0;
    S.cap[0] = P.wbuf, S.cap[1] = P.wbuf1;
    S.buf[0] = reinterpret_cast<uint4 *>(dsm);
    S.buf[1] = reinterpret_cast<uint4 *>(dsm + P.wbuf);
    float *sm = reinterpret_cast<float *>(dsm + (size_t)P.wbuf + P.wbuf1 + P.kvbuf);
    const int bQ = 0, bO = 1, bG = 0, bD = 1;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (threadIdx.x == 0 && P.wbuf) {
        for (int k = 0; k < 2; k++)
            asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(s_mb + k)) : "memory");
        if constexpr (RING) att_ring_init();  // attention's K/V ring
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
#endif
    wpol_init(P);
    sprof_begin(P);
    if (threadIdx.x == 0) lm_ring_init(P);  // MQ_CUDA_LMRING: the lm_head ring's mbarriers and state
    __syncthreads();
    unsigned *cE = P.flg + (size_t)Lc * NSTAGE;  // embeds done (one per step)
    // producers per stage per step (attention's varies with the context length)
    const bool hpair = hpair_on(P);
    // MQ_CUDA_FUSE=1 (P.fuse): gate|up and down are one stage (fused MLP below, arriving on the DOWN
    // counter)
    constexpr bool fuse = FUSE;
    const unsigned nQKV = producers(QKVR), nO = producers(H), nGU = producers(hpair ? I : 2 * I);
    const unsigned nDN = fuse ? producers(I) : producers(H);  // arrivals on a layer's last counter
    unsigned tATT = 0;  // attention items so far in this launch
    // profile: stage instance k of this block -> stamps (2k: inputs ready, 2k+1: output published)
    int kinst = 0;
    auto stamp = [&](int e) -> unsigned long long * {
        if (!P.prof || kinst >= P.prof_k) return nullptr;
        return P.prof + ((size_t)(2 * kinst + e) * G + blockIdx.x);
    };

    if (blockIdx.x == 0) {
        embed(P, P.ids ? P.ids[0] : P.first);
        df_arrive(cE, nullptr);
    }
    if (Lc > 0) ws_next(S, bQ, P, 0, S_QKV);

    for (int step = 0; step < P.n; step++) {
        const int pos = P.pos + step, len = pos + 1;
        const bool more = step + 1 < P.n;
        int csz;
        const unsigned items = (unsigned)P.nkv * (unsigned)att_chunks(P, len, csz);
        tATT += items;
        // the O stage combines the attention chunks (else the last chunk of each kv head does)
        const bool ocomb = P.ocomb != 0;
        const unsigned ts = (unsigned)step + 1;  // steps whose producers must have arrived
        for (int l = 0; l < Lc; l++) {
            const LayerW L = P.layers[l];
            unsigned *c = P.flg + (size_t)l * NSTAGE;
            int r0, r1;
            // ---- QKV: rmsnorm(x) -> q|k|v rows
            ws_next(S, bO, P, l, S_O);
            block_rows(QKVR, blockIdx.x, G, r0, r1);
            const bool qkv_waited = r1 > r0;  // (fuse: this block has seen the previous MLP's atomics on x)
            if (r1 > r0) {
                df_wait(P, l == 0 ? cE : c - NSTAGE + S_DOWN, l == 0 ? ts : nDN * ts, stamp(0));
                if (l == 0 && __ldcg(reinterpret_cast<const int *>(P.ctl)) != 0) break;  // stop token
                sprof_mark(P, -1);
                load_norm(P.x, L.in_norm, H, P.eps, sm, red, normw);
                df_mv<MV_STORE>(P, S, bQ, L.qkv, QKVR, H, sm, P.qkv, red, nullptr, regx, c + S_QKV, stamp(1), SP_QKV);
            } else {
                ws_take(S, bQ);
                if (l == 0) {  // still honour a stop token
                    df_wait(P, cE, ts, nullptr);
                    if (__ldcg(reinterpret_cast<const int *>(P.ctl)) != 0) break;
                }
            }
            kinst++;
            // ---- ATTN: (kv head, chunk) items
            // OPT_GUEARLY: q|k|v's buffer is free once this block's QKV stage is done (df_arrive's
            // __syncthreads; a block without q|k|v rows never read it), so gate|up's copy can start
            // now instead of at the O stage: the attention blocks, the last to reach O, otherwise
            // start it only a short O stage before gate|up needs it
            // OPT_GUATT: not in a block with an attention item, whose small latency-bound loads
            // would queue behind the copy's 96 KB (run 21: head prep +1 us); it starts at O there
            const bool gue_now = gue && !((P.opt & OPT_GUATT) && blockIdx.x < items);
            if (gue_now) ws_next(S, bG, P, l, S_GU);
            if (blockIdx.x < items) {
                df_wait(P, c + S_QKV, nQKV * ts, stamp(0));
                sprof_mark(P, -1);
                attention<KT, 4, RING>(Ps, l, pos, sm, ocomb);
                sprof_mark(P, SP_ATT + 3);
                df_arrive(c + S_ATT, stamp(1));
                sprof_mark(P, SP_ATT + 4);
            }
            kinst++;
            // ---- O: x += W_o att
            __syncthreads();  // the q|k|v buffer's readers (the QKV stage, attention's K/V ring) are done
            if (!gue_now) ws_next(S, bG, P, l, S_GU);
            block_rows(H, blockIdx.x, G, r0, r1);
            if (r1 > r0) {
                // before the wait: these rows were last written by this block (its DOWN stage, or the
                // embedding that its QKV stage of layer 0 waited for); with the fused MLP by every
                // block's atomics, which this block acquired only if its QKV stage waited for them
                const float *xo_p = own_x(P, r0, r1, ownx && (!fuse || qkv_waited) ? s_xo : nullptr);
                df_wait(P, c + S_ATT, tATT, stamp(0));
                sprof_mark(P, -1);
                const int nch = (int)(items / (unsigned)P.nkv);
                if (ocomb && nch > 1) {
                    combine_att(P, nch, sm, sm + P.qdim);
                } else {
                    load_vec(P.att, sm, P.qdim);
                }
                df_mv<MV_ADD>(P, S, bO, L.o, H, P.qdim, sm, P.x, red, xo_p, regx, c + S_O, stamp(1), SP_O,
                              fuse ? P.x1 : nullptr);
            } else {
                ws_take(S, bO);
            }
            kinst++;
            if (fuse) {
                // ---- MLP, fused: rmsnorm(x1) -> this block's (gate, up) pairs [c0, c1) -> h in shared
                // memory -> x += (downT rows c0..c1)^T h with float4 atomics (down_splitk). One stage
                // and one dependency hop instead of GU + DOWN. The norm reads x1, the O stage's copy of
                // x, because x takes other blocks' atomics meanwhile (x1 is next written by the next
                // layer's O stage, which transitively waits for every block's arrival here).
                __syncthreads();  // buffer 1's readers (the O stage) are done
                int c0, c1;
                block_rows(I, blockIdx.x, G, c0, c1);
                const bool altq = (P.opt & OPT_ALTQ) && c1 > c0;
                ws_next(S, bD, P, l, S_DOWN);
                // the next q|k|v slice's pointer, loaded before the wait: its copy is issued right
                // after the gate|up matvec (OPT_ALTQ; else after this block's arrival). Run 67 issued
                // it there with the pointer loaded from the layer table at that point: ~2 us on the
                // critical path; preloaded, that placement beats the one after the arrival (run 74)
                const __nv_bfloat16 *wq = l + 1 < Lc ? P.layers[l + 1].qkv : more ? P.layers[0].qkv : nullptr;
                if (c1 > c0) {
                    const int nc = c1 - c0;
                    df_wait(P, c + S_O, nO * ts, stamp(0));
                    sprof_mark(P, -1);
                    load_norm(P.x1, L.post_norm, H, P.eps, sm, red, normw);
                    float *g2 = sm + H, *h = g2 + 2 * nc;  // the host sizes sm for these (fz)
                    sprof_mark(P, SP_GU);
                    const uint4 *wg = ws_take(S, bG);
                    sprof_mark(P, SP_GU + 1);
                    matvec<MV_SMEM>(L.gu, 2 * I, H, sm, g2, red, nullptr, wg, 2 * c0, 2 * c1, nullptr, 0, nullptr, regx);
                    __syncthreads();
                    // OPT_ALTQ: buffer 0's readers (the matvec) are done: the next q|k|v copy now
                    if (altq && wq && !ws_issue(S, bQ, wq, QKVR, H)) prefetch_rows(wq, QKVR, H, P.wpf);
                    sprof_mark(P, SP_GU + 2);
                    silu_pairs(g2, h, nc);
                    __syncthreads();
                    sprof_mark(P, SP_DOWN);
                    const uint4 *wd = ws_take(S, bD);
                    sprof_mark(P, SP_DOWN + 1);
                    if (wd) down_part<true>(P, reinterpret_cast<const uint2 *>(wd), nc, h);
                    else down_part<false>(P, reinterpret_cast<const uint2 *>(L.down + (size_t)c0 * H), nc, h);
                    sprof_mark(P, SP_DOWN + 2);
                    df_arrive(c + S_DOWN, stamp(1));
                    sprof_mark(P, SP_GU + 3);
                } else {
                    ws_take(S, bG);  // (nothing in flight: no pairs, no copy)
                    ws_take(S, bD);
                    __syncthreads();
                }
                // buffer 0's readers (the gate|up matvec) are done: the next q|k|v copy (unless
                // OPT_ALTQ issued it), or at the last layer the lm_head's L2 prefetch
                if (!wq) prefetch_rows(P.lm_head, P.vocab, H, P.lmpre);  // (0 bytes: none)
                else if (!altq && !ws_issue(S, bQ, wq, QKVR, H)) prefetch_rows(wq, QKVR, H, P.wpf);
                sprof_mark(P, SP_DOWN + 3);
                kinst += 2;
                continue;
            }
            // ---- GU: rmsnorm(x) -> gate|up rows (interleaved)
            __syncthreads();
            ws_next(S, bD, P, l, S_DOWN);
            pair_rows(2 * I, hpair, r0, r1);
            if (r1 > r0) {
                df_wait(P, c + S_O, nO * ts, stamp(0));
                sprof_mark(P, -1);
                load_norm(P.x, L.post_norm, H, P.eps, sm, red, normw);
                if (!hpair) {
                    df_mv<MV_STORE>(P, S, bG, L.gu, 2 * I, H, sm, P.gu, red, nullptr, regx, c + S_GU, stamp(1),
                                    SP_GU);
                } else {
                    // the block's gate|up rows into shared memory (after x), then h for its pairs
                    // into P.gu[j] (DOWN reads h, I floats); the same float ops as load_silu
                    float *g2 = sm + H;
                    sprof_mark(P, SP_GU);
                    const uint4 *ws = ws_take(S, bG);
                    sprof_mark(P, SP_GU + 1);
                    matvec<MV_SMEM>(L.gu, 2 * I, H, sm, g2, red, nullptr, ws, r0, r1, nullptr, 0, nullptr, regx);
                    __syncthreads();
                    for (int j = threadIdx.x; j < (r1 - r0) / 2; j += NT) {
                        const float gt = g2[2 * j], up = g2[2 * j + 1];
                        P.gu[r0 / 2 + j] = gt / (1.0f + expf(-gt)) * up;
                    }
                    sprof_mark(P, SP_GU + 2);
                    df_arrive(c + S_GU, stamp(1));
                    sprof_mark(P, SP_GU + 3);
                }
            } else {
                ws_take(S, bG);
            }
            kinst++;
            // ---- DOWN: x += W_down (silu(gate) * up)
            __syncthreads();
            if (l + 1 < Lc) ws_next(S, bQ, P, l + 1, S_QKV);
            else if (more) ws_next(S, bQ, P, 0, S_QKV);  // next step's first layer, during the lm_head
            else prefetch_rows(P.lm_head, P.vocab, H, (size_t)1 << 20);
            block_rows(H, blockIdx.x, G, r0, r1);
            if (r1 > r0) {
                const float *xo_p = own_x(P, r0, r1, ownx ? s_xo : nullptr);  // written by its O stage
                df_wait(P, c + S_GU, nGU * ts, stamp(0));
                sprof_mark(P, -1);
                if (hpair) load_vec(P.gu, sm, I);  // h, published by the gate|up blocks
                else load_silu(P.gu, sm, I);
                df_mv<MV_ADD>(P, S, bD, L.down, H, I, sm, P.x, red, xo_p, regx, c + S_DOWN, stamp(1), SP_DOWN);
            } else {
                ws_take(S, bD);
            }
            kinst++;
        }
        if (Lc > 0 && __ldcg(reinterpret_cast<const int *>(P.ctl)) != 0) break;
        // ---- LM head + argmax; the last block embeds the next token and publishes it on cE
        const bool need_lm = !P.ids || P.logits_all || step == P.n - 1;
        const unsigned *cd = Lc > 0 ? P.flg + (size_t)(Lc - 1) * NSTAGE + S_DOWN : cE;
        const unsigned td = Lc > 0 ? nDN * ts : ts;
        if (need_lm) {
            lm_ring_prime(Ps, sm);  // the lm_head's first chunks do not wait for x (MQ_CUDA_LMRING)
            df_wait(P, cd, td, stamp(0));
            // with no layers the stop flag set by the previous step's lm_step is read here (cE acquired)
            if (Lc == 0 && __ldcg(reinterpret_cast<const int *>(P.ctl)) != 0) break;
            if (lm_step<true>(Ps, step, more, sm, red, stamp(1)) && more) df_arrive(cE, nullptr);
        } else if (blockIdx.x == 0) {
            df_wait(P, cd, td, stamp(0));
            if (threadIdx.x == 0) P.ctl[1] = step + 1;
            embed(P, P.ids[step + 1]);
            df_arrive(cE, stamp(1));
        }
        kinst++;
        if (!more) break;
    }
    // no bulk copy may still be writing this block's shared memory when it exits
    ws_take(S, 0);
    ws_take(S, 1);
    lm_ring_drain(Ps);
    sprof_end(P);
}

}  // namespace mqk

#include "megakernel_cl.cuh"

// The kernel for a KV cache of element type kvt (mqk::KV_F32, KV_BF16, KV_F16); df = 1: the dataflow kernel,
// 2: the dataflow kernel with the fused MLP (MQ_CUDA_FUSE=1), 3: that with attention's K/V ring (long
// contexts), 4: the cluster kernel (decode_cl, sm_90), 0: the grid-barrier kernel.
extern "C" const void *mqk_kernel(int kvt, int df) {
    using namespace mqk;
    if (df == 4)  // the cluster kernel (sm_90)
        return kvt == KV_F32    ? reinterpret_cast<const void *>(&decode_cl<float>)
             : kvt == KV_BF16 ? reinterpret_cast<const void *>(&decode_cl<__nv_bfloat16>)
                              : reinterpret_cast<const void *>(&decode_cl<__half>);
    if (df == 3)
        return kvt == KV_F32    ? reinterpret_cast<const void *>(&decode_df<float, true, true>)
             : kvt == KV_BF16 ? reinterpret_cast<const void *>(&decode_df<__nv_bfloat16, true, true>)
                              : reinterpret_cast<const void *>(&decode_df<__half, true, true>);
    if (df == 2)
        return kvt == KV_F32    ? reinterpret_cast<const void *>(&decode_df<float, true>)
             : kvt == KV_BF16 ? reinterpret_cast<const void *>(&decode_df<__nv_bfloat16, true>)
                              : reinterpret_cast<const void *>(&decode_df<__half, true>);
    if (df)
        return kvt == KV_F32    ? reinterpret_cast<const void *>(&decode_df<float, false>)
             : kvt == KV_BF16 ? reinterpret_cast<const void *>(&decode_df<__nv_bfloat16, false>)
                              : reinterpret_cast<const void *>(&decode_df<__half, false>);
    return kvt == KV_F32    ? reinterpret_cast<const void *>(&decode_kernel<float>)
         : kvt == KV_BF16 ? reinterpret_cast<const void *>(&decode_kernel<__nv_bfloat16>)
                          : reinterpret_cast<const void *>(&decode_kernel<__half>);
}
