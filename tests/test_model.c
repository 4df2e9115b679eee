/* test_model.c - the forward pass against reference outputs (../shared/models/reference):
 * logits of llama.cpp-independent float32 reference, greedy ids of llama2.c and llama.cpp
 * on stories260K and its F16/BF16/Q8_0/Q5_0 variants; and the engine's own invariants:
 * a layer range split equals the whole, a batch equals token-by-token, sequences sharing
 * a batch equal sequences run alone, bad batches are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/quant.h"
#include "engine/tok.h"
#include "tests/util/test_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct model *load(const char *file)
{
    char err[512] = "";
    struct model *m = NULL;
    int rc = model_load(test_model_path(file), NULL, &m, err, sizeof err);
    if (rc < 0) fail_msg("model_load(%s): %s", file, err);
    return m;
}

static struct model_ctx *ctx_new(const struct model *m, enum model_kv_type kv, int lb, int le,
                                 int n_seq)
{
    struct model_ctx_params p;
    model_ctx_params_default(&p);
    p.n_ctx = 512;
    p.n_batch = 64;
    p.n_threads = 2;
    p.k_type = p.v_type = kv;
    p.layer_begin = lb;
    p.layer_end = le;
    p.n_seq = n_seq;
    char err[256] = "";
    struct model_ctx *c = NULL;
    if (model_ctx_new(m, &p, &c, err, sizeof err) < 0) fail_msg("model_ctx_new: %s", err);
    return c;
}

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* Greedy: decodes prompt as one batch, then n_gen tokens; writes ids to out. */
static void greedy(struct model_ctx *c, int n_vocab, const int32_t *prompt, int n_prompt,
                   int n_gen, int32_t *out)
{
    float *logits = malloc((size_t)n_vocab * sizeof(float));
    int32_t pos[64];
    assert_true(n_prompt <= 64);
    for (int i = 0; i < n_prompt; i++) pos[i] = i;
    struct model_batch b = {.n = n_prompt, .tokens = prompt, .pos = pos};
    assert_int_equal(model_decode(c, &b, logits), 0);
    for (int i = 0; i < n_gen; i++) {
        int32_t tok = argmax(logits, n_vocab);
        int32_t p = n_prompt + i;
        out[i] = tok;
        struct model_batch b1 = {.n = 1, .tokens = &tok, .pos = &p};
        if (i + 1 < n_gen) assert_int_equal(model_decode(c, &b1, logits), 0);
    }
    free(logits);
}

static int json_ids(const cJSON *arr, int32_t *out, int cap)
{
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        if (n < cap) out[n] = (int32_t)e->valuedouble;
        n++;
    }
    return n;
}

static cJSON *load_json(const char *rel)
{
    size_t len;
    char *txt = test_read_file(test_model_path(rel), &len);
    if (!txt) fail_msg("cannot read %s", rel);
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    assert_non_null(j);
    return j;
}

/* Logits of the first 16 positions equal the float32 reference within 1e-4 (F32 cache). */
static void test_model_logits_match_reference(void **state)
{
    (void)state;
    cJSON *meta = load_json("reference/stories260K.logits.greedy-empty.pos0-15.json");
    int32_t ids[16];
    assert_int_equal(json_ids(cJSON_GetObjectItem(meta, "input_ids"), ids, 16), 16);
    cJSON_Delete(meta);
    size_t len;
    float *ref = (float *)test_read_file(
        test_model_path("reference/stories260K.logits.greedy-empty.pos0-15.f32"), &len);
    assert_non_null(ref);
    assert_int_equal(len, 16 * 512 * sizeof(float));

    struct model *m = load("stories260K.gguf");
    assert_int_equal(model_hparams(m)->n_vocab, 512);
    /* token by token, and all 16 in one batch with logits for every position */
    for (int mode = 0; mode < 2; mode++) {
        struct model_ctx *c = ctx_new(m, MODEL_KV_F32, 0, 0, 1);
        float *logits = malloc(16 * 512 * sizeof(float));
        int32_t pos[16];
        bool want[16];
        for (int i = 0; i < 16; i++) pos[i] = i, want[i] = true;
        if (mode == 0) {
            for (int i = 0; i < 16; i++) {
                struct model_batch b = {.n = 1, .tokens = &ids[i], .pos = &pos[i]};
                assert_int_equal(model_decode(c, &b, logits + i * 512), 0);
            }
        } else {
            struct model_batch b = {.n = 16, .tokens = ids, .pos = pos, .want_logits = want};
            assert_int_equal(model_decode(c, &b, logits), 0);
        }
        float max_diff = 0.0f;
        for (int i = 0; i < 16 * 512; i++) {
            float d = fabsf(logits[i] - ref[i]);
            if (d > max_diff) max_diff = d;
        }
        if (max_diff > 1e-4f) fail_msg("mode %d: max |logit - reference| = %g > 1e-4", mode, (double)max_diff);
        free(logits);
        model_ctx_free(c);
    }
    free(ref);
    model_free(m);
}

