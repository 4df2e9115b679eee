/* test_grammar.c - engine/grammar: GBNF parsing and its errors, acceptance of strings,
 * repetition bounds, classes, UTF-8 split across tokens, the leading-space rule, and the
 * vocabulary mask checked against a brute-force per-token check on random vocabularies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/gen.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/tok.h"
#include "tests/util/test_util.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct grammar *parse_ok(const char *text)
{
    struct grammar *g = NULL;
    char err[256];
    int rc = grammar_parse(text, strlen(text), &g, err, sizeof err);
    if (rc) fail_msg("parse failed: %s\n%s", err, text);
    return g;
}

/* rc of the parse and its message in err. */
static int parse_err(const char *text, char *err, size_t cap)
{
    struct grammar *g = NULL;
    int rc = grammar_parse(text, strlen(text), &g, err, cap);
    assert_null(g);
    return rc;
}

/* Whether the whole string is a sentence of g. */
static bool matches(const struct grammar *g, const char *str)
{
    struct grammar_state *s;
    assert_int_equal(grammar_state_new(g, NULL, false, &s), 0);
    bool ok = grammar_state_accept_bytes(s, str, strlen(str)) == 0 && grammar_state_is_accepting(s);
    grammar_state_free(s);
    return ok;
}

/* Whether str is a prefix of some sentence. */
static bool prefix_ok(const struct grammar *g, const char *str)
{
    struct grammar_state *s;
    assert_int_equal(grammar_state_new(g, NULL, false, &s), 0);
    bool ok = grammar_state_accept_bytes(s, str, strlen(str)) == 0;
    grammar_state_free(s);
    return ok;
}

static void test_grammar_literals_and_alternatives(void **st)
{
    (void)st;
    struct grammar *g = parse_ok("root ::= \"yes\" | \"no\" | greet\ngreet ::= \"hi\" (\" \" name)?\n"
                                 "name ::= [A-Z] [a-z]*\n");
    assert_true(matches(g, "yes"));
    assert_true(matches(g, "no"));
    assert_true(matches(g, "hi"));
    assert_true(matches(g, "hi Bob"));
    assert_false(matches(g, "hi bob"));
    assert_false(matches(g, "ye"));
    assert_true(prefix_ok(g, "ye"));
    assert_false(prefix_ok(g, "yess"));
    assert_false(matches(g, ""));
    grammar_free(g);
}

static void test_grammar_repetition_bounds(void **st)
{
    (void)st;
    struct grammar *g = parse_ok("root ::= \"a\"{2,4} \"b\"{3} \"c\"{1,} \"d\"{0,2} \"e\"* \"f\"+ \"g\"?\n");
    assert_true(matches(g, "aabbbcf"));
    assert_true(matches(g, "aaaabbbcccddeeeffg"));
    assert_false(matches(g, "abbbcf"));        /* a below 2 */
    assert_false(matches(g, "aaaaabbbcf"));    /* a above 4 */
    assert_false(matches(g, "aabbcf"));        /* b exactly 3 */
    assert_false(matches(g, "aabbbbcf"));
    assert_false(matches(g, "aabbbf"));        /* c at least 1 */
    assert_false(matches(g, "aabbbcdddf"));    /* d at most 2 */
    assert_false(matches(g, "aabbbc"));        /* f at least 1 */
    assert_false(matches(g, "aabbbcfgg"));     /* g at most 1 */
    grammar_free(g);
    /* a group repeated, and {0} removing the item */
    g = parse_ok("root ::= (\"ab\" | \"c\"){2,3} \"x\"{0} \"!\"\n");
    assert_true(matches(g, "abc!"));
    assert_true(matches(g, "ccab!"));
    assert_false(matches(g, "c!"));
    assert_false(matches(g, "abababab!"));
    assert_false(matches(g, "abcx!"));
    grammar_free(g);
}

