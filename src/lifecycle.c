/* lifecycle.c: start-up, privilege drop, reload, drain and exit of the daemon */
#include "autoconfig.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "dualproxy.h"
#include "envconfig.h"
#include "lifecycle.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "privs.h"
#include "relay.h"
#include "udp.h"

#define PIPE_FD_SHARE 4      /* pipes may use at most 1/PIPE_FD_SHARE of the fds */
#define PIPE_FD_MIN 1024     /* below this descriptor limit, relay without pipes */
#define PIPE_CACHE 64        /* empty pipes kept for reuse */
#define STATUS_INTERVAL 2.0  /* seconds between STATUS= updates to systemd */
#define FD_RESERVE 32        /* descriptors for stdio, the loop, logging, notify */

extern char **environ;

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents);
static void on_hup(struct ev_loop *loop, ev_signal *w, int revents);
static void on_drain_timeout(struct ev_loop *loop, ev_timer *w, int revents);
static void on_status(struct ev_loop *loop, ev_timer *w, int revents);
static void on_file_changed(void *ctx);

/* ---- start-up ---- */

/* Raises the soft descriptor limit to the hard one and returns it. */
static rlim_t raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur;
}

/* Descriptors that are not for connections, flows or pipes: listeners,
 * the metrics endpoint and its clients, and a reserve. */
static unsigned long fds_reserved(const struct dualproxy *dp)
{
	return FD_RESERVE + dp->n_listeners + metrics_fds(dp->config);
}

/* Applies cfg's limits to admission; logs when descriptors allow fewer. */
static void configure_admission(struct dualproxy *dp)
{
	admission_configure(&dp->admission, dp->config, fds_reserved(dp));
	unsigned long capacity = admission_capacity(&dp->admission);
	if (capacity < dp->config->max_connections)
		log_info("descriptor limit %lu leaves room for %lu TCP connections (or twice "
			 "as many UDP flows), fewer than max_connections (%lu)",
			 dp->admission.fd_limit, capacity, dp->config->max_connections);
}

/* Watches the config file when watch_config says so (not the environment). */
static void update_watch(struct dualproxy *dp)
{
	struct lifecycle *lc = &dp->lifecycle;
	if (dp->config->watch_config && dp->config_path != NULL)
		watch_start(&lc->watch, dp->config_path);
	else
		watch_stop(&lc->watch);
}

static void start_watchers(struct dualproxy *dp)
{
	struct lifecycle *lc = &dp->lifecycle;
	struct ev_loop *loop = dp->loop;

	ev_signal_init(&lc->term, on_stop, SIGTERM);
	ev_signal_init(&lc->intr, on_stop, SIGINT);
	ev_signal_init(&lc->hup, on_hup, SIGHUP);
	ev_timer_init(&lc->drain, on_drain_timeout, 0., 0.);
	ev_timer_init(&lc->status, on_status, STATUS_INTERVAL, STATUS_INTERVAL);
	watch_init(&lc->watch, loop, on_file_changed, dp);
	lc->term.data = lc->intr.data = lc->hup.data = dp;
	lc->drain.data = lc->status.data = dp;
	ev_signal_start(loop, &lc->term);
	ev_signal_start(loop, &lc->intr);
	ev_signal_start(loop, &lc->hup);
	if (notify_enabled(&lc->notify))
		ev_timer_start(loop, &lc->status);
}

/* The loop, the descriptor limit, the pipes, the relays and admission. */
static int create_runtime(struct dualproxy *dp)
{
	dp->loop = ev_default_loop(EVBACKEND_EPOLL | EVFLAG_NOENV);
	if (dp->loop == NULL) {
		log_error("cannot create the event loop (epoll)");
		return EX_OSERR;
	}
	rlim_t nofile = raise_fd_limit();
	size_t pipes = nofile < PIPE_FD_MIN ? 0 : nofile / (2 * PIPE_FD_SHARE);
	admission_init(&dp->admission, dp->loop, nofile, &dp->pipes.count);
	if (pipe_pool_init(&dp->pipes, pipes, PIPE_CACHE) < 0 || relay_init(dp) < 0) {
		log_error("out of memory");
		return EX_OSERR;
	}
	return 0;
}

