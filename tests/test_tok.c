/* test_tok.c - engine/tok + engine/unicode: categories, pre-tokenizer splits, llama.cpp's
 * tokenizer test vectors for every vocab in ../shared/models/llamacpp-vocab (ids and
 * round trip), the llama2.c vectors, stories260K prompts and generations, special-token
 * parsing, streaming detokenization across split UTF-8, invalid UTF-8, buffer sizes and
 * refusals of unsupported or broken vocabularies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/gguf.h"
#include "engine/tok.h"
#include "engine/unicode.h"
#include "tests/util/test_util.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------------------------- */

static struct tok *load_vocab(const char *rel)
{
    struct gguf *g = NULL;
    struct tok *t = NULL;
    char err[256] = "";
    int rc = gguf_open(test_model_path(rel), &g, err, sizeof err);
    if (rc) fprintf(stderr, "%s: %s\n", rel, err);
    assert_int_equal(rc, 0);
    rc = tok_load(g, &t, err, sizeof err);
    if (rc) fprintf(stderr, "%s: %s\n", rel, err);
    assert_int_equal(rc, 0);
    gguf_close(g); /* the tokenizer keeps copies */
    return t;
}

/* Encodes into a malloc'd array; asserts success. */
static int32_t *encode(const struct tok *t, const char *s, size_t len, bool add_special,
                       bool parse_special, int *n)
{
    int cap = (int)len + 8;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    assert_non_null(ids);
    assert_int_equal(tok_encode(t, s, len, add_special, parse_special, ids, cap, n), 0);
    return ids;
}

static char *decode(const struct tok *t, const int32_t *ids, int n, bool strip, bool special,
                    int *len)
{
    int need = tok_decode(t, ids, n, strip, special, NULL, 0);
    assert_true(need >= 0);
    char *buf = malloc((size_t)need + 1);
    assert_non_null(buf);
    assert_int_equal(tok_decode(t, ids, n, strip, special, buf, (size_t)need + 1), need);
    *len = need;
    return buf;
}

static bool ids_equal(const int32_t *a, int na, const int32_t *b, int nb)
{
    return na == nb && (na == 0 || !memcmp(a, b, (size_t)na * sizeof *a));
}

/* ---- unicode --------------------------------------------------------------------------- */

static void test_tok_unicode_categories(void **state)
{
    (void)state;
    assert_int_equal(unicode_cat('A'), UNICODE_CAT_L);
    assert_int_equal(unicode_cat('z'), UNICODE_CAT_L);
    assert_int_equal(unicode_cat('7'), UNICODE_CAT_N);
    assert_int_equal(unicode_cat('!'), UNICODE_CAT_P);
    assert_int_equal(unicode_cat('$'), UNICODE_CAT_S);
    assert_int_equal(unicode_cat(0x0301), UNICODE_CAT_M);  /* combining acute */
    assert_int_equal(unicode_cat(0x00BD), UNICODE_CAT_N);  /* ½ */
    assert_int_equal(unicode_cat(0x4E00), UNICODE_CAT_L);  /* CJK range (First/Last) */
    assert_int_equal(unicode_cat(0xAC01), UNICODE_CAT_L);  /* Hangul range */
    assert_int_equal(unicode_cat(0x1F600), UNICODE_CAT_S); /* emoji */
    assert_int_equal(unicode_cat(0x0378), UNICODE_CAT_UNDEF);
    assert_int_equal(unicode_cat(0xE000), UNICODE_CAT_C);  /* private use */
    assert_int_equal(unicode_cat(0x110000), UNICODE_CAT_UNDEF);
    assert_true(unicode_is_ws(' ') && unicode_is_ws('\t') && unicode_is_ws(0x0B));
    assert_true(unicode_is_ws(0x85) && unicode_is_ws(0xA0) && unicode_is_ws(0x3000));
    assert_true(unicode_is_ws(0x2028) && unicode_is_ws(0x202F));
    assert_false(unicode_is_ws(0x1C) || unicode_is_ws(0x200B) || unicode_is_ws('x'));
}

