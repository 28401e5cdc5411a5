/* test_cidr.c: unit tests for cidr.c (parsing prefixes, client allowlists of both families) */
#include "autoconfig.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "cidr.h"

#define TEST_PORT 40000     /* the client port; matching ignores it */
#define LONG_INPUT_LEN 200  /* longer than any address the parser buffers */

/* ---- helpers ---- */

/* Parses s, which must succeed, and returns the prefix. */
static struct cidr parse_ok_at(const char *s, const char *file, int at)
{
	struct cidr c;
	const char *err = NULL;

	memset(&c, 0xa5, sizeof(c));
	if (cidr_parse(s, &c, &err) != 0) {
		print_error("cidr_parse(\"%s\") failed: %s\n", s, err ? err : "(no message)");
		_fail(file, at);
	}
	return c;
}
#define parse_ok(s) parse_ok_at((s), __FILE__, __LINE__)

/* cidr_parse(s) must fail with a message; returns it. */
static const char *parse_fails_at(const char *s, const char *file, int at)
{
	struct cidr c;
	const char *err = NULL;

	if (cidr_parse(s, &c, &err) != -1) {
		print_error("cidr_parse(\"%s\") succeeded, expected an error\n", s);
		_fail(file, at);
	}
	if (err == NULL || err[0] == '\0') {
		print_error("cidr_parse(\"%s\") failed without a message\n", s);
		_fail(file, at);
	}
	return err;
}
#define parse_fails(s) parse_fails_at((s), __FILE__, __LINE__)

/* A client address from its text form ("10.0.0.1" or "2001:db8::1"). */
static struct addr client(const char *ip)
{
	struct addr a;

	memset(&a, 0, sizeof(a));
	if (inet_pton(AF_INET, ip, &a.u.in.sin_addr) == 1) {
		a.u.in.sin_family = AF_INET;
		a.u.in.sin_port = htons(TEST_PORT);
		a.len = sizeof(a.u.in);
	} else if (inet_pton(AF_INET6, ip, &a.u.in6.sin6_addr) == 1) {
		a.u.in6.sin6_family = AF_INET6;
		a.u.in6.sin6_port = htons(TEST_PORT);
		a.len = sizeof(a.u.in6);
	} else {
		fail_msg("test address \"%s\" does not parse", ip);
	}
	return a;
}

/* Builds a list from prefixes that must parse and fit. */
static void list_of(struct cidr_list *list, const char *const *prefixes, size_t n)
{
	cidr_list_free(list);
	for (size_t i = 0; i < n; i++) {
		struct cidr c = parse_ok(prefixes[i]);
		const char *err = NULL;
		if (cidr_list_add(list, &c, &err) != 0)
			fail_msg("cidr_list_add(\"%s\"): %s", prefixes[i], err);
	}
	assert_int_equal(list->n, n);
}

static void check_match(const struct cidr_list *list, const char *ip, bool want,
			const char *file, int at)
{
	struct addr a = client(ip);
	bool got = cidr_list_match(list, &a);
	if (got != want) {
		print_error("cidr_list_match(%s) is %s, expected %s\n", ip,
			    got ? "true" : "false", want ? "true" : "false");
		_fail(file, at);
	}
}
#define assert_match(list, ip) check_match((list), (ip), true, __FILE__, __LINE__)
#define assert_no_match(list, ip) check_match((list), (ip), false, __FILE__, __LINE__)

static void assert_bytes(const struct cidr *c, int family, const char *ip)
{
	unsigned char want[16] = { 0 };
	assert_int_equal(inet_pton(family, ip, want), 1);
	assert_memory_equal(c->addr, want, sizeof(want));
}

/* ---- cidr_parse: good input ---- */

static void test_parse_ipv4(void **state)
{
	(void)state;
	struct cidr c = parse_ok("10.0.0.0/8");
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 8);
	static const unsigned char ten[16] = { 10, 0, 0, 0 };
	assert_memory_equal(c.addr, ten, sizeof(ten)); /* the rest is zeroed */

	c = parse_ok("192.168.1.0/24");
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 24);
	static const unsigned char lan[16] = { 192, 168, 1, 0 };
	assert_memory_equal(c.addr, lan, sizeof(lan));

	c = parse_ok("172.16.5.128/25");
	assert_int_equal(c.prefix, 25);
	assert_bytes(&c, AF_INET, "172.16.5.128");
}

