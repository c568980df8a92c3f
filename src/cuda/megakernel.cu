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
//          bf16; head-major (layer, kv head, pos, hd), so a chunk's rows are contiguous),
//          online-softmax over the chunk (flash-decoding); the last chunk to finish combines
//   O      o_proj matvec, residual add into x
//   GU     rmsnorm(x) -> fused gate|up matvec
//   DOWN   silu(gate)*up -> down matvec, residual add into x
// then final rmsnorm + lm_head over all blocks with a per-block argmax; the last block to finish
// reduces the argmax, embeds the next token into x and (greedy) feeds it to the next step.
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>

#include "megakernel.cuh"
#include "sample.cuh"

namespace mqk {

constexpr int NW = NT / 32;  // warps per block


// the shared-memory address of a generic pointer into shared memory
__device__ __forceinline__ unsigned smem_u32(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }

__device__ __forceinline__ unsigned ld_acquire(const unsigned *p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
// a relaxed gpu-scope load: sees other SMs' writes (no stale L1 line) without invalidating L1
__device__ __forceinline__ unsigned ld_relaxed(const unsigned *p) {
    unsigned v;
    asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

// Grid barrier: `bar` only grows within a launch (the host zeroes it before each launch); each
// block adds 1 per barrier and waits until the count reaches (barriers so far) * gridDim.x.
// The fences make every block's global writes before the barrier visible to all after it.
__device__ __forceinline__ unsigned long long globaltimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}

// prof (optional): block 0 stamps the time each barrier opens, prof[i] for barrier i.
__device__ __forceinline__ void grid_sync(unsigned *bar, unsigned &target, unsigned long long *prof) {
    __syncthreads();  // the block's writes happen-before thread 0's release below
    target += gridDim.x;
    if (threadIdx.x == 0) {
        // arrive with release semantics (no round trip), then poll with acquire
        asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(bar), "r"(1u) : "memory");
        // watchdog: a barrier that never opens is a bug; report it and trap instead of hanging
        const long long t0 = clock64();
        while (ld_acquire(bar) < target) {
            if (clock64() - t0 > (1ll << 36)) {  // ~30 s at 2 GHz
                printf("megakernel: block %d stuck at barrier %u (count %u)\n", blockIdx.x, target, ld_acquire(bar));
                __trap();
            }
        }
        if (prof && blockIdx.x == 0) {
            const unsigned i = target / gridDim.x - 1;
            if (i < (1u << 16)) prof[i] = globaltimer();
        }
    }
    __syncthreads();  // the acquire by thread 0 orders the block's later reads
}

// Sub-stage profile (MQ_CUDA_PROFILE=1, dataflow kernel): block 0's thread 0 adds the SM cycles since
// its previous mark to s_sp[k] and counts the marks in s_sp[24 + k] (k < 24); k < 0 only sets the
// start. Shared memory, flushed to P.sprof at the end: a mark costs a few cycles, not a global load.
// first sub-stage index of each stage: q|k|v, o, gate|up, down have 4 (input, weight wait, matvec,
// publish; df_mv), attention 5 (head prep, softmax, partials, combine, publish); gpu.cu names them
// SP_ATTLOOP: the online-softmax loop inside att_pass (SP_ATT + 1 is then its row-group combine)
enum { SP_QKV = 0, SP_ATT = 4, SP_O = 9, SP_GU = 13, SP_DOWN = 17, SP_ATTLOOP = 21 };
__shared__ unsigned long long s_sp[49];  // [k]: cycles, [24 + k]: marks, [48]: the previous mark
__device__ __forceinline__ void sprof_mark(const Params &P, int k) {
    if (P.sprof && blockIdx.x == 0 && threadIdx.x == 0) {
        const unsigned long long t = clock64();
        if (k >= 0 && k < 24) {
            s_sp[k] += t - s_sp[48];
            s_sp[24 + k] += 1;
        }
        s_sp[48] = t;
    }
}
// start (at kernel start) and flush (at its end) the block-0 sub-stage counters
__device__ __forceinline__ void sprof_begin(const Params &P) {
    if (P.sprof && blockIdx.x == 0 && threadIdx.x == 0)
        for (int k = 0; k < 49; k++) s_sp[k] = 0;
}
__device__ __forceinline__ void sprof_end(const Params &P) {
    if (P.sprof && blockIdx.x == 0 && threadIdx.x == 0)
        for (int k = 0; k < 48; k++) P.sprof[k] = s_sp[k];
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the block; every thread gets the same value. red: NW floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float *red) {
    v = warp_sum(v);
    __syncthreads();  // red may still be read by a previous call
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < NW; i++) s += red[i];
    return s;
}

__device__ __forceinline__ float bf2f(uint32_t h16) { return __uint_as_float(h16 << 16); }

// dot of 8 bf16 (packed in a uint4) with 8 floats in shared memory
__device__ __forceinline__ float dot8(uint4 w, const float *x) {
    float4 a = *reinterpret_cast<const float4 *>(x);
    float4 b = *reinterpret_cast<const float4 *>(x + 4);
    float s = __uint_as_float(w.x << 16) * a.x;
    s = fmaf(__uint_as_float(w.x & 0xffff0000u), a.y, s);
    s = fmaf(__uint_as_float(w.y << 16), a.z, s);
    s = fmaf(__uint_as_float(w.y & 0xffff0000u), a.w, s);
    s = fmaf(__uint_as_float(w.z << 16), b.x, s);
    s = fmaf(__uint_as_float(w.z & 0xffff0000u), b.y, s);
    s = fmaf(__uint_as_float(w.w << 16), b.z, s);
    s = fmaf(__uint_as_float(w.w & 0xffff0000u), b.w, s);
    return s;
}

// The L2 policy of weight reads, made at kernel start (wpol_init): evict-first with OPT_EVICT.
// Every weight byte is read once per token and 1.2 GB stream through a 50 MB L2, so keeping them
// there only evicts what is reused: the KV cache, activations, norm weights, RoPE table, code.
__shared__ unsigned long long s_wpol;

// thread 0 sets s_wpol; the caller's next __syncthreads publishes it
__device__ __forceinline__ void wpol_init(const Params &P) {
    if (threadIdx.x != 0) return;
    unsigned long long p;
    if (P.opt & OPT_EVICT) asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
    else asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(p));
    s_wpol = p;
}

__device__ __forceinline__ uint4 ldw(const uint4 *p) {  // weights: read-only for the launch
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p), "l"(s_wpol));
    return v;
}

