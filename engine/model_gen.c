/* model_gen.c - random-weight GGUF models of realistic shape (see model_gen.h).
 *
 * Tensor names and shapes follow llama.cpp's LLM_ARCH_LLAMA / LLM_ARCH_QWEN2 layouts
 * (ne[0] = input width); metadata keys follow gguf-py's constants. Each row of each
 * tensor is drawn from its own splitmix64 stream keyed by (seed, tensor name, row), so
 * the bytes do not depend on chunking or thread count. Not done: MoE, other archs.
 */
#include "engine/model_gen.h"

#include "core/err.h"
#include "core/pool.h"
#include "engine/gguf.h"
#include "engine/quant.h"
#include "engine/quantize.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MG_TOKEN_UNUSED = 5 }; /* llama.cpp's LLAMA_TOKEN_TYPE_UNUSED */

static const struct model_gen_shape g_shapes[] = {
    {.name = "tinyllama-1.1b", .arch = "llama", .n_embd = 2048, .n_layer = 22, .n_head = 32, .n_head_kv = 4,
     .n_ff = 5632, .n_vocab = 32000, .n_ctx = 2048, .rope_theta = 10000.0f, .rms_eps = 1e-5f},
    {.name = "llama-3.2-1b", .arch = "llama", .n_embd = 2048, .n_layer = 16, .n_head = 32, .n_head_kv = 8,
     .n_ff = 8192, .n_vocab = 128256, .n_ctx = 131072, .tied_output = true, .rope_theta = 500000.0f,
     .rms_eps = 1e-5f, .rope_l3_factor = 32.0f, .rope_l3_low_freq = 1.0f, .rope_l3_high_freq = 4.0f,
     .rope_l3_orig_ctx = 8192},
    {.name = "qwen2.5-0.5b", .arch = "qwen2", .n_embd = 896, .n_layer = 24, .n_head = 14, .n_head_kv = 2,
     .n_ff = 4864, .n_vocab = 151936, .n_ctx = 32768, .tied_output = true, .rope_theta = 1000000.0f,
     .rms_eps = 1e-6f},
    {.name = "test-small", .arch = "llama", .n_embd = 512, .n_layer = 8, .n_head = 8, .n_head_kv = 4,
     .n_ff = 1376, .n_vocab = 0, .n_ctx = 2048, .rope_theta = 10000.0f, .rms_eps = 1e-5f},
};
enum { N_SHAPES = sizeof g_shapes / sizeof g_shapes[0] };

int model_gen_shape_get(const char *name, struct model_gen_shape *out)
{
    for (int i = 0; i < N_SHAPES; i++) {
        if (name && !strcmp(name, g_shapes[i].name)) {
            *out = g_shapes[i];
            return 0;
        }
    }
    return MESH_ENOTFOUND;
}

const char *model_gen_shape_names(void)
{
    return "tinyllama-1.1b llama-3.2-1b qwen2.5-0.5b test-small";
}

int model_gen_shape_check(const struct model_gen_shape *s, char *err, size_t err_cap)
{
    if (strcmp(s->arch, "llama") != 0 && strcmp(s->arch, "qwen2") != 0)
        return err_set(err, err_cap, MESH_EINVAL, "architecture '%s' is not llama or qwen2", s->arch);
    if (s->n_embd <= 0 || s->n_layer <= 0 || s->n_head <= 0 || s->n_head_kv <= 0 || s->n_ff <= 0 ||
        s->n_vocab < 0 || s->n_ctx <= 0 || s->n_layer > 4096 || s->n_embd > (1 << 20) || s->n_ff > (1 << 22))
        return err_set(err, err_cap, MESH_EINVAL, "shape '%s': sizes must be positive (and sane)", s->name);
    if (s->n_embd % s->n_head != 0 || s->n_head % s->n_head_kv != 0)
        return err_set(err, err_cap, MESH_EINVAL,
                       "shape '%s': n_head %d must divide n_embd %d, and n_head_kv %d must divide n_head", s->name,
                       s->n_head, s->n_embd, s->n_head_kv);
    if ((s->n_embd / s->n_head) % 2 != 0)
        return err_set(err, err_cap, MESH_EINVAL, "shape '%s': head dimension must be even", s->name);
    if (!(s->rope_theta > 0) || !(s->rms_eps > 0))
        return err_set(err, err_cap, MESH_EINVAL, "shape '%s': rope_theta and rms_eps must be positive", s->name);
    return 0;
}

/* ---- tensor list ---------------------------------------------------------------------- */

enum mg_kind { MG_MATRIX, MG_NORM, MG_BIAS, MG_ROPE_FREQS };

