/* test_addr.c: unit tests for addr.c (parsing, formatting, comparing socket addresses) */
#include "autoconfig.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"

/* Parses s, which must succeed, and returns the address. */
static struct addr parse_ok(const char *s)
{
	struct addr a;
	const char *err = NULL;

	memset(&a, 0xa5, sizeof(a));
	if (addr_parse(s, &a, &err) != 0)
		fail_msg("addr_parse(\"%s\") failed: %s", s, err ? err : "(no message)");
	return a;
}

/* addr_parse(s) must fail with a message; returns it. */
static const char *parse_fails(const char *s)
{
	struct addr a;
	const char *err = NULL;

	if (addr_parse(s, &a, &err) != -1)
		fail_msg("addr_parse(\"%s\") succeeded, expected an error", s);
	if (err == NULL || err[0] == '\0')
		fail_msg("addr_parse(\"%s\") failed without a message", s);
	return err;
}

/* ---- addr_parse: good input ---- */

static void test_parse_ipv4(void **state)
{
	(void)state;
	struct addr a = parse_ok("1.2.3.4:80");
	struct in_addr want;

	assert_int_equal(addr_family(&a), AF_INET);
	assert_int_equal(a.u.in.sin_family, AF_INET);
	assert_int_equal(addr_port(&a), 80);
	assert_int_equal(ntohs(a.u.in.sin_port), 80);
	assert_int_equal(inet_pton(AF_INET, "1.2.3.4", &want), 1);
	assert_memory_equal(&a.u.in.sin_addr, &want, sizeof(want));
	assert_int_equal(a.len, sizeof(struct sockaddr_in));
}

static void test_parse_ipv6_loopback(void **state)
{
	(void)state;
	struct addr a = parse_ok("[::1]:8080");

	assert_int_equal(addr_family(&a), AF_INET6);
	assert_int_equal(a.u.in6.sin6_family, AF_INET6);
	assert_int_equal(addr_port(&a), 8080);
	assert_int_equal(ntohs(a.u.in6.sin6_port), 8080);
	assert_memory_equal(&a.u.in6.sin6_addr, &in6addr_loopback, sizeof(struct in6_addr));
	assert_int_equal(a.u.in6.sin6_scope_id, 0);
	assert_int_equal(a.u.in6.sin6_flowinfo, 0);
	assert_int_equal(a.len, sizeof(struct sockaddr_in6));
}

static void test_parse_ipv6_clusterip(void **state)
{
	(void)state;
	struct addr a = parse_ok("[fd45:a71:55a6:1:2:1:0:db1]:443");
	struct in6_addr want;

	assert_int_equal(addr_family(&a), AF_INET6);
	assert_int_equal(addr_port(&a), 443);
	assert_int_equal(inet_pton(AF_INET6, "fd45:a71:55a6:1:2:1:0:db1", &want), 1);
	assert_memory_equal(&a.u.in6.sin6_addr, &want, sizeof(want));
}

static void test_parse_port_bounds_in_address(void **state)
{
	(void)state;
	struct addr a = parse_ok("10.43.206.211:1");
	assert_int_equal(addr_port(&a), 1);
	a = parse_ok("10.43.206.211:65535");
	assert_int_equal(addr_port(&a), 65535);
	a = parse_ok("[::]:65535");
	assert_int_equal(addr_port(&a), 65535);
}

/* ---- addr_parse: bad input ---- */

static void test_parse_missing_port(void **state)
{
	(void)state;
	parse_fails("1.2.3.4");
	parse_fails("1.2.3.4:");
	parse_fails("[::1]");
	parse_fails("[::1]:");
	assert_string_equal(parse_fails("1.2.3.4:"), "missing port");
	assert_string_equal(parse_fails("[::1]:"), "missing port");
}