// 8 consecutive K/V cache elements as floats (zeros when !ok); the cache is bf16 or f32.
__device__ __forceinline__ void ld8(const __nv_bfloat16 *p, bool ok, float f[8]) {
    uint4 u = ok ? __ldcg(reinterpret_cast<const uint4 *>(p)) : make_uint4(0, 0, 0, 0);
    f[0] = bf2f(u.x & 0xffff), f[1] = bf2f(u.x >> 16), f[2] = bf2f(u.y & 0xffff), f[3] = bf2f(u.y >> 16);
    f[4] = bf2f(u.z & 0xffff), f[5] = bf2f(u.z >> 16), f[6] = bf2f(u.w & 0xffff), f[7] = bf2f(u.w >> 16);
}
__device__ __forceinline__ void ld8(const float *p, bool ok, float f[8]) {
    const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
    float4 a = ok ? __ldcg(reinterpret_cast<const float4 *>(p)) : z;
    float4 b = ok ? __ldcg(reinterpret_cast<const float4 *>(p) + 1) : z;
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
// the same from shared memory (K/V rows staged there by kv_stage)
__device__ __forceinline__ void ld8s(const __nv_bfloat16 *p, bool ok, float f[8]) {
    uint4 u = ok ? *reinterpret_cast<const uint4 *>(p) : make_uint4(0, 0, 0, 0);
    f[0] = bf2f(u.x & 0xffff), f[1] = bf2f(u.x >> 16), f[2] = bf2f(u.y & 0xffff), f[3] = bf2f(u.y >> 16);
    f[4] = bf2f(u.z & 0xffff), f[5] = bf2f(u.z >> 16), f[6] = bf2f(u.w & 0xffff), f[7] = bf2f(u.w >> 16);
}
__device__ __forceinline__ void ld8s(const float *p, bool ok, float f[8]) {
    const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
    float4 a = ok ? *reinterpret_cast<const float4 *>(p) : z;
    float4 b = ok ? *(reinterpret_cast<const float4 *>(p) + 1) : z;
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
__device__ __forceinline__ void st1(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void st1(float *p, float v) { *p = v; }

// Rows [r0, r1) of a matrix of `rows` rows that block b handles (contiguous, balanced).
__device__ __forceinline__ void block_rows(int rows, int b, int nb, int &r0, int &r1) {
    r0 = (int)((long long)rows * b / nb);
    r1 = (int)((long long)rows * (b + 1) / nb);
}

// Ask L2 to fetch bytes [p, p+n) (fire and forget).
__device__ __forceinline__ void prefetch_l2(const void *p, size_t n) {
    const char *c = static_cast<const char *>(p);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // one bulk prefetch per 32 KB piece, spread over the block's threads
    const size_t piece = 32768;
    for (size_t off = (size_t)threadIdx.x * piece; off < n; off += (size_t)NT * piece) {
        size_t len = n - off < piece ? n - off : piece;
        len &= ~(size_t)15;
        if (len)
            asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(c + off),
                         "r"((unsigned)len), "l"(s_wpol)
                         : "memory");
    }
#else
    for (size_t off = (size_t)threadIdx.x * 128; off < n; off += (size_t)NT * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(c + off));
#endif
}

// Prefetch block b's row slice of a (rows, cols) bf16 matrix.
__device__ __forceinline__ void prefetch_rows(const __nv_bfloat16 *W, int rows, int cols, size_t cap) {
    int r0, r1;
    block_rows(rows, blockIdx.x, gridDim.x, r0, r1);
    size_t n = (size_t)(r1 - r0) * cols * 2;
    prefetch_l2(W + (size_t)r0 * cols, n < cap ? n : cap);
}

// Start copying block b's row slice of W (rows, cols) into shared memory ws (cp.async, 16 B per
// copy; completes in the background). Returns ws, or nullptr when the slice is larger than cap
// bytes (then matvec streams from global). Callers must __syncthreads() before reusing ws.
__device__ __forceinline__ const uint4 *stage_rows(const __nv_bfloat16 *W, int rows, int cols, uint4 *ws, size_t cap,
                                                  int rr0 = -1, int rr1 = -1, bool commit = true) {
    int r0 = rr0, r1 = rr1;
    if (rr0 < 0) block_rows(rows, blockIdx.x, gridDim.x, r0, r1);
    const size_t n16 = (size_t)(r1 - r0) * cols / 8;
    if (!ws || n16 * 16 > cap) return nullptr;
    const uint4 *src = reinterpret_cast<const uint4 *>(W + (size_t)r0 * cols);
    for (size_t i = threadIdx.x; i < n16; i += NT) {
        const unsigned dst = (unsigned)__cvta_generic_to_shared(ws + i);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src + i) : "memory");
    }
    if (commit) asm volatile("cp.async.commit_group;" ::: "memory");
    return ws;
}

// Wait for this thread's staged copies, then for everyone's.
__device__ __forceinline__ void stage_wait() {
    asm volatile("cp.async.wait_all;" ::: "memory");
    __syncthreads();
}

enum { MV_STORE = 0, MV_ADD = 1, MV_LOGITS = 2, MV_SMEM = 3 };


// 8 floats of x (a lane's piece) in registers
__device__ __forceinline__ float dot8r(uint4 w, const float (&x)[8]) {
    float s = __uint_as_float(w.x << 16) * x[0];
    s = fmaf(__uint_as_float(w.x & 0xffff0000u), x[1], s);
    s = fmaf(__uint_as_float(w.y << 16), x[2], s);
    s = fmaf(__uint_as_float(w.y & 0xffff0000u), x[3], s);
    s = fmaf(__uint_as_float(w.z << 16), x[4], s);
    s = fmaf(__uint_as_float(w.z & 0xffff0000u), x[5], s);
    s = fmaf(__uint_as_float(w.w << 16), x[6], s);
    s = fmaf(__uint_as_float(w.w & 0xffff0000u), x[7], s);
    return s;
}

// One lane's NX uint4s of row u of a block's slice (n8 = 32 * NX uint4s per row): lane + 32k.
template <int NX>
__device__ __forceinline__ void row_ld(const __nv_bfloat16 *W, int cols, int r0, int u, const uint4 *ws, int lane,
                                       uint4 (&w)[NX]) {
    if (ws) {
        const uint4 *sr = ws + (size_t)u * (32 * NX) + lane;
#pragma unroll
        for (int k = 0; k < NX; k++) w[k] = sr[32 * k];
    } else {
        const uint4 *wr = reinterpret_cast<const uint4 *>(W + (size_t)(r0 + u) * cols) + lane;
#pragma unroll
        for (int k = 0; k < NX; k++) w[k] = ldw(wr + 32 * k);
    }
}

// matvec's register path for rows of 256 * NX columns, one row per warp at a time (KS == 1): each
// lane holds its NX pieces of x (columns 8 * (lane + 32k) ...) in registers, read from shared
// memory once instead of once per row (the per-row x reads were 4x the weight bytes: f32 and 2-way
// bank conflicts). (Two rows in flight per warp measured no faster, run 12.)
template <int NX, typename Emit>
__device__ __forceinline__ void mv_reg(const __nv_bfloat16 *W, int cols, const float *xs, int r0, int nr,
                                       const uint4 *ws, int pfd, Emit &emit) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float xr[NX][8];
