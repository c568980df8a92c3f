/* err: thread-local last-error message shared by all engine modules. */
#include "err.h"
#include <stdarg.h>
#include <stdio.h>

static _Thread_local char mq_err_buf[1024];

void mq_err_set(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(mq_err_buf, sizeof mq_err_buf, fmt, ap);
    va_end(ap);
}

const char *mq_err_get(void) { return mq_err_buf; }
void mq_err_clear(void) { mq_err_buf[0] = 0; }
