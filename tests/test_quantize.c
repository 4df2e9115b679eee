/* test_quantize.c - engine/quantize and engine/model_gen: the per-tensor type plan
 * against the files llama.cpp's llama-quantize made from stories260K (tensor order and
 * types, then the whole file byte for byte), dequantization error within each format's
 * bound, genuine K-quants on a generated model whose rows allow them, refusal to
 * re-quantize, progress reports, and the random-model generator (determinism, vocab
 * padding, qwen2 biases, llama-3 rope factors, weight statistics, loadable by model_load). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/model_gen.h"
#include "engine/quant.h"
#include "engine/quantize.h"
#include "tests/util/test_util.h"

#include <math.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_tmp_dir(), name);
    return buf[k];
}

static struct gguf *open_path(const char *path)
{
    char err[512] = "";
    struct gguf *g = NULL;
    int rc = gguf_open(path, &g, err, sizeof err);
    if (rc) print_error("%s\n", err);
    assert_int_equal(rc, 0);
    return g;
}

static void quantize_ok(const char *in, const char *out, int ftype)
{
    char err[512] = "";
    int rc = quantize_model(in, out, ftype, 2, NULL, NULL, err, sizeof err);
    if (rc) print_error("%s\n", err);
    assert_int_equal(rc, 0);
}

static void test_quantize_ftype_names(void **state)
{
    (void)state;
    assert_int_equal(quantize_ftype_from_name("q4_k_m"), QUANTIZE_FT_Q4_K_M);
    assert_int_equal(quantize_ftype_from_name("Q4_K"), QUANTIZE_FT_Q4_K_M);
    assert_int_equal(quantize_ftype_from_name("Q5_K"), QUANTIZE_FT_Q5_K_M);
    assert_int_equal(quantize_ftype_from_name("BF16"), 32);
    assert_int_equal(quantize_ftype_from_name("Q6_K"), 18);
    assert_int_equal(quantize_ftype_from_name("Q3_K_M"), -1);
    assert_int_equal(quantize_ftype_from_name(NULL), -1);
    assert_string_equal(quantize_ftype_name(QUANTIZE_FT_Q8_0), "Q8_0");
    assert_string_equal(quantize_ftype_name(12345), "?");
    char err[128];
    assert_int_equal(quantize_model("a", "b", 12345, 1, NULL, NULL, err, sizeof err), MESH_EINVAL);
}

/* The plan for stories260K equals the tensor list (order and types) of llama.cpp's file. */
static void test_quantize_plan_matches_llamacpp(void **state)
{
    (void)state;
    static const struct {
        int ftype;
        const char *file;
    } cases[] = {
        {QUANTIZE_FT_F16, "stories260K-F16.gguf"},
        {QUANTIZE_FT_BF16, "stories260K-BF16.gguf"},
        {QUANTIZE_FT_Q6_K, "stories260K-Q6_K.gguf"},
        {QUANTIZE_FT_Q4_K_M, "stories260K-Q4_K_M.gguf"},
    };
    struct gguf *src = open_path(test_model_path("stories260K.gguf"));
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct gguf *ref = open_path(test_model_path(cases[c].file));
        struct quantize_plan_entry *plan;
        int64_t n;
        char err[256];
        assert_int_equal(quantize_plan(src, cases[c].ftype, &plan, &n, err, sizeof err), 0);
        assert_int_equal(n, gguf_tensor_count(ref));
        for (int64_t i = 0; i < n; i++) {
            const struct gguf_tensor *t = gguf_tensor_at(ref, i);
            if (strlen(plan[i].name) != t->name.len || memcmp(plan[i].name, t->name.ptr, t->name.len) != 0 ||
                plan[i].type_out != t->type)
                print_error("%s #%lld: plan %s %d, llama.cpp %.*s %d\n", cases[c].file, (long long)i, plan[i].name,
                            plan[i].type_out, (int)t->name.len, t->name.ptr, t->type);
            assert_int_equal(strlen(plan[i].name), t->name.len);
            assert_memory_equal(plan[i].name, t->name.ptr, t->name.len);
            assert_int_equal(plan[i].type_out, t->type);
            assert_int_equal(plan[i].type_in, QT_F32);
        }
        quantize_plan_free(plan, n);
        gguf_close(ref);
    }
    gguf_close(src);
}

