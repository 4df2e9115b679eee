/* model.h - a loaded Llama-family model and inference contexts over it.
 *
 * model_load() maps a GGUF file (weights stay in the mapping, never copied), reads the
 * hyper-parameters of the `llama` or `qwen2` architecture, binds every tensor after
 * checking its type and shape, and builds the tokenizer. Other architectures are refused.
 *
 * A model_ctx owns what one stream of work needs: a KV cache for n_seq sequences of
 * n_ctx positions, scratch for n_batch tokens, and a thread pool. The forward pass is
 * split into the three pieces a mesh needs apart: embedding (token ids -> hidden states),
 * any layer range [layer_begin, layer_end) (hidden states in place, KV kept per sequence),
 * and the head (final norm + output projection -> logits). model_decode() composes them.
 * Tokens of several sequences can share one batch (one pass over the weights).
 *
 * Thread rule: a struct model is immutable after load and may be shared by many contexts
 * and threads. A model_ctx is used by one thread at a time (it drives its own pool).
 */
#ifndef MESH_ENGINE_MODEL_H
#define MESH_ENGINE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf;
struct tok;

enum model_arch { MODEL_ARCH_LLAMA = 1, MODEL_ARCH_QWEN2 = 2 };
enum model_rope { MODEL_ROPE_NORM = 0 /* interleaved pairs (llama) */, MODEL_ROPE_NEOX = 2 /* halves (qwen2) */ };

struct model_hparams {
    enum model_arch arch;
    char arch_name[32];
    char name[128];          /* general.name, "" if absent */
    int n_vocab;
    int n_embd;              /* hidden size */
    int n_layer;
    int n_head;
    int n_head_kv;
    int head_dim;            /* n_embd / n_head unless the file says otherwise */
    int n_ff;
    int n_ctx_train;
    int rope_dim;            /* rotated dims per head (<= head_dim) */
    enum model_rope rope_type;
    float rope_theta;        /* freq_base */
    float rope_freq_scale;   /* 1 / linear scaling factor */
    /* llama-3 RoPE scaling (rope_scaling.type == "llama3"); factor 0 = off */
    float rope_l3_factor, rope_l3_low_freq, rope_l3_high_freq;
    int rope_l3_orig_ctx;
    float rms_eps;
    bool has_qkv_bias;       /* qwen2 */
    bool tied_output;        /* no output.weight: the head reuses token_embd */
    int file_type;           /* general.file_type or -1 */
};

/* Load progress (model_load_opts.progress): n_done of n_total matrices packed for the fast
 * kernels, bytes_done of bytes_total read from the file for them. Called from one loading
 * thread at a time, last with n_done == n_total (also when nothing needed packing: 0 of 0). */
typedef void (*model_progress_fn)(void *arg, int n_done, int n_total, uint64_t bytes_done,
                                  uint64_t bytes_total);

struct model_load_opts {
    model_progress_fn progress; /* or NULL */
    void *progress_arg;
    bool use_mlock;          /* lock the weights this process runs in RAM (best effort,
                              * warns on failure): packed copies, the other tensors of
                              * the layer range, embedding and head as the range needs */
    /* Layers this process will run, [layer_begin, layer_end); 0, 0 = all. Only their
     * matrices (and the output head if the range ends at the last layer) are packed
     * for the fast kernels (engine/repack.h); contexts may still run other layers, on
     * the mapped rows. A pipeline stage sets it so it holds only its share in memory.
     * A range outside the model is refused (MESH_EINVAL). */
    int layer_begin, layer_end;
    /* No layers at all (a pipeline's requester, `serve --layers none`): only the output
     * head is packed; the embedding and head are all it runs. Overrides the range. */
    bool no_layers;
};

struct model;
int model_load(const char *path, const struct model_load_opts *opts, struct model **out,
               char *err, size_t err_cap);
void model_free(struct model *m);
const struct model_hparams *model_hparams(const struct model *m);
const struct tok *model_tok(const struct model *m);
const struct gguf *model_gguf(const struct model *m);
/* Bytes of all weight tensors (what a decode step reads). */
size_t model_weight_bytes(const struct model *m);
/* Bytes of the packed copies made at load (only the load's layer range and, when it ends at
 * the last layer or is none, the head): what a stage holds besides the mapped file. */
size_t model_packed_bytes(const struct model *m);
/* llama.cpp's name of a general.file_type value ("Q4_K_M", "F16"), "unknown" otherwise. */
const char *model_ftype_name(int file_type);
/* tokenizer.chat_template text, or NULL. */
const char *model_chat_template(const struct model *m);

/* KV cache element types (llama.cpp's --cache-type-k/-v names: f16, f32, q8_0, q4_0).
 * Q8_0 takes 34 bytes and Q4_0 18 bytes per 32 elements (F16: 64); they need
 * n_head_kv * head_dim to be a multiple of 32. */
