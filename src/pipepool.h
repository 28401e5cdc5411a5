/* pipepool.h: a budgeted pool of non-blocking pipes for splice(2) */
#ifndef DUALPROXY_PIPEPOOL_H
#define DUALPROXY_PIPEPOOL_H

#include <stdbool.h>
#include <stddef.h>

/* Every pipe the pool hands out holds at least this much (Linux's default
 * pipe size): one splice moves up to a whole 64 KiB read. */
#define PIPE_CAPACITY (64 * 1024)

/* After the kernel made a smaller pipe, seconds before the pool tries again. */
#define PIPE_SHORT_RETRY 1.0

struct pipe_pool {
	/* configuration */
	size_t budget;    /* pipes that may exist at once (in use + cached) */
	size_t cache_max; /* empty pipes kept for reuse */
	/* runtime */
	size_t count;     /* pipes that exist now */
	size_t n_cached;
	int (*cached)[2]; /* cache_max slots of {read end, write end} */
	double short_until; /* the last new pipe was too small: no new one
			       before then (0: it was of full size) */
};

/* budget 0 disables splicing. Returns 0, or -1 when out of memory. */
int pipe_pool_init(struct pipe_pool *pool, size_t budget, size_t cache_max);

/* Hands out an empty pipe of at least PIPE_CAPACITY bytes that the caller
 * owns until pipe_pool_put: a cached one, or a new one if may_create. A new
 * pipe the kernel makes smaller (the user's pipe-buffer allowance,
 * fs.pipe-user-pages-soft, is used up: it then makes pipes of 2 pages) is
 * closed, and no new one is tried for PIPE_SHORT_RETRY seconds from now.
 * Returns 0, or -1 when none is to be had (the caller relays through
 * buffers instead). */
int pipe_pool_get(struct pipe_pool *pool, int fds[2], bool may_create, double now);

/* Takes a pipe back: cached if empty and room, else closed. */
void pipe_pool_put(struct pipe_pool *pool, int fds[2], int empty);

/* Closes every cached pipe and frees the cache. */
void pipe_pool_free(struct pipe_pool *pool);

#endif