static void test_parse_port_out_of_range(void **state)
{
	(void)state;
	assert_non_null(strstr(parse_fails("1.2.3.4:0"), "range"));
	assert_non_null(strstr(parse_fails("1.2.3.4:65536"), "range"));
	assert_non_null(strstr(parse_fails("1.2.3.4:99999999"), "range"));
	assert_non_null(strstr(parse_fails("[::1]:0"), "range"));
	assert_non_null(strstr(parse_fails("[::1]:65536"), "range"));
	assert_non_null(strstr(parse_fails("[::1]:99999999"), "range"));
}

static void test_parse_port_not_numeric(void **state)
{
	(void)state;
	parse_fails("1.2.3.4:http");
	parse_fails("1.2.3.4:8o");
	parse_fails("1.2.3.4:-80");
	parse_fails("1.2.3.4:+80");
	parse_fails("1.2.3.4: 80");
	parse_fails("1.2.3.4:80 ");
	parse_fails("[::1]:http");
	parse_fails("[::1]:80x");
}

static void test_parse_ipv6_without_brackets(void **state)
{
	(void)state;
	assert_non_null(strstr(parse_fails("::1:80"), "brackets"));
	assert_non_null(strstr(parse_fails("fd45:a71:55a6:1:2:1:0:db1:443"), "brackets"));
}

static void test_parse_missing_bracket(void **state)
{
	(void)state;
	assert_non_null(strstr(parse_fails("[::1:80"), "]"));
	parse_fails("[fd45:a71:55a6:1:2:1:0:db1:443");
	parse_fails("[::1]80");
}

static void test_parse_garbage_host(void **state)
{
	(void)state;
	parse_fails("garbage:80");
	parse_fails("localhost:80");
	parse_fails("1.2.3:80");
	parse_fails("1.2.3.256:80");
	parse_fails(":80");
	parse_fails("[garbage]:80");
	parse_fails("[1.2.3.4]:80");
	parse_fails("[:::1]:80");
	parse_fails("80");
}

static void test_parse_empty(void **state)
{
	(void)state;
	parse_fails("");
	parse_fails("[]:80");
	parse_fails("[]");
	parse_fails("[");
	parse_fails(":");
}

/* ---- addr_parse_port ---- */

static void test_parse_port(void **state)
{
	(void)state;
	uint16_t port = 0;
	const char *err = NULL;

	assert_int_equal(addr_parse_port("1", &port, &err), 0);
	assert_int_equal(port, 1);
	assert_int_equal(addr_parse_port("80", &port, &err), 0);
	assert_int_equal(port, 80);
	assert_int_equal(addr_parse_port("65535", &port, &err), 0);
	assert_int_equal(port, 65535);

	static const char *const bad[] = {
		"", "0", "00000", "65536", "99999", "99999999", "http", "-1", "+1", " 1",
		"1 ", "1.0", "0x50",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err = NULL;
		port = 4242;
		if (addr_parse_port(bad[i], &port, &err) != -1)
			fail_msg("addr_parse_port(\"%s\") succeeded", bad[i]);
		assert_non_null(err);
		assert_int_equal(port, 4242); /* untouched on error */
	}
}

/* ---- addr_parse_listen ---- */

static void test_listen_bare_port(void **state)
{
	(void)state;
	struct addr out[4];
	const char *err = NULL;
	char buf[ADDR_STRLEN];

	assert_int_equal(addr_parse_listen("80", out, 4, &err), 2);
	assert_int_equal(addr_family(&out[0]), AF_INET);
	assert_int_equal(addr_port(&out[0]), 80);
	assert_int_equal(out[0].u.in.sin_addr.s_addr, htonl(INADDR_ANY));
	assert_string_equal(addr_format(&out[0], buf), "0.0.0.0:80");
	assert_int_equal(addr_family(&out[1]), AF_INET6);
	assert_int_equal(addr_port(&out[1]), 80);
	assert_memory_equal(&out[1].u.in6.sin6_addr, &in6addr_any, sizeof(struct in6_addr));
	assert_string_equal(addr_format(&out[1], buf), "[::]:80");

	/* exactly enough room */
	assert_int_equal(addr_parse_listen("65535", out, 2, &err), 2);
	assert_int_equal(addr_port(&out[0]), 65535);
	assert_int_equal(addr_port(&out[1]), 65535);
}

