/* fuzz_multistream.c - multistream-select: arbitrary peer bytes into a dialer and a listener
 * (first byte picks the split into two reads). Must never crash or over-read. */
#include "net/mss.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool supports_some(void *ctx, const char *p)
{
    (void)ctx;
    return strcmp(p, "/noise") == 0 || strcmp(p, "/yamux/1.0.0") == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mss m;
    const char *protos[] = {"/tls/1.0.0", "/noise"};
    size_t used, split;
    if (size == 0) return 0;
    split = data[0] % size;
    data++;
    size--;
    if (split > size) split = size;
    for (int role = 0; role < 2; role++) {
        if (role == 0) mss_dialer_init(&m, protos, 2);
        else mss_listener_init(&m, supports_some, NULL);
        if (mss_input(&m, data, split, &used) == 0 && used == split)
            mss_input(&m, data + split, size - split, &used);
    }
    return 0;
}
