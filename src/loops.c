/* loops.c: recognises dualproxy's own backend sockets when they come back to it */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loops.h"
#include "sock.h"

/* Of the sockets towards one backend address, every LOOP_SAMPLE-th asks
 * its local address at once: that keeps the source addresses known. */
#define LOOP_SAMPLE 1024

/* What is known about one backend address. */
struct loop_remote {
	struct hnode node;
	bool local;          /* an address of this host */
	unsigned countdown;  /* sockets until the next one is asked at once */
	unsigned char key[ADDR_KEY_MAX];
	unsigned char key_len;
};

struct key {
	unsigned char bytes[ADDR_KEY_MAX];
	size_t len;
};

static struct key key_of(const struct addr *a)
{
	struct key k;
	k.len = addr_key(a, k.bytes);
	return k;
}

/* The same without the port: the address alone. */
static struct key host_key_of(const struct addr *a)
{
	struct key k = key_of(a);
	k.bytes[1] = k.bytes[2] = 0;
	return k;
}

static bool same_remote(const struct hnode *n, const void *k)
{
	const struct loop_remote *r = (const struct loop_remote *)n;
	const struct key *key = k;
	return r->key_len == key->len && memcmp(r->key, key->bytes, key->len) == 0;
}

static bool same_local(const struct hnode *n, const void *k)
{
	const struct loop_socket *s = (const struct loop_socket *)n;
	const struct key *key = k;
	return s->local_len == key->len && memcmp(s->local, key->bytes, key->len) == 0;
}

void loops_init(struct loops *l)
{
	memset(l, 0, sizeof(*l));
	LIST_INIT(&l->pending);
}

/* True when this host has the address of a (bind(2) to it works). */
static bool is_local_address(const struct addr *a)
{
	struct addr probe = *a;
	if (addr_family(&probe) == AF_INET)
		probe.u.in.sin_port = 0;
	else
		probe.u.in6.sin6_port = 0;
	int fd = socket(addr_family(&probe), SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	bool local = bind(fd, &probe.u.sa, probe.len) == 0;
	close(fd);
	return local;
}

/* The record of a backend address, made (with one bind test) on first use;
 * NULL when out of memory. */
static struct loop_remote *remote_of(struct loops *l, const struct addr *remote)
{
	struct key k = key_of(remote);
	uint64_t hash = htab_hash(k.bytes, k.len);
	struct loop_remote *r =
		(struct loop_remote *)htab_find(&l->remotes, hash, same_remote, &k);
	if (r != NULL)
		return r;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	memcpy(r->key, k.bytes, k.len);
	r->key_len = (unsigned char)k.len;
	r->local = is_local_address(remote);
	if (htab_insert(&l->remotes, &r->node, hash) < 0) {
		free(r);
		return NULL;
	}
	return r;
}

static bool known_source(const struct loops *l, const struct key *host)
{
	for (size_t i = 0; i < l->n_sources; i++)
		if (l->source_len[i] == host->len &&
		    memcmp(l->sources[i], host->bytes, host->len) == 0)
			return true;
	return false;
}

/* Asks s's local address and files it as known. */
static void resolve(struct loops *l, struct loop_socket *s)
{
	struct addr local;
	if (s->state == LOOP_PENDING)
		LIST_REMOVE(s, pending);
	s->state = LOOP_UNTRACKED;
	if (sock_local_addr(s->fd, &local) < 0)
		return;
	struct key host = host_key_of(&local);
	if (!known_source(l, &host) && l->n_sources < LOOP_SOURCES_MAX) {
		memcpy(l->sources[l->n_sources], host.bytes, host.len);
		l->source_len[l->n_sources++] = (unsigned char)host.len;
	}
	struct key k = key_of(&local);
	memcpy(s->local, k.bytes, k.len);
	s->local_len = (unsigned char)k.len;
	if (htab_insert(&l->known, &s->node, htab_hash(k.bytes, k.len)) == 0)
		s->state = LOOP_KNOWN;
}

void loops_add(struct loops *l, struct loop_socket *s, int fd, const struct addr *remote)
{
	struct loop_remote *r = remote_of(l, remote);
	s->fd = fd;
	s->state = LOOP_UNTRACKED;
	if (r == NULL || r->local)
		return;
	if (r->countdown == 0 || l->n_sources == 0) {
		r->countdown = LOOP_SAMPLE;
		s->state = LOOP_PENDING;
		LIST_INSERT_HEAD(&l->pending, s, pending);
		resolve(l, s);
		return;
	}
	r->countdown--;
	s->state = LOOP_PENDING;
	LIST_INSERT_HEAD(&l->pending, s, pending);
}

void loops_remove(struct loops *l, struct loop_socket *s)
{
	if (s->state == LOOP_PENDING)
		LIST_REMOVE(s, pending);
	else if (s->state == LOOP_KNOWN)
		htab_remove(&l->known, &s->node);
	s->state = LOOP_UNTRACKED;
}

bool loops_check(struct loops *l, const struct addr *client)
{
	if (l->known.n == 0 && LIST_EMPTY(&l->pending))
		return false;
	struct key host = host_key_of(client);
	if (!known_source(l, &host))
		return false;
	while (!LIST_EMPTY(&l->pending))
		resolve(l, LIST_FIRST(&l->pending));
	struct key k = key_of(client);
	return htab_find(&l->known, htab_hash(k.bytes, k.len), same_local, &k) != NULL;
}

void loops_free(struct loops *l)
{
	struct htab *h = &l->remotes;
	for (size_t i = 0; h->buckets != NULL && i <= h->mask; i++) {
		while (h->buckets[i] != NULL) {
			struct hnode *n = h->buckets[i];
			h->buckets[i] = n->next;
			free(n);
		}
	}
	htab_free(&l->remotes);
	htab_free(&l->known);
	LIST_INIT(&l->pending);
}
