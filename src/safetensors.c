/* safetensors: mmaps checkpoint shards, validates every header byte, looks tensors up by name, writes files. */
#include "safetensors.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "err.h"

/* The safetensors reference implementation refuses headers above 100 MB; so do we. */
#define MQ_ST_MAX_HEADER ((uint64_t)100 << 20)
/* mq_st_write_fn's chunk: a multiple of 8 (every dtype size divides it). */
#define MQ_ST_WCHUNK ((size_t)4 << 20)

typedef struct {
    char *path;       /* as opened, for error messages */
    const char *base; /* points into path: the file name alone */
    void *map;        /* whole file, PROT_READ */
    size_t len;
} mq_st_shard;

struct mq_st {
    mq_st_tensor *t; /* (n) sorted by name, for bsearch; names owned here */
    int n;
    mq_st_shard *sh; /* (n_sh) */
    int n_sh;
};

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    [MQ_ST_F32] = {"F32", 4},   [MQ_ST_F16] = {"F16", 2},         [MQ_ST_BF16] = {"BF16", 2},
    [MQ_ST_F64] = {"F64", 8},   [MQ_ST_I64] = {"I64", 8},         [MQ_ST_I32] = {"I32", 4},
    [MQ_ST_I16] = {"I16", 2},   [MQ_ST_I8] = {"I8", 1},           [MQ_ST_U8] = {"U8", 1},
    [MQ_ST_BOOL] = {"BOOL", 1}, [MQ_ST_F8_E4M3] = {"F8_E4M3", 1}, [MQ_ST_F8_E5M2] = {"F8_E5M2", 1},
    [MQ_ST_U16] = {"U16", 2},   [MQ_ST_U32] = {"U32", 4},         [MQ_ST_U64] = {"U64", 8},
};
#define N_DTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

const char *mq_st_dtype_name(mq_st_dtype t) {
    return (int)t >= 0 && (int)t < N_DTYPES ? dtypes[t].name : "?";
}

int mq_st_engine_dtype(mq_st_dtype t, mq_dtype *out) {
    switch (t) {
    case MQ_ST_F32: *out = MQ_F32; return 0;
    case MQ_ST_F16: *out = MQ_F16; return 0;
    case MQ_ST_BF16: *out = MQ_BF16; return 0;
    default: return -1;
    }
}

static const char *basename_of(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static void free_tensors(mq_st_tensor *t, int n) {
    if (!t) return;
    for (int i = 0; i < n; i++) free(t[i].name);
    free(t);
}

/* A JSON number that is a non-negative integer exactly representable as a double. */
static int json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

typedef struct {
    uint64_t begin, end;
    int idx;
} range;

static int cmp_range(const void *a, const void *b) {
    const range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const mq_st_tensor *)a)->name, ((const mq_st_tensor *)b)->name);
}

/* Parse and validate one file image. On success returns the tensor count and, when out is
 * non-NULL, a malloc'd array of tensors (names malloc'd, data pointing into buf, file = label). */
