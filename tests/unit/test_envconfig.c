/* test_envconfig.c: unit tests for envconfig.c (a config from klipper-lb's environment variables) */
#include "autoconfig.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envconfig.h"

#define ERRBUF_MAX (CONFIG_MSG_MAX * 2 + 32)
#define MANY_RANGES 100        /* more SRC_RANGES than an allowlist holds */
#define HUGE_RANGES 400        /* more than the generated text holds */
#define RANGE_TEXT_MAX 48      /* one IPv6 range and its separator */

/* A NULL-terminated environment, as main() gets it. */
#define ENV(...) ((char *const[]){ __VA_ARGS__, NULL })

/* What K3s's ServiceLB puts into a svclb pod of a dual-stack cluster, less
 * SRC_RANGES (the first of a name wins, as with getenv, so tests add their own). */
#define KLIPPER_DUAL                                                           \
	"SRC_PORT=80", "DEST_PROTO=TCP", "DEST_PORT=30080",                    \
		"DEST_IPS=10.43.206.211,fd45:a71:55a6:1:2:1:0:db1"

/* ---- helpers ---- */

static struct config *load_ok_at(char *const *envp, const char *file, int at)
{
	struct config_error err;
	char buf[ERRBUF_MAX];

	memset(&err, 0x5a, sizeof(err));
	struct config *cfg = envconfig_load(envp, &err);
	if (cfg == NULL) {
		print_error("envconfig_load failed: %s\n",
			    config_error_format(&err, buf, sizeof(buf)));
		_fail(file, at);
	}
	if (cfg->n_services != 1 || cfg->services == NULL || cfg->services->next != NULL) {
		print_error("%zu services, expected exactly one\n", cfg->n_services);
		_fail(file, at);
	}
	return cfg;
}
#define load_ok(envp) load_ok_at((envp), __FILE__, __LINE__)

enum match { STARTS_WITH, CONTAINS };

/* Loading envp must fail with a message that starts with (or contains) text,
 * reported against ENVCONFIG_NAME at line 0. Returns nothing: the error is
 * copied to *out when out is not NULL. */
static void check_error(char *const *envp, enum match how, const char *text,
			struct config_error *out, const char *file, int at)
{
	struct config_error err;
	char buf[ERRBUF_MAX];

	memset(&err, 0x5a, sizeof(err));
	struct config *cfg = envconfig_load(envp, &err);
	if (cfg != NULL) {
		config_unref(cfg);
		print_error("config loaded, expected an error %s \"%s\"\n",
			    how == STARTS_WITH ? "starting with" : "containing", text);
		_fail(file, at);
	}
	if (memchr(err.file, '\0', sizeof(err.file)) == NULL ||
	    memchr(err.msg, '\0', sizeof(err.msg)) == NULL) {
		print_error("config_error not NUL-terminated\n");
		_fail(file, at);
	}
	config_error_format(&err, buf, sizeof(buf));
	if (strcmp(err.file, ENVCONFIG_NAME) != 0) {
		print_error("err.file is \"%s\", expected \"%s\" (%s)\n", err.file,
			    ENVCONFIG_NAME, buf);
		_fail(file, at);
	}
	if (err.line != 0) {
		print_error("err.line is %u, expected 0: %s\n", err.line, buf);
		_fail(file, at);
	}
	bool ok = how == STARTS_WITH ? strncmp(err.msg, text, strlen(text)) == 0 :
				       strstr(err.msg, text) != NULL;
	if (!ok) {
		print_error("message \"%s\" does not %s \"%s\"\n", err.msg,
			    how == STARTS_WITH ? "start with" : "contain", text);
		_fail(file, at);
	}
	if (out != NULL)
		*out = err;
}
#define assert_env_error(envp, prefix)                                         \
	check_error((envp), STARTS_WITH, (prefix), NULL, __FILE__, __LINE__)
#define assert_env_error_contains(envp, substr)                                \
	check_error((envp), CONTAINS, (substr), NULL, __FILE__, __LINE__)

static void assert_addr(const struct addr *a, const char *want)
{
	char buf[ADDR_STRLEN];
	assert_string_equal(addr_format(a, buf), want);
}

/* The service listens on exactly 0.0.0.0:port and [::]:port. */
static void assert_listens_any(const struct service *svc, unsigned port)
{
	char want4[ADDR_STRLEN], want6[ADDR_STRLEN], buf[ADDR_STRLEN];
	bool seen4 = false, seen6 = false;

	snprintf(want4, sizeof(want4), "0.0.0.0:%u", port);
	snprintf(want6, sizeof(want6), "[::]:%u", port);
	assert_int_equal(svc->n_listen, 2);
	for (size_t i = 0; i < svc->n_listen; i++) {
		addr_format(&svc->listen[i], buf);
		if (strcmp(buf, want4) == 0)
			seen4 = true;
		else if (strcmp(buf, want6) == 0)
			seen6 = true;
		else
			fail_msg("listens on %s, expected only %s and %s", buf, want4, want6);
	}
	assert_true(seen4);
	assert_true(seen6);
}