static bool files_equal(const char *a, const char *b)
{
    size_t la, lb;
    char *x = test_read_file(a, &la), *y = test_read_file(b, &lb);
    assert_non_null(x);
    assert_non_null(y);
    bool eq = la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return eq;
}

/* Metadata, tensor order, types and the converted bytes all equal llama-quantize's. */
static void test_quantize_stories_byte_identical_to_llamacpp(void **state)
{
    (void)state;
    static const struct {
        int ftype;
        const char *file;
    } cases[] = {
        {QUANTIZE_FT_F16, "stories260K-F16.gguf"},
        {QUANTIZE_FT_BF16, "stories260K-BF16.gguf"},
        {QUANTIZE_FT_Q6_K, "stories260K-Q6_K.gguf"},
        {QUANTIZE_FT_Q4_K_M, "stories260K-Q4_K_M.gguf"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *out = tmp_path("ident.gguf");
        quantize_ok(test_model_path("stories260K.gguf"), out, cases[c].ftype);
        char ref[512];
        snprintf(ref, sizeof ref, "%s", test_model_path(cases[c].file));
        if (!files_equal(out, ref)) print_error("%s differs\n", cases[c].file);
        assert_true(files_equal(out, ref));
    }
}

/* Largest error a format may make on one block of values x[0..n), from its scale math
 * (llama.cpp's reference quantizers), with room for the F16 rounding of the scales. */
static double block_bound(int type, const float *x, int n)
{
    double amax = 0, mn = x[0], mx = x[0];
    for (int i = 0; i < n; i++) {
        amax = fmax(amax, fabs(x[i]));
        mn = fmin(mn, x[i]);
        mx = fmax(mx, x[i]);
    }
    switch (type) {
    case QT_Q8_0: return amax / 127.0 * 0.57 + 1e-7;
    case QT_Q4_0: return amax / 8.0 * 1.01 + 1e-7;
    case QT_Q5_0: return amax / 16.0 * 1.01 + 1e-7;
    case QT_Q4_1: return (mx - mn) / 15.0 * 0.57 + fabs(mn) * 1e-3 + 1e-7;
    case QT_Q5_1: return (mx - mn) / 31.0 * 0.57 + fabs(mn) * 1e-3 + 1e-7;
    default: return -1;
    }
}

/* Compares every tensor of out (dequantized) with the same tensor of the F32 source. */
static void check_against_f32(const struct gguf *src, const struct gguf *out)
{
    for (int64_t i = 0; i < gguf_tensor_count(out); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(out, i);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        const struct gguf_tensor *s = gguf_find_tensor(src, name);
        assert_non_null(s);
        assert_int_equal(s->n_elems, t->n_elems);
        float *ref = malloc((size_t)s->n_elems * 4), *got = malloc((size_t)t->n_elems * 4);
        assert_non_null(ref);
        assert_non_null(got);
        memcpy(ref, s->data, (size_t)s->n_elems * 4);
        quant_traits_ref(t->type)->to_float(t->data, got, t->n_elems);
        int bl = quant_traits(t->type)->block_len;
        for (int64_t b = 0; b < t->n_elems; b += bl) {
            double bound = block_bound(t->type, ref + b, bl);
            for (int k = 0; k < bl; k++) {
                double x = ref[b + k], e = fabs((double)got[b + k] - x);
                if (t->type == QT_F32) assert_true(e == 0);
                else if (t->type == QT_F16) assert_true(e <= fabs(x) * (1.0 / 2048) + 6e-8);
                else if (t->type == QT_BF16) assert_true(e <= fabs(x) * (1.0 / 256));
                else {
                    if (!(e <= bound))
                        print_error("%s [%lld]: %g vs %g (bound %g)\n", name, (long long)(b + k), got[b + k], x,
                                    bound);
                    assert_true(e <= bound);
                }
            }
        }
        free(ref);
        free(got);
    }
}

static int count_type(const struct gguf *g, int type)
{
    int n = 0;
    for (int64_t i = 0; i < gguf_tensor_count(g); i++) n += gguf_tensor_at(g, i)->type == type;
    return n;
}

/* Plain 32-block types: llama.cpp refuses stories260K's 172-wide ffn_down; we keep it F16. */
static void test_quantize_block_types_within_error_bound(void **state)
{
    (void)state;
    static const struct {
        int ftype, main_type, n_main, n_q8_0;
    } cases[] = {
        {QUANTIZE_FT_Q8_0, QT_Q8_0, 32, 32}, {QUANTIZE_FT_Q4_0, QT_Q4_0, 31, 1}, {QUANTIZE_FT_Q5_0, QT_Q5_0, 31, 1},
        {QUANTIZE_FT_Q4_1, QT_Q4_1, 31, 1},  {QUANTIZE_FT_Q5_1, QT_Q5_1, 31, 1}, {QUANTIZE_FT_F16, QT_F16, 37, 0},
        {QUANTIZE_FT_BF16, QT_BF16, 37, 0},
    };
    struct gguf *src = open_path(test_model_path("stories260K.gguf"));
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *out = tmp_path("blk.gguf");
        quantize_ok(test_model_path("stories260K.gguf"), out, cases[c].ftype);
        struct gguf *g = open_path(out);
        assert_int_equal(gguf_get_u32_or(g, "general.file_type", 999), (uint32_t)cases[c].ftype);
        assert_int_equal(gguf_get_u32_or(g, "general.quantization_version", 0), 2);
        assert_int_equal(count_type(g, QT_F32), 11);
        assert_int_equal(count_type(g, cases[c].main_type), cases[c].n_main);
        if (cases[c].main_type != QT_Q8_0) assert_int_equal(count_type(g, QT_Q8_0), cases[c].n_q8_0);
        /* output.weight: Q6_K for 32-block types, which falls back to Q8_0 on 64-wide rows */
        int out_type = gguf_find_tensor(g, "output.weight")->type;
        assert_int_equal(out_type, cases[c].n_q8_0 ? QT_Q8_0 : cases[c].main_type);
        if (cases[c].main_type != QT_F16 && cases[c].main_type != QT_BF16) {
            assert_int_equal(count_type(g, QT_F16), 5);
            assert_int_equal(gguf_find_tensor(g, "blk.3.ffn_down.weight")->type, QT_F16);
        }
        check_against_f32(src, g);
        gguf_close(g);
    }
    gguf_close(src);
}

