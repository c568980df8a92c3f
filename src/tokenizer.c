/* tokenizer: byte-level BPE read from tokenizer.json, id for id equal to HF `tokenizers`. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "err.h"

/*
 * The encode pipeline is the one HF `tokenizers` runs (Tokenizer::encode, add_special_tokens=false):
 *   1. added tokens with normalized=false are cut out of the raw text (leftmost-longest match,
 *      then single_word / lstrip / rstrip as AddedVocabulary::find_matches applies them);
 *   2. each remaining piece is normalized (NFC), then added tokens with normalized=true are cut
 *      out of the normalized piece the same way;
 *   3. each remaining piece goes through the pre-tokenizer's regex Split stages (behavior
 *      Isolated: every match and every gap between matches is its own piece; empty pieces drop);
 *   4. ByteLevel maps each byte to one of 256 printable code points (GPT-2's bytes_to_unicode) —
 *      we skip the mapping and run BPE on byte ids directly, since the map is a bijection;
 *   5. BPE merges adjacent symbols, lowest merge rank first, leftmost first among equal ranks.
 * All tables are read from tokenizer.json: nothing here knows Qwen's vocabulary. What is here is
 * Unicode data where our libraries' versions differ from HF's (onig_to_pcre2, hf_nfc_unknown).
 */

#define MQ_TOK_MAX_ID (1 << 24) /* refuse ids past 16M: a vocab that large is a corrupt file */

enum { TOK_EXISTS = 1, TOK_MAPPED = 2 /* string went through the byte map (vs. kept as UTF-8) */ };

typedef struct {
    uint32_t off, len;   /* the text this token matches (content, NFC'd if normalized) in blob */
    uint32_t coff, clen; /* the content as written in tokenizer.json, in blob */
    int32_t id;
    uint8_t single_word, lstrip, rstrip, normalized, special;
    uint8_t nomatch; /* special token under split_special_tokens=true: text, not a token */
} mq_added;

typedef struct {
    pcre2_code *re;
} mq_split;

struct mq_tok {
    int n_ids;          /* max id + 1 */
    uint32_t *tok_off;  /* (n_ids) offset of each id's raw (byte-unmapped) bytes in blob */
    uint32_t *tok_len;  /* (n_ids) their length */
    uint8_t *tok_flag;  /* (n_ids) TOK_EXISTS | TOK_MAPPED */
    char *blob;         /* raw (byte-unmapped) bytes of every token, concatenated */
    size_t blob_len, blob_cap;
    int32_t byte_id[256]; /* id of the single-byte token for each byte; -1 if absent */

    /* vocab: raw bytes -> id, open addressing (vocab_cap slots, power of two) */
    int32_t *vocab_slot; /* (vocab_cap) id or -1 */
    uint32_t vocab_cap;

    /* merges: (left id, right id) -> (rank, merged id), open addressing */
    uint64_t *merge_key; /* (merge_cap) left<<32 | right; UINT64_MAX = empty */
    uint32_t *merge_rank;   /* (merge_cap) */
    int32_t *merge_new;     /* (merge_cap) */
    uint32_t merge_cap;
    int ignore_merges;

    mq_added *added; /* (n_added) sorted by content length, longest first */
    int n_added;
    int any_normalized_added, any_raw_added;
    uint8_t added_first[256]; /* 1 if some added token starts with this byte */

    int nfc;         /* normalizer is NFC */
    mq_split *splits; /* (n_splits) pre-tokenizer regex stages, applied in order */
    int n_splits;
};

/* ---------- GPT-2 bytes_to_unicode ---------- */

/* Printable bytes map to themselves; the other 68 map to 256, 257, ... in byte order. */
static int byte_to_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
    return 256 + n;
}

static int16_t cp_to_byte_tab[324]; /* code point -> byte, -1 if not in the map */
static void fill_byte_map(void) {
    for (int i = 0; i < 324; i++) cp_to_byte_tab[i] = -1;
    for (int b = 0; b < 256; b++) cp_to_byte_tab[byte_to_cp(b)] = (int16_t)b;
}
static void init_byte_map(void) { /* once per process, safe when threads load tokenizers at once */
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, fill_byte_map);
}

/* ---------- UTF-8 ---------- */

/* The multi-byte UTF-8 sequence lead byte c starts: its length (0: c is not the lead byte of a
 * valid one), and the range [*lo, *hi] its second byte must fall in (later bytes: 0x80-0xBF). */
static int utf8_lead(unsigned c, unsigned *lo, unsigned *hi) {
    *lo = 0x80, *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c == 0xE0) { *lo = 0xA0; return 3; }
    if (c >= 0xE1 && c <= 0xEC) return 3;
    if (c == 0xED) { *hi = 0x9F; return 3; }
    if (c >= 0xEE && c <= 0xEF) return 3;
    if (c == 0xF0) { *lo = 0x90; return 4; }
    if (c >= 0xF1 && c <= 0xF3) return 4;
    if (c == 0xF4) { *hi = 0x8F; return 4; }
    return 0;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid or truncated. *trunc is
 * set when the bytes are a valid prefix cut off by the end of the buffer. */
static int utf8_seq(const unsigned char *s, size_t n, int *trunc) {
    *trunc = 0;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    unsigned lo, hi;
    const int len = utf8_lead(c, &lo, &hi);
    if (!len) return 0;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) { *trunc = 1; return 0; }
        unsigned d = s[i];
        if (d < (i == 1 ? lo : 0x80) || d > (i == 1 ? hi : 0xBF)) return 0;
    }
    return len;
}

/* Bytes of the maximal ill-formed subpart at s (what one U+FFFD replaces, as Rust/HF do). */
static int utf8_bad_len(const unsigned char *s, size_t n) {
    unsigned lo, hi;
    const int len = utf8_lead(s[0], &lo, &hi);
    if (!len) return 1;
    int k = 1;
    while (k < len && (size_t)k < n) {
        unsigned d = s[k];
        if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) break;
        k++;
    }
    return k;
}

