/* udp.h: UDP flows: one per client address and port, each with its own
 * socket connected to the backend of the client's family */
#ifndef DUALPROXY_UDP_H
#define DUALPROXY_UDP_H

#include "addr.h"
#include "reason.h"

struct dualproxy;
struct listener;

/* Options of a bound UDP listening socket: the destination address of
 * each datagram (IP_PKTINFO / IPV6_RECVPKTINFO), so that replies leave
 * from the address the client sent to, and UDP GRO where the kernel has
 * it. Returns 0, or -1 with errno set. */
int udp_socket_options(int fd, const struct addr *a);

/* Sets up the flows of a new UDP listener (l->fd bound, l->io not
 * started: the caller starts it when the listener commits). Returns 0, or
 * -1 when out of memory. */
int udp_attach(struct listener *l);

/* Ends the listener's flows (their end reason: why) and frees what
 * udp_attach made. */
void udp_detach(struct listener *l, enum end_reason why);

/* SIGTERM: no new flows (admission); from now on a flow idle for a moment
 * is over. */
void udp_drain(struct dualproxy *dp);

/* Ends every flow at once (end=shutdown). */
void udp_close_all(struct dualproxy *dp);

/* Frees the buffers the flows share; after every listener is closed. */
void udp_cleanup(struct dualproxy *dp);

#endif
