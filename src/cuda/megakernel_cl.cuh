// megakernel_cl.cuh: decode_cl, the decode step in thread-block clusters: a layer in two grid-wide hops.
//
// decode_df's layer is four stages, each a dependent round trip through L2 counters (~2-3 us a hop
// under the weight stream, docs/perf-notes.md). decode_cl keeps everything from q|k|v to o_proj of
// one kv head inside one cluster of CL_CS blocks, where a hop is a cluster barrier over distributed
// shared memory (~0.3 us, run 46), so a layer has two grid-wide hops: MLP -> attention half and
// attention half -> MLP. Per layer l (clusters of 8 blocks, as many as are co-resident):
//   attention half, cluster g < n_kv owns kv head g, rank r of its 8 blocks:
//     rmsnorm(x) -> rows [r RR, (r+1) RR) of the head's RR * 8 q|k|v rows (its q heads, k, v; staged
//     in buffer 0) -> all-gather of the rows through DSMEM, cluster barrier -> q/k norm + RoPE in
//     every rank (the last rank writes this position's K/V row) -> online softmax over the rank's
//     eighth of the positions -> all-gather of the (m, l, acc) partials, cluster barrier -> the
//     combine in every rank -> its o_proj tile (output rows [r H/8, (r+1) H/8) x the head's G*hd
//     columns, laid out contiguously at upload: Params.ob) -> float atomics into ra[l] (cluster 0
//     adds the layer input x: ra[l] = x + o_proj(attention)); publish on counter A(l).
//   MLP half, every block: rmsnorm(ra[l]) -> its (gate, up) pairs (buffer 0) -> h -> split-K down
//     (buffer 1) with float4 atomics into rm[l] (block 0 adds ra[l]); publish on counter M(l).
//   rm[l] is layer l+1's input; rm[L-1] feeds the lm_head and then holds the next embedding.
// Residual buffers are written only by atomics into zeroed memory, so no block overwrites a vector
// another may still read: block 0 zeroes ra[l-1] at attention half l (its readers, MLP half l-1,
// have all arrived on M(l-1), which that half waits for; at l = 0 through the embed counter) and the last block zeroes rm[l-1] at MLP
// half l (its readers, attention half l, all arrived on A(l)); the next atomics into either wait,
// through the counter chain, for that block's later arrivals. The host zeroes both before a launch
// (and needs n_layers >= 2: with one layer the buffer zeroed would be the one being summed).
// Weight copies (bulk copies, one mbarrier per buffer), one half-layer ahead:
//   attention blocks: buffer 0 q|k|v(l) -> gate|up(l) -> q|k|v(l+1); buffer 1 o tile(l) -> down(l)
//   others:           buffer 0 gate|up(l) -> gate|up(l+1);           buffer 1 down(l) -> down(l+1)
// Cluster exchanges: a rank writes its rows into every rank's qg / px, then a cluster barrier. The
// next writes into qg (px) come after the writer passed the following barrier, which every rank
// reaches only after its reads of qg (px): two barriers a layer keep both exchanges race-free.
// Counters (Params.flg, zeroed per launch, growing): A(l) = flg[5 l], M(l) = flg[5 l + 1], the embed
// counter flg[5 L] (as decode_df's: one per step).
// Part of the decode megakernel's one translation unit (megakernel.cu includes it last); namespace mqk.
#ifndef MQ_MEGAKERNEL_CL_CUH
#define MQ_MEGAKERNEL_CL_CUH

