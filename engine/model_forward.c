/* model_forward.c - inference contexts and the forward pass of Llama-family models.
 *
 * The forward pass reads top to bottom like llama2.c's forward(): embedding, then per
 * layer RMSNorm -> Q/K/V (+bias) -> RoPE -> KV cache -> causal GQA attention -> output
 * projection -> residual -> RMSNorm -> SwiGLU FFN -> residual, then final RMSNorm and the
 * output head. Numerics follow llama.cpp's CPU backend so greedy outputs agree: matmul
 * activations are converted to the weight's vec_dot_type (Q8_0, Q8_K, F16...) before the
 * dot products, RMSNorm sums in double, and with an F16 KV cache the query and the
 * attention probabilities are rounded to F16 as ggml's F16 matmuls do.
 * Not here: flash attention, YaRN, sliding windows, non-Llama architectures.
 */
#include "engine/model.h"

#include "core/err.h"
#include "core/log.h"
#include "core/pool.h"
#include "engine/act.h"
#include "engine/attn.h"
#include "engine/gemm.h"
#include "engine/model_internal.h"
#include "engine/quant.h"
#include "engine/quant_blocks.h"
#include "engine/repack.h"

#include <stdatomic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct model_ctx {
    const struct model *m;
    struct pool *pool;
    int n_ctx, n_batch, n_seq, n_threads;
    int layer_begin, layer_end;
    enum model_kv_type k_type, v_type;
    int q_dim, kv_dim;       /* n_head * head_dim, n_head_kv * head_dim */
    /* KV cache: [layer - layer_begin][seq][pos][kv_dim] elements of k_type / v_type (a
     * quantized row is kv_dim / 32 blocks); kv_bytes() turns an element index into bytes. */
    void *k_cache, *v_cache;
    int *seq_len;            /* [n_seq] positions cached per sequence */
    int *seq_next;           /* [n_seq] scratch for batch validation */
    float *rope_freq;        /* [rope_dim / 2] angle per position for each pair */
    /* Scratch for n_batch tokens (no allocation per token). */
    float *xb;               /* [n_batch][max(n_embd, q_dim)] normed input / projection out */
    float *q;                /* [n_batch][q_dim] */
    float *k, *v;            /* [n_batch][kv_dim] */
    float *att_out;          /* [n_batch][q_dim] */
    float *hb, *hb2;         /* [n_batch][n_ff] */
    float *x_embd;           /* [n_batch][n_embd] for model_decode */
    float *x_head;           /* [n_batch][n_embd] rows that want logits */
    void *act_q;             /* MM_MAX_PARTS slots of [n_batch][act_q_row_cap]: activations
                              * in each vec_dot_type a fused matmul needs */
    size_t act_q_row_cap, act_q_slot;
    void *gemm_aux;          /* MM_MAX_PARTS slots of [n_batch][gemm_aux_col]: activation
                              * sums for gemm_q4_0_q8_0 (prompt batches) */
    size_t gemm_aux_col, gemm_aux_slot;
    int32_t *act_sum;        /* MM_MAX_PARTS slots of [n_batch][max_cols / 32]: Q8_0 block
                              * sums of act_q's rows, for packed kernels */
    size_t act_sum_slot;
    void *att_scratch;       /* [n_threads][att_scratch_bytes] for attn_group */
    size_t att_scratch_bytes; /* attn_scratch_bytes(head_dim, group size, n_ctx), 64-aligned */
    act_swiglu_fn swiglu;    /* SwiGLU for this CPU (engine/act.h) */
    bool profile;            /* time the steps into prof_ms */
    double prof_ms[MODEL_PROF_COUNT];
    struct timespec prof_t;  /* end of the last timed step */
};

void model_ctx_profile_enable(struct model_ctx *c, bool on)
{
    c->profile = on;
    clock_gettime(CLOCK_MONOTONIC, &c->prof_t);
}

void model_ctx_profile_get(const struct model_ctx *c, double ms[MODEL_PROF_COUNT])
{
    memcpy(ms, c->prof_ms, sizeof c->prof_ms);
}

void model_ctx_profile_reset(struct model_ctx *c)
{
    memset(c->prof_ms, 0, sizeof c->prof_ms);
    clock_gettime(CLOCK_MONOTONIC, &c->prof_t);
}

const char *model_prof_step_name(int step)
{
    static const char *const names[MODEL_PROF_COUNT] = {
        "embed", "norm", "qkv", "rope+kv", "attn", "wo", "ffn_up", "ffn_down", "head"};
    return step >= 0 && step < MODEL_PROF_COUNT ? names[step] : "?";
}

/* Charges the time since the last mark to `step`. */
static inline void prof_mark(struct model_ctx *c, enum model_prof_step step)
{
    if (!c->profile) return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    c->prof_ms[step] += (double)(now.tv_sec - c->prof_t.tv_sec) * 1e3 +
                        (double)(now.tv_nsec - c->prof_t.tv_nsec) * 1e-6;
    c->prof_t = now;
}

void model_ctx_params_default(struct model_ctx_params *p)
{
    memset(p, 0, sizeof *p);
    p->k_type = MODEL_KV_F16;
    p->v_type = MODEL_KV_F16;
}