enum model_kv_type { MODEL_KV_F16 = 0, MODEL_KV_F32 = 1, MODEL_KV_Q8_0 = 2, MODEL_KV_Q4_0 = 3 };
/* "f16", "f32", "q8_0", "q4_0"; NULL for an unknown value. */
const char *model_kv_type_name(enum model_kv_type t);
/* The type named s (as above), or -1. */
int model_kv_type_parse(const char *s);

struct model_ctx_params {
    int n_ctx;          /* positions per sequence; 0 = min(n_ctx_train, 4096) */
    int n_batch;        /* max tokens per call; 0 = 512 */
    int n_seq;          /* sequences (KV slots); 0 = 1 */
    int n_threads;      /* 0 = all cores */
    enum model_kv_type k_type; /* K cache elements (default f16) */
    enum model_kv_type v_type; /* V cache elements (default f16) */
    int layer_begin;    /* layers this context runs: [layer_begin, layer_end); */
    int layer_end;      /* 0/0 = all layers */
};
void model_ctx_params_default(struct model_ctx_params *p);

struct model_ctx;
int model_ctx_new(const struct model *m, const struct model_ctx_params *p,
                  struct model_ctx **out, char *err, size_t err_cap);
void model_ctx_free(struct model_ctx *c);
int model_ctx_n_ctx(const struct model_ctx *c);
int model_ctx_n_batch(const struct model_ctx *c);
int model_ctx_n_threads(const struct model_ctx *c);
/* Bytes of the K and V caches together (all layers, sequences and positions). */
size_t model_ctx_kv_bytes(const struct model_ctx *c);
const struct model *model_ctx_model(const struct model_ctx *c);
/* What the same cache would take with f16 K and V (for the memory line). */
size_t model_ctx_kv_f16_bytes(const struct model_ctx *c);
/* The one-line memory summary every command prints at load, into buf[cap] (snprintf's
 * return): "KV cache: q8_0/q8_0, 4096 ctx x 4 slots = 17.00 MiB (f16 would be 32.00 MiB)". */
int model_ctx_kv_describe(const struct model_ctx *c, char *buf, size_t cap);
int model_ctx_n_seq(const struct model_ctx *c);

/* Where a context's forward passes spend their wall time, step by step (the caller's
 * thread times each step between pool barriers; `meshllm bench --profile` prints it).
 * Off by default: then no clock is read. */
enum model_prof_step {
    MODEL_PROF_EMBED,    /* token embedding rows */
    MODEL_PROF_NORM,     /* RMSNorms (attention and FFN) */
    MODEL_PROF_QKV,      /* Q, K, V projections (one job), biases */
    MODEL_PROF_ROPE_KV,  /* RoPE and the KV cache writes */
    MODEL_PROF_ATTN,     /* attention over the cache */
    MODEL_PROF_WO,       /* output projection and residual */
    MODEL_PROF_FFN_UP,   /* gate and up projections with SwiGLU (one job) */
    MODEL_PROF_FFN_DOWN, /* down projection and residual */
    MODEL_PROF_HEAD,     /* final RMSNorm and the output head */
    MODEL_PROF_COUNT
};
void model_ctx_profile_enable(struct model_ctx *c, bool on);
/* ms[step] = milliseconds spent since enabling or the last reset. */
void model_ctx_profile_get(const struct model_ctx *c, double ms[MODEL_PROF_COUNT]);
void model_ctx_profile_reset(struct model_ctx *c);
const char *model_prof_step_name(int step);

/* A batch: n tokens, each with its sequence and position. Positions of one sequence must
 * continue its cache (pos == number of positions already cached, increasing). */
struct model_batch {
    int n;
    const int32_t *tokens;    /* [n] (model_decode / model_embed) */
    const int32_t *pos;       /* [n] */
    const int32_t *seq;       /* [n]; NULL = all sequence 0 */
    const bool *want_logits;  /* [n]; NULL = only the last token */
};

/* Embedding: x[n][n_embd] = token_embd[tokens[i]]. */
int model_embed(struct model_ctx *c, const int32_t *tokens, int n, float *x);
/* Runs x[n][n_embd] through the context's layer range in place; appends K/V of each
 * token to its sequence's cache. MESH_EFULL if a sequence would pass n_ctx. */
int model_layers(struct model_ctx *c, const struct model_batch *b, float *x);
/* Head: logits[n][n_vocab] from x[n][n_embd] (final RMSNorm + output projection). */
int model_head(struct model_ctx *c, const float *x, int n, float *logits);
/* All three for the tokens of b; writes logits of the tokens that want them, in order,
 * into logits[n_want][n_vocab]. Requires the context to cover all layers. */
int model_decode(struct model_ctx *c, const struct model_batch *b, float *logits);

/* Forgets positions >= pos_from of sequence seq (pos_from 0 clears it). */
void model_kv_seq_truncate(struct model_ctx *c, int seq, int pos_from);
/* Positions currently cached for seq. */
int model_kv_seq_len(const struct model_ctx *c, int seq);

#endif