static void test_tok_unicode_utf8_helpers(void **state)
{
    (void)state;
    const uint32_t cps[] = {0x24, 0xA2, 0x20AC, 0x10348, 0x7F, 0x80, 0x7FF, 0x800, 0xFFFF};
    for (size_t i = 0; i < sizeof cps / sizeof cps[0]; i++) {
        char buf[4];
        size_t n = unicode_utf8_encode(cps[i], buf), used;
        assert_int_equal(unicode_utf8_decode((const unsigned char *)buf, n, &used), cps[i]);
        assert_int_equal(used, n);
        assert_int_equal(unicode_utf8_len((unsigned char)buf[0]), n);
    }
    size_t used;
    assert_int_equal(unicode_utf8_decode((const unsigned char *)"\x80", 1, &used), 0xFFFD);
    assert_int_equal(used, 1);
    assert_int_equal(unicode_utf8_decode((const unsigned char *)"\xe2\x82", 2, &used), 0xFFFD);
    assert_int_equal(used, 1);
    assert_int_equal(unicode_utf8_decode((const unsigned char *)"\xe2(\xac", 3, &used), 0xFFFD);
    assert_int_equal(unicode_utf8_decode((const unsigned char *)"\xff", 1, &used), 0xFFFD);
    /* complete_len holds back only an unfinished but so far valid sequence. */
    assert_int_equal(unicode_utf8_complete_len((const unsigned char *)"ab\xf0\x9f\x98", 5), 2);
    assert_int_equal(unicode_utf8_complete_len((const unsigned char *)"ab\xf0\x9f\x98\x80", 6), 6);
    assert_int_equal(unicode_utf8_complete_len((const unsigned char *)"a\xe4", 2), 1);
    assert_int_equal(unicode_utf8_complete_len((const unsigned char *)"a\xe4" "b", 3), 3);
    assert_int_equal(unicode_utf8_complete_len((const unsigned char *)"\x80\x80\x80", 3), 3);
}

/* Splits UTF-8 text with pre and checks the words joined by '|'. */
static void check_split(enum unicode_pre pre, const char *text, const char *want)
{
    size_t len = strlen(text), n = 0, n_words;
    uint32_t cps[256], lens[256], scratch[256];
    size_t boff[257];
    for (size_t i = 0; i < len;) {
        size_t used;
        boff[n] = i;
        cps[n++] = unicode_utf8_decode((const unsigned char *)text + i, len - i, &used);
        i += used;
    }
    boff[n] = len;
    unicode_pre_split(pre, cps, n, lens, scratch, &n_words);
    char got[1024];
    size_t g = 0, c = 0;
    for (size_t w = 0; w < n_words; w++) {
        if (w) got[g++] = '|';
        size_t b0 = boff[c], b1 = boff[c + lens[w]];
        memcpy(got + g, text + b0, b1 - b0);
        g += b1 - b0;
        c += lens[w];
    }
    got[g] = '\0';
    assert_int_equal(c, n);
    if (strcmp(got, want)) fprintf(stderr, "split(%d, '%s'): got '%s' want '%s'\n", pre, text, got, want);
    assert_string_equal(got, want);
}

static void test_tok_pre_split_patterns(void **state)
{
    (void)state;
    /* gpt-2: contractions, optional space before runs, \s+(?!\S) keeps one space back. */
    check_split(UNICODE_PRE_GPT2, "Hello world's  12!!\tx", "Hello| world|'s| | 12|!!|\t|x");
    check_split(UNICODE_PRE_GPT2, "a   ", "a|   ");
    check_split(UNICODE_PRE_GPT2, "I'M", "I|'|M");
    /* llama3: case-insensitive contractions, 3-digit groups, newlines end white space. */
    check_split(UNICODE_PRE_LLAMA3, "I'M 12345 ok\n\n  x", "I|'M| |123|45| ok|\n\n| | x");
    check_split(UNICODE_PRE_LLAMA3, "(hi)\r\n", "(hi|)\r\n");
    check_split(UNICODE_PRE_QWEN2, "x 2024", "x| |2|0|2|4");
    /* default: punctuation runs first, then gpt-2, digit runs, 3-digit groups. */
    check_split(UNICODE_PRE_DEFAULT, "ab, 12345", "ab|,| |123|45");
    check_split(UNICODE_PRE_STARCODER, "v12 x", "v|1|2| x");
    check_split(UNICODE_PRE_FALCON, "a`b 1234", "a|`|b| |123|4");
    /* deepseek-llm: \s+$ only at the end, CJK runs, non-ASCII space is no CJK. */
    check_split(UNICODE_PRE_DEEPSEEK_LLM, "ab  cd  ", "ab| | cd|  ");
    check_split(UNICODE_PRE_DEEPSEEK_LLM, "\xe4\xb8\xad\xe6\x96\x87\xe3\x80\x80x",
                "\xe4\xb8\xad\xe6\x96\x87|\xe3\x80\x80x");
    check_split(UNICODE_PRE_PORO, "a(b)c. d", "a|(|b|)|c|.| d");
}

