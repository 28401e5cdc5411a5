/* stats.c: counters per service, kept while the service runs, rendered for Prometheus */
#include "autoconfig.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "stats.h"
#include "text.h"

static const char *const family_names[STATS_FAMILY_COUNT] = {
	[STATS_IPV4] = "ipv4",
	[STATS_IPV6] = "ipv6",
};

static const char *const proto_names[STATS_PROTO_COUNT] = {
	[STATS_TCP] = "tcp",
	[STATS_UDP] = "udp",
};

static const char *const dir_names[STATS_DIR_COUNT] = {
	[STATS_UP] = "up",
	[STATS_DOWN] = "down",
};

static const char *const drop_names[DROP_REASON_COUNT] = {
	[DROP_TRUNCATED] = "truncated",
	[DROP_NO_SOCKET] = "no-socket",
	[DROP_BUFFER_FULL] = "buffer-full",
	[DROP_ERROR] = "error",
};

static const char *const pause_names[PAUSE_REASON_COUNT] = {
	[PAUSE_MAX_CONNECTIONS] = "max_connections",
	[PAUSE_DESCRIPTORS] = "descriptors",
};

void stats_init(struct stats *st)
{
	memset(st, 0, sizeof(*st));
	TAILQ_INIT(&st->all);
}

static bool same_name(const struct hnode *n, const void *name)
{
	return strcmp(((const struct service_stats *)n)->name, name) == 0;
}

struct service_stats *stats_ref(struct stats *st, const char *name)
{
	uint64_t hash = htab_hash_str(name);
	struct service_stats *s =
		(struct service_stats *)htab_find(&st->by_name, hash, same_name, name);
	if (s == NULL) {
		size_t len = strlen(name) + 1;
		s = calloc(1, sizeof(*s) + len);
		if (s == NULL)
			return NULL;
		memcpy(s->name, name, len);
		if (htab_insert(&st->by_name, &s->node, hash) < 0) {
			free(s);
			return NULL;
		}
		TAILQ_INSERT_TAIL(&st->all, s, link);
	}
	s->refs++;
	return s;
}

struct service_stats *stats_hold(struct service_stats *s)
{
	s->refs++;
	return s;
}

void stats_unref(struct stats *st, struct service_stats *s)
{
	if (s == NULL || --s->refs > 0)
		return;
	htab_remove(&st->by_name, &s->node);
	TAILQ_REMOVE(&st->all, s, link);
	for (int p = 0; p < STATS_PROTO_COUNT; p++)
		free(s->proto[p]);
	free(s);
}

int stats_use(struct service_stats *s, enum stats_proto p)
{
	if (s->proto[p] == NULL)
		s->proto[p] = calloc(STATS_FAMILY_COUNT, sizeof(*s->proto[p]));
	return s->proto[p] != NULL ? 0 : -1;
}

void stats_commit(struct service_stats *s, enum stats_proto p)
{
	if (s->proto[p] != NULL)
		s->committed[p] = true;
}

struct stats_counters *stats_family(struct service_stats *s, enum stats_proto p, int af)
{
	return &s->proto[p][af == AF_INET6 ? STATS_IPV6 : STATS_IPV4];
}

/* A counter of one protocol summed over the families, given by its offset. */
static uint64_t sum(const struct service_stats *s, int p, size_t offset)
{
	uint64_t total = 0;
	for (int f = 0; f < STATS_FAMILY_COUNT; f++)
		total += *(const uint64_t *)((const char *)&s->proto[p][f] + offset);
	return total;
}

#define OFF(field) offsetof(struct stats_counters, field)

uint64_t stats_backend_errors(const struct stats *st)
{
	uint64_t total = 0;
	const struct service_stats *s;
	TAILQ_FOREACH(s, &st->all, link)
		for (int p = 0; p < STATS_PROTO_COUNT; p++)
			for (int r = 0; r < END_REASON_COUNT && s->proto[p] != NULL; r++)
				if (reason_backend_label(r) != NULL)
					total += sum(s, p, OFF(ended[r]));
	return total;
}

