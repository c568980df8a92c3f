// prefill_gemm.cuh: the prefill's GEMM plumbing: cuBLASLt plans, mm (which GEMM runs a layer
// product: sgemm, cuBLASLt, K-concatenated (kcat) or with a bf16 lo product (lo16)), and the weight
// copies those need (f16 for MQ_PREFILL_F16G, [W | W] for kcat).
// Part of the prefill's one translation unit: prefill.cu includes it inside its anonymous namespace,
// after mqp_state and the row-wise kernels.
#ifndef MQ_PREFILL_GEMM_CUH
#define MQ_PREFILL_GEMM_CUH

// f16 copies of up to four bf16 weight matrices (segment k: n[k] elements of a[k] into b[k]); bf16 ->
// f16 is exact for |w| in [6.1e-5, 65504] (f16 keeps 3 more significand bits), smaller weights
// become f16 subnormals (absolute error <= 3e-8)
struct W2H {
    const __nv_bfloat16 *a[4];
    __half *b[4];
    size_t n[4];
};
__global__ void w2h_k(W2H w) {
    pdl_wait();
    pdl_trigger();
    for (int k = 0; k < 4; k++) {
        const size_t n8 = w.n[k] / 8;  // (every matrix has a multiple of 8 elements: rows of hidden / inter)
        const uint4 *src = reinterpret_cast<const uint4 *>(w.a[k]);
        uint4 *dst = reinterpret_cast<uint4 *>(w.b[k]);
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += (size_t)gridDim.x * blockDim.x) {
            uint4 v = __ldg(src + i);
            uint32_t *u = reinterpret_cast<uint32_t *>(&v);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const __half2 h = __float22half2_rn(__bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&u[j])));
                u[j] = *reinterpret_cast<const uint32_t *>(&h);
            }
            dst[i] = v;
        }
    }
}

// [W | W]: each of `rows` rows of len elements written twice, side by side (dst (rows, 2 len)); the
// transposed down (one row of its I x H elements) becomes two copies one after the other.
__global__ void ww_k(const __nv_bfloat16 *__restrict__ src, __nv_bfloat16 *__restrict__ dst, size_t rows, size_t len) {
    if (len % 8 == 0) {  // 16-byte pieces
        const size_t l8 = len / 8, n = rows * l8;
        const uint4 *s4 = reinterpret_cast<const uint4 *>(src);
        uint4 *d4 = reinterpret_cast<uint4 *>(dst);
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
            const size_t r = i / l8, j = i % l8;
            const uint4 v = s4[i];
            d4[r * 2 * l8 + j] = v;
            d4[r * 2 * l8 + l8 + j] = v;
        }
        return;
    }
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < rows * len; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / len, j = i % len;
        dst[r * 2 * len + j] = dst[r * 2 * len + len + j] = src[i];
    }
}

