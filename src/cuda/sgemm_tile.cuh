// sgemm_tile.cuh: sgemm's block tile as device functions (weight fragments, mma pass, the warps' sum, epilogues).
//
// Shared by sgemm_k (one tile per block, weights loaded before the PDL wait) and the prefill
// megakernel (tiles of every layer GEMM in one persistent launch, weights loaded before its grid
// barrier). The tile and its k permutation are described in sgemm.cu.
#ifndef MQ_SGEMM_TILE_CUH
#define MQ_SGEMM_TILE_CUH
#include <cuda_bf16.h>
#include <stdint.h>

namespace sgt {

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

// A warp's weight fragments: row n0 + 8f + g, physical k 64c + 16q .. +7 (a), +8 .. +15 (b) of its
// chunks c = c0 + warp + NW j (j < CPW), zeros past c1. NF: mma tiles of 8 features per block (FT,
// or 2 FT: sgemm's wide tiles, MQ_PREFILL_SGFB=64, which read X once for 64 features)
template <int CPW, int NF = FT>
struct Frag {
    uint4 a[CPW][NF], b[CPW][NF];
};

// The (MT x 16 rows, 8 NF features) partial sums of the 8 warps, per warp pair: (4, MT * 16, 8 NF + 4);
// +4: fewer bank conflicts
template <int MT, int NF = FT>
using Red = float (*)[MT * 16][NF * 8 + 4];

// A warp's weight loads. W (N, K) row-major (TR false): the fragments above. W (K, N) row-major
// (TR true, e.g. the fused decode MLP's transposed down): a[j][s] / b[j][s] hold the uint4 of
// features n0 + 8q .. +7 at physical k row 64c + 16(g/2) + 4s + 2h + g%2 (h = 0 / 1), whose word f is
// row g, column pair q of tile f's 8 x 8 block (rows: those 8 k, columns: features 8q' + 2f, +1 of
// the four q'); mma_sum transposes each block with movmatrix into the B fragments (see there).
template <int CPW, bool TR = false, int NF = FT>
__device__ __forceinline__ void load_w(Frag<CPW, NF> &w, const __nv_bfloat16 *__restrict__ W, int K, int n0, int c0,
                                       int c1, int N = 0) {
    static_assert(!TR || NF == FT, "the transposed layout holds FT tiles (one per mma step)");
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int j = 0; j < CPW; j++) {
        const int c = c0 + warp + NW * j;
#pragma unroll
        for (int f = 0; f < NF; f++) {
            if (c < c1) {
                if constexpr (TR) {  // f: the mma step s
                    const __nv_bfloat16 *p = W + (size_t)(64 * c + 16 * (g >> 1) + 4 * f + (g & 1)) * N + n0 + 8 * q;
                    w.a[j][f] = ld_stream(p);
                    w.b[j][f] = ld_stream(p + (size_t)2 * N);
                } else {
                    const __nv_bfloat16 *p = W + (size_t)(n0 + 8 * f + g) * K + 64 * c + 16 * q;
                    w.a[j][f] = ld_stream(p);
                    w.b[j][f] = ld_stream(p + 8);
                }
            } else {
                w.a[j][f] = w.b[j][f] = make_uint4(0, 0, 0, 0);
            }
        }
    }
}

// The transpose of an 8 x 8 bf16 block held one 32-bit word per lane (row lane / 4, columns
// 2 (lane % 4), +1): lane (g, q) receives rows 2q, 2q + 1 of column g
__device__ __forceinline__ uint32_t movt(uint32_t v) {
    uint32_t d;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(d) : "r"(v));
    return d;
}

