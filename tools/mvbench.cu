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
// Then dependency hops: through L2 and a counter (what the kernel does), and inside thread-block
// clusters through distributed shared memory (cl_k: what a cluster-based kernel would do).
//
//   mvbench [reps]     (device-check: --only build,mvbench)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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


// Dependency hops between SMs, the dataflow kernel's publish / wait pattern: the producer block
// writes a 4 KB stage vector, __syncthreads, thread 0 red.release.gpu on a counter; the consumer's
// thread 0 polls (acq 0: relaxed polls then one acquire load, as OPT_POLLR; 1: acquire polls; 2:
// relaxed polls only), __syncthreads, the block loads the vector (__ldcg) and checks it.
//   mode 0: blocks 0 and 1 ping-pong, the other blocks idle;
//   mode 1: the same while every other block streams 96 KB bulk copies from HBM into its shared
//           memory back to back (the weight traffic of the decode kernel, at full bandwidth);
//   mode 2: all blocks write their 8 floats of the vector, arrive on one counter, wait for all and
//           read the whole vector (a grid-wide stage), no copies;
//   mode 3: mode 2 with each block keeping one 48 KB bulk copy in flight per round;
//   mode 4: mode 2 with one flag word per block instead of the counter (st.release of the round
//           number; warp 0 of every block polls the G flags, ~5 per lane): no same-address atomics;
//   mode 5: mode 4 with the 48 KB copies of mode 3;
//   mode 6: mode 2 without the vector (the counter alone: the synchronisation's own cost);
//   mode 7: mode 1 with the copies from a 16 MB range that stays in L2 (L2 -> SM traffic only);
//   mode 8: mode 0 while every other block asks L2 to prefetch 96 KB from HBM each 6,000 cycles
//           (~4 TB/s over 130 SMs: HBM -> L2 traffic only, nothing crosses to the SMs);
//   mode 9: mode 8's pace with bulk copies into shared memory instead (the same bytes, to the SMs).
// (7-9: would weights staged in L2 ahead of time, then copied from there, make the hops cheaper?)
//   mode 10: mode 3's rounds with 3,000 cycles (~1.5 us) of stage work after each hop, the block's
//            48 KB copy issued right after the hop and landed before the next publish: copies and
//            hops alternate (no copy in flight at a hop);
//   mode 11: the same work and bytes with the copy issued before the publish, as the decode kernel
//            issues a stage's copy one stage ahead: copies overlap the hops.
// cyc[0]: cycles per hop (ping-pong round trip / 2: modes 0-1, 7-9) or per round (modes 2-6, 10-11),
// block 0's clock. A round of modes 3, 5 and 11 also waits for the block's previous 48 KB copy: at
// least the copies' own time (10-11 also include the 3,000 cycles of work).
// cyc[1]: bad vector values seen (must be 0).
__global__ void __launch_bounds__(NT, 1) hop_k(const __grid_constant__ Params P, unsigned *cnt, float *vec,
                                                const __nv_bfloat16 *src, size_t src_bytes, int reps, int mode,
                                                int acq, unsigned long long *cyc) {
    extern __shared__ __align__(128) unsigned char dsm[];
    __shared__ __align__(8) unsigned long long mb;
    __shared__ int s_bad;
    wpol_init(P);
    if (threadIdx.x == 0) {
        s_bad = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(&mb)) : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
    }
    __syncthreads();
    const unsigned G = gridDim.x, b = blockIdx.x;
    auto wait_ge = [&](const unsigned *c, unsigned target) {
        if (threadIdx.x == 0) {
            if (acq == 1) {
                while (ld_acquire(c) < target) {
                }
            } else {
                while (ld_relaxed(c) < target) {
                }
                if (acq == 0) (void)ld_acquire(c);
            }
        }
        __syncthreads();
    };
    auto check = [&](const float *v, float want) {
        const float4 x = __ldcg(reinterpret_cast<const float4 *>(v) + threadIdx.x);
        if (x.x != want || x.w != want) s_bad = 1;
    };
    auto publish = [&](float *v, float val, unsigned *c) {
        reinterpret_cast<float4 *>(v)[threadIdx.x] = make_float4(val, val, val, val);
        __syncthreads();
        if (threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(c), "r"(1u) : "memory");
    };
    const bool copies = mode == 3 || mode == 5 || mode == 11, flags = mode == 4 || mode == 5;
    unsigned *flg = cnt + 64;  // (G) per-block round numbers (modes 4-5)
    // every flag of the G blocks at least target (warp 0; lane j covers blocks j, j + 32, ...)
    auto wait_flags = [&](unsigned target) {
        if (threadIdx.x < 32) {
            for (unsigned j = threadIdx.x; j < G; j += 32) {
                if (acq == 1) {
                    while (ld_acquire(flg + j) < target) {
                    }
                } else {
                    while (ld_relaxed(flg + j) < target) {
                    }
                    if (acq == 0) (void)ld_acquire(flg + j);
                }
            }
            __syncwarp();
        }
        __syncthreads();
    };
    const size_t chunk = (copies || mode == 10 ? 48 : 96) << 10;
    const size_t nchunks = src_bytes / chunk;
    unsigned par = 0;
    long long t0 = 0;
    if (mode <= 1 || (mode >= 7 && mode <= 9)) {
        if (b >= 2) {
            if (mode == 0 || threadIdx.x != 0) return;
            // background until block 0 sets cnt[2]: back-to-back 96 KB copies (1: from HBM, 7: from
            // the first 16 MB), or one 96 KB L2 prefetch (8) / copy (9) per 6,000 cycles
            const size_t nk = mode == 7 ? ((size_t)16 << 20) / chunk : nchunks;
            size_t k = b;
            long long next = clock64();
            while (ld_relaxed(cnt + 2) == 0) {
                if (mode >= 8) {
                    while (clock64() < next) {
                    }
                    next += 6000;
                }
                const __nv_bfloat16 *p = src + (k % nk) * (chunk / 2);
                if (mode == 8) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
                    for (int j = 0; j < 3; j++)
                        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + (size_t)j * 16384),
                                     "r"(32768u)
                                     : "memory");
#endif
                } else {
                    bulk_g2s(smem_u32(dsm), p, chunk, smem_u32(&mb));
                    mb_wait(smem_u32(&mb), par);
                    par ^= 1u;
                }
                k += G;
            }
            return;
        }
        t0 = clock64();
        for (int i = 0; i < reps; i++) {
            if (b == 0) {
                publish(vec, (float)i, cnt);
                wait_ge(cnt + 1, (unsigned)i + 1);
                check(vec + 1024, (float)i);
            } else {
                wait_ge(cnt, (unsigned)i + 1);
                check(vec, (float)i);
                publish(vec + 1024, (float)i, cnt + 1);
            }
        }
        if (b == 0 && threadIdx.x == 0) {
            cyc[0] = (unsigned long long)(clock64() - t0) / (2ull * reps);
            asm volatile("st.relaxed.gpu.global.u32 [%0], %1;" ::"l"(cnt + 2), "r"(1u) : "memory");
        }
    } else {
        t0 = clock64();
        for (int i = 0; i < reps; i++) {
            if (copies && threadIdx.x == 32) {
                if (i) mb_wait(smem_u32(&mb), par), par ^= 1u;
                bulk_g2s(smem_u32(dsm), src + ((size_t)(b + (size_t)i * G) % nchunks) * (chunk / 2), chunk, smem_u32(&mb));
            }
            // each round publishes into its own slot so a fast block cannot overwrite a slow reader's
            // block b owns floats [8b, 8b + 8) of the vector (a stage's rows), everyone reads it all
            float *v = vec + (size_t)(i & 1) * 1024;
            if (mode != 6 && threadIdx.x < 2 && 8 * b + 4 * threadIdx.x < 1024)
                reinterpret_cast<float4 *>(v + 8 * b)[threadIdx.x] = make_float4((float)i, (float)i, (float)i, (float)i);
            __syncthreads();
            if (flags) {
                if (threadIdx.x == 0)
                    asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(flg + b), "r"((unsigned)i + 1) : "memory");
                wait_flags((unsigned)i + 1);
            } else {
                if (threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(cnt), "r"(1u) : "memory");
                wait_ge(cnt, (unsigned)(i + 1) * G);
            }
            if (mode != 6) {
                const float4 x = __ldcg(reinterpret_cast<const float4 *>(v) + threadIdx.x);
                if (4 * threadIdx.x < 8 * G && (x.x != (float)i || x.w != (float)i)) s_bad = 1;
            }
            if (mode >= 10) {  // the stage's work; mode 10's copy runs beside it only
                if (mode == 10 && threadIdx.x == 32)
                    bulk_g2s(smem_u32(dsm), src + ((size_t)(b + (size_t)i * G) % nchunks) * (chunk / 2), chunk,
                             smem_u32(&mb));
                const long long w0 = clock64();
                while (clock64() - w0 < 3000) {
                }
                if (mode == 10 && threadIdx.x == 32) mb_wait(smem_u32(&mb), par), par ^= 1u;
                __syncthreads();
            }
        }
        if (copies && threadIdx.x == 32) mb_wait(smem_u32(&mb), par);
        if (b == 0 && threadIdx.x == 0) cyc[0] = (unsigned long long)(clock64() - t0) / reps;
    }
    __syncthreads();
    if (threadIdx.x == 0 && s_bad) atomicAdd(cyc + 1, 1ull);
}

