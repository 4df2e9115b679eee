/* test_gguf.c - engine/gguf: reading the shared models and vocabularies, typed metadata
 * access, the writer (round trips, byte-identical rewrite of llama.cpp's files, atomic
 * replace), and a suite of corrupt files generated here (every prefix of a small valid
 * file, and one patched field per case) that must all fail cleanly with a message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/gguf.h"
#include "engine/quant.h"
#include "tests/util/test_util.h"

#include <dirent.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- shared models ------------------------------------------------------------------- */

static struct gguf *open_model(const char *rel)
{
    char err[512] = "";
    struct gguf *g = NULL;
    int rc = gguf_open(test_model_path(rel), &g, err, sizeof err);
    if (rc) print_error("%s\n", err);
    assert_int_equal(rc, 0);
    return g;
}

static int count_type(const struct gguf *g, int type)
{
    int n = 0;
    for (int64_t i = 0; i < gguf_tensor_count(g); i++) n += gguf_tensor_at(g, i)->type == type;
    return n;
}

static void assert_f32_at(const struct gguf_tensor *t, int64_t i, float want)
{
    float v;
    memcpy(&v, (const char *)t->data + 4 * i, 4);
    assert_float_equal(v, want, 1e-7);
}

static void test_gguf_reads_stories260k(void **state)
{
    (void)state;
    struct gguf *g = open_model("stories260K.gguf");
    assert_int_equal(gguf_version(g), 3);
    assert_int_equal(gguf_kv_count(g), 19);
    assert_int_equal(gguf_tensor_count(g), 48);
    assert_int_equal(gguf_alignment(g), 32);
    assert_int_equal(gguf_data_offset(g), 14176);
    assert_int_equal(gguf_file_size(g), 1185376);
    assert_int_equal(count_type(g, QT_F32), 48);

    struct gguf_str s;
    assert_int_equal(gguf_get_str(g, "general.architecture", &s), 0);
    assert_int_equal(s.len, 5);
    assert_memory_equal(s.ptr, "llama", 5);
    assert_int_equal(gguf_get_u32_or(g, "llama.embedding_length", 0), 64);
    assert_int_equal(gguf_get_u32_or(g, "llama.feed_forward_length", 0), 172);
    assert_int_equal(gguf_get_u32_or(g, "llama.attention.head_count", 0), 8);
    assert_int_equal(gguf_get_u32_or(g, "llama.attention.head_count_kv", 0), 4);
    assert_int_equal(gguf_get_u32_or(g, "llama.block_count", 0), 5);
    assert_int_equal(gguf_get_u32_or(g, "llama.context_length", 0), 2048);
    assert_int_equal(gguf_get_u32_or(g, "tokenizer.ggml.bos_token_id", 99), 1);
    assert_int_equal(gguf_get_u32_or(g, "tokenizer.ggml.eos_token_id", 99), 2);
    assert_float_equal(gguf_get_f32_or(g, "llama.attention.layer_norm_rms_epsilon", 0), 1e-5f, 1e-12);

    enum gguf_vtype et;
    uint64_t n;
    const void *data;
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data), 0);
    assert_int_equal(et, GGUF_VT_STRING);
    assert_int_equal(n, 512);
    assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 3, &s), 0);
    assert_int_equal(s.len, 6);
    assert_memory_equal(s.ptr, "<0x00>", 6);
    assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 512, &s), MESH_ERANGE);
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n, &data), 0);
    assert_int_equal(et, GGUF_VT_F32);
    assert_int_equal(n, 512);
    /* token types: 253 normal (1), 1 unknown (2), 2 control (3), 256 byte (6) */
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n, &data), 0);
    assert_int_equal(et, GGUF_VT_I32);
    int counts[8] = {0};
    for (uint64_t j = 0; j < n; j++) {
        int32_t v;
        memcpy(&v, (const char *)data + 4 * j, 4);
        if (v >= 0 && v < 8) counts[v]++;
    }
    assert_int_equal(counts[1], 253);
    assert_int_equal(counts[2], 1);
    assert_int_equal(counts[3], 2);
    assert_int_equal(counts[6], 256);

    const struct gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 64);
    assert_int_equal(t->ne[1], 512);
    assert_int_equal(t->n_elems, 64 * 512);
    assert_int_equal(t->size, 64 * 512 * 4);
    assert_true(((uintptr_t)t->data % 32) == 0);
    assert_f32_at(t, 0, -0.29474878f);
    assert_f32_at(t, 1, 0.56189561f);
    assert_f32_at(t, 2, 0.17542253f);
    assert_f32_at(t, 3, 0.34057361f);
    t = gguf_find_tensor(g, "blk.0.attn_q.weight");
    assert_non_null(t);
    assert_f32_at(t, 0, 0.04439279f);
    assert_f32_at(t, 1, 0.07974771f);
    assert_f32_at(t, 2, -0.00892535f);
    assert_f32_at(t, 3, 0.01989523f);
    t = gguf_find_tensor(g, "blk.4.ffn_down.weight");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 172);
    assert_int_equal(t->ne[1], 64);
    assert_null(gguf_find_tensor(g, "blk.5.ffn_down.weight"));
    assert_null(gguf_find_tensor(g, ""));
    gguf_close(g);
}