static void test_parse_ipv4_host(void **state)
{
	(void)state;
	struct cidr c = parse_ok("1.2.3.4");
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 32);
	assert_bytes(&c, AF_INET, "1.2.3.4");

	c = parse_ok("1.2.3.4/32");
	assert_int_equal(c.prefix, 32);
	assert_bytes(&c, AF_INET, "1.2.3.4");

	c = parse_ok("255.255.255.255");
	assert_int_equal(c.prefix, 32);
	assert_bytes(&c, AF_INET, "255.255.255.255");
}

static void test_parse_ipv4_any(void **state)
{
	(void)state;
	struct cidr c = parse_ok("0.0.0.0/0");
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 0);
	static const unsigned char zero[16] = { 0 };
	assert_memory_equal(c.addr, zero, sizeof(zero));
}

static void test_parse_ipv6(void **state)
{
	(void)state;
	struct cidr c = parse_ok("::/0");
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.prefix, 0);
	static const unsigned char zero[16] = { 0 };
	assert_memory_equal(c.addr, zero, sizeof(zero));

	c = parse_ok("2001:db8::/32");
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.prefix, 32);
	static const unsigned char doc[16] = { 0x20, 0x01, 0x0d, 0xb8 };
	assert_memory_equal(c.addr, doc, sizeof(doc));

	/* a K3s service CIDR: the prefix ends inside the last 16-bit group */
	c = parse_ok("fd45:a71:55a6:1:2:1::/116");
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.prefix, 116);
	static const unsigned char k3s[16] = {
		0xfd, 0x45, 0x0a, 0x71, 0x55, 0xa6, 0x00, 0x01,
		0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
	};
	assert_memory_equal(c.addr, k3s, sizeof(k3s));

	/* bit 115 (0x1000 in the last group) is still inside a /116 */
	c = parse_ok("fd45:a71:55a6:1:2:1:0:1000/116");
	assert_int_equal(c.prefix, 116);
	assert_bytes(&c, AF_INET6, "fd45:a71:55a6:1:2:1:0:1000");
}

static void test_parse_ipv6_host(void **state)
{
	(void)state;
	struct cidr c = parse_ok("::1");
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.prefix, 128);
	assert_memory_equal(c.addr, &in6addr_loopback, sizeof(c.addr));

	c = parse_ok("::1/128");
	assert_int_equal(c.prefix, 128);

	c = parse_ok("fd45:a71:55a6:1:2:1:0:db1");
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.prefix, 128);
	assert_bytes(&c, AF_INET6, "fd45:a71:55a6:1:2:1:0:db1");

	/* the longest text form of an IPv6 address */
	c = parse_ok("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128");
	assert_int_equal(c.prefix, 128);
}

/* ---- cidr_parse: bad input ---- */

static void test_parse_host_bits(void **state)
{
	(void)state;
	assert_non_null(strstr(parse_fails("10.0.0.1/8"), "host bits"));
	assert_non_null(strstr(parse_fails("192.168.1.1/24"), "host bits"));
	assert_non_null(strstr(parse_fails("172.16.5.64/25"), "host bits"));
	assert_non_null(strstr(parse_fails("1.0.0.0/0"), "host bits"));
	assert_non_null(strstr(parse_fails("::1/0"), "host bits"));
	assert_non_null(strstr(parse_fails("2001:db8::1/32"), "host bits"));
	/* bit 116 (0x0800 in the last group) is the first host bit of a /116 */
	assert_non_null(strstr(parse_fails("fd45:a71:55a6:1:2:1:0:800/116"), "host bits"));
	assert_non_null(strstr(parse_fails("fd45:a71:55a6:1:2:1:0:db1/116"), "host bits"));
}

static void test_parse_prefix_out_of_range(void **state)
{
	(void)state;
	assert_non_null(strstr(parse_fails("10.0.0.0/33"), "0-32"));
	assert_non_null(strstr(parse_fails("0.0.0.0/999"), "0-32"));
	assert_non_null(strstr(parse_fails("::/129"), "0-128"));
	assert_non_null(strstr(parse_fails("::/999"), "0-128"));
	parse_fails("::/1280");
	parse_fails("10.0.0.0/00008");
}