static void header(struct text *t, const char *name, const char *type, const char *help)
{
	text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The services and protocols shown in the metrics. */
#define FOR_SHOWN(st, s, p)                                                    \
	TAILQ_FOREACH(s, &(st)->all, link)                                     \
		for (int p = 0; p < STATS_PROTO_COUNT; p++)                    \
			if (s->committed[p])

/* One series per service and protocol of a counter summed over the families. */
static void per_service(struct text *t, const struct stats *st, const char *name,
			const char *type, const char *help, size_t offset)
{
	const struct service_stats *s;
	header(t, name, type, help);
	FOR_SHOWN(st, s, p)
		text_printf(t, "%s{service=\"%s\",protocol=\"%s\"} %llu\n", name, s->name,
			    proto_names[p], (unsigned long long)sum(s, p, offset));
}

static void render_traffic(struct text *t, const struct stats *st)
{
	const struct service_stats *s;

	header(t, "dualproxy_connections_total", "counter",
	       "Connections relayed (TCP) and flows made (UDP), by service, client address "
	       "family and protocol.");
	FOR_SHOWN(st, s, p)
		for (int f = 0; f < STATS_FAMILY_COUNT; f++)
			text_printf(t, "dualproxy_connections_total{service=\"%s\",family=\"%s\","
				    "protocol=\"%s\"} %llu\n", s->name, family_names[f],
				    proto_names[p], (unsigned long long)s->proto[p][f].opened);
	per_service(t, st, "dualproxy_connections_active", "gauge",
		    "Connections and UDP flows open now.", OFF(active));
	header(t, "dualproxy_bytes_total", "counter",
	       "Payload bytes relayed; up is client to backend, down is backend to client.");
	FOR_SHOWN(st, s, p)
		for (int d = 0; d < STATS_DIR_COUNT; d++)
			text_printf(t, "dualproxy_bytes_total{service=\"%s\",direction=\"%s\","
				    "protocol=\"%s\"} %llu\n", s->name, dir_names[d],
				    proto_names[p], (unsigned long long)sum(s, p, OFF(bytes[d])));
	header(t, "dualproxy_datagrams_total", "counter",
	       "UDP datagrams relayed, by service, client address family and direction.");
	FOR_SHOWN(st, s, p)
		for (int f = 0; f < STATS_FAMILY_COUNT && p == STATS_UDP; f++)
			for (int d = 0; d < STATS_DIR_COUNT; d++)
				text_printf(t, "dualproxy_datagrams_total{service=\"%s\",family=\"%s\","
					    "direction=\"%s\",protocol=\"udp\"} %llu\n", s->name,
					    family_names[f], dir_names[d],
					    (unsigned long long)s->proto[p][f].datagrams[d]);
	header(t, "dualproxy_datagrams_dropped_total", "counter",
	       "UDP datagrams not relayed, by reason: truncated (cut on reading), no-socket "
	       "(a new flow got no socket), buffer-full, error.");
	FOR_SHOWN(st, s, p)
		for (int f = 0; f < STATS_FAMILY_COUNT && p == STATS_UDP; f++)
			for (int d = 0; d < STATS_DIR_COUNT; d++)
				for (int r = 0; r < DROP_REASON_COUNT; r++)
					text_printf(t, "dualproxy_datagrams_dropped_total{service=\"%s\","
						    "family=\"%s\",direction=\"%s\",protocol=\"udp\","
						    "reason=\"%s\"} %llu\n", s->name, family_names[f],
						    dir_names[d], drop_names[r],
						    (unsigned long long)s->proto[p][f].dropped[d][r]);
}

static void render_failures(struct text *t, const struct stats *st)
{
	const struct service_stats *s;

	header(t, "dualproxy_backend_errors_total", "counter",
	       "Connections and UDP flows failed by the backend, by reason.");
	FOR_SHOWN(st, s, p)
		for (int r = 0; r < END_REASON_COUNT; r++)
			if (reason_backend_label(r) != NULL)
				text_printf(t, "dualproxy_backend_errors_total{service=\"%s\",reason=\"%s\","
					    "protocol=\"%s\"} %llu\n", s->name, reason_backend_label(r),
					    proto_names[p], (unsigned long long)sum(s, p, OFF(ended[r])));
	per_service(t, st, "dualproxy_denied_total", "counter",
		    "Clients closed (UDP: datagrams dropped) because the service's allowlist does "
		    "not contain them.", OFF(refused[ADMIT_DENIED]));
	per_service(t, st, "dualproxy_source_limited_total", "counter",
		    "Clients closed (UDP: datagrams dropped) because their address had "
		    "max_connections_per_source open.", OFF(refused[ADMIT_SOURCE_LIMITED]));
	header(t, "dualproxy_refused_total", "counter",
	       "Clients closed (UDP: datagrams dropped) before any backend was contacted for "
	       "another reason than the two above: full, loop (one of dualproxy's own backend "
	       "sockets came back to it) or draining.");
	FOR_SHOWN(st, s, p)
		for (int r = 0; r < ADMIT_RESULT_COUNT; r++)
			if (r != ADMIT_OK && r != ADMIT_DENIED && r != ADMIT_SOURCE_LIMITED)
				text_printf(t, "dualproxy_refused_total{service=\"%s\",reason=\"%s\","
					    "protocol=\"%s\"} %llu\n", s->name,
					    admission_result_name(r), proto_names[p],
					    (unsigned long long)sum(s, p, OFF(refused[r])));
}

/* Descriptors open now (entries of /proc/self/fd, less the one reading it). */
static long open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	long n = 0;
	if (d == NULL)
		return -1;
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n - 3; /* ".", ".." and the directory's own descriptor */
}

