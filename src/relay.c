/* relay.c: one client connection and its backend connection, pumped both ways */
#include "autoconfig.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend.h"
#include "dualproxy.h"
#include "listener.h"
#include "log.h"
#include "proxyproto.h"
#include "relay.h"

#define PIPE_CAPACITY (64 * 1024) /* Linux default pipe size */
#define PUMP_ROUNDS 4             /* read/write rounds per wake-up, for fairness */
#define STALL_CHECK 1.0           /* seconds between checks of a side that is not read */
#define RESET_LINGER 1.0          /* seconds a reset waits for the survivor's data */
#define RESET_POLL 0.01           /* seconds between checks of the survivor's send queue */

enum relay_state {
	RELAY_CONNECTING, /* backend connect in progress; the client is not read */
	RELAY_OPEN,       /* relaying both ways */
	RELAY_RESETTING,  /* one side failed; the other gets what was read from it
			     before the failure, then a reset */
};

/* Outcome of one read or write attempt. */
enum io_result {
	IO_OK,    /* bytes moved */
	IO_SHORT, /* bytes moved, and the source had fewer than asked: it is most
		     likely empty now, so waiting beats another read to learn so */
	IO_AGAIN, /* would block */
	IO_EOF,   /* the peer sent FIN */
	IO_ERROR, /* the relay must end; r->reason is set */
};

struct relay_end {
	int fd;     /* owned */
	int events; /* EV_READ|EV_WRITE currently registered */
	ev_io io;
	/* in dp->ready while ready_events != 0 */
	int ready_events;
	struct relay_end *ready_next, **ready_prevp;
};

/* One direction: bytes read from `from` and written to `to`. */
struct flow {
	struct relay_end *from, *to;
	char *buf;          /* read but not yet written; only under backpressure */
	size_t off, len;    /* unwritten bytes are buf[off..len) */
	int pipe[2];        /* splice mode when pipe[0] >= 0 */
	size_t in_pipe;     /* bytes waiting in the pipe */
	uint64_t bytes;     /* payload bytes written to `to` */
	uint64_t *counter;  /* the service's bytes_total of this direction */
	size_t uncounted;   /* leading bytes of buf that are not payload (PROXY header) */
	bool eof;           /* `from` sent FIN */
	bool shut;          /* FIN passed on to `to` */
};

struct relay {
	/* configuration */
	struct dualproxy *dp;
	struct config *cfg;          /* reference that keeps svc alive */
	const struct service *svc;
	struct service_stats *stats;
	struct addr client_addr;
	const struct addr *backend_addr; /* inside svc */
	/* runtime */
	enum relay_state state;
	struct relay_end client, backend;
	struct flow up;              /* client to backend */
	struct flow down;            /* backend to client */
	ev_timer timer;              /* connect_timeout, then idle_timeout (checking
					stalled sides every STALL_CHECK), then RESET_POLL */
	ev_tstamp started, last_active;
	ev_tstamp reset_deadline;    /* RELAY_RESETTING: reset by then at the latest */
	bool stall_check;            /* the timer is set for a stall check */
	const char *reason;          /* why it ended, for the log */
	bool rst_client, rst_backend; /* close that side with RST */
	bool source_counted;         /* holds a count in dp->sources */
	struct relay *prev, *next;   /* in dp->relays */
};

static void on_io(struct ev_loop *loop, ev_io *w, int revents);
static void on_ready(struct ev_loop *loop, ev_check *w, int revents);
static void on_timer(struct ev_loop *loop, ev_timer *w, int revents);

static const char *reset_reason(const struct relay *r, const struct relay_end *e)
{
	return e == &r->client ? "client-reset" : "backend-reset";
}