static void test_grammar_classes_and_escapes(void **st)
{
    (void)st;
    struct grammar *g = parse_ok("root ::= [a-cx] [^0-9\\]] . \"\\n\\t\\\\\\\"\\x41\\u00e9\" [α-ω]\n");
    assert_true(matches(g, "bz!\n\t\\\"Aéλ"));
    assert_true(matches(g, "x]\xe2\x82\xac\n\t\\\"Aéω") == false); /* ] is excluded */
    assert_true(matches(g, "xq\xe2\x82\xac\n\t\\\"Aéω"));          /* . takes a 3-byte char */
    assert_false(matches(g, "d!!\n\t\\\"Aéλ"));
    assert_false(matches(g, "b5!\n\t\\\"Aéλ"));
    assert_false(matches(g, "bz!\n\t\\\"Aéa"));
    grammar_free(g);
    /* comments, rules over several lines inside parentheses and after `|` */
    g = parse_ok("# leading comment\nroot ::= ( \"a\"   # first\n   | \"b\" )\n  | \"c\" # third\n"
                 "\n\n# trailing\n");
    assert_true(matches(g, "a"));
    assert_true(matches(g, "b"));
    assert_true(matches(g, "c"));
    assert_false(matches(g, "ab"));
    grammar_free(g);
}

static void test_grammar_parse_errors_name_the_problem(void **st)
{
    (void)st;
    char err[256];
    assert_int_equal(parse_err("root ::= foo\n", err, sizeof err), MESH_EINVAL);
    assert_non_null(strstr(err, "undefined rule 'foo'"));
    assert_int_equal(parse_err("start ::= \"a\"\n", err, sizeof err), MESH_EINVAL);
    assert_non_null(strstr(err, "root"));
    assert_int_equal(parse_err("root ::= expr\nexpr ::= expr \"+\" \"1\" | \"1\"\n", err, sizeof err),
                     MESH_EINVAL);
    assert_non_null(strstr(err, "left-recursive"));
    assert_non_null(strstr(err, "expr"));
    /* left recursion through a nullable prefix */
    assert_int_equal(parse_err("root ::= a\na ::= b? a \"x\" | \"y\"\nb ::= \"z\"\n", err, sizeof err),
                     MESH_EINVAL);
    assert_non_null(strstr(err, "left-recursive"));
    assert_int_equal(parse_err("root ::= \"abc\n", err, sizeof err), MESH_EINVAL);
    assert_non_null(strstr(err, "unterminated"));
    assert_int_equal(parse_err("root ::= \"\\q\"\n", err, sizeof err), MESH_EINVAL);
    assert_non_null(strstr(err, "escape"));
    assert_int_equal(parse_err("root ::= \"a\"{3,1}\n", err, sizeof err), MESH_EINVAL);
    assert_non_null(strstr(err, "below the minimum"));
    assert_int_equal(parse_err("root ::= \"a\"{99999}\n", err, sizeof err), MESH_EINVAL);
    assert_int_equal(parse_err("root ::= []\n", err, sizeof err), MESH_EINVAL);
    assert_non_null(strstr(err, "empty character class"));
    assert_int_equal(parse_err("root ::= ( \"a\"\n", err, sizeof err), MESH_EINVAL);
    assert_int_equal(parse_err("root ::= * \"a\"\n", err, sizeof err), MESH_EINVAL);
    assert_int_equal(parse_err("root \"a\"\n", err, sizeof err), MESH_EINVAL);
    assert_non_null(strstr(err, "::="));
    assert_non_null(strstr(err, "line 1"));
    assert_int_equal(parse_err("root ::= \"a\"\nroot ::= \"b\"\n", err, sizeof err), MESH_EINVAL);
    assert_non_null(strstr(err, "line 2"));
    assert_int_equal(parse_err("root ::= [z-a]\n", err, sizeof err), MESH_EINVAL);
    assert_int_equal(parse_err("", err, sizeof err), MESH_EINVAL);
}

