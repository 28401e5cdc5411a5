/* test_config.c: unit tests for config.c (loading, validating and reporting errors in the INI file) */
#include "autoconfig.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"

#define CFG_NAME "test.ini"
#define ERRBUF_MAX (CONFIG_MSG_MAX * 2 + 32)
#define SECONDS_EPSILON 1e-9

/* A minimal valid service, for tests about something else. */
#define WEB_SERVICE                                                            \
	"[web]\n"                                                              \
	"listen = 80\n"                                                        \
	"backend4 = 10.43.206.211:80\n"

/* ---- helpers ---- */

static struct config *load_ok_at(const char *text, const char *file, int at)
{
	struct config_error err;
	char buf[ERRBUF_MAX];

	memset(&err, 0x5a, sizeof(err));
	struct config *cfg = config_load_string(CFG_NAME, text, &err);
	if (cfg == NULL) {
		print_error("config_load_string failed: %s\n",
			    config_error_format(&err, buf, sizeof(buf)));
		_fail(file, at);
	}
	return cfg;
}
#define load_ok(text) load_ok_at((text), __FILE__, __LINE__)

/* Loading text must fail at line with a message containing substr. */
static void check_error(const char *text, unsigned line, const char *substr,
			const char *file, int at)
{
	struct config_error err;
	char buf[ERRBUF_MAX];

	memset(&err, 0x5a, sizeof(err));
	struct config *cfg = config_load_string(CFG_NAME, text, &err);
	if (cfg != NULL) {
		config_unref(cfg);
		print_error("config loaded, expected an error at line %u containing \"%s\"\n",
			    line, substr);
		_fail(file, at);
	}
	if (memchr(err.file, '\0', sizeof(err.file)) == NULL ||
	    memchr(err.msg, '\0', sizeof(err.msg)) == NULL) {
		print_error("config_error not NUL-terminated\n");
		_fail(file, at);
	}
	config_error_format(&err, buf, sizeof(buf));
	if (strcmp(err.file, CFG_NAME) != 0) {
		print_error("err.file is \"%s\", expected \"%s\" (%s)\n", err.file, CFG_NAME, buf);
		_fail(file, at);
	}
	if (err.line != line) {
		print_error("error at line %u, expected line %u: %s\n", err.line, line, buf);
		_fail(file, at);
	}
	if (strstr(err.msg, substr) == NULL) {
		print_error("message \"%s\" does not contain \"%s\"\n", err.msg, substr);
		_fail(file, at);
	}
}
#define assert_config_error(text, line, substr)                               \
	check_error((text), (line), (substr), __FILE__, __LINE__)

static void assert_seconds(double got, double want)
{
	if (got < want - SECONDS_EPSILON || got > want + SECONDS_EPSILON)
		fail_msg("%.9f seconds, expected %.9f", got, want);
}

static const struct service *find_service(const struct config *cfg, const char *name)
{
	for (const struct service *s = cfg->services; s != NULL; s = s->next)
		if (strcmp(s->name, name) == 0)
			return s;
	fail_msg("no service [%s]", name);
	return NULL;
}

static void assert_addr(const struct addr *a, const char *want)
{
	char buf[ADDR_STRLEN];
	assert_string_equal(addr_format(a, buf), want);
}

static struct addr addr_of(const char *s)
{
	struct addr a;
	const char *why = NULL;
	if (addr_parse(s, &a, &why) != 0)
		fail_msg("addr_parse(\"%s\"): %s", s, why);
	return a;
}

/* ---- loading: good files ---- */

/* The example of DESIGN.md, without the [global] keys the parser does not take yet. */
static const char design_example[] =
	"[global]\n"
	"max_connections = 20000 ; accept pauses above it, resumes below it\n"
	"connect_timeout = 5s\n"
	"idle_timeout = 15m\n"
	"log_level = info\n"
	"\n"
	"[web]                   ; one section per forwarded port; the name shows up in logs and metrics\n"
	"listen = 80             ; a port means 0.0.0.0:80 and [::]:80; explicit addresses are allowed\n"
	"backend4 = 10.43.206.211:80\n"
	"backend6 = [fd45:a71:55a6:1:2:1:0:db1]:80\n";

static void test_design_example(void **state)
{
	(void)state;
	struct config *cfg = load_ok(design_example);

	assert_int_equal(cfg->refs, 1);
	assert_string_equal(cfg->path, CFG_NAME);
	assert_int_equal(cfg->max_connections, 20000);
	assert_seconds(cfg->connect_timeout, 5.0);
	assert_seconds(cfg->idle_timeout, 900.0);
	assert_int_equal(cfg->log_level, LOG_LVL_INFO);

	assert_int_equal(cfg->n_services, 1);
	const struct service *web = cfg->services;
	assert_non_null(web);
	assert_null(web->next);
	assert_string_equal(web->name, "web");
	assert_int_equal(web->line, 7);
	assert_int_equal(web->n_listen, 2);
	assert_int_equal(addr_family(&web->listen[0]), AF_INET);
	assert_int_equal(addr_port(&web->listen[0]), 80);
	assert_addr(&web->listen[0], "0.0.0.0:80");
	assert_int_equal(addr_family(&web->listen[1]), AF_INET6);
	assert_int_equal(addr_port(&web->listen[1]), 80);
	assert_addr(&web->listen[1], "[::]:80");
	assert_int_equal(web->listen_line[0], 8);
	assert_int_equal(web->listen_line[1], 8);
	assert_true(web->has_backend4);
	assert_true(web->has_backend6);
	assert_addr(&web->backend4, "10.43.206.211:80");
	assert_addr(&web->backend6, "[fd45:a71:55a6:1:2:1:0:db1]:80");
	assert_seconds(web->connect_timeout, 5.0);
	assert_seconds(web->idle_timeout, 900.0);

	config_unref(cfg);
}

static void test_defaults(void **state)
{
	(void)state;
	struct config *cfg = load_ok(WEB_SERVICE);

	assert_int_equal(cfg->max_connections, DEFAULT_MAX_CONNECTIONS);
	assert_seconds(cfg->connect_timeout, DEFAULT_CONNECT_TIMEOUT);
	assert_seconds(cfg->idle_timeout, DEFAULT_IDLE_TIMEOUT);
	assert_int_equal(cfg->log_level, LOG_LVL_INFO);
	assert_int_equal(cfg->n_services, 1);
	assert_seconds(cfg->services->connect_timeout, DEFAULT_CONNECT_TIMEOUT);
	assert_seconds(cfg->services->idle_timeout, DEFAULT_IDLE_TIMEOUT);
	assert_true(cfg->services->has_backend4);
	assert_false(cfg->services->has_backend6);
	config_unref(cfg);
}

static void test_global_values(void **state)
{
	(void)state;
	struct config *cfg = load_ok("[global]\n"
				     "max_connections = 123\n"
				     "connect_timeout = 250ms\n"
				     "idle_timeout = 1h\n"
				     "log_level = debug\n"
				     WEB_SERVICE);

	assert_int_equal(cfg->max_connections, 123);
	assert_seconds(cfg->connect_timeout, 0.25);
	assert_seconds(cfg->idle_timeout, 3600.0);
	assert_int_equal(cfg->log_level, LOG_LVL_DEBUG);
	config_unref(cfg);

	cfg = load_ok("[global]\nlog_level = error\nmax_connections = 10000000\n" WEB_SERVICE);
	assert_int_equal(cfg->log_level, LOG_LVL_ERROR);
	assert_int_equal(cfg->max_connections, 10000000);
	config_unref(cfg);
	cfg = load_ok("[global]\nlog_level = warning\nmax_connections = 1\n" WEB_SERVICE);
	assert_int_equal(cfg->log_level, LOG_LVL_WARNING);
	assert_int_equal(cfg->max_connections, 1);
	config_unref(cfg);
}

/* Several services in file order; per-service timeouts override [global],
 * which is applied to the others even when it comes after them. */
