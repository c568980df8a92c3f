/* backend: the interface every compute backend (cpu reference, cuda megakernel) implements. */
#ifndef MQ_BACKEND_H
#define MQ_BACKEND_H
#include <stdint.h>
#include "model.h"

typedef struct mq_sampling mq_sampling; /* public, see include/megaqwen.h */

typedef struct mq_backend mq_backend;
struct mq_backend {
    const char *name;    /* "cpu" or "cuda" */
    int max_ctx;         /* KV cache capacity in positions */
    int kv_elt;          /* bytes per cached K or V element (4: fp32, 2: bf16) */
    /* Run ids[0..n) at positions pos..pos+n-1, writing their K/V into the cache (positions >= pos
     * from earlier calls are overwritten: that is how rewind works). If `logits` is non-NULL, write
     * all n rows (n, vocab) row-major; always leave the last row in last_logits. pos+n <= max_ctx
     * is the caller's check. Returns 0 or -1 (mq_err set). */
    int (*forward)(mq_backend *b, const int32_t *ids, int n, int pos, float *logits);
    /* (vocab) logits of the last position forward processed. */
    const float *(*last_logits)(mq_backend *b);
    /* Optional (NULL if absent): decode up to n tokens greedily starting by feeding `id` at `pos`,
     * choosing each next token on the device and feeding it back without a host round trip.
     * out[i] = token chosen after step i. Stops after a token in stop[0..n_stop). Returns the
     * number of tokens written, or -1. last_logits is then undefined until the next forward. */
    int (*generate_greedy)(mq_backend *b, int32_t id, int pos, int n, const int32_t *stop, int n_stop,
                           int32_t *out);
    /* Optional (NULL if absent): one step feeding `id` at `pos` and choosing the next token on the
     * device with sampling params s and history (for repetition penalty). Returns token or -1. */
    int (*step_sample)(mq_backend *b, int32_t id, int pos, const mq_sampling *s, uint64_t *rng,
                       const int32_t *hist, int n_hist);
    /* Optional (NULL if absent): generate_greedy's contract with sampling: up to n steps, each token
     * chosen on the device with params s (penalty window hist[0..n_hist) = the ids up to and
     * including `id`, plus the tokens fed since; *rng advanced per draw) and fed back without a host
     * round trip. Returns the count written to out, -1 on error, or 0 when the device cannot run
     * these settings (the caller then steps with step_sample). */
    int (*generate_sample)(mq_backend *b, int32_t id, int pos, int n, const mq_sampling *s, uint64_t *rng,
                           const int32_t *hist, int n_hist, const int32_t *stop, int n_stop, int32_t *out);
    void (*free)(mq_backend *b);
};

/* CPU reference (src/cpu.c). n_threads 0 = all cores. Returns NULL on error (mq_err). mq_cpu_new_kv
 * with kv "bf16" or "f16" rounds each cached K/V value to that type (kept in f32 storage), so it
 * computes what the cuda backend's 16-bit cache does; NULL or "f32": as computed. */
mq_backend *mq_cpu_new(const mq_model *m, int max_ctx, int n_threads);
mq_backend *mq_cpu_new_kv(const mq_model *m, int max_ctx, int n_threads, const char *kv);
/* CUDA megakernel (src/cuda_backend.c). NULL on error: no GPU, OOM, unsupported shape. The KV
 * cache element is $MQ_CUDA_KV (f32 when unset); mq_cuda_new_kv names it: "f32", "bf16" or "f16". */
mq_backend *mq_cuda_new(const mq_model *m, int max_ctx);
mq_backend *mq_cuda_new_kv(const mq_model *m, int max_ctx, const char *kv);
/* 1 if the binary was built with CUDA and a usable device is present. */
int mq_cuda_available(void);
/* 1 if the CUDA backend's prefill attention can use wgmma (Hopper, an sm_90a build), else 0. */
int mq_cuda_prefill_wgmma(void);

#endif