static void test_grammar_utf8_split_across_tokens(void **st)
{
    (void)st;
    struct grammar *g = parse_ok("root ::= \"é\" [α-ω]+ \"😀\"\n");
    struct grammar_state *s;
    assert_int_equal(grammar_state_new(g, NULL, false, &s), 0);
    const char *text = "éλμ😀";
    /* one byte at a time: every prefix is allowed, none accepting until the end */
    for (size_t i = 0; i < strlen(text); i++) {
        assert_false(grammar_state_is_accepting(s));
        assert_int_equal(grammar_state_accept_bytes(s, text + i, 1), 0);
    }
    assert_true(grammar_state_is_accepting(s));
    assert_true(grammar_state_is_done(s));
    grammar_state_free(s);
    /* a lead byte whose characters cannot match is refused at once */
    assert_int_equal(grammar_state_new(g, NULL, false, &s), 0);
    assert_int_equal(grammar_state_accept_bytes(s, "\xe2", 1), MESH_EINVAL); /* 3-byte: not é */
    assert_int_equal(grammar_state_accept_bytes(s, "\xc3", 1), 0);           /* é's lead */
    assert_false(grammar_state_allows_bytes(s, "\xa8", 1));                  /* è */
    assert_false(grammar_state_allows_bytes(s, "a", 1));                     /* not a continuation */
    assert_int_equal(grammar_state_accept_bytes(s, "\xa9\xce", 2), 0);       /* é, then λ's lead */
    assert_int_equal(grammar_state_accept_bytes(s, "\xbb", 1), 0);
    assert_false(grammar_state_is_accepting(s));
    grammar_state_free(s);
    /* overlong forms and surrogates never pass for the character they would encode */
    grammar_free(g);
    g = parse_ok("root ::= [\\]\\x00-\\x7f] | [\\uD000-\\uD7FF]\n");
    assert_int_equal(grammar_state_new(g, NULL, false, &s), 0);
    assert_false(grammar_state_allows_bytes(s, "\xf0\x80\x81\x9d", 4)); /* overlong ']' */
    assert_false(grammar_state_allows_bytes(s, "\xf0\x80", 2));
    assert_false(grammar_state_allows_bytes(s, "\xc1\x9d", 2));
    assert_false(grammar_state_allows_bytes(s, "\xed\xa0\x80", 3));     /* U+D800 */
    assert_true(grammar_state_allows_bytes(s, "\xed\x9f\xbf", 3));      /* U+D7FF */
    assert_true(grammar_state_allows_bytes(s, "]", 1));
    grammar_state_free(s);
    /* a negated class and a partial character: only a code point outside it may follow */
    grammar_free(g);
    g = parse_ok("root ::= [^\\u0100-\\u07ff]\n");
    assert_int_equal(grammar_state_new(g, NULL, false, &s), 0);
    assert_false(grammar_state_allows_bytes(s, "\xc4", 1)); /* U+0100..: all excluded */
    assert_true(grammar_state_allows_bytes(s, "\xc3", 1));  /* U+00C0..U+00FF */
    assert_true(grammar_state_allows_bytes(s, "\xe0", 1));
    grammar_state_free(s);
    grammar_free(g);
}

