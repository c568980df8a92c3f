// prefill.cuh: batched prompt processing (all tokens of a chunk through each layer together) for gpu.cu.
#ifndef MQ_PREFILL_CUH
#define MQ_PREFILL_CUH
#include <cuda_runtime.h>
#include <stdint.h>

#include "megakernel.cuh"

struct mqp_state;  // scratch buffers, cuBLASLt handle and plan cache; made on the first call

// Run ids_host[0..n) at positions pos..pos+n-1 in chunks of at most 2048 tokens: every layer as
// GEMMs (bf16 in, fp32 accumulate: cuBLASLt, or sgemm.cu for chunks of <= 64 tokens) plus flash
// attention (mma.sync bf16), writing K/V of
// every position into the decode kernel's cache (P->kc/vc; element type kvt: mqk::KV_F32, KV_BF16 or KV_F16), so the
// decode megakernel continues from pos+n. P: the host copy of the decode kernel's parameters
// (device pointers; P->layers is read back once). logits_all (n, vocab) receives every row when
// non-NULL; last (vocab) the last row when non-NULL; *last_tok its argmax when non-NULL.
// *st is created on the first call (free with mqp_free). Returns 0, 1 when this path cannot run
// (head_dim not 32/64/128, or no GPU memory for its scratch buffers, ~C x (q|k|v + 2 inter) floats
// plus 128 x vocab logits: the caller falls back to the decode kernel), or -1 (mq_err set).
// Precision: GEMM and attention inputs as hi + lo bf16 pairs (near fp32) unless MQ_PREFILL_PREC=bf16.
// Launches go to the state's own stream, ordered after s's earlier work; returns after they finish.
// Chunks of <= 64 tokens replay a CUDA graph captured on the second call with that length (and
// logit rows); MQ_PREFILL_GRAPH=0 launches every kernel directly instead.
// Attention reads K/V as bf16 rows (an f32 cache is split into bf16 hi/lo scratch once per layer,
// grown to pos+n rows on demand); MQ_PREFILL_ATTN=1 selects the first kernel (converts per block).
// An f16 cache is read as it is, with q and P in f16 (one tensor-core product per term).
int mqp_prefill(mqp_state **st, const mqk::Params *P, int kvt, const int32_t *ids_host, int n, int pos,
                float *logits_all, float *last, int32_t *last_tok, cudaStream_t s);
// 1 unless MQ_CUDA_PREFILL=0 (then teacher-forced runs use the decode kernel step by step).
int mqp_enabled(void);
// After a successful mqp_prefill: 1 if a logit of its last row was NaN or inf, 0 if none was, both
// as checked on the device; -1 when the last row took a path without that check (scan it).
int mqp_last_nonfinite(const mqp_state *st);
void mqp_free(mqp_state *st);

#endif
