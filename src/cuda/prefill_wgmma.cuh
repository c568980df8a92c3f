// prefill_wgmma.cuh: flash3_k, the prefill's causal attention on Hopper's warpgroup MMA (wgmma, sm_90a).
// The level-2 numerics of flash2_k (MQ_PREFILL_PV16=2: scores as f16 q hi + lo against f16 K, two
// products; P V one f16 product) with the products issued by the whole warpgroup: per 64-key tile,
// 16 wgmma.m64n64k16 for the scores and 4 wgmma.m64n128k16 for P V, against flash2_k's 192 mma.sync
// and 64 ldmatrix per warp (ncu, run 124: flash2_k is issue / latency bound, tensor pipe 39%).
// K and V tiles sit in shared memory in the 128-byte swizzled layout, so the tensor cores read them
// straight by descriptor (K as K-major B, V as MN-major B); layouts without swizzle were ~2x slower
// (their operand reads stalled the warps: runs 131-135).
// Part of the prefill's one translation unit (prefill.cu includes it inside its anonymous namespace,
// after prefill_attention.cuh, whose FlashRows, softmax_tile2, p_frags_h, store_o and cp16 it uses).
// Compiled to wgmma only in an sm_90a pass (__CUDA_ARCH_FEAT_SM90_ALL); elsewhere the kernel traps,
// and the host launches it only where wgmma_probe_k said the running image has it.
#ifndef MQ_PREFILL_WGMMA_CUH
#define MQ_PREFILL_WGMMA_CUH

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MQ_WGMMA 1
#endif

// *out = 1 when the image the driver runs for this device was compiled with wgmma (sm_90a)
__global__ void wgmma_probe_k(int *out) {
#ifdef MQ_WGMMA
    *out = 1;
#else
    *out = 0;
#endif
}

#ifdef MQ_WGMMA
// A shared-memory matrix descriptor, no swizzle: lbo / sbo the byte distances between core matrices
// adjacent along K / along M or N.
// sw128: the 128-byte swizzle (8 rows of 128 bytes, 16-byte chunk c of row r at c ^ r; atoms
// 1024-byte aligned).
__device__ __forceinline__ uint64_t wg_desc(const void *smem, uint32_t lbo, uint32_t sbo, bool sw128 = false) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    return (uint64_t)((a >> 4) & 0x3FFF) | (uint64_t)((lbo >> 4) & 0x3FFF) << 16 |
           (uint64_t)((sbo >> 4) & 0x3FFF) << 32 | (uint64_t)(sw128 ? 1 : 0) << 62;
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// p advanced to the next 1,024-byte boundary of the shared-memory window (where the hardware's
// 128-byte swizzle, computed from shared-memory address bits, starts its 8-row atoms)
__device__ __forceinline__ __nv_bfloat16 *wg_align1k(__nv_bfloat16 *p) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    return p + ((1024u - (a & 1023u)) & 1023u) / sizeof(__nv_bfloat16);
}
// cp.async wrote the tiles through the generic proxy; wgmma reads them through the async proxy
__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Ties accumulators to this point of the program (after wg_wait): the compiler must not read them
// earlier, since it does not know the wgmma that writes them is asynchronous.
template <int N>
__device__ __forceinline__ void wg_hold(float (&d)[N][4]) {
#pragma unroll
    for (int j = 0; j < N; j++)
        asm volatile("" : "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])::"memory");
}

// The asm operands of a wgmma's accumulators d[j][e] (n8 blocks j .. j + 7), in register order.
#define WG_ACC4(j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define WG_ACC32(j) WG_ACC4(j), WG_ACC4(j + 1), WG_ACC4(j + 2), WG_ACC4(j + 3), WG_ACC4(j + 4), WG_ACC4(j + 5), \
                    WG_ACC4(j + 6), WG_ACC4(j + 7)

// D (64 x 64, f32: the warpgroup's accumulators in the mma C layout, warp w rows 16w.., d[j] the n8
// block j) += A (64 x 16 f16, registers in the mma A layout) B (16 x 64 f16 in shared memory, by desc;
// TB 1: B is MN-major). Asynchronous: D is only final after wg_wait.
template <int TB>
__device__ __forceinline__ void wg_m64n64(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "{%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
        : WG_ACC32(0)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1), "n"(TB));
}