struct mg_tensor {
    char name[64];
    enum mg_kind kind;
    int n_dims;
    int64_t ne[2];
    int type;
};

static void add_t(struct mg_tensor *t, int *n, const char *name, enum mg_kind kind, int64_t ne0, int64_t ne1,
                  int mat_type)
{
    struct mg_tensor *x = &t[(*n)++];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->kind = kind;
    x->ne[0] = ne0;
    x->ne[1] = ne1;
    x->n_dims = ne1 > 1 || kind == MG_MATRIX ? 2 : 1;
    x->type = kind == MG_MATRIX ? mat_type : QT_F32;
}

/* Fills t (capacity 4 + 12 * n_layer) in llama.cpp converter order; returns the count. */
static int build_tensors(const struct model_gen_shape *s, int n_vocab, int mat_type, struct mg_tensor *t)
{
    int n = 0;
    int head_dim = s->n_embd / s->n_head;
    int64_t q_dim = (int64_t)s->n_head * head_dim, kv_dim = (int64_t)s->n_head_kv * head_dim;
    bool qwen2 = !strcmp(s->arch, "qwen2");
    char nm[64];
    add_t(t, &n, "token_embd.weight", MG_MATRIX, s->n_embd, n_vocab, mat_type);
    if (s->rope_l3_factor > 0) add_t(t, &n, "rope_freqs.weight", MG_ROPE_FREQS, head_dim / 2, 1, mat_type);
    for (int l = 0; l < s->n_layer; l++) {
#define BLK(suffix, kind, a, b)                                                                                   \
    do {                                                                                                          \
        snprintf(nm, sizeof nm, "blk.%d.%s", l, suffix);                                                          \
        add_t(t, &n, nm, kind, a, b, mat_type);                                                                   \
    } while (0)
        BLK("attn_norm.weight", MG_NORM, s->n_embd, 1);
        BLK("attn_q.weight", MG_MATRIX, s->n_embd, q_dim);
        if (qwen2) BLK("attn_q.bias", MG_BIAS, q_dim, 1);
        BLK("attn_k.weight", MG_MATRIX, s->n_embd, kv_dim);
        if (qwen2) BLK("attn_k.bias", MG_BIAS, kv_dim, 1);
        BLK("attn_v.weight", MG_MATRIX, s->n_embd, kv_dim);
        if (qwen2) BLK("attn_v.bias", MG_BIAS, kv_dim, 1);
        BLK("attn_output.weight", MG_MATRIX, q_dim, s->n_embd);
        BLK("ffn_norm.weight", MG_NORM, s->n_embd, 1);
        BLK("ffn_gate.weight", MG_MATRIX, s->n_embd, s->n_ff);
        BLK("ffn_down.weight", MG_MATRIX, s->n_ff, s->n_embd);
        BLK("ffn_up.weight", MG_MATRIX, s->n_embd, s->n_ff);
#undef BLK
    }
    add_t(t, &n, "output_norm.weight", MG_NORM, s->n_embd, 1, mat_type);
    if (!s->tied_output) add_t(t, &n, "output.weight", MG_MATRIX, s->n_embd, n_vocab, mat_type);
    return n;
}

int64_t model_gen_param_count(const struct model_gen_shape *s, int n_vocab)
{
    struct mg_tensor *t = calloc((size_t)(4 + 12 * s->n_layer), sizeof *t);
    if (!t) return -1;
    int n = build_tensors(s, n_vocab, QT_F16, t);
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        if (t[i].kind != MG_ROPE_FREQS) total += t[i].ne[0] * t[i].ne[1];
    free(t);
    return total;
}

/* ---- random rows ---------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s) h = (h ^ (uint8_t)*s++) * 1099511628211ull;
    return h;
}

/* n samples of N(0, sigma) (Box-Muller) from the stream of (key, row). */
static void gauss_row(uint64_t key, int64_t row, float sigma, float *out, int64_t n)
{
    uint64_t st = key ^ ((uint64_t)row * 0xd1b54a32d192ed03ull);
    splitmix64(&st);
    for (int64_t i = 0; i < n; i += 2) {
        double u1 = ((double)(splitmix64(&st) >> 11) + 1.0) * (1.0 / 9007199254740993.0); /* (0, 1] */
        double u2 = (double)(splitmix64(&st) >> 11) * (1.0 / 9007199254740992.0);
        double r = sqrt(-2.0 * log(u1)) * sigma;
        out[i] = (float)(r * cos(6.283185307179586 * u2));
        if (i + 1 < n) out[i + 1] = (float)(r * sin(6.283185307179586 * u2));
    }
}

