/* relay.h: one client connection and its backend connection, pumped both ways */
#ifndef DUALPROXY_RELAY_H
#define DUALPROXY_RELAY_H

#include "addr.h"
#include "config.h"

struct dualproxy;

/* Starts relaying an accepted client: connects to the service's backend of
 * the client's family and pumps data both ways until both sides are done.
 * Takes ownership of client_fd; the relay frees itself when it ends. Holds a
 * reference to dp->config (which must contain svc) for as long as it lives. */
void relay_start(struct dualproxy *dp, const struct service *svc, int client_fd,
		 const struct addr *client);

/* Ends every live relay at once (end=shutdown). */
void relay_close_all(struct dualproxy *dp);

#endif
