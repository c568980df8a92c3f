/* testutil: small helpers the cmocka tests share (reading fixture files). */
#ifndef MQ_TESTUTIL_H
#define MQ_TESTUTIL_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whole file as a malloc'd NUL-terminated buffer (NULL if unreadable); *len gets its size. */
static inline char *mq_test_slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0;
    if (b && len) *len = (size_t)n;
    return b;
}

/* A fresh directory under /tmp from a "/tmp/NAME.XXXXXX" template (dir holds >= 64 bytes). */
static inline int mq_test_mkdtemp(char *dir, const char *tmpl) {
    snprintf(dir, 64, "%s", tmpl);
    return mkdtemp(dir) ? 0 : -1;
}

/* Remove a test directory and everything in it. */
static inline int mq_test_rmrf(const char *dir) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
