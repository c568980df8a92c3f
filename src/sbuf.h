/* sbuf: a growable NUL-terminated byte buffer whose writes after a failed allocation do nothing
 * (check oom once at the end), shared by the string builders (chat.c, pyjson.c). */
#ifndef MQ_SBUF_H
#define MQ_SBUF_H
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} mq_sbuf;

static inline void mq_sbuf_put(mq_sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1) c *= 2;
        char *p = realloc(b->p, c);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = c;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static inline void mq_sbuf_puts(mq_sbuf *b, const char *s) { mq_sbuf_put(b, s, strlen(s)); }

#endif