static int parse_header(const uint8_t *buf, size_t len, const char *name, const char *label,
                        mq_st_tensor **out) {
    if (out) *out = NULL;
    if (len < 8) {
        mq_err_set("%s: file is %zu bytes, too short for the 8-byte header length", name, len);
        return -1;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
    if (hlen > len - 8) {
        mq_err_set("%s: header length %llu is past end of file (%zu bytes)", name,
                   (unsigned long long)hlen, len);
        return -1;
    }
    if (hlen > MQ_ST_MAX_HEADER) {
        mq_err_set("%s: header length %llu is above the 100 MB limit", name, (unsigned long long)hlen);
        return -1;
    }
    if (hlen < 2 || buf[8] != '{') {
        mq_err_set("%s: header is not a JSON object", name);
        return -1;
    }
    const char *hdr = (const char *)buf + 8;
    const uint8_t *data = buf + 8 + hlen;
    uint64_t data_len = len - 8 - hlen;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr ? (size_t)(end - hdr) : 0;
        mq_err_set("%s: header is bad JSON near byte %zu", name, at);
        return -1;
    }
    /* Only whitespace (the writers' alignment padding) may follow the JSON object. */
    for (const char *p = end; p && p < hdr + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            mq_err_set("%s: header has trailing bytes after its JSON object (at byte %zu)", name,
                       (size_t)(p - hdr));
            cJSON_Delete(root);
            return -1;
        }
    if (!cJSON_IsObject(root)) {
        mq_err_set("%s: header is not a JSON object", name);
        cJSON_Delete(root);
        return -1;
    }
    int cap = cJSON_GetArraySize(root);
    mq_st_tensor *t = calloc(cap ? (size_t)cap : 1, sizeof *t);
    range *rg = calloc(cap ? (size_t)cap : 1, sizeof *rg);
    int n = 0;
    if (!t || !rg) { mq_err_set("%s: out of memory", name); goto fail; }
    for (const cJSON *e = root->child; e; e = e->next) {
        const char *tn = e->string ? e->string : "";
        if (!strcmp(tn, "__metadata__")) {
            if (!cJSON_IsObject(e)) { mq_err_set("%s: __metadata__ is not an object", name); goto fail; }
            for (const cJSON *m = e->child; m; m = m->next)
                if (!cJSON_IsString(m)) {
                    mq_err_set("%s: __metadata__ value '%.80s' is not a string", name, m->string ? m->string : "");
                    goto fail;
                }
            continue;
        }
        if (!cJSON_IsObject(e)) { mq_err_set("%s: tensor %.200s: entry is not an object", name, tn); goto fail; }
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!dt || !sh || !of) {
            mq_err_set("%s: tensor %.200s has no %s", name, tn, !dt ? "dtype" : !sh ? "shape" : "data_offsets");
            goto fail;
        }
        if (!cJSON_IsString(dt)) { mq_err_set("%s: tensor %.200s: dtype is not a string", name, tn); goto fail; }
        int d = 0;
        while (d < N_DTYPES && strcmp(dtypes[d].name, dt->valuestring)) d++;
        if (d == N_DTYPES) {
            mq_err_set("%s: tensor %.200s has unknown dtype '%.40s'", name, tn, dt->valuestring);
            goto fail;
        }
        mq_st_tensor *x = &t[n];
        x->dtype = (mq_st_dtype)d;
        if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > 8) {
            mq_err_set("%s: tensor %.200s: shape must be an array of at most 8 dims", name, tn);
            goto fail;
        }
        uint64_t elems = 1;
        int overflow = 0;
        for (const cJSON *s = sh->child; s; s = s->next) {
            uint64_t dim;
            if (json_u64(s, &dim) < 0) {
                mq_err_set("%s: tensor %.200s: shape has a dim that is not a non-negative integer", name, tn);
                goto fail;
            }
            x->shape[x->ndim++] = (int64_t)dim;
            if (__builtin_mul_overflow(elems, dim, &elems)) overflow = 1;
        }
        uint64_t nbytes = 0;
        if (overflow || __builtin_mul_overflow(elems, (uint64_t)dtypes[d].size, &nbytes)) {
            mq_err_set("%s: tensor %.200s: shape product overflows", name, tn);
            goto fail;
        }
        uint64_t b, en;
        if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 || json_u64(of->child, &b) < 0 ||
            json_u64(of->child->next, &en) < 0) {
            mq_err_set("%s: tensor %.200s: data_offsets must be [begin, end] non-negative integers", name, tn);
            goto fail;
        }
        if (b > en || en > data_len) {
            mq_err_set("%s: tensor %.200s: data_offsets [%llu, %llu] out of range (data section is %llu bytes)",
                       name, tn, (unsigned long long)b, (unsigned long long)en, (unsigned long long)data_len);
            goto fail;
        }
        if (en - b != nbytes) {
            mq_err_set("%s: tensor %.200s: shape needs %llu bytes of %s but data_offsets span %llu", name, tn,
                       (unsigned long long)nbytes, dtypes[d].name, (unsigned long long)(en - b));
            goto fail;
        }
        x->data = data + b;
        x->nbytes = (size_t)nbytes;
        x->file = label;
        if (!(x->name = strdup(tn))) { mq_err_set("%s: out of memory", name); goto fail; }
        rg[n] = (range){b, en, n};
        n++;
    }
    /* Overlaps: sorted by begin, each non-empty range must start at or after the previous end. */
    qsort(rg, (size_t)n, sizeof *rg, cmp_range);
    uint64_t prev_end = 0;
    int prev = -1;
    for (int i = 0; i < n; i++) {
        if (rg[i].begin == rg[i].end) continue;
        if (prev >= 0 && rg[i].begin < prev_end) {
            mq_err_set("%s: tensors %.200s and %.200s overlap (data_offsets %llu < %llu)", name,
                       t[prev].name, t[rg[i].idx].name, (unsigned long long)rg[i].begin,
                       (unsigned long long)prev_end);
            goto fail;
        }
        prev_end = rg[i].end;
        prev = rg[i].idx;
    }
    qsort(t, (size_t)n, sizeof *t, cmp_tensor_name);
    for (int i = 1; i < n; i++)
        if (!strcmp(t[i].name, t[i - 1].name)) {
            mq_err_set("%s: tensor %.200s appears twice in the header", name, t[i].name);
            goto fail;
        }
    free(rg);
    cJSON_Delete(root);
    if (out) *out = t;
    else free_tensors(t, n);
    return n;
