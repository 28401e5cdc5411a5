/* log.h: leveled, rate-limited logging to stderr that never blocks the event loop */
#ifndef DUALPROXY_LOG_H
#define DUALPROXY_LOG_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

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

/* From now on lines go through a bounded buffer that is written when
 * stderr is writable: a reader that stops reading (a stalled journald, a
 * full container log pipe) costs dropped lines, counted, and one line
 * saying how many once it reads again, never a stalled loop. Call before
 * dropping privileges (a pipe is reopened through /proc/self/fd/2). */
void log_attach(struct ev_loop *loop);

/* Back to plain writes; what is buffered gets a moment to be written. */
void log_detach(void);

/* Lines dropped because stderr was not being read. */
uint64_t log_lines_dropped(void);

/* Writes one line to stderr. Warnings beyond a burst per window are counted
 * and summarised in one line instead of being written. */
void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* One line for a person at a terminal (the command line's -t, start-up
 * errors): the message alone, without time or level, but with the
 * journald priority prefix when stderr goes to journald. Never buffered. */
void log_plain(enum log_level level, const char *fmt, ...)
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