namespace mqk {

// Block 0's sub-stage profile indices (sprof_mark; gpu.cu's cl_names); att_pass marks SP_ATTLOOP (21).
// CLP_OMV: the copies issued after the o tile (the marks before it split its matvec and barrier).
enum {
    CLP_AWAIT = 0, CLP_NORM, CLP_QW, CLP_QMV, CLP_GATH, CLP_PREP, CLP_ATT, CLP_XCH, CLP_COMB, CLP_OW, CLP_OMV,
    CLP_APUB, CLP_MWAIT, CLP_MNORM, CLP_GW, CLP_GMV, CLP_SILU, CLP_DW, CLP_DMV, CLP_MPUB, CLP_LM,
    CLP_OMV0 = 22, CLP_OSYNC = 23  // the o tile: warp 0's matvec; the block's __syncthreads after it
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ unsigned cl_rank() {
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}
__device__ __forceinline__ unsigned cl_id() {
    unsigned r;
    asm volatile("mov.u32 %0, %%clusterid.x;" : "=r"(r));
    return r;
}
// every thread of every block of the cluster: the writes before it (DSMEM included) are visible after it
__device__ __forceinline__ void cl_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
// the shared::cluster address of shared-memory address a in block rank r of this cluster
__device__ __forceinline__ unsigned cl_map(unsigned a, unsigned r) {
    unsigned d;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(r));
    return d;
}
// src[0, 4 n4) (this block's shared memory) into dst[0, 4 n4) of every block of the cluster
__device__ __forceinline__ void cl_bcast(const float *src, float *dst, int n4) {
    const float4 *s4 = reinterpret_cast<const float4 *>(src);
    const unsigned d = smem_u32(dst);
    for (int i = threadIdx.x; i < CL_CS * n4; i += NT) {
        const int r = i / n4, k = i % n4;
        const float4 v = s4[k];
        asm volatile("st.shared::cluster.v4.f32 [%0], {%1, %2, %3, %4};" ::"r"(cl_map(d + 16u * k, (unsigned)r)),
                     "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w)
                     : "memory");
    }
}
#endif

// A copy of up to 3 contiguous global ranges into one buffer, completing its mbarrier once.
struct ClCopy {
    const void *src[3];
    unsigned bytes[3];
    int n;
};

// Start copy c into buffer k (all threads call; thread S.iss issues). The caller passed a
// __syncthreads since the buffer's last readers. An empty copy issues nothing (ws_take: no-op).
__device__ __forceinline__ void cl_issue(WStage &S, int k, const ClCopy &c) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    unsigned tot = 0;
    for (int i = 0; i < c.n; i++) tot += c.bytes[i];
    if (tot == 0) return;
    if ((int)threadIdx.x == S.iss) {
        if (tot > S.cap[k]) {
            printf("megakernel(cl): block %d: a %u-byte copy into a %zu-byte buffer\n", blockIdx.x, tot, S.cap[k]);
            __trap();
        }
        const unsigned mb = smem_u32(S.mb + k), dst = smem_u32(S.buf[k]);
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(mb), "r"(tot) : "memory");
        unsigned off = 0;
        for (int i = 0; i < c.n; i++) {
            const char *s = static_cast<const char *>(c.src[i]);
            for (unsigned o = 0; o < c.bytes[i]; o += 32768) {
                const unsigned len = c.bytes[i] - o < 32768 ? c.bytes[i] - o : 32768;
                asm volatile(
                    "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(
                        dst + off + o),
                    "l"(s + o), "r"(len), "r"(mb), "l"(s_wpol)
                    : "memory");
            }
            off += c.bytes[i];
        }
    }
    S.pend[k] = 1;
#else
    (void)S, (void)k, (void)c;
#endif
}

// The copy of rank r's q|k|v rows of kv head h of layer l: virtual rows [r RR, (r+1) RR) of the
// head's [G q heads | k | v] rows, which are three ranges of the q|k|v matrix.
__device__ __forceinline__ ClCopy cl_qkv_copy(const Params &P, int l, int h, int r) {
    const int hd = P.hd, G = P.nh / P.nkv, H = P.hidden, RR = (G + 2) * hd / CL_CS;
    const __nv_bfloat16 *W = P.layers[l].qkv;
    const int seg0[3] = {0, G * hd, (G + 1) * hd}, seg1[3] = {G * hd, (G + 1) * hd, (G + 2) * hd};
    const int row0[3] = {h * G * hd, P.qdim + h * hd, P.qdim + P.nkv * hd + h * hd};
    ClCopy c;
    c.n = 0;
    const int a = r * RR, b = a + RR;
    for (int s = 0; s < 3; s++) {
        const int lo = max(a, seg0[s]), hi = min(b, seg1[s]);
        if (hi <= lo) continue;
        c.src[c.n] = W + (size_t)(row0[s] + lo - seg0[s]) * H;
        c.bytes[c.n] = (unsigned)((size_t)(hi - lo) * H * 2);
        c.n++;
    }
    return c;
}
__device__ __forceinline__ ClCopy cl_one(const void *src, size_t bytes) {
    ClCopy c;
    c.n = 1, c.src[0] = src, c.bytes[0] = (unsigned)bytes;
    return c;
}

