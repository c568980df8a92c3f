// prefill_attention.cuh: the prefill's causal attention kernels (flash_k, flash2_k, attn_small_k) and their mma.sync helpers.
// flash_k (MQ_PREFILL_ATTN=1) reads the KV cache per block; flash2_k (default) reads K/V as bf16 hi
// (+ lo) rows that kv_split_k / qk_prep_k wrote, in cp.async double-buffered tiles with ldmatrix
// fragments; attn_small_k does a short first chunk's q/k prep and attention in one f32 kernel.
// Part of the prefill's one translation unit: prefill.cu includes it inside its anonymous
// namespace, after the helpers these kernels use (warp_sum and st_split from prefill_rows.cuh, st1,
// the BQ tile constant).
#ifndef MQ_PREFILL_ATTENTION_CUH
#define MQ_PREFILL_ATTENTION_CUH

__device__ __forceinline__ uint32_t pack_bf2(float a, float b) {  // a in the low half (lower index)
    __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&v);
}

// c += a b, m16n8k16, fp32 accumulate; MT: the inputs' type (bf16, or f16 for an f16 KV cache)
template <typename MT = __nv_bfloat16>
__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    if constexpr (std::is_same<MT, __half>::value)
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// v -> (hi, lo) bf16 with hi + lo = v to ~16 mantissa bits ("split bf16": two tensor-core terms
// give near-fp32 products; the synthetic models' confident logits need it, see docs/perf-notes.md)
__device__ __forceinline__ void split2(float a, float b, uint32_t &hi, uint32_t &lo) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    hi = *reinterpret_cast<const uint32_t *>(&h);
    lo = pack_bf2(a - __low2float(h), b - __high2float(h));
}

constexpr int SMALL_T = 64, NT_SMALL = 1024;
// attn_small_k's attention (and the prefill megakernel's) by warps 0-7 of the block, for query rows
// [q0, q1) (q1 - q0 <= 16) of head h: Qs (16, HD) those q rows, Ks (q1, HD + 4) / Vs (q1, HD) the kv
// head's K and V rows [0, q1), Ps (8 warps, 2 rows, SMALL_T) scratch, all f32 in shared memory;
// output rows of att (+ atl lo) (T, qd) bf16. Warp w: query rows q0 + 2w, q0 + 2w + 1.
template <int HD>
__device__ __forceinline__ void small_attend(const float *Qs, const float *Ks, const float *Vs, float *Ps, int h, int q0,
                                             int q1, int qd, __nv_bfloat16 *att, __nv_bfloat16 *atl) {
    constexpr int KS = HD + 4;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // scores: warp rows ta = q0 + 2 warp, tb = ta + 1; lane keys pa = lane, pb = lane + 32
    const int ta = q0 + 2 * warp, tb = ta + 1, pa = lane, pb = lane + 32;
    const float sc = rsqrtf((float)HD);
    float s[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
    if (ta < q1) {
        const float4 *qa = reinterpret_cast<const float4 *>(Qs + (ta - q0) * HD);
        const float4 *qb = reinterpret_cast<const float4 *>(Qs + (tb - q0) * HD);  // (read only while tb < q1)
        const float4 *ka = reinterpret_cast<const float4 *>(Ks + (size_t)min(pa, SMALL_T - 1) * KS);
        const float4 *kb = reinterpret_cast<const float4 *>(Ks + (size_t)min(pb, SMALL_T - 1) * KS);
#pragma unroll 8
        for (int d4 = 0; d4 < HD / 4; d4++) {
            const float4 x = qa[d4], y = tb < q1 ? qb[d4] : make_float4(0.f, 0.f, 0.f, 0.f), u = ka[d4], w = kb[d4];
            s[0][0] += x.x * u.x + x.y * u.y + x.z * u.z + x.w * u.w;
            s[0][1] += x.x * w.x + x.y * w.y + x.z * w.z + x.w * w.w;
            s[1][0] += y.x * u.x + y.y * u.y + y.z * u.z + y.w * u.w;
            s[1][1] += y.x * w.x + y.y * w.y + y.z * w.z + y.w * w.w;
        }
    }
    // causal softmax per row (key p <= t); P to shared memory for P V
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int t = ta + r;
        const float a = pa <= t ? s[r][0] * sc : -INFINITY, b = pb <= t ? s[r][1] * sc : -INFINITY;
        float m = fmaxf(a, b);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        const float ea = pa <= t ? expf(a - m) : 0.0f, eb = pb <= t ? expf(b - m) : 0.0f;
        inv[r] = 1.0f / warp_sum(ea + eb);
        Ps[(warp * 2 + r) * SMALL_T + pa] = ea;
        Ps[(warp * 2 + r) * SMALL_T + pb] = eb;
    }
    __syncwarp();
    if (ta >= q1) return;
    // O = P V over keys [0, tb]: lane's dims 4 lane' (HD / 4 float4s of a row over the warp)
    const float *pra = Ps + (warp * 2) * SMALL_T, *prb = pra + SMALL_T;
    const int pend = min(tb, q1 - 1);
    for (int d4 = lane; d4 < HD / 4; d4 += 32) {
        float4 oa = make_float4(0.f, 0.f, 0.f, 0.f), ob = oa;
        for (int p = 0; p <= pend; p++) {
            const float4 vv = reinterpret_cast<const float4 *>(Vs + (size_t)p * HD)[d4];
            const float wa = pra[p], wb = prb[p];
            oa.x += wa * vv.x, oa.y += wa * vv.y, oa.z += wa * vv.z, oa.w += wa * vv.w;
            ob.x += wb * vv.x, ob.y += wb * vv.y, ob.z += wb * vv.z, ob.w += wb * vv.w;
        }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int t = ta + r;
            if (t >= q1) break;
            const float4 o = r ? ob : oa;
            const size_t c = (size_t)t * qd + (size_t)h * HD + 4 * d4;
            uint32_t hi0, lo0, hi1, lo1;
            split2(o.x * inv[r], o.y * inv[r], hi0, lo0);
            split2(o.z * inv[r], o.w * inv[r], hi1, lo1);
            *reinterpret_cast<uint2 *>(att + c) = make_uint2(hi0, hi1);
            if (atl) *reinterpret_cast<uint2 *>(atl + c) = make_uint2(lo0, lo1);
        }
    }
}


