/* log.c - leveled logging to stderr (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_int g_level = -1;

static int level_from_env(void)
{
    const char *s = getenv("MESHLLM_LOG");
    if (!s) return LOG_WARN;
    if (!strcmp(s, "error")) return LOG_ERROR;
    if (!strcmp(s, "info")) return LOG_INFO;
    if (!strcmp(s, "debug")) return LOG_DEBUG;
    return LOG_WARN;
}

void log_set_level(enum log_level level) { atomic_store(&g_level, (int)level); }

enum log_level log_get_level(void)
{
    int l = atomic_load(&g_level);
    if (l < 0) {
        l = level_from_env();
        atomic_store(&g_level, l);
    }
    return (enum log_level)l;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    if ((int)level > (int)log_get_level()) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "meshllm: %s: %s\n", names[level], line);
}