static void test_grammar_done_and_leading_space(void **st)
{
    (void)st;
    struct grammar *g = parse_ok("root ::= \"{\" \"a\"* \"}\"\n");
    const char *pieces[] = {" {", "{", "a", "}", "}a", " ", "", "</s>"};
    size_t lens[8];
    bool eog[8] = {0};
    eog[7] = true;
    for (int i = 0; i < 8; i++) lens[i] = strlen(pieces[i]);
    struct grammar_vocab *v;
    assert_int_equal(grammar_vocab_from_pieces(pieces, lens, eog, 8, &v), 0);
    struct grammar_state *s;
    assert_int_equal(grammar_state_new(g, v, true, &s), 0);
    uint8_t m[8];
    int32_t n;
    assert_int_equal(grammar_state_mask(s, m, &n), 0);
    /* " {" counts as "{" (the space is stripped from the text); " " alone is empty text */
    uint8_t want0[8] = {1, 1, 0, 0, 0, 1, 0, 0};
    assert_memory_equal(m, want0, 8);
    assert_int_equal(n, 3);
    assert_int_equal(grammar_state_accept_token(s, 0), 0);
    assert_int_equal(grammar_state_mask(s, m, &n), 0);
    uint8_t want1[8] = {0, 0, 1, 1, 0, 0, 0, 0}; /* the space rule is spent */
    assert_memory_equal(m, want1, 8);
    assert_false(grammar_state_allows_token(s, 7));
    assert_int_equal(grammar_state_accept_token(s, 3), 0);
    assert_true(grammar_state_is_done(s));
    assert_true(grammar_state_allows_token(s, 7)); /* EOG only when accepting */
    assert_int_equal(grammar_state_mask(s, m, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(m[7], 1);
    assert_int_equal(grammar_state_accept_token(s, 4), MESH_EINVAL);
    assert_int_equal(grammar_state_reset(s), 0);
    assert_false(grammar_state_is_accepting(s));
    grammar_state_free(s);
    grammar_vocab_free(v);
    grammar_free(g);
}

/* A random vocabulary over an alphabet that has JSON punctuation, digits, letters and the
 * bytes of multi-byte characters (so pieces split characters). */
static struct grammar_vocab *random_vocab(uint64_t *rs, int n, char ***out_pieces, size_t **out_lens)
{
    static const char *atoms[] = {"{", "}", "[", "]", "\"", ":", ",", " ", "\n", "0", "1", "9",
                                  "-", ".", "e", "a", "b", "t", "r", "u", "f", "n", "l", "s",
                                  "\\", "é", "\xc3", "\xa9", "😀", "\xf0\x9f", "\x98\x80", "x"};
    int n_atoms = (int)(sizeof atoms / sizeof *atoms);
    char **pieces = calloc((size_t)n, sizeof *pieces);
    size_t *lens = calloc((size_t)n, sizeof *lens);
    bool *eog = calloc((size_t)n, sizeof *eog);
    assert_non_null(pieces);
    for (int i = 0; i < n; i++) {
        char buf[64];
        size_t len = 0;
        int k = i < n_atoms ? 1 : 1 + (int)(test_rand_u64(rs) % 5);
        for (int j = 0; j < k; j++) {
            const char *a = atoms[i < n_atoms ? i : (int)(test_rand_u64(rs) % (uint64_t)n_atoms)];
            memcpy(buf + len, a, strlen(a));
            len += strlen(a);
        }
        pieces[i] = malloc(len + 1);
        memcpy(pieces[i], buf, len);
        lens[i] = len;
    }
    eog[n - 1] = true;
    struct grammar_vocab *v;
    assert_int_equal(grammar_vocab_from_pieces((const char *const *)pieces, lens, eog, n, &v), 0);
    free(eog);
    *out_pieces = pieces;
    *out_lens = lens;
    return v;
}

/* At every step of random walks, the trie mask equals grammar_state_allows_token per id. */
static void check_mask_bruteforce(const char *gbnf, uint64_t seed, int n_vocab, int n_steps)
{
    struct grammar *g = parse_ok(gbnf);
    uint64_t rs = seed;
    char **pieces;
    size_t *lens;
    struct grammar_vocab *v = random_vocab(&rs, n_vocab, &pieces, &lens);
    uint8_t *m = malloc((size_t)n_vocab);
    int32_t *ok_ids = malloc((size_t)n_vocab * sizeof *ok_ids);
    for (int walk = 0; walk < 6; walk++) {
        struct grammar_state *s;
        assert_int_equal(grammar_state_new(g, v, walk & 1, &s), 0);
        for (int step = 0; step < n_steps; step++) {
            int32_t n;
            assert_int_equal(grammar_state_mask(s, m, &n), 0);
            int32_t n_ok = 0;
            for (int32_t id = 0; id < n_vocab; id++) {
                bool want = grammar_state_allows_token(s, id);
                if (want != (m[id] != 0))
                    fail_msg("walk %d step %d: token %d (%.*s) mask %d, brute force %d", walk, step,
                             id, (int)lens[id], pieces[id], m[id], want);
                if (want) ok_ids[n_ok++] = id;
            }
            assert_int_equal(n, n_ok);
            if (n_ok == 0) break;
            int32_t pick = ok_ids[test_rand_u64(&rs) % (uint64_t)n_ok];
            if (pick == n_vocab - 1) break; /* EOG */
            assert_int_equal(grammar_state_accept_token(s, pick), 0);
        }
        grammar_state_free(s);
    }
    for (int i = 0; i < n_vocab; i++) free(pieces[i]);
    free(pieces);
    free(lens);
    free(m);
    free(ok_ids);
    grammar_vocab_free(v);
    grammar_free(g);
}

static void test_grammar_mask_equals_bruteforce(void **st)
{
    (void)st;
    size_t len;
    char *json = test_read_file("tests/data/grammars/json.gbnf", &len);
    assert_non_null(json);
    check_mask_bruteforce(json, 1, 400, 60);
    check_mask_bruteforce(json, 2, 1500, 40);
    free(json);
    check_mask_bruteforce("root ::= \"[\" ( [é😀a-f]{1,3} \",\" )* \"]\"\n", 3, 300, 40);
    check_mask_bruteforce("root ::= [^\"\\\\]* \"\\\"\" \"x\"?\n", 4, 300, 40);
}

/* Every grammar in tests/data/grammars parses, and a few known sentences match. */
static void test_grammar_data_grammars_parse(void **st)
{
    (void)st;
    DIR *d = opendir("tests/data/grammars");
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t nl = strlen(e->d_name);
        if (nl < 6 || strcmp(e->d_name + nl - 5, ".gbnf")) continue;
        char path[512];
        snprintf(path, sizeof path, "tests/data/grammars/%s", e->d_name);
        size_t len;
        char *text = test_read_file(path, &len);
        assert_non_null(text);
        struct grammar *g = NULL;
        char err[256];
        if (grammar_parse(text, len, &g, err, sizeof err)) fail_msg("%s: %s", path, err);
        struct grammar_state *s;
        assert_int_equal(grammar_state_new(g, NULL, false, &s), 0);
        grammar_state_free(s);
        grammar_free(g);
        free(text);
        n++;
    }
    closedir(d);
    assert_true(n >= 8);
    struct {
        const char *file, *text;
        bool ok;
    } cases[] = {
        {"json.gbnf", "{\"a\": [1, -2.5e3, true, null, \"x\\u00e9\"], \"b\": {}}", true},
        {"json.gbnf", "{\"a\": 01}", false},
        {"arithmetic.gbnf", "1 + 2 * (3 - 4) = 5\n", true},
        {"arithmetic.gbnf", "1 + = 2\n", false},
        {"chess.gbnf", "1. e4 e5\n2. Nf3 Nc6\n3. Bb5 O-O", true},
        {"chess.gbnf", "1. e9 e5", false},
        {"japanese.gbnf", "こんにちは、世界。\n", true},
        {"c.gbnf", "int main() {\n  int x = 1;\n  return x + 2;\n}\n", true},
        {"list.gbnf", "- milk\n- eggs\n", true},
        {"escapes.gbnf", "Aé😀\t!.\"-xx", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char path[256];
        snprintf(path, sizeof path, "tests/data/grammars/%s", cases[i].file);
        size_t len;
        char *text = test_read_file(path, &len);
        struct grammar *g = NULL;
        assert_int_equal(grammar_parse(text, len, &g, NULL, 0), 0);
        if (matches(g, cases[i].text) != cases[i].ok)
            fail_msg("%s: \"%s\" should %smatch", cases[i].file, cases[i].text, cases[i].ok ? "" : "not ");
        grammar_free(g);
        free(text);
    }
}

/* A long generation keeps memory bounded (the pool compacts) and stays correct. */
static void test_grammar_long_text_compacts(void **st)
{
    (void)st;
    struct grammar *g = parse_ok("root ::= \"[\" item (\",\" item)* \"]\"\nitem ::= \"[\" [0-9]+ \"]\"\n");
    struct grammar_state *s;
    assert_int_equal(grammar_state_new(g, NULL, false, &s), 0);
    assert_int_equal(grammar_state_accept_bytes(s, "[", 1), 0);
    for (int i = 0; i < 20000; i++) {
        const char *it = i ? ",[12]" : "[7]";
        assert_int_equal(grammar_state_accept_bytes(s, it, strlen(it)), 0);
    }
    assert_false(grammar_state_is_accepting(s));
    assert_int_equal(grammar_state_accept_bytes(s, "]", 1), 0);
    assert_true(grammar_state_is_done(s));
    grammar_state_free(s);
    grammar_free(g);
}

struct text_sink {
    char buf[8192];
    size_t len;
};

static int sink_emit(void *user, const char *text, int len)
{
    struct text_sink *k = user;
    assert_true(k->len + (size_t)len < sizeof k->buf);
    memcpy(k->buf + k->len, text, (size_t)len);
    k->len += (size_t)len;
    return 0;
}

/* The real path on stories260K's tokenizer (byte tokens, SPM leading space): the trie mask
 * equals the per-token check, and gen_step on random logits at temperature 1 produces text
 * the grammar accepts, ends by itself (EOG once nothing may follow) and never shows bytes
 * the grammar did not allow. */
static void test_grammar_gen_step_on_real_vocab(void **st)
{
    (void)st;
    struct model *m = NULL;
    struct model_load_opts lo = {0};
    char err[256];
    assert_int_equal(model_load(test_model_path("stories260K.gguf"), &lo, &m, err, sizeof err), 0);
    const struct tok *t = model_tok(m);
    int32_t n_vocab = tok_n_vocab(t);
    struct grammar_vocab *v;
    assert_int_equal(grammar_vocab_new(t, &v), 0);
    const char *schema = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\","
                         "\"maxLength\":8},\"n\":{\"type\":\"integer\"},\"ok\":{\"type\":\"boolean\"}},"
                         "\"required\":[\"name\",\"n\"]}";
    char *gbnf = NULL;
    assert_int_equal(json_schema_to_gbnf(schema, strlen(schema), &gbnf, err, sizeof err), 0);
    struct grammar *g = parse_ok(gbnf);
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    uint8_t *mask = malloc((size_t)n_vocab);
    uint64_t rs = 99;
    for (int run = 0; run < 6; run++) {
        struct sampler_params sp;
        sampler_params_default(&sp);
        sp.temp = 1.0f;
        sp.top_k = 0, sp.top_p = 1.0f, sp.min_p = 0;
        sp.seed = (uint64_t)run + 1;
        struct sampler *smp;
        assert_int_equal(sampler_new(&sp, n_vocab, &smp), 0);
        struct gen_seq gs;
        struct gen_seq_opts so = {.n_logprobs = -1, .grammar = gbnf, .gvocab = run & 1 ? v : NULL,
                                  .strip_leading_space = run < 3};
        assert_int_equal(gen_seq_init(&gs, t, smp, &so), 0);
        struct text_sink k = {.len = 0};
        bool ended = false;
        for (int step = 0; step < 400 && !ended; step++) {
            if (step % 7 == 0) { /* the trie mask against the per-token check */
                int32_t n_ok;
                assert_int_equal(grammar_state_mask(gs.gst, mask, &n_ok), 0);
                for (int32_t id = 0; id < n_vocab; id++)
                    if ((mask[id] != 0) != grammar_state_allows_token(gs.gst, id))
                        fail_msg("run %d step %d: token %d mask %d", run, step, id, mask[id]);
            }
            for (int32_t i = 0; i < n_vocab; i++) logits[i] = 3.0f * test_rand_uniform(&rs);
            struct gen_tok tk;
            assert_int_equal(gen_step(&gs, logits, &tk), 0);
            if (tk.is_eog) ended = true;
            else if (tk.len) sink_emit(&k, tk.text, (int)tk.len);
        }
        assert_true(ended);
        assert_int_equal(gen_seq_finish(&gs, sink_emit, &k), 0);
        k.buf[k.len] = 0;
        if (!matches(g, k.buf)) fail_msg("run %d: output outside the grammar: %s", run, k.buf);
        assert_true(k.buf[0] == '{');
        gen_seq_free(&gs);
        sampler_free(smp);
    }
    /* a grammar that does not parse is refused at init with the reason */
    struct sampler_params sp;
    sampler_params_default(&sp);
    struct sampler *smp;
    assert_int_equal(sampler_new(&sp, n_vocab, &smp), 0);
    struct gen_seq gs;
    struct gen_seq_opts bad = {.n_logprobs = -1, .grammar = "root ::= nope"};
    assert_int_equal(gen_seq_init_err(&gs, t, smp, &bad, err, sizeof err), MESH_EINVAL);
    assert_non_null(strstr(err, "nope"));
    gen_seq_free(&gs);
    sampler_free(smp);
    free(mask);
    free(logits);
    free(gbnf);
    grammar_free(g);
    grammar_vocab_free(v);
    model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grammar_literals_and_alternatives),
        cmocka_unit_test(test_grammar_repetition_bounds),
        cmocka_unit_test(test_grammar_classes_and_escapes),
        cmocka_unit_test(test_grammar_parse_errors_name_the_problem),
        cmocka_unit_test(test_grammar_utf8_split_across_tokens),
        cmocka_unit_test(test_grammar_done_and_leading_space),
        cmocka_unit_test(test_grammar_mask_equals_bruteforce),
        cmocka_unit_test(test_grammar_data_grammars_parse),
        cmocka_unit_test(test_grammar_long_text_compacts),
        cmocka_unit_test(test_grammar_gen_step_on_real_vocab),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
