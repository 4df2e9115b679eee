/* log.h - leveled logging to stderr.
 *
 * Level from MESHLLM_LOG (error|warn|info|debug, default warn) or log_set_level().
 * stdout is never touched: it belongs to the program's real output.
 * Thread-safe: one fprintf per line.
 */
#ifndef MESH_CORE_LOG_H
#define MESH_CORE_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
