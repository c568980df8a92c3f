/* server: `megaqwen serve` — an OpenAI-compatible HTTP server (libmicrohttpd) over one engine context.
 *
 * Threads: libmicrohttpd runs one thread per connection (so a handler may block while its request
 * waits); the thread that called mq_srv_run is the engine: it pops jobs from a bounded FIFO and
 * runs them one at a time on the single mq_ctx. Handlers parse, template and tokenize in their own
 * thread (the tokenizer is read-only), so the engine only runs prefill and decode.
 * One mutex (srv.mu) guards the queue and every job's shared fields; each job has its own
 * condition variable that the engine signals when it appends output or finishes. */
#include "server.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "err.h"
#include "oai.h"

enum { J_QUEUED, J_RUNNING, J_DONE };
enum { R_CHAT, R_COMPL, R_MODELS, R_MODEL, R_HEALTH, R_METRICS, R_TOKENIZE, R_DETOKENIZE };

typedef struct job {
    struct job *next;       /* FIFO link while queued */
    int refs;               /* handler + stream response + engine/queue */
    int state;              /* J_QUEUED -> J_RUNNING -> J_DONE */
    int cancel;             /* client gone: engine stops at the next token (atomic) */
    mq_oai_req req;
    uint64_t seed0;         /* without a seed: choice i samples with seed0 + i * an odd constant */
    int32_t *ids;           /* (n_ids) prompt token ids */
    size_t n_ids;
    long max_tokens;
    char id[48];
    long created;
    mq_oai_buf out;         /* stream: SSE bytes produced, [sent, out.n) not yet handed to MHD */
    size_t sent;
    int status;             /* non-stream result: HTTP status and body (malloc'd) */
    char *body;
    mq_oai_usage usage;
    const char *finish;
    double t_arrival;       /* the request's first byte (HTTP), for /metrics' latencies */
    double t_queued, t_start, t_first, t_end;
    pthread_cond_t cv;
} job;

typedef struct {
    mq_ctx *c;
    const mq_info *info;
    mq_srv_opts o;
    long started;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* engine: a job arrived or shutdown */
    job *head, *tail;       /* waiting jobs, FIFO */
    int n_wait, busy;       /* waiting count; 1 while the engine runs a job */
    int stopping;
    unsigned long seq;      /* request counter (ids, default seeds) */
    int32_t *cache;         /* (max_ctx) ids whose K/V sit in the cache; engine thread only */
    int n_cache;
    /* /metrics, under mu: finished requests by outcome (stop, length, tool_calls, error, cancelled),
     * 503s, token totals, and sums of the per-request times for Prometheus summaries */
    struct srv_stats {
        unsigned long n_out[5], n_rejected;
        unsigned long long tok_prompt, tok_cached, tok_gen;
        double sum_queue, sum_ttft, sum_e2e;
        unsigned long n_ttft;
    } st;
} srv;

typedef struct {
    int route;
    mq_oai_buf body;        /* request body as received */
    int too_big;
    double t0;
    int status;             /* for the access log */
    job *j;                 /* holds one ref */
} conn_ctx;

typedef struct {
    srv *s;
    job *j;                 /* holds one ref */
    struct MHD_Connection *conn;
    double t_last;          /* last bytes handed out (keep-alive comments) */
} stream_ctx;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void deadline(struct timespec *ts, int ms) {
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_nsec += (long)ms * 1000000L;
    ts->tv_sec += ts->tv_nsec / 1000000000L;
    ts->tv_nsec %= 1000000000L;
}

void mq_srv_opts_default(mq_srv_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->queue = 64;
    o->max_body = 4u << 20;
    o->timeout_s = 30;
    o->max_conn = 256;
    o->model_name = "megaqwen";
}

/* ---------- jobs ---------- */

static void job_unref_locked(job *j) {
    if (!j || --j->refs > 0) return;
    mq_oai_req_free(&j->req);
    free(j->ids);
    mq_oai_buf_free(&j->out);
    free(j->body);
    pthread_cond_destroy(&j->cv);
    free(j);
}

/* Client gone: a queued job leaves the queue at once, a running one stops at its next token. */
static void job_cancel_locked(srv *s, job *j) {
    __atomic_store_n(&j->cancel, 1, __ATOMIC_RELAXED);
    if (j->state != J_QUEUED) return;
    for (job **p = &s->head; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            if (s->tail == j) {
                s->tail = NULL;
                for (job *q = s->head; q; q = q->next) s->tail = q;
            }
            s->n_wait--;
            s->st.n_out[4]++; /* (a client gone while queued: cancelled, for /metrics) */
            s->st.sum_queue += now_s() - j->t_arrival;
            s->st.sum_e2e += now_s() - j->t_arrival;
            break;
        }
    j->state = J_DONE;
    pthread_cond_broadcast(&j->cv);
    job_unref_locked(j); /* the queue's reference */
}

/* ---------- HTTP helpers ---------- */

static enum MHD_Result send_body(conn_ctx *cc, struct MHD_Connection *conn, int status, char *body,
                                 const char *type, const char *hname, const char *hval) {
    if (!body) {
        status = 500;
        body = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
        if (!body) return MHD_NO;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) { free(body); return MHD_NO; }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type ? type : "application/json");
    if (hname) MHD_add_response_header(r, hname, hval);
    if (cc) cc->status = status;
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_err(conn_ctx *cc, struct MHD_Connection *conn, const mq_oai_err *e,
                                const char *hname, const char *hval) {
    return send_body(cc, conn, e->status, mq_oai_error_json(e), NULL, hname, hval);
}

static enum MHD_Result fail(conn_ctx *cc, struct MHD_Connection *conn, int status, const char *type,
                            const char *code, const char *param, const char *msg) {
    mq_oai_err e;
    mq_oai_fail(&e, status, type, code, param, "%s", msg);
    return send_err(cc, conn, &e, NULL, NULL);
}

/* The peer closed or reset its side (poll, no data consumed). */
static int client_gone(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 1;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* Compare the Authorization header with "Bearer KEY" in time that depends only on the key length. */
static int auth_ok(const srv *s, struct MHD_Connection *conn) {
    const char *key = s->o.api_key;
    if (!key || !*key) return 1;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncmp(h, "Bearer ", 7)) return 0;
    h += 7;
    size_t hn = strlen(h), kn = strlen(key);
    volatile unsigned char d = (unsigned char)(hn != kn);
    for (size_t i = 0; i < kn; i++) d |= (unsigned char)((i < hn ? (unsigned char)h[i] : 0) ^ (unsigned char)key[i]);
    return d == 0;
}

/* ---------- engine ---------- */

