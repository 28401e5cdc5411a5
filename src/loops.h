/* loops.h: recognises dualproxy's own backend sockets when they come back to it */
#ifndef DUALPROXY_LOOPS_H
#define DUALPROXY_LOOPS_H

#include <stdbool.h>
#include <sys/queue.h>

#include "addr.h"
#include "hashtab.h"

#define LOOP_SOURCES_MAX 16 /* source addresses of backend sockets remembered */

/* A socket of ours towards a backend; embedded in its relay or UDP flow. */
struct loop_socket {
	struct hnode node;                  /* in loops.known, by local address */
	LIST_ENTRY(loop_socket) pending;    /* in loops.pending */
	int fd;
	enum { LOOP_UNTRACKED, LOOP_PENDING, LOOP_KNOWN } state;
	unsigned char local[ADDR_KEY_MAX];  /* addr_key of its local address, once KNOWN */
	unsigned char local_len;
};

/* A connection that comes back to us from one of our backend sockets is a
 * loop. That needs address translation on the way when the backend
 * address is not one of this host's (a backend equal to a listen address
 * is a configuration error): kube-proxy's DNAT of a ClusterIP to a port
 * dualproxy publishes, say. So only sockets towards addresses that are not
 * local are tracked, and their local address is asked (getsockname) only
 * when a client arrives from an address that such a socket has had: a
 * client from elsewhere costs nothing. */
struct loops {
	struct htab remotes;                /* struct loop_remote by backend address */
	struct htab known;                  /* struct loop_socket by local address */
	LIST_HEAD(, loop_socket) pending;   /* local address not asked yet */
	unsigned char sources[LOOP_SOURCES_MAX][ADDR_KEY_MAX]; /* addresses, port 0 */
	unsigned char source_len[LOOP_SOURCES_MAX];
	size_t n_sources;
};

void loops_init(struct loops *l);

/* Tracks s (socket fd, connected towards remote). */
void loops_add(struct loops *l, struct loop_socket *s, int fd, const struct addr *remote);

/* Forgets s; call before closing its socket. */
void loops_remove(struct loops *l, struct loop_socket *s);

/* True when client is the local address of one of the tracked sockets. */
bool loops_check(struct loops *l, const struct addr *client);

void loops_free(struct loops *l);

#endif
