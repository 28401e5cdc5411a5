/* proxyproto.c: the PROXY protocol header (v1 text, v2 binary) sent to backends */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "proxyproto.h"

/* v2, section 2.2 of the HAProxy specification */
static const unsigned char v2_signature[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};
#define V2_VERSION_PROXY 0x21 /* version 2, command PROXY */
#define V2_VERSION_LOCAL 0x20 /* version 2, command LOCAL */
#define V2_TCP4 0x11          /* AF_INET, STREAM */
#define V2_TCP6 0x21          /* AF_INET6, STREAM */
#define V2_UNSPEC 0x00
#define V2_HEADER_LEN 16
#define V2_TCP4_LEN 12        /* two IPv4 addresses and two ports */
#define V2_TCP6_LEN 36        /* two IPv6 addresses and two ports */

int proxy_protocol_parse(const char *s, enum proxy_protocol *out)
{
	if (strcmp(s, "off") == 0 || strcmp(s, "no") == 0)
		*out = PROXY_OFF;
	else if (strcmp(s, "v1") == 0)
		*out = PROXY_V1;
	else if (strcmp(s, "v2") == 0)
		*out = PROXY_V2;
	else
		return -1;
	return 0;
}

static bool same_known_family(const struct addr *src, const struct addr *dst)
{
	int f = addr_family(src);
	return (f == AF_INET || f == AF_INET6) && f == addr_family(dst);
}

static const void *ip_of(const struct addr *a)
{
	if (addr_family(a) == AF_INET)
		return &a->u.in.sin_addr;
	return &a->u.in6.sin6_addr;
}

static size_t header_v1(const struct addr *src, const struct addr *dst,
			unsigned char *buf, size_t n)
{
	char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
	int len;

	if (!same_known_family(src, dst)) {
		len = snprintf((char *)buf, n, "PROXY UNKNOWN\r\n");
	} else {
		int family = addr_family(src);
		inet_ntop(family, ip_of(src), s, sizeof(s));
		inet_ntop(family, ip_of(dst), d, sizeof(d));
		len = snprintf((char *)buf, n, "PROXY %s %s %s %u %u\r\n",
			       family == AF_INET ? "TCP4" : "TCP6", s, d, addr_port(src),
			       addr_port(dst));
	}
	return len > 0 && (size_t)len < n ? (size_t)len : 0;
}

static size_t header_v2(const struct addr *src, const struct addr *dst,
			unsigned char *buf)
{
	size_t body = 0;

	memcpy(buf, v2_signature, sizeof(v2_signature));
	unsigned char *p = buf + V2_HEADER_LEN;
	if (!same_known_family(src, dst)) {
		buf[12] = V2_VERSION_LOCAL;
		buf[13] = V2_UNSPEC;
	} else if (addr_family(src) == AF_INET) {
		buf[12] = V2_VERSION_PROXY;
		buf[13] = V2_TCP4;
		memcpy(p, &src->u.in.sin_addr, 4);
		memcpy(p + 4, &dst->u.in.sin_addr, 4);
		memcpy(p + 8, &src->u.in.sin_port, 2);
		memcpy(p + 10, &dst->u.in.sin_port, 2);
		body = V2_TCP4_LEN;
	} else {
		buf[12] = V2_VERSION_PROXY;
		buf[13] = V2_TCP6;
		memcpy(p, &src->u.in6.sin6_addr, 16);
		memcpy(p + 16, &dst->u.in6.sin6_addr, 16);
		memcpy(p + 32, &src->u.in6.sin6_port, 2);
		memcpy(p + 34, &dst->u.in6.sin6_port, 2);
		body = V2_TCP6_LEN;
	}
	buf[14] = (unsigned char)(body >> 8);
	buf[15] = (unsigned char)(body & 0xff);
	return V2_HEADER_LEN + body;
}

size_t proxy_header(enum proxy_protocol version, const struct addr *src,
		    const struct addr *dst, unsigned char *buf, size_t n)
{
	if (n < PROXY_HEADER_MAX)
		return 0;
	switch (version) {
	case PROXY_V1:
		return header_v1(src, dst, buf, n);
	case PROXY_V2:
		return header_v2(src, dst, buf);
	case PROXY_OFF:
		break;
	}
	return 0;
}
