/* listener.c: bound listening sockets that hand accepted clients to the relay */
#include "autoconfig.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dualproxy.h"
#include "listener.h"
#include "log.h"
#include "relay.h"
#include "sock.h"
#include "udp.h"

#define LISTEN_BACKLOG 4096  /* the kernel caps it at somaxconn */
/* Accepting runs after the live connections (relay.c serves those at
 * EV_MINPRI + 1). Per port and wake-up it takes as many turns as the live
 * sockets served before it, at least ACCEPT_BATCH and at most
 * ACCEPT_BATCH_MAX: a burst of new clients neither delays bytes in flight
 * for long nor waits in the backlog while thousands of live ones are served
 * (a fixed 16 left new connections of a 5,000-client burst queued for
 * seconds). */
#define ACCEPT_PRIORITY EV_MINPRI
#define ACCEPT_BATCH 16
#define ACCEPT_BATCH_MAX 1024

static void on_accept(struct ev_loop *loop, ev_io *w, int revents);

/* A bound socket of type at a; -1 with errno set. */
static int open_socket(int type, const struct addr *a)
{
	int one = 1;
	int fd = sock_listen(a, type, LISTEN_BACKLOG);
	/* the relay forwards what it has at once and never batches small
	 * writes: accepted sockets inherit TCP_NODELAY from their listener */
	if (fd >= 0 && type == SOCK_STREAM)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (fd >= 0 && type == SOCK_DGRAM && udp_socket_options(fd, a) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* Binds a; the listener is not serving yet and has no counters. */
static struct listener *listener_new(struct dualproxy *dp, int type, const struct addr *a,
				     struct service *svc)
{
	struct listener *l = calloc(1, sizeof(*l));
	if (l == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	l->fd = open_socket(type, a);
	if (l->fd < 0) {
		int saved = errno;
		free(l);
		errno = saved;
		return NULL;
	}
	l->type = type;
	l->addr = *a;
	l->service = svc;
	l->dp = dp;
	if (type == SOCK_STREAM) {
		ev_io_init(&l->io, on_accept, l->fd, EV_READ);
		ev_set_priority(&l->io, ACCEPT_PRIORITY);
		l->io.data = l;
	} else if (udp_attach(l) < 0) {
		close(l->fd);
		free(l);
		errno = ENOMEM;
		return NULL;
	}
	return l;
}

/* Starts serving: accepting through its gate, or reading datagrams. */
static void listener_start(struct listener *l)
{
	if (l->type == SOCK_DGRAM)
		ev_io_start(l->dp->loop, &l->io);
	else
		admission_gate_add(&l->dp->admission, &l->gate, &l->io, true);
}

static void listener_free(struct listener *l, enum end_reason flows_end)
{
	if (l->gate.io != NULL)
		admission_gate_remove(&l->dp->admission, &l->gate);
	if (l->udp != NULL)
		udp_detach(l, flows_end);
	if (l->fd >= 0)
		close(l->fd);
	stats_unref(&l->dp->stats, l->stats);
	free(l);
}

static enum stats_proto proto_of(const struct listener *l)
{
	return l->type == SOCK_DGRAM ? STATS_UDP : STATS_TCP;
}

/* Refuses a client before anything reaches a backend. */
static void refuse(struct listener *l, int fd, const struct addr *client,
		   enum admit_result why)
{
	char c[ADDR_STRLEN];
	stats_family(l->stats, STATS_TCP, addr_family(client))->refused[why]++;
	log_debug("%s service=%s client=%s", admission_result_name(why), l->service->name,
		  addr_format(client, c));
	sock_set_linger_zero(fd);
	close(fd);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = w->data;
	struct dualproxy *dp = l->dp;
	char a[ADDR_STRLEN];
	(void)loop;
	(void)revents;

	unsigned batch = relay_served(dp);
	if (batch < ACCEPT_BATCH)
		batch = ACCEPT_BATCH;
	else if (batch > ACCEPT_BATCH_MAX)
		batch = ACCEPT_BATCH_MAX;
	for (unsigned i = 0; i < batch && ev_is_active(&l->io); i++) {
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
				log_warn("accept on %s: %s", addr_format(&l->addr, a),
					 strerror(errno));
				admission_backoff(&dp->admission);
				return;
			default:
				log_warn("accept on %s: %s", addr_format(&l->addr, a),
					 strerror(errno));
				return;
			}
		}
		struct addr client;
		bool source_counted;
		addr_from_sockaddr(&client, (struct sockaddr *)&ss, len);
		dp->accepted++;
		enum admit_result res =
			admission_check(&dp->admission, l->service, &client, RELAY_FDS,
					&source_counted);
		if (res != ADMIT_OK)
			refuse(l, fd, &client, res);
		else
			relay_start(dp, l->service, l->stats, fd, &client, source_counted);
	}
}

/* ---- applying a configuration ---- */

/* One address of the new configuration. */
struct wanted {
	int type;                    /* SOCK_STREAM or SOCK_DGRAM */
	const struct addr *addr;
	struct service *svc;
	unsigned line;
	struct listener *l;          /* the one that will serve it */
	struct service_stats *stats; /* a reference taken for it */
	bool fresh;                  /* l is new (else an old one kept) */
	bool deferred;               /* overlaps an old one: bound after it closes */
};

/* The old listeners by address, while a configuration is applied. */
struct old_index {
	struct htab by_addr, by_port;
	struct old_entry {
		struct hnode addr_node, port_node;
		struct listener *l;
		bool kept;
	} *entries;
	size_t n;
};

/* What the indexes are looked up with: a socket type and an address. */
struct where {
	int type;
	const struct addr *addr;
};

static uint64_t hash_port(int type, const struct addr *a)
{
	unsigned char key[4] = { (unsigned char)type, (unsigned char)addr_family(a),
				 (unsigned char)(addr_port(a) >> 8), (unsigned char)addr_port(a) };
	return htab_hash(key, sizeof(key));
}

static uint64_t hash_addr(int type, const struct addr *a)
{
	unsigned char key[ADDR_KEY_MAX + 1];
	key[0] = (unsigned char)type;
	return htab_hash(key, addr_key(a, key + 1) + 1);
}

static bool entry_addr_is(const struct hnode *n, const void *w)
{
	const struct old_entry *e = (const struct old_entry *)n;
	const struct where *x = w;
	return e->l->type == x->type && addr_equal(&e->l->addr, x->addr);
}

static bool entry_port_is(const struct hnode *n, const void *w)
{
	const struct old_entry *e =
		(const struct old_entry *)((const char *)n - offsetof(struct old_entry, port_node));
	const struct where *x = w;
	return e->l->type == x->type && addr_family(&e->l->addr) == addr_family(x->addr) &&
	       addr_port(&e->l->addr) == addr_port(x->addr);
}

static int index_old(struct dualproxy *dp, struct old_index *ix)
{
	struct listener *l;
	memset(ix, 0, sizeof(*ix));
	ix->entries = calloc(dp->n_listeners + 1, sizeof(*ix->entries));
	if (ix->entries == NULL)
		return -1;
	LIST_FOREACH(l, &dp->listeners, link) {
		struct old_entry *e = &ix->entries[ix->n++];
		e->l = l;
		if (htab_insert(&ix->by_addr, &e->addr_node, hash_addr(l->type, &l->addr)) < 0 ||
		    htab_insert(&ix->by_port, &e->port_node, hash_port(l->type, &l->addr)) < 0)
			return -1;
	}
	return 0;
}

static void free_index(struct old_index *ix)
{
	htab_free(&ix->by_addr);
	htab_free(&ix->by_port);
	free(ix->entries);
}

/* The old listener that w's new socket would collide with, other than a
 * kept one (the configuration was checked for overlaps of its own). */
static struct old_entry *overlapping_old(const struct old_index *ix, const struct wanted *w)
{
	struct where x = { w->type, w->addr };
	struct hnode *n = htab_find(&ix->by_port, hash_port(w->type, w->addr), entry_port_is, &x);
	for (; n != NULL; n = htab_next(n, entry_port_is, &x)) {
		struct old_entry *e =
			(struct old_entry *)((char *)n - offsetof(struct old_entry, port_node));
		if (!e->kept && addr_overlaps(&e->l->addr, w->addr))
			return e;
	}
	return NULL;
}

/* Releases what prepare() acquired for the wanted addresses. */
static void undo(struct dualproxy *dp, struct wanted *w, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (w[i].fresh && w[i].l != NULL)
			listener_free(w[i].l, END_SHUTDOWN);
		stats_unref(&dp->stats, w[i].stats);
	}
}