static void test_services_and_timeouts(void **state)
{
	(void)state;
	struct config *cfg = load_ok(
		"[web]\n"                                           /* 1 */
		"listen = 80\n"                                     /* 2 */
		"backend4 = 10.43.206.211:80\n"                     /* 3 */
		"backend6 = [fd45:a71:55a6:1:2:1:0:db1]:80\n"       /* 4 */
		"\n"                                                /* 5 */
		"[websecure]\n"                                     /* 6 */
		"listen = 443\n"                                    /* 7 */
		"backend4 = 10.43.206.211:443\n"                    /* 8 */
		"backend6 = [fd45:a71:55a6:1:2:1:0:db1]:443\n"      /* 9 */
		"connect_timeout = 2s\n"                            /* 10 */
		"idle_timeout = 1h\n"                               /* 11 */
		"\n"                                                /* 12 */
		"[ssh]\n"                                           /* 13 */
		"listen = 2222\n"                                   /* 14 */
		"backend4 = 10.43.0.22:22\n"                        /* 15 */
		"idle_timeout = 30s\n"                              /* 16 */
		"\n"                                                /* 17 */
		"[global]\n"                                        /* 18 */
		"connect_timeout = 3s\n"                            /* 19 */
		"idle_timeout = 10m\n");                            /* 20 */

	assert_int_equal(cfg->n_services, 3);
	const struct service *web = cfg->services;
	const struct service *websecure = web->next;
	const struct service *ssh = websecure->next;
	assert_null(ssh->next);
	assert_string_equal(web->name, "web");
	assert_string_equal(websecure->name, "websecure");
	assert_string_equal(ssh->name, "ssh");
	assert_int_equal(web->line, 1);
	assert_int_equal(websecure->line, 6);
	assert_int_equal(ssh->line, 13);

	assert_seconds(cfg->connect_timeout, 3.0);
	assert_seconds(cfg->idle_timeout, 600.0);
	/* inherited from a [global] that comes later */
	assert_seconds(web->connect_timeout, 3.0);
	assert_seconds(web->idle_timeout, 600.0);
	/* both overridden */
	assert_seconds(websecure->connect_timeout, 2.0);
	assert_seconds(websecure->idle_timeout, 3600.0);
	/* one overridden, one inherited */
	assert_seconds(ssh->connect_timeout, 3.0);
	assert_seconds(ssh->idle_timeout, 30.0);

	assert_int_equal(websecure->n_listen, 2);
	assert_addr(&websecure->listen[0], "0.0.0.0:443");
	assert_addr(&websecure->listen[1], "[::]:443");
	assert_int_equal(websecure->listen_line[0], 7);
	assert_addr(&websecure->backend4, "10.43.206.211:443");
	assert_addr(&websecure->backend6, "[fd45:a71:55a6:1:2:1:0:db1]:443");
	assert_true(ssh->has_backend4);
	assert_false(ssh->has_backend6);
	assert_ptr_equal(find_service(cfg, "ssh"), ssh);
	config_unref(cfg);
}

static void test_inline_comments(void **state)
{
	(void)state;
	struct config *cfg = load_ok(
		"; a comment line\n"
		"# another comment line\n"
		"[global]   ; the defaults\n"
		"max_connections = 500 ; not many\n"
		"log_level = warning ; quiet\n"
		"[web] ; the web port\n"
		"listen = 8080 ; both families\n"
		"backend4 = 10.43.206.211:80 ; ClusterIP\n"
		"backend6 = [fd45:a71:55a6:1:2:1:0:db1]:80 ; ClusterIP v6\n"
		"connect_timeout = 1500ms ; quick\n");

	assert_int_equal(cfg->max_connections, 500);
	assert_int_equal(cfg->log_level, LOG_LVL_WARNING);
	const struct service *web = cfg->services;
	assert_string_equal(web->name, "web");
	assert_int_equal(web->n_listen, 2);
	assert_int_equal(addr_port(&web->listen[0]), 8080);
	assert_addr(&web->backend4, "10.43.206.211:80");
	assert_addr(&web->backend6, "[fd45:a71:55a6:1:2:1:0:db1]:80");
	assert_seconds(web->connect_timeout, 1.5);
	config_unref(cfg);
}

static void test_crlf_and_no_final_newline(void **state)
{
	(void)state;
	struct config *cfg = load_ok("[web]\r\nlisten = 80\r\nbackend4 = 10.0.0.1:80\r\n");
	assert_int_equal(cfg->services->n_listen, 2);
	assert_addr(&cfg->services->backend4, "10.0.0.1:80");
	config_unref(cfg);

	cfg = load_ok("[web]\nlisten = 80\nbackend4 = 10.0.0.1:80");
	assert_addr(&cfg->services->backend4, "10.0.0.1:80");
	config_unref(cfg);
}

/* inih skips a UTF-8 byte order mark (INI_ALLOW_BOM); a file saved with one
 * must read the same as without. */
static void test_utf8_bom(void **state)
{
	(void)state;
	struct config *cfg = load_ok("\xEF\xBB\xBF[web]\n"
				     "listen = 80\n"
				     "backend4 = 10.43.206.211:80\n");
	assert_int_equal(cfg->n_services, 1);
	assert_string_equal(cfg->services->name, "web");
	assert_int_equal(cfg->services->line, 1);
	config_unref(cfg);

	cfg = load_ok("\xEF\xBB\xBF; comment\n" WEB_SERVICE);
	assert_int_equal(cfg->services->line, 2);
	config_unref(cfg);
}

static void test_only_backend6(void **state)
{
	(void)state;
	struct config *cfg = load_ok("[v6only]\n"
				     "listen = 443\n"
				     "backend6 = [fd45:a71:55a6:1:2:1:0:db1]:443\n");
	const struct service *svc = cfg->services;

	assert_false(svc->has_backend4);
	assert_true(svc->has_backend6);
	assert_addr(&svc->backend6, "[fd45:a71:55a6:1:2:1:0:db1]:443");
	/* an IPv4 client falls back to the IPv6 backend */
	assert_ptr_equal(service_backend(svc, AF_INET), &svc->backend6);
	assert_ptr_equal(service_backend(svc, AF_INET6), &svc->backend6);
	config_unref(cfg);
}

static void test_explicit_listen_list(void **state)
{
	(void)state;
	struct config *cfg = load_ok("[web]\n"
				     "listen = 127.0.0.1:8080, [::1]:8080\n"
				     "backend4 = 10.43.206.211:80\n");
	const struct service *svc = cfg->services;

	assert_int_equal(svc->n_listen, 2);
	assert_int_equal(addr_family(&svc->listen[0]), AF_INET);
	assert_addr(&svc->listen[0], "127.0.0.1:8080");
	assert_int_equal(addr_family(&svc->listen[1]), AF_INET6);
	assert_addr(&svc->listen[1], "[::1]:8080");
	assert_int_equal(svc->listen_line[0], 2);
	assert_int_equal(svc->listen_line[1], 2);
	config_unref(cfg);

	/* blanks separate too; bare ports and addresses mix */
	cfg = load_ok("[web]\n"
		      "listen = 80 443\t127.0.0.1:8080,,[::1]:8443\n"
		      "backend4 = 10.43.206.211:80\n");
	svc = cfg->services;
	assert_int_equal(svc->n_listen, 6);
	assert_addr(&svc->listen[0], "0.0.0.0:80");
	assert_addr(&svc->listen[1], "[::]:80");
	assert_addr(&svc->listen[2], "0.0.0.0:443");
	assert_addr(&svc->listen[3], "[::]:443");
	assert_addr(&svc->listen[4], "127.0.0.1:8080");
	assert_addr(&svc->listen[5], "[::1]:8443");
	config_unref(cfg);
}

static void test_listen_limit(void **state)
{
	(void)state;
	/* 8 bare ports are SERVICE_LISTEN_MAX (16) addresses */
	struct config *cfg = load_ok("[web]\n"
				     "listen = 1 2 3 4 5 6 7 8\n"
				     "backend4 = 10.43.206.211:80\n");
	assert_int_equal(cfg->services->n_listen, SERVICE_LISTEN_MAX);
	config_unref(cfg);

	assert_config_error("[web]\n"
			    "listen = 1 2 3 4 5 6 7 8 9\n"
			    "backend4 = 10.43.206.211:80\n",
			    2, "too many listen addresses");
	assert_config_error("[web]\n"
			    "listen = 1 2 3 4 5 6 7 8 127.0.0.1:9\n"
			    "backend4 = 10.43.206.211:80\n",
			    2, "too many listen addresses");
}