#pragma unroll
    for (int k = 0; k < NX; k++) {
        const float4 a = *reinterpret_cast<const float4 *>(xs + 8 * (lane + 32 * k));
        const float4 b = *reinterpret_cast<const float4 *>(xs + 8 * (lane + 32 * k) + 4);
        xr[k][0] = a.x, xr[k][1] = a.y, xr[k][2] = a.z, xr[k][3] = a.w;
        xr[k][4] = b.x, xr[k][5] = b.y, xr[k][6] = b.z, xr[k][7] = b.w;
    }
    for (int u = warp; u < nr; u += NW) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        if (pfd > 0 && !ws && lane == 0 && u + pfd * NW < nr)  // the row this warp reaches pfd trips on
            asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(
                             W + (size_t)(r0 + u + pfd * NW) * cols),
                         "r"((unsigned)cols * 2), "l"(s_wpol)
                         : "memory");
#endif
        uint4 w[NX];
        row_ld<NX>(W, cols, r0, u, ws, lane, w);
        float a0 = 0.0f, a1 = 0.0f;
#pragma unroll
        for (int k = 0; k < NX; k += 2) {
            a0 += dot8r(w[k], xr[k]);
            if (k + 1 < NX) a1 += dot8r(w[k + 1], xr[k + 1]);
        }
        emit(r0 + u, warp_sum(a0 + a1));
    }
}

// out[r] (=|+=) W[r,:] . xs for this block's rows of W (rows, cols), cols % 8 == 0, xs in smem.
// A block's rows are split into units (row, k-slice) over its warps; when a block has fewer rows
// than warps each row is cut into KS slices whose partial sums meet in shared memory (fixed order:
// deterministic). MV_LOGITS also tracks the block's (max, lowest index) into *best.
// rr0 >= 0: use rows [rr0, rr1) instead of the balanced split. out2: MV_ADD also stores there.
// MV_SMEM: out[row - rr0] = dot (a block-local result in shared memory).
// xo (MV_ADD): the current values of the block's rows, xo[row - r0] in shared memory, instead of
// reading them back from out. reg: use the register path (mv_reg) where it applies.
template <int MODE>
__device__ void matvec(const __nv_bfloat16 *W, int rows, int cols, const float *xs, float *out,
                       float *red, unsigned long long *best, const uint4 *ws = nullptr, int rr0 = -1,
                       int rr1 = -1, float *out2 = nullptr, int pfd = 0, const float *xo = nullptr,
                       bool reg = false) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int r0 = rr0, r1 = rr1;
    if (rr0 < 0) block_rows(rows, blockIdx.x, gridDim.x, r0, r1);
    const int nr = r1 - r0;
    const int n8 = cols >> 3;
    int KS = nr >= NW ? 1 : NW / (nr > 0 ? nr : 1);
    int maxks = n8 / 32 > 0 ? n8 / 32 : 1;
    if (KS > maxks) KS = maxks;
    const int nunits = nr * KS;
    unsigned long long mybest = 0;
    // a finished row (KS == 1): its value acc (the same in every lane) to out / the running argmax
    auto emit = [&](int row, float acc) {
        if (lane == 0) {
            if (MODE == MV_STORE || MODE == MV_LOGITS) out[row] = acc;
            else if (MODE == MV_SMEM) out[row - r0] = acc;
            else {
                const float v = (xo ? xo[row - r0] : __ldcg(out + row)) + acc;
                out[row] = v;
                if (out2) out2[row] = v;
            }
        }
        if (MODE == MV_LOGITS) {
            unsigned k = __float_as_uint(acc);
            k = (k & 0x80000000u) ? ~k : (k | 0x80000000u);
            if (acc != acc) k = 0;  // NaN never wins
            unsigned long long key = ((unsigned long long)k << 32) | (0xffffffffu - (unsigned)row);
            if (key > mybest) mybest = key;
        }
    };
    // the register path: rows of 1024 columns (q|k|v, gate|up, lm_head of hidden-1024 models), at
    // least two rows per warp (x is then reused; with one row per warp it reads x once either way).
    // Wider rows would need 64+ floats of x per lane: not done (register budget of decode_kernel).
    const bool rp = reg && KS == 1 && nr >= 2 * NW && n8 == 128;
    if (rp) mv_reg<4>(W, cols, xs, r0, nr, ws, pfd, emit);
    for (int u = rp ? nunits : warp; u < nunits; u += NW) {
        const int row = r0 + u / KS, sl = u % KS;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        // pfd > 0 (streamed rows, KS == 1): ask L2 for the row pfd trips ahead, so each warp has
        // more than its one row of loads in flight without holding more registers
        if (pfd > 0 && KS == 1 && !ws && lane == 0 && u + pfd * NW < nunits)
            asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(W + (size_t)(row + pfd * NW) * cols),
                         "r"((unsigned)cols * 2), "l"(s_wpol)
                         : "memory");
#endif
        const uint4 *wr = reinterpret_cast<const uint4 *>(W + (size_t)row * cols);
        const int s0 = n8 * sl / KS, s1 = n8 * (sl + 1) / KS;
        float acc0 = 0.0f, acc1 = 0.0f;
        int i = s0 + lane;
        if (ws) {  // the block's rows were staged in shared memory (stage_rows)
            const uint4 *sr = ws + (size_t)(row - r0) * n8;
            for (; i + 32 < s1; i += 64) {
                acc0 += dot8(sr[i], xs + 8 * i);
                acc1 += dot8(sr[i + 32], xs + 8 * (i + 32));
            }
            if (i < s1) acc0 += dot8(sr[i], xs + 8 * i);
            i = s1;
        }
        for (; i + 96 < s1; i += 128) {
            uint4 a = ldw(wr + i), b = ldw(wr + i + 32), c = ldw(wr + i + 64), d = ldw(wr + i + 96);
            acc0 += dot8(a, xs + 8 * i) + dot8(c, xs + 8 * (i + 64));
            acc1 += dot8(b, xs + 8 * (i + 32)) + dot8(d, xs + 8 * (i + 96));
        }
        for (; i < s1; i += 32) acc0 += dot8(ldw(wr + i), xs + 8 * i);
        float acc = warp_sum(acc0 + acc1);
        if (KS == 1) {
            emit(row, acc);
        } else if (lane == 0) {
            red[u] = acc;
        }
    }
    if (KS > 1) {
        __syncthreads();
        if ((int)threadIdx.x < nr) {
            float s = 0.0f;
            for (int k = 0; k < KS; k++) s += red[threadIdx.x * KS + k];
            const int row = r0 + threadIdx.x;
            if (MODE == MV_ADD) {
                const float v = (xo ? xo[row - r0] : __ldcg(out + row)) + s;
                out[row] = v;
                if (out2) out2[row] = v;
            } else if (MODE == MV_SMEM) {
                out[row - r0] = s;
            } else {
                out[row] = s;
            }
            if (MODE == MV_LOGITS) {
                unsigned k = __float_as_uint(s);
                k = (k & 0x80000000u) ? ~k : (k | 0x80000000u);
                if (s != s) k = 0;
                unsigned long long key = ((unsigned long long)k << 32) | (0xffffffffu - (unsigned)row);
                if (key > mybest) mybest = key;
            }
        }
        __syncthreads();
    }
    if (MODE == MV_LOGITS) {
        // block max of mybest into *best (shared): warp max then one atomicMax per warp
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            unsigned long long v = __shfl_xor_sync(0xffffffffu, mybest, o);
            if (v > mybest) mybest = v;
        }
        if (lane == 0 && mybest) atomicMax(best, mybest);
    }
}