static int bind_wanted(struct dualproxy *dp, const struct config *cfg, struct wanted *w)
{
	char a[ADDR_STRLEN];
	w->l = listener_new(dp, w->type, w->addr, w->svc);
	if (w->l != NULL)
		return 0;
	log_error("%s:%u: [%s] cannot listen on %s%s: %s", cfg->path, w->line, w->svc->name,
		  addr_format(w->addr, a), w->type == SOCK_DGRAM ? " (UDP)" : "", strerror(errno));
	return -1;
}

/* Lists the addresses of cfg, matches them with the old listeners, takes
 * counter references and binds what is new and collides with nothing. */
static int prepare(struct dualproxy *dp, struct config *cfg, struct old_index *ix,
		   struct wanted *w, size_t *n)
{
	*n = 0;
	for (struct service *svc = cfg->services; svc != NULL; svc = svc->next) {
		for (int t = 0; t < 2; t++) {
			int type = t == 0 ? SOCK_STREAM : SOCK_DGRAM;
			if (!(type == SOCK_STREAM ? svc->tcp : svc->udp))
				continue;
			for (size_t i = 0; i < svc->n_listen; i++) {
				struct wanted *x = &w[(*n)++];
				*x = (struct wanted){ .type = type, .addr = &svc->listen[i],
						      .svc = svc, .line = svc->listen_line[i] };
				struct where at = { type, x->addr };
				struct old_entry *e = (struct old_entry *)htab_find(
					&ix->by_addr, hash_addr(type, x->addr), entry_addr_is, &at);
				if (e != NULL) {
					e->kept = true;
					x->l = e->l;
				} else {
					x->fresh = true;
				}
				x->stats = stats_ref(&dp->stats, svc->name);
				if (x->stats == NULL ||
				    stats_use(x->stats, type == SOCK_DGRAM ? STATS_UDP : STATS_TCP) < 0) {
					log_error("out of memory");
					return -1;
				}
			}
		}
	}
	for (size_t i = 0; i < *n; i++) {
		if (!w[i].fresh)
			continue;
		w[i].deferred = overlapping_old(ix, &w[i]) != NULL;
		if (!w[i].deferred && bind_wanted(dp, cfg, &w[i]) < 0)
			return -1;
	}
	return 0;
}

