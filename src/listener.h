/* listener.h: bound listening sockets that accept clients into relays */
#ifndef DUALPROXY_LISTENER_H
#define DUALPROXY_LISTENER_H

#include <ev.h>
#include <stdbool.h>

#include "addr.h"
#include "config.h"
#include "stats.h"

struct dualproxy;

struct listener {
	/* configuration */
	struct addr addr;
	struct service *service;  /* in dp->config; updated by a reload */
	struct service_stats *stats; /* counters of service->name, owned by dp->stats */
	/* runtime */
	struct dualproxy *dp;
	int fd;                   /* owned */
	ev_io io;
	ev_timer backoff;         /* runs while accepting is paused for lack of fds */
	bool kept;                /* listeners_apply: its address is in the new config */
	struct listener *next;
};

/* A non-blocking listening socket bound to a (SO_REUSEADDR, IPV6_V6ONLY for
 * IPv6). Returns the fd, owned by the caller, or -1 with errno set. */
int listener_socket(const struct addr *a, int backlog);

/* Binds and listens on a (IPV6_V6ONLY for IPv6). Returns a listener that is
 * not yet accepting (see listener_start), or NULL with errno set. */
struct listener *listener_open(struct dualproxy *dp, const struct addr *a,
			       struct service *svc);

/* Starts accepting, unless the daemon is full. */
void listener_start(struct listener *l);

/* Stops accepting and closes the socket; frees l. */
void listener_close(struct listener *l);

/* What listeners_apply changed, counted in listening addresses. */
struct listeners_diff {
	unsigned added, kept, removed;
};

/* Makes the open listeners match cfg (at start-up and on reload): an address already open
 * keeps its socket and now serves cfg's service; new addresses are bound;
 * the others are closed. Either everything is applied and 0 returned, or,
 * when an address cannot be bound, nothing changes and -1 is returned after
 * logging. */
int listeners_apply(struct dualproxy *dp, struct config *cfg,
		    struct listeners_diff *diff);

/* Closes and frees every listener. */
void listeners_close_all(struct dualproxy *dp);

/* Called whenever dp->active changes: pauses accepting at max_connections
 * and resumes below it. */
void listeners_update_capacity(struct dualproxy *dp);

/* Relays that the descriptor limit leaves room for, after the listeners,
 * the pipe budget and a reserve for the rest. */
unsigned long listeners_capacity(const struct dualproxy *dp);

/* Pauses every listener briefly: descriptors ran out. */
void listeners_backoff(struct dualproxy *dp);

#endif