static void test_gguf_reads_llamacpp_variants(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        uint32_t file_type;
        int n_f32, n_f16, n_bf16, n_q8_0, n_q5_0;
    } cases[] = {
        {"stories260K-F16.gguf", 1, 11, 37, 0, 0, 0},
        {"stories260K-BF16.gguf", 32, 11, 0, 37, 0, 0},
        {"stories260K-Q6_K.gguf", 18, 11, 5, 0, 32, 0},
        {"stories260K-Q4_K_M.gguf", 15, 11, 5, 0, 3, 29},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct gguf *g = open_model(cases[c].file);
        assert_int_equal(gguf_tensor_count(g), 48);
        assert_int_equal(gguf_kv_count(g), 21);
        assert_int_equal(gguf_get_u32_or(g, "general.file_type", 0), cases[c].file_type);
        assert_int_equal(count_type(g, QT_F32), cases[c].n_f32);
        assert_int_equal(count_type(g, QT_F16), cases[c].n_f16);
        assert_int_equal(count_type(g, QT_BF16), cases[c].n_bf16);
        assert_int_equal(count_type(g, QT_Q8_0), cases[c].n_q8_0);
        assert_int_equal(count_type(g, QT_Q5_0), cases[c].n_q5_0);
        for (int64_t i = 0; i < gguf_tensor_count(g); i++) {
            const struct gguf_tensor *t = gguf_tensor_at(g, i);
            assert_int_equal(t->size, quant_row_bytes(t->type, t->ne[0]) * (size_t)(t->n_elems / t->ne[0]));
            assert_true((t->offset % gguf_alignment(g)) == 0);
        }
        gguf_close(g);
    }
}

static void test_gguf_reads_vocab_files(void **state)
{
    (void)state;
    static const struct {
        const char *name, *model;
        uint64_t n_vocab;
    } cases[] = {
        {"llama-spm", "llama", 32000}, {"phi-3", "llama", 32064},   {"gpt-2", "gpt2", 50257},
        {"deepseek-llm", "gpt2", 102400}, {"falcon", "gpt2", 65024}, {"mpt", "gpt2", 50432},
        {"starcoder", "gpt2", 49152},   {"bert-bge", "bert", 30522},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char rel[128];
        snprintf(rel, sizeof rel, "llamacpp-vocab/ggml-vocab-%s.gguf", cases[c].name);
        struct gguf *g = open_model(rel);
        assert_int_equal(gguf_tensor_count(g), 0);
        char *model = gguf_get_str_dup(g, "tokenizer.ggml.model");
        assert_non_null(model);
        assert_string_equal(model, cases[c].model);
        free(model);
        enum gguf_vtype et;
        uint64_t n;
        const void *data;
        assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data), 0);
        assert_int_equal(et, GGUF_VT_STRING);
        assert_int_equal(n, cases[c].n_vocab);
        struct gguf_str s;
        assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.tokens", n - 1, &s), 0);
        assert_true(s.len > 0);
        gguf_close(g);
    }
}

/* ---- a byte builder for hand-made files ------------------------------------------------ */

struct bb {
    uint8_t *p;
    size_t len, cap;
};

