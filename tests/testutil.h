/* testutil: small helpers the cmocka tests share (reading fixture files). */
#ifndef MQ_TESTUTIL_H
#define MQ_TESTUTIL_H
#include <math.h>
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

/* One row of logits x (tested) against y (reference), V entries: returns KL(softmax y || softmax x)
 * in double; folds the largest |x - y| into *d (a NaN counts as the largest) and the largest |y|
 * into *mx. */
static inline double mq_test_row_kl(const float *x, const float *y, int V, double *d, double *mx) {
    double mxa = -INFINITY, mxb = -INFINITY, sa = 0, sb = 0;
    for (int i = 0; i < V; i++) {
        const double e = fabs((double)x[i] - y[i]);
        if (!(e <= *d)) *d = e;
        if (fabs(y[i]) > *mx) *mx = fabs(y[i]);
        if (x[i] > mxa) mxa = x[i];
        if (y[i] > mxb) mxb = y[i];
    }
    for (int i = 0; i < V; i++) {
        sa += exp(x[i] - mxa);
        sb += exp(y[i] - mxb);
    }
    double k = 0;
    for (int i = 0; i < V; i++) {
        const double lb = y[i] - mxb - log(sb), la = x[i] - mxa - log(sa);
        k += exp(lb) * (lb - la);
    }
    return k;
}

/* 1 if the HF fixture tests/data/hf/NAME exists; else prints why the caller skips and returns 0
 * (fixtures newer than a checkout's last device run: scripts/ref/hf_fixtures.py --only NAME). */
static inline int mq_test_hf_fixture(const char *src_dir, const char *name) {
    char path[1100];
    snprintf(path, sizeof path, "%s/tests/data/hf/%s/ref.json", src_dir, name);
    FILE *f = fopen(path, "rb");
    if (f) { fclose(f); return 1; }
    printf("  SKIP: %s missing (make it with scripts/ref/hf_fixtures.py --only %s)\n", path, name);
    return 0;
}

#endif
