/* watch.c: notices when the config file changes, including a ConfigMap's symlink swap */
#include "autoconfig.h"

#include <libgen.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "watch.h"

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
	       a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	       a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void check(struct config_watch *w)
{
	struct stat now;

	if (stat(w->path, &now) < 0) {
		if (w->loaded.st_ino != 0)
			log_warn("%s disappeared: keeping the running configuration", w->path);
		memset(&w->loaded, 0, sizeof(w->loaded));
		return;
	}
	if (same_file(&now, &w->loaded))
		return;
	w->changed(w->ctx);
}

static void on_stat(struct ev_loop *loop, ev_stat *ws, int revents)
{
	(void)loop;
	(void)revents;
	check(ws->data);
}

static void on_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	check(t->data);
}

void watch_init(struct config_watch *w, struct ev_loop *loop,
		void (*changed)(void *ctx), void *ctx)
{
	memset(w, 0, sizeof(*w));
	w->loop = loop;
	w->changed = changed;
	w->ctx = ctx;
	ev_stat_init(&w->file, on_stat, w->path, WATCH_INTERVAL);
	ev_stat_init(&w->parent, on_stat, w->dir, WATCH_INTERVAL);
	ev_timer_init(&w->poll, on_poll, WATCH_INTERVAL, WATCH_INTERVAL);
	w->file.data = w->parent.data = w->poll.data = w;
}

void watch_loaded(struct config_watch *w)
{
	if (stat(w->path, &w->loaded) < 0)
		memset(&w->loaded, 0, sizeof(w->loaded));
}

void watch_start(struct config_watch *w, const char *path)
{
	if (watch_active(w))
		return;
	snprintf(w->path, sizeof(w->path), "%s", path);
	char copy[PATH_MAX];
	snprintf(copy, sizeof(copy), "%s", path);
	snprintf(w->dir, sizeof(w->dir), "%s", dirname(copy));
	watch_loaded(w);
	ev_stat_start(w->loop, &w->file);
	ev_stat_start(w->loop, &w->parent);
	ev_timer_start(w->loop, &w->poll);
	ev_unref(w->loop);
	ev_unref(w->loop);
	ev_unref(w->loop);
	log_info("watching %s for changes", w->path);
}

bool watch_active(const struct config_watch *w)
{
	return ev_is_active(&w->file);
}

void watch_stop(struct config_watch *w)
{
	if (!watch_active(w))
		return;
	ev_ref(w->loop);
	ev_ref(w->loop);
	ev_ref(w->loop);
	ev_stat_stop(w->loop, &w->file);
	ev_stat_stop(w->loop, &w->parent);
	ev_timer_stop(w->loop, &w->poll);
}
