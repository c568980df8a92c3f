// megakernel_core.cuh: the decode megakernel's building blocks (loads, barrier, matvec, bulk copies).
// Memory-order loads, the grid barrier, profile marks, reductions, weight loads and prefetches, the
// matvec, stage-vector loads, bulk copies into shared memory, the embedding.
// Part of the decode megakernel's one translation unit (megakernel.cu includes it); namespace mqk.
#ifndef MQ_MEGAKERNEL_CORE_CUH
#define MQ_MEGAKERNEL_CORE_CUH
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>

#include "kvtype.cuh"
#include "sync.cuh"
#include "megakernel.cuh"

namespace mqk {

constexpr int NW = NT / 32;  // warps per block


// the shared-memory address of a generic pointer into shared memory
__device__ __forceinline__ unsigned smem_u32(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }

// a relaxed gpu-scope load: sees other SMs' writes (no stale L1 line) without invalidating L1
__device__ __forceinline__ unsigned ld_relaxed(const unsigned *p) {
    unsigned v;
    asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
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
__shared__ int s_mvr;  // Params.mvr, for matvec's register path (set with s_wpol)

// thread 0 sets s_wpol; the caller's next __syncthreads publishes it
__device__ __forceinline__ void wpol_init(const Params &P) {
    if (threadIdx.x != 0) return;
    unsigned long long p;
    if (P.opt & OPT_EVICT) asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
    else asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(p));
    s_wpol = p;
    s_mvr = P.mvr;
}

__device__ __forceinline__ uint4 ldw(const uint4 *p) {  // weights: read-only for the launch
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p), "l"(s_wpol));
    return v;
}

// 8 consecutive K/V cache elements as floats (zeros when !ok); the cache is f32, bf16 or f16.
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
// the same from shared memory (K/V rows in attention's bulk-copy ring slots)
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
__device__ __forceinline__ void ld8(const __half *p, bool ok, float f[8]) {
    unpack8(ok ? __ldcg(reinterpret_cast<const uint4 *>(p)) : make_uint4(0, 0, 0, 0), f, p);
}
__device__ __forceinline__ void ld8s(const __half *p, bool ok, float f[8]) {
    unpack8(ok ? *reinterpret_cast<const uint4 *>(p) : make_uint4(0, 0, 0, 0), f, p);
}

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

// R partial sums (p[r]: row r's, one per lane) reduced over the warp in a transposed butterfly:
// the offset-16 step sends half of the rows to the partner lane and keeps the other half, so it
// takes R / 2 shuffles instead of R, the offset-8 step R / 4, and the last steps one each, all rows
// together (R = 4: 6 dependent-or-parallel shuffles instead of 4 rows x 5 in a chain). Every pair
// of lanes adds the same two values as warp_sum's butterfly does (a + b = b + a in IEEE), so each
// row's sum is bit-identical to warp_sum's. Returns row r's sum in every lane (broadcast from the
// lane holding it: lane 8 r for R = 4, 16 r for R = 2).
template <int R>
__device__ __forceinline__ void warp_sum_rows(float (&p)[R]) {
    const int lane = threadIdx.x & 31;
    if (R == 1) {
        p[0] = warp_sum(p[0]);
        return;
    }
    const bool b16 = lane & 16;
    float v;
    if (R == 4) {
        const float q0 = (b16 ? p[2] : p[0]) + __shfl_xor_sync(0xffffffffu, b16 ? p[0] : p[2], 16);
        const float q1 = (b16 ? p[3] : p[1]) + __shfl_xor_sync(0xffffffffu, b16 ? p[1] : p[3], 16);
        const bool b8 = lane & 8;  // lane holds rows 2 b16 (q0) and 2 b16 + 1 (q1); keeps 2 b16 + b8
        v = (b8 ? q1 : q0) + __shfl_xor_sync(0xffffffffu, b8 ? q0 : q1, 8);
    } else {
        v = (b16 ? p[1] : p[0]) + __shfl_xor_sync(0xffffffffu, b16 ? p[0] : p[1], 16);
        v += __shfl_xor_sync(0xffffffffu, v, 8);
    }
    v += __shfl_xor_sync(0xffffffffu, v, 4);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    v += __shfl_xor_sync(0xffffffffu, v, 1);
#pragma unroll
    for (int r = 0; r < R; r++) p[r] = __shfl_sync(0xffffffffu, v, r * (32 / R));
}

