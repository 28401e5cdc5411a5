/* udp.c: UDP flows: one per client address and port, each with its own
 * socket connected to the backend of the client's family */
#include "autoconfig.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dualproxy.h"
#include "listener.h"
#include "log.h"
#include "sock.h"
#include "udp.h"

#define UDP_BATCH 32              /* datagrams per recvmmsg/sendmmsg */
#define UDP_BUF (64 * 1024)       /* one datagram (at most 65,527 bytes), or a GRO batch */
#define UDP_ROUNDS 4              /* batches per wake-up, for fairness */
#define UDP_DRAIN_IDLE 2.0        /* seconds: while draining, a flow this idle is over */
#define FLOW_FDS 1                /* a flow holds its one socket to the backend */
#define GSO_SEGMENTS_MAX 64       /* the kernel's limit of segments per send */
#define GSO_BYTES_MAX 65000       /* payload of one UDP_SEGMENT send, under 64 KiB */
#define GSO_SIZE_MAX 1452         /* datagrams coalesced at most this large: they fit a
				     1,500-byte MTU with IPv6 and UDP headers */
/* Datagrams are served with the live TCP connections (relay.c), after the
 * timers and before accepting. */
#define UDP_PRIORITY (EV_MINPRI + 1)
#define UDP_RCVBUF (4 * 1024 * 1024) /* asked for each socket; the kernel caps it at
					 net.core.rmem_max */
#define UDP_CMSG_SPACE (CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(int)) + \
			CMSG_SPACE(sizeof(uint32_t)))

/* Room for the ancillary data of one datagram, aligned as cmsghdr wants. */
union cmsg_buf {
	char buf[UDP_CMSG_SPACE];
	struct cmsghdr align;
};

/* The socket address of a client, as small as it can be. */
union client_addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

/* One client address and port of one listener. */
struct udp_flow {
	struct hnode node;               /* in endpoint.flows, by client address */
	TAILQ_ENTRY(udp_flow) lru;       /* in endpoint.unreplied or .replied */
	struct udp_endpoint *ep;
	struct service *svc;             /* a reference */
	struct service_stats *stats;     /* a reference */
	struct stats_counters *counters; /* udp, the client's family, inside stats */
	const struct addr *backend_addr; /* inside svc */
	union client_addr client;
	socklen_t client_len;
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} local;                         /* the address the client sent to */
	unsigned ifindex;                /* where it came in (IPv6 link-local) */
	uint32_t kernel_drops;           /* SO_RXQ_OVFL of fd when last read */
	int fd;                          /* connected to the backend, owned */
	ev_io io;                        /* replies */
	ev_tstamp started, last_active;
	uint64_t bytes[STATS_DIR_COUNT], datagrams[STATS_DIR_COUNT];
	struct loop_socket self;         /* fd, to see it come back (a loop) */
	bool replied;                    /* the backend has answered */
	bool source_counted;
	enum end_reason reason;
};

TAILQ_HEAD(flow_list, udp_flow);

/* The flows of one UDP listener. */
struct udp_endpoint {
	struct listener *l;
	struct htab flows;
	struct flow_list unreplied, replied; /* oldest activity first */
	ev_timer expiry;                 /* the next idle deadline */
	bool wildcard;                   /* listens on 0.0.0.0 or [::]: replies name their source */
	uint32_t kernel_drops;           /* SO_RXQ_OVFL of the listener when last read */
};

/* One datagram of a batch: where it came from and where it went. */
struct slot {
	struct addr from;
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} dst;                /* the address it was sent to, if has_dst */
	bool has_dst;
	unsigned ifindex;
	int gso_size;         /* UDP GRO: the size of its segments; 0: one datagram */
	bool has_drops;
	uint32_t drops;       /* SO_RXQ_OVFL: datagrams the kernel dropped at this socket */
	union cmsg_buf cmsg;
};

/* Datagrams staged for one socket: sent together with sendmmsg. An entry
 * is one datagram, or with segmentation offload a run of them of one size
 * (the last may be shorter) that the kernel splits (UDP_SEGMENT): one trip
 * through the send path for the lot. */
