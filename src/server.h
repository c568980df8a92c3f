/* server: `megaqwen serve` — an OpenAI-compatible HTTP server (libmicrohttpd) over one engine context. */
#ifndef MQ_SERVER_H
#define MQ_SERVER_H
#include <signal.h>
#include <stddef.h>

#include "megaqwen.h"

typedef struct {
    const char *host;        /* bind address; default "127.0.0.1" (loopback only) */
    int port;                /* 0 = any free port; the chosen one is printed on stderr */
    const char *api_key;     /* NULL/"" = no auth; else "Authorization: Bearer KEY" on /v1/ */
    int queue;               /* requests that may wait behind the running one; past it: 503 */
    size_t max_body;         /* request body limit in bytes (413 past it) */
    int timeout_s;           /* idle / slow-client timeout in seconds */
    int max_conn;            /* simultaneous connections (each gets a thread) */
    const char *model_name;  /* the id served in /v1/models and responses */
    int quiet;               /* 1: no per-request log lines */
    int reasoning;           /* 1: chat replies' <think> ... </think> goes to reasoning_content
                              * (vLLM's --reasoning-parser qwen3) */
    volatile sig_atomic_t *stop; /* set non-zero (e.g. from a signal handler) to shut down */
} mq_srv_opts;

void mq_srv_opts_default(mq_srv_opts *o);
/* Serve until *o->stop becomes non-zero. Requests run one at a time on c, in FIFO order; the KV
 * cache keeps the previous request's tokens so a repeated prefix is not recomputed.
 * Returns 0 after a clean shutdown, -1 (mq_err) if the server could not start. */
int mq_srv_run(mq_ctx *c, const mq_srv_opts *o);

#endif