/* Decode one code point of valid UTF-8. */
static int32_t utf8_cp(const unsigned char *s, int len) {
    if (len == 1) return s[0];
    if (len == 2) return ((s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    if (len == 3) return ((s[0] & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    return ((s[0] & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

/* Unicode White_Space (what Rust's char::is_whitespace and regex \s test). */
static int is_white_space(int32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Rust regex's Unicode \w: alphabetic, marks, decimal digits, connector punctuation. */
static int is_word_char(int32_t c) {
    utf8proc_category_t k = utf8proc_category(c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) ||
           (k >= UTF8PROC_CATEGORY_MN && k <= UTF8PROC_CATEGORY_ME) || k == UTF8PROC_CATEGORY_ND ||
           k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_PC || c == 0x200C || c == 0x200D;
}

/* Last code point before s+end (s valid UTF-8). */
static int32_t cp_before(const char *s, size_t end, size_t *start) {
    size_t i = end;
    do i--; while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80);
    int tr;
    int l = utf8_seq((const unsigned char *)s + i, end - i, &tr);
    *start = i;
    return l ? utf8_cp((const unsigned char *)s + i, l) : -1;
}

/* ---------- hashing ---------- */

static uint32_t hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h ^ (h >> 15);
}

static uint32_t hash_pair(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

static uint32_t pow2_at_least(size_t n) {
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* Model-vocab id of a token string given as its raw bytes and whether it was byte-mapped (a
 * string of byte-map code points and one kept as UTF-8 can share raw bytes), -1 if absent. */
static int32_t vocab_find(const mq_tok *t, const char *s, size_t n, int mapped) {
    uint32_t m = t->vocab_cap - 1, i = hash_bytes(s, n) & m;
    uint8_t f = (uint8_t)(mapped ? TOK_MAPPED : 0);
    for (;;) {
        int32_t id = t->vocab_slot[i];
        if (id < 0) return -1;
        if (t->tok_len[id] == n && (t->tok_flag[id] & TOK_MAPPED) == f &&
            !memcmp(t->blob + t->tok_off[id], s, n))
            return id;
        i = (i + 1) & m;
    }
}

static int merge_find(const mq_tok *t, int32_t a, int32_t b, uint32_t *rank, int32_t *id) {
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t m = t->merge_cap - 1, i = hash_pair(k) & m;
    for (;;) {
        uint64_t s = t->merge_key[i];
        if (s == UINT64_MAX) return 0;
        if (s == k) { *rank = t->merge_rank[i]; *id = t->merge_new[i]; return 1; }
        i = (i + 1) & m;
    }
}

/* ---------- loading ---------- */

static int blob_add(mq_tok *t, const char *s, size_t n) {
    if (t->blob_len + n + 1 > t->blob_cap) {
        size_t c = t->blob_cap ? t->blob_cap : 1 << 20;
        while (c < t->blob_len + n + 1) c *= 2;
        char *b = realloc(t->blob, c);
        if (!b) return -1;
        t->blob = b;
        t->blob_cap = c;
    }
    memcpy(t->blob + t->blob_len, s, n);
    t->blob_len += n;
    return 0;
}

/* A token string's raw bytes as the ByteLevel decoder gives them: every code point through the
 * inverse byte map, or — if any code point is outside the map — the string's own UTF-8 bytes
 * (*mapped says which). out needs n bytes. */
static size_t token_raw(const char *s, size_t n, char *out, int *mapped) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        int tr, l = utf8_seq((const unsigned char *)s + i, n - i, &tr);
        int32_t c = l ? utf8_cp((const unsigned char *)s + i, l) : -1;
        if (c < 0 || c >= 324 || cp_to_byte_tab[c] < 0) {
            memcpy(out, s, n);
            *mapped = 0;
            return n;
        }
        out[k++] = (char)cp_to_byte_tab[c];
        i += (size_t)l;
    }
    *mapped = 1;
    return k;
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { mq_err_set("%s: cannot open: %s", path, strerror(errno)); return NULL; }
    char *b = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) { mq_err_set("%s: cannot read", path); fclose(f); return NULL; }
    if (!(b = malloc((size_t)n + 1))) { mq_err_set("%s: out of memory", path); fclose(f); return NULL; }
    if (fread(b, 1, (size_t)n, f) != (size_t)n) {
        mq_err_set("%s: read error", path);
        free(b); fclose(f);
        return NULL;
    }
    fclose(f);
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

static cJSON *parse_json(const char *path, int must_exist, int *missing) {
    size_t n;
    *missing = 0;
    FILE *probe = fopen(path, "rb");
    if (!probe && !must_exist && errno == ENOENT) { *missing = 1; return NULL; }
    if (probe) fclose(probe);
    char *b = read_all(path, &n);
    if (!b) return NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(b, n, &end, 0);
    if (!j) {
        size_t at = end ? (size_t)(end - b) : 0;
        mq_err_set("%s: malformed JSON near byte %zu", path, at);
    } else if (!cJSON_IsObject(j)) {
        mq_err_set("%s: top level is not a JSON object", path);
        cJSON_Delete(j);
        j = NULL;
    }
    free(b);
    return j;
}

/* Grow the per-id tables to hold id `id` — ids may arrive in any order. */
static int ensure_ids(mq_tok *t, int id, int *cap) {
    if (id < *cap) return 0;
    int c = *cap ? *cap : 1024;
    while (c <= id) c *= 2;
    uint32_t *o = realloc(t->tok_off, (size_t)c * sizeof *o);
    if (!o) return -1;
    t->tok_off = o;
    uint32_t *l = realloc(t->tok_len, (size_t)c * sizeof *l);
    if (!l) return -1;
    t->tok_len = l;
    uint8_t *k = realloc(t->tok_flag, (size_t)c);
    if (!k) return -1;
    memset(k + *cap, 0, (size_t)(c - *cap));
    t->tok_flag = k;
    *cap = c;
    return 0;
}

/* HF compiles the pattern with Oniguruma; we compile it with PCRE2, and the two disagree on the
 * character classes Qwen's and GPT-2's patterns use:
 *   - \s: Oniguruma's is Unicode White_Space; PCRE2's (UCP) also matches U+180E MONGOLIAN VOWEL
 *     SEPARATOR (not a space since Unicode 6.3);
 *   - \p{L}, \p{N}: each library knows the Unicode version it was built with (here PCRE2 10.42:
 *     Unicode 14; tokenizers 0.23's Oniguruma: Unicode 16), so letters and digits added since
 *     (Kawi, Nag Mundari, CJK Extension H, Kaktovik numerals, ...) split differently.
 * So these escapes are replaced by explicit code point classes: White_Space, and the L and N
 * general categories from utf8proc (Unicode 15.0 in Debian 12) plus the letters and digits that
 * Unicode 15.1 and 16.0 added (tables below, read off HF tokenizers 0.23.2 itself). \S, \P{L}
 * and \P{N} work outside brackets and are refused inside them (NULL); other \p{...} properties
 * are left to PCRE2. */
#define MQ_WS_SET "\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

/* Letters (L) and digits (N) of Unicode 15.1-16.0: Oniguruma in tokenizers 0.23 has them,
 * utf8proc 2.8 does not (found by asking HF about every code point utf8proc calls unassigned). */
static const int32_t newer_l[][2] = {
    {0x1C89, 0x1C8A}, {0xA7CB, 0xA7CD}, {0xA7DA, 0xA7DC}, {0x105C0, 0x105F3}, {0x10D4A, 0x10D65},
    {0x10D6F, 0x10D85}, {0x10EC2, 0x10EC4}, {0x11380, 0x11389}, {0x1138B, 0x1138B}, {0x1138E, 0x1138E},
    {0x11390, 0x113B5}, {0x113B7, 0x113B7}, {0x113D1, 0x113D1}, {0x113D3, 0x113D3}, {0x11BC0, 0x11BE0},
    {0x13460, 0x143FA}, {0x16100, 0x1611D}, {0x16D40, 0x16D6C}, {0x18CFF, 0x18CFF}, {0x1E5D0, 0x1E5ED},
    {0x1E5F0, 0x1E5F0}, {0x2EBF0, 0x2EE5D}, {-1, -1}};
static const int32_t newer_n[][2] = {
    {0x10D40, 0x10D49}, {0x116D0, 0x116E3}, {0x11BF0, 0x11BF9}, {0x16130, 0x16139}, {0x16D70, 0x16D79},
    {0x1CCF0, 0x1CCF9}, {0x1E5F1, 0x1E5FA}, {-1, -1}};

/* Class body (ranges, no brackets) of the code points whose utf8proc category is in [lo, hi],
 * plus the ranges of `extra` (ended by -1; overlaps are harmless in a class). */
static char *category_class(int lo, int hi, const int32_t (*extra)[2]) {
    size_t cap = 1 << 14, k = 0;
    char *o = malloc(cap);
    if (!o) return NULL;
    for (; (*extra)[0] >= 0; extra++) {
        if (k + 40 > cap) {
            char *p = realloc(o, cap *= 2);
            if (!p) { free(o); return NULL; }
            o = p;
        }
        k += (size_t)sprintf(o + k, "\\x{%x}-\\x{%x}", (unsigned)(*extra)[0], (unsigned)(*extra)[1]);
    }
    for (int32_t c = 0; c < 0x110000;) {
        int in = (int)utf8proc_category(c);
        if (in < lo || in > hi) { c++; continue; }
        int32_t e = c;
        while (e + 1 < 0x110000) {
            int k2 = (int)utf8proc_category(e + 1);
            if (k2 < lo || k2 > hi) break;
            e++;
        }
        if (k + 40 > cap) {
            char *p = realloc(o, cap *= 2);
            if (!p) { free(o); return NULL; }
            o = p;
        }
        k += (size_t)(e > c ? sprintf(o + k, "\\x{%x}-\\x{%x}", (unsigned)c, (unsigned)e)
                            : sprintf(o + k, "\\x{%x}", (unsigned)c));
        c = e + 1;
    }
    o[k] = 0;
    return o;
}

static char *onig_to_pcre2(const char *pat) {
    char *cls_l = category_class(UTF8PROC_CATEGORY_LU, UTF8PROC_CATEGORY_LO, newer_l);
    char *cls_n = category_class(UTF8PROC_CATEGORY_ND, UTF8PROC_CATEGORY_NO, newer_n);
    size_t n = strlen(pat), k = 0, cap = 0;
    char *o = NULL;
    if (cls_l && cls_n) {
        cap = n * (strlen(cls_l) + strlen(cls_n) + sizeof MQ_WS_SET + 8) + 1;
        o = malloc(cap);
    }
    int in_class = 0;
    for (size_t i = 0; o && i < n; i++) {
        char c = pat[i];
        if (c == '\\' && i + 1 < n) {
            char d = pat[++i];
            const char *set = NULL;
            int neg = 0;
            if (d == 's' || d == 'S') {
                set = MQ_WS_SET;
                neg = d == 'S';
            } else if ((d == 'p' || d == 'P') && i + 3 < n && pat[i + 1] == '{' && pat[i + 3] == '}' &&
                       (pat[i + 2] == 'L' || pat[i + 2] == 'N')) {
                set = pat[i + 2] == 'L' ? cls_l : cls_n;
                neg = d == 'P';
                i += 3;
            }
            if (set) {
                if (in_class && neg) { free(o); o = NULL; break; }
                k += (size_t)sprintf(o + k, "%s%s%s", in_class ? "" : neg ? "[^" : "[", set, in_class ? "" : "]");
            } else {
                o[k++] = c;
                o[k++] = d;
            }
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            o[k++] = c;
            if (i + 1 < n && pat[i + 1] == '^') o[k++] = pat[++i];
            if (i + 1 < n && pat[i + 1] == ']') o[k++] = pat[++i]; /* a leading ] is literal */
            continue;
        }
        if (in_class && c == ']') in_class = 0;
        o[k++] = c;
    }
    if (o) o[k] = 0;
    free(cls_l);
    free(cls_n);
    return o;
}

static int compile_split(mq_tok *t, const char *path, const char *onig) {
    int ec;
    PCRE2_SIZE eo;
    char *pat = onig_to_pcre2(onig);
    if (!pat) { mq_err_set("%s: pre-tokenizer regex uses \\S, \\P{L} or \\P{N} inside brackets (unsupported)", path); return -1; }
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                                   &ec, &eo, NULL);
    free(pat);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        mq_err_set("%s: pre-tokenizer regex does not compile at offset %zu: %s", path, (size_t)eo,
                   (char *)msg);
        return -1;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT is absent */
    mq_split *s = realloc(t->splits, (size_t)(t->n_splits + 1) * sizeof *s);
    if (!s) { pcre2_code_free(re); return -1; }
    t->splits = s;
    t->splits[t->n_splits++].re = re;
    return 0;
}

static int bool_field(const cJSON *o, const char *k, int def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

/* GPT-2's pattern, which ByteLevel applies itself when use_regex is true. */
static const char *GPT2_PATTERN =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int load_pretok(mq_tok *t, const char *path, const cJSON *p) {
    if (!p || cJSON_IsNull(p)) return 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
    const char *ty = cJSON_IsString(type) ? type->valuestring : "";
    if (!strcmp(ty, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers"), *e;
        if (!cJSON_IsArray(arr)) { mq_err_set("%s: pre_tokenizer Sequence without a list", path); return -1; }
        cJSON_ArrayForEach(e, arr) if (load_pretok(t, path, e)) return -1;
        return 0;
    }
    if (!strcmp(ty, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const cJSON *rx = pat ? cJSON_GetObjectItemCaseSensitive(pat, "Regex") : NULL;
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
        if (!cJSON_IsString(rx)) { mq_err_set("%s: Split pre-tokenizer without a Regex pattern (unsupported)", path); return -1; }
        if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated")) {
            mq_err_set("%s: Split behavior '%s' unsupported (only Isolated)", path,
                       cJSON_IsString(beh) ? beh->valuestring : "?");
            return -1;
        }
        if (bool_field(p, "invert", 0)) { mq_err_set("%s: Split with invert=true unsupported", path); return -1; }
        return compile_split(t, path, rx->valuestring);
    }
    if (!strcmp(ty, "ByteLevel")) {
        if (bool_field(p, "add_prefix_space", 0)) {
            mq_err_set("%s: ByteLevel add_prefix_space=true unsupported", path);
            return -1;
        }
        if (bool_field(p, "use_regex", 1)) return compile_split(t, path, GPT2_PATTERN);
        return 0;
    }
    mq_err_set("%s: pre-tokenizer type '%s' unsupported", path, ty);
    return -1;
}

static int load_normalizer(mq_tok *t, const char *path, const cJSON *n) {
    if (!n || cJSON_IsNull(n)) return 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(n, "type");
    const char *ty = cJSON_IsString(type) ? type->valuestring : "";
    if (!strcmp(ty, "NFC")) { t->nfc = 1; return 0; }
    if (!strcmp(ty, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(n, "normalizers"), *e;
        int k = 0;
        cJSON_ArrayForEach(e, arr) {
            if (k++ || load_normalizer(t, path, e)) {
                if (k > 1) mq_err_set("%s: normalizer Sequence of more than NFC unsupported", path);
                return -1;
            }
        }
        return 0;
    }
    mq_err_set("%s: normalizer type '%s' unsupported (only NFC)", path, ty);
    return -1;
}

static int cmp_added(const void *a, const void *b) {
    const mq_added *x = a, *y = b;
    return x->len != y->len ? (x->len > y->len ? -1 : 1) : (x->id > y->id) - (x->id < y->id);
}

/* Normalize an added token's content with NFC (for normalized=true tokens). */
static char *nfc_dup(const char *s, size_t n, size_t *out_n) {
    utf8proc_uint8_t *o = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &o,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (r < 0) return NULL;
    *out_n = (size_t)r;
    return (char *)o;
}

/* Set id's decode bytes (raw) and flags. */
static int set_token(mq_tok *t, int id, int *cap, const char *raw, size_t n, int mapped) {
    if (ensure_ids(t, id, cap)) return -1;
    uint32_t off = (uint32_t)t->blob_len;
    if (blob_add(t, raw, n)) return -1;
    t->tok_off[id] = off;
    t->tok_len[id] = (uint32_t)n;
    t->tok_flag[id] = (uint8_t)(TOK_EXISTS | (mapped ? TOK_MAPPED : 0));
    if (id >= t->n_ids) t->n_ids = id + 1;
    return 0;
}

/* Added tokens, given ids the way HF's AddedVocabulary::add_tokens gives them when it loads
 * tokenizer.json (the "id" field is not used: HF only warns when it differs): a content already
 * added keeps its id; else a content that is a model token takes that token's id; else the next
 * id — the model's vocab size (entries) for the first, then one past the largest added id. */
static int load_added(mq_tok *t, const char *path, cJSON *added, size_t n_model, int *cap) {
    int n = cJSON_GetArraySize(added), max_added = -1;
    char *raw = NULL;
    if (n > 0 && !(t->added = calloc((size_t)n, sizeof *t->added))) goto oom;
    cJSON *a;
    cJSON_ArrayForEach(a, added) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!cJSON_IsString(content)) { mq_err_set("%s: added_tokens entry without a content string", path); goto fail; }
        const char *c = content->valuestring;
        size_t cl = strlen(c);
        if (!cl) continue; /* HF ignores empty added tokens */
        int tr;
        for (size_t i = 0; i < cl;) {
            int l = utf8_seq((const unsigned char *)c + i, cl - i, &tr);
            if (!l) { mq_err_set("%s: added token \"%.40s\" is not valid UTF-8", path, c); goto fail; }
            i += (size_t)l;
        }
        mq_added nt;
        memset(&nt, 0, sizeof nt);
        nt.single_word = (uint8_t)bool_field(a, "single_word", 0);
        nt.lstrip = (uint8_t)bool_field(a, "lstrip", 0);
        nt.rstrip = (uint8_t)bool_field(a, "rstrip", 0);
        nt.normalized = (uint8_t)bool_field(a, "normalized", 1);
        nt.special = (uint8_t)bool_field(a, "special", 0);
        mq_added *prev = NULL;
        for (int i = 0; i < t->n_added; i++)
            if (t->added[i].clen == cl && !memcmp(t->blob + t->added[i].coff, c, cl)) prev = &t->added[i];
        free(raw);
        if (!(raw = malloc(cl + 1))) goto oom;
        int mapped;
        size_t rl = token_raw(c, cl, raw, &mapped);
        int id;
        if (prev) {
            id = prev->id;
        } else if ((id = vocab_find(t, raw, rl, mapped)) < 0) {
            if (max_added < 0) id = (int)n_model;
            else id = (max_added >= (int)n_model || !n_model) ? max_added + 1 : (int)n_model;
        }
        if (id >= MQ_TOK_MAX_ID) { mq_err_set("%s: too many added tokens", path); goto fail; }
        if (id > max_added) max_added = id;
        /* decode bytes: the content through the ByteLevel decoder (HF decodes added tokens by
         * their content, looked up before the model's vocab) */
        if (set_token(t, id, cap, raw, rl, mapped)) goto oom;
        /* match text: the content, NFC'd for normalized tokens when the normalizer is NFC */
        size_t ml = cl;
        char *mc = NULL;
        if (nt.normalized && t->nfc && !(mc = nfc_dup(c, cl, &ml))) {
            mq_err_set("%s: added token \"%.40s\": NFC failed", path, c);
            goto fail;
        }
        nt.id = id;
        nt.off = (uint32_t)t->blob_len;
        nt.len = (uint32_t)ml;
        int bad = blob_add(t, mc ? mc : c, ml);
        free(mc);
        if (bad) goto oom;
        nt.coff = (uint32_t)t->blob_len;
        nt.clen = (uint32_t)cl;
        if (blob_add(t, c, cl)) goto oom;
        if (prev) *prev = nt; /* a repeated content: the later entry's flags win, as in HF */
        else t->added[t->n_added++] = nt;
    }
    free(raw);
    qsort(t->added, (size_t)t->n_added, sizeof *t->added, cmp_added);
    for (int i = 0; i < t->n_added; i++) {
        t->added_first[(unsigned char)t->blob[t->added[i].off]] = 1;
        if (t->added[i].normalized) t->any_normalized_added = 1;
        else t->any_raw_added = 1;
    }
    return 0;
oom:
    mq_err_set("%s: out of memory", path);
fail:
    free(raw);
    return -1;
}

static int load_model(mq_tok *t, const char *path, cJSON *root) {
    int cap = 0;
    cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) { mq_err_set("%s: no \"model\" object", path); return -1; }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "BPE")) {
        mq_err_set("%s: model type '%s' unsupported (only BPE)", path, type->valuestring);
        return -1;
    }
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix");
    const cJSON *suf = cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix");
    if ((cJSON_IsString(pre) && pre->valuestring[0]) || (cJSON_IsString(suf) && suf->valuestring[0])) {
        mq_err_set("%s: BPE subword prefix/suffix unsupported", path);
        return -1;
    }
    if (bool_field(model, "byte_fallback", 0)) { mq_err_set("%s: BPE byte_fallback unsupported", path); return -1; }
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0) { mq_err_set("%s: BPE dropout unsupported", path); return -1; }
    t->ignore_merges = bool_field(model, "ignore_merges", 0);
    cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(vocab)) { mq_err_set("%s: model.vocab is not an object", path); return -1; }
    if (!cJSON_IsArray(merges)) { mq_err_set("%s: model.merges is not a list", path); return -1; }
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added)) { mq_err_set("%s: added_tokens is not a list", path); return -1; }

    /* model vocab: raw bytes per id, and a hash from (raw bytes, mapped) to id */
    size_t n_model = 0;
    char small[256];
    for (cJSON *e = vocab->child; e; e = e->next, n_model++) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= MQ_TOK_MAX_ID ||
            e->valuedouble != (double)e->valueint) {
            mq_err_set("%s: vocab entry \"%.40s\" has a bad id", path, e->string ? e->string : "");
            return -1;
        }
        size_t sl = strlen(e->string);
        char *buf = sl <= sizeof small ? small : malloc(sl);
        if (!buf) goto oom;
        int mapped;
        size_t rl = token_raw(e->string, sl, buf, &mapped);
        int bad = set_token(t, e->valueint, &cap, buf, rl, mapped);
        if (buf != small) free(buf);
        if (bad) goto oom;
    }
    if (!n_model) { mq_err_set("%s: empty vocab", path); return -1; }
    t->vocab_cap = pow2_at_least(n_model * 2 + 16);
    if (!(t->vocab_slot = malloc(t->vocab_cap * sizeof *t->vocab_slot))) goto oom;
    memset(t->vocab_slot, 0xff, t->vocab_cap * sizeof *t->vocab_slot);
    for (int id = 0; id < t->n_ids; id++) {
        if (!(t->tok_flag[id] & TOK_EXISTS)) continue;
        const char *b = t->blob + t->tok_off[id];
        uint32_t n = t->tok_len[id], m = t->vocab_cap - 1, h = hash_bytes(b, n) & m;
        if (vocab_find(t, b, n, t->tok_flag[id] & TOK_MAPPED) >= 0) continue; /* first id wins */
        while (t->vocab_slot[h] >= 0) h = (h + 1) & m;
        t->vocab_slot[h] = id;
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = vocab_find(t, &c, 1, 1);
    }

    /* merges: "a b" strings (older files) or ["a", "b"] pairs; rank = position in the list */
    size_t n_merges = (size_t)cJSON_GetArraySize(merges);
    t->merge_cap = pow2_at_least(n_merges * 2 + 16);
    t->merge_key = malloc(t->merge_cap * sizeof *t->merge_key);
    t->merge_rank = malloc(t->merge_cap * sizeof *t->merge_rank);
    t->merge_new = malloc(t->merge_cap * sizeof *t->merge_new);
    if (!t->merge_key || !t->merge_rank || !t->merge_new) goto oom;
    memset(t->merge_key, 0xff, t->merge_cap * sizeof *t->merge_key);
    char buf[1024];
    uint32_t rank = 0;
    for (cJSON *e = merges->child; e; e = e->next, rank++) {
        const char *l, *r;
        size_t ll, rl;
        if (cJSON_IsString(e)) {
            const char *sp = strchr(e->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' ')) { mq_err_set("%s: merge %u is not \"a b\"", path, rank); return -1; }
            l = e->valuestring; ll = (size_t)(sp - l);
            r = sp + 1; rl = strlen(r);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            l = e->child->valuestring; ll = strlen(l);
            r = e->child->next->valuestring; rl = strlen(r);
        } else {
            mq_err_set("%s: merge %u is neither \"a b\" nor a pair", path, rank);
            return -1;
        }
        if (ll + rl > sizeof buf) { mq_err_set("%s: merge %u is too long", path, rank); return -1; }
        /* BPE pieces are byte-mapped strings: a merge of strings outside the byte map never
         * applies (no symbol can hold it), so it is looked up as mapped and may be skipped */
        int ma, mb;
        size_t bl = token_raw(l, ll, buf, &ma), br = token_raw(r, rl, buf + bl, &mb);
        int32_t ia = vocab_find(t, buf, bl, ma), ib = vocab_find(t, buf + bl, br, mb);
        int32_t in = ma && mb ? vocab_find(t, buf, bl + br, 1) : -1;
        if (ia < 0 || ib < 0 || (ma && mb && in < 0)) {
            mq_err_set("%s: merge %u (\"%.*s\" \"%.*s\") uses a token missing from the vocab", path,
                       rank, (int)ll, l, (int)rl, r);
            return -1;
        }
        if (in < 0) continue;
        uint64_t k = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
        uint32_t m = t->merge_cap - 1, h = hash_pair(k) & m;
        while (t->merge_key[h] != UINT64_MAX && t->merge_key[h] != k) h = (h + 1) & m;
        if (t->merge_key[h] == k) continue; /* a repeated pair keeps its first rank */
        t->merge_key[h] = k;
        t->merge_rank[h] = rank;
        t->merge_new[h] = in;
    }
    return added && cJSON_IsArray(added) ? load_added(t, path, added, n_model, &cap) : 0;