/* Addresses that can be bound side by side are no conflict. */
static void test_listen_no_conflict(void **state)
{
	(void)state;
	struct config *cfg = load_ok("[a]\n"
				     "listen = 127.0.0.1:80, [::1]:80\n"
				     "backend4 = 10.0.0.1:80\n"
				     "[b]\n"
				     "listen = 127.0.0.2:80, 0.0.0.0:81, [::2]:80\n"
				     "backend4 = 10.0.0.2:80\n"
				     "[c]\n"
				     "listen = 0.0.0.0:82\n"
				     "backend4 = 10.0.0.3:80\n"
				     "[d]\n"
				     "listen = [::]:82\n" /* V6ONLY: no clash with 0.0.0.0:82 */
				     "backend4 = 10.0.0.4:80\n");
	assert_int_equal(cfg->n_services, 4);
	config_unref(cfg);
}

static void test_protocol(void **state)
{
	(void)state;
	struct config *cfg = load_ok("[tcp]\nlisten = 80\nbackend4 = 10.0.0.1:80\n"
				     "[udp]\nlisten = 53\nprotocol = udp\nbackend4 = 10.0.0.1:53\n"
				     "[both]\nlisten = 443\nprotocol = udp tcp\n"
				     "backend4 = 10.0.0.1:443\n"
				     "[both2]\nlisten = 444\nprotocol = tcp,udp\n"
				     "backend4 = 10.0.0.1:444\n");
	const struct service *s = cfg->services;
	assert_true(s->tcp && !s->udp);
	assert_int_equal(s->protocol_line, 0);
	s = s->next;
	assert_true(!s->tcp && s->udp);
	assert_int_equal(s->protocol_line, 6);
	s = s->next;
	assert_true(s->tcp && s->udp);
	s = s->next;
	assert_true(s->tcp && s->udp);
	config_unref(cfg);

	/* a TCP and a UDP service may share an address; two of one protocol not */
	cfg = load_ok("[dns-udp]\nlisten = 53\nprotocol = udp\nbackend4 = 10.0.0.1:53\n"
		      "[dns-tcp]\nlisten = 53\nbackend4 = 10.0.0.1:53\n");
	config_unref(cfg);
	assert_config_error("[a]\nlisten = 53\nprotocol = udp\nbackend4 = 10.0.0.1:53\n"
			    "[b]\nlisten = 127.0.0.1:53\nprotocol = tcp, udp\n"
			    "backend4 = 10.0.0.1:53\n",
			    6, "listen 127.0.0.1:53 conflicts with 0.0.0.0:53 of [a] (line 2)");
	/* metrics_listen is TCP: no clash with a UDP service's port */
	cfg = load_ok("[global]\nmetrics_listen = 9180\n"
		      "[u]\nlisten = 9180\nprotocol = udp\nbackend4 = 10.0.0.1:53\n");
	config_unref(cfg);

	assert_config_error("[a]\nlisten = 53\nprotocol = sctp\nbackend4 = 10.0.0.1:53\n", 3,
			    "protocol: expected tcp, udp or both: 'sctp'");
	assert_config_error("[a]\nlisten = 53\nprotocol = udp, udp\nbackend4 = 10.0.0.1:53\n",
			    3, "protocol: 'udp' given twice");
	assert_config_error("[a]\nlisten = 53\nprotocol = ,\nbackend4 = 10.0.0.1:53\n", 3,
			    "protocol: empty value");
	/* no PROXY header on UDP: reported at the later of the two lines */
	assert_config_error("[a]\nlisten = 443\nprotocol = tcp, udp\nproxy_protocol = v2\n"
			    "backend4 = 10.0.0.1:443\n",
			    4, "[a]: proxy_protocol with protocol udp");
	assert_config_error("[a]\nlisten = 443\nproxy_protocol = v1\nprotocol = udp\n"
			    "backend4 = 10.0.0.1:443\n",
			    4, "[a]: proxy_protocol with protocol udp");
	cfg = load_ok("[a]\nlisten = 443\nproxy_protocol = off\nprotocol = udp\n"
		      "backend4 = 10.0.0.1:443\n");
	config_unref(cfg);
}

static void test_udp_idle_timeouts(void **state)
{
	(void)state;
	/* no idle_timeout anywhere: conntrack's defaults for UDP, 15m for TCP */
	struct config *cfg = load_ok("[a]\nlisten = 53\nprotocol = tcp, udp\n"
				     "backend4 = 10.0.0.1:53\n");
	assert_true(cfg->services->udp_idle_unreplied == DEFAULT_UDP_IDLE_UNREPLIED);
	assert_true(cfg->services->udp_idle_replied == DEFAULT_UDP_IDLE_REPLIED);
	assert_true(cfg->services->idle_timeout == DEFAULT_IDLE_TIMEOUT);
	config_unref(cfg);
	/* set in [global] or in the service: that value for both */
	cfg = load_ok("[global]\nidle_timeout = 10s\n"
		      "[a]\nlisten = 53\nprotocol = udp\nbackend4 = 10.0.0.1:53\n"
		      "[b]\nlisten = 54\nprotocol = udp\nidle_timeout = 2m\n"
		      "backend4 = 10.0.0.1:53\n");
	assert_true(cfg->services->udp_idle_unreplied == 10.0);
	assert_true(cfg->services->udp_idle_replied == 10.0);
	assert_true(cfg->services->next->udp_idle_unreplied == 120.0);
	assert_true(cfg->services->next->udp_idle_replied == 120.0);
	config_unref(cfg);
}

static void test_section_names(void **state)
{
	(void)state;
	char text[512];
	char name[SERVICE_NAME_MAX + 2];

	struct config *cfg = load_ok("[ web-1_a.b ]\nlisten = 80\nbackend4 = 10.0.0.1:80\n");
	assert_string_equal(cfg->services->name, "web-1_a.b");
	config_unref(cfg);

	memset(name, 'n', SERVICE_NAME_MAX);
	name[SERVICE_NAME_MAX] = '\0';
	snprintf(text, sizeof(text), "[%s]\nlisten = 80\nbackend4 = 10.0.0.1:80\n", name);
	cfg = load_ok(text);
	assert_string_equal(cfg->services->name, name);
	config_unref(cfg);

	name[SERVICE_NAME_MAX] = 'n';
	name[SERVICE_NAME_MAX + 1] = '\0';
	snprintf(text, sizeof(text), "; too long\n[%s]\nlisten = 80\nbackend4 = 10.0.0.1:80\n",
		 name);
	assert_config_error(text, 2, "bad section name");
}

/* ---- service_backend ---- */

static void test_service_backend(void **state)
{
	(void)state;
	struct service svc;

	memset(&svc, 0, sizeof(svc));
	svc.backend4 = addr_of("10.43.206.211:80");
	svc.backend6 = addr_of("[fd45:a71:55a6:1:2:1:0:db1]:80");

	svc.has_backend4 = true;
	svc.has_backend6 = true;
	assert_ptr_equal(service_backend(&svc, AF_INET), &svc.backend4);
	assert_ptr_equal(service_backend(&svc, AF_INET6), &svc.backend6);

	svc.has_backend4 = true;
	svc.has_backend6 = false;
	assert_ptr_equal(service_backend(&svc, AF_INET), &svc.backend4);
	assert_ptr_equal(service_backend(&svc, AF_INET6), &svc.backend4);

	svc.has_backend4 = false;
	svc.has_backend6 = true;
	assert_ptr_equal(service_backend(&svc, AF_INET), &svc.backend6);
	assert_ptr_equal(service_backend(&svc, AF_INET6), &svc.backend6);
}

static void test_service_backend_loaded(void **state)
{
	(void)state;
	struct config *cfg = load_ok(design_example);
	const struct service *web = cfg->services;

	assert_addr(service_backend(web, AF_INET), "10.43.206.211:80");
	assert_addr(service_backend(web, AF_INET6), "[fd45:a71:55a6:1:2:1:0:db1]:80");
	config_unref(cfg);

	cfg = load_ok(WEB_SERVICE);
	assert_addr(service_backend(cfg->services, AF_INET), "10.43.206.211:80");
	assert_addr(service_backend(cfg->services, AF_INET6), "10.43.206.211:80");
	config_unref(cfg);
}

/* ---- references ---- */

static void test_refcount(void **state)
{
	(void)state;
	struct config *cfg = load_ok(design_example);

	assert_int_equal(cfg->refs, 1);
	assert_ptr_equal(config_ref(cfg), cfg);
	assert_int_equal(cfg->refs, 2);
	assert_ptr_equal(config_ref(cfg), cfg);
	assert_int_equal(cfg->refs, 3);
	config_unref(cfg);
	assert_int_equal(cfg->refs, 2);
	config_unref(cfg);
	assert_int_equal(cfg->refs, 1);
	/* still usable while referenced */
	assert_string_equal(cfg->services->name, "web");
	config_unref(cfg); /* frees; valgrind/ASan catch a leak or double free */
	config_unref(NULL);
}