/* Vectors from an independent implementation (Python regex on llama.cpp's expressions),
 * see the header of tests/data/tok_pre_split.txt. */
static void test_tok_pre_split_matches_reference_regex(void **state)
{
    (void)state;
    size_t len;
    char *data = test_read_file("tests/data/tok_pre_split.txt", &len);
    assert_non_null(data);
    int n_cases = 0, n_bad = 0;
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        char *cps_txt = strchr(line, '\t');
        assert_non_null(cps_txt);
        char *lens_txt = strchr(cps_txt + 1, '\t');
        assert_non_null(lens_txt);
        uint32_t cps[128], lens[128], scratch[128], want[128];
        size_t n = 0, n_want = 0, n_words;
        int pre = atoi(line);
        for (char *p = cps_txt + 1, *e; p < lens_txt; p = e) {
            unsigned long v = strtoul(p, &e, 16);
            if (e == p) break;
            assert_true(n < 128);
            cps[n++] = (uint32_t)v;
        }
        for (char *p = lens_txt + 1, *e;; p = e) {
            unsigned long v = strtoul(p, &e, 10);
            if (e == p) break;
            assert_true(n_want < 128);
            want[n_want++] = (uint32_t)v;
        }
        unicode_pre_split((enum unicode_pre)pre, cps, n, lens, scratch, &n_words);
        n_cases++;
        if (n_words != n_want || memcmp(lens, want, n_want * sizeof *lens)) {
            fprintf(stderr, "pre %d case '%s' differs\n", pre, cps_txt + 1);
            n_bad++;
        }
    }
    free(data);
    printf("pre-tokenizer splits: %d/%d as the reference regex\n", n_cases - n_bad, n_cases);
    assert_int_equal(n_cases, 1200);
    assert_int_equal(n_bad, 0);
}

/* ---- llama.cpp vocab test vectors ------------------------------------------------------ */

struct vec_result {
    int n_cases, ids_ok, roundtrip_ok;
};

static void run_vocab_vectors(const char *name, bool roundtrip, struct vec_result *r)
{
    char rel[512];
    snprintf(rel, sizeof rel, "llamacpp-vocab/%s", name);
    size_t inp_len, out_len;
    char path[1024];
    snprintf(path, sizeof path, "%s.inp", test_model_path(rel));
    char *inp = test_read_file(path, &inp_len);
    snprintf(path, sizeof path, "%s.out", test_model_path(rel));
    char *out = test_read_file(path, &out_len);
    assert_non_null(inp);
    assert_non_null(out);
    struct tok *t = load_vocab(rel);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    const size_t sep_len = sizeof sep - 1;
    char *line = out;
    size_t pos = 0;
    memset(r, 0, sizeof *r);
    while (pos < inp_len) {
        char *next = memmem(inp + pos, inp_len - pos, sep, sep_len);
        size_t len = next ? (size_t)(next - (inp + pos)) : inp_len - pos;
        const char *text = inp + pos;
        /* Expected ids: one line of the .out file. */
        assert_true(line < out + out_len || len == 0);
        char *eol = strchr(line, '\n');
        if (eol) *eol = '\0';
        int32_t want[1024];
        int n_want = 0;
        for (char *p = line, *e; n_want < 1024; p = e) {
            long v = strtol(p, &e, 10);
            if (e == p) break;
            want[n_want++] = (int32_t)v;
        }
        line = eol ? eol + 1 : line + strlen(line);

        int n_got;
        int32_t *got = encode(t, text, len, false, false, &n_got);
        r->n_cases++;
        if (ids_equal(got, n_got, want, n_want)) {
            r->ids_ok++;
        } else {
            fprintf(stderr, "%s: case %d '%.*s':\n  got ", name, r->n_cases, (int)len, text);
            for (int i = 0; i < n_got; i++) fprintf(stderr, " %d", got[i]);
            fprintf(stderr, "\n  want");
            for (int i = 0; i < n_want; i++) fprintf(stderr, " %d", want[i]);
            fprintf(stderr, "\n");
        }
        int dlen;
        char *back = decode(t, got, n_got, true, false, &dlen);
        if ((size_t)dlen == len && !memcmp(back, text, len))
            r->roundtrip_ok++;
        else if (roundtrip)
            fprintf(stderr, "%s: case %d round trip '%.*s' -> '%s'\n", name, r->n_cases,
                    (int)len, text, back);
        free(back);
        free(got);
        if (!next) break;
        pos = (size_t)(next - inp) + sep_len;
    }
    tok_free(t);
    free(inp);
    free(out);
}

