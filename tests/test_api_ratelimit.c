/* test_api_ratelimit.c - api/ratelimit.c on a virtual clock: N requests a minute per client,
 * the (N+1)th refused with the seconds until the next token, refill, clients apart, the
 * bounded table forgetting the client seen longest ago. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/api_internal.h"
#include "core/err.h"

#include <string.h>

static bool take(struct api_ratelimit *rl, unsigned ip, int64_t now_ms, int *wait_s)
{
    unsigned char key[5] = {4, (unsigned char)(ip >> 24), (unsigned char)(ip >> 16),
                            (unsigned char)(ip >> 8), (unsigned char)ip};
    return api_ratelimit_take(rl, key, sizeof key, now_ms, wait_s);
}

static void test_api_ratelimit_burst_then_429_with_wait(void **state)
{
    (void)state;
    struct api_ratelimit *rl;
    assert_int_equal(api_ratelimit_new(3, 16, &rl), 0);
    int wait_s;
    int64_t t = 1000000;
    for (int i = 0; i < 3; i++) {
        assert_true(take(rl, 1, t, &wait_s));
        assert_int_equal(wait_s, 0);
    }
    assert_false(take(rl, 1, t, &wait_s));
    assert_int_equal(wait_s, 20); /* 3 a minute: one token every 20 s */
    /* 19.5 s later: still short, half a second to go (rounded up to 1) */
    assert_false(take(rl, 1, t + 19500, &wait_s));
    assert_int_equal(wait_s, 1);
    assert_true(take(rl, 1, t + 20000, &wait_s));
    assert_false(take(rl, 1, t + 20000, &wait_s));
    /* another client has its own bucket */
    assert_true(take(rl, 2, t + 20000, &wait_s));
    /* an hour of silence fills the bucket to N, not more */
    t += 3600 * 1000;
    for (int i = 0; i < 3; i++) assert_true(take(rl, 1, t, &wait_s));
    assert_false(take(rl, 1, t, &wait_s));
    api_ratelimit_free(rl);
    api_ratelimit_free(NULL);
    assert_true(api_ratelimit_take(NULL, "x", 1, 0, &wait_s)); /* off */
    assert_int_equal(api_ratelimit_new(0, 16, &rl), MESH_EINVAL);
}

static void test_api_ratelimit_wait_at_least_one_second(void **state)
{
    (void)state;
    struct api_ratelimit *rl;
    assert_int_equal(api_ratelimit_new(600000, 4, &rl), 0); /* 10 000 a second */
    int wait_s;
    for (int i = 0; i < 600000; i++)
        if (!take(rl, 7, 5, &wait_s)) fail_msg("refused at %d", i);
    assert_false(take(rl, 7, 5, &wait_s));
    assert_int_equal(wait_s, 1);
    api_ratelimit_free(rl);
}

static void test_api_ratelimit_table_forgets_oldest(void **state)
{
    (void)state;
    struct api_ratelimit *rl;
    assert_int_equal(api_ratelimit_new(1, 4, &rl), 0);
    int wait_s;
    /* clients 1..4 fill the table and spend their token; 1 is seen again last */
    for (unsigned ip = 1; ip <= 4; ip++) assert_true(take(rl, ip, ip, &wait_s));
    assert_false(take(rl, 1, 10, &wait_s));
    /* a fifth client evicts the one seen longest ago (2), not 1 */
    assert_true(take(rl, 5, 11, &wait_s));
    assert_false(take(rl, 1, 12, &wait_s));
    assert_false(take(rl, 3, 12, &wait_s)); /* 3 and 4 still remembered */
    assert_true(take(rl, 2, 13, &wait_s)); /* 2 was forgotten: a new full bucket */
    api_ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_ratelimit_burst_then_429_with_wait),
        cmocka_unit_test(test_api_ratelimit_wait_at_least_one_second),
        cmocka_unit_test(test_api_ratelimit_table_forgets_oldest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