oom:
    mq_err_set("%s: out of memory", path);
    return -1;
}

mq_tok *mq_tok_load(const char *dir) {
    init_byte_map();
    char path[4096], cpath[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    snprintf(cpath, sizeof cpath, "%s/tokenizer_config.json", dir);
    int missing;
    cJSON *root = parse_json(path, 1, &missing);
    if (!root) return NULL;
    mq_tok *t = calloc(1, sizeof *t);
    if (!t) { cJSON_Delete(root); mq_err_set("%s: out of memory", path); return NULL; }
    int split_special = 0;
    cJSON *cfg = parse_json(cpath, 0, &missing);
    if (!cfg && !missing) goto fail;
    if (cfg) {
        split_special = bool_field(cfg, "split_special_tokens", 0);
        cJSON_Delete(cfg);
    }
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    const cJSON *dty = dec ? cJSON_GetObjectItemCaseSensitive(dec, "type") : NULL;
    if (!cJSON_IsString(dty) || strcmp(dty->valuestring, "ByteLevel")) {
        mq_err_set("%s: decoder is not ByteLevel (only byte-level BPE is supported)", path);
        goto fail;
    }
    if (load_normalizer(t, path, cJSON_GetObjectItemCaseSensitive(root, "normalizer")) ||
        load_pretok(t, path, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer")) ||
        load_model(t, path, root))
        goto fail;
    if (split_special) /* special tokens then encode as ordinary text */
        for (int i = 0; i < t->n_added; i++) t->added[i].nomatch = t->added[i].special;
    cJSON_Delete(root);
    return t;
fail:
    cJSON_Delete(root);
    mq_tok_free(t);
    return NULL;
}

void mq_tok_free(mq_tok *t) {
    if (!t) return;
    free(t->tok_off);
    free(t->tok_len);
    free(t->tok_flag);
    free(t->blob);
    free(t->vocab_slot);
    free(t->merge_key);
    free(t->merge_rank);
    free(t->merge_new);
    free(t->added);
    for (int i = 0; i < t->n_splits; i++) pcre2_code_free(t->splits[i].re);
    free(t->splits);
    free(t);
}

int mq_tok_vocab_size(const mq_tok *t) { return t->n_ids; }

const char *mq_tok_bytes(const mq_tok *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_ids || !(t->tok_flag[id] & TOK_EXISTS)) return NULL;
    *len = t->tok_len[id];
    return t->blob + t->tok_off[id];
}

int32_t mq_tok_special(const mq_tok *t, const char *content) {
    size_t n = strlen(content);
    for (int i = 0; i < t->n_added; i++) {
        const mq_added *a = &t->added[i];
        if (a->clen == n && !memcmp(t->blob + a->coff, content, n)) return a->id;
    }
    return -1;
}

int mq_tok_is_special(const mq_tok *t, int32_t id) {
    for (int i = 0; i < t->n_added; i++)  /* (a few dozen entries: a scan per generated token is cheap) */
        if (t->added[i].id == id) return t->added[i].special;
    return 0;
}

/* ---------- encoding ---------- */

typedef struct {
    int32_t *ids;
    size_t n, cap;
    /* BPE scratch, grown to the longest piece seen: */
    int32_t *sym, *prev, *next; /* (piece bytes) symbol id and linked-list neighbours */
    uint64_t *heap;             /* (2 x piece bytes) rank<<32 | pos, a min-heap */
    int32_t *heap_new;          /* parallel: the merged id the entry was pushed for */
    size_t scap, hcap;
    pcre2_match_data *md;
    /* Word cache for this call: piece bytes -> ids, for pieces up to CACHE_MAX_PIECE bytes.
     * Text repeats its words, so most pieces skip BPE. Lives per call: mq_tok stays read-only
     * and thread-safe. */
    struct cache_slot { uint32_t hash, key_off, ids_off; uint16_t key_len, n_ids; } *slot; /* (CACHE_SLOTS) */
    uint32_t n_slot;
    char *ckey;       /* (ckey_cap) keys, concatenated */
    int32_t *cids;    /* (cids_cap) ids, concatenated */
    size_t ckey_len, ckey_cap, cids_len, cids_cap;
} enc;

#define CACHE_SLOTS 16384u /* power of two; filled to 3/4 at most, then no more inserts */
#define CACHE_MAX_PIECE 48

static int push_id(enc *e, int32_t id) {
    if (e->n == e->cap) {
        size_t c = e->cap ? e->cap * 2 : 256;
        int32_t *p = realloc(e->ids, c * sizeof *p);
        if (!p) return -1;
        e->ids = p;
        e->cap = c;
    }
    e->ids[e->n++] = id;
    return 0;
}

static void heap_push(enc *e, size_t *hn, uint64_t key, int32_t nid) {
    size_t i = (*hn)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (e->heap[p] <= key) break;
        e->heap[i] = e->heap[p];
        e->heap_new[i] = e->heap_new[p];
        i = p;
    }
    e->heap[i] = key;
    e->heap_new[i] = nid;
}

