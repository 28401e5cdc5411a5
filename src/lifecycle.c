/* lifecycle.c: start-up, signals and shutdown of the daemon */
#include "autoconfig.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sysexits.h>

#include "lifecycle.h"
#include "listener.h"
#include "log.h"
#include "relay.h"

#define PIPE_FD_SHARE 4 /* pipes may use at most 1/PIPE_FD_SHARE of the fds */
#define PIPE_CACHE 64   /* empty pipes kept for reuse */

/* The signal watchers; they live as long as the loop. */
struct signals {
	ev_signal term, intr;
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

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct dualproxy *dp = w->data;
	(void)revents;

	log_info("%s: stopping (%lu connections open)", strsignal(w->signum),
		 dp->active);
	dp->stopping = true;
	listeners_close_all(dp);
	relay_close_all(dp);
	ev_break(loop, EVBREAK_ALL);
}

int lifecycle_start(struct dualproxy *dp, struct config *cfg)
{
	memset(dp, 0, sizeof(*dp));
	dp->config = cfg;
	signal(SIGPIPE, SIG_IGN);

	dp->loop = ev_default_loop(EVBACKEND_EPOLL | EVFLAG_NOENV);
	if (dp->loop == NULL) {
		log_error("cannot create the event loop (epoll)");
		return EX_OSERR;
	}
	rlim_t nofile = raise_fd_limit();
	if (pipe_pool_init(&dp->pipes, nofile / (2 * PIPE_FD_SHARE), PIPE_CACHE) < 0 ||
	    (dp->chunk = malloc(RELAY_CHUNK)) == NULL) {
		log_error("out of memory");
		return EX_OSERR;
	}
	if (listeners_open_all(dp, cfg) < 0)
		return EX_OSERR;

	struct signals *sig = calloc(1, sizeof(*sig));
	if (sig == NULL) {
		log_error("out of memory");
		return EX_OSERR;
	}
	ev_signal_init(&sig->term, on_stop, SIGTERM);
	ev_signal_init(&sig->intr, on_stop, SIGINT);
	sig->term.data = sig->intr.data = dp;
	ev_signal_start(dp->loop, &sig->term);
	ev_signal_start(dp->loop, &sig->intr);
	ev_unref(dp->loop); /* signal watchers alone do not keep the loop alive */
	ev_unref(dp->loop);
	ev_set_userdata(dp->loop, sig);

	for (struct listener *l = dp->listeners; l != NULL; l = l->next)
		listener_start(l);
	log_info("ready: %zu services, %lu max connections, pipe budget %zu",
		 cfg->n_services, cfg->max_connections, dp->pipes.budget);
	return 0;
}

int lifecycle_run(struct dualproxy *dp)
{
	ev_run(dp->loop, 0);
	return EX_OK;
}

void lifecycle_cleanup(struct dualproxy *dp)
{
	if (dp->loop != NULL) {
		struct signals *sig = ev_userdata(dp->loop);
		if (sig != NULL) {
			ev_ref(dp->loop);
			ev_ref(dp->loop);
			ev_signal_stop(dp->loop, &sig->term);
			ev_signal_stop(dp->loop, &sig->intr);
			free(sig);
		}
	}
	listeners_close_all(dp);
	relay_close_all(dp);
	pipe_pool_free(&dp->pipes);
	free(dp->chunk);
	config_unref(dp->config);
	if (dp->loop != NULL)
		ev_loop_destroy(dp->loop);
	memset(dp, 0, sizeof(*dp));
}
