/* metrics.c: the Prometheus endpoint (GET /metrics, GET /healthz) */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dualproxy.h"
#include "log.h"
#include "metrics.h"
#include "sock.h"

#define METRICS_CLIENTS_MAX 32     /* connections served at once */
#define METRICS_TIMEOUT 5.0        /* seconds a client has to send and read */
#define METRICS_BACKLOG 64
#define METRICS_LISTEN_MAX 2

struct metrics_client;

struct metrics_listener {
	struct addr addr;
	int fd;        /* owned */
	ev_io io;
	struct admission_gate gate; /* closed during an accept backoff */
	struct metrics *m;
};

struct metrics {
	/* configuration */
	struct dualproxy *dp;
	struct cidr_list allow;       /* a copy of metrics_allow */
	/* runtime */
	struct metrics_listener ls[METRICS_LISTEN_MAX];
	size_t n_ls;
	TAILQ_HEAD(, metrics_client) reading; /* clients still sending, oldest first */
	TAILQ_HEAD(, metrics_client) writing; /* clients being answered */
	unsigned n_clients;
	uint64_t denied;              /* clients outside metrics_allow */
};

struct metrics_client {
	struct metrics *m;
	int fd;                 /* owned */
	ev_io io;
	ev_timer timer;
	char req[METRICS_REQUEST_MAX];
	size_t len;             /* bytes of req received */
	char *resp;             /* response being written, owned; NULL while reading */
	size_t resp_len, resp_off;
	TAILQ_ENTRY(metrics_client) link; /* in m->reading or m->writing */
};

/* ---- request parsing (pure, fuzzed) ---- */

static const char *head_end(const char *req, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++) {
		if (req[i] != '\n')
			continue;
		if (req[i + 1] == '\n')
			return req + i + 2;
		if (i + 2 < len && req[i + 1] == '\r' && req[i + 2] == '\n')
			return req + i + 3;
	}
	return NULL;
}

static bool path_is(const char *path, size_t n, const char *want)
{
	size_t wn = strlen(want);
	/* a query string is allowed: /metrics?x=y */
	return n >= wn && memcmp(path, want, wn) == 0 && (n == wn || path[wn] == '?');
}

enum metrics_route metrics_route(const char *req, size_t len, bool *head)
{
	*head = false;
	if (head_end(req, len) == NULL)
		return ROUTE_INCOMPLETE;

	const char *eol = memchr(req, '\n', len);
	size_t line = (size_t)(eol - req);
	if (line > 0 && req[line - 1] == '\r')
		line--;
	const char *sp1 = memchr(req, ' ', line);
	if (sp1 == NULL)
		return ROUTE_BAD_REQUEST;
	const char *path = sp1 + 1;
	const char *sp2 = memchr(path, ' ', line - (size_t)(path - req));
	if (sp2 == NULL || sp2 == path || path[0] != '/')
		return ROUTE_BAD_REQUEST;
	const char *version = sp2 + 1;
	size_t vlen = line - (size_t)(version - req);
	if (vlen != 8 || memcmp(version, "HTTP/1.", 7) != 0 ||
	    (version[7] != '0' && version[7] != '1'))
		return ROUTE_BAD_REQUEST;

	size_t mlen = (size_t)(sp1 - req);
	if (mlen == 4 && memcmp(req, "HEAD", 4) == 0)
		*head = true;
	else if (mlen != 3 || memcmp(req, "GET", 3) != 0)
		return ROUTE_BAD_METHOD;

	size_t plen = (size_t)(sp2 - path);
	if (path_is(path, plen, "/metrics"))
		return ROUTE_METRICS;
	if (path_is(path, plen, "/healthz"))
		return ROUTE_HEALTH;
	return ROUTE_NOT_FOUND;
}

/* ---- responses ---- */

static char *response(int status, const char *reason, const char *type,
		      const char *body, size_t body_len, bool head, size_t *len)
{
	char hdr[256];
	int n = snprintf(hdr, sizeof(hdr),
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			 "Connection: close\r\n\r\n",
			 status, reason, type, body_len);
	size_t total = (size_t)n + (head ? 0 : body_len);
	char *out = malloc(total);
	if (out == NULL)
		return NULL;
	memcpy(out, hdr, (size_t)n);
	if (!head)
		memcpy(out + n, body, body_len);
	*len = total;
	return out;
}