static void test_quantize_refuses_requantize_and_bad_input(void **state)
{
    (void)state;
    char err[512] = "";
    int rc = quantize_model(test_model_path("stories260K-Q4_K_M.gguf"), tmp_path("rq.gguf"), QUANTIZE_FT_Q8_0, 1,
                            NULL, NULL, err, sizeof err);
    assert_int_equal(rc, MESH_EUNSUPPORTED);
    assert_non_null(strstr(err, "already quantized"));
    assert_non_null(strstr(err, "stories260K-Q4_K_M.gguf"));
    rc = quantize_model(tmp_path("missing.gguf"), tmp_path("x.gguf"), QUANTIZE_FT_Q8_0, 1, NULL, NULL, err,
                        sizeof err);
    assert_int_equal(rc, MESH_ENOTFOUND);
    /* Same type in and out is a copy (F16 -> F16 keeps every tensor's bytes). */
    quantize_ok(test_model_path("stories260K-F16.gguf"), tmp_path("copy.gguf"), QUANTIZE_FT_F16);
    assert_true(files_equal(tmp_path("copy.gguf"), test_model_path("stories260K-F16.gguf")));
}

struct prog {
    int calls;
    int64_t last_tensor, n_tensors;
    uint64_t last_done, total;
    bool monotonic;
};