static void test_tok_llamacpp_vocab_vectors(void **state)
{
    (void)state;
    DIR *d = opendir(test_model_path("llamacpp-vocab"));
    assert_non_null(d);
    struct dirent *e;
    int n_vocabs = 0, n_failed = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".gguf")) continue;
        char name[256];
        snprintf(name, sizeof name, "%s", e->d_name);
        char rel[512];
        snprintf(rel, sizeof rel, "llamacpp-vocab/%s", name);
        struct gguf *g = NULL;
        char err[256] = "";
        assert_int_equal(gguf_open(test_model_path(rel), &g, err, sizeof err), 0);
        struct gguf_str model;
        assert_int_equal(gguf_get_str(g, "tokenizer.ggml.model", &model), 0);
        /* WordPiece lowercases and drops accents: its text does not come back. */
        bool wpm = model.len == 4 && !memcmp(model.ptr, "bert", 4);
        gguf_close(g);
        struct vec_result r;
        run_vocab_vectors(name, !wpm, &r);
        if (wpm)
            printf("%-34s %2d/%2d ids (WordPiece: no round trip)\n", name, r.ids_ok, r.n_cases);
        else
            printf("%-34s %2d/%2d ids, %2d/%2d round trips\n", name, r.ids_ok, r.n_cases,
                   r.roundtrip_ok, r.n_cases);
        if (r.ids_ok != r.n_cases || (!wpm && r.roundtrip_ok != r.n_cases) || r.n_cases < 10)
            n_failed++;
        n_vocabs++;
    }
    closedir(d);
    assert_true(n_vocabs >= 8);
    assert_int_equal(n_failed, 0);
}

/* ---- llama2.c and stories260K references ------------------------------------------------ */

static cJSON *read_json(const char *rel)
{
    char *s = test_read_file(test_model_path(rel), NULL);
    assert_non_null(s);
    cJSON *j = cJSON_Parse(s);
    free(s);
    assert_non_null(j);
    return j;
}

static int json_ids(const cJSON *arr, int32_t *ids, int cap)
{
    int n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr)
    {
        assert_true(n < cap);
        ids[n++] = (int32_t)v->valuedouble;
    }
    return n;
}

/* Meta's sentencepiece ids (llama2.c test.c) on the same Llama 2 vocab, BOS included. */
static void test_tok_llama2_vectors_with_bos(void **state)
{
    (void)state;
    struct tok *t = load_vocab("llamacpp-vocab/ggml-vocab-llama-spm.gguf");
    assert_true(tok_adds_bos(t));
    cJSON *j = read_json("reference/llama2-tokenizer.vectors.json");
    const cJSON *c;
    int n_cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cases"))
    {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        int32_t want[256];
        int n_want = json_ids(cJSON_GetObjectItem(c, "ids"), want, 256), n;
        int32_t *got = encode(t, text, strlen(text), true, true, &n);
        assert_true(ids_equal(got, n, want, n_want));
        free(got);
        n_cases++;
    }
    assert_int_equal(n_cases, 5);
    cJSON_Delete(j);
    tok_free(t);
}