/* The service listens on exactly one address: the wildcard of one family. */
static void assert_listens_only(const struct service *svc, const char *want)
{
	char buf[ADDR_STRLEN];
	assert_int_equal(svc->n_listen, 1);
	assert_string_equal(addr_format(&svc->listen[0], buf), want);
}

static struct addr client(const char *ip)
{
	struct addr a;
	memset(&a, 0, sizeof(a));
	if (inet_pton(AF_INET, ip, &a.u.in.sin_addr) == 1) {
		a.u.in.sin_family = AF_INET;
		a.len = sizeof(a.u.in);
	} else {
		assert_int_equal(inet_pton(AF_INET6, ip, &a.u.in6.sin6_addr), 1);
		a.u.in6.sin6_family = AF_INET6;
		a.len = sizeof(a.u.in6);
	}
	return a;
}

static bool allows(const struct service *svc, const char *ip)
{
	struct addr a = client(ip);
	return cidr_list_match(&svc->allow, &a);
}

/* The allowlist holds the prefix text (parsed the same way) exactly once. */
static void assert_allow_has(const struct service *svc, const char *prefix)
{
	struct cidr want;
	const char *why;
	size_t found = 0;

	if (cidr_parse(prefix, &want, &why) != 0)
		fail_msg("test prefix \"%s\": %s", prefix, why);
	for (size_t i = 0; i < svc->allow.n; i++) {
		const struct cidr *c = &svc->allow.items[i];
		if (c->family == want.family && c->prefix == want.prefix &&
		    memcmp(c->addr, want.addr, sizeof(want.addr)) == 0)
			found++;
	}
	if (found != 1)
		fail_msg("allow list has %s %zu times, expected once", prefix, found);
}

/* ---- envconfig_wanted ---- */

static void test_wanted(void **state)
{
	(void)state;
	assert_false(envconfig_wanted(NULL));
	assert_false(envconfig_wanted((char *const[]){ NULL }));
	assert_false(envconfig_wanted(ENV("PATH=/usr/bin", "HOME=/")));
	assert_false(envconfig_wanted(ENV("SRC_PORTS=80")));
	assert_false(envconfig_wanted(ENV("XSRC_PORT=80")));
	assert_false(envconfig_wanted(ENV("SRC_PORT")));
	assert_false(envconfig_wanted(ENV("src_port=80")));
	assert_false(envconfig_wanted(ENV("DEST_PORT=80", "DEST_IPS=10.0.0.1")));
	assert_true(envconfig_wanted(ENV("SRC_PORT=80")));
	assert_true(envconfig_wanted(ENV("PATH=/usr/bin", "SRC_PORT=80", "HOME=/")));
	assert_true(envconfig_wanted(ENV("SRC_PORT="))); /* set, if badly */
}

/* ---- envconfig_load: good environments ---- */

static void test_dual_stack(void **state)
{
	(void)state;
	struct config *cfg = load_ok(ENV("PATH=/usr/bin", KLIPPER_DUAL, "SRC_RANGES=", "HOME=/"));
	const struct service *svc = cfg->services;

	assert_int_equal(cfg->refs, 1);
	assert_string_equal(svc->name, "lb-tcp-80");
	assert_listens_any(svc, 80);
	assert_true(svc->has_backend4);
	assert_true(svc->has_backend6);
	assert_addr(&svc->backend4, "10.43.206.211:30080");
	assert_addr(&svc->backend6, "[fd45:a71:55a6:1:2:1:0:db1]:30080");
	assert_int_equal(svc->allow.n, 0); /* empty SRC_RANGES: everyone */
	assert_int_equal(svc->proxy_protocol, PROXY_OFF);
	assert_int_equal(cfg->n_metrics_listen, 0);
	config_unref(cfg);
}