int lifecycle_start(struct dualproxy *dp, const char *path, struct config *cfg)
{
	struct listeners_diff diff;
	struct lifecycle *lc = &dp->lifecycle;

	memset(dp, 0, sizeof(*dp));
	dp->config_path = path;
	dp->config = cfg;
	LIST_INIT(&dp->listeners);
	stats_init(&dp->stats);
	lc->start_time = (double)time(NULL);
	lc->started_as_root = geteuid() == 0;
	if (path != NULL)
		config_check_owner(path, lc->started_as_root);
	signal(SIGPIPE, SIG_IGN);
	notify_open(&lc->notify, &dp->stats.notify_dropped);

	int rc = create_runtime(dp);
	if (rc != 0)
		return rc;
	log_attach(dp->loop); /* before the drop: it may reopen stderr */
	start_watchers(dp);
	admission_configure(&dp->admission, cfg, fds_reserved(dp));
	if (listeners_apply(dp, cfg, &diff) < 0 ||
	    (cfg->n_metrics_listen > 0 && (dp->metrics = metrics_open(dp, cfg)) == NULL))
		return EX_OSERR;
	if (privs_drop(cfg) < 0)
		return EX_OSERR;
	update_watch(dp);
	configure_admission(dp);
	log_info("ready: %zu services, %u listeners, %lu max connections, pipe budget %zu",
		 cfg->n_services, diff.added, admission_capacity(&dp->admission),
		 dp->pipes.budget);
	notify_send(&lc->notify, "READY=1", "0 connections, listening on %u addresses",
		    diff.added);
	return 0;
}

int lifecycle_run(struct dualproxy *dp)
{
	ev_run(dp->loop, 0);
	log_info("stopped");
	return EX_OK;
}

/* ---- status ---- */

static void send_status(struct dualproxy *dp, const char *state)
{
	struct lifecycle *lc = &dp->lifecycle;
	notify_send(&lc->notify, state, "%lu connections, %llu accepted, %llu backend errors",
		    dp->admission.active, (unsigned long long)dp->accepted,
		    (unsigned long long)stats_backend_errors(&dp->stats));
	lc->last_status = dp->admission.active;
}

static void on_status(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct dualproxy *dp = w->data;
	(void)loop;
	(void)revents;
	/* also carries a state that was dropped while the manager was busy */
	if (dp->admission.active != dp->lifecycle.last_status || dp->lifecycle.notify.unsent[0])
		send_status(dp, NULL);
}

/* ---- reload ---- */

/* Refuses a change of the [global] keys that a running process cannot
 * apply after the drop (and that would need the name service); returns -1
 * after logging it with its line. */
static int check_restart_only(const struct config *old, const struct config *cfg)
{
	struct config_error err = { .line = 0 };
	char msg[2 * CONFIG_MSG_MAX];

	snprintf(err.file, sizeof(err.file), "%s", cfg->path);
	if (strcmp(old->user, cfg->user) != 0) {
		err.line = cfg->user_line;
		snprintf(err.msg, sizeof(err.msg), "user: changed from '%s' to '%s': a running "
			 "dualproxy cannot switch users; restart it to apply", old->user, cfg->user);
	} else if (old->keep_net_bind != cfg->keep_net_bind) {
		err.line = cfg->keep_net_bind_line;
		snprintf(err.msg, sizeof(err.msg), "keep_net_bind: changed: a running dualproxy "
			 "cannot regain or drop a capability; restart it to apply");
	} else {
		return 0;
	}
	log_error("%s", config_error_format(&err, msg, sizeof(msg)));
	return -1;
}

/* The bytes of the configuration: the file's (read without blocking, see
 * config_read_file), or the text made from the klipper-lb environment.
 * Returns 0 with a malloc'd *text, or -1 with *err. */
static int read_source(const struct dualproxy *dp, char **text, size_t *len,
		       struct config_error *err)
{
	if (dp->config_path == NULL) {
		*text = envconfig_text(environ, err);
		*len = *text != NULL ? strlen(*text) : 0;
		return *text != NULL ? 0 : -1;
	}
	config_check_owner(dp->config_path, dp->lifecycle.started_as_root);
	return config_read_file(dp->config_path, text, len, err);
}

static struct config *parse_source(const struct dualproxy *dp, char *text, size_t len,
				   struct config_error *err)
{
	if (dp->config_path == NULL)
		return envconfig_load_text(text, err);
	return config_load_text(dp->config_path, text, len, err);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* True when one of the n addresses a overlaps one of the m addresses b. */
static bool any_overlap(const struct addr *a, size_t n, const struct addr *b, size_t m)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < m; j++)
			if (addr_overlaps(&a[i], &b[j]))
				return true;
	return false;
}