// Float4s a thread loads in one go (all in flight together: one memory latency, not one per loop
// trip; the loads sit on the step's critical path right after a dependency wait).
constexpr int LV = 4;

// xs = w * (x * rsqrt(mean(x^2) + eps)) over n floats of global x (another block's writes).
// early (n <= 4 * LV * NT): the norm weights are loaded together with x, so the block sum is the
// only thing between the loads and the result (not a second round of loads after it).
__device__ void load_norm(const float *x, const float *w, int n, float eps, float *xs, float *red,
                          bool early = false) {
    float ss = 0.0f;
    if (early && (n & 3) == 0 && (n >> 2) <= LV * NT) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x), *w4 = reinterpret_cast<const float4 *>(w);
        float4 *o4 = reinterpret_cast<float4 *>(xs);
        const int n4 = n >> 2;
        const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
        float4 xv[LV], wv[LV];
#pragma unroll
        for (int k = 0; k < LV; k++) {
            const int i = k * NT + threadIdx.x;
            xv[k] = i < n4 ? __ldcg(x4 + i) : z;
            wv[k] = i < n4 ? __ldg(w4 + i) : z;
        }
#pragma unroll
        for (int k = 0; k < LV; k++)
            ss += xv[k].x * xv[k].x + xv[k].y * xv[k].y + xv[k].z * xv[k].z + xv[k].w * xv[k].w;
        ss = block_sum(ss, red);
        const float r = 1.0f / sqrtf(ss / (float)n + eps);
#pragma unroll
        for (int k = 0; k < LV; k++) {
            const int i = k * NT + threadIdx.x;
            if (i < n4)
                o4[i] = make_float4(wv[k].x * (xv[k].x * r), wv[k].y * (xv[k].y * r), wv[k].z * (xv[k].z * r),
                                    wv[k].w * (xv[k].w * r));
        }
        __syncthreads();
        return;
    }
    if ((n & 3) == 0) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x), *w4 = reinterpret_cast<const float4 *>(w);
        float4 *o4 = reinterpret_cast<float4 *>(xs);
        const int n4 = n >> 2;
        for (int i0 = 0; i0 < n4; i0 += LV * NT) {
            float4 xv[LV];
#pragma unroll
            for (int k = 0; k < LV; k++) {
                const int i = i0 + k * NT + threadIdx.x;
                xv[k] = i < n4 ? __ldcg(x4 + i) : make_float4(0.f, 0.f, 0.f, 0.f);
            }
#pragma unroll
            for (int k = 0; k < LV; k++) {
                const int i = i0 + k * NT + threadIdx.x;
                ss += xv[k].x * xv[k].x + xv[k].y * xv[k].y + xv[k].z * xv[k].z + xv[k].w * xv[k].w;
                if (i < n4) o4[i] = xv[k];
            }
        }
        ss = block_sum(ss, red);
        const float r = 1.0f / sqrtf(ss / (float)n + eps);
        for (int i = threadIdx.x; i < n4; i += NT) {  // each thread rescales the float4s it stored
            const float4 v = o4[i], g = __ldg(w4 + i);
            o4[i] = make_float4(g.x * (v.x * r), g.y * (v.y * r), g.z * (v.z * r), g.w * (v.w * r));
        }
        __syncthreads();
        return;
    }
    for (int i = threadIdx.x; i < n; i += NT) {
        float v = __ldcg(x + i);
        xs[i] = v;
        ss += v * v;
    }
    ss = block_sum(ss, red);
    const float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += NT) xs[i] = __ldg(w + i) * (xs[i] * r);
    __syncthreads();
}

// dst[0, n) = src (global, another block's writes) in shared memory, LV float4s per thread at once.
__device__ void load_vec(const float *src, float *dst, int n) {
    if ((n & 3) == 0) {
        const float4 *s4 = reinterpret_cast<const float4 *>(src);
        float4 *d4 = reinterpret_cast<float4 *>(dst);
        const int n4 = n >> 2;
        for (int i0 = 0; i0 < n4; i0 += LV * NT) {
            float4 v[LV];
#pragma unroll
            for (int k = 0; k < LV; k++) {
                const int i = i0 + k * NT + threadIdx.x;
                if (i < n4) v[k] = __ldcg(s4 + i);
            }
#pragma unroll
            for (int k = 0; k < LV; k++) {
                const int i = i0 + k * NT + threadIdx.x;
                if (i < n4) d4[i] = v[k];
            }
        }
    } else {
        for (int i = threadIdx.x; i < n; i += NT) dst[i] = __ldcg(src + i);
    }
    __syncthreads();
}

// h[j] = silu(gate_j) * up_j for j < I from the interleaved (gate, up) pairs gu (global).
__device__ void load_silu(const float *gu, float *h, int I) {
    const float4 *g4 = reinterpret_cast<const float4 *>(gu);  // 2 pairs per float4 (I even: I % 8 == 0)
    const int n4 = I >> 1;
    for (int i0 = 0; i0 < n4; i0 += 2 * LV * NT) {
        float4 v[2 * LV];
#pragma unroll
        for (int k = 0; k < 2 * LV; k++) {
            const int i = i0 + k * NT + threadIdx.x;
            if (i < n4) v[k] = __ldcg(g4 + i);
        }
#pragma unroll
        for (int k = 0; k < 2 * LV; k++) {
            const int i = i0 + k * NT + threadIdx.x;
            if (i < n4) {
                h[2 * i] = v[k].x / (1.0f + expf(-v[k].x)) * v[k].y;
                h[2 * i + 1] = v[k].z / (1.0f + expf(-v[k].z)) * v[k].w;
            }
        }
    }
    __syncthreads();
}

// One warp: RMSNorm (if nw) and RoPE (if rope) of one head vector src (hd floats, global) into
// dst: shared-memory floats (dst_f) or the bf16 cache (dst_b). tmp: hd floats of this warp's smem.
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
                            KT *dst_b, KT *dst_s) {
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
        if (dst_s) st1(dst_s + d0 + j, y);
    }
}

