// prefill_rows.cuh: the prefill's row-wise kernels (residual + RMSNorm, q/k prep with RoPE) and their helpers.
// Part of the prefill's one translation unit: prefill.cu includes it inside its anonymous
// namespace, before the attention kernels (prefill_attention.cuh), which use warp_sum, st_split and
// prep_row.
#ifndef MQ_PREFILL_ROWS_CUH
#define MQ_PREFILL_ROWS_CUH

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Residual update fused with the next RMSNorm. Row r (x + r*H): x = embedding row ids[r] (ids not
// nullptr), or x + the sum of nd slabs d[r + k*ds] (d not nullptr: the GEMM's partial products, hi and
// lo halves or K slabs), written back; then
// out[r] = bf16(w * x * rsqrt(mean(x^2) + eps)) and lo[r] its rounding remainder (lo nullptr: not
// split), as the decode kernel's load_norm; f16: out[r] as f16 (out's hi rows), no lo. Row `row` by the whole block (256 threads); a block may
// run several rows one after another (the closing __syncthreads guards red). ldo: out's and lo's row
// stride (0: H; 2H with lo = out + H for a K-concatenated GEMM's [hi | lo] rows, mm's kcat).
__device__ __forceinline__ void resid_norm_row(int row, const int32_t *ids, const __nv_bfloat16 *__restrict__ E, int V,
                                               float *__restrict__ x, const float *__restrict__ d, int nd, size_t ds,
                                               const float *__restrict__ w, __nv_bfloat16 *__restrict__ out,
                                               __nv_bfloat16 *__restrict__ lo, int H, float eps, bool f16 = false,
                                               size_t ldo = 0) {
    __shared__ float red[8];
    const size_t ro = (size_t)row * H;
    float *xr = x + ro;
    const __nv_bfloat16 *e = nullptr;
    if (ids) {
        int id = ids[row];
        if (id < 0 || id >= V) id = 0;  // checked on the host; never read out of bounds
        e = E + (size_t)id * H;
    }
    float ss = 0.0f;
    // four elements a thread per trip (float4 / 4 x 16-bit accesses) where every row start is 16-byte
    // aligned; the scalar loops below otherwise
    const bool vec = (H & 3) == 0 && (ds & 3) == 0 &&
                     (((uintptr_t)x | (uintptr_t)w | (uintptr_t)out | (uintptr_t)d | (uintptr_t)lo) & 15) == 0 &&
                     ((uintptr_t)e & 7) == 0;
    if (vec) {
        for (int i = threadIdx.x * 4; i < H; i += blockDim.x * 4) {
            float4 v;
            if (e) {
                const uint2 raw = *reinterpret_cast<const uint2 *>(e + i);
                const __nv_bfloat162 a = *reinterpret_cast<const __nv_bfloat162 *>(&raw.x),
                                     b = *reinterpret_cast<const __nv_bfloat162 *>(&raw.y);
                v = make_float4(__low2float(a), __high2float(a), __low2float(b), __high2float(b));
            } else {
                v = *reinterpret_cast<const float4 *>(xr + i);
                if (d)
#pragma unroll 4
                    for (int k = 0; k < nd; k++) {
                        const float4 u = __ldcg(reinterpret_cast<const float4 *>(d + ro + k * ds + i));
                        v.x += u.x, v.y += u.y, v.z += u.z, v.w += u.w;
                    }
            }
            if (e || d) *reinterpret_cast<float4 *>(xr + i) = v;  // read back below by this same thread
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    } else {
        for (int i = threadIdx.x; i < H; i += blockDim.x) {
            float v;
            if (e) {
                v = __bfloat162float(e[i]);
            } else {
                v = xr[i];
                if (d)  // __ldcg: the previous grid's output (not the read-only path __restrict__ would allow)
#pragma unroll 4
                    for (int k = 0; k < nd; k++) v += __ldcg(d + ro + k * ds + i);
            }
            if (e || d) xr[i] = v;  // read back below by this same thread
            ss += v * v;
        }
    }
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
    __syncthreads();
    float sum = 0.0f;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) sum += red[i];
    const float r = 1.0f / sqrtf(sum / (float)H + eps);
    const size_t oo = ldo ? (size_t)row * ldo : ro;
    __nv_bfloat16 *o = out + oo, *ol = lo ? lo + oo : nullptr;
    if (vec) {
        for (int i = threadIdx.x * 4; i < H; i += blockDim.x * 4) {
            const float4 a = *reinterpret_cast<const float4 *>(xr + i), g = *reinterpret_cast<const float4 *>(w + i);
            const float v0 = g.x * (a.x * r), v1 = g.y * (a.y * r), v2 = g.z * (a.z * r), v3 = g.w * (a.w * r);
            if (f16) {
                const __half2 p = __floats2half2_rn(v0, v1), q = __floats2half2_rn(v2, v3);
                *reinterpret_cast<uint2 *>(o + i) =
                    make_uint2(*reinterpret_cast<const uint32_t *>(&p), *reinterpret_cast<const uint32_t *>(&q));
                continue;
            }
            const __nv_bfloat162 p = __floats2bfloat162_rn(v0, v1), q = __floats2bfloat162_rn(v2, v3);
            *reinterpret_cast<uint2 *>(o + i) =
                make_uint2(*reinterpret_cast<const uint32_t *>(&p), *reinterpret_cast<const uint32_t *>(&q));
            if (ol) {
                const __nv_bfloat162 pl = __floats2bfloat162_rn(v0 - __low2float(p), v1 - __high2float(p)),
                                     ql = __floats2bfloat162_rn(v2 - __low2float(q), v3 - __high2float(q));
                *reinterpret_cast<uint2 *>(ol + i) =
                    make_uint2(*reinterpret_cast<const uint32_t *>(&pl), *reinterpret_cast<const uint32_t *>(&ql));
            }
        }
        __syncthreads();
        return;
    }
    if (f16) {  // one f16 row for an f16 GEMM (normed: |v| <= |w| sqrt(H), far inside f16's range)
        for (int i = threadIdx.x; i < H; i += blockDim.x) reinterpret_cast<__half *>(o)[i] = __float2half_rn(w[i] * (xr[i] * r));
        __syncthreads();
        return;
    }
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        const float v = w[i] * (xr[i] * r);
        const __nv_bfloat16 hv = __float2bfloat16_rn(v);
        o[i] = hv;
        if (ol) ol[i] = __float2bfloat16_rn(v - __bfloat162float(hv));
    }
    __syncthreads();
}

