/* test_tokenizer: ids equal to HF tokenizers on the corpus, decode/stream round trips, added-token
 * flags on a small tokenizer, bad UTF-8 and bad files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>
#include "err.h"
#include "tokenizer.h"
#include "testutil.h"

#define TOKDIR MQ_SOURCE_DIR "/.deps/qwen3-tokenizer"
#define DATADIR MQ_SOURCE_DIR "/tests/data/tok"

static mq_tok *qwen; /* loaded once for the whole file */

/* ---------- helpers ---------- */


/* JSON lines of a file, parsed. */
static cJSON **read_jsonl(const char *path, int *n) {
    char *b = mq_test_slurp(path, NULL);
    if (!b) { print_error("cannot read %s\n", path); return NULL; }
    int cap = 64, k = 0;
    cJSON **v = malloc((size_t)cap * sizeof *v);
    for (char *line = strtok(b, "\n"); line; line = strtok(NULL, "\n")) {
        if (k == cap) v = realloc(v, (size_t)(cap *= 2) * sizeof *v);
        v[k] = cJSON_Parse(line);
        if (!v[k]) { print_error("%s: bad JSON line %d\n", path, k + 1); abort(); }
        k++;
    }
    free(b);
    *n = k;
    return v;
}

static void free_jsonl(cJSON **v, int n) {
    for (int i = 0; i < n; i++) cJSON_Delete(v[i]);
    free(v);
}

static char *unhex(const char *h, size_t *len) {
    size_t n = strlen(h) / 2;
    char *o = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        o[i] = (char)v;
    }
    o[n] = 0;
    *len = n;
    return o;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static char *tmpdir_with(const char *tokjson, const char *cfgjson) {
    char tmpl[] = "/tmp/mq_tok_XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    char p[256];
    if (tokjson) {
        snprintf(p, sizeof p, "%s/tokenizer.json", d);
        FILE *f = fopen(p, "wb");
        fputs(tokjson, f);
        fclose(f);
    }
    if (cfgjson) {
        snprintf(p, sizeof p, "%s/tokenizer_config.json", d);
        FILE *f = fopen(p, "wb");
        fputs(cfgjson, f);
        fclose(f);
    }
    return strdup(d);
}

static void rm_tmpdir(char *d) {
    char p[256];
    snprintf(p, sizeof p, "%s/tokenizer.json", d);
    unlink(p);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", d);
    unlink(p);
    rmdir(d);
    free(d);
}

/* Decode by streaming one id at a time (plus the final flush). */
static char *stream_decode(const mq_tok *t, const int32_t *ids, size_t n, size_t *len) {
    size_t cap = 64, k = 0;
    char *o = malloc(cap);
    mq_tok_stream s = {0};
    for (size_t i = 0; i <= n; i++) {
        size_t tl = 0;
        if (i < n) assert_non_null(mq_tok_bytes(t, ids[i], &tl));
        while (k + 64 + 3 * tl + 8 > cap) o = realloc(o, cap *= 2);
        int r = i < n ? mq_tok_stream_put(t, &s, ids[i], o + k, cap - k) : mq_tok_stream_flush(&s, o + k, cap - k);
        assert_true(r >= 0);
        /* every chunk written is valid UTF-8 on its own: no broken characters on screen */
        utf8proc_int32_t cp;
        for (utf8proc_ssize_t j = 0; j < r;) {
            utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)o + k + j, r - j, &cp);
            assert_true(l > 0);
            j += l;
        }
        k += (size_t)r;
    }
    *len = k;
    return o;
}

/* ---------- the corpus against HF ---------- */