static void on_progress(void *user, const struct quantize_progress *p)
{
    struct prog *pr = user;
    if (p->bytes_done < pr->last_done || p->i_tensor < pr->last_tensor) pr->monotonic = false;
    pr->calls++;
    pr->last_tensor = p->i_tensor;
    pr->n_tensors = p->n_tensors;
    pr->last_done = p->bytes_done;
    pr->total = p->bytes_total;
    assert_non_null(p->name);
}

static void test_quantize_reports_progress(void **state)
{
    (void)state;
    struct prog pr = {.monotonic = true};
    char err[256];
    const char *out = tmp_path("prog.gguf");
    assert_int_equal(quantize_model(test_model_path("stories260K.gguf"), out, QUANTIZE_FT_Q8_0, 2, on_progress, &pr,
                                    err, sizeof err),
                     0);
    assert_true(pr.monotonic);
    assert_int_equal(pr.calls, 48);
    assert_int_equal(pr.n_tensors, 48);
    assert_int_equal(pr.last_tensor, 47);
    assert_int_equal(pr.last_done, pr.total);
    struct gguf *g = open_path(out);
    assert_int_equal(gguf_file_size(g) - gguf_data_offset(g) >= pr.total, 1);
    gguf_close(g);
}

/* ---- generated models ------------------------------------------------------------------ */

static void gen_ok(struct model_gen_opts *o, const char *path)
{
    char err[512] = "";
    int rc = model_gen_write(o, path, err, sizeof err);
    if (rc) print_error("%s\n", err);
    assert_int_equal(rc, 0);
}

/* A small llama shape whose every matrix row is a multiple of 256. */
static struct model_gen_opts small_opts(void)
{
    struct model_gen_opts o;
    memset(&o, 0, sizeof o);
    snprintf(o.shape.name, sizeof o.shape.name, "k-small");
    snprintf(o.shape.arch, sizeof o.shape.arch, "llama");
    o.shape.n_embd = 256;
    o.shape.n_layer = 2;
    o.shape.n_head = 4;
    o.shape.n_head_kv = 2;
    o.shape.n_ff = 512;
    o.shape.n_ctx = 256;
    o.shape.rope_theta = 10000.0f;
    o.shape.rms_eps = 1e-5f;
    o.vocab_path = test_model_path("stories260K.gguf");
    o.ftype = QUANTIZE_FT_F16;
    o.seed = 7;
    o.n_threads = 2;
    return o;
}

static double rel_rmse(const struct gguf_tensor *ref, const struct gguf_tensor *t)
{
    float *a = malloc((size_t)ref->n_elems * 4), *b = malloc((size_t)t->n_elems * 4);
    assert_non_null(a);
    assert_non_null(b);
    quant_traits_ref(ref->type)->to_float(ref->data, a, ref->n_elems);
    quant_traits_ref(t->type)->to_float(t->data, b, t->n_elems);
    double se = 0, ss = 0;
    for (int64_t i = 0; i < ref->n_elems; i++) {
        se += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        ss += (double)a[i] * a[i];
    }
    free(a);
    free(b);
    return sqrt(se / ss);
}

/* K-quant mixes on a model whose rows allow them: types by llama.cpp's rules, and the
 * dequantized weights close to the F16 originals. */
