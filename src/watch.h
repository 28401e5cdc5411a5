/* watch.h: notices when the config file changes, including a ConfigMap's symlink swap */
#ifndef DUALPROXY_WATCH_H
#define DUALPROXY_WATCH_H

#include <ev.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/stat.h>

#define WATCH_INTERVAL 1.0 /* seconds between stat() polls, also with inotify */
#define WATCH_SETTLE 0.5   /* seconds a file changed in place must stay unchanged */

/* Watches the file through inotify (the file the path resolves to, and the
 * path's directory, where kubelet swaps the `..data` symlink of a mounted
 * ConfigMap without touching the file's own name) and a stat() poll every
 * WATCH_INTERVAL (for changes inotify cannot see, and where it is not
 * available). A change leads to the callback only when it is complete:
 * - another file behind the path (renamed over it, a symlink swap): at once,
 *   unless it is still being written;
 * - the same file rewritten in place: once the writer that wrote to it has
 *   closed it, and it has then not changed for WATCH_SETTLE seconds, so that
 *   a half-written file is never loaded (without inotify only the latter). */
struct config_watch {
	/* configuration */
	struct ev_loop *loop;
	void (*changed)(void *ctx); /* called from the loop, never re-entered */
	void *ctx;
	char path[PATH_MAX];
	char dir[PATH_MAX];
	char base[NAME_MAX + 1];    /* the path's last component */
	/* runtime */
	int ifd;                    /* inotify; -1: polling only */
	int wd_file, wd_dir;        /* its watches; -1: none */
	ev_io events;               /* ifd readable */
	ev_timer poll;              /* every WATCH_INTERVAL */
	ev_timer settle;            /* running while a change settles */
	bool writing;               /* written to and not closed by the writer yet */
	bool told_writing;          /* that was logged for this change */
	struct stat loaded;         /* the file as last loaded; st_ino 0 if it was missing */
	struct stat seen;           /* the file when the settle timer was (re)armed */
};

void watch_init(struct config_watch *w, struct ev_loop *loop,
		void (*changed)(void *ctx), void *ctx);

/* Starts watching path. */
void watch_start(struct config_watch *w, const char *path);

void watch_stop(struct config_watch *w);
bool watch_active(const struct config_watch *w);

/* Records the file as it is now: call after every (re)load attempt. */
void watch_loaded(struct config_watch *w);

#endif
