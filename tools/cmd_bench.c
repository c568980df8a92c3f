/* cmd_bench: `megaqwen bench` — TTFT, decode speed, context sweep, bandwidth, memory and power. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "cmd.h"
#include "nvml.h"

/* The seed page's protocol: three fixed prompts, given as Qwen3 token ids (so every framework sees
 * the same input whatever its tokenizer). scripts/peers/prompts.json holds the same ids and texts;
 * tests/cli/bench_cli.sh checks that the two agree. */
static const int32_t P0[] = {785, 3840, 315, 279, 18484, 3493, 12033, 304, 279, 11128, 45387, 9294, 11, 979};
static const int32_t P1[] = {7985, 264, 2805, 16148, 315, 1246, 264, 44944, 13598, 3607, 9255, 25};
static const int32_t P2[] = {750, 75698, 1445, 982, 262, 4210, 5598, 279, 308, 7563, 79683, 1372, 14442};
#define MAX_PROMPTS 16
#define MAX_CTXS 16

static const char *bench_help =
    "usage: megaqwen bench -m DIR [options]\n"
    "  --backend B      auto|cpu|cuda (default auto)\n"
    "  --kv-type T      KV cache: f32 (default) | bf16 | f16\n"
    "  -n N             decode tokens per prompt and per sweep point (default 100)\n"
    "  --prompts P      'default' (the 3 built-in prompts) or a JSON file {\"prompts\":[{\"ids\":[...]}]}\n"
    "  --warmup N       untimed runs of the first prompt before timing (default 1)\n"
    "  --ctx LIST       context depths for the sweep, e.g. 16,1024,4096,32768 (default); 'none' skips\n"
    "  --bw GBPS        memory bandwidth for the %-of-floor column (default 3000, labelled assumed)\n"
    "  --bw-source TEXT how --bw was obtained, recorded with it (default 'given')\n"
    "  --power-s S      seconds of sustained decode for the power phase (default 2; 0 skips)\n"
    "  --idle-s S       seconds of idle power sampling before loading (default 1; 0 skips)\n"
    "  --hz HZ          power sampling rate (default 20, at least 10 recommended)\n"
    "  --json FILE      also write the results as JSON (schema megaqwen-bench/1)\n"
    "  --threads N      CPU threads (cpu backend)\n"
    "  --print-prompts  print the built-in prompts' ids as JSON and exit\n"
    "  --sample         decode with the model's generation_config sampling (seeded: the hashes repeat)\n"
    "                   instead of greedy; any of --temp --top-k --top-p --min-p --repeat-penalty\n"
    "                   --repeat-last-n --seed implies it and overrides that field\n"
    "Ids at or past the model's vocabulary are folded modulo the vocabulary (tiny test models).\n"
    "The sweep fills the KV cache with fill(i) = (1000 + 7919*i) mod min(vocab, 100000).\n";

typedef struct {
    int32_t *ids;
    int n;
} prompt;

typedef struct {
    int tokens;
    double ttft, tok_s, ms_tok, gbs, pct;
    uint64_t hash;
} prompt_res;

typedef struct {
    int ctx, ok;
    const char *why;
    char why_buf[200];
    double tok_s, ms_tok, gbs, pct, bytes;
    uint64_t hash; /* fnv1a of the decoded ids: a faster kernel that changes the answer shows here */
} sweep_res;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* FNV-1a 64 over the ids as little-endian int32 bytes (scripts/peers/common.py does the same). */
static uint64_t fnv1a(uint64_t h, const int32_t *ids, int n) {
    for (int i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        for (int b = 0; b < 4; b++) {
            h ^= (v >> (8 * b)) & 0xff;
            h *= 0x100000001b3ULL;
        }
    }
    return h;
}
#define FNV_INIT 0xcbf29ce484222325ULL

static int32_t fill_id(long i, int vocab) {
    long m = vocab < 100000 ? vocab : 100000;
    return (int32_t)((1000 + 7919 * i) % m);
}

/* KV bytes one decode step reads at depth d: K and V, every layer, at the cache's element size. */
static double kv_bytes(const mq_info *in, double d) {
    return 2.0 * in->n_layers * d * in->n_kv_heads * in->head_dim * (double)in->kv_elt_bytes;
}