/* ---- errors: keys and sections ---- */

static void test_error_unknown_key_service(void **state)
{
	(void)state;
	assert_config_error("[web]\n"
			    "listen = 80\n"
			    "backend4 = 10.43.206.211:80\n"
			    "bogus = 1\n",
			    4, "unknown key 'bogus' in [web]");
	/* a [global]-only key is unknown in a service */
	assert_config_error("[web]\n"
			    "listen = 80\n"
			    "max_connections = 5\n"
			    "backend4 = 10.43.206.211:80\n",
			    3, "unknown key 'max_connections' in [web]");
}

static void test_lifecycle_keys(void **state)
{
	struct config_error err;
	(void)state;

	struct config *cfg = config_load_string(CFG_NAME, WEB_SERVICE, &err);
	assert_non_null(cfg);
	assert_string_equal(cfg->user, "nobody");
	assert_int_equal(cfg->user_line, 0);
	assert_false(cfg->keep_net_bind);
	assert_true(cfg->drain_timeout == 30.0);
	config_unref(cfg);

	cfg = config_load_string(CFG_NAME,
				 "[global]\n"
				 "user = root\n"
				 "keep_net_bind = yes\n"
				 "drain_timeout = 250ms\n"
				 WEB_SERVICE,
				 &err);
	assert_non_null(cfg);
	assert_string_equal(cfg->user, "root");
	assert_int_equal(cfg->user_line, 2);
	assert_true(cfg->keep_net_bind);
	assert_true(cfg->drain_timeout == 0.25);
	config_unref(cfg);

	/* the name service is asked at start-up and by -t, never on reload */
	cfg = config_load_string(CFG_NAME, "[global]\nuser = no-such-user-here\n" WEB_SERVICE,
				 &err);
	assert_non_null(cfg);
	assert_int_equal(config_check_user(cfg, &err), -1);
	assert_int_equal(err.line, 2);
	assert_string_equal(err.msg, "user: no such user 'no-such-user-here'");
	config_unref(cfg);
	cfg = config_load_string(CFG_NAME, "[global]\nuser = root\n" WEB_SERVICE, &err);
	assert_non_null(cfg);
	assert_int_equal(config_check_user(cfg, &err), 0);
	config_unref(cfg);
	assert_config_error("[global]\n"
			    "log_level = info\n"
			    "keep_net_bind = maybe\n"
			    WEB_SERVICE,
			    3, "keep_net_bind: expected yes or no");
	assert_config_error("[global]\n"
			    "drain_timeout = 0s\n"
			    WEB_SERVICE,
			    2, "drain_timeout: duration must be greater than zero");
}

static void test_error_continuation_line(void **state)
{
	(void)state;
	/* inih would append the indented line to listen's value */
	assert_config_error("[web]\n"
			    "listen = 80\n"
			    "  81\n"
			    "backend4 = 10.43.206.211:80\n",
			    3, "continuation lines are not supported");
	/* an indented first key of a section, and indented comments, are fine */
	struct config_error err;
	struct config *cfg = config_load_string(CFG_NAME,
						"[web]\n"
						"  listen = 80\n"
						"  ; a comment\n"
						"backend4 = 10.43.206.211:80\n",
						&err);
	assert_non_null(cfg);
	config_unref(cfg);
}

static void test_error_unknown_key_global(void **state)
{
	(void)state;
	assert_config_error("[global]\n"
			    "log_level = info\n"
			    "workers = 2\n"
			    WEB_SERVICE,
			    3, "unknown key 'workers' in [global]");
	assert_config_error(WEB_SERVICE
			    "[global]\n"
			    "listen = 80\n",
			    5, "unknown key 'listen' in [global]");
}

static void test_error_key_outside_section(void **state)
{
	(void)state;
	assert_config_error("; no section yet\n"
			    "listen = 80\n"
			    WEB_SERVICE,
			    2, "'listen' outside of a section");
	assert_config_error("max_connections = 5\n" WEB_SERVICE, 1,
			    "'max_connections' outside of a section");
}

static void test_error_duplicate_section(void **state)
{
	(void)state;
	assert_config_error(WEB_SERVICE
			    "\n"
			    "[web]\n"
			    "listen = 81\n"
			    "backend4 = 10.43.206.211:81\n",
			    5, "duplicate section [web] (first at line 1)");
	assert_config_error("[global]\n"
			    "log_level = info\n"
			    WEB_SERVICE
			    "[global]\n"
			    "max_connections = 5\n",
			    6, "duplicate section [global] (first at line 1)");
}

static void test_error_duplicate_key(void **state)
{
	(void)state;
	assert_config_error("[web]\n"
			    "listen = 80\n"
			    "backend4 = 10.43.206.211:80\n"
			    "backend4 = 10.43.206.212:80\n",
			    4, "duplicate key 'backend4'");
	assert_config_error("[web]\n"
			    "listen = 80\n"
			    "backend4 = 10.43.206.211:80\n"
			    "listen = 81\n",
			    4, "duplicate key 'listen'");
	assert_config_error("[global]\n"
			    "idle_timeout = 1m\n"
			    "idle_timeout = 2m\n"
			    WEB_SERVICE,
			    3, "duplicate key 'idle_timeout'");
	/* the same key in another section is no duplicate */
	struct config *cfg = load_ok("[global]\nidle_timeout = 1m\n"
				     "[a]\nidle_timeout = 2m\nlisten = 80\nbackend4 = 10.0.0.1:80\n"
				     "[b]\nidle_timeout = 3m\nlisten = 81\nbackend4 = 10.0.0.1:81\n");
	assert_seconds(find_service(cfg, "a")->idle_timeout, 120.0);
	assert_seconds(find_service(cfg, "b")->idle_timeout, 180.0);
	config_unref(cfg);
}

static void test_error_bad_section_name(void **state)
{
	(void)state;
	assert_config_error("[global]\n"
			    "\n"
			    "[we b!]\n"
			    "listen = 80\n"
			    "backend4 = 10.43.206.211:80\n",
			    3, "bad section name [we b!]");
	assert_config_error(WEB_SERVICE "[]\nlisten = 81\n", 4, "bad section name []");
	assert_config_error(WEB_SERVICE "[a/b]\n", 4, "bad section name [a/b]");
}

static void test_error_syntax(void **state)
{
	(void)state;
	assert_config_error("[web]\n"
			    "listen = 80\n"
			    "garbage without equals\n"
			    "backend4 = 10.43.206.211:80\n",
			    3, "syntax error");
	/* missing ']' in the first header */
	assert_config_error("; comment\n"
			    "[web\n"
			    "listen = 80\n"
			    "backend4 = 10.43.206.211:80\n",
			    2, "syntax error");
	/* missing ']' in a later header: its keys must not land in [web] silently */
	assert_config_error(WEB_SERVICE
			    "[api\n"
			    "listen = 8080\n"
			    "backend4 = 10.43.206.211:8080\n",
			    4, "syntax error");
	/* the first error in the file is the one reported */
	assert_config_error("[web]\n"
			    "garbage\n"
			    "listen = 80\n"
			    "bogus = 1\n"
			    "backend4 = 10.43.206.211:80\n",
			    2, "syntax error");
	assert_config_error("[web]\n"
			    "bogus = 1\n"
			    "garbage\n"
			    "listen = 80\n"
			    "backend4 = 10.43.206.211:80\n",
			    2, "unknown key 'bogus'");
}

/* ---- errors: values ---- */

static void test_error_bad_listen(void **state)
{
	(void)state;
	assert_config_error("[web]\n"
			    "backend4 = 10.43.206.211:80\n"
			    "listen = 1.2.3.4\n",
			    3, "listen: expected ADDRESS:PORT: '1.2.3.4'");
	assert_config_error("[web]\nlisten = localhost:80\nbackend4 = 10.0.0.1:80\n", 2,
			    "listen: bad IPv4 address: 'localhost:80'");
	assert_config_error("[web]\nlisten = ::1:80\nbackend4 = 10.0.0.1:80\n", 2,
			    "listen: IPv6 addresses need brackets");
	assert_config_error("[web]\nlisten = [::1:80\nbackend4 = 10.0.0.1:80\n", 2,
			    "listen: missing ']'");
	assert_config_error("[web]\nlisten = http\nbackend4 = 10.0.0.1:80\n", 2,
			    "listen: expected ADDRESS:PORT: 'http'");
	assert_config_error("[web]\nlisten = 127.0.0.1:http\nbackend4 = 10.0.0.1:80\n", 2,
			    "listen: port is not a number: '127.0.0.1:http'");
	/* the bad item of a list is named */
	assert_config_error("[web]\nlisten = 80, 8o80\nbackend4 = 10.0.0.1:80\n", 2,
			    "'8o80'");
}

