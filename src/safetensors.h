/* safetensors: mmap, header parse and validation, tensor lookup over one or many shards. */
#ifndef MQ_SAFETENSORS_H
#define MQ_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>
#include "config.h"

/* File dtypes: the three the engine computes with, plus the rest of the format's dtypes so
 * that files holding them parse (and a model needing one of them fails with a clear error). */
typedef enum {
    MQ_ST_F32, MQ_ST_F16, MQ_ST_BF16, MQ_ST_F64, MQ_ST_I64, MQ_ST_I32, MQ_ST_I16, MQ_ST_I8,
    MQ_ST_U8, MQ_ST_BOOL, MQ_ST_F8_E4M3, MQ_ST_F8_E5M2, MQ_ST_U16, MQ_ST_U32, MQ_ST_U64
} mq_st_dtype;

typedef struct {
    char *name;
    mq_st_dtype dtype;
    int ndim;
    int64_t shape[8];
    const void *data;   /* points into the mmap of its shard */
    size_t nbytes;
    const char *file;   /* shard file name, for error messages */
} mq_st_tensor;

typedef struct mq_st mq_st;

/* Open a checkpoint directory: model.safetensors, or model.safetensors.index.json and its shards.
 * Validates every header fully (length, JSON, dtypes, shapes × dtype size == byte range,
 * ranges inside the data section, no overlaps). Returns NULL on error (mq_err names file). */
mq_st *mq_st_open(const char *dir);
/* One file. */
mq_st *mq_st_open_file(const char *path);
/* Parse and validate a whole safetensors file image held in memory (the fuzzer's entry).
 * Returns tensor count or -1. */
int mq_st_validate(const uint8_t *buf, size_t len, const char *name);
const mq_st_tensor *mq_st_find(const mq_st *st, const char *name);
int mq_st_count(const mq_st *st);
const mq_st_tensor *mq_st_at(const mq_st *st, int i);
void mq_st_close(mq_st *st);
/* Maps engine dtypes; returns -1 for dtypes the engine cannot compute with. */
int mq_st_engine_dtype(mq_st_dtype t, mq_dtype *out);
const char *mq_st_dtype_name(mq_st_dtype t);

/* Writer (used by synth): tensors written in the given order, 8-byte aligned header. */
typedef struct {
    const char *name;
    mq_dtype dtype;
    int ndim;
    int64_t shape[4];
    const void *data;
} mq_st_wtensor;
int mq_st_write(const char *path, const mq_st_wtensor *t, int n);
/* Streaming writer (synth of multi-GB checkpoints): t[i].data is ignored; fill(dst, off, nbytes, i, user)
 * writes bytes [off, off + nbytes) of tensor i into dst (chunks of at most a few MiB, in order, off a
 * multiple of 8) and returns 0, or -1 to abort (after mq_err_set). */
typedef int (*mq_st_fill_fn)(void *dst, size_t off, size_t nbytes, int i, void *user);
int mq_st_write_fn(const char *path, const mq_st_wtensor *t, int n, mq_st_fill_fn fill, void *user);

#endif
