/* test_safetensors: header validation (every malformed case), mmap lookup, writer round trip, shards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "err.h"
#include "safetensors.h"
#include "testutil.h"

static char tmpdir[64];

static int setup_dir(void **state) {
    (void)state;
    return mq_test_mkdtemp(tmpdir, "/tmp/mq_test_st.XXXXXX");
}

static int teardown_dir(void **state) {
    (void)state;
    return mq_test_rmrf(tmpdir);
}

/* A file image: 8-byte LE header length (hlen_override if non-zero), the header, data_len bytes
 * of data (byte k = k & 0xff). Caller frees. */
static uint8_t *image(const char *hdr, size_t data_len, uint64_t hlen_override, size_t *len) {
    size_t h = strlen(hdr);
    *len = 8 + h + data_len;
    uint8_t *b = malloc(*len);
    uint64_t hl = hlen_override ? hlen_override : h;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hl >> (8 * i));
    memcpy(b + 8, hdr, h);
    for (size_t k = 0; k < data_len; k++) b[8 + h + k] = (uint8_t)k;
    return b;
}

static const char *path_in(const char *name) {
    static char p[4][256];
    static int k;
    k = (k + 1) & 3;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

static void write_bytes(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

static const char *GOOD =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
    "\"e\":{\"dtype\":\"I8\",\"shape\":[0,5],\"data_offsets\":[32,32]}}";

static void test_valid(void **state) {
    (void)state;
    size_t len;
    uint8_t *b = image(GOOD, 32, 0, &len);
    assert_int_equal(mq_st_validate(b, len, "mem"), 3);
    const char *p = path_in("good.safetensors");
    write_bytes(p, b, len);
    mq_st *st = mq_st_open_file(p);
    assert_non_null(st);
    assert_int_equal(mq_st_count(st), 3);
    const mq_st_tensor *a = mq_st_find(st, "a"), *bb = mq_st_find(st, "b");
    assert_non_null(a);
    assert_non_null(bb);
    assert_null(mq_st_find(st, "c"));
    assert_null(mq_st_find(st, "__metadata__"));
    assert_int_equal(a->dtype, MQ_ST_F32);
    assert_int_equal(a->ndim, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->shape[1], 3);
    assert_int_equal(a->nbytes, 24);
    assert_int_equal(bb->dtype, MQ_ST_BF16);
    assert_int_equal(bb->nbytes, 8);
    assert_string_equal(bb->file, "good.safetensors");
    /* data points at the right bytes of the file's data section */
    assert_int_equal(((const uint8_t *)a->data)[5], 5);
    assert_int_equal(((const uint8_t *)bb->data)[0], 24);
    const mq_st_tensor *e = mq_st_find(st, "e");
    assert_int_equal(e->nbytes, 0);
    assert_int_equal(e->dtype, MQ_ST_I8);
    mq_dtype dt;
    assert_int_equal(mq_st_engine_dtype(MQ_ST_BF16, &dt), 0);
    assert_int_equal(dt, MQ_BF16);
    assert_int_equal(mq_st_engine_dtype(MQ_ST_I8, &dt), -1);
    assert_string_equal(mq_st_dtype_name(MQ_ST_F8_E4M3), "F8_E4M3");
    /* mq_st_at walks every tensor once */
    int seen = 0;
    for (int i = 0; i < mq_st_count(st); i++) seen |= 1 << (mq_st_at(st, i)->name[0] - 'a');
    assert_int_equal(seen, 1 | 2 | 16);
    assert_null(mq_st_at(st, 3));
    mq_st_close(st);
    /* padding spaces after the JSON are allowed */
    char padded[512];
    snprintf(padded, sizeof padded, "%s     ", GOOD);
    uint8_t *b2 = image(padded, 32, 0, &len);
    assert_int_equal(mq_st_validate(b2, len, "mem"), 3);
    free(b2);
    free(b);
}

static void expect_bad(const char *hdr, size_t data_len, uint64_t hlen, const char *want) {
    size_t len;
    uint8_t *b = image(hdr, data_len, hlen, &len);
    mq_err_clear();
    int r = mq_st_validate(b, len, "bad.safetensors");
    if (r != -1 || !strstr(mq_err_get(), want))
        print_error("header %s: r=%d err='%s' (want '%s')\n", hdr, r, mq_err_get(), want);
    assert_int_equal(r, -1);
    assert_non_null(strstr(mq_err_get(), "bad.safetensors: "));
    assert_non_null(strstr(mq_err_get(), want));
    /* the same through the mmap path */
    const char *p = path_in("bad.safetensors");
    write_bytes(p, b, len);
    mq_err_clear();
    assert_null(mq_st_open_file(p));
    assert_non_null(strstr(mq_err_get(), p));
    assert_non_null(strstr(mq_err_get(), want));
    free(b);
}

static void test_malformed(void **state) {
    (void)state;
    expect_bad(GOOD, 32, 1000000, "header length 1000000 is past end of file");
    expect_bad(GOOD, 32, (uint64_t)1 << 63, "past end of file");
    expect_bad("{\"a\":{\"dtype\":\"F32\",", 0, 0, "bad JSON");
    expect_bad("[1,2]", 0, 0, "not a JSON object");
    expect_bad("{\"a\":1} xx", 0, 0, "trailing bytes");
    expect_bad("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, "tensor a has no dtype");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, 0, "tensor a has no shape");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, 0, "tensor a has no data_offsets");
    expect_bad("{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, "unknown dtype 'Q4'");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24, 0,
               "shape needs 24 bytes of F32 but data_offsets span 20");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 16, 0,
               "data_offsets [8, 24] out of range (data section is 16 bytes)");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 16, 0, "out of range");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, 0, "shape has a dim");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, 0, "shape has a dim");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, 0, "data_offsets must be");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}}", 4, 0, "data_offsets must be");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 4, 0,
               "overflows");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, 0,
               "at most 8 dims");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
               16, 0, "tensors a and b overlap");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, 0, "appears twice");
    expect_bad("{\"__metadata__\":[1]}", 0, 0, "__metadata__ is not an object");
    expect_bad("{\"__metadata__\":{\"n\":1}}", 0, 0, "is not a string");
    expect_bad("{\"a\":[1]}", 0, 0, "entry is not an object");

    /* files too short to hold the header length, and empty files */
    size_t len;
    assert_int_equal(mq_st_validate((const uint8_t *)"abc", 3, "short"), -1);
    assert_non_null(strstr(mq_err_get(), "short: file is 3 bytes"));
    const char *p = path_in("empty.safetensors");
    write_bytes(p, "", 0);
    assert_null(mq_st_open_file(p));
    assert_non_null(strstr(mq_err_get(), "too short"));

    /* truncated data: a valid file cut short */
    uint8_t *b = image(GOOD, 32, 0, &len);
    p = path_in("trunc.safetensors");
    write_bytes(p, b, len - 5);
    mq_err_clear();
    assert_null(mq_st_open_file(p));
    assert_non_null(strstr(mq_err_get(), "trunc.safetensors: tensor b: data_offsets [24, 32] out of range"));
    free(b);

    /* missing file */
    p = path_in("nope.safetensors");
    assert_null(mq_st_open_file(p));
    assert_non_null(strstr(mq_err_get(), "nope.safetensors: cannot open"));
    assert_null(mq_st_open(path_in("nodir")));
    assert_non_null(strstr(mq_err_get(), "nodir"));
}

