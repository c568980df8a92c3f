/* fuzz_tokenizer: libFuzzer target for encode, decode, streaming decode and tokenizer.json loading. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>
#include "err.h"
#include "tokenizer.h"

/* The first input byte picks what the rest is:
 *   0: text to encode. Valid UTF-8 must encode and decode back to a canonically equivalent text
 *      (same NFC; not always NFC(text) itself: NFC runs between added tokens, as in HF, so
 *      "<|im_end|>" + U+0338 keeps its '>'), also when decoded one token at a time; invalid
 *      UTF-8 must fail with a message.
 *   1: little-endian int32 ids to decode. Decoding fails iff an id is outside the vocabulary;
 *      otherwise the output is valid UTF-8 and streaming gives the same bytes.
 *   2: the contents of a tokenizer.json to load (error or a working tokenizer, never a crash).
 * The real Qwen3 tokenizer is read from $MQ_FUZZ_TOKDIR, or .deps/qwen3-tokenizer of the source
 * tree this file is in. */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static mq_tok *tok;

static void load_once(void) {
    if (tok) return;
    char dir[4096];
    const char *env = getenv("MQ_FUZZ_TOKDIR");
    if (env) {
        snprintf(dir, sizeof dir, "%s", env);
    } else {
        snprintf(dir, sizeof dir, "%s", __FILE__);
        char *p = strstr(dir, "tests/fuzz/");
        if (p) strcpy(p, ".deps/qwen3-tokenizer");
        else strcpy(dir, ".deps/qwen3-tokenizer");
    }
    tok = mq_tok_load(dir);
    if (!tok) { fprintf(stderr, "fuzz_tokenizer: %s\n", mq_err_get()); abort(); }
}

static int valid_utf8(const uint8_t *s, size_t n) {
    utf8proc_int32_t cp;
    for (size_t i = 0; i < n;) {
        utf8proc_ssize_t l = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (l <= 0 || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += (size_t)l;
    }
    return 1;
}

/* Streamed decode must equal the one-shot decode, in chunks that are each valid UTF-8. */
static void check_stream(const int32_t *ids, size_t n, const char *want, size_t wl) {
    size_t cap = wl + 64, k = 0;
    char *o = malloc(cap);
    mq_tok_stream s = {0};
    for (size_t i = 0; i <= n; i++) {
        size_t tl = 0;
        if (i < n && !mq_tok_bytes(tok, ids[i], &tl)) __builtin_trap();
        if (k + 3 * tl + 64 > cap) o = realloc(o, cap = 2 * (k + 3 * tl + 64));
        int r = i < n ? mq_tok_stream_put(tok, &s, ids[i], o + k, cap - k) : mq_tok_stream_flush(&s, o + k, cap - k);
        if (r < 0 || !valid_utf8((const uint8_t *)o + k, (size_t)r)) __builtin_trap();
        k += (size_t)r;
    }
    if (k != wl || memcmp(o, want, wl)) __builtin_trap();
    free(o);
}

static void fuzz_encode(const uint8_t *d, size_t n) {
    int32_t *ids;
    size_t ni;
    mq_err_clear();
    int r = mq_tok_encode(tok, (const char *)d, n, &ids, &ni);
    if (!valid_utf8(d, n)) {
        if (r != -1 || !strstr(mq_err_get(), "invalid UTF-8")) __builtin_trap();
        return;
    }
    if (r != 0) __builtin_trap();
    char *dec;
    size_t dl;
    if (mq_tok_decode(tok, ids, ni, &dec, &dl)) __builtin_trap();
    utf8proc_uint8_t *nfc = NULL, *nfc2 = NULL;
    utf8proc_ssize_t nl = utf8proc_map(d, (utf8proc_ssize_t)n, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    utf8proc_ssize_t nl2 = utf8proc_map((const utf8proc_uint8_t *)dec, (utf8proc_ssize_t)dl, &nfc2,
                                        UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (nl < 0 || nl != nl2 || memcmp(nfc, nfc2, (size_t)nl)) __builtin_trap();
    check_stream(ids, ni, dec, dl);
    free(nfc);
    free(nfc2);
    free(dec);
    free(ids);
}

static void fuzz_decode(const uint8_t *d, size_t n) {
    size_t ni = n / 4;
    int32_t *ids = malloc((ni + 1) * sizeof *ids);
    int all_ok = 1, vs = mq_tok_vocab_size(tok);
    for (size_t i = 0; i < ni; i++) {
        uint32_t u = (uint32_t)d[4 * i] | (uint32_t)d[4 * i + 1] << 8 | (uint32_t)d[4 * i + 2] << 16 |
                     (uint32_t)d[4 * i + 3] << 24;
        /* mostly in range, sometimes just past it or negative */
        ids[i] = (u >> 31) ? (int32_t)(u & 0xFFFF) - 8 + vs * (int32_t)((u >> 16) & 1) : (int32_t)(u % (uint32_t)vs);
        size_t l;
        if (!mq_tok_bytes(tok, ids[i], &l)) all_ok = 0;
    }
    char *dec = NULL;
    size_t dl;
    int r = mq_tok_decode(tok, ids, ni, &dec, &dl);
    if ((r == 0) != all_ok) __builtin_trap();
    if (r == 0) {
        if (!valid_utf8((const uint8_t *)dec, dl)) __builtin_trap();
        check_stream(ids, ni, dec, dl);
        free(dec);
    }
    free(ids);
}

static void fuzz_load(const uint8_t *d, size_t n) {
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/fuzz_tok_%d", (int)getpid());
        mkdir(dir, 0700);
    }
    char path[128];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(d, 1, n, f);
    fclose(f);
    mq_err_clear();
    mq_tok *t = mq_tok_load(dir);
    if (!t) {
        if (!strstr(mq_err_get(), "tokenizer")) __builtin_trap(); /* the message names the file */
        return;
    }
    int32_t *ids;
    size_t ni;
    static const char probe[] = "Hello, world! 123 <|im_end|> \xc3\xa9\xe4\xbd\xa0";
    if (mq_tok_encode(t, probe, sizeof probe - 1, &ids, &ni) == 0) {
        char *dec;
        size_t dl;
        if (mq_tok_decode(t, ids, ni, &dec, &dl) == 0) free(dec);
        free(ids);
    }
    mq_tok_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load_once();
    if (size < 1) return 0;
    switch (data[0] % 3) {
    case 0: fuzz_encode(data + 1, size - 1); break;
    case 1: fuzz_decode(data + 1, size - 1); break;
    default: fuzz_load(data + 1, size - 1); break;
    }
    return 0;
}
