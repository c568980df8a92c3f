// sync.cuh: the waits of the persistent kernels: the grid barrier, the mbarrier wait of bulk copies.
// The grid barrier needs every block of the launch co-resident (cooperative launch).
#ifndef MQ_SYNC_CUH
#define MQ_SYNC_CUH
#include <stdio.h>

namespace mqk {

__device__ __forceinline__ unsigned ld_acquire(const unsigned *p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ unsigned long long globaltimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}

// Grid barrier: `bar` only grows within a launch (the host zeroes it before each launch); each
// block adds 1 per barrier and waits until the count reaches (barriers so far) * gridDim.x.
// The fences make every block's global writes before the barrier visible to all after it.
// prof (optional): block 0 stamps the time each barrier opens, prof[i] for barrier i.
__device__ __forceinline__ void grid_sync(unsigned *bar, unsigned &target, unsigned long long *prof) {
    __syncthreads();  // the block's writes happen-before thread 0's release below
    target += gridDim.x;
    if (threadIdx.x == 0) {
        // arrive with release semantics (no round trip), then poll with acquire
        asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(bar), "r"(1u) : "memory");
        // watchdog: a barrier that never opens is a bug; report it and trap instead of hanging
        const long long t0 = clock64();
        // serial-number order: the count wraps past 2^32 in one launch of ~100K steps of a 36-layer
        // model ((4 L + 1) barriers x 264 blocks a step), and stays within 2^31 of the target
        while ((int)(ld_acquire(bar) - target) < 0) {
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

// All threads: wait until the mbarrier mb completes the phase of the given parity.
// mb_wait's watchdog (out of line: the wait loop keeps its registers)
inline __device__ __noinline__ void mb_stuck(unsigned parity) {  // inline: one definition in every translation unit
    printf("megakernel: block %d stuck waiting for a bulk copy (mbarrier parity %u)\n", blockIdx.x, parity);
    __trap();
}

// CLUSTER: acquire at cluster scope, for data that other blocks of the cluster wrote with st.async
// (tools/mvbench.cu's cluster hops); the kernels wait for their own bulk copies (CTA scope).
template <bool CLUSTER = false>
__device__ __forceinline__ void mb_wait(unsigned mb, unsigned parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    unsigned done = 0;
    const long long t0 = clock64();
    do {
        if (CLUSTER)
            asm volatile(
                "{ .reg .pred p; mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                : "=r"(done)
                : "r"(mb), "r"(parity)
                : "memory");
        else
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

}  // namespace mqk

#endif
