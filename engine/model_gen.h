/* model_gen.h - writes random-weight Llama-family GGUF models of realistic shape.
 *
 * For benchmarks and tests that need a model of a real size (TinyLlama 1.1B, Llama 3.2
 * 1B, Qwen2.5 0.5B...) when the real weights are not at hand. The file has llama.cpp's
 * tensor names, shapes and metadata for the `llama` or `qwen2` architecture, the
 * tokenizer metadata of a vocab GGUF (padded with "[PAD<i>]" tokens of type UNUSED and
 * score -1000 when the shape's vocabulary is larger, as llama.cpp's converter pads),
 * and weights drawn deterministically from a seed: matrices and embeddings N(0, 0.02),
 * norm weights 1 + N(0, 0.02), qwen2 QKV biases N(0, 0.02), so activations stay in a
 * trained model's range. Matrices are stored F32 or F16; other file types are made by
 * writing F16 to a temporary file next to the output and running quantize_model().
 * The writer streams rows (engine/gguf.h), so multi-GB files never sit in memory.
 * Thread rule: each call is independent.
 */
#ifndef MESH_ENGINE_MODEL_GEN_H
#define MESH_ENGINE_MODEL_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct model_gen_shape {
    char name[32];
    char arch[16];        /* "llama" or "qwen2" (QKV biases, NeoX rope) */
    int n_embd, n_layer, n_head, n_head_kv, n_ff;
    int n_vocab;          /* 0: the vocab file's size */
    int n_ctx;            /* context_length metadata */
    bool tied_output;     /* no output.weight: the head reuses token_embd */
    float rope_theta, rms_eps;
    /* llama-3 RoPE scaling, written as rope_freqs.weight like llama.cpp's converter;
     * factor 0 = none. */
    float rope_l3_factor, rope_l3_low_freq, rope_l3_high_freq;
    int rope_l3_orig_ctx;
};

/* Named shapes: "tinyllama-1.1b", "llama-3.2-1b", "qwen2.5-0.5b", "test-small".
 * Copies the shape into *out; MESH_ENOTFOUND if the name is unknown. */
int model_gen_shape_get(const char *name, struct model_gen_shape *out);
/* The known names, space-separated (for --help). */
const char *model_gen_shape_names(void);

/* Called after each chunk written: tensors done of n, data bytes done of total (of the
 * F16/F32 file; the quantize pass then reports through the same callback). */
typedef void (*model_gen_progress_fn)(void *user, const char *stage, int64_t i_tensor, int64_t n_tensors,
                                      uint64_t bytes_done, uint64_t bytes_total);

struct model_gen_opts {
    struct model_gen_shape shape;
    const char *vocab_path;  /* GGUF whose tokenizer.* keys are copied (required) */
    int ftype;               /* enum quantize_ftype: F32, F16, or any quantize_model type */
    uint64_t seed;
    int n_threads;           /* <= 0: all cores */
    model_gen_progress_fn progress; /* may be NULL */
    void *user;
    /* out: set when the vocabulary was padded (vocab file tokens < shape n_vocab) */
    int n_vocab_file;
    int n_vocab_padded;
};

/* Checks a shape (positive sizes, heads divide n_embd, n_head_kv divides n_head, rows
 * whole blocks for the later quantization); MESH_EINVAL with a message if not. */
int model_gen_shape_check(const struct model_gen_shape *s, char *err, size_t err_cap);

/* Writes the model to out_path (atomically). Returns 0, MESH_EINVAL (bad shape, vocab
 * larger than the shape's n_vocab), MESH_EBADMODEL / MESH_EIO (vocab unreadable),
 * MESH_EIO (disk), MESH_ENOMEM; err names the problem. */
int model_gen_write(struct model_gen_opts *o, const char *out_path, char *err, size_t err_cap);

/* Parameter count of a shape with vocabulary n_vocab (weights of every tensor). */
int64_t model_gen_param_count(const struct model_gen_shape *s, int n_vocab);

#endif
