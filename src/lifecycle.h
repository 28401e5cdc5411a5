/* lifecycle.h: start-up, privilege drop, reload, drain and exit of the daemon */
#ifndef DUALPROXY_LIFECYCLE_H
#define DUALPROXY_LIFECYCLE_H

#include <ev.h>
#include <stdbool.h>

#include "config.h"
#include "notify.h"
#include "watch.h"

struct dualproxy;

/* The watchers and state of the daemon's life, inside struct dualproxy. */
struct lifecycle {
	ev_signal term, intr, hup;
	ev_timer drain;            /* SIGTERM: the deadline for live connections */
	ev_timer status;           /* STATUS= updates while NOTIFY_SOCKET is set */
	struct config_watch watch; /* watch_config */
	struct notify notify;      /* the service manager */
	bool stopping;             /* SIGTERM seen: no new connections */
	bool started_as_root;
	unsigned long last_status; /* connections in the last STATUS= */
	double start_time;         /* seconds since the epoch */
};

/* Takes over cfg's reference (loaded from path), creates the loop, binds
 * every listener, drops privileges and installs the signal watchers.
 * Returns 0, or a sysexits code after logging. */
int lifecycle_start(struct dualproxy *dp, const char *path, struct config *cfg);

/* Runs the loop until SIGTERM/SIGINT and the drain are over; returns the
 * exit code. */
int lifecycle_run(struct dualproxy *dp);

/* Releases everything lifecycle_start acquired. */
void lifecycle_cleanup(struct dualproxy *dp);

#endif
