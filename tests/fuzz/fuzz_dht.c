/* fuzz_dht.c - fuzz target: Kademlia DHT message decoding and handling (net/dht).
 *
 * The input is one message body (no length prefix). It goes through the validator, then to a
 * server core as a request from a peer (with a routing table, a stored /pk record and a
 * provider record to answer from), then to a client core as the response to its pending
 * FIND_NODE and GET_VALUE requests; the core's outgoing requests are drained. The input with
 * a length prefix also goes through dht_frame_split. Nothing may crash or leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/dht.h"
#include "net/identity.h"
#include "net/varint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct identity g_ids[8];
static int g_ready;

static void setup(void)
{
    for (int i = 0; i < 8; i++) {
        uint8_t seed[32];
        memset(seed, i + 1, sizeof seed);
        identity_from_seed(seed, &g_ids[i]);
    }
    g_ready = 1;
}

static struct dht *core(int self, bool server)
{
    struct dht_config c;
    struct dht *d = NULL;
    memset(&c, 0, sizeof c);
    c.self = g_ids[self].id;
    c.is_server = server;
    if (dht_new(&c, &d) < 0) abort();
    for (int i = 0; i < 8; i++) {
        if (i == self) continue;
        struct dht_peer p;
        memset(&p, 0, sizeof p);
        p.id = g_ids[i].id;
        dht_peer_connected(d, 1, &p, true);
    }
    return d;
}

static void drain(struct dht *d)
{
    struct dht_request r;
    while (dht_next_request(d, &r) == 0) free(r.msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_ready) setup();
    (void)dht_msg_check(data, size);

    /* framing */
    uint8_t *framed = malloc(size + VARINT_MAX_LEN);
    if (!framed) return 0;
    size_t v = varint_encode(size, framed);
    memcpy(framed + v, data, size);
    const uint8_t *body;
    size_t body_len, used;
    if (dht_frame_split(framed, v + size, &body, &body_len, &used) == 0 &&
        (body_len != size || used != v + size))
        abort();
    (void)dht_frame_split(data, size, &body, &body_len, &used);
    free(framed);

    /* as a request to a server holding a record and a provider */
    struct dht *s = core(0, true);
    uint8_t pub[IDENTITY_PUBKEY_PROTO_LEN], key[64];
    identity_pubkey_proto(g_ids[3].pk, pub);
    memcpy(key, "/pk/", 4);
    memcpy(key + 4, g_ids[3].id.bytes, g_ids[3].id.len);
    uint64_t qid;
    if (dht_put_value(s, 2, key, 4 + g_ids[3].id.len, pub, sizeof pub, &qid) != 0) abort();
    struct dht_peer me;
    memset(&me, 0, sizeof me);
    me.id = g_ids[0].id;
    if (dht_provide(s, 2, (const uint8_t *)"cid", 3, &me, &qid) != 0) abort();
    drain(s);
    struct dht_peer from;
    memset(&from, 0, sizeof from);
    from.id = g_ids[5].id;
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    if (dht_handle_request(s, 3, &from, data, size, &resp, &resp_len) == 0 && resp) {
        if (dht_frame_split(resp, resp_len, &body, &body_len, &used) != 0) abort();
        if (dht_msg_check(body, body_len) != 0) abort(); /* we only emit valid messages */
    }
    free(resp);
    drain(s);
    dht_periodic(s, 100000000);
    dht_free(s);

    /* as the response to a client's requests */
    struct dht *c = core(1, false);
    if (dht_find_node(c, 5, (const uint8_t *)"target", 6, &qid) != 0) abort();
    uint64_t qid2;
    if (dht_get_value(c, 5, key, 4 + g_ids[3].id.len, 2, &qid2) != 0) abort();
    struct dht_request r;
    while (dht_next_request(c, &r) == 0) {
        (void)dht_on_response(c, 6, r.req_id, data, size);
        free(r.msg);
    }
    drain(c);
    dht_periodic(c, 1000000);
    struct dht_peer out[DHT_K];
    (void)dht_query_closest(c, qid, out, DHT_K);
    const uint8_t *val;
    size_t val_len, n_vals, best;
    (void)dht_query_value(c, qid2, 0, &val, &val_len, &n_vals, &best);
    dht_free(c);
    return 0;
}
