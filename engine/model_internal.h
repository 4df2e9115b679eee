/* model_internal.h - structures shared by model.c (loading) and model_forward.c (the
 * forward pass). Not part of the engine's public API. */
#ifndef MESH_ENGINE_MODEL_INTERNAL_H
#define MESH_ENGINE_MODEL_INTERNAL_H

#include "engine/model.h"

#include <stddef.h>
#include <stdint.h>

struct repack_kind;

/* A 2-D weight bound from the GGUF: ne1 rows of ne0 elements of `type`, row-major. */
struct model_tensor {
    const void *data; /* into the mapping; NULL if absent (optional tensors) */
    int type;         /* enum qtype */
    int64_t ne0, ne1;
    size_t row_bytes;
    /* Packed copy (engine/repack.h) in m->repack_buf, which the forward pass reads
     * instead of data (whose pages were dropped); pack_kind NULL when not packed. */
    const struct repack_kind *pack_kind;
    const void *pack;      /* rows [0, pack_rows) in REPACK_GROUP-row groups */
    const void *pack_tail; /* rows [pack_rows, ne1) in the GGUF layout, row_bytes apart */
    int64_t pack_rows;     /* ne1 rounded down to a multiple of REPACK_GROUP */
};

struct model_layer {
    struct model_tensor attn_norm;          /* [n_embd] F32 */
    struct model_tensor wq, wk, wv, wo;     /* [n_embd -> q_dim], [n_embd -> kv_dim] x2, [q_dim -> n_embd] */
    struct model_tensor bq, bk, bv;         /* qwen2 biases, F32; data NULL otherwise */
    struct model_tensor ffn_norm;           /* [n_embd] F32 */
    struct model_tensor w_gate, w_up, w_down; /* [n_embd -> n_ff] x2, [n_ff -> n_embd] */
};

struct model {
    struct model_hparams hp;
    struct gguf *gguf;
    struct tok *tok;
    struct model_tensor tok_embd;    /* [n_vocab rows][n_embd] */
    struct model_tensor output_norm; /* [n_embd] F32 */
    struct model_tensor output;      /* [n_vocab rows][n_embd]; = tok_embd when tied */
    struct model_layer *layers;      /* [n_layer] */
    float *rope_factors;             /* [rope_dim / 2] frequency divisors */
    char *chat_template;
    size_t weight_bytes;
    void *repack_buf;                /* anonymous mapping holding every tensor's repack */
    size_t repack_bytes;             /* its length; 0 when nothing is repacked */
};

#endif
