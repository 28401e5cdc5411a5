/* listener.h: bound sockets of the services: TCP ones that hand accepted
 * clients to the relay, UDP ones whose datagrams udp.c relays */
#ifndef DUALPROXY_LISTENER_H
#define DUALPROXY_LISTENER_H

#include <ev.h>
#include <stdbool.h>
#include <sys/queue.h>

#include "addr.h"
#include "admission.h"
#include "config.h"
#include "stats.h"

struct dualproxy;
struct udp_endpoint;

struct listener {
	/* configuration */
	int type;                    /* SOCK_STREAM or SOCK_DGRAM */
	struct addr addr;
	struct service *service;     /* in dp->config; a reload points it at the new one */
	struct service_stats *stats; /* a reference to service's counters, set at commit */
	/* runtime */
	struct dualproxy *dp;
	int fd;                      /* owned */
	ev_io io;                    /* TCP: accepting, opened and closed by its gate;
					UDP: datagrams from clients (udp.c) */
	struct admission_gate gate;  /* TCP */
	struct udp_endpoint *udp;    /* UDP: its flows (udp.c), owned */
	LIST_ENTRY(listener) link;   /* in dp->listeners */
};

/* What listeners_apply changed, counted in listening addresses. */
struct listeners_diff {
	unsigned added, kept, removed;
	unsigned rebound; /* of the added: bound after closing an overlapping old one */
};

/* Makes the open listeners match cfg (at start-up and on reload): an
 * address already open keeps its socket and now serves cfg's service; new
 * addresses are bound; the others are closed. An address that overlaps one
 * being closed (0.0.0.0:P replaced by 127.0.0.1:P, say) is bound right
 * after that one closes, a refusal window of a few system calls that is
 * logged. Either all of it is applied and 0 returned, or nothing changes
 * and -1 is returned after logging. */
int listeners_apply(struct dualproxy *dp, struct config *cfg, struct listeners_diff *diff);

/* Closes and frees every listener. */
void listeners_close_all(struct dualproxy *dp);

/* SIGTERM: closes the TCP listeners; the UDP ones stay, for the replies of
 * the flows that drain. */
void listeners_close_tcp(struct dualproxy *dp);

#endif
