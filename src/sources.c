/* sources.c: live connections per client address, for max_connections_per_source */
#include "autoconfig.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sources.h"

#define SOURCE_KEY_MAX 17 /* family byte, then 4 or 16 address bytes */

struct source {
	struct hnode node; /* in source_table.addrs */
	unsigned char key[SOURCE_KEY_MAX];
	unsigned long count;
};

/* The address without its port, as a key; returns the key length. */
static size_t make_key(const struct addr *a, unsigned char key[SOURCE_KEY_MAX])
{
	memset(key, 0, SOURCE_KEY_MAX);
	key[0] = (unsigned char)addr_family(a);
	if (addr_family(a) == AF_INET) {
		memcpy(key + 1, &a->u.in.sin_addr, 4);
		return 5;
	}
	memcpy(key + 1, &a->u.in6.sin6_addr, 16);
	return SOURCE_KEY_MAX;
}

static bool same_key(const struct hnode *n, const void *key)
{
	const struct source *s = (const struct source *)n;
	return memcmp(s->key, key, SOURCE_KEY_MAX) == 0;
}

static struct source *find(const struct source_table *t, const struct addr *a,
			   unsigned char key[SOURCE_KEY_MAX], uint64_t *hash)
{
	*hash = htab_hash(key, make_key(a, key));
	return (struct source *)htab_find(&t->addrs, *hash, same_key, key);
}

int sources_acquire(struct source_table *t, const struct addr *a, unsigned long limit)
{
	unsigned char key[SOURCE_KEY_MAX];
	uint64_t hash;
	struct source *s = find(t, a, key, &hash);

	if (s != NULL) {
		if (s->count >= limit)
			return -1;
		s->count++;
		return 0;
	}
	if (limit == 0 || (s = calloc(1, sizeof(*s))) == NULL)
		return -1;
	memcpy(s->key, key, sizeof(s->key));
	s->count = 1;
	if (htab_insert(&t->addrs, &s->node, hash) < 0) {
		free(s);
		return -1;
	}
	return 0;
}

void sources_release(struct source_table *t, const struct addr *a)
{
	unsigned char key[SOURCE_KEY_MAX];
	uint64_t hash;
	struct source *s = find(t, a, key, &hash);

	if (s != NULL && --s->count == 0) {
		htab_remove(&t->addrs, &s->node);
		free(s);
	}
}

unsigned long sources_count(const struct source_table *t, const struct addr *a)
{
	unsigned char key[SOURCE_KEY_MAX];
	uint64_t hash;
	const struct source *s = find(t, a, key, &hash);
	return s != NULL ? s->count : 0;
}

size_t sources_size(const struct source_table *t)
{
	return t->addrs.n;
}

void sources_free(struct source_table *t)
{
	struct htab *h = &t->addrs;
	for (size_t i = 0; h->buckets != NULL && i <= h->mask; i++) {
		while (h->buckets[i] != NULL) {
			struct hnode *n = h->buckets[i];
			h->buckets[i] = n->next;
			free(n);
		}
	}
	htab_free(h);
}
