/* pipepool.c: a budgeted pool of non-blocking pipes for splice(2) */
#include "autoconfig.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"
#include "pipepool.h"

int pipe_pool_init(struct pipe_pool *pool, size_t budget, size_t cache_max)
{
	pool->budget = budget;
	pool->cache_max = cache_max < budget ? cache_max : budget;
	pool->count = 0;
	pool->n_cached = 0;
	pool->cached = NULL;
	pool->short_until = 0;
	if (pool->cache_max > 0) {
		pool->cached = calloc(pool->cache_max, sizeof(*pool->cached));
		if (pool->cached == NULL)
			return -1;
	}
	return 0;
}

int pipe_pool_get(struct pipe_pool *pool, int fds[2], bool may_create, double now)
{
	if (pool->n_cached > 0) {
		pool->n_cached--;
		fds[0] = pool->cached[pool->n_cached][0];
		fds[1] = pool->cached[pool->n_cached][1];
		return 0;
	}
	if (!may_create || pool->count >= pool->budget || now < pool->short_until)
		return -1;
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
		return -1;
	int size = fcntl(fds[0], F_GETPIPE_SZ);
	if (size >= 0 && size < PIPE_CAPACITY) {
		/* splicing through it would take a wake-up per few KiB */
		if (pool->short_until == 0)
			log_warn("the kernel made a pipe of %d bytes (this user's pipe "
				 "buffers, fs.pipe-user-pages-soft, are used up): bulk "
				 "data goes through buffers until it makes full ones again",
				 size);
		close(fds[0]);
		close(fds[1]);
		fds[0] = fds[1] = -1;
		pool->short_until = now + PIPE_SHORT_RETRY;
		return -1;
	}
	if (pool->short_until != 0) {
		log_info("the kernel makes pipes of full size again: bulk data is spliced");
		pool->short_until = 0;
	}
	pool->count++;
	return 0;
}

void pipe_pool_put(struct pipe_pool *pool, int fds[2], int empty)
{
	if (empty && pool->n_cached < pool->cache_max) {
		pool->cached[pool->n_cached][0] = fds[0];
		pool->cached[pool->n_cached][1] = fds[1];
		pool->n_cached++;
	} else {
		close(fds[0]);
		close(fds[1]);
		pool->count--;
	}
	fds[0] = fds[1] = -1;
}

void pipe_pool_free(struct pipe_pool *pool)
{
	for (size_t i = 0; i < pool->n_cached; i++) {
		close(pool->cached[i][0]);
		close(pool->cached[i][1]);
	}
	pool->count -= pool->n_cached;
	pool->n_cached = 0;
	free(pool->cached);
	pool->cached = NULL;
}