// Attention for a short first chunk (T <= SMALL_T tokens at position 0, hd = HD): qk_prep_k and the
// flash kernel in one launch. Block (h, rg) owns query rows [16 rg, 16 rg + 16) of head h. It sums
// the q|k|v slabs, normalises and rotates its q rows and the K rows [0, q1) of h's kv head (each
// block of the group redoes those: at most SMALL_T rows), keeps K, V and q in shared memory as f32
// (K and V rounded to the cache's element type first, as decode reads them), and the first head
// of each kv group writes its own rows' K/V to the cache. Scores, softmax and P V in f32 (more exact
// than the tensor-core path; no bf16 rounding of q or P). Output as flash2_k writes it: bf16 hi
// (+ lo) rows of (T, q_dim). One launch instead of two, no K/V scratch copy. 32 warps prepare the
// rows, 8 of them then attend, 2 query rows each; a lane holds keys lane and lane + 32 of its rows'
// scores, dims [4 lane', ...) of the output.
template <int HD, typename KT>
__global__ void __launch_bounds__(NT_SMALL) attn_small_k(const float *qkv, int ns, size_t ss, const float *qn, const float *kn,
                                                    const float *rope, KT *kc, KT *vc, __nv_bfloat16 *att,
                                                    __nv_bfloat16 *atl, int T, int nh, int nkv, int maxc,
                                                    const int *posp, float eps) {
    constexpr int E = HD / 32, KS = HD + 4;  // dims per lane in the prep; K row stride (conflict-free float4)
    extern __shared__ __align__(16) float ssm[];
    float *Ks = ssm;                          // (q1, KS)
    float *Vs = Ks + (size_t)SMALL_T * KS;    // (q1, HD)
    float *Qs = Vs + (size_t)SMALL_T * HD;    // (16, HD)
    float *Ps = Qs + 16 * HD;                 // (8 warps, 2 rows, SMALL_T)
    const int h = blockIdx.x, q0 = blockIdx.y * 16, q1 = min(T, q0 + 16), G = nh / nkv, kvh = h / G;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, half = HD / 2, qd = nh * HD, kvd = nkv * HD;
    const size_t rs = (size_t)qd + 2 * kvd;  // a token's q|k|v row
    pdl_wait();
    pdl_trigger();
    if (*posp != 0) __trap();  // the host takes this path only for a chunk at position 0
    const bool own = h % G == 0;  // writes this block's rows of the kv head to the cache
    // prep tasks: K rows [0, q1), V rows [0, q1), q rows [q0, q1)
    // (one task per warp mostly: 32 warps; every load of a task, all its slabs, the norm weights and
    // the RoPE entries, goes out before any is used: the first version, 8 warps and the slabs one
    // after another, took 19.5 us at 32 tokens against 14.4 for qk_prep_k + flash2_k, run 36)
    const int nt = 2 * q1 + (q1 - q0);
    for (int task = warp; task < nt; task += NT_SMALL / 32) {
        const int kind = task < q1 ? 0 : task < 2 * q1 ? 1 : 2;  // 0 K, 1 V, 2 q
        const int t = kind == 0 ? task : kind == 1 ? task - q1 : q0 + task - 2 * q1;
        const int slot = kind == 2 ? h : kind == 0 ? nh + kvh : nh + nkv + kvh;
        float v[E];  // (RoPE at position t: the chunk starts at 0)
        prep_row<HD>(qkv + (size_t)t * rs + (size_t)slot * HD + lane * E, ns, ss, kind != 1, kind == 2 ? qn : kn,
                     reinterpret_cast<const float2 *>(rope) + (size_t)t * half, eps, v);
#pragma unroll
        for (int j = 0; j < E; j++) {
            const int d = lane * E + j;
            if (kind == 2) {
                Qs[(t - q0) * HD + d] = v[j];
            } else {
                KT *cache = kind == 0 ? kc : vc;
                const size_t co = ((size_t)kvh * maxc + t) * HD + d;
                if (own && t >= q0) st1(cache + co, v[j]);
                const float f = kv_round<KT>(v[j]);  // the value decode will read from the cache
                if (kind == 0) Ks[t * KS + d] = f;
                else Vs[t * HD + d] = f;
            }
        }
    }
    __syncthreads();
    if (warp >= 8) return;  // the attention: 8 warps, 2 query rows each
    small_attend<HD>(Qs, Ks, Vs, Ps, h, q0, q1, qd, att, atl);
}

// 8 cache elements (f32 or bf16) -> hi and lo bf16 (uint4 each); zeros when !ok.
__device__ __forceinline__ void ld8split(const float *p, bool ok, uint4 &hi, uint4 &lo) {
    if (!ok) {
        hi = lo = make_uint4(0, 0, 0, 0);
        return;
    }
    const float4 a = __ldcg(reinterpret_cast<const float4 *>(p)), b = __ldcg(reinterpret_cast<const float4 *>(p) + 1);
    split2(a.x, a.y, hi.x, lo.x);
    split2(a.z, a.w, hi.y, lo.y);
    split2(b.x, b.y, hi.z, lo.z);
    split2(b.z, b.w, hi.w, lo.w);
}
__device__ __forceinline__ void ld8split(const __nv_bfloat16 *p, bool ok, uint4 &hi, uint4 &lo) {
    hi = ok ? __ldcg(reinterpret_cast<const uint4 *>(p)) : make_uint4(0, 0, 0, 0);
    lo = make_uint4(0, 0, 0, 0);
}