static void test_quantize_k_quants_are_real_k_quants(void **state)
{
    (void)state;
    struct model_gen_opts o = small_opts();
    char f16[512];
    snprintf(f16, sizeof f16, "%s", tmp_path("k-small-f16.gguf"));
    gen_ok(&o, f16);
    struct gguf *src = open_path(f16);
    static const struct {
        int ftype;
        int attn_v[2], ffn_down[2], other, output, bound_type;
        double bound;
    } cases[] = {
        /* 2 layers: use_more_bits is true for layer 1 only (i >= 7 * 2 / 8) */
        {QUANTIZE_FT_Q4_K_M, {QT_Q4_K, QT_Q6_K}, {QT_Q4_K, QT_Q6_K}, QT_Q4_K, QT_Q6_K, QT_Q4_K, 0.12},
        {QUANTIZE_FT_Q4_K_S, {QT_Q5_K, QT_Q5_K}, {QT_Q4_K, QT_Q4_K}, QT_Q4_K, QT_Q6_K, QT_Q5_K, 0.06},
        {QUANTIZE_FT_Q5_K_M, {QT_Q5_K, QT_Q6_K}, {QT_Q5_K, QT_Q6_K}, QT_Q5_K, QT_Q6_K, QT_Q5_K, 0.06},
        {QUANTIZE_FT_Q6_K, {QT_Q6_K, QT_Q6_K}, {QT_Q6_K, QT_Q6_K}, QT_Q6_K, QT_Q6_K, QT_Q6_K, 0.03},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *out = tmp_path("k-small-q.gguf");
        quantize_ok(f16, out, cases[c].ftype);
        struct gguf *g = open_path(out);
        for (int l = 0; l < 2; l++) {
            char nm[64];
            snprintf(nm, sizeof nm, "blk.%d.attn_v.weight", l);
            assert_int_equal(gguf_find_tensor(g, nm)->type, cases[c].attn_v[l]);
            snprintf(nm, sizeof nm, "blk.%d.ffn_down.weight", l);
            assert_int_equal(gguf_find_tensor(g, nm)->type, cases[c].ffn_down[l]);
            snprintf(nm, sizeof nm, "blk.%d.attn_q.weight", l);
            assert_int_equal(gguf_find_tensor(g, nm)->type, cases[c].other);
            snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
            assert_int_equal(gguf_find_tensor(g, nm)->type, QT_F32);
        }
        assert_int_equal(gguf_find_tensor(g, "output.weight")->type, cases[c].output);
        assert_int_equal(gguf_find_tensor(g, "token_embd.weight")->type, cases[c].other);
        for (int64_t i = 0; i < gguf_tensor_count(g); i++) {
            const struct gguf_tensor *t = gguf_tensor_at(g, i);
            char nm[128];
            snprintf(nm, sizeof nm, "%.*s", (int)t->name.len, t->name.ptr);
            const struct gguf_tensor *s = gguf_find_tensor(src, nm);
            assert_non_null(s);
            if (t->type == QT_F32) continue;
            assert_true(t->type == QT_Q4_K || t->type == QT_Q5_K || t->type == QT_Q6_K);
            double e = rel_rmse(s, t);
            double bound = t->type == QT_Q6_K ? 0.03 : t->type == QT_Q5_K ? 0.06 : 0.12;
            if (!(e < bound && e > 0)) print_error("%s %s: relative rmse %g\n", nm, quant_traits(t->type)->name, e);
            assert_true(e < bound && e > 0);
        }
        gguf_close(g);
    }
    gguf_close(src);
}

/* test-small (ff 1376 = 43 x 32): every tensor whose rows are whole 256-blocks is a real
 * K-quant in Q4_K_M; the 1376-wide ffn_down rows take llama.cpp's fallbacks. */
static void test_quantize_test_small_plan(void **state)
{
    (void)state;
    struct model_gen_opts o;
    memset(&o, 0, sizeof o);
    assert_int_equal(model_gen_shape_get("test-small", &o.shape), 0);
    o.vocab_path = test_model_path("stories260K.gguf");
    o.ftype = QUANTIZE_FT_F16;
    o.seed = 1;
    o.n_threads = 2;
    const char *path = tmp_path("test-small-f16.gguf");
    gen_ok(&o, path);
    struct gguf *g = open_path(path);
    struct quantize_plan_entry *plan;
    int64_t n;
    char err[256];
    assert_int_equal(quantize_plan(g, QUANTIZE_FT_Q4_K_M, &plan, &n, err, sizeof err), 0);
    assert_int_equal(n, 3 + 9 * 8);
    int n_q6k = 0, n_q4k = 0;
    for (int64_t i = 0; i < n; i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, plan[i].src);
        int layer = -1;
        sscanf(plan[i].name, "blk.%d.", &layer);
        /* 8 layers: use_more_bits for layers 0, 3, 6, 7 */
        bool more = layer == 0 || layer == 3 || layer == 6 || layer == 7;
        if (t->n_dims == 1) {
            assert_int_equal(plan[i].type_out, QT_F32);
        } else if (strstr(plan[i].name, "ffn_down")) {
            assert_int_equal(plan[i].type_out, more ? QT_Q8_0 : QT_Q5_0);
        } else if (!strcmp(plan[i].name, "output.weight") || (strstr(plan[i].name, "attn_v") && more)) {
            assert_int_equal(plan[i].type_out, QT_Q6_K);
            n_q6k++;
        } else {
            assert_true(t->ne[0] % 256 == 0);
            assert_int_equal(plan[i].type_out, QT_Q4_K);
            n_q4k++;
        }
    }
    assert_int_equal(n_q6k, 5);
    assert_int_equal(n_q4k, 1 + 8 * 5 + 4);
    quantize_plan_free(plan, n);
    gguf_close(g);
}