static void test_service_name_follows_port(void **state)
{
	(void)state;
	struct config *cfg = load_ok(ENV("SRC_PORT=6443", "DEST_PORT=6443",
					 "DEST_IPS=10.43.0.1,fd45:a71:55a6:1:2:1:0:1"));
	assert_string_equal(cfg->services->name, "lb-tcp-6443");
	assert_listens_any(cfg->services, 6443);
	assert_addr(&cfg->services->backend4, "10.43.0.1:6443");
	assert_addr(&cfg->services->backend6, "[fd45:a71:55a6:1:2:1:0:1]:6443");
	config_unref(cfg);

	cfg = load_ok(ENV("SRC_PORT=65535", "DEST_PORT=1", "DEST_IPS=10.43.0.1"));
	assert_string_equal(cfg->services->name, "lb-tcp-65535");
	assert_listens_only(cfg->services, "0.0.0.0:65535");
	assert_addr(&cfg->services->backend4, "10.43.0.1:1");
	config_unref(cfg);
}

static void test_dest_ips_separators(void **state)
{
	(void)state;
	static const char *const lists[] = {
		"DEST_IPS=10.43.206.211, fd45:a71:55a6:1:2:1:0:db1",
		"DEST_IPS= 10.43.206.211 , fd45:a71:55a6:1:2:1:0:db1 ",
		"DEST_IPS=10.43.206.211 fd45:a71:55a6:1:2:1:0:db1",
		"DEST_IPS=10.43.206.211\tfd45:a71:55a6:1:2:1:0:db1",
		"DEST_IPS=,10.43.206.211,,fd45:a71:55a6:1:2:1:0:db1,",
		"DEST_IPS=fd45:a71:55a6:1:2:1:0:db1,10.43.206.211",
		/* a YAML block scalar brings newlines */
		"DEST_IPS=10.43.206.211\nfd45:a71:55a6:1:2:1:0:db1\n",
		"DEST_IPS=\r\n10.43.206.211,\r\nfd45:a71:55a6:1:2:1:0:db1",
	};
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		char *dest = strdup(lists[i]);
		assert_non_null(dest);
		struct config *cfg = load_ok(ENV("SRC_PORT=80", "DEST_PORT=30080", dest));
		assert_true(cfg->services->has_backend4);
		assert_true(cfg->services->has_backend6);
		assert_addr(&cfg->services->backend4, "10.43.206.211:30080");
		assert_addr(&cfg->services->backend6, "[fd45:a71:55a6:1:2:1:0:db1]:30080");
		config_unref(cfg);
		free(dest);
	}
}

static void test_only_ipv4(void **state)
{
	(void)state;
	struct config *cfg = load_ok(ENV("SRC_PORT=443", "DEST_PROTO=TCP", "DEST_PORT=30443",
					 "DEST_IPS=10.43.206.211"));
	const struct service *svc = cfg->services;
	assert_string_equal(svc->name, "lb-tcp-443");
	/* an IPv4-only Service is not published on IPv6, as with klipper-lb */
	assert_listens_only(svc, "0.0.0.0:443");
	assert_true(svc->has_backend4);
	assert_false(svc->has_backend6);
	assert_addr(&svc->backend4, "10.43.206.211:30443");
	assert_int_equal(svc->allow.n, 0); /* no SRC_RANGES: everyone */
	config_unref(cfg);
}

static void test_only_ipv6(void **state)
{
	(void)state;
	struct config *cfg = load_ok(ENV("SRC_PORT=443", "DEST_PROTO=TCP", "DEST_PORT=30443",
					 "DEST_IPS=fd45:a71:55a6:1:2:1:0:db1"));
	const struct service *svc = cfg->services;
	assert_listens_only(svc, "[::]:443");
	assert_false(svc->has_backend4);
	assert_true(svc->has_backend6);
	assert_addr(&svc->backend6, "[fd45:a71:55a6:1:2:1:0:db1]:30443");
	config_unref(cfg);
}

