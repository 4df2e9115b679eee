/* model.c - loading a Llama-family GGUF: hyper-parameters and tensor binding.
 *
 * Reads the `llama` and `qwen2` architectures as llama.cpp names their keys and tensors
 * (llama-arch.cpp, llama-model.cpp): `<arch>.embedding_length`, `blk.N.attn_q.weight`...
 * Every tensor's type and shape is checked against the hyper-parameters before the
 * forward pass may touch it, so a file that lies gets a clear error, not a bad read.
 * Weights stay in the GGUF mapping. The forward pass is in model_forward.c.
 */
#include "engine/model.h"

#include "core/err.h"
#include "core/log.h"
#include "core/pool.h"
#include "engine/gguf.h"
#include "engine/model_internal.h"
#include "engine/repack.h"
#include "engine/quant.h"
#include "engine/tok.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Looks up "<arch>.<suffix>" as u32; MESH_ENOTFOUND if absent. */
static int arch_u32(const struct gguf *g, const char *arch, const char *suffix, uint32_t *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_u32(g, key, out);
}

static int arch_f32(const struct gguf *g, const char *arch, const char *suffix, float *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_f32(g, key, out);
}

static int arch_str(const struct gguf *g, const char *arch, const char *suffix,
                    struct gguf_str *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_str(g, key, out);
}

/* A required positive count "<arch>.<suffix>" within [1, max]. */
static int req_count(const struct gguf *g, const char *arch, const char *suffix, uint32_t max,
                     int *out, char *err, size_t err_cap)
{
    uint32_t v = 0;
    int rc = arch_u32(g, arch, suffix, &v);
    if (rc == MESH_ENOTFOUND)
        return err_set(err, err_cap, MESH_EBADMODEL, "missing required key '%s.%s'", arch, suffix);
    if (rc < 0)
        return err_set(err, err_cap, MESH_EBADMODEL, "key '%s.%s' is not an unsigned integer",
                       arch, suffix);
    if (v == 0 || v > max)
        return err_set(err, err_cap, MESH_EBADMODEL, "key '%s.%s' = %u is out of range [1, %u]",
                       arch, suffix, v, max);
    *out = (int)v;
    return 0;
}