static void test_tok_stories260k_prompts_and_texts(void **state)
{
    (void)state;
    struct tok *t = load_vocab("stories260K.gguf");
    assert_int_equal(tok_model(t), TOK_MODEL_SPM);
    assert_int_equal(tok_n_vocab(t), 512);
    assert_int_equal(tok_bos(t), 1);
    assert_int_equal(tok_eos(t), 2);
    assert_true(tok_is_eog(t, 2));
    cJSON *j = read_json("reference/stories260K.generations.json");
    const cJSON *c;
    int n_cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cases"))
    {
        const char *prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
        int32_t want[64], gen[600];
        int n_want = json_ids(cJSON_GetObjectItem(c, "prompt_ids"), want, 64), n;
        int32_t *got = encode(t, prompt, strlen(prompt), true, true, &n);
        assert_true(ids_equal(got, n, want, n_want));
        free(got);
        /* Text = pieces after BOS (prompt then generation, stopping at BOS), first space
         * stripped: what llama2.c printed. */
        int n_gen = n_want - 1;
        memcpy(gen, want + 1, (size_t)n_gen * sizeof *gen);
        const cJSON *v;
        cJSON_ArrayForEach(v, cJSON_GetObjectItem(c, "generated_ids"))
        {
            if ((int)v->valuedouble == 1) break;
            assert_true(n_gen < 600);
            gen[n_gen++] = (int32_t)v->valuedouble;
        }
        int len;
        char *text = decode(t, gen, n_gen, true, false, &len);
        assert_string_equal(text, cJSON_GetObjectItem(c, "text")->valuestring);
        free(text);
        n_cases++;
    }
    assert_int_equal(n_cases, 7);
    cJSON_Delete(j);
    tok_free(t);
}

/* ---- special tokens, streaming, invalid input, sizes ------------------------------------- */

static void test_tok_special_token_parsing(void **state)
{
    (void)state;
    struct tok *t = load_vocab("llamacpp-vocab/ggml-vocab-llama-spm.gguf");
    const char *s = "<s>Hello</s>";
    int n_raw, n_sp;
    int32_t *raw = encode(t, s, strlen(s), false, false, &n_raw);
    int32_t *sp = encode(t, s, strlen(s), false, true, &n_sp);
    /* Parsed: BOS, then the text gets the dummy-prefix space after a special token. */
    int32_t hello[8];
    int n_hello;
    assert_int_equal(tok_encode(t, "Hello", 5, false, false, hello, 8, &n_hello), 0);
    assert_int_equal(n_sp, 2 + n_hello);
    assert_int_equal(sp[0], 1);
    assert_memory_equal(sp + 1, hello, (size_t)n_hello * sizeof *hello);
    assert_int_equal(sp[n_sp - 1], 2);
    /* Not parsed: the angle brackets are ordinary text. */
    assert_true(n_raw > n_sp);
    for (int i = 0; i < n_raw; i++) assert_true(raw[i] != 1 && raw[i] != 2);
    /* Control tokens render only on request. */
    int len;
    char *txt = decode(t, sp, n_sp, true, false, &len);
    assert_string_equal(txt, "Hello");
    free(txt);
    txt = decode(t, sp, n_sp, false, true, &len);
    assert_string_equal(txt, "<s> Hello</s>");
    free(txt);
    assert_int_equal(tok_find(t, "<s>", 3), 1);
    assert_int_equal(tok_type_of(t, 1), TOK_TYPE_CONTROL);
    free(raw);
    free(sp);
    tok_free(t);

    t = load_vocab("llamacpp-vocab/ggml-vocab-gpt-2.gguf");
    assert_false(tok_adds_bos(t));
    assert_string_equal(tok_pre_name(t), "gpt-2");
    const char *g = "a<|endoftext|>b";
    sp = encode(t, g, strlen(g), true, true, &n_sp);
    assert_int_equal(n_sp, 3);
    assert_int_equal(sp[1], 50256);
    assert_true(tok_is_eog(t, 50256));
    raw = encode(t, g, strlen(g), false, false, &n_raw);
    assert_true(n_raw > 3);
    for (int i = 0; i < n_raw; i++) assert_true(raw[i] != 50256);
    free(raw);
    free(sp);
    tok_free(t);

    /* Phi-3 (general.name "Phi3"): white space after its special tokens is stripped, as
     * llama.cpp's rstrip attribute does; the text after a special token gets the SPM
     * dummy prefix. */
    t = load_vocab("llamacpp-vocab/ggml-vocab-phi-3.gguf");
    const char *ph = "<|user|>  \nHi there<|end|>\n<|assistant|>";
    sp = encode(t, ph, strlen(ph), true, true, &n_sp);
    const int32_t want_ph[] = {1, 32010, 6324, 727, 32007, 32001};
    assert_true(ids_equal(sp, n_sp, want_ph, 6));
    assert_true(tok_is_eog(t, 32007)); /* <|end|> */
    free(sp);
    tok_free(t);

    /* WordPiece: [CLS] ... [SEP] with add_special; case and accents folded. */
    t = load_vocab("llamacpp-vocab/ggml-vocab-bert-bge.gguf");
    assert_int_equal(tok_model(t), TOK_MODEL_WPM);
    const char *b = "H\xc3\xa9llo [SEP]";
    sp = encode(t, b, strlen(b), true, true, &n_sp);
    raw = encode(t, "hello", 5, false, false, &n_raw);
    assert_int_equal(n_raw, 1);
    assert_int_equal(n_sp, 4);
    assert_int_equal(sp[0], 101);
    assert_int_equal(sp[1], raw[0]);
    assert_int_equal(sp[2], 102);
    assert_int_equal(sp[3], 102);
    free(raw);
    free(sp);
    tok_free(t);
}