static void test_corpus_ids(void **state) {
    (void)state;
    int nc, nr;
    cJSON **corpus = read_jsonl(DATADIR "/corpus.jsonl", &nc);
    cJSON **ref = read_jsonl(DATADIR "/ref.jsonl", &nr);
    assert_non_null(corpus);
    assert_non_null(ref);
    assert_true(nc >= 200);
    assert_int_equal(nr, nc + 1); /* a meta line, then one per corpus string */
    int bad = 0, total_ids = 0;
    for (int i = 0; i < nc; i++) {
        const cJSON *r = ref[i + 1], *rids = cJSON_GetObjectItemCaseSensitive(r, "ids");
        assert_int_equal(cJSON_GetObjectItemCaseSensitive(r, "n")->valueint,
                         cJSON_GetObjectItemCaseSensitive(corpus[i], "n")->valueint);
        size_t len;
        char *text = unhex(jstr(corpus[i], "hex"), &len);
        int32_t *ids;
        size_t n;
        if (mq_tok_encode(qwen, text, len, &ids, &n)) {
            print_error("corpus %d: encode failed: %s\n", i, mq_err_get());
            bad++;
            free(text);
            continue;
        }
        int same = (int)n == cJSON_GetArraySize(rids);
        for (size_t j = 0; same && j < n; j++) same = ids[j] == cJSON_GetArrayItem(rids, (int)j)->valueint;
        if (!same) {
            bad++;
            print_error("corpus %d (%s): %zu ids, HF %d; first difference:", i, jstr(corpus[i], "what"), n,
                        cJSON_GetArraySize(rids));
            for (size_t j = 0; j < n || (int)j < cJSON_GetArraySize(rids); j++) {
                int a = j < n ? ids[j] : -1, b = (int)j < cJSON_GetArraySize(rids) ? cJSON_GetArrayItem(rids, (int)j)->valueint : -1;
                if (a != b) { print_error(" at %zu: ours %d, HF %d\n", j, a, b); break; }
            }
        }
        total_ids += (int)n;
        free(ids);
        free(text);
    }
    print_message("corpus: %d strings, %d ids, %d differ from HF\n", nc, total_ids, bad);
    assert_int_equal(bad, 0);
    free_jsonl(corpus, nc);
    free_jsonl(ref, nr);
}

/* decode(encode(s)) == NFC(s) == HF's decode, and streaming gives the same bytes. */
static void test_corpus_roundtrip(void **state) {
    (void)state;
    int nc, nr;
    cJSON **corpus = read_jsonl(DATADIR "/corpus.jsonl", &nc);
    cJSON **ref = read_jsonl(DATADIR "/ref.jsonl", &nr);
    int bad = 0;
    for (int i = 0; i < nc; i++) {
        size_t len, hl, nl;
        char *text = unhex(jstr(corpus[i], "hex"), &len);
        char *hf_dec = unhex(jstr(ref[i + 1], "decoded_hex"), &hl);
        char *py_nfc = unhex(jstr(ref[i + 1], "nfc_hex"), &nl);
        int32_t *ids;
        size_t n, dl, sl;
        char *dec;
        assert_int_equal(mq_tok_encode(qwen, text, len, &ids, &n), 0);
        assert_int_equal(mq_tok_decode(qwen, ids, n, &dec, &dl), 0);
        /* our own NFC (utf8proc), length-bounded so an embedded NUL is kept */
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t nfl = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &nfc,
                                            UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        assert_true(nfl >= 0);
        char *sdec = stream_decode(qwen, ids, n, &sl);
        int ok = dl == (size_t)nfl && !memcmp(dec, nfc, dl) && dl == hl && !memcmp(dec, hf_dec, dl) &&
                 dl == nl && !memcmp(dec, py_nfc, dl) && sl == dl && !memcmp(sdec, dec, dl);
        if (!ok) {
            bad++;
            print_error("corpus %d (%s): round trip differs (decoded %zu bytes, NFC %zd, HF %zu, stream %zu)\n",
                        i, jstr(corpus[i], "what"), dl, nfl, hl, sl);
        }
        free(nfc);
        free(sdec);
        free(dec);
        free(ids);
        free(text);
        free(hf_dec);
        free(py_nfc);
    }
    assert_int_equal(bad, 0);
    free_jsonl(corpus, nc);
    free_jsonl(ref, nr);
}

/* Streaming over arbitrary id sequences (partial UTF-8 tokens, stray continuation bytes) equals
 * the one-shot decode, which replaces ill-formed bytes with U+FFFD as HF does. */
