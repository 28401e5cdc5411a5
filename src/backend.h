/* backend.h: non-blocking connections to a service's backends */
#ifndef DUALPROXY_BACKEND_H
#define DUALPROXY_BACKEND_H

#include <stdbool.h>

#include "addr.h"

/* Opens a non-blocking TCP socket and starts connecting to a. Returns the fd
 * (owned by the caller), with *in_progress set when the connect has yet to
 * complete (its outcome: the socket's first error, or backend_connected),
 * or -1 with errno set. */
int backend_connect(const struct addr *a, int *in_progress);

/* The socket's pending error (SO_ERROR), taken from it: 0 when there is none. */
int backend_connect_result(int fd);

/* Whether fd's connect has completed and succeeded (it has a peer). */
bool backend_connected(int fd);

#endif