// ---- thread-block clusters (sm_90): the dependency hop through distributed shared memory
// (the cluster instructions exist from sm_90 on; older targets compile cl_k as an empty kernel)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define MVB_NO_CLUSTERS 1
#endif
#ifndef MVB_NO_CLUSTERS

__device__ __forceinline__ unsigned cl_rank() {
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}
__device__ __forceinline__ unsigned cl_size() {
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(r));
    return r;
}
// all threads of all blocks of the cluster (the aligned forms: every thread executes them)
__device__ __forceinline__ void cl_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
}
// the shared::cluster address of shared-memory address a in block `rank` of the cluster
__device__ __forceinline__ unsigned cl_map(unsigned a, unsigned rank) {
    unsigned d;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(rank));
    return d;
}
// 16 bytes into a peer's shared memory, completing 16 bytes of the peer's mbarrier mb (both cluster addresses)
__device__ __forceinline__ void cl_put(unsigned a, float4 v, unsigned mb) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];" ::"r"(a),
                 "r"(__float_as_uint(v.x)), "r"(__float_as_uint(v.y)), "r"(__float_as_uint(v.z)),
                 "r"(__float_as_uint(v.w)), "r"(mb)
                 : "memory");
}
#endif

// Dependency hops inside a thread-block cluster, where blocks write each other's shared memory
// (st.async, completing the receiver's mbarrier) instead of going through L2 and a counter:
//   mode 0: cluster barrier rounds (barrier.cluster arrive.release + wait.acquire), all blocks;
//   mode 1: ping-pong of a 4 KB vector between ranks 0 and 1 of cluster 0, the others idle;
//   mode 2: mode 1 while every other cluster streams 96 KB bulk copies from HBM;
//   mode 3: all-gather rounds in every cluster: each block pushes its 64 B slice into all its peers
//           and waits on its mbarrier for theirs (a stage boundary inside a cluster);
//   mode 4: mode 3 with one 48 KB bulk copy per block in flight per round.
// Receive buffers and mbarriers alternate by message (the sender of message j + 2 has already seen
// the receiver's reply to message j, so a buffer is never overwritten while it is read).
// cyc[0]: cycles per hop (modes 1-2) or round (0, 3, 4), block 0's clock; cyc[1]: bad values seen.
__global__ void __launch_bounds__(NT, 1) cl_k(const __grid_constant__ Params P, const __nv_bfloat16 *src,
                                               size_t src_bytes, unsigned *stop, int reps, int mode,
                                               unsigned long long *cyc) {
#ifdef MVB_NO_CLUSTERS
    (void)P, (void)src, (void)src_bytes, (void)stop, (void)reps, (void)mode, (void)cyc;
#else
    extern __shared__ __align__(128) unsigned char dsm[];  // [2 x 4 KB receive buffers][bulk copy target]
    __shared__ __align__(8) unsigned long long mb[3];     // 0, 1: receive; 2: bulk copies
    __shared__ int s_bad;
    wpol_init(P);
    const unsigned rank = cl_rank(), cs = cl_size(), cid = blockIdx.x / cs;
    if (threadIdx.x == 0) {
        s_bad = 0;
        for (int k = 0; k < 3; k++) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(mb + k)) : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    cl_sync();  // the peers' mbarriers are initialised before anyone pushes
    float *rb = reinterpret_cast<float *>(dsm);
    unsigned char *cb = dsm + 8192;
    unsigned cpar = 0;
    long long t0 = 0;
    auto arm = [&](int k, unsigned bytes) {
        if (threadIdx.x == 0)
            asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(mb + k)), "r"(bytes) : "memory");
    };
    if (mode == 0) {
        t0 = clock64();
        for (int i = 0; i < reps; i++) cl_sync();
        if (blockIdx.x == 0 && threadIdx.x == 0) cyc[0] = (unsigned long long)(clock64() - t0) / reps;
    } else if (mode <= 2) {
        if (cid != 0 || rank >= 2) {
            if (mode == 1 || threadIdx.x != 0) return;
            const size_t chunk = 96 << 10, nchunks = src_bytes / chunk;
            for (size_t k = blockIdx.x; ld_relaxed(stop) == 0; k += gridDim.x) {
                bulk_g2s(smem_u32(cb), src + (k % nchunks) * (chunk / 2), chunk, smem_u32(mb + 2));
                mb_wait(smem_u32(mb + 2), cpar);
                cpar ^= 1u;
            }
            return;
        }
        const unsigned peer = rank ^ 1u;
        t0 = clock64();
        for (int i = 0; i < 2 * reps; i++) {
            const int j = i >> 1, k = j & 1;  // the j-th message each way; its buffer and mbarrier
            if ((unsigned)(i & 1) == rank) {  // send message i: 4 KB, one float4 per thread
                const unsigned a = cl_map(smem_u32(rb + k * 1024 + 4 * threadIdx.x), peer);
                cl_put(a, make_float4((float)i, (float)i, (float)i, (float)i), cl_map(smem_u32(mb + k), peer));
            } else {
                arm(k, 4096);
                mb_wait<true>(smem_u32(mb + k), (unsigned)(j >> 1) & 1u);
                const float4 x = reinterpret_cast<const float4 *>(rb + k * 1024)[threadIdx.x];
                if (x.x != (float)i || x.w != (float)i) s_bad = 1;
                __syncthreads();
            }
        }
        if (blockIdx.x == 0 && threadIdx.x == 0) {
            cyc[0] = (unsigned long long)(clock64() - t0) / (2ull * reps);
            asm volatile("st.relaxed.gpu.global.u32 [%0], %1;" ::"l"(stop), "r"(1u) : "memory");
        }
    } else {
        const size_t chunk = 48 << 10, nchunks = src_bytes / chunk;
        t0 = clock64();
        for (int i = 0; i < reps; i++) {
            const int k = i & 1;
            if (mode == 4 && threadIdx.x == 32) {
                if (i) mb_wait(smem_u32(mb + 2), cpar), cpar ^= 1u;
                bulk_g2s(smem_u32(cb), src + ((size_t)(blockIdx.x + (size_t)i * gridDim.x) % nchunks) * (chunk / 2), chunk,
                         smem_u32(mb + 2));
            }
            // this block's slice: floats [16 rank, 16 rank + 16) of every peer's buffer k
            if (threadIdx.x < 4 * (cs - 1)) {
                const unsigned p = (rank + 1 + threadIdx.x / 4) % cs;
                const unsigned a = cl_map(smem_u32(rb + k * 1024 + 16 * rank + 4 * (threadIdx.x % 4)), p);
                cl_put(a, make_float4((float)i, (float)i, (float)i, (float)i), cl_map(smem_u32(mb + k), p));
            }
            arm(k, 64 * (cs - 1));
            mb_wait<true>(smem_u32(mb + k), (unsigned)(i >> 1) & 1u);
            if (threadIdx.x < 4 * cs && threadIdx.x / 4 != rank) {
                const float4 x = reinterpret_cast<const float4 *>(rb + k * 1024)[threadIdx.x];
                if (x.x != (float)i || x.w != (float)i) s_bad = 1;
            }
            __syncthreads();
        }
        if (mode == 4 && threadIdx.x == 32) mb_wait(smem_u32(mb + 2), cpar);
        if (blockIdx.x == 0 && threadIdx.x == 0) cyc[0] = (unsigned long long)(clock64() - t0) / reps;
    }
    __syncthreads();
    if (threadIdx.x == 0 && s_bad) atomicAdd(cyc + 1, 1ull);
    cl_sync();  // no block leaves while a peer may still write its shared memory