/* Closes the sockets of the old listeners that are not kept; with undo,
 * opens them again instead. Returns -1 if one cannot be reopened. */
static int suspend_removed(struct old_index *ix, bool reopen)
{
	char a[ADDR_STRLEN];
	int rc = 0;
	for (size_t i = 0; i < ix->n; i++) {
		struct listener *l = ix->entries[i].l;
		if (ix->entries[i].kept)
			continue;
		if (!reopen) {
			ev_io_stop(l->dp->loop, &l->io);
			close(l->fd);
			l->fd = -1;
			continue;
		}
		l->fd = open_socket(l->type, &l->addr);
		if (l->fd < 0) {
			log_error("cannot listen on %s again: %s: restart dualproxy",
				  addr_format(&l->addr, a), strerror(errno));
			rc = -1;
			continue;
		}
		ev_io_set(&l->io, l->fd, EV_READ);
		if (l->type == SOCK_DGRAM) {
			ev_io_start(l->dp->loop, &l->io);
		} else {
			admission_gate_remove(&l->dp->admission, &l->gate);
			admission_gate_add(&l->dp->admission, &l->gate, &l->io, true);
		}
	}
	return rc;
}

/* Binds the addresses that had to wait for an old socket to close. */
static int bind_deferred(struct dualproxy *dp, const struct config *cfg, struct wanted *w,
			 size_t n, struct listeners_diff *diff)
{
	char a[ADDR_STRLEN];
	for (size_t i = 0; i < n; i++) {
		if (!w[i].deferred)
			continue;
		if (bind_wanted(dp, cfg, &w[i]) < 0)
			return -1;
		diff->rebound++;
		log_info("listening on %s after closing an overlapping address: it refused "
			 "connections for a moment", addr_format(w[i].addr, a));
	}
	return 0;
}