/* Close with RST instead of FIN. */
static void set_linger_zero(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

static size_t pending(const struct flow *f)
{
	return f->pipe[0] >= 0 ? f->in_pipe : f->len - f->off;
}

/* Records why the relay ends; an error on one end resets the other. */
static enum io_result io_failed(struct relay *r, struct relay_end *e, int err)
{
	if (err == ECONNRESET || err == EPIPE || err == ETIMEDOUT ||
	    err == EHOSTUNREACH || err == ENETUNREACH) {
		r->reason = reset_reason(r, e);
		if (e == &r->backend)
			r->stats->backend_errors[BACKEND_RESET]++;
	} else {
		char a[ADDR_STRLEN];
		log_warn("[%s] client %s: %s", r->svc->name,
			 addr_format(&r->client_addr, a), strerror(err));
		r->reason = "error";
	}
	if (e == &r->client)
		r->rst_backend = true;
	else
		r->rst_client = true;
	return IO_ERROR;
}

/* Writes what is pending in f to f->to. */
static enum io_result flush(struct relay *r, struct flow *f)
{
	while (pending(f) > 0) {
		ssize_t n;
		if (f->pipe[0] >= 0)
			n = splice(f->pipe[0], NULL, f->to->fd, NULL, f->in_pipe,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		else
			n = send(f->to->fd, f->buf + f->off, f->len - f->off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return IO_AGAIN;
			return io_failed(r, f->to, errno);
		}
		size_t payload = (size_t)n;
		if (f->uncounted > 0) {
			size_t skip = f->uncounted < payload ? f->uncounted : payload;
			f->uncounted -= skip;
			payload -= skip;
		}
		f->bytes += payload;
		*f->counter += payload;
		if (f->pipe[0] >= 0) {
			f->in_pipe -= (size_t)n;
		} else {
			f->off += (size_t)n;
			if (f->off == f->len) {
				free(f->buf); /* idle connections hold no buffer */
				f->buf = NULL;
				f->off = f->len = 0;
			}
		}
	}
	return IO_OK;
}

/* Keeps the unsent tail of a chunk for later; called under backpressure. */
static enum io_result keep_tail(struct relay *r, struct flow *f, const char *data,
				size_t n)
{
	f->buf = malloc(n);
	if (f->buf == NULL) {
		log_warn("[%s] out of memory for a relay buffer", r->svc->name);
		r->reason = "error";
		r->rst_client = r->rst_backend = true;
		return IO_ERROR;
	}
	memcpy(f->buf, data, n);
	f->off = 0;
	f->len = n;
	return IO_OK;
}

/* Reads from f->from into the shared chunk and writes it on at once; the
 * unwritten tail, if any, is kept in f->buf. Only called with nothing pending. */
static enum io_result fill_buffered(struct relay *r, struct flow *f)
{
	char *chunk = r->dp->chunk;
	ssize_t n;

	do
		n = recv(f->from->fd, chunk, RELAY_CHUNK, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return IO_EOF;
	if (n < 0)
		return errno == EAGAIN ? IO_AGAIN : io_failed(r, f->from, errno);

	ssize_t sent;
	do
		sent = send(f->to->fd, chunk, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (sent < 0 && errno == EINTR);
	if (sent < 0) {
		if (errno != EAGAIN)
			return io_failed(r, f->to, errno);
		sent = 0;
	}
	f->bytes += (size_t)sent;
	*f->counter += (size_t)sent;
	if (sent < n)
		return keep_tail(r, f, chunk + sent, (size_t)(n - sent));
	if (n < RELAY_CHUNK)
		return IO_SHORT;
	/* a full chunk means bulk: move further data through a pipe if one is free */
	pipe_pool_get(&r->dp->pipes, f->pipe);
	return IO_OK;
}

/* Moves data from f->from into f's pipe. Only called with the pipe empty. */
static enum io_result fill_spliced(struct relay *r, struct flow *f)
{
	ssize_t n;

	do
		n = splice(f->from->fd, NULL, f->pipe[1], NULL, PIPE_CAPACITY,
			   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return IO_EOF;
	if (n < 0)
		return errno == EAGAIN ? IO_AGAIN : io_failed(r, f->from, errno);
	f->in_pipe += (size_t)n;
	return (size_t)n < PIPE_CAPACITY ? IO_SHORT : IO_OK;
}

/* After a short read into the pipe: write it out now rather than after
 * another wake-up. */
static enum io_result flush_result(struct relay *r, struct flow *f)
{
	enum io_result res = flush(r, f);
	return res == IO_AGAIN ? IO_OK : res;
}

/* Moves what f->from has to f->to until one would block. A side is read only
 * when everything read before has been written. */
static enum io_result pump(struct relay *r, struct flow *f)
{
	for (int round = 0; round < PUMP_ROUNDS && !f->eof; round++) {
		enum io_result res = flush(r, f);
		if (res != IO_OK)
			return res == IO_AGAIN ? IO_OK : res;
		res = f->pipe[0] >= 0 ? fill_spliced(r, f) : fill_buffered(r, f);
		if (res == IO_EOF)
			f->eof = true;
		else if (res == IO_AGAIN)
			return IO_OK;
		else if (res == IO_ERROR)
			return res;
		else if (res == IO_SHORT)
			return pending(f) > 0 ? flush_result(r, f) : IO_OK;
	}
	if (f->eof && !f->shut) {
		/* EOF is passed on only after everything before it */
		enum io_result res = flush(r, f);
		if (res != IO_OK)
			return res == IO_AGAIN ? IO_OK : res;
		/* when the other way is over too, the close that follows sends the FIN */
		struct flow *other = f == &r->up ? &r->down : &r->up;
		if (!other->shut && shutdown(f->to->fd, SHUT_WR) < 0 && errno != ENOTCONN)
			return io_failed(r, f->to, errno);
		f->shut = true;
	}
	return IO_OK;
}

/* Forgets e's queued readiness, as ev_io_stop forgets a pending event. */
static void unqueue(struct relay_end *e)
{
	if (e->ready_events == 0)
		return;
	*e->ready_prevp = e->ready_next;
	if (e->ready_next != NULL)
		e->ready_next->ready_prevp = e->ready_prevp;
	e->ready_events = 0;
}

static void set_events(struct relay *r, struct relay_end *e, int events)
{
	if (e->events == events)
		return;
	struct ev_loop *loop = r->dp->loop;
	unqueue(e);
	ev_io_stop(loop, &e->io);
	ev_io_set(&e->io, e->fd, events);
	if (events)
		ev_io_start(loop, &e->io);
	e->events = events;
}

static bool wants_read(const struct flow *f)
{
	return !f->eof && pending(f) == 0;
}

static void update_events(struct relay *r)
{
	set_events(r, &r->client, (wants_read(&r->up) ? EV_READ : 0) |
				  (pending(&r->down) ? EV_WRITE : 0));
	set_events(r, &r->backend, (wants_read(&r->down) ? EV_READ : 0) |
				   (pending(&r->up) ? EV_WRITE : 0));
}

static void release_flow(struct relay *r, struct flow *f)
{
	free(f->buf);
	f->buf = NULL;
	if (f->pipe[0] >= 0)
		pipe_pool_put(&r->dp->pipes, f->pipe, f->in_pipe == 0);
}

static void close_end(struct relay *r, struct relay_end *e, bool rst)
{
	if (e->fd < 0)
		return;
	unqueue(e);
	ev_io_stop(r->dp->loop, &e->io);
	if (rst)
		set_linger_zero(e->fd);
	close(e->fd);
	e->fd = -1;
}

/* Ends the relay: closes both sides, logs one line, frees r. */
static void relay_finish(struct relay *r)
{
	struct dualproxy *dp = r->dp;
	char c[ADDR_STRLEN], b[ADDR_STRLEN];

	ev_timer_stop(dp->loop, &r->timer);
	close_end(r, &r->client, r->rst_client);
	close_end(r, &r->backend, r->rst_backend);
	release_flow(r, &r->up);
	release_flow(r, &r->down);
	log_debug("connection service=%s client=%s backend=%s up=%llu down=%llu "
		  "duration=%.3fs end=%s",
		  r->svc->name, addr_format(&r->client_addr, c),
		  addr_format(r->backend_addr, b), (unsigned long long)r->up.bytes,
		  (unsigned long long)r->down.bytes, ev_now(dp->loop) - r->started,
		  r->reason);

	if (r->prev != NULL)
		r->prev->next = r->next;
	else
		dp->relays = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	dp->active--;
	r->stats->active--;
	if (r->source_counted)
		sources_release(&dp->sources, &r->client_addr);
	config_unref(r->cfg);
	free(r);
	listeners_update_capacity(dp);
}

static void connect_failed(struct relay *r, int err)
{
	char c[ADDR_STRLEN], b[ADDR_STRLEN];
	enum backend_error kind = backend_error_kind(err);

	r->stats->backend_errors[kind]++;
	r->reason = backend_error_reason(kind);
	r->rst_client = true; /* the client learns at once, it does not hang */
	log_warn("[%s] client %s: backend %s: %s", r->svc->name,
		 addr_format(&r->client_addr, c), addr_format(r->backend_addr, b),
		 strerror(err));
	relay_finish(r);
}

/* Queues the PROXY header as the first bytes to the backend. */
static int queue_proxy_header(struct relay *r)
{
	unsigned char hdr[PROXY_HEADER_MAX];
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	struct addr local;

	if (getsockname(r->client.fd, (struct sockaddr *)&ss, &len) < 0) {
		r->reason = "error";
		r->rst_client = r->rst_backend = true;
		return -1;
	}
	addr_from_sockaddr(&local, (struct sockaddr *)&ss, len);
	size_t n = proxy_header(r->svc->proxy_protocol, &r->client_addr, &local, hdr,
				sizeof(hdr));
	assert(n > 0); /* hdr is PROXY_HEADER_MAX bytes */
	if (keep_tail(r, &r->up, (const char *)hdr, n) == IO_ERROR)
		return -1;
	r->up.uncounted = n;
	return 0;
}

/* Sets the relay's one timer to fire after `after` seconds. */
static void rearm(struct relay *r, ev_tstamp after)
{
	ev_timer_stop(r->dp->loop, &r->timer);
	ev_timer_set(&r->timer, after, 0.);
	ev_timer_start(r->dp->loop, &r->timer);
}

/* Bytes the kernel still holds to send on e (not yet acknowledged). */
static int unsent(const struct relay_end *e)
{
	int n = 0;
	if (ioctl(e->fd, SIOCOUTQ, &n) < 0)
		return 0;
	return n;
}

/* After an error on one side: if the other side is healthy and still has
 * data from before the failure to receive, deliver it first (for at most
 * RESET_LINGER), then reset it; otherwise end now. */
static void relay_fail(struct relay *r)
{
	struct relay_end *survivor = NULL, *dead = NULL;
	struct flow *toward = NULL;

	if (r->rst_client && !r->rst_backend) {
		survivor = &r->client;
		dead = &r->backend;
		toward = &r->down;
	} else if (r->rst_backend && !r->rst_client) {
		survivor = &r->backend;
		dead = &r->client;
		toward = &r->up;
	}
	if (survivor == NULL || (pending(toward) == 0 && unsent(survivor) == 0)) {
		relay_finish(r);
		return;
	}
	close_end(r, dead, false);
	r->state = RELAY_RESETTING;
	r->reset_deadline = ev_now(r->dp->loop) + RESET_LINGER;
	set_events(r, survivor, pending(toward) ? EV_WRITE : 0);
	rearm(r, RESET_POLL);
}

/* RELAY_RESETTING: writes what is left; resets once it has been received. */
static void resetting_step(struct relay *r)
{
	struct relay_end *survivor = r->rst_client ? &r->client : &r->backend;
	struct flow *toward = r->rst_client ? &r->down : &r->up;

	if (pending(toward) > 0 && flush(r, toward) == IO_ERROR) {
		relay_finish(r);
		return;
	}
	if ((pending(toward) == 0 && unsent(survivor) == 0) ||
	    ev_now(r->dp->loop) >= r->reset_deadline) {
		relay_finish(r);
		return;
	}
	set_events(r, survivor, pending(toward) ? EV_WRITE : 0);
	if (!ev_is_active(&r->timer))
		rearm(r, RESET_POLL);
}

/* A flow with data waiting does not read its source, so a reset of that
 * source would go unnoticed until the data moves: the timer checks it. */
static void watch_stalls(struct relay *r)
{
	if (r->stall_check || (pending(&r->up) == 0 && pending(&r->down) == 0))
		return;
	r->stall_check = true;
	ev_tstamp idle_left = r->last_active + r->svc->idle_timeout - ev_now(r->dp->loop);
	rearm(r, idle_left < STALL_CHECK ? idle_left : STALL_CHECK);
}

/* Records the pending error of the source of a stalled flow; returns it, or 0. */
static int stalled_source_error(struct relay *r)
{
	struct flow *flows[] = { &r->up, &r->down };
	for (size_t i = 0; i < sizeof(flows) / sizeof(flows[0]); i++) {
		if (pending(flows[i]) == 0)
			continue;
		int err = backend_connect_result(flows[i]->from->fd); /* SO_ERROR */
		if (err != 0) {
			io_failed(r, flows[i]->from, err);
			return err;
		}
	}
	return 0;
}

static void connected(struct relay *r)
{
	r->state = RELAY_OPEN;
	r->last_active = ev_now(r->dp->loop);
	rearm(r, r->svc->idle_timeout);
	if (r->svc->proxy_protocol != PROXY_OFF && queue_proxy_header(r) < 0) {
		relay_finish(r);
		return;
	}
	/* the client has usually spoken already: forward it without a wake-up */
	if (pump(r, &r->up) == IO_ERROR) {
		relay_fail(r);
		return;
	}
	update_events(r);
	watch_stalls(r);
}

static void init_end(struct relay *r, struct relay_end *e, int fd)
{
	e->fd = fd;
	e->events = 0;
	ev_io_init(&e->io, on_io, fd, 0);
	e->io.data = r;
}

static void init_flow(struct flow *f, struct relay_end *from, struct relay_end *to, uint64_t *counter)
{
	f->from = from;
	f->to = to;
	f->counter = counter;
	f->pipe[0] = f->pipe[1] = -1;
}

/* Closes a client before anything reaches a backend; why is logged. */
static void refuse(const struct listener *l, int fd, const struct addr *client,
		   const char *why)
{
	char c[ADDR_STRLEN];
	log_debug("%s service=%s client=%s", why, l->service->name, addr_format(client, c));
	set_linger_zero(fd);
	close(fd);
}

void relay_start(struct dualproxy *dp, const struct listener *l, int client_fd,
		 const struct addr *client)
{
	const struct service *svc = l->service;
	int one = 1;

	unsigned long per_source = dp->config->max_connections_per_source;

	if (svc->allow.n > 0 && !cidr_list_match(&svc->allow, client)) {
		l->stats->denied++;
		refuse(l, client_fd, client, "denied");
		return;
	}
	if (per_source > 0 && sources_acquire(&dp->sources, client, per_source) < 0) {
		l->stats->source_limited++;
		refuse(l, client_fd, client, "source-limited");
		return;
	}
	struct relay *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		log_warn("[%s] out of memory for a new connection", svc->name);
		if (per_source > 0)
			sources_release(&dp->sources, client);
		set_linger_zero(client_fd);
		close(client_fd);
		return;
	}
	r->source_counted = per_source > 0;
	setsockopt(client_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	r->dp = dp;
	r->cfg = config_ref(dp->config);
	r->svc = svc;
	r->stats = l->stats;
	r->client_addr = *client;
	r->backend_addr = service_backend(svc, addr_family(client));
	r->state = RELAY_CONNECTING;
	r->started = r->last_active = ev_now(dp->loop);
	r->reason = "closed";
	init_end(r, &r->client, client_fd);
	init_end(r, &r->backend, -1);
	init_flow(&r->up, &r->client, &r->backend, &r->stats->bytes_up);
	init_flow(&r->down, &r->backend, &r->client, &r->stats->bytes_down);
	ev_timer_init(&r->timer, on_timer, svc->connect_timeout, 0.);
	r->timer.data = r;

	r->next = dp->relays;
	if (dp->relays != NULL)
		dp->relays->prev = r;
	dp->relays = r;
	dp->active++;
	r->stats->active++;
	r->stats->connections[addr_family(client) == AF_INET6 ? STATS_IPV6 : STATS_IPV4]++;
	listeners_update_capacity(dp);

	int in_progress = 0;
	int fd = backend_connect(r->backend_addr, &in_progress);
	if (fd < 0) {
		int err = errno;
		if (err == EMFILE || err == ENFILE)
			listeners_backoff(dp);
		connect_failed(r, err);
		return;
	}
	init_end(r, &r->backend, fd);
	if (!in_progress) {
		connected(r);
		return;
	}
	ev_timer_start(dp->loop, &r->timer);
	set_events(r, &r->backend, EV_WRITE);
}

/* libev invokes the io watchers of one poll in the reverse of the order the
 * kernel reported them, so the socket that has waited longest would be
 * served last.  on_io only queues the readiness (prepending, which restores
 * the kernel's order); on_ready, a check watcher at PRIORITY_RELAY, serves
 * the queue first in, first out once the poll's timers have run. */
static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct relay *r = w->data;
	struct relay_end *e = w == &r->client.io ? &r->client : &r->backend;
	struct dualproxy *dp = r->dp;

	(void)loop;
	if (e->ready_events == 0) {
		e->ready_next = dp->ready;
		e->ready_prevp = &dp->ready;
		if (dp->ready != NULL)
			dp->ready->ready_prevp = &e->ready_next;
		dp->ready = e;
	}
	e->ready_events |= revents;
}

static void serve(struct relay *r, struct relay_end *e, int revents)
{
	struct ev_loop *loop = r->dp->loop;

	if (r->state == RELAY_CONNECTING) {
		int err = backend_connect_result(e->fd);
		if (err != 0)
			connect_failed(r, err);
		else
			connected(r);
		return;
	}
	if (r->state == RELAY_RESETTING) {
		resetting_step(r);
		return;
	}
	r->last_active = ev_now(loop);
	/* writable: flush what waits for this side; readable: read it */
	if ((revents & EV_WRITE) &&
	    pump(r, e == &r->client ? &r->down : &r->up) == IO_ERROR) {
		relay_fail(r);
		return;
	}
	if ((revents & EV_READ) &&
	    pump(r, e == &r->client ? &r->up : &r->down) == IO_ERROR) {
		relay_fail(r);
		return;
	}
	if (r->up.shut && r->down.shut) {
		relay_finish(r);
		return;
	}
	update_events(r);
	watch_stalls(r);
}

static void on_ready(struct ev_loop *loop, ev_check *w, int revents)
{
	struct dualproxy *dp = w->data;

	(void)loop;
	(void)revents;
	while (dp->ready != NULL) {
		struct relay_end *e = dp->ready;
		int events = e->ready_events;
		unqueue(e);
		serve(e->io.data, e, events);
	}
}

void relay_init(struct dualproxy *dp)
{
	ev_check_init(&dp->ready_check, on_ready);
	dp->ready_check.data = dp;
	ev_set_priority(&dp->ready_check, PRIORITY_RELAY);
	ev_check_start(dp->loop, &dp->ready_check);
	ev_unref(dp->loop); /* it alone does not keep the loop running */
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct relay *r = w->data;
	(void)revents;

	switch (r->state) {
	case RELAY_CONNECTING:
		connect_failed(r, ETIMEDOUT);
		return;
	case RELAY_RESETTING:
		resetting_step(r);
		return;
	case RELAY_OPEN:
		break;
	}
	if (r->stall_check) {
		r->stall_check = false;
		if (stalled_source_error(r) != 0) {
			relay_fail(r);
			return;
		}
	}
	ev_tstamp left = r->last_active + r->svc->idle_timeout - ev_now(loop);
	if (left <= 0) {
		r->reason = "idle-timeout";
		relay_finish(r);
		return;
	}
	rearm(r, left);
	watch_stalls(r);
}

void relay_close_all(struct dualproxy *dp)
{
	while (dp->relays != NULL) {
		dp->relays->reason = "shutdown";
		relay_finish(dp->relays);
	}
}
