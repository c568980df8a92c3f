// megakernel.cuh: the parameter block shared by the decode kernel (megakernel.cu) and its host side (gpu.cu).
#ifndef MQ_MEGAKERNEL_CUH
#define MQ_MEGAKERNEL_CUH
#include <cuda_bf16.h>
#include <stdint.h>

namespace mqk {

constexpr int NT = 256;       // threads per block
constexpr int LM_MAXNS = 16;  // most lm_head ring slots (decode_df, MQ_CUDA_LMRING)

// One layer's device weights (all in the arena). Matrices are bf16 row-major.
struct LayerW {
    const __nv_bfloat16 *qkv;   // (q_dim + 2*kv_dim, hidden): q rows, k rows, v rows
    const __nv_bfloat16 *o;     // (hidden, q_dim)
    const __nv_bfloat16 *gu;    // (2*inter, hidden): row 2j = gate_j, row 2j+1 = up_j (interleaved at upload)
    const __nv_bfloat16 *down;  // (hidden, inter), or its transpose (inter, hidden) when fuse
    const float *in_norm;       // (hidden)
    const float *post_norm;     // (hidden)
    const float *q_norm;        // (head_dim)
    const float *k_norm;        // (head_dim)
};

// MQ_CUDA_ATTPIPE's ring (megakernel_attention.cuh, att_pass with RING): at most this many slots
constexpr int ATTPIPE_MAXNS = 16;

// Optimizations of decode v6 (Params.opt bits, MQ_CUDA_OPT; each can be switched off to measure it).
enum {
    OPT_REGX = 1,    // matvec keeps x in registers (rows of 1,024 columns, >= 2 rows per warp)
    OPT_NORMW = 2,   // load_norm loads the norm weights together with x, before the block sum
    OPT_OWNX = 4,    // df: O / DOWN read their own rows of the residual from shared memory, loaded
                     // before the dependency wait (a block's O and DOWN rows are the same rows)
    // Measured and removed (docs/perf-notes.md): 8 KVSTAGE (attention's earlier K/V rows copied
    // into shared memory before the q|k|v wait: -6% as cp.async and as bulk copies, runs 9-13; code
    // removed in session 30 with the three-region weight ring, MQ_CUDA_RING: -1.5%, run 8),
    // 16 OCOMB4 (run 9, -8%) then KVPF (run 16, L2 prefetch of attention's K/V: -7% at 4K),
    // 64 ILP2 (run 12, +-0) then LTAB (run 16, computed layer pointers: -1%), 1024 LATE (run 18,
    // weight copies issued after the input loads: -4%)
    OPT_POLLR = 256, // df: dependency waits poll with relaxed loads and acquire once (a gpu-scope
                     // acquire load also invalidates L1: once per wait, not once per poll)
    OPT_ISSW = 512,  // df: bulk copies (staged weights, lm_head ring) are issued by warp 1, so
                     // thread 0's dependency poll never queues behind a copy issue
    OPT_HPAIR = 2048, // df: gate|up blocks own whole (gate_j, up_j) row pairs and publish
                      // h_j = silu(gate_j) * up_j, so DOWN loads I floats, not 2I, and no block
                      // recomputes all I SiLUs
    OPT_EVICT = 32,  // weight reads (bulk copies, streamed loads, L2 prefetches) are L2 evict-first
    OPT_GUEARLY = 128, // df: the gate|up weight copy starts when q|k|v's buffer frees, before attention
    OPT_GUATT = 8192,  // df, with GUEARLY: blocks with an attention item start it after attention
    OPT_ALTQ = 1 << 22, // df, fused MLP: the next q|k|v copy starts right after the gate|up matvec
                        // (buffer 0 free), not after the block's arrival, so it lands during the
                        // down part instead of during the MLP -> QKV hop (run 74: +2 / +3.5 / +1%
                        // at ctx 16 / 1K / 4K; mvbench modes 10-11, run 73: grid rounds whose copies
                        // are not in flight at the hop run 3.4 us against 4.6)
    // retired in session 13 (runs 74 and 77, slower): 1 << 20 ALTO (the O copy after the QKV stage's
    // input norm: -3%, the copy's issue and landing slowed the q|k|v matvec 2.7 -> 3.8 us), 1 << 21
    // ALTD (the downT copy after the MLP's norm: gate|up matvec +1.2 us), 1 << 23 ALTG (blocks
    // without an attention item start the gate|up copy after the QKV counter completes: -1.5% at
    // ctx 16), 1 << 24 WARR (each warp arrives on the fused MLP's counter after its own reds,
    // consumers wait for NW arrivals per block: -2.5% at ctx 16, the 8x arrivals on one counter
    // cost more than the block's wait for its reds)
    // retired: 4096 LL (run 22: stage vectors as polled value|tag words, -15%: the polling traffic),
    // 16384 FACQ (run 24: fence.acq_rel after the relaxed poll instead of an acquire load: every
    // stage's wake +0.3-0.5 us), 32768 GULATE (run 25: blocks without an attention item start the
    // gate|up copy after the O stage's input load: -0.5%, the time moved from attention to O),
    // 65536 MVCOL (run 34: the stage matvecs column-parallel, each thread a slice of the columns
    // of a batch of rows, a transposing butterfly for the sums: 0.2-0.35 us faster alone in mvbench
    // but -4.4% in the kernel, q|k|v's matvec 1.5 -> 2.8 us with more spills; code removed after
    // run 35, described in docs/perf-notes.md)
    OPT_ALL = OPT_REGX | OPT_NORMW | OPT_OWNX | OPT_EVICT | OPT_GUEARLY | OPT_POLLR | OPT_ISSW | OPT_HPAIR | OPT_GUATT |
              OPT_ALTQ,
    // measured (runs 9-13, docs/perf-notes.md): REGX +12%, NORMW +4%, OWNX +1%, EVICT +6%,
    // GUEARLY +1.5%; KVSTAGE -6% (cp.async) / -6% (bulk copies: 2 per position)
    // + POLLR +0.5%, ISSW +2%, HPAIR +2-4% (runs 16-19, session 3)
    // + GUATT +2.9 / +0.3 / -0.8% at ctx 16 / 1K / 4K (run 22, session 4); with it GUEARLY measured
    // neutral (run 25: off +0.4 / 0 / +1.5%, within noise)
    OPT_DEFAULT = OPT_REGX | OPT_NORMW | OPT_OWNX | OPT_EVICT | OPT_GUEARLY | OPT_POLLR | OPT_ISSW | OPT_HPAIR | OPT_GUATT |
                  OPT_ALTQ
};

struct Params {
    int vocab, hidden, inter, n_layers, nh, nkv, hd, qdim, max_ctx;
    int lpr;         // lanes per K/V row in attention: hd/8 rounded up to a power of two (<= 32)
    int max_chunks;  // attention chunks per kv head the part buffer holds
    float eps;
    const LayerW *layers;            // (n_layers), device memory
    const __nv_bfloat16 *embed;      // (vocab, hidden)
    const __nv_bfloat16 *lm_head;    // (vocab, hidden); == embed when tied
    const float *final_norm;         // (hidden)
    const float *rope;               // (max_ctx, hd/2, 2) cos, sin of float32(pos * inv_freq[i])
    unsigned wsmem;                  // bytes of dynamic smem for staged weight slices (0 = stream)
    void *kc, *vc;                   // (n_layers, n_kv, max_ctx, hd) each (head-major: a kv head's rows for
                                     // consecutive positions are contiguous), f32 or bf16 (kernel template)
    float *x;                        // (hidden) residual stream
    float *x1;                       // (hidden) copy of x after o_proj (fuse: read while x takes atomics)
    int fuse;                        // 1: gate|up + down in one stage (split-K down with atomics)
    float *qkv;                      // (q_dim + 2*kv_dim) raw projections
    float *att;                      // (q_dim) attention output
    float *gu;                       // (2*inter) raw gate/up, interleaved
    float *part;                     // (n_heads, max_chunks, hd+2) per-chunk (m, l, acc)
    unsigned *att_cnt;               // (n_kv) chunks finished per kv head (self-resetting)
    unsigned *lm_cnt;                // (1) blocks finished with the lm_head (self-resetting)
    unsigned long long *best;        // (grid) per-block packed (logit key, ~index)
    float *logits;                   // (n, vocab) when logits_all, else (vocab)
    int32_t *tokens;                 // (n) chosen token per step
    unsigned *bar;                   // grid barrier counter, zeroed before each launch
    // dataflow kernel (decode_df): one counter per (layer, stage) + the embed counter, zeroed before
    // each launch; each only grows within a launch (a consumer waits for producers x steps so far)
    unsigned *flg;                   // (n_layers * 5 + 1)
    unsigned wbuf;                   // bytes of staged-weight buffer 0 (q|k|v, gate|up; 0: stream all)
    unsigned wbuf1;                  // bytes of buffer 1 (o, down), after buffer 0
    unsigned kvbuf;                  // bytes of the spare region after buffer 1 (0: none): attention's
                                     // K/V ring slots and the lm_head ring's slots beyond buffer 1
    int minch;                       // fewest positions in an attention chunk (MQ_CUDA_MINCH, default 64)
    int attpipe;                     // decode_df<..., RING>: chunks of at least this many positions read
                                     // K/V through the bulk-copy ring (att_pass, RING; MQ_CUDA_ATTPIPE,
                                     // default 1 = all; 0 = the ring kernel is not launched)
    unsigned attslot;                // the ring's slot bytes (MQ_CUDA_ATTSLOT KB, default 48)
    int attns0, attns;               // its slots in buffer 0, and in all (the rest in the spare region)
    int lmpf;                        // lm_head: L2 prefetch distance in rows per warp (MQ_CUDA_LMPF, default 4)
    // df lm_head ring (MQ_CUDA_LMRING): lmns slots of lmring rows each, copied by the bulk copy engine
    // into shared memory from the DOWN weight buffer on; lmring = 0: the streamed matvec (lmpf)
    int lmring;                      // lm_head rows per slot
    int lmns;                        // slots (2 .. LM_MAXNS)
    size_t wpf;                      // df: bytes per block of a streamed stage's L2 prefetch (a slice
                                     // larger than its weight buffer; MQ_CUDA_WPF KB, default 0: none)
    size_t lmpre;                    // df: bytes per block of the lm_head's L2 prefetch at the last layer's
                                     // end of a launch's last step (MQ_CUDA_LMPRE, KB; default 0)
    int ocomb;                       // df: the O stage combines attention chunks (MQ_CUDA_OCOMB=1)
    int opt;                         // OPT_* bits above (MQ_CUDA_OPT, default OPT_DEFAULT)
    int mvr;                         // matvec's register path: rows a warp takes together (MQ_CUDA_MVR 4 / 2 / 1)
    int prof_k;                      // stage instances the df profile records (2 stamps x grid each)
    unsigned long long *prof;        // (65536) barrier-open times of block 0, or NULL (MQ_CUDA_PROFILE)
    unsigned long long *sprof;       // (64) df sub-stage cycles of block 0 (sprof_mark), then (16, 8) the lm_head's
                                     // last block's stamps per step (lm_step), or NULL
    // cluster kernel (decode_cl, megakernel_cl.cuh): per-layer residual sums, zeroed before each launch
    float *ra;                       // (n_layers, hidden) x + o_proj(attention) of layer l
    float *rm;                       // (n_layers, hidden) ra[l] + MLP(ra[l]): layer l+1's input
    const __nv_bfloat16 *ob;         // (n_layers, n_kv, 8, hidden / 8, G * hd) o_proj in tiles: tile (l, h, r)
                                     // = rows [r hidden/8, +hidden/8) x kv head h's columns, contiguous
    int clgu;                        // decode_cl: attention blocks start the gate|up copy 0: after q|k|v,
                                     // 1: after the head prep (default), 2: after the o tile (MQ_CUDA_CLGU)
    int clna;                        // decode_cl: MLP pairs of each attention block (MQ_CUDA_CLMW; 0: the
                                     // even split over all blocks), the other blocks share the rest
    int clnc;                        // decode_cl: the most pairs of any block (0: the even split's)
    int clred;                       // decode_cl: the MLP's down partials summed in the cluster first
                                     // (DSMEM), one float atomic per cluster (MQ_CUDA_CLRED, default 1;
                                     // 0: every block's)
    int clpf;                        // decode_cl: each attention rank asks L2 for its K/V rows of earlier
                                     // positions before the layer's wait (MQ_CUDA_CLPF, default 1; 0: off)
    int *ctl;                        // [0] stop flag, [1] steps done; zeroed before each launch
    const int32_t *ids;              // (n) teacher-forced ids, or NULL for greedy
    const int32_t *stop;             // (n_stop)
    int n_stop;
    int first, pos, n, logits_all;
    // device sampling (mq_gpu_sample): samp = 1 replaces the argmax by sample_block (sample.cuh)
    int samp;
    float s_temp, s_top_p, s_min_p, s_pen;
    int s_top_k, s_last_n;
    int32_t *hist;                   // (max_ctx) ids for the repetition penalty: [0, n_hist) from the
                                     // host, then each step of a launch appends the token it feeds next
    int n_hist;
    unsigned *seen;                  // (vocab) penalty marks, all zero between launches
    float *probs;                    // (vocab) sampling scratch
    unsigned long long *rng;         // (1) xorshift64* state
    // distributed top-k (sample.cuh, samp_cands): every lm_head block offers its rows' candidates, the
    // last block samples from their union (dk = 0: the one-block passes over the whole vocabulary)
    int dk;                          // MQ_CUDA_DK (default 1)
    float *dk_l;                     // (grid, DK_CMAX) a block's candidate logits (after the penalty), id order
    int *dk_i;                       // (grid, DK_CMAX) their ids
    int *dk_n;                       // (grid) candidates of a block; -1: too many, or a NaN logit
    unsigned *dk_x;                  // (grid) order key of the largest logit a block left out (0: none)
    int *dk_c;                       // (grid * DK_CMAX) the last block's compact candidate ids
};

constexpr int CL_CS = 8;  // decode_cl: blocks per cluster (the portable maximum)

// Shared-memory layout of decode_cl's stage vectors (floats, after the two weight buffers); the
// host sizes the region with the same function (gpu.cu's cl_plan).
struct ClSm {
    int xs, g2, h;      // normed input (hidden); the MLP's gate|up values (2 ncmax) and h (ncmax)
    int qv, qg, qs;     // rank's q|k|v rows (RR); the head's gathered rows (8 RR, remote-written); queries (G hd)
    int res, px, pm;    // rank's partials (pxs); all ranks' (8 pxs, remote-written); att_pass scratch
    int attv, ot;       // combined attention output (G hd); the o tile's output rows (hidden / 8)
    int pw;             // the head prep's q_norm, k_norm (hd each) and RoPE row (hd / 2 (cos, sin) pairs)
    int pxs, total;     // floats per rank's partials (G (hd + 2) rounded up to 4); region size
};
__host__ __device__ inline ClSm cl_sm_layout(int hidden, int nh, int nkv, int hd, int ncmax, int samp_words) {
    const int G = nh / nkv, RR = (G + 2) * hd / CL_CS, gs = G < 4 ? G : 4;
    auto up4 = [](int x) { return (x + 3) & ~3; };
    ClSm s;
    s.pxs = up4(G * (hd + 2));
    int o = 0;
    s.xs = o, o += up4(hidden);
    s.g2 = o, o += up4(2 * ncmax);
    s.h = o, o += up4(ncmax);
    s.qv = o, o += up4(RR);
    s.qg = o, o += up4(CL_CS * RR);
    s.qs = o, o += up4(G * hd);
    s.res = o, o += s.pxs;
    s.px = o, o += CL_CS * s.pxs;
    s.pm = o, o += up4(NT / 32 * gs * (hd + 2));
    s.attv = o, o += up4(G * hd);
    s.ot = o, o += up4(hidden / CL_CS);
    s.pw = o, o += 3 * hd;
    s.total = o > samp_words ? o : samp_words;  // the lm_head's sampling scratch reuses the region
    return s;
}

}  // namespace mqk

#endif