/* llama.cpp's converter (LlamaModel.generate_extra_tensors) for llama-3 rope scaling. */
static void rope_freqs_row(const struct model_gen_shape *s, float *out, int64_t n)
{
    int head_dim = s->n_embd / s->n_head;
    double low_wl = s->rope_l3_orig_ctx / s->rope_l3_low_freq;
    double high_wl = s->rope_l3_orig_ctx / s->rope_l3_high_freq;
    for (int64_t i = 0; i < n; i++) {
        double freq = 1.0 / pow(s->rope_theta, (double)(2 * i) / head_dim);
        double wl = 2.0 * 3.141592653589793 / freq;
        if (wl < high_wl) {
            out[i] = 1.0f;
        } else if (wl > low_wl) {
            out[i] = s->rope_l3_factor;
        } else {
            double smooth = (s->rope_l3_orig_ctx / wl - s->rope_l3_low_freq) /
                            (s->rope_l3_high_freq - s->rope_l3_low_freq);
            out[i] = (float)(1.0 / ((1.0 - smooth) / s->rope_l3_factor + smooth));
        }
    }
}

struct mg_run {
    const struct model_gen_opts *o;
    const struct mg_tensor *t;
    int64_t n_t;
    uint64_t seed;
    struct pool *pool;
    float **scratch;
    uint64_t done, total;
};

struct mg_job {
    struct mg_run *r;
    const struct mg_tensor *t;
    int64_t row0, n_rows;
    uint8_t *dst;
    size_t row_bytes;
};

static void mg_job_run(void *arg, int ith, int nth)
{
    struct mg_job *j = arg;
    const struct mg_tensor *t = j->t;
    uint64_t key = j->r->seed ^ name_hash(t->name);
    int64_t per = (j->n_rows + nth - 1) / nth;
    int64_t a = per * ith, b = a + per < j->n_rows ? a + per : j->n_rows;
    float *f = j->r->scratch[ith];
    for (int64_t r = a; r < b; r++) {
        int64_t row = j->row0 + r;
        if (t->kind == MG_ROPE_FREQS) {
            rope_freqs_row(&j->r->o->shape, f, t->ne[0]);
        } else {
            gauss_row(key, row, 0.02f, f, t->ne[0]);
            if (t->kind == MG_NORM)
                for (int64_t i = 0; i < t->ne[0]; i++) f[i] += 1.0f;
        }
        uint8_t *d = j->dst + (size_t)r * j->row_bytes;
        if (t->type == QT_F16)
            quant_f32_to_f16_row(f, (uint16_t *)(void *)d, t->ne[0]);
        else
            memcpy(d, f, (size_t)t->ne[0] * sizeof *f);
    }
}

static int mg_fill(void *user, int64_t i, int64_t row0, int64_t n_rows, void *dst, size_t size)
{
    struct mg_run *r = user;
    struct mg_job j = {.r = r, .t = &r->t[i], .row0 = row0, .n_rows = n_rows, .dst = dst,
                       .row_bytes = quant_row_bytes(r->t[i].type, r->t[i].ne[0])};
    pool_run(r->pool, mg_job_run, &j);
    r->done += size;
    if (r->o->progress) r->o->progress(r->o->user, "generate", i, r->n_t, r->done, r->total);
    return 0;
}

/* ---- metadata ------------------------------------------------------------------------- */

static bool key_is(struct gguf_str k, const char *s)
{
    return k.len == strlen(s) && !memcmp(k.ptr, s, (size_t)k.len);
}