static void test_model_gen_deterministic_and_sane(void **state)
{
    (void)state;
    struct model_gen_opts o = small_opts();
    const char *a = tmp_path("det-a.gguf"), *b = tmp_path("det-b.gguf");
    gen_ok(&o, a);
    o.n_threads = 1;
    gen_ok(&o, b);
    assert_true(files_equal(a, b)); /* independent of the thread count */
    o.seed = 8;
    gen_ok(&o, b);
    assert_false(files_equal(a, b));

    struct gguf *g = open_path(a);
    assert_int_equal(gguf_get_u32_or(g, "llama.embedding_length", 0), 256);
    assert_int_equal(gguf_get_u32_or(g, "llama.block_count", 0), 2);
    assert_int_equal(gguf_get_u32_or(g, "llama.attention.head_count_kv", 0), 2);
    assert_int_equal(gguf_get_u32_or(g, "llama.rope.dimension_count", 0), 64);
    assert_int_equal(gguf_get_u32_or(g, "general.file_type", 0), QUANTIZE_FT_F16);
    assert_int_equal(gguf_get_u32_or(g, "tokenizer.ggml.bos_token_id", 0), 1);
    assert_int_equal(gguf_tensor_count(g), 3 + 9 * 2);
    /* Matrices ~ N(0, 0.02), norms ~ 1 + N(0, 0.02). */
    const struct gguf_tensor *t = gguf_find_tensor(g, "blk.1.ffn_up.weight");
    assert_int_equal(t->type, QT_F16);
    assert_int_equal(t->ne[0], 256);
    assert_int_equal(t->ne[1], 512);
    double s = 0, ss = 0;
    for (int64_t i = 0; i < t->n_elems; i++) {
        uint16_t h;
        memcpy(&h, (const char *)t->data + 2 * i, 2);
        double v = quant_f16_to_f32(h);
        s += v;
        ss += v * v;
    }
    double mean = s / (double)t->n_elems, sd = sqrt(ss / (double)t->n_elems - mean * mean);
    assert_true(fabs(mean) < 0.001);
    assert_true(fabs(sd - 0.02) < 0.001);
    t = gguf_find_tensor(g, "output_norm.weight");
    assert_int_equal(t->type, QT_F32);
    float f[256];
    memcpy(f, t->data, sizeof f);
    s = 0;
    for (int i = 0; i < 256; i++) s += f[i];
    assert_true(fabs(s / 256 - 1.0) < 0.01);
    gguf_close(g);
}

