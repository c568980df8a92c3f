/* pyjson: JSON text exactly as Python's json.dumps(v, ensure_ascii=False) writes it (Jinja's tojson in
 * transformers' chat templates, vLLM's tool-call arguments). */
#include "pyjson.h"
#include "sbuf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Python's repr of a float: the shortest digits that read back the same; fixed notation for
 * decimal exponents -4..15 (".0" when integral), else d.ddde[+-]XX. */
static void py_float(mq_sbuf *b, double v) {
    char buf[48], dig[24], out[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, v);
        if (strtod(buf, NULL) == v) break;
    }
    const char *p = buf, *e = strchr(buf, 'e');
    if (!e) { /* (finite values always have an exponent in %e) */
        mq_sbuf_puts(b, buf);
        return;
    }
    int nd = 0, ex = atoi(e + 1), neg = *p == '-';
    for (p += neg; p < e; p++)
        if (*p != '.') dig[nd++] = *p;
    while (nd > 1 && dig[nd - 1] == '0') nd--;
    dig[nd] = 0;
    char *o = out;
    if (neg) *o++ = '-';
    if (ex >= -4 && ex <= 15) {
        if (ex < 0) {
            o += sprintf(o, "0.");
            for (int i = 0; i < -ex - 1; i++) *o++ = '0';
            o += sprintf(o, "%s", dig);
        } else {
            for (int i = 0; i <= ex; i++) *o++ = i < nd ? dig[i] : '0';
            *o++ = '.';
            if (nd > ex + 1) o += sprintf(o, "%s", dig + ex + 1);
            else *o++ = '0';
        }
        *o = 0;
    } else {
        *o++ = dig[0];
        if (nd > 1) o += sprintf(o, ".%s", dig + 1);
        sprintf(o, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
    mq_sbuf_puts(b, out);
}

/* Python's json.dumps(s, ensure_ascii=False) of the string s[0..n) (a NUL included: \u0000). */
static void py_strn(mq_sbuf *b, const char *s, size_t n) {
    mq_sbuf_put(b, "\"", 1);
    size_t run = 0; /* bytes since the last escape, written in one piece */
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        mq_sbuf_put(b, s + run, i - run);
        char e[8];
        switch (c) {
        case '"': mq_sbuf_puts(b, "\\\""); break;
        case '\\': mq_sbuf_puts(b, "\\\\"); break;
        case '\n': mq_sbuf_puts(b, "\\n"); break;
        case '\r': mq_sbuf_puts(b, "\\r"); break;
        case '\t': mq_sbuf_puts(b, "\\t"); break;
        case '\b': mq_sbuf_puts(b, "\\b"); break;
        case '\f': mq_sbuf_puts(b, "\\f"); break;
        default:
            snprintf(e, sizeof e, "\\u%04x", c);
            mq_sbuf_puts(b, e);
        }
        run = i + 1;
    }
    mq_sbuf_put(b, s + run, n - run);
    mq_sbuf_put(b, "\"", 1);
}

static void py_str(mq_sbuf *b, const char *s) { py_strn(b, s, strlen(s)); }

/* Jinja's tojson as transformers defines it: json.dumps(v, ensure_ascii=False). cJSON keeps no
 * int / float distinction, so an integral number under 1e16 is written as an integer (a tool schema
 * that writes 2.0 comes out as 2, where Python would keep 2.0). */
static void py_dumps(mq_sbuf *b, const cJSON *v) {
    if (cJSON_IsNull(v)) mq_sbuf_puts(b, "null");
    else if (cJSON_IsTrue(v)) mq_sbuf_puts(b, "true");
    else if (cJSON_IsFalse(v)) mq_sbuf_puts(b, "false");
    else if (cJSON_IsString(v)) py_str(b, v->valuestring);
    else if (cJSON_IsNumber(v)) {
        const double d = v->valuedouble;
        if (isnan(d)) mq_sbuf_puts(b, "NaN"); /* (a number past double's range reads as inf: Python writes these) */
        else if (isinf(d)) mq_sbuf_puts(b, d > 0 ? "Infinity" : "-Infinity");
        else if (d == floor(d) && fabs(d) < 1e16) {
            char buf[32];
            snprintf(buf, sizeof buf, "%.0f", d == 0 ? 0.0 : d);
            mq_sbuf_puts(b, buf);
        } else {
            py_float(b, d);
        }
    } else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        const int obj = cJSON_IsObject(v);
        mq_sbuf_put(b, obj ? "{" : "[", 1);
        const cJSON *it;
        int first = 1;
        cJSON_ArrayForEach(it, v) {
            if (!first) mq_sbuf_puts(b, ", ");
            first = 0;
            if (obj) {
                py_str(b, it->string);
                mq_sbuf_puts(b, ": ");
            }
            py_dumps(b, it);
        }
        mq_sbuf_put(b, obj ? "}" : "]", 1);
    }
}

char *mq_pyjson(const cJSON *v) {
    mq_sbuf b = {0};
    mq_sbuf_put(&b, "", 0);
    py_dumps(&b, v);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

char *mq_pyjson_str(const char *s, size_t n) {
    mq_sbuf b = {0};
    py_strn(&b, s, n);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
