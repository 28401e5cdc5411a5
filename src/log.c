/* log.c: leveled, rate-limited logging to stderr that never blocks the event loop */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define WARN_WINDOW_SEC 10       /* length of one rate-limit window */
#define WARN_BURST 20            /* warnings written per window before suppressing */
#define LOG_BUFFER (256 * 1024)  /* lines waiting for a slow reader of stderr */
#define LOG_LINE_MAX 1100        /* one formatted line with its prefix */
#define LOG_EXIT_FLUSH_MS 1000   /* at exit, how long the last lines may wait */

/* How lines reach stderr once the loop runs. */
enum log_sink {
	SINK_DIRECT,  /* write(2) to fd 2: a regular file or /dev/null, never blocks */
	SINK_SOCKET,  /* send(MSG_DONTWAIT) on fd 2: journald's stream socket */
	SINK_REOPENED /* a non-blocking descriptor of our own on the same pipe or
			 terminal (opened through /proc/self/fd/2, so the file
			 status flags of the description other processes share
			 stay as they are) */
};

/* The logger is process-wide, like stderr itself: the one piece of global
 * state outside the daemon's context, so that every module can log. */
static struct {
	enum log_level level;
	int journal;        /* -1 unknown, 0 plain text, 1 stderr goes to journald */
	time_t window;      /* start of the current warning window */
	unsigned warned;    /* warnings written in this window */
	unsigned suppressed; /* warnings dropped in this window */
	/* asynchronous output, between log_attach and log_detach */
	struct ev_loop *loop;
	ev_io io;           /* writable: flush the buffer */
	enum log_sink sink;
	int fd;             /* where lines go */
	char *buf;          /* LOG_BUFFER bytes; unwritten lines are buf[off..len) */
	size_t off, len;
	uint64_t dropped;         /* lines dropped since start */
	uint64_t dropped_unsaid;  /* of those, not yet reported in the log */
} logger = { LOG_LVL_INFO, -1, 0, 0, 0, NULL, { 0 }, SINK_DIRECT, 2, NULL, 0, 0, 0, 0 };

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