struct out {
	int fd;
	enum stats_dir dir;
	struct udp_flow *f;        /* whose counters they count in */
	int n;                     /* entries */
	int n_iov;                 /* u->tx_iov used; an entry's are contiguous */
	int first_iov[UDP_BATCH];  /* of each entry */
	int n_seg[UDP_BATCH];      /* datagrams in each entry */
	int gso[UDP_BATCH];        /* their UDP_SEGMENT size, 0 for one datagram */
	size_t len[UDP_BATCH];     /* bytes of each entry */
	size_t ctl[UDP_BATCH];     /* control bytes before a UDP_SEGMENT header */
};

/* The buffers all flows share (the loop serves one batch at a time). */
struct udp_shared {
	char *buf;                       /* UDP_BATCH x UDP_BUF */
	struct mmsghdr rx[UDP_BATCH];
	struct iovec rx_iov[UDP_BATCH];
	struct slot slot[UDP_BATCH];
	struct mmsghdr tx[UDP_BATCH];
	struct iovec tx_iov[UDP_BATCH];  /* one per datagram staged */
	union cmsg_buf tx_cmsg[UDP_BATCH];
	bool no_gso;                     /* UDP_SEGMENT failed once: send one by one */
	bool no_gro;                     /* so, GRO is switched off on new sockets */
};

static void on_datagrams(struct ev_loop *loop, ev_io *w, int revents);
static void on_reply(struct ev_loop *loop, ev_io *w, int revents);
static void on_expiry(struct ev_loop *loop, ev_timer *w, int revents);
static void flow_finish(struct udp_flow *f, enum end_reason why);

/* ---- sockets ---- */

/* What every UDP socket of ours asks for: a large receive buffer for
 * bursts, and the count of datagrams the kernel still had to drop
 * (SO_RXQ_OVFL), so that no loss goes uncounted. */
static void common_options(int fd)
{
	int one = 1, size = UDP_RCVBUF;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof(one));
}

int udp_socket_options(int fd, const struct addr *a)
{
	int one = 1;
	common_options(fd);
	if (addr_family(a) == AF_INET6) {
		if (setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one)) < 0)
			return -1;
	} else if (setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)) < 0) {
		return -1;
	}
	/* batches of a sender's datagrams in one read where the kernel can */
	setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one));
	return 0;
}

static struct udp_shared *shared(struct dualproxy *dp)
{
	if (dp->udp != NULL)
		return dp->udp;
	struct udp_shared *u = calloc(1, sizeof(*u));
	if (u == NULL || (u->buf = malloc((size_t)UDP_BATCH * UDP_BUF)) == NULL) {
		free(u);
		return NULL;
	}
	for (int i = 0; i < UDP_BATCH; i++) {
		u->rx_iov[i].iov_base = u->buf + (size_t)i * UDP_BUF;
		u->rx[i].msg_hdr.msg_iov = &u->rx_iov[i];
		u->rx[i].msg_hdr.msg_iovlen = 1;
	}
	dp->udp = u;
	return u;
}

int udp_attach(struct listener *l)
{
	struct udp_endpoint *ep = calloc(1, sizeof(*ep));
	if (ep == NULL || shared(l->dp) == NULL) {
		free(ep);
		return -1;
	}
	ep->l = l;
	ep->wildcard = addr_is_wildcard(&l->addr);
	TAILQ_INIT(&ep->unreplied);
	TAILQ_INIT(&ep->replied);
	ev_init(&ep->expiry, on_expiry);
	ep->expiry.data = ep;
	ev_io_init(&l->io, on_datagrams, l->fd, EV_READ);
	ev_set_priority(&l->io, UDP_PRIORITY);
	l->io.data = l;
	l->udp = ep;
	return 0;
}

static void end_all(struct udp_endpoint *ep, enum end_reason why)
{
	while (!TAILQ_EMPTY(&ep->unreplied))
		flow_finish(TAILQ_FIRST(&ep->unreplied), why);
	while (!TAILQ_EMPTY(&ep->replied))
		flow_finish(TAILQ_FIRST(&ep->replied), why);
}

void udp_detach(struct listener *l, enum end_reason why)
{
	struct udp_endpoint *ep = l->udp;
	ev_io_stop(l->dp->loop, &l->io);
	end_all(ep, why);
	ev_timer_stop(l->dp->loop, &ep->expiry);
	htab_free(&ep->flows);
	free(ep);
	l->udp = NULL;
}