static void bb_put(struct bb *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static size_t bb_u32(struct bb *b, uint32_t v)
{
    size_t at = b->len;
    bb_put(b, &v, 4);
    return at;
}

static size_t bb_u64(struct bb *b, uint64_t v)
{
    size_t at = b->len;
    bb_put(b, &v, 8);
    return at;
}

static size_t bb_str(struct bb *b, const char *s)
{
    size_t at = bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
    return at;
}

static void bb_pad(struct bb *b, size_t a)
{
    static const uint8_t z[64];
    while (b->len % a) bb_put(b, z, 1);
}

static void patch_u32(uint8_t *p, size_t at, uint32_t v)
{
    memcpy(p + at, &v, 4);
}

static void patch_u64(uint8_t *p, size_t at, uint64_t v)
{
    memcpy(p + at, &v, 8);
}

/* Where the fields of the hand-made file sit (byte offsets). */
struct layout {
    size_t version, n_tensors, n_kv;
    size_t k1_len, k1_type, k2_name, align_type, align_val;
    size_t arr_type, arr_n, sarr_n, sarr_s1_len, str_len;
    size_t t0_name, t0_ndims, t0_ne0, t0_ne1, t0_type, t0_off;
    size_t t1_name, t1_ne0, t1_ne1, t1_type, t1_off;
};

/* A small valid GGUF v3: 6 keys (alignment 32), tensor "t.a" F32 [8, 2], tensor "t.b"
 * Q8_0 [32, 2]. */
static struct bb make_valid(struct layout *L)
{
    struct bb b = {0};
    bb_put(&b, "GGUF", 4);
    L->version = bb_u32(&b, 3);
    L->n_tensors = bb_u64(&b, 2);
    L->n_kv = bb_u64(&b, 6);
    L->k1_len = bb_str(&b, "test.k1");
    L->k1_type = bb_u32(&b, GGUF_VT_U32);
    bb_u32(&b, 7);
    L->k2_name = bb_str(&b, "test.k2") + 8 + 6; /* the '2' */
    bb_u32(&b, GGUF_VT_I8);
    uint8_t m = 0xfe;
    bb_put(&b, &m, 1);
    bb_str(&b, "general.alignment");
    L->align_type = bb_u32(&b, GGUF_VT_U32);
    L->align_val = bb_u32(&b, 32);
    bb_str(&b, "test.arr");
    bb_u32(&b, GGUF_VT_ARRAY);
    L->arr_type = bb_u32(&b, GGUF_VT_U16);
    L->arr_n = bb_u64(&b, 3);
    uint16_t a[3] = {1, 2, 3};
    bb_put(&b, a, sizeof a);
    bb_str(&b, "test.strs");
    bb_u32(&b, GGUF_VT_ARRAY);
    bb_u32(&b, GGUF_VT_STRING);
    L->sarr_n = bb_u64(&b, 2);
    bb_str(&b, "one");
    L->sarr_s1_len = bb_str(&b, "two");
    bb_str(&b, "general.name");
    bb_u32(&b, GGUF_VT_STRING);
    L->str_len = bb_str(&b, "tiny");

    L->t0_name = bb_str(&b, "t.a") + 8;
    L->t0_ndims = bb_u32(&b, 2);
    L->t0_ne0 = bb_u64(&b, 8);
    L->t0_ne1 = bb_u64(&b, 2);
    L->t0_type = bb_u32(&b, QT_F32);
    L->t0_off = bb_u64(&b, 0);
    L->t1_name = bb_str(&b, "t.b") + 8 + 2; /* the 'b' */
    bb_u32(&b, 2);
    L->t1_ne0 = bb_u64(&b, 32);
    L->t1_ne1 = bb_u64(&b, 2);
    L->t1_type = bb_u32(&b, QT_Q8_0);
    L->t1_off = bb_u64(&b, 64);
    bb_pad(&b, 32);
    for (int i = 0; i < 16; i++) {
        float f = (float)i * 0.5f;
        bb_put(&b, &f, 4);
    }
    uint8_t q[68];
    for (int i = 0; i < 68; i++) q[i] = (uint8_t)(i * 7);
    bb_put(&b, q, sizeof q);
    return b;
}

/* Opens a copy of buf of exactly len bytes (so ASan sees reads past the end). */
static int open_exact(const uint8_t *buf, size_t len, char *err, size_t cap)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len) memcpy(copy, buf, len);
    struct gguf *g = NULL;
    err[0] = 0;
    int rc = gguf_open_mem(copy, len, &g, err, cap);
    if (rc == 0) {
        assert_non_null(g);
        gguf_close(g);
    } else {
        assert_null(g);
    }
    free(copy);
    return rc;
}