// resid_norm_row for row blockIdx.x. grid (rows), block 256.
__global__ void resid_norm_k(const int32_t *ids, const __nv_bfloat16 *__restrict__ E, int V, float *__restrict__ x,
                             const float *__restrict__ d, int nd, size_t ds, const float *__restrict__ w,
                             __nv_bfloat16 *__restrict__ out, __nv_bfloat16 *__restrict__ lo, int H, float eps,
                             int f16, size_t ldo) {
    pdl_wait();
    pdl_trigger();
    resid_norm_row(blockIdx.x, ids, E, V, x, d, nd, ds, w, out, lo, H, eps, f16 != 0, ldo);
}

// h[i] = bf16(v), l[i] = bf16(v - h[i]) (l nullptr: hi only; h nullptr: nothing)
__device__ __forceinline__ void st_split(__nv_bfloat16 *h, __nv_bfloat16 *l, size_t i, float v) {
    if (!h) return;
    const __nv_bfloat16 hv = __float2bfloat16_rn(v);
    h[i] = hv;
    if (l) l[i] = __float2bfloat16_rn(v - __bfloat162float(hv));
}

// One slot of qk_prep_k by one warp: slot s of token t (q|k|v row `row`, slabs ss apart) at position
// p; tmp: the warp's hd floats of shared memory. qf (not nullptr): q as f32 rows (T, q_dim) there
// instead of qb / ql. With an f16 cache (KT = __half) q goes to qb as f16 (ql unused).
template <typename KT>
__device__ __forceinline__ void prep_slot(const float *row, int ns, size_t ss, int s, int t, int p, const float *qn,
                                          const float *kn, const float *rope, float *tmp, __nv_bfloat16 *qb,
                                          __nv_bfloat16 *ql, float *qf, KT *kc, KT *vc, __nv_bfloat16 *kh,
                                          __nv_bfloat16 *kl, __nv_bfloat16 *vh, __nv_bfloat16 *vl, int nh, int nkv,
                                          int hd, int maxc, float eps) {
    const int lane = threadIdx.x & 31, half = hd >> 1, qd = nh * hd, kvd = nkv * hd;
    const float *src = row + (size_t)s * hd;
    const bool isq = s < nh, isk = !isq && s < nh + nkv;
    float sq = 0.0f;
    for (int d = lane; d < hd; d += 32) {  // __ldcg: the prefill megakernel rewrites qkv every layer
        float v = __ldcg(src + d);
        for (int k = 1; k < ns; k++) v += __ldcg(src + k * ss + d);
        tmp[d] = v;
        sq += v * v;
    }
    sq = warp_sum(sq);
    const float r = 1.0f / sqrtf(sq / (float)hd + eps);
    __syncwarp();
    if (isq || isk) {
        const float *nw = isq ? qn : kn;
        for (int d = lane; d < hd; d += 32) tmp[d] = nw[d] * (tmp[d] * r);
    }
    __syncwarp();
    if (isq) {
        const size_t qo = (size_t)t * qd + (size_t)s * hd;
        for (int i = lane; i < half; i += 32) {
            const float2 cs = reinterpret_cast<const float2 *>(rope)[(size_t)p * half + i];
            const float a = tmp[i], b = tmp[i + half];
            const float o0 = a * cs.x - b * cs.y, o1 = b * cs.x + a * cs.y;
            if (qf) {
                qf[qo + i] = o0;
                qf[qo + i + half] = o1;
                continue;
            }
            if (std::is_same<KT, __half>::value) {  // an f16 cache: q as f16 for flash2_k's f16 products
                __half *qh = reinterpret_cast<__half *>(qb);
                qh[qo + i] = __float2half_rn(o0);
                qh[qo + i + half] = __float2half_rn(o1);
                continue;
            }
            const __nv_bfloat16 h0 = __float2bfloat16_rn(o0), h1 = __float2bfloat16_rn(o1);
            qb[qo + i] = h0;
            qb[qo + i + half] = h1;
            if (ql) {
                ql[qo + i] = __float2bfloat16_rn(o0 - __bfloat162float(h0));
                ql[qo + i + half] = __float2bfloat16_rn(o1 - __bfloat162float(h1));
            }
        }
    } else if (isk) {
        // cache row p of kv head s - nh (head-major); the bf16 scratch row p (position-major)
        const size_t co = ((size_t)(s - nh) * maxc + p) * hd, ko = (size_t)p * kvd + (size_t)(s - nh) * hd;
        for (int i = lane; i < half; i += 32) {
            const float2 cs = reinterpret_cast<const float2 *>(rope)[(size_t)p * half + i];
            const float a = tmp[i], b = tmp[i + half];
            const float o0 = a * cs.x - b * cs.y, o1 = b * cs.x + a * cs.y;
            st1(kc + co + i, o0);
            st1(kc + co + i + half, o1);
            st_split(kh, kl, ko + i, o0);
            st_split(kh, kl, ko + i + half, o1);
        }
    } else {
        const size_t co = ((size_t)(s - nh - nkv) * maxc + p) * hd, vo = (size_t)p * kvd + (size_t)(s - nh - nkv) * hd;
        for (int d = lane; d < hd; d += 32) {
            st1(vc + co + d, tmp[d]);
            st_split(vh, vl, vo + d, tmp[d]);
        }
    }
    __syncwarp();
}

