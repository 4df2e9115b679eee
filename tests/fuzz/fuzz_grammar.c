/* fuzz_grammar.c - the GBNF parser and matcher (engine/grammar.h) on any bytes: no crash, and
 * a grammar that parses runs a matcher over the input's tail (bytes fed one at a time and in
 * one piece must agree) and a mask over a small fixed vocabulary, each token's mask bit equal
 * to the per-token check. Input: GBNF text, then optionally "\n%%\n" and text to match. */
#include "engine/grammar.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const pieces[] = {"a", "b", "ab", " ", "{", "}", "\"", ",", "0", "1", "é",
                                     "\xc3", "\xa9", "\xe6\x97", "\xa5", "xyz", "\n", "[", "]", ""};
#define N_PIECES (int32_t)(sizeof pieces / sizeof *pieces)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data, *sep = NULL;
    for (size_t i = 0; i + 4 <= size; i++)
        if (memcmp(text + i, "\n%%\n", 4) == 0) {
            sep = text + i;
            break;
        }
    size_t glen = sep ? (size_t)(sep - text) : size;
    const char *in = sep ? sep + 4 : NULL;
    size_t in_len = sep ? size - glen - 4 : 0;
    struct grammar *g = NULL;
    if (grammar_parse(text, glen, &g, NULL, 0)) return 0;
    size_t lens[N_PIECES];
    for (int32_t i = 0; i < N_PIECES; i++) lens[i] = strlen(pieces[i]);
    struct grammar_vocab *v = NULL;
    struct grammar_state *a = NULL, *b = NULL;
    if (grammar_vocab_from_pieces(pieces, lens, NULL, N_PIECES, &v)) goto out;
    if (grammar_state_new(g, v, false, &a) || grammar_state_new(g, v, false, &b)) goto out;
    /* byte by byte vs whole: the same verdict */
    bool ok_one = true;
    for (size_t i = 0; i < in_len && ok_one; i++) ok_one = grammar_state_accept_bytes(a, in + i, 1) == 0;
    bool ok_all = in_len == 0 || grammar_state_accept_bytes(b, in, in_len) == 0;
    if (ok_one != ok_all) abort();
    if (ok_all && grammar_state_is_accepting(a) != grammar_state_is_accepting(b)) abort();
    uint8_t m[N_PIECES];
    int32_t n = 0;
    if (grammar_state_mask(b, m, &n) == 0)
        for (int32_t i = 0; i < N_PIECES; i++)
            if ((m[i] != 0) != grammar_state_allows_token(b, i)) abort();
out:
    grammar_state_free(a);
    grammar_state_free(b);
    grammar_vocab_free(v);
    grammar_free(g);
    return 0;
}