static void test_gguf_hand_made_file_reads(void **state)
{
    (void)state;
    struct layout L;
    struct bb b = make_valid(&L);
    struct gguf *g = NULL;
    char err[256] = "";
    int rc = gguf_open_mem(b.p, b.len, &g, err, sizeof err);
    if (rc) print_error("%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(gguf_kv_count(g), 6);
    assert_int_equal(gguf_tensor_count(g), 2);

    /* Conversions between scalar types. */
    uint32_t u;
    int64_t i64;
    float f;
    bool bv;
    assert_int_equal(gguf_get_u32(g, "test.k1", &u), 0);
    assert_int_equal(u, 7);
    assert_int_equal(gguf_get_i64(g, "test.k1", &i64), 0);
    assert_int_equal(i64, 7);
    assert_int_equal(gguf_get_f32(g, "test.k1", &f), 0);
    assert_float_equal(f, 7.0f, 0);
    assert_int_equal(gguf_get_i64(g, "test.k2", &i64), 0);
    assert_int_equal(i64, -2);
    u = 123;
    assert_int_equal(gguf_get_u32(g, "test.k2", &u), MESH_EBADMODEL); /* negative */
    assert_int_equal(u, 123);
    assert_int_equal(gguf_get_bool(g, "test.k1", &bv), MESH_EBADMODEL); /* 7 is no bool */
    assert_int_equal(gguf_get_u32(g, "general.name", &u), MESH_EBADMODEL);
    assert_int_equal(gguf_get_u32(g, "absent", &u), MESH_ENOTFOUND);
    assert_int_equal(gguf_get_u32_or(g, "absent", 5), 5);
    assert_int_equal(gguf_find_key(g, "absent"), -1);
    assert_int_equal(gguf_find_key(g, "test.arr"), 3);
    struct gguf_str s;
    assert_int_equal(gguf_get_str(g, "test.k1", &s), MESH_EBADMODEL);
    char *name = gguf_get_str_dup(g, "general.name");
    assert_string_equal(name, "tiny");
    free(name);
    assert_null(gguf_get_str_dup(g, "test.k1"));

    enum gguf_vtype et;
    uint64_t n;
    const void *data;
    assert_int_equal(gguf_get_arr(g, "test.arr", &et, &n, &data), 0);
    assert_int_equal(et, GGUF_VT_U16);
    assert_int_equal(n, 3);
    uint16_t a3[3];
    memcpy(a3, data, 6);
    assert_int_equal(a3[2], 3);
    assert_int_equal(gguf_get_arr_str(g, "test.arr", 0, &s), MESH_EBADMODEL);
    assert_int_equal(gguf_get_arr_str(g, "test.strs", 1, &s), 0);
    assert_int_equal(s.len, 3);
    assert_memory_equal(s.ptr, "two", 3);
    assert_int_equal(gguf_kv_arr_info(g, 4, &et, &n), 0);
    assert_int_equal(et, GGUF_VT_STRING);
    assert_int_equal(n, 2);
    double d;
    assert_int_equal(gguf_kv_scalar_f64(g, 1, &d), 0);
    assert_true(d == -2.0);
    assert_int_equal(gguf_kv_scalar_f64(g, 5, &d), MESH_EBADMODEL);
    assert_int_equal(gguf_kv_str(g, 5, &s), 0);
    assert_int_equal(gguf_kv_type(g, 3), GGUF_VT_ARRAY);
    assert_string_equal(gguf_vtype_name(GGUF_VT_F64), "f64");

    const struct gguf_tensor *t = gguf_find_tensor(g, "t.b");
    assert_non_null(t);
    assert_int_equal(t->type, QT_Q8_0);
    assert_int_equal(t->size, 68);
    assert_int_equal(t->offset, 64);
    assert_ptr_equal(t->data, b.p + gguf_data_offset(g) + 64);
    assert_int_equal(gguf_data_offset(g) % 32, 0);
    assert_int_equal(gguf_data_offset(g) + 64 + 68, b.len);
    gguf_close(g);
    free(b.p);
}

static void test_gguf_every_prefix_fails_cleanly(void **state)
{
    (void)state;
    struct layout L;
    struct bb b = make_valid(&L);
    char err[256];
    for (size_t len = 0; len < b.len; len++) {
        int rc = open_exact(b.p, len, err, sizeof err);
        if (rc != MESH_EBADMODEL) print_error("prefix %zu: rc %d (%s)\n", len, rc, err);
        assert_int_equal(rc, MESH_EBADMODEL);
        assert_true(strlen(err) > 10);
    }
    assert_int_equal(open_exact(b.p, b.len, err, sizeof err), 0);
    /* GGUF v2 has the same layout and is read too. */
    patch_u32(b.p, L.version, 2);
    struct gguf *g = NULL;
    assert_int_equal(gguf_open_mem(b.p, b.len, &g, err, sizeof err), 0);
    assert_int_equal(gguf_version(g), 2);
    assert_int_equal(gguf_tensor_count(g), 2);
    gguf_close(g);
    free(b.p);
}

/* One corruption: the field at `at` (from the layout) gets a 4- or 8-byte value. */
struct corrupt_case {
    const char *what;
    size_t at_field; /* offsetof(struct layout, ...) */
    int width;       /* 1, 4 or 8 bytes */
    uint64_t value;
    int want_rc;
    const char *want_msg; /* substring of the message */
};

#define F(field) offsetof(struct layout, field)

static void test_gguf_corrupt_fields_fail_with_message(void **state)
{
    (void)state;
    static const struct corrupt_case cases[] = {
        {"v1", F(version), 4, 1, MESH_EUNSUPPORTED, "v1 is not supported"},
        {"v0", F(version), 4, 0, MESH_EBADMODEL, "version 0"},
        {"v4", F(version), 4, 4, MESH_EUNSUPPORTED, "version 4"},
        {"big endian", F(version), 4, 0x03000000, MESH_EUNSUPPORTED, "big-endian"},
        {"huge tensor count", F(n_tensors), 8, 1ull << 62, MESH_EBADMODEL, "tensor count"},
        {"huge kv count", F(n_kv), 8, UINT64_MAX, MESH_EBADMODEL, "key/value count"},
        {"more kvs than present", F(n_kv), 8, 7, MESH_EBADMODEL, "tensor #0: string length"},
        {"key length past EOF", F(k1_len), 8, 1ull << 60, MESH_EBADMODEL,
         "key #0: string length 1152921504606846976"},
        {"unknown value type", F(k1_type), 4, 13, MESH_EBADMODEL, "unknown value type 13"},
        {"bad utf8 key", F(k2_name), 1, 0xff, MESH_EBADMODEL, "not valid UTF-8"},
        {"duplicate key", F(k2_name), 1, '1', MESH_EBADMODEL, "duplicate key"},
        {"alignment type", F(align_type), 4, GGUF_VT_I32, MESH_EBADMODEL, "general.alignment has type i32"},
        {"alignment 48", F(align_val), 4, 48, MESH_EBADMODEL, "not a power of two"},
        {"alignment 0", F(align_val), 4, 0, MESH_EBADMODEL, "not a power of two"},
        {"unknown elem type", F(arr_type), 4, 77, MESH_EBADMODEL, "unknown array element type 77"},
        {"nested array", F(arr_type), 4, GGUF_VT_ARRAY, MESH_EUNSUPPORTED, "nested arrays"},
        {"array count past EOF", F(arr_n), 8, 1ull << 61, MESH_EBADMODEL, "exceeds the file"},
        {"array count overflow", F(arr_n), 8, UINT64_MAX / 2 + 1, MESH_EBADMODEL, "exceeds the file"},
        {"string array count", F(sarr_n), 8, 1ull << 40, MESH_EBADMODEL, "array of 1099511627776 strings"},
        {"string elem past EOF", F(sarr_s1_len), 8, 1ull << 50, MESH_EBADMODEL, "string #1"},
        {"string past EOF", F(str_len), 8, 1ull << 60, MESH_EBADMODEL, "exceeds the file"},
        {"n_dims 5", F(t0_ndims), 4, 5, MESH_EBADMODEL, "5 dimensions"},
        {"n_dims 0", F(t0_ndims), 4, 0, MESH_EBADMODEL, "0 dimensions"},
        {"zero dim", F(t0_ne1), 8, 0, MESH_EBADMODEL, "dimension 1 is 0"},
        {"negative dim", F(t0_ne0), 8, (uint64_t)-8, MESH_EBADMODEL, "dimension 0 is -8"},
        {"unknown tensor type", F(t0_type), 4, 99, MESH_EBADMODEL, "tensor 't.a': unknown type 99"},
        {"removed type 4", F(t0_type), 4, 4, MESH_EBADMODEL, "unknown type 4"},
        {"row not whole blocks", F(t1_ne0), 8, 16, MESH_EBADMODEL, "not a multiple of the Q8_0 block"},
        {"misaligned offset", F(t1_off), 8, 68, MESH_EBADMODEL, "not a multiple of the alignment"},
        {"offset past end", F(t1_off), 8, 1ull << 62, MESH_EBADMODEL, "extends past end of file"},
        {"data past end", F(t1_ne1), 8, 3, MESH_EBADMODEL, "tensor 't.b': data ["},
        {"duplicate tensor", F(t1_name), 1, 'a', MESH_EBADMODEL, "duplicate tensor name 't.a'"},
        {"bad utf8 tensor", F(t0_name), 1, 0xc0, MESH_EBADMODEL, "not valid UTF-8"},
    };
    struct layout L;
    struct bb b = make_valid(&L);
    uint8_t *buf = malloc(b.len);
    assert_non_null(buf);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const struct corrupt_case *k = &cases[c];
        size_t at;
        memcpy(&at, (const char *)&L + k->at_field, sizeof at);
        memcpy(buf, b.p, b.len);
        if (k->width == 1) buf[at] = (uint8_t)k->value;
        if (k->width == 4) patch_u32(buf, at, (uint32_t)k->value);
        if (k->width == 8) patch_u64(buf, at, k->value);
        char err[256];
        int rc = open_exact(buf, b.len, err, sizeof err);
        if (rc != k->want_rc || !strstr(err, k->want_msg))
            print_error("case '%s': rc %d, message '%s' (want %d, '%s')\n", k->what, rc, err, k->want_rc,
                        k->want_msg);
        assert_int_equal(rc, k->want_rc);
        assert_non_null(strstr(err, k->want_msg));
        assert_non_null(strstr(err, "<memory>: "));
    }
    free(buf);
    free(b.p);
}