// One warp: RMSNorm (nw) and RoPE (cs: this position's (cos, sin) row, hd / 2 pairs) of head vector
// src (hd = 32 E floats) into dst_f (shared) and/or dst_b (the cache). src, nw and cs are in shared
// memory (nw and cs loaded before the layer's wait: pw). The same float operations as head_prep_v.
template <int E, typename KT>
__device__ void cl_prep(const Params &P, const float *src, const float *nw, const float2 *cs, float *dst_f,
                        KT *dst_b) {
    const int lane = threadIdx.x & 31, half = 16 * E, d0 = lane * E;
    float v[E], w[E], c[E], sn[E];
#pragma unroll
    for (int j = 0; j < E; j++) {
        v[j] = src[d0 + j];
        w[j] = nw ? nw[d0 + j] : 1.0f;
        c[j] = 1.0f, sn[j] = 0.0f;
        if (cs) {
            const float2 t = cs[(d0 + j) % half];
            c[j] = t.x, sn[j] = t.y;
        }
    }
    float r = 1.0f;
    if (nw) {
        float ss = 0.0f;
#pragma unroll
        for (int j = 0; j < E; j++) ss += v[j] * v[j];
        ss = warp_sum(ss);
        r = 1.0f / sqrtf(ss / (float)(32 * E) + P.eps);
    }
#pragma unroll
    for (int j = 0; j < E; j++) {
        float y = nw ? w[j] * (v[j] * r) : v[j];
        if (cs) {
            const float p = __shfl_xor_sync(0xffffffffu, y, 16);
            y = lane < 16 ? y * c[j] - p * sn[j] : y * c[j] + p * sn[j];
        }
        if (dst_f) dst_f[d0 + j] = y;
        if (dst_b) st1(dst_b + d0 + j, y);
    }
}
template <typename KT>
__device__ __noinline__ void cl_prep_head(const Params &P, const float *src, const float *nw, const float2 *cs,
                                          float *dst_f, KT *dst_b) {
    switch (P.hd) {
    case 64: cl_prep<2, KT>(P, src, nw, cs, dst_f, dst_b); break;
    case 128: cl_prep<4, KT>(P, src, nw, cs, dst_f, dst_b); break;
    default: cl_prep<8, KT>(P, src, nw, cs, dst_f, dst_b); break;  // 256 (the host admits 64 / 128 / 256)
    }
    __syncwarp();
}

// The fused MLP's split-K down for this block's nc pairs: dst[r] += sum_j downT[j][r] h[j] (+ res[r]
// when res: block 0 adds the residual), float4 atomics; d2: the staged downT rows (nc, hidden).
// xch (P.clred): every block of the cluster calls it (a cluster barrier inside); each rank's partial
// goes through DSMEM to the rank owning its eighth of the outputs (xch: 8 x hidden / 8 floats, px,
// which no block reads between its A(l) wait and its next arrival), and that rank adds the 8 in a
// fixed order and issues one float4 atomic per 4 outputs: 15 atomics per address instead of 120
// (block 0's profile: the publish after the down's atomics 2.5 us, run 1 of session 30).
__device__ __noinline__ void cl_down(const uint2 *d2, int nc, const float *h, int H, float *dst, const float *res,
                                     float *xch = nullptr, unsigned rank = 0) {
    const int H4 = H >> 2, S4 = H4 / CL_CS;
    for (int r4 = threadIdx.x; r4 < H4; r4 += NT) {
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        if (res) {
            const float4 v = __ldcg(reinterpret_cast<const float4 *>(res) + r4);
            a0 = v.x, a1 = v.y, a2 = v.z, a3 = v.w;
        }
#pragma unroll 4
        for (int j = 0; j < nc; j++) {
            const uint2 w = d2[(size_t)j * H4 + r4];
            const float hj = h[j];
            a0 = fmaf(__uint_as_float(w.x << 16), hj, a0);
            a1 = fmaf(__uint_as_float(w.x & 0xffff0000u), hj, a1);
            a2 = fmaf(__uint_as_float(w.y << 16), hj, a2);
            a3 = fmaf(__uint_as_float(w.y & 0xffff0000u), hj, a3);
        }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        if (xch) {
            const unsigned a = smem_u32(xch + 4 * ((int)rank * S4 + r4 % S4));
            asm volatile("st.shared::cluster.v4.f32 [%0], {%1, %2, %3, %4};" ::"r"(cl_map(a, (unsigned)(r4 / S4))),
                         "f"(a0), "f"(a1), "f"(a2), "f"(a3)
                         : "memory");
        } else {
            asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(dst + (size_t)r4 * 4), "f"(a0), "f"(a1),
                         "f"(a2), "f"(a3)
                         : "memory");
        }
#else
        (void)dst, (void)a0, (void)a1, (void)a2, (void)a3, (void)xch, (void)rank, (void)S4;
#endif
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (xch) {
        cl_sync();  // every rank's slices have landed in their owners' xch
        for (int k = threadIdx.x; k < S4; k += NT) {
            float4 t = make_float4(0.f, 0.f, 0.f, 0.f);
            for (int r = 0; r < CL_CS; r++) {
                const float4 v = reinterpret_cast<const float4 *>(xch)[r * S4 + k];
                t.x += v.x, t.y += v.y, t.z += v.z, t.w += v.w;
            }
            asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(dst + (size_t)((int)rank * S4 + k) * 4),
                         "f"(t.x), "f"(t.y), "f"(t.z), "f"(t.w)
                         : "memory");
        }
    }
