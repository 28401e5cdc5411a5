/* log.c: leveled, rate-limited logging to stderr (journald or plain) */
#include "autoconfig.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define WARN_WINDOW_SEC 10 /* length of one rate-limit window */
#define WARN_BURST 20      /* warnings written per window before suppressing */

/* The logger is process-wide, like stderr itself. */
static struct {
	enum log_level level;
	int journal;        /* -1 unknown, 0 plain text, 1 stderr goes to journald */
	time_t window;      /* start of the current warning window */
	unsigned warned;    /* warnings written in this window */
	unsigned suppressed; /* warnings dropped in this window */
} logger = { LOG_LVL_INFO, -1, 0, 0, 0 };

static const char *const level_names[] = {
	[LOG_LVL_ERROR] = "error",
	[LOG_LVL_WARNING] = "warning",
	[LOG_LVL_INFO] = "info",
	[LOG_LVL_DEBUG] = "debug",
};

/* sd-daemon(3) priority prefixes understood by journald */
static const int level_priority[] = {
	[LOG_LVL_ERROR] = 3,
	[LOG_LVL_WARNING] = 4,
	[LOG_LVL_INFO] = 6,
	[LOG_LVL_DEBUG] = 7,
};

int log_level_parse(const char *s, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

void log_set_level(enum log_level level)
{
	logger.level = level;
}

bool log_enabled(enum log_level level)
{
	return level <= logger.level;
}

/* True when stderr is the stream systemd named in JOURNAL_STREAM ("dev:ino"). */
static int stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 ||
	    fstat(STDERR_FILENO, &st) < 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static void write_line(enum log_level level, const char *msg)
{
	if (logger.journal < 0)
		logger.journal = stderr_is_journal();
	if (logger.journal) {
		fprintf(stderr, "<%d>%s\n", level_priority[level], msg);
		return;
	}
	struct timespec ts;
	struct tm tm;
	char stamp[32];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ %s: %s\n", stamp, ts.tv_nsec / 1000000,
		level_names[level], msg);
}

/* Returns true when a warning may be written now. */
static bool warning_allowed(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	if (now.tv_sec - logger.window >= WARN_WINDOW_SEC) {
		if (logger.suppressed > 0) {
			char note[96];
			snprintf(note, sizeof(note),
				 "%u similar warnings suppressed in %d s",
				 logger.suppressed, WARN_WINDOW_SEC);
			write_line(LOG_LVL_WARNING, note);
		}
		logger.window = now.tv_sec;
		logger.warned = 0;
		logger.suppressed = 0;
	}
	if (logger.warned >= WARN_BURST) {
		logger.suppressed++;
		return false;
	}
	logger.warned++;
	return true;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (!log_enabled(level))
		return;
	if (level == LOG_LVL_WARNING && !warning_allowed())
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	write_line(level, msg);
}