static void test_gguf_dims_overflow_and_bad_magic(void **state)
{
    (void)state;
    struct layout L;
    struct bb b = make_valid(&L);
    char err[256];
    /* 2^32 x 2^32 elements: the element count overflows int64. */
    uint8_t *buf = malloc(b.len);
    assert_non_null(buf);
    memcpy(buf, b.p, b.len);
    patch_u32(buf, L.t0_ndims, 4);
    patch_u64(buf, L.t0_ne0, 1ull << 32); /* ne0, ne1 then two more read from what follows */
    patch_u64(buf, L.t0_ne1, 1ull << 32);
    assert_int_equal(open_exact(buf, b.len, err, sizeof err), MESH_EBADMODEL);
    /* Either the product overflows, or the following bytes (type, offset) read as dims fail. */
    assert_true(strstr(err, "overflow") || strstr(err, "dimension"));
    memcpy(buf, b.p, b.len);
    patch_u64(buf, L.t0_ne0, 1ull << 40);
    patch_u64(buf, L.t0_ne1, 1ull << 40);
    assert_int_equal(open_exact(buf, b.len, err, sizeof err), MESH_EBADMODEL);
    assert_non_null(strstr(err, "tensor dims overflow"));
    /* Byte size overflow: F32 with 2^62 elements. */
    memcpy(buf, b.p, b.len);
    patch_u64(buf, L.t0_ne0, 1ull << 31);
    patch_u64(buf, L.t0_ne1, 1ull << 31);
    assert_int_equal(open_exact(buf, b.len, err, sizeof err), MESH_EBADMODEL);
    assert_true(strstr(err, "overflows") || strstr(err, "past end"));
    memcpy(buf, b.p, b.len);
    buf[0] = 'g';
    assert_int_equal(open_exact(buf, b.len, err, sizeof err), MESH_EBADMODEL);
    assert_non_null(strstr(err, "not a GGUF file"));
    free(buf);
    free(b.p);

    struct gguf *g = NULL;
    assert_int_equal(gguf_open("/nonexistent/x.gguf", &g, err, sizeof err), MESH_ENOTFOUND);
    assert_non_null(strstr(err, "/nonexistent/x.gguf"));
    assert_int_equal(gguf_open(test_tmp_dir(), &g, err, sizeof err), MESH_EIO);
    char path[512];
    snprintf(path, sizeof path, "%s/empty.gguf", test_tmp_dir());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(gguf_open(path, &g, err, sizeof err), MESH_EBADMODEL);
    assert_non_null(strstr(err, "empty"));
    assert_null(g);
}