/* True when a service of cfg listens on an address that overlaps one of
 * the n addresses m (the running metrics endpoint's). */
static bool listens_over(const struct config *cfg, const struct addr *m, size_t n)
{
	for (const struct service *svc = cfg->services; svc != NULL; svc = svc->next)
		if (svc->tcp && any_overlap(svc->listen, svc->n_listen, m, n))
			return true;
	return false;
}

/* True when cfg's metrics_listen overlaps one of the open TCP listeners,
 * which cfg then removes (a config has no overlap of its own). */
static bool metrics_over_listeners(const struct dualproxy *dp, const struct config *cfg)
{
	const struct listener *l;
	LIST_FOREACH(l, &dp->listeners, link)
		if (l->type == SOCK_STREAM &&
		    any_overlap(&l->addr, 1, cfg->metrics_listen, cfg->n_metrics_listen))
			return true;
	return false;
}

/* Opens the running configuration's metrics endpoint again after a failed
 * reload closed it. */
static void metrics_reopen(struct dualproxy *dp)
{
	if (dp->metrics != NULL || dp->config->n_metrics_listen == 0)
		return;
	dp->metrics = metrics_open(dp, dp->config);
	if (dp->metrics == NULL)
		log_error("the metrics endpoint could not be opened again: /metrics is not "
			  "served until dualproxy is restarted");
}

/* Builds, validates and applies a new configuration; on any error the
 * running one stays as it was. Returns 0 when it was applied.
 *
 * The metrics endpoint moves with the listeners: the new one is bound
 * before them, unless it takes an address a listener gives up (then right
 * after that listener closed), and the old one closes first when something
 * new overlaps it. Either way the moving address refuses connections for
 * the moment in between, which is logged. */
static int apply(struct dualproxy *dp, struct config *cfg, struct listeners_diff *diff)
{
	const struct config *old = dp->config;
	struct metrics *m = dp->metrics;
	char a[ADDR_STRLEN];

	if (check_restart_only(old, cfg) < 0)
		return -1;
	bool change = !metrics_same(dp->metrics, cfg);
	bool close_first = change && dp->metrics != NULL &&
		(any_overlap(cfg->metrics_listen, cfg->n_metrics_listen, old->metrics_listen,
			     old->n_metrics_listen) ||
		 listens_over(cfg, old->metrics_listen, old->n_metrics_listen));
	bool open_after = change && metrics_over_listeners(dp, cfg);
	double closed_at = now_ms();

	if (close_first) {
		log_info("closing metrics on %s first: the reload binds what overlaps it",
			 addr_format(&old->metrics_listen[0], a));
		metrics_close(dp->metrics);
		dp->metrics = NULL;
	}
	if (change)
		m = NULL;
	if (change && cfg->n_metrics_listen > 0 && !open_after &&
	    (m = metrics_open(dp, cfg)) == NULL)
		goto fail;
	if (listeners_apply(dp, cfg, diff) < 0)
		goto fail;
	if (open_after && (m = metrics_open(dp, cfg)) == NULL) {
		struct listeners_diff back;
		/* the listeners are cfg's already: put the running ones back */
		if (listeners_apply(dp, dp->config, &back) < 0)
			log_error("the running configuration's listeners could not all be "
				  "opened again: restart dualproxy");
		goto fail;
	}
	if ((close_first || open_after) && cfg->n_metrics_listen > 0)
		log_info("metrics_listen %s: open after what it overlaps closed: refused "
			 "connections for up to %.1f ms", addr_format(&cfg->metrics_listen[0], a),
			 now_ms() - closed_at);
	if (m != dp->metrics) {
		metrics_close(dp->metrics);
		dp->metrics = m;
	}
	metrics_set_config(dp->metrics, cfg);
	config_unref(dp->config); /* live relays keep their own services */
	dp->config = config_ref(cfg);
	log_set_level(cfg->log_level);
	configure_admission(dp);
	update_watch(dp);
	return 0;
fail:
	if (m != dp->metrics)
		metrics_close(m);
	metrics_reopen(dp);
	return -1;
}

/* Gives the memory of a replaced configuration back to the system: glibc
 * keeps freed pages otherwise, and a big reload would pin them. */