static char *plain(int status, const char *reason, const char *text, bool head, size_t *len)
{
	return response(status, reason, "text/plain; charset=utf-8", text, strlen(text),
			head, len);
}

static char *answer(struct metrics *m, enum metrics_route route, bool head, size_t *len)
{
	switch (route) {
	case ROUTE_METRICS: {
		size_t body_len;
		struct dualproxy *dp = m->dp;
		struct stats_process proc = {
			.connections_max = admission_capacity(&dp->admission),
			.paused = dp->admission.paused,
			.log_lines_dropped = log_lines_dropped(),
			.metrics_denied = m->denied,
			.start_time = dp->lifecycle.start_time,
		};
		char *body = stats_render(&dp->stats, &proc, &body_len);
		if (body == NULL)
			return plain(500, "Internal Server Error", "out of memory\n", head, len);
		char *out = response(200, "OK", "text/plain; version=0.0.4; charset=utf-8",
				     body, body_len, head, len);
		free(body);
		return out;
	}
	case ROUTE_HEALTH:
		return plain(200, "OK", "ok\n", head, len);
	case ROUTE_NOT_FOUND:
		return plain(404, "Not Found", "not found: try /metrics\n", head, len);
	case ROUTE_BAD_METHOD:
		return plain(405, "Method Not Allowed", "only GET and HEAD\n", false, len);
	case ROUTE_INCOMPLETE:
		return plain(431, "Request Header Fields Too Large", "request too large\n",
			     false, len);
	case ROUTE_BAD_REQUEST:
		break;
	}
	return plain(400, "Bad Request", "bad request\n", false, len);
}

/* ---- connections ---- */

static void client_close(struct metrics_client *c)
{
	struct metrics *m = c->m;
	ev_io_stop(m->dp->loop, &c->io);
	ev_timer_stop(m->dp->loop, &c->timer);
	close(c->fd);
	if (c->resp != NULL)
		TAILQ_REMOVE(&m->writing, c, link);
	else
		TAILQ_REMOVE(&m->reading, c, link);
	free(c->resp);
	m->n_clients--;
	free(c);
}

/* Writes what is left of the response; closes when done or failed. */
static void client_write(struct metrics_client *c)
{
	while (c->resp_off < c->resp_len) {
		ssize_t n = send(c->fd, c->resp + c->resp_off, c->resp_len - c->resp_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			break;
		}
		c->resp_off += (size_t)n;
	}
	client_close(c);
}

/* The request is complete (or too long): answer it. */
static void client_answer(struct metrics_client *c, enum metrics_route route, bool head)
{
	struct metrics *m = c->m;
	struct ev_loop *loop = m->dp->loop;
	size_t len;
	char *resp = answer(m, route, head, &len);

	if (resp == NULL) {
		client_close(c);
		return;
	}
	TAILQ_REMOVE(&m->reading, c, link);
	TAILQ_INSERT_TAIL(&m->writing, c, link);
	c->resp = resp;
	c->resp_len = len;
	shutdown(c->fd, SHUT_RD);
	ev_io_stop(loop, &c->io);
	ev_io_set(&c->io, c->fd, EV_WRITE);
	ev_io_start(loop, &c->io);
	client_write(c);
}

static void on_client(struct ev_loop *loop, ev_io *w, int revents)
{
	struct metrics_client *c = w->data;
	(void)loop;
	(void)revents;

	if (c->resp != NULL) {
		client_write(c);
		return;
	}
	ssize_t n = recv(c->fd, c->req + c->len, sizeof(c->req) - c->len, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		client_close(c);
		return;
	}
	c->len += (size_t)n;
	bool head;
	enum metrics_route route = metrics_route(c->req, c->len, &head);
	if (route == ROUTE_INCOMPLETE && c->len < sizeof(c->req))
		return;
	client_answer(c, route, head);
}

static void on_client_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	client_close(w->data);
}

/* Makes room for a new client: at the limit, the one that has been
 * sending its request the longest goes, or when every client has been
 * answered, the one whose response has waited longest for its reader, so
 * that slow clients, sending or reading, cannot keep the kubelet's
 * /healthz probe out. */
static void make_room(struct metrics *m)
{
	if (m->n_clients < METRICS_CLIENTS_MAX)
		return;
	struct metrics_client *c = TAILQ_FIRST(&m->reading);
	if (c == NULL)
		c = TAILQ_FIRST(&m->writing);
	client_close(c);
}

