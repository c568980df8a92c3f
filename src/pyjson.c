/* pyjson: JSON text exactly as Python's json.dumps(v, ensure_ascii=False) writes it (Jinja's tojson in
 * transformers' chat templates, vLLM's tool-call arguments). */
#include "pyjson.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 128;
        while (c < b->n + n + 1) c *= 2;
        char *p = realloc(b->p, c);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

/* Python's repr of a float: the shortest digits that read back the same; fixed notation for
 * decimal exponents -4..15 (".0" when integral), else d.ddde[+-]XX. */
static void py_float(sbuf *b, double v) {
    char buf[48], dig[24], out[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, v);
        if (strtod(buf, NULL) == v) break;
    }
    const char *p = buf, *e = strchr(buf, 'e');
    if (!e) { /* (finite values always have an exponent in %e) */
        puts_(b, buf);
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
    puts_(b, out);
}

/* Python's json.dumps(s, ensure_ascii=False) of a string. */
static void py_str(sbuf *b, const char *s) {
    put(b, "\"", 1);
    for (; *s; s++) {
        const unsigned char c = (unsigned char)*s;
        char e[8];
        switch (c) {
        case '"': puts_(b, "\\\""); break;
        case '\\': puts_(b, "\\\\"); break;
        case '\n': puts_(b, "\\n"); break;
        case '\r': puts_(b, "\\r"); break;
        case '\t': puts_(b, "\\t"); break;
        case '\b': puts_(b, "\\b"); break;
        case '\f': puts_(b, "\\f"); break;
        default:
            if (c < 0x20) {
                snprintf(e, sizeof e, "\\u%04x", c);
                puts_(b, e);
            } else {
                put(b, s, 1);
            }
        }
    }
    put(b, "\"", 1);
}

/* Jinja's tojson as transformers defines it: json.dumps(v, ensure_ascii=False). cJSON keeps no
 * int / float distinction, so an integral number under 1e16 is written as an integer (a tool schema
 * that writes 2.0 comes out as 2, where Python would keep 2.0). */
static void py_dumps(sbuf *b, const cJSON *v) {
    if (cJSON_IsNull(v)) puts_(b, "null");
    else if (cJSON_IsTrue(v)) puts_(b, "true");
    else if (cJSON_IsFalse(v)) puts_(b, "false");
    else if (cJSON_IsString(v)) py_str(b, v->valuestring);
    else if (cJSON_IsNumber(v)) {
        const double d = v->valuedouble;
        if (isnan(d)) puts_(b, "NaN"); /* (a number past double's range reads as inf: Python writes these) */
        else if (isinf(d)) puts_(b, d > 0 ? "Infinity" : "-Infinity");
        else if (d == floor(d) && fabs(d) < 1e16) {
            char buf[32];
            snprintf(buf, sizeof buf, "%.0f", d == 0 ? 0.0 : d);
            puts_(b, buf);
        } else {
            py_float(b, d);
        }
    } else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        const int obj = cJSON_IsObject(v);
        put(b, obj ? "{" : "[", 1);
        const cJSON *it;
        int first = 1;
        cJSON_ArrayForEach(it, v) {
            if (!first) puts_(b, ", ");
            first = 0;
            if (obj) {
                py_str(b, it->string);
                puts_(b, ": ");
            }
            py_dumps(b, it);
        }
        put(b, obj ? "}" : "]", 1);
    }
}

char *mq_pyjson(const cJSON *v) {
    sbuf b = {0};
    put(&b, "", 0);
    py_dumps(&b, v);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
