// gpu: host side of the CUDA backend — device arena, uploads and the megakernel launch (gpu.h).
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvtype.cuh"
#include "megakernel.cuh"
#include "prefill.cuh"
#include "sample.cuh"

extern "C" {
#include "err.h"
#include "gpu.h"
}

extern "C" const void *mqk_kernel(int kvt, int df);  // df: 0 grid barriers, 1 dataflow, 2 dataflow + fused MLP,
                                                     // 3: that with attention's K/V ring (long contexts)

using mqk::LayerW;
using mqk::NT;
using mqk::Params;

// Every CUDA call is checked; a failure sets one error line naming file:line and the call.
#define CK(call)                                                                                           \
    do {                                                                                                   \
        cudaError_t e_ = (call);                                                                           \
        if (e_ != cudaSuccess) {                                                                           \
            mq_err_set("cuda: %s:%d: %s: %s", __FILE__, __LINE__, #call, cudaGetErrorString(e_));         \
            return -1;                                                                                     \
        }                                                                                                  \
    } while (0)
#define CKN(call)                                                                                          \
    do {                                                                                                   \
        cudaError_t e_ = (call);                                                                           \
        if (e_ != cudaSuccess) {                                                                           \
            mq_err_set("cuda: %s:%d: %s: %s", __FILE__, __LINE__, #call, cudaGetErrorString(e_));         \
            mq_gpu_free(g);                                                                                \
            return NULL;                                                                                   \
        }                                                                                                  \
    } while (0)

enum { LOGITS_CHUNK = 16, MAX_STOP = 16, PROF_N = 1 << 16 };
enum { SYNC_GRID = 0, SYNC_DF = 1, SYNC_AUTO = 2 };

struct mq_gpu {
    mq_gpu_shape s;
    int max_ctx, grid, smem, sms;
    int profile;          // MQ_CUDA_PROFILE=1: print per-stage times of each launch to stderr
    int kvt;              // KV cache element (kvtype.cuh): KV_F32 (default: matches the fp32 reference), KV_BF16, KV_F16
    int sync;             // SYNC_GRID, SYNC_DF or SYNC_AUTO (MQ_CUDA_SYNC): which decode kernel a launch runs
    int df_max;           // auto: the dataflow kernel for launches ending within this many positions
    int grid_df, smem_df; // dataflow kernel: grid (one block per SM; 0: unusable) and shared memory
    int cluster;          // > 1: the dataflow kernel is launched in clusters of this many blocks (MQ_CUDA_CLUSTER)
    int prof_k;           // df profile: stage instances recorded per launch
    int fuse;             // gate|up + down fused (MQ_CUDA_FUSE=0: separate stages)
    int ringk;            // the fused dataflow kernel with attention's K/V ring fits (P.attpipe > 0 uses it)
    int ring_ctx;         // launches ending at >= this many positions run that kernel (MQ_CUDA_RING_CTX)
    // cluster kernel (decode_cl, MQ_CUDA_CL=N: launches ending within N positions; cl_plan)
    int cl_max;           // 0: off
    int cl_grid, cl_smem; // blocks (clusters of mqk::CL_CS) and dynamic shared memory per block
    size_t cl_b0, cl_b1;  // its weight buffers' bytes
    int cl_lmring, cl_lmns; // its lm_head ring (from buffer 1 on): rows per slot, slots (0: streamed)
    int cl_gu;            // Params.clgu (MQ_CUDA_CLGU)
    int cl_red;           // Params.clred (MQ_CUDA_CLRED)
    int cl_pf;            // Params.clpf (MQ_CUDA_CLPF)
    int cl_mvr;           // Params.mvr for decode_cl (MQ_CUDA_MVR, default 4; decode_df's default is 1)
    int cl_na, cl_nc;     // Params.clna, clnc (MQ_CUDA_CLMW)
    size_t off_ob;        // the o_proj tiles (Params.ob) in the arena
    char cl_why[320];     // the plan in words (the description's last part)
    size_t wsmem;         // bytes of shared memory per block for staged weight slices (0: none)
    size_t bytes;         // arena size
    char *arena;          // the one device allocation
    size_t off_layer[8];  // per-layer offsets of qkv, o, gu, down, in_norm, post_norm, q_norm, k_norm
    size_t layer_stride;  // bytes of one layer's weights
    size_t off_embed, off_lm, off_fnorm, off_rope;
    Params P;             // device pointers; per-run fields filled by mq_gpu_run
    mqp_state *pf;        // batched prompt processing scratch (prefill.cu), made on first use
    int last_nf;          // mq_gpu_last_nonfinite: the last run's device-side finiteness check (-1: none)
    char desc[1024];
};

static size_t al(size_t x) { return (x + 255) & ~(size_t)255; }
static size_t a128(size_t x) { return (x + 127) & ~(size_t)127; }
static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

// Bytes of the largest row slice a block of a grid of `grid` blocks takes of each weight stage:
// out = {q|k|v, o, gate|up, down} (rows split evenly, ceil(rows / grid) rows at most).
static void stage_slices(const mq_gpu_shape *s, size_t grid, size_t out[4]) {
    const size_t H = s->hidden, I = s->inter, Q = (size_t)s->n_heads * s->head_dim,
                 KV = (size_t)s->n_kv * s->head_dim;
    out[0] = (Q + 2 * KV + grid - 1) / grid * H * 2;
    out[1] = (H + grid - 1) / grid * Q * 2;
    // gate|up: whole (gate, up) row pairs per block (OPT_HPAIR's split), which is up to 2 rows more
    // than ceil(2I / grid): sized for rows in pairs, a block with the larger share of pairs streamed
    // its slice from global memory (found in run 20's profile: gate|up 8.8 us against o's 3.6)
    out[2] = (I + grid - 1) / grid * 2 * H * 2;
    out[3] = (H + grid - 1) / grid * I * 2;
}

mq_gpu_smem mq_gpu_plan_smem(const mq_gpu_shape *s, int grid, size_t optin, size_t base, int bulk) {
    mq_gpu_smem p = {0, 0, 0};
    if (!bulk || grid < 1) return p;
    size_t slices[4];
    stage_slices(s, (size_t)grid, slices);
    // buffer 0 takes q|k|v and gate|up, buffer 1 o and down: each sized for its own larger slice,
    // and what is left beside the stage vectors becomes a spare region (at least 16 KB, else none)
    // for attention's K/V ring slots and the lm_head ring
    const size_t b0 = a128(zmax(slices[0], slices[2])), b1 = a128(zmax(slices[1], slices[3]));
    if (b0 + b1 + base <= optin) {
        p.wbuf0 = b0, p.wbuf1 = b1;
        p.kvbuf = (optin - base - b0 - b1) & ~(size_t)127;
        if (p.kvbuf < 16384) p.kvbuf = 0;
        return p;
    }
    for (int i = 0; i < 4; i++) {
        const size_t b = a128(slices[i]);
        if (b > p.wbuf0 && 2 * b + base <= optin) p.wbuf0 = b;
    }
    p.wbuf1 = p.wbuf0;
    return p;
}

int mq_gpu_available(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n > 0;
}

static size_t slot_bytes(const mq_gpu *g, mq_gpu_slot slot) {
    const mq_gpu_shape *s = &g->s;
    const size_t H = s->hidden, Q = (size_t)s->n_heads * s->head_dim, KV = (size_t)s->n_kv * s->head_dim;
    switch (slot) {
    case MQ_GPU_QKV: return (Q + 2 * KV) * H * 2;
    case MQ_GPU_O: return H * Q * 2;
    case MQ_GPU_GATEUP: return 2 * (size_t)s->inter * H * 2;
    case MQ_GPU_DOWN: return H * s->inter * 2;
    case MQ_GPU_IN_NORM:
    case MQ_GPU_POST_NORM:
    case MQ_GPU_FINAL_NORM: return H * 4;
    case MQ_GPU_Q_NORM:
    case MQ_GPU_K_NORM: return (size_t)s->head_dim * 4;
    case MQ_GPU_EMBED:
    case MQ_GPU_LM_HEAD: return (size_t)s->vocab * H * 2;
    case MQ_GPU_ROPE: return (size_t)g->max_ctx * s->head_dim * 4;
    }
    return 0;
}

// The cluster kernel's plan (MQ_CUDA_CL=N > 0; sm_90): its grid is as many clusters of CL_CS blocks
// as are co-resident at one block per SM, and every stage slice must be staged in shared memory:
// buffer 0 holds a rank's q|k|v rows (RR = (G + 2) hd / 8 of the hidden-wide rows) or the block's
// (gate, up) pairs, buffer 1 its o_proj tile (hidden / 8 rows of G hd) or its downT rows. Sets
// g->cl_max (0 where it does not apply) and g->cl_why.
static int cl_plan(mq_gpu *g, const cudaDeviceProp *prop, int smem_static) {
    const mq_gpu_shape *s = &g->s;
    // default (MQ_CUDA_CL unset, MQ_CUDA_SYNC auto): launches ending within 1,280 positions. Session 31
    // (H200, tok/s against decode_df): ctx 16 1,296-1,300 vs 1,194-1,247, 1K 1,074-1,078 vs 1,025-1,047,
    // 1,536 999 vs 1,003, 2K 931 vs 949-952, 3K 812 vs 862-870, 4K 687-703 vs 746-756. Session 32 (H100,
    // bench -n 128 ABBA): launches ending at 1,152 945 vs 917-921, at 1,408 918-919 vs 920-921, at 1,664
    // 876-877 vs 903-904. MQ_CUDA_CL=0: off;
    // an explicit MQ_CUDA_SYNC=df (measurements of decode_df) keeps it off unless MQ_CUDA_CL is set.
    const char *e = getenv("MQ_CUDA_CL");
    const int want = e && *e ? (atoi(e) > 0 ? atoi(e) : 0) : g->sync == SYNC_AUTO ? 1280 : 0;
    g->cl_max = 0;
    if (!want) {
        snprintf(g->cl_why, sizeof g->cl_why, "cluster kernel off (%s)",
                 e && *e ? "MQ_CUDA_CL=0" : "MQ_CUDA_SYNC=df: set MQ_CUDA_CL=N to run it");
        return 0;
    }
    const int CS = mqk::CL_CS, H = s->hidden, I = s->inter, hd = s->head_dim, G = s->n_heads / s->n_kv, GQ = G * hd;
    const int RR = (G + 2) * hd / CS, HR = H / CS;
    const char *no = NULL;
    if (prop->major != 9) no = "needs sm_90";
    else if (!g->fuse) no = "needs the fused MLP";
    else if (s->n_layers < 2) no = "needs 2 layers or more";
    else if (hd != 64 && hd != 128 && hd != 256) no = "head_dim not 64, 128 or 256";
    else if ((G + 2) * hd % (4 * CS) || H % (4 * CS) || HR > NT) no = "rows do not split 8 ways";
    int grid = 0;
    size_t b0 = 0, b1 = 0, sv = 0;
    const void *fn = mqk_kernel(g->kvt, 4);
    // sizes for a grid, then the grid those sizes allow, until they agree (fewer blocks: larger slices)
    for (int it = 0, gr = g->sms / CS * CS; !no; it++) {
        if (gr < CS) {
            no = "too few SMs";
            break;
        }
        const size_t nc = ((size_t)I + gr - 1) / gr;
        b0 = a128(zmax((size_t)RR * H * 2, nc * 2 * H * 2));
        b1 = a128(zmax((size_t)HR * GQ * 2, nc * H * 2));
        sv = (size_t)mqk::cl_sm_layout(H, s->n_heads, s->n_kv, hd, (int)nc, mqk::SAMPLE_SMEM_WORDS).total * 4;
        const size_t dyn = b0 + b1 + sv;
        if (dyn + (size_t)smem_static > prop->sharedMemPerBlockOptin) {
            no = "slices do not fit in shared memory";
            break;
        }
        if (cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dyn) != cudaSuccess) {
            (void)cudaGetLastError();
            no = "shared memory attribute refused";
            break;
        }
        cudaLaunchConfig_t cfg = {};
        cudaLaunchAttribute at[1];
        cfg.gridDim = dim3(gr), cfg.blockDim = dim3(NT), cfg.dynamicSmemBytes = dyn;
        at[0].id = cudaLaunchAttributeClusterDimension;
        at[0].val.clusterDim.x = CS, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
        cfg.attrs = at, cfg.numAttrs = 1;
        int ncl = 0;
        if (cudaOccupancyMaxActiveClusters(&ncl, fn, &cfg) != cudaSuccess) {
            (void)cudaGetLastError();
            no = "cluster occupancy query failed";
            break;
        }
        if (ncl * CS > g->sms) ncl = g->sms / CS;
        grid = ncl * CS;
        g->cl_smem = (int)dyn;
        if (ncl < s->n_kv) no = "fewer co-resident clusters than kv heads";
        else if (I < grid) no = "fewer MLP pairs than blocks";
        else if (grid == gr) break;
        else if (it == 3) no = "no stable grid";
        gr = grid;
    }
    if (no) {
        snprintf(g->cl_why, sizeof g->cl_why, "cluster kernel not used: %s", no);
        if (e) fprintf(stderr, "megaqwen: MQ_CUDA_CL=%s: %s; the dataflow kernel runs instead\n", e, g->cl_why);
        return 0;
    }
    g->cl_max = want, g->cl_grid = grid, g->cl_b0 = b0, g->cl_b1 = b1;
    // MQ_CUDA_CLMW=P: each attention block takes P% of the even split's MLP pairs and the other blocks
    // share the rest (a measurement knob, default 100: the even split). Why: the attention blocks
    // carry the attention half and their down copy, issued after the o tile, lands last (session 30
    // run 3: block 0 waits 0.8-1.4 us for it), while the MLP-only blocks' weights landed long before.
    // Applied only where the weight buffers and the stage vectors hold the larger share.
    g->cl_na = 0, g->cl_nc = 0;
    const char *mwe = getenv("MQ_CUDA_CLMW");
    if (mwe && *mwe && atoi(mwe) > 0 && atoi(mwe) != 100) {
        const int nA = s->n_kv * CS, nM = grid - nA;
        const int na = (int)((double)I / grid * atoi(mwe) / 100.0 + 0.5), rest = I - nA * na;
        const int ncm = nM > 0 ? (rest + nM - 1) / nM : 0, ncx = na > ncm ? na : ncm;
        const size_t sv2 =
            (size_t)mqk::cl_sm_layout(H, s->n_heads, s->n_kv, hd, ncx, mqk::SAMPLE_SMEM_WORDS).total * 4;
        const size_t dyn2 = b0 + b1 + (sv2 > sv ? sv2 : sv);
        if (nM > 0 && na >= 1 && rest >= nM && (size_t)ncx * 4 * H <= b0 && (size_t)ncx * 2 * H <= b1 &&
            dyn2 + (size_t)smem_static <= prop->sharedMemPerBlockOptin &&
            cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dyn2) == cudaSuccess) {
            g->cl_na = na, g->cl_nc = ncx, g->cl_smem = (int)dyn2;
            if (sv2 > sv) sv = sv2;
        } else {
            (void)cudaGetLastError();
            fprintf(stderr, "megaqwen: MQ_CUDA_CLMW=%s: the pairs do not fit; the even split runs\n", mwe);
        }
    }
    // the lm_head ring over buffer 1 and the stage vectors (MQ_CUDA_LMRING rows a slot, as decode_df's;
    // MQ_CUDA_CLLM=0: the streamed matvec)
    const char *lrenv = getenv("MQ_CUDA_LMRING"), *cle = getenv("MQ_CUDA_CLLM");
    const int lrows = !lrenv || !*lrenv || atoi(lrenv) == 1 ? 16 : atoi(lrenv) > 0 ? atoi(lrenv) : 0;
    size_t ns = lrows > 0 && !(cle && atoi(cle) == 0) ? (b1 + sv - (size_t)H * 4) / ((size_t)lrows * H * 2) : 0;
    if (ns > (size_t)mqk::LM_MAXNS) ns = mqk::LM_MAXNS;
    g->cl_lmring = ns >= 2 ? lrows : 0, g->cl_lmns = ns >= 2 ? (int)ns : 0;
    const char *gue = getenv("MQ_CUDA_CLGU"), *cre = getenv("MQ_CUDA_CLRED"), *pfe = getenv("MQ_CUDA_CLPF");
    // MQ_CUDA_CLPF: the attention ranks' L2 prefetch of their K/V rows, 1 (default) this layer's before its
    // wait, 2 the next layer's, 0 none. Session 33 run 4 (H100, ABBA x2, ctx 16 / 512 / 1K): 1 +0.7 / +1.8 /
    // +0.4%, 2 +0.7 / +1.5 / -1% (the same output hashes)
    g->cl_pf = pfe && *pfe ? (atoi(pfe) == 1 || atoi(pfe) == 2 ? atoi(pfe) : 0) : 1;
    // defaults from session 30's run 3 (H200, ctx 16 / 1K / 4K, tok/s): CLGU 0 1,251 / 1,043 / 706, CLGU=1
    // 1,277 / 1,061 / 712, CLRED=1 1,257 / 1,048 / 704, both 1,288 / 1,068 / 710 (decode_df 1,253 /
    // 1,047 / 793), the same output hashes
    g->cl_gu = gue && *gue && atoi(gue) >= 0 && atoi(gue) <= 2 ? atoi(gue) : 1;
    // the down's cluster sum goes through px (8 slices of hidden / 8 floats, one per rank)
    const int pxs = mqk::cl_sm_layout(H, s->n_heads, s->n_kv, hd, (I + grid - 1) / grid, 0).pxs;
    g->cl_red = !(cre && *cre && atoi(cre) == 0) && H % (4 * CS) == 0 && H <= CS * pxs;
    snprintf(g->cl_why, sizeof g->cl_why,
             "cluster kernel to %d positions: grid %d (%d clusters of %d), %d B smem/block (weights %zu + %zu; "
             "lm_head ring %d x %d rows; gate|up copy %d; down sum %s; MLP pairs %s %d; K/V prefetch %s)", want, grid,
             grid / CS, CS, g->cl_smem, b0, b1, g->cl_lmns, g->cl_lmring, g->cl_gu, g->cl_red ? "cluster" : "block",
             g->cl_na ? "per attention block" : "split evenly", g->cl_na, g->cl_pf == 2 ? "next layer" : g->cl_pf ? "on" : "off");
    return 0;
}

