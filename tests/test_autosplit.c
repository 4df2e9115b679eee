/* test_autosplit.c - node/autosplit (who loads which layers) and the /meshllm/stageload/1
 * codec: layer sizes of a real GGUF, what fits in some memory, ranges in proportion to
 * memory x speed and capped by memory, refusal when memory is short; the announcement's
 * free memory, speed and accept_stages; stageload requests and replies round-trip and
 * malformed ones are refused. The protocol between processes: tests/split_auto.test.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "core/sysmem.h"
#include "net/identity.h"
#include "node/autosplit.h"
#include "node/peers.h"
#include "node/stage_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *model_path(void)
{
    static char buf[4096];
    const char *d = getenv("MESHLLM_TEST_MODELS");
    snprintf(buf, sizeof buf, "%s/stories260K.gguf", d && *d ? d : "../shared/models");
    return buf;
}

static void test_autosplit_sizes_of_a_real_model(void **state)
{
    (void)state;
    uint64_t *lb = NULL, shared = 0;
    int n = 0;
    char err[256];
    assert_int_equal(autosplit_sizes_read(model_path(), &lb, &n, &shared, err, sizeof err), 0);
    assert_int_equal(n, 5); /* stories260K: 5 layers of one shape */
    uint64_t sum = shared;
    for (int l = 0; l < n; l++) {
        assert_true(lb[l] > 0);
        assert_int_equal(lb[l], lb[0]);
        sum += lb[l];
    }
    /* the tensors are most of the file (the rest: header, vocabulary, alignment) */
    assert_true(sum < 1185376 && sum > 1185376 / 2);
    /* what fits: all with plenty, none with too little, a part in between */
    assert_int_equal(autosplit_fit(lb, n, shared, 1ull << 30), n);
    assert_int_equal(autosplit_fit(lb, n, shared, shared / 2), 0);
    uint64_t two = (uint64_t)((double)(shared + 2 * lb[0]) / AUTOSPLIT_MEM_SHARE) + 1;
    assert_int_equal(autosplit_fit(lb, n, shared, two), 2);
    free(lb);
    assert_int_not_equal(autosplit_sizes_read("/nonexistent.gguf", &lb, &n, &shared, err,
                                              sizeof err), 0);
    assert_null(lb);
}

static void test_autosplit_assign_proportional(void **state)
{
    (void)state;
    uint64_t lb[12];
    for (int i = 0; i < 12; i++) lb[i] = 100;
    struct autosplit_range r[8];
    /* equal memory, speed 3:1 -> 9 and 3 layers */
    struct autosplit_cand c[2] = {{.mem_free = 10000, .speed = 3}, {.mem_free = 10000, .speed = 1}};
    int n = autosplit_assign(lb, 0, 12, c, 2, r, 8);
    assert_int_equal(n, 2);
    assert_int_equal(r[0].cand, 0);
    assert_int_equal(r[0].layer_begin, 0);
    assert_int_equal(r[0].layer_end, 9);
    assert_int_equal(r[1].cand, 1);
    assert_int_equal(r[1].layer_begin, 9);
    assert_int_equal(r[1].layer_end, 12);
    /* a gap in the middle of the model, three equal peers: 4 layers each, contiguous */
    struct autosplit_cand e[3] = {{5000, 1}, {5000, 1}, {5000, 1}};
    n = autosplit_assign(lb, 0, 12, e, 3, r, 8);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].layer_begin, 4 * i);
        assert_int_equal(r[i].layer_end, 4 * i + 4);
    }
    n = autosplit_assign(lb, 3, 7, e, 3, r, 8);
    assert_true(n >= 1);
    assert_int_equal(r[0].layer_begin, 3);
    assert_int_equal(r[n - 1].layer_end, 7);
}

