/* listener.h: bound listening sockets that accept clients into relays */
#ifndef DUALPROXY_LISTENER_H
#define DUALPROXY_LISTENER_H

#include <ev.h>
#include <stdbool.h>

#include "addr.h"
#include "config.h"

struct dualproxy;

struct listener {
	/* configuration */
	struct addr addr;
	struct service *service;  /* in dp->config; updated by a reload */
	/* runtime */
	struct dualproxy *dp;
	int fd;                   /* owned */
	ev_io io;
	ev_timer backoff;         /* runs while accepting is paused for lack of fds */
	struct listener *next;
};

/* Binds and listens on a (IPV6_V6ONLY for IPv6). Returns a listener that is
 * not yet accepting (see listener_start), or NULL with errno set. */
struct listener *listener_open(struct dualproxy *dp, const struct addr *a,
			       struct service *svc);

/* Starts accepting, unless the daemon is full. */
void listener_start(struct listener *l);

/* Stops accepting and closes the socket; frees l. */
void listener_close(struct listener *l);

/* Opens a listener for every address of every service of cfg and links them
 * into dp->listeners. Returns 0, or -1 after logging (nothing is left open). */
int listeners_open_all(struct dualproxy *dp, struct config *cfg);

/* Closes and frees every listener. */
void listeners_close_all(struct dualproxy *dp);

/* Called whenever dp->active changes: pauses accepting at max_connections
 * and resumes below it. */
void listeners_update_capacity(struct dualproxy *dp);

/* Pauses every listener briefly: descriptors ran out. */
void listeners_backoff(struct dualproxy *dp);

#endif
