/* sock.c: socket helpers shared by the listeners, the relay and the metrics endpoint */
#include "autoconfig.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sock.h"

int sock_listen(const struct addr *a, int type, int backlog)
{
	int one = 1;
	int fd = socket(addr_family(a), type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (addr_family(a) == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, &a->u.sa, a->len) < 0 ||
	    (type == SOCK_STREAM && listen(fd, backlog) < 0)) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

void sock_set_linger_zero(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

int sock_local_addr(int fd, struct addr *out)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	addr_from_sockaddr(out, (struct sockaddr *)&ss, len);
	return 0;
}