// matvec's register path for rows of 256 * NX columns (KS == 1): each lane holds its NX pieces of x
// (columns 8 * (lane + 32k) ...) in registers, read from shared memory once instead of once per row
// (the per-row x reads were 4x the weight bytes: f32 and 2-way bank conflicts). A warp takes its
// rows u, u + NW, ... in groups of MVR (4, then 2, then 1): the group's loads are issued together
// and its sums reduced together (warp_sum_rows), so a row is not one dependent chain of a load, the
// dot products and 5 shuffles after another. Per-row arithmetic as before (even pieces into a0, odd
// into a1): bit-identical sums. Measured (session 31): decode_cl's q|k|v matvec 2.4 -> 2.1 us and
// +1.6% a token with groups of 4; decode_df -3 to -4% (hence MQ_CUDA_MVR's per-kernel defaults).
// The one-row chain was not what keeps these matvecs at ~4x their shared-memory time.
template <int NX, int R, typename Emit>
__device__ __forceinline__ void mv_group(const __nv_bfloat16 *W, int cols, const float (&xr)[NX][8], int r0, int u,
                                         const uint4 *ws, int pfd, int nr, Emit &emit) {
    const int lane = threadIdx.x & 31;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (pfd > 0 && !ws && lane == 0)  // the rows this warp reaches pfd trips on
#pragma unroll
        for (int r = 0; r < R; r++)
            if (u + r * NW + pfd * NW < nr)
                asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(
                                 W + (size_t)(r0 + u + r * NW + pfd * NW) * cols),
                             "r"((unsigned)cols * 2), "l"(s_wpol));
#else
    (void)pfd, (void)nr;
#endif
    uint4 w[R][NX];
#pragma unroll
    for (int r = 0; r < R; r++) row_ld<NX>(W, cols, r0, u + r * NW, ws, lane, w[r]);
    float p[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        float a0 = 0.0f, a1 = 0.0f;
#pragma unroll
        for (int k = 0; k < NX; k += 2) {
            a0 += dot8r(w[r][k], xr[k]);
            if (k + 1 < NX) a1 += dot8r(w[r][k + 1], xr[k + 1]);
        }
        p[r] = a0 + a1;
    }
    warp_sum_rows<R>(p);
#pragma unroll
    for (int r = 0; r < R; r++) emit(r0 + u + r * NW, p[r]);
}

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
    int u = warp;
    const int mvr = s_mvr;
    if (mvr >= 4)
        for (; u + 3 * NW < nr; u += 4 * NW) mv_group<NX, 4>(W, cols, xr, r0, u, ws, pfd, nr, emit);
    if (mvr >= 2)
        for (; u + NW < nr; u += 2 * NW) mv_group<NX, 2>(W, cols, xr, r0, u, ws, pfd, nr, emit);
    for (; u < nr; u += NW) mv_group<NX, 1>(W, cols, xr, r0, u, ws, pfd, nr, emit);
}

// matvec<MV_LOGITS>'s argmax key of logit v of row: max logit, then the lowest index; NaN never wins
__device__ __forceinline__ unsigned long long lm_key(float v, int row) {
    unsigned key = __float_as_uint(v);
    key = (key & 0x80000000u) ? ~key : (key | 0x80000000u);
    if (v != v) key = 0;
    return ((unsigned long long)key << 32) | (0xffffffffu - (unsigned)row);
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
            const unsigned long long key = lm_key(acc, row);
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
                const unsigned long long key = lm_key(s, row);
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

// ---- bulk copies into shared memory (sm_90: cp.async.bulk completing on an mbarrier)

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

// x = embedding row of token id (one block)
__device__ void embed(const Params &P, int id) {
    const __nv_bfloat16 *e = P.embed + (size_t)id * P.hidden;
    for (int i = threadIdx.x; i < P.hidden; i += NT) P.x[i] = __bfloat162float(e[i]);
}

}  // namespace mqk

#endif
