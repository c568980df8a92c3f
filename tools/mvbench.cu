// mvbench: the decode megakernel's matvec from shared memory, timed alone and beside a bulk copy (diagnostic).
//
// The dataflow kernel's sub-stage profile (docs/perf-notes.md, v8) has the matvec of a stage at
// 1.4-2.7 us when its weight slice is already in shared memory, against ~0.5 us predicted from its
// instruction latencies, and the wait for an mbarrier phase ("wait-w") at 0.4 us even for copies
// issued a whole stage earlier. This program runs the same matvec (megakernel_core.cuh, the same
// row split over one block per SM) on the Qwen3-0.6B stage shapes with nothing else on the SM, then
// with a bulk copy of the next stage's size writing another shared-memory buffer meanwhile (what
// the kernel's one-stage-ahead copies do), and times a wait on an mbarrier phase that has already
// completed. Block 0's thread 0 reads clock64 around each piece; the table gives SM cycles and us.
//
//   mvbench [reps]     (device-check: --only build,mvbench)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda/megakernel_core.cuh"

using namespace mqk;

#define CK(call)                                                                                    \
    do {                                                                                            \
        cudaError_t e_ = (call);                                                                    \
        if (e_ != cudaSuccess) {                                                                    \
            fprintf(stderr, "mvbench: %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                                \
        }                                                                                           \
    } while (0)

namespace {

constexpr size_t BUF_A = 96 << 10;  // the matvec's weight slice (the kernel's buffer 0 size for 0.6B)
constexpr size_t BUF_B = 96 << 10;  // the concurrent copy's target

// One block per SM: stage this block's rows of W (rows, cols) in shared memory, then `reps` times:
// (optionally) start a bulk copy of cbytes from Wc into another buffer, run the matvec, wait for
// the copy, wait once more on the completed phase. cyc[3 b + 0..2]: mean cycles of the matvec, of
// the wait for the copy after it, and of the second (already completed) wait.
__global__ void __launch_bounds__(NT, 1) mvb_k(const __grid_constant__ Params P, const __nv_bfloat16 *W, int rows,
                                                int cols, const __nv_bfloat16 *Wc, unsigned cbytes, float *out,
                                                unsigned long long *cyc, int reps, int regx) {
    extern __shared__ __align__(128) unsigned char dsm[];
    __shared__ float red[32];
    __shared__ __align__(8) unsigned long long mb[2];
    uint4 *wa = reinterpret_cast<uint4 *>(dsm);          // (rows of this block, cols) bf16
    uint4 *wb = reinterpret_cast<uint4 *>(dsm + BUF_A);  // (cbytes) the copy's target
    float *xs = reinterpret_cast<float *>(dsm + BUF_A + BUF_B);  // (cols) the input vector
    wpol_init(P);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (threadIdx.x == 0) {
        for (int k = 0; k < 2; k++) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(mb + k)) : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
#endif
    for (int i = threadIdx.x; i < cols; i += NT) xs[i] = sinf(0.01f * i);
    __syncthreads();
    int r0, r1;
    block_rows(rows, blockIdx.x, gridDim.x, r0, r1);
    const size_t bytes = (size_t)(r1 - r0) * cols * 2;
    if (bytes) {
        if (threadIdx.x == 0) bulk_g2s(smem_u32(wa), W + (size_t)r0 * cols, bytes, smem_u32(mb));
        mb_wait(smem_u32(mb), 0);
    }
    __syncthreads();
    unsigned par = 0;
    unsigned long long tm = 0, tw = 0, tw2 = 0;
    for (int it = 0; it < reps; it++) {
        // thread 32 issues, as the kernel's OPT_ISSW does
        if (cbytes && threadIdx.x == 32)
            bulk_g2s(smem_u32(wb), Wc + (size_t)blockIdx.x * (cbytes / 2), cbytes, smem_u32(mb + 1));
        __syncthreads();
        const long long t0 = clock64();
        matvec<MV_STORE>(W, rows, cols, xs, out, red, nullptr, bytes ? wa : nullptr, -1, -1, nullptr, 0, nullptr,
                         regx != 0);
        __syncthreads();
        const long long t1 = clock64();
        if (cbytes) {
            mb_wait(smem_u32(mb + 1), par);
            par ^= 1u;
        }
        const long long t2 = clock64();
        if (cbytes) mb_wait(smem_u32(mb + 1), par ^ 1u);  // the phase that just completed
        const long long t3 = clock64();
        if (threadIdx.x == 0) tm += t1 - t0, tw += t2 - t1, tw2 += t3 - t2;
        __syncthreads();  // the copy's buffer is free again before the next issue
    }
    if (threadIdx.x == 0) {
        cyc[3 * blockIdx.x] = tm / reps;
        cyc[3 * blockIdx.x + 1] = tw / reps;
        cyc[3 * blockIdx.x + 2] = tw2 / reps;
    }
}

__global__ void fill_k(__nv_bfloat16 *w, size_t n, unsigned seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned x = (unsigned)i * 2654435761u ^ seed;
        x ^= x >> 15;
        w[i] = __float2bfloat16(((x & 0xffff) / 65536.0f - 0.5f) * 0.05f);
    }
}

}  // namespace

int main(int argc, char **argv) {
    const int reps = argc > 1 ? atoi(argv[1]) : 200;
    int dev = 0, sms = 0, khz = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) ||
        cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev) ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev)) {
        fprintf(stderr, "mvbench: no usable CUDA device\n");
        return 1;
    }
    if (major < 9 || reps < 1) {
        fprintf(stderr, "mvbench: needs an sm_90 device (bulk copies) and reps >= 1\n");
        return 1;
    }
    // the Qwen3-0.6B stages' matrices (rows, cols) and the bytes of the next stage's copy per block
    struct {
        const char *name;
        int rows, cols;
    } sh[4] = {{"q|k|v", 4096, 1024}, {"o", 1024, 2048}, {"gate|up", 6144, 1024}, {"down", 1024, 3072}};
    const unsigned copies[3] = {0, 32 << 10, 96 << 10};
    const size_t maxw = (size_t)6144 * 1024;
    __nv_bfloat16 *W, *Wc;
    float *out;
    unsigned long long *cyc;
    CK(cudaMalloc(&W, maxw * 2));
    CK(cudaMalloc(&Wc, (size_t)sms * (96 << 10)));
    CK(cudaMalloc(&out, 6144 * 4));
    CK(cudaMalloc(&cyc, (size_t)sms * 3 * 8));
    fill_k<<<256, 256>>>(W, maxw, 1);
    fill_k<<<256, 256>>>(Wc, (size_t)sms * (48 << 10), 2);
    CK(cudaGetLastError());
    const size_t smem = BUF_A + BUF_B + 3072 * 4;
    CK(cudaFuncSetAttribute(mvb_k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    Params P = {};
    P.opt = OPT_EVICT;
    unsigned long long *h = (unsigned long long *)malloc((size_t)sms * 3 * 8);
    if (!h) return 1;
    printf("mvbench: %d SMs at %.0f MHz, %d reps; cycles per matvec (block 0 / mean / max over blocks), us at that clock\n",
           sms, khz / 1e3, reps);
    printf("| stage | rows/block | regx | copy beside | matvec cyc (b0 / mean / max) | us (mean) | wait for copy | wait on landed phase |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    for (int s = 0; s < 4; s++)
        for (int regx = 1; regx >= 0; regx--)
            for (int c = 0; c < 3; c++) {
                if (!regx && c) continue;  // the register path question needs the quiet case only
                mvb_k<<<sms, NT, smem>>>(P, W, sh[s].rows, sh[s].cols, Wc, copies[c], out, cyc, reps, regx);
                CK(cudaGetLastError());
                CK(cudaDeviceSynchronize());
                CK(cudaMemcpy(h, cyc, (size_t)sms * 3 * 8, cudaMemcpyDeviceToHost));
                double mean = 0, mx = 0, w = 0, w2 = 0;
                for (int b = 0; b < sms; b++) {
                    mean += h[3 * b] / (double)sms;
                    if (h[3 * b] > mx) mx = h[3 * b];
                    w += h[3 * b + 1] / (double)sms;
                    w2 += h[3 * b + 2] / (double)sms;
                }
                printf("| %s | %.1f | %d | %u KB | %llu / %.0f / %.0f | %.2f | %.0f cyc | %.0f cyc |\n", sh[s].name,
                       (double)sh[s].rows / sms, regx, copies[c] >> 10, h[0], mean, mx, mean / (khz * 1e-3), w, w2);
            }
    free(h);
    cudaFree(W);
    cudaFree(Wc);
    cudaFree(out);
    cudaFree(cyc);
    return 0;
}
