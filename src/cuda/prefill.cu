// prefill: batched prompt processing on the GPU — GEMMs (cuBLASLt, sgemm) + mma.sync flash attention, KV cache for decode.
//
// A chunk of T prompt tokens (T <= CHUNK) goes through each layer together, so every weight is
// read once per chunk instead of once per token:
//   embed rows -> per layer: RMSNorm rows (bf16 out) -> QKV GEMM (fp32 out) -> per (token, head)
//   q/k RMSNorm + RoPE; q to a bf16 buffer, K/V into the decode kernel's cache at pos+t ->
//   causal flash attention over cache positions [0, pos+t] (bf16 mma.sync, online softmax in fp32,
//   no T x T matrix) -> O GEMM -> residual += O output, RMSNorm (one kernel) -> gate|up GEMM ->
//   SiLU * up (bf16) -> down GEMM (added to the residual by the next layer's input norm)
// then the final RMSNorm + lm_head for the rows whose logits are wanted (sub-chunks of LSUB rows;
// a prompt's last row alone: one streaming GEMV, gemv_head_k, which also flags NaN/inf logits in
// page-locked memory so that the host need not scan them).
// Split bf16: each layer GEMM runs once over 2T columns (hi rows, then lo rows of its input); the
// kernel reading the output adds the two fp32 halves. 8 launches per layer (+1 past position 0; -1
// for a first chunk of <= 16 tokens, whose q/k prep and attention are one kernel, attn_small_k).
// Chunks of <= 64 tokens use sgemm.cu instead of cuBLASLt (hi and lo rows folded into one product,
// K split into slabs that the reading kernel sums the same way), and every kernel of the chain but
// cuBLASLt's is launched with programmatic dependent launch (pdl.cuh).
// Attention (flash2_k): K/V tiles as bf16 hi (+ lo) rows, cp.async double-buffered, ldmatrix
// fragments; an f32 cache is split into bf16 scratch once per layer (rows before the chunk by
// kv_split_k, the chunk's own rows by qk_prep_k). Chunks of <= GMAX tokens replay a CUDA graph.
// Numerics: residual stream and GEMM outputs fp32; GEMM/attention inputs (normed activations,
// q, K/V tiles, softmax probabilities) rounded to bf16 for the tensor cores (see docs/perf-notes.md).
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pdl.cuh"
#include "prefill.cuh"
#include "kvtype.cuh"
#include "sync.cuh"
#include "sgemm.cuh"
#include "sgemm_tile.cuh"

extern "C" {
#include "err.h"
}

using mqk::kv_kind;
using mqk::kv_round;
using mqk::LayerW;
using mqk::ld_f32;
using mqk::Params;
using mqk::st1;