static void commit(struct dualproxy *dp, struct old_index *ix, struct wanted *w, size_t n,
		   struct listeners_diff *diff)
{
	char a[ADDR_STRLEN];
	LIST_HEAD(, listener) fresh = LIST_HEAD_INITIALIZER(fresh);

	for (size_t i = 0; i < ix->n; i++) {
		struct listener *l = ix->entries[i].l;
		if (ix->entries[i].kept)
			continue;
		log_info("closed %s%s (%s)", addr_format(&l->addr, a),
			 l->type == SOCK_DGRAM ? " (UDP)" : "", l->service->name);
		LIST_REMOVE(l, link);
		listener_free(l, END_REMOVED);
		diff->removed++;
	}
	for (size_t i = n; i-- > 0;) {
		struct listener *l = w[i].l;
		struct service_stats *old = l->stats;
		l->service = w[i].svc;
		l->stats = w[i].stats; /* the reference moves to the listener */
		stats_commit(l->stats, proto_of(l));
		stats_unref(&dp->stats, old);
		if (!w[i].fresh) {
			diff->kept++;
			continue;
		}
		LIST_INSERT_HEAD(&fresh, l, link);
	}
	while (!LIST_EMPTY(&fresh)) {
		struct listener *l = LIST_FIRST(&fresh);
		LIST_REMOVE(l, link);
		LIST_INSERT_HEAD(&dp->listeners, l, link);
		listener_start(l);
		diff->added++;
		log_info("listening on %s%s (%s)", addr_format(&l->addr, a),
			 l->type == SOCK_DGRAM ? " (UDP)" : "", l->service->name);
	}
	dp->n_listeners = diff->kept + diff->added;
}

int listeners_apply(struct dualproxy *dp, struct config *cfg, struct listeners_diff *diff)
{
	struct old_index ix;
	size_t total = 0, n = 0;
	int rc = -1;

	*diff = (struct listeners_diff){ 0, 0, 0, 0 };
	for (const struct service *svc = cfg->services; svc != NULL; svc = svc->next)
		total += svc->n_listen * ((size_t)svc->tcp + svc->udp);
	struct wanted *w = calloc(total + 1, sizeof(*w));
	if (w == NULL || index_old(dp, &ix) < 0) {
		log_error("out of memory");
		free(w);
		return -1;
	}
	if (prepare(dp, cfg, &ix, w, &n) < 0)
		goto fail;
	suspend_removed(&ix, false);
	if (bind_deferred(dp, cfg, w, n, diff) < 0) {
		suspend_removed(&ix, true);
		goto fail;
	}
	commit(dp, &ix, w, n, diff);
	rc = 0;
	goto out;
fail:
	undo(dp, w, n);
out:
	free_index(&ix);
	free(w);
	return rc;
}

void listeners_close_all(struct dualproxy *dp)
{
	while (!LIST_EMPTY(&dp->listeners)) {
		struct listener *l = LIST_FIRST(&dp->listeners);
		LIST_REMOVE(l, link);
		listener_free(l, END_SHUTDOWN);
	}
	dp->n_listeners = 0;
}

void listeners_close_tcp(struct dualproxy *dp)
{
	struct listener *l, *next;
	for (l = LIST_FIRST(&dp->listeners); l != NULL; l = next) {
		next = LIST_NEXT(l, link);
		if (l->type != SOCK_STREAM)
			continue;
		LIST_REMOVE(l, link);
		listener_free(l, END_SHUTDOWN);
		dp->n_listeners--;
	}
}