mq_gpu *mq_gpu_new(const mq_gpu_shape *s, int max_ctx, const char *kv) {
    mq_gpu *g = (mq_gpu *)calloc(1, sizeof *g);
    if (!g) {
        mq_err_set("cuda: out of host memory");
        return NULL;
    }
    g->s = *s;
    g->max_ctx = max_ctx;
    g->last_nf = -1;
    const int hd = s->head_dim, G = s->n_kv > 0 ? s->n_heads / s->n_kv : 0;
    const int Q = s->n_heads * hd, KV = s->n_kv * hd;
    if (s->hidden % 8 || s->inter % 8 || hd % 8 || hd > 256 || hd < 8 || s->n_kv < 1 ||
        s->n_heads % s->n_kv || max_ctx < 1 || s->vocab < 1 || s->n_layers < 0) {
        mq_err_set("cuda: unsupported shape (hidden %d, intermediate %d, head_dim %d, heads %d/%d): the kernel "
                   "needs hidden, intermediate and head_dim multiples of 8, head_dim <= 256",
                   s->hidden, s->inter, hd, s->n_heads, s->n_kv);
        free(g);
        return NULL;
    }
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev < 1) {
        (void)cudaGetLastError();
        mq_err_set("cuda: no usable CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        free(g);
        return NULL;
    }
    cudaDeviceProp prop;
    CKN(cudaGetDeviceProperties(&prop, 0));
    if (!prop.cooperativeLaunch) {
        mq_err_set("cuda: device %s lacks cooperative launch", prop.name);
        free(g);
        return NULL;
    }
    g->sms = prop.multiProcessorCount;

    // shared memory: the largest stage input vector, or attention's queries + scratch + partials
    int lpr = 1;
    while (lpr * 8 < hd) lpr <<= 1;
    const int nw = NT / 32;
    size_t sm_mv = (size_t)(s->hidden > s->inter ? s->hidden : s->inter);
    if ((size_t)Q > sm_mv) sm_mv = Q;
    // fused MLP: normed x (hidden) + 3 floats per intermediate pair of the block (grid >= SMs)
    const size_t fz = (size_t)s->hidden + 3 * (((size_t)s->inter + g->sms - 1) / g->sms);
    if (fz > sm_mv) sm_mv = fz;
    if ((size_t)mqk::SAMPLE_SMEM_WORDS > sm_mv) sm_mv = mqk::SAMPLE_SMEM_WORDS;  // device sampling
    const int gs = G < 4 ? G : 4;  // attention passes handle at most 4 query heads
    // queries, the chunk's (m, l, acc) per head, per-warp head-prep scratch, per-warp partials
    size_t sm_att = (size_t)G * hd + (size_t)G * (hd + 2) + (size_t)nw * hd + (size_t)nw * gs * (hd + 2);
    g->smem = (int)((sm_mv > sm_att ? sm_mv : sm_att) * 4);
    if (g->smem > (int)prop.sharedMemPerBlockOptin) {
        mq_err_set("cuda: shape needs %d bytes of shared memory per block, device %s allows %zu", g->smem,
                   prop.name, (size_t)prop.sharedMemPerBlockOptin);
        free(g);
        return NULL;
    }
    // KV cache precision: f32 unless kv (or MQ_CUDA_KV) is bf16 or f16 (half the KV bytes; see docs/perf-notes.md)
    const char *kvenv = kv ? kv : getenv("MQ_CUDA_KV");
    g->kvt = !kvenv || !*kvenv || !strcmp(kvenv, "f32") ? mqk::KV_F32
           : !strcmp(kvenv, "bf16")                     ? mqk::KV_BF16
           : !strcmp(kvenv, "f16")                      ? mqk::KV_F16
                                                        : -1;
    if (g->kvt < 0) {
        mq_err_set("cuda: KV cache type '%.20s': expected f32, bf16 or f16", kvenv);
        free(g);
        return NULL;
    }
    // Decode kernels: grid barriers (v4: 2 blocks/SM) and dataflow counters with staged weights
    // (v5: 1 block/SM; bulk copies need sm_90, elsewhere it streams weights like v4).
    // MQ_CUDA_SYNC=grid|df|auto; auto (default) runs df for launches that end within
    // MQ_CUDA_DF_MAX positions (default 20480; every depth when the K/V ring below is on) and the
    // grid kernel past it, where its 2 blocks/SM
    // split attention twice as finely (run 82, H200, v9: df +8% at 16K, grid +3.6% at 32K; 12288
    // before, from run 43's v8: grid +3.7% at 16K; docs/perf-notes.md).
    const char *syenv = getenv("MQ_CUDA_SYNC");
    g->sync = syenv && !strcmp(syenv, "df") ? SYNC_DF : syenv && !strcmp(syenv, "grid") ? SYNC_GRID : SYNC_AUTO;
    const char *dmenv = getenv("MQ_CUDA_DF_MAX");
    g->df_max = dmenv && atoi(dmenv) > 0 ? atoi(dmenv) : 20480;
    const int smem_base = g->smem;
    const void *fn = mqk_kernel(g->kvt, 0);
    CKN(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, g->smem));
    int occ = 0;
    CKN(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, fn, NT, g->smem));
    if (occ < 1) {
        mq_err_set("cuda: the decode kernel does not fit on one SM of %s", prop.name);
        free(g);
        return NULL;
    }
    int bps = 2;  // blocks per SM; MQ_CUDA_BPS=1 measured 6% faster but is not yet through the GPU tests
    const char *env = getenv("MQ_CUDA_BPS");
    if (env && atoi(env) > 0) bps = atoi(env);
    if (bps > occ) bps = occ;
    // Weight staging (MQ_CUDA_STAGE=1): each block copies its slice of the next matrix into shared
    // memory (cp.async) while the grid synchronizes. The slice is ceil(rows / grid) rows; staging
    // is used when the largest slice fits next to the stage buffers for bps blocks per SM.
    // Fused MLP (MQ_CUDA_FUSE, default 1): gate|up and a split-K down in one stage, one dependency
    // hop less per layer (session 11: +6-13% in the dataflow kernel, docs/perf-notes.md). Its float4
    // atomics into the residual make the last bits of x depend on the order they land (~1e-7
    // relative), so MQ_CUDA_FUSE=0 (two stages, no atomics) is the bitwise-reproducible setting.
    const char *fenv = getenv("MQ_CUDA_FUSE");
    g->fuse = !(fenv && atoi(fenv) == 0);
    const char *senv = getenv("MQ_CUDA_STAGE");
    const int stage_on = senv && atoi(senv) == 1;  // off by default: measured slower than L2 prefetch
    for (; bps >= 1; bps--) {
        const size_t grid = (size_t)g->sms * bps, H = s->hidden, I = s->inter;
        size_t slices[4];
        stage_slices(s, grid, slices);
        size_t ws = 0;
        for (int i = 0; i < 4; i++) ws = slices[i] > ws ? slices[i] : ws;
        const size_t fused = (I + grid - 1) / grid * 3 * H * 2;  // gate|up pairs + downT rows
        if (g->fuse && fused > ws) ws = fused;
        ws = (ws + 15) & ~(size_t)15;
        const size_t per_sm = prop.sharedMemPerMultiprocessor, optin = prop.sharedMemPerBlockOptin;
        const size_t need = ws + (size_t)g->smem;
        if (stage_on && need <= optin && need * bps + (size_t)bps * 2048 <= per_sm) {
            int occ2 = 0;
            CKN(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need));
            CKN(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ2, fn, NT, (int)need));
            if (occ2 >= bps) {
                g->wsmem = ws;
                g->smem = (int)need;
                break;
            }
        }
        if (bps == 1 || !stage_on) {  // stream weights from global (L2 prefetch only)
            g->wsmem = 0;
            CKN(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, g->smem));
            break;
        }
    }
    if (bps < 1) bps = 1;
    g->grid = g->sms * bps;
    // dataflow kernel: one block per SM; two weight buffers for the stages' row slices (below) beside
    // the stage vectors (a stage whose slice does not fit streams from global memory)
    size_t wbuf = 0, wbuf1 = 0, kvbuf = 0;
    int lmring = 0, lmns = 0;  // df lm_head ring: rows per slot, slots (MQ_CUDA_LMRING)
    g->grid_df = 0;
    // the dataflow kernel's blocks: one per SM, or MQ_CUDA_DF_GRID=N of them (a measurement knob: what
    // fewer SMs cost, as a kernel in clusters of 8 or 16 would have, docs/perf-notes.md run 47)
    int gdf = g->sms;
    const char *dgenv = getenv("MQ_CUDA_DF_GRID");
    if (dgenv && atoi(dgenv) > 0 && atoi(dgenv) < gdf) gdf = atoi(dgenv);
    // the fused MLP's stage vectors (normed x, the block's gate|up pairs and h) were sized for one
    // block per SM (fz above); fewer blocks hold more pairs each
    if (g->fuse && (size_t)s->hidden + 3 * (((size_t)s->inter + gdf - 1) / gdf) > (size_t)smem_base / 4) {
        if (fenv && atoi(fenv) == 1) {
            mq_err_set("cuda: MQ_CUDA_FUSE=1 with MQ_CUDA_DF_GRID=%d: the fused MLP's vectors do not fit in shared "
                       "memory", gdf);
            free(g);
            return NULL;
        }
        g->fuse = 0;  // (the default: two MLP stages instead)
    }
    if (g->sync != SYNC_GRID) {
        size_t slices[4];
        stage_slices(s, (size_t)gdf, slices);
        // the kernel's static shared memory (reduction scratch, own residual rows, mbarriers, the
        // lm_head ring's state, the profile counters) comes on top of the dynamic size
        // (the ring kernel's is a little larger: its ring's mbarriers)
        cudaFuncAttributes fa0, far;
        CKN(cudaFuncGetAttributes(&fa0, mqk_kernel(g->kvt, g->fuse ? 2 : 1)));
        if (g->fuse) {
            CKN(cudaFuncGetAttributes(&far, mqk_kernel(g->kvt, 3)));
            if (far.sharedSizeBytes > fa0.sharedSizeBytes) fa0.sharedSizeBytes = far.sharedSizeBytes;
        }
        const size_t optin = prop.sharedMemPerBlockOptin, base = (size_t)smem_base + fa0.sharedSizeBytes;
        const mq_gpu_smem pl = mq_gpu_plan_smem(s, gdf, optin, base, prop.major >= 9);
        wbuf = pl.wbuf0, wbuf1 = pl.wbuf1, kvbuf = pl.kvbuf;
        g->smem_df = smem_base + (int)(wbuf + wbuf1 + kvbuf);
        const void *fdf = mqk_kernel(g->kvt, g->fuse ? 2 : 1);
        // lm_head ring (MQ_CUDA_LMRING=R: slots of R lm_head rows; default and 1 = 16 rows, 0 = off;
        // measured 96 -> 83 us per token, run 11 in docs/perf-notes.md): the bulk copy engine
        // streams each block's lm_head slice through as many slots as fit from the DOWN buffer on
        // (free during the lm_head) beside the normed x, growing the dynamic shared memory up to
        // what the device allows; fewer than 2 slots: off
        const char *lrenv = getenv("MQ_CUDA_LMRING");
        const int lrows = !lrenv || !*lrenv || atoi(lrenv) == 1 ? 16 : atoi(lrenv) > 0 ? atoi(lrenv) : 0;
        const int smem_df0 = g->smem_df;
        if (lrows > 0 && prop.major >= 9 && wbuf) {
            cudaFuncAttributes fa;
            CKN(cudaFuncGetAttributes(&fa, fdf));
            const size_t off = wbuf;  // the DOWN buffer (1)
            const size_t maxdyn = optin > fa.sharedSizeBytes ? optin - fa.sharedSizeBytes : 0;
            const size_t slot = (size_t)lrows * s->hidden * 2, xb = (size_t)s->hidden * 4;
            size_t ns = maxdyn > off + xb ? (maxdyn - off - xb) / slot : 0;
            if (ns > (size_t)mqk::LM_MAXNS) ns = mqk::LM_MAXNS;
            if (ns >= 2) {
                lmring = lrows, lmns = (int)ns;
                if (off + ns * slot + xb > (size_t)g->smem_df) g->smem_df = (int)(off + ns * slot + xb);
            }
        }
        int occd = 0;
        CKN(cudaFuncSetAttribute(fdf, cudaFuncAttributeMaxDynamicSharedMemorySize, g->smem_df));
        CKN(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occd, fdf, NT, g->smem_df));
        if (occd < 1 && g->smem_df > smem_df0) {  // no room for the lm_head ring after all: run without it
            lmring = lmns = 0, g->smem_df = smem_df0;
            CKN(cudaFuncSetAttribute(fdf, cudaFuncAttributeMaxDynamicSharedMemorySize, g->smem_df));
            CKN(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occd, fdf, NT, g->smem_df));
        }
        if (occd >= 1) {
            g->grid_df = gdf;
            // the ring kernel (long contexts, sm_90: bulk copies): same grid and shared memory
            if (g->fuse && prop.major >= 9) {
                const void *frg = mqk_kernel(g->kvt, 3);
                int occr = 0;
                CKN(cudaFuncSetAttribute(frg, cudaFuncAttributeMaxDynamicSharedMemorySize, g->smem_df));
                CKN(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occr, frg, NT, g->smem_df));
                g->ringk = occr >= 1;
            }
            // MQ_CUDA_CLUSTER=C (measurement knob, sm_90): the dataflow kernel launched in thread-block
            // clusters of C blocks (the kernel does not use them yet: what the launch alone costs, and
            // whether every cluster is co-resident at this grid; docs/perf-notes.md, session 8)
            const char *cenv = getenv("MQ_CUDA_CLUSTER");
            const int cl = cenv ? atoi(cenv) : 1;
            if (cl > 1 && prop.major >= 9 && gdf % cl == 0) {
                if (cl > 8) CKN(cudaFuncSetAttribute(fdf, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
                cudaLaunchConfig_t cfg = {};
                cudaLaunchAttribute at[1];
                cfg.gridDim = dim3(gdf), cfg.blockDim = dim3(NT), cfg.dynamicSmemBytes = g->smem_df;
                at[0].id = cudaLaunchAttributeClusterDimension;
                at[0].val.clusterDim.x = cl, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
                cfg.attrs = at, cfg.numAttrs = 1;
                int ncl = 0;
                if (cudaOccupancyMaxActiveClusters(&ncl, fdf, &cfg) == cudaSuccess && ncl * cl >= gdf)
                    g->cluster = cl;
                else
                    fprintf(stderr, "megaqwen: MQ_CUDA_CLUSTER=%d: %d clusters co-resident, %d needed; not used\n", cl,
                            ncl, gdf / cl);
                (void)cudaGetLastError();
            } else if (cl > 1) {
                fprintf(stderr, "megaqwen: MQ_CUDA_CLUSTER=%d needs sm_90 and a grid (%d) it divides; not used\n", cl, gdf);
            }
        } else if (g->sync == SYNC_DF) {
            mq_err_set("cuda: the dataflow decode kernel does not fit on one SM of %s", prop.name);
            free(g);
            return NULL;
        }
    }
    // attention runs one (kv head, chunk) item per block: every kv head needs a block
    if (g->grid_df && s->n_kv > g->grid_df) {
        if (g->sync == SYNC_DF) {
            mq_err_set("cuda: %d kv heads exceed the dataflow kernel's %d blocks on %s (MQ_CUDA_SYNC=grid may fit)",
                       s->n_kv, g->grid_df, prop.name);
            free(g);
            return NULL;
        }
        g->grid_df = 0;
    }
    if (s->n_kv > g->grid) {
        mq_err_set("cuda: unsupported shape: %d kv heads exceed the decode kernel's %d blocks on %s", s->n_kv,
                   g->grid, prop.name);
        free(g);
        return NULL;
    }
    if (!g->grid_df) g->sync = SYNC_GRID;
    if (g->sync != SYNC_GRID) {
        cudaFuncAttributes fcl;
        CKN(cudaFuncGetAttributes(&fcl, mqk_kernel(g->kvt, 4)));
        cl_plan(g, &prop, (int)fcl.sharedSizeBytes);
    } else {
        snprintf(g->cl_why, sizeof g->cl_why, "cluster kernel off (grid-barrier kernel)");
    }
    const int grid_max = g->grid > g->grid_df ? g->grid : g->grid_df;
    const int max_chunks = grid_max / s->n_kv > 0 ? grid_max / s->n_kv : 1;

    // arena layout
    size_t o = 0;
    const mq_gpu_slot lslots[8] = {MQ_GPU_QKV,      MQ_GPU_O,         MQ_GPU_GATEUP, MQ_GPU_DOWN,
                                   MQ_GPU_IN_NORM,  MQ_GPU_POST_NORM, MQ_GPU_Q_NORM, MQ_GPU_K_NORM};
    for (int i = 0; i < 8; i++) {
        g->off_layer[i] = o;
        o += al(slot_bytes(g, lslots[i]));
    }
    g->layer_stride = o;
    o *= (size_t)s->n_layers;
    g->off_embed = o;
    o += al(slot_bytes(g, MQ_GPU_EMBED));
    g->off_lm = g->off_embed;
    if (!s->tied) {
        g->off_lm = o;
        o += al(slot_bytes(g, MQ_GPU_LM_HEAD));
    }
    g->off_fnorm = o;
    o += al((size_t)s->hidden * 4);
    g->off_rope = o;  // RoPE table (max_ctx, hd/2, 2) floats
    o += al((size_t)max_ctx * hd * 4);
    const size_t off_layers = o;
    o += al(sizeof(LayerW) * (s->n_layers > 0 ? s->n_layers : 1));
    // K and V caches: (n_layers, n_kv, max_ctx, hd) each, head-major (megakernel.cuh Params.kc)
    const size_t kv_bytes = (size_t)s->n_layers * max_ctx * KV * (g->kvt == mqk::KV_F32 ? 4 : 2);
    const size_t off_kc = o;
    o += al(kv_bytes);
    const size_t off_vc = o;
    o += al(kv_bytes);
    const size_t off_x = o;
    o += al((size_t)s->hidden * 4);
    const size_t off_x1 = o;
    o += al((size_t)s->hidden * 4);
    const size_t off_qkv = o;
    o += al((size_t)(Q + 2 * KV) * 4);
    const size_t off_att = o;
    o += al((size_t)Q * 4);
    const size_t off_gu = o;
    o += al((size_t)2 * s->inter * 4);
    const size_t off_part = o;
    o += al((size_t)s->n_heads * max_chunks * (hd + 2) * 4);
    const size_t off_cnt = o;  // att_cnt (n_kv), lm_cnt, bar, ctl[2]
    o += al(((size_t)s->n_kv + 4) * 4);
    const size_t off_flg = o;  // dataflow counters (n_layers * 5 + 1)
    const size_t n_flg = (size_t)s->n_layers * 5 + 1;
    o += al(n_flg * 4);
    // cluster kernel: per-layer residual sums ra, rm (Params.ra / rm), and o_proj in tiles (Params.ob)
    const size_t off_cres = o;
    if (g->cl_max) o += al((size_t)2 * s->n_layers * s->hidden * 4);
    g->off_ob = o;
    if (g->cl_max) o += al((size_t)s->n_layers * slot_bytes(g, MQ_GPU_O));
    const size_t off_best = o;
    o += al((size_t)grid_max * 8);
    const size_t off_logits = o;
    o += al((size_t)LOGITS_CHUNK * s->vocab * 4);
    const size_t off_tok = o;
    o += al((size_t)max_ctx * 4);
    const size_t off_ids = o;
    o += al((size_t)max_ctx * 4);
    const size_t off_stop = o;
    o += al(MAX_STOP * 4);
    const size_t off_hist = o;
    o += al((size_t)max_ctx * 4);
    const size_t off_seen = o;
    o += al((size_t)s->vocab * 4);
    const size_t off_probs = o;
    o += al((size_t)s->vocab * 4);
    const size_t off_rng = o;
    o += al(8);
    // distributed top-k candidates: (grid, DK_CMAX) logits, ids and compact ids; counts and keys per block
    const size_t off_dk = o, n_dk = (size_t)grid_max * mqk::DK_CMAX;
    o += al(n_dk * 4) * 3 + al((size_t)grid_max * 4) * 2;
    const char *penv = getenv("MQ_CUDA_PROFILE");
    g->profile = penv && atoi(penv) > 0;
    const size_t off_prof = o;
    // df profile: 2 stamps per block for each of the first 4 steps' stage instances
    g->prof_k = g->grid_df ? 4 * (5 * s->n_layers + 1) : 0;
    const size_t prof_df = (size_t)2 * g->prof_k * g->grid_df * 8;
    if (g->profile) o += al(prof_df > (size_t)PROF_N * 8 ? prof_df : (size_t)PROF_N * 8);
    const size_t off_sprof = o;  // df sub-stage cycles of block 0 (64 u64), the lm_head tail's stamps (128)
    if (g->profile) o += al(192 * 8);
    g->bytes = o;

    e = cudaMalloc((void **)&g->arena, g->bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        mq_err_set("cuda: out of GPU memory: need %.2f GB (weights + KV cache for %d positions + scratch), "
                   "%.2f GB free of %.2f GB on %s",
                   g->bytes / 1e9, max_ctx, fr / 1e9, tot / 1e9, prop.name);
        free(g);
        return NULL;
    }
    CKN(cudaMemset(g->arena + off_cnt, 0, ((size_t)s->n_kv + 4) * 4));

    Params &P = g->P;
    memset(&P, 0, sizeof P);
    P.vocab = s->vocab;
    P.hidden = s->hidden;
    P.inter = s->inter;
    P.n_layers = s->n_layers;
    P.nh = s->n_heads;
    P.nkv = s->n_kv;
    P.hd = hd;
    P.qdim = Q;
    P.max_ctx = max_ctx;
    P.lpr = lpr;
    P.max_chunks = max_chunks;
    P.eps = s->eps;
    char *A = g->arena;
    P.layers = (const LayerW *)(A + off_layers);
    P.embed = (const __nv_bfloat16 *)(A + g->off_embed);
    P.lm_head = (const __nv_bfloat16 *)(A + g->off_lm);
    P.final_norm = (const float *)(A + g->off_fnorm);
    P.rope = (const float *)(A + g->off_rope);
    P.wsmem = (unsigned)g->wsmem;
    P.kc = A + off_kc;
    P.vc = A + off_vc;
    P.x = (float *)(A + off_x);
    P.x1 = (float *)(A + off_x1);
    P.fuse = g->fuse;
    P.qkv = (float *)(A + off_qkv);
    P.att = (float *)(A + off_att);
    P.gu = (float *)(A + off_gu);
    P.part = (float *)(A + off_part);
    P.att_cnt = (unsigned *)(A + off_cnt);
    P.lm_cnt = P.att_cnt + s->n_kv;
    P.bar = P.lm_cnt + 1;
    P.ctl = (int *)(P.bar + 1);
    P.flg = (unsigned *)(A + off_flg);
    if (g->cl_max) {
        P.ra = (float *)(A + off_cres);
        P.rm = P.ra + (size_t)s->n_layers * s->hidden;
        P.ob = (const __nv_bfloat16 *)(A + g->off_ob);
    }
    P.wbuf = (unsigned)wbuf;
    P.wbuf1 = (unsigned)wbuf1;
    P.kvbuf = (unsigned)kvbuf;
    const char *mcenv = getenv("MQ_CUDA_MINCH");  // fewest positions per attention chunk
    P.minch = mcenv && atoi(mcenv) > 0 ? atoi(mcenv) : 64;
    // Long contexts: launches that end at >= MQ_CUDA_RING_CTX positions (default 8192; 24576 for 16-bit
    // caches) run the fused
    // dataflow kernel's RING instance, in which attention's chunks of >= MQ_CUDA_ATTPIPE positions
    // (default 1: all; 0 = no ring kernel) stream their K/V rows through a bulk-copy ring in weight
    // buffer 0 and the spare region. Why: the register path issues a trip's loads only after
    // the previous trip's compute; the ring keeps slots in flight without registers (df at 32K
    // +22%, at 8K +4%, session 15 runs 84-85; a mix of ring and register chunks at 8K was slower
    // than either).
    const char *apenv = getenv("MQ_CUDA_ATTPIPE");
    P.attpipe = !g->ringk ? 0 : apenv && *apenv ? (atoi(apenv) > 0 ? atoi(apenv) : 0) : 1;
    const char *rcenv = getenv("MQ_CUDA_RING_CTX");
    // (16-bit caches: at 16K the ring measured -0.6% (f16) / -6% (bf16), at 32K +13% / +9%, run 87)
    g->ring_ctx = rcenv && atoi(rcenv) > 0 ? atoi(rcenv) : g->kvt == mqk::KV_F32 ? 8192 : 24576;
    {   // its ring: slots of MQ_CUDA_ATTSLOT KB in buffer 0, then in the spare region
        const char *asenv = getenv("MQ_CUDA_ATTSLOT");
        size_t sb = (size_t)(asenv && atoi(asenv) > 0 ? atoi(asenv) : 48) * 1024;  // 48 KB: run 85
        if (sb > 65536) sb = 65536;
        const size_t n0 = wbuf / sb, n1 = kvbuf / sb;
        P.attslot = (unsigned)sb;
        P.attns0 = (int)(n0 < (size_t)mqk::ATTPIPE_MAXNS ? n0 : mqk::ATTPIPE_MAXNS);
        P.attns = (int)(n0 + n1 < (size_t)mqk::ATTPIPE_MAXNS ? n0 + n1 : mqk::ATTPIPE_MAXNS);
        const char *anenv = getenv("MQ_CUDA_ATTNS");  // at most this many slots (a measurement knob)
        if (anenv && atoi(anenv) > 0 && atoi(anenv) < P.attns) P.attns = atoi(anenv);
        if (P.attns0 > P.attns) P.attns0 = P.attns;
        if (P.attpipe && P.attns < 2) {
            if (apenv && *apenv)  // asked for: say so rather than measure the register path
                fprintf(stderr, "megaqwen: MQ_CUDA_ATTPIPE=%d: room for %d ring slots of %zu bytes (needs 2); not used\n",
                        P.attpipe, P.attns, sb);
            P.attpipe = 0;
        }
    }
    // auto: with the ring the dataflow kernel beats the grid kernel at 32K too (run 84: 332 vs 286
    // tok/s), so it runs at every depth unless MQ_CUDA_DF_MAX says otherwise
    if (P.attpipe > 0 && !(getenv("MQ_CUDA_DF_MAX") && atoi(getenv("MQ_CUDA_DF_MAX")) > 0)) g->df_max = 1 << 30;
    // lm_head L2 prefetch distance in rows per warp (MQ_CUDA_LMPF; 0 = off): 4 measured the lm_head
    // 139 -> 122 us a step (run 8)
    const char *lpenv = getenv("MQ_CUDA_LMPF");
    P.lmpf = lpenv && atoi(lpenv) >= 0 && *lpenv ? atoi(lpenv) : 4;
    P.lmring = lmring;
    P.lmns = lmns;
    // df: the lm_head slice's L2 prefetch when a block leaves the last layer of a launch's last step
    // (MQ_CUDA_LMPRE, KB per block; default 0 = none). 1 MB per block (the old default) put 132 MB
    // of L2 prefetch, more than L2 holds, at the hop into the lm_head: its wake 11 -> 3 us without
    // it, its work unchanged (78-80 us; run 75). Steps with a step after them never issue it (they
    // copy the next step's first q|k|v slice there instead).
    const char *lpre = getenv("MQ_CUDA_LMPRE");
    P.lmpre = (size_t)(lpre && *lpre && atoi(lpre) >= 0 ? atoi(lpre) : 0) << 10;
    // the L2 prefetch of a streamed stage's slice (one whose slice does not fit its weight buffer:
    // the 1.7B's q|k|v and MLP, everything from the 4B up), issued a stage ahead: at most this many
    // KB per block (MQ_CUDA_WPF, default 0 = none). Run 2 of session 30 (H200, ctx 16 / 1K): the
    // old 1 MB -> 0 took the 1.7B from 491 to 553 tok/s, a 4B of 12 layers 501 -> 550, an 8B of 8
    // layers 502 -> 562 (256 KB and 64 KB in between): 132 blocks x 1 MB of evict-first lines
    // overfilled the L2 as the lm_head's prefetch did (MQ_CUDA_LMPRE).
    const char *wpfenv = getenv("MQ_CUDA_WPF");
    P.wpf = (size_t)(wpfenv && *wpfenv && atoi(wpfenv) >= 0 ? atoi(wpfenv) : 0) << 10;
    // df: the O stage combines the attention chunks itself (MQ_CUDA_OCOMB=1; off by default: measured
    // slower, run 8) when its stage vector region holds the output plus every chunk's (m, l)
    // (q_dim + 2 * n_heads * max_chunks floats)
    const char *ocenv = getenv("MQ_CUDA_OCOMB");
    const size_t sv_df = g->grid_df ? (size_t)g->smem_df - (wbuf + wbuf1 + kvbuf) : 0;
    P.ocomb = ocenv && atoi(ocenv) == 1 && ((size_t)Q + 2 * (size_t)s->n_heads * max_chunks) * 4 <= sv_df;
    // decode v6 optimizations (OPT_* bits in megakernel.cuh; MQ_CUDA_OPT=0 switches all off, to
    // measure each one against the kernel without it; docs/perf-notes.md)
    const char *openv = getenv("MQ_CUDA_OPT");
    P.opt = openv && *openv ? (int)strtol(openv, NULL, 0) & mqk::OPT_ALL : mqk::OPT_DEFAULT;
    // matvec's register path takes a warp's rows in groups of MQ_CUDA_MVR (4, 2 or 1: one row at a time);
    // the sums are bit-identical for every value. Defaults from session 31 (H200, ctx 16 / 1K, tok/s,
    // ABBA x3): decode_cl 4 (1,296-1,300 / 1,074-1,078 against 1,276-1,278 / 1,060-1,063 with 1), decode_df
    // 1 (4: 1,159-1,169 / 982-992 against 1,189 / 1,002-1,012)
    const char *mvenv = getenv("MQ_CUDA_MVR");
    const int mvr = mvenv && *mvenv && (atoi(mvenv) == 1 || atoi(mvenv) == 2 || atoi(mvenv) == 4) ? atoi(mvenv) : 0;
    P.mvr = mvr ? mvr : 1;
    g->cl_mvr = mvr ? mvr : 4;
    P.prof_k = g->prof_k;
    P.best = (unsigned long long *)(A + off_best);
    P.logits = (float *)(A + off_logits);
    P.tokens = (int32_t *)(A + off_tok);
    P.ids = (const int32_t *)(A + off_ids);
    P.stop = (const int32_t *)(A + off_stop);
    P.hist = (int32_t *)(A + off_hist);
    P.seen = (unsigned *)(A + off_seen);
    P.probs = (float *)(A + off_probs);
    P.dk_l = (float *)(A + off_dk);
    P.dk_i = (int *)(A + off_dk + al(n_dk * 4));
    P.dk_c = (int *)(A + off_dk + 2 * al(n_dk * 4));
    P.dk_n = (int *)(A + off_dk + 3 * al(n_dk * 4));
    P.dk_x = (unsigned *)(A + off_dk + 3 * al(n_dk * 4) + al((size_t)grid_max * 4));
    // MQ_CUDA_DK=0: sampling's top-k by the last lm_head block alone (passes over the whole vocabulary)
    const char *dkenv = getenv("MQ_CUDA_DK");
    P.dk = !(dkenv && *dkenv && atoi(dkenv) == 0);
    P.rng = (unsigned long long *)(A + off_rng);
    CKN(cudaMemset(P.seen, 0, (size_t)s->vocab * 4));
    P.prof = g->profile ? (unsigned long long *)(A + off_prof) : NULL;
    P.sprof = g->profile ? (unsigned long long *)(A + off_sprof) : NULL;

    // per-layer pointer table
    LayerW *lw = (LayerW *)calloc(s->n_layers > 0 ? s->n_layers : 1, sizeof *lw);
    if (!lw) {
        mq_err_set("cuda: out of host memory");
        mq_gpu_free(g);
        return NULL;
    }
    for (int l = 0; l < s->n_layers; l++) {
        char *b = A + (size_t)l * g->layer_stride;
        lw[l].qkv = (const __nv_bfloat16 *)(b + g->off_layer[0]);
        lw[l].o = (const __nv_bfloat16 *)(b + g->off_layer[1]);
        lw[l].gu = (const __nv_bfloat16 *)(b + g->off_layer[2]);
        lw[l].down = (const __nv_bfloat16 *)(b + g->off_layer[3]);
        lw[l].in_norm = (const float *)(b + g->off_layer[4]);
        lw[l].post_norm = (const float *)(b + g->off_layer[5]);
        lw[l].q_norm = (const float *)(b + g->off_layer[6]);
        lw[l].k_norm = (const float *)(b + g->off_layer[7]);
    }
    e = cudaMemcpy(A + off_layers, lw, sizeof(LayerW) * s->n_layers, cudaMemcpyHostToDevice);
    free(lw);
    CKN(e);
    snprintf(g->desc, sizeof g->desc,
             "%.200s: %s kernel%s, %d SMs; dataflow: grid %d, %d B smem/block (weights: %zu + %zu, spare %zu; "
             "lm_head ring %d x %d rows; attention K/V ring %d x %u B for chunks >= %d positions at >= %d); grid-barrier: "
             "grid %d x %d threads (%d/SM), %d B smem/block (%zu staged weights); %s KV cache, %s MLP, arena %.3f GB",
             prop.name, g->sync == SYNC_GRID ? "grid-barrier" : "dataflow",
             g->sync == SYNC_AUTO && g->df_max < (1 << 30) ? " (grid-barrier past MQ_CUDA_DF_MAX positions)" : "",
             g->sms, g->grid_df, g->smem_df, wbuf, wbuf1, kvbuf, lmns, lmring,
             P.attpipe ? P.attns : 0, P.attslot, P.attpipe, g->ring_ctx, g->grid, NT, bps, g->smem, g->wsmem,
             g->kvt == mqk::KV_F32 ? "f32" : g->kvt == mqk::KV_BF16 ? "bf16" : "f16",
             g->fuse ? "fused" : "2-stage", g->bytes / 1e9);
    const size_t dl = strlen(g->desc);
    snprintf(g->desc + dl, sizeof g->desc - dl, "; %s", g->cl_why);
    if (g->profile) fprintf(stderr, "megakernel: %s\n", g->desc);
    return g;
}