static void test_stream_random(void **state) {
    (void)state;
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    int vs = mq_tok_vocab_size(qwen);
    /* ids of single-byte tokens: these are where broken sequences come from */
    int32_t byte_ids[256];
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        int32_t *ids;
        size_t n;
        byte_ids[b] = -1;
        if (b < 0x80 && !mq_tok_encode(qwen, &c, 1, &ids, &n)) { byte_ids[b] = ids[0]; free(ids); }
    }
    for (int id = 0; id < vs; id++) { /* high bytes: find each single-byte token by its bytes */
        size_t l;
        const char *s = mq_tok_bytes(qwen, id, &l);
        if (s && l == 1 && byte_ids[(unsigned char)s[0]] < 0) byte_ids[(unsigned char)s[0]] = id;
    }
    for (int b = 0; b < 256; b++) assert_true(byte_ids[b] >= 0);
    for (int trial = 0; trial < 2000; trial++) {
        int32_t ids[24];
        size_t n = 1 + trial % 24;
        for (size_t j = 0; j < n; j++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            ids[j] = (x >> 40) % 3 ? byte_ids[(x >> 8) & 0xFF] : (int32_t)((x >> 16) % (uint64_t)vs);
            size_t l;
            if (!mq_tok_bytes(qwen, ids[j], &l)) ids[j] = byte_ids[x & 0x7F];
        }
        char *dec, *sdec;
        size_t dl, sl;
        assert_int_equal(mq_tok_decode(qwen, ids, n, &dec, &dl), 0);
        sdec = stream_decode(qwen, ids, n, &sl);
        assert_int_equal(sl, dl);
        assert_memory_equal(sdec, dec, dl);
        free(dec);
        free(sdec);
    }
    /* a lone lead byte is held back, then flushed as one U+FFFD */
    mq_tok_stream s = {0};
    char out[64];
    assert_int_equal(mq_tok_stream_put(qwen, &s, byte_ids[0xE4], out, sizeof out), 0);
    assert_int_equal(mq_tok_stream_put(qwen, &s, byte_ids[0xBD], out, sizeof out), 0);
    assert_int_equal(mq_tok_stream_put(qwen, &s, byte_ids[0xA0], out, sizeof out), 3);
    assert_memory_equal(out, "\xE4\xBD\xA0", 3); /* 你 */
    assert_int_equal(mq_tok_stream_put(qwen, &s, byte_ids[0xF0], out, sizeof out), 0);
    assert_int_equal(mq_tok_stream_flush(&s, out, sizeof out), 3);
    assert_memory_equal(out, "\xEF\xBF\xBD", 3);
    assert_int_equal(mq_tok_stream_flush(&s, out, sizeof out), 0);
    /* a bad id is an error, not a crash */
    assert_int_equal(mq_tok_stream_put(qwen, &s, -1, out, sizeof out), -1);
    assert_int_equal(mq_tok_stream_put(qwen, &s, vs, out, sizeof out), -1);
}

/* Every added token in tokenizer.json: found by content, encodes to its own id alone and inside
 * text, decodes back to its content. Ids are read from the file, not assumed. */
