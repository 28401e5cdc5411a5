/* fuzz_proxyproto.c: libFuzzer harness for proxy_header (PROXY protocol v1 and v2) */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_check.h"
#include "proxyproto.h"

/*
 * Input layout (bytes past the end read as 0):
 *   [0]      version: % 3 gives off, v1, v2
 *   [1]      source family: % 4 gives AF_INET, AF_INET6, AF_UNSPEC, or
 *            (3) the family number byte / 4, any value, known ones included
 *   [2..17]  source address (the first 4 for IPv4; other families: raw
 *            sockaddr bytes after the family field)
 *   [18..19] source port, network order
 *   [20]     destination family, as [1]
 *   [21..36] destination address
 *   [37..38] destination port
 *   [39]     size of a short buffer (% PROXY_HEADER_MAX) that must not be written past
 */
#define ADDR_BYTES 16
#define PORT_BYTES 2
#define V1_LINE_MAX (PROXY_HEADER_MAX - 1) /* 107: the spec's limit, less the NUL */
#define V1_PREFIX "PROXY "
#define CRLF "\r\n"
#define V1_UNKNOWN "PROXY UNKNOWN\r\n"
#define V2_SIG_LEN 12
#define V2_HEADER_LEN 16
#define V2_VER_CMD 12   /* offsets in the v2 header */
#define V2_FAM 13
#define V2_LEN_HI 14
#define V2_LEN_LO 15
#define V2_PROXY 0x21
#define V2_LOCAL 0x20
#define V2_TCP4 0x11
#define V2_TCP6 0x21
#define V2_UNSPEC 0x00
#define FAMILY_CHOICES 4
#define FAMILY_RAW 3
#define VERSION_CHOICES 3

static const unsigned char v2_signature[V2_SIG_LEN] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};

/* Hands out input bytes in order; zeros once it is used up. */
struct input {
	const uint8_t *data;
	size_t size, pos;
};

static uint8_t take(struct input *in)
{
	return in->pos < in->size ? in->data[in->pos++] : 0;
}

static void take_n(struct input *in, void *out, size_t n)
{
	unsigned char *p = out;
	for (size_t i = 0; i < n; i++)
		p[i] = take(in);
}

static void take_addr(struct input *in, struct addr *a)
{
	uint8_t sel = take(in);
	unsigned char ip[ADDR_BYTES];
	uint16_t port;

	take_n(in, ip, sizeof(ip));
	take_n(in, &port, sizeof(port));
	memset(a, 0, sizeof(*a));
	switch (sel % FAMILY_CHOICES) {
	case 0:
		a->u.in.sin_family = AF_INET;
		memcpy(&a->u.in.sin_addr, ip, sizeof(a->u.in.sin_addr));
		a->u.in.sin_port = port;
		a->len = sizeof(a->u.in);
		return;
	case 1:
		a->u.in6.sin6_family = AF_INET6;
		memcpy(&a->u.in6.sin6_addr, ip, sizeof(a->u.in6.sin6_addr));
		a->u.in6.sin6_port = port;
		a->len = sizeof(a->u.in6);
		return;
	case 2:
		a->u.sa.sa_family = AF_UNSPEC;
		break;
	default:
		a->u.sa.sa_family = (sa_family_t)(sel / FAMILY_CHOICES);
		break;
	}
	/* raw bytes after the family field, whatever it means for that family */
	unsigned char *raw = (unsigned char *)&a->u.ss + sizeof(a->u.sa.sa_family);
	memcpy(raw, ip, sizeof(ip));
	memcpy(raw + sizeof(ip), &port, sizeof(port));
	a->len = sizeof(a->u.ss);
}

static bool same_known_family(const struct addr *a, const struct addr *b)
{
	int f = addr_family(a);
	return (f == AF_INET || f == AF_INET6) && f == addr_family(b);
}

static const void *ip_bytes(const struct addr *a)
{
	return addr_family(a) == AF_INET ? (const void *)&a->u.in.sin_addr :
					   (const void *)&a->u.in6.sin6_addr;
}

static size_t ip_len(const struct addr *a)
{
	return addr_family(a) == AF_INET ? sizeof(a->u.in.sin_addr) :
					   sizeof(a->u.in6.sin6_addr);
}

/* The text form of one address must read back as the same bytes. */
static void check_ip_text(const char *text, const struct addr *a, const char *which)
{
	unsigned char back[ADDR_BYTES];
	FUZZ_CHECK(inet_pton(addr_family(a), text, back) == 1 &&
		   memcmp(back, ip_bytes(a), ip_len(a)) == 0,
		   "v1 %s address '%s' does not read back", which, text);
}

