/* watch.c: notices when the config file changes, including a ConfigMap's symlink swap */
#include "autoconfig.h"

#include <errno.h>
#include <libgen.h>
#include <stdalign.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "log.h"
#include "watch.h"

#define FILE_EVENTS (IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF)
#define DIR_EVENTS (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_MODIFY | \
		    IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
#define EVENT_BUF 4096

static bool same_inode(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
	return same_inode(a, b) &&
	       a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	       a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void settle_stop(struct config_watch *w)
{
	ev_timer_stop(w->loop, &w->settle);
}

/* (Re)starts the wait for the file to stay as it is now. */
static void settle_arm(struct config_watch *w, const struct stat *now)
{
	w->seen = *now;
	ev_timer_again(w->loop, &w->settle);
}

/* Looks at the file and decides whether a change is complete. */
static void check(struct config_watch *w)
{
	struct stat now;

	if (stat(w->path, &now) < 0) {
		if (w->loaded.st_ino != 0)
			log_warn("%s disappeared: keeping the running configuration", w->path);
		memset(&w->loaded, 0, sizeof(w->loaded));
		settle_stop(w);
		return;
	}
	if (same_file(&now, &w->loaded)) {
		settle_stop(w);
		return;
	}
	if (w->writing) {
		/* inotify saw writes and no close yet: a partial file */
		if (!w->told_writing)
			log_info("%s changed and is still open for writing: reloading once the "
				 "writer has closed it", w->path);
		w->told_writing = true;
		settle_stop(w);
		return;
	}
	if (!same_inode(&now, &w->loaded)) {
		/* renamed over the path or a symlink swap: complete as it appears */
		settle_stop(w);
		w->changed(w->ctx);
		return;
	}
	if (!ev_is_active(&w->settle) || !same_file(&now, &w->seen))
		settle_arm(w, &now);
}

static void on_settle(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct config_watch *w = t->data;
	struct stat now;
	(void)loop;
	(void)revents;

	if (w->writing || stat(w->path, &now) < 0 || !same_file(&now, &w->seen)) {
		check(w); /* still moving: waits again */
		return;
	}
	settle_stop(w);
	w->changed(w->ctx);
}

static void on_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	check(t->data);
}

/* Watches the file the path resolves to now (another one after a swap). */
static void watch_file(struct config_watch *w)
{
	if (w->ifd < 0)
		return;
	int wd = inotify_add_watch(w->ifd, w->path, FILE_EVENTS);
	if (w->wd_file >= 0 && wd != w->wd_file)
		inotify_rm_watch(w->ifd, w->wd_file);
	w->wd_file = wd;
}

/* A write to the file (by name in the directory, or through its own
 * watch), or the writer closing it. */
static void note_write(struct config_watch *w, uint32_t mask)
{
	if (mask & IN_MODIFY)
		w->writing = true;
	if (mask & IN_CLOSE_WRITE)
		w->writing = false;
}

static void on_events(struct ev_loop *loop, ev_io *io, int revents)
{
	struct config_watch *w = io->data;
	alignas(struct inotify_event) char buf[EVENT_BUF];
	(void)loop;
	(void)revents;

	for (;;) {
		ssize_t n = read(w->ifd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *e = (const struct inotify_event *)p;
			p += sizeof(*e) + e->len;
			if (e->wd == w->wd_file && e->wd >= 0) {
				note_write(w, e->mask);
				if (e->mask & IN_IGNORED)
					w->wd_file = -1; /* the file is gone */
			} else if (e->wd == w->wd_dir && e->len > 0 && strcmp(e->name, w->base) == 0) {
				note_write(w, e->mask);
			}
			if (e->mask & IN_Q_OVERFLOW)
				w->writing = false; /* unknown: the settle time decides */
		}
	}
	check(w);
}

void watch_init(struct config_watch *w, struct ev_loop *loop,
		void (*changed)(void *ctx), void *ctx)
{
	memset(w, 0, sizeof(*w));
	w->loop = loop;
	w->changed = changed;
	w->ctx = ctx;
	w->ifd = w->wd_file = w->wd_dir = -1;
	ev_io_init(&w->events, on_events, -1, EV_READ);
	ev_timer_init(&w->poll, on_poll, WATCH_INTERVAL, WATCH_INTERVAL);
	ev_timer_init(&w->settle, on_settle, 0., WATCH_SETTLE);
	w->events.data = w->poll.data = w->settle.data = w;
}

void watch_loaded(struct config_watch *w)
{
	if (stat(w->path, &w->loaded) < 0)
		memset(&w->loaded, 0, sizeof(w->loaded));
	w->told_writing = false;
	settle_stop(w);
	if (watch_active(w))
		watch_file(w);
}

void watch_start(struct config_watch *w, const char *path)
{
	if (watch_active(w))
		return;
	snprintf(w->path, sizeof(w->path), "%s", path);
	char copy[PATH_MAX];
	snprintf(copy, sizeof(copy), "%s", path);
	snprintf(w->dir, sizeof(w->dir), "%s", dirname(copy));
	snprintf(copy, sizeof(copy), "%s", path);
	snprintf(w->base, sizeof(w->base), "%s", basename(copy));
	w->writing = false;
	w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->ifd >= 0) {
		w->wd_dir = inotify_add_watch(w->ifd, w->dir, DIR_EVENTS);
		ev_io_set(&w->events, w->ifd, EV_READ);
		ev_io_start(w->loop, &w->events);
	} else {
		log_warn("inotify: %s: watching %s by polling it every %.0f s", strerror(errno),
			 w->path, WATCH_INTERVAL);
	}
	ev_timer_start(w->loop, &w->poll);
	watch_loaded(w);
	log_info("watching %s for changes", w->path);
}

bool watch_active(const struct config_watch *w)
{
	return ev_is_active(&w->poll);
}

void watch_stop(struct config_watch *w)
{
	if (!watch_active(w))
		return;
	ev_timer_stop(w->loop, &w->poll);
	settle_stop(w);
	if (w->ifd >= 0) {
		ev_io_stop(w->loop, &w->events);
		close(w->ifd);
	}
	w->ifd = w->wd_file = w->wd_dir = -1;
}