const char *model_kv_type_name(enum model_kv_type t)
{
    switch (t) {
    case MODEL_KV_F16: return "f16";
    case MODEL_KV_F32: return "f32";
    case MODEL_KV_Q8_0: return "q8_0";
    case MODEL_KV_Q4_0: return "q4_0";
    }
    return NULL;
}

int model_kv_type_parse(const char *s)
{
    for (int t = MODEL_KV_F16; t <= MODEL_KV_Q4_0; t++)
        if (s && strcmp(s, model_kv_type_name((enum model_kv_type)t)) == 0) return t;
    return -1;
}

/* Bytes of n_elem cached elements of type t; n_elem is a multiple of 32 for quantized
 * types (whole rows, or the start of one). */
static inline size_t kv_bytes(enum model_kv_type t, size_t n_elem)
{
    switch (t) {
    case MODEL_KV_F16: return n_elem * 2;
    case MODEL_KV_F32: return n_elem * 4;
    case MODEL_KV_Q8_0: return n_elem / 32 * sizeof(struct block_q8_0);
    case MODEL_KV_Q4_0: return n_elem / 32 * sizeof(struct block_q4_0);
    }
    return 0;
}

static enum attn_kv_type kv_attn_type(enum model_kv_type t)
{
    switch (t) {
    case MODEL_KV_F16: return ATTN_KV_F16;
    case MODEL_KV_F32: return ATTN_KV_F32;
    case MODEL_KV_Q8_0: return ATTN_KV_Q8_0;
    case MODEL_KV_Q4_0: return ATTN_KV_Q4_0;
    }
    return ATTN_KV_F32;
}

/* Row src[kv_dim] into the cache at element index at (a row start), as type t. */
static void kv_store(enum model_kv_type t, void *cache, size_t at, const float *src, int n)
{
    uint8_t *dst = (uint8_t *)cache + kv_bytes(t, at);
    switch (t) {
    case MODEL_KV_F16: quant_f32_to_f16_row(src, (uint16_t *)dst, n); break;
    case MODEL_KV_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case MODEL_KV_Q8_0: quant_traits(QT_Q8_0)->from_float(src, dst, n); break;
    case MODEL_KV_Q4_0: quant_traits(QT_Q4_0)->from_float(src, dst, n); break;
    }
}

size_t model_ctx_kv_bytes(const struct model_ctx *c)
{
    size_t n = (size_t)(c->layer_end - c->layer_begin) * (size_t)c->n_seq * (size_t)c->n_ctx *
               (size_t)c->kv_dim;
    return kv_bytes(c->k_type, n) + kv_bytes(c->v_type, n);
}

size_t model_ctx_kv_f16_bytes(const struct model_ctx *c)
{
    size_t n = (size_t)(c->layer_end - c->layer_begin) * (size_t)c->n_seq * (size_t)c->n_ctx *
               (size_t)c->kv_dim;
    return 2 * kv_bytes(MODEL_KV_F16, n);
}

int model_ctx_kv_describe(const struct model_ctx *c, char *buf, size_t cap)
{
    const double mib = 1024.0 * 1024.0;
    return snprintf(buf, cap, "KV cache: %s/%s, %d ctx x %d slot%s = %.2f MiB (f16 would be %.2f MiB)",
                    model_kv_type_name(c->k_type), model_kv_type_name(c->v_type), c->n_ctx,
                    c->n_seq, c->n_seq == 1 ? "" : "s", (double)model_ctx_kv_bytes(c) / mib,
                    (double)model_ctx_kv_f16_bytes(c) / mib);
}

int model_ctx_n_seq(const struct model_ctx *c) { return c->n_seq; }
int model_ctx_n_ctx(const struct model_ctx *c) { return c->n_ctx; }
int model_ctx_n_batch(const struct model_ctx *c) { return c->n_batch; }
int model_ctx_n_threads(const struct model_ctx *c) { return c->n_threads; }
const struct model *model_ctx_model(const struct model_ctx *c) { return c->m; }

void model_ctx_free(struct model_ctx *c)
{
    if (!c) return;
    pool_free(c->pool);
    free(c->k_cache);
    free(c->v_cache);
    free(c->seq_len);
    free(c->seq_next);
    free(c->rope_freq);
    free(c->xb);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->att_out);
    free(c->hb);
    free(c->hb2);
    free(c->x_embd);
    free(c->x_head);
    free(c->act_q);
    free(c->gemm_aux);
    free(c->act_sum);
    free(c->att_scratch);
    free(c);
}

/* calloc of a * b * c bytes with overflow check. */
static void *calloc3(size_t a, size_t b, size_t c)
{
    if (a == 0 || b == 0 || c == 0) return calloc(1, 1);
    if (a > SIZE_MAX / b || a * b > SIZE_MAX / c) return NULL;
    return calloc(a * b, c);
}

/* Largest activation row (in bytes) any matmul of the model will quantize into;
 * *max_cols = the largest input width. */
