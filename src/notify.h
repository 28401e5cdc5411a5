/* notify.h: readiness and status messages to the service manager (NOTIFY_SOCKET), never blocking */
#ifndef DUALPROXY_NOTIFY_H
#define DUALPROXY_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#define NOTIFY_STATE_MAX 64

/* The sd_notify(3) datagram protocol on a socket of our own, sent with
 * MSG_DONTWAIT: a full queue (a busy service manager) drops the message
 * instead of stopping the daemon. A dropped state (READY=1, RELOADING=1,
 * STOPPING=1) is sent again with the next message, so the service manager
 * learns the truth as soon as it reads again. */
struct notify {
	int fd;                       /* -1: no service manager */
	struct sockaddr_un addr;
	socklen_t addr_len;
	char unsent[NOTIFY_STATE_MAX]; /* the last state that was dropped, or "" */
	uint64_t *dropped;            /* counts dropped messages */
};

/* Reads NOTIFY_SOCKET; without it (or with a bad one, logged) every call
 * below does nothing. dropped may be NULL. */
void notify_open(struct notify *n, uint64_t *dropped);

bool notify_enabled(const struct notify *n);

/* Sends a state ("READY=1", "STOPPING=1", or NULL for none) with an
 * optional STATUS= text (printf format, or NULL). */
void notify_send(struct notify *n, const char *state, const char *status_fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* "RELOADING=1" with the MONOTONIC_USEC that systemd wants with it. */
void notify_reloading(struct notify *n);

void notify_close(struct notify *n);

#endif