#define PCK(call)                                                                                          \
    do {                                                                                                   \
        cudaError_t e_ = (call);                                                                           \
        if (e_ != cudaSuccess) {                                                                           \
            mq_err_set("cuda prefill: %s:%d: %s: %s", __FILE__, __LINE__, #call, cudaGetErrorString(e_));  \
            return -1;                                                                                     \
        }                                                                                                  \
    } while (0)
#define LCK(call)                                                                                          \
    do {                                                                                                   \
        cublasStatus_t e_ = (call);                                                                        \
        if (e_ != CUBLAS_STATUS_SUCCESS) {                                                                 \
            mq_err_set("cuda prefill: %s:%d: %s: cublasLt status %d", __FILE__, __LINE__, #call, (int)e_); \
            return -1;                                                                                     \
        }                                                                                                  \
    } while (0)

namespace {

constexpr int CHUNK = 2048;           // most tokens per chunk (bounds the scratch buffers)
constexpr int LSUB = 128;             // lm_head rows per sub-chunk (logits buffer LSUB x vocab)
constexpr size_t WS_BYTES = 32 << 20; // cuBLASLt workspace
constexpr int NPLAN = 48;             // cached GEMM plans (shape -> descriptors + algorithm)
constexpr int BQ = 64, BK = 32;       // attention: query rows per block (16 per warp), keys per tile
constexpr int GMAX = 64;              // chunks of at most this many tokens replay a captured CUDA graph
constexpr int ZR_MAX = 4096;          // gemv_head_k's zero copy: most rows per block (shared memory floats)
constexpr int NGRAPH = 16;            // cached graphs, keyed by (chunk length, logit rows: all or the last)
constexpr int NPEV = 1024;            // MQ_PREFILL_PROF: events per run (one after each launch)

struct Plan {
    int used, opA_t, m, n, k, lda, ldc, beta1, f16;  // f16: A and B are f16 (else bf16)
    int d16;  // D is bf16 (else f32): the lo half's product of a split GEMM (lo16)
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
};

// One captured chunk (embed, every layer, final norm + lm_head of its logit rows) for T tokens;
// the token ids and the position are read from device memory written before each replay.
struct Graph {
    int T, r0, nr;         // chunk length; its logit rows [r0, r0 + nr)
    const float *zl;       // the last row's zero-copy destination the graph writes (S->zl at capture)
    int old;               // 1: the chunk starts past position 0 (cache rows before it are converted)
    int state;             // 0 unused, 1 seen once (ordinary launches), 2 captured, 3 capture failed
    cudaGraphExec_t ex;
};

}  // namespace

struct mqp_state {
    int C;                 // chunk capacity in tokens
    int V, H, I, L, nh, nkv, hd, qd, kvd, max_ctx;
    cublasLtHandle_t lt;
    void *ws;              // (WS_BYTES) cuBLASLt workspace
    LayerW *hl;            // (n_layers) host copy of the device layer table
    float *x;              // (C, hidden) residual stream
    int split;             // 1: GEMM/attention inputs as hi + lo bf16 pairs (MQ_PREFILL_PREC=bf16: hi only)
    // Split: a bf16 GEMM input of T rows has its lo rows right after its hi rows ((2T, K) as one B
    // operand), so one GEMM of 2T columns gives W.hi and W.lo; the outputs' two halves (rows [0, T)
    // and [T, 2T), fp32) are summed by the kernel that reads them. S2 = 2 when split, else 1.
    // GEMM outputs hold S2 x C rows: the two halves of a cuBLASLt product, or sgemm's ks slabs of T
    // rows each (ks x T <= S2 x C, checked by sg_ks).
    __nv_bfloat16 *xn;     // (2T, max(hidden, q_dim)) normed rows / attention output (GEMM input)
    float *qkv;            // (S2 x C, q_dim + 2*kv_dim) raw projections (slabs)
    float *dres;           // (S2 x C, hidden) O / down projection (slabs), added to the residual by resid_norm_k
    __nv_bfloat16 *qb;     // 2 x (C, q_dim) normed, roped queries
    float *gu;             // (S2 x C, 2*inter) gate|up (slabs), interleaved as the weights (col 2j gate, 2j+1 up)
    __nv_bfloat16 *h;      // (2T, inter) silu(gate) * up
    float *logits;         // (LSUB, vocab)
    int32_t *dbuf;         // (1 + C) device: [0] the chunk's first position, then its token ids
    int32_t *hbuf;         // (1 + C) host staging for dbuf
    cudaStream_t st;       // every prefill launch (non-blocking; ordered after the caller's stream)
    cudaEvent_t ev;        // orders st after the caller's stream
    int use_graph;         // 0 when MQ_PREFILL_GRAPH=0
    Graph graph[NGRAPH];
    int next_graph;
    int attn_v1;           // MQ_PREFILL_ATTN=1: the first attention kernel (flash_k, K/V converted per block)
    int sms;               // multiprocessors (grid of the K/V conversion, sgemm's slabs)
    int pdl;               // launch the chain's own kernels with programmatic dependent launch (sm_90+; MQ_PREFILL_PDL=0 off)
    int gemv;              // the last row's final norm + lm_head in gemv_head_k (MQ_PREFILL_GEMV=0: the norm
                           // kernel and the sgemm / cuBLASLt lm_head; -15 to -20 us a prompt, run 102)
    int sg;                // sgemm (T <= 64) for 1: the layer GEMMs, 2: the lm_head, 4: SiLU in gate|up's epilogue
                           // (MQ_PREFILL_SGEMM, default 3; 7 loses to cuBLASLt's gate|up, run 103)
    // layer GEMMs with more outputs than this stay on cuBLASLt (MQ_PREFILL_SGNMAX, default 4096: the
    // 0.6B's gate|up, 6,144 outputs in 192 sgemm blocks, is 4% faster on cuBLASLt at 32 tokens and 1%
    // at 8, run 99; 0: every layer GEMM on sgemm)
    int sg_nmax;
    int sgsilu;            // MQ_PREFILL_SGSILU=48: gate|up with SiLU on sgemm_silu48 where it takes the shape
    int sgwave;            // MQ_PREFILL_SGWAVE=1: sgemm's slabs cut to one block per multiprocessor where
                           // about two per SM would leave some with two (the 0.6B's down: 192 -> 128 blocks)
    int prep_v;            // q/k prep by qk_prep_v_k (MQ_PREFILL_PREPV, default 1; 0: qk_prep_k)
    // qk_prep_b_k (4 rows in flight per warp) instead of qk_prep_v_k where the q|k|v product has at
    // most 2 slabs and the chunk has at least prepb tokens (MQ_PREFILL_PREPB=N, default 256; 0: never):
    // 33.9 -> 27.9 us per layer at 2,048-token chunks (run 147), but at 32 tokens its T x 1 blocks
    // (qk_prep_v_k's T x 4) cost +35 us of TTFT (run 148)
    int prepb;
    // split with an f32 cache: how much of the attention is f16 (MQ_PREFILL_PV16): 0 none (three split
    // bf16 products per term), 1 P V, 2 (default) P V and the scores with q as f16 hi + lo, 3 all f16
    // (the f16 cache's numerics). Logits vs HF fp32, synthetic 0.6B, 1,000 / 5,000 tokens (run 97):
    // KL 9.8e-8 / 1.1e-7, 4.1e-5 / 2.9e-5, 1.3e-4 / 1.1e-4, 2.2e-4 / 1.8e-4; argmax 100% of non-ties
    // but level 3's 99.98% at 5,000. TTFT at 4,096 tokens 42.5, 37.3, 32.9, 29.3 ms.
    int pv16;
    // MQ_PREFILL_FAORD=1 (measurement): the level-2 flash2_k with its score products ordered dims
    // outer, key groups inner (flash2_k's ORD)
    int faord;
    // flash3_k (prefill_wgmma.cuh) for the level-2 attention at head_dim 128, chunks of >= wgmin
    // tokens (MQ_PREFILL_WGMIN, default 65): wg 1 where the running image has wgmma (wgmma_probe_k at
    // start-up) unless MQ_PREFILL_WG=0. MQ_PREFILL_WGSWAP=2 (a layout check: exchanges V's two
    // descriptor offsets; wrong logits)
    int wg, wgswap, wgmin;
    // flash3g_k (prefill_wgmma.cuh): flash3_k with a kv head's two q heads in one block sharing the K/V
    // tiles (128 keys, 2 stages), where nh = 2 nkv, unless MQ_PREFILL_WGG=0 (flash3_k): 4,096-token
    // TTFT 24.6-24.9 -> 22.9-23.2 ms, the attention 159 -> 127 us per layer and chunk (run 145)
    int wgg;
    // flash3_k without q's lo half (one f16 product per score) for the f16 cache and level 3 too,
    // unless MQ_PREFILL_WGF16=0 (flash2_k's one-product path then): 4,096-token TTFT with the f16
    // cache 27.3 -> 24.0 ms (run 139)
    int wgf16;
    // MQ_PREFILL_SKIP=mask (measurement, wrong logits): leave out kernel k of every layer where bit k
    // is set (0 input norm, 1 q|k|v, 2 q/k prep, 3 attention, 4 o, 5 post norm, 6 gate|up, 7 SiLU,
    // 8 down): what each kernel costs the chain; the forward then skips the finiteness check
    int skip;
    // MQ_PREFILL_L2PF=mask: the L2 prefetches weights ahead of their GEMM, each block of an earlier
    // sgemm asking for its share (1, default: o's blocks, gate|up, which cuBLASLt reads without PDL's
    // early start: -0.02 ms at 8 and 32 tokens, run 112; 2: q|k|v's blocks, o; 4: down's blocks, the
    // next layer's q|k|v (+0.03-0.05 ms); 8 without 1: o's blocks, down), for chunks of <= l2pf_maxt
    // tokens (MQ_PREFILL_L2PF_MAXT, default 64). Asked by one block's thread instead (the norms, run
    // 111), 12.6 MB took ~26 us a layer: one SM's bulk prefetches are slow.
    int l2pf, l2pf_maxt;
    // sgemm_run_wide where it applies (the 0.6B's q|k|v at 17-32 tokens: -0.013 ms at 32 tokens, run
    // 114; MQ_PREFILL_SGFB=32 off; =65: also where twice the slabs fill the GPU, e.g. o)
    int sg_wide;
    int nop;               // MQ_PREFILL_NOP=k (measurement): k empty kernels of sms blocks after each layer's SiLU
    // split, cuBLASLt GEMMs of q|k|v and gate|up in chunks of >= lo16 tokens (MQ_PREFILL_LO16, default
    // 1536; 0: never): the lo half's product written as bf16 by a GEMM of its own, slab traffic 8 -> 6
    // bytes an element (else one GEMM, two f32 slabs). The lo product is ~2^-8 of the hi one: its bf16
    // rounding adds ~2^-17 of an output. Run 140: -10 us per layer at 2,048-token chunks (silu_mul_k
    // 40.8 -> 30.9 us, q/k prep 38.5 -> 36.3, the two GEMMs +2.5), +4 us at 512 (the second GEMM's
    // launch): break-even near 1,000 tokens.
    int lo16;
    int nolo;              // split, cuBLASLt GEMMs: bit g (0 q|k|v, 1 o, 2 gate|up, 3 down) drops GEMM g's lo
                           // rows (MQ_PREFILL_NOLO: a precision measurement, default 0)
    int dres_ns;           // slabs of the last O / down product in dres (summed by the next resid_norm_k)
    // f16 GEMM inputs (an f16 KV cache, split, chunks cuBLASLt multiplies): bit g (0 q|k|v, 1 o,
    // 2 gate|up, 3 down) makes GEMM g one f16 product (f16 X, f16 copy of W) instead of split's two
    // bf16 ones (MQ_PREFILL_F16G, default 0: opt-in. 7 (q|k|v, o, gate|up) took a 4,096-token
    // prompt from 28.4 to 23.9 ms but missed the argmax bar: 99.76% of non-ties vs HF fp32 at 1,000
    // tokens, KL 4.95e-4, run 65. Bit 3 only on trusted inputs: silu(g) * u has no f16 bound)
    int f16g;
    // split, chunks of >= kcat tokens (MQ_PREFILL_KCAT, default 65: every chunk cuBLASLt runs; 0:
    // never; run 141: 4,096-token TTFT -0.85 ms against lo16, -1.7 ms against two f32 slabs; 512 -0.1
    // ms; qkv GEMM 60 -> 52 us, gate|up 87 -> 77 per layer and 2,048-token chunk): q|k|v, gate|up and
    // down as one GEMM each over K-concatenated operands, [x_hi | x_lo] rows (T, 2K) against [W | W] (N, 2K), so the
    // hi and lo products add up in the GEMM's accumulators: one f32 output slab instead of two (half
    // the GEMM's stores and the consumer's loads), the same flops. The producers (resid_norm_k,
    // silu_mul_k) write the interleaved rows; o keeps two slabs (its producers are the attention
    // kernels). ww: the [W | W] copies, built at the first such chunk (all layers: 1.5 GB for the 0.6B;
    // where they would leave less than 1 GB of GPU memory free, kcat is turned off and the prompt runs
    // as before, lo16 where it applies).
    int kcat;
    __nv_bfloat16 *ww;     // (n_layers) x [q|k|v (N, 2H), gate|up (2I, 2H), down (H, 2I) or (I, H) twice]
    size_t ww_layer;       // elements of ww per layer
    __half *wf;            // (q|k|v + o + gate|up + down elements of one layer) f16 copies of the layer's weights
    size_t wf_n;           // elements of wf
    // MQ_PREFILL_PROF=1: an event after every launch (direct launches, no graphs, no overlap between
    // kernels), per-kind sums printed to stderr after each run: where a prompt's time goes
    int prof, npev;
    cudaEvent_t pev[NPEV];
    // MQ_PREFILL_TIMING=1: where a prompt's time goes, per call on stderr (host launch, GPU from the
    // ids' copy to the last kernel, the last logits' copy, the host's wait): events around the graph
    int timing;
    cudaEvent_t tev[3];
    // the last row's finiteness checked on the device (gemv_head_k): hflag is page-locked host
    // memory the kernel writes through dflag when a logit is NaN or inf (no copy, no host scan of
    // the 152K logits: 34 us on the device machine's CPU, run 109); last_nf: the last run's answer,
    // -1 when its last row took another path (the caller scans)
    volatile int *hflag;
    int *dflag;
    int last_nf;
    const char *pname[NPEV];
    unsigned fattr;        // flash2_k instantiations whose shared-memory limit is raised
    unsigned sattr;        // attn_small_k instantiations whose shared-memory limit is raised
    int small;             // attn_small_k for chunks of <= small tokens at position 0 (MQ_PREFILL_SMALL=N, at most
                           // SMALL_T; default 16: run 37 measured it faster at 8 tokens, slower at 32; 0 off)
    // f32 cache, attention v2: layer l's K/V rows [0, pos+T) as bf16, remade per layer (rows, kv_dim)
    // each, position-major (unlike the head-major cache): K hi, V hi, then K lo, V lo when split
    __nv_bfloat16 *kvs;
    size_t kv_cap;         // rows of kvs
    float *hlast;          // (vocab) host row for last_tok when the caller passes no buffer (page-locked if it can be)
    int hlast_pl;          // 1: hlast is page-locked (cudaHostAlloc)
    // MQ_PREFILL_ZC (default 1; 0 off): the prompt's last row goes from gemv_head_k straight into the
    // caller's page-locked row (zero copy). zl: the mapped address head() gives the kernel for this
    // run (nullptr: the copy after the kernel); zl_host / zl_dev: the last lookup
    int zc;
    float *zl;
    const float *zl_host;
    float *zl_dev;
    // the prefill megakernel (prefill_mk.cuh) for a first chunk of <= SMALL_T tokens (MQ_PREFILL_MK=1)
    int mk;                // 1: enabled (and the device runs sm_90 code: bulk copies)
    unsigned mkattr;       // bit i: instantiation i (of 4) set up; bit 4 + i: it cannot be co-resident on every SM
    unsigned *mkbar;       // (1) its grid barrier counter
    unsigned long long *mkprof;  // (MK_PHASES x n_layers) MQ_PREFILL_PROF: barrier times (device)
    int mkprof_T;          // tokens of the last profiled megakernel run (0: none)
    Plan plan[NPLAN];
    int next_plan;
};

namespace {

#include "prefill_rows.cuh"       // residual + norm and q/k prep kernels (inside this anonymous namespace)
#include "prefill_attention.cuh"  // the attention kernels (inside this anonymous namespace)
#include "prefill_wgmma.cuh"      // flash3_k, the attention on wgmma (sm_90a; likewise)

// 1 if the image the driver runs on the current device has wgmma (was compiled for sm_90a), else 0
// (also when the probe cannot run: the prefill then keeps flash2_k)
int probe_wgmma() {
    int *dp = nullptr, got = 0;
    if (cudaMalloc((void **)&dp, sizeof(int)) != cudaSuccess) return (void)cudaGetLastError(), 0;
    wgmma_probe_k<<<1, 1>>>(dp);
    if (cudaGetLastError() != cudaSuccess || cudaMemcpy(&got, dp, sizeof(int), cudaMemcpyDeviceToHost) != cudaSuccess)
        (void)cudaGetLastError(), got = 0;
    (void)cudaFree(dp);
    return got;
}
#include "prefill_mk.cuh"         // the prefill megakernel (likewise)

// MQ_PREFILL_NOP (measurement): an empty kernel in the PDL chain, to time what one more (or one
// fewer) kernel boundary costs a layer.
__global__ void nop_k() {
    pdl_wait();
    pdl_trigger();
}

// h[t, j] = bf16(silu(gu[t, 2j]) * gu[t, 2j+1]) over T*I elements (f16: as f16, no lo).
// lo (optional): the bf16 rounding remainders; gu: ns slabs of partial products (hi and lo GEMM
// halves, or K slabs) 2 * ss floats apart, summed.
// (g16 not nullptr, then ns is 1: the lo half's product as bf16 (T, 2 I), added as slab 1; mm's lo16)
// ldh (not 0): h's and lo's row stride for rows of ncol outputs (2 ncol with lo = h + ncol: the down
// GEMM's [hi | lo] rows, mm's kcat); 0: output i at h[i], lo[i].
__global__ void silu_mul_k(const float *gu, int ns, size_t ss, const __nv_bfloat16 *g16, __nv_bfloat16 *h,
                           __nv_bfloat16 *lo, size_t n, int f16, int ncol, size_t ldh) {
    pdl_wait();
    pdl_trigger();
    if ((n & 1) == 0 && (ss & 1) == 0 && (!ldh || (ncol & 1) == 0)) {  // two outputs a trip: one float4 per slab, 4-byte stores
        const float4 *g4 = reinterpret_cast<const float4 *>(gu);
        const size_t s4 = ss / 2;  // the slab stride in float4s
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n / 2; i += (size_t)gridDim.x * blockDim.x) {
            float4 v = g4[i];
            if (g16) {
                const uint2 a = __ldcg(reinterpret_cast<const uint2 *>(g16) + i);
                const __nv_bfloat162 x = *reinterpret_cast<const __nv_bfloat162 *>(&a.x),
                                     y = *reinterpret_cast<const __nv_bfloat162 *>(&a.y);
                v.x += __low2float(x), v.y += __high2float(x), v.z += __low2float(y), v.w += __high2float(y);
            }
            for (int k = 1; k < ns; k++) {
                const float4 u = g4[k * s4 + i];
                v.x += u.x, v.y += u.y, v.z += u.z, v.w += u.w;
            }
            const float r0 = v.x / (1.0f + expf(-v.x)) * v.y, r1 = v.z / (1.0f + expf(-v.z)) * v.w;
            if (f16) {
                reinterpret_cast<__half2 *>(h)[i] = __floats2half2_rn(r0, r1);
                continue;
            }
            const __nv_bfloat162 hv = __floats2bfloat162_rn(r0, r1);
            // (ncol even: both outputs in one row)
            const size_t o = ldh ? ((2 * i) / ncol * ldh + (2 * i) % ncol) / 2 : i;
            reinterpret_cast<__nv_bfloat162 *>(h)[o] = hv;
            if (lo)
                reinterpret_cast<__nv_bfloat162 *>(lo)[o] =
                    __floats2bfloat162_rn(r0 - __low2float(hv), r1 - __high2float(hv));
        }
        return;
    }
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float2 v = reinterpret_cast<const float2 *>(gu)[i];
        if (g16) {
            const __nv_bfloat162 x = __ldcg(reinterpret_cast<const __nv_bfloat162 *>(g16) + i);
            v.x += __low2float(x), v.y += __high2float(x);
        }
        for (int k = 1; k < ns; k++) {
            const float2 u = reinterpret_cast<const float2 *>(gu)[k * ss + i];
            v.x += u.x;
            v.y += u.y;
        }
        const float r = v.x / (1.0f + expf(-v.x)) * v.y;
        if (f16) {  // (MQ_PREFILL_F16G bit 3 only: f16 overflows past 65504)
            reinterpret_cast<__half *>(h)[i] = __float2half_rn(r);
            continue;
        }
        const __nv_bfloat16 hv = __float2bfloat16_rn(r);
        const size_t o = ldh ? i / ncol * ldh + i % ncol : i;
        h[o] = hv;
        if (lo) lo[o] = __float2bfloat16_rn(r - __bfloat162float(hv));
    }
}

#include "prefill_gemm.cuh"       // cuBLASLt plans, mm, the weight copies (likewise)

// MQ_PREFILL_PROF: holds the stream for `cycles` SM cycles, so that the host queues the run's launches
// (and events) ahead of the GPU: the times between events are then the kernels' own, not the host's
// launch rate.
__global__ void spin_k(long long cycles) {
    const long long t0 = clock64();
    while (clock64() - t0 < cycles) {
    }
}

// MQ_PREFILL_PROF: an event after the launch of kind `name` (the kernels since the previous mark).
void mark(mqp_state *S, cudaStream_t s, const char *name) {
    if (!S->prof || S->npev >= NPEV) return;
    if (cudaEventRecord(S->pev[S->npev], s) != cudaSuccess) return;
    S->pname[S->npev++] = name;
}

// The marks of one run as "kind: count x mean us" per kind, in first-seen order, on stderr.
void prof_print(mqp_state *S, int n) {
    const char *kind[32];
    double tot[32], all = 0;
    int cnt[32], nk = 0;
    for (int i = 1; i < S->npev; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, S->pev[i - 1], S->pev[i]) != cudaSuccess) break;
        int k = 0;
        while (k < nk && strcmp(kind[k], S->pname[i])) k++;
        if (k == nk) {
            if (nk == 32) continue;
            kind[nk] = S->pname[i], tot[nk] = 0, cnt[nk++] = 0;
        }
        tot[k] += ms * 1e3, cnt[k]++, all += ms * 1e3;
    }
    fprintf(stderr, "prefill profile, %d tokens (%s):", n, S->split ? "split bf16" : "bf16");
    for (int k = 0; k < nk; k++) fprintf(stderr, " %s %dx %.1f us |", kind[k], cnt[k], tot[k] / cnt[k]);
    fprintf(stderr, " total %.0f us\n", all);
    S->npev = 0;
    if (S->mkprof_T > 0) {  // the megakernel's phases: mean time from one barrier's opening to the next's
        const int np = MK_PHASES * S->L - 1;  // barriers (the last layer has no closing one)
        unsigned long long *t = (unsigned long long *)malloc(sizeof(unsigned long long) * MK_PHASES * S->L);
        if (t && cudaMemcpy(t, S->mkprof, sizeof(unsigned long long) * MK_PHASES * S->L, cudaMemcpyDeviceToHost) ==
                     cudaSuccess) {
            // barrier b opens phase b % 8 + 1 of its layer (8: the next layer's input norm + its q|k|v wait)
            static const char *ph[MK_PHASES] = {"q|k|v", "prep", "attn", "o", "post_norm", "gate|up", "down", "input_norm"};
            double sum[MK_PHASES] = {0};
            int cnt[MK_PHASES] = {0};
            for (int b = 1; b < np; b++) {
                sum[(b - 1) % MK_PHASES] += (double)(t[b] - t[b - 1]) * 1e-3;
                cnt[(b - 1) % MK_PHASES]++;
            }
            fprintf(stderr, "prefill_mk phases, %d tokens (us per layer, barrier to barrier):", S->mkprof_T);
            for (int k = 0; k < MK_PHASES; k++) fprintf(stderr, " %s %.1f |", ph[k], cnt[k] ? sum[k] / cnt[k] : 0.0);
            fprintf(stderr, " layers 1..%d %.0f us, block 0 waited %.0f us for weight copies\n", S->L - 1,
                    (double)(t[np - 1] - t[0]) * 1e-3, (double)t[np] * 1e-3);
        }
        free(t);
        S->mkprof_T = 0;
    }
}