uint64_t log_lines_dropped(void)
{
	return logger.dropped;
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

/* Formats one line with its prefix into out; returns its length. */
static size_t format_line(char *out, size_t n, enum log_level level, const char *msg)
{
	int len;
	if (logger.journal < 0)
		logger.journal = stderr_is_journal();
	if (logger.journal) {
		len = snprintf(out, n, "<%d>%s\n", level_priority[level], msg);
	} else {
		struct timespec ts;
		struct tm tm;
		char stamp[32];
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		len = snprintf(out, n, "%s.%03ldZ %s: %s\n", stamp, ts.tv_nsec / 1000000,
			       level_names[level], msg);
	}
	if (len < 0)
		return 0;
	if ((size_t)len >= n) {
		out[n - 2] = '\n'; /* cut, but still one line */
		return n - 1;
	}
	return (size_t)len;
}

/* Writes without waiting; returns the bytes written, or -1 with errno. */
static ssize_t write_some(const char *p, size_t n)
{
	ssize_t w;
	do {
		if (logger.sink == SINK_SOCKET)
			w = send(logger.fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		else
			w = write(logger.fd, p, n);
	} while (w < 0 && errno == EINTR);
	return w;
}

static void queue(const char *line, size_t n);

/* Writes out what the buffer holds, as far as the reader takes it. */
static void flush_buffer(void)
{
	while (logger.off < logger.len) {
		ssize_t w = write_some(logger.buf + logger.off, logger.len - logger.off);
		if (w < 0) {
			if (errno == EAGAIN)
				break;
			logger.off = logger.len; /* stderr is gone: nothing to wait for */
			break;
		}
		logger.off += (size_t)w;
	}
	if (logger.off == logger.len) {
		logger.off = logger.len = 0;
		if (logger.dropped_unsaid > 0) {
			char msg[128], line[LOG_LINE_MAX];
			snprintf(msg, sizeof(msg),
				 "%llu log lines dropped: stderr was not being read",
				 (unsigned long long)logger.dropped_unsaid);
			logger.dropped_unsaid = 0;
			queue(line, format_line(line, sizeof(line), LOG_LVL_WARNING, msg));
		}
	}
	if (logger.loop == NULL)
		return;
	if (logger.off < logger.len)
		ev_io_start(logger.loop, &logger.io);
	else
		ev_io_stop(logger.loop, &logger.io);
}

/* Adds a line to the buffer, or counts it dropped when it does not fit. */
static void queue(const char *line, size_t n)
{
	if (logger.off > 0 && logger.len + n > LOG_BUFFER) {
		memmove(logger.buf, logger.buf + logger.off, logger.len - logger.off);
		logger.len -= logger.off;
		logger.off = 0;
	}
	if (logger.len + n > LOG_BUFFER) {
		logger.dropped++;
		logger.dropped_unsaid++;
		return;
	}
	memcpy(logger.buf + logger.len, line, n);
	logger.len += n;
	if (logger.len - logger.off == n)
		flush_buffer(); /* it was empty: try at once */
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	flush_buffer();
}

void log_attach(struct ev_loop *loop)
{
	struct stat st;
	char *buf = malloc(LOG_BUFFER);

	if (buf == NULL || fstat(STDERR_FILENO, &st) < 0) {
		free(buf);
		return; /* lines keep going straight to stderr */
	}
	logger.fd = STDERR_FILENO;
	logger.sink = SINK_DIRECT;
	if (S_ISSOCK(st.st_mode)) {
		logger.sink = SINK_SOCKET;
	} else if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
		int fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
		if (fd >= 0) {
			logger.fd = fd;
			logger.sink = SINK_REOPENED;
		}
	}
	logger.buf = buf;
	logger.off = logger.len = 0;
	logger.loop = loop;
	ev_io_init(&logger.io, on_writable, logger.fd, EV_WRITE);
}

static long long monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void log_detach(void)
{
	if (logger.buf == NULL)
		return;
	if (logger.loop != NULL)
		ev_io_stop(logger.loop, &logger.io);
	logger.loop = NULL;
	/* the last lines ("stopped") may wait a moment for the reader, no
	 * longer: a reader taking a little at a time does not stretch it */
	struct pollfd p = { .fd = logger.fd, .events = POLLOUT };
	long long deadline = monotonic_ms() + LOG_EXIT_FLUSH_MS;
	while (logger.off < logger.len) {
		long long left = deadline - monotonic_ms();
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			break;
		flush_buffer();
	}
	if (logger.sink == SINK_REOPENED)
		close(logger.fd);
	free(logger.buf);
	logger.buf = NULL;
	logger.fd = STDERR_FILENO;
	logger.sink = SINK_DIRECT;
}

/* Writes n bytes to stderr, waiting if need be (start-up and exit only). */
static void write_blocking(const char *line, size_t n)
{
	for (size_t off = 0; off < n;) {
		ssize_t w = write(STDERR_FILENO, line + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
}

void log_plain(enum log_level level, const char *fmt, ...)
{
	char msg[1024], line[LOG_LINE_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (logger.journal < 0)
		logger.journal = stderr_is_journal();
	if (logger.journal)
		n = snprintf(line, sizeof(line), "<%d>%s\n", level_priority[level], msg);
	else
		n = snprintf(line, sizeof(line), "%s\n", msg);
	if (n > 0)
		write_blocking(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void write_line(enum log_level level, const char *msg)
{
	char line[LOG_LINE_MAX];
	size_t n = format_line(line, sizeof(line), level, msg);

	if (logger.buf != NULL) {
		queue(line, n);
		return;
	}
	write_blocking(line, n); /* start-up, -t and exit */
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
