/* dualproxy.h: the daemon's context, created in main.c and passed to every module */
#ifndef DUALPROXY_DUALPROXY_H
#define DUALPROXY_DUALPROXY_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "pipepool.h"
#include "sources.h"
#include "stats.h"

struct listener;
struct metrics;
struct relay;
struct relay_end;

/* What runs after each poll, by libev priority (highest first): timers,
 * signals and the metrics endpoint; then the connections that became ready,
 * in the order they did (relay.c); then accepting new ones (listener.c), so
 * that a burst of new connections never delays bytes already in flight. */
#define PRIORITY_RELAY (EV_MINPRI + 1)
#define PRIORITY_ACCEPT EV_MINPRI

/* Size of the shared buffer that recv/send relaying reads into. */
#define RELAY_CHUNK (64 * 1024)

struct dualproxy {
	/* configuration */
	const char *config_path;  /* file to (re)load; NULL: klipper-lb environment */
	struct config *config;    /* current snapshot; one reference owned here */

	/* runtime */
	struct ev_loop *loop;
	struct listener *listeners; /* open listeners, owned */
	unsigned n_listeners;       /* how many */
	struct relay *relays;       /* live connections; each relay frees itself */
	struct relay_end *ready;    /* sockets to serve, in the order they became ready */
	ev_check ready_check;       /* serves them after each poll */
	unsigned long active;       /* number of live relays */
	unsigned long fd_limit;     /* RLIMIT_NOFILE; 0 when unknown */
	bool full;                  /* accepting paused at max_connections */
	bool stopping;              /* SIGTERM seen: no new connections */
	struct pipe_pool pipes;     /* splice pipes, reused across relays */
	struct source_table sources; /* live connections per client address */
	char *chunk;                /* RELAY_CHUNK bytes shared by all relays */

	struct metrics *metrics;    /* the /metrics endpoint, or NULL */

	/* counters since start */
	struct stats stats;         /* per service, kept across reloads */
	uint64_t accepted;
};

#endif
