// sgemm: skinny bf16 GEMM for short prompts (T <= 64 rows) on mma.sync, weights loaded ahead of the PDL wait.
//
// A prompt of a few dozen tokens makes every layer GEMM a (T x K) . (K x N) product with T tiny:
// it is a read of the weights (memory bound), like decode, and cuBLASLt's kernels for it reach
// ~0.6-1.6 TB/s of the 4 TB/s (ncu at base clocks, session 5). Measured against them
// (docs/perf-notes.md, runs 27-31), this kernel wins with PDL's overlap at 8 tokens, ties at 32, and
// loses alone for the wide GEMMs (q|k|v, gate|up). Here a block owns 32 output features (4 tiles of 8)
// and a range of 64-wide k chunks ("slab"); its 8 warps split the chunks, each holding the weight
// fragments of at most two chunks in registers. Those loads are issued before pdl_wait(), so the
// weight stream overlaps the previous kernel (norm, attention ...), as the decode megakernel's
// staged copies overlap its dependency waits.
//
// mma.sync m16n8k16 with A = X rows (16 tokens x 16 k) and B = W rows (16 k x 8 features). The dot
// product does not care which k goes where, so each thread's k indices are permuted to make its
// loads contiguous: the logical k (2q, 2q+1 | 2q+8, 2q+9) of step s (lane = 4g + q) is the physical
// k 64c + 16q + 4s + (0, 1 | 2, 3) of chunk c, for the A and the B fragments alike. A thread then
// reads 16 consecutive bf16 (two uint4) of a weight row per chunk and of an X row per chunk.
// The 8 warps' partial sums meet in shared memory in a fixed order (deterministic results).
#include <stdint.h>

#include "pdl.cuh"
#include "sgemm.cuh"