static void test_error_port_range(void **state)
{
	(void)state;
	assert_config_error("[web]\nlisten = 0\nbackend4 = 10.0.0.1:80\n", 2,
			    "listen: port out of range (1-65535): '0'");
	assert_config_error("[web]\nlisten = 70000\nbackend4 = 10.0.0.1:80\n", 2,
			    "listen: port out of range (1-65535): '70000'");
	assert_config_error("[web]\nlisten = 127.0.0.1:0\nbackend4 = 10.0.0.1:80\n", 2,
			    "port out of range");
	assert_config_error("[web]\nlisten = [::1]:70000\nbackend4 = 10.0.0.1:80\n", 2,
			    "port out of range");
	assert_config_error("[web]\nlisten = 80\nbackend4 = 10.0.0.1:0\n", 3,
			    "backend4: port out of range (1-65535): '10.0.0.1:0'");
	assert_config_error("[web]\nlisten = 80\nbackend6 = [::1]:70000\n", 3,
			    "backend6: port out of range (1-65535): '[::1]:70000'");
}

static void test_error_bad_duration(void **state)
{
	(void)state;
	assert_config_error("[global]\n"
			    "connect_timeout = 5x\n"
			    WEB_SERVICE,
			    2, "connect_timeout: bad duration unit (use ms, s, m or h): '5x'");
	assert_config_error("[global]\nidle_timeout = 169h\n" WEB_SERVICE, 2,
			    "idle_timeout: duration too long");
	assert_config_error(WEB_SERVICE "idle_timeout = 0s\n", 4,
			    "idle_timeout: duration must be greater than zero: '0s'");
	assert_config_error(WEB_SERVICE "connect_timeout = fast\n", 4,
			    "connect_timeout: bad duration");
}

static void test_error_duplicate_listen_in_service(void **state)
{
	(void)state;
	assert_config_error("[web]\n"
			    "backend4 = 10.43.206.211:80\n"
			    "listen = 127.0.0.1:8080, 127.0.0.1:8080\n",
			    3, "listen 127.0.0.1:8080 conflicts with 127.0.0.1:8080 of [web] (line 3)");
	assert_config_error("[web]\nlisten = 80, 80\nbackend4 = 10.0.0.1:80\n", 2,
			    "listen 0.0.0.0:80 conflicts with 0.0.0.0:80 of [web] (line 2)");
	assert_config_error("[web]\nlisten = 80 [::]:80\nbackend4 = 10.0.0.1:80\n", 2,
			    "listen [::]:80 conflicts with [::]:80 of [web]");
}

static void test_error_duplicate_listen_across_services(void **state)
{
	(void)state;
	/* the later line is reported, naming the earlier one */
	assert_config_error("[web]\n"                           /* 1 */
			    "listen = 80\n"                     /* 2 */
			    "backend4 = 10.43.206.211:80\n"     /* 3 */
			    "\n"                                /* 4 */
			    "[web2]\n"                          /* 5 */
			    "backend4 = 10.43.206.212:80\n"     /* 6 */
			    "listen = 80\n",                    /* 7 */
			    7, "listen 0.0.0.0:80 conflicts with 0.0.0.0:80 of [web] (line 2)");
	assert_config_error("[a]\n"                             /* 1 */
			    "listen = [::1]:8443\n"             /* 2 */
			    "backend6 = [::1]:443\n"            /* 3 */
			    "[b]\n"                             /* 4 */
			    "listen = 8080\n"                   /* 5 */
			    "backend4 = 10.0.0.1:80\n"          /* 6 */
			    "[c]\n"                             /* 7 */
			    "listen = 9000, [::1]:8443\n"       /* 8 */
			    "backend6 = [::1]:443\n",           /* 9 */
			    8, "listen [::1]:8443 conflicts with [::1]:8443 of [a] (line 2)");
}

static void test_error_listen_overlaps_wildcard(void **state)
{
	(void)state;
	/* a specific address first, then the wildcard of a bare port */
	assert_config_error("[local]\n"                         /* 1 */
			    "listen = 127.0.0.1:80\n"           /* 2 */
			    "backend4 = 10.43.206.211:80\n"     /* 3 */
			    "[web]\n"                           /* 4 */
			    "listen = 80\n"                     /* 5 */
			    "backend4 = 10.43.206.211:80\n",    /* 6 */
			    5, "listen 0.0.0.0:80 conflicts with 127.0.0.1:80 of [local] (line 2)");
	/* the wildcard first, then a specific address */
	assert_config_error("[web]\n"                           /* 1 */
			    "listen = 80\n"                     /* 2 */
			    "backend4 = 10.43.206.211:80\n"     /* 3 */
			    "[local]\n"                         /* 4 */
			    "backend4 = 10.43.206.211:80\n"     /* 5 */
			    "listen = 127.0.0.1:80\n",          /* 6 */
			    6, "listen 127.0.0.1:80 conflicts with 0.0.0.0:80 of [web] (line 2)");
	/* the same for IPv6 */
	assert_config_error("[web]\n"                           /* 1 */
			    "listen = 80\n"                     /* 2 */
			    "backend4 = 10.43.206.211:80\n"     /* 3 */
			    "[local]\n"                         /* 4 */
			    "backend4 = 10.43.206.211:80\n"     /* 5 */
			    "listen = [::1]:80\n",              /* 6 */
			    6, "listen [::1]:80 conflicts with [::]:80 of [web] (line 2)");
}

static void test_error_no_backend(void **state)
{
	(void)state;
	assert_config_error("[global]\n"                        /* 1 */
			    "log_level = info\n"                /* 2 */
			    "\n"                                /* 3 */
			    "[web]\n"                           /* 4 */
			    "listen = 80\n"                     /* 5 */
			    "connect_timeout = 1s\n",           /* 6 */
			    4, "[web]: no backend4 or backend6");
	assert_config_error(WEB_SERVICE
			    "[api]\n"                           /* 4 */
			    "listen = 8080\n"                   /* 5 */
			    "[other]\n"                         /* 6 */
			    "listen = 9090\n"                   /* 7 */
			    "backend4 = 10.0.0.1:9090\n",       /* 8 */
			    4, "[api]: no backend4 or backend6");
}

static void test_error_no_listen(void **state)
{
	(void)state;
	assert_config_error(WEB_SERVICE
			    "\n"                                /* 4 */
			    "[api]\n"                           /* 5 */
			    "backend4 = 10.43.206.211:8080\n",  /* 6 */
			    5, "[api]: no listen address");
	assert_config_error("[empty]\n", 1, "[empty]: no listen address");
}

static void test_error_bad_log_level(void **state)
{
	(void)state;
	assert_config_error("[global]\nlog_level = verbose\n" WEB_SERVICE, 2,
			    "log_level: expected error, warning, info or debug: 'verbose'");
	assert_config_error(WEB_SERVICE "[global]\nlog_level = warn\n", 5,
			    "log_level: expected error, warning, info or debug: 'warn'");
}

static void test_error_max_connections(void **state)
{
	(void)state;
	assert_config_error("[global]\nmax_connections = 0\n" WEB_SERVICE, 2,
			    "max_connections: out of range (1-10000000): '0'");
	assert_config_error("[global]\nmax_connections = abc\n" WEB_SERVICE, 2,
			    "max_connections: not a number (1-10000000): 'abc'");
	assert_config_error("[global]\nmax_connections = 10000001\n" WEB_SERVICE, 2,
			    "max_connections: out of range");
	assert_config_error("[global]\nmax_connections = -5\n" WEB_SERVICE, 2,
			    "max_connections: not a number");
	assert_config_error("[global]\nmax_connections = 99999999999999999999999\n" WEB_SERVICE,
			    2, "max_connections: out of range");
}

