/* fuzz_yamux.c - yamux: hostile frames into a server and a client session, reading every
 * stream that reports data and answering opens, so window bookkeeping runs too. */
#include "net/yamux.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void run(bool is_client, const uint8_t *data, size_t size)
{
    struct yamux_config cfg = {.max_streams = 4, .max_output = 1 << 16};
    struct yamux *y;
    struct yamux_event ev;
    uint8_t buf[4096];
    size_t n, w;
    if (yamux_new(is_client, &cfg, &y)) return;
    /* feed in two pieces so frames straddle calls */
    size_t half = size / 2;
    if (yamux_input(y, data, half) == 0) yamux_input(y, data + half, size - half);
    while (yamux_next_event(y, &ev)) {
        if (ev.type == YAMUX_EV_DATA || ev.type == YAMUX_EV_FIN)
            while (yamux_stream_read(y, ev.stream_id, buf, sizeof buf, &n) == 0 && n) {}
        if (ev.type == YAMUX_EV_OPEN) yamux_stream_write(y, ev.stream_id, buf, 100, &w);
    }
    yamux_output(y, &(const uint8_t *){0}, &n);
    yamux_free(y);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run(false, data, size);
    run(true, data, size);
    return 0;
}
