/* test_proxyproto.c: unit tests for proxyproto.c (PROXY protocol v1 and v2 headers, byte for byte) */
#include "autoconfig.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>

#include "proxyproto.h"

#define SENTINEL 0xa5       /* fills buffers; bytes not written keep it */
#define SLACK 32            /* sentinel bytes after the n given to proxy_header */
#define V2_HEADER_LEN 16    /* signature, ver_cmd, fam, 2 length bytes */

/* The example connection of the HAProxy specification. */
#define CLIENT4 "192.0.2.1"
#define SERVER4 "198.51.100.2"
#define CLIENT_PORT 56324   /* 0xdc04 */
#define SERVER_PORT 443     /* 0x01bb */
#define CLIENT6 "2001:db8::1"
#define SERVER6 "2001:db8:0:1::2"

/* ---- helpers ---- */

static struct addr ipv4(const char *ip, uint16_t port)
{
	struct addr a;
	memset(&a, 0, sizeof(a));
	a.u.in.sin_family = AF_INET;
	a.u.in.sin_port = htons(port);
	assert_int_equal(inet_pton(AF_INET, ip, &a.u.in.sin_addr), 1);
	a.len = sizeof(a.u.in);
	return a;
}

static struct addr ipv6(const char *ip, uint16_t port)
{
	struct addr a;
	memset(&a, 0, sizeof(a));
	a.u.in6.sin6_family = AF_INET6;
	a.u.in6.sin6_port = htons(port);
	assert_int_equal(inet_pton(AF_INET6, ip, &a.u.in6.sin6_addr), 1);
	a.len = sizeof(a.u.in6);
	return a;
}

static struct addr unspec(void)
{
	struct addr a;
	memset(&a, 0, sizeof(a));
	a.len = sizeof(a.u.sa);
	return a;
}

/* A buffer of PROXY_HEADER_MAX bytes followed by SLACK more, all SENTINEL. */
struct out {
	unsigned char buf[PROXY_HEADER_MAX + SLACK];
};

static void out_init(struct out *o)
{
	memset(o->buf, SENTINEL, sizeof(o->buf));
}

/* Nothing at or after offset from was written. */
static void assert_untouched_from(const struct out *o, size_t from)
{
	for (size_t i = from; i < sizeof(o->buf); i++)
		if (o->buf[i] != SENTINEL)
			fail_msg("byte %zu written (0x%02x), header ends before it", i, o->buf[i]);
}

/* Builds the header into a fresh buffer of exactly PROXY_HEADER_MAX bytes and
 * checks it against want (len bytes); nothing is written after the header (v1
 * may end it with a NUL). */
static void check_header(enum proxy_protocol v, const struct addr *src,
			 const struct addr *dst, const void *want, size_t len)
{
	struct out o;
	out_init(&o);
	size_t got = proxy_header(v, src, dst, o.buf, PROXY_HEADER_MAX);
	assert_int_equal(got, len);
	assert_memory_equal(o.buf, want, len);
	assert_untouched_from(&o, v == PROXY_V1 ? len + 1 : len);
}

static void check_v1(const struct addr *src, const struct addr *dst, const char *want)
{
	check_header(PROXY_V1, src, dst, want, strlen(want));
}

/* ---- proxy_protocol_parse ---- */

static void test_parse(void **state)
{
	(void)state;
	enum proxy_protocol p = PROXY_V2;

	assert_int_equal(proxy_protocol_parse("off", &p), 0);
	assert_int_equal(p, PROXY_OFF);
	assert_int_equal(proxy_protocol_parse("v1", &p), 0);
	assert_int_equal(p, PROXY_V1);
	assert_int_equal(proxy_protocol_parse("v2", &p), 0);
	assert_int_equal(p, PROXY_V2);
}

static void test_parse_unknown(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"", "V1", "V2", "OFF", "v3", "v0", "1", "2", "on", "yes", "v1 ", " v1",
		"v2x", "proxy", "version1",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum proxy_protocol p = PROXY_V1;
		if (proxy_protocol_parse(bad[i], &p) != -1)
			fail_msg("proxy_protocol_parse(\"%s\") accepted", bad[i]);
		assert_int_equal(p, PROXY_V1); /* untouched on error */
	}
}

/* ---- v1 ---- */

static void test_v1_tcp4(void **state)
{
	(void)state;
	struct addr src = ipv4(CLIENT4, CLIENT_PORT), dst = ipv4(SERVER4, SERVER_PORT);
	check_v1(&src, &dst, "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n");

	/* ports and addresses at their extremes */
	src = ipv4("0.0.0.0", 1);
	dst = ipv4("255.255.255.255", 65535);
	check_v1(&src, &dst, "PROXY TCP4 0.0.0.0 255.255.255.255 1 65535\r\n");
}