static int load_hparams(struct model *m, char *err, size_t err_cap)
{
    const struct gguf *g = m->gguf;
    struct model_hparams *hp = &m->hp;
    struct gguf_str s;
    int rc;

    if (gguf_get_str(g, "general.architecture", &s) < 0)
        return err_set(err, err_cap, MESH_EBADMODEL,
                       "no 'general.architecture' key: not a model file (a vocab-only GGUF?)");
    if (s.len >= sizeof hp->arch_name) s.len = sizeof hp->arch_name - 1;
    memcpy(hp->arch_name, s.ptr, s.len);
    hp->arch_name[s.len] = 0;
    if (!strcmp(hp->arch_name, "llama")) {
        hp->arch = MODEL_ARCH_LLAMA;
        hp->rope_type = MODEL_ROPE_NORM;
    } else if (!strcmp(hp->arch_name, "qwen2")) {
        hp->arch = MODEL_ARCH_QWEN2;
        hp->rope_type = MODEL_ROPE_NEOX;
        hp->has_qkv_bias = true;
    } else {
        return err_set(err, err_cap, MESH_EUNSUPPORTED,
                       "architecture '%s' is not supported (supported: llama, qwen2)",
                       hp->arch_name);
    }
    const char *a = hp->arch_name;
    if (gguf_get_str(g, "general.name", &s) == 0) {
        size_t n = s.len < sizeof hp->name - 1 ? s.len : sizeof hp->name - 1;
        memcpy(hp->name, s.ptr, n);
        hp->name[n] = 0;
    }

    if ((rc = req_count(g, a, "embedding_length", 1u << 16, &hp->n_embd, err, err_cap)) < 0 ||
        (rc = req_count(g, a, "block_count", 4096, &hp->n_layer, err, err_cap)) < 0 ||
        (rc = req_count(g, a, "feed_forward_length", 1u << 20, &hp->n_ff, err, err_cap)) < 0 ||
        (rc = req_count(g, a, "attention.head_count", 4096, &hp->n_head, err, err_cap)) < 0)
        return rc;
    uint32_t v;
    hp->n_head_kv = hp->n_head;
    if (arch_u32(g, a, "attention.head_count_kv", &v) == 0) hp->n_head_kv = (int)v;
    if (hp->n_head_kv <= 0 || hp->n_head_kv > hp->n_head || hp->n_head % hp->n_head_kv != 0)
        return err_set(err, err_cap, MESH_EBADMODEL,
                       "head_count_kv %d must divide head_count %d", hp->n_head_kv, hp->n_head);
    hp->head_dim = hp->n_embd / hp->n_head;
    if (arch_u32(g, a, "attention.key_length", &v) == 0) hp->head_dim = (int)v;
    if (hp->head_dim <= 0 || hp->head_dim > 1024 || hp->head_dim % 2 != 0)
        return err_set(err, err_cap, MESH_EBADMODEL, "head dimension %d is not supported",
                       hp->head_dim);
    if (arch_u32(g, a, "attention.value_length", &v) == 0 && (int)v != hp->head_dim)
        return err_set(err, err_cap, MESH_EUNSUPPORTED,
                       "value_length %u differs from key_length %d", v, hp->head_dim);
    hp->n_ctx_train = 4096;
    if (arch_u32(g, a, "context_length", &v) == 0 && v > 0) hp->n_ctx_train = (int)(v > (1u << 24) ? (1u << 24) : v);
    hp->rope_dim = hp->head_dim;
    if (arch_u32(g, a, "rope.dimension_count", &v) == 0) hp->rope_dim = (int)v;
    if (hp->rope_dim <= 0 || hp->rope_dim > hp->head_dim || hp->rope_dim % 2 != 0)
        return err_set(err, err_cap, MESH_EBADMODEL,
                       "rope.dimension_count %d invalid for head dimension %d", hp->rope_dim,
                       hp->head_dim);
    hp->rope_theta = 10000.0f;
    float f;
    if (arch_f32(g, a, "rope.freq_base", &f) == 0) hp->rope_theta = f;
    if (!(hp->rope_theta > 0.0f) || !isfinite(hp->rope_theta))
        return err_set(err, err_cap, MESH_EBADMODEL, "rope.freq_base must be positive");
    hp->rope_freq_scale = 1.0f;
    if (arch_f32(g, a, "rope.scale_linear", &f) == 0 && f > 0.0f) hp->rope_freq_scale = 1.0f / f;
    if (arch_str(g, a, "rope.scaling.type", &s) == 0) {
        float factor = 0.0f;
        arch_f32(g, a, "rope.scaling.factor", &factor);
        if (s.len == 6 && !memcmp(s.ptr, "linear", 6) && factor > 0.0f)
            hp->rope_freq_scale = 1.0f / factor;
        else if (s.len == 6 && !memcmp(s.ptr, "llama3", 6) && factor > 0.0f) {
            hp->rope_l3_factor = factor;
            hp->rope_l3_low_freq = 1.0f;
            hp->rope_l3_high_freq = 4.0f;
            hp->rope_l3_orig_ctx = 8192;
            arch_f32(g, a, "rope.scaling.low_freq_factor", &hp->rope_l3_low_freq);
            arch_f32(g, a, "rope.scaling.high_freq_factor", &hp->rope_l3_high_freq);
            if (arch_u32(g, a, "rope.scaling.original_context_length", &v) == 0)
                hp->rope_l3_orig_ctx = v > (1u << 24) ? 0 : (int)v;
            /* load_rope_factors divides by each of these and by high - low */
            if (!isfinite(factor) || hp->rope_l3_orig_ctx <= 0 ||
                !(hp->rope_l3_low_freq > 0.0f) || !isfinite(hp->rope_l3_high_freq) ||
                !(hp->rope_l3_high_freq > hp->rope_l3_low_freq))
                return err_set(err, err_cap, MESH_EBADMODEL,
                               "llama3 rope scaling: factor %g, low_freq_factor %g, "
                               "high_freq_factor %g, original_context_length %d are invalid "
                               "(need 0 < low < high and a positive context)",
                               (double)factor, (double)hp->rope_l3_low_freq,
                               (double)hp->rope_l3_high_freq, hp->rope_l3_orig_ctx);
        } else if (!(s.len == 4 && !memcmp(s.ptr, "none", 4))) {
            log_warn("rope scaling type '%.*s' is not supported; ignoring it", (int)s.len, s.ptr);
        }
    }
    hp->rms_eps = hp->arch == MODEL_ARCH_QWEN2 ? 1e-6f : 1e-5f;
    if (arch_f32(g, a, "attention.layer_norm_rms_epsilon", &f) == 0) hp->rms_eps = f;
    if (!(hp->rms_eps > 0.0f) || hp->rms_eps > 1.0f)
        return err_set(err, err_cap, MESH_EBADMODEL, "layer_norm_rms_epsilon %g is invalid",
                       (double)hp->rms_eps);
    hp->file_type = -1;
    if (gguf_get_u32(g, "general.file_type", &v) == 0) hp->file_type = (int)v;
    return 0;
}

