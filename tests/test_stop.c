/* test_stop.c - engine/stop: streamed stop-string matching, hold-back of partial matches
 * and incomplete UTF-8, chunk boundaries, and a randomized check against a plain search. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/stop.h"
#include "tests/util/test_util.h"

#include <stdlib.h>
#include <string.h>

/* Collects everything a matcher emits. */
struct sink {
    char text[4096];
    size_t len;
    bool is_stopped;
};

static void push(struct stop *s, struct sink *k, const char *text, size_t len)
{
    const char *e;
    size_t n;
    bool st;
    assert_int_equal(stop_push(s, text, len, &e, &n, &st), 0);
    assert_true(k->len + n < sizeof k->text);
    memcpy(k->text + k->len, e, n);
    k->len += n;
    k->text[k->len] = '\0';
    k->is_stopped = st;
}

static void push_str(struct stop *s, struct sink *k, const char *text)
{
    push(s, k, text, strlen(text));
}

static void flush(struct stop *s, struct sink *k)
{
    const char *e;
    size_t n;
    stop_flush(s, &e, &n);
    memcpy(k->text + k->len, e, n);
    k->len += n;
    k->text[k->len] = '\0';
}

static void test_stop_match_across_chunks(void **state)
{
    (void)state;
    const char *strs[] = {"</s>"};
    struct stop *s;
    struct sink k = {0};
    assert_int_equal(stop_new(strs, 1, &s), 0);
    push_str(s, &k, "Hello wor");
    assert_string_equal(k.text, "Hello wor");
    push_str(s, &k, "ld</");
    assert_string_equal(k.text, "Hello world"); /* "</" held back */
    assert_int_equal(stop_held(s), 2);
    assert_false(k.is_stopped);
    push_str(s, &k, "s> and more");
    assert_true(k.is_stopped);
    assert_string_equal(k.text, "Hello world");
    assert_int_equal(stop_matched(s), 0);
    /* Stopped: nothing more comes out, not even on flush. */
    push_str(s, &k, "x</s>");
    flush(s, &k);
    assert_string_equal(k.text, "Hello world");
    stop_free(s);
}

static void test_stop_byte_by_byte(void **state)
{
    (void)state;
    const char *strs[] = {"<|im_end|>"};
    const char *text = "abc<|im_end|>def";
    struct stop *s;
    struct sink k = {0};
    assert_int_equal(stop_new(strs, 1, &s), 0);
    for (size_t i = 0; text[i]; i++) {
        push(s, &k, text + i, 1);
        if (k.is_stopped) {
            assert_int_equal(i, 12); /* the '>' that completes it */
            break;
        }
    }
    assert_true(k.is_stopped);
    assert_string_equal(k.text, "abc");
    stop_free(s);
}

static void test_stop_false_partial_is_released(void **state)
{
    (void)state;
    const char *strs[] = {"</s>", "abcd"};
    struct stop *s;
    struct sink k = {0};
    assert_int_equal(stop_new(strs, 2, &s), 0);
    push_str(s, &k, "x</");
    assert_string_equal(k.text, "x");
    push_str(s, &k, "b> ab");
    assert_string_equal(k.text, "x</b> ");
    push_str(s, &k, "ab"); /* "abab": the second "ab" may still start "abcd" */
    assert_string_equal(k.text, "x</b> ab");
    push_str(s, &k, "cd!");
    assert_true(k.is_stopped);
    assert_int_equal(stop_matched(s), 1);
    assert_string_equal(k.text, "x</b> ab");
    stop_free(s);
}

/* The string that completes first wins, whatever the chunking: "bc" ends before "abcd". */
static void test_stop_first_completed_wins(void **state)
{
    (void)state;
    const char *strs[] = {"abcd", "bc"};
    for (int whole = 0; whole < 2; whole++) {
        struct stop *s;
        struct sink k = {0};
        assert_int_equal(stop_new(strs, 2, &s), 0);
        if (whole) {
            push_str(s, &k, "xabcd");
        } else {
            for (const char *p = "xabcd"; *p && !k.is_stopped; p++) push(s, &k, p, 1);
        }
        assert_true(k.is_stopped);
        assert_int_equal(stop_matched(s), 1);
        assert_string_equal(k.text, "xa");
        stop_free(s);
    }
}

static void test_stop_earliest_of_several(void **state)
{
    (void)state;
    const char *strs[] = {"world", "", "lo w"};
    struct stop *s;
    struct sink k = {0};
    assert_int_equal(stop_new(strs, 3, &s), 0); /* the empty string is ignored */
    push_str(s, &k, "hello world");
    assert_true(k.is_stopped);
    assert_string_equal(k.text, "hel");
    assert_int_equal(stop_matched(s), 2);
    /* reset: a new generation */
    stop_reset(s);
    assert_int_equal(stop_matched(s), -1);
    k.len = 0;
    k.text[0] = '\0';
    push_str(s, &k, "a world");
    assert_string_equal(k.text, "a ");
    assert_int_equal(stop_matched(s), 0);
    stop_free(s);
}

static void test_stop_flush_releases_held(void **state)
{
    (void)state;
    const char *strs[] = {"STOP"};
    struct stop *s;
    struct sink k = {0};
    assert_int_equal(stop_new(strs, 1, &s), 0);
    push_str(s, &k, "abc ST");
    assert_string_equal(k.text, "abc ");
    flush(s, &k);
    assert_string_equal(k.text, "abc ST");
    assert_int_equal(stop_held(s), 0);
    flush(s, &k);
    assert_string_equal(k.text, "abc ST");
    stop_free(s);
}