// D (64 x 128, f32: the warpgroup's accumulators in the mma C layout, warp w rows 16w.., d[j] the n8
// block j) += A (64 x 16 f16, registers in the mma A layout) B (16 x 128 f16 in shared memory, by desc;
// TB 1: B is MN-major). Asynchronous: D is only final after wg_wait.
template <int TB>
__device__ __forceinline__ void wg_m64n128(float (&d)[16][4], const uint32_t (&a)[4], uint64_t desc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "{%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
        : WG_ACC32(0), WG_ACC32(8)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1), "n"(TB));
}

#endif  // MQ_WGMMA

// Causal flash attention as flash2_k's level 2 on warpgroup MMA, HD = 128: G warpgroups per block, one
// per q head of the same kv head over the same 64 query rows, sharing each K / V tile (BKT keys, NST
// cp.async stages of [K, V]). The grid: G = 1, flash2_k's (blockIdx.y the q head, blockIdx.x the
// query tile, last tiles first); G = 2, (kv head, query tile, last first), nh = 2 nkv. The kernels
// below pick G, BKT and NST.
// The tiles are in the 128-byte swizzled layout (see wsm below): the layouts without swizzle that
// runs 131-134 measured (dense or padded 8 x 16-byte core matrices) made the kernel ~2x slower, its
// warps waiting on the tensor cores' operand reads. Scores: B = K^T, K-major (m64n64 products at 64
// keys, m64n128 at 128); P V: B = V, MN-major. swap (MQ_PREFILL_WGSWAP, a layout check that must give
// wrong logits): bit 1 exchanges V's two descriptor offsets. Every warp computes every tile of its
// block (wgmma is warpgroup-wide), so the diagonal tile's masked keys cost products that flash2_k's
// warps skip.
template <int HD, int BKT, int NST, bool QLO, int G>
__device__ __forceinline__ void flash3_body(const __nv_bfloat16 *qb, const __nv_bfloat16 *ql,
                                            const __nv_bfloat16 *Kh, const __nv_bfloat16 *Vh, int ldkv, size_t hs,
                                            __nv_bfloat16 *att, __nv_bfloat16 *atl, int T, const int *posp, int nh,
                                            int nkv, int of16, int swap) {
#ifdef MQ_WGMMA
    static_assert(HD == 128, "flash3_k: head_dim 128 only (P V is one m64n128 product per 16 keys)");
    static_assert(BKT == 64 || BKT == 128, "flash3_k: 64- or 128-key tiles");
    constexpr int NG = HD / 8;       // 8-dim groups (16-byte chunks) per key row
    constexpr int TILE = BKT * HD;   // elements per K or V tile
    constexpr int HALF = BKT * 64;   // elements per 64-dim half of a tile
    extern __shared__ __align__(128) __nv_bfloat16 wsm0[];  // [NST stages][K, V][TILE] + 1 KB
    // K and V tiles as two 64-dim halves, each BKT keys x 128 bytes, key k's chunk c (dims 8 c..) at
    // half (c / 8) * HALF + k * 64 + ((c % 8) ^ (k % 8)) * 8 elements; the atoms (8 keys, 1 KB) need
    // 1024-byte alignment
    __nv_bfloat16 *wsm = wg_align1k(wsm0);
    const int wgi = G > 1 ? threadIdx.x >> 7 : 0, warp = G > 1 ? (threadIdx.x >> 5) & 3 : threadIdx.x >> 5,
              lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    uint32_t qa[HD / 16][4], qal[QLO ? HD / 16 : 1][4];
    float o[HD / 8][4], m0, m1, l0, l1;
    const int hb = G > 1 ? (int)blockIdx.x * 2 + wgi : (int)blockIdx.y;
    const int q0 = G > 1 ? (int)(gridDim.y - 1 - blockIdx.y) * BQ : (int)(gridDim.x - 1 - blockIdx.x) * BQ;
    const FlashRows<HD, QLO, QLO ? HD / 16 : 1> R(hb, q0, qb, ql, T, posp, nh, G > 1 ? nh / 2 : nkv, warp, g, tq, qa, qal,
                                                  o, m0, m1, l0, l1);
    const int h = R.h, kvh = R.kvh, qd = R.qd, pos = R.pos, kend = R.kend, wr = R.wr;
    const int ar0 = R.ar0, ar1 = R.ar1;
    const float sc = R.sc;

    // tile kt -> stage st; keys past kend zero-filled. Thread t's chunks are dim group t % 16 of keys
    // t / 16 + 8 G i (i < BKT / (8 G)): a warp's loads are two whole key rows (whole sectors), and its
    // 32 chunks fall on every shared-memory bank 4 times (the minimum for 512 bytes)
    const int dgt = threadIdx.x % NG, kt0 = threadIdx.x / NG;  // (kt0 < 8 G)
    const __nv_bfloat16 *kg0 = Kh + (size_t)kvh * hs + (size_t)kt0 * ldkv + dgt * 8;
    const __nv_bfloat16 *vg0 = Vh + (size_t)kvh * hs + (size_t)kt0 * ldkv + dgt * 8;
    auto load = [&](int kt, int st) {
        __nv_bfloat16 *base = wsm + st * 2 * TILE;
        const int k0 = kt * BKT;
#pragma unroll
        for (int i = 0; i < BKT / (8 * G); i++) {
            const int key = kt0 + 8 * G * i;
            const bool ok = k0 + key < kend;
            const size_t off = ok ? (size_t)(k0 + 8 * G * i) * ldkv : 0;
            const int so = (dgt >> 3) * HALF + key * 64 + (((dgt & 7) ^ (key & 7)) << 3);  // (elements)
            cp16(base + so, ok ? kg0 + off : Kh, ok);
            cp16(base + TILE + so, ok ? vg0 + off : Vh, ok);
        }
    };

    const int ntile = (kend + BKT - 1) / BKT;
    // NST stages: tiles kt + 1 .. kt + NST - 1 in flight while tile kt computes
#pragma unroll
    for (int i = 0; i < NST - 1; i++) {
        if (i < ntile) load(i, i);
        cp_commit();
    }
    for (int kt = 0; kt < ntile; kt++) {
        if (kt + NST - 1 < ntile) load(kt + NST - 1, (kt + NST - 1) % NST);
        cp_commit();  // (empty near the end: keeps the wait count uniform)
        cp_wait<NST - 1>();
        fence_async_smem();
        __syncthreads();
        const int k0 = kt * BKT;
        const __nv_bfloat16 *Ks = wsm + (kt % NST) * 2 * TILE, *Vs = Ks + TILE;
        float s[BKT / 8][4];
#pragma unroll
        for (int j = 0; j < BKT / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {  // dims 16 kk..: dim groups 2 kk, 2 kk + 1
            // (32 bytes into the dim half's rows, which the hardware swizzles by address; SBO the 8-key
            // groups' 1024 bytes, LBO unused)
            const uint64_t d = wg_desc(Ks + (kk >> 2) * HALF + (kk & 3) * 16, 16, 1024, true);
            if constexpr (BKT == 64) {
                if constexpr (QLO) wg_m64n64<0>(s, qal[kk], d);
                wg_m64n64<0>(s, qa[kk], d);
            } else {
                if constexpr (QLO) wg_m64n128<0>(s, qal[kk], d);
                wg_m64n128<0>(s, qa[kk], d);
            }
        }
        wg_commit();
        wg_wait<0>();
        wg_hold(s);
        if (k0 + BKT - 1 > pos + wr || k0 + BKT > kend)
            softmax_tile2<true>(s, o, k0, tq, ar0, ar1, kend, sc, m0, m1, l0, l1);
        else
            softmax_tile2<false>(s, o, k0, tq, ar0, ar1, kend, sc, m0, m1, l0, l1);
        uint32_t pa[BKT / 16][4];
#pragma unroll
        for (int kk = 0; kk < BKT / 16; kk++) p_frags_h(s, kk, pa[kk]);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < BKT / 16; kk++)  // keys 16 kk..: key groups 2 kk, 2 kk + 1
            // (2 key groups of 1024 bytes; LBO the dim halves' distance, SBO the 8-key groups' 1024)
            wg_m64n128<1>(o, pa[kk], wg_desc(Vs + kk * 1024, swap & 2 ? 1024 : HALF * 2, swap & 2 ? HALF * 2 : 1024, true));
        wg_commit();
        wg_wait<0>();
        wg_hold(o);
        __syncthreads();  // this stage is refilled by the next iteration's load
    }
    cp_wait<0>();
    quad_sum2(l0, l1);
    if (of16)
        store_o_h(o, l0, l1, T, qd, h, wr, g, tq, att);
    else
        store_o<true>(o, l0, l1, T, qd, h, wr, g, tq, att, atl);  // (QLO false: f16 q, flash2_k's MT = __half)
#else
    (void)qb, (void)ql, (void)Kh, (void)Vh, (void)ldkv, (void)hs, (void)att, (void)atl, (void)T, (void)posp;
    (void)nh, (void)nkv, (void)of16, (void)swap;
    __trap();  // never launched: the host asks wgmma_probe_k first
#endif
}