static void test_writer(void **state) {
    (void)state;
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t bf[3] = {0x3f80, 0x4000, 0xbf80};
    mq_st_wtensor t[] = {
        {"w.a", MQ_F32, 2, {2, 3, 0, 0}, a},
        {"w.\"quoted\"", MQ_BF16, 1, {3, 0, 0, 0}, bf},
        {"w.scalar", MQ_F32, 0, {0}, a},
    };
    const char *p = path_in("w.safetensors");
    assert_int_equal(mq_st_write(p, t, 3), 0);
    FILE *f = fopen(p, "rb");
    uint8_t hl[8];
    assert_int_equal(fread(hl, 1, 8, f), 8);
    char hdr[1024] = {0};
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | hl[i];
    assert_true(h < sizeof hdr);
    assert_int_equal(fread(hdr, 1, h, f), h);
    fclose(f);
    assert_int_equal((8 + h) % 8, 0); /* data section 8-byte aligned */
    assert_non_null(strstr(hdr, "\"__metadata__\":{\"format\":\"pt\"}"));
    mq_st *st = mq_st_open_file(p);
    assert_non_null(st);
    assert_int_equal(mq_st_count(st), 3);
    const mq_st_tensor *ta = mq_st_find(st, "w.a");
    assert_memory_equal(ta->data, a, sizeof a);
    const mq_st_tensor *tb = mq_st_find(st, "w.\"quoted\"");
    assert_non_null(tb);
    assert_memory_equal(tb->data, bf, sizeof bf);
    const mq_st_tensor *ts = mq_st_find(st, "w.scalar");
    assert_int_equal(ts->ndim, 0);
    assert_int_equal(ts->nbytes, 4);
    mq_st_close(st);
    /* bad writer input */
    mq_st_wtensor badt = {"x", (mq_dtype)9, 1, {1, 0, 0, 0}, a};
    assert_int_equal(mq_st_write(p, &badt, 1), -1);
    assert_non_null(strstr(mq_err_get(), "w.safetensors"));
    assert_int_equal(mq_st_write("/nonexistent-dir/x.safetensors", t, 1), -1);
    assert_non_null(strstr(mq_err_get(), "cannot create"));
}