static void test_added_tokens(void **state) {
    (void)state;
    char *b = mq_test_slurp(TOKDIR "/tokenizer.json", NULL);
    assert_non_null(b);
    cJSON *j = cJSON_Parse(b);
    free(b);
    cJSON *a, *added = cJSON_GetObjectItemCaseSensitive(j, "added_tokens");
    int k = 0;
    cJSON_ArrayForEach(a, added) {
        const char *c = jstr(a, "content");
        int id = cJSON_GetObjectItemCaseSensitive(a, "id")->valueint;
        assert_int_equal(mq_tok_special(qwen, c), id);
        char text[256];
        snprintf(text, sizeof text, "x%sy", c);
        int32_t *ids;
        size_t n;
        assert_int_equal(mq_tok_encode(qwen, text, strlen(text), &ids, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(ids[1], id);
        char *dec;
        size_t dl;
        assert_int_equal(mq_tok_decode(qwen, ids + 1, 1, &dec, &dl), 0);
        assert_string_equal(dec, c);
        free(dec);
        free(ids);
        k++;
    }
    assert_true(k > 0);
    assert_int_equal(mq_tok_special(qwen, "<|not_a_token|>"), -1);
    assert_int_equal(mq_tok_special(qwen, ""), -1);
    cJSON_Delete(j);
}

/* Invalid UTF-8 is refused with the offset of the first bad byte. */
static void test_bad_utf8(void **state) {
    (void)state;
    static const struct { const char *s; size_t len, at; } cases[] = {
        {"\xff", 1, 0},                 {"ab\xc3", 3, 2},          /* truncated at end */
        {"ab\xc3(", 4, 2},              {"\xc0\xaf", 2, 0},        /* overlong '/' */
        {"ok \xe0\x80\xaf", 6, 3},      {"x\xed\xa0\x80y", 5, 1},  /* surrogate D800 */
        {"\xf4\x90\x80\x80", 4, 0},     {"caf\xc3\xa9 \x80", 7, 6}, /* lone continuation */
        {"\xe2\x82", 2, 0},             {"good text then \xfe", 16, 15},
        {"<|im_end|>\xf8", 11, 10},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *ids = (int32_t *)1;
        size_t n = 99;
        mq_err_clear();
        assert_int_equal(mq_tok_encode(qwen, cases[i].s, cases[i].len, &ids, &n), -1);
        char want[64];
        snprintf(want, sizeof want, "at byte %zu", cases[i].at);
        if (!strstr(mq_err_get(), want)) print_error("case %zu: '%s' lacks '%s'\n", i, mq_err_get(), want);
        assert_non_null(strstr(mq_err_get(), want));
        assert_non_null(strstr(mq_err_get(), "invalid UTF-8"));
        assert_null(ids);
        assert_int_equal(n, 0);
    }
    /* an embedded NUL is valid UTF-8 and encodes */
    int32_t *ids;
    size_t n;
    assert_int_equal(mq_tok_encode(qwen, "a\0b", 3, &ids, &n), 0);
    assert_int_equal(n, 3);
    free(ids);
    /* the empty string: no ids, a freeable pointer */
    assert_int_equal(mq_tok_encode(qwen, "", 0, &ids, &n), 0);
    assert_int_equal(n, 0);
    free(ids);
}

static void test_bad_ids(void **state) {
    (void)state;
    char *out = NULL;
    size_t len;
    int vs = mq_tok_vocab_size(qwen);
    int32_t ids[] = {0, vs};
    mq_err_clear();
    assert_int_equal(mq_tok_decode(qwen, ids, 2, &out, &len), -1);
    assert_non_null(strstr(mq_err_get(), "not in the vocabulary"));
    int32_t neg[] = {-5};
    assert_int_equal(mq_tok_decode(qwen, neg, 1, &out, &len), -1);
    assert_null(mq_tok_bytes(qwen, -1, &len));
    assert_null(mq_tok_bytes(qwen, vs, &len));
    assert_int_equal(mq_tok_decode(qwen, ids, 0, &out, &len), 0); /* nothing: "" */
    assert_int_equal(len, 0);
    assert_string_equal(out, "");
    free(out);
}

/* ---------- a small tokenizer for the added-token flags and merge order ---------- */

/* Byte-level vocab (byte b = id b) plus merges a+a, aa+a, b+c, a+b; added tokens with each flag.
 * Expected ids below came from HF tokenizers 0.23 (its Node binding) on this same file; note that
 * HF ignores the added tokens' "id" fields and numbers them itself (a content already in the
 * vocab takes that id: "é" is byte 0xE9's token; "ab" is a merge result). */
static char *mini_json(int split_pretok) {
    static char buf[1 << 16];
    size_t k = 0;
    k += (size_t)sprintf(buf + k, "{\"version\":\"1.0\",\"added_tokens\":["
        "{\"id\":300,\"content\":\"<m>\",\"single_word\":false,\"lstrip\":true,\"rstrip\":false,\"normalized\":false,\"special\":true},"
        "{\"id\":301,\"content\":\"[r]\",\"single_word\":false,\"lstrip\":false,\"rstrip\":true,\"normalized\":false,\"special\":false},"
        "{\"id\":302,\"content\":\"wd\",\"single_word\":true,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":false},"
        "{\"id\":303,\"content\":\"\\u00e9\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":true,\"special\":false},"
        "{\"id\":304,\"content\":\"ab\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":false},"
        "{\"id\":305,\"content\":\"abc\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":false},"
        "{\"id\":306,\"content\":\"e\\u0301x\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":false}],"
        "\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":%s,"
        "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{",
        split_pretok ? "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+|[^\\\\s]+\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}"
                     : "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}");
    int n = 0;
    for (int b = 0; b < 256; b++) { /* GPT-2 bytes_to_unicode */
        int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        int cp = keep ? b : 256 + n++;
        k += (size_t)sprintf(buf + k, "%s\"\\u%04x\":%d", b ? "," : "", cp, b);
    }
    k += (size_t)sprintf(buf + k, ",\"aa\":256,\"aaa\":257,\"bc\":258,\"ab\":259},"
                         "\"merges\":[[\"a\",\"a\"],\"aa a\",[\"b\",\"c\"],[\"a\",\"b\"]]}}");
    return buf;
}

