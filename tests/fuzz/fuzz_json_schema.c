/* fuzz_json_schema.c - JSON Schema -> GBNF (engine/json_schema.h) on any bytes: no crash, and
 * whatever compiles is GBNF that parses and starts a matcher (the compiler never emits a
 * grammar the parser refuses). */
#include "core/err.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *gbnf = NULL;
    char err[256];
    if (json_schema_to_gbnf((const char *)data, size, &gbnf, err, sizeof err)) return 0;
    struct grammar *g = NULL;
    size_t len = 0;
    while (gbnf[len]) len++;
    int rc = grammar_parse(gbnf, len, &g, err, sizeof err);
    /* left recursion is the only refusal a schema can cause ({"$ref":"#"} at the root) */
    if (rc && rc != MESH_EINVAL) abort();
    struct grammar_state *s = NULL;
    if (g && grammar_state_new(g, NULL, false, &s) == 0) grammar_state_accept_bytes(s, "{\"a\":1}", 7);
    grammar_state_free(s);
    grammar_free(g);
    free(gbnf);
    return 0;
}