// qkv: ns slabs of (T, q|k|v) partial products ss floats apart, summed (hi and lo GEMM halves, or
// K slabs). One warp per (token t, slot): slots [0, nh) are q heads, [nh, nh+nkv) k heads, then v heads
// (the q|k|v row of token t is contiguous, so slot s starts at s*hd). q/k: RMSNorm (q_norm /
// k_norm) then RoPE at position pos+t (the decode kernel's table); q -> qb (bf16), k/v -> cache
// row pos+t of layer l (kc/vc: layer l's (n_kv, maxc, hd), head-major; pos = *posp, device memory so
// a captured graph can replay it); kh/vh (and kl/vl), when not nullptr, receive the same K/V rows as
// bf16 hi (lo), position-major (rows, kv_dim). grid (T, slot groups of 8), block 32 * 8.
template <typename KT>
__global__ void qk_prep_k(const float *qkv, int ns, size_t ss, const float *qn, const float *kn, const float *rope, __nv_bfloat16 *qb,
                          __nv_bfloat16 *ql, KT *kc, KT *vc, __nv_bfloat16 *kh, __nv_bfloat16 *kl, __nv_bfloat16 *vh,
                          __nv_bfloat16 *vl, int nh, int nkv, int hd, int maxc, const int *posp, float eps) {
    extern __shared__ float pbuf[];  // (8, hd)
    const int t = blockIdx.x, warp = threadIdx.x >> 5;
    const int nslot = nh + 2 * nkv, qd = nh * hd, kvd = nkv * hd;
    const float *row = qkv + (size_t)t * (qd + 2 * kvd);
    pdl_wait();
    pdl_trigger();
    const int p = *posp + t;
    for (int s = blockIdx.y * 8 + warp; s < nslot; s += 8 * gridDim.y)
        prep_slot<KT>(row, ns, ss, s, t, p, qn, kn, rope, pbuf + warp * hd, qb, ql, nullptr, kc, vc, kh, kl, vh, vl, nh,
                      nkv, hd, maxc, eps);
}

