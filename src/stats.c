/* stats.c: counters per service that outlive reloads, rendered for Prometheus */
#include "autoconfig.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"
#include "text.h"

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

static void header(struct text *t, const char *name, const char *type, const char *help)
{
	text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

char *stats_render(const struct stats *st, size_t *len)
{
	struct text t = { 0 };
	const struct service_stats *s;

	header(&t, "dualproxy_connections_total", "counter",
	       "Connections relayed, by service and client address family.");
	for (s = st->services; s != NULL; s = s->next)
		for (int f = 0; f < STATS_FAMILY_COUNT; f++)
			text_printf(&t, "dualproxy_connections_total{service=\"%s\",family=\"%s\"} %llu\n",
			    s->name, family_names[f], (unsigned long long)s->connections[f]);
	header(&t, "dualproxy_connections_active", "gauge", "Connections open now.");
	for (s = st->services; s != NULL; s = s->next)
		text_printf(&t, "dualproxy_connections_active{service=\"%s\"} %llu\n", s->name,
		    (unsigned long long)s->active);
	header(&t, "dualproxy_bytes_total", "counter",
	       "Payload bytes relayed; up is client to backend, down is backend to client.");
	for (s = st->services; s != NULL; s = s->next) {
		text_printf(&t, "dualproxy_bytes_total{service=\"%s\",direction=\"up\"} %llu\n",
		    s->name, (unsigned long long)s->bytes_up);
		text_printf(&t, "dualproxy_bytes_total{service=\"%s\",direction=\"down\"} %llu\n",
		    s->name, (unsigned long long)s->bytes_down);
	}
	header(&t, "dualproxy_backend_errors_total", "counter",
	       "Connections failed by the backend, by reason.");
	for (s = st->services; s != NULL; s = s->next)
		for (int e = 0; e < BACKEND_ERROR_COUNT; e++)
			text_printf(&t, "dualproxy_backend_errors_total{service=\"%s\",reason=\"%s\"} %llu\n",
			    s->name, backend_error_names[e],
			    (unsigned long long)s->backend_errors[e]);
	header(&t, "dualproxy_denied_total", "counter",
	       "Clients closed because the service's allowlist does not contain them.");
	for (s = st->services; s != NULL; s = s->next)
		text_printf(&t, "dualproxy_denied_total{service=\"%s\"} %llu\n", s->name,
		    (unsigned long long)s->denied);
	header(&t, "dualproxy_source_limited_total", "counter",
	       "Clients closed because their address had max_connections_per_source open.");
	for (s = st->services; s != NULL; s = s->next)
		text_printf(&t, "dualproxy_source_limited_total{service=\"%s\"} %llu\n", s->name,
		    (unsigned long long)s->source_limited);
	header(&t, "dualproxy_reloads_total", "counter", "Configuration reloads, by result.");
	text_printf(&t, "dualproxy_reloads_total{result=\"success\"} %llu\n",
	    (unsigned long long)st->reloads_ok);
	text_printf(&t, "dualproxy_reloads_total{result=\"failure\"} %llu\n",
	    (unsigned long long)st->reloads_failed);
	header(&t, "dualproxy_build_info", "gauge", "The running version of dualproxy.");
	text_printf(&t, "dualproxy_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);

	return text_take(&t, len);
}

void stats_free(struct stats *st)
{
	while (st->services != NULL) {
		struct service_stats *s = st->services;
		st->services = s->next;
		free(s);
	}
}
