/* gpu: the narrow C boundary to the CUDA megakernel (src/cuda/); no CUDA type crosses it. */
#ifndef MQ_GPU_H
#define MQ_GPU_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Model dimensions the device needs (copied from mq_config). */
typedef struct {
    int vocab, hidden, inter, n_layers, n_heads, n_kv, head_dim;
    float eps;
    int tied;          /* 1: lm_head is the embedding (one device copy) */
} mq_gpu_shape;

/* Where mq_gpu_put copies a host buffer. bf16 slots take uint16_t bf16 bits, f32 slots floats. */
typedef enum {
    MQ_GPU_QKV = 0,    /* bf16 (q_dim + 2*kv_dim, hidden): q_proj rows, then k_proj, then v_proj */
    MQ_GPU_O,          /* bf16 (hidden, q_dim) */
    MQ_GPU_GATEUP,     /* bf16 (2*inter, hidden): gate_proj rows, then up_proj rows */
    MQ_GPU_DOWN,       /* bf16 (hidden, inter) */
    MQ_GPU_IN_NORM,    /* f32 (hidden) */
    MQ_GPU_POST_NORM,  /* f32 (hidden) */
    MQ_GPU_Q_NORM,     /* f32 (head_dim) */
    MQ_GPU_K_NORM,     /* f32 (head_dim) */
    MQ_GPU_EMBED,      /* bf16 (vocab, hidden), layer ignored */
    MQ_GPU_LM_HEAD,    /* bf16 (vocab, hidden), layer ignored; not used when tied */
    MQ_GPU_FINAL_NORM, /* f32 (hidden), layer ignored */
    MQ_GPU_ROPE        /* f32 (max_ctx, head_dim/2, 2) RoPE cos, sin (mq_rope_table), layer ignored */
} mq_gpu_slot;

typedef struct mq_gpu mq_gpu;

/* 1 if a CUDA device is usable, else 0 (never fails loudly). */
int mq_gpu_available(void);
/* 1 if the prefill's attention can run on wgmma here (this GPU runs an sm_90a image), else 0. */
int mq_gpu_prefill_wgmma(void);
/* Allocate one device arena for weights, KV cache and scratch; check the shape is one the kernel
 * supports. kv: the KV cache element, "f32", "bf16" or "f16" (NULL: $MQ_CUDA_KV, else f32). NULL on
 * error (mq_err: no device, OOM with sizes, unsupported shape, unknown kv). */
mq_gpu *mq_gpu_new(const mq_gpu_shape *s, int max_ctx, const char *kv);
/* Copy `bytes` of host data into a slot (bytes must equal the slot's size). 0 or -1. */
int mq_gpu_put(mq_gpu *g, mq_gpu_slot slot, int layer, const void *src, size_t bytes);
/* Run n decode steps in ONE kernel launch, at positions pos..pos+n-1.
 *  ids != NULL: teacher forcing, step i feeds ids[i]; logits_all (n, vocab) receives every row
 *               when non-NULL (else the lm_head runs only on the last step).
 *  ids == NULL: greedy, step 0 feeds `first`, step i>0 feeds the argmax of step i-1; stops after a
 *               token in stop[0..n_stop). out_tok (n) receives the chosen token of each step.
 *  last (vocab) receives the last step's logits when non-NULL.
 * Returns the number of steps run, or -1 (mq_err). */
int mq_gpu_run(mq_gpu *g, const int32_t *ids, int32_t first, int pos, int n, float *logits_all,
               float *last, const int32_t *stop, int n_stop, int32_t *out_tok);
/* After mq_gpu_run: 1 if its last logits row holds a NaN or inf, 0 if it holds none, both as
 * checked on the device (a prompt's last row through the prefill's GEMV head); -1 when the run's
 * last row was not checked there (the caller scans `last` itself). */
int mq_gpu_last_nonfinite(const mq_gpu *g);
/* Sampling settings the device understands (mirrors mq_sampling; see src/sampler.c). */
typedef struct {
    float temperature, top_p, min_p, rep_penalty;
    int top_k, rep_last_n;
} mq_gpu_samp;
/* 1 if mq_gpu_sample runs these settings on the device: top_k in [1, 1024], or no top-p/min-p. */
int mq_gpu_sample_supported(const mq_gpu *g, const mq_gpu_samp *s);
/* Up to n decode steps in one launch, feeding `id` at `pos`, then each step samples the next token
 * on the device and feeds it back (no host round trip), as src/sampler.c would step by step: the
 * penalty window is hist[0..n_hist) (the ids up to and including `id`) plus the tokens fed since;
 * *rng is the xorshift64* state, advanced as src/sampler.c does. Stops after a token in
 * stop[0..n_stop). Writes the chosen tokens to out; returns their count (>= 1) or -1 (mq_err). */
int mq_gpu_sample(mq_gpu *g, int32_t id, int pos, int n, const mq_gpu_samp *s, uint64_t *rng, const int32_t *hist,
                  int n_hist, const int32_t *stop, int n_stop, int32_t *out);
/* The dataflow decode kernel's shared-memory plan (two-buffer mode) for `grid` blocks: bytes of
 * weight buffer 0 (each block's q|k|v and gate|up row slices; gate|up in whole (gate, up) row
 * pairs), buffer 1 (o and down) and a spare region (attention's K/V ring, the lm_head ring).
 * optin: the bytes a block may use; base: what the kernel needs beside them (stage vectors, static
 * shared memory); bulk: the device has the bulk copy engine (sm_90), without which nothing is
 * staged (all zero). Where both
 * buffers cannot hold their largest slices, both take the largest slice that fits twice and the
 * larger stages stream their weights from global memory. Pure arithmetic (no device needed). */
typedef struct {
    size_t wbuf0, wbuf1, kvbuf;
} mq_gpu_smem;
mq_gpu_smem mq_gpu_plan_smem(const mq_gpu_shape *s, int grid, size_t optin, size_t base, int bulk);
/* Bytes of device memory the arena holds. */
size_t mq_gpu_bytes(const mq_gpu *g);
/* Bytes per K or V element of the device cache: 4 (f32, default) or 2 (bf16, f16). */
int mq_gpu_kv_elt(const mq_gpu *g);
/* Device 0's compute capability major number (9: Hopper), 0 without a device. */
int mq_gpu_sm_major(void);
/* One line describing the device and launch shape (for logs). */
const char *mq_gpu_describe(const mq_gpu *g);
void mq_gpu_free(mq_gpu *g);
/* n floats of zeroed page-locked host memory (device copies land in it without a staging copy),
 * NULL if the driver refuses; freed by mq_gpu_host_free. */
float *mq_gpu_host_floats(size_t n);
void mq_gpu_host_free(void *p);

#ifdef __cplusplus
}
#endif
#endif
