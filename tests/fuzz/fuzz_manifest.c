/* fuzz_manifest.c - the model store's manifest parser (node/modelstore.c) on any bytes:
 * no crash, and whatever parses prints back to JSON that parses to the same fields. */
#include "node/modelstore.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct modelstore_manifest m, again;
    if (modelstore_manifest_parse((const char *)data, size, &m)) return 0;
    char *j = modelstore_manifest_json(&m);
    if (!j) return 0;
    if (modelstore_manifest_parse(j, strlen(j), &again) || memcmp(&m, &again, sizeof m)) abort();
    free(j);
    char name[MODELSTORE_NAME_CAP], tag[MODELSTORE_TAG_CAP];
    modelstore_name_parse(m.name, name, tag);
    return 0;
}