static void test_dest_ip_pair(void **state)
{
	(void)state;
	struct config *cfg = load_ok(ENV("SRC_PORT=80", "DEST_PORT=8080",
					 "DEST_IP=10.43.206.211",
					 "DEST_IP6=fd45:a71:55a6:1:2:1:0:db1"));
	const struct service *svc = cfg->services;
	assert_true(svc->has_backend4);
	assert_true(svc->has_backend6);
	assert_addr(&svc->backend4, "10.43.206.211:8080");
	assert_addr(&svc->backend6, "[fd45:a71:55a6:1:2:1:0:db1]:8080");
	config_unref(cfg);

	/* either one alone, as the oldest klipper-lb set only DEST_IP */
	cfg = load_ok(ENV("SRC_PORT=80", "DEST_PORT=8080", "DEST_IP=10.43.206.211"));
	assert_true(cfg->services->has_backend4);
	assert_false(cfg->services->has_backend6);
	assert_addr(&cfg->services->backend4, "10.43.206.211:8080");
	assert_listens_only(cfg->services, "0.0.0.0:80");
	config_unref(cfg);

	cfg = load_ok(ENV("SRC_PORT=80", "DEST_PORT=8080", "DEST_IP6=fd45:a71:55a6:1:2:1:0:db1"));
	assert_false(cfg->services->has_backend4);
	assert_true(cfg->services->has_backend6);
	assert_listens_only(cfg->services, "[::]:80");
	config_unref(cfg);

	/* DEST_IP takes either family, as klipper-lb's has since 2021 */
	cfg = load_ok(ENV("SRC_PORT=80", "DEST_PORT=8080", "DEST_IP=fd45:a71:55a6:1:2:1:0:db1"));
	assert_false(cfg->services->has_backend4);
	assert_addr(&cfg->services->backend6, "[fd45:a71:55a6:1:2:1:0:db1]:8080");
	assert_listens_only(cfg->services, "[::]:80");
	config_unref(cfg);

	/* an empty DEST_IPS is not a list: the pair is used */
	cfg = load_ok(ENV("SRC_PORT=80", "DEST_PORT=8080", "DEST_IPS=", "DEST_IP=10.0.0.9"));
	assert_addr(&cfg->services->backend4, "10.0.0.9:8080");
	config_unref(cfg);
}

static void test_dest_ips_precedence(void **state)
{
	(void)state;
	struct config *cfg = load_ok(ENV("SRC_PORT=80", "DEST_PORT=8080",
					 "DEST_IP=10.0.0.2", "DEST_IP6=fd00::2",
					 "DEST_IPS=10.0.0.1"));
	const struct service *svc = cfg->services;
	assert_true(svc->has_backend4);
	assert_false(svc->has_backend6); /* DEST_IP6 is not added to DEST_IPS */
	assert_addr(&svc->backend4, "10.0.0.1:8080");
	config_unref(cfg);

	/* the older pair is not even looked at */
	cfg = load_ok(ENV("SRC_PORT=80", "DEST_PORT=8080", "DEST_IP=garbage",
			  "DEST_IP6=10.0.0.3", "DEST_IPS=fd00::1"));
	assert_false(cfg->services->has_backend4);
	assert_addr(&cfg->services->backend6, "[fd00::1]:8080");
	config_unref(cfg);
}

static void test_dest_proto_udp(void **state)
{
	(void)state;
	static const char *const protos[] = { "DEST_PROTO=UDP", "DEST_PROTO=udp" };
	for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++) {
		char *proto = strdup(protos[i]);
		assert_non_null(proto);
		struct config *cfg = load_ok(ENV("SRC_PORT=53", proto, "DEST_PORT=5353",
						 "DEST_IPS=10.43.0.10,fd45::a"));
		const struct service *svc = cfg->services;
		assert_string_equal(svc->name, "lb-udp-53");
		assert_true(svc->udp);
		assert_false(svc->tcp);
		assert_listens_any(svc, 53);
		assert_addr(&svc->backend4, "10.43.0.10:5353");
		config_unref(cfg);
		free(proto);
	}
}

static void test_dest_proto_tcp(void **state)
{
	(void)state;
	static const char *const protos[] = {
		"DEST_PROTO=TCP", "DEST_PROTO=tcp", "DEST_PROTO=Tcp", "DEST_PROTO=",
		"UNRELATED=1", /* unset */
	};
	for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++) {
		char *proto = strdup(protos[i]);
		assert_non_null(proto);
		struct config *cfg = load_ok(ENV("SRC_PORT=80", proto, "DEST_PORT=8080",
						 "DEST_IPS=10.0.0.1"));
		assert_string_equal(cfg->services->name, "lb-tcp-80");
		config_unref(cfg);
		free(proto);
	}
}

static void test_src_ranges_both_families(void **state)
{
	(void)state;
	struct config *cfg = load_ok(ENV(KLIPPER_DUAL, "SRC_RANGES=10.0.0.0/8,2001:db8::/32"));
	const struct service *svc = cfg->services;

	assert_int_equal(svc->allow.n, 2);
	assert_allow_has(svc, "10.0.0.0/8");
	assert_allow_has(svc, "2001:db8::/32");
	assert_true(allows(svc, "10.1.2.3"));
	assert_false(allows(svc, "11.0.0.1"));
	assert_true(allows(svc, "2001:db8::1"));
	assert_false(allows(svc, "2001:db9::1"));
	config_unref(cfg);
}