int mq_gpu_put(mq_gpu *g, mq_gpu_slot slot, int layer, const void *src, size_t bytes) {
    const size_t want = slot_bytes(g, slot);
    if (bytes != want) {
        mq_err_set("cuda: upload of slot %d: %zu bytes given, %zu expected", (int)slot, bytes, want);
        return -1;
    }
    size_t off;
    switch (slot) {
    case MQ_GPU_EMBED: off = g->off_embed; break;
    case MQ_GPU_LM_HEAD:
        if (g->s.tied) return 0;
        off = g->off_lm;
        break;
    case MQ_GPU_FINAL_NORM: off = g->off_fnorm; break;
    case MQ_GPU_ROPE: off = g->off_rope; break;
    default:
        if (layer < 0 || layer >= g->s.n_layers) {
            mq_err_set("cuda: upload to layer %d of %d", layer, g->s.n_layers);
            return -1;
        }
        off = (size_t)layer * g->layer_stride + g->off_layer[(int)slot];
    }
    if (slot == MQ_GPU_GATEUP || (slot == MQ_GPU_DOWN && g->fuse)) {
        // re-lay: gate|up rows interleaved (row 2j = gate_j, 2j+1 = up_j) so a block's pairs are
        // contiguous; down transposed to (inter, hidden) for the split-K fused MLP
        const size_t H = g->s.hidden, I = g->s.inter;
        const uint16_t *in = (const uint16_t *)src;
        uint16_t *t = (uint16_t *)malloc(bytes);
        if (!t) {
            mq_err_set("cuda: out of host memory");
            return -1;
        }
        if (slot == MQ_GPU_GATEUP) {
            for (size_t j = 0; j < I; j++) {
                memcpy(t + 2 * j * H, in + j * H, H * 2);
                memcpy(t + (2 * j + 1) * H, in + (I + j) * H, H * 2);
            }
        } else {
            for (size_t r = 0; r < H; r++)
                for (size_t j = 0; j < I; j++) t[j * H + r] = in[r * I + j];
        }
        cudaError_t e = cudaMemcpy(g->arena + off, t, bytes, cudaMemcpyHostToDevice);
        free(t);
        CK(e);
        return 0;
    }
    CK(cudaMemcpy(g->arena + off, src, bytes, cudaMemcpyHostToDevice));
    if (slot == MQ_GPU_O && g->cl_max) {
        // the cluster kernel's copy in tiles: tile (h, r) = rows [r H/8, +H/8) x columns [h G hd, +G hd)
        const size_t CS = mqk::CL_CS, H = g->s.hidden, Q = (size_t)g->s.n_heads * g->s.head_dim;
        const size_t nkv = g->s.n_kv, GQ = Q / nkv, HR = H / CS;
        const uint16_t *in = (const uint16_t *)src;
        uint16_t *t = (uint16_t *)malloc(bytes);
        if (!t) {
            mq_err_set("cuda: out of host memory");
            return -1;
        }
        for (size_t h = 0; h < nkv; h++)
            for (size_t r = 0; r < CS; r++)
                for (size_t i = 0; i < HR; i++)
                    memcpy(t + ((h * CS + r) * HR + i) * GQ, in + (r * HR + i) * Q + h * GQ, GQ * 2);
        cudaError_t e = cudaMemcpy(g->arena + g->off_ob + (size_t)layer * bytes, t, bytes, cudaMemcpyHostToDevice);
        free(t);
        CK(e);
    }
    return 0;
}

