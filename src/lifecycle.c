/* lifecycle.c: start-up, privilege drop, reload, drain and exit of the daemon */
#include "autoconfig.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sysexits.h>

#include "envconfig.h"
#include "lifecycle.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "privs.h"
#include "relay.h"
#include "watch.h"

#define PIPE_FD_SHARE 4      /* pipes may use at most 1/PIPE_FD_SHARE of the fds */
#define PIPE_FD_MIN 1024     /* below this descriptor limit, relay without pipes */
#define PIPE_CACHE 64        /* empty pipes kept for reuse */
#define STATUS_INTERVAL 2.0  /* seconds between STATUS= updates to systemd */

extern char **environ;

/* Watchers that live as long as the loop. None of them keeps the loop
 * alive (ev_unref): it ends when listeners and connections are gone. */
struct lifecycle {
	ev_signal term, intr, hup;
	ev_timer drain;         /* SIGTERM: the deadline for live connections */
	ev_timer status;        /* STATUS= updates while NOTIFY_SOCKET is set */
	struct config_watch watch; /* watch_config */
	unsigned long last_status;
};

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

static struct lifecycle *lc_of(struct dualproxy *dp)
{
	return ev_userdata(dp->loop);
}

static void on_drain_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct dualproxy *dp = w->data;
	(void)revents;
	ev_ref(loop); /* libev stopped the unreferenced timer before calling us */
	log_warn("drain_timeout: closing %lu connections still open", dp->active);
	relay_close_all(dp);
}

/* Watches the config file when watch_config says so (not the environment). */
static void update_watch(struct dualproxy *dp)
{
	struct lifecycle *lc = lc_of(dp);
	if (dp->config->watch_config && dp->config_path != NULL)
		watch_start(&lc->watch, dp->config_path);
	else
		watch_stop(&lc->watch);
}

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct dualproxy *dp = w->data;
	struct lifecycle *lc = lc_of(dp);
	(void)revents;

	if (dp->stopping) {
		log_info("SIG%s again: closing %lu connections now", sigabbrev_np(w->signum),
			 dp->active);
		relay_close_all(dp);
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	dp->stopping = true;
	notify_send("STOPPING=1");
	listeners_close_all(dp);
	metrics_close(dp->metrics);
	dp->metrics = NULL;
	watch_stop(&lc->watch);
	log_info("SIG%s: draining %lu connections for up to %gs", sigabbrev_np(w->signum),
		 dp->active, dp->config->drain_timeout);
	ev_timer_set(&lc->drain, dp->config->drain_timeout, 0.);
	ev_timer_start(loop, &lc->drain);
	ev_unref(loop);
	/* the loop ends by itself once the last connection has ended */
}

static void send_status(struct dualproxy *dp)
{
	uint64_t backend_errors = 0;
	for (const struct service_stats *s = dp->stats.services; s != NULL; s = s->next)
		for (int e = 0; e < BACKEND_ERROR_COUNT; e++)
			backend_errors += s->backend_errors[e];
	notify_send("STATUS=%lu connections, %llu accepted, %llu backend errors",
		    dp->active, (unsigned long long)dp->accepted,
		    (unsigned long long)backend_errors);
	lc_of(dp)->last_status = dp->active;
}

static void on_status(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct dualproxy *dp = w->data;
	(void)loop;
	(void)revents;
	if (dp->active != lc_of(dp)->last_status)
		send_status(dp);
}

/* The [global] keys a running process cannot change after the drop. */
static void warn_restart_only(const struct config *old, const struct config *cfg)
{
	if (strcmp(old->user, cfg->user) != 0)
		log_warn("reload: user changed to '%s': takes effect after a restart",
			 cfg->user);
	if (old->keep_net_bind != cfg->keep_net_bind)
		log_warn("reload: keep_net_bind changed: takes effect after a restart");
}

/* The configuration from the file, or from the klipper-lb environment. */
static struct config *load(const struct dualproxy *dp, struct config_error *err)
{
	if (dp->config_path == NULL)
		return envconfig_load(environ, err);
	config_check_owner(dp->config_path);
	return config_load_file(dp->config_path, err);
}

/* Opens cfg's metrics endpoint if it differs from the running one; *out is
 * what the daemon should serve after a commit. Returns 0, or -1 on failure. */
static int metrics_prepare(struct dualproxy *dp, const struct config *cfg,
			   struct metrics **out)
{
	*out = dp->metrics;
	if (metrics_same(dp->metrics, cfg))
		return 0;
	*out = NULL;
	if (cfg->n_metrics_listen == 0)
		return 0;
	*out = metrics_open(dp, cfg);
	return *out != NULL ? 0 : -1;
}

static void metrics_commit(struct dualproxy *dp, struct metrics *m)
{
	if (m != dp->metrics) {
		metrics_close(dp->metrics);
		dp->metrics = m;
	}
}