static void heap_pop(enc *e, size_t *hn) {
    size_t n = --(*hn);
    uint64_t key = e->heap[n];
    int32_t nid = e->heap_new[n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && e->heap[c + 1] < e->heap[c]) c++;
        if (e->heap[c] >= key) break;
        e->heap[i] = e->heap[c];
        e->heap_new[i] = e->heap_new[c];
        i = c;
    }
    e->heap[i] = key;
    e->heap_new[i] = nid;
}

/* BPE one pre-tokenized piece: HF's Word::merge_all — a heap of (rank, position) candidates;
 * stale entries (the pair no longer merges into the same id) are skipped. */
static int bpe_merge(const mq_tok *t, enc *e, const char *s, size_t n);

static int bpe(const mq_tok *t, enc *e, const char *s, size_t n) {
    if (n < 2 || n > CACHE_MAX_PIECE) return bpe_merge(t, e, s, n);
    if (!e->slot && !(e->slot = calloc(CACHE_SLOTS, sizeof *e->slot))) return -1;
    uint32_t h = hash_bytes(s, n) | 1u, i = h & (CACHE_SLOTS - 1); /* hash 0 marks an empty slot */
    for (; e->slot[i].hash; i = (i + 1) & (CACHE_SLOTS - 1)) {
        const struct cache_slot *c = &e->slot[i];
        if (c->hash == h && c->key_len == n && !memcmp(e->ckey + c->key_off, s, n)) {
            for (uint32_t k = 0; k < c->n_ids; k++)
                if (push_id(e, e->cids[c->ids_off + k])) return -1;
            return 0;
        }
    }
    size_t first = e->n;
    if (bpe_merge(t, e, s, n)) return -1;
    size_t nid = e->n - first;
    if (e->n_slot >= CACHE_SLOTS / 4 * 3) return 0;
    if (e->ckey_len + n > e->ckey_cap) {
        size_t c = e->ckey_cap ? 2 * e->ckey_cap : 1 << 16;
        char *k = realloc(e->ckey, c);
        if (!k) return -1;
        e->ckey = k;
        e->ckey_cap = c;
    }
    if (e->cids_len + nid > e->cids_cap) {
        size_t c = e->cids_cap ? 2 * e->cids_cap : 1 << 14;
        int32_t *d = realloc(e->cids, c * sizeof *d);
        if (!d) return -1;
        e->cids = d;
        e->cids_cap = c;
    }
    memcpy(e->ckey + e->ckey_len, s, n);
    memcpy(e->cids + e->cids_len, e->ids + first, nid * sizeof *e->cids);
    e->slot[i] = (struct cache_slot){h, (uint32_t)e->ckey_len, (uint32_t)e->cids_len, (uint16_t)n, (uint16_t)nid};
    e->ckey_len += n;
    e->cids_len += nid;
    e->n_slot++;
    return 0;
}