static void check_v1(const unsigned char *buf, size_t len, const struct addr *src,
		     const struct addr *dst)
{
	char text[PROXY_HEADER_MAX + 1];

	FUZZ_CHECK(len > 0 && len <= V1_LINE_MAX, "v1 header of %zu bytes", len);
	FUZZ_CHECK(memchr(buf, '\0', len) == NULL, "NUL inside the v1 header");
	memcpy(text, buf, len);
	text[len] = '\0';
	FUZZ_CHECK(strncmp(text, V1_PREFIX, strlen(V1_PREFIX)) == 0, "v1 header '%s'", text);
	FUZZ_CHECK(strstr(text, CRLF) == text + len - strlen(CRLF),
		   "v1 header does not end with its only CRLF: '%s'", text);
	if (!same_known_family(src, dst)) {
		FUZZ_CHECK(strcmp(text, V1_UNKNOWN) == 0, "'%s', expected UNKNOWN", text);
		return;
	}

	char proto[5], s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
	unsigned sport, dport;
	int end = -1;
	int n = sscanf(text, "PROXY %4s %45[0-9a-fA-F:.] %45[0-9a-fA-F:.] %5u %5u%n", proto,
		       s, d, &sport, &dport, &end);
	FUZZ_CHECK(n == 5 && end >= 0 && strcmp(text + end, CRLF) == 0,
		   "v1 header does not parse: '%s'", text);
	FUZZ_CHECK(strcmp(proto, addr_family(src) == AF_INET ? "TCP4" : "TCP6") == 0,
		   "protocol %s for family %d", proto, addr_family(src));
	check_ip_text(s, src, "source");
	check_ip_text(d, dst, "destination");
	FUZZ_CHECK(sport == addr_port(src) && dport == addr_port(dst),
		   "ports %u %u, expected %u %u", sport, dport, addr_port(src),
		   addr_port(dst));
}

/* One address and port of the v2 body must be the input's bytes. */
static void check_v2_addr(const unsigned char *body, size_t ip_off, size_t port_off,
			  const struct addr *a)
{
	uint16_t port = htons(addr_port(a));
	FUZZ_CHECK(memcmp(body + ip_off, ip_bytes(a), ip_len(a)) == 0, "v2 address differs");
	FUZZ_CHECK(memcmp(body + port_off, &port, sizeof(port)) == 0, "v2 port differs");
}

static void check_v2(const unsigned char *buf, size_t len, const struct addr *src,
		     const struct addr *dst)
{
	FUZZ_CHECK(len >= V2_HEADER_LEN && len <= PROXY_HEADER_MAX, "v2 header of %zu bytes",
		   len);
	FUZZ_CHECK(memcmp(buf, v2_signature, V2_SIG_LEN) == 0, "no v2 signature");
	size_t body = (size_t)buf[V2_LEN_HI] << 8 | buf[V2_LEN_LO];
	FUZZ_CHECK(len == V2_HEADER_LEN + body, "length %zu, field says 16 + %zu", len, body);
	if (!same_known_family(src, dst)) {
		FUZZ_CHECK(buf[V2_VER_CMD] == V2_LOCAL && buf[V2_FAM] == V2_UNSPEC && body == 0,
			   "families %d/%d: expected LOCAL UNSPEC", addr_family(src),
			   addr_family(dst));
		return;
	}
	bool v4 = addr_family(src) == AF_INET;
	size_t ip = ip_len(src);
	FUZZ_CHECK(buf[V2_VER_CMD] == V2_PROXY && buf[V2_FAM] == (v4 ? V2_TCP4 : V2_TCP6),
		   "version/command 0x%02x, family 0x%02x", buf[V2_VER_CMD], buf[V2_FAM]);
	FUZZ_CHECK(body == 2 * ip + 2 * PORT_BYTES, "body of %zu bytes", body);
	check_v2_addr(buf + V2_HEADER_LEN, 0, 2 * ip, src);
	check_v2_addr(buf + V2_HEADER_LEN, ip, 2 * ip + PORT_BYTES, dst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { .data = data, .size = size };
	struct addr src, dst;

	enum proxy_protocol version = (enum proxy_protocol)(take(&in) % VERSION_CHOICES);
	take_addr(&in, &src);
	take_addr(&in, &dst);
	size_t short_n = take(&in) % PROXY_HEADER_MAX;

	/* exactly PROXY_HEADER_MAX bytes on the heap: ASan sees one byte too many */
	unsigned char *buf = malloc(PROXY_HEADER_MAX);
	if (buf == NULL)
		abort();
	size_t len = proxy_header(version, &src, &dst, buf, PROXY_HEADER_MAX);
	switch (version) {
	case PROXY_OFF:
		FUZZ_CHECK(len == 0, "off wrote %zu bytes", len);
		break;
	case PROXY_V1:
		check_v1(buf, len, &src, &dst);
		break;
	case PROXY_V2:
		check_v2(buf, len, &src, &dst);
		break;
	}
	free(buf);

	/* a buffer that is too small is not written past (ASan), whatever is returned */
	unsigned char *small = malloc(short_n);
	if (small == NULL && short_n > 0)
		abort();
	len = proxy_header(version, &src, &dst, small, short_n);
	FUZZ_CHECK(len <= short_n, "%zu bytes reported in a buffer of %zu", len, short_n);
	free(small);
	return 0;
}