static void test_error_backend_family(void **state)
{
	(void)state;
	assert_config_error("[web]\n"
			    "listen = 80\n"
			    "backend4 = [fd45:a71:55a6:1:2:1:0:db1]:80\n",
			    3, "backend4: expected an IPv4 address: '[fd45:a71:55a6:1:2:1:0:db1]:80'");
	assert_config_error("[web]\n"
			    "listen = 80\n"
			    "backend4 = 10.43.206.211:80\n"
			    "backend6 = 10.43.206.211:80\n",
			    4, "backend6: expected an IPv6 address: '10.43.206.211:80'");
	assert_config_error("[web]\nlisten = 80\nbackend4 = 10.43.206.211\n", 3,
			    "backend4: expected ADDRESS:PORT");
	assert_config_error("[web]\nlisten = 80\nbackend4 = 10.43.206.211:80, 10.43.206.212:80\n",
			    3, "backend4:");
}

static void test_error_empty_value(void **state)
{
	(void)state;
	assert_config_error("[web]\n"
			    "backend4 = 10.43.206.211:80\n"
			    "listen =\n",
			    3, "listen: empty value");
	assert_config_error("[web]\nbackend4 = 10.43.206.211:80\nlisten = , ,\n", 3,
			    "listen: empty value");
	assert_config_error("[web]\nlisten = 80\nbackend6 =   ; nothing\n", 3,
			    "backend6: empty value");
	assert_config_error("[global]\nidle_timeout =\n" WEB_SERVICE, 2,
			    "idle_timeout: empty value");
}

static void test_error_no_services(void **state)
{
	(void)state;
	/* reported at the end of the file */
	assert_config_error("[global]\n"
			    "log_level = info\n"
			    "; nothing else\n",
			    3, "no service defined");
	assert_config_error("", 0, "no service defined");
	assert_config_error("; only a comment\n", 1, "no service defined");
}

static void test_error_line_too_long(void **state)
{
	(void)state;
	char text[1024];
	char line[251];
	struct config_error err;

	memset(line, 'x', 250);
	line[0] = ';';
	line[250] = '\0';
	snprintf(text, sizeof(text), "[web]\nlisten = 80\n%s\nbackend4 = 10.43.206.211:80\n", line);
	assert_config_error(text, 3, "line too long");

	/* a long value, too: not silently truncated into something valid */
	memset(line, ' ', 250);
	memcpy(line, "backend4 = 10.43.206.211:80", 27);
	line[249] = '1';
	snprintf(text, sizeof(text), "[web]\nlisten = 80\n%s\n", line);
	assert_config_error(text, 3, "line too long");

	/* a line as long as the message allows is accepted */
	assert_null(config_load_string(CFG_NAME, text, &err));
	const char *at_most = strstr(err.msg, "at most ");
	assert_non_null(at_most);
	int max = atoi(at_most + strlen("at most "));
	assert_in_range(max, 80, 240);
	memset(line, 'x', (size_t)max);
	line[0] = ';';
	line[max] = '\0';
	snprintf(text, sizeof(text), "[web]\nlisten = 80\n%s\nbackend4 = 10.43.206.211:80\n", line);
	struct config *cfg = load_ok(text);
	config_unref(cfg);
}

/* ---- messages and files ---- */

static void test_error_format(void **state)
{
	(void)state;
	struct config_error err;
	char buf[ERRBUF_MAX];

	memset(&err, 0, sizeof(err));
	snprintf(err.file, sizeof(err.file), "/etc/dualproxy/dualproxy.ini");
	err.line = 12;
	snprintf(err.msg, sizeof(err.msg), "unknown key 'x' in [web]");
	assert_ptr_equal(config_error_format(&err, buf, sizeof(buf)), buf);
	assert_string_equal(buf, "/etc/dualproxy/dualproxy.ini:12: unknown key 'x' in [web]");

	err.line = 0;
	assert_string_equal(config_error_format(&err, buf, sizeof(buf)),
			    "/etc/dualproxy/dualproxy.ini: unknown key 'x' in [web]");

	/* truncated, but terminated */
	err.line = 3;
	char small[8];
	assert_string_equal(config_error_format(&err, small, sizeof(small)), "/etc/du");

	/* from a real failure */
	assert_null(config_load_string(CFG_NAME, "[web]\nlisten = 80\nbogus = 1\n", &err));
	assert_string_equal(config_error_format(&err, buf, sizeof(buf)),
			    CFG_NAME ":3: unknown key 'bogus' in [web]");
}

static void test_load_file_missing(void **state)
{
	(void)state;
	struct config_error err;
	char buf[ERRBUF_MAX];
	const char *path = "/nonexistent/dualproxy/test.ini";

	memset(&err, 0x5a, sizeof(err));
	assert_null(config_load_file(path, &err));
	assert_string_equal(err.file, path);
	assert_int_equal(err.line, 0);
	assert_non_null(strstr(err.msg, "cannot open"));
	assert_non_null(strstr(err.msg, "No such file or directory"));
	assert_string_equal(config_error_format(&err, buf, sizeof(buf)),
			    "/nonexistent/dualproxy/test.ini: cannot open: No such file or directory");
}

/* Writes text to a new temporary file; its path goes to path (PATH_MAX bytes). */
static void write_temp(char *path, size_t n, const char *text)
{
	const char *dir = getenv("TMPDIR");
	snprintf(path, n, "%s/dualproxy-test-config-XXXXXX", dir != NULL && dir[0] != '\0' ? dir : "/tmp");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	size_t len = strlen(text);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void test_load_file(void **state)
{
	(void)state;
	char path[512];
	struct config_error err;

	write_temp(path, sizeof(path), design_example);
	struct config *cfg = config_load_file(path, &err);
	unlink(path);
	assert_non_null(cfg);
	assert_string_equal(cfg->path, path);
	assert_int_equal(cfg->n_services, 1);
	assert_int_equal(cfg->services->line, 7);
	assert_int_equal(cfg->services->n_listen, 2);
	assert_addr(&cfg->services->backend6, "[fd45:a71:55a6:1:2:1:0:db1]:80");
	config_unref(cfg);

	/* errors in a file name it and count its lines */
	write_temp(path, sizeof(path),
		   "[global]\nlog_level = info\n\n[web]\nlisten = 80\nbackend4 = 10.0.0.1:80\nnope = 1\n");
	assert_null(config_load_file(path, &err));
	unlink(path);
	assert_string_equal(err.file, path);
	assert_int_equal(err.line, 7);
	assert_string_equal(err.msg, "unknown key 'nope' in [web]");
}

/* ---- backends that could never be reached, durations too short ---- */

static void test_error_backend_unusable(void **state)
{
	(void)state;
	static const struct {
		const char *line;
		const char *msg;
	} cases[] = {
		{ "backend4 = 0.0.0.0:80", "backend4: the unspecified address is not a backend: '0.0.0.0:80'" },
		{ "backend6 = [::]:80", "backend6: the unspecified address is not a backend: '[::]:80'" },
		{ "backend4 = 255.255.255.255:80", "backend4: the broadcast address is not a backend" },
		{ "backend4 = 224.0.0.1:80", "backend4: a multicast address is not a backend: '224.0.0.1:80'" },
		{ "backend4 = 239.1.2.3:80", "backend4: a multicast address is not a backend" },
		{ "backend6 = [ff02::1]:80", "backend6: a multicast address is not a backend: '[ff02::1]:80'" },
		{ "backend6 = [::ffff:10.43.0.1]:80", "backend6: IPv4-mapped address: write it as IPv4" },
		{ "backend6 = [fe80::1]:80", "backend6: a link-local address needs its interface" },
	};
	char text[512];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(text, sizeof(text), "[web]\nlisten = 80\nconnect_timeout = 1s\n%s\n",
			 cases[i].line);
		assert_config_error(text, 4, cases[i].msg);
	}
	/* with its interface, a link-local backend is fine */
	struct config *cfg = load_ok("[web]\nlisten = 80\nbackend6 = [fe80::1%1]:80\n");
	assert_int_equal(cfg->services->backend6.u.in6.sin6_scope_id, 1);
	assert_int_equal(cfg->services->backend6_line, 3);
	config_unref(cfg);
}

static void test_error_listen_unusable(void **state)
{
	(void)state;
	assert_config_error("[web]\nlisten = [fe80::1]:80\nbackend4 = 10.0.0.1:80\n", 2,
			    "listen: a link-local address needs its interface");
	assert_config_error("[web]\nlisten = 80, [::ffff:127.0.0.1]:81\nbackend4 = 10.0.0.1:80\n",
			    2, "listen: IPv4-mapped address");
	assert_config_error("[global]\nmetrics_listen = [::ffff:127.0.0.1]:9180\n" WEB_SERVICE, 2,
			    "metrics_listen: IPv4-mapped address");
	assert_config_error("[global]\nmetrics_listen = [fe80::2]:9180\n" WEB_SERVICE, 2,
			    "metrics_listen: a link-local address needs its interface");
	struct config *cfg = load_ok("[web]\nlisten = [fe80::1%1]:80\nbackend4 = 10.0.0.1:80\n");
	config_unref(cfg);
}

