/* pipepool.h: a budgeted pool of non-blocking pipes for splice(2) */
#ifndef DUALPROXY_PIPEPOOL_H
#define DUALPROXY_PIPEPOOL_H

#include <stdbool.h>
#include <stddef.h>

struct pipe_pool {
	/* configuration */
	size_t budget;    /* pipes that may exist at once (in use + cached) */
	size_t cache_max; /* empty pipes kept for reuse */
	/* runtime */
	size_t count;     /* pipes that exist now */
	size_t n_cached;
	int (*cached)[2]; /* cache_max slots of {read end, write end} */
};

/* budget 0 disables splicing. Returns 0, or -1 when out of memory. */
int pipe_pool_init(struct pipe_pool *pool, size_t budget, size_t cache_max);

/* Hands out an empty pipe the caller owns until pipe_pool_put: a cached
 * one, or a new one if may_create. Returns 0, or -1 when none is to be had
 * (the caller relays through buffers instead). */
int pipe_pool_get(struct pipe_pool *pool, int fds[2], bool may_create);

/* Takes a pipe back: cached if empty and room, else closed. */
void pipe_pool_put(struct pipe_pool *pool, int fds[2], int empty);

/* Closes every cached pipe and frees the cache. */
void pipe_pool_free(struct pipe_pool *pool);

#endif
