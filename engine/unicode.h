/* unicode.h - code point categories, UTF-8 helpers and the BPE pre-tokenizer splitters.
 *
 * Categories (\p{L}, \p{N}, ...) and White_Space come from tables generated at build time
 * by tools/gen_unicode.c from the Unicode Character Database (UnicodeData.txt, PropList.txt).
 * The pre-tokenizers are the regular expressions that llama.cpp's llm_tokenizer_bpe uses
 * per tokenizer.ggml.pre, each written by hand as a matcher over code points with the same
 * leftmost-first, greedy-with-backtracking (ECMAScript) semantics; no regex library. Like
 * llama.cpp, each expression of a pipeline splits every fragment of the previous one, and
 * both matches and the unmatched text between them become fragments.
 * Normalization is limited to what WordPiece needs: the first code point of the canonical
 * decomposition and simple lowercase.
 * Thread rule: pure functions over read-only tables; any thread.
 */
#ifndef MESH_ENGINE_UNICODE_H
#define MESH_ENGINE_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* General category groups, as llama.cpp's unicode_cpt_flags (Cn = UNDEF). */
enum unicode_cat {
    UNICODE_CAT_UNDEF = 0,
    UNICODE_CAT_L = 1, /* letters */
    UNICODE_CAT_N = 2, /* numbers */
    UNICODE_CAT_P = 3, /* punctuation */
    UNICODE_CAT_S = 4, /* symbols */
    UNICODE_CAT_M = 5, /* marks */
    UNICODE_CAT_Z = 6, /* separators */
    UNICODE_CAT_C = 7, /* control, format, private use, surrogate */
};

/* Flags byte of a code point: category in the low 3 bits, White_Space in bit 3. */
enum { UNICODE_F_CAT_MASK = 0x07, UNICODE_F_WS = 0x08 };

/* Generated tables (build/gen/unicode_tables.c): sorted range starts and their flags. */
extern const uint32_t unicode_range_first[];
extern const uint8_t unicode_range_flags[];
extern const size_t unicode_n_ranges;

/* Generated: simple lowercase pairs and first code points of canonical decompositions,
 * both sorted by their first element. */
extern const uint32_t unicode_lower_map[][2];
extern const size_t unicode_n_lower;
extern const uint32_t unicode_nfd_map[][2];
extern const size_t unicode_n_nfd;

/* Flags of cp (code points above U+10FFFF are UNDEF). */
unsigned unicode_flags(uint32_t cp);
enum unicode_cat unicode_cat(uint32_t cp);
bool unicode_is_ws(uint32_t cp); /* White_Space property (\s) */

/* Simple lowercase mapping (UnicodeData field 13); cp itself if none. */
uint32_t unicode_tolower(uint32_t cp);
/* First code point of cp's canonical decomposition (NFD), Hangul included: what
 * llama.cpp's WordPiece normalization keeps ('\u00e9' -> 'e'). cp itself if none. */
uint32_t unicode_nfd_first(uint32_t cp);

/* Length of the UTF-8 sequence announced by a lead byte, by its high nibble as llama.cpp
 * does (continuation and invalid bytes count 1). */
size_t unicode_utf8_len(unsigned char lead);

/* Decodes the code point at s[0..len) (len >= 1) like llama.cpp's unicode_cpt_from_utf8:
 * lead byte and continuation bits are checked; an invalid or truncated sequence yields
 * U+FFFD and consumes 1 byte. *n_used gets the bytes consumed. */
uint32_t unicode_utf8_decode(const unsigned char *s, size_t len, size_t *n_used);

/* Encodes cp (<= 0x1FFFFF) into out; returns the byte count (1..4). */
size_t unicode_utf8_encode(uint32_t cp, char out[4]);

/* Bytes of s[0..len) that form no incomplete trailing UTF-8 sequence: len minus the bytes
 * of a valid-so-far but unfinished character at the end (0..3). */
size_t unicode_utf8_complete_len(const unsigned char *s, size_t len);

/* Pre-tokenizer pipelines (llama.cpp LLAMA_VOCAB_PRE_TYPE_*). */
enum unicode_pre {
    UNICODE_PRE_DEFAULT = 0,
    UNICODE_PRE_LLAMA3,         /* llama3, llama-bpe, dbrx, smaug-bpe, chatglm-bpe, ... */
    UNICODE_PRE_QWEN2,          /* qwen2, stablelm2: as llama3 with single digits */
    UNICODE_PRE_GPT2,           /* gpt-2, mpt, olmo, jais, phi-2, ... */
    UNICODE_PRE_DEEPSEEK_LLM,
    UNICODE_PRE_DEEPSEEK_CODER,
    UNICODE_PRE_FALCON,
    UNICODE_PRE_STARCODER,      /* starcoder, refact, command-r, smollm, ... */
    UNICODE_PRE_PORO,           /* poro-chat, bloom, gpt3-finnish */
    UNICODE_PRE_VIKING,
    UNICODE_PRE_TEKKEN,         /* Mistral Nemo / Pixtral: case-aware letter runs */
    UNICODE_PRE_DEEPSEEK3_LLM,  /* deepseek-v3 */
};

/* Splits cps[0..n) into words. lens and scratch each hold at least n entries (n >= 1);
 * on return lens[0..*n_words) are the word lengths in code points, in order, summing to n.
 * Never fails; n == 0 gives *n_words = 0. */
void unicode_pre_split(enum unicode_pre pre, const uint32_t *cps, size_t n, uint32_t *lens,
                       uint32_t *scratch, size_t *n_words);

#endif