// ---- cuBLASLt: D (m x n, col-major, fp32) = op(A) (m x k, bf16) * B (k x n, bf16) + beta * D.
// Row-major views: weights W (N, K) row-major are A col-major (K x N) with op T; activations
// X (T, K) row-major are B col-major (K x T); the output Y (T, N) row-major is D col-major (N x T).
int get_plan(mqp_state *S, int opA_t, int m, int n, int k, int lda, int ldc, int beta1, int f16, int d16, Plan **out) {
    for (int i = 0; i < NPLAN; i++) {
        Plan *p = &S->plan[i];
        if (p->used && p->opA_t == opA_t && p->m == m && p->n == n && p->k == k && p->lda == lda && p->ldc == ldc &&
            p->beta1 == beta1 && p->f16 == f16 && p->d16 == d16) {
            *out = p;
            return 0;
        }
    }
    Plan *p = &S->plan[S->next_plan];
    S->next_plan = (S->next_plan + 1) % NPLAN;
    if (p->used) {
        cublasLtMatmulDescDestroy(p->op);
        cublasLtMatrixLayoutDestroy(p->la);
        cublasLtMatrixLayoutDestroy(p->lb);
        cublasLtMatrixLayoutDestroy(p->lc);
        p->used = 0;
    }
    LCK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = opA_t ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
    LCK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LCK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    const cudaDataType_t it = f16 ? CUDA_R_16F : CUDA_R_16BF;
    LCK(cublasLtMatrixLayoutCreate(&p->la, it, opA_t ? k : m, opA_t ? m : k, lda));
    LCK(cublasLtMatrixLayoutCreate(&p->lb, it, k, n, k));
    LCK(cublasLtMatrixLayoutCreate(&p->lc, d16 ? CUDA_R_16BF : CUDA_R_32F, m, n, ldc));
    cublasLtMatmulPreference_t pref;
    LCK(cublasLtMatmulPreferenceCreate(&pref));
    size_t wsb = WS_BYTES;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb);
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    cublasStatus_t e =
        cublasLtMatmulAlgoGetHeuristic(S->lt, p->op, p->la, p->lb, p->lc, p->lc, pref, 1, &res, &nres);
    cublasLtMatmulPreferenceDestroy(pref);
    if (e != CUBLAS_STATUS_SUCCESS || nres < 1) {
        mq_err_set("cuda prefill: cuBLASLt has no algorithm for a %d x %d x %d %s GEMM%s (status %d)", m, n, k,
                   f16 ? "f16" : "bf16", d16 ? " with a bf16 output" : "", (int)e);
        cublasLtMatmulDescDestroy(p->op);
        cublasLtMatrixLayoutDestroy(p->la);
        cublasLtMatrixLayoutDestroy(p->lb);
        cublasLtMatrixLayoutDestroy(p->lc);
        return -1;
    }
    p->algo = res.algo;
    p->opA_t = opA_t, p->m = m, p->n = n, p->k = k, p->lda = lda, p->ldc = ldc, p->beta1 = beta1, p->f16 = f16;
    p->d16 = d16;
    p->used = 1;
    *out = p;
    return 0;
}

// (A and B: bf16, or f16 when f16; passed as untyped device pointers to cuBLASLt either way; D f32, or
// bf16 when d16)
int gemm(mqp_state *S, int opA_t, const void *A, int lda, const void *B, void *D, int m, int n, int k, float beta,
         cudaStream_t s, int f16 = 0, int d16 = 0) {
    Plan *p;
    if (get_plan(S, opA_t, m, n, k, lda, m, beta != 0.0f, f16, d16, &p)) return -1;
    const float alpha = 1.0f;
    LCK(cublasLtMatmul(S->lt, p->op, &alpha, A, p->la, B, p->lb, &beta, D, p->lc, D, p->lc, &p->algo, S->ws, WS_BYTES,
                       s));
    return 0;
}

// D (=|+=) A . (Bhi + Blo): the lo half (B + lo_off) adds a second GEMM when split.
int gemm2(mqp_state *S, int opA_t, const __nv_bfloat16 *A, int lda, const __nv_bfloat16 *B, size_t lo_off, float *D,
          int m, int n, int k, float beta, cudaStream_t s) {
    if (gemm(S, opA_t, A, lda, B, D, m, n, k, beta, s)) return -1;
    return S->split ? gemm(S, opA_t, A, lda, B + lo_off, D, m, n, k, 1.0f, s) : 0;
}

// D = A . B for B of T rows, or of 2T rows (hi then lo) when split: D (S2 x T, m), beta 0.
int gemmx(mqp_state *S, int opA_t, const __nv_bfloat16 *A, int lda, const __nv_bfloat16 *B, float *D, int m, int T,
          int k, cudaStream_t s) {
    return gemm(S, opA_t, A, lda, B, D, m, S->split ? 2 * T : T, k, 0.0f, s);
}

