/* notify.c: readiness and status messages to systemd (NOTIFY_SOCKET) */
#include "autoconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "log.h"
#include "notify.h"

#define NOTIFY_MSG_MAX 512

bool notify_enabled(void)
{
	const char *sock = getenv("NOTIFY_SOCKET");
	return sock != NULL && sock[0] != '\0';
}

#ifdef HAVE_LIBSYSTEMD
static int send_message(const char *msg)
{
	int rc = sd_notify(0, msg);
	return rc < 0 ? -rc : 0;
}
#else
/* The datagram protocol of sd_notify(3), for builds without libsystemd. */
static int send_message(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	size_t len = strlen(path);

	if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sun.sun_path))
		return EINVAL;
	memcpy(sun.sun_path, path, len);
	if (path[0] == '@')
		sun.sun_path[0] = '\0'; /* abstract namespace */
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	ssize_t n = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sun,
			   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
	int err = n < 0 ? errno : 0;
	close(fd);
	return err;
}
#endif

void notify_send(const char *fmt, ...)
{
	char msg[NOTIFY_MSG_MAX];
	va_list ap;

	if (!notify_enabled())
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	int err = send_message(msg);
	if (err != 0)
		log_warn("cannot notify the service manager: %s", strerror(err));
}

void notify_reloading(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	notify_send("RELOADING=1\nMONOTONIC_USEC=%llu",
		    (unsigned long long)ts.tv_sec * 1000000ULL +
			    (unsigned long long)ts.tv_nsec / 1000ULL);
}