static void test_parse_prefix_not_a_number(void **state)
{
	(void)state;
	parse_fails("1.2.3.4/");
	parse_fails("1.2.3.4/-1");
	parse_fails("1.2.3.4/+8");
	parse_fails("1.2.3.4/08x");
	parse_fails("1.2.3.4/ 8");
	parse_fails("1.2.3.4/8 ");
	parse_fails("10.0.0.0/8/8");
	parse_fails("10.0.0.0/0x8");
	parse_fails("::/");
	parse_fails("::/64x");
}

static void test_parse_bad_address(void **state)
{
	(void)state;
	assert_string_equal(parse_fails("/8"), "bad address");
	assert_string_equal(parse_fails("abc"), "bad address");
	assert_string_equal(parse_fails(""), "bad address");
	assert_string_equal(parse_fails("abc/8"), "bad address");
	parse_fails("/");
	parse_fails("10.0.0/8");
	parse_fails("10.0.0.256/32");
	parse_fails(" 10.0.0.0/8");
	parse_fails("[::1]/128");
	parse_fails(":::/0");
	parse_fails("localhost");
	parse_fails("10.0.0.0 /8");
}

static void test_parse_long_input(void **state)
{
	(void)state;
	char s[LONG_INPUT_LEN + 4];

	/* longer than the parser's address buffer: an error, not an overflow */
	memset(s, '1', LONG_INPUT_LEN);
	snprintf(s + LONG_INPUT_LEN, sizeof(s) - LONG_INPUT_LEN, "/8");
	assert_string_equal(parse_fails(s), "bad address");
	s[LONG_INPUT_LEN] = '\0';
	assert_string_equal(parse_fails(s), "bad address");
}

/* ---- cidr_list_match ---- */

static void test_match_ipv4(void **state)
{
	(void)state;
	static const char *const prefixes[] = { "10.0.0.0/8", "192.168.1.0/24", "1.2.3.4" };
	struct cidr_list list = { NULL, 0 };
	list_of(&list, prefixes, 3);

	assert_match(&list, "10.0.0.0");
	assert_match(&list, "10.0.0.1");
	assert_match(&list, "10.43.206.211");
	assert_match(&list, "10.255.255.255");
	assert_no_match(&list, "9.255.255.255");
	assert_no_match(&list, "11.0.0.0");

	assert_match(&list, "192.168.1.0");
	assert_match(&list, "192.168.1.255");
	assert_no_match(&list, "192.168.0.255");
	assert_no_match(&list, "192.168.2.0");

	assert_match(&list, "1.2.3.4");
	assert_no_match(&list, "1.2.3.5");
	assert_no_match(&list, "1.2.3.3");
	assert_no_match(&list, "127.0.0.1");
	cidr_list_free(&list);
}

static void test_match_ipv4_boundary_25(void **state)
{
	(void)state;
	static const char *const upper[] = { "172.16.5.128/25" };
	static const char *const lower[] = { "172.16.5.0/25" };
	struct cidr_list list = { NULL, 0 };

	list_of(&list, upper, 1);
	assert_no_match(&list, "172.16.5.127");
	assert_match(&list, "172.16.5.128");
	assert_match(&list, "172.16.5.255");
	assert_no_match(&list, "172.16.6.0");
	assert_no_match(&list, "172.16.4.255");

	list_of(&list, lower, 1);
	assert_no_match(&list, "172.16.4.255");
	assert_match(&list, "172.16.5.0");
	assert_match(&list, "172.16.5.127");
	assert_no_match(&list, "172.16.5.128");
	cidr_list_free(&list);
}

