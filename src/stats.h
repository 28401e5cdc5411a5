/* stats.h: counters per service that outlive reloads, rendered for Prometheus */
#ifndef DUALPROXY_STATS_H
#define DUALPROXY_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Why a backend failed a connection; the label of backend_errors_total. */
enum backend_error {
	BACKEND_REFUSED,
	BACKEND_TIMEOUT,
	BACKEND_UNREACHABLE,
	BACKEND_FAILED,      /* any other connect error, or no descriptor */
	BACKEND_RESET,       /* reset by the backend after it accepted */
	BACKEND_ERROR_COUNT,
};

enum stats_family { STATS_IPV4, STATS_IPV6, STATS_FAMILY_COUNT };

/* Counters of one service name; kept across reloads, never freed while the
 * daemon runs (Prometheus counters must not go back). */
struct service_stats {
	char name[SERVICE_NAME_MAX + 1];
	uint64_t connections[STATS_FAMILY_COUNT];
	uint64_t active;
	uint64_t bytes_up;   /* client to backend */
	uint64_t bytes_down; /* backend to client */
	uint64_t backend_errors[BACKEND_ERROR_COUNT];
	uint64_t denied;
	uint64_t source_limited; /* closed by max_connections_per_source */
	struct service_stats *next;
};

struct stats {
	struct service_stats *services; /* in order of first appearance */
	uint64_t reloads_ok, reloads_failed;
};

/* The counters of a service name, created at zero on first use. Returns
 * NULL only when out of memory. Owned by st. */
struct service_stats *stats_service(struct stats *st, const char *name);

/* Label value of a backend error ("refused", "timeout", ...). */
const char *stats_backend_error_name(enum backend_error e);

/* Renders every series in the Prometheus text format into a malloc'd
 * string (the caller frees it); returns NULL when out of memory. */
char *stats_render(const struct stats *st, size_t *len);

void stats_free(struct stats *st);

#endif