static void test_stop_utf8_never_split(void **state)
{
    (void)state;
    struct stop *s;
    struct sink k = {0};
    assert_int_equal(stop_new(NULL, 0, &s), 0);
    push_str(s, &k, "h\xC3");
    assert_string_equal(k.text, "h");
    push_str(s, &k, "\xA9 \xF0\x9F");
    assert_string_equal(k.text, "h\xC3\xA9 ");
    push_str(s, &k, "\x98");
    assert_string_equal(k.text, "h\xC3\xA9 ");
    push_str(s, &k, "\x80!");
    assert_string_equal(k.text, "h\xC3\xA9 \xF0\x9F\x98\x80!");
    /* Invalid bytes are not held: they never complete. */
    push_str(s, &k, "\xFF\xC3" "A");
    assert_string_equal(k.text, "h\xC3\xA9 \xF0\x9F\x98\x80!\xFF\xC3" "A");
    /* A stop string starting with a multi-byte character. */
    stop_free(s);
    const char *strs[] = {"\xE2\x80\x94" "END"}; /* em dash + END */
    k.len = 0;
    assert_int_equal(stop_new(strs, 1, &s), 0);
    push_str(s, &k, "ok \xE2");
    push_str(s, &k, "\x80");
    assert_int_equal(k.len, 3);
    push_str(s, &k, "\x94" "EN");
    push_str(s, &k, "D tail");
    assert_true(k.is_stopped);
    k.text[k.len] = '\0';
    assert_string_equal(k.text, "ok ");
    stop_free(s);
}

static void test_stop_rejects_bad_args(void **state)
{
    (void)state;
    struct stop *s = (struct stop *)1;
    assert_int_equal(stop_new(NULL, 2, &s), MESH_EINVAL);
    assert_null(s);
    const char *strs[] = {"a", NULL};
    assert_int_equal(stop_new(strs, 2, &s), MESH_EINVAL);
    stop_free(NULL);
}

/* Random texts over a tiny alphabet (so matches and near-matches are frequent), random
 * stop strings, random chunking: the emitted text must equal the text up to the earliest
 * match (or all of it after flush), and the hold-back must stay minimal. */
static void test_stop_random_against_plain_search(void **state)
{
    (void)state;
    const char alpha[] = "ab<>";
    uint64_t rs = 12345;
    for (int iter = 0; iter < 3000; iter++) {
        char text[200], strs_buf[3][8];
        const char *strs[3];
        size_t tlen = test_rand_u64(&rs) % 120;
        for (size_t i = 0; i < tlen; i++) text[i] = alpha[test_rand_u64(&rs) % 4];
        text[tlen] = '\0';
        size_t n_strs = 1 + test_rand_u64(&rs) % 3, max_len = 0;
        for (size_t j = 0; j < n_strs; j++) {
            size_t l = 1 + test_rand_u64(&rs) % 6;
            for (size_t i = 0; i < l; i++) strs_buf[j][i] = alpha[test_rand_u64(&rs) % 4];
            strs_buf[j][l] = '\0';
            strs[j] = strs_buf[j];
            if (l > max_len) max_len = l;
        }
        /* reference: the first stop string to complete (smallest end), then the longest */
        size_t want_len = tlen, want_end = SIZE_MAX;
        int want_idx = -1;
        for (size_t j = 0; j < n_strs; j++) {
            const char *m = strstr(text, strs[j]);
            if (!m) continue;
            size_t pos = (size_t)(m - text), end = pos + strlen(strs[j]);
            if (end < want_end || (end == want_end && pos < want_len)) {
                want_len = pos;
                want_end = end;
                want_idx = (int)j;
            }
        }
        struct stop *s;
        struct sink k = {0};
        assert_int_equal(stop_new(strs, n_strs, &s), 0);
        size_t fed = 0;
        while (fed < tlen && !k.is_stopped) {
            size_t c = 1 + test_rand_u64(&rs) % 7;
            if (c > tlen - fed) c = tlen - fed;
            push(s, &k, text + fed, c);
            fed += c;
            if (!k.is_stopped) {
                assert_true(k.len + max_len - 1 >= fed); /* holds < longest stop */
                assert_int_equal(k.len + stop_held(s), fed);
            }
        }
        if (!k.is_stopped) flush(s, &k);
        assert_int_equal(k.is_stopped, want_idx >= 0);
        assert_int_equal(stop_matched(s), want_idx);
        assert_int_equal(k.len, want_len);
        assert_memory_equal(k.text, text, want_len);
        stop_free(s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stop_match_across_chunks),
        cmocka_unit_test(test_stop_byte_by_byte),
        cmocka_unit_test(test_stop_false_partial_is_released),
        cmocka_unit_test(test_stop_first_completed_wins),
        cmocka_unit_test(test_stop_earliest_of_several),
        cmocka_unit_test(test_stop_flush_releases_held),
        cmocka_unit_test(test_stop_utf8_never_split),
        cmocka_unit_test(test_stop_rejects_bad_args),
        cmocka_unit_test(test_stop_random_against_plain_search),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