/* tokenizer.ggml.tokens / scores / token_type padded to n_vocab entries. */
static int copy_padded(struct gguf_writer *w, const struct gguf *v, int64_t i, int n_file, int n_vocab)
{
    struct gguf_str k = gguf_kv_key(v, i);
    enum gguf_vtype et;
    uint64_t n;
    const void *data;
    int rc = MESH_ENOMEM;
    if (gguf_kv_arr_info(v, i, &et, &n) != 0 || n != (uint64_t)n_file) return gguf_writer_copy_kv(w, v, i);
    if (key_is(k, "tokenizer.ggml.tokens") && et == GGUF_VT_STRING) {
        struct gguf_str *s = calloc((size_t)n_vocab, sizeof *s);
        char *pads = malloc((size_t)(n_vocab - n_file) * 24 + 1);
        if (s && pads) {
            for (int j = 0; j < n_file; j++) gguf_get_arr_str(v, "tokenizer.ggml.tokens", (uint64_t)j, &s[j]);
            char *p = pads;
            for (int j = n_file; j < n_vocab; j++) {
                int len = snprintf(p, 24, "[PAD%d]", j - n_file);
                s[j].ptr = p;
                s[j].len = (uint64_t)len;
                p += len + 1;
            }
            rc = gguf_writer_set_arr_gstr(w, "tokenizer.ggml.tokens", s, (uint64_t)n_vocab);
        }
        free(s);
        free(pads);
        return rc;
    }
    bool scores = key_is(k, "tokenizer.ggml.scores") && et == GGUF_VT_F32;
    bool types = key_is(k, "tokenizer.ggml.token_type") && et == GGUF_VT_I32;
    if (!scores && !types) return gguf_writer_copy_kv(w, v, i);
    char key[32];
    snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
    if (gguf_get_arr(v, key, &et, &n, &data) != 0) return MESH_EBADMODEL;
    uint32_t *vals = malloc((size_t)n_vocab * 4);
    if (!vals) return MESH_ENOMEM;
    memcpy(vals, data, (size_t)n_file * 4);
    float pad_score = -1000.0f;
    int32_t pad_type = MG_TOKEN_UNUSED;
    for (int j = n_file; j < n_vocab; j++) memcpy(&vals[j], scores ? (const void *)&pad_score : &pad_type, 4);
    rc = gguf_writer_set_arr(w, key, et, vals, (uint64_t)n_vocab);
    free(vals);
    return rc;
}

static int write_metadata(struct gguf_writer *w, const struct model_gen_shape *s, const struct gguf *v,
                          int n_file, int n_vocab, int ftype)
{
    char key[96], name[96];
    const char *a = s->arch;
    int rc = 0;
#define SET(call)                                                                                                 \
    do {                                                                                                          \
        if ((rc = (call)) != 0) return rc;                                                                        \
    } while (0)
#define AKEY(suffix) (snprintf(key, sizeof key, "%s.%s", a, suffix), key)
    snprintf(name, sizeof name, "meshllm random %s", s->name);
    SET(gguf_writer_set_str(w, "general.architecture", a));
    SET(gguf_writer_set_str(w, "general.name", name));
    SET(gguf_writer_set_u32(w, AKEY("block_count"), (uint32_t)s->n_layer));
    SET(gguf_writer_set_u32(w, AKEY("context_length"), (uint32_t)s->n_ctx));
    SET(gguf_writer_set_u32(w, AKEY("embedding_length"), (uint32_t)s->n_embd));
    SET(gguf_writer_set_u32(w, AKEY("feed_forward_length"), (uint32_t)s->n_ff));
    SET(gguf_writer_set_u32(w, AKEY("attention.head_count"), (uint32_t)s->n_head));
    SET(gguf_writer_set_u32(w, AKEY("attention.head_count_kv"), (uint32_t)s->n_head_kv));
    SET(gguf_writer_set_f32(w, AKEY("rope.freq_base"), s->rope_theta));
    SET(gguf_writer_set_f32(w, AKEY("attention.layer_norm_rms_epsilon"), s->rms_eps));
    SET(gguf_writer_set_u32(w, AKEY("rope.dimension_count"), (uint32_t)(s->n_embd / s->n_head)));
    SET(gguf_writer_set_u32(w, AKEY("vocab_size"), (uint32_t)n_vocab));
    SET(gguf_writer_set_u32(w, "general.file_type", (uint32_t)ftype));
    for (int64_t i = 0; i < gguf_kv_count(v); i++) {
        struct gguf_str k = gguf_kv_key(v, i);
        if (k.len < 10 || memcmp(k.ptr, "tokenizer.", 10) != 0) continue;
        SET(n_vocab > n_file ? copy_padded(w, v, i, n_file, n_vocab) : gguf_writer_copy_kv(w, v, i));
    }
#undef AKEY
#undef SET
    return 0;
}

/* ---- the whole file ------------------------------------------------------------------- */