static void test_match_ipv6(void **state)
{
	(void)state;
	static const char *const prefixes[] = { "2001:db8::/32", "::1" };
	struct cidr_list list = { NULL, 0 };
	list_of(&list, prefixes, 2);

	assert_match(&list, "2001:db8::");
	assert_match(&list, "2001:db8::1");
	assert_match(&list, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff");
	assert_no_match(&list, "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff");
	assert_no_match(&list, "2001:db9::");
	assert_no_match(&list, "2002:db8::1");

	assert_match(&list, "::1");
	assert_no_match(&list, "::2");
	assert_no_match(&list, "::");
	assert_no_match(&list, "fe80::1");
	cidr_list_free(&list);
}

static void test_match_ipv6_boundary_116(void **state)
{
	(void)state;
	static const char *const prefixes[] = { "fd45:a71:55a6:1:2:1::/116" };
	struct cidr_list list = { NULL, 0 };
	list_of(&list, prefixes, 1);

	assert_match(&list, "fd45:a71:55a6:1:2:1::");
	assert_match(&list, "fd45:a71:55a6:1:2:1:0:1");
	assert_match(&list, "fd45:a71:55a6:1:2:1:0:db1");
	assert_match(&list, "fd45:a71:55a6:1:2:1:0:fff");
	assert_no_match(&list, "fd45:a71:55a6:1:2:1:0:1000");
	assert_no_match(&list, "fd45:a71:55a6:1:2:1:1:0");
	assert_no_match(&list, "fd45:a71:55a6:1:2:0:ffff:ffff");
	assert_no_match(&list, "fd45:a71:55a6:1:2:1:0:ffff");
	cidr_list_free(&list);
}

static void test_match_family_mismatch(void **state)
{
	(void)state;
	/* an IPv6 prefix whose first byte equals 10, and the IPv4-mapped range */
	static const char *const v6[] = { "a00::/8", "::ffff:0:0/96", "::/96" };
	static const char *const v4[] = { "10.0.0.0/8", "0.0.0.0/8" };
	struct cidr_list list = { NULL, 0 };

	list_of(&list, v6, 3);
	assert_no_match(&list, "10.0.0.1");
	assert_no_match(&list, "0.0.0.1");
	assert_no_match(&list, "0.0.0.0");
	assert_match(&list, "a00::1");
	assert_match(&list, "::ffff:10.0.0.1");

	list_of(&list, v4, 2);
	assert_no_match(&list, "a00::1");
	assert_no_match(&list, "::ffff:10.0.0.1");
	assert_no_match(&list, "::");
	assert_no_match(&list, "::1");
	assert_match(&list, "10.0.0.1");
	assert_match(&list, "0.0.0.1");
	cidr_list_free(&list);
}

static void test_match_unknown_family(void **state)
{
	(void)state;
	static const char *const prefixes[] = { "0.0.0.0/0", "::/0" };
	struct cidr_list list = { NULL, 0 };
	struct addr a;

	list_of(&list, prefixes, 2);
	memset(&a, 0, sizeof(a)); /* AF_UNSPEC */
	assert_false(cidr_list_match(&list, &a));
	cidr_list_free(&list);
}

static void test_match_empty_list(void **state)
{
	(void)state;
	struct cidr_list list = { NULL, 0 };
	memset(&list, 0, sizeof(list));

	assert_no_match(&list, "0.0.0.0");
	assert_no_match(&list, "10.0.0.1");
	assert_no_match(&list, "255.255.255.255");
	assert_no_match(&list, "::");
	assert_no_match(&list, "::1");
	assert_no_match(&list, "2001:db8::1");
	cidr_list_free(&list);
}

static void test_match_any_ipv4(void **state)
{
	(void)state;
	static const char *const prefixes[] = { "0.0.0.0/0" };
	struct cidr_list list = { NULL, 0 };
	list_of(&list, prefixes, 1);

	assert_match(&list, "0.0.0.0");
	assert_match(&list, "1.2.3.4");
	assert_match(&list, "127.0.0.1");
	assert_match(&list, "128.0.0.0");
	assert_match(&list, "255.255.255.255");
	assert_no_match(&list, "::");
	assert_no_match(&list, "::1");
	assert_no_match(&list, "::ffff:1.2.3.4");
	assert_no_match(&list, "2001:db8::1");
	assert_no_match(&list, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
	cidr_list_free(&list);
}

static void test_match_any_ipv6(void **state)
{
	(void)state;
	static const char *const prefixes[] = { "::/0" };
	struct cidr_list list = { NULL, 0 };
	list_of(&list, prefixes, 1);

	assert_match(&list, "::");
	assert_match(&list, "::1");
	assert_match(&list, "2001:db8::1");
	assert_match(&list, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
	assert_no_match(&list, "0.0.0.0");
	assert_no_match(&list, "10.0.0.1");
	assert_no_match(&list, "255.255.255.255");
	cidr_list_free(&list);
}

/* Every prefix length of both families at the edge of its range. */
static void test_match_every_length(void **state)
{
	(void)state;
	struct cidr_list list = { NULL, 0 };
	struct cidr one;

	for (unsigned len = 0; len <= 128; len++) {
		/* the network: ones up to the prefix, so the first host bit is zero */
		struct cidr c = { .family = AF_INET6, .prefix = len };
		for (unsigned bit = 0; bit < len; bit++)
			c.addr[bit / 8] |= (unsigned char)(0x80u >> (bit % 8));
		one = c;
		list.items = &one;
		list.n = 1;

		struct addr a = client("::");
		memcpy(a.u.in6.sin6_addr.s6_addr, c.addr, 16);
		assert_true(cidr_list_match(&list, &a));
		if (len < 128) {
			/* the last address of the network */
			for (unsigned bit = len; bit < 128; bit++)
				a.u.in6.sin6_addr.s6_addr[bit / 8] |=
					(unsigned char)(0x80u >> (bit % 8));
			assert_true(cidr_list_match(&list, &a));
		}
		if (len > 0) {
			/* the last network bit flipped: outside */
			memcpy(a.u.in6.sin6_addr.s6_addr, c.addr, 16);
			a.u.in6.sin6_addr.s6_addr[(len - 1) / 8] ^=
				(unsigned char)(0x80u >> ((len - 1) % 8));
			assert_false(cidr_list_match(&list, &a));
		}

		if (len > 32)
			continue;
		struct cidr c4 = { .family = AF_INET, .prefix = len };
		memcpy(c4.addr, c.addr, 4);
		list.items[0] = c4;
		struct addr b = client("0.0.0.0");
		memcpy(&b.u.in.sin_addr, c4.addr, 4);
		assert_true(cidr_list_match(&list, &b));
		if (len > 0) {
			unsigned char *p = (unsigned char *)&b.u.in.sin_addr;
			p[(len - 1) / 8] ^= (unsigned char)(0x80u >> ((len - 1) % 8));
			assert_false(cidr_list_match(&list, &b));
		}
	}
}

/* ---- cidr_list_add ---- */

static void test_list_add_limit(void **state)
{
	(void)state;
	struct cidr_list list = { NULL, 0 };
	char text[INET_ADDRSTRLEN + 4];
	const char *err = NULL;

	memset(&list, 0, sizeof(list));
	for (unsigned i = 0; i < CIDR_MAX; i++) {
		snprintf(text, sizeof(text), "10.0.%u.0/24", i);
		struct cidr c = parse_ok(text);
		err = NULL;
		assert_int_equal(cidr_list_add(&list, &c, &err), 0);
		assert_null(err);
		assert_int_equal(list.n, i + 1);
	}

	struct cidr extra = parse_ok("192.168.0.0/16");
	assert_int_equal(cidr_list_add(&list, &extra, &err), -1);
	assert_non_null(err);
	assert_non_null(strstr(err, "too many"));
	assert_int_equal(list.n, CIDR_MAX);
	assert_int_equal(cidr_list_add(&list, &extra, &err), -1);
	assert_int_equal(list.n, CIDR_MAX);

	/* kept in order, and the one refused is not matched */
	for (unsigned i = 0; i < CIDR_MAX; i++) {
		snprintf(text, sizeof(text), "10.0.%u.0", i);
		assert_bytes(&list.items[i], AF_INET, text);
		assert_int_equal(list.items[i].prefix, 24);
	}
	assert_match(&list, "10.0.0.1");
	assert_match(&list, "10.0.63.255");
	assert_no_match(&list, "10.0.64.0");
	assert_no_match(&list, "192.168.0.1");
	cidr_list_free(&list);
}

/* ---- cidr_list_has_family ---- */

static void test_list_has_family(void **state)
{
	(void)state;
	struct cidr_list list = { NULL, 0 };
	const char *err = NULL;

	memset(&list, 0, sizeof(list));
	assert_false(cidr_list_has_family(&list, AF_INET));
	assert_false(cidr_list_has_family(&list, AF_INET6));

	struct cidr c = parse_ok("10.0.0.0/8");
	assert_int_equal(cidr_list_add(&list, &c, &err), 0);
	assert_true(cidr_list_has_family(&list, AF_INET));
	assert_false(cidr_list_has_family(&list, AF_INET6));
	assert_false(cidr_list_has_family(&list, AF_UNSPEC));

	c = parse_ok("2001:db8::/32");
	assert_int_equal(cidr_list_add(&list, &c, &err), 0);
	assert_true(cidr_list_has_family(&list, AF_INET));
	assert_true(cidr_list_has_family(&list, AF_INET6));

	cidr_list_free(&list);
	c = parse_ok("::/0");
	assert_int_equal(cidr_list_add(&list, &c, &err), 0);
	assert_false(cidr_list_has_family(&list, AF_INET));
	assert_true(cidr_list_has_family(&list, AF_INET6));
	cidr_list_free(&list);
}

/* ---- cidr_parse_masking and cidr_format ---- */

static void check_masked(const char *in, const char *want, bool want_masked)
{
	struct cidr c;
	bool masked = !want_masked;
	const char *err = NULL;
	char buf[ADDR_STRLEN];

	if (cidr_parse_masking(in, &c, &masked, &err) != 0)
		fail_msg("cidr_parse_masking(\"%s\") failed: %s", in, err);
	assert_string_equal(cidr_format(&c, buf), want);
	assert_int_equal(masked, want_masked);
}

static void test_masking(void **state)
{
	(void)state;
	check_masked("10.0.0.1/8", "10.0.0.0/8", true);
	check_masked("10.255.255.255/9", "10.128.0.0/9", true);
	check_masked("192.168.1.77/24", "192.168.1.0/24", true);
	check_masked("1.2.3.4/0", "0.0.0.0/0", true);
	check_masked("10.0.0.0/8", "10.0.0.0/8", false);
	check_masked("10.0.0.1", "10.0.0.1/32", false);
	check_masked("2001:db8::1/32", "2001:db8::/32", true);
	check_masked("2001:db8:ffff::/33", "2001:db8:8000::/33", true);
	check_masked("::1", "::1/128", false);
	check_masked("fd00::/8", "fd00::/8", false);
	/* the strict parser still refuses host bits */
	parse_fails("10.0.0.1/8");
	/* other errors stay errors */
	struct cidr c;
	bool masked;
	const char *err = NULL;
	assert_int_equal(cidr_parse_masking("10.0.0.0/33", &c, &masked, &err), -1);
	assert_non_null(err);
	assert_int_equal(cidr_parse_masking("nonsense/8", &c, &masked, &err), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ipv4),
		cmocka_unit_test(test_parse_ipv4_host),
		cmocka_unit_test(test_parse_ipv4_any),
		cmocka_unit_test(test_parse_ipv6),
		cmocka_unit_test(test_parse_ipv6_host),
		cmocka_unit_test(test_parse_host_bits),
		cmocka_unit_test(test_parse_prefix_out_of_range),
		cmocka_unit_test(test_parse_prefix_not_a_number),
		cmocka_unit_test(test_parse_bad_address),
		cmocka_unit_test(test_parse_long_input),
		cmocka_unit_test(test_match_ipv4),
		cmocka_unit_test(test_match_ipv4_boundary_25),
		cmocka_unit_test(test_match_ipv6),
		cmocka_unit_test(test_match_ipv6_boundary_116),
		cmocka_unit_test(test_match_family_mismatch),
		cmocka_unit_test(test_match_unknown_family),
		cmocka_unit_test(test_match_empty_list),
		cmocka_unit_test(test_match_any_ipv4),
		cmocka_unit_test(test_match_any_ipv6),
		cmocka_unit_test(test_match_every_length),
		cmocka_unit_test(test_list_add_limit),
		cmocka_unit_test(test_list_has_family),
		cmocka_unit_test(test_masking),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