typedef struct {
    srv *s;
    job *j;
    int stream, ntok;
    int index;              /* the choice (n > 1) */
    const char *finish;
    mq_oai_stop stop;
    mq_oai_buf emit;        /* text released by the stop matcher this step */
    mq_oai_buf text;        /* non-stream: the whole completion */
    int failed, matched;    /* matched: a stop string ended the text */
    int halt;               /* the callback asked the generation to stop */
    mq_oai_lp *lps;         /* logprobs: non-stream all tokens' entries (echoed prompt first), stream
                             * the one of the token being delivered */
    size_t n_lps, cap_lps;
    size_t text_off;        /* completions: raw bytes of the tokens so far (their text_offset) */
    mq_oai_toolscan scan;   /* stream with tools: content is held back from "<tool_call>" on */
    mq_oai_buf scan_out;
    int think_on;           /* chat with the qwen3 reasoning parser */
    mq_oai_thinkscan think; /* stream: the thinking / content split */
    mq_oai_buf think_r, think_c;
    int has_reasoning;      /* non-stream: text[reasoning_at, + reasoning_len) is the thinking, */
    size_t reasoning_at, reasoning_len, content_at; /* text[content_at, n) the content */
} gen_state;

/* Append bytes to the job's stream and wake its reader. */
static int push(srv *s, job *j, char *ev) {
    if (!ev) return -1;
    pthread_mutex_lock(&s->mu);
    int rc = mq_oai_buf_put(&j->out, ev, strlen(ev));
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&s->mu);
    free(ev);
    return rc;
}

/* A reasoning_content chunk (with the pending logprobs entries when with_lps). */
static int send_reasoning(gen_state *g, const char *t, size_t n, int with_lps) {
    job *j = g->j;
    const mq_oai_lps l = {g->lps, g->n_lps, 1};
    const int lp = with_lps && g->n_lps > 0;
    if (lp) g->n_lps = 0;
    return push(g->s, j, mq_oai_reasoning_sse(j->id, j->created, g->s->o.model_name, g->index, t, n, j->req.include_usage,
                                              lp ? &l : NULL));
}

/* Text released for the client (stream: one chunk, with the pending logprobs entries if any). */
static int deliver(gen_state *g, const char *t, size_t n) {
    job *j = g->j;
    if (!t) t = ""; /* (an empty emit buffer: a chunk with logprobs still has its content key) */
    if (g->stream && g->think_on) { /* thinking goes out as reasoning_content */
        g->think_r.n = g->think_c.n = 0;
        if (mq_oai_thinkscan_feed(&g->think, t, n, &g->think_r, &g->think_c)) return -1;
        if (g->think_r.n && send_reasoning(g, g->think_r.p, g->think_r.n, !g->think_c.n)) return -1;
        t = g->think_c.p ? g->think_c.p : "";
        n = g->think_c.n;
    }
    if (g->stream && j->req.parse_calls) { /* what may be a tool call is not content (yet) */
        g->scan_out.n = 0;
        if (mq_oai_toolscan_feed(&g->scan, t, n, &g->scan_out)) return -1;
        t = g->scan_out.p ? g->scan_out.p : "";
        n = g->scan_out.n;
    }
    const int lp = g->stream && g->n_lps > 0;
    if (!n && !lp) return 0;
    if (!g->stream) return mq_oai_buf_put(&g->text, t, n);
    const mq_oai_lps l = {g->lps, g->n_lps, 1};
    g->n_lps = 0;
    return push(g->s, j, mq_oai_chunk_sse(j->req.kind, j->id, j->created, g->s->o.model_name, g->index, t, n, 0,
                                          NULL, j->req.include_usage, lp ? &l : NULL));
}

/* Characters (code points) in s[0..n): its bytes that do not continue a UTF-8 sequence. Counted per
 * token, a character split over two tokens counts once, with the token that starts it. */