static int write_plain(struct model_gen_opts *o, const struct gguf *v, int n_file, int n_vocab, int ftype,
                       const char *path, char *err, size_t err_cap)
{
    const struct model_gen_shape *s = &o->shape;
    int mat_type = ftype == QUANTIZE_FT_F32 ? QT_F32 : QT_F16;
    struct gguf_writer *w = NULL;
    struct mg_run r = {.o = o, .seed = o->seed};
    struct mg_tensor *t = calloc((size_t)(4 + 12 * s->n_layer), sizeof *t);
    int nth = 0, rc = t ? gguf_writer_new(&w) : MESH_ENOMEM;
    if (rc) goto out;
    r.t = t;
    r.n_t = build_tensors(s, n_vocab, mat_type, t);
    rc = write_metadata(w, s, v, n_file, n_vocab, ftype);
    if (rc) {
        err_set(err, err_cap, rc, "%s: cannot write metadata: %s", path, err_str(rc));
        goto out;
    }
    int64_t max_ne0 = 1;
    for (int64_t i = 0; i < r.n_t; i++) {
        int64_t idx = gguf_writer_add_tensor(w, t[i].name, t[i].type, t[i].n_dims, t[i].ne, NULL);
        if (idx < 0) {
            rc = err_set(err, err_cap, (int)idx, "tensor '%s': cannot add", t[i].name);
            goto out;
        }
        r.total += gguf_writer_tensor_size(w, idx);
        if (t[i].ne[0] > max_ne0) max_ne0 = t[i].ne[0];
    }
    rc = pool_new(o->n_threads > 0 ? o->n_threads : 0, &r.pool);
    if (rc) goto out;
    nth = pool_size(r.pool);
    r.scratch = calloc((size_t)nth, sizeof *r.scratch);
    rc = r.scratch ? 0 : MESH_ENOMEM;
    for (int i = 0; i < nth && !rc; i++)
        if (!(r.scratch[i] = malloc((size_t)(max_ne0 + 1) * sizeof(float)))) rc = MESH_ENOMEM;
    if (rc) goto out;
    rc = gguf_writer_write_rows(w, path, mg_fill, &r, err, err_cap);
out:
    if (rc && err && err_cap && !err[0]) err_set(err, err_cap, rc, "%s: %s", path, err_str(rc));
    if (r.scratch)
        for (int i = 0; i < nth; i++) free(r.scratch[i]);
    free(r.scratch);
    pool_free(r.pool);
    gguf_writer_free(w);
    free(t);
    return rc;
}

static void mg_quant_progress(void *user, const struct quantize_progress *p)
{
    struct model_gen_opts *o = user;
    o->progress(o->user, "quantize", p->i_tensor, p->n_tensors, p->bytes_done, p->bytes_total);
}

int model_gen_write(struct model_gen_opts *o, const char *out_path, char *err, size_t err_cap)
{
    struct gguf *v = NULL;
    char *tmp = NULL;
    if (err && err_cap) err[0] = 0;
    int rc = model_gen_shape_check(&o->shape, err, err_cap);
    if (rc) return rc;
    if (!o->vocab_path) return err_set(err, err_cap, MESH_EINVAL, "a vocab GGUF is required");
    if (!strcmp(quantize_ftype_name(o->ftype), "?"))
        return err_set(err, err_cap, MESH_EINVAL, "unknown file type %d", o->ftype);
    rc = gguf_open(o->vocab_path, &v, err, err_cap);
    if (rc) return rc;
    enum gguf_vtype et;
    uint64_t n_tok = 0;
    const void *data;
    if (gguf_get_arr(v, "tokenizer.ggml.tokens", &et, &n_tok, &data) != 0 || et != GGUF_VT_STRING ||
        n_tok == 0 || n_tok > (1u << 24)) {
        rc = err_set(err, err_cap, MESH_EBADMODEL, "%s: no usable tokenizer.ggml.tokens array", o->vocab_path);
        goto out;
    }
    int n_file = (int)n_tok;
    int n_vocab = o->shape.n_vocab > 0 ? o->shape.n_vocab : n_file;
    if (n_file > n_vocab) {
        rc = err_set(err, err_cap, MESH_EINVAL, "%s has %d tokens, more than the %d of shape '%s'", o->vocab_path,
                     n_file, n_vocab, o->shape.name);
        goto out;
    }
    o->n_vocab_file = n_file;
    o->n_vocab_padded = n_vocab;
    quant_init();
    if (o->ftype == QUANTIZE_FT_F32 || o->ftype == QUANTIZE_FT_F16) {
        rc = write_plain(o, v, n_file, n_vocab, o->ftype, out_path, err, err_cap);
        goto out;
    }
    /* Other types: an F16 file first, then llama.cpp's quantization rules over it. */
    size_t len = strlen(out_path) + 16;
    tmp = malloc(len);
    if (!tmp) {
        rc = err_set(err, err_cap, MESH_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(tmp, len, "%s.f16.tmp", out_path);
    rc = write_plain(o, v, n_file, n_vocab, QUANTIZE_FT_F16, tmp, err, err_cap);
    if (!rc)
        rc = quantize_model(tmp, out_path, o->ftype, o->n_threads, o->progress ? mg_quant_progress : NULL, o, err,
                            err_cap);
    unlink(tmp);
out:
    free(tmp);
    gguf_close(v);
    return rc;
}