/* Random byte flips of the valid file: anything may happen but a crash or a silent
 * success with a message left unset on failure. */
static void test_gguf_random_mutations_never_crash(void **state)
{
    (void)state;
    struct layout L;
    struct bb b = make_valid(&L);
    uint8_t *buf = malloc(b.len);
    assert_non_null(buf);
    uint64_t rng = 42;
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, b.p, b.len);
        int flips = 1 + (int)(test_rand_u64(&rng) % 4);
        for (int k = 0; k < flips; k++) buf[test_rand_u64(&rng) % b.len] = (uint8_t)test_rand_u64(&rng);
        char err[256];
        int rc = open_exact(buf, b.len, err, sizeof err);
        if (rc) {
            assert_true(rc == MESH_EBADMODEL || rc == MESH_EUNSUPPORTED);
            assert_true(err[0] != 0);
        }
    }
    free(buf);
    free(b.p);
}

/* ---- writer ------------------------------------------------------------------------- */

static int fill_pattern(void *user, int64_t i, void *dst, size_t size)
{
    int *calls = user;
    (*calls)++;
    for (size_t k = 0; k < size; k++) ((uint8_t *)dst)[k] = (uint8_t)(i * 31 + (int64_t)k);
    return 0;
}

static void test_gguf_writer_round_trip(void **state)
{
    (void)state;
    struct gguf_writer *w;
    assert_int_equal(gguf_writer_new(&w), 0);
    assert_int_equal(gguf_writer_set_alignment(w, 64), 0);
    assert_int_equal(gguf_writer_set_u32(w, "a.u32", 0xdeadbeef), 0);
    assert_int_equal(gguf_writer_set_i32(w, "a.i32", -5), 0);
    assert_int_equal(gguf_writer_set_f32(w, "a.f32", 1.5f), 0);
    assert_int_equal(gguf_writer_set_bool(w, "a.bool", true), 0);
    assert_int_equal(gguf_writer_set_str(w, "a.str", "h\xc3\xa9llo"), 0);
    assert_int_equal(gguf_writer_set_str(w, "a.empty", ""), 0);
    uint8_t u8s[3] = {1, 2, 255};
    int64_t i64s[2] = {-1, INT64_MAX};
    double f64s[2] = {0.25, -1e300};
    assert_int_equal(gguf_writer_set_arr(w, "a.arr_u8", GGUF_VT_U8, u8s, 3), 0);
    assert_int_equal(gguf_writer_set_arr(w, "a.arr_i64", GGUF_VT_I64, i64s, 2), 0);
    assert_int_equal(gguf_writer_set_arr(w, "a.arr_f64", GGUF_VT_F64, f64s, 2), 0);
    assert_int_equal(gguf_writer_set_arr(w, "a.arr_empty", GGUF_VT_I32, NULL, 0), 0);
    const char *strs[3] = {"x", "", "zzz"};
    assert_int_equal(gguf_writer_set_arr_str(w, "a.strs", strs, 3), 0);
    assert_int_equal(gguf_writer_set_arr(w, "a.bad", GGUF_VT_STRING, strs, 1), MESH_EINVAL);
    /* Replacing keeps the position. */
    assert_int_equal(gguf_writer_set_i32(w, "a.u32", 77), 0);
    assert_int_equal(gguf_writer_set_u32(w, "general.alignment", 12), MESH_EINVAL);
    assert_int_equal(gguf_writer_set_u32(w, "", 1), MESH_EINVAL);

    float f32[3 * 5];
    for (int k = 0; k < 15; k++) f32[k] = (float)k - 7.25f;
    int64_t ne_a[2] = {3, 5}, ne_b[3] = {64, 2, 3}, ne_c[1] = {256};
    assert_int_equal(gguf_writer_add_tensor(w, "t.f32", QT_F32, 2, ne_a, f32), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "t.q8", QT_Q8_0, 3, ne_b, NULL), 1);
    assert_int_equal(gguf_writer_add_tensor(w, "t.q4k", QT_Q4_K, 1, ne_c, NULL), 2);
    assert_int_equal(gguf_writer_add_tensor(w, "t.f32", QT_F32, 2, ne_a, f32), MESH_EINVAL); /* dup */
    int64_t ne_bad[1] = {33};
    assert_int_equal(gguf_writer_add_tensor(w, "t.bad", QT_Q8_0, 1, ne_bad, NULL), MESH_EINVAL);
    assert_int_equal(gguf_writer_add_tensor(w, "t.bad", 99, 1, ne_c, NULL), MESH_EINVAL);
    assert_int_equal(gguf_writer_tensor_count(w), 3);
    assert_int_equal(gguf_writer_tensor_size(w, 1), 34 * 2 * 2 * 3);

    char path[512], err[256];
    snprintf(path, sizeof path, "%s/rt.gguf", test_tmp_dir());
    int calls = 0;
    int rc = gguf_writer_write(w, path, fill_pattern, &calls, err, sizeof err);
    if (rc) print_error("%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(calls, 2);
    gguf_writer_free(w);

    struct gguf *g = NULL;
    rc = gguf_open(path, &g, err, sizeof err);
    if (rc) print_error("%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(gguf_alignment(g), 64);
    assert_int_equal(gguf_kv_count(g), 12);
    assert_int_equal(gguf_kv_type(g, 0), GGUF_VT_U32); /* general.alignment first */
    assert_int_equal(gguf_kv_type(g, 1), GGUF_VT_I32); /* a.u32 replaced in place */
    int64_t i64;
    assert_int_equal(gguf_get_i64(g, "a.u32", &i64), 0);
    assert_int_equal(i64, 77);
    assert_int_equal(gguf_get_i64(g, "a.i32", &i64), 0);
    assert_int_equal(i64, -5);
    assert_float_equal(gguf_get_f32_or(g, "a.f32", 0), 1.5f, 0);
    bool bv = false;
    assert_int_equal(gguf_get_bool(g, "a.bool", &bv), 0);
    assert_true(bv);
    char *s = gguf_get_str_dup(g, "a.str");
    assert_string_equal(s, "h\xc3\xa9llo");
    free(s);
    s = gguf_get_str_dup(g, "a.empty");
    assert_string_equal(s, "");
    free(s);
    enum gguf_vtype et;
    uint64_t n;
    const void *data;
    assert_int_equal(gguf_get_arr(g, "a.arr_u8", &et, &n, &data), 0);
    assert_int_equal(et, GGUF_VT_U8);
    assert_memory_equal(data, u8s, 3);
    assert_int_equal(gguf_get_arr(g, "a.arr_i64", &et, &n, &data), 0);
    assert_memory_equal(data, i64s, 16);
    assert_int_equal(gguf_get_arr(g, "a.arr_f64", &et, &n, &data), 0);
    assert_memory_equal(data, f64s, 16);
    assert_int_equal(gguf_get_arr(g, "a.arr_empty", &et, &n, &data), 0);
    assert_int_equal(n, 0);
    struct gguf_str gs;
    assert_int_equal(gguf_get_arr_str(g, "a.strs", 2, &gs), 0);
    assert_int_equal(gs.len, 3);
    assert_memory_equal(gs.ptr, "zzz", 3);
    assert_int_equal(gguf_get_arr_str(g, "a.strs", 1, &gs), 0);
    assert_int_equal(gs.len, 0);

    assert_int_equal(gguf_tensor_count(g), 3);
    const struct gguf_tensor *t = gguf_find_tensor(g, "t.f32");
    assert_memory_equal(t->data, f32, sizeof f32);
    t = gguf_find_tensor(g, "t.q8");
    assert_int_equal(t->n_dims, 3);
    assert_int_equal(t->ne[2], 3);
    assert_int_equal(t->offset % 64, 0);
    for (size_t k = 0; k < t->size; k++) assert_int_equal(((const uint8_t *)t->data)[k], (uint8_t)(31 + k));
    t = gguf_find_tensor(g, "t.q4k");
    assert_int_equal(t->size, 144);
    assert_int_equal(((const uint8_t *)t->data)[143], (uint8_t)(62 + 143));
    gguf_close(g);
}

static int fill_fail_second(void *user, int64_t i, int64_t row0, int64_t n_rows, void *dst, size_t size)
{
    (void)user;
    (void)row0;
    (void)n_rows;
    memset(dst, 0, size);
    return i == 1 ? MESH_ECANCELED : 0;
}

static void test_gguf_writer_failure_leaves_target_intact(void **state)
{
    (void)state;
    char dir[512], path[600], err[256];
    snprintf(dir, sizeof dir, "%s/atomic", test_tmp_dir());
    assert_true(mkdir(dir, 0700) == 0);
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("old contents", f);
    fclose(f);

    struct gguf_writer *w;
    assert_int_equal(gguf_writer_new(&w), 0);
    int64_t ne[1] = {32};
    assert_int_equal(gguf_writer_add_tensor(w, "x", QT_F32, 1, ne, NULL), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "y", QT_F32, 1, ne, NULL), 1);
    err[0] = 0;
    assert_int_equal(gguf_writer_write_rows(w, path, fill_fail_second, NULL, err, sizeof err), MESH_ECANCELED);
    assert_non_null(strstr(err, "'y'"));
    /* No data callback and no pointer: refused. */
    assert_int_equal(gguf_writer_write(w, path, NULL, NULL, err, sizeof err), MESH_EINVAL);
    gguf_writer_free(w);
    size_t len;
    char *back = test_read_file(path, &len);
    assert_non_null(back);
    assert_string_equal(back, "old contents");
    free(back);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n_files = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n_files++;
    closedir(d);
    assert_int_equal(n_files, 1); /* the temp file was removed */
    gguf_writer_free(NULL);
}