/* Binds tensor `name` expecting ne = {ne0, ne1} (ne1 = 1 for vectors) and a type the
 * engine can compute with. Absent + optional -> t->data stays NULL. */
static int bind(struct model *m, struct model_tensor *t, const char *name, int64_t ne0,
                int64_t ne1, bool optional, bool is_matrix, char *err, size_t err_cap)
{
    const struct gguf_tensor *gt = gguf_find_tensor(m->gguf, name);
    memset(t, 0, sizeof *t);
    if (!gt) {
        if (optional) return 0;
        return err_set(err, err_cap, MESH_EBADMODEL, "missing tensor '%s'", name);
    }
    int64_t got1 = gt->n_dims >= 2 ? gt->ne[1] : 1;
    bool extra_dims = (gt->n_dims >= 3 && gt->ne[2] != 1) || (gt->n_dims >= 4 && gt->ne[3] != 1);
    if (gt->ne[0] != ne0 || got1 != ne1 || extra_dims)
        return err_set(err, err_cap, MESH_EBADMODEL,
                       "tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", name,
                       (long long)gt->ne[0], (long long)got1, (long long)ne0, (long long)ne1);
    const struct quant_traits *tr = quant_traits(gt->type);
    if (is_matrix) {
        if (!tr || !tr->vec_dot || !tr->to_float || !quant_traits(tr->vec_dot_type) ||
            !quant_traits(tr->vec_dot_type)->from_float)
            return err_set(err, err_cap, MESH_EUNSUPPORTED,
                           "tensor '%s' has type %s, which this engine cannot compute with",
                           name, tr ? tr->name : "unknown");
    } else if (gt->type != QT_F32) {
        return err_set(err, err_cap, MESH_EUNSUPPORTED,
                       "tensor '%s' must be F32 (it is %s)", name, tr ? tr->name : "unknown");
    }
    t->data = gt->data;
    t->type = gt->type;
    t->ne0 = ne0;
    t->ne1 = ne1;
    t->row_bytes = quant_row_bytes(gt->type, ne0);
    if (t->row_bytes == 0)
        return err_set(err, err_cap, MESH_EBADMODEL, "tensor '%s': rows of %lld elements do not fit type %s blocks",
                       name, (long long)ne0, tr ? tr->name : "?");
    m->weight_bytes += gt->size;
    return 0;
}

/* Rows of matrix `name` if it has more than n_vocab (padding past the vocabulary), else
 * n_vocab, so that bind() checks the shape the file has; fewer rows fail in bind(). */
static int64_t padded_rows(const struct gguf *g, const char *name, int n_vocab)
{
    const struct gguf_tensor *t = gguf_find_tensor(g, name);
    return t && t->n_dims >= 2 && t->ne[1] > n_vocab ? t->ne[1] : n_vocab;
}