// head_prep through the vectorized version when head_dim is 32, 64, 128 or 256. dst_s: a second
// copy of a K/V row (shared memory), or NULL.
template <typename KT>
__device__ void prep_head(const Params &P, const float *src, const float *nw, bool rope, int pos, float *tmp,
                          float *dst_f, KT *dst_b, KT *dst_s = nullptr) {
    switch (P.hd) {
    case 32: head_prep_v<1, KT>(P, src, nw, rope, pos, dst_f, dst_b, dst_s); break;
    case 64: head_prep_v<2, KT>(P, src, nw, rope, pos, dst_f, dst_b, dst_s); break;
    case 128: head_prep_v<4, KT>(P, src, nw, rope, pos, dst_f, dst_b, dst_s); break;
    case 256: head_prep_v<8, KT>(P, src, nw, rope, pos, dst_f, dst_b, dst_s); break;
    default:
        head_prep<KT>(P, src, nw, rope, pos, tmp, dst_f, dst_b);
        if (dst_s) {  // copy the row just written (head_prep's closing __syncwarp ordered it)
            for (int d = threadIdx.x & 31; d < P.hd; d += 32) dst_s[d] = dst_b[d];
        }
        break;
    }
    __syncwarp();
}

// Row 0 of kv head kvh of layer l in a K or V cache, head-major (n_layers, n_kv, max_ctx, hd): the
// head's row p at + p * hd, so its rows for consecutive positions are contiguous.
template <typename KT>
__device__ __forceinline__ KT *kv_rows(void *cache, const Params &P, int l, int kvh) {
    return static_cast<KT *>(cache) + ((size_t)l * P.nkv + (size_t)kvh) * (size_t)P.max_ctx * (size_t)P.hd;
}

// Online-softmax pass of one row-group layout over positions [p0, p1) for GS query heads
// (qs: GS x hd, smem). Lanes work in row groups of LPR lanes (LPR = hd/8 rounded up to a power of
// two): each lane holds 8 dims of a K/V row. GS is compile-time so the per-head accumulators stay
// in registers. Leaves the chunk's combined (m, l, acc) per head in out (GS x (hd+2), smem), with
// m in log2 units. SM: K/V rows come from shared memory (kv_stage): row p at Kl + (p - p0) * hd;
// otherwise from the cache (head-major: Kl is the kv head's row 0): row p at Kl + p * hd.
// R: rows per row group per loop trip, all loaded before any is used, so a chunk of up to
// R x (row groups) positions costs one memory latency (R = 2 took two trips for a 64-position
// chunk: 3.6 us of loop at pos 130, run 20). pm: NW x GS x (hd+2) floats of scratch.
template <int GS, int R, bool SM, typename KT>
__device__ void att_pass(const Params &P, const KT *Kl, const KT *Vl, int p0, int p1,
                         const float *qs, float *pm, float *out) {
    const int hd = P.hd, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t rs = (size_t)hd;  // row stride, staged rows and cache rows alike
    const int pb = SM ? p0 : 0;
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
    for (int base = p0 + warp * RPW; base < p1; base += R * span) {
        const int pa = base + rg;
        float kf[R][8], vf[R][8];
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int p = pa + r * span;
            const bool ok = act && p < p1;
            const KT *kp = Kl + (size_t)(p - pb) * rs + sub * 8, *vp = Vl + (size_t)(p - pb) * rs + sub * 8;
            if (SM) {
                ld8s(kp, ok, kf[r]);
                ld8s(vp, ok, vf[r]);
            } else {
                ld8(kp, ok, kf[r]);
                ld8(vp, ok, vf[r]);
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            if (base + r * span >= p1) break;  // warp-uniform: the warp's first row is past the end
            const bool valid = pa + r * span < p1;
#pragma unroll
            for (int g = 0; g < GS; g++) {
                float s = 0.0f;
#pragma unroll
                for (int j = 0; j < 8; j++) s = fmaf(q[g][j], kf[r][j], s);
                for (int o = LPR >> 1; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
                if (valid) {
                    const float mn = fmaxf(m[g], s);
                    const float corr = exp2f(m[g] - mn), pe = exp2f(s - mn);
                    m[g] = mn;
                    ls[g] = ls[g] * corr + pe;
#pragma unroll
                    for (int j = 0; j < 8; j++) acc[g][j] = fmaf(pe, vf[r][j], acc[g][j] * corr);
                }
            }
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

// Thread 0: copy bytes [src, src+bytes) (16-byte multiples) into shared memory at dst, completing
// the mbarrier mb's current phase (one arrival with its byte count, then the copies' bytes). The
// destination was last accessed through the generic proxy: the fence orders that before the async
// writes; the caller has passed a __syncthreads since those accesses. For weights: L2 policy s_wpol.
__device__ __forceinline__ void bulk_g2s(unsigned dst, const void *src, size_t bytes, unsigned mb) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const char *c = static_cast<const char *>(src);
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(mb), "r"((unsigned)bytes) : "memory");
    const size_t piece = 32768;
    for (size_t off = 0; off < bytes; off += piece) {
        const unsigned len = (unsigned)(bytes - off < piece ? bytes - off : piece);
        asm volatile(
            "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(
                dst + (unsigned)off),
            "l"(c + off), "r"(len), "r"(mb), "l"(s_wpol)
            : "memory");
    }
#else
    (void)dst, (void)src, (void)bytes, (void)mb;
#endif
}

// All threads: wait until the mbarrier mb completes the phase of the given parity.
// mb_wait's watchdog (out of line: the wait loop keeps its registers)
__device__ __noinline__ void mb_stuck(unsigned parity) {
    printf("megakernel: block %d stuck waiting for a bulk copy (mbarrier parity %u)\n", blockIdx.x, parity);
    __trap();
}

__device__ __forceinline__ void mb_wait(unsigned mb, unsigned parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    unsigned done = 0;
    const long long t0 = clock64();
    do {
        asm volatile(
            "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
            : "=r"(done)
            : "r"(mb), "r"(parity)
            : "memory");
        if (!done && clock64() - t0 > (1ll << 36)) mb_stuck(parity);  // ~30 s: a copy that never lands
    } while (!done);
#else
    (void)mb, (void)parity;
#endif
}

// Start copying the earlier K/V rows of the block's attention item (layer l, position pos) into
// shared memory ks: K rows [p0, p1) at ks + (p - p0) * hd, then the V rows. Those rows were written
// by earlier steps, so the copy may start before this step's q|k|v are ready; row pos (this step's)
// is written there by attention's head prep. The bulk copy engine moves the rows: in the head-major
// cache the rows [p0, pe) of one kv head are one contiguous range per matrix, so warp 0 issues 2
// copies (in pieces of at most 32 KB; completion on mbarrier mb, whose phase parity the caller
// tracks) and no thread stalls on a full load queue (cp.async from every thread measured a 2 us
// later wake, run 9; one bulk copy per row cost ~2 us of issue: docs/perf-notes.md, v6).
// Returns ks, or NULL (nothing issued) when the block has no item, the chunk does not fit in cap
// bytes, or the device has no bulk copy engine.
template <typename KT>
__device__ __noinline__ KT *kv_stage(const Params &P, int l, int pos, KT *ks, size_t cap, unsigned long long *mb) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const int hd = P.hd, len = pos + 1;
    int csz;
    const int nch = att_chunks(P, len, csz);
    const int item = blockIdx.x;
    if (!ks || item >= P.nkv * nch) return nullptr;
    const int kvh = item / nch, c = item % nch;
    const int p0 = c * csz, p1 = min(len, p0 + csz), pe = min(p1, pos);
    const unsigned rowb = (unsigned)hd * sizeof(KT);
    if ((size_t)(p1 - p0) * rowb * 2 > cap || (rowb & 15)) return nullptr;
    if (threadIdx.x < 32) {
        // rows [p0, pe) of this kv head: one contiguous range in each cache (16-byte aligned: the
        // arena is, and every row is a 16-byte multiple), landing at ks (K) and vs (V)
        const char *kg = reinterpret_cast<const char *>(kv_rows<const KT>(P.kc, P, l, kvh) + (size_t)p0 * hd);
        const char *vg = reinterpret_cast<const char *>(kv_rows<const KT>(P.vc, P, l, kvh) + (size_t)p0 * hd);
        KT *vs = ks + (size_t)(p1 - p0) * hd;
        const unsigned bytes = (unsigned)(pe - p0) * rowb;  // per matrix (<= cap / 2)
        const unsigned piece = 32768, np = (bytes + piece - 1) / piece;  // copies per matrix
        const unsigned m = smem_u32(mb);
        // the buffer was last read through the generic proxy; order that before the async writes
        if (threadIdx.x == 0) asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        // the rows were written by other blocks' generic stores (ordered before this block by the
        // counters' release/acquire); the bulk copies read them through the async proxy
        asm volatile("fence.proxy.async.global;" ::: "memory");
        __syncwarp();
        for (unsigned r = threadIdx.x; r < 2 * np; r += 32) {
            const bool kv = r >= np;
            const unsigned off = (kv ? r - np : r) * piece, n = bytes - off < piece ? bytes - off : piece;
            const char *src = (kv ? vg : kg) + off;
            const unsigned dst = smem_u32(kv ? vs : ks) + off;
            asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                             dst),
                         "l"(src), "r"(n), "r"(m)
                         : "memory");
        }
        __syncwarp();
        // the arrival that completes the phase once all bytes landed (tx-count may run ahead of it):
        // exactly the bytes of the copies above, 2 matrices x (pe - p0) rows
        if (threadIdx.x == 0)
            asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(m), "r"(2 * bytes)
                         : "memory");
    }
    return ks;