static int load_prompts(const char *spec, prompt *p, int *np) {
    if (!strcmp(spec, "default")) {
        const int32_t *src[3] = {P0, P1, P2};
        int len[3] = {sizeof P0 / 4, sizeof P1 / 4, sizeof P2 / 4};
        for (int i = 0; i < 3; i++) {
            if (!(p[i].ids = malloc(len[i] * sizeof(int32_t)))) return -1;
            memcpy(p[i].ids, src[i], len[i] * sizeof(int32_t));
            p[i].n = len[i];
        }
        *np = 3;
        return 0;
    }
    size_t len;
    char *txt = mq_cli_read_file(spec, &len);
    if (!txt) return -1;
    cJSON *j = cJSON_Parse(txt), *arr = cJSON_GetObjectItemCaseSensitive(j, "prompts"), *it;
    free(txt);
    *np = 0;
    int bad = !cJSON_IsArray(arr) || cJSON_GetArraySize(arr) < 1 || cJSON_GetArraySize(arr) > MAX_PROMPTS;
    cJSON *list = bad ? NULL : arr;
    cJSON_ArrayForEach(it, list) {
        cJSON *ids = cJSON_GetObjectItemCaseSensitive(it, "ids"), *v;
        int n = cJSON_GetArraySize(ids);
        if (!cJSON_IsArray(ids) || n < 1) { bad = 1; break; }
        prompt *q = &p[(*np)++];
        if (!(q->ids = malloc(n * sizeof(int32_t)))) { bad = 1; break; }
        q->n = 0;
        cJSON_ArrayForEach(v, ids) {
            if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > INT32_MAX ||
                v->valuedouble != floor(v->valuedouble)) { bad = 1; break; }
            q->ids[q->n++] = (int32_t)v->valuedouble;
        }
        if (bad) break;
    }
    cJSON_Delete(j);
    if (bad) mq_cli_err("bench", "%s: want {\"prompts\": [{\"ids\": [non-negative integers]}, ...]} (1..%d prompts)",
                        spec, MAX_PROMPTS);
    return bad ? -1 : 0;
}

/* n decode tokens after `first`, continuing past end-of-sequence ids so every framework decodes the
 * same count. out has room for n. Returns 0 or -1. */
/* A fresh context for the next prompt or depth; sampled runs are re-seeded (sv), so each draws as a
 * fresh `megaqwen run` would. Non-zero (after the error line) on failure. */
static int bench_reset(mq_ctx *c, const mq_sampling *sv) {
    mq_reset(c);
    if (sv && mq_set_sampling(c, sv)) {
        mq_cli_err("bench", "%s", mq_last_error());
        return -1;
    }
    return 0;
}

static int decode_n(mq_ctx *c, int32_t first, int n, int32_t *out) {
    int k = 0;
    int32_t id = first;
    while (k < n) {
        int got = mq_generate(c, id, n - k, out + k, NULL, NULL);
        if (got <= 0) return -1;
        k += got;
        id = out[k - 1];
    }
    return 0;
}