fail:
    free(rg);
    free_tensors(t, n);
    cJSON_Delete(root);
    return -1;
}

int mq_st_validate(const uint8_t *buf, size_t len, const char *name) {
    return parse_header(buf, len, name, name, NULL);
}

/* mmap one shard read-only; no copy: tensor data pointers point into the mapping. */
static int map_shard(mq_st_shard *s, const char *path) {
    memset(s, 0, sizeof *s);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { mq_err_set("%s: cannot open: %s", path, strerror(errno)); return -1; }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        mq_err_set("%s: not a regular file", path);
        close(fd);
        return -1;
    }
    if (sb.st_size < 8) {
        mq_err_set("%s: file is %lld bytes, too short for the 8-byte header length", path, (long long)sb.st_size);
        close(fd);
        return -1;
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) { mq_err_set("%s: mmap failed: %s", path, strerror(errno)); return -1; }
    if (!(s->path = strdup(path))) {
        munmap(m, (size_t)sb.st_size);
        mq_err_set("%s: out of memory", path);
        return -1;
    }
    s->base = basename_of(s->path);
    s->map = m;
    s->len = (size_t)sb.st_size;
    return 0;
}

void mq_st_close(mq_st *st) {
    if (!st) return;
    free_tensors(st->t, st->n);
    for (int i = 0; i < st->n_sh; i++) {
        if (st->sh[i].map) munmap(st->sh[i].map, st->sh[i].len);
        free(st->sh[i].path);
    }
    free(st->sh);
    free(st);
}

/* Map shard `path` into st and append its tensors (re-sorted later by the caller). */
static int add_shard(mq_st *st, const char *path) {
    mq_st_shard *sh = realloc(st->sh, (size_t)(st->n_sh + 1) * sizeof *sh);
    if (!sh) { mq_err_set("%s: out of memory", path); return -1; }
    st->sh = sh;
    if (map_shard(&sh[st->n_sh], path) < 0) return -1;
    mq_st_shard *s = &sh[st->n_sh++];
    mq_st_tensor *t;
    int n = parse_header(s->map, s->len, s->path, s->base, &t);
    if (n < 0) return -1;
    mq_st_tensor *all = realloc(st->t, (size_t)(st->n + n + 1) * sizeof *all);
    if (!all) { free_tensors(t, n); mq_err_set("%s: out of memory", path); return -1; }
    memcpy(all + st->n, t, (size_t)n * sizeof *t);
    free(t);
    st->t = all;
    st->n += n;
    return 0;
}

mq_st *mq_st_open_file(const char *path) {
    mq_st *st = calloc(1, sizeof *st);
    if (!st) { mq_err_set("%s: out of memory", path); return NULL; }
    if (add_shard(st, path) < 0) { mq_st_close(st); return NULL; }
    return st;
}

static char *join(const char *dir, const char *file) {
    size_t a = strlen(dir), b = strlen(file);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, file, b + 1);
    return p;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { mq_err_set("%s: cannot open: %s", path, strerror(errno)); return NULL; }
    struct stat sb;
    if (fstat(fileno(f), &sb) < 0 || sb.st_size > (off_t)(256 << 20)) {
        fclose(f);
        mq_err_set("%s: cannot read (or larger than 256 MiB)", path);
        return NULL;
    }
    char *buf = malloc((size_t)sb.st_size + 1);
    size_t n = buf ? fread(buf, 1, (size_t)sb.st_size, f) : 0;
    fclose(f);
    if (!buf || n != (size_t)sb.st_size) { free(buf); mq_err_set("%s: read error", path); return NULL; }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* model.safetensors.index.json: {"metadata": {...}, "weight_map": {tensor: shard file}}.
 * Each distinct shard is mapped once; every weight_map entry must be found in its shard. */