namespace {

constexpr int NT = 256, NW = NT / 32;
constexpr int FB = 32, FT = FB / 8;  // output features per block, as mma tiles of 8
constexpr int CPW_MAX = 2;           // most 64-wide k chunks per warp (held in registers)

__device__ __forceinline__ uint4 ld_stream(const void *p) {  // read once: no L1 allocation
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

__device__ __forceinline__ uint32_t word(const uint4 &v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

__device__ __forceinline__ void mma16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// grid (N / FB, slabs), block NT. cpb: k chunks per slab (<= NW * CPW). MT: 16-row tiles of X
// (T <= 16 MT). LO: X's lo rows follow the hi rows. CPW: k chunks per warp (1: all of a warp's X
// loads are one round after the wait; 2: half the slabs). X is the previous kernel's output: read
// after pdl_wait, through L2 (__ldcg: no L1 line from before the wait can be stale).
// hb (one slab only): instead of out, the SiLU epilogue: output features (2j, 2j+1) are (gate, up)
// of h_j, and hb (T, N/2) bf16 receives bf16(silu(gate) * up), its lo rows (LO) the remainders, with
// silu_mul_k's arithmetic on the same sums (bit-identical).
template <int MT, bool LO, int CPW>
__global__ void __launch_bounds__(NT, MT <= 2 ? 2 : 1)
    sgemm_k(const __nv_bfloat16 *__restrict__ W, int N, int K, const __nv_bfloat16 *X, int T, float *out, int cpb,
            __nv_bfloat16 *hb) {
    __shared__ __align__(16) float red[4][MT * 16][FB + 4];  // (warp pair, row, feature); +4: fewer bank conflicts
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const int n0 = blockIdx.x * FB, nch = K / 64;
    const int c0 = blockIdx.y * cpb, c1 = min(c0 + cpb, nch);
    uint4 wa[CPW][FT], wb[CPW][FT];  // weight row n0 + 8f + g, physical k 64c + 16q .. +7 (a), +8 .. +15 (b)
#pragma unroll
    for (int j = 0; j < CPW; j++) {
        const int c = c0 + warp + NW * j;
#pragma unroll
        for (int f = 0; f < FT; f++) {
            if (c < c1) {
                const __nv_bfloat16 *p = W + (size_t)(n0 + 8 * f + g) * K + 64 * c + 16 * q;
                wa[j][f] = ld_stream(p);
                wb[j][f] = ld_stream(p + 8);
            } else {
                wa[j][f] = wb[j][f] = make_uint4(0, 0, 0, 0);
            }
        }
    }
    pdl_wait();
    pdl_trigger();
    float acc[MT][FT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int f = 0; f < FT; f++) acc[mt][f][0] = acc[mt][f][1] = acc[mt][f][2] = acc[mt][f][3] = 0.0f;
    const uint4 z = make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < CPW; j++) {
        const int c = c0 + warp + NW * j;
        if (c >= c1) continue;  // warp-uniform
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const int r0 = 16 * mt + g, r1 = r0 + 8;
            uint4 x[LO ? 2 : 1][4];  // [hi, lo][row r0 a, row r0 b, row r1 a, row r1 b]
#pragma unroll
            for (int h = 0; h < (LO ? 2 : 1); h++) {
                const __nv_bfloat16 *xh = X + (h ? (size_t)T * K : 0) + 64 * c + 16 * q;
                const uint4 *p0 = reinterpret_cast<const uint4 *>(xh + (size_t)r0 * K);
                const uint4 *p1 = reinterpret_cast<const uint4 *>(xh + (size_t)r1 * K);
                x[h][0] = r0 < T ? __ldcg(p0) : z;
                x[h][1] = r0 < T ? __ldcg(p0 + 1) : z;
                x[h][2] = r1 < T ? __ldcg(p1) : z;
                x[h][3] = r1 < T ? __ldcg(p1 + 1) : z;
            }
#pragma unroll
            for (int s = 0; s < 4; s++) {
                const int u = s >> 1, e = (s & 1) * 2;  // which uint4 (a, b) and its first word
#pragma unroll
                for (int h = 0; h < (LO ? 2 : 1); h++) {
                    const uint32_t a0 = word(x[h][u], e), a2 = word(x[h][u], e + 1);
                    const uint32_t a1 = word(x[h][2 + u], e), a3 = word(x[h][2 + u], e + 1);
#pragma unroll
                    for (int f = 0; f < FT; f++) {
                        const uint4 &wv = u ? wb[j][f] : wa[j][f];
                        mma16816(acc[mt][f], a0, a1, a2, a3, word(wv, e), word(wv, e + 1));
                    }
                }
            }
        }
    }
    // the warps' sums in a fixed order: warp w + 4 stores, warp w adds its own, then four are added
#pragma unroll
    for (int ph = 0; ph < 2; ph++) {
        if ((warp >= 4) == (ph == 0)) {
            float(*rw)[FB + 4] = red[warp & 3];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int f = 0; f < FT; f++) {
                    float2 *p0 = reinterpret_cast<float2 *>(&rw[16 * mt + g][8 * f + 2 * q]);
                    float2 *p1 = reinterpret_cast<float2 *>(&rw[16 * mt + g + 8][8 * f + 2 * q]);
                    float2 v0 = make_float2(acc[mt][f][0], acc[mt][f][1]), v1 = make_float2(acc[mt][f][2], acc[mt][f][3]);
                    if (ph) {
                        const float2 o0 = *p0, o1 = *p1;
                        v0.x += o0.x, v0.y += o0.y, v1.x += o1.x, v1.y += o1.y;
                    }
                    *p0 = v0;
                    *p1 = v1;
                }
        }
        __syncthreads();
    }
    if (hb) {
        const int half = N / 2;
        for (int i = threadIdx.x; i < T * (FB / 2); i += NT) {
            const int r = i / (FB / 2), j = i % (FB / 2);
            const float gt = (red[0][r][2 * j] + red[1][r][2 * j]) + (red[2][r][2 * j] + red[3][r][2 * j]);
            const float up = (red[0][r][2 * j + 1] + red[1][r][2 * j + 1]) + (red[2][r][2 * j + 1] + red[3][r][2 * j + 1]);
            const float v = gt / (1.0f + expf(-gt)) * up;
            const __nv_bfloat16 hv = __float2bfloat16_rn(v);
            const size_t o = (size_t)r * half + n0 / 2 + j;
            hb[o] = hv;
            if (LO) hb[(size_t)T * half + o] = __float2bfloat16_rn(v - __bfloat162float(hv));
        }
        return;
    }
    float *o = out + (size_t)blockIdx.y * T * N + n0;
    for (int i = threadIdx.x; i < T * FB; i += NT) {
        const int r = i / FB, col = i % FB;
        o[(size_t)r * N + col] = (red[0][r][col] + red[1][r][col]) + (red[2][r][col] + red[3][r][col]);
    }
}