static size_t max_act_row_bytes(const struct model *m, int64_t *max_cols)
{
    *max_cols = 0;
    const struct model_hparams *hp = &m->hp;
    size_t best = 0;
    const struct model_tensor *ts[7];
    for (int il = -1; il < hp->n_layer; il++) {
        int n = 0;
        if (il < 0) {
            ts[n++] = &m->output;
        } else {
            const struct model_layer *l = &m->layers[il];
            ts[n++] = &l->wq;
            ts[n++] = &l->wk;
            ts[n++] = &l->wv;
            ts[n++] = &l->wo;
            ts[n++] = &l->w_gate;
            ts[n++] = &l->w_up;
            ts[n++] = &l->w_down;
        }
        for (int i = 0; i < n; i++) {
            const struct quant_traits *tr = quant_traits(ts[i]->type);
            size_t b = quant_row_bytes(tr->vec_dot_type, ts[i]->ne0);
            if (b > best) best = b;
            if (ts[i]->ne0 > *max_cols) *max_cols = ts[i]->ne0;
        }
    }
    return best;
}

int model_ctx_new(const struct model *m, const struct model_ctx_params *p_in,
                  struct model_ctx **out, char *err, size_t err_cap)
{
    *out = NULL;
    const struct model_hparams *hp = &m->hp;
    struct model_ctx_params p;
    if (p_in) p = *p_in;
    else model_ctx_params_default(&p);
    if (p.n_ctx <= 0) p.n_ctx = hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    if (p.n_batch <= 0) p.n_batch = 512;
    if (p.n_seq <= 0) p.n_seq = 1;
    if (p.layer_begin == 0 && p.layer_end == 0) p.layer_end = hp->n_layer;
    if (p.n_ctx > (1 << 24) || p.n_batch > (1 << 16) || p.n_seq > 4096)
        return err_set(err, err_cap, MESH_EINVAL, "context of %d x %d sequences is too large",
                       p.n_ctx, p.n_seq);
    if (p.layer_begin < 0 || p.layer_end > hp->n_layer || p.layer_begin > p.layer_end)
        return err_set(err, err_cap, MESH_EINVAL, "layer range [%d, %d) outside the model's %d layers",
                       p.layer_begin, p.layer_end, hp->n_layer);
    if (!model_kv_type_name(p.k_type) || !model_kv_type_name(p.v_type))
        return err_set(err, err_cap, MESH_EINVAL, "unknown KV cache type %d",
                       !model_kv_type_name(p.k_type) ? (int)p.k_type : (int)p.v_type);
    int kv_dim = hp->n_head_kv * hp->head_dim;
    if ((p.k_type >= MODEL_KV_Q8_0 || p.v_type >= MODEL_KV_Q8_0) && kv_dim % 32 != 0)
        return err_set(err, err_cap, MESH_EUNSUPPORTED,
                       "a %s KV cache needs n_head_kv * head_dim (%d) to be a multiple of 32",
                       model_kv_type_name(p.k_type >= MODEL_KV_Q8_0 ? p.k_type : p.v_type), kv_dim);

    struct model_ctx *c = calloc(1, sizeof *c);
    if (!c) return MESH_ENOMEM;
    c->m = m;
    c->n_ctx = p.n_ctx;
    c->n_batch = p.n_batch;
    c->n_seq = p.n_seq;
    c->layer_begin = p.layer_begin;
    c->layer_end = p.layer_end;
    c->k_type = p.k_type;
    c->v_type = p.v_type;
    c->swiglu = act_swiglu_select();
    c->q_dim = hp->n_head * hp->head_dim;
    c->kv_dim = hp->n_head_kv * hp->head_dim;
    int rc = pool_new(p.n_threads, &c->pool);
    if (rc < 0) goto fail;
    c->n_threads = pool_size(c->pool);

