/* tok.h - tokenizers read from GGUF metadata (tokenizer.ggml.*).
 *
 * Models: "llama" (SentencePiece BPE: score-ordered merges, byte fallback <0xXX>,
 * optional dummy-prefix space, U+2581 for spaces) and "gpt2" (byte-level BPE: bytes
 * mapped to printable code points, rank-ordered merges from tokenizer.ggml.merges, and a
 * pre-tokenizer chosen by tokenizer.ggml.pre: default, llama3/llama-bpe, qwen2,
 * gpt-2, deepseek-llm, falcon, mpt, starcoder, refact, ...) and "bert" (WordPiece, for
 * embedding models). Other models are refused with MESH_EUNSUPPORTED. Behaviour follows llama.cpp's llama-vocab.cpp so that ids are
 * identical to llama.cpp's (and Hugging Face's) on its tokenizer test vectors.
 * Thread rule: a struct tok is immutable after tok_load; any thread may use it.
 */
#ifndef MESH_ENGINE_TOK_H
#define MESH_ENGINE_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf;
struct tok;

enum tok_model { TOK_MODEL_SPM = 1, TOK_MODEL_BPE = 2, TOK_MODEL_WPM = 3 };

/* Token attributes (tokenizer.ggml.token_type): 1 normal, 2 unknown, 3 control,
 * 4 user-defined, 5 unused, 6 byte. */
enum tok_type {
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

/* Builds the tokenizer from g's metadata (copies what it needs: g may be closed after). */
int tok_load(const struct gguf *g, struct tok **out, char *err, size_t err_cap);
void tok_free(struct tok *t);

enum tok_model tok_model(const struct tok *t);
const char *tok_pre_name(const struct tok *t); /* tokenizer.ggml.pre or "default" */
int32_t tok_n_vocab(const struct tok *t);
int32_t tok_bos(const struct tok *t); /* -1 if none */
int32_t tok_eos(const struct tok *t); /* -1 if none */
/* True for tokens that end generation (eos, eot, <|im_end|>, <|eot_id|>, <end_of_turn>...). */
bool tok_is_eog(const struct tok *t, int32_t id);
/* Whether `run` adds BOS (tokenizer.ggml.add_bos_token, default true for SPM as llama.cpp). */
bool tok_adds_bos(const struct tok *t);
enum tok_type tok_type_of(const struct tok *t, int32_t id);
/* Token id for an exact piece text ("<|im_end|>"), -1 if absent. */
int32_t tok_find(const struct tok *t, const char *piece, size_t len);

/* Tokenizes len bytes of text into ids[cap].
 * add_special: add BOS (and EOS if the model says) as llama.cpp does.
 * parse_special: text like "<|im_start|>" becomes that control token.
 * On success *n_out = count. If cap is too small returns MESH_ERANGE with *n_out = needed.
 * Invalid UTF-8 is tokenized as bytes, never rejected (WordPiece drops it, as llama.cpp;
 * a BPE vocabulary without a token for a byte drops that byte, as llama.cpp). */
int tok_encode(const struct tok *t, const char *text, size_t len, bool add_special,
               bool parse_special, int32_t *ids, int cap, int *n_out);

/* Raw bytes of one token as it appears in text: byte tokens give their byte, U+2581
 * becomes ' ' (SPM), byte-level BPE pieces are unmapped to bytes. Control tokens give
 * "" unless render_special. Returns bytes written (truncated to cap), or < 0 on bad id. */
int tok_piece(const struct tok *t, int32_t id, bool render_special, char *buf, size_t cap);

/* Decodes ids to text the way llama.cpp's detokenize does (SPM: the leading space that
 * the dummy prefix added is removed when remove_leading_space, from the first token whose
 * piece is not empty). Like snprintf: writes at most cap - 1 bytes plus a NUL (nothing if
 * cap == 0); returns the full length or < 0 on a bad id. */
int tok_decode(const struct tok *t, const int32_t *ids, int n, bool remove_leading_space,
               bool render_special, char *buf, size_t cap);

/* Longest piece of any token in bytes (size stream buffers with it). */
size_t tok_max_piece_len(const struct tok *t);
/* 0 when a and b have the same size, BOS, EOS and text of every token; MESH_EBADMODEL with
 * *id_out = the first token whose text differs (-1: the size, BOS or EOS differ);
 * MESH_ENOMEM. (Two models may then share token ids: a draft model, a KL base.) */
int tok_vocab_compare(const struct tok *a, const struct tok *b, int32_t *id_out);

/* Streaming detokenizer for generated text: never emits a partial UTF-8 character.
 * Caller owns the struct; tok_stream_init before use. */
struct tok_stream {
    const struct tok *tok;
    bool at_start;          /* strip the SPM leading space of the first piece */
    unsigned char pend[8];  /* bytes of an incomplete UTF-8 sequence */
    int n_pend;
};
void tok_stream_init(struct tok_stream *s, const struct tok *t, bool strip_leading_space);
/* Appends token id; writes complete UTF-8 text to out (cap >= 64 recommended) and
 * returns its length (0 while a character is incomplete), < 0 on a bad id. If out is too
 * small for the text returns MESH_ERANGE and consumes nothing (cap >= tok_max_piece_len
 * + 3 always suffices). Control tokens give no text. */
int tok_stream_push(struct tok_stream *s, int32_t id, char *out, size_t cap);
/* Flushes pending bytes (an incomplete character at the end is emitted as U+FFFD). */
int tok_stream_flush(struct tok_stream *s, char *out, size_t cap);

#endif
