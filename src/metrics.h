/* metrics.h: the Prometheus endpoint (GET /metrics, GET /healthz) */
#ifndef DUALPROXY_METRICS_H
#define DUALPROXY_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct dualproxy;
struct metrics;

/* What a request asks for. */
enum metrics_route {
	ROUTE_INCOMPLETE,  /* the request head has not ended yet */
	ROUTE_METRICS,     /* GET or HEAD /metrics */
	ROUTE_HEALTH,      /* GET or HEAD /healthz */
	ROUTE_NOT_FOUND,   /* another path */
	ROUTE_BAD_METHOD,  /* not GET or HEAD */
	ROUTE_BAD_REQUEST, /* not an HTTP/1.x request line */
};

/* Bytes of a request head that are read at most. */
#define METRICS_REQUEST_MAX 4096

/* Classifies the first len bytes received on a metrics connection. Only the
 * request line is interpreted; the head must end with an empty line. *head
 * is set for HEAD requests. */
enum metrics_route metrics_route(const char *req, size_t len, bool *head);

/* Opens the endpoint on cfg's metrics_listen addresses, serving dp's
 * counters. Returns NULL with errno set (after logging) if one cannot be bound. */
struct metrics *metrics_open(struct dualproxy *dp, const struct config *cfg);

/* Takes cfg's metrics_allow after a reload that kept the addresses. */
void metrics_set_config(struct metrics *m, const struct config *cfg);

/* Descriptors cfg's endpoint may hold: its sockets and its clients. */
unsigned long metrics_fds(const struct config *cfg);

/* True when m (may be NULL) listens on exactly cfg's metrics_listen. */
bool metrics_same(const struct metrics *m, const struct config *cfg);

/* Closes the endpoint and its open connections; NULL is allowed. */
void metrics_close(struct metrics *m);

#endif