static mq_st *open_index(const char *dir, const char *ipath) {
    size_t len;
    char *buf = slurp(ipath, &len);
    if (!buf) return NULL;
    const char *base = basename_of(ipath);
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    mq_st *st = calloc(1, sizeof *st);
    char **files = NULL;
    int n_files = 0;
    if (!st) { mq_err_set("%s: out of memory", ipath); goto fail; }
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!root || !cJSON_IsObject(root)) { mq_err_set("%s: bad JSON", ipath); goto fail; }
    if (!cJSON_IsObject(wm) || !wm->child) { mq_err_set("%s: no weight_map object", ipath); goto fail; }
    files = calloc((size_t)cJSON_GetArraySize(wm), sizeof *files);
    if (!files) { mq_err_set("%s: out of memory", ipath); goto fail; }
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, '/') ||
            !strcmp(e->valuestring, ".") || !strcmp(e->valuestring, "..")) {
            mq_err_set("%s: weight_map entry %.200s must name a file in the same directory", ipath,
                       e->string ? e->string : "");
            goto fail;
        }
        int k = 0;
        while (k < n_files && strcmp(files[k], e->valuestring)) k++;
        if (k == n_files) files[n_files++] = e->valuestring;
    }
    for (int k = 0; k < n_files; k++) {
        char *p = join(dir, files[k]);
        if (!p) { mq_err_set("%s: out of memory", ipath); goto fail; }
        int r = add_shard(st, p);
        free(p);
        if (r < 0) goto fail;
    }
    qsort(st->t, (size_t)st->n, sizeof *st->t, cmp_tensor_name);
    for (int i = 1; i < st->n; i++)
        if (!strcmp(st->t[i].name, st->t[i - 1].name)) {
            mq_err_set("%s: tensor %.200s is in both %s and %s", base, st->t[i].name, st->t[i - 1].file,
                       st->t[i].file);
            goto fail;
        }
    for (const cJSON *e = wm->child; e; e = e->next) {
        const mq_st_tensor *t = mq_st_find(st, e->string);
        if (!t || strcmp(t->file, e->valuestring)) {
            mq_err_set("%s: weight_map puts tensor %.200s in %s, which has no such tensor", base, e->string,
                       e->valuestring);
            goto fail;
        }
    }
    free(files);
    cJSON_Delete(root);
    return st;
fail:
    free(files);
    cJSON_Delete(root);
    mq_st_close(st);
    return NULL;
}

mq_st *mq_st_open(const char *dir) {
    struct stat sb;
    if (stat(dir, &sb) < 0) { mq_err_set("%s: %s", dir, strerror(errno)); return NULL; }
    if (S_ISREG(sb.st_mode)) return mq_st_open_file(dir);
    char *single = join(dir, "model.safetensors");
    char *index = join(dir, "model.safetensors.index.json");
    mq_st *st = NULL;
    if (!single || !index) mq_err_set("%s: out of memory", dir);
    else if (stat(single, &sb) == 0) st = mq_st_open_file(single);
    else if (stat(index, &sb) == 0) st = open_index(dir, index);
    else mq_err_set("%s: no model.safetensors or model.safetensors.index.json", dir);
    free(single);
    free(index);
    return st;
}

const mq_st_tensor *mq_st_find(const mq_st *st, const char *name) {
    if (!st || !name) return NULL;
    mq_st_tensor key = {.name = (char *)name};
    return bsearch(&key, st->t, (size_t)st->n, sizeof *st->t, cmp_tensor_name);
}

int mq_st_count(const mq_st *st) { return st ? st->n : 0; }

const mq_st_tensor *mq_st_at(const mq_st *st, int i) {
    return st && i >= 0 && i < st->n ? &st->t[i] : NULL;
}

/* ---- writer ---- */

static const char *wdtype_name(mq_dtype d) {
    return d == MQ_F32 ? "F32" : d == MQ_F16 ? "F16" : d == MQ_BF16 ? "BF16" : NULL;
}