static void test_src_ranges_ipv4_only(void **state)
{
	(void)state;
	/* as with klipper-lb, a family with no listed range is refused */
	struct config *cfg = load_ok(ENV(KLIPPER_DUAL, "SRC_RANGES=127.0.0.0/8"));
	const struct service *svc = cfg->services;

	assert_int_equal(svc->allow.n, 1);
	assert_allow_has(svc, "127.0.0.0/8");
	assert_true(allows(svc, "127.0.0.1"));
	assert_false(allows(svc, "10.0.0.1"));
	assert_false(allows(svc, "::1"));
	assert_false(allows(svc, "2001:db8::1"));
	assert_listens_any(svc, 80); /* both published: the backends decide that */
	config_unref(cfg);
}

static void test_src_ranges_ipv6_only(void **state)
{
	(void)state;
	struct config *cfg = load_ok(ENV(KLIPPER_DUAL, "SRC_RANGES=2001:db8::/32 fd00::/8"));
	const struct service *svc = cfg->services;

	assert_int_equal(svc->allow.n, 2);
	assert_allow_has(svc, "2001:db8::/32");
	assert_allow_has(svc, "fd00::/8");
	assert_false(allows(svc, "10.0.0.1"));
	assert_false(allows(svc, "127.0.0.1"));
	assert_true(allows(svc, "fd45::1"));
	assert_false(allows(svc, "::1"));
	config_unref(cfg);
}

static void test_src_ranges_k3s_default(void **state)
{
	(void)state;
	/* what ServiceLB sets without loadBalancerSourceRanges on a dual-stack
	 * Service ("0.0.0.0/0", and ",::/0" when the Service has IPv6) */
	struct config *cfg = load_ok(ENV(KLIPPER_DUAL, "SRC_RANGES=0.0.0.0/0,::/0"));
	const struct service *svc = cfg->services;
	assert_int_equal(svc->allow.n, 2);
	assert_allow_has(svc, "0.0.0.0/0");
	assert_allow_has(svc, "::/0");
	assert_true(allows(svc, "192.0.2.1"));
	assert_true(allows(svc, "2001:db8::1"));
	config_unref(cfg);

	/* and on an IPv4-only one: only IPv4 is published and allowed */
	cfg = load_ok(ENV("SRC_PORT=80", "DEST_PORT=80", "DEST_IPS=10.43.0.10",
			  "SRC_RANGES=0.0.0.0/0"));
	svc = cfg->services;
	assert_listens_only(svc, "0.0.0.0:80");
	assert_true(allows(svc, "192.0.2.1"));
	assert_false(allows(svc, "2001:db8::1"));
	config_unref(cfg);
}

static void test_src_ranges_fill_the_list(void **state)
{
	(void)state;
	/* CIDR_MAX ranges fill the allowlist exactly */
	char value[CIDR_MAX * RANGE_TEXT_MAX + 16];
	size_t len = (size_t)snprintf(value, sizeof(value), "SRC_RANGES=");
	for (unsigned i = 0; i < CIDR_MAX; i++)
		len += (size_t)snprintf(value + len, sizeof(value) - len, "10.%u.0.0/16,", i);
	struct config *cfg = load_ok(ENV(KLIPPER_DUAL, value));
	assert_int_equal(cfg->services->allow.n, CIDR_MAX);
	assert_true(allows(cfg->services, "10.63.1.1"));
	assert_false(allows(cfg->services, "10.64.1.1"));
	assert_false(allows(cfg->services, "::1"));
	config_unref(cfg);
}

static void test_src_ranges_host_bits_masked(void **state)
{
	(void)state;
	/* iptables -s 10.0.0.1/8 means 10.0.0.0/8: so does SRC_RANGES */
	struct config *cfg = load_ok(ENV(KLIPPER_DUAL,
					 "SRC_RANGES=10.0.0.1/8,2001:db8::1/32\n192.168.1.1/24"));
	const struct service *svc = cfg->services;
	assert_int_equal(svc->allow.n, 3);
	assert_allow_has(svc, "10.0.0.0/8");
	assert_allow_has(svc, "2001:db8::/32");
	assert_allow_has(svc, "192.168.1.0/24");
	assert_true(allows(svc, "10.200.0.1"));
	assert_true(allows(svc, "192.168.1.77"));
	assert_false(allows(svc, "192.168.2.1"));
	config_unref(cfg);
}

static void test_drain_within_grace_period(void **state)
{
	(void)state;
	/* Kubernetes sends SIGKILL 30 s after SIGTERM by default */
	struct config *cfg = load_ok(ENV(KLIPPER_DUAL));
	assert_true(cfg->drain_timeout > 0 && cfg->drain_timeout < 30);
	config_unref(cfg);
}

/* ---- envconfig_load: errors ---- */