// X (T, K) bf16 (LO: then its T lo rows) times the fragments' weights over chunks [c0, c1), the 8
// warps' sums left in red[0..3] (a fixed order: warp w + 4 stores, warp w adds its own; the caller
// adds the four, red[0] + red[1] + red[2] + red[3] per element). X is another block's output: read
// through L2 (__ldcg: no stale L1 line). Ends with __syncthreads.
// TR (W (K, N), load_w's TR layout): tile f's B fragment of step s is movt of word f of a[j][s]
// (k rows 64c + 16q + 4s + 0, 1: the physical k of A's a0 / a2 words, as above) and of b[j][s] (+ 2, 3);
// its column g is feature n0 + 8 (g / 2) + 2f + g % 2, so the sums of C columns (2q, 2q + 1) of tile f
// are features 8q + 2f, + 1 of the block's 32.
template <int MT, bool LO, int CPW, bool TR = false, int NF = FT>
__device__ __forceinline__ void mma_sum(const Frag<CPW, NF> &w, const __nv_bfloat16 *X, int T, int K, int c0, int c1,
                                        Red<MT, NF> red) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    float acc[MT][NF][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int f = 0; f < NF; f++) acc[mt][f][0] = acc[mt][f][1] = acc[mt][f][2] = acc[mt][f][3] = 0.0f;
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
                    for (int f = 0; f < NF; f++) {
                        if constexpr (TR) {
                            mma16816(acc[mt][f], a0, a1, a2, a3, movt(word(w.a[j][s], f)), movt(word(w.b[j][s], f)));
                        } else {
                            const uint4 &wv = u ? w.b[j][f] : w.a[j][f];
                            mma16816(acc[mt][f], a0, a1, a2, a3, word(wv, e), word(wv, e + 1));
                        }
                    }
                }
            }
        }
    }
#pragma unroll
    for (int ph = 0; ph < 2; ph++) {
        if ((warp >= 4) == (ph == 0)) {
            float(*rw)[NF * 8 + 4] = red[warp & 3];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int f = 0; f < NF; f++) {
                    const int col = TR ? 8 * q + 2 * f : 8 * f + 2 * q;
                    float2 *p0 = reinterpret_cast<float2 *>(&rw[16 * mt + g][col]);
                    float2 *p1 = reinterpret_cast<float2 *>(&rw[16 * mt + g + 8][col]);
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
}

// Epilogues of a tile (features [n0, n0 + FB) of an N-wide output, T rows) after mma_sum.
// hb: output features (2j, 2j+1) are (gate, up) of h_j, and hb (T, N/2) bf16 receives
// bf16(silu(gate) * up), its lo rows (LO) the remainders (silu_mul_k's arithmetic on the same sums).
// NF: the block's mma tiles of 8 features (its 8 NF / 2 (gate, up) pairs).
template <int MT, bool LO, int NF = FT>
__device__ __forceinline__ void store_silu(Red<MT, NF> red, int T, int N, int n0, __nv_bfloat16 *hb) {
    constexpr int P = NF * 4;  // (gate, up) pairs of the block
    const int half = N / 2;
    for (int i = threadIdx.x; i < T * P; i += NT) {
        const int r = i / P, j = i % P;
        const float gt = (red[0][r][2 * j] + red[1][r][2 * j]) + (red[2][r][2 * j] + red[3][r][2 * j]);
        const float up = (red[0][r][2 * j + 1] + red[1][r][2 * j + 1]) + (red[2][r][2 * j + 1] + red[3][r][2 * j + 1]);
        const float v = gt / (1.0f + expf(-gt)) * up;
        const __nv_bfloat16 hv = __float2bfloat16_rn(v);
        const size_t o = (size_t)r * half + n0 / 2 + j;
        hb[o] = hv;
        if (LO) hb[(size_t)T * half + o] = __float2bfloat16_rn(v - __bfloat162float(hv));
    }
}
// o: the slab's (T, N) f32 output
template <int MT, int NF = FT>
__device__ __forceinline__ void store_f32(Red<MT, NF> red, int T, int N, int n0, float *o) {
    constexpr int F = NF * 8;
    o += n0;
    for (int i = threadIdx.x; i < T * F; i += NT) {
        const int r = i / F, col = i % F;
        o[(size_t)r * N + col] = (red[0][r][col] + red[1][r][col]) + (red[2][r][col] + red[3][r][col]);
    }
}

}  // namespace sgt

#endif
