/* quantize.c - model file type conversion with llama.cpp's per-tensor type rules.
 *
 * The plan (which tensor becomes which type) follows src/llama-quant.cpp of llama.cpp
 * (llama_model_quantize_impl and llama_tensor_get_type) for the file types in
 * quantize.h, without importance matrices; the data path converts rows on a thread
 * pool (core/pool.h) with the traits of engine/quant.h and streams them into the
 * writer of engine/gguf.h, so memory stays at one chunk of rows plus a row of floats
 * per thread. Not done: IQ/TQ/Q2_K/Q3_K mixes, re-quantizing already quantized tensors.
 */
#include "engine/quantize.h"

#include "core/err.h"
#include "core/pool.h"
#include "engine/gguf.h"
#include "engine/quant.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

enum { QUANTIZE_QNT_VERSION = 2 }; /* ggml's GGML_QNT_VERSION */

static const struct {
    const char *name;
    int ftype;
    int default_type; /* enum qtype of most 2-D weights */
} g_ftypes[] = {
    {"F32", QUANTIZE_FT_F32, QT_F32},       {"F16", QUANTIZE_FT_F16, QT_F16},
    {"BF16", QUANTIZE_FT_BF16, QT_BF16},    {"Q8_0", QUANTIZE_FT_Q8_0, QT_Q8_0},
    {"Q4_0", QUANTIZE_FT_Q4_0, QT_Q4_0},    {"Q4_1", QUANTIZE_FT_Q4_1, QT_Q4_1},
    {"Q5_0", QUANTIZE_FT_Q5_0, QT_Q5_0},    {"Q5_1", QUANTIZE_FT_Q5_1, QT_Q5_1},
    {"Q4_K_S", QUANTIZE_FT_Q4_K_S, QT_Q4_K}, {"Q4_K_M", QUANTIZE_FT_Q4_K_M, QT_Q4_K},
    {"Q5_K_S", QUANTIZE_FT_Q5_K_S, QT_Q5_K}, {"Q5_K_M", QUANTIZE_FT_Q5_K_M, QT_Q5_K},
    {"Q6_K", QUANTIZE_FT_Q6_K, QT_Q6_K},
};
enum { N_FTYPES = sizeof g_ftypes / sizeof g_ftypes[0] };

int quantize_ftype_from_name(const char *name)
{
    if (!name) return -1;
    if (!strcasecmp(name, "Q4_K")) return QUANTIZE_FT_Q4_K_M;
    if (!strcasecmp(name, "Q5_K")) return QUANTIZE_FT_Q5_K_M;
    for (int i = 0; i < N_FTYPES; i++)
        if (!strcasecmp(name, g_ftypes[i].name)) return g_ftypes[i].ftype;
    return -1;
}

const char *quantize_ftype_name(int ftype)
{
    for (int i = 0; i < N_FTYPES; i++)
        if (g_ftypes[i].ftype == ftype) return g_ftypes[i].name;
    return "?";
}

const char *quantize_ftype_list(void)
{
    return "F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K_S Q4_K_M (=Q4_K) Q5_K_S Q5_K_M (=Q5_K) Q6_K";
}

static int ftype_default_type(int ftype)
{
    for (int i = 0; i < N_FTYPES; i++)
        if (g_ftypes[i].ftype == ftype) return g_ftypes[i].default_type;
    return -1;
}

/* ---- the plan ------------------------------------------------------------------------ */

/* What llama_tensor_get_type keeps between calls (quantize_state_impl). */
struct qstate {
    int ftype;
    bool is_falcon;
    bool is_70b;
    int n_expert;
    bool has_output;
    int n_attention_wv, i_attention_wv;
    int n_layer, i_ffn_down;
};

static bool has(const char *s, const char *sub)
{
    return strstr(s, sub) != NULL;
}

static int block_len(int type)
{
    const struct quant_traits *t = quant_traits(type);
    return t ? t->block_len : 1;
}