// E consecutive floats through L2 (p aligned to 16 bytes when E is a multiple of 4, to 8 when E is
// 2): one vector load per 4 floats. __ldcg keeps no L1 line, so E scalar loads with the lanes 4E
// bytes apart fetched each 32-byte sector E times.
template <int E>
__device__ __forceinline__ void ldcg_e(const float *p, float (&v)[E]) {
    if constexpr (E % 4 == 0) {
#pragma unroll
        for (int j = 0; j < E; j += 4) {
            const float4 a = __ldcg(reinterpret_cast<const float4 *>(p + j));
            v[j] = a.x, v[j + 1] = a.y, v[j + 2] = a.z, v[j + 3] = a.w;
        }
    } else if constexpr (E == 2) {
        const float2 a = __ldcg(reinterpret_cast<const float2 *>(p));
        v[0] = a.x, v[1] = a.y;
    } else {
#pragma unroll
        for (int j = 0; j < E; j++) v[j] = __ldcg(p + j);
    }
}

// E bf16 values at p (8-byte aligned where E >= 4, as ldcg_e's rows) as floats, through L2 (__ldcg)
template <int E>
__device__ __forceinline__ void ldcg_bf_e(const __nv_bfloat16 *p, float (&v)[E]) {
    if constexpr (E % 4 == 0) {
#pragma unroll
        for (int j = 0; j < E; j += 4) {
            const uint2 a = __ldcg(reinterpret_cast<const uint2 *>(p + j));
            const __nv_bfloat162 x = *reinterpret_cast<const __nv_bfloat162 *>(&a.x),
                                 y = *reinterpret_cast<const __nv_bfloat162 *>(&a.y);
            v[j] = __low2float(x), v[j + 1] = __high2float(x), v[j + 2] = __low2float(y), v[j + 3] = __high2float(y);
        }
    } else {
#pragma unroll
        for (int j = 0; j < E; j++) v[j] = __bfloat162float(__ldcg(p + j));
    }
}

// E elements (v: a local array, 16-byte aligned) to p in stores of up to 16 bytes (p aligned alike)
template <int E, typename U>
__device__ __forceinline__ void st_e(U *p, const U (&v)[E]) {
    constexpr int B = E * (int)sizeof(U);
    if constexpr (B % 16 == 0) {
#pragma unroll
        for (int i = 0; i < B / 16; i++) reinterpret_cast<uint4 *>(p)[i] = reinterpret_cast<const uint4 *>(v)[i];
    } else if constexpr (B == 8) {
        *reinterpret_cast<uint2 *>(p) = *reinterpret_cast<const uint2 *>(v);
    } else if constexpr (B == 4) {
        *reinterpret_cast<uint32_t *>(p) = *reinterpret_cast<const uint32_t *>(v);
    } else {
#pragma unroll
        for (int j = 0; j < E; j++) p[j] = v[j];
    }
}