static void test_model_gen_pads_vocab_and_writes_qwen2(void **state)
{
    (void)state;
    struct model_gen_opts o = small_opts();
    snprintf(o.shape.arch, sizeof o.shape.arch, "qwen2");
    o.shape.tied_output = true;
    o.shape.n_vocab = 600;
    const char *p = tmp_path("qwen.gguf");
    gen_ok(&o, p);
    assert_int_equal(o.n_vocab_file, 512);
    assert_int_equal(o.n_vocab_padded, 600);
    struct gguf *g = open_path(p);
    struct gguf_str s;
    assert_int_equal(gguf_get_str(g, "general.architecture", &s), 0);
    assert_memory_equal(s.ptr, "qwen2", 5);
    assert_int_equal(gguf_get_u32_or(g, "qwen2.block_count", 0), 2);
    enum gguf_vtype et;
    uint64_t n;
    const void *data;
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data), 0);
    assert_int_equal(n, 600);
    assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 512, &s), 0);
    assert_int_equal(s.len, 6);
    assert_memory_equal(s.ptr, "[PAD0]", 6);
    assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 300, &s), 0);
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n, &data), 0);
    assert_int_equal(n, 600);
    float sc;
    memcpy(&sc, (const char *)data + 4 * 599, 4);
    assert_float_equal(sc, -1000.0f, 0);
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n, &data), 0);
    int32_t tt;
    memcpy(&tt, (const char *)data + 4 * 550, 4);
    assert_int_equal(tt, 5);
    memcpy(&tt, (const char *)data + 4 * 3, 4);
    assert_int_equal(tt, 6); /* a real byte token is kept */
    assert_null(gguf_find_tensor(g, "output.weight"));
    const struct gguf_tensor *t = gguf_find_tensor(g, "blk.0.attn_k.bias");
    assert_non_null(t);
    assert_int_equal(t->n_dims, 1);
    assert_int_equal(t->ne[0], 128);
    assert_int_equal(gguf_find_tensor(g, "token_embd.weight")->ne[1], 600);
    gguf_close(g);

    /* Too large a vocab for the shape is refused. */
    o.shape.n_vocab = 100;
    char err[256];
    assert_int_equal(model_gen_write(&o, tmp_path("bad.gguf"), err, sizeof err), MESH_EINVAL);
    assert_non_null(strstr(err, "512 tokens"));
    o.shape.n_head = 3;
    assert_int_equal(model_gen_write(&o, tmp_path("bad.gguf"), err, sizeof err), MESH_EINVAL);
}

/* Named shapes, llama-3 rope factors, and files the engine's loader accepts. */
static void test_model_gen_shapes_and_loader(void **state)
{
    (void)state;
    struct model_gen_shape sh;
    assert_int_equal(model_gen_shape_get("tinyllama-1.1b", &sh), 0);
    assert_int_equal(model_gen_param_count(&sh, sh.n_vocab), 1100048384);
    assert_int_equal(model_gen_shape_get("llama-3.2-1b", &sh), 0);
    assert_int_equal(model_gen_param_count(&sh, sh.n_vocab), 1235814400);
    assert_int_equal(model_gen_shape_get("qwen2.5-0.5b", &sh), 0);
    assert_int_equal(model_gen_param_count(&sh, sh.n_vocab), 494032768);
    assert_int_equal(model_gen_shape_get("nope", &sh), MESH_ENOTFOUND);

    struct model_gen_opts o = small_opts();
    o.shape.tied_output = true;
    o.shape.rope_theta = 500000.0f;
    o.shape.rope_l3_factor = 32.0f;
    o.shape.rope_l3_low_freq = 1.0f;
    o.shape.rope_l3_high_freq = 4.0f;
    o.shape.rope_l3_orig_ctx = 8192;
    o.ftype = QUANTIZE_FT_Q8_0;
    const char *p = tmp_path("l3.gguf");
    gen_ok(&o, p);
    struct gguf *g = open_path(p);
    const struct gguf_tensor *t = gguf_find_tensor(g, "rope_freqs.weight");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 32);
    float f[32];
    memcpy(f, t->data, sizeof f);
    assert_float_equal(f[0], 1.0f, 0);   /* high frequencies unscaled */
    assert_float_equal(f[31], 32.0f, 0); /* low frequencies scaled by the factor */
    assert_true(f[16] > 1.0f && f[16] < 32.0f);
    assert_int_equal(gguf_find_tensor(g, "token_embd.weight")->type, QT_Q8_0);
    assert_int_equal(gguf_get_u32_or(g, "general.file_type", 0), QUANTIZE_FT_Q8_0);
    gguf_close(g);

    struct model *m = NULL;
    char err[512] = "";
    int rc = model_load(p, NULL, &m, err, sizeof err);
    if (rc) print_error("%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(model_hparams(m)->n_layer, 2);
    assert_true(model_hparams(m)->tied_output);
    model_free(m);
}