/* llama.cpp's use_more_bits: the first and last eighth of the layers and every third. */
static bool use_more_bits(int i_layer, int n_layers)
{
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

/* N of a name "blk.N...." (as llama.cpp's sscanf "blk.%d." reads it, but without its
 * undefined behaviour on overflow: more than 9 digits count as no number); -1 if none. */
static int layer_key(const char *name)
{
    if (strncmp(name, "blk.", 4) != 0) return -1;
    const char *p = name + 4;
    bool neg = *p == '-';
    if (*p == '-' || *p == '+') p++;
    int v = 0, n = 0;
    while (*p >= '0' && *p <= '9' && n < 10) v = v * 10 + (*p++ - '0'), n++;
    if (n == 0 || n > 9) return -1;
    return neg ? -v : v;
}

/* Layer of an expert tensor from its name ("blk.N."), or the running counter. */
static int layer_of(const char *name, int counter, int n_expert)
{
    int layer = n_expert > 1 ? layer_key(name) : -1;
    return layer >= 0 ? layer : counter;
}

/* llama_tensor_get_type for the file types we produce (the IQ / TQ / Q2_K / Q3_K
 * branches of the original cannot be reached from them). */
static int tensor_get_type(struct qstate *qs, int new_type, const char *name, int64_t ne0)
{
    int ft = qs->ftype;
    if (!strcmp(name, "output.weight") || (!qs->has_output && !strcmp(name, "token_embd.weight"))) {
        if (qs->is_falcon || ne0 % block_len(new_type) != 0)
            new_type = QT_Q8_0;
        else if (new_type != QT_Q8_0)
            new_type = QT_Q6_K;
    } else if (!strcmp(name, "token_embd.weight")) {
        /* only the IQ / TQ types change it */
    } else if (has(name, "attn_v.weight")) {
        if ((ft == QUANTIZE_FT_Q4_K_M || ft == QUANTIZE_FT_Q5_K_M) &&
            use_more_bits(qs->i_attention_wv, qs->n_attention_wv))
            new_type = QT_Q6_K;
        else if (ft == QUANTIZE_FT_Q4_K_S && qs->i_attention_wv < 4)
            new_type = QT_Q5_K;
        if (qs->is_70b && (new_type == QT_Q3_K || new_type == QT_Q4_K)) new_type = QT_Q5_K;
        if (qs->n_expert == 8) new_type = QT_Q8_0;
        qs->i_attention_wv++;
    } else if (has(name, "attn_k.weight")) {
        if (qs->n_expert == 8) new_type = QT_Q8_0;
    } else if (has(name, "ffn_down")) {
        int i_layer = layer_of(name, qs->i_ffn_down, qs->n_expert), n_layer = qs->n_layer;
        if (ft == QUANTIZE_FT_Q4_K_M) {
            if (qs->is_falcon)
                new_type = i_layer < n_layer / 16 ? QT_Q6_K : use_more_bits(i_layer, n_layer) ? QT_Q5_K : QT_Q4_K;
            else if (use_more_bits(i_layer, n_layer))
                new_type = QT_Q6_K;
        } else if (ft == QUANTIZE_FT_Q5_K_M && use_more_bits(i_layer, n_layer)) {
            new_type = QT_Q6_K;
        } else if (ft == QUANTIZE_FT_Q4_K_S && !qs->is_falcon && i_layer < n_layer / 8) {
            new_type = QT_Q5_K;
        }
        qs->i_ffn_down++;
    } else if (has(name, "attn_output.weight")) {
        if (!qs->is_falcon && qs->n_expert == 8 && (ft == QUANTIZE_FT_Q4_K_S || ft == QUANTIZE_FT_Q4_K_M))
            new_type = QT_Q5_K;
    } else if (has(name, "attn_qkv.weight")) {
        if (ft == QUANTIZE_FT_Q4_K_M) new_type = QT_Q5_K;
        else if (ft == QUANTIZE_FT_Q5_K_M) new_type = QT_Q6_K;
    }
    /* Rows that do not split into whole blocks: llama.cpp's fallbacks, then F16. */
    if (ne0 % block_len(new_type) != 0) {
        switch (new_type) {
        case QT_Q4_K: new_type = QT_Q5_0; break;
        case QT_Q5_K: new_type = QT_Q5_1; break;
        case QT_Q6_K: new_type = QT_Q8_0; break;
        default: new_type = QT_F16; break; /* llama.cpp fails here; we keep the tensor usable */
        }
        if (ne0 % block_len(new_type) != 0) new_type = QT_F16;
    }
    return new_type;
}

static int effective_dims(const struct gguf_tensor *t)
{
    int n = 1;
    for (int d = 1; d < GGUF_MAX_DIMS; d++)
        if (t->ne[d] > 1) n = d + 1;
    return n;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* llama_model_quantize_impl's test of which tensors get the file type at all. */
static bool is_quantizable(const char *name, const struct gguf_tensor *t)
{
    static const char *const never[] = {
        "_norm.weight", "ffn_gate_inp.weight", "ssm_conv1d.weight", "time_mix_first.weight",
        "time_mix_w1.weight", "time_mix_w2.weight", "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight",
    };
    if (!ends_with(name, "weight") || effective_dims(t) < 2) return false;
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
        if (has(name, never[i])) return false;
    return strcmp(name, "position_embd.weight") != 0 && strcmp(name, "token_types.weight") != 0;
}

/* llama.cpp's weight_name_comparer: by layer ("blk.N."; others first), then by name. */
static int plan_cmp(const void *a, const void *b)
{
    const struct quantize_plan_entry *x = a, *y = b;
    int la = layer_key(x->name), lb = layer_key(y->name);
    if (la != lb) return la < lb ? -1 : 1;
    return strcmp(x->name, y->name);
}

static void state_init(struct qstate *qs, const struct gguf *g, int ftype, const struct quantize_plan_entry *plan,
                       int64_t n)
{
    memset(qs, 0, sizeof *qs);
    qs->ftype = ftype;
    char *arch = gguf_get_str_dup(g, "general.architecture");
    char key[160];
    const char *a = arch ? arch : "llama";
    snprintf(key, sizeof key, "%s.block_count", a);
    qs->n_layer = (int)gguf_get_u32_or(g, key, 0);
    snprintf(key, sizeof key, "%s.expert_count", a);
    qs->n_expert = (int)gguf_get_u32_or(g, key, 0);
    snprintf(key, sizeof key, "%s.attention.head_count", a);
    uint32_t n_head = gguf_get_u32_or(g, key, 0);
    snprintf(key, sizeof key, "%s.attention.head_count_kv", a);
    uint32_t n_head_kv = gguf_get_u32_or(g, key, n_head);
    qs->is_falcon = !strcmp(a, "falcon");
    /* llama.cpp's LLM_TYPE_70B (80 layers, grouped-query attention for llama). */
    qs->is_70b = qs->n_layer == 80 && ((!strcmp(a, "llama") && n_head != n_head_kv) || !strcmp(a, "qwen2"));
    free(arch);
    bool have_n_layer = qs->n_layer > 0;
    for (int64_t i = 0; i < n; i++) {
        const char *nm = plan[i].name;
        int layer = layer_key(nm);
        if (has(nm, "attn_v.weight") || has(nm, "attn_qkv.weight") || has(nm, "attn_kv_b.weight"))
            qs->n_attention_wv++;
        else if (!strcmp(nm, "output.weight"))
            qs->has_output = true;
        if (!have_n_layer && layer >= qs->n_layer && layer < 1 << 20) qs->n_layer = layer + 1;
    }
}

void quantize_plan_free(struct quantize_plan_entry *plan, int64_t n)
{
    if (!plan) return;
    for (int64_t i = 0; i < n; i++) free(plan[i].name);
    free(plan);
}

int quantize_plan(const struct gguf *g, int ftype, struct quantize_plan_entry **out, int64_t *n_out, char *err,
                  size_t err_cap)
{
    *out = NULL;
    *n_out = 0;
    int default_type = ftype_default_type(ftype);
    if (default_type < 0) return err_set(err, err_cap, MESH_EINVAL, "unknown file type %d", ftype);
    int64_t n = gguf_tensor_count(g);
    struct quantize_plan_entry *plan = calloc((size_t)(n ? n : 1), sizeof *plan);
    if (!plan) return err_set(err, err_cap, MESH_ENOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        plan[i].name = malloc((size_t)t->name.len + 1);
        if (!plan[i].name) {
            quantize_plan_free(plan, n);
            return err_set(err, err_cap, MESH_ENOMEM, "out of memory");
        }
        memcpy(plan[i].name, t->name.ptr, (size_t)t->name.len);
        plan[i].name[t->name.len] = 0;
        plan[i].src = i;
        plan[i].type_in = plan[i].type_out = t->type;
    }
    qsort(plan, (size_t)n, sizeof *plan, plan_cmp);
    struct qstate qs;
    state_init(&qs, g, ftype, plan, n);
    bool default_is_quantized = quant_traits(default_type)->is_quantized;
    for (int64_t i = 0; i < n; i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, plan[i].src);
        if (!is_quantizable(plan[i].name, t)) continue;
        int type = default_type;
        if (default_is_quantized) type = tensor_get_type(&qs, type, plan[i].name, t->ne[0]);
        plan[i].type_out = type;
    }
    *out = plan;
    *n_out = n;
    return 0;
}

/* ---- the data path -------------------------------------------------------------------- */

struct qjob {
    const uint8_t *src; /* first input row */
    uint8_t *dst;       /* first output row */
    int64_t n_rows, ne0;
    size_t src_row, dst_row;
    const struct quant_traits *in, *out;
    float **scratch; /* one row of floats per thread */
};

static void qjob_run(void *arg, int ith, int nth)
{
    struct qjob *j = arg;
    int64_t per = (j->n_rows + nth - 1) / nth;
    int64_t r0 = per * ith, r1 = r0 + per < j->n_rows ? r0 + per : j->n_rows;
    float *f = j->scratch[ith];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *s = j->src + (size_t)r * j->src_row;
        uint8_t *d = j->dst + (size_t)r * j->dst_row;
        if (j->in == quant_traits(QT_F32))
            memcpy(f, s, (size_t)j->ne0 * sizeof *f); /* file rows are only 4-byte aligned */
        else
            j->in->to_float(s, f, j->ne0);
        if (j->out == quant_traits(QT_F32))
            memcpy(d, f, (size_t)j->ne0 * sizeof *f);
        else
            j->out->from_float(f, d, j->ne0);
    }
}