static void test_error_dest_proto(void **state)
{
	(void)state;
	struct config_error err;

	check_error(ENV("SRC_PORT=80", "DEST_PROTO=SCTP", "DEST_PORT=80", "DEST_IPS=10.0.0.1"),
		    STARTS_WITH, "DEST_PROTO:", &err, __FILE__, __LINE__);
	assert_non_null(strstr(err.msg, "SCTP"));
	assert_non_null(strstr(err.msg, "not supported"));
	assert_env_error(ENV("SRC_PORT=80", "DEST_PROTO=FOO", "DEST_PORT=80",
			     "DEST_IPS=10.0.0.1"), "DEST_PROTO:");
	assert_env_error(ENV("SRC_PORT=80", "DEST_PROTO=TCP6", "DEST_PORT=80",
			     "DEST_IPS=10.0.0.1"), "DEST_PROTO:");
	assert_env_error(ENV("SRC_PORT=80", "DEST_PROTO= TCP", "DEST_PORT=80",
			     "DEST_IPS=10.0.0.1"), "DEST_PROTO:");
}

static void test_error_src_port(void **state)
{
	(void)state;
	static const char *const ports[] = {
		"SRC_PORT=0", "SRC_PORT=70000", "SRC_PORT=65536", "SRC_PORT=abc",
		"SRC_PORT=", "SRC_PORT=-1", "SRC_PORT=80 ", "SRC_PORT=8o",
		"SRC_PORT=99999999999999999999",
	};
	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		char *port = strdup(ports[i]);
		assert_non_null(port);
		assert_env_error(ENV(port, "DEST_PORT=80", "DEST_IPS=10.0.0.1"), "SRC_PORT:");
		free(port);
	}
	assert_env_error(ENV("DEST_PORT=80", "DEST_IPS=10.0.0.1"), "SRC_PORT:");
	assert_env_error((char *const[]){ NULL }, "SRC_PORT:");
	assert_env_error(NULL, "SRC_PORT:");
}

static void test_error_dest_port(void **state)
{
	(void)state;
	static const char *const ports[] = {
		"DEST_PORT=0", "DEST_PORT=70000", "DEST_PORT=abc", "DEST_PORT=",
		"DEST_PORT=80x", "DEST_PORT=http",
	};
	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		char *port = strdup(ports[i]);
		assert_non_null(port);
		assert_env_error(ENV("SRC_PORT=80", port, "DEST_IPS=10.0.0.1"), "DEST_PORT:");
		free(port);
	}
	assert_env_error(ENV("SRC_PORT=80", "DEST_IPS=10.0.0.1"), "DEST_PORT:");
}

static void test_error_dest_ips(void **state)
{
	(void)state;
	static const char *const lists[] = {
		"DEST_IPS=10.0.0.300",
		"DEST_IPS=10.0.0.1,10.0.0.2",
		"DEST_IPS=fd00::1,fd00::2",
		"DEST_IPS=10.0.0.1,fd00::1,10.0.0.2",
		"DEST_IPS=10.0.0.1,garbage",
		"DEST_IPS=10.0.0.1/32",
		"DEST_IPS=[fd00::1]",
		"DEST_IPS=fd00:::1",
		"DEST_IPS=10.0.0.1:80",
		"DEST_IPS=fe80::1%eth0",
		"DEST_IPS=localhost",
	};
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		char *dest = strdup(lists[i]);
		assert_non_null(dest);
		assert_env_error(ENV("SRC_PORT=80", "DEST_PORT=80", dest), "DEST_IPS:");
		free(dest);
	}
}

static void test_error_dest_ip_family(void **state)
{
	(void)state;
	assert_env_error(ENV("SRC_PORT=80", "DEST_PORT=80", "DEST_IP=10.0.0.256"), "DEST_IP:");
	assert_env_error(ENV("SRC_PORT=80", "DEST_PORT=80", "DEST_IP=10.0.0.1,10.0.0.2"),
			 "DEST_IP:");
	assert_env_error(ENV("SRC_PORT=80", "DEST_PORT=80", "DEST_IP6=10.0.0.1"), "DEST_IP6:");
	assert_env_error(ENV("SRC_PORT=80", "DEST_PORT=80", "DEST_IP=10.0.0.1",
			     "DEST_IP6=fd00::zz"), "DEST_IP6:");
}

static void test_error_no_destination(void **state)
{
	(void)state;
	assert_env_error_contains(ENV("SRC_PORT=80", "DEST_PORT=80"), "DEST_IPS");
	assert_env_error_contains(ENV("SRC_PORT=80", "DEST_PORT=80", "DEST_IPS="), "DEST_IPS");
	assert_env_error_contains(ENV("SRC_PORT=80", "DEST_PORT=80", "DEST_IPS=, ,"),
				  "DEST_IPS");
	assert_env_error_contains(ENV("SRC_PORT=80", "DEST_PORT=80", "DEST_IP=", "DEST_IP6="),
				  "DEST_IPS");
}

