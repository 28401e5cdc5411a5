/* watch.h: notices when the config file changes, including a ConfigMap's symlink swap */
#ifndef DUALPROXY_WATCH_H
#define DUALPROXY_WATCH_H

#include <ev.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/stat.h>

#define WATCH_INTERVAL 1.0 /* seconds between stat() polls where inotify is not used */

/* Two libev stat watchers: one on the file (through its symlinks) and one on
 * its directory, where kubelet swaps the `..data` symlink of a mounted
 * ConfigMap without touching the file's own name. libev compares times in
 * whole seconds, so a timer also checks once per WATCH_INTERVAL for changes
 * within one second. Each only leads to a callback when what the path
 * resolves to has changed since it was loaded. */
struct config_watch {
	/* configuration */
	struct ev_loop *loop;
	void (*changed)(void *ctx); /* called from the loop, never re-entered */
	void *ctx;
	char path[PATH_MAX];
	char dir[PATH_MAX];
	/* runtime */
	ev_stat file, parent;
	ev_timer poll;
	struct stat loaded; /* the file as last loaded; st_ino 0 if it was missing */
};

void watch_init(struct config_watch *w, struct ev_loop *loop,
		void (*changed)(void *ctx), void *ctx);

/* Starts watching path; the watchers do not keep the loop alive. */
void watch_start(struct config_watch *w, const char *path);

void watch_stop(struct config_watch *w);
bool watch_active(const struct config_watch *w);

/* Records the file as it is now: call after every (re)load attempt. */
void watch_loaded(struct config_watch *w);

#endif