/* ---- idle flows ---- */

static ev_tstamp idle_of(const struct udp_flow *f)
{
	ev_tstamp idle = f->replied ? f->svc->udp_idle_replied : f->svc->udp_idle_unreplied;
	if (f->ep->l->dp->admission.draining && idle > UDP_DRAIN_IDLE)
		idle = UDP_DRAIN_IDLE;
	return idle;
}

/* Sets the timer for the earliest deadline of the two lists' oldest flows.
 * (A flow whose service a reload gave a shorter timeout than an older
 * flow's can outlive its deadline until that older one is due.) */
static void arm_expiry(struct udp_endpoint *ep)
{
	struct ev_loop *loop = ep->l->dp->loop;
	struct udp_flow *heads[] = { TAILQ_FIRST(&ep->unreplied), TAILQ_FIRST(&ep->replied) };
	ev_tstamp next = -1;

	for (size_t i = 0; i < 2; i++) {
		if (heads[i] == NULL)
			continue;
		ev_tstamp due = heads[i]->last_active + idle_of(heads[i]);
		if (next < 0 || due < next)
			next = due;
	}
	ev_timer_stop(loop, &ep->expiry);
	if (next < 0)
		return;
	ev_tstamp after = next - ev_now(loop);
	ev_timer_set(&ep->expiry, after > 0 ? after : 0, 0.);
	ev_timer_start(loop, &ep->expiry);
}

static void on_expiry(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct udp_endpoint *ep = w->data;
	struct flow_list *lists[] = { &ep->unreplied, &ep->replied };
	(void)revents;

	for (size_t i = 0; i < 2; i++) {
		struct udp_flow *f;
		while ((f = TAILQ_FIRST(lists[i])) != NULL &&
		       f->last_active + idle_of(f) <= ev_now(loop))
			flow_finish(f, END_IDLE_TIMEOUT);
	}
	arm_expiry(ep);
}

/* Moves f to the end of its list: it was just active. */
static void touch(struct udp_flow *f, bool reply)
{
	struct udp_endpoint *ep = f->ep;
	TAILQ_REMOVE(f->replied ? &ep->replied : &ep->unreplied, f, lru);
	f->replied |= reply;
	f->last_active = ev_now(ep->l->dp->loop);
	TAILQ_INSERT_TAIL(f->replied ? &ep->replied : &ep->unreplied, f, lru);
}

void udp_drain(struct dualproxy *dp)
{
	struct listener *l;
	LIST_FOREACH(l, &dp->listeners, link)
		if (l->udp != NULL)
			arm_expiry(l->udp);
}

void udp_close_all(struct dualproxy *dp)
{
	struct listener *l;
	LIST_FOREACH(l, &dp->listeners, link)
		if (l->udp != NULL)
			end_all(l->udp, END_SHUTDOWN);
}

void udp_cleanup(struct dualproxy *dp)
{
	struct udp_shared *u = dp->udp;
	if (u == NULL)
		return;
	free(u->buf);
	free(u);
	dp->udp = NULL;
}

/* ---- flows ---- */

static bool same_client(const struct hnode *n, const void *key)
{
	const struct udp_flow *f = (const struct udp_flow *)n;
	unsigned char k[ADDR_KEY_MAX];
	size_t len = addr_key_sa(&f->client.sa, k);
	const unsigned char *want = key;
	return len == want[ADDR_KEY_MAX] && memcmp(k, want, len) == 0;
}

/* The flow of a client, or NULL. key: addr_key, its length in the last byte. */
static struct udp_flow *find(struct udp_endpoint *ep, const struct addr *client,
			     unsigned char key[ADDR_KEY_MAX + 1], uint64_t *hash)
{
	size_t len = addr_key(client, key);
	key[ADDR_KEY_MAX] = (unsigned char)len;
	*hash = htab_hash(key, len);
	return (struct udp_flow *)htab_find(&ep->flows, *hash, same_client, key);
}

