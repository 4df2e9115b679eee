/* fuzz_mdns.c - fuzz target: the mDNS/DNS message parser and the discovery core (net/mdns).
 *
 * The input is one UDP payload: parsed strictly, TXT strings iterated, then handed to a core
 * with an address set (which may answer or report peers); any response it queues must parse.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/identity.h"
#include "net/mdns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct identity g_id;
static struct mdns_msg g_msg;
static int g_ready;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_ready) {
        uint8_t seed[32];
        memset(seed, 7, sizeof seed);
        identity_from_seed(seed, &g_id);
        g_ready = 1;
    }
    if (mdns_msg_parse(data, size, &g_msg) == 0) {
        for (size_t i = 0; i < g_msg.n_rrs; i++) {
            size_t pos = 0, l;
            const uint8_t *s;
            while (mdns_txt_next(&g_msg.rr[i], &pos, &s, &l)) (void)s[l ? l - 1 : 0];
        }
    }
    struct mdns_config c;
    memset(&c, 0, sizeof c);
    c.self = g_id.id;
    struct mdns *m;
    if (mdns_new(&c, &m) != 0) abort();
    struct multiaddr a;
    if (multiaddr_from_text("/ip4/10.0.0.1/tcp/4001", &a) != 0) abort();
    if (mdns_set_addrs(m, &a, 1) != 0) abort();
    (void)mdns_on_packet(m, 0, data, size);
    uint8_t *p;
    size_t len;
    while (mdns_next_packet(m, &p, &len) == 0) {
        if (mdns_msg_parse(p, len, &g_msg) != 0) abort();
        free(p);
    }
    struct mdns_peer peer;
    while (mdns_next_peer(m, &peer) == 0) (void)peer.n_addrs;
    mdns_free(m);
    return 0;
}