// K slabs sgemm takes for an (N, K) layer GEMM of T rows whose output has room for cap_rows rows;
// 0: cuBLASLt (not enabled, too many rows, a shape sgemm does not take, or no room for the slabs).
int sg_ks(mqp_state *S, int N, int K, int T, size_t cap_rows) {
    if (!(S->sg & 1) || T > SGEMM_MAXT || (S->sg_nmax > 0 && N > S->sg_nmax)) return 0;
    int kmin = 0, ks = sgemm_slabs(N, K, T, S->sms, &kmin);
    const int nb = N / sgt::FB;
    if (S->sgwave && ks > 0 && nb * ks > S->sms && S->sms / nb >= kmin) ks = S->sms / nb;  // one wave
    if (ks > 0 && (size_t)ks * T > cap_rows) ks = (size_t)kmin * T <= cap_rows ? (int)(cap_rows / T) : 0;
    return ks;
}

// D = X W^T for the T rows of X (its hi then lo rows when split), W (N, K), as *ns slabs of (T, N)
// f32 each (T * N floats apart) that the kernel reading D sums: sgemm (the lo rows folded into each
// slab, K split into slabs) or cuBLASLt (split: the hi and lo halves are two slabs). g: which layer
// GEMM (0 q|k|v, 1 o, 2 gate|up, 3 down) for MQ_PREFILL_NOLO.
// Wh (not nullptr): W's f16 copy, X's T rows are f16 (f16 GEMM inputs, one product; see f16g).
// wt: W is stored (K, N) row-major instead (the fused decode MLP's transposed down; no Wh, no NOLO).
// l16 (not nullptr: the consumer takes it): where cuBLASLt runs a split GEMM and S->lo16, the lo half's
// product as bf16 (T, N) in slab 1's place, *l16 pointing at it and *ns = 1 (the hi slab); *l16 is
// nullptr otherwise.
// ww (not nullptr: layer() chose kcat for this GEMM and X's rows are [hi | lo], (T, 2K)): one GEMM
// of depth 2K against W's [W | W] copy, one f32 slab.
int mm(mqp_state *S, const __nv_bfloat16 *W, int N, int K, const __nv_bfloat16 *X, float *D, int T, size_t cap_rows,
       int *ns, cudaStream_t s, int g, const __half *Wh = nullptr, int wt = 0, SgPf pf = SgPf{},
       const __nv_bfloat16 **l16 = nullptr, const __nv_bfloat16 *ww = nullptr) {
    if (l16) *l16 = nullptr;
    const bool skip = S->skip >> (g == 0 ? 1 : g == 1 ? 4 : g == 2 ? 6 : 8) & 1;  // MQ_PREFILL_SKIP's bit
    if (ww) {
        *ns = 1;
        if (skip) return 0;
        // wt: [W | W] of the (K, N) row-major W is (N x 2K) col-major, lda N; else (2K x N) with op T
        return wt ? gemm(S, 0, ww, N, X, D, N, T, 2 * K, 0.0f, s) : gemm(S, 1, ww, 2 * K, X, D, N, T, 2 * K, 0.0f, s);
    }
    const bool lo16 = l16 && S->split && S->lo16 > 0 && T >= S->lo16 && !Wh && !wt && !(S->nolo >> g & 1) &&
                      sg_ks(S, N, K, T, cap_rows) == 0;
    if (skip) {  // MQ_PREFILL_SKIP: the slab count only
        const int ks = Wh ? 0 : sg_ks(S, N, K, T, cap_rows);
        *ns = Wh || lo16 ? 1 : ks > 0 ? ks : S->split ? 2 : 1;
        if (lo16) *l16 = reinterpret_cast<const __nv_bfloat16 *>(D + (size_t)T * N);
        return 0;
    }
    if (lo16) {  // two GEMMs: X's hi rows into slab 0 (f32), its lo rows into slab 1's place as bf16
        __nv_bfloat16 *dl = reinterpret_cast<__nv_bfloat16 *>(D + (size_t)T * N);
        if (gemm(S, 1, W, K, X, D, N, T, K, 0.0f, s)) return -1;
        if (gemm(S, 1, W, K, X + (size_t)T * K, dl, N, T, K, 0.0f, s, 0, 1)) return -1;
        *ns = 1;
        *l16 = dl;
        return 0;
    }
    if (Wh) {
        *ns = 1;
        return gemm(S, 1, Wh, K, X, D, N, T, K, 0.0f, s, 1);
    }
    const int ks = sg_ks(S, N, K, T, cap_rows);
    const int kw = ks > 0 && !wt && S->sg_wide ? sgemm_slabs_wide(N, K, T, S->sms, S->sg_wide > 1) : 0;
    if (kw > 0 && (size_t)kw * T <= cap_rows) {  // MQ_PREFILL_SGFB=64: 64-feature blocks
        PCK(sgemm_run_wide(W, N, K, X, T, S->split, D, kw, S->pdl, s, pf));
        *ns = kw;
        return 0;
    }
    if (ks > 0) {
        PCK(sgemm_run(W, N, K, X, T, S->split, D, ks, S->pdl, s, wt, pf));
        *ns = ks;
        return 0;
    }
    if (wt) {  // cuBLASLt: W (K, N) row-major is A (N x K) col-major, no transpose
        *ns = S->split ? 2 : 1;
        return gemmx(S, 0, W, N, X, D, N, T, K, s);
    }
    if (S->split && (S->nolo >> g & 1)) {  // the hi rows only
        *ns = 1;
        return gemm(S, 1, W, K, X, D, N, T, K, 0.0f, s);
    }
    *ns = S->split ? 2 : 1;
    return gemmx(S, 1, W, K, X, D, N, T, K, s);
}