static void flow_finish(struct udp_flow *f, enum end_reason why)
{
	struct udp_endpoint *ep = f->ep;
	struct dualproxy *dp = ep->l->dp;
	char c[ADDR_STRLEN], b[ADDR_STRLEN];
	struct addr client;

	addr_from_sockaddr(&client, &f->client.sa, f->client_len);
	htab_remove(&ep->flows, &f->node);
	TAILQ_REMOVE(f->replied ? &ep->replied : &ep->unreplied, f, lru);
	ev_io_stop(dp->loop, &f->io);
	loops_remove(&dp->admission.loops, &f->self);
	close(f->fd);
	log_debug("flow service=%s client=%s backend=%s up=%llu down=%llu datagrams_up=%llu "
		  "datagrams_down=%llu duration=%.3fs end=%s",
		  f->svc->name, addr_format(&client, c), addr_format(f->backend_addr, b),
		  (unsigned long long)f->bytes[STATS_UP], (unsigned long long)f->bytes[STATS_DOWN],
		  (unsigned long long)f->datagrams[STATS_UP],
		  (unsigned long long)f->datagrams[STATS_DOWN], ev_now(dp->loop) - f->started,
		  reason_name(why));
	assert(f->counters->active > 0);
	f->counters->active--;
	f->counters->ended[why]++;
	bool source_counted = f->source_counted;
	stats_unref(&dp->stats, f->stats);
	service_unref(f->svc);
	free(f);
	admission_release(&dp->admission, &client, FLOW_FDS, source_counted);
}

/* A socket connected to the backend for the client's family; -1 with errno. */
static int connect_backend(const struct addr *backend, bool gro)
{
	int one = 1;
	int fd = socket(addr_family(backend), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	common_options(fd);
	if (gro)
		setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one));
	if (connect(fd, &backend->u.sa, backend->len) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* A new client: admitted, it gets a flow; else its datagram is dropped
 * and counted. Returns the flow, or NULL. */
static struct udp_flow *flow_new(struct udp_endpoint *ep, const struct slot *s,
				 uint64_t hash)
{
	struct listener *l = ep->l;
	struct dualproxy *dp = l->dp;
	struct stats_counters *counters = stats_family(l->stats, STATS_UDP, addr_family(&s->from));
	bool source_counted;
	char c[ADDR_STRLEN], b[ADDR_STRLEN];
	enum admit_result res = admission_check(&dp->admission, l->service, &s->from,
						FLOW_FDS, &source_counted);
	if (res != ADMIT_OK) {
		counters->refused[res]++;
		log_debug("%s service=%s client=%s (udp)", admission_result_name(res),
			  l->service->name, addr_format(&s->from, c));
		return NULL;
	}
	const struct addr *backend = service_backend(l->service, addr_family(&s->from));
	struct udp_flow *f = calloc(1, sizeof(*f));
	int fd = f != NULL ? connect_backend(backend, !dp->udp->no_gro) : -1;
	if (fd < 0) {
		int err = f != NULL ? errno : ENOMEM;
		free(f);
		admission_release(&dp->admission, &s->from, FLOW_FDS, source_counted);
		if (err == EMFILE || err == ENFILE || err == ENOMEM || err == ENOBUFS) {
			counters->dropped[STATS_UP][DROP_NO_SOCKET]++;
			log_warn("[%s] client %s (udp): no socket for a new flow: %s",
				 l->service->name, addr_format(&s->from, c), strerror(err));
		} else {
			counters->opened++;
			counters->ended[reason_of_connect_error(err)]++;
			log_warn("[%s] client %s (udp): backend %s: %s", l->service->name,
				 addr_format(&s->from, c), addr_format(backend, b), strerror(err));
		}
		return NULL;
	}
	f->ep = ep;
	f->svc = service_ref(l->service);
	f->stats = stats_hold(l->stats);
	f->counters = counters;
	f->backend_addr = backend;
	memcpy(&f->client, &s->from.u.ss, s->from.len);
	f->client_len = s->from.len;
	/* the address the client sent to: the listener's, or from IP_PKTINFO */
	if (addr_family(&l->addr) == AF_INET6)
		f->local.v6 = s->has_dst ? s->dst.v6 : l->addr.u.in6.sin6_addr;
	else
		f->local.v4 = s->has_dst ? s->dst.v4 : l->addr.u.in.sin_addr;
	f->ifindex = s->ifindex;
	f->fd = fd;
	f->source_counted = source_counted;
	f->started = f->last_active = ev_now(dp->loop);
	loops_add(&dp->admission.loops, &f->self, fd, backend);
	ev_io_init(&f->io, on_reply, fd, EV_READ);
	ev_set_priority(&f->io, UDP_PRIORITY);
	f->io.data = f;
	if (htab_insert(&ep->flows, &f->node, hash) < 0) {
		loops_remove(&dp->admission.loops, &f->self);
		close(fd);
		stats_unref(&dp->stats, f->stats);
		service_unref(f->svc);
		free(f);
		admission_release(&dp->admission, &s->from, FLOW_FDS, source_counted);
		counters->dropped[STATS_UP][DROP_NO_SOCKET]++;
		return NULL;
	}
	ev_io_start(dp->loop, &f->io);
	TAILQ_INSERT_TAIL(&ep->unreplied, f, lru);
	counters->opened++;
	counters->active++;
	if (!ev_is_active(&ep->expiry))
		arm_expiry(ep);
	return f;
}

/* ---- batches ---- */

static int segments(size_t len, int gso_size)
{
	if (gso_size <= 0 || len == 0)
		return 1;
	return (int)((len + (size_t)gso_size - 1) / (size_t)gso_size);
}

/* Reads the ancillary data of a received datagram into s. */
static void parse_cmsgs(struct msghdr *m, struct slot *s)
{
	s->gso_size = 0;
	s->ifindex = 0;
	s->has_dst = false;
	s->has_drops = false;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
		if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
			struct in_pktinfo pi;
			memcpy(&pi, CMSG_DATA(c), sizeof(pi));
			s->dst.v4 = pi.ipi_addr;
			s->ifindex = (unsigned)pi.ipi_ifindex;
			s->has_dst = true;
		} else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
			struct in6_pktinfo pi;
			memcpy(&pi, CMSG_DATA(c), sizeof(pi));
			s->dst.v6 = pi.ipi6_addr;
			s->ifindex = pi.ipi6_ifindex;
			s->has_dst = true;
		} else if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
			memcpy(&s->gso_size, CMSG_DATA(c), sizeof(int));
		} else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
			memcpy(&s->drops, CMSG_DATA(c), sizeof(s->drops));
			s->has_drops = true;
		}
	}
}