/* BPE without the cache. */
static int bpe_merge(const mq_tok *t, enc *e, const char *s, size_t n) {
    if (t->ignore_merges) {
        int32_t id = vocab_find(t, s, n, 1); /* the whole piece, if it is one token */
        if (id >= 0) return push_id(e, id);
    }
    if (n == 1) return t->byte_id[(unsigned char)s[0]] >= 0 ? push_id(e, t->byte_id[(unsigned char)s[0]]) : 0;
    if (n > e->scap) {
        size_t c = n * 2;
        int32_t *a = realloc(e->sym, c * sizeof *a), *b, *d;
        if (!a) return -1;
        e->sym = a;
        if (!(b = realloc(e->prev, c * sizeof *b))) return -1;
        e->prev = b;
        if (!(d = realloc(e->next, c * sizeof *d))) return -1;
        e->next = d;
        e->scap = c;
    }
    /* symbols: one per byte that has a token (HF drops unknown characters when unk is unset) */
    int ns = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[(unsigned char)s[i]];
        if (id >= 0) e->sym[ns++] = id;
    }
    for (int i = 0; i < ns; i++) { e->prev[i] = i - 1; e->next[i] = i + 1 < ns ? i + 1 : -1; }
    /* every merge adds at most 2 entries and removes a symbol: 3n bounds the heap */
    size_t need = 3 * (size_t)ns + 4;
    if (need > e->hcap) {
        uint64_t *h = realloc(e->heap, need * sizeof *h);
        if (!h) return -1;
        e->heap = h;
        int32_t *hn = realloc(e->heap_new, need * sizeof *hn);
        if (!hn) return -1;
        e->heap_new = hn;
        e->hcap = need;
    }
    size_t hn = 0;
    uint32_t rank;
    int32_t nid;
    for (int i = 0; i + 1 < ns; i++)
        if (merge_find(t, e->sym[i], e->sym[i + 1], &rank, &nid))
            heap_push(e, &hn, ((uint64_t)rank << 32) | (uint32_t)i, nid);
    while (hn) {
        uint64_t top = e->heap[0];
        int32_t want = e->heap_new[0];
        heap_pop(e, &hn);
        int pos = (int)(uint32_t)top;
        if (e->sym[pos] < 0) continue;       /* merged into its left neighbour */
        int nx = e->next[pos];
        if (nx < 0) continue;
        if (!merge_find(t, e->sym[pos], e->sym[nx], &rank, &nid) || nid != want) continue;
        e->sym[pos] = nid;
        e->sym[nx] = -1;
        e->next[pos] = e->next[nx];
        if (e->next[nx] >= 0) e->prev[e->next[nx]] = pos;
        int pv = e->prev[pos];
        if (pv >= 0 && merge_find(t, e->sym[pv], e->sym[pos], &rank, &nid))
            heap_push(e, &hn, ((uint64_t)rank << 32) | (uint32_t)pv, nid);
        nx = e->next[pos];
        if (nx >= 0 && merge_find(t, e->sym[pos], e->sym[nx], &rank, &nid))
            heap_push(e, &hn, ((uint64_t)rank << 32) | (uint32_t)pos, nid);
    }
    for (int i = 0; i >= 0 && ns > 0; i = e->next[i])
        if (push_id(e, e->sym[i])) return -1;
    return 0;
}