// The warp's Q fragments for head h (A operand, row-major 16 x HD; a0 (g, 2tq), a1 (g+8, 2tq),
// a2 (g, 2tq+8), a3 (g+8, 2tq+8)) from rows wr.. of qb (and of ql when LO); rows >= T are zero.
template <bool LO, int NK, int NL>
__device__ __forceinline__ void load_q(const __nv_bfloat16 *qb, const __nv_bfloat16 *ql, int T, int qd, int h, int wr,
                                       int g, int tq, uint32_t (&qa)[NK][4], uint32_t (&qal)[NL][4]) {
    constexpr int HD = NK * 16;
    const int r0 = wr + g, r1 = wr + g + 8;
    const size_t o0 = (size_t)r0 * qd + (size_t)h * HD, o1 = (size_t)r1 * qd + (size_t)h * HD;
#pragma unroll
    for (int kk = 0; kk < NK; kk++) {
        const int c = kk * 16 + 2 * tq;
        qa[kk][0] = r0 < T ? *reinterpret_cast<const uint32_t *>(qb + o0 + c) : 0u;
        qa[kk][1] = r1 < T ? *reinterpret_cast<const uint32_t *>(qb + o1 + c) : 0u;
        qa[kk][2] = r0 < T ? *reinterpret_cast<const uint32_t *>(qb + o0 + c + 8) : 0u;
        qa[kk][3] = r1 < T ? *reinterpret_cast<const uint32_t *>(qb + o1 + c + 8) : 0u;
        if (LO) {
            qal[kk][0] = r0 < T ? *reinterpret_cast<const uint32_t *>(ql + o0 + c) : 0u;
            qal[kk][1] = r1 < T ? *reinterpret_cast<const uint32_t *>(ql + o1 + c) : 0u;
            qal[kk][2] = r0 < T ? *reinterpret_cast<const uint32_t *>(ql + o0 + c + 8) : 0u;
            qal[kk][3] = r1 < T ? *reinterpret_cast<const uint32_t *>(ql + o1 + c + 8) : 0u;
        }
    }
}

// The warp's output rows wr + g and wr + g + 8 (those < T) of head h: o / l as bf16 into att (and
// the rounding remainders into atl when LO and atl is not nullptr: the o GEMM's input is split
// whenever the GEMMs are, whatever precision the attention products had). l0/l1: the rows' full
// softmax sums.
template <bool LO, int NO>
__device__ __forceinline__ void store_o(const float (&o)[NO][4], float l0, float l1, int T, int qd, int h, int wr,
                                        int g, int tq, __nv_bfloat16 *att, __nv_bfloat16 *atl) {
    constexpr int HD = NO * 8;
    const int r0 = wr + g, r1 = r0 + 8;
    const float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
    for (int dn = 0; dn < NO; dn++) {
        const size_t c = (size_t)h * HD + dn * 8 + 2 * tq;
        uint32_t hi, lo;
        if (r0 < T) {
            split2(o[dn][0] * i0, o[dn][1] * i0, hi, lo);
            *reinterpret_cast<uint32_t *>(att + (size_t)r0 * qd + c) = hi;
            if (LO && atl) *reinterpret_cast<uint32_t *>(atl + (size_t)r0 * qd + c) = lo;
        }
        if (r1 < T) {
            split2(o[dn][2] * i1, o[dn][3] * i1, hi, lo);
            *reinterpret_cast<uint32_t *>(att + (size_t)r1 * qd + c) = hi;
            if (LO && atl) *reinterpret_cast<uint32_t *>(atl + (size_t)r1 * qd + c) = lo;
        }
    }
}

// store_o's rows as f16 (the o GEMM's f16 input, MQ_PREFILL_F16G: o / l is a convex combination of
// f16 V rows, so it stays inside f16's range)
template <int NO>
__device__ __forceinline__ void store_o_h(const float (&o)[NO][4], float l0, float l1, int T, int qd, int h, int wr,
                                          int g, int tq, __nv_bfloat16 *att) {
    constexpr int HD = NO * 8;
    const int r0 = wr + g, r1 = r0 + 8;
    const float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
    __half *a = reinterpret_cast<__half *>(att);
#pragma unroll
    for (int dn = 0; dn < NO; dn++) {
        const size_t c = (size_t)h * HD + dn * 8 + 2 * tq;
        if (r0 < T) *reinterpret_cast<__half2 *>(a + (size_t)r0 * qd + c) = __floats2half2_rn(o[dn][0] * i0, o[dn][1] * i0);
        if (r1 < T) *reinterpret_cast<__half2 *>(a + (size_t)r1 * qd + c) = __floats2half2_rn(o[dn][2] * i1, o[dn][3] * i1);
    }
}

// P for keys kk*16 .. kk*16+15 as the A operand of P V (from the C layout the scores are in), as
// bf16 hi (pa) and the rounding remainders (pl).
template <int NJ>
__device__ __forceinline__ void p_frags(const float (&s)[NJ][4], int kk, uint32_t (&pa)[4], uint32_t (&pl)[4]) {
    split2(s[2 * kk][0], s[2 * kk][1], pa[0], pl[0]);
    split2(s[2 * kk][2], s[2 * kk][3], pa[1], pl[1]);
    split2(s[2 * kk + 1][0], s[2 * kk + 1][1], pa[2], pl[2]);
    split2(s[2 * kk + 1][2], s[2 * kk + 1][3], pa[3], pl[3]);
}