/* Counts what the kernel dropped at a socket since it was last read: the
 * SO_RXQ_OVFL figure the last datagram of a batch carried. */
static void count_kernel_drops(const struct slot *s, uint32_t *last, uint64_t *counter)
{
	if (!s->has_drops)
		return;
	*counter += (uint32_t)(s->drops - *last);
	*last = s->drops;
}

/* Receives up to UDP_BATCH datagrams from fd into the shared slots;
 * returns how many, or -1 with errno. with_names: record their sources. */
static int receive_batch(struct udp_shared *u, int fd, bool with_names)
{
	for (int i = 0; i < UDP_BATCH; i++) {
		struct msghdr *m = &u->rx[i].msg_hdr;
		u->rx_iov[i].iov_len = UDP_BUF;
		m->msg_name = with_names ? &u->slot[i].from.u.ss : NULL;
		m->msg_namelen = with_names ? sizeof(u->slot[i].from.u.ss) : 0;
		m->msg_control = u->slot[i].cmsg.buf;
		m->msg_controllen = sizeof(u->slot[i].cmsg.buf);
		m->msg_flags = 0;
	}
	int n;
	do
		n = recvmmsg(fd, u->rx, UDP_BATCH, MSG_DONTWAIT, NULL);
	while (n < 0 && errno == EINTR);
	return n;
}

/* Segmentation offload failed: from now on datagrams go one by one, and
 * new sockets do not ask for GRO batches. */
static void give_up_gso(struct udp_shared *u)
{
	if (u->no_gso)
		return;
	u->no_gso = u->no_gro = true;
	log_info("UDP segmentation offload unavailable here: sending datagrams one by one");
}

/* Counts n datagrams of o's flow sent, bytes in all. */
static void count_sent(struct out *o, size_t bytes, uint64_t n)
{
	struct stats_counters *c = o->f->counters;
	c->bytes[o->dir] += bytes;
	c->datagrams[o->dir] += n;
	o->f->bytes[o->dir] += bytes;
	o->f->datagrams[o->dir] += n;
}

/* Counts n datagrams of o's flow lost to err. */
static void count_dropped(struct out *o, uint64_t n, int err)
{
	enum drop_reason why = err == EAGAIN || err == ENOBUFS ? DROP_BUFFER_FULL : DROP_ERROR;
	o->f->counters->dropped[o->dir][why] += n;
}

