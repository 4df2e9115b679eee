/* grammar_internal.h - the compiled rule table shared by grammar_parse.c and grammar.c.
 *
 * A grammar is one array of elements. Rule r occupies elems[rule_start[r] ..] as its
 * alternatives, each a sequence of elements, separated by GRAM_ALT and closed by GRAM_END.
 * A character class is one GRAM_CHAR / GRAM_CHAR_NOT element followed by GRAM_CHAR_ALT
 * (another code point) and GRAM_RNG_UPPER (upper bound of the range that starts at the
 * element before it) elements. Repetitions are expanded into right-recursive helper rules
 * by the parser, so the matcher only sees sequences, references and classes.
 * Not part of the public API (engine/grammar.h).
 */
#ifndef MESH_ENGINE_GRAMMAR_INTERNAL_H
#define MESH_ENGINE_GRAMMAR_INTERNAL_H

#include <stdint.h>

enum gram_type {
    GRAM_END = 0,       /* end of the rule's last alternative */
    GRAM_ALT = 1,       /* end of an alternative, another one follows */
    GRAM_REF = 2,       /* value: rule id */
    GRAM_CHAR = 3,      /* value: code point (starts a positive class) */
    GRAM_CHAR_NOT = 4,  /* value: code point (starts a negated class) */
    GRAM_RNG_UPPER = 5, /* value: upper bound of a range started by the previous element */
    GRAM_CHAR_ALT = 6,  /* value: another code point of the class */
    GRAM_CHAR_ANY = 7,  /* `.`: any code point */
};

struct gram_elem {
    uint32_t type;
    uint32_t value;
};

struct grammar {
    struct gram_elem *elems;  /* [n_elems] */
    uint32_t n_elems;
    uint32_t *rule_start;     /* [n_rules]: index of the first element of each rule */
    uint32_t *alt_lo;         /* [n_rules + 1]: rule r's alternatives are alts[alt_lo[r]..alt_lo[r+1]) */
    uint32_t *alts;           /* start element of every alternative */
    char **names;             /* [n_rules] rule names ("root", "value_3" for helper rules) */
    int n_rules;
    int root;
};

static inline int gram_is_end(uint32_t type) { return type == GRAM_END || type == GRAM_ALT; }
static inline int gram_is_char(uint32_t type)
{
    return type == GRAM_CHAR || type == GRAM_CHAR_NOT || type == GRAM_CHAR_ANY;
}

#endif
