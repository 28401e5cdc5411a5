/* sources.c: live connections per client address, for max_connections_per_source */
#include "autoconfig.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sources.h"

#define SOURCE_BUCKETS 4096 /* a power of two */

struct source {
	unsigned char key[17]; /* family byte, then 4 or 16 address bytes */
	unsigned long count;
	struct source *next;
};

/* The address without its port, as a key; returns the key length. */
static size_t make_key(const struct addr *a, unsigned char key[17])
{
	memset(key, 0, 17);
	key[0] = (unsigned char)addr_family(a);
	if (addr_family(a) == AF_INET) {
		memcpy(key + 1, &a->u.in.sin_addr, 4);
		return 5;
	}
	memcpy(key + 1, &a->u.in6.sin6_addr, 16);
	return 17;
}

static size_t bucket(const unsigned char *key, size_t len)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (size_t i = 0; i < len; i++) {
		h ^= key[i];
		h *= 16777619u;
	}
	return h & (SOURCE_BUCKETS - 1);
}

static struct source **find(const struct source_table *t, const unsigned char *key,
			    size_t len)
{
	struct source **link = &t->buckets[bucket(key, len)];
	while (*link != NULL && memcmp((*link)->key, key, sizeof((*link)->key)) != 0)
		link = &(*link)->next;
	return link;
}

int sources_acquire(struct source_table *t, const struct addr *a, unsigned long limit)
{
	unsigned char key[17];
	size_t len = make_key(a, key);

	if (t->buckets == NULL) {
		t->buckets = calloc(SOURCE_BUCKETS, sizeof(*t->buckets));
		if (t->buckets == NULL)
			return -1;
	}
	struct source **link = find(t, key, len);
	if (*link != NULL) {
		if ((*link)->count >= limit)
			return -1;
		(*link)->count++;
		return 0;
	}
	if (limit == 0)
		return -1;
	struct source *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -1;
	memcpy(s->key, key, sizeof(s->key));
	s->count = 1;
	*link = s;
	t->n++;
	return 0;
}

void sources_release(struct source_table *t, const struct addr *a)
{
	unsigned char key[17];
	size_t len = make_key(a, key);

	if (t->buckets == NULL)
		return;
	struct source **link = find(t, key, len);
	struct source *s = *link;
	if (s == NULL)
		return;
	if (--s->count == 0) {
		*link = s->next;
		free(s);
		t->n--;
	}
}

unsigned long sources_count(const struct source_table *t, const struct addr *a)
{
	unsigned char key[17];
	size_t len = make_key(a, key);

	if (t->buckets == NULL)
		return 0;
	struct source *s = *find(t, key, len);
	return s != NULL ? s->count : 0;
}

void sources_free(struct source_table *t)
{
	if (t->buckets == NULL)
		return;
	for (size_t i = 0; i < SOURCE_BUCKETS; i++) {
		while (t->buckets[i] != NULL) {
			struct source *s = t->buckets[i];
			t->buckets[i] = s->next;
			free(s);
		}
	}
	free(t->buckets);
	t->buckets = NULL;
	t->n = 0;
}