#endif
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
    const bool hops_only = argc > 2 && !strcmp(argv[2], "hops");  // mvbench REPS hops: the hop_k table alone
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
    float *ho = (float *)malloc(6144 * 4), *ref = (float *)malloc(6144 * 4);
    int bad = 0;
    if (!h || !ho || !ref) return 1;
    printf("mvbench: %d SMs at %.0f MHz, %d reps\n", sms, khz / 1e3, reps);
    if (!hops_only) {
        printf("cycles per matvec (block 0 / mean / max over blocks), us at that clock\n");
        printf("| stage | rows/block | regx | copy beside | matvec cyc (b0 / mean / max) | us (mean) | wait for copy | wait on landed phase |\n");
        printf("|---|---|---|---|---|---|---|---|\n");
    }
    for (int s = 0; s < (hops_only ? 0 : 4); s++)
        for (int regx = 1; regx >= 0; regx--)
            for (int c = 0; c < 3; c++) {
                if (!regx && c) continue;  // the row-per-warp path without registers: the quiet case only
                mvb_k<<<sms, NT, smem>>>(P, W, sh[s].rows, sh[s].cols, Wc, copies[c], out, cyc, reps, regx);
                CK(cudaGetLastError());
                CK(cudaDeviceSynchronize());
                CK(cudaMemcpy(h, cyc, (size_t)sms * 3 * 8, cudaMemcpyDeviceToHost));
                // the paths must agree (summation order differs: a relative tolerance)
                CK(cudaMemcpy(ho, out, (size_t)sh[s].rows * 4, cudaMemcpyDeviceToHost));
                double md = 0;
                for (int r = 0; r < sh[s].rows; r++) {
                    if (regx == 1 && c == 0) ref[r] = ho[r];
                    const double d = fabs((double)ho[r] - ref[r]) / (fabs(ref[r]) + 1e-3);
                    if (d > md) md = d;
                }
                if (md > 1e-4) {
                    printf("mvbench: %s without regx differs from the register path by %.3g (relative)\n", sh[s].name, md);
                    bad = 1;
                }
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

    // dependency hops (hop_k): ping-pong and grid-wide rounds, quiet and beside full-bandwidth copies
    {
        const size_t sbytes = (size_t)1 << 30;  // 1 GB source for the background copies (beyond L2)
        __nv_bfloat16 *src;
        unsigned *cnt;
        float *vec;
        CK(cudaMalloc(&src, sbytes));
        CK(cudaMalloc(&cnt, (64 + (size_t)sms) * 4));  // counters, then one flag per block
        CK(cudaMalloc(&vec, 2048 * 4));
        CK(cudaMemset(src, 0, sbytes));
        CK(cudaFuncSetAttribute(hop_k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)(96 << 10)));
        static const char *mn[12] = {"ping-pong, quiet", "ping-pong, 130 SMs copying", "grid round, quiet",
                                     "grid round, 48 KB copy per block", "grid round, per-block flags, quiet",
                                     "grid round, per-block flags, 48 KB copy per block",
                                     "grid round, counter only (no vector), quiet",
                                     "ping-pong, 130 SMs copying from L2 (16 MB range)",
                                     "ping-pong, 130 SMs prefetching HBM -> L2 (96 KB / 6,000 cyc each)",
                                     "ping-pong, 130 SMs copying HBM -> smem (96 KB / 6,000 cyc each)",
                                     "grid round + 3,000 cyc work, 48 KB copy after the hop (alternating)",
                                     "grid round + 3,000 cyc work, 48 KB copy before the publish (overlapping)"};
        static const char *an[3] = {"relaxed polls + acquire", "acquire polls", "relaxed polls only"};
        printf("\n| hop | poll | cycles | us | bad |\n|---|---|---|---|---|\n");
        for (int mode = 0; mode < 12; mode++)
            for (int acq = 0; acq < (mode >= 7 ? 1 : 3); acq++) {
                unsigned long long hc[2] = {0, 0};
                CK(cudaMemset(cnt, 0, (64 + (size_t)sms) * 4));
                CK(cudaMemset(vec, 0xff, 2048 * 4));
                CK(cudaMemset(cyc, 0, 16));
                hop_k<<<sms, NT, 96 << 10>>>(P, cnt, vec, src, sbytes, reps * 5, mode, acq, cyc);
                CK(cudaGetLastError());
                CK(cudaDeviceSynchronize());
                CK(cudaMemcpy(hc, cyc, 16, cudaMemcpyDeviceToHost));
                printf("| %s | %s | %llu | %.2f | %llu |\n", mn[mode], an[acq], hc[0], hc[0] / (khz * 1e-3), hc[1]);
            }
        cudaFree(src);
        cudaFree(cnt);
        cudaFree(vec);
    }
    // cluster hops (cl_k): how many clusters fit, then the hops through distributed shared memory
    if (!hops_only) {
        const size_t sbytes = (size_t)1 << 30, dyn = 8192 + (112 << 10);  // 120 KB: one block per SM
        __nv_bfloat16 *src;
        unsigned *stop;
        CK(cudaMalloc(&src, sbytes));
        CK(cudaMalloc(&stop, 4));
        CK(cudaMemset(src, 0, sbytes));
        CK(cudaFuncSetAttribute(cl_k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dyn));
        CK(cudaFuncSetAttribute(cl_k, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
        static const char *cn[5] = {"cluster barrier round", "st.async ping-pong, 4 KB, quiet",
                                    "st.async ping-pong, 4 KB, other clusters copying",
                                    "all-gather round (64 B per block), quiet", "all-gather round, 48 KB copy per block"};
        printf("\n| cluster size | blocks | hop | cycles | us | bad |\n|---|---|---|---|---|---|\n");
        const int sizes[3] = {2, 8, 16};
        for (int si = 0; si < 3; si++) {
            const int csz = sizes[si];
            cudaLaunchConfig_t cfg = {};
            cudaLaunchAttribute at[1];
            at[0].id = cudaLaunchAttributeClusterDimension;
            at[0].val.clusterDim.x = (unsigned)csz, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
            cfg.blockDim = dim3(NT);
            cfg.dynamicSmemBytes = dyn;
            cfg.attrs = at;
            cfg.numAttrs = 1;
            cfg.gridDim = dim3((unsigned)(sms / csz * csz));
            int ncl = 0;
            if (cudaOccupancyMaxActiveClusters(&ncl, cl_k, &cfg) != cudaSuccess || ncl < 1) {
                printf("| %d | - | clusters of %d do not fit (%s) | | | |\n", csz, csz, cudaGetErrorString(cudaGetLastError()));
                continue;
            }
            printf("| %d | %d | (at most %d clusters of %d co-resident at 120 KB per block: %d SMs) | | | |\n", csz,
                   ncl * csz, ncl, csz, ncl * csz);
            for (int mode = 0; mode < 5; mode++) {
                if ((csz == 2) != (mode == 1 || mode == 2)) continue;  // ping-pong in pairs, rounds in 8 / 16
                cfg.gridDim = dim3((unsigned)(ncl * csz));
                unsigned long long hc[2] = {0, 0};
                CK(cudaMemset(cyc, 0, 16));
                CK(cudaMemset(stop, 0, 4));
                CK(cudaLaunchKernelEx(&cfg, cl_k, P, (const __nv_bfloat16 *)src, sbytes, stop, reps * 5, mode, cyc));
                CK(cudaGetLastError());
                CK(cudaDeviceSynchronize());
                CK(cudaMemcpy(hc, cyc, 16, cudaMemcpyDeviceToHost));
                if (hc[1]) bad = 1;
                printf("| %d | %d | %s | %llu | %.2f | %llu |\n", csz, ncl * csz, cn[mode], hc[0], hc[0] / (khz * 1e-3), hc[1]);
            }
        }
        cudaFree(src);
        cudaFree(stop);
    }
    free(h);
    free(ho);
    free(ref);
    cudaFree(W);
    cudaFree(Wc);
    cudaFree(out);
    cudaFree(cyc);
    return bad;
}