static int bind_layer(struct model *m, int il, char *err, size_t err_cap)
{
    const struct model_hparams *hp = &m->hp;
    struct model_layer *l = &m->layers[il];
    int64_t q_dim = (int64_t)hp->n_head * hp->head_dim;
    int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    char name[96];
    int rc;
#define BIND(field, nm, ne0, ne1, opt, mat)                                                    \
    do {                                                                                       \
        snprintf(name, sizeof name, "blk.%d." nm, il);                                         \
        if ((rc = bind(m, &l->field, name, ne0, ne1, opt, mat, err, err_cap)) < 0) return rc;  \
    } while (0)
    BIND(attn_norm, "attn_norm.weight", hp->n_embd, 1, false, false);
    BIND(wq, "attn_q.weight", hp->n_embd, q_dim, false, true);
    BIND(wk, "attn_k.weight", hp->n_embd, kv_dim, false, true);
    BIND(wv, "attn_v.weight", hp->n_embd, kv_dim, false, true);
    BIND(wo, "attn_output.weight", q_dim, hp->n_embd, false, true);
    BIND(bq, "attn_q.bias", q_dim, 1, !hp->has_qkv_bias, false);
    BIND(bk, "attn_k.bias", kv_dim, 1, !hp->has_qkv_bias, false);
    BIND(bv, "attn_v.bias", kv_dim, 1, !hp->has_qkv_bias, false);
    BIND(ffn_norm, "ffn_norm.weight", hp->n_embd, 1, false, false);
    BIND(w_gate, "ffn_gate.weight", hp->n_embd, hp->n_ff, false, true);
    BIND(w_up, "ffn_up.weight", hp->n_embd, hp->n_ff, false, true);
    BIND(w_down, "ffn_down.weight", hp->n_ff, hp->n_embd, false, true);
#undef BIND
    return 0;
}

/* Per-pair RoPE frequency divisors: rope_freqs.weight if the file has it (llama.cpp
 * writes it for Llama 3.1+), else computed from the llama3 scaling keys, else 1. */
static int load_rope_factors(struct model *m, char *err, size_t err_cap)
{
    const struct model_hparams *hp = &m->hp;
    int n_pairs = hp->rope_dim / 2;
    m->rope_factors = malloc((size_t)n_pairs * sizeof(float));
    if (!m->rope_factors) return MESH_ENOMEM;
    for (int i = 0; i < n_pairs; i++) m->rope_factors[i] = 1.0f;
    struct model_tensor t;
    int rc = bind(m, &t, "rope_freqs.weight", n_pairs, 1, true, false, err, err_cap);
    if (rc < 0) return rc;
    if (t.data) {
        memcpy(m->rope_factors, t.data, (size_t)n_pairs * sizeof(float));
        for (int i = 0; i < n_pairs; i++)
            if (!(m->rope_factors[i] > 0.0f) || !isfinite(m->rope_factors[i]))
                return err_set(err, err_cap, MESH_EBADMODEL, "rope_freqs.weight[%d] is not positive", i);
        return 0;
    }
    if (hp->rope_l3_factor > 0.0f) {
        /* Llama 3.1 scaling: long wavelengths slowed by `factor`, short kept, smooth between. */
        float low_wl = (float)hp->rope_l3_orig_ctx / hp->rope_l3_low_freq;
        float high_wl = (float)hp->rope_l3_orig_ctx / hp->rope_l3_high_freq;
        for (int i = 0; i < n_pairs; i++) {
            float freq = 1.0f / powf(hp->rope_theta, (float)(2 * i) / (float)hp->rope_dim);
            float wl = 2.0f * (float)M_PI / freq;
            if (wl < high_wl) m->rope_factors[i] = 1.0f;
            else if (wl > low_wl) m->rope_factors[i] = hp->rope_l3_factor;
            else {
                float smooth = ((float)hp->rope_l3_orig_ctx / wl - hp->rope_l3_low_freq) /
                               (hp->rope_l3_high_freq - hp->rope_l3_low_freq);
                m->rope_factors[i] = 1.0f / ((1.0f - smooth) / hp->rope_l3_factor + smooth);
            }
        }
    }
    return 0;
}

/* The matrices a forward pass over layers [lb, le) multiplies by, and the output head
 * when the range ends at the last layer, for repack_weights. */
static int matmul_tensors(struct model *m, int lb, int le, struct model_tensor **ts, int cap)
{
    int k = 0;
    if (le == m->hp.n_layer && k < cap) ts[k++] = &m->output;
    for (int il = lb; il < le; il++) {
        struct model_layer *l = &m->layers[il];
        struct model_tensor *lt[] = {&l->wq, &l->wk, &l->wv, &l->wo, &l->w_gate, &l->w_up, &l->w_down};
        for (size_t i = 0; i < sizeof lt / sizeof lt[0] && k < cap; i++) ts[k++] = lt[i];
    }
    return k;
}

/* Bytes of t's packed copy (groups, then the tail rows as they are), 64-aligned; 0 if
 * the kind does not take the shape. */