static void test_error_duration_too_short(void **state)
{
	(void)state;
	assert_config_error("[global]\nconnect_timeout = 0.0000001ms\n" WEB_SERVICE, 2,
			    "connect_timeout: duration too short (at least 1ms): '0.0000001ms'");
	assert_config_error(WEB_SERVICE "idle_timeout = 0.5ms\n", 4,
			    "idle_timeout: duration too short");
	assert_config_error("[global]\ndrain_timeout = 0.0001s\n" WEB_SERVICE, 2,
			    "drain_timeout: duration too short");
	struct config *cfg = load_ok("[global]\nconnect_timeout = 1ms\n" WEB_SERVICE);
	assert_seconds(cfg->services->connect_timeout, 0.001);
	config_unref(cfg);
}

/* ---- backends that are dualproxy's own listeners ---- */

static void test_error_backend_is_own_listener(void **state)
{
	(void)state;
	/* the reproduction: a bare port and a loopback backend on it */
	assert_config_error("[loop]\n"                          /* 1 */
			    "listen = 18010\n"                  /* 2 */
			    "backend4 = 127.0.0.1:18010\n",     /* 3 */
			    3, "backend4 127.0.0.1:18010 is an address of this host, where [loop] "
			    "listens with 0.0.0.0:18010 (line 2): connections would loop back");
	/* the same explicit address */
	assert_config_error("[loop]\n"
			    "listen = 127.0.0.1:18010\n"
			    "backend4 = 127.0.0.1:18010\n",
			    3, "backend4 127.0.0.1:18010 is dualproxy's own listen address "
			    "(of [loop], line 2)");
	/* all of 127.0.0.0/8 is local, and ::1 */
	assert_config_error("[loop]\nlisten = 18010\nbackend4 = 127.9.8.7:18010\n", 3,
			    "is an address of this host");
	assert_config_error("[loop]\nlisten = 18010\nbackend6 = [::1]:18010\n", 3,
			    "backend6 [::1]:18010 is an address of this host, where [loop] listens "
			    "with [::]:18010 (line 2)");
	/* another service's listener, before or after it in the file */
	assert_config_error("[a]\n"                             /* 1 */
			    "listen = 18010\n"                  /* 2 */
			    "backend4 = 10.43.0.1:80\n"         /* 3 */
			    "[b]\n"                             /* 4 */
			    "listen = 18011\n"                  /* 5 */
			    "backend4 = 10.43.0.2:80\n"         /* 6 */
			    "backend6 = [::1]:18010\n",         /* 7 */
			    7, "where [a] listens with [::]:18010 (line 2)");
	assert_config_error("[a]\n"                             /* 1 */
			    "listen = 18010\n"                  /* 2 */
			    "backend4 = 127.0.0.1:18012\n"      /* 3 */
			    "[b]\n"                             /* 4 */
			    "listen = [::1]:18011, 127.0.0.1:18012\n" /* 5 */
			    "backend4 = 10.43.0.2:80\n",        /* 6 */
			    3, "backend4 127.0.0.1:18012 is dualproxy's own listen address (of [b], "
			    "line 5)");
}

/* Only a listener of a protocol the service relays is a loop. */
static void test_backend_loop_by_protocol(void **state)
{
	(void)state;
	assert_config_error("[dns]\n"
			    "protocol = udp\n"
			    "listen = 5353\n"
			    "backend4 = 127.0.0.1:5353\n",
			    4, "backend4 127.0.0.1:5353 is an address of this host, where [dns] "
			    "listens with 0.0.0.0:5353 (line 3)");
	assert_config_error("[a]\n"
			    "protocol = udp\n"
			    "listen = 127.0.0.1:5353\n"
			    "backend4 = 10.43.0.10:53\n"
			    "[b]\n"
			    "protocol = tcp, udp\n"
			    "listen = 127.0.0.1:5354\n"
			    "backend4 = 127.0.0.1:5353\n",
			    8, "is dualproxy's own listen address (of [a], line 3)");
	/* a TCP service's backend on a UDP listener, and the other way round */
	struct config *cfg = load_ok("[udp]\n"
				     "protocol = udp\n"
				     "listen = 127.0.0.1:9000\n"
				     "backend4 = 127.0.0.1:9001\n"
				     "[tcp]\n"
				     "listen = 127.0.0.1:9001\n"
				     "backend4 = 127.0.0.1:9000\n");
	assert_int_equal(cfg->n_services, 2);
	config_unref(cfg);
}

static void test_backend_next_to_own_listener(void **state)
{
	(void)state;
	/* another port, another loopback address than the listener's own,
	 * another family, or an address that is not this host's: no loop */
	struct config *cfg = load_ok("[a]\n"
				     "listen = 127.0.0.1:18010, [::1]:18010\n"
				     "backend4 = 127.0.0.2:18010\n"
				     "[b]\n"
				     "listen = 0.0.0.0:18011\n"
				     "backend4 = 127.0.0.1:18012\n"
				     "backend6 = [::1]:18011\n"
				     "[c]\n"
				     "listen = 18013\n"
				     "backend4 = 192.0.2.1:18013\n"
				     "backend6 = [2001:db8::1]:18013\n");
	assert_int_equal(cfg->n_services, 3);
	config_unref(cfg);
}

/* A wildcard listener takes in every address of the host's interfaces. */
static void test_error_backend_is_interface_address(void **state)
{
	(void)state;
	struct ifaddrs *ifa;
	char ip[INET6_ADDRSTRLEN], text[512], want[256];
	int found = 0;

	assert_int_equal(getifaddrs(&ifa), 0);
	for (struct ifaddrs *i = ifa; i != NULL; i = i->ifa_next) {
		if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET)
			continue;
		const struct sockaddr_in *in = (const struct sockaddr_in *)i->ifa_addr;
		if ((ntohl(in->sin_addr.s_addr) >> 24) == 127)
			continue;
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		snprintf(text, sizeof(text), "[web]\nlisten = 18020\nbackend4 = %s:18020\n", ip);
		snprintf(want, sizeof(want), "backend4 %s:18020 is an address of this host", ip);
		assert_config_error(text, 3, want);
		/* a listener on loopback only does not take it in */
		snprintf(text, sizeof(text), "[web]\nlisten = 127.0.0.1:18020\nbackend4 = %s:18020\n",
			 ip);
		config_unref(load_ok(text));
		found++;
	}
	freeifaddrs(ifa);
	if (found == 0)
		skip(); /* no IPv4 address but loopback's */
}

/* ---- the checks are hashed: the time grows linearly with the sections ---- */

/* A file of n services, each on a port of its own. */
static char *many_services(unsigned n, const char *tail)
{
	size_t cap = (size_t)n * 64 + strlen(tail) + 1;
	char *text = malloc(cap);
	size_t len = 0;
	assert_non_null(text);
	for (unsigned i = 0; i < n; i++)
		len += (size_t)snprintf(text + len, cap - len,
					"[s%u]\nlisten = %u\nbackend4 = 10.%u.%u.1:80\n", i,
					10000 + i, i / 250, i % 250);
	snprintf(text + len, cap - len, "%s", tail);
	return text;
}

static double load_seconds(const char *text)
{
	struct config_error err;
	double best = 1e9;
	for (int round = 0; round < 3; round++) {
		clock_t t0 = clock();
		struct config *cfg = config_load_string(CFG_NAME, text, &err);
		double t = (double)(clock() - t0) / CLOCKS_PER_SEC;
		assert_non_null(cfg);
		config_unref(cfg);
		if (t < best)
			best = t;
	}
	return best;
}

