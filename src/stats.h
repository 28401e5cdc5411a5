/* stats.h: counters per service, kept while the service runs, rendered for Prometheus */
#ifndef DUALPROXY_STATS_H
#define DUALPROXY_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "admission.h"
#include "hashtab.h"
#include "reason.h"

enum stats_proto { STATS_TCP, STATS_UDP, STATS_PROTO_COUNT };
enum stats_family { STATS_IPV4, STATS_IPV6, STATS_FAMILY_COUNT };
enum stats_dir { STATS_UP, STATS_DOWN, STATS_DIR_COUNT }; /* up: client to backend */

/* Why a UDP datagram was not relayed (besides admission's refusals). */
enum drop_reason {
	DROP_TRUNCATED,   /* cut on reading: never sent on cut */
	DROP_NO_SOCKET,   /* a new flow could not get a socket */
	DROP_BUFFER_FULL, /* the socket it was to leave by had no room */
	DROP_ERROR,       /* another send error */
	DROP_REASON_COUNT,
};

/* The counters of one protocol and client address family of a service. */
struct stats_counters {
	uint64_t opened;                      /* connections relayed, UDP flows made */
	uint64_t active;                      /* open now */
	uint64_t bytes[STATS_DIR_COUNT];      /* payload relayed */
	uint64_t datagrams[STATS_DIR_COUNT];  /* UDP datagrams relayed */
	uint64_t dropped[STATS_DIR_COUNT][DROP_REASON_COUNT]; /* UDP datagrams dropped */
	uint64_t ended[END_REASON_COUNT];     /* how they ended */
	uint64_t refused[ADMIT_RESULT_COUNT]; /* clients admission turned away */
};

/* The counters of one service name. Everything that counts here holds a
 * reference (a listener, a live connection or flow); the series go away
 * with the last one, after a reload removed the service. A protocol's
 * counters exist once a listener of it was committed. */
struct service_stats {
	struct hnode node;                    /* in stats.by_name */
	TAILQ_ENTRY(service_stats) link;      /* in stats.all */
	unsigned refs;
	struct stats_counters *proto[STATS_PROTO_COUNT]; /* [family], or NULL */
	bool committed[STATS_PROTO_COUNT];    /* shown in the metrics */
	char name[];                          /* the service's name */
};

struct stats {
	struct htab by_name;
	TAILQ_HEAD(, service_stats) all;      /* in order of first appearance */
	uint64_t reloads_ok, reloads_failed;
	uint64_t notify_dropped;              /* messages to systemd dropped (queue full) */
};

void stats_init(struct stats *st);

/* The counters of a service name, created at zero on first use, with one
 * more reference. Returns NULL only when out of memory. */
struct service_stats *stats_ref(struct stats *st, const char *name);

/* One more reference to s; returns s. */
struct service_stats *stats_hold(struct service_stats *s);

/* Gives a reference back; the last one frees s. */
void stats_unref(struct stats *st, struct service_stats *s);

/* Makes room for a protocol's counters (prepare); returns 0, or -1 when out
 * of memory. */
int stats_use(struct service_stats *s, enum stats_proto p);

/* Shows a protocol's counters in the metrics from now on (commit). */
void stats_commit(struct service_stats *s, enum stats_proto p);

/* The counters of a protocol (made by stats_use) and client address
 * family (AF_INET or AF_INET6). */
struct stats_counters *stats_family(struct service_stats *s, enum stats_proto p, int af);

/* Backend errors of every service, for systemd's STATUS line. */
uint64_t stats_backend_errors(const struct stats *st);

/* Figures of the process that the metrics carry besides the counters. */
struct stats_process {
	unsigned long connections_max;  /* what admission allows now */
	const uint64_t *paused;         /* PAUSE_REASON_COUNT pause counts */
	uint64_t log_lines_dropped;
	uint64_t metrics_denied;
	double start_time;              /* seconds since the epoch */
};

/* Renders every series in the Prometheus text format into a malloc'd
 * string (the caller frees it); returns NULL when out of memory. */
char *stats_render(const struct stats *st, const struct stats_process *proc, size_t *len);

void stats_free(struct stats *st);

#endif
