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
#include "sgemm_tile.cuh"

namespace {

using namespace sgt;

// grid (N / FB, slabs), block NT. cpb: k chunks per slab (<= NW * CPW). MT: 16-row tiles of X
// (T <= 16 MT). LO: X's lo rows follow the hi rows. CPW: k chunks per warp (1: all of a warp's X
// loads are one round after the wait; 2: half the slabs). X is the previous kernel's output: read
// after pdl_wait, through L2 (__ldcg: no L1 line from before the wait can be stale).
// hb (one slab only): instead of out, the SiLU epilogue: output features (2j, 2j+1) are (gate, up)
// of h_j, and hb (T, N/2) bf16 receives bf16(silu(gate) * up), its lo rows (LO) the remainders, with
// silu_mul_k's arithmetic on the same sums (bit-identical).
// NF: mma tiles of 8 features per block (FT: 32 features; 2 FT: the wide tiles of sgemm_run_wide,
// one block per multiprocessor).
template <int MT, bool LO, int CPW, bool TR, int NF = FT>
__global__ void __launch_bounds__(NT, MT <= 2 && NF == FT ? 2 : 1)
    sgemm_k(const __nv_bfloat16 *__restrict__ W, int N, int K, const __nv_bfloat16 *X, int T, float *out, int cpb,
            __nv_bfloat16 *hb, SgPf pf) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (pf.n && threadIdx.x == 0) {  // this block's share of the range, one bulk prefetch
        const unsigned nb = gridDim.x * gridDim.y, b = blockIdx.y * gridDim.x + blockIdx.x;
        const size_t share = ((pf.n + nb - 1) / nb + 15) & ~(size_t)15, off = (size_t)b * share;
        if (off < pf.n)
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(static_cast<const char *>(pf.p) + off),
                         "r"((unsigned)(pf.n - off < share ? pf.n - off : share))
                         : "memory");
    }
#endif
    __shared__ __align__(16) float red[4][MT * 16][NF * 8 + 4];  // (warp pair, row, feature)
    const int n0 = blockIdx.x * NF * 8, nch = K / 64;
    const int c0 = blockIdx.y * cpb, c1 = min(c0 + cpb, nch);
    Frag<CPW, NF> w;
    load_w<CPW, TR, NF>(w, W, K, n0, c0, c1, N);
    pdl_wait();
    pdl_trigger();
    mma_sum<MT, LO, CPW, TR, NF>(w, X, T, K, c0, c1, red);
    if (hb) {
        store_silu<MT, LO, NF>(red, T, N, n0, hb);
        return;
    }
    store_f32<MT, NF>(red, T, N, n0, out + (size_t)blockIdx.y * T * N);
}

template <int MT, bool LO, bool TR>
cudaError_t launch(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, float *out, int ks, int pdl,
                   cudaStream_t s, __nv_bfloat16 *hb, SgPf pf) {
    const int nch = K / 64, cpb = (nch + ks - 1) / ks;
    const dim3 grid(N / FB, ks);
    return cpb <= NW ? pdl_launch(pdl, sgemm_k<MT, LO, 1, TR>, grid, dim3(NT), 0, s, W, N, K, X, T, out, cpb, hb, pf)
                     : pdl_launch(pdl, sgemm_k<MT, LO, 2, TR>, grid, dim3(NT), 0, s, W, N, K, X, T, out, cpb, hb, pf);
}

template <bool TR>
cudaError_t launch_t(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, int lo, float *out, int ks,
                     int pdl, cudaStream_t s, __nv_bfloat16 *hb, SgPf pf) {
    const int mt = (T + 15) / 16;
    if (lo) {
        switch (mt) {
        case 1: return launch<1, true, TR>(W, N, K, X, T, out, ks, pdl, s, hb, pf);
        case 2: return launch<2, true, TR>(W, N, K, X, T, out, ks, pdl, s, hb, pf);
        case 3: return launch<3, true, TR>(W, N, K, X, T, out, ks, pdl, s, hb, pf);
        default: return launch<4, true, TR>(W, N, K, X, T, out, ks, pdl, s, hb, pf);
        }
    }
    switch (mt) {
    case 1: return launch<1, false, TR>(W, N, K, X, T, out, ks, pdl, s, hb, pf);
    case 2: return launch<2, false, TR>(W, N, K, X, T, out, ks, pdl, s, hb, pf);
    case 3: return launch<3, false, TR>(W, N, K, X, T, out, ks, pdl, s, hb, pf);
    default: return launch<4, false, TR>(W, N, K, X, T, out, ks, pdl, s, hb, pf);
    }
}

}  // namespace