static void test_v1_tcp6(void **state)
{
	(void)state;
	struct addr src = ipv6(CLIENT6, CLIENT_PORT), dst = ipv6(SERVER6, SERVER_PORT);
	check_v1(&src, &dst, "PROXY TCP6 2001:db8::1 2001:db8:0:1::2 56324 443\r\n");

	/* written as inet_ntop does: lower case, longest zero run compressed */
	src = ipv6("2001:0DB8:0000:0000:0000:0000:0000:0001", 8080);
	dst = ipv6("fd45:0a71:55a6:0001:0002:0001:0000:0db1", 80);
	check_v1(&src, &dst, "PROXY TCP6 2001:db8::1 fd45:a71:55a6:1:2:1:0:db1 8080 80\r\n");

	src = ipv6("::1", 1);
	dst = ipv6("::", 2);
	check_v1(&src, &dst, "PROXY TCP6 ::1 :: 1 2\r\n");
}

static void test_v1_longest(void **state)
{
	(void)state;
	static const char want[] =
		"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	struct addr a = ipv6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);

	/* the specification's maximum is 107 bytes; ours is 104 */
	assert_int_equal(strlen(want), 104);
	assert_true(strlen(want) <= PROXY_HEADER_MAX);
	check_v1(&a, &a, want);

	/* a long form with digits in every group */
	struct addr b = ipv6("1234:5678:9abc:def0:1234:5678:9abc:def0", 65535);
	check_v1(&b, &b,
		 "PROXY TCP6 1234:5678:9abc:def0:1234:5678:9abc:def0 "
		 "1234:5678:9abc:def0:1234:5678:9abc:def0 65535 65535\r\n");
}

static void test_v1_mixed_families(void **state)
{
	(void)state;
	struct addr a4 = ipv4(CLIENT4, CLIENT_PORT), a6 = ipv6(SERVER6, SERVER_PORT);
	struct addr none = unspec();

	check_v1(&a4, &a6, "PROXY UNKNOWN\r\n");
	check_v1(&a6, &a4, "PROXY UNKNOWN\r\n");
	check_v1(&none, &none, "PROXY UNKNOWN\r\n");
	check_v1(&a4, &none, "PROXY UNKNOWN\r\n");
	check_v1(&none, &a6, "PROXY UNKNOWN\r\n");
}

/* ---- v2 ---- */

static void test_v2_tcp4(void **state)
{
	(void)state;
	static const unsigned char want[28] = {
		0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
		0x21,                   /* version 2, PROXY */
		0x11,                   /* AF_INET, STREAM */
		0x00, 0x0C,             /* 12 bytes follow */
		192, 0, 2, 1,           /* source address */
		198, 51, 100, 2,        /* destination address */
		0xDC, 0x04,             /* source port 56324 */
		0x01, 0xBB,             /* destination port 443 */
	};
	struct addr src = ipv4(CLIENT4, CLIENT_PORT), dst = ipv4(SERVER4, SERVER_PORT);
	check_header(PROXY_V2, &src, &dst, want, sizeof(want));
}

static void test_v2_tcp4_port_order(void **state)
{
	(void)state;
	static const unsigned char want[28] = {
		0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
		0x21, 0x11, 0x00, 0x0C,
		10, 0, 0, 1,
		10, 43, 206, 211,
		0x01, 0x02,             /* 258 */
		0xFF, 0xFE,             /* 65534 */
	};
	struct addr src = ipv4("10.0.0.1", 258), dst = ipv4("10.43.206.211", 65534);
	check_header(PROXY_V2, &src, &dst, want, sizeof(want));
}

static void test_v2_tcp6(void **state)
{
	(void)state;
	static const unsigned char want[52] = {
		0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
		0x21,                   /* version 2, PROXY */
		0x21,                   /* AF_INET6, STREAM */
		0x00, 0x24,             /* 36 bytes follow */
		/* source 2001:db8::1 */
		0x20, 0x01, 0x0D, 0xB8, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
		/* destination 2001:db8:0:1::2 */
		0x20, 0x01, 0x0D, 0xB8, 0x00, 0x00, 0x00, 0x01,
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
		0xDC, 0x04,             /* source port 56324 */
		0x01, 0xBB,             /* destination port 443 */
	};
	struct addr src = ipv6(CLIENT6, CLIENT_PORT), dst = ipv6(SERVER6, SERVER_PORT);
	check_header(PROXY_V2, &src, &dst, want, sizeof(want));
}