/* Streams ids one by one; every chunk must be whole UTF-8 and the sum the text. */
static void stream_check(const struct tok *t, const char *text, bool strip)
{
    int n;
    int32_t *ids = encode(t, text, strlen(text), false, false, &n);
    struct tok_stream st;
    tok_stream_init(&st, t, strip);
    char all[1024], chunk[256];
    size_t total = 0;
    int n_held = 0;
    for (int i = 0; i < n; i++) {
        int k = tok_stream_push(&st, ids[i], chunk, sizeof chunk);
        assert_true(k >= 0);
        if (k == 0) n_held++;
        assert_int_equal(unicode_utf8_complete_len((unsigned char *)chunk, (size_t)k), (size_t)k);
        for (int b = 0; b < k; b++) {
            size_t used;
            unicode_utf8_decode((unsigned char *)chunk + b, (size_t)(k - b), &used);
            b += (int)used - 1;
        }
        memcpy(all + total, chunk, (size_t)k);
        total += (size_t)k;
    }
    assert_int_equal(tok_stream_flush(&st, chunk, sizeof chunk), 0);
    assert_int_equal(total, strlen(text));
    assert_memory_equal(all, text, total);
    assert_true(n_held > 0); /* the text needs byte tokens: some pushes held bytes back */
    free(ids);
}

static void test_tok_stream_never_splits_utf8(void **state)
{
    (void)state;
    const char *text = "Hi \xf0\x9f\xa6\x99 \xe7\x8c\xab\xf0\x9f\x98\x80 caf\xc3\xa9 \xe4\xb8\x96";
    struct tok *t = load_vocab("llamacpp-vocab/ggml-vocab-llama-spm.gguf");
    stream_check(t, text, true);
    /* An incomplete character at the end flushes as U+FFFD. */
    int32_t ids[2] = {tok_find(t, "<0xF0>", 6), tok_find(t, "<0x9F>", 6)};
    struct tok_stream st;
    char out[64];
    tok_stream_init(&st, t, false);
    assert_int_equal(tok_stream_push(&st, ids[0], out, sizeof out), 0);
    assert_int_equal(tok_stream_push(&st, ids[1], out, sizeof out), 0);
    assert_int_equal(tok_stream_flush(&st, out, sizeof out), 3);
    assert_memory_equal(out, "\xef\xbf\xbd", 3);
    assert_int_equal(tok_stream_push(&st, 999999, out, sizeof out), MESH_EINVAL);
    tok_free(t);
    t = load_vocab("llamacpp-vocab/ggml-vocab-gpt-2.gguf");
    stream_check(t, text, false);
    tok_free(t);
}

static void test_tok_invalid_utf8_round_trips(void **state)
{
    (void)state;
    static const char bad[] = "ok \xff\xfe \xe2\x82 x\x80y \xf0\x9f\x98 \xc3";
    const char *vocabs[] = {"llamacpp-vocab/ggml-vocab-llama-spm.gguf",
                            "llamacpp-vocab/ggml-vocab-phi-3.gguf",
                            "llamacpp-vocab/ggml-vocab-gpt-2.gguf",
                            "llamacpp-vocab/ggml-vocab-falcon.gguf"};
    for (size_t v = 0; v < 4; v++) {
        struct tok *t = load_vocab(vocabs[v]);
        /* Falcon's vocab has no token for the mapped bytes 0xFF and 0xFE (they never occur
         * in UTF-8): like llama.cpp, those two bytes are dropped, the rest is exact. */
        const char *want = v == 3 ? "ok  \xe2\x82 x\x80y \xf0\x9f\x98 \xc3" : bad;
        for (int parse = 0; parse < 2; parse++) {
            int n, len;
            int32_t *ids = encode(t, bad, sizeof bad - 1, false, parse, &n);
            char *back = decode(t, ids, n, true, false, &len);
            assert_int_equal(len, strlen(want));
            assert_memory_equal(back, want, (size_t)len);
            free(back);
            free(ids);
        }
        tok_free(t);
    }
}

