/* cli_dir.c - the node data directory rule shared by every command (see cli.h). */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>

const char *cli_data_dir(const char *opt, char *buf, size_t cap)
{
    const char *env = getenv("MESHLLM_HOME"), *home = getenv("HOME");
    if (opt && *opt) return opt;
    if (env && *env) return env;
    if (!home || !*home) return NULL;
    if ((size_t)snprintf(buf, cap, "%s/.meshllm", home) >= cap) return NULL;
    return buf;
}
