/* listener.c: bound listening sockets that accept clients into relays */
#include "autoconfig.h"

#include <errno.h>
#include <limits.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dualproxy.h"
#include "listener.h"
#include "log.h"
#include "relay.h"

#define LISTEN_BACKLOG 4096     /* the kernel caps it at somaxconn */
#define ACCEPT_BATCH 16         /* accepts per wake-up: new connections take turns
				   with the live ones and with other ports */
#define FD_BACKOFF_SEC 0.1      /* pause after EMFILE/ENFILE */
#define FD_RESERVE 32           /* descriptors kept for metrics, the loop, stdio */
#define FDS_PER_RELAY 2         /* client and backend sockets */

static void on_accept(struct ev_loop *loop, ev_io *w, int revents);
static void on_backoff(struct ev_loop *loop, ev_timer *w, int revents);

int listener_socket(const struct addr *a, int backlog)
{
	int one = 1;
	int fd = socket(addr_family(a), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (addr_family(a) == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, &a->u.sa, a->len) < 0 || listen(fd, backlog) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

struct listener *listener_open(struct dualproxy *dp, const struct addr *a,
			       struct service *svc)
{
	int fd = listener_socket(a, LISTEN_BACKLOG);
	if (fd < 0)
		return NULL;
	struct listener *l = calloc(1, sizeof(*l));
	if (l == NULL) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	l->addr = *a;
	l->service = svc;
	l->stats = stats_service(&dp->stats, svc->name);
	l->dp = dp;
	l->fd = fd;
	ev_io_init(&l->io, on_accept, fd, EV_READ);
	ev_set_priority(&l->io, PRIORITY_ACCEPT);
	l->io.data = l;
	ev_timer_init(&l->backoff, on_backoff, FD_BACKOFF_SEC, 0.);
	l->backoff.data = l;
	return l;
}

void listener_start(struct listener *l)
{
	if (!l->dp->full && !l->dp->stopping && !ev_is_active(&l->backoff))
		ev_io_start(l->dp->loop, &l->io);
}

void listener_close(struct listener *l)
{
	ev_io_stop(l->dp->loop, &l->io);
	ev_timer_stop(l->dp->loop, &l->backoff);
	close(l->fd);
	free(l);
}

static struct listener *find(struct listener *list, const struct addr *a)
{
	for (struct listener *l = list; l != NULL; l = l->next)
		if (addr_equal(&l->addr, a))
			return l;
	return NULL;
}

static void close_list(struct listener *l)
{
	while (l != NULL) {
		struct listener *next = l->next;
		listener_close(l);
		l = next;
	}
}

int listeners_apply(struct dualproxy *dp, struct config *cfg,
		    struct listeners_diff *diff)
{
	struct listener *fresh = NULL, **fresh_tail = &fresh;
	char a[ADDR_STRLEN];

	*diff = (struct listeners_diff){ 0, 0, 0 };
	for (struct listener *l = dp->listeners; l != NULL; l = l->next)
		l->kept = false;

	/* prepare: bind what is new; on failure undo only that */
	for (struct service *svc = cfg->services; svc != NULL; svc = svc->next) {
		if (stats_service(&dp->stats, svc->name) == NULL) {
			log_error("out of memory");
			close_list(fresh);
			return -1;
		}
		for (size_t i = 0; i < svc->n_listen; i++) {
			struct listener *old = find(dp->listeners, &svc->listen[i]);
			if (old != NULL) {
				old->kept = true;
				continue;
			}
			struct listener *l = listener_open(dp, &svc->listen[i], svc);
			if (l == NULL) {
				log_error("%s:%u: [%s] cannot listen on %s: %s", cfg->path,
					  svc->listen_line[i], svc->name,
					  addr_format(&svc->listen[i], a), strerror(errno));
				close_list(fresh);
				return -1;
			}
			*fresh_tail = l;
			fresh_tail = &l->next;
		}
	}

	/* commit: nothing below can fail */
	struct listener **link = &dp->listeners;
	while (*link != NULL) {
		struct listener *l = *link;
		if (l->kept) {
			for (struct service *svc = cfg->services; svc != NULL; svc = svc->next)
				for (size_t i = 0; i < svc->n_listen; i++)
					if (addr_equal(&svc->listen[i], &l->addr))
						l->service = svc;
			l->stats = stats_service(&dp->stats, l->service->name);
			diff->kept++;
			link = &l->next;
			continue;
		}
		log_info("closed %s (%s)", addr_format(&l->addr, a), l->service->name);
		*link = l->next;
		listener_close(l);
		diff->removed++;
	}
	*link = fresh; /* link points at the end of the kept listeners */
	for (struct listener *l = fresh; l != NULL; l = l->next) {
		listener_start(l);
		diff->added++;
		log_info("listening on %s (%s)", addr_format(&l->addr, a), l->service->name);
	}
	dp->n_listeners = diff->kept + diff->added;
	return 0;
}

void listeners_close_all(struct dualproxy *dp)
{
	close_list(dp->listeners);
	dp->listeners = NULL;
	dp->n_listeners = 0;
}

unsigned long listeners_capacity(const struct dualproxy *dp)
{
	unsigned long reserved = FD_RESERVE + 2 * (unsigned long)dp->pipes.budget +
				 dp->n_listeners;
	if (dp->fd_limit == 0)
		return ULONG_MAX;
	if (dp->fd_limit <= reserved + FDS_PER_RELAY)
		return 1;
	return (unsigned long)(dp->fd_limit - reserved) / FDS_PER_RELAY;
}

void listeners_update_capacity(struct dualproxy *dp)
{
	unsigned long limit = dp->config->max_connections;
	unsigned long capacity = listeners_capacity(dp);
	if (capacity < limit)
		limit = capacity;
	bool full = dp->active >= limit;
	if (full == dp->full)
		return;
	dp->full = full;
	for (struct listener *l = dp->listeners; l != NULL; l = l->next) {
		if (full)
			ev_io_stop(dp->loop, &l->io);
		else
			listener_start(l);
	}
	if (full)
		log_warn("%lu connections (%s) reached: accepting paused", limit,
			 limit == dp->config->max_connections ? "max_connections"
							      : "descriptor limit");
	else
		log_info("below max_connections again: accepting resumed");
}

static void backoff(struct listener *l)
{
	ev_io_stop(l->dp->loop, &l->io);
	if (!ev_is_active(&l->backoff)) {
		ev_timer_set(&l->backoff, FD_BACKOFF_SEC, 0.); /* a fired timer needs it */
		ev_timer_start(l->dp->loop, &l->backoff);
	}
}

void listeners_backoff(struct dualproxy *dp)
{
	for (struct listener *l = dp->listeners; l != NULL; l = l->next)
		backoff(l);
}

static void on_backoff(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct listener *l = w->data;
	(void)loop;
	(void)revents;
	listener_start(l);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = w->data;
	struct dualproxy *dp = l->dp;
	char a[ADDR_STRLEN];
	(void)loop;
	(void)revents;

	for (int i = 0; i < ACCEPT_BATCH && !dp->full && ev_is_active(&l->io); i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(l->fd, (struct sockaddr *)&ss, &len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			switch (errno) {
			case EAGAIN:
			case EINTR:
			case ECONNABORTED:
			case EPROTO:
				return;
			case EMFILE:
			case ENFILE:
			case ENOBUFS:
			case ENOMEM:
				log_warn("accept on %s: %s: pausing all listeners for %.0f ms",
					 addr_format(&l->addr, a), strerror(errno),
					 FD_BACKOFF_SEC * 1000);
				listeners_backoff(dp);
				return;
			default:
				log_warn("accept on %s: %s", addr_format(&l->addr, a),
					 strerror(errno));
				return;
			}
		}
		struct addr client;
		addr_from_sockaddr(&client, (struct sockaddr *)&ss, len);
		dp->accepted++;
		relay_start(dp, l, fd, &client);
	}
}
