/* grammar.h - GBNF grammars and the matcher that constrains generation to them.
 *
 * The format is llama.cpp's GBNF (its grammars/README.md): `name ::= alternatives`, one rule
 * per line (a rule continues over newlines inside parentheses, or on a line that starts with
 * `|`), "literals" with escapes \n \r \t \\ \" \[ \] \xHH \uHHHH \UHHHHHHHH, character
 * classes [a-z_] and [^"\\], `.` (any character), groups ( ), repetition * + ? {m} {m,} {m,n}
 * and # comments. The start rule is `root`. Not supported: llama.cpp's token references
 * <[id]>. Left-recursive rules are refused at parse time with the rule's name.
 *
 * The matcher works on Unicode code points decoded from the bytes of tokens (a character may
 * be split across tokens), with a set of pushdown stacks like llama.cpp's design: one stack per
 * way the text so far can be parsed. Stacks are hash-consed frames (identical stacks are one
 * id), so duplicate parses collapse and the set stays small. The vocabulary's token bytes are
 * cached once per tokenizer in a byte trie (struct grammar_vocab); the mask of allowed tokens
 * is one walk of that trie, pruned where no stack can go on.
 * Thread rule: a grammar and a grammar_vocab are immutable after creation and may be shared;
 * a grammar_state belongs to one sequence (one thread at a time).
 */
#ifndef MESH_ENGINE_GRAMMAR_H
#define MESH_ENGINE_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tok;
struct grammar;
struct grammar_vocab;
struct grammar_state;

/* Limits: input text, repetition counts, elements, stacks alive at once. */
#define GRAMMAR_MAX_TEXT (4u << 20)
#define GRAMMAR_MAX_REPEAT 10000
#define GRAMMAR_MAX_ELEMS (4u << 20)
#define GRAMMAR_MAX_STACKS 8192

/* Parses GBNF text[len] (need not be NUL-terminated) into *out. Returns 0, MESH_EINVAL with
 * err naming the problem and its line:column (syntax, undefined rule, no root, left
 * recursion, repetition too large), or MESH_ENOMEM. *out is NULL on error. */
int grammar_parse(const char *text, size_t len, struct grammar **out, char *err, size_t err_cap);
void grammar_free(struct grammar *g);
int grammar_n_rules(const struct grammar *g);

/* Token bytes of tokenizer t (tok_piece without control text) and their trie. EOG tokens are
 * remembered apart: they are allowed only where the grammar accepts. 0 or MESH_ENOMEM. */
int grammar_vocab_new(const struct tok *t, struct grammar_vocab **out);
/* The same from explicit pieces (tests, tools): piece i is pieces[i][lens[i]]; is_eog may be
 * NULL. Empty pieces are never allowed. 0, MESH_EINVAL or MESH_ENOMEM. */
int grammar_vocab_from_pieces(const char *const *pieces, const size_t *lens, const bool *is_eog,
                              int32_t n_vocab, struct grammar_vocab **out);
void grammar_vocab_free(struct grammar_vocab *v);
int32_t grammar_vocab_n(const struct grammar_vocab *v);

/* A matcher at the start of g. v (may be NULL: then only the byte functions work) and g are
 * borrowed and must outlive the state. skip_leading_space: the first non-empty token's leading
 * space is not part of the text (SPM's dummy prefix, tok_stream's at_start), so the grammar
 * does not see it either. 0, MESH_EINVAL (g left-recursive at run time, too many stacks),
 * MESH_ENOMEM. */
int grammar_state_new(const struct grammar *g, const struct grammar_vocab *v,
                      bool skip_leading_space, struct grammar_state **out);
void grammar_state_free(struct grammar_state *s);
/* Back to the start (same grammar and vocabulary). 0 or an error as grammar_state_new. */
int grammar_state_reset(struct grammar_state *s);

/* Whether bytes[len] may come next; the state is not changed. */
bool grammar_state_allows_bytes(struct grammar_state *s, const char *bytes, size_t len);
/* Consumes bytes[len]: 0, or MESH_EINVAL if the grammar does not allow them (state unchanged),
 * MESH_EFULL if the stacks exceed GRAMMAR_MAX_STACKS, MESH_ENOMEM. */
int grammar_state_accept_bytes(struct grammar_state *s, const char *bytes, size_t len);
/* Token forms (need a vocabulary): an EOG token is allowed only when accepting; consuming it
 * changes nothing. */
bool grammar_state_allows_token(struct grammar_state *s, int32_t id);
int grammar_state_accept_token(struct grammar_state *s, int32_t id);

/* The text so far is a whole sentence of the grammar (no incomplete character pending). */
bool grammar_state_is_accepting(const struct grammar_state *s);
/* Accepting and nothing may follow: generation is over. */
bool grammar_state_is_done(const struct grammar_state *s);
/* Allowed tokens: allowed[n_vocab] set to 1 or 0; *n_allowed counts the 1s (may be NULL).
 * 0, MESH_EINVAL (no vocabulary), MESH_EFULL, MESH_ENOMEM. */
int grammar_state_mask(struct grammar_state *s, uint8_t *allowed, int32_t *n_allowed);
/* The mask applied: logits[n_vocab] of disallowed tokens become -INFINITY. Returns the count
 * of allowed tokens (>= 0) or an error as grammar_state_mask. */
int32_t grammar_state_apply(struct grammar_state *s, float *logits);

#endif