// The per-block stamps of the first min(want, prof_k) stage instances of a launch (2 per instance and
// block of a G-block grid) on the host (malloc'd), *K their count; NULL when fewer than 2 or on failure.
static unsigned long long *prof_fetch(const mq_gpu *g, const unsigned long long *dprof, int want, int G, int *K) {
    *K = want < g->prof_k ? want : g->prof_k;
    if (*K < 2) return NULL;
    const size_t cnt = (size_t)2 * *K * G;
    unsigned long long *t = (unsigned long long *)malloc(cnt * 8);
    if (!t || cudaMemcpy(t, dprof, cnt * 8, cudaMemcpyDeviceToHost) != cudaSuccess) {
        (void)cudaGetLastError();
        free(t);
        return NULL;
    }
    return t;
}

// MQ_CUDA_PROFILE with the dataflow kernel: per stage, from the stamps every block writes when its
// inputs are ready (2k) and when it published its output (2k+1), for the first steps of the launch:
//   interval  time between the last publishes of consecutive stages (the step's critical path)
//   work      mean over blocks of publish - ready (the stage's own work, weights included)
//   wake      first consumer ready - last producer publish (dependency latency)
//   slowest   the largest publish - ready of a block (the stage's critical-path work)
static void df_profile(mq_gpu *g, const unsigned long long *dprof, int n, int pos) {
    const int L = g->s.n_layers, per = 5 * L + 1, G = g->grid_df;
    int K = 0;
    unsigned long long *t = prof_fetch(g, dprof, n * per, G, &K);
    if (!t) return;
    static const char *nm[6] = {"qkv", "attn", "o", "gateup", "down", "lm_head"};
    double iv[6] = {0}, wk[6] = {0}, wa[6] = {0}, ni[6] = {0}, nw[6] = {0}, nwa[6] = {0}, wx[6] = {0};
    unsigned long long prev_pub = 0;
    for (int k = 0; k < K; k++) {
        const int st = (k % per) < 5 * L ? (k % per) % 5 : 5;
        unsigned long long rmin = ~0ull, pmax = 0;
        double w = 0, wmax = 0;
        int nb = 0;
        for (int b = 0; b < G; b++) {
            const unsigned long long r = t[(size_t)(2 * k) * G + b], p = t[(size_t)(2 * k + 1) * G + b];
            if (r && r < rmin) rmin = r;
            if (p > pmax) pmax = p;
            if (r && p >= r) {
                w += (double)(p - r);
                if ((double)(p - r) > wmax) wmax = (double)(p - r);
                nb++;
            }
        }
        if (nb) {
            wk[st] += w / nb;
            wx[st] += wmax;
            nw[st] += 1;
        }
        if (prev_pub && rmin != ~0ull && rmin >= prev_pub) {
            wa[st] += (double)(rmin - prev_pub);
            nwa[st] += 1;
        }
        if (prev_pub && pmax > prev_pub) {
            iv[st] += (double)(pmax - prev_pub);
            ni[st] += 1;
        }
        if (pmax) prev_pub = pmax;
    }
    fprintf(stderr, "megakernel(df) profile (%d of %d steps at pos %d; us per stage: interval / work / wake / slowest block's work):",
            K / per,
            n, pos);
    double tot = 0;
    for (int st = 0; st < 6; st++) {
        const double a = ni[st] ? iv[st] / ni[st] / 1e3 : 0, b = nw[st] ? wk[st] / nw[st] / 1e3 : 0,
                     c = nwa[st] ? wa[st] / nwa[st] / 1e3 : 0, d = nw[st] ? wx[st] / nw[st] / 1e3 : 0;
        tot += a * (st < 5 ? L : 1);
        fprintf(stderr, " %s %.1f/%.1f/%.1f/%.1f", nm[st], a, b, c, d);
    }
    fprintf(stderr, " | step %.1f us\n", tot);
    free(t);
}

