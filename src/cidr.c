/* cidr.c: client allowlists of IPv4 and IPv6 prefixes */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"

/* Parses s; host bits are cleared, and *masked says whether any were set. */
static int parse(const char *s, struct cidr *out, bool *masked, const char **err)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	size_t hlen = slash != NULL ? (size_t)(slash - s) : strlen(s);

	memset(out, 0, sizeof(*out));
	if (hlen == 0 || hlen >= sizeof(host)) {
		*err = "bad address";
		return -1;
	}
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, out->addr) == 1) {
		out->family = AF_INET;
	} else if (inet_pton(AF_INET6, host, out->addr) == 1) {
		out->family = AF_INET6;
	} else {
		*err = "bad address";
		return -1;
	}
	unsigned max = out->family == AF_INET ? 32 : 128;
	out->prefix = max;
	if (slash != NULL) {
		const char *p = slash + 1;
		size_t digits = strspn(p, "0123456789");
		if (digits == 0 || digits > 3 || p[digits] != '\0' ||
		    (unsigned)atoi(p) > max) {
			*err = out->family == AF_INET ? "bad prefix length (0-32)" :
							"bad prefix length (0-128)";
			return -1;
		}
		out->prefix = (unsigned)atoi(p);
	}
	*masked = false;
	for (unsigned bit = out->prefix; bit < max; bit++) {
		unsigned char mask = (unsigned char)(0x80u >> (bit % 8));
		if (out->addr[bit / 8] & mask) {
			out->addr[bit / 8] &= (unsigned char)~mask;
			*masked = true;
		}
	}
	return 0;
}

int cidr_parse(const char *s, struct cidr *out, const char **err)
{
	bool masked;
	if (parse(s, out, &masked, err) < 0)
		return -1;
	if (masked) {
		*err = "host bits set after the prefix";
		return -1;
	}
	return 0;
}

int cidr_parse_masking(const char *s, struct cidr *out, bool *masked, const char **err)
{
	return parse(s, out, masked, err);
}

char *cidr_format(const struct cidr *c, char *buf)
{
	char host[INET6_ADDRSTRLEN];
	inet_ntop(c->family, c->addr, host, sizeof(host));
	snprintf(buf, ADDR_STRLEN, "%s/%u", host, c->prefix);
	return buf;
}

int cidr_list_add(struct cidr_list *list, const struct cidr *c, const char **err)
{
	if (list->n >= CIDR_MAX) {
		*err = "too many prefixes (at most 64)";
		return -1;
	}
	struct cidr *items = realloc(list->items, (list->n + 1) * sizeof(*items));
	if (items == NULL) {
		*err = "out of memory";
		return -1;
	}
	list->items = items;
	list->items[list->n++] = *c;
	return 0;
}

void cidr_list_free(struct cidr_list *list)
{
	free(list->items);
	list->items = NULL;
	list->n = 0;
}

static bool prefix_match(const unsigned char *a, const unsigned char *net, unsigned prefix)
{
	unsigned bytes = prefix / 8, rest = prefix % 8;
	if (memcmp(a, net, bytes) != 0)
		return false;
	if (rest == 0)
		return true;
	unsigned char mask = (unsigned char)(0xffu << (8 - rest));
	return (a[bytes] & mask) == net[bytes];
}

bool cidr_list_match(const struct cidr_list *list, const struct addr *a)
{
	const unsigned char *bytes;
	int family = addr_family(a);

	if (family == AF_INET)
		bytes = (const unsigned char *)&a->u.in.sin_addr;
	else if (family == AF_INET6)
		bytes = a->u.in6.sin6_addr.s6_addr;
	else
		return false;
	for (size_t i = 0; i < list->n; i++)
		if (list->items[i].family == family &&
		    prefix_match(bytes, list->items[i].addr, list->items[i].prefix))
			return true;
	return false;
}

bool cidr_list_has_family(const struct cidr_list *list, int family)
{
	for (size_t i = 0; i < list->n; i++)
		if (list->items[i].family == family)
			return true;
	return false;
}