// P as f16 (an f16 KV cache's attention: P in [0, 1] keeps 11 significant bits, no lo half).
template <int NJ>
__device__ __forceinline__ void p_frags_h(const float (&s)[NJ][4], int kk, uint32_t (&pa)[4]) {
    const __half2 a = __floats2half2_rn(s[2 * kk][0], s[2 * kk][1]), b = __floats2half2_rn(s[2 * kk][2], s[2 * kk][3]);
    const __half2 c = __floats2half2_rn(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    const __half2 d = __floats2half2_rn(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    pa[0] = *reinterpret_cast<const uint32_t *>(&a), pa[1] = *reinterpret_cast<const uint32_t *>(&b);
    pa[2] = *reinterpret_cast<const uint32_t *>(&c), pa[3] = *reinterpret_cast<const uint32_t *>(&d);
}

// The maxima of a row over the 4 lanes of a quad (mma C layout: rows g and g + 8), for both rows.
__device__ __forceinline__ void quad_max2(float &a, float &b) {
    a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, 1));
    a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, 2));
    b = fmaxf(b, __shfl_xor_sync(0xffffffffu, b, 1));
    b = fmaxf(b, __shfl_xor_sync(0xffffffffu, b, 2));
}

// The sums of a row over the 4 lanes of a quad, for both rows (the softmax sums at a kernel's end).
__device__ __forceinline__ void quad_sum2(float &a, float &b) {
    a += __shfl_xor_sync(0xffffffffu, a, 1);
    a += __shfl_xor_sync(0xffffffffu, a, 2);
    b += __shfl_xor_sync(0xffffffffu, b, 1);
    b += __shfl_xor_sync(0xffffffffu, b, 2);
}

// The output accumulators' rows g (al0) and g + 8 (al1) rescaled.
template <int NO>
__device__ __forceinline__ void scale_o(float (&o)[NO][4], float al0, float al1) {
#pragma unroll
    for (int i = 0; i < NO; i++) {
        o[i][0] *= al0;
        o[i][1] *= al0;
        o[i][2] *= al1;
        o[i][3] *= al1;
    }
}

// Online-softmax update for one key tile of flash attention (both kernels below). s: the tile's
// scores in the mma C layout (rows g and g+8 of the warp's 16 query rows; key k0 + j*8 + 2*tq + e),
// scaled by sc here; keys past a row's causal limit (ar0 / ar1, absolute positions) or past kend
// are masked. Updates the running row maxima m0/m1 (the 4 lanes of a quad share a row) and sums
// l0/l1, rescales the output accumulators o, and leaves exp2(s - max) in s for P V.
template <int NJ, int NO>
__device__ __forceinline__ void softmax_tile(float (&s)[NJ][4], float (&o)[NO][4], int k0, int tq, int ar0, int ar1,
                                             int kend, float sc, float &m0, float &m1, float &l0, float &l1) {
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int j = 0; j < NJ; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int key = k0 + j * 8 + 2 * tq + e;
            s[j][e] = key <= ar0 && key < kend ? s[j][e] * sc : -INFINITY;
            s[j][2 + e] = key <= ar1 && key < kend ? s[j][2 + e] * sc : -INFINITY;
            mx0 = fmaxf(mx0, s[j][e]);
            mx1 = fmaxf(mx1, s[j][2 + e]);
        }
    quad_max2(mx0, mx1);
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    // rows past T may have no valid key at all: keep the subtracted maxima finite
    const float b0 = mn0 == -INFINITY ? 0.0f : mn0, b1 = mn1 == -INFINITY ? 0.0f : mn1;
    const float al0 = exp2f(m0 - b0), al1 = exp2f(m1 - b1);
    m0 = mn0;
    m1 = mn1;
    float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        s[j][0] = exp2f(s[j][0] - b0);
        s[j][1] = exp2f(s[j][1] - b0);
        s[j][2] = exp2f(s[j][2] - b1);
        s[j][3] = exp2f(s[j][3] - b1);
        rs0 += s[j][0] + s[j][1];
        rs1 += s[j][2] + s[j][3];
    }
    l0 = l0 * al0 + rs0;
    l1 = l1 * al1 + rs1;
    scale_o(o, al0, al1);
}

// 2^x on the SFU, denormal results flushed to zero (exp2f without fast math adds a range fix-up
// of 3-4 instructions per element; softmax terms below 2^-126 are nothing next to a row's sum of >= 1)
__device__ __forceinline__ float ex2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// flash2_k's online-softmax update, as softmax_tile but with fewer instructions per score (the
// kernel is issue bound: ncu at 4,096 tokens, f16, saw 12% of its instructions as mma): the maxima
// are kept in raw score units and the scale folds into the exponent's FFMA (exp2(s sc - m sc)); the
// causal / kend mask is applied only on tiles that reach past the warp's first row or kend (MASK,
// warp-uniform); the output is rescaled only when some row's maximum grew (otherwise the factor is
// exactly 1). Leaves exp2(s sc - max sc) in s for P V.
template <bool MASK, int NJ, int NO>
__device__ __forceinline__ void softmax_tile2(float (&s)[NJ][4], float (&o)[NO][4], int k0, int tq, int ar0, int ar1,
                                              int kend, float sc, float &m0, float &m1, float &l0, float &l1) {
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int j = 0; j < NJ; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            if (MASK) {
                const int key = k0 + j * 8 + 2 * tq + e;
                if (!(key <= ar0 && key < kend)) s[j][e] = -INFINITY;
                if (!(key <= ar1 && key < kend)) s[j][2 + e] = -INFINITY;
            }
            mx0 = fmaxf(mx0, s[j][e]);
            mx1 = fmaxf(mx1, s[j][2 + e]);
        }
    quad_max2(mx0, mx1);
    // rows with no valid key yet (past T, or all masked) keep a finite subtrahend
    const float b0 = mx0 == -INFINITY ? 0.0f : mx0 * sc, b1 = mx1 == -INFINITY ? 0.0f : mx1 * sc;
    if (__any_sync(0xffffffffu, mx0 > m0 || mx1 > m1)) {
        const float al0 = ex2_ftz(m0 * sc - b0), al1 = ex2_ftz(m1 * sc - b1);
        l0 *= al0;
        l1 *= al1;
        scale_o(o, al0, al1);
    }
    m0 = mx0;
    m1 = mx1;
    float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        s[j][0] = ex2_ftz(fmaf(s[j][0], sc, -b0));
        s[j][1] = ex2_ftz(fmaf(s[j][1], sc, -b0));
        s[j][2] = ex2_ftz(fmaf(s[j][2], sc, -b1));
        s[j][3] = ex2_ftz(fmaf(s[j][3], sc, -b1));
        rs0 += s[j][0] + s[j][1];
        rs1 += s[j][2] + s[j][3];
    }
    l0 += rs0;
    l1 += rs1;
}

