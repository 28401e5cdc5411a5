/* admission.h: the accept-side decisions, shared by TCP connections and UDP
 * flows: allowlist, per-source limit, capacity, self-loops, accept backoff */
#ifndef DUALPROXY_ADMISSION_H
#define DUALPROXY_ADMISSION_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "addr.h"
#include "config.h"
#include "hashtab.h"
#include "loops.h"
#include "sources.h"

/* What admission_check decided about a new client. */
enum admit_result {
	ADMIT_OK,             /* admitted and counted: admission_release when it ends */
	ADMIT_DENIED,         /* not in the service's allowlist */
	ADMIT_SOURCE_LIMITED, /* its address has max_connections_per_source open */
	ADMIT_FULL,           /* max_connections or the descriptor limit reached */
	ADMIT_LOOP,           /* it comes from one of dualproxy's own backend sockets */
	ADMIT_DRAINING,       /* SIGTERM: nothing new is admitted */
	ADMIT_RESULT_COUNT,
};

/* Why paused: the label of dualproxy_accept_paused_total. */
enum pause_reason { PAUSE_MAX_CONNECTIONS, PAUSE_DESCRIPTORS, PAUSE_REASON_COUNT };

/* An accept watcher that admission starts and stops: closed while the
 * daemon is full (relay gates only), during an accept backoff and while
 * draining. */
struct admission_gate {
	ev_io *io;
	bool relays;                       /* admits relays: closes when full */
	LIST_ENTRY(admission_gate) link;   /* in admission.gates */
};

struct admission {
	/* configuration */
	struct ev_loop *loop;
	unsigned long max_connections;  /* from the config */
	unsigned long per_source;       /* max_connections_per_source; 0: no limit */
	unsigned long fd_limit;         /* RLIMIT_NOFILE */
	unsigned long fd_reserved;      /* descriptors kept for the rest: listeners, metrics */
	const size_t *pipes;            /* splice pipes that exist now (two descriptors each) */
	/* runtime */
	unsigned long active;           /* admitted connections and flows */
	unsigned long fds;              /* their descriptors: two per relay, one per flow */
	bool full;                      /* at the limit: relay gates are closed */
	bool draining;                  /* SIGTERM seen */
	ev_timer backoff;               /* gates closed after EMFILE/ENFILE */
	LIST_HEAD(, admission_gate) gates;
	struct source_table sources;    /* live connections per client address */
	struct loops loops;             /* our own backend sockets, to see loops */
	uint64_t paused[PAUSE_REASON_COUNT]; /* times accepting paused */
};

/* pipes: the pipe pool's count of pipes, which take from the same budget. */
void admission_init(struct admission *a, struct ev_loop *loop, unsigned long fd_limit,
		    const size_t *pipes);

/* Takes the limits of cfg (at start-up and after each reload) and the
 * number of descriptors held by other things than connections. */
void admission_configure(struct admission *a, const struct config *cfg,
			 unsigned long fd_reserved);

/* Connections and flows the limits leave room for: min(max_connections,
 * those open now and the TCP connections the spare descriptors allow, two
 * each). A UDP flow needs one descriptor. */
unsigned long admission_capacity(const struct admission *a);

/* Descriptors left for more connections, flows and pipes. */
unsigned long admission_spare_fds(const struct admission *a);

/* Decides about a client of svc that will hold fds descriptors (a relay
 * two, a UDP flow one). On ADMIT_OK the client is counted, and
 * *source_counted says whether per source too: the caller passes these to
 * admission_release when it ends. Backend sockets register with
 * a->loops (loops_add), so that one that comes back is refused. */
enum admit_result admission_check(struct admission *a, const struct service *svc,
				  const struct addr *client, unsigned fds, bool *source_counted);

/* One admitted connection or flow ended. Reopens the gates below the limit;
 * the last one to end during a drain ends the event loop. */
void admission_release(struct admission *a, const struct addr *client, unsigned fds,
		       bool source_counted);

/* The name of a result for the log: "denied", "source-limited", ... */
const char *admission_result_name(enum admit_result r);

/* Registers an accept watcher (started now if accepting is open). */
void admission_gate_add(struct admission *a, struct admission_gate *g, ev_io *io,
			bool relays);
void admission_gate_remove(struct admission *a, struct admission_gate *g);

/* Descriptors ran out: closes every gate for a moment. */
void admission_backoff(struct admission *a);

/* SIGTERM: admits nothing more; ends the loop at once when nothing is
 * active, else when the last admitted connection ends. */
void admission_drain(struct admission *a);

void admission_free(struct admission *a);

#endif