static size_t utf8_chars(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

/* Append token id's logprobs entry (lp NULL: no logprob, an echoed prompt's first token). text: the
 * token's bytes are in the text (its text_offset then advances the next one's): an echoed prompt
 * token always, a generated one unless skip_special_tokens leaves it out or it is an end-of-sequence
 * token (ignore_eos: it never adds text). */
static int add_lp(gen_state *g, int32_t id, const mq_logprob *lp, int text) {
    if (g->n_lps == g->cap_lps) {
        size_t cap = g->cap_lps ? 2 * g->cap_lps : 64;
        mq_oai_lp *p = realloc(g->lps, cap * sizeof *p);
        if (!p) return -1;
        g->lps = p;
        g->cap_lps = cap;
    }
    mq_ctx *c = g->s->c;
    mq_oai_lp *e = &g->lps[g->n_lps++];
    memset(e, 0, sizeof *e);
    e->tok.b = mq_token_bytes(c, id, &e->tok.n);
    e->text_offset = g->text_off;
    if (text) g->text_off += utf8_chars(e->tok.b, e->tok.n);
    if (!lp) return 0;
    e->has_lp = 1;
    e->tok.lp = lp->logprob;
    e->n_top = lp->n_top < g->j->req.top_logprobs ? lp->n_top : g->j->req.top_logprobs;
    for (int k = 0; k < e->n_top; k++) {
        e->top[k].b = mq_token_bytes(c, lp->top_ids[k], &e->top[k].n);
        e->top[k].lp = lp->top_lp[k];
    }
    return 0;
}

static int on_token_lp(int32_t id, const mq_logprob *lp, void *user);

static int on_token(int32_t id, void *user) { return on_token_lp(id, NULL, user); }

static int token_step(gen_state *g, int32_t id, const mq_logprob *lp);

static int on_token_lp(int32_t id, const mq_logprob *lp, void *user) {
    gen_state *g = user;
    return g->halt = token_step(g, id, lp);
}

/* One generated token to the client; non-zero: stop the generation. */
static int token_step(gen_state *g, int32_t id, const mq_logprob *lp) {
    srv *s = g->s;
    job *j = g->j;
    if (!g->ntok++ && !j->t_first) j->t_first = now_s(); /* (the first choice's first token) */
    int stop_id = 0;
    for (int i = 0; i < j->req.n_stop_ids; i++) stop_id |= id == j->req.stop_ids[i];
    if (mq_is_eos(s->c, id)) {
        /* the end-of-sequence token is not part of the text; it ends the reply (and is not in the
         * logprobs) unless the request has ignore_eos (vLLM's), which keeps going past it, and
         * does not name it in stop_token_ids */
        if (!j->req.ignore_eos || stop_id) { g->finish = "stop"; return 1; }
        if (lp && (add_lp(g, id, lp, 0) || deliver(g, "", 0))) { g->failed = 1; return 1; }
        return __atomic_load_n(&j->cancel, __ATOMIC_RELAXED) || s->stopping;
    }
    /* skip_special_tokens: a special token adds no text (it still counts, and has its logprobs) */
    const int skip = j->req.skip_special && mq_token_is_special(s->c, id);
    if (lp && add_lp(g, id, lp, !skip)) { g->failed = 1; return 1; }
    char buf[4096];
    int k = skip ? 0 : mq_detok_stream(s->c, id, buf, sizeof buf);
    if (k < 0) { g->failed = 1; return 1; }
    g->emit.n = 0;
    /* a stop string cannot end in the first min_tokens tokens' text (vLLM checks from the token
     * after them, looking back into that text for a string that straddles the boundary) */
    g->stop.hold_only = g->ntok <= j->req.min_tokens;
    int r = mq_oai_stop_feed(&g->stop, buf, (size_t)k, &g->emit);
    if (r < 0 || deliver(g, g->emit.p, g->emit.n)) { g->failed = 1; return 1; }
    if (r == 1) { g->matched = 1; return 1; }
    if (stop_id) { g->finish = "stop"; return 1; }
    if (__atomic_load_n(&j->cancel, __ATOMIC_RELAXED) || s->stopping) return 1;
    return 0;
}

static void finish_error(srv *s, job *j, int stream, const char *msg) {
    mq_oai_err e;
    mq_oai_fail(&e, 500, "server_error", NULL, NULL, "generation failed: %s", msg);
    if (stream) {
        char *ej = mq_oai_error_json(&e);
        size_t n = ej ? strlen(ej) : 0;
        char *ev = malloc(n + 32);
        if (ev) snprintf(ev, n + 32, "data: %s\n\ndata: [DONE]\n\n", ej ? ej : "{}");
        free(ej);
        push(s, j, ev);
    } else {
        j->status = 500;
        j->body = mq_oai_error_json(&e);
    }
}

/* Ids as text, the way generated ids become text: ids without text (the embedding's padding) add
 * nothing, a broken character becomes U+FFFD. Read-only on the tokenizer, so any thread may call it
 * (the context's streaming detokenizer belongs to the engine). malloc'd, or NULL. */
static char *detok_ids(mq_ctx *c, const int32_t *ids, size_t n) {
    int32_t *keep = malloc((n + 1) * sizeof *keep);
    if (!keep) return NULL;
    size_t k = 0, l;
    for (size_t i = 0; i < n; i++)
        if (mq_token_bytes(c, ids[i], &l)) keep[k++] = ids[i];
    char *t = mq_detokenize(c, keep, k);
    free(keep);
    return t;
}

static size_t common_prefix(const int32_t *a, size_t an, const int32_t *b, size_t bn) {
    size_t i = 0;
    while (i < an && i < bn && a[i] == b[i]) i++;
    return i;
}

/* One choice of a request (index idx of n): sampling set up with seed + idx, the prompt through the
 * KV cache (shared with the previous choice: only its last token is fed again), the reply generated
 * into *gp (streamed as it comes, with its final chunk), its tool calls into *calls. NULL, or the
 * error. The caller owns gp's buffers and the calls. */
static const char *run_choice(srv *s, job *j, gen_state *gp, int idx, mq_oai_call **calls, int *n_callsp) {
    mq_ctx *c = s->c;
    int32_t *out = NULL;
    char *echo_text = NULL;  /* completions' echo: the prompt's text */
    int n_calls = 0;
    const char *err = NULL;
    size_t n = j->n_ids;
    const int base = j->usage.completion_tokens; /* the earlier choices' tokens */

    mq_sampling sp;
    mq_sampling_default(&sp);
    mq_sampling_from_model(c, &sp);
    const mq_oai_req *q = &j->req;
    if (q->has_temperature) sp.temperature = q->temperature;
    if (q->has_top_p) sp.top_p = q->top_p;
    if (q->has_top_k) sp.top_k = q->top_k;
    if (q->has_min_p) sp.min_p = q->min_p;
    if (q->has_rep) sp.rep_penalty = q->rep_penalty;
    sp.presence_penalty = q->presence_penalty; /* (over this reply's tokens: from the prompt's end) */
    sp.frequency_penalty = q->frequency_penalty;
    sp.penalty_from = (int)n;
    sp.bias_ids = q->bias_ids; /* (mq_set_sampling copies them) */
    sp.bias_vals = q->bias_vals;
    sp.n_bias = q->n_bias;
    /* min_tokens: the ids that would end the reply (end-of-sequence unless ignore_eos, which does
     * not end it; stop_token_ids) are banned until then, as vLLM's MinTokensLogitsProcessor */
    int32_t ban[MQ_OAI_MAX_STOP_IDS + 8];
    int n_ban = 0;
    if (q->min_tokens > 0) {
        for (int i = 0; !q->ignore_eos && i < s->info->n_eos && n_ban < 8; i++) ban[n_ban++] = s->info->eos_ids[i];
        for (int i = 0; i < q->n_stop_ids; i++)
            if (q->stop_ids[i] < s->info->vocab_size) ban[n_ban++] = q->stop_ids[i];
    }
    sp.min_tokens = q->min_tokens;
    sp.ban_ids = ban;
    sp.n_ban = n_ban;
    /* n > 1: choice i draws from seed + i (as vLLM); without a seed, from the job's own seed0 with
     * choices spread by an odd constant, so that no two requests' choices share a seed */
    sp.seed = q->has_seed ? q->seed + (uint64_t)idx : j->seed0 + (uint64_t)idx * 0xD1B54A32D192ED03ull;
    if (mq_set_sampling(c, &sp)) { err = mq_last_error(); goto done; }
    mq_detok_stream_reset(c);
    if (gp->stream && q->kind == MQ_OAI_CHAT &&
        push(s, j, mq_oai_chunk_sse(q->kind, j->id, j->created, s->o.model_name, idx, "", 0, 1, NULL, q->include_usage,
                                    NULL))) {
        err = "out of memory";
        goto done;
    }

    /* KV reuse: keep the longest prefix shared with what the cache holds, feed the rest. The last
     * prompt token is always fed by mq_generate so its logits pick the first new token. An echoed
     * prompt's logprobs need every row's logits, so that prefill starts from 0. */
    const int echo_lp = q->echo && q->logprobs;
    if (s->n_cache != mq_pos(c)) { mq_reset(c); s->n_cache = 0; }
    size_t keep = echo_lp ? 0 : common_prefix(s->cache, (size_t)s->n_cache, j->ids, n);
    if (keep > n - 1) keep = n - 1;
    if (mq_rewind(c, (int)keep)) { err = mq_last_error(); goto done; }
    s->n_cache = (int)keep;
    if (idx == 0) j->usage.cached_tokens = (int)keep; /* (later choices find all of the prompt cached) */
    j->usage.prompt_tokens = (int)n;
    if (q->echo) { /* the prompt's text (and its tokens' entries) come first */
        echo_text = q->prompt ? strdup(q->prompt) : detok_ids(c, j->ids, n);
        if (!echo_text) { err = "out of memory"; goto done; }
        gp->text_off = echo_lp ? 0 : utf8_chars(echo_text, strlen(echo_text));
        int bad = echo_lp && add_lp(gp, j->ids[0], NULL, 1);
        if (!bad && !gp->stream) bad = mq_oai_buf_put(&gp->text, echo_text, strlen(echo_text));
        /* stream: sent now, or with its logprobs entries after the prefill */
        if (!bad && gp->stream && !echo_lp) bad = deliver(gp, echo_text, strlen(echo_text));
        if (bad) { err = "out of memory"; goto done; }
    }
    const int slice = echo_lp ? 64 : 512;
    float *rows = echo_lp ? malloc((size_t)slice * s->info->vocab_size * sizeof *rows) : NULL;
    if (echo_lp && !rows) { err = "out of memory"; goto done; }
    for (size_t p = keep; p + 1 < n;) {
        /* Prefill in slices so a client that leaves during a long prompt frees the engine soon. */
        int m = (int)(n - 1 - p < (size_t)slice ? n - 1 - p : (size_t)slice);
        if (__atomic_load_n(&j->cancel, __ATOMIC_RELAXED) || s->stopping) { free(rows); goto done; }
        if (mq_feed(c, j->ids + p, m, rows)) { free(rows); err = mq_last_error(); goto done; }
        for (int r = 0; rows && r < m; r++) { /* row r predicts token p + r + 1 */
            mq_logprob lp;
            mq_logprobs_row(rows + (size_t)r * s->info->vocab_size, s->info->vocab_size, j->ids[p + r + 1],
                            q->top_logprobs, &lp);
            if (add_lp(gp, j->ids[p + r + 1], &lp, 1)) { free(rows); err = "out of memory"; goto done; }
        }
        memcpy(s->cache + p, j->ids + p, (size_t)m * sizeof *s->cache);
        p += (size_t)m;
        s->n_cache = (int)p;
    }
    free(rows);
    /* the generated tokens' offsets continue after the echoed text (which NFC may have changed) */
    if (echo_lp) gp->text_off = utf8_chars(echo_text, strlen(echo_text));
    if (gp->stream && echo_lp && deliver(gp, echo_text, strlen(echo_text))) { err = "out of memory"; goto done; }
    int gen = 0;
    if (j->max_tokens > 0) {
        if (!(out = malloc((size_t)j->max_tokens * sizeof *out))) { err = "out of memory"; goto done; }
        /* mq_generate returns at an end-of-sequence token: with ignore_eos it goes on from there */
        int32_t first = j->ids[n - 1];
        while (gen < j->max_tokens) {
            const int want = (int)j->max_tokens - gen;
            const int got = q->logprobs ? mq_generate_lp(c, first, want, q->top_logprobs, out + gen, on_token_lp, gp)
                                        : mq_generate(c, first, want, out + gen, on_token, gp);
            if (got < 0) { err = mq_last_error(); goto done; }
            gen += got;
            j->usage.completion_tokens = base + gen;
            if (!q->ignore_eos || gp->halt || got == 0) break;
            first = out[gen - 1];
        }
    }
    /* The cache now holds the prompt and the generated tokens that were fed back. */
    int pos = mq_pos(c);
    if (gen == 0 && pos == (int)n - 1) { /* max_tokens 0 (echo): the prompt less its last token */
        s->n_cache = pos;
    } else if (pos >= (int)n && pos <= (int)n + gen) {
        memcpy(s->cache + s->n_cache, j->ids + s->n_cache, (n - (size_t)s->n_cache) * sizeof *s->cache);
        memcpy(s->cache + n, out, (size_t)(pos - (int)n) * sizeof *s->cache);
        s->n_cache = pos;
    } else {
        mq_reset(c);
        s->n_cache = 0;
    }
    if (gp->failed) { err = mq_last_error()[0] ? mq_last_error() : "out of memory"; goto done; }
    if (!gp->matched) {
        /* Not ended by a stop string: flush the detokenizer (a dangling partial character
         * becomes U+FFFD) and whatever the stop matcher still holds. */
        char buf[64];
        int k = mq_detok_stream(c, -1, buf, sizeof buf);
        gp->emit.n = 0;
        int r = mq_oai_stop_feed(&gp->stop, buf, k > 0 ? (size_t)k : 0, &gp->emit);
        if (r < 0 || deliver(gp, gp->emit.p, gp->emit.n)) { err = "out of memory"; goto done; }
        gp->emit.n = 0;
        if (r == 1) gp->matched = 1;
        else if (mq_oai_stop_flush(&gp->stop, &gp->emit) || deliver(gp, gp->emit.p, gp->emit.n)) { err = "out of memory"; goto done; }
    }
    if (gp->matched || !gp->finish) gp->finish = !gp->matched && gen >= j->max_tokens ? "length" : "stop";
    if (gp->think_on && gp->stream) { /* the end of the reply: what the thinking split still holds */
        gp->think_r.n = gp->think_c.n = 0;
        if (mq_oai_thinkscan_flush(&gp->think, &gp->think_r, &gp->think_c) ||
            (gp->think_r.n && send_reasoning(gp, gp->think_r.p, gp->think_r.n, 1))) { err = "out of memory"; goto done; }
        gp->think_on = 0; /* (the rest below goes out as content) */
        if (gp->think_c.n && deliver(gp, gp->think_c.p, gp->think_c.n)) { err = "out of memory"; goto done; }
    } else if (gp->think_on && gp->text.n) {
        gp->has_reasoning = mq_oai_split_reasoning(gp->text.p, gp->text.n, &gp->reasoning_at, &gp->reasoning_len, &gp->content_at);
    }
    if (q->parse_calls) { /* <tool_call> blocks become tool_calls; the text before them is the content */
        char cbase[48];
        /* (choice i > 0: the ids get "-i", so they stay unique in the response) */
        if (idx) snprintf(cbase, sizeof cbase, "%s-%d", j->id + strlen("chatcmpl-"), idx);
        else snprintf(cbase, sizeof cbase, "%s", j->id + strlen("chatcmpl-"));
        const char *src = gp->stream ? gp->scan.call.p : gp->text.p + gp->content_at;
        const size_t sn = gp->stream ? gp->scan.call.n : gp->text.n - gp->content_at;
        size_t clen = 0;
        n_calls = sn ? mq_oai_tool_calls(src, sn, cbase, calls, &clen) : 0;
        if (n_calls < 0) { err = "out of memory"; goto done; }
        if (n_calls > 0) {
            gp->finish = "tool_calls";
            if (!gp->stream) gp->text.n = gp->content_at + clen;
        }
        if (gp->stream) { /* the held tail, or an unparsable block, is content after all */
            const mq_oai_buf *rest = gp->scan.in_call ? &gp->scan.call : &gp->scan.held;
            int bad = 0;
            if (n_calls == 0 && rest->n)
                bad = push(s, j, mq_oai_chunk_sse(q->kind, j->id, j->created, s->o.model_name, idx, rest->p, rest->n, 0, NULL,
                                                  q->include_usage, NULL));
            else if (n_calls > 0)
                bad = push(s, j, mq_oai_calls_sse(j->id, j->created, s->o.model_name, idx, *calls, n_calls, q->include_usage));
            if (bad) { err = "out of memory"; goto done; }
        }
    }
    j->usage.completion_tokens = base + gen;
    j->finish = gp->finish;
    if (__atomic_load_n(&j->cancel, __ATOMIC_RELAXED)) goto done;
    if (gp->stream && push(s, j, mq_oai_chunk_sse(q->kind, j->id, j->created, s->o.model_name, idx,
                                                q->kind == MQ_OAI_CHAT ? NULL : "", 0, 0, gp->finish, q->include_usage,
                                                NULL)))
        err = "out of memory";
done:
    free(out);
    free(echo_text);
    *n_callsp = n_calls > 0 ? n_calls : 0;
    return err;
}

static void gen_free(gen_state *g) {
    mq_oai_toolscan_free(&g->scan);
    mq_oai_buf_free(&g->scan_out);
    mq_oai_thinkscan_free(&g->think);
    mq_oai_buf_free(&g->think_r);
    mq_oai_buf_free(&g->think_c);
    free(g->lps);
    mq_oai_buf_free(&g->emit);
    mq_oai_buf_free(&g->text);
    mq_oai_buf_free(&g->stop.held);
}

/* A request: its n choices one after the other (the prompt's KV cache is reused between them), then
 * the usage chunk and [DONE] (stream) or the whole body with every choice. */
static void run_job(srv *s, job *j) {
    const mq_oai_req *q = &j->req;
    const int nc = q->n_choices > 0 ? q->n_choices : 1;
    gen_state *gs = calloc((size_t)nc, sizeof *gs);
    mq_oai_call **calls = calloc((size_t)nc, sizeof *calls);
    int *n_calls = calloc((size_t)nc, sizeof *n_calls);
    mq_oai_reply *rep = calloc((size_t)nc, sizeof *rep);
    mq_oai_lps *lps = calloc((size_t)nc, sizeof *lps);
    const char *err = NULL;
    int ran = 0; /* choices whose state needs freeing */
    if (!gs || !calls || !n_calls || !rep || !lps) { err = "out of memory"; goto done; }
    for (int i = 0; i < nc && !err; i++) {
        gen_state *g = &gs[i];
        *g = (gen_state){.s = s, .j = j, .stream = q->stream, .index = i};
        g->think_on = q->kind == MQ_OAI_CHAT && s->o.reasoning;
        g->stop.stop = q->stop;
        g->stop.n = q->n_stop;
        ran = i + 1;
        err = run_choice(s, j, g, i, &calls[i], &n_calls[i]);
        if (!err && __atomic_load_n(&j->cancel, __ATOMIC_RELAXED)) goto done;
        if (!err && i + 1 < nc && s->stopping) err = "the server is shutting down";
    }
    if (err) goto done;
    if (q->stream) {
        if ((q->include_usage && push(s, j, mq_oai_usage_sse(q->kind, j->id, j->created, s->o.model_name, &j->usage))) ||
            push(s, j, strdup("data: [DONE]\n\n")))
            err = "out of memory";
    } else {
        j->status = 200;
        for (int i = 0; i < nc; i++) {
            const gen_state *g = &gs[i];
            lps[i] = (mq_oai_lps){g->lps, g->n_lps, q->logprobs};
            rep[i] = (mq_oai_reply){.text = g->text.p ? g->text.p + g->content_at : "", .len = g->text.n - g->content_at,
                                    .reasoning = g->has_reasoning ? g->text.p + g->reasoning_at : NULL,
                                    .rlen = g->reasoning_len, .finish = g->finish, .usage = &j->usage,
                                    .lps = &lps[i], .calls = calls[i], .n_calls = n_calls[i]};
        }
        j->body = mq_oai_response_json(q->kind, j->id, j->created, s->o.model_name, rep, nc);
        if (!j->body) err = "out of memory";
    }
done:
    if (err) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", err);
        j->finish = NULL; /* (an error, whatever the text had reached) */
        finish_error(s, j, q->stream, msg);
        mq_reset(s->c);
        s->n_cache = 0;
    }
    for (int i = 0; i < ran; i++) {
        gen_free(&gs[i]);
        mq_oai_calls_free(calls[i], n_calls[i]);
    }
    free(gs);
    free(calls);
    free(n_calls);
    free(rep);
    free(lps);
}

