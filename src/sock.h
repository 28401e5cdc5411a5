/* sock.h: socket helpers shared by the listeners, the relay and the metrics endpoint */
#ifndef DUALPROXY_SOCK_H
#define DUALPROXY_SOCK_H

#include "addr.h"

/* A non-blocking socket of type SOCK_STREAM (listening, with backlog) or
 * SOCK_DGRAM bound to a, with SO_REUSEADDR and, for IPv6, IPV6_V6ONLY.
 * Returns the fd, owned by the caller, or -1 with errno set. */
int sock_listen(const struct addr *a, int type, int backlog);

/* Makes close() send RST instead of FIN. */
void sock_set_linger_zero(int fd);

/* The local address of a socket; returns 0, or -1 with errno set. */
int sock_local_addr(int fd, struct addr *out);

#endif