static void expect_ids(const mq_tok *t, const char *s, const int32_t *want, size_t nw) {
    int32_t *ids;
    size_t n;
    assert_int_equal(mq_tok_encode(t, s, strlen(s), &ids, &n), 0);
    int same = n == nw;
    for (size_t i = 0; same && i < n; i++) same = ids[i] == want[i];
    if (!same) {
        print_error("'%s': got", s);
        for (size_t i = 0; i < n; i++) print_error(" %d", ids[i]);
        print_error("\n");
    }
    assert_true(same);
    free(ids);
}
#define EXPECT(t, s, ...) do { static const int32_t w_[] = {__VA_ARGS__}; \
    expect_ids(t, s, w_, sizeof w_ / sizeof w_[0]); } while (0)

static void test_mini_flags(void **state) {
    (void)state;
    for (int variant = 0; variant < 2; variant++) {
        char *d = tmpdir_with(mini_json(variant), NULL);
        mq_tok *t = mq_tok_load(d);
        if (!t) print_error("%s\n", mq_err_get());
        assert_non_null(t);
        assert_int_equal(mq_tok_special(t, "<m>"), 260);   /* HF numbering, not the file's 300 */
        assert_int_equal(mq_tok_special(t, "\xc3\xa9"), 233);
        assert_int_equal(mq_tok_special(t, "ab"), 259);
        assert_int_equal(mq_tok_vocab_size(t), 265);
        EXPECT(t, "a <m> b", 97, 260, 32, 98);          /* lstrip eats the space before */
        EXPECT(t, "a  <m>", 97, 260);
        EXPECT(t, "<m><m>", 260, 260);
        EXPECT(t, "x [r]   y", 120, 32, 261, 121);      /* rstrip eats the spaces after */
        EXPECT(t, "[r]\n\tz", 261, 122);
        EXPECT(t, "wd", 262);                           /* single_word: only standing alone */
        EXPECT(t, "a wd b", 97, 32, 262, 32, 98);
        EXPECT(t, "awd", 97, 119, 100);
        EXPECT(t, "wdx", 119, 100, 120);
        EXPECT(t, "xwd wd", 120, 119, 100, 32, 262);
        EXPECT(t, "caf\xc3\xa9 cafe\xcc\x81", 99, 97, 102, 233, 32, 99, 97, 102, 233); /* normalized: after NFC */
        EXPECT(t, "cafe\xcc\x81x", 99, 97, 102, 264);   /* not normalized: raw text only */
        EXPECT(t, "xabcx", 120, 263, 120);              /* leftmost-longest */
        EXPECT(t, "xabx", 120, 259, 120);
        EXPECT(t, "\xc3\xa9<m>", 233, 260);
        EXPECT(t, "a\xc2\xa0<m>\xe3\x80\x80[r]\xe2\x80\xa8q", 97, 260, 227, 128, 128, 261, 113); /* Unicode spaces */
        EXPECT(t, "aaaa", 256, 256);                    /* merges: lowest rank, leftmost first */
        EXPECT(t, "aaa", 257);
        EXPECT(t, "zabcz", 122, 263, 122);
        EXPECT(t, "zbcz", 122, 258, 122);
        /* decode of an added token is its content */
        int32_t ids[] = {260, 264};
        char *dec;
        size_t dl;
        assert_int_equal(mq_tok_decode(t, ids, 2, &dec, &dl), 0);
        assert_string_equal(dec, "<m>e\xcc\x81x");
        free(dec);
        mq_tok_free(t);
        rm_tmpdir(d);
    }
    /* split_special_tokens=true in tokenizer_config.json: special tokens are plain text */
    char *d = tmpdir_with(mini_json(0), "{\"split_special_tokens\": true}");
    mq_tok *t = mq_tok_load(d);
    assert_non_null(t);
    EXPECT(t, "<m>", 60, 109, 62);
    EXPECT(t, "x [r]   y", 120, 32, 261, 121);
    mq_tok_free(t);
    rm_tmpdir(d);
}