#else
    (void)P, (void)l, (void)pos, (void)ks, (void)cap, (void)mb;
    return nullptr;
#endif
}

// Attention of layer l at position pos for the block's (kv head, chunk) item: the G query heads
// of a kv head are done in passes of at most 4 (register budget); K/V rows are re-read per pass.
// ks: the item's K/V rows staged by kv_stage (or NULL: read them from the cache), complete at
// phase parity kpar of mbarrier kmb. defer: leave
// the chunk partials for the O stage to combine (combine_att) instead of combining them here.
// RB: rows per row group per att_pass trip for passes of 1-2 heads (4: one trip covers a
// 64-position chunk; the grid kernel's 128-register budget takes 2, which spilled at 4).
template <typename KT, int RB>
__device__ __noinline__ void attention(const Params &P, int l, int pos, float *sm, bool defer = false,
                                       KT *ks = nullptr, unsigned long long *kmb = nullptr, unsigned kpar = 0) {
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
    KT *vs = ks ? ks + (size_t)(p1 - p0) * hd : nullptr;  // staged V rows
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
                      Kl + (size_t)pos * hd, ks ? ks + (size_t)(pos - p0) * hd : nullptr);
        else
            prep_head(P, P.qkv + P.qdim + kvd + (size_t)kvh * hd, nullptr, false, pos, tmp + warp * hd, nullptr,
                      Vl + (size_t)pos * hd, vs ? vs + (size_t)(pos - p0) * hd : nullptr);
    }
    if (ks) mb_wait(smem_u32(kmb), kpar);  // the staged rows have landed
    __syncthreads();
    sprof_mark(P, SP_ATT);  // q/k/v head prep
    for (int g0 = 0; g0 < G; g0 += 4) {
        const int gs = G - g0 < 4 ? G - g0 : 4;
        const float *qg = qs + g0 * hd;
        float *rg = res + (size_t)g0 * stride;
        if (ks) {
            switch (gs) {
            case 1: att_pass<1, RB, true, KT>(P, ks, vs, p0, p1, qg, pm, rg); break;
            case 2: att_pass<2, RB, true, KT>(P, ks, vs, p0, p1, qg, pm, rg); break;
            case 3: att_pass<3, 2, true, KT>(P, ks, vs, p0, p1, qg, pm, rg); break;
            default: att_pass<4, 2, true, KT>(P, ks, vs, p0, p1, qg, pm, rg); break;
            }
            continue;
        }
        switch (gs) {
        case 1: att_pass<1, RB, false, KT>(P, Kl, Vl, p0, p1, qg, pm, rg); break;
        case 2: att_pass<2, RB, false, KT>(P, Kl, Vl, p0, p1, qg, pm, rg); break;
        case 3: att_pass<3, 2, false, KT>(P, Kl, Vl, p0, p1, qg, pm, rg); break;
        default: att_pass<4, 2, false, KT>(P, Kl, Vl, p0, p1, qg, pm, rg); break;
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

// Fused MLP for this block's pairs [c0, c1) of the intermediate dim: gate|up rows (interleaved:
// row 2j = gate_j, 2j+1 = up_j) -> h_j = silu(gate_j) * up_j in shared memory -> split-K slice of
// down: x[r] += sum_j downT[j][r] h_j with atomics (x is the residual; other blocks add theirs).
// Saves the grid barrier between gate|up and down. xs: normed input (hidden), hs: 3*(c1-c0) floats.
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
    for (int j = threadIdx.x; j < nc; j += NT) {
        const float g = hs[2 * j], u = hs[2 * j + 1];
        h[j] = g / (1.0f + expf(-g)) * u;
    }
    __syncthreads();
    // downT rows c0..c1 (each `hidden` long): staged after the gate|up slice, or from global
    const uint4 *dt = ws ? ws + (size_t)2 * nc * H / 8
                         : reinterpret_cast<const uint4 *>(L.down + (size_t)c0 * H);
    const int H8 = H / 8;
    for (int r8 = threadIdx.x; r8 < H8; r8 += NT) {
        float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int j = 0; j < nc; j++) {
            const uint4 w = ws ? dt[(size_t)j * H8 + r8] : ldw(dt + (size_t)j * H8 + r8);
            const float hj = h[j];
            a[0] = fmaf(__uint_as_float(w.x << 16), hj, a[0]);
            a[1] = fmaf(__uint_as_float(w.x & 0xffff0000u), hj, a[1]);
            a[2] = fmaf(__uint_as_float(w.y << 16), hj, a[2]);
            a[3] = fmaf(__uint_as_float(w.y & 0xffff0000u), hj, a[3]);
            a[4] = fmaf(__uint_as_float(w.z << 16), hj, a[4]);
            a[5] = fmaf(__uint_as_float(w.z & 0xffff0000u), hj, a[5]);
            a[6] = fmaf(__uint_as_float(w.w << 16), hj, a[6]);
            a[7] = fmaf(__uint_as_float(w.w & 0xffff0000u), hj, a[7]);
        }
        float *x = P.x + (size_t)r8 * 8;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        atomicAdd(reinterpret_cast<float4 *>(x), make_float4(a[0], a[1], a[2], a[3]));
        atomicAdd(reinterpret_cast<float4 *>(x) + 1, make_float4(a[4], a[5], a[6], a[7]));
#else
        for (int k = 0; k < 8; k++) atomicAdd(x + k, a[k]);
#endif
    }
}