// MQ_CUDA_PROFILE with the cluster kernel: per half-layer (attention half of the n_kv * 8 attention
// blocks, MLP half of all), the lm_head's rows and its tail (to the end of lm_step: the last block's
// token choice and embedding), from the stamps every block writes when its inputs are ready and when
// it published, for the first steps of the launch (us, mean over instances):
//   interval  last publish of this stage - last publish of the previous one (the critical path)
//   wake      first ready - the previous stage's last publish; skew: last ready - first ready
//   work      mean publish - ready; slowest: the largest publish - ready
// then who publishes last: in the attention half the share of instances whose last block is the K/V
// row's writer (rank 7), in the MLP half the share that are attention blocks, with both groups' mean
// work; for the lm_head's rows the gap between the last and the second-last block and the blocks
// more than 20% above the mean work.
static void cl_profile(mq_gpu *g, const unsigned long long *dprof, int n, int pos) {
    const int L = g->s.n_layers, per = 2 * L + 2, G = g->cl_grid, nA = g->s.n_kv * mqk::CL_CS;
    int K = 0;
    unsigned long long *t = prof_fetch(g, dprof, n * per, G, &K);
    if (!t) return;
    enum { NS = 4 };  // stage kinds: attention half, MLP half, lm_head rows, lm_head tail
    double iv[NS] = {0}, wk[NS] = {0}, wa[NS] = {0}, sk[NS] = {0}, wx[NS] = {0}, ni[NS] = {0}, nw[NS] = {0};
    double nwa[NS] = {0}, lastsp = 0, lastn = 0, wgrp[2] = {0}, ngrp[2] = {0}, lastm = 0, lastmn = 0;
    double gap = 0, ngap = 0, slow = 0;
    unsigned long long prev = 0;
    for (int k = 0; k < K; k++) {
        const int j = k % per, st = j >= 2 * L ? 2 + (j - 2 * L) : j & 1;
        unsigned long long rmin = ~0ull, rmax = 0, pmax = 0, p2 = 0;
        int bl = -1, nb = 0;
        double w = 0, wm = 0;
        for (int b = 0; b < G; b++) {
            const unsigned long long r = t[(size_t)(2 * k) * G + b], p = t[(size_t)(2 * k + 1) * G + b];
            if (!r || p < r) continue;
            rmin = r < rmin ? r : rmin, rmax = r > rmax ? r : rmax;
            if (p > pmax) p2 = pmax, pmax = p, bl = b;
            else if (p > p2) p2 = p;
            w += (double)(p - r), wm = (double)(p - r) > wm ? (double)(p - r) : wm, nb++;
            if (st == 1) wgrp[b < nA] += (double)(p - r), ngrp[b < nA] += 1;
        }
        if (!nb) continue;
        wk[st] += w / nb, wx[st] += wm, sk[st] += (double)(rmax - rmin), nw[st] += 1;
        if (st == 2) {
            gap += (double)(pmax - p2), ngap += 1;
            for (int b = 0; b < G; b++) {
                const unsigned long long r = t[(size_t)(2 * k) * G + b], p = t[(size_t)(2 * k + 1) * G + b];
                if (r && p >= r && (double)(p - r) > 1.2 * w / nb) slow += 1;
            }
        }
        if (prev && rmin >= prev && st != 3) wa[st] += (double)(rmin - prev), nwa[st] += 1;
        if (prev && pmax > prev) iv[st] += (double)(pmax - prev), ni[st] += 1;
        if (st == 0) lastsp += bl % mqk::CL_CS == mqk::CL_CS - 1, lastn += 1;
        if (st == 1) lastm += bl < nA, lastmn += 1;
        prev = pmax;
    }
    static const char *nm[NS] = {"attention half", "MLP half", "lm_head rows", "lm_head tail"};
    fprintf(stderr, "megakernel(cl) profile (%d of %d steps at pos %d; us: interval / wake / skew / work / slowest):", K / per,
            n, pos);
    for (int st = 0; st < NS; st++)
        fprintf(stderr, " %s %.2f / %.2f / %.2f / %.2f / %.2f;", nm[st], ni[st] ? iv[st] / ni[st] / 1e3 : 0,
                nwa[st] ? wa[st] / nwa[st] / 1e3 : 0, nw[st] ? sk[st] / nw[st] / 1e3 : 0,
                nw[st] ? wk[st] / nw[st] / 1e3 : 0, nw[st] ? wx[st] / nw[st] / 1e3 : 0);
    fprintf(stderr, " last attention publisher rank 7 in %.0f%%; last MLP publisher an attention block in %.0f%%; "
                    "MLP work attention / other blocks %.2f / %.2f; lm_head rows: last - second-last %.2f us, "
                    "%.1f blocks a step above 1.2 x the mean\n",
            lastn ? 100 * lastsp / lastn : 0, lastmn ? 100 * lastm / lastmn : 0,
            ngrp[1] ? wgrp[1] / ngrp[1] / 1e3 : 0, ngrp[0] ? wgrp[0] / ngrp[0] / 1e3 : 0,
            ngap ? gap / ngap / 1e3 : 0, ngap ? slow / ngap : 0);
    free(t);
}