/* Greedy ids equal llama2.c's (F32 weights) for its greedy reference runs. */
static void test_model_greedy_matches_llama2c(void **state)
{
    (void)state;
    cJSON *j = load_json("reference/stories260K.generations.json");
    struct model *m = load("stories260K.gguf");
    const cJSON *cs;
    int n_checked = 0;
    cJSON_ArrayForEach(cs, cJSON_GetObjectItem(j, "cases"))
    {
        if (cJSON_GetObjectItem(cs, "temperature")->valuedouble != 0.0) continue;
        int32_t prompt[64], want[300], got[300];
        int n_prompt = json_ids(cJSON_GetObjectItem(cs, "prompt_ids"), prompt, 64);
        int n_gen = json_ids(cJSON_GetObjectItem(cs, "generated_ids"), want, 300);
        assert_true(n_gen <= 300 && n_prompt + n_gen <= 512);
        for (int kv = 0; kv < 2; kv++) {
            struct model_ctx *c = ctx_new(m, kv ? MODEL_KV_F32 : MODEL_KV_F16, 0, 0, 1);
            greedy(c, 512, prompt, n_prompt, n_gen, got);
            for (int i = 0; i < n_gen; i++)
                if (got[i] != want[i])
                    fail_msg("%s (kv %s): token %d is %d, llama2.c has %d",
                             cJSON_GetObjectItem(cs, "id")->valuestring, kv ? "f32" : "f16", i,
                             got[i], want[i]);
            model_ctx_free(c);
        }
        n_checked++;
    }
    assert_int_equal(n_checked, 3);
    model_free(m);
    cJSON_Delete(j);
}

/* Greedy ids agree with llama.cpp's run of the same file at least as far as llama.cpp's
 * own run of that file agrees with F32 (all 200/60 for F32 and F16). */
static void test_model_greedy_matches_llamacpp_variants(void **state)
{
    (void)state;
    cJSON *j = load_json("reference/stories260K.llamacpp-greedy.json");
    const cJSON *v;
    int n_runs = 0;
    cJSON_ArrayForEach(v, cJSON_GetObjectItem(j, "variants"))
    {
        const char *file = cJSON_GetObjectItem(v, "file")->valuestring;
        struct model *m = load(file);
        const cJSON *r;
        cJSON_ArrayForEach(r, cJSON_GetObjectItem(v, "runs"))
        {
            int32_t prompt[64], want[300], got[300];
            int n_prompt = json_ids(cJSON_GetObjectItem(r, "prompt_ids"), prompt, 64);
            int n_gen = json_ids(cJSON_GetObjectItem(r, "generated_ids"), want, 300);
            int need = (int)cJSON_GetObjectItem(r, "tokens_equal_to_f32_reference")->valuedouble;
            struct model_ctx *c = ctx_new(m, MODEL_KV_F16, 0, 0, 1);
            greedy(c, 512, prompt, n_prompt, n_gen, got);
            int same = 0;
            while (same < n_gen && got[same] == want[same]) same++;
            print_message("  %-24s prompt %d tokens: %d/%d ids equal llama.cpp's (need %d)\n",
                          file, n_prompt, same, n_gen, need);
            if (same < need)
                fail_msg("%s: only the first %d ids equal llama.cpp's, need %d", file, same, need);
            model_ctx_free(c);
            n_runs++;
        }
        model_free(m);
    }
    assert_int_equal(n_runs, 10);
    cJSON_Delete(j);
}

