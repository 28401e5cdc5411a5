/* relay.h: one client connection and its backend connection, pumped both ways */
#ifndef DUALPROXY_RELAY_H
#define DUALPROXY_RELAY_H

#include "addr.h"
#include "config.h"

struct dualproxy;
struct listener;

/* Starts the watcher that serves ready connections in the order they
 * became ready; before the first relay_start. */
void relay_init(struct dualproxy *dp);

/* Starts relaying a client accepted on l: closes it at once if the service's
 * allowlist does not contain it, else connects to the service's backend of
 * the client's family (sending a PROXY header first if configured) and pumps
 * data both ways until both sides are done. Takes ownership of client_fd;
 * the relay frees itself when it ends. Holds a reference to dp->config
 * (which contains l->service) for as long as it lives. */
void relay_start(struct dualproxy *dp, const struct listener *l, int client_fd,
		 const struct addr *client);

/* Ends every live relay at once (end=shutdown). */
void relay_close_all(struct dualproxy *dp);

#endif