// MQ_CUDA_PROFILE, dataflow kernel: block 0's time in each part of its stages (sprof_mark in
// megakernel.cu), us per stage instance at the SM clock, over the whole launch.
static void sub_profile(const unsigned long long *dsp, int cl) {
    unsigned long long t[64];
    int khz = 0, dev = 0;
    if (cudaMemcpy(t, dsp, sizeof t, cudaMemcpyDeviceToHost) != cudaSuccess || cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev) != cudaSuccess || khz <= 0) {
        (void)cudaGetLastError();
        return;
    }
    // in megakernel.cu's SP_* order
    static const char *nm[24] = {"qkv:norm", "wait-w", "mv", "publish", "att:prep", "rowcomb", "partials",
                                 "combine", "publish", "o:load", "wait-w", "mv", "publish", "gu:norm",
                                 "wait-w", "mv", "publish", "down:silu", "wait-w", "mv", "publish",
                                 "att:loop", "-", "-"};
    // decode_cl's (megakernel_cl.cuh CLP_*; 21: att_pass's loop)
    static const char *nc[24] = {"a:wait", "a:norm", "a:wait-w", "a:qkv-mv", "a:gather", "a:prep", "a:rowcomb",
                                 "a:xchg", "a:combine", "a:wait-o", "a:o-issue", "a:publish", "m:wait", "m:norm",
                                 "m:wait-w", "m:gu-mv", "m:silu", "m:wait-d", "m:down", "m:publish", "lm_head",
                                 "a:attloop", "a:o-mv", "a:o-sync"};
    fprintf(stderr, "megakernel(%s) block 0 sub-stages (us, mean):", cl ? "cl" : "df");
    for (int k = 0; k < 24; k++)
        if (t[24 + k]) fprintf(stderr, " %s %.2f", (cl ? nc : nm)[k], (double)t[k] / t[24 + k] / (khz * 1e-3));
    fprintf(stderr, "\n");
}

