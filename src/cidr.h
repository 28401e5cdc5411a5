/* cidr.h: client allowlists of IPv4 and IPv6 prefixes */
#ifndef DUALPROXY_CIDR_H
#define DUALPROXY_CIDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>

#include "addr.h"

#define CIDR_MAX 64 /* prefixes in one allowlist */

struct cidr {
	int family;                 /* AF_INET or AF_INET6 */
	unsigned char addr[16];     /* network bytes, host bits zero */
	unsigned prefix;            /* 0-32 or 0-128 */
};

/* Allocated to the number of prefixes it holds. */
struct cidr_list {
	struct cidr *items;
	size_t n;
};

/* Parse "10.0.0.0/8", "2001:db8::/32" or a bare address (a host prefix).
 * Host bits must be zero. Returns 0, or -1 with *err set. */
int cidr_parse(const char *s, struct cidr *out, const char **err);

/* The same, but host bits after the prefix are cleared instead of being an
 * error (as iptables does); *masked tells whether any were set. */
int cidr_parse_masking(const char *s, struct cidr *out, bool *masked, const char **err);

/* Writes "10.0.0.0/8" or "2001:db8::/32" into buf (ADDR_STRLEN bytes); returns buf. */
char *cidr_format(const struct cidr *c, char *buf);

/* Appends one prefix; returns 0, or -1 with *err when the list is full or
 * out of memory. */
int cidr_list_add(struct cidr_list *list, const struct cidr *c, const char **err);

void cidr_list_free(struct cidr_list *list);

/* True when a (an IPv4 or IPv6 client address) is inside one of the prefixes. */
bool cidr_list_match(const struct cidr_list *list, const struct addr *a);

/* True when the list has a prefix of this family. */
bool cidr_list_has_family(const struct cidr_list *list, int family);

#endif
