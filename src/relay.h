/* relay.h: one client connection and its backend connection, pumped both ways */
#ifndef DUALPROXY_RELAY_H
#define DUALPROXY_RELAY_H

#include <stdbool.h>

#include "addr.h"
#include "config.h"
#include "stats.h"

struct dualproxy;

/* Descriptors a relay holds: the client's and the backend's sockets (its
 * pipes, when it splices, are counted by the pipe pool). */
#define RELAY_FDS 2

/* Sets up the relays' shared state (the ready queue and its watcher, the
 * read buffer). Returns 0, or -1 when out of memory. */
int relay_init(struct dualproxy *dp);

/* Relays an admitted client of svc: connects to svc's backend of the
 * client's family (a PROXY header first if configured) and pumps data both
 * ways until both sides are done. Takes ownership of client_fd, and a
 * reference to svc and to stats for as long as the relay lives. When it
 * ends it logs one line and tells admission (admission_release with
 * source_counted). */
void relay_start(struct dualproxy *dp, struct service *svc, struct service_stats *stats,
		 int client_fd, const struct addr *client, bool source_counted);

/* Sockets of live relays served after the last poll (accepting, which
 * runs after them, takes as many turns). */
unsigned relay_served(const struct dualproxy *dp);

/* Ends every live relay at once (end=shutdown). */
void relay_close_all(struct dualproxy *dp);

/* Frees what relay_init made; after relay_close_all. */
void relay_cleanup(struct dualproxy *dp);

#endif