static void test_error_src_ranges(void **state)
{
	(void)state;
	static const char *const ranges[] = {
		"SRC_RANGES=10.0.0.0/33",
		"SRC_RANGES=garbage",
		"SRC_RANGES=10.0.0.0/8,garbage",
		"SRC_RANGES=10.0.0.0/8 ::/129",
		"SRC_RANGES=10.0.0.0/",
		"SRC_RANGES=10.0.0.0/8;192.168.0.0/16",
		/* not a way to smuggle keys into the generated config */
		"SRC_RANGES=10.0.0.0/8\nproxy_protocol=v2",
		"SRC_RANGES=10.0.0.0/8\n[global]\nuser=root",
	};
	for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
		char *range = strdup(ranges[i]);
		assert_non_null(range);
		assert_env_error(ENV(KLIPPER_DUAL, range), "SRC_RANGES:");
		free(range);
	}
}

/* The error names SRC_RANGES even when the allowlist overflows. */
static void test_error_too_many_ranges(void **state)
{
	(void)state;
	char value[MANY_RANGES * RANGE_TEXT_MAX + 16];
	size_t len = (size_t)snprintf(value, sizeof(value), "SRC_RANGES=");

	for (unsigned i = 0; i < MANY_RANGES; i++)
		len += (size_t)snprintf(value + len, sizeof(value) - len, "10.0.%u.0/24,", i);
	assert_env_error(ENV(KLIPPER_DUAL, value), "SRC_RANGES:");
}

/* So many ranges that the generated text overflows. */
static void test_error_ranges_overflow_text(void **state)
{
	(void)state;
	char value[HUGE_RANGES * RANGE_TEXT_MAX + 16];
	size_t len = (size_t)snprintf(value, sizeof(value), "SRC_RANGES=");

	for (unsigned i = 0; i < HUGE_RANGES; i++)
		len += (size_t)snprintf(value + len, sizeof(value) - len,
					"2001:db8:%x:ffff:ffff:ffff:ffff:0/112,", i);
	assert_true(len < sizeof(value));
	struct config_error err;
	check_error(ENV(KLIPPER_DUAL, value), STARTS_WITH, "SRC_RANGES:", &err, __FILE__,
		    __LINE__);
	assert_non_null(strstr(err.msg, "too many"));
}

/* Every error above goes through check_error, which also insists on
 * err.file == "environment" and err.line == 0; this one formats it. */
static void test_error_format(void **state)
{
	(void)state;
	struct config_error err;
	char buf[ERRBUF_MAX];

	check_error(ENV("SRC_PORT=0"), STARTS_WITH, "SRC_PORT:", &err, __FILE__, __LINE__);
	config_error_format(&err, buf, sizeof(buf));
	assert_true(strncmp(buf, "environment: SRC_PORT:", strlen("environment: SRC_PORT:")) == 0);
}

