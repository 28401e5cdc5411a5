/* addr.c: socket addresses of both families: parsing and formatting */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

#define PORT_DIGITS_MAX 5

int addr_parse_port(const char *s, uint16_t *port, const char **err)
{
	size_t n = strlen(s);
	unsigned long v = 0;

	if (n == 0) {
		*err = "missing port";
		return -1;
	}
	if (n > PORT_DIGITS_MAX || strspn(s, "0123456789") != n) {
		*err = n > PORT_DIGITS_MAX && strspn(s, "0123456789") == n ?
			"port out of range (1-65535)" : "port is not a number";
		return -1;
	}
	v = strtoul(s, NULL, 10);
	if (v < 1 || v > UINT16_MAX) {
		*err = "port out of range (1-65535)";
		return -1;
	}
	*port = (uint16_t)v;
	return 0;
}

static void set_v4(struct addr *a, const struct in_addr *ip, uint16_t port)
{
	memset(a, 0, sizeof(*a));
	a->u.in.sin_family = AF_INET;
	a->u.in.sin_addr = *ip;
	a->u.in.sin_port = htons(port);
	a->len = sizeof(a->u.in);
}

static void set_v6(struct addr *a, const struct in6_addr *ip, uint16_t port)
{
	memset(a, 0, sizeof(*a));
	a->u.in6.sin6_family = AF_INET6;
	a->u.in6.sin6_addr = *ip;
	a->u.in6.sin6_port = htons(port);
	a->len = sizeof(a->u.in6);
}

int addr_parse(const char *s, struct addr *out, const char **err)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *port_str;
	size_t hlen;
	uint16_t port;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (close == NULL) {
			*err = "missing ']' after IPv6 address";
			return -1;
		}
		if (close[1] != ':') {
			*err = "expected ':PORT' after ']'";
			return -1;
		}
		hlen = (size_t)(close - (s + 1));
		if (hlen == 0 || hlen >= sizeof(host)) {
			*err = "bad IPv6 address";
			return -1;
		}
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
		port_str = close + 2;
		struct in6_addr ip6;
		if (inet_pton(AF_INET6, host, &ip6) != 1) {
			*err = "bad IPv6 address";
			return -1;
		}
		if (addr_parse_port(port_str, &port, err) < 0)
			return -1;
		set_v6(out, &ip6, port);
		return 0;
	}

	const char *colon = strrchr(s, ':');
	if (colon == NULL) {
		*err = "expected ADDRESS:PORT";
		return -1;
	}
	if (strchr(s, ':') != colon) {
		*err = "IPv6 addresses need brackets: [ADDRESS]:PORT";
		return -1;
	}
	hlen = (size_t)(colon - s);
	if (hlen == 0 || hlen >= sizeof(host)) {
		*err = "bad IPv4 address";
		return -1;
	}
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	struct in_addr ip4;
	if (inet_pton(AF_INET, host, &ip4) != 1) {
		*err = "bad IPv4 address";
		return -1;
	}
	if (addr_parse_port(colon + 1, &port, err) < 0)
		return -1;
	set_v4(out, &ip4, port);
	return 0;
}

int addr_parse_listen(const char *s, struct addr *out, size_t max, const char **err)
{
	if (s[0] != '\0' && strspn(s, "0123456789") == strlen(s)) {
		uint16_t port;
		if (addr_parse_port(s, &port, err) < 0)
			return -1;
		if (max < 2) {
			*err = "too many listen addresses";
			return -1;
		}
		struct in_addr any4 = { .s_addr = htonl(INADDR_ANY) };
		set_v4(&out[0], &any4, port);
		set_v6(&out[1], &in6addr_any, port);
		return 2;
	}
	if (max < 1) {
		*err = "too many listen addresses";
		return -1;
	}
	if (addr_parse(s, out, err) < 0)
		return -1;
	return 1;
}

void addr_from_sockaddr(struct addr *a, const struct sockaddr *sa, socklen_t len)
{
	if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			struct in_addr ip4;
			memcpy(&ip4, &in6->sin6_addr.s6_addr[12], sizeof(ip4));
			set_v4(a, &ip4, ntohs(in6->sin6_port));
			return;
		}
	}
	memset(a, 0, sizeof(*a));
	if (len > sizeof(a->u.ss))
		len = sizeof(a->u.ss);
	memcpy(&a->u.ss, sa, len);
	a->len = len;
}

char *addr_format(const struct addr *a, char *buf)
{
	char ip[INET6_ADDRSTRLEN];

	if (a->u.sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &a->u.in.sin_addr, ip, sizeof(ip));
		snprintf(buf, ADDR_STRLEN, "%s:%u", ip, ntohs(a->u.in.sin_port));
	} else if (a->u.sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &a->u.in6.sin6_addr, ip, sizeof(ip));
		snprintf(buf, ADDR_STRLEN, "[%s]:%u", ip, ntohs(a->u.in6.sin6_port));
	} else {
		snprintf(buf, ADDR_STRLEN, "(unknown)");
	}
	return buf;
}

size_t addr_key_sa(const struct sockaddr *sa, unsigned char key[ADDR_KEY_MAX])
{
	key[0] = (unsigned char)sa->sa_family;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		memcpy(key + 1, &in->sin_port, 2);
		memcpy(key + 3, &in->sin_addr, 4);
		return 7;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		memcpy(key + 1, &in6->sin6_port, 2);
		memcpy(key + 3, &in6->sin6_addr, 16);
		memcpy(key + 19, &in6->sin6_scope_id, 4);
		return 23;
	}
	return 1;
}

size_t addr_key(const struct addr *a, unsigned char key[ADDR_KEY_MAX])
{
	return addr_key_sa(&a->u.sa, key);
}

bool addr_is_wildcard(const struct addr *a)
{
	if (a->u.sa.sa_family == AF_INET)
		return a->u.in.sin_addr.s_addr == htonl(INADDR_ANY);
	return a->u.sa.sa_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&a->u.in6.sin6_addr);
}

bool addr_overlaps(const struct addr *a, const struct addr *b)
{
	if (addr_family(a) != addr_family(b) || addr_port(a) != addr_port(b))
		return false;
	return addr_is_wildcard(a) || addr_is_wildcard(b) || addr_equal(a, b);
}

int addr_family(const struct addr *a)
{
	return a->u.sa.sa_family;
}

uint16_t addr_port(const struct addr *a)
{
	if (a->u.sa.sa_family == AF_INET)
		return ntohs(a->u.in.sin_port);
	if (a->u.sa.sa_family == AF_INET6)
		return ntohs(a->u.in6.sin6_port);
	return 0;
}

bool addr_equal(const struct addr *a, const struct addr *b)
{
	if (a->u.sa.sa_family != b->u.sa.sa_family)
		return false;
	if (a->u.sa.sa_family == AF_INET)
		return a->u.in.sin_port == b->u.in.sin_port &&
		       a->u.in.sin_addr.s_addr == b->u.in.sin_addr.s_addr;
	if (a->u.sa.sa_family == AF_INET6)
		return a->u.in6.sin6_port == b->u.in6.sin6_port &&
		       a->u.in6.sin6_scope_id == b->u.in6.sin6_scope_id &&
		       memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr,
			      sizeof(struct in6_addr)) == 0;
	return false;
}
