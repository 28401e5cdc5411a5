/* stats.c: counters per service that outlive reloads, rendered for Prometheus */
#include "autoconfig.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

static const char *const backend_error_names[BACKEND_ERROR_COUNT] = {
	[BACKEND_REFUSED] = "refused",
	[BACKEND_TIMEOUT] = "timeout",
	[BACKEND_UNREACHABLE] = "unreachable",
	[BACKEND_FAILED] = "failed",
	[BACKEND_RESET] = "reset",
};

static const char *const family_names[STATS_FAMILY_COUNT] = {
	[STATS_IPV4] = "ipv4",
	[STATS_IPV6] = "ipv6",
};

struct service_stats *stats_service(struct stats *st, const char *name)
{
	struct service_stats **link = &st->services;
	for (; *link != NULL; link = &(*link)->next)
		if (strcmp((*link)->name, name) == 0)
			return *link;
	struct service_stats *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	snprintf(s->name, sizeof(s->name), "%s", name);
	*link = s;
	return s;
}

const char *stats_backend_error_name(enum backend_error e)
{
	return backend_error_names[e];
}

/* A growing text buffer; on allocation failure it stays failed. */
struct text {
	char *buf;
	size_t len, cap;
	bool failed;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct text *t, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		if (t->failed)
			return;
		va_start(ap, fmt);
		int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->failed = true;
			return;
		}
		if ((size_t)n < t->cap - t->len) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = (t->cap + (size_t)n + 1) * 2;
		char *nb = realloc(t->buf, cap);
		if (nb == NULL) {
			t->failed = true;
			return;
		}
		t->buf = nb;
		t->cap = cap;
	}
}

static void header(struct text *t, const char *name, const char *type, const char *help)
{
	put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

char *stats_render(const struct stats *st, size_t *len)
{
	struct text t = { .cap = 4096 };
	const struct service_stats *s;

	t.buf = malloc(t.cap);
	if (t.buf == NULL)
		return NULL;
	t.buf[0] = '\0';

	header(&t, "dualproxy_connections_total", "counter",
	       "Connections relayed, by service and client address family.");
	for (s = st->services; s != NULL; s = s->next)
		for (int f = 0; f < STATS_FAMILY_COUNT; f++)
			put(&t, "dualproxy_connections_total{service=\"%s\",family=\"%s\"} %llu\n",
			    s->name, family_names[f], (unsigned long long)s->connections[f]);
	header(&t, "dualproxy_connections_active", "gauge", "Connections open now.");
	for (s = st->services; s != NULL; s = s->next)
		put(&t, "dualproxy_connections_active{service=\"%s\"} %llu\n", s->name,
		    (unsigned long long)s->active);
	header(&t, "dualproxy_bytes_total", "counter",
	       "Payload bytes relayed; up is client to backend, down is backend to client.");
	for (s = st->services; s != NULL; s = s->next) {
		put(&t, "dualproxy_bytes_total{service=\"%s\",direction=\"up\"} %llu\n",
		    s->name, (unsigned long long)s->bytes_up);
		put(&t, "dualproxy_bytes_total{service=\"%s\",direction=\"down\"} %llu\n",
		    s->name, (unsigned long long)s->bytes_down);
	}
	header(&t, "dualproxy_backend_errors_total", "counter",
	       "Connections failed by the backend, by reason.");
	for (s = st->services; s != NULL; s = s->next)
		for (int e = 0; e < BACKEND_ERROR_COUNT; e++)
			put(&t, "dualproxy_backend_errors_total{service=\"%s\",reason=\"%s\"} %llu\n",
			    s->name, backend_error_names[e],
			    (unsigned long long)s->backend_errors[e]);
	header(&t, "dualproxy_denied_total", "counter",
	       "Clients closed because the service's allowlist does not contain them.");
	for (s = st->services; s != NULL; s = s->next)
		put(&t, "dualproxy_denied_total{service=\"%s\"} %llu\n", s->name,
		    (unsigned long long)s->denied);
	header(&t, "dualproxy_source_limited_total", "counter",
	       "Clients closed because their address had max_connections_per_source open.");
	for (s = st->services; s != NULL; s = s->next)
		put(&t, "dualproxy_source_limited_total{service=\"%s\"} %llu\n", s->name,
		    (unsigned long long)s->source_limited);
	header(&t, "dualproxy_reloads_total", "counter", "Configuration reloads, by result.");
	put(&t, "dualproxy_reloads_total{result=\"success\"} %llu\n",
	    (unsigned long long)st->reloads_ok);
	put(&t, "dualproxy_reloads_total{result=\"failure\"} %llu\n",
	    (unsigned long long)st->reloads_failed);
	header(&t, "dualproxy_build_info", "gauge", "The running version of dualproxy.");
	put(&t, "dualproxy_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);

	if (t.failed) {
		free(t.buf);
		return NULL;
	}
	*len = t.len;
	return t.buf;
}

void stats_free(struct stats *st)
{
	while (st->services != NULL) {
		struct service_stats *s = st->services;
		st->services = s->next;
		free(s);
	}
}