struct qrun {
    const struct gguf *g;
    const struct quantize_plan_entry *plan;
    int64_t n;
    struct pool *pool;
    float **scratch;
    quantize_progress_fn progress;
    void *user;
    uint64_t bytes_done, bytes_total;
};

/* Input rows are read once: let the kernel drop their pages (the mapping is read-only
 * and file-backed, so this only frees memory) to keep multi-GB runs from filling RAM. */
static void drop_pages(const void *p, size_t len)
{
    long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0) return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)ps - 1) & ~((uintptr_t)ps - 1);
    uintptr_t b = ((uintptr_t)p + len) & ~((uintptr_t)ps - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

static int qrun_fill(void *user, int64_t i, int64_t row0, int64_t n_rows, void *dst, size_t size)
{
    struct qrun *q = user;
    const struct quantize_plan_entry *e = &q->plan[i];
    const struct gguf_tensor *t = gguf_tensor_at(q->g, e->src);
    size_t src_row = quant_row_bytes(t->type, t->ne[0]);
    const uint8_t *src = (const uint8_t *)t->data + (size_t)row0 * src_row;
    if (e->type_in == e->type_out) {
        memcpy(dst, src, size);
    } else {
        struct qjob j = {
            .src = src, .dst = dst, .n_rows = n_rows, .ne0 = t->ne[0], .src_row = src_row,
            .dst_row = quant_row_bytes(e->type_out, t->ne[0]), .in = quant_traits(e->type_in),
            .out = quant_traits(e->type_out), .scratch = q->scratch,
        };
        pool_run(q->pool, qjob_run, &j);
    }
    drop_pages(src, (size_t)n_rows * src_row);
    q->bytes_done += size;
    if (q->progress) {
        struct quantize_progress p = {
            .i_tensor = i, .n_tensors = q->n, .name = e->name, .type_in = e->type_in,
            .type_out = e->type_out, .bytes_done = q->bytes_done, .bytes_total = q->bytes_total,
        };
        q->progress(q->user, &p);
    }
    return 0;
}

/* Checks that every conversion in the plan is one we can do. */
static int plan_check(const char *in_path, const struct quantize_plan_entry *plan, int64_t n, char *err,
                      size_t err_cap)
{
    for (int64_t i = 0; i < n; i++) {
        const struct quantize_plan_entry *e = &plan[i];
        if (e->type_in == e->type_out) continue;
        const struct quant_traits *in = quant_traits(e->type_in), *out = quant_traits(e->type_out);
        if (in->is_quantized)
            return err_set(err, err_cap, MESH_EUNSUPPORTED,
                           "%s: tensor '%s' is already quantized (%s); re-quantizing to %s is not supported, "
                           "start from an F32/F16/BF16 file",
                           in_path, e->name, in->name, out->name);
        if ((e->type_in != QT_F32 && !in->to_float) || (e->type_out != QT_F32 && !out->from_float))
            return err_set(err, err_cap, MESH_EUNSUPPORTED, "%s: tensor '%s': cannot convert %s to %s", in_path,
                           e->name, in->name, out->name);
    }
    return 0;
}

/* Metadata: every input key but the file type, quantization version and split keys,
 * which are set (appended, as llama.cpp does) afterwards. */
static int copy_metadata(struct gguf_writer *w, const struct gguf *g, int ftype)
{
    static const char *const skip[] = {"general.file_type", "general.quantization_version", "split.no",
                                       "split.count", "split.tensors.count"};
    for (int64_t i = 0; i < gguf_kv_count(g); i++) {
        struct gguf_str k = gguf_kv_key(g, i);
        bool skipped = false;
        for (size_t s = 0; s < sizeof skip / sizeof skip[0]; s++)
            skipped |= k.len == strlen(skip[s]) && !memcmp(k.ptr, skip[s], (size_t)k.len);
        if (skipped) continue;
        int rc = gguf_writer_copy_kv(w, g, i);
        if (rc) return rc;
    }
    int rc = gguf_writer_set_u32(w, "general.quantization_version", QUANTIZE_QNT_VERSION);
    return rc ? rc : gguf_writer_set_u32(w, "general.file_type", (uint32_t)ftype);
}

int quantize_model(const char *in_path, const char *out_path, int ftype, int n_threads,
                   quantize_progress_fn progress, void *user, char *err, size_t err_cap)
{
    struct gguf *g = NULL;
    struct gguf_writer *w = NULL;
    struct quantize_plan_entry *plan = NULL;
    int64_t n = 0;
    struct qrun q = {0};
    int nth = 0;
    quant_init();
    if (ftype_default_type(ftype) < 0)
        return err_set(err, err_cap, MESH_EINVAL, "unknown file type %d (known: %s)", ftype, quantize_ftype_list());
    int rc = gguf_open(in_path, &g, err, err_cap);
    if (rc) goto out;
    rc = quantize_plan(g, ftype, &plan, &n, err, err_cap);
    if (rc) goto out;
    rc = plan_check(in_path, plan, n, err, err_cap);
    if (rc) goto out;
    rc = gguf_writer_new(&w);
    if (!rc) rc = copy_metadata(w, g, ftype);
    if (rc) {
        err_set(err, err_cap, rc, "%s: cannot copy metadata: %s", in_path, err_str(rc));
        goto out;
    }
    int64_t max_ne0 = 1;
    for (int64_t i = 0; i < n; i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, plan[i].src);
        int64_t idx = gguf_writer_add_tensor(w, plan[i].name, plan[i].type_out, t->n_dims, t->ne, NULL);
        if (idx < 0) {
            rc = err_set(err, err_cap, (int)idx, "%s: tensor '%s': cannot store as %s", in_path, plan[i].name,
                         quant_traits(plan[i].type_out)->name);
            goto out;
        }
        q.bytes_total += gguf_writer_tensor_size(w, idx);
        if (t->ne[0] > max_ne0) max_ne0 = t->ne[0];
    }
    rc = pool_new(n_threads > 0 ? n_threads : 0, &q.pool);
    if (rc) {
        err_set(err, err_cap, rc, "cannot start threads: %s", err_str(rc));
        goto out;
    }
    nth = pool_size(q.pool);
    q.scratch = calloc((size_t)nth, sizeof *q.scratch);
    rc = q.scratch ? 0 : MESH_ENOMEM;
    for (int t = 0; t < nth && !rc; t++) {
        q.scratch[t] = malloc((size_t)max_ne0 * sizeof(float));
        if (!q.scratch[t]) rc = MESH_ENOMEM;
    }
    if (rc) {
        err_set(err, err_cap, rc, "out of memory for row buffers");
        goto out;
    }
    q.g = g;
    q.plan = plan;
    q.n = n;
    q.progress = progress;
    q.user = user;
    rc = gguf_writer_write_rows(w, out_path, qrun_fill, &q, err, err_cap);
out:
    if (q.scratch)
        for (int t = 0; t < nth; t++) free(q.scratch[t]);
    free(q.scratch);
    pool_free(q.pool);
    gguf_writer_free(w);
    quantize_plan_free(plan, n);
    gguf_close(g);
    return rc;
}
