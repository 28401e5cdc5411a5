/* log.h: leveled, rate-limited logging to stderr */
#ifndef DUALPROXY_LOG_H
#define DUALPROXY_LOG_H

#include <stdbool.h>

enum log_level {
	LOG_LVL_ERROR,   /* the daemon cannot go on, or start-up fails */
	LOG_LVL_WARNING, /* something failed and was handled; rate-limited */
	LOG_LVL_INFO,    /* lifecycle: listening, ready, reload, stop */
	LOG_LVL_DEBUG,   /* one line per connection */
};

/* Parse "error", "warning", "info" or "debug"; returns 0, or -1 if unknown. */
int log_level_parse(const char *s, enum log_level *out);
void log_set_level(enum log_level level);
bool log_enabled(enum log_level level);

/* Writes one line to stderr. Warnings beyond a burst per window are counted
 * and summarised in one line instead of being written. */
void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                                         \
	do {                                                                   \
		if (log_enabled(LOG_LVL_DEBUG))                                \
			log_msg(LOG_LVL_DEBUG, __VA_ARGS__);                   \
	} while (0)

#endif