#endif
}

// this step's attention for the rank's positions [p0, p1) of kv head h (queries qs, G x hd) into res
// (G x (hd + 2): m in log2 units, l, acc), in passes of at most 4 query heads
template <typename KT>
__device__ __noinline__ void cl_attend(const Params &P, const KT *Kl, const KT *Vl, int p0, int p1, const float *qs,
                                       float *pm, float *res) {
    const int hd = P.hd, G = P.nh / P.nkv, stride = hd + 2;
    for (int g0 = 0; g0 < G; g0 += 4) {
        const int gs = G - g0 < 4 ? G - g0 : 4;
        const float *qg = qs + g0 * hd;
        float *rg = res + (size_t)g0 * stride;
        switch (gs) {
        case 1: att_pass<1, 4, KT>(P, Kl, Vl, p0, p1, qg, pm, rg); break;
        case 2: att_pass<2, 4, KT>(P, Kl, Vl, p0, p1, qg, pm, rg); break;
        case 3: att_pass<3, 2, KT>(P, Kl, Vl, p0, p1, qg, pm, rg); break;
        default: att_pass<4, 2, KT>(P, Kl, Vl, p0, p1, qg, pm, rg); break;
        }
    }
}

// CLPF: L2 prefetch of rows [q0, q1) of a kv head's K and V cache (Kl, Vl: its row 0; hd elements a row),
// in 32 KB pieces issued by the threads of warps 1.. (warp 0's thread 0 polls the layer's counter); pieces
// past the block's threads (over 3.5 MB of K and of V, far beyond decode_cl's bound) are left out: a hint.
// Plain (evict-normal) prefetches: the rows are read this layer, unlike the evict-first weights.
template <typename KT>
__device__ __noinline__ void cl_kv_prefetch(const KT *Kl, const KT *Vl, int hd, int q0, int q1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const size_t n = (size_t)(q1 - q0) * hd * sizeof(KT), piece = 32768;
    const int np = (int)((n + piece - 1) / piece), t = (int)threadIdx.x - 32;
    if (t < 0 || t >= 2 * np) return;
    const char *base = reinterpret_cast<const char *>((t & 1) ? Vl : Kl) + (size_t)q0 * hd * sizeof(KT);
    const size_t off = (size_t)(t >> 1) * piece, len = n - off < piece ? n - off : piece;
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(base + off), "r"((unsigned)len) : "memory");
#else
    (void)Kl, (void)Vl, (void)hd, (void)q0, (void)q1;
#endif
}

// The o tile's matvec: out[r] = W[r, :] . x for r < rows, W (rows, cols) bf16 in shared memory (ws,
// row-major), x (cols floats, 16-byte aligned) in shared memory. matvec gives each row a warp and a
// 5-shuffle reduction; the tile's rows are short (0.6B: 256 columns, one 16-byte load per lane), so
// that was ~16 dependent (load, reduce) rounds per warp (block 0's profile: 7.2 us for 64 KB, run 1
// of session 30). Here TPR = cols / 32 threads share a row, each with 4 of its 16-byte words
// (interleaved: consecutive threads read consecutive words, no bank conflicts) and the matching 32
// floats of x in registers, loaded once; a row costs log2(TPR) shuffles. false: the shape does not
// fit (cols not a multiple of 32 with a power-of-two TPR <= 32); the caller uses matvec.
__device__ __noinline__ bool cl_omv(const uint4 *ws, int rows, int cols, const float *x, float *out) {
    const int n8 = cols >> 3, tpr = n8 >> 2;
    if ((cols & 31) || tpr < 1 || tpr > 32 || (tpr & (tpr - 1))) return false;
    const int sub = (int)threadIdx.x & (tpr - 1), rg = (int)threadIdx.x / tpr, nrg = NT / tpr;
    float xr[4][8];
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x + 8 * (sub + k * tpr));
        const float4 a = x4[0], b = x4[1];
        xr[k][0] = a.x, xr[k][1] = a.y, xr[k][2] = a.z, xr[k][3] = a.w;
        xr[k][4] = b.x, xr[k][5] = b.y, xr[k][6] = b.z, xr[k][7] = b.w;
    }
    // trip counts are warp-uniform (the shuffles take the whole warp): rows past the end compute on row 0
    for (int r0 = 0; r0 < rows; r0 += nrg) {
        const int r = r0 + rg, rr = r < rows ? r : 0;
        const uint4 *w = ws + (size_t)rr * n8 + sub;
        const uint4 w0 = w[0], w1 = w[tpr], w2 = w[2 * tpr], w3 = w[3 * tpr];
        float a = dot8r(w0, xr[0]) + dot8r(w1, xr[1]) + (dot8r(w2, xr[2]) + dot8r(w3, xr[3]));
        for (int o = tpr >> 1; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
        if (sub == 0 && r < rows) out[r] = a;
    }
    return true;
}