static void engine_loop(srv *s) {
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->head && !*s->o.stop) {
            struct timespec ts;
            deadline(&ts, 200);
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        }
        if (*s->o.stop) { pthread_mutex_unlock(&s->mu); return; }
        job *j = s->head;
        s->head = j->next;
        if (!s->head) s->tail = NULL;
        s->n_wait--;
        s->busy = 1;
        j->state = J_RUNNING;
        j->t_start = now_s();
        pthread_mutex_unlock(&s->mu);

        run_job(s, j);

        pthread_mutex_lock(&s->mu);
        j->t_end = now_s();
        j->state = J_DONE;
        s->busy = 0;
        {
            static const char *const outs[4] = {"stop", "length", "tool_calls", NULL};
            int k = 3;
            for (int i = 0; i < 3; i++)
                if (j->finish && !strcmp(j->finish, outs[i])) k = i;
            if (j->cancel) k = 4;
            s->st.n_out[k]++;
            s->st.tok_prompt += (unsigned long long)j->usage.prompt_tokens;
            s->st.tok_cached += (unsigned long long)j->usage.cached_tokens;
            s->st.tok_gen += (unsigned long long)j->usage.completion_tokens;
            s->st.sum_queue += j->t_start - j->t_arrival;
            s->st.sum_e2e += j->t_end - j->t_arrival;
            if (j->t_first) {
                s->st.sum_ttft += j->t_first - j->t_arrival;
                s->st.n_ttft++;
            }
        }
        pthread_cond_broadcast(&j->cv);
        if (!s->o.quiet)
            fprintf(stderr, "megaqwen serve: %s prompt %d (cached %d) + %d tokens, %s, queue %.1f ms, "
                    "TTFT %.1f ms, total %.1f ms%s\n", j->id, j->usage.prompt_tokens, j->usage.cached_tokens,
                    j->usage.completion_tokens, j->finish ? j->finish : "error",
                    1e3 * (j->t_start - j->t_queued), j->t_first ? 1e3 * (j->t_first - j->t_start) : 0.0,
                    1e3 * (j->t_end - j->t_start), j->cancel ? " [client gone]" : "");
        job_unref_locked(j); /* the engine's reference */
        pthread_mutex_unlock(&s->mu);
    }
}