/* Layers [0,k) in one context then [k,n) in another give exactly the full model's logits. */
static void test_model_layer_split_equals_full(void **state)
{
    (void)state;
    struct model *m = load("stories260K-Q4_K_M.gguf");
    const struct model_hparams *hp = model_hparams(m);
    int32_t toks[8] = {1, 403, 407, 261, 378, 432, 383, 286};
    int32_t pos[8];
    for (int i = 0; i < 8; i++) pos[i] = i;
    for (int k = 1; k < hp->n_layer; k++) {
        struct model_ctx *full = ctx_new(m, MODEL_KV_F16, 0, 0, 1);
        struct model_ctx *a = ctx_new(m, MODEL_KV_F16, 0, k, 1);
        struct model_ctx *b = ctx_new(m, MODEL_KV_F16, k, hp->n_layer, 1);
        float want[512], got[512];
        float *x = malloc(sizeof(float) * 8 * (size_t)hp->n_embd);
        /* prompt of 5 as a batch, then 3 single tokens */
        for (int step = 0; step < 4; step++) {
            int off = step == 0 ? 0 : 4 + step, n = step == 0 ? 5 : 1;
            struct model_batch bt = {.n = n, .tokens = toks + off, .pos = pos + off};
            assert_int_equal(model_decode(full, &bt, want), 0);
            assert_int_equal(model_embed(a, toks + off, n, x), 0);
            assert_int_equal(model_layers(a, &bt, x), 0);
            assert_int_equal(model_layers(b, &bt, x), 0);
            assert_int_equal(model_head(b, x + (size_t)(n - 1) * hp->n_embd, 1, got), 0);
            assert_memory_equal(want, got, sizeof want);
        }
        free(x);
        model_ctx_free(full);
        model_ctx_free(a);
        model_ctx_free(b);
    }
    model_free(m);
}

/* Two sequences interleaved in one batch give the same logits as each run alone. */
static void test_model_sequences_share_a_batch(void **state)
{
    (void)state;
    struct model *m = load("stories260K-F16.gguf");
    int32_t s0[6] = {1, 403, 407, 261, 378, 432}, s1[6] = {1, 291, 276, 286, 261, 370};
    float alone[2][6][512];
    for (int s = 0; s < 2; s++) {
        struct model_ctx *c = ctx_new(m, MODEL_KV_F16, 0, 0, 1);
        for (int i = 0; i < 6; i++) {
            int32_t p = i;
            struct model_batch b = {.n = 1, .tokens = s ? &s1[i] : &s0[i], .pos = &p};
            assert_int_equal(model_decode(c, &b, alone[s][i]), 0);
        }
        model_ctx_free(c);
    }
    struct model_ctx *c = ctx_new(m, MODEL_KV_F16, 0, 0, 2);
    /* first 3 tokens of both in one batch, then pairs */
    int32_t toks[6] = {s0[0], s1[0], s0[1], s1[1], s0[2], s1[2]};
    int32_t pos[6] = {0, 0, 1, 1, 2, 2}, seq[6] = {0, 1, 0, 1, 0, 1};
    bool want[6] = {1, 1, 1, 1, 1, 1};
    float out[6][512];
    struct model_batch b = {.n = 6, .tokens = toks, .pos = pos, .seq = seq, .want_logits = want};
    assert_int_equal(model_decode(c, &b, out[0]), 0);
    for (int i = 0; i < 6; i++) assert_memory_equal(out[i], alone[i % 2][i / 2], sizeof out[i]);
    for (int i = 3; i < 6; i++) {
        int32_t t2[2] = {s0[i], s1[i]}, p2[2] = {i, i}, q2[2] = {0, 1};
        bool w2[2] = {1, 1};
        struct model_batch b2 = {.n = 2, .tokens = t2, .pos = p2, .seq = q2, .want_logits = w2};
        assert_int_equal(model_decode(c, &b2, out[0]), 0);
        assert_memory_equal(out[0], alone[0][i], sizeof out[0]);
        assert_memory_equal(out[1], alone[1][i], sizeof out[1]);
    }
    assert_int_equal(model_kv_seq_len(c, 0), 6);
    /* truncating a sequence and decoding again reproduces the same logits */
    model_kv_seq_truncate(c, 1, 4);
    int32_t t4 = s1[4], p4 = 4, q4 = 1;
    struct model_batch b4 = {.n = 1, .tokens = &t4, .pos = &p4, .seq = &q4};
    assert_int_equal(model_decode(c, &b4, out[0]), 0);
    assert_memory_equal(out[0], alone[1][4], sizeof out[0]);
    model_ctx_free(c);
    model_free(m);
}