    size_t n_layers = (size_t)(c->layer_end - c->layer_begin);
    size_t kv_elems_per_layer = (size_t)c->n_seq * (size_t)c->n_ctx * (size_t)c->kv_dim;
    size_t nb = (size_t)c->n_batch;
    int wide = hp->n_embd > c->q_dim ? hp->n_embd : c->q_dim;
    c->k_cache = calloc3(n_layers, kv_bytes(c->k_type, kv_elems_per_layer), 1);
    c->v_cache = calloc3(n_layers, kv_bytes(c->v_type, kv_elems_per_layer), 1);
    c->seq_len = calloc((size_t)c->n_seq, sizeof(int));
    c->seq_next = calloc((size_t)c->n_seq, sizeof(int));
    c->rope_freq = calloc((size_t)hp->rope_dim / 2, sizeof(float));
    c->xb = calloc3(nb, (size_t)wide, sizeof(float));
    c->q = calloc3(nb, (size_t)c->q_dim, sizeof(float));
    c->k = calloc3(nb, (size_t)c->kv_dim, sizeof(float));
    c->v = calloc3(nb, (size_t)c->kv_dim, sizeof(float));
    c->att_out = calloc3(nb, (size_t)c->q_dim, sizeof(float));
    c->hb = calloc3(nb, (size_t)hp->n_ff, sizeof(float));
    c->hb2 = calloc3(nb, (size_t)hp->n_ff, sizeof(float));
    c->x_embd = calloc3(nb, (size_t)hp->n_embd, sizeof(float));
    c->x_head = calloc3(nb, (size_t)hp->n_embd, sizeof(float));
    int64_t max_cols;
    c->act_q_row_cap = (max_act_row_bytes(m, &max_cols) + 63) & ~(size_t)63;
    if (max_cols > (1 << 24)) max_cols = 1 << 24; /* rows that wide do not load anyway */
    c->gemm_aux_col = gemm_q8_0_aux_bytes((int)max_cols, 1);
    c->gemm_aux_slot = nb * c->gemm_aux_col;
    c->gemm_aux = calloc3(3, nb, c->gemm_aux_col);
    c->act_q_slot = nb * c->act_q_row_cap;
    c->act_q = calloc3(3, nb, c->act_q_row_cap);
    c->act_sum_slot = nb * (size_t)(max_cols / 32 + 1);
    c->act_sum = calloc3(3, c->act_sum_slot, sizeof(int32_t));
    int att_group = hp->n_head / hp->n_head_kv;
    if (att_group > ATTN_MAX_GROUP) att_group = ATTN_MAX_GROUP; /* attn_worker's largest unit */
    c->att_scratch_bytes = (attn_scratch_bytes(hp->head_dim, att_group, c->n_ctx) + 63) & ~(size_t)63;
    if (c->att_scratch_bytes > 0 && (size_t)c->n_threads <= SIZE_MAX / c->att_scratch_bytes)
        c->att_scratch = aligned_alloc(64, (size_t)c->n_threads * c->att_scratch_bytes);
    if (!c->k_cache || !c->v_cache || !c->seq_len || !c->seq_next || !c->rope_freq || !c->xb ||
        !c->q || !c->k || !c->v || !c->att_out || !c->hb || !c->hb2 || !c->x_embd ||
        !c->x_head || !c->act_q || !c->gemm_aux || !c->act_sum || !c->att_scratch) {
        rc = err_set(err, err_cap, MESH_ENOMEM,
                     "not enough memory for a context of %d positions x %d sequences "
                     "(try a smaller --ctx)", c->n_ctx, c->n_seq);
        goto fail;
    }
    /* theta_i = pos * freq_scale * base^(-2i/rope_dim) / factor_i  (RoPE, Su et al. 2021) */
    for (int i = 0; i < hp->rope_dim / 2; i++)
        c->rope_freq[i] = hp->rope_freq_scale *
                          powf(hp->rope_theta, -(float)(2 * i) / (float)hp->rope_dim) /
                          m->rope_factors[i];
    *out = c;
    return 0;
fail:
    model_ctx_free(c);
    return rc;
}

void model_kv_seq_truncate(struct model_ctx *c, int seq, int pos_from)
{
    if (seq < 0 || seq >= c->n_seq) return;
    if (pos_from < 0) pos_from = 0;
    if (c->seq_len[seq] > pos_from) c->seq_len[seq] = pos_from;
}

int model_kv_seq_len(const struct model_ctx *c, int seq)
{
    return seq >= 0 && seq < c->n_seq ? c->seq_len[seq] : 0;
}

/* ---- kernels on the thread pool ------------------------------------------------------ */

/* Matrix products. A job is up to 3 weight matrices applied to the same n_tok inputs
 * (Q/K/V, or gate/up): the inputs are converted to each distinct vec_dot_type once, and
 * all matrices run in one pool job, so one barrier instead of three. Threads claim row
 * chunks (mm_claim: long first, MM_CHUNK rows last) from an atomic counter: an evenly
 * split matrix when every thread runs, and no stall when one is descheduled on a busy
 * machine. A chunk is one packed-kernel call (engine/repack.h) or, for unpacked
 * weights, one vec_dot_rows call for one token and one tile product for several. With `swiglu`, parts 0 and 1 are gate and up and a chunk also writes
 * silu(gate) * up over its rows into part 0's output, saving a pass and a barrier. */
enum { MM_CHUNK = 32, MM_MAX_PARTS = 3 };
_Static_assert(MM_CHUNK % REPACK_GROUP == 0, "chunks start on packed group boundaries");

struct mm_part {
    const struct model_tensor *w;
    const struct quant_traits *tr;
    const uint8_t *xq;       /* n_tok activation rows in vec_dot_type */
    size_t xq_stride;        /* bytes between them */
    const void *aux;         /* their gemm_q8_0_prepare sums, or NULL */
    const int32_t *ysum;     /* their repack_q8_0_sums (w->ne0 / 32 per row), or NULL */
    float *out;
    int out_stride;          /* floats between output rows */
};

struct mm_job {
    struct mm_part part[MM_MAX_PARTS];
    int n_parts;
    int n_tok;
    bool swiglu;
    act_swiglu_fn swiglu_fn;
    int64_t n_rows;          /* rows of all parts (for swiglu, of part 0) */
    _Atomic int64_t next;    /* first row not yet claimed, counted across the parts */
};

