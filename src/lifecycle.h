/* lifecycle.h: start-up, privilege drop, reload, drain and exit of the daemon */
#ifndef DUALPROXY_LIFECYCLE_H
#define DUALPROXY_LIFECYCLE_H

#include "config.h"
#include "dualproxy.h"

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