static void test_model_rejects_bad_batches(void **state)
{
    (void)state;
    struct model *m = load("stories260K.gguf");
    struct model_ctx_params p;
    model_ctx_params_default(&p);
    p.n_ctx = 4;
    p.n_threads = 1;
    struct model_ctx *c = NULL;
    char err[256];
    assert_int_equal(model_ctx_new(m, &p, &c, err, sizeof err), 0);
    float logits[512];
    int32_t tok = 1, pos = 1, bad_tok = 512, seq = 1;
    struct model_batch b = {.n = 1, .tokens = &tok, .pos = &pos};
    assert_int_equal(model_decode(c, &b, logits), MESH_EINVAL); /* gap: cache is empty */
    pos = 0;
    b.tokens = &bad_tok;
    assert_int_equal(model_decode(c, &b, logits), MESH_EINVAL); /* id past the vocabulary */
    b.tokens = &tok;
    b.seq = &seq;
    assert_int_equal(model_decode(c, &b, logits), MESH_EINVAL); /* no such sequence */
    b.seq = NULL;
    for (pos = 0; pos < 4; pos++) assert_int_equal(model_decode(c, &b, logits), 0);
    assert_int_equal(model_decode(c, &b, logits), MESH_EFULL);
    model_ctx_free(c);
    /* a layer range outside the model */
    p.layer_begin = 2;
    p.layer_end = 9;
    assert_int_equal(model_ctx_new(m, &p, &c, err, sizeof err), MESH_EINVAL);
    assert_null(c);
    model_free(m);
}

static void test_model_refuses_vocab_only_file(void **state)
{
    (void)state;
    char err[512] = "";
    struct model *m = NULL;
    int rc = model_load(test_model_path("llamacpp-vocab/ggml-vocab-llama-spm.gguf"), NULL, &m,
                        err, sizeof err);
    assert_int_equal(rc, MESH_EBADMODEL);
    assert_null(m);
    assert_non_null(strstr(err, "no tensors"));
    rc = model_load(test_model_path("llamacpp-vocab/ggml-vocab-gpt-2.gguf"), NULL, &m, err,
                    sizeof err);
    assert_int_equal(rc, MESH_EUNSUPPORTED);
    assert_non_null(strstr(err, "architecture 'gpt2' is not supported"));
    rc = model_load("/nonexistent/model.gguf", NULL, &m, err, sizeof err);
    assert_true(rc < 0);
    assert_non_null(strstr(err, "/nonexistent/model.gguf"));
}

/* Writes a copy of stories260K.gguf whose token_embd and output matrices carry n_pad
 * extra rows of large values past the vocabulary, as some converters pad them. */