/* Pre-tokenizer stage `k` over s: regex matches and the gaps between them become pieces. */
static int pretok(const mq_tok *t, enc *e, int k, const char *s, size_t n) {
    if (!n) return 0;
    if (k == t->n_splits) return bpe(t, e, s, n);
    pcre2_code *re = t->splits[k].re;
    size_t at = 0, last = 0;
    while (at < n) {
        int r = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (r == PCRE2_ERROR_NOMATCH) break;
        if (r < 0) { mq_err_set("tokenizer: regex match failed (%d)", r); return -1; }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: step one character, as Rust's find_iter does */
            at = me + 1;
            while (at < n && ((unsigned char)s[at] & 0xC0) == 0x80) at++;
            continue;
        }
        if (ms > last && pretok(t, e, k + 1, s + last, ms - last)) return -1;
        if (pretok(t, e, k + 1, s + ms, me - ms)) return -1;
        last = at = me;
    }
    if (last < n) return pretok(t, e, k + 1, s + last, n - last);
    return 0;
}

/* Cut added tokens (the normalized or the raw ones) out of s; gaps go to `then`. */
static int added_split(const mq_tok *t, enc *e, int normalized, const char *s, size_t n,
                       int (*then)(const mq_tok *, enc *, const char *, size_t));

static int after_norm(const mq_tok *t, enc *e, const char *s, size_t n) {
    return pretok(t, e, 0, s, n);
}