static void mm_chunk(const struct mm_part *pt, int n_tok, int64_t r0, int64_t r1)
{
    const struct model_tensor *w = pt->w;
    int nr = (int)(r1 - r0), n = (int)w->ne0;
    if (w->pack_kind) {
        /* r0 is a multiple of MM_CHUNK, so of REPACK_GROUP; rows past pack_rows are the
         * copied tail */
        int np = (int)((r1 < w->pack_rows ? r1 : w->pack_rows) - r0);
        if (np > 0) {
            const uint8_t *xg = (const uint8_t *)w->pack +
                                (size_t)(r0 / REPACK_GROUP) * w->pack_kind->bytes(n, REPACK_GROUP);
            w->pack_kind->gemm(n, pt->out + r0, (size_t)pt->out_stride, xg, np, pt->xq,
                               pt->xq_stride, pt->ysum, n_tok);
        }
        if (np < 0) np = 0;
        if (np < nr) {
            const uint8_t *tail = (const uint8_t *)w->pack_tail +
                                  (size_t)(r0 + np - w->pack_rows) * w->row_bytes;
            if (n_tok == 1)
                quant_vec_dot_rows(pt->tr, n, pt->out + r0 + np, tail, w->row_bytes, pt->xq, nr - np);
            else
                quant_gemm(pt->tr, n, pt->out + r0 + np, (size_t)pt->out_stride, tail, w->row_bytes,
                           nr - np, pt->xq, pt->xq_stride, n_tok);
        }
        return;
    }
    const uint8_t *wrow = (const uint8_t *)w->data + (size_t)r0 * w->row_bytes;
    if (n_tok == 1)
        quant_vec_dot_rows(pt->tr, n, pt->out + r0, wrow, w->row_bytes, pt->xq, nr);
    else if (pt->aux && w->type == QT_Q4_0)
        gemm_q4_0_q8_0(n, pt->out + r0, (size_t)pt->out_stride, wrow, w->row_bytes, nr,
                       pt->xq, pt->xq_stride, n_tok, pt->aux);
    else if (pt->aux)
        gemm_q8_0_q8_0(n, pt->out + r0, (size_t)pt->out_stride, wrow, w->row_bytes, nr,
                       pt->xq, pt->xq_stride, n_tok, pt->aux);
    else
        quant_gemm(pt->tr, n, pt->out + r0, (size_t)pt->out_stride, wrow, w->row_bytes, nr,
                   pt->xq, pt->xq_stride, n_tok);
}

/* Claims the next chunk of j's rows: guided self-scheduling over the parts' rows in
 * order (for swiglu only part 0's), a chunk being the rows left over twice the thread
 * count, rounded up to MM_CHUNK, and never crossing into the next part. Early chunks
 * are long (each thread streams contiguous weights, which the prefetchers like), the
 * last ones MM_CHUNK rows, so threads finish together. Returns false when none is left. */