/* ---------- streaming response ---------- */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream_ctx *sc = cls;
    srv *s = sc->s;
    job *j = sc->j;
    /* Send a comment line if nothing was sent for a while, so the connection timeout (which
     * would otherwise count a long prefill or queue wait as idleness) never fires on a live stream. */
    double ka = s->o.timeout_s > 3 ? s->o.timeout_s / 3.0 : 1.0;
    pthread_mutex_lock(&s->mu);
    while (j->out.n == j->sent && j->state != J_DONE && !s->stopping) {
        struct timespec ts;
        deadline(&ts, 50);
        pthread_cond_timedwait(&j->cv, &s->mu, &ts);
        if (j->out.n > j->sent || j->state == J_DONE) break;
        if (client_gone(sc->conn)) {
            job_cancel_locked(s, j);
            pthread_mutex_unlock(&s->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (now_s() - sc->t_last > ka) {
            pthread_mutex_unlock(&s->mu);
            static const char kal[] = ": keep-alive\n\n";
            size_t k = sizeof kal - 1 < max ? sizeof kal - 1 : max;
            memcpy(buf, kal, k);
            sc->t_last = now_s();
            return (ssize_t)k;
        }
    }
    if (j->out.n > j->sent) {
        size_t k = j->out.n - j->sent < max ? j->out.n - j->sent : max;
        memcpy(buf, j->out.p + j->sent, k);
        j->sent += k;
        if (j->sent == j->out.n) j->out.n = j->sent = 0;
        pthread_mutex_unlock(&s->mu);
        sc->t_last = now_s();
        return (ssize_t)k;
    }
    int clean = j->state == J_DONE && !j->cancel;
    pthread_mutex_unlock(&s->mu);
    return clean ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_free(void *cls) {
    stream_ctx *sc = cls;
    pthread_mutex_lock(&sc->s->mu);
    if (sc->j->state != J_DONE) job_cancel_locked(sc->s, sc->j);
    job_unref_locked(sc->j);
    pthread_mutex_unlock(&sc->s->mu);
    free(sc);
}

/* ---------- request handling ---------- */

/* A request's prompt as ids (*ids malloc'd or taken from q): chat through the template (with its
 * tools), a text prompt through the tokenizer, ids checked against the vocabulary. 0, or -1 with e. */
static int request_ids(srv *s, mq_oai_kind kind, mq_oai_req *q, int32_t **ids, size_t *n, mq_oai_err *e) {
    if (kind == MQ_OAI_CHAT || q->prompt) {
        char *text = kind == MQ_OAI_CHAT ? mq_chat_prompt_tools(s->c, q->msgs, q->n_msgs, q->tools, 1, q->enable_thinking)
                                         : NULL;
        if (kind == MQ_OAI_CHAT && !text)
            return mq_oai_fail(e, 400, "invalid_request_error", NULL, "messages", "%s", mq_last_error());
        const char *src = text ? text : q->prompt;
        int rc = mq_tokenize(s->c, src, strlen(src), ids, n);
        free(text);
        if (rc)
            return mq_oai_fail(e, 400, "invalid_request_error", NULL, kind == MQ_OAI_CHAT ? "messages" : "prompt",
                               "cannot tokenize the prompt: %s", mq_last_error());
        return 0;
    }
    for (size_t i = 0; i < q->n_prompt_ids; i++)
        if (q->prompt_ids[i] >= s->info->vocab_size)
            return mq_oai_fail(e, 400, "invalid_request_error", NULL, "prompt",
                               "prompt token id %d at index %zu is out of range [0, %d)", q->prompt_ids[i], i,
                               s->info->vocab_size);
    *ids = q->prompt_ids;
    *n = q->n_prompt_ids;
    q->prompt_ids = NULL;
    return 0;
}

/* POST /tokenize ({"prompt"} or {"messages", "tools"}, as vLLM's) and /detokenize ({"tokens"}). */
static enum MHD_Result handle_tokens(srv *s, conn_ctx *cc, struct MHD_Connection *conn) {
    mq_oai_err e;
    int32_t *ids = NULL;
    size_t n = 0;
    if (cc->route == R_DETOKENIZE) {
        if (mq_oai_parse_detokenize(cc->body.p, cc->body.n, s->info->vocab_size, &ids, &n, &e))
            return send_err(cc, conn, &e, NULL, NULL);
        char *text = detok_ids(s->c, ids, n);
        free(ids);
        char *body = text ? mq_oai_detokenize_json(text) : NULL;
        free(text);
        return send_body(cc, conn, 200, body, NULL, NULL, NULL);
    }
    /* {"messages": ...} is a chat prompt (with the generation prompt, as a chat request has it) */
    const mq_oai_kind kind = mq_oai_tokenize_kind(cc->body.p, cc->body.n);
    mq_oai_req q;
    if (mq_oai_parse(kind, cc->body.p, cc->body.n, &q, &e)) return send_err(cc, conn, &e, NULL, NULL);
    if (q.model && strcmp(q.model, s->o.model_name)) {
        mq_oai_fail(&e, 404, "invalid_request_error", "model_not_found", "model",
                    "The model '%.200s' does not exist (this server serves '%.200s')", q.model, s->o.model_name);
        mq_oai_req_free(&q);
        return send_err(cc, conn, &e, NULL, NULL);
    }
    int rc = request_ids(s, kind, &q, &ids, &n, &e);
    mq_oai_req_free(&q);
    if (rc) return send_err(cc, conn, &e, NULL, NULL);
    char *body = mq_oai_tokenize_json(ids, n, s->info->max_ctx);
    free(ids);
    return send_body(cc, conn, 200, body, NULL, NULL, NULL);
}

static enum MHD_Result handle_generate(srv *s, conn_ctx *cc, struct MHD_Connection *conn) {
    mq_oai_err e;
    mq_oai_kind kind = cc->route == R_CHAT ? MQ_OAI_CHAT : MQ_OAI_COMPLETION;
    job *j = calloc(1, sizeof *j);
    if (!j) return fail(cc, conn, 500, "server_error", NULL, NULL, "out of memory");
    pthread_cond_init(&j->cv, NULL);
    j->refs = 1;
    j->t_arrival = cc->t0;
    cc->j = j;
    if (mq_oai_parse(kind, cc->body.p, cc->body.n, &j->req, &e)) return send_err(cc, conn, &e, NULL, NULL);
    mq_oai_req *q = &j->req;
    if (q->model && strcmp(q->model, s->o.model_name)) {
        mq_oai_fail(&e, 404, "invalid_request_error", "model_not_found", "model",
                    "The model '%.200s' does not exist (this server serves '%.200s')", q->model, s->o.model_name);
        return send_err(cc, conn, &e, NULL, NULL);
    }
    for (int i = 0; i < q->n_bias; i++)
        if (q->bias_ids[i] >= s->info->vocab_size) {
            mq_oai_fail(&e, 400, "invalid_request_error", NULL, "logit_bias", "logit_bias token id %d is out of range [0, %d)",
                        q->bias_ids[i], s->info->vocab_size);
            return send_err(cc, conn, &e, NULL, NULL);
        }
    /* Template and tokenize here, in the connection's thread: the tokenizer is read-only. */
    if (request_ids(s, kind, q, &j->ids, &j->n_ids, &e)) return send_err(cc, conn, &e, NULL, NULL);
    long ctx = s->info->max_ctx, n = (long)j->n_ids;
    if (n == 0) return fail(cc, conn, 400, "invalid_request_error", NULL, "prompt", "the prompt is empty after tokenization");
    j->max_tokens = q->max_tokens >= 0 ? q->max_tokens : ctx - n; /* 0 only with echo (oai.c) */
    if (n > ctx || n + j->max_tokens > ctx || (j->max_tokens < 1 && !q->echo)) {
        mq_oai_fail(&e, 400, "invalid_request_error", "context_length_exceeded",
                    q->max_tokens > 0 ? "max_tokens" : "messages",
                    "this model's context is %ld tokens, but the prompt has %ld tokens and max_tokens is %ld "
                    "(%ld in all); shorten the prompt or lower max_tokens",
                    ctx, n, q->max_tokens > 0 ? q->max_tokens : 0, n + (q->max_tokens > 0 ? q->max_tokens : 0));
        return send_err(cc, conn, &e, NULL, NULL);
    }

    pthread_mutex_lock(&s->mu);
    if (s->stopping || s->n_wait + s->busy > s->o.queue) {
        int stopping = s->stopping;
        s->st.n_rejected++;
        pthread_mutex_unlock(&s->mu);
        mq_oai_fail(&e, 503, "server_error", "server_overloaded", NULL,
                    stopping ? "the server is shutting down" :
                    "the server is busy (queue of %d requests is full); retry later", s->o.queue);
        return send_err(cc, conn, &e, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    }
    j->created = (long)time(NULL);
    snprintf(j->id, sizeof j->id, "%s-%lx%06lx", kind == MQ_OAI_CHAT ? "chatcmpl" : "cmpl", (unsigned long)j->created,
             ++s->seq & 0xffffff);
    /* the sampling seed of a request without one: its own (time, sequence number), taken here under
     * the lock, so requests that run in the same second still draw differently */
    j->seed0 = ((uint64_t)j->created << 24 ^ (uint64_t)s->seq) * 0x9E3779B97F4A7C15ull;
    j->t_queued = now_s();
    j->state = J_QUEUED;
    j->refs++; /* the queue's / engine's reference */
    if (s->tail) s->tail->next = j; else s->head = j;
    s->tail = j;
    s->n_wait++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);

    if (q->stream) {
        stream_ctx *sc = calloc(1, sizeof *sc);
        if (!sc) goto oom;
        sc->s = s;
        sc->j = j;
        sc->conn = conn;
        sc->t_last = now_s();
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, sc, stream_free);
        if (!r) { free(sc); goto oom; }
        pthread_mutex_lock(&s->mu);
        j->refs++; /* the response's reference, dropped in stream_free */
        pthread_mutex_unlock(&s->mu);
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        MHD_add_response_header(r, "X-Accel-Buffering", "no");
        cc->status = 200;
        enum MHD_Result ret = MHD_queue_response(conn, 200, r);
        MHD_destroy_response(r);
        return ret;
    }

    /* Wait for the result without a connection timeout (the wait is ours, not the client's),
     * watching for the client to leave. */
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    pthread_mutex_lock(&s->mu);
    while (j->state != J_DONE && !s->stopping) {
        struct timespec ts;
        deadline(&ts, 50);
        pthread_cond_timedwait(&j->cv, &s->mu, &ts);
        if (j->state != J_DONE && client_gone(conn)) {
            job_cancel_locked(s, j);
            pthread_mutex_unlock(&s->mu);
            cc->status = 499;
            return MHD_NO;
        }
    }
    int done = j->state == J_DONE && j->body;
    int status = j->status;
    char *body = j->body;
    j->body = NULL;
    if (!done) job_cancel_locked(s, j);
    pthread_mutex_unlock(&s->mu);
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)s->o.timeout_s);
    if (!done) {
        free(body);
        return fail(cc, conn, 503, "server_error", "server_overloaded", NULL, "the server is shutting down");
    }
    char cached[16];
    snprintf(cached, sizeof cached, "%d", j->usage.cached_tokens);
    return send_body(cc, conn, status, body, NULL, "X-Cached-Tokens", cached);