template <int HD, bool QLO, bool KVLO, typename MT = __nv_bfloat16, bool V16 = false, int ORD = 0>
int launch_flash2(mqp_state *S, dim3 grid, const __nv_bfloat16 *qb, const __nv_bfloat16 *ql, const __nv_bfloat16 *kh,
                  const __nv_bfloat16 *kl, const __nv_bfloat16 *vh, const __nv_bfloat16 *vl, int ldkv, size_t hs,
                  __nv_bfloat16 *att, __nv_bfloat16 *atl, int T, int nh, int nkv, cudaStream_t s, int of16 = 0) {
    using Cfg = Flash2Cfg<HD, QLO, KVLO, V16>;
    const int hdi = HD == 128 ? 2 : HD == 64 ? 1 : 0;
    const unsigned bit = ORD ? 1u << (21 + hdi) : V16 ? 1u << (15 + hdi * 2 + (std::is_same<MT, __half>::value ? 1 : 0))
                       : std::is_same<MT, __half>::value ? 1u << (12 + hdi) : 1u << (hdi * 4 + QLO * 2 + KVLO);
    if (!(S->fattr & bit)) {  // once per instantiation (the first call of a graph key is never captured)
        PCK(cudaFuncSetAttribute(flash2_k<HD, QLO, KVLO, MT, V16, ORD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)Cfg::SMEM));
        S->fattr |= bit;
    }
    PCK(pdl_launch(S->pdl, flash2_k<HD, QLO, KVLO, MT, V16, ORD>, grid, dim3(128), Cfg::SMEM, s, qb, ql, kh, kl, vh, vl,
                   ldkv, hs, att, atl, T, S->dbuf, nh, nkv, of16));
    return 0;
}