static void test_tok_encode_reports_needed_size(void **state)
{
    (void)state;
    struct tok *t = load_vocab("stories260K.gguf");
    int32_t ids[3];
    int n = -1;
    const char *s = "Once upon a time";
    assert_int_equal(tok_encode(t, s, strlen(s), true, false, ids, 3, &n), MESH_ERANGE);
    assert_int_equal(n, 5);
    assert_int_equal(tok_encode(t, s, strlen(s), true, false, NULL, 0, &n), MESH_ERANGE);
    assert_int_equal(n, 5);
    assert_int_equal(tok_encode(t, "", 0, true, false, ids, 3, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(tok_encode(t, "", 0, false, false, ids, 3, &n), 0);
    assert_int_equal(n, 0);
    /* Decoding is snprintf-like and piece copies truncate. */
    int32_t once[] = {403, 407};
    char buf[4];
    assert_int_equal(tok_decode(t, once, 2, true, false, buf, sizeof buf), 9);
    assert_string_equal(buf, "Onc");
    assert_int_equal(tok_piece(t, 403, false, buf, 2), 2);
    assert_int_equal(tok_piece(t, -1, false, buf, 2), MESH_EINVAL);
    assert_int_equal(tok_decode(t, once, 1, false, false, buf, 0), 5); /* " Once" */
    int32_t bad_id = 512;
    assert_true(tok_decode(t, &bad_id, 1, false, false, buf, sizeof buf) < 0);
    tok_free(t);
}

static void test_tok_load_rejects_broken_vocab(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/broken.gguf", test_tmp_dir());
    struct gguf_writer *w;
    assert_int_equal(gguf_writer_new(&w), 0);
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"), 0);
    char err[256];
    assert_int_equal(gguf_writer_write(w, path, NULL, NULL, err, sizeof err), 0);
    gguf_writer_free(w);
    struct gguf *g;
    struct tok *t;
    assert_int_equal(gguf_open(path, &g, err, sizeof err), 0);
    assert_int_equal(tok_load(g, &t, err, sizeof err), MESH_EBADMODEL);
    assert_non_null(strstr(err, "tokenizer.ggml.tokens"));
    gguf_close(g);

    /* A gpt2 vocabulary needs merges; an unknown model type is refused. */
    const char *toks[] = {"a", "b", "ab"};
    assert_int_equal(gguf_writer_new(&w), 0);
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"), 0);
    assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 3), 0);
    assert_int_equal(gguf_writer_write(w, path, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(gguf_open(path, &g, err, sizeof err), 0);
    assert_int_equal(tok_load(g, &t, err, sizeof err), MESH_EBADMODEL);
    gguf_close(g);
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "t5"), 0);
    assert_int_equal(gguf_writer_write(w, path, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(gguf_open(path, &g, err, sizeof err), 0);
    assert_int_equal(tok_load(g, &t, err, sizeof err), MESH_EUNSUPPORTED);
    gguf_close(g);
    /* Merges given: "a b" merges; an unknown pre falls back to default. */
    const char *merges[] = {"a b"};
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"), 0);
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.pre", "no-such-pre"), 0);
    assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 1), 0);
    assert_int_equal(gguf_writer_write(w, path, NULL, NULL, err, sizeof err), 0);
    gguf_writer_free(w);
    assert_int_equal(gguf_open(path, &g, err, sizeof err), 0);
    assert_int_equal(tok_load(g, &t, err, sizeof err), 0);
    gguf_close(g);
    assert_string_equal(tok_pre_name(t), "default");
    int32_t ids[4];
    int n;
    assert_int_equal(tok_encode(t, "abab", 4, false, false, ids, 4, &n), 0);
    assert_int_equal(n, 2); /* one word: a b a b -> ab ab ("abab" is no token) */
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 2);
    tok_free(t);
}

