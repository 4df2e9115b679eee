/* tok_wpm.c - WordPiece ("bert" vocabularies), llama.cpp's llm_tokenizer_wpm.
 *
 * Normalization as llama.cpp: each code point becomes the first code point of its
 * canonical decomposition (accents drop off) and is lowercased; control characters,
 * U+0000 and U+FFFD (invalid UTF-8) are dropped; white space separates words;
 * punctuation, ASCII symbols and CJK ideographs are words of their own. Each word,
 * prefixed with U+2581 (llama.cpp's converter writes word-initial pieces that way and
 * strips "##" from the others), is cut greedily into the longest vocabulary matches from
 * left to right; if any position has no match the whole word becomes the unknown token.
 */
#include "engine/tok_internal.h"

#include "core/err.h"

#include <stdlib.h>
#include <string.h>

static bool is_chinese(uint32_t cp)
{
    /* The ranges of HF's BertPreTokenizer (0x2B920 as in its Rust code). */
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* Greedy longest-match of one word (w[0..n) starts with U+2581). */
static void wpm_word(const struct tok *t, const char *w, size_t n, struct tok_out *out)
{
    int start = out->n;
    for (size_t i = 0; i < n;) {
        size_t j = i + t->max_token_len < n ? i + t->max_token_len : n;
        int32_t id = -1;
        for (; j > i; j--)
            if ((id = tok_lookup(t, w + i, j - i)) >= 0) break;
        if (id < 0) {
            out->n = start; /* discard the word's pieces */
            break;
        }
        tok_out_push(out, id);
        i = j;
    }
    if (out->n == start && t->unk >= 0) tok_out_push(out, t->unk);
}

int tok_wpm_encode(const struct tok *t, const char *text, size_t len, struct tok_out *out)
{
    /* Normalized text of one word at a time: U+2581 + at most 4 bytes per input byte. */
    char *w = malloc(3 + 4 * len);
    if (!w) return MESH_ENOMEM;
    size_t n = 0;
    memcpy(w, "\xe2\x96\x81", 3);
    for (size_t i = 0; i <= len;) {
        uint32_t cp = ' ';
        size_t used = 1;
        if (i < len) cp = unicode_utf8_decode((const unsigned char *)text + i, len - i, &used);
        i += used;
        cp = unicode_nfd_first(cp);
        unsigned f = unicode_flags(cp), cat = f & UNICODE_F_CAT_MASK;
        bool alone = cat == UNICODE_CAT_P || (cp < 0x7F && cat == UNICODE_CAT_S) || is_chinese(cp);
        if ((f & UNICODE_F_WS) || alone) { /* end the current word */
            if (n > 0) wpm_word(t, w, 3 + n, out);
            n = 0;
        }
        if ((f & UNICODE_F_WS) || cp == 0 || cp == 0xFFFD || cat == UNICODE_CAT_C) continue;
        char u[4];
        size_t k = unicode_utf8_encode(unicode_tolower(cp), u);
        memcpy(w + 3 + n, u, k);
        n += k;
        if (alone) {
            wpm_word(t, w, 3 + n, out);
            n = 0;
        }
    }
    free(w);
    return 0;
}