/* Header JSON padded with spaces so the data section starts 8-byte aligned (as HF's writer does). */
static char *build_header(const char *path, const mq_st_wtensor *t, int n, size_t *hlen, size_t *sizes,
                          size_t *maxsz) {
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    uint64_t off = 0;
    *maxsz = 0;
    for (int i = 0; i < n; i++) {
        const char *dn = wdtype_name(t[i].dtype);
        if (!t[i].name || !dn || t[i].ndim < 0 || t[i].ndim > 4) {
            mq_err_set("%s: tensor %d (%s) has a bad name, dtype or ndim", path, i, t[i].name ? t[i].name : "?");
            cJSON_Delete(root);
            return NULL;
        }
        uint64_t sz = mq_dtype_size(t[i].dtype);
        cJSON *o = cJSON_AddObjectToObject(root, t[i].name);
        cJSON_AddStringToObject(o, "dtype", dn);
        cJSON *sh = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < t[i].ndim; d++) {
            if (t[i].shape[d] < 0) {
                mq_err_set("%s: tensor %s has a negative dim", path, t[i].name);
                cJSON_Delete(root);
                return NULL;
            }
            sz *= (uint64_t)t[i].shape[d];
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t[i].shape[d]));
        }
        cJSON *of = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + sz)));
        off += sz;
        sizes[i] = (size_t)sz;
        if (sz > *maxsz) *maxsz = (size_t)sz;
    }
    char *js = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!js) { mq_err_set("%s: out of memory", path); return NULL; }
    size_t l = strlen(js), padded = (l + 8 + 7) / 8 * 8 - 8;
    char *h = realloc(js, padded + 1);
    if (!h) { free(js); mq_err_set("%s: out of memory", path); return NULL; }
    memset(h + l, ' ', padded - l);
    h[padded] = 0;
    *hlen = padded;
    return h;
}

static int write_impl(const char *path, const mq_st_wtensor *t, int n, mq_st_fill_fn fill, void *user) {
    if (n < 0) { mq_err_set("%s: negative tensor count", path); return -1; }
    size_t *sizes = calloc((size_t)n + 1, sizeof *sizes), hlen = 0, maxsz = 0;
    if (!sizes) { mq_err_set("%s: out of memory", path); return -1; }
    char *hdr = build_header(path, t, n, &hlen, sizes, &maxsz);
    if (!hdr) { free(sizes); return -1; }
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    /* Chunked so a multi-GB checkpoint needs only this buffer, which stays cache-resident. */
    size_t chunk = maxsz < MQ_ST_WCHUNK ? (maxsz ? maxsz : 1) : MQ_ST_WCHUNK;
    void *buf = fill ? malloc(chunk) : NULL;
    FILE *f = NULL;
    int r = -1;
    if (!tmp || (fill && !buf)) { mq_err_set("%s: out of memory", path); goto out; }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    /* Write next to the target and rename, so a crash never leaves a half file under the real name. */
    if (!(f = fopen(tmp, "wb"))) { mq_err_set("%s: cannot create: %s", tmp, strerror(errno)); goto out; }
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    if (fwrite(le, 1, 8, f) != 8 || fwrite(hdr, 1, hlen, f) != hlen) goto werr;
    for (int i = 0; i < n; i++) {
        const void *src = t[i].data;
        if (fill) {
            for (size_t off = 0; off < sizes[i]; off += chunk) {
                size_t m = sizes[i] - off < chunk ? sizes[i] - off : chunk;
                if (fill(buf, off, m, i, user) < 0) goto out;
                if (fwrite(buf, 1, m, f) != m) goto werr;
            }
            continue;
        } else if (!src && sizes[i]) {
            mq_err_set("%s: tensor %s has no data", path, t[i].name);
            goto out;
        }
        if (sizes[i] && fwrite(src, 1, sizes[i], f) != sizes[i]) goto werr;
    }
    if (fclose(f) != 0) { f = NULL; goto werr; }
    f = NULL;
    if (rename(tmp, path) < 0) { mq_err_set("%s: rename failed: %s", path, strerror(errno)); goto out; }
    r = 0;
    goto out;
werr:
    mq_err_set("%s: write failed: %s", path, strerror(errno));
out:
    if (f) fclose(f);
    if (r < 0 && tmp) unlink(tmp);
    free(buf);
    free(tmp);
    free(hdr);
    free(sizes);
    return r;
}

int mq_st_write(const char *path, const mq_st_wtensor *t, int n) { return write_impl(path, t, n, NULL, NULL); }

int mq_st_write_fn(const char *path, const mq_st_wtensor *t, int n, mq_st_fill_fn fill, void *user) {
    if (!fill) { mq_err_set("%s: no fill function", path); return -1; }
    return write_impl(path, t, n, fill, user);
}