// MQ_CUDA_PROFILE: the lm_head's last block after its rows (lm_step's stamps in sprof[64 + 8 step + j]
// for the first 16 steps): 0 it knows it is last, 1 the bests reduced, 2 the token chosen and recorded,
// 3 the next token embedded. us, mean over the steps.
static void lm_tail_profile(const unsigned long long *dsp, int n) {
    unsigned long long t[192];
    if (cudaMemcpy(t, dsp, sizeof t, cudaMemcpyDeviceToHost) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    double d[3] = {0, 0, 0};
    int m = 0;
    for (int st = 0; st < n && st < 16; st++) {
        const unsigned long long *e = t + 64 + 8 * st;
        if (!e[0] || !e[2]) continue;
        d[0] += (double)(e[1] - e[0]), d[1] += (double)(e[2] - e[1]), d[2] += e[3] ? (double)(e[3] - e[2]) : 0;
        m++;
    }
    if (m)
        fprintf(stderr, "megakernel lm_head last block (%d steps, us): reduce %.2f, choose + record %.2f, embed %.2f\n",
                m, d[0] / m / 1e3, d[1] / m / 1e3, d[2] / m / 1e3);
}

// A cooperative launch (every block co-resident) in clusters of cs blocks.
static cudaError_t launch_clusters(const void *fn, int grid, int smem, int cs, void **args) {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute at[2];
    cfg.gridDim = dim3(grid), cfg.blockDim = dim3(NT), cfg.dynamicSmemBytes = (size_t)smem;
    at[0].id = cudaLaunchAttributeCooperative;
    at[0].val.cooperative = 1;
    at[1].id = cudaLaunchAttributeClusterDimension;
    at[1].val.clusterDim.x = cs, at[1].val.clusterDim.y = 1, at[1].val.clusterDim.z = 1;
    cfg.attrs = at, cfg.numAttrs = 2;
    return cudaLaunchKernelExC(&cfg, fn, args);
}

// One launch of n steps (n <= LOGITS_CHUNK when logits_all).
static int launch(mq_gpu *g, int has_ids, int32_t first, int pos, int n, int logits_all, int n_stop,
                  const Params *samp = NULL) {
    Params P = samp ? *samp : g->P;
    if (!has_ids) P.ids = NULL;
    P.n_stop = n_stop;
    P.first = first;
    P.pos = pos;
    P.n = n;
    P.logits_all = logits_all;
    CK(cudaMemset(P.bar, 0, 3 * sizeof(unsigned)));  // bar, ctl[0], ctl[1]
    const int df = g->sync == SYNC_DF || (g->sync == SYNC_AUTO && (long long)pos + n <= g->df_max);
    if (g->cl_max && (long long)pos + n <= g->cl_max) {
        // the cluster kernel: counters and residual sums zeroed, cooperative (every cluster
        // co-resident: they wait on each other's counters) and in clusters of CL_CS
        CK(cudaMemset(P.flg, 0, ((size_t)g->s.n_layers * 5 + 1) * sizeof(unsigned)));
        CK(cudaMemset(P.ra, 0, (size_t)2 * g->s.n_layers * g->s.hidden * sizeof(float)));
        if (g->profile) CK(cudaMemset(P.sprof, 0, 192 * 8));
        Params Pc = P;  // its own buffers; per-block stamps of its half-layers (cl_profile)
        const bool cprof = g->profile && P.prof && g->cl_grid <= g->grid_df;
        Pc.prof = cprof ? P.prof : NULL;
        if (cprof) CK(cudaMemset(P.prof, 0, (size_t)2 * g->prof_k * g->grid_df * 8));
        Pc.wbuf = (unsigned)g->cl_b0, Pc.wbuf1 = (unsigned)g->cl_b1, Pc.kvbuf = 0;
        Pc.lmring = g->cl_lmring, Pc.lmns = g->cl_lmns, Pc.clgu = g->cl_gu, Pc.clred = g->cl_red;
        Pc.clna = g->cl_na, Pc.clnc = g->cl_nc, Pc.mvr = g->cl_mvr, Pc.clpf = g->cl_pf;
        void *cargs[] = {&Pc};
        cudaError_t e = launch_clusters(mqk_kernel(g->kvt, 4), g->cl_grid, g->cl_smem, mqk::CL_CS, cargs);
        if (e == cudaSuccess) {
            CK(cudaGetLastError());
            CK(cudaDeviceSynchronize());
            if (cprof) cl_profile(g, P.prof, n, pos);
            if (g->profile) lm_tail_profile(P.sprof, n);
            if (g->profile) sub_profile(P.sprof, 1);
            return 0;
        }
        // a launch refused up front (nothing ran): say so once and run the dataflow kernel from now on
        (void)cudaGetLastError();
        fprintf(stderr, "megaqwen: the cluster kernel's launch failed (%s); the dataflow kernel runs instead\n",
                cudaGetErrorString(e));
        g->cl_max = 0;
        snprintf(g->cl_why, sizeof g->cl_why, "cluster kernel not used: its launch failed (%s)", cudaGetErrorString(e));
        char *d = strstr(g->desc, "; cluster kernel");
        if (d) snprintf(d, sizeof g->desc - (size_t)(d - g->desc), "; %s", g->cl_why);
    }
    // which kernel: grid barriers, dataflow (+ fused MLP), or that with attention's K/V ring past ring_ctx
    const int kid = !df ? 0 : !g->fuse ? 1 : P.attpipe > 0 && (long long)pos + n >= g->ring_ctx ? 3 : 2;
    if (!df) P.sprof = NULL;  // the sub-stage counters belong to the dataflow kernel (sprof_begin/end)
    if (df) {
        CK(cudaMemset(P.flg, 0, ((size_t)g->s.n_layers * 5 + 1) * sizeof(unsigned)));
        if (g->profile) CK(cudaMemset(P.prof, 0, (size_t)2 * g->prof_k * g->grid_df * 8));
        if (g->profile) CK(cudaMemset(P.sprof, 0, 192 * 8));
    }
    void *args[] = {&P};
    if (df && g->cluster > 1) {  // cooperative (grid-wide co-residency, as below) and in clusters
        CK(launch_clusters(mqk_kernel(g->kvt, kid), g->grid_df, g->smem_df, g->cluster, args));
    } else {
        CK(cudaLaunchCooperativeKernel(mqk_kernel(g->kvt, kid), dim3(df ? g->grid_df : g->grid), dim3(NT), args,
                                       (size_t)(df ? g->smem_df : g->smem), 0));
    }
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    if (g->profile && df) {
        df_profile(g, P.prof, n, pos);
        sub_profile(P.sprof, 0);
        lm_tail_profile(P.sprof, n);
    } else if (g->profile) {
        // barrier 0 opens after the embedding; then per step 5 per layer + 1 (lm_head)
        const int L = g->s.n_layers, ns = g->fuse ? 4 : 5, per = ns * L + 1;
        int nb = 1 + n * per - 1;  // the last step ends without a barrier
        if (nb > PROF_N) nb = PROF_N;
        unsigned long long *t = (unsigned long long *)malloc((size_t)nb * 8);
        if (t && cudaMemcpy(t, P.prof, (size_t)nb * 8, cudaMemcpyDeviceToHost) == cudaSuccess) {
            static const char *nm5[5] = {"qkv", "attn", "o", "gateup", "down"};
            static const char *nm4[5] = {"qkv", "attn", "o", "mlp(fused)", "-"};
            const char *const *nm = g->fuse ? nm4 : nm5;
            double sum[6] = {0}, cnt[6] = {0};
            for (int i = 1; i < nb; i++) {
                const int k = (i - 1) % per;
                const int st = k < ns * L ? k % ns : 5;
                sum[st] += (double)(t[i] - t[i - 1]);
                cnt[st] += 1;
            }
            fprintf(stderr, "megakernel profile (%d steps at pos %d, us per step):", n, pos);
            double tot = 0;
            for (int st = 0; st < 6; st++) {
                const double us = cnt[st] ? sum[st] / 1e3 / (cnt[st] / (st < 5 ? L : 1)) : 0;
                if (st == 4 && g->fuse) continue;
                tot += us;
                fprintf(stderr, " %s %.1f", st < 5 ? nm[st] : "lm_head+argmax", us);
            }
            fprintf(stderr, " | total %.1f (%.2f us per barrier interval)\n", tot, tot / per);
        }
        free(t);
    }
    return 0;
}

int mq_gpu_run(mq_gpu *g, const int32_t *ids, int32_t first, int pos, int n, float *logits_all, float *last,
               const int32_t *stop, int n_stop, int32_t *out_tok) {
    g->last_nf = -1;
    if (n < 1) return 0;
    if (pos < 0 || (long long)pos + n > g->max_ctx) {
        mq_err_set("cuda: %d steps at position %d pass the KV cache (%d positions)", n, pos, g->max_ctx);
        return -1;
    }
    const int V = g->s.vocab;
    if (ids) {
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= V) {
                mq_err_set("cuda: token id %d at index %d is outside the vocabulary (%d)", (int)ids[i], i, V);
                return -1;
            }
        if (n > 1 && mqp_enabled()) {  // a prompt: all tokens through each layer together (prefill.cu)
            int32_t lt = 0;
            const int r = mqp_prefill(&g->pf, &g->P, g->kvt, ids, n, pos, logits_all, last, out_tok ? &lt : NULL, 0);
            if (r < 0) return -1;
            if (r == 0) {
                g->last_nf = mqp_last_nonfinite(g->pf);
                if (out_tok) *out_tok = lt;
                return n;
            }  // r == 1: a shape prefill.cu does not handle; the decode kernel runs the steps
        }
        CK(cudaMemcpy((void *)g->P.ids, ids, (size_t)n * 4, cudaMemcpyHostToDevice));
        if (logits_all) {
            for (int c = 0; c < n; c += LOGITS_CHUNK) {
                const int m = n - c < LOGITS_CHUNK ? n - c : LOGITS_CHUNK;
                if (c) CK(cudaMemcpy((void *)g->P.ids, ids + c, (size_t)m * 4, cudaMemcpyHostToDevice));
                if (launch(g, 1, 0, pos + c, m, 1, 0)) return -1;
                CK(cudaMemcpy(logits_all + (size_t)c * V, g->P.logits, (size_t)m * V * 4, cudaMemcpyDeviceToHost));
            }
            if (last) memcpy(last, logits_all + (size_t)(n - 1) * V, (size_t)V * 4);
        } else {
            if (launch(g, 1, 0, pos, n, 0, 0)) return -1;
            if (last) CK(cudaMemcpy(last, g->P.logits, (size_t)V * 4, cudaMemcpyDeviceToHost));
        }
        if (out_tok) CK(cudaMemcpy(out_tok, g->P.tokens + (n - 1), 4, cudaMemcpyDeviceToHost));
        return n;
    }
    if (first < 0 || first >= V) {
        mq_err_set("cuda: token id %d is outside the vocabulary (%d)", (int)first, V);
        return -1;
    }
    if (n_stop > MAX_STOP) n_stop = MAX_STOP;
    if (n_stop > 0) CK(cudaMemcpy((void *)g->P.stop, stop, (size_t)n_stop * 4, cudaMemcpyHostToDevice));
    if (launch(g, 0, first, pos, n, 0, n_stop)) return -1;
    int ctl[2];
    CK(cudaMemcpy(ctl, g->P.ctl, sizeof ctl, cudaMemcpyDeviceToHost));
    const int done = ctl[1];
    if (done < 1 || done > n) {
        mq_err_set("cuda: decode kernel reported %d steps of %d", done, n);
        return -1;
    }
    if (out_tok) CK(cudaMemcpy(out_tok, g->P.tokens, (size_t)done * 4, cudaMemcpyDeviceToHost));
    if (last) CK(cudaMemcpy(last, g->P.logits, (size_t)V * 4, cudaMemcpyDeviceToHost));
    return done;
}