// A flash block's rows (both flash kernels): q head h = blockIdx.y; query tile q0 (the last tiles
// have the most keys and are scheduled first: blockIdx.x 0 = last tile); keys [0, kend) needed;
// warp's first row wr (relative) and the largest absolute position among its rows wlast; this
// thread's two rows ar0, ar1 (absolute); sc: the score scale in log2 units. Also loads the warp's
// Q fragments and zeroes the running output, maxima and sums.
template <int HD, bool LO, int NL>
struct FlashRows {
    int h, kvh, q0, qd, pos, kend, wr, wlast, ar0, ar1;
    float sc;
    __device__ __forceinline__ FlashRows(const __nv_bfloat16 *qb, const __nv_bfloat16 *ql, int T, const int *posp,
                                         int nh, int nkv, int warp, int g, int tq, uint32_t (&qa)[HD / 16][4],
                                         uint32_t (&qal)[NL][4], float (&o)[HD / 8][4], float &m0, float &m1,
                                         float &l0, float &l1)
        : FlashRows((int)blockIdx.y, (int)(gridDim.x - 1 - blockIdx.x) * BQ, qb, ql, T, posp, nh, nkv, warp, g, tq, qa,
                    qal, o, m0, m1, l0, l1) {}
    // q head h_ and first query row q0_ given (flash3g_k: two q heads per block)
    __device__ __forceinline__ FlashRows(int h_, int q0_, const __nv_bfloat16 *qb, const __nv_bfloat16 *ql, int T,
                                         const int *posp, int nh, int nkv, int warp, int g, int tq,
                                         uint32_t (&qa)[HD / 16][4], uint32_t (&qal)[NL][4], float (&o)[HD / 8][4],
                                         float &m0, float &m1, float &l0, float &l1) {
        h = h_, kvh = h / (nh / nkv), q0 = q0_;
        qd = nh * HD, pos = *posp;
        kend = pos + min(q0 + BQ, T);
        wr = q0 + warp * 16;
        wlast = pos + wr + 15;
        sc = rsqrtf((float)HD) * 1.4426950408889634f;
        load_q<LO>(qb, ql, T, qd, h, wr, g, tq, qa, qal);
#pragma unroll
        for (int i = 0; i < HD / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
        m0 = m1 = -INFINITY, l0 = l1 = 0.0f;
        ar0 = pos + wr + g, ar1 = ar0 + 8;
    }
};

// Causal flash attention for one q head (blockIdx.y) and BQ query rows of the chunk; 4 warps, 16
// rows each. Query row i (absolute position pos+i) attends cache rows [0, pos+i]. Per key tile of
// BK rows: K (BK, HD) and V transposed (HD, BK) in shared memory as bf16 (rows padded by 8
// elements so the fragment loads hit 32 distinct banks); S = Q K^T and O += P V on mma.sync
// m16n8k16 (bf16 in, fp32 accumulate); online softmax in fp32, log2 units. SPLIT: q, K, P and V
// are each hi + lo bf16 and every product takes three terms (hi.hi + hi.lo + lo.hi), ~fp32 accuracy.
// qb/ql: (T, q_dim) bf16 hi/lo queries; Kl/Vl: layer l's cache (n_kv, maxc, HD), head-major;
// att/atl: (T, q_dim) bf16 hi/lo output.
template <int HD, typename KT, bool SPLIT>
__global__ void __launch_bounds__(128) flash_k(const __nv_bfloat16 *qb, const __nv_bfloat16 *ql, const KT *Kl,
                                               const KT *Vl, __nv_bfloat16 *att, __nv_bfloat16 *atl, int T,
                                               const int *posp, int nh, int nkv, int maxc) {
    pdl_wait();
    pdl_trigger();
    constexpr int KS = HD + 8, VS = BK + 8, NB = SPLIT ? 2 : 1;
    __shared__ __align__(16) __nv_bfloat16 Ks[NB][BK * KS];  // (BK, HD) keys of the tile: hi, lo
    __shared__ __align__(16) __nv_bfloat16 Vt[NB][HD * VS];  // (HD, BK) values, transposed: hi, lo
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    uint32_t qa[HD / 16][4], qal[SPLIT ? HD / 16 : 1][4];
    float o[HD / 8][4], m0, m1, l0, l1;
    const FlashRows<HD, SPLIT, SPLIT ? HD / 16 : 1> R(qb, ql, T, posp, nh, nkv, warp, g, tq, qa, qal, o, m0, m1, l0, l1);
    const int h = R.h, kvh = R.kvh, qd = R.qd, pos = R.pos, kend = R.kend, wr = R.wr, wlast = R.wlast;
    const int ar0 = R.ar0, ar1 = R.ar1;
    const float sc = R.sc;

    const int ntile = (kend + BK - 1) / BK;
    for (int kt = 0; kt < ntile; kt++) {
        const int k0 = kt * BK;
        __syncthreads();  // the previous tile's K/V are no longer read
        for (int c = threadIdx.x; c < BK * HD / 8; c += 128) {
            const int key = c / (HD / 8), d0 = (c % (HD / 8)) * 8;
            const bool ok = k0 + key < kend;
            const size_t off = ok ? ((size_t)kvh * maxc + (size_t)(k0 + key)) * HD + d0 : 0;  // head-major row
            uint4 hi, lo;
            ld8split(Kl + off, ok, hi, lo);
            *reinterpret_cast<uint4 *>(&Ks[0][key * KS + d0]) = hi;
            if (SPLIT) *reinterpret_cast<uint4 *>(&Ks[NB - 1][key * KS + d0]) = lo;
            ld8split(Vl + off, ok, hi, lo);
            const __nv_bfloat16 *vh = reinterpret_cast<const __nv_bfloat16 *>(&hi);
            const __nv_bfloat16 *vl = reinterpret_cast<const __nv_bfloat16 *>(&lo);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                Vt[0][(d0 + j) * VS + key] = vh[j];
                if (SPLIT) Vt[NB - 1][(d0 + j) * VS + key] = vl[j];
            }
        }
        __syncthreads();
        if (k0 > wlast) continue;  // every key of this tile is after this warp's rows

        float s[BK / 8][4];
#pragma unroll
        for (int j = 0; j < BK / 8; j++) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) {
                const int ko = (j * 8 + g) * KS + kk * 16 + 2 * tq;
                const uint32_t b0 = *reinterpret_cast<const uint32_t *>(&Ks[0][ko]);
                const uint32_t b1 = *reinterpret_cast<const uint32_t *>(&Ks[0][ko + 8]);
                if (SPLIT) {
                    mma16816(s[j], qal[kk], b0, b1);
                    mma16816(s[j], qa[kk], *reinterpret_cast<const uint32_t *>(&Ks[NB - 1][ko]),
                             *reinterpret_cast<const uint32_t *>(&Ks[NB - 1][ko + 8]));
                }
                mma16816(s[j], qa[kk], b0, b1);
            }
        }
        softmax_tile(s, o, k0, tq, ar0, ar1, kend, sc, m0, m1, l0, l1);
        // O += P V: P from the S accumulators (C layout -> A layout), V^T rows as the B operand
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            uint32_t pa[4], pl[4];
            p_frags(s, kk, pa, pl);
