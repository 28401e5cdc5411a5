/* addr.c: socket addresses of both families: parsing and formatting */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

#define PORT_DIGITS_MAX 5
#define SCOPE_INDEX_MAX 0xffffffffUL
/* an IPv6 address with "%" and an interface name */
#define HOST_MAX (INET6_ADDRSTRLEN + IF_NAMESIZE)

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

/* True for fe80::/10. */
static bool link_local6(const struct in6_addr *ip)
{
	return ip->s6_addr[0] == 0xfe && (ip->s6_addr[1] & 0xc0) == 0x80;
}

/* "IPV6" or "IPV6%SCOPE" (an interface name or index, link-local only). */
static int parse_ip6(const char *host, struct in6_addr *ip, uint32_t *scope,
		     const char **err)
{
	char ipbuf[INET6_ADDRSTRLEN + 1];
	const char *pct = strchr(host, '%');
	size_t iplen = pct != NULL ? (size_t)(pct - host) : strlen(host);

	*scope = 0;
	if (iplen == 0 || iplen >= sizeof(ipbuf)) {
		*err = "bad IPv6 address";
		return -1;
	}
	memcpy(ipbuf, host, iplen);
	ipbuf[iplen] = '\0';
	if (inet_pton(AF_INET6, ipbuf, ip) != 1) {
		*err = "bad IPv6 address";
		return -1;
	}
	if (pct == NULL)
		return 0;
	const char *name = pct + 1;
	size_t n = strlen(name);
	if (n == 0 || n >= IF_NAMESIZE) {
		*err = "bad interface after '%'";
		return -1;
	}
	if (!link_local6(ip)) {
		*err = "an interface (%IFACE) only goes with a link-local address (fe80::/10)";
		return -1;
	}
	if (strspn(name, "0123456789") == n) {
		unsigned long v = strtoul(name, NULL, 10);
		if (v == 0 || v > SCOPE_INDEX_MAX) {
			*err = "bad interface index after '%'";
			return -1;
		}
		*scope = (uint32_t)v;
		return 0;
	}
	*scope = if_nametoindex(name);
	if (*scope == 0) {
		*err = "no such interface after '%'";
		return -1;
	}
	return 0;
}

static int parse_ip4(const char *host, struct in_addr *ip, const char **err)
{
	if (inet_pton(AF_INET, host, ip) != 1) {
		*err = "bad IPv4 address";
		return -1;
	}
	return 0;
}

int addr_parse(const char *s, struct addr *out, const char **err)
{
	char host[HOST_MAX + 1];
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
		uint32_t scope;
		if (parse_ip6(host, &ip6, &scope, err) < 0)
			return -1;
		if (addr_parse_port(port_str, &port, err) < 0)
			return -1;
		set_v6(out, &ip6, port);
		out->u.in6.sin6_scope_id = scope;
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
	if (parse_ip4(host, &ip4, err) < 0)
		return -1;
	if (addr_parse_port(colon + 1, &port, err) < 0)
		return -1;
	set_v4(out, &ip4, port);
	return 0;
}

int addr_parse_ip(const char *s, struct addr *out, const char **err)
{
	if (strchr(s, ':') != NULL) {
		struct in6_addr ip6;
		uint32_t scope;
		if (strlen(s) > HOST_MAX) {
			*err = "bad IPv6 address";
			return -1;
		}
		if (parse_ip6(s, &ip6, &scope, err) < 0)
			return -1;
		set_v6(out, &ip6, 0);
		out->u.in6.sin6_scope_id = scope;
		return 0;
	}
	struct in_addr ip4;
	if (parse_ip4(s, &ip4, err) < 0)
		return -1;
	set_v4(out, &ip4, 0);
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
		char scope[IF_NAMESIZE + 1] = "";
		inet_ntop(AF_INET6, &a->u.in6.sin6_addr, ip, sizeof(ip));
		if (a->u.in6.sin6_scope_id != 0) {
			char name[IF_NAMESIZE];
			if (if_indextoname(a->u.in6.sin6_scope_id, name) != NULL)
				snprintf(scope, sizeof(scope), "%%%s", name);
			else
				snprintf(scope, sizeof(scope), "%%%u", a->u.in6.sin6_scope_id);
		}
		snprintf(buf, ADDR_STRLEN, "[%s%s]:%u", ip, scope, ntohs(a->u.in6.sin6_port));
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

bool addr_is_loopback(const struct addr *a)
{
	if (a->u.sa.sa_family == AF_INET)
		return (ntohl(a->u.in.sin_addr.s_addr) >> 24) == IN_LOOPBACKNET;
	return a->u.sa.sa_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&a->u.in6.sin6_addr);
}

bool addr_is_link_local(const struct addr *a)
{
	return a->u.sa.sa_family == AF_INET6 && link_local6(&a->u.in6.sin6_addr);
}

const char *addr_backend_problem(const struct addr *a)
{
	if (addr_is_wildcard(a))
		return "the unspecified address is not a backend";
	if (a->u.sa.sa_family == AF_INET) {
		in_addr_t ip = ntohl(a->u.in.sin_addr.s_addr);
		if (ip == INADDR_BROADCAST)
			return "the broadcast address is not a backend";
		if (IN_MULTICAST(ip))
			return "a multicast address is not a backend";
		return NULL;
	}
	if (a->u.sa.sa_family != AF_INET6)
		return "not an IP address";
	const struct in6_addr *ip6 = &a->u.in6.sin6_addr;
	if (IN6_IS_ADDR_MULTICAST(ip6))
		return "a multicast address is not a backend";
	if (IN6_IS_ADDR_V4MAPPED(ip6))
		return "IPv4-mapped address: write it as IPv4";
	if (link_local6(ip6) && a->u.in6.sin6_scope_id == 0)
		return "a link-local address needs its interface: fe80::...%IFACE";
	return NULL;
}

struct addr addr_with_port(const struct addr *a, uint16_t p)
{
	struct addr out = *a;
	if (out.u.sa.sa_family == AF_INET)
		out.u.in.sin_port = htons(p);
	else if (out.u.sa.sa_family == AF_INET6)
		out.u.in6.sin6_port = htons(p);
	return out;
}

struct addr addr_wildcard(int family, uint16_t p)
{
	struct addr out;
	if (family == AF_INET6) {
		set_v6(&out, &in6addr_any, p);
	} else {
		struct in_addr any4 = { .s_addr = htonl(INADDR_ANY) };
		set_v4(&out, &any4, p);
	}
	return out;
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
