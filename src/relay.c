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
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend.h"
#include "dualproxy.h"
#include "log.h"
#include "proxyproto.h"
#include "relay.h"
#include "sock.h"

#define RELAY_CHUNK (64 * 1024)   /* the shared buffer recv/send relaying reads into */
#define PIPE_FD_SPARE 64          /* descriptors a new pipe must leave to connections */
#define PUMP_ROUNDS 4             /* read/write rounds per wake-up, for fairness */
#define STALL_CHECK 1.0           /* seconds between checks of a side that is not read */
#define RESET_LINGER 1.0          /* seconds a reset waits for the survivor's data */
#define RESET_DRAIN_READS 4       /* reads of a survivor's discarded data per wake-up */
#define RESET_POLL 0.01           /* seconds between checks of the survivor's send queue */
#define RESET_FIRST_POLL 0.001    /* the first check: a survivor that has closed already
				     resets what it was sent at once */
/* Ready connections are served after the timers and signals (default
 * priority) and before accepting (listener.c, EV_MINPRI). */
#define RELAY_PRIORITY (EV_MINPRI + 1)

enum relay_state {
	RELAY_OPEN,       /* relaying both ways (the backend's connect may still be
			     in progress: see unconfirmed) */
	RELAY_RESETTING,  /* one side failed; the other gets what was read from it
			     before the failure, then a reset */
};