static void render_process(struct text *t, const struct stats_process *p)
{
	struct rlimit rl;
	struct timespec cpu;
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "re");

	if (f != NULL) {
		if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	header(t, "process_open_fds", "gauge", "Number of open file descriptors.");
	text_printf(t, "process_open_fds %ld\n", open_fds());
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		header(t, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
		text_printf(t, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
	}
	header(t, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
	text_printf(t, "process_resident_memory_bytes %lld\n",
		    (long long)rss * sysconf(_SC_PAGESIZE));
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
	header(t, "process_cpu_seconds_total", "counter",
	       "Total user and system CPU time spent in seconds.");
	text_printf(t, "process_cpu_seconds_total %.6f\n", cpu.tv_sec + cpu.tv_nsec / 1e9);
	header(t, "process_start_time_seconds", "gauge",
	       "Start time of the process since the Unix epoch in seconds.");
	text_printf(t, "process_start_time_seconds %.3f\n", p->start_time);
}

char *stats_render(const struct stats *st, const struct stats_process *p, size_t *len)
{
	struct text t = { 0 };

	render_traffic(&t, st);
	render_failures(&t, st);
	header(&t, "dualproxy_connections_max", "gauge",
	       "Connections and flows admitted at most now: max_connections, or fewer when "
	       "the descriptors left allow fewer (those open, and two per new TCP connection).");
	text_printf(&t, "dualproxy_connections_max %lu\n", p->connections_max);
	header(&t, "dualproxy_accept_paused_total", "counter",
	       "Times accepting paused, by reason: the connection limit, or no descriptor left.");
	for (int r = 0; r < PAUSE_REASON_COUNT; r++)
		text_printf(&t, "dualproxy_accept_paused_total{reason=\"%s\"} %llu\n",
			    pause_names[r], (unsigned long long)p->paused[r]);
	header(&t, "dualproxy_reloads_total", "counter", "Configuration reloads, by result.");
	text_printf(&t, "dualproxy_reloads_total{result=\"success\"} %llu\n",
		    (unsigned long long)st->reloads_ok);
	text_printf(&t, "dualproxy_reloads_total{result=\"failure\"} %llu\n",
		    (unsigned long long)st->reloads_failed);
	header(&t, "dualproxy_log_lines_dropped_total", "counter",
	       "Log lines dropped because stderr was not being read.");
	text_printf(&t, "dualproxy_log_lines_dropped_total %llu\n",
		    (unsigned long long)p->log_lines_dropped);
	header(&t, "dualproxy_notify_dropped_total", "counter",
	       "Messages to the service manager dropped because its queue was full.");
	text_printf(&t, "dualproxy_notify_dropped_total %llu\n",
		    (unsigned long long)st->notify_dropped);
	header(&t, "dualproxy_metrics_denied_total", "counter",
	       "Metrics clients closed because metrics_allow does not contain them.");
	text_printf(&t, "dualproxy_metrics_denied_total %llu\n",
		    (unsigned long long)p->metrics_denied);
	header(&t, "dualproxy_build_info", "gauge", "The running version of dualproxy.");
	text_printf(&t, "dualproxy_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
	render_process(&t, p);
	return text_take(&t, len);
}

void stats_free(struct stats *st)
{
	while (!TAILQ_EMPTY(&st->all)) {
		struct service_stats *s = TAILQ_FIRST(&st->all);
		TAILQ_REMOVE(&st->all, s, link);
		for (int p = 0; p < STATS_PROTO_COUNT; p++)
			free(s->proto[p]);
		free(s);
	}
	htab_free(&st->by_name);
}
