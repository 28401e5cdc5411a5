/* sources.h: live connections per client address, for max_connections_per_source */
#ifndef DUALPROXY_SOURCES_H
#define DUALPROXY_SOURCES_H

#include <stddef.h>

#include "addr.h"
#include "hashtab.h"

/* Client addresses (without port) with a connection count each; an
 * address is in the table only while it has live connections. */
struct source_table {
	struct htab addrs;
};

/* Counts one more connection from a's address unless it has limit already.
 * Returns 0 when counted, -1 when at the limit or out of memory. */
int sources_acquire(struct source_table *t, const struct addr *a, unsigned long limit);

/* Counts one connection from a's address less (one sources_acquire'd). */
void sources_release(struct source_table *t, const struct addr *a);

/* Live connections from a's address. */
unsigned long sources_count(const struct source_table *t, const struct addr *a);

/* Addresses with live connections. */
size_t sources_size(const struct source_table *t);

void sources_free(struct source_table *t);

#endif
