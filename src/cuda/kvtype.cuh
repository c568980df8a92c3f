// kvtype.cuh: the KV cache's element types (f32, bf16, f16) as device helpers shared by decode and prefill.
// The cache holds K (after q/k norm and RoPE) and V rows; its element type is a template parameter
// KT of the kernels that read or write it. Each helper has one overload per type, so a kernel is
// written once: st1 stores a float as KT, ld_f32 loads one element as a float (through L2: the
// cache is written by other blocks of the same launch), kv_round gives the value the cache keeps.
// f16 (MQ_CUDA_KV=f16) has 11 significant bits against bf16's 8 at the same size; its range ends at
// 65504: a value past it is stored as +-inf (cuda_backend.c reports non-finite logits of the rows
// that reach the host; device-side generation does not check).
#ifndef MQ_KVTYPE_CUH
#define MQ_KVTYPE_CUH
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace mqk {

enum { KV_F32 = 0, KV_BF16 = 1, KV_F16 = 2 };  // the host's names for KT (gpu.cu, prefill.cu)
template <typename KT>
__host__ __device__ constexpr int kv_kind() {
    return std::is_same<KT, float>::value ? KV_F32 : std::is_same<KT, __nv_bfloat16>::value ? KV_BF16 : KV_F16;
}

__device__ __forceinline__ void st1(float *p, float v) { *p = v; }
__device__ __forceinline__ void st1(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void st1(__half *p, float v) { *p = __float2half_rn(v); }

__device__ __forceinline__ float ld_f32(const float *p) { return __ldcg(p); }
__device__ __forceinline__ float ld_f32(const __nv_bfloat16 *p) { return __bfloat162float(__ldcg(p)); }
__device__ __forceinline__ float ld_f32(const __half *p) { return __half2float(__ldcg(p)); }

template <typename KT>
__device__ __forceinline__ float kv_round(float v);
template <>
__device__ __forceinline__ float kv_round<float>(float v) { return v; }
template <>
__device__ __forceinline__ float kv_round<__nv_bfloat16>(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }
template <>
__device__ __forceinline__ float kv_round<__half>(float v) { return __half2float(__float2half_rn(v)); }

// 8 packed 16-bit elements (a uint4) -> floats; the pointer argument only picks the type
__device__ __forceinline__ void unpack8(uint4 u, float f[8], const __half *) {
    const __half2 *h = reinterpret_cast<const __half2 *>(&u);
    const float2 a = __half22float2(h[0]), b = __half22float2(h[1]), c = __half22float2(h[2]), d = __half22float2(h[3]);
    f[0] = a.x, f[1] = a.y, f[2] = b.x, f[3] = b.y, f[4] = c.x, f[5] = c.y, f[6] = d.x, f[7] = d.y;
}
__device__ __forceinline__ void unpack8(uint4 u, float f[8], const __nv_bfloat16 *) {
    f[0] = __uint_as_float(u.x << 16), f[1] = __uint_as_float(u.x & 0xffff0000u);
    f[2] = __uint_as_float(u.y << 16), f[3] = __uint_as_float(u.y & 0xffff0000u);
    f[4] = __uint_as_float(u.z << 16), f[5] = __uint_as_float(u.z & 0xffff0000u);
    f[6] = __uint_as_float(u.w << 16), f[7] = __uint_as_float(u.w & 0xffff0000u);
}

}  // namespace mqk

#endif