static void test_many_services(void **state)
{
	(void)state;
	char *small = many_services(2500, "");
	char *big = many_services(20000, "");
	double ts = load_seconds(small), tb = load_seconds(big);
	free(small);
	free(big);
	/* 8 times the sections: 8 times the time, not 64 (allow for noise) */
	if (tb > 0.05 && tb > 20 * ts)
		fail_msg("2,500 services in %.3fs, 20,000 in %.3fs: not linear", ts, tb);

	/* the errors are those of the pairwise checks, at the right lines */
	char *text = many_services(20000, "[s7]\nlisten = 9\nbackend4 = 10.0.0.1:80\n");
	assert_config_error(text, 60001, "duplicate section [s7] (first at line 22)");
	free(text);
	text = many_services(20000, "[late]\nbackend4 = 10.0.0.1:80\nlisten = 29999\n");
	assert_config_error(text, 60003,
			    "listen 0.0.0.0:29999 conflicts with 0.0.0.0:29999 of [s19999] (line 59999)");
	free(text);
	text = many_services(20000, "[late]\nlisten = 127.0.0.1:10005\nbackend4 = 10.0.0.1:80\n");
	assert_config_error(text, 60002,
			    "listen 127.0.0.1:10005 conflicts with 0.0.0.0:10005 of [s5] (line 17)");
	free(text);
	text = many_services(20000, "[late]\nlisten = 9\nbackend4 = 127.0.0.1:10007\n");
	assert_config_error(text, 60003, "where [s7] listens with 0.0.0.0:10007 (line 23)");
	free(text);
	text = many_services(20000, "[global]\nmetrics_listen = 127.0.0.1:10003\n");
	assert_config_error(text, 60002, "metrics_listen 127.0.0.1:10003 conflicts with "
			    "0.0.0.0:10003 of [s3] (line 11)");
	free(text);
}

/* ---- files ---- */

/* A new temporary directory; its path goes to dir (PATH_MAX bytes). */
static void temp_dir(char *dir, size_t n)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, n, "%s/dualproxy-test-files-XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
}

static void assert_read_error(const char *path, const char *want)
{
	struct config_error err;
	char buf[ERRBUF_MAX];
	memset(&err, 0x5a, sizeof(err));
	assert_null(config_load_file(path, &err));
	assert_string_equal(err.file, path);
	assert_int_equal(err.line, 0);
	config_error_format(&err, buf, sizeof(buf));
	if (strstr(err.msg, want) == NULL)
		fail_msg("\"%s\" does not contain \"%s\"", buf, want);
}

/* Only a regular file is read: a FIFO, a device or a directory is refused
 * at once (none of them blocks, spins or reads without end). */
static void test_load_file_not_regular(void **state)
{
	(void)state;
	char dir[512], path[600];
	temp_dir(dir, sizeof(dir));

	snprintf(path, sizeof(path), "%s/fifo.ini", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_read_error(path, "a FIFO, not a regular file");
	unlink(path);
	assert_read_error("/dev/zero", "a character device, not a regular file");
	assert_read_error("/dev/null", "a character device, not a regular file");
	assert_read_error(dir, "a directory, not a regular file");
	snprintf(path, sizeof(path), "%s/zero.ini", dir);
	assert_int_equal(symlink("/dev/zero", path), 0);
	assert_read_error(path, "a character device, not a regular file");
	unlink(path);
	assert_int_equal(rmdir(dir), 0);
}

static void test_load_file_size(void **state)
{
	(void)state;
	char dir[512], path[600];
	temp_dir(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/big.ini", dir);

	/* exactly the limit: a service, then comment lines */
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(WEB_SERVICE, f);
	long size = (long)strlen(WEB_SERVICE);
	while (size + 100 <= CONFIG_FILE_MAX) {
		fprintf(f, ";%098d\n", 0);
		size += 100;
	}
	while (size < CONFIG_FILE_MAX - 1) {
		fputc(';', f);
		size++;
	}
	fputc('\n', f);
	assert_int_equal(fclose(f), 0);
	struct config_error err;
	struct config *cfg = config_load_file(path, &err);
	assert_non_null(cfg);
	assert_int_equal(cfg->text_len, CONFIG_FILE_MAX);
	config_unref(cfg);

	/* one byte more */
	f = fopen(path, "a");
	fputc('\n', f);
	fclose(f);
	assert_read_error(path, "too large: 1048577 bytes (at most 1048576)");
	/* far more, sparse: refused without reading it */
	assert_int_equal(truncate(path, 200L * 1024 * 1024), 0);
	assert_read_error(path, "too large: 209715200 bytes");
	unlink(path);
	assert_int_equal(rmdir(dir), 0);
}

/* The config keeps the bytes it came from: a reload compares them. */
static void test_load_text_kept(void **state)
{
	(void)state;
	char path[512];
	struct config_error err;

	write_temp(path, sizeof(path), design_example);
	struct config *cfg = config_load_file(path, &err);
	unlink(path);
	assert_non_null(cfg);
	assert_int_equal(cfg->text_len, strlen(design_example));
	assert_string_equal(cfg->text, design_example);
	assert_true(config_same_text(cfg, design_example, strlen(design_example)));
	assert_false(config_same_text(cfg, design_example, strlen(design_example) - 1));
	char *other = strdup(design_example);
	other[strlen(other) - 2] ^= 1;
	assert_false(config_same_text(cfg, other, strlen(other)));
	free(other);
	assert_false(config_same_text(NULL, design_example, strlen(design_example)));
	config_unref(cfg);

	cfg = load_ok(WEB_SERVICE);
	assert_true(config_same_text(cfg, WEB_SERVICE, strlen(WEB_SERVICE)));
	config_unref(cfg);

	/* config_load_text takes the buffer, also when it fails */
	char *text = strdup("[web]\nlisten = 80\n");
	assert_null(config_load_text(CFG_NAME, text, strlen(text), &err));
	assert_int_equal(err.line, 1);
	text = strdup(WEB_SERVICE);
	cfg = config_load_text(CFG_NAME, text, strlen(text), &err);
	assert_ptr_equal(cfg->text, text);
	config_unref(cfg);
}

int main(void)

{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_design_example),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_global_values),
		cmocka_unit_test(test_services_and_timeouts),
		cmocka_unit_test(test_inline_comments),
		cmocka_unit_test(test_crlf_and_no_final_newline),
		cmocka_unit_test(test_utf8_bom),
		cmocka_unit_test(test_only_backend6),
		cmocka_unit_test(test_explicit_listen_list),
		cmocka_unit_test(test_listen_limit),
		cmocka_unit_test(test_listen_no_conflict),
		cmocka_unit_test(test_protocol),
		cmocka_unit_test(test_udp_idle_timeouts),
		cmocka_unit_test(test_section_names),
		cmocka_unit_test(test_service_backend),
		cmocka_unit_test(test_service_backend_loaded),
		cmocka_unit_test(test_refcount),
		cmocka_unit_test(test_error_unknown_key_service),
		cmocka_unit_test(test_lifecycle_keys),
		cmocka_unit_test(test_error_continuation_line),
		cmocka_unit_test(test_error_unknown_key_global),
		cmocka_unit_test(test_error_key_outside_section),
		cmocka_unit_test(test_error_duplicate_section),
		cmocka_unit_test(test_error_duplicate_key),
		cmocka_unit_test(test_error_bad_section_name),
		cmocka_unit_test(test_error_syntax),
		cmocka_unit_test(test_error_bad_listen),
		cmocka_unit_test(test_error_port_range),
		cmocka_unit_test(test_error_bad_duration),
		cmocka_unit_test(test_error_duplicate_listen_in_service),
		cmocka_unit_test(test_error_duplicate_listen_across_services),
		cmocka_unit_test(test_error_listen_overlaps_wildcard),
		cmocka_unit_test(test_error_no_backend),
		cmocka_unit_test(test_error_no_listen),
		cmocka_unit_test(test_error_bad_log_level),
		cmocka_unit_test(test_error_max_connections),
		cmocka_unit_test(test_error_backend_family),
		cmocka_unit_test(test_error_empty_value),
		cmocka_unit_test(test_error_no_services),
		cmocka_unit_test(test_error_line_too_long),
		cmocka_unit_test(test_error_format),
		cmocka_unit_test(test_load_file_missing),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_error_backend_unusable),
		cmocka_unit_test(test_error_listen_unusable),
		cmocka_unit_test(test_error_duration_too_short),
		cmocka_unit_test(test_error_backend_is_own_listener),
		cmocka_unit_test(test_backend_next_to_own_listener),
		cmocka_unit_test(test_backend_loop_by_protocol),
		cmocka_unit_test(test_error_backend_is_interface_address),
		cmocka_unit_test(test_many_services),
		cmocka_unit_test(test_load_file_not_regular),
		cmocka_unit_test(test_load_file_size),
		cmocka_unit_test(test_load_text_kept),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