static size_t packed_bytes(const struct model_tensor *t, const struct repack_kind *k)
{
    int64_t rows = t->ne1 & ~(int64_t)(REPACK_GROUP - 1);
    size_t b = rows > 0 ? k->bytes(t->ne0, rows) : 0;
    if (b == 0) return 0;
    size_t tail = (size_t)(t->ne1 - rows) * t->row_bytes;
    if (b > SIZE_MAX - tail - 63) return 0;
    return (b + tail + 63) & ~(size_t)63;
}

/* Packing of the tensors ts[i] with off[i] != SIZE_MAX, claimed one by one by the
 * threads of a pool. */
struct pack_job {
    struct model_tensor **ts;
    const size_t *off;
    uint8_t *buf;
    int n;
    size_t page;
    atomic_int next;
    atomic_int n_done;                /* tensors finished (progress) */
    atomic_uint_least64_t bytes_done; /* their bytes in the file */
    uint64_t bytes_total;
    int n_pack;                       /* tensors that get packed */
    const struct model_load_opts *opts;
};

static void pack_worker(void *arg, int ith, int nth)
{
    (void)nth;
    struct pack_job *j = arg;
    int i;
    while ((i = atomic_fetch_add(&j->next, 1)) < j->n) {
        struct model_tensor *t = j->ts[i];
        if (j->off[i] == SIZE_MAX) continue;
        const struct repack_kind *k = repack_kind_get((enum qtype)t->type);
        int64_t rows = t->ne1 & ~(int64_t)(REPACK_GROUP - 1);
        uint8_t *dst = j->buf + j->off[i];
        if (k->pack(t->data, t->row_bytes, t->ne0, rows, dst) < 0) continue;
        uint8_t *tail = dst + k->bytes(t->ne0, rows);
        memcpy(tail, (const uint8_t *)t->data + (size_t)rows * t->row_bytes,
               (size_t)(t->ne1 - rows) * t->row_bytes);
        t->pack_kind = k;
        t->pack = dst;
        t->pack_rows = rows;
        t->pack_tail = tail;
        /* Drop the whole pages of the original rows from this process (the file stays
         * in the page cache for the kernel to keep or reclaim). A tied token embedding
         * faults back only the rows it looks up. */
        uintptr_t lo = ((uintptr_t)t->data + j->page - 1) & ~(uintptr_t)(j->page - 1);
        uintptr_t hi = ((uintptr_t)t->data + (size_t)t->ne1 * t->row_bytes) & ~(uintptr_t)(j->page - 1);
        if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
        int done = atomic_fetch_add(&j->n_done, 1) + 1;
        uint64_t b = atomic_fetch_add(&j->bytes_done, (uint64_t)t->ne1 * t->row_bytes) +
                     (uint64_t)t->ne1 * t->row_bytes;
        /* worker 0 alone reports while packing; the loader reports the end */
        if (ith == 0 && j->opts && j->opts->progress && done < j->n_pack)
            j->opts->progress(j->opts->progress_arg, done, j->n_pack, b, j->bytes_total);
    }
}

/* Rewrites every matrix a packed kernel exists for (engine/repack.h) into one anonymous
 * mapping (huge pages asked for, best effort), points the tensor at its copy and drops
 * the mapped original pages it came from, one tensor at a time: resident memory stays
 * about the file's size, never twice it. The forward pass then reads only the copies.
 * All cores pack, a tensor each. Failure to map only logs: the rows are then
 * multiplied in place. */
static int repack_weights(struct model *m, int lb, int le, const struct model_load_opts *opts)
{
    int cap = 1 + 7 * m->hp.n_layer, rc = 0;
    int n_pack = 0;          /* matrices to pack */
    uint64_t file_bytes = 0; /* their bytes in the file */
    struct model_tensor **ts = calloc((size_t)cap, sizeof *ts);
    size_t *off = calloc((size_t)cap, sizeof *off);
    struct pool *pool = NULL;
    if (!ts || !off) {
        rc = MESH_ENOMEM;
        goto done;
    }
    int nt = matmul_tensors(m, lb, le, ts, cap);
    size_t total = 0;
    for (int i = 0; i < nt; i++) {
        off[i] = SIZE_MAX;
        const struct repack_kind *k = ts[i]->data ? repack_kind_get((enum qtype)ts[i]->type) : NULL;
        size_t b = k ? packed_bytes(ts[i], k) : 0;
        for (int e = 0; e < i && b; e++)
            if (ts[e]->data == ts[i]->data) b = 0; /* the same matrix twice */
        if (b == 0) continue;
        if (total > SIZE_MAX - b) goto done;
        off[i] = total;
        total += b;
        n_pack++;
        file_bytes += (uint64_t)ts[i]->ne1 * ts[i]->row_bytes;
    }
    if (total == 0) goto done;
    void *buf = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        log_warn("model: could not map %zu bytes for packed weights; multiplying them in place", total);
        goto done;
    }
