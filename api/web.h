/* web.h - the web console's files, embedded into the binary at build time.
 * The table is generated from the files in web/ by tools/embed.c into $(BUILD)/gen/web_assets.c.
 * Thread rule: immutable data.
 */
#ifndef MESH_API_WEB_H
#define MESH_API_WEB_H

#include <stddef.h>

struct web_asset {
    const char *path;           /* "index.html" (relative to web/) */
    const char *mime;           /* "text/html; charset=utf-8" */
    const unsigned char *bytes; /* [len] */
    size_t len;
};

extern const struct web_asset web_assets[];
extern const size_t web_assets_count;

#endif