template <int MT, bool LO>
cudaError_t launch(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, float *out, int ks, int pdl,
                   cudaStream_t s, __nv_bfloat16 *hb) {
    const int nch = K / 64, cpb = (nch + ks - 1) / ks;
    const dim3 grid(N / FB, ks);
    return cpb <= NW ? pdl_launch(pdl, sgemm_k<MT, LO, 1>, grid, dim3(NT), 0, s, W, N, K, X, T, out, cpb, hb)
                     : pdl_launch(pdl, sgemm_k<MT, LO, 2>, grid, dim3(NT), 0, s, W, N, K, X, T, out, cpb, hb);
}

}  // namespace

int sgemm_slabs(int N, int K, int T, int sms, int *min_ks) {
    if (N <= 0 || K <= 0 || N % FB || K % 64 || T < 1 || T > SGEMM_MAXT) return 0;
    const int nch = K / 64, kmin = (nch + NW * CPW_MAX - 1) / (NW * CPW_MAX), nb = N / FB;
    const int kmax = nch / NW > kmin ? nch / NW : kmin;
    // about 2 blocks per multiprocessor (the kernels for T <= 32 fit two), at least one chunk per
    // warp (one chunk per warp everywhere, i.e. kmax, measured 2-3% slower: run 28)
    int ks = (2 * sms + nb / 2) / nb;
    if (ks > kmax) ks = kmax;
    if (ks < kmin) ks = kmin;
    if (min_ks) *min_ks = kmin;
    return ks;
}

namespace {

// sgemm_run and sgemm_silu: hb != nullptr selects the SiLU epilogue (one slab)
cudaError_t run(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, int lo, float *out, int ks, int pdl,
                cudaStream_t s, __nv_bfloat16 *hb) {
    const int nch = K / 64;
    if (N % FB || K % 64 || T < 1 || T > SGEMM_MAXT || ks < 1 || ks > nch || (nch + ks - 1) / ks > NW * CPW_MAX)
        return cudaErrorInvalidValue;
    const int mt = (T + 15) / 16;
    if (lo) {
        switch (mt) {
        case 1: return launch<1, true>(W, N, K, X, T, out, ks, pdl, s, hb);
        case 2: return launch<2, true>(W, N, K, X, T, out, ks, pdl, s, hb);
        case 3: return launch<3, true>(W, N, K, X, T, out, ks, pdl, s, hb);
        default: return launch<4, true>(W, N, K, X, T, out, ks, pdl, s, hb);
        }
    }
    switch (mt) {
    case 1: return launch<1, false>(W, N, K, X, T, out, ks, pdl, s, hb);
    case 2: return launch<2, false>(W, N, K, X, T, out, ks, pdl, s, hb);
    case 3: return launch<3, false>(W, N, K, X, T, out, ks, pdl, s, hb);
    default: return launch<4, false>(W, N, K, X, T, out, ks, pdl, s, hb);
    }
}

}  // namespace

cudaError_t sgemm_run(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, int lo, float *out, int ks,
                      int pdl, cudaStream_t s) {
    return run(W, N, K, X, T, lo, out, ks, pdl, s, nullptr);
}

cudaError_t sgemm_silu(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, int lo, __nv_bfloat16 *h,
                       int pdl, cudaStream_t s) {
    if (N % 2 || !h) return cudaErrorInvalidValue;
    return run(W, N, K, X, T, lo, nullptr, 1, pdl, s, h);
}
