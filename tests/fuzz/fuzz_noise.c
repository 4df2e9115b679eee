/* fuzz_noise.c - libp2p Noise channel: hostile bytes into a responder and an initiator at
 * the start of the handshake, and into the handshake payload decoder. No crash, no leak. */
#include "net/identity.h"
#include "net/noise.h"
#include "noise.pb-c.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void feed(struct noise_conn *c, const uint8_t *data, size_t size)
{
    size_t off = 0, used, pl;
    const uint8_t *plain;
    while (off < size) {
        if (noise_conn_input(c, data + off, size - off, &used, &plain, &pl) != 0) break;
        if (used == 0) break;
        off += used;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct identity id;
    static int ready;
    struct noise_conn *c;
    if (!ready) {
        uint8_t seed[32] = {7};
        identity_from_seed(seed, &id);
        ready = 1;
    }
    if (noise_conn_new(false, &id, NULL, &c) == 0) {
        feed(c, data, size);
        noise_conn_free(c);
    }
    if (noise_conn_new(true, &id, NULL, &c) == 0) {
        feed(c, data, size);
        noise_conn_free(c);
    }
    P2pnoise__NoiseHandshakePayload *p = p2pnoise__noise_handshake_payload__unpack(NULL, size, data);
    if (p) {
        uint8_t pk[32];
        if (p->has_identity_key) identity_pubkey_decode(p->identity_key.data, p->identity_key.len, pk);
        p2pnoise__noise_handshake_payload__free_unpacked(p, NULL);
    }
    return 0;
}
