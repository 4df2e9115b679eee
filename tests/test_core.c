/* test_core.c - core/: error texts, thread pool fork/join. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "core/pool.h"

#include <stdatomic.h>
#include <string.h>

static void test_core_err_set_formats_and_returns_code(void **state)
{
    (void)state;
    char buf[64];
    int rc = err_set(buf, sizeof buf, MESH_EBADMODEL, "tensor %s bad", "x");
    assert_int_equal(rc, MESH_EBADMODEL);
    assert_string_equal(buf, "tensor x bad");
    assert_string_equal(err_str(MESH_ENOMEM), "out of memory");
    assert_int_equal(err_set(NULL, 0, MESH_EIO, "ignored"), MESH_EIO);
}

struct sum_job {
    atomic_int hits[8];
    atomic_long total;
};

static void sum_fn(void *arg, int ith, int nth)
{
    struct sum_job *j = arg;
    atomic_fetch_add(&j->hits[ith], 1);
    long s = 0;
    for (int i = ith; i < 1000; i += nth) s += i;
    atomic_fetch_add(&j->total, s);
}

static void test_core_pool_runs_every_slice_once(void **state)
{
    (void)state;
    struct pool *p;
    assert_int_equal(pool_new(4, &p), 0);
    assert_int_equal(pool_size(p), 4);
    struct sum_job j;
    memset(&j, 0, sizeof j);
    for (int rep = 0; rep < 300; rep++) pool_run(p, sum_fn, &j);
    for (int i = 0; i < 4; i++) assert_int_equal(atomic_load(&j.hits[i]), 300);
    assert_int_equal(atomic_load(&j.total), 300L * 499500L);
    pool_free(p);
    pool_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_core_err_set_formats_and_returns_code),
        cmocka_unit_test(test_core_pool_runs_every_slice_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