oom:
    pthread_mutex_lock(&s->mu);
    job_cancel_locked(s, j);
    pthread_mutex_unlock(&s->mu);
    return fail(cc, conn, 500, "server_error", NULL, NULL, "out of memory");
}

/* GET /metrics: Prometheus' text format (what vLLM's /metrics gives a scraper, under megaqwen_ names). */
static char *metrics_text(srv *s) {
    pthread_mutex_lock(&s->mu);
    const struct srv_stats m = s->st;
    const int busy = s->busy, n_wait = s->n_wait;
    pthread_mutex_unlock(&s->mu);
    mq_oai_buf b = {0};
    char l[512];
    int bad = 0;
#define LINE(...) (snprintf(l, sizeof l, __VA_ARGS__), bad |= mq_oai_buf_put(&b, l, strlen(l)))
    LINE("# HELP megaqwen_requests_total Finished requests by how they ended.\n"
         "# TYPE megaqwen_requests_total counter\n");
    static const char *const outs[5] = {"stop", "length", "tool_calls", "error", "cancelled"};
    for (int i = 0; i < 5; i++) LINE("megaqwen_requests_total{outcome=\"%s\"} %lu\n", outs[i], m.n_out[i]);
    LINE("# HELP megaqwen_requests_rejected_total Requests refused with 503 (queue full or shutting down).\n"
         "# TYPE megaqwen_requests_rejected_total counter\nmegaqwen_requests_rejected_total %lu\n", m.n_rejected);
    LINE("# HELP megaqwen_requests_running Requests the engine is running (0 or 1).\n"
         "# TYPE megaqwen_requests_running gauge\nmegaqwen_requests_running %d\n", busy);
    LINE("# HELP megaqwen_requests_waiting Requests queued behind the running one.\n"
         "# TYPE megaqwen_requests_waiting gauge\nmegaqwen_requests_waiting %d\n", n_wait);
    LINE("# HELP megaqwen_prompt_tokens_total Prompt tokens of finished requests (cached ones included).\n"
         "# TYPE megaqwen_prompt_tokens_total counter\nmegaqwen_prompt_tokens_total %llu\n", m.tok_prompt);
    LINE("# HELP megaqwen_cached_prompt_tokens_total Prompt tokens whose KV came from the cache.\n"
         "# TYPE megaqwen_cached_prompt_tokens_total counter\nmegaqwen_cached_prompt_tokens_total %llu\n", m.tok_cached);
    LINE("# HELP megaqwen_generation_tokens_total Generated tokens of finished requests.\n"
         "# TYPE megaqwen_generation_tokens_total counter\nmegaqwen_generation_tokens_total %llu\n", m.tok_gen);
    const unsigned long fin = m.n_out[0] + m.n_out[1] + m.n_out[2] + m.n_out[3] + m.n_out[4];
    LINE("# HELP megaqwen_queue_time_seconds Time from arrival to the engine's start, per request.\n"
         "# TYPE megaqwen_queue_time_seconds summary\nmegaqwen_queue_time_seconds_sum %.6f\n"
         "megaqwen_queue_time_seconds_count %lu\n", m.sum_queue, fin);
    LINE("# HELP megaqwen_time_to_first_token_seconds Time from arrival to the first generated token.\n"
         "# TYPE megaqwen_time_to_first_token_seconds summary\nmegaqwen_time_to_first_token_seconds_sum %.6f\n"
         "megaqwen_time_to_first_token_seconds_count %lu\n", m.sum_ttft, m.n_ttft);
    LINE("# HELP megaqwen_e2e_request_latency_seconds Time from arrival to the end of generation.\n"
         "# TYPE megaqwen_e2e_request_latency_seconds summary\nmegaqwen_e2e_request_latency_seconds_sum %.6f\n"
         "megaqwen_e2e_request_latency_seconds_count %lu\n", m.sum_e2e, fin);
#undef LINE
    if (bad) {
        mq_oai_buf_free(&b);
        return NULL;
    }
    return b.p;
}

