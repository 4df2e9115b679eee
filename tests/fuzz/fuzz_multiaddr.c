/* fuzz_multiaddr.c - multiaddr binary and text parsers: no crash, and whatever parses
 * re-encodes to itself (bytes -> text -> bytes). */
#include "net/multiaddr.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct multiaddr ma, back;
    char text[MULTIADDR_TEXT_CAP];
    if (multiaddr_from_bytes(data, size, &ma) == 0) {
        if (multiaddr_to_text(&ma, text, sizeof text) != 0) abort();
        if (multiaddr_from_text(text, &back) != 0) abort();
        if (!multiaddr_equal(&ma, &back)) abort();
    }
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = 0;
    if (multiaddr_from_text(s, &ma) == 0 && multiaddr_to_text(&ma, text, sizeof text) != 0)
        abort();
    free(s);
    return 0;
}
