/* hashtab.c: an intrusive chained hash table with a keyed hash (SipHash-2-4) */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "hashtab.h"

#define HTAB_MIN_BUCKETS 64

/* The process's hash key, drawn once. The only mutable state here: a
 * property of the process, like its PID. */
static uint64_t key[2];
static bool have_key;

static void init_key(void)
{
	if (getrandom(key, sizeof(key), GRND_NONBLOCK) != (ssize_t)sizeof(key)) {
		/* no entropy yet (early boot): still unpredictable enough to a client */
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		key[0] ^= (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
		key[1] ^= (uint64_t)ts.tv_sec * 0xc2b2ae3d27d4eb4fULL ^ (uint64_t)(uintptr_t)&ts;
	}
	have_key = true;
}

static inline uint64_t rotl(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

#define SIPROUND()                                                             \
	do {                                                                   \
		v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);     \
		v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                        \
		v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                        \
		v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);     \
	} while (0)

uint64_t htab_hash(const void *data, size_t len)
{
	const unsigned char *p = data;
	if (!have_key)
		init_key();
	uint64_t v0 = key[0] ^ 0x736f6d6570736575ULL;
	uint64_t v1 = key[1] ^ 0x646f72616e646f6dULL;
	uint64_t v2 = key[0] ^ 0x6c7967656e657261ULL;
	uint64_t v3 = key[1] ^ 0x7465646279746573ULL;
	uint64_t b = (uint64_t)len << 56;
	size_t full = len & ~(size_t)7;

	for (size_t i = 0; i < full; i += 8) {
		uint64_t m;
		memcpy(&m, p + i, 8); /* little-endian hosts; the value only has to be stable */
		v3 ^= m;
		SIPROUND();
		SIPROUND();
		v0 ^= m;
	}
	for (size_t i = full; i < len; i++)
		b |= (uint64_t)p[i] << (8 * (i - full));
	v3 ^= b;
	SIPROUND();
	SIPROUND();
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND();
	SIPROUND();
	SIPROUND();
	SIPROUND();
	return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t htab_hash_str(const char *s)
{
	return htab_hash(s, strlen(s));
}

struct hnode *htab_find(const struct htab *t, uint64_t hash,
			bool (*eq)(const struct hnode *node, const void *key), const void *k)
{
	if (t->buckets == NULL)
		return NULL;
	for (struct hnode *n = t->buckets[hash & t->mask]; n != NULL; n = n->next)
		if (n->hash == hash && eq(n, k))
			return n;
	return NULL;
}

struct hnode *htab_next(const struct hnode *prev,
			bool (*eq)(const struct hnode *node, const void *key), const void *k)
{
	for (struct hnode *n = prev->next; n != NULL; n = n->next)
		if (n->hash == prev->hash && eq(n, k))
			return n;
	return NULL;
}

/* Doubles the buckets (or makes the first ones); -1 when out of memory. */
static int grow(struct htab *t)
{
	size_t nb = t->buckets == NULL ? HTAB_MIN_BUCKETS : 2 * (t->mask + 1);
	struct hnode **b = calloc(nb, sizeof(*b));
	if (b == NULL)
		return -1;
	if (t->buckets != NULL) {
		for (size_t i = 0; i <= t->mask; i++) {
			struct hnode *n = t->buckets[i];
			while (n != NULL) {
				struct hnode *next = n->next;
				n->next = b[n->hash & (nb - 1)];
				b[n->hash & (nb - 1)] = n;
				n = next;
			}
		}
		free(t->buckets);
	}
	t->buckets = b;
	t->mask = nb - 1;
	return 0;
}

int htab_insert(struct htab *t, struct hnode *node, uint64_t hash)
{
	if ((t->buckets == NULL || t->n > t->mask) && grow(t) < 0 && t->buckets == NULL)
		return -1; /* a full table that cannot grow still takes the node */
	node->hash = hash;
	node->next = t->buckets[hash & t->mask];
	t->buckets[hash & t->mask] = node;
	t->n++;
	return 0;
}

void htab_remove(struct htab *t, struct hnode *node)
{
	struct hnode **link = &t->buckets[node->hash & t->mask];
	while (*link != node)
		link = &(*link)->next;
	*link = node->next;
	node->next = NULL;
	t->n--;
}

void htab_free(struct htab *t)
{
	free(t->buckets);
	*t = (struct htab){ NULL, 0, 0 };
}