// Layer l's [W | W] copy of GEMM g (0 q|k|v, 2 gate|up, 3 down, as mm's g) in S->ww: the layer's
// copies one after the other in that order (the one place that knows the layout).
__nv_bfloat16 *ww_mat(const mqp_state *S, int l, int g) {
    const size_t H = S->H, I = S->I, nq = (size_t)(S->qd + 2 * S->kvd);
    __nv_bfloat16 *d = S->ww + S->ww_layer * l;
    return g == 0 ? d : g == 2 ? d + 2 * nq * H : d + 2 * nq * H + 4 * I * H;
}

// The [W | W] copies of every layer's q|k|v, gate|up and down (kcat), built once on stream s. 1: built
// (or already there); 0: no GPU memory for them (kcat is then turned off); -1: a launch failed.
int ww_build(mqp_state *S, const Params *P, cudaStream_t s) {
    if (S->ww) return 1;
    const size_t H = S->H, I = S->I, nq = (size_t)(S->qd + 2 * S->kvd);
    S->ww_layer = 2 * (nq * H + 2 * I * H + H * I);  // (ww_mat's three copies)
    const size_t bytes = S->ww_layer * S->L * sizeof(__nv_bfloat16);
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess || fr < bytes + ((size_t)1 << 30) ||
        cudaMalloc((void **)&S->ww, bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        S->ww = nullptr;
        S->kcat = 0;
        return 0;
    }
    for (int l = 0; l < S->L; l++) {
        const LayerW &W = S->hl[l];
        PCK(pdl_launch(0, ww_k, dim3(2 * S->sms), dim3(256), 0, s, W.qkv, ww_mat(S, l, 0), nq, H));
        PCK(pdl_launch(0, ww_k, dim3(2 * S->sms), dim3(256), 0, s, W.gu, ww_mat(S, l, 2), 2 * I, H));
        // the down projection: (I, H) row-major when the decode kernel fuses the MLP (two copies of the
        // whole matrix, the col-major [W | W]), else (H, I) (rows doubled)
        PCK(pdl_launch(0, ww_k, dim3(2 * S->sms), dim3(256), 0, s, W.down, ww_mat(S, l, 3), P->fuse ? 1 : H,
                       P->fuse ? I * H : I));
    }
    return 1;
}

#endif