static void refuse(struct metrics *m, int fd)
{
	sock_set_linger_zero(fd);
	close(fd);
	(void)m;
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	struct metrics_listener *ml = w->data;
	struct metrics *m = ml->m;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	struct addr client;
	(void)revents;

	int fd = accept4(ml->fd, (struct sockaddr *)&ss, &sslen, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			admission_backoff(&m->dp->admission);
		return;
	}
	addr_from_sockaddr(&client, (struct sockaddr *)&ss, sslen);
	if (!cidr_list_match(&m->allow, &client)) {
		char a[ADDR_STRLEN];
		m->denied++;
		log_debug("metrics: denied client=%s", addr_format(&client, a));
		refuse(m, fd);
		return;
	}
	make_room(m);
	struct metrics_client *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		refuse(m, fd);
		return;
	}
	c->m = m;
	c->fd = fd;
	ev_io_init(&c->io, on_client, fd, EV_READ);
	c->io.data = c;
	ev_timer_init(&c->timer, on_client_timeout, METRICS_TIMEOUT, 0.);
	c->timer.data = c;
	ev_io_start(loop, &c->io);
	ev_timer_start(loop, &c->timer);
	TAILQ_INSERT_TAIL(&m->reading, c, link);
	m->n_clients++;
}

/* ---- endpoint ---- */

unsigned long metrics_fds(const struct config *cfg)
{
	return cfg->n_metrics_listen > 0 ? cfg->n_metrics_listen + METRICS_CLIENTS_MAX : 0;
}

/* Copies cfg's metrics_allow; returns 0, or -1 when out of memory. */
static int copy_allow(struct metrics *m, const struct config *cfg)
{
	struct cidr_list allow = { NULL, 0 };
	const char *why;
	for (size_t i = 0; i < cfg->metrics_allow.n; i++)
		if (cidr_list_add(&allow, &cfg->metrics_allow.items[i], &why) < 0) {
			cidr_list_free(&allow);
			return -1;
		}
	cidr_list_free(&m->allow);
	m->allow = allow;
	return 0;
}

struct metrics *metrics_open(struct dualproxy *dp, const struct config *cfg)
{
	char a[ADDR_STRLEN];
	struct metrics *m = calloc(1, sizeof(*m));
	if (m == NULL || copy_allow(m, cfg) < 0) {
		free(m);
		log_error("out of memory");
		return NULL;
	}
	m->dp = dp;
	TAILQ_INIT(&m->reading);
	TAILQ_INIT(&m->writing);
	for (size_t i = 0; i < cfg->n_metrics_listen && i < METRICS_LISTEN_MAX; i++) {
		struct metrics_listener *ml = &m->ls[i];
		ml->addr = cfg->metrics_listen[i];
		ml->fd = sock_listen(&ml->addr, SOCK_STREAM, METRICS_BACKLOG);
		if (ml->fd < 0) {
			int saved = errno;
			log_error("%s: metrics_listen: cannot listen on %s: %s", cfg->path,
				  addr_format(&ml->addr, a), strerror(saved));
			metrics_close(m);
			errno = saved;
			return NULL;
		}
		ml->m = m;
		ev_io_init(&ml->io, on_accept, ml->fd, EV_READ);
		ml->io.data = ml;
		admission_gate_add(&dp->admission, &ml->gate, &ml->io, false);
		m->n_ls++;
		log_info("metrics on http://%s/metrics", addr_format(&ml->addr, a));
	}
	return m;
}

void metrics_set_config(struct metrics *m, const struct config *cfg)
{
	if (m != NULL && copy_allow(m, cfg) < 0)
		log_warn("out of memory: metrics_allow not updated");
}

bool metrics_same(const struct metrics *m, const struct config *cfg)
{
	size_t n = m != NULL ? m->n_ls : 0;
	if (n != cfg->n_metrics_listen)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!addr_equal(&m->ls[i].addr, &cfg->metrics_listen[i]))
			return false;
	return true;
}

void metrics_close(struct metrics *m)
{
	if (m == NULL)
		return;
	while (!TAILQ_EMPTY(&m->reading))
		client_close(TAILQ_FIRST(&m->reading));
	while (!TAILQ_EMPTY(&m->writing))
		client_close(TAILQ_FIRST(&m->writing));
	for (size_t i = 0; i < m->n_ls; i++) {
		admission_gate_remove(&m->dp->admission, &m->ls[i].gate);
		close(m->ls[i].fd);
	}
	cidr_list_free(&m->allow);
	free(m);
}