int mq_gpu_last_nonfinite(const mq_gpu *g) { return g->last_nf; }

int mq_gpu_sample_supported(const mq_gpu *g, const mq_gpu_samp *s) {
    if (s->top_k >= 1 && s->top_k <= mqk::SAMPLE_MAXK && s->top_k < g->s.vocab) return 1;
    return (s->top_k == 0 || s->top_k >= g->s.vocab) && !(s->top_p < 1.0f) && !(s->min_p > 0.0f);
}

int mq_gpu_sample(mq_gpu *g, int32_t id, int pos, int n, const mq_gpu_samp *s, uint64_t *rng, const int32_t *hist,
                  int n_hist, const int32_t *stop, int n_stop, int32_t *out) {
    if (n < 1) return 0;
    if (pos < 0 || (long long)pos + n > g->max_ctx) {
        mq_err_set("cuda: %d steps at position %d pass the KV cache (%d positions)", n, pos, g->max_ctx);
        return -1;
    }
    if (id < 0 || id >= g->s.vocab) {
        mq_err_set("cuda: token id %d is outside the vocabulary (%d)", (int)id, g->s.vocab);
        return -1;
    }
    if (!mq_gpu_sample_supported(g, s)) {
        mq_err_set("cuda: sampling settings not supported on the device (top_k %d)", s->top_k);
        return -1;
    }
    // the penalty window is the most recent ids; the launch appends n - 1 more (device buffer: max_ctx)
    if (!hist) n_hist = 0;
    if (n_hist > g->max_ctx - (n - 1)) {
        hist += n_hist - (g->max_ctx - (n - 1));
        n_hist = g->max_ctx - (n - 1);
    }
    Params P = g->P;
    P.samp = 1;
    P.s_temp = s->temperature;
    P.s_top_p = s->top_p;
    P.s_min_p = s->min_p;
    P.s_pen = s->rep_penalty;
    P.s_top_k = s->top_k;
    P.s_last_n = s->rep_last_n;
    P.n_hist = n_hist;
    if (P.n_hist > 0) CK(cudaMemcpy((void *)P.hist, hist, (size_t)n_hist * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(P.rng, rng, 8, cudaMemcpyHostToDevice));
    if (n_stop > MAX_STOP) n_stop = MAX_STOP;
    if (n_stop > 0) CK(cudaMemcpy((void *)P.stop, stop, (size_t)n_stop * 4, cudaMemcpyHostToDevice));
    if (launch(g, 0, id, pos, n, 0, n_stop, &P)) return -1;
    int ctl[2];
    CK(cudaMemcpy(ctl, P.ctl, sizeof ctl, cudaMemcpyDeviceToHost));
    const int done = ctl[1];
    if (done < 1 || done > n) {
        mq_err_set("cuda: decode kernel reported %d steps of %d", done, n);
        return -1;
    }
    CK(cudaMemcpy(out, P.tokens, (size_t)done * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(rng, P.rng, 8, cudaMemcpyDeviceToHost));
    if (out[done - 1] < 0) {  // (the kernel stops at a failed draw)
        mq_err_set("cuda: sampling failed: a logit is NaN or every logit is -inf");
        return -1;
    }
    return done;
}

int mq_gpu_sm_major(void) {
    int v = 0;
    if (!mq_gpu_available() || cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return v;
}

size_t mq_gpu_bytes(const mq_gpu *g) { return g ? g->bytes : 0; }

int mq_gpu_kv_elt(const mq_gpu *g) { return g && g->kvt != mqk::KV_F32 ? 2 : 4; }

const char *mq_gpu_describe(const mq_gpu *g) { return g ? g->desc : ""; }

float *mq_gpu_host_floats(size_t n) {
    void *p = nullptr;
    if (cudaMallocHost(&p, n * sizeof(float)) != cudaSuccess) {
        (void)cudaGetLastError();
        return nullptr;
    }
    memset(p, 0, n * sizeof(float));
    return static_cast<float *>(p);
}

void mq_gpu_host_free(void *p) {
    if (p) cudaFreeHost(p);
}

void mq_gpu_free(mq_gpu *g) {
    if (!g) return;
    mqp_free(g->pf);
    if (g->arena) cudaFree(g->arena);
    free(g);
}