static void test_listen_explicit(void **state)
{
	(void)state;
	struct addr out[4];
	const char *err = NULL;
	char buf[ADDR_STRLEN];

	assert_int_equal(addr_parse_listen("127.0.0.1:8080", out, 4, &err), 1);
	assert_int_equal(addr_family(&out[0]), AF_INET);
	assert_string_equal(addr_format(&out[0], buf), "127.0.0.1:8080");

	assert_int_equal(addr_parse_listen("[::1]:8080", out, 1, &err), 1);
	assert_int_equal(addr_family(&out[0]), AF_INET6);
	assert_string_equal(addr_format(&out[0], buf), "[::1]:8080");
}

static void test_listen_errors(void **state)
{
	(void)state;
	struct addr out[4];
	const char *err;

	/* no room */
	err = NULL;
	assert_int_equal(addr_parse_listen("80", out, 1, &err), -1);
	assert_non_null(err);
	err = NULL;
	assert_int_equal(addr_parse_listen("80", out, 0, &err), -1);
	assert_non_null(err);
	err = NULL;
	assert_int_equal(addr_parse_listen("127.0.0.1:80", out, 0, &err), -1);
	assert_non_null(err);

	/* bad ports and addresses */
	static const char *const bad[] = {
		"", "0", "65536", "99999999", "http", "1.2.3.4", "[::1]", "::1:80", "-80",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err = NULL;
		if (addr_parse_listen(bad[i], out, 4, &err) != -1)
			fail_msg("addr_parse_listen(\"%s\") succeeded", bad[i]);
		assert_non_null(err);
	}
}

/* ---- addr_format ---- */

