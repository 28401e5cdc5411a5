/* proxyproto.h: the PROXY protocol header (v1 text, v2 binary) sent to backends */
#ifndef DUALPROXY_PROXYPROTO_H
#define DUALPROXY_PROXYPROTO_H

#include <stddef.h>

#include "addr.h"

enum proxy_protocol {
	PROXY_OFF, /* nothing is sent before the client's data */
	PROXY_V1,  /* "PROXY TCP4 src dst sport dport\r\n" */
	PROXY_V2,  /* the binary form with its 12-byte signature */
};

/* Longest header: v1 "PROXY TCP6 " with two full IPv6 addresses is 104 bytes;
 * v2 for TCP6 is 16 + 36 bytes. */
#define PROXY_HEADER_MAX 108

/* Parse "off", "v1" or "v2"; returns 0, or -1 if unknown. */
int proxy_protocol_parse(const char *s, enum proxy_protocol *out);

/* Writes the header for a client connected from src to dst into buf (n >=
 * PROXY_HEADER_MAX) and returns its length; 0 for PROXY_OFF. Addresses of
 * another family than AF_INET/AF_INET6, or of two different families, give
 * the UNKNOWN (v1) or LOCAL (v2) form. */
size_t proxy_header(enum proxy_protocol version, const struct addr *src,
		    const struct addr *dst, unsigned char *buf, size_t n);

#endif