/* What the relay's one timer is set for. */
enum timer_job {
	TIMER_CONNECT,     /* connect_timeout, while the backend's connect is unconfirmed */
	TIMER_IDLE,        /* idle_timeout of RELAY_OPEN */
	TIMER_STALL_CHECK, /* RELAY_OPEN with a side not read: has its source failed? */
	TIMER_RESET_POLL,  /* RELAY_RESETTING: has the survivor received its data? */
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

struct relay;

struct relay_end {
	int fd;     /* owned */
	int events; /* EV_READ|EV_WRITE currently registered */
	ev_io io;
	int ready_events;                   /* queued readiness, 0 when not queued */
	TAILQ_ENTRY(relay_end) ready_link;  /* in relays.ready while ready_events != 0 */
	struct relay *relay;
};

/* One direction: bytes read from `from` and written to `to`. */
struct flow {
	struct relay_end *from, *to;
	char *buf;          /* read but not yet written; only under backpressure */
	size_t off, len;    /* unwritten bytes are buf[off..len) */
	int pipe[2];        /* splice mode when pipe[0] >= 0 */
	size_t in_pipe;     /* bytes waiting in the pipe */
	uint64_t bytes;     /* payload bytes written to `to` */
	uint64_t *counter;  /* the service's bytes of this direction and family */
	size_t uncounted;   /* leading bytes of buf that are not payload (PROXY header) */
	bool eof;           /* `from` sent FIN */
	bool shut;          /* FIN passed on to `to` */
};

struct relay {
	/* configuration */
	struct dualproxy *dp;
	struct service *svc;             /* a reference */
	struct service_stats *stats;     /* a reference */
	struct stats_counters *counters; /* of the client's family, inside stats */
	struct addr client_addr;
	const struct addr *backend_addr; /* inside svc */
	bool source_counted;             /* admission counted it per source */
	/* runtime */
	enum relay_state state;
	struct relay_end client, backend;
	struct flow up;                  /* client to backend */
	struct flow down;                /* backend to client */
	ev_timer timer;
	enum timer_job job;              /* what the timer is set for */
	ev_tstamp started, last_active;
	ev_tstamp reset_deadline;        /* RELAY_RESETTING: reset by then at the latest */
	struct loop_socket self;         /* the backend socket, to see it come back */
	bool unconfirmed;                /* the backend's connect may still be in progress
					    or have failed: its first error is the connect's
					    (saves a getsockopt), and connect_timeout runs */
	enum end_reason reason;          /* why it ended, for the log */
	bool rst_client, rst_backend;    /* close that side with RST */
	LIST_ENTRY(relay) link;          /* in relays.live */
};

/* The relays' shared state. */
struct relays {
	LIST_HEAD(, relay) live;
	TAILQ_HEAD(, relay_end) ready;   /* sockets to serve, in the order they became ready */
	ev_check ready_check;            /* serves them after each poll */
	unsigned served;                 /* sockets served after the last poll */
	char *chunk;                     /* RELAY_CHUNK bytes shared by all relays */
};

static void on_io(struct ev_loop *loop, ev_io *w, int revents);
static void on_timer(struct ev_loop *loop, ev_timer *w, int revents);
static void start_relaying(struct relay *r);
static void connect_failed(struct relay *r, int err);
static void relay_fail(struct relay *r);
static void relay_finish(struct relay *r);
static void set_events(struct relay *r, struct relay_end *e, int events);
static void arm(struct relay *r, enum timer_job job, ev_tstamp after);

/* ---- starting ---- */

static void init_end(struct relay *r, struct relay_end *e, int fd)
{
	e->fd = fd;
	e->events = 0;
	e->ready_events = 0;
	e->relay = r;
	ev_io_init(&e->io, on_io, fd, 0);
	e->io.data = e;
}

static void init_flow(struct flow *f, struct relay_end *from, struct relay_end *to,
		      uint64_t *counter)
{
	f->from = from;
	f->to = to;
	f->counter = counter;
	f->pipe[0] = f->pipe[1] = -1;
}

/* A relay for the client, counted as open; the backend is not connected yet. */
static struct relay *relay_new(struct dualproxy *dp, struct service *svc,
			       struct service_stats *stats, int client_fd,
			       const struct addr *client, bool source_counted)
{
	struct relay *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	r->dp = dp;
	r->svc = service_ref(svc);
	r->stats = stats_hold(stats);
	r->counters = stats_family(stats, STATS_TCP, addr_family(client));
	r->client_addr = *client;
	r->backend_addr = service_backend(svc, addr_family(client));
	r->source_counted = source_counted;
	r->state = RELAY_OPEN;
	r->started = r->last_active = ev_now(dp->loop);
	r->reason = END_CLOSED;
	init_end(r, &r->client, client_fd);
	init_end(r, &r->backend, -1);
	init_flow(&r->up, &r->client, &r->backend, &r->counters->bytes[STATS_UP]);
	init_flow(&r->down, &r->backend, &r->client, &r->counters->bytes[STATS_DOWN]);
	ev_init(&r->timer, on_timer);
	r->timer.data = r;
	LIST_INSERT_HEAD(&dp->relays->live, r, link);
	r->counters->opened++;
	r->counters->active++;
	return r;
}

/* Starts the non-blocking connect to the backend, and relaying at once: what
 * the client has sent is written to the backend as soon as the connect is
 * over (on loopback and over a veth pair into another network namespace it
 * is when connect() returns), without a wake-up for the connect on its own. */
static void connect_backend(struct relay *r)
{
	int in_progress = 0;
	int fd = backend_connect(r->backend_addr, &in_progress);
	if (fd < 0) {
		int err = errno;
		if (err == EMFILE || err == ENFILE)
			admission_backoff(&r->dp->admission);
		connect_failed(r, err);
		return;
	}
	init_end(r, &r->backend, fd);
	loops_add(&r->dp->admission.loops, &r->self, fd, r->backend_addr);
	r->unconfirmed = in_progress;
	start_relaying(r);
}

void relay_start(struct dualproxy *dp, struct service *svc, struct service_stats *stats,
		 int client_fd, const struct addr *client, bool source_counted)
{
	struct relay *r = relay_new(dp, svc, stats, client_fd, client, source_counted);
	if (r == NULL) {
		log_warn("[%s] out of memory for a new connection", svc->name);
		admission_release(&dp->admission, client, RELAY_FDS, source_counted);
		sock_set_linger_zero(client_fd);
		close(client_fd);
		return;
	}
	connect_backend(r); /* the client socket has TCP_NODELAY from its listener */
}

/* ---- connecting ---- */

static void connect_failed(struct relay *r, int err)
{
	char c[ADDR_STRLEN], b[ADDR_STRLEN];

	r->reason = reason_of_connect_error(err);
	r->rst_client = true; /* the client learns at once, it does not hang */
	log_warn("[%s] client %s: backend %s: %s", r->svc->name,
		 addr_format(&r->client_addr, c), addr_format(r->backend_addr, b),
		 strerror(err));
	relay_finish(r);
}

/* Keeps the unsent tail of a chunk for later; called under backpressure. */
static enum io_result keep_tail(struct relay *r, struct flow *f, const char *data,
				size_t n)
{
	assert(f->buf == NULL);
	f->buf = malloc(n);
	if (f->buf == NULL) {
		log_warn("[%s] out of memory for a relay buffer", r->svc->name);
		r->reason = END_ERROR;
		r->rst_client = r->rst_backend = true;
		return IO_ERROR;
	}
	memcpy(f->buf, data, n);
	f->off = 0;
	f->len = n;
	return IO_OK;
}

/* Queues the PROXY header as the first bytes to the backend. */
static int queue_proxy_header(struct relay *r)
{
	unsigned char hdr[PROXY_HEADER_MAX];
	struct addr local;

	if (sock_local_addr(r->client.fd, &local) < 0) {
		r->reason = END_ERROR;
		r->rst_client = r->rst_backend = true;
		return -1;
	}
	size_t n = proxy_header(r->svc->proxy_protocol, &r->client_addr, &local, hdr,
				sizeof(hdr));
	assert(n > 0); /* hdr is PROXY_HEADER_MAX bytes */
	if (keep_tail(r, &r->up, (const char *)hdr, n) == IO_ERROR)
		return -1;
	r->up.uncounted = n;
	return 0;
}

static enum io_result pump(struct relay *r, struct flow *f);
static void update_events(struct relay *r);
static void watch_stalls(struct relay *r);

/* Until the backend's connect is confirmed, data for it waits in the relay
 * (a send before the handshake is over would block) and connect_timeout
 * runs; a failed connect shows as the first error on the backend socket. */
static void start_relaying(struct relay *r)
{
	if (r->unconfirmed)
		arm(r, TIMER_CONNECT, r->svc->connect_timeout);
	else
		arm(r, TIMER_IDLE, r->svc->idle_timeout);
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

/* ---- pumping ---- */

static size_t pending(const struct flow *f)
{
	return f->pipe[0] >= 0 ? f->in_pipe : f->len - f->off;
}

static bool wants_read(const struct flow *f)
{
	return !f->eof && pending(f) == 0;
}

static void arm_idle(struct relay *r);

/* A successful read or write on e: if it is the backend, its connect worked. */
static inline void confirm(struct relay *r, const struct relay_end *e)
{
	if (e == &r->backend && r->unconfirmed) {
		r->unconfirmed = false;
		arm_idle(r);
	}
}

/* Records why the relay ends; an error on one end resets the other. */
static enum io_result io_failed(struct relay *r, struct relay_end *e, int err)
{
	if (e == &r->backend && r->unconfirmed) {
		/* the connect failed: the client learns at once, as in connect_failed */
		char c[ADDR_STRLEN], b[ADDR_STRLEN];
		r->reason = reason_of_connect_error(err);
		r->rst_client = true;
		log_warn("[%s] client %s: backend %s: %s", r->svc->name,
			 addr_format(&r->client_addr, c), addr_format(r->backend_addr, b),
			 strerror(err));
		return IO_ERROR;
	}
	if (err == ECONNRESET || err == EPIPE || err == ETIMEDOUT ||
	    err == EHOSTUNREACH || err == ENETUNREACH) {
		r->reason = e == &r->client ? END_CLIENT_RESET : END_BACKEND_RESET;
	} else {
		char a[ADDR_STRLEN];
		log_warn("[%s] client %s: %s", r->svc->name,
			 addr_format(&r->client_addr, a), strerror(err));
		r->reason = END_ERROR;
	}
	if (e == &r->client)
		r->rst_backend = true;
	else
		r->rst_client = true;
	return IO_ERROR;
}

static void count(struct flow *f, size_t n)
{
	size_t payload = n;
	if (f->uncounted > 0) {
		size_t skip = f->uncounted < payload ? f->uncounted : payload;
		f->uncounted -= skip;
		payload -= skip;
	}
	f->bytes += payload;
	*f->counter += payload;
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
		count(f, (size_t)n);
		confirm(r, f->to);
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

/* Reads from f->from into the shared chunk and writes it on at once; the
 * unwritten tail, if any, is kept in f->buf. Only called with nothing pending. */
static enum io_result fill_buffered(struct relay *r, struct flow *f)
{
	char *chunk = r->dp->relays->chunk;
	ssize_t n;

	assert(pending(f) == 0);
	do
		n = recv(f->from->fd, chunk, RELAY_CHUNK, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? IO_AGAIN : io_failed(r, f->from, errno);
	confirm(r, f->from);
	if (n == 0)
		return IO_EOF;

	ssize_t sent;
	do
		sent = send(f->to->fd, chunk, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (sent < 0 && errno == EINTR);
	if (sent < 0) {
		if (errno != EAGAIN)
			return io_failed(r, f->to, errno);
		sent = 0;
	}
	count(f, (size_t)sent);
	if (sent > 0)
		confirm(r, f->to);
	if (sent < n)
		return keep_tail(r, f, chunk + sent, (size_t)(n - sent));
	if (n < RELAY_CHUNK)
		return IO_SHORT;
	/* a full chunk means bulk: move further data through a pipe if one is
	 * free; a new pipe only while descriptors are to spare */
	pipe_pool_get(&r->dp->pipes, f->pipe,
		      admission_spare_fds(&r->dp->admission) > PIPE_FD_SPARE,
		      ev_now(r->dp->loop));
	return IO_OK;
}

/* Moves data from f->from into f's pipe. Only called with the pipe empty. */
static enum io_result fill_spliced(struct relay *r, struct flow *f)
{
	ssize_t n;

	assert(f->in_pipe == 0);
	do
		n = splice(f->from->fd, NULL, f->pipe[1], NULL, PIPE_CAPACITY,
			   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? IO_AGAIN : io_failed(r, f->from, errno);
	confirm(r, f->from);
	if (n == 0)
		return IO_EOF;
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

/* Passes f's EOF on once everything before it is written. */
static enum io_result pass_eof(struct relay *r, struct flow *f)
{
	enum io_result res = flush(r, f);
	if (res != IO_OK)
		return res == IO_AGAIN ? IO_OK : res;
	/* when the other way is over too, the close that follows sends the FIN */
	struct flow *other = f == &r->up ? &r->down : &r->up;
	if (!other->shut && shutdown(f->to->fd, SHUT_WR) < 0 && errno != ENOTCONN)
		return io_failed(r, f->to, errno);
	f->shut = true;
	return IO_OK;
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
	if (f->eof && !f->shut)
		return pass_eof(r, f);
	return IO_OK;
}

static void update_events(struct relay *r)
{
	set_events(r, &r->client, (wants_read(&r->up) ? EV_READ : 0) |
				  (pending(&r->down) ? EV_WRITE : 0));
	set_events(r, &r->backend, (wants_read(&r->down) ? EV_READ : 0) |
				   (pending(&r->up) ? EV_WRITE : 0));
}

/* A ready socket of an open relay: writable flushes what waits for it,
 * readable reads it. */
static void relay_io(struct relay *r, struct relay_end *e, int revents)
{
	r->last_active = ev_now(r->dp->loop);
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

/* ---- failing ---- */

/* Bytes the kernel still holds to send on e (not yet acknowledged). */
static int unsent(const struct relay_end *e)
{
	int n = 0;
	if (ioctl(e->fd, SIOCOUTQ, &n) < 0)
		return 0;
	return n;
}

static void close_end(struct relay *r, struct relay_end *e, bool rst);

/* What the survivor of a failure is watched for: writable while data for it
 * waits, readable until it sends EOF, so that its own reset or close is
 * noticed at once (its unacknowledged bytes would never be acknowledged). */
static int resetting_events(const struct relay *r, const struct relay_end *survivor,
			    const struct flow *toward)
{
	const struct flow *from = toward == &r->up ? &r->down : &r->up;
	(void)survivor;
	return (pending(toward) ? EV_WRITE : 0) | (from->eof ? 0 : EV_READ);
}

/* The survivor sent something, or went away: what it sends has nowhere to
 * go and is dropped. Returns false when it is gone (reset, or an error):
 * a reset socket keeps its unacknowledged bytes in SIOCOUTQ for ever. */
static bool survivor_alive(struct relay *r, struct relay_end *survivor, struct flow *from)
{
	if (from->eof) /* not read any more: its pending error tells */
		return backend_connect_result(survivor->fd) == 0;
	/* a bounded drain: a survivor that keeps sending must not hold the
	 * loop; the rest waits for its next readiness (or the deadline) */
	for (int reads = 0; !from->eof && reads < RESET_DRAIN_READS; reads++) {
		ssize_t n = recv(survivor->fd, r->dp->relays->chunk, RELAY_CHUNK, MSG_DONTWAIT);
		if (n > 0)
			continue;
		if (n == 0) {
			from->eof = true;
			break;
		}
		if (errno == EINTR)
			continue;
		return errno == EAGAIN;
	}
	return true;
}

/* After an error on one side: if the other side is healthy and still has
 * data from before the failure to receive, deliver it first (for at most
 * RESET_LINGER), then reset it; otherwise end now. */
static void relay_fail(struct relay *r)
{
	struct relay_end *survivor = NULL, *dead = NULL;
	struct flow *toward = NULL;

	assert(r->rst_client || r->rst_backend);
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
	set_events(r, survivor, resetting_events(r, survivor, toward));
	arm(r, TIMER_RESET_POLL, RESET_FIRST_POLL);
}

/* RELAY_RESETTING: writes what is left; resets once it has been received. */
static void resetting_step(struct relay *r)
{
	struct relay_end *survivor = r->rst_client ? &r->client : &r->backend;
	struct flow *toward = r->rst_client ? &r->down : &r->up;

	struct flow *from = r->rst_client ? &r->up : &r->down;

	assert(r->state == RELAY_RESETTING);
	if (!survivor_alive(r, survivor, from) ||
	    (pending(toward) > 0 && flush(r, toward) == IO_ERROR)) {
		relay_finish(r);
		return;
	}
	if ((pending(toward) == 0 && unsent(survivor) == 0) ||
	    ev_now(r->dp->loop) >= r->reset_deadline) {
		relay_finish(r);
		return;
	}
	set_events(r, survivor, resetting_events(r, survivor, toward));
	if (!ev_is_active(&r->timer))
		arm(r, TIMER_RESET_POLL, RESET_POLL);
}

/* ---- the timer ---- */

/* Sets the relay's one timer to fire after `after` seconds for job. */
static void arm(struct relay *r, enum timer_job job, ev_tstamp after)
{
	r->job = job;
	ev_timer_stop(r->dp->loop, &r->timer);
	ev_timer_set(&r->timer, after, 0.);
	ev_timer_start(r->dp->loop, &r->timer);
}

/* The idle timer, counted from the last activity. */
static void arm_idle(struct relay *r)
{
	arm(r, TIMER_IDLE, r->last_active + r->svc->idle_timeout - ev_now(r->dp->loop));
}

/* A flow with data waiting does not read its source, so a reset of that
 * source would go unnoticed until the data moves: the timer checks it. */
static void watch_stalls(struct relay *r)
{
	if (r->job == TIMER_STALL_CHECK || r->job == TIMER_CONNECT ||
	    (pending(&r->up) == 0 && pending(&r->down) == 0))
		return;
	ev_tstamp idle_left = r->last_active + r->svc->idle_timeout - ev_now(r->dp->loop);
	if (idle_left < STALL_CHECK)
		arm(r, TIMER_IDLE, idle_left);
	else
		arm(r, TIMER_STALL_CHECK, STALL_CHECK);
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

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct relay *r = w->data;
	(void)revents;

	switch (r->job) {
	case TIMER_CONNECT:
		assert(r->unconfirmed);
		if (!backend_connected(r->backend.fd)) {
			connect_failed(r, ETIMEDOUT);
			return;
		}
		/* connected, and neither side has spoken since */
		r->unconfirmed = false;
		arm_idle(r);
		watch_stalls(r);
		return;
	case TIMER_RESET_POLL:
		resetting_step(r);
		return;
	case TIMER_STALL_CHECK:
		if (stalled_source_error(r) != 0) {
			relay_fail(r);
			return;
		}
		break;
	case TIMER_IDLE:
		break;
	}
	assert(r->state == RELAY_OPEN);
	ev_tstamp left = r->last_active + r->svc->idle_timeout - ev_now(loop);
	if (left <= 0) {
		r->reason = END_IDLE_TIMEOUT;
		relay_finish(r);
		return;
	}
	arm(r, TIMER_IDLE, left);
	watch_stalls(r);
}

/* ---- finishing ---- */

static void release_flow(struct relay *r, struct flow *f)
{
	free(f->buf);
	f->buf = NULL;
	if (f->pipe[0] >= 0)
		pipe_pool_put(&r->dp->pipes, f->pipe, f->in_pipe == 0);
}

static void unqueue(struct relays *rs, struct relay_end *e);

static void close_end(struct relay *r, struct relay_end *e, bool rst)
{
	if (e->fd < 0)
		return;
	unqueue(r->dp->relays, e);
	ev_io_stop(r->dp->loop, &e->io);
	if (rst)
		sock_set_linger_zero(e->fd);
	close(e->fd);
	e->fd = -1;
}

/* Ends the relay: closes both sides, logs one line, counts, frees r and
 * tells admission. */
static void relay_finish(struct relay *r)
{
	struct dualproxy *dp = r->dp;
	char c[ADDR_STRLEN], b[ADDR_STRLEN];

	ev_timer_stop(dp->loop, &r->timer);
	loops_remove(&dp->admission.loops, &r->self);
	close_end(r, &r->client, r->rst_client);
	close_end(r, &r->backend, r->rst_backend);
	release_flow(r, &r->up);
	release_flow(r, &r->down);
	log_debug("connection service=%s client=%s backend=%s up=%llu down=%llu "
		  "duration=%.3fs end=%s",
		  r->svc->name, addr_format(&r->client_addr, c),
		  addr_format(r->backend_addr, b), (unsigned long long)r->up.bytes,
		  (unsigned long long)r->down.bytes, ev_now(dp->loop) - r->started,
		  reason_name(r->reason));
	LIST_REMOVE(r, link);
	assert(r->counters->active > 0);
	r->counters->active--;
	r->counters->ended[r->reason]++;
	struct addr client = r->client_addr;
	bool source_counted = r->source_counted;
	stats_unref(&dp->stats, r->stats);
	service_unref(r->svc);
	free(r);
	admission_release(&dp->admission, &client, RELAY_FDS, source_counted);
}

void relay_close_all(struct dualproxy *dp)
{
	if (dp->relays == NULL)
		return;
	while (!LIST_EMPTY(&dp->relays->live)) {
		struct relay *r = LIST_FIRST(&dp->relays->live);
		r->reason = END_SHUTDOWN;
		relay_finish(r);
	}
}

/* ---- scheduling ---- */

/* Forgets e's queued readiness, as ev_io_stop forgets a pending event. */
static void unqueue(struct relays *rs, struct relay_end *e)
{
	if (e->ready_events == 0)
		return;
	TAILQ_REMOVE(&rs->ready, e, ready_link);
	e->ready_events = 0;
}

static void set_events(struct relay *r, struct relay_end *e, int events)
{
	if (e->events == events)
		return;
	struct ev_loop *loop = r->dp->loop;
	unqueue(r->dp->relays, e);
	ev_io_stop(loop, &e->io);
	ev_io_set(&e->io, e->fd, events);
	if (events)
		ev_io_start(loop, &e->io);
	e->events = events;
}

/* libev invokes the io watchers of one poll in the reverse of the order the
 * kernel reported them, so the socket that has waited longest would be
 * served last. on_io only queues the readiness (at the head, which restores
 * the kernel's order); on_ready, a check watcher at RELAY_PRIORITY, serves
 * the queue first in, first out once the poll's timers have run. */
static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct relay_end *e = w->data;
	struct relays *rs = e->relay->dp->relays;

	(void)loop;
	if (e->ready_events == 0)
		TAILQ_INSERT_HEAD(&rs->ready, e, ready_link);
	e->ready_events |= revents;
}

static void serve(struct relay_end *e, int revents)
{
	struct relay *r = e->relay;

	switch (r->state) {
	case RELAY_RESETTING:
		resetting_step(r);
		return;
	case RELAY_OPEN:
		relay_io(r, e, revents);
		return;
	}
}

static void on_ready(struct ev_loop *loop, ev_check *w, int revents)
{
	struct relays *rs = w->data;

	(void)loop;
	(void)revents;
	rs->served = 0;
	while (!TAILQ_EMPTY(&rs->ready)) {
		struct relay_end *e = TAILQ_FIRST(&rs->ready);
		int events = e->ready_events;
		unqueue(rs, e);
		serve(e, events);
		rs->served++;
	}
}

unsigned relay_served(const struct dualproxy *dp)
{
	return dp->relays != NULL ? dp->relays->served : 0;
}

int relay_init(struct dualproxy *dp)
{
	struct relays *rs = calloc(1, sizeof(*rs));
	if (rs == NULL || (rs->chunk = malloc(RELAY_CHUNK)) == NULL) {
		free(rs);
		return -1;
	}
	LIST_INIT(&rs->live);
	TAILQ_INIT(&rs->ready);
	ev_check_init(&rs->ready_check, on_ready);
	rs->ready_check.data = rs;
	ev_set_priority(&rs->ready_check, RELAY_PRIORITY);
	ev_check_start(dp->loop, &rs->ready_check);
	dp->relays = rs;
	return 0;
}

void relay_cleanup(struct dualproxy *dp)
{
	struct relays *rs = dp->relays;
	if (rs == NULL)
		return;
	assert(LIST_EMPTY(&rs->live));
	ev_check_stop(dp->loop, &rs->ready_check);
	free(rs->chunk);
	free(rs);
	dp->relays = NULL;
}
