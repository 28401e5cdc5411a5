/* backend.h: non-blocking connections to a service's backends */
#ifndef DUALPROXY_BACKEND_H
#define DUALPROXY_BACKEND_H

#include "addr.h"

/* Opens a non-blocking TCP socket and starts connecting to a. Returns the fd
 * (owned by the caller), with *in_progress set when the connect has yet to
 * complete (wait for writability, then backend_connect_result), or -1 with
 * errno set. */
int backend_connect(const struct addr *a, int *in_progress);

/* After writability: returns 0 when connected, else the errno of the failure. */
int backend_connect_result(int fd);

#endif