static void release_memory(void)
{
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

static void reload(struct dualproxy *dp, const char *why)
{
	struct lifecycle *lc = &dp->lifecycle;
	struct config_error err;
	struct listeners_diff diff;
	char msg[2 * CONFIG_MSG_MAX];
	char *text = NULL;
	size_t len = 0;

	log_info("reloading (%s)", why);
	notify_reloading(&lc->notify);
	double start = now_ms();
	int rc = read_source(dp, &text, &len, &err);
	watch_loaded(&lc->watch); /* a broken file is not retried until it changes */
	if (rc == 0 && config_same_text(dp->config, text, len)) {
		free(text);
		release_memory(); /* what connections that ended since held */
		dp->stats.reloads_ok++;
		log_info("the %s is unchanged since the last reload: nothing to apply",
			 dp->config_path != NULL ? "file" : "environment");
		log_info("reload: 0 added, %u kept, 0 removed", dp->n_listeners);
		send_status(dp, "READY=1");
		return;
	}
	struct config *cfg = rc == 0 ? parse_source(dp, text, len, &err) : NULL;
	if (cfg == NULL)
		log_error("%s", config_error_format(&err, msg, sizeof(msg)));
	if (cfg == NULL || apply(dp, cfg, &diff) < 0) {
		config_unref(cfg);
		release_memory();
		dp->stats.reloads_failed++;
		log_error("reload failed: keeping the running configuration");
		send_status(dp, "READY=1");
		return;
	}
	config_unref(cfg);
	release_memory();
	dp->stats.reloads_ok++;
	log_debug("reload: read, checked and applied in %.1f ms", now_ms() - start);
	log_info("reload: %u added, %u kept, %u removed", diff.added, diff.kept, diff.removed);
	send_status(dp, "READY=1");
}

static void on_file_changed(void *ctx)
{
	reload(ctx, "the file changed");
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct dualproxy *dp = w->data;
	(void)loop;
	(void)revents;
	if (dp->lifecycle.stopping) {
		log_info("SIGHUP while stopping: ignored");
		return;
	}
	reload(dp, "SIGHUP");
}

/* ---- drain and exit ---- */

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct dualproxy *dp = w->data;
	struct lifecycle *lc = &dp->lifecycle;
	(void)revents;

	if (lc->stopping) {
		log_info("SIG%s again: closing %lu connections now", sigabbrev_np(w->signum),
			 dp->admission.active);
		relay_close_all(dp);
		udp_close_all(dp);
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	lc->stopping = true;
	notify_send(&lc->notify, "STOPPING=1", NULL);
	listeners_close_tcp(dp); /* UDP sockets stay for the replies of draining flows */
	metrics_close(dp->metrics);
	dp->metrics = NULL;
	watch_stop(&lc->watch);
	log_info("SIG%s: draining %lu connections for up to %gs", sigabbrev_np(w->signum),
		 dp->admission.active, dp->config->drain_timeout);
	ev_timer_set(&lc->drain, dp->config->drain_timeout, 0.);
	ev_timer_start(loop, &lc->drain);
	/* the loop ends when the last connection has ended, or at the deadline */
	admission_drain(&dp->admission);
	udp_drain(dp);
}

static void on_drain_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct dualproxy *dp = w->data;
	(void)revents;
	log_warn("drain_timeout: closing %lu connections still open", dp->admission.active);
	relay_close_all(dp);
	udp_close_all(dp);
	ev_break(loop, EVBREAK_ALL);
}

void lifecycle_cleanup(struct dualproxy *dp)
{
	struct lifecycle *lc = &dp->lifecycle;
	struct ev_loop *loop = dp->loop;

	if (loop != NULL) {
		watch_stop(&lc->watch);
		ev_timer_stop(loop, &lc->drain);
		ev_timer_stop(loop, &lc->status);
		ev_signal_stop(loop, &lc->term);
		ev_signal_stop(loop, &lc->intr);
		ev_signal_stop(loop, &lc->hup);
		listeners_close_all(dp);
		metrics_close(dp->metrics);
		relay_close_all(dp);
		relay_cleanup(dp);
		udp_cleanup(dp);
		admission_free(&dp->admission);
	}
	pipe_pool_free(&dp->pipes);
	stats_free(&dp->stats);
	notify_close(&lc->notify);
	config_unref(dp->config);
	log_detach();
	if (loop != NULL)
		ev_loop_destroy(loop);
	memset(dp, 0, sizeof(*dp));
}