static void test_autosplit_assign_capped_by_memory(void **state)
{
    (void)state;
    uint64_t lb[10];
    for (int i = 0; i < 10; i++) lb[i] = 100;
    struct autosplit_range r[8];
    /* the fast one has room for 2 layers only (250 x 0.8 = 200): the other takes the rest */
    struct autosplit_cand c[2] = {{.mem_free = 250, .speed = 100}, {.mem_free = 100000, .speed = 1}};
    int n = autosplit_assign(lb, 0, 10, c, 2, r, 8);
    assert_int_equal(n, 2);
    assert_int_equal(r[0].layer_end, 2);
    assert_int_equal(r[1].layer_begin, 2);
    assert_int_equal(r[1].layer_end, 10);
    /* a share that rounds to nothing is skipped; all memory together too little: refused */
    struct autosplit_cand tiny[2] = {{.mem_free = 1, .speed = 1}, {.mem_free = 100000, .speed = 1}};
    n = autosplit_assign(lb, 0, 10, tiny, 2, r, 8);
    assert_int_equal(n, 1);
    assert_int_equal(r[0].cand, 1);
    struct autosplit_cand small[2] = {{.mem_free = 500, .speed = 1}, {.mem_free = 500, .speed = 1}};
    assert_int_equal(autosplit_assign(lb, 0, 10, small, 2, r, 8), MESH_EFULL);
    assert_int_equal(autosplit_assign(lb, 0, 10, c, 0, r, 8), MESH_EFULL);
    assert_int_equal(autosplit_assign(lb, 5, 5, c, 2, r, 8), MESH_EINVAL);
}

static void test_autosplit_announce_fields(void **state)
{
    (void)state;
    struct identity idn;
    assert_int_equal(identity_generate(&idn), 0);
    struct multiaddr a;
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/4001", &a), 0);
    assert_int_equal(multiaddr_append_p2p(&a, &idn.id), 0);
    struct peers_self self = {.mem_free = 123456789, .speed_gbps = 12.5f, .accept_stages = true};
    uint8_t *rec;
    size_t len;
    assert_int_equal(peers_announce_encode_self(1, 30, NULL, 0, &a, 1, &self, NULL, 0, NULL, 0,
                                                &rec, &len), 0);
    struct peers *t;
    assert_int_equal(peers_new(&t), 0);
    assert_int_equal(peers_on_announce(t, &idn.id, rec, len, 1000), 0);
    free(rec);
    struct peers_entry e[2];
    assert_int_equal(peers_snapshot(t, e, 2), 1);
    assert_int_equal(e[0].mem_free, 123456789);
    assert_true(e[0].speed_gbps > 12.4f && e[0].speed_gbps < 12.6f);
    assert_true(e[0].accept_stages);
    /* an older node's record (no speed, no accept_stages) reads as neither */
    assert_int_equal(peers_announce_encode(2, 30, NULL, 0, &a, 1, 5, NULL, 0, &rec, &len), 0);
    assert_int_equal(peers_on_announce(t, &idn.id, rec, len, 2000), 0);
    free(rec);
    assert_int_equal(peers_snapshot(t, e, 2), 1);
    assert_false(e[0].accept_stages);
    assert_true(e[0].speed_gbps == 0);
    peers_free(t);
}

static void test_autosplit_sysmem_override(void **state)
{
    (void)state;
    setenv("MESHLLM_MEM_FREE_BYTES", "3M", 1);
    assert_int_equal(sysmem_free_bytes(), 3u << 20);
    setenv("MESHLLM_MEM_FREE_BYTES", "4096", 1);
    assert_int_equal(sysmem_free_bytes(), 4096);
    unsetenv("MESHLLM_MEM_FREE_BYTES");
    assert_true(sysmem_free_bytes() > 0);
    assert_true(sysmem_speed_gbps() > 0);
}

static void fill_req(struct stageload_req *q)
{
    memset(q, 0, sizeof *q);
    memset(q->model, 'a', 64);
    snprintf(q->name, sizeof q->name, "stories260K");
    snprintf(q->path, sizeof q->path, "/models/stories260K.gguf");
    q->file_bytes = 1185376;
    q->layer_begin = 2;
    q->layer_end = 4;
    q->n_layer = 5;
    q->range_bytes = 4096;
}