static void test_v2_tcp6_longest_fits(void **state)
{
	(void)state;
	struct addr a = ipv6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	unsigned char want[52];

	memcpy(want, "\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A\x21\x21\x00\x24", 16);
	memset(want + 16, 0xFF, sizeof(want) - 16);
	assert_true(sizeof(want) <= PROXY_HEADER_MAX);
	check_header(PROXY_V2, &a, &a, want, sizeof(want));
}

static void test_v2_mixed_families_local(void **state)
{
	(void)state;
	static const unsigned char want[V2_HEADER_LEN] = {
		0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
		0x20,                   /* version 2, LOCAL */
		0x00,                   /* AF_UNSPEC, UNSPEC */
		0x00, 0x00,             /* nothing follows */
	};
	struct addr a4 = ipv4(CLIENT4, CLIENT_PORT), a6 = ipv6(SERVER6, SERVER_PORT);
	struct addr none = unspec();

	check_header(PROXY_V2, &a4, &a6, want, sizeof(want));
	check_header(PROXY_V2, &a6, &a4, want, sizeof(want));
	check_header(PROXY_V2, &none, &none, want, sizeof(want));
	check_header(PROXY_V2, &none, &a4, want, sizeof(want));
}

/* ---- off, and buffers that are too small ---- */

static void test_off(void **state)
{
	(void)state;
	struct addr src = ipv4(CLIENT4, CLIENT_PORT), dst = ipv4(SERVER4, SERVER_PORT);
	struct addr a6 = ipv6(CLIENT6, CLIENT_PORT);
	struct out o;

	out_init(&o);
	assert_int_equal(proxy_header(PROXY_OFF, &src, &dst, o.buf, PROXY_HEADER_MAX), 0);
	assert_int_equal(proxy_header(PROXY_OFF, &a6, &a6, o.buf, PROXY_HEADER_MAX), 0);
	assert_int_equal(proxy_header(PROXY_OFF, &src, &a6, o.buf, sizeof(o.buf)), 0);
	assert_untouched_from(&o, 0);
}

static void test_small_buffer(void **state)
{
	(void)state;
	struct addr src = ipv4(CLIENT4, CLIENT_PORT), dst = ipv4(SERVER4, SERVER_PORT);
	struct addr s6 = ipv6(CLIENT6, CLIENT_PORT), d6 = ipv6(SERVER6, SERVER_PORT);
	static const size_t sizes[] = { 0, 1, 15, 16, 28, 52, PROXY_HEADER_MAX - 1 };
	struct out o;

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		out_init(&o);
		assert_int_equal(proxy_header(PROXY_V1, &src, &dst, o.buf, sizes[i]), 0);
		assert_int_equal(proxy_header(PROXY_V1, &s6, &d6, o.buf, sizes[i]), 0);
		assert_int_equal(proxy_header(PROXY_V1, &src, &d6, o.buf, sizes[i]), 0);
		assert_int_equal(proxy_header(PROXY_V2, &src, &dst, o.buf, sizes[i]), 0);
		assert_int_equal(proxy_header(PROXY_V2, &s6, &d6, o.buf, sizes[i]), 0);
		assert_int_equal(proxy_header(PROXY_V2, &src, &d6, o.buf, sizes[i]), 0);
		assert_untouched_from(&o, 0);
	}
}

/* A larger buffer than needed gives the same header. */
static void test_large_buffer(void **state)
{
	(void)state;
	struct addr src = ipv4(CLIENT4, CLIENT_PORT), dst = ipv4(SERVER4, SERVER_PORT);
	static const char want[] = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
	struct out o;

	out_init(&o);
	assert_int_equal(proxy_header(PROXY_V1, &src, &dst, o.buf, sizeof(o.buf)),
			 strlen(want));
	assert_memory_equal(o.buf, want, strlen(want));

	out_init(&o);
	assert_int_equal(proxy_header(PROXY_V2, &src, &dst, o.buf, sizeof(o.buf)), 28);
	assert_untouched_from(&o, 28);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_parse_unknown),
		cmocka_unit_test(test_v1_tcp4),
		cmocka_unit_test(test_v1_tcp6),
		cmocka_unit_test(test_v1_longest),
		cmocka_unit_test(test_v1_mixed_families),
		cmocka_unit_test(test_v2_tcp4),
		cmocka_unit_test(test_v2_tcp4_port_order),
		cmocka_unit_test(test_v2_tcp6),
		cmocka_unit_test(test_v2_tcp6_longest_fits),
		cmocka_unit_test(test_v2_mixed_families_local),
		cmocka_unit_test(test_off),
		cmocka_unit_test(test_small_buffer),
		cmocka_unit_test(test_large_buffer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
