/* fuzz_toolcall.c - model output (from a hostile or broken model) split into content and
 * tool calls in each syntax, and the streaming hold-back over every prefix length (the
 * incremental answer must equal a fresh look at the same prefix). */
#include "engine/toolcall.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *t = (const char *)data;
    for (int s = TOOLCALL_HERMES; s <= TOOLCALL_MISTRAL; s++) {
        struct toolcall_result r;
        if (toolcall_parse((enum toolcall_syntax)s, t, size, &r) == 0) {
            for (int i = 0; i < r.n_calls; i++)
                if (!r.calls[i].name || !r.calls[i].arguments || r.calls[i].arguments[0] != '{')
                    __builtin_trap();
            toolcall_result_free(&r);
        }
        /* fed a byte at a time, incrementally, it says what one look at each prefix says */
        size_t from = 0;
        for (size_t n = 0; n <= size && n < 512; n++) {
            size_t whole = toolcall_stream_safe((enum toolcall_syntax)s, t, n, 0);
            size_t inc = toolcall_stream_safe((enum toolcall_syntax)s, t, n, from);
            if (whole > n || inc != whole) __builtin_trap();
            from = inc;
        }
    }
    return 0;
}