// flash3_body with one q head per block (one warpgroup), flash2_k's grid: blockIdx.y the q head,
// blockIdx.x the 64-row query tile, last tiles first; 64-key tiles, 2 blocks per SM.
template <int HD, int NST, bool QLO = true>
__global__ void __launch_bounds__(128, 2) flash3_k(const __nv_bfloat16 *qb, const __nv_bfloat16 *ql,
                                                    const __nv_bfloat16 *Kh, const __nv_bfloat16 *Vh, int ldkv,
                                                    size_t hs, __nv_bfloat16 *att, __nv_bfloat16 *atl, int T,
                                                    const int *posp, int nh, int nkv, int of16, int swap) {
    pdl_wait();
    pdl_trigger();
    flash3_body<HD, 64, NST, QLO, 1>(qb, ql, Kh, Vh, ldkv, hs, att, atl, T, posp, nh, nkv, of16, swap);
}

// flash3g_k: flash3_body with the two q heads of a kv head in one block (GQA, nh = 2 nkv): two
// warpgroups over the same 64 query rows, both reading each K / V tile, which the block loads once
// (flash3_k loads it once per q head: twice the shared-memory fills and L2 -> SM bytes per product).
// BKT keys per tile, NST stages: the host runs 128 keys (the scores as m64n128 products, half the
// per-tile barriers and waits) and 2 stages, one block per SM (2 x 64 KB); run 145 measured 64-key
// tiles (3 stages) 0.4 ms slower at 4,096 tokens and 3 stages no faster. FlashAttention-3's ping-pong
// warpgroups with mbarrier stages and the scores issued beside the previous tile's P V (branch
// wggpp's flash3w_k) were 1.1-1.8 ms slower (run 146). Grid (nkv, query tiles): the block index runs
// kv heads fastest, so the last query tiles (the most keys) of every head are dispatched first. Same
// arguments as flash3_k.
template <int HD, int BKT, int NST, bool QLO = true>
__global__ void __launch_bounds__(256, 1) flash3g_k(const __nv_bfloat16 *qb, const __nv_bfloat16 *ql,
                                                     const __nv_bfloat16 *Kh, const __nv_bfloat16 *Vh, int ldkv,
                                                     size_t hs, __nv_bfloat16 *att, __nv_bfloat16 *atl, int T,
                                                     const int *posp, int nh, int nkv, int of16, int swap) {
    pdl_wait();
    pdl_trigger();
    flash3_body<HD, BKT, NST, QLO, 2>(qb, ql, Kh, Vh, ldkv, hs, att, atl, T, posp, nh, nkv, of16, swap);
}

#endif