struct chunk_log {
    int calls;
    int64_t next_row;
    bool in_order;
};

static int fill_rows_pattern(void *user, int64_t i, int64_t row0, int64_t n_rows, void *dst, size_t size)
{
    struct chunk_log *c = user;
    (void)i;
    if (row0 != c->next_row || size != (size_t)n_rows * 1024 * 4) c->in_order = false;
    c->next_row = row0 + n_rows;
    c->calls++;
    float *f = dst;
    memset(dst, 0, size);
    for (int64_t r = 0; r < n_rows; r++) f[r * 1024] = (float)(row0 + r);
    return 0;
}

/* A tensor larger than the writer's chunk arrives in consecutive row ranges. */
static void test_gguf_writer_streams_large_tensor_in_chunks(void **state)
{
    (void)state;
    struct gguf_writer *w;
    assert_int_equal(gguf_writer_new(&w), 0);
    int64_t ne[2] = {1024, 4200}; /* 17.2 MB of F32 */
    assert_int_equal(gguf_writer_add_tensor(w, "big", QT_F32, 2, ne, NULL), 0);
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/big.gguf", test_tmp_dir());
    struct chunk_log c = {.in_order = true};
    assert_int_equal(gguf_writer_write_rows(w, path, fill_rows_pattern, &c, err, sizeof err), 0);
    gguf_writer_free(w);
    assert_true(c.in_order);
    assert_int_equal(c.calls, 2);
    assert_int_equal(c.next_row, 4200);
    struct gguf *g = NULL;
    assert_int_equal(gguf_open(path, &g, err, sizeof err), 0);
    const struct gguf_tensor *t = gguf_find_tensor(g, "big");
    float v;
    memcpy(&v, (const char *)t->data + (size_t)4199 * 4096, 4);
    assert_float_equal(v, 4199.0f, 0);
    memcpy(&v, (const char *)t->data + (size_t)4096 * 4096, 4);
    assert_float_equal(v, 4096.0f, 0);
    gguf_close(g);
    unlink(path);
}