static void write_padded_model(const char *path, int n_pad)
{
    char err[512] = "";
    struct gguf *g = NULL;
    struct gguf_writer *w = NULL;
    float *pad[2] = {NULL, NULL};
    int n_padded = 0;
    assert_int_equal(gguf_open(test_model_path("stories260K.gguf"), &g, err, sizeof err), 0);
    assert_int_equal(gguf_writer_new(&w), 0);
    for (int64_t i = 0; i < gguf_kv_count(g); i++) assert_int_equal(gguf_writer_copy_kv(w, g, i), 0);
    for (int64_t i = 0; i < gguf_tensor_count(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        int64_t ne[2] = {t->ne[0], t->ne[1]};
        const void *data = t->data;
        if (!strcmp(name, "token_embd.weight") || !strcmp(name, "output.weight")) {
            assert_int_equal(t->type, QT_F32);
            float *p = malloc((size_t)(ne[1] + n_pad) * (size_t)ne[0] * sizeof *p);
            assert_non_null(p);
            memcpy(p, t->data, t->size);
            for (int64_t k = ne[1] * ne[0]; k < (ne[1] + n_pad) * ne[0]; k++) p[k] = 100.0f;
            ne[1] += n_pad;
            data = pad[n_padded++] = p;
        }
        assert_true(gguf_writer_add_tensor(w, name, t->type, t->n_dims, ne, data) >= 0);
    }
    assert_int_equal(n_padded, 2);
    assert_int_equal(gguf_writer_write(w, path, NULL, NULL, err, sizeof err), 0);
    gguf_writer_free(w);
    free(pad[0]);
    free(pad[1]);
    gguf_close(g);
}

/* Writes a copy of stories260K.gguf with llama3 RoPE scaling keys (low/high frequency
 * factors as given, factor 8, original context 8192). */
static void write_l3_scaled_model(const char *path, float low, float high)
{
    char err[512] = "";
    struct gguf *g = NULL;
    struct gguf_writer *w = NULL;
    assert_int_equal(gguf_open(test_model_path("stories260K.gguf"), &g, err, sizeof err), 0);
    assert_int_equal(gguf_writer_new(&w), 0);
    for (int64_t i = 0; i < gguf_kv_count(g); i++) assert_int_equal(gguf_writer_copy_kv(w, g, i), 0);
    assert_int_equal(gguf_writer_set_str(w, "llama.rope.scaling.type", "llama3"), 0);
    assert_int_equal(gguf_writer_set_f32(w, "llama.rope.scaling.factor", 8.0f), 0);
    assert_int_equal(gguf_writer_set_f32(w, "llama.rope.scaling.low_freq_factor", low), 0);
    assert_int_equal(gguf_writer_set_f32(w, "llama.rope.scaling.high_freq_factor", high), 0);
    assert_int_equal(gguf_writer_set_u32(w, "llama.rope.scaling.original_context_length", 8192), 0);
    for (int64_t i = 0; i < gguf_tensor_count(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        assert_true(gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data) >= 0);
    }
    assert_int_equal(gguf_writer_write(w, path, NULL, NULL, err, sizeof err), 0);
    gguf_writer_free(w);
    gguf_close(g);
}

/* llama3 RoPE scaling keys that would divide by zero (low == high) or by a negative
 * frequency factor are refused at load with a message, not turned into NaN logits. */
static void test_model_rejects_bad_llama3_rope_scaling(void **state)
{
    (void)state;
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/test_model_l3.gguf", test_tmp_dir());
    struct model *m = NULL;
    write_l3_scaled_model(path, 1.0f, 4.0f); /* Llama 3.1's own values load */
    int rc = model_load(path, NULL, &m, err, sizeof err);
    if (rc < 0) fail_msg("model_load(llama3 scaling): %s", err);
    model_free(m);
    const float bad[][2] = {{4.0f, 4.0f}, {-1.0f, 4.0f}, {4.0f, 1.0f}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_l3_scaled_model(path, bad[i][0], bad[i][1]);
        m = NULL;
        err[0] = 0;
        assert_int_equal(model_load(path, NULL, &m, err, sizeof err), MESH_EBADMODEL);
        assert_null(m);
        assert_non_null(strstr(err, "llama3 rope scaling"));
    }
    remove(path);
}

/* Rows of the embedding and output past the vocabulary are ignored: the model has the
 * tokenizer's vocabulary (so no id without a piece is ever sampled) and the same logits. */
static void test_model_padded_embedding_keeps_the_vocab(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/test_model_padded.gguf", test_tmp_dir());
    write_padded_model(path, 8);
    char err[512] = "";
    struct model *pm = NULL;
    int rc = model_load(path, NULL, &pm, err, sizeof err);
    if (rc < 0) fail_msg("model_load(padded): %s", err);
    struct model *m = load("stories260K.gguf");
    int n_vocab = model_hparams(m)->n_vocab;
    assert_int_equal(model_hparams(pm)->n_vocab, tok_n_vocab(model_tok(pm)));
    assert_int_equal(model_hparams(pm)->n_vocab, n_vocab);
    struct model_ctx *c = ctx_new(m, MODEL_KV_F32, 0, 0, 1);
    struct model_ctx *pc = ctx_new(pm, MODEL_KV_F32, 0, 0, 1);
    float *a = malloc((size_t)n_vocab * sizeof *a), *b = malloc((size_t)n_vocab * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    int32_t toks[3] = {1, 403, 407};
    for (int i = 0; i < 3; i++) {
        int32_t pos = i;
        struct model_batch bt = {.n = 1, .tokens = &toks[i], .pos = &pos};
        assert_int_equal(model_decode(c, &bt, a), 0);
        assert_int_equal(model_decode(pc, &bt, b), 0);
        assert_memory_equal(a, b, (size_t)n_vocab * sizeof *a);
    }
    /* an id in the padding is not a token */
    int32_t bad = n_vocab, pos = 3;
    struct model_batch bt = {.n = 1, .tokens = &bad, .pos = &pos};
    assert_int_equal(model_decode(pc, &bt, b), MESH_EINVAL);
    free(a);
    free(b);
    model_ctx_free(pc);
    model_ctx_free(c);
    model_free(pm);
    model_free(m);
    remove(path);
}

int main(void)
{
    quant_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_logits_match_reference),
        cmocka_unit_test(test_model_greedy_matches_llama2c),
        cmocka_unit_test(test_model_greedy_matches_llamacpp_variants),
        cmocka_unit_test(test_model_layer_split_equals_full),
        cmocka_unit_test(test_model_sequences_share_a_batch),
        cmocka_unit_test(test_model_rejects_bad_batches),
        cmocka_unit_test(test_model_refuses_vocab_only_file),
        cmocka_unit_test(test_model_padded_embedding_keeps_the_vocab),
        cmocka_unit_test(test_model_rejects_bad_llama3_rope_scaling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
