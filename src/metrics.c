/* metrics.c: the Prometheus endpoint (GET /metrics, GET /healthz) */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dualproxy.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"

#define METRICS_CLIENTS_MAX 32     /* connections served at once */
#define METRICS_TIMEOUT 5.0        /* seconds a client has to send and read */
#define METRICS_BACKLOG 64

struct metrics_client;

struct metrics_listener {
	struct addr addr;
	int fd;        /* owned */
	ev_io io;
	struct metrics *m;
};

struct metrics {
	struct dualproxy *dp;
	struct metrics_listener ls[2];
	size_t n_ls;
	struct metrics_client *clients; /* open connections, owned */
	unsigned n_clients;
};

struct metrics_client {
	struct metrics *m;
	int fd;                 /* owned */
	ev_io io;
	ev_timer timer;
	char req[METRICS_REQUEST_MAX];
	size_t len;             /* bytes of req received */
	char *resp;             /* response being written, owned */
	size_t resp_len, resp_off;
	struct metrics_client *prev, *next;
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
		char *body = stats_render(&m->dp->stats, &body_len);
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
	free(c->resp);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		m->clients = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
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

static void on_client(struct ev_loop *loop, ev_io *w, int revents)
{
	struct metrics_client *c = w->data;
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
	c->resp = answer(c->m, route, head, &c->resp_len);
	if (c->resp == NULL) {
		client_close(c);
		return;
	}
	shutdown(c->fd, SHUT_RD);
	ev_io_stop(loop, &c->io);
	ev_io_set(&c->io, c->fd, EV_WRITE);
	ev_io_start(loop, &c->io);
	client_write(c);
}

static void on_client_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	client_close(w->data);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	struct metrics_listener *ml = w->data;
	struct metrics *m = ml->m;
	(void)revents;

	int fd = accept4(ml->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return; /* EAGAIN, or out of fds: the relays' listeners back off */
	struct metrics_client *c = NULL;
	if (m->n_clients >= METRICS_CLIENTS_MAX || (c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
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
	c->next = m->clients;
	if (m->clients != NULL)
		m->clients->prev = c;
	m->clients = c;
	m->n_clients++;
}

/* ---- endpoint ---- */

struct metrics *metrics_open(struct dualproxy *dp, const struct config *cfg)
{
	char a[ADDR_STRLEN];
	struct metrics *m = calloc(1, sizeof(*m));
	if (m == NULL) {
		log_error("out of memory");
		return NULL;
	}
	m->dp = dp;
	for (size_t i = 0; i < cfg->n_metrics_listen; i++) {
		struct metrics_listener *ml = &m->ls[i];
		ml->addr = cfg->metrics_listen[i];
		ml->fd = listener_socket(&ml->addr, METRICS_BACKLOG);
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
		ev_io_start(dp->loop, &ml->io);
		m->n_ls++;
		log_info("metrics on http://%s/metrics", addr_format(&ml->addr, a));
	}
	return m;
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
	while (m->clients != NULL)
		client_close(m->clients);
	for (size_t i = 0; i < m->n_ls; i++) {
		ev_io_stop(m->dp->loop, &m->ls[i].io);
		close(m->ls[i].fd);
	}
	free(m);
}
