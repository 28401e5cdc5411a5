/* dualproxy.h: the daemon's context, created in main.c and passed to every module */
#ifndef DUALPROXY_DUALPROXY_H
#define DUALPROXY_DUALPROXY_H

#include <ev.h>
#include <stdint.h>
#include <sys/queue.h>

#include "admission.h"
#include "config.h"
#include "lifecycle.h"
#include "pipepool.h"
#include "stats.h"

struct listener;
struct metrics;
struct relays;
struct udp_shared;

struct dualproxy {
	/* configuration */
	const char *config_path;  /* file to (re)load; NULL: klipper-lb environment */
	struct config *config;    /* current snapshot; one reference owned here */

	/* runtime */
	struct ev_loop *loop;
	struct lifecycle lifecycle;      /* signals, drain, status and file watchers */
	struct admission admission;      /* who may connect, how many */
	LIST_HEAD(, listener) listeners; /* open listeners, owned */
	unsigned n_listeners;            /* how many */
	struct relays *relays;           /* live connections (relay.c's own state) */
	struct udp_shared *udp;          /* buffers of the UDP flows (udp.c), or NULL */
	struct pipe_pool pipes;          /* splice pipes, reused across relays */
	struct metrics *metrics;         /* the /metrics endpoint, or NULL */

	/* counters since start */
	struct stats stats;              /* per service */
	uint64_t accepted;
};

#endif