/* Destinations that pass klipper-lb's syntax but no TCP connection reaches. */
static void test_error_dest_unusable(void **state)
{
	(void)state;
	static const struct {
		const char *var;
		const char *msg;
	} cases[] = {
		{ "DEST_IPS=0.0.0.0", "DEST_IPS: the unspecified address is not a backend: '0.0.0.0'" },
		{ "DEST_IPS=10.43.0.1,::", "DEST_IPS: the unspecified address is not a backend: '::'" },
		{ "DEST_IPS=255.255.255.255", "DEST_IPS: the broadcast address is not a backend" },
		{ "DEST_IPS=224.0.0.1", "DEST_IPS: a multicast address is not a backend: '224.0.0.1'" },
		{ "DEST_IPS=ff02::1 10.43.0.1", "DEST_IPS: a multicast address is not a backend: 'ff02::1'" },
		{ "DEST_IPS=::ffff:10.43.0.1", "DEST_IPS: IPv4-mapped address: write it as IPv4" },
		{ "DEST_IPS=fe80::1", "DEST_IPS: a link-local address is not a backend here" },
		{ "DEST_IPS=fe80::1%1", "DEST_IPS: bad IPv6 address: 'fe80::1%1'" },
		{ "DEST_IP=0.0.0.0", "DEST_IP: the unspecified address" },
		{ "DEST_IP=ff05::2", "DEST_IP: a multicast address" },
		{ "DEST_IP6=::", "DEST_IP6: the unspecified address" },
		{ "DEST_IP6=::ffff:192.0.2.1", "DEST_IP6: IPv4-mapped address" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *dest = strdup(cases[i].var);
		assert_non_null(dest);
		assert_env_error(ENV("SRC_PORT=80", "DEST_PORT=30080", dest), cases[i].msg);
		free(dest);
	}
}

/* A destination that is this host on SRC_PORT is dualproxy itself: the
 * error names the variables. */
static void test_error_dest_is_own_port(void **state)
{
	(void)state;
	assert_env_error(ENV("SRC_PORT=80", "DEST_PORT=80", "DEST_IPS=127.0.0.1"),
			 "DEST_IPS: backend4 127.0.0.1:80 is an address of this host, where "
			 "[lb-tcp-80] listens with 0.0.0.0:80");
	assert_env_error(ENV("SRC_PORT=80", "DEST_PORT=80", "DEST_IP=10.43.0.1",
			     "DEST_IP6=::1"), "DEST_IP6: backend6 [::1]:80 is an address of this host");
	/* another port, or an address elsewhere: fine */
	config_unref(load_ok(ENV("SRC_PORT=80", "DEST_PORT=8080", "DEST_IPS=127.0.0.1")));
	config_unref(load_ok(ENV("SRC_PORT=80", "DEST_PORT=80", "DEST_IPS=192.0.2.10")));
}

/* What a reload compares: the text the environment makes, kept in the config. */
static void test_text(void **state)
{
	(void)state;
	struct config_error err;
	char *const *env = ENV(KLIPPER_DUAL, "SRC_RANGES=10.0.0.0/8 fd00::/8");

	char *text = envconfig_text(env, &err);
	assert_non_null(text);
	assert_non_null(strstr(text, "[lb-tcp-80]\nprotocol = tcp\nlisten = 0.0.0.0:80 [::]:80\n"));
	assert_non_null(strstr(text, "backend4 = 10.43.206.211:30080\n"));
	assert_non_null(strstr(text, "backend6 = [fd45:a71:55a6:1:2:1:0:db1]:30080\n"));
	assert_non_null(strstr(text, "allow = 10.0.0.0/8\nallow = fd00::/8\n"));
	struct config *cfg = load_ok(env);
	assert_true(config_same_text(cfg, text, strlen(text)));
	/* the same text loads the same config */
	struct config *again = envconfig_load_text(text, &err);
	assert_non_null(again);
	assert_true(config_same_text(again, cfg->text, cfg->text_len));
	config_unref(again);
	/* another environment makes another text */
	char *other = envconfig_text(ENV(KLIPPER_DUAL, "SRC_RANGES=10.0.0.0/8"), &err);
	assert_false(config_same_text(cfg, other, strlen(other)));
	free(other);
	config_unref(cfg);
	assert_null(envconfig_text(ENV("SRC_PORT=0"), &err));
	assert_string_equal(err.file, ENVCONFIG_NAME);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wanted),
		cmocka_unit_test(test_dual_stack),
		cmocka_unit_test(test_service_name_follows_port),
		cmocka_unit_test(test_dest_ips_separators),
		cmocka_unit_test(test_only_ipv4),
		cmocka_unit_test(test_only_ipv6),
		cmocka_unit_test(test_dest_ip_pair),
		cmocka_unit_test(test_dest_ips_precedence),
		cmocka_unit_test(test_dest_proto_tcp),
		cmocka_unit_test(test_dest_proto_udp),
		cmocka_unit_test(test_src_ranges_both_families),
		cmocka_unit_test(test_src_ranges_ipv4_only),
		cmocka_unit_test(test_src_ranges_ipv6_only),
		cmocka_unit_test(test_src_ranges_k3s_default),
		cmocka_unit_test(test_src_ranges_fill_the_list),
		cmocka_unit_test(test_src_ranges_host_bits_masked),
		cmocka_unit_test(test_drain_within_grace_period),
		cmocka_unit_test(test_error_dest_proto),
		cmocka_unit_test(test_error_src_port),
		cmocka_unit_test(test_error_dest_port),
		cmocka_unit_test(test_error_dest_ips),
		cmocka_unit_test(test_error_dest_ip_family),
		cmocka_unit_test(test_error_no_destination),
		cmocka_unit_test(test_error_src_ranges),
		cmocka_unit_test(test_error_too_many_ranges),
		cmocka_unit_test(test_error_ranges_overflow_text),
		cmocka_unit_test(test_error_format),
		cmocka_unit_test(test_error_dest_unusable),
		cmocka_unit_test(test_error_dest_is_own_port),
		cmocka_unit_test(test_text),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
