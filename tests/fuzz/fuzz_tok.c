/* fuzz_tok.c - fuzz target: tokenizers and pre-tokenizer splitters on arbitrary bytes.
 *
 * Loads three real vocabularies once (llama-spm: SentencePiece with byte fallback; gpt-2:
 * byte-level BPE; bert-bge: WordPiece) from $MESHLLM_TEST_MODELS (default
 * ../shared/models). For each input:
 * every pre-tokenizer pipeline splits it (the word lengths must cover it exactly); both
 * vocabularies encode it with and without special-token parsing; decoding the text-only
 * encoding must give back the input byte for byte (SPM: unless it holds U+2581; not
 * WordPiece, which folds case); the streaming detokenizer's output
 * must be a prefix of the decoded text and never end inside a valid UTF-8 character.
 * A violated invariant aborts.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/tok.h"
#include "engine/unicode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_INPUT = 4096 };

static struct tok *load(const char *rel)
{
    const char *dir = getenv("MESHLLM_TEST_MODELS");
    char path[4096], err[256] = "";
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "../shared/models", rel);
    struct gguf *g = NULL;
    struct tok *t = NULL;
    if (gguf_open(path, &g, err, sizeof err) || tok_load(g, &t, err, sizeof err)) {
        fprintf(stderr, "fuzz_tok: cannot load %s: %s\n", path, err);
        abort();
    }
    gguf_close(g);
    return t;
}

static void check_split(const uint8_t *data, size_t size)
{
    uint32_t cps[MAX_INPUT], lens[MAX_INPUT], scratch[MAX_INPUT];
    size_t n = 0;
    for (size_t i = 0; i < size;) {
        size_t used;
        cps[n++] = unicode_utf8_decode(data + i, size - i, &used);
        i += used;
    }
    for (int pre = UNICODE_PRE_DEFAULT; pre <= UNICODE_PRE_DEEPSEEK3_LLM; pre++) {
        size_t n_words, sum = 0;
        unicode_pre_split((enum unicode_pre)pre, cps, n, lens, scratch, &n_words);
        for (size_t w = 0; w < n_words; w++) {
            if (lens[w] == 0) abort();
            sum += lens[w];
        }
        if (sum != n || n_words > n) abort();
    }
}

/* Whether boundary b of text[0..len) falls inside a valid UTF-8 character. (A lead byte
 * that is never completed is invalid input and may be emitted on its own.) */
static bool splits_char(const char *text, size_t len, size_t b)
{
    for (size_t back = 1; back <= 3 && back <= b; back++) {
        const unsigned char *p = (const unsigned char *)text + b - back;
        if ((*p & 0xC0) == 0x80) continue;
        size_t used;
        unicode_utf8_decode(p, len - (b - back), &used);
        return used > back;
    }
    return false;
}

static void check_tok(const struct tok *t, const uint8_t *data, size_t size)
{
    static int32_t ids[MAX_INPUT + 8];
    static char text[8 * MAX_INPUT + 64];
    const char *s = (const char *)data;
    for (int parse = 0; parse < 2; parse++) {
        int n = 0;
        if (tok_encode(t, s, size, parse, parse, ids, MAX_INPUT + 8, &n) != 0) abort();
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= tok_n_vocab(t)) abort();
        int len = tok_decode(t, ids, n, true, false, text, sizeof text);
        if (len < 0 || (size_t)len >= sizeof text) abort();
        /* Exact bytes back, except that SentencePiece reads a literal U+2581 as a space. */
        bool exact = tok_model(t) == TOK_MODEL_BPE ||
                     (tok_model(t) == TOK_MODEL_SPM && !memmem(s, size, "\xe2\x96\x81", 3));
        if (!parse && exact && ((size_t)len != size || memcmp(text, s, size))) abort();
        /* Streaming: a prefix of the decoded text, never cutting a valid character. */
        struct tok_stream st;
        char chunk[512];
        size_t off = 0;
        tok_stream_init(&st, t, true);
        for (int i = 0; i < n; i++) {
            int k = tok_stream_push(&st, ids[i], chunk, sizeof chunk);
            if (k < 0 || off + (size_t)k > (size_t)len || memcmp(text + off, chunk, (size_t)k)) abort();
            off += (size_t)k;
            if (splits_char(text, (size_t)len, off)) abort();
        }
        if (tok_stream_flush(&st, chunk, sizeof chunk) < 0) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct tok *spm, *bpe, *wpm;
    if (!spm) {
        spm = load("llamacpp-vocab/ggml-vocab-llama-spm.gguf");
        bpe = load("llamacpp-vocab/ggml-vocab-gpt-2.gguf");
        wpm = load("llamacpp-vocab/ggml-vocab-bert-bge.gguf");
    }
    if (size > MAX_INPUT) size = MAX_INPUT;
    check_split(data, size);
    check_tok(spm, data, size);
    check_tok(bpe, data, size);
    check_tok(wpm, data, size);
    return 0;
}