#ifdef MADV_HUGEPAGE
    (void)madvise(buf, total, MADV_HUGEPAGE);
#endif
    m->repack_buf = buf;
    m->repack_bytes = total;
    struct pack_job pj = {.ts = ts, .off = off, .buf = buf, .n = nt,
                          .page = (size_t)sysconf(_SC_PAGESIZE), .bytes_total = file_bytes,
                          .n_pack = n_pack, .opts = opts};
    atomic_init(&pj.next, 0);
    atomic_init(&pj.n_done, 0);
    atomic_init(&pj.bytes_done, 0);
    if (pool_new(0, &pool) == 0) pool_run(pool, pack_worker, &pj);
    else pack_worker(&pj, 0, 1);
    (void)mprotect(buf, total, PROT_READ);
    log_debug("model: packed %zu bytes of weights into %d-row groups", total, (int)REPACK_GROUP);
done:
    if (rc == 0 && opts && opts->progress)
        opts->progress(opts->progress_arg, n_pack, n_pack, file_bytes, file_bytes);
    pool_free(pool);
    free(off);
    free(ts);
    return rc;
}

/* The N of a tensor named "blk.N.*", or -1. */
static int tensor_layer(const struct gguf_str *name)
{
    if (name->len < 5 || memcmp(name->ptr, "blk.", 4) != 0) return -1;
    int n = 0;
    uint64_t i = 4;
    for (; i < name->len && name->ptr[i] >= '0' && name->ptr[i] <= '9' && n < 1000000; i++)
        n = n * 10 + (name->ptr[i] - '0');
    return i > 4 && i < name->len && name->ptr[i] == '.' ? n : -1;
}

/* --mlock: locks the packed copies and every other tensor the layers [lb, le) need: their
 * unpacked tensors, the token embedding when lb == 0 (always: a tied output shares its
 * rows, which were dropped after packing and must not fault back from disk), the output
 * norm and head when le == n_layer. Locking the whole data section instead would fault
 * every dropped original back in and pin layers this process never runs. Best effort. */
static void lock_weights(const struct model *m, int lb, int le)
{
    bool ok = !m->repack_buf || mlock(m->repack_buf, m->repack_bytes) == 0;
    for (int64_t i = 0; ok && i < gguf_tensor_count(m->gguf); i++) {
        const struct gguf_tensor *gt = gguf_tensor_at(m->gguf, i);
        int il = tensor_layer(&gt->name);
        bool is_embd = gt->data == m->tok_embd.data;
        bool want = il >= 0 ? il >= lb && il < le : is_embd ? lb == 0 : le == m->hp.n_layer;
        bool packed = !is_embd && m->output.pack_kind && m->output.data == gt->data;
        for (int l = lb; l < le && !packed; l++) {
            const struct model_layer *ly = &m->layers[l];
            const struct model_tensor *lt[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down};
            for (size_t j = 0; j < sizeof lt / sizeof lt[0]; j++)
                if (lt[j]->pack_kind && lt[j]->data == gt->data) packed = true;
        }
        if (want && !packed && gt->size > 0 && mlock(gt->data, gt->size) != 0) ok = false;
    }
    if (!ok) log_warn("--mlock: could not lock the model in memory (raise 'ulimit -l'); continuing");
}