/* tok_vocab_compare: the same vocabulary from two files (GGUF F32 and F16 of stories260K)
 * matches; another vocabulary (Llama 2's 32000) differs in size, and so does Phi-3's, which
 * extends Llama 2's by 64 tokens; a copy of stories260K's vocabulary with one token's text
 * changed is caught at that token. */
static void test_tok_vocab_compare(void **state)
{
    (void)state;
    struct tok *a = load_vocab("stories260K.gguf"), *b = load_vocab("stories260K-F16.gguf");
    struct tok *l2 = load_vocab("llamacpp-vocab/ggml-vocab-llama-spm.gguf");
    struct tok *p3 = load_vocab("llamacpp-vocab/ggml-vocab-phi-3.gguf");
    int32_t id = 123;
    assert_int_equal(tok_vocab_compare(a, b, &id), 0);
    assert_int_equal(id, -1);
    assert_int_equal(tok_vocab_compare(a, l2, &id), MESH_EBADMODEL);
    assert_int_equal(id, -1); /* sizes differ */
    assert_int_equal(tok_vocab_compare(l2, l2, &id), 0);
    id = 7;
    assert_int_equal(tok_vocab_compare(l2, p3, &id), MESH_EBADMODEL);
    assert_int_equal(id, -1);
    /* a copy of stories260K's vocabulary with token 300's text changed: same size, BOS, EOS */
    struct gguf *g = NULL;
    struct gguf_writer *w = NULL;
    char err[256] = "", path[] = "/tmp/meshllm-test-vocab-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(gguf_open(test_model_path("stories260K.gguf"), &g, err, sizeof err), 0);
    assert_int_equal(gguf_writer_new(&w), 0);
    uint64_t n_tok = 0;
    struct gguf_str *pieces = NULL;
    for (int64_t i = 0; i < gguf_kv_count(g); i++) {
        struct gguf_str k = gguf_kv_key(g, i);
        if (k.len == strlen("tokenizer.ggml.tokens") && !memcmp(k.ptr, "tokenizer.ggml.tokens", k.len)) {
            enum gguf_vtype et;
            const void *data;
            assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n_tok, &data), 0);
            pieces = calloc(n_tok, sizeof *pieces);
            for (uint64_t j = 0; j < n_tok; j++)
                assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.tokens", j, &pieces[j]), 0);
            pieces[300].ptr = "qzqzq";
            pieces[300].len = 5;
            assert_int_equal(gguf_writer_set_arr_gstr(w, "tokenizer.ggml.tokens", pieces, n_tok), 0);
        } else {
            assert_int_equal(gguf_writer_copy_kv(w, g, i), 0);
        }
    }
    assert_int_equal(n_tok, 512);
    assert_int_equal(gguf_writer_write(w, path, NULL, NULL, err, sizeof err), 0);
    gguf_writer_free(w);
    gguf_close(g);
    free(pieces);
    assert_int_equal(gguf_open(path, &g, err, sizeof err), 0);
    struct tok *c = NULL;
    assert_int_equal(tok_load(g, &c, err, sizeof err), 0);
    gguf_close(g);
    unlink(path);
    assert_int_equal(tok_vocab_compare(a, c, &id), MESH_EBADMODEL);
    assert_int_equal(id, 300);
    tok_free(c);
    tok_free(p3);
    tok_free(l2);
    tok_free(b);
    tok_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tok_vocab_compare),
        cmocka_unit_test(test_tok_unicode_categories),
        cmocka_unit_test(test_tok_unicode_utf8_helpers),
        cmocka_unit_test(test_tok_pre_split_patterns),
        cmocka_unit_test(test_tok_pre_split_matches_reference_regex),
        cmocka_unit_test(test_tok_llamacpp_vocab_vectors),
        cmocka_unit_test(test_tok_llama2_vectors_with_bos),
        cmocka_unit_test(test_tok_stories260k_prompts_and_texts),
        cmocka_unit_test(test_tok_special_token_parsing),
        cmocka_unit_test(test_tok_stream_never_splits_utf8),
        cmocka_unit_test(test_tok_invalid_utf8_round_trips),
        cmocka_unit_test(test_tok_encode_reports_needed_size),
        cmocka_unit_test(test_tok_load_rejects_broken_vocab),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