// qk_prep_k + attention for a chunk of T <= SMALL_T tokens at position 0 in one kernel (attn_small_k).
template <int HD, typename KT>
int launch_small(mqp_state *S, const Params *P, int l, int nq, const float *qn, const float *kn, __nv_bfloat16 *att,
                 __nv_bfloat16 *atl, int T, cudaStream_t s) {
    const size_t smem = ((size_t)SMALL_T * (HD + 4) + (size_t)SMALL_T * HD + 16 * HD + 16 * SMALL_T) * 4;
    const unsigned bit = 1u << ((HD == 128 ? 2 : HD == 64 ? 1 : 0) * 3 + kv_kind<KT>());
    if (!(S->sattr & bit)) {  // once per instantiation (the first call of a graph key is never captured)
        PCK(cudaFuncSetAttribute(attn_small_k<HD, KT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        S->sattr |= bit;
    }
    const size_t lo = (size_t)l * P->max_ctx * P->nkv * HD;  // layer l's (n_kv, max_ctx, HD)
    KT *kc = static_cast<KT *>(P->kc) + lo, *vc = static_cast<KT *>(P->vc) + lo;
    PCK(pdl_launch(S->pdl, attn_small_k<HD, KT>, dim3(P->nh, (T + 15) / 16), dim3(NT_SMALL), smem, s, S->qkv, nq,
                   (size_t)T * (S->qd + 2 * S->kvd), qn, kn, P->rope, kc, vc, att, atl, T, P->nh, P->nkv, P->max_ctx,
                   S->dbuf, P->eps));
    return 0;
}

// kh..vl: layer l's K/V as bf16 for flash2_k (the position-major scratch copy of an f32 cache, or
// the head-major bf16 cache itself with kl = vl = nullptr); unused by the first kernel
// (MQ_PREFILL_ATTN=1), which reads the cache.
// flash3_k, 2 stages, with q's lo half (QLO: level 2) or without (an f16 cache, level 3;
// unless MQ_PREFILL_WGF16=0). Shared memory: 2 stages x [K, V] x 64 keys x HD f16, + 1 KB for the swizzle
// atoms' alignment (runs 133 and 135 measured 3 stages: no faster).
template <int HD, bool QLO>
int launch_flash3(mqp_state *S, dim3 grid, const __nv_bfloat16 *qb, const __nv_bfloat16 *ql, const __nv_bfloat16 *kh,
                  const __nv_bfloat16 *vh, int ld, size_t hs, __nv_bfloat16 *att, __nv_bfloat16 *atl, int T, int nh,
                  int nkv, cudaStream_t s, int of16, int swap = 0) {
    constexpr size_t smem = (size_t)2 * 2 * 64 * HD * sizeof(__nv_bfloat16) + 1024;
    const unsigned fb = 1u << (QLO ? 26 : 25);
    if (!(S->fattr & fb)) {
        PCK(cudaFuncSetAttribute(flash3_k<HD, 2, QLO>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        S->fattr |= fb;
    }
    PCK(pdl_launch(S->pdl, flash3_k<HD, 2, QLO>, grid, dim3(128), smem, s, qb, ql, kh, vh, ld, hs, att, atl, T,
                   S->dbuf, nh, nkv, of16, swap));
    return 0;
}

// flash3g_k (two q heads a block, K/V tiles shared; see mqp_state's wgg) where nh = 2 nkv, else
// flash3_k; grid (nkv, query tiles). Shared memory: 2 stages x [K, V] x 128 keys x HD f16, + 1 KB.
template <int HD, bool QLO>
int launch_wg(mqp_state *S, dim3 grid, const __nv_bfloat16 *qb, const __nv_bfloat16 *ql, const __nv_bfloat16 *kh,
              const __nv_bfloat16 *vh, int ld, size_t hs, __nv_bfloat16 *att, __nv_bfloat16 *atl, int T, int nh, int nkv,
              cudaStream_t s, int of16, int swap = 0) {
    if (!S->wgg || nh != 2 * nkv)
        return launch_flash3<HD, QLO>(S, grid, qb, ql, kh, vh, ld, hs, att, atl, T, nh, nkv, s, of16, swap);
    constexpr int BKT = 128, NST = 2;
    constexpr size_t smem = (size_t)NST * 2 * BKT * HD * sizeof(__nv_bfloat16) + 1024;
    const unsigned fb = 1u << (QLO ? 27 : 28);
    if (!(S->fattr & fb)) {
        PCK(cudaFuncSetAttribute(flash3g_k<HD, BKT, NST, QLO>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        S->fattr |= fb;
    }
    PCK(pdl_launch(S->pdl, flash3g_k<HD, BKT, NST, QLO>, dim3(nkv, (T + BQ - 1) / BQ), dim3(256), smem, s, qb, ql, kh,
                   vh, ld, hs, att, atl, T, S->dbuf, nh, nkv, of16, swap));
    return 0;
}

template <int HD, typename KT>
int attention(mqp_state *S, const Params *P, int l, const __nv_bfloat16 *qb, const __nv_bfloat16 *ql,
              const __nv_bfloat16 *kh, const __nv_bfloat16 *kl, const __nv_bfloat16 *vh, const __nv_bfloat16 *vl,
              __nv_bfloat16 *att, __nv_bfloat16 *atl, int T, cudaStream_t s, int of16, int m16) {
    const dim3 grid((T + BQ - 1) / BQ, P->nh);
    if constexpr (std::is_same<KT, __half>::value) {  // the f16 cache itself, f16 q and P: one product per term
        (void)l, (void)ql, (void)kl, (void)vl, (void)m16;
        if constexpr (HD == 128)
            if (S->wg && S->wgf16 && T >= S->wgmin)
                return launch_wg<HD, false>(S, grid, qb, nullptr, kh, vh, HD, (size_t)P->max_ctx * HD, att, atl, T,
                                            P->nh, P->nkv, s, of16);
        return launch_flash2<HD, false, false, __half>(S, grid, qb, nullptr, kh, nullptr, vh, nullptr, HD,
                                                        (size_t)P->max_ctx * HD, att, atl, T, P->nh, P->nkv, s, of16);
    } else if (S->attn_v1) {  // (not for an f16 cache: flash_k converts K/V to bf16)
        const size_t lo = (size_t)l * P->max_ctx * P->nkv * HD;  // layer l's (n_kv, max_ctx, HD)
        const KT *Kl = static_cast<const KT *>(P->kc) + lo, *Vl = static_cast<const KT *>(P->vc) + lo;
        if (S->split)
            PCK(pdl_launch(S->pdl, flash_k<HD, KT, true>, grid, dim3(128), 0, s, qb, ql, Kl, Vl, att, atl, T, S->dbuf,
                           P->nh, P->nkv, P->max_ctx));
        else
            PCK(pdl_launch(S->pdl, flash_k<HD, KT, false>, grid, dim3(128), 0, s, qb, ql, Kl, Vl, att, atl, T, S->dbuf,
                           P->nh, P->nkv, P->max_ctx));
        return 0;
    }
    // row / head strides: the f32 cache's scratch (rows, kv_dim), or the bf16 cache (n_kv, max_ctx, HD)
    const bool scratch = sizeof(KT) == 4;
    const int ld = scratch ? S->kvd : HD;
    const size_t hs = scratch ? (size_t)HD : (size_t)P->max_ctx * HD;
    // m16 (the f32 cache's scratch, MQ_PREFILL_PV16): f16 rows, see layer()
    if (m16 == 1)  // scores split bf16, P V one f16 product
        return launch_flash2<HD, true, true, __nv_bfloat16, true>(S, grid, qb, ql, kh, kl, vh, vl, ld, hs, att, atl, T,
                                                                  P->nh, P->nkv, s, of16);
    if constexpr (HD == 128) {
        if (m16 == 3 && ql && S->wg && T >= S->wgmin)
            return launch_wg<HD, true>(S, grid, qb, ql, kh, vh, ld, hs, att, atl, T, P->nh, P->nkv, s, of16,
                                       S->wgswap);
    }
    if constexpr (HD == 128)
        if (m16 == 3 && !ql && S->wg && S->wgf16 && T >= S->wgmin)
            return launch_wg<HD, false>(S, grid, qb, nullptr, kh, vh, ld, hs, att, atl, T, P->nh, P->nkv, s, of16);
    if (m16 == 3 && ql && S->faord)
        return launch_flash2<HD, true, false, __half, true, 1>(S, grid, qb, ql, kh, nullptr, vh, nullptr, ld, hs, att,
                                                               atl, T, P->nh, P->nkv, s, of16);
    if (m16 == 3 && ql)  // scores f16 q hi + lo against f16 K (two products), P V one f16 product
        return launch_flash2<HD, true, false, __half, true>(S, grid, qb, ql, kh, nullptr, vh, nullptr, ld, hs, att,
                                                            atl, T, P->nh, P->nkv, s, of16);
    if (m16 == 3)  // all f16, one product per term (the f16 cache's kernel on the scratch rows)
        return launch_flash2<HD, false, false, __half>(S, grid, qb, nullptr, kh, nullptr, vh, nullptr, ld, hs, att,
                                                        atl, T, P->nh, P->nkv, s, of16);
    if (S->split && kl)
        return launch_flash2<HD, true, true>(S, grid, qb, ql, kh, kl, vh, vl, ld, hs, att, atl, T, P->nh, P->nkv, s);
    if (S->split)
        return launch_flash2<HD, true, false>(S, grid, qb, ql, kh, kl, vh, vl, ld, hs, att, atl, T, P->nh, P->nkv, s);
    return launch_flash2<HD, false, false>(S, grid, qb, ql, kh, kl, vh, vl, ld, hs, att, atl, T, P->nh, P->nkv, s);
}

// kvgrid: blocks of the conversion of the f32 cache rows before the chunk (0: none, pos = 0).
// The residual x gets the previous layer's down projection (S->dres) in this layer's input norm
// (layer 0: the embedding rows), and the last layer's in the final norm (chunk).
template <typename KT>
int layer(mqp_state *S, const Params *P, int l, int T, int kvgrid, cudaStream_t s) {
    const LayerW &W = S->hl[l];
    const int H = S->H, I = S->I, qd = S->qd, kvd = S->kvd, hd = S->hd;
    const size_t lo = (size_t)l * P->max_ctx * kvd;  // layer l's (n_kv, max_ctx, hd) in each cache
    const bool sp = S->split;
    // lo halves (nullptr / 0: not split): GEMM inputs right after their T hi rows
    __nv_bfloat16 *xl = sp ? S->xn + (size_t)T * H : nullptr, *ql = sp ? S->qb + (size_t)S->C * qd : nullptr;
    __nv_bfloat16 *hl = sp ? S->h + (size_t)T * I : nullptr;
    const size_t cap = (size_t)(sp ? 2 : 1) * S->C;  // rows of the GEMM output buffers
    // kcat (see mqp_state): which of q|k|v, gate|up, down run K-concatenated, their inputs' producers
    // writing [hi | lo] rows; decided below, once the f16 GEMM inputs are known
    bool kq = false, kg = false, kd = false;
    // m16 (split with the f32 cache's scratch, MQ_PREFILL_PV16 = 1-3): bit 0, P V as one f16 product
    // (V scratch rows f16); bit 1, the scores in f16 too (q and K scratch rows f16; level 2 keeps q's
    // f16 remainder, two products, level 3 one)
    const int m16 = sizeof(KT) == 4 && !S->attn_v1 && sp && S->pv16 && S->prep_v && (hd == 128 || hd == 64 || hd == 32)
                        ? (S->pv16 == 1 ? 1 : 3)
                        : 0;
    // f16 GEMM inputs (f16g; an f16 cache or V16, split, GEMMs cuBLASLt runs): this layer's weights into
    // f16 first, then the producers of those GEMMs' inputs write one f16 row each instead of hi + lo
    const __half *wq = nullptr, *wo = nullptr, *wg = nullptr, *wd = nullptr;
    if ((std::is_same<KT, __half>::value || m16) && sp && S->f16g) {
        const size_t nq_ = (size_t)(qd + 2 * kvd) * H, no_ = (size_t)H * qd, ng_ = (size_t)2 * I * H,
                     nd_ = (size_t)H * I;
        const int ng4[4] = {qd + 2 * kvd, H, 2 * I, H}, nk4[4] = {H, qd, H, I};
        bool f[4];
        for (int g = 0; g < 4; g++) f[g] = (S->f16g >> g & 1) && sg_ks(S, ng4[g], nk4[g], T, cap) == 0;
        if (P->fuse) f[3] = false;  // (down transposed for the fused decode MLP: mm's wt path below, no f16 copy)
        if (f[0] || f[1] || f[2] || f[3]) {
            if (!S->wf) {  // first use (chunks past the graphs' GMAX: never inside a capture)
                S->wf_n = nq_ + no_ + ng_ + nd_;
                if (cudaMalloc((void **)&S->wf, S->wf_n * sizeof(__half)) != cudaSuccess) {
                    (void)cudaGetLastError();
                    S->wf = nullptr;
                    mq_err_set("cuda prefill: out of GPU memory for the f16 weight copies (%.1f MB)",
                               S->wf_n * 2 / 1e6);
                    return -1;
                }
            }
            W2H c = {};
            __half *dst = S->wf;
            const __nv_bfloat16 *src[4] = {W.qkv, W.o, W.gu, W.down};
            const size_t n4[4] = {nq_, no_, ng_, nd_};
            const __half **outp[4] = {&wq, &wo, &wg, &wd};
            for (int g = 0, k = 0; g < 4; dst += n4[g], g++)
                if (f[g]) c.a[k] = src[g], c.b[k] = dst, c.n[k++] = n4[g], *outp[g] = dst;
            PCK(pdl_launch(S->pdl, w2h_k, dim3(2 * S->sms), dim3(256), 0, s, c));
            mark(S, s, "w2h");
        }
    }
    if (sp && S->kcat > 0 && T >= S->kcat) {
        const int r = ww_build(S, P, s);
        if (r < 0) return -1;
        if (r > 0) {
            kq = !wq && !(S->nolo & 1) && sg_ks(S, qd + 2 * kvd, H, T, cap) == 0;
            kg = !wg && !(S->nolo & 4) && S->sgsilu != 48 && sg_ks(S, 2 * I, H, T, cap) == 0;
            kd = !wd && !(S->nolo & 8) && sg_ks(S, H, I, T, cap) == 0;
        }
    }
    // MQ_PREFILL_L2PF: weights the L2 fetches ahead of their GEMM, asked by an earlier sgemm's blocks
    const size_t bq = (size_t)(qd + 2 * kvd) * H * 2, bo = (size_t)H * qd * 2, bg = (size_t)2 * I * H * 2,
                 bd = (size_t)H * I * 2;
    const int pfm = T <= S->l2pf_maxt ? S->l2pf : 0;
    const SgPf pf_qkv = {W.o, pfm & 2 ? bo : 0}, pf_o = {pfm & 1 ? W.gu : W.down, pfm & 1 ? bg : pfm & 8 ? bd : 0},
               pf_down = {l + 1 < S->L ? S->hl[l + 1].qkv : nullptr, pfm & 4 && l + 1 < S->L ? bq : 0};
    if (!(S->skip & 1))
        PCK(pdl_launch(S->pdl, resid_norm_k, dim3(T), dim3(256), 0, s, l == 0 ? S->dbuf + 1 : nullptr, P->embed, S->V,
                       S->x, l == 0 ? nullptr : S->dres, S->dres_ns, (size_t)T * H, W.in_norm, S->xn,
                       kq ? S->xn + H : xl, H, P->eps, wq ? 1 : 0, kq ? (size_t)2 * H : (size_t)0));
    mark(S, s, "norm");
    int nq = 1, ng = 1;
    // the lo half's product as bf16 where qk_prep_v_k reads q|k|v (not attn_small_k's short first chunk)
    const bool small1 = !S->attn_v1 && kvgrid == 0 && T <= S->small;
    const __nv_bfloat16 *q16 = nullptr, *g16 = nullptr;
    const bool q16ok = !small1 && S->prep_v && (hd == 128 || hd == 64 || hd == 32);
    if (mm(S, W.qkv, qd + 2 * kvd, H, S->xn, S->qkv, T, cap, &nq, s, 0, wq, 0, pf_qkv, q16ok ? &q16 : nullptr,
           kq ? ww_mat(S, l, 0) : nullptr))
        return -1;
    mark(S, s, "qkv");
    // the normed rows are consumed by the QKV GEMM; reuse as the attention output (T, q_dim) [+ lo]
    __nv_bfloat16 *att = S->xn, *atl = sp ? att + (size_t)T * qd : nullptr;
    const int of16 = wo ? 1 : 0;  // the attention output as f16 rows (the o GEMM's f16 input)
    if (small1) {
        // a short first chunk: q/k prep and attention in one kernel, no K/V scratch
        const int r = S->skip >> 3 & 1 ? 0  // MQ_PREFILL_SKIP's attention bit covers attn_small_k too
                    : hd == 128 ? launch_small<128, KT>(S, P, l, nq, W.q_norm, W.k_norm, att, atl, T, s)
                    : hd == 64  ? launch_small<64, KT>(S, P, l, nq, W.q_norm, W.k_norm, att, atl, T, s)
                                : launch_small<32, KT>(S, P, l, nq, W.q_norm, W.k_norm, att, atl, T, s);
        if (r) return -1;
        mark(S, s, "attn_small");
    } else {
        KT *kc = static_cast<KT *>(P->kc) + lo, *vc = static_cast<KT *>(P->vc) + lo;
        // K/V for attention v2: the bf16 cache as it is, or the f32 cache's bf16 hi (lo) scratch copy
        __nv_bfloat16 *kh = nullptr, *kl = nullptr, *vh = nullptr, *vl = nullptr;
        const bool conv = sizeof(KT) == 4 && !S->attn_v1;
        if (conv) {
            const size_t a = S->kv_cap * kvd;
            kh = S->kvs, vh = kh + a;
            if (sp) kl = m16 & 2 ? nullptr : vh + a, vl = m16 & 1 ? nullptr : vh + 2 * a;
            if (kvgrid > 0) {
                PCK(pdl_launch(S->pdl, kv_split_k, dim3(kvgrid), dim3(256), 0, s, reinterpret_cast<const float *>(kc),
                               reinterpret_cast<const float *>(vc), kh, kl, vh, vl, S->dbuf, kvd, hd, S->max_ctx, m16));
                mark(S, s, "kv_split");
            }
        }
        const unsigned nslot = (unsigned)(S->nh + 2 * S->nkv);
        // f16 q without a lo half: the f16 cache, or level 3 where it applies (m16; a bf16 cache or
        // MQ_PREFILL_ATTN=1 keep split q whatever MQ_PREFILL_PV16 says)
        if (std::is_same<KT, __half>::value || (m16 == 3 && S->pv16 == 3)) ql = nullptr;
        const dim3 pg(T, (nslot + 7) / 8);
        const size_t ps = (size_t)T * (qd + 2 * kvd);
        if (S->skip >> 2 & 1) {
            // MQ_PREFILL_SKIP: no q/k prep
        } else if (S->prep_v && S->prepb > 0 && T >= S->prepb && nq <= 2 && hd == 128)
            PCK(pdl_launch(S->pdl, qk_prep_b_k<128, 4, KT>, dim3(T, (nslot + 31) / 32), dim3(256), 0, s, S->qkv, nq, ps,
                           q16, W.q_norm, W.k_norm, P->rope, S->qb, ql, kc, vc, kh, kl, vh, vl, S->nh, S->nkv,
                           S->max_ctx, S->dbuf, P->eps, m16));
        else if (S->prep_v && hd == 128)
            PCK(pdl_launch(S->pdl, qk_prep_v_k<128, KT>, pg, dim3(256), 0, s, S->qkv, nq, ps, q16, W.q_norm, W.k_norm,
                           P->rope, S->qb, ql, kc, vc, kh, kl, vh, vl, S->nh, S->nkv, S->max_ctx, S->dbuf, P->eps, m16));
        else if (S->prep_v && hd == 64)
            PCK(pdl_launch(S->pdl, qk_prep_v_k<64, KT>, pg, dim3(256), 0, s, S->qkv, nq, ps, q16, W.q_norm, W.k_norm,
                           P->rope, S->qb, ql, kc, vc, kh, kl, vh, vl, S->nh, S->nkv, S->max_ctx, S->dbuf, P->eps, m16));
        else if (S->prep_v && hd == 32)
            PCK(pdl_launch(S->pdl, qk_prep_v_k<32, KT>, pg, dim3(256), 0, s, S->qkv, nq, ps, q16, W.q_norm, W.k_norm,
                           P->rope, S->qb, ql, kc, vc, kh, kl, vh, vl, S->nh, S->nkv, S->max_ctx, S->dbuf, P->eps, m16));
        else
            PCK(pdl_launch(S->pdl, qk_prep_k<KT>, pg, dim3(256), (size_t)8 * hd * 4, s, S->qkv, nq, ps, W.q_norm,
                           W.k_norm, P->rope, S->qb, ql, kc, vc, kh, kl, vh, vl, S->nh, S->nkv, hd, S->max_ctx, S->dbuf,
                           P->eps));
        mark(S, s, "qk_prep");
        if (!conv) kh = reinterpret_cast<__nv_bfloat16 *>(kc), vh = reinterpret_cast<__nv_bfloat16 *>(vc);
        int r = S->skip >> 3 & 1 ? 0
              : hd == 128 ? attention<128, KT>(S, P, l, S->qb, ql, kh, kl, vh, vl, att, atl, T, s, of16, m16)
              : hd == 64  ? attention<64, KT>(S, P, l, S->qb, ql, kh, kl, vh, vl, att, atl, T, s, of16, m16)
                          : attention<32, KT>(S, P, l, S->qb, ql, kh, kl, vh, vl, att, atl, T, s, of16, m16);
        if (r) return -1;
        mark(S, s, "attn");
    }
    int no = 1;
    if (mm(S, W.o, H, qd, att, S->dres, T, cap, &no, s, 1, wo, 0, pf_o)) return -1;  // att o^T, added by the next norm
    mark(S, s, "o");
    if (!(S->skip >> 5 & 1))
        PCK(pdl_launch(S->pdl, resid_norm_k, dim3(T), dim3(256), 0, s, nullptr, P->embed, S->V, S->x, S->dres, no,
                       (size_t)T * H, W.post_norm, S->xn, kg ? S->xn + H : xl, H, P->eps, wg ? 1 : 0,
                       kg ? (size_t)2 * H : (size_t)0));
    mark(S, s, "norm");
    if (!kg && S->sgsilu == 48 && !wg && !(S->skip >> 6 & 3) && sgemm_silu48_ok(2 * I, H, T, S->sms)) {
        // gate|up with SiLU in the epilogue of 48-feature blocks, one wave on the multiprocessors
        PCK(sgemm_silu48(W.gu, 2 * I, H, S->xn, T, sp, S->h, S->pdl, s, S->sms));
        mark(S, s, "gate_up+silu");
    } else if (!kg && (S->sg & 4) && sg_ks(S, 2 * I, H, T, cap) == 1) {
        // gate|up with SiLU in its epilogue (S->sg & 4): h straight from the GEMM, one kernel less
        PCK(sgemm_silu(W.gu, 2 * I, H, S->xn, T, sp, S->h, S->pdl, s));
        mark(S, s, "gate_up+silu");
    } else {
        if (mm(S, W.gu, 2 * I, H, S->xn, S->gu, T, cap, &ng, s, 2, wg, 0, SgPf{}, &g16, kg ? ww_mat(S, l, 2) : nullptr))
            return -1;
        mark(S, s, "gate_up");
        const size_t nh = (size_t)T * I;
        if (!(S->skip >> 7 & 1))
            PCK(pdl_launch(S->pdl, silu_mul_k, dim3((unsigned)((nh + 255) / 256 < 4096 ? (nh + 255) / 256 : 4096)),
                           dim3(256), 0, s, S->gu, ng, nh, g16, S->h, kd ? S->h + I : hl, nh, wd ? 1 : 0, I,
                           kd ? (size_t)2 * I : (size_t)0));
        mark(S, s, "silu");
    }
    for (int k = 0; k < S->nop; k++) PCK(pdl_launch(S->pdl, nop_k, dim3(S->sms), dim3(256), 0, s));
    // down: (hidden, inter) row-major, or its transpose (inter, hidden) when the decode kernel fuses
    // the MLP (P->fuse; then no f16 copy, wd is nullptr)
    if (mm(S, W.down, H, I, S->h, S->dres, T, cap, &S->dres_ns, s, 3, wd, P->fuse ? 1 : 0, pf_down, nullptr,
           kd ? ww_mat(S, l, 3) : nullptr))
        return -1;
    mark(S, s, "down");
    PCK(cudaGetLastError());
    return 0;
}

int argmax_host(const float *v, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

int init(mqp_state **st, const Params *P) {
    mqp_state *S = (mqp_state *)calloc(1, sizeof *S);
    if (!S) {
        mq_err_set("cuda prefill: out of host memory");
        return -1;
    }
    *st = S;
    S->V = P->vocab, S->H = P->hidden, S->I = P->inter, S->L = P->n_layers, S->nh = P->nh, S->nkv = P->nkv;
    S->hd = P->hd, S->qd = P->qdim, S->kvd = P->nkv * P->hd, S->max_ctx = P->max_ctx;
    S->C = P->max_ctx < CHUNK ? P->max_ctx : CHUNK;
    S->hl = (LayerW *)calloc(S->L > 0 ? S->L : 1, sizeof(LayerW));
    if (cudaHostAlloc((void **)&S->hlast, (size_t)S->V * 4, cudaHostAllocDefault) == cudaSuccess)
        S->hlast_pl = 1;
    else
        (void)cudaGetLastError(), S->hlast = nullptr;
    if (!S->hl || (!S->hlast && !(S->hlast = (float *)malloc((size_t)S->V * 4)))) {
        mq_err_set("cuda prefill: out of host memory");
        return -1;
    }
    if (S->L > 0) PCK(cudaMemcpy(S->hl, P->layers, sizeof(LayerW) * S->L, cudaMemcpyDeviceToHost));
    const size_t C = S->C, wide = S->H > S->qd ? S->H : S->qd;
    const char *pe = getenv("MQ_PREFILL_PREC");
    S->split = !(pe && !strcmp(pe, "bf16"));
    const size_t S2 = S->split ? 2 : 1;
    const size_t sizes[9] = {WS_BYTES,
                             C * S->H * 4,
                             2 * C * wide * 2,
                             S2 * C * (S->qd + 2 * S->kvd) * 4,
                             2 * C * S->qd * 2,
                             S2 * C * 2 * S->I * 4,
                             2 * C * S->I * 2,
                             (size_t)LSUB * S->V * 4,
                             S2 * C * S->H * 4};
    void **ptrs[9] = {&S->ws, (void **)&S->x, (void **)&S->xn, (void **)&S->qkv, (void **)&S->qb,
                      (void **)&S->gu, (void **)&S->h, (void **)&S->logits, (void **)&S->dres};
    for (int i = 0; i < 9; i++) {
        if (cudaMalloc(ptrs[i], sizes[i]) != cudaSuccess) {
            (void)cudaGetLastError();
            size_t tot = 0;
            for (int j = 0; j < 9; j++) tot += sizes[j];
            mq_err_set("cuda prefill: out of GPU memory for the prompt buffers (%.1f MB for %d-token chunks)",
                       tot / 1e6, S->C);
            return -2;
        }
    }
    PCK(cudaMalloc((void **)&S->dbuf, (C + 1) * 4));
    if (!(S->hbuf = (int32_t *)malloc((C + 1) * 4))) {
        mq_err_set("cuda prefill: out of host memory");
        return -1;
    }
    PCK(cudaStreamCreateWithFlags(&S->st, cudaStreamNonBlocking));
    PCK(cudaEventCreateWithFlags(&S->ev, cudaEventDisableTiming));
    const char *ae = getenv("MQ_PREFILL_ATTN");
    S->attn_v1 = ae && atoi(ae) == 1;
    const char *se = getenv("MQ_PREFILL_SMALL");
    S->small = se && *se ? atoi(se) : 16;
    if (S->small < 0) S->small = 0;
    if (S->small > SMALL_T) S->small = SMALL_T;
    int dev = 0;
    PCK(cudaGetDevice(&dev));
    PCK(cudaDeviceGetAttribute(&S->sms, cudaDevAttrMultiProcessorCount, dev));
    const char *ge = getenv("MQ_PREFILL_GRAPH");
    S->use_graph = !(ge && atoi(ge) == 0);
    int major = 0;
    PCK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    const char *pd = getenv("MQ_PREFILL_PDL"), *sg = getenv("MQ_PREFILL_SGEMM");
    // PDL needs griddepcontrol in the kernels: sm_90 code (a build for other architectures only has
    // no wait in them, so the attribute would let a kernel read its inputs too early)
    cudaFuncAttributes fa;
    PCK(cudaFuncGetAttributes(&fa, resid_norm_k));
    S->pdl = major >= 9 && fa.binaryVersion >= 90 && !(pd && atoi(pd) == 0);
    S->sg = sg ? atoi(sg) : 3;
    const char *mk = getenv("MQ_PREFILL_MK");
    S->mk = mk && atoi(mk) == 1 && major >= 9 && fa.binaryVersion >= 90;
    PCK(cudaMalloc((void **)&S->mkbar, sizeof(unsigned)));
    const char *sn = getenv("MQ_PREFILL_SGNMAX");
    S->sg_nmax = sn && *sn ? atoi(sn) : 4096;
    const char *ss = getenv("MQ_PREFILL_SGSILU");
    S->sgsilu = ss && atoi(ss) == 48 ? 48 : 0;
    const char *sw = getenv("MQ_PREFILL_SGWAVE");
    S->sgwave = sw && atoi(sw) == 1;
    const char *pv = getenv("MQ_PREFILL_PREPV");
    S->prep_v = !(pv && atoi(pv) == 0);
    const char *gv = getenv("MQ_PREFILL_GEMV");
    S->gemv = !(gv && atoi(gv) == 0);
    const char *p16 = getenv("MQ_PREFILL_PV16");
    S->pv16 = p16 && *p16 && atoi(p16) >= 0 && atoi(p16) <= 3 ? atoi(p16) : 2;
    const char *fo = getenv("MQ_PREFILL_FAORD");
    S->faord = fo && atoi(fo) == 1;
    const char *fg = getenv("MQ_PREFILL_F16G");
    S->f16g = fg && *fg ? atoi(fg) & 15 : 0;
    const char *nl = getenv("MQ_PREFILL_NOLO");
    S->nolo = nl ? atoi(nl) : 0;
    const char *kce = getenv("MQ_PREFILL_KCAT");
    S->kcat = kce && *kce ? atoi(kce) : GMAX + 1;
    if (S->kcat > 0 && S->kcat <= GMAX) S->kcat = GMAX + 1;  // (ww_build allocates: never inside a graph capture)
    const char *l16e = getenv("MQ_PREFILL_LO16");
    S->lo16 = l16e && *l16e ? atoi(l16e) : 1536;
    S->last_nf = -1;
    int *hf = nullptr;  // the finiteness flag: without it the caller scans the logits on the host
    const char *dn = getenv("MQ_PREFILL_DEVNF");  // 0 (measurement): no device check, the host scans
    if (!(dn && atoi(dn) == 0) && cudaHostAlloc((void **)&hf, sizeof(int), cudaHostAllocMapped) == cudaSuccess &&
        cudaHostGetDevicePointer((void **)&S->dflag, hf, 0) == cudaSuccess)
        S->hflag = hf, *hf = 0;
    else {
        if (hf) cudaFreeHost(hf);
        S->dflag = nullptr;
        (void)cudaGetLastError();
    }
    const char *zc = getenv("MQ_PREFILL_ZC");
    S->zc = !(zc && atoi(zc) == 0);
    const char *sk = getenv("MQ_PREFILL_SKIP");
    S->skip = sk ? atoi(sk) : 0;
    const char *l2 = getenv("MQ_PREFILL_L2PF"), *l2t = getenv("MQ_PREFILL_L2PF_MAXT");
    S->l2pf = l2 && *l2 ? atoi(l2) & 15 : 1;
    S->l2pf_maxt = l2t && *l2t ? atoi(l2t) : 64;
    const char *sfb = getenv("MQ_PREFILL_SGFB");
    S->sg_wide = sfb && atoi(sfb) == 32 ? 0 : sfb && atoi(sfb) == 65 ? 2 : 1;
    const char *np = getenv("MQ_PREFILL_NOP");
    S->nop = np && atoi(np) > 0 ? atoi(np) : 0;
    const char *tm = getenv("MQ_PREFILL_TIMING");
    if (tm && atoi(tm) > 0) {
        for (int i = 0; i < 3; i++) PCK(cudaEventCreate(&S->tev[i]));
        S->timing = 1;
    }
    const char *pp = getenv("MQ_PREFILL_PROF");
    if (pp && atoi(pp) > 0) {
        S->prof = 1;  // first: mqp_free destroys the events made before a failure
        for (int i = 0; i < NPEV; i++) PCK(cudaEventCreate(&S->pev[i]));
        S->use_graph = 0;  // events between the kernels of a chunk: direct launches
    }
    LCK(cublasLtCreate(&S->lt));
    const char *wge = getenv("MQ_PREFILL_WG"), *wgs = getenv("MQ_PREFILL_WGSWAP");  // (see mqp_state)
    S->wgswap = wgs ? atoi(wgs) & 3 : 0;
    if (!(wge && atoi(wge) == 0)) S->wg = probe_wgmma();
    const char *wgf = getenv("MQ_PREFILL_WGF16");
    S->wgf16 = !(wgf && atoi(wgf) == 0);
    const char *wgm = getenv("MQ_PREFILL_WGMIN");
    S->wgmin = wgm && *wgm ? atoi(wgm) : 65;
    const char *wgg = getenv("MQ_PREFILL_WGG");
    S->wgg = !(wgg && atoi(wgg) == 0);
    const char *pb = getenv("MQ_PREFILL_PREPB");
    S->prepb = pb && *pb ? atoi(pb) : 256;
    return 0;
}

// The final norm and the lm_head of one row (the prompt's last) in one kernel (the default for a
// prompt's last row at hidden 1024 / 2048, split; MQ_PREFILL_GEMV=0 off): every block rebuilds row
// r of the residual (x + the nd slabs of the last down product, ds floats apart) and its RMSNorm
// (weights w) as f32 in shared memory, then its warps stream the lm_head rows (N, H) bf16, a row per
// warp and trip, two in flight: lane l holds the uint4 groups l + 32 j (j < KU) of a row, so a
// warp's loads are 512 contiguous bytes, and the f32 input it multiplies stays in registers.
// logits[n] = W[n] . xn. H = 256 KU. Block 256.
// zl (not nullptr, MQ_PREFILL_ZC): the logits go straight to the caller's page-locked row through its
// mapped address instead of logits (zero copy: no 608 KB copy after the kernel, 26 us, run 109).
// Then block b owns rows [b zr, b zr + zr) (zr: a multiple of 4), its warps' sums gather in shared
// memory (zr floats, dynamic), and the block writes them out at its end in 16-byte stores, so the
// host memory sees whole 512-byte runs per warp instead of a 4-byte write per row.
template <int KU>
__global__ void __launch_bounds__(256) gemv_head_k(const __nv_bfloat16 *__restrict__ W, int N, const float *x,
                                                   const float *d, int nd, size_t ds, const float *__restrict__ w,
                                                   float eps, float *__restrict__ logits, int *nf, float *zl, int zr) {
    constexpr int H = 256 * KU;
    __shared__ float xs[H];
    __shared__ float red[8];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    pdl_wait();
    pdl_trigger();
    float ss = 0.0f;
    for (int i = threadIdx.x; i < H; i += 256) {
        float v = __ldcg(x + i);
        if (d)
            for (int k = 0; k < nd; k++) v += __ldcg(d + k * ds + i);
        xs[i] = v;
        ss += v * v;
    }
    ss = warp_sum(ss);
    if (lane == 0) red[warp] = ss;
    __syncthreads();
    float sum = 0.0f;
    for (int i = 0; i < 8; i++) sum += red[i];
    const float r = 1.0f / sqrtf(sum / (float)H + eps);
    float xv[KU][8];  // this lane's normed inputs: elements 8 (l + 32 j) .. + 7
#pragma unroll
    for (int j = 0; j < KU; j++)
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const int i = 8 * (lane + 32 * j) + e;
            xv[j][e] = w[i] * (xs[i] * r);
        }
    auto dot = [&](const uint4 (&q)[KU]) {
        float a = 0.0f;
#pragma unroll
        for (int j = 0; j < KU; j++) {
            const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&q[j]);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float2 f = __bfloat1622float2(h[e]);
                a = fmaf(f.x, xv[j][2 * e], a);
                a = fmaf(f.y, xv[j][2 * e + 1], a);
            }
        }
        return warp_sum(a);
    };
    bool bad = false;  // lane 0: a logit of this warp's rows is NaN or inf
    if (zl) {
        extern __shared__ float zs[];  // (zr) this block's logits
        const int n0 = blockIdx.x * zr, nb = min(zr, N - n0);
        for (int j = warp; j < nb; j += 16) {  // rows n0 + j and n0 + j + 8 in flight
            const int j2 = j + 8 < nb ? j + 8 : j;
            uint4 a[KU], b[KU];
            const uint4 *pa = reinterpret_cast<const uint4 *>(W + (size_t)(n0 + j) * H) + lane;
            const uint4 *pb = reinterpret_cast<const uint4 *>(W + (size_t)(n0 + j2) * H) + lane;
#pragma unroll
            for (int u = 0; u < KU; u++) a[u] = sgt::ld_stream(pa + 32 * u), b[u] = sgt::ld_stream(pb + 32 * u);
            const float sa = dot(a), sb = dot(b);
            if (lane == 0) {
                zs[j] = sa, zs[j2] = sb;
                bad |= !isfinite(sa) || !isfinite(sb);
            }
        }
        __syncthreads();
        if (nb > 0) {
            const int n4 = nb & ~3;  // whole float4s, then the last block's remainder
            for (int i = 4 * threadIdx.x; i < n4; i += 4 * 256)
                *reinterpret_cast<float4 *>(zl + n0 + i) = *reinterpret_cast<const float4 *>(zs + i);
            if (threadIdx.x < nb - n4) zl[n0 + n4 + threadIdx.x] = zs[n4 + threadIdx.x];
        }
        if (bad && nf) *reinterpret_cast<volatile int *>(nf) = 1;
        return;
    }
    const int nw = gridDim.x * 8;
    for (int n = blockIdx.x * 8 + warp; n < N; n += 2 * nw) {
        const int n2 = n + nw;
        uint4 a[KU], b[KU];
        const uint4 *pa = reinterpret_cast<const uint4 *>(W + (size_t)n * H) + lane;
        const uint4 *pb = reinterpret_cast<const uint4 *>(W + (size_t)(n2 < N ? n2 : n) * H) + lane;
#pragma unroll
        for (int j = 0; j < KU; j++) a[j] = sgt::ld_stream(pa + 32 * j), b[j] = sgt::ld_stream(pb + 32 * j);
        const float sa = dot(a), sb = dot(b);
        if (lane == 0) {
            logits[n] = sa;
            bad |= !isfinite(sa);
            if (n2 < N) logits[n2] = sb, bad |= !isfinite(sb);
        }
    }
    if (bad && nf) *reinterpret_cast<volatile int *>(nf) = 1;  // the host's flag (page-locked), rare
}

// Logits of rows [r0, r0 + nr) (nr <= LSUB) of a chunk of T tokens after its last layer: the
// residual gets the last down projection, final RMSNorm, lm_head -> S->logits (sgemm: one product
// of the hi and lo rows; cuBLASLt: two GEMMs when split).
bool gemv_ok(const mqp_state *S, int nr) { return S->gemv && nr == 1 && S->split && (S->H == 1024 || S->H == 2048); }

int head(mqp_state *S, const Params *P, int T, int r0, int nr, cudaStream_t s) {
    const size_t H = S->H;
    if (gemv_ok(S, nr)) {
        // the final norm and lm_head in one kernel: f32 inputs against the bf16 rows (fp32 FMA, no
        // split needed), streamed at ~3.5 TB/s where sgemm's lm_head moved its 311 MB at ~3.3
        const float *x = S->x + r0 * H, *d = S->L > 0 ? S->dres + r0 * H : nullptr;
        // zero copy (S->zl): rows in contiguous runs of zr per block, at most ZR_MAX (shared memory)
        int nb = 4 * S->sms;
        if (S->zl && (S->V + nb - 1) / nb > ZR_MAX) nb = (S->V + ZR_MAX - 1) / ZR_MAX;
        const int zr = S->zl ? ((S->V + nb - 1) / nb + 3) & ~3 : 0;
        const dim3 g(nb);
        const size_t sm = (size_t)zr * 4;
        if (H == 1024)
            PCK(pdl_launch(S->pdl, gemv_head_k<4>, g, dim3(256), sm, s, P->lm_head, S->V, x, d, S->dres_ns,
                           (size_t)T * H, P->final_norm, P->eps, S->logits, S->dflag, S->zl, zr));
        else
            PCK(pdl_launch(S->pdl, gemv_head_k<8>, g, dim3(256), sm, s, P->lm_head, S->V, x, d, S->dres_ns,
                           (size_t)T * H, P->final_norm, P->eps, S->logits, S->dflag, S->zl, zr));
        mark(S, s, "gemv_head");
        return 0;
    }
    PCK(pdl_launch(S->pdl, resid_norm_k, dim3(nr), dim3(256), 0, s, nullptr, P->embed, S->V, S->x + r0 * H,
                   S->L > 0 ? S->dres + r0 * H : nullptr, S->dres_ns, T * H, P->final_norm, S->xn,
                   S->split ? S->xn + nr * H : nullptr, S->H, P->eps, 0, (size_t)0));
    mark(S, s, "final_norm");
    // sgemm: one read of the lm_head for the hi and lo rows (cuBLASLt reads it twice when split)
    int kmin = 0;
    if ((S->sg & 2) && nr <= SGEMM_MAXT && sgemm_slabs(S->V, S->H, nr, S->sms, &kmin) > 0 && kmin == 1) {
        PCK(sgemm_run(P->lm_head, S->V, S->H, S->xn, nr, S->split, S->logits, 1, S->pdl, s, 0));
        mark(S, s, "lm_head");
        return 0;
    }
    const int r = gemm2(S, 1, P->lm_head, S->H, S->xn, nr * H, S->logits, S->V, nr, S->H, 0.0f, s);
    mark(S, s, "lm_head");
    return r;
}

// The launches of one chunk of T tokens (ids and position already in S->dbuf): embed, every
// layer, then the final RMSNorm + lm_head of rows [r0, r0 + nr) into S->logits (nr = 0: none).
// kvgrid: as layer's.
template <typename KT>
int chunk(mqp_state *S, const Params *P, int T, int r0, int nr, int kvgrid, cudaStream_t s) {
    if (S->L == 0)  // no layer embeds the rows
        PCK(pdl_launch(S->pdl, resid_norm_k, dim3(T), dim3(256), 0, s, S->dbuf + 1, P->embed, S->V, S->x, nullptr, 0,
                       (size_t)0, P->final_norm, S->xn, nullptr, S->H, P->eps, 0, (size_t)0));
    for (int l = 0; l < S->L; l++)
        if (layer<KT>(S, P, l, T, kvgrid, s)) return -1;
    if (nr > 0 && head(S, P, T, r0, nr, s)) return -1;
    PCK(cudaGetLastError());
    return 0;
}

// K slabs of an (N, K) GEMM in the prefill megakernel: about one (feature tile, slab) unit per block,
// at most two 64-wide k chunks per warp, at least one.
int mk_slabs(int N, int K, int grid) {
    const int nt = N / sgt::FB, nch = K / 64, kmin = (nch + 15) / 16, kmax = nch / 8 > kmin ? nch / 8 : kmin;
    const int ks = (grid + nt / 2) / nt;
    return ks < kmin ? kmin : ks > kmax ? kmax : ks;
}

// A first chunk (position 0, T <= SMALL_T tokens) through the prefill megakernel, then the final norm
// and lm_head of rows [r0, r0 + nr) (head). Returns 0 when it ran, 1 when it cannot run this shape
// or device (the caller runs the kernel chain), -1 on error.
template <typename KT>
int mk_chunk(mqp_state *S, const Params *P, int T, int r0, int nr, cudaStream_t s) {
    const int qd = S->qd, nq = qd + 2 * S->kvd, grid = S->sms;
    if (!S->mk || S->L < 1 || S->L > MK_LMAX || P->fuse || T > SMALL_T || (S->hd != 32 && S->hd != 64 && S->hd != 128) ||
        S->H % 64 || qd % 64 || S->I % 64 || nq % sgt::FB || S->H > 16 * 64)  // gate|up in one slab
        return 1;
    const int ks_qkv = mk_slabs(nq, S->H, grid), ks_o = mk_slabs(S->H, qd, grid), ks_down = mk_slabs(S->H, S->I, grid);
    const size_t cap = (size_t)(S->split ? 2 : 1) * S->C;  // rows of the slab buffers
    if ((size_t)ks_qkv * T > cap || (size_t)ks_o * T > cap || (size_t)ks_down * T > cap ||
        (size_t)T * qd > cap * 2 * S->I)  // q (f32) in S->gu
        return 1;
    void (*kern)(MkArgs) = S->split ? prefill_mk<true, KT> : prefill_mk<false, KT>;
    const size_t smem = mk_smem(S->hd);
    const unsigned bit = (S->split ? 3u : 0u) + (unsigned)kv_kind<KT>();
    if (!(S->mkattr & (1u << bit))) {
        PCK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        int nb = 0;
        PCK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, kern, MK_NT, smem));
        S->mkattr |= (1u << bit) | (nb < 1 ? 256u << bit : 0u);
    }
    if (S->mkattr & (256u << bit)) return 1;
    MkArgs A;
    A.layers = P->layers, A.embed = P->embed, A.rope = P->rope, A.kc = P->kc, A.vc = P->vc, A.ids = S->dbuf + 1;
    A.x = S->x, A.xn = S->xn, A.qkv = S->qkv, A.qf = S->gu, A.dres = S->dres, A.h = S->h, A.bar = S->mkbar;
    A.V = S->V, A.H = S->H, A.I = S->I, A.L = S->L, A.nh = S->nh, A.nkv = S->nkv, A.hd = S->hd, A.maxc = S->max_ctx;
    A.T = T, A.ks_qkv = ks_qkv, A.ks_o = ks_o, A.ks_down = ks_down, A.eps = P->eps;
    A.prof = nullptr;
    if (S->prof) {
        if (!S->mkprof) PCK(cudaMalloc((void **)&S->mkprof, sizeof(unsigned long long) * MK_PHASES * S->L));
        PCK(cudaMemsetAsync(S->mkprof, 0, sizeof(unsigned long long) * MK_PHASES * S->L, s));
        A.prof = S->mkprof, S->mkprof_T = T;
    }
    PCK(cudaMemsetAsync(S->mkbar, 0, sizeof(unsigned), s));
    void *args[1] = {&A};
    PCK(cudaLaunchCooperativeKernel((const void *)kern, dim3(grid), dim3(MK_NT), args, smem, s));
    mark(S, s, "prefill_mk");
    S->dres_ns = ks_down;  // head adds the last down's slabs to the residual
    return head(S, P, T, r0, nr, s) ? -1 : 0;
}

// A short chunk (T <= GMAX, its logit rows in one sub-chunk) as a CUDA graph: the first call for
// (T, r0, nr) runs the launches directly (plans made, kernels loaded), the second captures them once
// and every later call replays the graph. Returns 0 when the chunk ran (graph or direct), -1 on error.
// A capture that fails (an uncapturable call) is remembered and that key runs directly from then on.
template <typename KT>
int chunk_graph(mqp_state *S, const Params *P, int T, int r0, int nr, int pos) {
    const int old = pos > 0, kvgrid = old ? 2 * S->sms : 0;  // the position varies between replays
    Graph *g = nullptr;
    for (int i = 0; i < NGRAPH; i++) {
        const Graph &e = S->graph[i];
        if (e.state && e.T == T && e.r0 == r0 && e.nr == nr && e.old == old && e.zl == S->zl) g = &S->graph[i];
    }
    if (!g) {  // first sight of this key: take the next slot (round robin), run directly
        g = &S->graph[S->next_graph];
        S->next_graph = (S->next_graph + 1) % NGRAPH;
        if (g->state == 2) cudaGraphExecDestroy(g->ex);
        g->T = T, g->r0 = r0, g->nr = nr, g->old = old, g->zl = S->zl, g->state = 1;
        return chunk<KT>(S, P, T, r0, nr, kvgrid, S->st);
    }
    if (g->state == 3) return chunk<KT>(S, P, T, r0, nr, kvgrid, S->st);
    if (g->state == 1) {
        cudaGraph_t graph = nullptr;
        int ok = cudaStreamBeginCapture(S->st, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
        if (ok) {
            const int r = chunk<KT>(S, P, T, r0, nr, kvgrid, S->st);
            ok = cudaStreamEndCapture(S->st, &graph) == cudaSuccess && r == 0 && graph;
        }
        if (ok) ok = cudaGraphInstantiate(&g->ex, graph, 0) == cudaSuccess;
        if (graph) cudaGraphDestroy(graph);
        if (!ok) {  // not capturable here: plain launches from now on for this key
            (void)cudaGetLastError();
            cudaStreamCaptureStatus cs;
            if (cudaStreamIsCapturing(S->st, &cs) == cudaSuccess && cs != cudaStreamCaptureStatusNone) {
                cudaGraph_t dead = nullptr;
                cudaStreamEndCapture(S->st, &dead);
                if (dead) cudaGraphDestroy(dead);
            }
            (void)cudaGetLastError();
            g->state = 3;
            return chunk<KT>(S, P, T, r0, nr, kvgrid, S->st);
        }
        g->state = 2;
    }
    PCK(cudaGraphLaunch(g->ex, S->st));
    return 0;
}

template <typename KT>
int run(mqp_state *S, const Params *P, const int32_t *ids, int n, int pos, float *logits_all, float *last,
        int32_t *last_tok, cudaStream_t caller) {
    const int V = S->V;
    cudaStream_t s = S->st;
    if (sizeof(KT) == 4 && !S->attn_v1 && (size_t)(pos + n) > S->kv_cap) {
        // grow the bf16 K/V scratch (captured graphs hold its address: forget them)
        size_t cap = S->kv_cap * 2 > (size_t)(pos + n) ? S->kv_cap * 2 : (size_t)(pos + n);
        if (cap < 4096) cap = 4096;
        if (cap > (size_t)S->max_ctx) cap = S->max_ctx;
        PCK(cudaStreamSynchronize(s));
        if (S->kvs) cudaFree(S->kvs);
        S->kvs = nullptr, S->kv_cap = 0;
        for (int i = 0; i < NGRAPH; i++) {
            if (S->graph[i].state == 2) cudaGraphExecDestroy(S->graph[i].ex);
            S->graph[i].state = 0;
        }
        if (cudaMalloc((void **)&S->kvs, cap * S->kvd * (S->split ? 4 : 2) * sizeof(__nv_bfloat16)) != cudaSuccess) {
            (void)cudaGetLastError();
            S->kvs = nullptr;
            return 1;  // no room: the decode kernel runs the prompt
        }
        S->kv_cap = cap;
    }
    PCK(cudaEventRecord(S->ev, caller));  // the caller's earlier work (decode steps) comes first
    PCK(cudaStreamWaitEvent(s, S->ev, 0));
    if (S->prof) {
        S->npev = 0;  // a failed run leaves its marks
        spin_k<<<1, 1, 0, s>>>(n > 512 ? 40000000ll : 20000000ll);  // ~10-20 ms at 2 GHz
        PCK(cudaGetLastError());
    }
    S->last_nf = -1;
    if (S->hflag) *S->hflag = 0;  // the device writes 1 (gemv_head_k) after this, or nothing
    int devnf = 0;                // the prompt's last row through gemv_head_k with the flag
    // zero copy of the last row where it goes through gemv_head_k (only the last row asked, and the
    // destination page-locked: its mapped address; pageable memory has none and takes the copy)
    float *dst = last ? last : S->hlast;
    S->zl = nullptr;
    if (S->zc && !logits_all && gemv_ok(S, 1)) {
        if (dst != S->zl_host) {
            float *dp = nullptr;
            if (cudaHostGetDevicePointer((void **)&dp, dst, 0) != cudaSuccess || ((uintptr_t)dp & 15)) {
                (void)cudaGetLastError();
                dp = nullptr;
            }
            S->zl_host = dst, S->zl_dev = dp;
        }
        S->zl = S->zl_dev;
    }
    struct timespec th0, th1, th2;
    if (S->timing) {
        clock_gettime(CLOCK_MONOTONIC, &th0);
        PCK(cudaEventRecord(S->tev[0], s));
    }
    for (int c0 = 0; c0 < n; c0 += S->C) {
        const int T = n - c0 < S->C ? n - c0 : S->C;
        const bool final = c0 + T == n;
        // pageable staging: the copy has taken the bytes when cudaMemcpyAsync returns
        S->hbuf[0] = pos + c0;
        memcpy(S->hbuf + 1, ids + c0, (size_t)T * 4);
        PCK(cudaMemcpyAsync(S->dbuf, S->hbuf, (size_t)(T + 1) * 4, cudaMemcpyHostToDevice, s));
        mark(S, s, "ids");
        // logits: every row of the chunk (sub-chunks of LSUB rows), or only the prompt's last row
        const int r_beg = logits_all ? 0 : final ? T - 1 : T;
        int r0 = r_beg, mk = 1;
        if (S->mk && pos + c0 == 0 && T == n) {
            mk = mk_chunk<KT>(S, P, T, r_beg, T - r_beg < LSUB ? T - r_beg : LSUB, s);
            if (mk < 0) return -1;
        }
        if (mk == 0) {
            // the first sub-chunk's logits are in S->logits
        } else if (S->use_graph && T <= GMAX && T - r_beg <= LSUB) {
            if (chunk_graph<KT>(S, P, T, r_beg, T - r_beg, pos + c0)) return -1;
        } else {
            const long long n8 = (long long)(pos + c0) * S->kvd / 8;
            const int kvgrid = (int)((n8 + 255) / 256 < 2 * S->sms ? (n8 + 255) / 256 : 2 * S->sms);
            if (chunk<KT>(S, P, T, r_beg, T - r_beg < LSUB ? T - r_beg : LSUB, kvgrid, s)) return -1;
        }
        // the first sub-chunk's logits are in S->logits; later sub-chunks run here
        for (; r0 < T; r0 += LSUB) {
            const int nr = T - r0 < LSUB ? T - r0 : LSUB;
            if (r0 != r_beg && head(S, P, T, r0, nr, s)) return -1;
            if (logits_all)
                PCK(cudaMemcpyAsync(logits_all + (size_t)(c0 + r0) * V, S->logits, (size_t)nr * V * 4,
                                    cudaMemcpyDeviceToHost, s));
            if (final && r0 + nr == T) {
                devnf = S->dflag && gemv_ok(S, nr);
                if (S->timing) PCK(cudaEventRecord(S->tev[1], s));
                if (!(S->zl && gemv_ok(S, nr) && r0 == r_beg))  // (zero copy: the row is there already)
                    PCK(cudaMemcpyAsync(dst, S->logits + (size_t)(nr - 1) * V, (size_t)V * 4, cudaMemcpyDeviceToHost,
                                        s));
            }
        }
    }
    if (S->timing) {
        PCK(cudaEventRecord(S->tev[2], s));
        clock_gettime(CLOCK_MONOTONIC, &th1);
    }
    PCK(cudaStreamSynchronize(s));
    PCK(cudaGetLastError());
    if (devnf) S->last_nf = S->skip ? 0 : *S->hflag != 0;
    if (S->timing) {
        clock_gettime(CLOCK_MONOTONIC, &th2);
        float g = 0, c = 0;
        PCK(cudaEventElapsedTime(&g, S->tev[0], S->tev[1]));
        PCK(cudaEventElapsedTime(&c, S->tev[1], S->tev[2]));
        const double us = 1e6, h1 = (th1.tv_sec - th0.tv_sec) * us + (th1.tv_nsec - th0.tv_nsec) * 1e-3,
                     h2 = (th2.tv_sec - th1.tv_sec) * us + (th2.tv_nsec - th1.tv_nsec) * 1e-3;
        fprintf(stderr, "prefill timing, %d tokens: host launches %.1f us | GPU ids -> last kernel %.1f us | last logits copy %.1f us | host wait %.1f us\n",
                n, h1, g * 1e3, c * 1e3, h2);
    }
    if (S->prof) prof_print(S, n);
    if (last_tok) *last_tok = argmax_host(dst, V);
    return 0;
}

}  // namespace

extern "C" int mq_gpu_prefill_wgmma(void) { return probe_wgmma(); }

int mqp_enabled(void) {
    const char *e = getenv("MQ_CUDA_PREFILL");
    return !(e && atoi(e) == 0);
}

int mqp_prefill(mqp_state **st, const Params *P, int kvt, const int32_t *ids_host, int n, int pos,
                float *logits_all, float *last, int32_t *last_tok, cudaStream_t s) {
    if (P->hd != 32 && P->hd != 64 && P->hd != 128) return 1;
    if (P->nkv < 1 || P->nh % P->nkv) return 1;
    if (n < 1) return 0;
    if (pos < 0 || (long long)pos + n > P->max_ctx) {
        mq_err_set("cuda prefill: %d tokens at position %d pass the KV cache (%d positions)", n, pos, P->max_ctx);
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (ids_host[i] < 0 || ids_host[i] >= P->vocab) {
            mq_err_set("cuda prefill: token id %d at index %d is outside the vocabulary (%d)", (int)ids_host[i], i,
                       P->vocab);
            return -1;
        }
    if (!*st) {
        const int r = init(st, P);
        if (r) {
            mqp_free(*st);
            *st = NULL;
            // no room for the prompt buffers next to the arena: the decode kernel still runs the
            // prompt (slower, same result); the next prompt tries again
            return r == -2 ? 1 : -1;
        }
    }
    if (kvt == mqk::KV_F32) return run<float>(*st, P, ids_host, n, pos, logits_all, last, last_tok, s);
    if (kvt == mqk::KV_BF16) return run<__nv_bfloat16>(*st, P, ids_host, n, pos, logits_all, last, last_tok, s);
    return run<__half>(*st, P, ids_host, n, pos, logits_all, last, last_tok, s);
}

int mqp_last_nonfinite(const mqp_state *S) { return S ? S->last_nf : -1; }

void mqp_free(mqp_state *S) {
    if (!S) return;
    for (int i = 0; i < NPLAN; i++)
        if (S->plan[i].used) {
            cublasLtMatmulDescDestroy(S->plan[i].op);
            cublasLtMatrixLayoutDestroy(S->plan[i].la);
            cublasLtMatrixLayoutDestroy(S->plan[i].lb);
            cublasLtMatrixLayoutDestroy(S->plan[i].lc);
        }
    for (int i = 0; i < NGRAPH; i++)
        if (S->graph[i].state == 2) cudaGraphExecDestroy(S->graph[i].ex);
    if (S->lt) cublasLtDestroy(S->lt);
    if (S->ev) cudaEventDestroy(S->ev);
    for (int i = 0; S->prof && i < NPEV; i++)
        if (S->pev[i]) cudaEventDestroy(S->pev[i]);
    if (S->hflag) cudaFreeHost((void *)S->hflag);
    for (int i = 0; S->timing && i < 3; i++)
        if (S->tev[i]) cudaEventDestroy(S->tev[i]);
    if (S->st) cudaStreamDestroy(S->st);
    void *bufs[15] = {S->ws, S->x, S->xn, S->qkv, S->qb, S->gu, S->h, S->logits, S->dbuf, S->kvs, S->dres, S->mkbar,
                      S->mkprof, S->wf, S->ww};
    for (int i = 0; i < 15; i++)
        if (bufs[i]) cudaFree(bufs[i]);
    free(S->hl);
    if (S->hlast_pl) cudaFreeHost(S->hlast);
    else free(S->hlast);
    free(S->hbuf);
    free(S);
}