static bool mm_claim(struct mm_job *j, int nth, int *pi, int64_t *r0, int64_t *r1)
{
    int64_t g = atomic_load_explicit(&j->next, memory_order_relaxed);
    for (;;) {
        if (g >= j->n_rows) return false;
        int p = 0;
        int64_t base = 0;
        while (g >= base + j->part[p].w->ne1) base += j->part[p++].w->ne1;
        int64_t size = (j->n_rows - g) / (2 * nth);
        size = (size + MM_CHUNK - 1) / MM_CHUNK * MM_CHUNK;
        if (size < MM_CHUNK) size = MM_CHUNK;
        if (size > base + j->part[p].w->ne1 - g) size = base + j->part[p].w->ne1 - g;
        if (atomic_compare_exchange_weak_explicit(&j->next, &g, g + size, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *pi = p;
            *r0 = g - base;
            *r1 = g - base + size;
            return true;
        }
    }
}

static void mm_worker(void *arg, int ith, int nth)
{
    (void)ith;
    struct mm_job *j = arg;
    int pi;
    int64_t r0, r1;
    while (mm_claim(j, nth, &pi, &r0, &r1)) {
        const struct mm_part *pt = &j->part[pi];
        mm_chunk(pt, j->n_tok, r0, r1);
        if (!j->swiglu) continue;
        const struct mm_part *up = &j->part[1];
        mm_chunk(up, j->n_tok, r0, r1);
        for (int t = 0; t < j->n_tok; t++)
            j->swiglu_fn(pt->out + (size_t)t * pt->out_stride + r0,
                         up->out + (size_t)t * up->out_stride + r0, r1 - r0);
    }
}

struct quantize_job {
    quant_from_float_fn from_float;
    const float *x;
    int x_stride;
    int64_t n_cols;
    uint8_t *dst;
    size_t dst_stride;
    int n_tok;
    uint8_t *aux;            /* non-NULL: also gemm_q8_0_prepare each row here */
    size_t aux_stride;
    int32_t *sums;           /* non-NULL: also repack_q8_0_sums of each row, n_cols / 32 apart */
};

static void quantize_worker(void *arg, int ith, int nth)
{
    const struct quantize_job *j = arg;
    for (int t = ith; t < j->n_tok; t += nth) {
        uint8_t *d = j->dst + (size_t)t * j->dst_stride;
        j->from_float(j->x + (size_t)t * j->x_stride, d, j->n_cols);
        if (j->aux) gemm_q8_0_prepare((int)j->n_cols, d, 0, 1, j->aux + (size_t)t * j->aux_stride);
        if (j->sums) repack_q8_0_sums((int)j->n_cols, d, j->sums + (size_t)t * (size_t)(j->n_cols / 32));
    }
}

/* out_i[n_tok][w_i->ne1] (row stride out_stride_i) = x[n_tok][ne0] (stride x_stride) * W_i^T
 * for the n matrices w[i] (same ne0), in one pool job; swiglu as in struct mm_job. */
static void matmul_n(struct model_ctx *c, int n, const struct model_tensor *const *w,
                     float *const *out, const int *out_stride, const float *x, int x_stride,
                     int n_tok, bool swiglu)
{
    struct mm_job mj = {.n_parts = n, .n_tok = n_tok, .swiglu = swiglu, .swiglu_fn = c->swiglu};
    int q_types[MM_MAX_PARTS], n_q = 0;
    /* prompt batches of unpacked Q4_0 and Q8_0 weights use engine/gemm on sums prepared
     * with the Q8_0 activations; packed weights read only the block sums */
    bool any_aux = false, any_sums = false;
    for (int i = 0; i < n; i++) {
        any_aux |= n_tok > 1 && !w[i]->pack_kind && (w[i]->type == QT_Q4_0 || w[i]->type == QT_Q8_0);
        any_sums |= w[i]->pack_kind && w[i]->pack_kind->needs_ysum;
    }
    for (int i = 0; i < n; i++) {
        struct mm_part *pt = &mj.part[i];
        pt->w = w[i];
        pt->tr = quant_traits(w[i]->type);
        pt->out = out[i];
        pt->out_stride = out_stride[i];
        if (!swiglu || i == 0) mj.n_rows += w[i]->ne1;
        int vt = pt->tr->vec_dot_type;
        if (vt == QT_F32) {
            pt->xq = (const uint8_t *)x;
            pt->xq_stride = (size_t)x_stride * sizeof(float);
            continue;
        }
        /* one converted copy per distinct vec_dot_type, in act_q's slots */
        int k = 0;
        while (k < n_q && q_types[k] != vt) k++;
        uint8_t *dst = (uint8_t *)c->act_q + (size_t)k * c->act_q_slot;
        uint8_t *aux = (uint8_t *)c->gemm_aux + (size_t)k * c->gemm_aux_slot;
        int32_t *sums = c->act_sum + (size_t)k * c->act_sum_slot;
        bool want_sums = any_sums && vt == QT_Q8_0;
        bool want_aux = any_aux && vt == QT_Q8_0;
        pt->aux = want_aux && !w[i]->pack_kind && (w[i]->type == QT_Q4_0 || w[i]->type == QT_Q8_0)
                      ? aux : NULL;
        pt->ysum = want_sums ? sums : NULL;
        if (k == n_q) {
            q_types[n_q++] = vt;
            struct quantize_job qj = {.from_float = quant_traits(vt)->from_float, .x = x,
                                      .x_stride = x_stride, .n_cols = w[i]->ne0, .dst = dst,
                                      .dst_stride = c->act_q_row_cap, .n_tok = n_tok,
                                      .aux = want_aux ? aux : NULL,
                                      /* the kernels find column c at c * this */
                                      .aux_stride = gemm_q8_0_aux_bytes((int)w[i]->ne0, 1),
                                      .sums = want_sums ? sums : NULL};
            if (n_tok >= 4) pool_run(c->pool, quantize_worker, &qj);
            else quantize_worker(&qj, 0, 1);
        }
        pt->xq = dst;
        pt->xq_stride = c->act_q_row_cap;
    }
    atomic_init(&mj.next, 0);
    pool_run(c->pool, mm_worker, &mj);
}

/* out[n_tok][w->ne1] (row stride out_stride) = x[n_tok][w->ne0] (stride x_stride) * W^T. */
static void matmul(struct model_ctx *c, const struct model_tensor *w, const float *x,
                   int x_stride, int n_tok, float *out, int out_stride)
{
    matmul_n(c, 1, &w, &out, &out_stride, x, x_stride, n_tok, false);
}

/* y = x / sqrt(mean(x^2) + eps) * w; the sum in double as ggml does. */
static void rmsnorm(float *y, const float *x, const float *w, int n, float eps)
{
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
    float scale = 1.0f / sqrtf((float)(sum / n) + eps);
    for (int i = 0; i < n; i++) y[i] = (x[i] * scale) * w[i];
}

/* Rotates the first rope_dim dims of each head of vec[n_heads][head_dim] by angles pos*freq.
 * NORM: pairs (2i, 2i+1); NEOX: pairs (i, i + rope_dim/2). */
static void rope(const struct model_ctx *c, float *vec, int n_heads, int pos)
{
    const struct model_hparams *hp = &c->m->hp;
    int half = hp->rope_dim / 2;
    for (int i = 0; i < half; i++) {
        float theta = (float)pos * c->rope_freq[i];
        float cs = cosf(theta), sn = sinf(theta);
        for (int h = 0; h < n_heads; h++) {
            float *v = vec + (size_t)h * hp->head_dim;
            int a = hp->rope_type == MODEL_ROPE_NEOX ? i : 2 * i;
            int b = hp->rope_type == MODEL_ROPE_NEOX ? i + half : 2 * i + 1;
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * cs - x1 * sn;
            v[b] = x0 * sn + x1 * cs;
        }
    }
}

static inline size_t kv_index(const struct model_ctx *c, int il, int seq, int pos)
{
    return ((((size_t)(il - c->layer_begin) * (size_t)c->n_seq + (size_t)seq) * (size_t)c->n_ctx) +
            (size_t)pos) * (size_t)c->kv_dim;
}

/* Causal attention of every (token, query-head group) of the batch over its sequence's
 * cache. A unit is up to `chunk` query heads sharing one K/V head: attn_group loads each
 * cached K/V row once for all of them. Groups are cut smaller only when there are fewer
 * (token, group) units than threads, e.g. one token of a model with one K/V head. */
struct attn_job {
    struct model_ctx *c;
    int il;
    const struct model_batch *b;
};

static void attn_worker(void *arg, int ith, int nth)
{
    const struct attn_job *j = arg;
    struct model_ctx *c = j->c;
    const struct model_hparams *hp = &c->m->hp;
    int hd = hp->head_dim, group = hp->n_head / hp->n_head_kv;
    int groups = j->b->n * hp->n_head_kv;
    int cuts = groups >= nth ? 1 : (nth + groups - 1) / groups;
    int chunk = (group + cuts - 1) / cuts;
    if (chunk > ATTN_MAX_GROUP) chunk = ATTN_MAX_GROUP;
    int per_kv = (group + chunk - 1) / chunk; /* units per (token, K/V head) */
    struct attn_group_args a = {
        .head_dim = hd,
        .k_type = kv_attn_type(c->k_type),
        .v_type = kv_attn_type(c->v_type),
        .kv_stride = (size_t)c->kv_dim,
        .scale = 1.0f / sqrtf((float)hd),
        .scratch = (uint8_t *)c->att_scratch + (size_t)ith * c->att_scratch_bytes,
    };
    int units = groups * per_kv;
    for (int u = ith; u < units; u += nth) {
        int t = u / (hp->n_head_kv * per_kv), r = u % (hp->n_head_kv * per_kv);
        int kvh = r / per_kv, h0 = kvh * group + (r % per_kv) * chunk;
        int seq = j->b->seq ? j->b->seq[t] : 0;
        size_t row0 = kv_index(c, j->il, seq, 0); /* element index of position 0's row */
        a.kv_off = (size_t)kvh * hd;
        a.n_q = kvh * group + group - h0 < chunk ? kvh * group + group - h0 : chunk;
        a.n_kv = j->b->pos[t] + 1;
        a.q = c->q + (size_t)t * c->q_dim + (size_t)h0 * hd;
        a.out = c->att_out + (size_t)t * c->q_dim + (size_t)h0 * hd;
        a.k = (const uint8_t *)c->k_cache + kv_bytes(c->k_type, row0);
        a.v = (const uint8_t *)c->v_cache + kv_bytes(c->v_type, row0);
        /* att_out[t][h0..h0+n_q) = softmax(q k^T / sqrt(hd), positions <= pos) v */
        attn_group(&a);
    }
}

/* Checks positions continue each sequence's cache; fills c->seq_next. */
static int batch_check(struct model_ctx *c, const struct model_batch *b)
{
    if (b->n <= 0 || b->n > c->n_batch || !b->pos) return MESH_EINVAL;
    memcpy(c->seq_next, c->seq_len, (size_t)c->n_seq * sizeof(int));
    for (int i = 0; i < b->n; i++) {
        int s = b->seq ? b->seq[i] : 0;
        if (s < 0 || s >= c->n_seq) return MESH_EINVAL;
        if (b->pos[i] != c->seq_next[s]) return MESH_EINVAL;
        if (b->pos[i] >= c->n_ctx) return MESH_EFULL;
        c->seq_next[s]++;
    }
    return 0;
}

int model_embed(struct model_ctx *c, const int32_t *tokens, int n, float *x)
{
    if (c->profile) clock_gettime(CLOCK_MONOTONIC, &c->prof_t); /* the embedding starts here */
    const struct model *m = c->m;
    const struct quant_traits *tr = quant_traits(m->tok_embd.type);
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= m->hp.n_vocab) return MESH_EINVAL;
        const uint8_t *row = (const uint8_t *)m->tok_embd.data + (size_t)tokens[i] * m->tok_embd.row_bytes;
        tr->to_float(row, x + (size_t)i * m->hp.n_embd, m->hp.n_embd);
    }
    return 0;
}