/* Entry i could not go as one segmented send: sends its datagrams one by
 * one (without the UDP_SEGMENT header). Returns the errno that ends the
 * flow, or 0. */
static int send_split(struct udp_shared *u, struct out *o, int i)
{
	struct msghdr m = u->tx[i].msg_hdr;
	struct iovec *iov = m.msg_iov;
	size_t total = o->len[i];
	struct iovec piece;

	m.msg_controllen = o->ctl[i];
	if (m.msg_controllen == 0)
		m.msg_control = NULL;
	m.msg_iov = &piece;
	m.msg_iovlen = 1;
	/* the payload as datagrams of gso bytes, whatever its iovecs */
	for (size_t at = 0, k = 0, in = 0; at < total;) {
		size_t size = total - at < (size_t)o->gso[i] ? total - at : (size_t)o->gso[i];
		piece.iov_base = (char *)iov[k].iov_base + in;
		piece.iov_len = size; /* iovecs of coalesced runs hold one datagram each */
		ssize_t r = sendmsg(o->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
		int err = r < 0 ? errno : 0;
		if (err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH)
			return err;
		if (err != 0)
			count_dropped(o, 1, err);
		else
			count_sent(o, size, 1);
		at += size;
		in += size;
		if (in >= iov[k].iov_len) {
			k++;
			in = 0;
		}
	}
	return 0;
}

/* Sends what o holds; counts what went and what was dropped. Returns the
 * errno that ends the flow (the backend's ICMP unreachable), or 0. */
static int out_flush(struct udp_shared *u, struct out *o)
{
	int done = 0, end = 0;

	while (done < o->n && end == 0) {
		int r = sendmmsg(o->fd, u->tx + done, (unsigned)(o->n - done),
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		for (int i = done; i < done + (r > 0 ? r : 0); i++)
			count_sent(o, o->len[i], (uint64_t)o->n_seg[i]);
		if (r > 0) {
			done += r;
			continue;
		}
		int err = r < 0 ? errno : EIO;
		if ((err == EIO || err == EINVAL) && o->gso[done] > 0) {
			/* EIO: the device cannot segment at all; EINVAL: these
			 * datagrams do not fit its MTU whole */
			if (err == EIO)
				give_up_gso(u);
			end = send_split(u, o, done);
		} else if (err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH) {
			end = err;
		} else {
			count_dropped(o, (uint64_t)o->n_seg[done], err);
		}
		done++; /* that one is lost (or the flow ends); the rest may still go */
	}
	o->n = o->n_iov = 0;
	return end;
}

/* The pktinfo header of a reply, naming the address the client wrote to. */
static size_t add_pktinfo(char *ctl, const struct udp_flow *f)
{
	struct cmsghdr *c = (struct cmsghdr *)ctl;
	if (f->client.sa.sa_family == AF_INET6) {
		struct in6_pktinfo pi = { .ipi6_addr = f->local.v6, .ipi6_ifindex = f->ifindex };
		c->cmsg_level = IPPROTO_IPV6;
		c->cmsg_type = IPV6_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		return CMSG_SPACE(sizeof(pi));
	}
	struct in_pktinfo pi = { .ipi_spec_dst = f->local.v4 };
	c->cmsg_level = IPPROTO_IP;
	c->cmsg_type = IP_PKTINFO;
	c->cmsg_len = CMSG_LEN(sizeof(pi));
	memcpy(CMSG_DATA(c), &pi, sizeof(pi));
	return CMSG_SPACE(sizeof(pi));
}

/* Gives entry i a UDP_SEGMENT header of gso bytes. */
static void set_gso(struct udp_shared *u, struct out *o, int i, int gso)
{
	struct msghdr *m = &u->tx[i].msg_hdr;
	struct cmsghdr *c = (struct cmsghdr *)(u->tx_cmsg[i].buf + o->ctl[i]);
	uint16_t size = (uint16_t)gso;
	c->cmsg_level = SOL_UDP;
	c->cmsg_type = UDP_SEGMENT;
	c->cmsg_len = CMSG_LEN(sizeof(size));
	memcpy(CMSG_DATA(c), &size, sizeof(size));
	m->msg_control = u->tx_cmsg[i].buf;
	m->msg_controllen = o->ctl[i] + CMSG_SPACE(sizeof(size));
	o->gso[i] = gso;
}

/* True when a datagram of len bytes can join o's last entry: a run of
 * datagrams of that very size, with room left. */
static bool joins_last(const struct udp_shared *u, const struct out *o, size_t len)
{
	if (u->no_gso || o->n == 0 || len == 0 || len > GSO_SIZE_MAX)
		return false;
	int i = o->n - 1;
	size_t run = (size_t)(o->gso[i] > 0 ? o->gso[i] : (int)o->len[i]);
	return run == len && o->len[i] == (size_t)o->n_seg[i] * len &&
	       o->n_seg[i] < GSO_SEGMENTS_MAX && o->len[i] + len <= GSO_BYTES_MAX &&
	       o->first_iov[i] + o->n_seg[i] == o->n_iov;
}

/* Stages one datagram (or, with gso_size, a batch of segments the kernel
 * made) of len bytes at data for o's socket, without copying: joined to
 * the run before it where it can be, towards a client of a wildcard
 * listener with its source address (IP_PKTINFO). Flushes when the batch is
 * full; returns what out_flush returned then, else 0. */
static int out_add(struct udp_shared *u, struct out *o, char *data, size_t len, int gso_size)
{
	int err = 0;
	bool batch = gso_size > 0 && len > (size_t)gso_size;

	if (u->no_gso && batch) {
		/* one entry per segment */
		for (size_t at = 0; at < len && err == 0; at += (size_t)gso_size) {
			size_t piece = len - at < (size_t)gso_size ? len - at : (size_t)gso_size;
			err = out_add(u, o, data + at, piece, 0);
		}
		return err;
	}
	if (o->n_iov == UDP_BATCH && (err = out_flush(u, o)) != 0)
		return err;
	struct iovec *v = &u->tx_iov[o->n_iov];
	v->iov_base = data;
	v->iov_len = len;
	if (!batch && joins_last(u, o, len)) {
		int i = o->n - 1;
		o->n_iov++;
		o->len[i] += len;
		o->n_seg[i]++;
		u->tx[i].msg_hdr.msg_iovlen++;
		if (o->gso[i] == 0)
			set_gso(u, o, i, (int)len);
		return 0;
	}
	if (o->n == UDP_BATCH && (err = out_flush(u, o)) != 0)
		return err;
	int i = o->n++;
	struct msghdr *m = &u->tx[i].msg_hdr;
	o->first_iov[i] = o->n_iov;
	u->tx_iov[o->n_iov++] = (struct iovec){ data, len };
	m->msg_iov = &u->tx_iov[o->first_iov[i]];
	m->msg_iovlen = 1;
	m->msg_name = o->dir == STATS_DOWN ? (void *)&o->f->client : NULL;
	m->msg_namelen = o->dir == STATS_DOWN ? o->f->client_len : 0;
	o->ctl[i] = o->dir == STATS_DOWN && o->f->ep->wildcard ?
			    add_pktinfo(u->tx_cmsg[i].buf, o->f) : 0;
	m->msg_control = o->ctl[i] > 0 ? u->tx_cmsg[i].buf : NULL;
	m->msg_controllen = o->ctl[i];
	o->len[i] = len;
	o->n_seg[i] = batch ? segments(len, gso_size) : 1;
	o->gso[i] = 0;
	if (batch)
		set_gso(u, o, i, gso_size);
	return 0;
}

/* How a connected flow socket's error ends the flow. */
static enum end_reason reason_of_socket_error(int err)
{
	return err == ECONNREFUSED ? END_CONNECT_REFUSED : END_CONNECT_UNREACHABLE;
}

/* ---- client to backend ---- */

/* Sends what is staged for the pending flow; false if that ended it. */
static bool flush_up(struct udp_shared *u, struct out *o)
{
	int err = out_flush(u, o);
	if (err != 0) {
		flow_finish(o->f, reason_of_socket_error(err));
		return false;
	}
	return true;
}

/* A client of a wildcard listener may send to another of the host's
 * addresses with the same socket: replies leave from the address of its
 * latest datagram. */
static void follow_destination(struct udp_flow *f, const struct slot *s)
{
	if (f->client.sa.sa_family == AF_INET6) {
		if (memcmp(&f->local.v6, &s->dst.v6, sizeof(f->local.v6)) != 0 ||
		    f->ifindex != s->ifindex) {
			f->local.v6 = s->dst.v6;
			f->ifindex = s->ifindex;
		}
	} else if (f->local.v4.s_addr != s->dst.v4.s_addr) {
		f->local.v4 = s->dst.v4;
	}
}

static void on_datagrams(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = w->data;
	struct udp_endpoint *ep = l->udp;
	struct udp_shared *u = l->dp->udp;
	(void)loop;
	(void)revents;

	for (int round = 0; round < UDP_ROUNDS; round++) {
		int n = receive_batch(u, l->fd, true);
		if (n <= 0)
			return; /* EAGAIN; errors of an unconnected socket are not ours */
		struct out o = { .dir = STATS_UP };
		for (int j = 0; j < n; j++) {
			struct msghdr *m = &u->rx[j].msg_hdr;
			struct slot *s = &u->slot[j];
			size_t len = u->rx[j].msg_len;
			unsigned char key[ADDR_KEY_MAX + 1];
			uint64_t hash = 0;

			s->from.len = m->msg_namelen;
			parse_cmsgs(m, s);
			if (o.n > 0 && (o.f->client_len != s->from.len ||
					memcmp(&o.f->client, &s->from.u.ss, s->from.len) != 0))
				flush_up(u, &o); /* another client: send the last one's first */
			struct udp_flow *f = o.n > 0 ? o.f : find(ep, &s->from, key, &hash);
			if (m->msg_flags & MSG_TRUNC) {
				struct stats_counters *c = f != NULL ? f->counters :
					stats_family(l->stats, STATS_UDP, addr_family(&s->from));
				c->dropped[STATS_UP][DROP_TRUNCATED] +=
					(uint64_t)segments(len, s->gso_size);
				continue;
			}
			if (f == NULL && (f = flow_new(ep, s, hash)) == NULL) /* hash from find() */
				continue;
			touch(f, false);
			if (s->has_dst && ep->wildcard)
				follow_destination(f, s);
			o.f = f;
			o.fd = f->fd;
			int err = out_add(u, &o, u->rx_iov[j].iov_base, len, s->gso_size);
			if (err != 0) {
				flow_finish(f, reason_of_socket_error(err));
				o.n = 0;
			}
		}
		if (o.n > 0)
			flush_up(u, &o);
		count_kernel_drops(&u->slot[n - 1], &ep->kernel_drops,
				   &stats_family(l->stats, STATS_UDP,
						 addr_family(&l->addr))->dropped[STATS_UP][DROP_BUFFER_FULL]);
		if (n < UDP_BATCH)
			return;
	}
}

/* ---- backend to client ---- */

static void on_reply(struct ev_loop *loop, ev_io *w, int revents)
{
	struct udp_flow *f = w->data;
	struct udp_shared *u = f->ep->l->dp->udp;
	(void)loop;
	(void)revents;

	for (int round = 0; round < UDP_ROUNDS; round++) {
		int n = receive_batch(u, f->fd, false);
		if (n < 0) {
			if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH)
				flow_finish(f, reason_of_socket_error(errno));
			return;
		}
		if (n == 0)
			return;
		struct out o = { .fd = f->ep->l->fd, .dir = STATS_DOWN, .f = f };
		for (int j = 0; j < n; j++) {
			struct msghdr *m = &u->rx[j].msg_hdr;
			struct slot *s = &u->slot[j];
			size_t len = u->rx[j].msg_len;
			parse_cmsgs(m, s);
			if (m->msg_flags & MSG_TRUNC) {
				f->counters->dropped[STATS_DOWN][DROP_TRUNCATED] +=
					(uint64_t)segments(len, s->gso_size);
				continue;
			}
			out_add(u, &o, u->rx_iov[j].iov_base, len, s->gso_size);
		}
		touch(f, true);
		count_kernel_drops(&u->slot[n - 1], &f->kernel_drops,
				   &f->counters->dropped[STATS_DOWN][DROP_BUFFER_FULL]);
		out_flush(u, &o); /* errors towards a client do not end the flow */
		if (n < UDP_BATCH)
			return;
	}
}