template <typename KT>
__global__ void __launch_bounds__(NT, 1) decode_cl(const __grid_constant__ Params P) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // (the out-of-line callees read Params through this shared copy, as in decode_df; its x is the
    // lm_head's input and the embedding's target, rm[L-1])
    __shared__ Params sP;
    if (threadIdx.x == 0) {
        sP = P;
        sP.x = P.rm + (size_t)(P.n_layers - 1) * P.hidden;
    }
    extern __shared__ __align__(128) unsigned char dsm[];
    __shared__ float red[NT / 32 * 2 > 32 ? NT / 32 * 2 : 32];
    __shared__ __align__(8) unsigned long long s_mb[2];
    const Params &Ps = sP;
    const int H = P.hidden, I = P.inter, Lc = P.n_layers, hd = P.hd, G = P.nh / P.nkv, GQ = G * hd;
    const int RR = (G + 2) * hd / CL_CS, HR = H / CL_CS;
    const unsigned GB = gridDim.x;
    const int rank = (int)cl_rank(), cid = (int)cl_id();
    const bool att = cid < P.nkv;  // this cluster owns kv head cid
    const bool regx = P.opt & OPT_REGX, normw = P.opt & OPT_NORMW;
    WStage S;
    S.mb = s_mb;
    S.iss = (P.opt & OPT_ISSW) ? 32 : 0;
    for (int k = 0; k < 2; k++) S.phase[k] = 0, S.pend[k] = 0;
    S.cap[0] = P.wbuf, S.cap[1] = P.wbuf1;
    S.buf[0] = reinterpret_cast<uint4 *>(dsm);
    S.buf[1] = reinterpret_cast<uint4 *>(dsm + P.wbuf);
    float *sm = reinterpret_cast<float *>(dsm + (size_t)P.wbuf + P.wbuf1);
    // this block's MLP pairs [c0, c1): the even split, or (P.clna) clna pairs for each attention block
    // and the rest split over the others
    int c0, c1;
    if (P.clna > 0) {
        const int nA = P.nkv * CL_CS, na = P.clna;
        if (att) {
            c0 = (cid * CL_CS + rank) * na, c1 = c0 + na;
        } else {
            block_rows(I - nA * na, (cid - P.nkv) * CL_CS + rank, (int)GB - nA, c0, c1);
            c0 += nA * na, c1 += nA * na;
        }
    } else {
        block_rows(I, blockIdx.x, GB, c0, c1);
    }
    const int nc = c1 - c0;
    const ClSm L_ = cl_sm_layout(H, P.nh, P.nkv, hd, P.clnc > 0 ? P.clnc : (I + GB - 1) / GB, 0);
    float *xs = sm + L_.xs, *g2 = sm + L_.g2, *hh = sm + L_.h, *qv = sm + L_.qv, *qg = sm + L_.qg;
    float *qs = sm + L_.qs, *res = sm + L_.res, *px = sm + L_.px, *pm = sm + L_.pm, *attv = sm + L_.attv;
    float *ot = sm + L_.ot, *pw = sm + L_.pw;
    if (threadIdx.x == 0) {
        for (int k = 0; k < 2; k++) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(s_mb + k)) : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        lm_ring_init(P);  // the lm_head ring (P.lmring rows x P.lmns slots from buffer 1 on; 0: streamed)
    }
    wpol_init(P);
    sprof_begin(P);
    __syncthreads();
    cl_sync();  // every block of the cluster has started before any addresses its shared memory
    unsigned *cE = P.flg + (size_t)Lc * 5;
    const unsigned nATT = (unsigned)P.nkv * CL_CS;
    // MQ_CUDA_PROFILE: per-block stamps of stage instance k = step (2 L + 2) + (2 l: attention half, 2 l + 1:
    // MLP half, 2 L: the lm_head's rows, 2 L + 1: from there to the end of lm_step, which in the last block
    // includes the token's choice and the embedding), e = 0 when its inputs are ready, 1 when it published
    // (gpu.cu's cl_profile)
    auto stamp = [&](int step, int k, int e) -> unsigned long long * {
        const int ki = step * (2 * Lc + 2) + k;
        if (!P.prof || ki >= P.prof_k) return nullptr;
        return P.prof + ((size_t)(2 * ki + e) * GB + blockIdx.x);
    };
    auto stamp_now = [&](unsigned long long *t) {
        if (t && threadIdx.x == 0) *t = globaltimer();
    };
    // the copies of layer l's stages for this block
    auto copy_a = [&](int l) {  // buffer 0's first stage: q|k|v (attention blocks) or gate|up
        if (att) return cl_qkv_copy(P, l, cid, rank);
        return cl_one(P.layers[l].gu + (size_t)2 * c0 * H, (size_t)2 * nc * H * 2);
    };
    auto copy_b = [&](int l) {  // buffer 1's first stage: the o tile (attention blocks) or down
        if (att) return cl_one(P.ob + (((size_t)l * P.nkv + cid) * CL_CS + rank) * (size_t)HR * GQ, (size_t)HR * GQ * 2);
        return cl_one(P.layers[l].down + (size_t)c0 * H, (size_t)nc * H * 2);
    };
    if (blockIdx.x == 0) {
        embed(Ps, P.ids ? P.ids[0] : P.first);
        df_arrive(cE, nullptr);
    }
    cl_issue(S, 0, copy_a(0));
    cl_issue(S, 1, copy_b(0));

    bool stopped = false;
    for (int step = 0; step < P.n && !stopped; step++) {
        const int pos = P.pos + step, len = pos + 1;
        const bool more = step + 1 < P.n;
        const unsigned ts = (unsigned)step + 1;
        const bool need_lm = !P.ids || P.logits_all || step == P.n - 1;
        // the lm_head ring covers buffer 1: its next copy (layer 0's) waits until after the lm_head
        const bool lmring = need_lm && P.lmring > 0 && P.lmns >= 2;
        for (int l = 0; l < Lc; l++) {
            const LayerW Lw = P.layers[l];
            unsigned *cA = P.flg + (size_t)l * 5, *cM = cA + 1;
            const float *xin = P.rm + (size_t)(l > 0 ? l - 1 : Lc - 1) * H;  // this layer's input
            float *ra = P.ra + (size_t)l * H, *rm = P.rm + (size_t)l * H;
            // next stage weights: layer l + 1, or the next step's layer 0, or none
            const int ln = l + 1 < Lc ? l + 1 : more ? 0 : -1;
            if (l == 0) {  // every block: the embedding (and a stop token) of this step
                df_wait(P, cE, ts, nullptr);
                if (__ldcg(reinterpret_cast<const int *>(P.ctl)) != 0) {
                    stopped = true;
                    break;
                }
            }
            // ---- attention half (clusters that own a kv head)
            if (att) {
                // the head prep's q / k norm weights and this position's RoPE row (3 hd floats, pw): loaded
                // before the wait, stored after it (they do not depend on it; off the prep's critical path)
                float4 pwv = make_float4(0.f, 0.f, 0.f, 0.f);
                const int t4 = threadIdx.x, h4 = hd / 4;
                if (t4 < 3 * h4) {
                    const float *src = t4 < h4 ? Lw.q_norm + 4 * t4 : t4 < 2 * h4 ? Lw.k_norm + 4 * (t4 - h4)
                                                                    : P.rope + (size_t)pos * hd + 4 * (t4 - 2 * h4);
                    pwv = __ldg(reinterpret_cast<const float4 *>(src));
                }
                // CLPF: the rank's rows of earlier positions (this one's is not written yet) of this layer (1), or
                // of the next (2; layer 0's at layer 0), so that the attention loop reads them from L2
                const int lp = P.clpf == 2 && l > 0 ? l + 1 : l;
                if (P.clpf && lp < Lc) {
                    const int q0 = (int)((long long)len * rank / CL_CS);
                    const int q1 = min((int)((long long)len * (rank + 1) / CL_CS), pos);
                    if (q1 > q0) cl_kv_prefetch<KT>(kv_rows<KT>(P.kc, P, lp, cid), kv_rows<KT>(P.vc, P, lp, cid), hd, q0, q1);
                    if (P.clpf == 2 && l == 0 && q1 > q0)
                        cl_kv_prefetch<KT>(kv_rows<KT>(P.kc, P, 1, cid), kv_rows<KT>(P.vc, P, 1, cid), hd, q0, q1);
                }
                if (l > 0) df_wait(P, cM - 5, GB * ts, nullptr);
                stamp_now(stamp(step, 2 * l, 0));
                if (t4 < 3 * h4) reinterpret_cast<float4 *>(pw)[t4] = pwv;  // (read after load_norm's __syncthreads)
                sprof_mark(P, CLP_AWAIT);
                if (blockIdx.x == 0) {  // ra[l-1]'s readers (MLP half l-1) are done; its next atomics come after our arrivals
                    float *z = P.ra + (size_t)(l > 0 ? l - 1 : Lc - 1) * H;
                    for (int i = threadIdx.x; i < H; i += NT) z[i] = 0.0f;
                }
                // cluster 0 adds the layer input to its o_proj rows (the residual), loaded with the norm's loads
                const float xr = cid == 0 && (int)threadIdx.x < HR ? __ldcg(xin + (size_t)rank * HR + threadIdx.x) : 0.0f;
                load_norm(xin, Lw.in_norm, H, P.eps, xs, red, normw);
                sprof_mark(P, CLP_NORM);
                const uint4 *wq = ws_take(S, 0);
                if (!wq) __trap();  // the host admitted decode_cl only where every slice is staged
                sprof_mark(P, CLP_QW);
                matvec<MV_SMEM>(Lw.qkv, RR, H, xs, qv, red, nullptr, wq, 0, RR, nullptr, 0, nullptr, regx);
                __syncthreads();
                const ClCopy cgu = cl_one(Lw.gu + (size_t)2 * c0 * H, (size_t)2 * nc * H * 2);
                if (P.clgu == 0) cl_issue(S, 0, cgu);  // buffer 0 read (else later: MQ_CUDA_CLGU)
                sprof_mark(P, CLP_QMV);
                cl_bcast(qv, qg + rank * RR, RR / 4);
                cl_sync();
                sprof_mark(P, CLP_GATH);
                // q heads -> qs in every rank; this position's K and V rows by the last rank, whose
                // positions end with this one (it reads them back from the cache after the barrier)
                KT *Kl = kv_rows<KT>(P.kc, P, l, cid), *Vl = kv_rows<KT>(P.vc, P, l, cid);
                const int warp = threadIdx.x >> 5, ntask = G + (rank == CL_CS - 1 ? 2 : 0);
                for (int t = warp; t < ntask; t += NT / 32) {
                    const float2 *cs = reinterpret_cast<const float2 *>(pw + 2 * hd);
                    if (t < G) cl_prep_head<KT>(Ps, qg + t * hd, pw, cs, qs + t * hd, nullptr);
                    else if (t == G) cl_prep_head<KT>(Ps, qg + GQ, pw + hd, cs, nullptr, Kl + (size_t)pos * hd);
                    else cl_prep_head<KT>(Ps, qg + GQ + hd, nullptr, nullptr, nullptr, Vl + (size_t)pos * hd);
                }
                __syncthreads();
                if (P.clgu == 1) cl_issue(S, 0, cgu);
                sprof_mark(P, CLP_PREP);
                const int p0 = (int)((long long)len * rank / CL_CS), p1 = (int)((long long)len * (rank + 1) / CL_CS);
                cl_attend<KT>(Ps, Kl, Vl, p0, p1, qs, pm, res);
                sprof_mark(P, CLP_ATT);
                cl_bcast(res, px + rank * L_.pxs, L_.pxs / 4);
                cl_sync();
                sprof_mark(P, CLP_XCH);
                // combine the ranks' partials (m = -inf: no positions); the last rank has this one
                for (int t = threadIdx.x; t < GQ; t += NT) {
                    const int g = t / hd, d = t % hd;
                    float M = -INFINITY;
                    for (int r = 0; r < CL_CS; r++) M = fmaxf(M, px[r * L_.pxs + g * (hd + 2)]);
                    float Ls = 0.0f, A = 0.0f;
                    for (int r = 0; r < CL_CS; r++) {
                        const float *e = px + r * L_.pxs + g * (hd + 2);
                        if (e[0] == -INFINITY) continue;
                        const float w = exp2f(e[0] - M);
                        Ls += e[1] * w;
                        A += e[2 + d] * w;
                    }
                    attv[t] = A / Ls;
                }
                __syncthreads();
                sprof_mark(P, CLP_COMB);
                const uint4 *wo = ws_take(S, 1);
                if (!wo) __trap();
                sprof_mark(P, CLP_OW);
                if (!cl_omv(wo, HR, GQ, attv, ot))
                    matvec<MV_SMEM>(Lw.o, HR, GQ, attv, ot, red, nullptr, wo, 0, HR, nullptr, 0, nullptr, false);
                sprof_mark(P, CLP_OMV0);
                __syncthreads();
                sprof_mark(P, CLP_OSYNC);
                cl_issue(S, 1, cl_one(Lw.down + (size_t)c0 * H, (size_t)nc * H * 2));  // buffer 1 read
                if (P.clgu >= 2) cl_issue(S, 0, cgu);
                sprof_mark(P, CLP_OMV);
                if ((int)threadIdx.x < HR)
                    asm volatile("red.global.add.f32 [%0], %1;" ::"l"(ra + (size_t)rank * HR + threadIdx.x),
                                 "f"(ot[threadIdx.x] + xr)
                                 : "memory");
                df_arrive(cA, stamp(step, 2 * l, 1));
                sprof_mark(P, CLP_APUB);
            }
            // ---- MLP half (every block)
            df_wait(P, cA, nATT * ts, stamp(step, 2 * l + 1, 0));
            sprof_mark(P, CLP_MWAIT);
            if (blockIdx.x == GB - 1) {  // rm[l-1]'s readers (attention half l) are done
                float *z = P.rm + (size_t)(l > 0 ? l - 1 : Lc - 1) * H;
                for (int i = threadIdx.x; i < H; i += NT) z[i] = 0.0f;
            }
            load_norm(ra, Lw.post_norm, H, P.eps, xs, red, normw);
            sprof_mark(P, CLP_MNORM);
            if (nc > 0) {
                const uint4 *wg = ws_take(S, 0);
                if (!wg) __trap();
                sprof_mark(P, CLP_GW);
                matvec<MV_SMEM>(Lw.gu, 2 * nc, H, xs, g2, red, nullptr, wg, 0, 2 * nc, nullptr, 0, nullptr, regx);
                __syncthreads();
                if (ln >= 0) cl_issue(S, 0, copy_a(ln));  // buffer 0 read
                sprof_mark(P, CLP_GMV);
                for (int j = threadIdx.x; j < nc; j += NT) {
                    const float gt = g2[2 * j], up = g2[2 * j + 1];
                    hh[j] = gt / (1.0f + expf(-gt)) * up;
                }
                __syncthreads();
                sprof_mark(P, CLP_SILU);
                const uint4 *wd = ws_take(S, 1);
                if (!wd) __trap();
                sprof_mark(P, CLP_DW);
                cl_down(reinterpret_cast<const uint2 *>(wd), nc, hh, H, rm, blockIdx.x == 0 ? ra : nullptr,
                        P.clred ? px : nullptr, (unsigned)rank);
                sprof_mark(P, CLP_DMV);
            } else {
                if (ln >= 0) cl_issue(S, 0, copy_a(ln));  // (no pairs: buffer 0 holds no gate|up copy)
                // (the host admits no grid with more blocks than pairs; the cluster sum's barrier anyway)
                if (P.clred) cl_down(nullptr, 0, hh, H, rm, blockIdx.x == 0 ? ra : nullptr, px, (unsigned)rank);
            }
            df_arrive(cM, stamp(step, 2 * l + 1, 1));  // (its __syncthreads: buffer 1's readers are done)
            if (ln >= 0 && !(lmring && l == Lc - 1)) cl_issue(S, 1, copy_b(ln));
            sprof_mark(P, CLP_MPUB);
        }
        if (stopped) break;
        // ---- lm_head + argmax over all blocks; the last block embeds the next token into rm[L-1]
        unsigned *cl = P.flg + (size_t)(Lc - 1) * 5 + 1;
        if (need_lm) {
            if (lmring) lm_ring_prime(Ps, sm);  // its first chunks do not wait for the last layer
            df_wait(P, cl, GB * ts, stamp(step, 2 * Lc, 0));
            bool last;
            unsigned long long *rows_done = stamp(step, 2 * Lc, 1);
            if (lmring) last = lm_step<true>(Ps, step, more, sm, red, rows_done);
            else last = lm_step<false>(Ps, step, more, sm, red, rows_done);
            if (rows_done && threadIdx.x == 0) *stamp(step, 2 * Lc + 1, 0) = *rows_done;
            stamp_now(stamp(step, 2 * Lc + 1, 1));
            if (last && more) df_arrive(cE, nullptr);
            // the ring's copies have all landed and been read (lm_step's last __syncthreads)
            if (lmring && more) cl_issue(S, 1, copy_b(0));
        } else if (blockIdx.x == 0) {
            df_wait(P, cl, GB * ts, nullptr);
            if (threadIdx.x == 0) P.ctl[1] = step + 1;
            embed(Ps, P.ids[step + 1]);
            df_arrive(cE, nullptr);
        }
        sprof_mark(P, CLP_LM);
    }
    // no bulk copy may still be writing this block's shared memory when it exits, and no block may
    // leave while another of its cluster could still address its shared memory
    ws_take(S, 0);
    ws_take(S, 1);
    lm_ring_drain(Ps);
    sprof_end(P);
    cl_sync();
#else
    (void)P;
    __trap();  // the host launches decode_cl on sm_90 only
#endif
}

}  // namespace mqk

#endif
