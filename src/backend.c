/* backend.c: non-blocking connections to a service's backends */
#include "autoconfig.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend.h"

int backend_connect(const struct addr *a, int *in_progress)
{
	int one = 1;
	int fd = socket(addr_family(a), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/* the relay forwards what it has at once; it never batches small writes */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, &a->u.sa, a->len) == 0) {
		*in_progress = 0;
		return fd;
	}
	if (errno == EINPROGRESS) {
		*in_progress = 1;
		return fd;
	}
	int saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

int backend_connect_result(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}

bool backend_connected(int fd)
{
	struct sockaddr_storage peer;
	socklen_t len = sizeof(peer);
	/* ENOTCONN while the handshake is in progress or after it failed */
	return getpeername(fd, (struct sockaddr *)&peer, &len) == 0;
}
