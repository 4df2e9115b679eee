/* test_registry.c - node/registry: a store model's content hash comes from its manifest
 * (verified when it entered the store), a plain file's from hashing it, and a split range
 * added for a member carries the digest it was asked by. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "node/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[256];

static const char *model_path(void)
{
    static char buf[4096];
    const char *d = getenv("MESHLLM_TEST_MODELS");
    snprintf(buf, sizeof buf, "%s/stories260K.gguf", d && *d ? d : "../shared/models");
    return buf;
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
}

static void test_registry_digests(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/meshllm-test-registry-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    char p[512], fake[65], real[65];
    snprintf(p, sizeof p, "%s/blobs", g_dir);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/manifests", g_dir);
    assert_int_equal(mkdir(p, 0700), 0);
    memset(fake, 'a', 64); /* not the file's hash: proves the manifest is believed, not re-hashed */
    fake[64] = 0;
    const char *cid = "1111111111111111111111111111111111111111111111111111111111111111";
    snprintf(p, sizeof p, "%s/blobs/%s", g_dir, cid);
    copy_file(model_path(), p);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    snprintf(p, sizeof p, "%s/manifests/s:latest.json", g_dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fprintf(f, "{\"name\":\"s\",\"tag\":\"latest\",\"source\":\"t\",\"size\":%lld,\"content_id\":"
               "\"%s\",\"sha256\":\"%s\",\"piece_len\":1048576,\"added\":0}",
            (long long)sb.st_size, cid, fake);
    fclose(f);
    setenv("MESHLLM_MODELS", g_dir, 1);
    assert_int_equal(registry_file_sha256(model_path(), real, NULL), 0);
    assert_int_equal(strlen(real), 64);

    struct sched_params sp;
    sched_params_default(&sp);
    sp.n_slots = 1;
    sp.n_threads = 1;
    struct registry *r;
    char err[256];
    assert_int_equal(registry_new(&sp, &r), 0);
    assert_int_equal(registry_add(r, "s", err, sizeof err), 0);           /* store name */
    assert_int_equal(registry_add(r, model_path(), err, sizeof err), 0);  /* plain path */
    assert_string_equal(registry_digest(r, 0), fake); /* known before loading */
    assert_null(registry_digest(r, 1));
    assert_int_equal(registry_load_wait(r), 0);
    registry_hash_wait(r);
    assert_string_equal(registry_digest(r, 0), fake);
    assert_string_equal(registry_digest(r, 1), real);
    /* a range loaded for a member: named as asked, with the digest it was asked by */
    assert_int_equal(registry_add_split_load(r, model_path(), "m@2-3", real, 2, 4, err,
                                             sizeof err), 0);
    assert_int_not_equal(registry_add_split_load(r, model_path(), "m@2-3", real, 2, 4, err,
                                                 sizeof err), 0); /* the name is taken */
    enum registry_state st = REGISTRY_LOADING;
    struct registry_entry *e = NULL;
    for (int i = 0; i < 400 && st == REGISTRY_LOADING; i++) {
        e = registry_find(r, "m@2-3", &st);
        usleep(10000);
    }
    assert_non_null(e);
    assert_int_equal(st, REGISTRY_READY);
    assert_true(e->is_split);
    assert_int_equal(e->layer_begin, 2);
    assert_int_equal(e->layer_end, 4);
    assert_string_equal(registry_digest(r, 2), real);
    registry_free(r);
    unsetenv("MESHLLM_MODELS");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_digests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