// x = embedding row of token id (one block)
__device__ void embed(const Params &P, int id) {
    const __nv_bfloat16 *e = P.embed + (size_t)id * P.hidden;
    for (int i = threadIdx.x; i < P.hidden; i += NT) P.x[i] = __bfloat162float(e[i]);
}

// ---- bulk copies into shared memory (sm_90: cp.async.bulk completing on an mbarrier)

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
// go to the buffers before it): two-buffer mode buffer 1 and the K/V staging region after it, ring
// mode region C, over sm and past it into the dynamic shared memory the host sized for it
// (gpu.cu). sm: decode_df's stage vectors, which follow those in both modes.
__device__ __forceinline__ LmGeom lm_geom(const Params &P, float *sm) {
    LmGeom g;
    g.rows = P.lmring;
    g.ns = P.lmring > 0 && P.lmns >= 2 ? min(P.lmns, LM_MAXNS) : 0;
    g.slot = reinterpret_cast<uint4 *>(reinterpret_cast<unsigned char *>(sm) -
                                       (P.wreg[0] ? P.wreg[2] : (size_t)P.wbuf1 + P.kvbuf));
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
        for (int row = c0 + warp; row < c1; row += NW) {
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
            unsigned key = __float_as_uint(acc);  // matvec<MV_LOGITS>'s key: max logit, lowest index
            key = (key & 0x80000000u) ? ~key : (key | 0x80000000u);
            if (acc != acc) key = 0;  // NaN never wins
            const unsigned long long kb = ((unsigned long long)key << 32) | (0xffffffffu - (unsigned)row);
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
                                     unsigned long long *stamp, float *samp_sm) {
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
    if (P.samp) tok = sample_block(P, lo, samp_sm);  // -1: NaN / all -inf logits: stop
    bool stop = tok < 0;
    if (!P.ids)
        for (int i = 0; i < P.n_stop; i++) stop |= P.stop[i] == tok;
    if (threadIdx.x == 0) {
        P.tokens[step] = tok;
        *P.lm_cnt = 0;
        P.ctl[1] = step + 1;  // steps done
        if (stop) P.ctl[0] = 1;
    }
    if (more && !stop) embed(P, P.ids ? P.ids[step + 1] : tok);
    return true;
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
            lm_step(P, step, more, sm, red, nullptr, sm);
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
// (MQ_CUDA_RING=1: three regions instead, see the kernel; measured no faster.)
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
    uint4 *buf[3];
    unsigned long long *mb;  // (3) mbarriers in shared memory
    unsigned phase[3];       // parity each buffer's next completion flips to
    int pend[3];             // a copy into the buffer is in flight
    size_t cap[3];           // bytes per buffer
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
    default: rows = H, cols = I; return L.down;
    }
}

// Start the weights of stage st of layer l into buffer k, or into L2 when they do not fit. (Also
// prefetching the stage after into L2 measured slower: 708 vs 767 tok/s, docs/perf-notes.md.)
__device__ __forceinline__ void ws_next(WStage &S, int k, const Params &P, int l, int st) {
    int rows, cols;
    const __nv_bfloat16 *W = stage_w(P, l, st, rows, cols);
    if (!ws_issue(S, k, W, rows, cols, st == S_GU && hpair_on(P)))
        prefetch_rows(W, rows, cols, (size_t)1 << 20);
}

