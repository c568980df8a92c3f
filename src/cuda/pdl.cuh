// pdl.cuh: programmatic dependent launch (sm_90) for the prefill's chain of short kernels.
//
// A kernel launched with pdl_launch may start while the kernel before it in the stream still runs:
// whatever it does before pdl_wait() must not read that kernel's outputs nor write anything another
// kernel reads (weights only: sgemm_k loads its weight slice there). pdl_wait() returns once the
// previous kernel has finished and its writes are visible; pdl_trigger() after it lets the next
// kernel start, so at most one kernel waits ahead of the running one. Before sm_90, or when the
// launch had no PDL attribute, both are no-ops and the launch is an ordinary stream-ordered one.
#ifndef MQ_PDL_CUH
#define MQ_PDL_CUH
#include <cuda_runtime.h>

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, s>>>(args...), with programmatic stream serialization when pdl != 0
// (the caller enables it only on sm_90+ devices). Works under stream capture (graph edges become
// programmatic). Returns the launch's error.
template <typename... KA, typename... AA>
cudaError_t pdl_launch(int pdl, void (*kernel)(KA...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                       AA... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, static_cast<KA>(args)...);
}

#endif