static int fill_fn(void *dst, size_t off, size_t n, int i, void *user) {
    (void)user;
    for (size_t k = 0; k < n; k++) ((uint8_t *)dst)[k] = (uint8_t)(i * 16 + off + k);
    return 0;
}

static int fill_fail(void *dst, size_t off, size_t n, int i, void *user) {
    (void)dst; (void)off; (void)n; (void)user;
    if (i == 1) { mq_err_set("fill: refused"); return -1; }
    return 0;
}

static void test_writer_fn(void **state) {
    (void)state;
    /* z (6 MB) spans several writer chunks: every byte must land at its offset */
    mq_st_wtensor t[] = {{"x", MQ_F16, 1, {4, 0, 0, 0}, NULL},
                         {"y", MQ_BF16, 2, {2, 2, 0, 0}, NULL},
                         {"z", MQ_F32, 2, {1500, 1000, 0, 0}, NULL}};
    const char *p = path_in("fn.safetensors");
    assert_int_equal(mq_st_write_fn(p, t, 3, fill_fn, NULL), 0);
    mq_st *st = mq_st_open_file(p);
    assert_non_null(st);
    const mq_st_tensor *y = mq_st_find(st, "y"), *z = mq_st_find(st, "z");
    assert_int_equal(y->nbytes, 8);
    assert_int_equal(((const uint8_t *)y->data)[3], 16 + 3);
    assert_int_equal(z->nbytes, 6000000);
    for (size_t k = 0; k < z->nbytes; k += 4099)
        assert_int_equal(((const uint8_t *)z->data)[k], (uint8_t)(32 + k));
    assert_int_equal(((const uint8_t *)z->data)[5999999], (uint8_t)(32 + 5999999));
    mq_st_close(st);
    const char *q = path_in("fail.safetensors");
    assert_int_equal(mq_st_write_fn(q, t, 2, fill_fail, NULL), -1);
    assert_int_equal(access(q, F_OK), -1); /* no half-written file left under the name */
}

static void write_text(const char *path, const char *s) { write_bytes(path, s, strlen(s)); }