int model_load(const char *path, const struct model_load_opts *opts, struct model **out,
               char *err, size_t err_cap)
{
    *out = NULL;
    quant_init();
    struct model *m = calloc(1, sizeof *m);
    if (!m) return MESH_ENOMEM;
    char sub[512] = "";
    int rc = gguf_open(path, &m->gguf, err, err_cap);
    if (rc < 0) goto fail_noprefix;
    if ((rc = load_hparams(m, sub, sizeof sub)) < 0) goto fail;
    struct model_hparams *hp = &m->hp;
    if (gguf_tensor_count(m->gguf) == 0) {
        rc = err_set(sub, sizeof sub, MESH_EBADMODEL,
                     "the file has no tensors (a vocab-only GGUF?), so it cannot run");
        goto fail;
    }

    if ((rc = tok_load(m->gguf, &m->tok, sub, sizeof sub)) < 0) goto fail;
    hp->n_vocab = tok_n_vocab(m->tok);
    /* Some files pad the embedding or output rows past the vocabulary. Only the first
     * n_vocab rows are used (ne1 = n_vocab), so the logits cover exactly the tokens that
     * have a piece and an id in the padding is never sampled or embedded. */
    int64_t embd_rows = padded_rows(m->gguf, "token_embd.weight", hp->n_vocab);
    int64_t out_rows = padded_rows(m->gguf, "output.weight", hp->n_vocab);
    if ((rc = bind(m, &m->tok_embd, "token_embd.weight", hp->n_embd, embd_rows, false, true,
                   sub, sizeof sub)) < 0 ||
        (rc = bind(m, &m->output_norm, "output_norm.weight", hp->n_embd, 1, false, false, sub,
                   sizeof sub)) < 0 ||
        (rc = bind(m, &m->output, "output.weight", hp->n_embd, out_rows, true, true, sub,
                   sizeof sub)) < 0)
        goto fail;
    m->tok_embd.ne1 = hp->n_vocab;
    if (m->output.data) m->output.ne1 = hp->n_vocab;
    if (!m->output.data) {
        hp->tied_output = true;
        m->output = m->tok_embd;
    }
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) {
        rc = MESH_ENOMEM;
        goto fail;
    }
    for (int il = 0; il < hp->n_layer; il++)
        if ((rc = bind_layer(m, il, sub, sizeof sub)) < 0) goto fail;
    if ((rc = load_rope_factors(m, sub, sizeof sub)) < 0) goto fail;
    int lb = 0, le = hp->n_layer;
    if (opts && (opts->layer_begin || opts->layer_end)) {
        if (opts->layer_begin < 0 || opts->layer_begin >= opts->layer_end || opts->layer_end > hp->n_layer) {
            rc = err_set(sub, sizeof sub, MESH_EINVAL,
                         "layer range [%d, %d) is not within the model's %d layers",
                         opts->layer_begin, opts->layer_end, hp->n_layer);
            goto fail;
        }
        lb = opts->layer_begin, le = opts->layer_end;
    }
    if (opts && opts->no_layers) lb = le = hp->n_layer; /* the head only */
    if ((rc = repack_weights(m, lb, le, opts)) < 0) goto fail;
    m->chat_template = gguf_get_str_dup(m->gguf, "tokenizer.chat_template");

    if (opts && opts->use_mlock) lock_weights(m, lb, le);
    *out = m;
    return 0;

fail:
    err_set(err, err_cap, rc, "%s: %s", path, sub[0] ? sub : err_str(rc));
fail_noprefix:
    model_free(m);
    return rc;
}

void model_free(struct model *m)
{
    if (!m) return;
    if (m->repack_buf) munmap(m->repack_buf, m->repack_bytes);
    tok_free(m->tok);
    gguf_close(m->gguf);
    free(m->layers);
    free(m->rope_factors);
    free(m->chat_template);
    free(m);
}

const char *model_ftype_name(int file_type)
{
    /* llama.cpp's enum llama_ftype */
    switch (file_type) {
    case 0: return "F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 7: return "Q8_0";
    case 8: return "Q5_0";
    case 9: return "Q5_1";
    case 10: return "Q2_K";
    case 11: return "Q3_K_S";
    case 12: return "Q3_K_M";
    case 13: return "Q3_K_L";
    case 14: return "Q4_K_S";
    case 15: return "Q4_K_M";
    case 16: return "Q5_K_S";
    case 17: return "Q5_K_M";
    case 18: return "Q6_K";
    case 32: return "BF16";
    default: return "unknown";
    }
}

const struct model_hparams *model_hparams(const struct model *m) { return &m->hp; }
const struct tok *model_tok(const struct model *m) { return m->tok; }
const struct gguf *model_gguf(const struct model *m) { return m->gguf; }
size_t model_weight_bytes(const struct model *m) { return m->weight_bytes; }
size_t model_packed_bytes(const struct model *m) { return m->repack_buf ? m->repack_bytes : 0; }
const char *model_chat_template(const struct model *m) { return m->chat_template; }