/* Code points HF's NFC leaves alone although Unicode gives them a normalization behaviour: marks
 * (and one composition partner, U+11930) added in Unicode 10-15, newer than the tables of the
 * normalizer crate HF tokenizers uses (unicode-normalization-alignments). HF treats each as an
 * unknown starter: nothing reorders or composes across it. Found by testing every code point
 * utf8proc gives a combining class, decomposition or composition role, in 8 contexts, plus every
 * primary composite's pair, against tokenizers 0.23.2 (docs/tokenizer.md). */
static const int32_t hf_nfc_unknown[][2] = {
    {0x7FD, 0x7FD}, {0x898, 0x89F}, {0x8CA, 0x8D3}, {0x9FE, 0x9FE}, {0xC3C, 0xC3C}, {0xD3B, 0xD3C},
    {0xEBA, 0xEBA}, {0x1715, 0x1715}, {0x1ABF, 0x1ACE}, {0x1DF6, 0x1DFA}, {0xA82C, 0xA82C},
    {0x10D24, 0x10D27}, {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85},
    {0x11070, 0x11070}, {0x1133B, 0x1133B}, {0x1145E, 0x1145E}, {0x11839, 0x1183A}, {0x11930, 0x11930},
    {0x1193D, 0x1193E}, {0x11943, 0x11943}, {0x119E0, 0x119E0}, {0x11A34, 0x11A34}, {0x11A47, 0x11A47},
    {0x11A99, 0x11A99}, {0x11D42, 0x11D42}, {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x11F41, 0x11F42},
    {0x16FF0, 0x16FF1}, {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF},
    {0x1E4EC, 0x1E4EF},
};

static int is_hf_nfc_unknown(int32_t c) {
    if (c < 0x7FD) return 0;
    for (size_t i = 0; i < sizeof hf_nfc_unknown / sizeof hf_nfc_unknown[0]; i++)
        if (c >= hf_nfc_unknown[i][0] && c <= hf_nfc_unknown[i][1]) return 1;
    return 0;
}

/* NFC as HF computes it: utf8proc's NFC between the code points above, which stay as they are. */
static char *hf_nfc(const char *s, size_t n, size_t *out_n) {
    size_t start = 0, k = 0;
    char *o = NULL;
    for (size_t i = 0; i <= n;) {
        int l = 0;
        int32_t c = -1;
        if (i < n) {
            int tr;
            l = utf8_seq((const unsigned char *)s + i, n - i, &tr);
            if (!l) { free(o); return NULL; }
            c = utf8_cp((const unsigned char *)s + i, l);
        }
        if (i == n || is_hf_nfc_unknown(c)) {
            if (!o && i == n) return nfc_dup(s, n, out_n); /* the usual case: none of them */
            size_t seg;
            char *ns = i > start ? nfc_dup(s + start, i - start, &seg) : NULL;
            if (i > start && !ns) { free(o); return NULL; }
            char *p = realloc(o, k + (ns ? seg : 0) + (size_t)l + 1);
            if (!p) { free(ns); free(o); return NULL; }
            o = p;
            if (ns) { memcpy(o + k, ns, seg); k += seg; free(ns); }
            memcpy(o + k, s + i, (size_t)l); /* the unknown code point itself, untouched */
            k += (size_t)l;
            if (i == n) break;
            start = i + (size_t)l;
        }
        i += (size_t)l;
    }
    o[k] = 0;
    *out_n = k;
    return o;
}

static int normalize_then(const mq_tok *t, enc *e, const char *s, size_t n) {
    if (!n) return 0;
    int ascii = 1;
    for (size_t i = 0; i < n && ascii; i++) ascii = !((unsigned char)s[i] & 0x80);
    if (!t->nfc || ascii) /* NFC never changes ASCII */
        return t->any_normalized_added ? added_split(t, e, 1, s, n, after_norm) : after_norm(t, e, s, n);
    size_t nn;
    char *ns = hf_nfc(s, n, &nn);
    if (!ns) { mq_err_set("tokenizer: NFC normalization failed"); return -1; }
    int r = t->any_normalized_added ? added_split(t, e, 1, ns, nn, after_norm) : after_norm(t, e, ns, nn);
    free(ns);
    return r;
}

