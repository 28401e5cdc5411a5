/* notify.h: readiness and status messages to systemd (NOTIFY_SOCKET) */
#ifndef DUALPROXY_NOTIFY_H
#define DUALPROXY_NOTIFY_H

#include <stdbool.h>

/* True when the service manager listens (NOTIFY_SOCKET is set). */
bool notify_enabled(void);

/* Sends newline-separated assignments such as "READY=1\nSTATUS=...".
 * Failures are logged once per call and otherwise ignored. */
void notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "RELOADING=1" with the MONOTONIC_USEC that systemd's notify-reload wants. */
void notify_reloading(void);

#endif
