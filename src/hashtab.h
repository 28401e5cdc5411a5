/* hashtab.h: an intrusive chained hash table with a keyed hash (SipHash-2-4) */
#ifndef DUALPROXY_HASHTAB_H
#define DUALPROXY_HASHTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Embedded in each element; the table never allocates elements. */
struct hnode {
	struct hnode *next;
	uint64_t hash;
};

struct htab {
	struct hnode **buckets; /* a power of two of them, allocated on first insert */
	size_t mask;            /* number of buckets - 1 */
	size_t n;               /* elements in the table */
};

/* SipHash-2-4 of len bytes under the process's random key: clients cannot
 * choose keys that collide. */
uint64_t htab_hash(const void *data, size_t len);

/* The same for a NUL-terminated string. */
uint64_t htab_hash_str(const char *s);

/* Returns the first element with this hash for which eq(node, key) holds,
 * or NULL. */
struct hnode *htab_find(const struct htab *t, uint64_t hash,
			bool (*eq)(const struct hnode *node, const void *key), const void *key);

/* The next element after prev (found by htab_find or htab_next with the
 * same hash and key) that matches too, or NULL. */
struct hnode *htab_next(const struct hnode *prev,
			bool (*eq)(const struct hnode *node, const void *key), const void *key);

/* Adds node (not in any table) under hash. Returns 0, or -1 when out of
 * memory (node is then not in the table). */
int htab_insert(struct htab *t, struct hnode *node, uint64_t hash);

/* Removes node, which must be in t. */
void htab_remove(struct htab *t, struct hnode *node);

/* Frees the buckets; the elements are the caller's. */
void htab_free(struct htab *t);

#endif