static void test_stageload_wire_roundtrip(void **state)
{
    (void)state;
    struct stageload_req q, d;
    fill_req(&q);
    uint8_t *buf;
    size_t len;
    char why[256];
    assert_int_equal(stageload_req_encode(&q, &buf, &len), 0);
    assert_int_equal(stageload_req_decode(buf, len, &d, why, sizeof why), STAGELOAD_OK);
    free(buf);
    assert_string_equal(d.model, q.model);
    assert_string_equal(d.name, "stories260K");
    assert_string_equal(d.path, q.path);
    assert_int_equal(d.file_bytes, q.file_bytes);
    assert_int_equal(d.layer_begin, 2);
    assert_int_equal(d.layer_end, 4);
    assert_int_equal(d.n_layer, 5);
    assert_int_equal(d.range_bytes, 4096);
    struct stageload_reply r = {.status = STAGELOAD_NO_FILE}, rd;
    snprintf(r.message, sizeof r.message, "no file\x01here");
    assert_int_equal(stageload_reply_encode(&r, &buf, &len), 0);
    assert_int_equal(stageload_reply_decode(buf, len, &rd), 0);
    free(buf);
    assert_int_equal(rd.status, STAGELOAD_NO_FILE);
    assert_string_equal(rd.message, "no file?here"); /* a peer's control bytes never reach a log */
    assert_string_equal(stageload_status_name(STAGELOAD_NO_MEMORY), "no_memory");
}

static void test_stageload_wire_refuses_bad_requests(void **state)
{
    (void)state;
    struct stageload_req q;
    uint8_t *buf;
    size_t len;
    char why[256];
    /* the encoder refuses what the decoder would */
    fill_req(&q);
    q.layer_end = 6;
    assert_int_equal(stageload_req_encode(&q, &buf, &len), MESH_EINVAL);
    fill_req(&q);
    snprintf(q.path, sizeof q.path, "/models/../etc/passwd");
    assert_int_equal(stageload_req_encode(&q, &buf, &len), MESH_EINVAL);
    fill_req(&q);
    snprintf(q.name, sizeof q.name, "a b");
    assert_int_equal(stageload_req_encode(&q, &buf, &len), MESH_EINVAL);
    fill_req(&q);
    q.model[3] = 'G';
    assert_int_equal(stageload_req_encode(&q, &buf, &len), MESH_EINVAL);
    /* garbage, a reply where a request belongs, and a truncated request */
    struct stageload_req d;
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0x01};
    assert_int_equal(stageload_req_decode(junk, sizeof junk, &d, why, sizeof why),
                     STAGELOAD_MALFORMED);
    assert_true(why[0]);
    fill_req(&q);
    assert_int_equal(stageload_req_encode(&q, &buf, &len), 0);
    for (size_t cut = 0; cut < len; cut++) {
        int rc = stageload_req_decode(buf, cut, &d, why, sizeof why);
        assert_true(rc == STAGELOAD_MALFORMED || rc == STAGELOAD_OK);
        if (rc == STAGELOAD_OK) assert_true(d.layer_begin < d.layer_end);
    }
    free(buf);
    struct stageload_reply rd;
    const uint8_t bad_status[] = {0x08, 0x63}; /* status 99 */
    assert_int_equal(stageload_reply_decode(bad_status, sizeof bad_status, &rd), MESH_EPROTO);
    assert_int_equal(stageload_reply_decode(junk, sizeof junk, &rd), MESH_EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_autosplit_sizes_of_a_real_model),
        cmocka_unit_test(test_autosplit_assign_proportional),
        cmocka_unit_test(test_autosplit_assign_capped_by_memory),
        cmocka_unit_test(test_autosplit_announce_fields),
        cmocka_unit_test(test_autosplit_sysmem_override),
        cmocka_unit_test(test_stageload_wire_roundtrip),
        cmocka_unit_test(test_stageload_wire_refuses_bad_requests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