#pragma unroll
            for (int dn = 0; dn < HD / 8; dn++) {
                const int vo = (dn * 8 + g) * VS + kk * 16 + 2 * tq;
                const uint32_t b0 = *reinterpret_cast<const uint32_t *>(&Vt[0][vo]);
                const uint32_t b1 = *reinterpret_cast<const uint32_t *>(&Vt[0][vo + 8]);
                if (SPLIT) {
                    mma16816(o[dn], pl, b0, b1);
                    mma16816(o[dn], pa, *reinterpret_cast<const uint32_t *>(&Vt[NB - 1][vo]),
                             *reinterpret_cast<const uint32_t *>(&Vt[NB - 1][vo + 8]));
                }
                mma16816(o[dn], pa, b0, b1);
            }
        }
    }
    quad_sum2(l0, l1);
    store_o<SPLIT>(o, l0, l1, T, qd, h, wr, g, tq, att, atl);
}

// ---- attention v2: K/V as bf16 (hi [+ lo]) rows in global memory, cp.async double-buffered tiles,
// ldmatrix fragments (.trans for V, so V needs no transposed copy).

__device__ __forceinline__ void cp16(void *smem, const void *g, bool ok) {  // zero-fills when !ok
    const unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(g), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldsm4(uint32_t r[4], const __nv_bfloat16 *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ void ldsm4t(uint32_t r[4], const __nv_bfloat16 *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// 8 f32 cache elements -> 8 f16 (one uint4)
__device__ __forceinline__ uint4 ld8half(const float *p) {
    const float4 a = __ldcg(reinterpret_cast<const float4 *>(p)), b = __ldcg(reinterpret_cast<const float4 *>(p) + 1);
    const __half2 h[4] = {__floats2half2_rn(a.x, a.y), __floats2half2_rn(a.z, a.w), __floats2half2_rn(b.x, b.y),
                          __floats2half2_rn(b.z, b.w)};
    return *reinterpret_cast<const uint4 *>(h);
}

// f32 cache rows [0, *posp) of one layer (K, V: (n_kv, maxc, hd), head-major) -> bf16 hi (kh, vh)
// and lo (kl, vl; nullptr: not split), all (rows, kv_dim), position-major. Grid-stride over the
// scratch's 8-element groups (the row count is read on the device, for graph replay); hd is a
// multiple of 8, so a group is 8 consecutive dims of one head's row. m16 bit 0 (1): V as f16 rows
// into vh, no vl; bit 1: K likewise (MQ_PREFILL_PV16).
__global__ void kv_split_k(const float *K, const float *V, __nv_bfloat16 *kh, __nv_bfloat16 *kl, __nv_bfloat16 *vh,
                           __nv_bfloat16 *vl, const int *posp, int kvd, int hd, int maxc, int m16) {
    pdl_wait();
    pdl_trigger();
    const size_t n8 = (size_t)*posp * kvd / 8, row8 = (size_t)kvd / 8;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += (size_t)gridDim.x * blockDim.x) {
        // scratch group i = row p, element c of the row = kv head c / hd, dim c % hd
        const size_t p = i / row8;
        const int c = (int)(i - p * row8) * 8, h = c / hd, d = c - h * hd;
        const size_t src = ((size_t)h * maxc + p) * hd + d;  // the same element in the head-major cache
        // group i of one array: f16 (half), or bf16 hi into h and lo into l (l nullptr: none)
        auto put = [&](const float *x, bool half, __nv_bfloat16 *h, __nv_bfloat16 *l) {
            if (half) {
                reinterpret_cast<uint4 *>(h)[i] = ld8half(x);
                return;
            }
            uint4 hi, lo;
            ld8split(x, true, hi, lo);
            reinterpret_cast<uint4 *>(h)[i] = hi;
            if (l) reinterpret_cast<uint4 *>(l)[i] = lo;
        };
        put(K + src, (m16 & 2) != 0, kh, kl);
        put(V + src, (m16 & 1) != 0, vh, vl);
    }
}

// Key rows per tile: 64, or 32 at HD = 128 with lo terms in K or in P (registers: q hi + lo, O and S
// fragments; shared memory: four K/V arrays). Level 2 (QLO, V16: q hi + lo, f16 K, V, P) takes 64 at
// HD = 128 too: 250 registers without spills, -5% TTFT at 4,096 tokens against 32 (run 102).
// MINB: blocks per SM the registers are capped for (3 where that costs no spills, checked with
// -Xptxas -v).
template <int HD, bool QLO, bool KVLO, bool V16 = false>
struct Flash2Cfg {
    static constexpr int BK = HD == 128 && (KVLO || (QLO && !V16)) ? 32 : 64;
    static constexpr int MINB = HD == 128 || (HD == 64 && KVLO) ? 2 : 3;
    static constexpr int KA = KVLO ? 2 : 1;                 // K arrays: K hi, (K lo)
    static constexpr int NA = KA + (KVLO && !V16 ? 2 : 1);  // smem arrays per stage: K hi, (K lo), V hi, (V lo)
    static constexpr int KS = HD + 8;        // padded row (16 bytes): ldmatrix rows hit distinct banks
    static constexpr size_t SMEM = (size_t)2 * NA * BK * KS * sizeof(__nv_bfloat16);
};

// Causal flash attention as flash_k (same block/warp split, masking and online softmax), reading
// K/V of layer l as bf16 rows: kv head h's row p at h * hs + p * ldkv of Kh/Vh (hi) and Kl/Vl (lo,
// KVLO): the bf16 cache (n_kv, max_ctx, HD) is ldkv = HD, hs = max_ctx * HD; the f32 cache's bf16
// scratch (rows, kv_dim) is ldkv = kv_dim, hs = HD. Per key tile of BK rows,
// both stages of [K hi, K lo, V hi, V lo] (BK, HD+8) sit in dynamic shared memory; the next tile's
// cp.async runs while this one computes. QLO: q and P carry lo halves (split bf16); products take
// the lo terms first (q.lo K.hi, q.hi K.lo) then hi.hi. MT = __half: q, K/V (an f16 cache) and P are
// f16, one product per term (QLO and KVLO false). V16 (the f32 cache's f16 scratch rows,
// MQ_PREFILL_PV16): P V is one f16 product, P and V rounded to f16 (11 significant bits; Vh holds f16
// rows, Vl is unused, P has no lo half), whatever the scores use: with MT = bf16, QLO and KVLO their
// three split products (level 1); with MT = __half and QLO, q's f16 hi and lo against f16 K, two
// products (level 2, the default). (Both q heads of a kv head in one
// 8-warp block, sharing the K/V tiles, measured slower: +6% at 4,096 tokens, +34% at 512, run 62.)
template <int HD, bool QLO, bool KVLO, typename MT = __nv_bfloat16, bool V16 = false, int ORD = 0>
__global__ void __launch_bounds__(128, (Flash2Cfg<HD, QLO, KVLO, V16>::MINB)) flash2_k(const __nv_bfloat16 *qb, const __nv_bfloat16 *ql,
                                                const __nv_bfloat16 *Kh, const __nv_bfloat16 *Kl,
                                                const __nv_bfloat16 *Vh, const __nv_bfloat16 *Vl, int ldkv,
                                                size_t hs, __nv_bfloat16 *att, __nv_bfloat16 *atl, int T,
                                                const int *posp, int nh, int nkv, int of16) {
    pdl_wait();
    pdl_trigger();
    using Cfg = Flash2Cfg<HD, QLO, KVLO, V16>;
    constexpr int BKT = Cfg::BK, NA = Cfg::NA, KA = Cfg::KA, KS = Cfg::KS, TILE = BKT * KS;
    constexpr bool VLO = KVLO && !V16;  // V lo tiles loaded and multiplied
    extern __shared__ __align__(16) __nv_bfloat16 fsm[];  // [2 stages][NA][BKT][KS]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3, lm = lane >> 3;
    uint32_t qa[HD / 16][4], qal[QLO ? HD / 16 : 1][4];
    float o[HD / 8][4], m0, m1, l0, l1;
    const FlashRows<HD, QLO, QLO ? HD / 16 : 1> R(qb, ql, T, posp, nh, nkv, warp, g, tq, qa, qal, o, m0, m1, l0, l1);
    const int h = R.h, kvh = R.kvh, qd = R.qd, pos = R.pos, kend = R.kend, wr = R.wr, wlast = R.wlast;
    const int ar0 = R.ar0, ar1 = R.ar1;
    const float sc = R.sc;

    // tile kt -> stage st: 16-byte chunks, keys past kend zero-filled (stale cache rows may hold NaN)
    auto load = [&](int kt, int st) {
        __nv_bfloat16 *base = fsm + st * NA * TILE;
        const int k0 = kt * BKT;
        for (int c = threadIdx.x; c < BKT * HD / 8; c += 128) {
            const int key = c / (HD / 8), d0 = (c % (HD / 8)) * 8;
            const bool ok = k0 + key < kend;
            const size_t off = ok ? (size_t)kvh * hs + (size_t)(k0 + key) * ldkv + d0 : 0;
            const int so = key * KS + d0;
            cp16(base + so, Kh + off, ok);
            if (KVLO) cp16(base + TILE + so, Kl + off, ok);
            cp16(base + KA * TILE + so, Vh + off, ok);
            if (VLO) cp16(base + (KA + 1) * TILE + so, Vl + off, ok);
        }
    };

    const int ntile = (kend + BKT - 1) / BKT;
    load(0, 0);
    cp_commit();
    for (int kt = 0; kt < ntile; kt++) {
        if (kt + 1 < ntile) load(kt + 1, (kt + 1) & 1);
        cp_commit();  // (empty on the last tile: keeps the wait count uniform)
        cp_wait<1>();
        __syncthreads();
        const int k0 = kt * BKT;
        if (k0 <= wlast) {  // else every key of this tile is after this warp's rows
            const __nv_bfloat16 *Ksh = fsm + (kt & 1) * NA * TILE, *Ksl = Ksh + TILE;
            const __nv_bfloat16 *Vsh = Ksh + KA * TILE, *Vsl = Vsh + TILE;
            float s[BKT / 8][4];
            // ORD 1 (MQ_PREFILL_FAORD): dims outer, key groups inner, so that consecutive products
            // accumulate into different s[j] (ORD 0: each s[j]'s HD / 8 products back to back)
#pragma unroll
            for (int j = 0; j < BKT / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
            for (int jo = 0; jo < (ORD ? HD / 32 : BKT / 8); jo++) {
#pragma unroll
                for (int ji = 0; ji < (ORD ? BKT / 8 : HD / 32); ji++) {
                    const int j = ORD ? ji : jo, kk = 2 * (ORD ? jo : ji);
                    // matrices: (keys j*8.., d kk*16 + 0|8), (keys j*8.., d (kk+1)*16 + 0|8)
                    const int ko = (j * 8 + (lane & 7)) * KS + (kk + (lm >> 1)) * 16 + (lm & 1) * 8;
                    uint32_t b[4];
                    ldsm4(b, Ksh + ko);
                    if (QLO) {
                        mma16816<MT>(s[j], qal[kk], b[0], b[1]);
                        mma16816<MT>(s[j], qal[kk + 1], b[2], b[3]);
                    }
                    if (KVLO) {
                        uint32_t bl[4];
                        ldsm4(bl, Ksl + ko);
                        mma16816<MT>(s[j], qa[kk], bl[0], bl[1]);
                        mma16816<MT>(s[j], qa[kk + 1], bl[2], bl[3]);
                    }
                    mma16816<MT>(s[j], qa[kk], b[0], b[1]);
                    mma16816<MT>(s[j], qa[kk + 1], b[2], b[3]);
                }
            }
            // f16: masks only on the warp's last tiles (keys past its first row or past kend), -2%
            // at 4,096 tokens; split keeps softmax_tile (softmax_tile2 measured +0.8% there, run 65)
            if constexpr (!std::is_same<MT, __half>::value)
                softmax_tile(s, o, k0, tq, ar0, ar1, kend, sc, m0, m1, l0, l1);
            else if (k0 + BKT - 1 > pos + wr || k0 + BKT > kend)
                softmax_tile2<true>(s, o, k0, tq, ar0, ar1, kend, sc, m0, m1, l0, l1);
            else
                softmax_tile2<false>(s, o, k0, tq, ar0, ar1, kend, sc, m0, m1, l0, l1);
            // O += P V; V (keys, HD) row-major in smem, B fragments by ldmatrix.trans
#pragma unroll
            for (int kk = 0; kk < BKT / 16; kk++) {
                uint32_t pa[4], pl[4];
                if constexpr (std::is_same<MT, __half>::value || V16) p_frags_h(s, kk, pa);
                else p_frags(s, kk, pa, pl);
#pragma unroll
                for (int dn = 0; dn < HD / 8; dn += 2) {
                    // matrices: (keys kk*16 + 0|8, d dn*8..), (keys kk*16 + 0|8, d (dn+1)*8..)
                    const int vo = (kk * 16 + (lm & 1) * 8 + (lane & 7)) * KS + (dn + (lm >> 1)) * 8;
                    uint32_t b[4];
                    ldsm4t(b, Vsh + vo);
                    if constexpr (V16) {
                        mma16816<__half>(o[dn], pa, b[0], b[1]);
                        mma16816<__half>(o[dn + 1], pa, b[2], b[3]);
                        continue;
                    }
                    if (QLO) {
                        mma16816<MT>(o[dn], pl, b[0], b[1]);
                        mma16816<MT>(o[dn + 1], pl, b[2], b[3]);
                    }
                    if (VLO) {
                        uint32_t bl[4];
                        ldsm4t(bl, Vsl + vo);
                        mma16816<MT>(o[dn], pa, bl[0], bl[1]);
                        mma16816<MT>(o[dn + 1], pa, bl[2], bl[3]);
                    }
                    mma16816<MT>(o[dn], pa, b[0], b[1]);
                    mma16816<MT>(o[dn + 1], pa, b[2], b[3]);
                }
            }
        }
        __syncthreads();  // this stage is refilled by the next iteration's load
    }
    cp_wait<0>();
    quad_sum2(l0, l1);
    if ((std::is_same<MT, __half>::value || V16) && of16)
        store_o_h(o, l0, l1, T, qd, h, wr, g, tq, att);
    else
        store_o<QLO || std::is_same<MT, __half>::value>(o, l0, l1, T, qd, h, wr, g, tq, att, atl);
}

#endif