int sgemm_slabs_wide(int N, int K, int T, int sms, int half) {
    constexpr int F = 2 * FB;
    if (N <= 0 || K <= 0 || N % F || K % 64 || T < 17 || T > 32) return 0;
    const int nch = K / 64, nb = N / F;
    // one chunk per warp (the wide fragments take the registers of two), a block per multiprocessor;
    // half: as many slabs again where that fills the GPU, with half the warps idle
    int ks = (nch + NW - 1) / NW;
    if (half && (long long)nb * ks < (long long)sms * 9 / 10 && nch % (2 * ks) == 0) ks *= 2;
    return (long long)nb * ks >= (long long)sms * 9 / 10 && (long long)nb * ks <= 2LL * sms ? ks : 0;
}

cudaError_t sgemm_run_wide(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, int lo, float *out,
                           int ks, int pdl, cudaStream_t s, SgPf pf) {
    constexpr int F = 2 * FB;
    const int nch = K / 64, cpb = (nch + ks - 1) / ks;
    if (N % F || K % 64 || T < 17 || T > 32 || ks < 1 || cpb > NW) return cudaErrorInvalidValue;
    const dim3 grid(N / F, ks);
    return lo ? pdl_launch(pdl, sgemm_k<2, true, 1, false, 2 * FT>, grid, dim3(NT), 0, s, W, N, K, X, T, out, cpb,
                           (__nv_bfloat16 *)nullptr, pf)
              : pdl_launch(pdl, sgemm_k<2, false, 1, false, 2 * FT>, grid, dim3(NT), 0, s, W, N, K, X, T, out, cpb,
                           (__nv_bfloat16 *)nullptr, pf);
}

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

// sgemm_run and sgemm_silu: hb != nullptr selects the SiLU epilogue (one slab); wt: W is (K, N)
cudaError_t run(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, int lo, float *out, int ks, int pdl,
                cudaStream_t s, __nv_bfloat16 *hb, int wt, SgPf pf) {
    const int nch = K / 64;
    if (N % FB || K % 64 || T < 1 || T > SGEMM_MAXT || ks < 1 || ks > nch || (nch + ks - 1) / ks > NW * CPW_MAX)
        return cudaErrorInvalidValue;
    return wt ? launch_t<true>(W, N, K, X, T, lo, out, ks, pdl, s, hb, pf)
              : launch_t<false>(W, N, K, X, T, lo, out, ks, pdl, s, hb, pf);
}

}  // namespace

cudaError_t sgemm_run(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, int lo, float *out, int ks,
                      int pdl, cudaStream_t s, int wt, SgPf pf) {
    return run(W, N, K, X, T, lo, out, ks, pdl, s, nullptr, wt, pf);
}

cudaError_t sgemm_silu(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, int lo, __nv_bfloat16 *h,
                       int pdl, cudaStream_t s) {
    if (N % 2 || !h) return cudaErrorInvalidValue;
    return run(W, N, K, X, T, lo, nullptr, 1, pdl, s, h, 0, SgPf{});
}

namespace {
constexpr int F48 = 48, NF48 = F48 / 8;  // sgemm_silu48's features per block, as mma tiles of 8

template <int MT, bool LO>
cudaError_t launch48(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, __nv_bfloat16 *h, int pdl,
                     cudaStream_t s) {
    const int nch = K / 64;
    return pdl_launch(pdl, sgemm_k<MT, LO, 2, false, NF48>, dim3(N / F48, 1), dim3(NT), 0, s, W, N, K, X, T,
                      (float *)nullptr, nch, h, SgPf{});
}
}  // namespace

int sgemm_silu48_ok(int N, int K, int T, int sms) {
    const int nb = N / F48;
    return N > 0 && K > 0 && N % F48 == 0 && K % 64 == 0 && K / 64 <= NW * 2 && T >= 1 && T <= 32 &&
           nb <= sms && 4 * nb >= 3 * sms;
}

cudaError_t sgemm_silu48(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, int lo, __nv_bfloat16 *h,
                         int pdl, cudaStream_t s, int sms) {
    if (!h || !sgemm_silu48_ok(N, K, T, sms)) return cudaErrorInvalidValue;
    const int mt = (T + 15) / 16;
    if (lo) return mt == 1 ? launch48<1, true>(W, N, K, X, T, h, pdl, s) : launch48<2, true>(W, N, K, X, T, h, pdl, s);
    return mt == 1 ? launch48<1, false>(W, N, K, X, T, h, pdl, s) : launch48<2, false>(W, N, K, X, T, h, pdl, s);
}