static int added_split(const mq_tok *t, enc *e, int normalized, const char *s, size_t n,
                       int (*then)(const mq_tok *, enc *, const char *, size_t)) {
    size_t start_offset = 0, i = 0;
    while (i < n) {
        if (!t->added_first[(unsigned char)s[i]]) { i++; continue; }
        const mq_added *hit = NULL;
        for (int k = 0; k < t->n_added; k++) { /* longest first: the first hit is the longest */
            const mq_added *a = &t->added[k];
            if (a->normalized != normalized || a->nomatch || a->len > n - i) continue;
            if (!memcmp(s + i, t->blob + a->off, a->len)) { hit = a; break; }
        }
        if (!hit) { i++; continue; }
        size_t start = i, stop = i + hit->len;
        i = stop; /* the next search resumes after this match, kept or not */
        if (hit->single_word) {
            size_t p;
            int ws = start == 0 || !is_word_char(cp_before(s, start, &p));
            int we = 1;
            if (stop < n) {
                int tr, l = utf8_seq((const unsigned char *)s + stop, n - stop, &tr);
                we = !l || !is_word_char(utf8_cp((const unsigned char *)s + stop, l));
            }
            if (!ws || !we) continue;
        }
        if (hit->lstrip) {
            size_t ns = start, p;
            while (ns > 0 && is_white_space(cp_before(s, ns, &p))) ns = p;
            start = ns > start_offset ? ns : start_offset;
        }
        if (hit->rstrip) {
            while (stop < n) {
                int tr, l = utf8_seq((const unsigned char *)s + stop, n - stop, &tr);
                if (!l || !is_white_space(utf8_cp((const unsigned char *)s + stop, l))) break;
                stop += (size_t)l;
            }
        }
        if (start > start_offset && then(t, e, s + start_offset, start - start_offset)) return -1;
        if (push_id(e, hit->id)) return -1;
        start_offset = stop;
        if (i < stop) i = stop;
    }
    if (start_offset < n) return then(t, e, s + start_offset, n - start_offset);
    return 0;
}

int mq_tok_encode(const mq_tok *t, const char *text, size_t len, int32_t **ids, size_t *n) {
    *ids = NULL;
    *n = 0;
    for (size_t i = 0; i < len;) {
        int tr, l = utf8_seq((const unsigned char *)text + i, len - i, &tr);
        if (!l) {
            mq_err_set("input text: invalid UTF-8 at byte %zu (0x%02x%s)", i, (unsigned char)text[i],
                       tr ? ", truncated sequence" : "");
            return -1;
        }
        i += (size_t)l;
    }
    enc e;
    memset(&e, 0, sizeof e);
    if (!(e.md = pcre2_match_data_create(4, NULL))) { mq_err_set("tokenizer: out of memory"); return -1; }
    int r = t->any_raw_added ? added_split(t, &e, 0, text, len, normalize_then)
                             : normalize_then(t, &e, text, len);
    pcre2_match_data_free(e.md);
    free(e.sym); free(e.prev); free(e.next); free(e.heap); free(e.heap_new);
    free(e.slot); free(e.ckey); free(e.cids);
    if (r) {
        free(e.ids);
        if (!mq_err_get()[0]) mq_err_set("tokenizer: out of memory");
        return -1;
    }
    if (!e.ids) e.ids = malloc(sizeof *e.ids); /* a valid pointer even for no tokens */
    if (!e.ids) { mq_err_set("tokenizer: out of memory"); return -1; }
    *ids = e.ids;
    *n = e.n;
    return 0;
}

/* ---------- decoding ---------- */

static const char REPL[3] = {(char)0xEF, (char)0xBF, (char)0xBD}; /* U+FFFD */

/* Copy valid UTF-8 from s to out, each maximal ill-formed subpart becoming U+FFFD (as Rust's
 * String::from_utf8_lossy, which HF's decode uses). If hold, an incomplete sequence at the
 * end is not written; its length goes to *held. Returns bytes written. */
static size_t lossy(const char *s, size_t n, char *out, int hold, size_t *held) {
    size_t k = 0, i = 0;
    if (held) *held = 0;
    while (i < n) {
        int tr, l = utf8_seq((const unsigned char *)s + i, n - i, &tr);
        if (l) {
            memcpy(out + k, s + i, (size_t)l);
            k += (size_t)l;
            i += (size_t)l;
        } else if (tr && hold) {
            *held = n - i;
            break;
        } else {
            memcpy(out + k, REPL, 3);
            k += 3;
            i += (size_t)utf8_bad_len((const unsigned char *)s + i, n - i);
        }
    }
    return k;
}

int mq_tok_decode(const mq_tok *t, const int32_t *ids, size_t n, char **out, size_t *len) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        if (!mq_tok_bytes(t, ids[i], &l)) {
            mq_err_set("token id %d is not in the vocabulary (size %d)", ids[i], t->n_ids);
            return -1;
        }
        total += l;
    }
    char *raw = malloc(total + 1), *o = malloc(3 * total + 1);
    if (!raw || !o) { free(raw); free(o); mq_err_set("decode: out of memory"); return -1; }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = 0;
        const char *b = mq_tok_bytes(t, ids[i], &l);
        memcpy(raw + k, b, l);
        k += l;
    }
    size_t m = lossy(raw, k, o, 0, NULL);
    free(raw);
    o[m] = 0;
    *out = o;
    *len = m;
    return 0;
}

int mq_tok_stream_put(const mq_tok *t, mq_tok_stream *s, int32_t id, char *out, size_t cap) {
    size_t l;
    const char *b = mq_tok_bytes(t, id, &l);
    if (!b) {
        mq_err_set("token id %d is not in the vocabulary (size %d)", id, t->n_ids);
        return -1;
    }
    size_t np = s->npend > 0 && s->npend < (int)sizeof s->pend ? (size_t)s->npend : 0;
    size_t total = np + l;
    char small[256], *buf = total <= sizeof small ? small : malloc(total);
    if (!buf) { mq_err_set("decode: out of memory"); return -1; }
    memcpy(buf, s->pend, np);
    memcpy(buf + np, b, l);
    /* worst case every byte becomes U+FFFD: check the caller's room before writing */
    size_t held, need = 3 * total;
    int r;
    if (need > cap) {
        char *tmp = malloc(need);
        if (!tmp) { r = -1; mq_err_set("decode: out of memory"); goto done; }
        size_t m = lossy(buf, total, tmp, 1, &held);
        if (m > cap) { free(tmp); mq_err_set("decode: output buffer too small (%zu < %zu)", cap, m); r = -1; goto done; }
        memcpy(out, tmp, m);
        free(tmp);
        r = (int)m;
    } else {
        r = (int)lossy(buf, total, out, 1, &held);
    }
    memcpy(s->pend, buf + total - held, held); /* held < 4: an incomplete sequence */
    s->npend = (int)held;
done:
    if (buf != small) free(buf);
    return r;
}

int mq_tok_stream_flush(mq_tok_stream *s, char *out, size_t cap) {
    int r = 0;
    if (s->npend > 0) {
        if (cap < 3) { mq_err_set("decode: output buffer too small"); return -1; }
        memcpy(out, REPL, 3); /* held bytes are always one incomplete sequence */
        r = 3;
    }
    s->npend = 0;
    return r;
}
