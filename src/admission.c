/* admission.c: the accept-side decisions, shared by TCP connections and UDP
 * flows: allowlist, per-source limit, capacity, self-loops, accept backoff */
#include "autoconfig.h"

#include <assert.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>

#include "admission.h"
#include "log.h"

#define FD_BACKOFF_SEC 0.1   /* gates closed after EMFILE/ENFILE */
#define FDS_PER_RELAY 2      /* a relay holds two sockets (a UDP flow one) */

static const char *const result_names[ADMIT_RESULT_COUNT] = {
	[ADMIT_OK] = "admitted",
	[ADMIT_DENIED] = "denied",
	[ADMIT_SOURCE_LIMITED] = "source-limited",
	[ADMIT_FULL] = "full",
	[ADMIT_LOOP] = "loop",
	[ADMIT_DRAINING] = "draining",
};

const char *admission_result_name(enum admit_result r)
{
	return result_names[r];
}

static bool gate_open(const struct admission *a, const struct admission_gate *g)
{
	return !a->draining && !ev_is_active(&a->backoff) && !(g->relays && a->full);
}

static void gate_update(struct admission *a, struct admission_gate *g)
{
	if (gate_open(a, g))
		ev_io_start(a->loop, g->io);
	else
		ev_io_stop(a->loop, g->io);
}

static void gates_update(struct admission *a)
{
	struct admission_gate *g;
	LIST_FOREACH(g, &a->gates, link)
		gate_update(a, g);
}

static void on_backoff(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	gates_update(w->data);
}

void admission_init(struct admission *a, struct ev_loop *loop, unsigned long fd_limit,
		    const size_t *pipes)
{
	memset(a, 0, sizeof(*a));
	a->loop = loop;
	a->fd_limit = fd_limit;
	a->pipes = pipes;
	a->max_connections = DEFAULT_MAX_CONNECTIONS;
	LIST_INIT(&a->gates);
	loops_init(&a->loops);
	ev_timer_init(&a->backoff, on_backoff, FD_BACKOFF_SEC, 0.);
	a->backoff.data = a;
}

/* Descriptors for connections, flows and pipes, all told. */
static unsigned long fd_budget(const struct admission *a)
{
	if (a->fd_limit == 0)
		return ULONG_MAX / 2;
	return a->fd_limit > a->fd_reserved ? a->fd_limit - a->fd_reserved : 0;
}

static unsigned long fds_used(const struct admission *a)
{
	return a->fds + 2 * (unsigned long)(a->pipes != NULL ? *a->pipes : 0);
}

unsigned long admission_spare_fds(const struct admission *a)
{
	unsigned long budget = fd_budget(a), used = fds_used(a);
	return used < budget ? budget - used : 0;
}

unsigned long admission_capacity(const struct admission *a)
{
	/* those open now, and the TCP connections the spare descriptors allow */
	unsigned long by_fds = a->active + admission_spare_fds(a) / FDS_PER_RELAY;
	if (by_fds == 0)
		by_fds = 1;
	return by_fds < a->max_connections ? by_fds : a->max_connections;
}

/* Room for one more admitted client that holds fds descriptors. */
static bool room_for(const struct admission *a, unsigned fds)
{
	return a->active < a->max_connections && admission_spare_fds(a) >= fds;
}

/* Closes or reopens the relay gates when the count crosses the limit. */
static void update_full(struct admission *a)
{
	bool full = !room_for(a, FDS_PER_RELAY);
	if (full == a->full)
		return;
	a->full = full;
	gates_update(a);
	if (full) {
		bool by_max = a->active >= a->max_connections;
		a->paused[by_max ? PAUSE_MAX_CONNECTIONS : PAUSE_DESCRIPTORS]++;
		log_warn("%lu connections and flows (%s) reached: accepting paused", a->active,
			 by_max ? "max_connections" : "descriptor limit");
	} else {
		log_info("below the connection limit again: accepting resumed");
	}
}

void admission_configure(struct admission *a, const struct config *cfg,
			 unsigned long fd_reserved)
{
	a->max_connections = cfg->max_connections;
	a->per_source = cfg->max_connections_per_source;
	a->fd_reserved = fd_reserved;
	update_full(a);
}

enum admit_result admission_check(struct admission *a, const struct service *svc,
				  const struct addr *client, unsigned fds, bool *source_counted)
{
	*source_counted = false;
	if (a->draining)
		return ADMIT_DRAINING;
	if (svc->allow.n > 0 && !cidr_list_match(&svc->allow, client))
		return ADMIT_DENIED;
	if (loops_check(&a->loops, client))
		return ADMIT_LOOP;
	if (!room_for(a, fds))
		return ADMIT_FULL;
	if (a->per_source > 0) {
		if (sources_acquire(&a->sources, client, a->per_source) < 0)
			return ADMIT_SOURCE_LIMITED;
		*source_counted = true;
	}
	a->active++;
	a->fds += fds;
	update_full(a);
	return ADMIT_OK;
}

void admission_release(struct admission *a, const struct addr *client, unsigned fds,
		       bool source_counted)
{
	assert(a->active > 0 && a->fds >= fds);
	a->active--;
	a->fds -= fds;
	if (source_counted)
		sources_release(&a->sources, client);
	update_full(a);
	if (a->draining && a->active == 0)
		ev_break(a->loop, EVBREAK_ALL);
}

void admission_gate_add(struct admission *a, struct admission_gate *g, ev_io *io,
			bool relays)
{
	g->io = io;
	g->relays = relays;
	LIST_INSERT_HEAD(&a->gates, g, link);
	gate_update(a, g);
}

void admission_gate_remove(struct admission *a, struct admission_gate *g)
{
	ev_io_stop(a->loop, g->io);
	LIST_REMOVE(g, link);
}

void admission_backoff(struct admission *a)
{
	if (ev_is_active(&a->backoff))
		return;
	ev_timer_set(&a->backoff, FD_BACKOFF_SEC, 0.);
	ev_timer_start(a->loop, &a->backoff);
	a->paused[PAUSE_DESCRIPTORS]++;
	log_warn("out of descriptors: pausing accepting for %.0f ms", FD_BACKOFF_SEC * 1000);
	gates_update(a);
}

void admission_drain(struct admission *a)
{
	a->draining = true;
	gates_update(a);
	if (a->active == 0)
		ev_break(a->loop, EVBREAK_ALL);
}

void admission_free(struct admission *a)
{
	ev_timer_stop(a->loop, &a->backoff);
	sources_free(&a->sources);
	loops_free(&a->loops);
}