// E values v to hi + o as U (bf16 or f16) and, lo not nullptr, their rounding remainders to lo + o:
// one vector store each (st_e; aligned as st_e needs)
template <int E, typename U>
__device__ __forceinline__ void st_split_e(U *hi, U *lo, size_t o, const float (&v)[E]) {
    alignas(16) U h[E], l[E];
#pragma unroll
    for (int j = 0; j < E; j++) {
        if constexpr (std::is_same<U, __half>::value) {
            h[j] = __float2half_rn(v[j]);
            l[j] = __float2half_rn(v[j] - __half2float(h[j]));
        } else {
            h[j] = __float2bfloat16_rn(v[j]);
            l[j] = __float2bfloat16_rn(v[j] - __bfloat162float(h[j]));
        }
    }
    st_e<E>(hi + o, h);
    if (lo) st_e<E>(lo + o, l);
}

// A q or k row's RMSNorm (q_norm / k_norm weights w) and RoPE (cos / sin c, sn), the lane's E
// elements v with their sum of squares sq over the lane's part; the RoPE partner (d +- HD/2) sits in
// lane l ^ 16.
template <int HD, int E>
__device__ __forceinline__ void norm_rope(float (&v)[E], float sq, const float (&w)[E], const float (&c)[E],
                                          const float (&sn)[E], float eps) {
    sq = warp_sum(sq);
    const float r = 1.0f / sqrtf(sq / (float)HD + eps);
    const bool lo = (threadIdx.x & 31) < 16;
#pragma unroll
    for (int j = 0; j < E; j++) {
        const float y = w[j] * (v[j] * r);
        const float pr = __shfl_xor_sync(0xffffffffu, y, 16);
        v[j] = lo ? y * c[j] - pr * sn[j] : y * c[j] + pr * sn[j];
    }
}

// One (token, slot) row of the q|k|v projection for the q/k prep, by one warp, lane l owning dims
// [lE, lE + E): src is the row's first slab at the lane's dims, ns slabs ss floats apart, summed;
// then, for a q or k slot (norm), RMSNorm with weights nw and RoPE with the position's cos/sin
// pairs cs (HD/2 of them; the partner dim sits in lane l ^ 16). Every load (slabs 0-3, weights,
// cos/sin) is issued before any is used: one memory latency per row (run 62). l16 (not nullptr, then
// ns is 1): the lane's E elements of the lo half's bf16 product, added as slab 1 (mm's lo16).
template <int HD>
__device__ __forceinline__ void prep_row(const float *src, int ns, size_t ss, bool norm, const float *nw,
                                         const float2 *cs, float eps, float (&v)[HD / 32],
                                         const __nv_bfloat16 *l16 = nullptr) {
    constexpr int E = HD / 32, half = HD / 2;
    const int d0 = (threadIdx.x & 31) * E;
    float sl[3][E], w[E], c[E], sn[E];
    // __ldcg: the previous kernel's output (and the megakernel rewrites it); vector loads (ldcg_e)
    ldcg_e<E>(src, v);
    if (l16) {
        ldcg_bf_e<E>(l16, sl[0]);
        ns = 2;
    }
#pragma unroll
    for (int k = 1; k < 4; k++)
        if (k < ns && !(l16 && k == 1)) ldcg_e<E>(src + k * ss, sl[k - 1]);
#pragma unroll
    for (int j = 0; j < E; j++) {
        w[j] = norm ? nw[d0 + j] : 1.0f;
        const float2 x = norm ? cs[(d0 + j) % half] : make_float2(1.0f, 0.0f);
        c[j] = x.x, sn[j] = x.y;
    }
    float sq = 0.0f;
#pragma unroll
    for (int j = 0; j < E; j++) {
        float a = v[j];
#pragma unroll
        for (int k = 1; k < 4; k++)
            if (k < ns) a += sl[k - 1][j];
        for (int k = 4; k < ns; k++) a += __ldcg(src + k * ss + j);
        v[j] = a;
        sq += a * a;
    }
    if (norm) norm_rope<HD>(v, sq, w, c, sn, eps);
}

