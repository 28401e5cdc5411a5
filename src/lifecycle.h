/* lifecycle.h: start-up, signals and shutdown of the daemon */
#ifndef DUALPROXY_LIFECYCLE_H
#define DUALPROXY_LIFECYCLE_H

#include "config.h"
#include "dualproxy.h"

/* Takes over cfg's reference, creates the loop, binds every listener and
 * installs the signal watchers. Returns 0, or a sysexits code after logging. */
int lifecycle_start(struct dualproxy *dp, struct config *cfg);

/* Runs the loop until a signal stops it; returns the exit code. */
int lifecycle_run(struct dualproxy *dp);

/* Releases everything lifecycle_start acquired. */
void lifecycle_cleanup(struct dualproxy *dp);

#endif