/* Runs a shell command line; returns its exit status and its stdout+stderr in out. */
static int run_cmd(const char *cmd, char *out, size_t cap)
{
    char full[2048];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* meshllm quantize / info as a user runs them (skipped when the binary is not built). */
static void test_quantize_cli(void **state)
{
    (void)state;
    const char *bin = getenv("MESHLLM_BIN");
    if (!bin || access(bin, X_OK) != 0) skip();
    static char out[1 << 16];
    char cmd[1600];
    const char *q = tmp_path("cli-q8.gguf");
    snprintf(cmd, sizeof cmd, "'%s' quantize '%s' '%s' q8_0 -t 2", bin, test_model_path("stories260K.gguf"), q);
    assert_int_equal(run_cmd(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "tensor 48/48"));
    assert_non_null(strstr(out, "100.0%"));
    snprintf(cmd, sizeof cmd, "'%s' info '%s'", bin, q);
    assert_int_equal(run_cmd(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "architecture:    llama"));
    assert_non_null(strstr(out, "file type:       Q8_0"));
    assert_non_null(strstr(out, "blk.4.ffn_down.weight"));
    assert_non_null(strstr(out, "tokenizer:       llama, pre (default), 512 tokens, bos 1, eos 2"));
    snprintf(cmd, sizeof cmd, "'%s' info --json --no-tensors '%s'", bin, q);
    assert_int_equal(run_cmd(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "\"parameters\":\t292800"));
    assert_null(strstr(out, "\"tensors\""));
    snprintf(cmd, sizeof cmd, "'%s' quantize --dry-run '%s' Q4_K_M", bin, test_model_path("stories260K.gguf"));
    assert_int_equal(run_cmd(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "output.weight"));
    assert_non_null(strstr(out, "-> Q8_0"));
    snprintf(cmd, sizeof cmd, "'%s' quantize --help", bin);
    assert_int_equal(run_cmd(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "usage: meshllm quantize"));
    snprintf(cmd, sizeof cmd, "'%s' info --help", bin);
    assert_int_equal(run_cmd(cmd, out, sizeof out), 0);
    snprintf(cmd, sizeof cmd, "'%s' quantize onlyone", bin);
    assert_int_equal(run_cmd(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "'%s' quantize a b NOPE", bin);
    assert_int_equal(run_cmd(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "'%s' info --bogus x", bin);
    assert_int_equal(run_cmd(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "'%s' quantize '%s' '%s' Q8_0", bin, tmp_path("none.gguf"), tmp_path("o.gguf"));
    assert_int_equal(run_cmd(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "meshllm: quantize: "));
    snprintf(cmd, sizeof cmd, "'%s' info '%s'", bin, tmp_path("none.gguf"));
    assert_int_equal(run_cmd(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "meshllm: info: "));
}

int main(void)
{
    quant_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantize_ftype_names),
        cmocka_unit_test(test_quantize_plan_matches_llamacpp),
        cmocka_unit_test(test_quantize_stories_byte_identical_to_llamacpp),
        cmocka_unit_test(test_quantize_block_types_within_error_bound),
        cmocka_unit_test(test_quantize_refuses_requantize_and_bad_input),
        cmocka_unit_test(test_quantize_reports_progress),
        cmocka_unit_test(test_quantize_k_quants_are_real_k_quants),
        cmocka_unit_test(test_quantize_test_small_plan),
        cmocka_unit_test(test_model_gen_deterministic_and_sane),
        cmocka_unit_test(test_model_gen_pads_vocab_and_writes_qwen2),
        cmocka_unit_test(test_model_gen_shapes_and_loader),
        cmocka_unit_test(test_quantize_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