// A prepared q|k|v row's stores (token t at absolute position p, slot s: q head, k head or v head):
// q as split hi / lo (f16 for the f16 attention paths: the f16 cache or m16 bit 1), k / v into the
// cache (head-major row p) and the attention's scratch (position-major row p; f16 where m16 says,
// else split bf16 where kh is given). Every store is one vector store per lane (st_e): E elements.
template <int HD, typename KT>
__device__ __forceinline__ void prep_store(const float (&v)[HD / 32], int t, int p, int s, __nv_bfloat16 *qb,
                                           __nv_bfloat16 *ql, KT *kc, KT *vc, __nv_bfloat16 *kh, __nv_bfloat16 *kl,
                                           __nv_bfloat16 *vh, __nv_bfloat16 *vl, int nh, int nkv, int maxc, int m16) {
    constexpr int E = HD / 32;
    const int d0 = (threadIdx.x & 31) * E, qd = nh * HD, kvd = nkv * HD;
    const bool isq = s < nh, isk = !isq && s < nh + nkv;
    if (isq) {
        const size_t qo = (size_t)t * qd + (size_t)s * HD + d0;
        if (std::is_same<KT, __half>::value || (m16 & 2))  // q as f16 for flash2_k's f16 products
            st_split_e<E>(reinterpret_cast<__half *>(qb), reinterpret_cast<__half *>(ql), qo, v);
        else
            st_split_e<E>(qb, ql, qo, v);
    } else {
        const int sh = isk ? s - nh : s - nh - nkv;
        const size_t co = ((size_t)sh * maxc + p) * HD + d0, ko = (size_t)p * kvd + (size_t)sh * HD + d0;
        alignas(16) KT cv[E];
#pragma unroll
        for (int j = 0; j < E; j++) st1(&cv[j], v[j]);
        st_e<E>((isk ? kc : vc) + co, cv);
        __nv_bfloat16 *xh = isk ? kh : vh, *xl = isk ? kl : vl;
        if (m16 & (isk ? 2 : 1)) {  // the scratch row as f16 (MQ_PREFILL_PV16)
            alignas(16) __half h[E];
#pragma unroll
            for (int j = 0; j < E; j++) h[j] = __float2half_rn(v[j]);
            st_e<E>(reinterpret_cast<__half *>(xh) + ko, h);
        } else if (xh) {
            st_split_e<E>(xh, xl, ko, v);
        }
    }
}

// qk_prep_k for head_dim HD = 32 E (32, 64, 128): lane l owns dims [l E, l E + E) of the warp's
// slot, so a RoPE partner (d +- HD/2) sits in lane l ^ 16, and every load of a slot (its first four
// slabs, the norm weights, the cos/sin entries) is issued before any is used: one memory latency per
// slot instead of one per loop trip and slab (qk_prep_k: 56.6 us per layer for a 2,048-token chunk,
// run 61). Same arguments, outputs and grid as qk_prep_k, no shared memory.
// q16 (not nullptr, then ns is 1): the lo half's product as bf16 (T, q|k|v) (mm's lo16).
template <int HD, typename KT>
__global__ void qk_prep_v_k(const float *qkv, int ns, size_t ss, const __nv_bfloat16 *q16, const float *qn,
                            const float *kn, const float *rope,
                            __nv_bfloat16 *qb, __nv_bfloat16 *ql, KT *kc, KT *vc, __nv_bfloat16 *kh,
                            __nv_bfloat16 *kl, __nv_bfloat16 *vh, __nv_bfloat16 *vl, int nh, int nkv, int maxc,
                            const int *posp, float eps, int m16) {
    constexpr int E = HD / 32, half = HD / 2;
    const int t = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int nslot = nh + 2 * nkv, qd = nh * HD, kvd = nkv * HD;
    pdl_wait();
    pdl_trigger();
    const int p = *posp + t, d0 = lane * E;
    for (int s = blockIdx.y * 8 + warp; s < nslot; s += 8 * gridDim.y) {
        const bool isq = s < nh, isk = !isq && s < nh + nkv;
        float v[E];
        const size_t ro = (size_t)t * (qd + 2 * kvd) + (size_t)s * HD + d0;
        prep_row<HD>(qkv + ro, ns, ss, isq || isk, isq ? qn : kn,
                     reinterpret_cast<const float2 *>(rope) + (size_t)p * half, eps, v,  // (RoPE at position p)
                     q16 ? q16 + ro : nullptr);
        prep_store<HD, KT>(v, t, p, s, qb, ql, kc, vc, kh, kl, vh, vl, nh, nkv, maxc, m16);
    }
}