static void test_sharded(void **state) {
    (void)state;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/sharded", tmpdir);
    assert_int_equal(mkdir(dir, 0755), 0);
    float v1[2] = {1, 2}, v2[3] = {3, 4, 5}, v3[1] = {6};
    mq_st_wtensor s1[] = {{"t.one", MQ_F32, 1, {2, 0, 0, 0}, v1}, {"t.two", MQ_F32, 1, {3, 0, 0, 0}, v2}};
    mq_st_wtensor s2[] = {{"t.three", MQ_F32, 1, {1, 0, 0, 0}, v3}};
    char p1[256], p2[256], ip[256];
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", dir);
    assert_int_equal(mq_st_write(p1, s1, 2), 0);
    assert_int_equal(mq_st_write(p2, s2, 1), 0);
    /* opening a dir with neither file fails and names the dir */
    assert_null(mq_st_open(dir));
    assert_non_null(strstr(mq_err_get(), "no model.safetensors or model.safetensors.index.json"));
    write_text(ip, "{\"metadata\":{\"total_size\":24},\"weight_map\":{"
                   "\"t.one\":\"model-00001-of-00002.safetensors\",\"t.two\":\"model-00001-of-00002.safetensors\","
                   "\"t.three\":\"model-00002-of-00002.safetensors\"}}");
    mq_st *st = mq_st_open(dir);
    assert_non_null(st);
    assert_int_equal(mq_st_count(st), 3);
    const mq_st_tensor *t3 = mq_st_find(st, "t.three"), *t2 = mq_st_find(st, "t.two");
    assert_string_equal(t3->file, "model-00002-of-00002.safetensors");
    assert_string_equal(t2->file, "model-00001-of-00002.safetensors");
    assert_memory_equal(t3->data, v3, sizeof v3);
    assert_memory_equal(t2->data, v2, sizeof v2);
    mq_st_close(st);

    /* index naming the wrong shard for a tensor */
    write_text(ip, "{\"weight_map\":{\"t.one\":\"model-00002-of-00002.safetensors\"}}");
    assert_null(mq_st_open(dir));
    assert_non_null(strstr(mq_err_get(), "model.safetensors.index.json: weight_map puts tensor t.one in "
                                         "model-00002-of-00002.safetensors"));
    /* index naming a shard that does not exist */
    write_text(ip, "{\"weight_map\":{\"t.one\":\"model-00003-of-00002.safetensors\"}}");
    assert_null(mq_st_open(dir));
    assert_non_null(strstr(mq_err_get(), "model-00003-of-00002.safetensors: cannot open"));
    /* path escapes are refused */
    write_text(ip, "{\"weight_map\":{\"t.one\":\"../x.safetensors\"}}");
    assert_null(mq_st_open(dir));
    assert_non_null(strstr(mq_err_get(), "must name a file in the same directory"));
    write_text(ip, "{\"weight_map\":[]}");
    assert_null(mq_st_open(dir));
    assert_non_null(strstr(mq_err_get(), "no weight_map"));
    write_text(ip, "{\"weight_map\":");
    assert_null(mq_st_open(dir));
    assert_non_null(strstr(mq_err_get(), "model.safetensors.index.json: bad JSON"));
    /* the same tensor in two shards */
    mq_st_wtensor dup[] = {{"t.one", MQ_F32, 1, {1, 0, 0, 0}, v3}};
    assert_int_equal(mq_st_write(p2, dup, 1), 0);
    write_text(ip, "{\"weight_map\":{\"t.one\":\"model-00001-of-00002.safetensors\","
                   "\"t.two\":\"model-00002-of-00002.safetensors\"}}");
    assert_null(mq_st_open(dir));
    assert_non_null(strstr(mq_err_get(), "tensor t.one is in both"));
    /* a corrupt shard is reported by its own name */
    write_text(p2, "garbage!garbage");
    assert_null(mq_st_open(dir));
    assert_non_null(strstr(mq_err_get(), "model-00002-of-00002.safetensors: header length"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),     cmocka_unit_test(test_malformed), cmocka_unit_test(test_writer),
        cmocka_unit_test(test_writer_fn), cmocka_unit_test(test_sharded),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