// The rest of a matvec stage once its input vector is in sm: wait for the staged weights of
// buffer buf, out (=|+=) W sm, publish on counter c. Sub-stage marks k .. k+3 (input load, weight
// wait, matvec, publish). (OPT_HPAIR's gate|up stage spells the same steps out with its SiLU
// between matvec and publish: folding it in here as a callback raised decode_df's spills.)
template <int MODE>
__device__ __forceinline__ void df_mv(const Params &P, WStage &S, int buf, const __nv_bfloat16 *W, int rows,
                                      int cols, const float *sm, float *out, float *red, const float *xo, bool regx,
                                      unsigned *c, unsigned long long *st, int k) {
    sprof_mark(P, k);
    const uint4 *ws = ws_take(S, buf);
    sprof_mark(P, k + 1);
    matvec<MODE>(W, rows, cols, sm, out, red, nullptr, ws, -1, -1, nullptr, 0, xo, regx);
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

template <typename KT>
__global__ void __launch_bounds__(NT, 1) decode_df(const __grid_constant__ Params P) {
    // The out-of-line stages (attention, kv_stage, the lm_head's) read Params through this shared
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
    __shared__ __align__(8) unsigned long long s_mb[3];
    const int H = P.hidden, I = P.inter, Lc = P.n_layers, QKVR = P.qdim + 2 * P.nkv * P.hd;
    const unsigned G = gridDim.x;
    // Shared memory, two-buffer mode: [weight buffer 0][weight buffer 1][sm: stage vectors /
    // attention scratch]; ring mode: [A: gate|up][B: q|k|v][C: o, down][sm: stage vectors]. During
    // the lm_head, its ring (P.lmring, P.lmns) covers the DOWN buffer (1 or C), sm and beyond.
    // Which buffer each stage reads (bQ, bO, bG, bD) and when each copy is issued:
    //   two buffers: QKV 0, O 1, GU 0, DOWN 1; each stage's copy starts when the previous stage
    //     starts (one stage ahead).
    //   ring: QKV B, O C, GU A, DOWN C; the O copy starts with QKV, the next QKV copy with O, the
    //     DOWN copy with GU and the next GU copy with DOWN: gate|up (the largest slice) and q|k|v
    //     have three stages to land, o and down one.
    const bool ring = P.wreg[0] != 0;
    const bool regx = P.opt & OPT_REGX;
    const bool normw = P.opt & OPT_NORMW, ownx = P.opt & OPT_OWNX;
    const bool kvst = (P.opt & OPT_KVSTAGE) && !ring && P.wbuf > 0;
    unsigned kvpar = 0;  // the next phase parity of the K/V staging mbarrier (S.mb[2])
    // without a region of its own, kv staging borrows buffer 0 in attention, where GUEARLY copies
    const bool gue = (P.opt & OPT_GUEARLY) && !ring && !(kvst && !P.kvbuf);
    WStage S;
    S.mb = s_mb;
    S.iss = (P.opt & OPT_ISSW) && NT > 32 ? 32 : 0;
    for (int k = 0; k < 3; k++) S.phase[k] = 0, S.pend[k] = 0;
    float *sm;
    if (ring) {
        S.cap[0] = P.wreg[0], S.cap[1] = P.wreg[1], S.cap[2] = P.wreg[2];
        S.buf[0] = reinterpret_cast<uint4 *>(dsm);
        S.buf[1] = reinterpret_cast<uint4 *>(dsm + P.wreg[0]);
        S.buf[2] = reinterpret_cast<uint4 *>(dsm + P.wreg[0] + P.wreg[1]);
        sm = reinterpret_cast<float *>(dsm + (size_t)P.wreg[0] + P.wreg[1] + P.wreg[2]);
    } else {
        // [buffer 0][buffer 1][K/V staging region (P.kvbuf, may be 0)][sm]
        S.cap[0] = P.wbuf, S.cap[1] = P.wbuf1, S.cap[2] = 0;
        S.buf[0] = reinterpret_cast<uint4 *>(dsm);
        S.buf[1] = reinterpret_cast<uint4 *>(dsm + P.wbuf);
        S.buf[2] = nullptr;
        sm = reinterpret_cast<float *>(dsm + (size_t)P.wbuf + P.wbuf1 + P.kvbuf);
    }
    // where attention stages its chunk's K/V rows (OPT_KVSTAGE)
    unsigned char *kvs_p = P.kvbuf ? dsm + (size_t)P.wbuf + P.wbuf1 : dsm;
    const size_t kvs_cap = P.kvbuf ? P.kvbuf : P.wbuf;
    const int bQ = ring ? 1 : 0, bO = ring ? 2 : 1, bG = 0, bD = ring ? 2 : 1;
    float *att_sm = ring ? reinterpret_cast<float *>(S.buf[1]) : sm;   // attention scratch
    float *samp_sm = ring ? reinterpret_cast<float *>(S.buf[2]) : sm;  // sampling scratch (lm stage)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (threadIdx.x == 0 && (P.wbuf || ring)) {
        for (int k = 0; k < 3; k++)
            asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(s_mb + k)) : "memory");
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
    const unsigned nQKV = producers(QKVR), nO = producers(H), nGU = producers(hpair ? I : 2 * I), nDN = producers(H);
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
    if (Lc > 0) {
        ws_next(S, bQ, P, 0, S_QKV);
        if (ring) ws_next(S, bG, P, 0, S_GU);
    }

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
                // the staging region, or buffer 0 (q|k|v's weights, read above; free until the
                // O stage's copy without GUEARLY); two-buffer mode leaves mbarrier 2 to this copy
                KT *ks = kvst ? kv_stage<KT>(Ps, l, pos, reinterpret_cast<KT *>(kvs_p), kvs_cap, S.mb + 2) : nullptr;
                df_wait(P, c + S_QKV, nQKV * ts, stamp(0));
                sprof_mark(P, -1);
                attention<KT, 4>(Ps, l, pos, att_sm, ocomb, ks, S.mb + 2, kvpar);
                if (ks) kvpar ^= 1u;
                sprof_mark(P, SP_ATT + 3);
                df_arrive(c + S_ATT, stamp(1));
                sprof_mark(P, SP_ATT + 4);
            }
            kinst++;
            // ---- O: x += W_o att
            __syncthreads();  // the q|k|v buffer's readers (QKV, attention scratch in ring mode) are done
            if (!ring) {
                if (!gue_now) ws_next(S, bG, P, l, S_GU);
            } else if (l + 1 < Lc) ws_next(S, bQ, P, l + 1, S_QKV);
            else if (more) ws_next(S, bQ, P, 0, S_QKV);  // the next step's first layer
            block_rows(H, blockIdx.x, G, r0, r1);
            if (r1 > r0) {
                // before the wait: these rows were last written by this block (its DOWN stage, or the
                // embedding that its QKV stage of layer 0 waited for)
                const float *xo_p = own_x(P, r0, r1, ownx ? s_xo : nullptr);
                df_wait(P, c + S_ATT, tATT, stamp(0));
                sprof_mark(P, -1);
                const int nch = (int)(items / (unsigned)P.nkv);
                if (ocomb && nch > 1) {
                    combine_att(P, nch, sm, sm + P.qdim);
                } else {
                    load_vec(P.att, sm, P.qdim);
                }
                df_mv<MV_ADD>(P, S, bO, L.o, H, P.qdim, sm, P.x, red, xo_p, regx, c + S_O, stamp(1), SP_O);
            } else {
                ws_take(S, bO);
            }
            kinst++;
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
            {
                const int nst = ring ? S_GU : S_QKV, nb = ring ? bG : bQ;
                if (l + 1 < Lc) ws_next(S, nb, P, l + 1, nst);
                else if (more) ws_next(S, nb, P, 0, nst);  // next step's first layer, during the lm_head
                else prefetch_rows(P.lm_head, P.vocab, H, (size_t)1 << 20);
            }
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
            if (lm_step<true>(Ps, step, more, sm, red, stamp(1), samp_sm) && more) df_arrive(cE, nullptr);
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
    ws_take(S, 2);
    lm_ring_drain(Ps);
    sprof_end(P);
}

}  // namespace mqk

// The kernel for a KV cache of f32 (kv_f32 = 1) or bf16 elements; df = 1: the dataflow kernel.
extern "C" const void *mqk_kernel(int kv_f32, int df) {
    if (df)
        return kv_f32 ? reinterpret_cast<const void *>(&mqk::decode_df<float>)
                      : reinterpret_cast<const void *>(&mqk::decode_df<__nv_bfloat16>);
    return kv_f32 ? reinterpret_cast<const void *>(&mqk::decode_kernel<float>)
                  : reinterpret_cast<const void *>(&mqk::decode_kernel<__nv_bfloat16>);
}