// qk_prep_v_k with SB slots per warp (8 SB per block): the loads of all SB rows (their first slab,
// and the second or the lo half's bf16 product where there is one; ns <= 2) are issued before any
// is used, and the position's cos / sin and both norms' weights are loaded once per warp, so a warp
// has SB rows in flight where qk_prep_v_k has one (2.2 TB/s at 2,048 tokens, run 145). Same
// arguments and outputs; grid (T, ceil(nslot / (8 SB))).
template <int HD, int SB, typename KT>
__global__ void qk_prep_b_k(const float *qkv, int ns, size_t ss, const __nv_bfloat16 *q16, const float *qn,
                            const float *kn, const float *rope, __nv_bfloat16 *qb, __nv_bfloat16 *ql, KT *kc, KT *vc,
                            __nv_bfloat16 *kh, __nv_bfloat16 *kl, __nv_bfloat16 *vh, __nv_bfloat16 *vl, int nh,
                            int nkv, int maxc, const int *posp, float eps, int m16) {
    constexpr int E = HD / 32, half = HD / 2;
    const int t = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int nslot = nh + 2 * nkv, qd = nh * HD, kvd = nkv * HD;
    pdl_wait();
    pdl_trigger();
    const int p = *posp + t, d0 = lane * E;
    const float2 *cs = reinterpret_cast<const float2 *>(rope) + (size_t)p * half;
    float c[E], sn[E], wq[E], wk[E];
#pragma unroll
    for (int j = 0; j < E; j++) {
        const float2 x = cs[(d0 + j) % half];
        c[j] = x.x, sn[j] = x.y;
        wq[j] = qn[d0 + j], wk[j] = kn[d0 + j];
    }
    const bool two = q16 || ns > 1;
    for (int s0 = blockIdx.y * 8 * SB + warp; s0 < nslot; s0 += 8 * SB * gridDim.y) {
        float v[SB][E], u[SB][E];
#pragma unroll
        for (int i = 0; i < SB; i++) {
            const int s = s0 + 8 * i;
            if (s >= nslot) break;
            const size_t ro = (size_t)t * (qd + 2 * kvd) + (size_t)s * HD + d0;
            ldcg_e<E>(qkv + ro, v[i]);
            if (q16)
                ldcg_bf_e<E>(q16 + ro, u[i]);
            else if (ns > 1)
                ldcg_e<E>(qkv + ro + ss, u[i]);
        }
#pragma unroll
        for (int i = 0; i < SB; i++) {
            const int s = s0 + 8 * i;
            if (s >= nslot) break;
            const bool isq = s < nh, isk = !isq && s < nh + nkv;
            float sq = 0.0f;
#pragma unroll
            for (int j = 0; j < E; j++) {  // (prep_row's sum and order)
                if (two) v[i][j] += u[i][j];
                sq += v[i][j] * v[i][j];
            }
            if (isq || isk) norm_rope<HD>(v[i], sq, isq ? wq : wk, c, sn, eps);
            prep_store<HD, KT>(v[i], t, p, s, qb, ql, kc, vc, kh, kl, vh, vl, nh, nkv, maxc, m16);
        }
    }
}

#endif
