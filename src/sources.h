/* sources.h: live connections per client address, for max_connections_per_source */
#ifndef DUALPROXY_SOURCES_H
#define DUALPROXY_SOURCES_H

#include <stddef.h>
#include <stdint.h>

#include "addr.h"

struct source;

/* A hash table of client addresses (without port) with a connection count
 * each; an address is in it only while it has live connections. */
struct source_table {
	struct source **buckets; /* SOURCE_BUCKETS chains, allocated on first use */
	size_t n;                /* addresses in the table */
};

/* Counts one more connection from a's address unless it has limit already.
 * Returns 0 when counted, -1 when at the limit or out of memory. */
int sources_acquire(struct source_table *t, const struct addr *a, unsigned long limit);

/* Counts one connection from a's address less (one sources_acquire'd). */
void sources_release(struct source_table *t, const struct addr *a);

/* Live connections from a's address. */
unsigned long sources_count(const struct source_table *t, const struct addr *a);

void sources_free(struct source_table *t);

#endif