int model_layers(struct model_ctx *c, const struct model_batch *b, float *x)
{
    const struct model_hparams *hp = &c->m->hp;
    int rc = batch_check(c, b);
    if (rc < 0) return rc;
    int n = b->n, E = hp->n_embd, F = hp->n_ff;
    int wide = E > c->q_dim ? E : c->q_dim;

    prof_mark(c, MODEL_PROF_EMBED); /* since model_embed began (or the last step's end) */
    for (int il = c->layer_begin; il < c->layer_end; il++) {
        const struct model_layer *l = &c->m->layers[il];

        /* attention: xb = rmsnorm(x) */
        for (int t = 0; t < n; t++)
            rmsnorm(c->xb + (size_t)t * wide, x + (size_t)t * E, l->attn_norm.data, E, hp->rms_eps);
        prof_mark(c, MODEL_PROF_NORM);
        /* q[n][q_dim], k[n][kv_dim], v[n][kv_dim] = xb * Wq, Wk, Wv (+ biases) */
        {
            const struct model_tensor *w3[3] = {&l->wq, &l->wk, &l->wv};
            float *o3[3] = {c->q, c->k, c->v};
            int s3[3] = {c->q_dim, c->kv_dim, c->kv_dim};
            matmul_n(c, 3, w3, o3, s3, c->xb, wide, n, false);
        }
        if (l->bq.data) {
            const float *bq = l->bq.data, *bk = l->bk.data, *bv = l->bv.data;
            for (int t = 0; t < n; t++) {
                for (int i = 0; i < c->q_dim; i++) c->q[(size_t)t * c->q_dim + i] += bq[i];
                for (int i = 0; i < c->kv_dim; i++) {
                    c->k[(size_t)t * c->kv_dim + i] += bk[i];
                    c->v[(size_t)t * c->kv_dim + i] += bv[i];
                }
            }
        }
        prof_mark(c, MODEL_PROF_QKV);
        /* RoPE on q and k, then append k, v to the cache at (seq, pos) */
        for (int t = 0; t < n; t++) {
            int seq = b->seq ? b->seq[t] : 0;
            rope(c, c->q + (size_t)t * c->q_dim, hp->n_head, b->pos[t]);
            rope(c, c->k + (size_t)t * c->kv_dim, hp->n_head_kv, b->pos[t]);
            size_t at = kv_index(c, il, seq, b->pos[t]);
            kv_store(c->k_type, c->k_cache, at, c->k + (size_t)t * c->kv_dim, c->kv_dim);
            kv_store(c->v_type, c->v_cache, at, c->v + (size_t)t * c->kv_dim, c->kv_dim);
        }
        prof_mark(c, MODEL_PROF_ROPE_KV);
        /* att_out[n][q_dim] = softmax(q k^T / sqrt(hd), causal) v */
        struct attn_job aj = {.c = c, .il = il, .b = b};
        pool_run(c->pool, attn_worker, &aj);
        prof_mark(c, MODEL_PROF_ATTN);
        /* x += att_out * Wo */
        matmul(c, &l->wo, c->att_out, c->q_dim, n, c->xb, wide);
        for (int t = 0; t < n; t++)
            for (int i = 0; i < E; i++) x[(size_t)t * E + i] += c->xb[(size_t)t * wide + i];

        prof_mark(c, MODEL_PROF_WO);
        /* feed-forward: x += W_down (silu(xb W_gate) * (xb W_up)), xb = rmsnorm(x) */
        for (int t = 0; t < n; t++)
            rmsnorm(c->xb + (size_t)t * wide, x + (size_t)t * E, l->ffn_norm.data, E, hp->rms_eps);
        prof_mark(c, MODEL_PROF_NORM);
        {
            /* hb = silu(xb W_gate) * (xb W_up), fused per row chunk */
            const struct model_tensor *w2[2] = {&l->w_gate, &l->w_up};
            float *o2[2] = {c->hb, c->hb2};
            int s2[2] = {F, F};
            matmul_n(c, 2, w2, o2, s2, c->xb, wide, n, true);
        }
        prof_mark(c, MODEL_PROF_FFN_UP);
        matmul(c, &l->w_down, c->hb, F, n, c->xb, wide);
        for (int t = 0; t < n; t++)
            for (int i = 0; i < E; i++) x[(size_t)t * E + i] += c->xb[(size_t)t * wide + i];
        prof_mark(c, MODEL_PROF_FFN_DOWN);
    }
    memcpy(c->seq_len, c->seq_next, (size_t)c->n_seq * sizeof(int));
    return 0;
}

