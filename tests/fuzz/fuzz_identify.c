/* fuzz_identify.c - identify message decoder on hostile bytes; whatever decodes must
 * re-encode and decode to the same content. */
#include "net/identify.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct identify_info a, b;
    static uint8_t buf[IDENTIFY_MAX_MSG * 2];
    struct peer_id peer = {0};
    size_t n;
    /* An ID nobody's key matches: messages with a key fail, the rest decode. */
    peer.len = 34;
    peer.bytes[0] = 0x12;
    peer.bytes[1] = 32;
    if (identify_decode(data, size, &peer, &a) != 0) return 0;
    if (identify_encode(&a, NULL, 0, buf, sizeof buf, &n) != 0) abort();
    if (identify_decode(buf, n, &peer, &b) != 0) abort();
    if (memcmp(&a, &b, sizeof a) != 0) abort();
    return 0;
}