static void reload(struct dualproxy *dp, const char *why)
{
	struct config_error err;
	struct listeners_diff diff;
	struct metrics *m = NULL;
	char msg[2 * CONFIG_MSG_MAX];

	log_info("reloading (%s)", why);
	notify_reloading();
	struct config *cfg = load(dp, &err);
	watch_loaded(&lc_of(dp)->watch); /* a broken file is not retried until it changes */
	if (cfg == NULL) {
		log_error("%s", config_error_format(&err, msg, sizeof(msg)));
	} else if (metrics_prepare(dp, cfg, &m) < 0) {
		config_unref(cfg);
		cfg = NULL;
	} else if (listeners_apply(dp, cfg, &diff) < 0) {
		if (m != dp->metrics)
			metrics_close(m);
		config_unref(cfg);
		cfg = NULL;
	}
	if (cfg == NULL) {
		dp->stats.reloads_failed++;
		log_error("reload failed: keeping the running configuration");
		notify_send("READY=1");
		return;
	}
	metrics_commit(dp, m);
	warn_restart_only(dp->config, cfg);
	config_unref(dp->config); /* live relays keep their own reference */
	dp->config = cfg;
	log_set_level(cfg->log_level);
	listeners_update_capacity(dp);
	update_watch(dp);
	dp->stats.reloads_ok++;
	log_info("reload: %u added, %u kept, %u removed", diff.added, diff.kept,
		 diff.removed);
	notify_send("READY=1");
	send_status(dp);
}

static void on_file_changed(void *ctx)
{
	struct dualproxy *dp = ctx;
	reload(dp, "the file changed");
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct dualproxy *dp = w->data;
	(void)loop;
	(void)revents;
	if (dp->stopping) {
		log_info("SIGHUP while stopping: ignored");
		return;
	}
	reload(dp, "SIGHUP");
}

static void start_watchers(struct dualproxy *dp, struct lifecycle *lc)
{
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
	ev_unref(loop);
	ev_unref(loop);
	ev_unref(loop);
	if (notify_enabled()) {
		ev_timer_start(loop, &lc->status);
		ev_unref(loop);
	}
}

int lifecycle_start(struct dualproxy *dp, const char *path, struct config *cfg)
{
	struct listeners_diff diff;

	memset(dp, 0, sizeof(*dp));
	dp->config_path = path;
	dp->config = cfg;
	if (path != NULL)
		config_check_owner(path);
	signal(SIGPIPE, SIG_IGN);

	dp->loop = ev_default_loop(EVBACKEND_EPOLL | EVFLAG_NOENV);
	if (dp->loop == NULL) {
		log_error("cannot create the event loop (epoll)");
		return EX_OSERR;
	}
	struct lifecycle *lc = calloc(1, sizeof(*lc));
	rlim_t nofile = raise_fd_limit();
	if (lc == NULL ||
	    pipe_pool_init(&dp->pipes,
			   nofile < PIPE_FD_MIN ? 0 : nofile / (2 * PIPE_FD_SHARE),
			   PIPE_CACHE) < 0 ||
	    (dp->chunk = malloc(RELAY_CHUNK)) == NULL) {
		free(lc);
		log_error("out of memory");
		return EX_OSERR;
	}
	dp->fd_limit = nofile;
	ev_set_userdata(dp->loop, lc);
	relay_init(dp);
	start_watchers(dp, lc);

	if (listeners_apply(dp, cfg, &diff) < 0 ||
	    (cfg->n_metrics_listen > 0 && (dp->metrics = metrics_open(dp, cfg)) == NULL))
		return EX_OSERR;
	if (privs_drop(cfg) < 0)
		return EX_OSERR;
	update_watch(dp);
	unsigned long capacity = listeners_capacity(dp);
	if (capacity < cfg->max_connections)
		log_info("descriptor limit %llu leaves room for %lu connections, fewer "
			 "than max_connections (%lu)", (unsigned long long)nofile, capacity,
			 cfg->max_connections);
	log_info("ready: %zu services, %u listeners, %lu max connections, pipe budget %zu",
		 cfg->n_services, diff.added,
		 capacity < cfg->max_connections ? capacity : cfg->max_connections,
		 dp->pipes.budget);
	notify_send("READY=1\nSTATUS=0 connections, listening on %u addresses",
		    diff.added);
	return 0;
}

int lifecycle_run(struct dualproxy *dp)
{
	ev_run(dp->loop, 0);
	log_info("stopped");
	return EX_OK;
}

void lifecycle_cleanup(struct dualproxy *dp)
{
	struct ev_loop *loop = dp->loop;

	if (loop != NULL && lc_of(dp) != NULL) {
		struct lifecycle *lc = lc_of(dp);
		/* give back the references taken by ev_unref before stopping */
		if (ev_is_active(&lc->drain))
			ev_ref(loop);
		if (ev_is_active(&lc->status))
			ev_ref(loop);
		ev_ref(loop);
		ev_ref(loop);
		ev_ref(loop);
		watch_stop(&lc->watch);
		ev_timer_stop(loop, &lc->drain);
		ev_timer_stop(loop, &lc->status);
		ev_signal_stop(loop, &lc->term);
		ev_signal_stop(loop, &lc->intr);
		ev_signal_stop(loop, &lc->hup);
		free(lc);
		ev_set_userdata(loop, NULL);
	}
	listeners_close_all(dp);
	metrics_close(dp->metrics);
	relay_close_all(dp);
	pipe_pool_free(&dp->pipes);
	stats_free(&dp->stats);
	sources_free(&dp->sources);
	free(dp->chunk);
	config_unref(dp->config);
	if (loop != NULL)
		ev_loop_destroy(loop);
	memset(dp, 0, sizeof(*dp));
}