static void test_format(void **state)
{
	(void)state;
	char buf[ADDR_STRLEN];
	struct addr a;

	a = parse_ok("1.2.3.4:80");
	assert_ptr_equal(addr_format(&a, buf), buf);
	assert_string_equal(buf, "1.2.3.4:80");
	a = parse_ok("[::1]:80");
	assert_string_equal(addr_format(&a, buf), "[::1]:80");
	a = parse_ok("[fd45:a71:55a6:1:2:1:0:db1]:443");
	assert_string_equal(addr_format(&a, buf), "[fd45:a71:55a6:1:2:1:0:db1]:443");
	a = parse_ok("255.255.255.255:65535");
	assert_string_equal(addr_format(&a, buf), "255.255.255.255:65535");
	/* the longest IPv6 text form (45 characters) parses; the widest output fits */
	a = parse_ok("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535");
	assert_string_equal(addr_format(&a, buf),
			    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
	a = parse_ok("[::ffff:255.255.255.255]:65535");
	assert_string_equal(addr_format(&a, buf), "[::ffff:255.255.255.255]:65535");

	memset(&a, 0, sizeof(a));
	a.u.sa.sa_family = AF_UNIX;
	assert_string_equal(addr_format(&a, buf), "(unknown)");
}

/* ---- addr_from_sockaddr ---- */

static void test_from_sockaddr_v4_mapped(void **state)
{
	(void)state;
	struct sockaddr_in6 in6;
	struct addr a;
	char buf[ADDR_STRLEN];

	memset(&in6, 0, sizeof(in6));
	in6.sin6_family = AF_INET6;
	in6.sin6_port = htons(5555);
	assert_int_equal(inet_pton(AF_INET6, "::ffff:1.2.3.4", &in6.sin6_addr), 1);
	addr_from_sockaddr(&a, (const struct sockaddr *)&in6, sizeof(in6));

	assert_int_equal(addr_family(&a), AF_INET);
	assert_int_equal(addr_port(&a), 5555);
	assert_int_equal(a.len, sizeof(struct sockaddr_in));
	assert_string_equal(addr_format(&a, buf), "1.2.3.4:5555");
	struct addr want = parse_ok("1.2.3.4:5555");
	assert_true(addr_equal(&a, &want));
}

static void test_from_sockaddr_plain(void **state)
{
	(void)state;
	struct addr a;
	char buf[ADDR_STRLEN];

	struct sockaddr_in in4;
	memset(&in4, 0, sizeof(in4));
	in4.sin_family = AF_INET;
	in4.sin_port = htons(80);
	assert_int_equal(inet_pton(AF_INET, "10.43.206.211", &in4.sin_addr), 1);
	addr_from_sockaddr(&a, (const struct sockaddr *)&in4, sizeof(in4));
	assert_int_equal(addr_family(&a), AF_INET);
	assert_int_equal(a.len, sizeof(in4));
	assert_string_equal(addr_format(&a, buf), "10.43.206.211:80");

	struct sockaddr_in6 in6;
	memset(&in6, 0, sizeof(in6));
	in6.sin6_family = AF_INET6;
	in6.sin6_port = htons(443);
	assert_int_equal(inet_pton(AF_INET6, "fd45:a71:55a6:1:2:1:0:db1", &in6.sin6_addr), 1);
	addr_from_sockaddr(&a, (const struct sockaddr *)&in6, sizeof(in6));
	assert_int_equal(addr_family(&a), AF_INET6);
	assert_int_equal(a.len, sizeof(in6));
	assert_string_equal(addr_format(&a, buf), "[fd45:a71:55a6:1:2:1:0:db1]:443");
	struct addr want = parse_ok("[fd45:a71:55a6:1:2:1:0:db1]:443");
	assert_true(addr_equal(&a, &want));
}

/* ---- addr_equal, addr_port, addr_family ---- */

static void test_equal(void **state)
{
	(void)state;
	struct addr a = parse_ok("1.2.3.4:80");
	struct addr b = parse_ok("1.2.3.4:80");

	assert_true(addr_equal(&a, &b));
	assert_true(addr_equal(&a, &a));
	b = parse_ok("1.2.3.4:81");
	assert_false(addr_equal(&a, &b));
	b = parse_ok("1.2.3.5:80");
	assert_false(addr_equal(&a, &b));

	/* same port, other family */
	struct addr out[2];
	const char *err = NULL;
	assert_int_equal(addr_parse_listen("80", out, 2, &err), 2);
	assert_false(addr_equal(&out[0], &out[1]));
	b = parse_ok("0.0.0.0:80");
	assert_true(addr_equal(&out[0], &b));
	b = parse_ok("[::]:80");
	assert_true(addr_equal(&out[1], &b));

	a = parse_ok("[::1]:80");
	b = parse_ok("[0:0:0:0:0:0:0:1]:80");
	assert_true(addr_equal(&a, &b));
	b = parse_ok("[::1]:81");
	assert_false(addr_equal(&a, &b));
	b = parse_ok("[::2]:80");
	assert_false(addr_equal(&a, &b));
	b = parse_ok("[::ffff:127.0.0.1]:80");
	assert_false(addr_equal(&a, &b));
}

static void test_port_and_family(void **state)
{
	(void)state;
	struct addr a = parse_ok("1.2.3.4:443");

	assert_int_equal(addr_family(&a), AF_INET);
	assert_int_equal(addr_port(&a), 443);
	a = parse_ok("[::1]:8443");
	assert_int_equal(addr_family(&a), AF_INET6);
	assert_int_equal(addr_port(&a), 8443);

	memset(&a, 0, sizeof(a));
	a.u.sa.sa_family = AF_UNIX;
	assert_int_equal(addr_family(&a), AF_UNIX);
	assert_int_equal(addr_port(&a), 0);
	struct addr b = a;
	assert_false(addr_equal(&a, &b)); /* unknown families never compare equal */
}

/* ---- link-local scopes ---- */

static void test_parse_scope(void **state)
{
	(void)state;
	char buf[ADDR_STRLEN], want[ADDR_STRLEN];
	unsigned lo = if_nametoindex("lo");

	struct addr a = parse_ok("[fe80::1%1]:80");
	assert_int_equal(a.u.in6.sin6_scope_id, 1);
	assert_int_equal(addr_port(&a), 80);
	if (lo == 0)
		skip();
	a = parse_ok("[fe80::1%lo]:8080");
	assert_int_equal(a.u.in6.sin6_scope_id, lo);
	assert_string_equal(addr_format(&a, buf), "[fe80::1%lo]:8080");
	/* an index is written as the interface's name */
	snprintf(want, sizeof(want), "[fe80::1%%%u]:80", lo);
	a = parse_ok(want);
	assert_string_equal(addr_format(&a, buf), "[fe80::1%lo]:80");
	/* the same address on another link is another address */
	struct addr b = parse_ok("[fe80::1%lo]:8080");
	struct addr c = b;
	c.u.in6.sin6_scope_id = lo + 1000;
	assert_true(addr_equal(&a, &a));
	assert_false(addr_equal(&b, &c));
	/* the widest form fits */
	a = parse_ok("[febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535");
	assert_true(strlen(addr_format(&a, buf)) < ADDR_STRLEN);
}

static void test_parse_scope_errors(void **state)
{
	(void)state;
	assert_non_null(strstr(parse_fails("[fe80::1%]:80"), "interface"));
	assert_non_null(strstr(parse_fails("[fe80::1%0]:80"), "interface"));
	assert_non_null(strstr(parse_fails("[fe80::1%4294967296]:80"), "interface"));
	assert_non_null(strstr(parse_fails("[fe80::1%no-such-if9]:80"), "no such interface"));
	assert_non_null(strstr(parse_fails("[fe80::1%averyveryverylonginterfacename]:80"),
			       "interface"));
	/* only link-local addresses take one */
	assert_non_null(strstr(parse_fails("[fd45::1%1]:80"), "link-local"));
	assert_non_null(strstr(parse_fails("[::1%1]:80"), "link-local"));
	assert_non_null(strstr(parse_fails("[::%1]:80"), "link-local"));
	parse_fails("[%1]:80");
	parse_fails("1.2.3.4%1:80");
}

static void test_parse_ip(void **state)
{
	(void)state;
	struct addr a;
	const char *err = NULL;
	char buf[ADDR_STRLEN];

	assert_int_equal(addr_parse_ip("10.43.0.10", &a, &err), 0);
	assert_string_equal(addr_format(&a, buf), "10.43.0.10:0");
	assert_int_equal(addr_parse_ip("fd45::10", &a, &err), 0);
	assert_int_equal(addr_family(&a), AF_INET6);
	assert_int_equal(addr_port(&a), 0);
	assert_int_equal(addr_parse_ip("fe80::2%1", &a, &err), 0);
	assert_int_equal(a.u.in6.sin6_scope_id, 1);
	static const char *const bad[] = { "", "10.0.0.256", "10.0.0.1:80", "[::1]", "fd00:::1",
					   "fd00::1%1", "localhost", "10.0.0.0/8" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err = NULL;
		if (addr_parse_ip(bad[i], &a, &err) != -1)
			fail_msg("addr_parse_ip(\"%s\") succeeded", bad[i]);
		assert_non_null(err);
	}
}

/* ---- what can be a backend ---- */

static void test_backend_problem(void **state)
{
	(void)state;
	static const struct {
		const char *addr;
		const char *why; /* NULL: a fine backend */
	} cases[] = {
		{ "10.43.206.211:80", NULL },
		{ "127.0.0.1:80", NULL },
		{ "169.254.1.1:80", NULL },          /* IPv4 link-local needs no scope */
		{ "255.255.255.254:80", NULL },
		{ "223.255.255.255:80", NULL },
		{ "240.0.0.1:80", NULL },
		{ "[fd45:a71:55a6:1:2:1:0:db1]:80", NULL },
		{ "[::1]:80", NULL },
		{ "[fe80::1%1]:80", NULL },
		{ "0.0.0.0:80", "unspecified" },
		{ "[::]:80", "unspecified" },
		{ "255.255.255.255:80", "broadcast" },
		{ "224.0.0.1:80", "multicast" },
		{ "239.255.255.250:1900", "multicast" },
		{ "[ff02::1]:80", "multicast" },
		{ "[ff05::1:3]:547", "multicast" },
		{ "[::ffff:10.0.0.1]:80", "IPv4-mapped" },
		{ "[fe80::1]:80", "link-local" },
		{ "[febf::1]:80", "link-local" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct addr a = parse_ok(cases[i].addr);
		const char *why = addr_backend_problem(&a);
		if (cases[i].why == NULL && why != NULL)
			fail_msg("%s refused: %s", cases[i].addr, why);
		if (cases[i].why != NULL && (why == NULL || strstr(why, cases[i].why) == NULL))
			fail_msg("%s: \"%s\", expected \"%s\"", cases[i].addr, why ? why : "(none)",
				 cases[i].why);
	}
}

static void test_loopback_and_link_local(void **state)
{
	(void)state;
	struct addr a = parse_ok("127.0.0.1:1");
	assert_true(addr_is_loopback(&a));
	a = parse_ok("127.255.1.2:1");
	assert_true(addr_is_loopback(&a));
	a = parse_ok("[::1]:1");
	assert_true(addr_is_loopback(&a));
	a = parse_ok("128.0.0.1:1");
	assert_false(addr_is_loopback(&a));
	a = parse_ok("[::ffff:127.0.0.1]:1");
	assert_false(addr_is_loopback(&a));
	a = parse_ok("[::2]:1");
	assert_false(addr_is_loopback(&a));
	a = parse_ok("[fe80::1]:1");
	assert_true(addr_is_link_local(&a));
	a = parse_ok("[fec0::1]:1");
	assert_false(addr_is_link_local(&a));
	a = parse_ok("169.254.0.1:1");
	assert_false(addr_is_link_local(&a)); /* only IPv6's needs a scope */
}

static void test_wildcard_and_port(void **state)
{
	(void)state;
	char buf[ADDR_STRLEN];
	struct addr a = addr_wildcard(AF_INET, 8080);
	assert_string_equal(addr_format(&a, buf), "0.0.0.0:8080");
	assert_true(addr_is_wildcard(&a));
	a = addr_wildcard(AF_INET6, 443);
	assert_string_equal(addr_format(&a, buf), "[::]:443");
	assert_true(addr_is_wildcard(&a));
	struct addr b = parse_ok("[::]:443");
	assert_true(addr_equal(&a, &b));
	b = parse_ok("10.0.0.1:80");
	a = addr_with_port(&b, 81);
	assert_string_equal(addr_format(&a, buf), "10.0.0.1:81");
	b = parse_ok("[fe80::1%1]:80");
	a = addr_with_port(&b, 1);
	assert_int_equal(a.u.in6.sin6_scope_id, 1);
	assert_int_equal(addr_port(&a), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ipv4),
		cmocka_unit_test(test_parse_ipv6_loopback),
		cmocka_unit_test(test_parse_ipv6_clusterip),
		cmocka_unit_test(test_parse_port_bounds_in_address),
		cmocka_unit_test(test_parse_missing_port),
		cmocka_unit_test(test_parse_port_out_of_range),
		cmocka_unit_test(test_parse_port_not_numeric),
		cmocka_unit_test(test_parse_ipv6_without_brackets),
		cmocka_unit_test(test_parse_missing_bracket),
		cmocka_unit_test(test_parse_garbage_host),
		cmocka_unit_test(test_parse_empty),
		cmocka_unit_test(test_parse_port),
		cmocka_unit_test(test_listen_bare_port),
		cmocka_unit_test(test_listen_explicit),
		cmocka_unit_test(test_listen_errors),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_from_sockaddr_v4_mapped),
		cmocka_unit_test(test_from_sockaddr_plain),
		cmocka_unit_test(test_equal),
		cmocka_unit_test(test_port_and_family),
		cmocka_unit_test(test_parse_scope),
		cmocka_unit_test(test_parse_scope_errors),
		cmocka_unit_test(test_parse_ip),
		cmocka_unit_test(test_backend_problem),
		cmocka_unit_test(test_loopback_and_link_local),
		cmocka_unit_test(test_wildcard_and_port),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
