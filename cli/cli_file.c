/* cli_file.c - reading a whole file (or standard input) for a command: prompt files,
 * grammar and schema files, templates, perplexity texts. */
#include "cli/cli.h"

#include "core/err.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* All of in into *out (malloc'd, NUL-terminated, not counted in *len). 0, MESH_ENOMEM, or
 * MESH_EIO with errno set (a read error such as EISDIR must not pass for an empty file). */
static int read_all(FILE *in, char **out, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    *out = NULL;
    if (!buf) return MESH_ENOMEM;
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, in)) > 0) {
        n += r;
        if (n + 1 == cap) {
            char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return MESH_ENOMEM;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (ferror(in)) {
        free(buf);
        return MESH_EIO;
    }
    buf[n] = 0;
    *len = n;
    *out = buf;
    return 0;
}

char *cli_read_file(const char *cmd, const char *path, size_t *len)
{
    errno = 0;
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        cli_fail("%s: %s: %s", cmd, path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    int rc = read_all(f, &buf, len);
    int read_errno = errno ? errno : EIO;
    if (f != stdin) fclose(f);
    if (rc) cli_fail("%s: %s: %s", cmd, path, rc == MESH_EIO ? strerror(read_errno) : "out of memory");
    return buf;
}