static cJSON *num_or_null(int ok, double v) { return ok && isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

static void fmt(char *b, size_t cap, int ok, const char *f, double v) {
    if (ok && isfinite(v)) snprintf(b, cap, f, v);
    else snprintf(b, cap, "n/a");
}

int cmd_bench(int argc, char **argv) {
    static const struct option lo[] = {
        {"model", 1, 0, 'm'}, {"backend", 1, 0, 'b'}, {"ctx", 1, 0, 'c'}, {"prompts", 1, 0, 'p'},
        {"json", 1, 0, 'j'}, {"warmup", 1, 0, 'w'}, {"bw", 1, 0, 'B'}, {"power-s", 1, 0, 'P'},
        {"idle-s", 1, 0, 'I'}, {"bw-source", 1, 0, 'S'}, {"hz", 1, 0, 'H'}, {"threads", 1, 0, 't'}, {"print-prompts", 0, 0, 'R'},
        {"sample", 0, 0, 'Z'}, {"help", 0, 0, 'h'}, MQ_CLI_KV_LONGOPT, MQ_CLI_SAMPLING_LONGOPTS, {0, 0, 0, 0}};
    const char *model = NULL, *ctxs = "16,1024,4096,32768", *pspec = "default", *jpath = NULL;
    const char *bw_src = NULL;
    mq_params prm;
    mq_params_default(&prm);
    prm.load_tokenizer = 0;
    long n = 100, warm = 1, v;
    double bw = 3000, power_s = 2, idle_s = 1, hz = 20;
    int bw_given = 0, print_prompts = 0, sample = 0, o, r;
    mq_cli_samp samp = {0};
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":m:n:h", lo, NULL)) != -1) {
        if ((r = mq_cli_sampling_opt("bench", o, optarg, &samp))) {
            if (r < 0) return MQ_EXIT_USAGE;
            continue;
        }
        switch (o) {
        case 'Z': sample = 1; break;
        case 'm': model = optarg; break;
        case 'b': prm.backend = optarg; break;
        case MQ_CLI_KV: prm.kv_type = optarg; break;
        case 'c': ctxs = optarg; break;
        case 'p': pspec = optarg; break;
        case 'j': jpath = optarg; break;
        case 'n': if (mq_cli_int("bench", "-n", optarg, 1, 1 << 20, &n)) return MQ_EXIT_USAGE; break;
        case 'w': if (mq_cli_int("bench", "--warmup", optarg, 0, 1000, &warm)) return MQ_EXIT_USAGE; break;
        case 'B': if (mq_cli_float("bench", "--bw", optarg, 1e-3, 1e6, &bw)) return MQ_EXIT_USAGE; bw_given = 1; break;
        case 'P': if (mq_cli_float("bench", "--power-s", optarg, 0, 3600, &power_s)) return MQ_EXIT_USAGE; break;
        case 'I': if (mq_cli_float("bench", "--idle-s", optarg, 0, 3600, &idle_s)) return MQ_EXIT_USAGE; break;
        case 'H': if (mq_cli_float("bench", "--hz", optarg, 1, 1000, &hz)) return MQ_EXIT_USAGE; break;
        case 't': if (mq_cli_int("bench", "--threads", optarg, 0, 1024, &v)) return MQ_EXIT_USAGE;
                  prm.n_threads = (int)v; break;
        case 'R': print_prompts = 1; break;
        case 'S': bw_src = optarg; break;
        case 'h': fputs(bench_help, stdout); return MQ_EXIT_OK;
        case ':': mq_cli_err("bench", "option %s needs a value", argv[optind - 1]); return MQ_EXIT_USAGE;
        default: mq_cli_err("bench", "unknown option %s (see --help)", argv[optind - 1]); return MQ_EXIT_USAGE;
        }
    }
    prompt ps[MAX_PROMPTS] = {{0}};
    int np = 0;
    if (print_prompts) {
        if (load_prompts("default", ps, &np)) return MQ_EXIT_ERR;
        printf("[");
        for (int i = 0; i < np; i++) {
            printf("%s[", i ? ", " : "");
            for (int k = 0; k < ps[i].n; k++) printf("%s%d", k ? ", " : "", ps[i].ids[k]);
            printf("]");
            free(ps[i].ids);
        }
        printf("]\n");
        return MQ_EXIT_OK;
    }
    if (optind < argc || !model) { mq_cli_err("bench", "-m DIR is required (see --help)"); return MQ_EXIT_USAGE; }
    if (!bw_src) bw_src = bw_given ? "given" : "assumed";
    int ctx[MAX_CTXS], nctx = 0;
    if (strcmp(ctxs, "none")) {
        int32_t *cv;
        size_t cn;
        if (mq_cli_parse_ids(ctxs, &cv, &cn) || cn > MAX_CTXS) {
            mq_cli_err("bench", "bad --ctx '%s' (want up to %d comma-separated depths, or none)", ctxs, MAX_CTXS);
            return MQ_EXIT_USAGE;
        }
        for (size_t i = 0; i < cn; i++) ctx[nctx++] = cv[i];
        free(cv);
    }
    if (load_prompts(pspec, ps, &np)) {
        for (int i = 0; i < np; i++) free(ps[i].ids);
        return MQ_EXIT_USAGE;
    }

    int rc = MQ_EXIT_ERR;
    mq_ctx *c = NULL;
    int32_t *out = NULL, *fill = NULL;
    cJSON *root = NULL;
    mq_nvml_sampler *memsamp = NULL;
    mq_nvml *nv = mq_nvml_open(-1);
    if (!nv) { mq_cli_err("bench", "out of memory"); goto done; }
    char gpu[96] = "n/a", drv[64] = "n/a";
    mq_nvml_name(nv, gpu, sizeof gpu);
    mq_nvml_driver(nv, drv, sizeof drv);

    /* Idle power before anything is loaded: the GPU has no context of ours yet. */
    double idle_w = 0;
    int idle_ok = idle_s > 0 && mq_nvml_idle_w(nv, idle_s, hz, &idle_w) == MQ_NVML_OK;
    uint64_t dev_before = 0;
    int dev_before_ok = mq_nvml_mem_used(nv, &dev_before, NULL) == MQ_NVML_OK;

    /* Context: the longest prompt or sweep depth plus the decode tokens. */
    int need = 1;
    for (int i = 0; i < np; i++) if (ps[i].n + (int)n + 1 > need) need = ps[i].n + (int)n + 1;
    for (int i = 0; i < nctx; i++) if (ctx[i] + (int)n + 1 > need) need = ctx[i] + (int)n + 1;
    prm.max_ctx = need;
    char open_err[160] = "";
    c = mq_open(model, &prm);
    if (!c) {
        /* Past max_position_embeddings, or no room for so deep a KV cache: open at the default
         * size to learn the model's limit, then as deep as it allows; sweep points that still do
         * not fit are reported, not fatal. */
        snprintf(open_err, sizeof open_err, "%s", mq_last_error());
        mq_params p2 = prm;
        p2.max_ctx = 0;
        if (!(c = mq_open(model, &p2))) { mq_cli_err("bench", "%s", mq_last_error()); goto done; }
        int max_pos = mq_get_info(c)->max_pos;
        if (need > max_pos && max_pos > mq_get_info(c)->max_ctx) {
            mq_close(c);
            prm.max_ctx = max_pos;
            if (!(c = mq_open(model, &prm))) {
                snprintf(open_err, sizeof open_err, "%s", mq_last_error());
                if (!(c = mq_open(model, &p2))) { mq_cli_err("bench", "%s", mq_last_error()); goto done; }
            }
        }
        fprintf(stderr, "megaqwen bench: note: context %d could not be opened (%s); using %d\n", need, open_err,
                mq_get_info(c)->max_ctx);
    }
    const mq_info *in = mq_get_info(c);
    /* greedy unless asked to sample (then as `megaqwen run` would: generation_config + flags) */
    mq_sampling sv;
    mq_sampling_default(&sv);
    if (sample || samp.set) mq_cli_sampling_resolve(c, &samp, &sv);
    if (mq_set_sampling(c, &sv)) { mq_cli_err("bench", "%s", mq_last_error()); goto done; }
    const int sampled = !(sv.temperature == 0.0f && sv.rep_penalty == 1.0f && sv.presence_penalty == 0.0f &&
                          sv.frequency_penalty == 0.0f);
    char dmode[260] = "greedy";
    if (sampled)
        snprintf(dmode, sizeof dmode, "sampled (temperature %g, top-k %d, top-p %g, min-p %g, repetition penalty %g "
                 "over %d, presence %g, frequency %g, seed %llu)", sv.temperature, sv.top_k, sv.top_p, sv.min_p,
                 sv.rep_penalty, sv.rep_last_n, sv.presence_penalty, sv.frequency_penalty, (unsigned long long)sv.seed);
    int folded = 0;
    for (int i = 0; i < np; i++)
        for (int k = 0; k < ps[i].n; k++)
            if (ps[i].ids[k] >= in->vocab_size) { ps[i].ids[k] %= in->vocab_size; folded = 1; }
    if (folded) fprintf(stderr, "megaqwen bench: note: prompt ids folded modulo the vocabulary (%d)\n", in->vocab_size);
    if (!(out = malloc(((size_t)n + 1) * sizeof *out))) { mq_cli_err("bench", "out of memory"); goto done; }

    /* Memory: a slow sampler over the whole run catches the peak of this process. */
    mq_nvml_source msrc = mq_nvml_source_of(nv);
    msrc.power_w = NULL;
    msrc.energy_j = NULL;
    memsamp = mq_nvml_sampler_start(&msrc, 10);

    double Wb = (double)in->weight_bytes;
    /* ---- prompts ---- */
    prompt_res pr[MAX_PROMPTS];
    uint64_t all_hash = FNV_INIT;
    double tot_ttft = 0, tot_dec = 0, tot_bytes = 0;
    for (int it = -(int)warm; it < np; it++) {
        prompt *p = &ps[it < 0 ? 0 : it];
        if (bench_reset(c, sampled ? &sv : NULL)) goto done;
        double t0 = now_s();
        if (mq_feed(c, p->ids, p->n, NULL)) { mq_cli_err("bench", "%s", mq_last_error()); goto done; }
        int32_t first = mq_sample(c);
        double t1 = now_s();
        if (first < 0) { mq_cli_err("bench", "%s", mq_last_error()); goto done; }
        out[0] = first;
        double t2 = now_s();
        if (decode_n(c, first, (int)n, out + 1)) { mq_cli_err("bench", "%s", mq_last_error()); goto done; }
        double t3 = now_s();
        if (it < 0) continue;
        prompt_res *r = &pr[it];
        r->tokens = p->n;
        r->ttft = t1 - t0;
        r->tok_s = n / (t3 - t2);
        r->ms_tok = 1000.0 * (t3 - t2) / n;
        /* Mean depth over the decode: the prompt, plus half the generated tokens. */
        double bytes = Wb + kv_bytes(in, p->n + n / 2.0);
        r->gbs = bytes * r->tok_s / 1e9;
        r->pct = 100.0 * r->gbs / bw;
        r->hash = fnv1a(FNV_INIT, out, (int)n + 1);
        all_hash = fnv1a(all_hash, out, (int)n + 1);
        tot_ttft += r->ttft;
        tot_dec += t3 - t2;
        tot_bytes += bytes * n;
    }
    double m_tok_s = np * n / tot_dec, m_gbs = tot_bytes / tot_dec / 1e9;

    /* ---- power: sustained decode of the first prompt, rewound and repeated. Before the sweep,
     * whose deep contexts are the likeliest to fail. ---- */
    mq_nvml_stats pst;
    memset(&pst, 0, sizeof pst);
    pst.energy_source = "n/a";
    long p_tokens = 0;
    int power_ran = 0;
    if (power_s > 0) {
        if (bench_reset(c, sampled ? &sv : NULL)) goto done;
        if (mq_feed(c, ps[0].ids, ps[0].n, NULL)) { mq_cli_err("bench", "%s", mq_last_error()); goto done; }
        int32_t first = mq_sample(c);
        mq_nvml_source psrc = mq_nvml_source_of(nv);
        psrc.mem = NULL;
        mq_nvml_sampler *s = mq_nvml_available(nv) ? mq_nvml_sampler_start(&psrc, hz) : NULL;
        double t0 = now_s();
        do {
            if (mq_rewind(c, ps[0].n) || decode_n(c, first, (int)n, out)) {
                mq_cli_err("bench", "%s", mq_last_error());
                mq_nvml_sampler_stop(s, &pst);
                goto done;
            }
            p_tokens += n;
        } while (now_s() - t0 < power_s);
        double t = now_s() - t0;
        mq_nvml_sampler_stop(s, &pst);
        pst.seconds = t; /* the decode window itself when there is no sampler */
        if (pst.energy_ok && t > 0) pst.avg_w = pst.energy_j / t;
        power_ran = 1;
    }
    /* ---- context sweep ---- */
    sweep_res sw[MAX_CTXS];
    if (nctx && !(fill = malloc(512 * sizeof *fill))) { mq_cli_err("bench", "out of memory"); goto done; }
    for (int i = 0; i < nctx; i++) {
        sweep_res *s = &sw[i];
        memset(s, 0, sizeof *s);
        s->ctx = ctx[i];
        if (ctx[i] < 1 || ctx[i] + n + 1 > in->max_pos) { s->why = "exceeds the model's context"; continue; }
        if (ctx[i] + n + 1 > in->max_ctx) {
            snprintf(s->why_buf, sizeof s->why_buf, "exceeds the KV cache that could be opened (%d): %.120s",
                     in->max_ctx, open_err);
            s->why = s->why_buf;
            continue;
        }
        if (bench_reset(c, sampled ? &sv : NULL)) goto done;
        int failed = 0;
        for (int d = 0; d < ctx[i] && !failed; d += 512) {
            int m = ctx[i] - d < 512 ? ctx[i] - d : 512;
            for (int k = 0; k < m; k++) fill[k] = fill_id(d + k, in->vocab_size);
            failed = mq_feed(c, fill, m, NULL) != 0;
        }
        double t0 = now_s();
        /* A failure at one depth (a kernel limit, say) is that point's result, not the run's. */
        if (failed || decode_n(c, fill_id(ctx[i], in->vocab_size), (int)n, out)) {
            snprintf(s->why_buf, sizeof s->why_buf, "error: %s", mq_last_error());
            s->why = s->why_buf;
            fprintf(stderr, "megaqwen bench: context %d: %s\n", ctx[i], mq_last_error());
            continue;
        }
        double t = now_s() - t0;
        s->ok = 1;
        s->tok_s = n / t;
        s->ms_tok = 1000.0 * t / n;
        s->bytes = Wb + kv_bytes(in, ctx[i] + n / 2.0);
        s->gbs = s->bytes * s->tok_s / 1e9;
        s->pct = 100.0 * s->gbs / bw;
        s->hash = fnv1a(FNV_INIT, out, (int)n);
    }

    mq_nvml_stats mst;
    mq_nvml_sampler_stop(memsamp, &mst);
    memsamp = NULL;
    double p_tok_s = power_ran ? p_tokens / pst.seconds : 0;
    double kv_alloc = kv_bytes(in, in->max_ctx);

    /* the KV cache element type the run used (--kv-type, else $MQ_CUDA_KV on cuda, else f32) */
    const char *kvt = prm.kv_type ? prm.kv_type : !strcmp(in->backend, "cuda") ? getenv("MQ_CUDA_KV") : NULL;
    if (!kvt || !*kvt) kvt = "f32";

    /* ---- Markdown ---- */
    char a[32], b[32], d[32], e[32], f[32], g[32];
    printf("## megaqwen bench — backend %s (%s KV cache), %s\n\n", in->backend, kvt, model);
    printf("Model: %d layers, hidden %d, %d q / %d kv heads of %d, %s.\n\n", in->n_layers, in->hidden_size,
           in->n_heads, in->n_kv_heads, in->head_dim, in->rope);
    printf("GPU: %s, driver %s. Bandwidth floor at %.0f GB/s (%s). %ld decode tokens per prompt, %s, "
           "%ld warm-up run(s) excluded.\n\n", gpu, drv, bw, bw_src, n, dmode, warm);
    printf("| prompt | tokens | TTFT (ms) | decode tok/s | ms/token | GB/s | %% of floor | fnv1a |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < np; i++)
        printf("| %d | %d | %.2f | %.1f | %.3f | %.1f | %.1f | %016llx |\n", i, pr[i].tokens, 1000 * pr[i].ttft,
               pr[i].tok_s, pr[i].ms_tok, pr[i].gbs, pr[i].pct, (unsigned long long)pr[i].hash);
    printf("| **all** | | **%.2f** | **%.1f** | **%.3f** | **%.1f** | **%.1f** | %016llx |\n\n",
           1000 * tot_ttft / np, m_tok_s, 1000.0 / m_tok_s, m_gbs, 100 * m_gbs / bw, (unsigned long long)all_hash);
    if (nctx) {
        printf("| context | decode tok/s | ms/token | MB read/step | GB/s | %% of floor | fnv1a |\n"
               "|---|---|---|---|---|---|---|\n");
        for (int i = 0; i < nctx; i++) {
            if (!sw[i].ok) { printf("| %d | n/a (%s) | | | | | |\n", sw[i].ctx, sw[i].why); continue; }
            printf("| %d | %.1f | %.3f | %.1f | %.1f | %.1f | %016llx |\n", sw[i].ctx, sw[i].tok_s, sw[i].ms_tok,
                   sw[i].bytes / 1e6, sw[i].gbs, sw[i].pct, (unsigned long long)sw[i].hash);
        }
        printf("\n");
    }
    fmt(a, sizeof a, idle_ok, "%.1f", idle_w);
    fmt(b, sizeof b, pst.energy_ok || pst.power_ok, "%.1f", pst.avg_w);
    fmt(d, sizeof d, pst.power_ok, "%.1f", pst.peak_w);
    fmt(e, sizeof e, pst.energy_ok, "%.1f", pst.energy_j);
    fmt(f, sizeof f, power_ran, "%.1f", p_tok_s);
    fmt(g, sizeof g, pst.energy_ok && pst.energy_j > 0, "%.2f", pst.energy_ok && pst.energy_j > 0 ? p_tokens / pst.energy_j : 0);
    printf("| idle (W) | avg (W) | peak (W) | energy (J) | tok/s | tok/J | samples |\n|---|---|---|---|---|---|---|\n");
    printf("| %s | %s | %s | %s (%s) | %s | %s | %d @ %.0f Hz |\n\n", a, b, d, e, pst.energy_source, f, g,
           pst.n_samples, hz);
    if (!mq_nvml_available(nv)) printf("Power and NVML memory: %s\n\n", mq_nvml_reason(nv));
    fmt(a, sizeof a, 1, "%.1f", (Wb + kv_alloc) / 1e6);
    fmt(b, sizeof b, mst.mem_ok && mst.peak_proc_mem, "%.1f", mst.peak_proc_mem / 1e6);
    fmt(d, sizeof d, mst.mem_ok && dev_before_ok, "%.1f", ((double)mst.peak_dev_mem - (double)dev_before) / 1e6);
    printf("| weights + KV cache (MB) | NVML process peak (MB) | NVML device used, peak - before (MB) |\n|---|---|---|\n");
    printf("| %s | %s | %s |\n", a, b, d);

    /* ---- JSON ---- */
    if (jpath) {
        root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "schema", "megaqwen-bench/1");
        char fw[32];
        snprintf(fw, sizeof fw, "megaqwen-%s", in->backend);
        cJSON_AddStringToObject(root, "framework", fw);
        cJSON_AddStringToObject(root, "status", "ok");
        cJSON_AddStringToObject(root, "version", "megaqwen");
        cJSON_AddStringToObject(root, "model", model);
        cJSON_AddStringToObject(root, "backend", in->backend);
        cJSON *cfg = cJSON_AddObjectToObject(root, "config");
        cJSON_AddNumberToObject(cfg, "n_layers", in->n_layers);
        cJSON_AddNumberToObject(cfg, "hidden_size", in->hidden_size);
        cJSON_AddNumberToObject(cfg, "n_kv_heads", in->n_kv_heads);
        cJSON_AddNumberToObject(cfg, "head_dim", in->head_dim);
        cJSON_AddStringToObject(cfg, "rope", in->rope);
        cJSON_AddNumberToObject(cfg, "kv_elt_bytes", in->kv_elt_bytes);
        cJSON_AddStringToObject(cfg, "kv_type", kvt);
        cJSON_AddNumberToObject(cfg, "vocab_size", in->vocab_size);
        cJSON_AddNumberToObject(cfg, "weight_bytes", Wb);
        cJSON_AddNumberToObject(cfg, "max_ctx", in->max_ctx);
        cJSON *bwj = cJSON_AddObjectToObject(root, "bandwidth");
        cJSON_AddNumberToObject(bwj, "gb_s", bw);
        cJSON_AddStringToObject(bwj, "source", bw_src);
        cJSON *gj = cJSON_AddObjectToObject(root, "gpu");
        cJSON_AddStringToObject(gj, "name", gpu);
        cJSON_AddStringToObject(gj, "driver", drv);
        cJSON_AddNumberToObject(root, "decode_tokens", n);
        cJSON_AddStringToObject(root, "decode_mode", sampled ? "sampled" : "greedy");
        if (sampled) {
            cJSON *sj = cJSON_AddObjectToObject(root, "sampling");
            cJSON_AddNumberToObject(sj, "temperature", sv.temperature);
            cJSON_AddNumberToObject(sj, "top_k", sv.top_k);
            cJSON_AddNumberToObject(sj, "top_p", sv.top_p);
            cJSON_AddNumberToObject(sj, "min_p", sv.min_p);
            cJSON_AddNumberToObject(sj, "repetition_penalty", sv.rep_penalty);
            cJSON_AddNumberToObject(sj, "repeat_last_n", sv.rep_last_n);
            cJSON_AddNumberToObject(sj, "presence_penalty", sv.presence_penalty);
            cJSON_AddNumberToObject(sj, "frequency_penalty", sv.frequency_penalty);
            cJSON_AddNumberToObject(sj, "seed", (double)sv.seed);
        }
        cJSON_AddNumberToObject(root, "warmup", warm);
        cJSON *pa = cJSON_AddArrayToObject(root, "prompts");
        char h[20];
        for (int i = 0; i < np; i++) {
            cJSON *o2 = cJSON_CreateObject();
            cJSON_AddNumberToObject(o2, "tokens", pr[i].tokens);
            cJSON_AddNumberToObject(o2, "ttft_s", pr[i].ttft);
            cJSON_AddNumberToObject(o2, "decode_tok_s", pr[i].tok_s);
            cJSON_AddNumberToObject(o2, "ms_per_token", pr[i].ms_tok);
            cJSON_AddNumberToObject(o2, "gb_s", pr[i].gbs);
            cJSON_AddNumberToObject(o2, "pct_floor", pr[i].pct);
            snprintf(h, sizeof h, "%016llx", (unsigned long long)pr[i].hash);
            cJSON_AddStringToObject(o2, "fnv1a", h);
            cJSON_AddItemToArray(pa, o2);
        }
        cJSON_AddNumberToObject(root, "ttft_s", tot_ttft / np);
        cJSON_AddNumberToObject(root, "decode_tok_s", m_tok_s);
        cJSON_AddNumberToObject(root, "ms_per_token", 1000.0 / m_tok_s);
        cJSON_AddNumberToObject(root, "gb_s", m_gbs);
        cJSON_AddNumberToObject(root, "pct_floor", 100 * m_gbs / bw);
        snprintf(h, sizeof h, "%016llx", (unsigned long long)all_hash);
        cJSON_AddStringToObject(root, "fnv1a", h);
        cJSON *sa = cJSON_AddArrayToObject(root, "ctx_sweep");
        for (int i = 0; i < nctx; i++) {
            cJSON *o2 = cJSON_CreateObject();
            cJSON_AddNumberToObject(o2, "ctx", sw[i].ctx);
            cJSON_AddStringToObject(o2, "status", sw[i].ok ? "ok" : sw[i].why);
            cJSON_AddItemToObject(o2, "decode_tok_s", num_or_null(sw[i].ok, sw[i].tok_s));
            cJSON_AddItemToObject(o2, "ms_per_token", num_or_null(sw[i].ok, sw[i].ms_tok));
            cJSON_AddItemToObject(o2, "bytes_per_step", num_or_null(sw[i].ok, sw[i].bytes));
            cJSON_AddItemToObject(o2, "gb_s", num_or_null(sw[i].ok, sw[i].gbs));
            cJSON_AddItemToObject(o2, "pct_floor", num_or_null(sw[i].ok, sw[i].pct));
            if (sw[i].ok) {
                char h[20];
                snprintf(h, sizeof h, "%016llx", (unsigned long long)sw[i].hash);
                cJSON_AddStringToObject(o2, "fnv1a", h);
            }
            cJSON_AddItemToArray(sa, o2);
        }
        cJSON *mj = cJSON_AddObjectToObject(root, "memory");
        cJSON_AddNumberToObject(mj, "weights_kv_bytes", Wb + kv_alloc);
        cJSON_AddItemToObject(mj, "nvml_proc_peak_bytes", num_or_null(mst.mem_ok && mst.peak_proc_mem, (double)mst.peak_proc_mem));
        cJSON_AddItemToObject(mj, "nvml_dev_delta_bytes",
                              num_or_null(mst.mem_ok && dev_before_ok, (double)mst.peak_dev_mem - (double)dev_before));
        cJSON *pw = cJSON_AddObjectToObject(root, "power");
        cJSON_AddStringToObject(pw, "status", mq_nvml_available(nv) ? "ok" : "n/a");
        cJSON_AddStringToObject(pw, "reason", mq_nvml_reason(nv));
        cJSON_AddItemToObject(pw, "idle_w", num_or_null(idle_ok, idle_w));
        cJSON_AddItemToObject(pw, "avg_w", num_or_null(pst.energy_ok || pst.power_ok, pst.avg_w));
        cJSON_AddItemToObject(pw, "peak_w", num_or_null(pst.power_ok, pst.peak_w));
        cJSON_AddItemToObject(pw, "energy_j", num_or_null(pst.energy_ok, pst.energy_j));
        cJSON_AddStringToObject(pw, "energy_source", pst.energy_source);
        cJSON_AddItemToObject(pw, "seconds", num_or_null(power_ran, pst.seconds));
        cJSON_AddNumberToObject(pw, "tokens", (double)p_tokens);
        cJSON_AddItemToObject(pw, "tok_s", num_or_null(power_ran, p_tok_s));
        cJSON_AddItemToObject(pw, "tok_per_j", num_or_null(pst.energy_ok && pst.energy_j > 0,
                                                           pst.energy_j > 0 ? p_tokens / pst.energy_j : 0));
        cJSON_AddNumberToObject(pw, "samples", pst.n_samples);
        cJSON_AddNumberToObject(pw, "hz", hz);
        char *s = cJSON_Print(root);
        FILE *fp = s ? fopen(jpath, "w") : NULL;
        int werr = !fp || fputs(s, fp) < 0 || fputc('\n', fp) < 0;
        if (fp && fclose(fp)) werr = 1;
        free(s);
        if (werr) { mq_cli_err("bench", "%s: cannot write: %s", jpath, strerror(errno)); goto done; }
    }
    rc = MQ_EXIT_OK;
done:
    if (memsamp) {
        mq_nvml_stats tmp;
        mq_nvml_sampler_stop(memsamp, &tmp);
    }
    cJSON_Delete(root);
    free(out);
    free(fill);
    for (int i = 0; i < np; i++) free(ps[i].ids);
    mq_close(c);
    mq_nvml_close(nv);
    return rc;
}