/* Where PCRE2's and utf8proc's Unicode data differ from what HF uses: U+180E is not a space;
 * letters and digits of Unicode 15-16 (Kawi, Nag Mundari, CJK Extensions H and I, Garay,
 * Kaktovik numerals) are letters and digits; marks newer than HF's NFC tables block composition
 * and reordering, as unknown characters do there. Expected ids from HF tokenizers 0.23.2 (its
 * Node binding). */
static void test_unicode_versions(void **state) {
    (void)state;
    static const struct { const char *s; int n; int32_t ids[8]; } cases[] = {
        {"\x65\xe0\xa2\x98\xcc\x81", 5, {68, 156, 95, 246, 53839}},                /* e U+0898 U+0301 */
        {"\x61\xe1\xb7\xb6\xcc\x96\x62", 7, {64, 157, 115, 114, 136, 244, 65}},       /* a U+1DF6 U+0316 b */
        {"\xf0\x91\xa4\xb5\xf0\x91\xa4\xb0", 6, {128240, 97, 113, 128240, 97, 108}}, /* U+11935 U+11930 */
        {"\x65\xcc\x81\xf0\x9e\x93\xac\xcc\xa3", 7, {963, 172, 252, 241, 105, 136, 96}},
        {"\x20\xe1\xa0\x8e\x20\x78", 4, {86089, 254, 236, 856}},                     /* U+180E */
        {"\x78\xf0\x91\xbc\x84\xf0\x91\xbc\x85\x2c", 8, {87, 128240, 120, 226, 128240, 120, 227, 11}},
        {"\x20\xf0\x9d\x8b\x80\x20\x31", 6, {220, 56252, 233, 222, 220, 16}},         /* U+1D2C0 */
        {"\xe4\xb8\xad\xf0\xb1\x8d\x90\x2c", 6, {15946, 172, 109, 235, 238, 11}},    /* U+31350 */
        {"\xf0\x9e\x93\x90\x61\x21", 6, {172, 252, 241, 238, 64, 0}},                 /* U+1E4D0 */
        {"\x71\xf0\x9d\x8b\x85\xf0\x9d\x8b\x86\x7a", 8, {80, 56252, 233, 227, 56252, 233, 228, 89}},
        /* a letter/digit before a contraction: as "other" it would swallow the apostrophe */
        {"\xf0\x90\xb5\x8a\x27\x73", 4, {123934, 113, 232, 594}},          /* U+10D4A (16.0) 's */
        {"\xf0\xae\xaf\xb0\x27\x6c\x6c", 5, {172, 106, 107, 108, 3278}},     /* U+2EBF0 (15.1) 'll */
        {"\xf0\x9e\x93\x90\x27\x53", 5, {172, 252, 241, 238, 13272}},        /* U+1E4D0 (15.0) 'S */
        {"\xf0\x91\xbc\x84\x27\x76\x65\x20\x78", 5, {128240, 120, 226, 3003, 856}},
        {"\xf0\x9d\x8b\x80\x27\x73", 4, {56252, 233, 222, 594}},           /* U+1D2C0 (15.0) 's */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_ids(qwen, cases[i].s, cases[i].ids, (size_t)cases[i].n);
}

/* ---------- bad files ---------- */

static void expect_load_err(const char *tokjson, const char *cfg, const char *substr, const char *file) {
    char *d = tmpdir_with(tokjson, cfg);
    mq_err_clear();
    mq_tok *t = mq_tok_load(d);
    if (t || !strstr(mq_err_get(), substr) || !strstr(mq_err_get(), file))
        print_error("load: got '%s', want '%s' naming %s\n", mq_err_get(), substr, file);
    assert_null(t);
    assert_non_null(strstr(mq_err_get(), substr));
    assert_non_null(strstr(mq_err_get(), file));
    assert_null(strchr(mq_err_get(), '\n'));
    rm_tmpdir(d);
}

static void test_bad_files(void **state) {
    (void)state;
    mq_err_clear();
    assert_null(mq_tok_load("/nonexistent/dir"));
    assert_non_null(strstr(mq_err_get(), "/nonexistent/dir/tokenizer.json"));
    assert_non_null(strstr(mq_err_get(), "cannot open"));
    expect_load_err(NULL, NULL, "cannot open", "tokenizer.json");
    expect_load_err("{\"model\": {", NULL, "malformed JSON", "tokenizer.json");
    expect_load_err("", NULL, "malformed JSON", "tokenizer.json");
    expect_load_err("[1,2]", NULL, "not a JSON object", "tokenizer.json");
    expect_load_err("{\"decoder\":{\"type\":\"ByteLevel\"}}", NULL, "no \"model\"", "tokenizer.json");
    expect_load_err("{\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", NULL,
                    "unsupported", "tokenizer.json");
    expect_load_err("{\"decoder\":{\"type\":\"Metaspace\"},\"model\":{\"type\":\"BPE\"}}", NULL,
                    "not ByteLevel", "tokenizer.json");
    expect_load_err("{\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}",
                    NULL, "missing from the vocab", "tokenizer.json");
    expect_load_err("{\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3},\"merges\":[]}}",
                    NULL, "bad id", "tokenizer.json");
    expect_load_err("{\"decoder\":{\"type\":\"ByteLevel\"},\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},"
                    "\"behavior\":\"Isolated\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                    NULL, "regex does not compile", "tokenizer.json");
    expect_load_err("{\"decoder\":{\"type\":\"ByteLevel\"},\"normalizer\":{\"type\":\"Lowercase\"},"
                    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}", NULL, "normalizer", "tokenizer.json");
    /* a malformed tokenizer_config.json is named too */
    expect_load_err(mini_json(0), "{not json", "malformed JSON", "tokenizer_config.json");
    /* truncated copies of the real file: an error, never a crash */
    char *real = mq_test_slurp(TOKDIR "/tokenizer.json", NULL);
    assert_non_null(real);
    size_t rl = strlen(real);
    size_t cuts[] = {1, 100, 5000, rl / 3, rl / 2, rl - 2};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char save = real[cuts[i]];
        real[cuts[i]] = 0;
        expect_load_err(real, NULL, "malformed JSON", "tokenizer.json");
        real[cuts[i]] = save;
    }
    free(real);
}

static int setup(void **state) {
    (void)state;
    qwen = mq_tok_load(TOKDIR);
    if (!qwen) fprintf(stderr, "test_tokenizer: %s (run scripts/deps.sh)\n", mq_err_get());
    return qwen ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    mq_tok_free(qwen);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus_ids),  cmocka_unit_test(test_corpus_roundtrip),
        cmocka_unit_test(test_stream_random), cmocka_unit_test(test_added_tokens),
        cmocka_unit_test(test_bad_utf8),    cmocka_unit_test(test_bad_ids),
        cmocka_unit_test(test_mini_flags),  cmocka_unit_test(test_unicode_versions),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
