/* notify.c: readiness and status messages to the service manager (NOTIFY_SOCKET), never blocking */
#include "autoconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "notify.h"

#define NOTIFY_MSG_MAX 512

void notify_open(struct notify *n, uint64_t *dropped)
{
	const char *path = getenv("NOTIFY_SOCKET");
	size_t len = path != NULL ? strlen(path) : 0;

	memset(n, 0, sizeof(*n));
	n->fd = -1;
	n->dropped = dropped;
	if (len == 0)
		return;
	if ((path[0] != '/' && path[0] != '@') || len >= sizeof(n->addr.sun_path)) {
		log_warn("NOTIFY_SOCKET '%s': not a socket path: not notifying", path);
		return;
	}
	n->addr.sun_family = AF_UNIX;
	memcpy(n->addr.sun_path, path, len);
	if (path[0] == '@')
		n->addr.sun_path[0] = '\0'; /* abstract namespace */
	n->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (n->fd < 0)
		log_warn("cannot notify the service manager: %s", strerror(errno));
}

bool notify_enabled(const struct notify *n)
{
	return n->fd >= 0;
}

/* Sends one datagram without waiting; returns 0 or an errno. */
static int send_message(struct notify *n, const char *msg)
{
	ssize_t r;
	do
		r = sendto(n->fd, msg, strlen(msg), MSG_DONTWAIT | MSG_NOSIGNAL,
			   (const struct sockaddr *)&n->addr, n->addr_len);
	while (r < 0 && errno == EINTR);
	return r < 0 ? errno : 0;
}

void notify_send(struct notify *n, const char *state, const char *status_fmt, ...)
{
	char msg[NOTIFY_MSG_MAX];
	size_t len = 0;
	va_list ap;

	if (n->fd < 0)
		return;
	/* a newer state replaces one that was dropped */
	const char *s = state != NULL ? state : n->unsent;
	if (s[0] != '\0')
		len = (size_t)snprintf(msg, sizeof(msg), "%s", s);
	if (status_fmt != NULL && len + 1 < sizeof(msg)) {
		len += (size_t)snprintf(msg + len, sizeof(msg) - len, "%sSTATUS=",
					len > 0 ? "\n" : "");
		if (len < sizeof(msg)) {
			va_start(ap, status_fmt);
			vsnprintf(msg + len, sizeof(msg) - len, status_fmt, ap);
			va_end(ap);
		}
	}
	if (len == 0)
		return;
	int err = send_message(n, msg);
	if (err == 0) {
		n->unsent[0] = '\0';
		return;
	}
	if (s != n->unsent)
		snprintf(n->unsent, sizeof(n->unsent), "%s", s);
	if (n->dropped != NULL)
		(*n->dropped)++;
	if (err != EAGAIN)
		log_warn("cannot notify the service manager: %s", strerror(err));
}

void notify_reloading(struct notify *n)
{
	char state[NOTIFY_STATE_MAX];
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000ULL +
			 (unsigned long long)ts.tv_nsec / 1000ULL);
	notify_send(n, state, NULL);
}

void notify_close(struct notify *n)
{
	if (n->fd >= 0)
		close(n->fd);
	n->fd = -1;
}