int model_head(struct model_ctx *c, const float *x, int n, float *logits)
{
    const struct model *m = c->m;
    int E = m->hp.n_embd;
    if (n <= 0 || n > c->n_batch) return MESH_EINVAL;
    for (int t = 0; t < n; t++)
        rmsnorm(c->x_head + (size_t)t * E, x + (size_t)t * E, m->output_norm.data, E, m->hp.rms_eps);
    matmul(c, &m->output, c->x_head, E, n, logits, m->hp.n_vocab);
    prof_mark(c, MODEL_PROF_HEAD);
    return 0;
}

int model_decode(struct model_ctx *c, const struct model_batch *b, float *logits)
{
    const struct model *m = c->m;
    int E = m->hp.n_embd;
    if (c->layer_begin != 0 || c->layer_end != m->hp.n_layer) return MESH_EINVAL;
    if (b->n <= 0 || b->n > c->n_batch || !b->tokens) return MESH_EINVAL;
    int rc = model_embed(c, b->tokens, b->n, c->x_embd);
    if (rc < 0) return rc;
    if ((rc = model_layers(c, b, c->x_embd)) < 0) return rc;
    /* gather the rows that want logits (x_head is reused by model_head as its output) */
    int n_out = 0;
    for (int t = 0; t < b->n; t++) {
        bool want = b->want_logits ? b->want_logits[t] : t == b->n - 1;
        if (!want) continue;
        if (n_out != t)
            memmove(c->x_embd + (size_t)n_out * E, c->x_embd + (size_t)t * E, (size_t)E * sizeof(float));
        n_out++;
    }
    if (n_out == 0) return 0;
    return model_head(c, c->x_embd, n_out, logits);
}