static int route_of(const char *url, const char *model) {
    if (!strcmp(url, "/v1/chat/completions")) return R_CHAT;
    if (!strcmp(url, "/v1/completions")) return R_COMPL;
    if (!strcmp(url, "/v1/models")) return R_MODELS;
    if (!strncmp(url, "/v1/models/", 11) && !strcmp(url + 11, model)) return R_MODEL;
    if (!strcmp(url, "/health")) return R_HEALTH;
    if (!strcmp(url, "/metrics")) return R_METRICS;
    if (!strcmp(url, "/tokenize")) return R_TOKENIZE;
    if (!strcmp(url, "/detokenize")) return R_DETOKENIZE;
    return -1;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **req_cls) {
    (void)version;
    srv *s = cls;
    conn_ctx *cc = *req_cls;
    if (!cc) {
        if (!(cc = calloc(1, sizeof *cc))) return MHD_NO;
        *req_cls = cc;
        cc->t0 = now_s();
        cc->route = route_of(url, s->o.model_name);
        if (cc->route < 0) {
            mq_oai_err e;
            if (!strncmp(url, "/v1/models/", 11))
                mq_oai_fail(&e, 404, "invalid_request_error", "model_not_found", "model", "The model '%.200s' does not exist", url + 11);
            else
                mq_oai_fail(&e, 404, "invalid_request_error", "not_found", NULL, "unknown path %.200s (see /v1/models, "
                            "/v1/chat/completions, /v1/completions, /tokenize, /detokenize, /health, /metrics)", url);
            return send_err(cc, conn, &e, NULL, NULL);
        }
        int post = cc->route == R_CHAT || cc->route == R_COMPL || cc->route == R_TOKENIZE || cc->route == R_DETOKENIZE;
        if (strcmp(method, post ? "POST" : "GET") && (post || strcmp(method, "HEAD"))) {
            mq_oai_err e;
            mq_oai_fail(&e, 405, "invalid_request_error", "method_not_allowed", NULL, "%.20s is not allowed on %.200s (use %s)",
                        method, url, post ? "POST" : "GET");
            return send_err(cc, conn, &e, "Allow", post ? "POST" : "GET, HEAD");
        }
        if (cc->route != R_HEALTH && cc->route != R_METRICS && !auth_ok(s, conn)) {
            mq_oai_err e;
            mq_oai_fail(&e, 401, "invalid_request_error", "invalid_api_key", NULL,
                        "missing or incorrect API key (send 'Authorization: Bearer KEY')");
            return send_err(cc, conn, &e, "WWW-Authenticate", "Bearer");
        }
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->o.max_body) cc->too_big = 1;
        if (cc->too_big) goto too_big;
        return MHD_YES;
    }
    if (*upload_data_size) {
        /* A body that trickles in past the timeout is dropped: slow clients never reach the engine. */
        if (now_s() - cc->t0 > s->o.timeout_s) { cc->status = 408; return MHD_NO; }
        if (!cc->too_big) {
            if (cc->body.n + *upload_data_size > s->o.max_body) {
                cc->too_big = 1;
                mq_oai_buf_free(&cc->body);
            } else if (mq_oai_buf_put(&cc->body, upload_data, *upload_data_size)) {
                return MHD_NO;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (cc->too_big) goto too_big;
    switch (cc->route) {
    case R_HEALTH: {
        pthread_mutex_lock(&s->mu);
        int waiting = s->n_wait, busy = s->busy;
        pthread_mutex_unlock(&s->mu);
        char b[160];
        snprintf(b, sizeof b, "{\"status\":\"ok\",\"busy\":%s,\"waiting\":%d,\"queue\":%d}", busy ? "true" : "false",
                 waiting, s->o.queue);
        return send_body(cc, conn, 200, strdup(b), NULL, NULL, NULL);
    }
    case R_METRICS:
        return send_body(cc, conn, 200, metrics_text(s), "text/plain; version=0.0.4; charset=utf-8", NULL, NULL);
    case R_MODELS:
        return send_body(cc, conn, 200, mq_oai_models_json(s->o.model_name, s->started, s->info->max_ctx), NULL, NULL, NULL);
    case R_MODEL: {
        /* the one entry of the list */
        char *all = mq_oai_models_json(s->o.model_name, s->started, s->info->max_ctx);
        char *a = all ? strstr(all, "[") : NULL, *b = all ? strrchr(all, ']') : NULL;
        char *one = NULL;
        if (a && b && b > a + 1) {
            one = malloc((size_t)(b - a));
            if (one) { memcpy(one, a + 1, (size_t)(b - a - 1)); one[b - a - 1] = 0; }
        }
        free(all);
        return send_body(cc, conn, 200, one, NULL, NULL, NULL);
    }
    case R_TOKENIZE:
    case R_DETOKENIZE:
        return handle_tokens(s, cc, conn);
    default:
        return handle_generate(s, cc, conn);
    }
too_big: {
        mq_oai_err e;
        mq_oai_fail(&e, 413, "invalid_request_error", "request_too_large", NULL,
                    "request body is larger than the limit of %zu bytes", s->o.max_body);
        return send_err(cc, conn, &e, "Connection", "close");
    }
}

static void completed(void *cls, struct MHD_Connection *conn, void **req_cls, enum MHD_RequestTerminationCode toe) {
    (void)conn;
    srv *s = cls;
    conn_ctx *cc = *req_cls;
    if (!cc) return;
    *req_cls = NULL;
    if (cc->j) {
        pthread_mutex_lock(&s->mu);
        if (cc->j->state != J_DONE && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) job_cancel_locked(s, cc->j);
        job_unref_locked(cc->j);
        pthread_mutex_unlock(&s->mu);
    }
    mq_oai_buf_free(&cc->body);
    free(cc);
}

/* ---------- start / stop ---------- */

int mq_srv_run(mq_ctx *c, const mq_srv_opts *opts) {
    static volatile sig_atomic_t never;
    srv *s = calloc(1, sizeof *s);
    if (!s) { mq_err_set("serve: out of memory"); return -1; }
    s->c = c;
    s->info = mq_get_info(c);
    s->o = *opts;
    if (!s->o.stop) s->o.stop = &never;
    if (!s->o.model_name) s->o.model_name = "megaqwen";
    if (s->o.timeout_s < 1) s->o.timeout_s = 1;
    s->started = (long)time(NULL);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    int rc = -1;
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", s->o.port);
    int gr = getaddrinfo(s->o.host, port, &hints, &ai);
    if (gr || !ai) {
        mq_err_set("serve: cannot resolve --host '%s': %s", s->o.host, gai_strerror(gr));
        goto out;
    }
    if (!(s->cache = malloc((size_t)s->info->max_ctx * sizeof *s->cache))) { mq_err_set("serve: out of memory"); goto out; }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    errno = 0;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)s->o.port, NULL, NULL, handle, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->o.timeout_s, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(s->o.max_conn > 0 ? s->o.max_conn : 256), MHD_OPTION_NOTIFY_COMPLETED, completed, s,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)1 << 20, MHD_OPTION_END);
    if (!d) {
        mq_err_set("serve: cannot listen on %s port %d: %s", s->o.host, s->o.port,
                   errno ? strerror(errno) : "libmicrohttpd refused to start");
        goto out;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    int bound = di ? di->port : s->o.port;
    fprintf(stderr, "megaqwen serve: listening on http://%s%s%s:%d (model '%s', %s backend, context %d, queue %d)\n",
            ai->ai_family == AF_INET6 ? "[" : "", s->o.host, ai->ai_family == AF_INET6 ? "]" : "", bound,
            s->o.model_name, s->info->backend, s->info->max_ctx, s->o.queue);
    fflush(stderr);

    engine_loop(s);

    /* Shutdown: refuse new work, fail what is queued, let connection threads finish, stop. */
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    while (s->head) job_cancel_locked(s, s->head);
    pthread_mutex_unlock(&s->mu);
    MHD_stop_daemon(d);
    fprintf(stderr, "megaqwen serve: stopped\n");
    rc = 0;
out:
    if (ai) freeaddrinfo(ai);
    free(s->cache);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return rc;
}
