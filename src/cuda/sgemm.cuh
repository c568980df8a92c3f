// sgemm.cuh: skinny bf16 GEMM for short prompts (at most 64 rows), weights loaded ahead of the PDL wait.
#ifndef MQ_SGEMM_CUH
#define MQ_SGEMM_CUH
#include <cuda_bf16.h>
#include <cuda_runtime.h>

constexpr int SGEMM_MAXT = 64;  // most rows (tokens) sgemm_run takes

// A byte range (16-byte aligned, n a multiple of 16; n = 0: none) for the L2 to fetch while a GEMM
// runs: weights of a later GEMM, each block asking for its share before it loads its own.
struct SgPf {
    const void *p;
    size_t n;
};

// K slabs for an (N, K) weight on a device of `sms` multiprocessors (each slab's partial product is
// summed by the kernel that reads it): about two blocks per multiprocessor, at most two 64-wide k
// chunks per warp. min_ks: the fewest slabs (two chunks per warp). 0 when the shape is not supported
// (N % 32, K % 64) or T is out of range.
int sgemm_slabs(int N, int K, int T, int sms, int *min_ks);

// out + s*T*N (T, N) f32, for each K slab s < ks: the rows of X (T, K) bf16 times W (N, K) bf16
// row-major transposed (wt = 0), or times W (K, N) bf16 row-major (wt = 1: e.g. the fused decode
// MLP's transposed down; the same tiles, its 8 x 8 blocks transposed in registers), over slab s's
// k range. lo: X has 2T rows, its bf16 rounding remainders ("split bf16") after the T hi rows;
// both go through the same weight fragments and are summed, so the weights are read once. pdl:
// launched with programmatic dependent launch (pdl.cuh): the weight slice is loaded while the
// previous kernel finishes. pf: a range the L2 prefetches meanwhile (see SgPf). Returns the launch's
// error.
cudaError_t sgemm_run(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, int lo, float *out, int ks,
                      int pdl, cudaStream_t s, int wt, SgPf pf = SgPf{});

// sgemm_run with blocks of 64 features instead of 32 (one block per multiprocessor, each warp one k
// chunk): X's rows are read once per 64 features, half of sgemm_run's L2 -> SM traffic after the
// wait, for prompts of 17-32 tokens. sgemm_slabs_wide: its K slabs for the shape, 0 when it does not
// apply (N % 64, T outside 17-32, or fewer blocks than ~0.9 sms, or more than 2 sms). half: twice the
// slabs (half the warps of a block idle) where one chunk per warp leaves the GPU less than ~0.9 full.
int sgemm_slabs_wide(int N, int K, int T, int sms, int half);
cudaError_t sgemm_run_wide(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, int lo, float *out,
                           int ks, int pdl, cudaStream_t s, SgPf pf = SgPf{});

// The gate|up product with SiLU in the epilogue: W's rows (2j, 2j+1) are (gate_j, up_j), and
// h (T, N/2) bf16 receives bf16(silu(gate) * up), followed by T rows of rounding remainders when lo
// (the down GEMM's split input). One K slab (K <= 1024); bit-identical to sgemm_run then
// silu_mul_k. Returns the launch's error (cudaErrorInvalidValue for a shape it does not take).
cudaError_t sgemm_silu(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, int lo, __nv_bfloat16 *h,
                       int pdl, cudaStream_t s);

// sgemm_silu with blocks of 48 features (24 (gate, up) pairs), one per multiprocessor and one K slab
// (at most two 64-wide chunks per warp: K <= 1,024), for a gate|up whose N / 48
// blocks fill 3/4 to all of the sms multiprocessors in one wave (the 0.6B: 128 blocks on 132), where
// sgemm_silu's 32-feature blocks leave some SMs two (run 103), T <= 32 (MQ_PREFILL_SGSILU=48).
// sgemm_silu48_ok: whether it takes the shape. Same output as sgemm_silu (bit-identical).
int sgemm_silu48_ok(int N, int K, int T, int sms);
cudaError_t sgemm_silu48(const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, int T, int lo, __nv_bfloat16 *h,
                         int pdl, cudaStream_t s, int sms);

#endif