/* Copies every key and tensor of a llama.cpp file; our file must equal it byte for byte. */
static void rewrite_identical(const char *rel)
{
    char err[256], path[512];
    struct gguf *g = open_model(rel);
    struct gguf_writer *w;
    assert_int_equal(gguf_writer_new(&w), 0);
    for (int64_t i = 0; i < gguf_kv_count(g); i++) assert_int_equal(gguf_writer_copy_kv(w, g, i), 0);
    for (int64_t i = 0; i < gguf_tensor_count(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        assert_int_equal(gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data), i);
    }
    snprintf(path, sizeof path, "%s/rewrite.gguf", test_tmp_dir());
    int rc = gguf_writer_write(w, path, NULL, NULL, err, sizeof err);
    if (rc) print_error("%s\n", err);
    assert_int_equal(rc, 0);
    gguf_writer_free(w);
    size_t len_a, len_b;
    char *a = test_read_file(test_model_path(rel), &len_a);
    char *b = test_read_file(path, &len_b);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(len_a, len_b);
    assert_memory_equal(a, b, len_a);
    free(a);
    free(b);
    gguf_close(g);
}

static void test_gguf_writer_rewrites_llamacpp_files_identically(void **state)
{
    (void)state;
    rewrite_identical("stories260K.gguf");
    rewrite_identical("stories260K-Q4_K_M.gguf");
    rewrite_identical("stories260K-F16.gguf");
    rewrite_identical("llamacpp-vocab/ggml-vocab-gpt-2.gguf");
}

int main(void)
{
    quant_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_reads_stories260k),
        cmocka_unit_test(test_gguf_reads_llamacpp_variants),
        cmocka_unit_test(test_gguf_reads_vocab_files),
        cmocka_unit_test(test_gguf_hand_made_file_reads),
        cmocka_unit_test(test_gguf_every_prefix_fails_cleanly),
        cmocka_unit_test(test_gguf_corrupt_fields_fail_with_message),
        cmocka_unit_test(test_gguf_dims_overflow_and_bad_magic),
        cmocka_unit_test(test_gguf_random_mutations_never_crash),
        cmocka_unit_test(test_gguf_writer_round_trip),
        cmocka_unit_test(test_gguf_writer_failure_leaves_target_intact),
        cmocka_unit_test(test_gguf_writer_streams_large_tensor_in_chunks),
        cmocka_unit_test(test_gguf_writer_rewrites_llamacpp_files_identically),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
